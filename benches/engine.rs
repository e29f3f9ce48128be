//! Micro-benchmarks of the hot path: JSON decoding alone, the matcher alone over pre-parsed
//! events, the cost of a long window, a Kleene loop with a running sum, and a hostile customer
//! against the memory budgets.
//!
//! Run: `cargo bench --bench engine`. The input is the betting stream of `kairos-gen` (10,000
//! customers), generated in memory with the same generator logic.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kairos::compile::{compile, CompileOptions, Program, Source};
use kairos::engine::{Engine, EngineOptions, Record, MAX_STATE_BYTES_PER_KEY};
use kairos::event::{Event, JsonDecoder, TimeUnit};
use std::sync::Arc;

const EVENTS: usize = 200_000;

/// The same stream as `kairos-gen betting --keys 10000 --seed 7` (a few fields shorter).
fn betting_lines(n: usize, keys: u64) -> Vec<String> {
    let mut x: u64 = 7u64.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut ts = 1_732_400_000_000u64;
    (0..n)
        .map(|_| {
            ts += next() % 3;
            let u = (next() >> 11) as f64 / (1u64 << 53) as f64;
            let user = ((u * u) * keys as f64) as u64 % keys;
            let r = next() % 100;
            if r < 15 {
                format!(r#"{{"ts":{ts},"user_id":"u{user:06}","type":"deposit","amount":{},"method":"card"}}"#, 10 + next() % 490)
            } else if r < 80 {
                format!(r#"{{"ts":{ts},"user_id":"u{user:06}","type":"bet","stake":{},"odds":{:.2},"market":"m{}","product":"sports"}}"#, 1 + next() % 100, 1.01 + (next() % 900) as f64 / 100.0, next() % 500)
            } else if r < 92 {
                format!(r#"{{"ts":{ts},"user_id":"u{user:06}","type":"casino","stake":{},"product":"casino"}}"#, 1 + next() % 50)
            } else {
                format!(r#"{{"ts":{ts},"user_id":"u{user:06}","type":"withdrawal","amount":{}}}"#, 10 + next() % 490)
            }
        })
        .collect()
}

fn program(text: &str) -> Arc<Program> {
    Arc::new(
        compile(
            &[Source {
                file: "bench.cep",
                text,
            }],
            &CompileOptions::default(),
        )
        .expect("bench pattern compiles"),
    )
}

fn three_step(within: &str) -> String {
    three_step_joined(within, "->")
}

/// The same three steps joined by `op`: `->` (relaxed) or ` ` (strict).
fn three_step_joined(within: &str, op: &str) -> String {
    format!(
        "pattern deposit_bet_withdraw\n  from events\n  key user_id\n  time ts\n  within {within}\n  match d {op} b {op} w\n  define\n    d = (type == \"deposit\" and amount >= 20)\n    b = (type == \"bet\" and stake >= 10)\n    w = (type == \"withdrawal\" and amount >= d.amount * 0.5)\n  emit alerts {{ user: key, deposit: d.amount, stake: b.stake, withdrawn: w.amount }}\n"
    )
}

fn parse_all(prog: &Program, lines: &[String]) -> Vec<Event> {
    let dec = JsonDecoder::new(&prog.fields, prog.time_slots[0], prog.unit);
    lines
        .iter()
        .map(|l| {
            let mut ev = Event::with_slots(prog.fields.len());
            dec.decode(l.as_bytes(), 0, &mut ev)
                .expect("generated lines are valid");
            ev
        })
        .collect()
}

fn run_engine(prog: &Arc<Program>, events: &mut [Event]) -> u64 {
    let mut engine = Engine::new(prog.clone(), EngineOptions::default());
    let mut n = 0u64;
    let mut out = |_: &Record<'_>| n += 1;
    for ev in events.iter_mut() {
        engine.process(ev, &mut out);
    }
    engine.finish(&mut out);
    n
}

fn bench_parse(c: &mut Criterion) {
    let prog = program(&three_step("1h"));
    let lines = betting_lines(EVENTS, 10_000);
    let dec = JsonDecoder::new(&prog.fields, prog.time_slots[0], TimeUnit::Millis);
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.sample_size(20);
    g.bench_function("betting_json_line", |b| {
        let mut ev = Event::with_slots(prog.fields.len());
        b.iter(|| {
            for l in &lines {
                dec.decode(l.as_bytes(), 0, &mut ev).expect("valid");
            }
        })
    });
    g.finish();
}

fn bench_matcher(c: &mut Criterion) {
    let lines = betting_lines(EVENTS, 10_000);
    let mut g = c.benchmark_group("matcher");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.sample_size(20);
    // Relaxed: a deposit keeps waiting for its bet and withdrawal until the window closes, so a
    // longer window holds more open partial matches (state, not history). Strict: a partial
    // match ends at the key's next event that does not fit, whatever the window.
    for (name, within, op) in [
        ("3step_relaxed_10k_keys_within_1s", "1s", "->"),
        ("3step_relaxed_10k_keys_within_1h", "1h", "->"),
        ("3step_strict_10k_keys_within_1s", "1s", ""),
        ("3step_strict_10k_keys_within_1h", "1h", ""),
    ] {
        let prog = program(&three_step_joined(within, op));
        bench_engine(&mut g, name, &prog, &lines);
    }
    g.finish();
}

/// Times the engine over `lines`, parsed beforehand (a fresh engine per iteration).
fn bench_engine(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    prog: &Arc<Program>,
    lines: &[String],
) {
    let events = parse_all(prog, lines);
    g.bench_function(name, |b| {
        b.iter_batched_ref(
            || events.clone(),
            |evs| run_engine(prog, evs),
            BatchSize::LargeInput,
        )
    });
}

/// The same stream under `within 1s` and `within 1h`, where every partial match resolves (by a
/// match or by strict contiguity) well inside both windows: the outcomes are identical, so any
/// difference in cost would come from the window's length itself, which is what an engine that
/// keeps and scans the window's history would show.
fn bench_window_length(c: &mut Criterion) {
    let keys = 10_000u64;
    // Each key repeats deposit, bet, casino, withdrawal; keys interleave, one event per
    // microsecond, so a key's events are 10ms apart.
    let kinds = [
        r#""type":"deposit","amount":100"#,
        r#""type":"bet","stake":20"#,
        r#""type":"casino","stake":5"#,
        r#""type":"withdrawal","amount":80"#,
    ];
    let lines: Vec<String> = (0..EVENTS as u64)
        .map(|i| {
            let user = i % keys;
            let kind = kinds[((i / keys) % 4) as usize];
            format!(
                r#"{{"ts":{},"user_id":"u{user:06}",{kind}}}"#,
                1_000_000 + i
            )
        })
        .collect();
    let mut g = c.benchmark_group("window_length");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.sample_size(20);
    for (name, within) in [
        ("3step_10k_keys_within_1s", "1s"),
        ("3step_10k_keys_within_1h", "1h"),
    ] {
        let text = three_step(within);
        let prog = Arc::new(
            compile(
                &[Source {
                    file: "bench.cep",
                    text: &text,
                }],
                &CompileOptions {
                    unit: TimeUnit::Micros,
                    ..CompileOptions::default()
                },
            )
            .expect("bench pattern compiles"),
        );
        bench_engine(&mut g, name, &prog, &lines);
    }
    g.finish();
}

/// Budgets no state of these benchmarks reaches: what they measure is the work on the state.
fn unbounded() -> EngineOptions {
    EngineOptions {
        max_state_bytes_per_key: MAX_STATE_BYTES_PER_KEY,
        max_state_bytes: u64::MAX,
        ..EngineOptions::default()
    }
}

/// A greedy loop whose condition reads the running sum of the loop: the cost of one more
/// iteration must not depend on how many the partial match already holds. The pattern has no
/// key, so with 100,000 iterations its one key holds 12 MB: the budgets are lifted, as the
/// loop's cost is what is measured.
fn bench_kleene_sum(c: &mut Criterion) {
    let prog = program("pattern kleene\n  from events\n  time ts\n  match s -> b+ -> e\n  define\n    s = (type == \"start\")\n    b = (type == \"bet\" and sum(b.stake) < 1000000000)\n    e = (type == \"end\")\n  emit out { n: count(b), total: sum(b.stake) }\n");
    let mut g = c.benchmark_group("kleene_running_sum");
    g.sample_size(20);
    for held in [10usize, 1_000, 100_000] {
        // Warm up a partial match holding `held` iterations, then time 1,000 more.
        let mut lines = vec![r#"{"ts":1,"type":"start"}"#.to_string()];
        lines.extend(
            (0..held + 1_000)
                .map(|i| format!(r#"{{"ts":{},"type":"bet","stake":{}}}"#, i + 2, i % 7 + 1)),
        );
        let events = parse_all(&prog, &lines);
        let (warm, timed) = events.split_at(held + 1);
        g.throughput(Throughput::Elements(timed.len() as u64));
        g.bench_function(format!("per_event_with_{held}_held"), |b| {
            b.iter_batched_ref(
                || {
                    let mut engine = Engine::new(prog.clone(), unbounded());
                    let mut sink = |_: &Record<'_>| {};
                    for ev in warm.to_vec().iter_mut() {
                        engine.process(ev, &mut sink);
                    }
                    (engine, timed.to_vec())
                },
                |(engine, evs)| {
                    let mut sink = |_: &Record<'_>| {};
                    for ev in evs.iter_mut() {
                        engine.process(ev, &mut sink);
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// `patterns/bonus_abuse.cep` against one customer who deposits 200 times and then places
/// 2,000 safe bets inside the window: every bet binds one event to each open partial match.
/// With the default budgets the customer keeps the newest partial matches that fit in 4 MiB and
/// the others are evicted; with the budgets lifted all 200 grow to 150 MB. Per event.
fn bench_state_budget(c: &mut Criterion) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/patterns/bonus_abuse.cep"
    ))
    .expect("the example pattern");
    let prog = program(&text);
    let stream = |name: &str| prog.streams.iter().position(|s| s == name).unwrap();
    let (payments, bets) = (stream("payments"), stream("bets"));
    let t0 = 1_732_400_000_000u64;
    let mut events = Vec::new();
    for i in 0..2200u64 {
        let (s, line) = if i < 200 {
            (
                payments,
                format!(
                    r#"{{"user_id":"u-1","kind":"deposit","amount":200,"method":"card","ts":{}}}"#,
                    t0 + i
                ),
            )
        } else {
            (
                bets,
                format!(
                    r#"{{"user_id":"u-1","product":"sports","odds":1.2,"stake":20,"ts":{}}}"#,
                    t0 + i
                ),
            )
        };
        let dec = JsonDecoder::new(&prog.fields, prog.time_slots[s], prog.unit);
        let mut ev = Event::with_slots(prog.fields.len());
        dec.decode(line.as_bytes(), 0, &mut ev).expect("valid");
        ev.stream = s as u16;
        events.push(ev);
    }
    let mut g = c.benchmark_group("state_budget");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(10);
    for (name, opts) in [
        ("hostile_customer_default_budgets", EngineOptions::default()),
        ("hostile_customer_unbounded", unbounded()),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || events.clone(),
                |evs| {
                    let mut engine = Engine::new(prog.clone(), opts.clone());
                    let mut sink = |_: &Record<'_>| {};
                    for ev in evs.iter_mut() {
                        engine.process(ev, &mut sink);
                    }
                    engine.stats().state_bytes
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_parse,
    bench_matcher,
    bench_window_length,
    bench_kleene_sum,
    bench_state_budget
);
criterion_main!(benches);
