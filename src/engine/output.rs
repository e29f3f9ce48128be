//! Match records: what a complete or timed-out match produces, and where it goes.

use crate::event::value::write_json_str;
use crate::event::Value;

/// One emitted record. Borrowed from the engine for the duration of [`Output::record`].
#[derive(Debug)]
pub struct Record<'a> {
    pub pattern: &'a str,
    pub sink: &'a str,
    pub key: &'a Value,
    /// The time the match completed (or its window closed), in the program's time unit.
    pub ts: i64,
    /// True for an `on timeout emit` record.
    pub timeout: bool,
    pub names: &'a [(String, crate::compile::expr::CExpr)],
    pub values: &'a [Value],
}

impl Record<'_> {
    /// Writes the record as one JSON object (no newline), in the envelope of `kairos replay`:
    /// `{"pattern":..,"sink":..,"key":..,"ts":..,"value":{..}}`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let fields = self.names.iter().map(|(n, _)| n.as_str()).zip(self.values);
        write_envelope(out, self.pattern, self.sink, self.key, self.ts, fields);
    }

    pub fn to_owned(&self) -> OwnedRecord {
        OwnedRecord {
            pattern: self.pattern.to_string(),
            sink: self.sink.to_string(),
            key: self.key.clone(),
            ts: self.ts,
            timeout: self.timeout,
            fields: self
                .names
                .iter()
                .zip(self.values)
                .map(|((n, _), v)| (n.clone(), v.clone()))
                .collect(),
        }
    }
}

/// A record that owns its data.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedRecord {
    pub pattern: String,
    pub sink: String,
    pub key: Value,
    pub ts: i64,
    pub timeout: bool,
    pub fields: Vec<(String, Value)>,
}

impl OwnedRecord {
    /// Writes the record as one JSON object (no newline), in the envelope of `kairos replay`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let fields = self.fields.iter().map(|(n, v)| (n.as_str(), v));
        write_envelope(out, &self.pattern, &self.sink, &self.key, self.ts, fields);
    }

    pub fn to_json(&self) -> String {
        let mut out = Vec::new();
        self.write_json(&mut out);
        String::from_utf8(out).expect("records are UTF-8")
    }
}

fn write_envelope<'v>(
    out: &mut Vec<u8>,
    pattern: &str,
    sink: &str,
    key: &Value,
    ts: i64,
    fields: impl Iterator<Item = (&'v str, &'v Value)>,
) {
    out.extend_from_slice(b"{\"pattern\":");
    write_json_str(pattern, out);
    out.extend_from_slice(b",\"sink\":");
    write_json_str(sink, out);
    out.extend_from_slice(b",\"key\":");
    key.write_json(out);
    out.extend_from_slice(b",\"ts\":");
    out.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
    out.extend_from_slice(b",\"value\":");
    write_object(out, fields);
    out.push(b'}');
}

fn write_object<'v>(out: &mut Vec<u8>, fields: impl Iterator<Item = (&'v str, &'v Value)>) {
    out.push(b'{');
    for (i, (name, v)) in fields.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(name, out);
        out.push(b':');
        v.write_json(out);
    }
    out.push(b'}');
}

/// Where records go.
pub trait Output {
    fn record(&mut self, r: &Record<'_>);
}

impl Output for Vec<OwnedRecord> {
    fn record(&mut self, r: &Record<'_>) {
        self.push(r.to_owned());
    }
}

impl<F: FnMut(&Record<'_>)> Output for F {
    fn record(&mut self, r: &Record<'_>) {
        self(r)
    }
}
