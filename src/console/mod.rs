//! The web console: a single-page app at `/` of the admin listener and the
//! JSON API behind it under `/api/...`.
//!
//! The console is a *client* of this process's other services, never a
//! shortcut into them: topics, records and groups go over the Kafka
//! protocol to the broker's own listener (`Services::kafka`, through
//! librdkafka and `runnel_core::client`), so a write from the console gets
//! exactly the checks any Kafka client gets (topic name rules, config
//! validation, group state); the schema registry and the connect worker are
//! reached through their REST APIs. Whatever depends on where a partition
//! is led or a group coordinated (offsets, lag, sizes on disk) is asked of
//! the right broker through `runnel_core::client::ClusterClient`, so it is
//! right in a cluster too. The only in-process read is the broker's
//! metrics page (`exposition::render`), the same text `/metrics` serves,
//! for this broker's throughput counters and disk.
//!
//! Protections (the console listens on loopback by default, where any web
//! page the user visits could try to reach it):
//! - every request must name a loopback host or an IP literal in `Host`
//!   (a DNS-rebinding page's requests carry the attacker's host name);
//! - every non-GET request must carry `Content-Type: application/json` and
//!   `X-Runnel-Console: 1` (a cross-site form or a "simple" fetch can set
//!   neither without a CORS preflight, which this server never grants), and
//!   an `Origin`, when present, must be this server's own.
//!
//! Limits: every upstream call has a timeout, a browse returns at most
//! [`messages::MAX_MESSAGES`] records and shows at most
//! [`messages::MAX_SHOWN_BYTES`] of a key or value, proxied answers are cut
//! at [`upstream::MAX_ANSWER_BYTES`].

mod assets;
mod groups;
mod kafka;
mod messages;
mod pipelines;
mod topics;
mod transforms;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use serde_json::json;

use crate::admin::hosts::{host_allowed, AllowedHosts};
use crate::admin::state::AdminState;

/// The header every write must carry (a cross-site page cannot set it
/// without a CORS preflight).
pub const CONSOLE_HEADER: &str = "x-runnel-console";

/// Longest wait for any one upstream call (Kafka request, registry or
/// connect answer).
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    pub admin: AdminState,
    pub http: reqwest::Client,
    pub registry: Option<Arc<runnel_schema_registry::client::RegistryClient>>,
    producer: Arc<tokio::sync::OnceCell<rdkafka::producer::FutureProducer>>,
}

/// The console's routes: the app's assets and `/api/...`.
pub fn router(admin: AdminState) -> Router {
    let hosts = admin.console_hosts.clone();
    let registry = admin.services.registry_url.as_deref().and_then(|url| {
        runnel_schema_registry::client::RegistryClient::with_timeout(url, UPSTREAM_TIMEOUT)
            .ok()
            .map(Arc::new)
    });
    let http = reqwest::Client::builder()
        .timeout(UPSTREAM_TIMEOUT)
        .connect_timeout(Duration::from_secs(3))
        .build()
        .unwrap_or_default();
    let console = Console {
        admin,
        http,
        registry,
        producer: Arc::new(tokio::sync::OnceCell::new()),
    };
    let api = Router::new()
        .route("/cluster", get(kafka::cluster))
        .route("/topics", get(topics::list).post(topics::create))
        .route(
            "/topics/{name}",
            get(topics::describe).delete(topics::delete),
        )
        .route("/topics/{name}/configs", post(topics::alter_configs))
        .route(
            "/topics/{name}/messages",
            get(messages::browse).post(messages::produce),
        )
        .route("/groups", get(groups::list))
        .route("/groups/{id}", get(groups::describe))
        .route("/groups/{id}/reset-offsets", post(groups::reset_offsets))
        .route("/transforms", get(transforms::transforms))
        .route("/pipelines", get(pipelines::pipelines))
        .route("/registry", any(upstream::registry))
        .route("/registry/{*path}", any(upstream::registry))
        .route("/connect", any(upstream::connect))
        .route("/connect/{*path}", any(upstream::connect))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such API endpoint") })
        .with_state(console);
    Router::new()
        .nest("/api", api)
        .route("/", get(assets::index))
        .route("/console/{file}", get(assets::file))
        .layer(axum::middleware::from_fn_with_state(hosts, guard))
}

/// An API error: `{"error_code", "message"}` with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    /// A failure of the broker or another upstream service.
    pub fn upstream(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, message)
    }
    pub fn off(service: &str) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the {service} is off in this process"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            runnel_http::error_body(self.status, &self.message),
        )
            .into_response()
    }
}

impl From<runnel_core::client::ClientError> for ApiError {
    fn from(e: runnel_core::client::ClientError) -> ApiError {
        ApiError::upstream(format!("broker: {}", error_chain(&e)))
    }
}

impl From<runnel_core::client::ClusterError> for ApiError {
    fn from(e: runnel_core::client::ClusterError) -> ApiError {
        match e {
            runnel_core::client::ClusterError::Client(e) => e.into(),
            runnel_core::client::ClusterError::Refused(r) => {
                ApiError::upstream(format!("broker: {r}"))
            }
        }
    }
}

impl From<rdkafka::error::KafkaError> for ApiError {
    fn from(e: rdkafka::error::KafkaError) -> ApiError {
        ApiError::upstream(format!("broker: {e}"))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

pub type ApiResult<T> = Result<T, ApiError>;

fn refuse(status: StatusCode, message: &str) -> Response {
    ApiError::new(status, message).into_response()
}

/// The console's request checks (module docs): Host on every request;
/// content type, console header and Origin on every write.
async fn guard(
    axum::extract::State(allowed): axum::extract::State<AllowedHosts>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let headers = request.headers();
    let Some(host) = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
    else {
        return refuse(StatusCode::BAD_REQUEST, "a Host header is required");
    };
    if !host_allowed(&host, &allowed) {
        return refuse(
            StatusCode::FORBIDDEN,
            "the console answers only under a loopback name, an IP address or a name of --admin-allowed-hosts (Host header refused)",
        );
    }
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        if let Err(message) = check_write(headers, &host) {
            return refuse(StatusCode::FORBIDDEN, &message);
        }
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn check_write(headers: &HeaderMap, host: &str) -> Result<(), String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" {
        return Err("writes need a JSON body (Content-Type: application/json)".into());
    }
    if headers.get(CONSOLE_HEADER).and_then(|v| v.to_str().ok()) != Some("1") {
        return Err("writes need the header X-Runnel-Console: 1".into());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let own = [format!("http://{host}"), format!("https://{host}")];
        if !own.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            return Err(format!(
                "Origin '{origin}' is not this console's (http://{host})"
            ));
        }
    }
    Ok(())
}

/// The answer to a write that has nothing more to say than what it did.
pub fn done(what: &str) -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "ok": true, "message": what }))
}
