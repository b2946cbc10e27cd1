//! Log compaction (`cleanup.policy=compact`): keeps the newest record of
//! every key in a partition log, rewriting closed segments in the
//! background.
//!
//! Who calls it: the broker's cleaner task (`broker/cleaning.rs`), one pass
//! at a time, on a blocking thread, for partitions whose topic has
//! `cleanup.policy` containing `compact`. That task keeps each partition's
//! *clean point* in `cleaner-offset-checkpoint` and decides when to run.
//!
//! What it is not: it does not delete by time or size (retention does,
//! independently, for `compact,delete`), it never touches the active
//! segment, and it never changes an offset.
//!
//! # One pass over a log
//!
//! ```text
//!  log start                     clean point              map end            active
//!  │ already cleaned section     │ dirty section          │ (dirty, not yet) │
//!  ├──────────┬──────────┬───────┼──────┬─────────┬───────┼───────┬──────────┼──────────┐
//!  │ seg 0    │ seg 1    │ seg 2        │ seg 3   │ seg 4         │ seg 5    │ active   │
//!  └──────────┴──────────┴──────────────┴─────────┴───────────────┴──────────┴──────────┘
//!  ◀──────────────── cleanable: closed, fsynced, older than min.compaction.lag.ms ──▶
//! ```
//! 1. **Plan** ([`plan`]): take a [`CleanerSnapshot`] under the log's lock
//!    (segment bounds and `Arc<File>` handles), then, without the lock:
//!    the cleanable segments are the closed ones from the start, up to the
//!    first one that is not below the recovery point or that holds a record
//!    younger than `min.compaction.lag.ms`. Skip the pass unless
//!    `dirty bytes / cleanable bytes >= min.cleanable.dirty.ratio`.
//! 2. **Key map**: read the dirty section (clean point → end of the
//!    cleanable segments) and record `key → latest offset`. The map holds
//!    whole keys (no hashing, so no collisions) and is charged
//!    `key length + 64` bytes per key against
//!    [`CleanerLimits::dedupe_buffer_bytes`]; when a batch would overflow
//!    it, the map stops before that batch (the *map end*) and only a
//!    prefix of the dirty section is cleaned this pass.
//! 3. **Rewrite**, oldest segment first, every cleanable segment whose base
//!    is below the map end (already-cleaned ones included): a record is
//!    kept unless the map holds a later offset for its key; a tombstone
//!    (null value) is also dropped when its segment's largest timestamp is
//!    older than `now - delete.retention.ms` (the segment's max timestamp
//!    stands in for the time the tombstone became the newest; a tombstone
//!    at or after the map end is never dropped, since older values of its
//!    key may not be removed yet). Oldest first matters: a tombstone is only
//!    dropped after every older value of its key was removed for good.
//! 4. **Swap** each rewritten segment in (below), taking the lock briefly.
//!
//! The new clean point is the map end. A pass that fails part-way leaves
//! the clean point where it was; any swapped segment is still correct.
//!
//! # What is kept as it is
//!
//! - **Records without a key** are kept. Kafka refuses them at produce time
//!   in compacted topics; Runnel does not (yet), and dropping data that a
//!   producer was told was written would be worse than keeping it.
//! - **Transactional and control batches** are never filtered or
//!   rewritten, and their records do not enter the key map (an aborted
//!   transaction's record must not hide an older committed one).
//! - **The last batch of each idempotent producer** (`producerId >= 0`)
//!   among the segments being rewritten is copied unchanged, so the
//!   producer's last sequence number stays in the log (Kafka keeps an empty
//!   batch for this; keeping the batch whole is simpler and only keeps a
//!   few extra records).
//! - **A batch that cannot be read** (bad CRC, fails to decompress or
//!   decode, larger than [`MAX_IN_MEMORY_BATCH_BYTES`], re-encoding fails)
//!   is copied unchanged with a warning. From that batch on, the pass drops
//!   no tombstone: the unreadable batch may hold an older value the
//!   tombstone still hides. A segment whose batches cannot even be walked
//!   is left alone.
//! - **A batch whose records all survive** is copied byte for byte.
//!
//! A filtered batch is re-encoded with `kafka_protocol`'s
//! `RecordBatchEncoder` in its original codec, keeping every surviving
//! record's offset, timestamp, key, value and headers, and the batch's
//! `baseOffset`, `lastOffsetDelta`, `partitionLeaderEpoch`, attributes
//! (codec, timestamp type), `producerId`, `producerEpoch` and
//! `baseSequence`, as Kafka's v2 compaction does. Only `recordsCount`,
//! `baseTimestamp`/`maxTimestamp` (from the survivors; kept for
//! `LogAppendTime`), the length and the CRC change. A batch left with no
//! record is dropped; a segment left with no batch is deleted (and the log
//! start moves up if it was the first one, as with retention).
//!
//! # Swap protocol (crash safety)
//!
//! For a segment with base offset `B`, in the partition directory:
//!
//! ```text
//!  without the log lock                 with the log lock (replace_segment)
//!  ──────────────────────────────       ─────────────────────────────────────────
//!  1 write B.log.cleaned                4 is B still the segment that was read
//!  2 write B.index.cleaned,               (same Arc<File>, same size)? if not:
//!          B.timeindex.cleaned            abort, delete our *.cleaned files
//!  3 fsync the three files              5 unlink B.index, B.timeindex; fsync dir
//!                                       6 rename B.log.cleaned → B.log; fsync dir
//!                                         ◀── commit point ──▶
//!                                       7 rename B.index.cleaned → B.index,
//!                                                B.timeindex.cleaned → B.timeindex
//!                                       8 put the new Segment in the log
//!  9 fsync dir
//!
//!  killed after   on disk                                  PartitionLog::open
//!  1-4            old B.log + indexes, *.cleaned (torn?)   deletes *.cleaned → old segment
//!  5              old B.log, no indexes, *.cleaned         deletes *.cleaned, scans B.log → old
//!  6              new B.log, no indexes, B.*index.cleaned  deletes *.cleaned, scans B.log → new
//!  7-9            new B.log + its indexes                  new segment
//! ```
//! A rename within a directory is atomic, so `B.log` is always either the
//! whole old file or the whole (fsynced) new one. Old index files are gone
//! before the new log appears, and new ones appear only after it, so an
//! index is never trusted against the wrong log (the directory fsyncs
//! order these steps against power loss too). Files are never truncated in
//! place: a fetch that planned a read of the old `B.log` keeps reading the
//! old inode through its `Arc<File>`. A segment that becomes empty is
//! unlinked (`.log` first); leftover indexes without a log are deleted on
//! open.
//!
//! # Limits
//!
//! Memory per pass: the key map (`dedupe_buffer_bytes`), one batch in
//! memory (at most [`MAX_IN_MEMORY_BATCH_BYTES`], bigger ones are copied in
//! chunks), its decompressed records (at most
//! `max_decompressed_bytes`) and the re-encoded batch, plus
//! [`READ_WINDOW_BYTES`] and [`WRITE_BUFFER_BYTES`] of buffers, plus one
//! map entry per idempotent producer id seen in the rewritten segments.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tracing::warn;

use super::batch::{validate_batch, BatchHeader, ATTR_LOG_APPEND_TIME, BATCH_HEADER_BYTES};
use super::log::{CleanerSnapshot, PartitionLog, ReplaceOutcome, SegmentSnapshot};
use super::records::{decode_batch, MAX_DECOMPRESSED_BYTES};
use super::segment::{read_bytes, segment_file_name, Segment};

/// Default memory budget of the key map (Kafka's
/// `log.cleaner.dedupe.buffer.size`).
pub const DEFAULT_DEDUPE_BUFFER_BYTES: usize = 128 << 20;
/// Memory charged per key-map entry on top of the key's bytes: the
/// `Bytes` handle, the offset and the hash table's own overhead.
pub const KEY_ENTRY_OVERHEAD_BYTES: usize = 64;
/// Batches larger than this are never loaded whole: they are copied in
/// chunks, unchanged, as if unreadable.
pub const MAX_IN_MEMORY_BATCH_BYTES: usize = 64 << 20;
/// Segments are read through a window of this size.
pub const READ_WINDOW_BYTES: usize = 1 << 20;
/// Buffer in front of the `.cleaned` file.
pub const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Suffix of the files a pass writes before swapping them in.
const CLEANED_SUFFIX: &str = ".cleaned";

/// Memory bounds of one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanerLimits {
    /// Budget of the key map; see the module docs for how it is charged.
    pub dedupe_buffer_bytes: usize,
    /// Cap on one batch's decompressed size (as for every decode).
    pub max_decompressed_bytes: usize,
}

impl Default for CleanerLimits {
    fn default() -> Self {
        CleanerLimits {
            dedupe_buffer_bytes: DEFAULT_DEDUPE_BUFFER_BYTES,
            max_decompressed_bytes: MAX_DECOMPRESSED_BYTES,
        }
    }
}

/// Why a pass did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// No closed segment is both fsynced and older than the compaction lag.
    NothingCleanable,
    /// Too little of the cleanable log is dirty.
    BelowDirtyRatio,
}

/// What one pass found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleanReport {
    /// Set when the pass returned early without reading anything.
    pub skipped: Option<SkipReason>,
    /// Offset up to which the log is now clean (the map end); the input
    /// clean point, clamped to the log, when skipped.
    pub clean_point: i64,
    /// Dirty bytes / cleanable bytes when the pass started.
    pub dirty_ratio: f64,
    pub keys_in_map: usize,
    pub segments_rewritten: usize,
    pub segments_removed: usize,
    /// Segments read but with nothing to remove.
    pub segments_unchanged: usize,
    /// Swaps abandoned because retention or DeleteRecords changed the
    /// segment meanwhile.
    pub swaps_abandoned: usize,
    /// Sizes of the segments that were replaced or removed, before/after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    /// Batches copied unchanged because they could not be read.
    pub batches_unreadable: u64,
    /// Earliest time at which a tombstone kept by this pass (only because
    /// it was too young) may be dropped: a pass due then even if the log is
    /// not dirty.
    pub tombstone_deadline_ms: Option<i64>,
    /// Log start offset after the pass.
    pub log_start_offset: i64,
}

/// Locks the log, ignoring poisoning like the broker does: the log keeps
/// itself consistent by ordering its writes.
fn lock(log: &Mutex<PartitionLog>) -> MutexGuard<'_, PartitionLog> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs one pass over `log`: plan, rewrite and swap, oldest segment first.
/// `clean_point` is where the previous pass stopped (0 or the log start if
/// unknown); `force` runs the pass even below the dirty ratio (used when a
/// kept tombstone's deadline passed). Blocking; holds the log's lock only
/// for the snapshot and for each swap.
pub fn clean_log(
    log: &Mutex<PartitionLog>,
    clean_point: i64,
    force: bool,
    now_ms: i64,
    limits: &CleanerLimits,
) -> io::Result<CleanReport> {
    clean_log_with_hook(log, clean_point, force, now_ms, limits, &mut |_| {})
}

/// [`clean_log`] with a hook called before each swap (tests use it to
/// change the log in between).
fn clean_log_with_hook(
    log: &Mutex<PartitionLog>,
    clean_point: i64,
    force: bool,
    now_ms: i64,
    limits: &CleanerLimits,
    before_swap: &mut dyn FnMut(&SegmentSnapshot),
) -> io::Result<CleanReport> {
    let plan = match plan(log, clean_point, force, now_ms, limits)? {
        Planned::Skip(report) => return Ok(report),
        Planned::Clean(plan) => plan,
    };
    let mut report = CleanReport {
        clean_point: plan.map_end,
        dirty_ratio: plan.dirty_ratio,
        keys_in_map: plan.key_map.len(),
        ..Default::default()
    };
    let mut unreadable_seen = false;
    for segment in &plan.segments {
        let rewritten = plan.rewrite(segment, &mut unreadable_seen, &mut report)?;
        if matches!(rewritten, Rewritten::Unchanged) {
            report.segments_unchanged += 1;
            continue;
        }
        before_swap(segment);
        let after = match &rewritten {
            Rewritten::Cleaned(s) => s.size(),
            _ => 0,
        };
        match swap(log, &plan.snapshot.dir, segment, rewritten)? {
            ReplaceOutcome::Replaced => {
                report.segments_rewritten += 1;
                report.bytes_before += segment.size;
                report.bytes_after += after;
            }
            ReplaceOutcome::Removed => {
                report.segments_removed += 1;
                report.bytes_before += segment.size;
            }
            ReplaceOutcome::Changed => report.swaps_abandoned += 1,
        }
    }
    report.log_start_offset = lock(log).log_start_offset();
    Ok(report)
}

/// Result of [`plan`].
enum Planned {
    Skip(CleanReport),
    Clean(CleanPlan),
}

/// A pass ready to rewrite segments: the key map and what to rewrite.
struct CleanPlan {
    snapshot: CleanerSnapshot,
    /// Segments to rewrite, oldest first.
    segments: Vec<SegmentSnapshot>,
    key_map: KeyMap,
    /// First offset the key map does not cover; the next clean point.
    map_end: i64,
    /// Base offset of each idempotent producer's last batch in `segments`.
    last_batch_of_producer: HashMap<i64, i64>,
    /// Tombstones in segments whose max timestamp is below this go.
    tombstone_horizon_ms: i64,
    dirty_ratio: f64,
    limits: CleanerLimits,
}

/// Decides whether and what to clean, and builds the key map. Holds the
/// log's lock only to take the snapshot.
fn plan(
    log: &Mutex<PartitionLog>,
    clean_point: i64,
    force: bool,
    now_ms: i64,
    limits: &CleanerLimits,
) -> io::Result<Planned> {
    let snapshot = lock(log).cleaner_snapshot();
    let config = &snapshot.config;
    let lag_horizon = (config.min_compaction_lag_ms > 0)
        .then(|| now_ms.saturating_sub(config.min_compaction_lag_ms));
    // (segment, end offset): the end is the next segment's base.
    let mut cleanable: Vec<(&SegmentSnapshot, i64)> = Vec::new();
    for (i, segment) in snapshot.closed_segments.iter().enumerate() {
        let end = snapshot
            .closed_segments
            .get(i + 1)
            .map(|s| s.base_offset)
            .unwrap_or(snapshot.active_base_offset);
        if end > snapshot.recovery_point {
            break; // not fsynced yet: a crash could still cut it
        }
        if lag_horizon.is_some_and(|h| segment.max_timestamp > h) {
            break;
        }
        cleanable.push((segment, end));
    }
    let skip = |reason, clean_point, dirty_ratio| {
        Ok(Planned::Skip(CleanReport {
            skipped: Some(reason),
            clean_point,
            dirty_ratio,
            log_start_offset: snapshot.log_start_offset,
            ..Default::default()
        }))
    };
    let (Some(first), Some(last)) = (cleanable.first(), cleanable.last()) else {
        return skip(SkipReason::NothingCleanable, clean_point, 0.0);
    };
    let first_offset = first.0.base_offset;
    let cleanable_end = last.1;
    // A clean point behind the first segment (retention moved on) or past
    // the log end (a stale checkpoint) means: everything is dirty.
    let clean_point = if clean_point < first_offset || clean_point > snapshot.log_end_offset {
        first_offset
    } else {
        clean_point
    };

    let mut total_bytes: u64 = 0;
    let mut dirty_bytes: u64 = 0;
    for (segment, end) in &cleanable {
        total_bytes += segment.size;
        if *end <= clean_point {
            continue;
        }
        if segment.base_offset >= clean_point {
            dirty_bytes += segment.size;
        } else {
            // Partly clean: estimate by the share of offsets.
            let span = (end - segment.base_offset).max(1) as u128;
            dirty_bytes += (segment.size as u128 * (end - clean_point) as u128 / span) as u64;
        }
    }
    let dirty_ratio = if total_bytes == 0 {
        0.0
    } else {
        dirty_bytes as f64 / total_bytes as f64
    };
    if !force && (dirty_bytes == 0 || dirty_ratio < config.min_cleanable_dirty_ratio) {
        return skip(SkipReason::BelowDirtyRatio, clean_point, dirty_ratio);
    }

    // Key map over the dirty section, stopping before a batch that would
    // overflow the budget.
    let mut key_map = KeyMap::new(limits.dedupe_buffer_bytes);
    let mut map_end = cleanable_end.max(clean_point);
    'segments: for (segment, end) in &cleanable {
        if *end <= clean_point {
            continue;
        }
        let mut reader = SegmentReader::new(&segment.file, segment.size);
        while let Some(next) = reader.next_header()? {
            let Ok((position, header)) = next else {
                break; // the rewrite leaves this segment alone and says why
            };
            if header.last_offset() < clean_point
                || header.is_control()
                || header.is_transactional()
                || header.total_bytes() > MAX_IN_MEMORY_BATCH_BYTES
            {
                continue;
            }
            let raw = reader.batch_bytes(position, &header)?;
            let Some(records) = read_records(&raw, &header, limits.max_decompressed_bytes) else {
                continue;
            };
            let keyed: Vec<(&Bytes, i64)> = records
                .iter()
                .filter(|r| r.offset >= clean_point)
                .filter_map(|r| r.key.as_ref().map(|k| (k, r.offset)))
                .collect();
            if !key_map.fits(keyed.iter().map(|(k, _)| *k)) && key_map.len() > 0 {
                map_end = header.base_offset.max(clean_point);
                break 'segments;
            }
            for (key, offset) in keyed {
                key_map.insert(key, offset);
            }
        }
    }

    let segments: Vec<SegmentSnapshot> = cleanable
        .iter()
        .filter(|(s, _)| s.base_offset < map_end)
        .map(|(s, _)| (*s).clone())
        .collect();
    if segments.is_empty() {
        return skip(SkipReason::NothingCleanable, clean_point, dirty_ratio);
    }
    let mut last_batch_of_producer = HashMap::new();
    for segment in &segments {
        let mut reader = SegmentReader::new(&segment.file, segment.size);
        while let Some(Ok((_, header))) = reader.next_header()? {
            if header.producer_id >= 0 {
                last_batch_of_producer.insert(header.producer_id, header.base_offset);
            }
        }
    }
    let delete_retention_ms = config.delete_retention_ms.max(0);
    Ok(Planned::Clean(CleanPlan {
        tombstone_horizon_ms: now_ms.saturating_sub(delete_retention_ms),
        snapshot,
        segments,
        key_map,
        map_end,
        last_batch_of_producer,
        dirty_ratio,
        limits: limits.clone(),
    }))
}

/// What rewriting one segment produced.
enum Rewritten {
    /// Nothing to remove: no file was written.
    Unchanged,
    /// Nothing survived: the segment should be deleted.
    Empty,
    /// `<base>.log.cleaned` and its indexes are written and fsynced.
    Cleaned(Segment),
}

/// What to do with one batch.
enum BatchAction {
    Copy,
    Drop,
    Replace(Bytes, BatchHeader),
}

impl CleanPlan {
    /// Writes the cleaned version of `segment` to `<base>.log.cleaned`
    /// (plus indexes), fsynced; no lock is held.
    fn rewrite(
        &self,
        segment: &SegmentSnapshot,
        unreadable_seen: &mut bool,
        report: &mut CleanReport,
    ) -> io::Result<Rewritten> {
        let dir = &self.snapshot.dir;
        let base = segment.base_offset;
        let result = self.rewrite_inner(segment, unreadable_seen, report);
        if !matches!(result, Ok(Rewritten::Cleaned(_))) {
            remove_cleaned_files(dir, base);
        }
        result
    }

    fn rewrite_inner(
        &self,
        segment: &SegmentSnapshot,
        unreadable_seen: &mut bool,
        report: &mut CleanReport,
    ) -> io::Result<Rewritten> {
        let dir = &self.snapshot.dir;
        let base = segment.base_offset;
        let config = &self.snapshot.config;
        let tombstones_expired = segment.max_timestamp < self.tombstone_horizon_ms;
        remove_cleaned_files(dir, base);
        // Created at the first change, starting with a copy of the
        // unchanged prefix: a segment with nothing to remove is only read.
        let mut out: Option<BufWriter<File>> = None;
        let mut written: Vec<(u64, BatchHeader)> = Vec::new();
        let mut out_position: u64 = 0;
        // Counted into the report only if the segment changes.
        let (mut records_removed, mut tombstones_removed, mut unreadable) = (0u64, 0u64, 0u64);
        let mut deadline: Option<i64> = None;

        let mut reader = SegmentReader::new(&segment.file, segment.size);
        while let Some(next) = reader.next_header()? {
            let (position, header) = match next {
                Ok(found) => found,
                Err(reason) => {
                    warn!(
                        dir = %dir.display(),
                        segment = base,
                        %reason,
                        "segment cannot be walked; leaving it as it is"
                    );
                    *unreadable_seen = true;
                    report.batches_unreadable += 1;
                    return Ok(Rewritten::Unchanged);
                }
            };
            let len = header.total_bytes() as u64;
            if header.total_bytes() > MAX_IN_MEMORY_BATCH_BYTES {
                // Too big to decode here: keep it, and with it every
                // tombstone after it.
                *unreadable_seen = true;
                unreadable += 1;
                if let Some(out) = out.as_mut() {
                    copy_range(&segment.file, position, len, out)?;
                }
                written.push((out_position, header));
                out_position += len;
                continue;
            }
            let raw = reader.batch_bytes(position, &header)?;
            let action = self.filter_batch(
                &raw,
                &header,
                tombstones_expired,
                segment.max_timestamp,
                unreadable_seen,
                &mut records_removed,
                &mut tombstones_removed,
                &mut unreadable,
                &mut deadline,
            );
            if out.is_none() && !matches!(action, BatchAction::Copy) {
                // First change: everything before `position` is copied as
                // it is (`out_position == position` until now).
                let file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create(true)
                    .open(dir.join(segment_file_name(base, &format!("log{CLEANED_SUFFIX}"))))?;
                file.set_len(0)?;
                let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
                copy_range(&segment.file, 0, position, &mut writer)?;
                out = Some(writer);
            }
            match action {
                BatchAction::Copy => {
                    if let Some(out) = out.as_mut() {
                        out.write_all(&raw)?;
                    }
                    written.push((out_position, header));
                    out_position += len;
                }
                BatchAction::Drop => {}
                BatchAction::Replace(bytes, new_header) => {
                    if let Some(out) = out.as_mut() {
                        out.write_all(&bytes)?;
                    }
                    written.push((out_position, new_header));
                    out_position += bytes.len() as u64;
                }
            }
        }
        report.batches_unreadable += unreadable;
        if let Some(d) = deadline {
            report.tombstone_deadline_ms =
                Some(report.tombstone_deadline_ms.map_or(d, |r| r.min(d)));
        }
        let Some(out) = out else {
            return Ok(Rewritten::Unchanged);
        };
        report.records_removed += records_removed;
        report.tombstones_removed += tombstones_removed;
        if written.is_empty() {
            return Ok(Rewritten::Empty);
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let mut cleaned =
            Segment::from_cleaned(dir, base, file, &written, config.index_interval_bytes);
        cleaned.write_index_files(CLEANED_SUFFIX)?;
        Ok(Rewritten::Cleaned(cleaned))
    }

    /// Decides what happens to one batch (`raw` is the whole batch).
    #[allow(clippy::too_many_arguments)] // counters of one segment's rewrite
    fn filter_batch(
        &self,
        raw: &Bytes,
        header: &BatchHeader,
        tombstones_expired: bool,
        segment_max_timestamp: i64,
        unreadable_seen: &mut bool,
        records_removed: &mut u64,
        tombstones_removed: &mut u64,
        unreadable: &mut u64,
        deadline: &mut Option<i64>,
    ) -> BatchAction {
        if header.is_control() || header.is_transactional() {
            return BatchAction::Copy;
        }
        if header.producer_id >= 0
            && self.last_batch_of_producer.get(&header.producer_id) == Some(&header.base_offset)
        {
            return BatchAction::Copy;
        }
        let Some(records) = read_records(raw, header, self.limits.max_decompressed_bytes) else {
            warn!(
                dir = %self.snapshot.dir.display(),
                base_offset = header.base_offset,
                "record batch cannot be decoded; kept as it is"
            );
            *unreadable_seen = true;
            *unreadable += 1;
            return BatchAction::Copy;
        };
        let count = records.len();
        let (mut removed, mut tombstones) = (0u64, 0u64);
        let mut young_tombstone = false;
        let kept: Vec<Record> = records
            .into_iter()
            .filter(|r| {
                let Some(key) = &r.key else { return true };
                if self
                    .key_map
                    .get(key)
                    .is_some_and(|latest| latest > r.offset)
                {
                    removed += 1;
                    return false;
                }
                if r.value.is_none() && r.offset < self.map_end && !*unreadable_seen {
                    if tombstones_expired {
                        removed += 1;
                        tombstones += 1;
                        return false;
                    }
                    young_tombstone = true;
                }
                true
            })
            .collect();
        if young_tombstone {
            let due = segment_max_timestamp
                .saturating_add(self.snapshot.config.delete_retention_ms.max(0))
                .saturating_add(1);
            *deadline = Some(deadline.map_or(due, |d| d.min(due)));
        }
        if kept.len() == count {
            return BatchAction::Copy;
        }
        if kept.is_empty() {
            *records_removed += removed;
            *tombstones_removed += tombstones;
            return BatchAction::Drop;
        }
        match encode_filtered(header, kept) {
            Ok((bytes, new_header)) => {
                *records_removed += removed;
                *tombstones_removed += tombstones;
                BatchAction::Replace(bytes, new_header)
            }
            Err(reason) => {
                warn!(
                    dir = %self.snapshot.dir.display(),
                    base_offset = header.base_offset,
                    %reason,
                    "cannot re-encode compacted batch; kept as it is"
                );
                *unreadable_seen = true;
                *unreadable += 1;
                BatchAction::Copy
            }
        }
    }
}

/// Swaps one rewritten segment in under the log's lock; cleans up our
/// files if the swap is abandoned or fails.
fn swap(
    log: &Mutex<PartitionLog>,
    dir: &Path,
    segment: &SegmentSnapshot,
    rewritten: Rewritten,
) -> io::Result<ReplaceOutcome> {
    let replacement = match rewritten {
        Rewritten::Unchanged => return Ok(ReplaceOutcome::Changed),
        Rewritten::Empty => None,
        Rewritten::Cleaned(s) => Some(s),
    };
    let result = lock(log).replace_segment(segment, replacement);
    match &result {
        Ok(ReplaceOutcome::Replaced | ReplaceOutcome::Removed) => sync_dir(dir)?,
        _ => remove_cleaned_files(dir, segment.base_offset),
    }
    result
}

/// The key map: whole key → latest offset, with a memory budget.
struct KeyMap {
    map: HashMap<Bytes, i64>,
    used_bytes: usize,
    budget_bytes: usize,
}

impl KeyMap {
    fn new(budget_bytes: usize) -> Self {
        KeyMap {
            map: HashMap::new(),
            used_bytes: 0,
            budget_bytes,
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn get(&self, key: &[u8]) -> Option<i64> {
        self.map.get(key).copied()
    }

    /// Whether adding these keys stays within the budget (keys already in
    /// the map cost nothing; a key repeated in `keys` is counted twice,
    /// which only errs on the safe side).
    fn fits<'a>(&self, keys: impl Iterator<Item = &'a Bytes>) -> bool {
        let extra: usize = keys
            .filter(|k| !self.map.contains_key(*k))
            .map(|k| k.len() + KEY_ENTRY_OVERHEAD_BYTES)
            .sum();
        self.used_bytes.saturating_add(extra) <= self.budget_bytes
    }

    fn insert(&mut self, key: &Bytes, offset: i64) {
        match self.map.get_mut(key) {
            Some(latest) => *latest = (*latest).max(offset),
            None => {
                // A copy: a slice would pin the whole decompressed batch.
                self.used_bytes += key.len() + KEY_ENTRY_OVERHEAD_BYTES;
                self.map.insert(Bytes::copy_from_slice(key), offset);
            }
        }
    }
}

/// Checks and decodes one batch's records; `None` when the batch is not
/// readable (bad CRC, decompression or decoding fails, records that
/// contradict the header).
fn read_records(raw: &Bytes, header: &BatchHeader, max_decompressed: usize) -> Option<Vec<Record>> {
    validate_batch(raw).ok()?;
    let set = decode_batch(raw, max_decompressed).ok()?;
    if set.records.len() != header.records_count as usize {
        return None;
    }
    let mut previous = header.base_offset - 1;
    for r in &set.records {
        if r.offset <= previous || r.offset > header.last_offset() {
            return None;
        }
        previous = r.offset;
    }
    Some(set.records)
}

/// Re-encodes the surviving records of a batch in its codec, keeping the
/// batch's identity (see the module docs). Checks the result by decoding
/// it again.
fn encode_filtered(
    original: &BatchHeader,
    mut kept: Vec<Record>,
) -> Result<(Bytes, BatchHeader), String> {
    let codec = match original.codec() {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        other => return Err(format!("unknown codec {other}")),
    };
    let first = kept.first().ok_or("no records")?.offset;
    // The encoder writes offset deltas from the first surviving record;
    // the batch keeps its original base, so every delta grows by `shift`.
    let shift = first - original.base_offset;
    if !(0..=i32::MAX as i64).contains(&shift) {
        return Err("record offset outside its batch".into());
    }
    for r in &mut kept {
        r.transactional = false;
        r.control = false;
        r.delete_horizon = false;
        r.partition_leader_epoch = original.partition_leader_epoch;
        r.producer_id = original.producer_id;
        r.producer_epoch = original.producer_epoch;
        r.timestamp_type = TimestampType::Creation;
        // The encoder puts records in one batch while offset - sequence
        // stays constant.
        r.sequence = (r.offset - first) as i32;
    }
    let count = kept.len();
    let compressor = |records: &mut BytesMut, out: &mut BytesMut, codec: Compression| {
        let shifted = shift_offset_deltas(records, count, shift as i32)?;
        compress_into(out, codec, &shifted)
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode_with_custom_compression(
        &mut buf,
        &kept,
        &RecordEncodeOptions {
            version: 2,
            compression: codec,
        },
        Some(compressor),
    )
    .map_err(|e| format!("{e:#}"))?;
    let encoded = BatchHeader::parse(&buf).map_err(|e| e.to_string())?;
    if encoded.total_bytes() != buf.len() || encoded.records_count as usize != count {
        return Err("encoder did not produce exactly one batch".into());
    }
    // Restore the batch's identity, then the CRC over attributes onward.
    buf[0..8].copy_from_slice(&original.base_offset.to_be_bytes());
    buf[12..16].copy_from_slice(&original.partition_leader_epoch.to_be_bytes());
    buf[21..23].copy_from_slice(&original.attributes.to_be_bytes());
    buf[23..27].copy_from_slice(&original.last_offset_delta.to_be_bytes());
    if original.attributes & ATTR_LOG_APPEND_TIME != 0 {
        buf[35..43].copy_from_slice(&original.max_timestamp.to_be_bytes());
    }
    buf[43..51].copy_from_slice(&original.producer_id.to_be_bytes());
    buf[51..53].copy_from_slice(&original.producer_epoch.to_be_bytes());
    buf[53..57].copy_from_slice(&original.base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&buf[21..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    let bytes = buf.freeze();

    let header = validate_batch(&bytes).map_err(|e| e.to_string())?;
    let check = decode_batch(&bytes, MAX_DECOMPRESSED_BYTES).map_err(|e| e.to_string())?;
    let same = check.records.len() == count
        && check
            .records
            .iter()
            .zip(&kept)
            .all(|(a, b)| a.offset == b.offset && a.timestamp == b.timestamp && a.key == b.key);
    if !same {
        return Err("re-encoded batch does not decode to the kept records".into());
    }
    Ok((bytes, header))
}

/// Compresses `data` with `codec` into `out`, as `kafka_protocol` would.
fn compress_into(out: &mut BytesMut, codec: Compression, data: &[u8]) -> anyhow::Result<()> {
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
    let fill = |b: &mut BytesMut| {
        b.put_slice(data);
        Ok(())
    };
    match codec {
        Compression::None => out.put_slice(data),
        Compression::Gzip => <Gzip as Compressor<BytesMut>>::compress(out, fill)?,
        Compression::Snappy => <Snappy as Compressor<BytesMut>>::compress(out, fill)?,
        Compression::Lz4 => <Lz4 as Compressor<BytesMut>>::compress(out, fill)?,
        Compression::Zstd => <Zstd as Compressor<BytesMut>>::compress(out, fill)?,
    }
    Ok(())
}

/// Adds `shift` to the offset delta of each of the `count` records in an
/// uncompressed v2 records section. Each record is
/// `length varint | attributes i8 | timestampDelta varlong |
/// offsetDelta varint | key, value, headers`; the length is rewritten when
/// the delta's varint changes size.
fn shift_offset_deltas(records: &[u8], count: usize, shift: i32) -> anyhow::Result<BytesMut> {
    if shift == 0 {
        return Ok(BytesMut::from(records));
    }
    let mut out = BytesMut::with_capacity(records.len() + count * 5);
    let mut at = 0usize;
    for _ in 0..count {
        let (length, n) = read_varint(&records[at..])?;
        at += n;
        let length =
            usize::try_from(length).map_err(|_| anyhow::anyhow!("negative record length"))?;
        let body = records
            .get(at..at + length)
            .ok_or_else(|| anyhow::anyhow!("record runs past the batch"))?;
        at += length;
        let timestamp_len = body
            .get(1..)
            .map(read_varlong)
            .ok_or_else(|| anyhow::anyhow!("empty record"))??
            .1;
        let delta_at = 1 + timestamp_len;
        let (delta, delta_len) = read_varint(&body[delta_at..])?;
        let delta = delta
            .checked_add(shift)
            .ok_or_else(|| anyhow::anyhow!("offset delta overflows"))?;
        let mut delta_bytes = BytesMut::new();
        write_varint(&mut delta_bytes, delta as i64);
        let rest = &body[delta_at + delta_len..];
        let new_length = delta_at + delta_bytes.len() + rest.len();
        write_varint(&mut out, new_length as i64);
        out.put_slice(&body[..delta_at]);
        out.put_slice(&delta_bytes);
        out.put_slice(rest);
    }
    if at != records.len() {
        anyhow::bail!("bytes left after the last record");
    }
    Ok(out)
}

/// Reads a zigzag varint of at most `max_bytes` bytes.
fn read_zigzag(bytes: &[u8], max_bytes: usize) -> anyhow::Result<(i64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().take(max_bytes).enumerate() {
        value |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((((value >> 1) as i64) ^ -((value & 1) as i64), i + 1));
        }
    }
    anyhow::bail!("malformed varint")
}

fn read_varint(bytes: &[u8]) -> anyhow::Result<(i32, usize)> {
    let (v, n) = read_zigzag(bytes, 5)?;
    let v = i32::try_from(v).map_err(|_| anyhow::anyhow!("varint out of range"))?;
    Ok((v, n))
}

fn read_varlong(bytes: &[u8]) -> anyhow::Result<(i64, usize)> {
    read_zigzag(bytes, 10)
}

fn write_varint(out: &mut BytesMut, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Reads a closed segment's batches through its file handle, a window at a
/// time, without the log's lock.
struct SegmentReader<'a> {
    file: &'a File,
    end: u64,
    position: u64,
    window: Bytes,
    window_start: u64,
}

impl<'a> SegmentReader<'a> {
    fn new(file: &'a File, end: u64) -> Self {
        SegmentReader {
            file,
            end,
            position: 0,
            window: Bytes::new(),
            window_start: 0,
        }
    }

    fn in_window(&self, position: u64, len: usize) -> bool {
        position >= self.window_start
            && position + len as u64 <= self.window_start + self.window.len() as u64
    }

    fn fill(&mut self, position: u64) -> io::Result<()> {
        let len = (READ_WINDOW_BYTES as u64).min(self.end - position) as usize;
        let mut buf = BytesMut::zeroed(len);
        self.file.read_exact_at(&mut buf, position)?;
        self.window = buf.freeze();
        self.window_start = position;
        Ok(())
    }

    /// The next batch's position and header; `Err(reason)` when the bytes
    /// there are not a batch that ends within the segment.
    fn next_header(&mut self) -> io::Result<Option<Result<(u64, BatchHeader), String>>> {
        let position = self.position;
        if position >= self.end {
            return Ok(None);
        }
        if self.end - position < BATCH_HEADER_BYTES as u64 {
            return Ok(Some(Err(format!(
                "{} stray bytes at position {position}",
                self.end - position
            ))));
        }
        if !self.in_window(position, BATCH_HEADER_BYTES) {
            self.fill(position)?;
        }
        let at = (position - self.window_start) as usize;
        let header = match BatchHeader::parse(&self.window[at..at + BATCH_HEADER_BYTES]) {
            Ok(h) => h,
            Err(e) => return Ok(Some(Err(format!("position {position}: {e}")))),
        };
        if position + header.total_bytes() as u64 > self.end {
            return Ok(Some(Err(format!(
                "batch at position {position} runs past the segment"
            ))));
        }
        self.position = position + header.total_bytes() as u64;
        Ok(Some(Ok((position, header))))
    }

    /// The whole batch at `position` (at most [`MAX_IN_MEMORY_BATCH_BYTES`]).
    fn batch_bytes(&mut self, position: u64, header: &BatchHeader) -> io::Result<Bytes> {
        let len = header.total_bytes();
        if !self.in_window(position, len) {
            if len > READ_WINDOW_BYTES {
                return read_bytes(self.file, position, len);
            }
            self.fill(position)?;
        }
        let at = (position - self.window_start) as usize;
        Ok(self.window.slice(at..at + len))
    }
}

/// Copies `len` bytes at `position` of `file` to `out` in window-sized
/// chunks.
fn copy_range(file: &File, position: u64, len: u64, out: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; READ_WINDOW_BYTES.min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], position + done)?;
        out.write_all(&buf[..n])?;
        done += n as u64;
    }
    Ok(())
}

/// Best-effort removal of a pass's files for segment `base`.
fn remove_cleaned_files(dir: &Path, base: i64) {
    for ext in ["log", "index", "timeindex"] {
        let _ = std::fs::remove_file(
            dir.join(segment_file_name(base, &format!("{ext}{CLEANED_SUFFIX}"))),
        );
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The steps of the swap done under the log's lock (see the module docs);
/// [`commit_swap_until`] stops after one of them to show what a crash
/// there leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SwapStep {
    /// 5: old indexes unlinked, directory fsynced.
    RemoveOldIndexes,
    /// 6: `B.log.cleaned` renamed to `B.log`, directory fsynced.
    RenameLog,
    /// 7: new indexes renamed into place.
    RenameIndexes,
}

/// A failed swap: whether it got past the commit point (the rename of the
/// `.log`), after which the new segment is the one on disk.
#[derive(Debug)]
pub(crate) struct SwapError {
    pub committed: bool,
    pub error: io::Error,
}

/// Steps 5-7 of the swap protocol for segment `base` of `dir`.
pub(crate) fn commit_swap(dir: &Path, base: i64) -> Result<(), SwapError> {
    commit_swap_until(dir, base, SwapStep::RenameIndexes)
}

pub(crate) fn commit_swap_until(dir: &Path, base: i64, last: SwapStep) -> Result<(), SwapError> {
    let path = |ext: &str| dir.join(segment_file_name(base, ext));
    let before = |error| SwapError {
        committed: false,
        error,
    };
    let after = |error| SwapError {
        committed: true,
        error,
    };
    for ext in ["index", "timeindex"] {
        match std::fs::remove_file(path(ext)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(before(e)),
        }
    }
    sync_dir(dir).map_err(before)?;
    if last == SwapStep::RemoveOldIndexes {
        return Ok(());
    }
    std::fs::rename(path(&format!("log{CLEANED_SUFFIX}")), path("log")).map_err(before)?;
    sync_dir(dir).map_err(after)?;
    if last == SwapStep::RenameLog {
        return Ok(());
    }
    for ext in ["index", "timeindex"] {
        std::fs::rename(path(&format!("{ext}{CLEANED_SUFFIX}")), path(ext)).map_err(after)?;
    }
    Ok(())
}
