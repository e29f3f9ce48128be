//! A deliberately naive reference evaluator, for tests only.
//!
//! It knows nothing of automata: it enumerates every way of assigning the events of a small input
//! to the steps of a plain sequence and keeps those that satisfy the rules below, written out as
//! directly as possible. With `skip none` that set is the set of matches Flink CEP (and therefore
//! Kairos) produces, for the subset of the language modelled here: one partition, a sequence of
//! single steps (plain, optional, or a reluctant loop; a greedy loop only at the end, where it emits
//! the same as a reluctant one), at most one negation between two steps, and `within`.
//!
//! The rules:
//!
//! * A match binds each step to a run of events, in input order and in step order: a required
//!   step to between `min` and `max` events, an optional one (`min == 0`) to none or to between 1
//!   and `max`. Every bound event satisfies its step's condition (given the step's iterations so
//!   far, the event included, for conditions that use aggregates). At least one event is bound.
//! * The first event of a step joins the last event of the previous step that bound something by
//!   the step's own operator: strict, it is the very next event; relaxed, no event in between
//!   satisfies the step's condition; any, no constraint. Nothing is required of the first step
//!   that binds an event.
//! * Iterations of a looping step join each other by the operator written before the step
//!   (relaxed for the first step), with the same three meanings.
//! * `within W`: last event's time - first event's time < W.
//! * A negation `n` between steps X and Y (the step after it is required here). Both rules are
//!   Flink's, whose automaton discards a partial match, with every branch it would have had on
//!   that event, as soon as it reads a negated event in a state that carries the negation (its
//!   STOP edges); that is stricter than "nothing between X's last and Y's first event":
//!   - `X -> !n -> Y` / `X -> !n ~> Y` (notFollowedBy): no event from the one after X's *first*
//!     event up to and including Y's first event satisfies `n`, except the match's last event.
//!     X's later iterations: Flink puts the STOP edge on every state of a loop after its first
//!     iteration. Y's first event: the STOP edge and Y's TAKE edge leave the same state, and the
//!     STOP discards the branch, unless that event completes the match: Flink emits the matches
//!     that complete on an event before it looks at STOP states (which is why the match's last
//!     event is never held against it, here or below).
//!     Two more details of Flink's automaton, where a bounded repetition `{lo,hi}` (`lo < hi`)
//!     whose iterations are not strict has taken `k >= lo` iterations, skipped the event right
//!     after iteration `k` and waits for iteration `k + 1` in the "ignore" copy of the optional
//!     iteration's state (see [`waits_in_optional_ignore`]): that state carries the STOP edges of
//!     the negations *before* its step, not those after it. So for X the events it reads there
//!     (up to iteration `k + 1` included) are not checked, and for Y they are, although they
//!     come after Y's first event.
//!   - `X !n Y` / `X !n -> Y` (notNext): the event right after X's last event does not satisfy
//!     `n`, and neither does the event right after any earlier iteration `k >= min(X)` of X:
//!     there the partial match could also have left the loop, and reading `n` on that branch
//!     discards the partial match with all its branches, the one that goes on looping included.

#![allow(dead_code)]

use serde_json::{json, Value as J};
use std::rc::Rc;

/// One input event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: i64,
    pub name: String,
    pub price: i64,
    pub ts: i64,
}

impl Event {
    pub fn to_json(&self) -> J {
        json!({"id": self.id, "name": self.name, "price": self.price, "ts": self.ts})
    }

    pub fn from_json(v: &J) -> Event {
        Event {
            id: v["id"].as_i64().expect("id"),
            name: v["name"].as_str().expect("name").to_string(),
            price: v["price"].as_i64().expect("price"),
            ts: v["ts"].as_i64().expect("ts"),
        }
    }
}

/// How an event joins the one before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contig {
    /// The very next event (`a b`).
    Strict,
    /// The next event that satisfies the condition (`a -> b`).
    Relaxed,
    /// Any later event (`a ~> b`).
    Any,
}

/// A step's condition: the candidate event, and the step's iterations with the candidate as the
/// last one (for conditions over aggregates such as `sum(b.price) < 30`).
pub type Cond = Rc<dyn Fn(&Event, &[&Event]) -> bool>;

/// A condition on the event alone.
pub fn cond(f: impl Fn(&Event) -> bool + 'static) -> Cond {
    Rc::new(move |e: &Event, _: &[&Event]| f(e))
}

/// A condition that also sees the step's iterations (the candidate included, last).
pub fn iter_cond(f: impl Fn(&Event, &[&Event]) -> bool + 'static) -> Cond {
    Rc::new(f)
}

/// One step of the sequence.
#[derive(Clone)]
pub struct Step {
    pub name: String,
    /// The operator written before the step (relaxed for the first step): how its first event
    /// joins the previous step and how its iterations join each other.
    pub op: Contig,
    pub cond: Cond,
    /// 0: optional. Otherwise the least number of iterations.
    pub min: usize,
    /// The most iterations; `None` for a loop without bound (`+`, `{n,}`, `*`).
    pub max: Option<usize>,
}

impl Step {
    pub fn new(name: &str, op: Contig, cond: Cond, min: usize, max: Option<usize>) -> Step {
        Step {
            name: name.to_string(),
            op,
            cond,
            min,
            max,
        }
    }

    fn lo(&self) -> usize {
        self.min.max(1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NegKind {
    /// `X !n Y`, `X !n -> Y`.
    NotNext,
    /// `X -> !n -> Y`, `X -> !n ~> Y`.
    NotFollow,
}

/// A negation between step `after` and step `after + 1`.
#[derive(Clone)]
pub struct Negation {
    pub after: usize,
    pub kind: NegKind,
    pub cond: Rc<dyn Fn(&Event) -> bool>,
}

#[derive(Clone)]
pub struct Pattern {
    pub name: String,
    pub steps: Vec<Step>,
    pub negation: Option<Negation>,
    /// In the unit of `ts`.
    pub within: Option<i64>,
}

impl Pattern {
    /// Panics on a pattern outside what the reference models.
    fn check(&self) {
        assert!(!self.steps.is_empty());
        assert_eq!(
            self.steps[0].op,
            Contig::Relaxed,
            "the first step's iterations are relaxed"
        );
        for s in &self.steps {
            if let Some(m) = s.max {
                assert!(m >= s.lo(), "step {}: max below min", s.name);
            }
        }
        if let Some(n) = &self.negation {
            assert!(
                n.after + 1 < self.steps.len(),
                "a negation sits between two steps"
            );
            assert!(
                self.steps[n.after].min > 0,
                "no negation directly after an optional step"
            );
            assert!(
                self.steps[n.after + 1].min > 0,
                "the step after a negation is required here"
            );
            if n.kind == NegKind::NotFollow {
                assert_ne!(self.steps[n.after + 1].op, Contig::Strict);
            }
        }
    }
}

/// Whether `f` may follow `last` under `c`, where `sat(q)` says whether event `q` satisfies the
/// condition of the element that `f` is bound to.
fn joins(c: Contig, last: usize, f: usize, sat: impl Fn(usize) -> bool) -> bool {
    match c {
        Contig::Strict => f == last + 1,
        Contig::Relaxed => (last + 1..f).all(|q| !sat(q)),
        Contig::Any => true,
    }
}

struct Search<'a> {
    p: &'a Pattern,
    evs: &'a [Event],
    binding: Vec<Vec<usize>>,
    out: Vec<Vec<Vec<usize>>>,
}

impl Search<'_> {
    /// Whether event `q` satisfies step `s`'s condition as its next iteration after `prior`.
    fn holds(&self, s: &Step, prior: &[usize], q: usize) -> bool {
        let mut iters: Vec<&Event> = prior.iter().map(|&i| &self.evs[i]).collect();
        iters.push(&self.evs[q]);
        (s.cond)(&self.evs[q], &iters)
    }

    /// Binds step `si` and the ones after it; `last` is the last event bound so far.
    fn step(&mut self, si: usize, last: Option<usize>) {
        if si == self.p.steps.len() {
            if self.accept() {
                self.out.push(self.binding.clone());
            }
            return;
        }
        let s = &self.p.steps[si];
        if s.min == 0 {
            self.binding.push(Vec::new());
            self.step(si + 1, last);
            self.binding.pop();
        }
        let from = last.map_or(0, |l| l + 1);
        for f in from..self.evs.len() {
            if !self.holds(s, &[], f) {
                continue;
            }
            if let Some(l) = last {
                if !joins(s.op, l, f, |q| self.holds(s, &[], q)) {
                    continue;
                }
            }
            self.iterate(si, vec![f]);
        }
    }

    /// Step `si` has bound `iters` so far: stop here, or bind one more iteration.
    fn iterate(&mut self, si: usize, iters: Vec<usize>) {
        let s = &self.p.steps[si];
        let k = iters.len();
        let l = *iters.last().expect("at least one iteration");
        if k >= s.lo() {
            self.binding.push(iters.clone());
            self.step(si + 1, Some(l));
            self.binding.pop();
        }
        if s.max.is_some_and(|m| k >= m) {
            return;
        }
        for g in l + 1..self.evs.len() {
            if !self.holds(s, &iters, g) {
                continue;
            }
            if !joins(s.op, l, g, |q| self.holds(s, &iters, q)) {
                continue;
            }
            let mut next = iters.clone();
            next.push(g);
            self.iterate(si, next);
        }
    }

    /// The checks on a complete assignment.
    fn accept(&self) -> bool {
        let all: Vec<usize> = self.binding.iter().flatten().copied().collect();
        let (Some(&first), Some(&last)) = (all.iter().min(), all.iter().max()) else {
            return false;
        };
        if let Some(w) = self.p.within {
            if self.evs[last].ts - self.evs[first].ts >= w {
                return false;
            }
        }
        match &self.p.negation {
            None => true,
            Some(n) => self.negation_holds(n, last),
        }
    }

    /// `last`: the match's last event.
    fn negation_holds(&self, n: &Negation, last: usize) -> bool {
        let x_step = &self.p.steps[n.after];
        let x = &self.binding[n.after];
        let y = &self.binding[n.after + 1];
        let is_n = |q: usize| q < self.evs.len() && (n.cond)(&self.evs[q]);
        match n.kind {
            NegKind::NotNext => (x_step.lo()..=x.len()).all(|k| !is_n(x[k - 1] + 1)),
            NegKind::NotFollow => {
                let y_step = &self.p.steps[n.after + 1];
                let checked = |q: usize| {
                    if q <= y[0] {
                        !waits_in_optional_ignore(x_step, x, q)
                    } else {
                        waits_in_optional_ignore(y_step, y, q)
                    }
                };
                // A match that completes on an event is emitted all the same.
                (x[0] + 1..=y[y.len() - 1]).all(|q| !(is_n(q) && checked(q)) || q == last)
            }
        }
    }
}

/// Whether a partial match that bound `bound` to `step` reads event `q` in the "ignore" copy of
/// the state of an optional iteration: `step` is a bounded repetition whose iterations are not
/// strict, it has `k >= min` iterations, and `q` comes after the event right after iteration `k`,
/// up to iteration `k + 1`.
fn waits_in_optional_ignore(step: &Step, bound: &[usize], q: usize) -> bool {
    step.max.is_some()
        && step.op != Contig::Strict
        && (step.lo()..bound.len()).any(|k| bound[k - 1] + 1 < q && q <= bound[k])
}

/// Every match, as the events (positions in `evs`) bound to each step.
pub fn matches(p: &Pattern, evs: &[Event]) -> Vec<Vec<Vec<usize>>> {
    p.check();
    let mut s = Search {
        p,
        evs,
        binding: Vec::new(),
        out: Vec::new(),
    };
    s.step(0, None);
    s.out
}

/// After-match skip strategies, as the language defines them with eager emission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    None,
    PastLast,
    ToNext,
    /// `to first` the step with this index.
    ToFirst(usize),
    /// `to last` the step with this index.
    ToLast(usize),
}

impl Skip {
    /// The clause's text, for a pattern whose steps are named by `step`.
    pub fn text(self, step: impl Fn(usize) -> String) -> String {
        match self {
            Skip::None => "none".into(),
            Skip::PastLast => "past last".into(),
            Skip::ToNext => "to next".into(),
            Skip::ToFirst(s) => format!("to first {}", step(s)),
            Skip::ToLast(s) => format!("to last {}", step(s)),
        }
    }
}

/// The matches that eager emission emits under `skip`, in emission order: every match of
/// [`matches`], taken in the order they complete (their last event), those that complete on the
/// same event in the tie order (their events' positions compared one by one, then the steps they
/// are bound to), and dropped where an earlier emitted match's strategy drops them. A strategy
/// drops the partial matches open when its match is emitted; a match that starts at or before
/// that match's last event was open then (or completes with it, later in the tie order), so the
/// rule can be read on complete matches:
///
/// * `past last`: a match that starts at or before the emitted match's last event;
/// * `to next`: a match that starts with the same event;
/// * `to first b` / `to last b`: a match that starts before the first / last event the emitted
///   match bound to `b`; nothing where it bound none.
///
/// The name of `to first` / `to last` is bound only to the events `e` of its step `s` for which
/// `named(s, e)` holds (one alternative of an alternation; every event of a plain step).
pub fn emitted(
    p: &Pattern,
    evs: &[Event],
    skip: Skip,
    named: impl Fn(usize, usize) -> bool,
) -> Vec<Vec<Vec<usize>>> {
    /// A match with what orders it: its events in time order and the step of each.
    struct Completed {
        events: Vec<usize>,
        steps: Vec<usize>,
        binding: Vec<Vec<usize>>,
    }
    let mut all: Vec<Completed> = matches(p, evs)
        .into_iter()
        .map(|binding| {
            let mut at: Vec<(usize, usize)> = binding
                .iter()
                .enumerate()
                .flat_map(|(s, bound)| bound.iter().map(move |&e| (e, s)))
                .collect();
            at.sort();
            Completed {
                events: at.iter().map(|x| x.0).collect(),
                steps: at.iter().map(|x| x.1).collect(),
                binding,
            }
        })
        .collect();
    let last = |c: &Completed| *c.events.last().expect("non-empty match");
    all.sort_by(|a, b| (last(a), &a.events, &a.steps).cmp(&(last(b), &b.events, &b.steps)));
    let mut kept: Vec<Completed> = Vec::new();
    for c in all {
        let first = c.events[0];
        let dropped = kept.iter().any(|e| match skip {
            Skip::None => false,
            Skip::PastLast => first <= last(e),
            Skip::ToNext => first == e.events[0],
            Skip::ToFirst(s) => e.binding[s]
                .iter()
                .find(|&&b| named(s, b))
                .is_some_and(|&b| first < b),
            Skip::ToLast(s) => e.binding[s]
                .iter()
                .rev()
                .find(|&&b| named(s, b))
                .is_some_and(|&b| first < b),
        });
        if !dropped {
            kept.push(c);
        }
    }
    kept.into_iter().map(|c| c.binding).collect()
}

/// The record `kairos replay` prints for a match of pattern `name` that bound `binding`, with
/// `value` as its emitted fields: timed by its last event.
pub fn record(
    name: &str,
    evs: &[Event],
    binding: &[Vec<usize>],
    value: serde_json::Map<String, J>,
) -> J {
    let last = binding
        .iter()
        .flatten()
        .copied()
        .max()
        .expect("non-empty match");
    json!({
        "pattern": name,
        "sink": "out",
        "key": null,
        "ts": evs[last].ts,
        "value": J::Object(value),
    })
}

/// The records `kairos replay` prints for the matches of a pattern whose emit clause is
/// `emit out { STEP: collect(STEP.id), ... }` over every step, without `key`, with `skip none`.
pub fn records(p: &Pattern, evs: &[Event]) -> Vec<J> {
    emitted(p, evs, Skip::None, |_, _| true)
        .into_iter()
        .map(|m| {
            let mut value = serde_json::Map::new();
            for (s, bound) in p.steps.iter().zip(&m) {
                let ids: Vec<i64> = bound.iter().map(|&i| evs[i].id).collect();
                value.insert(s.name.clone(), json!(ids));
            }
            record(&p.name, evs, &m, value)
        })
        .collect()
}
