//! The matching engine: runs compiled patterns over events, per key.
//!
//! Each key holds its partial matches ("runs"): a state of the pattern's automaton and a pointer
//! to the events bound so far. An event advances every run of its key along the edges whose
//! conditions hold. A match is emitted the moment it completes (eager emission), and its skip
//! strategy applies at once to every open run of the key. Windows close in event time: a timer
//! per key fires when the earliest window of the key closes, also when the key has gone quiet.
//!
//! # Memory budgets
//!
//! A loop such as `b+` binds every event it takes, so one partial match, and with it one key,
//! can grow without bound; `max_runs_per_key` bounds the number of partial matches, not their
//! size. So each partial match carries the bytes it accounts for ([`Run::bytes`]): the run
//! itself, and every event it bound, each a node of its history with the values kept of it
//! ([`path::PathNode::bytes`]). A run that binds one more event accounts for its parent's bytes
//! and the new node's, and a key for the sum of its runs' (kept as runs come and go, never by
//! walking a history) and for its own entry ([`key_bytes`]). Histories that partial matches
//! share are counted once for each, so the figure is an upper bound of the memory held, and
//! exactly what a snapshot of the state holds, as a snapshot does not share them.
//!
//! Two budgets apply ([`EngineOptions`]). A key over `max_state_bytes_per_key` loses its oldest
//! partial matches (by their first event) until it fits, on the event that took it over. Every
//! key together over `max_state_bytes` sheds the oldest partial matches of the keys that hold
//! the most, down to a common level, so that keys of a few partial matches keep theirs (the
//! total is the engine's: an engine per shard takes its share, see [`Engine::for_shard`]).
//! Evictions write nothing (an evicted partial match did not time
//! out), are counted by the limit that made them ([`EngineStats`]) and logged with their key,
//! rate-limited.
//!
//! ```
//! use kairos::compile::{compile, CompileOptions, Source};
//! use kairos::engine::{Engine, EngineOptions, OwnedRecord};
//! use kairos::event::{Event, Value};
//! use std::sync::Arc;
//!
//! let text = "pattern up\n  from ticks\n  time ts\n  match a -> b\n  define\n    b = (price > a.price)\n  emit out { from: a.price, to: b.price }\n";
//! let program = Arc::new(compile(&[Source { file: "up.cep", text }], &CompileOptions::default()).unwrap());
//! let price = program.fields.iter().position(|f| f == &["price"]).unwrap();
//! let mut engine = Engine::new(program.clone(), EngineOptions::default());
//! let mut out: Vec<OwnedRecord> = Vec::new();
//! for (t, p) in [(1, 10), (2, 12)] {
//!     let mut ev = Event::with_slots(program.fields.len());
//!     ev.ts = t * 1_000_000;
//!     ev.slots[price] = Value::Int(p);
//!     engine.process(&mut ev, &mut out);
//! }
//! assert_eq!(out.len(), 1);
//! assert_eq!(out[0].fields[1].1, Value::Int(12));
//! ```

pub mod keys;
pub mod output;
pub mod path;

pub use output::{Output, OwnedRecord, Record};

use crate::compile::expr::{CExpr, EvalCtx, NameId};
use crate::compile::nfa::{Action, Bind, Cond, StateId, StateKind};
use crate::compile::{CompiledPattern, EmitSpec, Program, SkipStrategy};
use crate::event::{Event, Value};
use keys::KeyMap;
use path::PathNode;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// Limits of the engine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EngineOptions {
    /// The most partial matches one key may hold; beyond it the oldest are evicted (and counted).
    pub max_runs_per_key: usize,
    /// The most bytes the partial matches of one key may hold (see the module's "Memory budgets");
    /// beyond it the key's oldest are evicted (and counted). At most [`MAX_STATE_BYTES_PER_KEY`].
    pub max_state_bytes_per_key: u64,
    /// The most bytes the partial matches of every key may hold together; beyond it the keys
    /// that hold the most lose their oldest (see the module's "Memory budgets"). An engine built with
    /// [`Engine::for_shard`] takes its share: this divided by the number of shards.
    pub max_state_bytes: u64,
    /// The lookup tables, by name; each engine reads the version current when an event starts.
    #[serde(skip)]
    pub tables: Vec<(String, crate::table::SharedTable)>,
}

/// The largest per-key budget: a key's figure is kept in 32 bits, beside its partial matches.
pub const MAX_STATE_BYTES_PER_KEY: u64 = u32::MAX as u64;

impl Default for EngineOptions {
    /// 1024 partial matches and 4 MiB a key, 1 GiB in all: a customer's few partial matches
    /// cost hundreds of bytes, so 4 MiB is thousands of times what an ordinary key holds and
    /// still small beside the machine; 1 GiB holds the state of millions of ordinary keys, or of
    /// 256 keys at their whole budget, and fits a normal machine with room for the rest.
    fn default() -> Self {
        EngineOptions {
            max_runs_per_key: 1024,
            max_state_bytes_per_key: 4 << 20,
            max_state_bytes: 1 << 30,
            tables: Vec::new(),
        }
    }
}

/// An [`EngineOptions`] limit out of its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("max_runs_per_key must be at least 1")]
    RunsPerKey,
    #[error(
        "max_state_bytes_per_key must be between 1 and {MAX_STATE_BYTES_PER_KEY} bytes, not {0}"
    )]
    StateBytesPerKey(u64),
    #[error("max_state_bytes must be at least 1 byte")]
    StateBytes,
}

impl EngineOptions {
    /// Checks that every limit is in its range.
    pub fn validate(&self) -> Result<(), LimitError> {
        if self.max_runs_per_key == 0 {
            return Err(LimitError::RunsPerKey);
        }
        if !(1..=MAX_STATE_BYTES_PER_KEY).contains(&self.max_state_bytes_per_key) {
            return Err(LimitError::StateBytesPerKey(self.max_state_bytes_per_key));
        }
        if self.max_state_bytes == 0 {
            return Err(LimitError::StateBytes);
        }
        Ok(())
    }
}

/// Counters of an engine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    pub events: u64,
    pub matches: u64,
    pub timeouts: u64,
    /// Partial matches evicted by any limit: a key over `max_runs_per_key` or
    /// `max_state_bytes_per_key`, or every key together over `max_state_bytes`.
    pub evicted: u64,
    /// Of `evicted`, those evicted because their key held more than `max_state_bytes_per_key`.
    pub evicted_key_bytes: u64,
    /// Of `evicted`, those evicted because every key together held more than `max_state_bytes`.
    pub evicted_total_bytes: u64,
    /// The bytes the open partial matches hold now, as the budgets count them.
    pub state_bytes: u64,
    /// Partial matches dropped with their origin ([`Engine::drop_origins`]).
    pub dropped: u64,
    /// Partial matches open now.
    pub live_runs: u64,
    /// Keys with open partial matches now.
    pub live_keys: u64,
}

/// A partial match.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    pub state: StateId,
    /// What the partial match accounts for in the memory budgets: this run and every event it
    /// bound (see the module's "Memory budgets"). Computed again from the history when state is
    /// restored.
    #[serde(skip)]
    pub bytes: u32,
    pub path: Option<Arc<PathNode>>,
    /// Time (ns) and input position of the first event.
    pub start_ts: i64,
    pub start_seq: u64,
}

/// The partial matches of a key.
pub type Runs = smallvec::SmallVec<[Run; 2]>;

/// The partial matches of one key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyState {
    /// Inline for the usual one or two, so that reaching them costs no pointer chase.
    pub runs: Runs,
    /// Earliest window close among the runs (ns), `i64::MAX` if none.
    next_close: i64,
    /// The deadline this key has in the timer queue, `i64::MAX` if none.
    scheduled: i64,
    /// The origin of the key's last event that could change its partial matches (see
    /// [`Event::origin`]): an event that leaves every run of the key as it is, and starts none,
    /// is passed over without reading the key's state.
    pub origin: u32,
    /// The sum of the runs' [`Run::bytes`], kept as runs come and go; at most the per-key
    /// budget, which is why 32 bits do (and fit beside `origin`).
    #[serde(skip)]
    bytes: u32,
}

impl Default for KeyState {
    fn default() -> Self {
        KeyState {
            runs: Runs::new(),
            next_close: i64::MAX,
            scheduled: i64::MAX,
            origin: 0,
            bytes: 0,
        }
    }
}

impl KeyState {
    /// What the key holds in the memory budgets: its runs and, while it has any, the key
    /// itself (`key_bytes`, see [`key_bytes`]); nothing once it has none, as it is removed.
    #[inline]
    pub fn held_bytes(&self, key_bytes: u64) -> u64 {
        if self.runs.is_empty() {
            0
        } else {
            key_bytes + u64::from(self.bytes)
        }
    }
}

/// What a key with open partial matches costs besides them: its entry in the key map, its
/// slot in the index, a timer, and the key's own bytes where they do not fit inline.
#[inline]
pub fn key_bytes(key: &Value) -> u64 {
    let fixed = keys::ENTRY_BYTES + std::mem::size_of::<Timer>();
    (fixed + path::value_heap_bytes(key)) as u64
}

/// What a partial match costs before it binds an event: the run itself.
const RUN_BYTES: u32 = std::mem::size_of::<Run>() as u32;

/// The state of one pattern: its keys and their timers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PatternState {
    #[serde(with = "pairs")]
    pub keys: KeyMap,
    timers: BinaryHeap<Reverse<Timer>>,
    timer_seq: u64,
}

/// Serializes a map keyed by values as a list of pairs: formats such as JSON only allow string
/// keys.
mod pairs {
    use super::{KeyMap, KeyState, Value};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(m: &KeyMap, s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<(&Value, &KeyState)> = m.iter().collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<KeyMap, D::Error> {
        let v: Vec<(Value, KeyState)> = Vec::deserialize(d)?;
        Ok(v.into_iter().collect())
    }
}

/// A key's window deadline in the timer queue, ordered by time then by insertion.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Timer {
    at: i64,
    seq: u64,
    key: Value,
}

impl PartialEq for Timer {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timer {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Per-event working memory, reused so that the steady state does not allocate.
#[derive(Default)]
struct Scratch {
    stack: Vec<StateId>,
    edges: Vec<(Action, StateId, Option<NameId>)>,
    new_runs: Vec<Run>,
    from_one: Vec<Run>,
    matches: Vec<Run>,
    cond_cache: Vec<u8>,
    quiet: QuietCache,
    emit: EmitScratch,
    log: EvictionLog,
    /// What each key holds, while the total budget is enforced ([`shed`]).
    held: Vec<u64>,
}

impl Scratch {
    /// Forgets what the previous event decided: a new event (or pattern) begins.
    #[inline]
    fn begin(&mut self, pattern: usize, p: &CompiledPattern) {
        self.cond_cache.clear();
        self.cond_cache.resize(2 * p.conds.len(), 0);
        self.quiet.next_event(pattern, p.nfa.states.len());
    }
}

/// What writing a record needs besides the match: borrowed apart from the run lists, so that
/// the hot path reaches its buffers in place instead of moving them in and out of the scratch
/// space (a moved `Vec` read back at once stalls on store forwarding).
#[derive(Default)]
struct EmitScratch {
    values: Vec<Value>,
    /// The lookup tables this event reads, by the program's table index (see
    /// [`Engine::refresh_tables`]).
    tables: Vec<Option<Arc<crate::table::Table>>>,
}

/// Everything an engine remembers between events: plain data, serializable, so that it can be
/// snapshotted and restored.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EngineState {
    /// Input position of the last event processed.
    pub position: u64,
    /// By pattern, in the program's order.
    pub patterns: Vec<PatternState>,
}

/// A snapshot that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("cannot read engine state: {0}")]
pub struct StateDecodeError(String);

impl EngineState {
    /// The state in a compact binary form (bincode), for checkpoints.
    pub fn to_bytes(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode::config::standard())
            .expect("engine state is plain data and always encodes")
    }

    /// Reads back [`EngineState::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<EngineState, StateDecodeError> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map(|(st, _)| st)
            .map_err(|e| StateDecodeError(e.to_string()))
    }
}

/// A snapshot that does not fit the engine's program.
#[derive(Debug, thiserror::Error)]
#[error("the state holds {found} patterns but the program has {expected}")]
pub struct StateMismatch {
    pub found: usize,
    pub expected: usize,
}

/// Runs a [`Program`] over events, one thread.
pub struct Engine {
    prog: Arc<Program>,
    opts: EngineOptions,
    state: EngineState,
    scratch: Scratch,
    /// A key state for keys seen for the first time: inserted into the map only if the event
    /// leaves a partial match open, so that events which start nothing cost no insert. Empty
    /// between events.
    fresh: KeyState,
    stats: EngineStats,
    /// `(index, count)`: this engine owns only the keys that [`shard_of`] gives to `index`.
    shard: Option<(usize, usize)>,
    /// By the program's table index: where the current version of each table is read from.
    readers: Vec<Option<crate::table::TableReader>>,
}

/// The shard, out of `count`, that owns a partition key. The parse stage routes by it and each
/// shard's engine keeps only its own keys, so that one key's events stay in order on one thread.
pub fn shard_of(key: &Value, count: usize) -> usize {
    // The high bits of a multiplicative hash are the well-mixed ones.
    ((keys::hash_key(key) >> 32) as usize) % count.max(1)
}

/// The partition key of `ev` in pattern `p` (null without a `key` clause).
pub fn key_of(p: &CompiledPattern, prog: &Program, ev: &Event) -> Value {
    match &p.key {
        None => Value::Null,
        Some(CExpr::Field(slot)) => ev.slots[*slot as usize].clone(),
        Some(k) => {
            let now = if p.event_time { ev.ts } else { ev.arrival };
            let cx = EvalCtx {
                tables: &[],
                ev: Some(ev),
                ts: prog.unit.from_nanos(now),
                key: &Value::Null,
                node: None,
                aggs: &p.aggs,
            };
            k.eval(&cx).into_owned()
        }
    }
}

impl Engine {
    pub fn new(prog: Arc<Program>, opts: EngineOptions) -> Self {
        let patterns = prog
            .patterns
            .iter()
            .map(|_| PatternState::default())
            .collect();
        // A table the program names but the options lack reads as empty: lookups give null.
        let readers = prog
            .tables
            .iter()
            .map(|name| {
                opts.tables
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| t.reader())
            })
            .collect();
        let mut scratch = Scratch::default();
        scratch.quiet.verdict_tables = prog.patterns.iter().map(VerdictTable::new).collect();
        let mut e = Engine {
            prog,
            opts,
            state: EngineState {
                position: 0,
                patterns,
            },
            readers,
            scratch,
            fresh: KeyState::default(),
            stats: EngineStats::default(),
            shard: None,
        };
        e.refresh_tables();
        e
    }

    /// Takes the newest version of each table: called between events, so that one event never
    /// reads two versions of a table. One atomic load per table when nothing changed.
    #[inline]
    fn refresh_tables(&mut self) {
        if self.readers.is_empty() {
            return;
        }
        self.scratch.emit.tables.resize(self.readers.len(), None);
        for (r, t) in self
            .readers
            .iter_mut()
            .zip(self.scratch.emit.tables.iter_mut())
        {
            if let Some(r) = r {
                r.current();
                if !t.as_ref().is_some_and(|t| Arc::ptr_eq(r.held(), t)) {
                    *t = Some(r.held().clone());
                }
            }
        }
    }

    /// An engine that owns only the keys of shard `index` out of `count` (see [`shard_of`]):
    /// events of other keys are ignored.
    /// The engine's share of `opts.max_state_bytes` is that divided by `count`: keys are spread
    /// evenly over the shards, so the shards together hold what one engine would.
    pub fn for_shard(
        prog: Arc<Program>,
        mut opts: EngineOptions,
        index: usize,
        count: usize,
    ) -> Self {
        opts.max_state_bytes = (opts.max_state_bytes / count.max(1) as u64).max(1);
        let mut e = Engine::new(prog, opts);
        e.shard = Some((index, count.max(1)));
        e
    }

    pub fn program(&self) -> &Arc<Program> {
        &self.prog
    }

    pub fn stats(&self) -> EngineStats {
        let mut s = self.stats.clone();
        s.live_keys = self
            .state
            .patterns
            .iter()
            .map(|p| p.keys.len() as u64)
            .sum();
        s.live_runs = self
            .state
            .patterns
            .iter()
            .flat_map(|p| p.keys.values())
            .map(|k| k.runs.len() as u64)
            .sum();
        s
    }

    /// The counters alone, without the live figures that [`Engine::stats`] counts.
    pub fn counters(&self) -> &EngineStats {
        &self.stats
    }

    /// The engine's state: plain data, serializable.
    pub fn state(&self) -> &EngineState {
        &self.state
    }

    /// Restores state taken with [`Engine::state`] from an engine of the same program.
    pub fn restore(&mut self, state: EngineState) -> Result<(), StateMismatch> {
        if state.patterns.len() != self.prog.patterns.len() {
            return Err(StateMismatch {
                found: state.patterns.len(),
                expected: self.prog.patterns.len(),
            });
        }
        self.state = state;
        self.account_restored();
        Ok(())
    }

    /// Counts the bytes of restored state, which a snapshot does not carry (its partial matches
    /// no longer share their histories once read back, so each is counted whole, as it now
    /// is), and holds it to the budgets, which may be smaller than those it was taken under.
    fn account_restored(&mut self) {
        let prog = &*self.prog;
        let opts = &self.opts;
        let stats = &mut self.stats;
        stats.state_bytes = 0;
        for (p, st) in prog.patterns.iter().zip(&mut self.state.patterns) {
            st.keys.rework(|key, ks| {
                for r in ks.runs.iter_mut() {
                    let bytes = u64::from(RUN_BYTES) + PathNode::history_bytes(r.path.as_deref());
                    r.bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
                }
                let kb = key_bytes(key);
                let bytes: u64 = ks.runs.iter().map(|r| u64::from(r.bytes)).sum();
                if kb + bytes > opts.max_state_bytes_per_key {
                    let (n, _) =
                        evict_oldest(&mut ks.runs, kb, bytes, opts.max_state_bytes_per_key);
                    ks.runs.drain(..n);
                    stats.evicted += n as u64;
                    stats.evicted_key_bytes += n as u64;
                    log_eviction(
                        &mut self.scratch.log,
                        p,
                        key,
                        Limit::StateBytesPerKey,
                        n,
                        stats,
                    );
                }
                settle_runs(p, ks);
                stats.state_bytes += ks.held_bytes(kb);
            });
        }
        if self.stats.state_bytes > self.opts.max_state_bytes {
            shed(
                prog,
                &mut self.state.patterns,
                self.opts.max_state_bytes,
                &mut self.scratch,
                &mut self.stats,
            );
        }
    }

    /// Processes one event: closes the windows that its time passes, then advances the partial
    /// matches of its key in every pattern that reads its stream. Assigns `ev.seq`.
    pub fn process(&mut self, ev: &mut Event, out: &mut dyn Output) {
        self.process_inner(ev, None, out)
    }

    /// [`Engine::process`] for a shard's engine, when the router has already found which
    /// patterns' keys this shard owns: bit `i` of `patterns` for pattern `i` (programs of up to
    /// 64 patterns). The engine then need not hash the keys again.
    pub fn process_routed(&mut self, ev: &mut Event, patterns: u64, out: &mut dyn Output) {
        self.process_inner(ev, Some(patterns), out)
    }

    // HOT PATH
    fn process_inner(&mut self, ev: &mut Event, routed: Option<u64>, out: &mut dyn Output) {
        self.refresh_tables();
        // An event built by hand with too few slots reads null where fields are missing.
        if ev.slots.len() < self.prog.fields.len() {
            ev.slots.resize(self.prog.fields.len(), Value::Null);
        }
        self.state.position += 1;
        ev.seq = self.state.position;
        self.stats.events += 1;
        let ev: &Event = ev;
        let prog = &*self.prog;
        for (pi, p) in prog.patterns.iter().enumerate() {
            if !p.reads.get(ev.stream as usize).copied().unwrap_or(false) {
                continue;
            }
            let now = if p.event_time { ev.ts } else { ev.arrival };
            let st = &mut self.state.patterns[pi];
            if st.timers.peek().is_some_and(|t| t.0.at <= now) {
                fire_timers(p, prog, st, now, &mut self.scratch, &mut self.stats, out);
            }
            if let Some(mask) = routed {
                if pi >= 64 || mask & (1 << pi) == 0 {
                    continue;
                }
            }
            // The usual key, a field, is read in place: it is copied only where the key's state
            // is inserted or its window scheduled.
            let computed;
            let key = match &p.key {
                Some(CExpr::Field(slot)) => &ev.slots[*slot as usize],
                _ => {
                    computed = key_of(p, prog, ev);
                    &computed
                }
            };
            if let (None, Some((index, count))) = (routed, self.shard) {
                if shard_of(key, count) != index {
                    continue;
                }
            }
            let PatternState {
                keys,
                timers,
                timer_seq,
            } = st;
            let hash = keys::hash_key(key);
            let ts_unit = prog.unit.from_nanos(now);
            self.scratch.begin(pi, p);
            // An event that starts nothing and changes no run in the states the key's runs are
            // in leaves the key as it is: the index alone tells, without reading the key's
            // entry (the usual cache miss of an event).
            let found = {
                let Scratch {
                    cond_cache,
                    quiet,
                    emit,
                    ..
                } = &mut self.scratch;
                let event_only = EvalCtx {
                    tables: &emit.tables,
                    ev: Some(ev),
                    ts: ts_unit,
                    key,
                    node: None,
                    aggs: &p.aggs,
                };
                quiet.prime(&event_only, cond_cache);
                // A pattern without a key has one entry, always in the cache: the index has
                // nothing to save it.
                if p.key.is_some() && quiet.inert(p, &event_only, cond_cache) {
                    let changes = |states| !quiet.all(p, states, &event_only, cond_cache);
                    match keys.find_changing(hash, key, changes) {
                        Some(found) => Some(found),
                        None => continue,
                    }
                } else {
                    keys.lookup(hash, key)
                }
            };
            // A key seen for the first time is processed in a spare state, inserted only if the
            // event leaves a partial match open, so that events which start nothing cost no
            // insert. One call site for both, so that the walk is inlined once.
            let mut found = found;
            let ks = match found.as_mut() {
                Some(f) => f.state(),
                None => &mut self.fresh,
            };
            let mut changed = false;
            if ks.next_close <= now {
                changed = true;
                advance_key(
                    p,
                    prog,
                    ks,
                    key,
                    now,
                    &mut self.scratch,
                    &mut self.stats,
                    out,
                );
            }
            changed |= process_key(
                p,
                prog,
                ks,
                key,
                ev,
                now,
                &self.opts,
                &mut self.scratch,
                &mut self.stats,
                out,
            );
            if !ks.runs.is_empty() {
                ks.origin = ev.origin;
                schedule(timers, timer_seq, ks, key);
            }
            match found {
                Some(f) if changed => f.settle(),
                Some(_) => {}
                // An event that leaves nothing open leaves the spare state as it found it.
                None if self.fresh.runs.is_empty() => {}
                None => keys.insert(hash, key.clone(), std::mem::take(&mut self.fresh)),
            }
            if self.stats.state_bytes > self.opts.max_state_bytes {
                shed(
                    prog,
                    &mut self.state.patterns,
                    self.opts.max_state_bytes,
                    &mut self.scratch,
                    &mut self.stats,
                );
            }
        }
    }

    /// Advances time to `now` (ns) without an event: closes every window that ends at or before
    /// it. A live source calls this when its partitions are idle.
    pub fn advance_to(&mut self, now: i64, out: &mut dyn Output) {
        self.advance_clocks(now, now, out);
    }

    /// Advances time without an event, each pattern by its own clock: event time for patterns
    /// with a `time` clause, arrival time for the others.
    pub fn advance_clocks(&mut self, event_time: i64, arrival: i64, out: &mut dyn Output) {
        self.refresh_tables();
        let prog = &*self.prog;
        for (pi, p) in prog.patterns.iter().enumerate() {
            let now = if p.event_time { event_time } else { arrival };
            fire_timers(
                p,
                prog,
                &mut self.state.patterns[pi],
                now,
                &mut self.scratch,
                &mut self.stats,
                out,
            );
        }
    }

    /// Forgets the partial matches of every key whose last event (of those that could change
    /// them, see [`KeyState::origin`]) came from one of `origins` (a source lost those inputs,
    /// e.g. Kafka partitions revoked by a rebalance; their new owner starts them again from its
    /// committed offsets). Returns the runs dropped.
    pub fn drop_origins(&mut self, origins: &[u32]) -> u64 {
        let mut dropped = 0;
        let mut freed = 0;
        for st in &mut self.state.patterns {
            st.keys.retain(|key, ks| {
                let keep = !origins.contains(&ks.origin);
                if !keep {
                    dropped += ks.runs.len() as u64;
                    freed += ks.held_bytes(key_bytes(key));
                }
                keep
            });
            // Timers of dropped keys find no key when they fire and are discarded then.
        }
        self.stats.dropped += dropped;
        self.stats.state_bytes -= freed;
        dropped
    }

    /// The end of the input: time passes every window, so partial matches time out and absences
    /// complete.
    pub fn finish(&mut self, out: &mut dyn Output) {
        let prog = &*self.prog;
        for (p, st) in prog.patterns.iter().zip(&mut self.state.patterns) {
            if closes_silently(p) {
                expire_all(st, &mut self.stats);
            }
        }
        self.advance_to(i64::MAX, out);
    }
}

/// Whether closing a window of `p` writes nothing: no `on timeout`, and no absence that a
/// window's close completes. Then only the count of timeouts tells that windows closed.
fn closes_silently(p: &CompiledPattern) -> bool {
    p.on_timeout.is_none() && p.nfa.states.iter().all(|s| s.kind != StateKind::Pending)
}

/// Closes every window of a pattern whose closes write nothing ([`closes_silently`]), as time
/// passing all of them would, without closing them one by one in time order: at the end of a
/// long replay, that order costs a timer and a key lookup per window for no output.
fn expire_all(st: &mut PatternState, stats: &mut EngineStats) {
    // The keys a timer would reach: those with a window to close. Each loses every run then,
    // runs without a window included, as `advance_key` closes them once time reaches the end.
    st.keys.retain(|key, ks| {
        if ks.next_close == i64::MAX {
            return true;
        }
        stats.timeouts += ks.runs.len() as u64;
        stats.state_bytes -= ks.held_bytes(key_bytes(key));
        false
    });
    st.timers.clear();
}

/// Brings the state of every key back under the total budget, once it is over: the keys that
/// hold the most lose their oldest partial matches, down to a common level (water filling),
/// until the total is an eighth below the budget. Keys of a few partial matches, nearly every
/// customer, keep theirs unless every key is as small; the hostile or heavy keys pay. Finding
/// the level is a pass over every key and a sort of their sizes, so it frees an eighth of the
/// budget at once rather than the few bytes over it: the pass then comes at most once per
/// eighth of the budget that the state grows, not once per event. Evicted partial matches write
/// nothing and are counted in [`EngineStats::evicted_total_bytes`].
#[cold]
#[inline(never)]
fn shed(
    prog: &Program,
    patterns: &mut [PatternState],
    budget: u64,
    scratch: &mut Scratch,
    stats: &mut EngineStats,
) {
    let target = budget - budget / 8;
    let Some(excess) = stats.state_bytes.checked_sub(target).filter(|e| *e > 0) else {
        return;
    };
    let held = &mut scratch.held;
    held.clear();
    for st in patterns.iter() {
        held.extend(st.keys.iter().map(|(k, ks)| ks.held_bytes(key_bytes(k))));
    }
    let level = water_level(held, excess);
    for (p, st) in prog.patterns.iter().zip(patterns.iter_mut()) {
        st.keys.rework(|key, ks| {
            let kb = key_bytes(key);
            let before = ks.held_bytes(kb);
            if before <= level {
                return;
            }
            let (n, _) = evict_oldest(&mut ks.runs, kb, u64::from(ks.bytes), level);
            ks.runs.drain(..n);
            settle_runs(p, ks);
            stats.state_bytes = stats.state_bytes + ks.held_bytes(kb) - before;
            stats.evicted += n as u64;
            stats.evicted_total_bytes += n as u64;
            log_eviction(&mut scratch.log, p, key, Limit::StateBytes, n, stats);
        });
    }
}

/// The level `c` such that cutting every value of `held` above `c` down to `c` removes at least
/// `excess` (which is at most their sum), and as little more as whole values allow: the water
/// level of [`shed`]. Sorts `held`, largest first.
fn water_level(held: &mut [u64], excess: u64) -> u64 {
    held.sort_unstable_by(|a, b| b.cmp(a));
    let mut sum = 0u64;
    for (i, &h) in held.iter().enumerate() {
        sum += h;
        let above = (i + 1) as u64;
        let next = held.get(i + 1).copied().unwrap_or(0);
        // Cutting the first `i + 1` down to `next` removes `sum - above * next`.
        if sum - above * next >= excess {
            return (sum - excess) / above;
        }
    }
    0
}

/// Puts the key's earliest window close in the timer queue, unless an earlier entry is there.
fn schedule(
    timers: &mut BinaryHeap<Reverse<Timer>>,
    timer_seq: &mut u64,
    ks: &mut KeyState,
    key: &Value,
) {
    if ks.next_close != i64::MAX && ks.next_close < ks.scheduled {
        ks.scheduled = ks.next_close;
        *timer_seq += 1;
        timers.push(Reverse(Timer {
            at: ks.next_close,
            seq: *timer_seq,
            key: key.clone(),
        }));
    }
}

fn fire_timers(
    p: &CompiledPattern,
    prog: &Program,
    st: &mut PatternState,
    now: i64,
    scratch: &mut Scratch,
    stats: &mut EngineStats,
    out: &mut dyn Output,
) {
    while let Some(Reverse(timer)) = st.timers.peek() {
        if timer.at > now {
            break;
        }
        let Reverse(Timer { at: t, key, .. }) = st.timers.pop().expect("peeked");
        let Some(mut found) = st.keys.lookup(keys::hash_key(&key), &key) else {
            continue;
        };
        let ks = found.state();
        if ks.scheduled == t {
            ks.scheduled = i64::MAX;
        }
        // Only the windows that close at this timer's time: a later one goes back in the queue,
        // so that windows of different keys close in time order even when time jumps past
        // several (at the end of the input, say).
        if ks.next_close <= t {
            advance_key(p, prog, ks, &key, t, scratch, stats, out);
        }
        if !ks.runs.is_empty() {
            schedule(&mut st.timers, &mut st.timer_seq, ks, &key);
        }
        found.settle();
    }
}

fn window_close(p: &CompiledPattern, r: &Run) -> i64 {
    match p.within {
        Some(w) => r.start_ts.saturating_add(w),
        None => i64::MAX,
    }
}

/// Closes the windows of one key that end at or before `now`, in the order they close: runs
/// time out, and runs waiting for an absence complete (pruning, by their skip strategy, runs whose
/// windows close later).
#[allow(clippy::too_many_arguments)]
fn advance_key(
    p: &CompiledPattern,
    prog: &Program,
    ks: &mut KeyState,
    key: &Value,
    now: i64,
    scratch: &mut Scratch,
    stats: &mut EngineStats,
    out: &mut dyn Output,
) {
    let kb = key_bytes(key);
    let held_before = ks.held_bytes(kb);
    loop {
        let close = ks.runs.iter().map(|r| window_close(p, r)).min();
        let Some(close) = close.filter(|c| *c <= now) else {
            break;
        };
        let mut expiring = std::mem::take(&mut scratch.matches);
        expiring.clear();
        let mut i = 0;
        while i < ks.runs.len() {
            if window_close(p, &ks.runs[i]) == close {
                expiring.push(ks.runs.remove(i));
            } else {
                i += 1;
            }
        }
        let ts = prog.unit.from_nanos(close);
        // Timeouts first, as Flink reports them before absences closing at the same instant.
        for r in expiring.iter() {
            if p.nfa.states[r.state as usize].kind == StateKind::Pending {
                continue;
            }
            stats.timeouts += 1;
            if let Some(spec) = &p.on_timeout {
                emit(
                    p,
                    spec,
                    key,
                    ts,
                    r.path.as_deref(),
                    true,
                    &mut scratch.emit,
                    out,
                );
            }
        }
        expiring.retain(|r| p.nfa.states[r.state as usize].kind == StateKind::Pending);
        if !expiring.is_empty() {
            let mut open: Vec<Run> = ks.runs.drain(..).collect();
            emit_matches(
                p,
                &mut expiring,
                &mut open,
                key,
                ts,
                &mut scratch.emit,
                stats,
                out,
            );
            ks.runs.extend(open);
        }
        scratch.matches = expiring;
    }
    settle_runs(p, ks);
    stats.state_bytes = stats.state_bytes + ks.held_bytes(kb) - held_before;
}

/// Recomputes, after runs left a key other than by [`process_key`], its earliest window close
/// and the bytes its runs hold.
fn settle_runs(p: &CompiledPattern, ks: &mut KeyState) {
    let mut close = i64::MAX;
    let mut bytes = 0u64;
    for r in &ks.runs {
        close = close.min(window_close(p, r));
        bytes += u64::from(r.bytes);
    }
    ks.next_close = close;
    // Fewer runs than the key held, which fit in 32 bits.
    ks.bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
}

/// Evaluates an edge condition against a run.
// HOT PATH: the usual conditions (a definition, its negation) without a recursive call.
#[inline(always)]
fn holds(c: &Cond, p: &CompiledPattern, cx: &EvalCtx<'_>, cache: &mut [u8]) -> bool {
    match c {
        Cond::True => true,
        Cond::Def(n) => def_holds(*n as usize, p, cx, cache),
        Cond::Not(a) if matches!(**a, Cond::Def(_)) => !holds_nested(a, p, cx, cache),
        _ => holds_nested(c, p, cx, cache),
    }
}

#[inline(always)]
fn def_holds(i: usize, p: &CompiledPattern, cx: &EvalCtx<'_>, cache: &mut [u8]) -> bool {
    // Past an undecided guard, the guard holds: only the residual is left to test.
    def_for_event(p, i, cx, cache)
        .unwrap_or_else(|| p.residuals[i].as_ref().unwrap_or(&p.conds[i]).test(cx))
}

/// [`holds`] for any shape.
fn holds_nested(c: &Cond, p: &CompiledPattern, cx: &EvalCtx<'_>, cache: &mut [u8]) -> bool {
    match c {
        Cond::True => true,
        Cond::Def(n) => def_holds(*n as usize, p, cx, cache),
        Cond::Not(a) => !holds_nested(a, p, cx, cache),
        Cond::And(a, b) => holds_nested(a, p, cx, cache) && holds_nested(b, p, cx, cache),
        Cond::Or(xs) => xs.iter().any(|x| holds_nested(x, p, cx, cache)),
    }
}

/// A test of the current event alone, computed once per event: `cache[slot]` is 0 before, then
/// 1 for false and 2 for true.
#[inline(always)]
fn cached(cache: &mut [u8], slot: usize, test: impl FnOnce() -> bool) -> bool {
    match cache[slot] {
        1 => false,
        2 => true,
        _ => {
            let r = test();
            cache[slot] = if r { 2 } else { 1 };
            r
        }
    }
}

/// Definition `i` on this event as far as the event alone decides it: its value where it reads
/// only the event, false where its event-local conjuncts (its guard) fail, `None` otherwise.
/// Each is computed once per event.
#[inline(always)]
fn def_for_event(
    p: &CompiledPattern,
    i: usize,
    cx: &EvalCtx<'_>,
    cache: &mut [u8],
) -> Option<bool> {
    let t = p.local_tests[i].as_ref()?;
    if p.event_local[i] {
        return Some(cached(cache, i, || t.test(cx)));
    }
    // The guard.
    if cached(cache, p.conds.len() + i, || t.test(cx)) {
        None
    } else {
        Some(false)
    }
}

/// What an edge condition is on this event as far as the event alone decides it: `None` where
/// it depends on the partial match (a condition reading earlier events whose event-local
/// conjuncts all hold).
// HOT PATH: the usual conditions without a recursive call, as in `holds`.
#[inline(always)]
fn holds_for_event(
    c: &Cond,
    p: &CompiledPattern,
    cx: &EvalCtx<'_>,
    cache: &mut [u8],
) -> Option<bool> {
    match c {
        Cond::True => Some(true),
        Cond::Def(n) => def_for_event(p, *n as usize, cx, cache),
        Cond::Not(a) if matches!(**a, Cond::Def(_)) => {
            holds_for_event_nested(a, p, cx, cache).map(|b| !b)
        }
        _ => holds_for_event_nested(c, p, cx, cache),
    }
}

/// [`holds_for_event`] for any shape.
fn holds_for_event_nested(
    c: &Cond,
    p: &CompiledPattern,
    cx: &EvalCtx<'_>,
    cache: &mut [u8],
) -> Option<bool> {
    match c {
        Cond::True => Some(true),
        Cond::Def(n) => def_for_event(p, *n as usize, cx, cache),
        Cond::Not(a) => holds_for_event_nested(a, p, cx, cache).map(|b| !b),
        Cond::And(a, b) => match holds_for_event_nested(a, p, cx, cache) {
            Some(false) => Some(false),
            a => match (a, holds_for_event_nested(b, p, cx, cache)) {
                (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
        },
        Cond::Or(xs) => {
            let mut all_false = true;
            for x in xs {
                match holds_for_event_nested(x, p, cx, cache) {
                    Some(true) => return Some(true),
                    Some(false) => {}
                    None => all_false = false,
                }
            }
            if all_false {
                Some(false)
            } else {
                None
            }
        }
    }
}

/// Whether the current event leaves every run in `state` as it is, decided from the event alone:
/// the walk [`process_key`] makes from the state, on the conditions [`holds_for_event`] settles,
/// ends in exactly one IGNORE edge back to the state. False where it cannot tell. A run in such a
/// state is passed over without reading its history.
fn quiet(p: &CompiledPattern, state: StateId, cx: &EvalCtx<'_>, cache: &mut [u8]) -> bool {
    let edges = &p.nfa.states[state as usize].edges;
    if !has_proceed(edges) {
        // The usual state: its own edges are the whole walk.
        let mut stays = false;
        for e in edges {
            match holds_for_event(&e.cond, p, cx, cache) {
                Some(false) => continue,
                None => return false,
                Some(true) => {}
            }
            match e.action {
                Action::Ignore if e.target == state && !stays => stays = true,
                _ => return false,
            }
        }
        return stays;
    }
    let mut stack = smallstack::Stack::new(state);
    let mut budget = walk_limit(p);
    let mut stays = false;
    while let Some(s) = stack.pop() {
        for e in &p.nfa.states[s as usize].edges {
            match holds_for_event(&e.cond, p, cx, cache) {
                Some(false) => continue,
                None => return false,
                Some(true) => {}
            }
            match e.action {
                Action::Proceed => {
                    if budget > 0 {
                        budget -= 1;
                        stack.push(e.target);
                    }
                }
                Action::Ignore if e.target == state && !stays => stays = true,
                Action::Ignore | Action::Take => return false,
            }
        }
    }
    stays
}

/// Whether the event, decided from itself alone, starts nothing: no TAKE or PROCEED edge of
/// the start state can hold (its IGNORE edges create nothing). The start state is then passed
/// over without its walk.
fn start_inert(p: &CompiledPattern, cx: &EvalCtx<'_>, cache: &mut [u8]) -> bool {
    p.nfa.states[p.nfa.start as usize].edges.iter().all(|e| {
        e.action == Action::Ignore || holds_for_event(&e.cond, p, cx, cache) == Some(false)
    })
}

#[inline]
fn has_proceed(edges: &[crate::compile::nfa::Edge]) -> bool {
    edges.iter().any(|e| e.action == Action::Proceed)
}

/// The per-event verdicts of [`quiet`], by state: `verdicts[s]` is `(epoch, quiet)`, current
/// when its epoch is this event's. An epoch instead of clearing, so that an event costs nothing
/// for the states none of its key's runs is in. Where the pattern has a [`VerdictTable`], the
/// table gives them instead.
#[derive(Default)]
struct QuietCache {
    epoch: u32,
    verdicts: Vec<(u32, bool)>,
    /// By pattern, where it has one.
    verdict_tables: Vec<Option<VerdictTable>>,
    /// The pattern the event is meeting.
    pattern: usize,
    primed: Primed,
}

/// How far the event's verdict is known from its pattern's [`VerdictTable`].
#[derive(Clone, Copy, Debug, Default)]
enum Primed {
    /// The pattern has no table, or the event has not been primed.
    #[default]
    No,
    /// The tests the start state reads have run, with this outcome: enough for `inert`.
    Start(usize),
    /// Every test has run.
    Full(Verdict),
}

/// What an event decides for a pattern from its event-local tests alone: whether it starts
/// nothing (see [`start_inert`]) and the states whose runs it leaves as they are (see
/// [`quiet`]; states from 31 on are never in the set).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Verdict {
    inert: bool,
    quiet: keys::StateSet,
}

/// A pattern's [`Verdict`] for every outcome of its event-local tests, computed when the engine
/// is built. An event then runs each test once and reads its verdict, instead of walking the
/// automaton's edges from the start and from each state its key's runs are in.
///
/// The tests the start state reads come first: whether an event starts anything is known from
/// them alone, and the others run only for an event whose key has runs.
struct VerdictTable {
    /// The event-local tests (a definition's whole condition or its guard) with the slot of the
    /// condition cache that keeps each one's outcome (see [`test_slot`]), by bit of the
    /// outcome: first the `start` ones that the start state's edges read.
    tests: Vec<(crate::compile::local::LocalTest, usize)>,
    start: usize,
    verdicts: Vec<Verdict>,
}

impl VerdictTable {
    /// The most tests a table covers: past that, the walks cost less than running every test.
    const MAX_TESTS: usize = 6;

    fn new(p: &CompiledPattern) -> Option<VerdictTable> {
        let mut read = Vec::new();
        for e in &p.nfa.states[p.nfa.start as usize].edges {
            cond_defs(&e.cond, &mut read);
        }
        let tested = |i: &usize| p.local_tests[*i].is_some();
        let (mut defs, rest): (Vec<usize>, Vec<usize>) = (0..p.conds.len())
            .filter(tested)
            .partition(|i| read.contains(i));
        let mut start = defs.len();
        defs.extend(rest);
        if defs.len() > Self::MAX_TESTS {
            return None;
        }
        // No test runs while the outcomes are laid in the cache, so the context needs no event.
        let key = Value::Null;
        let cx = EvalCtx {
            tables: &[],
            ev: None,
            ts: 0,
            key: &key,
            node: None,
            aggs: &p.aggs,
        };
        let mut cache = vec![0u8; 2 * p.conds.len()];
        let verdicts: Vec<Verdict> = (0..1usize << defs.len())
            .map(|outcome| {
                cache.fill(0);
                for (bit, &i) in defs.iter().enumerate() {
                    cache[test_slot(p, i)] = if outcome >> bit & 1 == 1 { 2 } else { 1 };
                }
                let states = p.nfa.states.len().min(31);
                let quiet = (0..states)
                    .filter(|&s| quiet(p, s as StateId, &cx, &mut cache))
                    .fold(0, |m, s| m | keys::state_bit(s as StateId));
                Verdict {
                    inert: start_inert(p, &cx, &mut cache),
                    quiet,
                }
            })
            .collect();
        // The start state's edges read only its tests, so the other bits never change `inert`;
        // checked rather than trusted, and every test runs first where it does not hold.
        let start_mask = (1usize << start) - 1;
        if (0..verdicts.len()).any(|o| verdicts[o].inert != verdicts[o & start_mask].inert) {
            start = defs.len();
        }
        let tests = defs
            .iter()
            .filter_map(|&i| Some((p.local_tests[i].clone()?, test_slot(p, i))))
            .collect();
        Some(VerdictTable {
            tests,
            start,
            verdicts,
        })
    }

    /// Runs tests `from..to` of the event, leaving their outcomes in `cache` for the
    /// conditions that read them later, and adds them to `outcome`.
    // HOT PATH: once per event and pattern.
    #[inline(always)]
    fn run(
        &self,
        (from, to): (usize, usize),
        mut outcome: usize,
        cx: &EvalCtx<'_>,
        cache: &mut [u8],
    ) -> usize {
        for (bit, (test, slot)) in self.tests[from..to].iter().enumerate() {
            let holds = test.test(cx);
            cache[*slot] = if holds { 2 } else { 1 };
            outcome |= (holds as usize) << (from + bit);
        }
        outcome
    }
}

/// The definitions a condition reads.
fn cond_defs(c: &Cond, out: &mut Vec<usize>) {
    match c {
        Cond::True => {}
        Cond::Def(n) => out.push(*n as usize),
        Cond::Not(a) => cond_defs(a, out),
        Cond::And(a, b) => {
            cond_defs(a, out);
            cond_defs(b, out);
        }
        Cond::Or(xs) => xs.iter().for_each(|x| cond_defs(x, out)),
    }
}

/// Where `cache` keeps the outcome of definition `i`'s event-local test: the definition's own
/// slot where the test is the whole condition, its guard's slot otherwise (see
/// [`def_for_event`]).
#[inline]
fn test_slot(p: &CompiledPattern, i: usize) -> usize {
    if p.event_local[i] {
        i
    } else {
        p.conds.len() + i
    }
}

impl QuietCache {
    /// Forgets every verdict: a new event (or pattern `pattern`) begins.
    #[inline]
    fn next_event(&mut self, pattern: usize, states: usize) {
        if self.verdicts.len() < states {
            self.verdicts.resize(states, (0, false));
        }
        self.pattern = pattern;
        self.primed = Primed::No;
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            // After 2^32 events an old verdict could look current again.
            self.verdicts.fill((0, false));
            self.epoch = 1;
        }
    }

    /// Runs the tests the start state reads, where the pattern has a table.
    #[inline]
    fn prime(&mut self, cx: &EvalCtx<'_>, cache: &mut [u8]) {
        if let Some(Some(t)) = self.verdict_tables.get(self.pattern) {
            self.primed = Primed::Start(t.run((0, t.start), 0, cx, cache));
        }
    }

    /// The event's whole verdict, where the pattern has a table: runs the tests not yet run.
    #[inline(always)]
    fn full(&mut self, cx: &EvalCtx<'_>, cache: &mut [u8]) -> Option<Verdict> {
        match self.primed {
            Primed::No => None,
            Primed::Full(v) => Some(v),
            Primed::Start(outcome) => self.complete(outcome, cx, cache),
        }
    }

    /// [`QuietCache::full`] the first time: runs the tests the start state does not read.
    fn complete(&mut self, outcome: usize, cx: &EvalCtx<'_>, cache: &mut [u8]) -> Option<Verdict> {
        let t = self.verdict_tables[self.pattern].as_ref()?;
        let outcome = t.run((t.start, t.tests.len()), outcome, cx, cache);
        let v = t.verdicts[outcome];
        self.primed = Primed::Full(v);
        Some(v)
    }

    #[inline]
    fn get(
        &mut self,
        p: &CompiledPattern,
        state: StateId,
        cx: &EvalCtx<'_>,
        cache: &mut [u8],
    ) -> bool {
        if state < 31 {
            if let Some(v) = self.full(cx, cache) {
                return v.quiet & keys::state_bit(state) != 0;
            }
        }
        let (epoch, verdict) = self.verdicts[state as usize];
        if epoch == self.epoch {
            return verdict;
        }
        let verdict = quiet(p, state, cx, cache);
        self.verdicts[state as usize] = (self.epoch, verdict);
        verdict
    }

    /// Whether the event starts nothing (see [`start_inert`]).
    #[inline]
    fn inert(&mut self, p: &CompiledPattern, cx: &EvalCtx<'_>, cache: &mut [u8]) -> bool {
        match self.primed {
            Primed::Start(outcome) => match &self.verdict_tables[self.pattern] {
                Some(t) => t.verdicts[outcome].inert,
                None => start_inert(p, cx, cache),
            },
            Primed::Full(v) => v.inert,
            Primed::No => start_inert(p, cx, cache),
        }
    }

    /// Whether the event leaves every run in the states of `states` as it is (see
    /// [`keys::StateSet`]: the shared bit of the states from 31 on is never quiet).
    #[inline]
    fn all(
        &mut self,
        p: &CompiledPattern,
        mut states: keys::StateSet,
        cx: &EvalCtx<'_>,
        cache: &mut [u8],
    ) -> bool {
        if let Some(v) = self.full(cx, cache) {
            return states & !v.quiet == 0;
        }
        while states != 0 {
            let s = states.trailing_zeros();
            if s == 31 || !self.get(p, s as StateId, cx, cache) {
                return false;
            }
            states &= states - 1;
        }
        true
    }
}

/// The most PROCEED steps followed from one state: bounds the walk even for automata with a
/// cycle of epsilon edges.
fn walk_limit(p: &CompiledPattern) -> usize {
    4 * p.nfa.states.len() + 8
}

/// Advances every run of one key by one event. Returns whether the key's runs changed.
// HOT PATH
#[allow(clippy::too_many_arguments)]
fn process_key(
    p: &CompiledPattern,
    prog: &Program,
    ks: &mut KeyState,
    key: &Value,
    ev: &Event,
    now: i64,
    opts: &EngineOptions,
    scratch: &mut Scratch,
    stats: &mut EngineStats,
    out: &mut dyn Output,
) -> bool {
    let nfa = &p.nfa;
    // Each buffer is borrowed where it lies: moving a `Vec` out and back every event costs a
    // store-forwarding stall when it is read again at once.
    let Scratch {
        stack,
        edges,
        new_runs,
        from_one,
        matches,
        cond_cache,
        quiet,
        emit: em,
        log,
        ..
    } = scratch;
    new_runs.clear();
    matches.clear();
    let ts_unit = prog.unit.from_nanos(now);
    let start = Run {
        state: nfa.start,
        bytes: RUN_BYTES,
        path: None,
        start_ts: 0,
        start_seq: 0,
    };
    // While every run stays as it is (the usual event: it advances nothing), the key's run list
    // is left untouched; from the first run that changes, the new list is built in `new_runs`.
    let mut changed = false;
    // Whether the start state alone changed anything: its new runs wait in `from_one`.
    let mut start_only = false;
    let nruns = ks.runs.len();
    // What the event alone decides reads no partial match.
    let event_only = EvalCtx {
        tables: &em.tables,
        ev: Some(ev),
        ts: ts_unit,
        key,
        node: None,
        aggs: &p.aggs,
    };
    for ri in 0..=nruns {
        let is_start = ri == nruns;
        let run: &Run = if is_start { &start } else { &ks.runs[ri] };
        if is_start {
            if quiet.inert(p, &event_only, cond_cache) {
                continue;
            }
        } else if quiet.get(p, run.state, &event_only, cond_cache) {
            if changed {
                new_runs.push(stays(ri));
            }
            continue;
        }
        let cx = EvalCtx {
            tables: &em.tables,
            ev: Some(ev),
            ts: ts_unit,
            key,
            node: run.path.as_deref(),
            aggs: &p.aggs,
        };
        // The decision graph: follow PROCEED edges, collect TAKE and IGNORE edges that hold.
        edges.clear();
        stack.clear();
        stack.push(run.state);
        let mut budget = walk_limit(p);
        while let Some(s) = stack.pop() {
            for e in &nfa.states[s as usize].edges {
                if is_start && e.action == Action::Ignore {
                    continue;
                }
                if !holds(&e.cond, p, &cx, cond_cache) {
                    continue;
                }
                match e.action {
                    Action::Proceed => {
                        if budget > 0 {
                            budget -= 1;
                            stack.push(e.target);
                        }
                    }
                    // IGNORE edges of the start state create nothing: a new start replaces it.
                    Action::Ignore if is_start => {}
                    Action::Ignore => edges.push((Action::Ignore, e.target, None)),
                    Action::Take => {
                        let bind = match &e.bind {
                            Bind::None => None,
                            Bind::One(n) => Some(*n),
                            Bind::FirstOf(alts) => alts
                                .iter()
                                .copied()
                                .find(|a| holds(&Cond::Def(*a), p, &cx, cond_cache))
                                .or(alts.first().copied()),
                        };
                        edges.push((Action::Take, e.target, bind))
                    }
                }
            }
        }
        if let [(Action::Ignore, target, _)] = edges[..] {
            if target == run.state {
                // The run stays as it is.
                if changed {
                    new_runs.push(stays(ri));
                }
                continue;
            }
        }
        if is_start && edges.is_empty() {
            continue;
        }
        if !changed && !is_start {
            changed = true;
            new_runs.extend((0..ri).map(stays));
        }
        if edges.is_empty() {
            continue;
        }
        from_one.clear();
        let mut discard = false;
        for &(action, target, bind) in edges.iter() {
            let kind = nfa.states[target as usize].kind;
            match action {
                Action::Ignore => {
                    if is_start {
                        continue;
                    }
                    let r = Run {
                        state: target,
                        bytes: run.bytes,
                        path: run.path.clone(),
                        start_ts: run.start_ts,
                        start_seq: run.start_seq,
                    };
                    if kind == StateKind::Final {
                        matches.push(r);
                    } else {
                        from_one.push(r);
                    }
                }
                Action::Take => {
                    if kind == StateKind::Stop {
                        discard = true;
                        continue;
                    }
                    let node = bind_event(p, run.path.as_ref(), bind.unwrap_or(0), ev, &event_only);
                    let (start_ts, start_seq) = if is_start {
                        (now, ev.seq)
                    } else {
                        (run.start_ts, run.start_seq)
                    };
                    let r = Run {
                        state: target,
                        bytes: run.bytes.saturating_add(node.bytes()),
                        path: Some(node),
                        start_ts,
                        start_seq,
                    };
                    if let Some(fin) = final_after_proceed(p, target, &cx, cond_cache) {
                        matches.push(Run {
                            state: fin,
                            ..r.clone()
                        });
                    }
                    if kind == StateKind::Final {
                        matches.push(r);
                    } else {
                        from_one.push(r);
                    }
                }
                Action::Proceed => unreachable!("proceed edges are followed, not collected"),
            }
        }
        if is_start && !changed {
            start_only = true;
            if discard {
                from_one.clear();
            }
        } else if !discard {
            new_runs.append(from_one);
        }
    }
    // What the key held before this event, for the engine's total.
    let kb = key_bytes(key);
    let held_before = ks.held_bytes(kb);
    if start_only {
        // The usual change, a new partial match and nothing else: appended in place, without
        // rebuilding the key's list.
        let added: u64 = from_one.iter().map(|r| u64::from(r.bytes)).sum();
        if matches.is_empty()
            && nruns + from_one.len() <= opts.max_runs_per_key
            && kb + u64::from(ks.bytes) + added <= opts.max_state_bytes_per_key
        {
            for r in from_one.drain(..) {
                ks.next_close = ks.next_close.min(window_close(p, &r));
                ks.runs.push(r);
            }
            // Within the per-key budget, so within 32 bits.
            ks.bytes += added as u32;
            stats.state_bytes = stats.state_bytes + ks.held_bytes(kb) - held_before;
            return true;
        }
        changed = true;
        new_runs.extend((0..nruns).map(stays));
        new_runs.append(from_one);
    }
    if !changed {
        return false;
    }
    // The runs that stay move into the new list: cloning them would write the reference count
    // of a bound event that this event did not otherwise touch, an atomic write to a line that is
    // usually not cached, which the CPU cannot overlap with anything.
    for r in new_runs.iter_mut() {
        if r.state == STAYS {
            *r = std::mem::replace(&mut ks.runs[r.start_seq as usize], stays(0));
        }
    }
    emit_matches(p, matches, new_runs, key, ts_unit, em, stats, out);
    if new_runs.len() > opts.max_runs_per_key {
        let excess = new_runs.len() - opts.max_runs_per_key;
        new_runs.sort_by_key(|r| r.start_seq);
        new_runs.drain(..excess);
        stats.evicted += excess as u64;
        log_eviction(log, p, key, Limit::RunsPerKey, excess, stats);
    }
    // One pass for the earliest window close and the bytes the runs hold.
    let (mut next_close, mut bytes) = (i64::MAX, 0u64);
    for r in new_runs.iter() {
        next_close = next_close.min(window_close(p, r));
        bytes += u64::from(r.bytes);
    }
    if !new_runs.is_empty() && kb + bytes > opts.max_state_bytes_per_key {
        let n;
        (n, bytes) = evict_oldest(new_runs, kb, bytes, opts.max_state_bytes_per_key);
        new_runs.drain(..n);
        stats.evicted += n as u64;
        stats.evicted_key_bytes += n as u64;
        log_eviction(log, p, key, Limit::StateBytesPerKey, n, stats);
        next_close = new_runs
            .iter()
            .map(|r| window_close(p, r))
            .min()
            .unwrap_or(i64::MAX);
    }
    ks.next_close = next_close;
    ks.runs.clear();
    ks.runs.extend(new_runs.drain(..));
    // Within the per-key budget (emptied otherwise), so within 32 bits.
    ks.bytes = bytes as u32;
    stats.state_bytes = stats.state_bytes + ks.held_bytes(kb) - held_before;
    true
}

/// Evicts the oldest of `runs` (by their first event) until the key, `key_bytes` with the
/// `bytes` the runs hold, fits in `budget`, or none is left: sorts them, oldest first, and
/// returns how many of the first to drop with the bytes left after.
fn evict_oldest(runs: &mut [Run], key_bytes: u64, mut bytes: u64, budget: u64) -> (usize, u64) {
    // Stable, so that runs of the same first event keep their order.
    runs.sort_by_key(|r| r.start_seq);
    let mut n = 0;
    while n < runs.len() && key_bytes + bytes > budget {
        bytes -= u64::from(runs[n].bytes);
        n += 1;
    }
    if n == runs.len() {
        bytes = 0;
    }
    (n, bytes)
}

/// Which limit evicted partial matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `max_runs_per_key`.
    RunsPerKey,
    /// `max_state_bytes_per_key`.
    StateBytesPerKey,
    /// `max_state_bytes`.
    StateBytes,
}

impl Limit {
    /// The name of the limit's setting, as logs and metrics give it.
    pub fn name(self) -> &'static str {
        match self {
            Limit::RunsPerKey => "max_runs_per_key",
            Limit::StateBytesPerKey => "max_state_bytes_per_key",
            Limit::StateBytes => "max_state_bytes",
        }
    }
}

/// How many evictions have been logged: the first hundred are, then one in ten thousand, so
/// that a key that keeps overflowing cannot flood the log (every eviction is counted).
#[derive(Default)]
struct EvictionLog {
    events: u64,
}

/// Logs (rate-limited, see [`EvictionLog`]) that `n` partial matches of `key` were evicted by
/// `limit`.
#[cold]
#[inline(never)]
fn log_eviction(
    log: &mut EvictionLog,
    p: &CompiledPattern,
    key: &Value,
    limit: Limit,
    n: usize,
    stats: &EngineStats,
) {
    log.events += 1;
    if log.events > 100 && log.events % 10_000 != 0 {
        return;
    }
    let mut json = Vec::new();
    key.write_json(&mut json);
    tracing::warn!(
        pattern = %p.name,
        key = %String::from_utf8_lossy(&json),
        limit = limit.name(),
        evicted = n,
        evicted_total = stats.evicted,
        state_bytes = stats.state_bytes,
        logged = log.events,
        "partial matches evicted"
    );
}

/// The node that binds `ev` to `name` after `prev`: the running aggregates folded on, and the
/// values `collect()` will read of it.
// HOT PATH: once per event bound.
#[inline(never)]
fn bind_event(
    p: &CompiledPattern,
    prev: Option<&Arc<PathNode>>,
    name: NameId,
    ev: &Event,
    event_only: &EvalCtx<'_>,
) -> Arc<PathNode> {
    // Sized once: a node with more values than fit inline gets one allocation, not one per
    // doubling as the values are pushed.
    let held = p.aggs.len() + p.captures.iter().filter(|(n, _)| *n == name).count();
    let mut vals = path::NodeValues::with_capacity(held);
    for (i, spec) in p.aggs.iter().enumerate() {
        let before = prev.and_then(|n| n.vals[i].as_ref());
        vals.push(if spec.name == name {
            // The values bound are the event's own.
            spec.fold(&before.cloned(), &spec.expr.eval(event_only))
        } else {
            before.cloned()
        });
    }
    for (n, e) in &p.captures {
        if *n == name {
            vals.push(Some(e.eval(event_only).into_owned()));
        }
    }
    Arc::new(PathNode {
        name,
        seq: ev.seq,
        prev: prev.cloned(),
        vals,
    })
}

/// Marks, in the list of runs being rebuilt, the place of run `index` of the key, which stays
/// as it is: it is moved there once the new list is complete. No automaton has this state
/// ([`crate::compile::nfa::MAX_STATES`] is far below it).
const STAYS: StateId = StateId::MAX;
const _: () = assert!(crate::compile::nfa::MAX_STATES < STAYS as usize);

#[inline]
fn stays(index: usize) -> Run {
    Run {
        state: STAYS,
        bytes: 0,
        path: None,
        start_ts: 0,
        start_seq: index as u64,
    }
}

/// The FINAL state reachable from `state` by PROCEED edges that hold for the event just taken.
fn final_after_proceed(
    p: &CompiledPattern,
    state: StateId,
    cx: &EvalCtx<'_>,
    cache: &mut [u8],
) -> Option<StateId> {
    if !has_proceed(&p.nfa.states[state as usize].edges) {
        return None;
    }
    let mut stack: smallstack::Stack = smallstack::Stack::new(state);
    let mut budget = walk_limit(p);
    while let Some(s) = stack.pop() {
        for e in &p.nfa.states[s as usize].edges {
            if e.action == Action::Proceed && holds(&e.cond, p, cx, cache) {
                if p.nfa.states[e.target as usize].kind == StateKind::Final {
                    return Some(e.target);
                }
                if budget == 0 {
                    return None;
                }
                budget -= 1;
                stack.push(e.target);
            }
        }
    }
    None
}

mod smallstack {
    use crate::compile::nfa::StateId;
    /// A stack that stays on the machine stack for the usual few entries.
    pub struct Stack {
        inline: [StateId; 8],
        len: usize,
        spill: Vec<StateId>,
    }
    impl Stack {
        pub fn new(first: StateId) -> Self {
            Stack {
                inline: [first; 8],
                len: 1,
                spill: Vec::new(),
            }
        }
        pub fn push(&mut self, s: StateId) {
            if self.len < 8 {
                self.inline[self.len] = s;
                self.len += 1;
            } else {
                self.spill.push(s);
            }
        }
        pub fn pop(&mut self) -> Option<StateId> {
            if let Some(s) = self.spill.pop() {
                return Some(s);
            }
            if self.len == 0 {
                return None;
            }
            self.len -= 1;
            Some(self.inline[self.len])
        }
    }
}

/// The positions and names of a match's events, in time order.
fn tie_key(r: &Run) -> Vec<(u64, NameId)> {
    let mut v = Vec::new();
    let mut n = r.path.as_deref();
    while let Some(x) = n {
        v.push((x.seq, x.name));
        n = x.prev.as_deref();
    }
    v.reverse();
    v
}

/// The order in which matches completing on one event are emitted: their events' positions
/// compared one by one in time order, then the names they are bound to.
///
/// A match's first event is the one that started it, so its position is `start_seq`: matches
/// that started on different events (nearly every tie) are ordered without reading their
/// history, which is usually no longer in the cache.
fn tie_order(a: &Run, b: &Run) -> std::cmp::Ordering {
    a.start_seq.cmp(&b.start_seq).then_with(|| {
        let (ka, kb) = (tie_key(a), tie_key(b));
        let seqs = ka.iter().map(|x| x.0).cmp(kb.iter().map(|x| x.0));
        seqs.then_with(|| ka.iter().map(|x| x.1).cmp(kb.iter().map(|x| x.1)))
    })
}

/// Emits the matches that completed together, in the tie order, applying each one's skip
/// strategy to the open runs (and to the matches not yet emitted) before the next.
#[allow(clippy::too_many_arguments)]
fn emit_matches(
    p: &CompiledPattern,
    matches: &mut Vec<Run>,
    open: &mut Vec<Run>,
    key: &Value,
    ts: i64,
    em: &mut EmitScratch,
    stats: &mut EngineStats,
    out: &mut dyn Output,
) {
    if matches.is_empty() {
        return;
    }
    matches.sort_by(tie_order);
    let mut i = 0;
    while i < matches.len() {
        let m = &matches[i];
        i += 1;
        stats.matches += 1;
        emit(p, &p.emit, key, ts, m.path.as_deref(), false, em, out);
        let Some(prune) = pruning(p.skip, m) else {
            continue;
        };
        open.retain(|r| !prune.drops(r.start_seq));
        let mut j = i;
        while j < matches.len() {
            if prune.drops(matches[j].start_seq) {
                matches.remove(j);
            } else {
                j += 1;
            }
        }
    }
    matches.clear();
}

/// Which runs a match's skip strategy drops, by their first event's position.
#[derive(Clone, Copy)]
enum Prune {
    /// Started at or before this position.
    AtOrBefore(u64),
    /// Started exactly at this position.
    At(u64),
    /// Started before this position.
    Before(u64),
}

impl Prune {
    fn drops(self, start: u64) -> bool {
        match self {
            Prune::AtOrBefore(x) => start <= x,
            Prune::At(x) => start == x,
            Prune::Before(x) => start < x,
        }
    }
}

fn pruning(skip: SkipStrategy, m: &Run) -> Option<Prune> {
    let last = m.path.as_deref()?;
    let bound = || std::iter::successors(Some(last), |n| n.prev.as_deref());
    let of = |name: NameId| bound().filter(move |x| x.name == name).map(|x| x.seq);
    match skip {
        SkipStrategy::None => None,
        // Events are bound in input order: the last node holds the match's latest event.
        SkipStrategy::PastLast => Some(Prune::AtOrBefore(last.seq)),
        SkipStrategy::ToNext => bound().map(|x| x.seq).min().map(Prune::At),
        SkipStrategy::ToFirst(n) => of(n).min().map(Prune::Before),
        SkipStrategy::ToLast(n) => of(n).max().map(Prune::Before),
    }
}

#[allow(clippy::too_many_arguments)]
fn emit(
    p: &CompiledPattern,
    spec: &EmitSpec,
    key: &Value,
    ts: i64,
    path: Option<&PathNode>,
    timeout: bool,
    em: &mut EmitScratch,
    out: &mut dyn Output,
) {
    let cx = EvalCtx {
        tables: &em.tables,
        ev: None,
        ts,
        key,
        node: path,
        aggs: &p.aggs,
    };
    em.values.clear();
    for (_, e) in &spec.fields {
        em.values.push(e.eval(&cx).into_owned());
    }
    out.record(&Record {
        pattern: &p.name,
        sink: &spec.sink,
        key,
        ts,
        timeout,
        names: &spec.fields,
        values: &em.values,
        json: &spec.json,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{compile, CompileOptions, Source};

    /// The context in which a condition sees `ev` alone, without a partial match.
    fn event_alone<'a>(ev: &'a Event, p: &'a CompiledPattern) -> EvalCtx<'a> {
        static NULL: Value = Value::Null;
        EvalCtx {
            tables: &[],
            ev: Some(ev),
            ts: 0,
            key: &NULL,
            node: None,
            aggs: &p.aggs,
        }
    }

    /// `quiet` lets a run be passed over only where the event alone settles every edge of its
    /// state; a condition that reads the run's history, with its event-local part holding, must
    /// send the run through the full walk.
    #[test]
    fn quiet_states_are_those_the_event_alone_settles() {
        let text = "pattern p\n  from events\n  key user\n  time ts\n  within 1h\n  match d -> w\n  define\n    d = (type == \"deposit\")\n    w = (type == \"withdrawal\" and amount >= d.amount)\n  emit out { user: key }\n";
        let prog = compile(
            &[Source {
                file: "q.cep",
                text,
            }],
            &CompileOptions::default(),
        )
        .unwrap();
        let p = &prog.patterns[0];
        let slot = |f: &str| prog.fields.iter().position(|x| x == &[f]).unwrap();
        // The state waiting for `w`: the target of the start's TAKE edge.
        let start = &p.nfa.states[p.nfa.start as usize];
        let waiting = start
            .edges
            .iter()
            .find(|e| e.action == Action::Take)
            .unwrap()
            .target;
        let verdict = |kind: &str, state: StateId| {
            let mut ev = Event::with_slots(prog.fields.len());
            ev.slots[slot("type")] = Value::from(kind);
            ev.slots[slot("amount")] = Value::Int(10);
            let cx = event_alone(&ev, p);
            let mut cache = vec![0u8; 2 * p.conds.len()];
            quiet(p, state, &cx, &mut cache)
        };
        // A bet cannot be `w`: the run stays, whatever its deposit was.
        assert!(verdict("bet", waiting));
        // A withdrawal may be `w`, depending on the deposit: the run must be looked at.
        assert!(!verdict("withdrawal", waiting));
        // A deposit is taken from the start state: a change, not quiet.
        assert!(!verdict("deposit", p.nfa.start));
    }

    /// A pattern's verdict table gives, for every event, what the walks give: whether the event
    /// starts nothing and which states it leaves alone. Shapes: a guard with a residual, strict
    /// contiguity, negation, a loop, and a start that reads two definitions (an alternation).
    #[test]
    fn verdict_tables_agree_with_the_walks() {
        let shapes = [
            "match d -> b -> w",
            "match d b w",
            "match d -> !b -> w",
            "match d -> b+ -> w",
            "match (d | b) -> w",
            "match d -> b{2,3}? -> w",
        ];
        for shape in shapes {
            let text = format!(
                "pattern p\n  from events\n  key user\n  time ts\n  within 1h\n  {shape}\n  define\n    d = (type == \"deposit\" and amount >= 20)\n    b = (type == \"bet\" and stake >= 10)\n    w = (type == \"withdrawal\" and amount >= d.amount * 0.5)\n  emit out {{ user: key }}\n"
            );
            let prog = compile(
                &[Source {
                    file: "v.cep",
                    text: &text,
                }],
                &CompileOptions::default(),
            )
            .unwrap_or_else(|e| panic!("{shape}: {e}"));
            let p = &prog.patterns[0];
            let table = VerdictTable::new(p).expect("three tests fit a table");
            let slot = |f: &str| prog.fields.iter().position(|x| x == &[f]).unwrap();
            let mut cache = QuietCache {
                verdict_tables: vec![Some(table)],
                ..QuietCache::default()
            };
            for kind in ["deposit", "bet", "withdrawal", "casino"] {
                for amount in [Value::Null, Value::Int(5), Value::Int(25), Value::from("x")] {
                    let mut ev = Event::with_slots(prog.fields.len());
                    ev.slots[slot("type")] = Value::from(kind);
                    ev.slots[slot("amount")] = amount.clone();
                    ev.slots[slot("stake")] = amount.clone();
                    let cx = event_alone(&ev, p);
                    let what = format!("{shape}, {kind} {amount:?}");
                    let mut walked = vec![0u8; 2 * p.conds.len()];
                    let mut tabled = vec![0u8; 2 * p.conds.len()];
                    cache.next_event(0, p.nfa.states.len());
                    cache.prime(&cx, &mut tabled);
                    assert_eq!(
                        cache.inert(p, &cx, &mut tabled),
                        start_inert(p, &cx, &mut walked),
                        "{what}: start"
                    );
                    for s in 0..p.nfa.states.len() as StateId {
                        assert_eq!(
                            cache.get(p, s, &cx, &mut tabled),
                            quiet(p, s, &cx, &mut walked),
                            "{what}: state {s}"
                        );
                    }
                    assert!(matches!(cache.primed, Primed::Full(_)), "{what}");
                }
            }
        }
    }

    /// The water level cuts the largest values first, down to a common level, removing at
    /// least what is asked and as little more as whole values allow.
    #[test]
    fn the_water_level_cuts_the_largest_first() {
        let cut = |held: &[u64], excess: u64| {
            let mut v = held.to_vec();
            let level = water_level(&mut v, excess);
            let removed: u64 = held.iter().map(|h| h.saturating_sub(level)).sum();
            assert!(removed >= excess, "{held:?} {excess}: level {level}");
            level
        };
        assert_eq!(cut(&[1, 10, 1], 5), 5);
        assert_eq!(cut(&[10, 1, 8], 5), 6);
        assert_eq!(cut(&[3, 3, 3], 9), 0);
        assert_eq!(cut(&[3, 3, 3], 1), 2);
        assert_eq!(cut(&[100, 2, 2, 2], 98), 2);
        assert_eq!(cut(&[100, 2, 2, 2], 99), 1);
    }

    /// Eviction takes the runs that started first, until what is left fits.
    #[test]
    fn evict_oldest_takes_the_runs_that_started_first() {
        let run = |start_seq: u64, bytes: u32| Run {
            state: 0,
            bytes,
            path: None,
            start_ts: 0,
            start_seq,
        };
        let mut runs = vec![run(5, 10), run(2, 30), run(9, 10), run(2, 5)];
        // 55 bytes and 5 for the key: a budget of 30 drops the oldest run, one of 29 both runs
        // of position 2, in their order.
        assert_eq!(evict_oldest(&mut runs, 5, 55, 30), (1, 25));
        assert_eq!(evict_oldest(&mut runs, 5, 55, 29), (2, 20));
        let order: Vec<(u64, u32)> = runs.iter().map(|r| (r.start_seq, r.bytes)).collect();
        assert_eq!(order, [(2, 30), (2, 5), (5, 10), (9, 10)]);
        // A budget below the key's own bytes leaves nothing.
        assert_eq!(evict_oldest(&mut runs, 5, 55, 4), (4, 0));
        // Within the budget, nothing goes.
        assert_eq!(evict_oldest(&mut runs, 5, 55, 60), (0, 55));
    }

    /// The costs the budgets count, as docs/patterns.md and docs/config.md give them: a key of
    /// 185 bytes and its length past 22, a bound event of 120 bytes with up to three values
    /// and 24 more for each value past that (spilled, the values all move to the heap).
    #[test]
    fn the_counted_costs_are_those_documented() {
        assert_eq!(key_bytes(&Value::from("u-1")), 185);
        let long = "a key longer than fits inline: 40 bytes";
        assert_eq!(key_bytes(&Value::from(long)), 185 + 16 + long.len() as u64);
        let node = |n: usize| PathNode {
            name: 0,
            seq: 1,
            prev: None,
            vals: {
                // Sized as `bind_event` sizes it: the capacity is what is counted.
                let mut v = path::NodeValues::with_capacity(n);
                v.extend((0..n).map(|i| Some(Value::Int(i as i64))));
                v
            },
        };
        assert_eq!(node(3).bytes(), 120);
        assert_eq!(node(11).bytes(), 120 + 11 * 24);
        let text = PathNode {
            name: 0,
            seq: 1,
            prev: None,
            vals: std::iter::once(Some(Value::from(long))).collect(),
        };
        assert_eq!(text.bytes(), 120 + 16 + long.len() as u32);
        assert_eq!(RUN_BYTES, 32);
    }

    /// The memory a partial match costs is part of the engine's contract (see BENCHMARKS.md):
    /// a run is a state, a pointer and its start; a bound event is one shared node.
    #[test]
    fn state_structures_stay_compact() {
        assert_eq!(std::mem::size_of::<Run>(), 32);
        assert!(
            std::mem::size_of::<PathNode>() <= 128,
            "{}",
            std::mem::size_of::<PathNode>()
        );
        assert!(
            std::mem::size_of::<KeyState>() <= 96,
            "{}",
            std::mem::size_of::<KeyState>()
        );
        assert_eq!(std::mem::size_of::<Value>(), 24);
    }
}
