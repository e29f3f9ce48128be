//! How a stage waits when its ring is empty (consumer) or full (producer).
//!
//! - [`WaitStrategy::Spin`] busy-polls with `spin_loop` hints: the lowest latency, for a stage
//!   with a core to itself.
//! - [`WaitStrategy::Yield`] gives the core back to the scheduler between polls.
//! - [`WaitStrategy::Park`] spins briefly, then sleeps until the other side wakes it: for stages
//!   that share cores, so that a waiting stage costs nothing.
//!
//! [`WaitStrategy::for_cores`] picks one from the number of cores and stages: a 2-core machine
//! running 4 stages must never be starved by spinning threads.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a parked stage sleeps before looking again even if nobody woke it: a bound on the
/// cost of a wake-up that raced with going to sleep.
pub const PARK_TIMEOUT: Duration = Duration::from_micros(200);

/// A stage's way of waiting, chosen per stage in the pipeline's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitStrategy {
    Spin,
    Yield,
    /// Spin this many times, then park.
    Park {
        spins: u32,
    },
}

impl Default for WaitStrategy {
    fn default() -> Self {
        WaitStrategy::for_cores(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            2,
        )
    }
}

impl WaitStrategy {
    /// Spin when every stage has a core of its own, park otherwise.
    ///
    /// ```
    /// use kairos::ring::WaitStrategy;
    /// assert_eq!(WaitStrategy::for_cores(16, 4), WaitStrategy::Spin);
    /// assert!(matches!(WaitStrategy::for_cores(2, 4), WaitStrategy::Park { .. }));
    /// ```
    pub fn for_cores(cores: usize, stages: usize) -> Self {
        if cores >= stages.max(1) {
            WaitStrategy::Spin
        } else {
            WaitStrategy::Park { spins: 64 }
        }
    }

    /// Parses `spin`, `yield` or `park`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "spin" => Some(WaitStrategy::Spin),
            "yield" => Some(WaitStrategy::Yield),
            "park" => Some(WaitStrategy::Park { spins: 64 }),
            _ => None,
        }
    }
}

/// One episode of waiting: counts attempts, so that `Park` knows when to stop spinning.
#[derive(Debug)]
pub struct Waiter {
    strategy: WaitStrategy,
    attempts: u32,
}

/// What the waiter decided to do on this attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Poll again now.
    Retry,
    /// Announce sleep, re-check, then park.
    Park,
}

impl Waiter {
    pub fn new(strategy: WaitStrategy) -> Self {
        Waiter {
            strategy,
            attempts: 0,
        }
    }

    /// Called after a failed poll.
    #[inline]
    pub fn step(&mut self) -> Step {
        self.attempts = self.attempts.saturating_add(1);
        match self.strategy {
            WaitStrategy::Spin => {
                std::hint::spin_loop();
                Step::Retry
            }
            WaitStrategy::Yield => {
                std::thread::yield_now();
                Step::Retry
            }
            WaitStrategy::Park { spins } => {
                if self.attempts <= spins {
                    std::hint::spin_loop();
                    Step::Retry
                } else {
                    Step::Park
                }
            }
        }
    }

    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}
