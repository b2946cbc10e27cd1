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

use super::metrics::StorageHealth;
use crate::error::BrokerError;
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
    pub(super) deleted: AtomicBool,
    /// Where failed writes are counted and logged (the broker's metrics).
    storage: Arc<StorageHealth>,
}

/// Offsets of a partition at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub log_start: i64,
    pub high_watermark: i64,
    pub log_end: i64,
}

impl Partition {
    pub(super) fn new(
        topic: Arc<str>,
        index: i32,
        log: PartitionLog,
        storage: Arc<StorageHealth>,
    ) -> Partition {
        // Everything a restart recovered counts as committed.
        let (high_watermark, _) = watch::channel(log.log_end_offset());
        Partition {
            topic,
            index,
            log: Mutex::new(log),
            high_watermark,
            leader_epoch: AtomicI32::new(0),
            leader: AtomicBool::new(true),
            deleted: AtomicBool::new(false),
            storage,
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

    /// Applies the partition's state from the metadata: this broker leads
    /// it (or not) in `leader_epoch`. Appends after this carry the epoch.
    pub(super) fn set_leadership(&self, leader: bool, leader_epoch: i32) {
        let mut log = lock(&self.log);
        if leader && leader_epoch > self.leader_epoch() {
            if let Err(e) = log.begin_leader_epoch(leader_epoch) {
                // The epoch is recorded with the next append instead.
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "recording a new leader epoch failed");
            }
        }
        self.leader_epoch.store(leader_epoch, Ordering::Release);
        self.leader.store(leader, Ordering::Release);
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
        let (info, log_end, flush_wanted) = {
            let mut log = lock(&self.log);
            // Read under the log's lock: `set_leadership` changes it there.
            if !self.is_leader() {
                return Err(BrokerError::NotLeaderOrFollower(
                    self.topic.to_string(),
                    self.index,
                ));
            }
            let info = log.append_validated(batches, self.leader_epoch(), now)?;
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
        // Never backwards: a concurrent append may have published more.
        self.high_watermark.send_if_modified(|hw| {
            let moved = log_end > *hw;
            if moved {
                *hw = log_end;
            }
            moved
        });
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

    /// Plans a read of records below the high watermark; see
    /// [`PartitionLog::read`].
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<Option<ReadSlice>, BrokerError> {
        self.check_live()?;
        let high_watermark = self.high_watermark();
        Ok(lock(&self.log).read(offset, max_bytes, min_one_batch, high_watermark)?)
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
        PartitionOffsets {
            log_start: log.log_start_offset(),
            high_watermark: self.high_watermark(),
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
