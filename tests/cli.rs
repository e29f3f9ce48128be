//! The `kairos` binary as a user runs it: `check` and `replay`, their exit statuses, what they
//! write to standard output and to standard error, and the files they write.

use std::path::Path;
use std::process::{Command, Output};

fn kairos(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kairos"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the kairos binary runs")
}

/// A temporary directory holding `files` (name, contents).
fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const GOOD: &str = "pattern up
  from s
  key k
  time at
  within 1s
  match a -> b
  define
    a = (kind == \"a\")
    b = (kind == \"b\" and v > a.v)
  emit out { a: a.id, b: b.id, span: b.ts - a.ts }
";

/// Times in nanoseconds. Line 2 is malformed, line 4 goes back in time; the b of line 3 is no
/// higher than the a, so the b of line 5 completes the match, 600,000,001 ns after the a.
const INPUT: &str = r#"{"k":"x","kind":"a","id":1,"v":1,"at":1000000000}
{"k":"x","kind":"b","id":2,"v":2,at}
{"k":"x","kind":"b","id":3,"v":0,"at":1500000000}
{"k":"x","kind":"b","id":4,"v":5,"at":1200000000}
{"k":"x","kind":"b","id":5,"v":5,"at":1600000001}
"#;

const RECORD: &str = r#"{"pattern":"up","sink":"out","key":"x","ts":1600000001,"value":{"a":1,"b":5,"span":600000001}}"#;

#[test]
fn check_prints_what_each_pattern_compiled_to() {
    let dir = dir_with(&[("good.cep", GOOD)]);
    let out = kairos(dir.path(), &["check", "good.cep"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("pattern up\n"), "{stdout}");
    assert!(stdout.contains("  key       k\n"), "{stdout}");
    assert!(
        stdout.contains("  time      event time, field at (ms)\n"),
        "{stdout}"
    );
    assert!(stdout.contains("  match     a -> b\n"), "{stdout}");
    assert!(stdout.contains("  within    1s\n"), "{stdout}");
    assert!(stdout.ends_with("ok: 1 pattern compiled\n"), "{stdout}");
}

#[test]
fn check_reports_every_error_with_its_place_and_fails() {
    let bad = "pattern p\n  from s\n  time at\n  match a -> b+ c?\n  emit out { n: count(zz) }\n";
    let dir = dir_with(&[("bad.cep", bad)]);
    let out = kairos(dir.path(), &["check", "bad.cep"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    let expected_first =
        "bad.cep:4:17: error: a greedy loop cannot be directly followed by an optional step
  |
4 |   match a -> b+ c?
  |                 ^^
  = hint: make the loop reluctant: `b+? c?`
";
    assert!(stderr.starts_with(expected_first), "{stderr}");
    assert!(
        stderr.contains("\nbad.cep:5:"),
        "both errors are reported: {stderr}"
    );
    assert!(stderr.ends_with("2 errors in patterns\n"), "{stderr}");
}

#[test]
fn replay_writes_records_to_the_output_file_and_reports_on_stderr() {
    let dir = dir_with(&[("good.cep", GOOD), ("in.jsonl", INPUT)]);
    let out = kairos(
        dir.path(),
        &[
            "replay",
            "--patterns",
            "good.cep",
            "--input",
            "s=in.jsonl",
            "--time-unit",
            "ns",
            "--output",
            "out.jsonl",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let records = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert_eq!(records, format!("{RECORD}\n"));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert_eq!(
        lines[0],
        "in.jsonl:2: malformed event, column 34: expected a field name; line skipped"
    );
    assert_eq!(
        lines[1],
        "in.jsonl:4: event time goes backwards (1200000000 ns after 1500000000 ns); each input must be in time order, line skipped"
    );
    assert!(
        lines[2].starts_with(
            "events 3  matches 1  timeouts 0  malformed 1  late 1  evicted 0  elapsed "
        ),
        "{}",
        lines[2]
    );
    assert!(lines[2].ends_with(" events/s"), "{}", lines[2]);
}

#[test]
fn replay_writes_to_stdout_and_quiet_drops_the_summary() {
    let dir = dir_with(&[("good.cep", GOOD), ("in.jsonl", INPUT)]);
    let out = kairos(
        dir.path(),
        &[
            "replay",
            "-p",
            "good.cep",
            "-i",
            "in.jsonl",
            "--time-unit",
            "ns",
            "-q",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{RECORD}\n"));
    // The problems in the input are still reported; only the summary goes.
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
    assert!(!stderr.contains("events/s"), "{stderr}");
}

#[test]
fn replay_reads_times_in_milliseconds_by_default() {
    let ms = r#"{"k":"x","kind":"a","id":1,"v":1,"at":1000}
{"k":"x","kind":"b","id":5,"v":5,"at":1600}
"#;
    let dir = dir_with(&[("good.cep", GOOD), ("in.jsonl", ms)]);
    let out = kairos(
        dir.path(),
        &["replay", "-p", "good.cep", "-i", "in.jsonl", "-q"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "{\"pattern\":\"up\",\"sink\":\"out\",\"key\":\"x\",\"ts\":1600,\"value\":{\"a\":1,\"b\":5,\"span\":600}}\n"
    );
}

#[test]
fn replay_of_a_missing_file_fails_with_its_name() {
    let dir = dir_with(&[("good.cep", GOOD)]);
    let out = kairos(
        dir.path(),
        &["replay", "-p", "good.cep", "-i", "missing.jsonl"],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("kairos: cannot read missing.jsonl: "),
        "{stderr}"
    );
}

/// `kairos run --config k.toml --check` in a directory holding `k.toml` (with `config` after a
/// header naming a pattern file and brokers) and the pattern file, with `env` set.
fn run_check(config: &str, env: &[(&str, &str)]) -> (Command, tempfile::TempDir) {
    let head = "patterns = [\"good.cep\"]\n[kafka]\nbrokers = \"127.0.0.1:1\"\n";
    let dir = dir_with(&[("good.cep", GOOD), ("k.toml", &format!("{head}{config}"))]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kairos"));
    cmd.current_dir(dir.path())
        .args(["run", "--config", "k.toml", "--check"])
        .env_remove("KAIROS_ADMIN_ADDRESS")
        .envs(env.iter().copied());
    (cmd, dir)
}

#[test]
fn run_check_refuses_a_ring_capacity_the_machine_cannot_hold() {
    let (mut cmd, _dir) = run_check("[pipeline]\nring_capacity = 1000000000\n", &[]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("kairos: k.toml:5:17: [pipeline] ring_capacity: a ring of 1000000000 slots is above the largest Kairos allows (16777216); the rings of 1 shard would take "),
        "{stderr}"
    );
    assert!(stderr.trim_end().ends_with(" GiB)"), "{stderr}");
    // The backtest through shards checks its layout the same way.
    let dir = dir_with(&[("good.cep", GOOD), ("in.jsonl", INPUT)]);
    let out = kairos(
        dir.path(),
        &[
            "replay",
            "--patterns",
            "good.cep",
            "--input",
            "s=in.jsonl",
            "--time-unit",
            "ns",
            "--shards",
            "1",
            "--ring-capacity",
            "1000000000",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("kairos: a ring of 1000000000 slots is above the largest"),
        "{stderr}"
    );
}

#[test]
fn run_check_bounds_the_rings_by_the_memory_the_process_may_use() {
    use std::os::unix::process::CommandExt;
    // 2^24 slots of a shard's rings take more than a quarter of a 4 GiB address space.
    let (mut cmd, _dir) = run_check("[pipeline]\nring_capacity = 16777216\n", &[]);
    // SAFETY: setrlimit is async-signal-safe, and the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            match libc::setrlimit(libc::RLIMIT_AS, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("kairos: k.toml:5:17: [pipeline] ring_capacity: the rings of 1 shard with 16777216 slots each would take "),
        "{stderr}"
    );
    assert!(
        stderr.contains("they may take here: a quarter of this process's address-space limit (ulimit -v), 4294967296 bytes (4.0 GiB)"),
        "{stderr}"
    );
}

#[test]
fn the_admin_address_comes_from_the_environment_where_it_is_set() {
    // The file's address is not one, and a later key is wrong too: which error comes first
    // shows which address was taken.
    let config = "[pipeline]\nring_capacity = 1\n[admin]\naddress = \"localhost\"\n";
    let (mut cmd, _dir) = run_check(config, &[]);
    let stderr = text(&cmd.output().unwrap().stderr);
    assert!(
        stderr.starts_with("kairos: k.toml:7:11: `localhost` is not an address"),
        "{stderr}"
    );
    let (mut cmd, _dir) = run_check(config, &[("KAIROS_ADMIN_ADDRESS", "127.0.0.1:9464")]);
    let stderr = text(&cmd.output().unwrap().stderr);
    assert!(
        stderr.starts_with(
            "kairos: k.toml:5:17: [pipeline] ring_capacity: ring capacity must be at least 2"
        ),
        "{stderr}"
    );
    let (mut cmd, _dir) = run_check("", &[("KAIROS_ADMIN_ADDRESS", "everywhere")]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "kairos: k.toml: KAIROS_ADMIN_ADDRESS (which replaces [admin] address): `everywhere` is not an address: write e.g. 0.0.0.0:9464\n"
    );
}
