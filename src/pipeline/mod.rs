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

mod clock;
mod layout;

pub use clock::now_ns;
pub use layout::{available_cores, Layout, LayoutError};

use crate::compile::Program;
use crate::engine::{
    key_of, shard_of, Engine, EngineOptions, EngineState, EngineStats, OwnedRecord, Record,
};
use crate::event::{DecodeError, Event, JsonDecoder, Value};
use crate::metrics::{PipelineMetrics, ShardMetrics};
use crate::ring::{ring, Consumer, Producer, WaitStrategy, Waiter};
use hdrhistogram::Histogram;
use smallvec::SmallVec;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

/// What travels from the source to a shard.
enum ToShard {
    /// An event, the time it entered the pipeline, and the patterns whose keys this shard owns
    /// for it (bit `i` for pattern `i`; `ALL_PATTERNS` when there are more than 64 patterns and
    /// the shard checks ownership itself).
    Event(Event, u64, u64),
    /// Time has reached (event time, arrival time): close the windows it passes.
    Tick(i64, i64),
    /// Work off the hot path, in order with the events.
    Control(Control),
}

/// Requests to the shards that travel in order with the events.
enum Control {
    /// Everything before this point is in the shard's state: pass the barrier on to the sink,
    /// with the state when `snapshot` is set.
    Barrier { id: u64, snapshot: bool },
    /// Replace the shard's state (before any event).
    Restore(Box<EngineState>),
    /// Forget the keys last seen from these origins.
    DropOrigins(Arc<[u32]>),
    /// Stop without closing the windows (a daemon shutting down, not the end of the input).
    Halt,
}

/// A checkpoint barrier as it reaches the sink from one shard: every record the shard produced
/// for events pushed before [`Pipeline::barrier`] has already reached the sink.
#[derive(Debug)]
pub struct Barrier {
    pub id: u64,
    pub shard: usize,
    /// The shard's engine state at the barrier ([`EngineState::to_bytes`]), when asked for.
    pub state: Option<Vec<u8>>,
}

/// Where a pipeline's records go: a function of the record for most uses, or a sink that also
/// takes part in checkpoints (the Kafka sink).
pub trait Sink: Send + 'static {
    /// A record from match shard `shard`. Records of one shard arrive in the order they were
    /// emitted.
    fn record(&mut self, shard: usize, r: &OwnedRecord);
    /// A barrier from one shard (see [`Pipeline::barrier`]).
    fn barrier(&mut self, _b: Barrier) {}
}

/// A function of each record, as a [`Sink`].
struct FnSink<F>(F);

impl<F: FnMut(&OwnedRecord) + Send + 'static> Sink for FnSink<F> {
    fn record(&mut self, _shard: usize, r: &OwnedRecord) {
        (self.0)(r)
    }
}

/// The pattern mask that tells a shard to check key ownership itself.
const ALL_PATTERNS: u64 = u64::MAX;

/// What travels from a shard to the sink.
enum ToSink {
    /// A record and the time its event entered.
    Record(OwnedRecord, u64),
    Barrier(Barrier),
}

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

/// A snapshot that does not fit the running pipeline.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the snapshot holds {found} shards but the pipeline has {expected}")]
    Shards { found: usize, expected: usize },
    #[error(transparent)]
    State(#[from] crate::engine::StateMismatch),
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
    metrics: Arc<PipelineMetrics>,
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

    /// [`Pipeline::start`] with engine options.
    pub fn start_with(
        prog: Arc<Program>,
        layout: Layout,
        opts: EngineOptions,
        output: impl FnMut(&OwnedRecord) + Send + 'static,
    ) -> Result<Pipeline, StartError> {
        Pipeline::start_with_sink(prog, layout, opts, FnSink(output))
    }

    /// [`Pipeline::start_with`] with a [`Sink`] that takes part in checkpoints.
    pub fn start_with_sink(
        prog: Arc<Program>,
        layout: Layout,
        opts: EngineOptions,
        output: impl Sink,
    ) -> Result<Pipeline, StartError> {
        let metrics = PipelineMetrics::new(layout.shards);
        Pipeline::start_with_metrics(prog, layout, opts, output, metrics)
    }

    /// [`Pipeline::start_with_sink`] publishing its figures to `metrics` (made with as many
    /// shards as the layout), which the caller may share with its own stages.
    pub fn start_with_metrics(
        prog: Arc<Program>,
        layout: Layout,
        opts: EngineOptions,
        output: impl Sink,
        metrics: Arc<PipelineMetrics>,
    ) -> Result<Pipeline, StartError> {
        layout.validate()?;
        assert_eq!(
            metrics.shards.len(),
            layout.shards,
            "metrics for every shard"
        );
        // Read the cores before any thread is pinned (a pinned thread passes its mask on).
        pin(None);
        pin(layout.source_core);
        let parks = |w: WaitStrategy| matches!(w, WaitStrategy::Park { .. });
        let fused = layout.fuse_sink && layout.shards == 1;
        let mut to_shards = Vec::new();
        let mut returned = Vec::new();
        let mut shard_threads = Vec::new();
        let mut to_sink = Vec::new();
        let mut output: Option<Box<dyn Sink>> = Some(Box::new(output));
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
                ShardSink::Fused(output.take().expect("one fused shard"))
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
            let m = metrics.clone();
            shard_threads.push(
                std::thread::Builder::new()
                    .name(format!("kairos-shard-{i}"))
                    .spawn(move || run_shard(engine, i, rx, back_tx, sink, core, wait, m))?,
            );
        }
        let sink_thread = if fused {
            None
        } else {
            let mut out = output.take().expect("the output goes to the sink");
            let core = layout.sink_core;
            let wait = layout.sink_wait;
            let m = metrics.clone();
            Some(
                std::thread::Builder::new()
                    .name("kairos-sink".into())
                    .spawn(move || run_sink(to_sink, &mut *out, core, wait, &m))?,
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
            metrics,
        })
    }

    pub fn program(&self) -> &Arc<Program> {
        &self.prog
    }

    /// Live figures, updated by the stages as they run.
    pub fn metrics(&self) -> &Arc<PipelineMetrics> {
        &self.metrics
    }

    /// The number of match shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Moves time on without an event (a quiet input): every shard closes the windows that end
    /// by `event_time` (patterns on event time) or `arrival` (the others), both in ns.
    pub fn advance(&mut self, event_time: i64, arrival: i64) {
        let (t, a) = self.ticked;
        self.ticked = (event_time.max(t), arrival.max(a));
        let (ts, arrival) = self.ticked;
        for s in 0..self.shards.len() {
            self.send(s, ToShard::Tick(ts, arrival));
        }
    }

    /// Sends checkpoint barrier `id` through every shard: each passes it to the sink
    /// ([`Sink::barrier`]) after every record caused by the events pushed before it, with its
    /// engine state when `snapshot` is set.
    pub fn barrier(&mut self, id: u64, snapshot: bool) {
        for s in 0..self.shards.len() {
            self.send(s, ToShard::Control(Control::Barrier { id, snapshot }));
        }
    }

    /// Replaces every shard's state with one taken at a barrier of a pipeline with the same
    /// program and as many shards. Call it before pushing events.
    pub fn restore(&mut self, states: Vec<EngineState>) -> Result<(), RestoreError> {
        if states.len() != self.shards.len() {
            return Err(RestoreError::Shards {
                found: states.len(),
                expected: self.shards.len(),
            });
        }
        for st in &states {
            if st.patterns.len() != self.prog.patterns.len() {
                return Err(crate::engine::StateMismatch {
                    found: st.patterns.len(),
                    expected: self.prog.patterns.len(),
                }
                .into());
            }
        }
        for (s, st) in states.into_iter().enumerate() {
            self.send(s, ToShard::Control(Control::Restore(Box::new(st))));
        }
        Ok(())
    }

    /// Drops the partial matches of the keys whose last event came from one of `origins`
    /// (see [`Event::origin`]); the shards count them in their `dropped` figure.
    pub fn drop_origins(&mut self, origins: &[u32]) {
        let origins: Arc<[u32]> = origins.into();
        for s in 0..self.shards.len() {
            self.send(s, ToShard::Control(Control::DropOrigins(origins.clone())));
        }
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
        self.metrics.events_in.store(self.events, Relaxed);
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
            self.metrics
                .source_backpressure_ns
                .store(self.backpressure_ns, Relaxed);
            if r.is_err() {
                panic!("a pipeline shard thread has stopped");
            }
        }
    }

    /// Ends the input: every ring is drained in order, every window closes, every record is
    /// written. Returns what the pipeline did.
    pub fn finish(self) -> Report {
        self.join()
    }

    /// Stops the pipeline without ending the input: every event pushed is processed and every
    /// record written, but open windows stay open (no timeouts or absences fire), as for a
    /// daemon that shuts down and resumes from a checkpoint.
    pub fn stop(mut self) -> Report {
        for s in 0..self.shards.len() {
            self.send(s, ToShard::Control(Control::Halt));
        }
        self.join()
    }

    fn join(self) -> Report {
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
            report.engine.evicted_key_bytes += out.stats.evicted_key_bytes;
            report.engine.evicted_total_bytes += out.stats.evicted_total_bytes;
            report.engine.dropped += out.stats.dropped;
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
    Fused(Box<dyn Sink>),
}

/// How often a stage recomputes the latency percentiles it publishes.
const PUBLISH_PERCENTILES_NS: u64 = 1_000_000_000;

fn publish_shard(m: &ShardMetrics, stats: &EngineStats, records: u64, backpressure_ns: u64) {
    m.events.store(stats.events, Relaxed);
    m.matches.store(stats.matches, Relaxed);
    m.timeouts.store(stats.timeouts, Relaxed);
    m.evicted.store(stats.evicted, Relaxed);
    m.evicted_key_bytes.store(stats.evicted_key_bytes, Relaxed);
    m.evicted_total_bytes
        .store(stats.evicted_total_bytes, Relaxed);
    m.dropped.store(stats.dropped, Relaxed);
    m.records.store(records, Relaxed);
    m.backpressure_ns.store(backpressure_ns, Relaxed);
}

/// A shard's end of the output: writes records to the sink (its ring, or the sink itself when
/// fused) and counts them.
struct ShardOutput {
    index: usize,
    metrics: Arc<PipelineMetrics>,
    sink: ShardSink,
    waiter: Waiter,
    /// When the event being processed entered the pipeline.
    ingress: u64,
    records: u64,
    backpressure_ns: u64,
    fused_latency: Option<Histogram<u64>>,
}

impl ShardOutput {
    fn send(&mut self, msg: ToSink) {
        let ShardSink::Ring(tx) = &mut self.sink else {
            unreachable!("only a ring sink is sent to")
        };
        if let Err(msg) = tx.try_push(msg) {
            let t0 = Instant::now();
            let _ = tx.push(msg, &mut self.waiter);
            self.backpressure_ns += t0.elapsed().as_nanos() as u64;
        }
    }

    fn barrier(&mut self, b: Barrier) {
        match &mut self.sink {
            ShardSink::Fused(f) => f.barrier(b),
            ShardSink::Ring(_) => self.send(ToSink::Barrier(b)),
        }
    }
}

impl crate::engine::Output for ShardOutput {
    fn record(&mut self, r: &Record<'_>) {
        self.records += 1;
        match &mut self.sink {
            ShardSink::Fused(f) => {
                f.record(self.index, &r.to_owned());
                self.metrics.records_out.fetch_add(1, Relaxed);
                if let Some(h) = self.fused_latency.as_mut() {
                    let _ = h.record(now_ns().saturating_sub(self.ingress).max(1));
                }
            }
            ShardSink::Ring(_) => {
                let msg = ToSink::Record(r.to_owned(), self.ingress);
                self.send(msg);
            }
        }
    }
}

/// The match shard: runs its engine over the events routed to it.
#[allow(clippy::too_many_arguments)]
fn run_shard(
    mut engine: Engine,
    index: usize,
    mut rx: Consumer<ToShard>,
    mut back: Producer<Event>,
    sink: ShardSink,
    core: Option<usize>,
    wait: WaitStrategy,
    metrics: Arc<PipelineMetrics>,
) -> ShardOut {
    pin(core);
    let m = &metrics.shards[index];
    let mut published = now_ns();
    let mut latency = histogram();
    let mut ring_latency = histogram();
    let mut out = ShardOutput {
        index,
        metrics: metrics.clone(),
        fused_latency: matches!(sink, ShardSink::Fused(_)).then(histogram),
        sink,
        waiter: Waiter::new(wait),
        ingress: 0,
        records: 0,
        backpressure_ns: 0,
    };
    let mut waiter = Waiter::new(wait);
    let mut halted = false;
    while let Some(msg) = rx.pop(&mut waiter) {
        match msg {
            ToShard::Event(mut ev, t0, patterns) => {
                out.ingress = t0;
                let _ = ring_latency.record(now_ns().saturating_sub(t0).max(1));
                if patterns == ALL_PATTERNS {
                    engine.process(&mut ev, &mut out);
                } else {
                    engine.process_routed(&mut ev, patterns, &mut out);
                }
                let done = now_ns();
                let _ = latency.record(done.saturating_sub(t0).max(1));
                if done.saturating_sub(published) >= PUBLISH_PERCENTILES_NS {
                    published = done;
                    publish_shard(m, engine.counters(), out.records, out.backpressure_ns);
                    m.match_latency.publish(&latency);
                }
                // Back to the source for reuse; when its return ring is full, freed here.
                let _ = back.try_push(ev);
            }
            ToShard::Tick(ts, arrival) => {
                let now = now_ns();
                out.ingress = now;
                engine.advance_clocks(ts, arrival, &mut out);
                // Ticks come about every millisecond while time moves: the stage's figures go
                // out with them, off the per-event path.
                publish_shard(m, engine.counters(), out.records, out.backpressure_ns);
                if now.saturating_sub(published) >= PUBLISH_PERCENTILES_NS {
                    published = now;
                    m.match_latency.publish(&latency);
                    m.live_runs.store(engine.stats().live_runs, Relaxed);
                }
            }
            ToShard::Control(Control::Barrier { id, snapshot }) => {
                let state = snapshot.then(|| engine.state().to_bytes());
                publish_shard(m, engine.counters(), out.records, out.backpressure_ns);
                out.barrier(Barrier {
                    id,
                    shard: index,
                    state,
                });
            }
            ToShard::Control(Control::Restore(st)) => {
                // Checked against the program by `Pipeline::restore`.
                let _ = engine.restore(*st);
            }
            ToShard::Control(Control::DropOrigins(origins)) => {
                engine.drop_origins(&origins);
            }
            ToShard::Control(Control::Halt) => {
                halted = true;
                break;
            }
        }
    }
    if !halted {
        // The end of the input: every window closes.
        out.ingress = now_ns();
        engine.finish(&mut out);
    }
    publish_shard(m, engine.counters(), out.records, out.backpressure_ns);
    m.match_latency.publish(&latency);
    ShardOut {
        stats: engine.stats(),
        latency,
        ring_latency,
        backpressure_ns: out.backpressure_ns,
        records: out.records,
        fused_latency: out.fused_latency,
    }
}

/// The sink: merges the shards' records into the output.
fn run_sink(
    mut rings: Vec<Consumer<ToSink>>,
    output: &mut dyn Sink,
    core: Option<usize>,
    wait: WaitStrategy,
    metrics: &PipelineMetrics,
) -> SinkOut {
    pin(core);
    let mut latency = histogram();
    let mut records = 0u64;
    let mut waiter = Waiter::new(wait);
    let mut published = now_ns();
    // Ring `i` is shard `i`'s until it finishes; keep the shard index beside it.
    let mut shards: Vec<usize> = (0..rings.len()).collect();
    while !rings.is_empty() {
        let mut got = 0;
        for (rx, &shard) in rings.iter_mut().zip(&shards) {
            got += rx.pop_batch(256, |msg| match msg {
                ToSink::Record(rec, t0) => {
                    output.record(shard, &rec);
                    records += 1;
                    let _ = latency.record(now_ns().saturating_sub(t0).max(1));
                }
                ToSink::Barrier(b) => output.barrier(b),
            });
        }
        if got == 0 {
            metrics.records_out.store(records, Relaxed);
            let now = now_ns();
            if now.saturating_sub(published) >= PUBLISH_PERCENTILES_NS {
                published = now;
                metrics.sink_latency.publish(&latency);
            }
            let mut k = 0;
            rings.retain_mut(|rx| {
                let keep = !rx.is_finished();
                if !keep {
                    shards.remove(k);
                } else {
                    k += 1;
                }
                keep
            });
            if waiter.step() == crate::ring::wait::Step::Park {
                std::thread::sleep(crate::ring::wait::PARK_TIMEOUT);
                waiter.reset();
            }
        } else {
            waiter.reset();
        }
    }
    metrics.records_out.store(records, Relaxed);
    metrics.sink_latency.publish(&latency);
    SinkOut { records, latency }
}
