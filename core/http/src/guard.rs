//! The checks every request passes before its handler runs, and the JSON
//! body every error answer leaves with.
//!
//! [`RequestGuard`] wraps the router for one connection:
//! 1. a request target longer than `max_uri_bytes` is answered 414;
//! 2. a declared `Content-Length` over `max_body_bytes` is answered 413
//!    without reading the body;
//! 3. the body is read in full, within `body_read_timeout` of the head
//!    (408 after it) and `max_body_bytes` (413 beyond it), so a handler
//!    never waits on a slow client and never sees a partial body;
//! 4. an error answer without a JSON body (axum's 405, an extractor's
//!    plain-text rejection) gets `{"error_code": N, "message": ...}`;
//! 5. an answer given before the body was read, and every 408 and 413,
//!    says `Connection: close` and the connection closes after it, so a
//!    keep-alive client is not left sending into a closed request.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use axum::Router;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::metrics::Reason;
use crate::Shared;

/// Largest error body read back to be wrapped in JSON.
const MAX_WRAPPED_ERROR_BYTES: usize = 4096;

/// The router of one connection behind the request checks.
#[derive(Clone)]
pub(crate) struct RequestGuard {
    pub router: Router,
    pub shared: Arc<Shared>,
    pub peer: IpAddr,
}

impl tower::Service<Request<Incoming>> for RequestGuard {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let guard = self.clone();
        Box::pin(async move { Ok(guard.handle(request).await) })
    }
}

/// Why a body could not be read.
enum BodyError {
    TooLarge,
    Timeout,
    Broken(hyper::Error),
}

/// Bytes of the request target as the client sent it.
fn uri_bytes(uri: &Uri) -> usize {
    uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len())
}

fn declared_length(request: &Request<Incoming>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Reads a whole body within `limit` bytes and by `deadline`. A body of
/// one chunk is not copied.
async fn read_body(
    mut body: Incoming,
    limit: usize,
    deadline: Instant,
) -> Result<Bytes, BodyError> {
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Broken(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry nothing the APIs use.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(BodyError::TooLarge);
        }
        match (&first, &mut joined) {
            (None, _) => first = Some(data),
            (Some(f), None) => {
                let mut all = BytesMut::with_capacity(total);
                all.extend_from_slice(f);
                all.extend_from_slice(&data);
                joined = Some(all);
            }
            (Some(_), Some(all)) => all.extend_from_slice(&data),
        }
    }
    Ok(joined.map(BytesMut::freeze).or(first).unwrap_or_default())
}

impl RequestGuard {
    async fn handle(self, request: Request<Incoming>) -> Response<Body> {
        let limits = &self.shared.limits;
        // The body's time runs from the moment its head was read.
        let deadline = Instant::now() + limits.body_read_timeout;
        let has_body = !hyper::body::Body::is_end_stream(request.body());
        let uri = uri_bytes(request.uri());
        if uri > limits.max_uri_bytes {
            return self.refuse(
                Reason::UriTooLong,
                StatusCode::URI_TOO_LONG,
                has_body,
                format!(
                    "URI too long: the request target has {uri} bytes; at most {} are accepted",
                    limits.max_uri_bytes
                ),
            );
        }
        if let Some(length) = declared_length(&request) {
            if length > limits.max_body_bytes as u64 {
                return self.refuse(
                    Reason::BodyTooLarge,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    true,
                    format!(
                        "Request body too large: {length} bytes declared; at most {} are accepted",
                        limits.max_body_bytes
                    ),
                );
            }
        }
        let (parts, body) = request.into_parts();
        let body = match read_body(body, limits.max_body_bytes, deadline).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return self.refuse(
                    Reason::BodyTooLarge,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    true,
                    format!(
                        "Request body too large: at most {} bytes are accepted",
                        limits.max_body_bytes
                    ),
                )
            }
            Err(BodyError::Timeout) => {
                return self.refuse(
                    Reason::BodyTimeout,
                    StatusCode::REQUEST_TIMEOUT,
                    true,
                    format!(
                        "Request timeout: the body did not arrive within {} ms",
                        limits.body_read_timeout.as_millis()
                    ),
                )
            }
            Err(BodyError::Broken(e)) => {
                return self.refuse(
                    Reason::Malformed,
                    StatusCode::BAD_REQUEST,
                    true,
                    format!("Bad request: the body could not be read: {e}"),
                )
            }
        };
        let request = Request::from_parts(parts, Body::from(body));
        let Ok(response) = self.router.clone().oneshot(request).await;
        self.finish(response).await
    }

    /// Counts and logs a refused request and answers it.
    fn refuse(
        &self,
        reason: Reason,
        status: StatusCode,
        close: bool,
        message: String,
    ) -> Response<Body> {
        self.shared
            .metrics
            .reject(reason, self.peer, format_args!("{message}"));
        let mut response = self.shared.error(status, &message);
        if close {
            close_after(&mut response);
        }
        response
    }

    /// Gives an error answer without a JSON body one, and closes the
    /// connection after a 408 or 413 whoever gave it.
    async fn finish(&self, response: Response<Body>) -> Response<Body> {
        let status = response.status();
        if !(status.is_client_error() || status.is_server_error()) {
            return response;
        }
        let is_json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        let mut response = if is_json {
            response
        } else {
            let (mut parts, body) = response.into_parts();
            let text = axum::body::to_bytes(body, MAX_WRAPPED_ERROR_BYTES)
                .await
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            let message = match text.trim() {
                "" => format!(
                    "HTTP {} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("Error")
                ),
                text => text.to_string(),
            };
            let json = self.shared.error(status, &message);
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.remove(header::TRANSFER_ENCODING);
            for (name, value) in json.headers() {
                parts.headers.insert(name, value.clone());
            }
            Response::from_parts(parts, json.into_body())
        };
        if matches!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        ) {
            close_after(&mut response);
        }
        response
    }
}

fn close_after(response: &mut Response<Body>) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}
