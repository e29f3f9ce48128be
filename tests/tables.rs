//! Lookup tables in patterns: enrichment end to end (library and command line), the compiler's
//! checks of tables and columns, a table replaced between two events, and a table file
//! rewritten in place (`cp`) or truncated while it is in use, in the library and under
//! `kairos replay`.

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

// ---------------------------------------------------------------------------------------------
// Table files rewritten in place or truncated while in use. Mapping such a file directly would
// kill the process with SIGBUS, so every test of it runs in a child process: a regression fails
// the test with the child's signal instead of killing the test harness.

/// Set, in a child process, to the name of the test it runs.
const CHILD: &str = "KAIROS_TABLES_CHILD";

/// How a child process ended, in words ("killed by signal 7 (SIGBUS)").
fn ended(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let name = if sig == 7 { " (SIGBUS)" } else { "" };
            return format!("killed by signal {sig}{name}");
        }
    }
    status.to_string()
}

/// Runs test `name` again, alone, in a child process of this test binary and checks that it
/// passed; returns false in that child, which then runs the test's body.
fn rerun_in_child(name: &str) -> bool {
    if std::env::var(CHILD).as_deref() == Ok(name) {
        return false;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the test in a child process: {}\n{stdout}\n{stderr}",
        ended(out.status)
    );
    true
}

/// Builds version `v` of a table of `rows` rows into `path`: columns `id` (the key), `version`,
/// `check` (`id * 1000 + v`) and `label` (`v{v}-{id}`), so that any row tells its version.
fn versioned(dir: &Path, path: &Path, v: i64, rows: i64) {
    let csv = dir.join(format!("v{v}.csv"));
    let mut text = String::from("id,version,check,label\n");
    for id in 0..rows {
        text += &format!("{id},{v},{},v{v}-{id}\n", id * 1000 + v);
    }
    std::fs::write(&csv, text).unwrap();
    build(&BuildOptions::new(&csv, "id", path)).unwrap();
}

/// Checks that every row of `t` is the row `id` of version `v`, by scan and by lookup.
fn assert_version(t: &kairos::table::Table, v: i64, rows: i64) {
    let (version, check, label) = (
        t.column("version").unwrap(),
        t.column("check").unwrap(),
        t.column("label").unwrap(),
    );
    assert_eq!(t.len(), rows as usize);
    t.verify().unwrap();
    for id in 0..rows {
        let row = t.get_int(id).unwrap();
        assert_eq!(row.int(version), Some(v), "row {id}");
        assert_eq!(row.int(check), Some(id * 1000 + v), "row {id}");
        assert_eq!(row.str(label), Some(format!("v{v}-{id}").as_str()));
    }
}

/// What a watcher reported, kept for the test to wait on.
#[derive(Debug)]
enum Seen {
    Swapped(u64),
    Rejected(String),
}

/// Waits for the next event that `pick` picks and returns what it picked (every event received
/// is kept in `seen`); fails after a generous deadline (a safeguard against hanging, not a
/// timing check).
fn wait_for<T>(
    events: &std::sync::mpsc::Receiver<Seen>,
    seen: &mut Vec<Seen>,
    what: &str,
    pick: impl Fn(&Seen) -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match events.recv_timeout(left) {
            Ok(e) => {
                let picked = pick(&e);
                seen.push(e);
                if let Some(p) = picked {
                    return p;
                }
            }
            Err(_) => panic!("no event: {what}; seen {seen:?}"),
        }
    }
}

#[test]
fn a_table_file_copied_over_or_truncated_in_place_keeps_serving_the_loaded_version() {
    use kairos::table::{SwapEvent, TableWatcher, WatchOptions};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    if rerun_in_child(
        "a_table_file_copied_over_or_truncated_in_place_keeps_serving_the_loaded_version",
    ) {
        return;
    }
    // Version 1 spans many pages; version 2 is shorter, so that rewriting the file in place
    // leaves pages of a mapping of version 1 past the end of the file.
    const ROWS: [i64; 4] = [0, 4000, 500, 600];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("versions.tbl");
    versioned(dir.path(), &path, 1, ROWS[1]);
    for v in 2..=3 {
        versioned(
            dir.path(),
            &dir.path().join(format!("v{v}.tbl")),
            v,
            ROWS[v as usize],
        );
    }
    let shared = SharedTable::open(&path, OpenOptions::default()).unwrap();
    let (tx, events) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let watcher = TableWatcher::spawn(
        shared.clone(),
        WatchOptions {
            interval: Duration::from_millis(5),
            on_event: Some(Arc::new(move |e: SwapEvent<'_>| {
                let seen = match e {
                    SwapEvent::Swapped { generation, .. } => Seen::Swapped(generation),
                    SwapEvent::Rejected { .. } => Seen::Rejected(e.to_string()),
                };
                let _ = tx.lock().unwrap().send(seen);
            })),
        },
    )
    .unwrap();

    // Readers look rows up all along, each event in one version, versions never going back,
    // until they have seen the last version and are told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|seed: i64| {
            let mut reader = shared.reader();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut last, mut lookups, mut id) = (1, 0u64, seed);
                while !(last == 3 && stop.load(Ordering::Acquire)) {
                    let t = reader.current();
                    let (version, check) =
                        (t.column("version").unwrap(), t.column("check").unwrap());
                    let v = t.get_int(0).unwrap().int(version).unwrap();
                    assert!(v >= last, "went back from version {last} to {v}");
                    last = v;
                    for _ in 0..16 {
                        id = (id * 7 + 3) % ROWS[v as usize];
                        let row = t.get_int(id).unwrap();
                        assert_eq!(row.int(version), Some(v));
                        assert_eq!(row.int(check), Some(id * 1000 + v));
                        lookups += 1;
                    }
                }
                (last, lookups)
            })
        })
        .collect();

    let inode = |p: &Path| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p).unwrap().ino()
        }
        #[cfg(not(unix))]
        {
            let _ = p;
            0
        }
    };
    let ino = inode(&path);
    let mut seen = Vec::new();

    // `cp v2.tbl versions.tbl`: the same file, truncated and rewritten.
    let v1 = shared.load();
    std::fs::copy(dir.path().join("v2.tbl"), &path).unwrap();
    assert_eq!(inode(&path), ino, "rewritten in place");
    assert_version(&v1, 1, ROWS[1]);
    wait_for(&events, &mut seen, "version 2 swapped in", |e| {
        matches!(e, Seen::Swapped(1)).then_some(())
    });
    assert_version(&shared.load(), 2, ROWS[2]);
    assert_version(&v1, 1, ROWS[1]);
    drop(v1);

    // Truncated to nothing: refused, and version 2 still answers.
    let v2 = shared.load();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_version(&v2, 2, ROWS[2]);
    let refused = wait_for(&events, &mut seen, "the empty file refused", |e| match e {
        Seen::Rejected(m) => Some(m.clone()),
        Seen::Swapped(_) => None,
    });
    let want = format!(
        "replacement refused, keeping the loaded version: {}: truncated: the header ends at byte \
         128 but the file has 0 bytes",
        path.display()
    );
    assert_eq!(refused, want);
    assert_eq!(shared.generation(), 1);
    assert_version(&v2, 2, ROWS[2]);
    assert_version(&shared.load(), 2, ROWS[2]);
    drop(v2);

    // A valid version copied over the empty file is taken.
    std::fs::copy(dir.path().join("v3.tbl"), &path).unwrap();
    assert_eq!(inode(&path), ino);
    wait_for(&events, &mut seen, "version 3 swapped in", |e| {
        matches!(e, Seen::Swapped(2)).then_some(())
    });
    assert_version(&shared.load(), 3, ROWS[3]);

    // The readers end on version 3, having looked rows up throughout.
    stop.store(true, Ordering::Release);
    for r in readers {
        let (last, lookups) = r.join().unwrap();
        assert_eq!(last, 3);
        assert!(lookups > 0);
    }
    watcher.stop();
    // A copy caught half-written is tried again, never reported.
    assert!(
        !seen
            .iter()
            .any(|e| format!("{e:?}").contains("changed while")),
        "{seen:?}"
    );
    assert_eq!(shared.swaps(), 2);
}

/// `kairos replay --table customers=FILE --input bets=FIFO`: the replay opens its tables and
/// starts their watchers, then blocks reading the FIFO until the test closes it, so the test
/// can change the table file while the process runs and only then send the events. Returns the
/// child, its stderr as a channel of lines, and the FIFO opened for writing.
#[cfg(unix)]
fn replay_waiting_on_a_fifo(
    dir: &Path,
    table: &Path,
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<String>,
    std::fs::File,
) {
    use std::io::BufRead;
    let fifo = dir.join("bets.jsonl");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args([
            "replay",
            "--patterns",
            &format!("{CASE}/pattern.cep"),
            "--input",
        ])
        .arg(format!("bets={}", fifo.display()))
        .arg("--table")
        .arg(format!("customers={}", table.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Opening the FIFO for writing returns once the replay has opened it for reading: its
    // tables are open and watched by then.
    let opener = std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(fifo));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !opener.is_finished() {
        if let Some(status) = child.try_wait().unwrap() {
            let rest: Vec<String> = lines.try_iter().collect();
            panic!("kairos replay ended early, {}: {rest:?}", ended(status));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kairos replay never opened its input"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    (child, lines, opener.join().unwrap().unwrap())
}

/// Waits for the replay's next stderr line that contains `what` and returns it; fails (with
/// the lines seen) if the process ends or a generous deadline passes first.
#[cfg(unix)]
fn stderr_line(lines: &std::sync::mpsc::Receiver<String>, what: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l.contains(what) => return l,
            Ok(l) => seen.push(l),
            Err(_) => panic!("kairos replay wrote no line with `{what}` on stderr: {seen:?}"),
        }
    }
}

/// Sends the case's bets into the FIFO, closes it, and returns the replay's records once it
/// has ended, checking that it ended well.
#[cfg(unix)]
fn finish_replay(
    mut child: std::process::Child,
    mut fifo: std::fs::File,
) -> Vec<serde_json::Value> {
    use std::io::{Read, Write};
    fifo.write_all(&std::fs::read(Path::new(CASE).join("bets.jsonl")).unwrap())
        .unwrap();
    drop(fifo);
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "kairos replay {}", ended(status));
    common::records(&stdout)
}

#[cfg(unix)]
#[test]
fn replay_reports_a_truncated_table_and_keeps_matching_with_the_loaded_one() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("customers.tbl");
    build(&BuildOptions::new(
        Path::new(CASE).join("customers.csv"),
        "id",
        &table,
    ))
    .unwrap();
    let (child, lines, fifo) = replay_waiting_on_a_fifo(dir.path(), &table);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&table)
        .unwrap()
        .set_len(0)
        .unwrap();
    let line = stderr_line(&lines, "refused");
    assert_eq!(
        line,
        format!(
            "kairos: table `customers`: replacement refused, keeping the loaded version: {}: \
             truncated: the header ends at byte 128 but the file has 0 bytes",
            table.display()
        )
    );
    // Every lookup reads the loaded table, none the emptied file.
    let got = finish_replay(child, fifo);
    let want = common::read_jsonl(&Path::new(CASE).join("expected.jsonl"));
    if let Some(d) = common::exact_multiset_diff(&got, &want) {
        panic!("{d}");
    }
}

#[cfg(unix)]
#[test]
fn replay_refuses_a_table_of_another_schema_then_swaps_in_one_copied_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("customers.tbl");
    build(&BuildOptions::new(
        Path::new(CASE).join("customers.csv"),
        "id",
        &table,
    ))
    .unwrap();
    // A version without the `vip` column, and one where u1's limit drops from 100 to 40.
    let other = dir.path().join("other.csv");
    std::fs::write(&other, "id,segment,max_stake\nu1,retail,40\n").unwrap();
    let mut opts = BuildOptions::new(&other, "id", dir.path().join("other.tbl"));
    opts.schema = Some("max_stake:float".into());
    build(&opts).unwrap();
    let lower = dir.path().join("lower.csv");
    std::fs::write(
        &lower,
        "id,segment,max_stake,vip\nu1,retail,40,false\nu2,vip,5000.5,true\nu3,,50,false\n",
    )
    .unwrap();
    let mut opts = BuildOptions::new(&lower, "id", dir.path().join("lower.tbl"));
    opts.schema = Some("max_stake:float".into());
    build(&opts).unwrap();

    let (child, lines, fifo) = replay_waiting_on_a_fifo(dir.path(), &table);
    std::fs::copy(dir.path().join("other.tbl"), &table).unwrap();
    let line = stderr_line(&lines, "refused");
    assert!(
        line.starts_with(&format!(
            "kairos: table `customers`: replacement refused, keeping the loaded version: {}: \
             incompatible schema: 3 columns but the loaded table has 4",
            table.display()
        )),
        "{line}"
    );
    std::fs::copy(dir.path().join("lower.tbl"), &table).unwrap();
    let line = stderr_line(&lines, "swapped");
    assert_eq!(
        line,
        "kairos: table `customers`: swapped in a new version (generation 1, 3 rows)"
    );
    let got = finish_replay(child, fifo);
    // u1's bets of 50 and 150 are both over the new limit of 40.
    let mut want = common::read_jsonl(&Path::new(CASE).join("expected.jsonl"));
    want.retain(|r| r["key"] != "u1");
    for (ts, stake) in [(1, 50), (2, 150)] {
        want.push(serde_json::json!({
            "pattern": "limit_breach", "sink": "alerts", "key": "u1", "ts": ts,
            "value": {"user": "u1", "stake": stake, "limit": 40.0, "segment": "retail", "vip": false}
        }));
    }
    if let Some(d) = common::exact_multiset_diff(&got, &want) {
        panic!("{d}");
    }
}

/// Where an open table's bytes live follows from the file system: a clone where it makes them
/// (`cp --reflink=always` tells), a copy in memory elsewhere. Run with `TMPDIR` on XFS or
/// Btrfs for the first, on ext4 or tmpfs for the second.
#[cfg(target_os = "linux")]
#[test]
fn tables_are_private_copies_cloned_where_the_file_system_can() {
    use kairos::table::{Backing, Table};
    if rerun_in_child("tables_are_private_copies_cloned_where_the_file_system_can") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.tbl");
    versioned(dir.path(), &path, 1, 3000);
    let bytes = std::fs::read(&path).unwrap();
    let probe = dir.path().join("probe");
    let clones = std::process::Command::new("cp")
        .arg("--reflink=always")
        .arg(&path)
        .arg(&probe)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    let want = if clones {
        Backing::Reflink
    } else {
        Backing::Memory
    };
    for populate in [false, true] {
        let opts = OpenOptions {
            populate,
            ..OpenOptions::default()
        };
        let t = Table::open(&path, &opts).unwrap();
        assert_eq!(t.backing(), want);
        // The copy is private: the file rewritten in place with other bytes, then emptied,
        // changes nothing the table reads.
        std::fs::write(&path, vec![0xa5; bytes.len()]).unwrap();
        assert_version(&t, 1, 3000);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert_version(&t, 1, 3000);
        std::fs::write(&path, &bytes).unwrap();
    }
    // Nothing is left beside the table: the clone was never linked into the directory.
    let _ = std::fs::remove_file(&probe);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["t.tbl", "v1.csv"]);
    assert_eq!(
        Table::from_bytes(&bytes, &OpenOptions::default())
            .unwrap()
            .backing(),
        Backing::Memory
    );
}

/// A table opened while another process rewrites its file in place, again and again: each open
/// gives a complete version, or an error that says why (the file changed during the copy, or
/// the copy is short or torn), never a mix of two versions, never a crash.
#[test]
fn opening_a_file_while_it_is_rewritten_gives_one_whole_version_or_an_error() {
    use kairos::table::{Table, TableError};
    use std::sync::atomic::{AtomicBool, Ordering};
    if rerun_in_child("opening_a_file_while_it_is_rewritten_gives_one_whole_version_or_an_error") {
        return;
    }
    const ROWS: [i64; 3] = [0, 3000, 200];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.tbl");
    let mut versions = Vec::new();
    for v in 1..=2 {
        let p = dir.path().join(format!("v{v}.tbl"));
        versioned(dir.path(), &p, v, ROWS[v as usize]);
        versions.push(std::fs::read(&p).unwrap());
    }
    std::fs::write(&path, &versions[0]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let mut writes = 0usize;
            while !stop.load(Ordering::Acquire) {
                std::fs::write(&path, &versions[writes % 2]).unwrap();
                writes += 1;
            }
            writes
        })
    };
    let (mut opened, mut refused) = (0, 0);
    for _ in 0..400 {
        match Table::open(&path, &OpenOptions::default()) {
            Ok(t) => {
                let version = t.column("version").unwrap();
                let v = t.get_int(0).unwrap().int(version).unwrap();
                assert_version(&t, v, ROWS[v as usize]);
                opened += 1;
            }
            Err(
                TableError::Changed { .. }
                | TableError::Truncated { .. }
                | TableError::Checksum { .. }
                | TableError::BadMagic { .. }
                | TableError::Corrupt { .. },
            ) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    stop.store(true, Ordering::Release);
    let writes = writer.join().unwrap();
    assert_eq!(opened + refused, 400, "{writes} writes");
}
