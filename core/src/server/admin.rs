//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions,
//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs.
//!
//! Config resources: TOPIC (overrides in `topics.json`), BROKER (the
//! broker's configs; the dynamic ones, which are the topic defaults, can be
//! changed for this broker, resource name = its id, or as the cluster
//! default, name ""), GROUP (Kafka 4.0's group configs) and CLIENT_METRICS
//! (described, always empty). Error codes and messages follow Kafka's
//! (`ConfigAdminManager`, `ConfigHelper`, the controller's validation).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    incremental_alter_configs_response, AlterConfigsRequest, AlterConfigsResponse, BrokerId,
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::errors::kafka_error;
use super::str_bytes;
use crate::broker::meta::DynamicConfigs;
use crate::broker::{Broker, BrokerConfigScope, BrokerError, ConfigChange};
use crate::config::{
    broker_config_entries, dynamic_broker_key, dynamic_broker_keys, is_read_only_broker_key,
    BrokerConfig, ConfigType, DynamicBrokerKey, LogDefaults, GROUP_CONFIGS, TOPIC_CONFIGS,
};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_BROKER_LOGGER: i8 = 8;
const RESOURCE_CLIENT_METRICS: i8 = 16;
const RESOURCE_GROUP: i8 = 32;

/// Kafka's ConfigSource values.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
const SOURCE_GROUP: i8 = 8;

/// One value of a config and where it comes from.
#[derive(Debug, Clone, PartialEq)]
struct Synonym {
    name: &'static str,
    value: String,
    source: i8,
}

/// The broker keys that set the same thing as `name`, in Kafka's order
/// (`log.retention.ms`, `log.retention.minutes`, `log.retention.hours`).
fn broker_synonym_names(name: &'static str) -> Vec<&'static str> {
    match name {
        "log.retention.ms" | "log.retention.minutes" | "log.retention.hours" => vec![
            "log.retention.ms",
            "log.retention.minutes",
            "log.retention.hours",
        ],
        "log.roll.ms" | "log.roll.hours" => vec!["log.roll.ms", "log.roll.hours"],
        other => vec![other],
    }
}

/// Every value a broker key has, highest precedence first (Kafka's
/// `configSynonyms`): this broker's dynamic config, the cluster default,
/// the config file, the built-in default; the synonyms of a key are listed
/// at each level, and the list starts at `name`.
fn broker_synonyms(broker: &Broker, dynamic: &DynamicConfigs, name: &'static str) -> Vec<Synonym> {
    let names = broker_synonym_names(name);
    let builtin = LogDefaults::default();
    let mut out = Vec::new();
    for (level, source) in [
        (&dynamic.broker, SOURCE_DYNAMIC_BROKER),
        (&dynamic.cluster_default, SOURCE_DYNAMIC_DEFAULT_BROKER),
    ] {
        for n in &names {
            if let Some(v) = level.get(*n) {
                out.push(Synonym {
                    name: n,
                    value: v.clone(),
                    source,
                });
            }
        }
    }
    for n in &names {
        let Some(key) = dynamic_broker_key(n) else {
            continue;
        };
        let (Some(configured), default) = (
            key.static_value(&broker.config().log),
            key.static_value(&builtin),
        ) else {
            continue;
        };
        if Some(&configured) != default.as_ref() {
            out.push(Synonym {
                name: n,
                value: configured,
                source: SOURCE_STATIC_BROKER,
            });
        }
    }
    for n in &names {
        if let Some(v) = dynamic_broker_key(n).and_then(|k| k.static_value(&builtin)) {
            out.push(Synonym {
                name: n,
                value: v,
                source: SOURCE_DEFAULT,
            });
        }
    }
    let start = out.iter().position(|s| s.name == name).unwrap_or(out.len());
    out.split_off(start)
}

/// One effective topic config: its value and every synonym behind it.
struct Effective {
    name: &'static str,
    value: String,
    synonyms: Vec<Synonym>,
    kind: ConfigType,
    doc: &'static str,
}

impl Effective {
    fn source(&self) -> i8 {
        self.synonyms.first().map_or(SOURCE_DEFAULT, |s| s.source)
    }
}

fn effective_topic_configs(
    broker: &Broker,
    topic_configs: &BTreeMap<String, String>,
) -> Vec<Effective> {
    let defaults = broker.metadata().log_defaults();
    let dynamic = broker.metadata().dynamic_configs();
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let mut synonyms = Vec::new();
            if let Some(v) = topic_configs.get(def.name) {
                synonyms.push(Synonym {
                    name: def.name,
                    value: v.clone(),
                    source: SOURCE_DYNAMIC_TOPIC,
                });
            }
            if dynamic_broker_key(def.broker_synonym).is_some() {
                synonyms.extend(broker_synonyms(broker, &dynamic, def.broker_synonym));
            }
            let value = topic_configs
                .get(def.name)
                .cloned()
                .unwrap_or_else(|| def.default_value(&defaults));
            Effective {
                name: def.name,
                value,
                synonyms,
                kind: def.kind,
                doc: def.doc,
            }
        })
        .collect()
}

/// An error code with the message that goes with it.
type ErrorParts = (i16, Option<StrBytes>);
/// A created topic: id, partitions, replication factor, config overrides.
type CreatedTopic = (uuid::Uuid, i32, i16, BTreeMap<String, String>);

fn error_parts(e: &BrokerError) -> ErrorParts {
    (kafka_error(e).code(), Some(str_bytes(e.to_string())))
}

pub async fn create_topics(
    broker: &Arc<Broker>,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in &request.topics {
        *seen.entry(t.name.0.to_string()).or_default() += 1;
    }
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut result = CreatableTopicResult::default();
        result.name = topic.name.clone();
        result.num_partitions = -1;
        result.replication_factor = -1;
        let outcome: Result<CreatedTopic, ErrorParts> = async {
            if seen.get(&name).copied().unwrap_or(0) > 1 {
                return Err((
                    ResponseError::InvalidRequest.code(),
                    Some(str_bytes(format!("topic '{name}' appears more than once in the request"))),
                ));
            }
            let mut configs = BTreeMap::new();
            for c in &topic.configs {
                let Some(value) = &c.value else {
                    return Err((
                        ResponseError::InvalidConfig.code(),
                        Some(str_bytes(format!("config '{}' has a null value", c.name))),
                    ));
                };
                configs.insert(c.name.to_string(), value.to_string());
            }
            let mut partitions = topic.num_partitions;
            let mut replication = topic.replication_factor;
            if !topic.assignments.is_empty() {
                if partitions != -1 || replication != -1 {
                    return Err((
                        ResponseError::InvalidRequest.code(),
                        Some(str_bytes("give either a replica assignment or partition count and replication factor")),
                    ));
                }
                let mut indexes: Vec<i32> = topic.assignments.iter().map(|a| a.partition_index).collect();
                indexes.sort_unstable();
                let contiguous = indexes.iter().enumerate().all(|(i, p)| *p == i as i32);
                let local = topic.assignments.iter().all(|a| a.broker_ids == vec![BrokerId(broker.node_id())]);
                if !contiguous || !local {
                    let e = BrokerError::InvalidReplicaAssignment(format!(
                        "assignments must cover partitions 0..n, each on broker {} only",
                        broker.node_id()
                    ));
                    return Err(error_parts(&e));
                }
                partitions = indexes.len() as i32;
                replication = 1;
            }
            if request.validate_only {
                let count = broker
                    .metadata().validate_new_topic(&name, partitions, replication, &configs)
                    .map_err(|e| error_parts(&e))?;
                return Ok((uuid::Uuid::nil(), count, replication.max(1), configs));
            }
            let topic = broker
                .metadata().create_topic(&name, partitions, replication, configs, false)
                .await
                .map_err(|e| error_parts(&e))?;
            // The replication factor the controller chose (the request's, or
            // the cluster default for -1).
            let factor = broker
                .metadata()
                .image()
                .topic(&topic.id)
                .and_then(|t| t.partitions.values().next().map(|p| p.replicas.len() as i16))
                .unwrap_or(1);
            Ok((topic.id, topic.partition_count(), factor, topic.configs()))
        }
        .await;
        match outcome {
            Ok((id, partitions, factor, configs)) => {
                result.topic_id = id;
                result.num_partitions = partitions;
                result.replication_factor = factor;
                if version >= 5 {
                    let configs = effective_topic_configs(broker, &configs);
                    result.configs = Some(
                        configs
                            .into_iter()
                            .map(|c| {
                                let mut out = CreatableTopicConfigs::default();
                                out.name = str_bytes(c.name);
                                out.config_source = c.source();
                                out.value = Some(str_bytes(c.value));
                                out
                            })
                            .collect(),
                    );
                }
            }
            Err((code, message)) => {
                result.error_code = code;
                result.error_message = message;
            }
        }
        response.topics.push(result);
    }
    response
}

pub async fn delete_topics(
    broker: &Arc<Broker>,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let mut response = DeleteTopicsResponse::default();
    let targets: Vec<(Option<TopicName>, uuid::Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n), uuid::Uuid::nil()))
            .collect()
    };
    let mut named: HashMap<String, usize> = HashMap::new();
    for (name, _) in &targets {
        if let Some(n) = name {
            *named.entry(n.0.to_string()).or_default() += 1;
        }
    }
    for (name, id) in targets {
        let mut result = DeletableTopicResult::default();
        let invalid = |m: &str| Err(BrokerError::InvalidRequest(m.into()));
        let resolved_name = match (&name, id.is_nil()) {
            (Some(n), _) if named.get(n.0.as_str()).copied().unwrap_or(0) > 1 => {
                invalid("Duplicate topic name.")
            }
            (Some(_), false) => invalid("You may not specify both topic name and topic id."),
            (Some(n), true) => Ok(n.0.to_string()),
            (None, false) => broker
                .topic_by_id(id)
                .map(|t| t.name.to_string())
                .ok_or(BrokerError::UnknownTopicId(id)),
            (None, true) => invalid("Neither topic name nor id were specified."),
        };
        result.name = name.clone();
        result.topic_id = id;
        let outcome = match resolved_name {
            Ok(n) => {
                result.name = Some(TopicName(str_bytes(n.clone())));
                broker.metadata().delete_topic(&n).await
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(deleted_id) => result.topic_id = deleted_id,
            Err(e) => {
                let (code, message) = error_parts(&e);
                result.error_code = code;
                result.error_message = message;
            }
        }
        response.responses.push(result);
    }
    response
}

pub async fn create_partitions(
    broker: &Arc<Broker>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut response = CreatePartitionsResponse::default();
    let mut named: HashMap<String, usize> = HashMap::new();
    for t in &request.topics {
        *named.entry(t.name.0.to_string()).or_default() += 1;
    }
    for topic in request.topics {
        let mut result = CreatePartitionsTopicResult::default();
        result.name = topic.name.clone();
        let local = topic.assignments.as_ref().is_none_or(|a| {
            a.iter()
                .all(|x| x.broker_ids == vec![BrokerId(broker.node_id())])
        });
        let outcome = if named[topic.name.0.as_str()] > 1 {
            Err(BrokerError::InvalidRequest("Duplicate topic name.".into()))
        } else if !local {
            Err(BrokerError::InvalidReplicaAssignment(format!(
                "new partitions can only be placed on broker {}",
                broker.node_id()
            )))
        } else {
            broker
                .metadata()
                .create_partitions(&topic.name.0, topic.count, request.validate_only)
                .await
        };
        if let Err(e) = outcome {
            let (code, message) = error_parts(&e);
            result.error_code = code;
            result.error_message = message;
        }
        response.results.push(result);
    }
    response
}

/// A DescribeConfigs entry before it is shaped for the request.
struct Entry<'a> {
    name: &'a str,
    value: Option<String>,
    source: i8,
    read_only: bool,
    synonyms: &'a [Synonym],
    kind: ConfigType,
    doc: &'static str,
}

impl Entry<'_> {
    /// The entry as the request asked for it (synonyms, documentation).
    fn result(
        self,
        request: &DescribeConfigsRequest,
        version: i16,
    ) -> DescribeConfigsResourceResult {
        let mut entry = DescribeConfigsResourceResult::default();
        entry.name = str_bytes(self.name);
        entry.value = self.value.map(str_bytes);
        entry.config_source = self.source;
        entry.read_only = self.read_only;
        if request.include_synonyms {
            entry.synonyms = self
                .synonyms
                .iter()
                .map(|s| {
                    let mut out = DescribeConfigsSynonym::default();
                    out.name = str_bytes(s.name);
                    out.value = Some(str_bytes(s.value.clone()));
                    out.source = s.source;
                    out
                })
                .collect();
        }
        if version >= 3 {
            entry.config_type = self.kind as i8;
            if request.include_documentation {
                entry.documentation = Some(str_bytes(self.doc));
            }
        }
        entry
    }
}

/// Kafka's message for a broker resource name that is not this broker.
fn check_broker_name(broker: &Broker, name: &str, describing: bool) -> Result<(), ErrorParts> {
    let invalid = |m: String| (ResponseError::InvalidRequest.code(), Some(str_bytes(m)));
    let id: i32 = name.parse().map_err(|_| {
        invalid(if describing {
            format!("Broker id must be an integer, but it is: {name}")
        } else {
            format!("Node id must be an integer, but it is: {name}")
        })
    })?;
    if id != broker.node_id() {
        return Err(invalid(if describing {
            format!(
                "Unexpected broker id, expected {} or empty string, but received {name}",
                broker.node_id()
            )
        } else {
            format!(
                "Unexpected broker id, expected {}, but received {name}",
                broker.node_id()
            )
        }));
    }
    Ok(())
}

fn describe_broker(
    broker: &Broker,
    name: &str,
    request: &DescribeConfigsRequest,
    version: i16,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Vec<DescribeConfigsResourceResult>, ErrorParts> {
    let dynamic = broker.metadata().dynamic_configs();
    let defaults = broker.metadata().log_defaults();
    let mut out = Vec::new();
    if name.is_empty() {
        // The cluster default: only what is set there (as Kafka).
        for (key, value) in &dynamic.cluster_default {
            let Some(def) = dynamic_broker_key(key) else {
                continue;
            };
            if !wanted(key) {
                continue;
            }
            let synonyms: Vec<Synonym> = broker_synonyms(broker, &dynamic, def.name())
                .into_iter()
                .filter(|s| s.source == SOURCE_DYNAMIC_DEFAULT_BROKER)
                .collect();
            out.push(
                Entry {
                    name: def.name(),
                    value: Some(value.clone()),
                    source: SOURCE_DYNAMIC_DEFAULT_BROKER,
                    read_only: false,
                    synonyms: &synonyms,
                    kind: def.kind(),
                    doc: def.doc(),
                }
                .result(request, version),
            );
        }
        return Ok(out);
    }
    check_broker_name(broker, name, true)?;
    let builtin = BrokerConfig::default();
    let builtin_entries = broker_config_entries(&builtin);
    for (key, value, kind) in broker_config_entries(broker.config()) {
        if !wanted(key) {
            continue;
        }
        let is_default = builtin_entries
            .iter()
            .any(|(k, v, _)| *k == key && *v == value);
        let source = if is_default {
            SOURCE_DEFAULT
        } else {
            SOURCE_STATIC_BROKER
        };
        let synonyms = [Synonym {
            name: key,
            value: value.clone(),
            source,
        }];
        out.push(
            Entry {
                name: key,
                value: Some(value),
                source,
                read_only: true,
                synonyms: &synonyms,
                kind,
                doc: "",
            }
            .result(request, version),
        );
    }
    for key in dynamic_broker_keys() {
        let name = key.name();
        if !wanted(name) {
            continue;
        }
        let synonyms = broker_synonyms(broker, &dynamic, name);
        let value = match key {
            DynamicBrokerKey::TopicDefault(def) => Some(def.default_value(&defaults)),
            DynamicBrokerKey::ProducerIdExpiration => Some(
                defaults
                    .dynamic_value(name)
                    .unwrap_or_else(|| defaults.producer_id_expiration_ms.to_string()),
            ),
            // Reported only when set, like any unset synonym.
            DynamicBrokerKey::UnitSynonym { .. } => match synonyms.first() {
                Some(s) if s.name == name => Some(s.value.clone()),
                _ => continue,
            },
        };
        let source = synonyms.first().map_or(SOURCE_DEFAULT, |s| s.source);
        out.push(
            Entry {
                name,
                value,
                source,
                read_only: false,
                synonyms: &synonyms,
                kind: key.kind(),
                doc: key.doc(),
            }
            .result(request, version),
        );
    }
    Ok(out)
}

fn describe_group(
    broker: &Broker,
    name: &str,
    request: &DescribeConfigsRequest,
    version: i16,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Vec<DescribeConfigsResourceResult>, ErrorParts> {
    if name.is_empty() {
        return Err((
            ResponseError::InvalidRequest.code(),
            Some(str_bytes("Group name must not be empty")),
        ));
    }
    let set = broker.metadata().group_configs(name);
    Ok(GROUP_CONFIGS
        .iter()
        .filter(|def| wanted(def.name))
        .map(|def| {
            let (value, source) = match set.get(def.name) {
                Some(v) => (v.clone(), SOURCE_GROUP),
                None => (def.default_value().to_string(), SOURCE_DEFAULT),
            };
            let synonyms = [Synonym {
                name: def.name,
                value: value.clone(),
                source,
            }];
            Entry {
                name: def.name,
                value: Some(value),
                source,
                read_only: false,
                synonyms: &synonyms,
                kind: ConfigType::Int,
                doc: def.doc,
            }
            .result(request, version)
        })
        .collect())
}

pub fn describe_configs(
    broker: &Arc<Broker>,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    for resource in &request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        // Null (and, as in Kafka, an empty list) asks for every key.
        let wanted = |name: &str| match &resource.configuration_keys {
            Some(keys) if !keys.is_empty() => keys.iter().any(|k| k.as_str() == name),
            _ => true,
        };
        let name = resource.resource_name.as_str();
        let outcome: Result<Vec<DescribeConfigsResourceResult>, ErrorParts> =
            match resource.resource_type {
                RESOURCE_TOPIC => describe_topic(broker, name, &request, version, &wanted),
                RESOURCE_BROKER => describe_broker(broker, name, &request, version, &wanted),
                RESOURCE_GROUP => describe_group(broker, name, &request, version, &wanted),
                // No client metrics subscriptions exist: every one is empty.
                RESOURCE_CLIENT_METRICS if name.is_empty() => Err((
                    ResponseError::InvalidRequest.code(),
                    Some(str_bytes(
                        "Client metrics subscription name must not be empty",
                    )),
                )),
                RESOURCE_CLIENT_METRICS => Ok(Vec::new()),
                RESOURCE_BROKER_LOGGER => Err(broker_logger_unsupported()),
                other => Err((
                    ResponseError::InvalidRequest.code(),
                    Some(str_bytes(format!("Unsupported resource type: {other}"))),
                )),
            };
        match outcome {
            Ok(configs) => result.configs = configs,
            Err((code, message)) => {
                result.error_code = code;
                result.error_message = message;
            }
        }
        response.results.push(result);
    }
    response
}

fn broker_logger_unsupported() -> ErrorParts {
    (
        ResponseError::InvalidRequest.code(),
        Some(str_bytes(
            "BROKER_LOGGER configs (log levels) cannot be changed through the Kafka protocol \
             in Runnel: set RUNNEL_LOG",
        )),
    )
}

fn describe_topic(
    broker: &Broker,
    name: &str,
    request: &DescribeConfigsRequest,
    version: i16,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Vec<DescribeConfigsResourceResult>, ErrorParts> {
    crate::broker::validate_topic_name(name).map_err(|e| {
        (
            ResponseError::InvalidTopicException.code(),
            Some(str_bytes(e)),
        )
    })?;
    let topic = broker.topic(name).ok_or_else(|| {
        (
            ResponseError::UnknownTopicOrPartition.code(),
            Some(str_bytes(format!("topic '{name}' does not exist"))),
        )
    })?;
    Ok(effective_topic_configs(broker, &topic.configs())
        .into_iter()
        .filter(|c| wanted(c.name))
        .map(|c| {
            Entry {
                name: c.name,
                value: Some(c.value.clone()),
                source: c.source(),
                read_only: false,
                synonyms: &c.synonyms,
                kind: c.kind,
                doc: c.doc,
            }
            .result(request, version)
        })
        .collect())
}

/// One config operation of either AlterConfigs API: (name, operation, value).
/// Operations: 0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT; the legacy API only
/// sets (and replaces the whole resource).
type ConfigOp = (String, i8, Option<String>);

/// The checks Kafka's broker makes before anything else
/// (`ConfigAdminManager.preprocess`): no key twice, no null value but for
/// DELETE, known operations.
fn preprocess(ops: &[ConfigOp]) -> Result<Vec<ConfigChange>, ErrorParts> {
    let invalid = |m: String| (ResponseError::InvalidRequest.code(), Some(str_bytes(m)));
    let mut seen = std::collections::HashSet::new();
    if !ops.iter().all(|(name, _, _)| seen.insert(name.as_str())) {
        return Err(invalid("Error due to duplicate config keys".into()));
    }
    let nulls: Vec<&str> = ops
        .iter()
        .filter(|(_, op, value)| *op != 1 && value.is_none())
        .map(|(name, _, _)| name.as_str())
        .collect();
    if !nulls.is_empty() {
        return Err(invalid(format!(
            "Null value not supported for : {}",
            nulls.join(", ")
        )));
    }
    ops.iter()
        .map(|(name, op, value)| {
            let value = value.clone().unwrap_or_default();
            match op {
                0 => Ok(ConfigChange::Set(name.clone(), value)),
                1 => Ok(ConfigChange::Delete(name.clone())),
                2 => Ok(ConfigChange::Append(name.clone(), value)),
                3 => Ok(ConfigChange::Subtract(name.clone(), value)),
                other => Err(invalid(format!("Unknown operations type {other}"))),
            }
        })
        .collect()
}

/// Applies one resource's config operations (either API).
async fn alter_resource(
    broker: &Arc<Broker>,
    resource_type: i8,
    name: &str,
    ops: &[ConfigOp],
    replace_all: bool,
    validate_only: bool,
) -> Result<(), ErrorParts> {
    let changes = preprocess(ops)?;
    match resource_type {
        RESOURCE_TOPIC => {
            crate::broker::validate_topic_name(name).map_err(|e| {
                (
                    ResponseError::InvalidTopicException.code(),
                    Some(str_bytes(e)),
                )
            })?;
            broker
                .metadata()
                .alter_topic_configs(name, &changes, replace_all, validate_only)
                .await
                .map_err(|e| error_parts(&e))
        }
        RESOURCE_BROKER => {
            let scope = if name.is_empty() {
                BrokerConfigScope::ClusterDefault
            } else {
                check_broker_name(broker, name, false)?;
                BrokerConfigScope::Broker
            };
            let read_only: Vec<&str> = changes
                .iter()
                .filter_map(|c| match c {
                    ConfigChange::Delete(_) => None,
                    ConfigChange::Set(k, _)
                    | ConfigChange::Append(k, _)
                    | ConfigChange::Subtract(k, _) => Some(k.as_str()),
                })
                .filter(|k| is_read_only_broker_key(broker.config(), k))
                .collect();
            if !read_only.is_empty() {
                return Err((
                    ResponseError::InvalidRequest.code(),
                    Some(str_bytes(format!(
                        "Cannot update these configs dynamically: Set({})",
                        read_only.join(", ")
                    ))),
                ));
            }
            broker
                .metadata()
                .alter_broker_configs(scope, &changes, replace_all, validate_only)
                .await
                .map_err(|e| error_parts(&e))
        }
        RESOURCE_GROUP => {
            if name.is_empty() {
                return Err((
                    ResponseError::InvalidRequest.code(),
                    Some(str_bytes("Group name must not be empty")),
                ));
            }
            broker
                .metadata()
                .alter_group_configs(name, &changes, replace_all, validate_only)
                .await
                .map_err(|e| error_parts(&e))
        }
        RESOURCE_BROKER_LOGGER => Err(broker_logger_unsupported()),
        other => Err((
            ResponseError::InvalidRequest.code(),
            Some(str_bytes(format!("Unknown resource type {other}"))),
        )),
    }
}

/// Resources named twice in one request (Kafka refuses each of them).
fn duplicated(resources: &[(i8, String)]) -> Vec<bool> {
    let mut count: HashMap<&(i8, String), usize> = HashMap::new();
    for r in resources {
        *count.entry(r).or_default() += 1;
    }
    resources.iter().map(|r| count[r] > 1).collect()
}

fn duplicate_resource() -> ErrorParts {
    (
        ResponseError::InvalidRequest.code(),
        Some(str_bytes("Each resource must appear at most once.")),
    )
}

pub async fn alter_configs(
    broker: &Arc<Broker>,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut response = AlterConfigsResponse::default();
    let keys: Vec<(i8, String)> = request
        .resources
        .iter()
        .map(|r| (r.resource_type, r.resource_name.to_string()))
        .collect();
    let twice = duplicated(&keys);
    for (resource, twice) in request.resources.into_iter().zip(twice) {
        let mut result =
            kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse::default(
            );
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let ops: Vec<ConfigOp> = resource
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    0,
                    c.value.as_ref().map(|v| v.to_string()),
                )
            })
            .collect();
        let outcome = if twice {
            Err(duplicate_resource())
        } else {
            alter_resource(
                broker,
                resource.resource_type,
                &resource.resource_name,
                &ops,
                true,
                request.validate_only,
            )
            .await
        };
        if let Err((code, message)) = outcome {
            result.error_code = code;
            result.error_message = message;
        }
        response.responses.push(result);
    }
    response
}

pub async fn incremental_alter_configs(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut response = IncrementalAlterConfigsResponse::default();
    let keys: Vec<(i8, String)> = request
        .resources
        .iter()
        .map(|r| (r.resource_type, r.resource_name.to_string()))
        .collect();
    let twice = duplicated(&keys);
    for (resource, twice) in request.resources.into_iter().zip(twice) {
        let mut result =
            incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let ops: Vec<ConfigOp> = resource
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.config_operation,
                    c.value.as_ref().map(|v| v.to_string()),
                )
            })
            .collect();
        let outcome = if twice {
            Err(duplicate_resource())
        } else {
            alter_resource(
                broker,
                resource.resource_type,
                &resource.resource_name,
                &ops,
                false,
                request.validate_only,
            )
            .await
        };
        if let Err((code, message)) = outcome {
            result.error_code = code;
            result.error_message = message;
        }
        response.responses.push(result);
    }
    response
}

/// DescribeLogDirs: this broker's one log directory (`data_dir`) and the
/// size on disk of every partition replica it holds there, or of those
/// `request.topics` names (unknown ones are left out, as Kafka does). The
/// disk's total and usable bytes come from statvfs (-1 if it fails).
pub fn describe_log_dirs(
    broker: &Arc<Broker>,
    request: kafka_protocol::messages::DescribeLogDirsRequest,
) -> kafka_protocol::messages::DescribeLogDirsResponse {
    use kafka_protocol::messages::describe_log_dirs_response::{
        DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
    };
    let wanted: Option<HashMap<String, Vec<i32>>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let mut topics = Vec::new();
    for topic in broker.topics() {
        let asked = match &wanted {
            None => None,
            Some(w) => match w.get(topic.name.as_ref() as &str) {
                Some(partitions) => Some(partitions),
                None => continue,
            },
        };
        let mut partitions: Vec<DescribeLogDirsPartition> = topic
            .partitions()
            .iter()
            .filter(|p| asked.is_none_or(|a| a.contains(&p.index)))
            .map(|p| {
                let mut out = DescribeLogDirsPartition::default();
                out.partition_index = p.index;
                out.partition_size = i64::try_from(p.size_bytes()).unwrap_or(i64::MAX);
                out.offset_lag = 0;
                out.is_future_key = false;
                out
            })
            .collect();
        if partitions.is_empty() {
            continue;
        }
        partitions.sort_by_key(|p| p.partition_index);
        let mut t = DescribeLogDirsTopic::default();
        t.name = TopicName(str_bytes(topic.name.to_string()));
        t.partitions = partitions;
        topics.push(t);
    }
    let dir = &broker.config().data_dir;
    let (total_bytes, usable_bytes) =
        crate::broker::exposition::disk_space(dir).map_or((-1, -1), |(free, total)| {
            (
                i64::try_from(total).unwrap_or(i64::MAX),
                i64::try_from(free).unwrap_or(i64::MAX),
            )
        });
    let mut result = DescribeLogDirsResult::default();
    result.log_dir = str_bytes(dir.display().to_string());
    result.topics = topics;
    result.total_bytes = total_bytes;
    result.usable_bytes = usable_bytes;
    let mut response = kafka_protocol::messages::DescribeLogDirsResponse::default();
    response.results = vec![result];
    response
}

#[cfg(test)]
mod log_dirs_tests {
    use super::*;
    use crate::config::BrokerConfig;
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::DescribeLogDirsRequest;

    #[tokio::test]
    async fn describe_log_dirs_lists_every_replica_with_its_size_or_only_those_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            offsets_topic_partitions: 1,
            ..BrokerConfig::default()
        })
        .await
        .unwrap();
        for (name, n) in [("a", 3), ("b", 1)] {
            broker
                .metadata()
                .create_topic(name, n, 1, Default::default(), false)
                .await
                .unwrap();
        }
        // The replicas open once the broker applies the new image.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while ["a", "b"]
            .iter()
            .zip([3, 1])
            .any(|(t, n)| broker.topic(t).map_or(0, |t| t.partitions().len()) < n)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the replicas never opened"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // Null topics: every one (an empty list would be none).
        let mut every = DescribeLogDirsRequest::default();
        every.topics = None;
        let all = describe_log_dirs(&broker, every);
        assert_eq!(all.results.len(), 1);
        let result = &all.results[0];
        assert_eq!(result.log_dir.as_str(), dir.path().display().to_string());
        assert!(result.total_bytes > 0 && result.usable_bytes >= 0);
        let listed: Vec<(String, Vec<i32>)> = result
            .topics
            .iter()
            .filter(|t| ["a", "b"].contains(&t.name.0.as_str()))
            .map(|t| {
                (
                    t.name.0.to_string(),
                    t.partitions.iter().map(|p| p.partition_index).collect(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            vec![("a".to_string(), vec![0, 1, 2]), ("b".to_string(), vec![0])]
        );
        let size = |t: &str, p: i32| broker.partition(t, p).unwrap().size_bytes() as i64;
        for t in &result.topics {
            for p in &t.partitions {
                assert_eq!(p.partition_size, size(t.name.0.as_str(), p.partition_index));
            }
        }

        let mut only = DescribableLogDirTopic::default();
        only.topic = TopicName(str_bytes("a"));
        only.partitions = vec![1];
        let mut missing = DescribableLogDirTopic::default();
        missing.topic = TopicName(str_bytes("nope"));
        missing.partitions = vec![0];
        let mut request = DescribeLogDirsRequest::default();
        request.topics = Some(vec![only, missing]);
        let some = describe_log_dirs(&broker, request);
        let listed: Vec<(&str, Vec<i32>)> = some.results[0]
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.0.as_str(),
                    t.partitions.iter().map(|p| p.partition_index).collect(),
                )
            })
            .collect();
        assert_eq!(listed, vec![("a", vec![1])]);
    }
}
