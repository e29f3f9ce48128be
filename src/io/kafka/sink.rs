//! The Kafka sink: each record to its sink's topic, keyed by the match key, with the pattern's
//! name in a header; delivery reports counted off the hot path (librdkafka's own thread).

use super::checkpoint::{Checkpoints, Position, Snapshot};
use crate::engine::OwnedRecord;
use crate::event::Value;
use crate::metrics::PipelineMetrics;
use crate::pipeline::{Barrier, Sink};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Times a record whose delivery failed is sent again before it counts as lost.
pub const DELIVERY_ATTEMPTS: u32 = 3;

/// A record to send again.
#[derive(Debug)]
pub struct Retry {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub opaque: usize,
}

/// Counts delivery reports into the checkpoints and the metrics. Runs on librdkafka's polling
/// thread, never on a pipeline stage.
pub struct Deliveries {
    pub checkpoints: Arc<Checkpoints>,
    pub metrics: Arc<PipelineMetrics>,
    /// Failed deliveries waiting to be sent again by [`resend`].
    pub retries: Mutex<Vec<Retry>>,
    /// Whether this producer writes dead letters. A dead letter too large for the broker is
    /// sent again with its payload cut; one that cannot be delivered at all is logged and
    /// counted, and does not stop checkpoints: a poison message must never stop the stream.
    pub dead_letters: bool,
}

/// The header a dead letter carries when its payload was cut to fit: the original size.
pub const TRUNCATED_HEADER: &str = "kairos-payload-truncated";

fn headers_of(msg: &rdkafka::message::BorrowedMessage<'_>) -> Vec<(String, Vec<u8>)> {
    msg.headers()
        .map(|h| {
            h.iter()
                .map(|x| (x.key.to_string(), x.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default()
}

fn header<'a>(headers: &'a [(String, Vec<u8>)], key: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .unwrap_or("?")
}

/// The opaque of a record: its epoch and how many times it has been sent.
fn opaque(epoch: u64, attempt: u32) -> usize {
    ((epoch as usize) << 4) | attempt.min(15) as usize
}

fn unpack(o: usize) -> (u64, u32) {
    ((o >> 4) as u64, (o & 15) as u32)
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, o: usize) {
        let (epoch, attempt) = unpack(o);
        match result {
            Ok(_) => {
                self.checkpoints.delivered(epoch);
                self.metrics.deliveries_acked.fetch_add(1, Relaxed);
                self.metrics.deliveries_in_flight.fetch_sub(1, Relaxed);
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), msg))
                if self.dead_letters && !msg.payload().unwrap_or_default().is_empty() =>
            {
                // The broker's limit is below the producer's: the dead letter goes again with
                // its headers only, which say how large the payload was.
                let size = msg.payload().unwrap_or_default().len();
                let mut headers = headers_of(msg);
                headers.retain(|(k, _)| k != TRUNCATED_HEADER);
                headers.push((TRUNCATED_HEADER.into(), size.to_string().into_bytes()));
                tracing::warn!(
                    topic = msg.topic(),
                    source_topic = header(&headers, "kairos-source-topic"),
                    partition = header(&headers, "kairos-source-partition"),
                    offset = header(&headers, "kairos-source-offset"),
                    size,
                    "dead letter too large for the broker; sending it again without its payload"
                );
                self.metrics.dead_letters_truncated.fetch_add(1, Relaxed);
                let r = Retry {
                    topic: msg.topic().to_string(),
                    key: msg.key().map(<[u8]>::to_vec),
                    payload: Vec::new(),
                    headers,
                    opaque: o,
                };
                self.retries
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(r);
            }
            Err((e, msg)) if attempt + 1 < DELIVERY_ATTEMPTS => {
                tracing::warn!(topic = msg.topic(), error = %e, attempt, "delivery failed; sending again");
                self.metrics.delivery_retries.fetch_add(1, Relaxed);
                let headers = headers_of(msg);
                let r = Retry {
                    topic: msg.topic().to_string(),
                    key: msg.key().map(<[u8]>::to_vec),
                    payload: msg.payload().unwrap_or_default().to_vec(),
                    headers,
                    opaque: opaque(epoch, attempt + 1),
                };
                self.retries
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(r);
            }
            Err((e, msg)) if self.dead_letters => {
                let headers = headers_of(msg);
                tracing::error!(topic = msg.topic(), error = %e, source_topic = header(&headers, "kairos-source-topic"), partition = header(&headers, "kairos-source-partition"), offset = header(&headers, "kairos-source-offset"), "a dead letter could not be delivered; it is passed over (the event stays in its source topic at that offset)");
                self.metrics.dead_letter_failures.fetch_add(1, Relaxed);
                self.metrics.deliveries_in_flight.fetch_sub(1, Relaxed);
                self.checkpoints.delivered(epoch);
            }
            Err((e, msg)) => {
                let payload = String::from_utf8_lossy(msg.payload().unwrap_or_default());
                tracing::error!(topic = msg.topic(), error = %e, record = %payload, "delivery failed for good; input offsets will not be committed past it");
                self.metrics.delivery_failures.fetch_add(1, Relaxed);
                self.metrics.deliveries_in_flight.fetch_sub(1, Relaxed);
                self.checkpoints.poison();
                self.checkpoints.delivered(epoch);
            }
        }
    }
}

pub type KafkaProducer = ThreadedProducer<Deliveries>;

/// Sends a record, waiting while librdkafka's queue is full (back-pressure, never a drop).
/// Counts it in flight for its epoch first, so that a fast acknowledgement cannot go below zero.
pub fn send(
    producer: &KafkaProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: OwnedHeaders,
    o: usize,
) -> Result<(), KafkaError> {
    let ctx = producer.context();
    ctx.checkpoints.sent(unpack(o).0);
    ctx.metrics.deliveries_in_flight.fetch_add(1, Relaxed);
    let mut rec = BaseRecord::with_opaque_to(topic, o)
        .payload(payload)
        .headers(headers);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                std::thread::sleep(Duration::from_micros(100));
            }
            Err((e, _)) => {
                ctx.checkpoints.delivered(unpack(o).0);
                ctx.metrics.deliveries_in_flight.fetch_sub(1, Relaxed);
                return Err(e);
            }
        }
    }
}

/// Sends the failed deliveries again. Called by the source between polls.
pub fn resend(producer: &KafkaProducer) {
    let batch = std::mem::take(
        &mut *producer
            .context()
            .retries
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    for r in batch {
        let mut h = OwnedHeaders::new();
        for (k, v) in &r.headers {
            h = h.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        // The first send of this record counted it in flight; this one must not count it twice.
        let ctx = producer.context();
        ctx.checkpoints.delivered(unpack(r.opaque).0);
        ctx.metrics.deliveries_in_flight.fetch_sub(1, Relaxed);
        if let Err(e) = send(
            producer,
            &r.topic,
            r.key.as_deref(),
            &r.payload,
            h,
            r.opaque,
        ) {
            if ctx.dead_letters {
                tracing::error!(topic = r.topic, error = %e, source_topic = header(&r.headers, "kairos-source-topic"), partition = header(&r.headers, "kairos-source-partition"), offset = header(&r.headers, "kairos-source-offset"), "cannot send a dead letter again; it is passed over (the event stays in its source topic at that offset)");
                ctx.metrics.dead_letter_failures.fetch_add(1, Relaxed);
            } else {
                tracing::error!(topic = r.topic, error = %e, "cannot send a record again; input offsets will not be committed past it");
                ctx.metrics.delivery_failures.fetch_add(1, Relaxed);
                ctx.checkpoints.poison();
            }
        }
    }
}

/// A barrier as the source took it, for the exactly-once sink to commit.
pub struct TxnBarrier {
    pub id: u64,
    /// The input positions at the barrier.
    pub positions: Vec<Position>,
    /// The event time the engine had reached at the barrier.
    pub event_time: i64,
    /// The consumer's group metadata, for committing the offsets in the transaction.
    pub group: Option<ConsumerGroupMetadata>,
}

/// What the exactly-once sink needs from the source at each barrier.
#[derive(Default)]
pub struct TxnHandoff {
    pub pending: Mutex<Vec<TxnBarrier>>,
}

/// Exactly-once: records of an epoch go in one transaction, committed with the epoch's input
/// offsets when every shard has passed its barrier.
pub struct Txn {
    pub handoff: Arc<TxnHandoff>,
    pub state_dir: Option<PathBuf>,
    pub fingerprint: u64,
    pub timeout: Duration,
}

/// The pipeline's sink for Kafka.
pub struct KafkaSink {
    producer: Arc<KafkaProducer>,
    /// By sink name: its topic.
    topics: Vec<(String, String)>,
    /// By shard: the epoch its records belong to (one past the last barrier it passed).
    epochs: Vec<u64>,
    txn: Option<Txn>,
    payload: Vec<u8>,
    key: Vec<u8>,
}

impl KafkaSink {
    pub fn new(
        producer: Arc<KafkaProducer>,
        topics: Vec<(String, String)>,
        shards: usize,
        txn: Option<Txn>,
    ) -> KafkaSink {
        KafkaSink {
            producer,
            topics,
            epochs: vec![1; shards],
            txn,
            payload: Vec::with_capacity(512),
            key: Vec::with_capacity(64),
        }
    }

    fn commit_transaction(&mut self, id: u64) -> Result<(), String> {
        let Some(txn) = &self.txn else { return Ok(()) };
        let entry = {
            let mut p = txn
                .handoff
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let i = p.iter().position(|e| e.id == id);
            i.map(|i| p.remove(i))
        };
        let Some(TxnBarrier {
            positions,
            event_time,
            group: cgm,
            ..
        }) = entry
        else {
            return Err(format!("barrier {id} reached the sink without its offsets"));
        };
        let ctx = self.producer.context();
        let states = ctx.checkpoints.take_states(id);
        if let Some(dir) = &txn.state_dir {
            let snap = Snapshot {
                id,
                event_time,
                fingerprint: txn.fingerprint,
                positions: positions.clone(),
                states: states.into_iter().map(Option::unwrap_or_default).collect(),
            };
            // A transaction's commit is confirmed when `commit_transaction` returns: the previous
            // snapshot is the newest confirmed one until then.
            snap.write(dir, id.saturating_sub(1))
                .map_err(|e| e.to_string())?;
        }
        if let Some(cgm) = cgm {
            let mut tpl = rdkafka::TopicPartitionList::new();
            for p in &positions {
                tpl.add_partition_offset(&p.topic, p.partition, rdkafka::Offset::Offset(p.offset))
                    .map_err(|e| e.to_string())?;
            }
            self.producer
                .send_offsets_to_transaction(&tpl, &cgm, txn.timeout)
                .map_err(|e| format!("cannot add offsets to the transaction: {e}"))?;
        }
        self.producer
            .commit_transaction(txn.timeout)
            .map_err(|e| format!("cannot commit the transaction: {e}"))?;
        ctx.metrics.checkpoints.fetch_add(1, Relaxed);
        self.producer
            .begin_transaction()
            .map_err(|e| format!("cannot begin a transaction: {e}"))
    }
}

/// Writes the record key: a string key as its bytes, any other as JSON.
fn key_bytes(key: &Value, out: &mut Vec<u8>) {
    out.clear();
    match key {
        Value::Str(s) => out.extend_from_slice(s.as_bytes()),
        Value::Null => {}
        other => other.write_json(out),
    }
}

impl Sink for KafkaSink {
    // HOT PATH: the sink stage, once per record.
    fn record(&mut self, shard: usize, r: &OwnedRecord) {
        let Some((_, topic)) = self.topics.iter().find(|(n, _)| *n == r.sink) else {
            // Checked when the daemon starts: every sink a pattern names has a topic.
            tracing::error!(sink = r.sink, "record for a sink with no topic");
            return;
        };
        self.payload.clear();
        r.write_json(&mut self.payload);
        key_bytes(&r.key, &mut self.key);
        let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
            key: "kairos-pattern",
            value: Some(r.pattern.as_bytes()),
        });
        let key = (!matches!(r.key, Value::Null)).then_some(&self.key[..]);
        let o = opaque(self.epochs[shard], 0);
        if let Err(e) = send(&self.producer, topic, key, &self.payload, headers, o) {
            tracing::error!(topic, error = %e, "cannot produce a record; input offsets will not be committed past it");
            let ctx = self.producer.context();
            ctx.metrics.delivery_failures.fetch_add(1, Relaxed);
            ctx.checkpoints.poison();
        }
    }

    fn barrier(&mut self, b: Barrier) {
        self.epochs[b.shard] = b.id + 1;
        let all = self
            .producer
            .context()
            .checkpoints
            .passed(b.id, b.shard, b.state);
        if all && self.txn.is_some() {
            if let Err(e) = self.commit_transaction(b.id) {
                // The transaction's records and offsets are aborted together; the input is read
                // again from the last committed checkpoint when Kairos restarts.
                tracing::error!(error = %e, "exactly-once checkpoint failed; stopping");
                let _ = self.producer.abort_transaction(
                    self.txn
                        .as_ref()
                        .map_or(Duration::from_secs(10), |t| t.timeout),
                );
                self.producer.context().checkpoints.poison();
            }
        }
    }
}
