//! `kairos-gen`: writes a synthetic, reproducible event stream as JSON lines.
//!
//! ```text
//! kairos-gen betting --events 1000000 --keys 10000 --seed 7 --out bets.jsonl
//! ```
//!
//! The betting stream holds deposits, bets (stake, odds), casino plays and withdrawals of
//! customers whose activity is skewed (a few customers are much more active than most); the time
//! advances by a few milliseconds per event.

use std::io::Write;

/// xorshift64*: small, fast and reproducible across platforms.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Args {
    kind: String,
    events: u64,
    keys: u64,
    seed: u64,
    out: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let kind = it
        .next()
        .ok_or("usage: kairos-gen betting [--events N] [--keys K] [--seed S] [--out FILE]")?;
    let mut a = Args {
        kind,
        events: 1_000_000,
        keys: 10_000,
        seed: 7,
        out: None,
    };
    while let Some(flag) = it.next() {
        let val = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || {
            val.parse::<u64>()
                .map_err(|_| format!("{flag}: `{val}` is not a number"))
        };
        match flag.as_str() {
            "--events" => a.events = num()?,
            "--keys" => a.keys = num()?.max(1),
            "--seed" => a.seed = num()?,
            "--out" => a.out = Some(val),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.kind != "betting" {
        return Err(format!("unknown stream kind `{}` (known: betting)", a.kind));
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kairos-gen: {e}");
            std::process::exit(2);
        }
    };
    let out: Box<dyn Write> = match &args.out {
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("kairos-gen: cannot create {p}: {e}");
                std::process::exit(2);
            }
        },
        None => Box::new(std::io::stdout().lock()),
    };
    let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
    let mut rng = Rng(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut ts: u64 = 1_732_400_000_000;
    for _ in 0..args.events {
        ts += rng.below(3);
        // Skewed activity: squaring a uniform draw favours low customer numbers.
        let u = rng.unit();
        let user = ((u * u) * args.keys as f64) as u64 % args.keys;
        let r = rng.below(100);
        let line = if r < 15 {
            format!(
                r#"{{"ts":{ts},"user_id":"u{user:06}","type":"deposit","amount":{},"method":"card"}}"#,
                10 + rng.below(490)
            )
        } else if r < 80 {
            let odds = 1.01 + rng.below(900) as f64 / 100.0;
            format!(
                r#"{{"ts":{ts},"user_id":"u{user:06}","type":"bet","stake":{},"odds":{odds:.2},"market":"m{}","product":"sports"}}"#,
                1 + rng.below(100),
                rng.below(500)
            )
        } else if r < 92 {
            format!(
                r#"{{"ts":{ts},"user_id":"u{user:06}","type":"casino","stake":{},"product":"casino"}}"#,
                1 + rng.below(50)
            )
        } else {
            format!(
                r#"{{"ts":{ts},"user_id":"u{user:06}","type":"withdrawal","amount":{}}}"#,
                10 + rng.below(490)
            )
        };
        if writeln!(w, "{line}").is_err() {
            std::process::exit(1);
        }
    }
    if w.flush().is_err() {
        std::process::exit(1);
    }
}
