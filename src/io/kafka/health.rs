//! What `/health` says about a running daemon.
//!
//! A daemon is healthy when it is doing its work: reading, matching, delivering and
//! checkpointing. `/health` answers 503, with the reason, when any of these holds:
//!
//! - a record could not be delivered or a transaction failed (checkpoints have stopped; the
//!   daemon exits 3);
//! - no broker has been connected for [`HealthLimits::brokers_down`];
//! - the consumer has not been a settled member of its group (joined, with an assignment, even
//!   an empty one) for [`HealthLimits::group_unsettled`]: it cannot join, or a rebalance does
//!   not finish;
//! - no checkpoint has completed for [`HealthLimits::checkpoint_age`]: deliveries are stuck in
//!   flight, or the pipeline is.
//!
//! A member of a group with more members than partitions holds no partition and is healthy:
//! it is ready to take over. The broker and group states come from librdkafka's statistics
//! (every second unless `statistics.interval.ms` says otherwise; with statistics off, only the
//! delivery and checkpoint conditions are checked).

use super::checkpoint::Checkpoints;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long each condition may last before the daemon is unhealthy.
#[derive(Clone, Copy, Debug)]
pub struct HealthLimits {
    /// No broker connected.
    pub brokers_down: Duration,
    /// Not a settled member of the consumer group.
    pub group_unsettled: Duration,
    /// No checkpoint completed.
    pub checkpoint_age: Duration,
}

impl HealthLimits {
    /// The limits for a daemon checkpointing every `interval` with a group session timeout of
    /// `session_timeout`: 10 s without a broker; twice the session timeout (at least 10 s)
    /// outside the group; ten checkpoint intervals (at least 10 s) without a checkpoint.
    pub fn new(interval: Duration, session_timeout: Duration) -> HealthLimits {
        let floor = Duration::from_secs(10);
        HealthLimits {
            brokers_down: floor,
            group_unsettled: (2 * session_timeout).max(floor),
            checkpoint_age: (10 * interval).max(floor),
        }
    }
}

/// The daemon's health, fed by the source loop and the consumer's statistics.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    checkpoints: Arc<Checkpoints>,
    limits: HealthLimits,
    /// Nanoseconds since `started` of the last completed checkpoint.
    last_checkpoint: AtomicU64,
    /// Nanoseconds since `started`, plus one, since when no broker is connected; 0: connected.
    brokers_down_since: AtomicU64,
    /// Likewise, since when the consumer is not a settled group member; 0: settled.
    unsettled_since: AtomicU64,
}

impl Health {
    /// A daemon starting now; it has not joined its group yet.
    pub fn new(checkpoints: Arc<Checkpoints>, limits: HealthLimits) -> Health {
        Health {
            started: Instant::now(),
            checkpoints,
            limits,
            last_checkpoint: AtomicU64::new(0),
            brokers_down_since: AtomicU64::new(0),
            unsettled_since: AtomicU64::new(1),
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// A checkpoint completed.
    pub fn checkpoint_completed(&self) {
        self.last_checkpoint.store(self.now(), Ordering::Relaxed);
    }

    /// Whether some broker is connected, as the statistics tell.
    pub fn brokers_connected(&self, any: bool) {
        Self::track(&self.brokers_down_since, !any, self.now());
    }

    /// Whether the consumer is a settled member of its group, as the statistics tell.
    pub fn group_settled(&self, settled: bool) {
        Self::track(&self.unsettled_since, !settled, self.now());
    }

    fn track(since: &AtomicU64, bad: bool, now: u64) {
        if bad {
            let _ = since.compare_exchange(0, now + 1, Ordering::Relaxed, Ordering::Relaxed);
        } else {
            since.store(0, Ordering::Relaxed);
        }
    }

    /// `Ok` when healthy, else the reason.
    pub fn verdict(&self) -> Result<(), String> {
        self.verdict_at(self.now())
    }

    fn verdict_at(&self, now: u64) -> Result<(), String> {
        if self.checkpoints.poisoned() {
            return Err("a record could not be delivered; checkpoints have stopped".into());
        }
        let lasted = |since: &AtomicU64| match since.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            t => Duration::from_nanos(now.saturating_sub(t - 1)),
        };
        let down = lasted(&self.brokers_down_since);
        if down >= self.limits.brokers_down {
            return Err(format!(
                "no Kafka broker connected for {} s",
                down.as_secs()
            ));
        }
        let unsettled = lasted(&self.unsettled_since);
        if unsettled >= self.limits.group_unsettled {
            return Err(format!(
                "not a member of the consumer group with an assignment for {} s (cannot join, or a rebalance does not finish)",
                unsettled.as_secs()
            ));
        }
        let age =
            Duration::from_nanos(now.saturating_sub(self.last_checkpoint.load(Ordering::Relaxed)));
        if age >= self.limits.checkpoint_age {
            return Err(format!(
                "no checkpoint completed for {} s ({} deliveries in flight)",
                age.as_secs(),
                self.checkpoints.in_flight()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn health() -> Health {
        Health::new(
            Arc::new(Checkpoints::new(1)),
            HealthLimits {
                brokers_down: Duration::from_secs(10),
                group_unsettled: Duration::from_secs(30),
                checkpoint_age: Duration::from_secs(20),
            },
        )
    }

    #[test]
    fn each_condition_makes_the_daemon_unhealthy_once_it_lasts() {
        let h = health();
        h.group_settled(true);
        assert!(h.verdict_at(5 * S).is_ok());
        Health::track(&h.brokers_down_since, true, 5 * S);
        assert!(h.verdict_at(14 * S).is_ok());
        let e = h.verdict_at(15 * S).unwrap_err();
        assert!(e.contains("no Kafka broker"), "{e}");
        Health::track(&h.brokers_down_since, false, 16 * S);
        // Checkpoints stopped meanwhile.
        let e = h.verdict_at(21 * S).unwrap_err();
        assert!(e.contains("no checkpoint"), "{e}");
        h.last_checkpoint.store(21 * S, Ordering::Relaxed);
        assert!(h.verdict_at(22 * S).is_ok());
        Health::track(&h.unsettled_since, true, 22 * S);
        let e = h.verdict_at(52 * S).unwrap_err();
        assert!(e.contains("consumer group"), "{e}");
        h.checkpoints.poison();
        assert!(h.verdict_at(52 * S).unwrap_err().contains("delivered"));
    }

    #[test]
    fn a_daemon_that_never_joins_its_group_is_unhealthy() {
        let h = health();
        h.last_checkpoint.store(40 * S, Ordering::Relaxed);
        assert!(h.verdict_at(29 * S).is_ok());
        assert!(h.verdict_at(41 * S).is_err());
    }
}
