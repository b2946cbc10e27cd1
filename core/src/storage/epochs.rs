//! The leader-epoch cache of one partition: for every leader epoch that
//! wrote to the log, the offset of its first batch. Replication needs it to
//! answer OffsetForLeaderEpoch (KIP-101, KIP-279): a follower asks where
//! the leader's log stopped being written in epoch E and cuts its own log
//! there, so a divergent tail is found by epoch, never by high watermark.
//!
//! It is Kafka's `LeaderEpochFileCache`, persisted in Kafka's
//! `leader-epoch-checkpoint` text format in the partition directory:
//! ```text
//! 0            format version
//! 2            number of entries
//! 0 0          epoch, start offset (one line per entry, oldest first)
//! 3 1520
//! ```
//! Rules:
//! - epochs and start offsets strictly increase from entry to entry;
//!   [`LeaderEpochCache::assign`] of an entry that would break that
//!   replaces the entries it conflicts with, as Kafka's `assign` does (a
//!   new leader's first batch proves the later entries were never
//!   committed);
//! - an epoch keeps the start offset of its first batch: assigning it again
//!   at a later offset changes nothing;
//! - the latest epoch ends at the log end offset, every other one where
//!   the next begins.
//!
//! The cache itself does no I/O; [`write_checkpoint`] and
//! [`read_checkpoint`] move it to and from disk (atomically: temporary
//! file, fsync, rename, fsync of the directory). The partition log
//! (`log.rs`) owns one: it assigns entries on every append and rewrites the
//! checkpoint whenever an entry is added (by a rename without fsync,
//! [`write_checkpoint_unsynced`], so an append never waits for the disk)
//! or the end is cut (durably). On open it trusts a checkpoint only after
//! cutting it to the log's bounds and checking it against the log's first
//! and last batches; otherwise (missing, damaged, or older than the
//! batches a crash kept) it is rebuilt from the batches. Entries are only
//! ever added at the end, so a checkpoint older than the log shows at its
//! last batch.

use std::fs;
use std::io;
use std::path::Path;

use super::checkpoint::write_atomically;

/// File name of the checkpoint in a partition directory (Kafka's).
pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
const VERSION: &str = "0";
/// Most entries a checkpoint file may declare: a leader epoch per leader
/// election, and a partition sees far fewer; a damaged count above it is
/// refused before anything is allocated.
pub const MAX_ENTRIES: usize = 1 << 20;

/// Kafka's "no epoch" (`UNDEFINED_EPOCH`).
pub const UNDEFINED_EPOCH: i32 = -1;
/// Kafka's "no offset" (`UNDEFINED_EPOCH_OFFSET`).
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// One leader epoch and the offset of its first batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// The epochs of one partition's log, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn latest_entry(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    pub fn earliest_entry(&self) -> Option<EpochEntry> {
        self.entries.first().copied()
    }

    /// The epoch of the newest batch the log holds (or of a leader that
    /// started at the log end), `None` before any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Whether [`assign`](Self::assign) would change anything: the one
    /// check on the append path, so it must stay cheap.
    pub fn needs_assign(&self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        match self.entries.last() {
            Some(last) => epoch != last.epoch || start_offset < last.start_offset,
            None => true,
        }
    }

    /// Records that `epoch` wrote a batch at `start_offset`. Returns whether
    /// the cache changed. An entry that does not follow the latest one
    /// (an epoch or a start offset not above it) first removes every entry
    /// it conflicts with: those with an epoch `>= epoch` or a start offset
    /// `>= start_offset`. Negative epochs and offsets (a batch written
    /// without a leader epoch) are ignored.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if !self.needs_assign(epoch, start_offset) {
            return false;
        }
        while let Some(last) = self.entries.last() {
            if last.epoch >= epoch || last.start_offset >= start_offset {
                self.entries.pop();
            } else {
                break;
            }
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// OffsetForLeaderEpoch: the largest epoch `<=` `requested` and the
    /// offset where it ends (the start of the next higher epoch, or
    /// `log_end_offset` for the latest epoch). A requested epoch below
    /// every known one answers with itself and the start of the earliest
    /// epoch (Kafka since KAFKA-7415: the data before it is gone, so a
    /// follower cuts there at most). [`UNDEFINED_EPOCH`] and
    /// [`UNDEFINED_EPOCH_OFFSET`] when the request is undefined, the cache
    /// is empty, or the epoch is above the latest.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested == UNDEFINED_EPOCH {
            return UNDEFINED;
        }
        let Some(latest) = self.entries.last() else {
            return UNDEFINED;
        };
        if latest.epoch == requested {
            return (requested, log_end_offset);
        }
        // The first entry with a higher epoch ends the one asked about.
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        let Some(next) = self.entries.get(higher) else {
            return UNDEFINED;
        };
        match higher.checked_sub(1).map(|i| self.entries[i]) {
            Some(floor) => (floor.epoch, next.start_offset),
            None => (requested, next.start_offset),
        }
    }

    /// The epoch that wrote `offset`: the latest entry starting at or
    /// before it.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        let after = self.entries.partition_point(|e| e.start_offset <= offset);
        after.checked_sub(1).map(|i| self.entries[i].epoch)
    }

    /// The log was cut back to `end_offset`: entries starting at or after
    /// it go. Returns whether anything was removed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        if end_offset < 0 {
            return false;
        }
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log start moved to `start_offset` (retention, DeleteRecords):
    /// entries starting at or before it go, except that the last of them
    /// now starts there. Returns whether anything changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        if start_offset < 0 {
            return false;
        }
        let covered = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        if covered == 0 {
            return false;
        }
        let epoch = self.entries[covered - 1].epoch;
        let unchanged = covered == 1 && self.entries[0].start_offset == start_offset;
        self.entries.drain(..covered - 1);
        self.entries[0] = EpochEntry {
            epoch,
            start_offset,
        };
        !unchanged
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The checkpoint file's text.
    pub fn encode(&self) -> String {
        let mut text = format!("{VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        text
    }

    /// Parses a checkpoint file's text. Entries must be well formed and
    /// strictly increasing in both epoch and start offset.
    pub fn decode(text: &str) -> Result<LeaderEpochCache, String> {
        let mut lines = text.lines();
        if lines.next() != Some(VERSION) {
            return Err("unknown version".into());
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("missing entry count")?;
        if count > MAX_ENTRIES {
            return Err(format!("{count} entries (at most {MAX_ENTRIES})"));
        }
        let mut entries: Vec<EpochEntry> = Vec::new();
        for line in lines {
            let mut parts = line.split(' ');
            let (Some(epoch), Some(offset), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("malformed line {line:?}"));
            };
            let epoch: i32 = epoch.parse().map_err(|_| format!("bad epoch {epoch:?}"))?;
            let start_offset: i64 = offset
                .parse()
                .map_err(|_| format!("bad offset {offset:?}"))?;
            if epoch < 0 || start_offset < 0 {
                return Err(format!("negative entry {line:?}"));
            }
            if let Some(last) = entries.last() {
                if epoch <= last.epoch || start_offset <= last.start_offset {
                    return Err(format!("entry {line:?} does not follow the one before"));
                }
            }
            if entries.len() == count {
                return Err("more entries than declared".into());
            }
            entries.push(EpochEntry {
                epoch,
                start_offset,
            });
        }
        if entries.len() != count {
            return Err("fewer entries than declared".into());
        }
        Ok(LeaderEpochCache { entries })
    }
}

/// Replaces the checkpoint in `dir` with `cache`, atomically and durably.
pub fn write_checkpoint(dir: &Path, cache: &LeaderEpochCache) -> io::Result<()> {
    write_atomically(&dir.join(CHECKPOINT_FILE), cache.encode().as_bytes())
}

/// Replaces the checkpoint in `dir` with `cache` without an fsync (see
/// `checkpoint::replace_unsynced`): for entries added on the append path,
/// which a crash can only leave missing at the end, where opening the log
/// notices it.
pub fn write_checkpoint_unsynced(dir: &Path, cache: &LeaderEpochCache) -> io::Result<()> {
    super::checkpoint::replace_unsynced(&dir.join(CHECKPOINT_FILE), cache.encode().as_bytes())
}

/// Reads the checkpoint in `dir`: `Ok(None)` when there is none,
/// `Err(reason)` when it cannot be used.
pub fn read_checkpoint(dir: &Path) -> Result<Option<LeaderEpochCache>, String> {
    let path = dir.join(CHECKPOINT_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => LeaderEpochCache::decode(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Removes the checkpoint in `dir` (the cache is then rebuilt from the log
/// on the next open) and makes the removal durable.
pub fn remove_checkpoint(dir: &Path) -> io::Result<()> {
    match fs::remove_file(dir.join(CHECKPOINT_FILE)) {
        Ok(()) => fs::File::open(dir)?.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::new();
        for &(epoch, offset) in entries {
            c.assign(epoch, offset);
        }
        c
    }

    fn pairs(c: &LeaderEpochCache) -> Vec<(i32, i64)> {
        c.entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);

    #[test]
    fn an_epoch_keeps_the_offset_of_its_first_batch() {
        let mut c = cache(&[(2, 6)]);
        assert!(!c.assign(2, 10), "a later batch of the same epoch");
        assert!(!c.assign(2, 7));
        assert_eq!(pairs(&c), [(2, 6)]);
        assert!(c.assign(3, 10));
        assert_eq!(pairs(&c), [(2, 6), (3, 10)]);
        assert_eq!(c.latest_epoch(), Some(3));
    }

    #[test]
    fn an_entry_that_breaks_the_order_replaces_the_entries_it_conflicts_with() {
        // A new epoch at the same offset: the older epoch never wrote there.
        assert_eq!(pairs(&cache(&[(2, 9), (3, 9)])), [(3, 9)]);
        // A new epoch at a lower offset: the later entry was cut away.
        assert_eq!(pairs(&cache(&[(2, 6), (3, 5)])), [(3, 5)]);
        // An older epoch again at a later offset (the log went wrong): it
        // replaces every entry of its epoch or later, so the cache stays
        // ordered (Kafka's choice too).
        let c = cache(&[(1, 5), (2, 6), (1, 7)]);
        assert_eq!(pairs(&c), [(1, 7)]);
        // The same epoch at an earlier offset moves it and drops what follows.
        let c = cache(&[(5, 11), (6, 12), (7, 13), (7, 12)]);
        assert_eq!(pairs(&c), [(5, 11), (7, 12)]);
        // Batches without a leader epoch are not recorded.
        let mut c = cache(&[(1, 5)]);
        assert!(!c.assign(-1, 9));
        assert_eq!(pairs(&c), [(1, 5)]);
    }

    #[test]
    fn end_offsets_follow_offset_for_leader_epoch() {
        let c = cache(&[(0, 10), (2, 13), (4, 17)]);
        // The latest epoch ends at the log end.
        assert_eq!(c.end_offset_for(4, 30), (4, 30));
        // An epoch with a successor ends where the successor starts.
        assert_eq!(c.end_offset_for(0, 30), (0, 13));
        assert_eq!(c.end_offset_for(2, 30), (2, 17));
        // An epoch the log never saw: the largest epoch below it, up to
        // the start of the next one.
        assert_eq!(c.end_offset_for(1, 30), (0, 13));
        assert_eq!(c.end_offset_for(3, 30), (2, 17));
        // Below the earliest: the data before it is gone; the earliest
        // start bounds the follower's log.
        let c = cache(&[(5, 11), (6, 12), (7, 13)]);
        assert_eq!(c.end_offset_for(4, 30), (4, 11));
        // Above the latest, undefined, or nothing known: undefined.
        assert_eq!(c.end_offset_for(8, 30), UNDEFINED);
        assert_eq!(c.end_offset_for(UNDEFINED_EPOCH, 30), UNDEFINED);
        assert_eq!(LeaderEpochCache::new().end_offset_for(0, 0), UNDEFINED);
        assert_eq!(
            LeaderEpochCache::new().end_offset_for(UNDEFINED_EPOCH, 73),
            UNDEFINED
        );
        // Epochs need not start at zero.
        assert_eq!(cache(&[(2, 6)]).end_offset_for(2, 7), (2, 7));
    }

    #[test]
    fn the_epoch_of_an_offset_is_the_latest_that_started_at_or_before_it() {
        let c = cache(&[(0, 0), (1, 10), (3, 20)]);
        assert_eq!(c.epoch_for_offset(0), Some(0));
        assert_eq!(c.epoch_for_offset(9), Some(0));
        assert_eq!(c.epoch_for_offset(10), Some(1));
        assert_eq!(c.epoch_for_offset(99), Some(3));
        assert_eq!(cache(&[(1, 10)]).epoch_for_offset(9), None);
    }

    #[test]
    fn truncating_from_the_end_drops_entries_starting_at_or_after_the_cut() {
        let mut c = cache(&[(2, 6), (3, 8), (4, 11)]);
        assert!(c.truncate_from_end(8), "on an epoch boundary");
        assert_eq!(pairs(&c), [(2, 6)]);
        let mut c = cache(&[(2, 6), (3, 8), (4, 11)]);
        assert!(c.truncate_from_end(9), "inside an epoch");
        assert_eq!(pairs(&c), [(2, 6), (3, 8)]);
        assert_eq!(c.latest_epoch(), Some(3));
        assert!(!c.truncate_from_end(100), "past the end");
        assert!(!c.truncate_from_end(UNDEFINED_EPOCH_OFFSET));
        assert_eq!(pairs(&c), [(2, 6), (3, 8)]);
        assert!(c.truncate_from_end(0));
        assert!(c.is_empty());
    }

    #[test]
    fn truncating_from_the_start_moves_the_entry_covering_the_new_start() {
        let base = [(2, 6), (3, 8), (4, 11)];
        let mut c = cache(&base);
        assert!(!c.truncate_from_start(1), "before the first entry");
        assert!(!c.truncate_from_start(6), "at the first entry");
        assert_eq!(pairs(&c), base);
        let mut c = cache(&base);
        assert!(c.truncate_from_start(8), "on a boundary");
        assert_eq!(pairs(&c), [(3, 8), (4, 11)]);
        let mut c = cache(&base);
        assert!(c.truncate_from_start(9), "between boundaries");
        assert_eq!(pairs(&c), [(3, 9), (4, 11)]);
        let mut c = cache(&base);
        assert!(c.truncate_from_start(11));
        assert_eq!(pairs(&c), [(4, 11)]);
        let mut c = cache(&base);
        assert!(c.truncate_from_start(15), "past the last entry");
        assert_eq!(pairs(&c), [(4, 15)]);
        let mut c = cache(&[(0, 0), (1, 7), (2, 10)]);
        assert!(c.truncate_from_start(5));
        assert_eq!(pairs(&c), [(0, 5), (1, 7), (2, 10)]);
        let mut c = LeaderEpochCache::new();
        assert!(!c.truncate_from_start(5));
        assert!(!cache(&base).truncate_from_start(UNDEFINED_EPOCH_OFFSET));
    }

    #[test]
    fn the_checkpoint_round_trips_in_kafkas_format() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_checkpoint(dir.path()), Ok(None));
        let c = cache(&[(0, 0), (3, 1520)]);
        write_checkpoint(dir.path(), &c).unwrap();
        let text = fs::read_to_string(dir.path().join(CHECKPOINT_FILE)).unwrap();
        assert_eq!(text, "0\n2\n0 0\n3 1520\n");
        assert_eq!(read_checkpoint(dir.path()), Ok(Some(c)));
        write_checkpoint(dir.path(), &LeaderEpochCache::new()).unwrap();
        assert_eq!(
            read_checkpoint(dir.path()),
            Ok(Some(LeaderEpochCache::new()))
        );
        remove_checkpoint(dir.path()).unwrap();
        assert_eq!(read_checkpoint(dir.path()), Ok(None));
    }

    #[test]
    fn a_damaged_checkpoint_is_refused() {
        for text in [
            "",
            "1\n0\n",
            "0\n",
            "0\n2\n0 0\n",
            "0\n1\n0 0\n1 5\n",
            "0\n1\n0\n",
            "0\n1\n0 x\n",
            "0\n1\n0 0 0\n",
            "0\n1\n-1 0\n",
            "0\n2\n1 5\n1 9\n",
            "0\n2\n1 5\n2 5\n",
            "0\n2\n2 5\n1 9\n",
            "0\n99999999999\n",
        ] {
            assert!(LeaderEpochCache::decode(text).is_err(), "{text:?}");
        }
    }
}
