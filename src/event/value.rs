//! Values of event fields and expressions.

use super::Text;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A dynamically typed value. Strings up to 22 bytes are stored inline ([`Text`]), so most
/// field values cost no allocation.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Text),
    List(Arc<[Value]>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Conditions hold only on `true`; null and every other value count as false.
    #[inline]
    pub fn is_true(&self) -> bool {
        matches!(self, Value::Bool(true))
    }

    #[inline]
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::List(_) => "list",
        }
    }

    /// Equality as the language sees it: numbers by value, null equal to nothing.
    #[inline]
    pub fn lang_eq(&self, other: &Value) -> Option<bool> {
        match (self, other) {
            (Value::Null, _) | (_, Value::Null) => None,
            (Value::Int(a), Value::Int(b)) => Some(a == b),
            (Value::Str(a), Value::Str(b)) => Some(a == b),
            (Value::Bool(a), Value::Bool(b)) => Some(a == b),
            (a, b) => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => Some(x == y),
                _ => match (a, b) {
                    (Value::List(x), Value::List(y)) => Some(
                        x.len() == y.len()
                            && x.iter()
                                .zip(y.iter())
                                .all(|(p, q)| p.lang_eq(q) == Some(true)),
                    ),
                    _ => Some(false),
                },
            },
        }
    }

    /// Ordering as the language sees it: numbers with numbers, strings with strings.
    #[inline]
    pub fn lang_cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Str(a), Value::Str(b)) => Some(a.as_str().cmp(b.as_str())),
            (a, b) => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => x.partial_cmp(&y),
                _ => None,
            },
        }
    }

    /// Writes the value as JSON.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
            Value::Float(f) => {
                if f.is_finite() {
                    out.extend_from_slice(ryu::Buffer::new().format_finite(*f).as_bytes())
                } else {
                    out.extend_from_slice(b"null")
                }
            }
            Value::Str(s) => write_json_str(s, out),
            Value::List(items) => {
                out.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    v.write_json(out);
                }
                out.push(b']');
            }
        }
    }
}

/// Writes `s` as a JSON string literal.
pub fn write_json_str(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    // Ids, names and kinds need no escape: one test over the bytes, then one copy.
    if !bytes.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\') {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    out.push(b'"');
    let mut last = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.extend_from_slice(&bytes[last..i]);
                out.extend_from_slice(format!("\\u{:04x}", c).as_bytes());
                last = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[last..i]);
        out.extend_from_slice(esc);
        last = i + 1;
    }
    out.extend_from_slice(&bytes[last..]);
    out.push(b'"');
}

impl PartialEq for Value {
    /// Structural equality, used for partition keys (not the language's `==`).
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Value::Null => state.write_u8(0),
            Value::Bool(b) => {
                state.write_u8(1);
                b.hash(state)
            }
            Value::Int(i) => {
                state.write_u8(2);
                i.hash(state)
            }
            Value::Float(f) => {
                state.write_u8(3);
                f.to_bits().hash(state)
            }
            Value::Str(s) => {
                state.write_u8(4);
                s.hash(state)
            }
            Value::List(l) => {
                state.write_u8(5);
                l.hash(state)
            }
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(Text::from(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ways through `write_json_str`, the copy and the escaping loop, write JSON that reads
    /// back as the string written.
    #[test]
    fn strings_are_written_as_json_that_reads_back() {
        for s in [
            "",
            "u001647",
            "é€😀 plain",
            "quote \" in",
            "back\\slash",
            "line\nbreak\ttab\r",
            "\u{1}\u{1f} controls",
            "\"",
        ] {
            let mut out = Vec::new();
            write_json_str(s, &mut out);
            let back: String = serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("{s:?} wrote {:?}: {e}", String::from_utf8_lossy(&out)));
            assert_eq!(back, s);
        }
    }
}
