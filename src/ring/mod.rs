//! Rings: the bounded single-producer, single-consumer queues that connect pipeline stages, and
//! the strategies a stage uses to wait on them.

mod spsc;
mod sync;
pub mod wait;

pub use spsc::{ring, Consumer, Disconnected, Producer};
pub use wait::{WaitStrategy, Waiter};
