//! Broker configuration and the per-topic configuration table.
//!
//! [`BrokerConfig`] is what `runnel serve` reads from its YAML file, flags and
//! environment. Topic configs are Kafka's (`retention.ms`, `cleanup.policy`,
//! ...): a topic stores only its overrides, and every other key falls back to
//! the broker default named by its synonym (`log.retention.ms`, ...).
//! [`TOPIC_CONFIGS`] is the single table that validates, documents and
//! resolves them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::storage::validator::TopicCompression;
use crate::storage::{LogConfig, TimestampType};

/// Everything the broker needs to start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's id in the cluster.
    pub node_id: i32,
    /// Where partitions and metadata are stored.
    pub data_dir: PathBuf,
    /// Address the Kafka protocol listener binds to.
    pub kafka_addr: String,
    /// Address clients are told to connect to (defaults to `kafka_addr`).
    pub advertised_kafka_addr: Option<String>,
    /// The voters of the metadata quorum, `id@host:port,...` (Kafka's
    /// `controller.quorum.voters`). Unset: a quorum of this node alone,
    /// which needs no controller listener.
    pub controller_quorum: Option<String>,
    /// What this node runs (Kafka's `process.roles`): `broker,controller`
    /// (a broker and a voter of the metadata quorum, the default) or
    /// `broker` (a broker that follows the quorum without voting: it is
    /// not in `controller_quorum`, and the quorum's leader sends it the
    /// metadata log at its `controller_addr`).
    pub process_roles: String,
    /// Where this node's controller listens for the other voters (its own
    /// entry's address in `controller_quorum` when unset).
    pub controller_addr: Option<String>,
    /// A follower that has not caught up with its leader for this long
    /// leaves the ISR (Kafka's `replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// A broker the quorum's leader hears no heartbeat from for this long
    /// is fenced: its partitions get new leaders from their ISRs (Kafka's
    /// `broker.session.timeout.ms`). A broker that crashed is fenced
    /// sooner: one silent for two heartbeat intervals whose Kafka listener
    /// refuses connections (nothing listens: the process is gone).
    pub broker_session_timeout_ms: u64,
    /// How often a broker heartbeats to the quorum's leader (Kafka's
    /// `broker.heartbeat.interval.ms`); at most half the session timeout.
    pub broker_heartbeat_interval_ms: u64,
    /// The metadata quorum's leader moves partition leadership back to the
    /// preferred replica (the first of a partition's replicas) when it is
    /// live and in sync: every `leader_imbalance_check_interval_seconds`
    /// and as soon as a broker that returned is back in the ISRs (Kafka's
    /// `auto.leader.rebalance.enable`).
    pub auto_leader_rebalance_enable: bool,
    /// How often the leader balance is checked (Kafka's
    /// `leader.imbalance.check.interval.seconds`).
    pub leader_imbalance_check_interval_seconds: u64,
    /// A broker's preferred partitions are handed back to it only when more
    /// than this share of them is led elsewhere (Kafka's
    /// `leader.imbalance.per.broker.percentage`).
    pub leader_imbalance_per_broker_percentage: u32,
    /// Address of the broker's admin HTTP listener: `/metrics` (Prometheus
    /// text) and the web console; `off` runs none (Redpanda's admin port).
    pub admin_addr: String,
    /// Host names (besides loopback names and IP addresses) the web console
    /// answers under, e.g. `console.example.com` or `*.example.com`: a
    /// request naming any other host is refused, so a page the user visits
    /// cannot reach the console through a DNS name it controls.
    pub admin_allowed_hosts: Vec<String>,
    /// Address of the schema registry's REST API, which `runnel serve`
    /// runs next to the broker; `off` runs none.
    pub registry_addr: String,
    /// Address of the connect worker's REST API, which `runnel serve`
    /// runs next to the broker; `off` runs none.
    pub connect_addr: String,
    /// Timeouts and connection limits of the registry's and the connect
    /// worker's HTTP servers.
    pub http: HttpConfig,
    /// Create a topic when a client asks for metadata of, or produces to,
    /// a topic that does not exist (Kafka's `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics and of CreateTopics without a
    /// count (Kafka's `num.partitions`).
    pub default_partitions: i32,
    /// Largest request frame accepted (Kafka's `socket.request.max.bytes`).
    pub max_request_bytes: usize,
    /// Largest frame for requests other than Produce; such requests carry
    /// no record data and are decoded into structures, so they get a tighter
    /// bound.
    pub max_control_request_bytes: usize,
    /// Total bytes of requests being read or processed at once, across all
    /// connections (Kafka's `queued.max.request.bytes`). A request counts
    /// with the bytes that have arrived, not the size it declares.
    pub max_inflight_request_bytes: usize,
    /// The same budget for the requests of one client IP address, so a few
    /// addresses cannot take all of it. At least `max_request_bytes`; unset,
    /// a quarter of `max_inflight_request_bytes` (but at least
    /// `max_request_bytes`). See [`BrokerConfig::inflight_request_bytes_per_ip`].
    pub max_inflight_request_bytes_per_ip: Option<usize>,
    /// Most client connections served at once.
    pub max_connections: usize,
    /// Most connections open at once from one client IP address (Kafka's
    /// `max.connections.per.ip`); further ones are closed at once.
    pub max_connections_per_ip: usize,
    /// Most partitions one topic may have (CreateTopics, CreatePartitions).
    pub max_partitions_per_topic: i32,
    /// Connections that send nothing for this long are closed, between
    /// requests and in the middle of one (Kafka's `connections.max.idle.ms`);
    /// so are connections whose responses make no progress for this long.
    pub connections_max_idle_ms: u64,
    /// A request must arrive in full within this long of its first byte;
    /// a connection that starts a request and does not finish it in time
    /// is closed.
    pub request_read_timeout_ms: u64,
    /// How often retention is applied (Kafka's `log.retention.check.interval.ms`).
    pub retention_check_interval_ms: u64,
    /// How often logs are fsynced and the recovery point checkpointed.
    pub flush_checkpoint_interval_ms: u64,
    /// Partitions of `__consumer_offsets` (Kafka's `offsets.topic.num.partitions`).
    pub offsets_topic_partitions: i32,
    /// Committed offsets of groups without members are deleted after this
    /// long (Kafka's `offsets.retention.minutes`).
    pub offsets_retention_minutes: i64,
    /// How often expired offsets are looked for.
    pub offsets_retention_check_interval_ms: u64,
    /// How long a new group waits for more members before its first
    /// rebalance (Kafka's `group.initial.rebalance.delay.ms`).
    pub group_initial_rebalance_delay_ms: u64,
    /// Allowed range of consumers' `session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// Most members one group may have.
    pub group_max_size: usize,
    /// Longest metadata string stored with a committed offset.
    pub offset_metadata_max_bytes: usize,
    /// Partitions of `__transaction_state`, made at the first
    /// FindCoordinator for a transactional id (Kafka's
    /// `transaction.state.log.num.partitions`).
    pub transaction_state_partitions: i32,
    /// The longest `transaction.timeout.ms` a producer may ask for
    /// (Kafka's `transaction.max.timeout.ms`).
    pub transaction_max_timeout_ms: i32,
    /// An idle transactional id is forgotten after this long (Kafka's
    /// `transactional.id.expiration.ms`).
    pub transactional_id_expiration_ms: i64,
    /// How often open transactions are checked against their timeout
    /// (Kafka's `transaction.abort.timed.out.transaction.cleanup.interval.ms`).
    pub transaction_abort_check_interval_ms: u64,
    /// How often the log cleaner looks for compacted topics' logs to clean
    /// (Kafka's `log.cleaner.backoff.ms`).
    pub log_cleaner_interval_ms: u64,
    /// Memory budget of the log cleaner's key map, per pass (Kafka's
    /// `log.cleaner.dedupe.buffer.size`). A dirty section with more keys is
    /// cleaned over several passes.
    pub log_cleaner_dedupe_buffer_bytes: usize,
    /// Defaults for every topic's log settings.
    pub log: LogDefaults,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 0,
            data_dir: PathBuf::from("./runnel-data"),
            kafka_addr: "127.0.0.1:9092".into(),
            advertised_kafka_addr: None,
            controller_quorum: None,
            controller_addr: None,
            process_roles: "broker,controller".into(),
            replica_lag_time_max_ms: 30_000,
            broker_session_timeout_ms: 9_000,
            broker_heartbeat_interval_ms: 500,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_seconds: 300,
            leader_imbalance_per_broker_percentage: 10,
            admin_addr: "127.0.0.1:9644".into(),
            admin_allowed_hosts: Vec::new(),
            registry_addr: "127.0.0.1:8081".into(),
            connect_addr: "127.0.0.1:8083".into(),
            http: HttpConfig::default(),
            auto_create_topics: true,
            default_partitions: 1,
            max_request_bytes: 100 * 1024 * 1024,
            max_control_request_bytes: 8 * 1024 * 1024,
            max_inflight_request_bytes: 512 * 1024 * 1024,
            max_inflight_request_bytes_per_ip: None,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            max_partitions_per_topic: 10_000,
            connections_max_idle_ms: 600_000,
            request_read_timeout_ms: 30_000,
            retention_check_interval_ms: 60_000,
            flush_checkpoint_interval_ms: 60_000,
            offsets_topic_partitions: 50,
            offsets_retention_minutes: 7 * 24 * 60,
            offsets_retention_check_interval_ms: 600_000,
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: 10_000,
            offset_metadata_max_bytes: 4096,
            transaction_state_partitions: 50,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 7 * 24 * 3600 * 1000,
            transaction_abort_check_interval_ms: 10_000,
            log_cleaner_interval_ms: 15_000,
            log_cleaner_dedupe_buffer_bytes: 128 << 20,
            log: LogDefaults::default(),
        }
    }
}

/// Broker-wide defaults of topic settings (Kafka's `log.*` broker keys).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogDefaults {
    pub cleanup_policy: String,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: i64,
    pub segment_ms: i64,
    pub segment_index_bytes: i64,
    pub index_interval_bytes: i64,
    pub max_message_bytes: i64,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub message_timestamp_type: String,
    /// How old a record's timestamp may be (Kafka's
    /// `log.message.timestamp.before.max.ms`).
    pub message_timestamp_before_max_ms: i64,
    /// How far ahead of the broker's clock it may be
    /// (`log.message.timestamp.after.max.ms`; Kafka 4's default: one hour).
    pub message_timestamp_after_max_ms: i64,
    /// The codec batches are stored in: `producer` keeps the producer's,
    /// or `uncompressed`, `gzip`, `snappy`, `lz4`, `zstd` (Kafka's broker
    /// key `compression.type`).
    pub compression_type: String,
    pub delete_retention_ms: i64,
    pub min_compaction_lag_ms: i64,
    pub min_insync_replicas: i64,
    /// Idempotent producers idle this long are forgotten by partitions
    /// (Kafka's broker key `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: i64,
    /// Broker configs changed at runtime (IncrementalAlterConfigs on the
    /// broker resource), by broker key (`log.retention.ms`, ...). They win
    /// over the fields above; the broker keeps them in
    /// `dynamic-configs.json`, not in the config file.
    #[serde(skip)]
    pub dynamic: BTreeMap<String, String>,
}

/// Broker keys that give a value in other units at a lower precedence:
/// `log.retention.ms` wins over `log.retention.minutes`, which wins over
/// `log.retention.hours` (Kafka's rule), each converted to milliseconds.
const UNIT_SYNONYMS: &[(&str, &str, i64)] = &[
    ("log.retention.ms", "log.retention.minutes", 60_000),
    ("log.retention.ms", "log.retention.hours", 3_600_000),
    ("log.roll.ms", "log.roll.hours", 3_600_000),
];

impl LogDefaults {
    /// The value a dynamic broker config gives `broker_key`, if any.
    pub fn dynamic_value(&self, broker_key: &str) -> Option<String> {
        if let Some(v) = self.dynamic.get(broker_key) {
            return Some(v.clone());
        }
        UNIT_SYNONYMS
            .iter()
            .filter(|(key, _, _)| *key == broker_key)
            .find_map(|(_, synonym, factor)| {
                let v = self.dynamic.get(*synonym)?.trim().parse::<i64>().ok()?;
                Some(v.saturating_mul(*factor).to_string())
            })
    }
}

impl Default for LogDefaults {
    fn default() -> Self {
        LogDefaults {
            cleanup_policy: "delete".into(),
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            segment_index_bytes: 10 << 20,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            message_timestamp_type: "CreateTime".into(),
            message_timestamp_before_max_ms: i64::MAX,
            message_timestamp_after_max_ms: 3_600_000,
            compression_type: "producer".into(),
            delete_retention_ms: 24 * 3600 * 1000,
            min_compaction_lag_ms: 0,
            min_insync_replicas: 1,
            producer_id_expiration_ms: 24 * 3600 * 1000,
            dynamic: BTreeMap::new(),
        }
    }
}

/// The HTTP servers `runnel serve` runs next to the broker (schema
/// registry, connect worker); each applies these limits on its own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A request line and headers must arrive within this long (an idle
    /// keep-alive connection is closed after as long).
    pub header_read_timeout_ms: u64,
    /// A request body must arrive within this long after its headers; a
    /// client that reads nothing of its answer for as long is cut too.
    pub body_read_timeout_ms: u64,
    /// Most connections one server holds open.
    pub max_connections: usize,
    /// Most connections one client address may hold open on one server.
    pub max_connections_per_ip: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout_ms: 30_000,
            body_read_timeout_ms: 30_000,
            max_connections: 1024,
            max_connections_per_ip: 256,
        }
    }
}

impl HttpConfig {
    /// Checks that every limit lets a request through.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.header_read_timeout_ms == 0 || self.body_read_timeout_ms == 0 {
            return Err(ConfigError(
                "http.header_read_timeout_ms and http.body_read_timeout_ms must be at least 1"
                    .into(),
            ));
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err(ConfigError(
                "http.max_connections and http.max_connections_per_ip must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Kafka's config value types, as reported by DescribeConfigs v3+.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// One topic-level config key.
pub struct TopicConfigDef {
    pub name: &'static str,
    /// The broker key that provides the default.
    pub broker_synonym: &'static str,
    pub kind: ConfigType,
    pub doc: &'static str,
    default: fn(&LogDefaults) -> String,
    validate: fn(&str) -> Result<(), String>,
}

impl TopicConfigDef {
    /// The broker default: a dynamic broker config, else the config file's
    /// (or built-in) value.
    pub fn default_value(&self, defaults: &LogDefaults) -> String {
        defaults
            .dynamic_value(self.broker_synonym)
            .unwrap_or_else(|| (self.default)(defaults))
    }

    /// The config file's (or built-in) default, ignoring dynamic configs.
    pub fn static_default(&self, defaults: &LogDefaults) -> String {
        (self.default)(defaults)
    }

    pub fn validate(&self, value: &str) -> Result<(), String> {
        (self.validate)(value)
    }
}

fn long_at_least(min: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v: &str| match v.trim().parse::<i64>() {
        Ok(n) if n >= min => Ok(()),
        Ok(n) => Err(format!("value {n} must be at least {min}")),
        Err(_) => Err(format!("'{v}' is not a number")),
    }
}

fn int_at_least(min: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v: &str| match v.trim().parse::<i32>() {
        Ok(n) if n as i64 >= min => Ok(()),
        Ok(n) => Err(format!("value {n} must be at least {min}")),
        Err(_) => Err(format!("'{v}' is not a 32-bit integer")),
    }
}

fn cleanup_policy(v: &str) -> Result<(), String> {
    let items: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return Err("cleanup.policy needs 'delete', 'compact' or both".into());
    }
    for item in items {
        if item != "delete" && item != "compact" {
            return Err(format!(
                "'{item}' is not a cleanup policy (delete, compact)"
            ));
        }
    }
    Ok(())
}

fn timestamp_type(v: &str) -> Result<(), String> {
    match v {
        "CreateTime" | "LogAppendTime" => Ok(()),
        _ => Err(format!("'{v}' is not CreateTime or LogAppendTime")),
    }
}

fn compression_type(v: &str) -> Result<(), String> {
    TopicCompression::parse(v).map(|_| ()).ok_or_else(|| {
        format!("'{v}' is not a compression type (producer, uncompressed, gzip, snappy, lz4, zstd)")
    })
}

fn boolean(v: &str) -> Result<(), String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "false" => Ok(()),
        _ => Err(format!("'{v}' is not true or false")),
    }
}

fn subject_name_strategy(v: &str) -> Result<(), String> {
    SubjectNameStrategy::parse(v).map(|_| ()).ok_or_else(|| {
        format!(
            "'{v}' is not a subject name strategy (TopicNameStrategy, RecordNameStrategy, \
             TopicRecordNameStrategy, optionally with the io.confluent.kafka.serializers.subject. prefix)"
        )
    })
}

fn ratio(v: &str) -> Result<(), String> {
    match v.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(()),
        _ => Err(format!("'{v}' is not a number between 0 and 1")),
    }
}

macro_rules! def {
    ($name:literal, $syn:literal, $kind:ident, $doc:literal, $default:expr, $validate:expr) => {
        TopicConfigDef {
            name: $name,
            broker_synonym: $syn,
            kind: ConfigType::$kind,
            doc: $doc,
            default: $default,
            validate: $validate,
        }
    };
}

/// Every topic config Runnel understands. Unknown keys are rejected.
pub static TOPIC_CONFIGS: &[TopicConfigDef] =
    &[
        def!("cleanup.policy", "log.cleanup.policy", List,
        "'delete' removes old segments by retention; 'compact' keeps the newest record per key.",
        |d| d.cleanup_policy.clone(), cleanup_policy),
        def!(
            "compression.type",
            "compression.type",
            String,
            "Codec batches are stored in: 'producer' keeps the producer's (no recompression); uncompressed, gzip, snappy, lz4 or zstd recompress batches in another codec on append.",
            |d| d.compression_type.clone(),
            compression_type
        ),
        def!(
            "confluent.key.schema.validation",
            "confluent.key.schema.validation",
            Boolean,
            "Reject produced records whose key is not Confluent-framed Avro of a schema registered under the key subject.",
            |_| "false".into(),
            boolean
        ),
        def!(
            "confluent.key.subject.name.strategy",
            "confluent.key.subject.name.strategy",
            String,
            "How the key subject is named: TopicNameStrategy (<topic>-key), RecordNameStrategy (<record name>) or TopicRecordNameStrategy (<topic>-<record name>).",
            |_| TOPIC_NAME_STRATEGY.into(),
            subject_name_strategy
        ),
        def!(
            "confluent.value.schema.validation",
            "confluent.value.schema.validation",
            Boolean,
            "Reject produced records whose value is not Confluent-framed Avro of a schema registered under the value subject.",
            |_| "false".into(),
            boolean
        ),
        def!(
            "confluent.value.subject.name.strategy",
            "confluent.value.subject.name.strategy",
            String,
            "How the value subject is named: TopicNameStrategy (<topic>-value), RecordNameStrategy (<record name>) or TopicRecordNameStrategy (<topic>-<record name>).",
            |_| TOPIC_NAME_STRATEGY.into(),
            subject_name_strategy
        ),
        def!(
            "delete.retention.ms",
            "log.cleaner.delete.retention.ms",
            Long,
            "How long tombstones are kept in compacted topics.",
            |d| d.delete_retention_ms.to_string(),
            |v| long_at_least(0)(v)
        ),
        def!("file.delete.delay.ms", "log.segment.delete.delay.ms", Long,
        "Accepted for compatibility; segment files are unlinked at once (open readers keep them).",
        |_| "60000".into(), |v| long_at_least(0)(v)),
        def!(
            "flush.messages",
            "log.flush.interval.messages",
            Long,
            "Fsync the log after this many appended records, before acknowledging them.",
            |d| d.flush_messages.to_string(),
            |v| long_at_least(1)(v)
        ),
        def!(
            "flush.ms",
            "log.flush.interval.ms",
            Long,
            "Fsync the log when this long has passed since the last fsync, before acknowledging.",
            |d| d.flush_ms.to_string(),
            |v| long_at_least(0)(v)
        ),
        def!(
            "index.interval.bytes",
            "log.index.interval.bytes",
            Int,
            "Bytes of batches between two offset index entries.",
            |d| d.index_interval_bytes.to_string(),
            |v| int_at_least(0)(v)
        ),
        def!(
            "max.compaction.lag.ms",
            "log.cleaner.max.compaction.lag.ms",
            Long,
            "Longest time a record may stay uncompacted.",
            |_| i64::MAX.to_string(),
            |v| long_at_least(1)(v)
        ),
        def!(
            "max.message.bytes",
            "message.max.bytes",
            Int,
            "Largest record batch accepted, in bytes.",
            |d| d.max_message_bytes.to_string(),
            |v| int_at_least(0)(v)
        ),
        def!(
            "message.timestamp.after.max.ms",
            "log.message.timestamp.after.max.ms",
            Long,
            "Largest amount a CreateTime record's timestamp may be ahead of the broker's clock; later records are refused with INVALID_TIMESTAMP.",
            |d| d.message_timestamp_after_max_ms.to_string(),
            |v| long_at_least(0)(v)
        ),
        def!(
            "message.timestamp.before.max.ms",
            "log.message.timestamp.before.max.ms",
            Long,
            "Largest amount a CreateTime record's timestamp may be behind the broker's clock; older records are refused with INVALID_TIMESTAMP.",
            |d| d.message_timestamp_before_max_ms.to_string(),
            |v| long_at_least(0)(v)
        ),
        def!(
            "message.timestamp.difference.max.ms",
            "log.message.timestamp.difference.max.ms",
            Long,
            "Deprecated (removed in Kafka 4): bounds both sides of a record's timestamp where message.timestamp.before.max.ms / after.max.ms are not set.",
            |_| i64::MAX.to_string(),
            |v| long_at_least(0)(v)
        ),
        def!(
            "message.timestamp.type",
            "log.message.timestamp.type",
            String,
            "CreateTime keeps the producer's timestamps; LogAppendTime uses the broker's clock.",
            |d| d.message_timestamp_type.clone(),
            timestamp_type
        ),
        def!(
            "min.cleanable.dirty.ratio",
            "log.cleaner.min.cleanable.ratio",
            Double,
            "Share of uncompacted log that triggers compaction.",
            |_| "0.5".into(),
            ratio
        ),
        def!(
            "min.compaction.lag.ms",
            "log.cleaner.min.compaction.lag.ms",
            Long,
            "Shortest time a record stays uncompacted.",
            |d| d.min_compaction_lag_ms.to_string(),
            |v| long_at_least(0)(v)
        ),
        def!(
            "min.insync.replicas",
            "min.insync.replicas",
            Int,
            "Replicas that must have a record before acks=all succeeds.",
            |d| d.min_insync_replicas.to_string(),
            |v| int_at_least(1)(v)
        ),
        def!(
            "preallocate",
            "log.preallocate",
            Boolean,
            "Accepted for compatibility; segments are not preallocated.",
            |_| "false".into(),
            boolean
        ),
        def!(
            "retention.bytes",
            "log.retention.bytes",
            Long,
            "Largest size of a partition before old segments are deleted; -1 for no limit.",
            |d| d.retention_bytes.to_string(),
            |v| long_at_least(-1)(v)
        ),
        def!(
            "retention.ms",
            "log.retention.ms",
            Long,
            "Age after which segments are deleted; -1 keeps them forever.",
            |d| d.retention_ms.to_string(),
            |v| long_at_least(-1)(v)
        ),
        def!(
            "segment.bytes",
            "log.segment.bytes",
            Int,
            "Size at which a new segment file is started.",
            |d| d.segment_bytes.to_string(),
            |v| int_at_least(1024)(v)
        ),
        def!(
            "segment.index.bytes",
            "log.index.size.max.bytes",
            Int,
            "Size of a segment's offset index at which the segment rolls.",
            |d| d.segment_index_bytes.to_string(),
            |v| int_at_least(8)(v)
        ),
        def!(
            "segment.ms",
            "log.roll.ms",
            Long,
            "Age of a segment's first batch after which a new segment is started.",
            |d| d.segment_ms.to_string(),
            |v| long_at_least(1)(v)
        ),
        def!(
            "unclean.leader.election.enable",
            "unclean.leader.election.enable",
            Boolean,
            "Whether an out-of-sync replica may become leader.",
            |_| "false".into(),
            boolean
        ),
    ];

pub fn topic_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// A topic config problem, reported as INVALID_CONFIG.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Checks a key/value pair against the table.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), ConfigError> {
    let def = topic_config_def(name)
        .ok_or_else(|| ConfigError(format!("unknown topic config '{name}'")))?;
    def.validate(value)
        .map_err(|e| ConfigError(format!("invalid value for {name}: {e}")))
}

/// The effective value of a topic config: its override or the broker default.
pub fn effective_value(
    name: &str,
    overrides: &BTreeMap<String, String>,
    defaults: &LogDefaults,
) -> Option<String> {
    overrides
        .get(name)
        .cloned()
        .or_else(|| topic_config_def(name).map(|d| d.default_value(defaults)))
}

/// A timestamp bound (`message.timestamp.{before,after}.max.ms`): the
/// topic's override, else the deprecated `message.timestamp.difference.max.ms`
/// when the topic sets it (as Kafka 3.6+ resolves them), else the broker
/// default.
fn timestamp_bound(overrides: &BTreeMap<String, String>, key: &str, default: i64) -> i64 {
    let parse = |k: &str| overrides.get(k).and_then(|v| v.trim().parse::<i64>().ok());
    parse(key)
        .or_else(|| parse("message.timestamp.difference.max.ms"))
        .unwrap_or(default)
        .max(0)
}

/// Resolves the storage settings of a topic from its overrides.
pub fn resolve_log_config(
    overrides: &BTreeMap<String, String>,
    defaults: &LogDefaults,
) -> LogConfig {
    let get = |name: &str| effective_value(name, overrides, defaults).unwrap_or_default();
    let long = |name: &str, fallback: i64| get(name).trim().parse::<i64>().unwrap_or(fallback);
    let policy = get("cleanup.policy");
    let base = LogConfig::default();
    LogConfig {
        segment_bytes: long("segment.bytes", base.segment_bytes as i64).max(1024) as u64,
        segment_ms: long("segment.ms", base.segment_ms),
        segment_index_bytes: long("segment.index.bytes", base.segment_index_bytes as i64).max(8)
            as u64,
        index_interval_bytes: long("index.interval.bytes", 4096).max(0) as u64,
        retention_ms: long("retention.ms", base.retention_ms),
        retention_bytes: long("retention.bytes", -1),
        max_message_bytes: long("max.message.bytes", base.max_message_bytes as i64).max(0) as usize,
        flush_messages: long("flush.messages", i64::MAX),
        flush_ms: long("flush.ms", i64::MAX),
        timestamp_type: if get("message.timestamp.type") == "LogAppendTime" {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        },
        timestamp_before_max_ms: timestamp_bound(
            overrides,
            "message.timestamp.before.max.ms",
            long(
                "message.timestamp.before.max.ms",
                defaults.message_timestamp_before_max_ms,
            ),
        ),
        timestamp_after_max_ms: timestamp_bound(
            overrides,
            "message.timestamp.after.max.ms",
            long(
                "message.timestamp.after.max.ms",
                defaults.message_timestamp_after_max_ms,
            ),
        ),
        compression: TopicCompression::parse(&get("compression.type")).unwrap_or_default(),
        cleanup_delete: policy.split(',').any(|p| p.trim() == "delete"),
        cleanup_compact: policy.split(',').any(|p| p.trim() == "compact"),
        producer_id_expiration_ms: defaults
            .dynamic_value(PRODUCER_ID_EXPIRATION_MS)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(defaults.producer_id_expiration_ms),
        delete_retention_ms: long("delete.retention.ms", base.delete_retention_ms).max(0),
        min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio")
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .unwrap_or(base.min_cleanable_dirty_ratio),
        min_compaction_lag_ms: long("min.compaction.lag.ms", 0).max(0),
    }
}

const TOPIC_NAME_STRATEGY: &str = "io.confluent.kafka.serializers.subject.TopicNameStrategy";

/// How the subject a record's schema must be registered under is named
/// (Confluent's subject name strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectNameStrategy {
    /// `<topic>-key` / `<topic>-value`.
    Topic,
    /// The full name of the record's schema.
    Record,
    /// `<topic>-<full name of the record's schema>`.
    TopicRecord,
}

impl SubjectNameStrategy {
    pub fn parse(v: &str) -> Option<SubjectNameStrategy> {
        let short = v
            .trim()
            .strip_prefix("io.confluent.kafka.serializers.subject.")
            .unwrap_or(v.trim());
        match short {
            "TopicNameStrategy" => Some(SubjectNameStrategy::Topic),
            "RecordNameStrategy" => Some(SubjectNameStrategy::Record),
            "TopicRecordNameStrategy" => Some(SubjectNameStrategy::TopicRecord),
            _ => None,
        }
    }
}

/// A topic's broker-side schema validation: for key and value, the subject
/// strategy when validation is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchemaValidation {
    pub key: Option<SubjectNameStrategy>,
    pub value: Option<SubjectNameStrategy>,
}

impl SchemaValidation {
    pub fn from_configs(overrides: &BTreeMap<String, String>) -> SchemaValidation {
        let side = |on: &str, strategy: &str| {
            let enabled = overrides
                .get(on)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
            enabled.then(|| {
                overrides
                    .get(strategy)
                    .and_then(|s| SubjectNameStrategy::parse(s))
                    .unwrap_or(SubjectNameStrategy::Topic)
            })
        };
        SchemaValidation {
            key: side(
                "confluent.key.schema.validation",
                "confluent.key.subject.name.strategy",
            ),
            value: side(
                "confluent.value.schema.validation",
                "confluent.value.subject.name.strategy",
            ),
        }
    }

    pub fn is_on(&self) -> bool {
        self.key.is_some() || self.value.is_some()
    }
}

/// Broker keys that cannot change at runtime, with their values, as
/// DescribeConfigs reports them (read-only). The keys that can are
/// [`dynamic_broker_keys`].
pub fn broker_config_entries(config: &BrokerConfig) -> Vec<(&'static str, String, ConfigType)> {
    let mut entries = vec![
        ("broker.id", config.node_id.to_string(), ConfigType::Int),
        ("node.id", config.node_id.to_string(), ConfigType::Int),
        (
            "log.dirs",
            config.data_dir.display().to_string(),
            ConfigType::String,
        ),
        (
            "listeners",
            format!("PLAINTEXT://{}", config.kafka_addr),
            ConfigType::String,
        ),
        (
            "advertised.listeners",
            format!(
                "PLAINTEXT://{}",
                config
                    .advertised_kafka_addr
                    .as_deref()
                    .unwrap_or(&config.kafka_addr)
            ),
            ConfigType::String,
        ),
        (
            "auto.create.topics.enable",
            config.auto_create_topics.to_string(),
            ConfigType::Boolean,
        ),
        (
            "auto.leader.rebalance.enable",
            config.auto_leader_rebalance_enable.to_string(),
            ConfigType::Boolean,
        ),
        (
            "leader.imbalance.check.interval.seconds",
            config.leader_imbalance_check_interval_seconds.to_string(),
            ConfigType::Long,
        ),
        (
            "leader.imbalance.per.broker.percentage",
            config.leader_imbalance_per_broker_percentage.to_string(),
            ConfigType::Int,
        ),
        (
            "num.partitions",
            config.default_partitions.to_string(),
            ConfigType::Int,
        ),
        ("default.replication.factor", "1".into(), ConfigType::Int),
        (
            "socket.request.max.bytes",
            config.max_request_bytes.to_string(),
            ConfigType::Int,
        ),
        (
            "queued.max.request.bytes",
            config.max_inflight_request_bytes.to_string(),
            ConfigType::Long,
        ),
        (
            "connections.max.idle.ms",
            config.connections_max_idle_ms.to_string(),
            ConfigType::Long,
        ),
        (
            "log.retention.check.interval.ms",
            config.retention_check_interval_ms.to_string(),
            ConfigType::Long,
        ),
        (
            "log.flush.offset.checkpoint.interval.ms",
            config.flush_checkpoint_interval_ms.to_string(),
            ConfigType::Int,
        ),
        (
            "log.cleaner.backoff.ms",
            config.log_cleaner_interval_ms.to_string(),
            ConfigType::Long,
        ),
        (
            "log.cleaner.dedupe.buffer.size",
            config.log_cleaner_dedupe_buffer_bytes.to_string(),
            ConfigType::Long,
        ),
        (
            "offsets.topic.num.partitions",
            config.offsets_topic_partitions.to_string(),
            ConfigType::Int,
        ),
        (
            "offsets.retention.minutes",
            config.offsets_retention_minutes.to_string(),
            ConfigType::Int,
        ),
        (
            "offsets.retention.check.interval.ms",
            config.offsets_retention_check_interval_ms.to_string(),
            ConfigType::Long,
        ),
        (
            "offset.metadata.max.bytes",
            config.offset_metadata_max_bytes.to_string(),
            ConfigType::Int,
        ),
        (
            "group.initial.rebalance.delay.ms",
            config.group_initial_rebalance_delay_ms.to_string(),
            ConfigType::Int,
        ),
        (
            "group.min.session.timeout.ms",
            config.group_min_session_timeout_ms.to_string(),
            ConfigType::Int,
        ),
        (
            "group.max.session.timeout.ms",
            config.group_max_session_timeout_ms.to_string(),
            ConfigType::Int,
        ),
        (
            "group.max.size",
            config.group_max_size.to_string(),
            ConfigType::Int,
        ),
        (
            "transaction.state.log.num.partitions",
            config.transaction_state_partitions.to_string(),
            ConfigType::Int,
        ),
        (
            "transaction.max.timeout.ms",
            config.transaction_max_timeout_ms.to_string(),
            ConfigType::Int,
        ),
        (
            "transactional.id.expiration.ms",
            config.transactional_id_expiration_ms.to_string(),
            ConfigType::Int,
        ),
        (
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            config.transaction_abort_check_interval_ms.to_string(),
            ConfigType::Int,
        ),
    ];
    entries.extend(
        GROUP_CONSUMER_BOUNDS
            .iter()
            .map(|(k, v)| (*k, v.to_string(), ConfigType::Int)),
    );
    entries
}

const PRODUCER_ID_EXPIRATION_MS: &str = "producer.id.expiration.ms";

/// A broker config IncrementalAlterConfigs and AlterConfigs may change at
/// runtime (for the broker, or as the cluster default): Kafka's dynamic
/// log configs, which are the defaults of topic configs, plus
/// `producer.id.expiration.ms`. Kafka's other dynamic broker configs
/// (thread pools, listeners, TLS, quotas) have no equivalent here.
#[derive(Clone, Copy)]
pub enum DynamicBrokerKey {
    /// The default of a topic config (`log.retention.ms` for `retention.ms`).
    TopicDefault(&'static TopicConfigDef),
    /// `producer.id.expiration.ms`.
    ProducerIdExpiration,
    /// `log.retention.hours` and friends: another unit of a topic default,
    /// of lower precedence.
    UnitSynonym {
        name: &'static str,
        of: &'static str,
    },
}

impl DynamicBrokerKey {
    pub fn name(&self) -> &'static str {
        match self {
            DynamicBrokerKey::TopicDefault(def) => def.broker_synonym,
            DynamicBrokerKey::ProducerIdExpiration => PRODUCER_ID_EXPIRATION_MS,
            DynamicBrokerKey::UnitSynonym { name, .. } => name,
        }
    }

    pub fn kind(&self) -> ConfigType {
        match self {
            DynamicBrokerKey::TopicDefault(def) => def.kind,
            DynamicBrokerKey::ProducerIdExpiration => ConfigType::Int,
            DynamicBrokerKey::UnitSynonym { .. } => ConfigType::Int,
        }
    }

    pub fn doc(&self) -> &'static str {
        match self {
            DynamicBrokerKey::TopicDefault(def) => def.doc,
            DynamicBrokerKey::ProducerIdExpiration => {
                "How long an idle idempotent producer's state is kept."
            }
            DynamicBrokerKey::UnitSynonym { .. } => {
                "The same default in other units; the millisecond key wins."
            }
        }
    }

    pub fn validate(&self, value: &str) -> Result<(), ConfigError> {
        let checked = match self {
            DynamicBrokerKey::TopicDefault(def) => def.validate(value),
            DynamicBrokerKey::ProducerIdExpiration => int_at_least(1)(value),
            DynamicBrokerKey::UnitSynonym { of, .. } => {
                int_at_least(if *of == "log.roll.ms" { 1 } else { -1 })(value)
            }
        };
        checked.map_err(|e| ConfigError(format!("invalid value for {}: {e}", self.name())))
    }

    /// The value from the config file (or built in), when Runnel has one.
    pub fn static_value(&self, defaults: &LogDefaults) -> Option<String> {
        match self {
            DynamicBrokerKey::TopicDefault(def) => Some(def.static_default(defaults)),
            DynamicBrokerKey::ProducerIdExpiration => {
                Some(defaults.producer_id_expiration_ms.to_string())
            }
            DynamicBrokerKey::UnitSynonym { .. } => None,
        }
    }
}

/// Every broker config that can change at runtime.
pub fn dynamic_broker_keys() -> impl Iterator<Item = DynamicBrokerKey> {
    TOPIC_CONFIGS
        .iter()
        // Schema validation is a topic setting only.
        .filter(|def| !def.name.starts_with("confluent."))
        .map(DynamicBrokerKey::TopicDefault)
        .chain([DynamicBrokerKey::ProducerIdExpiration])
        .chain(
            UNIT_SYNONYMS
                .iter()
                .map(|(of, name, _)| DynamicBrokerKey::UnitSynonym { name, of }),
        )
}

pub fn dynamic_broker_key(name: &str) -> Option<DynamicBrokerKey> {
    dynamic_broker_keys().find(|k| k.name() == name)
}

/// Whether `name` is a broker config this broker reports but cannot change
/// at runtime (Kafka: "Cannot update these configs dynamically").
pub fn is_read_only_broker_key(config: &BrokerConfig, name: &str) -> bool {
    broker_config_entries(config)
        .iter()
        .any(|(key, _, _)| *key == name)
}

/// Checks a set of dynamic broker configs (one level: this broker's or the
/// cluster default).
pub fn validate_dynamic_broker_configs(
    configs: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (name, value) in configs {
        let key = dynamic_broker_key(name).ok_or_else(|| {
            ConfigError(format!(
                "broker config '{name}' is unknown or cannot change at runtime in Runnel; the \
                 dynamic broker configs are the topic defaults (log.retention.ms, \
                 log.segment.bytes, message.max.bytes, log.cleanup.policy, ...) and \
                 producer.id.expiration.ms"
            ))
        })?;
        key.validate(value)?;
    }
    Ok(())
}

/// Kafka 4.0's broker bounds (and defaults) for the group configs of
/// consumer-protocol groups: `group.consumer.*`.
pub const GROUP_CONSUMER_BOUNDS: &[(&str, i32)] = &[
    ("group.consumer.session.timeout.ms", 45_000),
    ("group.consumer.min.session.timeout.ms", 45_000),
    ("group.consumer.max.session.timeout.ms", 60_000),
    ("group.consumer.heartbeat.interval.ms", 5_000),
    ("group.consumer.min.heartbeat.interval.ms", 5_000),
    ("group.consumer.max.heartbeat.interval.ms", 15_000),
];

fn group_consumer_bound(name: &str) -> i32 {
    GROUP_CONSUMER_BOUNDS
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| *v)
        .unwrap_or_default()
}

/// One config of the GROUP resource (Kafka 4.0, KIP-848).
pub struct GroupConfigDef {
    pub name: &'static str,
    /// The broker config that gives its default.
    pub broker_default: &'static str,
    pub doc: &'static str,
}

/// The group configs Runnel keeps. They apply to groups of the consumer
/// protocol (KIP-848); classic groups, the only ones Runnel runs, use the
/// session timeout each member sends in JoinGroup, as in Kafka 4.0. The
/// `share.*` configs of share groups are refused.
pub static GROUP_CONFIGS: &[GroupConfigDef] = &[
    GroupConfigDef {
        name: "consumer.heartbeat.interval.ms",
        broker_default: "group.consumer.heartbeat.interval.ms",
        doc: "The heartbeat interval given to the members of a consumer-protocol group.",
    },
    GroupConfigDef {
        name: "consumer.session.timeout.ms",
        broker_default: "group.consumer.session.timeout.ms",
        doc: "The timeout to detect client failures in a consumer-protocol group.",
    },
];

impl GroupConfigDef {
    pub fn default_value(&self) -> i32 {
        group_consumer_bound(self.broker_default)
    }
}

/// Checks a group's configs as Kafka does (`GroupConfig.validate`): known
/// names, integers, within the broker's bounds, and the session timeout
/// above the heartbeat interval.
pub fn validate_group_configs(configs: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for name in configs.keys() {
        if name.starts_with("share.") {
            return Err(ConfigError(format!(
                "group config '{name}' is for share groups, which Runnel does not run"
            )));
        }
        if !GROUP_CONFIGS.iter().any(|d| d.name == name) {
            return Err(ConfigError(format!("Unknown group config name: {name}")));
        }
    }
    let value = |name: &str| -> Result<i32, ConfigError> {
        match configs.get(name) {
            None => Ok(GROUP_CONFIGS
                .iter()
                .find(|d| d.name == name)
                .map(|d| d.default_value())
                .unwrap_or_default()),
            Some(v) => v.trim().parse::<i32>().map_err(|_| {
                ConfigError(format!(
                    "Invalid value {v} for configuration {name}: Not a number of type INT"
                ))
            }),
        }
    };
    let heartbeat = value("consumer.heartbeat.interval.ms")?;
    let session = value("consumer.session.timeout.ms")?;
    let bound = |name: &str| group_consumer_bound(name);
    let checks = [
        (
            heartbeat < bound("group.consumer.min.heartbeat.interval.ms"),
            "consumer.heartbeat.interval.ms must be greater than or equal to group.consumer.min.heartbeat.interval.ms",
        ),
        (
            heartbeat > bound("group.consumer.max.heartbeat.interval.ms"),
            "consumer.heartbeat.interval.ms must be less than or equal to group.consumer.max.heartbeat.interval.ms",
        ),
        (
            session < bound("group.consumer.min.session.timeout.ms"),
            "consumer.session.timeout.ms must be greater than or equal to group.consumer.min.session.timeout.ms",
        ),
        (
            session > bound("group.consumer.max.session.timeout.ms"),
            "consumer.session.timeout.ms must be less than or equal to group.consumer.max.session.timeout.ms",
        ),
        (
            session <= heartbeat,
            "consumer.session.timeout.ms must be greater than consumer.heartbeat.interval.ms",
        ),
    ];
    match checks.iter().find(|(broken, _)| *broken) {
        Some((_, message)) => Err(ConfigError(message.to_string())),
        None => Ok(()),
    }
}

impl BrokerConfig {
    /// The in-flight request budget of one client IP address: the configured
    /// value, or a quarter of the broker's budget but at least one request
    /// of the largest size.
    pub fn inflight_request_bytes_per_ip(&self) -> usize {
        self.max_inflight_request_bytes_per_ip.unwrap_or_else(|| {
            (self.max_inflight_request_bytes / 4)
                .max(self.max_request_bytes)
                .min(self.max_inflight_request_bytes)
        })
    }

    /// The metadata quorum's voters and this node's controller listener
    /// (empty for a quorum of this node alone).
    /// Whether this node is a voter of the metadata quorum
    /// (`process_roles` includes `controller`).
    pub fn is_controller(&self) -> Result<bool, ConfigError> {
        let mut broker = false;
        let mut controller = false;
        for role in self.process_roles.split(',').map(str::trim) {
            match role {
                "broker" => broker = true,
                "controller" => controller = true,
                other => {
                    return Err(ConfigError(format!(
                        "process_roles: unknown role '{other}' (expected broker, controller or broker,controller)"
                    )))
                }
            }
        }
        if !broker {
            return Err(ConfigError(
                "process_roles: a controller-only node is not supported; use broker,controller or broker".into(),
            ));
        }
        if !controller && self.controller_quorum.is_none() {
            return Err(ConfigError(
                "process_roles: a broker-only node needs controller_quorum, the voters it follows"
                    .into(),
            ));
        }
        Ok(controller)
    }

    pub fn controller_listener(
        &self,
    ) -> Result<(Vec<crate::controller::Voter>, String), ConfigError> {
        let Some(list) = &self.controller_quorum else {
            let voter = crate::controller::Voter {
                id: self.node_id as u64,
                addr: String::new(),
            };
            return Ok((
                vec![voter],
                self.controller_addr.clone().unwrap_or_default(),
            ));
        };
        let voters = crate::controller::parse_voters(list)
            .map_err(|e| ConfigError(format!("controller_quorum: {e}")))?;
        let listed = voters.iter().find(|v| v.id == self.node_id as u64);
        if !self.is_controller()? {
            if listed.is_some() {
                return Err(ConfigError(format!(
                    "process_roles is 'broker' but controller_quorum '{list}' lists this node (node_id {}) as a voter",
                    self.node_id
                )));
            }
            let Some(addr) = self.controller_addr.clone() else {
                return Err(ConfigError(
                    "a broker-only node (process_roles: broker) needs controller_addr: where the quorum's leader sends it the metadata log".into(),
                ));
            };
            return Ok((voters, addr));
        }
        let Some(own) = listed else {
            return Err(ConfigError(format!(
                "controller_quorum '{list}' does not list this node (node_id {})",
                self.node_id
            )));
        };
        let addr = self
            .controller_addr
            .clone()
            .unwrap_or_else(|| own.addr.clone());
        Ok((voters, addr))
    }

    /// Checks values that would make the broker misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        self.http.validate()?;
        if self.node_id < 0 {
            return err(format!("node_id must be >= 0, got {}", self.node_id));
        }
        self.is_controller()?;
        self.controller_listener()?;
        if !(400..=3_600_000).contains(&self.broker_session_timeout_ms) {
            return err(format!(
                "broker_session_timeout_ms must be between 400 and 3600000, got {}",
                self.broker_session_timeout_ms
            ));
        }
        if self.broker_heartbeat_interval_ms < 50
            || self.broker_heartbeat_interval_ms * 2 > self.broker_session_timeout_ms
        {
            return err(format!(
                "broker_heartbeat_interval_ms must be at least 50 and at most half of broker_session_timeout_ms ({}), got {}",
                self.broker_session_timeout_ms, self.broker_heartbeat_interval_ms
            ));
        }
        if !(1..=86_400).contains(&self.leader_imbalance_check_interval_seconds) {
            return err(format!(
                "leader_imbalance_check_interval_seconds must be between 1 and 86400, got {}",
                self.leader_imbalance_check_interval_seconds
            ));
        }
        if self.leader_imbalance_per_broker_percentage > 100 {
            return err(format!(
                "leader_imbalance_per_broker_percentage must be between 0 and 100, got {}",
                self.leader_imbalance_per_broker_percentage
            ));
        }
        if !(100..=3_600_000).contains(&self.replica_lag_time_max_ms) {
            return err(format!(
                "replica_lag_time_max_ms must be between 100 and 3600000, got {}",
                self.replica_lag_time_max_ms
            ));
        }
        if self.default_partitions < 1 || self.default_partitions > self.max_partitions_per_topic {
            return err("default_partitions must be between 1 and max_partitions_per_topic".into());
        }
        if self.max_request_bytes < 1024 || self.max_request_bytes > i32::MAX as usize {
            return err("max_request_bytes must be between 1 KiB and 2 GiB".into());
        }
        if !(1..=self.max_partitions_per_topic.min(1000)).contains(&self.offsets_topic_partitions) {
            return err("offsets_topic_partitions must be between 1 and min(1000, max_partitions_per_topic)".into());
        }
        if !(1..=self.max_partitions_per_topic.min(1000))
            .contains(&self.transaction_state_partitions)
        {
            return err("transaction_state_partitions must be between 1 and min(1000, max_partitions_per_topic)".into());
        }
        if self.transaction_max_timeout_ms < 1 {
            return err("transaction_max_timeout_ms must be at least 1".into());
        }
        if self.transactional_id_expiration_ms < 1 {
            return err("transactional_id_expiration_ms must be at least 1".into());
        }
        if self.transaction_abort_check_interval_ms < 1 {
            return err("transaction_abort_check_interval_ms must be at least 1".into());
        }
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms {
            return err(
                "group_min_session_timeout_ms must not exceed group_max_session_timeout_ms".into(),
            );
        }
        if self.max_inflight_request_bytes < self.max_request_bytes {
            return err("max_inflight_request_bytes must be at least max_request_bytes".into());
        }
        // A request larger than its address's budget could never be read.
        if let Some(per_ip) = self.max_inflight_request_bytes_per_ip {
            if per_ip < self.max_request_bytes || per_ip > self.max_inflight_request_bytes {
                return err(format!(
                    "max_inflight_request_bytes_per_ip ({per_ip}) must be between \
                     max_request_bytes ({}) and max_inflight_request_bytes ({})",
                    self.max_request_bytes, self.max_inflight_request_bytes
                ));
            }
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return err("max_connections and max_connections_per_ip must be at least 1".into());
        }
        if self.connections_max_idle_ms == 0 || self.request_read_timeout_ms == 0 {
            return err(
                "connections_max_idle_ms and request_read_timeout_ms must be at least 1".into(),
            );
        }
        if self.log_cleaner_dedupe_buffer_bytes < 1 << 20 {
            return err("log_cleaner_dedupe_buffer_bytes must be at least 1 MiB".into());
        }
        let d = &self.log;
        let checks: [(&str, String); 15] = [
            ("cleanup.policy", d.cleanup_policy.clone()),
            ("retention.ms", d.retention_ms.to_string()),
            ("retention.bytes", d.retention_bytes.to_string()),
            ("segment.bytes", d.segment_bytes.to_string()),
            ("segment.ms", d.segment_ms.to_string()),
            ("segment.index.bytes", d.segment_index_bytes.to_string()),
            ("index.interval.bytes", d.index_interval_bytes.to_string()),
            ("max.message.bytes", d.max_message_bytes.to_string()),
            ("flush.messages", d.flush_messages.to_string()),
            ("flush.ms", d.flush_ms.to_string()),
            ("message.timestamp.type", d.message_timestamp_type.clone()),
            (
                "message.timestamp.before.max.ms",
                d.message_timestamp_before_max_ms.to_string(),
            ),
            (
                "message.timestamp.after.max.ms",
                d.message_timestamp_after_max_ms.to_string(),
            ),
            ("compression.type", d.compression_type.clone()),
            ("delete.retention.ms", d.delete_retention_ms.to_string()),
        ];
        for (key, value) in checks {
            validate_topic_config(key, &value).map_err(|e| ConfigError(format!("log.{e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_address_request_budget_fits_one_largest_request_and_the_broker_budget() {
        let config = BrokerConfig::default();
        assert_eq!(config.inflight_request_bytes_per_ip(), 128 << 20);
        let big = BrokerConfig {
            max_request_bytes: 200 << 20,
            max_inflight_request_bytes: 300 << 20,
            ..Default::default()
        };
        assert!(
            big.validate().is_ok(),
            "the unset default follows the others"
        );
        assert_eq!(big.inflight_request_bytes_per_ip(), 200 << 20);
        let too_small = BrokerConfig {
            max_inflight_request_bytes_per_ip: Some(1 << 20),
            ..Default::default()
        };
        let e = too_small.validate().unwrap_err().to_string();
        assert!(e.contains("max_inflight_request_bytes_per_ip"), "{e}");
        let zero_timeout = BrokerConfig {
            request_read_timeout_ms: 0,
            ..Default::default()
        };
        assert!(zero_timeout.validate().is_err());
    }

    #[test]
    fn process_roles_and_heartbeats_are_checked_against_the_quorum() {
        let quorum = Some("1@127.0.0.1:9301,2@127.0.0.1:9302".to_string());
        let error = |config: BrokerConfig| config.validate().unwrap_err().to_string();
        // The default: a voter.
        let voter = BrokerConfig {
            node_id: 1,
            controller_quorum: quorum.clone(),
            ..Default::default()
        };
        assert!(voter.is_controller().unwrap());
        assert!(voter.validate().is_ok());
        // Broker-only: outside the voters, with an address for the log.
        let broker = BrokerConfig {
            node_id: 3,
            controller_quorum: quorum.clone(),
            controller_addr: Some("127.0.0.1:9303".into()),
            process_roles: "broker".into(),
            ..Default::default()
        };
        assert!(!broker.is_controller().unwrap());
        let (voters, addr) = broker.controller_listener().unwrap();
        assert_eq!((voters.len(), addr.as_str()), (2, "127.0.0.1:9303"));
        let e = error(BrokerConfig {
            controller_addr: None,
            ..broker.clone()
        });
        assert!(e.contains("controller_addr"), "{e}");
        let e = error(BrokerConfig {
            node_id: 2,
            ..broker.clone()
        });
        assert!(e.contains("as a voter"), "{e}");
        let e = error(BrokerConfig {
            controller_quorum: None,
            ..broker.clone()
        });
        assert!(e.contains("needs controller_quorum"), "{e}");
        for roles in ["controller", "broker,leader", ""] {
            let e = error(BrokerConfig {
                process_roles: roles.into(),
                ..voter.clone()
            });
            assert!(e.contains("process_roles"), "{roles}: {e}");
        }
        assert!(BrokerConfig {
            process_roles: " controller , broker ".into(),
            ..voter.clone()
        }
        .validate()
        .is_ok());
        // Heartbeats at most half the session timeout.
        let e = error(BrokerConfig {
            broker_session_timeout_ms: 800,
            ..Default::default()
        });
        assert!(e.contains("broker_heartbeat_interval_ms"), "{e}");
        assert!(BrokerConfig {
            broker_session_timeout_ms: 800,
            broker_heartbeat_interval_ms: 200,
            ..Default::default()
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn overrides_win_over_broker_defaults() {
        let defaults = LogDefaults {
            retention_ms: 1000,
            ..Default::default()
        };
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.bytes".to_string(), "4096".to_string());
        overrides.insert("cleanup.policy".to_string(), "compact,delete".to_string());
        let c = resolve_log_config(&overrides, &defaults);
        assert_eq!(c.retention_ms, 1000);
        assert_eq!(c.retention_bytes, 4096);
        assert!(c.cleanup_compact && c.cleanup_delete);
    }

    #[test]
    fn compaction_settings_resolve_from_overrides_and_broker_defaults() {
        let overrides: BTreeMap<String, String> = [
            ("delete.retention.ms", "1000"),
            ("min.cleanable.dirty.ratio", "0.25"),
            ("min.compaction.lag.ms", "5000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = resolve_log_config(&overrides, &LogDefaults::default());
        assert_eq!(
            (
                c.delete_retention_ms,
                c.min_cleanable_dirty_ratio,
                c.min_compaction_lag_ms
            ),
            (1000, 0.25, 5000)
        );
        let defaults = LogDefaults {
            delete_retention_ms: 77,
            min_compaction_lag_ms: 9,
            ..Default::default()
        };
        let c = resolve_log_config(&BTreeMap::new(), &defaults);
        assert_eq!(
            (
                c.delete_retention_ms,
                c.min_cleanable_dirty_ratio,
                c.min_compaction_lag_ms
            ),
            (77, 0.5, 9)
        );
        assert!(validate_topic_config("min.cleanable.dirty.ratio", "1.5").is_err());
    }

    #[test]
    fn bad_topic_configs_are_rejected_with_a_reason() {
        assert!(validate_topic_config("retention.ms", "-1").is_ok());
        assert!(validate_topic_config("retention.ms", "-2")
            .unwrap_err()
            .0
            .contains("at least -1"));
        assert!(validate_topic_config("retention.ms", "soon").is_err());
        assert!(validate_topic_config("cleanup.policy", "compact,archive").is_err());
        assert!(validate_topic_config("no.such.key", "1")
            .unwrap_err()
            .0
            .contains("unknown"));
        assert!(validate_topic_config("segment.bytes", "99999999999").is_err());
        assert!(validate_topic_config("compression.type", "zstd").is_ok());
        assert!(validate_topic_config("compression.type", "brotli").is_err());
    }

    #[test]
    fn schema_validation_reads_confluents_topic_configs() {
        let configs = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(!SchemaValidation::from_configs(&configs(&[])).is_on());
        let v = SchemaValidation::from_configs(&configs(&[(
            "confluent.value.schema.validation",
            "TRUE",
        )]));
        assert_eq!(v.value, Some(SubjectNameStrategy::Topic));
        assert_eq!(v.key, None);
        let v = SchemaValidation::from_configs(&configs(&[
            ("confluent.key.schema.validation", "true"),
            (
                "confluent.key.subject.name.strategy",
                "io.confluent.kafka.serializers.subject.RecordNameStrategy",
            ),
        ]));
        assert_eq!(v.key, Some(SubjectNameStrategy::Record));
        assert!(validate_topic_config(
            "confluent.value.subject.name.strategy",
            "TopicRecordNameStrategy"
        )
        .is_ok());
        assert!(validate_topic_config("confluent.value.subject.name.strategy", "Mine").is_err());
        assert!(validate_topic_config("confluent.value.schema.validation", "yes").is_err());
    }

    #[test]
    fn dynamic_broker_configs_win_over_the_config_file_with_kafkas_unit_precedence() {
        let mut defaults = LogDefaults {
            retention_ms: 1000,
            ..Default::default()
        };
        let retention = topic_config_def("retention.ms").unwrap();
        assert_eq!(retention.default_value(&defaults), "1000");
        defaults
            .dynamic
            .insert("log.retention.hours".into(), "2".into());
        assert_eq!(retention.default_value(&defaults), "7200000");
        defaults
            .dynamic
            .insert("log.retention.minutes".into(), "3".into());
        assert_eq!(retention.default_value(&defaults), "180000");
        defaults
            .dynamic
            .insert("log.retention.ms".into(), "5".into());
        assert_eq!(retention.default_value(&defaults), "5");
        assert_eq!(retention.static_default(&defaults), "1000");
        defaults
            .dynamic
            .insert("producer.id.expiration.ms".into(), "60000".into());
        let resolved = resolve_log_config(&BTreeMap::new(), &defaults);
        assert_eq!(
            (resolved.retention_ms, resolved.producer_id_expiration_ms),
            (5, 60_000)
        );

        let mut changes = BTreeMap::new();
        changes.insert("log.segment.bytes".to_string(), "100".to_string());
        let e = validate_dynamic_broker_configs(&changes).unwrap_err();
        assert!(
            e.0.contains("log.segment.bytes") && e.0.contains("1024"),
            "{e}"
        );
        changes.clear();
        changes.insert("num.io.threads".to_string(), "8".to_string());
        assert!(validate_dynamic_broker_configs(&changes).is_err());
        assert!(dynamic_broker_key("confluent.value.schema.validation").is_none());
        assert!(is_read_only_broker_key(
            &BrokerConfig::default(),
            "broker.id"
        ));
        assert!(!is_read_only_broker_key(
            &BrokerConfig::default(),
            "log.retention.ms"
        ));
    }

    #[test]
    fn group_configs_are_checked_against_the_brokers_bounds() {
        let configs = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(
            validate_group_configs(&configs(&[("consumer.session.timeout.ms", "50000")])).is_ok()
        );
        let e = validate_group_configs(&configs(&[("consumer.session.timeout.ms", "1000")]))
            .unwrap_err();
        assert!(e.0.contains("group.consumer.min.session.timeout.ms"), "{e}");
        let e = validate_group_configs(&configs(&[("consumer.heartbeat.interval.ms", "soon")]))
            .unwrap_err();
        assert!(e.0.contains("INT"), "{e}");
        let e = validate_group_configs(&configs(&[("no.such", "1")])).unwrap_err();
        assert_eq!(e.0, "Unknown group config name: no.such");
        assert!(
            validate_group_configs(&configs(&[("share.session.timeout.ms", "45000")])).is_err()
        );
    }

    #[test]
    fn the_default_broker_config_is_valid_and_round_trips_through_yaml() {
        let c = BrokerConfig::default();
        c.validate().unwrap();
        let yaml = serde_json::to_string(&c).unwrap();
        let back: BrokerConfig = serde_json::from_str(&yaml).unwrap();
        assert_eq!(back, c);
    }
}
