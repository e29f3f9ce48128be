//! The JSON-lines decoder as it was before the key cache and the 16-byte number scans: the
//! reference that `tests/json_decoder_reference.rs` holds `kairos::event::JsonDecoder` to. Kept
//! unchanged but for this comment, its tests, which stay with the decoder itself, and one rule
//! added to both since: a number beyond the range of a float, where a pattern reads it, is an
//! error at its first byte.
#![allow(dead_code)]

use super::time::{parse_rfc3339, TimeUnit};
use super::value::Value;
use super::Event;
use kairos::event::Text;

/// Why a line could not be decoded, and where (1-based byte column).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("column {col}: {message}")]
pub struct DecodeError {
    pub col: usize,
    pub message: String,
}

/// `LEN_MASK[n]` keeps the low `n` bytes of a 16-byte word.
const LEN_MASK: [u128; 17] = {
    let mut m = [0u128; 17];
    let mut n = 1;
    while n < 16 {
        m[n] = (1u128 << (8 * n)) - 1;
        n += 1;
    }
    m[16] = u128::MAX;
    m
};

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
    /// Names of up to 16 bytes by length, each zero-padded to 16 bytes with its index in
    /// `fields`: a key is compared, as one integer, only with names of its own length.
    by_len: [Vec<(u128, usize)>; 17],
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
        self.by_len = Default::default();
        for (i, f) in self.fields.iter().enumerate() {
            if f.0.len() <= 16 {
                self.by_len[f.0.len()].push((pad16(&f.0), i));
            }
        }
        if rest.is_empty() {
            self.fields[idx].1 = Some(slot);
        } else {
            self.fields[idx]
                .2
                .get_or_insert_with(Default::default)
                .insert(rest, slot);
        }
    }

    /// The entry of the name `line[start..end]`.
    // HOT PATH: called for every key of every object. Short names compare as integers instead of
    // through `memcmp`.
    #[inline]
    fn get(&self, line: &[u8], start: usize, end: usize) -> Option<&TrieEntry> {
        let len = end - start;
        if len <= 16 {
            let bucket = &self.by_len[len];
            if bucket.is_empty() {
                return None;
            }
            let k = match line.get(start..start + 16) {
                // One unaligned load, masked to the name's length.
                Some(w) => u128::from_le_bytes(w.try_into().expect("16 bytes")) & LEN_MASK[len],
                None => pad16(&line[start..end]),
            };
            let &(_, i) = bucket.iter().find(|&&(p, _)| p == k)?;
            Some(&self.fields[i])
        } else {
            self.fields.iter().find(|f| *f.0 == line[start..end])
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

    /// Decodes one JSON object into `ev` (its slots are reset first) and sets `ev.ts` from the time
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
        self.decode_object(Cursor::new(line), arrival, ev)
            .map(|_| ())
    }

    /// Decodes the line at the start of `buf` (JSON lines: the object must end its line).
    /// Returns the length of the line without its newline, and whether it held an event (a
    /// blank line does not). On an error, the caller finds the line's end itself.
    // HOT PATH: the decoder finds the end of the line as it parses, so the bytes are read once.
    pub fn decode_line(
        &self,
        buf: &[u8],
        arrival: i64,
        ev: &mut Event,
    ) -> Result<(usize, bool), DecodeError> {
        let mut c = Cursor::new(buf);
        c.line_mode = true;
        c.ws();
        if let None | Some(b'\n') = c.peek() {
            return Ok((c.i, false));
        }
        self.decode_object(c, arrival, ev).map(|end| (end, true))
    }

    /// Decodes the object at the cursor (after leading whitespace) into `ev`; it must be all
    /// that is left (up to a newline in line mode). Returns where it ended.
    #[inline(always)]
    fn decode_object(
        &self,
        mut c: Cursor<'_>,
        arrival: i64,
        ev: &mut Event,
    ) -> Result<usize, DecodeError> {
        c.ws();
        if c.peek() != Some(b'{') {
            let _ = c.fail::<()>("expected a JSON object");
            return Err(c.error());
        }
        if ev.slots.len() != self.nslots {
            ev.slots.resize(self.nslots, Value::Null);
        }
        for s in ev.slots.iter_mut() {
            *s = Value::Null;
        }
        if c.object(Some(&self.trie), &mut ev.slots, 0).is_err() {
            return Err(c.error());
        }
        c.ws();
        let at_end = match c.peek() {
            None => true,
            Some(b'\n') => c.line_mode,
            Some(_) => false,
        };
        if !at_end {
            let _ = c.fail::<()>("unexpected data after the JSON object");
            return Err(c.error());
        }
        ev.arrival = arrival;
        ev.ts = match self.time_slot {
            None => arrival,
            Some(slot) => self.time_of(&ev.slots[slot])?,
        };
        Ok(c.i)
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
    /// JSON lines: a newline ends the document, it is not whitespace inside it.
    line_mode: bool,
    /// Why and where decoding failed. Kept here rather than in every `Result`, so that results
    /// stay small enough to travel in registers on the hot path.
    fail_msg: &'static str,
    fail_at: usize,
}

/// Failure: the details are in the cursor.
type R<T> = Result<T, ()>;

const ASCII: u8 = 1;
const ESCAPED: u8 = 2;

impl<'a> Cursor<'a> {
    fn new(b: &'a [u8]) -> Self {
        Cursor {
            b,
            i: 0,
            line_mode: false,
            fail_msg: "",
            fail_at: 0,
        }
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[cold]
    fn fail<T>(&mut self, msg: &'static str) -> R<T> {
        self.fail_msg = msg;
        self.fail_at = self.i.min(self.b.len());
        Err(())
    }

    fn error(&self) -> DecodeError {
        DecodeError {
            col: self.fail_at + 1,
            message: self.fail_msg.to_string(),
        }
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            // Every byte that can follow whitespace in JSON is above the space: one compare
            // settles the usual case, compact JSON with no whitespace at all.
            if c > b' ' {
                return;
            }
            match c {
                b' ' | b'\t' | b'\r' => self.i += 1,
                b'\n' if !self.line_mode => self.i += 1,
                _ => return,
            }
        }
    }

    #[inline(always)]
    fn expect(&mut self, c: u8, msg: &'static str) -> R<()> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            self.fail(msg)
        }
    }

    fn object(&mut self, trie: Option<&Trie>, slots: &mut [Value], depth: usize) -> R<()> {
        if depth > MAX_DEPTH {
            return self.fail("nesting is too deep");
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
                return self.fail("expected a field name");
            }
            let start = self.i + 1;
            let (end, flags) = self.string_span()?;
            self.expect(b':', "expected `:`")?;
            self.ws();
            let entry = if flags & ESCAPED != 0 {
                None
            } else {
                trie.and_then(|t| t.get(self.b, start, end))
            };
            match entry {
                Some((_, Some(slot), sub)) => {
                    if let (Some(sub), Some(b'{')) = (sub, self.peek()) {
                        // Both `a` and `a.b` are used: `a` stays null and the object is entered.
                        self.object(Some(sub), slots, depth + 1)?;
                    } else {
                        self.value_into(depth, &mut slots[*slot])?;
                    }
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
                _ => return self.fail("expected `,` or `}`"),
            }
        }
    }

    /// Scans a string whose opening quote is at the cursor. Returns the end of its contents
    /// (the contents start one byte after the quote) and flags: `ASCII` when no byte is above
    /// 0x7f (then it needs no UTF-8 validation), `ESCAPED` when it holds escapes.
    // HOT PATH: most strings are short keys and values. On x86_64 a 16-byte block is tested at
    // once (SSE2, always present there) and the closing quote found by a bit scan; escapes,
    // control bytes and the last bytes of a line go through the byte loop.
    #[inline(always)]
    fn string_span(&mut self) -> R<(usize, u8)> {
        let b = self.b;
        let mut j = self.i + 1;
        let mut high = 0u8;
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::*;
            while j + 16 <= b.len() {
                // SAFETY: `j + 16 <= b.len()`, so the unaligned 16-byte load stays inside `b`;
                // SSE2 is part of the x86_64 baseline.
                let (quote, special, highs) = unsafe {
                    let v = _mm_loadu_si128(b.as_ptr().add(j) as *const __m128i);
                    let q = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
                    let bs = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
                    // Unsigned `v <= 0x1f`: control bytes, which JSON strings may not hold.
                    let ctrl =
                        _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f));
                    (
                        _mm_movemask_epi8(q) as u32,
                        _mm_movemask_epi8(_mm_or_si128(q, _mm_or_si128(bs, ctrl))) as u32,
                        _mm_movemask_epi8(v) as u32,
                    )
                };
                if special == 0 {
                    high |= if highs != 0 { 0x80 } else { 0 };
                    j += 16;
                    continue;
                }
                let first = special.trailing_zeros();
                if quote & (1 << first) != 0 {
                    // The closing quote, with no escape or control byte before it.
                    if highs & ((1u32 << first) - 1) != 0 {
                        high = 0x80;
                    }
                    let end = j + first as usize;
                    self.i = end + 1;
                    let ascii = if high < 0x80 { ASCII } else { 0 };
                    return Ok((end, ascii));
                }
                // An escape or a control byte: the byte loop takes over from the block.
                break;
            }
        }
        let mut escaped = 0u8;
        loop {
            let Some(&c) = b.get(j) else {
                self.i = b.len();
                return self.fail("unterminated string");
            };
            if c == b'"' {
                self.i = j + 1;
                let ascii = if high < 0x80 { ASCII } else { 0 };
                return Ok((j, ascii | escaped));
            }
            if c == b'\\' {
                escaped = ESCAPED;
                j += 2;
            } else if c < 0x20 {
                self.i = j;
                return self.fail("control character in string");
            } else {
                high |= c;
                j += 1;
            }
        }
    }

    /// Parses the string at the cursor into `out`.
    #[inline(always)]
    fn string_into(&mut self, out: &mut Value) -> R<()> {
        let start = self.i + 1;
        let (end, flags) = self.string_span()?;
        let raw = &self.b[start..end];
        if flags == ASCII && raw.len() <= 23 {
            // SAFETY: every byte is below 0x80, so the bytes are ASCII and therefore UTF-8.
            let text = unsafe { std::str::from_utf8_unchecked(raw) };
            *out = Value::Str(Text::from(text));
            return Ok(());
        }
        *out = Value::Str(self.string_of(start, end, flags)?);
        Ok(())
    }

    /// The string whose contents are `self.b[start..end]`, as [`Cursor::string_span`] found
    /// them with `flags`: longer ASCII strings, and those that need UTF-8 validation or
    /// unescaping.
    fn string_of(&mut self, start: usize, end: usize, flags: u8) -> R<Text> {
        let raw = &self.b[start..end];
        if flags == ASCII {
            // SAFETY: every byte is below 0x80, so the bytes are ASCII and therefore UTF-8.
            return Ok(Text::from(unsafe { std::str::from_utf8_unchecked(raw) }));
        }
        if flags & ESCAPED == 0 {
            return match std::str::from_utf8(raw) {
                Ok(t) => Ok(Text::from(t)),
                Err(_) => {
                    self.i = start;
                    self.fail("string is not valid UTF-8")
                }
            };
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
                    let at = start + j - 2;
                    let Some(mut cp) = hex(j) else {
                        self.i = at;
                        return self.fail("bad \\u escape");
                    };
                    j += 4;
                    if (0xD800..0xDC00).contains(&cp) {
                        let lo = if raw.get(j) == Some(&b'\\') && raw.get(j + 1) == Some(&b'u') {
                            hex(j + 2)
                        } else {
                            None
                        };
                        match lo {
                            Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                                j += 6;
                            }
                            _ => {
                                self.i = at;
                                return self.fail("bad \\u escape");
                            }
                        }
                    }
                    let Some(ch) = char::from_u32(cp) else {
                        self.i = at;
                        return self.fail("bad \\u escape");
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                _ => {
                    self.i = start + j - 2;
                    return self.fail("bad escape in string");
                }
            }
        }
        match String::from_utf8(out) {
            Ok(s) => Ok(Text::from(s)),
            Err(_) => {
                self.i = start;
                self.fail("string is not valid UTF-8")
            }
        }
    }

    /// Scans a number; returns whether it has a fraction or an exponent.
    fn number_span(&mut self) -> R<bool> {
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
            self.i = j;
            return self.fail("bad number");
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
                return self.fail("bad number");
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
                return self.fail("bad number");
            }
        }
        self.i = j;
        Ok(float)
    }

    // HOT PATH: integers (ids, amounts, epoch times) are read as their digits go by.
    #[inline]
    fn number_into(&mut self, out: &mut Value) -> R<()> {
        let start = self.i;
        let b = self.b;
        let mut j = start;
        let neg = b.get(j) == Some(&b'-');
        if neg {
            j += 1;
        }
        let digits = j;
        // Up to 18 digits cannot overflow an i64: plain arithmetic; longer ones are checked.
        let mut short: u64 = 0;
        while let Some(&c) = b.get(j) {
            if !c.is_ascii_digit() || j - digits == 18 {
                break;
            }
            short = short * 10 + (c - b'0') as u64;
            j += 1;
        }
        let mut acc = if neg { -(short as i64) } else { short as i64 };
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
            *out = Value::Int(acc);
            return Ok(());
        }
        self.number_span()?;
        let text = std::str::from_utf8(&self.b[start..self.i]).expect("digits are ASCII");
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => {
                *out = Value::Float(f);
                Ok(())
            }
            Ok(_) => {
                self.i = start;
                self.fail("number out of range")
            }
            Err(_) => {
                self.i = start;
                self.fail("bad number")
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> R<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            self.fail("unexpected token")
        }
    }

    /// Parses a value the patterns use into `out`. Objects become null (patterns read their
    /// fields by path).
    fn value_into(&mut self, depth: usize, out: &mut Value) -> R<()> {
        match self.peek() {
            Some(b'"') => self.string_into(out),
            Some(b'-' | b'0'..=b'9') => self.number_into(out),
            Some(b't') => {
                self.literal(b"true")?;
                *out = Value::Bool(true);
                Ok(())
            }
            Some(b'f') => {
                self.literal(b"false")?;
                *out = Value::Bool(false);
                Ok(())
            }
            Some(b'n') => {
                self.literal(b"null")?;
                *out = Value::Null;
                Ok(())
            }
            Some(b'[') => {
                if depth > MAX_DEPTH {
                    return self.fail("nesting is too deep");
                }
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    *out = Value::List(items.into());
                    return Ok(());
                }
                loop {
                    self.ws();
                    let mut v = Value::Null;
                    self.value_into(depth + 1, &mut v)?;
                    items.push(v);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            *out = Value::List(items.into());
                            return Ok(());
                        }
                        _ => return self.fail("expected `,` or `]`"),
                    }
                }
            }
            Some(b'{') => {
                self.object(None, &mut [], depth + 1)?;
                *out = Value::Null;
                Ok(())
            }
            _ => self.fail("expected a value"),
        }
    }

    /// Validates and skips a value nobody reads.
    fn skip(&mut self, depth: usize) -> R<()> {
        match self.peek() {
            Some(b'"') => self.string_span().map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number_span().map(|_| ()),
            Some(b'{') => self.object(None, &mut [], depth + 1),
            Some(b'[') => {
                if depth > MAX_DEPTH {
                    return self.fail("nesting is too deep");
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
                        _ => return self.fail("expected `,` or `]`"),
                    }
                }
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => self.fail("expected a value"),
        }
    }
}
