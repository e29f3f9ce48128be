//! `kairos demo`: the whole system on this machine with nothing installed.
//!
//! librdkafka's in-process mock cluster stands in for Kafka; a generator offers the sportsbook
//! workload ([`crate::workload::Sportsbook`]) to its `payments` and `bets` topics at a fixed
//! rate; the daemon ([`crate::daemon`]) runs the example betting patterns over them and writes
//! alerts to the `alerts` topic, which a reader samples. A status line shows the figures live;
//! a summary table ends the run.

use crate::config::Config;
use crate::daemon::{self, Started};
use crate::metrics::PipelineMetrics;
use crate::workload::{Sportsbook, Workload};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The example patterns the demo runs, built into the binary so that it runs from anywhere.
const PATTERNS: [(&str, &str); 3] = [
    (
        "bonus_abuse.cep",
        include_str!("../patterns/bonus_abuse.cep"),
    ),
    (
        "deposit_no_bet.cep",
        include_str!("../patterns/deposit_no_bet.cep"),
    ),
    (
        "rising_stakes.cep",
        include_str!("../patterns/rising_stakes.cep"),
    ),
];

/// What the demo does.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// How long it runs (Ctrl-C ends it earlier).
    pub duration: Duration,
    /// Events offered per second.
    pub rate: u64,
    /// Customers.
    pub keys: u64,
    pub seed: u64,
    /// Match shards.
    pub shards: usize,
    /// Alerts printed per second, at most.
    pub samples_per_second: u32,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            duration: Duration::from_secs(20),
            rate: 10_000,
            keys: 10_000,
            seed: 7,
            shards: 1,
            samples_per_second: 1,
        }
    }
}

/// A demo that could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the in-process Kafka cluster: {0}")]
    Cluster(rdkafka::error::KafkaError),
    #[error("cannot write the demo's configuration: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
    #[error("the daemon did not start")]
    NoStart,
}

/// What the demo saw.
#[derive(Debug, Default)]
pub struct DemoSummary {
    pub elapsed: Duration,
    pub offered: u64,
    pub events: u64,
    pub alerts_by_pattern: BTreeMap<String, u64>,
    pub dead_letters: u64,
    pub checkpoints: u64,
    pub match_p50_ns: u64,
    pub match_p99_ns: u64,
    pub match_p999_ns: u64,
    pub match_max_ns: u64,
}

/// Runs the demo, writing the status line and the alert samples to `out`, until the duration
/// passes or `stop` is set.
pub fn run(
    opts: &DemoOptions,
    stop: Arc<AtomicBool>,
    out: &mut dyn Write,
) -> Result<DemoSummary, DemoError> {
    let cluster = MockCluster::new(1).map_err(DemoError::Cluster)?;
    for (topic, partitions) in [
        ("payments", 2),
        ("bets", 2),
        ("alerts", 1),
        ("dead-letters", 1),
    ] {
        cluster
            .create_topic(topic, partitions, 1)
            .map_err(DemoError::Cluster)?;
    }
    let brokers = cluster.bootstrap_servers();
    let dir = std::env::temp_dir().join(format!("kairos-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for (name, text) in PATTERNS {
        std::fs::write(dir.join(name), text)?;
    }
    let config_text = format!(
        r#"patterns = ["*.cep"]
[kafka]
brokers = "{brokers}"
group_id = "kairos-demo"
dead_letter_topic = "dead-letters"
[kafka.consumer]
"fetch.wait.max.ms" = 1
[[streams]]
name = "payments"
topic = "payments"
allowed_lateness = "1s"
[[streams]]
name = "bets"
topic = "bets"
allowed_lateness = "1s"
[[sinks]]
name = "alerts"
topic = "alerts"
[pipeline]
shards = {shards}
[admin]
address = ""
[delivery]
checkpoint_interval = "1s"
"#,
        shards = opts.shards.max(1)
    );
    let path = dir.join("kairos.toml");
    std::fs::write(&path, config_text)?;
    let prepared = daemon::prepare(Config::load(&path)?)?;
    let _ = std::fs::remove_dir_all(&dir);

    let halt = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Arc<PipelineMetrics>>();
    let h = halt.clone();
    let daemon = std::thread::Builder::new()
        .name("kairos-daemon".into())
        .spawn(move || {
            daemon::run(prepared, h, |s: Started| {
                let _ = tx.send(s.metrics);
            })
        })?;
    let metrics = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(m) => m,
        Err(_) => {
            halt.store(true, Ordering::Release);
            return match daemon.join() {
                Ok(Err(e)) => Err(e.into()),
                _ => Err(DemoError::NoStart),
            };
        }
    };

    // Offer events only once the daemon holds its partitions: the group's first rebalance takes
    // a few seconds, and events queued meanwhile would show as latency.
    let ready = Instant::now() + Duration::from_secs(30);
    while metrics.partitions.load(Relaxed) < 4
        && Instant::now() < ready
        && !stop.load(Ordering::Acquire)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let offered = Arc::new(AtomicU64::new(0));
    let generator = {
        let (brokers, offered, halt) = (brokers.clone(), offered.clone(), halt.clone());
        let opts = opts.clone();
        std::thread::Builder::new()
            .name("kairos-demo-gen".into())
            .spawn(move || generate(&brokers, &opts, &offered, &halt))?
    };
    let alerts: Arc<Mutex<Vec<String>>> = Arc::default();
    let by_pattern: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let reader = {
        let (brokers, alerts, by_pattern, halt) = (
            brokers.clone(),
            alerts.clone(),
            by_pattern.clone(),
            halt.clone(),
        );
        std::thread::Builder::new()
            .name("kairos-demo-read".into())
            .spawn(move || read_alerts(&brokers, &alerts, &by_pattern, &halt))?
    };

    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut last = (start, 0u64);
    let mut next_sample = start;
    let _ = writeln!(
        out,
        "kairos demo: {} events/s of a sportsbook into an in-process Kafka cluster, patterns bonus_abuse, deposit_no_bet, rising_stakes; {} s (Ctrl-C to stop)",
        opts.rate,
        opts.duration.as_secs()
    );
    while start.elapsed() < opts.duration && !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(if tty { 250 } else { 1000 }));
        let now = Instant::now();
        let events = metrics.events_in.load(Relaxed);
        let rate = (events - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, events);
        let matches: u64 = metrics.records_out.load(Relaxed);
        let (p50, p99) = match_percentiles(&metrics);
        let line = format!(
            "[{:>4.0}s] events {:>9}  {:>8.0}/s  alerts {:>7}  match latency p50 {:>7} p99 {:>7}  dead letters {}",
            start.elapsed().as_secs_f64(),
            events,
            rate,
            matches,
            fmt_ns(p50),
            fmt_ns(p99),
            metrics.dead_letters.load(Relaxed)
        );
        let samples = std::mem::take(&mut *alerts.lock().unwrap_or_else(|p| p.into_inner()));
        if now >= next_sample && !samples.is_empty() {
            next_sample =
                now + Duration::from_millis(1000 / u64::from(opts.samples_per_second.max(1)));
            if tty {
                let _ = write!(out, "\r\x1b[2K");
            }
            let _ = writeln!(out, "  alert: {}", samples[samples.len() - 1]);
        }
        if tty {
            let _ = write!(out, "\r\x1b[2K{line}");
            let _ = out.flush();
        } else {
            let _ = writeln!(out, "{line}");
        }
    }
    if tty {
        let _ = writeln!(out);
    }
    halt.store(true, Ordering::Release);
    let _ = generator.join();
    let report = daemon.join().map_err(|_| DemoError::NoStart)??;
    let _ = reader.join();
    let h = &report.pipeline.match_latency;
    let summary = DemoSummary {
        elapsed: start.elapsed(),
        offered: offered.load(Relaxed),
        events: report.pipeline.events,
        alerts_by_pattern: by_pattern.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        dead_letters: report.dead_letters,
        checkpoints: report.checkpoints,
        match_p50_ns: h.value_at_quantile(0.5),
        match_p99_ns: h.value_at_quantile(0.99),
        match_p999_ns: h.value_at_quantile(0.999),
        match_max_ns: h.max(),
    };
    write_summary(&summary, out);
    Ok(summary)
}

fn match_percentiles(m: &PipelineMetrics) -> (u64, u64) {
    m.shards
        .iter()
        .map(|s| {
            (
                s.match_latency.p50.load(Relaxed),
                s.match_latency.p99.load(Relaxed),
            )
        })
        .fold((0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1)))
}

fn fmt_ns(ns: u64) -> String {
    if ns == 0 {
        "-".into()
    } else if ns < 10_000 {
        format!("{ns}ns")
    } else if ns < 10_000_000 {
        format!("{:.1}µs", ns as f64 / 1e3)
    } else {
        format!("{:.1}ms", ns as f64 / 1e6)
    }
}

/// Offers the workload at the rate, open loop: each event has its slot on a fixed schedule.
fn generate(brokers: &str, opts: &DemoOptions, offered: &AtomicU64, halt: &AtomicBool) {
    // Batches of a few milliseconds: the in-process cluster answers a fetch with one batch per
    // partition, so one-message batches would cap what the daemon can read.
    let producer: BaseProducer = match ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
    {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "the demo's generator cannot start");
            return;
        }
    };
    let mut w = Sportsbook::new(opts.keys, opts.seed);
    let start = Instant::now();
    let mut i = 0u64;
    while !halt.load(Ordering::Acquire) {
        let due = start + Duration::from_nanos(i.saturating_mul(1_000_000_000) / opts.rate.max(1));
        let now = Instant::now();
        if now < due {
            producer.poll(Duration::ZERO);
            std::thread::sleep((due - now).min(Duration::from_millis(1)));
            continue;
        }
        let mut e = w.next_event();
        // Event time is the wall clock of the send, so that the topics' partitions, read in
        // batches, stay within the allowed lateness of each other.
        e.set_ts(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        );
        crate::io::kafka::send_waiting(&producer, e.stream, &e.key, &e.json);
        i += 1;
        offered.store(i, Relaxed);
    }
    let _ = producer.flush(Duration::from_secs(5));
}

/// Reads the alerts topic: counts alerts by pattern and keeps the latest for the samples.
fn read_alerts(
    brokers: &str,
    alerts: &Mutex<Vec<String>>,
    by_pattern: &Mutex<BTreeMap<String, u64>>,
    halt: &AtomicBool,
) {
    let consumer: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "kairos-demo-reader")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()
    {
        Ok(c) => c,
        Err(_) => return,
    };
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("alerts", 0, rdkafka::Offset::Beginning)
        .expect("a new list takes a partition");
    if consumer.assign(&tpl).is_err() {
        return;
    }
    // Drain a little after the stop, so the last alerts are counted.
    let mut stop_at: Option<Instant> = None;
    loop {
        if halt.load(Ordering::Acquire) && stop_at.is_none() {
            stop_at = Some(Instant::now() + Duration::from_secs(2));
        }
        if stop_at.is_some_and(|t| Instant::now() >= t) {
            return;
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            let text = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            let pattern = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["pattern"].as_str().map(str::to_string))
                .unwrap_or_default();
            *by_pattern
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(pattern)
                .or_insert(0) += 1;
            let mut a = alerts.lock().unwrap_or_else(|p| p.into_inner());
            if a.len() >= 64 {
                a.remove(0);
            }
            a.push(text);
        }
    }
}

fn write_summary(s: &DemoSummary, out: &mut dyn Write) {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    let _ = writeln!(out, "\nsummary");
    let _ = writeln!(out, "  {:<28} {:>12.1} s", "ran for", secs);
    let _ = writeln!(out, "  {:<28} {:>12}", "events offered", s.offered);
    let _ = writeln!(out, "  {:<28} {:>12}", "events matched", s.events);
    let _ = writeln!(out, "  {:<28} {:>12.0}", "events/s", s.events as f64 / secs);
    for (p, n) in &s.alerts_by_pattern {
        let _ = writeln!(out, "  {:<28} {:>12}", format!("alerts: {p}"), n);
    }
    let _ = writeln!(out, "  {:<28} {:>12}", "dead letters", s.dead_letters);
    let _ = writeln!(
        out,
        "  {:<28} {:>12}",
        "checkpoints committed", s.checkpoints
    );
    for (what, ns) in [
        ("p50", s.match_p50_ns),
        ("p99", s.match_p99_ns),
        ("p99.9", s.match_p999_ns),
        ("max", s.match_max_ns),
    ] {
        let label = format!("match latency {what}");
        let _ = writeln!(out, "  {:<28} {:>12}", label, fmt_ns(ns));
    }
    let _ = writeln!(
        out,
        "  (match latency: from an event entering the pipeline to its shard being done with it)"
    );
}
