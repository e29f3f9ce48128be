//! Building a table file from CSV or JSON lines.
//!
//! Two passes over the input. The first reads the column names, infers their types and counts
//! the records; the second encodes each record and places it straight into its bucket of the
//! final control and row sections, sized from the first pass (plus the few overflow buckets that
//! probes running past the last home need), and the string heap. Memory is therefore about the
//! size of the output file, whatever the input's size, and no per-record allocation survives a
//! record. The file is written to a temporary file beside the output, synced and renamed over
//! it, so a reader never sees a partial table and a failed build leaves nothing behind.

use super::format::{
    self, ctrl_tag, hash_int, hash_str, home, home_count_for, read_u64, row_width, str_slot,
    Column, ColumnType, Header, Section, BUILDER_ALIGN, EMPTY, GROUP_LEN, HEADER_LEN, MAX_COLUMNS,
    MAX_HEAP, MAX_ROWS, SCHEMA_ENTRY_LEN, SLOT_LEN, VERSION,
};
use super::TableError;
use rustc_hash::FxHashMap;
use std::borrow::Cow;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xxhash_rust::xxh3::xxh3_64;

/// The syntax of a build input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// Comma-separated values with a header row (RFC 4180 quoting). An empty field is null.
    Csv,
    /// One JSON object per line; blank lines are skipped. `null` or a missing field is null.
    JsonLines,
}

impl InputFormat {
    /// The format a file name's extension implies: `.csv`, or `.jsonl`, `.ndjson`, `.json`.
    pub fn from_path(path: &Path) -> Option<InputFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(InputFormat::Csv),
            "jsonl" | "ndjson" | "json" => Some(InputFormat::JsonLines),
            _ => None,
        }
    }
}

/// What to build: the input, its key column and the output file.
///
/// ```
/// use kairos::table::{BuildOptions, InputFormat};
/// let opts = BuildOptions {
///     schema: Some("id:string,limit:float".into()),
///     format: Some(InputFormat::Csv),
///     ..BuildOptions::new("customers.txt", "id", "customers.tbl")
/// };
/// assert_eq!(opts.key, "id");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildOptions {
    /// The CSV or JSON-lines file to read.
    pub input: PathBuf,
    /// The column whose values are the lookup keys; every record must have a distinct one.
    pub key: String,
    /// The table file to write (replaced atomically if it exists).
    pub output: PathBuf,
    /// Types for some or all columns, as `name:type,...` (see [`parse_schema`]); columns it does
    /// not name are inferred.
    pub schema: Option<String>,
    /// The input's syntax; `None` to tell it from the input's extension.
    pub format: Option<InputFormat>,
}

impl BuildOptions {
    /// Options with the schema inferred and the format taken from the input's extension.
    pub fn new(
        input: impl Into<PathBuf>,
        key: impl Into<String>,
        output: impl Into<PathBuf>,
    ) -> BuildOptions {
        BuildOptions {
            input: input.into(),
            key: key.into(),
            output: output.into(),
            schema: None,
            format: None,
        }
    }
}

/// What a build produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildStats {
    /// Rows written (one per input record).
    pub rows: u64,
    /// Columns in the table.
    pub columns: usize,
    /// Size of the table file in bytes.
    pub bytes: u64,
    /// Wall time of the whole build, both passes and the sync included.
    pub elapsed: Duration,
}

/// Parses a schema string: comma-separated `name:type` pairs, where type is `int` (`i64`,
/// `integer`), `float` (`f64`, `double`), `string` (`str`) or `bool` (`boolean`). Spaces around
/// names and types are ignored; a name may itself contain `:` (the type follows the last one).
///
/// ```
/// use kairos::table::{parse_schema, ColumnType};
/// let cols = parse_schema("id:string, limit:float")?;
/// assert_eq!(cols[1].name, "limit");
/// assert_eq!(cols[1].ty, ColumnType::Float);
/// assert!(parse_schema("id:text,limit").is_err());
/// # Ok::<(), kairos::table::TableError>(())
/// ```
pub fn parse_schema(spec: &str) -> Result<Vec<Column>, TableError> {
    let err = |message: String| TableError::Schema {
        spec: spec.to_string(),
        message,
    };
    if spec.trim().is_empty() {
        return Err(err("the schema is empty; expected `name:type,...`".into()));
    }
    let mut columns: Vec<Column> = Vec::new();
    for (i, entry) in spec.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(err(format!("entry {} is empty", i + 1)));
        }
        let (name, ty) = entry.rsplit_once(':').ok_or_else(|| {
            err(format!(
                "`{entry}` has no type; write `{entry}:int`, `:float`, `:string` or `:bool`"
            ))
        })?;
        let (name, ty_name) = (name.trim(), ty.trim());
        if name.is_empty() {
            return Err(err(format!("`{entry}` has no column name")));
        }
        let ty = ColumnType::parse(ty_name).ok_or_else(|| {
            err(format!(
                "unknown type `{ty_name}` for `{name}` (expected int, float, string or bool)"
            ))
        })?;
        if columns.iter().any(|c| c.name == name) {
            return Err(err(format!("column `{name}` is given twice")));
        }
        columns.push(Column {
            name: name.to_string(),
            ty,
        });
    }
    Ok(columns)
}

/// Builds a table file from a CSV or JSON-lines input.
///
/// Errors name the input, the line and the column: `customers.csv:17: duplicate key `u42`
/// (first seen on line 3)`. On any error the output is left as it was (absent, or the previous
/// table) and no temporary file remains.
///
/// ```
/// use kairos::table::{build, BuildOptions};
/// let dir = tempfile::tempdir()?;
/// let input = dir.path().join("instruments.jsonl");
/// std::fs::write(&input, "{\"sym\":\"ABC\",\"tick\":0.01,\"halted\":false}\n")?;
/// let stats = build(&BuildOptions::new(&input, "sym", dir.path().join("instruments.tbl")))?;
/// assert_eq!((stats.rows, stats.columns), (1, 3));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn build(opts: &BuildOptions) -> Result<BuildStats, TableError> {
    let start = Instant::now();
    let path = opts.input.as_path();
    let format = match opts.format.or_else(|| InputFormat::from_path(path)) {
        Some(f) => f,
        None => {
            return Err(TableError::InputFile {
                path: path.to_path_buf(),
                message: "cannot tell the format from the file name; use a .csv, .jsonl, \
                          .ndjson or .json extension or name the format"
                    .into(),
            })
        }
    };
    let given = opts.schema.as_deref().map(parse_schema).transpose()?;
    let src = Source { path, format };

    // Pass 1: names, types, record count.
    let mut names = Names::default();
    let mut infer: Vec<Infer> = Vec::new();
    let mut records: u64 = 0;
    src.scan(&mut names, true, |_, cells| {
        if infer.len() < cells.len() {
            infer.resize(cells.len(), Infer::new());
        }
        for (inf, cell) in infer.iter_mut().zip(cells) {
            inf.see(cell);
        }
        records += 1;
        Ok(true)
    })?;
    if format == InputFormat::JsonLines {
        // A field that no record has is null in every record; a schema may still name it (and
        // an empty input may still have a schema).
        for g in given.iter().flatten() {
            if !names.index.contains_key(&g.name) {
                names.index.insert(g.name.clone(), names.list.len());
                names.list.push(g.name.clone());
            }
        }
    }
    infer.resize(names.list.len(), Infer::new());
    if records > MAX_ROWS {
        return Err(TableError::Limit {
            path: path.to_path_buf(),
            message: format!("{records} records; a table holds at most {MAX_ROWS}"),
        });
    }
    if names.list.len() > MAX_COLUMNS as usize {
        return Err(TableError::Limit {
            path: path.to_path_buf(),
            message: format!(
                "{} columns; a table holds at most {MAX_COLUMNS}",
                names.list.len()
            ),
        });
    }

    let mut columns: Vec<Column> = names
        .list
        .iter()
        .zip(&infer)
        .map(|(name, inf)| Column {
            name: name.clone(),
            ty: inf.result(),
        })
        .collect();
    let mut given_key_type = false;
    let key = columns.iter().position(|c| c.name == opts.key);
    for g in given.iter().flatten() {
        match columns.iter_mut().find(|c| c.name == g.name) {
            Some(c) => c.ty = g.ty,
            None => {
                return Err(TableError::Schema {
                    spec: opts.schema.clone().unwrap_or_default(),
                    message: format!(
                        "no column `{}` in {} (it has: {})",
                        g.name,
                        path.display(),
                        list_names(&names.list)
                    ),
                })
            }
        }
        given_key_type |= g.name == opts.key;
    }
    let key = key.ok_or_else(|| TableError::MissingKeyColumn {
        path: path.to_path_buf(),
        key: opts.key.clone(),
        columns: list_names(&names.list),
    })?;
    let key_ty = columns[key].ty;
    if !key_ty.is_key_type() {
        return Err(TableError::KeyType {
            path: path.to_path_buf(),
            column: opts.key.clone(),
            ty: key_ty,
            hint: if given_key_type {
                String::new()
            } else {
                format!(
                    " (inferred from its values; give the schema `{}:string` to read them as text)",
                    opts.key
                )
            },
        });
    }

    // Pass 2: encode into the final sections.
    let mut enc = Encoder::new(path, &columns, key, records)?;
    let mut rows_seen: u64 = 0;
    let mut dup: Option<(u64, String, u32)> = None;
    src.scan(&mut names, false, |line, cells| {
        if rows_seen == records {
            return Err(changed(path));
        }
        if let Some((key, first_row)) = enc.push(line, cells)? {
            dup = Some((line, key, first_row));
            return Ok(false);
        }
        rows_seen += 1;
        Ok(true)
    })?;
    if let Some((line, key, first_row)) = dup {
        return Err(TableError::DuplicateKey {
            path: path.to_path_buf(),
            line,
            key,
            first_line: src.line_of_record(&mut names, first_row)?,
        });
    }
    if rows_seen != records || names.list.len() != columns.len() {
        return Err(changed(path));
    }

    let bytes = write_table(&opts.output, &columns, key, enc)?;
    Ok(BuildStats {
        rows: records,
        columns: columns.len(),
        bytes,
        elapsed: start.elapsed(),
    })
}

fn changed(path: &Path) -> TableError {
    TableError::InputFile {
        path: path.to_path_buf(),
        message: "the file changed while the table was being built".into(),
    }
}

fn list_names(names: &[String]) -> String {
    if names.is_empty() {
        return "no columns".into();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One field of an input record, borrowed from the parser's buffers.
#[derive(Clone, Copy, Debug)]
enum Cell<'a> {
    Null,
    /// A CSV field: its text, to be parsed per the column's type.
    Csv(&'a str),
    /// A JSON string.
    JStr(&'a str),
    /// A JSON number, as written.
    JNum(&'a str),
    JBool(bool),
}

impl Cell<'_> {
    /// The value as it appears in the input, for messages.
    fn text(&self) -> String {
        match self {
            Cell::Null => "null".into(),
            Cell::Csv(s) | Cell::JStr(s) => (*s).to_string(),
            Cell::JNum(s) => (*s).to_string(),
            Cell::JBool(b) => b.to_string(),
        }
    }
}

/// Column names in input order, with a map from name to position.
#[derive(Default)]
struct Names {
    list: Vec<String>,
    index: FxHashMap<String, usize>,
}

/// The running type inference of one column: which types every value so far fits.
#[derive(Clone, Copy, Debug)]
struct Infer {
    int: bool,
    float: bool,
    boolean: bool,
    text: bool,
    seen: bool,
}

impl Infer {
    fn new() -> Infer {
        Infer {
            int: true,
            float: true,
            boolean: true,
            text: false,
            seen: false,
        }
    }

    fn see(&mut self, cell: &Cell<'_>) {
        match *cell {
            Cell::Null => return,
            Cell::Csv(s) => {
                if self.int && s.parse::<i64>().is_err() {
                    self.int = false;
                }
                if self.float && !looks_like_float(s) {
                    self.float = false;
                }
                if self.boolean && parse_bool(s).is_none() {
                    self.boolean = false;
                }
            }
            Cell::JStr(_) => self.text = true,
            Cell::JNum(n) => {
                self.int &= n.parse::<i64>().is_ok();
                self.boolean = false;
            }
            Cell::JBool(_) => {
                self.int = false;
                self.float = false;
            }
        }
        self.seen = true;
    }

    fn result(&self) -> ColumnType {
        if !self.seen || self.text {
            ColumnType::Str
        } else if self.int {
            ColumnType::Int
        } else if self.float {
            ColumnType::Float
        } else if self.boolean {
            ColumnType::Bool
        } else {
            ColumnType::Str
        }
    }
}

/// Whether inference should call a CSV field a float: it parses, and it is a number written
/// with digits (so that a name like `Nan` or `Infinity` does not turn a column into floats).
fn looks_like_float(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_digit()) && s.parse::<f64>().is_ok()
}

fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// An input file and its syntax.
struct Source<'p> {
    path: &'p Path,
    format: InputFormat,
}

impl Source<'_> {
    fn open(&self) -> Result<File, TableError> {
        File::open(self.path).map_err(|e| TableError::io(self.path, e))
    }

    fn input_err(&self, line: u64, message: String) -> TableError {
        TableError::Input {
            path: self.path.to_path_buf(),
            line,
            message,
        }
    }

    /// Calls `f(line, cells)` for every record, cells in column order, until `f` returns
    /// `Ok(false)`. With `discover`, names met for the first time become new columns (JSON lines;
    /// CSV takes its names from the header in every pass).
    fn scan<F>(&self, names: &mut Names, discover: bool, f: F) -> Result<(), TableError>
    where
        F: FnMut(u64, &[Cell<'_>]) -> Result<bool, TableError>,
    {
        match self.format {
            InputFormat::Csv => self.scan_csv(names, f),
            InputFormat::JsonLines => self.scan_jsonl(names, discover, f),
        }
    }

    fn scan_csv<F>(&self, names: &mut Names, mut f: F) -> Result<(), TableError>
    where
        F: FnMut(u64, &[Cell<'_>]) -> Result<bool, TableError>,
    {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .buffer_capacity(1 << 16)
            .from_reader(QuoteTracker::new(self.open()?));
        // A quoted field that never closes runs to the end of the input, so the reader would
        // report a wrong field count for it, or nothing at all: where the record just read holds
        // such a field, that is the error, at the line where the field opened.
        let unterminated = |rdr: &csv::Reader<QuoteTracker<File>>| -> Result<(), TableError> {
            match rdr.get_ref().unterminated() {
                Some((line, at)) if at < rdr.position().byte() => Err(self.input_err(
                    line,
                    "unterminated quote: the quoted field that starts on this line has no \
                     closing quote"
                        .into(),
                )),
                _ => Ok(()),
            }
        };
        let csv_err = |e: csv::Error| -> TableError {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            let message = e.to_string();
            match e.into_kind() {
                csv::ErrorKind::Io(io) => TableError::io(self.path, io),
                _ => self.input_err(line, message),
            }
        };
        let header = rdr.byte_headers().map_err(csv_err)?.clone();
        unterminated(&rdr)?;
        let mut header_names = Vec::with_capacity(header.len());
        for (i, h) in header.iter().enumerate() {
            let name = std::str::from_utf8(h).map_err(|_| {
                self.input_err(1, format!("header field {} is not valid UTF-8", i + 1))
            })?;
            if header_names.contains(&name) {
                return Err(self.input_err(1, format!("column `{name}` appears twice")));
            }
            header_names.push(name);
        }
        if names.list.is_empty() {
            for (i, n) in header_names.iter().enumerate() {
                names.list.push((*n).to_string());
                names.index.insert((*n).to_string(), i);
            }
        }
        let width = header.len();
        let mut rec = csv::ByteRecord::new();
        let mut spare: Vec<Cell<'static>> = Vec::with_capacity(width);
        loop {
            if !rdr.read_byte_record(&mut rec).map_err(csv_err)? {
                return unterminated(&rdr);
            }
            unterminated(&rdr)?;
            let mut cells = recycle(std::mem::take(&mut spare));
            let line = rec.position().map(|p| p.line()).unwrap_or(0);
            if rec.len() != width {
                return Err(TableError::RaggedRow {
                    path: self.path.to_path_buf(),
                    line,
                    found: rec.len(),
                    expected: width,
                });
            }
            for (i, field) in rec.iter().enumerate() {
                if field.is_empty() {
                    cells.push(Cell::Null);
                    continue;
                }
                let s = std::str::from_utf8(field).map_err(|_| {
                    self.input_err(
                        line,
                        format!("column `{}`: not valid UTF-8", header_names[i]),
                    )
                })?;
                cells.push(Cell::Csv(s));
            }
            if !f(line, &cells)? {
                return Ok(());
            }
            spare = recycle(cells);
        }
    }

    fn scan_jsonl<F>(&self, names: &mut Names, discover: bool, mut f: F) -> Result<(), TableError>
    where
        F: FnMut(u64, &[Cell<'_>]) -> Result<bool, TableError>,
    {
        let mut rdr = BufReader::with_capacity(1 << 16, self.open()?);
        let mut buf: Vec<u8> = Vec::new();
        let mut line: u64 = 0;
        let mut spare_fields: Vec<(Cow<'static, str>, JVal<'static>)> = Vec::new();
        let mut spare_cells: Vec<Cell<'static>> = Vec::new();
        let mut slot_of: Vec<usize> = Vec::new();
        // The line that last set each column, to find a field given twice in one object.
        let mut seen_on: Vec<u64> = Vec::new();
        loop {
            buf.clear();
            let n = rdr
                .read_until(b'\n', &mut buf)
                .map_err(|e| TableError::io(self.path, e))?;
            if n == 0 {
                return Ok(());
            }
            line += 1;
            let mut bytes: &[u8] = &buf;
            if line == 1 {
                bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let text = std::str::from_utf8(bytes).map_err(|e| {
                self.input_err(
                    line,
                    format!("not valid UTF-8 at byte {}", e.valid_up_to() + 1),
                )
            })?;
            let mut fields = recycle_fields(std::mem::take(&mut spare_fields));
            parse_flat_object(text, &mut fields).map_err(|m| self.input_err(line, m))?;

            slot_of.clear();
            for (name, _) in &fields {
                let i = match names.index.get(name.as_ref()) {
                    Some(&i) => i,
                    None if discover => {
                        let i = names.list.len();
                        names.list.push(name.to_string());
                        names.index.insert(name.to_string(), i);
                        i
                    }
                    None => return Err(changed(self.path)),
                };
                if seen_on.len() <= i {
                    seen_on.resize(i + 1, 0);
                }
                if seen_on[i] == line {
                    return Err(self.input_err(line, format!("field `{name}` appears twice")));
                }
                seen_on[i] = line;
                slot_of.push(i);
            }
            let mut cells = recycle(std::mem::take(&mut spare_cells));
            cells.resize(names.list.len(), Cell::Null);
            for ((_, value), &i) in fields.iter().zip(&slot_of) {
                cells[i] = match value {
                    JVal::Str(s) => Cell::JStr(s),
                    JVal::Num(n) => Cell::JNum(n),
                    JVal::Bool(b) => Cell::JBool(*b),
                    JVal::Null => Cell::Null,
                };
            }
            if !f(line, &cells)? {
                return Ok(());
            }
            spare_cells = recycle(cells);
            spare_fields = recycle_fields(fields);
        }
    }

    /// The line on which record number `target` (from 0) starts: a rescan, only on the error
    /// path, so that the build need not keep a line number per row.
    fn line_of_record(&self, names: &mut Names, target: u32) -> Result<u64, TableError> {
        let mut n: u32 = 0;
        let mut found = 0;
        self.scan(names, false, |line, _| {
            if n == target {
                found = line;
                return Ok(false);
            }
            n += 1;
            Ok(true)
        })?;
        Ok(found)
    }
}

/// Empties a vector of cells and hands back its allocation with a fresh lifetime, so that one
/// buffer serves every record although each record's cells borrow that record's text.
fn recycle<'b>(mut v: Vec<Cell<'_>>) -> Vec<Cell<'b>> {
    v.clear();
    // An empty vector collected into one of the same layout reuses its allocation.
    v.into_iter().map(|_| Cell::Null).collect()
}

/// The bytes of a CSV input on their way to the CSV reader, less a byte-order mark at the start
/// (which the reader would take into the first column's name), with their quoting followed:
/// the reader takes a quoted field that never closes to run to the end of the input, and
/// reports at most a wrong field count, at the line where its record started.
struct QuoteTracker<R> {
    inner: R,
    /// Bytes handed on (the mark not counted, as the reader never sees it).
    offset: u64,
    /// The line of the next byte, from 1.
    line: u64,
    /// Inside a quoted field.
    quoted: bool,
    /// Inside a quoted field, the last byte was a quote: it closes the field unless a quote
    /// follows (`""` is a quote within the field).
    quote_pending: bool,
    /// The byte before the next one outside quotes (a line end at the start): a quote opens a
    /// field only at the field's start.
    prev: u8,
    /// The line and offset of the quote that opened the current quoted field.
    opened: (u64, u64),
    started: bool,
    at_end: bool,
}

impl<R: std::io::Read> QuoteTracker<R> {
    fn new(inner: R) -> Self {
        QuoteTracker {
            inner,
            offset: 0,
            line: 1,
            quoted: false,
            quote_pending: false,
            prev: b'\n',
            opened: (0, 0),
            started: false,
            at_end: false,
        }
    }

    /// Once the whole input has been read: the line and offset of the opening quote of a
    /// quoted field that never closed.
    fn unterminated(&self) -> Option<(u64, u64)> {
        (self.at_end && self.quoted && !self.quote_pending).then_some(self.opened)
    }

    /// Follows the quoting through `bytes`, the next bytes handed on.
    fn follow(&mut self, bytes: &[u8]) {
        let newlines = |b: &[u8]| memchr::memchr_iter(b'\n', b).count() as u64;
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.quote_pending {
                self.quote_pending = false;
                if rest[0] == b'"' {
                    rest = &rest[1..];
                    continue;
                }
                self.quoted = false;
                self.prev = b'"';
            }
            let Some(k) = memchr::memchr(b'"', rest) else {
                self.line += newlines(rest);
                if !self.quoted {
                    self.prev = rest[rest.len() - 1];
                }
                break;
            };
            self.line += newlines(&rest[..k]);
            if self.quoted {
                self.quote_pending = true;
            } else {
                let prev = if k > 0 { rest[k - 1] } else { self.prev };
                if matches!(prev, b',' | b'\n' | b'\r') {
                    self.quoted = true;
                    self.opened = (
                        self.line,
                        self.offset + (bytes.len() - rest.len() + k) as u64,
                    );
                }
                self.prev = b'"';
            }
            rest = &rest[k + 1..];
        }
        self.offset += bytes.len() as u64;
    }
}

impl<R: std::io::Read> std::io::Read for QuoteTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = self.inner.read(buf)?;
        if !self.started && n > 0 {
            self.started = true;
            if buf[..n].starts_with(b"\xef\xbb\xbf") {
                buf.copy_within(3..n, 0);
                n -= 3;
                if n == 0 {
                    return self.read(buf);
                }
            }
        }
        if n == 0 {
            self.at_end = true;
        }
        self.follow(&buf[..n]);
        Ok(n)
    }
}

/// Empties a vector of parsed fields, keeping its allocation; see [`recycle`].
fn recycle_fields<'b>(mut v: Vec<(Cow<'_, str>, JVal<'_>)>) -> Vec<(Cow<'b, str>, JVal<'b>)> {
    v.clear();
    v.into_iter()
        .map(|_| (Cow::Borrowed(""), JVal::Null))
        .collect()
}

/// A scalar field of a flat JSON object, borrowed from the line unless it had escapes.
#[derive(Debug, PartialEq)]
enum JVal<'a> {
    Null,
    Bool(bool),
    /// A number, as written: parsed later with the column's type, so that floats convert
    /// exactly and integers never pass through a double.
    Num(&'a str),
    Str(Cow<'a, str>),
}

/// Parses one line holding a flat JSON object (scalars only) into its fields, in order.
///
/// A purpose-built parser rather than `serde_json::Value`: it borrows names and strings from the
/// line, keeps the fields in input order (the order columns are discovered in), keeps number
/// text so that floats convert with correct rounding, and names the field of a nested value.
fn parse_flat_object<'a>(
    s: &'a str,
    out: &mut Vec<(Cow<'a, str>, JVal<'a>)>,
) -> Result<(), String> {
    let mut p = JsonLine {
        s,
        b: s.as_bytes(),
        i: 0,
    };
    p.ws();
    if p.peek() != Some(b'{') {
        return Err(p.err("expected a JSON object (one record per line)"));
    }
    p.i += 1;
    p.ws();
    if p.peek() == Some(b'}') {
        p.i += 1;
    } else {
        loop {
            p.ws();
            if p.peek() != Some(b'"') {
                return Err(p.err("expected a field name"));
            }
            let key = p.string()?;
            p.ws();
            if p.peek() != Some(b':') {
                return Err(p.err("expected `:`"));
            }
            p.i += 1;
            p.ws();
            let value = match p.peek() {
                Some(b'"') => JVal::Str(p.string()?),
                Some(b'-' | b'0'..=b'9') => JVal::Num(p.number()?),
                Some(b't') => p.literal("true", JVal::Bool(true))?,
                Some(b'f') => p.literal("false", JVal::Bool(false))?,
                Some(b'n') => p.literal("null", JVal::Null)?,
                Some(c @ (b'[' | b'{')) => {
                    return Err(format!(
                        "column `{key}`: nested {} values are not supported; flatten the input \
                         to one scalar per column",
                        if c == b'[' { "array" } else { "object" }
                    ))
                }
                _ => return Err(p.err("expected a value")),
            };
            out.push((key, value));
            p.ws();
            match p.peek() {
                Some(b',') => p.i += 1,
                Some(b'}') => {
                    p.i += 1;
                    break;
                }
                _ => return Err(p.err("expected `,` or `}`")),
            }
        }
    }
    p.ws();
    if p.i != p.b.len() {
        return Err(p.err("unexpected text after the object"));
    }
    Ok(())
}

struct JsonLine<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> JsonLine<'a> {
    fn err(&self, what: &str) -> String {
        format!("invalid JSON at column {}: {what}", self.i + 1)
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.peek() {
            self.i += 1;
        }
    }

    /// The text between two byte positions; both follow or precede an ASCII byte, so they are
    /// character boundaries.
    fn slice(&self, from: usize, to: usize) -> Result<&'a str, String> {
        self.s.get(from..to).ok_or_else(|| self.err("bad string"))
    }

    fn literal(&mut self, word: &str, v: JVal<'a>) -> Result<JVal<'a>, String> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("expected a value"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<&'a str, String> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        self.slice(start, self.i)
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let h = self
            .b
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.err("bad \\u escape"))?;
        self.i += 4;
        Ok(h)
    }

    /// A string, the cursor on its opening quote.
    fn string(&mut self) -> Result<Cow<'a, str>, String> {
        self.i += 1;
        let start = self.i;
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    let s = self.slice(start, self.i)?;
                    self.i += 1;
                    return Ok(Cow::Borrowed(s));
                }
                Some(b'\\') => break,
                Some(0..=0x1f) => return Err(self.err("control character in a string")),
                Some(_) => self.i += 1,
            }
        }
        let mut out = String::from(self.slice(start, self.i)?);
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c =
                        match self.peek() {
                            Some(b'"') => '"',
                            Some(b'\\') => '\\',
                            Some(b'/') => '/',
                            Some(b'b') => '\u{8}',
                            Some(b'f') => '\u{c}',
                            Some(b'n') => '\n',
                            Some(b'r') => '\r',
                            Some(b't') => '\t',
                            Some(b'u') => {
                                self.i += 1;
                                let hi = self.hex4()?;
                                let cp = if (0xD800..0xDC00).contains(&hi) {
                                    if !self.b[self.i..].starts_with(b"\\u") {
                                        return Err(self.err("unpaired surrogate in a \\u escape"));
                                    }
                                    self.i += 2;
                                    let lo = self.hex4()?;
                                    if !(0xDC00..0xE000).contains(&lo) {
                                        return Err(self.err("unpaired surrogate in a \\u escape"));
                                    }
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                } else {
                                    hi
                                };
                                out.push(char::from_u32(cp).ok_or_else(|| {
                                    self.err("unpaired surrogate in a \\u escape")
                                })?);
                                continue;
                            }
                            _ => return Err(self.err("bad escape")),
                        };
                    self.i += 1;
                    out.push(c);
                }
                Some(0..=0x1f) => return Err(self.err("control character in a string")),
                Some(_) => {
                    let run = self.i;
                    while let Some(c) = self.peek() {
                        if c == b'"' || c == b'\\' || c < 0x20 {
                            break;
                        }
                        self.i += 1;
                    }
                    out.push_str(self.slice(run, self.i)?);
                }
            }
        }
    }
}

/// The sections being built: control bytes, rows and heap, sized from the first pass.
struct Encoder<'a> {
    path: &'a Path,
    columns: &'a [Column],
    key: usize,
    width: usize,
    bitmap: usize,
    /// One control byte per bucket (the homes, then any overflow past the last home).
    ctrl: Vec<u8>,
    /// One row per bucket, zero where the bucket is empty.
    rows: Vec<u8>,
    /// The input record number of each full bucket's row, for the duplicate-key error.
    record_of: Vec<u32>,
    /// The row being encoded.
    scratch: Vec<u8>,
    heap: Vec<u8>,
    /// Per column, the slots of short strings already in the heap, by hash (see `intern`).
    shared: Vec<FxHashMap<u64, u64>>,
    homes: u64,
    count: u32,
}

/// Strings up to this length are stored once per column and shared by every row that has them.
const SHARE_MAX_LEN: usize = 64;

/// At most this many distinct strings are remembered per column: enough for every
/// low-cardinality column (segments, countries, currencies), where sharing pays, and a bound on
/// the memory a column of distinct values (names) can take.
const SHARE_MAX_DISTINCT: usize = 1 << 16;

impl<'a> Encoder<'a> {
    fn new(
        path: &'a Path,
        columns: &'a [Column],
        key: usize,
        records: u64,
    ) -> Result<Encoder<'a>, TableError> {
        let width = row_width(columns.len() as u32) as usize;
        let too_big = || TableError::Limit {
            path: path.to_path_buf(),
            message: format!("{records} rows of {width} bytes do not fit in memory"),
        };
        let homes = home_count_for(records);
        let buckets = usize::try_from(homes).map_err(|_| too_big())?;
        let rows_len = buckets.checked_mul(width).ok_or_else(too_big)?;
        // Room for the overflow buckets probes may add past the last home (a handful at a load
        // of three quarters), so that adding them does not reallocate the sections.
        let spare = OVERFLOW_ROOM.min(buckets);
        Ok(Encoder {
            path,
            columns,
            key,
            width,
            bitmap: format::bitmap_len(columns.len() as u32) as usize,
            ctrl: zeroed(EMPTY, buckets, spare),
            rows: zeroed(0, rows_len, spare * width),
            record_of: zeroed(0, buckets, spare),
            scratch: vec![0; width],
            heap: Vec::new(),
            shared: vec![FxHashMap::default(); columns.len()],
            homes,
            count: 0,
        })
    }

    /// Appends one record. Returns the key and the earlier row's number if the key was seen
    /// before (the caller turns that into an error with both lines).
    fn push(&mut self, line: u64, cells: &[Cell<'_>]) -> Result<Option<(String, u32)>, TableError> {
        self.scratch.fill(0);
        for (i, col) in self.columns.iter().enumerate() {
            let cell = cells.get(i).copied().unwrap_or(Cell::Null);
            if i == self.key && matches!(cell, Cell::Null | Cell::JStr("")) {
                return Err(self.null_key(line));
            }
            if let Cell::Null = cell {
                self.scratch[i / 8] |= 1 << (i % 8);
                continue;
            }
            let slot = self.encode(line, i, col, cell)?;
            let at = self.bitmap + i * SLOT_LEN;
            self.scratch[at..at + SLOT_LEN].copy_from_slice(&slot.to_le_bytes());
        }
        if let Some(first) = self.place_row() {
            let key = cells.get(self.key).map(Cell::text).unwrap_or_default();
            return Ok(Some((key, first)));
        }
        self.count += 1;
        Ok(None)
    }

    fn null_key(&self, line: u64) -> TableError {
        TableError::NullKey {
            path: self.path.to_path_buf(),
            line,
            column: self.columns[self.key].name.clone(),
        }
    }

    /// The 8-byte slot of a non-null value.
    fn encode(
        &mut self,
        line: u64,
        i: usize,
        col: &Column,
        cell: Cell<'_>,
    ) -> Result<u64, TableError> {
        let bad = || TableError::BadValue {
            path: self.path.to_path_buf(),
            line,
            column: col.name.clone(),
            value: cell.text(),
            ty: col.ty,
        };
        Ok(match (col.ty, cell) {
            (ColumnType::Int, Cell::Csv(s) | Cell::JStr(s)) => {
                s.parse::<i64>().map_err(|_| bad())? as u64
            }
            (ColumnType::Int, Cell::JNum(n)) => match n.parse::<i64>() {
                Ok(i) => i as u64,
                // 3.0 or 1e3 in JSON is an integer; 3.5 is not, nor is anything beyond 2^53,
                // where a double no longer holds every integer.
                Err(_) => n
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0)
                    .ok_or_else(bad)? as i64 as u64,
            },
            (ColumnType::Float, Cell::Csv(s) | Cell::JStr(s)) => {
                s.parse::<f64>().map_err(|_| bad())?.to_bits()
            }
            (ColumnType::Float, Cell::JNum(n)) => n.parse::<f64>().map_err(|_| bad())?.to_bits(),
            (ColumnType::Bool, Cell::Csv(s) | Cell::JStr(s)) => {
                parse_bool(s).ok_or_else(bad)? as u64
            }
            (ColumnType::Bool, Cell::JBool(b)) => b as u64,
            (ColumnType::Str, Cell::Csv(s) | Cell::JStr(s)) => self.intern(i, s.as_bytes())?,
            (ColumnType::Str, Cell::JNum(n)) => self.intern(i, n.as_bytes())?,
            (ColumnType::Str, Cell::JBool(b)) => {
                self.intern(i, if b { b"true" } else { b"false" })?
            }
            (_, Cell::Null) => 0,
            _ => return Err(bad()),
        })
    }

    /// Stores a string of column `i` in the heap and returns its slot. A short string already
    /// stored for the column is shared instead: a column of a few distinct values then costs a
    /// few heap bytes, and reading it touches a few cache lines, however many rows there are.
    /// Keys are distinct, so the key column is not looked up.
    fn intern(&mut self, i: usize, s: &[u8]) -> Result<u64, TableError> {
        let share = i != self.key && s.len() <= SHARE_MAX_LEN;
        let h = if share { xxh3_64(s) } else { 0 };
        if share {
            if let Some(&slot) = self.shared[i].get(&h) {
                let off = slot as u32 as usize;
                if self.heap.get(off..off + s.len()) == Some(s) && (slot >> 32) as usize == s.len()
                {
                    return Ok(slot);
                }
            }
        }
        let off = self.heap.len() as u64;
        if off + s.len() as u64 > MAX_HEAP {
            return Err(TableError::Limit {
                path: self.path.to_path_buf(),
                message: format!("the strings exceed the format's {MAX_HEAP}-byte heap"),
            });
        }
        self.heap.extend_from_slice(s);
        let slot = str_slot(off as u32, s.len() as u32);
        if share && self.shared[i].len() < SHARE_MAX_DISTINCT {
            self.shared[i].entry(h).or_insert(slot);
        }
        Ok(slot)
    }

    /// The key slot of an encoded row.
    fn key_slot(&self, row: &[u8]) -> u64 {
        read_u64(row, self.bitmap + self.key * SLOT_LEN).unwrap_or(0)
    }

    /// The key of an encoded row of a string-keyed table: its bytes in the heap.
    fn key_bytes<'r>(&'r self, row: &[u8]) -> &'r [u8] {
        let slot = self.key_slot(row);
        let off = slot as u32 as usize;
        let len = (slot >> 32) as usize;
        self.heap.get(off..off + len).unwrap_or_default()
    }

    /// Places the encoded row in the first empty bucket of its key's probe sequence, growing
    /// the overflow past the last home bucket when the sequence runs off the end; returns the
    /// record number of an earlier row with the same key instead, if there is one.
    fn place_row(&mut self) -> Option<u32> {
        let int_key = self.columns[self.key].ty == ColumnType::Int;
        let key_slot = self.key_slot(&self.scratch);
        let hash = if int_key {
            hash_int(key_slot as i64)
        } else {
            hash_str(self.key_bytes(&self.scratch))
        };
        let tag = ctrl_tag(hash);
        // home() < homes = the initial bucket count, which fits in usize.
        let mut pos = home(hash, self.homes) as usize;
        loop {
            if pos == self.ctrl.len() {
                self.ctrl.push(EMPTY);
                self.record_of.push(0);
                self.rows.resize(self.rows.len() + self.width, 0);
            }
            if self.ctrl[pos] == EMPTY {
                self.ctrl[pos] = tag;
                self.record_of[pos] = self.count;
                let at = pos * self.width;
                self.rows[at..at + self.width].copy_from_slice(&self.scratch);
                return None;
            }
            if self.ctrl[pos] == tag {
                let other = &self.rows[pos * self.width..(pos + 1) * self.width];
                let same = if int_key {
                    self.key_slot(other) == key_slot
                } else {
                    self.key_bytes(other) == self.key_bytes(&self.scratch)
                };
                if same {
                    return Some(self.record_of[pos]);
                }
            }
            pos += 1;
        }
    }
}

/// Overflow buckets the builder makes room for up front.
const OVERFLOW_ROOM: usize = 1024;

/// `len` copies of `zero`, with room for `spare` more. `vec!` of a zero value takes memory the
/// system has already zeroed (pages are touched only when written), which writing the zeros
/// would lose.
fn zeroed<T: Clone>(zero: T, len: usize, spare: usize) -> Vec<T> {
    let mut v = vec![zero; len];
    v.reserve_exact(spare);
    v
}

/// Aligns `n` up to the builder's section alignment.
fn align(n: u64) -> u64 {
    n.div_ceil(BUILDER_ALIGN) * BUILDER_ALIGN
}

/// Writes the file next to `output`, syncs it and renames it into place; returns its size.
fn write_table(
    output: &Path,
    columns: &[Column],
    key: usize,
    enc: Encoder<'_>,
) -> Result<u64, TableError> {
    // Schema: fixed entries, then the names.
    let mut schema = vec![0u8; columns.len() * SCHEMA_ENTRY_LEN];
    for (i, c) in columns.iter().enumerate() {
        let at = i * SCHEMA_ENTRY_LEN;
        let name_off = schema.len() as u32;
        schema[at] = c.ty.tag();
        schema[at + 4..at + 8].copy_from_slice(&(c.name.len() as u32).to_le_bytes());
        schema[at + 8..at + 12].copy_from_slice(&name_off.to_le_bytes());
        schema.extend_from_slice(c.name.as_bytes());
    }
    let schema_s = Section {
        offset: HEADER_LEN as u64,
        len: schema.len() as u64,
    };
    let index_s = Section {
        offset: align(schema_s.offset + schema_s.len),
        len: (enc.ctrl.len() + GROUP_LEN) as u64,
    };
    let rows_s = Section {
        offset: align(index_s.offset + index_s.len),
        len: enc.rows.len() as u64,
    };
    let heap_s = Section {
        offset: align(rows_s.offset + rows_s.len),
        len: enc.heap.len() as u64,
    };
    // At least one zero byte after the heap, so that a reader can look at the byte following
    // any string without a bounds check failing; then up to a multiple of 8.
    let file_len = (heap_s.offset + heap_s.len + 1).next_multiple_of(8);
    let mut header = Header {
        version: VERSION,
        flags: 0,
        row_count: u64::from(enc.count),
        column_count: columns.len() as u32,
        key_column: key as u32,
        row_width: enc.width as u32,
        home_count: enc.homes,
        schema: schema_s,
        index: index_s,
        rows: rows_s,
        heap: heap_s,
        file_len,
        checksum: 0,
    };

    let (tmp, file) = TempFile::create(output)?;
    let io = |e| TableError::io(&tmp.path, e);
    let mut w = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hash: xxhash_rust::xxh3::Xxh3Default::new(),
        at: 0,
    };
    w.put(&header.encode()).map_err(io)?;
    w.put(&schema).map_err(io)?;
    w.pad_to(index_s.offset).map_err(io)?;
    w.put(&enc.ctrl).map_err(io)?;
    w.put(&[EMPTY; GROUP_LEN]).map_err(io)?;
    w.pad_to(rows_s.offset).map_err(io)?;
    w.put(&enc.rows).map_err(io)?;
    w.pad_to(heap_s.offset).map_err(io)?;
    w.put(&enc.heap).map_err(io)?;
    w.pad_to(file_len).map_err(io)?;
    debug_assert_eq!(w.at, file_len);
    // The header went into the hash with its checksum field zero, as the format defines.
    header.checksum = w.hash.digest();
    let mut file = w
        .inner
        .into_inner()
        .map_err(|e| TableError::io(&tmp.path, e.into_error()))?;
    file.seek(SeekFrom::Start(format::CHECKSUM_AT as u64))
        .map_err(io)?;
    file.write_all(&header.checksum.to_le_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    tmp.persist(output)?;
    Ok(file_len)
}

/// A writer that hashes what it writes and counts the bytes.
struct HashingWriter<W: Write> {
    inner: W,
    hash: xxhash_rust::xxh3::Xxh3Default,
    at: u64,
}

impl<W: Write> HashingWriter<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.hash.update(b);
        self.at += b.len() as u64;
        self.inner.write_all(b)
    }

    fn pad_to(&mut self, offset: u64) -> std::io::Result<()> {
        const ZEROS: [u8; BUILDER_ALIGN as usize] = [0; BUILDER_ALIGN as usize];
        let n = offset.saturating_sub(self.at) as usize;
        self.put(&ZEROS[..n.min(ZEROS.len())])
    }
}

/// A file beside the output that is removed unless it is renamed into place.
struct TempFile {
    path: PathBuf,
    persisted: bool,
}

impl TempFile {
    fn create(output: &Path) -> Result<(TempFile, File), TableError> {
        let dir = match output.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "table".into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut last = None;
        for attempt in 0..16u32 {
            let path = dir.join(format!(
                ".{name}.{}.{:08x}.tmp",
                std::process::id(),
                nanos.wrapping_add(attempt)
            ));
            match fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    let guard = TempFile {
                        path,
                        persisted: false,
                    };
                    return Ok((guard, file));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(TableError::io(dir.join(&name), e)),
            }
        }
        Err(TableError::io(
            dir.join(&name),
            last.unwrap_or_else(|| std::io::Error::other("no free temporary name")),
        ))
    }

    /// Renames the file over `output` and syncs the directory so that the rename is durable.
    fn persist(mut self, output: &Path) -> Result<(), TableError> {
        fs::rename(&self.path, output).map_err(|e| TableError::io(output, e))?;
        self.persisted = true;
        if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Best effort: some platforms and file systems do not sync directories.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `csv` through a tracker in chunks of `chunk` bytes, to its end.
    fn track(csv: &[u8], chunk: usize) -> (Vec<u8>, Option<(u64, u64)>) {
        use std::io::Read;
        struct Chunks<'a>(&'a [u8], usize);
        impl Read for Chunks<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut t = QuoteTracker::new(Chunks(csv, chunk));
        let mut out = Vec::new();
        t.read_to_end(&mut out).unwrap();
        (out, t.unterminated())
    }

    #[test]
    fn quote_tracker_finds_the_quote_that_never_closes() {
        for chunk in [1, 2, 3, 5, 64] {
            let (_, u) = track(b"id,name\n1,\"ab\"\n2,\"c\"\"d\",x\n", chunk);
            assert_eq!(u, None, "{chunk}");
            // A quote inside an unquoted field is a character, not a quote.
            let (_, u) = track(b"id,name\n1,a\"b\n2,x\"\"\n", chunk);
            assert_eq!(u, None, "{chunk}");
            // After a closed quote, the rest of the field is plain.
            let (_, u) = track(b"id,name\n1,\"a\"b\"c\n", chunk);
            assert_eq!(u, None, "{chunk}");
            let (_, u) = track(b"id,name\n1,x\n2,\"y\n3,z\n4,w\n", chunk);
            assert_eq!(u, Some((3, 14)), "{chunk}");
            // A multi-line quoted field that closes, then one that does not.
            let (_, u) = track(b"id,v\n1,\"a\nb\"\n\"2,c\n", chunk);
            assert_eq!(u, Some((4, 13)), "{chunk}");
            // A quoted field closed by the input's very last byte is closed.
            let (_, u) = track(b"id,v\n1,\"a\"", chunk);
            assert_eq!(u, None, "{chunk}");
            let (_, u) = track(b"id,v\r\n1,\"a\"\"\r\n", chunk);
            assert_eq!(u, Some((2, 8)), "{chunk}");
        }
    }

    #[test]
    fn quote_tracker_drops_a_leading_byte_order_mark() {
        for chunk in [3, 4, 64] {
            let (out, u) = track(b"\xef\xbb\xbf\"id\",v\n\"1,2\n", chunk);
            assert_eq!(out, b"\"id\",v\n\"1,2\n", "{chunk}");
            assert_eq!(u, Some((2, 7)), "{chunk}");
        }
        let (out, _) = track(b"a,\xef\xbb\xbf\n", 64);
        assert_eq!(out, b"a,\xef\xbb\xbf\n");
    }

    #[test]
    fn inference() {
        let infer = |vals: &[&str]| {
            let mut i = Infer::new();
            for v in vals {
                i.see(&if v.is_empty() {
                    Cell::Null
                } else {
                    Cell::Csv(v)
                });
            }
            i.result()
        };
        assert_eq!(infer(&["1", "", "-3"]), ColumnType::Int);
        assert_eq!(infer(&["1", "2.5"]), ColumnType::Float);
        assert_eq!(infer(&["1e3", "-0.5"]), ColumnType::Float);
        assert_eq!(infer(&["true", "FALSE"]), ColumnType::Bool);
        assert_eq!(infer(&["true", "1"]), ColumnType::Str);
        assert_eq!(infer(&["nan", "inf"]), ColumnType::Str);
        assert_eq!(infer(&["", ""]), ColumnType::Str);
        assert_eq!(infer(&[]), ColumnType::Str);
    }

    #[test]
    fn flat_json_objects() {
        fn parse(s: &str) -> Result<Vec<(Cow<'_, str>, JVal<'_>)>, String> {
            let mut v = Vec::new();
            parse_flat_object(s, &mut v).map(|()| v)
        }
        let v = parse(
            r#" {"a": 1, "b":-2.5e3 ,"c":"x\"y\u00e9\ud83d\ude00","d":true,"e":null,"f":false} "#,
        )
        .unwrap();
        assert_eq!(
            v,
            vec![
                (Cow::Borrowed("a"), JVal::Num("1")),
                (Cow::Borrowed("b"), JVal::Num("-2.5e3")),
                (
                    Cow::Borrowed("c"),
                    JVal::Str(Cow::Owned("x\"y\u{e9}\u{1f600}".into()))
                ),
                (Cow::Borrowed("d"), JVal::Bool(true)),
                (Cow::Borrowed("e"), JVal::Null),
                (Cow::Borrowed("f"), JVal::Bool(false)),
            ]
        );
        assert_eq!(parse("{}").unwrap(), vec![]);
        assert_eq!(
            parse(r#"{"é":"ü"}"#).unwrap(),
            vec![(Cow::Borrowed("é"), JVal::Str(Cow::Borrowed("ü")))]
        );
        for bad in [
            "",
            "[]",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":-}",
            "{\"a\":1e}",
            "{\"a\":tru}",
            "{\"a\":\"x}",
            "{\"a\":\"\\q\"}",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":\"\\udc00\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":1} x",
            "{\"a\":\"\t\"}",
            "{\"a\":1 \"b\":2}",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse(r#"{"a":[1]}"#)
            .unwrap_err()
            .contains("column `a`: nested array"));
        assert!(parse(r#"{"a":{}}"#)
            .unwrap_err()
            .contains("column `a`: nested object"));
    }

    #[test]
    fn schema_strings() {
        let c = parse_schema(" a : int ,b:STRING, c:d:bool").unwrap();
        assert_eq!(
            c,
            vec![
                Column {
                    name: "a".into(),
                    ty: ColumnType::Int
                },
                Column {
                    name: "b".into(),
                    ty: ColumnType::Str
                },
                Column {
                    name: "c:d".into(),
                    ty: ColumnType::Bool
                },
            ]
        );
        for bad in ["", "a", "a:int,", ":int", "a:blob", "a:int,a:float"] {
            assert!(parse_schema(bad).is_err(), "{bad}");
        }
    }
}
