//! The thread-per-core pipeline: source+parse on the calling thread, match shards, a sink,
//! connected by the rings of [`crate::ring`].
//!
//! ```text
//!  caller ── push(event) ──► route by key ──ring──► shard 0..N (engine) ──ring──► sink ──► output
//! ```
//!
//! Each shard owns the keys that [`crate::engine::shard_of`] gives it, so one key's events stay
//! in order on one thread and its state is touched by that thread only. The source also sends
//! every shard the time as it advances, so that a shard whose keys have gone quiet still closes
//! their windows. A full ring stops the stage before it (the time spent waiting is counted as
//! back-pressure); nothing is dropped. [`Pipeline::finish`] drains every ring in order, closes
//! every window (the end of the input) and flushes the sink.
//!
//! ```
//! use kairos::compile::{compile, CompileOptions, Source};
//! use kairos::pipeline::{Layout, Pipeline};
//! use std::sync::{Arc, Mutex};
//!
//! let text = "pattern pair\n  from s\n  key user\n  time ts\n  match a -> b\n  emit out { n: 1 }\n";
//! let program = Arc::new(compile(&[Source { file: "p.cep", text }], &CompileOptions::default()).unwrap());
//! let seen = Arc::new(Mutex::new(0));
//! let counter = seen.clone();
//! let mut pipeline = Pipeline::start(program, Layout::for_machine(2, 2), move |_r| {
//!     *counter.lock().unwrap() += 1;
//! })
//! .unwrap();
//! for (i, user) in ["a", "b", "a", "b"].iter().enumerate() {
//!     let line = format!(r#"{{"user":"{user}","ts":{i}}}"#);
//!     pipeline.push_json("s", line.as_bytes()).unwrap();
//! }
//! let report = pipeline.finish();
//! assert_eq!(*seen.lock().unwrap(), 2);
//! assert_eq!(report.events, 4);
//! ```

mod layout;

pub use layout::{available_cores, Layout, LayoutError};

use crate::compile::Program;
use crate::engine::{key_of, shard_of, Engine, EngineOptions, EngineStats, OwnedRecord, Record};
use crate::event::{DecodeError, Event, JsonDecoder, Value};
use crate::ring::{ring, Consumer, Producer, WaitStrategy, Waiter};
use hdrhistogram::Histogram;
use smallvec::SmallVec;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

/// Nanoseconds on a process-wide monotonic clock: stamps an event when it enters the pipeline.
pub fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// What travels from the source to a shard.
enum ToShard {
    /// An event, the time it entered the pipeline, and the patterns whose keys this shard owns
    /// for it (bit `i` for pattern `i`; `ALL_PATTERNS` when there are more than 64 patterns and
    /// the shard checks ownership itself).
    Event(Event, u64, u64),
    /// Time has reached (event time, arrival time): close the windows it passes.
    Tick(i64, i64),
}

/// The pattern mask that tells a shard to check key ownership itself.
const ALL_PATTERNS: u64 = u64::MAX;

/// What travels from a shard to the sink: a record and the time its event entered.
struct ToSink(OwnedRecord, u64);

/// Latency (ns) from entering the pipeline to leaving a stage, recorded by the stage's own
/// thread without locks and merged at the end.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds are valid")
}

/// What a pipeline did: counters and per-stage latency.
#[derive(Debug, Clone)]
pub struct Report {
    /// Events pushed.
    pub events: u64,
    /// Records written.
    pub records: u64,
    /// The engines' counters, summed over the shards (`events` there counts per shard).
    pub engine: EngineStats,
    /// Time the source spent waiting on full shard rings (back-pressure), ns.
    pub source_backpressure_ns: u64,
    /// Time the shards spent waiting on a full sink ring, ns.
    pub shard_backpressure_ns: u64,
    /// Entering the pipeline to being taken off a shard's ring (routing plus the ring hop,
    /// including any queueing), per event, ns.
    pub ring_latency: Histogram<u64>,
    /// Entering the pipeline to leaving a match shard, per event, ns.
    pub match_latency: Histogram<u64>,
    /// Entering the pipeline (the completing event) to the record reaching the output, ns.
    pub sink_latency: Histogram<u64>,
}

/// A failure to start a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid layout: {0}")]
    Layout(#[from] LayoutError),
    #[error("cannot start a pipeline thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// An input the pipeline could not take.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("no loaded pattern reads stream `{0}`")]
    UnknownStream(String),
    #[error("malformed event: {0}")]
    Decode(#[from] DecodeError),
}

struct ShardOut {
    stats: EngineStats,
    latency: Histogram<u64>,
    ring_latency: Histogram<u64>,
    backpressure_ns: u64,
    records: u64,
    fused_latency: Option<Histogram<u64>>,
}

struct SinkOut {
    records: u64,
    latency: Histogram<u64>,
}

/// A running pipeline; the embedded entry point.
pub struct Pipeline {
    prog: Arc<Program>,
    shards: Vec<Producer<ToShard>>,
    /// Events the shards are done with, coming back for their storage to be reused: an event
    /// crossing to a shard then costs no allocation on this thread and no free on that one.
    returned: Vec<Consumer<Event>>,
    next_return: usize,
    shard_threads: Vec<JoinHandle<ShardOut>>,
    sink_thread: Option<JoinHandle<SinkOut>>,
    waiter: Waiter,
    decoders: Vec<JsonDecoder>,
    scratch: Event,
    /// The shards an event goes to, each with the mask of patterns routed there.
    targets: SmallVec<[(usize, u64); 4]>,
    events: u64,
    backpressure_ns: u64,
    /// The last time sent to the shards: (event time, arrival time).
    ticked: (i64, i64),
}

fn pin(core: Option<usize>) {
    static CORES: OnceLock<Vec<core_affinity::CoreId>> = OnceLock::new();
    let ids = CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default());
    if let Some(id) = core.and_then(|c| ids.get(c)) {
        core_affinity::set_for_current(*id);
    }
}

/// Time between ticks sent to every shard: bounds how late a quiet shard closes a window.
const TICK_NS: i64 = 1_000_000;

impl Pipeline {
    /// Starts the shard and sink threads. `output` receives every record, on the sink thread
    /// (or on the shard's thread when the sink is fused).
    pub fn start(
        prog: Arc<Program>,
        layout: Layout,
        output: impl FnMut(&OwnedRecord) + Send + 'static,
    ) -> Result<Pipeline, StartError> {
        Pipeline::start_with(prog, layout, EngineOptions::default(), output)
    }

    pub fn start_with(
        prog: Arc<Program>,
        layout: Layout,
        opts: EngineOptions,
        output: impl FnMut(&OwnedRecord) + Send + 'static,
    ) -> Result<Pipeline, StartError> {
        layout.validate()?;
        // Read the cores before any thread is pinned (a pinned thread passes its mask on).
        pin(None);
        pin(layout.source_core);
        let parks = |w: WaitStrategy| matches!(w, WaitStrategy::Park { .. });
        let fused = layout.fuse_sink && layout.shards == 1;
        let mut to_shards = Vec::new();
        let mut returned = Vec::new();
        let mut shard_threads = Vec::new();
        let mut to_sink = Vec::new();
        let mut output = Some(output);
        for i in 0..layout.shards {
            let (tx, rx) = ring::<ToShard>(
                layout.ring_capacity,
                parks(layout.source_wait),
                parks(layout.shard_wait),
            );
            to_shards.push(tx);
            let (back_tx, back_rx) = ring::<Event>(layout.ring_capacity, false, false);
            returned.push(back_rx);
            let sink = if fused {
                ShardSink::Fused(Box::new(output.take().expect("one fused shard")))
            } else {
                let (stx, srx) = ring::<ToSink>(
                    layout.ring_capacity,
                    parks(layout.shard_wait),
                    parks(layout.sink_wait),
                );
                to_sink.push(srx);
                ShardSink::Ring(stx)
            };
            let engine = Engine::for_shard(prog.clone(), opts.clone(), i, layout.shards);
            let core = layout.shard_cores[i];
            let wait = layout.shard_wait;
            shard_threads.push(
                std::thread::Builder::new()
                    .name(format!("kairos-shard-{i}"))
                    .spawn(move || run_shard(engine, rx, back_tx, sink, core, wait))?,
            );
        }
        let sink_thread = if fused {
            None
        } else {
            let mut out = output.take().expect("the output goes to the sink");
            let core = layout.sink_core;
            let wait = layout.sink_wait;
            Some(
                std::thread::Builder::new()
                    .name("kairos-sink".into())
                    .spawn(move || run_sink(to_sink, &mut out, core, wait))?,
            )
        };
        let decoders = (0..prog.streams.len())
            .map(|s| JsonDecoder::new(&prog.fields, prog.time_slots[s], prog.unit))
            .collect();
        Ok(Pipeline {
            scratch: Event::with_slots(prog.fields.len()),
            prog,
            shards: to_shards,
            returned,
            next_return: 0,
            shard_threads,
            sink_thread,
            waiter: Waiter::new(layout.source_wait),
            decoders,
            targets: SmallVec::new(),
            events: 0,
            backpressure_ns: 0,
            ticked: (i64::MIN, i64::MIN),
        })
    }

    pub fn program(&self) -> &Arc<Program> {
        &self.prog
    }

    /// Storage for the next event: one the shards have finished with, or a new one. Fill it
    /// (a decoder resets every slot) and [`Pipeline::push`] it.
    pub fn spare_event(&mut self) -> Event {
        let n = self.returned.len();
        for k in 0..n {
            let i = (self.next_return + k) % n;
            if let Some(ev) = self.returned[i].try_pop() {
                self.next_return = i;
                return ev;
            }
        }
        Event::with_slots(self.prog.fields.len())
    }

    /// Pushes a parsed event (its `stream`, `ts`, `arrival` and slots set as the program's
    /// decoders set them), waiting while the shard that owns it is full.
    // HOT PATH: the parse stage's routing.
    pub fn push(&mut self, ev: Event) {
        self.push_at(ev, now_ns());
    }

    /// [`Pipeline::push`] with the time (on [`now_ns`]'s clock) the event is taken to have
    /// entered: a load generator passes the time it meant to send the event, so that a stall is
    /// counted in the latency rather than hidden (open loop, no coordinated omission).
    pub fn push_at(&mut self, mut ev: Event, t0: u64) {
        // Routing reads key fields: an event built by hand with too few slots gets nulls.
        if ev.slots.len() < self.prog.fields.len() {
            ev.slots.resize(self.prog.fields.len(), Value::Null);
        }
        self.events += 1;
        self.route(&ev);
        let n = self.targets.len();
        let targets = std::mem::take(&mut self.targets);
        let mut ev = Some(ev);
        for (k, &(s, patterns)) in targets.iter().enumerate() {
            let e = if k + 1 == n {
                ev.take().expect("the last target takes the event")
            } else {
                ev.as_ref().expect("kept for the last target").clone()
            };
            self.send(s, ToShard::Event(e, t0, patterns));
        }
        // An event that no pattern reads has no target and ends here; `route` has still
        // moved the shards' time on.
        self.targets = targets;
    }

    /// Decodes one JSON object of `stream` and pushes it.
    pub fn push_json(&mut self, stream: &str, line: &[u8]) -> Result<(), PushError> {
        let sid = self
            .prog
            .streams
            .iter()
            .position(|s| s == stream)
            .ok_or_else(|| PushError::UnknownStream(stream.to_string()))?;
        let mut ev = std::mem::take(&mut self.scratch);
        let arrival = now_ns() as i64;
        let r = self.decoders[sid].decode(line, arrival, &mut ev);
        if let Err(e) = r {
            self.scratch = ev;
            return Err(e.into());
        }
        ev.stream = sid as u16;
        self.scratch = self.spare_event();
        self.push(ev);
        Ok(())
    }

    /// The shards that own `ev`'s key in some pattern that reads its stream, and ticks when time
    /// has moved on.
    fn route(&mut self, ev: &Event) {
        self.targets.clear();
        let count = self.shards.len();
        let many = self.prog.patterns.len() > 64;
        for (pi, p) in self.prog.patterns.iter().enumerate() {
            if !p.reads.get(ev.stream as usize).copied().unwrap_or(false) {
                continue;
            }
            let s = if count == 1 {
                0
            } else {
                shard_of(&key_of(p, &self.prog, ev), count)
            };
            let bit = if many { ALL_PATTERNS } else { 1 << pi };
            match self.targets.iter_mut().find(|t| t.0 == s) {
                Some(t) => t.1 |= bit,
                None => self.targets.push((s, bit)),
            }
        }
        let (t, a) = self.ticked;
        if ev.ts >= t.saturating_add(TICK_NS) || ev.arrival >= a.saturating_add(TICK_NS) {
            self.ticked = (ev.ts.max(t), ev.arrival.max(a));
            let (ts, arrival) = self.ticked;
            for s in 0..count {
                if !self.targets.iter().any(|t| t.0 == s) {
                    self.send(s, ToShard::Tick(ts, arrival));
                }
            }
        }
    }

    fn send(&mut self, shard: usize, msg: ToShard) {
        let tx = &mut self.shards[shard];
        if let Err(msg) = tx.try_push(msg) {
            let t0 = Instant::now();
            // The shard threads live until `finish`: a failed push means one has died.
            let r = tx.push(msg, &mut self.waiter);
            self.backpressure_ns += t0.elapsed().as_nanos() as u64;
            if r.is_err() {
                panic!("a pipeline shard thread has stopped");
            }
        }
    }

    /// Ends the input: every ring is drained in order, every window closes, every record is
    /// written. Returns what the pipeline did.
    pub fn finish(self) -> Report {
        let Pipeline {
            shards,
            shard_threads,
            sink_thread,
            events,
            backpressure_ns,
            ..
        } = self;
        drop(shards);
        let mut report = Report {
            events,
            records: 0,
            engine: EngineStats::default(),
            source_backpressure_ns: backpressure_ns,
            shard_backpressure_ns: 0,
            ring_latency: histogram(),
            match_latency: histogram(),
            sink_latency: histogram(),
        };
        for t in shard_threads {
            let out = t.join().expect("a shard thread panicked");
            report.engine.events += out.stats.events;
            report.engine.matches += out.stats.matches;
            report.engine.timeouts += out.stats.timeouts;
            report.engine.evicted += out.stats.evicted;
            report.shard_backpressure_ns += out.backpressure_ns;
            report.records += out.records;
            let _ = report.match_latency.add(&out.latency);
            let _ = report.ring_latency.add(&out.ring_latency);
            if let Some(h) = out.fused_latency {
                let _ = report.sink_latency.add(&h);
            }
        }
        if let Some(t) = sink_thread {
            let out = t.join().expect("the sink thread panicked");
            report.records = out.records;
            let _ = report.sink_latency.add(&out.latency);
        }
        report
    }
}

enum ShardSink {
    Ring(Producer<ToSink>),
    Fused(Box<dyn FnMut(&OwnedRecord) + Send>),
}

/// The match shard: runs its engine over the events routed to it.
fn run_shard(
    mut engine: Engine,
    mut rx: Consumer<ToShard>,
    mut back: Producer<Event>,
    mut sink: ShardSink,
    core: Option<usize>,
    wait: WaitStrategy,
) -> ShardOut {
    pin(core);
    let mut latency = histogram();
    let mut ring_latency = histogram();
    let mut fused_latency = matches!(sink, ShardSink::Fused(_)).then(histogram);
    let mut records = 0u64;
    let mut backpressure_ns = 0u64;
    let mut waiter = Waiter::new(wait);
    let mut sink_waiter = Waiter::new(wait);
    // When the event being processed entered the pipeline (read by the record callback).
    let current_ingress = std::cell::Cell::new(0u64);
    {
        let mut out = |r: &Record<'_>| {
            records += 1;
            match &mut sink {
                ShardSink::Fused(f) => {
                    f(&r.to_owned());
                    if let Some(h) = fused_latency.as_mut() {
                        let _ = h.record(now_ns().saturating_sub(current_ingress.get()).max(1));
                    }
                }
                ShardSink::Ring(tx) => {
                    let msg = ToSink(r.to_owned(), current_ingress.get());
                    if let Err(msg) = tx.try_push(msg) {
                        let t0 = Instant::now();
                        let _ = tx.push(msg, &mut sink_waiter);
                        backpressure_ns += t0.elapsed().as_nanos() as u64;
                    }
                }
            }
        };
        while let Some(msg) = rx.pop(&mut waiter) {
            match msg {
                ToShard::Event(mut ev, t0, patterns) => {
                    current_ingress.set(t0);
                    let _ = ring_latency.record(now_ns().saturating_sub(t0).max(1));
                    if patterns == ALL_PATTERNS {
                        engine.process(&mut ev, &mut out);
                    } else {
                        engine.process_routed(&mut ev, patterns, &mut out);
                    }
                    let _ = latency.record(now_ns().saturating_sub(t0).max(1));
                    // Back to the source for reuse; when its return ring is full, freed here.
                    let _ = back.try_push(ev);
                }
                ToShard::Tick(ts, arrival) => {
                    current_ingress.set(now_ns());
                    engine.advance_clocks(ts, arrival, &mut out);
                }
            }
        }
        // The end of the input: every window closes.
        current_ingress.set(now_ns());
        engine.finish(&mut out);
    }
    ShardOut {
        stats: engine.stats(),
        latency,
        ring_latency,
        backpressure_ns,
        records,
        fused_latency,
    }
}

/// The sink: merges the shards' records into the output.
fn run_sink(
    mut rings: Vec<Consumer<ToSink>>,
    output: &mut dyn FnMut(&OwnedRecord),
    core: Option<usize>,
    wait: WaitStrategy,
) -> SinkOut {
    pin(core);
    let mut latency = histogram();
    let mut records = 0u64;
    let mut waiter = Waiter::new(wait);
    while !rings.is_empty() {
        let mut got = 0;
        for rx in rings.iter_mut() {
            got += rx.pop_batch(256, |ToSink(rec, t0)| {
                output(&rec);
                records += 1;
                let _ = latency.record(now_ns().saturating_sub(t0).max(1));
            });
        }
        if got == 0 {
            rings.retain_mut(|rx| !rx.is_finished());
            if waiter.step() == crate::ring::wait::Step::Park {
                std::thread::sleep(crate::ring::wait::PARK_TIMEOUT);
                waiter.reset();
            }
        } else {
            waiter.reset();
        }
    }
    SinkOut { records, latency }
}
