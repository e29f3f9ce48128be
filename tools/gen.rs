//! `kairos-gen`: writes a synthetic, reproducible event stream as JSON lines.
//!
//! ```text
//! kairos-gen betting --events 1000000 --keys 10000 --seed 7 --out bets.jsonl
//! kairos-gen sportsbook --events 1000000 --keys 10000 --out-dir data/      # payments, bets
//! kairos-gen trading --events 1000000 --keys 1000 --out-dir data/          # orders, prices
//! kairos-gen sportsbook --events 100000 --kafka localhost:9092 --rate 20000
//! ```
//!
//! `betting` is the single-stream benchmark input (stream `events`): deposits, bets (stake,
//! odds), casino plays and withdrawals of customers whose activity is skewed; the time advances
//! by a few milliseconds per event. `sportsbook` and `trading` are the multi-stream workloads of
//! [`kairos::workload`] (Zipf-skewed customers and traders, scripted abusers and spoofers), the
//! inputs of the example patterns: one file per stream under `--out-dir`, or one topic per
//! stream on the Kafka brokers of `--kafka`, offered open loop at `--rate` events per second.

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
    out_dir: Option<String>,
    kafka: Option<String>,
    rate: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let kind = it
        .next()
        .ok_or("usage: kairos-gen betting|sportsbook|trading [--events N] [--keys K] [--seed S] [--out FILE | --out-dir DIR | --kafka BROKERS [--rate N]]")?;
    let mut a = Args {
        kind,
        events: 1_000_000,
        keys: 10_000,
        seed: 7,
        out: None,
        out_dir: None,
        kafka: None,
        rate: 0,
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
            "--out-dir" => a.out_dir = Some(val),
            "--kafka" => a.kafka = Some(val),
            "--rate" => a.rate = num()?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    match a.kind.as_str() {
        "betting" => {}
        "sportsbook" | "trading" => {
            if a.out_dir.is_none() && a.kafka.is_none() {
                return Err(format!(
                    "{} writes several streams: give --out-dir DIR or --kafka BROKERS",
                    a.kind
                ));
            }
        }
        other => {
            return Err(format!(
                "unknown stream kind `{other}` (known: betting, sportsbook, trading)"
            ))
        }
    }
    Ok(a)
}

/// The multi-stream workloads: one file per stream, or one topic per stream.
fn workload(args: &Args) -> Result<(), String> {
    use kairos::workload::by_name;
    let mut w = by_name(&args.kind, args.keys, args.seed).ok_or("unknown workload")?;
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir}: {e}"))?;
        let mut files = Vec::new();
        for s in w.streams() {
            let path = std::path::Path::new(dir).join(format!("{s}.jsonl"));
            let f = std::fs::File::create(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            files.push((*s, std::io::BufWriter::with_capacity(1 << 20, f)));
        }
        for _ in 0..args.events {
            let e = w.next_event();
            let (_, f) = files
                .iter_mut()
                .find(|(s, _)| *s == e.stream)
                .ok_or("stream without a file")?;
            writeln!(f, "{}", e.json).map_err(|e| e.to_string())?;
        }
        for (_, mut f) in files {
            f.flush().map_err(|e| e.to_string())?;
        }
        return Ok(());
    }
    let brokers = args.kafka.as_deref().ok_or("no output")?;
    use rdkafka::producer::{BaseProducer, Producer};
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "1")
        .create()
        .map_err(|e| format!("cannot create a Kafka producer: {e}"))?;
    let start = std::time::Instant::now();
    for i in 0..args.events {
        if let Some(gap) = 1_000_000_000u64.checked_div(args.rate) {
            // Open loop: each event has its time on a fixed schedule, late or not.
            let due = start + std::time::Duration::from_nanos(i * gap);
            while std::time::Instant::now() < due {
                p.poll(std::time::Duration::ZERO);
                std::hint::spin_loop();
            }
        }
        let e = w.next_event();
        kairos::io::kafka::send_waiting(&p, e.stream, &e.key, &e.json);
    }
    p.flush(std::time::Duration::from_secs(30))
        .map_err(|e| format!("cannot flush to {brokers}: {e}"))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kairos-gen: {e}");
            std::process::exit(2);
        }
    };
    if args.kind != "betting" {
        if let Err(e) = workload(&args) {
            eprintln!("kairos-gen: {e}");
            std::process::exit(1);
        }
        return;
    }
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
