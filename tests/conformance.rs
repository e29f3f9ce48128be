//! The conformance suite: every case under `tests/conformance/` (a pattern, an input and the
//! expected records, from Flink CEP with eager emission) must produce exactly the expected
//! records, timestamps included, compared as a multiset.

mod common;

use common::*;
use kairos::io::replay::Input;
use std::path::{Path, PathBuf};

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cep"))
        .collect();
    v.sort();
    v
}

fn run_case(cep: &Path) -> Option<String> {
    let name = cep.file_stem().unwrap().to_str().unwrap();
    let dir = cep.parent().unwrap();
    let text = std::fs::read_to_string(cep).unwrap();
    let prog = program(cep.to_str().unwrap(), &text);
    let input = dir.join(format!("{name}.input.jsonl"));
    let (got, summary, reports) = run_replay(
        prog,
        &[Input {
            stream: None,
            path: input,
        }],
    );
    assert!(reports.is_empty(), "{name}: input problems: {reports:?}");
    assert_eq!(summary.malformed, 0);
    let want = read_jsonl(&dir.join(format!("{name}.expected.jsonl")));
    multiset_diff(&got, &want).map(|d| format!("== {name}\n{d}"))
}

#[test]
fn every_conformance_case_matches_its_expected_output() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let all = cases(&dir);
    assert!(
        all.len() >= 60,
        "the suite holds at least the 60 shared cases"
    );
    let failures: Vec<String> = all.iter().filter_map(|c| run_case(c)).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}
