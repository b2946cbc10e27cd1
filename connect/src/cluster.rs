//! What workers sharing a `group.id` need to work as one cluster.
//!
//! - [`Tail`] follows an internal topic for as long as the worker runs, so
//!   every worker sees every other worker's writes (configs, status,
//!   offsets), and a writer can wait until its own write is applied.
//! - [`Membership`] is a consumer group membership (librdkafka's, on any
//!   Kafka broker): its members are the live workers. The broker drops a
//!   worker that stops heartbeating (SIGKILL, partition) after
//!   `session.timeout.ms`, and every survivor hears of the rebalance.
//! - [`assign`] spreads connectors and tasks over the members. Every
//!   worker computes it from the same inputs (the member list and the
//!   configs) and runs only its own share, so no leader is needed.
//!
//! Between a change and the moment every worker has seen it, two workers
//! may both run a task for a moment (or none may). Delivery stays
//! at-least-once: a sink task's consumer group splits partitions between
//! the two, and a source task's duplicates are what at-least-once allows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio::sync::{watch, Notify};
use tracing::{debug, warn};

use crate::plugin::{ConnectError, ConnectResult};
use crate::store::KeyValue;

fn kafka_error(what: &str, e: impl std::fmt::Display) -> ConnectError {
    ConnectError::retriable(format!("{what}: {e}"))
}

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
    /// Starts following `topic`, and returns once everything it held when
    /// called is applied.
    pub async fn start(
        client: &ClientConfig,
        topic: &str,
        mut apply: impl FnMut(KeyValue) + Send + 'static,
    ) -> ConnectResult<Tail> {
        let consumer: StreamConsumer = client
            .clone()
            .set("group.id", "runnel-connect-reader")
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
                Ok::<_, ConnectError>(
                    md.topics()
                        .first()
                        .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
                        .unwrap_or_default(),
                )
            })
            .await
            .map_err(|e| ConnectError::fatal(e.to_string()))??
        };
        if partitions.is_empty() {
            return Err(ConnectError::retriable(format!(
                "topic {topic} has no partitions"
            )));
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
    pub async fn catch_up(&self, timeout: Duration) -> ConnectResult<()> {
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
                Ok::<_, ConnectError>(ends)
            })
            .await
            .map_err(|e| ConnectError::fatal(e.to_string()))??
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
            _ => Err(ConnectError::retriable(format!(
                "reading {} to its end took longer than {timeout:?}",
                self.topic
            ))),
        }
    }

    /// Waits until the record at `offset` of `partition` is applied.
    pub async fn wait_applied(&self, partition: i32, offset: i64) -> ConnectResult<()> {
        let mut rx = self.applied.clone();
        let reached = tokio::time::timeout(
            Duration::from_secs(30),
            rx.wait_for(|a| a.get(&partition).is_some_and(|o| *o > offset)),
        )
        .await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ConnectError::retriable(format!(
                "{} did not show a record just written to it",
                self.topic
            ))),
        }
    }
}

/// Wakes the worker when its group rebalances.
pub struct MemberContext {
    changed: Arc<Notify>,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        debug!(?rebalance, "connect group rebalanced");
        self.changed.notify_one();
    }
}

/// This worker's membership of the workers' group.
pub struct Membership {
    group: String,
    /// The client id this worker joined with: unique per process.
    me: String,
    consumer: Arc<StreamConsumer<MemberContext>>,
    /// Notified on every rebalance.
    pub changed: Arc<Notify>,
    last: Mutex<Option<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Membership {
    /// Joins `group` as `worker_id` (made unique with a random suffix).
    /// The group subscribes to `topic` (any topic will do; its records
    /// are not used).
    pub fn join(
        client: &ClientConfig,
        group: &str,
        worker_id: &str,
        topic: &str,
        session_timeout: Duration,
    ) -> ConnectResult<Membership> {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let me = format!("{worker_id}#{}", &suffix[..8]);
        let changed = Arc::new(Notify::new());
        let session_ms = session_timeout.as_millis().clamp(1000, 300_000) as u64;
        let consumer: StreamConsumer<MemberContext> = client
            .clone()
            .set("group.id", group)
            .set("client.id", &me)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            .set("session.timeout.ms", session_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (session_ms / 4).max(250).to_string(),
            )
            .create_with_context(MemberContext {
                changed: changed.clone(),
            })
            .map_err(|e| kafka_error("joining the workers' group", e))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| kafka_error("joining the workers' group", e))?;
        let consumer = Arc::new(consumer);
        // The consumer must be polled to heartbeat and to rebalance.
        let c = consumer.clone();
        let group_name = group.to_string();
        let task = tokio::spawn(async move {
            let mut last_error = String::new();
            loop {
                if let Err(e) = c.recv().await {
                    // E.g. a session timeout outside the broker's limits:
                    // said once, not at every poll.
                    let error = e.to_string();
                    if error != last_error {
                        warn!(group = %group_name, %error, "the workers' group");
                        last_error = error;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        Ok(Membership {
            group: group.to_string(),
            me,
            consumer,
            changed,
            last: Mutex::new(None),
            task,
        })
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// Leaves the group now, so the others rebalance without waiting for
    /// the session to time out.
    pub fn leave(&self) {
        self.task.abort();
        self.consumer.unsubscribe();
    }

    /// The live workers (their client ids, sorted) when the group is
    /// stable and this worker is in it; else the last such list, or None
    /// before the first.
    pub async fn members(&self) -> Option<Vec<String>> {
        let (c, g) = (self.consumer.clone(), self.group.clone());
        let described = tokio::task::spawn_blocking(move || {
            c.fetch_group_list(Some(&g), Duration::from_secs(5))
                .ok()
                .and_then(|list| {
                    list.groups()
                        .iter()
                        .find(|gi| gi.name() == g)
                        .filter(|gi| gi.state() == "Stable")
                        .map(|gi| {
                            let mut m: Vec<String> = gi
                                .members()
                                .iter()
                                .map(|m| m.client_id().to_string())
                                .collect();
                            m.sort();
                            m.dedup();
                            m
                        })
                })
        })
        .await
        .ok()
        .flatten()
        .filter(|m| m.contains(&self.me));
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = described {
            *last = Some(m);
        }
        last.clone()
    }
}

/// One thing a worker runs: a connector (its status) or one of its tasks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unit {
    Connector(String),
    Task(String, usize),
}

/// Spreads units over members: connectors round-robin, then tasks
/// round-robin, continuing where the connectors stopped, so each worker
/// gets a near-equal share. `connectors` are (name, task count), in name
/// order; `members` sorted. Returns each unit's owner (an index into
/// `members`).
pub fn assign(connectors: &[(String, usize)], members: &[String]) -> Vec<(Unit, usize)> {
    let mut out = Vec::new();
    if members.is_empty() {
        return out;
    }
    let mut next = 0;
    for (name, _) in connectors {
        out.push((Unit::Connector(name.clone()), next % members.len()));
        next += 1;
    }
    for (name, tasks) in connectors {
        for t in 0..*tasks {
            out.push((Unit::Task(name.clone(), t), next % members.len()));
            next += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(out: &[(Unit, usize)], member: usize) -> Vec<Unit> {
        out.iter()
            .filter(|(_, m)| *m == member)
            .map(|(u, _)| u.clone())
            .collect()
    }

    #[test]
    fn units_are_spread_evenly_and_every_unit_has_one_owner() {
        let connectors = vec![("a".to_string(), 3), ("b".to_string(), 2)];
        let members = vec!["w1".to_string(), "w2".to_string()];
        let out = assign(&connectors, &members);
        assert_eq!(out.len(), 2 + 5);
        let (one, two) = (share(&out, 0), share(&out, 1));
        assert!(one.len().abs_diff(two.len()) <= 1, "{one:?} {two:?}");
        assert!(one.contains(&Unit::Connector("a".into())));
        assert!(two.contains(&Unit::Connector("b".into())));
        // Tasks of one connector land on different workers.
        assert!(one.contains(&Unit::Task("a".into(), 0)));
        assert!(two.contains(&Unit::Task("a".into(), 1)));
    }

    #[test]
    fn a_lone_worker_runs_everything_and_no_worker_runs_nothing() {
        let connectors = vec![("a".to_string(), 2)];
        let out = assign(&connectors, &["w".to_string()]);
        assert!(out.iter().all(|(_, m)| *m == 0));
        assert_eq!(out.len(), 3);
        assert!(assign(&connectors, &[]).is_empty());
    }

    #[test]
    fn every_worker_computes_the_same_assignment() {
        let connectors = vec![("x".to_string(), 4), ("y".to_string(), 1)];
        let members = vec!["a#1".to_string(), "b#2".to_string(), "c#3".to_string()];
        assert_eq!(assign(&connectors, &members), assign(&connectors, &members));
    }
}
