//! The console's Kafka side shared by its pages: a protocol client to the
//! broker's own listener, cluster metadata, the broker's metrics page read
//! as samples, the cluster overview and the broker-side transforms.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::ClientConfig;
use runnel_core::client::{Client, ClusterClient};
use serde_json::{json, Value};

use super::{ApiError, ApiResult, Console, UPSTREAM_TIMEOUT};

/// A protocol client to the broker's own Kafka listener.
pub async fn client(console: &Console) -> ApiResult<Client> {
    let addr = &console.admin.services.kafka;
    let mut client =
        tokio::time::timeout(UPSTREAM_TIMEOUT, Client::connect(addr, "runnel-console"))
            .await
            .map_err(|_| ApiError::upstream(format!("broker at {addr} did not answer")))??;
    client.set_timeout(UPSTREAM_TIMEOUT);
    Ok(client)
}

/// A client of the whole cluster through the broker's own listener:
/// ListOffsets to leaders, group requests to coordinators, DescribeLogDirs
/// and ListGroups to every broker.
pub async fn cluster_client(console: &Console) -> ApiResult<ClusterClient> {
    let bootstrap = client(console).await?;
    let mut cluster = tokio::time::timeout(
        UPSTREAM_TIMEOUT,
        ClusterClient::from_client(bootstrap, "runnel-console"),
    )
    .await
    .map_err(|_| ApiError::upstream("the broker did not answer in time"))??;
    cluster.set_timeout(UPSTREAM_TIMEOUT);
    Ok(cluster)
}

/// librdkafka settings for the console's clients of the local broker.
pub fn rdkafka_config(console: &Console) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &console.admin.services.kafka)
        .set("client.id", "runnel-console")
        .set("socket.timeout.ms", "10000")
        .set("log_level", "3");
    config
}

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// The broker's answer to a Metadata request for `topic` (all when `None`).
pub async fn metadata(client: &mut Client, topic: Option<&str>) -> ApiResult<MetadataResponse> {
    let mut request = MetadataRequest::default();
    request.topics = topic.map(|t| {
        let mut r = MetadataRequestTopic::default();
        r.name = Some(name(t));
        vec![r]
    });
    request.allow_auto_topic_creation = false;
    Ok(client.send(&request).await?)
}

/// The text of a Kafka error code.
pub fn error_name(code: i16) -> String {
    kafka_protocol::ResponseError::try_from_code(code)
        .map(|e| e.to_string())
        .unwrap_or_else(|| format!("error {code}"))
}

/// Fails with the broker's error message when `code` is not 0.
pub fn check(code: i16, message: Option<&StrBytes>, what: &str) -> ApiResult<()> {
    if code == 0 {
        return Ok(());
    }
    let text = match message {
        Some(m) if !m.is_empty() => format!("{what}: {m} ({})", error_name(code)),
        _ => format!("{what}: {}", error_name(code)),
    };
    // The client's mistakes (bad names, configs, unknown topics) are 400s
    // and 404s; the broker's own troubles are 502s.
    let status = match code {
        3 => axum::http::StatusCode::NOT_FOUND,
        36 => axum::http::StatusCode::CONFLICT,
        17 | 37 | 38 | 40 | 42 | 44 | 87 => axum::http::StatusCode::BAD_REQUEST,
        _ => axum::http::StatusCode::BAD_GATEWAY,
    };
    Err(ApiError::new(status, text))
}

/// One line of the broker's metrics page.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The broker's metrics page (the text `/metrics` serves), as samples.
pub async fn samples(console: &Console) -> Vec<Sample> {
    let broker = console.admin.broker.clone();
    let page =
        tokio::task::spawn_blocking(move || runnel_core::broker::exposition::render(&broker))
            .await
            .unwrap_or_default();
    parse_exposition(&page)
}

/// Parses Prometheus' text format (the subset the broker writes: no
/// timestamps, escaped `"` and `\` in label values).
pub fn parse_exposition(page: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in page.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}').unwrap_or(rest))),
            None => (head, BTreeMap::new()),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// Sums of partition counters per topic: (bytes in, bytes out, records
/// in, records out, log size bytes, records held).
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct TopicTotals {
    pub bytes_in: f64,
    pub bytes_out: f64,
    pub records_in: f64,
    pub records_out: f64,
    pub size_bytes: f64,
    pub messages: f64,
}

/// Per-topic totals of the partitions this broker holds (leaders only for
/// traffic and counts, so a replicated partition is counted once).
pub fn topic_totals(samples: &[Sample]) -> HashMap<String, TopicTotals> {
    let mut leader: HashMap<(String, String), bool> = HashMap::new();
    let mut start: HashMap<(String, String), f64> = HashMap::new();
    for s in samples {
        if let (Some(t), Some(p)) = (s.labels.get("topic"), s.labels.get("partition")) {
            let key = (t.clone(), p.clone());
            match s.name.as_str() {
                "runnel_partition_leader" => {
                    leader.insert(key, s.value > 0.0);
                }
                "runnel_partition_log_start_offset" => {
                    start.insert(key, s.value);
                }
                _ => {}
            }
        }
    }
    let mut totals: HashMap<String, TopicTotals> = HashMap::new();
    for s in samples {
        let (Some(t), Some(p)) = (s.labels.get("topic"), s.labels.get("partition")) else {
            continue;
        };
        if s.labels.contains_key("group") {
            continue;
        }
        let key = (t.clone(), p.clone());
        if !leader.get(&key).copied().unwrap_or(false) {
            continue;
        }
        let e = totals.entry(t.clone()).or_default();
        match s.name.as_str() {
            "runnel_partition_bytes_in_total" => e.bytes_in += s.value,
            "runnel_partition_bytes_out_total" => e.bytes_out += s.value,
            "runnel_partition_records_in_total" => e.records_in += s.value,
            "runnel_partition_records_out_total" => e.records_out += s.value,
            "runnel_partition_log_size_bytes" => e.size_bytes += s.value,
            "runnel_partition_high_watermark" => {
                e.messages += (s.value - start.get(&key).copied().unwrap_or(0.0)).max(0.0)
            }
            _ => {}
        }
    }
    totals
}

fn gauge(samples: &[Sample], name: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && s.labels.is_empty())
        .map(|s| s.value)
}

/// `GET /api/cluster`: brokers, controller, counts, this broker's disk and
/// traffic counters (the page computes rates from successive answers).
pub async fn cluster(State(console): State<Console>) -> ApiResult<Json<Value>> {
    let mut client = client(&console).await?;
    let meta = metadata(&mut client, None).await?;
    let samples = samples(&console).await;
    let mut leaders: HashMap<i32, usize> = HashMap::new();
    let mut partitions = 0;
    let mut under_replicated = 0;
    let mut topics = 0;
    let mut offline = 0;
    for t in &meta.topics {
        topics += 1;
        for p in &t.partitions {
            partitions += 1;
            *leaders.entry(p.leader_id.0).or_default() += 1;
            if p.leader_id.0 < 0 {
                offline += 1;
            }
            if p.isr_nodes.len() < p.replica_nodes.len() {
                under_replicated += 1;
            }
        }
    }
    let mut brokers: Vec<Value> = meta
        .brokers
        .iter()
        .map(|b| {
            json!({
                "id": b.node_id.0,
                "host": b.host.to_string(),
                "port": b.port,
                "rack": b.rack.as_ref().map(|r| r.to_string()),
                "leader_partitions": leaders.get(&b.node_id.0).copied().unwrap_or(0),
                "controller": b.node_id.0 == meta.controller_id.0,
            })
        })
        .collect();
    brokers.sort_by_key(|b| b["id"].as_i64());
    let totals = topic_totals(&samples);
    let mut traffic = TopicTotals::default();
    for t in totals.values() {
        traffic.bytes_in += t.bytes_in;
        traffic.bytes_out += t.bytes_out;
        traffic.records_in += t.records_in;
        traffic.records_out += t.records_out;
        traffic.size_bytes += t.size_bytes;
        traffic.messages += t.messages;
    }
    let services = &console.admin.services;
    Ok(Json(json!({
        "cluster_id": meta.cluster_id.as_ref().map(|c| c.to_string()),
        "controller_id": meta.controller_id.0,
        "node_id": console.admin.broker.node_id(),
        "brokers": brokers,
        "topics": topics,
        "partitions": partitions,
        "offline_partitions": offline,
        "under_replicated_partitions": under_replicated,
        "disk": {
            "free_bytes": gauge(&samples, "runnel_broker_disk_free_bytes"),
            "total_bytes": gauge(&samples, "runnel_broker_disk_total_bytes"),
        },
        "traffic": {
            "at_ms": runnel_core::util::now_ms(),
            "bytes_in": traffic.bytes_in,
            "bytes_out": traffic.bytes_out,
            "records_in": traffic.records_in,
            "records_out": traffic.records_out,
            "topics": totals,
        },
        "services": {
            "kafka": services.kafka,
            "schema_registry": services.registry_url.is_some(),
            "connect": services.connect_url.is_some(),
        },
    })))
}

/// Runs blocking librdkafka work off the async workers, bounded in time.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    match tokio::time::timeout(
        UPSTREAM_TIMEOUT + Duration::from_secs(5),
        tokio::task::spawn_blocking(f),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(ApiError::upstream("a broker call failed")),
        Err(_) => Err(ApiError::upstream("the broker did not answer in time")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_exposition;

    #[test]
    fn exposition_lines_are_read_with_escaped_labels() {
        let page = "# HELP x y\nrunnel_a 3\nrunnel_b{topic=\"t\\\"q\",partition=\"1\"} 2.5\n";
        let s = parse_exposition(page);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "runnel_a");
        assert_eq!(s[1].labels["topic"], "t\"q");
        assert_eq!(s[1].labels["partition"], "1");
        assert_eq!(s[1].value, 2.5);
    }
}
