//! Partial matches share their history: each run points at the last node of a persistent list of
//! bound events, so branching a run costs one reference count, not a copy.

use crate::compile::expr::NameId;
use crate::event::Value;
use serde::de::Error as _;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;
use std::sync::Arc;

/// The values a node keeps, inline for the usual few.
pub type NodeValues = SmallVec<[Option<Value>; 3]>;

/// What one node costs in the state budgets before its values: the node itself with the two
/// reference counts its `Arc` allocation carries.
const NODE_BYTES: usize = std::mem::size_of::<PathNode>() + 2 * std::mem::size_of::<usize>();

/// The reference counts of a shared allocation (`Arc`).
const COUNTS: usize = 2 * std::mem::size_of::<usize>();

/// The bytes a value keeps on the heap beyond its own 24: a string longer than fits inline
/// (with its shared allocation's reference counts), a list with its items.
// HOT PATH: once per value bound; the usual scalar costs a test of its tag.
#[inline]
pub fn value_heap_bytes(v: &Value) -> usize {
    match v {
        Value::Str(t) if t.is_heap_allocated() => COUNTS + t.len(),
        Value::List(items) => list_heap_bytes(items),
        _ => 0,
    }
}

/// [`value_heap_bytes`] of a list, apart so that the usual scalar case inlines.
#[inline(never)]
fn list_heap_bytes(items: &[Value]) -> usize {
    COUNTS + std::mem::size_of_val(items) + items.iter().map(value_heap_bytes).sum::<usize>()
}

/// One event bound to a name. The event itself is not kept: only what later expressions read of
/// it, computed when it was bound: the running aggregates of the partial match up to it, and the
/// values that `collect()` gathers from events of its name.
///
/// A node serializes as its whole history, a flat list of its events from this one back to the
/// first (see the `Serialize` impl).
#[derive(Debug)]
pub struct PathNode {
    pub name: NameId,
    /// Input position of the event.
    pub seq: u64,
    pub prev: Option<Arc<PathNode>>,
    /// First the running aggregates, by index of [`crate::compile::expr::AggSpec`] (`None` where
    /// the name has bound nothing yet); then the captures of this node's name, by index of
    /// [`crate::compile::CompiledPattern::captures`] among those of the name.
    pub vals: NodeValues,
}

impl PathNode {
    /// The bytes this node accounts for in the state budgets (see [`crate::engine`], "Memory
    /// budgets"): the node, its values past the inline ones, and what they keep on the heap. A
    /// value shared with other nodes (a string carried on by `min`, say) is counted in each,
    /// so the figure is an upper bound of what the node adds.
    // HOT PATH: once per event bound, over the few values the node holds.
    #[inline]
    pub fn bytes(&self) -> u32 {
        let spilled = if self.vals.spilled() {
            self.vals.capacity() * std::mem::size_of::<Option<Value>>()
        } else {
            0
        };
        let heap: usize = self.vals.iter().flatten().map(value_heap_bytes).sum();
        u32::try_from(NODE_BYTES + spilled + heap).unwrap_or(u32::MAX)
    }

    /// The bytes of the whole history that ends at `last`: what a partial match pointing at it
    /// accounts for, shared nodes included once per partial match. Walks the list: for state
    /// read back from a snapshot, not for the hot path.
    pub fn history_bytes(last: Option<&PathNode>) -> u64 {
        std::iter::successors(last, |n| n.prev.as_deref())
            .map(|n| u64::from(n.bytes()))
            .sum()
    }
}

/// One node of a serialized history: its name, input position and values.
type FlatNode = (NameId, u64, NodeValues);

/// A history serializes as a flat list, newest event first, not as nested nodes: a partial match
/// may bind tens of thousands of events (a loop, within its key's memory budget), and a nested
/// form would take a stack frame per event to write and to read back.
impl Serialize for PathNode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let history = || std::iter::successors(Some(self), |n| n.prev.as_deref());
        let mut seq = s.serialize_seq(Some(history().count()))?;
        for n in history() {
            seq.serialize_element(&(n.name, n.seq, &n.vals))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for PathNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PathNode, D::Error> {
        let mut flat = Vec::<FlatNode>::deserialize(d)?.into_iter();
        let (name, seq, vals) = flat
            .next()
            .ok_or_else(|| D::Error::custom("a partial match's history has no event"))?;
        // The oldest first, each the `prev` of the next; the newest is returned bare.
        let mut prev = None;
        for (name, seq, vals) in flat.rev() {
            prev = Some(Arc::new(PathNode {
                name,
                seq,
                prev,
                vals,
            }));
        }
        Ok(PathNode {
            name,
            seq,
            prev,
            vals,
        })
    }
}

impl Drop for PathNode {
    // A long loop makes a long list; dropping it recursively could overflow the stack.
    fn drop(&mut self) {
        let mut next = self.prev.take();
        while let Some(node) = next {
            match Arc::try_unwrap(node) {
                Ok(mut inner) => next = inner.prev.take(),
                Err(_) => break,
            }
        }
    }
}
