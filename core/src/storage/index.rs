//! Sparse per-segment indexes: offset → file position (`.index`) and
//! timestamp → offset (`.timeindex`).
//!
//! Entries are kept in memory and appended to their files when the segment is
//! flushed. An index is only trusted on start for segments below the
//! recovery point (which were flushed together with their index); anything
//! else is rebuilt by scanning the log, so a torn index write never matters.
//!
//! ```text
//! .index      entry = 8 bytes, big-endian
//!   0  u32  offset relative to the segment's base offset (batch base offset)
//!   4  u32  byte position of that batch in the .log file
//!
//! .timeindex  entry = 12 bytes, big-endian
//!   0  i64  largest timestamp seen in the segment up to and including the batch
//!   8  u32  offset relative to the segment's base offset (batch base offset)
//! ```
//! Both files are plain arrays of entries, strictly increasing in offset
//! (and, for the time index, in timestamp).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

pub const OFFSET_ENTRY_BYTES: usize = 8;
pub const TIME_ENTRY_BYTES: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// Why an index file on disk cannot be trusted.
#[derive(Debug)]
pub enum IndexLoadError {
    Io(io::Error),
    Corrupt(String),
}

impl From<io::Error> for IndexLoadError {
    fn from(e: io::Error) -> Self {
        IndexLoadError::Io(e)
    }
}

/// In-memory sparse index plus the count of entries already on disk.
#[derive(Debug, Default)]
pub struct OffsetIndex {
    entries: Vec<OffsetEntry>,
    persisted: usize,
}

impl OffsetIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[OffsetEntry] {
        &self.entries
    }

    pub fn append(&mut self, relative_offset: u32, position: u32) {
        if let Some(last) = self.entries.last() {
            debug_assert!(relative_offset > last.relative_offset && position > last.position);
            if relative_offset <= last.relative_offset {
                return;
            }
        }
        self.entries.push(OffsetEntry {
            relative_offset,
            position,
        });
    }

    /// Position of the last indexed batch whose base offset is `<= relative`,
    /// or 0 (segment start) if none is.
    pub fn lookup(&self, relative: u32) -> OffsetEntry {
        let idx = self
            .entries
            .partition_point(|e| e.relative_offset <= relative);
        if idx == 0 {
            OffsetEntry {
                relative_offset: 0,
                position: 0,
            }
        } else {
            self.entries[idx - 1]
        }
    }

    /// Drops entries at or beyond `position` (after the log was truncated).
    /// The file keeps its entries until it is cut to [`Self::persisted_bytes`].
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(keep);
    }

    /// Bytes of the entries written to the file and still in the index.
    pub fn persisted_bytes(&self) -> u64 {
        (self.persisted * OFFSET_ENTRY_BYTES) as u64
    }

    /// Appends entries not yet on disk to `file` (opened for append).
    pub fn write_pending(&mut self, file: &mut File) -> io::Result<()> {
        if self.persisted == self.entries.len() {
            return Ok(());
        }
        let mut buf =
            Vec::with_capacity((self.entries.len() - self.persisted) * OFFSET_ENTRY_BYTES);
        for e in &self.entries[self.persisted..] {
            buf.extend_from_slice(&e.relative_offset.to_be_bytes());
            buf.extend_from_slice(&e.position.to_be_bytes());
        }
        file.write_all(&buf)?;
        self.persisted = self.entries.len();
        Ok(())
    }

    /// Loads and sanity-checks an index file against the size of its log.
    pub fn load(path: &Path, log_bytes: u64) -> Result<OffsetIndex, IndexLoadError> {
        let mut raw = Vec::new();
        File::open(path)?.read_to_end(&mut raw)?;
        if raw.len() % OFFSET_ENTRY_BYTES != 0 {
            return Err(IndexLoadError::Corrupt(format!(
                "size {} is not a multiple of {OFFSET_ENTRY_BYTES}",
                raw.len()
            )));
        }
        let mut index = OffsetIndex::new();
        for chunk in raw.chunks_exact(OFFSET_ENTRY_BYTES) {
            let relative_offset = u32::from_be_bytes(chunk[0..4].try_into().expect("4 bytes"));
            let position = u32::from_be_bytes(chunk[4..8].try_into().expect("4 bytes"));
            if let Some(last) = index.entries.last() {
                if relative_offset <= last.relative_offset || position <= last.position {
                    return Err(IndexLoadError::Corrupt("entries not increasing".into()));
                }
            }
            if position as u64 >= log_bytes {
                return Err(IndexLoadError::Corrupt(format!(
                    "entry position {position} beyond log size {log_bytes}"
                )));
            }
            index.entries.push(OffsetEntry {
                relative_offset,
                position,
            });
        }
        index.persisted = index.entries.len();
        Ok(index)
    }
}

/// In-memory sparse time index plus the count of entries already on disk.
#[derive(Debug, Default)]
pub struct TimeIndex {
    entries: Vec<TimeEntry>,
    persisted: usize,
}

impl TimeIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn last(&self) -> Option<TimeEntry> {
        self.entries.last().copied()
    }

    /// Records that the segment's largest timestamp up to the batch at
    /// `relative_offset` is `timestamp`; ignored unless it grows.
    pub fn maybe_append(&mut self, timestamp: i64, relative_offset: u32) {
        match self.entries.last() {
            Some(last)
                if timestamp <= last.timestamp || relative_offset <= last.relative_offset => {}
            _ => self.entries.push(TimeEntry {
                timestamp,
                relative_offset,
            }),
        }
    }

    /// The last entry whose timestamp is strictly below `target`: every
    /// batch before (and including) its offset has only older records, so a
    /// search for `target` may start there. `None` means search from the
    /// segment start.
    pub fn lookup_before(&self, target: i64) -> Option<TimeEntry> {
        let idx = self.entries.partition_point(|e| e.timestamp < target);
        if idx == 0 {
            None
        } else {
            Some(self.entries[idx - 1])
        }
    }

    /// Drops entries at or beyond `relative_offset`. The file keeps its
    /// entries until it is cut to [`Self::persisted_bytes`].
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = self
            .entries
            .partition_point(|e| e.relative_offset < relative_offset);
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(keep);
    }

    /// Bytes of the entries written to the file and still in the index.
    pub fn persisted_bytes(&self) -> u64 {
        (self.persisted * TIME_ENTRY_BYTES) as u64
    }

    pub fn write_pending(&mut self, file: &mut File) -> io::Result<()> {
        if self.persisted == self.entries.len() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity((self.entries.len() - self.persisted) * TIME_ENTRY_BYTES);
        for e in &self.entries[self.persisted..] {
            buf.extend_from_slice(&e.timestamp.to_be_bytes());
            buf.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        file.write_all(&buf)?;
        self.persisted = self.entries.len();
        Ok(())
    }

    /// Loads and sanity-checks a time index file. `max_relative` bounds the
    /// offsets it may mention (the segment's record count).
    pub fn load(path: &Path, max_relative: u32) -> Result<TimeIndex, IndexLoadError> {
        let mut raw = Vec::new();
        File::open(path)?.read_to_end(&mut raw)?;
        if raw.len() % TIME_ENTRY_BYTES != 0 {
            return Err(IndexLoadError::Corrupt(format!(
                "size {} is not a multiple of {TIME_ENTRY_BYTES}",
                raw.len()
            )));
        }
        let mut index = TimeIndex::new();
        for chunk in raw.chunks_exact(TIME_ENTRY_BYTES) {
            let timestamp = i64::from_be_bytes(chunk[0..8].try_into().expect("8 bytes"));
            let relative_offset = u32::from_be_bytes(chunk[8..12].try_into().expect("4 bytes"));
            if let Some(last) = index.entries.last() {
                if timestamp <= last.timestamp || relative_offset <= last.relative_offset {
                    return Err(IndexLoadError::Corrupt("entries not increasing".into()));
                }
            }
            if relative_offset > max_relative {
                return Err(IndexLoadError::Corrupt("entry beyond the segment".into()));
            }
            index.entries.push(TimeEntry {
                timestamp,
                relative_offset,
            });
        }
        index.persisted = index.entries.len();
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_finds_the_last_entry_at_or_before_the_target() {
        let mut idx = OffsetIndex::new();
        idx.append(10, 4096);
        idx.append(20, 8192);
        assert_eq!(idx.lookup(5).position, 0);
        assert_eq!(idx.lookup(10).position, 4096);
        assert_eq!(idx.lookup(19).position, 4096);
        assert_eq!(idx.lookup(1000).position, 8192);
    }

    #[test]
    fn an_index_survives_a_write_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = OffsetIndex::new();
        idx.append(1, 100);
        idx.append(5, 900);
        let mut f = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        idx.write_pending(&mut f).unwrap();
        idx.append(9, 2000);
        idx.write_pending(&mut f).unwrap();
        let loaded = OffsetIndex::load(&path, 3000).unwrap();
        assert_eq!(loaded.entries(), idx.entries());
    }

    #[test]
    fn a_torn_or_inconsistent_index_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        std::fs::write(&path, [0u8; 12]).unwrap();
        assert!(OffsetIndex::load(&path, 100).is_err());
        let mut raw = Vec::new();
        raw.extend_from_slice(&1u32.to_be_bytes());
        raw.extend_from_slice(&500u32.to_be_bytes());
        std::fs::write(&path, &raw).unwrap();
        assert!(
            OffsetIndex::load(&path, 100).is_err(),
            "position beyond the log"
        );
    }

    #[test]
    fn time_lookup_returns_the_last_entry_strictly_older_than_the_target() {
        let mut idx = TimeIndex::new();
        idx.maybe_append(100, 0);
        idx.maybe_append(100, 3); // not growing: ignored
        idx.maybe_append(200, 5);
        idx.maybe_append(300, 9);
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.lookup_before(50), None);
        assert_eq!(idx.lookup_before(100), None);
        assert_eq!(idx.lookup_before(101).unwrap().relative_offset, 0);
        assert_eq!(idx.lookup_before(300).unwrap().relative_offset, 5);
    }
}
