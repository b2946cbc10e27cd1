//! The schema registry's and the connect worker's REST APIs, passed
//! through under `/api/registry/...` and `/api/connect/...`: same method,
//! path, query and JSON body, answered with the service's own status and
//! body (its Confluent / Kafka Connect error codes included). A service
//! this process does not run answers 503.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{ApiError, Console};

/// Largest answer passed back from a service.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;

pub async fn registry(State(console): State<Console>, request: Request) -> Response {
    let base = console.admin.services.registry_url.clone();
    pass(&console, base, "schema registry", "/api/registry", request).await
}

pub async fn connect(State(console): State<Console>, request: Request) -> Response {
    let base = console.admin.services.connect_url.clone();
    pass(&console, base, "connect worker", "/api/connect", request).await
}

async fn pass(
    console: &Console,
    base: Option<String>,
    service: &str,
    prefix: &str,
    request: Request,
) -> Response {
    let Some(base) = base else {
        return ApiError::off(service).into_response();
    };
    let (parts, body) = request.into_parts();
    // The nested router sees the path without `/api`.
    let path = parts.uri.path();
    let rest = path
        .strip_prefix(prefix)
        .or_else(|| path.strip_prefix(prefix.trim_start_matches("/api")))
        .unwrap_or(path);
    let rest = if rest.is_empty() { "/" } else { rest };
    let mut url = format!("{}{rest}", base.trim_end_matches('/'));
    if let Some(q) = parts.uri.query() {
        url.push('?');
        url.push_str(q);
    }
    let body: Bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => return ApiError::bad_request("unreadable request body").into_response(),
    };
    let method = match reqwest::Method::from_bytes(parts.method.as_str().as_bytes()) {
        Ok(m) => m,
        Err(_) => return ApiError::bad_request("unknown method").into_response(),
    };
    let mut upstream = console
        .http
        .request(method, &url)
        .header(reqwest::header::ACCEPT, "application/json");
    if !body.is_empty() {
        upstream = upstream
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let answer = match upstream.send().await {
        Ok(a) => a,
        Err(e) if e.is_timeout() => {
            return ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the {service} did not answer in time"),
            )
            .into_response()
        }
        Err(_) => {
            return ApiError::upstream(format!("cannot reach the {service} at {base}"))
                .into_response()
        }
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/json"));
    let mut answer = answer;
    let mut out = Vec::new();
    loop {
        match answer.chunk().await {
            Ok(None) => break,
            Ok(Some(c)) if out.len() + c.len() <= MAX_ANSWER_BYTES => out.extend_from_slice(&c),
            Ok(Some(_)) => {
                return ApiError::upstream(format!(
                    "the {service}'s answer is larger than {MAX_ANSWER_BYTES} bytes"
                ))
                .into_response()
            }
            Err(_) => {
                return ApiError::upstream(format!("the {service}'s answer was cut"))
                    .into_response()
            }
        }
    }
    (status, [(header::CONTENT_TYPE, content_type)], out).into_response()
}
