//! The broker's admin listener (`--admin-addr`, 127.0.0.1:9644 by default,
//! Redpanda's admin port): `/metrics` in Prometheus' text format — the
//! broker's counters, request latencies per API, every partition it holds,
//! the lag of the groups it coordinates, its disk, its broker-side WASM
//! transforms, and this server's own HTTP counters — and the readiness probe `/v1/status/ready`. It runs
//! whether or not the schema registry and the connect worker do (they
//! keep their own `/metrics` on their ports).
//!
//! The listener is on the same HTTP server as the REST APIs
//! (`runnel-http`: connection, header, body and time limits).

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use runnel_core::broker::Broker;
use runnel_core::transforms::TransformManager;
use serde_json::json;

/// Name of the server in log lines and refusals.
const SERVER_NAME: &str = "admin";

/// Prometheus' text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Largest request body the admin API reads (topic configs, produced
/// records from the console).
const MAX_BODY_BYTES: usize = 4 << 20;

pub mod hosts;
pub mod state;

pub use state::{AdminState, Services};

/// The admin listener's routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/status/ready", get(ready))
        .with_state(state.clone())
        .merge(crate::console::router(state))
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let broker = state.broker.clone();
    // A scrape reads every partition's log size and offsets under their
    // locks: off the async workers.
    let page =
        tokio::task::spawn_blocking(move || runnel_core::broker::exposition::render(&broker))
            .await
            .unwrap_or_default();
    let mut page = page;
    page.push_str(&state.transforms.render_prometheus());
    page.push_str(&state.http.render_prometheus("runnel_admin"));
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], page)
}

/// 200 once the broker serves (it does by the time this listener runs),
/// 503 while its storage refuses writes for a full disk; the body names
/// the node and where its APIs are.
async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    let disk_full = state.broker.metrics().storage.disk_full();
    let services = &state.services;
    let body = json!({
        "status": if disk_full { "disk full" } else { "ready" },
        "node_id": state.broker.node_id(),
        "kafka": services.kafka,
        "schema_registry": services.registry_url,
        "connect": services.connect_url,
    });
    let status = if disk_full {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, axum::Json(body))
}

/// Serves the admin routes on `listener` until `shutdown`.
pub async fn serve(
    broker: Arc<Broker>,
    transforms: Arc<TransformManager>,
    services: Services,
    console_hosts: hosts::AllowedHosts,
    listener: tokio::net::TcpListener,
    limits: runnel_http::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let http = runnel_http::Metrics::new(SERVER_NAME);
    let app = router(AdminState {
        broker,
        transforms,
        http: http.clone(),
        services,
        console_hosts,
    });
    let server = runnel_http::Server {
        name: SERVER_NAME,
        limits: runnel_http::Limits {
            max_body_bytes: MAX_BODY_BYTES,
            ..limits
        },
        error_content_type: "application/json",
        metrics: http,
    };
    runnel_http::serve(listener, app, server, shutdown)
        .await
        .context("serving the admin listener")
}
