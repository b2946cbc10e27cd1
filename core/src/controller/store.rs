//! The metadata quorum's durable state: openraft's log storage
//! ([`LogStore`], a `RaftLogStorage`) and state machine
//! ([`StateMachineStore`], a `RaftStateMachine` over [`MetadataImage`]), in
//! one directory.
//!
//! What it is not: consensus (openraft decides what to append, truncate,
//! purge and apply) or the network.
//!
//! # Files
//!
//! ```text
//! <dir>/.lock                  flock held while a controller uses the dir
//! <dir>/vote.json              the last vote (Raft term + voted-for)
//! <dir>/committed.json         the last committed log id known
//! <dir>/purged.json            the last log id removed from the log
//! <dir>/snapshot.bin           the last snapshot of the state machine
//! <dir>/log/<index:020>.log    log segments, named by their first index
//! ```
//!
//! The three JSON markers and the snapshot are replaced atomically (written
//! to a temp file, fsynced, renamed over the old one, directory fsynced),
//! so each is always the old or the new version.
//!
//! A log segment is a sequence of entries, each framed as
//!
//! ```text
//! 0       4       8
//! +-------+-------+---------------------------+
//! | len   | crc   | payload (len bytes)       |
//! +-------+-------+---------------------------+
//! len: u32 big-endian, payload bytes (at most the entry size limit)
//! crc: CRC-32C of the payload, u32 big-endian
//! payload: the openraft `Entry` as JSON (log id, then blank, membership
//!          or a `MetadataProposal`)
//! ```
//!
//! An append writes its entries with one write and fsyncs the segment before
//! openraft is told they are durable (and so before a vote or commit counts
//! them). Entries are contiguous: a segment's first entry has the index its
//! name says, and each segment starts where the previous one ends.
//! Truncation removes whole later segments first (newest first), then cuts
//! the segment that holds the first removed entry, so a crash in between
//! leaves a prefix. Purging records `purged.json` first, then removes the
//! segments whose entries are all purged.
//!
//! # Recovery
//!
//! On open every segment is read and checked. In the last segment, the first
//! entry whose header or payload does not check out (short, too long, CRC
//! mismatch) and everything after it is cut: an append that was not fsynced
//! was never acknowledged, and a kill can leave any part of it on disk. The
//! same damage in an earlier segment, an entry that checks out but does not
//! decode, or a gap between entries is corruption of acknowledged data: the
//! open fails with an error naming the file and position, because a voter
//! that silently forgets entries it acknowledged can break Raft's safety.
//!
//! The snapshot file is
//!
//! ```text
//! 0         8         12         16         24     28
//! +---------+---------+----------+----------+------+------------+------+
//! | RNLMSNAP| version | meta_len | data_len | crc  | meta JSON  | data |
//! +---------+---------+----------+----------+------+------------+------+
//! version: u32 BE (1); meta_len: u32 BE; data_len: u64 BE;
//! crc: CRC-32C of meta JSON and data; meta: openraft SnapshotMeta;
//! data: MetadataImage::to_snapshot_bytes
//! ```
//!
//! and is written before openraft purges the entries it covers.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File};
use std::io::{self, Cursor, Read, Write};
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use super::image::{MetadataImage, MAX_IMAGE_BYTES};
use super::records::ProposalOutcome;
use super::{NodeId, TypeConfig};

/// Default size at which a new log segment is started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 << 20;

/// Default limit on one log entry's encoded size, on disk and on the wire.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 4 << 20;

const FRAME_HEADER: usize = 8;
const SNAPSHOT_MAGIC: &[u8; 8] = b"RNLMSNAP";
const SNAPSHOT_VERSION: u32 = 1;
const SNAPSHOT_HEADER: usize = 28;
/// Snapshot metadata (membership and ids) is small; this bounds a damaged
/// header's claim.
const MAX_SNAPSHOT_META_BYTES: usize = 1 << 20;

/// How the log store lays out and bounds its files.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// A new segment starts once the active one reaches this size.
    pub segment_bytes: u64,
    /// Largest encoded entry accepted, on append and when read back.
    pub max_entry_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
        }
    }
}

/// A metadata directory that cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is damaged at byte {position}: {detail}; the metadata log cannot be trusted (restore this voter from a peer: remove the directory and let it catch up)", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        detail: String,
    },
    #[error("metadata directory {} is in use by another process", .0.display())]
    Locked(PathBuf),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Locks a mutex, ignoring poisoning: the guarded state is only changed
/// after the I/O it describes succeeded.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `contents`: temp file, fsync, rename, dir fsync.
fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Reads a JSON marker; `None` when it does not exist.
fn read_marker<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: path.to_path_buf(),
                position: 0,
                detail: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(path)(e)),
    }
}

fn write_marker<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    write_atomically(path, &bytes)
}

/// Holds the directory's lock for the store's lifetime.
#[derive(Debug)]
struct DirLock {
    _file: File,
}

fn lock_dir(dir: &Path) -> Result<DirLock, StoreError> {
    let path = dir.join(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_at(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked(dir.to_path_buf())),
        Err(fs::TryLockError::Error(e)) => Err(io_at(&path)(e)),
    }
}

/// Opens (creating it if needed) a metadata directory: the log store and
/// the state machine, recovered from disk. `image` receives every newly
/// applied image.
pub fn open(
    dir: &Path,
    options: StoreOptions,
) -> Result<(LogStore, StateMachineStore), StoreError> {
    fs::create_dir_all(dir.join("log")).map_err(io_at(dir))?;
    let dir_lock = Arc::new(lock_dir(dir)?);
    let log = LogInner::open(dir, options)?;
    let sm = SmShared::open(dir)?;
    Ok((
        LogStore {
            inner: Arc::new(Mutex::new(log)),
            _lock: dir_lock.clone(),
        },
        StateMachineStore {
            shared: Arc::new(sm),
            _lock: dir_lock,
        },
    ))
}

// ===================================================================
// The log
// ===================================================================

type RaftEntry = Entry<TypeConfig>;
type Meta = SnapshotMeta<NodeId, BasicNode>;

#[derive(Debug)]
struct Segment {
    /// Index of the first entry (also in the file name).
    base: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes of whole entries in the file.
    len: u64,
}

/// Where an entry is.
#[derive(Debug, Clone)]
struct Location {
    log_id: LogId<NodeId>,
    segment: u64,
    /// Offset of the frame header.
    position: u64,
    /// Payload bytes.
    len: u32,
}

#[derive(Debug)]
struct LogInner {
    root: PathBuf,
    log_dir: PathBuf,
    options: StoreOptions,
    /// By base index; the last one is the active segment.
    segments: BTreeMap<u64, Segment>,
    entries: BTreeMap<u64, Location>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// Encodes one entry as a frame.
fn encode_entry(entry: &RaftEntry, max_entry_bytes: usize, out: &mut Vec<u8>) -> io::Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    serde_json::to_writer(&mut *out, entry).map_err(io::Error::other)?;
    let len = out.len() - start - FRAME_HEADER;
    if len > max_entry_bytes {
        out.truncate(start);
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "metadata log entry {} is {len} bytes, over the {max_entry_bytes} byte limit",
                entry.log_id.index
            ),
        ));
    }
    let crc = crc32c::crc32c(&out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Why a frame does not check out.
enum FrameError {
    /// Damaged or incomplete: a torn write in the last segment.
    Torn(String),
    /// Checks out but does not decode: never cut.
    Undecodable(String),
}

/// Reads the frame at `position` of `bytes`: the entry and its payload size.
fn decode_frame(
    bytes: &[u8],
    position: usize,
    max_entry_bytes: usize,
) -> Result<(RaftEntry, usize), FrameError> {
    let rest = &bytes[position..];
    if rest.len() < FRAME_HEADER {
        return Err(FrameError::Torn(format!(
            "{} bytes left, less than an entry header",
            rest.len()
        )));
    }
    let len = u32::from_be_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(rest[4..8].try_into().expect("4 bytes"));
    if len > max_entry_bytes {
        return Err(FrameError::Torn(format!(
            "entry length {len} is over the {max_entry_bytes} byte limit"
        )));
    }
    if rest.len() - FRAME_HEADER < len {
        return Err(FrameError::Torn(format!(
            "entry of {len} bytes but only {} present",
            rest.len() - FRAME_HEADER
        )));
    }
    let payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
    if crc32c::crc32c(payload) != crc {
        return Err(FrameError::Torn("CRC mismatch".into()));
    }
    let entry = serde_json::from_slice(payload)
        .map_err(|e| FrameError::Undecodable(format!("entry does not decode: {e}")))?;
    Ok((entry, len))
}

impl LogInner {
    fn open(root: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let log_dir = root.join("log");
        let vote = read_marker(&root.join("vote.json"))?;
        let last_purged: Option<LogId<NodeId>> = read_marker(&root.join("purged.json"))?;
        let committed = match read_marker(&root.join("committed.json")) {
            Ok(c) => c,
            // Optional: without it openraft re-applies from the snapshot
            // once a leader tells it what is committed.
            Err(e) => {
                warn!(error = %e, "ignoring a damaged committed.json");
                None
            }
        };
        let mut bases = Vec::new();
        for dirent in fs::read_dir(&log_dir).map_err(io_at(&log_dir))? {
            let dirent = dirent.map_err(io_at(&log_dir))?;
            let name = dirent.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = name
                .strip_suffix(".log")
                .and_then(|stem| stem.parse::<u64>().ok())
            {
                bases.push(base);
            } else {
                warn!(file = %dirent.path().display(), "ignoring an unknown file in the metadata log directory");
            }
        }
        bases.sort_unstable();
        let mut inner = LogInner {
            root: root.to_path_buf(),
            log_dir,
            options,
            segments: BTreeMap::new(),
            entries: BTreeMap::new(),
            last_purged,
            vote,
            committed,
        };
        let purged_index = inner.last_purged.map(|l| l.index);
        let mut expected_next: Option<u64> = None;
        let count = bases.len();
        for (i, base) in bases.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let path = inner.log_dir.join(segment_name(base));
            let mut file = File::options()
                .read(true)
                .append(true)
                .open(&path)
                .map_err(io_at(&path))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(io_at(&path))?;
            let mut position = 0usize;
            let mut next_index = base;
            let corrupt = |position: usize, detail: String| StoreError::Corrupt {
                path: path.clone(),
                position: position as u64,
                detail,
            };
            while position < bytes.len() {
                match decode_frame(&bytes, position, options.max_entry_bytes) {
                    Ok((entry, len)) => {
                        if entry.log_id.index != next_index {
                            return Err(corrupt(
                                position,
                                format!(
                                    "entry {} where entry {next_index} belongs",
                                    entry.log_id.index
                                ),
                            ));
                        }
                        inner.entries.insert(
                            next_index,
                            Location {
                                log_id: entry.log_id,
                                segment: base,
                                position: position as u64,
                                len: len as u32,
                            },
                        );
                        next_index += 1;
                        position += FRAME_HEADER + len;
                    }
                    Err(FrameError::Torn(detail)) if is_last => {
                        warn!(
                            file = %path.display(),
                            position,
                            cut_bytes = bytes.len() - position,
                            %detail,
                            "cutting a torn tail off the metadata log (an append that was never acknowledged)"
                        );
                        file.set_len(position as u64).map_err(io_at(&path))?;
                        file.sync_all().map_err(io_at(&path))?;
                        bytes.truncate(position);
                    }
                    Err(FrameError::Torn(detail) | FrameError::Undecodable(detail)) => {
                        return Err(corrupt(position, detail));
                    }
                }
            }
            if let Some(expected) = expected_next {
                // A gap is allowed only after a segment that is wholly
                // purged (its removal was cut short by a crash).
                if base != expected && purged_index.is_none_or(|p| expected > p + 1) {
                    return Err(corrupt(
                        0,
                        format!(
                            "segment starts at entry {base}, the previous ends before {expected}"
                        ),
                    ));
                }
            }
            expected_next = Some(next_index);
            inner.segments.insert(
                base,
                Segment {
                    base,
                    path,
                    file: Arc::new(file),
                    len: bytes.len() as u64,
                },
            );
        }
        // Segments whose entries were all purged before a crash.
        if let Some(purged) = inner.last_purged {
            inner
                .remove_purged(purged.index)
                .map_err(io_at(&inner.log_dir))?;
            if let Some((&first, _)) = inner.entries.first_key_value() {
                if first != purged.index + 1 {
                    let path = inner.log_dir.clone();
                    return Err(StoreError::Corrupt {
                        path,
                        position: 0,
                        detail: format!(
                            "the log starts at entry {first} but only entries up to {} were purged",
                            purged.index
                        ),
                    });
                }
            }
        }
        info!(
            dir = %inner.root.display(),
            entries = inner.entries.len(),
            last = ?inner.last_log_id(),
            purged = ?inner.last_purged,
            "opened the metadata log"
        );
        Ok(inner)
    }

    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.entries
            .last_key_value()
            .map(|(_, l)| l.log_id)
            .or(self.last_purged)
    }

    /// Drops entries up to `index` from the index and removes segments that
    /// hold nothing else.
    fn remove_purged(&mut self, index: u64) -> io::Result<()> {
        self.entries = self.entries.split_off(&(index + 1));
        let bases: Vec<u64> = self.segments.keys().copied().collect();
        let mut removed = false;
        for (i, base) in bases.iter().enumerate() {
            // Index one past the segment's last entry.
            let end = match bases.get(i + 1) {
                Some(&next) => next,
                None => self
                    .entries
                    .last_key_value()
                    .filter(|(_, l)| l.segment == *base)
                    .map_or(index + 1, |(&i, _)| i + 1),
            };
            if end > index + 1 {
                break;
            }
            let segment = self.segments.remove(base).expect("listed above");
            fs::remove_file(&segment.path)?;
            removed = true;
        }
        if removed {
            sync_dir(&self.log_dir)?;
        }
        Ok(())
    }

    fn append(&mut self, entries: &[RaftEntry]) -> io::Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if let Some(last) = self.last_log_id() {
            if first.log_id.index != last.index + 1 {
                return Err(io::Error::other(format!(
                    "append of entry {} after entry {} would leave a hole",
                    first.log_id.index, last.index
                )));
            }
        }
        let mut frames = Vec::new();
        let mut sizes = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            if entry.log_id.index != first.log_id.index + i as u64 {
                return Err(io::Error::other("entries to append are not contiguous"));
            }
            let before = frames.len();
            encode_entry(entry, self.options.max_entry_bytes, &mut frames)?;
            sizes.push(frames.len() - before);
        }
        let roll = match self.segments.last_key_value() {
            None => true,
            Some((_, s)) => s.len > 0 && s.len >= self.options.segment_bytes,
        };
        if roll {
            let base = first.log_id.index;
            let path = self.log_dir.join(segment_name(base));
            let file = File::options()
                .create_new(true)
                .read(true)
                .append(true)
                .open(&path)?;
            sync_dir(&self.log_dir)?;
            self.segments.insert(
                base,
                Segment {
                    base,
                    path,
                    file: Arc::new(file),
                    len: 0,
                },
            );
        }
        let segment = self
            .segments
            .last_entry()
            .expect("a segment was just ensured");
        let segment = segment.into_mut();
        let written = (&*segment.file)
            .write_all(&frames)
            .and_then(|()| segment.file.sync_data());
        if let Err(e) = written {
            // Cut back what may have reached the file, so the next append
            // does not follow garbage; recovery would cut it too.
            let _ = segment.file.set_len(segment.len);
            return Err(e);
        }
        let mut position = segment.len;
        for (entry, size) in entries.iter().zip(sizes) {
            self.entries.insert(
                entry.log_id.index,
                Location {
                    log_id: entry.log_id,
                    segment: segment.base,
                    position,
                    len: (size - FRAME_HEADER) as u32,
                },
            );
            position += size as u64;
        }
        segment.len = position;
        Ok(())
    }

    /// Removes entries from `index` on.
    fn truncate(&mut self, index: u64) -> io::Result<()> {
        let Some(location) = self.entries.get(&index).cloned() else {
            return Ok(());
        };
        // Newest segments first, so a crash leaves a prefix of the log.
        let later: Vec<u64> = self
            .segments
            .range(location.segment + 1..)
            .map(|(&b, _)| b)
            .rev()
            .collect();
        for base in &later {
            let segment = self.segments.remove(base).expect("listed above");
            fs::remove_file(&segment.path)?;
        }
        if !later.is_empty() {
            sync_dir(&self.log_dir)?;
        }
        let segment = self
            .segments
            .get_mut(&location.segment)
            .expect("an entry's segment exists");
        segment.file.set_len(location.position)?;
        segment.file.sync_all()?;
        segment.len = location.position;
        self.entries.split_off(&index);
        Ok(())
    }

    fn purge(&mut self, log_id: LogId<NodeId>) -> io::Result<()> {
        if self.last_purged.is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        write_marker(&self.root.join("purged.json"), &log_id)?;
        self.last_purged = Some(log_id);
        self.remove_purged(log_id.index)
    }

    /// What to read for the entries in `range`: file, position, length.
    fn locate(&self, range: (Bound<u64>, Bound<u64>)) -> Vec<(Arc<File>, PathBuf, Location)> {
        self.entries
            .range(range)
            .map(|(_, l)| {
                let s = &self.segments[&l.segment];
                (s.file.clone(), s.path.clone(), l.clone())
            })
            .collect()
    }
}

fn read_entries(
    located: Vec<(Arc<File>, PathBuf, Location)>,
    max_entry_bytes: usize,
) -> io::Result<Vec<RaftEntry>> {
    let mut out = Vec::with_capacity(located.len());
    let mut buf = Vec::new();
    for (file, path, location) in located {
        let len = location.len as usize;
        if len > max_entry_bytes {
            return Err(io::Error::other(format!(
                "{}: entry {} of {len} bytes is over the limit",
                path.display(),
                location.log_id.index
            )));
        }
        buf.resize(FRAME_HEADER + len, 0);
        file.read_exact_at(&mut buf, location.position)?;
        match decode_frame(&buf, 0, max_entry_bytes) {
            Ok((entry, _)) if entry.log_id == location.log_id => out.push(entry),
            Ok((entry, _)) => {
                return Err(io::Error::other(format!(
                    "{}: found entry {} where {} was written",
                    path.display(),
                    entry.log_id,
                    location.log_id
                )))
            }
            Err(FrameError::Torn(d) | FrameError::Undecodable(d)) => {
                return Err(io::Error::other(format!(
                    "{}: entry {} at byte {}: {d}",
                    path.display(),
                    location.log_id.index,
                    location.position
                )))
            }
        }
    }
    Ok(out)
}

/// openraft's log storage (and, cloned, its log reader).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
    _lock: Arc<DirLock>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

/// Runs blocking file I/O off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("metadata store task failed: {e}"))))
}

impl LogStore {
    /// Runs `f` on the log under its lock, on a blocking thread.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut LogInner) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let inner = self.inner.clone();
        blocking(move || f(&mut lock(&inner))).await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<RaftEntry>, StorageError<NodeId>> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        let (located, max) = {
            let inner = lock(&self.inner);
            (inner.locate(bounds), inner.options.max_entry_bytes)
        };
        blocking(move || read_entries(located, max))
            .await
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = lock(&self.inner);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: inner.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let vote = *vote;
        self.with(move |inner| {
            write_marker(&inner.root.join("vote.json"), &vote)?;
            inner.vote = Some(vote);
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(lock(&self.inner).vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.with(move |inner| {
            if inner.committed != committed {
                write_marker(&inner.root.join("committed.json"), &committed)?;
                inner.committed = committed;
            }
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(lock(&self.inner).committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = RaftEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<RaftEntry> = entries.into_iter().collect();
        match self.with(move |inner| inner.append(&entries)).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(&e).into();
                callback.log_io_completed(Err(e));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.with(move |inner| inner.truncate(log_id.index))
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.with(move |inner| inner.purge(log_id))
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

// ===================================================================
// The state machine and its snapshots
// ===================================================================

/// What the state machine holds.
#[derive(Debug)]
struct SmState {
    image: Arc<MetadataImage>,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    /// Meta of the snapshot in `snapshot.bin`, if any.
    snapshot: Option<Meta>,
    /// Distinguishes snapshots built at the same log id.
    snapshot_seq: u64,
}

#[derive(Debug)]
struct SmShared {
    snapshot_path: PathBuf,
    state: Mutex<SmState>,
    /// Serializes writers of `snapshot.bin`.
    snapshot_write: Mutex<()>,
    image_tx: watch::Sender<Arc<MetadataImage>>,
}

fn corrupt_snapshot(path: &Path, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        position: 0,
        detail: detail.into(),
    }
}

/// Reads and checks `snapshot.bin`: its meta and data.
fn read_snapshot_file(path: &Path) -> Result<Option<(Meta, Vec<u8>)>, StoreError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(path)(e)),
    };
    let size = file.metadata().map_err(io_at(path))?.len();
    let mut header = [0u8; SNAPSHOT_HEADER];
    file.read_exact(&mut header)
        .map_err(|_| corrupt_snapshot(path, format!("{size} bytes, shorter than the header")))?;
    if &header[0..8] != SNAPSHOT_MAGIC {
        return Err(corrupt_snapshot(
            path,
            "not a metadata snapshot (bad magic)",
        ));
    }
    let version = u32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != SNAPSHOT_VERSION {
        return Err(corrupt_snapshot(
            path,
            format!("unknown snapshot version {version}"),
        ));
    }
    let meta_len = u32::from_be_bytes(header[12..16].try_into().expect("4 bytes")) as u64;
    let data_len = u64::from_be_bytes(header[16..24].try_into().expect("8 bytes"));
    let crc = u32::from_be_bytes(header[24..28].try_into().expect("4 bytes"));
    if meta_len > MAX_SNAPSHOT_META_BYTES as u64 || data_len > MAX_IMAGE_BYTES as u64 {
        return Err(corrupt_snapshot(
            path,
            format!("declared sizes {meta_len} + {data_len} are over the limits"),
        ));
    }
    if SNAPSHOT_HEADER as u64 + meta_len + data_len != size {
        return Err(corrupt_snapshot(
            path,
            format!("declares {meta_len} + {data_len} bytes but the file has {size}"),
        ));
    }
    let mut body = vec![0u8; (meta_len + data_len) as usize];
    file.read_exact(&mut body).map_err(io_at(path))?;
    if crc32c::crc32c(&body) != crc {
        return Err(corrupt_snapshot(path, "CRC mismatch"));
    }
    let data = body.split_off(meta_len as usize);
    let meta = serde_json::from_slice(&body)
        .map_err(|e| corrupt_snapshot(path, format!("meta does not decode: {e}")))?;
    Ok(Some((meta, data)))
}

fn write_snapshot_file(path: &Path, meta: &Meta, data: &[u8]) -> io::Result<()> {
    let meta_json = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let mut crc = crc32c::crc32c(&meta_json);
    crc = crc32c::crc32c_append(crc, data);
    let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER + meta_json.len() + data.len());
    bytes.extend_from_slice(SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
    bytes.extend_from_slice(&(meta_json.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&(data.len() as u64).to_be_bytes());
    bytes.extend_from_slice(&crc.to_be_bytes());
    bytes.extend_from_slice(&meta_json);
    bytes.extend_from_slice(data);
    write_atomically(path, &bytes)
}

impl SmShared {
    fn open(dir: &Path) -> Result<Self, StoreError> {
        let snapshot_path = dir.join("snapshot.bin");
        let mut state = SmState {
            image: Arc::new(MetadataImage::new()),
            last_applied: None,
            last_membership: StoredMembership::default(),
            snapshot: None,
            snapshot_seq: 0,
        };
        if let Some((meta, data)) = read_snapshot_file(&snapshot_path)? {
            let image = MetadataImage::from_snapshot_bytes(&data)
                .map_err(|e| corrupt_snapshot(&snapshot_path, e.to_string()))?;
            state.image = Arc::new(image);
            state.last_applied = meta.last_log_id;
            state.last_membership = meta.last_membership.clone();
            state.snapshot = Some(meta);
        }
        let (image_tx, _) = watch::channel(state.image.clone());
        Ok(SmShared {
            snapshot_path,
            state: Mutex::new(state),
            snapshot_write: Mutex::new(()),
            image_tx,
        })
    }

    /// Stores a snapshot unless a newer one is already stored; returns
    /// whether it was stored.
    fn store_snapshot(&self, meta: &Meta, data: &[u8]) -> io::Result<bool> {
        let _writer = lock(&self.snapshot_write);
        let current = lock(&self.state).snapshot.clone();
        if current.is_some_and(|c| c.last_log_id > meta.last_log_id) {
            return Ok(false);
        }
        write_snapshot_file(&self.snapshot_path, meta, data)?;
        lock(&self.state).snapshot = Some(meta.clone());
        Ok(true)
    }
}

/// openraft's state machine: the [`MetadataImage`] and its snapshots.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<SmShared>,
    _lock: Arc<DirLock>,
}

impl Debug for StateMachineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore").finish_non_exhaustive()
    }
}

/// Tells whether a store (log or state machine) of a directory is still
/// open somewhere, i.e. whether its directory lock is still held.
#[derive(Debug, Clone)]
pub struct Liveness(std::sync::Weak<DirLock>);

impl Liveness {
    pub fn is_open(&self) -> bool {
        self.0.strong_count() > 0
    }
}

impl StateMachineStore {
    /// Whether this store or its log store is still open.
    pub fn liveness(&self) -> Liveness {
        Liveness(Arc::downgrade(&self._lock))
    }

    /// Follows the applied image: a new value after every applied batch.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.shared.image_tx.subscribe()
    }

    /// The image as of the last applied entry.
    pub fn image(&self) -> Arc<MetadataImage> {
        lock(&self.shared.state).image.clone()
    }
}

/// Builds a snapshot of the image as it was when the builder was made.
pub struct SnapshotBuilder {
    shared: Arc<SmShared>,
    image: Arc<MetadataImage>,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    seq: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let image = self.image.clone();
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.seq),
            None => format!("none-{}", self.seq),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id,
        };
        let shared = self.shared.clone();
        let meta_for_write = meta.clone();
        let data = blocking(move || {
            let data = image.to_snapshot_bytes();
            shared.store_snapshot(&meta_for_write, &data)?;
            Ok(data)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        info!(snapshot = %meta, bytes = data.len(), "built a metadata snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let state = lock(&self.shared.state);
        Ok((state.last_applied, state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ProposalOutcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = RaftEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let mut state = lock(&self.shared.state);
        let state = &mut *state;
        // Copy-on-write: readers holding the previous image keep it; the
        // copy is made once per batch, not per entry.
        let image = Arc::make_mut(&mut state.image);
        for entry in entries {
            let mut outcome = ProposalOutcome {
                log_index: entry.log_id.index,
                outcomes: Vec::new(),
            };
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(proposal) => {
                    outcome.outcomes = proposal.records.iter().map(|r| image.apply(r)).collect();
                }
                EntryPayload::Membership(membership) => {
                    state.last_membership =
                        StoredMembership::new(Some(entry.log_id), membership.clone());
                }
            }
            image.set_offset(entry.log_id.index);
            state.last_applied = Some(entry.log_id);
            replies.push(outcome);
        }
        self.shared.image_tx.send_replace(state.image.clone());
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let mut state = lock(&self.shared.state);
        state.snapshot_seq += 1;
        SnapshotBuilder {
            shared: self.shared.clone(),
            image: state.image.clone(),
            last_applied: state.last_applied,
            last_membership: state.last_membership.clone(),
            seq: state.snapshot_seq,
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let signature = meta.signature();
        let image = MetadataImage::from_snapshot_bytes(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(signature.clone()), &e))?;
        let shared = self.shared.clone();
        let meta_for_write = meta.clone();
        blocking(move || shared.store_snapshot(&meta_for_write, &data))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e))?;
        let image = Arc::new(image);
        {
            let mut state = lock(&self.shared.state);
            state.image = image.clone();
            state.last_applied = meta.last_log_id;
            state.last_membership = meta.last_membership.clone();
        }
        self.shared.image_tx.send_replace(image);
        info!(snapshot = %meta, "installed a metadata snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let shared = self.shared.clone();
        let read = blocking(move || {
            let _writer = lock(&shared.snapshot_write);
            read_snapshot_file(&shared.snapshot_path).map_err(io::Error::other)
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(read.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::storage::RaftLogReaderExt;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, Membership};

    use super::*;
    use crate::controller::records::{MetadataProposal, MetadataRecord, TopicCreated};

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn proposal_entry(term: u64, index: u64, topic: &str) -> RaftEntry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(MetadataProposal {
                records: vec![MetadataRecord::TopicCreated(TopicCreated {
                    name: topic.into(),
                    topic_id: uuid::Uuid::from_u128(index as u128 + 1),
                    configs: Default::default(),
                })],
            }),
        }
    }

    fn membership_entry(index: u64) -> RaftEntry {
        Entry {
            log_id: log_id(1, index),
            payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1u64])], None)),
        }
    }

    /// Appends through the trait and waits for the durability callback.
    async fn append(store: &mut LogStore, entries: Vec<RaftEntry>) {
        let inner = store.clone();
        inner
            .with(move |log| log.append(&entries))
            .await
            .expect("append");
    }

    async fn all_entries(store: &mut LogStore) -> Vec<RaftEntry> {
        store.try_get_log_entries(..).await.unwrap()
    }

    fn small() -> StoreOptions {
        StoreOptions {
            segment_bytes: 400,
            max_entry_bytes: 64 << 10,
        }
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir.join("log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }

    #[tokio::test]
    async fn appended_entries_are_read_back_after_reopen_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<RaftEntry> = std::iter::once(membership_entry(0))
            .chain((1..20).map(|i| proposal_entry(1, i, &format!("t{i}"))))
            .collect();
        {
            let (mut log, _) = open(dir.path(), small()).unwrap();
            for batch in entries.chunks(3) {
                append(&mut log, batch.to_vec()).await;
            }
            assert_eq!(all_entries(&mut log).await, entries);
        }
        assert!(segment_files(dir.path()).len() > 2, "small segments roll");
        let (mut log, _) = open(dir.path(), small()).unwrap();
        assert_eq!(all_entries(&mut log).await, entries);
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 19)));
        assert_eq!(
            log.try_get_log_entries(5..8).await.unwrap(),
            entries[5..8].to_vec()
        );
        // Appends continue where the log ends.
        append(&mut log, vec![proposal_entry(2, 20, "more")]).await;
        assert_eq!(log.get_log_id(20).await.unwrap(), log_id(2, 20));
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_on_open_and_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<RaftEntry> = (0..3).map(|i| proposal_entry(1, i, "t")).collect();
        {
            let (mut log, _) = open(dir.path(), StoreOptions::default()).unwrap();
            append(&mut log, entries.clone()).await;
        }
        let segment = segment_files(dir.path()).pop().unwrap();
        let whole = fs::metadata(&segment).unwrap().len();
        // A kill mid-append: half of a fourth entry.
        let mut frame = Vec::new();
        encode_entry(&proposal_entry(1, 3, "torn"), 1 << 20, &mut frame).unwrap();
        let mut f = File::options().append(true).open(&segment).unwrap();
        f.write_all(&frame[..frame.len() / 2]).unwrap();
        drop(f);

        let (mut log, _) = open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(all_entries(&mut log).await, entries);
        assert_eq!(fs::metadata(&segment).unwrap().len(), whole, "tail cut");
        // The next append lands right after the last whole entry.
        append(&mut log, vec![proposal_entry(1, 3, "after")]).await;
        drop(log);
        let (mut log, _) = open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(all_entries(&mut log).await.len(), 4);
    }

    /// A kill can stop an unacknowledged append after any byte: whatever
    /// prefix of it reached the disk, the log reopens to exactly the
    /// entries that are whole, and appends continue after them.
    #[tokio::test]
    async fn a_kill_after_any_byte_of_an_append_reopens_to_the_whole_entries() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<RaftEntry> = (0..5).map(|i| proposal_entry(1, i, "t")).collect();
        let acknowledged;
        {
            let (mut log, _) = open(dir.path(), StoreOptions::default()).unwrap();
            append(&mut log, entries[..2].to_vec()).await;
            acknowledged = fs::metadata(segment_files(dir.path()).pop().unwrap())
                .unwrap()
                .len();
            append(&mut log, entries[2..].to_vec()).await;
        }
        let segment_name = segment_files(dir.path()).pop().unwrap();
        let full = fs::read(&segment_name).unwrap();
        // Where each entry of the second append ends.
        let mut ends = Vec::new();
        let mut position = acknowledged as usize;
        while position < full.len() {
            let len = u32::from_be_bytes(full[position..position + 4].try_into().unwrap());
            position += FRAME_HEADER + len as usize;
            ends.push(position);
        }
        assert_eq!(ends.len(), 3);
        for cut in acknowledged as usize..=full.len() {
            let crashed = tempfile::tempdir().unwrap();
            fs::create_dir_all(crashed.path().join("log")).unwrap();
            let target = crashed
                .path()
                .join("log")
                .join(segment_name.file_name().unwrap());
            fs::write(&target, &full[..cut]).unwrap();
            let whole = 2 + ends.iter().filter(|&&end| end <= cut).count();
            let (mut log, _) = open(crashed.path(), StoreOptions::default()).unwrap();
            assert_eq!(
                all_entries(&mut log).await,
                entries[..whole].to_vec(),
                "cut at byte {cut}"
            );
            append(&mut log, vec![proposal_entry(2, whole as u64, "next")]).await;
            assert_eq!(all_entries(&mut log).await.len(), whole + 1, "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn a_whole_tail_entry_with_a_bad_crc_is_cut_too() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = open(dir.path(), StoreOptions::default()).unwrap();
            append(
                &mut log,
                (0..3).map(|i| proposal_entry(1, i, "t")).collect(),
            )
            .await;
        }
        let segment = segment_files(dir.path()).pop().unwrap();
        let mut bytes = fs::read(&segment).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        fs::write(&segment, &bytes).unwrap();
        let (mut log, _) = open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(all_entries(&mut log).await.len(), 2);
    }

    #[tokio::test]
    async fn damage_before_the_last_segment_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = open(dir.path(), small()).unwrap();
            for i in 0..10 {
                append(&mut log, vec![proposal_entry(1, i, "t")]).await;
            }
        }
        let first = segment_files(dir.path()).remove(0);
        let mut bytes = fs::read(&first).unwrap();
        bytes[FRAME_HEADER + 2] ^= 0xff;
        fs::write(&first, &bytes).unwrap();
        let err = open(dir.path(), small()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("CRC"), "{err}");
    }

    #[tokio::test]
    async fn a_declared_entry_length_over_the_limit_is_not_allocated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = open(dir.path(), StoreOptions::default()).unwrap();
            append(&mut log, vec![proposal_entry(1, 0, "t")]).await;
        }
        let segment = segment_files(dir.path()).pop().unwrap();
        let mut f = File::options().append(true).open(&segment).unwrap();
        f.write_all(&u32::MAX.to_be_bytes()).unwrap();
        f.write_all(&[0; 4]).unwrap();
        drop(f);
        let (mut log, _) = open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(all_entries(&mut log).await.len(), 1);
    }

    #[tokio::test]
    async fn an_entry_over_the_size_limit_is_refused_on_append() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            segment_bytes: 1 << 20,
            max_entry_bytes: 100,
        };
        let (log, _) = open(dir.path(), options).unwrap();
        let big = proposal_entry(1, 0, &"x".repeat(200));
        let err = log
            .with(move |inner| inner.append(&[big]))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("over the 100 byte limit"), "{err}");
        assert_eq!(lock(&log.inner).last_log_id(), None);
    }

    #[tokio::test]
    async fn the_vote_and_commit_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let vote = Vote::new(7, 2);
        {
            let (mut log, _) = open(dir.path(), StoreOptions::default()).unwrap();
            assert_eq!(log.read_vote().await.unwrap(), None);
            log.save_vote(&vote).await.unwrap();
            log.save_committed(Some(log_id(7, 3))).await.unwrap();
        }
        let (mut log, _) = open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(7, 3)));
        assert!(!dir.path().join("vote.json.tmp").exists());
    }

    #[tokio::test]
    async fn truncation_removes_the_tail_across_segments_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<RaftEntry> = (0..12).map(|i| proposal_entry(1, i, "t")).collect();
        {
            let (mut log, _) = open(dir.path(), small()).unwrap();
            for e in &entries {
                append(&mut log, vec![e.clone()]).await;
            }
            log.truncate(log_id(1, 4)).await.unwrap();
            assert_eq!(all_entries(&mut log).await, entries[..4].to_vec());
            // A new leader's entries replace the truncated ones.
            append(&mut log, vec![proposal_entry(2, 4, "new")]).await;
        }
        let (mut log, _) = open(dir.path(), small()).unwrap();
        let read = all_entries(&mut log).await;
        assert_eq!(read.len(), 5);
        assert_eq!(read[4].log_id, log_id(2, 4));
    }

    #[tokio::test]
    async fn a_snapshot_and_purge_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<RaftEntry> = std::iter::once(membership_entry(0))
            .chain((1..15).map(|i| proposal_entry(1, i, &format!("t{i}"))))
            .collect();
        let image_before;
        {
            let (mut log, mut sm) = open(dir.path(), small()).unwrap();
            for entry in &entries {
                append(&mut log, vec![entry.clone()]).await;
            }
            let outcomes = sm.apply(entries[..10].to_vec()).await.unwrap();
            assert_eq!(outcomes.len(), 10);
            assert!(outcomes[3].all_applied());
            let snapshot = sm
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 9)));
            log.purge(log_id(1, 9)).await.unwrap();
            image_before = sm.image();
            assert_eq!(image_before.topics().count(), 9);
        }
        assert!(
            !segment_files(dir.path())
                .iter()
                .any(|p| p.ends_with(segment_name(0))),
            "fully purged segments are removed"
        );
        let (mut log, mut sm) = open(dir.path(), small()).unwrap();
        // The state machine restarts from the snapshot ...
        assert_eq!(sm.image(), image_before);
        let (applied, membership) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 9)));
        assert_eq!(membership.log_id(), &Some(log_id(1, 0)));
        // ... and the log keeps what was not purged.
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 9)));
        assert_eq!(state.last_log_id, Some(log_id(1, 14)));
        assert_eq!(all_entries(&mut log).await, entries[10..].to_vec());
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id, Some(log_id(1, 9)));
        assert_eq!(
            MetadataImage::from_snapshot_bytes(current.snapshot.get_ref()).unwrap(),
            *image_before
        );
    }

    #[tokio::test]
    async fn purging_everything_then_appending_starts_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = open(dir.path(), StoreOptions::default()).unwrap();
            append(
                &mut log,
                (0..3).map(|i| proposal_entry(1, i, "t")).collect(),
            )
            .await;
            // As after installing a snapshot that is ahead of the log.
            log.purge(log_id(1, 50)).await.unwrap();
            assert_eq!(all_entries(&mut log).await, vec![]);
            assert_eq!(
                log.get_log_state().await.unwrap().last_log_id,
                Some(log_id(1, 50))
            );
            append(&mut log, vec![proposal_entry(1, 51, "t")]).await;
        }
        assert_eq!(
            segment_files(dir.path()),
            vec![dir.path().join("log").join(segment_name(51))]
        );
        let (mut log, _) = open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(all_entries(&mut log).await.len(), 1);
    }

    #[tokio::test]
    async fn a_damaged_snapshot_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_, mut sm) = open(dir.path(), StoreOptions::default()).unwrap();
            sm.apply(vec![membership_entry(0), proposal_entry(1, 1, "t")])
                .await
                .unwrap();
            sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
        }
        let path = dir.path().join("snapshot.bin");
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let err = open(dir.path(), StoreOptions::default()).unwrap_err();
        assert!(err.to_string().contains("snapshot.bin"), "{err}");
    }

    #[tokio::test]
    async fn a_second_opener_of_the_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _held = open(dir.path(), StoreOptions::default()).unwrap();
        assert!(matches!(
            open(dir.path(), StoreOptions::default()),
            Err(StoreError::Locked(_))
        ));
    }

    #[tokio::test]
    async fn applying_publishes_the_new_image_to_watchers() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut sm) = open(dir.path(), StoreOptions::default()).unwrap();
        let mut watch = sm.subscribe();
        sm.apply(vec![proposal_entry(1, 0, "a"), proposal_entry(1, 1, "a")])
            .await
            .map(|outcomes| {
                assert!(outcomes[0].all_applied());
                assert!(!outcomes[1].all_applied(), "the second 'a' is ignored");
            })
            .unwrap();
        assert!(watch.has_changed().unwrap());
        let image = watch.borrow_and_update().clone();
        assert_eq!(image.offset(), 1);
        assert!(image.topic_by_name("a").is_some());
    }

    type Conformance = Suite<TypeConfig, LogStore, StateMachineStore, Builder, tempfile::TempDir>;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
        /// The directory is the guard: removed when the case is done.
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<NodeId>>
        {
            let dir = tempfile::tempdir().unwrap();
            let (log, sm) = open(dir.path(), small()).unwrap();
            Ok((dir, log, sm))
        }
    }

    macro_rules! suite_cases {
        ($($case:ident),* $(,)?) => {
            vec![$((stringify!($case), tokio::spawn(async {
                let (_dir, log, sm) = Builder.build().await?;
                Conformance::$case(log, sm).await
            }))),*]
        };
    }

    /// openraft's own conformance suite for storage implementations: every
    /// case but `get_initial_state_membership_from_log_and_sm`, which
    /// appends entry 1 after purging up to 2 and then entry 3 after 1 (it
    /// treats the log as a map with holes; openraft itself never appends
    /// anything but the entry after the last, and this store refuses a
    /// hole rather than write one).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_passes_openraft_s_storage_suite() {
        let cases = suite_cases![
            last_membership_in_log_initial,
            last_membership_in_log,
            last_membership_in_log_multi_step,
            get_membership_initial,
            get_membership_from_log_and_empty_sm,
            get_membership_from_empty_log_and_sm,
            get_membership_from_log_le_sm_last_applied,
            get_membership_from_log_gt_sm_last_applied_1,
            get_membership_from_log_gt_sm_last_applied_2,
            get_initial_state_without_init,
            get_initial_state_with_state,
            get_initial_state_last_log_gt_sm,
            get_initial_state_last_log_lt_sm,
            get_initial_state_log_ids,
            get_initial_state_re_apply_committed,
            save_vote,
            get_log_entries,
            limited_get_log_entries,
            try_get_log_entry,
            initial_logs,
            get_log_state,
            get_log_id,
            last_id_in_log,
            last_applied_state,
            purge_logs_upto_0,
            purge_logs_upto_5,
            purge_logs_upto_20,
            delete_logs_since_11,
            delete_logs_since_0,
            append_to_log,
            snapshot_meta,
            apply_single,
            apply_multiple,
        ];
        let mut failed = Vec::new();
        for (name, case) in cases {
            match case.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed.push(format!("{name}: {e}")),
                Err(e) => failed.push(format!("{name}: {e}")),
            }
        }
        Conformance::transfer_snapshot(&Builder).await.unwrap();
        assert!(failed.is_empty(), "{failed:#?}");
    }
}
