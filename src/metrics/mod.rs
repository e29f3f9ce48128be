//! Live figures of a running pipeline, read off the hot path.
//!
//! Each stage owns its counters and histograms and publishes them here from time to time (the
//! shards on their clock ticks, about every millisecond for counters and every second for
//! percentiles), as relaxed atomic stores that cost the stage nothing measurable. The admin
//! listener ([`admin`]) renders them in Prometheus' text format.

pub mod admin;

use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Percentiles of one latency histogram, in nanoseconds.
#[derive(Debug, Default)]
pub struct Percentiles {
    pub p50: AtomicU64,
    pub p99: AtomicU64,
    pub p999: AtomicU64,
    pub max: AtomicU64,
    pub count: AtomicU64,
}

impl Percentiles {
    /// Publishes the percentiles of `h` (a linear pass over its buckets: call it rarely).
    pub fn publish(&self, h: &Histogram<u64>) {
        self.p50.store(h.value_at_quantile(0.5), Relaxed);
        self.p99.store(h.value_at_quantile(0.99), Relaxed);
        self.p999.store(h.value_at_quantile(0.999), Relaxed);
        self.max.store(h.max(), Relaxed);
        self.count.store(h.len(), Relaxed);
    }
}

/// The figures of one match shard.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    pub events: AtomicU64,
    pub matches: AtomicU64,
    pub timeouts: AtomicU64,
    /// Partial matches evicted by any limit; the next two are those evicted by the memory
    /// budgets, the rest by `max_runs_per_key`.
    pub evicted: AtomicU64,
    /// Evicted because their key held more than `max_state_bytes_per_key`.
    pub evicted_key_bytes: AtomicU64,
    /// Evicted because the shard's keys together held more than its share of `max_state_bytes`.
    pub evicted_total_bytes: AtomicU64,
    pub dropped: AtomicU64,
    pub live_runs: AtomicU64,
    pub records: AtomicU64,
    /// Time spent waiting on a full sink ring, ns.
    pub backpressure_ns: AtomicU64,
    /// Entering the pipeline to leaving this shard.
    pub match_latency: Percentiles,
}

/// The figures of the source (the calling thread) and the sink, and the daemon's own counters.
#[derive(Debug, Default)]
pub struct PipelineMetrics {
    pub shards: Vec<ShardMetrics>,
    /// Events taken in by the pipeline.
    pub events_in: AtomicU64,
    /// Messages read from the input topics (events held back for the allowed lateness are
    /// read but not yet taken in).
    pub messages_in: AtomicU64,
    /// Time the source spent waiting on full shard rings, ns.
    pub source_backpressure_ns: AtomicU64,
    /// Records the sink has written.
    pub records_out: AtomicU64,
    /// Entering the pipeline (the completing event) to the record reaching the sink's output.
    pub sink_latency: Percentiles,
    /// Events that could not be parsed (sent to the dead-letter topic where there is one).
    pub dead_letters: AtomicU64,
    /// Dead letters that could not be produced even with their payload cut: logged with their
    /// topic, partition and offset, and passed over.
    pub dead_letter_failures: AtomicU64,
    /// Dead letters whose payload was cut to fit the producer's message size limit.
    pub dead_letters_truncated: AtomicU64,
    /// Events later than the allowed lateness.
    pub late: AtomicU64,
    /// Records handed to the broker and not yet acknowledged.
    pub deliveries_in_flight: AtomicU64,
    pub deliveries_acked: AtomicU64,
    /// Deliveries that failed for good after every retry.
    pub delivery_failures: AtomicU64,
    /// Deliveries retried after a failure.
    pub delivery_retries: AtomicU64,
    /// Checkpoints completed (offsets committed).
    pub checkpoints: AtomicU64,
    /// Messages between the committed position and the end of each assigned partition, summed.
    pub consumer_lag: AtomicU64,
    /// Partitions currently assigned to this process.
    pub partitions: AtomicU64,
}

impl PipelineMetrics {
    pub fn new(shards: usize) -> Arc<PipelineMetrics> {
        Arc::new(PipelineMetrics {
            shards: (0..shards).map(|_| ShardMetrics::default()).collect(),
            ..PipelineMetrics::default()
        })
    }

    /// The figures in Prometheus' text exposition format.
    ///
    /// ```
    /// let m = kairos::metrics::PipelineMetrics::new(2);
    /// m.events_in.store(7, std::sync::atomic::Ordering::Relaxed);
    /// assert!(m.render().contains("kairos_events_in_total 7\n"));
    /// ```
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let g = |a: &AtomicU64| a.load(Relaxed);
        counter(
            "kairos_events_in_total",
            "Events taken in by the source.",
            g(&self.events_in),
        );
        counter(
            "kairos_records_out_total",
            "Records written by the sink.",
            g(&self.records_out),
        );
        counter(
            "kairos_dead_letters_total",
            "Events that could not be parsed.",
            g(&self.dead_letters),
        );
        counter(
            "kairos_dead_letter_failures_total",
            "Dead letters that could not be produced even with their payload cut (logged with their topic, partition and offset).",
            g(&self.dead_letter_failures),
        );
        counter(
            "kairos_dead_letters_truncated_total",
            "Dead letters whose payload was cut to fit the producer's message size limit.",
            g(&self.dead_letters_truncated),
        );
        counter(
            "kairos_late_events_total",
            "Events later than the allowed lateness.",
            g(&self.late),
        );
        counter(
            "kairos_deliveries_acked_total",
            "Records acknowledged by the broker.",
            g(&self.deliveries_acked),
        );
        counter(
            "kairos_delivery_failures_total",
            "Records whose delivery failed after every retry.",
            g(&self.delivery_failures),
        );
        counter(
            "kairos_delivery_retries_total",
            "Deliveries retried after a failure.",
            g(&self.delivery_retries),
        );
        counter(
            "kairos_checkpoints_total",
            "Checkpoints completed (input offsets committed).",
            g(&self.checkpoints),
        );
        counter(
            "kairos_source_backpressure_seconds_total",
            "Time the source waited on full shard rings.",
            g(&self.source_backpressure_ns) / 1_000_000_000,
        );
        let gauges = [
            (
                "kairos_deliveries_in_flight",
                "Records sent to the broker and not yet acknowledged.",
                g(&self.deliveries_in_flight),
            ),
            (
                "kairos_consumer_lag",
                "Messages behind the end of the assigned partitions.",
                g(&self.consumer_lag),
            ),
            (
                "kairos_assigned_partitions",
                "Partitions assigned to this process.",
                g(&self.partitions),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        type Field = fn(&ShardMetrics) -> &AtomicU64;
        let per_shard: [(&str, &str, &str, Field); 7] = [
            (
                "kairos_shard_events_total",
                "counter",
                "Events processed by a match shard.",
                |s| &s.events,
            ),
            (
                "kairos_matches_total",
                "counter",
                "Complete matches.",
                |s| &s.matches,
            ),
            (
                "kairos_timeouts_total",
                "counter",
                "Partial matches that timed out.",
                |s| &s.timeouts,
            ),
            (
                "kairos_revoked_runs_total",
                "counter",
                "Partial matches dropped with revoked partitions.",
                |s| &s.dropped,
            ),
            ("kairos_live_runs", "gauge", "Partial matches open.", |s| {
                &s.live_runs
            }),
            (
                "kairos_shard_records_total",
                "counter",
                "Records emitted by a match shard.",
                |s| &s.records,
            ),
            (
                "kairos_shard_backpressure_ns_total",
                "counter",
                "Time a shard waited on a full sink ring, ns.",
                |s| &s.backpressure_ns,
            ),
        ];
        for (name, kind, help, f) in per_shard {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (i, s) in self.shards.iter().enumerate() {
                let _ = writeln!(o, "{name}{{shard=\"{i}\"}} {}", g(f(s)));
            }
        }
        let _ = writeln!(
            o,
            "# HELP kairos_evictions_total Partial matches evicted, by the limit that evicted them.\n# TYPE kairos_evictions_total counter"
        );
        for (i, s) in self.shards.iter().enumerate() {
            let (key_bytes, total_bytes) = (g(&s.evicted_key_bytes), g(&s.evicted_total_bytes));
            let runs = g(&s.evicted).saturating_sub(key_bytes + total_bytes);
            for (limit, v) in [
                ("max_runs_per_key", runs),
                ("max_state_bytes_per_key", key_bytes),
                ("max_state_bytes", total_bytes),
            ] {
                let _ = writeln!(
                    o,
                    "kairos_evictions_total{{shard=\"{i}\",limit=\"{limit}\"}} {v}"
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP kairos_stage_latency_seconds Latency from entering the pipeline to leaving a stage.\n# TYPE kairos_stage_latency_seconds summary"
        );
        let mut summary = |stage: &str, p: &Percentiles| {
            for (q, v) in [
                ("0.5", &p.p50),
                ("0.99", &p.p99),
                ("0.999", &p.p999),
                ("1", &p.max),
            ] {
                let _ = writeln!(
                    o,
                    "kairos_stage_latency_seconds{{{stage},quantile=\"{q}\"}} {:e}",
                    g(v) as f64 / 1e9
                );
            }
            let _ = writeln!(
                o,
                "kairos_stage_latency_seconds_count{{{stage}}} {}",
                g(&p.count)
            );
        };
        for (i, s) in self.shards.iter().enumerate() {
            summary(&format!("stage=\"match\",shard=\"{i}\""), &s.match_latency);
        }
        summary("stage=\"sink\"", &self.sink_latency);
        o
    }
}
