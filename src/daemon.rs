//! The daemon: Kafka topics in, matches out, as `kairos run --config FILE` runs it.
//!
//! ```text
//!  consumer ─poll─► decode ─► reorder (lateness) ─► Pipeline (shards) ─► KafkaSink ─► producer
//!     ▲                                                                        │
//!     └──── commit offsets when checkpoint N is complete ◄── delivery reports ─┘
//! ```
//!
//! The calling thread is the source and parse stage: it polls the consumer, decodes each
//! payload in place into an event, and pushes it into the pipeline. Every checkpoint interval
//! it sends a barrier through the pipeline (see [`crate::io::kafka::checkpoint`]); when the
//! checkpoint is complete it writes the engine state (if a state directory is set) and commits
//! the offsets. Rebalances revoke partitions between two polls: their keys' partial matches
//! are dropped, counted and logged.

use crate::compile::{load::load, CompileOptions, Program};
use crate::config::{Config, ConfigError, Guarantee};
use crate::engine::{EngineOptions, EngineState};
use crate::io::kafka::checkpoint::{Checkpoints, Position, Snapshot, WINDOW};
use crate::io::kafka::event_time::{EventClock, Start, Watermarks};
use crate::io::kafka::health::{Health, HealthLimits};
use crate::io::kafka::sink::{
    self, Deliveries, KafkaProducer, KafkaSink, Txn, TxnBarrier, TxnHandoff,
};
use crate::io::kafka::source::{self, RebalanceEvent, Rejected, SourceContext, TopicInput};
use crate::io::kafka::{check_brokers, consumer_config, producer_config, KafkaIoError};
use crate::metrics::admin::{AdminServer, AdminSource};
use crate::metrics::PipelineMetrics;
use crate::pipeline::{now_ns, Pipeline, Report};
use crate::ring::WaitStrategy;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Patterns(String),
    #[error(transparent)]
    Kafka(#[from] KafkaIoError),
    #[error("cannot start the pipeline: {0}")]
    Pipeline(#[from] crate::pipeline::StartError),
    #[error("cannot serve the admin address: {0}")]
    Admin(std::io::Error),
    #[error("{0}")]
    Table(String),
    #[error("a record could not be delivered or a transaction failed; the input will be read again from the last checkpoint on restart")]
    Delivery,
    #[error("cannot start the thread that asks the brokers where partitions end: {0}")]
    Thread(std::io::Error),
    #[error("stopped without the last checkpoint: {in_flight} records were still undelivered after 30 s; the input since the last checkpoint will be read again on restart")]
    Undrained {
        /// Records handed to the producer and not acknowledged.
        in_flight: u64,
    },
}

/// What a daemon did, when it stops.
#[derive(Debug)]
pub struct DaemonReport {
    pub pipeline: Report,
    pub dead_letters: u64,
    pub late: u64,
    pub checkpoints: u64,
    pub delivery_failures: u64,
    /// Partial matches dropped with revoked partitions.
    pub revoked_runs: u64,
    /// Whether the engine state was restored from a snapshot at start.
    pub restored: bool,
}

/// Everything checked and loaded, ready to run.
pub struct Prepared {
    pub config: Config,
    pub program: Arc<Program>,
    /// A hash of the pattern files: snapshots of other patterns are not restored.
    pub fingerprint: u64,
    /// The lookup tables, open.
    pub tables: Vec<(String, crate::table::SharedTable)>,
    /// The tables kept from compacted topics, to follow while running.
    pub topic_tables: Vec<crate::io::kafka::table_topic::TopicTable>,
}

/// Loads and checks the patterns against the configuration: every stream a pattern reads is
/// declared, every sink it emits to has a topic.
pub fn prepare(config: Config) -> Result<Prepared, DaemonError> {
    let paths = config.pattern_paths()?;
    let unit = config.time_unit()?;
    let mut tables = Vec::new();
    let mut decls = Vec::new();
    let mut topic_tables = Vec::new();
    for t in &config.tables {
        let path = config.resolve(t.path.get_ref());
        if let (Some(topic), Some(key)) = (&t.topic, &t.key) {
            // Materialised before the patterns compile: they are checked against its columns.
            let props = Config::properties(&config.kafka.consumer);
            let cc = consumer_config(&config.kafka.brokers, "kairos-tables", &props);
            let mut tt = crate::io::kafka::table_topic::TopicTable::new(&cc, topic, key, &path)?;
            tt.catch_up(Duration::from_secs(60))
                .map_err(|e| DaemonError::Table(e.to_string()))?;
            topic_tables.push(tt);
        }
        let shared = crate::table::SharedTable::open(&path, crate::table::OpenOptions::default())
            .map_err(|e| {
            DaemonError::Table(
                config
                    .error_at(t.path.span(), format!("table `{}`: {e}", t.name.get_ref()))
                    .to_string(),
            )
        })?;
        decls.push(crate::compile::TableDecl {
            name: t.name.get_ref().clone(),
            schema: shared.load().schema().clone(),
        });
        tables.push((t.name.get_ref().clone(), shared));
    }
    let program = load(
        &paths,
        &CompileOptions {
            unit,
            tables: decls,
        },
    )
    .map_err(|e| DaemonError::Patterns(e.to_string()))?;
    for s in &program.streams {
        if !config.streams.iter().any(|c| c.name.get_ref() == s) {
            return Err(DaemonError::Patterns(format!(
                "{}: the patterns read stream `{s}`, which no [[streams]] entry declares",
                config.file
            )));
        }
    }
    for p in &program.patterns {
        for emit in std::iter::once(&p.emit).chain(p.on_timeout.as_ref()) {
            if !config.sinks.iter().any(|c| c.name.get_ref() == &emit.sink) {
                return Err(DaemonError::Patterns(format!(
                    "{}: pattern `{}` emits to sink `{}`, which no [[sinks]] entry declares",
                    config.file, p.name, emit.sink
                )));
            }
        }
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in &paths {
        h.update(p.display().to_string().as_bytes());
        if let Ok(text) = std::fs::read(p) {
            h.update(&text);
        }
    }
    Ok(Prepared {
        config,
        program: Arc::new(program),
        fingerprint: h.digest(),
        tables,
        topic_tables,
    })
}

/// `kairos run --check`: the configuration, the patterns, and that the brokers answer and hold
/// every topic.
pub fn check(config: Config) -> Result<Prepared, DaemonError> {
    let prepared = prepare(config)?;
    let c = &prepared.config;
    let props = Config::properties(&c.kafka.consumer);
    let cc = consumer_config(&c.kafka.brokers, &c.kafka.group_id, &props);
    check_brokers(&cc, &c.kafka.brokers, &topics(c), Duration::from_secs(10))?;
    Ok(prepared)
}

fn topics(c: &Config) -> Vec<&str> {
    let mut t: Vec<&str> = c.streams.iter().map(|s| s.topic.as_str()).collect();
    t.extend(c.sinks.iter().map(|s| s.topic.as_str()));
    t.extend(c.kafka.dead_letter_topic.as_deref());
    t
}

/// What the admin listener serves: the figures, and the health verdict.
struct AdminView {
    metrics: Arc<PipelineMetrics>,
    health: Arc<Health>,
}

impl AdminSource for AdminView {
    fn metrics(&self) -> String {
        self.metrics.render()
    }
    fn health(&self) -> Result<(), String> {
        self.health.verdict()
    }
}

fn producer(
    config: &Config,
    checkpoints: &Arc<Checkpoints>,
    metrics: &Arc<PipelineMetrics>,
    transactional_id: Option<&str>,
    dead_letters: bool,
) -> Result<KafkaProducer, KafkaIoError> {
    let props = Config::properties(&config.kafka.producer);
    let mut pc = producer_config(&config.kafka.brokers, &props);
    if let Some(id) = transactional_id {
        pc.set("transactional.id", id);
    }
    let ctx = Deliveries {
        checkpoints: checkpoints.clone(),
        metrics: metrics.clone(),
        retries: Mutex::new(Vec::new()),
        dead_letters,
    };
    pc.create_with_context(ctx)
        .map_err(KafkaIoError::client("cannot create the Kafka producer"))
}

/// A started daemon's figures and admin address, handed to the caller of [`run`] once running.
pub struct Started {
    pub metrics: Arc<PipelineMetrics>,
    pub admin: Option<std::net::SocketAddr>,
}

/// Runs the daemon until `shutdown` is set (by SIGINT or SIGTERM in `kairos run`), then drains:
/// a last checkpoint is taken and committed, and the pipeline stops without closing windows.
/// `on_start` receives the live figures once the consumer has subscribed.
pub fn run(
    prepared: Prepared,
    shutdown: Arc<AtomicBool>,
    on_start: impl FnOnce(Started),
) -> Result<DaemonReport, DaemonError> {
    let Prepared {
        config,
        program,
        fingerprint,
        tables,
        topic_tables,
    } = prepared;
    let stop_tables = Arc::new(AtomicBool::new(false));
    let followers: Vec<_> = topic_tables
        .into_iter()
        .map(|t| {
            t.follow(Duration::from_millis(500), stop_tables.clone())
                .map_err(|e| DaemonError::Table(format!("cannot follow a table's topic: {e}")))
        })
        .collect::<Result<_, _>>()?;
    // Each table file is watched: replacing it swaps the table between two events.
    let _watchers: Vec<crate::table::TableWatcher> = tables
        .iter()
        .map(|(name, t)| {
            let table = name.clone();
            let on_event: crate::table::SwapCallback =
                Arc::new(move |e: crate::table::SwapEvent<'_>| match &e {
                    crate::table::SwapEvent::Rejected { .. } => {
                        tracing::warn!(table, "lookup table: {e}")
                    }
                    _ => tracing::info!(table, "lookup table: {e}"),
                });
            crate::table::TableWatcher::spawn(
                t.clone(),
                crate::table::WatchOptions {
                    interval: Duration::from_millis(500),
                    on_event: Some(on_event),
                },
            )
            .map_err(|e| DaemonError::Table(format!("cannot watch table `{name}`: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let layout = config.layout()?;
    let shards = layout.shards;
    let eos = config.delivery.guarantee == Guarantee::ExactlyOnce;
    let state_dir: Option<PathBuf> = config
        .delivery
        .state_dir
        .as_deref()
        .map(|d| config.resolve(d));
    let interval = config.checkpoint_interval()?;
    let idle_advance = config.idle_advance()?.as_nanos() as i64;
    let brokers = config.kafka.brokers.clone();

    // The brokers must answer before anything starts: a daemon that cannot reach them says so
    // and exits, rather than waiting silently.
    let consumer_props = Config::properties(&config.kafka.consumer);
    let mut cc = consumer_config(&brokers, &config.kafka.group_id, &consumer_props);
    if !consumer_props
        .iter()
        .any(|(k, _)| k == "statistics.interval.ms")
    {
        cc.set("statistics.interval.ms", "1000");
    }
    check_brokers(&cc, &brokers, &topics(&config), Duration::from_secs(10))?;

    let checkpoints = Arc::new(Checkpoints::new(shards));
    let session_timeout = consumer_props
        .iter()
        .rev()
        .find(|(k, _)| k == "session.timeout.ms")
        .and_then(|(_, v)| v.parse().ok())
        .map_or(Duration::from_secs(45), Duration::from_millis);
    let health = Arc::new(Health::new(
        checkpoints.clone(),
        HealthLimits::new(interval, session_timeout),
    ));
    // One registry for the pipeline's figures and the daemon's own counters.
    let metrics = PipelineMetrics::new(shards);
    let txn_id = eos.then(|| {
        config
            .kafka
            .producer
            .get("transactional.id")
            .map(|v| v.get_ref().as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|| format!("kairos-{}-{}", config.kafka.group_id, hostname()))
    });
    let out_producer = Arc::new(producer(
        &config,
        &checkpoints,
        &metrics,
        txn_id.as_deref(),
        false,
    )?);
    let dlq_producer = producer(&config, &checkpoints, &metrics, None, true)?;
    let dlq_max_bytes = max_message_bytes(&Config::properties(&config.kafka.producer));
    let handoff = Arc::new(TxnHandoff::default());
    let txn_timeout = Duration::from_secs(30);
    if eos {
        out_producer
            .init_transactions(txn_timeout)
            .map_err(KafkaIoError::client("cannot start Kafka transactions"))?;
        out_producer
            .begin_transaction()
            .map_err(KafkaIoError::client("cannot begin a Kafka transaction"))?;
    }
    let sink_topics = config
        .sinks
        .iter()
        .map(|s| (s.name.get_ref().clone(), s.topic.clone()))
        .collect();
    let txn = eos.then(|| Txn {
        handoff: handoff.clone(),
        state_dir: state_dir.clone(),
        fingerprint,
        timeout: txn_timeout,
    });
    let sink = KafkaSink::new(out_producer.clone(), sink_topics, shards, txn);
    let opts = EngineOptions {
        max_runs_per_key: config.engine.max_runs_per_key,
        max_state_bytes_per_key: *config.engine.max_state_bytes_per_key.get_ref(),
        max_state_bytes: *config.engine.max_state_bytes.get_ref(),
        tables,
    };
    let mut pipeline =
        Pipeline::start_with_metrics(program.clone(), layout.clone(), opts, sink, metrics.clone())?;
    let admin = match config.admin_address()? {
        Some(addr) => Some(
            AdminServer::start_with(
                addr,
                config.admin_options()?,
                Arc::new(AdminView {
                    metrics: metrics.clone(),
                    health: health.clone(),
                }),
            )
            .map_err(DaemonError::Admin)?,
        ),
        None => None,
    };
    if let Some(a) = &admin {
        tracing::info!(address = %a.local_addr(), "admin listener: /metrics and /health");
    }

    let ctx = SourceContext {
        events: Mutex::new(Vec::new()),
        metrics: metrics.clone(),
        commits: Mutex::new(Vec::new()),
        health: health.clone(),
    };
    let consumer: BaseConsumer<SourceContext> = cc
        .create_with_context(ctx)
        .map_err(KafkaIoError::client("cannot create the Kafka consumer"))?;
    let inputs: Vec<TopicInput> = config
        .streams
        .iter()
        .filter_map(|s| {
            let sid = program.streams.iter().position(|n| n == s.name.get_ref())?;
            let key_slot = s.key_field.as_ref().and_then(|f| {
                let path: Vec<String> = f.split('.').map(str::to_string).collect();
                program.fields.iter().position(|p| *p == path)
            });
            Some(TopicInput {
                topic: s.topic.clone(),
                stream: sid as u16,
                decoder: crate::event::JsonDecoder::new(
                    &program.fields,
                    program.time_slots[sid],
                    program.unit,
                ),
                key_slot,
                event_time: program.time_slots[sid].is_some(),
                lateness: config.lateness(s).map_or(0, |d| d.as_nanos() as i64),
            })
        })
        .collect();
    let topic_names: Vec<&str> = inputs.iter().map(|i| i.topic.as_str()).collect();
    consumer
        .subscribe(&topic_names)
        .map_err(KafkaIoError::client("cannot subscribe to the input topics"))?;
    tracing::info!(topics = ?topic_names, group = config.kafka.group_id, shards, guarantee = ?config.delivery.guarantee, "kairos is running");
    on_start(Started {
        metrics: metrics.clone(),
        admin: admin.as_ref().map(AdminServer::local_addr),
    });

    let hold = inputs.iter().map(|i| i.lateness).max().unwrap_or(0);
    let topic_names = inputs
        .iter()
        .map(|i| std::ffi::CString::new(i.topic.as_str()).unwrap_or_default())
        .collect();
    let reset_to_end = matches!(
        consumer_props
            .iter()
            .rev()
            .find(|(k, _)| k == "auto.offset.reset")
            .map(|(_, v)| v.as_str()),
        Some("latest" | "end" | "largest")
    );
    let consumer = Arc::new(consumer);
    let confirmer = Confirmer::spawn(consumer.clone()).map_err(DaemonError::Thread)?;
    let mut src = SourceLoop {
        consumer,
        confirmer,
        out: out_producer.clone(),
        inputs,
        topic_names,
        reset_to_end,
        clock: EventClock::new(hold),
        positions: FxHashMap::default(),
        assigned: Vec::new(),
        pipeline: &mut pipeline,
        dlq: dlq_producer,
        dlq_topic: config.kafka.dead_letter_topic.clone(),
        dlq_max_bytes,
        checkpoints: checkpoints.clone(),
        metrics: metrics.clone(),
        health,
        handoff,
        eos,
        state_dir,
        fingerprint,
        next_barrier: 1,
        open: Vec::new(),
        unconfirmed: Vec::new(),
        confirmed: 0,
        completed: 0,
        first_assignment: true,
        restored: false,
        last_event_wall: now_ns() as i64,
        wait: layout.source_wait,
    };
    let result = src.run(&shutdown, interval, idle_advance);
    let restored = src.restored;
    drop(src);
    let dead_letters = metrics.dead_letters.load(Relaxed);
    let late = metrics.late.load(Relaxed);
    let report = pipeline.stop();
    let _ = out_producer.flush(Duration::from_secs(10));
    drop(admin);
    stop_tables.store(true, Ordering::Release);
    for f in followers {
        let _ = f.join();
    }
    result?;
    Ok(DaemonReport {
        revoked_runs: report.engine.dropped,
        pipeline: report,
        dead_letters,
        late,
        checkpoints: metrics.checkpoints.load(Relaxed),
        delivery_failures: metrics.delivery_failures.load(Relaxed),
        restored,
    })
}

/// A confirmation request: its number, and the partitions (origin, topic, partition).
type EndsRequest = (u64, Vec<(u32, String, i32)>);
/// Its answer: each origin's end now, where the broker told.
type EndsAnswer = (u64, Vec<(u32, Option<i64>)>);

/// A thread that asks the broker where partitions end (a ListOffsets for the latest offset),
/// so that the source never waits on the round trip.
struct Confirmer {
    requests: std::sync::mpsc::Sender<EndsRequest>,
    answers: std::sync::mpsc::Receiver<EndsAnswer>,
    /// The newest request number sent.
    sent: u64,
    in_flight: bool,
    /// No request before this (ns), after an unanswered one.
    retry_at: i64,
}

impl Confirmer {
    fn spawn(consumer: Arc<BaseConsumer<SourceContext>>) -> std::io::Result<Confirmer> {
        let (requests, rx) = std::sync::mpsc::channel::<EndsRequest>();
        let (tx, answers) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("kairos-ends".into())
            .spawn(move || {
                for (n, parts) in rx {
                    let mut tpl = TopicPartitionList::new();
                    for (_, t, p) in &parts {
                        // A timestamp of -1 asks for the latest offset.
                        let _ = tpl.add_partition_offset(t, *p, Offset::End);
                    }
                    let found = consumer.offsets_for_times(tpl, Duration::from_secs(5));
                    let ends = parts
                        .iter()
                        .map(|(o, t, p)| {
                            let end = found.as_ref().ok().and_then(|l| {
                                match l.find_partition(t, *p)?.offset() {
                                    Offset::Offset(e) => Some(e),
                                    _ => None,
                                }
                            });
                            (*o, end)
                        })
                        .collect();
                    if tx.send((n, ends)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Confirmer {
            requests,
            answers,
            sent: 0,
            in_flight: false,
            retry_at: 0,
        })
    }
}

/// The low and high watermarks of a partition as librdkafka last saw them in a fetch answer,
/// without asking the broker (rdkafka does not wrap this call).
fn cached_watermarks(
    consumer: &BaseConsumer<SourceContext>,
    topic: &std::ffi::CStr,
    partition: i32,
) -> Watermarks {
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client handle lives as long as `consumer`; `topic` is NUL-terminated and
    // outlives the call; librdkafka only writes the two integers it is given.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    let ok = err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
    Watermarks {
        low: (ok && low >= 0).then_some(low),
        high: (ok && high >= 0).then_some(high),
    }
}

/// librdkafka's `message.max.bytes` among producer properties (its default where unset).
fn max_message_bytes(props: &[(String, String)]) -> usize {
    props
        .iter()
        .rev()
        .find(|(k, _)| k == "message.max.bytes")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// How much of a dead letter's payload fits under `max_bytes`, with `rest` bytes of key and
/// headers, and room for the record's framing.
fn dead_letter_room(max_bytes: usize, rest: usize) -> usize {
    /// Header names, the truncation header and the record batch's framing, generously.
    const FRAMING: usize = 1024;
    max_bytes.saturating_sub(rest + FRAMING)
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "local".into())
}

/// A checkpoint whose barrier has been sent.
struct Open {
    id: u64,
    positions: Vec<Position>,
    /// The event time the engine had reached at the barrier.
    event_time: i64,
}

struct SourceLoop<'p> {
    consumer: Arc<BaseConsumer<SourceContext>>,
    /// Asks the broker where partitions end, for the event clock.
    confirmer: Confirmer,
    /// The records' producer (the sink's), for sending failed deliveries again.
    out: Arc<KafkaProducer>,
    inputs: Vec<TopicInput>,
    /// The input topics' names for librdkafka, by input.
    topic_names: Vec<std::ffi::CString>,
    /// Whether a partition without a committed offset is read from its end.
    reset_to_end: bool,
    clock: EventClock,
    /// By origin: the next offset to read.
    positions: FxHashMap<u32, i64>,
    assigned: Vec<(String, i32)>,
    pipeline: &'p mut Pipeline,
    dlq: KafkaProducer,
    dlq_topic: Option<String>,
    /// The dead-letter producer's `message.max.bytes`: a larger dead letter has its payload cut.
    dlq_max_bytes: usize,
    checkpoints: Arc<Checkpoints>,
    metrics: Arc<PipelineMetrics>,
    health: Arc<Health>,
    handoff: Arc<TxnHandoff>,
    eos: bool,
    state_dir: Option<PathBuf>,
    fingerprint: u64,
    next_barrier: u64,
    open: Vec<Open>,
    /// Checkpoints whose offset commit the broker has not confirmed yet.
    unconfirmed: Vec<Open>,
    /// The newest checkpoint whose commit the broker confirmed: older snapshots can go.
    confirmed: u64,
    /// The last checkpoint completed.
    completed: u64,
    first_assignment: bool,
    restored: bool,
    last_event_wall: i64,
    wait: WaitStrategy,
}

impl SourceLoop<'_> {
    fn run(
        &mut self,
        shutdown: &AtomicBool,
        interval: Duration,
        idle_advance: i64,
    ) -> Result<(), DaemonError> {
        let mut next_checkpoint = Instant::now() + interval;
        let mut next_housekeeping = Instant::now();
        // A parked source waits in librdkafka's queue, which wakes it when a message arrives.
        let poll_timeout = match self.wait {
            WaitStrategy::Park { .. } => Duration::from_millis(1),
            _ => Duration::ZERO,
        };
        let consumer = self.consumer.clone();
        while !shutdown.load(Ordering::Acquire) {
            let msg = consumer.poll(poll_timeout);
            self.rebalances();
            match msg {
                Some(Ok(m)) => self.message(&m),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                }
                None => {
                    if matches!(self.wait, WaitStrategy::Yield) {
                        std::thread::yield_now();
                    }
                }
            }
            let now = Instant::now();
            if now >= next_housekeeping {
                next_housekeeping = now + Duration::from_millis(1);
                self.housekeeping(idle_advance)?;
            }
            if now >= next_checkpoint {
                next_checkpoint = now + interval;
                self.barrier();
            }
        }
        self.drain()
    }

    /// Time, deliveries and checkpoints, about every millisecond.
    fn housekeeping(&mut self, idle_advance: i64) -> Result<(), DaemonError> {
        let now = now_ns() as i64;
        let stall = (10 * idle_advance).max(1_000_000_000);
        let (consumer, names) = (&self.consumer, &self.topic_names);
        self.clock.refresh(now, stall, |origin| {
            let (input, partition) = source::unpack_origin(origin);
            names.get(input).map_or(
                Watermarks {
                    low: None,
                    high: None,
                },
                |topic| cached_watermarks(consumer, topic, partition),
            )
        });
        self.confirm_ends(now);
        while let Some(ev) = self.clock.release() {
            self.pipeline.push(ev);
        }
        let quiet = now - self.last_event_wall;
        if quiet >= idle_advance {
            // A quiet input: arrival time moves with the wall clock; event time too, once every
            // partition has been read to its end, so that windows still close and absences
            // still fire.
            if self.clock.idle(quiet, idle_advance).is_some() {
                while let Some(ev) = self.clock.release_idle() {
                    self.pipeline.push(ev);
                }
            }
            self.pipeline.advance(self.clock.clock_time(), now);
        }
        sink::resend(&self.dlq);
        sink::resend(&self.out);
        self.complete_checkpoints()?;
        if self.checkpoints.poisoned() {
            return Err(DaemonError::Delivery);
        }
        Ok(())
    }

    /// Sends the event clock's newest confirmation request to the broker (one at a time), and
    /// hands it the answers.
    fn confirm_ends(&mut self, now: i64) {
        while let Ok((n, ends)) = self.confirmer.answers.try_recv() {
            self.confirmer.in_flight = false;
            if ends.iter().all(|(_, e)| e.is_none()) {
                // No answer: ask again shortly.
                self.confirmer.sent = n.saturating_sub(1);
                self.confirmer.retry_at = now + 100_000_000;
            }
            self.clock.confirm(n, |o| {
                ends.iter().find(|(x, _)| *x == o).and_then(|(_, e)| *e)
            });
        }
        let wanted = self.clock.wanted();
        if wanted > self.confirmer.sent
            && !self.confirmer.in_flight
            && now >= self.confirmer.retry_at
        {
            let (n, origins) = self.clock.confirmation_wanted();
            let parts = origins
                .into_iter()
                .filter_map(|o| {
                    let (ti, partition) = source::unpack_origin(o);
                    Some((o, self.inputs.get(ti)?.topic.clone(), partition))
                })
                .collect();
            if self.confirmer.requests.send((n, parts)).is_ok() {
                self.confirmer.sent = n;
                self.confirmer.in_flight = true;
            }
        }
    }

    // HOT PATH: one message.
    fn message(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) {
        let Some(ti) = self.inputs.iter().position(|i| i.topic == m.topic()) else {
            return;
        };
        self.metrics.messages_in.fetch_add(1, Relaxed);
        let origin = source::origin(ti, m.partition());
        self.positions.insert(origin, m.offset() + 1);
        let arrival = now_ns() as i64;
        self.last_event_wall = arrival;
        let mut ev = self.pipeline.spare_event();
        let input = &self.inputs[ti];
        match source::decode(input, m, arrival, &mut ev) {
            Ok(()) => {
                ev.origin = origin;
                let (consumer, names) = (&self.consumer, &self.topic_names);
                let watermarks = |origin| {
                    let (input, partition) = source::unpack_origin(origin);
                    names.get(input).map_or(
                        Watermarks {
                            low: None,
                            high: None,
                        },
                        |topic| cached_watermarks(consumer, topic, partition),
                    )
                };
                match self.clock.admit(input, ev, m.offset(), watermarks) {
                    Ok(Some(ev)) => self.pipeline.push(ev),
                    Ok(None) => {
                        while let Some(ev) = self.clock.release() {
                            self.pipeline.push(ev);
                        }
                    }
                    Err((_, why)) => {
                        self.metrics.late.fetch_add(1, Relaxed);
                        self.dead_letter(m, &why);
                    }
                }
            }
            Err(why) => self.dead_letter(m, &why),
        }
    }

    fn dead_letter(&mut self, m: &rdkafka::message::BorrowedMessage<'_>, why: &Rejected) {
        let n = self.metrics.dead_letters.fetch_add(1, Relaxed) + 1;
        // Every dead letter is counted and produced; the log names the first hundred, then one
        // in ten thousand, so that a flood of bad input cannot flood the log too.
        if n <= 100 || n % 10_000 == 0 {
            tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), error = %why, dead_letters = n, "dead letter");
        }
        let Some(topic) = &self.dlq_topic else { return };
        let partition = m.partition().to_string();
        let offset = m.offset().to_string();
        let error = why.to_string();
        let payload = m.payload().unwrap_or_default();
        let key = m.key().unwrap_or_default();
        let room = dead_letter_room(
            self.dlq_max_bytes,
            key.len() + m.topic().len() + partition.len() + offset.len() + error.len(),
        );
        let size = payload.len().to_string();
        let cut = payload.len() > room;
        let payload = if cut {
            self.metrics.dead_letters_truncated.fetch_add(1, Relaxed);
            tracing::warn!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                size = payload.len(),
                kept = room,
                "dead letter larger than the producer's message.max.bytes; its payload is cut"
            );
            &payload[..room]
        } else {
            payload
        };
        let mut headers = OwnedHeaders::new_with_capacity(5)
            .insert(Header {
                key: "kairos-source-topic",
                value: Some(m.topic()),
            })
            .insert(Header {
                key: "kairos-source-partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "kairos-source-offset",
                value: Some(&offset),
            })
            .insert(Header {
                key: "kairos-error",
                value: Some(&error),
            });
        if cut {
            headers = headers.insert(Header {
                key: sink::TRUNCATED_HEADER,
                value: Some(&size),
            });
        }
        let epoch = self.next_barrier;
        let o = (epoch as usize) << 4;
        if let Err(e) = sink::send(&self.dlq, topic, m.key(), payload, headers, o) {
            // Never a reason to stop: the event stays in its source topic at this offset.
            tracing::error!(topic, error = %e, source_topic = m.topic(), partition = m.partition(), offset = m.offset(), "cannot produce a dead letter; it is passed over");
            self.metrics.dead_letter_failures.fetch_add(1, Relaxed);
        }
    }

    fn rebalances(&mut self) {
        let events = std::mem::take(
            &mut *self
                .consumer
                .context()
                .events
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for e in events {
            match e {
                RebalanceEvent::Assign(parts) => {
                    tracing::info!(partitions = ?parts, "partitions assigned");
                    let committed = self.committed(&parts);
                    if self.first_assignment {
                        self.first_assignment = false;
                        if let Some(committed) = &committed {
                            self.restore(&parts, committed);
                        }
                    }
                    for (t, p) in &parts {
                        let Some(ti) = self.inputs.iter().position(|i| i.topic == *t) else {
                            continue;
                        };
                        if !self.inputs[ti].event_time {
                            continue;
                        }
                        let start = match committed.as_ref().and_then(|c| c.get(&(t.clone(), *p))) {
                            Some(&o) => Start::Offset(o),
                            None if self.reset_to_end => Start::End,
                            None => Start::Beginning,
                        };
                        self.clock.assign(source::origin(ti, *p), start);
                    }
                    self.assigned.extend(parts);
                }
                RebalanceEvent::Revoke(parts) => {
                    let origins: Vec<u32> = parts
                        .iter()
                        .filter_map(|(t, p)| self.origin_of(t, *p))
                        .collect();
                    let before = self
                        .pipeline
                        .metrics()
                        .shards
                        .iter()
                        .map(|s| s.dropped.load(Relaxed))
                        .sum::<u64>();
                    self.pipeline.drop_origins(&origins);
                    self.clock.revoke(&origins);
                    for o in &origins {
                        self.positions.remove(o);
                    }
                    self.assigned.retain(|a| !parts.contains(a));
                    tracing::info!(partitions = ?parts, dropped_before = before, "partitions revoked; their keys' partial matches are dropped");
                }
            }
        }
        self.metrics
            .partitions
            .store(self.assigned.len() as u64, Relaxed);
    }

    fn origin_of(&self, topic: &str, partition: i32) -> Option<u32> {
        self.inputs
            .iter()
            .position(|i| i.topic == topic)
            .map(|ti| source::origin(ti, partition))
    }

    /// The committed offsets of `parts` (those with none are absent), or `None` when the
    /// group coordinator cannot tell.
    fn committed(&self, parts: &[(String, i32)]) -> Option<FxHashMap<(String, i32), i64>> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in parts {
            tpl.add_partition(t, *p);
        }
        match self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(10))
        {
            Ok(c) => Some(
                c.elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                        _ => None,
                    })
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read committed offsets; partitions are read from where the consumer starts, with no partial matches restored");
                None
            }
        }
    }

    /// On the first assignment: resumes the newest snapshot whose positions are exactly the
    /// committed offsets of the partitions it shares with the assignment.
    fn restore(&mut self, parts: &[(String, i32)], committed: &FxHashMap<(String, i32), i64>) {
        let Some(dir) = &self.state_dir else { return };
        let list = match Snapshot::list(dir) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list snapshots; starting empty");
                return;
            }
        };
        let committed_of = |t: &str, p: i32| committed.get(&(t.to_string(), p)).copied();
        tracing::debug!(snapshots = list.len(), "looking for a snapshot to resume");
        for path in list.iter().rev() {
            let snap = match Snapshot::read(path) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a snapshot");
                    continue;
                }
            };
            if snap.fingerprint != self.fingerprint || snap.states.len() != self.pipeline.shards() {
                tracing::info!(snapshot = %path.display(), "snapshot of other patterns or another shard count; not restored");
                continue;
            }
            let shared: Vec<&Position> = snap
                .positions
                .iter()
                .filter(|p| {
                    parts
                        .iter()
                        .any(|(t, n)| *t == p.topic && *n == p.partition)
                })
                .collect();
            if shared.is_empty()
                || !shared
                    .iter()
                    .all(|p| committed_of(&p.topic, p.partition) == Some(p.offset))
            {
                let committed: Vec<_> = shared
                    .iter()
                    .map(|p| committed_of(&p.topic, p.partition))
                    .collect();
                tracing::debug!(snapshot = %path.display(), positions = ?snap.positions, ?committed, "snapshot positions are not the committed offsets");
                continue;
            }
            let states: Result<Vec<EngineState>, _> = snap
                .states
                .iter()
                .map(|b| EngineState::from_bytes(b))
                .collect();
            let Ok(states) = states else {
                tracing::warn!(snapshot = %path.display(), "unreadable engine state; skipping");
                continue;
            };
            if let Err(e) = self.pipeline.restore(states) {
                tracing::warn!(error = %e, "snapshot does not fit; starting empty");
                return;
            }
            let gone: Vec<u32> = snap
                .positions
                .iter()
                .filter(|p| {
                    !parts
                        .iter()
                        .any(|(t, n)| *t == p.topic && *n == p.partition)
                })
                .filter_map(|p| self.origin_of(&p.topic, p.partition))
                .collect();
            if !gone.is_empty() {
                self.pipeline.drop_origins(&gone);
            }
            for p in &shared {
                if let Some(o) = self.origin_of(&p.topic, p.partition) {
                    self.positions.insert(o, p.offset);
                }
            }
            self.restored = true;
            self.clock.restore(snap.event_time);
            self.next_barrier = snap.id + 1;
            self.completed = snap.id;
            tracing::info!(snapshot = %path.display(), checkpoint = snap.id, "engine state restored");
            return;
        }
        tracing::info!(
            "no snapshot matches the committed offsets; starting with no partial matches"
        );
    }

    /// The positions to commit: the next offset of each partition read, less any held back.
    fn positions(&self) -> Vec<Position> {
        let mut v: Vec<Position> = self
            .positions
            .iter()
            .filter_map(|(&origin, &next)| {
                let (ti, partition) = source::unpack_origin(origin);
                let input = self.inputs.get(ti)?;
                let offset = self.clock.min_offset(origin).map_or(next, |h| h.min(next));
                Some(Position {
                    topic: input.topic.clone(),
                    partition,
                    offset,
                })
            })
            .collect();
        v.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        v
    }

    fn barrier(&mut self) {
        if self.next_barrier - self.completed >= WINDOW - 2 {
            // Deliveries are far behind: wait rather than open more epochs.
            return;
        }
        let id = self.next_barrier;
        self.next_barrier += 1;
        let positions = self.positions();
        let event_time = self.clock.engine_time();
        if self.eos {
            let group = self.consumer.group_metadata();
            self.handoff
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(TxnBarrier {
                    id,
                    positions: positions.clone(),
                    event_time,
                    group,
                });
        }
        self.pipeline.barrier(id, self.state_dir.is_some());
        self.open.push(Open {
            id,
            positions,
            event_time,
        });
    }

    /// Commits every checkpoint that is complete, oldest first (at-least-once; under
    /// exactly-once the sink commits with the transaction).
    fn complete_checkpoints(&mut self) -> Result<(), DaemonError> {
        self.confirm_commits();
        while let Some(first) = self.open.first() {
            if self.eos {
                if self.checkpoints.sealed() >= first.id {
                    self.completed = first.id;
                    self.open.remove(0);
                    self.health.checkpoint_completed();
                    continue;
                }
                break;
            }
            if !self.checkpoints.complete(self.completed + 1, first.id) {
                break;
            }
            let Open {
                id,
                positions,
                event_time,
            } = self.open.remove(0);
            let states = self.checkpoints.take_states(id);
            if let (Some(dir), false) = (&self.state_dir, positions.is_empty()) {
                let snap = Snapshot {
                    id,
                    event_time,
                    fingerprint: self.fingerprint,
                    positions: positions.clone(),
                    states: states.into_iter().map(Option::unwrap_or_default).collect(),
                };
                if let Err(e) = snap.write(dir, self.confirmed) {
                    tracing::error!(error = %e, "cannot write a snapshot; offsets not committed");
                    continue;
                }
            }
            if !positions.is_empty() {
                let mut tpl = TopicPartitionList::new();
                for p in &positions {
                    let _ =
                        tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.offset));
                }
                if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                    tracing::warn!(error = %e, "offset commit failed; the next checkpoint commits again");
                    continue;
                }
                self.unconfirmed.push(Open {
                    id,
                    positions,
                    event_time,
                });
            }
            self.completed = id;
            self.metrics.checkpoints.fetch_add(1, Relaxed);
            self.health.checkpoint_completed();
        }
        Ok(())
    }

    /// Matches the commits the broker confirmed to the checkpoints that made them.
    fn confirm_commits(&mut self) {
        let done = std::mem::take(
            &mut *self
                .consumer
                .context()
                .commits
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for list in done {
            let same = |o: &Open| {
                o.positions.len() == list.len()
                    && o.positions.iter().all(|p| {
                        list.iter().any(|(t, n, off)| {
                            *t == p.topic && *n == p.partition && *off == p.offset
                        })
                    })
            };
            if let Some(i) = self.unconfirmed.iter().position(same) {
                self.confirmed = self.confirmed.max(self.unconfirmed[i].id);
                self.unconfirmed.drain(..=i);
            }
        }
    }

    /// Shutting down: a last barrier, then waits (up to 30 s) for it to complete and commit.
    fn drain(&mut self) -> Result<(), DaemonError> {
        while let Some(ev) = self.clock.release_any() {
            self.pipeline.push(ev);
        }
        self.barrier();
        let last = self.next_barrier - 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.completed < last && Instant::now() < deadline {
            self.consumer.poll(Duration::from_millis(1));
            self.rebalances();
            sink::resend(&self.dlq);
            sink::resend(&self.out);
            self.complete_checkpoints()?;
            if self.checkpoints.poisoned() {
                return Err(DaemonError::Delivery);
            }
        }
        if self.completed < last {
            return Err(DaemonError::Undrained {
                in_flight: self.checkpoints.in_flight().max(0) as u64,
            });
        }
        Ok(())
    }
}
