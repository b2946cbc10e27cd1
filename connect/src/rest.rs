//! The Kafka-Connect-compatible REST API: the same paths, bodies and status
//! codes, so Kafka Connect tooling (curl scripts, UIs) works unchanged.
//! Errors are `{"error_code": <HTTP status>, "message": "..."}`. [`serve`]
//! runs the router behind `runnel_http` (timeouts, size and connection
//! limits, the same error body for 405, 408, 413, 414 and 431). Client
//! errors are counted and logged at debug level only: a client must not be
//! able to flood the log. `/metrics` has the runtime's counters and the
//! HTTP server's.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::metrics;
use crate::plugin::{ConnectorKind, Props};
use crate::worker::{TargetState, UnitStatus, Worker, WorkerError};
use tracing::debug;

/// Largest request body.
pub const MAX_BODY_BYTES: usize = 1 << 20;

struct ApiError(StatusCode, String);

impl From<WorkerError> for ApiError {
    fn from(e: WorkerError) -> Self {
        let status = match &e {
            WorkerError::NotFound(_) | WorkerError::TaskNotFound(..) => StatusCode::NOT_FOUND,
            WorkerError::Exists(_) | WorkerError::Conflict(_) => StatusCode::CONFLICT,
            WorkerError::Invalid(_) | WorkerError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WorkerError::Kafka(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.0.is_client_error() {
            metrics::count(&metrics::COUNTERS.rest_client_errors);
            debug!(status = self.0.as_u16(), message = %self.1, "connect REST request refused");
        }
        (
            self.0,
            axum::Json(json!({"error_code": self.0.as_u16(), "message": self.1})),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;
type Params = Query<HashMap<String, String>>;

fn body<T: for<'de> Deserialize<'de>>(raw: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    // A body over the limit is 413, whatever refused it.
    let raw = raw.map_err(|e| ApiError(e.status(), e.body_text()))?;
    serde_json::from_slice(&raw).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("Request body is not valid: {e}"),
        )
    })
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The config map of a request: Kafka Connect sends strings; numbers and
/// booleans are accepted and turned into strings.
fn props(value: Value) -> ApiResult<Props> {
    let Value::Object(map) = value else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the config must be a JSON object".into(),
        ));
    };
    let mut out = Props::new();
    for (k, v) in map {
        let s = match v {
            Value::String(s) => s,
            Value::Null => continue,
            Value::Bool(_) | Value::Number(_) => v.to_string(),
            other => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("config value of '{k}' must be a string, got {other}"),
                ))
            }
        };
        out.insert(k, s);
    }
    Ok(out)
}

/// The router for a worker.
pub fn router(worker: Arc<Worker>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/connector-plugins", get(plugins))
        .route("/connector-plugins/{plugin}/config/validate", put(validate))
        .route("/connectors", get(list).post(create))
        .route("/connectors/{name}", get(info).delete(delete))
        .route("/connectors/{name}/config", get(get_config).put(put_config))
        .route("/connectors/{name}/status", get(status))
        .route("/connectors/{name}/restart", post(restart))
        .route("/connectors/{name}/pause", put(pause))
        .route("/connectors/{name}/resume", put(resume))
        .route("/connectors/{name}/stop", put(stop))
        .route("/connectors/{name}/tasks", get(tasks))
        .route("/connectors/{name}/tasks/{task}/status", get(task_status))
        .route(
            "/connectors/{name}/tasks/{task}/restart",
            post(task_restart),
        )
        .route(
            "/connectors/{name}/offsets",
            get(offsets).delete(reset_offsets),
        )
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "HTTP 404 Not Found".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(worker)
}

/// The HTTP server's name in log lines and refusals.
const SERVER_NAME: &str = "connect worker";

/// Serves the API on `listener` under `limits` (its body limit is
/// [`MAX_BODY_BYTES`]) until `shutdown`, with the HTTP server's counters
/// on `/metrics`.
pub async fn serve(
    worker: Arc<Worker>,
    listener: tokio::net::TcpListener,
    limits: runnel_http::Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let http = runnel_http::Metrics::new(SERVER_NAME);
    let counters = http.clone();
    let states = worker.clone();
    let app = router(worker).route(
        "/metrics",
        get(move || async move {
            let mut text = metrics::render();
            text.push_str(&metrics::render_connectors(
                &connector_states(&states).await,
            ));
            text.push_str(&counters.render_prometheus("runnel_connect"));
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4",
                )],
                text,
            )
        }),
    );
    let server = runnel_http::Server {
        name: SERVER_NAME,
        limits: runnel_http::Limits {
            max_body_bytes: MAX_BODY_BYTES,
            ..limits
        },
        error_content_type: "application/json",
        metrics: http,
    };
    runnel_http::serve(listener, app, server, shutdown).await
}

/// Every connector's state and its tasks' on this worker, for `/metrics`.
pub async fn connector_states(worker: &Worker) -> Vec<metrics::ConnectorState> {
    let mut out = Vec::new();
    for name in worker.connector_names().await {
        if let Ok((connector, _, tasks)) = worker.status(&name).await {
            out.push(metrics::ConnectorState {
                state: connector.state.as_str().to_string(),
                tasks: tasks.iter().map(|t| t.state.as_str().to_string()).collect(),
                name,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

async fn root() -> axum::Json<Value> {
    axum::Json(json!({
        "version": concat!("runnel-", env!("CARGO_PKG_VERSION")),
        "commit": "",
        "kafka_cluster_id": null,
    }))
}

async fn plugins(State(w): State<Arc<Worker>>) -> axum::Json<Value> {
    axum::Json(Value::Array(
        w.plugins()
            .iter()
            .map(|p| json!({"class": p.class(), "type": p.kind().as_str(), "version": p.version()}))
            .collect(),
    ))
}

async fn validate(
    State(w): State<Arc<Worker>>,
    Path(plugin): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<axum::Json<Value>> {
    let mut config = props(body(raw)?)?;
    config
        .entry("connector.class".into())
        .or_insert(plugin.clone());
    let v = w.validate(&config);
    if v.plugin.is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("Connector plugin {plugin} not found"),
        ));
    }
    debug!(
        plugin,
        errors = v.error_count(),
        warnings = v.warnings().len(),
        "connector config validated"
    );
    Ok(axum::Json(v.to_json(&plugin)))
}

fn info_json(name: &str, config: &Props, kind: ConnectorKind, tasks: usize) -> Value {
    json!({
        "name": name,
        "config": config,
        "tasks": (0..tasks).map(|t| json!({"connector": name, "task": t})).collect::<Vec<_>>(),
        "type": kind.as_str(),
    })
}

/// `{"state", "worker_id", "trace"?}` of a connector or task.
fn unit_json(s: &UnitStatus) -> Value {
    let worker = (!s.worker_id.is_empty()).then_some(&s.worker_id);
    let mut v = json!({"state": s.state.as_str(), "worker_id": worker});
    if let Some(t) = s.state.trace() {
        v["trace"] = json!(t);
    }
    v
}

async fn status_json(w: &Worker, name: &str) -> ApiResult<Value> {
    let (state, kind, tasks) = w.status(name).await?;
    Ok(json!({
        "name": name,
        "connector": unit_json(&state),
        "tasks": tasks.iter().enumerate().map(|(i, s)| {
            let mut v = unit_json(s);
            v["id"] = json!(i);
            v
        }).collect::<Vec<_>>(),
        "type": kind.as_str(),
    }))
}

async fn list(
    State(w): State<Arc<Worker>>,
    RawQuery(query): RawQuery,
) -> ApiResult<axum::Json<Value>> {
    let names = w.connector_names().await;
    // `expand` may repeat (`?expand=status&expand=info`).
    let query = query.unwrap_or_default();
    let expand: Vec<&str> = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("expand="))
        .flat_map(|v| v.split(','))
        .collect();
    if expand.is_empty() {
        return Ok(axum::Json(json!(names)));
    }
    let mut out = serde_json::Map::new();
    for n in names {
        let mut v = serde_json::Map::new();
        if expand.contains(&"status") {
            v.insert("status".into(), status_json(&w, &n).await?);
        }
        if expand.contains(&"info") {
            let (config, kind, tasks) = w.connector(&n).await?;
            v.insert("info".into(), info_json(&n, &config, kind, tasks.len()));
        }
        out.insert(n, Value::Object(v));
    }
    Ok(axum::Json(Value::Object(out)))
}

#[derive(Deserialize)]
struct CreateBody {
    name: Option<String>,
    config: Option<Value>,
}

async fn create(
    State(w): State<Arc<Worker>>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let b: CreateBody = body(raw)?;
    let mut config = props(b.config.unwrap_or(Value::Object(Default::default())))?;
    let name = b
        .name
        .or_else(|| config.get("name").cloned())
        .ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "the request needs a connector name".into(),
            )
        })?;
    config.entry("name".into()).or_insert(name.clone());
    w.create_connector(&name, config).await?;
    let (config, kind, tasks) = w.connector(&name).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(info_json(&name, &config, kind, tasks.len())),
    )
        .into_response())
}

async fn info(
    State(w): State<Arc<Worker>>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let (config, kind, tasks) = w.connector(&name).await?;
    Ok(axum::Json(info_json(&name, &config, kind, tasks.len())))
}

async fn delete(State(w): State<Arc<Worker>>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    w.delete_connector(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_config(
    State(w): State<Arc<Worker>>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let (config, _, _) = w.connector(&name).await?;
    Ok(axum::Json(json!(config)))
}

async fn put_config(
    State(w): State<Arc<Worker>>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let config = props(body(raw)?)?;
    let created = w.put_connector(&name, config).await?;
    let (config, kind, tasks) = w.connector(&name).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(info_json(&name, &config, kind, tasks.len())),
    )
        .into_response())
}

async fn status(
    State(w): State<Arc<Worker>>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(status_json(&w, &name).await?))
}

async fn restart(
    State(w): State<Arc<Worker>>,
    Path(name): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    w.restart(&name, None).await?;
    if flag(&q, "includeTasks") || flag(&q, "onlyFailed") {
        Ok((
            StatusCode::ACCEPTED,
            axum::Json(status_json(&w, &name).await?),
        )
            .into_response())
    } else {
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

async fn pause(State(w): State<Arc<Worker>>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    w.set_target(&name, TargetState::Paused).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn resume(State(w): State<Arc<Worker>>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    w.set_target(&name, TargetState::Started).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn stop(State(w): State<Arc<Worker>>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    w.set_target(&name, TargetState::Stopped).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn tasks(
    State(w): State<Arc<Worker>>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let (_, _, tasks) = w.connector(&name).await?;
    Ok(axum::Json(Value::Array(
        tasks
            .into_iter()
            .enumerate()
            .map(|(i, config)| json!({"id": {"connector": name, "task": i}, "config": config}))
            .collect(),
    )))
}

fn task_index(task: &str) -> ApiResult<usize> {
    task.parse()
        .map_err(|_| ApiError(StatusCode::NOT_FOUND, format!("Task {task} not found")))
}

async fn task_status(
    State(w): State<Arc<Worker>>,
    Path((name, task)): Path<(String, String)>,
) -> ApiResult<axum::Json<Value>> {
    let t = task_index(&task)?;
    let (_, _, tasks) = w.status(&name).await?;
    let s = tasks
        .get(t)
        .ok_or_else(|| ApiError::from(WorkerError::TaskNotFound(name.clone(), t)))?;
    let mut v = unit_json(s);
    v["id"] = json!(t);
    Ok(axum::Json(v))
}

async fn task_restart(
    State(w): State<Arc<Worker>>,
    Path((name, task)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    w.restart(&name, Some(task_index(&task)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn offsets(
    State(w): State<Arc<Worker>>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let offsets = w.offsets(&name).await?;
    Ok(axum::Json(json!({
        "offsets": offsets.into_iter().map(|(p, o)| json!({"partition": p, "offset": o})).collect::<Vec<_>>()
    })))
}

async fn reset_offsets(
    State(w): State<Arc<Worker>>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    w.reset_offsets(&name).await?;
    Ok(axum::Json(
        json!({"message": "The offsets for this connector have been reset successfully"}),
    ))
}
