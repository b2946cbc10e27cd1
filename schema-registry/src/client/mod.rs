//! A client of a schema registry's REST API (Confluent's, so this crate's
//! server or any other), and Avro in the Confluent wire format, for Kafka
//! clients (connect's Avro converter, for one):
//!
//! ```text
//! byte 0      magic, always 0
//! bytes 1..5  schema id, big-endian
//! bytes 5..   one Avro datum of that schema (binary encoding)
//! ```
//!
//! [`frame`] writes that header before a body and
//! [`validate::split`](crate::validate::split) takes it off again;
//! [`RegistryClient::decode`] reads a framed payload as JSON. Data is JSON
//! on this side ([`codec`]).
//!
//! Registry answers are cached: ids never change meaning, so schemas by
//! id are kept (up to [`CACHE_ENTRIES`]); a subject's latest version is
//! looked up again after [`LATEST_TTL`].

pub mod codec;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub use codec::{infer_schema, Compiled};

use crate::path_segment;
use crate::validate::{split, HEADER_BYTES, MAGIC};

/// Schemas (by id) and registrations a client remembers.
pub const CACHE_ENTRIES: usize = 10_000;
/// How long a subject's latest version is used before asking again.
pub const LATEST_TTL: Duration = Duration::from_secs(30);
/// Most schemas one schema may reference, transitively.
const MAX_REFERENCES: usize = 256;
/// Largest registry answer read.
const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// Why a registry request or a payload failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The registry could not be reached or failed (HTTP 5xx): the same
    /// request may succeed later.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: the registry refused, or the answer or payload
    /// cannot be used.
    #[error("{0}")]
    Failed(String),
}

impl ClientError {
    /// Whether trying again later may help.
    pub fn is_retriable(&self) -> bool {
        matches!(self, ClientError::Unavailable(_))
    }

    fn failed(message: impl Into<String>) -> ClientError {
        ClientError::Failed(message.into())
    }
}

/// `body` (one Avro datum of schema `id`) in the Confluent wire format.
pub fn frame(id: i32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A subject's latest schema as last fetched: id, compiled schema, fetch time.
type Latest = (i32, Arc<Compiled>, Instant);

/// A small client of a schema registry's REST API (Confluent's), with
/// caches.
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    by_id: Mutex<HashMap<i32, Arc<Compiled>>>,
    latest: Mutex<HashMap<String, Latest>>,
    /// (subject, schema text) → id.
    registered: Mutex<HashMap<(String, String), i32>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn bounded_insert<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, k: K, v: V) {
    if map.len() >= CACHE_ENTRIES {
        map.clear();
    }
    map.insert(k, v);
}

impl RegistryClient {
    pub fn new(url: &str) -> Result<RegistryClient, String> {
        Self::with_timeout(url, Duration::from_secs(30))
    }

    /// A client whose requests give up after `timeout`.
    pub fn with_timeout(url: &str, timeout: Duration) -> Result<RegistryClient, String> {
        let base = url
            .split(',')
            .next()
            .unwrap_or("")
            .trim()
            .trim_end_matches('/')
            .to_string();
        reqwest::Url::parse(&base)
            .map_err(|e| format!("schema.registry.url '{base}' is not a URL: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(RegistryClient {
            http,
            base,
            by_id: Mutex::new(HashMap::new()),
            latest: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashMap::new()),
        })
    }

    /// A request; `Ok(None)` for 404.
    async fn call(&self, post: Option<&Value>, path: &str) -> Result<Option<Value>, ClientError> {
        let url = format!("{}{path}", self.base);
        let request = match post {
            Some(body) => self
                .http
                .post(&url)
                .header("content-type", "application/vnd.schemaregistry.v1+json")
                .body(body.to_string()),
            None => self.http.get(&url),
        };
        let response = request.send().await.map_err(|e| {
            ClientError::Unavailable(format!("schema registry at {} unreachable: {e}", self.base))
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unavailable(format!("schema registry {url}: {e}")))?;
        if body.len() > MAX_RESPONSE_BYTES {
            return Err(ClientError::failed(format!(
                "schema registry answer of {} bytes is too large",
                body.len()
            )));
        }
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status.as_u16() == 404 {
            return Ok(None);
        }
        if !status.is_success() {
            let message = json["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            let e = format!(
                "schema registry {path}: HTTP {} (error code {}): {message}",
                status.as_u16(),
                json["error_code"]
            );
            return Err(if status.is_server_error() {
                ClientError::Unavailable(e)
            } else {
                ClientError::failed(e)
            });
        }
        Ok(Some(json))
    }

    /// Parses a schema answer (`schema`, `references`), fetching what it
    /// references.
    async fn compile(&self, answer: &Value) -> Result<Compiled, ClientError> {
        let text = answer["schema"]
            .as_str()
            .ok_or_else(|| ClientError::failed("schema registry answer has no schema"))?;
        if let Some(t) = answer["schemaType"].as_str() {
            if t != "AVRO" {
                return Err(ClientError::failed(format!(
                    "schema is {t}; this converter reads and writes Avro"
                )));
            }
        }
        let mut deps: Vec<String> = Vec::new();
        let mut seen: Vec<(String, i64)> = Vec::new();
        self.references(answer, &mut deps, &mut seen).await?;
        let parsed = crate::schema::parse(text, &deps, false)
            .map_err(|e| ClientError::failed(format!("schema cannot be used: {e}")))?;
        Ok(Compiled::new(parsed.schema))
    }

    /// Texts of every schema `answer` references, dependencies first.
    fn references<'a>(
        &'a self,
        answer: &'a Value,
        deps: &'a mut Vec<String>,
        seen: &'a mut Vec<(String, i64)>,
    ) -> futures::future::BoxFuture<'a, Result<(), ClientError>> {
        Box::pin(async move {
            let Some(refs) = answer["references"].as_array() else {
                return Ok(());
            };
            for r in refs {
                let subject = r["subject"].as_str().unwrap_or_default().to_string();
                let version = r["version"].as_i64().unwrap_or(-1);
                if seen.iter().any(|s| s.0 == subject && s.1 == version) {
                    continue;
                }
                if seen.len() >= MAX_REFERENCES {
                    return Err(ClientError::failed("schema has too many references"));
                }
                seen.push((subject.clone(), version));
                let path = format!("/subjects/{}/versions/{version}", path_segment(&subject));
                let dep = self.call(None, &path).await?.ok_or_else(|| {
                    ClientError::failed(format!(
                        "referenced schema {subject} version {version} not found"
                    ))
                })?;
                self.references(&dep, deps, seen).await?;
                deps.push(dep["schema"].as_str().unwrap_or_default().to_string());
            }
            Ok(())
        })
    }

    /// The schema with this id.
    pub async fn by_id(&self, id: i32) -> Result<Arc<Compiled>, ClientError> {
        if let Some(c) = lock(&self.by_id).get(&id) {
            return Ok(c.clone());
        }
        let answer = self
            .call(None, &format!("/schemas/ids/{id}"))
            .await?
            .ok_or_else(|| {
                ClientError::failed(format!("schema id {id} is unknown to the schema registry"))
            })?;
        let compiled = Arc::new(self.compile(&answer).await?);
        bounded_insert(&mut lock(&self.by_id), id, compiled.clone());
        Ok(compiled)
    }

    /// (id, schema) of a subject's latest version.
    pub async fn latest(&self, subject: &str) -> Result<(i32, Arc<Compiled>), ClientError> {
        self.latest_if_any(subject).await?.ok_or_else(|| {
            ClientError::failed(format!(
                "subject '{subject}' has no schema in the schema registry; register one first"
            ))
        })
    }

    /// (id, schema) of a subject's latest version; `None` when the subject
    /// has none.
    pub async fn latest_if_any(
        &self,
        subject: &str,
    ) -> Result<Option<(i32, Arc<Compiled>)>, ClientError> {
        if let Some((id, c, at)) = lock(&self.latest).get(subject) {
            if at.elapsed() < LATEST_TTL {
                return Ok(Some((*id, c.clone())));
            }
        }
        let Some(answer) = self
            .call(
                None,
                &format!("/subjects/{}/versions/latest", path_segment(subject)),
            )
            .await?
        else {
            return Ok(None);
        };
        let id = answer["id"]
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .ok_or_else(|| ClientError::failed("schema registry answer has no id"))?;
        let cached = lock(&self.by_id).get(&id).cloned();
        let compiled = match cached {
            Some(c) => c,
            None => {
                let c = Arc::new(self.compile(&answer).await?);
                bounded_insert(&mut lock(&self.by_id), id, c.clone());
                c
            }
        };
        bounded_insert(
            &mut lock(&self.latest),
            subject.to_string(),
            (id, compiled.clone(), Instant::now()),
        );
        Ok(Some((id, compiled)))
    }

    /// The id of `schema` under `subject`: registered when `register`,
    /// else looked up.
    pub async fn id_of(
        &self,
        subject: &str,
        schema: &str,
        register: bool,
    ) -> Result<i32, ClientError> {
        let key = (subject.to_string(), schema.to_string());
        if let Some(id) = lock(&self.registered).get(&key) {
            return Ok(*id);
        }
        let body = json!({ "schema": schema });
        let answer = if register {
            self.call(
                Some(&body),
                &format!("/subjects/{}/versions", path_segment(subject)),
            )
            .await?
        } else {
            self.call(Some(&body), &format!("/subjects/{}", path_segment(subject)))
                .await?
        };
        let id = answer
            .as_ref()
            .and_then(|a| a["id"].as_i64())
            .and_then(|i| i32::try_from(i).ok())
            .ok_or_else(|| {
                ClientError::failed(format!(
                    "the record's schema is not registered under subject '{subject}' and \
                     auto.register.schemas is false"
                ))
            })?;
        bounded_insert(&mut lock(&self.registered), key, id);
        Ok(id)
    }

    /// A payload in the Confluent wire format as JSON, read with the
    /// schema its id names.
    pub async fn decode(&self, payload: &[u8]) -> Result<Value, ClientError> {
        let (id, body) = split(payload).map_err(|e| ClientError::failed(e.to_string()))?;
        let compiled = self.by_id(id).await?;
        compiled
            .decode(body)
            .map_err(|e| ClientError::failed(format!("schema {id}: {e}")))
    }
}
