//! The web console on the admin listener: its assets, the JSON API behind
//! it (each endpoint's answers and refusals), the write protections, the
//! answers when the registry or connect is off, and the browser flows in
//! Chromium (`tests/browser/`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::ClientConfig;
use serde_json::{json, Value};

use crate::harness::{create_topic, plugin_wasm, TestBroker, BIN};

/// One answer: status, content type, body (JSON when it parses).
struct Answer {
    status: u16,
    content_type: String,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

/// Requests to a console: writes carry what the console's own page sends
/// unless a test takes it away.
struct Console {
    base: String,
    http: reqwest::Client,
}

impl Console {
    async fn new(broker: &TestBroker) -> Console {
        let console = Console {
            base: broker.admin_url(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        // The admin listener starts after the Kafka one.
        let deadline = Instant::now() + Duration::from_secs(30);
        while console.get("/").await.status != 200 {
            assert!(Instant::now() < deadline, "the console never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        console
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        match request.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let content_type = r
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap_or_default().to_string())
                    .unwrap_or_default();
                Answer {
                    status,
                    content_type,
                    text: r.text().await.unwrap_or_default(),
                }
            }
            Err(e) => Answer {
                status: 0,
                content_type: String::new(),
                text: e.to_string(),
            },
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    fn write(&self, method: reqwest::Method, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("x-runnel-console", "1")
            .body(body.to_string())
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(self.write(reqwest::Method::POST, path, &body))
            .await
    }

    async fn put(&self, path: &str, body: Value) -> Answer {
        self.send(self.write(reqwest::Method::PUT, path, &body))
            .await
    }

    async fn delete(&self, path: &str, body: Value) -> Answer {
        self.send(self.write(reqwest::Method::DELETE, path, &body))
            .await
    }
}

/// The answer is an error with the JSON body every endpoint uses.
fn assert_error(a: &Answer, status: u16, contains: &str) {
    assert_eq!(a.status, status, "{}", a.text);
    let body = a.json();
    assert_eq!(body["error_code"], status, "{}", a.text);
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(contains),
        "'{message}' does not say '{contains}'"
    );
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_and_its_assets_are_served_from_the_binary_with_their_types() {
    let broker = TestBroker::start_alone(&[]);
    let console = Console::new(&broker).await;
    let index = console.get("/").await;
    assert!(
        index.content_type.starts_with("text/html"),
        "{}",
        index.content_type
    );
    assert!(index.text.contains("/console/app.js"));
    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("pages.js", "text/javascript"),
        ("api.js", "text/javascript"),
        ("charts.js", "text/javascript"),
        ("style.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let a = console.get(&format!("/console/{file}")).await;
        assert_eq!(a.status, 200, "{file}");
        assert!(
            a.content_type.starts_with(kind),
            "{file}: {}",
            a.content_type
        );
        assert!(!a.text.is_empty());
    }
    // Nothing is loaded from elsewhere.
    for file in [
        "app.js",
        "dom.js",
        "pages.js",
        "api.js",
        "charts.js",
        "style.css",
    ] {
        let a = console.get(&format!("/console/{file}")).await;
        assert!(!a.text.contains("https://"), "{file} names a remote URL");
    }
    assert_error(&console.get("/console/nope.js").await, 404, "nope.js");
    assert_error(&console.get("/api/nope").await, 404, "no such API endpoint");
    // The admin listener's own routes are still there.
    assert_eq!(console.get("/v1/status/ready").await.status, 200);
    assert_eq!(console.get("/metrics").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_json_the_console_header_and_a_matching_origin_and_every_request_a_local_host()
{
    let broker = TestBroker::start_alone(&[
        "--admin-allowed-hosts",
        "console.runnel.test,*.ops.runnel.test",
    ]);
    let console = Console::new(&broker).await;
    let url = format!("{}/api/topics", console.base);
    let body = json!({"name": "guarded"}).to_string();
    // A form post a cross-site page could make.
    let a = console
        .send(
            console
                .http
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-runnel-console", "1")
                .body("name=guarded"),
        )
        .await;
    assert_error(&a, 403, "Content-Type: application/json");
    // A "simple" text/plain fetch.
    let a = console
        .send(
            console
                .http
                .post(&url)
                .header("content-type", "text/plain")
                .body(body.clone()),
        )
        .await;
    assert_error(&a, 403, "Content-Type: application/json");
    // JSON without the console's header.
    let a = console
        .send(
            console
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone()),
        )
        .await;
    assert_error(&a, 403, "X-Runnel-Console");
    // Everything but from another origin.
    let a = console
        .send(
            console
                .write(
                    reqwest::Method::POST,
                    "/api/topics",
                    &json!({"name": "guarded"}),
                )
                .header("origin", "http://evil.example"),
        )
        .await;
    assert_error(&a, 403, "Origin");
    // A DNS-rebinding page: the console's address under another name.
    for path in ["/api/cluster", "/"] {
        let a = console
            .send(
                console
                    .http
                    .get(format!("{}{path}", console.base))
                    .header("host", format!("rebind.evil.example:{}", broker.admin_port)),
            )
            .await;
        assert_error(&a, 403, "Host");
    }
    let a = console
        .send(
            console
                .write(
                    reqwest::Method::DELETE,
                    "/api/topics/guarded",
                    &json!({"confirm": "guarded"}),
                )
                .header("host", "rebind.evil.example"),
        )
        .await;
    assert_error(&a, 403, "Host");
    // None of these created the topic.
    let topics = console.get("/api/topics").await.json();
    assert!(!topics.to_string().contains("guarded"), "{topics}");
    // Names given with --admin-allowed-hosts: exact, or a subdomain of a
    // wildcard; not the wildcard's own domain.
    for (host, status) in [
        ("console.runnel.test", 200),
        ("CONSOLE.runnel.test", 200),
        ("a.ops.runnel.test", 200),
        ("ops.runnel.test", 403),
        ("evil.console.runnel.test", 403),
    ] {
        let a = console
            .send(
                console
                    .http
                    .get(format!("{}/api/cluster", console.base))
                    .header("host", format!("{host}:{}", broker.admin_port)),
            )
            .await;
        assert_eq!(a.status, status, "Host {host}: {}", a.text);
    }
    let named = format!("console.runnel.test:{}", broker.admin_port);
    let a = console
        .send(
            console
                .write(
                    reqwest::Method::POST,
                    "/api/topics",
                    &json!({"name": "named-host"}),
                )
                .header("origin", format!("http://{named}"))
                .header("host", &named),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    // A value that is not a host name stops the start with the reason.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::harness::BIN)
        .args([
            "serve",
            "--kafka-addr",
            "127.0.0.1:0",
            "--admin-allowed-hosts",
        ])
        .arg("http://console.runnel.test")
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--admin-allowed-hosts") && err.contains("not a host name"),
        "{err}"
    );
    // The console's own page: same origin, localhost by name.
    let a = console
        .send(
            console
                .write(
                    reqwest::Method::POST,
                    "/api/topics",
                    &json!({"name": "guarded"}),
                )
                .header("origin", format!("http://localhost:{}", broker.admin_port))
                .header("host", format!("localhost:{}", broker.admin_port)),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_listed_described_reconfigured_and_deleted_with_the_brokers_checks() {
    let broker = TestBroker::start_alone(&[]);
    let console = Console::new(&broker).await;
    let a = console
        .post(
            "/api/topics",
            json!({"name": "orders", "partitions": 3, "replication_factor": 1,
                   "configs": {"retention.ms": "86400000"}}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.json()["partitions"], 3);
    assert_error(
        &console.post("/api/topics", json!({"name": "orders"})).await,
        409,
        "orders",
    );
    assert_error(
        &console
            .post("/api/topics", json!({"name": "bad name!"}))
            .await,
        400,
        "cannot create topic",
    );
    assert_error(
        &console
            .post(
                "/api/topics",
                json!({"name": "t2", "configs": {"retention.ms": "soon"}}),
            )
            .await,
        400,
        "cannot create topic",
    );
    assert_error(
        &console
            .post("/api/topics", json!({"name": "t3", "partitions": 0}))
            .await,
        400,
        "partitions",
    );
    assert_error(
        &console.post("/api/topics", json!({"nom": "t4"})).await,
        400,
        "nom",
    );
    let a = console
        .send(
            console
                .http
                .post(format!("{}/api/topics", console.base))
                .header("content-type", "application/json")
                .header("x-runnel-console", "1")
                .body("{not json"),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.json()["error_code"], 400);

    let list = console.get("/api/topics").await.json();
    let orders = list["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .expect("orders listed")
        .clone();
    assert_eq!(orders["partitions"], 3);
    assert_eq!(orders["replication_factor"], 1);
    assert_eq!(orders["internal"], false);

    let d = console.get("/api/topics/orders").await.json();
    let partitions = d["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    let node = console.get("/api/cluster").await.json()["node_id"].clone();
    assert_eq!(partitions[0]["leader"], node);
    assert_eq!(partitions[0]["isr"], json!([node]));
    assert_eq!(partitions[0]["log_start_offset"], 0);
    assert_eq!(partitions[0]["log_end_offset"], 0);
    let config = |d: &Value, name: &str| {
        d["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no config {name}"))
    };
    assert_eq!(config(&d, "retention.ms")["value"], "86400000");
    assert_eq!(config(&d, "retention.ms")["source"], "topic");

    let a = console
        .post(
            "/api/topics/orders/configs",
            json!({"set": {"cleanup.policy": "compact"}, "delete": ["retention.ms"]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let d = console.get("/api/topics/orders").await.json();
    assert_eq!(config(&d, "cleanup.policy")["value"], "compact");
    assert_ne!(config(&d, "retention.ms")["source"], "topic");
    assert_error(
        &console
            .post(
                "/api/topics/orders/configs",
                json!({"set": {"cleanup.policy": "shred"}}),
            )
            .await,
        400,
        "cannot alter topic",
    );
    assert_error(
        &console.post("/api/topics/orders/configs", json!({})).await,
        400,
        "nothing to change",
    );

    assert_error(
        &console
            .delete("/api/topics/orders", json!({"confirm": "order"}))
            .await,
        400,
        "confirm",
    );
    assert_error(
        &console
            .delete("/api/topics/nope", json!({"confirm": "nope"}))
            .await,
        404,
        "nope",
    );
    let a = console
        .delete("/api/topics/orders", json!({"confirm": "orders"}))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_error(&console.get("/api/topics/orders").await, 404, "orders");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_produced_and_browsed_by_offset_time_and_text_with_json_and_avro_shown_decoded()
{
    let broker = TestBroker::start();
    let console = Console::new(&broker).await;
    create_topic(&broker, "events", 2, &[]).await;
    let before = runnel_core::util::now_ms();
    for i in 0..5 {
        let a = console
            .post(
                "/api/topics/events/messages",
                json!({"partition": 0, "key": format!("k{i}"),
                       "value": format!("{{\"n\": {i}, \"word\": \"w{i}\"}}"),
                       "headers": [{"key": "source", "value": "test"}]}),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        assert_eq!(a.json()["offset"], i);
        assert_eq!(a.json()["partition"], 0);
    }
    let a = console
        .post(
            "/api/topics/events/messages",
            json!({"partition": 1, "value": "plain text"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_error(
        &console
            .post("/api/topics/none/messages", json!({"value": "x"}))
            .await,
        404,
        "none",
    );
    assert_error(
        &console
            .post(
                "/api/topics/events/messages",
                json!({"partition": 7, "value": "x"}),
            )
            .await,
        400,
        "partition 7",
    );

    // The newest, newest first, JSON pretty-printed with headers.
    let r = console
        .get("/api/topics/events/messages?partition=0&limit=2")
        .await
        .json();
    let m = r["messages"].as_array().unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0]["offset"], 4);
    assert_eq!(m[0]["key"]["text"], "k4");
    assert_eq!(m[0]["value"]["encoding"], "json");
    assert!(
        m[0]["value"]["text"]
            .as_str()
            .unwrap()
            .contains("\n  \"n\": 4"),
        "{}",
        m[0]["value"]
    );
    assert_eq!(m[0]["headers"], json!([{"key": "source", "value": "test"}]));
    // From an offset, in order.
    let r = console
        .get("/api/topics/events/messages?partition=0&mode=offset&offset=3")
        .await
        .json();
    let offsets: Vec<i64> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, vec![3, 4]);
    // From a time: everything was produced after `before`.
    let r = console
        .get(&format!(
            "/api/topics/events/messages?partition=0&mode=timestamp&timestamp={before}"
        ))
        .await
        .json();
    assert_eq!(r["messages"].as_array().unwrap().len(), 5);
    // Text search over every partition.
    let r = console
        .get("/api/topics/events/messages?search=W3")
        .await
        .json();
    let m = r["messages"].as_array().unwrap();
    assert_eq!(m.len(), 1, "{r}");
    assert_eq!(m[0]["key"]["text"], "k3");
    let r = console
        .get("/api/topics/events/messages?search=plain")
        .await
        .json();
    assert_eq!(r["messages"][0]["value"]["encoding"], "text");
    // Bounds and bad input.
    let r = console
        .get("/api/topics/events/messages?limit=100000")
        .await
        .json();
    assert_eq!(r["limit"], 500);
    assert_error(
        &console
            .get("/api/topics/events/messages?mode=sideways")
            .await,
        400,
        "mode",
    );
    assert_error(
        &console.get("/api/topics/events/messages?mode=offset").await,
        400,
        "offset",
    );
    assert_error(
        &console.get("/api/topics/events/messages?limit=lots").await,
        400,
        "limit",
    );
    assert_error(
        &console.get("/api/topics/events/messages?partition=9").await,
        404,
        "partition 9",
    );
    assert_error(&console.get("/api/topics/none/messages").await, 404, "none");

    // Confluent-framed Avro, decoded through the registry.
    let schema = r#"{"type":"record","name":"Reading","fields":[{"name":"sensor","type":"string"},{"name":"celsius","type":"double"}]}"#;
    let a = console
        .post(
            "/api/registry/subjects/readings-value/versions",
            json!({"schema": schema}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let id = a.json()["id"].as_i64().unwrap() as i32;
    let parsed = apache_avro::Schema::parse_str(schema).unwrap();
    let mut record = apache_avro::types::Record::new(&parsed).unwrap();
    record.put("sensor", "s-1");
    record.put("celsius", 21.5);
    let body = apache_avro::writer::datum::GenericDatumWriter::builder(&parsed)
        .build()
        .unwrap()
        .write_value_to_vec(record)
        .unwrap();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&id.to_be_bytes());
    framed.extend_from_slice(&body);
    create_topic(&broker, "readings", 1, &[]).await;
    broker
        .producer(&[])
        .send(
            FutureRecord::<(), _>::to("readings").payload(&framed),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let r = console.get("/api/topics/readings/messages").await.json();
    let v = &r["messages"][0]["value"];
    assert_eq!(v["encoding"], "avro", "{r}");
    assert_eq!(v["schema_id"], id);
    let decoded: Value = serde_json::from_str(v["text"].as_str().unwrap()).unwrap();
    assert_eq!(decoded, json!({"sensor": "s-1", "celsius": 21.5}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_show_members_and_lag_and_only_an_empty_group_is_reset() {
    let broker = TestBroker::start_alone(&[]);
    let console = Console::new(&broker).await;
    create_topic(&broker, "jobs", 1, &[]).await;
    for i in 0..10 {
        let a = console
            .post(
                "/api/topics/jobs/messages",
                json!({"value": format!("job {i}")}),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", "workers")
        .set("client.id", "worker-1")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["jobs"]).unwrap();
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while read < 4 && Instant::now() < deadline {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            read += 1;
        }
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("jobs", 0, rdkafka::Offset::Offset(4))
        .unwrap();
    consumer.commit(&tpl, CommitMode::Sync).unwrap();

    let g = console.get("/api/groups/workers").await.json();
    assert_eq!(g["state"], "Stable", "{g}");
    let members = g["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["client_id"], "worker-1");
    assert_eq!(
        members[0]["assignments"],
        json!([{"topic": "jobs", "partition": 0}])
    );
    assert_eq!(g["offsets"][0]["committed"], 4);
    assert_eq!(g["offsets"][0]["log_end_offset"], 10);
    assert_eq!(g["offsets"][0]["lag"], 6);
    assert_eq!(g["lag"], 6);
    let list = console.get("/api/groups").await.json();
    let listed = list["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group_id"] == "workers")
        .expect("workers listed")
        .clone();
    assert_eq!(listed["members"], 1);
    assert_eq!(listed["lag"], 6.0);

    assert_error(
        &console
            .post(
                "/api/groups/workers/reset-offsets",
                json!({"to": "earliest"}),
            )
            .await,
        409,
        "stop its consumers",
    );
    drop(consumer);
    wait_until("the group to empty", || async {
        console.get("/api/groups/workers").await.json()["state"] == "Empty"
    })
    .await;
    assert_error(
        &console
            .post(
                "/api/groups/workers/reset-offsets",
                json!({"to": "sideways"}),
            )
            .await,
        400,
        "earliest",
    );
    assert_error(
        &console
            .post("/api/groups/workers/reset-offsets", json!({"to": "offset"}))
            .await,
        400,
        "offset",
    );
    let lag_after = |to: Value| {
        let console = &console;
        async move {
            let a = console.post("/api/groups/workers/reset-offsets", to).await;
            assert_eq!(a.status, 200, "{}", a.text);
            console.get("/api/groups/workers").await.json()["lag"].clone()
        }
    };
    assert_eq!(lag_after(json!({"to": "earliest"})).await, 10);
    assert_eq!(lag_after(json!({"to": "latest"})).await, 0);
    assert_eq!(
        lag_after(json!({"to": "offset", "topic": "jobs", "offset": 7})).await,
        3
    );
    assert_eq!(
        lag_after(json!({"to": "timestamp", "timestamp": 0})).await,
        10
    );
    assert_error(
        &console
            .post(
                "/api/groups/workers/reset-offsets",
                json!({"to": "earliest", "topic": "none"}),
            )
            .await,
        404,
        "none",
    );
    assert_error(&console.get("/api/groups/nobody").await, 404, "nobody");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_and_connect_are_passed_through_with_their_own_answers() {
    let broker = TestBroker::start();
    let console = Console::new(&broker).await;
    wait_until("the registry", || async {
        console.get("/api/registry/subjects").await.status == 200
    })
    .await;
    let a = console.get("/api/registry/subjects/nope/versions").await;
    assert_eq!(a.status, 404, "{}", a.text);
    assert_eq!(a.json()["error_code"], 40401);
    let a = console
        .put(
            "/api/registry/config/some-value",
            json!({"compatibility": "FULL"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        console.get("/api/registry/config/some-value").await.json()["compatibilityLevel"],
        "FULL"
    );

    wait_until("connect", || async {
        console.get("/api/connect/connector-plugins").await.status == 200
    })
    .await;
    let plugins = console.get("/api/connect/connector-plugins").await.json();
    assert!(
        plugins.to_string().contains("FileStreamSource"),
        "{plugins}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.txt");
    create_topic(&broker, "sink-in", 1, &[]).await;
    let a = console
        .post(
            "/api/connect/connectors",
            json!({"name": "to-file", "config": {
                "connector.class": "FileStreamSink", "tasks.max": "1",
                "topics": "sink-in", "file": file.to_str().unwrap()}}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    wait_until("the connector to run", || async {
        console
            .get("/api/connect/connectors/to-file/status")
            .await
            .json()["connector"]["state"]
            == "RUNNING"
    })
    .await;
    let a = console
        .put("/api/connect/connectors/to-file/pause", json!({}))
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    wait_until("the connector to pause", || async {
        console
            .get("/api/connect/connectors/to-file/status")
            .await
            .json()["connector"]["state"]
            == "PAUSED"
    })
    .await;
    let a = console
        .put("/api/connect/connectors/to-file/resume", json!({}))
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let a = console
        .post(
            "/api/connect/connectors",
            json!({"name": "to-file", "config": {}}),
        )
        .await;
    assert!(a.status >= 400, "{}", a.text);
    let a = console
        .delete("/api/connect/connectors/to-file", json!({}))
        .await;
    assert!(a.status == 204 || a.status == 200, "{}", a.text);
    // Writes through the pass-through get the same protections.
    let a = console
        .send(
            console
                .http
                .post(format!("{}/api/connect/connectors", console.base))
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    assert_error(&a, 403, "Content-Type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_this_process_does_not_run_answer_503_and_the_overview_says_so() {
    let broker = TestBroker::start_alone(&[]);
    let console = Console::new(&broker).await;
    assert_error(
        &console.get("/api/registry/subjects").await,
        503,
        "schema registry is off",
    );
    assert_error(
        &console.post("/api/connect/connectors", json!({})).await,
        503,
        "connect worker is off",
    );
    let c = console.get("/api/cluster").await.json();
    assert_eq!(c["services"]["schema_registry"], false);
    assert_eq!(c["services"]["connect"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_brokers_topics_and_partitions_and_its_traffic_counters_move() {
    let broker = TestBroker::start_alone(&[]);
    let console = Console::new(&broker).await;
    create_topic(&broker, "a", 2, &[]).await;
    create_topic(&broker, "b", 1, &[]).await;
    let c = console.get("/api/cluster").await.json();
    assert_eq!(c["brokers"].as_array().unwrap().len(), 1);
    let node = c["node_id"].clone();
    assert_eq!(c["brokers"][0]["id"], node);
    assert_eq!(c["brokers"][0]["port"], broker.port);
    assert_eq!(c["controller_id"], node);
    assert_eq!(c["brokers"][0]["controller"], true);
    assert!(c["partitions"].as_i64().unwrap() >= 3, "{c}");
    assert_eq!(c["under_replicated_partitions"], 0);
    assert!(c["disk"]["total_bytes"].as_f64().unwrap() > 0.0, "{c}");
    let before = c["traffic"]["records_in"].as_f64().unwrap();
    for i in 0..7 {
        console
            .post("/api/topics/a/messages", json!({"value": format!("v{i}")}))
            .await;
    }
    let c = console.get("/api/cluster").await.json();
    assert_eq!(c["traffic"]["records_in"].as_f64().unwrap() - before, 7.0);
    assert_eq!(c["traffic"]["topics"]["a"]["records_in"], 7.0);
    assert!(c["traffic"]["bytes_in"].as_f64().unwrap() > 0.0);
    let topics = console.get("/api/topics").await.json();
    let a = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "a")
        .unwrap()
        .clone();
    assert_eq!(a["messages"], 7.0);
    assert!(a["size_bytes"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transforms_show_state_progress_and_their_dead_letter_topic() {
    let broker = TestBroker::start_alone(&[]);
    let console = Console::new(&broker).await;
    assert_eq!(
        console.get("/api/transforms").await.json(),
        json!({"transforms": []})
    );
    create_topic(&broker, "in", 1, &[]).await;
    let wasm = plugin_wasm("fail-on-poison");
    let out = Command::new(BIN)
        .args(["transform", "deploy", wasm.to_str().unwrap()])
        .args([
            "--name",
            "guard",
            "--input-topic",
            "in",
            "--output-topic",
            "out",
        ])
        .args([
            "--on-error",
            "dead-letter:in-dlq",
            "--bootstrap",
            &broker.addr(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the transform to run", || async {
        console.get("/api/transforms").await.json()["transforms"][0]["state"] == "running"
    })
    .await;
    let producer = broker.producer(&[("linger.ms", "0")]);
    for v in ["good-1", "poison", "good-2"] {
        producer
            .send(
                FutureRecord::<(), _>::to("in").payload(v),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_until("the transform to catch up", || async {
        let t = console.get("/api/transforms").await.json()["transforms"][0].clone();
        t["lag"] == 0 && t["dead_letter"]["messages"] == 1.0
    })
    .await;
    let t = console.get("/api/transforms").await.json()["transforms"][0].clone();
    assert_eq!(t["name"], "guard");
    assert_eq!(t["input_topic"], "in");
    assert_eq!(t["output_topic"], "out");
    assert_eq!(t["dead_letter_topic"], "in-dlq");
    assert_eq!(t["on_error"], "dead-letter:in-dlq");
    assert_eq!(t["input"]["records_in"], 3.0);
    assert_eq!(t["input"]["messages"], 3.0);
    assert_eq!(t["output"]["messages"], 2.0);
    // The dead letter itself, through the message browser.
    let dlq = console.get("/api/topics/in-dlq/messages").await.json();
    let m = &dlq["messages"][0];
    assert_eq!(m["value"]["text"], "poison");
    let headers: HashMap<String, Value> = m["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["key"].as_str().unwrap().to_string(), h["value"].clone()))
        .collect();
    assert!(headers.contains_key("runnel.error"), "{m}");
}

/// Runs `tests/browser/console.test.mjs` in Chromium against a broker with
/// the registry and connect. Fails when Chromium, node or the test's
/// node_modules are missing, unless RUNNEL_SKIP_BROWSER_TESTS=1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_flows_pass_in_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tests = root.join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let skip = std::env::var("RUNNEL_SKIP_BROWSER_TESTS").is_ok_and(|v| v == "1");
    let mut missing = Vec::new();
    if !PathBuf::from(&chromium).exists() {
        missing.push(format!("Chromium at {chromium} (apt-get install chromium)"));
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node (apt-get install nodejs)".to_string());
    }
    if !tests.join("node_modules/playwright-core").exists() {
        missing.push(format!("playwright-core (npm ci in {})", tests.display()));
    }
    if !missing.is_empty() {
        if skip {
            eprintln!("browser tests skipped (RUNNEL_SKIP_BROWSER_TESTS=1); missing: {missing:?}");
            return;
        }
        panic!(
            "the browser tests need {}; set RUNNEL_SKIP_BROWSER_TESTS=1 to skip them",
            missing.join(", ")
        );
    }
    let broker = TestBroker::start();
    let console = Console::new(&broker).await;
    wait_until("the registry and connect", || async {
        console.get("/api/registry/subjects").await.status == 200
            && console.get("/api/connect/connectors").await.status == 200
    })
    .await;
    let alone = TestBroker::start_alone(&[]);
    Console::new(&alone).await;
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let shots = target.join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let work = tempfile::tempdir().unwrap();
    eprintln!("console screenshots: {}", shots.display());
    let mut node = Command::new("node");
    node.arg("console.test.mjs")
        .current_dir(&tests)
        .env("CONSOLE_URL", broker.admin_url())
        .env("KAFKA_ADDR", broker.addr())
        .env("RUNNEL_BIN", BIN)
        .env("WORK_DIR", work.path())
        .env("PLUGIN_WASM", plugin_wasm("fail-on-poison"))
        .env("OFF_CONSOLE_URL", alone.admin_url())
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium);
    let out = tokio::task::spawn_blocking(move || node.output())
        .await
        .unwrap()
        .expect("run node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "browser flows failed (screenshots in {}):\n{text}\nbroker log tail:\n{}",
        shots.display(),
        broker
            .log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
