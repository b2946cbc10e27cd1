//! The HTTP server of Runnel's REST APIs — the schema registry (:8081) and
//! the connect worker (:8083) — with a limit on everything a client
//! controls. Each API passes its axum `Router` to [`serve`]; this crate
//! knows no endpoint.
//!
//! What a client meets, in order:
//! - **Accept.** At most [`Limits::max_connections`] connections, and
//!   [`Limits::max_connections_per_ip`] from one address; a connection
//!   beyond either is answered 503 (or 429) with a JSON body and closed.
//! - **Head.** hyper's HTTP/1 parser with its own options:
//!   `header_read_timeout` (a request line and headers must arrive within
//!   [`Limits::header_read_timeout`]; an idle keep-alive connection is
//!   closed after as long), `max_header_size` ([`Limits::max_head_bytes`])
//!   and `max_headers`. The answers hyper gives on its own (400, 414, 431)
//!   get the JSON error body on their way out ([`io`]).
//! - **Request.** [`guard`]: URI length (414), declared and actual body
//!   size (413), the whole body within [`Limits::body_read_timeout`] (408)
//!   before the handler runs; answers that leave a body unread, and every
//!   408 and 413, say `Connection: close`. Error answers without a JSON
//!   body (axum's 405, extractor rejections) get one.
//! - **Answer.** A client that reads nothing of its answer for the body
//!   read timeout is cut.
//!
//! Every refusal is counted in [`Metrics`] (rendered on each server's
//! `/metrics`) and logged at WARN at most once per reason every ten
//! seconds.

mod guard;
mod io;
pub mod metrics;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use axum::Router;
use bytes::Bytes;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

pub use metrics::{Metrics, Reason};

/// hyper's smallest read buffer.
const MIN_BUF_BYTES: usize = 8192;

/// How long a shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What one server accepts from its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest time a request line and headers may take to arrive (counted
    /// from the moment the server waits for them, so it is also how long an
    /// idle keep-alive connection stays open).
    pub header_read_timeout: Duration,
    /// Longest time a request body may take to arrive after its head; also
    /// how long an answer may wait for a client that does not read it.
    pub body_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one client address.
    pub max_connections_per_ip: usize,
    /// Longest request target (path and query).
    pub max_uri_bytes: usize,
    /// Largest request line and headers together.
    pub max_head_bytes: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_ip: 256,
            max_uri_bytes: 8 << 10,
            max_head_bytes: 64 << 10,
            max_headers: 100,
            max_body_bytes: 1 << 20,
        }
    }
}

/// One server: its name in messages, limits, error content type, counters.
pub struct Server {
    /// "schema registry", "connect": named in log lines and refusals.
    pub name: &'static str,
    pub limits: Limits,
    /// `Content-Type` of the JSON error bodies.
    pub error_content_type: &'static str,
    pub metrics: Arc<Metrics>,
}

/// What the connections of one server share.
pub(crate) struct Shared {
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    content_type: HeaderValue,
}

/// `{"error_code": status, "message": message}`: the error body of every
/// Runnel REST API.
pub fn error_body(status: StatusCode, message: &str) -> String {
    json!({"error_code": status.as_u16(), "message": message}).to_string()
}

impl Shared {
    /// An error answer with the JSON body.
    pub(crate) fn error(&self, status: StatusCode, message: &str) -> Response<Body> {
        let mut response = Response::new(Body::from(error_body(status, message)));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, self.content_type.clone());
        response
    }

    /// A whole answer on the wire, for the paths that write bytes
    /// themselves (refused connections, hyper's automatic answers).
    fn raw_error(&self, status: StatusCode, message: &str) -> Bytes {
        let body = error_body(status, message);
        Bytes::from(format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self.content_type.to_str().unwrap_or("application/json"),
            body.len(),
        ))
    }

    /// The JSON answer that replaces hyper's empty one of `status`.
    fn automatic_answer(&self, status: u16) -> Bytes {
        let l = &self.limits;
        let (status, message) = match status {
            414 => (
                StatusCode::URI_TOO_LONG,
                format!(
                    "URI too long: at most {} bytes are accepted",
                    l.max_uri_bytes
                ),
            ),
            431 => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "Request header fields too large: the request line and headers must fit in {} bytes and {} fields",
                    l.max_head_bytes, l.max_headers
                ),
            ),
            _ => (
                StatusCode::BAD_REQUEST,
                "Bad request: the request line or headers are not valid HTTP/1.1".to_string(),
            ),
        };
        self.raw_error(status, &message)
    }
}

/// Connections open, in total and by client address.
#[derive(Default)]
struct Gate {
    open: Mutex<(usize, std::collections::HashMap<IpAddr, usize>)>,
}

/// One admitted connection; leaving frees its place.
struct Admission {
    gate: Arc<Gate>,
    ip: IpAddr,
    metrics: Arc<Metrics>,
}

impl Gate {
    fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &Limits,
        metrics: &Arc<Metrics>,
    ) -> Result<Admission, Reason> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_ip) = &mut *open;
        if *total >= limits.max_connections {
            return Err(Reason::TooManyConnections);
        }
        let from_ip = by_ip.entry(ip).or_default();
        if *from_ip >= limits.max_connections_per_ip {
            return Err(Reason::TooManyConnectionsFromAddress);
        }
        *from_ip += 1;
        *total += 1;
        metrics.connection_opened();
        Ok(Admission {
            gate: self.clone(),
            ip,
            metrics: metrics.clone(),
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_ip) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
        self.metrics.connection_closed();
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets
/// requests in flight finish (for up to ten seconds).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    server: Server,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        content_type: HeaderValue::from_static(server.error_content_type),
        limits: server.limits,
        metrics: server.metrics,
    });
    let gate = Arc::new(Gate::default());
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of
                    // spinning; the connections that hold them will close.
                    tracing::debug!(server = server.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        match gate.admit(peer.ip(), &shared.limits, &shared.metrics) {
            Ok(admission) => {
                connections.spawn(connection(
                    stream,
                    peer,
                    router.clone(),
                    shared.clone(),
                    admission,
                    stopping.clone(),
                    server.name,
                ));
            }
            Err(reason) => refuse(&stream, peer, reason, &shared, server.name),
        }
    }
    let _ = stop.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            server = server.name,
            left = connections.len(),
            "closing connections still busy after the shutdown grace"
        );
    }
    Ok(())
}

/// Answers a connection over a limit and closes it. The answer is small
/// and the socket new, so one non-blocking write sends it.
fn refuse(stream: &TcpStream, peer: SocketAddr, reason: Reason, shared: &Shared, name: &str) {
    let l = &shared.limits;
    let (status, message) = match reason {
        Reason::TooManyConnectionsFromAddress => (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many connections: the {name} serves at most {} connections from one address ({})",
                l.max_connections_per_ip,
                peer.ip()
            ),
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "Too many connections: the {name} serves at most {} connections at once; try again later",
                l.max_connections
            ),
        ),
    };
    shared
        .metrics
        .reject(reason, peer.ip(), format_args!("{message}"));
    let _ = stream.try_write(&shared.raw_error(status, &message));
}

/// Serves one connection, then counts how it ended.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    shared: Arc<Shared>,
    _admission: Admission,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    name: &'static str,
) {
    // Small request/answer exchanges: do not let Nagle hold answers back.
    let _ = stream.set_nodelay(true);
    let state = Arc::new(io::ConnState::default());
    let answers = shared.clone();
    let io = io::GuardedIo::new(
        stream,
        state.clone(),
        Arc::new(move |status| answers.automatic_answer(status)),
        shared.limits.body_read_timeout,
    );
    let service = guard::RequestGuard {
        router,
        shared: shared.clone(),
        peer: peer.ip(),
    };
    let limits = &shared.limits;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_head_bytes)
        .max_buf_size(limits.max_head_bytes.max(MIN_BUF_BYTES))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = async { drop(stopping.wait_for(|stop| *stop).await) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    let Err(e) = result else { return };
    let metrics = &shared.metrics;
    let ip = peer.ip();
    let automatic = state.automatic_answer.load(Ordering::Relaxed);
    if e.is_timeout() {
        if state.read_since_write.load(Ordering::Relaxed) {
            metrics.reject(
                Reason::HeaderTimeout,
                ip,
                format_args!(
                    "closed a connection whose request line and headers did not arrive within {} ms",
                    limits.header_read_timeout.as_millis()
                ),
            );
        } else {
            metrics.idle_closed();
        }
    } else if automatic == 414 {
        metrics.reject(Reason::UriTooLong, ip, format_args!("URI too long: {e}"));
    } else if automatic == 431 {
        metrics.reject(
            Reason::HeadTooLarge,
            ip,
            format_args!(
                "request head over {} bytes or {} fields",
                limits.max_head_bytes, limits.max_headers
            ),
        );
    } else if automatic != 0 || e.is_parse() {
        metrics.reject(
            Reason::Malformed,
            ip,
            format_args!("malformed request: {e}"),
        );
    } else if state.write_timed_out.load(Ordering::Relaxed) {
        metrics.reject(
            Reason::WriteTimeout,
            ip,
            format_args!(
                "cut a client that read nothing of its answer for {} ms",
                limits.body_read_timeout.as_millis()
            ),
        );
    } else {
        tracing::debug!(server = name, peer = %peer, error = %e, "connection ended");
    }
}

#[cfg(test)]
mod tests;
