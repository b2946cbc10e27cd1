//! `runnel-streams` applications against the real broker: instances of
//! one application share the input partitions; a SIGKILLed instance's
//! tasks move to the survivor, which restores their stores from the
//! changelog topics; a restart resumes from the committed offsets with
//! the state intact.
//!
//! An application instance is this test binary run again as the ignored
//! test [`counting_application_instance`], so it can be SIGKILLed like
//! any process.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::Message;

use crate::harness::{create_topic, TestBroker};

const INPUT: &str = "streams-clicks";
const OUTPUT: &str = "streams-click-counts";
const APP: &str = "click-counter";
const KEYS: usize = 50;

/// Counts records per key: `INPUT` → group by key → count → `OUTPUT`.
fn counting_topology() -> runnel_streams::Topology {
    use runnel_streams::{serdes, Consumed, Produced, Stored, StreamsBuilder};
    let builder = StreamsBuilder::new();
    builder
        .stream(INPUT, Consumed::with(serdes::string(), serdes::string()))
        .group_by_key(serdes::string(), serdes::string())
        .count(Stored::as_("click-counts"))
        .to_stream()
        .to(
            OUTPUT,
            Produced::with(serdes::string(), serdes::nullable(serdes::i64())),
        );
    builder.build().expect("a valid topology")
}

/// Runs one instance of the counting application while its parent test
/// lets it (only when started by [`Instance::start`]).
#[test]
#[ignore = "an application instance, started by the streams tests"]
fn counting_application_instance() {
    let Ok(bootstrap) = std::env::var("RUNNEL_STREAMS_TEST_BOOTSTRAP") else {
        return;
    };
    let mut config = runnel_streams::StreamsConfig::new(APP, &bootstrap);
    config.state_dir = std::env::var_os("RUNNEL_STREAMS_TEST_STATE").map(Into::into);
    config.application_server = std::env::var("RUNNEL_STREAMS_TEST_SERVER").ok();
    config.num_standby_replicas = std::env::var("RUNNEL_STREAMS_TEST_STANDBYS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    config.commit_interval = Duration::from_millis(200);
    config
        .client
        .insert("session.timeout.ms".into(), "6000".into());
    config
        .client
        .insert("heartbeat.interval.ms".into(), "500".into());
    let app = runnel_streams::KafkaStreams::start(counting_topology(), config)
        .expect("start the application");
    eprintln!("instance running");
    // Until SIGKILL or SIGTERM (which ends the process without a close:
    // the survivor's takeover and the restart are what is tested).
    while app.is_running() {
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the stream thread stopped: {:?}", app.close());
}

struct Instance(Child);

impl Instance {
    fn start(broker: &TestBroker, state: &std::path::Path) -> Instance {
        Instance::start_serving(broker, state, None)
    }

    /// An instance that serves interactive queries on `server`.
    fn start_serving(
        broker: &TestBroker,
        state: &std::path::Path,
        server: Option<&str>,
    ) -> Instance {
        Instance::start_with(broker, state, server, 0)
    }

    /// An instance with `standbys` standby replicas per task.
    fn start_with(
        broker: &TestBroker,
        state: &std::path::Path,
        server: Option<&str>,
        standbys: usize,
    ) -> Instance {
        let mut command = Command::new(std::env::current_exe().expect("the test binary"));
        command.env("RUNNEL_STREAMS_TEST_STANDBYS", standbys.to_string());
        if let Some(server) = server {
            command.env("RUNNEL_STREAMS_TEST_SERVER", server);
        }
        let child = command
            .args([
                "streams::counting_application_instance",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env("RUNNEL_STREAMS_TEST_BOOTSTRAP", broker.addr())
            .env("RUNNEL_STREAMS_TEST_STATE", state)
            .env("RUST_LOG", "runnel_streams=info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start an application instance");
        Instance(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn produce_clicks(broker: &TestBroker, from: usize, count: usize, pace: Duration) {
    let producer = broker.producer(&[("acks", "all"), ("enable.idempotence", "true")]);
    for i in from..from + count {
        let key = format!("user-{}", i % KEYS);
        let value = format!("click-{i}");
        producer
            .send(
                FutureRecord::to(INPUT).key(&key).payload(&value),
                Duration::from_secs(30),
            )
            .await
            .expect("produce a click");
        if !pace.is_zero() && i % 100 == 0 {
            tokio::time::sleep(pace).await;
        }
    }
}

/// The latest count per key in the output topic.
fn latest_counts(broker: &TestBroker) -> BTreeMap<String, i64> {
    let records = broker.consume(OUTPUT, 4, 200_000, Duration::from_secs(3));
    let mut counts = BTreeMap::new();
    for m in records {
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
        let value = m.payload().expect("a count");
        let count = i64::from_be_bytes(value.try_into().expect("8 bytes"));
        // Per key, the output partition keeps the order of the updates.
        counts.insert(key, count);
    }
    counts
}

/// Waits until every key's latest count is at least what was produced
/// for it; returns the counts.
async fn wait_for_counts(
    broker: &TestBroker,
    produced: usize,
    timeout: Duration,
) -> BTreeMap<String, i64> {
    let per_key = (produced / KEYS) as i64;
    let deadline = Instant::now() + timeout;
    loop {
        let counts = latest_counts(broker);
        let complete = counts.len() == KEYS && counts.values().all(|c| *c >= per_key);
        if complete || Instant::now() > deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instances_counts_move_to_the_survivor_and_a_restart_keeps_them() {
    let broker = TestBroker::start();
    create_topic(&broker, INPUT, 4, &[]).await;
    create_topic(&broker, OUTPUT, 4, &[]).await;
    let state = tempfile::tempdir().expect("a state directory");
    let (state_a, state_b) = (state.path().join("a"), state.path().join("b"));
    let mut a = Instance::start(&broker, &state_a);
    let mut b = Instance::start(&broker, &state_b);

    // Clicks flow steadily while one instance is SIGKILLed mid-stream;
    // the survivor counts the rest.
    const FIRST: usize = 10_000;
    let deadline = Instant::now() + Duration::from_secs(60);
    produce_clicks(&broker, 0, 500, Duration::ZERO).await;
    while latest_counts(&broker).len() < KEYS {
        assert!(Instant::now() < deadline, "the instances never counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, ()) = tokio::join!(
        produce_clicks(&broker, 500, FIRST - 500, Duration::from_millis(10)),
        async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            a.kill();
        }
    );
    let counts = wait_for_counts(&broker, FIRST, Duration::from_secs(90)).await;
    let per_key = (FIRST / KEYS) as i64;
    let short: Vec<_> = counts.iter().filter(|(_, c)| **c < per_key).collect();
    assert!(
        counts.len() == KEYS && short.is_empty(),
        "every click is counted after the survivor took over (expected {per_key} per key): short {short:?}, {} keys",
        counts.len()
    );
    let total: i64 = counts.values().sum();
    eprintln!(
        "after SIGKILL of one instance: {total} counted for {FIRST} clicks ({} counted twice)",
        total - FIRST as i64
    );

    // Both instances down, then up again: they restore the counts and go
    // on from the committed offsets.
    b.kill();
    drop((a, b));
    let _a = Instance::start(&broker, &state_a);
    let _b = Instance::start(&broker, &state_b);
    const MORE: usize = 2_000;
    produce_clicks(&broker, FIRST, MORE, Duration::ZERO).await;
    let after = wait_for_counts(&broker, FIRST + MORE, Duration::from_secs(90)).await;
    let per_key_after = ((FIRST + MORE) / KEYS) as i64;
    for (key, before) in &counts {
        let now = after.get(key).copied().unwrap_or(0);
        assert!(
            now >= before + (MORE / KEYS) as i64 && now >= per_key_after,
            "{key}: {before} before the restart, {now} after {MORE} more clicks (state lost or clicks missed)"
        );
    }
    let total_after: i64 = after.values().sum();
    eprintln!(
        "after a restart of both: {total_after} counted for {} clicks ({} counted twice in all)",
        FIRST + MORE,
        total_after - (FIRST + MORE) as i64
    );
}

/// What an instance's query server answers for `path` (a redirect
/// followed or not), with its status.
async fn query(
    client: &reqwest::Client,
    server: &str,
    path: &str,
) -> (reqwest::StatusCode, Option<String>, serde_json::Value) {
    let response = client
        .get(format!("http://{server}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {server}{path}: {e}"));
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().expect("ASCII").to_string());
    let text = response.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, location, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_answer_every_key_and_send_clients_to_its_owner() {
    let broker = TestBroker::start();
    create_topic(&broker, INPUT, 4, &[]).await;
    create_topic(&broker, OUTPUT, 4, &[]).await;
    let state = tempfile::tempdir().expect("a state directory");
    let servers: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", crate::harness::free_port()))
        .collect();
    let _a = Instance::start_serving(&broker, &state.path().join("a"), Some(&servers[0]));
    let _b = Instance::start_serving(&broker, &state.path().join("b"), Some(&servers[1]));

    // Keys partitioned as Java clients (and Kafka Streams) do, so the
    // owner a query server computes is where the producer put the key.
    let producer = broker.producer(&[("acks", "all"), ("partitioner", "murmur2_random")]);
    let mut partition_of = BTreeMap::new();
    const CLICKS: usize = 1_000;
    for i in 0..CLICKS {
        let key = format!("user-{}", i % KEYS);
        let delivery = producer
            .send(
                FutureRecord::to(INPUT).key(&key).payload("click"),
                Duration::from_secs(30),
            )
            .await
            .expect("produce a click");
        partition_of.insert(key, delivery.partition);
    }
    let counts = wait_for_counts(&broker, CLICKS, Duration::from_secs(60)).await;
    assert_eq!(counts.len(), KEYS, "the instances counted every key");

    let follow = reqwest::Client::new();
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client");
    // Both instances have their tasks (and both servers are in the
    // group's description) once each one's owner answers agree.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, list) = query(&follow, &servers[0], "/instances").await;
        let known: Vec<&str> = list
            .as_array()
            .map(|l| l.iter().filter_map(|i| i["server"].as_str()).collect())
            .unwrap_or_default();
        if known.len() == 2 && servers.iter().all(|s| known.contains(&s.as_str())) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group never listed both instances: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (mut here, mut redirected) = (0, 0);
    for (key, count) in &counts {
        // Asked anywhere (redirects followed), every key's count is the
        // one its last update wrote to the output topic.
        for server in &servers {
            let (status, _, body) =
                query(&follow, server, &format!("/stores/click-counts/{key}")).await;
            assert_eq!(status, 200, "{key} via {server}: {body}");
            assert_eq!(
                body["value"].as_i64(),
                Some(*count),
                "{key} via {server}: {body}"
            );
        }
        // The owner is the partition the producer chose, and the first
        // instance answers its own keys and sends the others to the owner.
        let (_, _, owner) = query(
            &follow,
            &servers[0],
            &format!("/stores/click-counts/{key}/owner"),
        )
        .await;
        assert_eq!(
            owner["partition"].as_i64(),
            Some(partition_of[key] as i64),
            "{key}: {owner}"
        );
        let (status, location, _) = query(
            &no_follow,
            &servers[0],
            &format!("/stores/click-counts/{key}"),
        )
        .await;
        if owner["local"] == serde_json::json!(true) {
            assert_eq!(status, 200, "{key}");
            here += 1;
        } else {
            assert_eq!(status, 307, "{key}");
            let to = location.expect("a Location");
            assert!(
                to.starts_with(&format!("http://{}/", servers[1])),
                "{key} sent to {to}"
            );
            redirected += 1;
        }
    }
    eprintln!("queries of {KEYS} keys at one instance: {here} answered there, {redirected} sent to the other");
    assert!(
        here > 0 && redirected > 0,
        "both instances hold keys ({here} here, {redirected} elsewhere)"
    );

    // Ranges are per instance: together they hold every key once.
    let mut keys = Vec::new();
    for server in &servers {
        let (status, _, body) = query(&follow, server, "/stores/click-counts?limit=1000").await;
        assert_eq!(status, 200, "{body}");
        keys.extend(
            body.as_array()
                .expect("entries")
                .iter()
                .map(|e| e["key"].as_str().expect("a key").to_string()),
        );
    }
    keys.sort();
    assert_eq!(keys, counts.keys().cloned().collect::<Vec<_>>());

    let (_, _, metrics) = query(&follow, &servers[0], "/metrics").await;
    let metrics = metrics.as_str().expect("Prometheus text");
    let processed: u64 = metrics
        .lines()
        .find(|l| l.starts_with("runnel_streams_records_processed_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("a processed counter");
    assert!(processed > 0 && processed <= CLICKS as u64, "{metrics}");
    assert!(
        metrics.contains(
            "runnel_streams_consumer_lag{application=\"click-counter\",topic=\"streams-clicks\""
        ),
        "{metrics}"
    );
}

/// One counter of an instance's `/metrics`.
async fn metric(client: &reqwest::Client, server: &str, name: &str) -> u64 {
    let (_, _, text) = query(client, server, "/metrics").await;
    text.as_str()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(&format!("{name}{{")))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        })
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_replica_takes_over_a_killed_instances_tasks_without_a_full_restore() {
    let broker = TestBroker::start();
    create_topic(&broker, INPUT, 4, &[]).await;
    create_topic(&broker, OUTPUT, 4, &[]).await;
    let state = tempfile::tempdir().expect("a state directory");
    let servers: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", crate::harness::free_port()))
        .collect();
    let mut a = Instance::start_with(&broker, &state.path().join("a"), Some(&servers[0]), 1);
    let _b = Instance::start_with(&broker, &state.path().join("b"), Some(&servers[1]), 1);
    const FIRST: usize = 20_000;
    produce_clicks(&broker, 0, FIRST, Duration::ZERO).await;
    let counts = wait_for_counts(&broker, FIRST, Duration::from_secs(90)).await;
    assert_eq!(counts.len(), KEYS);

    // The changelog records of the first instance's tasks, which the
    // second one's standbys hold once they caught up.
    let http = reqwest::Client::new();
    let (_, _, instances) = query(&http, &servers[0], "/instances").await;
    let first: Vec<i32> = instances
        .as_array()
        .expect("instances")
        .iter()
        .find(|i| i["server"] == serde_json::json!(servers[0]))
        .expect("the first instance in the group")["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["partition"].as_i64().expect("a partition") as i32)
        .collect();
    assert!(
        !first.is_empty(),
        "the first instance has tasks: {instances}"
    );
    let changelog = format!("{APP}-click-counts-changelog");
    let probe = broker.consumer();
    let held: i64 = first
        .iter()
        .map(|p| {
            probe
                .fetch_watermarks(&changelog, *p, Duration::from_secs(10))
                .expect("changelog offsets")
                .1
        })
        .sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tasks = metric(&http, &servers[1], "runnel_streams_standby_tasks").await;
        let applied = metric(&http, &servers[1], "runnel_streams_standby_records_total").await;
        if tasks as usize == first.len() && applied as i64 >= held {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standbys never caught up: {tasks} standby tasks for {first:?}, {applied} of {held} changelog records"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let restored_before = metric(&http, &servers[1], "runnel_streams_records_restored_total").await;
    a.kill();
    const MORE: usize = 1_000;
    produce_clicks(&broker, FIRST, MORE, Duration::ZERO).await;
    let after = wait_for_counts(&broker, FIRST + MORE, Duration::from_secs(90)).await;
    let per_key = ((FIRST + MORE) / KEYS) as i64;
    let short: Vec<_> = after.iter().filter(|(_, c)| **c < per_key).collect();
    assert!(
        short.is_empty(),
        "every click counted after the takeover: short {short:?}"
    );
    let restored =
        metric(&http, &servers[1], "runnel_streams_records_restored_total").await - restored_before;
    eprintln!(
        "takeover of {} tasks with a standby: {restored} changelog records restored of {held} the tasks' stores hold",
        first.len()
    );
    assert!(
        (restored as i64) * 10 < held,
        "a standby takeover restores only the changelog's tail: {restored} of {held}"
    );
}

const CUSTOMERS: &str = "global-customers";
const ORDERS: &str = "global-orders";
const ENRICHED: &str = "global-enriched";
const ENRICHER: &str = "order-enricher";
const CUSTOMER_COUNT: usize = 30;

/// Orders (key: order id, value: customer id) joined with the global
/// table of customers (key: customer id, value: name) into
/// `<customer id>:<name>` (`?` for an unknown customer).
fn enrichment_topology() -> runnel_streams::Topology {
    use runnel_streams::{serdes, Consumed, Produced, Stored, StreamsBuilder};
    let builder = StreamsBuilder::new();
    let customers = builder.global_table(
        CUSTOMERS,
        Consumed::with(serdes::string(), serdes::string()),
        Stored::as_("customers"),
    );
    builder
        .stream(ORDERS, Consumed::with(serdes::string(), serdes::string()))
        .left_join_global(
            &customers,
            |_, customer: &String| customer.clone(),
            |customer: &String, name: Option<&String>| {
                format!("{customer}:{}", name.map_or("?", String::as_str))
            },
        )
        .to(ENRICHED, Produced::with(serdes::string(), serdes::string()));
    builder.build().expect("a valid topology")
}

fn start_enricher(
    broker: &TestBroker,
    state: &std::path::Path,
    server: &str,
) -> runnel_streams::KafkaStreams {
    let mut config = runnel_streams::StreamsConfig::new(ENRICHER, &broker.addr());
    config.state_dir = Some(state.to_path_buf());
    config.application_server = Some(server.to_string());
    config.commit_interval = Duration::from_millis(200);
    for (k, v) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ] {
        config.client.insert(k.into(), v.into());
    }
    runnel_streams::KafkaStreams::start(enrichment_topology(), config)
        .expect("start the application")
}

async fn produce_pairs(broker: &TestBroker, topic: &str, pairs: &[(String, String)]) {
    let producer = broker.producer(&[("acks", "all")]);
    for (key, value) in pairs {
        producer
            .send(
                FutureRecord::to(topic).key(key).payload(value),
                Duration::from_secs(30),
            )
            .await
            .expect("produce");
    }
}

/// The latest enriched value per order id.
fn enriched(broker: &TestBroker, expected: usize) -> BTreeMap<String, String> {
    broker
        .consume(ENRICHED, 2, expected, Duration::from_secs(60))
        .iter()
        .map(|m| {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
            let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
            (key, value)
        })
        .collect()
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_enriches_its_orders_from_the_whole_global_table_and_sees_its_updates() {
    let broker = TestBroker::start();
    // Different partition counts: a stream-table join would refuse them.
    create_topic(&broker, CUSTOMERS, 3, &[("cleanup.policy", "compact")]).await;
    create_topic(&broker, ORDERS, 2, &[]).await;
    create_topic(&broker, ENRICHED, 2, &[]).await;
    let customers: Vec<(String, String)> = (0..CUSTOMER_COUNT)
        .map(|i| (format!("c{i}"), format!("name-{i}")))
        .collect();
    produce_pairs(&broker, CUSTOMERS, &customers).await;

    let state = tempfile::tempdir().expect("a state directory");
    let servers: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", crate::harness::free_port()))
        .collect();
    let a = start_enricher(&broker, &state.path().join("a"), &servers[0]);
    let b = start_enricher(&broker, &state.path().join("b"), &servers[1]);
    // One orders partition each; both read every customer first.
    wait_until(
        "each instance has one task",
        Duration::from_secs(60),
        || a.metrics().active_tasks.len() == 1 && b.metrics().active_tasks.len() == 1,
    )
    .await;
    for app in [&a, &b] {
        assert!(
            app.metrics().records_restored >= CUSTOMER_COUNT as u64,
            "the global store was filled before processing: {:?}",
            app.metrics()
        );
    }

    const ORDER_COUNT: usize = 200;
    let orders: Vec<(String, String)> = (0..ORDER_COUNT)
        .map(|i| (format!("o{i}"), format!("c{}", i % CUSTOMER_COUNT)))
        .collect();
    produce_pairs(&broker, ORDERS, &orders).await;
    let out = enriched(&broker, ORDER_COUNT);
    assert_eq!(out.len(), ORDER_COUNT, "every order enriched once: {out:?}");
    for (order, customer) in &orders {
        let number = &customer[1..];
        assert_eq!(out[order], format!("{customer}:name-{number}"), "{order}");
    }
    let (processed_a, processed_b) = (
        a.metrics().tasks.records_processed,
        b.metrics().tasks.records_processed,
    );
    assert!(
        processed_a > 0 && processed_b > 0,
        "both instances enriched orders ({processed_a} and {processed_b})"
    );

    // An update of the table reaches both instances' global stores (each
    // answers it locally), then every later order.
    produce_pairs(&broker, CUSTOMERS, &[("c7".into(), "renamed-7".into())]).await;
    let client = reqwest::Client::new();
    for server in &servers {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, _, body) = query(&client, server, "/stores/customers/c7").await;
            if status == 200 && body["value"] == serde_json::json!("renamed-7") {
                assert_eq!(body["task"], serde_json::json!("global"), "{body}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{server} never saw the update: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let later: Vec<(String, String)> = (0..20).map(|i| (format!("p{i}"), "c7".into())).collect();
    produce_pairs(&broker, ORDERS, &later).await;
    let out = enriched(&broker, ORDER_COUNT + later.len());
    for (order, _) in &later {
        assert_eq!(
            out.get(order).map(String::as_str),
            Some("c7:renamed-7"),
            "{order}"
        );
    }

    // A clean close checkpoints the global store: a restart reads only
    // what is new since.
    a.close().expect("a clean close");
    b.close().expect("a clean close");
    assert!(state
        .path()
        .join("a")
        .join(ENRICHER)
        .join("global")
        .join("customers.checkpoint")
        .exists());
    produce_pairs(&broker, CUSTOMERS, &[("c8".into(), "renamed-8".into())]).await;
    let a = start_enricher(&broker, &state.path().join("a"), &servers[0]);
    wait_until(
        "the restarted instance has its tasks",
        Duration::from_secs(60),
        || a.metrics().active_tasks.len() == 2,
    )
    .await;
    assert_eq!(
        a.metrics().records_restored,
        1,
        "only the update since the close is read again"
    );
    produce_pairs(
        &broker,
        ORDERS,
        &[("q1".into(), "c8".into()), ("q2".into(), "c7".into())],
    )
    .await;
    let out = enriched(&broker, ORDER_COUNT + later.len() + 2);
    assert_eq!(out.get("q1").map(String::as_str), Some("c8:renamed-8"));
    assert_eq!(out.get("q2").map(String::as_str), Some("c7:renamed-7"));
    a.close().expect("a clean close");
}
