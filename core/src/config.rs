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
    /// Address of the schema registry's REST API, which `runnel serve`
    /// runs next to the broker; `off` runs none.
    pub registry_addr: String,
    /// Address of the connect worker's REST API, which `runnel serve`
    /// runs next to the broker; `off` runs none.
    pub connect_addr: String,
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
    /// connections (Kafka's `queued.max.request.bytes`).
    pub max_inflight_request_bytes: usize,
    /// Most client connections served at once.
    pub max_connections: usize,
    /// Most partitions one topic may have (CreateTopics, CreatePartitions).
    pub max_partitions_per_topic: i32,
    /// Idle connections are closed after this long.
    pub connections_max_idle_ms: u64,
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
            registry_addr: "127.0.0.1:8081".into(),
            connect_addr: "127.0.0.1:8083".into(),
            auto_create_topics: true,
            default_partitions: 1,
            max_request_bytes: 100 * 1024 * 1024,
            max_control_request_bytes: 8 * 1024 * 1024,
            max_inflight_request_bytes: 512 * 1024 * 1024,
            max_connections: 10_000,
            max_partitions_per_topic: 10_000,
            connections_max_idle_ms: 600_000,
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
        }
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
    pub fn default_value(&self, defaults: &LogDefaults) -> String {
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
            defaults.message_timestamp_before_max_ms,
        ),
        timestamp_after_max_ms: timestamp_bound(
            overrides,
            "message.timestamp.after.max.ms",
            defaults.message_timestamp_after_max_ms,
        ),
        compression: TopicCompression::parse(&get("compression.type")).unwrap_or_default(),
        cleanup_delete: policy.split(',').any(|p| p.trim() == "delete"),
        cleanup_compact: policy.split(',').any(|p| p.trim() == "compact"),
        producer_id_expiration_ms: defaults.producer_id_expiration_ms,
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

/// Broker keys reported by DescribeConfigs for the broker resource.
pub fn broker_config_entries(config: &BrokerConfig) -> Vec<(&'static str, String, ConfigType)> {
    let d = &config.log;
    vec![
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
            "log.cleanup.policy",
            d.cleanup_policy.clone(),
            ConfigType::List,
        ),
        (
            "log.retention.ms",
            d.retention_ms.to_string(),
            ConfigType::Long,
        ),
        (
            "log.retention.bytes",
            d.retention_bytes.to_string(),
            ConfigType::Long,
        ),
        (
            "log.segment.bytes",
            d.segment_bytes.to_string(),
            ConfigType::Int,
        ),
        ("log.roll.ms", d.segment_ms.to_string(), ConfigType::Long),
        (
            "log.index.size.max.bytes",
            d.segment_index_bytes.to_string(),
            ConfigType::Int,
        ),
        (
            "log.index.interval.bytes",
            d.index_interval_bytes.to_string(),
            ConfigType::Int,
        ),
        (
            "message.max.bytes",
            d.max_message_bytes.to_string(),
            ConfigType::Int,
        ),
        (
            "log.flush.interval.messages",
            d.flush_messages.to_string(),
            ConfigType::Long,
        ),
        (
            "log.flush.interval.ms",
            d.flush_ms.to_string(),
            ConfigType::Long,
        ),
        (
            "log.message.timestamp.type",
            d.message_timestamp_type.clone(),
            ConfigType::String,
        ),
        (
            "log.message.timestamp.before.max.ms",
            d.message_timestamp_before_max_ms.to_string(),
            ConfigType::Long,
        ),
        (
            "log.message.timestamp.after.max.ms",
            d.message_timestamp_after_max_ms.to_string(),
            ConfigType::Long,
        ),
        (
            "compression.type",
            d.compression_type.clone(),
            ConfigType::String,
        ),
        (
            "log.cleaner.delete.retention.ms",
            d.delete_retention_ms.to_string(),
            ConfigType::Long,
        ),
        (
            "min.insync.replicas",
            d.min_insync_replicas.to_string(),
            ConfigType::Int,
        ),
    ]
}

impl BrokerConfig {
    /// Checks values that would make the broker misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if self.node_id < 0 {
            return err(format!("node_id must be >= 0, got {}", self.node_id));
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
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms {
            return err(
                "group_min_session_timeout_ms must not exceed group_max_session_timeout_ms".into(),
            );
        }
        if self.max_inflight_request_bytes < self.max_request_bytes {
            return err("max_inflight_request_bytes must be at least max_request_bytes".into());
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
    fn the_default_broker_config_is_valid_and_round_trips_through_yaml() {
        let c = BrokerConfig::default();
        c.validate().unwrap();
        let yaml = serde_json::to_string(&c).unwrap();
        let back: BrokerConfig = serde_json::from_str(&yaml).unwrap();
        assert_eq!(back, c);
    }
}
