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
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::storage::checkpoint::{self, Checkpoint};
use crate::storage::{LogConfig, PartitionLog};
use crate::util::{lock, now_ms};

const RECOVERY_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
const LOG_START_CHECKPOINT: &str = "log-start-offset-checkpoint";
/// Each partition's high watermark (Kafka's `replication-offset-checkpoint`).
const HIGH_WATERMARK_CHECKPOINT: &str = "replication-offset-checkpoint";

/// The recovery points and log starts read once at start, for the logs
/// the first application of the metadata opens.
#[derive(Default)]
pub(super) struct StartCheckpoints {
    recovery: Checkpoint,
    log_starts: Checkpoint,
    high_watermarks: Checkpoint,
}

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

    /// Removes the partitions of creations a stop interrupted (made under
    /// temporary names before their records were committed), keeping those
    /// `keep` (a pre-metadata-log `topics.json`) finishes.
    pub(super) fn finish_pending_partitions(&self, keep: &[TopicRecord]) -> io::Result<()> {
        meta::finish_pending_partitions(&self.data_dir, keep)?;
        Ok(())
    }

    /// The recovery points and log starts last checkpointed.
    pub(super) fn read_checkpoints(&self) -> StartCheckpoints {
        StartCheckpoints {
            recovery: read_checkpoint(&self.data_dir.join(RECOVERY_CHECKPOINT)),
            log_starts: read_checkpoint(&self.data_dir.join(LOG_START_CHECKPOINT)),
            high_watermarks: read_checkpoint(&self.data_dir.join(HIGH_WATERMARK_CHECKPOINT)),
        }
    }

    /// Opens (recovering it if needed) or creates the log of partition `p`
    /// of topic `name` (id `id`). A directory left by an older topic of the
    /// same name (another id) is removed first.
    pub(super) fn open_partition(
        &self,
        name: &Arc<str>,
        id: Uuid,
        p: i32,
        log_config: &LogConfig,
        checkpoints: &StartCheckpoints,
    ) -> Result<(Arc<Partition>, u64), BrokerError> {
        let pdir = meta::partition_dir(&self.data_dir, name, p);
        if let Some(other) = meta::read_partition_metadata(&pdir).filter(|&other| other != id) {
            warn!(dir = %pdir.display(), old_id = %other, new_id = %id, "removing the data of an older topic of the same name");
            std::fs::remove_dir_all(&pdir)?;
        }
        meta::write_partition_metadata(&pdir, id)?;
        let key = (name.to_string(), p);
        let (log, report) = PartitionLog::open(
            &pdir,
            log_config.clone(),
            checkpoints.recovery.get(&key).copied().unwrap_or(0),
            checkpoints.log_starts.get(&key).copied().unwrap_or(0),
            now_ms(),
        )?;
        let partition = Arc::new(Partition::new(name.clone(), p, log, self.storage.clone()));
        if let Some(&hw) = checkpoints.high_watermarks.get(&key) {
            // What the replicas had committed when the broker stopped; the
            // tail above it is committed only once the ISR has it again
            // (a leader alone commits its log end at once).
            partition.reopened_at_high_watermark(hw);
        }
        Ok((partition, report.truncated_bytes))
    }

    /// Makes the logs of new partitions `indexes` of topic `name` under
    /// temporary names, all or none (a failure removes what was made), so
    /// a creation that cannot make them fails before it is recorded.
    pub(super) fn prepare_partitions(
        &self,
        name: &str,
        id: Uuid,
        indexes: &[i32],
        log_config: &LogConfig,
    ) -> Result<Vec<(i32, PartitionLog)>, BrokerError> {
        let mut made: Vec<(i32, PartitionLog)> = Vec::with_capacity(indexes.len());
        for &p in indexes {
            let pending = meta::pending_partition_dir(&self.data_dir, name, p, id);
            let log = meta::write_partition_metadata(&pending, id).and_then(|()| {
                PartitionLog::open(&pending, log_config.clone(), 0, 0, now_ms()).map(|(l, _)| l)
            });
            match log {
                Ok(log) => made.push((p, log)),
                Err(e) => {
                    error!(topic = name, partition = p, error = %e, "creating partitions failed; removing the ones made");
                    self.discard_prepared(name, id, made);
                    if let Err(e) = std::fs::remove_dir_all(&pending) {
                        if e.kind() != io::ErrorKind::NotFound {
                            warn!(dir = %pending.display(), error = %e, "could not remove a partition of a failed creation");
                        }
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(made)
    }

    /// Removes partitions made by `prepare_partitions` whose creation was
    /// not recorded.
    pub(super) fn discard_prepared(&self, name: &str, id: Uuid, made: Vec<(i32, PartitionLog)>) {
        for (p, log) in made {
            drop(log);
            let pending = meta::pending_partition_dir(&self.data_dir, name, p, id);
            if let Err(e) = std::fs::remove_dir_all(&pending) {
                if e.kind() != io::ErrorKind::NotFound {
                    warn!(dir = %pending.display(), error = %e, "could not remove a partition of a failed creation");
                }
            }
        }
    }

    /// Moves a prepared partition into place once its creation is recorded.
    pub(super) fn install_prepared(
        &self,
        name: &Arc<str>,
        p: i32,
        mut log: PartitionLog,
    ) -> Result<Arc<Partition>, BrokerError> {
        let target = meta::partition_dir(&self.data_dir, name, p);
        match std::fs::remove_dir_all(&target) {
            // Leftover of a topic with the same name that was never fully
            // deleted: start clean.
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        log.relocate(&target)?;
        meta::sync_dir(&self.data_dir)?;
        Ok(Arc::new(Partition::new(
            name.clone(),
            p,
            log,
            self.storage.clone(),
        )))
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

    /// Stops a partition this broker no longer holds a replica of (a
    /// reassignment moved it away) and removes its data: marked deleted
    /// (reads, appends and a follower fetch still in flight are refused),
    /// its directory renamed under the log's lock, so no write lands after
    /// it, then removed in the background.
    pub(super) fn remove_partition(&self, partition: &Partition) {
        partition.deleted.store(true, Ordering::Release);
        let log = lock(&partition.log);
        let dir = log.dir().to_path_buf();
        match rename_for_removal(&dir) {
            Ok(doomed) => {
                drop(log);
                remove_in_background(doomed);
            }
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "could not remove the data of a replica this broker no longer holds")
            }
        }
    }

    /// Removes the directory of partition `p` of topic `name` (id `id`) if
    /// one is left although this broker holds no replica of it: a
    /// reassignment moved it away while this broker was down. Directories
    /// of another topic id (an older topic of the name) go too.
    pub(super) fn remove_stray_partition(&self, name: &str, id: Uuid, p: i32) {
        let dir = meta::partition_dir(&self.data_dir, name, p);
        let Some(found) = meta::read_partition_metadata(&dir) else {
            return;
        };
        match rename_for_removal(&dir) {
            Ok(doomed) => {
                info!(dir = %dir.display(), topic_id = %found, current_topic_id = %id, "removing a partition this broker no longer holds a replica of");
                remove_in_background(doomed);
            }
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "could not remove a partition this broker no longer holds")
            }
        }
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

    /// Records every partition's high watermark durably (read back when
    /// the partition is opened at the next start).
    pub fn write_high_watermark_checkpoint(&self, topics: &[Arc<Topic>]) -> io::Result<()> {
        let mut marks = Checkpoint::new();
        for topic in topics {
            for partition in topic.partitions() {
                if partition.deleted.load(Ordering::Acquire) {
                    continue;
                }
                marks.insert(
                    (topic.name.to_string(), partition.index),
                    partition.high_watermark(),
                );
            }
        }
        checkpoint::write(&self.data_dir.join(HIGH_WATERMARK_CHECKPOINT), &marks)
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

/// Renames a partition directory to a unique `<dir>.<random id>-delete`
/// (removed at the next start if the removal does not finish), so a new
/// replica of the same partition can be made at once.
fn rename_for_removal(dir: &Path) -> io::Result<PathBuf> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("partition");
    let target = dir.with_file_name(format!("{name}.{}-delete", Uuid::new_v4().simple()));
    std::fs::rename(dir, &target)?;
    Ok(target)
}

fn remove_in_background(dir: PathBuf) {
    tokio::task::spawn_blocking(move || {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            warn!(dir = %dir.display(), error = %e, "could not remove a partition's data");
        }
    });
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
