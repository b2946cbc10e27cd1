//! The partition logs on disk: opening (and recovering) them at start,
//! making and removing partition directories (creation all or nothing,
//! see `create_partitions`), retention, the periodic flush with its
//! `recovery-point-offset-checkpoint` and `log-start-offset-checkpoint`,
//! and the log cleaner's passes (`cleaning.rs`).
//!
//! The broker's background tasks call in here with the topics of the
//! moment; the metadata authority calls in when topics are created,
//! grow, change configs or are deleted.
//!
//! What it is not: which topics exist (`metadata.rs` decides and records
//! that in `topics.json`) or the append and read path (`partition.rs`).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{debug, error, info, warn};
use uuid::Uuid;

use super::meta::{self, TopicRecord};
use super::metrics::StorageHealth;
use super::partition::Partition;
use super::topic::Topic;
use crate::config::{resolve_log_config, BrokerConfig, LogDefaults};
use crate::error::BrokerError;
use crate::storage::checkpoint::{self, Checkpoint};
use crate::storage::{LogConfig, PartitionLog};
use crate::util::{lock, now_ms};

const RECOVERY_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
const LOG_START_CHECKPOINT: &str = "log-start-offset-checkpoint";

/// The logs of a data directory.
pub struct LogManager {
    data_dir: PathBuf,
    /// Where failed writes are counted; handed to every partition.
    storage: Arc<StorageHealth>,
    /// The log cleaner's key map budget per pass.
    pub(super) cleaner_dedupe_buffer_bytes: usize,
}

impl LogManager {
    pub fn new(config: &BrokerConfig, storage: Arc<StorageHealth>) -> LogManager {
        LogManager {
            data_dir: config.data_dir.clone(),
            storage,
            cleaner_dedupe_buffer_bytes: config.log_cleaner_dedupe_buffer_bytes,
        }
    }

    /// Removes what deleted topics left behind.
    pub(super) fn remove_deleted_partitions(&self) -> io::Result<()> {
        meta::remove_deleted_dirs(&self.data_dir)
    }

    /// Finishes or undoes a creation a crash interrupted: `records` (what
    /// `topics.json` holds) decides which.
    pub(super) fn finish_pending_partitions(&self, records: &[TopicRecord]) -> io::Result<()> {
        meta::finish_pending_partitions(&self.data_dir, records)?;
        Ok(())
    }

    /// Opens (and if needed recovers) the log of every partition of
    /// `records`, from the recovery points and log starts checkpointed.
    pub(super) fn open_topics(
        &self,
        records: Vec<TopicRecord>,
        log_defaults: &LogDefaults,
    ) -> Result<HashMap<Arc<str>, Arc<Topic>>, BrokerError> {
        let dir = &self.data_dir;
        let recovery = read_checkpoint(&dir.join(RECOVERY_CHECKPOINT));
        let log_starts = read_checkpoint(&dir.join(LOG_START_CHECKPOINT));

        let started = std::time::Instant::now();
        let mut topics = HashMap::new();
        let mut truncated = 0u64;
        for record in records {
            let name: Arc<str> = record.name.as_str().into();
            let log_config = resolve_log_config(&record.configs, log_defaults);
            let mut partitions = Vec::with_capacity(record.partitions as usize);
            for p in 0..record.partitions {
                let pdir = meta::partition_dir(dir, &record.name, p);
                meta::write_partition_metadata(&pdir, record.id)?;
                let key = (record.name.clone(), p);
                let (log, report) = PartitionLog::open(
                    &pdir,
                    log_config.clone(),
                    recovery.get(&key).copied().unwrap_or(0),
                    log_starts.get(&key).copied().unwrap_or(0),
                    now_ms(),
                )?;
                truncated += report.truncated_bytes;
                partitions.push(Arc::new(Partition::new(
                    name.clone(),
                    p,
                    log,
                    self.storage.clone(),
                )));
            }
            let topic = Topic::new(name.clone(), record.id, record.configs, partitions);
            topics.insert(name, Arc::new(topic));
        }
        info!(
            topics = topics.len(),
            partitions = topics.values().map(|t| t.partition_count() as usize).sum::<usize>(),
            truncated_bytes = truncated,
            elapsed_ms = started.elapsed().as_millis() as u64,
            data_dir = %dir.display(),
            "storage loaded"
        );
        Ok(topics)
    }

    /// Creates the partitions `range` of topic `name` (id `id`) all or
    /// none: each partition is made under a temporary name, `commit` is
    /// called once every one exists (it records them: `topics.json`), and
    /// only then do the directories get their final names. A failure
    /// before that point removes what was made; a failure after it calls
    /// `revert` (which records the state before) and removes them too. A
    /// crash is finished or undone on the next start (see `meta`).
    pub(super) fn create_partitions(
        &self,
        name: &Arc<str>,
        id: Uuid,
        range: std::ops::Range<i32>,
        log_config: &LogConfig,
        commit: impl FnOnce() -> io::Result<()>,
        revert: impl FnOnce() -> io::Result<()>,
    ) -> Result<Vec<Arc<Partition>>, BrokerError> {
        let logs =
            self.add_partitions_atomically(name, id, range.clone(), log_config, commit, revert)?;
        Ok(logs
            .into_iter()
            .zip(range)
            .map(|(log, p)| Arc::new(Partition::new(name.clone(), p, log, self.storage.clone())))
            .collect())
    }

    fn add_partitions_atomically(
        &self,
        name: &str,
        id: Uuid,
        range: std::ops::Range<i32>,
        log_config: &LogConfig,
        commit: impl FnOnce() -> io::Result<()>,
        revert: impl FnOnce() -> io::Result<()>,
    ) -> Result<Vec<PartitionLog>, BrokerError> {
        let data_dir = &self.data_dir;
        let mut logs: Vec<PartitionLog> = Vec::with_capacity(range.len());
        let undo = |logs: Vec<PartitionLog>, range: std::ops::Range<i32>| {
            drop(logs);
            for p in range {
                let pending = meta::pending_partition_dir(data_dir, name, p, id);
                if let Err(e) = std::fs::remove_dir_all(&pending) {
                    if e.kind() != io::ErrorKind::NotFound {
                        warn!(dir = %pending.display(), error = %e, "could not remove a partition of a failed creation");
                    }
                }
            }
        };
        for p in range.clone() {
            let pending = meta::pending_partition_dir(data_dir, name, p, id);
            let made = meta::write_partition_metadata(&pending, id).and_then(|()| {
                PartitionLog::open(&pending, log_config.clone(), 0, 0, now_ms()).map(|(l, _)| l)
            });
            match made {
                Ok(log) => logs.push(log),
                Err(e) => {
                    error!(topic = name, partition = p, error = %e, "creating partitions failed; removing the ones made");
                    undo(logs, range);
                    return Err(e.into());
                }
            }
        }
        // The commit point.
        if let Err(e) = commit() {
            error!(topic = name, error = %e, "recording new partitions failed; removing them");
            undo(logs, range);
            return Err(e.into());
        }
        for (log, p) in logs.iter_mut().zip(range.clone()) {
            let target = meta::partition_dir(data_dir, name, p);
            let moved = match std::fs::remove_dir_all(&target) {
                // Leftover of a topic with the same name that was never
                // fully deleted: start clean.
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
            .and_then(|()| log.relocate(&target));
            if let Err(e) = moved {
                error!(topic = name, partition = p, error = %e, "could not move a new partition into place; undoing the creation");
                // Back to the state before: the old records, the new
                // partitions under their temporary names, then removed. If
                // this fails too, the next start finishes the creation.
                let back = revert().and_then(|()| {
                    for (log, p) in logs.iter_mut().zip(range.clone()) {
                        if log.dir() == meta::partition_dir(data_dir, name, p) {
                            log.relocate(&meta::pending_partition_dir(data_dir, name, p, id))?;
                        }
                    }
                    Ok(())
                });
                match back {
                    Ok(()) => undo(logs, range),
                    Err(e) => {
                        error!(topic = name, error = %e, "could not undo the creation; a restart completes it")
                    }
                }
                return Err(e.into());
            }
        }
        meta::sync_dir(data_dir)?;
        Ok(logs)
    }

    /// Stops the partitions of a deleted topic and removes their data:
    /// renamed at once, removed in the background.
    pub(super) fn delete_partitions(&self, topic: &Topic) {
        let mut doomed = Vec::new();
        for partition in topic.partitions() {
            partition.deleted.store(true, Ordering::Release);
            let dir = lock(&partition.log).dir().to_path_buf();
            let target = dir.with_file_name(format!(
                "{}.{}-delete",
                dir.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("partition"),
                topic.id.simple()
            ));
            match std::fs::rename(&dir, &target) {
                Ok(()) => doomed.push(target),
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "could not rename deleted partition")
                }
            }
        }
        tokio::task::spawn_blocking(move || {
            for dir in doomed {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    warn!(dir = %dir.display(), error = %e, "could not remove deleted partition");
                }
            }
        });
    }

    /// Gives every partition of `topic` a new log config.
    pub(super) fn reconfigure(&self, topic: &Topic, log_config: &LogConfig) {
        for partition in topic.partitions() {
            lock(&partition.log).set_config(log_config.clone());
        }
    }

    /// Applies retention to every partition of `topics`; returns how many
    /// segments it deleted (the caller records the new log starts).
    pub fn apply_retention(&self, topics: &[Arc<Topic>]) -> usize {
        let now = now_ms();
        let mut deleted_total = 0;
        for topic in topics {
            for partition in topic.partitions() {
                if partition.deleted.load(Ordering::Acquire) {
                    continue;
                }
                match lock(&partition.log).apply_retention(now) {
                    Ok(0) => {}
                    Ok(n) => {
                        deleted_total += n;
                        debug!(topic = %topic.name, partition = partition.index, segments = n, "retention deleted segments");
                    }
                    Err(e) => {
                        error!(topic = %topic.name, partition = partition.index, error = %e, "retention failed")
                    }
                }
            }
        }
        if deleted_total > 0 {
            info!(segments = deleted_total, "retention deleted segments");
        }
        deleted_total
    }

    /// Fsyncs every partition of `topics` with new data (`closing`: and
    /// closes its files) and records the recovery points.
    pub fn flush(&self, topics: &[Arc<Topic>], closing: bool) -> io::Result<()> {
        let now = now_ms();
        let mut recovery = Checkpoint::new();
        for topic in topics {
            for partition in topic.partitions() {
                if partition.deleted.load(Ordering::Acquire) {
                    continue;
                }
                // Failures are counted and logged (rate-limited) in the
                // broker's storage health; the recovery point stays behind.
                if closing {
                    if let Err(e) = lock(&partition.log).close(now) {
                        partition.write_failed(&e);
                    }
                } else {
                    let _ = partition.flush();
                }
                let recovery_point = lock(&partition.log).recovery_point();
                recovery.insert((topic.name.to_string(), partition.index), recovery_point);
            }
        }
        checkpoint::write(&self.data_dir.join(RECOVERY_CHECKPOINT), &recovery)?;
        checkpointed(topics, &recovery, PartitionLog::recovery_point_checkpointed);
        Ok(())
    }

    /// Records every partition's log start offset durably.
    pub fn write_log_start_checkpoint(&self, topics: &[Arc<Topic>]) -> io::Result<()> {
        let mut starts = Checkpoint::new();
        for topic in topics {
            for partition in topic.partitions() {
                starts.insert(
                    (topic.name.to_string(), partition.index),
                    partition.offsets().log_start,
                );
            }
        }
        checkpoint::write(&self.data_dir.join(LOG_START_CHECKPOINT), &starts)?;
        checkpointed(topics, &starts, PartitionLog::log_start_checkpointed);
        Ok(())
    }
}

/// Tells the logs a truncation cut, and only those, which values a
/// checkpoint now holds for them: such a log keeps its own floor (its
/// `truncation-checkpoint`) until the broker's checkpoints reflect the cut.
fn checkpointed(topics: &[Arc<Topic>], written: &Checkpoint, confirm: fn(&mut PartitionLog, i64)) {
    for topic in topics {
        for partition in topic.partitions() {
            let mut log = lock(&partition.log);
            if log.has_truncation_checkpoint() {
                if let Some(&offset) = written.get(&(topic.name.to_string(), partition.index)) {
                    confirm(&mut log, offset);
                }
            }
        }
    }
}

fn read_checkpoint(path: &Path) -> Checkpoint {
    match checkpoint::read(path) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "ignoring damaged checkpoint file; affected logs are scanned in full");
            Checkpoint::new()
        }
    }
}
