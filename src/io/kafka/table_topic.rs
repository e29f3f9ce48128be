//! Tables from compacted topics: the KTable of a stream processor, as a Kairos lookup table.
//!
//! The topic's messages are rows: the message key is the row's key (it fills the key column
//! when the JSON value lacks it), the value a JSON object of the row's columns, and an empty
//! value (a tombstone) deletes the row. Kairos reads the topic from its beginning, writes the
//! latest row of every key to the table file with the builder, and keeps following the topic:
//! when rows change, it rebuilds the file (with the first build's schema, so that the running
//! patterns can keep reading it) and renames it into place, and the table's watcher swaps it
//! into the engine between two events.

use super::KafkaIoError;
use crate::table::{build, BuildOptions, InputFormat, Table, TableError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A failure to materialise a table from its topic.
#[derive(Debug, thiserror::Error)]
pub enum TopicTableError {
    #[error(transparent)]
    Kafka(#[from] KafkaIoError),
    #[error("table from topic `{topic}`: {source}")]
    Build { topic: String, source: TableError },
    #[error("table from topic `{topic}`: {source}")]
    Io {
        topic: String,
        source: std::io::Error,
    },
}

/// One table kept from one topic.
pub struct TopicTable {
    topic: String,
    key: String,
    path: PathBuf,
    consumer: BaseConsumer,
    rows: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    /// `name:type,...` of the first build, for every later one.
    schema: Option<String>,
    changed: bool,
}

impl TopicTable {
    /// Assigns every partition of `topic` from its beginning (no consumer group: every daemon
    /// reads the whole table).
    pub fn new(
        base: &ClientConfig,
        topic: &str,
        key: &str,
        path: &Path,
    ) -> Result<TopicTable, KafkaIoError> {
        let mut c = base.clone();
        c.set("group.id", "kairos-tables")
            .set("enable.auto.commit", "false");
        let consumer: BaseConsumer = c
            .create()
            .map_err(KafkaIoError::client("cannot create the table consumer"))?;
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(KafkaIoError::client(format!(
                "cannot read the metadata of table topic `{topic}`"
            )))?;
        let parts: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if parts.is_empty() {
            return Err(KafkaIoError::NoTopic {
                topic: topic.to_string(),
                brokers: base
                    .get("bootstrap.servers")
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition_offset(topic, *p, Offset::Beginning)
                .map_err(KafkaIoError::client("cannot assign the table topic"))?;
        }
        consumer
            .assign(&tpl)
            .map_err(KafkaIoError::client("cannot assign the table topic"))?;
        Ok(TopicTable {
            topic: topic.to_string(),
            key: key.to_string(),
            path: path.to_path_buf(),
            consumer,
            rows: BTreeMap::new(),
            schema: None,
            changed: false,
        })
    }

    /// Reads until every partition is at the end it had when this was called (or `timeout`),
    /// then builds the table file.
    pub fn catch_up(&mut self, timeout: Duration) -> Result<(), TopicTableError> {
        let mut ends = Vec::new();
        if let Ok(a) = self.consumer.assignment() {
            for e in a.elements() {
                if let Ok((_, high)) = self.consumer.fetch_watermarks(
                    e.topic(),
                    e.partition(),
                    Duration::from_secs(10),
                ) {
                    ends.push((e.partition(), high));
                }
            }
        }
        let deadline = Instant::now() + timeout;
        let mut at: BTreeMap<i32, i64> = BTreeMap::new();
        while Instant::now() < deadline
            && !ends
                .iter()
                .all(|(p, high)| *high == 0 || at.get(p).is_some_and(|o| o + 1 >= *high))
        {
            if let Some((p, o)) = self.poll_one(Duration::from_millis(50)) {
                at.insert(p, o);
            }
        }
        self.rebuild()
    }

    /// Takes one message, if one comes within `timeout`: (partition, offset).
    fn poll_one(&mut self, timeout: Duration) -> Option<(i32, i64)> {
        let m = match self.consumer.poll(timeout)? {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(topic = self.topic, error = %e, "table topic");
                return None;
            }
        };
        let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
        match (key, m.payload()) {
            (Some(k), None) | (Some(k), Some(b"")) => {
                self.changed |= self.rows.remove(&k).is_some();
            }
            (key, Some(p)) => match serde_json::from_slice::<serde_json::Value>(p) {
                Ok(serde_json::Value::Object(mut row)) => {
                    let k = match (key, row.get(&self.key)) {
                        (_, Some(serde_json::Value::String(s))) => Some(s.clone()),
                        (_, Some(v)) if !v.is_null() => Some(v.to_string()),
                        (Some(k), _) => {
                            row.insert(self.key.clone(), serde_json::Value::String(k.clone()));
                            Some(k)
                        }
                        (None, _) => None,
                    };
                    match k {
                        Some(k) => {
                            self.rows.insert(k, row);
                            self.changed = true;
                        }
                        None => tracing::warn!(
                            topic = self.topic,
                            partition = m.partition(),
                            offset = m.offset(),
                            "table row without a key; skipped"
                        ),
                    }
                }
                _ => tracing::warn!(
                    topic = self.topic,
                    partition = m.partition(),
                    offset = m.offset(),
                    "table row is not a JSON object; skipped"
                ),
            },
            (None, None) => {}
        }
        Some((m.partition(), m.offset()))
    }

    /// Writes the rows as JSON lines beside the table and builds the table from them.
    fn rebuild(&mut self) -> Result<(), TopicTableError> {
        let io = |source| TopicTableError::Io {
            topic: self.topic.clone(),
            source,
        };
        let source = self.path.with_extension("rows.jsonl");
        let mut text = String::new();
        for row in self.rows.values() {
            text += &serde_json::Value::Object(row.clone()).to_string();
            text.push('\n');
        }
        std::fs::write(&source, text).map_err(io)?;
        let mut opts = BuildOptions::new(&source, &self.key, &self.path);
        opts.format = Some(InputFormat::JsonLines);
        opts.schema = self.schema.clone();
        build(&opts).map_err(|source| TopicTableError::Build {
            topic: self.topic.clone(),
            source,
        })?;
        let _ = std::fs::remove_file(&source);
        if self.schema.is_none() {
            if let Ok(t) = Table::open(&self.path, &Default::default()) {
                let spec: Vec<String> = t
                    .schema()
                    .columns()
                    .iter()
                    .map(|c| format!("{}:{}", c.name, c.ty))
                    .collect();
                self.schema = Some(spec.join(","));
            }
        }
        self.changed = false;
        Ok(())
    }

    /// Follows the topic on a thread of its own until `stop`, rebuilding the file at most once
    /// per `interval` when rows changed.
    pub fn follow(
        mut self,
        interval: Duration,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("kairos-table-{}", self.topic))
            .spawn(move || {
                let mut next = Instant::now() + interval;
                while !stop.load(Ordering::Acquire) {
                    self.poll_one(Duration::from_millis(50));
                    if self.changed && Instant::now() >= next {
                        next = Instant::now() + interval;
                        if let Err(e) = self.rebuild() {
                            tracing::error!(error = %e, "cannot rebuild a table from its topic; the loaded version stays");
                        }
                    }
                }
            })
    }
}
