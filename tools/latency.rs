//! `kairos-latency`: in-process end-to-end latency of the pipeline at a fixed offered rate.
//!
//! ```text
//! kairos-latency --rate 500000 --seconds 5 --shards 1
//! ```
//!
//! Betting events (10,000 customers by default) are handed to the embedded pipeline on a fixed
//! schedule, open loop: event i is due at start + i / rate, and its latency is measured from that
//! due time, so a stall delays every event behind it and shows in the figures instead of being
//! hidden. The pattern emits a record for every bet, so each bet's record measures the whole
//! path: routing, the ring to its shard, matching, the ring to the sink, the output callback.

use kairos::compile::{compile, CompileOptions, Source};
use kairos::event::{Event, JsonDecoder};
use kairos::pipeline::{now_ns, Layout, Pipeline};
use std::sync::{Arc, Mutex};

const PATTERN: &str = "pattern every_bet\n  from events\n  key user_id\n  match b\n  define\n    b = (type == \"bet\" and stake > 0)\n  emit out { user: key, stake: b.stake }\n";

fn arg(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .ok_or(format!("{name} needs a value"))?
            .parse()
            .map_err(|_| format!("{name}: not a number")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let parsed = (|| -> Result<(u64, u64, u64, u64), String> {
        Ok((
            arg(&args, "--rate", 500_000)?,
            arg(&args, "--seconds", 5)?,
            arg(&args, "--shards", 1)?,
            arg(&args, "--keys", 10_000)?,
        ))
    })();
    let (rate, seconds, shards, keys) = match parsed {
        Ok(v) => v,
        Err(e) => {
            eprintln!("kairos-latency: {e}\nusage: kairos-latency [--rate N] [--seconds S] [--shards N] [--keys K]");
            std::process::exit(2);
        }
    };
    let prog = Arc::new(
        compile(
            &[Source {
                file: "every_bet.cep",
                text: PATTERN,
            }],
            &CompileOptions::default(),
        )
        .expect("the built-in pattern compiles"),
    );
    // A pool of decoded events, handed out round robin (the source's parse cost is not part of
    // this figure: events arrive parsed, as from an embedding service).
    let dec = JsonDecoder::new(&prog.fields, prog.time_slots[0], prog.unit);
    let pool: Vec<Event> = (0..65_536u64)
        .map(|i| {
            let user = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % keys.max(1);
            let kind = if i % 4 == 3 { "deposit" } else { "bet" };
            let line = format!(
                r#"{{"user_id":"u{user:06}","type":"{kind}","stake":{}}}"#,
                1 + i % 50
            );
            let mut ev = Event::with_slots(prog.fields.len());
            dec.decode(line.as_bytes(), 0, &mut ev)
                .expect("generated lines are valid");
            ev
        })
        .collect();
    let layout = Layout::for_this_machine(shards as usize);
    let records = Arc::new(Mutex::new(0u64));
    let counter = records.clone();
    let mut count = 0u64;
    let mut pipeline = Pipeline::start(prog, layout, move |_r| {
        count += 1;
        if count % 4096 == 0 {
            *counter.lock().expect("counter") = count;
        }
    })
    .unwrap_or_else(|e| {
        eprintln!("kairos-latency: {e}");
        std::process::exit(2);
    });
    let total = rate * seconds;
    let period_ps = 1_000_000_000_000u64 / rate.max(1);
    let start = now_ns() + 1_000_000;
    for i in 0..total {
        let due = start + (i * period_ps) / 1000;
        while now_ns() < due {
            std::hint::spin_loop();
        }
        // Storage a shard has finished with, refilled: no allocation per event.
        let mut ev = pipeline.spare_event();
        ev.clone_from(&pool[(i % pool.len() as u64) as usize]);
        pipeline.push_at(ev, due);
    }
    let sent_for = now_ns() - start;
    let report = pipeline.finish();
    println!(
        "rate {rate}/s  shards {shards}  events {}  records {}  achieved {:.0}/s",
        report.events,
        report.records,
        report.events as f64 / (sent_for as f64 / 1e9)
    );
    print_latency("event to record out", &report.sink_latency);
    print_latency("event to taken off its shard's ring", &report.ring_latency);
    print_latency("event to leaving its match shard", &report.match_latency);
    println!(
        "back-pressure: source {:.1} ms, shards {:.1} ms",
        report.source_backpressure_ns as f64 / 1e6,
        report.shard_backpressure_ns as f64 / 1e6
    );
}

/// One line of percentiles, in microseconds.
fn print_latency(what: &str, h: &hdrhistogram::Histogram<u64>) {
    let us = |v: u64| v as f64 / 1000.0;
    println!(
        "{what} (us): p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.9)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max())
    );
}
