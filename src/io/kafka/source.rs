//! The Kafka source: a consumer in a consumer group, its rebalance events, and the decoding of
//! messages into events with their origin (topic and partition) recorded.

use crate::event::{DecodeError, Event, JsonDecoder, Value};
use crate::metrics::PipelineMetrics;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

/// A partition gained or lost in a rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    Assign(Vec<(String, i32)>),
    Revoke(Vec<(String, i32)>),
}

/// The consumer's context: collects rebalance events (the callbacks run inside `poll`, on the
/// source thread) and the consumer lag from librdkafka's statistics.
pub struct SourceContext {
    pub events: Mutex<Vec<RebalanceEvent>>,
    pub metrics: Arc<PipelineMetrics>,
    /// Offset commits the broker confirmed, as (topic, partition, offset) lists.
    pub commits: Mutex<Vec<Vec<(String, i32, i64)>>>,
    /// Told by the statistics whether a broker is connected and the group settled.
    pub health: Arc<super::health::Health>,
}

fn partitions(tpl: &rdkafka::TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for SourceContext {
    fn stats(&self, s: Statistics) {
        let lag: i64 = s
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag > 0)
            .map(|p| p.consumer_lag)
            .sum();
        self.metrics.consumer_lag.store(lag.max(0) as u64, Relaxed);
        self.health
            .brokers_connected(s.brokers.values().any(|b| b.state == "UP"));
        if let Some(g) = &s.cgrp {
            self.health
                .group_settled(g.state == "up" && g.join_state == "steady");
        }
    }
}

impl ConsumerContext for SourceContext {
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &rdkafka::TopicPartitionList,
    ) {
        match result {
            Ok(()) => {
                let list = offsets
                    .elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        rdkafka::Offset::Offset(o) => {
                            Some((e.topic().to_string(), e.partition(), o))
                        }
                        _ => None,
                    })
                    .collect();
                self.commits
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(list);
            }
            Err(e) => tracing::warn!(error = %e, "offset commit failed"),
        }
    }

    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            self.events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(RebalanceEvent::Revoke(partitions(tpl)));
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        match r {
            Rebalance::Assign(tpl) => self
                .events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(RebalanceEvent::Assign(partitions(tpl))),
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// The origin of an event from partition `partition` of input topic number `topic`.
pub fn origin(topic: usize, partition: i32) -> u32 {
    ((topic as u32) << 20) | (partition as u32 & 0xF_FFFF)
}

/// The input topic number and partition of an [`origin`].
pub fn unpack_origin(origin: u32) -> (usize, i32) {
    ((origin >> 20) as usize, (origin & 0xF_FFFF) as i32)
}

/// One input topic and how its messages become events.
pub struct TopicInput {
    pub topic: String,
    /// The stream's index in the program.
    pub stream: u16,
    pub decoder: JsonDecoder,
    /// The slot the message key fills when the payload has no value for it.
    pub key_slot: Option<usize>,
    /// Whether the stream has event time (a `time` field); arrival time is never late.
    pub event_time: bool,
    /// Allowed lateness, ns.
    pub lateness: i64,
}

/// Why a message did not become an event: it goes to the dead letters.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error("malformed event: {0}")]
    Decode(#[from] DecodeError),
    #[error("empty message")]
    Empty,
    #[error("late: event time {ts} is {behind}ns behind the event time already reached, {frontier} (allowed lateness {lateness}ns)")]
    Late {
        ts: i64,
        behind: i64,
        frontier: i64,
        lateness: i64,
    },
}

/// Decodes a message of `input` into `ev` (reading the payload in place, without a copy).
// HOT PATH: the parse stage.
pub fn decode(
    input: &TopicInput,
    msg: &BorrowedMessage<'_>,
    arrival: i64,
    ev: &mut Event,
) -> Result<(), Rejected> {
    let payload = msg.payload().ok_or(Rejected::Empty)?;
    input.decoder.decode(payload, arrival, ev)?;
    ev.stream = input.stream;
    if let (Some(slot), Some(key)) = (input.key_slot, msg.key()) {
        if ev.slots[slot].is_null() {
            ev.slots[slot] = Value::Str(String::from_utf8_lossy(key).as_ref().into());
        }
    }
    Ok(())
}
