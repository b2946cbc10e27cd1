//! Follows a topic (typically a compacted one that holds some state:
//! configs, offsets, status) from its beginning for as long as the
//! [`Tail`] lives, handing every record to a callback in order per
//! partition. A reader can wait until everything the topic held at some
//! moment is applied ([`Tail::catch_up`]), and a writer until its own
//! write is read back ([`Tail::wait_applied`]).
//!
//! It is a plain Kafka client (through `rdkafka`), so it works against
//! any broker. Partitions are assigned, not subscribed: the group id the
//! caller passes (librdkafka's consumers need one) is never joined, and
//! no offsets are committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tracing::warn;

/// Why following a topic failed.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// A request to the cluster failed; it may succeed later.
    #[error("{what}: {error}")]
    Kafka { what: String, error: KafkaError },
    /// The topic has no partitions (it does not exist yet, say).
    #[error("topic {0} has no partitions")]
    NoPartitions(String),
    /// The topic was not read to its end in time.
    #[error("reading {topic} to its end took longer than {timeout:?}")]
    CatchUpTimeout { topic: String, timeout: Duration },
    /// A record just written was not read back in time.
    #[error("{0} did not show a record just written to it")]
    NotApplied(String),
    /// A blocking request's task panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

impl TailError {
    /// Whether trying again may help: every error but a failed task.
    pub fn is_retriable(&self) -> bool {
        !matches!(self, TailError::Task(_))
    }
}

pub type TailResult<T> = Result<T, TailError>;

fn kafka_error(what: &str, error: KafkaError) -> TailError {
    TailError::Kafka {
        what: what.to_string(),
        error,
    }
}

/// A record of the followed topic: key and (unless a tombstone) value.
pub type KeyValue = (Vec<u8>, Option<Vec<u8>>);

/// Follows a topic from its beginning, handing every record to a
/// callback, in order per partition.
pub struct Tail {
    topic: String,
    consumer: Arc<StreamConsumer>,
    /// Next offset to apply, per partition.
    applied: watch::Receiver<HashMap<i32, i64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tail {
    /// Starts following `topic` with a consumer of `client`'s settings
    /// and `group_id`, and returns once everything it held when called is
    /// applied.
    pub async fn start(
        client: &ClientConfig,
        group_id: &str,
        topic: &str,
        mut apply: impl FnMut(KeyValue) + Send + 'static,
    ) -> TailResult<Tail> {
        let consumer: StreamConsumer = client
            .clone()
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .map_err(|e| kafka_error("creating a reader", e))?;
        let consumer = Arc::new(consumer);
        let partitions = {
            let (c, t) = (consumer.clone(), topic.to_string());
            tokio::task::spawn_blocking(move || {
                let md = c
                    .fetch_metadata(Some(&t), Duration::from_secs(30))
                    .map_err(|e| kafka_error(&format!("metadata of {t}"), e))?;
                Ok::<_, TailError>(
                    md.topics()
                        .first()
                        .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
                        .unwrap_or_default(),
                )
            })
            .await??
        };
        if partitions.is_empty() {
            return Err(TailError::NoPartitions(topic.to_string()));
        }
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition_offset(topic, *p, Offset::Beginning)
                .map_err(|e| kafka_error("assign", e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| kafka_error("assign", e))?;
        let (tx, rx) = watch::channel(partitions.iter().map(|p| (*p, 0)).collect());
        let c = consumer.clone();
        let t = topic.to_string();
        let task = tokio::spawn(async move {
            loop {
                match tokio::time::timeout(Duration::from_millis(200), c.recv()).await {
                    Ok(Ok(m)) => {
                        let (p, o) = (m.partition(), m.offset());
                        apply((
                            m.key().unwrap_or_default().to_vec(),
                            m.payload().map(<[u8]>::to_vec),
                        ));
                        tx.send_modify(|a: &mut HashMap<i32, i64>| {
                            a.insert(p, o + 1);
                        });
                    }
                    Ok(Err(e)) => {
                        warn!(topic = %t, error = %e, "reading an internal topic");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    // Idle: everything fetched is applied. Compaction and
                    // transaction markers leave offsets without records.
                    Err(_) => {
                        if let Ok(position) = c.position() {
                            tx.send_if_modified(|a| {
                                let mut changed = false;
                                for e in position.elements() {
                                    if let Offset::Offset(o) = e.offset() {
                                        let at = a.entry(e.partition()).or_insert(0);
                                        if o > *at {
                                            *at = o;
                                            changed = true;
                                        }
                                    }
                                }
                                changed
                            });
                        }
                    }
                }
            }
        });
        let tail = Tail {
            topic: topic.to_string(),
            consumer,
            applied: rx,
            task,
        };
        tail.catch_up(Duration::from_secs(60)).await?;
        Ok(tail)
    }

    /// Waits until every record the topic holds now is applied.
    pub async fn catch_up(&self, timeout: Duration) -> TailResult<()> {
        let ends = {
            let (c, t) = (self.consumer.clone(), self.topic.clone());
            let partitions: Vec<i32> = self.applied.borrow().keys().copied().collect();
            tokio::task::spawn_blocking(move || {
                let mut ends = Vec::new();
                for p in partitions {
                    let (_, high) = c
                        .fetch_watermarks(&t, p, Duration::from_secs(10))
                        .map_err(|e| kafka_error(&format!("end of {t}"), e))?;
                    ends.push((p, high));
                }
                Ok::<_, TailError>(ends)
            })
            .await??
        };
        let mut rx = self.applied.clone();
        let reached = tokio::time::timeout(
            timeout,
            rx.wait_for(|a| {
                ends.iter()
                    .all(|(p, end)| a.get(p).is_some_and(|o| o >= end))
            }),
        )
        .await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(TailError::CatchUpTimeout {
                topic: self.topic.clone(),
                timeout,
            }),
        }
    }

    /// Waits until the record at `offset` of `partition` is applied.
    pub async fn wait_applied(&self, partition: i32, offset: i64) -> TailResult<()> {
        let mut rx = self.applied.clone();
        let reached = tokio::time::timeout(
            Duration::from_secs(30),
            rx.wait_for(|a| a.get(&partition).is_some_and(|o| *o > offset)),
        )
        .await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(TailError::NotApplied(self.topic.clone())),
        }
    }
}
