//! Steps 5-7 of the log cleaner's crash-safe swap protocol (drawn in
//! `cleaner`'s module docs): replacing a segment's files by the cleaned
//! ones. The cleaner runs them after a pass; opening a log runs them again
//! for a swap a crash interrupted. Both sides use this module, so neither
//! depends on the other for it.

use std::fs::File;
use std::io;
use std::path::Path;

use super::segment::segment_file_name;

/// Suffix of the files a cleaner pass writes before swapping them in.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";

/// Makes a directory's entries (new, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A failed swap: whether it got past the commit point (the rename of the
/// `.log`), after which the new segment is the one on disk.
#[derive(Debug)]
pub(crate) struct SwapError {
    pub committed: bool,
    pub error: io::Error,
}

/// Filesystem operations (unlink, rename, fsync) in steps 5-7 of the swap.
#[cfg(test)]
pub(crate) const SWAP_OPERATIONS: usize = 7;

/// Steps 5-7 of the swap protocol for segment `base` of `dir`.
pub(crate) fn commit_swap(dir: &Path, base: i64) -> Result<(), SwapError> {
    commit_swap_until(dir, base, usize::MAX)
}

/// Steps 5-7, stopping after `max_operations` filesystem operations as a
/// crash there would (tests walk every prefix).
pub(crate) fn commit_swap_until(
    dir: &Path,
    base: i64,
    max_operations: usize,
) -> Result<(), SwapError> {
    let path = |ext: &str| dir.join(segment_file_name(base, ext));
    let cleaned = |ext: &str| path(&format!("{ext}{CLEANED_SUFFIX}"));
    let mut left = max_operations;
    macro_rules! op {
        ($committed:expr, $result:expr) => {
            if left == 0 {
                return Ok(());
            }
            left -= 1;
            $result.map_err(|error| SwapError {
                committed: $committed,
                error,
            })?;
        };
    }
    // 5: the old indexes go, durably, before the new log appears.
    op!(false, remove_if_present(&path("index")));
    op!(false, remove_if_present(&path("timeindex")));
    op!(false, sync_dir(dir));
    // 6: the commit point.
    op!(false, std::fs::rename(cleaned("log"), path("log")));
    op!(true, sync_dir(dir));
    // 7: the new indexes, only once the new log is durably in place.
    op!(true, std::fs::rename(cleaned("index"), path("index")));
    op!(
        true,
        std::fs::rename(cleaned("timeindex"), path("timeindex"))
    );
    let _ = left;
    Ok(())
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
