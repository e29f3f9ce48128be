//! The pipeline gives exactly the records of the single-threaded engine: over the whole
//! conformance suite with 1, 2 and 4 shards, and over a large stream pushed through tiny rings
//! (constant back-pressure) with every wait strategy, so that no event admitted before shutdown
//! is lost.

mod common;

use common::*;
use kairos::compile::{compile, CompileOptions, Source};
use kairos::engine::EngineOptions;
use kairos::io::replay::{replay_sharded, Input};
use kairos::pipeline::{Layout, LayoutError, Pipeline};
use kairos::ring::WaitStrategy;
use serde_json::Value as J;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A `Write` that several threads can hand around, collecting into shared bytes.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);
impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn sharded(prog: kairos::compile::Program, inputs: &[Input], layout: Layout) -> Vec<J> {
    let out = Shared::default();
    replay_sharded(
        Arc::new(prog),
        inputs,
        EngineOptions::default(),
        layout,
        Box::new(out.clone()),
        &mut |_| {},
    )
    .expect("replay runs");
    let bytes = out.0.lock().unwrap().clone();
    records(&bytes)
}

#[test]
fn the_conformance_suite_gives_the_same_records_with_1_2_and_4_shards() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cep"))
        .collect();
    cases.sort();
    let mut failures = Vec::new();
    for cep in &cases {
        let name = cep.file_stem().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(cep).unwrap();
        let want = read_jsonl(&dir.join(format!("{name}.expected.jsonl")));
        for shards in [1, 2, 4] {
            let input = Input {
                stream: None,
                path: dir.join(format!("{name}.input.jsonl")),
            };
            let got = sharded(
                program(name, &text),
                &[input],
                Layout::for_machine(shards, 2),
            );
            if let Some(d) = multiset_diff(&got, &want) {
                failures.push(format!("== {name} with {shards} shards\n{d}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A keyed betting-like stream, deterministic.
fn stream(n: usize, keys: u64) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = String::new();
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let kind = ["deposit", "bet", "bet", "withdrawal", "casino"][(x % 5) as usize];
        out.push_str(&format!(
            "{{\"ts\":{},\"user\":\"u{}\",\"type\":\"{kind}\",\"amount\":{}}}\n",
            1000 + i,
            (x >> 8) % keys,
            (x >> 16) % 500
        ));
    }
    out
}

const PATTERN: &str = "pattern dbw\n  from events\n  key user\n  time ts\n  within 200ms\n  match d -> b+? -> w\n  define\n    d = (type == \"deposit\")\n    b = (type == \"bet\")\n    w = (type == \"withdrawal\" and amount >= d.amount / 2)\n  emit alerts { d: d.amount, n: count(b), w: w.amount }\n  on timeout emit late { d: d.amount }\n";

#[test]
fn nothing_admitted_is_lost_under_back_pressure_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    std::fs::write(&path, stream(60_000, 50)).unwrap();
    let input = || {
        vec![Input {
            stream: None,
            path: path.clone(),
        }]
    };
    let prog = || {
        compile(
            &[Source {
                file: "dbw.cep",
                text: PATTERN,
            }],
            &CompileOptions::default(),
        )
        .unwrap()
    };

    let (want, summary, _) = run_replay(prog(), &input());
    assert!(summary.matches > 100 && summary.timeouts > 100, "{summary}");

    // Spinning only where every stage has a core (one shard, sink fused: two threads); with
    // more stages than cores, the strategies that give the core back.
    for (shards, wait) in [
        (1, WaitStrategy::Spin),
        (3, WaitStrategy::Yield),
        (3, WaitStrategy::Park { spins: 2 }),
    ] {
        let mut layout = Layout::for_machine(shards, 2);
        layout.ring_capacity = 2;
        (layout.source_wait, layout.shard_wait, layout.sink_wait) = (wait, wait, wait);
        let got = sharded(prog(), &input(), layout);
        assert_eq!(got.len(), want.len(), "{wait:?}");
        assert!(
            multiset_diff(&got, &want).is_none(),
            "{wait:?}: {}",
            multiset_diff(&got, &want).unwrap()
        );
    }
}

#[test]
fn the_embedded_api_reports_counts_and_latency() {
    let prog = Arc::new(
        compile(
            &[Source {
                file: "dbw.cep",
                text: PATTERN,
            }],
            &CompileOptions::default(),
        )
        .unwrap(),
    );
    let records = Arc::new(Mutex::new(Vec::new()));
    let sink = records.clone();
    let mut p = Pipeline::start(prog, Layout::for_machine(2, 2), move |r| {
        sink.lock().unwrap().push(r.clone())
    })
    .unwrap();
    for line in stream(5_000, 50).lines() {
        p.push_json("events", line.as_bytes()).unwrap();
    }
    assert!(p.push_json("events", b"{not json").is_err());
    assert!(p.push_json("nope", b"{}").is_err());
    let report = p.finish();
    assert_eq!(report.events, 5_000);
    assert_eq!(report.records as usize, records.lock().unwrap().len());
    assert_eq!(
        report.records,
        report.engine.matches + report.engine.timeouts
    );
    assert_eq!(report.match_latency.len(), 5_000);
    assert!(report.match_latency.value_at_quantile(0.5) > 0);
}

#[test]
fn layouts_are_validated() {
    let mut l = Layout::for_machine(2, 4);
    assert!(l.validate_for(4).is_ok());
    l.shard_cores[1] = Some(9);
    assert_eq!(
        l.validate_for(4),
        Err(LayoutError::NoSuchCore {
            stage: "shard 1".into(),
            core: 9,
            last: 3
        })
    );
    assert!(l
        .validate_for(4)
        .unwrap_err()
        .to_string()
        .contains("shard 1 is pinned to core 9"));
    let mut l = Layout::for_machine(1, 2);
    l.shards = 0;
    assert_eq!(l.validate_for(2), Err(LayoutError::NoShards));
    let mut l = Layout::for_machine(1, 2);
    l.ring_capacity = 1;
    assert_eq!(l.validate_for(2), Err(LayoutError::Capacity(1)));
    let l = Layout::for_machine(4, 2);
    assert!(
        matches!(l.shard_wait, WaitStrategy::Park { .. }),
        "6 stages on 2 cores must not spin"
    );
}
