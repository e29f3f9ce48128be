//! Kairos inside a service: compile a pattern, start a pipeline, push events as they arrive,
//! receive alerts through a callback.
//!
//! Run: `cargo run --release --example embedded`

use kairos::compile::{compile, CompileOptions, Source};
use kairos::pipeline::{Layout, Pipeline};
use std::sync::mpsc;
use std::sync::Arc;

const PATTERN: &str = r#"
pattern rising_stakes
    from bets
    key user_id
    time ts
    within 10m
    match b{3}
    define
        b = (stake > prev(b).stake ?? 0)
    emit alerts { user: key, stakes: collect(b.stake) }
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let program = Arc::new(compile(
        &[Source {
            file: "rising_stakes.cep",
            text: PATTERN,
        }],
        &CompileOptions::default(),
    )?);

    // Alerts arrive on the sink's thread; hand them to the service's own thread.
    let (alerts, received) = mpsc::channel();
    let layout = Layout::for_this_machine(2);
    let mut pipeline = Pipeline::start(program, layout, move |record| {
        let _ = alerts.send(record.to_json());
    })?;

    // The service's input: bets of two customers, interleaved.
    let bets = [
        ("u1", 10, 1_000),
        ("u2", 50, 2_000),
        ("u1", 20, 3_000),
        ("u2", 40, 4_000),
        ("u1", 35, 5_000),
        ("u2", 60, 6_000),
    ];
    for (user, stake, ts) in bets {
        let line = format!(r#"{{"user_id":"{user}","stake":{stake},"ts":{ts}}}"#);
        pipeline.push_json("bets", line.as_bytes())?;
    }

    let report = pipeline.finish();
    for alert in received.try_iter() {
        println!("{alert}");
    }
    println!(
        "{} events, {} alerts, match stage p50 {} ns",
        report.events,
        report.records,
        report.match_latency.value_at_quantile(0.5)
    );
    Ok(())
}
