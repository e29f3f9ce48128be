//! Partial matches share their history: each run points at the last node of a persistent list of
//! bound events, so branching a run costs one reference count, not a copy.

use crate::compile::expr::NameId;
use crate::event::{Event, Value};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One event bound to a name, with the running aggregates of the partial match up to it.
#[derive(Debug, Serialize, Deserialize)]
pub struct PathNode {
    pub name: NameId,
    pub event: Arc<Event>,
    pub prev: Option<Arc<PathNode>>,
    /// Running aggregates by index of [`crate::compile::expr::AggSpec`]; `None` where the name
    /// has bound nothing yet.
    pub aggs: Box<[Option<Value>]>,
}

impl PathNode {
    /// The nodes from the first to this one.
    pub fn to_vec(&self) -> Vec<&PathNode> {
        let mut v = Vec::new();
        let mut n = Some(self);
        while let Some(x) = n {
            v.push(x);
            n = x.prev.as_deref();
        }
        v.reverse();
        v
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
