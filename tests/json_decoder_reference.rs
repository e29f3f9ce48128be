//! The JSON-lines decoder against its earlier, simpler self (`json_reference/original.rs`): on
//! any line, valid or not, and any sequence of lines through one decoder (whose key cache learns
//! from the lines before), both give the same slots, the same time, and the same error at the
//! same column.

pub use kairos::event::{time, value, Event};

#[path = "json_reference/original.rs"]
mod original;

use kairos::event::{JsonDecoder, TimeUnit};
use proptest::prelude::*;

/// Paths that exercise top-level slots, nested tries (`a` and `a.b` both read), long names
/// (compared through the slow path of the trie) and names of every length around 16 bytes.
fn fields() -> Vec<Vec<String>> {
    [
        "ts",
        "a",
        "a.b",
        "s",
        "user_id",
        "n",
        "deep.x.y",
        "k_with_a_long_name_over_16",
        "abcdefghijklm",
        "abcdefghijklmn",
        "é",
    ]
    .iter()
    .map(|p| p.split('.').map(String::from).collect())
    .collect()
}

fn decoders(time: Option<usize>) -> (JsonDecoder, original::JsonDecoder) {
    let f = fields();
    (
        JsonDecoder::new(&f, time, TimeUnit::Millis),
        original::JsonDecoder::new(&f, time, TimeUnit::Millis),
    )
}

fn event() -> Event {
    Event::with_slots(fields().len())
}

/// Decodes each line with `decode`, then the lines joined by newlines with `decode_line` as a
/// replay would, with both decoders, and compares everything after every line.
fn check_lines(lines: &[Vec<u8>], time: Option<usize>) -> Result<(), TestCaseError> {
    let (new, old) = decoders(time);
    let (mut a, mut b) = (event(), event());
    for (k, line) in lines.iter().enumerate() {
        let ra = new.decode(line, k as i64, &mut a);
        let rb = old.decode(line, k as i64, &mut b);
        let ra = ra.map_err(|e| (e.col, e.message));
        let rb = rb.map_err(|e| (e.col, e.message));
        prop_assert_eq!(&ra, &rb, "decode of {:?}", String::from_utf8_lossy(line));
        prop_assert_eq!(
            &a.slots,
            &b.slots,
            "slots of {:?}",
            String::from_utf8_lossy(line)
        );
        if ra.is_ok() {
            prop_assert_eq!(a.ts, b.ts);
            prop_assert_eq!(a.arrival, b.arrival);
        }
    }
    let (new, old) = decoders(time);
    let buf = lines.join(&b'\n');
    let (mut pa, mut pb) = (0usize, 0usize);
    while pa < buf.len() || pb < buf.len() {
        let ra = new.decode_line(&buf[pa..], 0, &mut a);
        let rb = old.decode_line(&buf[pb..], 0, &mut b);
        let ra = ra.map_err(|e| (e.col, e.message));
        let rb = rb.map_err(|e| (e.col, e.message));
        prop_assert_eq!(
            &ra,
            &rb,
            "decode_line at {} of {:?}",
            pa,
            String::from_utf8_lossy(&buf)
        );
        prop_assert_eq!(&a.slots, &b.slots);
        if ra.is_ok() {
            prop_assert_eq!(a.ts, b.ts);
        }
        let skip = |p: usize, r: &Result<(usize, bool), (usize, String)>| match r {
            Ok((len, _)) => p + len + 1,
            Err(_) => {
                p + buf[p..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .unwrap_or(buf.len() - p)
                    + 1
            }
        };
        pa = skip(pa, &ra);
        pb = skip(pb, &rb);
    }
    Ok(())
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "ts", "a", "s", "user_id", "n", "deep", "x", "y", "b", "odds", "market", "type",
            "k_with_a_long_name_over_16", "abcdefghijklm", "abcdefghijklmn", "abcdefghijkl",
            "é", "", "t\\u0073", "a\\\"b", "\\n",
        ])
        .prop_map(String::from),
        1 => "[a-z_é\\\\\"]{0,20}",
    ]
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0u32..40).prop_map(|d| "9".repeat(d as usize)),
        "-?[0-9]{0,25}",
        "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{0,20})?([eE][-+]?[0-9]{0,4})?",
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("1732400000001".to_string()),
        Just("-0".to_string()),
        Just("00".to_string()),
        Just("1.".to_string()),
        Just("-".to_string()),
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{0,30}".prop_map(|s| format!("\"{s}\"")),
        "(\\PC|[\"\\\\\\x00-\\x1f]|é|😀){0,30}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        "[a-z\\\\\"\\x00-\\x1f]{0,30}".prop_map(|s| format!("\"{s}\"")),
        Just("\"2024-11-23T22:13:20.001Z\"".to_string()),
    ]
}

fn ws() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        12 => Just(""),
        1 => Just(" "),
        1 => Just("\t"),
        1 => Just("\r"),
        1 => Just("\n"),
        1 => Just("  \t "),
    ]
}

fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        4 => number(),
        4 => string(),
        1 => prop::sample::select(vec!["true", "false", "null", "tru", "nul", "x"]).prop_map(String::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec((ws(), inner.clone(), ws()), 0..4).prop_map(|items| {
                let items: Vec<String> = items
                    .into_iter()
                    .map(|(a, v, b)| format!("{a}{v}{b}"))
                    .collect();
                format!("[{}]", items.join(","))
            }),
            prop::collection::vec((key(), ws(), inner, ws()), 0..4).prop_map(|fields| {
                let fields: Vec<String> = fields
                    .into_iter()
                    .map(|(k, a, v, b)| format!("\"{k}\"{a}:{b}{v}"))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

/// A line: usually an object of known and unknown keys, compact or with whitespace anywhere.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let object =
        prop::collection::vec((ws(), key(), ws(), ws(), value(), ws()), 0..9).prop_map(|fields| {
            let fields: Vec<String> = fields
                .into_iter()
                .map(|(a, k, b, c, v, d)| format!("{a}\"{k}\"{b}:{c}{v}{d}"))
                .collect();
            format!("{{{}}}", fields.join(",")).into_bytes()
        });
    prop_oneof![
        8 => object,
        1 => value().prop_map(String::into_bytes),
        1 => Just(Vec::new()),
    ]
}

/// A line with a few bytes changed, inserted, removed, or cut off.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        line(),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..5, any::<u8>()), 0..4),
    )
        .prop_map(|(mut l, edits)| {
            for (at, op, byte) in edits {
                let special = b"{}[]\",:\\ \n0-.eE";
                let byte = if byte & 1 == 0 {
                    special[byte as usize % special.len()]
                } else {
                    byte
                };
                if l.is_empty() {
                    l.push(byte);
                    continue;
                }
                let i = at.index(l.len());
                match op {
                    0 => l[i] = byte,
                    1 => l.insert(i, byte),
                    2 => {
                        l.remove(i);
                    }
                    3 => l.truncate(i),
                    _ => l[i] = b'"',
                }
            }
            l
        })
}

/// Lines in the style of a real stream: the same few shapes of keys, in order, over and over,
/// so that the key cache predicts, and mispredicts where the shape changes.
fn stream_line() -> impl Strategy<Value = Vec<u8>> {
    let shape = prop::sample::select(vec![
        vec!["ts", "user_id", "type", "n", "odds", "market", "s"],
        vec!["ts", "user_id", "type", "a", "s"],
        vec!["ts", "user_id", "type", "n"],
        vec!["ts", "a", "deep"],
        vec![
            "ts",
            "k_with_a_long_name_over_16",
            "abcdefghijklm",
            "abcdefghijklmn",
            "é",
        ],
    ]);
    (
        shape,
        prop::collection::vec((value(), any::<bool>()), 7),
        any::<bool>(),
    )
        .prop_map(|(keys, values, nested)| {
            let fields: Vec<String> = keys
                .iter()
                .zip(values)
                .map(|(k, (v, plain))| {
                    let v = if *k == "ts" && plain {
                        "1732400000001".to_string()
                    } else if *k == "a" && nested {
                        format!("{{\"b\":{v},\"c\":1}}")
                    } else if *k == "deep" {
                        format!("{{\"x\":{{\"y\":{v}}}}}")
                    } else {
                        v
                    };
                    format!("\"{k}\":{v}")
                })
                .collect();
            format!("{{{}}}", fields.join(",")).into_bytes()
        })
}

/// Cases per property: fewer in a debug build (the README's `cargo test`), where each costs
/// about ten times as much; `PROPTEST_CASES` sets it.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 300 } else { 2000 })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn same_as_reference_on_lines(lines in prop::collection::vec(line(), 1..6)) {
        check_lines(&lines, None)?;
    }

    #[test]
    fn same_as_reference_on_broken_lines(lines in prop::collection::vec(mutated(), 1..6)) {
        check_lines(&lines, Some(0))?;
    }

    #[test]
    fn same_as_reference_on_streams(
        lines in prop::collection::vec(prop_oneof![8 => stream_line(), 1 => mutated()], 1..40),
    ) {
        check_lines(&lines, Some(0))?;
    }
}

/// Numbers of every length and form, at the end of the input and followed by more.
#[test]
fn same_numbers_as_reference() {
    let mut numbers: Vec<String> = Vec::new();
    for d in 0..=25 {
        for lead in ["1", "9", "0", "5"] {
            let n = format!("{lead}{}", "7".repeat(d));
            numbers.push(n.clone());
            numbers.push(format!("-{n}"));
            numbers.push(format!("{n}.5"));
            numbers.push(format!("{n}e3"));
            numbers.push(format!("{n}E-3"));
            numbers.push(format!("{n}."));
        }
    }
    for v in [i64::MAX, i64::MIN, i64::MAX - 1, i64::MIN + 1, 0, -1] {
        numbers.push(v.to_string());
    }
    numbers.extend(
        [
            "9223372036854775808",
            "-9223372036854775809",
            "999999999999999",
        ]
        .map(String::from),
    );
    numbers.extend(["-", "-a", "1e", "1e+", "0x1", "01", "-01", "1.e5", ".5"].map(String::from));
    // Around the range of a float: beyond it is an error, below it rounds to zero.
    numbers.extend(
        [
            "1e400", "-1e400", "1e308", "1.8e308", "-1.7e308", "1e-400", "2.5E+309", "1e0400",
        ]
        .map(String::from),
    );
    numbers.extend([308, 309, 310, 400].map(|d| "9".repeat(d)));
    let mut lines = Vec::new();
    for n in &numbers {
        for (pre, post) in [
            ("{\"n\":", "}"),
            ("{\"n\":", ""),
            ("{\"n\":", ",\"s\":\"x\"}"),
            ("{\"z\":", "}"),
        ] {
            lines.push(format!("{pre}{n}{post}").into_bytes());
        }
    }
    check_lines(&lines, None).unwrap();
}

/// The key cache holds 64 keys: a stream with more, or whose keys keep changing, forgets them
/// and learns again, and still decodes as before.
#[test]
fn many_distinct_keys() {
    let mut lines = Vec::new();
    for round in 0..3 {
        for k in 0..150 {
            lines.push(
                format!("{{\"k{k}\":{k},\"ts\":{round},\"n\":{k},\"s\":\"v{k}\"}}").into_bytes(),
            );
            lines.push(format!("{{\"ts\":{round},\"k{k}\":[{k}],\"n\":{k}}}").into_bytes());
        }
    }
    check_lines(&lines, Some(0)).unwrap();
}
