//! The engine's features end to end, through `replay`: keys, several streams, groups,
//! alternation, aggregates, null semantics, bounded state, time formats, timers of quiet keys,
//! state snapshots, and bad input.

mod common;

use common::*;
use kairos::compile::{compile, CompileOptions, Source};
use kairos::engine::{Engine, EngineOptions, EngineState, OwnedRecord};
use kairos::event::{Event, JsonDecoder, TimeUnit};
use kairos::io::replay::{replay, Input};
use serde_json::{json, Value as J};
use std::sync::Arc;

/// Writes each (stream, lines) to a temp file and replays them in that order.
fn run_with(
    text: &str,
    inputs: &[(&str, &[&str])],
    unit: TimeUnit,
    max_runs: usize,
) -> (Vec<J>, Vec<String>, kairos::io::replay::Summary) {
    let dir = tempfile::tempdir().unwrap();
    let prog = compile(
        &[Source {
            file: "t.cep",
            text,
        }],
        &CompileOptions {
            unit,
            ..CompileOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut specs = Vec::new();
    for (i, (stream, lines)) in inputs.iter().enumerate() {
        let path = dir.path().join(format!("{i}-{stream}.jsonl"));
        std::fs::write(&path, lines.join("\n")).unwrap();
        specs.push(Input {
            stream: Some(stream.to_string()),
            path,
        });
    }
    let mut out = Vec::new();
    let mut reports = Vec::new();
    let summary = replay(
        Arc::new(prog),
        &specs,
        EngineOptions {
            max_runs_per_key: max_runs,
            ..EngineOptions::default()
        },
        &mut out,
        &mut |l: &str| reports.push(l.to_string()),
    )
    .unwrap();
    (records(&out), reports, summary)
}

fn run(text: &str, inputs: &[(&str, &[&str])]) -> Vec<J> {
    let (recs, reports, _) = run_with(text, inputs, TimeUnit::Millis, 1024);
    assert!(reports.is_empty(), "{reports:?}");
    recs
}

fn values(recs: &[J]) -> Vec<J> {
    recs.iter().map(|r| r["value"].clone()).collect()
}

#[test]
fn keys_partition_matching_and_appear_in_records() {
    let text = "pattern two_bets\n  from bets\n  key user\n  time ts\n  match a -> b\n  emit out { first: a.id, second: b.id }\n";
    let recs = run(
        text,
        &[(
            "bets",
            &[
                r#"{"user":"u1","id":1,"ts":1}"#,
                r#"{"user":"u2","id":2,"ts":2}"#,
                r#"{"user":"u1","id":3,"ts":3}"#,
                r#"{"user":"u2","id":4,"ts":4}"#,
            ],
        )],
    );
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["key"], json!("u1"));
    assert_eq!(recs[0]["value"], json!({"first":1,"second":3}));
    assert_eq!(recs[1]["key"], json!("u2"));
    assert_eq!(recs[1]["value"], json!({"first":2,"second":4}));
    assert_eq!(recs[1]["ts"], json!(4));
}

#[test]
fn streams_are_merged_by_time_stable_by_input_order() {
    let text = "pattern dep_bet\n  from payments, bets\n  key user\n  time ts\n  match d b\n  define\n    d = payments(kind == \"deposit\")\n    b = bets\n  emit out { d: d.id, b: b.id }\n  skip none\n";
    // The bet at ts 5 is listed in the second input, the deposit at ts 5 in the first: stable
    // order puts the deposit first, so `d b` (strict) matches.
    let recs = run(
        text,
        &[
            (
                "payments",
                &[
                    r#"{"user":"u","id":1,"kind":"deposit","ts":5}"#,
                    r#"{"user":"u","id":3,"kind":"deposit","ts":9}"#,
                ],
            ),
            (
                "bets",
                &[
                    r#"{"user":"u","id":2,"ts":5}"#,
                    r#"{"user":"u","id":4,"ts":8}"#,
                ],
            ),
        ],
    );
    assert_eq!(values(&recs), vec![json!({"d":1,"b":2})]);
}

#[test]
fn a_step_of_one_stream_ignores_events_of_another() {
    let text = "pattern p\n  from payments, bets\n  time ts\n  match d -> w\n  define\n    d = payments(kind == \"deposit\")\n    w = payments(kind == \"withdrawal\")\n  emit out { d: d.id, w: w.id }\n";
    let recs = run(
        text,
        &[
            (
                "payments",
                &[
                    r#"{"id":1,"kind":"deposit","ts":1}"#,
                    r#"{"id":3,"kind":"withdrawal","ts":3}"#,
                ],
            ),
            ("bets", &[r#"{"id":2,"kind":"withdrawal","ts":2}"#]),
        ],
    );
    assert_eq!(values(&recs), vec![json!({"d":1,"w":3})]);
}

#[test]
fn groups_repeat_a_subsequence() {
    let text = "pattern spoof\n  from orders\n  time ts\n  match (o -> c){2}\n  define\n    o = (type == \"place\")\n    c = (type == \"cancel\")\n  emit out { placed: collect(o.id), cancelled: collect(c.id) }\n";
    let recs = run(
        text,
        &[(
            "orders",
            &[
                r#"{"id":1,"type":"place","ts":1}"#,
                r#"{"id":2,"type":"cancel","ts":2}"#,
                r#"{"id":3,"type":"trade","ts":3}"#,
                r#"{"id":4,"type":"place","ts":4}"#,
                r#"{"id":5,"type":"cancel","ts":5}"#,
            ],
        )],
    );
    assert_eq!(
        values(&recs),
        vec![json!({"placed":[1,4],"cancelled":[2,5]})]
    );
}

#[test]
fn looping_group_with_an_open_end() {
    let text = "pattern p\n  from s\n  time ts\n  match (o -> c){2,} -> t\n  define\n    o = (type == \"place\")\n    c = (type == \"cancel\")\n    t = (type == \"trade\")\n  emit out { n: count(o), t: t.id }\n";
    let recs = run(
        text,
        &[(
            "s",
            &[
                r#"{"id":1,"type":"place","ts":1}"#,
                r#"{"id":2,"type":"cancel","ts":2}"#,
                r#"{"id":3,"type":"place","ts":3}"#,
                r#"{"id":4,"type":"cancel","ts":4}"#,
                r#"{"id":5,"type":"place","ts":5}"#,
                r#"{"id":6,"type":"cancel","ts":6}"#,
                r#"{"id":7,"type":"trade","ts":7}"#,
            ],
        )],
    );
    // skip past last: the longest (started first) match is emitted first and drops the others.
    assert_eq!(values(&recs), vec![json!({"n":3,"t":7})]);
}

#[test]
fn alternation_binds_the_branch_that_matched() {
    let text = "pattern p\n  from s\n  time ts\n  match (card | wire) -> w\n  define\n    card = (method == \"card\")\n    wire = (method == \"wire\")\n    w = (kind == \"withdrawal\")\n  emit out { card: collect(card.id), wire: collect(wire.id), w: w.id }\n  skip none\n";
    let recs = run(
        text,
        &[(
            "s",
            &[
                r#"{"id":1,"method":"wire","ts":1}"#,
                r#"{"id":2,"method":"card","ts":2}"#,
                r#"{"id":3,"kind":"withdrawal","ts":3}"#,
            ],
        )],
    );
    let mut v = values(&recs);
    v.sort_by_key(|x| x.to_string());
    assert_eq!(
        v,
        vec![
            json!({"card":[2],"wire":[],"w":3}),
            json!({"card":[],"wire":[1],"w":3})
        ]
    );
}

#[test]
fn aggregates_in_conditions_and_emit() {
    let text = "pattern p\n  from s\n  time ts\n  match a b{3,}? c\n  define\n    a = (kind == \"start\")\n    b = (kind == \"bet\" and stake > prev(b).stake ?? 0)\n    c = (kind == \"end\")\n  emit out { n: count(b), total: sum(b.stake), avg: avg(b.stake), lo: min(b.stake), hi: max(b.stake), first: first(b).stake, last: last(b).stake, all: collect(b.stake), span: c.ts - a.ts }\n";
    let recs = run(
        text,
        &[(
            "s",
            &[
                r#"{"kind":"start","ts":10}"#,
                r#"{"kind":"bet","stake":5,"ts":11}"#,
                r#"{"kind":"bet","stake":7.5,"ts":12}"#,
                r#"{"kind":"bet","stake":9,"ts":13}"#,
                r#"{"kind":"end","ts":20}"#,
            ],
        )],
    );
    assert_eq!(
        values(&recs),
        vec![
            json!({"n":3,"total":21.5,"avg":21.5/3.0,"lo":5,"hi":9,"first":5,"last":9,"all":[5,7.5,9],"span":10})
        ]
    );
}

#[test]
fn a_rising_run_breaks_on_a_lower_stake() {
    let text = "pattern p\n  from s\n  time ts\n  match b{3}\n  define\n    b = (stake > prev(b).stake ?? 0)\n  emit out { all: collect(b.stake) }\n";
    let recs = run(
        text,
        &[(
            "s",
            &[
                r#"{"stake":5,"ts":1}"#,
                r#"{"stake":4,"ts":2}"#,
                r#"{"stake":6,"ts":3}"#,
                r#"{"stake":8,"ts":4}"#,
            ],
        )],
    );
    // relaxed iterations: 5 -> (4 skipped) -> 6 -> 8, and 4 -> 6 -> 8 drops with skip past last.
    assert_eq!(values(&recs), vec![json!({"all":[5,6,8]})]);
}

#[test]
fn nulls_missing_fields_compare_false_and_default_with_coalesce() {
    let text = "pattern p\n  from s\n  time ts\n  match a\n  define\n    a = (x > 1 or (y ?? 0) + 1 == 1)\n  emit out { x: a.x, z: a.z ?? \"none\", sum: a.x + a.q }\n  skip none\n";
    let recs = run(
        text,
        &[(
            "s",
            &[
                r#"{"id":1,"ts":1}"#, // x missing: x > 1 false; y missing: 0 + 1 == 1 true
                r#"{"id":2,"x":0,"y":5,"ts":2}"#, // neither holds
                r#"{"id":3,"x":2,"ts":3}"#, // x > 1
            ],
        )],
    );
    assert_eq!(
        values(&recs),
        vec![
            json!({"x":null,"z":"none","sum":null}),
            json!({"x":2,"z":"none","sum":null})
        ]
    );
}

#[test]
fn functions_on_strings_and_numbers() {
    let text = "pattern p\n  from s\n  time ts\n  match a\n  define\n    a = (starts_with(lower(sym), \"eur\") and contains(tags, \"vip\") and len(sym) == 6 and abs(delta) > 2 and ends_with(upper(sym), \"USD\"))\n  emit out { s: upper(a.sym) }\n  skip none\n";
    let recs = run(
        text,
        &[(
            "s",
            &[
                r#"{"sym":"EURusd","tags":["x","vip"],"delta":-3,"ts":1}"#,
                r#"{"sym":"EURusd","tags":["x"],"delta":-3,"ts":2}"#,
                r#"{"sym":"GBPusd","tags":["vip"],"delta":5,"ts":3}"#,
            ],
        )],
    );
    assert_eq!(values(&recs), vec![json!({"s":"EURUSD"})]);
}

#[test]
fn per_key_state_is_bounded_and_evictions_are_counted() {
    let text = "pattern p\n  from s\n  key u\n  time ts\n  match a -> b\n  define\n    a = (t == \"a\")\n    b = (t == \"b\")\n  emit out { a: a.id }\n  skip none\n";
    let lines: Vec<String> = (1..=10)
        .map(|i| format!(r#"{{"u":"x","t":"a","id":{i},"ts":{i}}}"#))
        .chain(std::iter::once(
            r#"{"u":"x","t":"b","id":99,"ts":50}"#.to_string(),
        ))
        .collect();
    let refs: Vec<&str> = lines.iter().map(|s| s.as_str()).collect();
    let (recs, _, summary) = run_with(text, &[("s", &refs)], TimeUnit::Millis, 3);
    // Only the three newest partial matches survive.
    assert_eq!(
        values(&recs),
        vec![json!({"a":8}), json!({"a":9}), json!({"a":10})]
    );
    assert_eq!(summary.evicted, 7);
}

#[test]
fn evicted_partial_matches_write_no_timeout() {
    // Five a's of one key with room for two partial matches: the three oldest are evicted when
    // the fourth and fifth arrive, and only the two kept time out when the window closes.
    let text = "pattern p\n  from s\n  key u\n  time ts\n  within 100ms\n  match a -> b\n  define\n    a = (t == \"a\")\n    b = (t == \"b\")\n  emit out { a: a.id }\n  on timeout emit late { a: a.id }\n  skip none\n";
    let lines: Vec<String> = (1..=5)
        .map(|i| format!(r#"{{"u":"x","t":"a","id":{i},"ts":{i}}}"#))
        .collect();
    let refs: Vec<&str> = lines.iter().map(|s| s.as_str()).collect();
    let (recs, _, summary) = run_with(text, &[("s", &refs)], TimeUnit::Millis, 2);
    assert_eq!(values(&recs), vec![json!({"a":4}), json!({"a":5})]);
    assert!(recs.iter().all(|r| r["sink"] == "late"));
    assert_eq!(summary.evicted, 3);
}

#[test]
fn the_end_of_the_input_counts_the_same_timeouts_with_or_without_a_timeout_record() {
    // At the end of the input a pattern whose window closes write nothing drops its windows at
    // once; one that writes timeouts closes them one by one. Both count the same timeouts.
    // Key x: one window closes during the stream (its a at 1 times out when the event at 200
    // passes it), two are open at the end. Key y: a match, then one open window. Key z: none.
    let lines = [
        r#"{"u":"x","t":"a","id":1,"ts":1}"#,
        r#"{"u":"y","t":"a","id":2,"ts":2}"#,
        r#"{"u":"y","t":"b","id":3,"ts":3}"#,
        r#"{"u":"x","t":"a","id":4,"ts":200}"#,
        r#"{"u":"x","t":"a","id":5,"ts":201}"#,
        r#"{"u":"y","t":"a","id":6,"ts":202}"#,
        r#"{"u":"z","t":"b","id":7,"ts":203}"#,
    ];
    let pattern = |timeout: &str| {
        format!("pattern p\n  from s\n  key u\n  time ts\n  within 100ms\n  match a -> b\n  define\n    a = (t == \"a\")\n    b = (t == \"b\")\n  emit out {{ a: a.id }}\n{timeout}  skip none\n")
    };
    let loud = pattern("  on timeout emit late { a: a.id }\n");
    let (recs, _, loud_summary) = run_with(&loud, &[("s", &lines)], TimeUnit::Millis, 1024);
    let late: Vec<J> = recs
        .iter()
        .filter(|r| r["sink"] == "late")
        .map(|r| json!([r["key"], r["value"]["a"], r["ts"]]))
        .collect();
    assert_eq!(
        late,
        vec![
            json!(["x", 1, 101]),
            json!(["x", 4, 300]),
            json!(["x", 5, 301]),
            json!(["y", 6, 302])
        ]
    );
    let (recs, _, silent_summary) =
        run_with(&pattern(""), &[("s", &lines)], TimeUnit::Millis, 1024);
    assert_eq!(values(&recs), vec![json!({"a": 2})]);
    assert_eq!(silent_summary.matches, 1);
    assert_eq!(silent_summary.timeouts, 4);
    assert_eq!(loud_summary.timeouts, 4);
    // Without `within` nothing closes: the open runs are dropped uncounted.
    let endless = pattern("").replace("  within 100ms\n", "");
    let (_, _, summary) = run_with(&endless, &[("s", &lines)], TimeUnit::Millis, 1024);
    assert_eq!(summary.timeouts, 0);
}

#[test]
fn time_units_and_rfc3339() {
    let text = "pattern p\n  from s\n  time at\n  within 2ms\n  match a -> b\n  emit out { span: b.ts - a.ts }\n  on timeout emit late { a: a.id }\n";
    let (recs, reports, _) = run_with(
        text,
        &[(
            "s",
            &[
                r#"{"id":1,"at":1000}"#,
                r#"{"id":2,"at":2500}"#,
                r#"{"id":3,"at":9000}"#,
            ],
        )],
        TimeUnit::Micros,
        1024,
    );
    assert!(reports.is_empty());
    // microseconds: 1000us -> 2500us is inside 2ms; 9000us starts a run that times out at the end.
    assert_eq!(recs[0]["value"], json!({"span":1500}));
    assert_eq!(recs[1]["sink"], json!("late"));
    assert_eq!(recs[1]["ts"], json!(11000));
    let recs = run(
        text,
        &[(
            "s",
            &[
                r#"{"id":1,"at":"2024-11-23T22:13:20.000Z"}"#,
                r#"{"id":2,"at":"2024-11-23T22:13:20.001+00:00"}"#,
            ],
        )],
    );
    assert_eq!(recs[0]["value"], json!({"span":1}));
    assert_eq!(recs[0]["ts"], json!(1_732_400_000_001i64));
    // Float times keep their fraction: 1.7 ms -> 3.6 ms is within 2ms, 10.7 -> 12.8 is not;
    // `ts` shows each in whole milliseconds, rounded down.
    let recs = run(
        text,
        &[(
            "s",
            &[
                r#"{"id":1,"at":1.7}"#,
                r#"{"id":2,"at":3.6}"#,
                r#"{"id":3,"at":10.7}"#,
                r#"{"id":4,"at":12.8}"#,
            ],
        )],
    );
    assert_eq!(recs[0]["value"], json!({"span":2}));
    assert_eq!(recs[0]["ts"], json!(3));
    assert_eq!(recs[1]["sink"], json!("late"));
    assert_eq!(recs[1]["value"], json!({"a":3}));
    assert_eq!(recs[2]["sink"], json!("late"));
    assert_eq!(recs[2]["value"], json!({"a":4}));
}

#[test]
fn arrival_time_without_a_time_clause() {
    let text = "pattern p\n  from s\n  match a -> b\n  emit out { a: a.id, b: b.id }\n";
    let recs = run(text, &[("s", &[r#"{"id":1}"#, r#"{"id":2}"#])]);
    assert_eq!(values(&recs), vec![json!({"a":1,"b":2})]);
    assert!(recs[0]["ts"].as_i64().unwrap() > 1_700_000_000_000);
}

#[test]
fn a_quiet_keys_window_closes_when_time_passes_it() {
    let text = "pattern no_bet\n  from s\n  key u\n  time ts\n  within 10ms\n  match d -> !b\n  define\n    d = (t == \"deposit\")\n    b = (t == \"bet\")\n  emit out { d: d.id }\n";
    // u1 deposits and goes quiet; u2's events move time past u1's window. u2 bets in time.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    std::fs::write(
        &path,
        [
            r#"{"u":"u1","t":"deposit","id":1,"ts":0}"#,
            r#"{"u":"u2","t":"deposit","id":2,"ts":5}"#,
            r#"{"u":"u2","t":"bet","id":3,"ts":8}"#,
            r#"{"u":"u2","t":"other","id":4,"ts":30}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let (lines, _, _) = run_replay(program("t.cep", text), &[Input { stream: None, path }]);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["key"], json!("u1"));
    assert_eq!(lines[0]["ts"], json!(10));
}

#[test]
fn malformed_lines_are_reported_with_file_and_line_and_skipped() {
    let text = "pattern p\n  from s\n  time ts\n  match a -> b\n  emit out { a: a.id, b: b.id }\n";
    let (recs, reports, summary) = run_with(
        text,
        &[(
            "s",
            &[
                r#"{"id":1,"ts":1}"#,
                r#"{"id":2,"ts":"#,
                r#"not json"#,
                r#"{"id":3}"#,
                r#"{"id":4,"ts":4}"#,
            ],
        )],
        TimeUnit::Millis,
        1024,
    );
    assert_eq!(values(&recs), vec![json!({"a":1,"b":4})]);
    assert_eq!(summary.malformed, 3);
    assert_eq!(reports.len(), 3);
    assert!(
        reports[0].contains("0-s.jsonl:2: malformed event"),
        "{}",
        reports[0]
    );
    assert!(reports[1].contains("0-s.jsonl:3:"), "{}", reports[1]);
    assert!(
        reports[2].contains(":4:") && reports[2].contains("time field is missing"),
        "{}",
        reports[2]
    );
}

#[test]
fn late_lines_are_reported_and_skipped() {
    let text = "pattern p\n  from s\n  time ts\n  match a -> b\n  emit out { a: a.id, b: b.id }\n";
    let (recs, reports, summary) = run_with(
        text,
        &[(
            "s",
            &[
                r#"{"id":1,"ts":5}"#,
                r#"{"id":2,"ts":3}"#,
                r#"{"id":3,"ts":6}"#,
            ],
        )],
        TimeUnit::Millis,
        1024,
    );
    assert_eq!(values(&recs), vec![json!({"a":1,"b":3})]);
    assert_eq!(summary.late, 1);
    assert!(
        reports[0].contains(":2: event time goes backwards (3 ms after 5 ms)"),
        "{reports:?}"
    );
}

#[test]
fn engine_state_is_plain_data_that_round_trips() {
    let text = "pattern p\n  from s\n  key u\n  time ts\n  within 1s\n  match a b+? -> c\n  define\n    b = (x > sum(b.x) - b.x)\n  emit out { a: a.id, bs: collect(b.id), c: c.id, total: sum(b.x) }\n  on timeout emit t { a: a.id }\n";
    let prog = Arc::new(program("t.cep", text));
    let lines: Vec<String> = (0..40)
        .map(|i| {
            format!(
                r#"{{"u":"u{}","id":{i},"x":{},"ts":{}}}"#,
                i % 3,
                (i * 7) % 11,
                i * 10
            )
        })
        .collect();
    let dec = JsonDecoder::new(&prog.fields, prog.time_slots[0], TimeUnit::Millis);
    let feed = |engine: &mut Engine, range: std::ops::Range<usize>, out: &mut Vec<OwnedRecord>| {
        for l in &lines[range] {
            let mut ev = Event::with_slots(prog.fields.len());
            dec.decode(l.as_bytes(), 0, &mut ev).unwrap();
            engine.process(&mut ev, out);
        }
    };
    let mut whole = Engine::new(prog.clone(), EngineOptions::default());
    let mut expected = Vec::new();
    feed(&mut whole, 0..40, &mut expected);
    whole.finish(&mut expected);

    let mut first = Engine::new(prog.clone(), EngineOptions::default());
    let mut got = Vec::new();
    feed(&mut first, 0..20, &mut got);
    let snapshot = serde_json::to_string(first.state()).unwrap();
    let mut second = Engine::new(prog.clone(), EngineOptions::default());
    second
        .restore(serde_json::from_str(&snapshot).unwrap())
        .unwrap();
    feed(&mut second, 20..40, &mut got);
    second.finish(&mut got);
    assert!(!expected.is_empty());
    assert_eq!(got, expected);
}

/// A key belongs to the origin of its last event that could change its partial matches: an
/// event its runs ignore, which the engine passes over without reading the key's state, does
/// not move it.
#[test]
fn a_key_follows_the_origin_of_the_events_that_change_it() {
    let text = "pattern p\n  from s\n  key u\n  time ts\n  within 1h\n  match d -> w\n  define\n    d = (kind == \"deposit\")\n    w = (kind == \"withdrawal\" and amount >= d.amount)\n  emit out { u: key }\n";
    let prog = Arc::new(program("o.cep", text));
    let dec = JsonDecoder::new(&prog.fields, prog.time_slots[0], TimeUnit::Millis);
    let feed = |engine: &mut Engine, line: &str, origin: u32| {
        let mut ev = Event::with_slots(prog.fields.len());
        dec.decode(line.as_bytes(), 0, &mut ev).unwrap();
        ev.origin = origin;
        let mut out: Vec<OwnedRecord> = Vec::new();
        engine.process(&mut ev, &mut out);
        assert!(out.is_empty(), "{out:?}");
    };
    let deposit = r#"{"u":"a","kind":"deposit","amount":50,"ts":1}"#;
    let bet = r#"{"u":"a","kind":"bet","amount":5,"ts":2}"#;
    let small = r#"{"u":"a","kind":"withdrawal","amount":5,"ts":3}"#;

    // A bet leaves the run waiting for a withdrawal as it is: the key stays with origin 1.
    let mut e = Engine::new(prog.clone(), EngineOptions::default());
    feed(&mut e, deposit, 1);
    feed(&mut e, bet, 2);
    assert_eq!(e.drop_origins(&[2]), 0);
    assert_eq!(e.drop_origins(&[1]), 1);
    assert_eq!(e.stats().live_runs, 0);

    // A withdrawal too small to match is tested against the run, and moves the key.
    let mut e = Engine::new(prog.clone(), EngineOptions::default());
    feed(&mut e, deposit, 1);
    feed(&mut e, small, 2);
    assert_eq!(e.drop_origins(&[1]), 0);
    assert_eq!(e.drop_origins(&[2]), 1);
}

#[test]
fn a_repeated_group_is_reluctant_whatever_is_written() {
    let text = |q: &str| {
        format!("pattern g\n  from s\n  time ts\n  match (a -> b){q} -> c\n  define\n    a = (name == \"a\")\n    b = (name == \"b\")\n    c = (name == \"c\")\n  emit out {{ a: collect(a.id), b: collect(b.id) }}\n  skip none\n")
    };
    let input: &[&str] = &[
        r#"{"id":1,"name":"a","ts":1}"#,
        r#"{"id":2,"name":"b","ts":2}"#,
        r#"{"id":3,"name":"a","ts":3}"#,
        r#"{"id":4,"name":"b","ts":4}"#,
        r#"{"id":5,"name":"c","ts":5}"#,
    ];
    let mut greedy = values(&run(&text("{1,2}"), &[("s", input)]));
    let mut reluctant = values(&run(&text("{1,2}?"), &[("s", input)]));
    greedy.sort_by_key(|v| v.to_string());
    reluctant.sort_by_key(|v| v.to_string());
    assert_eq!(greedy, reluctant);
    assert!(greedy.contains(&json!({"a":[1,3],"b":[2,4]})), "{greedy:?}");
}

#[test]
fn lines_end_at_newlines_crlf_and_blank_lines_included() {
    let text = "pattern p\n  from s\n  time ts\n  match a -> b\n  emit out { a: a.id, b: b.id }\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    // CRLF endings, a blank line, a line of spaces, an object split over two lines (each half
    // is malformed JSON lines input), and no newline at the very end.
    std::fs::write(
        &path,
        "{\"id\":1,\"ts\":1}\r\n\n   \n{\"id\":2,\n\"ts\":2}\n{\"id\":3,\"ts\":3}",
    )
    .unwrap();
    let (recs, summary, reports) =
        run_replay(program("t.cep", text), &[Input { stream: None, path }]);
    assert_eq!(values(&recs), vec![json!({"a":1,"b":3})]);
    assert_eq!(summary.malformed, 2);
    assert!(
        reports[0].contains("s.jsonl:4: malformed event"),
        "{reports:?}"
    );
    assert!(
        reports[1].contains("s.jsonl:5: malformed event"),
        "{reports:?}"
    );
}

#[test]
fn an_event_built_with_too_few_slots_reads_nulls() {
    let text = "pattern p\n  from s\n  key user\n  time ts\n  match a\n  define\n    a = (x > 1)\n  emit out { x: a.x }\n";
    let prog = Arc::new(program("t.cep", text));
    let mut engine = Engine::new(prog, EngineOptions::default());
    let mut out: Vec<OwnedRecord> = Vec::new();
    let mut ev = Event::default();
    engine.process(&mut ev, &mut out);
    assert!(out.is_empty());
}

/// When time jumps past several windows at once (a late event, the end of the input), they close
/// in time order across keys, not key by key.
#[test]
fn windows_of_different_keys_close_in_time_order() {
    let text = "pattern p\n  from s\n  key k\n  time ts\n  within 10ms\n  match a -> b\n  define\n    a = (kind == \"a\")\n    b = (kind == \"b\")\n  emit out { a: a.id }\n  on timeout emit late { a: a.id }\n";
    let events: &[&str] = &[
        r#"{"id":1,"k":"A","kind":"a","ts":0}"#,
        r#"{"id":2,"k":"B","kind":"a","ts":2}"#,
        r#"{"id":3,"k":"A","kind":"a","ts":5}"#,
        r#"{"id":4,"k":"C","kind":"x","ts":100}"#,
        r#"{"id":5,"k":"A","kind":"a","ts":200}"#,
        r#"{"id":6,"k":"B","kind":"a","ts":201}"#,
        r#"{"id":7,"k":"A","kind":"a","ts":203}"#,
    ];
    let recs = run(text, &[("s", events)]);
    let closes: Vec<(i64, i64)> = recs
        .iter()
        .map(|r| (r["ts"].as_i64().unwrap(), r["value"]["a"].as_i64().unwrap()))
        .collect();
    // The event at 100 closes the first three windows; the end of the input the last three.
    assert_eq!(
        closes,
        vec![(10, 1), (12, 2), (15, 3), (210, 5), (211, 6), (213, 7)]
    );
    assert!(recs.iter().all(|r| r["sink"] == "late"));
}

/// An optional step may start a group, and its optional iterations stay optional there: Flink
/// CEP's own cases for this (`GroupITCase`: `a (b? c) d` on a c d, `a -> (b c)? d` on a d d),
/// and a bounded repetition at the head of a group.
#[test]
fn a_group_may_start_with_an_optional_step() {
    // Each name of the sequence matches the events of that name.
    let pattern = |sequence: &str| {
        let names: Vec<&str> = ["a", "b", "c", "d"]
            .into_iter()
            .filter(|n| sequence.contains(n))
            .collect();
        let define: String = names
            .iter()
            .map(|n| format!("    {n} = (n == \"{n}\")\n"))
            .collect();
        let emit: Vec<String> = names
            .iter()
            .map(|n| format!("{n}: collect({n}.id)"))
            .collect();
        format!(
            "pattern p\n  from s\n  time ts\n  match {sequence}\n  define\n{define}  emit out {{ {} }}\n  skip none\n",
            emit.join(", ")
        )
    };
    let events = |names: &str| -> Vec<String> {
        names
            .split(' ')
            .enumerate()
            .map(|(i, n)| format!(r#"{{"id":{},"n":"{n}","ts":{}}}"#, i + 1, (i + 1) * 1000))
            .collect()
    };
    let matches = |sequence: &str, names: &str| -> Vec<serde_json::Value> {
        let lines = events(names);
        let lines: Vec<&str> = lines.iter().map(|l| l.as_str()).collect();
        values(&run(&pattern(sequence), &[("s", &lines)]))
    };
    assert_eq!(
        matches("a (b? c) d", "a c d"),
        vec![json!({"a":[1],"b":[],"c":[2],"d":[3]})]
    );
    assert_eq!(
        matches("a -> (b c)? d", "a d d"),
        vec![json!({"a":[1],"b":[],"c":[],"d":[2]})]
    );
    assert_eq!(
        matches("a -> (c? -> d) -> b", "a d b"),
        vec![json!({"a":[1],"b":[3],"c":[],"d":[2]})]
    );
    // One iteration of a `{1,2}` at the head of a group is enough.
    assert_eq!(
        matches("(a{1,2}? b)", "a b"),
        vec![json!({"a":[1],"b":[2]})]
    );
}

/// An engine fed JSON lines of named streams, for the memory budget tests.
struct Fed {
    prog: Arc<kairos::compile::Program>,
    engine: Engine,
    out: Vec<OwnedRecord>,
}

impl Fed {
    fn new(text: &str, opts: EngineOptions) -> Fed {
        let prog = Arc::new(program("budget.cep", text));
        let engine = Engine::new(prog.clone(), opts);
        Fed {
            prog,
            engine,
            out: Vec::new(),
        }
    }

    /// Processes one event of `stream`.
    fn line(&mut self, stream: &str, line: &str) {
        let prog = &self.prog;
        let s = prog.streams.iter().position(|n| n == stream).unwrap();
        let dec = JsonDecoder::new(&prog.fields, prog.time_slots[s], prog.unit);
        let mut ev = Event::with_slots(prog.fields.len());
        dec.decode(line.as_bytes(), 0, &mut ev).unwrap();
        ev.stream = s as u16;
        self.engine.process(&mut ev, &mut self.out);
    }

    /// What each key holds, as the budgets count it.
    fn held(&self) -> Vec<(kairos::event::Value, u64)> {
        self.engine
            .state()
            .patterns
            .iter()
            .flat_map(|p| p.keys.iter())
            .map(|(k, ks)| (k.clone(), ks.held_bytes(kairos::engine::key_bytes(k))))
            .collect()
    }
}

/// The bytes of an engine's state counted from scratch, walking every partial match's history:
/// what the engine keeps incrementally must always equal it.
fn recount(engine: &Engine) -> u64 {
    let run = std::mem::size_of::<kairos::engine::Run>() as u64;
    engine
        .state()
        .patterns
        .iter()
        .flat_map(|p| p.keys.iter())
        .filter(|(_, ks)| !ks.runs.is_empty())
        .map(|(k, ks)| {
            kairos::engine::key_bytes(k)
                + ks.runs
                    .iter()
                    .map(|r| run + kairos::engine::path::PathNode::history_bytes(r.path.as_deref()))
                    .sum::<u64>()
        })
        .sum()
}

fn bonus_abuse() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/patterns/bonus_abuse.cep"
    ))
    .unwrap()
}

fn deposit(user: &str, amount: i64, ts: i64) -> String {
    format!(
        r#"{{"user_id":"{user}","kind":"deposit","amount":{amount},"method":"card","ts":{ts}}}"#
    )
}

fn withdrawal(user: &str, amount: i64, ts: i64) -> String {
    format!(r#"{{"user_id":"{user}","kind":"withdrawal","amount":{amount},"ts":{ts}}}"#)
}

fn safe_bet(user: &str, stake: i64, ts: i64) -> String {
    format!(r#"{{"user_id":"{user}","product":"sports","odds":1.2,"stake":{stake},"ts":{ts}}}"#)
}

/// An honest customer's bonus abuse, written between the hostile customer's events: a deposit,
/// three safe bets that turn it over, and a withdrawal of nearly all of it.
fn honest_abuse(f: &mut Fed, at: i64) {
    f.line("payments", &deposit("u-2", 100, at));
    for i in 1..=3 {
        f.line("bets", &safe_bet("u-2", 40, at + i));
    }
    f.line("payments", &withdrawal("u-2", 95, at + 4));
}

/// One customer with 200 deposits and then 2,000 safe bets inside the window: every deposit
/// starts a partial match and every bet grows each of them by a bound event. Under a per-key
/// budget the customer's state stays within it, the oldest partial matches go first, and
/// another customer's match is written as it is without the hostile one.
#[test]
fn a_hostile_key_stays_within_its_budget_and_loses_its_oldest_partial_matches() {
    let budget = 256 << 10;
    let opts = EngineOptions {
        max_state_bytes_per_key: budget,
        ..EngineOptions::default()
    };
    let mut f = Fed::new(&bonus_abuse(), opts);
    let t0 = 1_732_400_000_000i64;
    for i in 0..200 {
        f.line("payments", &deposit("u-1", 200, t0 + i));
    }
    let mut most = 0;
    let mut fewest = 200;
    for i in 0..2000 {
        f.line("bets", &safe_bet("u-1", 20, t0 + 1000 + i));
        if i == 1000 {
            honest_abuse(&mut f, t0 + 1000 + i);
        }
        for (k, held) in f.held() {
            assert!(held <= budget, "{k:?} holds {held} bytes after bet {i}");
        }
        most = most.max(f.engine.stats().state_bytes);
        // The survivors are the newest partial matches: those of the last deposits, whose
        // positions (1 to 200) end the list without a gap.
        let st = f.engine.state();
        let hostile = st.patterns[0]
            .keys
            .iter()
            .find(|(k, _)| **k == kairos::event::Value::from("u-1"));
        let mut starts: Vec<u64> = hostile
            .map(|(_, ks)| ks.runs.iter().map(|r| r.start_seq).collect())
            .unwrap_or_default();
        starts.sort_unstable();
        let kept = starts.len() as u64;
        assert_eq!(starts, (201 - kept..=200).collect::<Vec<_>>(), "bet {i}");
        fewest = fewest.min(kept);
    }
    // The budget was reached, not merely approached, and every partial match went in the end:
    // each bound more events than the budget holds.
    assert!(most > budget - budget / 8, "{most}");
    assert_eq!(fewest, 0);
    let stats = f.engine.stats();
    assert_eq!(stats.evicted_key_bytes, 200, "{stats:?}");
    assert_eq!(stats.evicted, stats.evicted_key_bytes, "{stats:?}");
    assert_eq!(stats.evicted_total_bytes, 0);

    // The honest customer's alert, exactly as without the hostile customer.
    let mut alone = Fed::new(&bonus_abuse(), EngineOptions::default());
    honest_abuse(&mut alone, t0 + 2000);
    let honest: Vec<&OwnedRecord> = f.out.iter().filter(|r| r.key == "u-2".into()).collect();
    assert_eq!(alone.out.len(), 1);
    assert_eq!(honest.len(), 1, "{:?}", f.out);
    assert_eq!(honest[0].fields, alone.out[0].fields);
}

/// The bytes each key holds are kept as partial matches come and go, never by walking their
/// histories; after every event of a random stream they must equal a recount from scratch, over
/// patterns that branch (shared histories), loop, time out, wait for an absence and skip, with
/// strings long enough to live on the heap.
#[test]
fn the_state_bytes_kept_equal_a_recount_after_every_event() {
    let text = r#"
pattern any_loop
    from s
    key u
    time ts
    within 50ms
    match a ~> b+? -> c
    define
        a = (t == "a")
        b = (t == "b" and sum(b.x) < 1000)
        c = (t == "c")
    emit out { a: a.note, b: collect(b.note), n: count(b) }
    on timeout emit late { a: a.note }
    skip none

pattern absent
    from s
    key u
    time ts
    within 30ms
    match a -> b{2,} -> !c
    define
        a = (t == "a")
        b = (t == "b")
        c = (t == "c")
    emit out { a: a.note, most: max(b.note) }
    skip past last

pattern strict
    from s
    key u
    time ts
    within 40ms
    match a b* c
    define
        a = (t == "a")
        b = (t == "b")
        c = (t == "c")
    emit out { a: a.note, all: collect(b.x) }
    skip to next
"#;
    for (per_key, total) in [(u64::from(u32::MAX), u64::MAX), (6000, 15_000)] {
        let opts = EngineOptions {
            max_state_bytes_per_key: per_key,
            max_state_bytes: total,
            ..EngineOptions::default()
        };
        let mut f = Fed::new(text, opts);
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut ts = 0;
        for i in 0..3000 {
            ts += next() % 4;
            let t = ["a", "b", "b", "b", "c", "d"][(next() % 6) as usize];
            let u = next() % 5;
            // Every third note is longer than a string kept inline.
            let note = if i % 3 == 0 {
                format!("a note long enough for the heap {i}")
            } else {
                format!("n{i}")
            };
            let line = format!(
                r#"{{"u":"u{u}","t":"{t}","x":{},"note":"{note}","ts":{ts}}}"#,
                next() % 50
            );
            f.line("s", &line);
            assert_eq!(
                f.engine.stats().state_bytes,
                recount(&f.engine),
                "event {i}"
            );
            assert!(f.engine.stats().state_bytes <= total, "event {i}");
        }
        assert!(f.engine.stats().live_runs > 0);
        // A snapshot read back is counted again from its histories, which no longer share.
        let restored = EngineState::from_bytes(&f.engine.state().to_bytes()).unwrap();
        let mut again = Engine::new(f.prog.clone(), EngineOptions::default());
        again.restore(restored).unwrap();
        assert_eq!(again.stats().state_bytes, recount(&again));
        assert_eq!(again.stats().state_bytes, f.engine.stats().state_bytes);
        f.engine.finish(&mut f.out);
        assert_eq!(f.engine.stats().state_bytes, 0);
        if per_key < u64::from(u32::MAX) {
            let st = f.engine.stats();
            assert!(st.evicted_key_bytes > 0, "{st:?}");
            assert!(st.evicted_total_bytes > 0, "{st:?}");
        }
    }
}

/// A partial match evicted by the per-key budget writes no timeout record, as one evicted by
/// the number of partial matches does not: it did not time out.
#[test]
fn partial_matches_evicted_by_the_byte_budget_write_no_timeout() {
    let text = "pattern p\n  from s\n  key u\n  time ts\n  within 100ms\n  match a -> b\n  define\n    a = (t == \"a\")\n    b = (t == \"b\")\n  emit out { a: a.id }\n  on timeout emit late { a: a.id }\n  skip none\n";
    let a = |i: i64| format!(r#"{{"u":"x","t":"a","id":{i},"ts":{i}}}"#);
    // What one partial match costs, and the key with it.
    let mut probe = Fed::new(text, EngineOptions::default());
    probe.line("s", &a(1));
    let one = probe.engine.stats().state_bytes;
    probe.line("s", &a(2));
    let run = probe.engine.stats().state_bytes - one;
    // Room for two partial matches: five a's evict the three oldest.
    let opts = EngineOptions {
        max_state_bytes_per_key: one + run,
        ..EngineOptions::default()
    };
    let mut f = Fed::new(text, opts);
    for i in 1..=5 {
        f.line("s", &a(i));
    }
    let stats = f.engine.stats();
    assert_eq!((stats.evicted, stats.evicted_key_bytes), (3, 3));
    assert_eq!(stats.state_bytes, one + run);
    f.engine.finish(&mut f.out);
    let late: Vec<&kairos::event::Value> = f.out.iter().map(|r| &r.fields[0].1).collect();
    assert!(f.out.iter().all(|r| r.sink == "late"));
    assert_eq!(late, [&4.into(), &5.into()]);
}

/// Beyond the total budget, the keys that hold the most lose their oldest partial matches; keys
/// of one small partial match keep theirs and still match.
#[test]
fn the_total_budget_takes_from_the_keys_that_hold_the_most() {
    let text = "pattern p\n  from s\n  key u\n  time ts\n  match a -> b+ -> c\n  define\n    a = (t == \"a\")\n    b = (t == \"b\")\n    c = (t == \"c\")\n  emit out { n: count(b) }\n  skip past last\n";
    let ev = |u: &str, t: &str, ts: usize| format!(r#"{{"u":"{u}","t":"{t}","ts":{ts}}}"#);
    let budget = 64 << 10;
    let opts = EngineOptions {
        max_state_bytes: budget,
        ..EngineOptions::default()
    };
    let mut f = Fed::new(text, opts);
    let mut ts = 0;
    let mut tick = || {
        ts += 1;
        ts
    };
    for k in 0..50 {
        let u = format!("small{k}");
        f.line("s", &ev(&u, "a", tick()));
        f.line("s", &ev(&u, "b", tick()));
    }
    let small = f.engine.stats().state_bytes;
    // Ten partial matches of one key, each taking every b.
    for _ in 0..10 {
        f.line("s", &ev("big", "a", tick()));
    }
    let big_starts = f.engine.state().position;
    for _ in 0..400 {
        f.line("s", &ev("big", "b", tick()));
        assert!(f.engine.stats().state_bytes <= budget);
    }
    let stats = f.engine.stats();
    assert!(stats.evicted_total_bytes > 0, "{stats:?}");
    assert_eq!(stats.evicted, stats.evicted_total_bytes);
    // The small keys hold what they held; the big one's survivors are its newest.
    let held = f.held();
    let small_now: u64 = held
        .iter()
        .filter(|(k, _)| *k != "big".into())
        .map(|(_, h)| h)
        .sum();
    assert_eq!(small_now, small);
    if let Some((_, big)) = f.engine.state().patterns[0]
        .keys
        .iter()
        .find(|(k, _)| **k == "big".into())
    {
        let starts: Vec<u64> = big.runs.iter().map(|r| r.start_seq).collect();
        let oldest_kept = *starts.iter().min().unwrap();
        assert!(starts.len() < 10);
        assert_eq!(
            oldest_kept,
            big_starts - starts.len() as u64 + 1,
            "{starts:?}"
        );
    }
    for k in 0..50 {
        f.line("s", &ev(&format!("small{k}"), "c", tick()));
    }
    let matched: Vec<&kairos::event::Value> = f.out.iter().map(|r| &r.key).collect();
    assert_eq!(matched.len(), 50, "{matched:?}");
    assert!(matched.iter().all(|k| **k != "big".into()));
}

/// Each shard's engine takes its share of the total budget, so that the shards together hold
/// what one engine would.
#[test]
fn each_shard_holds_its_share_of_the_total_budget() {
    let text = "pattern p\n  from s\n  key u\n  time ts\n  match a -> b+ -> c\n  define\n    a = (t == \"a\")\n    b = (t == \"b\")\n    c = (t == \"c\")\n  emit out { n: count(b) }\n";
    let prog = Arc::new(program("shard.cep", text));
    let budget = 256 << 10;
    let opts = EngineOptions {
        max_state_bytes: budget,
        ..EngineOptions::default()
    };
    let key = kairos::event::Value::from("u1");
    let shard = kairos::engine::shard_of(&key, 4);
    let mut e = Engine::for_shard(prog.clone(), opts, shard, 4);
    let dec = JsonDecoder::new(&prog.fields, prog.time_slots[0], prog.unit);
    let mut out: Vec<OwnedRecord> = Vec::new();
    let mut most = 0;
    for i in 0..5000 {
        let t = if i % 500 == 0 { "a" } else { "b" };
        let mut ev = Event::with_slots(prog.fields.len());
        dec.decode(
            format!(r#"{{"u":"u1","t":"{t}","ts":{i}}}"#).as_bytes(),
            0,
            &mut ev,
        )
        .unwrap();
        e.process(&mut ev, &mut out);
        most = most.max(e.stats().state_bytes);
    }
    assert!(e.stats().evicted_total_bytes > 0);
    assert!(most <= budget / 4, "{most}");
    assert!(most > budget / 8, "{most}");
}

/// The snapshot of a key at its budget is bounded by it, and reads back on the 2 MiB stack of a
/// spawned thread (where shards take their snapshots) however long the history: a partial match
/// of a loop may bind tens of thousands of events within the default budget.
#[test]
fn a_snapshot_is_bounded_by_the_budget_and_reads_back_on_a_small_stack() {
    let text = "pattern kleene\n  from s\n  time ts\n  match a -> b+ -> c\n  define\n    a = (t == \"a\")\n    b = (t == \"b\")\n    c = (t == \"c\")\n  emit out { n: count(b), total: sum(b.x) }\n";
    let mut f = Fed::new(text, EngineOptions::default());
    f.line("s", r#"{"t":"a","ts":1}"#);
    let budget = EngineOptions::default().max_state_bytes_per_key;
    let mut i = 1;
    // Up to the last event before the budget evicts the partial match.
    loop {
        let before = f.engine.stats();
        i += 1;
        f.line("s", &format!(r#"{{"t":"b","x":{i},"ts":{i}}}"#));
        let after = f.engine.stats();
        if after.evicted > 0 {
            assert_eq!(after.state_bytes, 0);
            assert!(before.state_bytes <= budget);
            break;
        }
    }
    assert!(i > 30_000, "{i}");
    // Again, stopping one event short of the budget.
    let mut f = Fed::new(text, EngineOptions::default());
    f.line("s", r#"{"t":"a","ts":1}"#);
    for j in 2..i {
        f.line("s", &format!(r#"{{"t":"b","x":{j},"ts":{j}}}"#));
    }
    let held = f.engine.stats().state_bytes;
    let state = f.engine.state().clone();
    let (len, back) = std::thread::spawn(move || {
        let bytes = state.to_bytes();
        (bytes.len() as u64, EngineState::from_bytes(&bytes).unwrap())
    })
    .join()
    .expect("a long history reads back");
    assert!(len <= held, "{len} > {held}");
    let mut again = Fed::new(text, EngineOptions::default());
    again.engine.restore(back.clone()).unwrap();
    assert_eq!(again.engine.stats().state_bytes, held);
    again.line("s", &format!(r#"{{"t":"c","ts":{i}}}"#));
    assert_eq!(again.out.len(), 1);
    assert_eq!(again.out[0].fields[0].1, ((i - 2) as i64).into());
    // Restored under a smaller budget, the state is held to it at once.
    let mut smaller = Fed::new(
        text,
        EngineOptions {
            max_state_bytes_per_key: held / 2,
            ..EngineOptions::default()
        },
    );
    smaller.engine.restore(back).unwrap();
    let stats = smaller.engine.stats();
    assert_eq!((stats.evicted_key_bytes, stats.state_bytes), (1, 0));
}

/// `[engine] max_state_bytes_per_key` and `max_state_bytes`: read with their defaults, and a
/// value out of range is an error at its line and column.
#[test]
fn the_budgets_are_read_from_the_engine_section_and_checked() {
    use kairos::config::Config;
    let base = "patterns = [\"p.cep\"]\n[kafka]\nbrokers = \"localhost:9092\"\n[engine]\n";
    let err = |extra: &str| match Config::parse("k.toml", &format!("{base}{extra}")) {
        Ok(_) => panic!("accepted {extra}"),
        Err(e) => e.to_string(),
    };
    let c = Config::parse("k.toml", base).unwrap();
    let defaults = EngineOptions::default();
    assert_eq!(
        *c.engine.max_state_bytes_per_key.get_ref(),
        defaults.max_state_bytes_per_key
    );
    assert_eq!(
        *c.engine.max_state_bytes.get_ref(),
        defaults.max_state_bytes
    );
    assert_eq!(defaults.max_state_bytes_per_key, 4 << 20);
    assert_eq!(defaults.max_state_bytes, 1 << 30);
    let c = Config::parse(
        "k.toml",
        &format!("{base}max_state_bytes_per_key = 65536\nmax_state_bytes = 1048576\n"),
    )
    .unwrap();
    assert_eq!(*c.engine.max_state_bytes_per_key.get_ref(), 65536);
    assert_eq!(*c.engine.max_state_bytes.get_ref(), 1 << 20);
    assert_eq!(
        err("max_state_bytes_per_key = 0\n"),
        "k.toml:5:27: [engine]: max_state_bytes_per_key must be between 1 and 4294967295 bytes, not 0"
    );
    assert_eq!(
        err("max_state_bytes_per_key = 4294967296\n"),
        "k.toml:5:27: [engine]: max_state_bytes_per_key must be between 1 and 4294967295 bytes, not 4294967296"
    );
    assert_eq!(
        err("max_state_bytes = 0\n"),
        "k.toml:5:19: [engine]: max_state_bytes must be at least 1 byte"
    );
    let e = err("max_state_bytes = -1\n");
    assert!(e.starts_with("k.toml:5:19: "), "{e}");
}

/// `kairos replay --max-state-bytes-per-key` and `--max-state-bytes`: a hostile customer's
/// partial matches are evicted and counted in the summary; a budget out of range is an error.
#[test]
fn replay_takes_the_budgets_as_flags() {
    let dir = tempfile::tempdir().unwrap();
    let payments = dir.path().join("payments.jsonl");
    let bets = dir.path().join("bets.jsonl");
    let t0 = 1_732_400_000_000i64;
    let deposits: Vec<String> = (0..50).map(|i| deposit("u-1", 200, t0 + i)).collect();
    let many: Vec<String> = (0..3000)
        .map(|i| safe_bet("u-1", 20, t0 + 100 + i))
        .collect();
    std::fs::write(&payments, deposits.join("\n")).unwrap();
    std::fs::write(&bets, many.join("\n")).unwrap();
    let replay = |flags: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
            .arg("replay")
            .arg("--patterns")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/patterns/bonus_abuse.cep"
            ))
            .arg("--input")
            .arg(format!("payments={}", payments.display()))
            .arg("--input")
            .arg(format!("bets={}", bets.display()))
            .args(flags)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stderr).unwrap())
    };
    // Each partial match binds 3,000 bets of 384 bytes: by default the key keeps the three
    // newest (3.4 MB), and a budget of 4 GiB keeps all fifty.
    let (code, summary) = replay(&[]);
    assert_eq!(code, Some(0), "{summary}");
    assert!(summary.contains("  timeouts 3  "), "{summary}");
    assert!(summary.contains("  evicted 47  "), "{summary}");
    let (code, summary) = replay(&["--max-state-bytes-per-key", "4294967295"]);
    assert_eq!(code, Some(0), "{summary}");
    assert!(summary.contains("  evicted 0  "), "{summary}");
    let (code, summary) = replay(&["--max-state-bytes-per-key", "65536"]);
    assert_eq!(code, Some(0), "{summary}");
    assert!(summary.contains("  evicted 50  "), "{summary}");
    let (code, summary) = replay(&["--max-state-bytes", "65536"]);
    assert_eq!(code, Some(0), "{summary}");
    assert!(summary.contains("  evicted 50  "), "{summary}");
    let (code, e) = replay(&["--max-state-bytes-per-key", "0"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        e.trim_end(),
        "kairos: --max-state-bytes-per-key must be between 1 and 4294967295 bytes, not 0"
    );
    let (code, e) = replay(&["--max-state-bytes", "0"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        e.trim_end(),
        "kairos: --max-state-bytes must be at least 1 byte"
    );
}

/// `kairos_evictions_total` names the limit that evicted.
#[test]
fn the_evictions_metric_has_a_series_per_limit() {
    use std::sync::atomic::Ordering::Relaxed;
    let m = kairos::metrics::PipelineMetrics::new(2);
    m.shards[1].evicted.store(10, Relaxed);
    m.shards[1].evicted_key_bytes.store(3, Relaxed);
    m.shards[1].evicted_total_bytes.store(2, Relaxed);
    let text = m.render();
    for line in [
        "# TYPE kairos_evictions_total counter",
        "kairos_evictions_total{shard=\"0\",limit=\"max_runs_per_key\"} 0",
        "kairos_evictions_total{shard=\"1\",limit=\"max_runs_per_key\"} 5",
        "kairos_evictions_total{shard=\"1\",limit=\"max_state_bytes_per_key\"} 3",
        "kairos_evictions_total{shard=\"1\",limit=\"max_state_bytes\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
}

/// A log line that captures what the engine logs.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Evictions are logged with their key and the limit, the first hundred and then one in ten
/// thousand, so that a key that keeps overflowing cannot flood the log.
#[test]
fn evictions_are_logged_with_their_key_rate_limited() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let text = "pattern p\n  from s\n  key u\n  time ts\n  match a -> b\n  define\n    a = (t == \"a\")\n    b = (t == \"b\")\n  emit out { a: a.id }\n  skip none\n";
    tracing::subscriber::with_default(subscriber, || {
        // One partial match a key: each a after the first evicts the one before.
        let opts = EngineOptions {
            max_runs_per_key: 1,
            ..EngineOptions::default()
        };
        let mut f = Fed::new(text, opts);
        for i in 0..=20_000 {
            f.line("s", &format!(r#"{{"u":"x","t":"a","id":{i},"ts":{i}}}"#));
        }
        assert_eq!(f.engine.stats().evicted, 20_000);
        // A byte budget that holds no partial match.
        let opts = EngineOptions {
            max_state_bytes_per_key: 1,
            ..EngineOptions::default()
        };
        let mut f = Fed::new(text, opts);
        f.line("s", r#"{"u":"y","t":"a","id":1,"ts":1}"#);
        assert_eq!(f.engine.stats().evicted_key_bytes, 1);
    });
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = logs.lines().collect();
    // 100, then the 10,000th and the 20,000th; then the other engine's first.
    assert_eq!(lines.len(), 103, "{logs}");
    assert!(lines[..102]
        .iter()
        .all(|l| l.contains("partial matches evicted")
            && l.contains("key=\"x\"")
            && l.contains("max_runs_per_key")));
    assert!(lines[101].contains("logged=20000"), "{}", lines[101]);
    assert!(
        lines[102].contains("key=\"y\"") && lines[102].contains("max_state_bytes_per_key"),
        "{}",
        lines[102]
    );
}
