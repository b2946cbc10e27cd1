//! `runnel pipeline validate|test|run` on the pipelines in `examples/`,
//! against a real broker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::Message;
use serde_json::Value;

use crate::harness::{free_port, plugin_wasm, TestBroker, TestPostgres, BIN};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn runnel(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `runnel pipeline run` process. Killed on drop.
struct Running(Child);

impl Running {
    fn start(file: &Path, broker: &TestBroker) -> Running {
        Running(
            Command::new(BIN)
                .args(["pipeline", "run"])
                .arg(file)
                .args(["--bootstrap", &broker.addr()])
                .args(["--registry-url", &broker.registry_url()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A copy of an example in a temp dir, with `replace` applied to its text.
fn copy_example(dir: &Path, name: &str, replace: &[(&str, String)]) -> PathBuf {
    let mut text = std::fs::read_to_string(examples().join(name)).unwrap();
    for (from, to) in replace {
        assert!(text.contains(from), "{from} not in {name}");
        text = text.replace(from, to);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn every_example_validates_and_passes_its_own_test() {
    plugin_wasm("redact-pii");
    let mut count = 0;
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        count += 1;
        let file = path.to_str().unwrap();
        let (ok, out, err) = runnel(&["pipeline", "validate", file]);
        assert!(ok, "{file}: {err}");
        assert!(out.contains(": ok ("), "{out}");
        let (ok, out, err) = runnel(&["pipeline", "test", file]);
        assert!(ok, "{file}: {out}{err}");
    }
    assert!(count >= 3, "examples/ has {count} pipelines");
}

#[test]
fn an_invalid_pipeline_is_refused_with_file_line_and_column_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "name: bad\nsource:\n  connector: file-source\n  config:\n    file: x\nsink:\n  topic: out\ntransforms:\n  - plugin: nowhere.wasm\n  - filter: value.a >\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    for command in ["validate", "test", "run"] {
        let (ok, _, err) = runnel(
            &["pipeline", command, file, "--bootstrap", "127.0.0.1:1"]
                [..if command == "run" { 5 } else { 3 }],
        );
        assert!(!ok, "{command}");
        assert!(
            err.contains(&format!("{file}:9:5: plugin")),
            "{command}: {err}"
        );
        assert!(
            err.contains(&format!("{file}:10:5: filter 'value.a >'")),
            "{command}: {err}"
        );
        assert!(err.contains("hint:"), "{err}");
    }
    // A test that fails says which record differs.
    let path = dir.path().join("wrong.yaml");
    std::fs::write(
        &path,
        "name: w\nsource: {topic: a}\nsink: {topic: b}\ntransforms:\n  - drop: [x]\ntest:\n  input: [{value: {x: 1, y: 2}}]\n  expect: [{value: {x: 1, y: 2}}]\n",
    )
    .unwrap();
    let (ok, out, _) = runnel(&["pipeline", "test", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        out.contains("record 0:") && out.contains("\"y\":2"),
        "{out}"
    );
}

/// Waits (up to 60 s) until the file at `path` holds `n` JSON lines;
/// returns them.
fn wait_json_lines(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} of {n} lines",
            path.display(),
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_consume(broker: &TestBroker, topic: &str, n: usize) -> Vec<rdkafka::message::OwnedMessage> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let got = broker.consume(topic, 1, n, Duration::from_secs(2));
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
    }
}

#[test]
fn the_file_redact_example_runs_and_redacts_every_record() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::copy(
        examples().join("data/users.jsonl"),
        dir.path().join("data/users.jsonl"),
    )
    .unwrap();
    let wasm = plugin_wasm("redact-pii");
    let file = copy_example(
        dir.path(),
        "file-redact-topic.yaml",
        &[(
            "../plugins/dist/redact-pii.wasm",
            wasm.display().to_string(),
        )],
    );
    let _run = Running::start(&file, &broker);
    let records = wait_consume(&broker, "users-redacted", 3);
    assert_eq!(records.len(), 3);
    for r in &records {
        let v: Value = serde_json::from_slice(r.payload().unwrap()).unwrap();
        assert_eq!(v["email"], "[REDACTED]", "{v}");
        assert!(v.get("country").is_none(), "{v}");
    }
    let first: Value = serde_json::from_slice(records[0].payload().unwrap()).unwrap();
    assert_eq!(first["note"], "card [REDACTED] on file");
}

#[test]
fn the_topic_filter_example_writes_matching_records_and_dead_letters_the_rest() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let file = copy_example(dir.path(), "topic-filter-file.yaml", &[]);
    let producer = broker.producer(&[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for v in [
            r#"{"id":1,"amount":250,"status":"PAID","card":"4111"}"#,
            "not json",
            r#"{"id":2,"amount":20,"status":"PAID","card":"4111"}"#,
            r#"{"id":3,"amount":120,"status":"PAID","card":"5500"}"#,
        ] {
            producer
                .send(
                    rdkafka::producer::FutureRecord::<(), str>::to("orders").payload(v),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    });
    let _run = Running::start(&file, &broker);
    let out = dir.path().join("big-paid-orders.jsonl");
    let lines = wait_json_lines(&out, 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["amount_eur"], 250);
    assert_eq!(lines[1]["card"], "****");
    let dead = wait_consume(&broker, "orders-dlq", 1);
    assert_eq!(dead[0].payload().unwrap(), b"not json");
}

#[test]
fn the_http_example_routes_posted_events_to_their_topics() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = copy_example(
        dir.path(),
        "http-route-topics.yaml",
        &[("127.0.0.1:8090", format!("127.0.0.1:{port}"))],
    );
    let _run = Running::start(&file, &broker);
    let status = post_when_listening(
        port,
        r#"[{"type":"signup","email":"a@b.c"},{"type":"login","email":"a@b.c"},{"email":"x@y.z"}]"#,
    );
    assert_eq!(status, 200);
    for topic in ["events-signup", "events-login", "events-other"] {
        let records = wait_consume(&broker, topic, 1);
        assert_eq!(records.len(), 1, "{topic}");
        let v: Value = serde_json::from_slice(records[0].payload().unwrap()).unwrap();
        assert_eq!(v["email"], "****", "{topic}: {v}");
    }
}

#[test]
fn the_http_avro_example_writes_records_in_the_registry_wire_format() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let schema_file = examples().join("schemas/order.avsc");
    let out = broker.cli(
        &[
            "schema",
            "register",
            "orders-avro-value",
            schema_file.to_str().unwrap(),
            "--registry",
            &broker.registry_url(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The broker checks every record against the registry, too.
    let out = broker.cli(
        &[
            "topic",
            "create",
            "orders-avro",
            "--config",
            "confluent.value.schema.validation=true",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = copy_example(
        dir.path(),
        "http-avro-topic.yaml",
        &[("127.0.0.1:8091", format!("127.0.0.1:{port}"))],
    );
    let _run = Running::start(&file, &broker);
    // The second order lacks a required field: skipped.
    let status = post_when_listening(
        port,
        r#"[{"id":1,"customer":"ann","amount_cents":1250,"debug":true},
            {"id":2,"amount_cents":5},
            {"id":3,"customer":"cy","amount_cents":7,"currency":"GBP","note":"gift"}]"#,
    );
    assert_eq!(status, 200);
    let records = wait_consume(&broker, "orders-avro", 2);
    assert_eq!(records.len(), 2);
    let schema =
        apache_avro::Schema::parse_str(&std::fs::read_to_string(&schema_file).unwrap()).unwrap();
    let compiled = runnel_connect::avro::Compiled::new(schema);
    let mut values = Vec::new();
    for r in &records {
        let payload = r.payload().unwrap();
        assert_eq!(payload[0], 0, "magic byte");
        let id = i32::from_be_bytes(payload[1..5].try_into().unwrap());
        assert_eq!(id, 1, "the id registered for orders-avro-value");
        values.push(compiled.decode(&payload[5..]).unwrap());
    }
    assert_eq!(
        values[0],
        serde_json::json!({"id": 1, "customer": "ann", "amount_cents": 1250, "currency": "EUR", "note": null})
    );
    assert_eq!(
        values[1],
        serde_json::json!({"id": 3, "customer": "cy", "amount_cents": 7, "currency": "GBP", "note": "gift"})
    );
}

/// POSTs `body` to the pipeline's HTTP source once it listens; the status.
fn post_when_listening(port: u16, body: &'static str) -> u16 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match http
                .post(format!("http://127.0.0.1:{port}/"))
                .body(body)
                .send()
                .await
            {
                Ok(r) => break r.status().as_u16(),
                Err(e) if Instant::now() > deadline => panic!("the pipeline never listened: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
}

#[test]
fn the_topic_filter_postgres_example_upserts_paid_orders_by_key() {
    let pg = TestPostgres::start();
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let file = copy_example(
        dir.path(),
        "topic-filter-postgres.yaml",
        &[("postgres://postgres@127.0.0.1:5432/postgres", pg.url())],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = pg.client().await;
        let record = |key: &str, value: &str| (Some(key.to_string()), value.to_string());
        crate::postgres::produce(
            &broker,
            "orders",
            &[
                record(
                    "1001",
                    r#"{"amount":250,"status":"PAID","customer":"ann","card":"4111"}"#,
                ),
                record(
                    "1002",
                    r#"{"amount":20,"status":"PAID","customer":"bob","card":"4111"}"#,
                ),
                record(
                    "1003",
                    r#"{"amount":120,"status":"PAID","customer":"cy","card":"5500"}"#,
                ),
                record("1004", "not json"),
            ],
        )
        .await;
        let _run = Running::start(&file, &broker);
        crate::postgres::wait_count(&db, "SELECT count(*) FROM paid_orders", 2).await;
        // An order written again changes its row.
        crate::postgres::produce(
            &broker,
            "orders",
            &[record(
                "1001",
                r#"{"amount":300,"status":"PAID","customer":"ann","card":"4111"}"#,
            )],
        )
        .await;
        crate::postgres::wait_count(
            &db,
            "SELECT count(*) FROM paid_orders WHERE order_id = '1001' AND amount = 300",
            1,
        )
        .await;
        let rows: Vec<(String, i64, String)> = db
            .query(
                "SELECT order_id, amount, customer FROM paid_orders ORDER BY order_id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("1001".into(), 300, "ann".into()),
                ("1003".into(), 120, "cy".into())
            ]
        );
        let card = db
            .query("SELECT card FROM paid_orders", &[])
            .await
            .unwrap_err();
        assert_eq!(
            card.code(),
            Some(&tokio_postgres::error::SqlState::UNDEFINED_COLUMN)
        );
        let dead = wait_consume(&broker, "orders-pg-dlq", 1);
        assert_eq!(dead[0].payload().unwrap(), b"not json");
    });
}

#[test]
fn a_connector_to_connector_example_runs_through_a_topic_of_its_own() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("users.jsonl");
    let mut lines = String::new();
    for i in 0..200 {
        let country = if i % 4 == 0 { "DE" } else { "FR" };
        lines.push_str(&format!(
            "{{\"id\":{i},\"name\":\"u{i}\",\"note\":\"n{i}\",\"country\":\"{country}\"}}\n"
        ));
    }
    std::fs::write(&input, lines).unwrap();
    let file = copy_example(
        dir.path(),
        "file-filter-file.yaml",
        &[("data/users.jsonl", input.display().to_string())],
    );
    let _run = Running::start(&file, &broker);
    let out = dir.path().join("users-de.jsonl");
    let written = wait_json_lines(&out, 50);
    assert_eq!(written.len(), 50);
    for (n, v) in written.iter().enumerate() {
        assert_eq!(v["id"], n * 4, "{v}");
        assert_eq!(v["country"], "DE");
        assert!(v.get("note").is_none(), "{v}");
    }
    // The records went through the pipeline's own topic.
    let between = wait_consume(&broker, "_runnel_pipeline.file-filter-file.records", 50);
    assert_eq!(between.len(), 50);
}

#[test]
fn a_pipeline_reads_an_avro_topic_through_the_registry_into_a_file() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let schema_file = examples().join("schemas/order.avsc");
    let out = broker.cli(
        &[
            "schema",
            "register",
            "orders-in-value",
            schema_file.to_str().unwrap(),
            "--registry",
            &broker.registry_url(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Confluent-framed Avro records under id 1, and one that is not.
    let schema =
        apache_avro::Schema::parse_str(&std::fs::read_to_string(&schema_file).unwrap()).unwrap();
    let compiled = runnel_connect::avro::Compiled::new(schema);
    let mut payloads = Vec::new();
    for i in 0..20 {
        let order = serde_json::json!({
            "id": i, "customer": format!("c{i}"), "amount_cents": i * 100,
            "currency": if i % 2 == 0 { "EUR" } else { "GBP" }, "note": null
        });
        let mut framed = vec![0u8, 0, 0, 0, 1];
        framed.extend(compiled.encode(&order).unwrap());
        payloads.push(framed);
    }
    payloads.insert(5, b"not avro".to_vec());
    let producer = broker.producer(&[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for p in &payloads {
            producer
                .send(
                    rdkafka::producer::FutureRecord::<(), [u8]>::to("orders-in").payload(p),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    });
    let output = dir.path().join("eur.jsonl");
    let yaml = dir.path().join("avro-in.yaml");
    std::fs::write(
        &yaml,
        format!(
            "name: avro-in\nsource:\n  topic: orders-in\n  format: avro\ntransforms:\n  - filter: value.currency == \"EUR\"\nsink:\n  connector: file-sink\n  config:\n    file: {}\nerrors:\n  tolerance: all\n  dead_letter_topic: orders-in-dlq\n",
            output.display()
        ),
    )
    .unwrap();
    let _run = Running::start(&yaml, &broker);
    let lines = wait_json_lines(&output, 10);
    assert_eq!(lines.len(), 10);
    assert_eq!(
        lines[1],
        serde_json::json!({"id": 2, "customer": "c2", "amount_cents": 200, "currency": "EUR", "note": null})
    );
    // The record that is no Avro went to the dead-letter topic as it was.
    let dead = wait_consume(&broker, "orders-in-dlq", 1);
    assert_eq!(dead[0].payload().unwrap(), b"not avro");
}

#[test]
fn a_filter_plugin_passes_its_kept_records_through_unchanged() {
    let plugin = plugin_wasm("drop-odd-offsets");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("odd.yaml");
    std::fs::write(
        &file,
        format!(
            "name: odd\nsource:\n  topic: in\ntransforms:\n  - plugin: {}\nsink:\n  topic: out\n\
             test:\n  input:\n    - value: {{id: 0, tags: [a]}}\n    - value: {{id: 1}}\n    - value: \"two\"\n    - value: {{id: 3}}\n\
             \x20 expect:\n    - value: {{id: 0, tags: [a]}}\n    - value: \"two\"\n",
            plugin.display()
        ),
    )
    .unwrap();
    let (ok, out, err) = runnel(&["pipeline", "test", file.to_str().unwrap()]);
    assert!(ok, "{out}\n{err}");
}
