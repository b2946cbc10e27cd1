//! `runnel pipeline validate|test|run` on the pipelines in `examples/`,
//! against a real broker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

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
        Self::start_logging(file, broker, None)
    }

    /// Starts it with its standard error written to `log`.
    fn start_logging(file: &Path, broker: &TestBroker, log: Option<&Path>) -> Running {
        Self::start_with(file, broker, log, &[])
    }

    /// Starts it with more command-line arguments.
    fn start_with(file: &Path, broker: &TestBroker, log: Option<&Path>, more: &[&str]) -> Running {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        };
        Running(
            Command::new(BIN)
                .args(["pipeline", "run"])
                .arg(file)
                .args(["--bootstrap", &broker.addr()])
                .args(["--registry-url", &broker.registry_url()])
                .args(more)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
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
    let files = std::fs::read_dir(examples())
        .unwrap()
        .chain(std::fs::read_dir(examples().join("streams")).unwrap());
    for entry in files {
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
    assert!(count >= 4, "examples/ has {count} pipelines");
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
    let (status, body) = post_when_listening(
        port,
        r#"[{"type":"signup","email":"a@b.c"},{"type":"login","email":"a@b.c"},{"email":"x@y.z"}]"#,
    );
    assert_eq!((status, &body["stored"]), (200, &json!(3)), "{body}");
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
    // The second order lacks a required field: it cannot be written with
    // the schema, so it goes to the dead-letter topic, and the answer says
    // so.
    let (status, body) = post_when_listening(
        port,
        r#"[{"id":1,"customer":"ann","amount_cents":1250,"debug":true},
            {"id":2,"amount_cents":5},
            {"id":3,"customer":"cy","amount_cents":7,"currency":"GBP","note":"gift"}]"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            &body["records"],
            &body["stored"],
            &body["filtered"],
            &body["dead_lettered"]
        ),
        (&json!(3), &json!(2), &json!(0), &json!(1)),
        "{body}"
    );
    assert_eq!(body["errors"][0]["record"], 1, "{body}");
    assert!(
        body["errors"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("VALUE_CONVERTER: "),
        "{body}"
    );
    let dead = wait_consume(&broker, "orders-avro-dlq", 1);
    assert_eq!(dead.len(), 1);
    let letter: Value = serde_json::from_slice(dead[0].payload().unwrap()).unwrap();
    assert_eq!(letter, json!({"id": 2, "amount_cents": 5}));
    assert_eq!(
        header(&dead[0], "__connect.errors.stage").as_deref(),
        Some("VALUE_CONVERTER")
    );
    assert_eq!(
        header(&dead[0], "__connect.errors.topic").as_deref(),
        Some("orders-avro")
    );
    assert!(
        header(&dead[0], "__connect.errors.exception.message")
            .unwrap()
            .contains("customer"),
        "{:?}",
        header(&dead[0], "__connect.errors.exception.message")
    );
    let records = wait_consume(&broker, "orders-avro", 2);
    assert_eq!(records.len(), 2);
    let schema =
        apache_avro::Schema::parse_str(&std::fs::read_to_string(&schema_file).unwrap()).unwrap();
    let compiled = runnel_schema_registry::client::Compiled::new(schema);
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

/// POSTs `body` to the pipeline's HTTP source once it listens; the status
/// and the JSON answer.
fn post_when_listening(port: u16, body: &'static str) -> (u16, Value) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match http
                .post(format!("http://127.0.0.1:{port}/"))
                .body(body)
                .send()
                .await
            {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = r.text().await.unwrap();
                    break (
                        status,
                        serde_json::from_str(&text).unwrap_or(Value::String(text)),
                    );
                }
                Err(e) if Instant::now() > deadline => panic!("the pipeline never listened: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
}

/// A header of a record, as text.
fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Produces `values` to partition 0 of `topic` in one batch (enqueued
/// together, within the producer's linger time).
fn produce_in_one_go(broker: &TestBroker, topic: &str, values: &[&str]) {
    let producer = broker.producer(&[("linger.ms", "200")]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let deliveries: Vec<_> = values
            .iter()
            .map(|v| {
                producer
                    .send_result(
                        rdkafka::producer::FutureRecord::<(), str>::to(topic)
                            .partition(0)
                            .payload(v),
                    )
                    .unwrap()
            })
            .collect();
        let mut offsets = Vec::new();
        for d in deliveries {
            offsets.push(d.await.unwrap().unwrap().offset);
        }
        assert_eq!(offsets, (0..values.len() as i64).collect::<Vec<_>>());
    });
}

/// The offset the group `group` committed for partition 0 of `topic`.
fn committed(broker: &TestBroker, group: &str, topic: &str) -> Option<i64> {
    let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .ok()?;
    match committed.find_partition(topic, 0)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// Waits (up to 30 s) until `group` committed `offset` on `topic`.
fn wait_committed(broker: &TestBroker, group: &str, topic: &str, offset: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = committed(broker, group, topic);
        if now == Some(offset) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{group} committed {now:?} on {topic}, not {offset}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (up to 60 s) until the text of `path` holds `what`; returns it.
fn wait_text(path: &Path, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(what) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never said {what:?}: {text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pipeline of issue 11: a topic, a filter, a file sink, bad records
/// to a dead-letter topic.
fn orders_pipeline(dir: &Path, name: &str, filter: &str, tolerance: &str) -> (PathBuf, PathBuf) {
    let out = dir.join(format!("{name}.jsonl"));
    let yaml = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &yaml,
        format!(
            "name: {name}\nsource:\n  topic: orders\ntransforms:\n  - filter: {filter}\nsink:\n  connector: file-sink\n  config:\n    file: {}\nerrors:\n  tolerance: {tolerance}\n  dead_letter_topic: dlq\n",
            out.display()
        ),
    )
    .unwrap();
    (yaml, out)
}

const ISSUE_RECORDS: [&str; 3] = [
    r#"{"id":1,"amount":250}"#,
    r#"{"id":2,"amount":"lots"}"#,
    r#"{"id":3,"amount":300}"#,
];

#[test]
fn a_record_its_filter_fails_on_is_dead_lettered_and_the_rest_of_its_batch_is_written() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let (yaml, out) = orders_pipeline(dir.path(), "big-orders", "value.amount >= 100", "all");
    produce_in_one_go(&broker, "orders", &ISSUE_RECORDS);
    let http = crate::harness::free_port();
    let addr = format!("127.0.0.1:{http}");
    let _run = Running::start_with(&yaml, &broker, None, &["--query-addr", &addr]);
    let lines = wait_json_lines(&out, 2);
    assert_eq!(
        lines,
        vec![
            json!({"id": 1, "amount": 250}),
            json!({"id": 3, "amount": 300})
        ]
    );
    let dead = wait_consume(&broker, "dlq", 1);
    assert_eq!(dead.len(), 1);
    // The record as it was read, with the error in Kafka Connect's headers.
    assert_eq!(dead[0].payload().unwrap(), ISSUE_RECORDS[1].as_bytes());
    for (name, value) in [
        ("__connect.errors.topic", "orders"),
        ("__connect.errors.partition", "0"),
        ("__connect.errors.offset", "1"),
        ("__connect.errors.stage", "TRANSFORMATION"),
        ("__connect.errors.connector.name", "big-orders"),
        ("__connect.errors.task.id", "0"),
    ] {
        assert_eq!(header(&dead[0], name).as_deref(), Some(value), "{name}");
    }
    let message = header(&dead[0], "__connect.errors.exception.message").unwrap();
    assert!(
        message.starts_with("filter 'value.amount >= 100': "),
        "{message}"
    );
    // The position moves past all three once both are written.
    wait_committed(&broker, "connect-big-orders", "orders", 3);
    // Its metrics: three read, two written, one failed and dead-lettered,
    // three batches' worth of transform time, the task running.
    let page = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async {
            reqwest::get(format!("http://{addr}/metrics"))
                .await
                .unwrap()
                .text()
                .await
        })
        .unwrap();
    let value =
        |name: &str| crate::harness::metric(&page, &format!("{name}{{connector=\"big-orders\"}}"));
    assert_eq!(
        value("runnel_connect_connector_records_read_total"),
        Some(3.0),
        "{page}"
    );
    assert_eq!(
        value("runnel_connect_connector_records_written_total"),
        Some(2.0),
        "{page}"
    );
    assert_eq!(
        value("runnel_connect_connector_failures_total"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        value("runnel_connect_connector_dead_letters_total"),
        Some(1.0),
        "{page}"
    );
    assert!(value("runnel_connect_connector_transform_batches_total").is_some_and(|n| n >= 1.0));
    assert!(value("runnel_connect_connector_transform_seconds_total").is_some_and(|s| s > 0.0));
    assert_eq!(
        crate::harness::metric(
            &page,
            "runnel_connect_task_state{connector=\"big-orders\",task=\"0\",state=\"RUNNING\"}"
        ),
        Some(1.0),
        "{page}"
    );
}

#[test]
fn with_tolerance_none_a_record_its_filter_fails_on_stops_the_pipeline_before_it() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let (yaml, out) = orders_pipeline(dir.path(), "strict-orders", "value.amount >= 100", "none");
    produce_in_one_go(&broker, "orders", &ISSUE_RECORDS);
    let log = dir.path().join("run.log");
    let _run = Running::start_logging(&yaml, &broker, Some(&log));
    let said = wait_text(&log, "task failed");
    assert!(said.contains("errors.tolerance is none"), "{said}");
    assert!(said.contains("filter 'value.amount >= 100'"), "{said}");
    // Nothing past the bad record is committed, nothing is dead-lettered.
    assert!(
        committed(&broker, "connect-strict-orders", "orders").unwrap_or(0) <= 1,
        "{:?}",
        committed(&broker, "connect-strict-orders", "orders")
    );
    assert!(broker
        .consume("dlq", 1, 1, Duration::from_secs(2))
        .is_empty());
    let written = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(!written.contains("\"id\":3"), "{written}");
}

#[test]
fn a_filter_on_a_field_the_records_lack_dead_letters_them_instead_of_dropping_them() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let (yaml, out) = orders_pipeline(dir.path(), "typo", "value.amout >= 100", "all");
    produce_in_one_go(&broker, "orders", &[ISSUE_RECORDS[0], ISSUE_RECORDS[2]]);
    let _run = Running::start(&yaml, &broker);
    let dead = wait_consume(&broker, "dlq", 2);
    assert_eq!(dead.len(), 2);
    for d in &dead {
        let message = header(d, "__connect.errors.exception.message").unwrap();
        assert!(
            message.contains("the record has no field value.amout"),
            "{message}"
        );
    }
    wait_committed(&broker, "connect-typo", "orders", 2);
    assert_eq!(std::fs::read_to_string(&out).unwrap_or_default(), "");
}

#[test]
fn an_http_pipeline_answers_what_became_of_each_record_and_dead_letters_what_its_filter_fails_on() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = dir.path().join("intake.yaml");
    std::fs::write(
        &yaml,
        format!(
            "name: intake\nsource:\n  connector: http-source\n  config:\n    listen: 127.0.0.1:{port}\ntransforms:\n  - filter: value.amount >= 100\nsink:\n  topic: big\nerrors:\n  tolerance: all\n  dead_letter_topic: intake-dlq\n"
        ),
    )
    .unwrap();
    let _run = Running::start(&yaml, &broker);
    let (status, body) = post_when_listening(
        port,
        r#"[{"id":1,"amount":250},{"id":2,"amount":"lots"},{"id":3,"amount":300},{"id":4,"amount":5}]"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            &body["records"],
            &body["stored"],
            &body["filtered"],
            &body["dead_lettered"]
        ),
        (&json!(4), &json!(2), &json!(1), &json!(1)),
        "{body}"
    );
    assert_eq!(body["errors"][0]["record"], 1);
    assert_eq!(body["errors"][0]["dead_lettered"], true);
    // Answered means stored: both are readable at once.
    let stored = broker.consume("big", 1, 2, Duration::from_secs(10));
    let ids: Vec<Value> = stored
        .iter()
        .map(|m| serde_json::from_slice::<Value>(m.payload().unwrap()).unwrap()["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(1), json!(3)]);
    let dead = wait_consume(&broker, "intake-dlq", 1);
    assert_eq!(
        serde_json::from_slice::<Value>(dead[0].payload().unwrap()).unwrap(),
        json!({"id": 2, "amount": "lots"})
    );
    assert_eq!(
        header(&dead[0], "__connect.errors.stage").as_deref(),
        Some("TRANSFORMATION")
    );
    assert_eq!(
        header(&dead[0], "__connect.errors.topic").as_deref(),
        Some("big")
    );
    // A source record has no partition or offset to name.
    assert_eq!(header(&dead[0], "__connect.errors.offset"), None);
}

#[test]
fn an_http_record_that_does_not_fit_the_avro_schema_is_refused_without_a_dead_letter_topic() {
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
        &[
            ("127.0.0.1:8091", format!("127.0.0.1:{port}")),
            ("  dead_letter_topic: orders-avro-dlq", String::new()),
        ],
    );
    let _run = Running::start(&file, &broker);
    let (status, body) = post_when_listening(
        port,
        r#"[{"id":1,"customer":"ann","amount_cents":1250},{"id":2,"amount_cents":5}]"#,
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        (&body["records"], &body["stored"], &body["failed"]),
        (&json!(2), &json!(1), &json!(1)),
        "{body}"
    );
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("1 of 2 record(s) could not be stored: record 1: VALUE_CONVERTER: "),
        "{error}"
    );
    assert!(error.contains("customer"), "{error}");
    assert_eq!(body["errors"][0]["dead_lettered"], false);
    // The pipeline goes on: the next good order is stored.
    let (status, body) = post_when_listening(port, r#"{"id":3,"customer":"cy","amount_cents":7}"#);
    assert_eq!((status, &body["stored"]), (200, &json!(1)), "{body}");
    assert_eq!(wait_consume(&broker, "orders-avro", 2).len(), 2);
}

#[test]
fn pipeline_validate_checks_field_names_against_the_source_topics_registered_schema() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("order.avsc");
    std::fs::write(
        &schema,
        r#"{"type": "record", "name": "Order", "fields": [
            {"name": "id", "type": "long"},
            {"name": "amount", "type": "long"},
            {"name": "status", "type": "string"}]}"#,
    )
    .unwrap();
    let out = broker.cli(
        &[
            "schema",
            "register",
            "orders-value",
            schema.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = dir.path().join("typo.yaml");
    std::fs::write(
        &yaml,
        "name: typo\nsource:\n  topic: orders\n  format: avro\ntransforms:\n  - filter: value.amout >= 100\n  - mask: [stauts]\nsink:\n  topic: big\n",
    )
    .unwrap();
    let file = yaml.to_str().unwrap();
    let registry = broker.registry_url();
    let (ok, _, err) = runnel(&["pipeline", "validate", file, "--registry-url", &registry]);
    assert!(!ok, "{err}");
    assert!(
        err.contains(&format!(
            "{file}:6:13: the schema has no field value.amout\n  hint: did you mean value.amount?"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:7:12: the schema has no field value.stauts\n  hint: did you mean value.status?"
        )),
        "{err}"
    );
    // `pipeline run` refuses it too, before anything runs.
    let (ok, _, err) = runnel(&[
        "pipeline",
        "run",
        file,
        "--bootstrap",
        &broker.addr(),
        "--registry-url",
        &registry,
    ]);
    assert!(!ok);
    assert!(err.contains("value.amout"), "{err}");
    // Fixed, it validates; without a registry it says what it skipped.
    std::fs::write(
        &yaml,
        "name: typo\nsource:\n  topic: orders\n  format: avro\ntransforms:\n  - filter: value.amount >= 100\n  - mask: [status]\nsink:\n  topic: big\n",
    )
    .unwrap();
    let (ok, out, err) = runnel(&["pipeline", "validate", file, "--registry-url", &registry]);
    assert!(ok, "{err}");
    assert!(out.contains(": ok ("), "{out}");
    let (ok, _, err) = runnel(&[
        "pipeline",
        "validate",
        file,
        "--registry-url",
        &format!("http://127.0.0.1:{}", free_port()),
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("note: field names not checked against orders-value"),
        "{err}"
    );
}

#[test]
fn pipeline_validate_reports_unknown_connector_keys_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("keys.yaml");
    std::fs::write(
        &yaml,
        "name: keys\nsource:\n  connector: file-source\n  config:\n    fiel: in.txt\nsink:\n  topic: out\n",
    )
    .unwrap();
    let file = yaml.to_str().unwrap();
    let (ok, _, err) = runnel(&["pipeline", "validate", file]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{file}:5:5: source.config.fiel: Unknown configuration 'fiel' for file-source; did you mean 'file'?"
        )),
        "{err}"
    );
    // A key that is merely unknown is a warning: the pipeline is valid.
    std::fs::write(
        &yaml,
        "name: keys\nsource:\n  topic: in\nsink:\n  connector: file-sink\n  config:\n    file: out.txt\n    fsync_every: 10\n",
    )
    .unwrap();
    let (ok, out, err) = runnel(&["pipeline", "validate", file]);
    assert!(ok, "{err}");
    assert!(out.contains(": ok ("), "{out}");
    assert!(
        err.contains(&format!(
            "{file}:8:5: warning: sink.config.fsync_every: Unknown configuration 'fsync_every' for file-sink is ignored"
        )),
        "{err}"
    );
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
    let compiled = runnel_schema_registry::client::Compiled::new(schema);
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

const CLICK_USERS: usize = 20;

/// Produces clicks `from..from + count` (user `i % CLICK_USERS`) to
/// `topic`, pausing `pace` every 50 records.
async fn produce_clicks(
    broker: &TestBroker,
    topic: &str,
    from: usize,
    count: usize,
    pace: Duration,
) {
    let producer = broker.producer(&[("acks", "all"), ("enable.idempotence", "true")]);
    for i in from..from + count {
        let user = format!("user-{}", i % CLICK_USERS);
        let value = json!({"user": user, "n": i}).to_string();
        producer
            .send(
                rdkafka::producer::FutureRecord::to(topic)
                    .key(&user)
                    .payload(&value),
                Duration::from_secs(30),
            )
            .await
            .expect("produce a click");
        if !pace.is_zero() && i % 50 == 0 {
            tokio::time::sleep(pace).await;
        }
    }
}

/// The latest aggregate (`field` of the value) per key in `topic` (the
/// sum of the latest of each of its windows).
fn latest_aggregates(
    broker: &TestBroker,
    topic: &str,
    field: &str,
) -> std::collections::BTreeMap<String, i64> {
    let mut latest = std::collections::BTreeMap::new();
    for m in broker.consume(topic, 3, 1_000_000, Duration::from_millis(700)) {
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        let value: Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
        let n = value[field]
            .as_i64()
            .unwrap_or_else(|| panic!("no {field} in {value}"));
        // Per key, the output partition keeps the order of the updates.
        latest.insert((key, value["window_start"].as_i64()), n);
    }
    // A user's windows together.
    let mut per_key = std::collections::BTreeMap::new();
    for ((key, _), n) in latest {
        *per_key.entry(key).or_insert(0) += n;
    }
    per_key
}

/// Waits (up to `timeout`) until every user's latest aggregate is at
/// least `per_user`; returns the aggregates.
async fn wait_aggregates(
    broker: &TestBroker,
    topic: &str,
    field: &str,
    per_user: i64,
    timeout: Duration,
) -> std::collections::BTreeMap<String, i64> {
    let deadline = Instant::now() + timeout;
    loop {
        let latest = latest_aggregates(broker, topic, field);
        let done = latest.len() == CLICK_USERS && latest.values().all(|n| *n >= per_user);
        if done || Instant::now() > deadline {
            return latest;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A pipeline file in `dir` counting clicks per user with `steps` (the
/// steps after `group_by`; from `<name>-clicks` to `<name>-counts`, both
/// created with 3 partitions): (file, input, output).
async fn click_pipeline(
    broker: &TestBroker,
    dir: &Path,
    name: &str,
    steps: &str,
) -> (PathBuf, String, String) {
    let (input, output) = (format!("{name}-clicks"), format!("{name}-counts"));
    crate::harness::create_topic(broker, &input, 3, &[]).await;
    crate::harness::create_topic(broker, &output, 3, &[]).await;
    let yaml = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &yaml,
        format!(
            "name: {name}\nsource:\n  topic: {input}\ntransforms:\n  - filter: has(value.user)\n  - group_by: value.user\n{steps}sink:\n  topic: {output}\n"
        ),
    )
    .unwrap();
    (yaml, input, output)
}

async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let text = http.get(url).send().await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
}

/// A stateful pipeline (`steps` after its group_by, with the result in
/// the value's `field`) SIGKILLed mid-stream and started again: the final aggregate of every
/// user covers each of its clicks (at least once: some may count twice).
async fn a_killed_stateful_pipeline_restarts_with_its_state(name: &str, steps: &str, field: &str) {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let (yaml, input, output) = click_pipeline(&broker, dir.path(), name, steps).await;
    let log = dir.path().join("run.log");
    let mut run = Running::start_logging(&yaml, &broker, Some(&log));
    wait_text(&log, "running as _runnel_pipeline.");
    produce_clicks(&broker, &input, 0, 200, Duration::ZERO).await;
    let first = wait_aggregates(&broker, &output, field, 10, Duration::from_secs(60)).await;
    assert_eq!(
        first.len(),
        CLICK_USERS,
        "the pipeline never aggregated: {first:?}"
    );

    // SIGKILL while clicks flow, once the pipeline has counted some of
    // them.
    const TOTAL: usize = 3_000;
    let counted_before_kill = tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let total: i64 = latest_aggregates(&broker, &output, field).values().sum();
                    if total > 500 || Instant::now() > deadline {
                        let _ = run.0.kill();
                        let _ = run.0.wait();
                        return total;
                    }
                }
            });
            tokio::runtime::Handle::current().block_on(produce_clicks(
                &broker,
                &input,
                200,
                1_800,
                Duration::from_millis(50),
            ));
            watcher.join().unwrap()
        })
    });
    assert!(
        (500..2_000).contains(&counted_before_kill),
        "killed after {counted_before_kill} counted: not mid-stream"
    );
    // Started again with its stores on disk and served over HTTP.
    let log2 = dir.path().join("run2.log");
    let query = format!("127.0.0.1:{}", crate::harness::free_port());
    let state = dir.path().join("state");
    let _again = Running::start_with(
        &yaml,
        &broker,
        Some(&log2),
        &[
            "--query-addr",
            &query,
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    produce_clicks(&broker, &input, 2_000, TOTAL - 2_000, Duration::ZERO).await;
    let per_user = (TOTAL / CLICK_USERS) as i64;
    let last = wait_aggregates(&broker, &output, field, per_user, Duration::from_secs(120)).await;
    let short: Vec<_> = last.iter().filter(|(_, n)| **n < per_user).collect();
    assert!(
        last.len() == CLICK_USERS && short.is_empty(),
        "every click is in the aggregates after the restart (expected {per_user} per user): short {short:?} of {} users\n{}",
        last.len(),
        std::fs::read_to_string(&log2).unwrap_or_default()
    );
    // The aggregates' store answers what the output topic says.
    let http = reqwest::Client::new();
    let stores = get_json(&http, &format!("http://{query}/stores")).await;
    let store = stores
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .find(|n| n.starts_with("agg-"))
        .unwrap_or_else(|| panic!("no aggregate store in {stores}"));
    assert!(
        state.join("_runnel_pipeline.".to_string() + name).is_dir(),
        "the stores are under --state-dir"
    );
    if field == "count" {
        for (user, count) in &last {
            let answer = get_json(&http, &format!("http://{query}/stores/{store}/{user}")).await;
            // A key-value store answers its value, a window store its
            // windows (the latest last).
            let value = answer["value"].as_i64().or_else(|| {
                answer["windows"]
                    .as_array()
                    .and_then(|w| w.last())
                    .and_then(|w| w["value"].as_i64())
            });
            assert_eq!(value, Some(*count), "{user}: {answer}");
        }
    }
    let total: i64 = last.values().sum();
    eprintln!(
        "{name}: killed after {counted_before_kill} counted; {total} counted for {TOTAL} clicks ({} twice)",
        total - TOTAL as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateful_pipeline_killed_mid_stream_counts_every_record_after_a_restart() {
    a_killed_stateful_pipeline_restarts_with_its_state(
        "click-count",
        "  - aggregate: count\n",
        "count",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windowed_pipeline_killed_mid_stream_keeps_its_windows_after_a_restart() {
    a_killed_stateful_pipeline_restarts_with_its_state(
        "click-window",
        "  - window: {tumbling: 1d, grace: 1h}\n  - aggregate: count\n",
        "count",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_aggregate_keeps_its_state_in_the_store_across_a_sigkill() {
    let wasm = plugin_wasm("running-count");
    a_killed_stateful_pipeline_restarts_with_its_state(
        "click-wasm",
        &format!("  - aggregate: {{plugin: {}}}\n", wasm.display()),
        "value",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_of_one_stateful_pipeline_share_its_partitions() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let (yaml, input, output) =
        click_pipeline(&broker, dir.path(), "shared", "  - aggregate: count\n").await;
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let a = Running::start_logging(&yaml, &broker, Some(&log_a));
    let _b = Running::start_logging(&yaml, &broker, Some(&log_b));
    wait_text(&log_a, "running as _runnel_pipeline.shared");
    wait_text(&log_b, "running as _runnel_pipeline.shared");
    // Both are members of the application's group.
    let consumer = broker.consumer();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let groups = consumer
            .fetch_group_list(Some("_runnel_pipeline.shared"), Duration::from_secs(5))
            .unwrap();
        let group = groups.groups().first();
        let members = group.map_or(0, |g| g.members().len());
        if members == 2 && group.is_some_and(|g| g.state() == "Stable") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group has {members} member(s), not 2"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    const TOTAL: usize = 1_000;
    produce_clicks(&broker, &input, 0, TOTAL, Duration::ZERO).await;
    let per_user = (TOTAL / CLICK_USERS) as i64;
    let counts =
        wait_aggregates(&broker, &output, "count", per_user, Duration::from_secs(60)).await;
    assert!(
        counts.len() == CLICK_USERS && counts.values().all(|n| *n == per_user),
        "each click counted once between the two runs: {counts:?}"
    );

    // One run stopped with SIGTERM commits, leaves the group and says so;
    // the other takes its partitions over with their counts.
    unsafe { libc::kill(a.0.id() as i32, libc::SIGTERM) };
    wait_text(&log_a, "pipeline shared stopped");
    produce_clicks(&broker, &input, TOTAL, TOTAL, Duration::ZERO).await;
    let counts = wait_aggregates(
        &broker,
        &output,
        "count",
        2 * per_user,
        Duration::from_secs(60),
    )
    .await;
    assert!(
        counts.len() == CLICK_USERS && counts.values().all(|n| *n == 2 * per_user),
        "each click counted once after one run stopped: {counts:?}"
    );
}

/// `GET /api/pipelines` of the broker's console until `ready` holds for
/// the answer (60 s at most).
async fn wait_pipelines(broker: &TestBroker, ready: impl Fn(&Value) -> bool) -> Value {
    let http = reqwest::Client::new();
    let url = format!("{}/api/pipelines", broker.admin_url());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = get_json(&http, &url).await;
        if ready(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "never ready: {answer}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn pipeline<'a>(answer: &'a Value, name: &str) -> Option<&'a Value> {
    answer["pipelines"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

/// The console shows `runnel pipeline run` processes it does not run
/// itself: each pipeline's kind, its group's members (one per process),
/// connector and task states, lag and internal topics — and that they
/// stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_pipelines_run_elsewhere_with_their_processes_connectors_and_lag() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    crate::harness::create_topic(&broker, "relay-in", 2, &[]).await;
    let relay = dir.path().join("relay.yaml");
    std::fs::write(
        &relay,
        "name: relay\nsource:\n  topic: relay-in\ntransforms:\n  - filter: has(value.user)\nsink:\n  topic: relay-out\n",
    )
    .unwrap();
    let relay_log = dir.path().join("relay.log");
    let mut relay_run = Running::start_logging(&relay, &broker, Some(&relay_log));
    let (counts, input, _) =
        click_pipeline(&broker, dir.path(), "tally", "  - aggregate: count\n").await;
    let tally_log = dir.path().join("tally.log");
    let _tally_run = Running::start_logging(&counts, &broker, Some(&tally_log));
    wait_text(&relay_log, "running");
    wait_text(&tally_log, "running as _runnel_pipeline.tally");
    produce_clicks(&broker, "relay-in", 0, 100, Duration::ZERO).await;
    produce_clicks(&broker, &input, 0, 100, Duration::ZERO).await;

    // Both run: one process each, the relay's connector and task RUNNING,
    // everything consumed (lag 0).
    let running = |a: &Value| {
        let (Some(r), Some(t)) = (pipeline(a, "relay"), pipeline(a, "tally")) else {
            return false;
        };
        let relay_tasks_running = r["connectors"].as_array().is_some_and(|cs| {
            !cs.is_empty()
                && cs.iter().all(|c| {
                    c["state"] == "RUNNING"
                        && c["tasks"].as_array().is_some_and(|ts| {
                            !ts.is_empty() && ts.iter().all(|t| t["state"] == "RUNNING")
                        })
                })
        });
        r["instances"].as_array().map(Vec::len) == Some(1)
            && t["instances"].as_array().map(Vec::len) == Some(1)
            && relay_tasks_running
            && r["lag"] == 0
            && t["lag"] == 0
    };
    let answer = wait_pipelines(&broker, running).await;
    let r = pipeline(&answer, "relay").unwrap();
    let t = pipeline(&answer, "tally").unwrap();
    assert_eq!(r["kind"], "connectors", "{r}");
    assert_eq!(t["kind"], "streams", "{t}");
    assert_eq!(t["state"], "Stable", "{t}");
    let topics = |p: &Value| p["topics"].to_string();
    assert!(topics(r).contains("_runnel_pipeline.relay.status"), "{r}");
    assert!(topics(t).contains("-changelog"), "{t}");
    assert!(!topics(r).contains("tally") && !topics(t).contains("relay"));

    // The relay stops: no process left, its last states still shown.
    let _ = relay_run.0.kill();
    let _ = relay_run.0.wait();
    let answer = wait_pipelines(&broker, |a| {
        pipeline(a, "relay").is_some_and(|r| r["instances"].as_array().map(Vec::len) == Some(0))
    })
    .await;
    let r = pipeline(&answer, "relay").unwrap();
    assert!(
        r["connectors"].as_array().is_some_and(|c| !c.is_empty()),
        "{r}"
    );
    // Records for the stopped relay pile up as lag.
    produce_clicks(&broker, "relay-in", 100, 30, Duration::ZERO).await;
    wait_pipelines(&broker, |a| {
        pipeline(a, "relay").is_some_and(|r| r["lag"] == 30)
    })
    .await;
}
