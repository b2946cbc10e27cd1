//! Internal topics every broker reads but not every broker holds: `_schemas`
//! for broker-side schema validation and `_runnel_transforms` for the
//! transforms' deployments, on a broker with no replica of them (a cluster
//! with more brokers than their replication factor, e.g. one grown with
//! broker-only nodes).
//!
//! [`FollowedTopic`] hands out the local partition 0 when this broker has
//! one, and otherwise a [`Mirror`]: a copy in memory of the committed
//! batches, kept by a task that follows the partition's leader with
//! consumer Fetch requests (long polls, answered as soon as the leader's
//! high watermark moves). A schema the registry just registered reaches
//! the mirror one fetch round trip after the registry's acks=all write is
//! committed; a produce naming an id the catalog does not know yet makes
//! the catalog read the mirror again first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::metadata::Metadata;
use crate::client::Client;
use crate::error::BrokerError;
use crate::internal_topic::{InternalPartition, InternalTopics};
use crate::storage::batch::BatchIter;
use crate::storage::ReadError;
use crate::util::lock;

/// A follower's long poll: the leader answers at once when it has more.
const MAX_WAIT_MS: i32 = 500;
/// Bytes asked for per Fetch.
const FETCH_BYTES: i32 = 4 << 20;
/// The most a mirror holds. The topics are compacted and small (a schema
/// is at most a few hundred KiB, a deployment a few MiB); past this the
/// mirror stops growing and says so.
const MAX_MIRROR_BYTES: usize = 256 << 20;
/// Connecting to and waiting for the leader (above the long poll).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the keeper looks whether the mirror is needed.
const KEEPER_INTERVAL: Duration = Duration::from_millis(250);
/// Between attempts when the leader is unknown or unreachable.
const RETRY: Duration = Duration::from_millis(200);

/// Partition 0 of one internal topic: the local replica when this broker
/// has one, else a [`Mirror`] of it.
pub struct FollowedTopic {
    metadata: Arc<Metadata>,
    topic: String,
    mirror: Mutex<Option<(Uuid, Arc<Mirror>)>>,
}

/// Where to read a followed topic now: its id, the partition, and a
/// receiver that changes when more is readable.
pub struct FollowedSource {
    pub topic_id: Uuid,
    pub partition: Arc<dyn InternalPartition>,
    pub changes: watch::Receiver<i64>,
}

impl FollowedTopic {
    /// Follows partition 0 of `topic` from now on (see
    /// [`keep_following`](Self::keep_following)).
    pub(super) fn start(metadata: Arc<Metadata>, topic: &str) -> Arc<FollowedTopic> {
        let followed = Arc::new(FollowedTopic {
            metadata,
            topic: topic.to_string(),
            mirror: Mutex::new(None),
        });
        followed.keep_following();
        followed
    }

    /// Starts (or drops) the mirror as the topic appears or a replica
    /// moves here, so it is filled before it is first read; ends with the
    /// last reference.
    fn keep_following(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(KEEPER_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(followed) = weak.upgrade() else {
                    return;
                };
                let _ = followed.source();
            }
        });
    }

    /// Where partition 0 is read now, if the topic exists.
    pub fn source(&self) -> Option<FollowedSource> {
        if let Some(topic) = self.metadata.topic(&self.topic) {
            if let Some(local) = topic.partition(0) {
                // A replica here now (created or moved here): the mirror's
                // task ends with its last reference.
                lock(&self.mirror).take();
                let changes = local.subscribe();
                return Some(FollowedSource {
                    topic_id: topic.id,
                    partition: local,
                    changes,
                });
            }
        }
        let id = self.metadata.image().topic_by_name(&self.topic)?.topic_id;
        let mut slot = lock(&self.mirror);
        let mirror = match slot.as_ref() {
            Some((mirrored, mirror)) if *mirrored == id => mirror.clone(),
            _ => {
                info!(topic = %self.topic, "no replica of the topic on this broker: following its leader");
                let mirror = Mirror::start(self.metadata.clone(), &self.topic, 0);
                *slot = Some((id, mirror.clone()));
                mirror
            }
        };
        let changes = mirror.end_tx.subscribe();
        Some(FollowedSource {
            topic_id: id,
            partition: mirror,
            changes,
        })
    }
}

impl InternalTopics for FollowedTopic {
    fn partition(&self, topic: &str, index: i32) -> Option<(Uuid, Arc<dyn InternalPartition>)> {
        if topic != self.topic || index != 0 {
            return InternalTopics::partition(&*self.metadata, topic, index);
        }
        self.source().map(|s| (s.topic_id, s.partition))
    }
}

/// The committed batches of one partition another broker leads, in
/// memory.
pub(super) struct Mirror {
    topic: String,
    index: i32,
    state: Mutex<MirrorState>,
    /// The end, announced after each fetch that moved it.
    end_tx: watch::Sender<i64>,
}

#[derive(Default)]
struct MirrorState {
    log_start: i64,
    /// The offset after the last batch held (the next to fetch).
    end: i64,
    /// (base offset, next offset, the batch as stored).
    batches: VecDeque<(i64, i64, Bytes)>,
    bytes: usize,
    full: bool,
}

impl Mirror {
    fn start(metadata: Arc<Metadata>, topic: &str, index: i32) -> Arc<Mirror> {
        let mirror = Arc::new(Mirror {
            topic: topic.to_string(),
            index,
            state: Mutex::new(MirrorState::default()),
            end_tx: watch::channel(0).0,
        });
        tokio::spawn(follow(Arc::downgrade(&mirror), metadata));
        mirror
    }

    /// Takes the whole batches of a fetch answer that start at or after
    /// the mirror's end.
    fn take(&self, records: &Bytes, log_start: i64) {
        let mut state = lock(&self.state);
        if log_start > state.log_start {
            state.log_start = log_start;
            while state
                .batches
                .front()
                .is_some_and(|(_, next, _)| *next <= log_start)
            {
                if let Some((_, _, bytes)) = state.batches.pop_front() {
                    state.bytes -= bytes.len();
                }
            }
            state.end = state.end.max(log_start);
        }
        for item in BatchIter::new(records, false) {
            let Ok((at, header)) = item else { break };
            let next = header.next_offset();
            if next <= state.end {
                continue;
            }
            if state.bytes + header.total_bytes() > MAX_MIRROR_BYTES {
                if !state.full {
                    warn!(topic = %self.topic, limit = MAX_MIRROR_BYTES, "the in-memory copy of the topic is full; later schemas are not seen by this broker's validation");
                    state.full = true;
                }
                return;
            }
            let batch = records.slice(at..at + header.total_bytes());
            state.bytes += batch.len();
            state.batches.push_back((header.base_offset, next, batch));
            state.end = next;
        }
        let end = state.end;
        drop(state);
        self.end_tx
            .send_if_modified(|e| std::mem::replace(e, end) != end);
    }

    /// The leader's log no longer has our position: start over from its
    /// log start.
    fn reset(&self, log_start: i64) {
        let mut state = lock(&self.state);
        *state = MirrorState {
            log_start,
            end: log_start,
            ..MirrorState::default()
        };
        drop(state);
        self.end_tx.send_replace(log_start);
    }

    fn end(&self) -> i64 {
        lock(&self.state).end
    }
}

impl InternalPartition for Mirror {
    fn index(&self) -> i32 {
        self.index
    }

    fn bounds(&self) -> (i64, i64) {
        let state = lock(&self.state);
        (state.log_start, state.end)
    }

    fn read(&self, offset: i64, max_bytes: usize) -> Result<Option<Bytes>, BrokerError> {
        let state = lock(&self.state);
        if offset < state.log_start {
            return Err(BrokerError::Read(ReadError::OffsetOutOfRange {
                offset,
                log_start: state.log_start,
                log_end: state.end,
            }));
        }
        let first = state
            .batches
            .partition_point(|(_, next, _)| *next <= offset);
        let mut out = BytesMut::new();
        for (_, _, batch) in state.batches.iter().skip(first) {
            if !out.is_empty() && out.len() + batch.len() > max_bytes {
                break;
            }
            out.extend_from_slice(batch);
        }
        Ok((!out.is_empty()).then(|| out.freeze()))
    }

    fn log_end(&self) -> i64 {
        self.end()
    }

    fn read_to_log_end(&self, offset: i64, max_bytes: usize) -> Result<Option<Bytes>, BrokerError> {
        self.read(offset, max_bytes)
    }

    fn append(self: Arc<Self>, _records: Bytes) -> BoxFuture<'static, Result<i64, BrokerError>> {
        let error = BrokerError::NotLeaderOrFollower(self.topic.clone(), self.index);
        Box::pin(async move { Err(error) })
    }
}

/// Follows the partition's leader until the mirror is dropped.
async fn follow(mirror: Weak<Mirror>, metadata: Arc<Metadata>) {
    let mut connection: Option<(i32, Client)> = None;
    loop {
        let Some(strong) = mirror.upgrade() else {
            return;
        };
        let (topic, index, offset) = (strong.topic.clone(), strong.index, strong.end());
        drop(strong);
        let Some((leader, _, addr)) = metadata.partition_leader(&topic, index) else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        if connection.as_ref().is_none_or(|(id, _)| *id != leader) {
            let name = format!("runnel-schemas-mirror-{}", metadata.node_id);
            match tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(&addr, &name)).await {
                Ok(Ok(mut client)) => {
                    client.set_timeout(REQUEST_TIMEOUT);
                    connection = Some((leader, client));
                }
                Ok(Err(e)) => {
                    debug!(leader, %addr, error = %e, "connecting to the leader of {topic}");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
                Err(_) => {
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
        }
        let (_, client) = connection.as_mut().expect("connected above");
        let response: FetchResponse =
            match client.send_version(&fetch(&topic, index, offset), 12).await {
                Ok(response) => response,
                Err(e) => {
                    debug!(leader, error = %e, "fetching {topic} from its leader");
                    connection = None;
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
        let Some(answer) = response
            .responses
            .first()
            .and_then(|t| t.partitions.first())
        else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let Some(strong) = mirror.upgrade() else {
            return;
        };
        match answer.error_code {
            0 => {
                if let Some(records) = &answer.records {
                    strong.take(records, answer.log_start_offset);
                }
            }
            code if code == ResponseError::OffsetOutOfRange.code() => {
                info!(%topic, offset, log_start = answer.log_start_offset, "the leader no longer has the mirror's position; copying the topic again");
                strong.reset(answer.log_start_offset.max(0));
            }
            code => {
                debug!(%topic, leader, code, "the leader refused a fetch; looking again");
                connection = None;
                drop(strong);
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// A consumer's Fetch of one partition from `offset` (committed records
/// only: a consumer reads up to the high watermark).
fn fetch(topic: &str, index: i32, offset: i64) -> FetchRequest {
    let mut p = FetchPartition::default();
    p.partition = index;
    p.fetch_offset = offset;
    p.partition_max_bytes = FETCH_BYTES;
    p.current_leader_epoch = -1;
    p.last_fetched_epoch = -1;
    p.log_start_offset = -1;
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions = vec![p];
    let mut request = FetchRequest::default();
    request.replica_id = (-1).into();
    request.max_wait_ms = MAX_WAIT_MS;
    request.min_bytes = 1;
    request.max_bytes = FETCH_BYTES;
    request.topics = vec![t];
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::tests::make_batch;
    use kafka_protocol::records::Compression;

    fn mirror() -> Mirror {
        Mirror {
            topic: "_schemas".into(),
            index: 0,
            state: Mutex::new(MirrorState::default()),
            end_tx: watch::channel(0).0,
        }
    }

    /// `counts` batches of those record counts, with offsets from `base`.
    fn batches(base: i64, counts: &[usize]) -> Bytes {
        let mut out = BytesMut::new();
        let mut offset = base;
        for &n in counts {
            let mut batch = BytesMut::from(&make_batch(n, 10, Compression::None)[..]);
            batch[0..8].copy_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&batch);
            offset += n as i64;
        }
        out.freeze()
    }

    #[test]
    fn a_mirror_serves_whole_batches_from_an_offset_and_takes_each_batch_once() {
        let m = mirror();
        m.take(&batches(0, &[2, 3]), 0);
        // An answer overlapping what is held (a fetch that raced) adds
        // only the new batch.
        m.take(&batches(2, &[3, 1]), 0);
        assert_eq!(m.bounds(), (0, 6));
        let all = m.read(0, 1 << 20).unwrap().unwrap();
        assert_eq!(all, batches(0, &[2, 3, 1]));
        // From inside the second batch: that batch whole, then the rest.
        assert_eq!(m.read(3, 1 << 20).unwrap().unwrap(), batches(2, &[3, 1]));
        // At most max_bytes, but the first batch whole.
        assert_eq!(m.read(2, 1).unwrap().unwrap(), batches(2, &[3]));
        assert!(m.read(6, 1 << 20).unwrap().is_none());
        // A partial batch at the end of an answer waits for the next one.
        let next = batches(6, &[2]);
        m.take(&next.slice(..next.len() - 1), 0);
        assert_eq!(m.log_end(), 6);
    }

    #[test]
    fn a_mirror_follows_the_leaders_log_start_and_starts_over_when_reset() {
        let m = mirror();
        m.take(&batches(0, &[2, 3]), 0);
        m.take(&Bytes::new(), 2);
        assert_eq!(m.bounds(), (2, 5));
        assert!(matches!(
            m.read(0, 1 << 20),
            Err(BrokerError::Read(ReadError::OffsetOutOfRange {
                log_start: 2,
                ..
            }))
        ));
        m.reset(10);
        assert_eq!(m.bounds(), (10, 10));
        m.take(&batches(10, &[1]), 10);
        assert_eq!(m.read(10, 1 << 20).unwrap().unwrap(), batches(10, &[1]));
    }
}
