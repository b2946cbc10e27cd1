//! Topics: list, create, delete, configs, partitions — CreateTopics,
//! DeleteTopics, DescribeConfigs, IncrementalAlterConfigs, Metadata and
//! ListOffsets to the broker's listener, as `runnel topic` sends them.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest};
use kafka_protocol::protocol::StrBytes;
use runnel_core::client::{alter_configs_request, RESOURCE_TOPIC};
use serde::Deserialize;
use serde_json::{json, Value};

use super::kafka::{self, check, client, metadata, name};
use super::{done, ApiError, ApiResult, Console};

/// Most config entries a create or an edit may carry.
const MAX_CONFIGS: usize = 100;
/// Most partitions a topic may be created with from the console.
const MAX_PARTITIONS: i32 = 10_000;

/// Most partitions whose offsets one topic listing asks for (beyond it the
/// listing shows no record counts).
const MAX_COUNTED_PARTITIONS: usize = 10_000;

/// `GET /api/topics`: every topic with partitions, replication factor,
/// size on disk (each partition's leader replica, from DescribeLogDirs to
/// every broker) and records held (log end − log start, from each
/// partition's leader).
pub async fn list(State(console): State<Console>) -> ApiResult<Json<Value>> {
    let mut cluster = kafka::cluster_client(&console).await?;
    let meta = cluster.metadata().clone();
    let all: Vec<(String, i32)> = meta
        .topics
        .iter()
        .filter_map(|t| Some((t.name.as_ref()?.0.to_string(), t)))
        .flat_map(|(name, t)| {
            t.partitions
                .iter()
                .map(move |p| (name.clone(), p.partition_index))
        })
        .take(MAX_COUNTED_PARTITIONS + 1)
        .collect();
    let (start, end) = if all.len() <= MAX_COUNTED_PARTITIONS {
        (
            cluster.list_offsets(&all, -2).await?,
            cluster.list_offsets(&all, -1).await?,
        )
    } else {
        Default::default()
    };
    let (sizes, _unanswered) = cluster.replica_sizes().await;
    let mut topics: Vec<Value> = meta
        .topics
        .iter()
        .filter_map(|t| {
            let topic = t.name.as_ref()?.0.to_string();
            let mut size: Option<i64> = None;
            let mut messages: Option<i64> = None;
            for p in &t.partitions {
                let key = (topic.clone(), p.partition_index);
                if let Some(replicas) = sizes.get(&key) {
                    // The leader's copy, else the largest one known.
                    let bytes = replicas
                        .get(&p.leader_id.0)
                        .or_else(|| replicas.values().max())
                        .copied()
                        .unwrap_or(0);
                    *size.get_or_insert(0) += bytes;
                }
                if let (Some(s), Some(e)) = (start.get(&key), end.get(&key)) {
                    *messages.get_or_insert(0) += (e - s).max(0);
                }
            }
            Some(json!({
                "name": topic,
                "internal": t.is_internal || runnel_core::broker::is_system_topic(&topic),
                "partitions": t.partitions.len(),
                "replication_factor": t.partitions.iter().map(|p| p.replica_nodes.len()).max().unwrap_or(0),
                "under_replicated": t.partitions.iter().filter(|p| p.isr_nodes.len() < p.replica_nodes.len()).count(),
                "error": (t.error_code != 0).then(|| kafka::error_name(t.error_code)),
                "size_bytes": size,
                "messages": messages,
            }))
        })
        .collect();
    topics.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(json!({ "topics": topics })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTopic {
    name: String,
    #[serde(default)]
    partitions: Option<i32>,
    #[serde(default)]
    replication_factor: Option<i16>,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

/// `POST /api/topics`: CreateTopics; the broker's name and config rules
/// answer for themselves.
pub async fn create(
    State(console): State<Console>,
    body: Result<Json<NewTopic>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(new) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if new.configs.len() > MAX_CONFIGS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_CONFIGS} configs"
        )));
    }
    if let Some(p) = new.partitions {
        if !(1..=MAX_PARTITIONS).contains(&p) {
            return Err(ApiError::bad_request(format!(
                "partitions must be between 1 and {MAX_PARTITIONS}"
            )));
        }
    }
    if matches!(new.replication_factor, Some(r) if r < 1) {
        return Err(ApiError::bad_request(
            "replication factor must be at least 1",
        ));
    }
    let mut client = client(&console).await?;
    let mut topic = CreatableTopic::default();
    topic.name = name(&new.name);
    topic.num_partitions = new.partitions.unwrap_or(-1);
    topic.replication_factor = new.replication_factor.unwrap_or(-1);
    for (k, v) in &new.configs {
        let mut c = CreatableTopicConfig::default();
        c.name = StrBytes::from_string(k.clone());
        c.value = Some(StrBytes::from_string(v.clone()));
        topic.configs.push(c);
    }
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![topic];
    request.timeout_ms = 10_000;
    let response = client.send(&request).await?;
    let result = response
        .topics
        .first()
        .ok_or_else(|| ApiError::upstream("empty CreateTopics answer"))?;
    check(
        result.error_code,
        result.error_message.as_ref(),
        &format!("cannot create topic '{}'", new.name),
    )?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": new.name, "partitions": result.num_partitions })),
    ))
}

#[derive(Deserialize)]
pub struct Confirm {
    /// The topic's name again: a delete is confirmed by naming it.
    confirm: String,
}

/// `DELETE /api/topics/{name}` with `{"confirm": name}`.
pub async fn delete(
    State(console): State<Console>,
    Path(topic): Path<String>,
    body: Result<Json<Confirm>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(confirm) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if confirm.confirm != topic {
        return Err(ApiError::bad_request(
            "confirm the delete by giving the topic's name in \"confirm\"",
        ));
    }
    let mut client = client(&console).await?;
    let mut request = DeleteTopicsRequest::default();
    if client.version_for::<DeleteTopicsRequest>()? >= 6 {
        let mut t = DeleteTopicState::default();
        t.name = Some(name(&topic));
        request.topics = vec![t];
    } else {
        request.topic_names = vec![name(&topic)];
    }
    request.timeout_ms = 10_000;
    let response = client.send(&request).await?;
    let result = response
        .responses
        .first()
        .ok_or_else(|| ApiError::upstream("empty DeleteTopics answer"))?;
    check(
        result.error_code,
        result.error_message.as_ref(),
        &format!("cannot delete topic '{topic}'"),
    )?;
    Ok(done(&format!("deleted topic {topic}")))
}

/// `GET /api/topics/{name}`: partitions (leader, replicas, ISR, log start
/// and end) and configs (value, source, whether read-only or sensitive).
pub async fn describe(
    State(console): State<Console>,
    Path(topic): Path<String>,
) -> ApiResult<Json<Value>> {
    let mut cluster = kafka::cluster_client(&console).await?;
    let meta = metadata(cluster.bootstrap(), Some(&topic)).await?;
    let t = meta
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic.as_str()))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no topic '{topic}'")))?;
    check(t.error_code, None, &format!("topic '{topic}'"))?;
    let tps: Vec<(String, i32)> = t
        .partitions
        .iter()
        .map(|p| (topic.clone(), p.partition_index))
        .collect();
    let start = cluster.list_offsets(&tps, -2).await?;
    let end = cluster.list_offsets(&tps, -1).await?;
    let mut partitions: Vec<Value> = t
        .partitions
        .iter()
        .map(|p| {
            let key = (topic.clone(), p.partition_index);
            let (start, end) = (start.get(&key), end.get(&key));
            json!({
                "partition": p.partition_index,
                "leader": p.leader_id.0,
                "leader_epoch": p.leader_epoch,
                "replicas": p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                "isr": p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                "offline_replicas": p.offline_replicas.iter().map(|b| b.0).collect::<Vec<_>>(),
                "log_start_offset": start,
                "log_end_offset": end,
            })
        })
        .collect();
    partitions.sort_by_key(|p| p["partition"].as_i64());

    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = 2;
    resource.resource_name = StrBytes::from_string(topic.clone());
    resource.configuration_keys = None;
    let mut request = DescribeConfigsRequest::default();
    request.resources = vec![resource];
    request.include_documentation = true;
    let response = cluster.bootstrap().send(&request).await?;
    let mut configs = Vec::new();
    for r in &response.results {
        check(r.error_code, r.error_message.as_ref(), "describing configs")?;
        for c in &r.configs {
            configs.push(json!({
                "name": c.name.to_string(),
                "value": c.value.as_ref().map(|v| v.to_string()),
                "source": config_source(c.config_source),
                "read_only": c.read_only,
                "sensitive": c.is_sensitive,
                "documentation": c.documentation.as_ref().map(|d| d.to_string()),
            }));
        }
    }
    Ok(Json(json!({
        "name": topic,
        "internal": t.is_internal || runnel_core::broker::is_system_topic(&topic),
        "partitions": partitions,
        "configs": configs,
    })))
}

fn config_source(code: i8) -> &'static str {
    match code {
        1 => "topic",
        2 => "dynamic broker",
        3 => "dynamic default broker",
        4 => "static broker",
        5 => "default",
        _ => "unknown",
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigChange {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    delete: Vec<String>,
}

/// `POST /api/topics/{name}/configs` with `{"set": {k: v}, "delete": [k]}`:
/// IncrementalAlterConfigs (the broker validates each value).
pub async fn alter_configs(
    State(console): State<Console>,
    Path(topic): Path<String>,
    body: Result<Json<ConfigChange>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(change) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if change.set.is_empty() && change.delete.is_empty() {
        return Err(ApiError::bad_request("nothing to change"));
    }
    if change.set.len() + change.delete.len() > MAX_CONFIGS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_CONFIGS} configs"
        )));
    }
    let mut client = client(&console).await?;
    let set: Vec<(String, String)> = change.set.into_iter().collect();
    let request = alter_configs_request(RESOURCE_TOPIC, &topic, &set, &change.delete);
    let response = client.send(&request).await?;
    let result = response
        .responses
        .first()
        .ok_or_else(|| ApiError::upstream("empty IncrementalAlterConfigs answer"))?;
    check(
        result.error_code,
        result.error_message.as_ref(),
        &format!("cannot alter topic '{topic}'"),
    )?;
    Ok(done(&format!("updated configs of topic {topic}")))
}
