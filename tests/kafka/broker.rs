//! The broker the Kafka tests run against: a `tansu` process on a free loopback port when
//! `tansu` is on the PATH (CI installs it), librdkafka's in-process mock cluster otherwise.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub enum Broker {
    Mock(MockCluster<'static, rdkafka::producer::DefaultProducerContext>),
    Tansu { child: Child, port: u16 },
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Broker::Tansu { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tansu_on_path() -> bool {
    std::env::var("KAIROS_TEST_BROKER").map_or(true, |v| v != "mock")
        && Command::new("tansu")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

impl Broker {
    /// A real broker when one is installed, else the mock cluster.
    pub fn start() -> Broker {
        if tansu_on_path() {
            eprintln!("broker: tansu");
            Broker::tansu()
        } else {
            eprintln!("broker: librdkafka's mock cluster (tansu is not on the PATH)");
            Broker::mock()
        }
    }

    /// Always the mock cluster (for fault injection).
    pub fn mock() -> Broker {
        Broker::Mock(MockCluster::new(1).expect("mock cluster"))
    }

    fn tansu() -> Broker {
        let port = free_port();
        Broker::Tansu {
            child: Broker::spawn_tansu(port),
            port,
        }
    }

    /// Whether this is a real broker (tansu), not the mock cluster.
    pub fn is_real(&self) -> bool {
        matches!(self, Broker::Tansu { .. })
    }

    /// Stops the broker and starts a new one on the same port: with in-memory storage, every
    /// topic is gone and must be created again (with new topic ids).
    pub fn restart_empty(&mut self) {
        let Broker::Tansu { child, port } = self else {
            panic!("only a tansu broker restarts")
        };
        let _ = child.kill();
        let _ = child.wait();
        *child = Broker::spawn_tansu(*port);
    }

    fn spawn_tansu(port: u16) -> Child {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    pub fn bootstrap(&self) -> String {
        match self {
            Broker::Mock(m) => m.bootstrap_servers(),
            Broker::Tansu { port, .. } => format!("127.0.0.1:{port}"),
        }
    }

    pub fn mock_cluster(&self) -> &MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
        match self {
            Broker::Mock(m) => m,
            Broker::Tansu { .. } => panic!("not the mock cluster"),
        }
    }

    /// Creates each `(name, partitions)` topic.
    pub fn create_topics(&self, topics: &[(&str, i32)]) {
        for &(name, partitions) in topics {
            self.create_topic(name, partitions);
        }
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        match self {
            Broker::Mock(m) => m.create_topic(name, partitions, 1).expect("create topic"),
            Broker::Tansu { .. } => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", self.bootstrap())
                    .create()
                    .unwrap();
                let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
                let fut = admin.create_topics([&topic], &AdminOptions::new());
                let r = futures_lite_block_on(fut).expect("create topic");
                for t in r {
                    t.expect("topic created");
                }
            }
        }
    }

    pub fn producer(&self) -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("linger.ms", "0")
            // Tests inject produce errors; retries must not reorder a key's events, or the
            // engine would see another stream than the replay it is compared with.
            .set("enable.idempotence", "true")
            .create()
            .unwrap()
    }

    /// Produces `lines` to `topic`, keyed by `key` of each JSON line (raw lines are sent as
    /// they are, unkeyed, when they do not parse).
    pub fn produce_lines(&self, topic: &str, lines: &[String], key: &str) {
        let p = self.producer();
        for l in lines {
            let k = serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get(key).and_then(|k| k.as_str()).map(str::to_string));
            let mut rec = BaseRecord::<str, str>::to(topic).payload(l);
            if let Some(k) = &k {
                rec = rec.key(k.as_str());
            }
            let mut rec = rec;
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        p.poll(Duration::from_millis(10));
                        rec = r;
                    }
                }
            }
            p.poll(Duration::ZERO);
        }
        p.flush(Duration::from_secs(30)).expect("flush");
    }

    /// Reads `topic` from the start until `want` messages arrived or `timeout` passed.
    pub fn consume(
        &self,
        topic: &str,
        want: usize,
        timeout: Duration,
        committed_only: bool,
    ) -> Vec<Msg> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", format!("reader-{}", free_port()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .set(
                "isolation.level",
                if committed_only {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            )
            .create()
            .unwrap();
        // Assigned, not subscribed: reading needs no group coordinator, which a test that takes
        // the broker down would otherwise wait for.
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .expect("topic metadata");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                .unwrap();
        }
        c.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + timeout;
        while out.len() < want && Instant::now() < deadline {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                out.push(Msg {
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|x| {
                                    (
                                        x.key.to_string(),
                                        String::from_utf8_lossy(x.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
        }
        out
    }
}

/// A consumed message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub key: Option<String>,
    pub payload: String,
    pub headers: Vec<(String, String)>,
}

impl Msg {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.0 == k).map(|h| h.1.as_str())
    }
}

/// Runs a future to completion on this thread (the admin client's futures need no runtime).
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
    fn noop(_: *const ()) {}
    fn clone(p: *const ()) -> RawWaker {
        RawWaker::new(p, &VTABLE)
    }
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    // SAFETY: the vtable's functions ignore the data pointer.
    let waker = unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) };
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
