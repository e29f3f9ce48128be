//! The example patterns of `patterns/`, run on their sample inputs.
//!
//! Every directory `tests/examples/NAME/` belongs to `patterns/NAME.cep` and holds one
//! `STREAM.jsonl` per stream the pattern reads (the events, in time order) and `expected.jsonl`
//! (the records the pattern must produce, in the envelope `kairos replay` prints). The records
//! must be exactly the expected ones, in the order they are emitted: timestamps included, and
//! numbers as written (`11.0` is not `11`). The whole `patterns/` directory must also compile
//! together, as `kairos check patterns/` does.

mod common;

use common::{exact_diff as difference, program, read_jsonl, run_replay};
use kairos::compile::load::load;
use kairos::compile::CompileOptions;
use kairos::io::replay::Input;
use serde_json::Value as J;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The sorted entries of a directory that satisfy `keep`.
fn entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| keep(p))
        .collect();
    v.sort();
    v
}

fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_str().unwrap().to_string()
}

fn run_example(dir: &Path) -> Option<String> {
    let name = stem(dir);
    let cep = root().join("patterns").join(format!("{name}.cep"));
    let text = std::fs::read_to_string(&cep)
        .unwrap_or_else(|e| panic!("example {name}: {}: {e}", cep.display()));
    let prog = program(cep.to_str().unwrap(), &text);
    // Inputs in file-name order: it breaks ties between events of the same time.
    let inputs: Vec<Input> = entries(dir, |p| {
        p.extension().is_some_and(|e| e == "jsonl") && stem(p) != "expected"
    })
    .into_iter()
    .map(|path| Input {
        stream: Some(stem(&path)),
        path,
    })
    .collect();
    assert!(!inputs.is_empty(), "example {name} has no input files");
    let (got, summary, reports) = run_replay(prog, &inputs);
    assert!(
        reports.is_empty(),
        "example {name}: input problems: {reports:?}"
    );
    assert_eq!(
        summary.malformed, 0,
        "example {name}: malformed input lines"
    );
    assert_eq!(
        summary.late, 0,
        "example {name}: input lines out of time order"
    );
    let want = read_jsonl(&dir.join("expected.jsonl"));
    difference(&got, &want).map(|d| format!("== {name}\n{d}"))
}

#[test]
fn the_patterns_directory_compiles() {
    let dir = root().join("patterns");
    let prog = load(std::slice::from_ref(&dir), &CompileOptions::default())
        .unwrap_or_else(|e| panic!("kairos check patterns/ fails:\n{e}"));
    let mut names: Vec<&str> = prog.patterns.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    let files: Vec<String> = entries(&dir, |p| p.extension().is_some_and(|e| e == "cep"))
        .iter()
        .map(|p| stem(p))
        .collect();
    assert_eq!(
        names, files,
        "each file patterns/NAME.cep holds one pattern, named NAME"
    );
}

#[test]
fn every_pattern_has_an_example() {
    let examples: Vec<String> = entries(&root().join("tests/examples"), |p| p.is_dir())
        .iter()
        .map(|p| stem(p))
        .collect();
    for cep in entries(&root().join("patterns"), |p| {
        p.extension().is_some_and(|e| e == "cep")
    }) {
        let name = stem(&cep);
        assert!(
            examples.contains(&name),
            "patterns/{name}.cep has no sample input and output under tests/examples/{name}/"
        );
    }
}

#[test]
fn every_example_produces_exactly_its_expected_records() {
    let dirs = entries(&root().join("tests/examples"), |p| p.is_dir());
    assert!(dirs.len() >= 5, "the five example patterns have examples");
    let failures: Vec<String> = dirs.iter().filter_map(|d| run_example(d)).collect();
    assert!(
        failures.is_empty(),
        "{} of {} examples differ:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}

#[test]
fn the_comparison_is_exact_and_in_order() {
    let rec = |ts: i64, v: J| serde_json::json!({"pattern": "p", "sink": "s", "key": null, "ts": ts, "value": v});
    let a = [
        rec(1, serde_json::json!({"x": 1})),
        rec(1, serde_json::json!({"x": 1})),
    ];
    assert!(difference(&a, &a).is_none());
    // a missing duplicate, another timestamp, another number type: all differences
    assert!(difference(&a[..1], &a).is_some());
    assert!(difference(&[a[0].clone(), rec(2, serde_json::json!({"x": 1}))], &a).is_some());
    assert!(difference(&[a[0].clone(), rec(1, serde_json::json!({"x": 1.0}))], &a).is_some());
    // the same records in another order
    let b = [
        rec(1, serde_json::json!({"x": 1})),
        rec(2, serde_json::json!({"x": 2})),
    ];
    let reversed = [b[1].clone(), b[0].clone()];
    assert!(difference(&b, &b).is_none());
    assert!(difference(&reversed, &b)
        .is_some_and(|d| d.starts_with("the same records in another order; record 1")));
}
