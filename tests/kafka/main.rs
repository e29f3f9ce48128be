//! Kafka end to end: the daemon between real topics. Runs against a `tansu` broker when one is
//! on the PATH (as in CI) and librdkafka's mock cluster otherwise; fault injection always uses
//! the mock cluster.

mod broker;
#[path = "../common/mod.rs"]
mod common;
mod event_time;
mod hardening;

use broker::{Broker, Msg};
use kairos::config::Config;
use kairos::daemon::{self, DaemonReport, Started};
use kairos::io::replay::Input;
use kairos::metrics::PipelineMetrics;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Per key, deposit, bet, withdrawal, on arrival time and without a window: every key's matches
/// depend only on the order of its own events, which one partition keeps, so the daemon must
/// produce exactly what a replay of the same events does.
const ARRIVAL_PATTERN: &str = "pattern dbw
    from events
    key user_id
    match d -> b -> w
    define
        d = (type == \"deposit\" and amount >= 20)
        b = (type == \"bet\" and stake >= 10)
        w = (type == \"withdrawal\" and amount >= d.amount * 0.5)
    emit alerts { user: key, deposit: d.amount, stake: b.stake, withdrawn: w.amount }
";

fn generate(events: u64, keys: u64, seed: u64) -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kairos-gen"))
        .args([
            "betting",
            "--events",
            &events.to_string(),
            "--keys",
            &keys.to_string(),
        ])
        .args(["--seed", &seed.to_string()])
        .output()
        .expect("kairos-gen runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(pattern: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.cep"), pattern).unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a config file; `extra` is appended verbatim.
    fn config(&self, name: &str, brokers: &str, streams: &[(&str, &str)], extra: &str) -> PathBuf {
        let mut s = format!(
            "patterns = [\"p.cep\"]\n\n[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"kairos-test\"\ndead_letter_topic = \"dead\"\n\n[kafka.consumer]\n\"fetch.wait.max.ms\" = 10\n\n"
        );
        for (name, topic) in streams {
            s += &format!("[[streams]]\nname = \"{name}\"\ntopic = \"{topic}\"\n");
            if streams.len() > 1 {
                s += "allowed_lateness = \"100d\"\n";
            }
            s += "\n";
        }
        s += "[[sinks]]\nname = \"alerts\"\ntopic = \"alerts\"\n\n[admin]\naddress = \"\"\n\n";
        s += extra;
        let p = self.path(name);
        std::fs::write(&p, s).unwrap();
        p
    }
}

struct Running {
    shutdown: Arc<AtomicBool>,
    metrics: Arc<PipelineMetrics>,
    thread: JoinHandle<Result<DaemonReport, String>>,
}

impl Running {
    fn start(config: &Path) -> Running {
        let config = Config::load(config).unwrap();
        let prepared = daemon::prepare(config).unwrap();
        let shutdown = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let s = shutdown.clone();
        let thread = std::thread::spawn(move || {
            daemon::run(prepared, s, |st: Started| {
                let _ = tx.send(st.metrics);
            })
            .map_err(|e| e.to_string())
        });
        let metrics = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the daemon starts");
        Running {
            shutdown,
            metrics,
            thread,
        }
    }

    fn wait_assigned(&self) {
        wait_for("partitions assigned", Duration::from_secs(30), || {
            self.metrics.partitions.load(Relaxed) > 0
        });
    }

    fn stop(self) -> DaemonReport {
        self.shutdown.store(true, Ordering::Release);
        self.thread
            .join()
            .unwrap()
            .expect("the daemon stops cleanly")
    }
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a replay of `lines` produces, as (key, value) pairs.
fn replayed(pattern: &str, setup: &Setup, lines: &[String]) -> BTreeMap<String, usize> {
    let file = setup.path("events.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let prog = common::program("p.cep", pattern);
    let (records, _, _) =
        common::run_replay(prog, &[Input::parse(&format!("events={}", file.display()))]);
    tally(records.iter().map(key_value))
}

fn key_value(r: &serde_json::Value) -> String {
    format!(
        "{} {}",
        r["key"],
        common::canon(&serde_json::json!({"sink": r["sink"], "ts": 0, "value": r["value"]}))
    )
}

fn tally(it: impl Iterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for k in it {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

fn consumed(msgs: &[Msg]) -> BTreeMap<String, usize> {
    tally(
        msgs.iter()
            .map(|m| key_value(&serde_json::from_str(&m.payload).expect("records are JSON"))),
    )
}

/// The records of `want` that `got` holds fewer times than `want` does.
fn missing<'a>(
    want: &'a BTreeMap<String, usize>,
    got: &BTreeMap<String, usize>,
) -> Vec<&'a String> {
    want.iter()
        .filter(|(k, n)| got.get(*k).is_none_or(|g| g < *n))
        .map(|(k, _)| k)
        .collect()
}

/// Rewrites part of a config file the test wrote.
fn edit_config(cfg: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(cfg).unwrap().replace(from, to);
    std::fs::write(cfg, text).unwrap();
}

/// The admin listener on `port` instead of none.
fn with_admin(cfg: &Path, port: u16) {
    edit_config(
        cfg,
        "address = \"\"",
        &format!("address = \"127.0.0.1:{port}\""),
    );
}

fn total(m: &BTreeMap<String, usize>) -> usize {
    m.values().sum()
}

#[test]
fn matches_through_kafka_equal_replay() {
    let broker = Broker::start();
    broker.create_topics(&[("events", 3), ("alerts", 1), ("dead", 1)]);
    let setup = Setup::new(ARRIVAL_PATTERN);
    let lines = generate(4000, 60, 11);
    let want = replayed(ARRIVAL_PATTERN, &setup, &lines);
    assert!(total(&want) > 20, "the stream has matches to find");
    let d =
        Running::start(&setup.config("k.toml", &broker.bootstrap(), &[("events", "events")], ""));
    d.wait_assigned();
    broker.produce_lines("events", &lines, "user_id");
    let msgs = broker.consume("alerts", total(&want), Duration::from_secs(60), false);
    let report = d.stop();
    let got = consumed(&msgs);
    assert_eq!(got, want, "the daemon's records differ from the replay's");
    assert_eq!(report.pipeline.events, lines.len() as u64);
    assert_eq!(report.dead_letters, 0);
    assert!(
        report.checkpoints >= 1,
        "the drain commits a last checkpoint"
    );
    // Key and pattern header of a record.
    let m = &msgs[0];
    let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
    assert_eq!(m.key.as_deref(), v["key"].as_str());
    assert_eq!(m.header("kairos-pattern"), Some("dbw"));
}

#[test]
fn event_time_streams_are_merged_in_time_order() {
    let broker = Broker::start();
    broker.create_topics(&[("payments", 2), ("bets", 2), ("alerts", 1), ("dead", 1)]);
    let pattern = std::fs::read_to_string("patterns/bonus_abuse.cep").unwrap();
    let setup = Setup::new(&pattern);
    let cfg = setup.config(
        "k.toml",
        &broker.bootstrap(),
        &[("payments", "payments"), ("bets", "bets")],
        "",
    );
    let d = Running::start(&cfg);
    d.wait_assigned();
    let read = |f: &str| -> Vec<String> {
        std::fs::read_to_string(format!("tests/examples/bonus_abuse/{f}"))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    };
    let (payments, bets) = (read("payments.jsonl"), read("bets.jsonl"));
    // Bets first: the topics arrive out of time order, and the allowed lateness puts them back.
    broker.produce_lines("bets", &bets, "user_id");
    broker.produce_lines("payments", &payments, "user_id");
    let n = (payments.len() + bets.len()) as u64;
    wait_for("every event taken in", Duration::from_secs(60), || {
        d.metrics.messages_in.load(Relaxed) >= n
    });
    // Events are held for the allowed lateness (100 days); the drain lets them through in
    // time order before the last checkpoint.
    let report = d.stop();
    assert_eq!(report.late, 0);
    let want = common::read_jsonl(Path::new("tests/examples/bonus_abuse/expected.jsonl"));
    let msgs = broker.consume("alerts", want.len(), Duration::from_secs(30), false);
    let got: Vec<serde_json::Value> = msgs
        .iter()
        .map(|m| serde_json::from_str(&m.payload).unwrap())
        .collect();
    if let Some(diff) = common::exact_multiset_diff(&got, &want) {
        panic!("{diff}");
    }
}

#[test]
fn malformed_events_go_to_the_dead_letter_topic() {
    let broker = Broker::start();
    broker.create_topics(&[("events", 1), ("alerts", 1), ("dead", 1)]);
    let setup = Setup::new(ARRIVAL_PATTERN);
    let d =
        Running::start(&setup.config("k.toml", &broker.bootstrap(), &[("events", "events")], ""));
    d.wait_assigned();
    let lines: Vec<String> = [
        r#"{"user_id":"u1","type":"deposit","amount":100,"ts":1}"#,
        r#"{"user_id":"u1","type":"bet","stake":"#,
        r#"{"user_id":"u1","type":"bet","stake":50,"ts":3}"#,
        "not json at all",
        r#"{"user_id":"u1","type":"withdrawal","amount":90,"ts":5}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    broker.produce_lines("events", &lines, "user_id");
    let dead = broker.consume("dead", 2, Duration::from_secs(30), false);
    let alerts = broker.consume("alerts", 1, Duration::from_secs(30), false);
    let report = d.stop();
    assert_eq!(dead.len(), 2, "both malformed events are dead letters");
    assert_eq!(dead[0].payload, lines[1]);
    assert_eq!(dead[1].payload, lines[3]);
    for m in &dead {
        assert_eq!(m.header("kairos-source-topic"), Some("events"));
        assert_eq!(m.header("kairos-source-partition"), Some("0"));
        assert!(
            m.header("kairos-error")
                .is_some_and(|e| e.contains("malformed")),
            "{m:?}"
        );
    }
    assert_eq!(dead[0].header("kairos-source-offset"), Some("1"));
    assert_eq!(dead[1].header("kairos-source-offset"), Some("3"));
    assert_eq!(report.dead_letters, 2);
    assert_eq!(alerts.len(), 1, "the good events still match");
}

#[test]
fn two_daemons_in_one_group_share_the_partitions() {
    let broker = Broker::start();
    broker.create_topics(&[("events", 4), ("alerts", 1), ("dead", 1)]);
    let setup = Setup::new(ARRIVAL_PATTERN);
    let lines = generate(4000, 80, 12);
    let want = replayed(ARRIVAL_PATTERN, &setup, &lines);
    let a =
        Running::start(&setup.config("a.toml", &broker.bootstrap(), &[("events", "events")], ""));
    let b =
        Running::start(&setup.config("b.toml", &broker.bootstrap(), &[("events", "events")], ""));
    wait_for(
        "both daemons hold partitions",
        Duration::from_secs(60),
        || {
            let (pa, pb) = (
                a.metrics.partitions.load(Relaxed),
                b.metrics.partitions.load(Relaxed),
            );
            pa > 0 && pb > 0 && pa + pb == 4
        },
    );
    broker.produce_lines("events", &lines, "user_id");
    let msgs = broker.consume("alerts", total(&want), Duration::from_secs(60), false);
    let (ra, rb) = (a.stop(), b.stop());
    assert!(
        ra.pipeline.events > 0 && rb.pipeline.events > 0,
        "both daemons took part"
    );
    assert_eq!(ra.pipeline.events + rb.pipeline.events, lines.len() as u64);
    assert_eq!(consumed(&msgs), want);
}

/// Polls the admin endpoint of a daemon process for one figure.
fn scrape(port: u16, name: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A daemon process, killed with SIGKILL when dropped (also when a test fails).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port for an admin listener.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `kairos run --config CFG` as a child process, appending its log to `log`.
fn spawn_daemon(cfg: &Path, log: &Path) -> Child {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
            .args(["run", "--config"])
            .arg(cfg)
            .stderr(stderr)
            .spawn()
            .expect("kairos run starts"),
    )
}

#[test]
fn kill_9_and_restart_loses_no_match() {
    let broker = Broker::start();
    broker.create_topics(&[("events", 2), ("alerts", 1), ("dead", 1)]);
    let setup = Setup::new(ARRIVAL_PATTERN);
    let lines = generate(6000, 50, 13);
    let want = replayed(ARRIVAL_PATTERN, &setup, &lines);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let extra = "[delivery]\ncheckpoint_interval = \"50ms\"\nstate_dir = \"state\"\n";
    let cfg = setup.config(
        "k.toml",
        &broker.bootstrap(),
        &[("events", "events")],
        extra,
    );
    with_admin(&cfg, port);
    // A killed member leaves the group only when its session times out.
    edit_config(
        &cfg,
        "[kafka.consumer]\n",
        "[kafka.consumer]\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500\n",
    );
    let log = setup.path("daemon.log");
    let spawn = || spawn_daemon(&cfg, &log);
    let child = spawn();
    wait_for(
        "the first daemon's partitions",
        Duration::from_secs(60),
        || scrape(port, "kairos_assigned_partitions").is_some_and(|n| n == 2),
    );
    let half = lines.len() / 2;
    broker.produce_lines("events", &lines[..half], "user_id");
    wait_for(
        "most of the first half taken in",
        Duration::from_secs(60),
        || scrape(port, "kairos_events_in_total").is_some_and(|n| n >= half as u64 * 3 / 4),
    );
    let c0 = scrape(port, "kairos_checkpoints_total").unwrap();
    wait_for(
        "a checkpoint of those events",
        Duration::from_secs(60),
        || scrape(port, "kairos_checkpoints_total").is_some_and(|n| n >= c0 + 2),
    );
    // kill -9: no drain, no last checkpoint.
    drop(child);
    let _child = spawn();
    wait_for(
        "the second daemon's partitions",
        Duration::from_secs(60),
        || scrape(port, "kairos_assigned_partitions").is_some_and(|n| n == 2),
    );
    broker.produce_lines("events", &lines[half..], "user_id");
    let distinct = want.len();
    let mut msgs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        msgs = broker.consume("alerts", usize::MAX, Duration::from_secs(3), false);
        let got = consumed(&msgs);
        let logs = std::fs::read_to_string(&log).unwrap_or_default();
        let decided =
            logs.matches("partial matches").count() + logs.matches("restored").count() >= 2;
        if decided && missing(&want, &got).is_empty() {
            break;
        }
    }
    let got = consumed(&msgs);
    let missing = missing(&want, &got);
    assert!(
        missing.is_empty(),
        "matches lost across kill -9: {missing:?}"
    );
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(extra.is_empty(), "records no replay produces: {extra:?}");
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains("engine state restored"),
        "the restart resumes the snapshot:\n{logs}"
    );
    let duplicates = total(&got) - total(&want);
    eprintln!(
        "kill -9 and restart: {distinct} distinct matches, all delivered, {duplicates} duplicates"
    );
}

/// Reads the alerts until every wanted record has come at least as often as wanted (duplicates
/// allowed) or `timeout` passed.
fn consume_covering(
    broker: &Broker,
    want: &BTreeMap<String, usize>,
    timeout: Duration,
) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = consumed(&broker.consume("alerts", usize::MAX, Duration::from_secs(3), false));
        let covered = missing(want, &got).is_empty();
        if covered || Instant::now() >= deadline {
            return got;
        }
    }
}

#[test]
fn broker_faults_lose_nothing() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let broker = Broker::mock();
    broker.create_topics(&[("events", 2), ("alerts", 1), ("dead", 1)]);
    let setup = Setup::new(ARRIVAL_PATTERN);
    let lines = generate(3000, 40, 14);
    let want = replayed(ARRIVAL_PATTERN, &setup, &lines);
    let d =
        Running::start(&setup.config("k.toml", &broker.bootstrap(), &[("events", "events")], ""));
    d.wait_assigned();
    let third = lines.len() / 3;
    broker.produce_lines("events", &lines[..third], "user_id");
    let mock = broker.mock_cluster();
    // Produce requests fail (retriably) a few times: the producer sends again.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 5],
    );
    broker.produce_lines("events", &lines[third..2 * third], "user_id");
    wait_for("the second third taken in", Duration::from_secs(60), || {
        d.metrics.events_in.load(Relaxed) >= 2 * third as u64
    });
    // The broker goes away for a while and comes back.
    mock.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    mock.broker_up(1).unwrap();
    broker.produce_lines("events", &lines[2 * third..], "user_id");
    let got = consume_covering(&broker, &want, Duration::from_secs(90));
    let m = &d.metrics;
    let figures = format!(
        "events in {}, records out {}, acknowledged {}, in flight {}, retried {}",
        m.events_in.load(Relaxed),
        m.records_out.load(Relaxed),
        m.deliveries_acked.load(Relaxed),
        m.deliveries_in_flight.load(Relaxed),
        m.delivery_retries.load(Relaxed)
    );
    let report = d.stop();
    let missing = missing(&want, &got);
    assert!(
        missing.is_empty(),
        "{} of {} matches lost to broker faults ({figures}); first: {:?}",
        missing.len(),
        want.len(),
        missing.first()
    );
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(extra.is_empty(), "records no replay produces: {extra:?}");
    assert_eq!(report.delivery_failures, 0);
}

#[test]
fn exactly_once_produces_each_match_once() {
    let broker = Broker::mock();
    broker.create_topics(&[("events", 2), ("alerts", 1), ("dead", 1)]);
    let setup = Setup::new(ARRIVAL_PATTERN);
    let lines = generate(3000, 40, 15);
    let want = replayed(ARRIVAL_PATTERN, &setup, &lines);
    let extra = "[delivery]\nguarantee = \"exactly-once\"\ncheckpoint_interval = \"100ms\"\n";
    let d = Running::start(&setup.config(
        "k.toml",
        &broker.bootstrap(),
        &[("events", "events")],
        extra,
    ));
    d.wait_assigned();
    broker.produce_lines("events", &lines, "user_id");
    let msgs = broker.consume("alerts", total(&want), Duration::from_secs(60), true);
    let report = d.stop();
    assert_eq!(consumed(&msgs), want);
    assert!(report.checkpoints >= 1, "transactions were committed");
}

#[test]
fn unreachable_brokers_are_a_clear_error() {
    let setup = Setup::new(ARRIVAL_PATTERN);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let extra = "[kafka.producer]\n\"socket.connection.setup.timeout.ms\" = 1000\n";
    let cfg = setup.config(
        "k.toml",
        &format!("127.0.0.1:{port}"),
        &[("events", "events")],
        extra,
    );
    let prepared = daemon::prepare(Config::load(&cfg).unwrap()).unwrap();
    let t0 = Instant::now();
    let err = daemon::run(prepared, Arc::new(AtomicBool::new(false)), |_| {}).unwrap_err();
    assert!(
        err.to_string().contains("cannot reach the Kafka brokers"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(60));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["run", "--check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the Kafka brokers"));
}

#[test]
fn a_table_from_a_compacted_topic_follows_the_topic() {
    let broker = Broker::start();
    broker.create_topics(&[("bets", 1), ("customers", 2), ("alerts", 1), ("dead", 1)]);
    // Rows keyed by customer; the key fills the `id` column.
    let rows = [
        (
            "u1",
            r#"{"segment":"retail","max_stake":100.5,"vip":false}"#,
        ),
        ("u2", r#"{"segment":"vip","max_stake":5000.5,"vip":true}"#),
    ];
    let p = broker.producer();
    for (k, v) in rows {
        p.send(
            rdkafka::producer::BaseRecord::to("customers")
                .key(k)
                .payload(v),
        )
        .unwrap();
    }
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(10)).unwrap();
    let pattern = std::fs::read_to_string("tests/tables/limit_breach/pattern.cep").unwrap();
    let setup = Setup::new(&pattern);
    let extra = "[[tables]]\nname = \"customers\"\npath = \"customers.tbl\"\ntopic = \"customers\"\nkey = \"id\"\n";
    let d =
        Running::start(&setup.config("k.toml", &broker.bootstrap(), &[("bets", "bets")], extra));
    d.wait_assigned();
    let bet = |user: &str, stake: u32, ts: u32| {
        format!(r#"{{"user_id":"{user}","stake":{stake},"ts":{ts}}}"#)
    };
    broker.produce_lines("bets", &[bet("u1", 90, 1), bet("u1", 150, 2)], "user_id");
    let first = broker.consume("alerts", 1, Duration::from_secs(30), false);
    assert_eq!(first.len(), 1, "150 is over u1's limit of 100.5");
    // u1's limit drops to 50.5 and u3 appears: the table follows its topic.
    for (k, v) in [
        ("u1", r#"{"segment":"retail","max_stake":50.5,"vip":false}"#),
        ("u3", r#"{"segment":"new","max_stake":10.5,"vip":false}"#),
    ] {
        p.send(
            rdkafka::producer::BaseRecord::to("customers")
                .key(k)
                .payload(v),
        )
        .unwrap();
    }
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(10)).unwrap();
    wait_for(
        "the table rebuilt and swapped",
        Duration::from_secs(30),
        || {
            broker.produce_lines("bets", &[bet("u3", 20, 3)], "user_id");
            broker
                .consume("alerts", 2, Duration::from_millis(500), false)
                .len()
                >= 2
        },
    );
    broker.produce_lines("bets", &[bet("u1", 90, 4)], "user_id");
    let all = broker.consume("alerts", usize::MAX, Duration::from_secs(3), false);
    d.stop();
    let users: Vec<String> = all
        .iter()
        .map(|m| {
            serde_json::from_str::<serde_json::Value>(&m.payload).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        users.iter().filter(|u| *u == "u1").count() >= 2,
        "90 is over u1's new limit: {users:?}"
    );
    assert!(
        users.contains(&"u3".to_string()),
        "u3 came with the update: {users:?}"
    );
}

#[test]
fn revoked_partitions_drop_their_partial_matches() {
    let broker = Broker::start();
    broker.create_topics(&[("events", 4), ("alerts", 1), ("dead", 1)]);
    let setup = Setup::new(ARRIVAL_PATTERN);
    let lines = generate(2000, 80, 16);
    // The eager protocol (every partition revoked, then reassigned): librdkafka's mock cluster
    // does not complete a cooperative rebalance for a member that joins a busy group.
    let eager = |name: &str| {
        let cfg = setup.config(name, &broker.bootstrap(), &[("events", "events")], "");
        edit_config(
            &cfg,
            "[kafka.consumer]\n",
            "[kafka.consumer]\n\"partition.assignment.strategy\" = \"range\"\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500\n",
        );
        cfg
    };
    let a = Running::start(&eager("a.toml"));
    a.wait_assigned();
    broker.produce_lines("events", &lines, "user_id");
    wait_for(
        "the first daemon took every event",
        Duration::from_secs(60),
        || a.metrics.events_in.load(Relaxed) >= lines.len() as u64,
    );
    // A second member joins: some of the first one's partitions move to it.
    let b = Running::start(&eager("b.toml"));
    wait_for("the partitions shared", Duration::from_secs(60), || {
        b.metrics.partitions.load(Relaxed) > 0 && a.metrics.partitions.load(Relaxed) < 4
    });
    let (ra, _) = (a.stop(), b.stop());
    assert!(
        ra.revoked_runs > 0,
        "the partial matches of the moved partitions are dropped and counted"
    );
}

#[test]
fn sigterm_drains_and_commits_before_exit() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let broker = Broker::start();
    broker.create_topics(&[("events", 2), ("alerts", 1), ("dead", 1)]);
    let setup = Setup::new(ARRIVAL_PATTERN);
    let lines = generate(1000, 30, 17);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = setup.config(
        "k.toml",
        &broker.bootstrap(),
        &[("events", "events")],
        "[delivery]\ncheckpoint_interval = \"1h\"\n",
    );
    with_admin(&cfg, port);
    let log = setup.path("daemon.log");
    let child = spawn_daemon(&cfg, &log);
    wait_for("partitions", Duration::from_secs(60), || {
        scrape(port, "kairos_assigned_partitions") == Some(2)
    });
    broker.produce_lines("events", &lines, "user_id");
    wait_for("every event taken in", Duration::from_secs(60), || {
        scrape(port, "kairos_events_in_total") == Some(lines.len() as u64)
    });
    // No checkpoint has run yet (the interval is an hour): only the drain can commit.
    assert_eq!(scrape(port, "kairos_checkpoints_total"), Some(0));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let logs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("stopped after draining"), "{logs}");
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "kairos-test")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition("events", 0);
    tpl.add_partition("events", 1);
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => o,
            _ => 0,
        })
        .sum();
    assert_eq!(
        total,
        lines.len() as i64,
        "the drain committed every event's offset"
    );
}
