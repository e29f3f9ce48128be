//! The on-disk layout of a lookup table: constants, the header, the schema section, the key hash
//! and the functions that read little-endian values out of a byte slice.
//!
//! The byte-by-byte description is `docs/table-format.md`; this module is its executable form,
//! shared by the builder (which writes it) and the reader (which validates it).

use std::fmt;
use xxhash_rust::xxh3::xxh3_64;

/// The first eight bytes of every table file.
pub const MAGIC: [u8; 8] = *b"KAIROST\0";

/// The format version this build writes and reads.
pub const VERSION: u32 = 2;

/// Size of the fixed header at the start of the file.
pub const HEADER_LEN: usize = 128;

/// Every section offset is a multiple of this (readers reject anything else).
pub const SECTION_ALIGN: u64 = 8;

/// The builder aligns sections to a cache line so that a row never straddles one needlessly;
/// readers only require [`SECTION_ALIGN`].
pub const BUILDER_ALIGN: u64 = 64;

/// Size of one schema entry (type tag, name length, name offset, reserved).
pub const SCHEMA_ENTRY_LEN: usize = 16;

/// Control bytes read at once by a probe: the control section holds this many zero bytes after
/// the last bucket's, so that a probe reads whole groups without a bounds check.
pub const GROUP_LEN: usize = 16;

/// A control byte of an empty bucket. A full bucket's has its high bit set (see [`ctrl_tag`]).
pub const EMPTY: u8 = 0;

/// Size of one value slot in a row.
pub const SLOT_LEN: usize = 8;

/// The fewest home buckets a table has (an empty table still has one bucket, empty).
pub const MIN_HOMES: u64 = 1;

/// The builder numbers input records in a `u32`.
pub const MAX_ROWS: u64 = u32::MAX as u64 - 1;

/// String references are a `u32` offset and a `u32` length into the heap.
pub const MAX_HEAP: u64 = u32::MAX as u64;

/// A generous bound that keeps `row_width` and the schema in `u32` arithmetic.
pub const MAX_COLUMNS: u32 = 1 << 16;

/// The type of a column.
///
/// The tag values are part of the file format and never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ColumnType {
    /// A signed 64-bit integer.
    Int = 1,
    /// An IEEE 754 double.
    Float = 2,
    /// A UTF-8 string held in the string heap.
    Str = 3,
    /// `true` or `false`.
    Bool = 4,
}

impl ColumnType {
    /// The tag stored in the schema section.
    #[inline]
    pub const fn tag(self) -> u8 {
        self as u8
    }

    /// The type of a schema tag, `None` for an unknown tag.
    #[inline]
    pub const fn from_tag(tag: u8) -> Option<ColumnType> {
        match tag {
            1 => Some(ColumnType::Int),
            2 => Some(ColumnType::Float),
            3 => Some(ColumnType::Str),
            4 => Some(ColumnType::Bool),
            _ => None,
        }
    }

    /// The name used in schema strings and messages (`int`, `float`, `string`, `bool`).
    pub const fn name(self) -> &'static str {
        match self {
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::Str => "string",
            ColumnType::Bool => "bool",
        }
    }

    /// Whether a column of this type may be the key column.
    #[inline]
    pub const fn is_key_type(self) -> bool {
        matches!(self, ColumnType::Int | ColumnType::Str)
    }

    /// Parses a type name as written in a schema string; accepts the usual aliases.
    pub fn parse(s: &str) -> Option<ColumnType> {
        match s.to_ascii_lowercase().as_str() {
            "int" | "i64" | "integer" | "long" => Some(ColumnType::Int),
            "float" | "f64" | "double" | "number" => Some(ColumnType::Float),
            "string" | "str" | "text" => Some(ColumnType::Str),
            "bool" | "boolean" => Some(ColumnType::Bool),
            _ => None,
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One column of a table: its name and type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Column {
    /// The column's name, as in the input's header or JSON keys.
    pub name: String,
    /// The column's type.
    pub ty: ColumnType,
}

/// The columns of a table, in slot order, and which of them is the key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Schema {
    columns: Vec<Column>,
    key: usize,
}

impl Schema {
    /// A schema from its columns and the index of its key column.
    ///
    /// Returns `None` when `key` is out of range or its column is neither int nor string.
    pub fn new(columns: Vec<Column>, key: usize) -> Option<Schema> {
        let ty = columns.get(key)?.ty;
        ty.is_key_type().then_some(Schema { columns, key })
    }

    /// The columns, in slot order.
    #[inline]
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The number of columns.
    #[inline]
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether the schema has no columns (never true for a schema built by [`Schema::new`]).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The index of the key column.
    #[inline]
    pub fn key_index(&self) -> usize {
        self.key
    }

    /// The key column.
    #[inline]
    pub fn key(&self) -> &Column {
        &self.columns[self.key]
    }

    /// The index of the column called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

impl fmt::Display for Schema {
    /// Writes the schema in the form `--schema` accepts, the key column marked with `*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.columns.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let star = if i == self.key { "*" } else { "" };
            write!(f, "{}{}:{}", star, c.name, c.ty)?;
        }
        Ok(())
    }
}

/// The fixed 128-byte header, decoded (the magic is implied; see `docs/table-format.md` for
/// each field's offset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// Zero: no flags are defined in version 2.
    pub flags: u32,
    /// Number of rows.
    pub row_count: u64,
    /// Number of columns.
    pub column_count: u32,
    /// Index of the key column.
    pub key_column: u32,
    /// Bytes per row ([`row_width`] of the column count).
    pub row_width: u32,
    /// Home buckets: the range a key's hash is mapped onto ([`home`]). The table has at least
    /// as many buckets; the ones past the homes hold keys whose probes ran past the last home.
    pub home_count: u64,
    /// The schema section.
    pub schema: Section,
    /// The control bytes: one per bucket, then [`GROUP_LEN`] zero bytes.
    pub index: Section,
    /// The rows, one per bucket (an empty bucket's row is zero bytes).
    pub rows: Section,
    /// The string heap.
    pub heap: Section,
    /// Length of the whole file.
    pub file_len: u64,
    /// xxh3-64 of the file with this field read as zero ([`checksum`]).
    pub checksum: u64,
}

/// Where a section lies in the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Section {
    /// Byte offset from the start of the file (a multiple of [`SECTION_ALIGN`]).
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Section {
    /// One past the last byte, `None` on overflow.
    #[inline]
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.len)
    }
}

/// Byte offset of the checksum field in the header.
pub const CHECKSUM_AT: usize = 120;

impl Header {
    /// Encodes the header; `magic` is always [`MAGIC`].
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.row_count.to_le_bytes());
        b[24..28].copy_from_slice(&self.column_count.to_le_bytes());
        b[28..32].copy_from_slice(&self.key_column.to_le_bytes());
        b[32..36].copy_from_slice(&self.row_width.to_le_bytes());
        // 36..40 reserved, zero.
        b[40..48].copy_from_slice(&self.home_count.to_le_bytes());
        let sections = [self.schema, self.index, self.rows, self.heap];
        for (i, s) in sections.iter().enumerate() {
            let at = 48 + i * 16;
            b[at..at + 8].copy_from_slice(&s.offset.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&s.len.to_le_bytes());
        }
        b[112..120].copy_from_slice(&self.file_len.to_le_bytes());
        b[CHECKSUM_AT..CHECKSUM_AT + 8].copy_from_slice(&self.checksum.to_le_bytes());
        b
    }

    /// Decodes a header without validating it; `b` must hold at least [`HEADER_LEN`] bytes
    /// (shorter input decodes missing bytes as zero).
    pub fn decode(b: &[u8]) -> Header {
        let section = |at: usize| Section {
            offset: read_u64(b, at).unwrap_or(0),
            len: read_u64(b, at + 8).unwrap_or(0),
        };
        Header {
            version: read_u32(b, 8).unwrap_or(0),
            flags: read_u32(b, 12).unwrap_or(0),
            row_count: read_u64(b, 16).unwrap_or(0),
            column_count: read_u32(b, 24).unwrap_or(0),
            key_column: read_u32(b, 28).unwrap_or(0),
            row_width: read_u32(b, 32).unwrap_or(0),
            home_count: read_u64(b, 40).unwrap_or(0),
            schema: section(48),
            index: section(64),
            rows: section(80),
            heap: section(96),
            file_len: read_u64(b, 112).unwrap_or(0),
            checksum: read_u64(b, CHECKSUM_AT).unwrap_or(0),
        }
    }
}

/// The checksum of a whole file image: xxh3-64 of every byte, the checksum field read as zero.
pub fn checksum(file: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    if file.len() < CHECKSUM_AT + 8 {
        h.update(file);
        return h.digest();
    }
    h.update(&file[..CHECKSUM_AT]);
    h.update(&[0u8; 8]);
    // Large updates let xxh3 run its striped loop over the bulk of the file.
    h.update(&file[CHECKSUM_AT + 8..]);
    h.digest()
}

/// Bytes of the null bitmap at the start of each row: one bit per column, rounded up to 8 bytes
/// so that the slots stay aligned.
#[inline]
pub const fn bitmap_len(columns: u32) -> u32 {
    columns.div_ceil(64) * 8
}

/// Bytes of one row: the bitmap, then one 8-byte slot per column.
#[inline]
pub const fn row_width(columns: u32) -> u64 {
    bitmap_len(columns) as u64 + SLOT_LEN as u64 * columns as u64
}

/// The number of home buckets the builder gives a table of `rows` rows: enough to keep the load
/// at or below three quarters, and at least [`MIN_HOMES`].
pub fn home_count_for(rows: u64) -> u64 {
    rows.saturating_mul(4).div_ceil(3).max(MIN_HOMES)
}

/// The home bucket of a key's hash among `homes` buckets: the high 64 bits of `hash × homes`,
/// so any number of buckets works (no power of two needed) and the position comes from the
/// hash's high bits.
#[inline(always)]
pub const fn home(hash: u64, homes: u64) -> u64 {
    ((hash as u128 * homes as u128) >> 64) as u64
}

/// The control byte of a full bucket whose key has this hash: the high bit set, then the
/// hash's low 7 bits (independent of the high bits that chose the home bucket).
#[inline(always)]
pub const fn ctrl_tag(hash: u64) -> u8 {
    0x80 | (hash as u8 & 0x7f)
}

/// The hash of an int key: xxh3-64 of its 8 little-endian bytes.
#[inline]
pub fn hash_int(key: i64) -> u64 {
    xxh3_64(&key.to_le_bytes())
}

/// The hash of a string key: xxh3-64 of its UTF-8 bytes.
#[inline]
pub fn hash_str(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// Encodes a string slot: offset in the low word, length in the high word.
#[inline]
pub const fn str_slot(offset: u32, len: u32) -> u64 {
    offset as u64 | ((len as u64) << 32)
}

/// Reads a little-endian `u64` at `at`, `None` when out of bounds.
#[inline(always)]
pub fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    let end = at.checked_add(8)?;
    let s: [u8; 8] = b.get(at..end)?.try_into().ok()?;
    Some(u64::from_le_bytes(s))
}

/// Reads a little-endian `u32` at `at`, `None` when out of bounds.
#[inline(always)]
pub fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let s: [u8; 4] = b.get(at..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            version: VERSION,
            flags: 0,
            row_count: 3,
            column_count: 2,
            key_column: 1,
            row_width: row_width(2) as u32,
            home_count: 16,
            schema: Section {
                offset: 128,
                len: 40,
            },
            index: Section {
                offset: 192,
                len: 64,
            },
            rows: Section {
                offset: 256,
                len: 72,
            },
            heap: Section {
                offset: 328,
                len: 5,
            },
            file_len: 333,
            checksum: 0xdead_beef,
        };
        assert_eq!(Header::decode(&h.encode()), h);
    }

    #[test]
    fn home_counts_keep_the_load_at_most_three_quarters() {
        assert_eq!(home_count_for(0), 1);
        assert_eq!(home_count_for(2), 3);
        assert_eq!(home_count_for(12), 16);
        assert_eq!(home_count_for(13), 18);
        for rows in [1u64, 7, 100, 700, 701, 1_000_000, 10_000_000] {
            let b = home_count_for(rows);
            assert!(rows * 4 <= b * 3, "{rows} rows in {b} buckets");
        }
    }

    #[test]
    fn homes_cover_the_range() {
        assert_eq!(home(0, 10), 0);
        assert_eq!(home(u64::MAX, 10), 9);
        assert_eq!(home(1 << 63, 10), 5);
        assert_eq!(ctrl_tag(0), 0x80);
        assert_eq!(ctrl_tag(0xff), 0xff);
        assert_eq!(ctrl_tag(0x100), 0x80);
    }

    #[test]
    fn widths() {
        assert_eq!(row_width(1), 16);
        assert_eq!(row_width(64), 8 + 512);
        assert_eq!(row_width(65), 16 + 520);
    }
}
