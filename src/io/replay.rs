//! `kairos replay`: runs patterns over recorded JSON-lines inputs, merged by event time.
//!
//! A regular file is read through a memory map and decoded line by line, in place. Any other
//! input (a pipe, a FIFO, standard input given as `-`, a character device) is streamed: read as
//! it arrives into a buffer that holds at most one line, so memory stays bounded however long
//! the input runs, and decoded line by line as each line completes. Before the replay waits for
//! more of a streamed input, it makes the records written so far visible to the reader of its
//! output, so a record is seen as soon as the event that completes its match has been read.
//!
//! Several inputs are merged by event time, stable by the order they were given: the next event
//! handed on is the earliest of the inputs' next events, so the merge waits until every input
//! that has not ended has a next event. A streamed input that goes quiet holds back the events
//! of the others until it writes its next line or closes.
//!
//! A line that cannot be decoded, or that is longer than the limit on lines
//! ([`ReadOptions::max_line_bytes`]), is reported with its input and line, counted as malformed
//! and skipped; it never stops the run. A byte-order mark at the start of an input is skipped.

use crate::compile::Program;
use crate::engine::{Engine, EngineOptions, Output, OwnedRecord, Record};
use crate::event::{Event, JsonDecoder, TimeUnit};
use crate::lang::lexer::BOM;
use crate::pipeline::{Barrier, Layout, Pipeline, Report as PipelineReport, Sink};
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The name of standard input among the inputs.
pub const STDIN: &str = "-";

/// The longest line read by default: 1 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// How the inputs are read.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadOptions {
    /// The longest line, in bytes, its newline not counted. A longer line is reported (input
    /// and line), counted as malformed and skipped, and a streamed input never holds it whole.
    pub max_line_bytes: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// One recorded input: a file and the stream its events belong to.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub stream: Option<String>,
    /// The file; [`STDIN`] (`-`) is standard input.
    pub path: PathBuf,
}

impl Input {
    /// Parses `STREAM=FILE` or `FILE`; the file `-` is standard input.
    pub fn parse(s: &str) -> Input {
        match s.split_once('=') {
            Some((stream, path)) if !stream.is_empty() && !stream.contains('/') => Input {
                stream: Some(stream.to_string()),
                path: PathBuf::from(path),
            },
            _ => Input {
                stream: None,
                path: PathBuf::from(s),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Streams(String),
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub events: u64,
    pub matches: u64,
    pub timeouts: u64,
    /// Lines that could not be decoded or were longer than the limit (reported and skipped).
    pub malformed: u64,
    /// Events whose time went backwards within their file (reported and skipped).
    pub late: u64,
    pub evicted: u64,
    pub elapsed: Duration,
}

impl Summary {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "events {}  matches {}  timeouts {}  malformed {}  late {}  evicted {}  elapsed {:.3}s  {:.0} events/s",
            self.events,
            self.matches,
            self.timeouts,
            self.malformed,
            self.late,
            self.evicted,
            self.elapsed.as_secs_f64(),
            self.events_per_second()
        )
    }
}

/// The bytes of an input: a regular file is mapped, any other input streamed.
enum Data {
    Map(memmap2::Mmap),
    Stream(LineReader),
}

impl Data {
    /// Opens the file at `path`, or standard input for [`STDIN`].
    fn open(path: &Path) -> Result<Data, ReplayError> {
        let io = |source| ReplayError::Io {
            path: path.to_path_buf(),
            source,
        };
        if path == Path::new(STDIN) {
            return Data::stdin().map_err(io);
        }
        let file = std::fs::File::open(path).map_err(io)?;
        Data::of_file(file).map_err(io)
    }

    /// Maps a regular file; streams anything else, and a regular file that reads as empty (the
    /// files of `/proc` have no size, yet hold lines).
    fn of_file(file: std::fs::File) -> std::io::Result<Data> {
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() == 0 {
            return Ok(Data::Stream(LineReader::new(Box::new(file))));
        }
        // SAFETY: the map is read-only and lives as long as the replay; a file truncated by
        // another process while mapped is outside what a replay of a recorded file supports.
        // Populated up front: a replay reads every page once, in order, and faulting them in one
        // by one costs more than the read itself.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }?;
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(Data::Map(map))
    }

    /// Standard input: mapped when it is a regular file not yet read from (`< events.jsonl`),
    /// streamed otherwise.
    #[cfg(unix)]
    fn stdin() -> std::io::Result<Data> {
        use std::io::Seek;
        use std::os::fd::AsFd;
        let mut file = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
        if file.metadata()?.is_file() && file.stream_position()? == 0 {
            return Data::of_file(file);
        }
        Ok(Data::Stream(LineReader::new(Box::new(file))))
    }

    #[cfg(not(unix))]
    fn stdin() -> std::io::Result<Data> {
        Ok(Data::Stream(LineReader::new(Box::new(std::io::stdin()))))
    }
}

/// What a streamed input holds next.
enum NextLine {
    /// A line (without its newline), at this range of [`LineReader::buf`].
    Line(Range<usize>),
    /// A line longer than the limit, of this many bytes, passed over.
    TooLong(u64),
    /// The input has ended.
    End,
}

/// The bytes a streamed input is read by at a time, and its buffer's size to begin with.
const CHUNK: usize = 1 << 16;

/// A streamed input, cut into lines in a buffer that holds at most the longest line allowed
/// and its newline (and never less than [`CHUNK`]): a longer line is passed over, not kept.
struct LineReader {
    src: Box<dyn Read>,
    buf: Vec<u8>,
    /// `buf[start..end]` has been read and not handed on; `buf[start..start + scanned]` holds
    /// no newline.
    start: usize,
    end: usize,
    scanned: usize,
    /// The input has ended (or failed: see `error`).
    eof: bool,
    /// No line has been handed on yet: the next may start with a byte-order mark.
    first: bool,
    /// The error that ended the input before its end.
    error: Option<std::io::Error>,
}

impl LineReader {
    fn new(src: Box<dyn Read>) -> Self {
        LineReader {
            src,
            buf: vec![0; CHUNK],
            start: 0,
            end: 0,
            scanned: 0,
            eof: false,
            first: true,
            error: None,
        }
    }

    /// The next line, of at most `max` bytes. `idle` runs before each read of the input, which
    /// may wait; where it returns false, nothing more is read (the input is taken to end).
    fn next(&mut self, max: usize, idle: &mut dyn FnMut() -> bool) -> NextLine {
        loop {
            let from = self.start + self.scanned;
            if let Some(k) = memchr::memchr(b'\n', &self.buf[from..self.end]) {
                let line = self.start..from + k;
                self.start = from + k + 1;
                self.scanned = 0;
                return self.hand_on(line, max);
            }
            self.scanned = self.end - self.start;
            if self.scanned > max {
                self.first = false;
                return NextLine::TooLong(self.pass_over_line(idle));
            }
            if self.eof {
                if self.start == self.end {
                    return NextLine::End;
                }
                let line = self.start..self.end;
                (self.start, self.scanned) = (self.end, 0);
                return self.hand_on(line, max);
            }
            self.fill(max, idle);
        }
    }

    /// A complete line, without a byte-order mark that starts the input.
    fn hand_on(&mut self, mut line: Range<usize>, max: usize) -> NextLine {
        if std::mem::take(&mut self.first) && self.buf[line.clone()].starts_with(BOM.as_bytes()) {
            line.start += BOM.len();
        }
        if line.len() > max {
            return NextLine::TooLong(line.len() as u64);
        }
        NextLine::Line(line)
    }

    /// Reads more of the input after what the buffer holds: moves the unread bytes to its
    /// start, grows it while a line of `max` bytes and its newline would not fit, runs `idle`,
    /// and reads once.
    fn fill(&mut self, max: usize, idle: &mut dyn FnMut() -> bool) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let most = max.saturating_add(1).max(CHUNK);
            let len = self.buf.len().saturating_mul(2).min(most);
            self.buf.resize(len, 0);
        }
        if !idle() {
            self.eof = true;
            return;
        }
        loop {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.error = Some(e);
                    self.eof = true;
                }
            }
            return;
        }
    }

    /// Passes over the rest of a line longer than the limit, keeping none of it, and returns
    /// its length.
    fn pass_over_line(&mut self, idle: &mut dyn FnMut() -> bool) -> u64 {
        let mut len = (self.end - self.start) as u64;
        (self.start, self.end, self.scanned) = (0, 0, 0);
        while !self.eof {
            self.fill(usize::MAX, idle);
            match memchr::memchr(b'\n', &self.buf[..self.end]) {
                Some(k) => {
                    self.start = k + 1;
                    return len + k as u64;
                }
                None => {
                    len += self.end as u64;
                    self.end = 0;
                }
            }
        }
        len
    }
}

struct Reader {
    name: String,
    path: PathBuf,
    data: Data,
    /// Where the next line of a mapped input starts.
    pos: usize,
    /// The longest line allowed, plus one: the most bytes a line's decoder sees.
    window: usize,
    line: u64,
    decoder: JsonDecoder,
    stream: u16,
    /// Whether a pattern reading this input uses arrival time (so the clock must be read).
    needs_arrival: bool,
    /// The unit of the input's numeric times, in which reports show them.
    unit: TimeUnit,
    last_ts: i64,
    /// The next event of this input, decoded in place (never moved in and out of an `Option`:
    /// moving a freshly written event costs a store-forwarding stall per line).
    head: Event,
    /// Whether `head` holds an event not yet handed on; false once the input is exhausted.
    has_head: bool,
}

/// What the merge hands on.
enum Step<'e> {
    /// The next event in time order.
    Event(&'e mut Event),
    /// The merge may be about to wait for more of a streamed input: every record written so
    /// far is to be made visible to the reader of the output. The answer is false where the
    /// output has failed, so that reading on would be in vain.
    Idle,
}

/// Runs a program over recorded inputs and writes every record, one JSON line each, to `out`.
/// `report` receives one line per problem found in the input (malformed, late or too long
/// lines). Inputs are read with the default [`ReadOptions`].
pub fn replay(
    prog: Arc<Program>,
    inputs: &[Input],
    opts: EngineOptions,
    out: &mut dyn Write,
    report: &mut dyn FnMut(&str),
) -> Result<Summary, ReplayError> {
    replay_with(prog, inputs, opts, &ReadOptions::default(), out, report)
}

/// [`replay`] with the inputs read as `read` says.
pub fn replay_with(
    prog: Arc<Program>,
    inputs: &[Input],
    opts: EngineOptions,
    read: &ReadOptions,
    out: &mut dyn Write,
    report: &mut dyn FnMut(&str),
) -> Result<Summary, ReplayError> {
    let started = Instant::now();
    let mut readers = open_inputs(&prog, inputs, read)?;
    let mut engine = Engine::new(prog.clone(), opts);
    let mut summary = Summary::default();
    let mut sink = JsonLines {
        out,
        buf: Vec::with_capacity(1 << 16),
        error: None,
    };
    // One closure for both steps, so that the event's path is the closure the merge inlines.
    merge(&mut readers, &mut summary, report, &mut |step| match step {
        Step::Event(ev) => {
            engine.process(ev, &mut sink);
            if sink.buf.len() > 1 << 16 {
                sink.flush();
            }
            true
        }
        Step::Idle => sink.flush_through(),
    });
    engine.finish(&mut sink);
    sink.flush();
    if let Some(e) = sink.error.take() {
        return Err(ReplayError::Output(e));
    }
    sink.out.flush().map_err(ReplayError::Output)?;
    read_errors(&mut readers)?;
    let st = engine.stats();
    summary.events = st.events;
    summary.matches = st.matches;
    summary.timeouts = st.timeouts;
    summary.evicted = st.evicted;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The first error that ended a streamed input early.
fn read_errors(readers: &mut [Reader]) -> Result<(), ReplayError> {
    for r in readers {
        if let Data::Stream(s) = &mut r.data {
            if let Some(source) = s.error.take() {
                return Err(ReplayError::Io {
                    path: r.path.clone(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// [`replay`] through the thread-per-core pipeline: this thread reads, decodes and routes by
/// key to `layout.shards` match shards; a sink thread writes the records to `out`. The set of
/// records is the same as [`replay`]'s; their order across keys may differ.
pub fn replay_sharded(
    prog: Arc<Program>,
    inputs: &[Input],
    opts: EngineOptions,
    layout: Layout,
    out: Box<dyn Write + Send>,
    report: &mut dyn FnMut(&str),
) -> Result<(Summary, PipelineReport), ReplayError> {
    replay_sharded_with(
        prog,
        inputs,
        opts,
        &ReadOptions::default(),
        layout,
        out,
        report,
    )
}

/// [`replay_sharded`] with the inputs read as `read` says.
pub fn replay_sharded_with(
    prog: Arc<Program>,
    inputs: &[Input],
    opts: EngineOptions,
    read: &ReadOptions,
    layout: Layout,
    out: Box<dyn Write + Send>,
    report: &mut dyn FnMut(&str),
) -> Result<(Summary, PipelineReport), ReplayError> {
    let started = Instant::now();
    let mut readers = open_inputs(&prog, inputs, read)?;
    let error: Arc<Mutex<Option<std::io::Error>>> = Arc::default();
    let sink = RecordWriter {
        out: std::io::BufWriter::with_capacity(1 << 16, out),
        buf: Vec::with_capacity(256),
        error: error.clone(),
    };
    let mut pipeline = Pipeline::start_with_sink(prog.clone(), layout, opts, sink)
        .map_err(|e| ReplayError::Streams(e.to_string()))?;
    let mut summary = Summary::default();
    let mut barriers = 0u64;
    merge(&mut readers, &mut summary, report, &mut |step| match step {
        Step::Event(ev) => {
            // The event moves to its shard; the reader decodes the next line into storage that
            // a shard has finished with.
            let spare = pipeline.spare_event();
            pipeline.push(std::mem::replace(ev, spare));
            true
        }
        Step::Idle => {
            // A barrier through every shard: the sink flushes its output when it arrives, after
            // every record of the events pushed before it.
            barriers += 1;
            pipeline.barrier(barriers, false);
            error.lock().map(|e| e.is_none()).unwrap_or(false)
        }
    });
    let pr = pipeline.finish();
    if let Some(e) = error.lock().ok().and_then(|mut e| e.take()) {
        return Err(ReplayError::Output(e));
    }
    read_errors(&mut readers)?;
    summary.events = pr.events;
    summary.matches = pr.engine.matches;
    summary.timeouts = pr.engine.timeouts;
    summary.evicted = pr.engine.evicted;
    summary.elapsed = started.elapsed();
    Ok((summary, pr))
}

/// Writes records as JSON lines from the sink thread; keeps the first write error.
struct RecordWriter {
    out: std::io::BufWriter<Box<dyn Write + Send>>,
    buf: Vec<u8>,
    error: Arc<Mutex<Option<std::io::Error>>>,
}

impl RecordWriter {
    fn write(&mut self, r: &OwnedRecord) {
        self.buf.clear();
        r.write_json(&mut self.buf);
        self.buf.push(b'\n');
        if let Err(e) = self.out.write_all(&self.buf) {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: std::io::Error) {
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(e);
        }
    }
}

impl Sink for RecordWriter {
    fn record(&mut self, _shard: usize, r: &OwnedRecord) {
        self.write(r);
    }

    /// The replay sends barriers before it waits for a streamed input: what has been written
    /// becomes visible to the reader of the output.
    fn barrier(&mut self, _b: Barrier) {
        if let Err(e) = self.out.flush() {
            self.fail(e);
        }
    }
}

impl Drop for RecordWriter {
    fn drop(&mut self) {
        if let Err(e) = self.out.flush() {
            self.fail(e);
        }
    }
}

/// Hands every good event of the inputs to `f`, merged by event time, stable by input order.
fn merge(
    readers: &mut [Reader],
    summary: &mut Summary,
    report: &mut dyn FnMut(&str),
    f: &mut impl FnMut(Step<'_>) -> bool,
) {
    let clock = ArrivalClock::new();
    for r in readers.iter_mut() {
        advance(r, &clock, summary, report, f);
    }
    loop {
        // The next event: earliest time, then earliest input.
        let mut best: Option<usize> = None;
        for (i, r) in readers.iter().enumerate() {
            if r.has_head && best.is_none_or(|b| r.head.ts < readers[b].head.ts) {
                best = Some(i);
            }
        }
        let Some(i) = best else { break };
        f(Step::Event(&mut readers[i].head));
        // The next line of the same file is decoded into the same storage.
        advance(&mut readers[i], &clock, summary, report, f);
    }
}

fn open_inputs(
    prog: &Program,
    inputs: &[Input],
    read: &ReadOptions,
) -> Result<Vec<Reader>, ReplayError> {
    let stdin = inputs.iter().filter(|i| i.path == Path::new(STDIN)).count();
    if stdin > 1 {
        return Err(ReplayError::Streams(format!(
            "standard input (`{STDIN}`) is given as {stdin} inputs; it can be read as one only"
        )));
    }
    let mut readers = Vec::new();
    for inp in inputs {
        let stream = match &inp.stream {
            Some(s) => prog.streams.iter().position(|x| x == s).ok_or_else(|| {
                ReplayError::Streams(format!(
                    "no loaded pattern reads stream `{s}` (given for {}); the patterns read: {}",
                    inp.path.display(),
                    prog.streams.join(", ")
                ))
            })?,
            None if prog.streams.len() == 1 => 0,
            None => {
                return Err(ReplayError::Streams(format!(
                    "name the stream of {}: the patterns read {}, so write --input STREAM={}",
                    inp.path.display(),
                    prog.streams.join(", "),
                    inp.path.display()
                )))
            }
        };
        let time_slot = prog.time_slots.get(stream).copied().flatten();
        let needs_arrival = time_slot.is_none()
            || prog
                .patterns
                .iter()
                .any(|p| !p.event_time && p.reads.get(stream).copied().unwrap_or(false));
        let data = Data::open(&inp.path)?;
        readers.push(Reader {
            name: if inp.path == Path::new(STDIN) {
                "stdin".to_string()
            } else {
                inp.path.display().to_string()
            },
            path: inp.path.clone(),
            pos: match &data {
                Data::Map(map) if map.starts_with(BOM.as_bytes()) => BOM.len(),
                _ => 0,
            },
            data,
            window: read.max_line_bytes.saturating_add(1),
            line: 0,
            decoder: JsonDecoder::new(&prog.fields, time_slot, prog.unit),
            stream: stream as u16,
            needs_arrival,
            unit: prog.unit,
            last_ts: i64::MIN,
            head: Event::with_slots(prog.fields.len()),
            has_head: false,
        });
    }
    Ok(readers)
}

/// Decodes the next good line of a reader into its head (reusing the head's storage).
fn advance(
    r: &mut Reader,
    clock: &ArrivalClock,
    summary: &mut Summary,
    report: &mut dyn FnMut(&str),
    f: &mut impl FnMut(Step<'_>) -> bool,
) {
    r.has_head = false;
    if !matches!(r.data, Data::Map(_)) {
        return advance_streamed(r, clock, summary, report, f);
    }
    let ev = &mut r.head;
    let bytes: &[u8] = match &r.data {
        Data::Map(map) => map,
        Data::Stream(_) => &[],
    };
    while r.pos < bytes.len() {
        let rest = &bytes[r.pos..];
        r.line += 1;
        let arrival = if r.needs_arrival { clock.now() } else { 0 };
        prefetch_input(rest);
        // The decoder sees at most one byte past the limit, so that a line over it is never
        // decoded whole: it ends the decoder's input early (an error, or a length past the
        // limit).
        let window = &rest[..rest.len().min(r.window)];
        let decoded = r.decoder.decode_line(window, arrival, ev);
        let len = match &decoded {
            Ok((len, _)) => *len,
            // The line is malformed: find its end to skip it.
            Err(_) => memchr::memchr(b'\n', rest).unwrap_or(rest.len()),
        };
        if len >= r.window {
            // Past the limit (where the decoder stopped at the window's end, the line's end is
            // further on).
            let len = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
            r.pos += len + 1;
            too_long(&r.name, r.line, len as u64, r.window - 1, summary, report);
            continue;
        }
        r.pos += len + 1;
        match decoded {
            Ok((_, false)) => continue, // a blank line
            Ok((_, true)) => {
                if ev.ts < r.last_ts {
                    late(
                        r.name.as_str(),
                        r.line,
                        r.unit,
                        ev.ts,
                        r.last_ts,
                        summary,
                        report,
                    );
                    continue;
                }
                r.last_ts = ev.ts;
                ev.stream = r.stream;
                r.has_head = true;
                return;
            }
            Err(e) => {
                summary.malformed += 1;
                report(&format!(
                    "{}:{}: malformed event, {e}; line skipped",
                    r.name, r.line
                ));
            }
        }
    }
}

/// [`advance`] for a streamed input: lines are decoded as they complete, and `f` is told
/// ([`Step::Idle`]) before each read that may wait.
#[inline(never)]
fn advance_streamed(
    r: &mut Reader,
    clock: &ArrivalClock,
    summary: &mut Summary,
    report: &mut dyn FnMut(&str),
    f: &mut impl FnMut(Step<'_>) -> bool,
) {
    let max = r.window - 1;
    let Data::Stream(src) = &mut r.data else {
        return;
    };
    loop {
        let line = match src.next(max, &mut || f(Step::Idle)) {
            NextLine::End => return,
            NextLine::TooLong(len) => {
                r.line += 1;
                too_long(&r.name, r.line, len, max, summary, report);
                continue;
            }
            NextLine::Line(line) => line,
        };
        r.line += 1;
        let arrival = if r.needs_arrival { clock.now() } else { 0 };
        match r.decoder.decode_line(&src.buf[line], arrival, &mut r.head) {
            Ok((_, false)) => continue,
            Ok((_, true)) => {
                if r.head.ts < r.last_ts {
                    let ts = r.head.ts;
                    late(
                        r.name.as_str(),
                        r.line,
                        r.unit,
                        ts,
                        r.last_ts,
                        summary,
                        report,
                    );
                    continue;
                }
                r.last_ts = r.head.ts;
                r.head.stream = r.stream;
                r.has_head = true;
                return;
            }
            Err(e) => {
                summary.malformed += 1;
                report(&format!(
                    "{}:{}: malformed event, {e}; line skipped",
                    r.name, r.line
                ));
            }
        }
    }
}

/// Counts and reports a line longer than the limit.
#[cold]
#[inline(never)]
fn too_long(
    name: &str,
    line: u64,
    len: u64,
    max: usize,
    summary: &mut Summary,
    report: &mut dyn FnMut(&str),
) {
    summary.malformed += 1;
    report(&format!(
        "{name}:{line}: the line is {len} bytes long, over the limit of {max} bytes \
         (--max-line-bytes); line skipped"
    ));
}

/// Counts and reports an event earlier than the one before it in its input.
#[cold]
#[inline(never)]
fn late(
    name: &str,
    line: u64,
    unit: TimeUnit,
    ts: i64,
    last_ts: i64,
    summary: &mut Summary,
    report: &mut dyn FnMut(&str),
) {
    summary.late += 1;
    let (at, before) = (unit.from_nanos(ts), unit.from_nanos(last_ts));
    report(&format!(
        "{name}:{line}: event time goes backwards ({at} {unit} after {before} {unit}); each input must be in time order, line skipped",
        unit = unit.symbol()
    ));
}

/// Asks for the input a few dozen lines ahead with the non-temporal hint: the bytes are read
/// once, and brought in this way they displace less of the engine's state from the caches than
/// the hardware prefetcher's copies would (measured in BENCHMARKS.md: `within 1s` +5.5%).
// HOT PATH: once per line.
#[inline(always)]
fn prefetch_input(rest: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_NTA};
        let ahead = rest.as_ptr().wrapping_add(4096);
        // SAFETY: a prefetch is a hint: it never faults, whatever the address, and SSE is
        // part of the x86_64 baseline.
        unsafe {
            _mm_prefetch::<_MM_HINT_NTA>(ahead as *const i8);
            _mm_prefetch::<_MM_HINT_NTA>(ahead.wrapping_add(64) as *const i8);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = rest;
}

/// Arrival time for streams without a time field: the wall clock, made monotonic.
struct ArrivalClock {
    base: i64,
    started: Instant,
}

impl ArrivalClock {
    fn new() -> Self {
        let base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        ArrivalClock {
            base,
            started: Instant::now(),
        }
    }
    fn now(&self) -> i64 {
        self.base + self.started.elapsed().as_nanos() as i64
    }
}

/// Writes records as JSON lines.
pub struct JsonLines<'w> {
    out: &'w mut dyn Write,
    buf: Vec<u8>,
    error: Option<std::io::Error>,
}

impl JsonLines<'_> {
    fn flush(&mut self) {
        if self.error.is_none() {
            if let Err(e) = self.out.write_all(&self.buf) {
                self.error = Some(e);
            }
        }
        self.buf.clear();
    }
}

impl JsonLines<'_> {
    /// Writes what is buffered and flushes the output; returns whether no write has failed.
    fn flush_through(&mut self) -> bool {
        self.flush();
        if self.error.is_none() {
            if let Err(e) = self.out.flush() {
                self.error = Some(e);
            }
        }
        self.error.is_none()
    }
}

impl Output for JsonLines<'_> {
    fn record(&mut self, r: &Record<'_>) {
        r.write_json(&mut self.buf);
        self.buf.push(b'\n');
    }
}
