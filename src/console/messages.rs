//! The message browser and the console's producer, through librdkafka: a
//! consumer that assigns partitions (no group, never commits) and a
//! producer with `acks=all`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use serde_json::{json, Value};

use super::kafka::{blocking, rdkafka_config};
use super::{ApiError, ApiResult, Console, UPSTREAM_TIMEOUT};

/// Most records one browse returns.
pub const MAX_MESSAGES: usize = 500;
/// Most bytes of a key, value or header shown (the rest is cut, and the
/// record says so).
pub const MAX_SHOWN_BYTES: usize = 64 << 10;
/// Most records a search reads per partition looking for matches.
const MAX_SCANNED: i64 = 20_000;
/// Longest time a browse reads.
const BROWSE_TIME: Duration = Duration::from_secs(5);
/// Most headers a produced record may carry.
const MAX_HEADERS: usize = 64;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct BrowseQuery {
    /// One partition, or every partition when absent.
    partition: Option<i32>,
    /// `newest` (the last `limit` records), `offset` or `timestamp`.
    mode: Option<String>,
    offset: Option<i64>,
    /// Milliseconds since the epoch.
    timestamp: Option<i64>,
    limit: Option<usize>,
    /// Case-insensitive text searched in keys and values.
    search: Option<String>,
}

/// A record as read, before its payloads are rendered.
struct Raw {
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// `GET /api/topics/{name}/messages`.
pub async fn browse(
    State(console): State<Console>,
    Path(topic): Path<String>,
    query: Result<Query<BrowseQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_MESSAGES);
    let mode = q.mode.clone().unwrap_or_else(|| "newest".into());
    if !["newest", "offset", "timestamp"].contains(&mode.as_str()) {
        return Err(ApiError::bad_request(
            "mode is one of newest, offset, timestamp",
        ));
    }
    if mode == "offset" && q.offset.is_none() {
        return Err(ApiError::bad_request("mode=offset needs offset"));
    }
    if mode == "timestamp" && q.timestamp.is_none() {
        return Err(ApiError::bad_request("mode=timestamp needs timestamp"));
    }
    let search = q
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_lowercase);
    let config = rdkafka_config(&console);
    let (records, ends) = blocking(move || {
        read(
            config,
            &topic,
            q.partition,
            &mode,
            q.offset,
            q.timestamp,
            limit,
            search,
        )
    })
    .await?;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let value = render(&console, r.value.as_deref()).await;
        let key = render(&console, r.key.as_deref()).await;
        out.push(json!({
            "partition": r.partition,
            "offset": r.offset,
            "timestamp": r.timestamp,
            "key": key,
            "value": value,
            "headers": r.headers.iter().map(|(k, v)| json!({
                "key": k,
                "value": v.as_deref().map(|v| shown_text(v).0),
            })).collect::<Vec<_>>(),
        }));
    }
    Ok(Json(json!({
        "messages": out,
        "limit": limit,
        "partitions": ends.into_iter().map(|(p, (low, high))| json!({
            "partition": p, "log_start_offset": low, "high_watermark": high,
        })).collect::<Vec<_>>(),
    })))
}

type Ends = Vec<(i32, (i64, i64))>;

#[allow(clippy::too_many_arguments)] // one browse's parameters, read once
fn read(
    config: rdkafka::ClientConfig,
    topic: &str,
    partition: Option<i32>,
    mode: &str,
    offset: Option<i64>,
    timestamp: Option<i64>,
    limit: usize,
    search: Option<String>,
) -> ApiResult<(Vec<Raw>, Ends)> {
    let mut config = config;
    // librdkafka wants a group id even for assigned partitions; the
    // browser never joins it nor commits, so it leaves no group behind.
    config
        .set("group.id", "runnel-console-browser")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.max.bytes", "8388608")
        .set("max.partition.fetch.bytes", "1048576");
    let consumer: BaseConsumer = config.create()?;
    let meta = consumer.fetch_metadata(Some(topic), UPSTREAM_TIMEOUT)?;
    let t = meta
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no topic '{topic}'")))?;
    if let Some(e) = t.error() {
        let code: rdkafka::types::RDKafkaErrorCode = e.into();
        if code == rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no topic '{topic}'"),
            ));
        }
        return Err(ApiError::upstream(format!("topic '{topic}': {code}")));
    }
    let mut partitions: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    partitions.sort();
    if let Some(p) = partition {
        if !partitions.contains(&p) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("topic '{topic}' has no partition {p}"),
            ));
        }
        partitions = vec![p];
    }
    let mut ends = Vec::new();
    for &p in &partitions {
        ends.push((p, consumer.fetch_watermarks(topic, p, UPSTREAM_TIMEOUT)?));
    }
    let by_time = match (mode, timestamp) {
        ("timestamp", Some(ts)) => {
            let mut tpl = TopicPartitionList::new();
            for &p in &partitions {
                tpl.add_partition_offset(topic, p, Offset::Offset(ts))?;
            }
            let found = consumer.offsets_for_times(tpl, UPSTREAM_TIMEOUT)?;
            found
                .elements()
                .iter()
                .map(|e| {
                    let o = match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    };
                    (e.partition(), o)
                })
                .collect::<HashMap<_, _>>()
        }
        _ => HashMap::new(),
    };
    let per_partition = if search.is_some() {
        MAX_SCANNED
    } else {
        limit as i64
    };
    let mut tpl = TopicPartitionList::new();
    let mut stop_at: HashMap<i32, i64> = HashMap::new();
    for &(p, (low, high)) in &ends {
        let start = match mode {
            "offset" => offset.unwrap_or(0).max(low),
            // No record at or after the time: nothing to read there.
            "timestamp" => by_time.get(&p).copied().flatten().unwrap_or(high).max(low),
            _ => (high - per_partition).max(low),
        };
        if start < high {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
            let stop = match mode {
                "newest" => high,
                _ => high.min(start.saturating_add(per_partition)),
            };
            stop_at.insert(p, stop);
        }
    }
    let mut records = Vec::new();
    if stop_at.is_empty() {
        return Ok((records, ends));
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + BROWSE_TIME;
    while !stop_at.is_empty() && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        // The end of a partition (compacted offsets and transaction
        // markers can leave the last offsets without a record).
        let m = match m {
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                stop_at.remove(&p);
                continue;
            }
            m => m?,
        };
        let p = m.partition();
        let Some(&stop) = stop_at.get(&p) else {
            continue;
        };
        if m.offset() >= stop {
            stop_at.remove(&p);
            continue;
        }
        if m.offset() + 1 >= stop {
            stop_at.remove(&p);
        }
        if let Some(s) = &search {
            let hit = |b: Option<&[u8]>| {
                b.is_some_and(|b| String::from_utf8_lossy(b).to_lowercase().contains(s))
            };
            if !hit(m.key()) && !hit(m.payload()) {
                continue;
            }
        }
        records.push(Raw {
            partition: p,
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    // Newest first within the limit when reading the newest; otherwise in
    // offset order from the start point.
    if mode == "newest" {
        records.sort_by_key(|r| std::cmp::Reverse((r.timestamp, r.offset)));
        records.truncate(limit);
    } else {
        records.sort_by_key(|r| (r.timestamp, r.partition, r.offset));
        records.truncate(limit);
    }
    Ok((records, ends))
}

/// At most [`MAX_SHOWN_BYTES`] of `bytes` as text, and whether it was cut.
fn shown_text(bytes: &[u8]) -> (String, bool) {
    let cut = bytes.len() > MAX_SHOWN_BYTES;
    let shown = &bytes[..bytes.len().min(MAX_SHOWN_BYTES)];
    (String::from_utf8_lossy(shown).into_owned(), cut)
}

/// How a key or value is shown: JSON pretty-printed, Confluent-framed Avro
/// decoded through the registry, text, or hex for other bytes.
async fn render(console: &Console, bytes: Option<&[u8]>) -> Value {
    let Some(bytes) = bytes else {
        return Value::Null;
    };
    let size = bytes.len();
    if size >= 5 && bytes[0] == 0 {
        let schema_id = i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let decoded = match &console.registry {
            None => Err("the schema registry is off".to_string()),
            Some(registry) => {
                match tokio::time::timeout(UPSTREAM_TIMEOUT, registry.decode(bytes)).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("the schema registry did not answer in time".into()),
                }
            }
        };
        match decoded {
            Ok(v) => {
                let text = serde_json::to_string_pretty(&v).unwrap_or_default();
                let cut = text.len() > MAX_SHOWN_BYTES;
                return json!({
                    "encoding": "avro", "schema_id": schema_id, "size": size,
                    "text": truncate(&text), "truncated": cut,
                });
            }
            Err(e) if std::str::from_utf8(bytes).is_err() => {
                return json!({
                    "encoding": "binary", "schema_id": schema_id, "size": size,
                    "text": hex(bytes), "truncated": size > MAX_SHOWN_BYTES / 2,
                    "decode_error": e,
                });
            }
            Err(_) => {}
        }
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            if let Ok(v) = serde_json::from_str::<Value>(text) {
                if v.is_object() || v.is_array() {
                    let pretty = serde_json::to_string_pretty(&v).unwrap_or_default();
                    return json!({
                        "encoding": "json", "size": size,
                        "text": truncate(&pretty), "truncated": pretty.len() > MAX_SHOWN_BYTES,
                    });
                }
            }
            json!({
                "encoding": "text", "size": size,
                "text": truncate(text), "truncated": text.len() > MAX_SHOWN_BYTES,
            })
        }
        Err(_) => json!({
            "encoding": "binary", "size": size,
            "text": hex(bytes), "truncated": size > MAX_SHOWN_BYTES / 2,
        }),
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_SHOWN_BYTES {
        return s.to_string();
    }
    let mut end = MAX_SHOWN_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(MAX_SHOWN_BYTES / 2)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRecord {
    #[serde(default)]
    partition: Option<i32>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    headers: Vec<NewHeader>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewHeader {
    key: String,
    #[serde(default)]
    value: Option<String>,
}

/// `POST /api/topics/{name}/messages`: one record (text key, value and
/// headers; a partition or the producer's partitioner) with `acks=all`.
pub async fn produce(
    State(console): State<Console>,
    Path(topic): Path<String>,
    body: Result<Json<NewRecord>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(record) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if record.headers.len() > MAX_HEADERS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_HEADERS} headers"
        )));
    }
    if record.headers.iter().any(|h| h.key.is_empty()) {
        return Err(ApiError::bad_request("a header needs a key"));
    }
    // The topic must exist: the console never creates one by producing.
    let mut client = super::kafka::client(&console).await?;
    let meta = super::kafka::metadata(&mut client, Some(&topic)).await?;
    let known = meta.topics.iter().find(|t| {
        t.name.as_ref().map(|n| n.0.as_str()) == Some(topic.as_str()) && t.error_code == 0
    });
    let Some(known) = known else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no topic '{topic}'"),
        ));
    };
    if let Some(p) = record.partition {
        if !known.partitions.iter().any(|x| x.partition_index == p) {
            return Err(ApiError::bad_request(format!(
                "topic '{topic}' has no partition {p}"
            )));
        }
    }
    let producer = console
        .producer
        .get_or_try_init(|| async {
            rdkafka_config(&console)
                .set("acks", "all")
                .set("message.timeout.ms", "10000")
                .set("linger.ms", "0")
                .set("allow.auto.create.topics", "false")
                .create::<FutureProducer>()
        })
        .await?;
    let mut headers = OwnedHeaders::new();
    for h in &record.headers {
        headers = headers.insert(Header {
            key: &h.key,
            value: h.value.as_deref(),
        });
    }
    let mut future = FutureRecord::<str, str>::to(&topic).headers(headers);
    if let Some(k) = &record.key {
        future = future.key(k.as_str());
    }
    if let Some(v) = &record.value {
        future = future.payload(v.as_str());
    }
    if let Some(p) = record.partition {
        future = future.partition(p);
    }
    let delivery = producer.send(future, UPSTREAM_TIMEOUT).await;
    match delivery {
        Ok(d) => Ok((
            StatusCode::CREATED,
            Json(json!({ "topic": topic, "partition": d.partition, "offset": d.offset })),
        )),
        Err((e, _)) => Err(ApiError::upstream(format!("producing to '{topic}': {e}"))),
    }
}
