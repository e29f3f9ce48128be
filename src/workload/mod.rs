//! Synthetic, reproducible event streams for the demo, the load generator (`kairos-gen`) and the
//! benchmark harness: a sportsbook (payments and bets of customers with Zipf-skewed activity,
//! a few of whom abuse bonuses) and a trading venue (orders, cancels, fills, and prices on a
//! random walk, with a few spoofers).
//!
//! ```
//! use kairos::workload::{Sportsbook, Workload};
//! let mut w = Sportsbook::new(1_000, 7);
//! let e = w.next_event();
//! assert!(e.stream == "payments" || e.stream == "bets");
//! assert!(e.json.contains(&format!("\"user_id\":\"{}\"", e.key)));
//! ```

mod sportsbook;
mod trading;

pub use sportsbook::Sportsbook;
pub use trading::Trading;

/// One generated event: its stream, its key, its event time (ms) and its JSON text.
#[derive(Clone, Debug, PartialEq)]
pub struct GenEvent {
    pub stream: &'static str,
    pub key: String,
    pub ts_ms: u64,
    pub json: String,
}

impl GenEvent {
    /// Moves the event to time `ts_ms`, in its JSON too (where `ts` is always the first field).
    pub fn set_ts(&mut self, ts_ms: u64) {
        let old = format!("{{\"ts\":{}", self.ts_ms);
        self.json = self.json.replacen(&old, &format!("{{\"ts\":{ts_ms}"), 1);
        self.ts_ms = ts_ms;
    }
}

/// A generator of events, endless and reproducible from its seed.
pub trait Workload: Send {
    /// The streams it writes, in the order patterns usually name them.
    fn streams(&self) -> &'static [&'static str];
    fn next_event(&mut self) -> GenEvent;
}

/// Makes a workload by name: `sportsbook` (alias `betting`) or `trading`.
pub fn by_name(name: &str, keys: u64, seed: u64) -> Option<Box<dyn Workload>> {
    match name {
        "sportsbook" | "betting" => Some(Box::new(Sportsbook::new(keys, seed))),
        "trading" => Some(Box::new(Trading::new(keys, seed))),
        _ => None,
    }
}

/// xorshift64*: small, fast and the same on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// Zipf-distributed ranks in [0, n): rank k is drawn with probability proportional to
/// 1 / (k+1)^s, so a few customers (or symbols) are much more active than most, as in real
/// sportsbooks and markets.
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// The table costs 8 bytes per rank.
    pub fn new(n: u64, s: f64) -> Zipf {
        let n = n.max(1) as usize;
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for k in 0..n {
            acc += 1.0 / ((k + 1) as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_low_ranks() {
        let z = Zipf::new(1000, 1.0);
        let mut rng = Rng::new(1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[z.sample(&mut rng) as usize] += 1;
        }
        assert!(counts[0] > 10 * counts[99]);
        assert!(counts[999] < counts[0]);
    }

    #[test]
    fn workloads_are_reproducible() {
        for name in ["sportsbook", "trading"] {
            let mut a = by_name(name, 100, 9).unwrap();
            let mut b = by_name(name, 100, 9).unwrap();
            for _ in 0..1000 {
                assert_eq!(a.next_event(), b.next_event());
            }
        }
    }

    #[test]
    fn generated_events_are_json_in_time_order() {
        for name in ["sportsbook", "trading"] {
            let mut w = by_name(name, 50, 3).unwrap();
            let mut last = 0;
            for _ in 0..5000 {
                let e = w.next_event();
                let v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
                assert_eq!(v["ts"].as_u64(), Some(e.ts_ms));
                assert!(e.ts_ms >= last);
                last = e.ts_ms;
                assert!(w.streams().contains(&e.stream));
            }
        }
    }
}
