//! The log of one partition: an ordered set of segments, the offsets that
//! bound it, and the rules for appending, reading, rolling, retention and
//! crash recovery.
//!
//! Offsets:
//! ```text
//!   log start offset   first offset a consumer may read (moved by retention
//!                      and DeleteRecords)
//!   high watermark     first offset not yet readable by consumers
//!                      (= log end offset on a single node)
//!   log end offset     offset the next appended record gets
//!   recovery point     everything below it has been fsynced with its indexes
//! ```
//! A log does no locking and no async I/O; the broker wraps each one in a
//! mutex and keeps long reads outside it by handing out [`ReadSlice`]s.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tracing::{info, warn};

use super::batch::{self, BatchError, BatchHeader, ATTR_LOG_APPEND_TIME};
use super::handles::{explain, explain_if_out_of_files};
use super::producer_state::{self, ProducerState, SequenceCheck, SequenceError};
use super::segment::{parse_segment_file_name, PreparedBatch, Segment, SEGMENT_BYTES_LIMIT};
use super::validator::{self, AppendRules, RecordErrors, TopicCompression, ValidBatch};

/// Whether record timestamps are the producer's or the broker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

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

/// Why an append was refused. Nothing was written when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("corrupt record batch: {0}")]
    Corrupt(BatchError),
    #[error("invalid record batch: {0}")]
    Invalid(String),
    /// Records the topic's rules refuse (keys, timestamps), by index.
    #[error("{0}")]
    Records(RecordErrors),
    #[error("record batch of {size} bytes exceeds max.message.bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("record set of {size} bytes is larger than segment.bytes ({segment_bytes})")]
    LargerThanSegment { size: usize, segment_bytes: u64 },
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error("a record set with several batches repeats an earlier batch of producer {0}")]
    DuplicateInRecordSet(i64),
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
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
    dir: PathBuf,
    producers: Option<ProducerState>,
}

impl FlushPlan {
    /// Fsyncs the data, then records the producer state as of the flushed
    /// offset (so a snapshot never describes data that is not durable).
    pub fn sync(&self) -> io::Result<()> {
        for s in &self.segments {
            s.sync()?;
        }
        if let Some(producers) = &self.producers {
            producer_state::write_snapshot(&self.dir, self.target_offset, producers)?;
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
    high_watermark: i64,
    recovery_point: i64,
    config: LogConfig,
    unflushed_messages: i64,
    last_flush_ms: i64,
    flush_wanted: bool,
    producers: ProducerState,
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
            high_watermark: log_end,
            recovery_point: recovery_point.min(log_end),
            config,
            unflushed_messages: 0,
            last_flush_ms: now_ms,
            flush_wanted: false,
            producers: ProducerState::new(),
        };
        log.rebuild_producer_state(now_ms)?;
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
            segment.for_each_header_from(from, |h| {
                if producer_state::is_idempotent(h) {
                    // The broker's append time is not in the log; the
                    // batch's own timestamp stands in for expiry.
                    producers.update(h, h.max_timestamp.min(now_ms));
                    replayed += 1;
                }
            })?;
        }
        if replayed > 0 {
            tracing::debug!(dir = %self.dir.display(), from, batches = replayed, "rebuilt producer state");
        }
        Ok(())
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

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
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
            return Ok(AppendInfo {
                base_offset: -1,
                last_offset: -1,
                log_append_time_ms: -1,
                log_start_offset: self.log_start_offset,
                records: 0,
                bytes: 0,
                duplicate: false,
                sync_file: None,
            });
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

        if self.should_roll(total_bytes as u64, last_offset, max_timestamp, now_ms) {
            self.roll()?;
            // Offsets do not change: the new segment starts at the log end.
        }
        self.active_mut().append(&prepared)?;
        for b in &prepared {
            self.producers.update(&b.header, now_ms);
        }
        self.high_watermark = self.log_end_offset();
        let count = next - base_offset;
        self.unflushed_messages += count;

        let sync_file = if self.unflushed_messages >= self.config.flush_messages
            || now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_ms
        {
            self.unflushed_messages = 0;
            self.last_flush_ms = now_ms;
            Some(self.active().handle()?)
        } else {
            None
        };
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

    fn should_roll(
        &self,
        incoming_bytes: u64,
        last_offset: i64,
        incoming_max_ts: i64,
        now_ms: i64,
    ) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
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
        let end = self.log_end_offset();
        if self.active().is_empty() {
            return Ok(());
        }
        self.active_mut().seal();
        let segment = Segment::create(&self.dir, end, self.config.index_interval_bytes)?;
        // The old active segment is closed: its file is opened on demand.
        self.active_mut().close_file();
        self.segments.insert(end, segment);
        self.flush_wanted = true;
        Ok(())
    }

    /// True once after a roll: the caller should flush soon, in the
    /// background, so the recovery point keeps up with closed segments.
    pub fn take_flush_wanted(&mut self) -> bool {
        std::mem::take(&mut self.flush_wanted)
    }

    /// Plans a read of whole batches starting with the one holding
    /// `offset`, at most `max_bytes` long (the last batch may be cut, as in
    /// Kafka). With `min_one_batch`, the first batch is returned whole even
    /// when it is larger than `max_bytes`. `Ok(None)`: nothing to read yet.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<Option<ReadSlice>, ReadError> {
        let log_end = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end,
            });
        }
        let upper = self.high_watermark;
        if offset >= upper {
            return Ok(None);
        }
        let first = self.segments.range(..=offset).next_back().map(|(k, _)| *k);
        let start_key = first.unwrap_or(*self.segments.keys().next().expect("segment"));
        for (_, segment) in self.segments.range(start_key..) {
            if segment.base_offset() >= upper {
                break;
            }
            let limit = segment.size();
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
    /// not pass the high watermark. Whole segments below it are deleted.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, ReadError> {
        if offset > self.high_watermark || offset < 0 {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end: self.high_watermark,
            });
        }
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
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
        let producers = (!self.producers.is_empty()).then(|| self.producers.clone());
        Ok(FlushPlan {
            target_offset,
            segments,
            dir: self.dir.clone(),
            producers,
        })
    }

    /// Last half of a flush, after [`FlushPlan::sync`] succeeded: the
    /// segments are durable and the recovery point moves up.
    pub fn complete_flush(&mut self, plan: &FlushPlan) {
        for done in &plan.segments {
            if let Some(segment) = self.segments.get_mut(&done.base_offset) {
                segment.mark_flushed(done.size);
            }
        }
        self.recovery_point = self.recovery_point.max(plan.target_offset);
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
                match super::cleaner::commit_swap(&self.dir, base) {
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
            let slice = log.read(offset, 1 << 20, true).unwrap().unwrap();
            let bytes = slice.read().unwrap();
            let h = BatchHeader::parse(&bytes).unwrap();
            assert!(h.base_offset <= offset && offset <= h.last_offset());
        }
        assert!(log.read(500, 1024, true).unwrap().is_none());
        assert!(matches!(
            log.read(501, 1024, true),
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
            let slice = log.read(offset, 1 << 20, true).unwrap().unwrap();
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
        let slice = log.read(0, batch.len() * 3 + 10, true).unwrap().unwrap();
        assert_eq!(slice.len, batch.len() * 3 + 10);
        let slice = log.read(0, 10, true).unwrap().unwrap();
        assert_eq!(slice.len, batch.len());
        assert!(log.read(0, 10, false).unwrap().is_none());
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
            .read(30, 1 << 20, true)
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
            .read(30, 1 << 20, true)
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
            assert!(log.read(offset, 1 << 20, true).unwrap().is_some());
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
            log.read(0, 100, true),
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
        assert_eq!(log.delete_records_before(100).unwrap(), 100);
        assert!(log.segment_count() < before);
        assert!(matches!(
            log.read(99, 100, true),
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        assert!(log.read(100, 100, true).unwrap().is_some());
        assert!(log.delete_records_before(10_000).is_err());
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
        let bytes = log.read(0, 1 << 20, true).unwrap().unwrap().read().unwrap();
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
        let bytes = log.read(0, 1 << 20, true).unwrap().unwrap().read().unwrap();
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
}
