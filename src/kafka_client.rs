//! librdkafka settings shared by the CLI's client commands.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use anyhow::{bail, Context, Result};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

/// A client context that keeps librdkafka's own chatter out of the
/// terminal. librdkafka retries unreachable brokers in a loop and reports
/// every attempt; the commands turn failures into one readable line
/// themselves (e.g. "cannot reach a broker at ..."), so librdkafka's logs
/// and error events only go to `RUNNEL_LOG=debug`.
pub struct CliContext;

impl ClientContext for CliContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(?level, fac, "librdkafka: {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("librdkafka: {error}: {reason}");
    }
}

impl ConsumerContext for CliContext {}

/// Applies `-X key=value` librdkafka properties given on the command line.
pub fn apply_properties(
    config: &mut rdkafka::config::ClientConfig,
    properties: &[String],
) -> anyhow::Result<()> {
    for p in properties {
        match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                config.set(k.trim(), v);
            }
            _ => anyhow::bail!("-X '{p}' is not KEY=VALUE"),
        }
    }
    Ok(())
}

/// A Kafka protocol connection for admin commands: to the first broker of
/// `bootstrap` (host:port[,host:port...]) that answers.
pub async fn admin_client(bootstrap: &str) -> anyhow::Result<runnel_core::client::Client> {
    use anyhow::Context;
    runnel_core::client::Client::connect(bootstrap, "runnel-cli")
        .await
        .with_context(|| format!("cannot reach a broker at {bootstrap}"))
}

/// The whole cluster's metadata (every topic; none created).
pub async fn cluster_metadata(
    client: &mut runnel_core::client::Client,
) -> anyhow::Result<kafka_protocol::messages::MetadataResponse> {
    let mut request = kafka_protocol::messages::MetadataRequest::default();
    request.topics = None;
    request.allow_auto_topic_creation = false;
    Ok(client.send(&request).await?)
}

/// A Kafka error code's name (`None` for 0).
/// Err "`what`: the broker's message (ERROR_NAME)" for a non-zero error
/// code of an admin response, Ok for 0.
pub fn check(
    code: i16,
    message: Option<&kafka_protocol::protocol::StrBytes>,
    what: &str,
) -> anyhow::Result<()> {
    let Some(name) = error_name(code) else {
        return Ok(());
    };
    match message.filter(|m| !m.is_empty()) {
        Some(m) => bail!("{what}: {m} ({name})"),
        None => bail!("{what}: {name}"),
    }
}

pub fn error_name(code: i16) -> Option<String> {
    (code != 0).then(
        || match kafka_protocol::ResponseError::try_from_code(code) {
            Some(e) => e.to_string(),
            None => format!("error {code}"),
        },
    )
}

/// A connection to the whole cluster behind `bootstrap` for admin
/// commands: ListOffsets to each partition's leader, group requests to the
/// group's coordinator, ListGroups to every broker.
pub async fn cluster_client(bootstrap: &str) -> Result<runnel_core::client::ClusterClient> {
    runnel_core::client::ClusterClient::connect(bootstrap, "runnel-cli")
        .await
        .with_context(|| format!("cannot reach a broker at {bootstrap}"))
}

/// Where `spec` points in each of `partitions` (ListOffsets for the log
/// start and end, and by time for `@TIME`).
pub async fn resolve_offsets(
    client: &mut runnel_core::client::ClusterClient,
    partitions: &[(String, i32)],
    spec: crate::offset_spec::OffsetSpec,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let earliest = client.list_offsets(partitions, -2).await?;
    let latest = client.list_offsets(partitions, -1).await?;
    let by_time = match spec {
        crate::offset_spec::OffsetSpec::Timestamp(ts) => {
            Some(client.list_offsets(partitions, ts).await?)
        }
        _ => None,
    };
    let mut out = BTreeMap::new();
    for tp in partitions {
        let (Some(low), Some(high)) = (earliest.get(tp), latest.get(tp)) else {
            anyhow::bail!("cannot read the offsets of {}/{}", tp.0, tp.1);
        };
        let found = by_time.as_ref().and_then(|m| m.get(tp).copied());
        out.insert(tp.clone(), spec.resolve(*low, *high, found));
    }
    Ok(out)
}

/// The names among `all` that `patterns` select: the names themselves, or
/// with `regex` those whose whole name matches one of them (internal ones
/// only by a pattern starting with `_`).
pub fn select_names(
    patterns: &[String],
    regex: bool,
    all: &[String],
    what: &str,
) -> Result<Vec<String>> {
    if !regex {
        let mut seen = HashSet::new();
        return Ok(patterns
            .iter()
            .filter(|t| seen.insert(t.as_str()))
            .cloned()
            .collect());
    }
    let mut matched = BTreeSet::new();
    for pattern in patterns {
        let re = regex_lite::Regex::new(&format!("^(?:{pattern})$"))
            .with_context(|| format!("--regex '{pattern}'"))?;
        let internal_too = pattern.starts_with('_');
        for name in all {
            let internal = name.starts_with('_') || runnel_core::broker::is_system_topic(name);
            if (internal_too || !internal) && re.is_match(name) {
                matched.insert(name.clone());
            }
        }
    }
    if matched.is_empty() {
        bail!("no {what} matches {}", patterns.join(" or "));
    }
    Ok(matched.into_iter().collect())
}
