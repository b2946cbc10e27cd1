//! One live partition: its log behind a mutex, the high watermark (this
//! is its one owner: the log keeps only its end, and every read, the
//! latest offset and DeleteRecords are bounded by it here) announced to
//! waiting fetches, and the append path of a produce
//! (validation outside the lock, offset assignment and the write inside,
//! the fsync a topic's flush policy asks for). Failed writes are reported
//! to the broker's `StorageHealth`.
//!
//! What it is not: the list of partitions (a `Topic` holds them) or the
//! log itself (`storage::PartitionLog`).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::watch;

use super::metrics::{PartitionCounters, StorageHealth};
use crate::controller::image::PartitionState;
use crate::controller::records::BrokerId;
use crate::error::BrokerError;
use crate::replication::leader::{
    AlterIsrRequest, IsrRefusal, LeaderError, LeaderState, PartitionAssignment,
};
use crate::replication::{publish, ReplicationStatus};
use crate::storage::producer_state::AbortedTxn;
use crate::storage::validator;
use crate::storage::{AppendError, AppendInfo, PartitionLog, ReadSlice};
use crate::util::{lock, now_ms};

/// One partition: its log behind a mutex, and its high watermark,
/// announced on a channel to waiting fetches.
pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    pub(super) log: Mutex<PartitionLog>,
    /// The high watermark. On a single node: the log end after each
    /// append, once it is fsynced if the flush policy asks for that.
    high_watermark: watch::Sender<i64>,
    /// The leader epoch of the metadata this broker last applied.
    leader_epoch: AtomicI32,
    /// Whether this broker leads the partition (per the metadata image).
    leader: AtomicBool,
    /// What the leader knows of its followers (HW, ISR); `None` while not
    /// leading (and for a partition no metadata was applied to yet, which
    /// commits at its log end as a leader alone would).
    replication: Mutex<Option<LeaderState>>,
    /// The replication status `acks=all` produces wait on.
    status: watch::Sender<ReplicationStatus>,
    /// Replicas whose fetches showed they may join the ISR, for the next
    /// ISR check.
    may_join: Mutex<Vec<BrokerId>>,
    /// The log end, announced after each append so follower fetches
    /// waiting at the end wake at once.
    appended: watch::Sender<i64>,
    pub(super) deleted: AtomicBool,
    /// Where failed writes are counted and logged (the broker's metrics).
    storage: Arc<StorageHealth>,
    /// Produced and fetched bytes and records (the partition's metrics).
    pub counters: PartitionCounters,
}

/// Offsets of a partition at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub log_start: i64,
    pub high_watermark: i64,
    /// The last stable offset: read_committed consumers read below it (the
    /// high watermark, or the first offset of the oldest open transaction
    /// if lower).
    pub last_stable: i64,
    pub log_end: i64,
}

/// The last stable offset of `log` under `high_watermark`.
fn last_stable(log: &PartitionLog, high_watermark: i64) -> i64 {
    log.first_unstable_offset()
        .map_or(high_watermark, |o| o.min(high_watermark))
}

impl Partition {
    pub(super) fn new(
        topic: Arc<str>,
        index: i32,
        log: PartitionLog,
        storage: Arc<StorageHealth>,
    ) -> Partition {
        // Everything a restart recovered counts as committed, unless the
        // high watermark checkpoint says less (`reopened_at_high_watermark`).
        let (high_watermark, _) = watch::channel(log.log_end_offset());
        let (appended, _) = watch::channel(log.log_end_offset());
        let (status, _) = watch::channel(ReplicationStatus {
            high_watermark: log.log_end_offset(),
            in_sync_replicas: 1,
            replicas: 1,
            leader_epoch: 0,
            leading: true,
        });
        Partition {
            topic,
            index,
            log: Mutex::new(log),
            high_watermark,
            leader_epoch: AtomicI32::new(0),
            leader: AtomicBool::new(true),
            replication: Mutex::new(None),
            status,
            may_join: Mutex::new(Vec::new()),
            appended,
            deleted: AtomicBool::new(false),
            storage,
            counters: PartitionCounters::default(),
        }
    }

    /// Counts and (rate-limited) logs a failed write of this partition.
    pub(super) fn write_failed(&self, error: &io::Error) {
        let dir = lock(&self.log).dir().to_path_buf();
        self.storage
            .write_failed(&self.topic, self.index, &dir, error, Instant::now());
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// Whether this broker leads the partition now.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    /// Applies the partition's state from the metadata, as broker `node`:
    /// leader (a new leader epoch is recorded at the log end; the follower
    /// state starts over) or not. Appends after this carry the epoch.
    pub(super) fn apply_state(&self, node: BrokerId, state: &PartitionState) {
        let leader = state.leader == node;
        let leader_epoch = state.leader_epoch;
        let mut log = lock(&self.log);
        if leader && leader_epoch > self.leader_epoch() {
            if let Err(e) = log.begin_leader_epoch(leader_epoch) {
                // The epoch is recorded with the next append instead.
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "recording a new leader epoch failed");
            }
        }
        let log_end = log.log_end_offset();
        let mut replication = lock(&self.replication);
        if leader {
            let assignment = PartitionAssignment {
                leader_epoch,
                partition_epoch: state.partition_epoch,
                replicas: state.replicas.clone(),
                isr: state.isr.clone(),
            };
            let now = now_ms();
            match replication.as_mut() {
                Some(l) if l.leader_epoch() == leader_epoch => {
                    l.apply_metadata(assignment, log_end, now);
                }
                _ => {
                    *replication = Some(LeaderState::new(
                        node,
                        assignment,
                        log_end,
                        self.high_watermark(),
                        now,
                    ))
                }
            }
            let l = replication.as_ref().expect("set above");
            self.publish_high_watermark(l.high_watermark());
            publish(&self.status, l.status());
        } else {
            *replication = None;
            let current = *self.status.borrow();
            publish(&self.status, current.not_leading());
        }
        self.leader_epoch.store(leader_epoch, Ordering::Release);
        self.leader.store(leader, Ordering::Release);
    }

    /// Right after opening: the high watermark checkpointed before the
    /// restart, if below the log end (a tail the ISR may not have had).
    pub(super) fn reopened_at_high_watermark(&self, checkpointed: i64) {
        let log_start = lock(&self.log).log_start_offset();
        self.high_watermark.send_if_modified(|hw| {
            let lower = checkpointed.max(log_start);
            let moved = lower < *hw;
            if moved {
                *hw = lower;
            }
            moved
        });
        let current = *self.status.borrow();
        publish(
            &self.status,
            ReplicationStatus {
                high_watermark: self.high_watermark(),
                ..current
            },
        );
    }

    /// A follower cut its log at `log_end` (a divergent or out-of-range
    /// tail): a high watermark above it moves down to it, as nothing above
    /// is on this replica any more. Call with the log's lock held.
    pub(super) fn truncated_to(&self, log_end: i64) {
        self.high_watermark.send_if_modified(|hw| {
            let moved = log_end < *hw;
            if moved {
                *hw = log_end;
            }
            moved
        });
    }

    /// Moves the high watermark up (never back) and wakes waiting fetches.
    fn publish_high_watermark(&self, high_watermark: i64) {
        self.high_watermark.send_if_modified(|hw| {
            let moved = high_watermark > *hw;
            if moved {
                *hw = high_watermark;
            }
            moved
        });
    }

    /// The leader committed up to its log end `log_end` by itself, or as
    /// far as its followers have it.
    fn local_append_done(&self, log_end: i64) {
        let mut replication = lock(&self.replication);
        match replication.as_mut() {
            None => {
                self.publish_high_watermark(log_end);
                let current = *self.status.borrow();
                publish(
                    &self.status,
                    ReplicationStatus {
                        high_watermark: self.high_watermark(),
                        ..current
                    },
                );
            }
            Some(l) => {
                if let Some(hw) = l.on_local_append(log_end) {
                    self.publish_high_watermark(hw);
                }
                publish(&self.status, l.status());
            }
        }
    }

    /// A follower fetched from `fetch_offset` (its log end): the leader
    /// counts it (the high watermark may move). Returns a replica that may
    /// join the ISR now, or an error for a broker holding no replica.
    pub fn follower_fetched(
        &self,
        follower: BrokerId,
        fetch_offset: i64,
    ) -> Result<Option<BrokerId>, BrokerError> {
        let (log_start, log_end) = {
            let log = lock(&self.log);
            (log.log_start_offset(), log.log_end_offset())
        };
        let not_leader = || BrokerError::NotLeaderOrFollower(self.topic.to_string(), self.index);
        let mut replication = lock(&self.replication);
        let Some(l) = replication.as_mut() else {
            return Err(not_leader());
        };
        let outcome = l
            .on_follower_fetch(follower, fetch_offset, log_end, now_ms())
            .map_err(|e| match e {
                // The follower resets from the offsets in the answer.
                LeaderError::FetchBeyondLogEnd { .. } => {
                    BrokerError::Read(crate::storage::ReadError::OffsetOutOfRange {
                        offset: fetch_offset,
                        log_start,
                        log_end,
                    })
                }
                LeaderError::NotAReplica(_) => not_leader(),
                other => BrokerError::InvalidRequest(other.to_string()),
            })?;
        if let Some(hw) = outcome.high_watermark {
            self.publish_high_watermark(hw);
        }
        publish(&self.status, l.status());
        drop(replication);
        if let Some(joining) = outcome.expand_isr {
            let mut may_join = lock(&self.may_join);
            if !may_join.contains(&joining) {
                may_join.push(joining);
            }
        }
        Ok(outcome.expand_isr)
    }

    /// Whether `acks=all` may append: the committed ISR reaches
    /// `min.insync.replicas` (bounded by the replication factor).
    pub fn enough_replicas(&self, min_isr: usize) -> bool {
        match lock(&self.replication).as_ref() {
            Some(l) => l.enough_replicas(min_isr),
            None => true,
        }
    }

    /// The ISR change this leader wants now, if any: members that lag by
    /// more than `replica_lag_time_max_ms` leave, replicas that caught up
    /// join. The change is in flight until the metadata settles it.
    pub(super) fn isr_change(&self, replica_lag_time_max_ms: i64) -> Option<AlterIsrRequest> {
        let joining: Vec<BrokerId> = std::mem::take(&mut *lock(&self.may_join));
        let mut replication = lock(&self.replication);
        let l = replication.as_mut()?;
        if l.in_flight().is_some() {
            return None;
        }
        let lagging = l.lagging_replicas(now_ms(), replica_lag_time_max_ms);
        let mut new_isr: Vec<BrokerId> = l
            .isr()
            .iter()
            .copied()
            .filter(|b| !lagging.contains(b))
            .collect();
        for b in joining {
            if l.replicas().contains(&b) && !new_isr.contains(&b) {
                new_isr.push(b);
            }
        }
        if new_isr == l.isr() {
            return None;
        }
        l.propose_isr(new_isr).ok()
    }

    /// The controller refused (or did not answer) an ISR change.
    pub(super) fn isr_refused(&self, request: &AlterIsrRequest, refusal: IsrRefusal) {
        if let Some(l) = lock(&self.replication).as_mut() {
            l.isr_refused(request, refusal);
            publish(&self.status, l.status());
        }
    }

    /// For a follower's fetch (Fetch v12+): whether its log, ending at
    /// `fetch_offset` with a last batch of `last_fetched_epoch`, diverged
    /// from this leader's, and where it must truncate to.
    pub fn diverging_epoch(
        &self,
        last_fetched_epoch: i32,
        fetch_offset: i64,
    ) -> Result<
        Option<crate::replication::EpochEndOffset>,
        crate::replication::UnknownLastFetchedEpoch,
    > {
        let log = lock(&self.log);
        crate::replication::follower::diverging_epoch(
            log.epochs(),
            log.log_end_offset(),
            last_fetched_epoch,
            fetch_offset,
        )
    }

    /// The status `acks=all` waits on.
    pub fn replication_status(&self) -> watch::Receiver<ReplicationStatus> {
        self.status.subscribe()
    }

    /// A receiver that wakes when the log end moves (follower fetches).
    pub fn subscribe_appends(&self) -> watch::Receiver<i64> {
        self.appended.subscribe()
    }

    /// With the log's lock held: the log, for the follower fetcher.
    pub(super) fn log(&self) -> std::sync::MutexGuard<'_, PartitionLog> {
        lock(&self.log)
    }

    /// A follower's high watermark, from its leader's fetch answer.
    pub(super) fn set_follower_high_watermark(&self, high_watermark: i64) {
        self.publish_high_watermark(high_watermark);
    }

    fn check_live(&self) -> Result<(), BrokerError> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(BrokerError::UnknownPartition(
                self.topic.to_string(),
                self.index,
            ));
        }
        Ok(())
    }

    /// Refuses requests only a leader serves (produce, consumer fetches).
    pub fn check_leader(&self) -> Result<(), BrokerError> {
        self.check_live()?;
        if !self.is_leader() {
            return Err(BrokerError::NotLeaderOrFollower(
                self.topic.to_string(),
                self.index,
            ));
        }
        Ok(())
    }

    /// Appends a producer's record set. Fsyncs before returning when the
    /// topic's flush policy asks for it. A failed write (a full disk, an
    /// I/O error) is counted and logged in the broker's storage health.
    ///
    /// The records are validated (and recompressed if the topic wants
    /// another codec) before the log's lock is taken, so fetches and other
    /// producers of the partition do not wait for that work.
    pub async fn append(self: &Arc<Self>, records: &Bytes) -> Result<AppendInfo, BrokerError> {
        let result = self.write(records).await;
        match &result {
            Ok(_) => self.storage.write_succeeded(),
            Err(BrokerError::Io(e) | BrokerError::Append(AppendError::Io(e))) => {
                self.write_failed(e)
            }
            Err(_) => {}
        }
        result
    }

    async fn write(self: &Arc<Self>, records: &Bytes) -> Result<AppendInfo, BrokerError> {
        self.check_leader()?;
        let rules = lock(&self.log).config().append_rules();
        let now = now_ms();
        let name = PartitionName(&self.topic, self.index);
        let batches = validator::validate(records, &rules, now, &name)?;
        self.write_as_leader(|log, leader_epoch| log.append_validated(batches, leader_epoch, now))
            .await
    }

    /// Appends a transaction marker of `producer_id` (WriteTxnMarkers):
    /// COMMIT or ABORT closes the producer's open transaction here. As
    /// [`Partition::append`] for durability and storage health; the caller
    /// waits for the in-sync replicas.
    pub async fn append_marker(
        self: &Arc<Self>,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<AppendInfo, BrokerError> {
        self.check_leader()?;
        let now = now_ms();
        let result = self
            .write_as_leader(|log, leader_epoch| {
                log.append_marker(
                    producer_id,
                    producer_epoch,
                    commit,
                    coordinator_epoch,
                    leader_epoch,
                    now,
                )
            })
            .await;
        match &result {
            Ok(_) => self.storage.write_succeeded(),
            Err(BrokerError::Io(e) | BrokerError::Append(AppendError::Io(e))) => {
                self.write_failed(e)
            }
            Err(_) => {}
        }
        result
    }

    /// Runs `append` on the log under its lock while this broker leads the
    /// partition, then what every leader append needs: the flush of a
    /// closed segment, the fsync the flush policy asks for, and publishing
    /// the new log end to fetchers and replication.
    async fn write_as_leader(
        self: &Arc<Self>,
        append: impl FnOnce(&mut PartitionLog, i32) -> Result<AppendInfo, AppendError>,
    ) -> Result<AppendInfo, BrokerError> {
        let (info, log_end, flush_wanted) = {
            let mut log = lock(&self.log);
            // Read under the log's lock: `set_leadership` changes it there.
            if !self.is_leader() {
                return Err(BrokerError::NotLeaderOrFollower(
                    self.topic.to_string(),
                    self.index,
                ));
            }
            let info = append(&mut log, self.leader_epoch())?;
            (info, log.log_end_offset(), log.take_flush_wanted())
        };
        if flush_wanted {
            // A segment was closed: make it durable in the background so the
            // recovery point keeps up, without delaying this produce.
            let partition = self.clone();
            // A failure is counted and logged by `flush`.
            tokio::task::spawn_blocking(move || partition.flush());
        }
        if let Some(file) = &info.sync_file {
            let file = file.clone();
            tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .map_err(|e| io::Error::other(e.to_string()))??;
        }
        self.appended.send_if_modified(|end| {
            let moved = log_end > *end;
            if moved {
                *end = log_end;
            }
            moved
        });
        // Never backwards: a concurrent append may have published more.
        self.local_append_done(log_end);
        Ok(info)
    }

    /// Fsyncs everything appended so far and moves the recovery point. The
    /// partition stays available for appends and reads during the fsync.
    /// Blocking: call from a blocking thread.
    pub fn flush(&self) -> io::Result<()> {
        let result = self.sync_to_disk();
        if let Err(e) = &result {
            self.write_failed(e);
        }
        result
    }

    fn sync_to_disk(&self) -> io::Result<()> {
        if self.deleted.load(Ordering::Acquire) {
            return Ok(());
        }
        let plan = {
            let mut log = lock(&self.log);
            if !log.needs_flush() {
                return Ok(());
            }
            log.prepare_flush(now_ms())?
        };
        plan.sync()?;
        lock(&self.log).complete_flush(&plan);
        Ok(())
    }

    /// Plans a read for a follower: up to the log end, not the high
    /// watermark.
    pub fn read_for_follower(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Option<ReadSlice>, BrokerError> {
        self.check_live()?;
        let log = lock(&self.log);
        let end = log.log_end_offset();
        Ok(log.read(offset, max_bytes, true, end)?)
    }

    /// Plans a read of records below the high watermark; see
    /// [`PartitionLog::read`].
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<Option<ReadSlice>, BrokerError> {
        self.read_isolated(offset, max_bytes, min_one_batch, false)
    }

    /// As [`Partition::read`]; with `read_committed`, below the last
    /// stable offset (no record of a transaction still open).
    pub fn read_isolated(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        read_committed: bool,
    ) -> Result<Option<ReadSlice>, BrokerError> {
        self.check_live()?;
        let high_watermark = self.high_watermark();
        let log = lock(&self.log);
        let upper = if read_committed {
            last_stable(&log, high_watermark)
        } else {
            high_watermark
        };
        Ok(log.read(offset, max_bytes, min_one_batch, upper)?)
    }

    /// The producers this partition remembers (DescribeProducers): id,
    /// epoch, last sequence (-1 for none), last append time and the first
    /// offset of its open transaction (-1 for none), by id.
    pub fn producers(&self) -> Vec<(i64, i16, i32, i64, i64)> {
        let log = lock(&self.log);
        let mut out: Vec<_> = log
            .producer_state()
            .iter()
            .map(|(id, e)| {
                (
                    id,
                    e.epoch,
                    e.batches.back().map_or(-1, |b| b.last_seq),
                    e.last_append_ms,
                    e.txn_first_offset.unwrap_or(-1),
                )
            })
            .collect();
        out.sort_unstable_by_key(|p| p.0);
        out
    }

    /// The aborted transactions with records in `[from, to)`: what a
    /// read_committed fetch of those offsets names so consumers drop them.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        lock(&self.log).aborted_between(from, to)
    }

    /// The first offset consumers may not read yet.
    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `requested`
    /// that this log knows and the offset where it ends (the log end for
    /// the latest epoch); `(-1, -1)` when there is none.
    pub fn end_offset_for_epoch(&self, requested: i32) -> Result<(i32, i64), BrokerError> {
        self.check_live()?;
        Ok(lock(&self.log).end_offset_for(requested))
    }

    pub fn offsets(&self) -> PartitionOffsets {
        let log = lock(&self.log);
        let high_watermark = self.high_watermark();
        PartitionOffsets {
            log_start: log.log_start_offset(),
            high_watermark,
            last_stable: last_stable(&log, high_watermark),
            log_end: log.log_end_offset(),
        }
    }

    /// A receiver that wakes when the high watermark moves.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// ListOffsets by time: the first record at or after `timestamp` below
    /// the high watermark, as Kafka answers consumers (a record not yet
    /// committed is not found).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, BrokerError> {
        let high_watermark = self.high_watermark();
        let found = lock(&self.log).offset_for_timestamp(timestamp)?;
        Ok(found.filter(|&(offset, _)| offset < high_watermark))
    }

    /// ListOffsets MAX_TIMESTAMP: the record with the largest timestamp,
    /// if it is below the high watermark.
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, BrokerError> {
        let high_watermark = self.high_watermark();
        let found = lock(&self.log).max_timestamp_offset()?;
        Ok(found.filter(|&(offset, _)| offset < high_watermark))
    }

    pub fn delete_records_before(&self, offset: i64) -> Result<i64, BrokerError> {
        self.check_live()?;
        let high_watermark = self.high_watermark();
        let target = if offset == -1 { high_watermark } else { offset };
        Ok(lock(&self.log).delete_records_before(target, high_watermark)?)
    }

    pub fn size_bytes(&self) -> u64 {
        lock(&self.log).size_bytes()
    }
}

/// `topic-index`, as Kafka names a partition in messages.
struct PartitionName<'a>(&'a str, i32);

impl std::fmt::Display for PartitionName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::tests::{make_batch, make_batch_at};
    use crate::storage::LogConfig;
    use kafka_protocol::records::Compression;

    #[test]
    fn a_follower_fetching_past_the_leaders_log_end_is_out_of_range_and_a_stranger_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = PartitionLog::open(dir.path(), LogConfig::default(), 0, 0, 0).unwrap();
        let partition = Partition::new("t".into(), 0, log, Arc::new(StorageHealth::default()));
        partition.apply_state(
            1,
            &PartitionState {
                replicas: vec![1, 2],
                isr: vec![1, 2],
                leader: 1,
                leader_epoch: 3,
                partition_epoch: 0,
                ..Default::default()
            },
        );
        assert!(matches!(
            partition.follower_fetched(2, 5),
            Err(BrokerError::Read(
                crate::storage::ReadError::OffsetOutOfRange {
                    offset: 5,
                    log_end: 0,
                    ..
                }
            ))
        ));
        assert!(matches!(
            partition.follower_fetched(9, 0),
            Err(BrokerError::NotLeaderOrFollower(..))
        ));
        assert!(partition.follower_fetched(2, 0).is_ok());
    }

    fn state(replicas: &[BrokerId], leader: BrokerId, leader_epoch: i32) -> PartitionState {
        PartitionState {
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader,
            leader_epoch,
            partition_epoch: 0,
            ..Default::default()
        }
    }

    /// A partition of six records (two batches), reopened with `checkpointed` as its
    /// high watermark checkpoint.
    fn reopened(dir: &std::path::Path, checkpointed: Option<i64>) -> Partition {
        let (mut log, _) = PartitionLog::open(dir, LogConfig::default(), 0, 0, 0).unwrap();
        for _ in 0..2 {
            log.append(&make_batch(3, 10, Compression::None), 0, now_ms())
                .unwrap();
        }
        let partition = Partition::new("t".into(), 0, log, Arc::new(StorageHealth::default()));
        if let Some(hw) = checkpointed {
            partition.reopened_at_high_watermark(hw);
        }
        partition
    }

    #[test]
    fn a_reopened_replica_commits_its_tail_only_once_the_isr_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let partition = reopened(dir.path(), Some(4));
        assert_eq!(partition.offsets().high_watermark, 4);
        assert!(partition.read(4, 1 << 20, true).unwrap().is_none());
        // Leading with a follower that has not fetched yet: still 4.
        partition.apply_state(1, &state(&[1, 2], 1, 1));
        assert_eq!(partition.offsets().high_watermark, 4);
        assert_eq!(partition.replication_status().borrow().high_watermark, 4);
        partition.follower_fetched(2, 5).unwrap();
        assert_eq!(partition.offsets().high_watermark, 5);
        partition.follower_fetched(2, 6).unwrap();
        assert_eq!(partition.offsets().high_watermark, 6);
    }

    #[test]
    fn a_reopened_sole_replica_commits_its_whole_log_and_no_checkpoint_means_the_log_end() {
        let dir = tempfile::tempdir().unwrap();
        let partition = reopened(dir.path(), Some(2));
        partition.apply_state(1, &state(&[1], 1, 0));
        assert_eq!(partition.offsets().high_watermark, 6);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(reopened(dir.path(), None).offsets().high_watermark, 6);
        // A checkpoint beyond the log end (a lost tail) changes nothing.
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(reopened(dir.path(), Some(9)).offsets().high_watermark, 6);
    }

    #[test]
    fn a_follower_that_truncates_below_its_high_watermark_lowers_it() {
        let dir = tempfile::tempdir().unwrap();
        let partition = reopened(dir.path(), None);
        partition.apply_state(1, &state(&[2, 1], 2, 1));
        assert_eq!(partition.offsets().high_watermark, 6);
        {
            let mut log = partition.log();
            log.truncate_to(3, now_ms()).unwrap();
            partition.truncated_to(log.log_end_offset());
        }
        let offsets = partition.offsets();
        assert_eq!((offsets.high_watermark, offsets.log_end), (3, 3));
    }

    #[tokio::test]
    async fn reads_and_offsets_stop_at_the_published_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            flush_messages: 1,
            ..Default::default()
        };
        let (log, _) = PartitionLog::open(dir.path(), config, 0, 0, 0).unwrap();
        let partition = Arc::new(Partition::new(
            "t".into(),
            0,
            log,
            Arc::new(StorageHealth::default()),
        ));
        let batch = make_batch(3, 10, Compression::None);
        let mut changes = partition.subscribe();
        partition.append(&batch).await.unwrap();
        assert_eq!(*changes.borrow_and_update(), 3);
        // Records in the log but not yet acknowledged (between the write
        // and its fsync) are not readable, and not the latest offset.
        lock(&partition.log).append(&batch, 0, now_ms()).unwrap();
        let offsets = partition.offsets();
        assert_eq!((offsets.high_watermark, offsets.log_end), (3, 6));
        assert!(partition.read(3, 1 << 20, true).unwrap().is_none());
        let slice = partition.read(0, 1 << 20, true).unwrap().unwrap();
        assert_eq!(slice.len, batch.len(), "only the acknowledged batch");
        assert!(partition.delete_records_before(4).is_err());
        // Lookups by time do not find them either.
        let later = make_batch_at(3, 10, Compression::None, 1_800_000_000_000);
        lock(&partition.log).append(&later, 0, now_ms()).unwrap();
        assert_eq!(
            partition.offset_for_timestamp(1_800_000_000_000).unwrap(),
            None
        );
        assert_eq!(partition.max_timestamp_offset().unwrap(), None);
        assert_eq!(
            partition.offset_for_timestamp(1_700_000_000_001).unwrap(),
            Some((1, 1_700_000_000_001))
        );
        // The next append publishes the log end, after its fsync.
        partition.append(&batch).await.unwrap();
        assert!(changes.has_changed().unwrap());
        assert_eq!(partition.offsets().high_watermark, 12);
        assert_eq!(
            partition.offset_for_timestamp(1_800_000_000_000).unwrap(),
            Some((6, 1_800_000_000_000))
        );
        assert!(partition.read(3, 1 << 20, true).unwrap().is_some());
    }
}
