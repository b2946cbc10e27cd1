//! Offset checkpoint files shared by all partitions of a data directory:
//! `recovery-point-offset-checkpoint` and `log-start-offset-checkpoint`.
//!
//! The format is Kafka's plain-text one, so operators recognise it:
//! ```text
//! 0                      format version
//! 2                      number of entries
//! orders 0 1234          topic, partition, offset
//! orders 1 987
//! ```
//! Files are replaced atomically (write to `.tmp`, fsync, rename, fsync the
//! directory). A missing or unreadable file is not an error: recovery then
//! simply scans more of the log.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

const VERSION: u32 = 0;

pub type Checkpoint = HashMap<(String, i32), i64>;

/// Writes `entries` to `path` atomically.
pub fn write(path: &Path, entries: &Checkpoint) -> io::Result<()> {
    let mut text = format!("{VERSION}\n{}\n", entries.len());
    let mut sorted: Vec<_> = entries.iter().collect();
    sorted.sort();
    for ((topic, partition), offset) in sorted {
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    write_atomically(path, text.as_bytes())
}

/// Replaces `path` with `contents` so a reader sees the old or the new file,
/// never a mix, even across a crash.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Replaces `path` with `contents` by a rename, without waiting for the
/// disk: after a process crash a reader sees the old or the new file; after
/// a power loss possibly an empty or partial one. Only for files whose
/// reader checks them against the data they describe and rebuilds them
/// (the leader-epoch checkpoint), so a write on the append path costs no
/// fsync.
pub fn replace_unsynced(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents)?;
    fs::rename(&tmp, path)
}

/// Reads a checkpoint file. Returns an empty map (and the reason) when the
/// file is missing or malformed.
pub fn read(path: &Path) -> Result<Checkpoint, String> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Checkpoint::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut lines = text.lines();
    let bad = |what: &str| format!("{}: {what}", path.display());
    if lines.next() != Some("0") {
        return Err(bad("unknown version"));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| bad("missing entry count"))?;
    let mut entries = Checkpoint::new();
    for line in lines {
        let mut parts = line.rsplitn(3, ' ');
        let (Some(offset), Some(partition), Some(topic)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("malformed line"));
        };
        let offset: i64 = offset.parse().map_err(|_| bad("bad offset"))?;
        let partition: i32 = partition.parse().map_err(|_| bad("bad partition"))?;
        entries.insert((topic.to_string(), partition), offset);
    }
    if entries.len() != count {
        return Err(bad("entry count mismatch"));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recovery-point-offset-checkpoint");
        let mut c = Checkpoint::new();
        c.insert(("orders".into(), 0), 1234);
        c.insert(("my.topic-with_dashes".into(), 7), 0);
        write(&path, &c).unwrap();
        assert_eq!(read(&path).unwrap(), c);
    }

    #[test]
    fn a_missing_file_is_empty_and_a_damaged_one_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        assert!(read(&path).unwrap().is_empty());
        fs::write(&path, "0\n2\norders 0 5\n").unwrap();
        assert!(read(&path).is_err());
        fs::write(&path, "0\n1\norders x 5\n").unwrap();
        assert!(read(&path).is_err());
    }
}
