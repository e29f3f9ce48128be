//! The ring against the usual alternatives, in the same run: one producer and one consumer on
//! two cores, both spinning.
//!
//! - `one_way/*`: messages per second from one thread to the other (a `u64` each).
//! - `ping_pong/*`: the round trip of one message there and back (two queues).
//! - `ping_pong_interleaved` (printed, not a criterion group): the Kairos ring and `rtrb`
//!   alternating, round by round, so that both meet the same state of the machine (on a virtual
//!   machine that state drifts between criterion's consecutive groups by more than the queues
//!   differ), each both ways, and each one way with the other queue carrying the way back.
//!
//! Run: `cargo bench --bench ring` (or `-- ping_pong_interleaved` for that one alone).

use criterion::{criterion_group, Criterion, Throughput};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CAPACITY: usize = 1024;

/// One end of each queue under test, spinning on full and empty.
trait Tx: Send + 'static {
    fn send(&mut self, v: u64);
}
trait Rx: Send + 'static {
    fn recv(&mut self) -> u64;
}

struct KairosTx(kairos::ring::Producer<u64>);
struct KairosRx(kairos::ring::Consumer<u64>);
impl Tx for KairosTx {
    #[inline]
    fn send(&mut self, mut v: u64) {
        while let Err(back) = self.0.try_push(v) {
            v = back;
            std::hint::spin_loop();
        }
    }
}
impl Rx for KairosRx {
    #[inline]
    fn recv(&mut self) -> u64 {
        loop {
            if let Some(v) = self.0.try_pop() {
                return v;
            }
            std::hint::spin_loop();
        }
    }
}

struct RtrbTx(rtrb::Producer<u64>);
struct RtrbRx(rtrb::Consumer<u64>);
impl Tx for RtrbTx {
    #[inline]
    fn send(&mut self, mut v: u64) {
        while let Err(rtrb::PushError::Full(back)) = self.0.push(v) {
            v = back;
            std::hint::spin_loop();
        }
    }
}
impl Rx for RtrbRx {
    #[inline]
    fn recv(&mut self) -> u64 {
        loop {
            if let Ok(v) = self.0.pop() {
                return v;
            }
            std::hint::spin_loop();
        }
    }
}

struct ArrayTx(Arc<crossbeam_queue::ArrayQueue<u64>>);
struct ArrayRx(Arc<crossbeam_queue::ArrayQueue<u64>>);
impl Tx for ArrayTx {
    #[inline]
    fn send(&mut self, mut v: u64) {
        while let Err(back) = self.0.push(v) {
            v = back;
            std::hint::spin_loop();
        }
    }
}
impl Rx for ArrayRx {
    #[inline]
    fn recv(&mut self) -> u64 {
        loop {
            if let Some(v) = self.0.pop() {
                return v;
            }
            std::hint::spin_loop();
        }
    }
}

struct ChanTx(crossbeam_channel::Sender<u64>);
struct ChanRx(crossbeam_channel::Receiver<u64>);
impl Tx for ChanTx {
    #[inline]
    fn send(&mut self, mut v: u64) {
        while let Err(crossbeam_channel::TrySendError::Full(back)) = self.0.try_send(v) {
            v = back;
            std::hint::spin_loop();
        }
    }
}
impl Rx for ChanRx {
    #[inline]
    fn recv(&mut self) -> u64 {
        loop {
            if let Ok(v) = self.0.try_recv() {
                return v;
            }
            std::hint::spin_loop();
        }
    }
}

fn kairos_pair() -> (KairosTx, KairosRx) {
    let (t, r) = kairos::ring::ring(CAPACITY, false, false);
    (KairosTx(t), KairosRx(r))
}
fn rtrb_pair() -> (RtrbTx, RtrbRx) {
    let (t, r) = rtrb::RingBuffer::new(CAPACITY);
    (RtrbTx(t), RtrbRx(r))
}
fn array_pair() -> (ArrayTx, ArrayRx) {
    let q = Arc::new(crossbeam_queue::ArrayQueue::new(CAPACITY));
    (ArrayTx(q.clone()), ArrayRx(q))
}
fn chan_pair() -> (ChanTx, ChanRx) {
    let (t, r) = crossbeam_channel::bounded(CAPACITY);
    (ChanTx(t), ChanRx(r))
}

/// The machine's cores, read once before any thread is pinned: `get_core_ids` reports the
/// calling thread's affinity, which a pinned thread passes on to the threads it spawns.
fn cores() -> &'static [core_affinity::CoreId] {
    static CORES: std::sync::OnceLock<Vec<core_affinity::CoreId>> = std::sync::OnceLock::new();
    CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default())
}

fn pin(core: usize) {
    let ids = cores();
    if let Some(id) = ids.get(core % ids.len().max(1)) {
        core_affinity::set_for_current(*id);
    }
}

/// Sends `n` messages from a thread pinned to core 1 to this thread (core 0).
fn one_way<T: Tx, R: Rx>(n: u64, (mut tx, mut rx): (T, R)) -> Duration {
    pin(0);
    let start_gate = Arc::new(std::sync::Barrier::new(2));
    let gate = start_gate.clone();
    let producer = std::thread::spawn(move || {
        pin(1);
        gate.wait();
        for i in 0..n {
            tx.send(i);
        }
    });
    start_gate.wait();
    let t0 = Instant::now();
    let mut sum = 0u64;
    for _ in 0..n {
        sum = sum.wrapping_add(rx.recv());
    }
    let elapsed = t0.elapsed();
    producer.join().expect("producer");
    assert_eq!(sum, n.wrapping_mul(n.wrapping_sub(1)) / 2);
    elapsed
}

/// One-way with the ring's batched calls: the producer publishes up to 64 at a time, the
/// consumer releases what it read in one store.
fn one_way_kairos_batched(n: u64) -> Duration {
    pin(0);
    let (mut tx, mut rx) = kairos::ring::ring::<u64>(CAPACITY, false, false);
    let start_gate = Arc::new(std::sync::Barrier::new(2));
    let gate = start_gate.clone();
    let producer = std::thread::spawn(move || {
        pin(1);
        gate.wait();
        let mut items = (0..n).peekable();
        while items.peek().is_some() {
            let mut chunk = items.by_ref().take(64).peekable();
            while chunk.peek().is_some() {
                if tx.push_iter(&mut chunk) == 0 {
                    std::hint::spin_loop();
                }
            }
        }
    });
    start_gate.wait();
    let t0 = Instant::now();
    let (mut got, mut sum) = (0u64, 0u64);
    while got < n {
        let k = rx.pop_batch(64, |v| sum = sum.wrapping_add(v));
        if k == 0 {
            std::hint::spin_loop();
        }
        got += k as u64;
    }
    let elapsed = t0.elapsed();
    producer.join().expect("producer");
    assert_eq!(sum, n.wrapping_mul(n.wrapping_sub(1)) / 2);
    elapsed
}

/// `n` round trips: this thread sends, a thread on the other core echoes. The two directions
/// may use different queues.
fn ping_pong<T: Tx, R: Rx, T2: Tx, R2: Rx>(n: u64, there: (T, R), back: (T2, R2)) -> Duration {
    pin(0);
    let (mut to_echo, mut at_echo) = there;
    let (mut from_echo, mut at_home) = back;
    let start_gate = Arc::new(std::sync::Barrier::new(2));
    let gate = start_gate.clone();
    let echo = std::thread::spawn(move || {
        pin(1);
        gate.wait();
        for _ in 0..n {
            let v = at_echo.recv();
            from_echo.send(v);
        }
    });
    start_gate.wait();
    let t0 = Instant::now();
    for i in 0..n {
        to_echo.send(i);
        let v = at_home.recv();
        debug_assert_eq!(v, i);
    }
    let elapsed = t0.elapsed();
    echo.join().expect("echo");
    elapsed
}

/// Messages per iteration of `one_way`, round trips per iteration of `ping_pong`: large enough
/// that starting the second thread is noise.
const ONE_WAY: u64 = 1_000_000;
const ROUND_TRIPS: u64 = 100_000;

/// Runs `f` once per iteration and adds up the measured times.
fn repeat(iters: u64, mut f: impl FnMut() -> Duration) -> Duration {
    (0..iters).map(|_| f()).sum()
}

fn bench(c: &mut Criterion) {
    assert!(cores().len() >= 2, "the ring benchmarks need two cores");
    let mut g = c.benchmark_group("one_way");
    g.throughput(Throughput::Elements(ONE_WAY));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("kairos_ring", |b| {
        b.iter_custom(|i| repeat(i, || one_way(ONE_WAY, kairos_pair())))
    });
    g.bench_function("kairos_ring_batched", |b| {
        b.iter_custom(|i| repeat(i, || one_way_kairos_batched(ONE_WAY)))
    });
    g.bench_function("rtrb", |b| {
        b.iter_custom(|i| repeat(i, || one_way(ONE_WAY, rtrb_pair())))
    });
    g.bench_function("crossbeam_array_queue", |b| {
        b.iter_custom(|i| repeat(i, || one_way(ONE_WAY, array_pair())))
    });
    g.bench_function("crossbeam_channel_bounded", |b| {
        b.iter_custom(|i| repeat(i, || one_way(ONE_WAY, chan_pair())))
    });
    g.finish();

    let mut g = c.benchmark_group("ping_pong");
    g.throughput(Throughput::Elements(ROUND_TRIPS));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("kairos_ring", |b| {
        b.iter_custom(|i| repeat(i, || ping_pong(ROUND_TRIPS, kairos_pair(), kairos_pair())))
    });
    g.bench_function("rtrb", |b| {
        b.iter_custom(|i| repeat(i, || ping_pong(ROUND_TRIPS, rtrb_pair(), rtrb_pair())))
    });
    g.bench_function("crossbeam_array_queue", |b| {
        b.iter_custom(|i| repeat(i, || ping_pong(ROUND_TRIPS, array_pair(), array_pair())))
    });
    g.bench_function("crossbeam_channel_bounded", |b| {
        b.iter_custom(|i| repeat(i, || ping_pong(ROUND_TRIPS, chan_pair(), chan_pair())))
    });
    g.finish();
}

/// Rounds of `ping_pong_interleaved`: each runs every configuration once.
const ROUNDS: usize = 30;

/// Ping-pong of the Kairos ring and `rtrb` in alternation, each round starting with another
/// configuration, so that all meet the same drift of the machine. Besides each queue both ways,
/// the two mixed configurations (one queue from the sending thread to the echoing one, the other
/// queue back) show in which direction a difference lies. Prints the median round trip of each.
fn ping_pong_interleaved() {
    let per_trip = |d: Duration| d.as_nanos() as f64 / ROUND_TRIPS as f64;
    const CONFIGS: [&str; 4] = [
        "kairos_ring both ways",
        "rtrb both ways",
        "kairos_ring there, rtrb back",
        "rtrb there, kairos_ring back",
    ];
    let mut got: [Vec<f64>; 4] = Default::default();
    for round in 0..ROUNDS {
        for i in 0..CONFIGS.len() {
            let config = (round + i) % CONFIGS.len();
            let t = match config {
                0 => ping_pong(ROUND_TRIPS, kairos_pair(), kairos_pair()),
                1 => ping_pong(ROUND_TRIPS, rtrb_pair(), rtrb_pair()),
                2 => ping_pong(ROUND_TRIPS, kairos_pair(), rtrb_pair()),
                _ => ping_pong(ROUND_TRIPS, rtrb_pair(), kairos_pair()),
            };
            got[config].push(per_trip(t));
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "ping_pong_interleaved: {ROUNDS} rounds of {ROUND_TRIPS} round trips, median ns per round trip"
    );
    for (name, v) in CONFIGS.iter().zip(&got) {
        println!("  {name:<30} {:>5.0}", median(v));
    }
}

criterion_group!(benches, bench);

fn main() {
    // Criterion's filter is the first argument that is not a flag; the interleaved run goes by
    // the same name.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    if "ping_pong_interleaved".contains(filter.as_str()) {
        assert!(cores().len() >= 2, "the ring benchmarks need two cores");
        ping_pong_interleaved();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
