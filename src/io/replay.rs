//! `kairos replay`: runs patterns over recorded JSON-lines files, merged by event time.
//!
//! Each file is read through a memory map and decoded line by line; several files are merged by
//! event time, stable by the order the files were given. A line that cannot be decoded is
//! reported with its file and line and skipped; it never stops the run.

use crate::compile::Program;
use crate::engine::{Engine, EngineOptions, Output, OwnedRecord, Record};
use crate::event::{Event, JsonDecoder, TimeUnit};
use crate::pipeline::{Layout, Pipeline, Report as PipelineReport};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One recorded input: a file and the stream its events belong to.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub stream: Option<String>,
    pub path: PathBuf,
}

impl Input {
    /// Parses `STREAM=FILE` or `FILE`.
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

/// The bytes of a file: mapped where possible.
enum Data {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Data {
    fn open(path: &Path) -> Result<Data, ReplayError> {
        let io = |source| ReplayError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 || !file.metadata().map_err(io)?.is_file() {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut &file, &mut v).map_err(io)?;
            return Ok(Data::Owned(v));
        }
        // SAFETY: the map is read-only and lives as long as the replay; a file truncated by
        // another process while mapped is outside what a replay of a recorded file supports.
        // Populated up front: a replay reads every page once, in order, and faulting them in one
        // by one costs more than the read itself.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(io)?;
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(Data::Map(map))
    }
    fn bytes(&self) -> &[u8] {
        match self {
            Data::Map(m) => m,
            Data::Owned(v) => v,
        }
    }
}

struct Reader {
    name: String,
    data: Data,
    pos: usize,
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

/// Runs a program over recorded inputs and writes every record, one JSON line each, to `out`.
/// `report` receives one line per problem found in the input (malformed or late lines).
pub fn replay(
    prog: Arc<Program>,
    inputs: &[Input],
    opts: EngineOptions,
    out: &mut dyn Write,
    report: &mut dyn FnMut(&str),
) -> Result<Summary, ReplayError> {
    let started = Instant::now();
    let mut readers = open_inputs(&prog, inputs)?;
    let mut engine = Engine::new(prog.clone(), opts);
    let mut summary = Summary::default();
    let mut sink = JsonLines {
        out,
        buf: Vec::with_capacity(1 << 16),
        error: None,
    };
    merge(&mut readers, &mut summary, report, |ev| {
        engine.process(ev, &mut sink);
        if sink.buf.len() > 1 << 16 {
            sink.flush();
        }
    });
    engine.finish(&mut sink);
    sink.flush();
    if let Some(e) = sink.error.take() {
        return Err(ReplayError::Output(e));
    }
    sink.out.flush().map_err(ReplayError::Output)?;
    let st = engine.stats();
    summary.events = st.events;
    summary.matches = st.matches;
    summary.timeouts = st.timeouts;
    summary.evicted = st.evicted;
    summary.elapsed = started.elapsed();
    Ok(summary)
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
    let started = Instant::now();
    let mut readers = open_inputs(&prog, inputs)?;
    let error: Arc<Mutex<Option<std::io::Error>>> = Arc::default();
    let mut sink = RecordWriter {
        out: std::io::BufWriter::with_capacity(1 << 16, out),
        buf: Vec::with_capacity(256),
        error: error.clone(),
    };
    let mut pipeline = Pipeline::start_with(prog.clone(), layout, opts, move |r| sink.write(r))
        .map_err(|e| ReplayError::Streams(e.to_string()))?;
    let mut summary = Summary::default();
    merge(&mut readers, &mut summary, report, |ev| {
        // The event moves to its shard; the reader decodes the next line into storage that a
        // shard has finished with.
        let spare = pipeline.spare_event();
        pipeline.push(std::mem::replace(ev, spare));
    });
    let pr = pipeline.finish();
    if let Some(e) = error.lock().ok().and_then(|mut e| e.take()) {
        return Err(ReplayError::Output(e));
    }
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
    mut f: impl FnMut(&mut Event),
) {
    let clock = ArrivalClock::new();
    for r in readers.iter_mut() {
        advance(r, &clock, summary, report);
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
        f(&mut readers[i].head);
        // The next line of the same file is decoded into the same storage.
        advance(&mut readers[i], &clock, summary, report);
    }
}

fn open_inputs(prog: &Program, inputs: &[Input]) -> Result<Vec<Reader>, ReplayError> {
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
        readers.push(Reader {
            name: inp.path.display().to_string(),
            data: Data::open(&inp.path)?,
            pos: 0,
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
) {
    r.has_head = false;
    let ev = &mut r.head;
    let bytes = r.data.bytes();
    while r.pos < bytes.len() {
        let rest = &bytes[r.pos..];
        r.line += 1;
        let arrival = if r.needs_arrival { clock.now() } else { 0 };
        prefetch_input(rest);
        let decoded = r.decoder.decode_line(rest, arrival, ev);
        let len = match &decoded {
            Ok((len, _)) => *len,
            // The line is malformed: find its end to skip it.
            Err(_) => memchr::memchr(b'\n', rest).unwrap_or(rest.len()),
        };
        r.pos += len + 1;
        match decoded {
            Ok((_, false)) => continue, // a blank line
            Ok((_, true)) => {
                if ev.ts < r.last_ts {
                    summary.late += 1;
                    let (at, before) = (r.unit.from_nanos(ev.ts), r.unit.from_nanos(r.last_ts));
                    report(&format!(
                        "{}:{}: event time goes backwards ({at} {unit} after {before} {unit}); each input must be in time order, line skipped",
                        r.name, r.line, unit = r.unit.symbol()
                    ));
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

impl Output for JsonLines<'_> {
    fn record(&mut self, r: &Record<'_>) {
        r.write_json(&mut self.buf);
        self.buf.push(b'\n');
    }
}
