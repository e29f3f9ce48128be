//! Match records: what a complete or timed-out match produces, and where it goes.

use crate::event::value::write_json_str;
use crate::event::Value;
use serde::{Deserialize, Serialize};

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
    /// The parts of the record's JSON that are the same for every record of its `emit`.
    pub json: &'a RecordJson,
}

impl Record<'_> {
    /// Writes the record as one JSON object (no newline), in the envelope of `kairos replay`:
    /// `{"pattern":..,"sink":..,"key":..,"ts":..,"value":{..}}`.
    // HOT PATH: once per match; the constant parts are copied, not written out again.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.json.head.as_bytes());
        self.key.write_json(out);
        out.extend_from_slice(b",\"ts\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.ts).as_bytes());
        out.extend_from_slice(b",\"value\":");
        if self.values.is_empty() {
            out.extend_from_slice(b"{}");
        }
        for (name, v) in self.json.names.iter().zip(self.values) {
            out.extend_from_slice(name.as_bytes());
            v.write_json(out);
        }
        if !self.values.is_empty() {
            out.push(b'}');
        }
        out.push(b'}');
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

/// The constant parts of the JSON of the records of one `emit` clause, written when the pattern
/// compiles: everything up to the key, and each field's name with the punctuation before it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordJson {
    /// `{"pattern":..,"sink":..,"key":`
    head: String,
    /// `{"name":` for the first field, `,"name":` for the others.
    names: Vec<String>,
}

impl RecordJson {
    pub fn new<'n>(pattern: &str, sink: &str, names: impl Iterator<Item = &'n str>) -> Self {
        let mut head = b"{\"pattern\":".to_vec();
        write_json_str(pattern, &mut head);
        head.extend_from_slice(b",\"sink\":");
        write_json_str(sink, &mut head);
        head.extend_from_slice(b",\"key\":");
        let names = names
            .enumerate()
            .map(|(i, n)| {
                let mut b = vec![if i == 0 { b'{' } else { b',' }];
                write_json_str(n, &mut b);
                b.push(b':');
                String::from_utf8(b).expect("JSON of strings is UTF-8")
            })
            .collect();
        RecordJson {
            head: String::from_utf8(head).expect("JSON of strings is UTF-8"),
            names,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::expr::CExpr;

    /// The constant parts written ahead give the same JSON as writing the record out in full,
    /// names that need escapes and records without fields included.
    #[test]
    fn precomputed_json_matches_the_full_envelope() {
        let cases: [(&str, &str, &[&str]); 3] = [
            ("p", "alerts", &["user", "deposit"]),
            ("quo\"te", "s\\ink", &["na\"me", "\u{1}", "é"]),
            ("empty", "out", &[]),
        ];
        for (pattern, sink, names) in cases {
            let fields: Vec<(String, CExpr)> =
                names.iter().map(|n| (n.to_string(), CExpr::Key)).collect();
            let values: Vec<Value> = (0..names.len())
                .map(|i| {
                    if i % 2 == 0 {
                        Value::Int(i as i64)
                    } else {
                        Value::from("v\n")
                    }
                })
                .collect();
            let json = RecordJson::new(pattern, sink, names.iter().copied());
            let r = Record {
                pattern,
                sink,
                key: &Value::from("k"),
                ts: -5,
                timeout: false,
                names: &fields,
                values: &values,
                json: &json,
            };
            let mut fast = Vec::new();
            r.write_json(&mut fast);
            let full = r.to_owned().to_json();
            assert_eq!(String::from_utf8(fast).unwrap(), full);
            serde_json::from_str::<serde_json::Value>(&full).unwrap();
        }
    }
}
