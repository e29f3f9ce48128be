//! Helpers shared by the integration tests.
#![allow(dead_code)]

use kairos::compile::{compile, CompileOptions, Program, Source};
use kairos::engine::EngineOptions;
use kairos::io::replay::{replay, Input, Summary};
use serde_json::Value as J;
use std::path::Path;
use std::sync::Arc;

pub fn program(file: &str, text: &str) -> Program {
    compile(&[Source { file, text }], &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{file} does not compile:\n{e}"))
}

/// Replays `inputs` through the program; returns the records as JSON values and the summary.
pub fn run_replay(prog: Program, inputs: &[Input]) -> (Vec<J>, Summary, Vec<String>) {
    let mut out = Vec::new();
    let mut reports = Vec::new();
    let summary = replay(
        Arc::new(prog),
        inputs,
        EngineOptions::default(),
        &mut out,
        &mut |l: &str| reports.push(l.to_string()),
    )
    .expect("replay runs");
    (records(&out), summary, reports)
}

/// The records of `replay` output: one JSON object per line.
pub fn records(out: &[u8]) -> Vec<J> {
    std::str::from_utf8(out)
        .expect("utf-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad output line {l}: {e}")))
        .collect()
}

pub fn read_jsonl(path: &Path) -> Vec<J> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A record reduced to what the conformance contract compares: sink, ts and value, with numbers
/// normalised so that 3 and 3.0 compare equal.
pub fn canon(r: &J) -> String {
    fn norm(v: &J) -> J {
        match v {
            J::Number(n) => {
                let f = n.as_f64().unwrap();
                if f.fract() == 0.0 && f.abs() < 9e15 {
                    J::from(f as i64)
                } else {
                    J::from(f)
                }
            }
            J::Array(a) => J::Array(a.iter().map(norm).collect()),
            J::Object(o) => J::Object(o.iter().map(|(k, v)| (k.clone(), norm(v))).collect()),
            other => other.clone(),
        }
    }
    let mut o = serde_json::Map::new();
    for k in ["pattern", "sink", "key", "ts", "value"] {
        o.insert(k.into(), norm(r.get(k).unwrap_or(&J::Null)));
    }
    serde_json::to_string(&J::Object(o)).unwrap()
}

/// Compares two lists of records as multisets; returns a readable difference.
pub fn multiset_diff(got: &[J], want: &[J]) -> Option<String> {
    let mut g: Vec<String> = got.iter().map(canon).collect();
    let mut w: Vec<String> = want.iter().map(canon).collect();
    g.sort();
    w.sort();
    if g == w {
        return None;
    }
    let missing: Vec<&String> = w.iter().filter(|x| !g.contains(x)).collect();
    let extra: Vec<&String> = g.iter().filter(|x| !w.contains(x)).collect();
    Some(format!(
        "missing ({}):\n  {}\nunexpected ({}):\n  {}",
        missing.len(),
        missing
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        extra.len(),
        extra
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    ))
}

/// Records in a canonical text form (object keys sorted, numbers as written), sorted: two lists
/// are the same multiset exactly when their forms are equal (so `11.0` differs from `11`).
fn exact_multiset(records: &[J]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    v.sort();
    v
}

/// What differs between two lists of records, compared exactly as a multiset, or `None`.
pub fn exact_multiset_diff(got: &[J], want: &[J]) -> Option<String> {
    let (g, w) = (exact_multiset(got), exact_multiset(want));
    if g == w {
        return None;
    }
    let mut missing = w;
    let mut unexpected = Vec::new();
    for r in g {
        match missing.iter().position(|m| *m == r) {
            Some(i) => {
                missing.remove(i);
            }
            None => unexpected.push(r),
        }
    }
    Some(format!(
        "missing ({}):\n  {}\nunexpected ({}):\n  {}",
        missing.len(),
        missing.join("\n  "),
        unexpected.len(),
        unexpected.join("\n  ")
    ))
}

/// What differs between two lists of records, compared exactly and in order (the order in which
/// they were emitted), or `None`.
pub fn exact_diff(got: &[J], want: &[J]) -> Option<String> {
    if let Some(d) = exact_multiset_diff(got, want) {
        return Some(d);
    }
    let at = got.iter().zip(want).position(|(g, w)| g != w)?;
    Some(format!(
        "the same records in another order; record {} is\n  {}\nwhere\n  {}\nwas expected",
        at + 1,
        got[at],
        want[at]
    ))
}
