//! Idempotent-producer state of one partition: for every producer id, its
//! epoch and the metadata of its last five batches, so a retried batch is
//! recognised (and answered with its original offset) and a gap in the
//! sequence numbers is refused.
//!
//! The state is derived from the log: it can always be rebuilt by reading
//! the batch headers (producer id, epoch, base sequence, offsets) of the
//! log. To avoid reading the whole log on every start, it is snapshotted
//! when the log is flushed, into `<offset>.snapshot` next to the segments:
//!
//! ```text
//! offset  size  field
//! 0       2     version (1)
//! 2       4     CRC-32C of everything after this field
//! 6       8     snapshot offset (the log end offset it describes)
//! 14      4     producer count N
//! 18      ...   N producers:
//!                 8  producer id
//!                 2  epoch
//!                 8  last append time (ms, broker clock)
//!                 1  batch count B (<= 5)
//!                 B x (4 first seq, 4 last seq, 8 first offset, 4 last offset delta)
//! ```
//! Version 2 adds, per producer after its batches, the first offset of
//! its open transaction (8 bytes, -1 for none), and after the producers
//! the aborted transactions still in the log:
//!
//! ```text
//!               4  aborted count A
//!               A x (8 producer id, 8 first offset, 8 last offset (the
//!                    ABORT marker), 8 last stable offset after it)
//! ```
//! Version 1 snapshots (no transactions) are still read.
//!
//! On start, the newest snapshot at or below the log end offset is loaded
//! and the batches after it are replayed from their headers (and, for
//! transaction markers, their control record's type).
//!
//! Transactions: a transactional batch opens its producer's transaction at
//! its first offset unless one is open; a COMMIT or ABORT control batch
//! (written by WriteTxnMarkers) closes it. The first offset of the oldest
//! open transaction bounds the last stable offset (what read_committed
//! consumers may read); an aborted transaction is remembered (producer,
//! offsets) so a read_committed fetch can name it and consumers drop its
//! records.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};

use super::batch::BatchHeader;
use super::checkpoint::write_atomically;

/// Batches remembered per producer (Kafka's limit for in-flight requests
/// of an idempotent producer is 5).
pub const BATCHES_PER_PRODUCER: usize = 5;
const SNAPSHOT_VERSION: u16 = 2;
/// Snapshots kept on disk per partition.
const SNAPSHOTS_KEPT: usize = 2;
/// Most producers tracked per partition; the least recently active is
/// forgotten beyond it.
pub const MAX_PRODUCERS_PER_PARTITION: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset_delta: i32,
}

impl BatchMetadata {
    pub fn last_offset(&self) -> i64 {
        self.first_offset + self.last_offset_delta as i64
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub last_append_ms: i64,
    pub batches: VecDeque<BatchMetadata>,
    /// First offset of its open transaction.
    pub txn_first_offset: Option<i64>,
}

/// What a control batch's record says (its key: version, type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
    /// A control type this broker does not know: ends nothing.
    Other(i16),
}

impl ControlType {
    pub fn from_type(t: i16) -> ControlType {
        match t {
            0 => ControlType::Abort,
            1 => ControlType::Commit,
            other => ControlType::Other(other),
        }
    }
}

/// A transaction that was aborted: its records, from `first_offset` to
/// `last_offset` (its ABORT marker), are not for read_committed consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The last stable offset once the marker was written.
    pub last_stable_offset: i64,
}

/// What the state says about an incoming batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Next in sequence (or not from an idempotent producer): append it.
    Append,
    /// Already in the log: answer with the original batch's offsets.
    Duplicate(BatchMetadata),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id}: epoch {epoch} is older than the current epoch {current}")]
    InvalidEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("producer {producer_id}: sequence {first_seq} does not follow {expected}")]
    OutOfOrder {
        producer_id: i64,
        first_seq: i32,
        expected: i32,
    },
    #[error("producer {producer_id} is unknown to this partition and starts at sequence {first_seq}, not 0")]
    UnknownProducer { producer_id: i64, first_seq: i32 },
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

fn batch_last_seq(h: &BatchHeader) -> i32 {
    // Sequences wrap at i32::MAX, like offsets of a producer's batches do.
    ((h.base_sequence as i64 + h.last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32
}

/// Whether a batch takes part in idempotence checks.
pub fn is_idempotent(h: &BatchHeader) -> bool {
    h.producer_id >= 0 && h.base_sequence >= 0 && !h.is_control()
}

/// Whether a batch is transactional data of a producer with no sequence:
/// offsets a group coordinator writes for a transaction (TxnOffsetCommit),
/// as Kafka does. Its epoch is checked and it opens the transaction, but
/// it takes no part in sequence checks.
fn is_unsequenced_transactional(h: &BatchHeader) -> bool {
    h.producer_id >= 0 && h.base_sequence < 0 && h.is_transactional() && !h.is_control()
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
    /// (first offset, producer id) of every open transaction.
    ongoing: BTreeSet<(i64, i64)>,
    /// Aborted transactions in the log, in marker order.
    aborted: VecDeque<AbortedTxn>,
}

impl ProducerState {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Every producer this partition remembers, by id.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(id, e)| (*id, e))
    }

    /// A copy holding only the given producers (for checking a record set
    /// of several batches without touching the real state).
    pub fn subset(&self, ids: impl Iterator<Item = i64>) -> ProducerState {
        let mut producers = HashMap::new();
        for id in ids {
            if let Some(e) = self.producers.get(&id) {
                producers.insert(id, e.clone());
            }
        }
        ProducerState {
            producers,
            ..ProducerState::default()
        }
    }

    /// Checks an incoming batch against the state without changing it.
    pub fn check(&self, h: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        if is_unsequenced_transactional(h) {
            return match self.producers.get(&h.producer_id) {
                Some(entry) if h.producer_epoch < entry.epoch => Err(SequenceError::InvalidEpoch {
                    producer_id: h.producer_id,
                    epoch: h.producer_epoch,
                    current: entry.epoch,
                }),
                _ => Ok(SequenceCheck::Append),
            };
        }
        if !is_idempotent(h) {
            return Ok(SequenceCheck::Append);
        }
        let producer_id = h.producer_id;
        let first_seq = h.base_sequence;
        let Some(entry) = self.producers.get(&producer_id) else {
            return if first_seq == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::UnknownProducer {
                    producer_id,
                    first_seq,
                })
            };
        };
        if h.producer_epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch {
                producer_id,
                epoch: h.producer_epoch,
                current: entry.epoch,
            });
        }
        if h.producer_epoch > entry.epoch {
            // A new epoch starts its sequence over.
            return if first_seq == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    producer_id,
                    first_seq,
                    expected: 0,
                })
            };
        }
        let last_seq = batch_last_seq(h);
        if let Some(original) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(SequenceCheck::Duplicate(*original));
        }
        let expected = entry
            .batches
            .back()
            .map(|b| next_seq(b.last_seq))
            .unwrap_or(0);
        if first_seq != expected {
            return Err(SequenceError::OutOfOrder {
                producer_id,
                first_seq,
                expected,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records a batch that was appended (with its assigned offsets).
    pub fn update(&mut self, h: &BatchHeader, append_ms: i64) {
        let sequenced = is_idempotent(h);
        if !sequenced && !is_unsequenced_transactional(h) {
            return;
        }
        let entry = self.entry(h, append_ms);
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.last_append_ms = entry.last_append_ms.max(append_ms);
        if sequenced {
            entry.batches.push_back(BatchMetadata {
                first_seq: h.base_sequence,
                last_seq: batch_last_seq(h),
                first_offset: h.base_offset,
                last_offset_delta: h.last_offset_delta,
            });
            while entry.batches.len() > BATCHES_PER_PRODUCER {
                entry.batches.pop_front();
            }
        }
        let opens = h.is_transactional() && entry.txn_first_offset.is_none();
        if opens {
            entry.txn_first_offset = Some(h.base_offset);
            self.ongoing.insert((h.base_offset, h.producer_id));
        }
        if self.producers.len() > MAX_PRODUCERS_PER_PARTITION {
            self.evict_oldest();
        }
    }

    /// The entry of `h`'s producer, made at `h`'s epoch if it is new.
    fn entry(&mut self, h: &BatchHeader, append_ms: i64) -> &mut ProducerEntry {
        self.producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                last_append_ms: append_ms,
                batches: VecDeque::new(),
                txn_first_offset: None,
            })
    }

    /// Records a control batch that was appended (with its offset) and
    /// the type its record names: a COMMIT or ABORT marker closes the
    /// producer's open transaction. Returns the aborted transaction an
    /// ABORT closed.
    pub fn update_control(
        &mut self,
        h: &BatchHeader,
        control: ControlType,
        append_ms: i64,
    ) -> Option<AbortedTxn> {
        if h.producer_id < 0 || !matches!(control, ControlType::Abort | ControlType::Commit) {
            return None;
        }
        let entry = self.entry(h, append_ms);
        if h.producer_epoch > entry.epoch {
            // A marker of a newer epoch fences the older one.
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.last_append_ms = entry.last_append_ms.max(append_ms);
        let first_offset = entry.txn_first_offset.take()?;
        self.ongoing.remove(&(first_offset, h.producer_id));
        if control != ControlType::Abort {
            return None;
        }
        let marker = h.base_offset;
        let aborted = AbortedTxn {
            producer_id: h.producer_id,
            first_offset,
            last_offset: marker,
            last_stable_offset: self.first_unstable_offset().unwrap_or(marker + 1),
        };
        self.aborted.push_back(aborted);
        Some(aborted)
    }

    /// The first offset of the oldest open transaction: read_committed
    /// consumers may not read from here on.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.first().map(|(offset, _)| *offset)
    }

    /// The aborted transactions with records in `[from, to)`, oldest
    /// first.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        // Markers are in offset order: skip those below `from` by bisection
        // (a consumer near the end does not walk the whole history).
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted
            .range(start..)
            .filter(|a| a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forgets aborted transactions whose marker is below `log_start`
    /// (retention or DeleteRecords removed them).
    pub fn forget_aborted_before(&mut self, log_start: i64) {
        while self
            .aborted
            .front()
            .is_some_and(|a| a.last_offset < log_start)
        {
            self.aborted.pop_front();
        }
    }

    fn evict_oldest(&mut self) {
        // A producer with an open transaction stays: its transaction still
        // bounds the last stable offset.
        if let Some((&oldest, _)) = self
            .producers
            .iter()
            .filter(|(_, e)| e.txn_first_offset.is_none())
            .min_by_key(|(_, e)| e.last_append_ms)
        {
            self.producers.remove(&oldest);
        }
    }

    /// Forgets producers whose last append is older than `cutoff_ms`
    /// (Kafka's `producer.id.expiration.ms`), except those with an open
    /// transaction.
    pub fn expire(&mut self, cutoff_ms: i64) {
        self.producers
            .retain(|_, e| e.last_append_ms >= cutoff_ms || e.txn_first_offset.is_some());
    }

    pub fn encode(&self, snapshot_offset: i64) -> Vec<u8> {
        let mut body = Vec::with_capacity(12 + self.producers.len() * 64);
        body.extend_from_slice(&snapshot_offset.to_be_bytes());
        body.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.producers[&id];
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.extend_from_slice(&e.last_append_ms.to_be_bytes());
            body.push(e.batches.len() as u8);
            for b in &e.batches {
                body.extend_from_slice(&b.first_seq.to_be_bytes());
                body.extend_from_slice(&b.last_seq.to_be_bytes());
                body.extend_from_slice(&b.first_offset.to_be_bytes());
                body.extend_from_slice(&b.last_offset_delta.to_be_bytes());
            }
            body.extend_from_slice(&e.txn_first_offset.unwrap_or(-1).to_be_bytes());
        }
        body.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for a in &self.aborted {
            body.extend_from_slice(&a.producer_id.to_be_bytes());
            body.extend_from_slice(&a.first_offset.to_be_bytes());
            body.extend_from_slice(&a.last_offset.to_be_bytes());
            body.extend_from_slice(&a.last_stable_offset.to_be_bytes());
        }
        let mut out = Vec::with_capacity(body.len() + 6);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses a snapshot; `None` if it is damaged in any way.
    pub fn decode(raw: &[u8]) -> Option<(i64, ProducerState)> {
        let mut r = Reader { buf: raw };
        let version = r.u16()?;
        if !(1..=SNAPSHOT_VERSION).contains(&version) {
            return None;
        }
        let crc = r.u32()?;
        if crc32c::crc32c(r.buf) != crc {
            return None;
        }
        let offset = r.i64()?;
        let count = r.u32()? as usize;
        // Each producer takes at least 19 bytes: refuse impossible counts
        // before allocating.
        if count > r.buf.len() / 19 + 1 {
            return None;
        }
        let mut producers = HashMap::with_capacity(count);
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let last_append_ms = r.i64()?;
            let n = r.u8()? as usize;
            if n > BATCHES_PER_PRODUCER {
                return None;
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                batches.push_back(BatchMetadata {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: r.i64()?,
                    last_offset_delta: r.i32()?,
                });
            }
            let txn_first_offset = if version >= 2 {
                Some(r.i64()?).filter(|o| *o >= 0)
            } else {
                None
            };
            producers.insert(
                id,
                ProducerEntry {
                    epoch,
                    last_append_ms,
                    batches,
                    txn_first_offset,
                },
            );
        }
        let mut aborted = VecDeque::new();
        if version >= 2 {
            let count = r.u32()? as usize;
            if count > r.buf.len() / 32 {
                return None;
            }
            for _ in 0..count {
                aborted.push_back(AbortedTxn {
                    producer_id: r.i64()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                    last_stable_offset: r.i64()?,
                });
            }
        }
        if !r.buf.is_empty() {
            return None;
        }
        let ongoing = producers
            .iter()
            .filter_map(|(id, e)| Some((e.txn_first_offset?, *id)))
            .collect();
        Some((
            offset,
            ProducerState {
                producers,
                ongoing,
                aborted,
            },
        ))
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.buf.split_first_chunk::<N>()?;
        self.buf = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take::<2>().map(u16::from_be_bytes)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take::<2>().map(i16::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take::<4>().map(i32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take::<8>().map(i64::from_be_bytes)
    }
}

pub fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

/// Snapshot files in `dir`, newest first.
pub fn list_snapshots(dir: &Path) -> io::Result<Vec<(i64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((offset, "snapshot")) = super::segment::parse_segment_file_name(name) {
            found.push((offset, entry.path()));
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(found)
}

/// Writes a snapshot and removes all but the newest few.
pub fn write_snapshot(dir: &Path, offset: i64, state: &ProducerState) -> io::Result<()> {
    write_atomically(&snapshot_path(dir, offset), &state.encode(offset))?;
    prune_snapshots(dir)
}

/// Removes all but the newest few snapshots.
fn prune_snapshots(dir: &Path) -> io::Result<()> {
    for (_, path) in list_snapshots(dir)?.into_iter().skip(SNAPSHOTS_KEPT) {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// A snapshot written and fsynced under a temporary name
/// (`<offset>.snapshot.<n>.tmp`, unique in the process), which takes its
/// place only when [`PendingSnapshot::commit`] renames it. The flush writes
/// it without holding the log; the log commits it under its lock only if
/// the log was not truncated meanwhile, so a snapshot never describes
/// batches that were cut away. A leftover temporary file (a crash before
/// the rename) is removed when the log is opened.
#[derive(Debug, Clone)]
pub struct PendingSnapshot {
    tmp: PathBuf,
    path: PathBuf,
}

impl PendingSnapshot {
    /// Names the snapshot of `offset` in `dir`; nothing is written yet.
    pub fn new(dir: &Path, offset: i64) -> PendingSnapshot {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        PendingSnapshot {
            tmp: dir.join(format!("{offset:020}.snapshot.{n}.tmp")),
            path: snapshot_path(dir, offset),
        }
    }

    /// Writes and fsyncs the temporary file, and prunes older snapshots.
    pub fn write(&self, offset: i64, state: &ProducerState) -> io::Result<()> {
        {
            let mut f = std::fs::File::create(&self.tmp)?;
            std::io::Write::write_all(&mut f, &state.encode(offset))?;
            f.sync_all()?;
        }
        if let Some(dir) = self.path.parent() {
            prune_snapshots(dir)?;
        }
        Ok(())
    }

    /// Puts the snapshot in place. The rename is not made durable: if a
    /// crash loses it, the previous snapshot is used and more of the log
    /// is replayed, which is only slower.
    pub fn commit(&self) -> io::Result<()> {
        std::fs::rename(&self.tmp, &self.path)
    }

    /// Drops the temporary file (the log changed under the flush).
    pub fn discard(&self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Whether `ext` (after a segment-style file name's first dot) is a
/// leftover temporary snapshot or checkpoint.
pub fn is_leftover_tmp(ext: &str) -> bool {
    ext == "tmp" || (ext.starts_with("snapshot.") && ext.ends_with(".tmp"))
}

/// Removes the snapshots above `offset` (the log is being cut there) and
/// makes their removal durable before anything is written after the cut.
pub fn remove_snapshots_above(dir: &Path, offset: i64) -> io::Result<usize> {
    let mut removed = 0;
    for (snapshot_offset, path) in list_snapshots(dir)? {
        if snapshot_offset > offset {
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    if removed > 0 {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(removed)
}

/// Loads the newest valid snapshot at or below `max_offset`. Snapshots
/// beyond it (the log was cut by recovery) or damaged ones are deleted.
pub fn load_snapshot(dir: &Path, max_offset: i64) -> io::Result<Option<(i64, ProducerState)>> {
    for (offset, path) in list_snapshots(dir)? {
        if offset > max_offset {
            std::fs::remove_file(&path)?;
            continue;
        }
        match std::fs::read(&path)
            .ok()
            .and_then(|raw| ProducerState::decode(&raw))
        {
            Some((o, state)) if o == offset => return Ok(Some((offset, state))),
            _ => {
                tracing::warn!(path = %path.display(), "ignoring damaged producer state snapshot");
                std::fs::remove_file(&path)?;
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn sequences_are_checked_and_retries_are_recognised() {
        let mut s = ProducerState::new();
        let first = header(7, 0, 0, 3, 100);
        assert_eq!(s.check(&first), Ok(SequenceCheck::Append));
        s.update(&first, 1);
        // A retry of the same batch is a duplicate of the original offsets.
        let retry = header(7, 0, 0, 3, -1);
        assert_eq!(
            s.check(&retry),
            Ok(SequenceCheck::Duplicate(BatchMetadata {
                first_seq: 0,
                last_seq: 2,
                first_offset: 100,
                last_offset_delta: 2
            }))
        );
        // The next batch must start at sequence 3.
        assert!(matches!(
            s.check(&header(7, 0, 4, 1, -1)),
            Err(SequenceError::OutOfOrder { expected: 3, .. })
        ));
        assert_eq!(s.check(&header(7, 0, 3, 1, -1)), Ok(SequenceCheck::Append));
        // Old epochs are fenced, a new epoch restarts at 0.
        s.update(&header(7, 2, 0, 1, 200), 2);
        assert!(matches!(
            s.check(&header(7, 1, 1, 1, -1)),
            Err(SequenceError::InvalidEpoch { .. })
        ));
        assert!(matches!(
            s.check(&header(7, 3, 5, 1, -1)),
            Err(SequenceError::OutOfOrder { expected: 0, .. })
        ));
        // An unknown producer must start at 0.
        assert!(matches!(
            s.check(&header(8, 0, 10, 1, -1)),
            Err(SequenceError::UnknownProducer { .. })
        ));
        // Non-idempotent batches are not checked.
        assert_eq!(
            s.check(&header(-1, -1, -1, 1, -1)),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerState::new();
        for i in 0..8 {
            s.update(&header(1, 0, i, 1, i as i64), 0);
        }
        assert_eq!(s.get(1).unwrap().batches.len(), 5);
        assert!(matches!(
            s.check(&header(1, 0, 2, 1, -1)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        assert!(matches!(
            s.check(&header(1, 0, 4, 1, -1)),
            Ok(SequenceCheck::Duplicate(_))
        ));
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_detected() {
        let mut s = ProducerState::new();
        for pid in 0..50 {
            for i in 0..3 {
                s.update(
                    &header(pid, 1, i * 10, 10, pid * 100 + i as i64 * 10),
                    1000 + pid,
                );
            }
        }
        let raw = s.encode(4242);
        let (offset, back) = ProducerState::decode(&raw).unwrap();
        assert_eq!((offset, &back), (4242, &s));
        for cut in [0, 5, raw.len() / 2, raw.len() - 1] {
            assert!(ProducerState::decode(&raw[..cut]).is_none());
        }
        let mut flipped = raw.clone();
        flipped[40] ^= 1;
        assert!(ProducerState::decode(&flipped).is_none());
    }

    #[test]
    fn the_newest_usable_snapshot_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ProducerState::new();
        s.update(&header(1, 0, 0, 1, 0), 0);
        write_snapshot(dir.path(), 10, &s).unwrap();
        s.update(&header(1, 0, 1, 1, 1), 0);
        write_snapshot(dir.path(), 20, &s).unwrap();
        write_snapshot(dir.path(), 30, &s).unwrap();
        assert_eq!(
            list_snapshots(dir.path()).unwrap().len(),
            2,
            "older snapshots are pruned"
        );
        // The log was cut back to 25: the snapshot at 30 is unusable.
        let (offset, loaded) = load_snapshot(dir.path(), 25).unwrap().unwrap();
        assert_eq!(offset, 20);
        assert_eq!(loaded.get(1).unwrap().batches.len(), 2);
        assert!(!snapshot_path(dir.path(), 30).exists());
    }

    #[test]
    fn expiry_forgets_idle_producers() {
        let mut s = ProducerState::new();
        s.update(&header(1, 0, 0, 1, 0), 100);
        s.update(&header(2, 0, 0, 1, 1), 900);
        s.expire(500);
        assert!(s.get(1).is_none() && s.get(2).is_some());
    }

    fn txn(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        let mut h = header(pid, epoch, seq, count, base_offset);
        h.attributes = crate::storage::batch::ATTR_TRANSACTIONAL;
        h
    }

    fn marker(pid: i64, epoch: i16, offset: i64) -> BatchHeader {
        let mut h = header(pid, epoch, -1, 1, offset);
        h.attributes =
            crate::storage::batch::ATTR_TRANSACTIONAL | crate::storage::batch::ATTR_CONTROL;
        h
    }

    #[test]
    fn a_transactions_offsets_without_a_sequence_open_it_and_are_fenced_by_epoch() {
        let mut s = ProducerState::new();
        // A group coordinator's TxnOffsetCommit batch: no sequence.
        let offsets = txn(7, 3, -1, 1, 20);
        assert_eq!(s.check(&offsets).unwrap(), SequenceCheck::Append);
        s.update(&offsets, 0);
        assert_eq!(s.first_unstable_offset(), Some(20));
        assert_eq!(s.get(7).unwrap().epoch, 3);
        // A second batch of the same transaction is no duplicate.
        assert_eq!(
            s.check(&txn(7, 3, -1, 1, 21)).unwrap(),
            SequenceCheck::Append
        );
        assert!(matches!(
            s.check(&txn(7, 2, -1, 1, 21)),
            Err(SequenceError::InvalidEpoch { current: 3, .. })
        ));
        assert_eq!(
            s.update_control(&marker(7, 3, 22), ControlType::Commit, 0),
            None
        );
        assert_eq!(s.first_unstable_offset(), None);
    }

    #[test]
    fn transactions_open_at_their_first_batch_and_markers_close_them() {
        let mut s = ProducerState::new();
        assert_eq!(s.first_unstable_offset(), None);
        s.update(&txn(1, 0, 0, 2, 10), 0);
        s.update(&txn(1, 0, 2, 2, 12), 0);
        s.update(&txn(2, 0, 0, 1, 14), 0);
        // A plain idempotent batch opens nothing.
        s.update(&header(3, 0, 0, 1, 15), 0);
        assert_eq!(s.first_unstable_offset(), Some(10));
        assert_eq!(
            s.update_control(&marker(1, 0, 16), ControlType::Commit, 0),
            None
        );
        assert_eq!(s.first_unstable_offset(), Some(14));
        let aborted = s
            .update_control(&marker(2, 0, 17), ControlType::Abort, 0)
            .expect("an aborted transaction");
        assert_eq!(
            aborted,
            AbortedTxn {
                producer_id: 2,
                first_offset: 14,
                last_offset: 17,
                last_stable_offset: 18
            }
        );
        assert_eq!(s.first_unstable_offset(), None);
        // A marker with no open transaction closes nothing.
        assert_eq!(
            s.update_control(&marker(2, 0, 18), ControlType::Abort, 0),
            None
        );
        assert_eq!(s.aborted_between(0, 14), vec![]);
        assert_eq!(s.aborted_between(15, 16), vec![aborted]);
        assert_eq!(s.aborted_between(18, 30), vec![]);
        // A producer's next transaction opens at its next batch.
        s.update(&txn(1, 0, 4, 1, 19), 0);
        assert_eq!(s.first_unstable_offset(), Some(19));
        s.forget_aborted_before(18);
        assert_eq!(s.aborted_between(0, 100), vec![]);
    }

    #[test]
    fn a_producer_with_an_open_transaction_is_neither_expired_nor_evicted() {
        let mut s = ProducerState::new();
        s.update(&txn(1, 0, 0, 1, 0), 100);
        s.update(&header(2, 0, 0, 1, 1), 100);
        s.expire(500);
        assert!(s.get(1).is_some() && s.get(2).is_none());
        assert_eq!(s.first_unstable_offset(), Some(0));
    }

    #[test]
    fn transactions_survive_a_snapshot_and_version_1_snapshots_are_read() {
        let mut s = ProducerState::new();
        s.update(&txn(1, 0, 0, 2, 10), 0);
        s.update(&txn(2, 0, 0, 1, 12), 0);
        s.update_control(&marker(2, 0, 13), ControlType::Abort, 0);
        let (offset, back) = ProducerState::decode(&s.encode(14)).unwrap();
        assert_eq!((offset, &back), (14, &s));
        assert_eq!(back.first_unstable_offset(), Some(10));
        assert_eq!(back.aborted_between(0, 100).len(), 1);

        // Version 1: no transaction fields.
        let mut body = Vec::new();
        body.extend_from_slice(&7i64.to_be_bytes());
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&5i64.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&99i64.to_be_bytes());
        body.push(1);
        for v in [0i32, 0] {
            body.extend_from_slice(&v.to_be_bytes());
        }
        body.extend_from_slice(&6i64.to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes());
        let mut v1 = 1u16.to_be_bytes().to_vec();
        v1.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        v1.extend_from_slice(&body);
        let (offset, old) = ProducerState::decode(&v1).unwrap();
        assert_eq!(offset, 7);
        assert_eq!(old.get(5).unwrap().batches[0].first_offset, 6);
        assert_eq!(old.first_unstable_offset(), None);
    }
}
