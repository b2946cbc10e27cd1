//! The log cleaner task: every `log_cleaner_interval_ms`, runs
//! [`crate::storage::cleaner`] over each partition of every topic whose
//! `cleanup.policy` contains `compact`, on a blocking thread, one partition
//! at a time, and remembers where each partition is clean.
//!
//! The clean points live in `cleaner-offset-checkpoint` in the data
//! directory (the format of `storage::checkpoint`), written after passes
//! that moved one. A missing or damaged file only means the next pass
//! treats the whole log as dirty.
//!
//! What it is not: the cleaning itself (`storage/cleaner.rs`) or
//! retention, which keeps running on its own for `compact,delete` topics.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, error, info, warn};
use uuid::Uuid;

use super::log_manager::LogManager;
use super::topic::Topic;
use crate::storage::checkpoint::{self, Checkpoint};
use crate::storage::cleaner::{self, CleanerLimits, SkipReason};
use crate::util::{lock, now_ms};

/// File name of the clean points in the data directory.
pub const CLEANER_CHECKPOINT: &str = "cleaner-offset-checkpoint";

/// What the cleaner remembers about one partition between passes.
#[derive(Debug, Clone, Copy)]
struct PartitionCleaning {
    /// The topic the clean point belongs to; unknown for points read from
    /// the checkpoint until the partition is first seen.
    topic_id: Option<Uuid>,
    clean_point: i64,
    /// When a tombstone kept only for its age may go: a pass is forced
    /// then even if the log is not dirty enough.
    tombstone_deadline_ms: Option<i64>,
    /// False until this process set a deadline: tombstones kept before a
    /// restart are unknown.
    deadline_known: bool,
}

impl PartitionCleaning {
    fn new(topic_id: Option<Uuid>, clean_point: i64) -> Self {
        PartitionCleaning {
            topic_id,
            clean_point,
            tombstone_deadline_ms: None,
            deadline_known: false,
        }
    }
}

/// The cleaner's state between passes: clean points and tombstone
/// deadlines per partition.
#[derive(Debug)]
pub struct LogCleanerState {
    path: PathBuf,
    partitions: HashMap<(String, i32), PartitionCleaning>,
}

impl LogCleanerState {
    /// Reads the clean points saved in `data_dir`.
    pub fn load(data_dir: &Path) -> LogCleanerState {
        let path = data_dir.join(CLEANER_CHECKPOINT);
        let points = checkpoint::read(&path).unwrap_or_else(|e| {
            warn!(error = %e, "ignoring damaged cleaner checkpoint; compacted logs are treated as dirty");
            Checkpoint::new()
        });
        LogCleanerState {
            path,
            partitions: points
                .into_iter()
                .map(|(k, offset)| (k, PartitionCleaning::new(None, offset)))
                .collect(),
        }
    }

    /// The clean point of a partition, if one is known.
    pub fn clean_point(&self, topic: &str, partition: i32) -> Option<i64> {
        self.partitions
            .get(&(topic.to_string(), partition))
            .map(|p| p.clean_point)
    }

    fn save(&self) -> std::io::Result<()> {
        let points: Checkpoint = self
            .partitions
            .iter()
            .map(|(k, p)| (k.clone(), p.clean_point))
            .collect();
        checkpoint::write(&self.path, &points)
    }
}

/// What one cleaner pass over the broker did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanerPassSummary {
    pub partitions_cleaned: usize,
    pub partitions_failed: usize,
    pub bytes_freed: u64,
    /// Whether a partition's log start moved (its first segment emptied):
    /// the caller records the log starts.
    pub log_start_moved: bool,
}

impl LogManager {
    /// One pass of the log cleaner over every compacted partition of
    /// `topics`. Blocking: call from a blocking thread.
    pub fn run_log_cleaner(
        &self,
        topics: &[Arc<Topic>],
        state: &mut LogCleanerState,
    ) -> CleanerPassSummary {
        let limits = CleanerLimits {
            dedupe_buffer_bytes: self.cleaner_dedupe_buffer_bytes,
            ..Default::default()
        };
        let mut summary = CleanerPassSummary::default();
        let mut live = HashSet::new();
        let mut points_moved = false;
        for topic in topics {
            for partition in topic.partitions() {
                if partition.deleted.load(Ordering::Acquire) {
                    continue;
                }
                let config = lock(&partition.log).config().clone();
                if !config.cleanup_compact {
                    continue;
                }
                let key = (topic.name.to_string(), partition.index);
                live.insert(key.clone());
                let entry = state
                    .partitions
                    .entry(key)
                    .or_insert_with(|| PartitionCleaning::new(Some(topic.id), 0));
                if entry.topic_id.is_some_and(|id| id != topic.id) {
                    // The topic was deleted and created again.
                    *entry = PartitionCleaning::new(Some(topic.id), 0);
                }
                entry.topic_id = Some(topic.id);
                let now = now_ms();
                if !entry.deadline_known {
                    // Any tombstone kept before this process started is
                    // old enough to go by then.
                    entry.tombstone_deadline_ms =
                        Some(now.saturating_add(config.delete_retention_ms));
                    entry.deadline_known = true;
                }
                let force = entry.tombstone_deadline_ms.is_some_and(|d| now >= d);
                let log_start_before = partition.offsets().log_start;
                let started = Instant::now();
                match cleaner::clean_log(&partition.log, entry.clean_point, force, now, &limits) {
                    Ok(report) => {
                        points_moved |= report.clean_point != entry.clean_point;
                        entry.clean_point = report.clean_point;
                        match report.skipped {
                            Some(SkipReason::BelowDirtyRatio) => {}
                            Some(SkipReason::NothingCleanable) => {
                                entry.tombstone_deadline_ms = None
                            }
                            None => entry.tombstone_deadline_ms = report.tombstone_deadline_ms,
                        }
                        summary.log_start_moved |= report.log_start_offset != log_start_before;
                        let swapped = report.segments_rewritten + report.segments_removed;
                        if swapped > 0 {
                            summary.partitions_cleaned += 1;
                            summary.bytes_freed +=
                                report.bytes_before.saturating_sub(report.bytes_after);
                            info!(
                                topic = %topic.name,
                                partition = partition.index,
                                clean_point = report.clean_point,
                                dirty_ratio = report.dirty_ratio,
                                keys = report.keys_in_map,
                                segments_rewritten = report.segments_rewritten,
                                segments_removed = report.segments_removed,
                                segments_unchanged = report.segments_unchanged,
                                swaps_abandoned = report.swaps_abandoned,
                                bytes_before = report.bytes_before,
                                bytes_after = report.bytes_after,
                                records_removed = report.records_removed,
                                tombstones_removed = report.tombstones_removed,
                                batches_unreadable = report.batches_unreadable,
                                forced = force,
                                elapsed_ms = started.elapsed().as_millis() as u64,
                                "cleaned log"
                            );
                        } else {
                            debug!(
                                topic = %topic.name,
                                partition = partition.index,
                                skipped = ?report.skipped,
                                clean_point = report.clean_point,
                                dirty_ratio = report.dirty_ratio,
                                forced = force,
                                "log cleaner pass changed nothing"
                            );
                        }
                    }
                    Err(e) => {
                        summary.partitions_failed += 1;
                        error!(
                            topic = %topic.name,
                            partition = partition.index,
                            error = %e,
                            "log cleaning failed; the log is unchanged from the failed segment on"
                        );
                    }
                }
            }
        }
        let before = state.partitions.len();
        state.partitions.retain(|k, _| live.contains(k));
        if points_moved || state.partitions.len() != before {
            if let Err(e) = state.save() {
                error!(error = %e, "writing cleaner checkpoint failed");
            }
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Broker;
    use crate::config::BrokerConfig;
    use crate::storage::batch::tests::make_batch;
    use crate::storage::records::{decode_batch, MAX_DECOMPRESSED_BYTES};
    use kafka_protocol::records::Compression;
    use std::collections::BTreeMap;

    fn compacted() -> BTreeMap<String, String> {
        [
            ("cleanup.policy", "compact"),
            ("segment.bytes", "1024"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Appends `times` batches of `count` records keyed key-0 .. key-(count-1).
    async fn append(broker: &Broker, topic: &str, times: usize, count: usize) {
        let partition = broker.partition(topic, 0).unwrap();
        for _ in 0..times {
            partition
                .append(&make_batch(count, 50, Compression::None))
                .await
                .unwrap();
        }
    }

    /// How many records of each key the closed segments hold.
    fn copies_per_key(broker: &Broker, topic: &str) -> BTreeMap<String, usize> {
        let partition = broker.partition(topic, 0).unwrap();
        let log = lock(&partition.log);
        let active = log.cleaner_snapshot().active_base_offset;
        let mut copies = BTreeMap::new();
        let mut offset = log.log_start_offset();
        while offset < active {
            let slice = log.read(offset, 1 << 20, true, i64::MAX).unwrap().unwrap();
            let raw = slice.read().unwrap();
            let (_, len) = crate::storage::batch::BatchHeader::peek_size(&raw).unwrap();
            let set = decode_batch(&raw.slice(..len), MAX_DECOMPRESSED_BYTES).unwrap();
            for r in &set.records {
                if r.offset < active {
                    let key = String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap();
                    *copies.entry(key).or_insert(0) += 1;
                }
                offset = r.offset + 1;
            }
        }
        copies
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clean_points_are_checkpointed_and_a_recreated_topic_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let broker = Broker::open(BrokerConfig {
            data_dir: data_dir.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        broker
            .metadata()
            .create_topic("t", 1, 1, compacted(), false)
            .await
            .unwrap();
        broker
            .metadata()
            .create_topic("plain", 1, 1, BTreeMap::new(), false)
            .await
            .unwrap();
        append(&broker, "t", 40, 5).await;
        append(&broker, "plain", 40, 5).await;
        broker.flush_and_checkpoint(false).unwrap();

        let mut state = LogCleanerState::load(&data_dir);
        let summary = broker.run_log_cleaner(&mut state);
        assert_eq!(summary.partitions_cleaned, 1, "only the compacted topic");
        assert!(summary.bytes_freed > 0);
        let clean_point = state.clean_point("t", 0).expect("clean point of t");
        assert!(clean_point > 100, "{clean_point}");
        assert_eq!(state.clean_point("plain", 0), None);
        assert!(copies_per_key(&broker, "t").values().all(|&n| n == 1));
        assert_eq!(
            LogCleanerState::load(&data_dir).clean_point("t", 0),
            Some(clean_point),
            "the clean point is checkpointed"
        );

        // A new topic of the same name: keys 5-9 exist only in its first
        // 100 offsets, below the old clean point. Trusting that point would
        // leave their copies there.
        broker.metadata().delete_topic("t").await.unwrap();
        broker
            .metadata()
            .create_topic("t", 1, 1, compacted(), false)
            .await
            .unwrap();
        append(&broker, "t", 10, 10).await;
        append(&broker, "t", 60, 5).await;
        broker.flush_and_checkpoint(false).unwrap();
        broker.run_log_cleaner(&mut state);
        let copies = copies_per_key(&broker, "t");
        assert_eq!(copies.len(), 10);
        assert!(copies.values().all(|&n| n == 1), "{copies:?}");
    }
}
