//! Kafka in and out: the consumer that feeds the pipeline ([`source`]), the producer that
//! writes its records ([`sink`]), and the checkpoints that tie input offsets to acknowledged
//! output ([`checkpoint`]).
//!
//! Defaults favour latency: the consumer asks the broker to answer a fetch at once
//! (`fetch.min.bytes=1`, `fetch.wait.max.ms=5`) and the producer sends each record as soon as
//! it is made (`linger.ms=0`). Every librdkafka property can be set from the configuration and
//! overrides these defaults.

pub mod checkpoint;
pub mod event_time;
pub mod health;
pub mod sink;
pub mod source;
pub mod table_topic;

use rdkafka::config::ClientConfig;
use std::time::Duration;

/// A failure to talk to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaIoError {
    #[error("cannot reach the Kafka brokers at {brokers}: {source}")]
    Unreachable {
        brokers: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("topic `{topic}` does not exist on the brokers at {brokers}")]
    NoTopic { topic: String, brokers: String },
    #[error("{what}: {source}")]
    Client {
        what: String,
        source: rdkafka::error::KafkaError,
    },
}

impl KafkaIoError {
    pub(crate) fn client(
        what: impl Into<String>,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> KafkaIoError {
        let what = what.into();
        move |source| KafkaIoError::Client { what, source }
    }
}

/// Consumer properties: Kairos's low-latency defaults, then the user's.
pub fn consumer_config(brokers: &str, group: &str, user: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", group)
        // Offsets are committed by checkpoints, never behind Kairos's back.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.min.bytes", "1")
        .set("fetch.wait.max.ms", "5")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("isolation.level", "read_committed");
    for (k, v) in user {
        c.set(k, v);
    }
    c
}

/// Producer properties: Kairos's low-latency defaults, then the user's.
pub fn producer_config(brokers: &str, user: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .set("acks", "all")
        // Retries inside librdkafka then neither duplicate nor reorder a record.
        .set("enable.idempotence", "true");
    for (k, v) in user {
        c.set(k, v);
    }
    c
}

/// Sends a message with a plain producer, waiting while librdkafka's queue is full: the load
/// generators' way of offering events without dropping any.
pub fn send_waiting(p: &rdkafka::producer::BaseProducer, topic: &str, key: &str, payload: &str) {
    let mut rec = rdkafka::producer::BaseRecord::to(topic)
        .key(key)
        .payload(payload);
    loop {
        match p.send(rec) {
            Ok(()) => break,
            Err((_, r)) => {
                p.poll(Duration::from_millis(1));
                rec = r;
            }
        }
    }
    p.poll(Duration::ZERO);
}

/// Checks that the brokers answer and that `topics` exist, within `timeout`.
pub fn check_brokers(
    config: &ClientConfig,
    brokers: &str,
    topics: &[&str],
    timeout: Duration,
) -> Result<(), KafkaIoError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut c = config.clone();
    // Metadata only: no group membership.
    c.remove("group.id");
    c.set("group.id", "kairos-check");
    let consumer: BaseConsumer = c
        .create()
        .map_err(KafkaIoError::client("cannot create a Kafka client"))?;
    let md =
        consumer
            .fetch_metadata(None, timeout)
            .map_err(|source| KafkaIoError::Unreachable {
                brokers: brokers.to_string(),
                source,
            })?;
    for t in topics {
        let found = md
            .topics()
            .iter()
            .any(|mt| mt.name() == *t && mt.error().is_none() && !mt.partitions().is_empty());
        if !found {
            return Err(KafkaIoError::NoTopic {
                topic: t.to_string(),
                brokers: brokers.to_string(),
            });
        }
    }
    Ok(())
}
