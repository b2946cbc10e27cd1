//! The follower side of replication: one task per leader broker fetches
//! every partition this broker follows from that leader, with Kafka's own
//! Fetch (v12, this broker's id as `replica_id`, each partition's log end
//! and last fetched epoch), and appends what comes back with the leader's
//! offsets and epochs (`PartitionLog::append_as_follower`).
//!
//! A log that diverged from the leader's (a tail written in an older leader
//! epoch that the leader does not have) is cut where the leader's
//! `diverging_epoch` answer says (KIP-320 / KIP-279, through
//! `replication::truncation_offset`), never at the high watermark alone.
//! The follower's high watermark is the leader's, bounded by its own log
//! end, and its log start follows the leader's (`replication::after_fetch`).
//!
//! `apply_image` hands the set of followed partitions over after every
//! metadata change ([`ReplicaFetchers::update`]); a leader no longer
//! followed loses its task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::partition::Partition;
use crate::client::Client;
use crate::controller::records::BrokerId;
use crate::replication::{
    after_fetch, out_of_range_reset, truncation_offset, EpochEndOffset, OutOfRangeReset,
};
use crate::util::{lock, now_ms};

/// How long a follower's fetch waits at the leader for new records.
const FETCH_MAX_WAIT_MS: i32 = 500;
/// Bytes per partition and per fetch.
const PARTITION_MAX_BYTES: i32 = 1 << 20;
const FETCH_MAX_BYTES: i32 = 16 << 20;
/// Pause after a failed connection or request.
const BACKOFF: Duration = Duration::from_millis(200);
/// A partition whose answer was an error the metadata settles (its leader
/// has not applied the change that made it leader yet, or has moved on) is
/// left out of the fetches for this long, doubled after each further
/// error up to `PARTITION_BACKOFF_MAX`; the others are fetched meanwhile.
const PARTITION_BACKOFF: Duration = Duration::from_millis(20);
const PARTITION_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Longest wait for one fetch answer (beyond the leader's wait).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One partition this broker follows.
#[derive(Clone)]
pub(super) struct Followed {
    pub partition: Arc<Partition>,
    /// The leader epoch of the metadata that made this broker a follower.
    pub leader_epoch: i32,
}

struct Fetcher {
    addr: String,
    partitions: Arc<Mutex<Vec<Followed>>>,
    /// Bumped when partitions (or new leader epochs of them) are added:
    /// a fetch in flight does not name them and may wait at the leader
    /// for up to `FETCH_MAX_WAIT_MS`, so it is cut short.
    added: watch::Sender<u64>,
    task: JoinHandle<()>,
}

/// Whether `wanted` names a partition, or a leader epoch of one, that
/// `current` does not.
fn adds_any(current: &[Followed], wanted: &[Followed]) -> bool {
    wanted.iter().any(|w| {
        !current
            .iter()
            .any(|c| Arc::ptr_eq(&c.partition, &w.partition) && c.leader_epoch == w.leader_epoch)
    })
}

/// The fetcher tasks of this broker, by leader.
pub(super) struct ReplicaFetchers {
    node_id: BrokerId,
    fetchers: Mutex<HashMap<BrokerId, Fetcher>>,
}

impl ReplicaFetchers {
    pub fn new(node_id: BrokerId) -> Self {
        ReplicaFetchers {
            node_id,
            fetchers: Mutex::new(HashMap::new()),
        }
    }

    /// Follows exactly `wanted`: leader id → (its Kafka listener, the
    /// partitions to fetch from it). Starts and stops tasks as needed.
    pub fn update(&self, wanted: HashMap<BrokerId, (String, Vec<Followed>)>) {
        let mut fetchers = lock(&self.fetchers);
        fetchers.retain(|leader, fetcher| {
            let keep = wanted
                .get(leader)
                .is_some_and(|(addr, _)| *addr == fetcher.addr);
            if !keep {
                fetcher.task.abort();
            }
            keep
        });
        for (leader, (addr, partitions)) in wanted {
            match fetchers.get(&leader) {
                Some(fetcher) => {
                    let added = {
                        let mut current = lock(&fetcher.partitions);
                        let added = adds_any(&current, &partitions);
                        *current = partitions;
                        added
                    };
                    if added {
                        fetcher.added.send_modify(|n| *n += 1);
                    }
                }
                None => {
                    let shared = Arc::new(Mutex::new(partitions));
                    let (added, added_rx) = watch::channel(0);
                    let task = tokio::spawn(fetch_loop(
                        self.node_id,
                        leader,
                        addr.clone(),
                        shared.clone(),
                        added_rx,
                    ));
                    fetchers.insert(
                        leader,
                        Fetcher {
                            addr,
                            partitions: shared,
                            added,
                            task,
                        },
                    );
                }
            }
        }
    }
}

impl Drop for ReplicaFetchers {
    fn drop(&mut self) {
        for fetcher in lock(&self.fetchers).values() {
            fetcher.task.abort();
        }
    }
}

/// A fetch of `partitions` that waits at the leader for at most
/// `max_wait_ms`.
fn fetch_request(node_id: BrokerId, partitions: &[Followed], max_wait_ms: i32) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for f in partitions {
        let (log_end, last_epoch, log_start) = {
            let log = f.partition.log();
            (
                log.log_end_offset(),
                log.latest_epoch().unwrap_or(-1),
                log.log_start_offset(),
            )
        };
        let mut p = FetchPartition::default();
        p.partition = f.partition.index;
        p.current_leader_epoch = f.leader_epoch;
        p.fetch_offset = log_end;
        p.last_fetched_epoch = last_epoch;
        p.log_start_offset = log_start;
        p.partition_max_bytes = PARTITION_MAX_BYTES;
        let name = TopicName(StrBytes::from_string(f.partition.topic.to_string()));
        match topics.iter_mut().find(|t| t.topic == name) {
            Some(t) => t.partitions.push(p),
            None => {
                let mut t = FetchTopic::default();
                t.topic = name;
                t.partitions = vec![p];
                topics.push(t);
            }
        }
    }
    let mut request = FetchRequest::default();
    request.replica_id = node_id.into();
    request.max_wait_ms = max_wait_ms;
    request.min_bytes = 1;
    request.max_bytes = FETCH_MAX_BYTES;
    request.topics = topics;
    request
}

/// Partitions left out of the fetches for a while after an error, by
/// partition and leader epoch (a new epoch starts without a pause).
#[derive(Default)]
struct Paused {
    until: HashMap<(Arc<str>, i32, i32), (std::time::Instant, Duration)>,
}

impl Paused {
    fn key(f: &Followed) -> (Arc<str>, i32, i32) {
        (f.partition.topic.clone(), f.partition.index, f.leader_epoch)
    }

    /// Pauses `f`: for `PARTITION_BACKOFF` after its first error, twice
    /// as long after each next one, up to `PARTITION_BACKOFF_MAX`.
    fn pause(&mut self, f: &Followed, now: std::time::Instant) {
        let pause = match self.until.get(&Self::key(f)) {
            Some((_, last)) => (*last * 2).min(PARTITION_BACKOFF_MAX),
            None => PARTITION_BACKOFF,
        };
        self.until.insert(Self::key(f), (now + pause, pause));
    }

    /// `f` was answered without an error.
    fn resume(&mut self, f: &Followed) {
        self.until.remove(&Self::key(f));
    }

    /// The partitions of `followed` to fetch at `now`, and when the
    /// earliest paused one may be fetched again. Forgets partitions no
    /// longer followed.
    fn ready(
        &mut self,
        followed: &[Followed],
        now: std::time::Instant,
    ) -> (Vec<Followed>, Option<std::time::Instant>) {
        let keys: std::collections::HashSet<_> = followed.iter().map(Self::key).collect();
        self.until.retain(|k, _| keys.contains(k));
        let mut next = None;
        let ready = followed
            .iter()
            .filter(|f| match self.until.get(&Self::key(f)) {
                Some((until, _)) if *until > now => {
                    next = Some(next.map_or(*until, |n: std::time::Instant| n.min(*until)));
                    false
                }
                _ => true,
            })
            .cloned()
            .collect();
        (ready, next)
    }
}

async fn fetch_loop(
    node_id: BrokerId,
    leader: BrokerId,
    addr: String,
    partitions: Arc<Mutex<Vec<Followed>>>,
    mut added: watch::Receiver<u64>,
) {
    let mut client: Option<Client> = None;
    let mut paused = Paused::default();
    loop {
        // Seen before the set is read: an addition after this point cuts
        // the fetch built from it short.
        added.borrow_and_update();
        let all = lock(&partitions).clone();
        let (followed, next) = paused.ready(&all, std::time::Instant::now());
        if followed.is_empty() {
            // Nothing to fetch until a pause ends or a partition is added.
            let wake = next.unwrap_or_else(|| std::time::Instant::now() + BACKOFF);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                more = added.changed() => if more.is_err() {
                    return;
                },
            }
            continue;
        }
        if client.is_none() {
            match Client::connect(&addr, &format!("runnel-replica-{node_id}")).await {
                Ok(mut c) => {
                    c.set_timeout(REQUEST_TIMEOUT);
                    client = Some(c);
                }
                Err(e) => {
                    debug!(leader, %addr, error = %e, "replica fetcher cannot reach the leader");
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            }
        }
        // A paused partition is fetched again when its pause ends: the
        // leader does not hold this fetch longer.
        let max_wait_ms = next.map_or(FETCH_MAX_WAIT_MS, |until| {
            let left = until.saturating_duration_since(std::time::Instant::now());
            (left.as_millis() as i32).clamp(0, FETCH_MAX_WAIT_MS)
        });
        let request = fetch_request(node_id, &followed, max_wait_ms);
        let connection = client.as_mut().expect("connected above");
        let sent = tokio::select! {
            sent = connection.send_version(&request, 12) => sent,
            more = added.changed() => {
                if more.is_err() {
                    // The fetcher was removed.
                    return;
                }
                // The answer to the fetch in flight is not awaited: its
                // connection goes, and the next fetch names every partition.
                client = None;
                continue;
            }
        };
        let response: FetchResponse = match sent {
            Ok(r) => r,
            Err(e) => {
                debug!(leader, %addr, error = %e, "replica fetch failed");
                client = None;
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        if response.error_code != 0 {
            debug!(leader, code = response.error_code, "replica fetch refused");
            tokio::time::sleep(BACKOFF).await;
            continue;
        }
        let now = std::time::Instant::now();
        for topic in &response.responses {
            for p in &topic.partitions {
                let Some(f) = followed.iter().find(|f| {
                    *f.partition.topic == *topic.topic.0 && f.partition.index == p.partition_index
                }) else {
                    continue;
                };
                let records = p.records.clone().unwrap_or_default();
                let pause = apply_answer(
                    &f.partition,
                    f.leader_epoch,
                    p.error_code,
                    &records,
                    p.diverging_epoch.epoch,
                    p.diverging_epoch.end_offset,
                    p.high_watermark,
                    p.log_start_offset,
                );
                // An error the metadata will settle (a leader change): do
                // not spin on this partition, keep fetching the others.
                if pause {
                    paused.pause(f, now);
                } else {
                    paused.resume(f);
                }
            }
        }
    }
}

/// Applies one partition's fetch answer, from the leader of
/// `leader_epoch`; returns whether the fetcher should pause (an error that
/// new metadata settles).
///
/// An answer that arrives after the metadata moved on (this broker leads
/// the partition now, or follows it in another epoch) is dropped: the log
/// may no longer take the old leader's records or cuts. The check holds
/// the log's lock, under which `Partition::apply_state` changes both.
#[allow(clippy::too_many_arguments)]
fn apply_answer(
    partition: &Partition,
    leader_epoch: i32,
    error_code: i16,
    records: &Bytes,
    diverging_epoch: i32,
    diverging_end_offset: i64,
    leader_high_watermark: i64,
    leader_log_start: i64,
) -> bool {
    let now = now_ms();
    let name = format!("{}-{}", partition.topic, partition.index);
    let mut log = partition.log();
    if partition.deleted.load(std::sync::atomic::Ordering::Acquire) {
        // No longer a replica here (checked under the log's lock, which the
        // removal takes): nothing more is written.
        return false;
    }
    if partition.is_leader() || partition.leader_epoch() != leader_epoch {
        debug!(partition = %name, leader_epoch, "dropping a fetch answer from an earlier leader epoch");
        return false;
    }
    if error_code == ResponseError::OffsetOutOfRange.code() {
        // The answer carries the leader's log start and high watermark; the
        // high watermark stands in for its log end: cutting there loses
        // nothing the leader committed, and what lies above is fetched again.
        if leader_log_start < 0 || leader_high_watermark < 0 {
            return true;
        }
        let reset = out_of_range_reset(
            log.log_end_offset(),
            leader_log_start,
            leader_high_watermark,
        );
        let done = match reset {
            OutOfRangeReset::TruncateTo(offset) => log.truncate_to(offset, now).map(|_| ()),
            OutOfRangeReset::StartAt(offset) => log.truncate_fully_and_start_at(offset),
            OutOfRangeReset::FetchFrom(_) => Ok(()),
        };
        if let Err(e) = done {
            warn!(partition = %name, error = %e, "resetting an out-of-range follower log failed");
            return true;
        }
        partition.truncated_to(log.log_end_offset());
        return false;
    }
    if error_code != 0 {
        debug!(partition = %name, code = error_code, "the leader refused the replica fetch");
        return true;
    }
    if diverging_end_offset >= 0 {
        let cut = truncation_offset(
            log.epochs(),
            log.log_end_offset(),
            EpochEndOffset {
                epoch: diverging_epoch,
                end_offset: diverging_end_offset,
            },
        );
        if cut.offset < log.log_end_offset() {
            warn!(partition = %name, from = log.log_end_offset(), to = cut.offset, epoch = diverging_epoch, "truncating a divergent follower log");
            if let Err(e) = log.truncate_to(cut.offset, now) {
                warn!(partition = %name, error = %e, "truncating the follower log failed");
                return true;
            }
            partition.truncated_to(log.log_end_offset());
        }
        return false;
    }
    if !records.is_empty() {
        if let Err(e) = log.append_as_follower(records, now) {
            warn!(partition = %name, error = %e, "appending the leader's records failed");
            return true;
        }
    }
    let offsets = after_fetch(
        log.log_start_offset(),
        log.log_end_offset(),
        leader_high_watermark,
        leader_log_start,
    );
    if offsets.log_start_offset > log.log_start_offset() {
        if let Err(e) = log.delete_records_before(offsets.log_start_offset, offsets.high_watermark)
        {
            warn!(partition = %name, error = %e, "following the leader's log start failed");
        }
    }
    // Still under the log's lock: a leadership applied meanwhile would
    // start from this high watermark, never see it arrive afterwards.
    partition.set_follower_high_watermark(offsets.high_watermark);
    drop(log);
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::metrics::StorageHealth;
    use crate::controller::image::PartitionState;
    use crate::storage::batch::tests::make_batch;
    use crate::storage::{LogConfig, PartitionLog};
    use kafka_protocol::records::Compression;

    fn partition(dir: &std::path::Path) -> Arc<Partition> {
        let (log, _) = PartitionLog::open(dir, LogConfig::default(), 0, 0, 0).unwrap();
        Arc::new(Partition::new(
            "t".into(),
            0,
            log,
            Arc::new(StorageHealth::default()),
        ))
    }

    fn state(leader: BrokerId, leader_epoch: i32) -> PartitionState {
        PartitionState {
            replicas: vec![1, 2],
            isr: vec![1, 2],
            leader,
            leader_epoch,
            partition_epoch: leader_epoch,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    /// Two batches of three records node 1 appended as leader in `epoch`,
    /// as its log holds them (what fetch answers carry).
    async fn written_by_leader(dir: &std::path::Path, epoch: i32) -> (Bytes, Bytes) {
        let old_leader = partition(dir);
        old_leader.apply_state(1, &state(1, epoch));
        for _ in 0..2 {
            old_leader
                .append(&make_batch(3, 10, Compression::None))
                .await
                .unwrap();
        }
        let both = old_leader
            .read_for_follower(0, 1 << 20)
            .unwrap()
            .unwrap()
            .read()
            .unwrap();
        let half = both.len() / 2;
        (both.slice(..half), both.slice(half..))
    }

    #[test]
    fn a_new_partition_or_leader_epoch_is_an_addition_a_removal_is_not() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (p, q) = (partition(a.path()), partition(b.path()));
        let followed = |partition: &Arc<Partition>, leader_epoch| Followed {
            partition: partition.clone(),
            leader_epoch,
        };
        let current = vec![followed(&p, 3)];
        assert!(!adds_any(&current, &current));
        assert!(!adds_any(&current, &[]));
        assert!(adds_any(&current, &[followed(&p, 3), followed(&q, 1)]));
        assert!(adds_any(&current, &[followed(&p, 4)]));
        assert!(!adds_any(&[followed(&p, 3), followed(&q, 1)], &current));
    }

    #[test]
    fn a_partition_answered_with_an_error_pauses_alone_and_longer_each_time() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (p, q) = (partition(a.path()), partition(b.path()));
        let followed = |partition: &Arc<Partition>, leader_epoch| Followed {
            partition: partition.clone(),
            leader_epoch,
        };
        let ms = Duration::from_millis;
        let all = vec![followed(&p, 3), followed(&q, 1)];
        let t0 = std::time::Instant::now();
        let mut paused = Paused::default();
        paused.pause(&all[0], t0);
        let (ready, next) = paused.ready(&all, t0);
        assert_eq!(ready.len(), 1, "the other partition is still fetched");
        assert!(Arc::ptr_eq(&ready[0].partition, &q));
        assert_eq!(next, Some(t0 + PARTITION_BACKOFF));
        assert_eq!(paused.ready(&all, t0 + PARTITION_BACKOFF).0.len(), 2);

        // A second error in a row pauses it twice as long.
        let t1 = t0 + PARTITION_BACKOFF;
        paused.pause(&all[0], t1);
        assert_eq!(paused.ready(&all, t1 + ms(39)).0.len(), 1);
        assert_eq!(paused.ready(&all, t1 + ms(40)).0.len(), 2);
        for _ in 0..10 {
            paused.pause(&all[0], t1);
        }
        assert_eq!(paused.ready(&all, t1).1, Some(t1 + PARTITION_BACKOFF_MAX));

        // An answer without error, or a new leader epoch, ends the pause.
        paused.resume(&all[0]);
        assert_eq!(paused.ready(&all, t1).0.len(), 2);
        paused.pause(&all[0], t1);
        assert_eq!(paused.ready(&[followed(&p, 4)], t1).0.len(), 1);
    }

    #[tokio::test]
    async fn an_answer_from_the_previous_leader_is_dropped_once_this_broker_leads() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (records, _) = written_by_leader(a.path(), 3).await;
        // Node 2 followed node 1 in epoch 3, then became the leader in
        // epoch 4 while a fetch from node 1 was in flight.
        let p = partition(b.path());
        p.apply_state(2, &state(1, 3));
        p.apply_state(2, &state(2, 4));
        apply_answer(&p, 3, 0, &records, -1, -1, 3, 0);
        assert_eq!(p.log().log_end_offset(), 0, "the old leader's records");
        assert_eq!(p.high_watermark(), 0);
        assert_eq!(p.end_offset_for_epoch(4).unwrap(), (4, 0));

        // The new leader's own records are not cut by the old leader's
        // diverging-epoch answer either.
        p.append(&make_batch(2, 10, Compression::None))
            .await
            .unwrap();
        apply_answer(&p, 3, 0, &Bytes::new(), 3, 0, 0, 0);
        assert_eq!(p.log().log_end_offset(), 2);
    }

    #[tokio::test]
    async fn only_answers_for_the_epoch_this_broker_follows_are_appended() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (first, second) = written_by_leader(a.path(), 3).await;
        let p = partition(b.path());
        p.apply_state(2, &state(1, 3));
        apply_answer(&p, 3, 0, &first, -1, -1, 3, 0);
        assert_eq!(p.log().log_end_offset(), 3);
        assert_eq!(p.high_watermark(), 3);
        // Node 1 still leads, but the metadata moved to epoch 5 while a
        // fetch sent in epoch 3 was in flight: its answer is not taken.
        p.apply_state(2, &state(1, 5));
        apply_answer(&p, 3, 0, &second, -1, -1, 6, 0);
        assert_eq!(p.log().log_end_offset(), 3);
        apply_answer(&p, 5, 0, &second, -1, -1, 6, 0);
        assert_eq!(p.log().log_end_offset(), 6);
    }
}
