//! `/api/pipelines`: the `runnel pipeline run` processes of the cluster, as
//! they show over Kafka (they are separate processes: the console sees
//! only what they keep in the cluster).
//!
//! A pipeline `<name>` keeps everything under `_runnel_pipeline.<name>`:
//! - a stateless one is a connect worker group of that id with its state in
//!   `_runnel_pipeline.<name>.{configs,offsets,status}`; its connectors'
//!   and tasks' states are the latest records of the status topic (Kafka
//!   Connect's format), its sink connectors consume as `connect-<connector>`;
//! - a stateful one is the runnel-streams application of that id: its
//!   consumer group, and internal topics `_runnel_pipeline.<name>-...`.
//!
//! Per pipeline: the group's state and members (each a running process),
//! connector and task states with their errors, the lag of its consumer
//! groups and its internal topics.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use axum::Json;
use kafka_protocol::messages::{DescribeGroupsRequest, GroupId};
use kafka_protocol::protocol::StrBytes;
use runnel_core::client::ClusterClient;
use serde_json::{json, Value};

use super::{ApiResult, Console, UPSTREAM_TIMEOUT};

/// The prefix of every pipeline's group and topics.
const PREFIX: &str = "_runnel_pipeline.";

/// Most pipelines one answer describes.
const MAX_PIPELINES: usize = 200;

/// `GET /api/pipelines`.
pub async fn pipelines(State(console): State<Console>) -> ApiResult<Json<Value>> {
    let mut cluster = super::kafka::cluster_client(&console).await?;
    let groups = cluster.list_groups().await?;
    let topics: Vec<String> = cluster
        .metadata()
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .filter(|n| n.starts_with(PREFIX))
        .collect();
    let mut names: BTreeSet<String> = groups
        .iter()
        .filter_map(|g| g.group_id.strip_prefix(PREFIX))
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    // A stateless pipeline that is not running has left its status topic.
    names.extend(
        topics
            .iter()
            .filter_map(|t| t.strip_prefix(PREFIX)?.strip_suffix(".status"))
            .filter(|n| !n.is_empty())
            .map(str::to_string),
    );
    let names: Vec<String> = names.into_iter().take(MAX_PIPELINES).collect();
    let mut out = Vec::new();
    for name in &names {
        let group_id = format!("{PREFIX}{name}");
        let status_topic = format!("{group_id}.status");
        let stateless = topics.contains(&status_topic);
        let listed = groups.iter().find(|g| g.group_id == group_id);
        let members = members(&mut cluster, &group_id).await.unwrap_or_default();
        let (connectors, status_error) = if stateless {
            match connector_states(&console, &status_topic).await {
                Ok(c) => (c, None),
                Err(e) => (Vec::new(), Some(e)),
            }
        } else {
            (Vec::new(), None)
        };
        // Whose offsets measure its progress: the streams application's
        // group, or the sink connectors' `connect-<connector>` groups.
        let consuming: Vec<String> = if stateless {
            connectors
                .iter()
                .filter_map(|c| c["name"].as_str())
                .map(|c| format!("connect-{c}"))
                .collect()
        } else {
            vec![group_id.clone()]
        };
        let lag = lag(&mut cluster, &consuming).await;
        let own_topics: Vec<&String> = topics
            .iter()
            .filter(|t| owner(t, &names) == Some(name.as_str()))
            .collect();
        out.push(json!({
            "name": name,
            "kind": if stateless { "connectors" } else { "streams" },
            "group_id": group_id,
            "state": listed.map_or("Dead", |g| g.state.as_str()),
            "instances": members,
            "connectors": connectors,
            "status_error": status_error,
            "lag": lag,
            "topics": own_topics,
        }));
    }
    Ok(Json(json!({ "pipelines": out })))
}

/// The pipeline of `names` an internal topic belongs to: the longest name
/// it is `_runnel_pipeline.<name>.` or `_runnel_pipeline.<name>-` of.
fn owner<'a>(topic: &str, names: &'a [String]) -> Option<&'a str> {
    let rest = topic.strip_prefix(PREFIX)?;
    names
        .iter()
        .filter(|n| {
            rest.strip_prefix(n.as_str())
                .is_some_and(|tail| tail.starts_with('.') || tail.starts_with('-'))
        })
        .max_by_key(|n| n.len())
        .map(String::as_str)
}

/// The members of `group` (DescribeGroups at its coordinator): one per
/// running `pipeline run` process (or stream thread).
async fn members(cluster: &mut ClusterClient, group: &str) -> ApiResult<Vec<Value>> {
    let mut request = DescribeGroupsRequest::default();
    request.groups = vec![GroupId(StrBytes::from_string(group.to_string()))];
    let response = cluster.coordinator(group).await?.send(&request).await?;
    Ok(response
        .groups
        .iter()
        .flat_map(|g| g.members.iter())
        .map(|m| {
            json!({
                "member_id": m.member_id.to_string(),
                "client_id": m.client_id.to_string(),
                "host": m.client_host.to_string(),
            })
        })
        .collect())
}

/// Total lag of `groups` (committed offsets against the log ends); `None`
/// when none of them committed anything.
async fn lag(cluster: &mut ClusterClient, groups: &[String]) -> Option<i64> {
    let mut committed = BTreeMap::new();
    for g in groups {
        if let Ok(offsets) = cluster.committed_offsets(g).await {
            for (tp, o) in offsets {
                committed.insert((g.clone(), tp), o);
            }
        }
    }
    if committed.is_empty() {
        return None;
    }
    let partitions: Vec<(String, i32)> = committed
        .keys()
        .map(|(_, tp)| tp.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let ends = cluster.list_offsets(&partitions, -1).await.ok()?;
    Some(
        committed
            .iter()
            .filter_map(|((_, tp), c)| Some((ends.get(tp)? - c).max(0)))
            .sum(),
    )
}

/// The connectors and tasks of a stateless pipeline from its status topic:
/// `status-connector-<name>` and `status-task-<name>-<n>` records, each
/// `{"state", "trace", "worker_id", ...}`.
async fn connector_states(console: &Console, topic: &str) -> Result<Vec<Value>, String> {
    let kafka = console.admin.services.kafka.clone();
    let latest = tokio::time::timeout(
        UPSTREAM_TIMEOUT,
        crate::transform::read_latest_at(&kafka, topic),
    )
    .await
    .map_err(|_| format!("reading {topic} timed out"))?
    .map_err(|e| format!("reading {topic}: {e:#}"))?;
    Ok(parse_statuses(&latest))
}

fn parse_statuses(latest: &BTreeMap<String, bytes::Bytes>) -> Vec<Value> {
    let unit = |raw: &[u8]| -> Value {
        let v: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
        json!({
            "state": v["state"].as_str().unwrap_or("UNKNOWN"),
            "worker_id": v["worker_id"].as_str(),
            "trace": v["trace"].as_str().filter(|t| !t.is_empty()),
        })
    };
    let mut connectors: BTreeMap<String, (Value, BTreeMap<i64, Value>)> = BTreeMap::new();
    for (key, raw) in latest {
        if let Some(name) = key.strip_prefix("status-connector-") {
            connectors.entry(name.to_string()).or_default().0 = unit(raw);
        } else if let Some(rest) = key.strip_prefix("status-task-") {
            let Some((name, id)) = rest.rsplit_once('-') else {
                continue;
            };
            let Ok(id) = id.parse::<i64>() else {
                continue;
            };
            let mut task = unit(raw);
            task["id"] = json!(id);
            connectors
                .entry(name.to_string())
                .or_default()
                .1
                .insert(id, task);
        }
    }
    connectors
        .into_iter()
        .map(|(name, (state, tasks))| {
            let mut c = if state.is_null() {
                json!({ "state": "UNKNOWN" })
            } else {
                state
            };
            c["name"] = json!(name);
            c["tasks"] = Value::Array(tasks.into_values().collect());
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_records_make_connectors_with_their_tasks_in_order() {
        let mut latest = BTreeMap::new();
        let rec = |s: &str| bytes::Bytes::from(s.to_string());
        latest.insert(
            "status-connector-a-b".to_string(),
            rec(r#"{"state":"RUNNING","trace":"","worker_id":"w1"}"#),
        );
        latest.insert(
            "status-task-a-b-10".to_string(),
            rec(r#"{"state":"FAILED","trace":"boom","worker_id":"w2"}"#),
        );
        latest.insert(
            "status-task-a-b-2".to_string(),
            rec(r#"{"state":"RUNNING","worker_id":"w1"}"#),
        );
        let c = parse_statuses(&latest);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0]["name"], "a-b");
        assert_eq!(c[0]["state"], "RUNNING");
        assert_eq!(c[0]["trace"], Value::Null);
        let tasks = c[0]["tasks"].as_array().unwrap();
        assert_eq!(tasks[0]["id"], 2);
        assert_eq!(tasks[1]["id"], 10);
        assert_eq!(tasks[1]["trace"], "boom");
    }

    #[test]
    fn an_internal_topic_belongs_to_the_longest_pipeline_name_it_starts_with() {
        let names = vec!["a".to_string(), "a-b".to_string()];
        assert_eq!(owner("_runnel_pipeline.a.status", &names), Some("a"));
        assert_eq!(
            owner("_runnel_pipeline.a-b-agg-1-changelog", &names),
            Some("a-b")
        );
        assert_eq!(owner("_runnel_pipeline.a-x-changelog", &names), Some("a"));
        assert_eq!(owner("_runnel_pipeline.ab.status", &names), None);
        assert_eq!(owner("other", &names), None);
    }
}
