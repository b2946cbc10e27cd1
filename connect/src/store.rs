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
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use runnel_tail::Tail;
use serde_json::Value;

use crate::cluster::READER_GROUP;
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

pub use runnel_tail::KeyValue;

/// Writes one record and waits until it is stored: its (partition,
/// offset).
pub async fn write(
    producer: &FutureProducer,
    topic: &str,
    key: &[u8],
    value: Option<&[u8]>,
) -> ConnectResult<(i32, i64)> {
    let mut record = FutureRecord::<[u8], [u8]>::to(topic).key(key);
    if let Some(v) = value {
        record = record.payload(v);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|d| (d.partition, d.offset))
        .map_err(|(e, _)| kafka_error(&format!("writing to {topic}"), e))
}

/// Committed source offsets of every connector, kept in memory and in
/// `connect-offsets`, which it follows: offsets other workers commit show
/// up here, so a task moved to this worker resumes where it stopped.
pub struct OffsetStore {
    topic: String,
    producer: FutureProducer,
    /// (connector, partition JSON) → offset.
    offsets: Arc<Mutex<HashMap<(String, String), Value>>>,
    tail: Tail,
}

fn offset_key(connector: &str, partition: &SourcePartition) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!([connector, partition])).unwrap_or_default()
}

/// Applies one `connect-offsets` record.
fn apply_offset(offsets: &Mutex<HashMap<(String, String), Value>>, (key, value): KeyValue) {
    let Ok(Value::Array(parts)) = serde_json::from_slice::<Value>(&key) else {
        return;
    };
    let (Some(Value::String(name)), Some(partition)) = (parts.first(), parts.get(1)) else {
        return;
    };
    let k = (name.clone(), partition.to_string());
    let mut offsets = offsets.lock().unwrap_or_else(|e| e.into_inner());
    match value.and_then(|v| serde_json::from_slice::<Value>(&v).ok()) {
        Some(v) => {
            offsets.insert(k, v);
        }
        None => {
            offsets.remove(&k);
        }
    }
}

impl OffsetStore {
    /// Reads `topic` to its end, then keeps following it.
    pub async fn follow(
        client: &ClientConfig,
        producer: FutureProducer,
        topic: &str,
    ) -> ConnectResult<OffsetStore> {
        let offsets = Arc::new(Mutex::new(HashMap::new()));
        let o = offsets.clone();
        let tail = Tail::start(client, READER_GROUP, topic, move |kv| apply_offset(&o, kv)).await?;
        Ok(OffsetStore {
            topic: topic.to_string(),
            producer,
            offsets,
            tail,
        })
    }

    /// Waits until every offset committed so far (by any worker) is known.
    pub async fn catch_up(&self) -> ConnectResult<()> {
        Ok(self.tail.catch_up(Duration::from_secs(30)).await?)
    }

    /// Stores offsets durably, then remembers them.
    pub async fn commit(
        &self,
        connector: &str,
        offsets: &HashMap<String, (Arc<SourcePartition>, Value)>,
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
