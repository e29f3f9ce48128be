//! The engine's features end to end, through `replay`: keys, several streams, groups,
//! alternation, aggregates, null semantics, bounded state, time formats, timers of quiet keys,
//! state snapshots, and bad input.

mod common;

use common::*;
use kairos::compile::{compile, CompileOptions, Source};
use kairos::engine::{Engine, EngineOptions, OwnedRecord};
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
