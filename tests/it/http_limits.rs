//! The schema registry's and the connect worker's HTTP ports against slow
//! and malformed clients: half-sent requests are cut after the read
//! timeouts while other clients are answered at once; every answer the
//! HTTP layer gives on its own (405, 408, 413, 414, 431) carries the JSON
//! error body; refusals are counted on each server's `/metrics`.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::TestBroker;

/// One answer read off a raw socket.
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

    /// The status, after checking that the body is the JSON error body
    /// with the same `error_code`.
    fn json_error(&self) -> u16 {
        let v: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the error body is not JSON ({e}): {self:?}"));
        assert_eq!(v["error_code"], self.status, "{self:?}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{self:?}"
        );
        self.status
    }
}

/// Reads more of an answer into `buf`, by `deadline`.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) {
    let mut chunk = [0u8; 16384];
    let left = deadline.saturating_duration_since(Instant::now());
    let n = tokio::time::timeout(left, stream.read(&mut chunk))
        .await
        .expect("an answer within 10 s")
        .expect("read the answer");
    assert!(
        n > 0,
        "closed before a whole answer: {:?}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&chunk[..n]);
}

/// Reads one answer (head, then `content-length` bytes), within 10 s.
async fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(stream, &mut buf, deadline).await;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut answer = Answer {
        status: head[9..12].parse().expect("a status code"),
        head,
        body: String::new(),
    };
    let length: usize = answer
        .header("content-length")
        .map(|v| v.parse().unwrap())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        read_more(stream, &mut buf, deadline).await;
    }
    answer.body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    answer
}

async fn exchange(port: u16, raw: &[u8]) -> (TcpStream, Answer) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let answer = read_answer(&mut stream).await;
    (stream, answer)
}

async fn get(port: u16, path: &str) -> Answer {
    let raw = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    exchange(port, raw.as_bytes()).await.1
}

/// Waits until the server on `port` answers `GET /` (the registry and the
/// worker start after the broker).
async fn ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
            let raw = b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
            if s.write_all(raw).await.is_ok() {
                let mut buf = [0u8; 12];
                if let Ok(Ok(12)) =
                    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await
                {
                    if &buf[9..12] == b"200" {
                        return;
                    }
                }
            }
        }
        assert!(Instant::now() < deadline, "port {port} never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the server closes `stream` within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
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

/// The value of `name` in a Prometheus text.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn half_sent_requests_are_cut_after_the_read_timeouts_while_others_are_answered_at_once() {
    let broker = TestBroker::start_with(&[
        "--http-header-read-timeout-ms",
        "3000",
        "--http-body-read-timeout-ms",
        "3000",
    ]);
    let servers = [
        (broker.registry_port, "/subjects", "runnel_registry"),
        (broker.connect_port, "/connectors", "runnel_connect"),
    ];
    for (port, _, _) in servers {
        ready(port).await;
    }
    for (port, path, prefix) in servers {
        // 120 heads never finished and 120 bodies never finished.
        let mut stalled = Vec::new();
        for i in 0..240 {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let raw = if i % 2 == 0 {
                format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nx-never-ends: ")
            } else {
                format!(
                    "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"name\":"
                )
            };
            s.write_all(raw.as_bytes()).await.unwrap();
            stalled.push(s);
        }
        let opened = Instant::now();
        // Everyone else is served at once meanwhile: well before the
        // stalled requests' timeouts (3 s), with room for a loaded machine.
        for _ in 0..5 {
            let asked = Instant::now();
            let answer = get(port, path).await;
            assert_eq!(answer.status, 200, "{answer:?}");
            assert!(
                asked.elapsed() < Duration::from_secs(2),
                "{path} took {:?} next to 240 stalled requests",
                asked.elapsed()
            );
        }
        for (i, s) in stalled.iter_mut().enumerate() {
            if i % 2 == 1 {
                let answer = read_answer(s).await;
                assert_eq!(answer.json_error(), 408, "{answer:?}");
                assert_eq!(answer.header("connection").as_deref(), Some("close"));
            }
            assert!(
                closed_within(s, Duration::from_secs(15)).await,
                "stalled request {i} on {path} was not cut"
            );
        }
        let waited = opened.elapsed();
        assert!(
            waited < Duration::from_secs(12),
            "cutting 240 stalled requests took {waited:?}"
        );
        let metrics = get(port, "/metrics").await.body;
        let rejected = |reason: &str| {
            metric(
                &metrics,
                &format!("{prefix}_http_rejected_total{{reason=\"{reason}\"}}"),
            )
        };
        assert_eq!(rejected("header_timeout"), Some(120), "{metrics}");
        assert_eq!(rejected("body_timeout"), Some(120), "{metrics}");
    }
    // A thousand refusals are not a thousand log lines.
    let warnings = broker
        .log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("header_timeout"))
        .count();
    assert!(
        (1..=4).contains(&warnings),
        "{warnings} lines:\n{}",
        broker.log()
    );
}

#[tokio::test]
async fn answers_of_the_http_layer_carry_the_json_error_body() {
    let broker = TestBroker::start();
    let registry = broker.registry_port;
    let connect = broker.connect_port;
    ready(registry).await;
    ready(connect).await;
    for (port, content_type, post_path, get_only, max_body) in [
        (
            registry,
            "application/vnd.schemaregistry.v1+json",
            "/subjects/s/versions",
            "/schemas/types",
            runnel_schema_registry::api::MAX_BODY_BYTES,
        ),
        (
            connect,
            "application/json",
            "/connectors",
            "/connector-plugins",
            runnel_connect::rest::MAX_BODY_BYTES,
        ),
    ] {
        // 405, with the methods that are allowed.
        let raw = format!("DELETE {get_only} HTTP/1.1\r\nhost: localhost\r\n\r\n");
        let (_, answer) = exchange(port, raw.as_bytes()).await;
        assert_eq!(answer.json_error(), 405);
        assert_eq!(answer.header("content-type").as_deref(), Some(content_type));
        assert!(
            answer.header("allow").is_some_and(|a| a.contains("GET")),
            "{answer:?}"
        );

        // 413 for a declared size, before the body is sent; the keep-alive
        // client is told the connection closes, and it does.
        let raw = format!(
            "POST {post_path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 5000000\r\n\r\n"
        );
        let (mut s, answer) = exchange(port, raw.as_bytes()).await;
        assert_eq!(answer.json_error(), 413, "{answer:?}");
        assert_eq!(answer.header("connection").as_deref(), Some("close"));
        assert!(closed_within(&mut s, Duration::from_secs(5)).await);

        // 413 for a chunked body found too large while it is read: the
        // limit in 16 KiB chunks, then one byte more (and nothing after
        // it, so the server reads all that was sent).
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let head = format!(
            "POST {post_path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        assert_eq!(max_body % 0x4000, 0);
        let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
        for _ in 0..max_body / 0x4000 {
            s.write_all(chunk.as_bytes()).await.unwrap();
        }
        s.write_all(b"1\r\nx\r\n").await.unwrap();
        let answer = read_answer(&mut s).await;
        assert_eq!(answer.json_error(), 413, "{answer:?}");
        assert_eq!(answer.header("connection").as_deref(), Some("close"));

        // 414 for a long target, 431 for a large head or too many fields.
        let answer = get(port, &format!("/{}", "a".repeat(10_000))).await;
        assert_eq!(answer.json_error(), 414);
        let raw = format!(
            "GET / HTTP/1.1\r\nhost: localhost\r\nx-big: {}\r\n\r\n",
            "b".repeat(100_000)
        );
        let (_, answer) = exchange(port, raw.as_bytes()).await;
        assert_eq!(answer.json_error(), 431);
        assert_eq!(answer.header("content-type").as_deref(), Some(content_type));
        let many: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\nhost: localhost\r\n{many}\r\n");
        let (_, answer) = exchange(port, raw.as_bytes()).await;
        assert_eq!(answer.json_error(), 431);

        // Not HTTP: 400, with the body too.
        let (_, answer) = exchange(port, b"EHLO example.com\x01\r\n\r\n").await;
        assert_eq!(answer.json_error(), 400);

        // And the server goes on.
        assert_eq!(get(port, "/").await.status, 200);
    }
    let metrics = get(registry, "/metrics").await.body;
    assert_eq!(
        metric(
            &metrics,
            "runnel_registry_http_rejected_total{reason=\"body_too_large\"}"
        ),
        Some(2),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "runnel_registry_http_rejected_total{reason=\"head_too_large\"}"
        ),
        Some(2),
        "{metrics}"
    );
}

#[tokio::test]
async fn connections_over_the_per_address_limit_are_refused_with_json() {
    let broker = TestBroker::start_with(&["--http-max-connections-per-ip", "4"]);
    let port = broker.registry_port;
    ready(port).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // Accepted in order: the four before the fifth.
    let mut fifth = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let answer = read_answer(&mut fifth).await;
    assert_eq!(answer.json_error(), 429, "{answer:?}");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while get_status(port).await != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the freed places were not given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The status of `GET /`, or None when the connection was refused.
async fn get_status(port: u16) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).await.ok()?;
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}
