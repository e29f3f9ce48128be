//! The `kairos` binary as a user runs it: `check` and `replay`, their exit statuses, what they
//! write to standard output and to standard error, and the files they write.

use std::io::Write;
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

/// Replay's input in milliseconds: an a, then a b that completes the match.
const A_THEN_B: [&str; 2] = [
    r#"{"k":"x","kind":"a","id":1,"v":1,"at":1000}"#,
    r#"{"k":"x","kind":"b","id":5,"v":5,"at":1600}"#,
];

const RECORD_MS: &str =
    r#"{"pattern":"up","sink":"out","key":"x","ts":1600,"value":{"a":1,"b":5,"span":600}}"#;

/// A `kairos` process with piped standard streams, its standard output read line by line on
/// a thread of its own.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn spawn(dir: &Path, args: &[&str]) -> Running {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = Command::new(env!("CARGO_BIN_EXE_kairos"))
            .current_dir(dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the kairos binary runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                if tx.send(line.unwrap()).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// The next line of standard output. The bound is generous (no test here measures time):
    /// it only turns a record that never comes into a failure rather than a test that hangs.
    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("a record while the input is still open")
    }

    /// Waits for the process (its input closed) and returns its status and standard error.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        drop(self.child.stdin.take());
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut stderr).unwrap();
        }
        (self.child.wait().unwrap(), stderr)
    }
}

impl Drop for Running {
    /// A test that fails leaves no process behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn write_lines(to: &mut impl std::io::Write, lines: &[&str]) {
    for l in lines {
        writeln!(to, "{l}").unwrap();
    }
    to.flush().unwrap();
}

#[test]
fn replay_streams_standard_input_writing_each_record_before_the_input_ends() {
    let dir = dir_with(&[("good.cep", GOOD)]);
    let mut run = Running::spawn(dir.path(), &["replay", "-p", "good.cep", "-i", "s=-"]);
    let mut stdin = run.child.stdin.take().unwrap();
    write_lines(&mut stdin, &A_THEN_B);
    assert_eq!(run.next_line(), RECORD_MS);
    // Still open: later events match as they come.
    write_lines(
        &mut stdin,
        &[
            r#"{"k":"y","kind":"a","id":7,"v":1,"at":5000}"#,
            r#"{"k":"y","kind":"b","id":8,"v":2,"at":5001}"#,
        ],
    );
    assert_eq!(
        run.next_line(),
        r#"{"pattern":"up","sink":"out","key":"y","ts":5001,"value":{"a":7,"b":8,"span":1}}"#
    );
    drop(stdin);
    let (status, stderr) = run.finish();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.starts_with("events 4  matches 2  timeouts 0  malformed 0"),
        "{stderr}"
    );
}

#[test]
fn replay_through_shards_streams_standard_input_too() {
    let dir = dir_with(&[("good.cep", GOOD)]);
    let mut run = Running::spawn(
        dir.path(),
        &["replay", "-p", "good.cep", "-i", "-", "--shards", "2"],
    );
    let mut stdin = run.child.stdin.take().unwrap();
    write_lines(&mut stdin, &A_THEN_B);
    assert_eq!(run.next_line(), RECORD_MS);
    drop(stdin);
    let (status, stderr) = run.finish();
    assert!(status.success(), "{stderr}");
    assert!(stderr.starts_with("events 2  matches 1  "), "{stderr}");
}

/// Makes a FIFO at `path`.
#[cfg(unix)]
fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Opens the FIFO at `path` for writing, which waits for a reader to open it: on a thread, so
/// that a replay that never opens it fails the test (after the same generous bound as
/// [`Running::next_line`]) instead of hanging it.
#[cfg(unix)]
fn open_fifo(path: &Path) -> std::fs::File {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::OpenOptions::new().write(true).open(path));
    });
    rx.recv_timeout(std::time::Duration::from_secs(120))
        .expect("the replay opens the FIFO")
        .unwrap()
}

#[cfg(unix)]
#[test]
fn replay_streams_a_fifo() {
    let dir = dir_with(&[("good.cep", GOOD)]);
    mkfifo(&dir.path().join("in.fifo"));
    let run = Running::spawn(dir.path(), &["replay", "-p", "good.cep", "-i", "in.fifo"]);
    let mut fifo = open_fifo(&dir.path().join("in.fifo"));
    write_lines(&mut fifo, &A_THEN_B);
    assert_eq!(run.next_line(), RECORD_MS);
    drop(fifo);
    let (status, stderr) = run.finish();
    assert!(status.success(), "{stderr}");
    assert!(stderr.starts_with("events 2  matches 1  "), "{stderr}");
}

/// Two streamed inputs merge by event time: an event is handed on once every input that is
/// still open has a later (or equal) one, so the b at 2000 on `t` waits for the next event on
/// `s`, and is matched as soon as it comes.
#[cfg(unix)]
#[test]
fn replay_merges_streamed_inputs_as_each_has_its_next_event() {
    let pair = "pattern pair
  from s, t
  key k
  time at
  match a -> b
  define
    a = s(kind == \"a\")
    b = t(kind == \"b\")
  emit out { a: a.id, b: b.id }
";
    let dir = dir_with(&[("pair.cep", pair)]);
    mkfifo(&dir.path().join("t.fifo"));
    let mut run = Running::spawn(
        dir.path(),
        &["replay", "-p", "pair.cep", "-i", "s=-", "-i", "t=t.fifo"],
    );
    let mut s = run.child.stdin.take().unwrap();
    let mut t = open_fifo(&dir.path().join("t.fifo"));
    write_lines(&mut s, &[r#"{"k":"x","kind":"a","id":1,"at":1000}"#]);
    write_lines(&mut t, &[r#"{"k":"x","kind":"b","id":2,"at":2000}"#]);
    write_lines(&mut s, &[r#"{"k":"x","kind":"c","id":3,"at":3000}"#]);
    assert_eq!(
        run.next_line(),
        r#"{"pattern":"pair","sink":"out","key":"x","ts":2000,"value":{"a":1,"b":2}}"#
    );
    drop((s, t));
    let (status, stderr) = run.finish();
    assert!(status.success(), "{stderr}");
    assert!(stderr.starts_with("events 3  matches 1  "), "{stderr}");
}

#[test]
fn replay_reads_standard_input_redirected_from_a_file() {
    let dir = dir_with(&[
        ("good.cep", GOOD),
        ("in.jsonl", A_THEN_B.join("\n").as_str()),
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .current_dir(dir.path())
        .args(["replay", "-p", "good.cep", "-i", "-", "-q"])
        .stdin(std::fs::File::open(dir.path().join("in.jsonl")).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{RECORD_MS}\n"));
}

#[test]
fn replay_takes_standard_input_once() {
    let dir = dir_with(&[("good.cep", GOOD)]);
    let out = kairos(
        dir.path(),
        &["replay", "-p", "good.cep", "-i", "s=-", "-i", "s=-"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("standard input (`-`) is given as 2 inputs"),
        "{}",
        text(&out.stderr)
    );
}

/// A line over `--max-line-bytes` is reported with its input and line, counted as malformed
/// and skipped, whether the input is mapped or streamed; the lines after it are read.
#[test]
fn replay_skips_and_reports_a_line_over_the_limit() {
    let long = format!(
        r#"{{"k":"x","kind":"a","id":9,"v":9,"at":1100,"pad":"{}"}}"#,
        "p".repeat(1000)
    );
    let input = format!("{}\n{long}\n{}\n", A_THEN_B[0], A_THEN_B[1]);
    let dir = dir_with(&[("good.cep", GOOD), ("in.jsonl", input.as_str())]);
    let want = format!(
        ":2: the line is {} bytes long, over the limit of 200 bytes (--max-line-bytes); line skipped",
        long.len()
    );
    let args = ["replay", "-p", "good.cep", "--max-line-bytes", "200", "-i"];
    let out = kairos(dir.path(), &[&args[..], &["in.jsonl"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{RECORD_MS}\n"));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().next(), Some(&*format!("in.jsonl{want}")));
    assert!(stderr.contains("events 2  matches 1  timeouts 0  malformed 1 "));

    let run = Running::spawn(dir.path(), &[&args[..], &["-"]].concat());
    let mut stdin = std::io::BufWriter::new(run.child.stdin.as_ref().unwrap());
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    assert_eq!(run.next_line(), RECORD_MS);
    let (status, stderr) = run.finish();
    assert!(status.success(), "{stderr}");
    assert_eq!(stderr.lines().next(), Some(&*format!("stdin{want}")));
    assert!(stderr.contains("malformed 1 "), "{stderr}");
}

/// The default limit is 1 MiB: a longer line, even one that is only whitespace after its
/// object, is an error.
#[test]
fn replay_limits_lines_to_one_mebibyte_by_default() {
    let spaces = " ".repeat(1 << 20);
    let input = format!("{}{spaces}\n{}\n", A_THEN_B[0], A_THEN_B[1]);
    let dir = dir_with(&[("good.cep", GOOD), ("in.jsonl", input.as_str())]);
    let out = kairos(dir.path(), &["replay", "-p", "good.cep", "-i", "in.jsonl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "in.jsonl:1: the line is {} bytes long, over the limit of 1048576 bytes",
            A_THEN_B[0].len() + spaces.len()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("events 1  matches 0  timeouts 0  malformed 1 "));
}

/// An event whose fields hold more list values than an event may, or a number beyond the
/// range of a float, is malformed, with the column of the value.
#[test]
fn replay_reports_huge_lists_and_numbers_out_of_range() {
    let list = format!("[{}]", vec!["1"; 70_000].join(","));
    let huge = format!(r#"{{"k":"x","kind":"a","id":1,"v":{list},"at":1000}}"#);
    let out_of_range = r#"{"k":"x","kind":"a","id":2,"v":1e400,"at":1000}"#;
    let input = format!("{huge}\n{out_of_range}\n");
    let dir = dir_with(&[("good.cep", GOOD), ("in.jsonl", input.as_str())]);
    let out = kairos(dir.path(), &["replay", "-p", "good.cep", "-i", "in.jsonl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let list_col = huge.find("[1").unwrap() + 1 + 2 * 65_536 + 1;
    assert_eq!(
        lines[0],
        format!(
            "in.jsonl:1: malformed event, column {list_col}: too many list values (an event may hold 65536); line skipped"
        )
    );
    assert_eq!(
        lines[1],
        format!(
            "in.jsonl:2: malformed event, column {}: number out of range; line skipped",
            out_of_range.find("1e400").unwrap() + 1
        )
    );
    assert!(lines[2].starts_with("events 0  matches 0  timeouts 0  malformed 2 "));
}

#[test]
fn replay_skips_a_byte_order_mark_at_the_start_of_an_input() {
    let input = format!("\u{feff}{}\n{}\n", A_THEN_B[0], A_THEN_B[1]);
    let dir = dir_with(&[("good.cep", GOOD), ("in.jsonl", input.as_str())]);
    let out = kairos(dir.path(), &["replay", "-p", "good.cep", "-i", "in.jsonl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{RECORD_MS}\n"));
    assert!(
        text(&out.stderr).starts_with("events 2  matches 1  timeouts 0  malformed 0 "),
        "{}",
        text(&out.stderr)
    );
    let run = Running::spawn(dir.path(), &["replay", "-p", "good.cep", "-i", "-"]);
    write_lines(&mut run.child.stdin.as_ref().unwrap(), &[&input]);
    assert_eq!(run.next_line(), RECORD_MS);
    let (status, stderr) = run.finish();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("malformed 0 "), "{stderr}");
}

/// Thousands of errors on one long line: each shows a window of the line around its column,
/// and the file lists its first 100 errors and counts the rest.
#[test]
fn check_bounds_what_it_writes_for_many_errors_on_a_long_line() {
    let defs = vec!["a = (x > 1)"; 2_000].join(" ");
    let bad = format!("pattern p\n  from s\n  match a\n  define {defs}\n  emit out {{ n: 1 }}\n");
    let dir = dir_with(&[("many.cep", bad.as_str())]);
    let out = kairos(dir.path(), &["check", "many.cep"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.len() < 40_000, "{} bytes", stderr.len());
    assert_eq!(stderr.matches(": error: ").count(), 100, "{stderr}");
    assert!(
        stderr.ends_with(
            "many.cep: and 1899 more errors (the first 100 are listed)\n1999 errors in patterns\n"
        ),
        "{}",
        &stderr[stderr.len() - 300..]
    );
    // The 100th error: 80 characters of the line before its column, 40 after, the caret under
    // its place.
    let col = 10 + 12 * 100;
    let last = &stderr[stderr.rfind("many.cep:4:").unwrap()..];
    let window: String = bad.lines().nth(3).unwrap()[col - 81..col + 39].to_string();
    assert!(
        last.starts_with(&format!(
            "many.cep:4:{col}: error: `a` is defined twice\n  |\n4 | ...{window}...\n  | {}^\n",
            " ".repeat(83)
        )),
        "{last}"
    );
}

#[cfg(unix)]
#[test]
fn check_refuses_a_pattern_file_over_one_mebibyte() {
    let dir = dir_with(&[]);
    let out = kairos(dir.path(), &["check", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "kairos: /dev/zero: the file is larger than 1048576 bytes, the most Kairos reads from a pattern or configuration file\n"
    );
    let big = format!("{GOOD}#{}\n", "x".repeat(1 << 20));
    let dir = dir_with(&[("big.cep", big.as_str())]);
    let out = kairos(dir.path(), &["check", "big.cep"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("big.cep: the file is larger than 1048576 bytes"));
}

#[test]
fn check_reports_the_first_byte_that_is_not_utf8_with_its_place() {
    let dir = dir_with(&[("good.cep", GOOD)]);
    let mut bad = b"pattern p\n  from s\n  match a -> \xc3b\n".to_vec();
    bad.extend_from_slice(b"  emit out { n: 1 }\n");
    std::fs::write(dir.path().join("bad.cep"), bad).unwrap();
    let out = kairos(dir.path(), &["check", "bad.cep", "good.cep"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "bad.cep:3:14: error: the file is not valid UTF-8 (byte 0xc3)
  |
3 |   match a -> 
  |              ^
  = hint: save the file as UTF-8
1 error in patterns
"
    );
}

#[test]
fn check_skips_a_byte_order_mark() {
    let dir = dir_with(&[("good.cep", format!("\u{feff}{GOOD}").as_str())]);
    let out = kairos(dir.path(), &["check", "-q", "good.cep"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // An error on the first line is at the column the editor shows.
    let dir = dir_with(&[("bad.cep", "\u{feff}pattern 9\n")]);
    let out = kairos(dir.path(), &["check", "bad.cep"]);
    assert!(
        text(&out.stderr).starts_with("bad.cep:1:9: error: "),
        "{}",
        text(&out.stderr)
    );
}

/// The configuration file is read as a pattern file is: bounded, UTF-8 with its place, a
/// byte-order mark skipped (errors are found before any broker is contacted).
#[test]
fn run_reads_its_configuration_like_a_pattern_file() {
    let dir = dir_with(&[("a.toml", "\u{feff}[kafka]\nbrokers = 1\n")]);
    std::fs::write(dir.path().join("b.toml"), b"[kafka]\nbrokers = \"\xff\"\n").unwrap();
    let out = kairos(dir.path(), &["run", "--config", "b.toml", "--check"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "kairos: b.toml:2:12: the file is not valid UTF-8 (byte 0xff)\n"
    );
    let out = kairos(dir.path(), &["run", "--config", "a.toml", "--check"]);
    assert!(
        text(&out.stderr).starts_with("kairos: a.toml:2:11: "),
        "{}",
        text(&out.stderr)
    );
    #[cfg(unix)]
    {
        let out = kairos(dir.path(), &["run", "--config", "/dev/zero", "--check"]);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            text(&out.stderr),
            "kairos: /dev/zero: the file is larger than 1048576 bytes, the most Kairos reads from a configuration file\n"
        );
    }
}

#[test]
fn table_build_reports_an_unterminated_quote_where_its_field_starts() {
    let csv = "id,name,limit\nu1,\"Ann\",10\nu2,\"Bob,20\nu3,Cy,30\n";
    let dir = dir_with(&[("c.csv", csv)]);
    let out = kairos(
        dir.path(),
        &[
            "table", "build", "--input", "c.csv", "--key", "id", "--output", "c.tbl",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "kairos: c.csv:3: unterminated quote: the quoted field that starts on this line has no closing quote\n"
    );
    assert!(!dir.path().join("c.tbl").exists());
    // A byte-order mark before the header is not part of the first column's name.
    let dir = dir_with(&[("c.csv", "\u{feff}id,name\nu1,Ann\n")]);
    let out = kairos(
        dir.path(),
        &[
            "table", "build", "--input", "c.csv", "--key", "id", "--output", "c.tbl",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
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
