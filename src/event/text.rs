//! The strings of event values: up to 22 bytes inline, longer ones shared.
//!
//! Nearly every string an event carries is short (ids, kinds, markets), so [`Text`] keeps up to
//! [`INLINE`] bytes inside the value itself and allocates only beyond that. The representation
//! is canonical (a string is inline exactly when it fits, and the unused inline bytes are zero),
//! so that the usual short string compares as one fixed-size block and hashes as three words,
//! instead of walking bytes: partition keys are hashed and compared once per event.
//!
//! ```
//! use kairos::event::Text;
//! let t = Text::from("u001647");
//! assert_eq!(t.as_str(), "u001647");
//! assert_eq!(t, Text::from(String::from("u001647")));
//! assert!(Text::from("a string well over twenty-two bytes").len() > 22);
//! ```

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// The longest string stored inline.
pub const INLINE: usize = 22;

/// A string: inline up to [`INLINE`] bytes, shared (`Arc<str>`) beyond. Cloning either is cheap.
#[derive(Clone)]
pub struct Text(Repr);

#[derive(Clone)]
enum Repr {
    Inline(Inline),
    Heap(Arc<str>),
}

/// `len` is an enum with one variant per possible length, so that the byte it occupies has
/// values left over: `Repr` and [`crate::event::Value`] keep their tags there and stay 24 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C)]
struct Inline {
    len: Len,
    /// `buf[..len]` is UTF-8; the rest is zero.
    buf: [u8; INLINE],
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[rustfmt::skip]
enum Len {
    L0, L1, L2, L3, L4, L5, L6, L7, L8, L9, L10, L11, L12, L13, L14, L15, L16, L17, L18, L19,
    L20, L21, L22,
}

#[rustfmt::skip]
const LENS: [Len; INLINE + 1] = [
    Len::L0, Len::L1, Len::L2, Len::L3, Len::L4, Len::L5, Len::L6, Len::L7, Len::L8, Len::L9,
    Len::L10, Len::L11, Len::L12, Len::L13, Len::L14, Len::L15, Len::L16, Len::L17, Len::L18,
    Len::L19, Len::L20, Len::L21, Len::L22,
];

/// `MASKS[n]`: the low `n` bytes of a 16-byte word.
const MASKS: [u128; 17] = {
    let mut m = [0u128; 17];
    let mut n = 1;
    while n <= 16 {
        m[n] = u128::MAX >> (8 * (16 - n));
        n += 1;
    }
    m
};

impl Text {
    /// The ASCII string held in the low `len` bytes of `word` (little-endian), or `None` where
    /// `len` is over 16 or a byte is not ASCII. Bytes above `len` are ignored.
    ///
    /// A decoder that has the bytes in a register already builds the string from it with whole
    /// stores, instead of a copy of `len` bytes that a wider read of the value would then wait
    /// on (a store-forwarding stall).
    // HOT PATH: once per short string field an event carries.
    #[inline(always)]
    pub fn from_ascii_word(word: u128, len: usize) -> Option<Text> {
        let word = word & *MASKS.get(len)?;
        if word & 0x8080_8080_8080_8080_8080_8080_8080_8080 != 0 {
            return None;
        }
        let b = word.to_le_bytes();
        let mut buf = [0u8; INLINE];
        buf[..16].copy_from_slice(&b);
        Some(Text(Repr::Inline(Inline {
            len: LENS[len],
            buf,
        })))
    }

    /// The string.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(i) => {
                let bytes = &i.buf[..i.len as usize];
                // SAFETY: every constructor stores UTF-8 in `buf[..len]` (a whole `&str`, or
                // ASCII bytes), and nothing else writes it.
                unsafe { std::str::from_utf8_unchecked(bytes) }
            }
            Repr::Heap(s) => s,
        }
    }

    /// Whether the string lives on the heap (longer than [`INLINE`] bytes).
    pub fn is_heap_allocated(&self) -> bool {
        matches!(self.0, Repr::Heap(_))
    }
}

impl From<&str> for Text {
    #[inline]
    fn from(s: &str) -> Text {
        if s.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            Text(Repr::Inline(Inline {
                len: LENS[s.len()],
                buf,
            }))
        } else {
            Text(Repr::Heap(Arc::from(s)))
        }
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text::from(s.as_str())
    }
}

impl Deref for Text {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Text {
    // HOT PATH: partition keys are compared once per event. The representation is canonical,
    // so two inline strings are equal exactly when their 23 bytes are.
    #[inline]
    fn eq(&self, other: &Text) -> bool {
        match (&self.0, &other.0) {
            (Repr::Inline(a), Repr::Inline(b)) => a == b,
            (Repr::Heap(a), Repr::Heap(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl Hash for Text {
    // HOT PATH: partition keys are hashed once per event. An inline string's first two words are
    // mixed with a wide multiplication: hashers such as Fx only multiply, which carries the
    // low bytes of an id (`u00`) up into the bits hash tables index by and leaves its varying
    // digits out of the tag bits, crowding the table.
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        match &self.0 {
            Repr::Inline(i) => {
                let word = |at: usize| {
                    let mut w = [0u8; 8];
                    let end = (at + 8).min(INLINE);
                    w[..end - at].copy_from_slice(&i.buf[at..end]);
                    u64::from_le_bytes(w)
                };
                let h = mix(
                    word(0) ^ 0x243f_6a88_85a3_08d3,
                    word(8) ^ 0x1319_8a2e_0370_7344,
                );
                state.write_u64(h ^ word(16).rotate_left(23) ^ i.len as u64);
            }
            Repr::Heap(s) => s.hash(state),
        }
    }
}

/// The two halves of the 128-bit product, folded: every bit of either input reaches every
/// bit of the result.
#[inline(always)]
fn mix(a: u64, b: u64) -> u64 {
    let p = a as u128 * b as u128;
    (p as u64) ^ ((p >> 64) as u64)
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text::from(v))
            }
        }
        d.deserialize_str(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash_of(t: &Text) -> u64 {
        let mut h = DefaultHasher::new();
        t.hash(&mut h);
        h.finish()
    }

    #[test]
    fn short_strings_are_inline_and_long_ones_shared() {
        assert!(!Text::from("").is_heap_allocated());
        assert!(!Text::from("x".repeat(INLINE).as_str()).is_heap_allocated());
        assert!(Text::from("x".repeat(INLINE + 1).as_str()).is_heap_allocated());
        assert_eq!(std::mem::size_of::<Text>(), 24);
    }

    #[test]
    fn ascii_words_give_the_string_of_their_low_bytes() {
        let word = u128::from_le_bytes(*b"deposit\",\"amount");
        assert_eq!(
            Text::from_ascii_word(word, 7).unwrap(),
            Text::from("deposit")
        );
        assert_eq!(Text::from_ascii_word(word, 0).unwrap(), Text::from(""));
        assert_eq!(
            Text::from_ascii_word(word, 16).unwrap().as_str(),
            "deposit\",\"amount"
        );
        assert!(Text::from_ascii_word(word, 17).is_none());
        let accented = u128::from_le_bytes(*"é.............. ".as_bytes().first_chunk().unwrap());
        assert!(Text::from_ascii_word(accented, 4).is_none());
        // The non-ASCII byte lies above the length: it is ignored.
        assert_eq!(
            Text::from_ascii_word(accented << 8 | 0x61, 1).unwrap(),
            Text::from("a")
        );
    }

    /// Ids that differ only in a few digits spread over a hash table's buckets and over the
    /// 7-bit tags it filters candidates by, with the engine's hasher.
    #[test]
    fn sequential_ids_spread_over_buckets_and_tags() {
        use std::hash::BuildHasher;
        let hashes: Vec<u64> = (0..10_000)
            .map(|i| rustc_hash::FxBuildHasher.hash_one(Text::from(format!("u{i:06}"))))
            .collect();
        let mut buckets = vec![0u32; 1 << 14];
        let mut tags = [0u32; 128];
        for h in &hashes {
            buckets[(*h as usize) & ((1 << 14) - 1)] += 1;
            tags[(*h >> 57) as usize] += 1;
        }
        // A uniform hash fills about 7,490 of the 16,384 buckets with 10,000 keys, and gives
        // each tag about 78.
        let used = buckets.iter().filter(|&&n| n > 0).count();
        assert!(used > 7_000, "{used} buckets used");
        assert!(
            buckets.iter().all(|&n| n <= 8),
            "a bucket holds {:?}",
            buckets.iter().max()
        );
        assert!(tags.iter().all(|&n| n > 30 && n < 150), "tags {tags:?}");
    }

    proptest! {
        /// Equality and hashing agree with the strings', whichever way each side was built.
        #[test]
        fn equality_and_hashes_follow_the_strings(a in "[a-z0-9é]{0,30}", b in "[a-z0-9é]{0,30}") {
            let (ta, tb) = (Text::from(a.as_str()), Text::from(b.clone()));
            prop_assert_eq!(ta.as_str(), a.as_str());
            prop_assert_eq!(ta == tb, a == b);
            if a == b {
                prop_assert_eq!(hash_of(&ta), hash_of(&tb));
            }
            if a.len() <= 16 && a.is_ascii() {
                let mut w = [0xffu8; 16];
                w[..a.len()].copy_from_slice(a.as_bytes());
                let from_word = Text::from_ascii_word(u128::from_le_bytes(w), a.len()).unwrap();
                prop_assert_eq!(&from_word, &ta);
                prop_assert_eq!(hash_of(&from_word), hash_of(&ta));
            }
            let json = serde_json::to_string(&ta).unwrap();
            prop_assert_eq!(serde_json::from_str::<Text>(&json).unwrap(), ta);
        }
    }
}
