//! Consumer groups through librdkafka: ListGroups/DescribeGroups for state
//! and members, OffsetFetch for committed positions, the partitions'
//! watermarks for lag, and OffsetCommit (as `kafka-consumer-groups
//! --reset-offsets` does) to move an empty group.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::kafka::{blocking, rdkafka_config};
use super::{ApiError, ApiResult, Console, UPSTREAM_TIMEOUT};

/// Most partitions whose committed offsets one answer looks up.
const MAX_PARTITIONS: usize = 10_000;

fn group_consumer(console: &Console, group: &str) -> ApiResult<BaseConsumer> {
    Ok(rdkafka_config(console)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?)
}

/// Most groups whose lag one listing computes (the others show none).
const MAX_GROUPS_WITH_LAG: usize = 500;

/// Total lag of each of `groups`: its committed offsets (OffsetFetch to its
/// coordinator) against the log ends (ListOffsets to each partition's
/// leader), over the Kafka protocol so that it is right in a cluster.
/// A group whose offsets cannot be read, or that committed none, has no
/// entry.
async fn lag_per_group<'a>(
    console: &Console,
    groups: impl Iterator<Item = &'a str>,
) -> ApiResult<HashMap<String, i64>> {
    let mut cluster = super::kafka::cluster_client(console).await?;
    let mut committed = Vec::new();
    for group in groups.take(MAX_GROUPS_WITH_LAG) {
        if let Ok(offsets) = cluster.committed_offsets(group).await {
            if !offsets.is_empty() {
                committed.push((group.to_string(), offsets));
            }
        }
    }
    let mut partitions: Vec<(String, i32)> = committed
        .iter()
        .flat_map(|(_, o)| o.keys().cloned())
        .collect();
    partitions.sort();
    partitions.dedup();
    let ends = cluster.list_offsets(&partitions, -1).await?;
    Ok(committed
        .into_iter()
        .map(|(group, offsets)| {
            let lag = offsets
                .iter()
                .filter_map(|(tp, c)| Some((ends.get(tp)? - c).max(0)))
                .sum();
            (group, lag)
        })
        .collect())
}

/// `GET /api/groups`: every group with its state, member count and lag.
pub async fn list(State(console): State<Console>) -> ApiResult<Json<Value>> {
    let config = rdkafka_config(&console);
    let groups = blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let list = consumer.fetch_group_list(None, UPSTREAM_TIMEOUT)?;
        Ok(list
            .groups()
            .iter()
            .map(|g| {
                (
                    g.name().to_string(),
                    g.state().to_string(),
                    g.protocol_type().to_string(),
                    g.members().len(),
                )
            })
            .collect::<Vec<_>>())
    })
    .await?;
    let lag = lag_per_group(&console, groups.iter().map(|g| g.0.as_str())).await?;
    let mut out: Vec<Value> = groups
        .into_iter()
        .map(|(name, state, protocol_type, members)| {
            json!({
                "group_id": name,
                "state": state,
                "protocol_type": protocol_type,
                "members": members,
                "lag": lag.get(&name).copied(),
            })
        })
        .collect();
    out.sort_by(|a, b| a["group_id"].as_str().cmp(&b["group_id"].as_str()));
    Ok(Json(json!({ "groups": out })))
}

/// One partition's committed offset and lag.
#[derive(Debug, Serialize)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub lag: Option<i64>,
}

/// Committed offsets of `group` (on `topic`, or on every topic) with the
/// partitions' watermarks.
pub async fn offsets(
    console: &Console,
    group: &str,
    topic: Option<&str>,
) -> ApiResult<Vec<PartitionOffset>> {
    let consumer = group_consumer(console, group)?;
    let topic = topic.map(str::to_string);
    blocking(move || {
        let meta = consumer.fetch_metadata(topic.as_deref(), UPSTREAM_TIMEOUT)?;
        let mut tpl = TopicPartitionList::new();
        for t in meta.topics() {
            if t.error().is_some() || t.name().starts_with("__") {
                continue;
            }
            for p in t.partitions() {
                if tpl.count() < MAX_PARTITIONS {
                    tpl.add_partition(t.name(), p.id());
                }
            }
        }
        if tpl.count() == 0 {
            return Ok(Vec::new());
        }
        let committed = consumer.committed_offsets(tpl, UPSTREAM_TIMEOUT)?;
        let mut out = Vec::new();
        for e in committed.elements() {
            let Offset::Offset(offset) = e.offset() else {
                continue;
            };
            let (low, high) =
                consumer.fetch_watermarks(e.topic(), e.partition(), UPSTREAM_TIMEOUT)?;
            out.push(PartitionOffset {
                topic: e.topic().to_string(),
                partition: e.partition(),
                committed: offset,
                log_start_offset: low,
                log_end_offset: high,
                lag: Some((high - offset.max(low)).max(0)),
            });
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    })
    .await
}

struct Described {
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<Value>,
}

async fn describe_group(console: &Console, group: &str) -> ApiResult<Option<Described>> {
    let config = rdkafka_config(console);
    let group = group.to_string();
    blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let list = consumer.fetch_group_list(Some(&group), UPSTREAM_TIMEOUT)?;
        let Some(g) = list.groups().iter().find(|g| g.name() == group) else {
            return Ok(None);
        };
        let members = g
            .members()
            .iter()
            .map(|m| {
                let assigned: Vec<Value> = m
                    .assignment()
                    .map(runnel_core::client::assigned_partitions)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(t, p)| json!({ "topic": t, "partition": p }))
                    .collect();
                json!({
                    "member_id": m.id(),
                    "client_id": m.client_id(),
                    "host": m.client_host(),
                    "assignments": assigned,
                })
            })
            .collect();
        Ok(Some(Described {
            state: g.state().to_string(),
            protocol_type: g.protocol_type().to_string(),
            protocol: g.protocol().to_string(),
            members,
        }))
    })
    .await
}

/// `GET /api/groups/{id}`: state, members with their partitions, and the
/// committed offset and lag of every partition the group committed.
pub async fn describe(
    State(console): State<Console>,
    Path(group): Path<String>,
) -> ApiResult<Json<Value>> {
    let described = describe_group(&console, &group).await?;
    let offsets = offsets(&console, &group, None).await?;
    let Some(d) = described else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no group '{group}'"),
        ));
    };
    // A group the coordinator does not know is reported "Dead" with no
    // members and no offsets.
    if d.state == "Dead" && offsets.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no group '{group}'"),
        ));
    }
    let lag: i64 = offsets.iter().filter_map(|o| o.lag).sum();
    Ok(Json(json!({
        "group_id": group,
        "state": d.state,
        "protocol_type": d.protocol_type,
        "protocol": d.protocol,
        "members": d.members,
        "offsets": offsets,
        "lag": lag,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reset {
    /// Only this topic's partitions; otherwise every partition the group
    /// committed.
    #[serde(default)]
    topic: Option<String>,
    /// `earliest`, `latest`, `offset` or `timestamp`.
    to: String,
    #[serde(default)]
    offset: Option<i64>,
    #[serde(default)]
    timestamp: Option<i64>,
}

/// `POST /api/groups/{id}/reset-offsets`: moves an empty group's committed
/// offsets; a group with members is refused (409), as Kafka's tool does.
pub async fn reset_offsets(
    State(console): State<Console>,
    Path(group): Path<String>,
    body: Result<Json<Reset>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(reset) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    match reset.to.as_str() {
        "earliest" | "latest" => {}
        "offset" if reset.offset.is_some() => {}
        "timestamp" if reset.timestamp.is_some() => {}
        "offset" => return Err(ApiError::bad_request("to=offset needs \"offset\"")),
        "timestamp" => return Err(ApiError::bad_request("to=timestamp needs \"timestamp\"")),
        _ => {
            return Err(ApiError::bad_request(
                "\"to\" is one of earliest, latest, offset, timestamp",
            ))
        }
    }
    if let Some(d) = describe_group(&console, &group).await? {
        if !d.members.is_empty() || !(d.state == "Empty" || d.state == "Dead") {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "group '{group}' is {} with {} member(s): stop its consumers first",
                    d.state,
                    d.members.len()
                ),
            ));
        }
    }
    // The partitions to move: the topic's, or those the group committed.
    let consumer = group_consumer(&console, &group)?;
    let existing = offsets(&console, &group, reset.topic.as_deref()).await?;
    let topic = reset.topic.clone();
    let moved = blocking(move || {
        let mut partitions: Vec<(String, i32)> = Vec::new();
        if let Some(t) = &topic {
            let meta = consumer.fetch_metadata(Some(t), UPSTREAM_TIMEOUT)?;
            let found = meta.topics().iter().find(|x| x.name() == t);
            match found {
                Some(x) if x.error().is_none() => {
                    partitions.extend(x.partitions().iter().map(|p| (t.clone(), p.id())))
                }
                _ => {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!("no topic '{t}'"),
                    ))
                }
            }
        } else {
            partitions.extend(existing.iter().map(|o| (o.topic.clone(), o.partition)));
        }
        if partitions.is_empty() {
            return Err(ApiError::bad_request(
                "the group has committed no offsets: name a topic to reset",
            ));
        }
        let times: HashMap<(String, i32), i64> = match reset.timestamp {
            Some(ts) if reset.to == "timestamp" => {
                let mut tpl = TopicPartitionList::new();
                for (t, p) in &partitions {
                    tpl.add_partition_offset(t, *p, Offset::Offset(ts))?;
                }
                consumer
                    .offsets_for_times(tpl, UPSTREAM_TIMEOUT)?
                    .elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                        _ => None,
                    })
                    .collect()
            }
            _ => HashMap::new(),
        };
        let mut tpl = TopicPartitionList::new();
        let mut moved = Vec::new();
        for (t, p) in &partitions {
            let (low, high) = consumer.fetch_watermarks(t, *p, UPSTREAM_TIMEOUT)?;
            let target = match reset.to.as_str() {
                "earliest" => low,
                "latest" => high,
                "offset" => reset.offset.unwrap_or(0).clamp(low, high),
                // No record at or after the time: the end.
                _ => times
                    .get(&(t.clone(), *p))
                    .copied()
                    .unwrap_or(high)
                    .clamp(low, high),
            };
            tpl.add_partition_offset(t, *p, Offset::Offset(target))?;
            moved.push(json!({ "topic": t, "partition": p, "offset": target }));
        }
        consumer.commit(&tpl, CommitMode::Sync)?;
        Ok(moved)
    })
    .await?;
    Ok(Json(json!({ "group_id": group, "offsets": moved })))
}
