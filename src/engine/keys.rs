//! The keys of one pattern with their partial matches, behind an index small enough to stay in
//! the cache.
//!
//! Most events change nothing: a bet for a customer whose partial matches all wait for a
//! withdrawal, say. What such an event does to a run depends only on the run's state and the
//! event (see `quiet` in the engine), so the index keeps, beside each key's hash, the set of
//! states its runs are in. The engine asks the index whether any run of the key could change
//! and passes over the key's entry, and the cache miss of reading it, when none could.
//!
//! The index is 16 bytes a key; the entries, with the keys themselves and their runs, live in a
//! dense vector beside it.

use super::{KeyState, Run};
use crate::compile::nfa::StateId;
use crate::event::Value;
use hashbrown::hash_table::HashTable;
use std::hash::BuildHasher;

/// The hash of a key, as the index and the sharding use it.
#[inline]
pub fn hash_key(key: &Value) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(key)
}

/// The states of the runs of a key, one bit each: state `s` is bit `s`, and the states from 31
/// on share bit 31, which no test of quietness passes.
pub type StateSet = u32;

/// The bit of state `s` in a [`StateSet`].
#[inline]
pub fn state_bit(s: StateId) -> StateSet {
    1 << (s as u32).min(31)
}

/// What a key costs in the key map, besides its state's heap: its entry, its index slot and the
/// index's control byte for it.
pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry>() + std::mem::size_of::<Slot>() + 1;

/// The states `runs` are in.
#[inline]
pub fn states_of(runs: &[Run]) -> StateSet {
    runs.iter().fold(0, |m, r| m | state_bit(r.state))
}

/// An index entry: enough to decide, without reading the key's entry, that an event leaves the
/// key alone.
#[derive(Clone, Copy, Debug)]
struct Slot {
    hash: u64,
    states: StateSet,
    /// Where the key's entry is in [`KeyMap::entries`].
    id: u32,
}

#[derive(Clone, Debug)]
struct Entry {
    key: Value,
    /// The key's hash, to find its slot when the entry moves.
    hash: u64,
    state: KeyState,
}

/// The keys of a pattern that have partial matches open, and their state.
#[derive(Clone, Debug, Default)]
pub struct KeyMap {
    index: HashTable<Slot>,
    entries: Vec<Entry>,
}

impl KeyMap {
    /// Keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every key with its state, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Value, &KeyState)> {
        self.entries.iter().map(|e| (&e.key, &e.state))
    }

    /// Every key's state.
    pub fn values(&self) -> impl Iterator<Item = &KeyState> {
        self.entries.iter().map(|e| &e.state)
    }

    /// The key `key`, whose hash is `hash`, where it has runs in states for which `changes`
    /// holds; `None` where it has none (or no state at all): an event that changes no run in
    /// those states, and starts none, then leaves the key as it is. Reads the key's entry only
    /// where the index finds such runs.
    // HOT PATH: once per event that starts nothing.
    #[inline]
    pub fn find_changing(
        &mut self,
        hash: u64,
        key: &Value,
        mut changes: impl FnMut(StateSet) -> bool,
    ) -> Option<Found<'_>> {
        let id = self
            .index
            .find(hash, |s| s.hash == hash && changes(s.states))?
            .id;
        if self.entries[id as usize].key == *key {
            return Some(Found {
                id,
                hash,
                map: self,
            });
        }
        // Another key of the same hash: look for this one by its key.
        self.find(hash, key, changes)
    }

    /// The key `key`, whose hash is `hash`, if it has state.
    // HOT PATH
    #[inline]
    pub fn lookup(&mut self, hash: u64, key: &Value) -> Option<Found<'_>> {
        self.find(hash, key, |_| true)
    }

    /// The key `key`, whose hash is `hash`, if it has state and its runs' states pass `states`.
    #[inline]
    fn find(
        &mut self,
        hash: u64,
        key: &Value,
        mut states: impl FnMut(StateSet) -> bool,
    ) -> Option<Found<'_>> {
        let entries = &self.entries;
        let id = self
            .index
            .find(hash, |s| {
                s.hash == hash && entries[s.id as usize].key == *key && states(s.states)
            })?
            .id;
        Some(Found {
            id,
            hash,
            map: self,
        })
    }

    /// Adds `key` with its first runs; the key must not be held.
    pub fn insert(&mut self, hash: u64, key: Value, state: KeyState) {
        let id = u32::try_from(self.entries.len()).expect("fewer than 2^32 keys");
        let slot = Slot {
            hash,
            states: states_of(&state.runs),
            id,
        };
        self.entries.push(Entry { key, hash, state });
        self.index.insert_unique(hash, slot, |s| s.hash);
    }

    /// Keeps only the keys for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&Value, &KeyState) -> bool) {
        let before = self.entries.len();
        self.entries.retain(|e| keep(&e.key, &e.state));
        if self.entries.len() != before {
            self.reindex();
        }
    }

    /// Lets `change` alter every key's state, then removes the keys left without runs and
    /// builds the index again: a pass over every key, for what is rare (state restored, the
    /// total memory budget exceeded).
    pub fn rework(&mut self, mut change: impl FnMut(&Value, &mut KeyState)) {
        for e in &mut self.entries {
            change(&e.key, &mut e.state);
        }
        self.entries.retain(|e| !e.state.runs.is_empty());
        self.reindex();
    }

    /// Builds the index again from the entries.
    fn reindex(&mut self) {
        self.index.clear();
        for (id, e) in self.entries.iter().enumerate() {
            let slot = Slot {
                hash: e.hash,
                states: states_of(&e.state.runs),
                id: id as u32,
            };
            self.index.insert_unique(e.hash, slot, |s| s.hash);
        }
    }
}

impl FromIterator<(Value, KeyState)> for KeyMap {
    fn from_iter<I: IntoIterator<Item = (Value, KeyState)>>(iter: I) -> Self {
        let mut m = KeyMap::default();
        for (key, state) in iter {
            let hash = hash_key(&key);
            // A repeated key (only in a hand-made state) keeps its last state, as a map would.
            match m.lookup(hash, &key) {
                Some(mut found) => {
                    *found.state() = state;
                    found.settle();
                }
                None => m.insert(hash, key, state),
            }
        }
        m
    }
}

/// A key found in a [`KeyMap`]: its state, to change, then [`Found::settle`] to record what the
/// change left.
pub struct Found<'a> {
    id: u32,
    hash: u64,
    map: &'a mut KeyMap,
}

impl Found<'_> {
    #[inline]
    pub fn state(&mut self) -> &mut KeyState {
        &mut self.map.entries[self.id as usize].state
    }

    /// Records the states of the key's runs in the index, or removes the key if it has none
    /// left. Needed only where the runs changed.
    #[inline]
    pub fn settle(self) {
        let Found { id, hash, map } = self;
        let KeyMap { index, entries } = map;
        let runs = &entries[id as usize].state.runs;
        if !runs.is_empty() {
            if let Some(slot) = index.find_mut(hash, |s| s.id == id) {
                slot.states = states_of(runs);
            }
            return;
        }
        if let Ok(slot) = index.find_entry(hash, |s| s.id == id) {
            slot.remove();
        }
        entries.swap_remove(id as usize);
        // The last entry moved into the gap: its slot follows it.
        if let Some(moved) = entries.get(id as usize) {
            let from = entries.len() as u32;
            if let Some(slot) = index.find_mut(moved.hash, |s| s.id == from) {
                slot.id = id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Text;

    fn state(states: &[StateId]) -> KeyState {
        let mut ks = KeyState::default();
        for &s in states {
            ks.runs.push(Run {
                state: s,
                bytes: 0,
                path: None,
                start_ts: 0,
                start_seq: 0,
            });
        }
        ks
    }

    fn key(i: usize) -> Value {
        Value::Str(Text::from(format!("u{i:06}").as_str()))
    }

    fn states(m: &mut KeyMap, k: &Value) -> Option<Vec<StateId>> {
        let mut f = m.lookup(hash_key(k), k)?;
        Some(f.state().runs.iter().map(|r| r.state).collect())
    }

    #[test]
    fn removing_keys_keeps_the_others_reachable() {
        let mut m = KeyMap::default();
        for i in 0..1000 {
            let k = key(i);
            m.insert(hash_key(&k), k, state(&[(i % 7) as StateId]));
        }
        // Emptied keys leave, in an order that moves entries from the end into every gap.
        for i in (0..1000).filter(|i| i % 3 == 0) {
            let k = key(i);
            let mut f = m.lookup(hash_key(&k), &k).expect("held");
            f.state().runs.clear();
            f.settle();
        }
        assert_eq!(m.len(), 1000 - 334);
        for i in 0..1000 {
            let want = (i % 3 != 0).then(|| vec![(i % 7) as StateId]);
            assert_eq!(states(&mut m, &key(i)), want, "key {i}");
        }
    }

    #[test]
    fn the_index_follows_the_states_of_the_runs() {
        let mut m = KeyMap::default();
        let k = key(1);
        let h = hash_key(&k);
        let changing = |m: &mut KeyMap, k: &Value, s: StateId| {
            m.find_changing(hash_key(k), k, |set| set & state_bit(s) != 0)
                .is_some()
        };
        m.insert(h, k.clone(), state(&[2]));
        assert!(changing(&mut m, &k, 2));
        assert!(!changing(&mut m, &k, 3));
        let mut f = m.lookup(h, &k).unwrap();
        f.state().runs[0].state = 3;
        f.state().runs.push(state(&[40]).runs[0].clone());
        f.settle();
        assert!(!changing(&mut m, &k, 2));
        assert!(changing(&mut m, &k, 3));
        // States past 30 share the last bit.
        assert!(changing(&mut m, &k, 31));
        // A key not held has nothing to change.
        assert!(!changing(&mut m, &key(2), 3));
    }

    /// The index stays small enough for the cache (see BENCHMARKS.md, Memory).
    #[test]
    fn index_slots_and_entries_stay_compact() {
        assert_eq!(std::mem::size_of::<Slot>(), 16);
        assert_eq!(std::mem::size_of::<Entry>(), 128);
    }

    /// Keys whose hashes collide are told apart by the key itself.
    #[test]
    fn a_key_is_found_past_another_of_the_same_hash() {
        let mut m = KeyMap::default();
        let (a, b) = (key(1), key(2));
        // Both under one hash, as two keys whose hashes collide would be.
        m.insert(7, a.clone(), state(&[2]));
        m.insert(7, b.clone(), state(&[3]));
        let states = |m: &mut KeyMap, k: &Value, s: StateId| {
            let mut f = m.find_changing(7, k, |set| set & state_bit(s) != 0)?;
            Some(f.state().runs[0].state)
        };
        assert_eq!(states(&mut m, &a, 2), Some(2));
        // The index finds `a`'s slot first for either state set; `b` is found by its key.
        assert_eq!(states(&mut m, &b, 2), None);
        assert_eq!(states(&mut m, &b, 3), Some(3));
        assert_eq!(
            m.lookup(7, &b).map(|mut f| f.state().runs[0].state),
            Some(3)
        );
    }

    #[test]
    fn retain_and_collect_rebuild_the_index() {
        let mut m: KeyMap = (0..100).map(|i| (key(i), state(&[1]))).collect();
        m.retain(|k, _| matches!(k, Value::Str(s) if s.ends_with('0')));
        assert_eq!(m.len(), 10);
        assert!(states(&mut m, &key(30)).is_some());
        assert!(states(&mut m, &key(31)).is_none());
        let again: KeyMap = m.iter().map(|(k, s)| (k.clone(), s.clone())).collect();
        assert_eq!(again.len(), 10);
    }
}
