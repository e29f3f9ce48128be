//! The worked examples of `docs/patterns.md` are true.
//!
//! The reference is read as a sequence of fenced blocks:
//!
//! * ` ```cep ` holds a complete pattern file, which must compile; it opens an example.
//! * ` ```jsonl input ` (one stream) or ` ```jsonl input STREAM ` holds events of the current
//!   example, in time order; an example may have several, one per stream, in the order they are
//!   given to the replay.
//! * ` ```jsonl output ` holds the records the example must produce, exactly and in order,
//!   timestamps included, numbers as written (`11.0` is not `11`). It closes the example.
//! * ` ```cep error ` holds a pattern file that must not compile; the ` ```text ` block after it
//!   holds exactly what `kairos check example.cep` prints for it.
//!
//! Other blocks (the grammar, shell commands, a sample record) are prose.

mod common;

use common::{exact_diff as difference, run_replay};
use kairos::compile::{compile, CompileOptions, Program, Source};
use kairos::io::replay::Input;
use serde_json::Value as J;
use std::path::{Path, PathBuf};

const DOC: &str = "docs/patterns.md";

struct Block {
    info: String,
    text: String,
    /// 1-based line of the opening fence.
    line: usize,
}

/// Every fenced block of a markdown text.
fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = md.lines().enumerate();
    while let Some((i, l)) = lines.next() {
        let Some(info) = l.strip_prefix("```") else {
            continue;
        };
        let mut text = String::new();
        let mut closed = false;
        for (_, body) in lines.by_ref() {
            if body.trim_end() == "```" {
                closed = true;
                break;
            }
            text.push_str(body);
            text.push('\n');
        }
        assert!(closed, "{DOC}:{}: unclosed code block", i + 1);
        out.push(Block {
            info: info.trim().to_string(),
            text,
            line: i + 1,
        });
    }
    out
}

/// A worked example: a pattern and, where it has them, inputs and the expected records.
struct Example {
    line: usize,
    cep: String,
    inputs: Vec<(Option<String>, String)>,
    output: Option<String>,
}

/// A pattern that must not compile, and what the compiler says about it.
struct ErrorExample {
    line: usize,
    cep: String,
    message: String,
}

fn read_doc() -> (Vec<Example>, Vec<ErrorExample>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(DOC);
    let md = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{DOC}: {e}"));
    let mut examples: Vec<Example> = Vec::new();
    let mut errors = Vec::new();
    let mut bs = blocks(&md).into_iter().peekable();
    while let Some(b) = bs.next() {
        let at = format!("{DOC}:{}", b.line);
        match b.info.as_str() {
            "cep" => {
                if let Some(prev) = examples.last() {
                    assert!(
                        prev.inputs.is_empty() || prev.output.is_some(),
                        "{DOC}:{}: the example has input but no ```jsonl output block",
                        prev.line
                    );
                }
                examples.push(Example {
                    line: b.line,
                    cep: b.text,
                    inputs: Vec::new(),
                    output: None,
                });
            }
            "cep error" => {
                let msg = bs.next_if(|n| n.info == "text").unwrap_or_else(|| {
                    panic!(
                        "{at}: a ```cep error block needs a ```text block with the errors after it"
                    )
                });
                errors.push(ErrorExample {
                    line: b.line,
                    cep: b.text,
                    message: msg.text,
                });
            }
            info if info == "jsonl input" || info.starts_with("jsonl input ") => {
                let ex = examples
                    .last_mut()
                    .unwrap_or_else(|| panic!("{at}: input before any ```cep block"));
                assert!(
                    ex.output.is_none(),
                    "{at}: input after the output of the example of line {}",
                    ex.line
                );
                let stream = info["jsonl input".len()..].trim();
                let stream = (!stream.is_empty()).then(|| stream.to_string());
                ex.inputs.push((stream, b.text));
            }
            "jsonl output" => {
                let ex = examples
                    .last_mut()
                    .unwrap_or_else(|| panic!("{at}: output before any ```cep block"));
                assert!(
                    ex.output.is_none(),
                    "{at}: a second output for the example of line {}",
                    ex.line
                );
                assert!(
                    !ex.inputs.is_empty(),
                    "{at}: output without input for the example of line {}",
                    ex.line
                );
                ex.output = Some(b.text);
            }
            _ => {}
        }
    }
    if let Some(last) = examples.last() {
        assert!(
            last.inputs.is_empty() || last.output.is_some(),
            "{DOC}:{}: the example has input but no ```jsonl output block",
            last.line
        );
    }
    (examples, errors)
}

fn compile_example(ex: &Example) -> Result<Program, String> {
    let file = format!("{DOC}:{}", ex.line);
    compile(
        &[Source {
            file: &file,
            text: &ex.cep,
        }],
        &CompileOptions::default(),
    )
    .map_err(|e| e.to_string())
}

fn parse_lines(text: &str, what: &str) -> Vec<J> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: bad JSON line {l}: {e}"))
        })
        .collect()
}

fn check_example(ex: &Example, want: &str) -> Option<String> {
    let at = format!("{DOC}:{}", ex.line);
    let prog = match compile_example(ex) {
        Ok(p) => p,
        Err(e) => return Some(format!("== {at}: does not compile:\n{e}")),
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let inputs: Vec<Input> = ex
        .inputs
        .iter()
        .enumerate()
        .map(|(i, (stream, text))| {
            let path = dir.path().join(format!("input{i}.jsonl"));
            std::fs::write(&path, text).expect("write an input file");
            Input {
                stream: stream.clone(),
                path,
            }
        })
        .collect();
    let (got, summary, reports) = run_replay(prog, &inputs);
    if !reports.is_empty() || summary.malformed > 0 || summary.late > 0 {
        return Some(format!("== {at}: input problems: {reports:?}"));
    }
    let want = parse_lines(want, &at);
    difference(&got, &want).map(|d| format!("== {at}\n{d}"))
}

#[test]
fn every_cep_block_compiles() {
    let (examples, _) = read_doc();
    let failures: Vec<String> = examples
        .iter()
        .filter_map(|ex| compile_example(ex).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} pattern(s) of {DOC} do not compile:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_worked_example_produces_exactly_its_output() {
    let (examples, _) = read_doc();
    let worked: Vec<&Example> = examples.iter().filter(|e| e.output.is_some()).collect();
    assert!(
        worked.len() >= 30,
        "{DOC} should hold its worked examples (found {})",
        worked.len()
    );
    let failures: Vec<String> = worked
        .iter()
        .filter_map(|ex| check_example(ex, ex.output.as_deref().expect("filtered")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} worked examples of {DOC} are wrong:\n{}",
        failures.len(),
        worked.len(),
        failures.join("\n")
    );
}

#[test]
fn every_error_example_shows_the_real_errors() {
    let (_, errors) = read_doc();
    assert!(!errors.is_empty(), "{DOC} documents errors with examples");
    for ex in &errors {
        let at = format!("{DOC}:{}", ex.line);
        match compile(
            &[Source {
                file: "example.cep",
                text: &ex.cep,
            }],
            &CompileOptions::default(),
        ) {
            Ok(_) => panic!("{at}: the error example compiles"),
            Err(e) => assert_eq!(
                e.to_string().trim_end(),
                ex.message.trim_end(),
                "{at}: the errors shown differ from what `kairos check` prints"
            ),
        }
    }
}

#[test]
fn the_examples_cover_every_construct() {
    let (examples, _) = read_doc();
    let worked: Vec<&str> = examples
        .iter()
        .filter(|e| e.output.is_some())
        .map(|e| e.cep.as_str())
        .collect();
    let has = |needle: &str| worked.iter().any(|c| c.contains(needle));
    for needle in [
        "match a b\n",
        " -> ",
        " ~> ",
        "b+ ",
        "b+? ",
        "b* ",
        "b*? ",
        "b? ",
        "b{2} ",
        "b{2,} ",
        "b{2,}? ",
        "b{1,2} ",
        "b{1,2}? ",
        " until ",
        "){2}",
        " | ",
        " !c -> ",
        " -> !c -> ",
        "match a !x\n",
        "match a -> !b\n",
        "within ",
        "on timeout emit",
        "skip none",
        "skip to next",
        "skip past last",
        "skip to first b",
        "skip to last b",
        "prev(",
        "sum(",
        "avg(",
        "min(",
        "max(",
        "count(",
        "collect(",
        "first(",
        "last(",
        " ?? ",
        "\\u00e9",
    ] {
        assert!(has(needle), "no worked example of {DOC} uses `{needle}`");
    }
}

/// The table example is shown as text (it needs a table file to run); `tests/tables.rs` runs the
/// same files, which must be what the document shows.
#[test]
fn the_table_example_shows_the_files_that_are_run() {
    let md =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/patterns.md"))
            .unwrap();
    let shown = |first_line: &str| -> String {
        let start = md
            .find(&format!("```text\n{first_line}\n"))
            .unwrap_or_else(|| panic!("docs/patterns.md shows no block starting {first_line:?}"));
        let body = &md[start + "```text\n".len()..];
        body[..body.find("```").unwrap()].to_string()
    };
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tables/limit_breach");
    let file = |name: &str| std::fs::read_to_string(case.join(name)).unwrap();
    let pattern: String = file("pattern.cep")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(shown("pattern limit_breach"), pattern);
    assert_eq!(shown("id,segment,max_stake,vip"), file("customers.csv"));
}
