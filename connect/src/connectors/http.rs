//! HTTP source and sink.
//!
//! The source listens on `listen` and turns each POSTed body into records
//! (a JSON document, or each element of a JSON array, or with
//! `format=lines` each line). It answers once every record of the request
//! is settled: stored by the broker (`acks=all`), left out by a pipeline's
//! filter, or failed (a converter or transform could not take it).
//!
//! - `200 {"records": n, "stored": s, "filtered": f, "dead_lettered": d}`
//!   when no record failed, or each failed one is in the dead-letter topic
//!   (`errors.tolerance: all` with a dead-letter topic; `errors` then says
//!   why each one failed): a client that got a 200 knows its data is in
//!   Kafka.
//! - `422` with the same counts, `failed` and `errors` (record index and
//!   reason) when a record is stored nowhere: it did not fit (e.g. the Avro
//!   schema of the topic). With `errors.tolerance: none` the task then
//!   fails, as any task does on a record it cannot take.
//! - `400` (not JSON), `413` (over `max.request.bytes`) or `503` (the task
//!   is not running, or stopped before the records were settled: send them
//!   again).
//!
//! Refused requests are counted (`/metrics`) and logged at debug level
//! only, so a client cannot flood the log.
//!
//! The sink POSTs each batch of records to `url` as a JSON array of their
//! values, and counts a batch as written when the server answers 2xx.
//! Connection failures, 408, 429 and 5xx are retried (within
//! `errors.retry.timeout`); other statuses fail the batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::metrics;
use crate::plugin::{
    ConfigKey, ConfigType, ConnectError, ConnectResult, ConnectorKind, ConnectorPlugin, Fate,
    OffsetReader, Props, SinkTask, SourceTask,
};
use crate::record::{Data, SinkRecord, SourcePartition, SourceRecord};

pub struct HttpSource;
pub struct HttpSink;

static SOURCE_KEYS: &[ConfigKey] = &[
    ConfigKey::required("listen", ConfigType::String, "Address to accept POSTs on (host:port)."),
    ConfigKey::required("topic", ConfigType::String, "The topic records go to."),
    ConfigKey::optional(
        "format",
        ConfigType::String,
        Some("json"),
        "json: a body is a JSON document, or an array of them; lines: each line is a string record.",
    ),
    ConfigKey::optional(
        "max.request.bytes",
        ConfigType::Int,
        Some("4194304"),
        "Largest body accepted.",
    ),
];

static SINK_KEYS: &[ConfigKey] = &[
    ConfigKey::required("url", ConfigType::String, "Where batches are POSTed."),
    ConfigKey::required("topics", ConfigType::List, "Topics to read."),
    ConfigKey::optional("method", ConfigType::String, Some("POST"), "POST or PUT."),
    ConfigKey::optional(
        "batch.size",
        ConfigType::Int,
        Some("500"),
        "Most records per request.",
    ),
    ConfigKey::optional(
        "headers",
        ConfigType::String,
        None,
        "Extra request headers: 'Name: value' pairs separated by '|'.",
    ),
    ConfigKey::optional(
        "timeout.ms",
        ConfigType::Long,
        Some("10000"),
        "How long one request may take.",
    ),
];

/// One request waiting for its records to be settled.
struct Request {
    records: Vec<(Data, Data)>,
    answer: oneshot::Sender<Tally>,
}

/// Failures listed in one answer at most (all are counted).
const MAX_ERRORS_LISTED: usize = 100;

/// What became of a request's records.
#[derive(Debug, Default)]
struct Tally {
    records: usize,
    stored: usize,
    filtered: usize,
    dead_lettered: usize,
    /// Failed and stored nowhere.
    failed: usize,
    /// Not settled: the task stopped first.
    unknown: usize,
    /// (record, reason, dead-lettered) of the first failures.
    errors: Vec<(usize, String, bool)>,
}

impl Tally {
    fn note(&mut self, record: usize, fate: Fate<'_>) {
        match fate {
            Fate::Stored => self.stored += 1,
            Fate::Filtered => self.filtered += 1,
            Fate::Failed {
                stage,
                error,
                dead_lettered,
            } => {
                if dead_lettered {
                    self.dead_lettered += 1;
                } else {
                    self.failed += 1;
                }
                if self.errors.len() < MAX_ERRORS_LISTED {
                    let reason = format!("{}: {}", stage.as_str(), metrics::clip(error, 500));
                    self.errors.push((record, reason, dead_lettered));
                }
            }
        }
    }

    fn answer(&self) -> axum::response::Response {
        let mut body = json!({
            "records": self.records,
            "stored": self.stored,
            "filtered": self.filtered,
            "dead_lettered": self.dead_lettered,
        });
        if !self.errors.is_empty() {
            body["errors"] = self
                .errors
                .iter()
                .map(|(record, error, dead)| {
                    json!({"record": record, "error": error, "dead_lettered": dead})
                })
                .collect();
        }
        if self.failed == 0 && self.unknown == 0 {
            return (StatusCode::OK, axum::Json(body)).into_response();
        }
        metrics::count(&metrics::COUNTERS.http_source_refused);
        let first = self
            .errors
            .iter()
            .find(|e| !e.2)
            .map(|(record, error, _)| format!(": record {record}: {error}"))
            .unwrap_or_default();
        body["failed"] = json!(self.failed);
        let mut error = format!(
            "{} of {} record(s) could not be stored{first}",
            self.failed, self.records
        );
        if self.unknown > 0 {
            body["unknown"] = json!(self.unknown);
            error.push_str(&format!(
                "; the task stopped before {} more were settled",
                self.unknown
            ));
        }
        body["error"] = json!(error);
        debug!(refused = %error, "HTTP source request refused");
        (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response()
    }
}

/// A request whose records are not all settled yet.
struct Waiting {
    left: usize,
    tally: Tally,
    answer: oneshot::Sender<Tally>,
}

/// A refused request: counted, logged at debug level, answered.
fn refuse(status: StatusCode, error: String) -> axum::response::Response {
    metrics::count(&metrics::COUNTERS.http_source_refused);
    debug!(status = status.as_u16(), %error, "HTTP source request refused");
    (status, axum::Json(json!({"error": error}))).into_response()
}

impl ConnectorPlugin for HttpSource {
    fn name(&self) -> &'static str {
        "http-source"
    }
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Source
    }
    fn config_keys(&self) -> &'static [ConfigKey] {
        SOURCE_KEYS
    }
    fn validate(&self, config: &Props) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(addr) = config.get("listen") {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                out.push((
                    "listen".into(),
                    format!("'{addr}' is not host:port (an IP address and a port)"),
                ));
            }
        }
        match config.get("format").map(String::as_str).unwrap_or("json") {
            "json" | "lines" => {}
            other => out.push(("format".into(), format!("'{other}' is not json or lines"))),
        }
        out
    }
    fn source_task(&self, config: &Props) -> ConnectResult<Box<dyn SourceTask>> {
        Ok(Box::new(HttpSourceTask {
            name: config.get("name").cloned().unwrap_or_default(),
            listen: config.get("listen").cloned().unwrap_or_default(),
            topic: config.get("topic").cloned().unwrap_or_default(),
            lines: config.get("format").is_some_and(|f| f == "lines"),
            max_bytes: config
                .get("max.request.bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(4 << 20),
            requests: None,
            server: None,
            next: 0,
            waiting: HashMap::new(),
        }))
    }
}

struct HttpSourceTask {
    name: String,
    listen: String,
    topic: String,
    lines: bool,
    max_bytes: usize,
    requests: Option<mpsc::Receiver<Request>>,
    server: Option<tokio::task::JoinHandle<()>>,
    /// Number of the next request.
    next: u64,
    /// Request number → its records not yet settled.
    waiting: HashMap<u64, Waiting>,
}

impl Drop for HttpSourceTask {
    fn drop(&mut self) {
        // The listener closes with the task, however it ends.
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

#[derive(Clone)]
struct Intake {
    requests: mpsc::Sender<Request>,
    lines: bool,
}

fn parse_body(body: &[u8], lines: bool) -> Result<Vec<Data>, String> {
    if lines {
        let text = std::str::from_utf8(body).map_err(|e| format!("the body is not UTF-8: {e}"))?;
        return Ok(text
            .lines()
            .filter(|l| !l.is_empty())
            .map(Data::string)
            .collect());
    }
    match serde_json::from_slice::<Value>(body).map_err(|e| format!("the body is not JSON: {e}"))? {
        Value::Array(items) => Ok(items.into_iter().map(Data::Json).collect()),
        one => Ok(vec![Data::Json(one)]),
    }
}

async fn intake(
    State(intake): State<Intake>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> axum::response::Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return refuse(e.status(), e.body_text()),
    };
    let values = match parse_body(&body, intake.lines) {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    let key = headers
        .get("x-record-key")
        .and_then(|v| v.to_str().ok())
        .map(Data::string)
        .unwrap_or(Data::Null);
    let (answer, done) = oneshot::channel();
    let request = Request {
        records: values.into_iter().map(|v| (key.clone(), v)).collect(),
        answer,
    };
    if intake.requests.send(request).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "the connector is not running"})),
        )
            .into_response();
    }
    match done.await {
        Ok(tally) => tally.answer(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "the records were not stored (the task stopped or failed); send them again"})),
        )
            .into_response(),
    }
}

impl HttpSourceTask {
    fn partition(&self) -> SourcePartition {
        let mut p = Map::new();
        p.insert("http".into(), Value::String(self.name.clone()));
        p
    }
}

#[async_trait]
impl SourceTask for HttpSourceTask {
    async fn start(&mut self, _offsets: Arc<dyn OffsetReader>) -> ConnectResult<()> {
        let listener = tokio::net::TcpListener::bind(&self.listen)
            .await
            .map_err(|e| {
                ConnectError::retriable(format!("cannot listen on {}: {e}", self.listen))
            })?;
        let (tx, rx) = mpsc::channel(64);
        let app = axum::Router::new()
            .fallback(axum::routing::post(intake).put(intake))
            .layer(DefaultBodyLimit::max(self.max_bytes))
            .with_state(Intake {
                requests: tx,
                lines: self.lines,
            });
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
        self.requests = Some(rx);
        Ok(())
    }

    async fn poll(&mut self) -> ConnectResult<Vec<SourceRecord>> {
        let Some(requests) = self.requests.as_mut() else {
            return Err(ConnectError::fatal("the HTTP source was not started"));
        };
        let request = match tokio::time::timeout(Duration::from_millis(200), requests.recv()).await
        {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return Ok(Vec::new()),
        };
        let n = self.next;
        self.next += 1;
        let count = request.records.len();
        let tally = Tally {
            records: count,
            ..Tally::default()
        };
        if count == 0 {
            let _ = request.answer.send(tally);
            return Ok(Vec::new());
        }
        self.waiting.insert(
            n,
            Waiting {
                left: count,
                tally,
                answer: request.answer,
            },
        );
        let partition = Arc::new(self.partition());
        let topic: Arc<str> = Arc::from(self.topic.as_str());
        Ok(request
            .records
            .into_iter()
            .enumerate()
            .map(|(i, (key, value))| {
                let mut r = SourceRecord::new(
                    partition.clone(),
                    json!({"request": n, "record": i}),
                    topic.clone(),
                    value,
                );
                r.key = key;
                r
            })
            .collect())
    }

    fn done(&mut self, offset: &Value, fate: Fate<'_>) {
        let (Some(n), Some(record)) = (offset["request"].as_u64(), offset["record"].as_u64())
        else {
            return;
        };
        if let Some(w) = self.waiting.get_mut(&n) {
            w.tally.note(record as usize, fate);
            w.left = w.left.saturating_sub(1);
            if w.left == 0 {
                if let Some(w) = self.waiting.remove(&n) {
                    let _ = w.answer.send(w.tally);
                }
            }
        }
    }

    async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        // A request with a failed record is answered with the failure;
        // the others get 503 as their senders drop (send them again).
        for (_, mut w) in self.waiting.drain() {
            if w.tally.failed > 0 {
                w.tally.unknown = w.left;
                let _ = w.answer.send(w.tally);
            }
        }
    }
}

impl ConnectorPlugin for HttpSink {
    fn name(&self) -> &'static str {
        "http-sink"
    }
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }
    fn config_keys(&self) -> &'static [ConfigKey] {
        SINK_KEYS
    }
    fn validate(&self, config: &Props) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(url) = config.get("url") {
            if reqwest::Url::parse(url).is_err() {
                out.push(("url".into(), format!("'{url}' is not a URL")));
            }
        }
        match config.get("method").map(|m| m.to_ascii_uppercase()) {
            None => {}
            Some(m) if m == "POST" || m == "PUT" => {}
            Some(m) => out.push(("method".into(), format!("'{m}' is not POST or PUT"))),
        }
        if let Some(h) = config.get("headers") {
            for pair in h.split('|').filter(|p| !p.trim().is_empty()) {
                if pair.split_once(':').is_none() {
                    out.push(("headers".into(), format!("'{pair}' is not 'Name: value'")));
                }
            }
        }
        out
    }
    fn sink_task(&self, config: &Props) -> ConnectResult<Box<dyn SinkTask>> {
        let timeout = config
            .get("timeout.ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000u64);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout))
            .build()
            .map_err(|e| ConnectError::fatal(e.to_string()))?;
        let headers = config
            .get("headers")
            .map(|h| {
                h.split('|')
                    .filter_map(|p| p.split_once(':'))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Box::new(HttpSinkTask {
            client,
            url: config.get("url").cloned().unwrap_or_default(),
            put: config
                .get("method")
                .is_some_and(|m| m.eq_ignore_ascii_case("PUT")),
            batch: config
                .get("batch.size")
                .and_then(|v| v.parse().ok())
                .unwrap_or(500usize)
                .max(1),
            headers,
        }))
    }
}

struct HttpSinkTask {
    client: reqwest::Client,
    url: String,
    put: bool,
    batch: usize,
    headers: Vec<(String, String)>,
}

#[async_trait]
impl SinkTask for HttpSinkTask {
    async fn put(&mut self, records: &[SinkRecord]) -> ConnectResult<()> {
        for chunk in records.chunks(self.batch) {
            let body: Vec<Value> = chunk.iter().map(|r| r.value.to_json()).collect();
            let mut request = if self.put {
                self.client.put(&self.url)
            } else {
                self.client.post(&self.url)
            };
            request = request
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(&body).unwrap_or_default());
            for (k, v) in &self.headers {
                request = request.header(k, v);
            }
            let response = request
                .send()
                .await
                .map_err(|e| ConnectError::retriable(format!("POST {}: {e}", self.url)))?;
            let status = response.status();
            if status.is_success() {
                continue;
            }
            let text = response.text().await.unwrap_or_default();
            let message = format!(
                "{} answered {status}: {}",
                self.url,
                text.chars().take(200).collect::<String>()
            );
            return Err(
                if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
                    ConnectError::retriable(message)
                } else {
                    ConnectError::fatal(message)
                },
            );
        }
        Ok(())
    }

    async fn flush(&mut self) -> ConnectResult<()> {
        // Every put waits for the server's answer.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_become_records() {
        assert_eq!(
            parse_body(br#"{"a":1}"#, false).unwrap(),
            vec![Data::Json(json!({"a":1}))]
        );
        assert_eq!(parse_body(br#"[1,"x"]"#, false).unwrap().len(), 2);
        assert!(parse_body(b"{nope", false).is_err());
        assert_eq!(
            parse_body(b"one\ntwo\n\n", true).unwrap(),
            vec![Data::string("one"), Data::string("two")]
        );
    }

    fn answer(tally: &Tally) -> (u16, Value) {
        let response = tally.answer();
        let status = response.status().as_u16();
        let body = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[test]
    fn a_request_is_answered_200_only_when_every_record_is_stored_filtered_or_dead_lettered() {
        let failed = |dead_lettered| Fate::Failed {
            stage: crate::plugin::Stage::ValueConverter,
            error: "field customer is missing",
            dead_lettered,
        };
        let mut tally = Tally {
            records: 3,
            ..Tally::default()
        };
        tally.note(0, Fate::Stored);
        tally.note(1, Fate::Filtered);
        tally.note(2, failed(true));
        let (status, body) = answer(&tally);
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            json!({"records": 3, "stored": 1, "filtered": 1, "dead_lettered": 1,
                   "errors": [{"record": 2, "error": "VALUE_CONVERTER: field customer is missing", "dead_lettered": true}]})
        );
        let mut tally = Tally {
            records: 3,
            ..Tally::default()
        };
        tally.note(0, Fate::Stored);
        tally.note(1, failed(false));
        let (status, body) = answer(&tally);
        assert_eq!(status, 422, "{body}");
        assert_eq!(
            body["error"],
            "1 of 3 record(s) could not be stored: record 1: VALUE_CONVERTER: field customer is missing"
        );
        assert_eq!((&body["stored"], &body["failed"]), (&json!(1), &json!(1)));
        // The task stopped before the last record was settled.
        tally.unknown = 1;
        let (status, body) = answer(&tally);
        assert_eq!(status, 422);
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .ends_with("; the task stopped before 1 more were settled"),
            "{body}"
        );
        // However many fail, the answer lists a bounded number of them.
        let mut tally = Tally {
            records: 1000,
            ..Tally::default()
        };
        for i in 0..1000 {
            tally.note(i, failed(false));
        }
        let (_, body) = answer(&tally);
        assert_eq!(body["failed"], 1000);
        assert_eq!(body["errors"].as_array().unwrap().len(), MAX_ERRORS_LISTED);
    }

    #[test]
    fn configs_are_checked() {
        let cfg = |pairs: &[(&str, &str)]| -> Props {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(!HttpSource
            .validate(&cfg(&[("listen", "localhost")]))
            .is_empty());
        assert!(HttpSource
            .validate(&cfg(&[("listen", "127.0.0.1:9")]))
            .is_empty());
        assert!(!HttpSink.validate(&cfg(&[("url", "not a url")])).is_empty());
        assert!(!HttpSink
            .validate(&cfg(&[("url", "http://x/"), ("method", "GET")]))
            .is_empty());
        assert!(!HttpSink
            .validate(&cfg(&[("url", "http://x/"), ("headers", "nocolon")]))
            .is_empty());
    }
}
