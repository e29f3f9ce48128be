//! A trading venue: orders (place, cancel, fill) per trader, and prices per symbol on a random
//! walk.

use super::{GenEvent, Rng, Workload, Zipf};
use std::collections::VecDeque;

/// Traders with Zipf-skewed activity over a few symbols whose prices walk randomly (with the
/// odd sharp dip and recovery). Now and then a trader spoofs: large orders placed and cancelled
/// within seconds, three times or more, then a fill on the other side.
pub struct Trading {
    rng: Rng,
    traders: Zipf,
    symbols: Vec<(String, f64)>,
    ts: u64,
    next_order: u64,
    script: VecDeque<(u64, GenEvent)>,
}

impl Trading {
    pub fn new(keys: u64, seed: u64) -> Trading {
        let symbols = (0..20u64)
            .map(|i| (format!("SYM{i:02}"), 50.0 + (i * 37 % 200) as f64))
            .collect();
        Trading {
            rng: Rng::new(seed),
            traders: Zipf::new(keys, 1.1),
            symbols,
            ts: 1_732_400_000_000,
            next_order: 1,
            script: VecDeque::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn order(
        &self,
        ts: u64,
        trader: u64,
        action: &str,
        id: u64,
        side: &str,
        qty: u64,
        price: f64,
    ) -> GenEvent {
        let key = format!("t{trader:05}");
        GenEvent {
            stream: "orders",
            json: format!(
                r#"{{"ts":{ts},"trader":"{key}","action":"{action}","order_id":"o{id}","side":"{side}","qty":{qty},"price":{price:.2}}}"#
            ),
            key,
            ts_ms: ts,
        }
    }

    fn spoof(&mut self, trader: u64) {
        let mut t = self.ts;
        let price = 100.0 + self.rng.below(100) as f64;
        let (spoof_side, real_side) = if self.rng.chance(0.5) {
            ("buy", "sell")
        } else {
            ("sell", "buy")
        };
        let mut events = Vec::new();
        for _ in 0..3 + self.rng.below(2) {
            let id = self.next_order;
            self.next_order += 1;
            let qty = 1000 + self.rng.below(9000);
            t += 200 + self.rng.below(1000);
            events.push((
                t,
                self.order(t, trader, "place", id, spoof_side, qty, price),
            ));
            t += 500 + self.rng.below(3000);
            events.push((
                t,
                self.order(t, trader, "cancel", id, spoof_side, qty, price),
            ));
        }
        t += 300;
        let id = self.next_order;
        self.next_order += 1;
        let qty = 100 + self.rng.below(400);
        events.push((t, self.order(t, trader, "fill", id, real_side, qty, price)));
        self.script.extend(events);
        let mut v: Vec<_> = self.script.drain(..).collect();
        v.sort_by_key(|e| e.0);
        self.script = v.into();
    }
}

impl Workload for Trading {
    fn streams(&self) -> &'static [&'static str] {
        &["orders", "prices"]
    }

    fn next_event(&mut self) -> GenEvent {
        self.ts += self.rng.below(3);
        if self.script.front().is_some_and(|e| e.0 <= self.ts) {
            let (_, mut e) = self.script.pop_front().expect("checked");
            if e.ts_ms < self.ts {
                e.set_ts(self.ts);
            }
            return e;
        }
        let ts = self.ts;
        if self.rng.chance(0.3) {
            let i = self.rng.below(self.symbols.len() as u64) as usize;
            // A random walk with rare sharp moves.
            let step = if self.rng.chance(0.002) {
                -0.04
            } else {
                (self.rng.unit() - 0.5) * 0.004
            };
            let (sym, p) = &mut self.symbols[i];
            *p = (*p * (1.0 + step)).max(1.0);
            let (sym, p) = (sym.clone(), *p);
            return GenEvent {
                stream: "prices",
                json: format!(r#"{{"ts":{ts},"symbol":"{sym}","price":{p:.4}}}"#),
                key: sym,
                ts_ms: ts,
            };
        }
        let trader = self.traders.sample(&mut self.rng);
        if self.rng.chance(0.0005) {
            self.spoof(trader);
        }
        let id = self.next_order;
        self.next_order += 1;
        let side = if self.rng.chance(0.5) { "buy" } else { "sell" };
        let qty = 1 + self.rng.below(500);
        let price = 100.0 + self.rng.below(10_000) as f64 / 100.0;
        let action = match self.rng.below(10) {
            0..=5 => "place",
            6..=7 => "cancel",
            _ => "fill",
        };
        self.order(ts, trader, action, id, side, qty, price)
    }
}
