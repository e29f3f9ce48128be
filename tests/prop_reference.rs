//! The engine against a naive reference evaluator (`tests/reference`): random sequence patterns
//! (plain, optional and looping steps and alternations, joined strictly, relaxed or any, some of
//! them in a group, which means what they mean inline; an optional negation in the middle, an
//! optional `within`; conditions on the event alone, and some that also read the step's running
//! sum; every skip strategy) over random small inputs
//! must produce the same matches, timestamps included, in the same order: eager emission, its
//! tie order and the skip strategies' pruning, checked against their definitions.

mod common;
mod reference;

use common::{canon, multiset_diff, program, read_jsonl};
use kairos::engine::EngineOptions;
use kairos::io::replay::{replay, Input};
use proptest::prelude::*;
use proptest::test_runner::Config;
use reference::{cond, iter_cond, Contig, Event, NegKind, Negation, Pattern, Skip, Step};
use serde_json::Value as J;
use std::io::Write;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// The generated cases.

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Clone, Debug)]
enum Atom {
    NameEq(usize),
    NameIn(Vec<usize>),
    PriceGt(i64),
    PriceLe(i64),
}

impl Atom {
    fn render(&self) -> String {
        match self {
            Atom::NameEq(n) => format!("name == \"{}\"", NAMES[*n]),
            Atom::NameIn(ns) => {
                let items: Vec<String> = ns.iter().map(|n| format!("\"{}\"", NAMES[*n])).collect();
                format!("name in [{}]", items.join(", "))
            }
            Atom::PriceGt(p) => format!("price > {p}"),
            Atom::PriceLe(p) => format!("price <= {p}"),
        }
    }

    fn eval(&self, e: &Event) -> bool {
        match self {
            Atom::NameEq(n) => e.name == NAMES[*n],
            Atom::NameIn(ns) => ns.iter().any(|n| e.name == NAMES[*n]),
            Atom::PriceGt(p) => e.price > *p,
            Atom::PriceLe(p) => e.price <= *p,
        }
    }
}

#[derive(Clone, Debug)]
enum GCond {
    One(Atom),
    And(Atom, Atom),
    Or(Atom, Atom),
}

impl GCond {
    fn render(&self) -> String {
        match self {
            GCond::One(a) => a.render(),
            GCond::And(a, b) => format!("{} and {}", a.render(), b.render()),
            GCond::Or(a, b) => format!("{} or {}", a.render(), b.render()),
        }
    }

    fn eval(&self, e: &Event) -> bool {
        match self {
            GCond::One(a) => a.eval(e),
            GCond::And(a, b) => a.eval(e) && b.eval(e),
            GCond::Or(a, b) => a.eval(e) || b.eval(e),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quant {
    One,
    /// `?`
    Opt,
    /// `+?`
    PlusReluctant,
    /// `{n}`
    Exact(usize),
    /// `{n,m}?`, n < m
    Range(usize, usize),
    /// `{n,}?`
    AtLeast(usize),
    /// `+`, greedy: only on the last step and not after `~>`.
    PlusGreedy,
}

impl Quant {
    fn render(self) -> String {
        match self {
            Quant::One => String::new(),
            Quant::Opt => "?".into(),
            Quant::PlusReluctant => "+?".into(),
            Quant::Exact(n) => format!("{{{n}}}"),
            Quant::Range(n, m) => format!("{{{n},{m}}}?"),
            Quant::AtLeast(n) => format!("{{{n},}}?"),
            Quant::PlusGreedy => "+".into(),
        }
    }

    fn bounds(self) -> (usize, Option<usize>) {
        match self {
            Quant::One => (1, Some(1)),
            Quant::Opt => (0, Some(1)),
            Quant::PlusReluctant | Quant::PlusGreedy => (1, None),
            Quant::Exact(n) => (n, Some(n)),
            Quant::Range(n, m) => (n, Some(m)),
            Quant::AtLeast(n) => (n, None),
        }
    }

    fn repeats(self) -> bool {
        !matches!(self, Quant::One | Quant::Opt)
    }
}

#[derive(Clone, Debug)]
struct GStep {
    op: Contig,
    cond: GCond,
    quant: Quant,
    /// `and sum(sI.price) < N` after the condition: a condition that reads the partial match
    /// (its step's iterations, the candidate included), which the engine cannot settle from the
    /// event alone.
    sum_below: Option<i64>,
    /// `(sI | tI)`: an alternation, `tI` with this condition; an event binds to `sI` where both
    /// hold. Never with `sum_below`.
    alt: Option<GCond>,
}

#[derive(Clone, Debug)]
struct GNeg {
    /// Between step `after` and step `after + 1`.
    after: usize,
    kind: NegKind,
    cond: GCond,
}

#[derive(Clone, Debug)]
struct Case {
    steps: Vec<GStep>,
    negation: Option<GNeg>,
    within: Option<i64>,
    skip: Skip,
    /// Steps `i..=j` written as a group, `(si ... sj)`, which means what they mean inline.
    group: Option<(usize, usize)>,
    events: Vec<Event>,
}

fn atom() -> impl Strategy<Value = Atom> {
    prop_oneof![
        3 => (0..4usize).prop_map(Atom::NameEq),
        3 => proptest::sample::subsequence(vec![0usize, 1, 2, 3], 2..=3).prop_map(Atom::NameIn),
        1 => (1..20i64).prop_map(Atom::PriceGt),
        1 => (1..20i64).prop_map(Atom::PriceLe),
    ]
}

fn gcond() -> impl Strategy<Value = GCond> {
    prop_oneof![
        5 => atom().prop_map(GCond::One),
        1 => (atom(), atom()).prop_map(|(a, b)| GCond::And(a, b)),
        2 => (atom(), atom()).prop_map(|(a, b)| GCond::Or(a, b)),
    ]
}

fn contig() -> impl Strategy<Value = Contig> {
    prop_oneof![
        Just(Contig::Strict),
        Just(Contig::Relaxed),
        Just(Contig::Any)
    ]
}

fn quant() -> impl Strategy<Value = Quant> {
    prop_oneof![
        6 => Just(Quant::One),
        3 => Just(Quant::Opt),
        3 => Just(Quant::PlusReluctant),
        1 => (2..=3usize).prop_map(Quant::Exact),
        2 => (1..=2usize, 1..=2usize).prop_map(|(n, d)| Quant::Range(n, n + d)),
        1 => (1..=3usize).prop_map(Quant::AtLeast),
        2 => Just(Quant::PlusGreedy),
    ]
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    let len = prop_oneof![1 => 0..=3usize, 4 => 4..=9usize];
    let raw = len.prop_flat_map(|n| proptest::collection::vec((0..4usize, 1..=20i64, 1..=3i64), n));
    raw.prop_map(|raw| {
        let mut ts = 1000;
        raw.into_iter()
            .enumerate()
            .map(|(i, (n, price, dt))| {
                if i > 0 {
                    ts += dt;
                }
                Event {
                    id: i as i64 + 1,
                    name: NAMES[n].to_string(),
                    price,
                    ts,
                }
            })
            .collect()
    })
}

fn case() -> impl Strategy<Value = Case> {
    let steps = proptest::collection::vec(
        (
            contig(),
            gcond(),
            quant(),
            proptest::option::weighted(0.25, 5..=40i64),
            proptest::option::weighted(0.2, gcond()),
        )
            .prop_map(|(op, cond, quant, sum_below, alt)| GStep {
                op,
                cond,
                quant,
                sum_below: if alt.is_some() { None } else { sum_below },
                alt,
            }),
        2..=4,
    );
    let negation = proptest::option::weighted(
        0.35,
        (0..3usize, any::<bool>(), gcond()).prop_map(|(after, follow, cond)| GNeg {
            after,
            kind: if follow {
                NegKind::NotFollow
            } else {
                NegKind::NotNext
            },
            cond,
        }),
    );
    let within = proptest::option::weighted(0.4, 3..=15i64);
    // The step of `to first` / `to last` is taken modulo the number of steps.
    let skip = prop_oneof![
        3 => Just(Skip::None),
        2 => Just(Skip::PastLast),
        1 => Just(Skip::ToNext),
        1 => (0..4usize).prop_map(Skip::ToFirst),
        1 => (0..4usize).prop_map(Skip::ToLast),
    ];
    let group = proptest::option::weighted(0.3, (0..4usize, 1..4usize));
    (steps, negation, within, skip, group, events()).prop_map(
        |(steps, negation, within, skip, group, events)| {
            normalize(Case {
                steps,
                negation,
                within,
                skip,
                group,
                events,
            })
        },
    )
}

/// Bends a raw draw into the subset where the reference's rules are the engine's (and Flink's).
fn normalize(mut c: Case) -> Case {
    let n = c.steps.len();
    c.steps[0].op = Contig::Relaxed;
    if let Some(neg) = &mut c.negation {
        neg.after %= n - 1;
        let (x, y) = (neg.after, neg.after + 1);
        // No negation right after an optional step; the step after it is required here.
        for i in [x, y] {
            if c.steps[i].quant == Quant::Opt {
                c.steps[i].quant = Quant::One;
            }
        }
        c.steps[y].op = match (neg.kind, c.steps[y].op) {
            (NegKind::NotFollow, Contig::Strict) => Contig::Relaxed,
            (NegKind::NotNext, Contig::Any) => Contig::Relaxed,
            (_, op) => op,
        };
    }
    for i in 0..n {
        // A greedy loop only at the end, and never after `~>`.
        if c.steps[i].quant == Quant::PlusGreedy && (i + 1 < n || c.steps[i].op == Contig::Any) {
            c.steps[i].quant = Quant::PlusReluctant;
        }
        // No optional step directly after a loop.
        if i > 0 && c.steps[i].quant == Quant::Opt && c.steps[i - 1].quant.repeats() {
            c.steps[i].quant = Quant::One;
        }
    }
    // A group of two steps or more. Not next to or around the negation: the construction
    // (Flink's) carries a negation's STOP edges along the elements of one sequence, not into a
    // group, so there a group does not mean what its steps mean inline.
    c.group = c
        .group
        .map(|(i, len)| (i % (n - 1), len))
        .map(|(i, len)| (i, (i + len).min(n - 1)))
        .filter(|&(i, j)| {
            c.negation
                .as_ref()
                .is_none_or(|neg| neg.after + 1 < i || neg.after > j)
        });
    c.skip = match c.skip {
        Skip::ToFirst(s) => Skip::ToFirst(s % n),
        Skip::ToLast(s) => Skip::ToLast(s % n),
        other => other,
    };
    if c.steps.iter().all(|s| s.quant == Quant::Opt) {
        c.steps[n - 1].quant = Quant::One;
    }
    c
}

// ---------------------------------------------------------------------------------------------
// A case as a pattern text and as a reference pattern.

fn op_text(op: Contig) -> &'static str {
    match op {
        Contig::Strict => " ",
        Contig::Relaxed => " -> ",
        Contig::Any => " ~> ",
    }
}

fn pattern_text(c: &Case) -> String {
    let mut seq = String::new();
    for (i, s) in c.steps.iter().enumerate() {
        if i > 0 {
            match &c.negation {
                Some(neg) if neg.after + 1 == i => match neg.kind {
                    NegKind::NotFollow => seq.push_str(" -> !neg"),
                    NegKind::NotNext => seq.push_str(" !neg"),
                },
                _ => {}
            }
            seq.push_str(op_text(s.op));
        }
        if c.group.is_some_and(|(g, _)| g == i) {
            seq.push('(');
        }
        match s.alt {
            None => seq.push_str(&format!("s{i}{}", s.quant.render())),
            Some(_) => seq.push_str(&format!("(s{i} | t{i}){}", s.quant.render())),
        }
        if c.group.is_some_and(|(_, g)| g == i) {
            seq.push(')');
        }
    }
    let mut t = String::from("pattern p\n    from events\n    time ts\n");
    if let Some(w) = c.within {
        t.push_str(&format!("    within {w}ms\n"));
    }
    t.push_str(&format!("    match {seq}\n    define\n"));
    for (i, s) in c.steps.iter().enumerate() {
        match s.sum_below {
            None => t.push_str(&format!("        s{i} = ({})\n", s.cond.render())),
            Some(n) => t.push_str(&format!(
                "        s{i} = (({}) and sum(s{i}.price) < {n})\n",
                s.cond.render()
            )),
        }
    }
    for (i, s) in c.steps.iter().enumerate() {
        if let Some(alt) = &s.alt {
            t.push_str(&format!("        t{i} = ({})\n", alt.render()));
        }
    }
    if let Some(neg) = &c.negation {
        t.push_str(&format!("        neg = ({})\n", neg.cond.render()));
    }
    t.push_str("    emit out {\n");
    for (i, s) in c.steps.iter().enumerate() {
        t.push_str(&format!("        s{i}: collect(s{i}.id),\n"));
        if s.alt.is_some() {
            t.push_str(&format!("        t{i}: collect(t{i}.id),\n"));
        }
    }
    t.push_str(&format!(
        "    }}\n    skip {}\n",
        c.skip.text(|s| format!("s{s}"))
    ));
    t
}

fn reference_pattern(c: &Case) -> Pattern {
    let steps = c
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (min, max) = s.quant.bounds();
            let g = s.cond.clone();
            let c = match (s.sum_below, s.alt.clone()) {
                (_, Some(alt)) => cond(move |e| g.eval(e) || alt.eval(e)),
                (None, None) => cond(move |e| g.eval(e)),
                (Some(n), None) => iter_cond(move |e, iters| {
                    g.eval(e) && iters.iter().map(|x| x.price).sum::<i64>() < n
                }),
            };
            Step::new(&format!("s{i}"), s.op, c, min, max)
        })
        .collect();
    let negation = c.negation.as_ref().map(|neg| {
        let g = neg.cond.clone();
        Negation {
            after: neg.after,
            kind: neg.kind,
            cond: Rc::new(move |e: &Event| g.eval(e)),
        }
    });
    Pattern {
        name: "p".into(),
        steps,
        negation,
        within: c.within,
    }
}

/// The records of the reference's matches under the case's skip strategy, in emission order,
/// with an alternation's events split between its two names (the first that holds).
fn reference_records(c: &Case) -> Vec<J> {
    let evs = &c.events;
    // `to first sI` names `sI`, not the alternative `tI` beside it.
    let named = |s: usize, e: usize| c.steps[s].alt.is_none() || c.steps[s].cond.eval(&evs[e]);
    reference::emitted(&reference_pattern(c), evs, c.skip, named)
        .into_iter()
        .map(|m| {
            let mut value = serde_json::Map::new();
            for (i, (s, bound)) in c.steps.iter().zip(&m).enumerate() {
                let ids = |pick: &dyn Fn(&Event) -> bool| -> J {
                    serde_json::json!(bound
                        .iter()
                        .filter(|&&e| pick(&evs[e]))
                        .map(|&e| evs[e].id)
                        .collect::<Vec<i64>>())
                };
                match &s.alt {
                    None => {
                        value.insert(format!("s{i}"), ids(&|_| true));
                    }
                    Some(_) => {
                        value.insert(format!("s{i}"), ids(&|e| s.cond.eval(e)));
                        value.insert(format!("t{i}"), ids(&|e| !s.cond.eval(e)));
                    }
                }
            }
            reference::record("p", evs, &m, value)
        })
        .collect()
}

fn input_text(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| format!("{}\n", e.to_json()))
        .collect()
}

/// Runs a pattern text over events through `kairos replay`; returns the records. Without a
/// limit on partial matches: a few generated cases hold more than the default 1024 at once
/// (`s0+? ~> s1+? -> ...` over nine events), and evicting them would lose matches.
fn run_engine(text: &str, events: &[Event]) -> Vec<J> {
    let mut f = tempfile::NamedTempFile::new().expect("temporary file");
    f.write_all(input_text(events).as_bytes())
        .expect("write the input");
    f.flush().expect("flush the input");
    let mut out = Vec::new();
    let mut reports = Vec::new();
    let summary = replay(
        Arc::new(program("prop.cep", text)),
        &[Input {
            stream: None,
            path: f.path().to_path_buf(),
        }],
        EngineOptions {
            max_runs_per_key: usize::MAX,
            ..EngineOptions::default()
        },
        &mut out,
        &mut |l: &str| reports.push(l.to_string()),
    )
    .expect("replay runs");
    assert!(reports.is_empty(), "input problems: {reports:?}");
    assert_eq!(summary.malformed, 0);
    assert_eq!(summary.evicted, 0);
    String::from_utf8(out)
        .expect("utf-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad output line {l}: {e}")))
        .collect()
}

/// `None` when the engine and the reference agree; otherwise a readable report.
fn disagreement(c: &Case) -> Option<String> {
    let text = pattern_text(c);
    let got = run_engine(&text, &c.events);
    let want = reference_records(c);
    let in_order = |r: &[J]| r.iter().map(canon).collect::<Vec<_>>();
    let order = (in_order(&got) != in_order(&want))
        .then(|| "the same matches, emitted in another order".to_string());
    multiset_diff(&got, &want)
        .or(order).map(|d| {
        format!(
            "engine and reference differ\n--- pattern\n{text}--- input\n{}--- (missing: the reference's only; unexpected: the engine's only)\n{d}",
            input_text(&c.events)
        )
    })
}

fn cases_to_run() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(Config {
        cases: cases_to_run(),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn engine_agrees_with_the_naive_reference(c in case()) {
        let report = disagreement(&c);
        prop_assert!(report.is_none(), "{}", report.unwrap_or_default());
    }
}

// ---------------------------------------------------------------------------------------------
// The reference on conformance cases with known answers (all `skip none`).

fn conformance(name: &str) -> (Vec<Event>, Vec<J>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let events = read_jsonl(&dir.join(format!("{name}.input.jsonl")))
        .iter()
        .map(Event::from_json)
        .collect();
    let want = read_jsonl(&dir.join(format!("{name}.expected.jsonl")));
    (events, want)
}

fn name_is(n: &'static str) -> reference::Cond {
    cond(move |e| e.name == n)
}

/// Checks the reference's matches against a conformance case's expected matches (its timeouts
/// are not the reference's business).
fn assert_reference_finds_within(
    name: &str,
    steps: Vec<Step>,
    negation: Option<Negation>,
    within: Option<i64>,
) {
    let (events, mut want) = conformance(name);
    want.retain(|r| r["sink"] == "out");
    let p = Pattern {
        name: name.into(),
        steps,
        negation,
        within,
    };
    let got = reference::records(&p, &events);
    if let Some(d) = multiset_diff(&got, &want) {
        panic!("{name}: the reference differs from the expected output\n{d}");
    }
}

fn assert_reference_finds(name: &str, steps: Vec<Step>, negation: Option<Negation>) {
    assert_reference_finds_within(name, steps, negation, None)
}

fn one(name: &str, op: Contig, c: reference::Cond) -> Step {
    Step::new(name, op, c, 1, Some(1))
}

#[test]
fn reference_finds_doc_ab_strict_relaxed_any() {
    for (case, op) in [
        ("doc_ab_strict", Contig::Strict),
        ("doc_ab_relaxed", Contig::Relaxed),
        ("doc_ab_any", Contig::Any),
    ] {
        assert_reference_finds(
            case,
            vec![
                one("a", Contig::Relaxed, name_is("a")),
                one("b", op, name_is("b")),
            ],
            None,
        );
    }
}

#[test]
fn reference_finds_doc_combinations() {
    // start ~> middle+? -> end1
    assert_reference_finds(
        "doc_combinations",
        vec![
            Step::new("start", Contig::Relaxed, name_is("c"), 1, Some(1)),
            Step::new("middle", Contig::Any, name_is("a"), 1, None),
            Step::new("end1", Contig::Relaxed, name_is("b"), 1, Some(1)),
        ],
        None,
    );
}

#[test]
fn reference_finds_doc_iterative_sum() {
    // a -> b+? -> c, b = (name == "b" and sum(b.price) < 30)
    let b = iter_cond(|e, iters| e.name == "b" && iters.iter().map(|x| x.price).sum::<i64>() < 30);
    assert_reference_finds(
        "doc_iterative_sum",
        vec![
            Step::new("a", Contig::Relaxed, name_is("a"), 1, Some(1)),
            Step::new("b", Contig::Relaxed, b, 1, None),
            Step::new("c", Contig::Relaxed, name_is("c"), 1, Some(1)),
        ],
        None,
    );
}

#[test]
fn reference_finds_doc_loop_contiguity_any() {
    // a ~> b+? -> c
    assert_reference_finds(
        "doc_loop_contiguity_any",
        vec![
            Step::new("a", Contig::Relaxed, name_is("a"), 1, Some(1)),
            Step::new("b", Contig::Any, name_is("b"), 1, None),
            Step::new("c", Contig::Relaxed, name_is("c"), 1, Some(1)),
        ],
        None,
    );
}

#[test]
fn reference_finds_probe_reluctant_giveback() {
    // a b*? c, b = (name in ["b", "c"])
    assert_reference_finds(
        "probe_reluctant_giveback",
        vec![
            Step::new("a", Contig::Relaxed, name_is("a"), 1, Some(1)),
            Step::new(
                "b",
                Contig::Strict,
                cond(|e| e.name == "b" || e.name == "c"),
                0,
                None,
            ),
            Step::new("c", Contig::Strict, name_is("c"), 1, Some(1)),
        ],
        None,
    );
}

#[test]
fn reference_finds_doc_not_followed_by() {
    // a -> !c -> b
    assert_reference_finds(
        "doc_not_followed_by",
        vec![
            Step::new("a", Contig::Relaxed, name_is("a"), 1, Some(1)),
            Step::new("b", Contig::Relaxed, name_is("b"), 1, Some(1)),
        ],
        Some(Negation {
            after: 0,
            kind: NegKind::NotFollow,
            cond: Rc::new(|e: &Event| e.name == "c"),
        }),
    );
}

#[test]
fn reference_finds_doc_not_next() {
    // a !c -> b
    assert_reference_finds(
        "doc_not_next",
        vec![
            Step::new("a", Contig::Relaxed, name_is("a"), 1, Some(1)),
            Step::new("b", Contig::Relaxed, name_is("b"), 1, Some(1)),
        ],
        Some(Negation {
            after: 0,
            kind: NegKind::NotNext,
            cond: Rc::new(|e: &Event| e.name == "c"),
        }),
    );
}

#[test]
fn reference_finds_doc_consecutive_off() {
    // start -> middle+? -> end1 (not its greedy twin: a greedy loop that is not last is outside
    // what the reference models)
    assert_reference_finds(
        "doc_consecutive_off",
        vec![
            one("start", Contig::Relaxed, name_is("c")),
            Step::new("middle", Contig::Relaxed, name_is("a"), 1, None),
            one("end1", Contig::Relaxed, name_is("b")),
        ],
        None,
    );
}

#[test]
fn reference_finds_doc_skip_no_skip_cases() {
    // a b+? and a b+ (a loop at the end: greedy or not, the same matches)
    for case in [
        "doc_skip_a_bplus_no_skip",
        "doc_skip_a_bplus_greedy_no_skip",
    ] {
        assert_reference_finds(
            case,
            vec![
                one("a", Contig::Relaxed, name_is("a")),
                Step::new("b", Contig::Strict, name_is("b"), 1, None),
            ],
            None,
        );
    }
    // b+? c
    assert_reference_finds(
        "doc_skip_bplus_c_no_skip",
        vec![
            Step::new("b", Contig::Relaxed, name_is("b"), 1, None),
            one("c", Contig::Strict, name_is("c")),
        ],
        None,
    );
}

#[test]
fn reference_finds_conf_1154() {
    // a{2} b{2,}? -> c*, a = (name == "d" and sum(a.price) <= 25); the greedy c* ends the pattern
    let a = iter_cond(|e, iters| e.name == "d" && iters.iter().map(|x| x.price).sum::<i64>() <= 25);
    assert_reference_finds(
        "conf_1154",
        vec![
            Step::new("a", Contig::Relaxed, a, 2, Some(2)),
            Step::new("b", Contig::Strict, name_is("b"), 2, None),
            Step::new("c", Contig::Relaxed, name_is("d"), 0, None),
        ],
        None,
    );
}

#[test]
fn reference_finds_the_matches_of_within_cases() {
    // a b? within 24ms (an optional step at the end: the match is complete without it)
    assert_reference_finds_within(
        "conf_866",
        vec![
            one("a", Contig::Relaxed, name_is("a")),
            Step::new("b", Contig::Strict, name_is("d"), 0, Some(1)),
        ],
        None,
        Some(24),
    );
    // a -> b within 4ms, with b exactly 4ms after a: no match
    assert_reference_finds_within(
        "probe_within_boundary",
        vec![
            one("a", Contig::Relaxed, name_is("a")),
            one("b", Contig::Relaxed, name_is("b")),
        ],
        None,
        Some(4),
    );
    // start middle -> finish within 10s, start undefined (any event)
    assert_reference_finds_within(
        "doc_within_timeout",
        vec![
            one("start", Contig::Relaxed, cond(|_| true)),
            one("middle", Contig::Strict, name_is("error")),
            one("finish", Contig::Relaxed, name_is("critical")),
        ],
        None,
        Some(10_000),
    );
}

// ---------------------------------------------------------------------------------------------
// Negations: where Flink's (and so the engine's) answer is not "no n strictly between X's last
// and Y's first event". Hand-derived answers, checked against both the engine and the reference.

fn evs(names: &str) -> Vec<Event> {
    names
        .split_whitespace()
        .enumerate()
        .map(|(i, n)| Event {
            id: i as i64 + 1,
            name: n.to_string(),
            price: 10,
            ts: 1000 + i as i64,
        })
        .collect()
}

fn gstep(op: Contig, quant: Quant, cond: GCond) -> GStep {
    GStep {
        op,
        cond,
        quant,
        sum_below: None,
        alt: None,
    }
}

fn is(n: usize) -> GCond {
    GCond::One(Atom::NameEq(n))
}

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// Both the engine and the reference produce exactly `want` (per match, the ids of each step).
fn assert_fixed(c: Case, want: &[&[&[i64]]]) {
    let text = pattern_text(&c);
    let want: Vec<J> = want
        .iter()
        .map(|m| {
            let last = m.iter().flat_map(|ids| ids.iter()).max().expect("an event");
            let mut value = serde_json::Map::new();
            for (i, ids) in m.iter().enumerate() {
                value.insert(format!("s{i}"), serde_json::json!(ids));
            }
            serde_json::json!({
                "pattern": "p", "sink": "out", "key": null,
                "ts": c.events[*last as usize - 1].ts, "value": value,
            })
        })
        .collect();
    let reference = reference::records(&reference_pattern(&c), &c.events);
    if let Some(d) = multiset_diff(&reference, &want) {
        panic!("the reference is wrong on\n{text}{}\n(missing: expected; unexpected: the reference's)\n{d}", input_text(&c.events));
    }
    let engine = run_engine(&text, &c.events);
    if let Some(d) = multiset_diff(&engine, &want) {
        panic!(
            "the engine is wrong on\n{text}{}\n(missing: expected; unexpected: the engine's)\n{d}",
            input_text(&c.events)
        );
    }
}

fn neg(after: usize, kind: NegKind, n: usize) -> Option<GNeg> {
    Some(GNeg {
        after,
        kind,
        cond: is(n),
    })
}

#[test]
fn not_followed_by_event_that_completes_the_match_may_be_negated() {
    // s0 -> !neg -> s1, s0 = b, neg = b, s1 in [b, c] on b b: s1's event is a `neg` too, but it
    // completes the match, which Flink emits before it looks at its STOP states.
    let s1 = GCond::One(Atom::NameIn(vec![B, C]));
    let c = Case {
        steps: vec![
            gstep(Contig::Relaxed, Quant::One, is(B)),
            gstep(Contig::Relaxed, Quant::One, s1.clone()),
        ],
        negation: neg(0, NegKind::NotFollow, B),
        within: None,
        skip: Skip::None,
        group: None,
        events: evs("b b"),
    };
    assert_fixed(c, &[&[&[1], &[2]]]);
    // With a step after it, the same event discards the partial match: on b b c c only
    // {b2, c3, c4} is left of {b1, b2, c3} and {b2, c3, c4}.
    let c = Case {
        steps: vec![
            gstep(Contig::Relaxed, Quant::One, is(B)),
            gstep(Contig::Relaxed, Quant::One, s1),
            gstep(Contig::Relaxed, Quant::One, is(C)),
        ],
        negation: neg(0, NegKind::NotFollow, B),
        within: None,
        skip: Skip::None,
        group: None,
        events: evs("b b c c"),
    };
    assert_fixed(c, &[&[&[2], &[3], &[4]]]);
}

#[test]
fn not_followed_by_after_a_loop_holds_from_its_first_iteration() {
    // s0+? -> !neg -> s1 on a b a c: the b between the loop's iterations discards {a1, a3}.
    let c = Case {
        steps: vec![
            gstep(Contig::Relaxed, Quant::PlusReluctant, is(A)),
            gstep(Contig::Relaxed, Quant::One, is(C)),
        ],
        negation: neg(0, NegKind::NotFollow, B),
        within: None,
        skip: Skip::None,
        group: None,
        events: evs("a b a c"),
    };
    assert_fixed(c, &[&[&[3], &[4]]]);
}

#[test]
fn not_followed_by_and_the_optional_iterations_of_a_bounded_repetition() {
    // s0{1,2}? -> !neg -> s1 on a d b a c: Flink waits for the optional second iteration, after
    // skipping the d, in a state without the STOP edge: the b does not discard {a1, a4}.
    // (With s0+? it would; see the test above.)
    let c = Case {
        steps: vec![
            gstep(Contig::Relaxed, Quant::Range(1, 2), is(A)),
            gstep(Contig::Relaxed, Quant::One, is(C)),
        ],
        negation: neg(0, NegKind::NotFollow, B),
        within: None,
        skip: Skip::None,
        group: None,
        events: evs("a d b a c"),
    };
    assert_fixed(c, &[&[&[1, 4], &[5]], &[&[4], &[5]]]);
    // s0 -> !neg -> s1{1,2}? on a c d b c: for the step after the negation it is the other way
    // round: waiting there for the optional second iteration the b discards {a1, c2, c5},
    // although it comes after s1's first event.
    let c = Case {
        steps: vec![
            gstep(Contig::Relaxed, Quant::One, is(A)),
            gstep(Contig::Relaxed, Quant::Range(1, 2), is(C)),
        ],
        negation: neg(0, NegKind::NotFollow, B),
        within: None,
        skip: Skip::None,
        group: None,
        events: evs("a c d b c"),
    };
    assert_fixed(c, &[&[&[1], &[2]]]);
    // The same with s1+?: nothing after s1's first event counts.
    let c = Case {
        steps: vec![
            gstep(Contig::Relaxed, Quant::One, is(A)),
            gstep(Contig::Relaxed, Quant::PlusReluctant, is(C)),
        ],
        negation: neg(0, NegKind::NotFollow, B),
        within: None,
        skip: Skip::None,
        group: None,
        events: evs("a c d b c"),
    };
    assert_fixed(c, &[&[&[1], &[2]], &[&[1], &[2, 5]]]);
}

#[test]
fn not_next_after_a_loop_holds_after_every_iteration_it_could_leave_from() {
    // s0+? !neg -> s1 on a b a d c: the b right after the first iteration discards {a1, a3}
    // too, not only {a1}.
    let c = Case {
        steps: vec![
            gstep(Contig::Relaxed, Quant::PlusReluctant, is(A)),
            gstep(Contig::Relaxed, Quant::One, is(C)),
        ],
        negation: neg(0, NegKind::NotNext, B),
        within: None,
        skip: Skip::None,
        group: None,
        events: evs("a b a d c"),
    };
    assert_fixed(c, &[&[&[3], &[5]]]);
    // s0{2,}? !neg -> s1 on a b a d c: the loop cannot leave after its first iteration, so the
    // b there does not count.
    let c = Case {
        steps: vec![
            gstep(Contig::Relaxed, Quant::AtLeast(2), is(A)),
            gstep(Contig::Relaxed, Quant::One, is(C)),
        ],
        negation: neg(0, NegKind::NotNext, B),
        within: None,
        skip: Skip::None,
        group: None,
        events: evs("a b a d c"),
    };
    assert_fixed(c, &[&[&[1, 3], &[5]]]);
}
