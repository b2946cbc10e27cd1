//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions,
//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs.

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
use crate::broker::{Broker, BrokerError, ConfigChange};
use crate::config::{broker_config_entries, LogDefaults, TOPIC_CONFIGS};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's ConfigSource values.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// One effective topic config: name, value, source, and the broker default
/// behind it.
struct Effective {
    name: &'static str,
    value: String,
    source: i8,
    broker_synonym: &'static str,
    broker_value: String,
    broker_source: i8,
    kind: i8,
    doc: &'static str,
}

fn effective_topic_configs(
    topic_configs: &BTreeMap<String, String>,
    defaults: &LogDefaults,
) -> Vec<Effective> {
    let builtin = LogDefaults::default();
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let broker_value = def.default_value(defaults);
            let broker_source = if broker_value == def.default_value(&builtin) {
                SOURCE_DEFAULT
            } else {
                SOURCE_STATIC_BROKER
            };
            let (value, source) = match topic_configs.get(def.name) {
                Some(v) => (v.clone(), SOURCE_DYNAMIC_TOPIC),
                None => (broker_value.clone(), broker_source),
            };
            Effective {
                name: def.name,
                value,
                source,
                broker_synonym: def.broker_synonym,
                broker_value,
                broker_source,
                kind: def.kind as i8,
                doc: def.doc,
            }
        })
        .collect()
}

/// An error code with the message that goes with it.
type ErrorParts = (i16, Option<StrBytes>);
/// Topic id, partition count and config overrides of a created topic.
type CreatedTopic = (uuid::Uuid, i32, BTreeMap<String, String>);

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
                    .validate_new_topic(&name, partitions, replication, &configs)
                    .map_err(|e| error_parts(&e))?;
                return Ok((uuid::Uuid::nil(), count, configs));
            }
            let topic = broker
                .create_topic(&name, partitions, replication, configs, false)
                .await
                .map_err(|e| error_parts(&e))?;
            Ok((topic.id, topic.partition_count(), topic.configs()))
        }
        .await;
        match outcome {
            Ok((id, partitions, configs)) => {
                result.topic_id = id;
                result.num_partitions = partitions;
                result.replication_factor = 1;
                if version >= 5 {
                    let configs = effective_topic_configs(&configs, &broker.config().log);
                    result.configs = Some(
                        configs
                            .into_iter()
                            .map(|c| {
                                let mut out = CreatableTopicConfigs::default();
                                out.name = str_bytes(c.name);
                                out.value = Some(str_bytes(c.value));
                                out.config_source = c.source;
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
    for (name, id) in targets {
        let mut result = DeletableTopicResult::default();
        let resolved_name = match (&name, id.is_nil()) {
            (Some(n), _) => Ok(n.0.to_string()),
            (None, false) => broker
                .topic_by_id(id)
                .map(|t| t.name.to_string())
                .ok_or(BrokerError::UnknownTopicId(id)),
            (None, true) => Err(BrokerError::InvalidTopic(
                "neither a topic name nor a topic id was given".into(),
            )),
        };
        result.name = name.clone();
        result.topic_id = id;
        let outcome = match resolved_name {
            Ok(n) => {
                result.name = Some(TopicName(str_bytes(n.clone())));
                broker.delete_topic(&n).await
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
    for topic in request.topics {
        let mut result = CreatePartitionsTopicResult::default();
        result.name = topic.name.clone();
        let local = topic.assignments.as_ref().is_none_or(|a| {
            a.iter()
                .all(|x| x.broker_ids == vec![BrokerId(broker.node_id())])
        });
        let outcome = if !local {
            Err(BrokerError::InvalidReplicaAssignment(format!(
                "new partitions can only be placed on broker {}",
                broker.node_id()
            )))
        } else {
            broker
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

pub fn describe_configs(
    broker: &Arc<Broker>,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        // Null (and, leniently, an empty list) asks for every key.
        let wanted = |name: &str| match &resource.configuration_keys {
            Some(keys) if !keys.is_empty() => keys.iter().any(|k| k.as_str() == name),
            _ => true,
        };
        match resource.resource_type {
            RESOURCE_TOPIC => match broker.topic(&resource.resource_name) {
                None => {
                    result.error_code = ResponseError::UnknownTopicOrPartition.code();
                    result.error_message = Some(str_bytes(format!(
                        "topic '{}' does not exist",
                        resource.resource_name
                    )));
                }
                Some(topic) => {
                    for c in effective_topic_configs(&topic.configs(), &broker.config().log) {
                        if !wanted(c.name) {
                            continue;
                        }
                        let mut entry = DescribeConfigsResourceResult::default();
                        entry.name = str_bytes(c.name);
                        entry.value = Some(str_bytes(c.value.clone()));
                        entry.config_source = c.source;
                        if request.include_synonyms {
                            if c.source == SOURCE_DYNAMIC_TOPIC {
                                let mut s = DescribeConfigsSynonym::default();
                                s.name = str_bytes(c.name);
                                s.value = Some(str_bytes(c.value.clone()));
                                s.source = SOURCE_DYNAMIC_TOPIC;
                                entry.synonyms.push(s);
                            }
                            let mut s = DescribeConfigsSynonym::default();
                            s.name = str_bytes(c.broker_synonym);
                            s.value = Some(str_bytes(c.broker_value));
                            s.source = c.broker_source;
                            entry.synonyms.push(s);
                        }
                        if version >= 3 {
                            entry.config_type = c.kind;
                            if request.include_documentation {
                                entry.documentation = Some(str_bytes(c.doc));
                            }
                        }
                        result.configs.push(entry);
                    }
                }
            },
            RESOURCE_BROKER => {
                let name = resource.resource_name.as_str();
                if !name.is_empty() && name != broker.node_id().to_string() {
                    result.error_code = ResponseError::InvalidRequest.code();
                    result.error_message = Some(str_bytes(format!(
                        "this is broker {}, not '{name}'",
                        broker.node_id()
                    )));
                } else {
                    for (key, value, kind) in broker_config_entries(broker.config()) {
                        if !wanted(key) {
                            continue;
                        }
                        let mut entry = DescribeConfigsResourceResult::default();
                        entry.name = str_bytes(key);
                        entry.value = Some(str_bytes(value));
                        entry.read_only = true;
                        entry.config_source = SOURCE_STATIC_BROKER;
                        if version >= 3 {
                            entry.config_type = kind as i8;
                        }
                        result.configs.push(entry);
                    }
                }
            }
            other => {
                result.error_code = ResponseError::InvalidRequest.code();
                result.error_message = Some(str_bytes(format!(
                    "config resource type {other} is not supported"
                )));
            }
        }
        response.results.push(result);
    }
    response
}

/// Broker configs come from the config file; they cannot change at runtime.
fn broker_is_static() -> ErrorParts {
    (
        ResponseError::InvalidRequest.code(),
        Some(str_bytes(
            "broker configs are static in Runnel: change the config file and restart",
        )),
    )
}

pub async fn alter_configs(
    broker: &Arc<Broker>,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut response = AlterConfigsResponse::default();
    for resource in request.resources {
        let mut result =
            kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse::default(
            );
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let outcome = match resource.resource_type {
            RESOURCE_TOPIC => {
                let mut changes = Vec::new();
                let mut null = None;
                for c in &resource.configs {
                    match &c.value {
                        Some(v) => {
                            changes.push(ConfigChange::Set(c.name.to_string(), v.to_string()))
                        }
                        None => null = Some(c.name.to_string()),
                    }
                }
                match null {
                    Some(n) => Err((
                        ResponseError::InvalidConfig.code(),
                        Some(str_bytes(format!("config '{n}' has a null value"))),
                    )),
                    None => broker
                        .alter_topic_configs(
                            &resource.resource_name,
                            &changes,
                            true,
                            request.validate_only,
                        )
                        .await
                        .map_err(|e| error_parts(&e)),
                }
            }
            RESOURCE_BROKER => Err(broker_is_static()),
            other => Err((
                ResponseError::InvalidRequest.code(),
                Some(str_bytes(format!(
                    "config resource type {other} is not supported"
                ))),
            )),
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
    for resource in request.resources {
        let mut result =
            incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let outcome = match resource.resource_type {
            RESOURCE_TOPIC => {
                let mut changes = Vec::new();
                let mut problem = None;
                for c in &resource.configs {
                    let name = c.name.to_string();
                    let value = c.value.as_ref().map(|v| v.to_string());
                    let change = match (c.config_operation, value) {
                        (0, Some(v)) => ConfigChange::Set(name, v),
                        (1, _) => ConfigChange::Delete(name),
                        (2, Some(v)) => ConfigChange::Append(name, v),
                        (3, Some(v)) => ConfigChange::Subtract(name, v),
                        (0 | 2 | 3, None) => {
                            problem = Some(format!("config '{name}' needs a value"));
                            break;
                        }
                        (op, _) => {
                            problem = Some(format!("unknown config operation {op} for '{name}'"));
                            break;
                        }
                    };
                    changes.push(change);
                }
                match problem {
                    Some(p) => Err((ResponseError::InvalidRequest.code(), Some(str_bytes(p)))),
                    None => broker
                        .alter_topic_configs(
                            &resource.resource_name,
                            &changes,
                            false,
                            request.validate_only,
                        )
                        .await
                        .map_err(|e| error_parts(&e)),
                }
            }
            RESOURCE_BROKER => Err(broker_is_static()),
            other => Err((
                ResponseError::InvalidRequest.code(),
                Some(str_bytes(format!(
                    "config resource type {other} is not supported"
                ))),
            )),
        };
        if let Err((code, message)) = outcome {
            result.error_code = code;
            result.error_message = message;
        }
        response.responses.push(result);
    }
    response
}
