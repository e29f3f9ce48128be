//! How much state a pattern keeps open over a stream: replays a JSON-lines file (one stream)
//! through the engine and samples `Engine::stats` every 1,000 events.
//!
//! Run: `cargo run --release --example live_state -- PATTERN.cep EVENTS.jsonl [MAX_EVENTS]`

use kairos::compile::load::load;
use kairos::compile::CompileOptions;
use kairos::engine::{Engine, EngineOptions, Record};
use kairos::event::{Event, JsonDecoder};
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(pattern), Some(input)) = (args.get(1), args.get(2)) else {
        return Err("usage: live_state PATTERN.cep EVENTS.jsonl [MAX_EVENTS]".into());
    };
    let max: usize = args.get(3).map_or(Ok(usize::MAX), |m| m.parse())?;
    let prog = Arc::new(load(&[pattern.into()], &CompileOptions::default())?);
    let text = std::fs::read_to_string(input)?;
    let dec = JsonDecoder::new(&prog.fields, prog.time_slots[0], prog.unit);
    let mut engine = Engine::new(prog.clone(), EngineOptions::default());
    let mut sink = |_: &Record<'_>| {};
    let mut ev = Event::with_slots(prog.fields.len());
    let (mut runs, mut keys, mut samples) = (0u64, 0u64, 0u64);
    for (i, line) in text.lines().take(max).enumerate() {
        dec.decode(line.as_bytes(), 0, &mut ev)?;
        engine.process(&mut ev, &mut sink);
        if i % 1000 == 0 {
            let s = engine.stats();
            runs += s.live_runs;
            keys += s.live_keys;
            samples += 1;
        }
    }
    let samples = samples.max(1);
    println!(
        "average open partial matches {}, average keys holding them {}",
        runs / samples,
        keys / samples
    );
    Ok(())
}
