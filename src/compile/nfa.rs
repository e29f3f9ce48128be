//! The automaton a pattern compiles to, and its construction.
//!
//! The construction follows Flink CEP's NFA compiler (as of 2.3: an optional step that starts a
//! group is optional, FLINK-30864) state for state, so that Flink's documented semantics (and its
//! test cases) hold for Kairos: the sequence is converted from its last element to its first;
//! loops become a looping state with TAKE/IGNORE/PROCEED edges; a greedy loop guards the edges of
//! the state after it with "not another iteration"; negations become STOP states that discard a
//! partial match; `-> !x` at the end becomes a PENDING state that completes when its window
//! closes.

use super::expr::NameId;
use crate::lang::ast::Contiguity;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

pub type StateId = u16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateKind {
    Start,
    Normal,
    Final,
    /// Reaching it discards the partial match (a negated step occurred).
    Stop,
    /// Waiting for a window to close with no negated event (absence at the end).
    Pending,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Bind the event and move.
    Take,
    /// Skip the event and move (or stay).
    Ignore,
    /// Move without consuming (an epsilon edge), evaluated on the same event.
    Proceed,
}

/// An edge condition: the named definitions, combined.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Cond {
    True,
    Def(NameId),
    Not(Box<Cond>),
    And(Box<Cond>, Box<Cond>),
    Or(Vec<Cond>),
}

impl Cond {
    fn and(a: Cond, b: Cond) -> Cond {
        match (a, b) {
            (Cond::True, x) | (x, Cond::True) => x,
            (a, b) => Cond::And(Box::new(a), Box::new(b)),
        }
    }
    fn not(a: Cond) -> Cond {
        Cond::Not(Box::new(a))
    }

    fn render(&self, names: &[String], out: &mut String) {
        match self {
            Cond::True => out.push_str("true"),
            Cond::Def(n) => out.push_str(&names[*n as usize]),
            Cond::Not(a) => {
                out.push('!');
                a.render(names, out)
            }
            Cond::And(a, b) => {
                out.push('(');
                a.render(names, out);
                out.push_str(" & ");
                b.render(names, out);
                out.push(')');
            }
            Cond::Or(xs) => {
                out.push('(');
                for (i, x) in xs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(" | ");
                    }
                    x.render(names, out);
                }
                out.push(')');
            }
        }
    }
}

/// Which name a TAKE edge binds the event to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Bind {
    None,
    One(NameId),
    /// Alternation: the first alternative whose definition holds.
    FirstOf(Vec<NameId>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub action: Action,
    pub target: StateId,
    pub cond: Cond,
    pub bind: Bind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NState {
    pub kind: StateKind,
    pub label: String,
    pub edges: Vec<Edge>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Nfa {
    pub states: Vec<NState>,
    pub start: StateId,
}

impl Nfa {
    /// A readable listing, for `kairos check`.
    pub fn render(&self, names: &[String]) -> String {
        let mut s = String::new();
        for (i, st) in self.states.iter().enumerate() {
            let kind = match st.kind {
                StateKind::Start => " (start)",
                StateKind::Final => " (final)",
                StateKind::Stop => " (stop)",
                StateKind::Pending => " (pending absence)",
                StateKind::Normal => "",
            };
            let _ = writeln!(s, "    s{i} {}{kind}", st.label);
            for e in &st.edges {
                let mut c = String::new();
                e.cond.render(names, &mut c);
                let act = match e.action {
                    Action::Take => "take",
                    Action::Ignore => "ignore",
                    Action::Proceed => "proceed",
                };
                let _ = writeln!(s, "      {act:<7} -> s{:<3} when {c}", e.target);
            }
        }
        s
    }
}

/// One element of a sequence, in the shape of a Flink `Pattern` node.
#[derive(Clone, Debug)]
pub struct Elem {
    pub kind: ElemKind,
    /// How the element's first event joins the previous element.
    pub consuming: Contiguity,
    /// How iterations join each other.
    pub inner: Contiguity,
    pub looping: bool,
    pub times: (u32, u32),
    pub optional: bool,
    pub greedy: bool,
    pub until: Option<NameId>,
}

#[derive(Clone, Debug)]
pub enum ElemKind {
    /// A step, or an alternation of steps.
    Single(Vec<NameId>),
    Group(Vec<Elem>),
    NotNext(NameId),
    NotFollow(NameId),
}

impl Elem {
    fn cond(&self) -> Cond {
        match &self.kind {
            ElemKind::Single(alts) if alts.len() == 1 => Cond::Def(alts[0]),
            ElemKind::Single(alts) => Cond::Or(alts.iter().map(|a| Cond::Def(*a)).collect()),
            ElemKind::NotNext(x) | ElemKind::NotFollow(x) => Cond::Def(*x),
            ElemKind::Group(_) => Cond::True,
        }
    }
    fn bind(&self) -> Bind {
        match &self.kind {
            ElemKind::Single(alts) if alts.len() == 1 => Bind::One(alts[0]),
            ElemKind::Single(alts) => Bind::FirstOf(alts.clone()),
            _ => Bind::None,
        }
    }
    fn label(&self, names: &[String]) -> String {
        match &self.kind {
            ElemKind::Single(alts) => alts
                .iter()
                .map(|a| names[*a as usize].as_str())
                .collect::<Vec<_>>()
                .join("|"),
            ElemKind::NotNext(x) | ElemKind::NotFollow(x) => format!("!{}", names[*x as usize]),
            ElemKind::Group(_) => "group".into(),
        }
    }
}

/// The most states an automaton may have: a bound on what a pattern costs, far above what real
/// patterns need (quantifier counts multiply the states of what they repeat).
pub const MAX_STATES: usize = 20_000;

/// The automaton would exceed [`MAX_STATES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

/// Builds the automaton of a top-level sequence.
pub fn build(seq: &[Elem], has_window: bool, names: &[String]) -> Result<Nfa, TooLarge> {
    let mut b = Builder {
        states: Vec::new(),
        stop_states: FxHashMap::default(),
        original: FxHashMap::default(),
        first_of_loop: FxHashMap::default(),
        has_window,
        too_large: false,
        names,
        chain: seq,
        idx: seq.len() - 1,
        group: None,
        following: None,
    };
    let fin = b.new_state(StateKind::Final, "$end".into());
    let sink = b.middle_states(fin);
    let start = b.convert(sink);
    if b.too_large {
        return Err(TooLarge);
    }
    b.states[start as usize].kind = StateKind::Start;
    Ok(Nfa {
        states: b.states,
        start,
    })
}

struct Builder<'e> {
    states: Vec<NState>,
    stop_states: FxHashMap<NameId, StateId>,
    /// For a greedy loop with `until`: the unguarded copy of the state after the loop.
    original: FxHashMap<StateId, StateId>,
    first_of_loop: FxHashMap<*const Elem, bool>,
    has_window: bool,
    /// Set when the automaton outgrew [`MAX_STATES`]; construction then stops adding states.
    too_large: bool,
    names: &'e [String],
    chain: &'e [Elem],
    idx: usize,
    group: Option<&'e Elem>,
    following: Option<&'e Elem>,
}

impl<'e> Builder<'e> {
    fn cur(&self) -> &'e Elem {
        &self.chain[self.idx]
    }

    fn new_state(&mut self, kind: StateKind, label: String) -> StateId {
        if self.states.len() >= MAX_STATES {
            self.too_large = true;
            return 0;
        }
        self.states.push(NState {
            kind,
            label,
            edges: Vec::new(),
        });
        (self.states.len() - 1) as StateId
    }

    fn cur_state(&mut self) -> StateId {
        let label = self.cur().label(self.names);
        self.new_state(StateKind::Normal, label)
    }

    fn edge(&mut self, from: StateId, action: Action, to: StateId, cond: Cond, bind: Bind) {
        if self.too_large {
            return;
        }
        self.states[from as usize].edges.push(Edge {
            action,
            target: to,
            cond,
            bind,
        });
    }

    fn kind(&self, s: StateId) -> StateKind {
        self.states[s as usize].kind
    }

    fn middle_states(&mut self, sink: StateId) -> StateId {
        let mut last = sink;
        while self.idx > 0 {
            let cur = self.cur();
            match &cur.kind {
                ElemKind::NotFollow(x) => {
                    // Inside the sequence a `-> !x` becomes stop edges on the following states;
                    // at the very end (with a window) it waits in a pending state.
                    if self.has_window && self.kind(last) == StateKind::Final {
                        let label = format!("!{}", self.names[*x as usize]);
                        let pending = self.new_state(StateKind::Pending, label);
                        let not = self.take_cond(cur);
                        let stop = self.stop_state(not.clone(), *x);
                        self.edge(pending, Action::Proceed, stop, not.clone(), Bind::None);
                        self.edge(pending, Action::Ignore, pending, Cond::not(not), Bind::None);
                        last = pending;
                    }
                }
                ElemKind::NotNext(x) => {
                    let not_next = self.cur_state();
                    let not = self.take_cond(cur);
                    let stop = self.stop_state(not.clone(), *x);
                    if self.kind(last) == StateKind::Final {
                        // An IGNORE, so that the event after the match completes it without
                        // joining it.
                        self.edge(
                            not_next,
                            Action::Ignore,
                            last,
                            Cond::not(not.clone()),
                            Bind::None,
                        );
                    } else {
                        self.edge(
                            not_next,
                            Action::Proceed,
                            last,
                            Cond::not(not.clone()),
                            Bind::None,
                        );
                    }
                    self.edge(not_next, Action::Proceed, stop, not, Bind::None);
                    last = not_next;
                }
                _ => last = self.convert(last),
            }
            self.following = Some(cur);
            self.idx -= 1;
        }
        last
    }

    fn convert(&mut self, sink: StateId) -> StateId {
        let cur = self.cur();
        let last = if cur.looping {
            self.set_first_of_loop(false);
            let s = self.copy_without_transitive_nots(sink);
            let looping = self.looping(s);
            self.set_first_of_loop(true);
            self.times_state(looping, sink, cur.times)
        } else if cur.times != (1, 1) {
            self.times_state(sink, sink, cur.times)
        } else {
            let take = self.take_cond(cur);
            let ignore = self.ignore_cond(cur);
            self.singleton(sink, Some(sink), take, ignore, cur.optional)
        };
        self.add_stop_states(last);
        last
    }

    fn stop_state(&mut self, not: Cond, name: NameId) -> StateId {
        if let Some(s) = self.stop_states.get(&name) {
            return *s;
        }
        let label = format!("!{}", self.names[name as usize]);
        let s = self.new_state(StateKind::Stop, label);
        self.edge(s, Action::Take, s, not, Bind::None);
        self.stop_states.insert(name, s);
        s
    }

    /// The negations that the current element must still respect: those before it, reached
    /// backwards through optional elements.
    fn current_not_conditions(&self) -> Vec<(Cond, NameId)> {
        let mut out = Vec::new();
        let mut i = self.idx;
        while i > 0 {
            let prev = &self.chain[i - 1];
            let is_not_follow = matches!(prev.kind, ElemKind::NotFollow(_));
            if !(prev.optional || is_not_follow) {
                break;
            }
            i -= 1;
            if let ElemKind::NotFollow(x) = prev.kind {
                out.push((self.take_cond(prev), x));
            }
        }
        out
    }

    /// Taking an optional element's event releases the negations before it, so its TAKE edge
    /// goes to a copy of the sink without their stop edges.
    fn copy_without_transitive_nots(&mut self, sink: StateId) -> StateId {
        let nots = self.current_not_conditions();
        if nots.is_empty() || !self.cur().optional {
            return sink;
        }
        let kind = self.kind(sink);
        let label = self.states[sink as usize].label.clone();
        let copy = self.new_state(kind, label);
        let edges = self.states[sink as usize].edges.clone();
        for e in edges {
            if e.action == Action::Proceed {
                let mut target = e.target;
                let mut remove = false;
                if self.kind(target) == StateKind::Stop {
                    remove = nots
                        .iter()
                        .any(|(_, n)| self.stop_states.get(n) == Some(&target));
                } else {
                    target = self.copy_without_transitive_nots(target);
                }
                if !remove {
                    self.edge(copy, e.action, target, e.cond, e.bind);
                }
            } else {
                let target = if e.target == sink { copy } else { e.target };
                self.edge(copy, e.action, target, e.cond, e.bind);
            }
        }
        copy
    }

    fn copy(&mut self, state: StateId) -> StateId {
        let kind = self.kind(state);
        let label = self.states[state as usize].label.clone();
        let copy = self.new_state(kind, label);
        let edges = self.states[state as usize].edges.clone();
        for e in edges {
            let target = if e.target == state { copy } else { e.target };
            self.edge(copy, e.action, target, e.cond, e.bind);
        }
        copy
    }

    fn add_stop_states(&mut self, state: StateId) {
        for (cond, name) in self.current_not_conditions() {
            let stop = self.stop_state(cond.clone(), name);
            self.edge(state, Action::Proceed, stop, cond, Bind::None);
        }
    }

    fn add_stop_state_to_looping(&mut self, state: StateId) {
        if let Some(f) = self.following {
            if let ElemKind::NotFollow(x) = f.kind {
                let cond = self.take_cond(f);
                let stop = self.stop_state(cond.clone(), x);
                self.edge(state, Action::Proceed, stop, cond, Bind::None);
            }
        }
    }

    fn times_state(&mut self, sink: StateId, proceed: StateId, times: (u32, u32)) -> StateId {
        let cur = self.cur();
        let mut last = sink;
        self.set_first_of_loop(false);
        let until = cur.until.map(Cond::Def);
        let inner_ignore = extend_with_until(self.inner_ignore_cond(cur), until.clone(), false);
        let take = extend_with_until(Some(self.take_cond(cur)), until.clone(), true)
            .expect("a take condition always exists");
        if cur.greedy && times.0 != times.1 {
            if until.is_some() {
                let c = self.copy(sink);
                self.original.insert(sink, c);
            }
            self.update_with_greedy_condition(sink, take.clone());
        }
        for _ in times.0..times.1 {
            last = self.singleton(
                last,
                Some(proceed),
                take.clone(),
                inner_ignore.clone(),
                true,
            );
            self.add_stop_state_to_looping(last);
        }
        for _ in 0..times.0.saturating_sub(1) {
            last = self.singleton(last, None, take.clone(), inner_ignore.clone(), false);
            self.add_stop_state_to_looping(last);
        }
        self.set_first_of_loop(true);
        let ignore = self.ignore_cond(cur);
        let optional = cur.optional;
        self.singleton(last, Some(proceed), take, ignore, optional)
    }

    fn singleton(
        &mut self,
        sink: StateId,
        proceed: Option<StateId>,
        take: Cond,
        ignore: Option<Cond>,
        optional: bool,
    ) -> StateId {
        let cur = self.cur();
        if let ElemKind::Group(_) = cur.kind {
            return self.group_state(sink, proceed, optional);
        }
        let state = self.cur_state();
        let s = self.copy_without_transitive_nots(sink);
        self.edge(state, Action::Take, s, take.clone(), cur.bind());
        let proceed_cond = self.true_cond();
        if optional {
            let proceed = proceed.expect("an optional element always has a proceed target");
            if cur.greedy {
                let until = cur.until.map(Cond::Def);
                if let Some(u) = &until {
                    let orig = *self.original.get(&proceed).unwrap_or(&proceed);
                    self.edge(
                        state,
                        Action::Proceed,
                        orig,
                        Cond::and(proceed_cond.clone(), u.clone()),
                        Bind::None,
                    );
                }
                let c = match until {
                    Some(u) => Cond::and(proceed_cond, Cond::not(u)),
                    None => proceed_cond,
                };
                self.edge(state, Action::Proceed, proceed, c, Bind::None);
            } else {
                self.edge(state, Action::Proceed, proceed, proceed_cond, Bind::None);
            }
        }
        if let Some(ignore) = ignore {
            let ignore_state = if optional || self.head_of_optional_group() {
                // Once an event is skipped, the element must be taken: the proceed branch was
                // already followed from the state before.
                let st = self.cur_state();
                self.edge(st, Action::Take, s, take, cur.bind());
                self.edge(st, Action::Ignore, st, ignore.clone(), Bind::None);
                self.add_stop_states(st);
                st
            } else {
                state
            };
            self.edge(state, Action::Ignore, ignore_state, ignore, Bind::None);
        }
        state
    }

    fn looping(&mut self, sink: StateId) -> StateId {
        let cur = self.cur();
        if let ElemKind::Group(_) = cur.kind {
            return self.looping_group_state(sink);
        }
        let until = cur.until.map(Cond::Def);
        let ignore = extend_with_until(self.inner_ignore_cond(cur), until.clone(), false);
        let take = extend_with_until(Some(self.take_cond(cur)), until.clone(), true)
            .expect("a take condition always exists");
        let proceed_cond = self.true_cond();
        let looping = self.cur_state();
        if cur.greedy {
            if let Some(u) = &until {
                let c = self.copy(sink);
                self.edge(
                    looping,
                    Action::Proceed,
                    c,
                    Cond::and(proceed_cond.clone(), u.clone()),
                    Bind::None,
                );
                self.original.insert(sink, c);
            }
            let c = match &until {
                Some(u) => Cond::and(proceed_cond, Cond::not(u.clone())),
                None => proceed_cond,
            };
            self.edge(looping, Action::Proceed, sink, c, Bind::None);
            let plain_take = self.take_cond(cur);
            self.update_with_greedy_condition(sink, plain_take);
        } else {
            self.edge(looping, Action::Proceed, sink, proceed_cond, Bind::None);
        }
        self.edge(looping, Action::Take, looping, take.clone(), cur.bind());
        self.add_stop_state_to_looping(looping);
        if let Some(ignore) = ignore {
            let st = self.cur_state();
            self.edge(st, Action::Take, looping, take, cur.bind());
            self.edge(st, Action::Ignore, st, ignore.clone(), Bind::None);
            self.edge(looping, Action::Ignore, st, ignore, Bind::None);
            self.add_stop_state_to_looping(st);
        }
        looping
    }

    fn group_state(&mut self, sink: StateId, proceed: Option<StateId>, optional: bool) -> StateId {
        let group = self.cur();
        let ElemKind::Group(inner) = &group.kind else {
            unreachable!("group_state is called on groups only")
        };
        let saved = (self.chain, self.idx, self.following, self.group);
        let proceed_cond = self.true_cond();
        self.group = Some(group);
        self.chain = inner;
        self.idx = inner.len() - 1;
        let mut last = self.middle_states(sink);
        last = self.convert(last);
        if optional {
            let p = proceed.expect("an optional group always has a proceed target");
            self.edge(last, Action::Proceed, p, proceed_cond, Bind::None);
        }
        (self.chain, self.idx, self.following, self.group) = saved;
        last
    }

    fn looping_group_state(&mut self, sink: StateId) -> StateId {
        let group = self.cur();
        let ElemKind::Group(inner) = &group.kind else {
            unreachable!("looping_group_state is called on groups only")
        };
        let saved = (self.chain, self.idx, self.following, self.group);
        let proceed_cond = self.true_cond();
        let dummy = self.new_state(StateKind::Normal, "group".into());
        self.group = Some(group);
        self.chain = inner;
        self.idx = inner.len() - 1;
        let mut last = self.middle_states(dummy);
        last = self.convert(last);
        self.edge(
            last,
            Action::Proceed,
            sink,
            proceed_cond.clone(),
            Bind::None,
        );
        self.edge(dummy, Action::Proceed, last, proceed_cond, Bind::None);
        (self.chain, self.idx, self.following, self.group) = saved;
        last
    }

    fn update_with_greedy_condition(&mut self, state: StateId, take: Cond) {
        for e in &mut self.states[state as usize].edges {
            let c = std::mem::replace(&mut e.cond, Cond::True);
            e.cond = Cond::And(Box::new(c), Box::new(Cond::not(take.clone())));
        }
    }

    fn set_first_of_loop(&mut self, v: bool) {
        let cur = self.cur();
        if let ElemKind::Group(_) = cur.kind {
            self.first_of_loop.insert(cur as *const Elem, v);
        }
    }

    fn is_group_first_of_loop(&self) -> bool {
        match self.group {
            Some(g) => *self.first_of_loop.get(&(g as *const Elem)).unwrap_or(&true),
            None => true,
        }
    }

    fn head_of_group(&self) -> bool {
        self.group.is_some() && self.idx == 0
    }

    /// Whether the current element starts a group that is optional, on the group's first
    /// iteration: the group's own PROCEED edge leaves from this element's state, so an event it
    /// skips must not lead back to that edge (as for an optional element).
    fn head_of_optional_group(&self) -> bool {
        self.head_of_group()
            && self.is_group_first_of_loop()
            && self.group.is_some_and(|g| g.optional)
    }

    fn group_until(&self) -> Option<Cond> {
        self.group.and_then(|g| g.until).map(Cond::Def)
    }

    fn take_cond(&self, e: &Elem) -> Cond {
        extend_with_until(Some(e.cond()), self.group_until(), true).expect("take exists")
    }

    fn true_cond(&self) -> Cond {
        extend_with_until(Some(Cond::True), self.group_until(), true).expect("true exists")
    }

    fn strategy_ignore(&self, strategy: Contiguity, e: &Elem) -> Option<Cond> {
        let c = match strategy {
            Contiguity::Strict => None,
            Contiguity::Relaxed => Some(Cond::not(e.cond())),
            Contiguity::Any => Some(Cond::True),
        };
        extend_with_until(c, self.group_until(), false)
    }

    fn ignore_cond(&self, e: &Elem) -> Option<Cond> {
        let mut strategy = e.consuming;
        if self.head_of_group() && std::ptr::eq(e, self.cur()) {
            let g = self.group.expect("head_of_group implies a group");
            strategy = if self.is_group_first_of_loop() {
                g.consuming
            } else {
                g.inner
            };
        }
        self.strategy_ignore(strategy, e)
    }

    fn inner_ignore_cond(&self, e: &Elem) -> Option<Cond> {
        let mut strategy = e.inner;
        if self.head_of_group() && std::ptr::eq(e, self.cur()) {
            strategy = self.group.expect("head_of_group implies a group").inner;
        }
        self.strategy_ignore(strategy, e)
    }
}

fn extend_with_until(cond: Option<Cond>, until: Option<Cond>, is_take: bool) -> Option<Cond> {
    match (cond, until) {
        (Some(c), Some(u)) => Some(Cond::And(Box::new(Cond::not(u)), Box::new(c))),
        (None, Some(u)) if is_take => Some(Cond::not(u)),
        (c, _) => c,
    }
}
