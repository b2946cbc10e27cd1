//! The runtime's side of global tables (see [`crate::global`]): one
//! consumer, in no group (it never subscribes or commits), assigned every
//! partition of every global topic. The stream thread fills the global
//! stores with it before it processes anything (every partition read to
//! the high watermark it had at start) and then polls it before each
//! record to keep them up to date.
//!
//! Why on the stream thread rather than a thread of its own (Kafka
//! Streams' `GlobalStreamThread`): the stores are read by the tasks and
//! the query jobs of that thread, so one thread needs no more than the
//! engine's lock, and every global record fetched before a stream record
//! is processed is in the store when it is. The cost: a poll's worth of
//! global records ([`MAX_POLL_RECORDS`]) may run before a stream record.
//!
//! With a state directory the stores live in
//! `<state_dir>/<application.id>/global/<store>` (fjall; a lock on the
//! directory, in memory when another instance on the machine holds it),
//! and a clean close checkpoints the offsets each store holds up to. At
//! start a checkpoint is read once and removed; a store without a valid
//! one (missing, another cluster's, or outside a partition's current
//! offsets) is emptied and read from the beginning.
//!
//! ```text
//! <state_dir>/<application.id>/global/<store>.checkpoint:
//!   <cluster id>\n
//!   <partition> <next offset to read>\n      one line per partition
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{kafka, RuntimeError, StreamsConfig, StreamsMetrics, RESTORE_BATCH};
use crate::global::{GlobalRecord, GlobalStores};
use crate::store::{FjallEngine, MemoryEngine, StoreEngine, StoreSpec};
use crate::topology::{ErrorHandling, Topology};

/// Most global records applied between two stream records.
pub(super) const MAX_POLL_RECORDS: usize = 1_000;

/// How long filling the global stores at start may take.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(600);

/// The instance's global stores and what keeps them up to date.
pub(super) struct GlobalUpdater {
    pub stores: GlobalStores,
    /// `None` when the topology has no global table.
    consumer: Option<BaseConsumer>,
    /// The next offset to read of each global topic partition: what each
    /// store holds up to.
    positions: BTreeMap<(String, i32), i64>,
    /// The stores' directory and its lock, when they are on disk.
    dir: Option<(PathBuf, std::fs::File)>,
}

impl GlobalUpdater {
    /// Opens the global stores and fills them to the topics' current
    /// ends.
    pub fn start(
        topology: &Topology,
        config: &StreamsConfig,
        cluster: &str,
        metrics: &Mutex<StreamsMetrics>,
    ) -> Result<GlobalUpdater, RuntimeError> {
        if topology.global_stores().is_empty() {
            return Ok(GlobalUpdater {
                stores: GlobalStores::default(),
                consumer: None,
                positions: BTreeMap::new(),
                dir: None,
            });
        }
        let started = Instant::now();
        let dir = lock_dir(config)?;
        let mut failed = None;
        let stores = GlobalStores::open(topology, |spec: &StoreSpec| match &dir {
            Some((dir, _)) => match FjallEngine::open(&dir.join(&spec.name)) {
                Ok(e) => Box::new(e) as Box<dyn StoreEngine>,
                Err(e) => {
                    failed.get_or_insert(e);
                    Box::<MemoryEngine>::default()
                }
            },
            None => Box::<MemoryEngine>::default(),
        });
        if let Some(e) = failed {
            return Err(RuntimeError::Store(format!(
                "opening the global stores: {e}"
            )));
        }
        let consumer: BaseConsumer = config
            .client_config()
            // librdkafka wants a group even for assigned partitions; this
            // one never joins or commits.
            .set("group.id", format!("{}-global", config.application_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.max.bytes", "52428800")
            .set("max.partition.fetch.bytes", "16777216")
            .create()
            .map_err(kafka("creating the global consumer"))?;
        let mut updater = GlobalUpdater {
            stores,
            consumer: None,
            positions: BTreeMap::new(),
            dir,
        };
        // Where each partition starts and the end it is read to first.
        let mut list = TopicPartitionList::new();
        let mut ends: HashMap<(String, i32), i64> = HashMap::new();
        let topics: Vec<(String, String)> = updater
            .stores
            .topics()
            .map(|(t, s)| (t.to_string(), s.to_string()))
            .collect();
        for (topic, store) in topics {
            let md = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(30))
                .map_err(kafka(format!("metadata of {topic}")))?;
            let partitions = md
                .topics()
                .first()
                .filter(|t| t.error().is_none())
                .map_or(0, |t| t.partitions().len() as i32);
            if partitions == 0 {
                return Err(RuntimeError::Topology(format!(
                    "global table topic {topic} does not exist"
                )));
            }
            let mut marks = BTreeMap::new();
            for p in 0..partitions {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(30))
                    .map_err(kafka(format!("the offsets of {topic}-{p}")))?;
                marks.insert(p, (low, high));
            }
            let checkpoint = updater.take_checkpoint(&store, cluster, &marks);
            if checkpoint.is_none() {
                updater
                    .stores
                    .store_mut(&store)
                    .expect("listed above")
                    .clear()
                    .map_err(|e| RuntimeError::Store(format!("emptying {store}: {e}")))?;
            }
            for (p, (low, high)) in marks {
                let from = checkpoint.as_ref().map_or(low, |c| c[&p]);
                list.add_partition_offset(&topic, p, Offset::Offset(from))
                    .map_err(kafka("assigning a global topic"))?;
                updater.positions.insert((topic.clone(), p), from);
                if from < high {
                    ends.insert((topic.clone(), p), high);
                }
            }
        }
        consumer
            .assign(&list)
            .map_err(kafka("assigning the global topics"))?;
        updater.consumer = Some(consumer);
        let restored = updater.bootstrap(ends, &config.on_error)?;
        let mut m = metrics.lock().unwrap_or_else(|e| e.into_inner());
        m.records_restored += restored;
        m.restore_time += started.elapsed();
        tracing::info!(
            records = restored,
            took = ?started.elapsed(),
            "global stores restored"
        );
        Ok(updater)
    }

    /// The offsets a clean close checkpointed for `store`, if they still
    /// hold for the topic's partitions (`marks`: low and high watermark
    /// each). Read once: the file is removed.
    fn take_checkpoint(
        &self,
        store: &str,
        cluster: &str,
        marks: &BTreeMap<i32, (i64, i64)>,
    ) -> Option<BTreeMap<i32, i64>> {
        let (dir, _) = self.dir.as_ref()?;
        let file = dir.join(format!("{store}.checkpoint"));
        let text = std::fs::read_to_string(&file).ok();
        // Trusted once: from now on the store changes without a
        // checkpoint until the next clean close writes one.
        let _ = std::fs::remove_file(&file);
        let text = text?;
        let mut lines = text.lines();
        if lines.next()?.trim() != cluster {
            return None;
        }
        let mut offsets = BTreeMap::new();
        for line in lines {
            let (p, o) = line.trim().split_once(' ')?;
            offsets.insert(p.parse::<i32>().ok()?, o.parse::<i64>().ok()?);
        }
        // Every partition, each within what the topic holds now (a topic
        // recreated or cut by retention is read again from its start).
        let holds = offsets.len() == marks.len()
            && marks
                .iter()
                .all(|(p, (low, high))| offsets.get(p).is_some_and(|o| (*low..=*high).contains(o)));
        holds.then_some(offsets)
    }

    /// Reads every partition in `ends` to its end into the stores;
    /// returns how many records were read.
    fn bootstrap(
        &mut self,
        mut ends: HashMap<(String, i32), i64>,
        on_error: &ErrorHandling,
    ) -> Result<u64, RuntimeError> {
        let Some(consumer) = self.consumer.as_ref() else {
            return Ok(0);
        };
        let deadline = Instant::now() + BOOTSTRAP_TIMEOUT;
        let mut batches: BTreeMap<String, Vec<GlobalRecord>> = BTreeMap::new();
        let mut total = 0;
        while !ends.is_empty() {
            if Instant::now() > deadline {
                return Err(RuntimeError::Topology(format!(
                    "restoring the global stores stalled: {} partitions not read to their end",
                    ends.len()
                )));
            }
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    let at = (m.topic().to_string(), m.partition());
                    let batch = batches.entry(at.0.clone()).or_default();
                    batch.push(GlobalRecord {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                    });
                    total += 1;
                    if batch.len() >= RESTORE_BATCH {
                        let batch = std::mem::take(batch);
                        apply(&mut self.stores, &at.0, &batch, on_error)?;
                    }
                    if ends.get(&at).is_some_and(|end| m.offset() + 1 >= *end) {
                        ends.remove(&at);
                    }
                    self.positions.insert(at, m.offset() + 1);
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "restoring the global stores"),
                None => {
                    // Offsets up to the high watermark may hold no record
                    // (compacted away): the fetch position tells.
                    if let Ok(position) = consumer.position() {
                        for e in position.elements() {
                            let at = (e.topic().to_string(), e.partition());
                            if let (Offset::Offset(o), Some(end)) = (e.offset(), ends.get(&at)) {
                                if o >= *end {
                                    ends.remove(&at);
                                }
                            }
                        }
                    }
                }
            }
        }
        for (topic, batch) in batches {
            apply(&mut self.stores, &topic, &batch, on_error)?;
        }
        Ok(total)
    }

    /// Applies what the global topics received since the last call (at
    /// most [`MAX_POLL_RECORDS`]); returns how many records that was.
    pub fn poll(&mut self, on_error: &ErrorHandling) -> Result<u64, RuntimeError> {
        let Some(consumer) = self.consumer.as_ref() else {
            return Ok(0);
        };
        let mut batches: BTreeMap<String, Vec<GlobalRecord>> = BTreeMap::new();
        let mut read = 0;
        while read < MAX_POLL_RECORDS {
            match consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => {
                    batches
                        .entry(m.topic().to_string())
                        .or_default()
                        .push(GlobalRecord {
                            partition: m.partition(),
                            offset: m.offset(),
                            key: m.key().map(<[u8]>::to_vec),
                            value: m.payload().map(<[u8]>::to_vec),
                        });
                    self.positions
                        .insert((m.topic().to_string(), m.partition()), m.offset() + 1);
                    read += 1;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "global consumer error");
                    break;
                }
                None => break,
            }
        }
        for (topic, batch) in batches {
            apply(&mut self.stores, &topic, &batch, on_error)?;
        }
        Ok(read as u64)
    }

    /// Makes the stores durable and checkpoints what each holds, so the
    /// next start on this machine reads only what is new (a clean close
    /// only: after a crash the stores are read again from the start).
    pub fn close(mut self, cluster: &str) {
        let Some((dir, lock)) = self.dir.take() else {
            return;
        };
        let topics: Vec<(String, String)> = self
            .stores
            .topics()
            .map(|(t, s)| (t.to_string(), s.to_string()))
            .collect();
        for (topic, name) in topics {
            let Some(store) = self.stores.store_mut(&name) else {
                continue;
            };
            if store.failure().is_some() {
                continue;
            }
            if let Err(e) = store.flush() {
                tracing::warn!(store = %name, error = %e, "flushing a global store failed; it is read again from its topic next time");
                continue;
            }
            let mut text = format!("{cluster}\n");
            for ((t, p), next) in &self.positions {
                if *t == topic {
                    text.push_str(&format!("{p} {next}\n"));
                }
            }
            let file = dir.join(format!("{name}.checkpoint"));
            if let Err(e) = std::fs::write(&file, text) {
                tracing::warn!(file = %file.display(), error = %e, "writing a checkpoint failed");
            }
        }
        // The stores close before another instance may take the lock.
        drop(self);
        drop(lock);
    }
}

/// Writes `batch` of `topic` into its store; an engine failure stops the
/// application (nothing processed after it is committed).
fn apply(
    stores: &mut GlobalStores,
    topic: &str,
    batch: &[GlobalRecord],
    on_error: &ErrorHandling,
) -> Result<(), RuntimeError> {
    stores
        .apply(topic, batch, on_error)
        .map_err(RuntimeError::Global)?;
    match stores.failure() {
        Some(e) => Err(RuntimeError::Store(format!("global store {e}"))),
        None => Ok(()),
    }
}

/// The global stores' directory, locked, if they go on disk: `None` for
/// memory (no state directory, or another instance on this machine holds
/// the lock).
fn lock_dir(config: &StreamsConfig) -> Result<Option<(PathBuf, std::fs::File)>, RuntimeError> {
    let Some(state) = &config.state_dir else {
        return Ok(None);
    };
    let dir = state.join(&config.application_id).join("global");
    let io = |what: &str, e: std::io::Error| {
        RuntimeError::Store(format!("{what} {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(&dir).map_err(|e| io("creating", e))?;
    let lock = std::fs::File::create(dir.join(".lock")).map_err(|e| io("locking", e))?;
    if lock.try_lock().is_err() {
        tracing::warn!(dir = %dir.display(), "the global stores' directory is locked by another instance; they stay in memory");
        return Ok(None);
    }
    Ok(Some((dir, lock)))
}
