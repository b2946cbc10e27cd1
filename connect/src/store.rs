//! The worker's state in compacted topics, in Kafka Connect's formats, so
//! a restarted worker resumes where it stopped:
//!
//! ```text
//! connect-configs   connector-<name>      {"properties": {...}}        (tombstone: deleted)
//!                   target-state-<name>   {"state": "STARTED" | "PAUSED" | "STOPPED"}
//! connect-offsets   ["<name>", {partition}]  {offset}                   (tombstone: reset)
//! connect-status    status-connector-<name>  {"state", "trace", "worker_id", "generation"}
//!                   status-task-<name>-<n>   the same, per task
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

use crate::plugin::{ConnectError, ConnectResult, OffsetReader};
use crate::record::SourcePartition;

/// Names of the internal topics.
#[derive(Debug, Clone)]
pub struct Topics {
    pub configs: String,
    pub offsets: String,
    pub status: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            configs: "connect-configs".into(),
            offsets: "connect-offsets".into(),
            status: "connect-status".into(),
        }
    }
}

fn kafka_error(what: &str, e: impl std::fmt::Display) -> ConnectError {
    ConnectError::retriable(format!("{what}: {e}"))
}

/// Creates the internal topics (compacted) where missing.
pub async fn ensure_topics(client: &ClientConfig, topics: &Topics) -> ConnectResult<()> {
    let admin: AdminClient<DefaultClientContext> = client
        .create()
        .map_err(|e| kafka_error("creating the admin client", e))?;
    let new: Vec<NewTopic<'_>> = [
        (&topics.configs, 1),
        (&topics.offsets, 5),
        (&topics.status, 1),
    ]
    .into_iter()
    .map(|(name, partitions)| {
        NewTopic::new(name, partitions, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact")
    })
    .collect();
    let results = admin
        .create_topics(
            new.iter(),
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .map_err(|e| kafka_error("creating the internal topics", e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(kafka_error(&format!("creating topic {name}"), code)),
        }
    }
    Ok(())
}

/// A record of an internal topic: key and (unless a tombstone) value.
pub type KeyValue = (Vec<u8>, Option<Vec<u8>>);

/// Reads a whole topic, every partition to its current end, in order per
/// partition: (key, value) pairs, later ones after earlier ones.
pub fn read_to_end(client: &ClientConfig, topic: &str) -> ConnectResult<Vec<KeyValue>> {
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "runnel-connect-reader")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| kafka_error("creating a reader", e))?;
    let timeout = Duration::from_secs(30);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| kafka_error(&format!("metadata of {topic}"), e))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, timeout)
            .map_err(|e| kafka_error(&format!("end of {topic}"), e))?;
        if high > low {
            ends.insert(*p, high);
            tpl.add_partition_offset(topic, *p, Offset::Beginning)
                .map_err(|e| kafka_error("assign", e))?;
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka_error("assign", e))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(ConnectError::retriable(format!(
                "reading {topic} took too long"
            )));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                out.push((
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().map(<[u8]>::to_vec),
                ));
                if m.offset() + 1 >= *ends.get(&m.partition()).unwrap_or(&0) {
                    ends.remove(&m.partition());
                }
            }
            Some(Err(e)) => return Err(kafka_error(&format!("reading {topic}"), e)),
            None => {
                // Compaction can leave the last offsets without records.
                if let Ok(position) = consumer.position() {
                    for e in position.elements() {
                        if let Offset::Offset(o) = e.offset() {
                            if ends.get(&e.partition()).is_some_and(|end| o >= *end) {
                                ends.remove(&e.partition());
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Writes one record and waits until it is stored.
pub async fn write(
    producer: &FutureProducer,
    topic: &str,
    key: &[u8],
    value: Option<&[u8]>,
) -> ConnectResult<()> {
    let mut record = FutureRecord::<[u8], [u8]>::to(topic).key(key);
    if let Some(v) = value {
        record = record.payload(v);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(e, _)| kafka_error(&format!("writing to {topic}"), e))
}

/// Committed source offsets of every connector, kept in memory and in
/// `connect-offsets`.
pub struct OffsetStore {
    topic: String,
    producer: FutureProducer,
    /// (connector, partition JSON) → offset.
    offsets: Mutex<HashMap<(String, String), Value>>,
}

fn offset_key(connector: &str, partition: &SourcePartition) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!([connector, partition])).unwrap_or_default()
}

impl OffsetStore {
    pub fn load(
        client: &ClientConfig,
        producer: FutureProducer,
        topic: &str,
    ) -> ConnectResult<OffsetStore> {
        let mut offsets = HashMap::new();
        for (key, value) in read_to_end(client, topic)? {
            let Ok(Value::Array(parts)) = serde_json::from_slice::<Value>(&key) else {
                continue;
            };
            let (Some(Value::String(name)), Some(partition)) = (parts.first(), parts.get(1)) else {
                continue;
            };
            let k = (name.clone(), partition.to_string());
            match value.and_then(|v| serde_json::from_slice::<Value>(&v).ok()) {
                Some(v) => {
                    offsets.insert(k, v);
                }
                None => {
                    offsets.remove(&k);
                }
            }
        }
        Ok(OffsetStore {
            topic: topic.to_string(),
            producer,
            offsets: Mutex::new(offsets),
        })
    }

    /// Stores offsets durably, then remembers them.
    pub async fn commit(
        &self,
        connector: &str,
        offsets: &HashMap<String, (SourcePartition, Value)>,
    ) -> ConnectResult<()> {
        for (partition, offset) in offsets.values() {
            let value = serde_json::to_vec(offset).unwrap_or_default();
            write(
                &self.producer,
                &self.topic,
                &offset_key(connector, partition),
                Some(&value),
            )
            .await?;
        }
        let mut all = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        for (key, (_, offset)) in offsets {
            all.insert((connector.to_string(), key.clone()), offset.clone());
        }
        Ok(())
    }

    /// The connector's committed offsets: (partition, offset).
    pub fn of(&self, connector: &str) -> Vec<(Value, Value)> {
        let all = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(Value, Value)> = all
            .iter()
            .filter(|((c, _), _)| c == connector)
            .map(|((_, p), o)| (serde_json::from_str(p).unwrap_or(Value::Null), o.clone()))
            .collect();
        out.sort_by_key(|(p, _)| p.to_string());
        out
    }

    /// Forgets (tombstones) every offset of a connector.
    pub async fn reset(&self, connector: &str) -> ConnectResult<()> {
        let partitions: Vec<Value> = self.of(connector).into_iter().map(|(p, _)| p).collect();
        for p in partitions {
            if let Value::Object(map) = &p {
                write(
                    &self.producer,
                    &self.topic,
                    &offset_key(connector, map),
                    None,
                )
                .await?;
            }
        }
        self.offsets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(c, _), _| c != connector);
        Ok(())
    }

    /// A reader of one connector's offsets, for its tasks.
    pub fn reader(self: &Arc<Self>, connector: &str) -> Arc<dyn OffsetReader> {
        Arc::new(ConnectorOffsets {
            store: self.clone(),
            connector: connector.to_string(),
        })
    }
}

struct ConnectorOffsets {
    store: Arc<OffsetStore>,
    connector: String,
}

impl OffsetReader for ConnectorOffsets {
    fn offset(&self, partition: &SourcePartition) -> Option<Value> {
        self.store
            .offsets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(
                self.connector.clone(),
                Value::Object(partition.clone()).to_string(),
            ))
            .cloned()
    }
}
