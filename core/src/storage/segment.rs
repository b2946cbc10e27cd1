//! One log segment: a `.log` file of record batches plus its sparse indexes.
//!
//! ```text
//! <partition dir>/
//!   00000000000000000000.log        batches, byte-for-byte as produced
//!   00000000000000000000.index      offset index (see `index.rs`)
//!   00000000000000000000.timeindex  time index (see `index.rs`)
//! ```
//! The file name is the base offset (first offset the segment may hold),
//! zero-padded to 20 digits so names sort like offsets.
//!
//! A segment knows nothing about topics, configs or other segments; the
//! partition log (`log.rs`) decides when to roll, delete or truncate, and
//! when a segment is closed: a closed segment's `.log` is not kept open but
//! opened when read, through the process's handle cache (`handles.rs`).

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::batch::{validate_batch, BatchError, BatchHeader, BATCH_HEADER_BYTES, LOG_OVERHEAD};
use super::handles::{self, explain};
use super::index::{OffsetIndex, TimeIndex};

/// Largest a segment file may grow: index positions are 32-bit.
pub const SEGMENT_BYTES_LIMIT: u64 = i32::MAX as u64;

/// Batch bytes ready to be appended: the 61 header bytes as stored (base
/// offset and leader epoch patched) followed by the rest of the batch,
/// usually a slice of the producer's request.
pub struct PreparedBatch {
    pub head: [u8; BATCH_HEADER_BYTES],
    pub body: Bytes,
    pub header: BatchHeader,
}

pub fn segment_file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

/// Parses `00000000000000000042.log` into `42`.
pub fn parse_segment_file_name(name: &str) -> Option<(i64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// What recovery found when it scanned a segment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SegmentRecovery {
    pub valid_bytes: u64,
    pub truncated_bytes: u64,
    /// Why the tail was cut, when it was.
    pub reason: Option<String>,
}

/// A segment's `.log`: held open while the segment is active (appends write
/// to it), opened on demand through the handle cache once it is closed.
enum LogFile {
    Open(Arc<File>),
    Closed,
}

pub struct Segment {
    /// Unique in the process: the handle cache's key.
    id: u64,
    base_offset: i64,
    dir: PathBuf,
    file: LogFile,
    size: u64,
    next_offset: i64,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    first_batch_timestamp: Option<i64>,
    /// When this process created or opened the segment: the basis of
    /// time-based rolling when its first batch has no timestamp.
    opened_ms: i64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index_entry: u64,
    index_interval_bytes: u64,
    flushed_size: u64,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("base_offset", &self.base_offset)
            .field("size", &self.size)
            .field("next_offset", &self.next_offset)
            .finish()
    }
}

fn open_log(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(create)
        .open(path)
        .map_err(|e| explain(e, "opening", path))
}

impl Drop for Segment {
    fn drop(&mut self) {
        if let LogFile::Closed = self.file {
            handles::global().forget(self.id);
        }
    }
}

impl Segment {
    /// Creates a new, empty segment. An existing file with the same name
    /// (left by a crash after a roll) is truncated.
    pub fn create(dir: &Path, base_offset: i64, index_interval_bytes: u64) -> io::Result<Segment> {
        let path = dir.join(segment_file_name(base_offset, "log"));
        let file = open_log(&path, true)?;
        file.set_len(0)?;
        for ext in ["index", "timeindex"] {
            let p = dir.join(segment_file_name(base_offset, ext));
            if p.exists() {
                std::fs::remove_file(p)?;
            }
        }
        Ok(Segment {
            id: handles::next_segment_id(),
            base_offset,
            dir: dir.to_path_buf(),
            file: LogFile::Open(Arc::new(file)),
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            first_batch_timestamp: None,
            opened_ms: wall_clock_ms(),
            offset_index: OffsetIndex::new(),
            time_index: TimeIndex::new(),
            bytes_since_index_entry: 0,
            index_interval_bytes,
            flushed_size: 0,
        })
    }

    /// Opens an existing segment whose contents were flushed (below the
    /// recovery point). Its indexes are loaded if they look sane; only the
    /// batches after the last index entry are walked, without CRC checks.
    /// Falls back to [`Segment::recover`] when anything is off.
    pub fn open_trusted(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u64,
    ) -> io::Result<(Segment, Option<SegmentRecovery>)> {
        let path = dir.join(segment_file_name(base_offset, "log"));
        let file = open_log(&path, false)?;
        let size = file.metadata()?.len();
        let offset_index =
            OffsetIndex::load(&dir.join(segment_file_name(base_offset, "index")), size);
        let mut seg = Segment {
            id: handles::next_segment_id(),
            base_offset,
            dir: dir.to_path_buf(),
            file: LogFile::Open(Arc::new(file)),
            size,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            first_batch_timestamp: None,
            opened_ms: wall_clock_ms(),
            offset_index: OffsetIndex::new(),
            time_index: TimeIndex::new(),
            bytes_since_index_entry: 0,
            index_interval_bytes,
            flushed_size: size,
        };
        let Ok(offset_index) = offset_index else {
            let report = seg.recover()?;
            return Ok((seg, Some(report)));
        };
        // Walk the batches after the last index entry to find the end.
        let start = offset_index
            .entries()
            .last()
            .map(|e| e.position as u64)
            .unwrap_or(0);
        let mut position = start;
        let mut ok = true;
        while position < size {
            match seg.read_header(position) {
                Ok(Some(h)) if position + h.total_bytes() as u64 <= size => {
                    if seg.first_batch_timestamp.is_none() && position == 0 {
                        seg.first_batch_timestamp = Some(h.max_timestamp);
                    }
                    seg.next_offset = h.next_offset();
                    if h.max_timestamp > seg.max_timestamp {
                        seg.max_timestamp = h.max_timestamp;
                        seg.offset_of_max_timestamp = h.base_offset;
                    }
                    position += h.total_bytes() as u64;
                }
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        let max_relative = (seg.next_offset - base_offset).clamp(0, u32::MAX as i64) as u32;
        let time_index = TimeIndex::load(
            &dir.join(segment_file_name(base_offset, "timeindex")),
            max_relative,
        );
        match (ok, time_index) {
            (true, Ok(time_index)) => {
                if let Some(last) = time_index.last() {
                    if last.timestamp > seg.max_timestamp {
                        seg.max_timestamp = last.timestamp;
                        seg.offset_of_max_timestamp = base_offset + last.relative_offset as i64;
                    }
                }
                if seg.first_batch_timestamp.is_none() && size > 0 {
                    seg.first_batch_timestamp = seg.read_header(0)?.map(|h| h.max_timestamp);
                }
                seg.offset_index = offset_index;
                seg.time_index = time_index;
                seg.bytes_since_index_entry = size - start;
                Ok((seg, None))
            }
            _ => {
                let report = seg.recover()?;
                Ok((seg, Some(report)))
            }
        }
    }

    /// Opens a segment that may hold unflushed or damaged data: scans every
    /// batch with its CRC, rebuilds both indexes and truncates the file at
    /// the first batch that is torn or corrupt.
    pub fn open_and_recover(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u64,
    ) -> io::Result<(Segment, SegmentRecovery)> {
        let path = dir.join(segment_file_name(base_offset, "log"));
        let file = open_log(&path, false)?;
        let size = file.metadata()?.len();
        let mut seg = Segment {
            id: handles::next_segment_id(),
            base_offset,
            dir: dir.to_path_buf(),
            file: LogFile::Open(Arc::new(file)),
            size,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            first_batch_timestamp: None,
            opened_ms: wall_clock_ms(),
            offset_index: OffsetIndex::new(),
            time_index: TimeIndex::new(),
            bytes_since_index_entry: 0,
            index_interval_bytes,
            flushed_size: 0,
        };
        let report = seg.recover()?;
        Ok((seg, report))
    }

    fn recover(&mut self) -> io::Result<SegmentRecovery> {
        self.offset_index = OffsetIndex::new();
        self.time_index = TimeIndex::new();
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = self.base_offset;
        self.first_batch_timestamp = None;
        self.bytes_since_index_entry = 0;

        let file = self.handle()?;
        let file_size = file.metadata()?.len();
        const CHUNK: usize = 1 << 20;
        let mut buf = BytesMut::new();
        let mut buf_start: u64 = 0; // file position of buf[0]
        let mut position: u64 = 0;
        let mut reason: Option<String> = None;
        let mut last_offset: Option<i64> = None;
        loop {
            let in_buf = (position - buf_start) as usize;
            // Make sure the whole next batch (or at least its length) is buffered.
            let have = buf.len() - in_buf;
            let need = if have >= LOG_OVERHEAD {
                match BatchHeader::peek_size(&buf[in_buf..]) {
                    Ok((_, total)) => total,
                    Err(e) => {
                        reason = Some(e.to_string());
                        break;
                    }
                }
            } else {
                LOG_OVERHEAD
            };
            if position + need as u64 > file_size {
                if position < file_size {
                    reason = Some(format!(
                        "torn batch at position {position}: needs {need} bytes, {} left",
                        file_size - position
                    ));
                }
                break;
            }
            if have < need {
                // Refill: drop consumed bytes, read at least `need`.
                let _ = buf.split_to(in_buf);
                buf_start = position;
                let want = need.max(CHUNK).min((file_size - position) as usize);
                let old = buf.len();
                buf.resize(want.max(old), 0);
                if want > old {
                    file.read_exact_at(&mut buf[old..want], position + old as u64)?;
                }
                continue;
            }
            match validate_batch(&buf[in_buf..in_buf + need]) {
                Ok(h) => {
                    if let Some(prev) = last_offset {
                        if h.base_offset <= prev {
                            reason = Some(format!(
                                "batch at position {position} has base offset {} not after {prev}",
                                h.base_offset
                            ));
                            break;
                        }
                    } else if h.base_offset < self.base_offset {
                        reason = Some(format!(
                            "first batch offset {} below segment base {}",
                            h.base_offset, self.base_offset
                        ));
                        break;
                    }
                    if h.last_offset() - self.base_offset > u32::MAX as i64 {
                        reason = Some("batch offset too far from segment base".into());
                        break;
                    }
                    last_offset = Some(h.last_offset());
                    self.index_batch(position, &h);
                    position += need as u64;
                }
                Err(e) => {
                    reason = Some(format!("batch at position {position}: {e}"));
                    break;
                }
            }
        }
        let truncated = file_size - position;
        if truncated > 0 {
            file.set_len(position)?;
            file.sync_all()?;
        }
        self.size = position;
        self.flushed_size = position;
        // Rewrite both index files from scratch, so the next start can
        // trust them instead of scanning this segment again.
        for ext in ["index", "timeindex"] {
            let p = self.dir.join(segment_file_name(self.base_offset, ext));
            if p.exists() {
                std::fs::remove_file(p)?;
            }
        }
        self.prepare_flush()?.sync()?;
        Ok(SegmentRecovery {
            valid_bytes: position,
            truncated_bytes: truncated,
            reason: if truncated > 0 { reason } else { None },
        })
    }

    /// Updates in-memory bookkeeping for a batch stored at `position`.
    fn index_batch(&mut self, position: u64, h: &BatchHeader) {
        let relative = (h.base_offset - self.base_offset) as u32;
        if self.first_batch_timestamp.is_none() {
            self.first_batch_timestamp = Some(h.max_timestamp);
        }
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.offset_of_max_timestamp = h.base_offset;
        }
        if self.bytes_since_index_entry >= self.index_interval_bytes && position > 0 {
            self.offset_index.append(relative, position as u32);
            self.time_index.maybe_append(self.max_timestamp, relative);
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += h.total_bytes() as u64;
        self.next_offset = h.next_offset();
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Offset after the last batch, or the base offset when empty.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Largest record timestamp in the segment, -1 when empty.
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// The time the segment's age is judged by (time retention): its
    /// largest record timestamp, or, when no record carries one (message
    /// format v0 data), the time the file was last written, as Kafka does.
    pub fn largest_timestamp(&self) -> io::Result<i64> {
        if self.max_timestamp >= 0 {
            return Ok(self.max_timestamp);
        }
        let path = self.path("log");
        let modified = std::fs::metadata(&path)
            .map_err(|e| explain(e, "reading the modification time of", &path))?
            .modified()?;
        Ok(modified
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0))
    }

    /// How long the segment has existed for time-based rolling
    /// (`segment.ms`), as Kafka measures it: from its first batch's max
    /// timestamp to `incoming_max_timestamp`, or, when the first batch has
    /// no timestamp (message format v0), since this process opened it.
    pub fn age_for_roll_ms(&self, incoming_max_timestamp: i64, now_ms: i64) -> i64 {
        match self.first_batch_timestamp {
            Some(first) if first >= 0 => incoming_max_timestamp.saturating_sub(first),
            _ => now_ms.saturating_sub(self.opened_ms),
        }
    }

    /// `maxTimestamp` of the first batch, used for time-based rolling.
    pub fn first_batch_timestamp(&self) -> Option<i64> {
        self.first_batch_timestamp
    }

    pub fn offset_index_entries(&self) -> usize {
        self.offset_index.len()
    }

    /// The `.log` file: the open handle of an active segment, or a cached
    /// read handle of a closed one (opened if needed).
    pub fn handle(&self) -> io::Result<Arc<File>> {
        match &self.file {
            LogFile::Open(file) => Ok(file.clone()),
            LogFile::Closed => handles::global().get_or_open(self.id, &self.path("log")),
        }
    }

    /// The open `.log` of the active segment, for appends.
    fn writable(&self) -> io::Result<&File> {
        match &self.file {
            LogFile::Open(file) => Ok(file),
            LogFile::Closed => Err(io::Error::other(format!(
                "{} is closed: only the active segment is appended to",
                self.path("log").display()
            ))),
        }
    }

    /// Identifies this segment's contents: a segment whose file is
    /// replaced (by compaction) is a new segment with a new id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Stops holding the `.log` open: the segment is closed (no longer
    /// appended to); reads open it on demand through the handle cache.
    pub fn close_file(&mut self) {
        self.file = LogFile::Closed;
    }

    /// Holds the `.log` open again for appends (the segment became the
    /// active one, e.g. when recovery dropped the segments after it).
    pub fn open_file(&mut self) -> io::Result<()> {
        if let LogFile::Closed = self.file {
            let file = open_log(&self.path("log"), false)?;
            handles::global().forget(self.id);
            self.file = LogFile::Open(Arc::new(file));
        }
        Ok(())
    }

    /// Whether the `.log` is held open (the active segment).
    pub fn is_file_open(&self) -> bool {
        matches!(self.file, LogFile::Open(_))
    }

    /// The partition directory moved (a new topic's directories get their
    /// final names): later opens use the new path. Open handles stay valid.
    pub fn moved_to(&mut self, dir: &Path) {
        self.dir = dir.to_path_buf();
    }

    pub fn has_unflushed_data(&self) -> bool {
        self.flushed_size != self.size
    }

    /// Appends already-validated batches with one vectored write (the batch
    /// bodies are not copied). On any error the file is cut back to its
    /// previous size, so a failed append (e.g. a full disk) leaves no trace.
    pub fn append(&mut self, batches: &[PreparedBatch]) -> io::Result<()> {
        let total: u64 = batches.iter().map(|b| b.header.total_bytes() as u64).sum();
        if self.size + total > SEGMENT_BYTES_LIMIT {
            return Err(io::Error::other("segment would exceed 2 GiB"));
        }
        let mut slices = Vec::with_capacity(batches.len() * 2);
        for b in batches {
            slices.push(IoSlice::new(&b.head));
            slices.push(IoSlice::new(&b.body));
        }
        let file = self.writable()?;
        if let Err(e) = write_all_vectored(file, &mut slices) {
            // Best effort: remove a partial write so the file stays a
            // sequence of whole batches. Recovery would cut it anyway.
            let _ = file.set_len(self.size);
            return Err(e);
        }
        let mut position = self.size;
        for b in batches {
            self.index_batch(position, &b.header);
            position += b.header.total_bytes() as u64;
        }
        self.size = position;
        Ok(())
    }

    /// Reads the header of the batch at `position`, `None` at end of file.
    pub fn read_header(&self, position: u64) -> io::Result<Option<BatchHeader>> {
        if position >= self.size {
            return Ok(None);
        }
        let mut buf = [0u8; BATCH_HEADER_BYTES];
        let n = read_at_most(&*self.handle()?, &mut buf, position)?;
        if n < BATCH_HEADER_BYTES {
            return Ok(None);
        }
        match BatchHeader::parse(&buf) {
            Ok(h) => Ok(Some(h)),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }

    /// Byte position of the first batch whose last offset is `>= offset`,
    /// with that batch's header; `None` if every batch ends before `offset`.
    /// Only batches wholly below `limit_bytes` are considered.
    pub fn find_batch(
        &self,
        offset: i64,
        limit_bytes: u64,
    ) -> io::Result<Option<(u64, BatchHeader)>> {
        let relative = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        let start = self.offset_index.lookup(relative).position as u64;
        let file = self.handle()?;
        let mut scanner = HeaderScanner::new(&file, start, limit_bytes.min(self.size));
        while let Some((position, h)) = scanner.next_header()? {
            if h.last_offset() >= offset {
                return Ok(Some((position, h)));
            }
        }
        Ok(None)
    }

    /// Byte position of the batch holding `offset`, or of the first batch
    /// after it; the segment's size when every batch ends before `offset`.
    /// Reads bounded by an offset end here.
    pub fn position_of(&self, offset: i64) -> io::Result<u64> {
        if offset >= self.next_offset {
            return Ok(self.size);
        }
        Ok(self
            .find_batch(offset, self.size)?
            .map_or(self.size, |(position, _)| position))
    }

    /// The last batch: its position and header; `None` when empty.
    pub fn last_batch(&self) -> io::Result<Option<(u64, BatchHeader)>> {
        if self.is_empty() {
            return Ok(None);
        }
        self.find_batch(self.next_offset - 1, self.size)
    }

    /// Cuts the segment at `position`, which must be a batch boundary: the
    /// batch there and every later one leave the file and both indexes.
    /// The `.log` is cut and fsynced first, then the index files are cut
    /// to the entries that remain and fsynced, so a crash in between
    /// leaves index entries beyond the log, which `open_trusted` refuses
    /// (the segment is then scanned). The file is cut in place: a read
    /// planned before the cut gets a short read, never other bytes, as
    /// long as nothing is appended to this segment again (the log starts a
    /// new segment at the cut). Returns the bytes removed.
    pub fn truncate_at(&mut self, position: u64) -> io::Result<u64> {
        if position >= self.size {
            return Ok(0);
        }
        let cut = self.read_header(position)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: no batch at position {position} to cut at",
                    self.path("log").display()
                ),
            )
        })?;
        let file = match &self.file {
            LogFile::Open(file) => file.clone(),
            LogFile::Closed => Arc::new(
                OpenOptions::new()
                    .write(true)
                    .open(self.path("log"))
                    .map_err(|e| explain(e, "opening", &self.path("log")))?,
            ),
        };
        file.set_len(position)?;
        let removed = self.size - position;
        self.size = position;
        self.flushed_size = self.flushed_size.min(position);
        file.sync_all()?;
        self.flushed_size = position;

        let relative = (cut.base_offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        self.offset_index.truncate_to_position(position as u32);
        self.time_index.truncate_to_offset(relative);
        for (ext, len) in [
            ("index", self.offset_index.persisted_bytes()),
            ("timeindex", self.time_index.persisted_bytes()),
        ] {
            let path = self.path(ext);
            match OpenOptions::new().write(true).open(&path) {
                Ok(f) => {
                    if f.metadata()?.len() > len {
                        f.set_len(len)?;
                        f.sync_all()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(explain(e, "opening", &path)),
            }
        }

        // What the remaining batches say: the time index's last entry holds
        // the largest timestamp up to its batch; the batches after the last
        // offset index entry are read to find the rest.
        if position == 0 {
            self.next_offset = self.base_offset;
            self.max_timestamp = -1;
            self.offset_of_max_timestamp = self.base_offset;
            self.first_batch_timestamp = None;
            self.bytes_since_index_entry = 0;
            self.opened_ms = wall_clock_ms();
            return Ok(removed);
        }
        let (mut max_timestamp, mut offset_of_max) = match self.time_index.last() {
            Some(e) => (e.timestamp, self.base_offset + e.relative_offset as i64),
            None => (-1, self.base_offset),
        };
        let start = self
            .offset_index
            .entries()
            .last()
            .map_or(0, |e| e.position as u64);
        let handle = self.handle()?;
        let mut scanner = HeaderScanner::new(&handle, start, position);
        let mut next_offset = self.base_offset;
        while let Some((_, h)) = scanner.next_header()? {
            next_offset = h.next_offset();
            if h.max_timestamp > max_timestamp {
                max_timestamp = h.max_timestamp;
                offset_of_max = h.base_offset;
            }
        }
        self.next_offset = next_offset;
        self.max_timestamp = max_timestamp;
        self.offset_of_max_timestamp = offset_of_max;
        self.bytes_since_index_entry = position - start;
        Ok(removed)
    }

    /// Calls `f` with the header of every batch whose last offset is
    /// `>= offset`, in order (reads headers only).
    pub fn for_each_header_from(
        &self,
        offset: i64,
        mut f: impl FnMut(&BatchHeader),
    ) -> io::Result<()> {
        let relative = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        let start = self.offset_index.lookup(relative).position as u64;
        let file = self.handle()?;
        let mut scanner = HeaderScanner::new(&file, start, self.size);
        while let Some((_, h)) = scanner.next_header()? {
            if h.last_offset() >= offset {
                f(&h);
            }
        }
        Ok(())
    }

    /// As [`Segment::for_each_header_from`], with the record type of each
    /// control batch (transaction markers) read from its first record.
    pub fn for_each_batch_from(
        &self,
        offset: i64,
        mut f: impl FnMut(&BatchHeader, Option<i16>),
    ) -> io::Result<()> {
        let relative = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        let start = self.offset_index.lookup(relative).position as u64;
        let file = self.handle()?;
        let mut scanner = HeaderScanner::new(&file, start, self.size);
        let mut key = [0u8; super::records::CONTROL_KEY_PREFIX_BYTES];
        while let Some((position, h)) = scanner.next_header()? {
            if h.last_offset() < offset {
                continue;
            }
            let control = if h.is_control() {
                let body = (h.total_bytes() - BATCH_HEADER_BYTES).min(key.len());
                let n = read_at_most(
                    &file,
                    &mut key[..body],
                    position + BATCH_HEADER_BYTES as u64,
                )?;
                super::records::control_record_type(&key[..n])
            } else {
                None
            };
            f(&h, control);
        }
        Ok(())
    }

    /// First batch holding a record with timestamp `>= target`, if any.
    pub fn find_batch_by_timestamp(
        &self,
        target: i64,
        limit_bytes: u64,
    ) -> io::Result<Option<(u64, BatchHeader)>> {
        if self.max_timestamp < target {
            return Ok(None);
        }
        let start = match self.time_index.lookup_before(target) {
            Some(e) => self.offset_index.lookup(e.relative_offset).position as u64,
            None => 0,
        };
        let file = self.handle()?;
        let mut scanner = HeaderScanner::new(&file, start, limit_bytes.min(self.size));
        while let Some((position, h)) = scanner.next_header()? {
            if h.max_timestamp >= target {
                return Ok(Some((position, h)));
            }
        }
        Ok(None)
    }

    /// Reads `len` bytes at `position`.
    pub fn read(&self, position: u64, len: usize) -> io::Result<Bytes> {
        read_bytes(&*self.handle()?, position, len)
    }

    /// Writes pending index entries and fsyncs the log and index files.
    pub fn flush(&mut self) -> io::Result<()> {
        let target = self.prepare_flush()?;
        target.sync()?;
        self.mark_flushed(target.size);
        Ok(())
    }

    /// Writes pending index entries to their files (no fsync) and says what
    /// must be fsynced to make the segment durable up to its current size.
    /// The fsync itself can then run without holding the log.
    pub fn prepare_flush(&mut self) -> io::Result<SegmentFlush> {
        let index = self.path("index");
        let mut idx = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&index)
            .map_err(|e| explain(e, "opening", &index))?;
        self.offset_index.write_pending(&mut idx)?;
        let timeindex = self.path("timeindex");
        let mut tidx = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&timeindex)
            .map_err(|e| explain(e, "opening", &timeindex))?;
        self.time_index.write_pending(&mut tidx)?;
        Ok(SegmentFlush {
            base_offset: self.base_offset,
            size: self.size,
            file: self.handle()?,
            index_files: [idx, tidx],
        })
    }

    /// Records that the segment is durable up to `size` bytes.
    pub fn mark_flushed(&mut self, size: u64) {
        self.flushed_size = self.flushed_size.max(size);
    }

    /// Called when the segment stops being the active one: records its
    /// final largest timestamp in the time index. Flushing is separate.
    pub fn seal(&mut self) {
        if self.max_timestamp >= 0 {
            let relative = (self.offset_of_max_timestamp - self.base_offset) as u32;
            self.time_index.maybe_append(self.max_timestamp, relative);
        }
    }

    /// Removes all of the segment's files.
    pub fn delete_files(&self) -> io::Result<()> {
        for ext in ["log", "index", "timeindex"] {
            match std::fs::remove_file(self.dir.join(segment_file_name(self.base_offset, ext))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Path of one of the segment's files (`log`, `index`, `timeindex`).
    pub fn path(&self, extension: &str) -> PathBuf {
        self.dir
            .join(segment_file_name(self.base_offset, extension))
    }
}

/// Building blocks of the log cleaner's segment swap (see `cleaner.rs`).
impl Segment {
    /// A closed segment over a file the log cleaner wrote and fsynced
    /// (`<base>.log.cleaned`), described by the headers of the batches it
    /// wrote and their positions. No I/O: the indexes are built in memory
    /// and the segment is sealed; [`Segment::write_index_files`] puts them
    /// on disk. The file handle stays valid when the file is renamed.
    pub fn from_cleaned(
        dir: &Path,
        base_offset: i64,
        file: File,
        batches: &[(u64, BatchHeader)],
        index_interval_bytes: u64,
    ) -> Segment {
        let mut seg = Segment {
            id: handles::next_segment_id(),
            base_offset,
            dir: dir.to_path_buf(),
            file: LogFile::Open(Arc::new(file)),
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            first_batch_timestamp: None,
            opened_ms: wall_clock_ms(),
            offset_index: OffsetIndex::new(),
            time_index: TimeIndex::new(),
            bytes_since_index_entry: 0,
            index_interval_bytes,
            flushed_size: 0,
        };
        for (position, header) in batches {
            seg.index_batch(*position, header);
            seg.size = position + header.total_bytes() as u64;
        }
        seg.flushed_size = seg.size;
        seg.seal();
        seg
    }

    /// Writes the whole offset and time indexes to `<base>.index<suffix>`
    /// and `<base>.timeindex<suffix>` (replacing such files) and fsyncs
    /// them. Only for a segment built by [`Segment::from_cleaned`], whose
    /// index entries were never written anywhere.
    pub fn write_index_files(&mut self, suffix: &str) -> io::Result<()> {
        let open = |ext: &str| {
            OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(self.path(&format!("{ext}{suffix}")))
        };
        let mut idx = open("index")?;
        let mut tidx = open("timeindex")?;
        self.offset_index.write_pending(&mut idx)?;
        self.time_index.write_pending(&mut tidx)?;
        idx.sync_all()?;
        tidx.sync_all()?;
        Ok(())
    }
}

/// The fsyncs that make one segment durable up to `size` bytes. Holds its
/// own file handles, so it stays valid if the segment is deleted meanwhile.
pub struct SegmentFlush {
    pub base_offset: i64,
    pub size: u64,
    file: Arc<File>,
    index_files: [File; 2],
}

impl SegmentFlush {
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()?;
        for f in &self.index_files {
            f.sync_data()?;
        }
        Ok(())
    }
}

/// Walks batch headers in a file range with few system calls: reads 16 KiB
/// at a time and parses headers from memory.
struct HeaderScanner<'a> {
    file: &'a File,
    position: u64,
    limit: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> HeaderScanner<'a> {
    fn new(file: &'a File, position: u64, limit: u64) -> Self {
        HeaderScanner {
            file,
            position,
            limit,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    fn next_header(&mut self) -> io::Result<Option<(u64, BatchHeader)>> {
        if self.position + BATCH_HEADER_BYTES as u64 > self.limit {
            return Ok(None);
        }
        let in_buf = self.position.wrapping_sub(self.buf_start) as usize;
        if self.position < self.buf_start || in_buf + BATCH_HEADER_BYTES > self.buf.len() {
            let want = (16 * 1024).min((self.limit - self.position) as usize);
            self.buf.resize(want, 0);
            let n = read_at_most(self.file, &mut self.buf, self.position)?;
            self.buf.truncate(n);
            self.buf_start = self.position;
            if n < BATCH_HEADER_BYTES {
                return Ok(None);
            }
        }
        let at = (self.position - self.buf_start) as usize;
        let h = BatchHeader::parse(&self.buf[at..at + BATCH_HEADER_BYTES])
            .map_err(|e: BatchError| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let position = self.position;
        if position + h.total_bytes() as u64 > self.limit {
            return Ok(None);
        }
        self.position += h.total_bytes() as u64;
        Ok(Some((position, h)))
    }
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn read_at_most(file: &File, buf: &mut [u8], position: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], position + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Reads `len` bytes at `position` into a fresh buffer (short at end of file).
pub fn read_bytes(file: &File, position: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(len);
    let n = read_at_most(file, &mut buf, position)?;
    buf.truncate(n);
    Ok(buf.freeze())
}

fn write_all_vectored(file: &File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    let mut f = file;
    while !slices.is_empty() {
        match f.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::patch_header_prefix;
    use crate::storage::batch::tests::make_batch_at;
    use kafka_protocol::records::Compression;

    pub(crate) fn prepare(raw: &Bytes, base_offset: i64) -> PreparedBatch {
        let mut head = [0u8; BATCH_HEADER_BYTES];
        head.copy_from_slice(&raw[..BATCH_HEADER_BYTES]);
        patch_header_prefix(&mut head, base_offset, 0);
        let mut header = BatchHeader::parse(raw).unwrap();
        header.base_offset = base_offset;
        PreparedBatch {
            head,
            body: raw.slice(BATCH_HEADER_BYTES..),
            header,
        }
    }

    fn fill(seg: &mut Segment, batches: usize, per_batch: usize) -> Vec<(i64, usize)> {
        let mut placed = Vec::new();
        for i in 0..batches {
            let raw = make_batch_at(per_batch, 50, Compression::None, 1000 + i as i64 * 10);
            let base = seg.next_offset();
            seg.append(&[prepare(&raw, base)]).unwrap();
            placed.push((base, raw.len()));
        }
        placed
    }

    #[test]
    fn appended_batches_are_found_by_offset_and_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 100, 256).unwrap();
        fill(&mut seg, 50, 3);
        assert_eq!(seg.next_offset(), 250);
        assert!(
            seg.offset_index_entries() > 5,
            "index should be sparse but present"
        );
        let (pos, h) = seg.find_batch(175, seg.size()).unwrap().unwrap();
        assert_eq!(h.base_offset, 175);
        let bytes = seg.read(pos, h.total_bytes()).unwrap();
        assert_eq!(validate_batch(&bytes).unwrap().base_offset, 175);
        // An offset inside a batch finds that batch.
        assert_eq!(
            seg.find_batch(176, seg.size())
                .unwrap()
                .unwrap()
                .1
                .base_offset,
            175
        );
        assert!(seg.find_batch(250, seg.size()).unwrap().is_none());
        // Batch i has timestamps 1000 + 10i .. +2
        let (_, h) = seg
            .find_batch_by_timestamp(1255, seg.size())
            .unwrap()
            .unwrap();
        assert_eq!(h.base_offset, 100 + 26 * 3);
        assert!(seg
            .find_batch_by_timestamp(99_999, seg.size())
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_flushed_segment_reopens_from_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 0, 256).unwrap();
        fill(&mut seg, 40, 2);
        seg.seal();
        seg.flush().unwrap();
        let (size, next, max_ts) = (seg.size(), seg.next_offset(), seg.max_timestamp());
        drop(seg);
        let (seg, recovery) = Segment::open_trusted(dir.path(), 0, 256).unwrap();
        assert!(recovery.is_none(), "a sane index must be used as is");
        assert_eq!(
            (seg.size(), seg.next_offset(), seg.max_timestamp()),
            (size, next, max_ts)
        );
        assert_eq!(seg.find_batch(33, size).unwrap().unwrap().1.base_offset, 32);
    }

    #[test]
    fn recovery_cuts_a_torn_tail_and_keeps_every_batch_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 0, 256).unwrap();
        let placed = fill(&mut seg, 10, 2);
        let good = seg.size();
        drop(seg);
        let path = dir.path().join(segment_file_name(0, "log"));
        // Append half a batch, as a crash mid-write would leave it.
        let extra = make_batch_at(2, 50, Compression::None, 5);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&extra[..extra.len() / 2]).unwrap();
        drop(f);
        let (seg, report) = Segment::open_and_recover(dir.path(), 0, 256).unwrap();
        assert_eq!(report.valid_bytes, good);
        assert_eq!(report.truncated_bytes, (extra.len() / 2) as u64);
        assert_eq!(seg.next_offset(), placed.last().unwrap().0 + 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        // The rebuilt indexes were written: the next open trusts them.
        drop(seg);
        let (seg, again) = Segment::open_trusted(dir.path(), 0, 256).unwrap();
        assert!(again.is_none(), "no second scan after a recovery");
        assert_eq!(seg.next_offset(), placed.last().unwrap().0 + 2);
    }

    #[test]
    fn recovery_cuts_at_a_corrupted_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 0, 256).unwrap();
        let placed = fill(&mut seg, 10, 2);
        drop(seg);
        let path = dir.path().join(segment_file_name(0, "log"));
        let mut raw = std::fs::read(&path).unwrap();
        // Flip a byte inside the 7th batch's records.
        let seventh: usize = placed[..6].iter().map(|p| p.1).sum();
        raw[seventh + 70] ^= 0xff;
        std::fs::write(&path, &raw).unwrap();
        let (seg, report) = Segment::open_and_recover(dir.path(), 0, 256).unwrap();
        assert_eq!(report.valid_bytes, seventh as u64);
        assert!(report.reason.unwrap().contains("CRC"));
        assert_eq!(seg.next_offset(), 12);
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(segment_file_name(42, "log"), "00000000000000000042.log");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.log"),
            Some((42, "log"))
        );
        assert_eq!(parse_segment_file_name("42.log"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.log"), None);
    }
}
