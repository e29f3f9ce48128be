//! Events: the values Kairos matches on, their schema (the fields the loaded patterns use), and
//! decoders from bytes.

pub mod json;
pub mod text;
pub mod time;
pub mod value;

pub use json::{DecodeError, JsonDecoder};
pub use text::Text;
pub use time::TimeUnit;
pub use value::Value;

use serde::{Deserialize, Serialize};

/// One event, parsed: only the fields that the loaded patterns reference, each in its slot.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Event {
    /// Index of the stream it arrived on, in [`crate::compile::Program::streams`].
    pub stream: u16,
    /// Event time in nanoseconds since the epoch (the arrival time where the stream has no time
    /// field).
    pub ts: i64,
    /// Arrival time in nanoseconds, for patterns without a `time` clause.
    pub arrival: i64,
    /// Position in the input, assigned by the engine: orders events that share a timestamp.
    pub seq: u64,
    /// Where the event came from, for a source that can lose part of its input (a Kafka
    /// partition taken away by a rebalance): the partial matches of the keys last seen from an
    /// origin can then be dropped with it (see [`crate::engine::Engine::drop_origins`]). 0 where
    /// there is one origin.
    pub origin: u32,
    /// Field values by slot; null where the event lacks the field.
    pub slots: Vec<Value>,
}

impl Event {
    /// An event with every slot null, ready to be filled by a decoder.
    pub fn with_slots(n: usize) -> Self {
        Event {
            slots: vec![Value::Null; n],
            ..Event::default()
        }
    }
}
