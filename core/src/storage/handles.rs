//! Open files: the process-wide cache of read handles for closed segments,
//! the open-file limit, and errors that say which limit to raise.
//!
//! A partition keeps its active segment's `.log` open (every append writes
//! to it). A closed segment's `.log` is opened when it is read and its handle
//! kept in [`HandleCache`], a small LRU shared by all partitions, so a data
//! directory with many segments needs about one descriptor per partition plus
//! the cache's capacity, not one per segment. A handle evicted while a read
//! still holds it (a fetch reads outside the partition lock through an
//! `Arc<File>`) stays open until that read drops it.
//!
//! Entries are keyed by a segment's id ([`next_segment_id`]), never by path:
//! a segment whose file is replaced (compaction's swap) is a new segment
//! with a new id, and a dropped segment forgets its entry.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tracing::info;

/// Read handles kept open when nothing says otherwise.
pub const DEFAULT_CAPACITY: usize = 256;

/// A unique id for a new segment (for the cache's keys).
pub fn next_segment_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The cache every segment of this process uses.
pub fn global() -> &'static HandleCache {
    static CACHE: OnceLock<HandleCache> = OnceLock::new();
    CACHE.get_or_init(|| HandleCache::new(DEFAULT_CAPACITY))
}

/// A bounded LRU of open read handles, by segment id.
pub struct HandleCache {
    capacity: AtomicUsize,
    inner: Mutex<Entries>,
    opened: AtomicU64,
}

#[derive(Default)]
struct Entries {
    /// id -> (handle, last use)
    by_id: HashMap<u64, (Arc<File>, u64)>,
    /// last use -> id, oldest first
    by_use: BTreeMap<u64, u64>,
    clock: u64,
}

impl Entries {
    fn touch(&mut self, id: u64) -> Option<Arc<File>> {
        self.clock += 1;
        let clock = self.clock;
        let (file, used) = self.by_id.get_mut(&id)?;
        self.by_use.remove(used);
        *used = clock;
        self.by_use.insert(clock, id);
        Some(file.clone())
    }

    fn remove(&mut self, id: u64) {
        if let Some((_, used)) = self.by_id.remove(&id) {
            self.by_use.remove(&used);
        }
    }

    fn shrink_to(&mut self, capacity: usize) {
        while self.by_id.len() > capacity {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            self.by_id.remove(&oldest);
        }
    }
}

impl HandleCache {
    pub fn new(capacity: usize) -> HandleCache {
        HandleCache {
            capacity: AtomicUsize::new(capacity.max(1)),
            inner: Mutex::new(Entries::default()),
            opened: AtomicU64::new(0),
        }
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        // The map stays consistent whatever panicked while it was held.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The handle of segment `id`, opening `path` read-only if it is not
    /// cached. The file is opened without holding the cache's lock.
    pub fn get_or_open(&self, id: u64, path: &Path) -> io::Result<Arc<File>> {
        if let Some(file) = self.entries().touch(id) {
            return Ok(file);
        }
        let file = Arc::new(File::open(path).map_err(|e| explain(e, "opening", path))?);
        self.opened.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries();
        if let Some(raced) = entries.touch(id) {
            return Ok(raced);
        }
        entries.clock += 1;
        let clock = entries.clock;
        entries.by_id.insert(id, (file.clone(), clock));
        entries.by_use.insert(clock, id);
        let capacity = self.capacity.load(Ordering::Relaxed);
        entries.shrink_to(capacity);
        Ok(file)
    }

    /// Drops segment `id`'s handle (the segment is gone or replaced).
    pub fn forget(&self, id: u64) {
        self.entries().remove(id);
    }

    pub fn set_capacity(&self, capacity: usize) {
        let capacity = capacity.max(1);
        self.capacity.store(capacity, Ordering::Relaxed);
        self.entries().shrink_to(capacity);
    }

    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Handles held now.
    pub fn len(&self) -> usize {
        self.entries().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Files opened since the start (misses).
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

/// The process's open-file limit (soft, hard), from `getrlimit`.
pub fn open_file_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Raises the soft open-file limit to the hard limit, as Kafka's and
/// Redpanda's packaging do (a broker holds a descriptor per partition and
/// per connection; distributions default the soft limit to 1024). Returns
/// the (old, new) soft limit.
pub fn raise_open_file_limit() -> io::Result<(u64, u64)> {
    let (soft, hard) = open_file_limit()?;
    // An unlimited hard limit still stops at the kernel's fs.nr_open.
    let target = if hard == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(soft)
    } else {
        hard
    };
    if soft >= target {
        return Ok((soft, soft));
    }
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    info!(
        from = soft,
        to = target,
        "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"
    );
    Ok((soft, target))
}

/// [`explain`] for "too many open files" only; other errors (and errors
/// already explained) are returned as they are. For a whole operation on a
/// path whose inner steps may not name their files.
pub fn explain_if_out_of_files(e: io::Error, doing: &str, path: &Path) -> io::Error {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => explain(e, doing, path),
        _ => e,
    }
}

/// Turns "too many open files" into an error that names the file and the
/// limit to raise; other errors get the file's path. `doing` is e.g.
/// "opening".
pub fn explain(e: io::Error, doing: &str, path: &Path) -> io::Error {
    let kind = e.kind();
    let message = match e.raw_os_error() {
        Some(libc::EMFILE) => {
            let limit = open_file_limit()
                .map(|(soft, hard)| format!("soft {soft}, hard {hard}"))
                .unwrap_or_else(|_| "unknown".into());
            format!(
                "{doing} {}: too many open files (EMFILE): the process reached its open-file \
                 limit RLIMIT_NOFILE ({limit}); raise it (`ulimit -n`, LimitNOFILE= in a systemd \
                 unit, --ulimit nofile= for a container). The broker needs about one file per \
                 partition plus one per connection",
                path.display()
            )
        }
        Some(libc::ENFILE) => format!(
            "{doing} {}: too many open files in the system (ENFILE): the kernel's limit \
             fs.file-max is reached; raise it (sysctl fs.file-max) or close other programs",
            path.display()
        ),
        _ => format!("{doing} {}: {e}", path.display()),
    };
    io::Error::new(kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_at_most_its_capacity_and_evicts_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..4)
            .map(|i| {
                let p = dir.path().join(format!("{i}.log"));
                std::fs::write(&p, format!("segment {i}")).unwrap();
                p
            })
            .collect();
        let cache = HandleCache::new(2);
        let a = cache.get_or_open(1, &paths[0]).unwrap();
        cache.get_or_open(2, &paths[1]).unwrap();
        // Using 1 again makes 2 the oldest.
        assert!(Arc::ptr_eq(&a, &cache.get_or_open(1, &paths[0]).unwrap()));
        cache.get_or_open(3, &paths[2]).unwrap();
        assert_eq!((cache.len(), cache.opened()), (2, 3));
        // 1 stayed, 2 was evicted and is opened again.
        assert!(Arc::ptr_eq(&a, &cache.get_or_open(1, &paths[0]).unwrap()));
        cache.get_or_open(2, &paths[1]).unwrap();
        assert_eq!((cache.len(), cache.opened()), (2, 4));

        // An evicted handle still held by a reader keeps reading its file.
        cache.set_capacity(1);
        assert_eq!(cache.len(), 1);
        let mut text = String::new();
        use std::io::Read;
        (&*a).read_to_string(&mut text).unwrap();
        assert_eq!(text, "segment 0");

        cache.forget(2);
        assert!(cache.is_empty());
        let missing = cache
            .get_or_open(9, &dir.path().join("gone.log"))
            .unwrap_err();
        assert!(missing.to_string().contains("gone.log"), "{missing}");
    }

    #[test]
    fn too_many_open_files_names_the_file_and_the_limit_to_raise() {
        let e = explain(
            io::Error::from_raw_os_error(libc::EMFILE),
            "opening",
            Path::new("/data/t-0/00000000000000000000.log"),
        );
        let text = e.to_string();
        assert!(
            text.contains("/data/t-0/00000000000000000000.log"),
            "{text}"
        );
        assert!(
            text.contains("RLIMIT_NOFILE") && text.contains("ulimit -n"),
            "{text}"
        );
        let e = explain(
            io::Error::from_raw_os_error(libc::ENFILE),
            "opening",
            Path::new("/x"),
        );
        assert!(e.to_string().contains("fs.file-max"));
    }
}
