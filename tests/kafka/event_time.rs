//! Event time through starts, restarts and pauses: a live stream stamped with the wall clock,
//! two topics of four partitions, read by a daemon that starts late, is stopped with SIGTERM or
//! SIGKILL and restarted, or sees a producer pause and burst. Every case must produce what a
//! replay of the same events produces, with no event dead-lettered as late: event time comes
//! from the data, not from the wall clock of the daemon.

use super::*;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

/// Per customer, within 5 s: a deposit, two or more bets, a withdrawal, over both topics.
const LIVE_PATTERN: &str = "pattern dbw
    from payments, bets
    key user_id
    time ts
    within 5s
    match d -> b{2,} -> w
    define
        d = payments(kind == \"deposit\")
        b = bets(stake >= 10)
        w = payments(kind == \"withdrawal\")
    emit alerts { user: key, deposit: d.ts, withdrawal: w.ts, bets: count(b) }
";

/// The events a live producer wrote, by topic, in the order written.
#[derive(Default)]
struct Produced {
    payments: Vec<String>,
    bets: Vec<String>,
}

impl Produced {
    /// Sends the events `kept` back (topic, key, line) through `p`, recording each as produced.
    fn send_all(
        &mut self,
        p: &rdkafka::producer::BaseProducer,
        kept: &mut Vec<(&'static str, String, String)>,
        sent: &AtomicU64,
    ) {
        for (topic, key, line) in kept.drain(..) {
            send(p, topic, &key, &line);
            match topic {
                "payments" => self.payments.push(line),
                _ => self.bets.push(line),
            }
            sent.fetch_add(1, Relaxed);
        }
    }
}

/// A producer writing scripted customers' events stamped with the wall clock (milliseconds,
/// strictly increasing, so that no two events tie), about `rate` a second, until stopped.
struct LiveStream {
    stop: Arc<AtomicBool>,
    /// While set, events are made and stamped but kept back; cleared, they go out at once.
    paused: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    produced: Arc<Mutex<Produced>>,
    thread: Option<JoinHandle<()>>,
}

impl LiveStream {
    fn start(broker: &Broker, rate: u64, seed: u64) -> LiveStream {
        let producer = broker.producer();
        // What a paused producer kept goes out as one burst: every partition's batch in one
        // produce request, as a client reconnecting with a full buffer sends it.
        let burst: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("linger.ms", "300")
            .set("enable.idempotence", "true")
            .create()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let produced = Arc::new(Mutex::new(Produced::default()));
        let (s, p, n, out) = (stop.clone(), paused.clone(), sent.clone(), produced.clone());
        let thread = std::thread::spawn(move || {
            let mut rng = seed | 1;
            let mut next = || {
                rng ^= rng >> 12;
                rng ^= rng << 25;
                rng ^= rng >> 27;
                rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
            };
            // Each customer's script: 0 = next a deposit, 1.. = bets made so far.
            let mut stage = [0u32; 40];
            let mut last_ts = 0i64;
            let mut kept: Vec<(&'static str, String, String)> = Vec::new();
            let gap = Duration::from_micros(1_000_000 / rate.max(1));
            while !s.load(Ordering::Acquire) {
                let user = (next() % stage.len() as u64) as usize;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64;
                let ts = now.max(last_ts + 1);
                last_ts = ts;
                let roll = next() % 10;
                let (topic, line) = match stage[user] {
                    0 => {
                        stage[user] = 1;
                        let line = format!(
                            r#"{{"user_id":"u{user}","kind":"deposit","amount":{},"ts":{ts}}}"#,
                            100 + next() % 100
                        );
                        ("payments", line)
                    }
                    k if k >= 3 && roll < 4 => {
                        stage[user] = 0;
                        let line = format!(
                            r#"{{"user_id":"u{user}","kind":"withdrawal","amount":90,"ts":{ts}}}"#
                        );
                        ("payments", line)
                    }
                    k => {
                        stage[user] = k + 1;
                        let stake = if roll < 2 { 5 } else { 10 + next() % 50 };
                        let line = format!(r#"{{"user_id":"u{user}","stake":{stake},"ts":{ts}}}"#);
                        ("bets", line)
                    }
                };
                kept.push((topic, format!("u{user}"), line));
                if !p.load(Ordering::Acquire) {
                    let mut out = out.lock().unwrap();
                    let is_burst = kept.len() > 1;
                    let via = if is_burst { &burst } else { &producer };
                    out.send_all(via, &mut kept, &n);
                    if is_burst {
                        rdkafka::producer::Producer::flush(via, Duration::from_secs(30)).unwrap();
                    }
                }
                std::thread::sleep(gap);
            }
            out.lock().unwrap().send_all(&producer, &mut kept, &n);
            rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).unwrap();
        });
        LiveStream {
            stop,
            paused,
            sent,
            produced,
            thread: Some(thread),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Relaxed)
    }

    /// Stops producing and returns what was produced.
    fn finish(mut self) -> Produced {
        self.stop.store(true, Ordering::Release);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.produced.lock().unwrap())
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn send(p: &rdkafka::producer::BaseProducer, topic: &str, key: &str, line: &str) {
    let mut rec = rdkafka::producer::BaseRecord::to(topic)
        .key(key)
        .payload(line);
    loop {
        match p.send(rec) {
            Ok(()) => break,
            Err((_, r)) => {
                p.poll(Duration::from_millis(5));
                rec = r;
            }
        }
    }
    p.poll(Duration::ZERO);
}

/// What a replay of the produced events gives.
fn replay_of(setup: &Setup, produced: &Produced) -> BTreeMap<String, usize> {
    let write = |name: &str, lines: &[String]| {
        let f = setup.path(name);
        std::fs::write(&f, lines.join("\n") + "\n").unwrap();
        f
    };
    let payments = write("payments.jsonl", &produced.payments);
    let bets = write("bets.jsonl", &produced.bets);
    let prog = common::program("p.cep", LIVE_PATTERN);
    let (records, _, _) = common::run_replay(
        prog,
        &[
            Input::parse(&format!("payments={}", payments.display())),
            Input::parse(&format!("bets={}", bets.display())),
        ],
    );
    tally(records.iter().map(key_value))
}

fn live_setup(broker: &Broker, extra: &str) -> (Setup, PathBuf) {
    broker.create_topics(&[("payments", 4), ("bets", 4), ("alerts", 1), ("dead", 1)]);
    let setup = Setup::new(LIVE_PATTERN);
    let cfg = setup.config(
        "k.toml",
        &broker.bootstrap(),
        &[("payments", "payments"), ("bets", "bets")],
        extra,
    );
    edit_config(
        &cfg,
        "allowed_lateness = \"100d\"",
        "allowed_lateness = \"2s\"",
    );
    (setup, cfg)
}

/// Asserts that the alerts topic holds every record of `want` and none that `want` lacks, and
/// that the dead-letter topic is empty.
fn assert_equal_to_replay(broker: &Broker, want: &BTreeMap<String, usize>, exact: bool) {
    assert!(total(want) > 10, "the stream makes matches: {want:?}");
    let got = consume_covering(broker, want, Duration::from_secs(60));
    let dead = broker.consume("dead", usize::MAX, Duration::from_secs(2), false);
    let late: Vec<_> = dead
        .iter()
        .filter_map(|m| m.header("kairos-error"))
        .take(5)
        .collect();
    assert!(
        dead.is_empty(),
        "{} events dead-lettered, first: {late:?}",
        dead.len()
    );
    let missing = missing(want, &got);
    assert!(
        missing.is_empty(),
        "{} of {} records missing, first: {:?}",
        missing.len(),
        total(want),
        missing.first()
    );
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(extra.is_empty(), "records no replay produces: {extra:?}");
    if exact {
        assert_eq!(&got, want, "each record once");
    }
}

/// Waits until the in-process daemon `d` has taken in every event produced, stops it, and
/// asserts that its alerts equal a replay of those events, each once, with none late.
fn assert_daemon_equals_replay(broker: &Broker, setup: &Setup, d: Running, produced: &Produced) {
    let n = (produced.payments.len() + produced.bets.len()) as u64;
    wait_for("every event taken in", Duration::from_secs(60), || {
        d.metrics.messages_in.load(Relaxed) >= n
    });
    let want = replay_of(setup, produced);
    let report = d.stop();
    assert_equal_to_replay(broker, &want, true);
    assert_eq!(report.late, 0);
}

#[test]
fn a_late_start_reads_the_backlog_without_late_events() {
    let broker = Broker::start();
    let (setup, cfg) = live_setup(&broker, "");
    let stream = LiveStream::start(&broker, 600, 21);
    // The stream runs for a while before any daemon reads it: a deploy, or a failover.
    wait_for("a backlog", Duration::from_secs(60), || {
        stream.sent() >= 3000
    });
    let d = Running::start(&cfg);
    d.wait_assigned();
    let more = stream.sent() + 1500;
    wait_for("more live events", Duration::from_secs(60), || {
        stream.sent() >= more
    });
    let produced = stream.finish();
    assert_daemon_equals_replay(&broker, &setup, d, &produced);
}

/// A daemon is stopped (SIGTERM, or SIGKILL) while the stream goes on, and started again two
/// seconds later with the backlog waiting.
fn restart_with_backlog(signal: &str, seed: u64) {
    let broker = Broker::start();
    let port = free_port();
    let (setup, cfg) = live_setup(
        &broker,
        "[delivery]\ncheckpoint_interval = \"200ms\"\nstate_dir = \"state\"\n",
    );
    with_admin(&cfg, port);
    edit_config(
        &cfg,
        "[kafka.consumer]\n",
        "[kafka.consumer]\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500\n",
    );
    let log = setup.path("daemon.log");
    let child = spawn_daemon(&cfg, &log);
    wait_for("partitions", Duration::from_secs(60), || {
        scrape(port, "kairos_assigned_partitions") == Some(8)
    });
    let stream = LiveStream::start(&broker, 600, seed);
    wait_for("events taken in", Duration::from_secs(60), || {
        scrape(port, "kairos_events_in_total").is_some_and(|n| n >= 2000)
    });
    let status = std::process::Command::new("kill")
        .args([signal, &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The stream goes on while no daemon reads it.
    std::thread::sleep(Duration::from_secs(2));
    let _child = spawn_daemon(&cfg, &log);
    let more = stream.sent() + 1500;
    wait_for("more live events", Duration::from_secs(60), || {
        stream.sent() >= more
    });
    let produced = stream.finish();
    let want = replay_of(&setup, &produced);
    assert_equal_to_replay(&broker, &want, false);
    assert_eq!(scrape(port, "kairos_late_events_total"), Some(0));
}

#[test]
fn sigterm_and_restart_with_a_backlog_loses_nothing() {
    restart_with_backlog("-TERM", 22);
}

#[test]
fn sigkill_and_restart_with_a_backlog_loses_nothing() {
    restart_with_backlog("-KILL", 23);
}

#[test]
fn a_producer_pause_then_a_burst_is_not_late() {
    let broker = Broker::start();
    // The producer holds its events for 3 s, within the allowed lateness (4 s here), while idle
    // advance (100 ms, the default) runs on the quiet input: the burst must be matched, not
    // dead-lettered, however unevenly the consumer reads its partitions.
    let (setup, cfg) = live_setup(&broker, "");
    edit_config(
        &cfg,
        "allowed_lateness = \"2s\"",
        "allowed_lateness = \"4s\"",
    );
    let d = Running::start(&cfg);
    d.wait_assigned();
    let stream = LiveStream::start(&broker, 600, 24);
    wait_for("events", Duration::from_secs(60), || stream.sent() >= 1000);
    // The producer stops sending for 3 s, then sends all it made meanwhile at once.
    stream.paused.store(true, Ordering::Release);
    std::thread::sleep(Duration::from_secs(3));
    stream.paused.store(false, Ordering::Release);
    let more = stream.sent() + 2500;
    wait_for("the burst and more", Duration::from_secs(60), || {
        stream.sent() >= more
    });
    let produced = stream.finish();
    assert_daemon_equals_replay(&broker, &setup, d, &produced);
}

#[test]
fn a_quiet_stream_still_fires_its_absences() {
    let broker = Broker::start();
    broker.create_topics(&[("payments", 4), ("bets", 4), ("alerts", 1), ("dead", 1)]);
    let pattern = "pattern idle_deposit
        from payments, bets
        key user_id
        time ts
        within 2s
        match d -> !b
        define
            d = payments(kind == \"deposit\")
            b = bets(stake > 0)
        emit alerts { user: key, deposited_at: d.ts }
    ";
    let setup = Setup::new(pattern);
    let cfg = setup.config(
        "k.toml",
        &broker.bootstrap(),
        &[("payments", "payments"), ("bets", "bets")],
        "",
    );
    edit_config(
        &cfg,
        "allowed_lateness = \"100d\"",
        "allowed_lateness = \"1s\"",
    );
    let d = Running::start(&cfg);
    d.wait_assigned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    // One deposit with a bet after it, one without; then nothing more, on either topic.
    broker.produce_lines(
        "payments",
        &[
            format!(r#"{{"user_id":"a","kind":"deposit","ts":{now}}}"#),
            format!(r#"{{"user_id":"b","kind":"deposit","ts":{}}}"#, now + 1),
        ],
        "user_id",
    );
    broker.produce_lines(
        "bets",
        &[format!(r#"{{"user_id":"a","stake":5,"ts":{}}}"#, now + 500)],
        "user_id",
    );
    let alerts = broker.consume("alerts", 1, Duration::from_secs(30), false);
    let extra = broker.consume("alerts", 2, Duration::from_secs(2), false);
    d.stop();
    assert_eq!(alerts.len(), 1, "b's window closes with no bet in it");
    assert_eq!(extra.len(), 1, "a bet: no alert for a");
    let r: serde_json::Value = serde_json::from_str(&alerts[0].payload).unwrap();
    assert_eq!(r["key"], "b");
}
