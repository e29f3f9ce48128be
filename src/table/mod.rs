//! Memory-mapped lookup tables: reference data (customers, instruments, limits) that patterns
//! read while they match, without a copy and without a lock.
//!
//! A table is built once from CSV or JSON lines ([`build`]), written as one file in a documented
//! binary format (`docs/table-format.md`: a header with magic, version, schema and checksum; a
//! control byte per bucket; fixed-width rows stored in their hash buckets; a string heap),
//! opened ([`Table::open`]) as a private copy, mapped, and read in place: a lookup hashes the
//! key, compares its tag with sixteen control bytes at once, and reads the one row whose tag
//! matches. The copy is a copy-on-write clone of the file where the file system makes them
//! (XFS, Btrfs), else a copy in memory ([`Backing`]); either way the file can be replaced,
//! rewritten in place (`cp new.kt table.kt`) or truncated while the table is open without
//! touching what the table reads. Mapping the file itself would not survive that: a read of a
//! page that a truncation removed raises `SIGBUS` and kills the process.
//! [`SharedTable`] and [`TableWatcher`] replace a table atomically when its file is replaced,
//! while readers keep using the version they hold until their next event.
//!
//! ```
//! use kairos::table::{build, BuildOptions, OpenOptions, Table};
//! let dir = tempfile::tempdir()?;
//! let input = dir.path().join("customers.csv");
//! std::fs::write(&input, "id,segment,limit\nu1,vip,5000.5\nu2,new,100\n")?;
//! let output = dir.path().join("customers.tbl");
//! build(&BuildOptions::new(&input, "id", &output))?;
//!
//! let table = Table::open(&output, &OpenOptions::default())?;
//! let segment = table.column("segment").unwrap();
//! let limit = table.column("limit").unwrap();
//! let row = table.get_str("u1").unwrap();
//! assert_eq!(row.str(segment), Some("vip"));
//! assert_eq!(row.float(limit), Some(5000.5));
//! assert!(table.get_str("u3").is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod builder;
pub mod format;
mod reader;
mod swap;

pub use builder::{build, parse_schema, BuildOptions, BuildStats, InputFormat};
pub use format::{Column, ColumnType, Schema};
pub use reader::{Backing, ColumnId, OpenOptions, Row, Rows, Table};
pub use swap::{SharedTable, SwapCallback, SwapEvent, TableReader, TableWatcher, WatchOptions};

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong building, opening or swapping a table.
///
/// Messages name the file (and, for inputs, the line and column) the way compilers do:
/// `customers.csv:17: duplicate key `u42` (first seen on line 3)`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Two input records have the same key.
    #[error("{}:{line}: duplicate key `{key}` (first seen on line {first_line})", .path.display())]
    DuplicateKey {
        path: PathBuf,
        line: u64,
        key: String,
        first_line: u64,
    },

    /// The key column named in the build options is not in the input.
    #[error("{}: no column `{key}` to use as the key (the input has: {columns})", .path.display())]
    MissingKeyColumn {
        path: PathBuf,
        key: String,
        columns: String,
    },

    /// A record has no value for the key column.
    #[error("{}:{line}: the key `{column}` is empty", .path.display())]
    NullKey {
        path: PathBuf,
        line: u64,
        column: String,
    },

    /// The key column's type cannot be hashed as a key.
    #[error("{}: the key column `{column}` is {ty}; a key must be int or string{hint}", .path.display())]
    KeyType {
        path: PathBuf,
        column: String,
        ty: ColumnType,
        hint: String,
    },

    /// A value does not parse as its column's type.
    #[error("{}:{line}: column `{column}`: `{value}` is not {}", .path.display(), article(.ty))]
    BadValue {
        path: PathBuf,
        line: u64,
        column: String,
        value: String,
        ty: ColumnType,
    },

    /// A CSV record has a different number of fields than the header.
    #[error("{}:{line}: {found} fields, but the header has {expected}", .path.display())]
    RaggedRow {
        path: PathBuf,
        line: u64,
        found: usize,
        expected: usize,
    },

    /// The input is malformed (bad CSV or JSON, a nested value, not UTF-8, ...).
    #[error("{}:{line}: {message}", .path.display())]
    Input {
        path: PathBuf,
        line: u64,
        message: String,
    },

    /// The input as a whole cannot be read as a table (unknown format, changed while read).
    #[error("{}: {message}", .path.display())]
    InputFile { path: PathBuf, message: String },

    /// A `--schema` string is malformed or does not fit the input.
    #[error("schema `{spec}`: {message}")]
    Schema { spec: String, message: String },

    /// The data does not fit the format's limits (rows, columns, heap size).
    #[error("{}: {message}", .path.display())]
    Limit { path: PathBuf, message: String },

    /// The file does not start with the table magic.
    #[error("{}: not a Kairos table (bad magic)", .path.display())]
    BadMagic { path: PathBuf },

    /// The file was written in a format version this build does not read.
    #[error("{}: unsupported table format version {found} (this build reads version {supported})", .path.display())]
    Version {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    /// The file is shorter than its header says.
    #[error("{}: truncated: {what} ends at byte {end} but the file has {len} bytes", .path.display())]
    Truncated {
        path: PathBuf,
        what: &'static str,
        end: u64,
        len: u64,
    },

    /// The file's bytes do not form a valid table.
    #[error("{}: corrupt: {message}", .path.display())]
    Corrupt { path: PathBuf, message: String },

    /// The checksum in the header does not match the file's bytes.
    #[error("{}: checksum mismatch: the file is corrupt", .path.display())]
    Checksum { path: PathBuf },

    /// A replacement table's schema differs from the table it would replace.
    #[error("{}: incompatible schema: {message}", .path.display())]
    Incompatible { path: PathBuf, message: String },

    /// The file changed while it was being copied (something was still writing it), so the
    /// copy cannot be trusted and nothing was loaded. A [`TableWatcher`] tries again at its next
    /// poll, without reporting it.
    #[error("{}: the file changed while it was being read (is it still being written?)", .path.display())]
    Changed { path: PathBuf },
}

fn article(ty: &ColumnType) -> &'static str {
    match ty {
        ColumnType::Int => "an int",
        ColumnType::Float => "a float",
        ColumnType::Str => "a string",
        ColumnType::Bool => "a bool (true or false)",
    }
}

impl TableError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> TableError {
        TableError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, message: impl Into<String>) -> TableError {
        TableError::Corrupt {
            path: path.into(),
            message: message.into(),
        }
    }
}
