//! Lookup tables in patterns: enrichment end to end (library and command line), the compiler's
//! checks of tables and columns, and a table replaced between two events.

mod common;

use kairos::compile::{compile, CompileOptions, Source, TableDecl};
use kairos::engine::{Engine, EngineOptions, OwnedRecord};
use kairos::event::{Event, JsonDecoder};
use kairos::io::replay::{replay, Input};
use kairos::table::{build, BuildOptions, OpenOptions, SharedTable};
use std::path::Path;
use std::sync::Arc;

const CASE: &str = "tests/tables/limit_breach";

fn customers(dir: &Path) -> SharedTable {
    let out = dir.join("customers.tbl");
    build(&BuildOptions::new(
        Path::new(CASE).join("customers.csv"),
        "id",
        &out,
    ))
    .unwrap();
    SharedTable::open(&out, OpenOptions::default()).unwrap()
}

/// The case's pattern, compiled against the table `t`.
fn case_program(t: &SharedTable) -> Arc<kairos::compile::Program> {
    let text = std::fs::read_to_string(Path::new(CASE).join("pattern.cep")).unwrap();
    let source = Source {
        file: "pattern.cep",
        text: &text,
    };
    Arc::new(compile(&[source], &options(t)).unwrap())
}

fn options(t: &SharedTable) -> CompileOptions {
    CompileOptions {
        tables: vec![TableDecl {
            name: "customers".into(),
            schema: t.load().schema().clone(),
        }],
        ..CompileOptions::default()
    }
}

fn compile_err(text: &str, opts: &CompileOptions) -> String {
    match compile(
        &[Source {
            file: "p.cep",
            text,
        }],
        opts,
    ) {
        Ok(_) => panic!("compiled:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_pattern_enriched_from_a_table_gives_the_expected_records() {
    let dir = tempfile::tempdir().unwrap();
    let t = customers(dir.path());
    let prog = case_program(&t);
    let mut out = Vec::new();
    let opts = EngineOptions {
        tables: vec![("customers".into(), t)],
        ..EngineOptions::default()
    };
    let input = Input::parse(&format!("bets={CASE}/bets.jsonl"));
    replay(prog, &[input], opts, &mut out, &mut |l: &str| panic!("{l}")).unwrap();
    let got = common::records(&out);
    let want = common::read_jsonl(&Path::new(CASE).join("expected.jsonl"));
    if let Some(d) = common::exact_multiset_diff(&got, &want) {
        panic!("{d}");
    }
}

#[test]
fn table_build_and_replay_with_a_table_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let tbl = dir.path().join("customers.tbl");
    let kairos = env!("CARGO_BIN_EXE_kairos");
    let built = std::process::Command::new(kairos)
        .args([
            "table",
            "build",
            "--key",
            "id",
            "--input",
            &format!("{CASE}/customers.csv"),
            "--output",
        ])
        .arg(&tbl)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert!(String::from_utf8_lossy(&built.stderr).contains("3 rows"));
    let out = std::process::Command::new(kairos)
        .args([
            "replay",
            "--patterns",
            &format!("{CASE}/pattern.cep"),
            "--input",
            &format!("bets={CASE}/bets.jsonl"),
            "--table",
        ])
        .arg(format!("customers={}", tbl.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = common::records(&out.stdout);
    let want = common::read_jsonl(&Path::new(CASE).join("expected.jsonl"));
    assert!(common::exact_multiset_diff(&got, &want).is_none());
    // Through the sharded pipeline too.
    let out = std::process::Command::new(kairos)
        .args([
            "replay",
            "--shards",
            "2",
            "--patterns",
            &format!("{CASE}/pattern.cep"),
            "--input",
            &format!("bets={CASE}/bets.jsonl"),
            "--table",
        ])
        .arg(format!("customers={}", tbl.display()))
        .output()
        .unwrap();
    assert!(common::exact_multiset_diff(&common::records(&out.stdout), &want).is_none());
    // A build error names the line and leaves nothing behind.
    std::fs::write(dir.path().join("dup.csv"), "id,x\na,1\na,2\n").unwrap();
    let bad = std::process::Command::new(kairos)
        .args(["table", "build", "--key", "id", "--input"])
        .arg(dir.path().join("dup.csv"))
        .arg("--output")
        .arg(dir.path().join("dup.tbl"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("duplicate key"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(!dir.path().join("dup.tbl").exists());
}

#[test]
fn tables_and_columns_are_checked_when_patterns_compile() {
    let dir = tempfile::tempdir().unwrap();
    let t = customers(dir.path());
    let opts = options(&t);
    let head = "pattern p\n  from bets\n  key user_id\n  match a\n  define\n    a = bets(";
    let e = compile_err(
        &format!("{head}user_id in clients)\n  emit out {{ n: 1 }}\n"),
        &opts,
    );
    assert!(
        e.contains("p.cep:6:25: error: unknown table `clients`"),
        "{e}"
    );
    assert!(e.contains("the configured tables are: customers"), "{e}");
    let e = compile_err(
        &format!("{head}lookup(customers, key).limit > 1)\n  emit out {{ n: 1 }}\n"),
        &opts,
    );
    assert!(e.contains("table `customers` has no column `limit`"), "{e}");
    assert!(
        e.contains("its columns are: id, segment, max_stake, vip"),
        "{e}"
    );
    let e = compile_err(
        &format!("{head}lookup(customers, key).segment > 1)\n  emit out {{ n: 1 }}\n"),
        &opts,
    );
    assert!(
        e.contains("string"),
        "a string column compared with a number: {e}"
    );
    let e = compile_err(
        &format!("{head}true)\n  emit out {{ row: lookup(customers, key) }}\n"),
        &opts,
    );
    assert!(e.contains("is a row, not a value"), "{e}");
    let e = compile_err("pattern p\n  from bets\n  key lookup(customers, user_id).segment\n  match a\n  emit out { n: 1 }\n", &opts);
    assert!(e.contains("lookups cannot be used in `key`"), "{e}");
    let e = compile_err(
        &format!("{head}user_id in customers)\n  emit out {{ n: 1 }}\n"),
        &CompileOptions::default(),
    );
    assert!(e.contains("no lookup tables are configured"), "{e}");
}

#[test]
fn a_replaced_table_is_read_from_the_next_event_on() {
    let dir = tempfile::tempdir().unwrap();
    let t = customers(dir.path());
    let prog = case_program(&t);
    let opts = EngineOptions {
        tables: vec![("customers".into(), t.clone())],
        ..EngineOptions::default()
    };
    let mut engine = Engine::new(prog.clone(), opts);
    let dec = JsonDecoder::new(&prog.fields, prog.time_slots[0], prog.unit);
    let mut records: Vec<OwnedRecord> = Vec::new();
    let push = |engine: &mut Engine, line: &str, records: &mut Vec<OwnedRecord>| {
        let mut ev = Event::with_slots(prog.fields.len());
        dec.decode(line.as_bytes(), 0, &mut ev).unwrap();
        engine.process(&mut ev, records);
    };
    push(
        &mut engine,
        r#"{"user_id":"u1","stake":90,"ts":1}"#,
        &mut records,
    );
    assert!(records.is_empty(), "under the limit of 100");
    // The limit drops to 80: the builder writes a new file and renames it over the old one.
    std::fs::write(
        dir.path().join("v2.csv"),
        "id,segment,max_stake,vip\nu1,retail,80,false\n",
    )
    .unwrap();
    // A file whose column types differ from the loaded one is refused: the compiled patterns
    // read columns by position and type.
    let v2 = || {
        BuildOptions::new(
            dir.path().join("v2.csv"),
            "id",
            dir.path().join("customers.tbl"),
        )
    };
    build(&v2()).unwrap();
    let refused = t.reload_now().unwrap_err().to_string();
    assert!(refused.contains("max_stake"), "{refused}");
    push(
        &mut engine,
        r#"{"user_id":"u1","stake":90,"ts":2}"#,
        &mut records,
    );
    assert!(
        records.is_empty(),
        "the old table (limit 100) is still read"
    );
    let mut typed = v2();
    typed.schema = Some("max_stake:float".into());
    build(&typed).unwrap();
    t.reload_now().unwrap();
    push(
        &mut engine,
        r#"{"user_id":"u1","stake":90,"ts":3}"#,
        &mut records,
    );
    assert_eq!(records.len(), 1, "over the new limit of 80");
    assert_eq!(records[0].fields[2].1.as_f64(), Some(80.0));
}

/// The complete example of the language's specification, as written there (with a `customers`
/// table), over a stream where: u1 matches; u2 plays casino between its bets and its withdrawal;
/// u3 matches with four bets (a fifth has odds too high) and is not in the table; u4 withdraws too
/// little, then enough but 30 minutes after its deposit, which `within 30m` excludes.
#[test]
fn the_specifications_complete_example_runs_as_written() {
    let case = Path::new("tests/tables/spec_bonus_abuse");
    let dir = tempfile::tempdir().unwrap();
    let tbl = dir.path().join("customers.tbl");
    build(&BuildOptions::new(case.join("customers.csv"), "id", &tbl)).unwrap();
    let t = SharedTable::open(&tbl, OpenOptions::default()).unwrap();
    let text = std::fs::read_to_string(case.join("pattern.cep")).unwrap();
    let prog = compile(
        &[Source {
            file: "pattern.cep",
            text: &text,
        }],
        &options(&t),
    )
    .unwrap();
    let opts = EngineOptions {
        tables: vec![("customers".into(), t)],
        ..EngineOptions::default()
    };
    let inputs = [
        Input::parse(&format!(
            "payments={}",
            case.join("payments.jsonl").display()
        )),
        Input::parse(&format!("bets={}", case.join("bets.jsonl").display())),
    ];
    let mut out = Vec::new();
    let summary = replay(Arc::new(prog), &inputs, opts, &mut out, &mut |l: &str| {
        panic!("{l}")
    })
    .unwrap();
    assert_eq!(summary.events, 24);
    let got = common::records(&out);
    let want = common::read_jsonl(&case.join("expected.jsonl"));
    assert_eq!(want.len(), 2);
    if let Some(d) = common::exact_diff(&got, &want) {
        panic!("{d}");
    }
}
