//! A JSON-lines decoder that extracts only the fields patterns use.
//!
//! It validates the whole line (a malformed line is an error with its column) but materialises
//! only the referenced paths, so the cost of an event grows with what the patterns read, not with
//! the width of the JSON.

use super::time::{parse_rfc3339, TimeUnit};
use super::value::Value;
use super::Event;
use smol_str::SmolStr;

/// Why a line could not be decoded, and where (1-based byte column).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("column {col}: {message}")]
pub struct DecodeError {
    pub col: usize,
    pub message: String,
}

#[inline(always)]
fn pad16(b: &[u8]) -> u128 {
    let mut buf = [0u8; 16];
    let n = b.len().min(16);
    buf[..n].copy_from_slice(&b[..n]);
    u128::from_le_bytes(buf)
}

/// A field name, the slot of its value (where a pattern reads it), and its nested fields.
type TrieEntry = (Box<[u8]>, Option<usize>, Option<Box<Trie>>);

#[derive(Debug, Default, Clone)]
struct Trie {
    fields: Vec<TrieEntry>,
}

impl Trie {
    fn insert(&mut self, path: &[String], slot: usize) {
        let (head, rest) = path.split_first().expect("a field path is never empty");
        let idx = match self.fields.iter().position(|f| &*f.0 == head.as_bytes()) {
            Some(i) => i,
            None => {
                self.fields
                    .push((head.as_bytes().to_vec().into_boxed_slice(), None, None));
                self.fields.len() - 1
            }
        };
        if rest.is_empty() {
            self.fields[idx].1 = Some(slot);
        } else {
            self.fields[idx]
                .2
                .get_or_insert_with(Default::default)
                .insert(rest, slot);
        }
    }

    // HOT PATH: called for every key of every object. Short names compare as two integers
    // instead of through `memcmp`.
    #[inline]
    fn get(&self, key: &[u8]) -> Option<&TrieEntry> {
        if key.len() <= 16 {
            let k = pad16(key);
            self.fields
                .iter()
                .find(|f| f.0.len() == key.len() && pad16(&f.0) == k)
        } else {
            self.fields.iter().find(|f| &*f.0 == key)
        }
    }
}

/// Decodes JSON objects into [`Event`] slots.
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    trie: Trie,
    nslots: usize,
    time_slot: Option<usize>,
    unit: TimeUnit,
}

const MAX_DEPTH: usize = 64;

impl JsonDecoder {
    /// `fields[i]` is the dotted path stored in slot `i`; `time_slot` the slot holding event time.
    pub fn new(fields: &[Vec<String>], time_slot: Option<usize>, unit: TimeUnit) -> Self {
        let mut trie = Trie::default();
        for (slot, path) in fields.iter().enumerate() {
            trie.insert(path, slot);
        }
        JsonDecoder {
            trie,
            nslots: fields.len(),
            time_slot,
            unit,
        }
    }

    pub fn slots(&self) -> usize {
        self.nslots
    }

    /// Decodes one line into `ev` (its slots are reset first) and sets `ev.ts` from the time
    /// field, or to `arrival` where there is none.
    ///
    /// ```
    /// use kairos::event::{Event, JsonDecoder, TimeUnit, Value};
    /// let fields = vec![vec!["ts".to_string()], vec!["bet".to_string(), "odds".to_string()]];
    /// let dec = JsonDecoder::new(&fields, Some(0), TimeUnit::Millis);
    /// let mut ev = Event::with_slots(2);
    /// dec.decode(br#"{"ts": 5, "bet": {"odds": 1.5, "x": [1]}, "y": "z"}"#, 0, &mut ev).unwrap();
    /// assert_eq!(ev.ts, 5_000_000);
    /// assert_eq!(ev.slots[1], Value::Float(1.5));
    /// ```
    // HOT PATH: runs once per input event.
    pub fn decode(&self, line: &[u8], arrival: i64, ev: &mut Event) -> Result<(), DecodeError> {
        if ev.slots.len() != self.nslots {
            ev.slots.resize(self.nslots, Value::Null);
        }
        for s in ev.slots.iter_mut() {
            *s = Value::Null;
        }
        let mut c = Cursor { b: line, i: 0 };
        c.ws();
        if c.peek() != Some(b'{') {
            return Err(c.err("expected a JSON object"));
        }
        c.object(Some(&self.trie), &mut ev.slots, 0)?;
        c.ws();
        if c.i != line.len() {
            return Err(c.err("unexpected data after the JSON object"));
        }
        ev.arrival = arrival;
        ev.ts = match self.time_slot {
            None => arrival,
            Some(slot) => self.time_of(&ev.slots[slot])?,
        };
        Ok(())
    }

    fn time_of(&self, v: &Value) -> Result<i64, DecodeError> {
        let bad = |m: String| DecodeError { col: 1, message: m };
        match v {
            Value::Int(i) => i
                .checked_mul(self.unit.nanos())
                .ok_or_else(|| bad(format!("time {i} is out of range"))),
            Value::Float(f) => {
                let ns = f * self.unit.nanos() as f64;
                if ns.is_finite() && ns.abs() < 9.2e18 {
                    Ok(ns.round() as i64)
                } else {
                    Err(bad(format!("time {f} is out of range")))
                }
            }
            Value::Str(s) => parse_rfc3339(s)
                .ok_or_else(|| bad(format!("time \"{s}\" is not an RFC 3339 timestamp"))),
            Value::Null => Err(bad("the time field is missing".into())),
            other => Err(bad(format!(
                "the time field is a {}, not a number or an RFC 3339 string",
                other.type_name()
            ))),
        }
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn err(&self, m: &str) -> DecodeError {
        DecodeError {
            col: self.i + 1,
            message: m.to_string(),
        }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.peek() {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), DecodeError> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected `{}`", c as char)))
        }
    }

    fn object(
        &mut self,
        trie: Option<&Trie>,
        slots: &mut [Value],
        depth: usize,
    ) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting is too deep"));
        }
        self.i += 1; // '{'
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a field name"));
            }
            let (start, end, escaped) = self.string_span()?;
            self.expect(b':')?;
            self.ws();
            let entry = if escaped {
                None
            } else {
                trie.and_then(|t| t.get(&self.b[start..end]))
            };
            match entry {
                Some((_, Some(slot), sub)) => {
                    let here = self.i;
                    if let (Some(sub), Some(b'{')) = (sub, self.peek()) {
                        // Both `a` and `a.b` are used: keep `a` as null and descend.
                        self.object(Some(sub), slots, depth + 1)?;
                    } else {
                        slots[*slot] = self.value(depth)?;
                    }
                    let _ = here;
                }
                Some((_, None, Some(sub))) if self.peek() == Some(b'{') => {
                    self.object(Some(sub), slots, depth + 1)?
                }
                _ => self.skip(depth)?,
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.err("expected `,` or `}`")),
            }
        }
    }

    /// Returns the byte range of a string's contents, whether it holds escapes, and whether it
    /// is pure ASCII (then it needs no UTF-8 validation).
    // HOT PATH: most strings are short keys and values; a plain loop beats a SIMD search here.
    #[inline]
    fn string_span(&mut self) -> Result<(usize, usize, bool), DecodeError> {
        let (start, end, escaped, _) = self.string_span_ascii()?;
        Ok((start, end, escaped))
    }

    #[inline]
    fn string_span_ascii(&mut self) -> Result<(usize, usize, bool, bool), DecodeError> {
        self.i += 1; // opening quote
        let start = self.i;
        let b = self.b;
        let mut escaped = false;
        let mut high = 0u8;
        let mut j = self.i;
        loop {
            let Some(&c) = b.get(j) else {
                self.i = b.len();
                return Err(self.err("unterminated string"));
            };
            match c {
                b'"' => {
                    self.i = j + 1;
                    return Ok((start, j, escaped, high < 0x80));
                }
                b'\\' => {
                    escaped = true;
                    j += 2;
                }
                0..=0x1f => {
                    self.i = j;
                    return Err(self.err("control character in string"));
                }
                _ => {
                    high |= c;
                    j += 1;
                }
            }
        }
    }

    fn string(&mut self) -> Result<SmolStr, DecodeError> {
        let at = self.i;
        let (start, end, escaped, ascii) = self.string_span_ascii()?;
        let raw = &self.b[start..end];
        if !escaped && ascii {
            // SAFETY: every byte is below 0x80, so the bytes are ASCII and therefore UTF-8.
            let text = unsafe { std::str::from_utf8_unchecked(raw) };
            return Ok(if text.len() <= 23 {
                SmolStr::new_inline(text)
            } else {
                SmolStr::new(text)
            });
        }
        if !escaped {
            return std::str::from_utf8(raw)
                .map(SmolStr::new)
                .map_err(|_| DecodeError {
                    col: at + 1,
                    message: "string is not valid UTF-8".into(),
                });
        }
        let mut out: Vec<u8> = Vec::with_capacity(raw.len());
        let mut j = 0;
        while j < raw.len() {
            let c = raw[j];
            if c != b'\\' {
                out.push(c);
                j += 1;
                continue;
            }
            let e = raw.get(j + 1).copied().unwrap_or(0);
            j += 2;
            match e {
                b'"' => out.push(b'"'),
                b'\\' => out.push(b'\\'),
                b'/' => out.push(b'/'),
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'u' => {
                    let hex = |k: usize| -> Option<u32> {
                        let h = raw.get(k..k + 4)?;
                        u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
                    };
                    let col = start + j - 1;
                    let bad = || DecodeError {
                        col,
                        message: "bad \\u escape".into(),
                    };
                    let mut cp = hex(j).ok_or_else(bad)?;
                    j += 4;
                    if (0xD800..0xDC00).contains(&cp) {
                        if raw.get(j) == Some(&b'\\') && raw.get(j + 1) == Some(&b'u') {
                            let lo = hex(j + 2).ok_or_else(bad)?;
                            if !(0xDC00..0xE000).contains(&lo) {
                                return Err(bad());
                            }
                            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                            j += 6;
                        } else {
                            return Err(bad());
                        }
                    }
                    let ch = char::from_u32(cp).ok_or_else(bad)?;
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                _ => {
                    return Err(DecodeError {
                        col: start + j - 1,
                        message: "bad escape in string".into(),
                    })
                }
            }
        }
        String::from_utf8(out)
            .map(|s| SmolStr::new(&s))
            .map_err(|_| DecodeError {
                col: at + 1,
                message: "string is not valid UTF-8".into(),
            })
    }

    fn number_span(&mut self) -> Result<(usize, bool), DecodeError> {
        let start = self.i;
        let b = self.b;
        let mut j = self.i;
        if b.get(j) == Some(&b'-') {
            j += 1;
        }
        let ds = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j == ds || (b[ds] == b'0' && j - ds > 1) {
            return Err(self.err("bad number"));
        }
        let mut float = false;
        if b.get(j) == Some(&b'.') {
            float = true;
            j += 1;
            let fs = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j == fs {
                self.i = j;
                return Err(self.err("bad number"));
            }
        }
        if let Some(b'e' | b'E') = b.get(j) {
            float = true;
            j += 1;
            if let Some(b'+' | b'-') = b.get(j) {
                j += 1;
            }
            let es = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j == es {
                self.i = j;
                return Err(self.err("bad number"));
            }
        }
        self.i = j;
        let _ = start;
        Ok((j, float))
    }

    fn number(&mut self) -> Result<Value, DecodeError> {
        let start = self.i;
        // HOT PATH: integers (ids, amounts, epoch times) are read as their digits go by.
        let b = self.b;
        let mut j = start;
        let neg = b.get(j) == Some(&b'-');
        if neg {
            j += 1;
        }
        let digits = j;
        let mut acc: i64 = 0;
        let mut overflow = false;
        while let Some(&c) = b.get(j) {
            if !c.is_ascii_digit() {
                break;
            }
            let d = (c - b'0') as i64;
            match acc.checked_mul(10).and_then(|x| {
                if neg {
                    x.checked_sub(d)
                } else {
                    x.checked_add(d)
                }
            }) {
                Some(v) => acc = v,
                None => overflow = true,
            }
            j += 1;
        }
        let simple_end = !matches!(b.get(j), Some(b'.' | b'e' | b'E'));
        let well_formed = j > digits && !(b[digits] == b'0' && j - digits > 1);
        if simple_end && well_formed && !overflow {
            self.i = j;
            return Ok(Value::Int(acc));
        }
        let (end, _) = self.number_span()?;
        let text = std::str::from_utf8(&self.b[start..end]).expect("digits are ASCII");
        text.parse::<f64>()
            .map(Value::Float)
            .map_err(|_| DecodeError {
                col: start + 1,
                message: "bad number".into(),
            })
    }

    fn literal(&mut self, word: &[u8], v: Value) -> Result<Value, DecodeError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("unexpected token"))
        }
    }

    /// Parses a value the patterns use. Objects become null (patterns read their fields by path).
    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        match self.peek() {
            Some(b'"') => self.string().map(Value::Str),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(b'[') => {
                if depth > MAX_DEPTH {
                    return Err(self.err("nesting is too deep"));
                }
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Value::List(items.into()));
                }
                loop {
                    self.ws();
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Value::List(items.into()));
                        }
                        _ => return Err(self.err("expected `,` or `]`")),
                    }
                }
            }
            Some(b'{') => {
                self.object(None, &mut [], depth + 1)?;
                Ok(Value::Null)
            }
            _ => Err(self.err("expected a value")),
        }
    }

    /// Validates and skips a value nobody reads.
    fn skip(&mut self, depth: usize) -> Result<(), DecodeError> {
        match self.peek() {
            Some(b'"') => self.string_span().map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number_span().map(|_| ()),
            Some(b'{') => self.object(None, &mut [], depth + 1),
            Some(b'[') => {
                if depth > MAX_DEPTH {
                    return Err(self.err("nesting is too deep"));
                }
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.skip(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(self.err("expected `,` or `]`")),
                    }
                }
            }
            _ => self.value(depth).map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(fields: &[&str]) -> JsonDecoder {
        let f: Vec<Vec<String>> = fields
            .iter()
            .map(|p| p.split('.').map(String::from).collect())
            .collect();
        JsonDecoder::new(&f, None, TimeUnit::Millis)
    }

    #[test]
    fn extracts_only_named_fields() {
        let d = dec(&["a", "b.c", "s"]);
        let mut ev = Event::with_slots(3);
        d.decode(
            br#"{"a":1,"z":{"q":[1,2,{"r":null}]},"b":{"c":-2.5e1},"s":"x\"y\u00e9"}"#,
            7,
            &mut ev,
        )
        .unwrap();
        assert_eq!(ev.slots[0], Value::Int(1));
        assert_eq!(ev.slots[1], Value::Float(-25.0));
        assert_eq!(ev.slots[2], Value::from("x\"yé"));
        d.decode(
            br#"{"a":-9223372036854775808,"b":{"c":12345678901234567890}}"#,
            0,
            &mut ev,
        )
        .unwrap();
        assert_eq!(ev.slots[0], Value::Int(i64::MIN));
        assert_eq!(ev.slots[1], Value::Float(12345678901234567890.0));
        assert_eq!(ev.ts, 0);
    }

    #[test]
    fn malformed_lines_are_errors_with_columns() {
        let d = dec(&["a"]);
        let mut ev = Event::with_slots(1);
        for bad in [
            &br#"{"a":1"#[..],
            br#"{"a":}"#,
            br#"{"a":1} x"#,
            br#"[1]"#,
            br#"{"a":01}"#,
            br#"{"b":tru}"#,
            br#"{"a":"x}"#,
        ] {
            let e = d.decode(bad, 0, &mut ev).unwrap_err();
            assert!(e.col >= 1, "{e}");
        }
    }
}
