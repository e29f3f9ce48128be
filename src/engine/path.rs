//! Partial matches share their history: each run points at the last node of a persistent list of
//! bound events, so branching a run costs one reference count, not a copy.

use crate::compile::expr::NameId;
use crate::event::Value;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::sync::Arc;

/// The values a node keeps, inline for the usual few.
pub type NodeValues = SmallVec<[Option<Value>; 3]>;

/// One event bound to a name. The event itself is not kept: only what later expressions read of
/// it, computed when it was bound: the running aggregates of the partial match up to it, and the
/// values that `collect()` gathers from events of its name.
#[derive(Debug, Serialize, Deserialize)]
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
