//! Lookup tables end to end: build from CSV and JSON lines, open, look up; builder errors;
//! corrupt and truncated files; replacing a table under concurrent readers.
//!
//! Run: `cargo test --release --test table_format`.

use kairos::event::Value;
use kairos::table::{
    build, format, BuildOptions, ColumnType, InputFormat, OpenOptions, SharedTable, SwapEvent,
    Table, TableError, TableWatcher, WatchOptions,
};
use proptest::prelude::*;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Building, opening and exercising tables

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Builds `text` (named `name`) keyed by `key`, returns the output path or the error.
fn try_build(
    dir: &Path,
    name: &str,
    text: &str,
    key: &str,
    schema: Option<&str>,
) -> Result<PathBuf, TableError> {
    let input = write(dir, name, text);
    let output = dir.join(format!("{name}.tbl"));
    let opts = BuildOptions {
        schema: schema.map(str::to_string),
        ..BuildOptions::new(&input, key, &output)
    };
    build(&opts).map(|_| output)
}

fn open(path: &Path) -> Table {
    Table::open(path, &OpenOptions::default()).unwrap()
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Reads every column of every row and a few lookups; the point is that nothing panics.
fn exercise(t: &Table) {
    let cols: Vec<_> = (0..t.schema().len())
        .map(|i| t.column_at(i).unwrap())
        .collect();
    let mut n = 0;
    for row in t.rows() {
        for &c in &cols {
            let _ = (
                row.int(c),
                row.float(c),
                row.str(c),
                row.bool(c),
                row.is_null(c),
            );
            let _ = row.value(c);
        }
        n += 1;
        if n > 10_000 {
            break;
        }
    }
    for k in [0i64, 1, 2, 3, -1, 42, i64::MIN, i64::MAX] {
        if let Some(r) = t.get_int(k) {
            for &c in &cols {
                let _ = r.value(c);
            }
        }
    }
    for k in ["", "a", "b", "k1", "u42", "é"] {
        if let Some(r) = t.get_str(k) {
            for &c in &cols {
                let _ = r.value(c);
            }
        }
    }
    let _ = t.get(&Value::Float(1.0));
    let _ = t.verify();
}

// ---------------------------------------------------------------------------------------------
// Round trip

#[derive(Clone, Debug)]
enum Cell {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
}

#[derive(Clone, Debug)]
struct Case {
    key_ty: ColumnType,
    types: Vec<ColumnType>,
    /// Row: key, then one optional value per extra column.
    rows: Vec<(Cell, Vec<Option<Cell>>)>,
    absent: Vec<Cell>,
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z]{1,8}",
        "\\PC{0,12}",
        prop::collection::vec(any::<char>(), 0..10).prop_map(String::from_iter),
    ]
}

fn key_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,6}",
        "\\PC{1,10}",
        prop::collection::vec(any::<char>(), 1..8).prop_map(String::from_iter)
    ]
}

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        Just(0.0),
        Just(-0.0),
        (-1000i32..1000).prop_map(f64::from),
        Just(f64::MIN_POSITIVE / 4.0),
    ]
}

fn cell(ty: ColumnType) -> BoxedStrategy<Cell> {
    match ty {
        ColumnType::Int => prop_oneof![any::<i64>(), -5i64..5]
            .prop_map(Cell::Int)
            .boxed(),
        ColumnType::Float => finite().prop_map(Cell::Float).boxed(),
        ColumnType::Str => text().prop_map(Cell::Str).boxed(),
        ColumnType::Bool => any::<bool>().prop_map(Cell::Bool).boxed(),
    }
}

fn column_type() -> impl Strategy<Value = ColumnType> {
    prop_oneof![
        Just(ColumnType::Int),
        Just(ColumnType::Float),
        Just(ColumnType::Str),
        Just(ColumnType::Bool)
    ]
}

fn key(ty: ColumnType) -> BoxedStrategy<Cell> {
    match ty {
        ColumnType::Int => prop_oneof![any::<i64>(), -600i64..600]
            .prop_map(Cell::Int)
            .boxed(),
        _ => key_text().prop_map(Cell::Str).boxed(),
    }
}

fn case() -> impl Strategy<Value = Case> {
    let key_ty = prop_oneof![Just(ColumnType::Int), Just(ColumnType::Str)];
    (
        key_ty,
        prop::collection::vec(column_type(), 0..5),
        0usize..500,
    )
        .prop_flat_map(|(key_ty, types, n)| {
            let row_values = types
                .iter()
                .map(|&t| prop::option::weighted(0.8, cell(t)))
                .collect::<Vec<_>>();
            let rows = prop::collection::vec((key(key_ty), row_values), n);
            let absent = prop::collection::vec(key(key_ty), 0..20);
            (Just(key_ty), Just(types), rows, absent).prop_map(
                |(key_ty, types, mut rows, absent)| {
                    // Keys must be unique: keep the first row of each.
                    let mut seen = HashSet::new();
                    rows.retain(|(k, _)| seen.insert(format!("{k:?}")));
                    Case {
                        key_ty,
                        types,
                        rows,
                        absent,
                    }
                },
            )
        })
}

fn csv_text(c: &Cell) -> String {
    match c {
        Cell::Int(i) => i.to_string(),
        Cell::Float(f) => format!("{f:?}"),
        Cell::Str(s) => s.clone(),
        Cell::Bool(b) => b.to_string(),
    }
}

fn json_value(c: &Cell) -> serde_json::Value {
    match c {
        Cell::Int(i) => (*i).into(),
        Cell::Float(f) => serde_json::Number::from_f64(*f).unwrap().into(),
        Cell::Str(s) => s.clone().into(),
        Cell::Bool(b) => (*b).into(),
    }
}

fn names(case: &Case) -> Vec<String> {
    let mut v = vec!["key".to_string()];
    v.extend((0..case.types.len()).map(|i| format!("c{i}")));
    v
}

fn schema_string(case: &Case) -> String {
    let mut parts = vec![format!("key:{}", case.key_ty)];
    parts.extend(
        case.types
            .iter()
            .enumerate()
            .map(|(i, t)| format!("c{i}:{t}")),
    );
    parts.join(",")
}

fn write_csv(case: &Case, path: &Path) {
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(names(case)).unwrap();
    for (k, vals) in &case.rows {
        let mut rec = vec![csv_text(k)];
        rec.extend(
            vals.iter()
                .map(|v| v.as_ref().map(csv_text).unwrap_or_default()),
        );
        w.write_record(&rec).unwrap();
    }
    w.flush().unwrap();
}

fn write_jsonl(case: &Case, path: &Path) {
    let mut out = String::new();
    let names = names(case);
    for (k, vals) in &case.rows {
        let mut m = serde_json::Map::new();
        m.insert(names[0].clone(), json_value(k));
        for (i, v) in vals.iter().enumerate() {
            // Nulls alternate between an explicit null and a missing field.
            match v {
                Some(v) => {
                    m.insert(names[i + 1].clone(), json_value(v));
                }
                None if i % 2 == 0 => {
                    m.insert(names[i + 1].clone(), serde_json::Value::Null);
                }
                None => {}
            }
        }
        out.push_str(&serde_json::Value::Object(m).to_string());
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

fn lookup<'t>(t: &'t Table, k: &Cell) -> Option<kairos::table::Row<'t>> {
    match k {
        Cell::Int(i) => {
            let a = t.get_int(*i);
            assert_eq!(
                a.map(|r| r.index()),
                t.get(&Value::Int(*i)).map(|r| r.index())
            );
            a
        }
        Cell::Str(s) => {
            let a = t.get_str(s);
            assert_eq!(
                a.map(|r| r.index()),
                t.get(&Value::from(s.as_str())).map(|r| r.index())
            );
            a
        }
        _ => unreachable!(),
    }
}

fn check_case(case: &Case, path: &Path, csv: bool) -> Result<(), TestCaseError> {
    let t = open(path);
    prop_assert_eq!(t.len(), case.rows.len());
    prop_assert_eq!(t.key_type(), case.key_ty);
    prop_assert_eq!(t.schema().len(), case.types.len() + 1);
    prop_assert!(t.verify().is_ok(), "{:?}", t.verify());
    let cols: Vec<_> = (0..case.types.len())
        .map(|i| t.column(&format!("c{i}")).unwrap())
        .collect();
    for (k, vals) in &case.rows {
        let row = lookup(&t, k);
        prop_assert!(row.is_some(), "key {:?} not found", k);
        let row = row.unwrap();
        for ((v, &c), ty) in vals.iter().zip(&cols).zip(&case.types) {
            prop_assert_eq!(c.ty(), *ty);
            // CSV cannot tell an empty string from an empty field: both are null.
            let expect = match v {
                Some(Cell::Str(s)) if csv && s.is_empty() => None,
                other => other.clone(),
            };
            match expect {
                None => {
                    prop_assert!(row.is_null(c));
                    prop_assert_eq!(row.value(c), Value::Null);
                }
                Some(Cell::Int(i)) => prop_assert_eq!(row.int(c), Some(i)),
                Some(Cell::Float(f)) => {
                    prop_assert_eq!(row.float(c).map(f64::to_bits), Some(f.to_bits()))
                }
                Some(Cell::Str(s)) => prop_assert_eq!(row.str(c), Some(s.as_str())),
                Some(Cell::Bool(b)) => prop_assert_eq!(row.bool(c), Some(b)),
            }
        }
    }
    let present: HashSet<String> = case.rows.iter().map(|(k, _)| format!("{k:?}")).collect();
    for k in &case.absent {
        if !present.contains(&format!("{k:?}")) {
            prop_assert!(lookup(&t, k).is_none(), "absent key {:?} found", k);
        }
    }
    // Keys of the other type are misses.
    prop_assert!(t.get(&Value::Bool(true)).is_none());
    prop_assert!(t.get(&Value::Null).is_none());
    prop_assert_eq!(t.rows().count(), case.rows.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_csv_and_jsonl(case in case()) {
        let dir = tempfile::tempdir().unwrap();
        let schema = schema_string(&case);
        for (name, csv) in [("in.csv", true), ("in.jsonl", false)] {
            let input = dir.path().join(name);
            if csv { write_csv(&case, &input) } else { write_jsonl(&case, &input) }
            let output = dir.path().join(format!("{name}.tbl"));
            let stats = build(&BuildOptions { schema: Some(schema.clone()), ..BuildOptions::new(&input, "key", &output) });
            prop_assert!(stats.is_ok(), "{}: {}", name, stats.unwrap_err());
            let stats = stats.unwrap();
            prop_assert_eq!(stats.rows as usize, case.rows.len());
            prop_assert_eq!(stats.bytes, std::fs::metadata(&output).unwrap().len());
            check_case(&case, &output, csv)?;
        }
    }
}

#[test]
fn inference_from_csv_and_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "id,n,x,b,s,empty\n1,10,1.5,true,a,\n2,-3,2,FALSE,007,\n3,,,,,\n";
    let t = open(&try_build(dir.path(), "a.csv", csv, "id", None).unwrap());
    let types: Vec<_> = t.schema().columns().iter().map(|c| c.ty).collect();
    use ColumnType::*;
    assert_eq!(types, [Int, Int, Float, Bool, Str, Str]);
    let s = t.column("s").unwrap();
    assert_eq!(t.get_int(2).unwrap().str(s), Some("007"));

    let jsonl = "{\"id\":\"k1\",\"n\":1,\"x\":1,\"b\":true,\"s\":\"1\",\"m\":1}\n\n{\"id\":\"k2\",\"n\":2,\"x\":2.5,\"b\":null,\"m\":\"x\",\"late\":true}\n";
    let t = open(&try_build(dir.path(), "a.jsonl", jsonl, "id", None).unwrap());
    let cols: Vec<_> = t
        .schema()
        .columns()
        .iter()
        .map(|c| (c.name.as_str(), c.ty))
        .collect();
    assert_eq!(
        cols,
        [
            ("id", Str),
            ("n", Int),
            ("x", Float),
            ("b", Bool),
            ("s", Str),
            ("m", Str),
            ("late", Bool)
        ]
    );
    let m = t.column("m").unwrap();
    assert_eq!(t.get_str("k1").unwrap().str(m), Some("1"));
    let x = t.column("x").unwrap();
    assert_eq!(t.get_str("k1").unwrap().float(x), Some(1.0));
    assert_eq!(
        t.get_str("k2").unwrap().value(t.column("late").unwrap()),
        Value::Bool(true)
    );
    assert!(t.get_str("k1").unwrap().is_null(t.column("late").unwrap()));
}

#[test]
fn schema_overrides_inference_and_format_overrides_extension() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "codes.txt", "code,zip\n007,01234\n008,99\n");
    let output = dir.path().join("codes.tbl");
    let opts = BuildOptions {
        schema: Some("code:string".into()),
        format: Some(InputFormat::Csv),
        ..BuildOptions::new(&input, "code", &output)
    };
    build(&opts).unwrap();
    let t = open(&output);
    let zip = t.column("zip").unwrap();
    assert_eq!(zip.ty(), ColumnType::Int);
    assert_eq!(t.get_str("007").unwrap().int(zip), Some(1234));
    assert!(t.get_int(7).is_none());
    let err = build(&BuildOptions::new(&input, "code", &output)).unwrap_err();
    assert!(err.to_string().contains("cannot tell the format"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Builder errors

/// Builds and expects an error whose message contains every one of `parts`; checks that the
/// directory holds nothing but the input afterwards.
fn expect_build_error(
    name: &str,
    text: &str,
    key: &str,
    schema: Option<&str>,
    parts: &[&str],
) -> TableError {
    let dir = tempfile::tempdir().unwrap();
    let err = try_build(dir.path(), name, text, key, schema).unwrap_err();
    let msg = err.to_string();
    for p in parts {
        assert!(msg.contains(p), "`{msg}` does not contain `{p}`");
    }
    assert_eq!(
        listing(dir.path()),
        [name.to_string()],
        "a failed build left files behind"
    );
    err
}

#[test]
fn duplicate_keys_name_both_lines() {
    let e = expect_build_error(
        "customers.csv",
        "id,name\nu1,a\nu42,b\nu3,c\nu42,d\n",
        "id",
        None,
        &["customers.csv:5: duplicate key `u42` (first seen on line 3)"],
    );
    assert!(matches!(
        e,
        TableError::DuplicateKey {
            line: 5,
            first_line: 3,
            ..
        }
    ));
    expect_build_error(
        "n.csv",
        "id\n7\n8\n7\n",
        "id",
        None,
        &["n.csv:4: duplicate key `7` (first seen on line 2)"],
    );
    // A quoted field spanning lines: lines are where records start.
    expect_build_error(
        "q.csv",
        "id,note\na,\"two\nlines\"\nb,x\na,y\n",
        "id",
        None,
        &["q.csv:5: duplicate key `a` (first seen on line 2)"],
    );
    expect_build_error(
        "j.jsonl",
        "{\"id\":1}\n\n{\"id\":2}\n{\"id\":1}\n",
        "id",
        None,
        &["j.jsonl:4: duplicate key `1` (first seen on line 1)"],
    );
}

#[test]
fn missing_key_column() {
    expect_build_error(
        "a.csv",
        "id,name\n1,x\n",
        "user",
        None,
        &["a.csv: no column `user`", "`id`, `name`"],
    );
    expect_build_error("a.jsonl", "", "user", None, &["a.jsonl: no column `user`"]);
}

#[test]
fn empty_and_null_keys() {
    expect_build_error(
        "a.csv",
        "id,name\n1,x\n,y\n",
        "id",
        None,
        &["a.csv:3: the key `id` is empty"],
    );
    expect_build_error(
        "a.jsonl",
        "{\"id\":\"a\"}\n{\"id\":\"\"}\n",
        "id",
        None,
        &["a.jsonl:2: the key `id` is empty"],
    );
    expect_build_error(
        "b.jsonl",
        "{\"id\":\"a\"}\n{\"id\":null}\n",
        "id",
        None,
        &["b.jsonl:2: the key `id` is empty"],
    );
    expect_build_error(
        "c.jsonl",
        "{\"id\":\"a\"}\n{\"x\":1}\n",
        "id",
        None,
        &["c.jsonl:2: the key `id` is empty"],
    );
}

#[test]
fn float_and_bool_keys_are_refused() {
    expect_build_error(
        "a.csv",
        "id,v\n1.5,x\n",
        "id",
        None,
        &[
            "a.csv: the key column `id` is float",
            "int or string",
            "id:string",
        ],
    );
    expect_build_error(
        "a.csv",
        "id,v\ntrue,x\n",
        "id",
        Some("id:bool"),
        &["a.csv: the key column `id` is bool"],
    );
}

#[test]
fn bad_values_under_a_schema() {
    let e = expect_build_error(
        "limits.csv",
        "id,limit\na,1\nb,lots\n",
        "id",
        Some("limit:float"),
        &["limits.csv:3: column `limit`: `lots` is not a float"],
    );
    assert!(matches!(e, TableError::BadValue { line: 3, .. }));
    expect_build_error(
        "a.csv",
        "id,n\na,1.5\n",
        "id",
        Some("n:int"),
        &["a.csv:2: column `n`: `1.5` is not an int"],
    );
    expect_build_error(
        "a.csv",
        "id,f\na,yes\n",
        "id",
        Some("f:bool"),
        &["a.csv:2: column `f`: `yes` is not a bool"],
    );
    expect_build_error(
        "a.jsonl",
        "{\"id\":\"a\",\"n\":true}\n",
        "id",
        Some("n:int"),
        &["a.jsonl:1: column `n`: `true` is not an int"],
    );
    expect_build_error(
        "a.jsonl",
        "{\"id\":\"a\",\"n\":1.5}\n",
        "id",
        Some("n:int"),
        &["a.jsonl:1: column `n`: `1.5` is not an int"],
    );
}

#[test]
fn ragged_rows() {
    let e = expect_build_error(
        "r.csv",
        "id,a,b\n1,2,3\n4,5\n",
        "id",
        None,
        &["r.csv:3: 2 fields, but the header has 3"],
    );
    assert!(matches!(
        e,
        TableError::RaggedRow {
            line: 3,
            found: 2,
            expected: 3,
            ..
        }
    ));
    expect_build_error(
        "r.csv",
        "id,a\n1,2,3\n",
        "id",
        None,
        &["r.csv:2: 3 fields, but the header has 2"],
    );
}

#[test]
fn bad_schema_strings() {
    for (spec, part) in [
        ("", "empty"),
        ("id:int,", "entry 2 is empty"),
        ("id", "has no type"),
        ("id:blob", "unknown type `blob`"),
        ("id:int,id:string", "given twice"),
        ("nope:int", "no column `nope`"),
    ] {
        let e = expect_build_error("s.csv", "id,v\n1,2\n", "id", Some(spec), &[part]);
        assert!(matches!(e, TableError::Schema { .. }), "{e}");
    }
}

#[test]
fn malformed_inputs() {
    expect_build_error(
        "a.jsonl",
        "{\"id\":1}\n{\"id\":2,\n",
        "id",
        None,
        &["a.jsonl:2: invalid JSON"],
    );
    expect_build_error(
        "a.jsonl",
        "{\"id\":1}\n[1,2]\n",
        "id",
        None,
        &["a.jsonl:2:", "JSON object"],
    );
    expect_build_error(
        "a.jsonl",
        "{\"id\":1,\"tags\":[1]}\n",
        "id",
        None,
        &["a.jsonl:1: column `tags`: nested array"],
    );
    expect_build_error(
        "a.jsonl",
        "{\"id\":1,\"id\":2}\n",
        "id",
        None,
        &["a.jsonl:1: field `id` appears twice"],
    );
    expect_build_error(
        "a.csv",
        "id,id\n1,2\n",
        "id",
        None,
        &["a.csv:1: column `id` appears twice"],
    );
    let dir = tempfile::tempdir().unwrap();
    let err = build(&BuildOptions::new(
        dir.path().join("none.csv"),
        "id",
        dir.path().join("o.tbl"),
    ))
    .unwrap_err();
    assert!(matches!(err, TableError::Io { .. }), "{err}");
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn a_failed_build_keeps_the_previous_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = try_build(dir.path(), "t.csv", "id,v\n1,a\n", "id", None).unwrap();
    let before = std::fs::read(&out).unwrap();
    assert!(try_build(dir.path(), "t.csv", "id,v\n1,a\n1,b\n", "id", None).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), before);
    assert_eq!(listing(dir.path()), ["t.csv", "t.csv.tbl"]);
}

#[test]
fn empty_tables() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(&try_build(dir.path(), "e.csv", "id,v\n", "id", Some("id:int")).unwrap());
    assert!(t.is_empty());
    assert!(t.get_int(0).is_none());
    assert_eq!(t.rows().count(), 0);
    t.verify().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Reader: corrupt files

/// A small table with every type, nulls and strings, as bytes.
fn small_table(dir: &Path) -> (PathBuf, Vec<u8>) {
    let csv =
        "id,name,score,active,n\nu1,Ada,1.5,true,7\nu2,,2.5,false,\nu3,Émile,,true,-3\nu4,x,0,,1\n";
    let out = try_build(dir, "small.csv", csv, "id", None).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    (out, bytes)
}

fn no_verify() -> OpenOptions {
    OpenOptions {
        verify_checksum: false,
        ..OpenOptions::default()
    }
}

/// The control bytes of the small table: where they start and how many buckets there are.
fn control_section(bytes: &[u8]) -> (usize, usize) {
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
    (u64_at(64), u64_at(72) - 16)
}

#[test]
fn damaged_control_bytes_give_misses_and_verify_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = small_table(dir.path());
    let (ctrl, buckets) = control_section(&bytes);
    let full = (0..buckets).find(|&b| bytes[ctrl + b] & 0x80 != 0).unwrap();
    let key_of = |t: &Table, b: usize| {
        let id = t.column("id").unwrap();
        t.rows()
            .find(|r| r.index() == b)
            .and_then(|r| r.str(id).map(str::to_string))
            .unwrap()
    };
    let key = key_of(&open(&path), full);
    // The damaged bytes, written over the table and opened without the checksum.
    let reopen = |b: &[u8]| {
        std::fs::write(&path, b).unwrap();
        Table::open(&path, &no_verify()).unwrap()
    };

    // The row's control byte replaced: its key misses, and verify says which bucket and why.
    let damaged = |control: u8, report: String| {
        let mut b = bytes.clone();
        b[ctrl + full] = control;
        let t = reopen(&b);
        assert!(t.get_str(&key).is_none());
        let err = t.verify().unwrap_err().to_string();
        assert!(err.contains(&report), "{err}");
    };
    // Another tag.
    damaged(
        bytes[ctrl + full] ^ 0x01,
        format!("the row in bucket {full} is not found by its key"),
    );
    // A control byte that is neither empty nor full.
    damaged(0x05, format!("bucket {full} has the control byte 0x05"));

    // Every control byte full, the trailing group too: lookups end at the last bucket.
    let mut b = bytes.clone();
    for c in &mut b[ctrl..ctrl + buckets + 16] {
        *c = 0xff;
    }
    let t = reopen(&b);
    assert!(t.get_str("nobody").is_none());
    exercise(&t);
    assert!(t.verify().is_err());

    // A heap that ends the file is refused at open.
    let mut b = bytes.clone();
    let file_len = b.len();
    let heap_end = u64::from_le_bytes(b[96..104].try_into().unwrap()) as usize
        + u64::from_le_bytes(b[104..112].try_into().unwrap()) as usize;
    b.truncate(heap_end);
    b[112..120].copy_from_slice(&(heap_end as u64).to_le_bytes());
    assert!(heap_end < file_len);
    std::fs::write(&path, &b).unwrap();
    let err = Table::open(&path, &no_verify()).unwrap_err().to_string();
    assert!(err.contains("the string heap ends the file"), "{err}");
}

#[test]
fn every_truncation_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = small_table(dir.path());
    let trunc = dir.path().join("trunc.tbl");
    for len in 0..bytes.len() {
        for opts in [OpenOptions::default(), no_verify()] {
            let err = Table::from_bytes(&bytes[..len], &opts).unwrap_err();
            assert!(
                matches!(
                    err,
                    TableError::Truncated { .. } | TableError::BadMagic { .. }
                ),
                "{len}: {err}"
            );
        }
        if len % 7 == 0 || len < 16 {
            std::fs::write(&trunc, &bytes[..len]).unwrap();
            let err = Table::open(&trunc, &OpenOptions::default()).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("{}: ", trunc.display())), "{msg}");
            assert!(
                msg.contains("truncated") || msg.contains("bad magic"),
                "{msg}"
            );
        }
    }
    let t = Table::from_bytes(&bytes, &OpenOptions::default()).unwrap();
    assert_eq!(t.len(), 4);
}

#[test]
fn truncation_message_names_the_section() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = small_table(dir.path());
    let h = format::Header::decode(&bytes);
    let cut = (h.rows.offset + 3) as usize;
    std::fs::write(&path, &bytes[..cut]).unwrap();
    let msg = Table::open(&path, &OpenOptions::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        format!(
            "{}: truncated: the row section ends at byte {} but the file has {cut} bytes",
            path.display(),
            h.rows.offset + h.rows.len
        )
    );
}

#[test]
fn bad_magic_and_wrong_version() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = small_table(dir.path());
    let mut b = bytes.clone();
    b[0] = b'X';
    std::fs::write(&path, &b).unwrap();
    let msg = Table::open(&path, &OpenOptions::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        format!("{}: not a Kairos table (bad magic)", path.display())
    );

    let mut b = bytes.clone();
    b[8..12].copy_from_slice(&7u32.to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let err = Table::open(&path, &OpenOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            TableError::Version {
                found: 7,
                supported: kairos::table::format::VERSION,
                ..
            }
        ),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("unsupported table format version 7"));

    let csv = write(dir.path(), "plain.csv", "id\n1\n");
    let err = Table::open(&csv, &OpenOptions::default()).unwrap_err();
    assert!(matches!(err, TableError::BadMagic { .. }), "{err}");
}

#[test]
fn checksum_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = small_table(dir.path());
    let at = bytes.windows(3).position(|w| w == b"Ada").unwrap();
    let mut b = bytes.clone();
    b[at] ^= 0x20; // "Ada" -> "ada"
    std::fs::write(&path, &b).unwrap();
    let msg = Table::open(&path, &OpenOptions::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        format!("{}: checksum mismatch: the file is corrupt", path.display())
    );
    // Without the check, it opens and reads the changed byte.
    let t = Table::open(&path, &no_verify()).unwrap();
    let name = t.column("name").unwrap();
    assert_eq!(t.get_str("u1").unwrap().str(name), Some("ada"));
}

/// Simple deterministic generator, so that failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn byte_flips_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = small_table(dir.path());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Every single-bit flip: with the checksum on, all are caught.
    for at in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[at] ^= 1 << bit;
            assert!(
                Table::from_bytes(&b, &OpenOptions::default()).is_err(),
                "flip at {at}.{bit} undetected"
            );
            if let Ok(t) = Table::from_bytes(&b, &no_verify()) {
                exercise(&t);
            }
        }
    }
    // Random multi-byte damage with the checksum recomputed, so that the structural checks and
    // the lazy bounds checks are what stands between the bytes and a panic.
    for _ in 0..20_000 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.next() % 6 {
            let at = (rng.next() % b.len() as u64) as usize;
            b[at] = match rng.next() % 4 {
                0 => 0,
                1 => 0xff,
                _ => rng.next() as u8,
            };
        }
        let sum = format::checksum(&b);
        b[format::CHECKSUM_AT..format::CHECKSUM_AT + 8].copy_from_slice(&sum.to_le_bytes());
        if let Ok(t) = Table::from_bytes(&b, &OpenOptions::default()) {
            exercise(&t);
        }
    }
}

#[test]
fn rows_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = small_table(dir.path());
    let t = open(&path);
    t.verify().unwrap();
    let [id, name, score, active, n] =
        ["id", "name", "score", "active", "n"].map(|c| t.column(c).unwrap());
    assert_eq!(t.key_column(), id);
    assert_eq!(
        t.schema().to_string(),
        "*id:string,name:string,score:float,active:bool,n:int"
    );
    let r = t.get_str("u3").unwrap();
    assert_eq!(
        t.rows().find(|r| r.str(id) == Some("u3")).unwrap().index(),
        r.index()
    );
    assert_eq!(r.str(name), Some("Émile"));
    assert_eq!(r.value(score), Value::Null);
    assert_eq!(r.bool(active), Some(true));
    assert_eq!(r.int(n), Some(-3));
    // The wrong accessor for a column's type reads nothing.
    assert_eq!(r.float(n), None);
    assert_eq!(r.str(n), None);
    let r2 = t.get_str("u2").unwrap();
    assert!(r2.is_null(name) && r2.is_null(n) && !r2.is_null(score));
    assert_eq!(r2.value(active), Value::Bool(false));
    let mut keys: Vec<_> = t.rows().map(|r| r.str(id).unwrap().to_string()).collect();
    keys.sort();
    assert_eq!(keys, ["u1", "u2", "u3", "u4"]);
    assert!(t.get_int(1).is_none());
    assert!(t.get(&Value::Int(1)).is_none());
    assert!(format!("{t:?}").contains("rows: 4"));
    // A column id from another table of another schema reads as null rather than garbage.
    let other = open(&try_build(dir.path(), "o.csv", "k,f\n1,2.5\n", "k", None).unwrap());
    let f = other.column("f").unwrap();
    assert_eq!(t.get_str("u1").unwrap().float(f), None);
}

#[test]
fn open_options() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = small_table(dir.path());
    for populate in [false, true] {
        for huge_pages in [false, true] {
            let t = Table::open(
                &path,
                &OpenOptions {
                    populate,
                    huge_pages,
                    verify_checksum: true,
                },
            )
            .unwrap();
            assert_eq!(t.len(), 4);
        }
    }
    let err = Table::open(dir.path().join("missing.tbl"), &OpenOptions::default()).unwrap_err();
    assert!(matches!(err, TableError::Io { .. }));
    assert!(err
        .to_string()
        .starts_with(&format!("{}: ", dir.path().join("missing.tbl").display())));
}

// ---------------------------------------------------------------------------------------------
// Hot swap

/// Version `v` of a table keyed by id 0..rows: `version` = v and `check` = id * 1000 + v in
/// every row, so that a row of one version read with a row of another is detectable.
fn versioned_csv(v: i64, rows: i64) -> String {
    let mut s = String::from("id,version,check,label\n");
    for id in 0..rows {
        s.push_str(&format!("{id},{v},{},v{v}-{id}\n", id * 1000 + v));
    }
    s
}

fn build_version(dir: &Path, v: i64, rows: i64) -> PathBuf {
    let csv = write(dir, "versions.csv", &versioned_csv(v, rows));
    let out = dir.join("versions.tbl");
    build(&BuildOptions::new(csv, "id", &out)).unwrap();
    out
}

#[test]
fn readers_never_mix_versions_while_the_file_is_replaced() {
    const VERSIONS: i64 = 40;
    const ROWS: i64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let path = build_version(dir.path(), 0, ROWS);
    let shared = SharedTable::open(&path, OpenOptions::default()).unwrap();
    let swapped = Arc::new(AtomicU64::new(0));
    let s2 = swapped.clone();
    let watcher = TableWatcher::spawn(
        shared.clone(),
        WatchOptions {
            interval: Duration::from_millis(1),
            on_event: Some(Arc::new(move |e| {
                if let SwapEvent::Swapped { .. } = e {
                    s2.fetch_add(1, Ordering::Relaxed);
                }
            })),
        },
    )
    .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|seed| {
            let mut reader = shared.reader();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(0x1234_5678 + seed);
                let (mut last, mut events, mut versions_seen) = (0i64, 0u64, BTreeSet::new());
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    // One event: one table, several lookups.
                    let t = reader.current();
                    let (version, check, label) = (
                        t.column("version").unwrap(),
                        t.column("check").unwrap(),
                        t.column("label").unwrap(),
                    );
                    let v = t.get_int(0).unwrap().int(version).unwrap();
                    assert!(v >= last, "went back from version {last} to {v}");
                    last = v;
                    versions_seen.insert(v);
                    for _ in 0..8 {
                        let id = (rng.next() % ROWS as u64) as i64;
                        let row = t.get_int(id).unwrap();
                        assert_eq!(row.int(version), Some(v), "row {id} of another version");
                        assert_eq!(row.int(check), Some(id * 1000 + v));
                        assert_eq!(row.str(label), Some(format!("v{v}-{id}").as_str()));
                    }
                    events += 1;
                    if v == VERSIONS - 1 && done.load(Ordering::Acquire) {
                        return (events, versions_seen.len());
                    }
                    assert!(
                        Instant::now() < deadline,
                        "never saw the last version (at {v})"
                    );
                }
            })
        })
        .collect();

    for v in 1..VERSIONS {
        build_version(dir.path(), v, ROWS);
        std::thread::sleep(Duration::from_millis(3));
    }
    done.store(true, Ordering::Release);
    for r in readers {
        let (events, versions) = r.join().unwrap();
        assert!(
            events > 0 && versions >= 2,
            "{events} events, {versions} versions"
        );
    }
    drop(watcher);
    assert!(swapped.load(Ordering::Relaxed) >= 1);
    assert_eq!(shared.rejected(), 0, "{:?}", shared.last_error());
    assert_eq!(
        shared
            .load()
            .get_int(0)
            .unwrap()
            .int(shared.load().column("version").unwrap()),
        Some(VERSIONS - 1)
    );
}

#[test]
fn reload_now_publishes_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = build_version(dir.path(), 1, 10);
    let shared = SharedTable::open(&path, OpenOptions::default()).unwrap();
    let mut reader = shared.reader();
    let held = reader.held().clone();
    assert_eq!(reader.generation(), 0);
    build_version(dir.path(), 2, 10);
    assert!(shared.reload_if_changed().unwrap());
    assert!(!shared.reload_if_changed().unwrap());
    let version = reader.current().column("version").unwrap();
    assert_eq!(reader.current().get_int(3).unwrap().int(version), Some(2));
    assert_eq!(reader.generation(), 1);
    // The old version stays readable for whoever still holds it.
    assert_eq!(held.get_int(3).unwrap().int(version), Some(1));
    shared.reload_now().unwrap();
    assert_eq!(
        (shared.generation(), shared.swaps(), shared.rejected()),
        (2, 2, 0)
    );
}

#[test]
fn incompatible_or_corrupt_replacements_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = build_version(dir.path(), 1, 10);
    let shared = SharedTable::open(&path, OpenOptions::default()).unwrap();
    let mut reader = shared.reader();

    // A column changes type.
    let csv = write(dir.path(), "v.csv", "id,version,check,label\n1,x,1,a\n");
    build(&BuildOptions::new(&csv, "id", &path)).unwrap();
    let err = shared.reload_now().unwrap_err();
    assert!(matches!(err, TableError::Incompatible { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("column 2 is `version:string` but the loaded table has `version:int`"),
        "{err}"
    );

    // The key changes type. A poll that finds a bad file only notes it (the file may still be
    // being written); the next poll that finds the same file refuses it.
    let csv = write(dir.path(), "v.csv", "id,version,check,label\nk,1,1,a\n");
    build(&BuildOptions::new(&csv, "id", &path)).unwrap();
    assert!(!shared.reload_if_changed().unwrap());
    assert_eq!(shared.rejected(), 1);
    let err = shared.reload_if_changed().unwrap_err();
    assert!(
        err.to_string()
            .contains("the key is string but the loaded table's key is int"),
        "{err}"
    );
    // Refused once, not again until the file changes.
    assert!(!shared.reload_if_changed().unwrap());

    // A column is added.
    let csv = write(
        dir.path(),
        "v.csv",
        "id,version,check,label,extra\n1,1,1,a,2\n",
    );
    build(&BuildOptions::new(&csv, "id", &path)).unwrap();
    assert!(shared
        .reload_now()
        .unwrap_err()
        .to_string()
        .contains("5 columns but the loaded table has 4"));

    // Not a table at all.
    std::fs::write(dir.path().join("junk"), b"KAIROST\0 but not really").unwrap();
    std::fs::rename(dir.path().join("junk"), &path).unwrap();
    assert!(matches!(
        shared.reload_now().unwrap_err(),
        TableError::Truncated { .. }
    ));

    assert_eq!(shared.rejected(), 4);
    assert_eq!(shared.generation(), 0);
    assert!(shared.last_error().unwrap().contains("truncated"));
    let version = reader.current().column("version").unwrap();
    assert_eq!(reader.current().get_int(9).unwrap().int(version), Some(1));

    // A compatible file is taken again.
    build_version(dir.path(), 3, 10);
    assert!(shared.reload_if_changed().unwrap());
    assert_eq!(reader.current().get_int(9).unwrap().int(version), Some(3));
}

/// `cp` truncates a file, then writes it: a poll can find it empty or half-written. Such a file
/// is not refused if it has changed by the next poll; one that stays bad is refused once.
#[test]
fn a_file_caught_half_written_is_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = build_version(dir.path(), 1, 10);
    let shared = SharedTable::open(&path, OpenOptions::default()).unwrap();
    let v2 = std::fs::read(build_version(dir.path(), 2, 10)).unwrap();
    std::fs::write(&path, &v2[..v2.len() / 2]).unwrap();
    assert!(!shared.reload_if_changed().unwrap());
    std::fs::write(&path, &v2).unwrap();
    assert!(shared.reload_if_changed().unwrap());
    assert_eq!((shared.generation(), shared.rejected()), (1, 0));
    assert_eq!(shared.last_error(), None);

    // Cut short and left so: refused at the second look, then left alone.
    std::fs::write(&path, &v2[..v2.len() / 2]).unwrap();
    assert!(!shared.reload_if_changed().unwrap());
    let err = shared.reload_if_changed().unwrap_err();
    assert!(matches!(err, TableError::Truncated { .. }), "{err}");
    assert!(!shared.reload_if_changed().unwrap());
    assert_eq!((shared.generation(), shared.rejected()), (1, 1));
    let version = shared.load().column("version").unwrap();
    assert_eq!(shared.load().get_int(9).unwrap().int(version), Some(2));
}

#[test]
fn the_watcher_reports_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let path = build_version(dir.path(), 1, 5);
    let shared = SharedTable::open(&path, OpenOptions::default()).unwrap();
    let events = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let ev = events.clone();
    let watcher = TableWatcher::spawn(
        shared.clone(),
        WatchOptions {
            interval: Duration::from_millis(2),
            on_event: Some(Arc::new(move |e| {
                let s = match e {
                    SwapEvent::Swapped { generation, rows } => {
                        format!("swapped {generation} {rows}")
                    }
                    SwapEvent::Rejected { error } => format!("rejected {error}"),
                };
                ev.lock().unwrap().push(s);
            })),
        },
    )
    .unwrap();
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while events.lock().unwrap().len() < n {
            assert!(Instant::now() < deadline, "{:?}", events.lock().unwrap());
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let csv = write(dir.path(), "v.csv", "id,other\n1,1\n");
    build(&BuildOptions::new(&csv, "id", &path)).unwrap();
    wait_for(1);
    build_version(dir.path(), 2, 7);
    wait_for(2);
    watcher.stop();
    let events = events.lock().unwrap();
    assert!(
        events[0].starts_with("rejected ") && events[0].contains("incompatible schema"),
        "{events:?}"
    );
    assert_eq!(events[1], "swapped 1 7");
    assert_eq!(events.len(), 2, "{events:?}");
}

// ---------------------------------------------------------------------------------------------
// The format document

/// The hex dump in `docs/table-format.md` is exactly what the builder writes for its CSV.
#[test]
fn the_documented_example_is_byte_exact() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/table-format.md"))
        .unwrap();
    let section = &doc[doc.find("## A complete example").unwrap()..];
    let csv_block = section
        .split("```text\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let dump = section
        .split("```text\n")
        .nth(2)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let mut expected = Vec::new();
    for line in dump.lines() {
        let hex: String = line[10..49]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        for i in (0..hex.len()).step_by(2) {
            expected.push(u8::from_str_radix(&hex[i..i + 2], 16).unwrap());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = try_build(dir.path(), "doc.csv", csv_block, "id", None).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), expected);
    let t = open(&out);
    assert_eq!(format::hash_int(7), 0x8167_1e58_d6b5_96af);
    assert_eq!(format::hash_int(-1), 0x5111_c7e4_7d78_4413);
    assert_eq!(
        t.get_int(7).unwrap().str(t.column("name").unwrap()),
        Some("ab")
    );
}

#[test]
fn tables_and_handles_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Table>();
    send_sync::<SharedTable>();
    send::<kairos::table::TableReader>();
    send::<TableWatcher>();
    send_sync::<TableError>();
}

/// The reader's unchecked reads (control groups, rows, strings) on a table held in memory, and
/// on damaged copies of it: the test `cargo +nightly miri test --test table_format
/// from_bytes` runs under Miri (with `MIRIFLAGS=-Zmiri-disable-isolation` for the builder's
/// files), which would report any read outside the mapping or any invalid `&str`.
#[test]
fn from_bytes_lookups_and_damaged_copies() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = small_table(dir.path());
    let t = Table::from_bytes(&bytes, &OpenOptions::default()).unwrap();
    t.verify().unwrap();
    let name = t.column("name").unwrap();
    assert_eq!(t.get_str("u3").and_then(|r| r.str(name)), Some("Émile"));
    assert!(t.get_str("u9").is_none());
    exercise(&t);
    let int_table = std::fs::read(
        try_build(
            dir.path(),
            "ints.csv",
            "k,v\n1,a\n2,bb\n3,\n-7,dd\n",
            "k",
            None,
        )
        .unwrap(),
    )
    .unwrap();
    let t = Table::from_bytes(&int_table, &OpenOptions::default()).unwrap();
    let v = t.column("v").unwrap();
    assert_eq!(t.get_int(-7).and_then(|r| r.str(v)), Some("dd"));
    assert_eq!(t.get_int(3).map(|r| r.is_null(v)), Some(true));
    exercise(&t);
    // Every byte of the control section and the rows set to a few hostile values, one at a
    // time: opened without the checksum, every read stays in bounds.
    for base in [bytes, int_table] {
        let u64_at = |at: usize| u64::from_le_bytes(base[at..at + 8].try_into().unwrap()) as usize;
        let (from, to) = (u64_at(64), u64_at(80) + u64_at(88));
        for at in (from..to).step_by(if cfg!(miri) { 7 } else { 1 }) {
            for v in [0x00, 0x80, 0xff, 0xc3] {
                let mut b = base.clone();
                b[at] = v;
                if let Ok(t) = Table::from_bytes(&b, &no_verify()) {
                    exercise(&t);
                }
            }
        }
    }
}

/// Keys that all hash to the last home bucket: their probe runs past it into overflow buckets
/// the builder adds (probing never wraps around), a group of sixteen control bytes is not
/// enough to hold the run, and lookups, misses and `verify` all follow it there.
#[test]
fn probes_run_past_the_last_home_into_overflow_buckets() {
    let rows = 40u64;
    let homes = format::home_count_for(rows);
    let last: Vec<i64> = (0i64..)
        .filter(|&k| format::home(format::hash_int(k), homes) == homes - 1)
        .take(rows as usize + 5)
        .collect();
    let (present, absent) = last.split_at(rows as usize);
    let mut csv = String::from("k,v\n");
    for k in present {
        csv.push_str(&format!("{k},v{k}\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = try_build(dir.path(), "last.csv", &csv, "k", None).unwrap();
    let t = open(&path);
    t.verify().unwrap();
    let v = t.column("v").unwrap();
    for k in present {
        let r = t.get_int(*k).unwrap();
        assert_eq!(r.str(v).unwrap(), format!("v{k}"));
        assert!(r.index() as u64 >= homes - 1);
    }
    assert_eq!(
        t.rows().map(|r| r.index() as u64).max(),
        Some(homes - 1 + rows - 1),
        "every key sits in its own bucket from the last home on"
    );
    for k in absent {
        assert!(t.get_int(*k).is_none());
    }
}
