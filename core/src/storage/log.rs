//! The log of one partition: an ordered set of segments, the offsets that
//! bound it, and the rules for appending, reading, rolling, retention,
//! truncation and crash recovery.
//!
//! Offsets:
//! ```text
//!   log start offset   first offset a consumer may read (moved by retention
//!                      and DeleteRecords)
//!   log end offset     offset the next appended record gets
//!   recovery point     everything below it has been fsynced with its indexes
//! ```
//! The high watermark is not the log's: the broker's partition (the
//! replication layer) decides it and passes it to every read as an upper
//! bound, so what consumers see is decided in one place.
//!
//! Two append paths: a leader's [`PartitionLog::append`] /
//! [`PartitionLog::append_validated`] assigns offsets from the log end and
//! stamps its leader epoch; a follower's [`PartitionLog::append_as_follower`]
//! keeps the offsets and epochs the leader gave its batches and only checks
//! them. Both record every new leader epoch in the leader-epoch cache
//! (`epochs.rs`, `leader-epoch-checkpoint`), which answers
//! OffsetForLeaderEpoch.
//!
//! **Truncation** ([`PartitionLog::truncate_to`],
//! [`PartitionLog::truncate_fully_and_start_at`]) cuts a follower's
//! divergent tail. Its steps, each leaving a log that [`PartitionLog::open`]
//! reads consistently if the process dies right after it:
//! ```text
//! 1. truncation-checkpoint   written (atomically) with the recovery point
//!                            and log start the cut leaves, so a restart
//!                            never trusts a recovery-point checkpoint the
//!                            broker wrote before the cut
//! 2. producer snapshots      above the cut removed, directory fsynced
//! 3. later segments          deleted newest first, directory fsynced after
//!                            each: what remains is always a prefix
//! 4. the cut segment         .log cut at the batch boundary and fsynced,
//!                            then its index files cut and fsynced
//! 5. leader-epoch-checkpoint rewritten without the epochs from the cut on
//! 6. the active segment      a new one at the cut (the cut segment takes
//!                            no more appends, so a read planned before the
//!                            cut never sees other bytes at its position)
//! ```
//! A crash after any step leaves the old log cut at a segment boundary or
//! at the cut itself; on open, snapshots and epochs beyond the log end are
//! ignored, an epoch checkpoint that disagrees with the log is rebuilt from
//! the batches, and the caller (replication) cuts again from what it finds.
//! The truncation checkpoint stays until the broker has written recovery
//! points and log starts taken after the cut
//! ([`PartitionLog::recovery_point_checkpointed`],
//! [`PartitionLog::log_start_checkpointed`]). A flush planned before a cut
//! neither moves the recovery point nor leaves its producer snapshot.
//!
//! A log does no locking and no async I/O; the broker wraps each one in a
//! mutex and keeps long reads outside it by handing out [`ReadSlice`]s.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tracing::{info, warn};

pub use super::append::{AppendError, TimestampType};
use super::batch::{self, BatchError, BatchHeader, ATTR_LOG_APPEND_TIME, BATCH_HEADER_BYTES};
use super::epochs::{self, LeaderEpochCache};
use super::handles::{explain, explain_if_out_of_files};
use super::producer_state::{
    self, AbortedTxn, ControlType, PendingSnapshot, ProducerState, SequenceCheck,
};
use super::segment::{parse_segment_file_name, PreparedBatch, Segment, SEGMENT_BYTES_LIMIT};
use super::swap::sync_dir;
use super::validator::{self, AppendRules, TopicCompression, ValidBatch};

/// The settings a partition log obeys, resolved from topic configs and
/// broker defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub segment_index_bytes: u64,
    pub index_interval_bytes: u64,
    /// -1: keep forever.
    pub retention_ms: i64,
    /// -1: no size limit.
    pub retention_bytes: i64,
    pub max_message_bytes: usize,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub timestamp_type: TimestampType,
    /// How old a record's timestamp may be (`message.timestamp.before.max.ms`).
    pub timestamp_before_max_ms: i64,
    /// How far in the future it may be (`message.timestamp.after.max.ms`).
    pub timestamp_after_max_ms: i64,
    /// The codec batches are stored in (`compression.type`).
    pub compression: TopicCompression,
    pub cleanup_delete: bool,
    pub cleanup_compact: bool,
    /// Idempotent producers idle this long are forgotten.
    pub producer_id_expiration_ms: i64,
    /// How long tombstones survive compaction (`delete.retention.ms`).
    pub delete_retention_ms: i64,
    /// Compact when dirty bytes / cleanable bytes reach this
    /// (`min.cleanable.dirty.ratio`).
    pub min_cleanable_dirty_ratio: f64,
    /// Segments holding a record younger than this are not compacted
    /// (`min.compaction.lag.ms`).
    pub min_compaction_lag_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            segment_index_bytes: 10 << 20,
            index_interval_bytes: 4096,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            timestamp_type: TimestampType::CreateTime,
            // No bounds unless configured; the broker's defaults (Kafka's:
            // one hour ahead) come from `config::LogDefaults`.
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
            compression: TopicCompression::Producer,
            cleanup_delete: true,
            cleanup_compact: false,
            producer_id_expiration_ms: 24 * 3600 * 1000,
            delete_retention_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
        }
    }
}

impl LogConfig {
    /// What appends to this log must obey (see `validator`).
    pub fn append_rules(&self) -> AppendRules {
        AppendRules {
            timestamp_type: self.timestamp_type,
            timestamp_before_max_ms: self.timestamp_before_max_ms,
            timestamp_after_max_ms: self.timestamp_after_max_ms,
            compacted: self.cleanup_compact,
            compression: self.compression,
            max_message_bytes: self.max_message_bytes,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

/// Why a follower's append was refused. Nothing of the batch set was
/// written, except for [`FollowerAppendError::Io`] after a segment roll:
/// the batches before the failed write stay, and the log end says how far
/// the append got.
#[derive(Debug, thiserror::Error)]
pub enum FollowerAppendError {
    /// The batches start below the log end (Kafka's
    /// UnexpectedAppendOffsetException). `first_batch_last_offset` lets the
    /// caller see whether the log end falls inside the first batch (a
    /// leader whose log start is mid-batch, as DeleteRecords leaves it).
    #[error(
        "batches start at offset {first_offset} (first batch ends at {first_batch_last_offset}), \
         below the log end offset {log_end_offset}"
    )]
    OffsetMismatch {
        first_offset: i64,
        first_batch_last_offset: i64,
        log_end_offset: i64,
    },
    /// A batch does not start after the one before it.
    #[error(
        "batch at offset {base_offset} does not follow the batch ending at {previous_last_offset}"
    )]
    OffsetsOutOfOrder {
        base_offset: i64,
        previous_last_offset: i64,
    },
    /// A batch fails its CRC or its header is impossible.
    #[error("corrupt record batch at byte {position} of the fetched records: {error}")]
    Corrupt { position: usize, error: BatchError },
    #[error("record batch of {size} bytes is larger than segment.bytes ({segment_bytes})")]
    LargerThanSegment { size: usize, segment_bytes: u64 },
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

/// Where appended batches landed.
#[derive(Debug, Clone)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker's append time when the topic uses LogAppendTime, else -1.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    pub records: i64,
    pub bytes: usize,
    /// The batch was a retry of one already in the log (idempotent
    /// producer): nothing was written, the offsets are the original ones.
    pub duplicate: bool,
    /// Set when the flush policy wants this data fsynced before the
    /// producer is answered; the caller syncs it outside the log's lock.
    pub sync_file: Option<Arc<File>>,
}

impl AppendInfo {
    /// The answer to an append of no batches.
    fn nothing(log_start_offset: i64) -> AppendInfo {
        AppendInfo {
            base_offset: -1,
            last_offset: -1,
            log_append_time_ms: -1,
            log_start_offset,
            records: 0,
            bytes: 0,
            duplicate: false,
            sync_file: None,
        }
    }
}

/// A byte range of one segment file to send to a consumer. Reading it does
/// not need the log: segment files are never modified in place, and a
/// deleted segment stays readable through the open handle.
#[derive(Debug, Clone)]
pub struct ReadSlice {
    pub file: Arc<File>,
    pub position: u64,
    pub len: usize,
}

impl ReadSlice {
    pub fn read(&self) -> io::Result<Bytes> {
        super::segment::read_bytes(&self.file, self.position, self.len)
    }
}

/// The fsyncs that make a log durable up to `target_offset`; see
/// [`PartitionLog::prepare_flush`].
pub struct FlushPlan {
    target_offset: i64,
    segments: Vec<super::segment::SegmentFlush>,
    producers: Option<(ProducerState, PendingSnapshot)>,
    /// The log's truncation count when the plan was made: a plan that
    /// outlives a truncation completes nothing.
    truncations: u64,
}

impl FlushPlan {
    /// Fsyncs the data, then writes the producer state as of the flushed
    /// offset under a temporary name (so a snapshot never describes data
    /// that is not durable); [`PartitionLog::complete_flush`] puts it in
    /// place.
    pub fn sync(&self) -> io::Result<()> {
        for s in &self.segments {
            s.sync()?;
        }
        if let Some((producers, snapshot)) = &self.producers {
            snapshot.write(self.target_offset, producers)?;
        }
        Ok(())
    }
}

/// What opening a log found and repaired.
#[derive(Debug, Default, Clone)]
pub struct LogRecovery {
    pub segments: usize,
    pub segments_scanned: usize,
    pub truncated_bytes: u64,
    pub segments_dropped: usize,
    pub problems: Vec<String>,
}

pub struct PartitionLog {
    dir: PathBuf,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    recovery_point: i64,
    config: LogConfig,
    unflushed_messages: i64,
    last_flush_ms: i64,
    flush_wanted: bool,
    producers: ProducerState,
    epochs: LeaderEpochCache,
    /// How many truncations this log went through (see [`FlushPlan`]).
    truncations: u64,
    /// The bounds of the last truncation until the broker's checkpoints
    /// reflect it (the `truncation-checkpoint` file).
    truncation_floor: Option<TruncationFloor>,
    /// Which of the broker's checkpoints (recovery point, log start) were
    /// written since the last truncation with values that reflect it.
    floor_reflected: (bool, bool),
    /// Tests stop a truncation after this step, as a crash would.
    #[cfg(test)]
    crash_after_step: Option<u32>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("log_start_offset", &self.log_start_offset)
            .field("log_end_offset", &self.log_end_offset())
            .field("segments", &self.segments.len())
            .finish()
    }
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`. Segments below `recovery_point`
    /// are trusted; everything from there on, and always the active
    /// segment, is scanned batch by batch and cut at the first torn or
    /// corrupt batch. Never fails because of damaged data, only on I/O
    /// errors.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        recovery_point: i64,
        log_start_checkpoint: i64,
        now_ms: i64,
    ) -> io::Result<(PartitionLog, LogRecovery)> {
        Self::open_inner(dir, config, recovery_point, log_start_checkpoint, now_ms)
            .map_err(|e| explain_if_out_of_files(e, "opening the log in", dir))
    }

    fn open_inner(
        dir: &Path,
        config: LogConfig,
        recovery_point: i64,
        log_start_checkpoint: i64,
        now_ms: i64,
    ) -> io::Result<(PartitionLog, LogRecovery)> {
        std::fs::create_dir_all(dir).map_err(|e| explain(e, "creating", dir))?;
        // A truncation the broker's checkpoints may not reflect yet caps
        // what they say (see the module docs).
        let truncation_floor = TruncationFloor::read(dir);
        let (recovery_point, log_start_checkpoint) = match &truncation_floor {
            Some(floor) => (
                recovery_point.min(floor.recovery_point),
                log_start_checkpoint.min(floor.log_start),
            ),
            None => (recovery_point, log_start_checkpoint),
        };
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| explain(e, "listing", dir))? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            match parse_segment_file_name(name) {
                Some((base, "log")) => bases.push(base),
                Some((_, "index" | "timeindex")) => {}
                Some((_, ext)) if ext.ends_with("deleted") || ext.ends_with("cleaned") => {
                    // Leftovers of an interrupted deletion or cleaning. For
                    // the cleaner's `<base>.{log,index,timeindex}.cleaned`
                    // this finishes or rolls back its swap: the `.log`
                    // rename is the commit point, and a `.log` left without
                    // indexes is scanned (see `cleaner.rs`).
                    std::fs::remove_file(entry.path())?;
                }
                Some((_, ext)) if producer_state::is_leftover_tmp(ext) => {
                    // A snapshot a flush wrote but never put in place.
                    std::fs::remove_file(entry.path())?;
                }
                _ => {}
            }
        }
        bases.sort_unstable();
        // Indexes without a log are stale.
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if let Some((base, "index" | "timeindex")) =
                entry.file_name().to_str().and_then(parse_segment_file_name)
            {
                if bases.binary_search(&base).is_err() {
                    std::fs::remove_file(entry.path())?;
                }
            }
        }

        let mut report = LogRecovery {
            segments: bases.len(),
            ..Default::default()
        };
        let mut segments = BTreeMap::new();
        let mut cut_everything_after = false;
        for (i, &base) in bases.iter().enumerate() {
            if cut_everything_after {
                let path = dir.join(super::segment::segment_file_name(base, "log"));
                warn!(path = %path.display(), "removing segment that follows a damaged one");
                for ext in ["log", "index", "timeindex"] {
                    let _ = std::fs::remove_file(
                        dir.join(super::segment::segment_file_name(base, ext)),
                    );
                }
                report.segments_dropped += 1;
                continue;
            }
            let next_base = bases.get(i + 1).copied();
            let is_last = next_base.is_none();
            let trusted = !is_last && next_base.is_some_and(|n| n <= recovery_point);
            let (segment, recovery) = if trusted {
                Segment::open_trusted(dir, base, config.index_interval_bytes)?
            } else {
                let (s, r) = Segment::open_and_recover(dir, base, config.index_interval_bytes)?;
                (s, Some(r))
            };
            if let Some(r) = recovery {
                report.segments_scanned += 1;
                if r.truncated_bytes > 0 {
                    let reason = r.reason.unwrap_or_default();
                    warn!(
                        dir = %dir.display(),
                        segment = base,
                        kept_bytes = r.valid_bytes,
                        truncated_bytes = r.truncated_bytes,
                        %reason,
                        "truncated damaged log tail"
                    );
                    report.truncated_bytes += r.truncated_bytes;
                    report.problems.push(format!("segment {base}: {reason}"));
                    cut_everything_after = true;
                }
            }
            if let Some(n) = next_base {
                if segment.next_offset() > n && !cut_everything_after {
                    report
                        .problems
                        .push(format!("segment {base} overlaps segment {n}"));
                    cut_everything_after = true;
                }
            }
            if segment.is_empty() && !is_last && !cut_everything_after && !segments.is_empty() {
                // An empty segment in the middle carries nothing. An empty
                // first one (left by compaction) holds the log start.
                segment.delete_files()?;
                continue;
            }
            // Closed as soon as it is loaded, so opening a log with more
            // segments than the open-file limit works; the active one is
            // opened again below.
            let mut segment = segment;
            segment.close_file();
            segments.insert(base, segment);
        }

        if segments.is_empty() {
            let base = log_start_checkpoint.max(0);
            segments.insert(
                base,
                Segment::create(dir, base, config.index_interval_bytes)?,
            );
        }
        // Only the active segment keeps its file open; closed ones are
        // opened when read (see `handles.rs`).
        segments
            .values_mut()
            .next_back()
            .expect("at least one segment")
            .open_file()?;
        let first_base = *segments.keys().next().expect("at least one segment");
        let log_end = segments
            .values()
            .next_back()
            .expect("at least one segment")
            .next_offset();
        let log_start_offset = log_start_checkpoint.max(first_base).min(log_end);
        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            segments,
            log_start_offset,
            recovery_point: recovery_point.min(log_end),
            config,
            unflushed_messages: 0,
            last_flush_ms: now_ms,
            flush_wanted: false,
            producers: ProducerState::new(),
            epochs: LeaderEpochCache::new(),
            truncations: 0,
            truncation_floor,
            floor_reflected: (false, false),
            #[cfg(test)]
            crash_after_step: None,
        };
        log.rebuild_producer_state(now_ms)?;
        if let Some(problem) = log.load_epochs()? {
            report.problems.push(problem);
        }
        if report.truncated_bytes > 0 || report.segments_dropped > 0 {
            info!(
                dir = %dir.display(),
                log_end_offset = log_end,
                "log recovered"
            );
        }
        Ok((log, report))
    }

    /// Loads the newest producer-state snapshot and replays the batch
    /// headers written after it.
    fn rebuild_producer_state(&mut self, now_ms: i64) -> io::Result<()> {
        let log_end = self.log_end_offset();
        let (from, state) = match producer_state::load_snapshot(&self.dir, log_end)? {
            Some((offset, state)) => (offset.max(self.log_start_offset), state),
            None => (self.log_start_offset, ProducerState::new()),
        };
        self.producers = state;
        if from >= log_end {
            return Ok(());
        }
        let mut replayed = 0u64;
        for segment in self.segments.values() {
            if segment.next_offset() <= from {
                continue;
            }
            let producers = &mut self.producers;
            segment.for_each_batch_from(from, |h, control| {
                // The broker's append time is not in the log; the batch's
                // own timestamp stands in for expiry.
                let at = h.max_timestamp.min(now_ms);
                if let Some(t) = control {
                    producers.update_control(h, ControlType::from_type(t), at);
                    replayed += 1;
                } else if producer_state::is_idempotent(h) {
                    producers.update(h, at);
                    replayed += 1;
                }
            })?;
        }
        if replayed > 0 {
            tracing::debug!(dir = %self.dir.display(), from, batches = replayed, "rebuilt producer state");
        }
        Ok(())
    }

    /// Loads the leader-epoch cache: the checkpoint, cut to the log's
    /// bounds, if it agrees with the log's first and last batches;
    /// otherwise (missing, damaged, or written for data a crash took away)
    /// it is rebuilt from the batches and written again. Returns what was
    /// wrong with a checkpoint that had to be replaced.
    fn load_epochs(&mut self) -> io::Result<Option<String>> {
        let log_end = self.log_end_offset();
        let problem = match epochs::read_checkpoint(&self.dir) {
            Ok(Some(mut cache)) => {
                let trimmed = cache.truncate_from_end(log_end);
                cache.truncate_from_start(self.log_start_offset);
                if self.epochs_agree_with_log(&cache)? {
                    self.epochs = cache;
                    if trimmed {
                        // Epochs a crash left without their batches.
                        epochs::write_checkpoint(&self.dir, &self.epochs)?;
                    }
                    return Ok(None);
                }
                Some(format!(
                    "{}: does not match the log's batches",
                    self.dir.join(epochs::CHECKPOINT_FILE).display()
                ))
            }
            // A log written before epochs were tracked, or a new one.
            Ok(None) => None,
            Err(reason) => Some(reason),
        };
        if let Some(problem) = &problem {
            warn!(dir = %self.dir.display(), %problem, "rebuilding the leader-epoch cache from the log");
        }
        self.epochs = self.epochs_from_log()?;
        if !self.epochs.is_empty() || problem.is_some() {
            epochs::write_checkpoint(&self.dir, &self.epochs)?;
        }
        Ok(problem)
    }

    /// Whether `cache` says the right epoch for the batch at the log start
    /// and for the last batch (the places a stale or foreign checkpoint
    /// shows: entries are only ever added at the end).
    fn epochs_agree_with_log(&self, cache: &LeaderEpochCache) -> io::Result<bool> {
        let first = self
            .segments
            .values()
            .find(|s| s.next_offset() > self.log_start_offset)
            .map(|s| s.find_batch(self.log_start_offset, s.size()))
            .transpose()?
            .flatten();
        let last = self
            .segments
            .values()
            .rev()
            .find(|s| !s.is_empty())
            .map(|s| s.last_batch())
            .transpose()?
            .flatten();
        let (Some((_, first)), Some((_, last))) = (first, last) else {
            // No batches: nothing to contradict.
            return Ok(true);
        };
        let says = |h: &BatchHeader| {
            h.partition_leader_epoch < 0
                || cache.epoch_for_offset(h.base_offset.max(self.log_start_offset))
                    == Some(h.partition_leader_epoch)
        };
        Ok(says(&first)
            && says(&last)
            && (last.partition_leader_epoch < 0
                || cache.latest_epoch() == Some(last.partition_leader_epoch)))
    }

    /// The epoch cache the batches describe. Epochs only grow along a log,
    /// so a segment whose first and last batches have the same epoch has
    /// no other: only segments where the epoch changes are read header by
    /// header.
    fn epochs_from_log(&self) -> io::Result<LeaderEpochCache> {
        let mut cache = LeaderEpochCache::new();
        for segment in self.segments.values() {
            let (Some(first), Some((_, last))) = (segment.read_header(0)?, segment.last_batch()?)
            else {
                continue;
            };
            if first.partition_leader_epoch == last.partition_leader_epoch {
                cache.assign(first.partition_leader_epoch, first.base_offset);
            } else {
                segment.for_each_header_from(segment.base_offset(), |h| {
                    cache.assign(h.partition_leader_epoch, h.base_offset);
                })?;
            }
        }
        cache.truncate_from_start(self.log_start_offset);
        Ok(cache)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Renames the log's directory to `dir` (which must not exist) and
    /// goes on from there; open files stay valid. Used to give a new
    /// topic's partitions their final names once the topic is recorded.
    pub fn relocate(&mut self, dir: &Path) -> io::Result<()> {
        std::fs::rename(&self.dir, dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("renaming {} to {}: {e}", self.dir.display(), dir.display()),
            )
        })?;
        self.dir = dir.to_path_buf();
        for segment in self.segments.values_mut() {
            segment.moved_to(dir);
        }
        Ok(())
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    /// The leader-epoch cache (see `epochs.rs`).
    pub fn epochs(&self) -> &LeaderEpochCache {
        &self.epochs
    }

    /// The epoch of the newest batch (or leader) the log knows.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// OffsetForLeaderEpoch for this log: the largest epoch `<=`
    /// `requested` and the offset where it ends (see
    /// [`LeaderEpochCache::end_offset_for`]).
    pub fn end_offset_for(&self, requested_epoch: i32) -> (i32, i64) {
        self.epochs
            .end_offset_for(requested_epoch, self.log_end_offset())
    }

    /// This log's replica becomes leader in `epoch`: the epoch starts at the
    /// log end (as Kafka's leaders record it on election, so
    /// OffsetForLeaderEpoch answers for it before its first append).
    pub fn begin_leader_epoch(&mut self, epoch: i32) -> io::Result<()> {
        if self.latest_epoch().is_some_and(|latest| latest >= epoch) {
            return Ok(());
        }
        self.assign_epoch(epoch, self.log_end_offset())
    }

    /// Records that `epoch` writes from `start_offset` on, rewriting the
    /// checkpoint when that is new (without an fsync: an append never
    /// waits for it, and opening the log checks the checkpoint against the
    /// batches). On a failed write the cache is left as it was.
    fn assign_epoch(&mut self, epoch: i32, start_offset: i64) -> io::Result<()> {
        if !self.epochs.needs_assign(epoch, start_offset) {
            return Ok(());
        }
        let before = self.epochs.clone();
        self.epochs.assign(epoch, start_offset);
        if let Err(e) = epochs::write_checkpoint_unsynced(&self.dir, &self.epochs) {
            self.epochs = before;
            return Err(e);
        }
        Ok(())
    }

    /// The log start moved up: the epoch covering it now starts there. In
    /// memory only: a checkpoint with older entries is cut the same way on
    /// open, and the next entry written rewrites the file.
    fn log_start_moved(&mut self) {
        self.epochs.truncate_from_start(self.log_start_offset);
    }

    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Segments whose `.log` is held open (only the active one).
    pub fn open_segment_files(&self) -> usize {
        self.segments.values().filter(|s| s.is_file_open()).count()
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size()).sum()
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    /// Validates a producer's record set and appends it atomically: either
    /// every batch is written or none is.
    pub fn append(
        &mut self,
        records: &Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let batches = validator::validate(records, &self.config.append_rules(), now_ms, &name)?;
        self.append_validated(batches, leader_epoch, now_ms)
    }

    /// Appends batches that passed [`validator::validate`] (under the rules
    /// of this log's config) atomically: either every batch is written or
    /// none is.
    pub fn append_validated(
        &mut self,
        batches: Vec<ValidBatch>,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        if batches.is_empty() {
            return Ok(AppendInfo::nothing(self.log_start_offset));
        }
        if let Some(info) = self.check_producer_sequences(&batches)? {
            return Ok(info);
        }
        let total_bytes: usize = batches.iter().map(|b| b.header.total_bytes()).sum();
        if total_bytes as u64 > self.config.segment_bytes.min(SEGMENT_BYTES_LIMIT) {
            return Err(AppendError::LargerThanSegment {
                size: total_bytes,
                segment_bytes: self.config.segment_bytes.min(SEGMENT_BYTES_LIMIT),
            });
        }

        let log_append_time = batches[0].header.attributes & ATTR_LOG_APPEND_TIME != 0;
        let base_offset = self.log_end_offset();
        let mut next = base_offset;
        let mut prepared = Vec::with_capacity(batches.len());
        let mut max_timestamp = i64::MIN;
        for b in batches {
            let mut header = b.header;
            header.base_offset = next;
            header.partition_leader_epoch = leader_epoch;
            let mut head = b.head;
            batch::patch_header_prefix(&mut head, next, leader_epoch);
            max_timestamp = max_timestamp.max(header.max_timestamp);
            next = header.next_offset();
            prepared.push(PreparedBatch {
                head,
                body: b.body,
                header,
            });
        }
        let last_offset = next - 1;

        // Before the data, so a process crash never leaves a batch of a new
        // epoch without its entry (after a power loss, opening the log
        // notices a checkpoint older than the batches and rebuilds it).
        self.assign_epoch(leader_epoch, base_offset)?;
        if self.should_roll(total_bytes as u64, last_offset, max_timestamp, now_ms) {
            self.roll()?;
            // Offsets do not change: the new segment starts at the log end.
        }
        self.active_mut().append(&prepared)?;
        for b in &prepared {
            self.record_producer(b, now_ms);
        }
        let count = next - base_offset;
        let sync_file = self.count_unflushed(count, now_ms)?;
        Ok(AppendInfo {
            base_offset,
            last_offset,
            log_append_time_ms: if log_append_time { max_timestamp } else { -1 },
            log_start_offset: self.log_start_offset,
            records: count,
            bytes: total_bytes,
            duplicate: false,
            sync_file,
        })
    }

    /// Appends a transaction marker (what WriteTxnMarkers asks of a
    /// partition's leader): a COMMIT or ABORT control batch of
    /// `producer_id` at `producer_epoch`, which closes the producer's open
    /// transaction here. A marker of an epoch older than the producer's is
    /// refused (a newer producer fenced that transaction's writer).
    pub fn append_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        if let Some(current) = self.producers.get(producer_id).map(|e| e.epoch) {
            if producer_epoch < current {
                return Err(AppendError::Sequence(
                    producer_state::SequenceError::InvalidEpoch {
                        producer_id,
                        epoch: producer_epoch,
                        current,
                    },
                ));
            }
        }
        let raw = super::batch::control_batch(
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
            now_ms,
        );
        let header = BatchHeader::parse(&raw).map_err(AppendError::Corrupt)?;
        let mut head = [0u8; BATCH_HEADER_BYTES];
        head.copy_from_slice(&raw[..BATCH_HEADER_BYTES]);
        let batch = ValidBatch {
            header,
            head,
            body: raw.slice(BATCH_HEADER_BYTES..),
        };
        self.append_validated(vec![batch], leader_epoch, now_ms)
    }

    /// Counts appended records for the flush policy (`flush.messages`,
    /// `flush.ms`); returns the file to fsync when the policy asks for it.
    fn count_unflushed(&mut self, records: i64, now_ms: i64) -> io::Result<Option<Arc<File>>> {
        self.unflushed_messages += records;
        if self.unflushed_messages >= self.config.flush_messages
            || now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_ms
        {
            self.unflushed_messages = 0;
            self.last_flush_ms = now_ms;
            Ok(Some(self.active().handle()?))
        } else {
            Ok(None)
        }
    }

    /// Appends batches a leader wrote (the records of a follower's Fetch
    /// response), keeping their offsets and leader epochs. Every whole
    /// batch is checked (length, magic, CRC-32C) and must start after the
    /// one before it; the first must not start below the log end (it may
    /// start above it: a compacted leader log has gaps). A batch cut off at
    /// the end of `records` (a fetch response may end inside one) is left
    /// for the next fetch. Producer state records the batches as they are
    /// (a follower does not judge sequences; the leader did) and every new
    /// epoch goes into the epoch cache. Nothing is written unless every
    /// batch passes; the set is split across segments as they fill.
    pub fn append_as_follower(
        &mut self,
        records: &Bytes,
        now_ms: i64,
    ) -> Result<AppendInfo, FollowerAppendError> {
        let mut found: Vec<(usize, BatchHeader)> = Vec::new();
        let mut position = 0;
        while position < records.len() {
            let header = match batch::validate_batch(&records[position..]) {
                Ok(h) => h,
                Err(BatchError::Truncated { .. }) => break,
                Err(error) => return Err(FollowerAppendError::Corrupt { position, error }),
            };
            if let Some((_, previous)) = found.last() {
                if header.base_offset <= previous.last_offset() {
                    return Err(FollowerAppendError::OffsetsOutOfOrder {
                        base_offset: header.base_offset,
                        previous_last_offset: previous.last_offset(),
                    });
                }
            }
            found.push((position, header));
            position += header.total_bytes();
        }
        let log_end = self.log_end_offset();
        let Some(&(_, first)) = found.first() else {
            return Ok(AppendInfo::nothing(self.log_start_offset));
        };
        if first.base_offset < log_end {
            return Err(FollowerAppendError::OffsetMismatch {
                first_offset: first.base_offset,
                first_batch_last_offset: first.last_offset(),
                log_end_offset: log_end,
            });
        }
        let segment_bytes = self.config.segment_bytes.min(SEGMENT_BYTES_LIMIT);
        if let Some((_, big)) = found
            .iter()
            .find(|(_, h)| h.total_bytes() as u64 > segment_bytes)
        {
            return Err(FollowerAppendError::LargerThanSegment {
                size: big.total_bytes(),
                segment_bytes,
            });
        }
        let prepared: Vec<PreparedBatch> = found
            .iter()
            .map(|&(at, header)| {
                let mut head = [0u8; BATCH_HEADER_BYTES];
                head.copy_from_slice(&records[at..at + BATCH_HEADER_BYTES]);
                PreparedBatch {
                    head,
                    body: records.slice(at + BATCH_HEADER_BYTES..at + header.total_bytes()),
                    header,
                }
            })
            .collect();
        let last = found.last().expect("at least one batch").1;
        let bytes: usize = found.iter().map(|(_, h)| h.total_bytes()).sum();

        // Runs of batches that fit the active segment, one write each.
        let mut start = 0;
        while start < prepared.len() {
            let h = &prepared[start].header;
            if self.exceeds_active(
                h.total_bytes() as u64,
                h.last_offset(),
                h.max_timestamp,
                now_ms,
            ) {
                // The new segment starts at the batch (Kafka does so too):
                // offsets in a segment stay within 2^32 of its base.
                self.roll_at(h.base_offset)?;
            }
            let mut end = start + 1;
            let mut run_bytes = h.total_bytes() as u64;
            let mut run_max_timestamp = h.max_timestamp;
            while let Some(next) = prepared.get(end) {
                let h = &next.header;
                let grown = run_bytes + h.total_bytes() as u64;
                let max_timestamp = run_max_timestamp.max(h.max_timestamp);
                if self.exceeds_active(grown, h.last_offset(), max_timestamp, now_ms) {
                    break;
                }
                run_bytes = grown;
                run_max_timestamp = max_timestamp;
                end += 1;
            }
            for b in &prepared[start..end] {
                self.assign_epoch(b.header.partition_leader_epoch, b.header.base_offset)?;
            }
            self.active_mut().append(&prepared[start..end])?;
            for b in &prepared[start..end] {
                self.record_producer(b, now_ms);
            }
            start = end;
        }
        let count = last.next_offset() - first.base_offset;
        let sync_file = self.count_unflushed(count, now_ms)?;
        Ok(AppendInfo {
            base_offset: first.base_offset,
            last_offset: last.last_offset(),
            log_append_time_ms: -1,
            log_start_offset: self.log_start_offset,
            records: count,
            bytes,
            duplicate: false,
            sync_file,
        })
    }

    /// Checks idempotent producers' sequence numbers. `Ok(Some(info))`
    /// when the record set is a retry of a batch already in the log.
    fn check_producer_sequences(
        &self,
        batches: &[ValidBatch],
    ) -> Result<Option<AppendInfo>, AppendError> {
        if let [ValidBatch { header: h, .. }] = batches {
            return match self.producers.check(h)? {
                SequenceCheck::Append => Ok(None),
                SequenceCheck::Duplicate(original) => Ok(Some(AppendInfo {
                    base_offset: original.first_offset,
                    last_offset: original.last_offset(),
                    log_append_time_ms: -1,
                    log_start_offset: self.log_start_offset,
                    records: 0,
                    bytes: 0,
                    duplicate: true,
                    sync_file: None,
                })),
            };
        }
        // Several batches: each must follow the one before it.
        let mut scratch = self
            .producers
            .subset(batches.iter().map(|b| b.header.producer_id));
        for (i, h) in batches.iter().map(|b| &b.header).enumerate() {
            match scratch.check(h)? {
                SequenceCheck::Append => {
                    let mut placed = *h;
                    placed.base_offset = i as i64; // offsets do not matter for sequencing
                    scratch.update(&placed, 0);
                }
                SequenceCheck::Duplicate(_) => {
                    return Err(AppendError::DuplicateInRecordSet(h.producer_id))
                }
            }
        }
        Ok(None)
    }

    /// The idempotent-producer state (for tests and tools).
    pub fn producer_state(&self) -> &ProducerState {
        &self.producers
    }

    /// Records an appended batch in the producer state: its sequence, or,
    /// for a transaction marker, the end of its producer's transaction.
    fn record_producer(&mut self, b: &PreparedBatch, now_ms: i64) {
        if b.header.is_control() {
            if let Some(t) = super::records::control_record_type(&b.body) {
                self.producers
                    .update_control(&b.header, ControlType::from_type(t), now_ms);
            }
        } else {
            self.producers.update(&b.header, now_ms);
        }
    }

    /// The first offset of the oldest open transaction: the last stable
    /// offset is the high watermark or this, whichever is lower.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.producers.first_unstable_offset()
    }

    /// The aborted transactions with records in `[from, to)` (for a
    /// read_committed fetch), oldest first.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.producers.aborted_between(from, to)
    }

    fn should_roll(
        &self,
        incoming_bytes: u64,
        last_offset: i64,
        incoming_max_ts: i64,
        now_ms: i64,
    ) -> bool {
        !self.active().is_empty()
            && self.exceeds_active(incoming_bytes, last_offset, incoming_max_ts, now_ms)
    }

    /// Whether `incoming_bytes` more, up to `last_offset`, would take the
    /// active segment past one of its limits, even when it is empty.
    fn exceeds_active(
        &self,
        incoming_bytes: u64,
        last_offset: i64,
        incoming_max_ts: i64,
        now_ms: i64,
    ) -> bool {
        let active = self.active();
        let segment_bytes = self.config.segment_bytes.min(SEGMENT_BYTES_LIMIT);
        let max_index_entries = (self.config.segment_index_bytes / 8).max(1) as usize;
        active.size() + incoming_bytes > segment_bytes
            || active.offset_index_entries() >= max_index_entries
            || last_offset - active.base_offset() > u32::MAX as i64
            || active.age_for_roll_ms(incoming_max_ts, now_ms) > self.config.segment_ms
    }

    /// Closes the active segment and starts a new one at the log end
    /// offset. The closed segment is not fsynced here (that would stall
    /// appends); it is left for the next [`PartitionLog::prepare_flush`],
    /// which `flush_wanted` asks for.
    pub fn roll(&mut self) -> io::Result<()> {
        if self.active().is_empty() {
            return Ok(());
        }
        self.roll_at(self.log_end_offset())
    }

    /// Starts a new active segment at `base_offset` (`>=` the log end).
    /// An empty active segment is replaced rather than kept, unless it is
    /// the only one (it then holds the log start).
    fn roll_at(&mut self, base_offset: i64) -> io::Result<()> {
        let active_base = self.active().base_offset();
        if base_offset <= active_base {
            return Ok(());
        }
        let segment = Segment::create(&self.dir, base_offset, self.config.index_interval_bytes)?;
        let replace_empty = self.active().is_empty() && self.segments.len() > 1;
        if !replace_empty {
            self.active_mut().seal();
            self.flush_wanted = true;
        }
        // The old active segment is closed: its file is opened on demand.
        self.active_mut().close_file();
        self.segments.insert(base_offset, segment);
        if replace_empty {
            // Recovery would drop an empty segment in the middle anyway.
            let empty = self.segments.remove(&active_base).expect("present");
            empty.delete_files()?;
        }
        Ok(())
    }

    /// True once after a roll: the caller should flush soon, in the
    /// background, so the recovery point keeps up with closed segments.
    pub fn take_flush_wanted(&mut self) -> bool {
        std::mem::take(&mut self.flush_wanted)
    }

    /// Plans a read of whole batches starting with the one holding
    /// `offset`, at most `max_bytes` long (the last batch may be cut, as in
    /// Kafka), holding no record at or above `upper_bound` (the high
    /// watermark the caller decided; a batch that straddles it is not
    /// returned). With `min_one_batch`, the first batch is returned whole
    /// even when it is larger than `max_bytes`. `Ok(None)`: nothing to read
    /// yet. Offsets between the bound and the log end are in range.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        upper_bound: i64,
    ) -> Result<Option<ReadSlice>, ReadError> {
        let log_end = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end,
            });
        }
        let upper = upper_bound.min(log_end);
        if offset >= upper {
            return Ok(None);
        }
        let first = self.segments.range(..=offset).next_back().map(|(k, _)| *k);
        let start_key = first.unwrap_or(*self.segments.keys().next().expect("segment"));
        for (_, segment) in self.segments.range(start_key..) {
            if segment.base_offset() >= upper {
                break;
            }
            // Batches from the one holding `upper` on are out of reach. The
            // usual case (the bound at or past this segment's end) costs
            // no lookup.
            let limit = if segment.next_offset() <= upper {
                segment.size()
            } else {
                segment.position_of(upper)?
            };
            if let Some((position, header)) = segment.find_batch(offset, limit)? {
                if header.base_offset >= upper {
                    return Ok(None);
                }
                let available = (limit - position) as usize;
                let mut len = available.min(max_bytes);
                if len < header.total_bytes() {
                    if min_one_batch {
                        len = header.total_bytes();
                    } else {
                        return Ok(None);
                    }
                }
                return Ok(Some(ReadSlice {
                    file: segment.handle()?,
                    position,
                    len,
                }));
            }
        }
        Ok(None)
    }

    /// First offset whose record timestamp is `>= target` and that
    /// record's timestamp; `None` if every record is older.
    pub fn offset_for_timestamp(&self, target: i64) -> io::Result<Option<(i64, i64)>> {
        for segment in self.segments.values() {
            if segment.max_timestamp() < target {
                continue;
            }
            if let Some((position, h)) = segment.find_batch_by_timestamp(target, segment.size())? {
                let raw = segment.read(position, h.total_bytes())?;
                if let Some(found) = first_record_at_or_after(&raw, target, self.log_start_offset)?
                {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// Offset and timestamp of the record with the largest timestamp.
    pub fn max_timestamp_offset(&self) -> io::Result<Option<(i64, i64)>> {
        let best = self
            .segments
            .values()
            .filter(|s| s.max_timestamp() >= 0)
            .max_by_key(|s| s.max_timestamp());
        let Some(segment) = best else { return Ok(None) };
        let target = segment.max_timestamp();
        match segment.find_batch_by_timestamp(target, segment.size())? {
            Some((position, h)) => {
                let raw = segment.read(position, h.total_bytes())?;
                Ok(
                    first_record_at_or_after(&raw, target, self.log_start_offset)?
                        .or(Some((h.last_offset(), target))),
                )
            }
            None => Ok(None),
        }
    }

    /// Moves the log start offset forward (DeleteRecords). `offset` must
    /// not pass `high_watermark` (the caller's). Whole segments below it
    /// are deleted.
    pub fn delete_records_before(
        &mut self,
        offset: i64,
        high_watermark: i64,
    ) -> Result<i64, ReadError> {
        let upper = high_watermark.min(self.log_end_offset());
        if offset > upper || offset < 0 {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end: upper,
            });
        }
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
            self.producers.forget_aborted_before(self.log_start_offset);
            self.log_start_moved();
            self.delete_segments_below_start()?;
        }
        Ok(self.log_start_offset)
    }

    fn delete_segments_below_start(&mut self) -> io::Result<usize> {
        let mut deleted = 0;
        loop {
            let mut keys = self.segments.keys();
            let (Some(&first), Some(&second)) = (keys.next(), keys.next()) else {
                break;
            };
            if second > self.log_start_offset {
                break;
            }
            let segment = self.segments.remove(&first).expect("present");
            segment.delete_files()?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Applies `retention.ms` and `retention.bytes`; returns how many
    /// segments were deleted. The active segment is rolled first when it
    /// is itself entirely expired, as Kafka does.
    pub fn apply_retention(&mut self, now_ms: i64) -> io::Result<usize> {
        if !self.config.cleanup_delete {
            return Ok(0);
        }
        let mut deleted = 0;
        let retention_ms = self.config.retention_ms;
        if retention_ms >= 0 {
            let cutoff = now_ms.saturating_sub(retention_ms);
            let expired = |s: &Segment| -> io::Result<bool> {
                Ok(!s.is_empty() && s.largest_timestamp()? < cutoff)
            };
            while self.segments.len() > 1 {
                let first = self.segments.values().next().expect("segment");
                if !(first.is_empty() || expired(first)?) {
                    break;
                }
                deleted += self.delete_first_segment()?;
            }
            if self.segments.len() == 1 && expired(self.active())? {
                self.roll()?;
                deleted += self.delete_first_segment()?;
            }
        }
        if self.config.retention_bytes >= 0 {
            let mut total = self.size_bytes();
            while self.segments.len() > 1 {
                let first_size = self.segments.values().next().expect("segment").size();
                if total.saturating_sub(first_size) < self.config.retention_bytes as u64 {
                    break;
                }
                total -= first_size;
                deleted += self.delete_first_segment()?;
            }
        }
        deleted += self.delete_segments_below_start()?;
        Ok(deleted)
    }

    fn delete_first_segment(&mut self) -> io::Result<usize> {
        let (&first, _) = self.segments.iter().next().expect("segment");
        let segment = self.segments.remove(&first).expect("present");
        segment.delete_files()?;
        let next_base = *self
            .segments
            .keys()
            .next()
            .expect("a later segment remains");
        self.log_start_offset = self.log_start_offset.max(next_base);
        self.producers.forget_aborted_before(self.log_start_offset);
        self.log_start_moved();
        Ok(1)
    }

    /// Fsyncs every segment with unflushed data together with its index
    /// files; the recovery point becomes the log end offset. Holds the log
    /// for the fsyncs: for tests and shutdown. The broker uses
    /// [`PartitionLog::prepare_flush`] to sync without holding it.
    pub fn flush(&mut self, now_ms: i64) -> io::Result<()> {
        let plan = self.prepare_flush(now_ms)?;
        plan.sync()?;
        self.complete_flush(&plan);
        Ok(())
    }

    /// First half of a flush: writes pending index entries and collects the
    /// files to fsync up to the current log end.
    pub fn prepare_flush(&mut self, now_ms: i64) -> io::Result<FlushPlan> {
        let target_offset = self.log_end_offset();
        let mut segments = Vec::new();
        for segment in self.segments.values_mut() {
            if segment.has_unflushed_data() {
                segments.push(segment.prepare_flush()?);
            }
        }
        self.unflushed_messages = 0;
        self.last_flush_ms = now_ms;
        self.producers
            .expire(now_ms.saturating_sub(self.config.producer_id_expiration_ms));
        let producers = (!self.producers.is_empty()).then(|| {
            (
                self.producers.clone(),
                PendingSnapshot::new(&self.dir, target_offset),
            )
        });
        Ok(FlushPlan {
            target_offset,
            segments,
            producers,
            truncations: self.truncations,
        })
    }

    /// Last half of a flush, after [`FlushPlan::sync`] succeeded: the
    /// segments are durable, the recovery point moves up and the producer
    /// snapshot takes its place. A plan made before a truncation changes
    /// nothing (its snapshot may describe batches that were cut).
    pub fn complete_flush(&mut self, plan: &FlushPlan) {
        if plan.truncations != self.truncations {
            if let Some((_, snapshot)) = &plan.producers {
                snapshot.discard();
            }
            return;
        }
        for done in &plan.segments {
            if let Some(segment) = self.segments.get_mut(&done.base_offset) {
                segment.mark_flushed(done.size);
            }
        }
        self.recovery_point = self.recovery_point.max(plan.target_offset);
        if let Some((_, snapshot)) = &plan.producers {
            if let Err(e) = snapshot.commit() {
                // The previous snapshot stays; a restart replays more.
                warn!(dir = %self.dir.display(), error = %e, "cannot put a producer snapshot in place");
            }
        }
    }

    /// Whether anything was appended since the last flush.
    pub fn needs_flush(&self) -> bool {
        self.recovery_point < self.log_end_offset()
    }

    /// Seals the active segment's time index and flushes, for shutdown.
    pub fn close(&mut self, now_ms: i64) -> io::Result<()> {
        self.active_mut().seal();
        self.flush(now_ms)
    }

    /// Deletes every file of the log (topic deletion).
    pub fn delete_all(self) -> io::Result<()> {
        let dir = self.dir.clone();
        drop(self);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// `truncation-checkpoint`: the recovery point and log start a truncation
/// left, kept until the broker's own checkpoints are at or below them.
/// ```text
/// 0        format version
/// 1200     recovery point: segments at or after it are scanned on open
/// 0        log start: the log-start checkpoint is capped by it on open
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TruncationFloor {
    recovery_point: i64,
    log_start: i64,
}

const TRUNCATION_CHECKPOINT: &str = "truncation-checkpoint";

impl TruncationFloor {
    /// The floor in `dir`, if any. A damaged file is a floor of zero (scan
    /// everything): the truncation it recorded is not known.
    fn read(dir: &Path) -> Option<TruncationFloor> {
        let path = dir.join(TRUNCATION_CHECKPOINT);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read; scanning the whole log");
                return Some(TruncationFloor {
                    recovery_point: 0,
                    log_start: i64::MAX,
                });
            }
        };
        let mut lines = text.lines();
        let parsed = match (lines.next(), lines.next(), lines.next(), lines.next()) {
            (Some("0"), Some(rp), Some(ls), None) => rp.parse().ok().zip(ls.parse().ok()),
            _ => None,
        };
        match parsed {
            Some((recovery_point, log_start)) => Some(TruncationFloor {
                recovery_point,
                log_start,
            }),
            None => {
                warn!(path = %path.display(), "damaged; scanning the whole log");
                Some(TruncationFloor {
                    recovery_point: 0,
                    log_start: i64::MAX,
                })
            }
        }
    }

    fn write(&self, dir: &Path) -> io::Result<()> {
        super::checkpoint::write_atomically(
            &dir.join(TRUNCATION_CHECKPOINT),
            format!("0\n{}\n{}\n", self.recovery_point, self.log_start).as_bytes(),
        )
    }

    fn lower(self, other: TruncationFloor) -> TruncationFloor {
        TruncationFloor {
            recovery_point: self.recovery_point.min(other.recovery_point),
            log_start: self.log_start.min(other.log_start),
        }
    }
}

/// Truncation: cutting a follower's divergent tail (see the module docs
/// for the steps and why a crash between them is harmless).
impl PartitionLog {
    /// Cuts the log so that it ends before `offset`: the batch holding
    /// `offset` (or the first batch after it) and everything later go, so a
    /// cut inside a batch ends the log at that batch's start, as in Kafka.
    /// Whole later segments are deleted, the segment holding the cut is cut
    /// (indexes too), producer state and the epoch cache are rebuilt or
    /// cut to match, and the recovery point and log start move down if
    /// they were above. Returns whether anything was cut; at or past the
    /// log end only epochs that started at the log end (a leader that
    /// wrote nothing) are dropped, as in Kafka. An I/O error leaves a
    /// valid log somewhere between the old and the cut one: call again.
    pub fn truncate_to(&mut self, offset: i64, now_ms: i64) -> io::Result<bool> {
        if offset < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot truncate {} to offset {offset}", self.dir.display()),
            ));
        }
        let log_end = self.log_end_offset();
        if offset >= log_end {
            if self.epochs.truncate_from_end(log_end) {
                epochs::write_checkpoint(&self.dir, &self.epochs)?;
            }
            return Ok(false);
        }
        let first_base = *self
            .segments
            .keys()
            .next()
            .expect("a log always has a segment");
        if offset < first_base {
            self.truncate_fully_and_start_at(offset)?;
            return Ok(true);
        }
        let cut_base = *self
            .segments
            .range(..=offset)
            .next_back()
            .expect("a segment at or below the offset")
            .0;
        let segment = &self.segments[&cut_base];
        let old_size = segment.size();
        let (cut_position, cut_offset) = match segment.find_batch(offset, old_size)? {
            Some((position, h)) => (position, h.base_offset.min(offset)),
            None => (old_size, offset),
        };
        info!(
            dir = %self.dir.display(),
            offset,
            cut_offset,
            log_end_offset = log_end,
            "truncating the log"
        );

        // 1. Whatever the broker's checkpoints say, a restart must scan from
        //    the cut and not start the log above it.
        self.begin_truncation(TruncationFloor {
            recovery_point: self.recovery_point.min(cut_offset),
            log_start: self.log_start_offset.min(cut_offset),
        })?;
        self.crash_point(1)?;
        // 2. Producer snapshots that describe batches being cut.
        producer_state::remove_snapshots_above(&self.dir, cut_offset)?;
        self.crash_point(2)?;
        // 3. Later segments, newest first, so what is left is a prefix.
        let later: Vec<i64> = self
            .segments
            .range(cut_base + 1..)
            .map(|(base, _)| *base)
            .rev()
            .collect();
        for base in later {
            let segment = self.segments.remove(&base).expect("present");
            segment.delete_files()?;
            sync_dir(&self.dir)?;
            self.crash_point(3)?;
        }
        // 4. The segment holding the cut.
        let segment = self.segments.get_mut(&cut_base).expect("present");
        segment.truncate_at(cut_position)?;
        self.crash_point(4)?;
        // 5. Epochs from the cut on.
        if self.epochs.truncate_from_end(cut_offset) {
            epochs::write_checkpoint(&self.dir, &self.epochs)?;
        }
        self.crash_point(5)?;
        // 6. The active segment: the last segment if it was not cut and
        //    ends at the cut, otherwise a new one there (a new file: nothing
        //    is ever appended where a cut removed bytes).
        if cut_position == 0 {
            // The cut emptied it.
            let empty = self.segments.remove(&cut_base).expect("present");
            if let Err(e) = empty.delete_files().and_then(|()| sync_dir(&self.dir)) {
                self.segments.insert(cut_base, empty);
                return Err(e);
            }
        }
        let reuse = self.segments.values().next_back().is_some_and(|last| {
            last.next_offset() == cut_offset
                && (last.base_offset() != cut_base || cut_position == old_size)
        });
        if reuse {
            self.active_mut().open_file()?;
        } else {
            let segment = Segment::create(&self.dir, cut_offset, self.config.index_interval_bytes)?;
            if let Some(last) = self.segments.values_mut().next_back() {
                last.seal();
                last.close_file();
            }
            self.segments.insert(cut_offset, segment);
        }
        self.crash_point(6)?;

        let first_base = *self.segments.keys().next().expect("a segment");
        self.log_start_offset = self.log_start_offset.min(cut_offset).max(first_base);
        self.recovery_point = self.recovery_point.min(cut_offset);
        self.unflushed_messages = 0;
        self.rebuild_producer_state(now_ms)?;
        Ok(true)
    }

    /// Empties the log and starts it at `offset` (a follower whose log is
    /// out of the leader's range, below its log start): every segment,
    /// producer snapshot and the epoch checkpoint go, and one empty
    /// segment at `offset` is left; the log start and recovery point
    /// become `offset`. Segments are deleted oldest first, so a crash
    /// leaves a log like retention would (a later start), with no epoch
    /// checkpoint (rebuilt from what is left) and no snapshots (replayed).
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> io::Result<()> {
        if offset < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot start {} at offset {offset}", self.dir.display()),
            ));
        }
        info!(dir = %self.dir.display(), offset, "emptying the log to start it again");
        self.begin_truncation(TruncationFloor {
            recovery_point: offset,
            log_start: offset,
        })?;
        self.crash_point(1)?;
        producer_state::remove_snapshots_above(&self.dir, -1)?;
        self.producers = ProducerState::new();
        self.crash_point(2)?;
        epochs::remove_checkpoint(&self.dir)?;
        self.epochs.clear();
        self.crash_point(3)?;
        while self.segments.len() > 1 {
            let first = *self.segments.keys().next().expect("present");
            let segment = self.segments.remove(&first).expect("present");
            let next = *self.segments.keys().next().expect("present");
            self.log_start_offset = self.log_start_offset.max(next);
            self.producers.forget_aborted_before(self.log_start_offset);
            segment.delete_files()?;
            self.crash_point(4)?;
        }
        // The last one: its files go before the new segment is created,
        // which may have the same name (a new file, so a read of the old
        // one holding it is unaffected).
        let last = *self.segments.keys().next().expect("present");
        let old = self.segments.remove(&last).expect("present");
        let created = old
            .delete_files()
            .and_then(|()| sync_dir(&self.dir))
            .and_then(|()| Segment::create(&self.dir, offset, self.config.index_interval_bytes));
        match created {
            Ok(segment) => {
                self.segments.insert(offset, segment);
            }
            Err(e) => {
                // Keep a segment in the map: its reads and writes fail
                // until the call is made again.
                self.segments.insert(last, old);
                return Err(e);
            }
        }
        self.log_start_offset = offset;
        self.producers.forget_aborted_before(self.log_start_offset);
        self.recovery_point = offset;
        self.unflushed_messages = 0;
        Ok(())
    }

    /// Step 1 of a truncation: counts it (so in-flight flushes complete
    /// nothing) and writes the truncation checkpoint.
    fn begin_truncation(&mut self, floor: TruncationFloor) -> io::Result<()> {
        self.truncations += 1;
        let floor = match self.truncation_floor {
            Some(existing) => existing.lower(floor),
            None => floor,
        };
        floor.write(&self.dir)?;
        self.truncation_floor = Some(floor);
        self.floor_reflected = (false, false);
        Ok(())
    }

    /// The broker wrote its recovery-point checkpoint with this value for
    /// this log. Once it and the log-start checkpoint were written with
    /// values no higher than what the log holds (so taken after the last
    /// truncation, or harmless), the truncation checkpoint goes.
    pub fn recovery_point_checkpointed(&mut self, recovery_point: i64) {
        if self.truncation_floor.is_some() && recovery_point <= self.recovery_point {
            self.floor_reflected.0 = true;
            self.drop_reflected_floor();
        }
    }

    /// The broker wrote its log-start checkpoint with this value for this
    /// log; see [`Self::recovery_point_checkpointed`].
    pub fn log_start_checkpointed(&mut self, log_start: i64) {
        if self.truncation_floor.is_some() && log_start <= self.log_start_offset {
            self.floor_reflected.1 = true;
            self.drop_reflected_floor();
        }
    }

    fn drop_reflected_floor(&mut self) {
        if self.floor_reflected != (true, true) {
            return;
        }
        match std::fs::remove_file(self.dir.join(TRUNCATION_CHECKPOINT)) {
            Ok(()) => self.truncation_floor = None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.truncation_floor = None,
            Err(e) => {
                warn!(dir = %self.dir.display(), error = %e, "cannot remove the truncation checkpoint")
            }
        }
    }

    /// Whether a truncation is not yet reflected in the broker's
    /// checkpoints (see [`Self::recovery_point_checkpointed`]); a crash
    /// now opens the log with its own floor.
    pub fn has_truncation_checkpoint(&self) -> bool {
        self.truncation_floor.is_some()
    }

    /// Tests make a truncation stop after step `step`, as a crash would;
    /// a no-op otherwise.
    #[cfg_attr(not(test), inline(always))]
    fn crash_point(&self, step: u32) -> io::Result<()> {
        #[cfg(test)]
        if self.crash_after_step == Some(step) {
            return Err(io::Error::other(format!(
                "simulated crash after step {step}"
            )));
        }
        let _ = step;
        Ok(())
    }
}

/// A closed segment as the log cleaner sees it: enough to read it without
/// holding the log, and to recognise it again at swap time.
#[derive(Debug, Clone)]
pub struct SegmentSnapshot {
    pub base_offset: i64,
    /// Offset after the segment's last batch.
    pub next_offset: i64,
    pub size: u64,
    /// Largest record timestamp, -1 when unknown.
    pub max_timestamp: i64,
    pub file: Arc<File>,
    /// The segment's id: a swap goes ahead only if the segment is still
    /// this one (see [`Segment::id`]).
    pub segment_id: u64,
}

/// What the log cleaner needs to plan a pass, taken under the log's lock.
#[derive(Debug, Clone)]
pub struct CleanerSnapshot {
    pub dir: PathBuf,
    pub config: LogConfig,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub recovery_point: i64,
    /// Base offset of the active segment, which the cleaner never touches.
    pub active_base_offset: i64,
    /// Every segment except the active one, oldest first.
    pub closed_segments: Vec<SegmentSnapshot>,
}

/// What [`PartitionLog::replace_segment`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaceOutcome {
    /// The cleaned segment took the old one's place.
    Replaced,
    /// Nothing survived cleaning: the segment was deleted.
    Removed,
    /// The segment is gone or not the one that was cleaned (retention or
    /// DeleteRecords got there first): nothing was changed.
    Changed,
}

/// The log cleaner's hooks (see `cleaner.rs`): a snapshot of the closed
/// segments, and the short swap done under the log's lock.
impl PartitionLog {
    pub fn cleaner_snapshot(&self) -> CleanerSnapshot {
        let active_base_offset = self.active().base_offset();
        let closed_segments = self
            .segments
            .values()
            .filter(|s| s.base_offset() != active_base_offset)
            .map(|s| {
                Ok(SegmentSnapshot {
                    base_offset: s.base_offset(),
                    next_offset: s.next_offset(),
                    size: s.size(),
                    max_timestamp: s.max_timestamp(),
                    file: s.handle()?,
                    segment_id: s.id(),
                })
            })
            .collect::<io::Result<Vec<_>>>()
            .unwrap_or_else(|e| {
                // Nothing is cleaned this pass; the next one tries again.
                warn!(dir = %self.dir.display(), error = %e, "cannot open segments for cleaning");
                Vec::new()
            });
        CleanerSnapshot {
            dir: self.dir.clone(),
            config: self.config.clone(),
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset(),
            recovery_point: self.recovery_point,
            active_base_offset,
            closed_segments,
        }
    }

    /// Replaces the closed segment `expected` with its cleaned version
    /// (`Some`: files `<base>.*.cleaned` written and fsynced by the
    /// cleaner), or deletes it (`None`: nothing survived). Does nothing and
    /// returns [`ReplaceOutcome::Changed`] when the segment is no longer the
    /// one that was read. Open readers of the old file keep reading it.
    pub fn replace_segment(
        &mut self,
        expected: &SegmentSnapshot,
        replacement: Option<Segment>,
    ) -> io::Result<ReplaceOutcome> {
        let base = expected.base_offset;
        let is_active = self.active().base_offset() == base;
        let unchanged = self
            .segments
            .get(&base)
            .is_some_and(|s| s.id() == expected.segment_id && s.size() == expected.size);
        if is_active || !unchanged {
            return Ok(ReplaceOutcome::Changed);
        }
        match replacement {
            Some(mut segment) => {
                // A closed segment: read on demand from `<base>.log`, which
                // is the new file once the swap commits.
                segment.close_file();
                if segment.base_offset() != base {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "replacement segment has another base offset",
                    ));
                }
                match super::swap::commit_swap(&self.dir, base) {
                    Ok(()) => {
                        self.segments.insert(base, segment);
                        Ok(ReplaceOutcome::Replaced)
                    }
                    Err(e) => {
                        if e.committed {
                            // The new .log is in place: serve what a restart
                            // would serve.
                            self.segments.insert(base, segment);
                        }
                        Err(e.error)
                    }
                }
            }
            None => {
                if let Some(old) = self.segments.remove(&base) {
                    if let Err(e) = old.delete_files() {
                        // Whatever is left on disk is the old content or
                        // nothing; keep serving the old content meanwhile.
                        self.segments.insert(base, old);
                        return Err(e);
                    }
                }
                let first = *self
                    .segments
                    .keys()
                    .next()
                    .expect("the active segment remains");
                // As after retention: the start is never below the first
                // segment, so a restart finds the same log start.
                self.log_start_offset = self.log_start_offset.max(first);
                self.producers.forget_aborted_before(self.log_start_offset);
                self.log_start_moved();
                Ok(ReplaceOutcome::Removed)
            }
        }
    }
}

/// Decodes one stored batch and finds the first record with a timestamp
/// `>= target` at or after `min_offset`.
fn first_record_at_or_after(
    raw: &Bytes,
    target: i64,
    min_offset: i64,
) -> io::Result<Option<(i64, i64)>> {
    let header =
        BatchHeader::parse(raw).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if header.attributes & ATTR_LOG_APPEND_TIME != 0 {
        // Every record carries the batch's append time.
        return Ok((header.max_timestamp >= target)
            .then_some((header.base_offset.max(min_offset), header.max_timestamp)));
    }
    let set = super::records::decode_batch(raw, super::records::MAX_DECOMPRESSED_BYTES)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(set
        .records
        .iter()
        .find(|r| r.timestamp >= target && r.offset >= min_offset)
        .map(|r| (r.offset, r.timestamp)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::tests::{make_batch, make_batch_at, make_idempotent_batch};
    use crate::storage::producer_state::SequenceError;
    use crate::storage::segment::segment_file_name;
    use kafka_protocol::records::Compression;

    fn open(dir: &Path, config: LogConfig, recovery_point: i64) -> PartitionLog {
        PartitionLog::open(dir, config, recovery_point, 0, 0)
            .unwrap()
            .0
    }

    fn small_segments() -> LogConfig {
        LogConfig {
            segment_bytes: 4096,
            index_interval_bytes: 512,
            ..Default::default()
        }
    }

    #[test]
    fn offsets_are_assigned_densely_across_batches_and_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), small_segments(), 0);
        for i in 0..100 {
            let info = log
                .append(&make_batch(5, 40, Compression::None), 0, 0)
                .unwrap();
            assert_eq!(info.base_offset, i * 5);
            assert_eq!(info.last_offset, i * 5 + 4);
        }
        assert!(log.segment_count() > 3, "small segments must roll");
        assert_eq!(log.log_end_offset(), 500);
        // Every offset can be read back from the right batch.
        for offset in [0, 4, 5, 123, 499] {
            let slice = log.read(offset, 1 << 20, true, i64::MAX).unwrap().unwrap();
            let bytes = slice.read().unwrap();
            let h = BatchHeader::parse(&bytes).unwrap();
            assert!(h.base_offset <= offset && offset <= h.last_offset());
        }
        assert!(log.read(500, 1024, true, i64::MAX).unwrap().is_none());
        assert!(matches!(
            log.read(501, 1024, true, i64::MAX),
            Err(ReadError::OffsetOutOfRange { .. })
        ));
    }

    #[test]
    fn only_the_active_segment_keeps_its_file_open_and_closed_ones_are_read_on_demand() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("t-0");
        let mut log = open(&dir, small_segments(), 0);
        for _ in 0..200 {
            log.append(&make_batch(5, 40, Compression::None), 0, 0)
                .unwrap();
        }
        assert!(log.segment_count() > 5, "{}", log.segment_count());
        assert_eq!(log.open_segment_files(), 1, "after rolling");
        log.flush(0).unwrap();
        let recovery_point = log.recovery_point();
        drop(log);
        let mut log = open(&dir, small_segments(), recovery_point);
        assert_eq!(log.open_segment_files(), 1, "after opening");
        // Every offset of every closed segment is readable, also after the
        // partition directory moved.
        let moved = root.path().join("t-0.moved");
        log.relocate(&moved).unwrap();
        assert!(!dir.join(segment_file_name(0, "log")).exists());
        assert!(moved.join(segment_file_name(0, "log")).exists());
        for offset in (0..1000).step_by(7) {
            let slice = log.read(offset, 1 << 20, true, i64::MAX).unwrap().unwrap();
            let h = BatchHeader::parse(&slice.read().unwrap()).unwrap();
            assert!(h.base_offset <= offset && offset <= h.last_offset());
        }
        log.append(&make_batch(5, 40, Compression::None), 0, 0)
            .unwrap();
        assert_eq!(log.log_end_offset(), 1005);
        assert_eq!(log.open_segment_files(), 1);
    }

    #[test]
    fn segments_roll_when_the_first_batch_is_older_than_segment_ms() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_ms: 60_000,
            ..Default::default()
        };
        let mut log = open(dir.path(), config, 0);
        log.append(&make_batch_at(1, 10, Compression::None, 1_000_000), 0, 0)
            .unwrap();
        log.append(&make_batch_at(1, 10, Compression::None, 1_030_000), 0, 0)
            .unwrap();
        assert_eq!(log.segment_count(), 1, "30 s later: same segment");
        log.append(&make_batch_at(1, 10, Compression::None, 1_070_000), 0, 0)
            .unwrap();
        assert_eq!(log.segment_count(), 2, "70 s after the first batch: rolled");
        assert_eq!(*log.segments.keys().last().unwrap(), 2);
        assert!(
            log.take_flush_wanted(),
            "a roll asks for a background flush"
        );
        assert!(!log.take_flush_wanted());
    }

    #[test]
    fn a_retried_idempotent_batch_is_answered_with_its_original_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), LogConfig::default(), 0);
        log.append(&make_batch(2, 10, Compression::None), 0, 0)
            .unwrap();
        let first = make_idempotent_batch(42, 0, 0, 5);
        let info = log.append(&first, 0, 0).unwrap();
        assert_eq!(
            (info.base_offset, info.last_offset, info.duplicate),
            (2, 6, false)
        );
        let again = log.append(&first, 0, 0).unwrap();
        assert_eq!(
            (again.base_offset, again.last_offset, again.duplicate),
            (2, 6, true)
        );
        assert_eq!(log.log_end_offset(), 7, "the duplicate was not written");
        // Sequence gaps and stale epochs are refused.
        let gap = log
            .append(&make_idempotent_batch(42, 0, 9, 1), 0, 0)
            .unwrap_err();
        assert!(
            matches!(
                gap,
                AppendError::Sequence(SequenceError::OutOfOrder { expected: 5, .. })
            ),
            "{gap}"
        );
        log.append(&make_idempotent_batch(42, 1, 0, 1), 0, 0)
            .unwrap();
        let stale = log
            .append(&make_idempotent_batch(42, 0, 5, 1), 0, 0)
            .unwrap_err();
        assert!(
            matches!(
                stale,
                AppendError::Sequence(SequenceError::InvalidEpoch { .. })
            ),
            "{stale}"
        );
    }

    #[test]
    fn duplicates_are_still_recognised_after_a_restart_and_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), small_segments(), 0);
        let mut seq = 0;
        let mut batches = Vec::new();
        for _ in 0..40 {
            let b = make_idempotent_batch(7, 0, seq, 3);
            let info = log.append(&b, 0, 0).unwrap();
            batches.push((b, info.base_offset));
            seq += 3;
        }
        // Clean restart: the snapshot written by close() is used.
        log.close(0).unwrap();
        let rp = log.recovery_point();
        drop(log);
        assert!(!producer_state::list_snapshots(dir.path())
            .unwrap()
            .is_empty());
        let (mut log, _) = PartitionLog::open(dir.path(), small_segments(), rp, 0, 0).unwrap();
        let (last, last_offset) = batches.last().unwrap();
        let dup = log.append(last, 0, 0).unwrap();
        assert!(dup.duplicate && dup.base_offset == *last_offset);
        let next = log
            .append(&make_idempotent_batch(7, 0, seq, 2), 0, 0)
            .unwrap();
        assert!(!next.duplicate);
        seq += 2;
        // Crash: nothing flushed since, snapshots removed; the state is
        // rebuilt from the batch headers in the log.
        drop(log);
        for (_, path) in producer_state::list_snapshots(dir.path()).unwrap() {
            std::fs::remove_file(path).unwrap();
        }
        let (mut log, _) = PartitionLog::open(dir.path(), small_segments(), 0, 0, 0).unwrap();
        let dup = log
            .append(&make_idempotent_batch(7, 0, seq - 2, 2), 0, 0)
            .unwrap();
        assert!(dup.duplicate, "the last batch before the crash is known");
        let gap = log.append(&make_idempotent_batch(7, 0, seq + 1, 1), 0, 0);
        assert!(gap.is_err());
    }

    #[test]
    fn a_read_respects_max_bytes_but_returns_at_least_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), LogConfig::default(), 0);
        let batch = make_batch(10, 100, Compression::None);
        for _ in 0..10 {
            log.append(&batch, 0, 0).unwrap();
        }
        let slice = log
            .read(0, batch.len() * 3 + 10, true, i64::MAX)
            .unwrap()
            .unwrap();
        assert_eq!(slice.len, batch.len() * 3 + 10);
        let slice = log.read(0, 10, true, i64::MAX).unwrap().unwrap();
        assert_eq!(slice.len, batch.len());
        assert!(log.read(0, 10, false, i64::MAX).unwrap().is_none());
    }

    #[test]
    fn the_log_reopens_with_the_same_offsets_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), small_segments(), 0);
        for _ in 0..50 {
            log.append(&make_batch(3, 100, Compression::Lz4), 0, 0)
                .unwrap();
        }
        let expected = log
            .read(30, 1 << 20, true, i64::MAX)
            .unwrap()
            .unwrap()
            .read()
            .unwrap();
        log.close(0).unwrap();
        let rp = log.recovery_point();
        drop(log);
        let (log, report) = PartitionLog::open(dir.path(), small_segments(), rp, 0, 0).unwrap();
        assert_eq!(report.truncated_bytes, 0);
        assert_eq!(
            report.segments_scanned, 1,
            "only the active segment is rescanned"
        );
        assert_eq!(log.log_end_offset(), 150);
        let again = log
            .read(30, 1 << 20, true, i64::MAX)
            .unwrap()
            .unwrap()
            .read()
            .unwrap();
        assert_eq!(expected, again);
    }

    #[test]
    fn a_log_without_checkpoint_is_fully_rescanned() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), small_segments(), 0);
        for _ in 0..50 {
            log.append(&make_batch(3, 100, Compression::None), 0, 0)
                .unwrap();
        }
        let segments = log.segment_count();
        drop(log); // as if killed: nothing flushed, no checkpoint
        let (log, report) = PartitionLog::open(dir.path(), small_segments(), 0, 0, 0).unwrap();
        assert_eq!(report.segments_scanned, segments);
        assert_eq!(log.log_end_offset(), 150);
    }

    #[test]
    fn corruption_in_an_unflushed_segment_drops_it_and_everything_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), small_segments(), 0);
        for _ in 0..50 {
            log.append(&make_batch(3, 100, Compression::None), 0, 0)
                .unwrap();
        }
        let bases: Vec<i64> = log.segments.keys().copied().collect();
        drop(log);
        // Damage the second segment's first batch.
        let path = dir
            .path()
            .join(super::super::segment::segment_file_name(bases[1], "log"));
        let mut raw = std::fs::read(&path).unwrap();
        raw[40] ^= 1;
        std::fs::write(&path, raw).unwrap();
        let (log, report) = PartitionLog::open(dir.path(), small_segments(), 0, 0, 0).unwrap();
        assert_eq!(log.log_end_offset(), bases[1]);
        assert_eq!(report.segments_dropped, bases.len() - 2);
        // Everything before the damage is still served.
        for offset in 0..bases[1] {
            assert!(log.read(offset, 1 << 20, true, i64::MAX).unwrap().is_some());
        }
    }

    #[test]
    fn retention_by_bytes_deletes_oldest_segments_and_moves_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            retention_bytes: 8192,
            ..small_segments()
        };
        let mut log = open(dir.path(), config, 0);
        for _ in 0..100 {
            log.append(&make_batch(3, 100, Compression::None), 0, 0)
                .unwrap();
        }
        let deleted = log.apply_retention(0).unwrap();
        assert!(deleted > 0);
        assert!(log.size_bytes() < 8192 + 4096);
        assert!(log.log_start_offset() > 0);
        assert_eq!(log.log_start_offset(), *log.segments.keys().next().unwrap());
        assert!(matches!(
            log.read(0, 100, true, i64::MAX),
            Err(ReadError::OffsetOutOfRange { .. })
        ));
    }

    #[test]
    fn retention_by_time_deletes_expired_segments_including_a_stale_active_one() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            retention_ms: 1000,
            ..small_segments()
        };
        let mut log = open(dir.path(), config, 0);
        for _ in 0..30 {
            log.append(&make_batch_at(3, 100, Compression::None, 10_000), 0, 10_000)
                .unwrap();
        }
        assert_eq!(
            log.apply_retention(10_500).unwrap(),
            0,
            "nothing is old enough yet"
        );
        assert!(log.apply_retention(20_000).unwrap() > 0);
        assert_eq!(log.log_start_offset(), 90);
        assert_eq!(log.log_end_offset(), 90);
        log.append(&make_batch(1, 1, Compression::None), 0, 0)
            .unwrap();
        assert_eq!(log.log_end_offset(), 91);
    }

    #[test]
    fn delete_records_moves_the_start_offset_and_drops_whole_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), small_segments(), 0);
        for _ in 0..50 {
            log.append(&make_batch(3, 100, Compression::None), 0, 0)
                .unwrap();
        }
        let before = log.segment_count();
        assert_eq!(log.delete_records_before(100, i64::MAX).unwrap(), 100);
        assert!(log.segment_count() < before);
        assert!(matches!(
            log.read(99, 100, true, i64::MAX),
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        assert!(log.read(100, 100, true, i64::MAX).unwrap().is_some());
        assert!(log.delete_records_before(10_000, i64::MAX).is_err());
    }

    /// `batch` with `maxTimestamp` replaced in its header (CRC fixed), as
    /// Sarama before 1.45.1 writes it.
    fn with_header_max_timestamp(batch: &Bytes, max_timestamp: i64) -> Bytes {
        let mut b = batch.to_vec();
        b[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }

    #[test]
    fn a_header_max_timestamp_of_minus_one_is_recomputed_for_lookups_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            retention_ms: 10_000,
            ..small_segments()
        };
        let mut log = open(dir.path(), config, 0);
        for i in 0..40 {
            // Batch i: timestamps 1000i .. 1000i+4 at offsets 5i .. 5i+4.
            let codec = if i % 2 == 0 {
                Compression::None
            } else {
                Compression::Gzip
            };
            let batch = make_batch_at(5, 100, codec, 1000 * i);
            log.append(&with_header_max_timestamp(&batch, -1), 0, 0)
                .unwrap();
        }
        let bytes = log
            .read(0, 1 << 20, true, i64::MAX)
            .unwrap()
            .unwrap()
            .read()
            .unwrap();
        assert_eq!(batch::validate_batch(&bytes).unwrap().max_timestamp, 4);
        assert_eq!(log.offset_for_timestamp(7002).unwrap(), Some((37, 7002)));
        assert_eq!(log.max_timestamp_offset().unwrap(), Some((199, 39_004)));
        // Segments expire by their records' time.
        assert!(log.apply_retention(30_000).unwrap() > 0);
        assert!(log.log_start_offset() > 0);
        log.apply_retention(50_000).unwrap();
        assert_eq!(log.log_start_offset(), 200);
    }

    #[test]
    fn a_first_batch_without_timestamps_does_not_make_every_later_batch_roll() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), LogConfig::default(), 0);
        let set = crate::storage::legacy::tests::set_of(0, &[(None, Some(b"v".as_slice()), -1)]);
        let no_timestamp = crate::storage::legacy::to_v2_batch(&set, 1 << 20).unwrap();
        let now = crate::broker::now_ms();
        log.append(&no_timestamp, 0, now).unwrap();
        for i in 0..3 {
            log.append(&make_batch_at(2, 10, Compression::None, now + i), 0, now)
                .unwrap();
        }
        assert_eq!(log.segment_count(), 1);
    }

    #[test]
    fn segments_without_record_timestamps_expire_by_their_files_age() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            retention_ms: 60_000,
            ..small_segments()
        };
        let mut log = open(dir.path(), config, 0);
        let now = crate::broker::now_ms();
        // Records of message format v0 have no timestamp (-1).
        let value = [b'v'; 100];
        let set =
            crate::storage::legacy::tests::set_of(0, &[(None, Some(value.as_slice()), -1); 5]);
        let batch = crate::storage::legacy::to_v2_batch(&set, 1 << 20).unwrap();
        for _ in 0..20 {
            log.append(&batch, 0, now).unwrap();
        }
        assert!(log.segment_count() > 1);
        assert_eq!(log.apply_retention(now).unwrap(), 0, "written just now");
        let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                file.set_modified(an_hour_ago).unwrap();
            }
        }
        assert!(log.apply_retention(now).unwrap() > 0);
        assert_eq!(log.log_start_offset(), 100);
    }

    #[test]
    fn timestamps_map_to_the_first_record_at_or_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), small_segments(), 0);
        for i in 0..40 {
            // Batch i holds timestamps 1000i .. 1000i+4 at offsets 5i .. 5i+4.
            log.append(&make_batch_at(5, 100, Compression::Zstd, 1000 * i), 0, 0)
                .unwrap();
        }
        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 0)));
        assert_eq!(log.offset_for_timestamp(7002).unwrap(), Some((37, 7002)));
        assert_eq!(log.offset_for_timestamp(7005).unwrap(), Some((40, 8000)));
        assert_eq!(log.offset_for_timestamp(1_000_000).unwrap(), None);
        assert_eq!(log.max_timestamp_offset().unwrap(), Some((199, 39_004)));
    }

    #[test]
    fn oversized_and_corrupt_batches_are_refused_and_leave_the_log_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            max_message_bytes: 1000,
            ..Default::default()
        };
        let mut log = open(dir.path(), config, 0);
        let big = make_batch(20, 100, Compression::None);
        assert!(matches!(
            log.append(&big, 0, 0),
            Err(AppendError::TooLarge { .. })
        ));
        let mut bad = make_batch(2, 10, Compression::None).to_vec();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(matches!(
            log.append(&Bytes::from(bad), 0, 0),
            Err(AppendError::Corrupt(_))
        ));
        // A good batch followed by a bad one: nothing is written.
        let mut mixed = make_batch(2, 10, Compression::None).to_vec();
        mixed.extend_from_slice(&[0u8; 30]);
        assert!(log.append(&Bytes::from(mixed), 0, 0).is_err());
        assert_eq!(log.log_end_offset(), 0);
        assert_eq!(log.size_bytes(), 0);
    }

    #[test]
    fn log_append_time_rewrites_the_batch_with_a_valid_crc() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..Default::default()
        };
        let mut log = open(dir.path(), config, 0);
        let info = log
            .append(&make_batch(3, 10, Compression::Snappy), 0, 42_000)
            .unwrap();
        assert_eq!(info.log_append_time_ms, 42_000);
        let bytes = log
            .read(0, 1 << 20, true, i64::MAX)
            .unwrap()
            .unwrap()
            .read()
            .unwrap();
        let h = batch::validate_batch(&bytes).unwrap();
        assert_eq!(h.max_timestamp, 42_000);
        assert_ne!(h.attributes & ATTR_LOG_APPEND_TIME, 0);
    }

    #[test]
    fn the_flush_policy_asks_for_a_sync_after_flush_messages() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            flush_messages: 10,
            ..Default::default()
        };
        let mut log = open(dir.path(), config, 0);
        let b = make_batch(4, 10, Compression::None);
        assert!(log.append(&b, 0, 0).unwrap().sync_file.is_none());
        assert!(log.append(&b, 0, 0).unwrap().sync_file.is_none());
        assert!(log.append(&b, 0, 0).unwrap().sync_file.is_some());
        assert!(log.append(&b, 0, 0).unwrap().sync_file.is_none());
    }

    // ---- high watermark as the caller's bound ----

    /// Every whole batch a consumer reading from `from` up to `upper` gets,
    /// with its bytes.
    fn read_all_from(log: &PartitionLog, from: i64, upper: i64) -> Vec<(BatchHeader, Bytes)> {
        let mut out = Vec::new();
        let mut offset = from;
        while let Some(slice) = log.read(offset, 1 << 20, true, upper).unwrap() {
            let bytes = slice.read().unwrap();
            let mut position = 0;
            while let Ok(h) = batch::validate_batch(&bytes[position..]) {
                out.push((h, bytes.slice(position..position + h.total_bytes())));
                position += h.total_bytes();
                offset = h.next_offset();
            }
            assert!(position > 0, "a read returns at least one whole batch");
        }
        out
    }

    fn read_all(log: &PartitionLog) -> Vec<(BatchHeader, Bytes)> {
        read_all_from(log, log.log_start_offset(), i64::MAX)
    }

    #[test]
    fn reads_never_return_records_at_or_beyond_the_upper_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), small_segments(), 0);
        for _ in 0..50 {
            log.append(&make_batch(3, 100, Compression::None), 0, 0)
                .unwrap();
        }
        assert!(log.segment_count() > 3);
        let segment_base = *log.segments.keys().nth(2).unwrap();
        for upper in [
            0,
            1,
            2,
            3,
            4,
            30,
            31,
            77,
            segment_base,
            segment_base + 1,
            149,
            150,
            1000,
        ] {
            for from in (0..150).step_by(7) {
                let got = read_all_from(&log, from, upper);
                assert!(
                    got.iter().all(|(h, _)| h.last_offset() < upper),
                    "read from {from} below {upper} returned {:?}",
                    got.iter().map(|(h, _)| h.base_offset).collect::<Vec<_>>()
                );
                // Every batch wholly below the bound is reached.
                let expected = (from / 3 * 3..upper.min(150) / 3 * 3).step_by(3).count();
                assert_eq!(got.len(), expected, "from {from} below {upper}");
            }
        }
        // Between the bound and the log end: in range, nothing yet.
        assert!(log.read(100, 1 << 20, true, 90).unwrap().is_none());
        assert!(log.read(150, 1 << 20, true, 90).unwrap().is_none());
        assert!(matches!(
            log.read(151, 1 << 20, true, 1000),
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        // DeleteRecords may not pass the bound either.
        assert!(log.delete_records_before(91, 90).is_err());
        assert_eq!(log.delete_records_before(90, 90).unwrap(), 90);
    }

    // ---- leader epochs ----

    /// Appends `batches` batches of three records as the leader of `epoch`.
    fn append_in_epoch(log: &mut PartitionLog, epoch: i32, batches: usize) {
        for _ in 0..batches {
            log.append(&make_batch(3, 100, Compression::None), epoch, 0)
                .unwrap();
        }
    }

    fn epoch_pairs(log: &PartitionLog) -> Vec<(i32, i64)> {
        log.epochs()
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    /// Epochs 0, 2 and 5 starting at offsets 0, 21 and 69: changes inside
    /// segments (about ten batches each).
    fn log_with_three_epochs(dir: &Path) -> PartitionLog {
        let mut log = open(dir, small_segments(), 0);
        append_in_epoch(&mut log, 0, 7);
        append_in_epoch(&mut log, 2, 16);
        append_in_epoch(&mut log, 5, 10);
        log
    }

    #[test]
    fn leader_appends_record_each_new_epoch_in_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with_three_epochs(dir.path());
        assert_eq!(epoch_pairs(&log), [(0, 0), (2, 21), (5, 69)]);
        assert_eq!(log.latest_epoch(), Some(5));
        assert_eq!(log.end_offset_for(0), (0, 21));
        assert_eq!(log.end_offset_for(1), (0, 21));
        assert_eq!(log.end_offset_for(2), (2, 69));
        assert_eq!(log.end_offset_for(5), (5, 99));
        assert_eq!(log.end_offset_for(6), (-1, -1));
        let on_disk = epochs::read_checkpoint(dir.path()).unwrap().unwrap();
        assert_eq!(&on_disk, log.epochs());
        // Every stored batch carries the epoch the cache gives its offset.
        for (h, _) in read_all(&log) {
            assert_eq!(
                log.epochs().epoch_for_offset(h.base_offset),
                Some(h.partition_leader_epoch)
            );
        }
        drop(log);
        let (log, report) = PartitionLog::open(dir.path(), small_segments(), 0, 0, 0).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(epoch_pairs(&log), [(0, 0), (2, 21), (5, 69)]);
    }

    #[test]
    fn a_missing_damaged_or_stale_epoch_checkpoint_is_rebuilt_from_the_batches() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with_three_epochs(dir.path());
        let expected = epoch_pairs(&log);
        let rp = log.recovery_point();
        drop(log);
        let path = dir.path().join(epochs::CHECKPOINT_FILE);
        let reopen = || PartitionLog::open(dir.path(), small_segments(), rp, 0, 0).unwrap();
        for damage in [
            None,                      // missing (a log from before epochs)
            Some("0\n3\n0 0\n2 21\n"), // damaged: fewer entries than declared
            Some("0\n2\n0 0\n2 21\n"), // stale: the latest epoch is missing
            Some("0\n1\n7 0\n"),       // another log's
        ] {
            match damage {
                None => std::fs::remove_file(&path).unwrap(),
                Some(text) => std::fs::write(&path, text).unwrap(),
            }
            let (log, report) = reopen();
            assert_eq!(epoch_pairs(&log), expected, "after {damage:?}");
            assert_eq!(report.problems.is_empty(), damage.is_none(), "{damage:?}");
            let on_disk = epochs::read_checkpoint(dir.path()).unwrap().unwrap();
            assert_eq!(&on_disk, log.epochs(), "the rebuilt cache is written");
        }
        // Entries beyond the log end (a leader's first append that never
        // reached the disk) are dropped, and the file is cut too.
        std::fs::write(&path, "0\n4\n0 0\n2 21\n5 69\n7 99\n").unwrap();
        let (log, report) = reopen();
        assert_eq!(epoch_pairs(&log), expected);
        assert!(report.problems.is_empty());
        assert_eq!(
            epochs::read_checkpoint(dir.path()).unwrap().unwrap(),
            *log.epochs()
        );
    }

    #[test]
    fn retention_and_delete_records_move_the_first_epoch_to_the_log_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_with_three_epochs(dir.path());
        log.delete_records_before(30, i64::MAX).unwrap();
        assert_eq!(epoch_pairs(&log), [(2, 30), (5, 69)]);
        assert_eq!(log.end_offset_for(0), (0, 30), "below the earliest");
        log.delete_records_before(70, i64::MAX).unwrap();
        assert_eq!(epoch_pairs(&log), [(5, 70)]);
        drop(log);
        let (log, _) = PartitionLog::open(dir.path(), small_segments(), 0, 70, 0).unwrap();
        assert_eq!(log.log_start_offset(), 70);
        assert_eq!(epoch_pairs(&log), [(5, 70)]);
    }

    // ---- truncation ----

    /// A log of 50 batches of three records (offsets 0..150) over about
    /// five segments: epoch 0 up to offset 60, epoch 1 after; every fourth
    /// batch from producer 7 (sequences 0, 3, ...), flushed (so a producer
    /// snapshot at 150 exists) and returned with its batches as read.
    fn truncation_fixture(dir: &Path) -> (PartitionLog, Vec<(BatchHeader, Bytes)>) {
        let mut log = open(dir, small_segments(), 0);
        let mut seq = 0;
        for i in 0..50 {
            let epoch = if i < 20 { 0 } else { 1 };
            let raw = if i % 4 == 0 {
                seq += 3;
                make_idempotent_batch(7, 0, seq - 3, 3)
            } else {
                make_batch(3, 100, Compression::None)
            };
            log.append(&raw, epoch, 0).unwrap();
        }
        log.flush(0).unwrap();
        assert!(log.segment_count() >= 4, "{}", log.segment_count());
        let batches = read_all(&log);
        assert_eq!(batches.len(), 50);
        (log, batches)
    }

    /// The state a log holding exactly `batches` (as a leader wrote them)
    /// has: what a truncated log must equal.
    fn reference_log(batches: &[(BatchHeader, Bytes)]) -> (tempfile::TempDir, PartitionLog) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), small_segments(), 0);
        for (_, raw) in batches {
            log.append_as_follower(raw, 0).unwrap();
        }
        (dir, log)
    }

    fn assert_same_log(log: &PartitionLog, batches: &[(BatchHeader, Bytes)]) {
        let got = read_all(log);
        assert_eq!(got.len(), batches.len(), "batch count");
        for ((h, bytes), (expected_h, expected_bytes)) in got.iter().zip(batches) {
            assert_eq!(h, expected_h);
            assert_eq!(bytes, expected_bytes, "batch at {}", h.base_offset);
        }
        let end = batches
            .last()
            .map_or(log.log_start_offset(), |(h, _)| h.next_offset());
        assert_eq!(log.log_end_offset(), end);
        let (_dir, reference) = reference_log(batches);
        assert_eq!(log.epochs(), reference.epochs(), "epochs");
        assert_eq!(
            log.producer_state(),
            reference.producer_state(),
            "producers"
        );
    }

    #[test]
    fn truncation_cuts_at_segment_boundaries_inside_segments_and_inside_batches() {
        let (_d, probe) = {
            let d = tempfile::tempdir().unwrap();
            let (log, _) = truncation_fixture(d.path());
            (d, log)
        };
        let bases: Vec<i64> = probe.segments.keys().copied().collect();
        drop(probe);
        for (name, offset, cut) in [
            ("at a segment boundary", bases[2], bases[2]),
            ("inside a segment", bases[1] + 6, bases[1] + 6),
            ("inside a batch", 64, 63),
            ("inside the first batch", 1, 0),
            (
                "inside the active segment",
                bases[bases.len() - 1] + 3,
                bases[bases.len() - 1] + 3,
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (mut log, batches) = truncation_fixture(dir.path());
            assert!(log.truncate_to(offset, 0).unwrap(), "{name}");
            let kept: Vec<_> = batches
                .iter()
                .filter(|(h, _)| h.next_offset() <= cut)
                .cloned()
                .collect();
            assert_eq!(log.log_end_offset(), cut, "{name}");
            assert_same_log(&log, &kept);
            assert!(
                producer_state::list_snapshots(dir.path())
                    .unwrap()
                    .iter()
                    .all(|(o, _)| *o <= cut),
                "{name}: no snapshot describes cut batches"
            );
            for entry in std::fs::read_dir(dir.path()).unwrap() {
                let name_on_disk = entry.unwrap().file_name().into_string().unwrap();
                if let Some((base, "log")) = parse_segment_file_name(&name_on_disk) {
                    assert!(base <= cut, "{name}: segment {base} above the cut");
                }
            }

            // The leader's batches follow; a restart (no flush) reads the same.
            let mut leader = kept.clone();
            for i in 0..20 {
                let raw = if i == 0 {
                    // The producer's next batch is in sequence with what was kept.
                    let next_seq = log
                        .producer_state()
                        .get(7)
                        .and_then(|e| e.batches.back())
                        .map_or(0, |b| b.last_seq + 1);
                    make_idempotent_batch(7, 0, next_seq, 3)
                } else {
                    make_batch(3, 100, Compression::Lz4)
                };
                let info = log.append(&raw, 3, 0).unwrap();
                assert!(!info.duplicate);
                assert_eq!(info.base_offset, cut + 3 * i);
            }
            leader.extend(read_all_from(&log, cut, i64::MAX));
            assert_same_log(&log, &leader);
            let rp = log.recovery_point();
            assert!(rp <= cut);
            drop(log);
            let (log, report) = PartitionLog::open(dir.path(), small_segments(), rp, 0, 0).unwrap();
            assert!(report.problems.is_empty(), "{name}: {:?}", report.problems);
            assert_eq!(report.truncated_bytes, 0);
            assert_same_log(&log, &leader);
        }
    }

    #[test]
    fn truncating_at_or_past_the_end_cuts_nothing_but_an_epoch_without_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, batches) = truncation_fixture(dir.path());
        // A leader of epoch 4 recorded its start and wrote nothing.
        log.assign_epoch(4, 150).unwrap();
        assert_eq!(log.latest_epoch(), Some(4));
        assert!(!log.truncate_to(1000, 0).unwrap());
        assert!(!log.truncate_to(150, 0).unwrap());
        assert_eq!(log.latest_epoch(), Some(1));
        assert_eq!(
            epochs::read_checkpoint(dir.path()).unwrap().unwrap(),
            *log.epochs()
        );
        assert_same_log(&log, &batches);
        assert!(!log.has_truncation_checkpoint());
        assert!(log.truncate_to(-1, 0).is_err());
    }

    #[test]
    fn a_crash_between_the_steps_of_a_truncation_leaves_a_log_that_reopens_consistently() {
        for step in 1..=6 {
            let dir = tempfile::tempdir().unwrap();
            let (mut log, batches) = truncation_fixture(dir.path());
            // What the broker's checkpoints said before the cut.
            let rp_before = log.recovery_point();
            let cut = 42; // inside a segment, below epoch 1 and the snapshot
            log.crash_after_step = Some(step);
            let err = log.truncate_to(cut, 0).unwrap_err();
            assert!(err.to_string().contains("simulated crash"), "{err}");
            drop(log);

            let (mut log, report) =
                PartitionLog::open(dir.path(), small_segments(), rp_before, 0, 0).unwrap();
            // The log is the old one cut somewhere at or after the cut, and
            // everything derived from it agrees with its batches.
            let got = read_all(&log);
            assert!(got.len() <= batches.len());
            assert!(
                log.log_end_offset() >= cut,
                "step {step}: {}",
                log.log_end_offset()
            );
            assert_same_log(&log, &batches[..got.len()]);
            assert_eq!(report.truncated_bytes, 0, "step {step}: nothing torn");

            // Truncating again finishes the job.
            log.truncate_to(cut, 0).unwrap();
            let kept: Vec<_> = batches
                .iter()
                .filter(|(h, _)| h.next_offset() <= cut)
                .cloned()
                .collect();
            assert_same_log(&log, &kept);
            append_in_epoch(&mut log, 3, 5);
            let expected = read_all(&log);
            let rp = log.recovery_point();
            drop(log);
            let (log, _) = PartitionLog::open(dir.path(), small_segments(), rp, 0, 0).unwrap();
            assert_same_log(&log, &expected);
        }
    }

    #[test]
    fn a_crash_while_a_log_is_emptied_to_start_again_leaves_a_log_that_reopens_consistently() {
        for step in 1..=4 {
            let dir = tempfile::tempdir().unwrap();
            let (mut log, batches) = truncation_fixture(dir.path());
            let rp_before = log.recovery_point();
            // The leader's log starts above everything this one holds.
            log.crash_after_step = Some(step);
            let err = log.truncate_fully_and_start_at(200).unwrap_err();
            assert!(err.to_string().contains("simulated crash"), "{err}");
            drop(log);

            let (mut log, report) =
                PartitionLog::open(dir.path(), small_segments(), rp_before, 0, 0).unwrap();
            // What is left is the old log without some of its oldest
            // segments (as retention would leave it), or the new empty log.
            let got = read_all(&log);
            let suffix = &batches[batches.len() - got.len()..];
            if got.is_empty() {
                assert_eq!(log.log_end_offset(), 200, "step {step}");
            } else {
                assert_same_log(&log, suffix);
            }
            assert_eq!(report.truncated_bytes, 0);

            log.truncate_fully_and_start_at(200).unwrap();
            assert_eq!((log.log_start_offset(), log.log_end_offset()), (200, 200));
            assert_eq!(log.segment_count(), 1);
            append_in_epoch(&mut log, 4, 5);
            let expected = read_all(&log);
            assert_eq!(expected[0].0.base_offset, 200);
            let rp = log.recovery_point();
            drop(log);
            let (log, _) = PartitionLog::open(dir.path(), small_segments(), rp, 0, 0).unwrap();
            assert_eq!(log.log_start_offset(), 200);
            assert_same_log(&log, &expected);
        }
    }

    #[test]
    fn a_flush_planned_before_a_truncation_moves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = truncation_fixture(dir.path());
        append_in_epoch(&mut log, 1, 3);
        let plan = log.prepare_flush(0).unwrap();
        assert!(log.truncate_to(40, 0).unwrap());
        plan.sync().unwrap();
        log.complete_flush(&plan);
        assert!(log.recovery_point() <= 40, "{}", log.recovery_point());
        let snapshots = producer_state::list_snapshots(dir.path()).unwrap();
        assert!(snapshots.iter().all(|(o, _)| *o <= 40), "{snapshots:?}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_log_started_again_below_its_old_start_keeps_that_start_across_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = truncation_fixture(dir.path());
        log.delete_records_before(100, i64::MAX).unwrap();
        // What the broker's checkpoints say: recovery point 150, start 100.
        let (rp_before, start_before) = (log.recovery_point(), log.log_start_offset());
        log.truncate_fully_and_start_at(60).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (60, 60));
        assert!(log.epochs().is_empty() && log.producer_state().is_empty());
        assert!(producer_state::list_snapshots(dir.path())
            .unwrap()
            .is_empty());
        append_in_epoch(&mut log, 4, 30);
        let expected = read_all(&log);
        assert_eq!(expected[0].0.base_offset, 60);
        drop(log); // a crash before the broker wrote its checkpoints again

        let (mut log, report) =
            PartitionLog::open(dir.path(), small_segments(), rp_before, start_before, 0).unwrap();
        assert_eq!(
            log.log_start_offset(),
            60,
            "the old log start must not hide data"
        );
        assert_eq!(
            report.segments_scanned,
            log.segment_count(),
            "nothing written after the cut is trusted unscanned"
        );
        assert_same_log(&log, &expected);

        // Checkpoints taken before the reopen do not clear the floor; ones
        // that reflect the cut do.
        log.recovery_point_checkpointed(rp_before);
        log.log_start_checkpointed(start_before);
        assert!(log.has_truncation_checkpoint());
        log.flush(0).unwrap();
        log.recovery_point_checkpointed(log.recovery_point());
        assert!(
            log.has_truncation_checkpoint(),
            "the log start is not written yet"
        );
        log.log_start_checkpointed(log.log_start_offset());
        assert!(!log.has_truncation_checkpoint());
        let (rp, start) = (log.recovery_point(), log.log_start_offset());
        drop(log);
        let (log, report) = PartitionLog::open(dir.path(), small_segments(), rp, start, 0).unwrap();
        assert_eq!(report.segments_scanned, 1, "only the active segment");
        assert_same_log(&log, &expected);
    }

    #[test]
    fn a_read_planned_before_a_truncation_never_returns_bytes_written_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, batches) = truncation_fixture(dir.path());
        // A fetch planned the active segment's tail (an unclean leader
        // change can cut below what a consumer was reading).
        let cut = batches[45].0.base_offset;
        let planned = log.read(cut, 1 << 20, true, i64::MAX).unwrap().unwrap();
        let before = planned.read().unwrap();
        log.truncate_to(cut, 0).unwrap();
        append_in_epoch(&mut log, 3, 10);
        let after = planned.read().unwrap();
        assert!(
            before.starts_with(&after),
            "the planned range now holds other bytes"
        );
        // And the log itself serves the new batches at those offsets.
        let new: Vec<_> = read_all_from(&log, cut, i64::MAX);
        assert_eq!(new.len(), 10);
        assert!(new.iter().all(|(h, _)| h.partition_leader_epoch == 3));
        assert_ne!(
            new[0].1,
            batches
                .iter()
                .find(|(h, _)| h.base_offset == cut)
                .unwrap()
                .1
        );
    }

    // ---- follower appends ----

    /// `raw` as a leader of `epoch` stored it at `base_offset`.
    fn as_leader_wrote(raw: &Bytes, base_offset: i64, epoch: i32) -> Bytes {
        let mut b = raw.to_vec();
        batch::patch_header_prefix(&mut b, base_offset, epoch);
        Bytes::from(b)
    }

    /// Batches of three records at `offsets`, concatenated.
    fn fetched(offsets_and_epochs: &[(i64, i32)]) -> Bytes {
        let mut out = Vec::new();
        for &(offset, epoch) in offsets_and_epochs {
            let raw = make_batch(3, 50, Compression::None);
            out.extend_from_slice(&as_leader_wrote(&raw, offset, epoch));
        }
        Bytes::from(out)
    }

    #[test]
    fn a_follower_keeps_the_offsets_and_epochs_the_leader_gave_its_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), small_segments(), 0);
        let first = fetched(&[(0, 3), (3, 3), (6, 3), (9, 5), (12, 5)]);
        let info = log.append_as_follower(&first, 0).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (0, 14));
        assert_eq!(log.log_end_offset(), 15);
        let stored: Vec<u8> = read_all(&log)
            .iter()
            .flat_map(|(_, b)| b.to_vec())
            .collect();
        assert_eq!(stored, first.to_vec(), "stored byte for byte");
        assert_eq!(epoch_pairs(&log), [(3, 0), (5, 9)]);
        // A compacted leader log has gaps: between batches and before the
        // first one.
        log.append_as_follower(&fetched(&[(15, 5), (30, 6)]), 0)
            .unwrap();
        log.append_as_follower(&fetched(&[(40, 6)]), 0).unwrap();
        assert_eq!(log.log_end_offset(), 43);
        assert_eq!(epoch_pairs(&log), [(3, 0), (5, 9), (6, 30)]);
        let got: Vec<i64> = read_all(&log).iter().map(|(h, _)| h.base_offset).collect();
        assert_eq!(got, [0, 3, 6, 9, 12, 15, 30, 40]);
        assert!(log.read(20, 1 << 20, true, i64::MAX).unwrap().is_some());
        let expected = read_all(&log);
        drop(log);
        let (log, report) = PartitionLog::open(dir.path(), small_segments(), 0, 0, 0).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(read_all(&log), expected);
        assert_eq!(epoch_pairs(&log), [(3, 0), (5, 9), (6, 30)]);
    }

    #[test]
    fn a_follower_append_refuses_overlaps_disorder_and_corruption_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), small_segments(), 0);
        log.append_as_follower(&fetched(&[(0, 1), (3, 1), (6, 1), (9, 1), (12, 1)]), 0)
            .unwrap();
        let size = log.size_bytes();
        let unchanged = |log: &PartitionLog| {
            assert_eq!((log.log_end_offset(), log.size_bytes()), (15, size));
            assert_eq!(epoch_pairs(log), [(1, 0)]);
        };
        match log.append_as_follower(&fetched(&[(12, 2), (15, 2)]), 0) {
            Err(FollowerAppendError::OffsetMismatch {
                first_offset: 12,
                first_batch_last_offset: 14,
                log_end_offset: 15,
            }) => {}
            other => panic!("{other:?}"),
        }
        unchanged(&log);
        for disorder in [
            &[(15, 2), (15, 2)][..],
            &[(15, 2), (17, 2)],
            &[(18, 2), (15, 2)],
        ] {
            assert!(
                matches!(
                    log.append_as_follower(&fetched(disorder), 0),
                    Err(FollowerAppendError::OffsetsOutOfOrder { .. })
                ),
                "{disorder:?}"
            );
            unchanged(&log);
        }
        let good = fetched(&[(15, 2)]);
        let mut bad = fetched(&[(15, 2), (18, 2)]).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        match log.append_as_follower(&Bytes::from(bad), 0) {
            Err(FollowerAppendError::Corrupt {
                position,
                error: BatchError::CrcMismatch { .. },
            }) => assert_eq!(position, good.len()),
            other => panic!("{other:?}"),
        }
        unchanged(&log);
        let mut wrong_magic = good.to_vec();
        wrong_magic[16] = 1;
        assert!(matches!(
            log.append_as_follower(&Bytes::from(wrong_magic), 0),
            Err(FollowerAppendError::Corrupt { position: 0, .. })
        ));
        unchanged(&log);
        // A fetch response that ends inside a batch: the whole ones are
        // appended, the rest is fetched again.
        let mut cut_off = fetched(&[(15, 2), (18, 2)]).to_vec();
        cut_off.truncate(good.len() + 30);
        let info = log.append_as_follower(&Bytes::from(cut_off), 0).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (15, 17));
        assert_eq!(log.log_end_offset(), 18);
        let nothing = log.append_as_follower(&Bytes::new(), 0).unwrap();
        assert_eq!(nothing.base_offset, -1);
        assert_eq!(log.log_end_offset(), 18);
    }

    #[test]
    fn a_follower_records_producer_sequences_without_judging_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), LogConfig::default(), 0);
        let set = |pid, epoch, seq, offset| {
            as_leader_wrote(&make_idempotent_batch(pid, epoch, seq, 3), offset, 0)
        };
        // A gap in the sequence and a lower producer epoch: the leader
        // accepted them (it knew things this replica does not); recorded.
        log.append_as_follower(&set(9, 1, 0, 0), 0).unwrap();
        log.append_as_follower(&set(9, 1, 10, 3), 0).unwrap();
        log.append_as_follower(&set(9, 0, 20, 6), 0).unwrap();
        let entry = log.producer_state().get(9).unwrap();
        assert_eq!(entry.epoch, 0);
        assert_eq!(entry.batches.back().unwrap().last_seq, 22);
        // Leading from here, the recorded state is what retries and the
        // next sequence are judged by.
        let retry = log
            .append(&make_idempotent_batch(9, 0, 20, 3), 0, 0)
            .unwrap();
        assert!(retry.duplicate && retry.base_offset == 6);
        let next = log
            .append(&make_idempotent_batch(9, 0, 23, 1), 0, 0)
            .unwrap();
        assert_eq!(next.base_offset, 9);
    }

    #[test]
    fn a_follower_append_larger_than_a_segment_rolls_between_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), small_segments(), 0);
        let offsets: Vec<(i64, i32)> = (0..40).map(|i| (i * 3, 2)).collect();
        let set = fetched(&offsets);
        assert!(set.len() as u64 > 2 * small_segments().segment_bytes);
        log.append_as_follower(&set, 0).unwrap();
        assert!(log.segment_count() >= 3, "{}", log.segment_count());
        assert!(log.segments.values().all(|s| s.size() <= 4096));
        let expected = read_all(&log);
        assert_eq!(expected.len(), 40);
        drop(log);
        let (log, report) = PartitionLog::open(dir.path(), small_segments(), 0, 0, 0).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(read_all(&log), expected);
    }

    /// A transactional batch of `count` records of `producer_id`.
    fn txn_batch(producer_id: i64, base_sequence: i32, count: usize) -> Bytes {
        use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions};
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                transactional: true,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch: 0,
                timestamp_type: kafka_protocol::records::TimestampType::Creation,
                offset: i as i64,
                sequence: base_sequence + i as i32,
                timestamp: 1_700_000_000_000,
                key: None,
                value: Some(Bytes::from("in a transaction")),
                headers: Default::default(),
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn markers_close_transactions_and_the_state_survives_a_reopen_with_or_without_a_snapshot() {
        const NOW: i64 = 1_700_000_000_000;
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), small_segments(), 0);
        assert_eq!(
            log.append(&txn_batch(1, 0, 2), 0, NOW).unwrap().base_offset,
            0
        );
        assert_eq!(
            log.append(&txn_batch(2, 0, 1), 0, NOW).unwrap().base_offset,
            2
        );
        assert_eq!(
            log.append(&make_batch(1, 10, Compression::None), 0, NOW)
                .unwrap()
                .base_offset,
            3
        );
        assert_eq!(log.first_unstable_offset(), Some(0));
        let commit = log.append_marker(1, 0, true, 0, 0, NOW).unwrap();
        assert_eq!(commit.base_offset, 4);
        assert_eq!(log.first_unstable_offset(), Some(2));
        log.append_marker(2, 0, false, 0, 0, NOW).unwrap();
        assert_eq!(log.first_unstable_offset(), None);
        let aborted = vec![AbortedTxn {
            producer_id: 2,
            first_offset: 2,
            last_offset: 5,
            last_stable_offset: 6,
        }];
        assert_eq!(log.aborted_between(0, 10), aborted);
        log.append(&txn_batch(1, 2, 1), 0, NOW).unwrap();
        assert_eq!(log.first_unstable_offset(), Some(6));
        // Replayed from the log (no snapshot yet).
        drop(log);
        let log = open(dir.path(), small_segments(), 0);
        assert_eq!(log.first_unstable_offset(), Some(6));
        assert_eq!(log.aborted_between(0, 10), aborted);
        // From a snapshot.
        let mut log = log;
        log.flush(NOW).unwrap();
        drop(log);
        let log = open(dir.path(), small_segments(), 0);
        assert!(!producer_state::list_snapshots(dir.path())
            .unwrap()
            .is_empty());
        assert_eq!(log.first_unstable_offset(), Some(6));
        assert_eq!(log.aborted_between(0, 10), aborted);
    }

    #[test]
    fn a_marker_of_an_older_epoch_is_refused() {
        const NOW: i64 = 1_700_000_000_000;
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), small_segments(), 0);
        log.append_marker(9, 4, false, 0, 0, NOW).unwrap();
        assert!(matches!(
            log.append_marker(9, 3, true, 0, 0, NOW),
            Err(AppendError::Sequence(SequenceError::InvalidEpoch {
                current: 4,
                ..
            }))
        ));
    }
}
