//! The broker's state: topics, their partitions' logs, and the background
//! work that keeps them healthy (retention, flushing, checkpoints, and the
//! log cleaner in `cleaning.rs`).
//!
//! This layer speaks in domain terms (topics, offsets, configs) and returns
//! typed errors; the `server` module translates Kafka requests into calls
//! here and errors into Kafka error codes. Nothing here touches sockets.

pub mod cleaning;
pub mod meta;
mod partition;
pub mod producer_ids;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::config::{
    resolve_log_config, validate_dynamic_broker_configs, validate_group_configs,
    validate_topic_config, BrokerConfig, ConfigError, ConfigType, LogDefaults, SchemaValidation,
};
use crate::group::{GroupConfig, GroupCoordinator, OFFSETS_TOPIC};
use crate::log_limit::LogLimit;
use crate::storage::checkpoint::{self, Checkpoint};
use crate::storage::{AppendError, PartitionLog, ReadError};
use meta::{DataDirLock, DynamicConfigs, TopicRecord};
pub use partition::{Partition, PartitionOffsets};

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
    /// A request Kafka refuses as INVALID_REQUEST (e.g. a broker config
    /// value that does not validate).
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    InvalidRecord(#[from] crate::schemas::InvalidRecord),
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

/// Why the broker closed a client connection. Each reason has its own
/// counter (`runnel_broker_connections_closed_total{reason="..."}`) and its
/// own rate-limited log line in the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A frame size outside the limits (too small, negative, too large).
    FrameSize,
    /// An API key the broker does not know.
    UnknownApiKey,
    /// An API version the broker does not serve.
    UnsupportedVersion,
    /// A request that does not decode.
    MalformedRequest,
    /// A request that did not arrive in full within the request read
    /// timeout (or sent nothing for the idle timeout in the middle).
    RequestReadTimeout,
    /// No request for the idle timeout (routine housekeeping, as in Kafka).
    Idle,
    /// A response that made no progress for the idle timeout: the client
    /// stopped reading.
    ResponseWriteTimeout,
    /// The broker's connection limit was reached.
    ConnectionLimit,
    /// The client address's connection limit was reached.
    IpConnectionLimit,
    /// An acks=0 produce failed: Kafka closes the connection so the client
    /// notices.
    UnacknowledgedProduceFailed,
    /// The response could not be encoded.
    EncodeFailed,
}

impl CloseReason {
    pub const ALL: [CloseReason; 11] = [
        CloseReason::FrameSize,
        CloseReason::UnknownApiKey,
        CloseReason::UnsupportedVersion,
        CloseReason::MalformedRequest,
        CloseReason::RequestReadTimeout,
        CloseReason::Idle,
        CloseReason::ResponseWriteTimeout,
        CloseReason::ConnectionLimit,
        CloseReason::IpConnectionLimit,
        CloseReason::UnacknowledgedProduceFailed,
        CloseReason::EncodeFailed,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::FrameSize => "frame_size",
            CloseReason::UnknownApiKey => "unknown_api_key",
            CloseReason::UnsupportedVersion => "unsupported_version",
            CloseReason::MalformedRequest => "malformed_request",
            CloseReason::RequestReadTimeout => "request_read_timeout",
            CloseReason::Idle => "idle",
            CloseReason::ResponseWriteTimeout => "response_write_timeout",
            CloseReason::ConnectionLimit => "connection_limit",
            CloseReason::IpConnectionLimit => "ip_connection_limit",
            CloseReason::UnacknowledgedProduceFailed => "acks0_produce_failed",
            CloseReason::EncodeFailed => "encode_failed",
        }
    }

    /// Whether the reason is bad input from the peer (a refused frame).
    pub fn is_bad_frame(self) -> bool {
        matches!(
            self,
            CloseReason::FrameSize
                | CloseReason::UnknownApiKey
                | CloseReason::UnsupportedVersion
                | CloseReason::MalformedRequest
        )
    }
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
    /// Bytes of requests read or being read and not yet handled (gauge).
    pub inflight_request_bytes: AtomicU64,
    /// Connections the broker closed, indexed by `CloseReason as usize`.
    connections_closed: [AtomicU64; CloseReason::ALL.len()],
    /// Storage write errors; shared with every partition.
    pub storage: Arc<StorageHealth>,
}

impl BrokerMetrics {
    /// Counts a connection the broker closed (and a refused frame when
    /// the reason is bad input).
    pub fn connection_closed(&self, reason: CloseReason) {
        self.connections_closed[reason as usize].fetch_add(1, Ordering::Relaxed);
        if reason.is_bad_frame() {
            self.frames_rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Connections closed for `reason` so far.
    pub fn connections_closed(&self, reason: CloseReason) -> u64 {
        self.connections_closed[reason as usize].load(Ordering::Relaxed)
    }

    /// The counters in Prometheus' text format.
    pub fn render_prometheus(&self) -> String {
        let rows: [(&str, &str, &str, &AtomicU64); 12] = [
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
                "Request frames refused (bad size, unknown API, unsupported version, malformed).",
                &self.frames_rejected,
            ),
            (
                "runnel_broker_schema_rejections_total",
                "counter",
                "Partition record sets refused by schema validation.",
                &self.records_rejected_by_schema,
            ),
            (
                "runnel_broker_inflight_request_bytes",
                "gauge",
                "Bytes of requests received and not yet handled (counted as they arrive).",
                &self.inflight_request_bytes,
            ),
            (
                "runnel_broker_storage_errors_total",
                "counter",
                "Failed log writes and fsyncs (appends fail with KAFKA_STORAGE_ERROR).",
                &self.storage.errors,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        let name = "runnel_broker_connections_closed_total";
        out.push_str(&format!(
            "# HELP {name} Client connections closed by the broker, by reason.\n# TYPE {name} counter\n"
        ));
        for reason in CloseReason::ALL {
            out.push_str(&format!(
                "{name}{{reason=\"{}\"}} {}\n",
                reason.label(),
                self.connections_closed(reason)
            ));
        }
        let name = "runnel_broker_disk_full";
        out.push_str(&format!(
            "# HELP {name} 1 from a write that failed for lack of space (or quota) until a write succeeds.\n# TYPE {name} gauge\n{name} {}\n",
            u8::from(self.storage.disk_full())
        ));
        let name = "runnel_broker_last_storage_error_timestamp_seconds";
        let last_ms = self.storage.last_error_ms();
        out.push_str(&format!(
            "# HELP {name} Unix time of the last storage write error (0: none).\n# TYPE {name} gauge\n{name} {}.{:03}\n",
            last_ms / 1000,
            last_ms % 1000
        ));
        out
    }
}

/// Whether an I/O error means the disk (or the user's quota) is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// What appends and flushes report about the disk: how many writes failed,
/// whether the last failure was a full disk (until a write succeeds), and
/// when the last one happened. Failures are logged at ERROR, at most once
/// per interval, so a full disk under load leaves a trace without flooding
/// the log.
#[derive(Debug, Default)]
pub struct StorageHealth {
    errors: AtomicU64,
    disk_full: AtomicBool,
    last_error_ms: std::sync::atomic::AtomicI64,
    /// One limit per kind, so a full disk is never hidden behind the line
    /// of another I/O error.
    full_log: LogLimit,
    error_log: LogLimit,
}

impl StorageHealth {
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn disk_full(&self) -> bool {
        self.disk_full.load(Ordering::Relaxed)
    }

    /// Unix milliseconds of the last failure, 0 if none.
    pub fn last_error_ms(&self) -> i64 {
        self.last_error_ms.load(Ordering::Relaxed)
    }

    /// Records a failed write of a partition (append, roll, fsync) and
    /// returns whether it was logged.
    pub fn write_failed(
        &self,
        topic: &str,
        partition: i32,
        partition_dir: &Path,
        error: &io::Error,
        now: Instant,
    ) -> bool {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.last_error_ms.store(now_ms(), Ordering::Relaxed);
        let full = is_disk_full(error);
        if full {
            self.disk_full.store(true, Ordering::Relaxed);
        }
        let log = if full {
            &self.full_log
        } else {
            &self.error_log
        };
        let Some(suppressed) = log.admit_at(now) else {
            return false;
        };
        let data_dir = partition_dir.parent().unwrap_or(partition_dir);
        if full {
            error!(
                topic,
                partition,
                data_dir = %data_dir.display(),
                error = %error,
                suppressed,
                "disk full: a write to the log failed; produce is refused with KAFKA_STORAGE_ERROR until space is freed"
            );
        } else {
            error!(
                topic,
                partition,
                data_dir = %data_dir.display(),
                error = %error,
                suppressed,
                "a write to the log failed; produce is refused with KAFKA_STORAGE_ERROR"
            );
        }
        true
    }

    /// Records a successful append: a full disk has room again.
    pub fn write_succeeded(&self) {
        // A load first: the flag is almost always clear, and this runs on
        // every append.
        if self.disk_full.load(Ordering::Relaxed) && self.disk_full.swap(false, Ordering::Relaxed) {
            info!("a write to the log succeeded again after the disk was full");
        }
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

/// Which level of dynamic broker configs a change is for: this broker's
/// (resource name = its id) or the cluster default (resource name "").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerConfigScope {
    Broker,
    ClusterDefault,
}

/// Applies changes to a set of config overrides, with Kafka's rules:
/// DELETE of a key that is not set does nothing; APPEND and SUBTRACT only
/// work on list configs (`list_default` gives a list config's default, and
/// `None` for every other key) and take comma-separated items. Values are
/// validated by the caller, on the result.
fn apply_config_changes(
    configs: &mut BTreeMap<String, String>,
    changes: &[ConfigChange],
    list_default: impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for change in changes {
        match change {
            ConfigChange::Set(k, v) => {
                configs.insert(k.clone(), v.clone());
            }
            ConfigChange::Delete(k) => {
                configs.remove(k);
            }
            ConfigChange::Append(k, v) | ConfigChange::Subtract(k, v) => {
                let op = if matches!(change, ConfigChange::Append(..)) {
                    "APPEND"
                } else {
                    "SUBTRACT"
                };
                let default = list_default(k).ok_or_else(|| {
                    ConfigError(format!(
                        "Can't {op} to key {k} because its type is not LIST."
                    ))
                })?;
                let current = configs.get(k).cloned().unwrap_or(default);
                let mut items: Vec<String> = current
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if op == "APPEND" {
                        if !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        }
                    } else if let Some(at) = items.iter().position(|i| i == item) {
                        items.remove(at);
                    }
                }
                configs.insert(k.clone(), items.join(","));
            }
        }
    }
    Ok(())
}

/// The static topic defaults with the dynamic broker configs on top (this
/// broker's win over the cluster default's, key by key).
fn effective_log_defaults(static_defaults: &LogDefaults, dynamic: &DynamicConfigs) -> LogDefaults {
    let mut defaults = static_defaults.clone();
    defaults.dynamic = dynamic.cluster_default.clone();
    defaults
        .dynamic
        .extend(dynamic.broker.iter().map(|(k, v)| (k.clone(), v.clone())));
    defaults
}

/// Loads `dynamic-configs.json`, dropping (with a warning) what no longer
/// validates, e.g. after a downgrade.
fn load_valid_dynamic_configs(dir: &Path) -> io::Result<DynamicConfigs> {
    let mut dynamic = meta::load_dynamic_configs(dir)?;
    for (level, configs) in [
        ("broker", &mut dynamic.broker),
        ("cluster default", &mut dynamic.cluster_default),
    ] {
        configs.retain(|k, v| {
            let one = BTreeMap::from([(k.clone(), v.clone())]);
            match validate_dynamic_broker_configs(&one) {
                Ok(()) => true,
                Err(e) => {
                    warn!(level, key = %k, error = %e, "ignoring a stored dynamic broker config");
                    false
                }
            }
        });
    }
    dynamic
        .groups
        .retain(|group, configs| match validate_group_configs(configs) {
            Ok(()) => true,
            Err(e) => {
                warn!(group = %group, error = %e, "ignoring stored group configs");
                false
            }
        });
    Ok(dynamic)
}

/// The broker. Shared by every connection as `Arc<Broker>`.
pub struct Broker {
    /// The configuration the broker started with (file, flags, defaults).
    config: BrokerConfig,
    /// Configs changed at runtime (broker, cluster default, groups).
    dynamic: RwLock<DynamicConfigs>,
    /// Topic defaults in effect: `config.log` with the dynamic broker
    /// configs applied.
    log_defaults: RwLock<Arc<LogDefaults>>,
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
        meta::finish_pending_partitions(&dir, &records)?;
        let dynamic = load_valid_dynamic_configs(&dir)?;
        let log_defaults = effective_log_defaults(&config.log, &dynamic);
        let recovery = read_checkpoint(&dir.join(RECOVERY_CHECKPOINT));
        let log_starts = read_checkpoint(&dir.join(LOG_START_CHECKPOINT));

        let started = std::time::Instant::now();
        let metrics = BrokerMetrics::default();
        let mut topics = HashMap::new();
        let mut truncated = 0u64;
        for record in records {
            let name: Arc<str> = record.name.as_str().into();
            let log_config = resolve_log_config(&record.configs, &log_defaults);
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
                partitions.push(Arc::new(Partition::new(
                    name.clone(),
                    p,
                    log,
                    metrics.storage.clone(),
                )));
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
            dynamic: RwLock::new(dynamic),
            log_defaults: RwLock::new(Arc::new(log_defaults)),
            cluster_id,
            topics: RwLock::new(topics),
            admin: tokio::sync::Mutex::new(()),
            metrics,
            producer_ids: producer_ids::ProducerIdAllocator::open(&dir)?,
            groups: std::sync::OnceLock::new(),
            schemas: crate::schemas::SchemaCatalog::default(),
            _lock: lock,
        });
        broker.start_group_coordinator()?;
        Ok(broker)
    }

    /// The configuration the broker started with. Topic defaults may have
    /// changed since: see [`Broker::log_defaults`].
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The topic defaults in effect (dynamic broker configs applied).
    pub fn log_defaults(&self) -> Arc<LogDefaults> {
        self.log_defaults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The configs changed at runtime.
    pub fn dynamic_configs(&self) -> DynamicConfigs {
        self.dynamic
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
        if partitions < 1 {
            return Err(BrokerError::InvalidPartitions(
                "Number of partitions was set to an invalid non-positive value.".into(),
            ));
        }
        if partitions > max {
            return Err(BrokerError::InvalidPartitions(format!(
                "number of partitions must be at most {max}, got {partitions}"
            )));
        }
        if replication_factor == 0 || replication_factor < -1 {
            return Err(BrokerError::InvalidReplicationFactor(
                "Replication factor must be larger than 0, or -1 to use the default value.".into(),
            ));
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

    /// Creates a topic with all its partitions, or nothing (see
    /// `add_partitions_atomically`).
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
        let log_config = resolve_log_config(&configs, &self.log_defaults());
        let mut logs = Vec::new();
        if !validate_only {
            let mut all = self.topic_records();
            all.push(TopicRecord {
                name: name.to_string(),
                id,
                partitions,
                configs: configs.clone(),
            });
            logs = self
                .add_partitions_atomically(name, id, 0..partitions, &log_config, &all)?
                .into_iter()
                .enumerate()
                .map(|(p, log)| {
                    Arc::new(Partition::new(
                        name_arc.clone(),
                        p as i32,
                        log,
                        self.metrics.storage.clone(),
                    ))
                })
                .collect();
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

    /// Creates the partitions `range` of topic `name` (id `id`) all or
    /// none, on disk and in `topics.json` (which becomes `records`): each
    /// partition is made under a temporary name, `topics.json` is written
    /// once every one exists, and only then do the directories get their
    /// final names. A failure before that point removes what was made; a
    /// crash is finished or undone on the next start (see `meta`).
    fn add_partitions_atomically(
        &self,
        name: &str,
        id: Uuid,
        range: std::ops::Range<i32>,
        log_config: &crate::storage::LogConfig,
        records: &[TopicRecord],
    ) -> Result<Vec<PartitionLog>, BrokerError> {
        let data_dir = &self.config.data_dir;
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
        if let Err(e) = meta::save_topics(data_dir, records) {
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
                let back = meta::save_topics(data_dir, &self.topic_records()).and_then(|()| {
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
        let log_config = resolve_log_config(&topic.configs(), &self.log_defaults());
        let mut records = self.topic_records();
        if let Some(r) = records.iter_mut().find(|r| r.name == name) {
            r.partitions = count;
        }
        let added: Vec<Arc<Partition>> = self
            .add_partitions_atomically(name, topic.id, current..count, &log_config, &records)?
            .into_iter()
            .zip(current..count)
            .map(|(log, p)| {
                Arc::new(Partition::new(
                    topic.name.clone(),
                    p,
                    log,
                    self.metrics.storage.clone(),
                ))
            })
            .collect();
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
        let defaults = self.log_defaults();
        apply_config_changes(&mut configs, changes, |k| {
            crate::config::topic_config_def(k)
                .filter(|def| def.kind == ConfigType::List)
                .map(|def| def.default_value(&defaults))
        })?;
        for (k, v) in &configs {
            validate_topic_config(k, v)?;
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
        let log_config = resolve_log_config(&configs, &self.log_defaults());
        for partition in topic.partitions() {
            lock(&partition.log).set_config(log_config.clone());
        }
        info!(topic = name, "altered topic configs");
        Ok(())
    }

    /// Changes dynamic broker configs, for this broker or as the cluster
    /// default (all or nothing), stores them in `dynamic-configs.json` and
    /// applies them at once: every topic without its own override follows
    /// the new defaults.
    pub async fn alter_broker_configs(
        &self,
        scope: BrokerConfigScope,
        changes: &[ConfigChange],
        replace_all: bool,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().await;
        let mut dynamic = self.dynamic_configs();
        let level = match scope {
            BrokerConfigScope::Broker => &mut dynamic.broker,
            BrokerConfigScope::ClusterDefault => &mut dynamic.cluster_default,
        };
        if replace_all {
            level.clear();
        }
        let current = effective_log_defaults(&self.config.log, &self.dynamic_configs());
        apply_config_changes(level, changes, |k| {
            let key = crate::config::dynamic_broker_key(k)?;
            (key.kind() == ConfigType::List).then(|| match key {
                crate::config::DynamicBrokerKey::TopicDefault(def) => def.default_value(&current),
                _ => String::new(),
            })
        })?;
        // Kafka refuses broker config values that do not validate with
        // INVALID_REQUEST (KAFKA-13609), unlike topic configs.
        validate_dynamic_broker_configs(level).map_err(|e| BrokerError::InvalidRequest(e.0))?;
        if validate_only {
            return Ok(());
        }
        meta::save_dynamic_configs(&self.config.data_dir, &dynamic)?;
        let defaults = Arc::new(effective_log_defaults(&self.config.log, &dynamic));
        *self.dynamic.write().unwrap_or_else(|e| e.into_inner()) = dynamic;
        *self.log_defaults.write().unwrap_or_else(|e| e.into_inner()) = defaults.clone();
        for topic in self.topics() {
            let log_config = resolve_log_config(&topic.configs(), &defaults);
            for partition in topic.partitions() {
                lock(&partition.log).set_config(log_config.clone());
            }
        }
        info!(?scope, "altered dynamic broker configs");
        Ok(())
    }

    /// A group's configs (GROUP resource), as set.
    pub fn group_configs(&self, group: &str) -> BTreeMap<String, String> {
        self.dynamic
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .groups
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// Changes a group's configs (all or nothing) and stores them.
    pub async fn alter_group_configs(
        &self,
        group: &str,
        changes: &[ConfigChange],
        replace_all: bool,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().await;
        let mut dynamic = self.dynamic_configs();
        let mut configs = if replace_all {
            BTreeMap::new()
        } else {
            dynamic.groups.get(group).cloned().unwrap_or_default()
        };
        // No group config is a list.
        apply_config_changes(&mut configs, changes, |_| None)?;
        validate_group_configs(&configs)?;
        if validate_only {
            return Ok(());
        }
        if configs.is_empty() {
            dynamic.groups.remove(group);
        } else {
            dynamic.groups.insert(group.to_string(), configs);
        }
        meta::save_dynamic_configs(&self.config.data_dir, &dynamic)?;
        *self.dynamic.write().unwrap_or_else(|e| e.into_inner()) = dynamic;
        info!(group, "altered group configs");
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
        checkpoint::write(&self.config.data_dir.join(RECOVERY_CHECKPOINT), &recovery)?;
        let starts = self.write_log_start_checkpoint()?;
        // A log cut by a truncation keeps its own floor until checkpoints
        // taken after the cut are on disk.
        for topic in self.topics() {
            for partition in topic.partitions() {
                let mut log = lock(&partition.log);
                if log.has_truncation_checkpoint() {
                    let key = (topic.name.to_string(), partition.index);
                    if let (Some(&rp), Some(&start)) = (recovery.get(&key), starts.get(&key)) {
                        log.checkpoints_written(rp, start);
                    }
                }
            }
        }
        Ok(())
    }

    fn write_log_start_checkpoint(&self) -> io::Result<Checkpoint> {
        let mut starts = Checkpoint::new();
        for topic in self.topics() {
            for partition in topic.partitions() {
                starts.insert(
                    (topic.name.to_string(), partition.index),
                    partition.offsets().log_start,
                );
            }
        }
        checkpoint::write(&self.config.data_dir.join(LOG_START_CHECKPOINT), &starts)?;
        Ok(starts)
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
    use bytes::Bytes;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("has space").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
    }

    #[test]
    fn storage_health_counts_every_failure_flags_a_full_disk_and_logs_once_per_interval() {
        let health = StorageHealth::default();
        let dir = Path::new("/data/orders-3");
        let enospc = io::Error::from_raw_os_error(libc::ENOSPC);
        let edquot = io::Error::from_raw_os_error(libc::EDQUOT);
        let eio = io::Error::from_raw_os_error(libc::EIO);
        assert!(is_disk_full(&enospc) && is_disk_full(&edquot) && !is_disk_full(&eio));

        let t0 = Instant::now();
        assert!(!health.disk_full());
        assert_eq!(health.last_error_ms(), 0);
        assert!(health.write_failed("orders", 3, dir, &eio, t0), "logged");
        assert!(!health.disk_full(), "an I/O error is not a full disk");
        assert!(health.last_error_ms() > 0);
        let logged: Vec<bool> = [1, 500, 9_999, 10_000, 10_001]
            .into_iter()
            .map(|ms| {
                health.write_failed("orders", 3, dir, &enospc, t0 + Duration::from_millis(ms))
            })
            .collect();
        assert_eq!(
            logged,
            [true, false, false, false, true],
            "the first full disk is logged even right after another error"
        );
        assert_eq!(health.errors(), 6, "every failure is counted");
        assert!(health.disk_full());

        health.write_succeeded();
        assert!(!health.disk_full(), "a write that succeeds clears the flag");
        assert_eq!(health.errors(), 6);
        let metrics = BrokerMetrics {
            storage: Arc::new(health),
            ..Default::default()
        };
        let text = metrics.render_prometheus();
        assert!(
            text.contains("\nrunnel_broker_storage_errors_total 6\n"),
            "{text}"
        );
        assert!(text.contains("\nrunnel_broker_disk_full 0\n"), "{text}");
        assert!(
            !text.contains("runnel_broker_last_storage_error_timestamp_seconds 0.000"),
            "{text}"
        );
    }

    #[test]
    fn closed_connections_are_counted_by_reason_and_bad_frames_as_rejected() {
        let metrics = BrokerMetrics::default();
        metrics.connection_closed(CloseReason::MalformedRequest);
        metrics.connection_closed(CloseReason::MalformedRequest);
        metrics.connection_closed(CloseReason::RequestReadTimeout);
        assert_eq!(metrics.frames_rejected.load(Ordering::Relaxed), 2);
        let text = metrics.render_prometheus();
        for line in [
            "runnel_broker_connections_closed_total{reason=\"malformed_request\"} 2",
            "runnel_broker_connections_closed_total{reason=\"request_read_timeout\"} 1",
            "runnel_broker_connections_closed_total{reason=\"ip_connection_limit\"} 0",
            "runnel_broker_inflight_request_bytes 0",
            "runnel_broker_last_storage_error_timestamp_seconds 0.000",
        ] {
            assert!(text.contains(line), "no '{line}' in:\n{text}");
        }
    }

    /// One uncompressed batch of `count` small records.
    fn batch(count: usize) -> Bytes {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32 - 1,
                timestamp: 1000,
                key: None,
                value: Some(Bytes::from(vec![b'v'; 600])),
                headers: Default::default(),
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_append_reaches_the_broker_metrics_and_a_later_success_clears_disk_full() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let broker = Broker::open(BrokerConfig {
            data_dir: data_dir.clone(),
            ..Default::default()
        })
        .unwrap();
        let configs = BTreeMap::from([("segment.bytes".to_string(), "1024".to_string())]);
        let topic = broker
            .create_topic("t", 1, 1, configs, false)
            .await
            .unwrap();
        let partition = topic.partition(0).unwrap();
        partition.append(&batch(1)).await.unwrap();
        broker
            .metrics()
            .storage
            .disk_full
            .store(true, Ordering::Relaxed);

        // The next append has to roll to a new segment file, and the
        // partition's directory is gone: a real I/O error.
        let moved = dir.path().join("moved");
        std::fs::rename(meta::partition_dir(&data_dir, "t", 0), &moved).unwrap();
        let err = partition.append(&batch(1)).await.unwrap_err();
        assert!(
            matches!(err, BrokerError::Append(AppendError::Io(_))),
            "{err:?}"
        );
        let storage = &broker.metrics().storage;
        assert_eq!(storage.errors(), 1);
        assert!(storage.last_error_ms() > 0);
        assert!(storage.disk_full(), "not cleared by a failure");

        // Refusals that are not storage errors are not counted.
        assert!(partition
            .append(&Bytes::from_static(b"junk"))
            .await
            .is_err());
        assert_eq!(storage.errors(), 1);

        std::fs::rename(&moved, meta::partition_dir(&data_dir, "t", 0)).unwrap();
        partition.append(&batch(1)).await.unwrap();
        assert!(!storage.disk_full(), "cleared by the append that succeeded");
        assert_eq!(storage.errors(), 1);
    }
}
