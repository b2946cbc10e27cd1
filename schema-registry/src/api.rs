//! The REST API: Confluent's paths, bodies, status codes and error
//! bodies, over a [`Registry`].
//!
//! Requests are JSON whatever their `Content-Type` says (clients send
//! `application/vnd.schemaregistry.v1+json`, `application/json` or
//! nothing); bodies are capped at [`MAX_BODY_BYTES`]; unknown query
//! parameters are ignored and booleans parse case-insensitively, as the
//! Java registry does. Every error is `{"error_code": N, "message": ...}`
//! with the status from [`RegistryError::status`]; unknown paths
//! (including `/associations/...`, which newer clients probe) answer 404
//! so clients fall back to their defaults. [`serve`] runs the router
//! behind `runnel_http`, which times out slow clients, limits sizes and
//! connections and gives the errors it answers itself (405, 408, 413, 414,
//! 431) the same body.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::compat::CompatibilityLevel;
use crate::error::RegistryError;
use crate::records::Mode;
use crate::schema::{SchemaReference, SchemaType};
use crate::service::Registry;
use crate::store::{check_subject, SchemaRequest, Store, StoredSchema, VersionSpec};

/// Largest request body (a schema is at most [`crate::schema::MAX_SCHEMA_BYTES`]).
pub const MAX_BODY_BYTES: usize = crate::schema::MAX_SCHEMA_BYTES + (256 << 10);

/// Content type of every JSON response.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Renders extra Prometheus metrics (the broker's, when embedded).
pub type ExtraMetrics = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    extra_metrics: Option<ExtraMetrics>,
    http: Arc<runnel_http::Metrics>,
}

/// The HTTP server's name in log lines and refusals.
const SERVER_NAME: &str = "schema registry";

/// The router for `registry`. `extra_metrics` is appended to `/metrics`.
pub fn router(registry: Arc<Registry>, extra_metrics: Option<ExtraMetrics>) -> Router {
    app(
        registry,
        extra_metrics,
        runnel_http::Metrics::new(SERVER_NAME),
    )
}

/// The router, rendering `http`'s counters on `/metrics`.
fn app(
    registry: Arc<Registry>,
    extra_metrics: Option<ExtraMetrics>,
    http: Arc<runnel_http::Metrics>,
) -> Router {
    let state = AppState {
        registry,
        extra_metrics,
        http,
    };
    Router::new()
        .route("/", get(root).post(root))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/contexts", get(contexts))
        .route("/schemas", get(list_schemas))
        .route("/schemas/types", get(schema_types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_by_id))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(raw_version_schema),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_all_versions),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_version),
        )
        .route(
            "/config",
            get(get_global_config)
                .put(put_global_config)
                .delete(delete_global_config),
        )
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/mode",
            get(get_global_mode)
                .put(put_global_mode)
                .delete(delete_global_mode),
        )
        .route(
            "/mode/{subject}",
            get(get_subject_mode)
                .put(put_subject_mode)
                .delete(delete_subject_mode),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// Serves the REST API on `listener` under `limits` (its body limit is
/// [`MAX_BODY_BYTES`]) until `shutdown` completes.
pub async fn serve(
    registry: Arc<Registry>,
    listener: tokio::net::TcpListener,
    extra_metrics: Option<ExtraMetrics>,
    limits: runnel_http::Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let http = runnel_http::Metrics::new(SERVER_NAME);
    let app = app(registry.clone(), extra_metrics, http.clone());
    let server = runnel_http::Server {
        name: SERVER_NAME,
        limits: runnel_http::Limits {
            max_body_bytes: MAX_BODY_BYTES,
            ..limits
        },
        error_content_type: CONTENT_TYPE,
        metrics: http,
    };
    let result = runnel_http::serve(listener, app, server, shutdown).await;
    // Joining the reader thread blocks briefly.
    let _ = tokio::task::spawn_blocking(move || registry.close()).await;
    result
}

// ---------------------------------------------------------------- plumbing

/// A registry error as an HTTP response.
struct ApiError(RegistryError);

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError(e)
    }
}

fn error_response(status: u16, code: u32, message: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (
        status,
        serde_json::to_string(&json!({"error_code": code, "message": message})).unwrap_or_default(),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.0.status(), self.0.code(), self.0.to_string())
    }
}

/// A JSON response with the registry's content type.
struct Json<T>(T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_string(&self.0) {
            Ok(body) => {
                let mut r = body.into_response();
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
                r
            }
            Err(e) => ApiError(RegistryError::Store(e.to_string())).into_response(),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

type Params = Query<HashMap<String, String>>;

/// A boolean query parameter: `true` in any case is true, anything else
/// (or absence) false, like Java's `Boolean.valueOf`.
fn flag(q: &HashMap<String, String>, names: &[&str]) -> bool {
    names
        .iter()
        .filter_map(|n| q.get(*n))
        .any(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    q.get(name).map(String::as_str)
}

/// `offset` / `limit` paging (`limit` <= 0 means everything).
fn page<T>(items: Vec<T>, q: &HashMap<String, String>) -> Vec<T> {
    let offset = param(q, "offset")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let limit = param(q, "limit")
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|l| *l > 0)
        .map(|l| l as usize)
        .unwrap_or(usize::MAX);
    items.into_iter().skip(offset).take(limit).collect()
}

/// Counts requests and error responses for `/metrics`.
async fn count(State(s): State<AppState>, request: Request, next: Next) -> Response {
    s.registry.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let response = next.run(request).await;
    if response.status().is_client_error() || response.status().is_server_error() {
        s.registry.metrics.errors.fetch_add(1, Ordering::Relaxed);
    }
    response
}

/// Parses a JSON body, or answers 400 (or 413 when too large).
fn body<T: for<'de> Deserialize<'de>>(raw: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let raw = raw.map_err(|e| {
        let message = format!("cannot read the request body: {}", e.body_text());
        ApiError(if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            RegistryError::PayloadTooLarge(message)
        } else {
            RegistryError::BadRequest(message)
        })
    })?;
    serde_json::from_slice(&raw).map_err(|e| ApiError(RegistryError::BadRequest(e.to_string())))
}

fn parse_id(id: &str) -> ApiResult<i32> {
    id.parse::<i32>()
        .map_err(|_| ApiError(RegistryError::SchemaNotFound(id.chars().take(40).collect())))
}

fn subject_name(subject: &str) -> ApiResult<&str> {
    check_subject(subject)?;
    Ok(subject)
}

/// A schema request body.
#[derive(Deserialize)]
struct SchemaBody {
    #[serde(default)]
    schema: Option<String>,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<SchemaReference>>,
    #[serde(default)]
    id: Option<i32>,
    #[serde(default)]
    version: Option<i32>,
}

impl SchemaBody {
    fn into_request(self) -> Result<SchemaRequest, RegistryError> {
        let schema_type = match self.schema_type.as_deref() {
            None | Some("") => SchemaType::Avro,
            Some(t) => SchemaType::parse(t).ok_or_else(|| {
                RegistryError::InvalidSchema(format!(
                    "type {t}: this registry supports AVRO schemas only"
                ))
            })?,
        };
        let schema = self
            .schema
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| RegistryError::InvalidSchema("Empty schema".into()))?;
        Ok(SchemaRequest {
            schema,
            schema_type,
            references: self.references.unwrap_or_default(),
            id: self.id.filter(|i| *i >= 0),
            version: self.version,
        })
    }
}

/// The JSON of one subject version.
fn version_json(subject: &str, version: i32, stored: &StoredSchema) -> Value {
    let mut v = json!({
        "subject": subject,
        "version": version,
        "id": stored.id,
    });
    if !stored.schema_type.is_avro() {
        v["schemaType"] = json!(stored.schema_type.as_str());
    }
    if !stored.references.is_empty() {
        v["references"] = json!(stored.references);
    }
    v["schema"] = json!(stored.canonical);
    v
}

// ---------------------------------------------------------------- root

async fn root() -> Json<Value> {
    Json(json!({}))
}

async fn health(State(s): State<AppState>) -> Json<Value> {
    let store = s.registry.read();
    Json(json!({
        "status": "UP",
        "schemas": store.schemas().len(),
        "subjects": store.subjects("", false, false).len(),
        "applied_offset": s.registry.applied_offset(),
    }))
}

async fn metrics(State(s): State<AppState>) -> Response {
    let m = &s.registry.metrics;
    let (schemas, subjects, max_id) = {
        let store = s.registry.read();
        (
            store.schemas().len(),
            store.subjects("", false, false).len(),
            store.max_id(),
        )
    };
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    metric(
        "runnel_registry_requests_total",
        "counter",
        "REST requests served.",
        m.requests.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "runnel_registry_errors_total",
        "counter",
        "REST requests answered with an error.",
        m.errors.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "runnel_registry_registrations_total",
        "counter",
        "New schema versions registered by this process.",
        m.registrations.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "runnel_registry_lookups_by_id_total",
        "counter",
        "Schemas fetched by id.",
        m.lookups_by_id.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "runnel_registry_write_conflicts_total",
        "counter",
        "Registrations planned again after a concurrent writer won.",
        m.write_conflicts.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "runnel_registry_schemas",
        "gauge",
        "Schemas (ids) stored.",
        schemas.to_string(),
    );
    metric(
        "runnel_registry_subjects",
        "gauge",
        "Subjects with live versions.",
        subjects.to_string(),
    );
    metric(
        "runnel_registry_max_schema_id",
        "gauge",
        "Highest schema id used.",
        max_id.to_string(),
    );
    metric(
        "runnel_registry_applied_offset",
        "gauge",
        "Next offset of the schemas topic to apply.",
        s.registry.applied_offset().to_string(),
    );
    out.push_str(&s.http.render_prometheus("runnel_registry"));
    if let Some(extra) = &s.extra_metrics {
        out.push_str(&extra());
    }
    let mut r = out.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

async fn contexts() -> Json<Value> {
    Json(json!(["."]))
}

async fn not_found() -> Response {
    error_response(404, 404, "HTTP 404 Not Found".into())
}

// ---------------------------------------------------------------- schemas

async fn schema_types() -> Json<Value> {
    Json(json!(["AVRO"]))
}

async fn list_schemas(State(s): State<AppState>, Query(q): Params) -> ApiResult<Json<Vec<Value>>> {
    let prefix = param(&q, "subjectPrefix").unwrap_or("");
    let deleted = flag(&q, &["deleted"]);
    let latest_only = flag(&q, &["latestOnly"]);
    let store = s.registry.read();
    let mut out = Vec::new();
    for subject in store.subjects(prefix, deleted, false) {
        let versions = store.versions(&subject, deleted, false).unwrap_or_default();
        let chosen: Vec<i32> = if latest_only {
            versions.last().copied().into_iter().collect()
        } else {
            versions
        };
        for v in chosen {
            if let Ok((n, _, stored)) = store.version(&subject, VersionSpec::Number(v), deleted) {
                out.push(version_json(&subject, n, stored));
            }
        }
    }
    Ok(Json(page(out, &q)))
}

async fn schema_by_id(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> ApiResult<Json<Value>> {
    s.registry
        .metrics
        .lookups_by_id
        .fetch_add(1, Ordering::Relaxed);
    let id = parse_id(&id)?;
    let store = s.registry.read();
    let stored = store.schema_by_id(id)?;
    let mut v = json!({});
    if !stored.schema_type.is_avro() {
        v["schemaType"] = json!(stored.schema_type.as_str());
    }
    v["schema"] = json!(schema_text(&store, stored, param(&q, "format"))?);
    if !stored.references.is_empty() {
        v["references"] = json!(stored.references);
    }
    if flag(&q, &["fetchMaxId"]) {
        v["maxId"] = json!(store.max_id());
    }
    Ok(Json(v))
}

/// The schema text in a requested `format` (`resolved` inlines references).
fn schema_text(store: &Store, stored: &StoredSchema, format: Option<&str>) -> ApiResult<String> {
    if format.is_some_and(|f| f.eq_ignore_ascii_case("resolved")) && !stored.references.is_empty() {
        let parsed = store.parsed(stored.id)?;
        return serde_json::to_string(&parsed.schema)
            .map_err(|e| ApiError(RegistryError::Store(e.to_string())));
    }
    Ok(stored.canonical.clone())
}

async fn raw_schema_by_id(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let store = s.registry.read();
    let stored = store.schema_by_id(id)?;
    Ok(raw(schema_text(&store, stored, param(&q, "format"))?))
}

fn raw(text: String) -> Response {
    let mut r = text.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r
}

async fn subjects_by_id(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> ApiResult<Json<Vec<String>>> {
    let id = parse_id(&id)?;
    let store = s.registry.read();
    store.schema_by_id(id)?;
    let mut subjects: Vec<String> = store
        .id_versions(id, flag(&q, &["deleted"]))
        .into_iter()
        .map(|(subject, _)| subject)
        .filter(|sub| param(&q, "subject").is_none_or(|f| f == sub))
        .collect();
    subjects.dedup();
    Ok(Json(page(subjects, &q)))
}

async fn versions_by_id(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> ApiResult<Json<Vec<Value>>> {
    let id = parse_id(&id)?;
    let store = s.registry.read();
    store.schema_by_id(id)?;
    let versions = store
        .id_versions(id, flag(&q, &["deleted"]))
        .into_iter()
        .filter(|(sub, _)| param(&q, "subject").is_none_or(|f| f == sub))
        .map(|(subject, version)| json!({"subject": subject, "version": version}))
        .collect();
    Ok(Json(page(versions, &q)))
}

// ---------------------------------------------------------------- subjects

async fn list_subjects(State(s): State<AppState>, Query(q): Params) -> Json<Vec<String>> {
    let prefix = param(&q, "subjectPrefix").unwrap_or("");
    let prefix = if prefix == ":*:" { "" } else { prefix };
    let subjects = s.registry.read().subjects(
        prefix,
        flag(&q, &["deleted"]),
        flag(&q, &["deletedOnly", "deleted_only"]),
    );
    Json(page(subjects, &q))
}

async fn lookup(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    Query(q): Params,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let subject = subject_name(&subject)?;
    let req = body::<SchemaBody>(raw)?.into_request()?;
    let store = s.registry.read();
    let (version, _) = store.lookup(
        subject,
        &req,
        flag(&q, &["normalize"]),
        flag(&q, &["deleted"]),
    )?;
    let (n, _, stored) = store.version(subject, VersionSpec::Number(version), true)?;
    Ok(Json(version_json(subject, n, stored)))
}

async fn delete_subject(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    Query(q): Params,
) -> ApiResult<Json<Vec<i32>>> {
    let permanent = flag(&q, &["permanent"]);
    let versions = s
        .registry
        .write(|store| store.plan_delete_subject(&subject, permanent))
        .await?;
    Ok(Json(versions))
}

async fn list_versions(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    Query(q): Params,
) -> ApiResult<Json<Vec<i32>>> {
    let versions = s.registry.read().versions(
        &subject,
        flag(&q, &["deleted"]),
        flag(&q, &["deletedOnly", "deleted_only"]),
    )?;
    Ok(Json(page(versions, &q)))
}

async fn register(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    Query(q): Params,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let subject = subject_name(&subject)?;
    let req = body::<SchemaBody>(raw)?.into_request()?;
    let (id, _) = s
        .registry
        .register(subject, &req, flag(&q, &["normalize"]))
        .await?;
    Ok(Json(json!({ "id": id })))
}

async fn get_version(
    State(s): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> ApiResult<Json<Value>> {
    let spec = VersionSpec::parse(&version)?;
    let store = s.registry.read();
    let (n, _, stored) = store.version(&subject, spec, flag(&q, &["deleted"]))?;
    Ok(Json(version_json(&subject, n, stored)))
}

async fn raw_version_schema(
    State(s): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> ApiResult<Response> {
    let spec = VersionSpec::parse(&version)?;
    let store = s.registry.read();
    let (_, _, stored) = store.version(&subject, spec, flag(&q, &["deleted"]))?;
    Ok(raw(schema_text(&store, stored, param(&q, "format"))?))
}

async fn referenced_by(
    State(s): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult<Json<Vec<i32>>> {
    let spec = VersionSpec::parse(&version)?;
    let store = s.registry.read();
    let (n, _, _) = store.version(&subject, spec, true)?;
    Ok(Json(store.referenced_by(&subject, n)))
}

async fn delete_version(
    State(s): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> ApiResult<Json<i32>> {
    let spec = VersionSpec::parse(&version)?;
    let permanent = flag(&q, &["permanent"]);
    let n = s
        .registry
        .write(|store| store.plan_delete_version(&subject, spec, permanent))
        .await?;
    Ok(Json(n))
}

// ---------------------------------------------------------------- compatibility

async fn compatibility(
    s: &AppState,
    subject: &str,
    version: Option<VersionSpec>,
    q: &HashMap<String, String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let subject = subject_name(subject)?;
    let verbose = flag(q, &["verbose"]);
    let req = body::<SchemaBody>(raw)?.into_request();
    let result = req.and_then(|req| {
        s.registry
            .read()
            .test_compatibility(subject, version, &req, flag(q, &["normalize"]))
    });
    let messages = match result {
        Ok(m) => m,
        // With verbose, an invalid schema is an incompatible one, explained.
        Err(e @ RegistryError::InvalidSchema(_)) if verbose => vec![e.to_string()],
        Err(e) => return Err(e.into()),
    };
    let mut v = json!({ "is_compatible": messages.is_empty() });
    if verbose {
        v["messages"] = json!(messages);
    }
    Ok(Json(v))
}

async fn check_all_versions(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    Query(q): Params,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    compatibility(&s, &subject, None, &q, raw).await
}

async fn check_version(
    State(s): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let spec = VersionSpec::parse(&version)?;
    compatibility(&s, &subject, Some(spec), &q, raw).await
}

// ---------------------------------------------------------------- config

#[derive(Deserialize)]
struct ConfigBody {
    compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
}

fn level_json(level: CompatibilityLevel) -> Json<Value> {
    Json(json!({ "compatibilityLevel": level.as_str() }))
}

async fn get_global_config(State(s): State<AppState>) -> Json<Value> {
    level_json(s.registry.read().global_config())
}

async fn get_subject_config(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    Query(q): Params,
) -> ApiResult<Json<Value>> {
    let store = s.registry.read();
    match store.subject_config(&subject) {
        Some(level) => Ok(level_json(level)),
        None if flag(&q, &["defaultToGlobal"]) => Ok(level_json(store.global_config())),
        None => Err(RegistryError::SubjectCompatibilityNotConfigured(subject).into()),
    }
}

async fn put_config(
    s: &AppState,
    subject: Option<&str>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let b: ConfigBody = body(raw)?;
    let level = b
        .compatibility
        .or(b.compatibility_level)
        .as_deref()
        .and_then(CompatibilityLevel::parse)
        .ok_or(RegistryError::InvalidCompatibilityLevel)?;
    s.registry
        .write(|store| Ok(((), vec![store.plan_set_config(subject, level)?])))
        .await?;
    Ok(Json(json!({ "compatibility": level.as_str() })))
}

async fn put_global_config(
    State(s): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    put_config(&s, None, raw).await
}

async fn put_subject_config(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    put_config(&s, Some(&subject), raw).await
}

async fn delete_config(s: &AppState, subject: Option<&str>) -> ApiResult<Json<Value>> {
    let old = s
        .registry
        .write(|store| {
            let (old, record) = store.plan_delete_config(subject)?;
            Ok((old, vec![record]))
        })
        .await?;
    Ok(level_json(old))
}

async fn delete_global_config(State(s): State<AppState>) -> ApiResult<Json<Value>> {
    delete_config(&s, None).await
}

async fn delete_subject_config(
    State(s): State<AppState>,
    Path(subject): Path<String>,
) -> ApiResult<Json<Value>> {
    delete_config(&s, Some(&subject)).await
}

// ---------------------------------------------------------------- mode

#[derive(Deserialize)]
struct ModeBody {
    mode: Option<String>,
}

fn mode_json(mode: Mode) -> Json<Value> {
    Json(json!({ "mode": mode.as_str() }))
}

async fn get_global_mode(State(s): State<AppState>) -> Json<Value> {
    mode_json(s.registry.read().global_mode())
}

async fn get_subject_mode(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    Query(q): Params,
) -> ApiResult<Json<Value>> {
    let store = s.registry.read();
    match store.subject_mode(&subject) {
        Some(mode) => Ok(mode_json(mode)),
        None if flag(&q, &["defaultToGlobal"]) => Ok(mode_json(store.global_mode())),
        None => Err(RegistryError::SubjectModeNotConfigured(subject).into()),
    }
}

async fn put_mode(
    s: &AppState,
    subject: Option<&str>,
    q: &HashMap<String, String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let b: ModeBody = body(raw)?;
    let mode = b
        .mode
        .as_deref()
        .and_then(Mode::parse)
        .ok_or(RegistryError::InvalidMode)?;
    let force = flag(q, &["force"]);
    s.registry
        .write(|store| Ok(((), vec![store.plan_set_mode(subject, mode, force)?])))
        .await?;
    Ok(mode_json(mode))
}

async fn put_global_mode(
    State(s): State<AppState>,
    Query(q): Params,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    put_mode(&s, None, &q, raw).await
}

async fn put_subject_mode(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    Query(q): Params,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    put_mode(&s, Some(&subject), &q, raw).await
}

async fn delete_mode(s: &AppState, subject: Option<&str>) -> ApiResult<Json<Value>> {
    let old = s
        .registry
        .write(|store| {
            let (old, record) = store.plan_delete_mode(subject)?;
            Ok((old, vec![record]))
        })
        .await?;
    Ok(mode_json(old))
}

async fn delete_global_mode(State(s): State<AppState>) -> ApiResult<Json<Value>> {
    delete_mode(&s, None).await
}

async fn delete_subject_mode(
    State(s): State<AppState>,
    Path(subject): Path<String>,
) -> ApiResult<Json<Value>> {
    delete_mode(&s, Some(&subject)).await
}

#[cfg(test)]
mod tests {
    //! The REST API over an in-memory log: status codes, error codes and
    //! bodies as Confluent clients expect them.
    use super::*;
    use crate::service::MemoryLog;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    const V1: &str = r#"{"type":"record","name":"User","namespace":"example","fields":[{"name":"name","type":"string"}]}"#;
    const V2: &str = r#"{"type":"record","name":"User","namespace":"example","fields":[{"name":"name","type":"string"},{"name":"age","type":"int","default":0}]}"#;
    const BAD: &str = r#"{"type":"record","name":"User","namespace":"example","fields":[{"name":"name","type":"int"}]}"#;

    struct Api {
        router: Router,
        log: Arc<MemoryLog>,
    }

    impl Api {
        fn new() -> Api {
            let (registry, log) = MemoryLog::registry();
            Api {
                router: router(registry, None),
                log,
            }
        }

        async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (u16, Value) {
            let (status, text) = self
                .call_raw(method, uri, body.map(|b| b.to_string()))
                .await;
            let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            (status, value)
        }

        async fn call_raw(&self, method: &str, uri: &str, body: Option<String>) -> (u16, String) {
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .header("content-type", "application/vnd.schemaregistry.v1+json")
                .body(body.map(Body::from).unwrap_or_else(Body::empty))
                .unwrap();
            let response = self.router.clone().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }

        async fn register(&self, subject: &str, schema: &str) -> (u16, Value) {
            self.call(
                "POST",
                &format!("/subjects/{subject}/versions"),
                Some(json!({"schema": schema})),
            )
            .await
        }
    }

    fn code(v: &Value) -> i64 {
        v["error_code"].as_i64().unwrap_or(-1)
    }

    #[tokio::test]
    async fn register_get_and_lookup_answer_like_confluent() {
        let api = Api::new();
        let (status, body) = api.register("users-value", V1).await;
        assert_eq!((status, body.clone()), (200, json!({"id": 1})));
        let (_, body) = api.register("users-value", V2).await;
        assert_eq!(body, json!({"id": 2}));
        // Registering again returns the same id and writes nothing.
        let before = api.log.records().len();
        assert_eq!(api.register("users-value", V2).await.1, json!({"id": 2}));
        assert_eq!(api.log.records().len(), before);

        let (status, v) = api
            .call("GET", "/subjects/users-value/versions/latest", None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(v["subject"], "users-value");
        assert_eq!(
            (v["version"].as_i64(), v["id"].as_i64()),
            (Some(2), Some(2))
        );
        assert!(v.get("schemaType").is_none(), "AVRO is implied: {v}");
        let stored: Value = serde_json::from_str(v["schema"].as_str().unwrap()).unwrap();
        assert_eq!(stored, serde_json::from_str::<Value>(V2).unwrap());

        let (_, v) = api
            .call("GET", "/schemas/ids/1?subject=users-value", None)
            .await;
        assert_eq!(
            serde_json::from_str::<Value>(v["schema"].as_str().unwrap()).unwrap(),
            serde_json::from_str::<Value>(V1).unwrap()
        );
        let (_, v) = api
            .call("GET", "/schemas/ids/1?fetchMaxId=true", None)
            .await;
        assert_eq!(v["maxId"], 2);
        let (status, text) = api.call_raw("GET", "/schemas/ids/1/schema", None).await;
        assert_eq!(status, 200);
        assert!(text.starts_with("{\"type\":\"record\""), "{text}");
        assert_eq!(
            api.call("GET", "/schemas/ids/2/subjects", None).await.1,
            json!(["users-value"])
        );
        assert_eq!(
            api.call("GET", "/schemas/ids/2/versions", None).await.1,
            json!([{"subject": "users-value", "version": 2}])
        );
        assert_eq!(
            api.call("GET", "/subjects/users-value/versions", None)
                .await
                .1,
            json!([1, 2])
        );
        assert_eq!(
            api.call(
                "GET",
                "/subjects?deleted=false&deleted_only=false&offset=0&limit=-1",
                None
            )
            .await
            .1,
            json!(["users-value"])
        );

        // Lookup by content, with Python's capitalised booleans.
        let (status, v) = api
            .call(
                "POST",
                "/subjects/users-value?normalize=False&deleted=False",
                Some(json!({"schema": V1})),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            (v["version"].as_i64(), v["id"].as_i64()),
            (Some(1), Some(1))
        );
        let (status, v) = api
            .call(
                "POST",
                "/subjects/users-value",
                Some(json!({"schema": BAD})),
            )
            .await;
        assert_eq!((status, code(&v)), (404, 40403));
        let (status, v) = api
            .call("POST", "/subjects/nobody", Some(json!({"schema": BAD})))
            .await;
        assert_eq!((status, code(&v)), (404, 40401));

        assert_eq!(
            api.call("GET", "/schemas/types", None).await.1,
            json!(["AVRO"])
        );
        let (_, all) = api.call("GET", "/schemas?latestOnly=true", None).await;
        assert_eq!(all.as_array().unwrap().len(), 1);
        assert_eq!(api.call("GET", "/", None).await, (200, json!({})));
    }

    #[tokio::test]
    async fn errors_carry_confluents_codes() {
        let api = Api::new();
        api.register("s", V1).await;
        let cases: Vec<(&str, &str, Option<Value>, u16, i64)> = vec![
            ("GET", "/schemas/ids/99", None, 404, 40403),
            ("GET", "/subjects/none/versions", None, 404, 40401),
            ("GET", "/subjects/s/versions/7", None, 404, 40402),
            ("GET", "/subjects/s/versions/zero", None, 422, 42202),
            ("GET", "/subjects/s/versions/0", None, 422, 42202),
            (
                "POST",
                "/subjects/s/versions",
                Some(json!({"schema": "{\"type\":\"nope\"}"})),
                422,
                42201,
            ),
            (
                "POST",
                "/subjects/s/versions",
                Some(json!({"schema": V1, "schemaType": "PROTOBUF"})),
                422,
                42201,
            ),
            (
                "POST",
                "/subjects/s/versions",
                Some(json!({"schema": ""})),
                422,
                42201,
            ),
            (
                "POST",
                "/subjects/s/versions",
                Some(json!({"schema": BAD})),
                409,
                409,
            ),
            (
                "PUT",
                "/config",
                Some(json!({"compatibility": "SIDEWAYS"})),
                422,
                42203,
            ),
            (
                "PUT",
                "/mode",
                Some(json!({"mode": "SOMETIMES"})),
                422,
                42204,
            ),
            ("GET", "/config/s", None, 404, 40408),
            ("GET", "/mode/s", None, 404, 40409),
            ("DELETE", "/config/none", None, 404, 40401),
            ("DELETE", "/subjects/s?permanent=true", None, 404, 40405),
            (
                "DELETE",
                "/subjects/s/versions/1?permanent=true",
                None,
                404,
                40407,
            ),
            (
                "GET",
                "/associations/resources/-/topic?resourceType=topic",
                None,
                404,
                404,
            ),
            ("GET", "/no/such/path", None, 404, 404),
        ];
        for (method, uri, body, status, want) in cases {
            let (got, v) = api.call(method, uri, body).await;
            assert_eq!((got, code(&v)), (status, want), "{method} {uri}: {v}");
            assert!(v["message"].is_string(), "{method} {uri}: {v}");
        }
        // Malformed JSON is a 400 with a JSON error body.
        let (status, text) = api
            .call_raw("POST", "/subjects/s/versions", Some("{not json".into()))
            .await;
        assert_eq!(status, 400);
        assert_eq!(code(&serde_json::from_str(&text).unwrap()), 400);
        // An oversized body is refused before it is parsed, as too large.
        let huge = json!({"schema": "x".repeat(MAX_BODY_BYTES)}).to_string();
        let (status, text) = api
            .call_raw("POST", "/subjects/s/versions", Some(huge))
            .await;
        assert_eq!(status, 413, "{text}");
        assert_eq!(code(&serde_json::from_str(&text).unwrap()), 413, "{text}");
        // The 409 message names the problem like Confluent's.
        let (_, v) = api.register("s", BAD).await;
        let message = v["message"].as_str().unwrap();
        assert!(
            message.starts_with("Schema being registered is incompatible with an earlier schema for subject \"s\", details: [{errorType:'TYPE_MISMATCH'"),
            "{message}"
        );
        assert!(
            message.contains("{oldSchemaVersion: 1}")
                && message.contains("{compatibility: 'BACKWARD'}"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn compatibility_checks_report_verdicts_and_verbose_messages() {
        let api = Api::new();
        api.register("s", V1).await;
        let (status, v) = api
            .call(
                "POST",
                "/compatibility/subjects/s/versions/latest",
                Some(json!({"schema": V2})),
            )
            .await;
        assert_eq!((status, v), (200, json!({"is_compatible": true})));
        let (_, v) = api
            .call(
                "POST",
                "/compatibility/subjects/s/versions?verbose=TRUE",
                Some(json!({"schema": BAD})),
            )
            .await;
        assert_eq!(v["is_compatible"], false);
        let messages: Vec<&str> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        assert!(
            messages[0].contains("TYPE_MISMATCH") && messages[0].contains("/fields/0/type"),
            "{messages:?}"
        );
        // Nothing to check against: compatible.
        let (_, v) = api
            .call(
                "POST",
                "/compatibility/subjects/new/versions/latest",
                Some(json!({"schema": BAD})),
            )
            .await;
        assert_eq!(v, json!({"is_compatible": true}));
        let (status, v) = api
            .call(
                "POST",
                "/compatibility/subjects/s/versions/5",
                Some(json!({"schema": V2})),
            )
            .await;
        assert_eq!((status, code(&v)), (404, 40402));
        // An invalid schema, verbosely: incompatible with the reason.
        let (status, v) = api
            .call(
                "POST",
                "/compatibility/subjects/s/versions?verbose=true",
                Some(json!({"schema": "{}"})),
            )
            .await;
        assert_eq!((status, v["is_compatible"].clone()), (200, json!(false)));
    }

    #[tokio::test]
    async fn config_and_mode_set_read_and_delete() {
        let api = Api::new();
        assert_eq!(
            api.call("GET", "/config", None).await.1,
            json!({"compatibilityLevel": "BACKWARD"})
        );
        assert_eq!(
            api.call("PUT", "/config", Some(json!({"compatibility": "full"})))
                .await
                .1,
            json!({"compatibility": "FULL"})
        );
        assert_eq!(
            api.call("GET", "/config", None).await.1,
            json!({"compatibilityLevel": "FULL"})
        );
        assert_eq!(
            api.call("GET", "/config/s?defaultToGlobal=true", None)
                .await
                .1,
            json!({"compatibilityLevel": "FULL"})
        );
        api.call("PUT", "/config/s", Some(json!({"compatibility": "NONE"})))
            .await;
        assert_eq!(
            api.call("GET", "/config/s", None).await.1,
            json!({"compatibilityLevel": "NONE"})
        );
        // NONE lets an incompatible change through.
        api.register("s", V1).await;
        assert_eq!(api.register("s", BAD).await.0, 200);
        assert_eq!(
            api.call("DELETE", "/config/s", None).await.1,
            json!({"compatibilityLevel": "NONE"})
        );
        assert_eq!(
            api.call("DELETE", "/config", None).await.1,
            json!({"compatibilityLevel": "FULL"})
        );
        assert_eq!(
            api.call("GET", "/config", None).await.1,
            json!({"compatibilityLevel": "BACKWARD"})
        );

        assert_eq!(
            api.call("GET", "/mode", None).await.1,
            json!({"mode": "READWRITE"})
        );
        api.call("PUT", "/mode/s", Some(json!({"mode": "READONLY"})))
            .await;
        let (status, v) = api.register("s", V2).await;
        assert_eq!((status, code(&v)), (422, 42205));
        let (status, v) = api
            .call("PUT", "/mode", Some(json!({"mode": "IMPORT"})))
            .await;
        assert_eq!(
            (status, code(&v)),
            (422, 42205),
            "IMPORT needs an empty registry"
        );
        assert_eq!(
            api.call("PUT", "/mode?force=true", Some(json!({"mode": "IMPORT"})))
                .await
                .1,
            json!({"mode": "IMPORT"})
        );
        assert_eq!(
            api.call("DELETE", "/mode/s", None).await.1,
            json!({"mode": "READONLY"})
        );
        // IMPORT registers with the given id.
        let (status, v) = api
            .call(
                "POST",
                "/subjects/imported/versions",
                Some(json!({"schema": V2, "id": 100, "version": 4})),
            )
            .await;
        assert_eq!((status, v), (200, json!({"id": 100})));
        assert_eq!(
            api.call("GET", "/subjects/imported/versions", None).await.1,
            json!([4])
        );
    }

    #[tokio::test]
    async fn deletes_follow_soft_then_permanent_rules() {
        let api = Api::new();
        api.register("s", V1).await;
        api.register("s", V2).await;
        assert_eq!(
            api.call("DELETE", "/subjects/s/versions/latest", None)
                .await
                .1,
            json!(2)
        );
        assert_eq!(
            api.call("GET", "/subjects/s/versions", None).await.1,
            json!([1])
        );
        assert_eq!(
            api.call("GET", "/subjects/s/versions?deleted=true", None)
                .await
                .1,
            json!([1, 2])
        );
        let (status, v) = api.call("GET", "/subjects/s/versions/2", None).await;
        assert_eq!((status, code(&v)), (404, 40402));
        assert_eq!(
            api.call("GET", "/subjects/s/versions/2?deleted=true", None)
                .await
                .0,
            200
        );
        assert_eq!(api.call("DELETE", "/subjects/s", None).await.1, json!([1]));
        assert_eq!(api.call("GET", "/subjects", None).await.1, json!([]));
        assert_eq!(
            api.call("GET", "/subjects?deletedOnly=true", None).await.1,
            json!(["s"])
        );
        let (status, v) = api.call("DELETE", "/subjects/s", None).await;
        assert_eq!((status, code(&v)), (404, 40404));
        // Soft-deleted schemas still decode old data.
        assert_eq!(api.call("GET", "/schemas/ids/1", None).await.0, 200);
        assert_eq!(
            api.call("DELETE", "/subjects/s?permanent=true", None)
                .await
                .1,
            json!([1, 2])
        );
        let (status, v) = api.call("GET", "/schemas/ids/1", None).await;
        assert_eq!((status, code(&v)), (404, 40403));
        let (status, v) = api.call("DELETE", "/subjects/s", None).await;
        assert_eq!((status, code(&v)), (404, 40401));
        // The next schema gets a new id.
        assert_eq!(api.register("s", BAD).await.1, json!({"id": 3}));
    }

    #[tokio::test]
    async fn references_are_registered_resolved_and_protected() {
        let api = Api::new();
        let address = r#"{"type":"record","name":"Address","namespace":"acme","fields":[{"name":"city","type":"string"}]}"#;
        let order = r#"{"type":"record","name":"Order","namespace":"acme","fields":[{"name":"to","type":"acme.Address"}]}"#;
        api.register("address", address).await;
        let refs = json!([{"name": "acme.Address", "subject": "address", "version": 1}]);
        let (status, v) = api
            .call(
                "POST",
                "/subjects/order/versions",
                Some(json!({"schema": order, "references": refs})),
            )
            .await;
        assert_eq!((status, v), (200, json!({"id": 2})));
        let (_, v) = api.call("GET", "/subjects/order/versions/1", None).await;
        assert_eq!(v["references"], refs);
        assert_eq!(
            api.call("GET", "/subjects/address/versions/1/referencedby", None)
                .await
                .1,
            json!([2])
        );
        let (status, v) = api.call("DELETE", "/subjects/address", None).await;
        assert_eq!((status, code(&v)), (422, 42206));
        let (_, v) = api
            .call("GET", "/schemas/ids/2?format=resolved", None)
            .await;
        assert!(v["schema"].as_str().unwrap().contains("\"city\""), "{v}");
    }

    #[tokio::test]
    async fn ids_written_by_another_registry_are_not_reused_and_metrics_count() {
        let api = Api::new();
        // Another registry process appended a schema with id 1.
        api.log.push(crate::records::Record::Schema(
            "other".into(),
            1,
            Some(crate::records::SchemaValue {
                subject: "other".into(),
                version: 1,
                id: 1,
                schema_type: SchemaType::Avro,
                references: vec![],
                schema: "\"string\"".into(),
                deleted: false,
            }),
        ));
        let (_, v) = api.register("s", V1).await;
        assert_eq!(v, json!({"id": 2}));
        let (_, v) = api.call("GET", "/metrics", None).await;
        let text = v.as_str().unwrap();
        assert!(
            text.contains("runnel_registry_registrations_total 1"),
            "{text}"
        );
        assert!(text.contains("runnel_registry_max_schema_id 2"), "{text}");
    }
}
