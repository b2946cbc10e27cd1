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
//! 1. **Plan**: take a [`CleanerSnapshot`] under the log's lock
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
//! A segment whose records carry no timestamp (max timestamp -1) counts as
//! old for both the compaction lag and tombstones. Tombstones kept only for
//! their age produce a deadline ([`CleanReport::tombstone_deadline_ms`]);
//! the broker forces a pass then, so they go even if no new data arrives.
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
//! record is dropped; a segment left with no batch is deleted, except the
//! log's first one, which is swapped for an empty file: compaction never
//! moves the log start (as in Kafka), so a consumer positioned there is
//! never told its offset is out of range.
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
//! map entry per idempotent producer id seen in the rewritten segments, up
//! to [`MAX_TRACKED_PRODUCERS`] (the batches of any further producer are
//! kept whole).

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
use super::records::{decode_batch, read_varint, read_varlong, MAX_DECOMPRESSED_BYTES};
use super::segment::{read_bytes, segment_file_name, Segment};
#[cfg(test)]
use super::swap::{commit_swap_until, SWAP_OPERATIONS};
use super::swap::{sync_dir, CLEANED_SUFFIX};

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

/// Most idempotent producer ids whose last batch a pass tracks (about
/// 48 bytes each); batches of further producers are kept whole.
pub const MAX_TRACKED_PRODUCERS: usize = 1 << 20;

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
    Clean(Box<CleanPlan>),
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
    /// Base of the log's first segment when planned.
    first_base_offset: i64,
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
            if header.producer_id < 0 {
                continue;
            }
            if let Some(last) = last_batch_of_producer.get_mut(&header.producer_id) {
                *last = header.base_offset;
            } else if last_batch_of_producer.len() < MAX_TRACKED_PRODUCERS {
                last_batch_of_producer.insert(header.producer_id, header.base_offset);
            }
            // Beyond the cap a producer is not tracked, and every one of its
            // batches is kept whole.
        }
    }
    let delete_retention_ms = config.delete_retention_ms.max(0);
    Ok(Planned::Clean(Box::new(CleanPlan {
        tombstone_horizon_ms: now_ms.saturating_sub(delete_retention_ms),
        first_base_offset: first_offset,
        snapshot,
        segments,
        key_map,
        map_end,
        last_batch_of_producer,
        dirty_ratio,
        limits: limits.clone(),
    })))
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

/// What rewriting one segment found. Removals count in the report only
/// if the segment is swapped in.
#[derive(Debug, Default)]
struct SegmentTally {
    records_removed: u64,
    tombstones_removed: u64,
    unreadable: u64,
    /// When the earliest tombstone kept for its age may go.
    tombstone_deadline_ms: Option<i64>,
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
        remove_cleaned_files(dir, base);
        // Created at the first change, starting with a copy of the
        // unchanged prefix: a segment with nothing to remove is only read.
        let mut out: Option<BufWriter<File>> = None;
        let mut written: Vec<(u64, BatchHeader)> = Vec::new();
        let mut out_position: u64 = 0;
        let mut tally = SegmentTally::default();

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
                tally.unreadable += 1;
                if let Some(out) = out.as_mut() {
                    copy_range(&segment.file, position, len, out)?;
                }
                written.push((out_position, header));
                out_position += len;
                continue;
            }
            let raw = reader.batch_bytes(position, &header)?;
            let action = self.filter_batch(&raw, &header, segment, unreadable_seen, &mut tally);
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
        report.batches_unreadable += tally.unreadable;
        if let Some(d) = tally.tombstone_deadline_ms {
            report.tombstone_deadline_ms =
                Some(report.tombstone_deadline_ms.map_or(d, |r| r.min(d)));
        }
        let Some(out) = out else {
            return Ok(Rewritten::Unchanged);
        };
        report.records_removed += tally.records_removed;
        report.tombstones_removed += tally.tombstones_removed;
        if written.is_empty() && base != self.first_base_offset {
            return Ok(Rewritten::Empty);
        }
        // (An emptied first segment is swapped for an empty file: it keeps
        // the log start where it is, as Kafka does.)
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let mut cleaned =
            Segment::from_cleaned(dir, base, file, &written, config.index_interval_bytes);
        cleaned.write_index_files(CLEANED_SUFFIX)?;
        Ok(Rewritten::Cleaned(cleaned))
    }

    /// Decides what happens to one batch of `segment` (`raw` is the whole
    /// batch).
    fn filter_batch(
        &self,
        raw: &Bytes,
        header: &BatchHeader,
        segment: &SegmentSnapshot,
        unreadable_seen: &mut bool,
        tally: &mut SegmentTally,
    ) -> BatchAction {
        // The segment's max timestamp stands in for the tombstone's age.
        let tombstones_expired = segment.max_timestamp < self.tombstone_horizon_ms;
        if header.is_control() || header.is_transactional() {
            return BatchAction::Copy;
        }
        if header.producer_id >= 0
            && self
                .last_batch_of_producer
                .get(&header.producer_id)
                .is_none_or(|&last| last == header.base_offset)
        {
            // The producer's last batch, or an untracked producer.
            return BatchAction::Copy;
        }
        let Some(records) = read_records(raw, header, self.limits.max_decompressed_bytes) else {
            warn!(
                dir = %self.snapshot.dir.display(),
                base_offset = header.base_offset,
                "record batch cannot be decoded; kept as it is"
            );
            *unreadable_seen = true;
            tally.unreadable += 1;
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
            let due = segment
                .max_timestamp
                .saturating_add(self.snapshot.config.delete_retention_ms.max(0))
                .saturating_add(1);
            tally.tombstone_deadline_ms =
                Some(tally.tombstone_deadline_ms.map_or(due, |d| d.min(due)));
        }
        if kept.len() == count {
            return BatchAction::Copy;
        }
        if kept.is_empty() {
            tally.records_removed += removed;
            tally.tombstones_removed += tombstones;
            return BatchAction::Drop;
        }
        match encode_filtered(header, kept) {
            Ok((bytes, new_header)) => {
                tally.records_removed += removed;
                tally.tombstones_removed += tombstones;
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
                tally.unreadable += 1;
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
    // Restore the batch's identity, then the CRC over attributes onward
    // (the header parsed above, so the 61 header bytes are there).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::{BatchIter, ATTR_CONTROL, ATTR_TRANSACTIONAL};
    use crate::storage::log::{LogConfig, TimestampType as LogTimestampType};
    use kafka_protocol::protocol::StrBytes;
    use std::collections::BTreeMap;

    const T0: i64 = 1_700_000_000_000;
    /// `now` at which tombstones written around T0 are still young.
    const NOW_YOUNG: i64 = T0 + 10_000;
    /// `now` at which they are long past `delete.retention.ms`.
    const NOW_LATER: i64 = T0 + 10_000_000;

    /// One record as stored: everything a consumer sees.
    #[derive(Debug, Clone, PartialEq)]
    struct Stored {
        offset: i64,
        timestamp: i64,
        key: Option<Bytes>,
        value: Option<Bytes>,
        headers: Vec<(String, Option<Bytes>)>,
    }

    fn stored(r: &Record) -> Stored {
        Stored {
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    /// How a test batch is produced.
    #[derive(Clone, Copy)]
    struct Producer {
        codec: Compression,
        timestamp: i64,
        /// (producerId, epoch, baseSequence) of an idempotent producer.
        idempotent: Option<(i64, i16, i32)>,
        transactional: bool,
        control: bool,
    }

    fn plain(timestamp: i64) -> Producer {
        Producer {
            codec: Compression::None,
            timestamp,
            idempotent: None,
            transactional: false,
            control: false,
        }
    }

    /// Encodes one batch of (key, value) records at offsets 0.., record i
    /// with timestamp `timestamp + i` and a header `n = i`.
    fn batch(records: &[(Option<&str>, Option<&str>)], p: Producer) -> Bytes {
        let (producer_id, producer_epoch, base_sequence) = p.idempotent.unwrap_or((-1, -1, -1));
        let records: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (k, v))| {
                let mut record = Record {
                    transactional: p.transactional,
                    control: p.control,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id,
                    producer_epoch,
                    timestamp_type: TimestampType::Creation,
                    offset: i as i64,
                    sequence: base_sequence.wrapping_add(i as i32),
                    timestamp: p.timestamp + i as i64,
                    key: k.map(|k| Bytes::from(k.to_string())),
                    value: v.map(|v| Bytes::from(v.to_string())),
                    headers: Default::default(),
                };
                record.headers.insert(
                    StrBytes::from_string("n".into()),
                    Some(Bytes::from(i.to_string())),
                );
                record
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: p.codec,
            },
        )
        .unwrap();
        buf.freeze()
    }

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 8192,
            index_interval_bytes: 512,
            retention_ms: -1,
            cleanup_delete: false,
            cleanup_compact: true,
            delete_retention_ms: 60_000,
            min_cleanable_dirty_ratio: 0.0,
            min_compaction_lag_ms: 0,
            ..Default::default()
        }
    }

    fn open(dir: &Path, config: LogConfig) -> Mutex<PartitionLog> {
        Mutex::new(PartitionLog::open(dir, config, 0, 0, 0).unwrap().0)
    }

    fn reopen(dir: &Path, config: LogConfig, recovery_point: i64) -> PartitionLog {
        let (log, report) = PartitionLog::open(dir, config, recovery_point, 0, 0).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        log
    }

    /// Appends one batch; returns its base offset.
    fn append(log: &Mutex<PartitionLog>, bytes: &Bytes) -> i64 {
        lock(log).append(bytes, 0, T0).unwrap().base_offset
    }

    /// Appends one batch as it is, without the append rules (what an
    /// older broker or a transaction coordinator wrote); returns its base
    /// offset.
    fn append_unchecked(log: &Mutex<PartitionLog>, bytes: &Bytes) -> i64 {
        let batch = crate::storage::validator::ValidBatch::unchecked(bytes);
        lock(log)
            .append_validated(vec![batch], 0, T0)
            .unwrap()
            .base_offset
    }

    /// Closes the active segment and fsyncs, so everything is cleanable.
    fn seal(log: &Mutex<PartitionLog>) {
        let mut log = lock(log);
        log.roll().unwrap();
        log.flush(T0).unwrap();
    }

    /// Every whole batch of the log, as served to consumers, CRC-checked.
    fn batches(log: &PartitionLog) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let Some(slice) = log.read(offset, 1 << 20, true, i64::MAX).unwrap() else {
                break;
            };
            let bytes = slice.read().unwrap();
            let mut last_next = offset;
            for item in BatchIter::new(&bytes, true) {
                let Ok((at, h)) = item else { break };
                out.push(bytes.slice(at..at + h.total_bytes()));
                last_next = h.next_offset();
            }
            assert!(last_next > offset, "the log must advance at {offset}");
            offset = last_next;
        }
        out
    }

    /// Every record of the log, in order.
    fn records(log: &PartitionLog) -> Vec<Stored> {
        let mut out = Vec::new();
        for b in batches(log) {
            let set = decode_batch(&b, MAX_DECOMPRESSED_BYTES).unwrap();
            out.extend(set.records.iter().map(stored));
        }
        out
    }

    fn key_of(s: &Stored) -> String {
        String::from_utf8(s.key.clone().unwrap().to_vec()).unwrap()
    }

    fn limits() -> CleanerLimits {
        CleanerLimits::default()
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The latest (offset, value) of each key, as written.
    type Latest = BTreeMap<String, (i64, Option<String>)>;

    /// Writes `versions` rounds over `keys` keys in batches of 20 with the
    /// given codec, then tombstones for every key ≡ 3 (mod 10), then a few
    /// records without a key. Returns the latest record per key (offset,
    /// value) and the offsets of the keyless records.
    fn write_versions(
        log: &Mutex<PartitionLog>,
        keys: usize,
        versions: usize,
        codec: Compression,
    ) -> (Latest, Vec<i64>) {
        let mut latest = BTreeMap::new();
        let mut ts = T0;
        for v in 0..versions {
            for chunk in (0..keys).collect::<Vec<_>>().chunks(20) {
                let names: Vec<(String, String)> = chunk
                    .iter()
                    .map(|i| {
                        (
                            format!("key-{i:04}"),
                            format!("v{v}-of-key-{i:04}-{}", "p".repeat(i % 7)),
                        )
                    })
                    .collect();
                let recs: Vec<(Option<&str>, Option<&str>)> = names
                    .iter()
                    .map(|(k, v)| (Some(k.as_str()), Some(v.as_str())))
                    .collect();
                let base = append(log, &batch(&recs, Producer { codec, ..plain(ts) }));
                for (i, (k, v)) in names.into_iter().enumerate() {
                    latest.insert(k, (base + i as i64, Some(v)));
                }
                ts += 20;
            }
        }
        let dead: Vec<String> = (0..keys)
            .filter(|i| i % 10 == 3)
            .map(|i| format!("key-{i:04}"))
            .collect();
        for chunk in dead.chunks(20) {
            let recs: Vec<(Option<&str>, Option<&str>)> =
                chunk.iter().map(|k| (Some(k.as_str()), None)).collect();
            let base = append(log, &batch(&recs, Producer { codec, ..plain(ts) }));
            for (i, k) in chunk.iter().enumerate() {
                latest.insert(k.clone(), (base + i as i64, None));
            }
            ts += 20;
        }
        // A compacted topic refuses keyless records; these were written
        // while the topic was not compacted yet.
        let compacted = lock(log).config().clone();
        lock(log).set_config(LogConfig {
            cleanup_compact: false,
            ..compacted.clone()
        });
        let base = append(
            log,
            &batch(
                &[(None, Some("no key 1")), (None, Some("no key 2"))],
                Producer { codec, ..plain(ts) },
            ),
        );
        lock(log).set_config(compacted);
        (latest, vec![base, base + 1])
    }

    /// Checks that `records` hold exactly the latest record of every key
    /// (tombstones included or not), at its original offset, and the
    /// keyless records.
    fn assert_latest_only(
        records: &[Stored],
        latest: &Latest,
        keyless: &[i64],
        with_tombstones: bool,
    ) {
        let mut seen = BTreeMap::new();
        let mut keyless_seen = Vec::new();
        for r in records {
            let Some(_) = &r.key else {
                keyless_seen.push(r.offset);
                continue;
            };
            let key = key_of(r);
            let value = r
                .value
                .as_ref()
                .map(|v| String::from_utf8(v.to_vec()).unwrap());
            assert!(
                seen.insert(key.clone(), (r.offset, value)).is_none(),
                "key {key} appears twice (again at offset {})",
                r.offset
            );
        }
        let expected: Latest = latest
            .iter()
            .filter(|(_, (_, v))| with_tombstones || v.is_some())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(keyless_seen, keyless, "records without a key are kept");
    }

    #[test]
    fn cleaning_keeps_the_latest_record_of_each_key_at_its_offset_and_drops_old_tombstones_later() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), config());
        let (latest, keyless) = write_versions(&log, 1000, 5, Compression::None);
        seal(&log);
        let before = lock(&log).segment_count();
        assert!(before > 20, "small segments: {before}");

        let report = clean_log(&log, 0, false, NOW_YOUNG, &limits()).unwrap();
        assert_eq!(report.skipped, None);
        assert_eq!(report.keys_in_map, 1000);
        // 5,000 values and 100 tombstones; 900 values and 100 tombstones stay.
        assert_eq!(report.records_removed, 4100, "{report:?}");
        assert_eq!(report.tombstones_removed, 0, "tombstones are young");
        assert!(report.segments_removed > 0 && report.segments_rewritten > 0);
        assert!(report.bytes_after < report.bytes_before);
        let end = lock(&log).log_end_offset();
        assert_eq!(report.clean_point, end, "the whole closed log is clean");
        let deadline = report
            .tombstone_deadline_ms
            .expect("young tombstones were kept");
        assert!(deadline > NOW_YOUNG && deadline <= T0 + 200_000 + 60_001);
        assert_latest_only(&records(&lock(&log)), &latest, &keyless, true);
        assert_eq!(lock(&log).log_end_offset(), end, "offsets never change");
        // The first segment held only superseded records: it is an empty
        // file now, and the log still starts at 0 (no consumer position
        // becomes out of range).
        assert_eq!(report.log_start_offset, 0);
        let first = dir.path().join(segment_file_name(0, "log"));
        assert_eq!(std::fs::metadata(&first).unwrap().len(), 0);
        let from_zero = lock(&log)
            .read(0, 1 << 20, true, i64::MAX)
            .unwrap()
            .unwrap();
        let first_batch = BatchHeader::parse(&from_zero.read().unwrap()).unwrap();
        assert!(first_batch.base_offset > 0);
        assert!(
            !files_in(dir.path()).iter().any(|f| f.contains("cleaned")),
            "no leftovers: {:?}",
            files_in(dir.path())
        );

        // Nothing new is dirty: a pass is skipped unless forced by the deadline.
        let again = clean_log(&log, report.clean_point, false, NOW_LATER, &limits()).unwrap();
        assert_eq!(again.skipped, Some(SkipReason::BelowDirtyRatio));
        let later = clean_log(&log, report.clean_point, true, NOW_LATER, &limits()).unwrap();
        assert_eq!(later.tombstones_removed, 100);
        assert_eq!(later.tombstone_deadline_ms, None);
        assert_latest_only(&records(&lock(&log)), &latest, &keyless, false);

        // The cleaned log reopens from its new indexes, unchanged.
        let expected = records(&lock(&log));
        let recovery_point = lock(&log).recovery_point();
        drop(log);
        let (reopened, report) =
            PartitionLog::open(dir.path(), config(), recovery_point, 0, 0).unwrap();
        assert_eq!(
            report.segments_scanned, 1,
            "only the active segment is scanned"
        );
        assert_eq!(
            reopened.log_start_offset(),
            0,
            "the empty first segment is kept"
        );
        assert_eq!(records(&reopened), expected);
        for r in &expected {
            let slice = reopened.read(r.offset, 1, true, i64::MAX).unwrap().unwrap();
            let h = BatchHeader::parse(&slice.read().unwrap()).unwrap();
            assert!(h.base_offset <= r.offset && r.offset <= h.last_offset());
        }
    }

    #[test]
    fn every_codec_is_cleaned_in_place_keeping_batch_offsets_and_record_fields() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let log = open(dir.path(), config());
            // Batch b holds keys (10b + j) % 25: each key recurs every 2.5
            // batches, so batches lose their first, middle or last records.
            let mut originals: BTreeMap<i64, (BatchHeader, Vec<Stored>)> = BTreeMap::new();
            for b in 0..60 {
                let names: Vec<(String, String)> = (0..10)
                    .map(|j| {
                        (
                            format!("k{}", (10 * b + j) % 25),
                            format!("{codec:?}-value-{b}-{j}"),
                        )
                    })
                    .collect();
                let recs: Vec<(Option<&str>, Option<&str>)> = names
                    .iter()
                    .map(|(k, v)| (Some(k.as_str()), Some(v.as_str())))
                    .collect();
                let p = Producer {
                    codec,
                    ..plain(T0 + 100 * b)
                };
                append(&log, &batch(&recs, p));
            }
            for raw in batches(&lock(&log)) {
                let h = validate_batch(&raw).unwrap();
                let set = decode_batch(&raw, MAX_DECOMPRESSED_BYTES).unwrap();
                originals.insert(h.base_offset, (h, set.records.iter().map(stored).collect()));
            }
            seal(&log);
            let report = clean_log(&log, 0, false, NOW_YOUNG, &limits()).unwrap();
            assert!(report.segments_rewritten > 0, "{codec:?}: {report:?}");

            let mut shifted = 0;
            let mut partial = 0;
            let mut keys = BTreeMap::new();
            for raw in batches(&lock(&log)) {
                let h = validate_batch(&raw).unwrap();
                let (original, original_records) = &originals[&h.base_offset];
                assert_eq!(h.codec(), original.codec(), "{codec:?}: codec kept");
                assert_eq!(h.last_offset_delta, original.last_offset_delta, "{codec:?}");
                assert_eq!(h.attributes, original.attributes, "{codec:?}");
                assert_eq!(
                    (h.producer_id, h.producer_epoch, h.base_sequence),
                    (
                        original.producer_id,
                        original.producer_epoch,
                        original.base_sequence
                    )
                );
                let set = decode_batch(&raw, MAX_DECOMPRESSED_BYTES).unwrap();
                assert_eq!(set.records.len(), h.records_count as usize);
                if set.records.len() < original_records.len() {
                    partial += 1;
                }
                if set.records[0].offset > h.base_offset {
                    shifted += 1;
                }
                let max_ts = set.records.iter().map(|r| r.timestamp).max().unwrap();
                assert_eq!(
                    h.max_timestamp, max_ts,
                    "{codec:?}: max timestamp of survivors"
                );
                for r in &set.records {
                    let s = stored(r);
                    let was = original_records
                        .iter()
                        .find(|o| o.offset == s.offset)
                        .unwrap();
                    assert_eq!(&s, was, "{codec:?}: record at {} unchanged", s.offset);
                    assert!(
                        keys.insert(key_of(&s), s.offset).is_none(),
                        "{codec:?}: one per key"
                    );
                }
            }
            assert_eq!(keys.len(), 25, "{codec:?}");
            assert!(
                partial > 0 && shifted > 0,
                "{codec:?}: partial {partial}, shifted {shifted}"
            );
        }
    }

    #[test]
    fn a_batch_with_log_append_time_keeps_its_append_time_when_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            timestamp_type: LogTimestampType::LogAppendTime,
            ..config()
        };
        let log = open(dir.path(), cfg);
        let recs = [
            (Some("a"), Some("1")),
            (Some("b"), Some("1")),
            (Some("a"), Some("2")),
        ];
        lock(&log)
            .append(
                &batch(
                    &recs,
                    Producer {
                        codec: Compression::Lz4,
                        ..plain(T0)
                    },
                ),
                0,
                42_000,
            )
            .unwrap();
        seal(&log);
        clean_log(&log, 0, false, NOW_YOUNG, &limits()).unwrap();
        let all = batches(&lock(&log));
        assert_eq!(all.len(), 1);
        let h = validate_batch(&all[0]).unwrap();
        assert_eq!(h.records_count, 2);
        assert_eq!(h.max_timestamp, 42_000);
        assert_ne!(h.attributes & ATTR_LOG_APPEND_TIME, 0);
        assert_eq!((h.base_offset, h.last_offset_delta), (0, 2));
    }

    #[test]
    fn the_active_segment_is_never_modified() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), config());
        write_versions(&log, 200, 3, Compression::Snappy);
        seal(&log);
        // Duplicates in the active segment.
        for v in 0..3 {
            let value = format!("active-{v}");
            append(
                &log,
                &batch(
                    &[
                        (Some("key-0001"), Some(value.as_str())),
                        (Some("hot"), Some(value.as_str())),
                    ],
                    plain(T0 + 1_000_000),
                ),
            );
        }
        lock(&log).flush(T0).unwrap();
        let active_path = dir.path().join(segment_file_name(
            lock(&log).cleaner_snapshot().active_base_offset,
            "log",
        ));
        let active_before = std::fs::read(&active_path).unwrap();
        let report = clean_log(&log, 0, false, NOW_YOUNG, &limits()).unwrap();
        assert!(report.segments_rewritten + report.segments_removed > 0);
        assert_eq!(std::fs::read(&active_path).unwrap(), active_before);
        let all = records(&lock(&log));
        let hot = all
            .iter()
            .filter(|r| r.key.as_deref() == Some(b"hot".as_slice()))
            .count();
        assert_eq!(hot, 3, "every record of the active segment is still there");
        let k1 = all
            .iter()
            .filter(|r| r.key.as_deref() == Some(b"key-0001".as_slice()))
            .count();
        assert_eq!(
            k1, 4,
            "the cleaned section keeps one, the active segment its three"
        );
    }

    #[test]
    fn segments_younger_than_the_compaction_lag_are_not_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let now = T0 + 10 * 3_600_000;
        let cfg = LogConfig {
            min_compaction_lag_ms: 3_600_000,
            ..config()
        };
        let log = open(dir.path(), cfg);
        // Old data (9 h before now), then recent data (1 min before now).
        let old_recs = [
            (Some("a"), Some("old-1")),
            (Some("b"), Some("old-1")),
            (Some("a"), Some("old-2")),
        ];
        for _ in 0..3 {
            append(&log, &batch(&old_recs, plain(T0 + 3_600_000)));
        }
        lock(&log).roll().unwrap();
        let recent_base = lock(&log).log_end_offset();
        let recent = [(Some("a"), Some("new-1")), (Some("a"), Some("new-2"))];
        for _ in 0..3 {
            append(&log, &batch(&recent, plain(now - 60_000)));
        }
        seal(&log);
        let recent_path = dir.path().join(segment_file_name(recent_base, "log"));
        let recent_before = std::fs::read(&recent_path).unwrap();

        let report = clean_log(&log, 0, false, now, &limits()).unwrap();
        assert_eq!(
            report.clean_point, recent_base,
            "the lag stops the cleanable range"
        );
        assert_eq!(
            std::fs::read(&recent_path).unwrap(),
            recent_before,
            "recent segment untouched"
        );
        let all = records(&lock(&log));
        let old: Vec<&Stored> = all.iter().filter(|r| r.offset < recent_base).collect();
        assert_eq!(old.len(), 2, "old section: one a, one b: {old:?}");
        assert_eq!(
            all.len() - old.len(),
            6,
            "recent section keeps every version"
        );

        // Once the lag has passed, the recent segment is compacted too.
        let later = clean_log(&log, report.clean_point, false, now + 3_600_000, &limits()).unwrap();
        assert_eq!(later.skipped, None);
        let all = records(&lock(&log));
        assert_eq!(all.len(), 2, "{all:?}");
    }

    #[test]
    fn a_log_below_the_dirty_ratio_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            min_cleanable_dirty_ratio: 0.5,
            ..config()
        };
        let log = open(dir.path(), cfg);
        write_versions(&log, 300, 4, Compression::None);
        seal(&log);
        let first = clean_log(&log, 0, false, NOW_YOUNG, &limits()).unwrap();
        assert_eq!(first.skipped, None);
        assert_eq!(first.dirty_ratio, 1.0);
        // A little more data: dirty, but far below half of the log.
        append(&log, &batch(&[(Some("key-0001"), Some("x"))], plain(T0)));
        seal(&log);
        let second = clean_log(&log, first.clean_point, false, NOW_YOUNG, &limits()).unwrap();
        assert_eq!(second.skipped, Some(SkipReason::BelowDirtyRatio));
        assert!(
            second.dirty_ratio > 0.0 && second.dirty_ratio < 0.5,
            "{}",
            second.dirty_ratio
        );
        assert_eq!(second.clean_point, first.clean_point);
        let forced = clean_log(&log, first.clean_point, true, NOW_YOUNG, &limits()).unwrap();
        assert_eq!(forced.records_removed, 1);
    }

    #[test]
    fn a_small_key_map_cleans_a_prefix_per_pass_until_the_log_is_clean() {
        // Young tombstones stay; old ones go, but never before every older
        // value of their key (a tombstone past the map's end must stay).
        for (now, with_tombstones) in [(NOW_YOUNG, true), (NOW_LATER, false)] {
            let dir = tempfile::tempdir().unwrap();
            let log = open(dir.path(), config());
            let (latest, keyless) = write_versions(&log, 1000, 3, Compression::Zstd);
            seal(&log);
            let end = lock(&log).log_end_offset();
            // Room for about 150 keys of 8 bytes.
            let small = CleanerLimits {
                dedupe_buffer_bytes: 150 * (8 + KEY_ENTRY_OVERHEAD_BYTES),
                ..limits()
            };
            let mut clean_point = 0;
            let mut passes = 0;
            while clean_point < end {
                let report = clean_log(&log, clean_point, false, now, &small).unwrap();
                assert!(report.keys_in_map <= 150, "{}", report.keys_in_map);
                assert!(
                    report.clean_point > clean_point,
                    "every pass makes progress"
                );
                clean_point = report.clean_point;
                passes += 1;
                assert!(passes < 100);
                // Whatever pass we are at, a deleted key's value is always
                // followed by a newer record of that key.
                let mut last_of_key: BTreeMap<String, &Stored> = BTreeMap::new();
                let all = records(&lock(&log));
                for r in all.iter().filter(|r| r.key.is_some()) {
                    last_of_key.insert(key_of(r), r);
                }
                for (key, r) in last_of_key {
                    if latest[&key].1.is_none() {
                        assert!(
                            r.value.is_none(),
                            "deleted key {key} resurrected at {}",
                            r.offset
                        );
                    }
                }
            }
            assert!(passes > 5, "{passes} passes");
            if !with_tombstones {
                // The last tombstones become droppable once the clean point passed them.
                clean_log(&log, clean_point, true, now, &small).unwrap();
            }
            assert_latest_only(&records(&lock(&log)), &latest, &keyless, with_tombstones);
        }
    }

    #[test]
    fn the_last_batch_of_each_idempotent_producer_is_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), config());
        let ab = [(Some("a"), Some("p1")), (Some("b"), Some("p1"))];
        let first = Producer {
            idempotent: Some((7, 0, 0)),
            ..plain(T0)
        };
        let second = Producer {
            idempotent: Some((7, 0, 2)),
            ..plain(T0 + 10)
        };
        append(&log, &batch(&ab, first));
        let kept = batch(&ab, second);
        let kept_base = append(&log, &kept);
        append(
            &log,
            &batch(
                &[(Some("a"), Some("later")), (Some("b"), Some("later"))],
                plain(T0 + 20),
            ),
        );
        seal(&log);
        clean_log(&log, 0, false, NOW_YOUNG, &limits()).unwrap();
        let all = batches(&lock(&log));
        assert_eq!(
            all.len(),
            2,
            "the producer's first batch is gone, its last is kept"
        );
        let h = BatchHeader::parse(&all[0]).unwrap();
        assert_eq!(
            (h.base_offset, h.producer_id, h.base_sequence),
            (kept_base, 7, 2)
        );
        assert_eq!(
            all[0][16..],
            kept[16..],
            "kept byte for byte (after the offset and epoch)"
        );
    }

    #[test]
    fn transactional_and_control_batches_are_kept_and_do_not_hide_older_records() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), config());
        append(&log, &batch(&[(Some("x"), Some("committed"))], plain(T0)));
        let txn = Producer {
            idempotent: Some((9, 0, 0)),
            transactional: true,
            ..plain(T0 + 1)
        };
        append(
            &log,
            &batch(
                &[(Some("x"), Some("in-txn")), (Some("x"), Some("in-txn-2"))],
                txn,
            ),
        );
        let marker = Producer {
            idempotent: Some((9, 0, -1)),
            transactional: true,
            control: true,
            ..plain(T0 + 2)
        };
        // Clients cannot write control batches; a transaction coordinator
        // appends them without the client rules.
        append_unchecked(
            &log,
            &batch(&[(Some("\0\0\0\0"), Some("\0\0\0\0\0\0"))], marker),
        );
        // A second, superseded transactional batch of another producer.
        let txn2 = Producer {
            idempotent: Some((10, 0, 0)),
            transactional: true,
            ..plain(T0 + 3)
        };
        append(
            &log,
            &batch(
                &[(Some("y"), Some("old")), (Some("y"), Some("old-2"))],
                txn2,
            ),
        );
        append(&log, &batch(&[(Some("y"), Some("new"))], plain(T0 + 4)));
        seal(&log);
        let report = clean_log(&log, 0, false, NOW_YOUNG, &limits()).unwrap();
        let all = batches(&lock(&log));
        let flags: Vec<i16> = all
            .iter()
            .map(|b| {
                BatchHeader::parse(b).unwrap().attributes & (ATTR_TRANSACTIONAL | ATTR_CONTROL)
            })
            .collect();
        assert_eq!(
            flags,
            vec![
                0,
                ATTR_TRANSACTIONAL,
                ATTR_TRANSACTIONAL | ATTR_CONTROL,
                ATTR_TRANSACTIONAL,
                0
            ]
        );
        assert_eq!(records(&lock(&log)).len(), 7, "nothing removed: {report:?}");
    }

    /// A batch whose CRC is right but whose compressed records are garbage.
    fn undecodable_batch(key: &str) -> Bytes {
        let good = batch(
            &[(Some(key), Some("lost?"))],
            Producer {
                codec: Compression::Lz4,
                ..plain(T0)
            },
        );
        let mut bad = good.to_vec();
        for b in &mut bad[BATCH_HEADER_BYTES + 4..] {
            *b ^= 0x5a;
        }
        let crc = crc32c::crc32c(&bad[21..]);
        bad[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(bad)
    }

    #[test]
    fn an_undecodable_batch_is_kept_and_no_later_tombstone_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), config());
        append(
            &log,
            &batch(&[(Some("a"), Some("1")), (Some("a"), None)], plain(T0)),
        );
        // Appends refuse such a batch now; an older broker stored it.
        let bad = undecodable_batch("b");
        let bad_base = append_unchecked(&log, &bad);
        append(
            &log,
            &batch(
                &[
                    (Some("b"), Some("1")),
                    (Some("b"), None),
                    (Some("c"), Some("1")),
                ],
                plain(T0),
            ),
        );
        seal(&log);
        let report = clean_log(&log, 0, false, NOW_LATER, &limits()).unwrap();
        assert_eq!(report.batches_unreadable, 1, "{report:?}");
        assert_eq!(
            report.tombstones_removed, 1,
            "only the tombstone before the bad batch"
        );
        let all = batches(&lock(&log));
        let kept_bad = all
            .iter()
            .find(|b| BatchHeader::parse(b).unwrap().base_offset == bad_base)
            .expect("the undecodable batch is kept");
        assert_eq!(kept_bad[16..], bad[16..]);
        // Its key is unknown, so b's tombstone (which may hide it) stays.
        let rest: Vec<Stored> = all
            .iter()
            .filter(|b| BatchHeader::parse(b).unwrap().base_offset != bad_base)
            .flat_map(|b| {
                decode_batch(b, MAX_DECOMPRESSED_BYTES)
                    .unwrap()
                    .records
                    .iter()
                    .map(stored)
                    .collect::<Vec<_>>()
            })
            .collect();
        let summary: Vec<(String, bool)> = rest
            .iter()
            .map(|r| (key_of(r), r.value.is_some()))
            .collect();
        assert_eq!(summary, vec![("b".into(), false), ("c".into(), true)]);
    }

    #[test]
    fn a_segment_deleted_by_retention_during_cleaning_is_not_swapped_back() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            cleanup_delete: true,
            ..config()
        };
        let log = open(dir.path(), cfg);
        write_versions(&log, 300, 4, Compression::Gzip);
        seal(&log);
        let second_base = lock(&log).cleaner_snapshot().closed_segments[1].base_offset;
        let mut first = true;
        let report = clean_log_with_hook(&log, 0, false, NOW_YOUNG, &limits(), &mut |segment| {
            if first {
                first = false;
                assert_eq!(segment.base_offset, 0);
                lock(&log)
                    .delete_records_before(second_base, i64::MAX)
                    .unwrap();
            }
        })
        .unwrap();
        assert_eq!(report.swaps_abandoned, 1, "{report:?}");
        assert!(report.segments_rewritten + report.segments_removed > 0);
        let log = lock(&log);
        assert!(log.log_start_offset() >= second_base);
        assert!(
            !files_in(dir.path())
                .iter()
                .any(|f| f.starts_with(&segment_file_name(0, ""))),
            "{:?}",
            files_in(dir.path())
        );
        assert!(!files_in(dir.path()).iter().any(|f| f.contains("cleaned")));
        assert!(!records(&log).is_empty());
    }

    #[test]
    fn a_read_planned_before_a_swap_still_returns_the_old_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), config());
        write_versions(&log, 100, 3, Compression::Lz4);
        seal(&log);
        let slice = lock(&log).read(0, 4096, true, i64::MAX).unwrap().unwrap();
        let before = slice.read().unwrap();
        let report = clean_log(&log, 0, false, NOW_YOUNG, &limits()).unwrap();
        assert!(report.segments_rewritten + report.segments_removed > 0);
        assert_eq!(
            slice.read().unwrap(),
            before,
            "the old inode is still readable"
        );
        assert_ne!(
            lock(&log)
                .read(0, 4096, true, i64::MAX)
                .unwrap()
                .unwrap()
                .read()
                .unwrap(),
            before
        );
    }

    #[test]
    fn compacted_logs_roll_segments_and_only_compact_delete_logs_lose_segments_to_retention() {
        for delete in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let cfg = LogConfig {
                cleanup_delete: delete,
                retention_ms: 1000,
                ..config()
            };
            let log = open(dir.path(), cfg);
            write_versions(&log, 1000, 2, Compression::None);
            assert!(
                lock(&log).segment_count() > 3,
                "compacted logs roll at segment.bytes"
            );
            let deleted = lock(&log).apply_retention(NOW_LATER).unwrap();
            assert_eq!(deleted > 0, delete, "cleanup.policy delete={delete}");
        }
    }

    /// Where a simulated crash stops the cleaning of one segment.
    #[derive(Debug, Clone, Copy)]
    enum CrashPoint {
        /// While writing `B.log.cleaned`: half of it on disk.
        TornCleanedLog,
        /// After the `.cleaned` files are written and fsynced.
        CleanedFilesWritten,
        /// After this many filesystem operations of the swap done under
        /// the lock.
        Swap(usize),
        /// A segment emptied by cleaning: its `.log` unlinked, not yet
        /// its indexes.
        RemovalLogUnlinked,
    }

    /// Runs a pass up to the first segment with something to clean and
    /// stops there as a crash would; returns that segment's base.
    fn clean_until_crash(log: &Mutex<PartitionLog>, crash: CrashPoint, want_empty: bool) -> i64 {
        let Planned::Clean(plan) = plan(log, 0, true, NOW_LATER, &limits()).unwrap() else {
            panic!("nothing to clean");
        };
        let dir = plan.snapshot.dir.clone();
        let mut report = CleanReport::default();
        let mut unreadable = false;
        for segment in &plan.segments {
            let base = segment.base_offset;
            match plan.rewrite(segment, &mut unreadable, &mut report).unwrap() {
                Rewritten::Unchanged => continue,
                Rewritten::Empty if want_empty => {
                    std::fs::remove_file(dir.join(segment_file_name(base, "log"))).unwrap();
                    return base;
                }
                Rewritten::Cleaned(_) if !want_empty => {
                    let cleaned = dir.join(segment_file_name(base, "log.cleaned"));
                    match crash {
                        CrashPoint::TornCleanedLog => {
                            let len = std::fs::metadata(&cleaned).unwrap().len();
                            File::options()
                                .write(true)
                                .open(&cleaned)
                                .unwrap()
                                .set_len(len / 2)
                                .unwrap();
                            for ext in ["index.cleaned", "timeindex.cleaned"] {
                                std::fs::remove_file(dir.join(segment_file_name(base, ext)))
                                    .unwrap();
                            }
                        }
                        CrashPoint::CleanedFilesWritten => {}
                        CrashPoint::Swap(n) => commit_swap_until(&dir, base, n).unwrap(),
                        CrashPoint::RemovalLogUnlinked => unreachable!(),
                    }
                    return base;
                }
                _ => continue,
            }
        }
        panic!("no segment to crash in");
    }

    /// Every `.index` / `.timeindex` file in `dir` whose `.log` exists only
    /// names batch boundaries of that log: an index never describes
    /// another version of the log (opening might not notice).
    fn assert_indexes_match_logs(dir: &Path, context: &str) {
        for name in files_in(dir) {
            let Some((base, ext)) = super::super::segment::parse_segment_file_name(&name) else {
                continue;
            };
            let entry_bytes = match ext {
                "index" => 8,
                "timeindex" => 12,
                _ => continue,
            };
            let Ok(log_bytes) = std::fs::read(dir.join(segment_file_name(base, "log"))) else {
                continue; // no log: the index is deleted on open
            };
            let mut batch_at: BTreeMap<u32, i64> = BTreeMap::new();
            for item in BatchIter::new(&log_bytes, false) {
                let (at, h) = item.unwrap();
                batch_at.insert(at as u32, h.base_offset);
            }
            let raw = std::fs::read(dir.join(&name)).unwrap();
            for entry in raw.chunks_exact(entry_bytes) {
                if ext == "index" {
                    let relative = u32::from_be_bytes(entry[0..4].try_into().unwrap());
                    let position = u32::from_be_bytes(entry[4..8].try_into().unwrap());
                    assert_eq!(
                        batch_at.get(&position),
                        Some(&(base + relative as i64)),
                        "{context}: {name} entry ({relative}, {position}) does not match the log"
                    );
                } else {
                    let relative = u32::from_be_bytes(entry[8..12].try_into().unwrap());
                    assert!(
                        batch_at.values().any(|&o| o == base + relative as i64),
                        "{context}: {name} names offset {} which starts no batch",
                        base + relative as i64
                    );
                }
            }
        }
    }

    /// Writes the same data to a fresh log in `dir`.
    fn crash_fixture(dir: &Path) -> Mutex<PartitionLog> {
        let log = open(dir, config());
        write_versions(&log, 400, 4, Compression::Lz4);
        seal(&log);
        log
    }

    #[test]
    fn a_crash_at_any_step_of_cleaning_leaves_the_old_or_the_new_segment() {
        let mut points = vec![
            (CrashPoint::TornCleanedLog, false),
            (CrashPoint::CleanedFilesWritten, false),
            (CrashPoint::RemovalLogUnlinked, true),
        ];
        points.extend((0..=SWAP_OPERATIONS).map(|n| (CrashPoint::Swap(n), false)));
        for (crash, want_empty) in points {
            // What the log holds before, after a full pass, and after the
            // one segment's swap completed.
            let dir = tempfile::tempdir().unwrap();
            let log = crash_fixture(dir.path());
            let recovery_point = lock(&log).recovery_point();
            let pre = records(&lock(&log));
            let base = clean_until_crash(&log, crash, want_empty);
            drop(log);
            // Past the commit point once the new log took the old one's name.
            let committed = want_empty
                || !dir
                    .path()
                    .join(segment_file_name(base, "log.cleaned"))
                    .exists();
            assert_indexes_match_logs(dir.path(), &format!("{crash:?}, on disk at the crash"));

            let twin_dir = tempfile::tempdir().unwrap();
            let twin = crash_fixture(twin_dir.path());
            let Planned::Clean(plan) = plan(&twin, 0, true, NOW_LATER, &limits()).unwrap() else {
                panic!()
            };
            let segment = plan
                .segments
                .iter()
                .find(|s| s.base_offset == base)
                .unwrap();
            let rewritten = plan
                .rewrite(segment, &mut false, &mut CleanReport::default())
                .unwrap();
            swap(&twin, twin_dir.path(), segment, rewritten).unwrap();
            let post = records(&lock(&twin));
            assert_ne!(pre, post);
            let full = clean_log(&twin, 0, true, NOW_LATER, &limits()).unwrap();
            assert!(full.segments_rewritten + full.segments_removed > 1);
            let fully_clean = records(&lock(&twin));

            // Restart as after a kill: checkpointed recovery point, leftovers on disk.
            let reopened = reopen(dir.path(), config(), recovery_point);
            assert!(
                !files_in(dir.path()).iter().any(|f| f.contains("cleaned")),
                "{crash:?}: leftovers removed: {:?}",
                files_in(dir.path())
            );
            assert_indexes_match_logs(dir.path(), &format!("{crash:?}, after reopening"));
            let got = records(&reopened);
            assert!(
                got == pre || got == post,
                "{crash:?}: neither the old nor the new segment"
            );
            assert_eq!(got == post, committed, "{crash:?}: committed {committed}");
            // Every record that must survive is readable at its offset.
            for r in &fully_clean {
                let slice = reopened.read(r.offset, 1, true, i64::MAX).unwrap().unwrap();
                let set = decode_batch(&slice.read().unwrap(), MAX_DECOMPRESSED_BYTES).unwrap();
                assert!(
                    set.records.iter().any(|x| stored(x) == *r),
                    "{crash:?}: offset {}",
                    r.offset
                );
            }
            // And the next pass finishes the job.
            let log = Mutex::new(reopened);
            clean_log(&log, 0, true, NOW_LATER, &limits()).unwrap();
            assert_eq!(records(&lock(&log)), fully_clean, "{crash:?}");
        }
    }

    #[test]
    fn offset_deltas_shift_across_varint_sizes() {
        // One record: length, attributes, timestamp delta 300 (2 bytes),
        // offset delta 1, key -1, value "v", no headers.
        let mut body = BytesMut::new();
        body.put_u8(0);
        write_varint(&mut body, 300);
        write_varint(&mut body, 1);
        write_varint(&mut body, -1);
        write_varint(&mut body, 1);
        body.put_u8(b'v');
        write_varint(&mut body, 0);
        let mut records = BytesMut::new();
        write_varint(&mut records, body.len() as i64);
        records.put_slice(&body);
        let shifted = shift_offset_deltas(&records, 1, 100_000).unwrap();
        let (len, n) = read_varint(&shifted).unwrap();
        assert_eq!(len as usize, shifted.len() - n);
        let (ts, tn) = read_varlong(&shifted[n + 1..]).unwrap();
        assert_eq!(ts, 300);
        assert_eq!(read_varint(&shifted[n + 1 + tn..]).unwrap().0, 100_001);
        assert!(shift_offset_deltas(&records[..records.len() - 1], 1, 5).is_err());
        assert!(shift_offset_deltas(&records, 2, 5).is_err());
    }
}
