//! The connect worker inside `runnel serve` (and `runnel connect` on its
//! own): the Kafka-Connect REST API, the file connectors under their
//! Kafka names, resuming after SIGKILL, error tolerance and dead letters.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::message::Headers;
use rdkafka::Message;
use serde_json::{json, Value};

use crate::harness::{free_port, TestBroker, BIN};

struct Rest {
    base: String,
    http: reqwest::Client,
}

impl Rest {
    async fn ready(base: String) -> Rest {
        let rest = Rest {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while rest
            .http
            .get(format!("{}/", rest.base))
            .send()
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "connect REST API at {} never answered",
                rest.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        rest
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let response = r.send().await.expect("connect request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn create(&self, name: &str, config: Value) {
        let (status, v) = self
            .call(
                "POST",
                "/connectors",
                Some(json!({"name": name, "config": config})),
            )
            .await;
        assert_eq!(status, 201, "create {name}: {v}");
    }

    async fn wait_state(&self, name: &str, connector: &str, task: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, v) = self
                .call("GET", &format!("/connectors/{name}/status"), None)
                .await;
            if v["connector"]["state"] == connector && v["tasks"][0]["state"] == task {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never reached {connector}/{task}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn connect(broker: &TestBroker) -> Rest {
    Rest::ready(broker.connect_url()).await
}

/// Waits until `path` holds at least `n` lines; returns them.
fn wait_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} of {n} lines",
            path.display(),
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn append(path: &std::path::Path, from: usize, to: usize) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in from..to {
        writeln!(f, "line-{i:05}").unwrap();
    }
}

#[tokio::test]
async fn kafka_file_connector_configs_move_every_line_through_a_topic_in_order() {
    let broker = TestBroker::start();
    let rest = connect(&broker).await;
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.txt"), dir.path().join("out.txt"));
    append(&input, 0, 2000);
    // Exactly Kafka's connect-file-source.properties / -sink.properties.
    rest.create(
        "local-file-source",
        json!({"connector.class": "FileStreamSource", "tasks.max": "1",
               "file": input.to_str().unwrap(), "topic": "connect-test"}),
    )
    .await;
    rest.create(
        "local-file-sink",
        json!({"connector.class": "FileStreamSink", "tasks.max": "1",
               "file": output.to_str().unwrap(), "topics": "connect-test"}),
    )
    .await;
    let lines = wait_lines(&output, 2000);
    let expected: Vec<String> = (0..2000).map(|i| format!("line-{i:05}")).collect();
    assert_eq!(lines, expected);
    // Lines appended later follow (the source tails the file).
    append(&input, 2000, 2100);
    assert_eq!(wait_lines(&output, 2100).len(), 2100);
    let records = broker.consume("connect-test", 1, 2100, Duration::from_secs(10));
    assert_eq!(records.len(), 2100);
    assert_eq!(records[7].payload().unwrap(), b"line-00007");
    let (_, offsets) = rest
        .call("GET", "/connectors/local-file-source/offsets", None)
        .await;
    assert_eq!(
        offsets["offsets"][0]["partition"]["filename"],
        input.to_str().unwrap()
    );
}

#[tokio::test]
async fn a_killed_worker_resumes_its_connectors_and_loses_no_line() {
    let mut broker = TestBroker::start();
    let rest = connect(&broker).await;
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.txt"), dir.path().join("out.txt"));
    append(&input, 0, 500);
    rest.create(
        "source",
        json!({"connector.class": "file-source", "file": input.to_str().unwrap(), "topic": "lines"}),
    )
    .await;
    rest.create(
        "sink",
        json!({"connector.class": "file-sink", "file": output.to_str().unwrap(), "topics": "lines"}),
    )
    .await;
    wait_lines(&output, 500);
    // More lines, then SIGKILL while they may be anywhere between the file,
    // the topic and the output.
    append(&input, 500, 1500);
    std::thread::sleep(Duration::from_millis(150));
    broker.kill();
    append(&input, 1500, 2000);
    broker.restart();
    let rest = connect(&broker).await;
    // The connectors come back from connect-configs by themselves.
    rest.wait_state("source", "RUNNING", "RUNNING").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&output).unwrap_or_default();
        let seen: BTreeSet<&str> = text.lines().collect();
        if seen.len() == 2000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "output has {} of 2000 distinct lines",
            seen.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // At-least-once: every line at least once, in order within the file's
    // first occurrence of each.
    let text = std::fs::read_to_string(&output).unwrap();
    let firsts: Vec<&str> = {
        let mut seen = BTreeSet::new();
        text.lines().filter(|l| seen.insert(*l)).collect()
    };
    let expected: Vec<String> = (0..2000).map(|i| format!("line-{i:05}")).collect();
    assert_eq!(firsts, expected);
}

#[tokio::test]
async fn the_rest_api_answers_like_kafka_connect() {
    let broker = TestBroker::start();
    let rest = connect(&broker).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    append(&input, 0, 10);
    let config = json!({"connector.class": "FileStreamSource", "file": input.to_str().unwrap(), "topic": "t"});
    rest.create("src", config.clone()).await;
    let (status, v) = rest
        .call(
            "POST",
            "/connectors",
            Some(json!({"name": "src", "config": config})),
        )
        .await;
    assert_eq!((status, v["error_code"].clone()), (409, json!(409)), "{v}");
    let (status, v) = rest.call("GET", "/connectors/nope", None).await;
    assert_eq!(status, 404);
    assert_eq!(v["message"], "Connector nope not found");
    // Invalid configs are refused with every problem named.
    let (status, v) = rest
        .call(
            "POST",
            "/connectors",
            Some(json!({"name": "bad", "config": {"connector.class": "FileStreamSink", "tasks.max": "x"}})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let message = v["message"].as_str().unwrap();
    for field in ["tasks.max", "file", "topics"] {
        assert!(message.contains(field), "{field} in {message}");
    }
    let (status, v) = rest
        .call(
            "PUT",
            "/connector-plugins/FileStreamSinkConnector/config/validate",
            Some(json!({"connector.class": "FileStreamSinkConnector", "tasks.max": "x"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    // name, tasks.max, file and topics.
    assert_eq!(v["error_count"], 4, "{v}");
    let errors: Vec<&Value> = v["configs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["value"]["errors"].as_array().unwrap().is_empty())
        .collect();
    assert!(errors.iter().any(|c| c["value"]["name"] == "topics"), "{v}");
    // Listing, info, config, tasks.
    assert_eq!(
        rest.call("GET", "/connectors", None).await.1,
        json!(["src"])
    );
    let (_, v) = rest
        .call("GET", "/connectors?expand=status&expand=info", None)
        .await;
    assert!(v["src"]["status"]["connector"]["state"].is_string(), "{v}");
    let (_, v) = rest.call("GET", "/connectors/src", None).await;
    assert_eq!(
        (v["type"].clone(), v["tasks"][0]["task"].clone()),
        (json!("source"), json!(0))
    );
    assert_eq!(
        rest.call("GET", "/connectors/src/config", None).await.1["topic"],
        "t"
    );
    let (_, v) = rest.call("GET", "/connectors/src/tasks", None).await;
    assert_eq!(v[0]["id"], json!({"connector": "src", "task": 0}));
    // Pause, resume, stop, offsets.
    rest.wait_state("src", "RUNNING", "RUNNING").await;
    assert_eq!(rest.call("PUT", "/connectors/src/pause", None).await.0, 202);
    rest.wait_state("src", "PAUSED", "PAUSED").await;
    assert_eq!(
        rest.call("PUT", "/connectors/src/resume", None).await.0,
        202
    );
    rest.wait_state("src", "RUNNING", "RUNNING").await;
    let (status, v) = rest.call("DELETE", "/connectors/src/offsets", None).await;
    assert_eq!(status, 409, "offsets reset needs STOPPED: {v}");
    assert_eq!(rest.call("PUT", "/connectors/src/stop", None).await.0, 204);
    rest.wait_state("src", "STOPPED", "STOPPED").await;
    let (status, v) = rest.call("DELETE", "/connectors/src/offsets", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        rest.call("GET", "/connectors/src/offsets", None).await.1,
        json!({"offsets": []})
    );
    // Restart, task status, config update, delete.
    assert_eq!(
        rest.call("POST", "/connectors/src/restart", None).await.0,
        204
    );
    assert_eq!(
        rest.call("GET", "/connectors/src/tasks/0/status", None)
            .await
            .0,
        200
    );
    assert_eq!(
        rest.call("GET", "/connectors/src/tasks/9/status", None)
            .await
            .0,
        404
    );
    assert_eq!(
        rest.call("POST", "/connectors/src/tasks/0/restart", None)
            .await
            .0,
        204
    );
    let mut updated = config.clone();
    updated["topic"] = json!("t2");
    let (status, v) = rest
        .call("PUT", "/connectors/src/config", Some(updated))
        .await;
    assert_eq!((status, v["config"]["topic"].clone()), (200, json!("t2")));
    let (status, _) = rest
        .call("PUT", "/connectors/created/config", Some(config))
        .await;
    assert_eq!(status, 201);
    assert_eq!(rest.call("DELETE", "/connectors/src", None).await.0, 204);
    assert_eq!(rest.call("GET", "/connectors/src", None).await.0, 404);
    let (_, plugins) = rest.call("GET", "/connector-plugins", None).await;
    assert!(plugins
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["class"] == "org.apache.kafka.connect.file.FileStreamSinkConnector"));
}

#[tokio::test]
async fn a_sink_sends_records_it_cannot_read_to_the_dead_letter_topic_or_fails() {
    let broker = TestBroker::start();
    let rest = connect(&broker).await;
    let dir = tempfile::tempdir().unwrap();
    let producer = broker.producer(&[]);
    for v in [r#"{"n":1}"#, "not json", r#"{"n":2}"#] {
        producer
            .send(
                rdkafka::producer::FutureRecord::<(), str>::to("events").payload(v),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let tolerant = dir.path().join("tolerant.txt");
    rest.create(
        "tolerant",
        json!({"connector.class": "FileStreamSink", "file": tolerant.to_str().unwrap(), "topics": "events",
               "value.converter": "org.apache.kafka.connect.json.JsonConverter",
               "value.converter.schemas.enable": "false",
               "errors.tolerance": "all", "errors.deadletterqueue.topic.name": "events-dlq"}),
    )
    .await;
    assert_eq!(wait_lines(&tolerant, 2), vec![r#"{"n":1}"#, r#"{"n":2}"#]);
    let dead = broker.consume("events-dlq", 1, 1, Duration::from_secs(10));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload().unwrap(), b"not json");
    let headers = dead[0].headers().unwrap();
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("__connect.errors.topic").as_deref(), Some("events"));
    assert_eq!(header("__connect.errors.offset").as_deref(), Some("1"));
    assert_eq!(
        header("__connect.errors.stage").as_deref(),
        Some("VALUE_CONVERTER")
    );
    assert!(header("__connect.errors.exception.message")
        .unwrap()
        .contains("not JSON"));
    // Without tolerance the task fails and says why.
    let strict = dir.path().join("strict.txt");
    rest.create(
        "strict",
        json!({"connector.class": "FileStreamSink", "file": strict.to_str().unwrap(), "topics": "events",
               "value.converter": "json", "value.converter.schemas.enable": "false"}),
    )
    .await;
    let status = rest.wait_state("strict", "RUNNING", "FAILED").await;
    assert!(
        status["tasks"][0]["trace"]
            .as_str()
            .unwrap()
            .contains("errors.tolerance is none"),
        "{status}"
    );
    // The worker's /metrics: per connector, what it read, wrote, failed on
    // and dead-lettered, and the state of each task.
    let (code, page) = rest.call("GET", "/metrics", None).await;
    assert_eq!(code, 200);
    let page = page.as_str().unwrap().to_string();
    let value = |series: &str| crate::harness::metric(&page, series);
    let tolerant = |name: &str| value(&format!("{name}{{connector=\"tolerant\"}}"));
    assert_eq!(
        tolerant("runnel_connect_connector_records_read_total"),
        Some(3.0),
        "{page}"
    );
    assert_eq!(
        tolerant("runnel_connect_connector_records_written_total"),
        Some(2.0),
        "{page}"
    );
    assert_eq!(
        tolerant("runnel_connect_connector_failures_total"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        tolerant("runnel_connect_connector_dead_letters_total"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        value("runnel_connect_task_state{connector=\"tolerant\",task=\"0\",state=\"RUNNING\"}"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        value("runnel_connect_task_state{connector=\"strict\",task=\"0\",state=\"FAILED\"}"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        value("runnel_connect_connector_failures_total{connector=\"strict\"}"),
        Some(1.0),
        "{page}"
    );
}

#[tokio::test]
async fn runnel_connect_runs_a_worker_against_a_separate_broker() {
    let broker = TestBroker::start();
    let port = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["connect", "--bootstrap", &broker.addr()])
        .args(["--connect-addr", &format!("127.0.0.1:{port}")])
        .args([
            "--config-topic",
            "other-configs",
            "--offset-topic",
            "other-offsets",
            "--status-topic",
            "other-status",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rest = Rest::ready(format!("http://127.0.0.1:{port}")).await;
    let input = tmp.path().join("in.txt");
    append(&input, 0, 5);
    rest.create(
        "alone",
        json!({"connector.class": "FileStreamSource", "file": input.to_str().unwrap(), "topic": "alone"}),
    )
    .await;
    let records = broker.consume("alone", 1, 5, Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(records.len(), 5);
    // Its state is in its own topics.
    let configs = broker.consume("other-configs", 1, 2, Duration::from_secs(10));
    assert!(
        configs
            .iter()
            .any(|r| r.key() == Some(b"connector-alone".as_slice())),
        "{:?}",
        configs.iter().map(|r| r.key()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn the_http_source_answers_once_the_records_are_stored() {
    let broker = TestBroker::start();
    let rest = connect(&broker).await;
    let listen = format!("127.0.0.1:{}", free_port());
    rest.create(
        "intake",
        json!({"connector.class": "http-source", "listen": listen, "topic": "posted",
               "value.converter": "json", "value.converter.schemas.enable": "false"}),
    )
    .await;
    rest.wait_state("intake", "RUNNING", "RUNNING").await;
    let http = reqwest::Client::new();
    let url = format!("http://{listen}/events");
    let deadline = Instant::now() + Duration::from_secs(10);
    let response = loop {
        match http
            .post(&url)
            .header("X-Record-Key", "k1")
            .body(r#"[{"n":1},{"n":2},{"n":3}]"#)
            .send()
            .await
        {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the HTTP source never listened: {e}"),
        }
    };
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"records": 3, "stored": 3, "filtered": 0, "dead_lettered": 0})
    );
    // Acknowledged means stored: the records are readable right away.
    let end = crate::harness::latest_offset(&broker, "posted", 0).await;
    assert_eq!(end, 3);
    let records = broker.consume("posted", 1, 3, Duration::from_secs(10));
    assert_eq!(records[0].key().unwrap(), b"k1");
    assert_eq!(records[2].payload().unwrap(), br#"{"n":3}"#);
    let bad = http.post(&url).body("{nope").send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let one = http.post(&url).body(r#"{"n":4}"#).send().await.unwrap();
    let body: Value = serde_json::from_str(&one.text().await.unwrap()).unwrap();
    assert_eq!(body["stored"], 1, "{body}");
}

#[tokio::test]
async fn unknown_config_keys_are_errors_next_to_a_missing_key_and_warnings_otherwise() {
    let broker = TestBroker::start();
    let rest = connect(&broker).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let out = out.to_str().unwrap();
    // A near miss of a key that is not set: refused, with the field named.
    let (status, v) = rest
        .call(
            "POST",
            "/connectors",
            Some(json!({"name": "typo", "config": {"connector.class": "FileStreamSink", "fiel": out, "topics": "t"}})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("fiel: Unknown configuration 'fiel' for file-sink; did you mean 'file'?"),
        "{message}"
    );
    let (status, v) = rest
        .call(
            "PUT",
            "/connector-plugins/FileStreamSinkConnector/config/validate",
            Some(json!({"connector.class": "FileStreamSinkConnector", "fiel": out, "topics": "t", "fsync_every": "10"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    // `fiel`, and `file` and `name` that are missing.
    assert_eq!(v["error_count"], 3, "{v}");
    let entry = |name: &str| {
        v["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["value"]["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no entry for {name}: {v}"))
    };
    assert_eq!(
        entry("fiel")["value"]["errors"].as_array().unwrap().len(),
        1
    );
    let fsync = entry("fsync_every");
    assert_eq!(fsync["value"]["errors"], json!([]));
    assert!(
        fsync["value"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("Unknown configuration 'fsync_every' for file-sink is ignored"),
        "{fsync}"
    );
    // A key that is merely unknown: accepted, and said once in the log
    // however often the same config is written.
    let config = json!({"connector.class": "FileStreamSink", "file": out, "topics": "t", "fsync_every": "10"});
    for want in [201, 200] {
        let (status, v) = rest
            .call("PUT", "/connectors/sink/config", Some(config.clone()))
            .await;
        assert_eq!(status, want, "{v}");
    }
    let warned = |log: &str| {
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("fsync_every"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while warned(&broker.log()) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(warned(&broker.log()), 1, "{}", broker.log());
    // Bad requests are counted, not logged one by one.
    let (status, metrics) = rest.call("GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap().to_string();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert!(
        value("runnel_connect_rest_client_errors_total") >= 1,
        "{metrics}"
    );
    assert!(
        value("runnel_connect_unknown_config_keys_total") >= 3,
        "{metrics}"
    );
    assert!(
        !broker
            .log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("fiel:")),
        "a refused request is not logged at WARN"
    );
}

/// A tiny HTTP server for the sink: fails the first `fail` requests with
/// 503, then records every body and answers 200.
fn fake_endpoint(fail: usize) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        let mut served = 0usize;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut length = 0usize;
                let mut line = String::new();
                let mut ok = false;
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    if line == "\r\n" {
                        ok = true;
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                if !ok {
                    break;
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_err() {
                    break;
                }
                served += 1;
                let status = if served <= fail {
                    "503 Service Unavailable"
                } else {
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                    "200 OK"
                };
                let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            }
        }
    });
    (url, bodies)
}

#[tokio::test]
async fn the_http_sink_posts_batches_and_retries_a_failing_server() {
    let broker = TestBroker::start();
    let rest = connect(&broker).await;
    let (url, bodies) = fake_endpoint(2);
    let producer = broker.producer(&[]);
    for i in 0..50 {
        producer
            .send(
                rdkafka::producer::FutureRecord::<(), str>::to("out")
                    .payload(&format!(r#"{{"i":{i}}}"#)),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    rest.create(
        "webhook",
        json!({"connector.class": "http-sink", "url": url, "topics": "out", "batch.size": "20",
               "value.converter": "json", "value.converter.schemas.enable": "false",
               "errors.retry.timeout": "20000"}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let values: Vec<i64> = loop {
        let values: Vec<i64> = bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| serde_json::from_str::<Vec<Value>>(b).unwrap())
            .map(|v| v["i"].as_i64().unwrap())
            .collect();
        if values.len() >= 50 {
            break values;
        }
        assert!(
            Instant::now() < deadline,
            "the endpoint got {} of 50 records",
            values.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let distinct: BTreeSet<i64> = values.iter().copied().collect();
    assert_eq!(distinct, (0..50).collect::<BTreeSet<i64>>());
    assert!(bodies
        .lock()
        .unwrap()
        .iter()
        .all(|b| serde_json::from_str::<Vec<Value>>(b).unwrap().len() <= 20));
    rest.wait_state("webhook", "RUNNING", "RUNNING").await;
}

#[tokio::test]
async fn datagen_writes_the_asked_number_of_records() {
    let broker = TestBroker::start();
    let rest = connect(&broker).await;
    rest.create(
        "users",
        json!({"connector.class": "datagen", "topic": "users", "quickstart": "users", "max.records": "1000",
               "value.converter": "json", "value.converter.schemas.enable": "false"}),
    )
    .await;
    let records = broker.consume("users", 1, 1000, Duration::from_secs(20));
    assert_eq!(records.len(), 1000);
    assert_eq!(records[999].key().unwrap(), b"user-999");
    let v: Value = serde_json::from_slice(records[0].payload().unwrap()).unwrap();
    assert!(v["email"].as_str().unwrap().contains('@'), "{v}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        crate::harness::latest_offset(&broker, "users", 0).await,
        1000,
        "no more than max.records"
    );
    let (_, offsets) = rest.call("GET", "/connectors/users/offsets", None).await;
    assert_eq!(offsets["offsets"][0]["offset"], json!({"next": 1000}));
}

/// A child process killed when dropped (also when a test panics).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `runnel connect` worker of the group that keeps its state in the
/// `mw-*` topics.
fn group_worker(broker: &TestBroker, port: u16, log: &std::path::Path) -> Killed {
    let log = std::fs::File::create(log.join(format!("worker-{port}.log"))).unwrap();
    Command::new(BIN)
        .args(["connect", "--bootstrap", &broker.addr()])
        .args(["--connect-addr", &format!("127.0.0.1:{port}")])
        .args([
            "--config-topic",
            "mw-configs",
            "--offset-topic",
            "mw-offsets",
        ])
        .args([
            "--status-topic",
            "mw-status",
            "--session-timeout-ms",
            "6000",
        ])
        .args(["--commit-interval-ms", "200"])
        .env("RUNNEL_LOG", "info,runnel_connect=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Killed)
        .unwrap()
}

/// Waits until every task of `names` is RUNNING (as `rest` sees them, its
/// own or reported by the others) and `ok` holds for the set of workers
/// running them; returns connector → its task's worker.
async fn wait_tasks_running(
    rest: &Rest,
    names: &[&str],
    ok: impl Fn(&BTreeSet<String>) -> bool,
) -> std::collections::BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let mut owners = std::collections::BTreeMap::new();
        let mut seen = Vec::new();
        for name in names {
            let (_, v) = rest
                .call("GET", &format!("/connectors/{name}/status"), None)
                .await;
            if v["tasks"][0]["state"] == "RUNNING" {
                owners.insert(
                    name.to_string(),
                    v["tasks"][0]["worker_id"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                );
            }
            seen.push(v);
        }
        let workers: BTreeSet<String> = owners.values().cloned().collect();
        if owners.len() == names.len() && ok(&workers) {
            return owners;
        }
        assert!(
            Instant::now() < deadline,
            "tasks never settled as wanted: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn workers_of_one_group_share_tasks_and_take_over_a_killed_workers() {
    let broker = TestBroker::start();
    let tmp = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port()];
    let mut children: Vec<Option<Killed>> = ports
        .iter()
        .map(|p| Some(group_worker(&broker, *p, tmp.path())))
        .collect();
    let rests = [
        Rest::ready(format!("http://127.0.0.1:{}", ports[0])).await,
        Rest::ready(format!("http://127.0.0.1:{}", ports[1])).await,
    ];
    let sources = ["mw-a", "mw-b", "mw-c"];
    for (i, name) in sources.iter().enumerate() {
        let input = tmp.path().join(format!("{name}.txt"));
        append(&input, 0, 50);
        // Created through either worker: both see every connector.
        rests[i % 2]
            .create(
                name,
                json!({"connector.class": "FileStreamSource", "file": input.to_str().unwrap(), "topic": name}),
            )
            .await;
    }
    let out = tmp.path().join("out.txt");
    rests[0]
        .create(
            "mw-sink",
            json!({"connector.class": "FileStreamSink", "file": out.to_str().unwrap(), "topics": "mw-a"}),
        )
        .await;
    let all = ["mw-a", "mw-b", "mw-c", "mw-sink"];
    // Both workers run a share, and each knows where the other's run.
    let owners = wait_tasks_running(&rests[1], &all, |w| w.len() == 2).await;
    let (_, listed) = rests[1].call("GET", "/connectors", None).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(4), "{listed}");
    let (_, v) = rests[0]
        .call("GET", "/connectors/mw-sink/status", None)
        .await;
    assert_eq!(
        v["tasks"][0]["worker_id"],
        owners["mw-sink"].as_str(),
        "{v}"
    );
    // Kill the worker running the sink (and a source or two).
    let victim = ports
        .iter()
        .position(|p| owners["mw-sink"] == format!("127.0.0.1:{p}"))
        .expect("the sink runs on one of the two workers");
    let survivor = 1 - victim;
    // SIGKILL, on drop.
    drop(children[victim].take());
    for name in sources {
        append(&tmp.path().join(format!("{name}.txt")), 50, 100);
    }
    let me = format!("127.0.0.1:{}", ports[survivor]);
    wait_tasks_running(&rests[survivor], &all, |w| w.len() == 1 && w.contains(&me)).await;
    // Nothing was lost on the way: every line of every file is in its
    // topic, and the sink wrote all of mw-a.
    let expected: BTreeSet<String> = (0..100).map(|i| format!("line-{i:05}")).collect();
    for name in sources {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // At-least-once: what the killed worker did not commit is
            // read again, so there may be more than 100 records.
            let got: BTreeSet<String> = broker
                .consume(name, 1, 100_000, Duration::from_secs(3))
                .iter()
                .filter_map(|r| r.payload().map(|p| String::from_utf8_lossy(p).into_owned()))
                .collect();
            if got == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {} of 100 lines, missing {:?}",
                got.len(),
                expected.difference(&got).take(5).collect::<Vec<_>>()
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let written: BTreeSet<String> = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if written == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sink wrote {} of 100 lines",
            written.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_worker_whose_broker_is_gone_still_stops_on_sigterm() {
    let mut broker = TestBroker::start();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let worker = group_worker(&broker, port, tmp.path());
    let rest = Rest::ready(format!("http://127.0.0.1:{port}")).await;
    let input = tmp.path().join("in.txt");
    append(&input, 0, 5);
    rest.create(
        "gone-src",
        json!({"connector.class": "FileStreamSource", "file": input.to_str().unwrap(), "topic": "gone"}),
    )
    .await;
    rest.create(
        "gone-sink",
        json!({"connector.class": "FileStreamSink", "file": tmp.path().join("out.txt").to_str().unwrap(), "topics": "gone"}),
    )
    .await;
    wait_lines(&tmp.path().join("out.txt"), 5);
    broker.kill();
    let pid = worker.0.id().to_string();
    let started = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut worker = worker;
    loop {
        if worker.0.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "the worker did not exit within 45 s of SIGTERM without its broker"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
