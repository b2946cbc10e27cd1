//! Topics: list, create, delete, configs, partitions — CreateTopics,
//! DeleteTopics, DescribeConfigs, IncrementalAlterConfigs, Metadata and
//! ListOffsets to the broker's listener, as `runnel topic` sends them.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, ListOffsetsRequest,
};
use kafka_protocol::protocol::StrBytes;
use runnel_core::client::{alter_configs_request, Client, RESOURCE_TOPIC};
use serde::Deserialize;
use serde_json::{json, Value};

use super::kafka::{self, check, client, metadata, name};
use super::{done, ApiError, ApiResult, Console};

/// Most config entries a create or an edit may carry.
const MAX_CONFIGS: usize = 100;
/// Most partitions a topic may be created with from the console.
const MAX_PARTITIONS: i32 = 10_000;

/// `GET /api/topics`: every topic with partitions, replication factor,
/// and the size and record count of the partitions this broker leads.
pub async fn list(State(console): State<Console>) -> ApiResult<Json<Value>> {
    let mut client = client(&console).await?;
    let meta = metadata(&mut client, None).await?;
    let totals = kafka::topic_totals(&kafka::samples(&console).await);
    let mut topics: Vec<Value> = meta
        .topics
        .iter()
        .filter_map(|t| {
            let topic = t.name.as_ref()?.0.to_string();
            let t_totals = totals.get(&topic);
            Some(json!({
                "name": topic,
                "internal": t.is_internal || runnel_core::broker::is_system_topic(&topic),
                "partitions": t.partitions.len(),
                "replication_factor": t.partitions.iter().map(|p| p.replica_nodes.len()).max().unwrap_or(0),
                "under_replicated": t.partitions.iter().filter(|p| p.isr_nodes.len() < p.replica_nodes.len()).count(),
                "error": (t.error_code != 0).then(|| kafka::error_name(t.error_code)),
                "size_bytes": t_totals.map(|x| x.size_bytes),
                "messages": t_totals.map(|x| x.messages),
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

/// Log start and end offsets of `partitions` of `topic` (ListOffsets with
/// -2 and -1), asked of each partition's leader.
pub async fn start_end_offsets(
    client: &mut Client,
    topic: &str,
    leaders: &[(i32, i32)],
) -> ApiResult<HashMap<i32, (i64, i64)>> {
    let mut out: HashMap<i32, (i64, i64)> = HashMap::new();
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (p, leader) in leaders {
        by_leader.entry(*leader).or_default().push(*p);
    }
    for (_, partitions) in by_leader {
        let Some(&first) = partitions.first() else {
            continue;
        };
        let mut leader = match client
            .connect_to_leader(topic, first, "runnel-console")
            .await
        {
            Ok(c) => c,
            Err(_) => continue,
        };
        leader.set_timeout(super::UPSTREAM_TIMEOUT);
        for ts in [-2i64, -1] {
            for (p, offset) in list_offsets(&mut leader, topic, &partitions, ts).await? {
                let e = out.entry(p).or_insert((-1, -1));
                if ts == -2 {
                    e.0 = offset;
                } else {
                    e.1 = offset;
                }
            }
        }
    }
    Ok(out)
}

/// ListOffsets for `partitions` of `topic` at `timestamp` (-1 latest,
/// -2 earliest); partitions with an error are left out.
pub async fn list_offsets(
    client: &mut Client,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> ApiResult<Vec<(i32, i64)>> {
    let mut t = ListOffsetsTopic::default();
    t.name = name(topic);
    t.partitions = partitions
        .iter()
        .map(|&p| {
            let mut lp = ListOffsetsPartition::default();
            lp.partition_index = p;
            lp.timestamp = timestamp;
            lp.current_leader_epoch = -1;
            lp
        })
        .collect();
    let mut request = ListOffsetsRequest::default();
    request.replica_id = (-1).into();
    request.topics = vec![t];
    let response = client.send(&request).await?;
    Ok(response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .filter(|p| p.error_code == 0)
        .map(|p| (p.partition_index, p.offset))
        .collect())
}

/// `GET /api/topics/{name}`: partitions (leader, replicas, ISR, log start
/// and end) and configs (value, source, whether read-only or sensitive).
pub async fn describe(
    State(console): State<Console>,
    Path(topic): Path<String>,
) -> ApiResult<Json<Value>> {
    let mut client = client(&console).await?;
    let meta = metadata(&mut client, Some(&topic)).await?;
    let t = meta
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic.as_str()))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no topic '{topic}'")))?;
    check(t.error_code, None, &format!("topic '{topic}'"))?;
    let leaders: Vec<(i32, i32)> = t
        .partitions
        .iter()
        .filter(|p| p.leader_id.0 >= 0)
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    let offsets = start_end_offsets(&mut client, &topic, &leaders).await?;
    let mut partitions: Vec<Value> = t
        .partitions
        .iter()
        .map(|p| {
            let (start, end) = offsets
                .get(&p.partition_index)
                .copied()
                .map_or((None, None), |(s, e)| (Some(s), Some(e)));
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
    let response = client.send(&request).await?;
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
