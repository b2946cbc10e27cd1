//! `/api/transforms`: the broker-side transforms as the console shows
//! them (deployments and status from their topics, progress from their
//! groups, dead-letter counts from the broker's metrics).

use axum::extract::State;
use axum::Json;
use runnel_core::transforms::{Deployment, TransformStatus, DEPLOYMENTS_TOPIC, STATUS_TOPIC};
use serde_json::{json, Value};

use super::kafka::{samples, topic_totals};
use super::{ApiError, ApiResult, Console, UPSTREAM_TIMEOUT};

/// `GET /api/transforms`: the deployed broker-side transforms with their
/// last reported status, their progress (the committed position of their
/// group `__transform-<name>` against the input's end) and dead-letter topic.
pub async fn transforms(State(console): State<Console>) -> ApiResult<Json<Value>> {
    let kafka = console.admin.services.kafka.clone();
    let read = async {
        let deployments = crate::transform::read_latest_at(&kafka, DEPLOYMENTS_TOPIC).await?;
        let statuses = crate::transform::read_latest_at(&kafka, STATUS_TOPIC).await?;
        anyhow::Ok((deployments, statuses))
    };
    let (deployments, statuses) = match tokio::time::timeout(UPSTREAM_TIMEOUT, read).await {
        Err(_) => return Err(ApiError::upstream("reading the transforms timed out")),
        Ok(Err(e)) => {
            let text = format!("{e:#}");
            // No transform was ever deployed: the topics do not exist.
            if text.contains("UNKNOWN_TOPIC") || text.contains("no leader") {
                return Ok(Json(json!({ "transforms": [] })));
            }
            return Err(ApiError::upstream(format!(
                "reading the transforms: {text}"
            )));
        }
        Ok(Ok(x)) => x,
    };
    let samples = samples(&console).await;
    let totals = topic_totals(&samples);
    let mut out = Vec::new();
    for (name, raw) in deployments {
        let d = match Deployment::decode(&raw) {
            Ok(d) => d,
            Err(e) => {
                out.push(json!({ "name": name, "state": "unreadable", "error": e }));
                continue;
            }
        };
        let status = statuses
            .get(&name)
            .and_then(|s| serde_json::from_slice::<TransformStatus>(s).ok())
            .filter(|s| s.sha256 == d.header.sha256);
        let dead_letter = match &d.header.on_error {
            runnel_core::transforms::OnError::DeadLetter(t) => Some(t.clone()),
            _ => None,
        };
        let lag = group_lag(
            &console,
            &format!("__transform-{name}"),
            &d.header.input_topic,
        )
        .await
        .ok();
        let counters = |t: &str| totals.get(t).copied();
        out.push(json!({
            "name": name,
            "input_topic": d.header.input_topic,
            "output_topic": d.header.output_topic,
            "on_error": String::from(d.header.on_error.clone()),
            "dead_letter_topic": dead_letter,
            "config": d.header.config,
            "sha256": d.header.sha256,
            "deployed_at_ms": d.header.deployed_at_ms,
            "module_bytes": d.module.len(),
            "state": status.as_ref().map_or("pending".to_string(), |s| s.state.clone()),
            "error": status.as_ref().and_then(|s| s.error.clone()),
            "status_updated_at_ms": status.as_ref().map(|s| s.updated_at_ms),
            "lag": lag,
            "input": counters(&d.header.input_topic),
            "output": counters(&d.header.output_topic),
            "dead_letter": dead_letter.as_deref().and_then(counters),
        }));
    }
    Ok(Json(json!({ "transforms": out })))
}

/// Records of `topic` after `group`'s committed positions (a partition
/// without a commit counts from its log start).
async fn group_lag(console: &Console, group: &str, topic: &str) -> ApiResult<i64> {
    let offsets = super::groups::offsets(console, group, Some(topic)).await?;
    Ok(offsets.iter().map(|o| o.lag.unwrap_or(0)).sum())
}
