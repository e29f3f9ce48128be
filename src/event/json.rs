//! A JSON-lines decoder that extracts only the fields patterns use.
//!
//! It validates the whole line (a malformed line is an error with its column) but materialises
//! only the referenced paths, so the cost of an event grows with what the patterns read, not with
//! the width of the JSON.

use super::time::{parse_rfc3339, TimeUnit};
use super::value::Value;
use super::Event;
use super::Text;
use std::cell::Cell;

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

    /// The index in `fields` of the name `line[start..end]`.
    // HOT PATH: called for every key the key cache does not predict. Short names compare as
    // integers instead of through `memcmp`.
    #[inline]
    fn find(&self, line: &[u8], start: usize, end: usize) -> Option<usize> {
        let name = line.get(start..end)?;
        let len = name.len();
        if len <= 16 {
            let bucket = &self.by_len[len];
            if bucket.is_empty() {
                return None;
            }
            // The bytes after the name are masked off; those past the line read as zero.
            let k = load16(line, start) & LEN_MASK[len];
            bucket.iter().find(|&&(p, _)| p == k).map(|&(_, i)| i)
        } else {
            self.fields.iter().position(|f| *f.0 == *name)
        }
    }
}

/// The 16 bytes of `b` from `i`, little-endian, with those past its end read as zero.
// HOT PATH: one unaligned load away from the end of the buffer. Near the end, the last 16
// bytes are loaded and shifted down rather than copied byte by byte.
#[inline(always)]
fn load16(b: &[u8], i: usize) -> u128 {
    match window16(b, i) {
        Some(w) => u128::from_le_bytes(*w),
        None => load16_tail(b, i),
    }
}

/// The 16 bytes of `b` from `i`, where there are as many.
#[inline(always)]
fn window16(b: &[u8], i: usize) -> Option<&[u8; 16]> {
    // `i` is at most `b.len()`, so `i + 16` cannot overflow; one compare settles it.
    b.get(i..i.wrapping_add(16))?.first_chunk::<16>()
}

#[inline(never)]
fn load16_tail(b: &[u8], i: usize) -> u128 {
    let rest = match b.get(i..) {
        None | Some([]) => return 0,
        Some(rest) => rest,
    };
    match b.last_chunk::<16>() {
        // `rest` is 1 to 15 bytes long here, so the shift is below 128.
        Some(w) => u128::from_le_bytes(*w) >> (8 * (16 - rest.len())),
        None => pad16(rest),
    }
}

/// The 16 bytes of `b` from `i`, with those past its end read as zero.
#[inline(always)]
fn chunk16(b: &[u8], i: usize) -> [u8; 16] {
    match window16(b, i) {
        Some(w) => *w,
        None => load16_tail(b, i).to_le_bytes(),
    }
}

/// How many of the bytes of `w` are ASCII digits before the first one that is not (16 when all
/// are).
// HOT PATH: SSE2 (always present on x86_64) tests the 16 bytes at once.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn digit_count(w: &[u8; 16]) -> usize {
    use std::arch::x86_64::*;
    // SAFETY: the unaligned load reads the 16 bytes of `w`; SSE2 is part of the x86_64
    // baseline.
    let digits = unsafe {
        let v = _mm_loadu_si128(w.as_ptr() as *const __m128i);
        // Unsigned `v - '0' <= 9`.
        let d = _mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8));
        _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(9)), d)) as u32
    };
    (!digits).trailing_zeros() as usize
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn digit_count(w: &[u8; 16]) -> usize {
    digit_count_swar(w)
}

/// [`digit_count`] in plain integer arithmetic.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn digit_count_swar(w: &[u8; 16]) -> usize {
    const ONES: u128 = u128::MAX / 0xFF; // 0x01 in every byte
    let w = u128::from_le_bytes(*w);
    // Per byte, with no carry into the next: the high nibble must be 3, and the low one at most
    // 9, which adding 6 to it leaves below 0x10.
    let x =
        ((w & (ONES * 0xF0)) ^ (ONES * 0x30)) | (((w & (ONES * 0x0F)) + ONES * 6) & (ONES * 0x10));
    // The top bit of every byte where `x` is not zero.
    let bad = (((x & (ONES * 0x7F)) + ONES * 0x7F) | x) & (ONES * 0x80);
    (bad.trailing_zeros() / 8) as usize
}

/// Where the run of ASCII digits from `b[j]` ends.
#[inline(always)]
fn digits_end(b: &[u8], mut j: usize) -> usize {
    loop {
        // The zeros read past the end are not digits: the run ends within `b`.
        let n = digit_count(&chunk16(b, j));
        j += n;
        if n < 16 {
            return j;
        }
    }
}

/// The value of up to 8 decimal digits, one per byte of `v` as digit values (0..=9), the most
/// significant in the lowest byte: two multiplications instead of a loop (the method of
/// `fast_float`).
#[inline(always)]
fn eight_digits(v: u64) -> u64 {
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let lo = (v & 0x0000_00FF_0000_00FF).wrapping_mul(100 + (1_000_000 << 32));
    let hi = ((v >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32));
    lo.wrapping_add(hi) >> 32
}

/// The value of the first `n` (1..=15) bytes of `w`, all ASCII digits.
#[inline(always)]
fn digits_value(w: &[u8; 16], n: usize) -> u64 {
    const ZEROS: u64 = u64::from_le_bytes([b'0'; 8]);
    let (lo, hi) = w.split_at(8);
    let word = |h: &[u8]| h.first_chunk::<8>().map_or(0, |h| u64::from_le_bytes(*h));
    // The subtraction borrows only from bytes above the digits, which the shift then drops;
    // the bytes shifted in stand for leading zeros.
    let lo = word(lo).wrapping_sub(ZEROS);
    if n <= 8 {
        eight_digits(lo << (8 * (8 - n)))
    } else {
        let hi = word(hi).wrapping_sub(ZEROS) << (8 * (16 - n));
        eight_digits(lo) * POW10[n - 8] + eight_digits(hi)
    }
}

const POW10: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// A key the decoder has met: its bytes from the opening quote to the colon, and what follows
/// it.
#[derive(Debug, Clone, Copy, Default)]
struct KnownKey {
    /// The bytes, zero-padded to 16, and the mask of their length.
    pat: u128,
    mask: u128,
    len: u8,
    /// 1 + the index of its field in the root trie; 0 where no pattern reads it.
    entry: u32,
    /// 1 + the slot of its value where it has one and no nested fields; 0 otherwise.
    slot: u32,
    /// The keys that came right after it, most recent first (0: none).
    next: [u8; 2],
}

/// Nodes in a key cache, `START` included.
const KEYS: usize = 64;
/// The node for the start of an object: what it predicts is the first key.
const START: u8 = 0;
/// No prediction: after a key the cache could not hold.
const NO_STATE: u8 = u8::MAX;

/// The keys of top-level objects as the stream has written them, each with the keys seen right
/// after it. A JSON-lines producer almost always writes the same keys in the same order, so the
/// next key is checked against one or two predictions with a masked 16-byte compare, instead of
/// being scanned as a string and searched in the trie. Any miss takes the general path, which
/// teaches the cache.
#[derive(Debug, Clone)]
struct KeyCache {
    nodes: [Cell<KnownKey>; KEYS],
    /// Nodes in use; a full cache starts again from nothing.
    used: Cell<u8>,
    /// The node of a key by a hash of its bytes (0: none), to find it when it is met again.
    by_hash: [Cell<u8>; 64],
}

/// A predicted key: its node, its length (quotes and colon included) and its trie entry.
struct Hit {
    node: u8,
    len: usize,
    entry: u32,
    slot: u32,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            nodes: std::array::from_fn(|_| Cell::new(KnownKey::default())),
            used: Cell::new(1),
            by_hash: std::array::from_fn(|_| Cell::new(0)),
        }
    }
}

impl KeyCache {
    // HOT PATH: once per key of a top-level object.
    #[inline(always)]
    fn predict(&self, b: &[u8], i: usize, state: u8) -> Option<Hit> {
        let next = self.nodes[state as usize % KEYS].get().next;
        if next[0] == 0 {
            return None;
        }
        let w = load16(b, i);
        for n in next {
            if n == 0 {
                break;
            }
            let k = self.nodes[n as usize % KEYS].get();
            // Every byte of a key is nonzero, so the zeros `load16` reads past the end never
            // match.
            if w & k.mask == k.pat {
                return Some(Hit {
                    node: n,
                    len: k.len as usize,
                    entry: k.entry,
                    slot: k.slot,
                });
            }
        }
        None
    }

    /// Records that the key `b[quote..colon + 1]` (its field `entry` and `slot`, as in
    /// [`KnownKey`]) followed the node `state`, and returns the key's node, or `NO_STATE` where
    /// the key is too long to be predicted with one compare.
    #[inline(never)]
    fn learn(
        &self,
        b: &[u8],
        (quote, colon): (usize, usize),
        (entry, slot): (u32, u32),
        state: u8,
    ) -> u8 {
        let Some(bytes) = b.get(quote..colon + 1) else {
            return NO_STATE;
        };
        if bytes.len() > 16 {
            return NO_STATE;
        }
        let pat = pad16(bytes);
        let len = bytes.len() as u8;
        let h = (((pat as u64) ^ ((pat >> 64) as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58)
            as usize;
        let known = self.by_hash[h].get();
        let k = self.nodes[known as usize % KEYS].get();
        let mut reset = false;
        let node = if known != 0 && k.pat == pat && k.len == len {
            known
        } else {
            let mut n = self.used.get();
            if n as usize == KEYS {
                // Full: the stream has more keys than the cache holds, or has changed. Forget
                // them all (nodes are overwritten as they are reused).
                self.nodes[START as usize].set(KnownKey::default());
                for c in &self.by_hash {
                    c.set(0);
                }
                n = 1;
                reset = true;
            }
            self.used.set(n + 1);
            self.nodes[n as usize % KEYS].set(KnownKey {
                pat,
                mask: LEN_MASK[bytes.len()],
                len,
                entry,
                slot,
                next: [0, 0],
            });
            self.by_hash[h].set(n);
            n
        };
        // After a reset `state` names a forgotten key.
        if state != NO_STATE && !reset {
            let c = &self.nodes[state as usize % KEYS];
            let mut s = c.get();
            if s.next[0] != node {
                s.next = [node, s.next[0]];
                c.set(s);
            }
        }
        node
    }
}

/// Decodes JSON objects into [`Event`] slots.
///
/// A decoder learns the order in which its stream writes keys, to check the next key with one
/// compare (a cache behind [`Cell`], only ever a hint): it is `Send` but not `Sync`. Give each
/// thread its own; cloning one is cheap.
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    trie: Trie,
    nslots: usize,
    time_slot: Option<usize>,
    unit: TimeUnit,
    /// Learnt from the lines decoded so far; only ever a hint, checked before it is used.
    keys: KeyCache,
}

const MAX_DEPTH: usize = 64;

/// The most values that the lists of one event's fields may hold, where patterns read them
/// (nested lists count every value); an event with more is an error. Lists nobody reads are
/// only validated, never built, and have no such bound.
pub const MAX_LIST_VALUES: usize = 65_536;

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
            keys: KeyCache::default(),
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
        if c.object(Some(&self.trie), &mut ev.slots, 0, Some(&self.keys))
            .is_err()
        {
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
            Some(slot) => match ev.slots[slot] {
                // HOT PATH: epoch times are integers; the rest, and errors, go the long way.
                Value::Int(t) => match t.checked_mul(self.unit.nanos()) {
                    Some(ns) => ns,
                    None => self.time_of(&ev.slots[slot])?,
                },
                ref v => self.time_of(v)?,
            },
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

/// Stores the value `new` makes in `out`, dropping what was there.
// HOT PATH: the slot is null (slots are cleared before a line is decoded), and overwriting a
// null needs no call to its destructor. `new` runs in each branch, so that the value is built
// straight into `out` rather than in a temporary copied over (through the store buffer, with a
// stall: see `string_into`).
#[inline(always)]
fn put(out: &mut Value, new: impl FnOnce() -> Value) {
    if let Value::Null = out {
        // SAFETY: `out` is a valid, aligned, exclusive reference. The null it holds owns
        // nothing, so writing over it without dropping it leaks nothing.
        unsafe { std::ptr::write(out, new()) };
    } else {
        replace_slow(out, new());
    }
}

/// A field given twice: the first value is dropped.
#[cold]
#[inline(never)]
fn replace_slow(out: &mut Value, new: Value) {
    *out = new;
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
    /// Values decoded into lists so far (see [`MAX_LIST_VALUES`]).
    list_values: usize,
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
            list_values: 0,
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

    /// Parses the object at the cursor, its fields `trie` names into `slots`. `keys` predicts
    /// the keys of top-level objects.
    // HOT PATH: in compact JSON whose keys the cache predicts, a field costs one compare for its
    // key, its value, and a look at the byte after it.
    fn object(
        &mut self,
        trie: Option<&Trie>,
        slots: &mut [Value],
        depth: usize,
        keys: Option<&KeyCache>,
    ) -> R<()> {
        if depth > MAX_DEPTH {
            return self.fail("nesting is too deep");
        }
        self.i += 1; // '{'
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        let mut state = if keys.is_some() { START } else { NO_STATE };
        loop {
            let hit = match keys {
                Some(k) if state != NO_STATE => k.predict(self.b, self.i, state),
                _ => None,
            };
            // 1 + the index of the key's field in `trie` (0 for a key no pattern reads), and
            // 1 + its slot where it has one and no nested fields (0 otherwise).
            let (entry, slot) = match hit {
                Some(h) => {
                    // The same bytes as a key the general path below has read: what it would
                    // do with them.
                    self.i += h.len;
                    state = h.node;
                    (h.entry as usize, h.slot as usize)
                }
                None => {
                    self.ws();
                    if self.peek() != Some(b'"') {
                        return self.fail("expected a field name");
                    }
                    let quote = self.i;
                    let (end, flags) = self.string_span()?;
                    self.expect(b':', "expected `:`")?;
                    let found = if flags & ESCAPED != 0 {
                        None
                    } else {
                        trie.and_then(|t| t.find(self.b, quote + 1, end))
                    };
                    let entry = found.map_or(0, |i| i + 1);
                    if let Some(k) = keys {
                        let slot = match found.and_then(|i| trie?.fields.get(i)) {
                            Some((_, Some(slot), None)) => slot + 1,
                            _ => 0,
                        };
                        // Only a key written as `"name":`, without escapes, is predicted.
                        state = match (u32::try_from(entry), u32::try_from(slot)) {
                            (Ok(e), Ok(s)) if flags & ESCAPED == 0 && self.i == end + 2 => {
                                k.learn(self.b, (quote, end + 1), (e, s), state)
                            }
                            _ => NO_STATE,
                        };
                    }
                    (entry, 0)
                }
            };
            self.ws();
            if let Some(slot) = slot.checked_sub(1) {
                // A predicted key whose value goes to a slot.
                self.slot_value(depth, &mut slots[slot])?;
                if self.after_field()? {
                    return Ok(());
                }
                continue;
            }
            let field = match (entry.checked_sub(1), trie) {
                (Some(i), Some(t)) => t.fields.get(i),
                _ => None,
            };
            match field {
                Some((_, Some(slot), sub)) => {
                    if let (Some(sub), Some(b'{')) = (sub, self.peek()) {
                        // Both `a` and `a.b` are used: `a` stays null and the object is entered.
                        self.object(Some(sub), slots, depth + 1, None)?;
                    } else {
                        self.slot_value(depth, &mut slots[*slot])?;
                    }
                }
                Some((_, None, Some(sub))) if self.peek() == Some(b'{') => {
                    self.object(Some(sub), slots, depth + 1, None)?
                }
                _ => match self.peek() {
                    Some(b'"') => {
                        self.string_span()?;
                    }
                    Some(b'-' | b'0'..=b'9') => {
                        self.number_span()?;
                    }
                    _ => self.skip(depth)?,
                },
            }
            if self.after_field()? {
                return Ok(());
            }
        }
    }

    /// Parses the value of a field a pattern reads into its slot.
    // HOT PATH: strings and numbers, nearly every such value, without the call into
    // `value_into`.
    #[inline(always)]
    fn slot_value(&mut self, depth: usize, out: &mut Value) -> R<()> {
        match self.peek() {
            Some(b'"') => self.string_into(out),
            Some(b'-' | b'0'..=b'9') => self.number_into(out),
            _ => self.value_into(depth, out),
        }
    }

    /// Steps over the `,` or `}` after a field's value (and whitespace before it); returns
    /// whether it was the `}`.
    #[inline(always)]
    fn after_field(&mut self) -> R<bool> {
        let mut next = self.peek();
        if !matches!(next, Some(b',' | b'}')) {
            self.ws();
            next = self.peek();
        }
        match next {
            Some(b',') => {
                self.i += 1;
                Ok(false)
            }
            Some(b'}') => {
                self.i += 1;
                Ok(true)
            }
            _ => self.fail("expected `,` or `}`"),
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
    // HOT PATH: short ASCII strings (ids, kinds) are built in place from one 16-byte load of
    // their bytes, without passing through a `Result` or a copy of their length: a value built
    // by narrow stores and moved at once with wide loads waits for the stores to reach the
    // cache (a store-forwarding stall of a dozen cycles per string).
    #[inline(always)]
    fn string_into(&mut self, out: &mut Value) -> R<()> {
        let start = self.i + 1;
        let (end, flags) = self.string_span()?;
        if flags == ASCII {
            if let Some(text) = Text::from_ascii_word(load16(self.b, start), end - start) {
                put(out, move || Value::Str(text));
                return Ok(());
            }
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
    // HOT PATH: numbers nobody reads (odds, prices) are skipped 16 digits at a time.
    #[inline(always)]
    fn number_span(&mut self) -> R<bool> {
        let b = self.b;
        let mut j = self.i;
        if b.get(j) == Some(&b'-') {
            j += 1;
        }
        let ds = j;
        j = digits_end(b, j);
        if j == ds || (b[ds] == b'0' && j - ds > 1) {
            self.i = j;
            return self.fail("bad number");
        }
        let mut float = false;
        if b.get(j) == Some(&b'.') {
            float = true;
            j += 1;
            let fs = j;
            j = digits_end(b, j);
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
            j = digits_end(b, j);
            if j == es {
                self.i = j;
                return self.fail("bad number");
            }
        }
        self.i = j;
        Ok(float)
    }

    // HOT PATH: integers (ids, amounts, epoch times) of up to 15 digits are read 16 bytes at a
    // time; the rest (floats, longer or malformed numbers) go through `number_slow`.
    #[inline(always)]
    fn number_into(&mut self, out: &mut Value) -> R<()> {
        let neg = self.peek() == Some(b'-');
        let digits = self.i + neg as usize;
        let w = chunk16(self.b, digits);
        let n = digit_count(&w);
        // The byte after the digits; zero past the end, like any other byte that ends a number.
        let after = w[n % 16];
        let leading_zero = w[0] == b'0' && n > 1;
        if (1..16).contains(&n) && !matches!(after, b'.' | b'e' | b'E') && !leading_zero {
            // At most 15 digits: no overflow, as an i64 either way round.
            let v = digits_value(&w, n) as i64;
            self.i = digits + n;
            let v = if neg { -v } else { v };
            put(out, || Value::Int(v));
            return Ok(());
        }
        self.number_slow(out)
    }

    /// Parses the number at the cursor into `out`, whatever its form. A number beyond the range
    /// of a 64-bit float (`1e400`) is an error at its first byte: a pattern would otherwise
    /// read an infinity, which no record can write. (A number nobody reads is only scanned,
    /// so it has no value to be out of range.)
    #[inline(never)]
    fn number_slow(&mut self, out: &mut Value) -> R<()> {
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
                    // Decoded lists cost 24 bytes a value, several times the 2 or more bytes
                    // each takes in the line: bounded, so that no line can take memory out of
                    // proportion to the limit on its length.
                    self.list_values += 1;
                    if self.list_values > MAX_LIST_VALUES {
                        return self.fail("too many list values (an event may hold 65536)");
                    }
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
                self.object(None, &mut [], depth + 1, None)?;
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
            Some(b'{') => self.object(None, &mut [], depth + 1, None),
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
        for n in [
            0i64,
            -7,
            123456789012345678,
            -123456789012345678,
            i64::MAX,
            i64::MIN + 1,
        ] {
            let line = format!(r#"{{"a":{n}}}"#);
            d.decode(line.as_bytes(), 0, &mut ev).unwrap();
            assert_eq!(ev.slots[0], Value::Int(n), "{n}");
        }
        d.decode(br#"{"a":9223372036854775808}"#, 0, &mut ev)
            .unwrap();
        assert_eq!(ev.slots[0], Value::Float(9223372036854775808.0));
        assert_eq!(ev.ts, 0);
    }

    /// The digit scans and conversions against the obvious byte loop, the integer fallback of
    /// the SSE2 scan included (it is what other targets run), on every position of a digit run
    /// and every byte that can end one.
    #[test]
    fn digit_scans_match_a_byte_loop() {
        let naive = |w: &[u8; 16]| w.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut words = Vec::new();
        for n in 0..=16 {
            for end in [
                0u8,
                b'/',
                b':',
                b'.',
                b'e',
                b',',
                b'}',
                0x80,
                0xff,
                b' ',
                b'0' + 0x80,
            ] {
                for d in [b'0', b'1', b'5', b'9'] {
                    let mut w = [b'7'; 16];
                    w[0] = d;
                    if n < 16 {
                        w[n] = end;
                    }
                    words.push(w);
                }
            }
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            let mut w = [0u8; 16];
            for c in w.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *c = if x & 3 == 0 {
                    x as u8 >> 1
                } else {
                    b'0' + (x >> 8) as u8 % 10
                };
            }
            words.push(w);
        }
        for w in &words {
            let n = naive(w);
            assert_eq!(digit_count(w), n, "{w:?}");
            assert_eq!(digit_count_swar(w), n, "{w:?}");
            if (1..16).contains(&n) {
                let text = std::str::from_utf8(&w[..n]).unwrap();
                assert_eq!(digits_value(w, n), text.parse::<u64>().unwrap(), "{text}");
            }
        }
    }

    /// The loads near the end of the buffer read the bytes that are there and zeros after them.
    #[test]
    fn loads_past_the_end_read_zeros() {
        let b: Vec<u8> = (1..=40).collect();
        for len in 0..=b.len() {
            for i in 0..=len + 2 {
                let mut want = [0u8; 16];
                for (k, c) in want.iter_mut().enumerate() {
                    *c = b[..len].get(i + k).copied().unwrap_or(0);
                }
                assert_eq!(load16(&b[..len], i), u128::from_le_bytes(want), "{len} {i}");
                assert_eq!(chunk16(&b[..len], i), want, "{len} {i}");
            }
        }
    }

    proptest::proptest! {
        /// Any string, written by an independent JSON encoder, decodes to itself, wherever its
        /// quotes, escapes and multi-byte characters fall relative to 16-byte blocks.
        #[test]
        fn strings_round_trip(s in "(\\PC|[\"\\\\\\x00-\\x1f]|é|€|😀){0,60}", pad in 0usize..20) {
            let d = dec(&["k", "s"]);
            let mut ev = Event::with_slots(2);
            let line = format!(r#"{{"k":"{}","s":{}}}"#, "x".repeat(pad), serde_json::to_string(&s).unwrap());
            d.decode(line.as_bytes(), 0, &mut ev).unwrap();
            proptest::prop_assert_eq!(&ev.slots[1], &Value::from(s.as_str()));
        }

        /// A raw control byte or an unterminated string is always an error, never a panic.
        #[test]
        fn bad_strings_are_errors(prefix in "[a-z]{0,40}", bad in 0u8..0x20) {
            let d = dec(&["s"]);
            let mut ev = Event::with_slots(1);
            let mut line = format!(r#"{{"s":"{prefix}"#).into_bytes();
            line.push(bad);
            line.extend_from_slice(b"\"}");
            proptest::prop_assert!(d.decode(&line, 0, &mut ev).is_err());
            let unterminated = format!(r#"{{"s":"{prefix}"#);
            proptest::prop_assert!(d.decode(unterminated.as_bytes(), 0, &mut ev).is_err());
        }
    }

    /// A number beyond the range of a float, in a field a pattern reads, is an error at its
    /// first byte; one that only loses precision, or underflows to zero, is not, and one
    /// nobody reads is only scanned.
    #[test]
    fn numbers_out_of_range_are_errors() {
        let d = dec(&["a"]);
        let mut ev = Event::with_slots(1);
        let huge = "9".repeat(400);
        for (line, col) in [
            (r#"{"a":1e400}"#.to_string(), 6),
            (r#"{"a":-1E+400,"b":1}"#.to_string(), 6),
            (r#"{"a":[1,2.5e309]}"#.to_string(), 9),
            (format!(r#"{{"a":{huge}}}"#), 6),
        ] {
            let e = d.decode(line.as_bytes(), 0, &mut ev).unwrap_err();
            assert_eq!(
                (e.col, e.message.as_str()),
                (col, "number out of range"),
                "{line}"
            );
        }
        for (line, v) in [
            (r#"{"a":1e-400}"#.to_string(), 0.0),
            (r#"{"a":1.7e308}"#.to_string(), 1.7e308),
            (format!(r#"{{"a":{}}}"#, "9".repeat(300)), 1e300),
        ] {
            d.decode(line.as_bytes(), 0, &mut ev).unwrap();
            assert_eq!(ev.slots[0], Value::Float(v), "{line}");
        }
        d.decode(
            format!(r#"{{"b":1e400,"z":{{"y":-{huge}.5}},"a":2}}"#).as_bytes(),
            0,
            &mut ev,
        )
        .unwrap();
        assert_eq!(ev.slots[0], Value::Int(2));
    }

    /// The lists of the fields patterns read hold at most `MAX_LIST_VALUES` values in all, nested
    /// ones included; lists nobody reads are not bounded, as they are never built.
    #[test]
    fn list_values_are_bounded() {
        let d = dec(&["a", "b"]);
        let mut ev = Event::with_slots(2);
        let list = |n: usize| format!("[{}]", vec!["1"; n].join(","));
        let at_limit = format!(r#"{{"a":{}}}"#, list(MAX_LIST_VALUES));
        d.decode(at_limit.as_bytes(), 0, &mut ev).unwrap();
        assert!(matches!(&ev.slots[0], Value::List(l) if l.len() == MAX_LIST_VALUES));
        let over = format!(r#"{{"a":{}}}"#, list(MAX_LIST_VALUES + 1));
        let e = d.decode(over.as_bytes(), 0, &mut ev).unwrap_err();
        assert!(e.message.contains(&MAX_LIST_VALUES.to_string()), "{e}");
        assert_eq!(e.col, 7 + 2 * MAX_LIST_VALUES, "{e}");
        // Two lists, and a list of lists, share the bound.
        let half = MAX_LIST_VALUES / 2;
        let two = format!(r#"{{"a":{},"b":{}}}"#, list(half), list(half + 1));
        assert!(d.decode(two.as_bytes(), 0, &mut ev).is_err());
        let nested = format!(r#"{{"a":[{},[]]}}"#, list(MAX_LIST_VALUES - 1));
        assert!(d.decode(nested.as_bytes(), 0, &mut ev).is_err());
        let unread = format!(r#"{{"z":{},"a":1}}"#, list(MAX_LIST_VALUES * 2));
        d.decode(unread.as_bytes(), 0, &mut ev).unwrap();
        assert_eq!(ev.slots[0], Value::Int(1));
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
