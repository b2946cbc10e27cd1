//! Interactive queries over HTTP: an instance started with an
//! `application_server` serves its stores, the application's instances
//! and its metrics there.
//!
//! ```text
//! GET /                          the application, this instance, its tasks
//! GET /stores                    this instance's stores (tasks, entries)
//! GET /stores/{store}            entries in key order: ?from=&to=&limit=
//! GET /stores/{store}/{key}      a key's value; a windowed store's windows
//!                                (?from=&to= bound the window start, ms),
//!                                a session store's sessions
//! GET /stores/{store}/{key}/owner  the partition, task and instance of a key
//!                                (of a global store: this instance)
//! GET /instances                 every instance of the application
//! GET /metrics                   the instance's counters (Prometheus text)
//! ```
//!
//! Keys in URLs are text, read by the store's key serde (a string as is,
//! a number as digits, JSON as JSON). A key this instance does not hold
//! but another one owns is answered with a `307` redirect to the owner
//! (with `local=true`, so an owner that lost it meanwhile answers `404`
//! instead of sending the client on); `?local=true` asks this instance
//! only. Errors are `{"error_code", "message"}` JSON, as every Runnel API.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query as Params, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::query::{self, Instance, Query, QueryError};
use crate::topology::Topology;

/// A query on its way to the thread that owns the tasks, and where its
/// answer goes.
pub struct Job {
    pub query: Query,
    pub reply: tokio::sync::oneshot::Sender<Result<Value, QueryError>>,
}

/// Runs the queries waiting in `jobs` against `tasks` (called by the
/// thread that owns them, between records).
pub fn serve_jobs<'a>(
    topology: &Topology,
    jobs: &mpsc::Receiver<Job>,
    tasks: impl Iterator<Item = &'a crate::topology::Task> + Clone,
    globals: &crate::global::GlobalStores,
) {
    while let Ok(job) = jobs.try_recv() {
        let answer = query::answer(topology, tasks.clone(), globals, &job.query);
        let _ = job.reply.send(answer);
    }
}

/// Wakes the stream thread: rung when a query arrives (and by the
/// consumer when records do), so a query is answered at once rather than
/// when a poll would have timed out.
#[derive(Default)]
pub struct Doorbell {
    rung: Mutex<bool>,
    bell: std::sync::Condvar,
}

impl Doorbell {
    pub fn ring(&self) {
        *self.rung.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.bell.notify_one();
    }

    /// Waits until rung (since the last wait) or `timeout` passed.
    pub fn wait(&self, timeout: Duration) {
        let rung = self.rung.lock().unwrap_or_else(|e| e.into_inner());
        let (mut rung, _) = self
            .bell
            .wait_timeout_while(rung, timeout, |r| !*r)
            .unwrap_or_else(|e| e.into_inner());
        *rung = false;
    }
}

/// How long a query waits for the stream thread (which may be restoring
/// a store) before it is answered 503.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the group's description is reused.
const MEMBERSHIP_TTL: Duration = Duration::from_secs(1);
/// Entries a range answers when it does not say.
const DEFAULT_RANGE_LIMIT: usize = 1_000;

/// The group's instances, as the consumer group describes them.
pub type Membership = Box<dyn Fn() -> Result<Vec<Instance>, String> + Send + Sync>;

/// What the handlers share.
pub struct Service {
    pub application_id: String,
    /// This instance's `application_server`.
    pub server: Option<String>,
    pub topology: Topology,
    /// Partitions per sub-topology.
    pub partitions: Vec<i32>,
    pub jobs: mpsc::Sender<Job>,
    pub membership: Membership,
    /// The Prometheus text of the instance's counters.
    pub metrics: Box<dyn Fn() -> String + Send + Sync>,
    cached: Mutex<Option<(Instant, Vec<Instance>)>>,
    doorbell: Option<Arc<Doorbell>>,
}

impl Service {
    pub fn new(
        application_id: String,
        server: Option<String>,
        topology: Topology,
        partitions: Vec<i32>,
        jobs: mpsc::Sender<Job>,
        membership: Membership,
        metrics: Box<dyn Fn() -> String + Send + Sync>,
    ) -> Service {
        Service {
            application_id,
            server,
            topology,
            partitions,
            jobs,
            membership,
            metrics,
            cached: Mutex::new(None),
            doorbell: None,
        }
    }

    /// Rings `bell` for each query (the thread answering them waits on
    /// it).
    pub fn with_doorbell(mut self, bell: Arc<Doorbell>) -> Service {
        self.doorbell = Some(bell);
        self
    }

    async fn ask(&self, query: Query) -> Result<Value, ApiError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job { query, reply })
            .map_err(|_| unavailable("the stream thread has stopped"))?;
        if let Some(bell) = &self.doorbell {
            bell.ring();
        }
        match tokio::time::timeout(QUERY_TIMEOUT, answer).await {
            Ok(Ok(answer)) => answer.map_err(ApiError::from),
            Ok(Err(_)) => Err(unavailable("the stream thread has stopped")),
            Err(_) => Err(unavailable(
                "the stream thread did not answer in time (restoring or rebalancing); try again",
            )),
        }
    }

    /// Where `key` of `store` lives, by the group's current description.
    async fn owner_of(
        self: &Arc<Self>,
        store: &str,
        key: &[u8],
    ) -> Result<query::KeyQueryMetadata, ApiError> {
        let instances = self.instances().await?;
        Ok(query::key_owner(
            &self.topology,
            &self.application_id,
            &self.partitions,
            &instances,
            store,
            key,
        )?)
    }

    async fn instances(self: &Arc<Self>) -> Result<Vec<Instance>, ApiError> {
        {
            let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, list)) = cached.as_ref() {
                if at.elapsed() < MEMBERSHIP_TTL {
                    return Ok(list.clone());
                }
            }
        }
        let me = self.clone();
        let list = tokio::task::spawn_blocking(move || (me.membership)())
            .await
            .map_err(|e| unavailable(&format!("describing the group: {e}")))?
            .map_err(|e| unavailable(&format!("describing the group: {e}")))?;
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), list.clone()));
        Ok(list)
    }
}

/// An error answer: a status and `{"error_code", "message"}`.
pub struct ApiError(StatusCode, String);

fn unavailable(message: &str) -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, message.to_string())
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        let status = match e {
            QueryError::UnknownStore(_) => StatusCode::NOT_FOUND,
            QueryError::BadRequest(_) => StatusCode::BAD_REQUEST,
            QueryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "application/json")],
            runnel_http::error_body(self.0, &self.1),
        )
            .into_response()
    }
}

type Shared = State<Arc<Service>>;

/// The routes of [`Service`].
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/stores", get(stores))
        .route("/stores/{store}", get(range))
        .route("/stores/{store}/{key}", get(key))
        .route("/stores/{store}/{key}/owner", get(owner))
        .route("/instances", get(instances))
        .route("/metrics", get(metrics))
        .with_state(service)
}

async fn root(State(s): Shared) -> Result<Json<Value>, ApiError> {
    let stores = s.ask(Query::Stores).await?;
    Ok(Json(json!({
        "application_id": s.application_id,
        "server": s.server,
        "stores": stores,
    })))
}

async fn stores(State(s): Shared) -> Result<Json<Value>, ApiError> {
    Ok(Json(s.ask(Query::Stores).await?))
}

fn param_i64(params: &BTreeMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    params
        .get(name)
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("{name}={v:?} is not a number of milliseconds"),
                )
            })
        })
        .transpose()
}

fn key_bytes(s: &Service, store: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    let codec = query::store_codec(&s.topology, store)?;
    codec.key_from_text(text).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("key {text:?} of store {store}: {e}"),
        )
    })
}

async fn range(
    State(s): Shared,
    Path(store): Path<String>,
    Params(params): Params<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let from = params
        .get("from")
        .map(|t| key_bytes(&s, &store, t))
        .transpose()?;
    let to = params
        .get("to")
        .map(|t| key_bytes(&s, &store, t))
        .transpose()?;
    let limit = match params.get("limit") {
        None => DEFAULT_RANGE_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=query::MAX_RANGE_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("limit={l:?}: a number from 1 to {}", query::MAX_RANGE_LIMIT),
                )
            })?,
    };
    let found = s
        .ask(Query::Range {
            store,
            from,
            to,
            limit,
        })
        .await?;
    Ok(Json(found))
}

async fn key(
    State(s): Shared,
    Path((store, text)): Path<(String, String)>,
    Params(params): Params<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let key = key_bytes(&s, &store, &text)?;
    let from_ms = param_i64(&params, "from")?.unwrap_or(i64::MIN);
    let to_ms = param_i64(&params, "to")?.unwrap_or(i64::MAX);
    let kind = s.topology.store_spec(&store).map(|spec| spec.kind);
    let found = s
        .ask(Query::Key {
            store: store.clone(),
            key: key.clone(),
            from_ms,
            to_ms,
        })
        .await?;
    let entries = found.as_array().cloned().unwrap_or_default();
    if !entries.is_empty() {
        let body = match kind {
            Some(crate::store::StoreKind::KeyValue) => entries[0].clone(),
            Some(
                crate::store::StoreKind::Window { .. }
                | crate::store::StoreKind::TimestampedWindow { .. },
            ) => {
                json!({"key": entries[0]["key"], "windows": entries})
            }
            _ => json!({"key": entries[0]["key"], "sessions": entries}),
        };
        return Ok(Json(body).into_response());
    }
    // A global store is whole here: a key it lacks is nowhere.
    let local_only =
        params.get("local").is_some_and(|v| v == "true") || s.topology.is_global_store(&store);
    if !local_only {
        let meta = s.owner_of(&store, &key).await?;
        let elsewhere = meta
            .owner
            .and_then(|o| o.server)
            .filter(|o| Some(o) != s.server.as_ref());
        if let Some(owner) = elsewhere {
            let mut location = format!(
                "http://{owner}/stores/{}/{}?local=true",
                encode(&store),
                encode(&text)
            );
            for name in ["from", "to"] {
                if let Some(v) = params.get(name) {
                    location.push_str(&format!("&{name}={}", encode(v)));
                }
            }
            return Ok((
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
                runnel_http::error_body(
                    StatusCode::TEMPORARY_REDIRECT,
                    &format!("key {text:?} of {store} is held by the instance at {owner}"),
                ),
            )
                .into_response());
        }
    }
    Err(ApiError(
        StatusCode::NOT_FOUND,
        format!("key {text:?} not found in store {store}"),
    ))
}

/// Percent-encodes a path segment or query value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn owner(
    State(s): Shared,
    Path((store, text)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let key = key_bytes(&s, &store, &text)?;
    if s.topology.is_global_store(&store) {
        // Every instance holds the whole store: this one answers.
        return Ok(Json(json!({
            "store": store,
            "key": text,
            "global": true,
            "server": s.server,
            "local": true,
        })));
    }
    let meta = s.owner_of(&store, &key).await?;
    let server = meta.owner.as_ref().and_then(|o| o.server.clone());
    Ok(Json(json!({
        "store": store,
        "key": text,
        "partition": meta.partition,
        "task": meta.task.to_string(),
        "server": server,
        "local": server.is_some() && server == s.server,
    })))
}

async fn instances(State(s): Shared) -> Result<Json<Value>, ApiError> {
    let list = s.instances().await?;
    Ok(Json(Value::Array(
        list.into_iter()
            .map(|i| {
                let partitions: Vec<Value> = i
                    .partitions
                    .iter()
                    .map(|(t, p)| json!({"topic": t, "partition": p}))
                    .collect();
                json!({
                    "server": i.server,
                    "member_id": i.member_id,
                    "host": i.client_host,
                    "local": i.server.is_some() && i.server == s.server,
                    "partitions": partitions,
                })
            })
            .collect(),
    )))
}

async fn metrics(State(s): Shared) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        (s.metrics)(),
    )
}

/// The query server: a thread with its own runtime serving
/// [`router`] on `listener` until `shutdown` fires.
pub fn spawn(
    listener: TcpListener,
    service: Arc<Service>,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let name = format!("{}-query-server", service.application_id);
    std::thread::Builder::new().name(name).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "the query server could not start");
                return;
            }
        };
        runtime.block_on(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "the query server could not start");
                    return;
                }
            };
            let server = runnel_http::Server {
                name: "streams queries",
                limits: runnel_http::Limits::default(),
                error_content_type: "application/json",
                metrics: runnel_http::metrics::Metrics::new("streams"),
            };
            let shutdown = async move {
                let _ = shutdown.await;
            };
            if let Err(e) = runnel_http::serve(listener, router(service), server, shutdown).await {
                tracing::error!(error = %e, "the query server stopped");
            }
        });
    })
}
