//! A sportsbook: deposits and withdrawals (`payments`), sports bets and casino plays (`bets`).

use super::{GenEvent, Rng, Workload, Zipf};
use std::collections::VecDeque;

/// Customers with Zipf-skewed activity. Now and then one of them runs a bonus-abuse script
/// (a deposit, a few safe low-odds bets, a withdrawal of most of it within minutes) or a run of
/// rising stakes, so that the example patterns have something to find.
pub struct Sportsbook {
    rng: Rng,
    zipf: Zipf,
    keys: u64,
    ts: u64,
    /// Scripted events waiting for their time: (due time, stream, customer, json without ts).
    script: VecDeque<(u64, &'static str, u64, String)>,
    scripted: u64,
}

impl Sportsbook {
    pub fn new(keys: u64, seed: u64) -> Sportsbook {
        Sportsbook {
            rng: Rng::new(seed),
            zipf: Zipf::new(keys, 1.0),
            keys: keys.max(1),
            ts: 1_732_400_000_000,
            script: VecDeque::new(),
            scripted: 0,
        }
    }

    fn schedule(&mut self) {
        // Scripted customers are accounts of their own, beyond the regular ones, so that their
        // script is not interleaved with random activity.
        self.scripted += 1;
        let user = self.keys + self.scripted;
        let mut t = self.ts;
        if self.rng.chance(0.5) {
            // Bonus abuse: deposit, three or four safe bets, withdraw nearly all.
            let amount = 100 + self.rng.below(400);
            self.script.push_back((
                t,
                "payments",
                user,
                format!(r#""kind":"deposit","amount":{amount},"method":"card""#),
            ));
            let bets = 3 + self.rng.below(2);
            let stake = amount / bets + 5;
            for _ in 0..bets {
                t += 5_000 + self.rng.below(15_000);
                self.script.push_back((
                    t,
                    "bets",
                    user,
                    format!(
                        r#""product":"sports","odds":1.{:02},"stake":{stake}"#,
                        5 + self.rng.below(25)
                    ),
                ));
            }
            t += 20_000 + self.rng.below(40_000);
            self.script.push_back((
                t,
                "payments",
                user,
                format!(
                    r#""kind":"withdrawal","amount":{},"method":"card""#,
                    amount * 95 / 100
                ),
            ));
        } else {
            // A run of rising stakes.
            let mut stake = 5 + self.rng.below(20);
            for _ in 0..4 + self.rng.below(3) {
                t += 5_000 + self.rng.below(30_000);
                self.script.push_back((
                    t,
                    "bets",
                    user,
                    format!(
                        r#""product":"sports","odds":{:.2},"stake":{stake}"#,
                        1.5 + self.rng.below(300) as f64 / 100.0
                    ),
                ));
                stake += 5 + self.rng.below(50);
            }
            t += 30_000;
            self.script.push_back((
                t,
                "bets",
                user,
                format!(r#""product":"sports","odds":2.00,"stake":{}"#, stake / 3),
            ));
        }
        let mut v: Vec<_> = self.script.drain(..).collect();
        v.sort_by_key(|e| e.0);
        self.script = v.into();
    }
}

fn event(stream: &'static str, user: u64, ts: u64, body: &str) -> GenEvent {
    let key = format!("u{user:06}");
    GenEvent {
        stream,
        json: format!(r#"{{"ts":{ts},"user_id":"{key}",{body}}}"#),
        key,
        ts_ms: ts,
    }
}

impl Workload for Sportsbook {
    fn streams(&self) -> &'static [&'static str] {
        &["payments", "bets"]
    }

    fn next_event(&mut self) -> GenEvent {
        self.ts += self.rng.below(3);
        if self.script.front().is_some_and(|e| e.0 <= self.ts) {
            let (t, stream, user, body) = self.script.pop_front().expect("checked");
            return event(stream, user, t.max(self.ts), &body);
        }
        if self.rng.chance(0.002) {
            self.schedule();
        }
        let user = self.zipf.sample(&mut self.rng);
        let r = self.rng.below(100);
        let ts = self.ts;
        if r < 12 {
            let amount = 10 + self.rng.below(490);
            let method = ["card", "bank", "wallet"][self.rng.below(3) as usize];
            event(
                "payments",
                user,
                ts,
                &format!(r#""kind":"deposit","amount":{amount},"method":"{method}""#),
            )
        } else if r < 20 {
            let amount = 10 + self.rng.below(490);
            event(
                "payments",
                user,
                ts,
                &format!(r#""kind":"withdrawal","amount":{amount},"method":"card""#),
            )
        } else if r < 85 {
            let odds = 1.01 + self.rng.below(900) as f64 / 100.0;
            let stake = 1 + self.rng.below(100);
            let market = self.rng.below(500);
            event(
                "bets",
                user,
                ts,
                &format!(
                    r#""product":"sports","odds":{odds:.2},"stake":{stake},"market":"m{market}""#
                ),
            )
        } else {
            let stake = 1 + self.rng.below(50);
            event(
                "bets",
                user,
                ts,
                &format!(r#""product":"casino","stake":{stake}"#),
            )
        }
    }
}
