//! Arbitrary text as a pattern file: the lexer, parser and compiler must return a result or
//! diagnostics, never panic or hang. What compiles is also run over a few events.
#![no_main]

use kairos::compile::{compile, CompileOptions, Source};
use kairos::engine::{Engine, EngineOptions, Record};
use kairos::event::{Event, Value};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match compile(
        &[Source {
            file: "fuzz.cep",
            text,
        }],
        &CompileOptions::default(),
    ) {
        Err(diags) => {
            // Rendering diagnostics must not panic either (carets on odd lines, tabs, UTF-8).
            let _ = diags.to_string();
        }
        Ok(prog) => {
            let prog = Arc::new(prog);
            let opts = EngineOptions {
                max_runs_per_key: 64,
                ..EngineOptions::default()
            };
            let mut engine = Engine::new(prog.clone(), opts);
            let mut sink = |_: &Record<'_>| {};
            for i in 0..12i64 {
                let mut ev = Event::with_slots(prog.fields.len());
                ev.stream = (i as usize % prog.streams.len().max(1)) as u16;
                ev.ts = i * 1_000_000;
                for (j, s) in ev.slots.iter_mut().enumerate() {
                    *s = match (i + j as i64) % 4 {
                        0 => Value::Int(i),
                        1 => Value::from("a"),
                        2 => Value::Float(i as f64 / 2.0),
                        _ => Value::Null,
                    };
                }
                engine.process(&mut ev, &mut sink);
            }
            engine.finish(&mut sink);
        }
    }
});
