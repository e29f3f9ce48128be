//! Opening a table file and reading it in place.
//!
//! A table never maps the file it was given. [`Table::open`] first takes a private copy that
//! nothing outside this process can reach: a copy-on-write clone of the file (`FICLONE`, on
//! file systems with shared extents: XFS, Btrfs, bcachefs, OCFS2) in an unlinked temporary file
//! beside it, or else a copy in anonymous memory ([`Backing`]). The mapping is of that copy.
//! A table file rewritten in place (`cp new.kt table.kt` truncates and rewrites the same inode)
//! or truncated while it is open therefore changes nothing the table reads: mapping the file
//! itself would expose the rewritten bytes to lookups, and make a read of a page past the new
//! end of the file raise `SIGBUS`, which kills the process. A copy taken while a writer is
//! still writing is caught by the checksum and by comparing the file's size and modification
//! time before and after the copy ([`TableError::Changed`]).
//!
//! Opening validates everything whose failure could make a later read go wrong: magic, version,
//! the header's arithmetic, every section against the file's length, alignment, the schema, the
//! UTF-8 of the string heap and (by default) the checksum. Rows and control bytes are not
//! scanned: the geometry checked at open keeps every read of them inside its section (the
//! invariants of `Layout`), and whatever a row or a control byte holds is checked where it is
//! used, so a lookup in a corrupt file returns a miss or a null, never a panic or a read
//! outside the mapping. [`Table::verify`] does the full scan when a caller wants proof that every row is
//! readable and every key findable.

use super::format::{
    self, bitmap_len, ctrl_tag, hash_int, hash_str, home, read_u32, read_u64, row_width, Column,
    ColumnType, Header, Schema, Section, EMPTY, GROUP_LEN, HEADER_LEN, MAGIC, MAX_COLUMNS,
    MAX_HEAP, MAX_ROWS, SCHEMA_ENTRY_LEN, SECTION_ALIGN, SLOT_LEN, VERSION,
};
use super::swap::FileId;
use super::TableError;
use crate::event::{Text, Value};
#[cfg(not(miri))]
use memmap2::Mmap;
use memmap2::{MmapMut, MmapOptions};
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// How [`Table::open`] maps and checks a file.
///
/// ```
/// use kairos::table::OpenOptions;
/// // Fault the whole file in at open, so that no lookup waits on a page fault.
/// let opts = OpenOptions { populate: true, ..OpenOptions::default() };
/// assert!(opts.verify_checksum);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Read a cloned table ([`Backing::Reflink`]) into the page cache and map every page at
    /// open (`MAP_POPULATE`), so that the first lookups do not take page faults. Costs a read
    /// of the file. A copy in memory ([`Backing::Memory`]) is read whole at open anyway.
    pub populate: bool,
    /// Ask the kernel to back the table with transparent huge pages (`madvise(MADV_HUGEPAGE)`
    /// on Linux; ignored elsewhere and where the kernel declines). Fewer TLB misses on large
    /// tables; kernels grant them to a copy in memory far more readily than to a mapped clone.
    pub huge_pages: bool,
    /// Check the xxh3-64 checksum of the whole file at open. This reads every byte of the copy
    /// once (about 0.1 s for 700 MB in memory, longer from disk) and catches a copy torn by a
    /// writer; without it, a corrupt file still cannot cause a panic or an out-of-bounds read,
    /// but may return wrong values.
    pub verify_checksum: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            populate: false,
            huge_pages: false,
            verify_checksum: true,
        }
    }
}

/// A column of a table, resolved by [`Table::column`]: its index and type.
///
/// Resolve names once (when patterns compile), then read rows by `ColumnId`. A `ColumnId` stays
/// valid for every table with the same schema, which is what [`SharedTable`] guarantees across
/// swaps; read against a table whose column has another type, it reads as null.
///
/// [`SharedTable`]: super::SharedTable
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ColumnId {
    index: u32,
    ty: ColumnType,
}

impl ColumnId {
    /// The column's position in the schema.
    #[inline]
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// The column's type.
    #[inline]
    pub fn ty(self) -> ColumnType {
        self.ty
    }
}

/// An open table: a read-only mapping of a validated table file.
///
/// `Table` is `Send + Sync`; share it behind an `Arc` (or a [`SharedTable`] when the file may be
/// replaced). Lookups borrow rows from the mapping, so strings are returned without a copy.
///
/// The table reads a private copy of its file ([`Backing`]), so the file may be replaced in any
/// way while the table is open: renamed over, rewritten in place with `cp`, or truncated. The
/// table keeps the version it copied; a [`SharedTable`] picks up the new one.
///
/// [`SharedTable`]: super::SharedTable
pub struct Table {
    map: Bytes,
    path: PathBuf,
    schema: Schema,
    types: Box<[ColumnType]>,
    l: Layout,
    file_id: Option<FileId>,
    backing: Backing,
}

/// Where the bytes of an open [`Table`] live: always a private copy of its file, so that later
/// writes to the file cannot reach them.
///
/// ```
/// # use kairos::table::{build, Backing, BuildOptions, OpenOptions, Table};
/// # let dir = tempfile::tempdir()?;
/// # let input = dir.path().join("t.csv");
/// # std::fs::write(&input, "id,v\n1,a\n")?;
/// # let path = dir.path().join("t.tbl");
/// # build(&BuildOptions::new(&input, "id", &path))?;
/// let table = Table::open(&path, &OpenOptions::default())?;
/// // A clone on XFS or Btrfs, a copy in memory on ext4 or tmpfs.
/// assert!(matches!(table.backing(), Backing::Reflink | Backing::Memory));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backing {
    /// A copy-on-write clone of the file (`ioctl(FICLONE)`) in an unlinked temporary file in
    /// the file's directory, mapped. Taking it costs a few system calls whatever the size; the
    /// clone shares the file's blocks on disk until the file is rewritten, after which it keeps
    /// the old blocks until the table is dropped. Pages are read from disk when first touched
    /// (or all at open with [`OpenOptions::populate`]), like a mapping of the file itself, but
    /// through the clone's own page cache.
    Reflink,
    /// A copy in anonymous memory, read from the file at open: the file system cannot clone
    /// (ext4, tmpfs, overlay), the directory is not writable, or the platform has no clones.
    /// Costs a read of the whole file at open and the table's size in resident memory.
    Memory,
}

impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backing::Reflink => "a copy-on-write clone of the file",
            Backing::Memory => "a copy in memory",
        })
    }
}

/// The bytes of a table: a read-only mapping. Under Miri, which can neither map files nor
/// change a mapping's protection, an anonymous writable mapping that is never written after
/// it is filled, so that the reader's unchecked reads can be checked there.
#[cfg(not(miri))]
type Bytes = Mmap;
#[cfg(miri)]
type Bytes = MmapMut;

/// Copies `bytes` into a fresh anonymous mapping.
fn anon_copy(bytes: &[u8], path: &Path) -> Result<Bytes, TableError> {
    // An empty mapping is an error on most systems; one byte stands in (validation rejects it).
    let mut mm = MmapMut::map_anon(bytes.len().max(1)).map_err(|e| TableError::io(path, e))?;
    mm[..bytes.len()].copy_from_slice(bytes);
    #[cfg(not(miri))]
    let mm = mm.make_read_only().map_err(|e| TableError::io(path, e))?;
    Ok(mm)
}

/// A private copy of the `len` bytes of `file` (at `path`), mapped: a clone where the file system
/// makes one, else a copy in anonymous memory. See [`Backing`].
fn private_copy(
    file: &File,
    len: u64,
    path: &Path,
    opts: &OpenOptions,
) -> Result<(Bytes, Backing), TableError> {
    #[cfg(all(target_os = "linux", not(miri)))]
    if let Some(clone) = reflink(file, path) {
        let mut mo = MmapOptions::new();
        if opts.populate {
            mo.populate();
        }
        // SAFETY: the clone is an unlinked file created with O_EXCL, so no path leads to it and
        // it cannot be linked into the file system: only this process holds it, and nothing
        // writes it. Its bytes therefore stay what `validate` checks for as long as the
        // mapping lives, which is what reading the mapping as a `&[u8]` requires. (Writes to
        // the original file allocate new blocks and leave the clone's alone.)
        let map = unsafe { mo.map(&clone) }.map_err(|e| TableError::io(path, e))?;
        if opts.huge_pages {
            // Advice only: kernels without huge pages for file mappings decline, which is fine.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        return Ok((map, Backing::Reflink));
    }
    let len = usize::try_from(len)
        .map_err(|_| TableError::corrupt(path, format!("{len} bytes do not fit in memory")))?;
    Ok((copy_to_memory(file, len, path, opts)?, Backing::Memory))
}

/// Reads the first `len` (at least 1) bytes of `file` into a fresh anonymous mapping, made
/// read-only once filled. A file shorter than `len` was truncated during the read.
fn copy_to_memory(
    mut file: &File,
    len: usize,
    path: &Path,
    opts: &OpenOptions,
) -> Result<Bytes, TableError> {
    let io = |e| TableError::io(path, e);
    let mut mo = MmapOptions::new();
    mo.len(len);
    // Faulting every page in with one call costs less than a fault per page during the read;
    // but huge pages must be asked for before any page is touched, so then the read faults.
    #[cfg(not(miri))]
    if !opts.huge_pages {
        mo.populate();
    }
    let mut mm: MmapMut = mo.map_anon().map_err(io)?;
    #[cfg(all(target_os = "linux", not(miri)))]
    if opts.huge_pages {
        // Advice only, as for file mappings; anonymous memory usually gets them.
        let _ = mm.advise(memmap2::Advice::HugePage);
    }
    #[cfg(miri)]
    let _ = opts;
    match file.read_exact(&mut mm[..]) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(TableError::Changed {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io(e)),
    }
    #[cfg(not(miri))]
    let mm = mm.make_read_only().map_err(io)?;
    Ok(mm)
}

/// A copy-on-write clone of `file` in an unlinked temporary file in the directory of `path`
/// (of its target, for a symbolic link), or `None` where the directory is not writable, the
/// file system has no unlinked temporary files or no clones (ext4, tmpfs), or the clone fails
/// for any other reason: the caller then copies the file into memory.
#[cfg(all(target_os = "linux", not(miri)))]
fn reflink(file: &File, path: &Path) -> Option<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let real = std::fs::canonicalize(path).ok()?;
    let dir = real.parent()?;
    // O_EXCL: the file can never be linked into the file system, so only this process reaches
    // it.
    let clone = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_EXCL)
        .open(dir)
        .ok()?;
    // SAFETY: FICLONE reads its argument as a file descriptor and writes no memory of this
    // process; both descriptors stay open for the call.
    let r = unsafe { libc::ioctl(clone.as_raw_fd(), libc::FICLONE, file.as_raw_fd()) };
    (r == 0).then_some(clone)
}

/// The validated geometry of a file, as `usize` offsets into the mapping.
///
/// `validate` establishes, and nothing afterwards changes (the mapping is read-only and its
/// length fixed), these invariants, on which the unchecked reads of lookups rely:
///
/// - I1: the control bytes, `buckets + GROUP_LEN` bytes from `ctrl_off`, lie within the
///   mapping, and `1 <= homes <= buckets`;
/// - I2: the rows, `buckets × row_width` bytes from `rows_off`, lie within the mapping;
/// - I3: `row_width = bitmap_len + 8 × column_count`, `types.len() == column_count`, and
///   `key_slot = bitmap_len + 8 × key_index` with `key_index < column_count`;
/// - I4 (of `Row`): a `Row`'s `off` is `rows_off + b × row_width` for some bucket `b < buckets`;
/// - I5: the heap, `heap_len` bytes from `heap_off`, lies within the mapping, and at least one
///   byte of the mapping follows it.
#[derive(Clone, Copy, Debug)]
struct Layout {
    ctrl_off: usize,
    /// Buckets in the file: the homes and the overflow after them.
    buckets: usize,
    /// Home buckets, the range of `format::home`.
    homes: usize,
    rows_off: usize,
    row_width: usize,
    row_count: usize,
    heap_off: usize,
    heap_len: usize,
    bitmap_len: usize,
    key_type: ColumnType,
    key_index: u32,
    /// The key's slot, from the start of the row.
    key_slot: usize,
}

impl Table {
    /// Copies the table file at `path` privately, maps the copy and validates it.
    ///
    /// The copy ([`Backing`]) is a clone that costs a few system calls where the file system
    /// can clone files, else a read of the whole file into memory, about as long as the
    /// checksum pass. The file may be replaced or rewritten afterwards without effect on the
    /// table. A file that changes while it is copied gives [`TableError::Changed`].
    ///
    /// ```
    /// # use kairos::table::{build, BuildOptions, OpenOptions, Table, ColumnType};
    /// # let dir = tempfile::tempdir()?;
    /// # let input = dir.path().join("limits.csv");
    /// # std::fs::write(&input, "account,limit\n7,250\n9,1000\n")?;
    /// # let path = dir.path().join("limits.tbl");
    /// # build(&BuildOptions::new(&input, "account", &path))?;
    /// let table = Table::open(&path, &OpenOptions::default())?;
    /// assert_eq!(table.key_type(), ColumnType::Int);
    /// let limit = table.column("limit").unwrap();
    /// assert_eq!(table.get_int(9).and_then(|r| r.int(limit)), Some(1000));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Table, TableError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| TableError::io(path, e))?;
        let before = file.metadata().map_err(|e| TableError::io(path, e))?;
        if !before.is_file() {
            return Err(TableError::corrupt(path, "not a regular file"));
        }
        if before.len() == 0 {
            // Nothing to copy: validation reports the empty file as truncated.
            validate(&[], path, false)?;
            return Err(TableError::corrupt(path, "the file is empty"));
        }
        let (map, backing) = private_copy(&file, before.len(), path, opts)?;
        // A writer that was rewriting the file during the copy changed its size or its
        // modification time (a copy torn in a way these miss fails the checksum below).
        let after = file.metadata().map_err(|e| TableError::io(path, e))?;
        if FileId::of(&after) != FileId::of(&before) || map.len() as u64 != before.len() {
            return Err(TableError::Changed {
                path: path.to_path_buf(),
            });
        }
        let (schema, l) = validate(&map, path, opts.verify_checksum)?;
        Ok(Table {
            types: schema.columns().iter().map(|c| c.ty).collect(),
            map,
            path: path.to_path_buf(),
            schema,
            l,
            file_id: Some(FileId::of(&before)),
            backing,
        })
    }

    /// Validates `bytes` as a table file and copies them into an anonymous mapping: the same
    /// checks as [`Table::open`], without a file. Errors name the file `<memory>`.
    ///
    /// ```
    /// use kairos::table::{OpenOptions, Table, TableError};
    /// let err = Table::from_bytes(b"not a table", &OpenOptions::default()).err().unwrap();
    /// assert!(matches!(err, TableError::BadMagic { .. }));
    /// assert_eq!(err.to_string(), "<memory>: not a Kairos table (bad magic)");
    /// ```
    pub fn from_bytes(bytes: &[u8], opts: &OpenOptions) -> Result<Table, TableError> {
        let path = Path::new("<memory>");
        let (schema, l) = validate(bytes, path, opts.verify_checksum)?;
        // validate() accepted it, so it holds at least a header.
        let map = anon_copy(bytes, path)?;
        Ok(Table {
            types: schema.columns().iter().map(|c| c.ty).collect(),
            map,
            path: path.to_path_buf(),
            schema,
            l,
            file_id: None,
            backing: Backing::Memory,
        })
    }

    /// The path the table was opened from (`<memory>` for [`Table::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The columns and the key column.
    #[inline]
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Resolves a column by name. Do it once, then read rows by the returned id.
    pub fn column(&self, name: &str) -> Option<ColumnId> {
        self.schema.index_of(name).and_then(|i| self.column_at(i))
    }

    /// The column at position `index` of the schema.
    pub fn column_at(&self, index: usize) -> Option<ColumnId> {
        let ty = *self.types.get(index)?;
        Some(ColumnId {
            index: u32::try_from(index).ok()?,
            ty,
        })
    }

    /// The key column.
    pub fn key_column(&self) -> ColumnId {
        ColumnId {
            index: self.l.key_index,
            ty: self.l.key_type,
        }
    }

    /// The key column's type: [`ColumnType::Int`] or [`ColumnType::Str`].
    #[inline]
    pub fn key_type(&self) -> ColumnType {
        self.l.key_type
    }

    /// The number of rows.
    #[inline]
    pub fn len(&self) -> usize {
        self.l.row_count
    }

    /// Whether the table has no rows.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.l.row_count == 0
    }

    /// The size of the file in bytes.
    pub fn file_len(&self) -> usize {
        self.map.len()
    }

    /// Where the table's bytes live: a clone of its file or a copy in memory.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    pub(crate) fn file_id(&self) -> Option<FileId> {
        self.file_id
    }

    /// The row whose key is `key`; `None` if there is none or the key column is not int.
    #[inline]
    pub fn get_int(&self, key: i64) -> Option<Row<'_>> {
        if self.l.key_type != ColumnType::Int {
            return None;
        }
        let data: &[u8] = &self.map;
        let key_slot = self.l.key_slot;
        let off = self.probe(hash_int(key), |row| {
            // SAFETY: `row` is the offset of a row (probe's contract) and the key slot lies
            // within every row (invariant I3).
            unsafe { read_u64_unchecked(data, row + key_slot) == key as u64 }
        })?;
        Some(Row { table: self, off })
    }

    /// The row whose key is `key`; `None` if there is none or the key column is not string.
    #[inline]
    pub fn get_str(&self, key: &str) -> Option<Row<'_>> {
        if self.l.key_type != ColumnType::Str {
            return None;
        }
        let data: &[u8] = &self.map;
        let heap = self.heap();
        let key_slot = self.l.key_slot;
        let key = key.as_bytes();
        let off = self.probe(hash_str(key), |row| {
            // SAFETY: as in `get_int`.
            let slot = unsafe { read_u64_unchecked(data, row + key_slot) };
            str_range(slot).and_then(|r| heap.get(r)) == Some(key)
        })?;
        Some(Row { table: self, off })
    }

    /// The row whose key is `key`, for a key taken from an event: an `Int` in an int table, a
    /// `Str` in a string table, or a `Float` holding an exact integer in an int table. Any other
    /// combination is a miss.
    ///
    /// ```
    /// # use kairos::table::{build, BuildOptions, OpenOptions, Table};
    /// # use kairos::event::Value;
    /// # let dir = tempfile::tempdir()?;
    /// # let input = dir.path().join("t.csv");
    /// # std::fs::write(&input, "id,name\n3,three\n")?;
    /// # let path = dir.path().join("t.tbl");
    /// # build(&BuildOptions::new(&input, "id", &path))?;
    /// let table = Table::open(&path, &OpenOptions::default())?;
    /// assert!(table.get(&Value::Int(3)).is_some());
    /// assert!(table.get(&Value::Float(3.0)).is_some());
    /// assert!(table.get(&Value::Float(3.5)).is_none());
    /// assert!(table.get(&Value::from("3")).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn get(&self, key: &Value) -> Option<Row<'_>> {
        match key {
            Value::Int(i) => self.get_int(*i),
            Value::Str(s) => self.get_str(s),
            Value::Float(f) => float_to_int(*f).and_then(|i| self.get_int(i)),
            _ => None,
        }
    }

    /// The row in bucket `bucket`, if that bucket is full.
    #[inline]
    fn bucket_row(&self, bucket: usize) -> Option<Row<'_>> {
        let l = &self.l;
        if bucket >= l.buckets || self.map[l.ctrl_off + bucket] & 0x80 == 0 {
            return None;
        }
        Some(Row {
            table: self,
            // No overflow: the row section holds a row per bucket and lies within the mapping.
            off: l.rows_off + bucket * l.row_width,
        })
    }

    /// Every row, in file order (the order of the buckets, which follows the keys' hashes, not
    /// the input's order).
    pub fn rows(&self) -> Rows<'_> {
        Rows {
            table: self,
            next: 0,
        }
    }

    /// Walks the probe sequence of `hash` and returns the offset of the first row that `eq`
    /// (given the offset of a row in the mapping) accepts. Only offsets of rows, `rows_off + b ×
    /// row_width` with `b < buckets`, are passed to `eq` and returned.
    ///
    /// The probe starts at the key's home bucket and reads the control bytes sixteen at a time:
    /// a row is read only where its control byte carries the key's 7-bit tag, and the probe
    /// ends at the first empty bucket. The control bytes take one byte per bucket and stay in
    /// the processor's caches far longer than the rows, so a hit costs one read of the row
    /// from memory and a miss usually none. Deliberately small: lookups in a loop are limited
    /// by how many of them the processor keeps in flight while it waits on memory, which is a
    /// matter of instructions per lookup, so the control bytes and the rows are read without
    /// bounds checks under the layout's invariants. The walk ends at the last bucket, so
    /// control bytes without an empty one (possible only in a corrupt file) end in a miss
    /// rather than a loop.
    #[inline(always)]
    fn probe(&self, hash: u64, eq: impl Fn(usize) -> bool) -> Option<usize> {
        let l = &self.l;
        let tag = ctrl_tag(hash);
        // home() < homes <= buckets (invariant I1).
        let mut pos = home(hash, l.homes as u64) as usize;
        while pos < l.buckets {
            // SAFETY: pos < buckets, and the control section holds buckets + GROUP_LEN bytes
            // within the mapping (invariant I1).
            let (mut found, empty) =
                unsafe { group_masks(self.map.as_ptr().add(l.ctrl_off + pos), tag) };
            // Only the buckets before the first empty one belong to this probe.
            found &= empty.wrapping_sub(1) & !empty;
            while found != 0 {
                let b = pos + found.trailing_zeros() as usize;
                // Past the last bucket only in a corrupt file (the trailing group is zero).
                if b < l.buckets {
                    let off = l.rows_off + b * l.row_width;
                    if eq(off) {
                        return Some(off);
                    }
                }
                found &= found - 1;
            }
            if empty != 0 {
                return None;
            }
            pos += GROUP_LEN;
        }
        None
    }

    /// The string heap.
    #[inline(always)]
    fn heap(&self) -> &[u8] {
        // SAFETY: the heap lies within the mapping (invariant I5).
        unsafe {
            self.map
                .get_unchecked(self.l.heap_off..self.l.heap_off + self.l.heap_len)
        }
    }

    /// The string a slot refers to; `None` if it lies outside the heap or does not start and
    /// end on character boundaries (possible only in a corrupt file).
    ///
    /// Written without short-circuits: the checks load the string's first byte and the byte
    /// after it unconditionally and combine the tests into one branch. A lookup's reads of a
    /// row wait on memory, and the fewer the instructions and branches between them, the more
    /// lookups the processor keeps in flight (the short-circuiting version of these checks cost
    /// 40 ns per lookup in a table of ten million rows).
    #[inline(always)]
    fn string(&self, slot: u64) -> Option<&str> {
        let off = slot as u32 as usize;
        let end = off + (slot >> 32) as usize;
        if end > self.l.heap_len {
            return None;
        }
        let base = self.l.heap_off;
        // SAFETY: off <= end <= heap_len, and the mapping holds at least one byte after the
        // heap (invariant I5), so both bytes lie within it. The byte at `off` is the string's
        // first, or, for an empty string, something that is ignored; the byte at `end` is the
        // one after the string, ignored at the heap's end.
        let (first, next) = unsafe {
            (
                *self.map.get_unchecked(base + off),
                *self.map.get_unchecked(base + end),
            )
        };
        let starts = (off == end) | is_char_start(first);
        let ends = (end == self.l.heap_len) | is_char_start(next);
        if !(starts & ends) {
            return None;
        }
        // SAFETY: `validate` checked that the whole heap is UTF-8, and the mapping is read-only
        // and holds a private copy of the file that nothing writes (see `Table::open`), so the
        // heap is still what was checked. A sub-slice of valid UTF-8 that
        // starts on a character boundary (or is empty) and ends on one (the heap's end, or
        // before a byte that starts a character) is valid UTF-8. This replaces a call to the
        // UTF-8 validator on every string read (7 ns in the lookup benchmark).
        Some(unsafe {
            std::str::from_utf8_unchecked(self.map.get_unchecked(base + off..base + end))
        })
    }

    /// Checks every row and every control byte: keys present, strings in bounds and valid
    /// UTF-8, bools 0 or 1, every row found by a lookup of its own key (which also proves the
    /// keys unique and each row reachable from its home bucket), and as many full buckets as
    /// rows. A linear pass over the file plus one lookup
    /// per row; [`Table::open`] does not do it, lookups being safe without it.
    pub fn verify(&self) -> Result<(), TableError> {
        let corrupt = |m: String| TableError::corrupt(&self.path, m);
        let data: &[u8] = &self.map;
        let key = self.key_column();
        let mut rows = 0;
        for row in self.rows() {
            rows += 1;
            let r = row.index();
            if data.get(row.off..row.off + self.l.row_width).is_none() {
                return Err(corrupt(format!("bucket {r} lies outside the file")));
            }
            for (c, &ty) in self.types.iter().enumerate() {
                if row.null_bit(c) {
                    if c == key.index() {
                        return Err(corrupt(format!("bucket {r} has a null key")));
                    }
                    continue;
                }
                let slot = read_u64(data, row.off + self.l.bitmap_len + c * SLOT_LEN)
                    .ok_or_else(|| corrupt(format!("bucket {r} is short")))?;
                match ty {
                    ColumnType::Str if self.string(slot).is_none() => {
                        return Err(corrupt(format!(
                            "bucket {r}, column {c}: string outside the heap or not on character \
                             boundaries"
                        )));
                    }
                    ColumnType::Bool if slot > 1 => {
                        return Err(corrupt(format!("bucket {r}, column {c}: bool slot {slot}")));
                    }
                    _ => {}
                }
            }
            let found = match self.l.key_type {
                ColumnType::Int => row.int(key).and_then(|k| self.get_int(k)),
                _ => row.str(key).and_then(|k| self.get_str(k)),
            };
            if found.map(|f| f.off) != Some(row.off) {
                return Err(corrupt(format!(
                    "the row in bucket {r} is not found by its key (out of its probe sequence, \
                     under the wrong tag, or a duplicate key)"
                )));
            }
        }
        let ctrl = data
            .get(self.l.ctrl_off..self.l.ctrl_off + self.l.buckets + GROUP_LEN)
            .unwrap_or_default();
        if let Some(b) = ctrl.iter().position(|&c| c != EMPTY && c & 0x80 == 0) {
            return Err(corrupt(format!(
                "bucket {b} has the control byte {:#04x}, neither empty nor full",
                ctrl[b]
            )));
        }
        if ctrl[self.l.buckets..].iter().any(|&c| c != EMPTY) {
            return Err(corrupt(
                "the control bytes after the last bucket are not zero".to_string(),
            ));
        }
        if rows != self.l.row_count {
            return Err(corrupt(format!(
                "{rows} buckets are full for {} rows",
                self.l.row_count
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("path", &self.path)
            .field("schema", &format_args!("{}", self.schema))
            .field("rows", &self.l.row_count)
            .field("bytes", &self.map.len())
            .finish()
    }
}

/// An integer exactly equal to `f`, if there is one in `i64`'s range.
#[inline]
fn float_to_int(f: f64) -> Option<i64> {
    // 2^63 is exactly representable; every float below it and at least -2^63 converts exactly
    // when it has no fraction.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
}

/// Reads the little-endian `u64` at byte `at` of `data` without a bounds check.
///
/// # Safety
///
/// `at + 8 <= data.len()`.
#[inline(always)]
unsafe fn read_u64_unchecked(data: &[u8], at: usize) -> u64 {
    debug_assert!(at.checked_add(8).is_some_and(|end| end <= data.len()));
    // SAFETY: in bounds per the contract; `read_unaligned` has no alignment requirement.
    u64::from_le(unsafe { data.as_ptr().add(at).cast::<u64>().read_unaligned() })
}

/// Two masks over the [`GROUP_LEN`] control bytes at `p`: bit `i` of the first is set where
/// byte `i` equals `tag`, bit `i` of the second where byte `i` is empty.
///
/// # Safety
///
/// `p` points to at least `GROUP_LEN` readable bytes.
#[inline(always)]
unsafe fn group_masks(p: *const u8, tag: u8) -> (u32, u32) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8, _mm_setzero_si128,
        };
        // SAFETY: SSE2 is part of x86_64; the load is unaligned and within the caller's bytes.
        unsafe {
            let g = _mm_loadu_si128(p.cast());
            let found = _mm_movemask_epi8(_mm_cmpeq_epi8(g, _mm_set1_epi8(tag as i8))) as u32;
            let empty = _mm_movemask_epi8(_mm_cmpeq_epi8(g, _mm_setzero_si128())) as u32;
            (found, empty)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: as the caller's contract.
        unsafe { group_masks_scalar(p, tag) }
    }
}

/// [`group_masks`] one byte at a time: the version for targets without SSE2, and the reference
/// the SSE2 version is tested against.
///
/// # Safety
///
/// As for [`group_masks`].
#[cfg(any(test, not(target_arch = "x86_64")))]
#[inline(always)]
unsafe fn group_masks_scalar(p: *const u8, tag: u8) -> (u32, u32) {
    let (mut found, mut empty) = (0u32, 0u32);
    for i in 0..GROUP_LEN {
        // SAFETY: i < GROUP_LEN, within the caller's bytes.
        let c = unsafe { *p.add(i) };
        found |= u32::from(c == tag) << i;
        empty |= u32::from(c == EMPTY) << i;
    }
    (found, empty)
}

/// Whether a byte of UTF-8 text starts a character (is not a continuation byte).
#[inline(always)]
fn is_char_start(b: u8) -> bool {
    (b as i8) >= -0x40
}

/// The heap range a string slot refers to (not yet checked against the heap).
#[inline(always)]
fn str_range(slot: u64) -> Option<std::ops::Range<usize>> {
    let off = slot as u32 as usize;
    let len = (slot >> 32) as usize;
    Some(off..off.checked_add(len)?)
}

/// One row of a table, borrowed from its mapping.
///
/// Accessors take a [`ColumnId`] and return `None` for a null, for a column of another type, and
/// for a value a corrupt file makes unreadable (a string outside the heap or not on character
/// boundaries, a bool slot other than 0 or 1). A `Row` is two words: the table and the row's
/// offset in the mapping.
#[derive(Clone, Copy)]
pub struct Row<'a> {
    table: &'a Table,
    off: usize,
}

impl<'a> Row<'a> {
    /// The number of the row's bucket: its position in the file.
    #[inline]
    pub fn index(&self) -> usize {
        let l = &self.table.l;
        (self.off - l.rows_off) / l.row_width
    }

    /// Whether column `i` (which must be below the column count) is null.
    #[inline(always)]
    fn null_bit(&self, i: usize) -> bool {
        let t = self.table;
        if i >= t.types.len() {
            return true;
        }
        // SAFETY: `self.off` is the offset of a row (invariant I4) and i < column_count
        // (checked above, invariant I3), so byte i / 8 of the row's bitmap lies within the row.
        let byte = unsafe { *t.map.as_ptr().add(self.off + i / 8) };
        (byte >> (i % 8)) & 1 != 0
    }

    /// The raw slot of a non-null column of type `ty`.
    #[inline(always)]
    fn slot(&self, col: ColumnId, ty: ColumnType) -> Option<u64> {
        let t = self.table;
        let i = col.index as usize;
        // The table's own type decides how a slot reads (the id's type only says which
        // accessor `value` calls); this check also proves i < column_count.
        if t.types.get(i) != Some(&ty) || self.null_bit(i) {
            return None;
        }
        // SAFETY: `self.off` is the offset of a row (invariant I4) and i < column_count (the
        // `types` check above, invariant I3), so the slot lies within the row.
        Some(unsafe { read_u64_unchecked(&t.map, self.off + t.l.bitmap_len + i * SLOT_LEN) })
    }

    /// Whether the column is null in this row (or not a column of this table).
    #[inline]
    pub fn is_null(&self, col: ColumnId) -> bool {
        self.null_bit(col.index as usize)
    }

    /// The value of an int column.
    #[inline]
    pub fn int(&self, col: ColumnId) -> Option<i64> {
        self.slot(col, ColumnType::Int).map(|v| v as i64)
    }

    /// The value of a float column.
    #[inline]
    pub fn float(&self, col: ColumnId) -> Option<f64> {
        self.slot(col, ColumnType::Float).map(f64::from_bits)
    }

    /// The value of a bool column.
    #[inline]
    pub fn bool(&self, col: ColumnId) -> Option<bool> {
        match self.slot(col, ColumnType::Bool)? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    /// The value of a string column, borrowed from the mapping.
    #[inline]
    pub fn str(&self, col: ColumnId) -> Option<&'a str> {
        self.table.string(self.slot(col, ColumnType::Str)?)
    }

    /// The value of any column as an event value (`Null` where the accessor returns `None`).
    pub fn value(&self, col: ColumnId) -> Value {
        let v = match col.ty {
            ColumnType::Int => self.int(col).map(Value::Int),
            ColumnType::Float => self.float(col).map(Value::Float),
            ColumnType::Bool => self.bool(col).map(Value::Bool),
            ColumnType::Str => self.str(col).map(|s| Value::Str(Text::from(s))),
        };
        v.unwrap_or(Value::Null)
    }
}

impl fmt::Debug for Row<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut l = f.debug_list();
        for i in 0..self.table.types.len() {
            if let Some(c) = self.table.column_at(i) {
                l.entry(&self.value(c));
            }
        }
        l.finish()
    }
}

/// The rows of a table in file order; see [`Table::rows`].
#[derive(Clone)]
pub struct Rows<'a> {
    table: &'a Table,
    next: usize,
}

impl<'a> Iterator for Rows<'a> {
    type Item = Row<'a>;

    #[inline]
    fn next(&mut self) -> Option<Row<'a>> {
        while self.next < self.table.l.buckets {
            let b = self.next;
            self.next += 1;
            if let Some(r) = self.table.bucket_row(b) {
                return Some(r);
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.table.l.buckets.saturating_sub(self.next)))
    }
}

/// Checks the header, the sections, the checksum and the schema of a file image.
fn validate(
    bytes: &[u8],
    path: &Path,
    verify_checksum: bool,
) -> Result<(Schema, Layout), TableError> {
    let len = bytes.len() as u64;
    let corrupt = |m: String| TableError::corrupt(path, m);
    let truncated = |what: &'static str, end: u64| TableError::Truncated {
        path: path.to_path_buf(),
        what,
        end,
        len,
    };
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(TableError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    if bytes.len() < HEADER_LEN {
        return Err(truncated("the header", HEADER_LEN as u64));
    }
    let h = Header::decode(bytes);
    if h.version != VERSION {
        return Err(TableError::Version {
            path: path.to_path_buf(),
            found: h.version,
            supported: VERSION,
        });
    }

    // Sections first, in file order, so that a truncated file is reported as truncated even
    // when its checksum would also fail.
    let mut sections = [
        ("the schema section", h.schema),
        ("the control section", h.index),
        ("the row section", h.rows),
        ("the string heap", h.heap),
    ];
    sections.sort_by_key(|(_, s)| s.offset);
    let mut prev_end = HEADER_LEN as u64;
    for (what, s) in sections {
        let end = s
            .end()
            .ok_or_else(|| corrupt(format!("{what} has an impossible length {}", s.len)))?;
        if s.offset % SECTION_ALIGN != 0 {
            return Err(corrupt(format!(
                "{what} starts at byte {}, not a multiple of {SECTION_ALIGN}",
                s.offset
            )));
        }
        if s.offset < prev_end {
            return Err(corrupt(format!(
                "{what} starts at byte {} inside the header or the previous section",
                s.offset
            )));
        }
        if end > len {
            return Err(truncated(what, end));
        }
        prev_end = end;
    }
    if h.file_len > len {
        return Err(truncated("the table", h.file_len));
    }
    if h.file_len < len {
        return Err(corrupt(format!(
            "{} unexpected bytes after the end of the table at byte {}",
            len - h.file_len,
            h.file_len
        )));
    }
    if verify_checksum && format::checksum(bytes) != h.checksum {
        return Err(TableError::Checksum {
            path: path.to_path_buf(),
        });
    }
    if h.flags != 0 {
        return Err(corrupt(format!("unknown flags {:#x}", h.flags)));
    }

    // The header's arithmetic.
    if h.column_count == 0 || h.column_count > MAX_COLUMNS {
        return Err(corrupt(format!("{} columns", h.column_count)));
    }
    if u64::from(h.row_width) != row_width(h.column_count) {
        return Err(corrupt(format!(
            "row width {} for {} columns (expected {})",
            h.row_width,
            h.column_count,
            row_width(h.column_count)
        )));
    }
    if h.row_count > MAX_ROWS {
        return Err(corrupt(format!("{} rows", h.row_count)));
    }
    let buckets = h.index.len.checked_sub(GROUP_LEN as u64).ok_or_else(|| {
        corrupt(format!(
            "the control section has {} bytes, fewer than the {GROUP_LEN} that follow the last \
             bucket",
            h.index.len
        ))
    })?;
    if Some(h.rows.len) != buckets.checked_mul(u64::from(h.row_width)) {
        return Err(corrupt(format!(
            "the row section has {} bytes for {buckets} buckets of {} bytes",
            h.rows.len, h.row_width
        )));
    }
    if h.home_count == 0 || h.home_count > buckets || h.row_count > buckets {
        return Err(corrupt(format!(
            "{} home buckets and {} rows for {buckets} buckets",
            h.home_count, h.row_count
        )));
    }
    if h.heap.len > MAX_HEAP {
        return Err(corrupt(format!("a string heap of {} bytes", h.heap.len)));
    }
    // The sections' ends were checked against the file above, so this cannot overflow.
    if h.heap.offset + h.heap.len >= len {
        return Err(corrupt(
            "the string heap ends the file (it must be followed by at least one byte of padding)"
                .to_string(),
        ));
    }
    let schema = read_schema(bytes, &h, path)?;
    let heap = bytes
        .get(h.heap.offset as usize..(h.heap.offset + h.heap.len) as usize)
        .unwrap_or_default();
    if let Err(e) = std::str::from_utf8(heap) {
        return Err(corrupt(format!(
            "the string heap is not valid UTF-8 (at heap byte {})",
            e.valid_up_to()
        )));
    }

    let us =
        |v: u64| usize::try_from(v).map_err(|_| corrupt(format!("{v} does not fit in memory")));
    let key_index = h.key_column;
    let key = key_index as usize;
    let bitmap = bitmap_len(h.column_count) as usize;
    let l = Layout {
        ctrl_off: us(h.index.offset)?,
        buckets: us(buckets)?,
        homes: us(h.home_count)?,
        rows_off: us(h.rows.offset)?,
        row_width: h.row_width as usize,
        row_count: us(h.row_count)?,
        heap_off: us(h.heap.offset)?,
        heap_len: us(h.heap.len)?,
        bitmap_len: bitmap,
        key_type: schema.key().ty,
        key_index,
        key_slot: bitmap + key * SLOT_LEN,
    };
    // The invariants of `Layout`, which the checks above establish.
    debug_assert!(l.ctrl_off + l.buckets + GROUP_LEN <= bytes.len());
    debug_assert!(1 <= l.homes && l.homes <= l.buckets);
    debug_assert!(l.rows_off + l.buckets * l.row_width <= bytes.len());
    debug_assert!(l.row_width == bitmap + SLOT_LEN * schema.len() && key < schema.len());
    debug_assert!(l.heap_off + l.heap_len < bytes.len());
    Ok((schema, l))
}

/// Decodes the schema section: one 16-byte entry per column, then the names.
fn read_schema(bytes: &[u8], h: &Header, path: &Path) -> Result<Schema, TableError> {
    let corrupt = |m: String| TableError::corrupt(path, m);
    let Section { offset, len } = h.schema;
    // Bounds were checked against the file by the caller.
    let sec = bytes
        .get(offset as usize..(offset + len) as usize)
        .ok_or_else(|| corrupt("the schema section is outside the file".into()))?;
    let n = h.column_count as usize;
    if sec.len() < n * SCHEMA_ENTRY_LEN {
        return Err(corrupt(format!(
            "the schema section has {} bytes, too few for {n} columns",
            sec.len()
        )));
    }
    let mut columns: Vec<Column> = Vec::with_capacity(n);
    for i in 0..n {
        let at = i * SCHEMA_ENTRY_LEN;
        let entry = &sec[at..at + SCHEMA_ENTRY_LEN];
        let ty = ColumnType::from_tag(entry[0])
            .ok_or_else(|| corrupt(format!("column {i} has an unknown type tag {}", entry[0])))?;
        let name_len = read_u32(entry, 4).unwrap_or(0) as usize;
        let name_off = read_u32(entry, 8).unwrap_or(0) as usize;
        let name = name_off
            .checked_add(name_len)
            .and_then(|end| sec.get(name_off..end))
            .ok_or_else(|| corrupt(format!("column {i}'s name lies outside the schema section")))?;
        let name = std::str::from_utf8(name)
            .map_err(|_| corrupt(format!("column {i}'s name is not valid UTF-8")))?;
        if columns.iter().any(|c| c.name == name) {
            return Err(corrupt(format!("two columns are called `{name}`")));
        }
        columns.push(Column {
            name: name.to_string(),
            ty,
        });
    }
    let key = h.key_column as usize;
    match columns.get(key) {
        None => Err(corrupt(format!(
            "key column {key} of {} columns",
            columns.len()
        ))),
        Some(c) if !c.ty.is_key_type() => Err(corrupt(format!(
            "the key column `{}` is {}, not int or string",
            c.name, c.ty
        ))),
        Some(_) => {
            Schema::new(columns, key).ok_or_else(|| corrupt("invalid key column".to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_masks_agree_with_the_byte_by_byte_version() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            let mut g = [0u8; GROUP_LEN];
            for b in &mut g {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mostly empty and full bytes, some of each tag, a few invalid ones.
                *b = match x % 4 {
                    0 => EMPTY,
                    1 => 0x80 | (x >> 8) as u8 & 0x03,
                    2 => 0x80 | (x >> 8) as u8,
                    _ => (x >> 8) as u8,
                };
            }
            for tag in [0x80, 0x81, 0x82, 0x83, 0xff, (x >> 16) as u8 | 0x80] {
                // SAFETY: `g` holds GROUP_LEN bytes.
                let (fast, slow) = unsafe {
                    (
                        group_masks(g.as_ptr(), tag),
                        group_masks_scalar(g.as_ptr(), tag),
                    )
                };
                assert_eq!(fast, slow, "{g:02x?} tag {tag:#x}");
            }
        }
    }

    #[test]
    fn floats_that_are_integers() {
        assert_eq!(float_to_int(3.0), Some(3));
        assert_eq!(float_to_int(-0.0), Some(0));
        assert_eq!(float_to_int(3.5), None);
        assert_eq!(float_to_int(f64::NAN), None);
        assert_eq!(float_to_int(f64::INFINITY), None);
        assert_eq!(float_to_int(9_223_372_036_854_775_808.0), None);
        assert_eq!(float_to_int(-9_223_372_036_854_775_808.0), Some(i64::MIN));
    }

    #[test]
    fn short_inputs_are_bad_magic_or_truncated() {
        let o = OpenOptions::default();
        assert!(matches!(
            Table::from_bytes(b"", &o),
            Err(TableError::Truncated { .. })
        ));
        assert!(matches!(
            Table::from_bytes(b"KAI", &o),
            Err(TableError::Truncated { .. })
        ));
        assert!(matches!(
            Table::from_bytes(b"KAIX", &o),
            Err(TableError::BadMagic { .. })
        ));
        assert!(matches!(
            Table::from_bytes(&MAGIC, &o),
            Err(TableError::Truncated { .. })
        ));
    }
}
