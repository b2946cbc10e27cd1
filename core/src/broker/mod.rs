//! The broker's state: topics, their partitions' logs, and the background
//! work that keeps them healthy (retention, flushing, checkpoints, and the
//! log cleaner in `cleaning.rs`).
//!
//! This layer speaks in domain terms (topics, offsets, configs) and returns
//! typed errors; the `server` module translates Kafka requests into calls
//! here and errors into Kafka error codes. Nothing here touches sockets.

pub mod cleaning;
pub mod meta;
pub mod producer_ids;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::config::{
    resolve_log_config, validate_topic_config, BrokerConfig, ConfigError, SchemaValidation,
};
use crate::group::{GroupConfig, GroupCoordinator, OFFSETS_TOPIC};
use crate::storage::checkpoint::{self, Checkpoint};
use crate::storage::validator;
use crate::storage::{AppendError, AppendInfo, PartitionLog, ReadError, ReadSlice};
use meta::{DataDirLock, TopicRecord};

/// Longest topic name Kafka allows.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

const RECOVERY_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
const LOG_START_CHECKPOINT: &str = "log-start-offset-checkpoint";

/// Topics Kafka treats as internal.
pub const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state"];

/// Prefix of the topics Runnel's own features keep their state in (e.g.
/// `_runnel_transforms`). They are ordinary topics to Kafka clients, but
/// listings hide them next to the internal ones.
pub const SYSTEM_TOPIC_PREFIX: &str = "_runnel_";

/// Default names of the connect worker's state topics (Kafka Connect's).
pub const CONNECT_TOPICS: &[&str] = &["connect-configs", "connect-offsets", "connect-status"];

/// Whether a listing should hide this topic unless asked for internal ones:
/// Kafka's internal topics, Runnel's own, the schema registry's and the
/// connect worker's.
pub fn is_system_topic(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
        || name.starts_with(SYSTEM_TOPIC_PREFIX)
        || name == runnel_schema_registry::SCHEMAS_TOPIC
        || CONNECT_TOPICS.contains(&name)
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Locks a mutex, ignoring poisoning: a panic elsewhere must not wedge
/// every later request (the data it guards is kept consistent by the log's
/// own write-then-publish ordering).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kafka's topic name rules: 1-249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name cannot be '{name}'"));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(format!(
            "topic name is longer than {MAX_TOPIC_NAME_LEN} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name '{name}' contains '{c}'; allowed are a-z A-Z 0-9 . _ -"
        ));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("topic id {0} does not exist")]
    UnknownTopicId(Uuid),
    #[error("partition {1} of topic '{0}' does not exist")]
    UnknownPartition(String, i32),
    #[error("invalid topic name: {0}")]
    InvalidTopic(String),
    #[error("'{0}' is an internal topic: {1}")]
    InternalTopic(String, &'static str),
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    InvalidRecord(#[from] crate::schemas::InvalidRecord),
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

/// Counters exported as metrics.
#[derive(Debug, Default)]
pub struct BrokerMetrics {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub records_in: AtomicU64,
    pub produce_requests: AtomicU64,
    pub fetch_requests: AtomicU64,
    pub requests: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_open: AtomicU64,
    pub frames_rejected: AtomicU64,
    /// Partition record sets refused by broker-side schema validation.
    pub records_rejected_by_schema: AtomicU64,
}

impl BrokerMetrics {
    /// The counters in Prometheus' text format.
    pub fn render_prometheus(&self) -> String {
        let rows: [(&str, &str, &str, &AtomicU64); 10] = [
            (
                "runnel_broker_bytes_in_total",
                "counter",
                "Record batch bytes appended by Produce.",
                &self.bytes_in,
            ),
            (
                "runnel_broker_bytes_out_total",
                "counter",
                "Record batch bytes served by Fetch.",
                &self.bytes_out,
            ),
            (
                "runnel_broker_records_in_total",
                "counter",
                "Records appended by Produce.",
                &self.records_in,
            ),
            (
                "runnel_broker_produce_requests_total",
                "counter",
                "Produce requests.",
                &self.produce_requests,
            ),
            (
                "runnel_broker_fetch_requests_total",
                "counter",
                "Fetch requests.",
                &self.fetch_requests,
            ),
            (
                "runnel_broker_requests_total",
                "counter",
                "Kafka protocol requests of every kind.",
                &self.requests,
            ),
            (
                "runnel_broker_connections_accepted_total",
                "counter",
                "Client connections accepted.",
                &self.connections_accepted,
            ),
            (
                "runnel_broker_connections_open",
                "gauge",
                "Client connections open now.",
                &self.connections_open,
            ),
            (
                "runnel_broker_frames_rejected_total",
                "counter",
                "Request frames refused (too large, malformed).",
                &self.frames_rejected,
            ),
            (
                "runnel_broker_schema_rejections_total",
                "counter",
                "Partition record sets refused by schema validation.",
                &self.records_rejected_by_schema,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// One partition: its log behind a mutex, and a channel that announces
/// every new high watermark to waiting fetches.
pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    log: Mutex<PartitionLog>,
    high_watermark: watch::Sender<i64>,
    leader_epoch: i32,
    deleted: AtomicBool,
}

/// Offsets of a partition at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub log_start: i64,
    pub high_watermark: i64,
    pub log_end: i64,
}

impl Partition {
    fn new(topic: Arc<str>, index: i32, log: PartitionLog) -> Partition {
        let (high_watermark, _) = watch::channel(log.high_watermark());
        Partition {
            topic,
            index,
            log: Mutex::new(log),
            high_watermark,
            leader_epoch: 0,
            deleted: AtomicBool::new(false),
        }
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    fn check_live(&self) -> Result<(), BrokerError> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(BrokerError::UnknownPartition(
                self.topic.to_string(),
                self.index,
            ));
        }
        Ok(())
    }

    /// Appends a producer's record set. Fsyncs before returning when the
    /// topic's flush policy asks for it.
    ///
    /// The records are validated (and recompressed if the topic wants
    /// another codec) before the log's lock is taken, so fetches and other
    /// producers of the partition do not wait for that work.
    pub async fn append(self: &Arc<Self>, records: &Bytes) -> Result<AppendInfo, BrokerError> {
        self.check_live()?;
        let rules = lock(&self.log).config().append_rules();
        let now = now_ms();
        let name = PartitionName(&self.topic, self.index);
        let batches = validator::validate(records, &rules, now, &name)?;
        let (info, high_watermark, flush_wanted) = {
            let mut log = lock(&self.log);
            let info = log.append_validated(batches, self.leader_epoch, now)?;
            (info, log.high_watermark(), log.take_flush_wanted())
        };
        if flush_wanted {
            // A segment was closed: make it durable in the background so the
            // recovery point keeps up, without delaying this produce.
            let partition = self.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = partition.flush() {
                    error!(topic = %partition.topic, partition = partition.index, error = %e, "background flush failed");
                }
            });
        }
        if let Some(file) = &info.sync_file {
            let file = file.clone();
            tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .map_err(|e| io::Error::other(e.to_string()))??;
        }
        self.high_watermark.send_replace(high_watermark);
        Ok(info)
    }

    /// Fsyncs everything appended so far and moves the recovery point. The
    /// partition stays available for appends and reads during the fsync.
    /// Blocking: call from a blocking thread.
    pub fn flush(&self) -> io::Result<()> {
        if self.deleted.load(Ordering::Acquire) {
            return Ok(());
        }
        let plan = {
            let mut log = lock(&self.log);
            if !log.needs_flush() {
                return Ok(());
            }
            log.prepare_flush(now_ms())?
        };
        plan.sync()?;
        lock(&self.log).complete_flush(&plan);
        Ok(())
    }

    /// Plans a read; see [`PartitionLog::read`].
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<Option<ReadSlice>, BrokerError> {
        self.check_live()?;
        Ok(lock(&self.log).read(offset, max_bytes, min_one_batch)?)
    }

    pub fn offsets(&self) -> PartitionOffsets {
        let log = lock(&self.log);
        PartitionOffsets {
            log_start: log.log_start_offset(),
            high_watermark: log.high_watermark(),
            log_end: log.log_end_offset(),
        }
    }

    /// A receiver that wakes when the high watermark moves.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, BrokerError> {
        Ok(lock(&self.log).offset_for_timestamp(timestamp)?)
    }

    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, BrokerError> {
        Ok(lock(&self.log).max_timestamp_offset()?)
    }

    pub fn delete_records_before(&self, offset: i64) -> Result<i64, BrokerError> {
        self.check_live()?;
        let mut log = lock(&self.log);
        let target = if offset == -1 {
            log.high_watermark()
        } else {
            offset
        };
        Ok(log.delete_records_before(target)?)
    }

    pub fn size_bytes(&self) -> u64 {
        lock(&self.log).size_bytes()
    }
}

/// `topic-index`, as Kafka names a partition in messages.
struct PartitionName<'a>(&'a str, i32);

impl std::fmt::Display for PartitionName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// A topic and its partitions. Partitions only ever grow.
pub struct Topic {
    pub name: Arc<str>,
    pub id: Uuid,
    configs: RwLock<BTreeMap<String, String>>,
    /// Derived from `configs` whenever they change.
    schema_validation: RwLock<SchemaValidation>,
    partitions: RwLock<Vec<Arc<Partition>>>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        if index < 0 {
            return None;
        }
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(index as usize)
            .cloned()
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn partition_count(&self) -> i32 {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len() as i32
    }

    /// The topic's config overrides.
    pub fn configs(&self) -> BTreeMap<String, String> {
        self.configs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_internal(&self) -> bool {
        INTERNAL_TOPICS.contains(&&*self.name)
    }

    /// The topic's broker-side schema validation (off unless configured).
    pub fn schema_validation(&self) -> SchemaValidation {
        *self
            .schema_validation
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self) -> TopicRecord {
        TopicRecord {
            name: self.name.to_string(),
            id: self.id,
            partitions: self.partition_count(),
            configs: self.configs(),
        }
    }
}

/// How a config change applies (IncrementalAlterConfigs operations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

/// The broker. Shared by every connection as `Arc<Broker>`.
pub struct Broker {
    config: BrokerConfig,
    cluster_id: String,
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    /// Serialises topic creation, deletion and config changes, and the
    /// `topics.json` writes that record them.
    admin: tokio::sync::Mutex<()>,
    metrics: BrokerMetrics,
    producer_ids: producer_ids::ProducerIdAllocator,
    groups: std::sync::OnceLock<Arc<GroupCoordinator>>,
    schemas: crate::schemas::SchemaCatalog,
    _lock: DataDirLock,
}

impl Broker {
    /// Opens the data directory: takes its lock, loads metadata and opens
    /// (and if needed recovers) every partition log.
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, BrokerError> {
        config.validate()?;
        let dir = config.data_dir.clone();
        let lock = meta::lock_data_dir(&dir)?;
        let cluster_id = meta::load_or_create_identity(&dir, config.node_id)?;
        meta::remove_deleted_dirs(&dir)?;
        let records = meta::load_topics(&dir)?;
        let recovery = read_checkpoint(&dir.join(RECOVERY_CHECKPOINT));
        let log_starts = read_checkpoint(&dir.join(LOG_START_CHECKPOINT));

        let started = std::time::Instant::now();
        let mut topics = HashMap::new();
        let mut truncated = 0u64;
        for record in records {
            let name: Arc<str> = record.name.as_str().into();
            let log_config = resolve_log_config(&record.configs, &config.log);
            let mut partitions = Vec::with_capacity(record.partitions as usize);
            for p in 0..record.partitions {
                let pdir = meta::partition_dir(&dir, &record.name, p);
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
                partitions.push(Arc::new(Partition::new(name.clone(), p, log)));
            }
            let topic = Topic {
                name: name.clone(),
                id: record.id,
                schema_validation: RwLock::new(SchemaValidation::from_configs(&record.configs)),
                configs: RwLock::new(record.configs),
                partitions: RwLock::new(partitions),
            };
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
        let broker = Arc::new(Broker {
            config,
            cluster_id,
            topics: RwLock::new(topics),
            admin: tokio::sync::Mutex::new(()),
            metrics: BrokerMetrics::default(),
            producer_ids: producer_ids::ProducerIdAllocator::open(&dir)?,
            groups: std::sync::OnceLock::new(),
            schemas: crate::schemas::SchemaCatalog::default(),
            _lock: lock,
        });
        broker.start_group_coordinator()?;
        Ok(broker)
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn metrics(&self) -> &BrokerMetrics {
        &self.metrics
    }

    pub fn producer_ids(&self) -> &producer_ids::ProducerIdAllocator {
        &self.producer_ids
    }

    /// The registry state used for broker-side schema validation.
    pub fn schemas(&self) -> &crate::schemas::SchemaCatalog {
        &self.schemas
    }

    /// The group coordinator (consumer groups and committed offsets).
    pub fn groups(&self) -> &Arc<GroupCoordinator> {
        // Set in `open` before the broker is handed out.
        self.groups
            .get()
            .expect("the group coordinator is started in Broker::open")
    }

    /// Creates `__consumer_offsets` if needed and loads the coordinator.
    fn start_group_coordinator(&self) -> Result<(), BrokerError> {
        let topic = match self.topic(OFFSETS_TOPIC) {
            Some(t) => t,
            None => {
                let mut configs = BTreeMap::new();
                configs.insert("cleanup.policy".to_string(), "compact".to_string());
                configs.insert("segment.bytes".to_string(), (100 << 20).to_string());
                let t = self.create_topic_locked(
                    OFFSETS_TOPIC,
                    self.config.offsets_topic_partitions,
                    1,
                    configs,
                    false,
                )?;
                info!(partitions = t.partition_count(), "created {OFFSETS_TOPIC}");
                t
            }
        };
        let config = GroupConfig {
            offsets_topic_partitions: topic.partition_count(),
            offsets_retention_ms: self.config.offsets_retention_minutes.saturating_mul(60_000),
            initial_rebalance_delay_ms: self.config.group_initial_rebalance_delay_ms,
            min_session_timeout_ms: self.config.group_min_session_timeout_ms,
            max_session_timeout_ms: self.config.group_max_session_timeout_ms,
            max_group_size: self.config.group_max_size,
            offset_metadata_max_bytes: self.config.offset_metadata_max_bytes,
        };
        let coordinator = GroupCoordinator::load(topic, config)?;
        let _ = self.groups.set(Arc::new(coordinator));
        Ok(())
    }

    /// Host and port clients should connect to.
    pub fn advertised_address(&self) -> (String, i32) {
        let addr = self
            .config
            .advertised_kafka_addr
            .as_deref()
            .unwrap_or(&self.config.kafka_addr);
        match addr.rsplit_once(':') {
            Some((host, port)) => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                (host.to_string(), port.parse().unwrap_or(9092))
            }
            None => (addr.to_string(), 9092),
        }
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>, BrokerError> {
        let t = self
            .topic(topic)
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_string()))?;
        t.partition(index)
            .ok_or_else(|| BrokerError::UnknownPartition(topic.to_string(), index))
    }

    /// Returns the topic, creating it with broker defaults when it does not
    /// exist and auto-creation is on.
    pub async fn topic_or_auto_create(
        &self,
        name: &str,
        allowed: bool,
    ) -> Result<Arc<Topic>, BrokerError> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        validate_topic_name(name).map_err(BrokerError::InvalidTopic)?;
        if !(allowed && self.config.auto_create_topics) {
            return Err(BrokerError::UnknownTopic(name.to_string()));
        }
        match self
            .create_topic(name, -1, -1, BTreeMap::new(), false)
            .await
        {
            Ok(t) => {
                info!(topic = name, "auto-created topic");
                Ok(t)
            }
            // Lost a race with another creator: fine.
            Err(BrokerError::TopicExists(_)) => self
                .topic(name)
                .ok_or_else(|| BrokerError::UnknownTopic(name.to_string())),
            Err(e) => Err(e),
        }
    }

    /// Checks a CreateTopics request for one topic without creating it.
    pub fn validate_new_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &BTreeMap<String, String>,
    ) -> Result<i32, BrokerError> {
        validate_topic_name(name).map_err(BrokerError::InvalidTopic)?;
        if self.topic(name).is_some() {
            return Err(BrokerError::TopicExists(name.to_string()));
        }
        let partitions = if partitions == -1 {
            self.config.default_partitions
        } else {
            partitions
        };
        let max = self.config.max_partitions_per_topic;
        if !(1..=max).contains(&partitions) {
            return Err(BrokerError::InvalidPartitions(format!(
                "number of partitions must be between 1 and {max}, got {partitions}"
            )));
        }
        if replication_factor != -1 && replication_factor != 1 {
            return Err(BrokerError::InvalidReplicationFactor(format!(
                "replication factor {replication_factor} is larger than the 1 available broker"
            )));
        }
        for (k, v) in configs {
            validate_topic_config(k, v)?;
        }
        Ok(partitions)
    }

    /// Creates a topic: records it in `topics.json`, then creates its
    /// partition directories and logs.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, BrokerError> {
        let _admin = self.admin.lock().await;
        self.create_topic_locked(name, partitions, replication_factor, configs, validate_only)
    }

    /// Creates a topic; the caller holds the admin lock (or, in `open`,
    /// has the only reference to the broker).
    fn create_topic_locked(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, BrokerError> {
        let partitions = self.validate_new_topic(name, partitions, replication_factor, &configs)?;
        let id = Uuid::new_v4();
        let name_arc: Arc<str> = name.into();
        let log_config = resolve_log_config(&configs, &self.config.log);
        let mut logs = Vec::new();
        if !validate_only {
            let mut all = self.topic_records();
            all.push(TopicRecord {
                name: name.to_string(),
                id,
                partitions,
                configs: configs.clone(),
            });
            meta::save_topics(&self.config.data_dir, &all)?;
            for p in 0..partitions {
                let pdir = meta::partition_dir(&self.config.data_dir, name, p);
                if pdir.exists() {
                    // Leftover of a topic with the same name that was never
                    // fully deleted: start clean.
                    std::fs::remove_dir_all(&pdir)?;
                }
                meta::write_partition_metadata(&pdir, id)?;
                let (log, _) = PartitionLog::open(&pdir, log_config.clone(), 0, 0, now_ms())?;
                logs.push(Arc::new(Partition::new(name_arc.clone(), p, log)));
            }
        }
        let topic = Arc::new(Topic {
            name: name_arc.clone(),
            id,
            schema_validation: RwLock::new(SchemaValidation::from_configs(&configs)),
            configs: RwLock::new(configs),
            partitions: RwLock::new(logs),
        });
        if !validate_only {
            self.topics
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name_arc, topic.clone());
            info!(topic = name, partitions, "created topic");
        }
        Ok(topic)
    }

    fn topic_records(&self) -> Vec<TopicRecord> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|t| t.record())
            .collect()
    }

    /// Deletes a topic: forgets it, then removes its data in the background.
    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, BrokerError> {
        let _admin = self.admin.lock().await;
        let topic = self
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
        if topic.is_internal() {
            return Err(BrokerError::InternalTopic(
                name.to_string(),
                "it cannot be deleted",
            ));
        }
        let mut remaining = self.topic_records();
        remaining.retain(|t| t.name != name);
        meta::save_topics(&self.config.data_dir, &remaining)?;
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
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
        info!(topic = name, "deleted topic");
        Ok(topic.id)
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().await;
        let topic = self
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
        if topic.is_internal() {
            return Err(BrokerError::InternalTopic(
                name.to_string(),
                "its partition count is fixed",
            ));
        }
        let current = topic.partition_count();
        if count <= current {
            return Err(BrokerError::InvalidPartitions(format!(
                "topic '{name}' has {current} partitions; the new count must be larger, got {count}"
            )));
        }
        let max = self.config.max_partitions_per_topic;
        if count > max {
            return Err(BrokerError::InvalidPartitions(format!(
                "number of partitions must be at most {max}"
            )));
        }
        if validate_only {
            return Ok(());
        }
        let log_config = resolve_log_config(&topic.configs(), &self.config.log);
        let mut added = Vec::new();
        for p in current..count {
            let pdir = meta::partition_dir(&self.config.data_dir, name, p);
            meta::write_partition_metadata(&pdir, topic.id)?;
            let (log, _) = PartitionLog::open(&pdir, log_config.clone(), 0, 0, now_ms())?;
            added.push(Arc::new(Partition::new(topic.name.clone(), p, log)));
        }
        // Record the new count first: a crash before publishing leaves
        // directories that the next start picks up, never the reverse.
        let mut records = self.topic_records();
        if let Some(r) = records.iter_mut().find(|r| r.name == name) {
            r.partitions = count;
        }
        meta::save_topics(&self.config.data_dir, &records)?;
        topic
            .partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .extend(added);
        info!(topic = name, from = current, to = count, "added partitions");
        Ok(())
    }

    /// Applies config changes to a topic (all or nothing).
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        changes: &[ConfigChange],
        replace_all: bool,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().await;
        let topic = self
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
        let mut configs = if replace_all {
            BTreeMap::new()
        } else {
            topic.configs()
        };
        for change in changes {
            match change {
                ConfigChange::Set(k, v) => {
                    validate_topic_config(k, v)?;
                    configs.insert(k.clone(), v.clone());
                }
                ConfigChange::Delete(k) => {
                    crate::config::topic_config_def(k)
                        .ok_or_else(|| ConfigError(format!("unknown topic config '{k}'")))?;
                    configs.remove(k);
                }
                ConfigChange::Append(k, v) | ConfigChange::Subtract(k, v) => {
                    let def = crate::config::topic_config_def(k)
                        .ok_or_else(|| ConfigError(format!("unknown topic config '{k}'")))?;
                    if def.kind != crate::config::ConfigType::List {
                        return Err(ConfigError(format!(
                            "{k} is not a list; APPEND and SUBTRACT need a list config"
                        ))
                        .into());
                    }
                    let current = configs
                        .get(k)
                        .cloned()
                        .unwrap_or_else(|| def.default_value(&self.config.log));
                    let mut items: Vec<String> = current
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect();
                    if matches!(change, ConfigChange::Append(..)) {
                        if !items.iter().any(|i| i == v) {
                            items.push(v.clone());
                        }
                    } else {
                        items.retain(|i| i != v);
                    }
                    let joined = items.join(",");
                    validate_topic_config(k, &joined)?;
                    configs.insert(k.clone(), joined);
                }
            }
        }
        if validate_only {
            return Ok(());
        }
        *topic.configs.write().unwrap_or_else(|e| e.into_inner()) = configs.clone();
        *topic
            .schema_validation
            .write()
            .unwrap_or_else(|e| e.into_inner()) = SchemaValidation::from_configs(&configs);
        meta::save_topics(&self.config.data_dir, &self.topic_records())?;
        let log_config = resolve_log_config(&configs, &self.config.log);
        for partition in topic.partitions() {
            lock(&partition.log).set_config(log_config.clone());
        }
        info!(topic = name, "altered topic configs");
        Ok(())
    }

    /// Applies retention to every partition.
    pub fn apply_retention(&self) {
        let now = now_ms();
        let mut deleted_total = 0;
        for topic in self.topics() {
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
            if let Err(e) = self.write_log_start_checkpoint() {
                error!(error = %e, "writing log start checkpoint failed");
            }
        }
    }

    /// Fsyncs every partition with new data and records recovery points.
    pub fn flush_and_checkpoint(&self, closing: bool) -> io::Result<()> {
        let now = now_ms();
        let mut recovery = Checkpoint::new();
        for topic in self.topics() {
            for partition in topic.partitions() {
                if partition.deleted.load(Ordering::Acquire) {
                    continue;
                }
                let result = if closing {
                    lock(&partition.log).close(now)
                } else {
                    partition.flush()
                };
                if let Err(e) = result {
                    error!(topic = %topic.name, partition = partition.index, error = %e, "flush failed");
                }
                let recovery_point = lock(&partition.log).recovery_point();
                recovery.insert((topic.name.to_string(), partition.index), recovery_point);
            }
        }
        checkpoint::write(&self.config.data_dir.join(RECOVERY_CHECKPOINT), &recovery)?;
        self.write_log_start_checkpoint()
    }

    fn write_log_start_checkpoint(&self) -> io::Result<()> {
        let mut starts = Checkpoint::new();
        for topic in self.topics() {
            for partition in topic.partitions() {
                starts.insert(
                    (topic.name.to_string(), partition.index),
                    partition.offsets().log_start,
                );
            }
        }
        checkpoint::write(&self.config.data_dir.join(LOG_START_CHECKPOINT), &starts)
    }

    /// Records a DeleteRecords change durably.
    pub fn log_start_changed(&self) {
        if let Err(e) = self.write_log_start_checkpoint() {
            error!(error = %e, "writing log start checkpoint failed");
        }
    }

    /// Runs retention, periodic flushing, the log cleaner and group
    /// maintenance until the broker is dropped.
    pub fn spawn_background_tasks(self: &Arc<Self>) {
        cleaning::spawn_log_cleaner(self);
        self.groups().spawn_background_tasks(Duration::from_millis(
            self.config.offsets_retention_check_interval_ms.max(100),
        ));
        let weak = Arc::downgrade(self);
        let retention_every =
            Duration::from_millis(self.config.retention_check_interval_ms.max(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(retention_every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(broker) = weak.upgrade() else { break };
                let _ = tokio::task::spawn_blocking(move || broker.apply_retention()).await;
            }
        });
        let weak = Arc::downgrade(self);
        let flush_every = Duration::from_millis(self.config.flush_checkpoint_interval_ms.max(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(flush_every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(broker) = weak.upgrade() else { break };
                let result =
                    tokio::task::spawn_blocking(move || broker.flush_and_checkpoint(false)).await;
                if let Ok(Err(e)) = result {
                    error!(error = %e, "checkpoint failed");
                }
            }
        });
    }

    /// Flushes every log and writes checkpoints; call before exiting.
    pub fn shutdown(&self) -> io::Result<()> {
        self.flush_and_checkpoint(true)?;
        info!("storage flushed and checkpointed");
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("has space").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
    }
}
