//! `kairos-bench`: the latency harness. Runs a scenario (pattern set, workload, rate, duration,
//! layout) in up to three modes and reports each decision's latency, measured from the time the
//! harness meant to send the event that completed it (open loop: a stall delays every event
//! behind it and shows in the figures, so coordinated omission is accounted for).
//!
//! ```text
//! kairos-bench --scenario sportsbook --modes in-process,kafka,baseline --rate 5000 --duration 10s
//! kairos-bench --brokers localhost:9092 --modes kafka,baseline      # a real broker
//! kairos-bench ... --append BENCHMARKS.md                            # record the run
//! ```
//!
//! Modes:
//! - `in-process`: the embedded pipeline (`Pipeline::push_json` on this thread, records in a
//!   callback): what a service that links Kairos gets.
//! - `kafka`: the daemon between topics of a broker (librdkafka's in-process mock cluster unless
//!   `--brokers` is given): produce → consume → match → produce → consume.
//! - `kafka-eos`: `kafka` with exactly-once delivery (a transaction per 100 ms checkpoint), read
//!   with `isolation.level=read_committed`: the latency that guarantee costs.
//! - `baseline`: the same two hops with no Kairos: a bare librdkafka relay that consumes each
//!   event and produces it again, on the same broker with the same client settings. Kairos's
//!   cost through Kafka is the difference between `kafka` and `baseline`.
//!
//! Outputs under `--out` (default `target/bench`): a `.hgrm` percentile distribution per mode
//! (HdrHistogram's format, which its plotter reads), `latency.svg` comparing the modes, and
//! `summary.md`; `--append FILE` adds the markdown table, with machine, date and command, to FILE.

use hdrhistogram::Histogram;
use kairos::compile::{compile, CompileOptions, Source};
use kairos::config::{parse_duration, Config};
use kairos::daemon::{self, Started};
use kairos::engine::OwnedRecord;
use kairos::event::Value;
use kairos::io::kafka::send_waiting;
use kairos::pipeline::{now_ns, Layout, Pipeline};
use kairos::workload::{by_name, GenEvent, Workload};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SPORTSBOOK: &str = include_str!("bench/sportsbook.cep");
const TRADING: &str = include_str!("bench/trading.cep");

struct Args {
    scenario: String,
    modes: Vec<String>,
    rate: u64,
    duration: Duration,
    warmup: Duration,
    keys: u64,
    seed: u64,
    shards: usize,
    brokers: Option<String>,
    out: String,
    append: Option<String>,
}

fn usage() -> &'static str {
    "usage: kairos-bench [--scenario sportsbook|trading] [--modes in-process,kafka,baseline] [--rate N] [--duration 10s] [--warmup 2s] [--keys K] [--seed S] [--shards N] [--brokers HOST:PORT] [--out DIR] [--append FILE]"
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        scenario: "sportsbook".into(),
        modes: vec!["in-process".into(), "kafka".into(), "baseline".into()],
        rate: 1_000,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        keys: 10_000,
        seed: 7,
        shards: 1,
        brokers: None,
        out: "target/bench".into(),
        append: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(usage().into());
        }
        let val = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || {
            val.parse::<u64>()
                .map_err(|_| format!("{flag}: `{val}` is not a number"))
        };
        let dur =
            || parse_duration(&val).ok_or(format!("{flag}: `{val}` is not a duration (e.g. 10s)"));
        match flag.as_str() {
            "--scenario" => a.scenario = val.clone(),
            "--modes" => a.modes = val.split(',').map(str::to_string).collect(),
            "--rate" => a.rate = num()?.max(1),
            "--duration" => a.duration = dur()?,
            "--warmup" => a.warmup = dur()?,
            "--keys" => a.keys = num()?.max(1),
            "--seed" => a.seed = num()?,
            "--shards" => a.shards = num()?.max(1) as usize,
            "--brokers" => a.brokers = Some(val.clone()),
            "--out" => a.out = val.clone(),
            "--append" => a.append = Some(val.clone()),
            other => return Err(format!("unknown option {other}\n{}", usage())),
        }
    }
    for m in &a.modes {
        if !["in-process", "kafka", "kafka-eos", "baseline"].contains(&m.as_str()) {
            return Err(format!(
                "unknown mode `{m}` (in-process, kafka, kafka-eos, baseline)"
            ));
        }
    }
    if !["sportsbook", "trading"].contains(&a.scenario.as_str()) {
        return Err(format!(
            "unknown scenario `{}` (sportsbook, trading)",
            a.scenario
        ));
    }
    Ok(a)
}

/// One mode's run.
struct Run {
    mode: String,
    latency: Histogram<u64>,
    events: u64,
    records: u64,
    seconds: f64,
    cpu_ns_per_event: f64,
    peak_rss_mib: f64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("static bounds")
}

/// CPU time of the process so far (user + system), ns, and its peak resident set, KiB.
fn rusage() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name: utime and stime are the 12th and 13th.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc_sysconf_clk_tck() }.max(1);
    let cpu_ns = (ticks(11) + ticks(12)) * 1_000_000_000 / hz;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    (cpu_ns, hwm)
}

extern "C" {
    fn sysconf(name: i32) -> i64;
}

/// Clock ticks per second (`_SC_CLK_TCK` is 2 on Linux).
unsafe fn libc_sysconf_clk_tck() -> u64 {
    sysconf(2) as u64
}

/// The workload's next event, with `sent` (its due time on [`now_ns`]'s clock) and the wall
/// clock as its event time.
fn stamp(e: &mut GenEvent, due: u64) {
    e.set_ts(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    );
    e.json = e.json.replacen('{', &format!("{{\"sent\":{due},"), 1);
}

fn sent_of(fields: &[(String, Value)]) -> Option<u64> {
    fields
        .iter()
        .find(|(n, _)| n == "sent")
        .and_then(|(_, v)| match v {
            Value::Int(i) => Some(*i as u64),
            _ => None,
        })
}

fn sent_of_json(payload: &[u8]) -> Option<u64> {
    let i = memchr::memmem::find(payload, b"\"sent\":")? + 7;
    let rest = &payload[i..];
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// A progress bar on stderr.
fn progress(mode: &str, start: Instant, total: Duration, done: bool) {
    if done {
        eprintln!(
            "\r  {mode:<11} done in {:.1} s{}",
            start.elapsed().as_secs_f64(),
            " ".repeat(30)
        );
        return;
    }
    let f = (start.elapsed().as_secs_f64() / total.as_secs_f64()).min(1.0);
    let n = (f * 30.0) as usize;
    eprint!(
        "\r  {mode:<11} [{}{}] {:>3.0}%",
        "#".repeat(n),
        " ".repeat(30 - n),
        f * 100.0
    );
}

/// Offers the workload on a fixed schedule for warm-up plus duration, calling `send` for each
/// event with its due time (events of the warm-up carry no `sent` and are not measured).
/// Returns the events offered.
fn offer(a: &Args, mode: &str, w: &mut dyn Workload, mut send: impl FnMut(&GenEvent, u64)) -> u64 {
    let start = Instant::now();
    let base = now_ns();
    let total = a.warmup + a.duration;
    let n = (total.as_secs_f64() * a.rate as f64) as u64;
    let warm = (a.warmup.as_secs_f64() * a.rate as f64) as u64;
    let mut last_bar = Instant::now();
    // Progress goes to a terminal only.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    for i in 0..n {
        let due = base + i * 1_000_000_000 / a.rate;
        // Sleep while the next event is far off (the harness must not take a core the system
        // under test needs), spin the last stretch for a precise send time.
        loop {
            let now = now_ns();
            if now >= due {
                break;
            }
            if due - now > 200_000 {
                std::thread::sleep(Duration::from_nanos(due - now - 150_000));
            } else {
                std::hint::spin_loop();
            }
        }
        let mut e = w.next_event();
        stamp(&mut e, if i < warm { 0 } else { due });
        send(&e, due);
        if tty && last_bar.elapsed() > Duration::from_millis(200) {
            last_bar = Instant::now();
            progress(mode, start, total, false);
        }
    }
    progress(mode, start, total, true);
    n
}

fn program(a: &Args) -> (&'static str, Arc<kairos::compile::Program>) {
    let text = if a.scenario == "trading" {
        TRADING
    } else {
        SPORTSBOOK
    };
    let prog = compile(
        &[Source {
            file: "bench.cep",
            text,
        }],
        &CompileOptions::default(),
    )
    .expect("the scenario compiles");
    (text, Arc::new(prog))
}

fn in_process(a: &Args) -> Run {
    let (_, prog) = program(a);
    let lat = Arc::new(Mutex::new(histogram()));
    let records = Arc::new(AtomicU64::new(0));
    let (l2, r2) = (lat.clone(), records.clone());
    let mut p = Pipeline::start(
        prog,
        Layout::for_this_machine(a.shards),
        move |r: &OwnedRecord| {
            if let Some(sent) = sent_of(&r.fields).filter(|&s| s > 0) {
                let _ = l2
                    .lock()
                    .expect("one writer")
                    .record(now_ns().saturating_sub(sent).max(1));
                r2.fetch_add(1, Ordering::Relaxed);
            }
        },
    )
    .expect("the pipeline starts");
    let mut w = by_name(&a.scenario, a.keys, a.seed).expect("known scenario");
    let (cpu0, _) = rusage();
    let t0 = Instant::now();
    let events = offer(a, "in-process", &mut *w, |e, due| {
        let _ = due;
        if let Err(err) = p.push_json(e.stream, e.json.as_bytes()) {
            eprintln!("kairos-bench: {err}");
        }
    });
    let _ = p.finish();
    let (cpu1, rss) = rusage();
    let latency = lat.lock().expect("finished").clone();
    Run {
        mode: "in-process".into(),
        latency,
        events,
        records: records.load(Ordering::Relaxed),
        seconds: t0.elapsed().as_secs_f64(),
        cpu_ns_per_event: (cpu1 - cpu0) as f64 / events.max(1) as f64,
        peak_rss_mib: rss as f64 / 1024.0,
    }
}

/// Client settings shared by the daemon and the baseline relay: answer fetches at once.
const LOW_LATENCY: [(&str, &str); 2] = [("fetch.wait.max.ms", "0"), ("linger.ms", "0")];

fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .create()
        .expect("a producer")
}

fn reader(brokers: &str, topic: &str, partitions: i32, committed: bool) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "isolation.level",
            if committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .set("group.id", "kairos-bench-reader")
        .set("fetch.wait.max.ms", "0")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::End)
            .expect("partition");
    }
    c.assign(&tpl).expect("assign");
    c
}

/// Reads `topic` and records the latency of every message that carries `sent`.
fn measure(
    brokers: String,
    topic: &'static str,
    partitions: i32,
    committed: bool,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Histogram<u64>, u64)> {
    std::thread::spawn(move || {
        let c = reader(&brokers, topic, partitions, committed);
        let mut h = histogram();
        let mut n = 0;
        let mut quiet_since = None;
        loop {
            match c.poll(Duration::from_millis(1)) {
                Some(Ok(m)) => {
                    quiet_since = None;
                    if let Some(sent) = m.payload().and_then(sent_of_json).filter(|&s| s > 0) {
                        let _ = h.record(now_ns().saturating_sub(sent).max(1));
                        n += 1;
                    }
                }
                _ => {
                    if stop.load(Ordering::Acquire) {
                        let t = *quiet_since.get_or_insert_with(Instant::now);
                        if t.elapsed() > Duration::from_secs(2) {
                            return (h, n);
                        }
                    }
                }
            }
        }
    })
}

struct Broker {
    _mock: Option<MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    brokers: String,
}

fn broker(a: &Args, topics: &[(&str, i32)]) -> Broker {
    match &a.brokers {
        Some(b) => Broker {
            _mock: None,
            brokers: b.clone(),
        },
        None => {
            let m = MockCluster::new(1).expect("the mock cluster starts");
            for (t, p) in topics {
                m.create_topic(t, *p, 1).expect("topic");
            }
            let brokers = m.bootstrap_servers();
            Broker {
                _mock: Some(m),
                brokers,
            }
        }
    }
}

fn through_kafka(a: &Args, exactly_once: bool) -> Run {
    let (text, _) = program(a);
    let mut w = by_name(&a.scenario, a.keys, a.seed).expect("known scenario");
    let streams = w.streams();
    let mut topics: Vec<(&str, i32)> = streams.iter().map(|s| (*s, 2)).collect();
    topics.push(("bench-alerts", 1));
    let b = broker(a, &topics);
    let dir = std::env::temp_dir().join(format!("kairos-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    std::fs::write(dir.join("bench.cep"), text).expect("write the patterns");
    let mut cfg = format!(
        "patterns = [\"bench.cep\"]\n[kafka]\nbrokers = \"{}\"\ngroup_id = \"kairos-bench\"\n[kafka.consumer]\n",
        b.brokers
    );
    for (k, v) in LOW_LATENCY.iter().filter(|(k, _)| k.starts_with("fetch")) {
        cfg += &format!("\"{k}\" = \"{v}\"\n");
    }
    for s in streams {
        cfg += &format!("[[streams]]\nname = \"{s}\"\ntopic = \"{s}\"\n");
    }
    cfg += &format!("[[sinks]]\nname = \"alerts\"\ntopic = \"bench-alerts\"\n[pipeline]\nshards = {}\n[admin]\naddress = \"\"\n", a.shards);
    if exactly_once {
        cfg += "[delivery]\nguarantee = \"exactly-once\"\ncheckpoint_interval = \"100ms\"\n";
    }
    std::fs::write(dir.join("kairos.toml"), cfg).expect("write the config");
    let prepared = daemon::prepare(Config::load(&dir.join("kairos.toml")).expect("config"))
        .expect("the scenario loads");
    let _ = std::fs::remove_dir_all(&dir);
    let halt = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let h = halt.clone();
    let d = std::thread::spawn(move || {
        daemon::run(prepared, h, |s: Started| {
            let _ = tx.send(s.metrics);
        })
    });
    let metrics = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the daemon starts");
    while metrics.partitions.load(Ordering::Relaxed) < (2 * streams.len()) as u64 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mode = if exactly_once { "kafka-eos" } else { "kafka" };
    let run = round_trip(
        a,
        mode,
        &mut *w,
        &b.brokers,
        ("bench-alerts", 1),
        exactly_once,
        |e| e.stream,
    );
    halt.store(true, Ordering::Release);
    match d.join() {
        Ok(Err(e)) => eprintln!("kairos-bench: the daemon stopped with an error: {e}"),
        Err(_) => eprintln!("kairos-bench: the daemon panicked"),
        Ok(Ok(_)) => {}
    }
    run
}

/// Offers the workload to the broker (to the topic `to` names for each event) and measures what
/// comes out of `out` (topic, partitions): the part of a run the Kafka modes share.
fn round_trip(
    a: &Args,
    mode: &str,
    w: &mut dyn Workload,
    brokers: &str,
    out: (&'static str, i32),
    committed: bool,
    to: impl Fn(&GenEvent) -> &str,
) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let m = measure(brokers.to_string(), out.0, out.1, committed, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let p = producer(brokers);
    let (cpu0, _) = rusage();
    let t0 = Instant::now();
    let events = offer(a, mode, w, |e, _| send_waiting(&p, to(e), &e.key, &e.json));
    let _ = p.flush(Duration::from_secs(10));
    stop.store(true, Ordering::Release);
    let (latency, records) = m.join().expect("the reader");
    let (cpu1, rss) = rusage();
    Run {
        mode: mode.into(),
        latency,
        events,
        records,
        seconds: t0.elapsed().as_secs_f64(),
        cpu_ns_per_event: (cpu1 - cpu0) as f64 / events.max(1) as f64,
        peak_rss_mib: rss as f64 / 1024.0,
    }
}

/// The bare relay: consume each event and produce it again, nothing else.
fn baseline(a: &Args) -> Run {
    let mut w = by_name(&a.scenario, a.keys, a.seed).expect("known scenario");
    // The mock cluster answers a fetch with one batch per partition: the relay's output, one
    // message per event, is spread over 8 partitions so that reading it is not capped at one
    // message per fetch (Kairos's output is one record per decision, far fewer).
    let b = broker(a, &[("bench-in", 2), ("bench-out", 8)]);
    let halt = Arc::new(AtomicBool::new(false));
    let relay = {
        let (brokers, halt) = (b.brokers.clone(), halt.clone());
        std::thread::spawn(move || {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", "kairos-bench-relay")
                .set("fetch.wait.max.ms", "0")
                .set("auto.offset.reset", "latest")
                .create()
                .expect("a consumer");
            c.subscribe(&["bench-in"]).expect("subscribe");
            let p = producer(&brokers);
            while !halt.load(Ordering::Acquire) {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(1)) {
                    let mut rec = BaseRecord::<[u8], [u8]>::to("bench-out")
                        .payload(m.payload().unwrap_or_default());
                    if let Some(k) = m.key() {
                        rec = rec.key(k);
                    }
                    let _ = p.send(rec);
                }
                p.poll(Duration::ZERO);
            }
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let run = round_trip(
        a,
        "baseline",
        &mut *w,
        &b.brokers,
        ("bench-out", 8),
        false,
        |_| "bench-in",
    );
    halt.store(true, Ordering::Release);
    let _ = relay.join();
    run
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn table(runs: &[Run]) -> String {
    let mut s = String::from("| mode | p50 µs | p90 µs | p99 µs | p99.9 µs | p99.99 µs | max µs | events/s | decisions | CPU µs/event | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in runs {
        let h = &r.latency;
        let q = |p: f64| us(h.value_at_quantile(p));
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {:.2} | {:.0} |\n",
            r.mode,
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            q(0.9999),
            us(h.max()),
            r.events as f64 / r.seconds.max(1e-9),
            r.records,
            r.cpu_ns_per_event / 1000.0,
            r.peak_rss_mib
        );
    }
    s
}

/// HdrHistogram's percentile distribution text (values in microseconds).
fn hgrm(h: &Histogram<u64>) -> String {
    let mut s = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    for v in h.iter_quantiles(5) {
        let p = v.quantile_iterated_to();
        let inv = if p < 1.0 {
            format!("{:>14.2}", 1.0 / (1.0 - p))
        } else {
            format!("{:>14}", "")
        };
        s += &format!(
            "{:>12.3} {:>14.12} {:>10} {inv}\n",
            v.value_iterated_to() as f64 / 1000.0,
            p,
            v.count_since_last_iteration()
        );
    }
    s += &format!(
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]\n#[Max     = {:>12.3}, Total count    = {:>12}]\n#[Buckets = {:>12}, SubBuckets     = {:>12}]\n",
        h.mean() / 1000.0,
        h.stdev() / 1000.0,
        h.max() as f64 / 1000.0,
        h.len(),
        h.buckets(),
        h.distinct_values()
    );
    s
}

fn chart(runs: &[Run], path: &std::path::Path, title: &str) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let max_us = runs
        .iter()
        .map(|r| r.latency.max() as f64 / 1000.0)
        .fold(1.0, f64::max)
        * 1.2;
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0f64..5.0f64, (1.0f64..max_us).log_scale())
        .map_err(|e| e.to_string())?;
    c.configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs, log)")
        .x_labels(6)
        .x_label_formatter(&|x| match x.round() as i32 {
            0 => "0%".into(),
            1 => "90%".into(),
            2 => "99%".into(),
            3 => "99.9%".into(),
            4 => "99.99%".into(),
            _ => "99.999%".into(),
        })
        .draw()
        .map_err(|e| e.to_string())?;
    let colors = [RED, BLUE, GREEN, MAGENTA];
    for (i, r) in runs.iter().enumerate() {
        let pts: Vec<(f64, f64)> = r
            .latency
            .iter_quantiles(5)
            .filter(|v| v.quantile_iterated_to() < 0.999_999)
            .map(|v| {
                (
                    -(1.0 - v.quantile_iterated_to()).log10(),
                    (v.value_iterated_to() as f64 / 1000.0).max(1.0),
                )
            })
            .collect();
        let color = colors[i % colors.len()];
        c.draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(r.mode.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    // The machine's processors, not `available_parallelism`: by the time this runs the harness
    // has pinned its thread to one core, and that reports the thread's affinity.
    let cores = match cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
    {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or("?".into(), |kb| format!("{} GiB", kb / 1024 / 1024));
    format!("{cores} cores ({cpu}), {mem}")
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kairos-bench: {e}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = std::fs::create_dir_all(&a.out);
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    // Read before any mode runs: a pipeline pins this thread, and the core count it then
    // reports is its own affinity.
    let machine = machine();
    eprintln!(
        "kairos-bench: scenario {} at {} events/s for {:?} (after {:?} warm-up), {} shard(s), broker: {}",
        a.scenario,
        a.rate,
        a.duration,
        a.warmup,
        a.shards,
        a.brokers.as_deref().unwrap_or("librdkafka's in-process mock cluster")
    );
    let mut runs = Vec::new();
    for m in &a.modes {
        let r = match m.as_str() {
            "in-process" => in_process(&a),
            "kafka" => through_kafka(&a, false),
            "kafka-eos" => through_kafka(&a, true),
            _ => baseline(&a),
        };
        let path = std::path::Path::new(&a.out).join(format!("{}-{}.hgrm", a.scenario, r.mode));
        if let Err(e) = std::fs::write(&path, hgrm(&r.latency)) {
            eprintln!("kairos-bench: cannot write {}: {e}", path.display());
        }
        runs.push(r);
    }
    let t = table(&runs);
    println!("\n{t}");
    let svg = std::path::Path::new(&a.out).join(format!("{}-latency.svg", a.scenario));
    let title = format!("{}: decision latency at {} events/s", a.scenario, a.rate);
    match chart(&runs, &svg, &title) {
        Ok(()) => eprintln!("chart: {}", svg.display()),
        Err(e) => eprintln!("kairos-bench: cannot draw the chart: {e}"),
    }
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let md = format!(
        "### Harness: {} at {} events/s ({})\n\nCommand: `{}`  \nMachine: {}  \nBroker: {}  \nLatency from the intended send time of the event that completed each decision to the decision reaching the harness (open loop).\n\n{}\nChart: `{}`; distributions: `{}/{}-*.hgrm`.\n",
        a.scenario,
        a.rate,
        date,
        command,
        machine,
        a.brokers.as_deref().unwrap_or("librdkafka's in-process mock cluster"),
        t,
        svg.display(),
        a.out,
        a.scenario
    );
    let _ = std::fs::write(std::path::Path::new(&a.out).join("summary.md"), &md);
    if let Some(f) = &a.append {
        match std::fs::OpenOptions::new().append(true).open(f) {
            Ok(mut file) => {
                let _ = writeln!(file, "\n{md}");
                eprintln!("appended to {f}");
            }
            Err(e) => eprintln!("kairos-bench: cannot append to {f}: {e}"),
        }
    }
}
