//! The server over real sockets with a two-route router: every limit
//! answered with its status and the JSON body, stalled clients cut after
//! their timeout while others are served.

use std::time::{Duration, Instant};

use axum::routing::{get, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

struct TestServer {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(limits: Limits) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/echo", post(|body: Bytes| async move { body }));
    let metrics = Metrics::new("test server");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server {
        name: "test server",
        limits,
        error_content_type: "application/json",
        metrics: metrics.clone(),
    };
    tokio::spawn(serve(listener, router, server, async move {
        let _ = stopped.await;
    }));
    TestServer {
        addr,
        metrics,
        _stop: stop,
    }
}

/// An answer as read off the socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// The JSON error body's code, checked to match the status.
    fn error_code(&self) -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"));
        assert!(v["message"].is_string(), "{self:?}");
        let code = v["error_code"].as_u64().unwrap();
        assert_eq!(code, self.status as u64, "{self:?}");
        code
    }
}

/// Reads one answer: the head, then `content-length` bytes of body.
async fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(10);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, stream.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "connection closed before an answer: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head[9..12].parse().unwrap();
    let mut answer = Answer {
        status,
        head,
        body: String::new(),
    };
    let length: usize = answer
        .header("content-length")
        .map(|v| v.parse().unwrap())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed in the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    answer.body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    answer
}

async fn send(addr: SocketAddr, raw: &[u8]) -> (TcpStream, Answer) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let answer = read_answer(&mut stream).await;
    (stream, answer)
}

/// Whether the server closes `stream` within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

fn short_timeouts() -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(400),
        body_read_timeout: Duration::from_millis(400),
        ..Limits::default()
    }
}

#[tokio::test]
async fn half_sent_requests_are_cut_after_their_timeout_while_others_are_answered() {
    let server = start(short_timeouts()).await;
    let mut stalled = Vec::new();
    for i in 0..60 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let raw: &[u8] = if i % 2 == 0 {
            // The head is never finished.
            b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: "
        } else {
            // The head is done, the body is not.
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc"
        };
        s.write_all(raw).await.unwrap();
        stalled.push(s);
    }
    let started = Instant::now();
    let (_, answer) = send(server.addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "hello"));
    assert!(started.elapsed() < Duration::from_millis(300));
    for (i, s) in stalled.iter_mut().enumerate() {
        if i % 2 == 1 {
            let answer = read_answer(s).await;
            assert_eq!(answer.error_code(), 408);
            assert_eq!(answer.header("connection").as_deref(), Some("close"));
        }
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "connection {i} stayed open"
        );
    }
    assert_eq!(server.metrics.rejected(Reason::HeaderTimeout), 30);
    assert_eq!(server.metrics.rejected(Reason::BodyTimeout), 30);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_without_counting_as_hostile() {
    let server = start(short_timeouts()).await;
    let (mut s, answer) = send(server.addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(answer.status, 200);
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    assert_eq!(server.metrics.rejected(Reason::HeaderTimeout), 0);
    assert!(server
        .metrics
        .render_prometheus("t")
        .contains("t_http_idle_closed_total 1\n"));
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_with_json_and_connection_close() {
    let limits = Limits {
        max_body_bytes: 1000,
        ..Limits::default()
    };
    let server = start(limits).await;
    // Declared too large: refused before a byte of it is read.
    let (mut s, answer) = send(
        server.addr,
        b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n",
    )
    .await;
    assert_eq!(answer.error_code(), 413);
    assert_eq!(answer.header("connection").as_deref(), Some("close"));
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    // Chunked, found too large while reading.
    let chunk = "x".repeat(600);
    let raw = format!(
        "POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let (_, answer) = send(server.addr, raw.as_bytes()).await;
    assert_eq!(answer.error_code(), 413);
    assert_eq!(answer.header("connection").as_deref(), Some("close"));
    // Within the limit, in several chunks: handed over whole.
    let raw = "POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
    let (_, answer) = send(server.addr, raw.as_bytes()).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "abcdef"));
    assert_eq!(server.metrics.rejected(Reason::BodyTooLarge), 2);
}

#[tokio::test]
async fn long_uris_and_large_heads_are_414_and_431_with_json() {
    let server = start(Limits::default()).await;
    // Over our URI limit: answered by the guard.
    let raw = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(10_000));
    let (_, answer) = send(server.addr, raw.as_bytes()).await;
    assert_eq!(answer.error_code(), 414);
    // Over hyper's own URI limit (64 KiB): hyper's answer, with our body.
    let raw = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(100_000));
    let (_, answer) = send(server.addr, raw.as_bytes()).await;
    assert!(matches!(answer.error_code(), 414 | 431), "{answer:?}");
    assert_eq!(answer.header("connection").as_deref(), Some("close"));
    // One huge header, and too many headers.
    let raw = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "b".repeat(70_000)
    );
    let (_, answer) = send(server.addr, raw.as_bytes()).await;
    assert_eq!(answer.error_code(), 431);
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let raw = format!("GET / HTTP/1.1\r\nhost: x\r\n{many}\r\n");
    let (_, answer) = send(server.addr, raw.as_bytes()).await;
    assert_eq!(answer.error_code(), 431);
    // Not HTTP at all.
    let (_, answer) = send(server.addr, b"HELLO\x01 there\r\n\r\n").await;
    assert_eq!(answer.error_code(), 400);
    // The server still answers.
    let (_, answer) = send(server.addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(answer.status, 200);
    let m = &server.metrics;
    assert_eq!(
        m.rejected(Reason::UriTooLong) + m.rejected(Reason::HeadTooLarge),
        4
    );
    assert_eq!(m.rejected(Reason::Malformed), 1);
}

#[tokio::test]
async fn a_wrong_method_is_405_with_json_and_the_allowed_methods() {
    let server = start(Limits::default()).await;
    let (_, answer) = send(server.addr, b"DELETE /echo HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(answer.error_code(), 405);
    assert_eq!(
        answer.header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(
        answer.header("allow").is_some_and(|a| a.contains("POST")),
        "{answer:?}"
    );
    // A keep-alive connection goes on after it.
    let (mut s, _) = send(server.addr, b"DELETE /echo HTTP/1.1\r\nhost: x\r\n\r\n").await;
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut s).await.status, 200);
}

#[tokio::test]
async fn connections_over_the_per_address_limit_are_refused_with_json() {
    let limits = Limits {
        max_connections_per_ip: 3,
        ..Limits::default()
    };
    let server = start(limits).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let (s, answer) = send(server.addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert_eq!(answer.status, 200);
        held.push(s);
    }
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let answer = read_answer(&mut s).await;
    assert_eq!(answer.error_code(), 429);
    assert_eq!(
        server
            .metrics
            .rejected(Reason::TooManyConnectionsFromAddress),
        1
    );
    // A freed place is taken again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, answer) = send(
            server.addr,
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        if answer.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
