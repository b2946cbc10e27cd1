//! Broker-side topic transforms with a real WASM plugin: records produced
//! to the input topic appear transformed in the output topic, exactly once,
//! even when the broker is SIGKILLed at random moments.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;

use crate::harness::{create_topic, latest_offset, metric, plugin_wasm, text, TestBroker, BIN};

fn cli(broker: &TestBroker, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--bootstrap", &broker.addr()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_delivers_every_record_once_across_broker_sigkills() {
    let seed: u64 = std::env::var("RUNNEL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("RUNNEL_TEST_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut broker = TestBroker::start();
    create_topic(&broker, "raw", 3, &[]).await;
    // flush.messages=1 on the output: each output append waits for an
    // fsync before the transform commits its progress, so a kill often
    // lands between the two — the case the resume logic must handle.
    create_topic(&broker, "cooked", 3, &[("flush.messages", "1")]).await;
    let wasm = plugin_wasm("enrich-json");
    let (ok, out) = cli(
        &broker,
        &[
            "transform",
            "deploy",
            wasm.to_str().unwrap(),
            "--name",
            "cook",
            "--input-topic",
            "raw",
            "--output-topic",
            "cooked",
            "--config",
            "add.via=runnel",
        ],
    );
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, list) = cli(&broker, &["transform", "list"]);
        if list.contains("running") {
            break;
        }
        assert!(Instant::now() < deadline, "transform never ran: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, json) = cli(&broker, &["transform", "list", "--format", "json"]);
    assert!(ok, "{json}");
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(listed[0]["name"], "cook", "{listed}");
    assert_eq!(listed[0]["input_topic"], "raw", "{listed}");
    assert_eq!(listed[0]["output_topic"], "cooked", "{listed}");
    assert_eq!(listed[0]["state"], "running", "{listed}");

    const TOTAL: usize = 12_000;
    let producer = Arc::new(broker.producer(&[
        ("enable.idempotence", "true"),
        ("message.timeout.ms", "120000"),
        ("retry.backoff.ms", "50"),
        ("reconnect.backoff.ms", "50"),
        ("reconnect.backoff.max.ms", "200"),
    ]));
    let done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (producer, done, sent) = (producer.clone(), done.clone(), sent.clone());
        tokio::spawn(async move {
            use futures::stream::{FuturesUnordered, StreamExt};
            let mut pending = FuturesUnordered::new();
            for i in 0..TOTAL {
                let producer = producer.clone();
                pending.push(async move {
                    let value = format!("{{\"n\":{i}}}");
                    producer
                        .send(
                            FutureRecord::<(), _>::to("raw")
                                .partition((i % 3) as i32)
                                .payload(&value),
                            Duration::from_secs(120),
                        )
                        .await
                        .map_err(|(e, _)| e)
                });
                sent.fetch_add(1, Ordering::Relaxed);
                if pending.len() >= 500 {
                    pending.next().await.unwrap().expect("delivered");
                }
                if i % 200 == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            while let Some(r) = pending.next().await {
                r.expect("delivered");
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    // SIGKILLs at random moments while records flow in and out.
    for _ in 0..4 {
        let at = rng.random_range(200..1000);
        tokio::time::sleep(Duration::from_millis(at)).await;
        broker.kill();
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
        broker.restart();
    }
    writer.await.unwrap();
    assert!(done.load(Ordering::Relaxed));

    // Every input record is transformed exactly once.
    let mut total = 0;
    for _ in 0..300 {
        total = 0;
        for p in 0..3 {
            total += latest_offset(&broker, "cooked", p).await;
        }
        if total >= TOTAL as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give a duplicate, if any, the chance to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut final_total = 0;
    for p in 0..3 {
        final_total += latest_offset(&broker, "cooked", p).await;
    }
    assert_eq!(
        final_total, TOTAL as i64,
        "output count (seed {seed}); before settling: {total}"
    );
    let messages = broker.consume("cooked", 3, TOTAL, Duration::from_secs(60));
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for m in &messages {
        let v: serde_json::Value = serde_json::from_str(&text(m)).expect("JSON output");
        assert_eq!(v["via"], "runnel", "transformed: {v}");
        *seen.entry(v["n"].as_u64().unwrap()).or_default() += 1;
        let source = m.headers().and_then(|h| {
            use rdkafka::message::Headers;
            h.iter()
                .find(|h| h.key == "runnel.source")
                .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
        });
        assert!(source.is_some(), "output carries its source");
    }
    for i in 0..TOTAL as u64 {
        assert_eq!(seen.get(&i), Some(&1), "record {i} (seed {seed})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_batches_stop_skip_or_go_to_a_dead_letter_topic() {
    let broker = TestBroker::start();
    create_topic(&broker, "in", 1, &[]).await;
    let wasm = plugin_wasm("fail-on-poison");
    let (ok, out) = cli(
        &broker,
        &[
            "transform",
            "deploy",
            wasm.to_str().unwrap(),
            "--name",
            "guard",
            "--input-topic",
            "in",
            "--output-topic",
            "out",
            "--on-error",
            "dead-letter:in-dlq",
        ],
    );
    assert!(ok, "{out}");
    wait_for("the transform to run", Duration::from_secs(20), || {
        cli(&broker, &["transform", "list"]).1.contains("running")
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
        // One record per batch, so only the poisoned one fails.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let out = broker.consume("out", 1, 2, Duration::from_secs(20));
    assert_eq!(
        out.iter().map(text).collect::<Vec<_>>(),
        vec!["good-1", "good-2"]
    );
    let dlq = broker.consume("in-dlq", 1, 1, Duration::from_secs(20));
    assert_eq!(dlq.len(), 1);
    assert_eq!(text(&dlq[0]), "poison");
    use rdkafka::message::Headers;
    let headers: HashMap<String, String> = dlq[0]
        .headers()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h.key.to_string(),
                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    assert!(headers["runnel.error"].contains("poison"), "{headers:?}");
    assert_eq!(headers["runnel.source.topic"], "in");
    assert_eq!(headers["runnel.source.offset"], "1");
    // The broker's /metrics: three in, two out, one failed batch
    // dead-lettered, the plugin's time, and the transform running.
    let page = broker.metrics().await;
    let value = |name: &str| metric(&page, &format!("{name}{{transform=\"guard\"}}"));
    assert_eq!(
        value("runnel_transform_records_in_total"),
        Some(3.0),
        "{page}"
    );
    assert_eq!(
        value("runnel_transform_records_out_total"),
        Some(2.0),
        "{page}"
    );
    assert_eq!(
        value("runnel_transform_failed_batches_total"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        value("runnel_transform_dead_letters_total"),
        Some(1.0),
        "{page}"
    );
    assert!(
        value("runnel_transform_batches_total").is_some_and(|n| n >= 3.0),
        "{page}"
    );
    assert!(
        value("runnel_transform_seconds_total").is_some_and(|s| s > 0.0),
        "{page}"
    );
    assert_eq!(value("runnel_transform_running"), Some(1.0), "{page}");

    // Delete, and the transform stops.
    let (ok, out) = cli(&broker, &["transform", "delete", "guard"]);
    assert!(ok, "{out}");
    assert!(!cli(&broker, &["transform", "list"]).1.contains("guard"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_a_transform_resumes_after_the_last_output_it_wrote() {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut broker = TestBroker::start();
    create_topic(&broker, "raw", 2, &[]).await;
    create_topic(&broker, "cooked", 2, &[]).await;
    let wasm = plugin_wasm("enrich-json");
    let (ok, out) = cli(
        &broker,
        &[
            "transform",
            "deploy",
            wasm.to_str().unwrap(),
            "--name",
            "cook",
            "--input-topic",
            "raw",
            "--output-topic",
            "cooked",
            "--config",
            "add.via=runnel",
        ],
    );
    assert!(ok, "{out}");
    wait_for("the transform to run", Duration::from_secs(20), || {
        cli(&broker, &["transform", "list"]).1.contains("running")
    })
    .await;
    let producer = broker.producer(&[]);
    for i in 0..200 {
        let v = format!("{{\"n\":{i}}}");
        producer
            .send(
                FutureRecord::<(), _>::to("raw")
                    .partition(i % 2)
                    .payload(&v),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while latest_offset(&broker, "cooked", 0).await + latest_offset(&broker, "cooked", 1).await
        < 200
    {
        assert!(Instant::now() < deadline, "the transform did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What a crash between writing outputs and committing progress leaves
    // behind: outputs written, progress behind. Rewind the progress to 0.
    let mut client = broker.client().await;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(StrBytes::from_static_str("raw"));
    t.partitions = (0..2)
        .map(|p| {
            let mut cp = OffsetCommitRequestPartition::default();
            cp.partition_index = p;
            cp.committed_offset = 0;
            cp
        })
        .collect();
    let mut commit = OffsetCommitRequest::default();
    commit.group_id = GroupId(StrBytes::from_static_str("__transform-cook"));
    commit.generation_id_or_member_epoch = -1;
    commit.topics = vec![t];
    let response = client.send(&commit).await.unwrap();
    assert!(response.topics[0]
        .partitions
        .iter()
        .all(|p| p.error_code == 0));
    broker.kill();
    broker.restart();
    wait_for(
        "the transform to run again",
        Duration::from_secs(20),
        || cli(&broker, &["transform", "list"]).1.contains("running"),
    )
    .await;
    for i in 200..300 {
        let v = format!("{{\"n\":{i}}}");
        producer
            .send(
                FutureRecord::<(), _>::to("raw")
                    .partition(i % 2)
                    .payload(&v),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while latest_offset(&broker, "cooked", 0).await + latest_offset(&broker, "cooked", 1).await
        < 300
    {
        assert!(
            Instant::now() < deadline,
            "the transform did not catch up after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let total =
        latest_offset(&broker, "cooked", 0).await + latest_offset(&broker, "cooked", 1).await;
    assert_eq!(
        total, 300,
        "the 200 records already transformed were not written again"
    );
}

/// How a test replaces the running module.
enum Redeploy {
    /// `runnel transform deploy` again under the same name.
    Command,
    /// `runnel plugin deploy --watch` keeps running; the .wasm file is
    /// replaced on disk.
    WatchedFile,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploying_under_the_same_name_swaps_the_module_for_new_records() {
    module_swap(Redeploy::Command).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_watched_plugin_file_swaps_the_module_for_new_records() {
    module_swap(Redeploy::WatchedFile).await;
}

/// Deploys keep-all, sends 10 records, swaps in drop-odd-offsets, sends 10
/// more: the output holds the first ten and the even ones of the rest.
async fn module_swap(how: Redeploy) {
    let broker = TestBroker::start();
    create_topic(&broker, "feed", 1, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("plugin.wasm");
    let args = |wasm: &str| {
        vec![
            wasm.to_string(),
            "--name".into(),
            "swap".into(),
            "--input-topic".into(),
            "feed".into(),
            "--output-topic".into(),
            "fed".into(),
        ]
    };
    let redeploy = |wasm: &str| {
        let args = [vec!["transform".to_string(), "deploy".into()], args(wasm)].concat();
        let (ok, out) = cli(
            &broker,
            &args.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        );
        assert!(ok, "{out}");
    };
    let mut watcher = None;
    match how {
        Redeploy::Command => redeploy(plugin_wasm("keep-all").to_str().unwrap()),
        Redeploy::WatchedFile => {
            std::fs::copy(plugin_wasm("keep-all"), &watched).unwrap();
            let child = Command::new(BIN)
                .args(["plugin", "deploy", "--watch"])
                .args(args(watched.to_str().unwrap()))
                .args(["--bootstrap", &broker.addr()])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            watcher = Some(KillOnDrop(child));
        }
    }
    wait_for("the transform to run", Duration::from_secs(20), || {
        cli(&broker, &["transform", "list"]).1.contains("running")
    })
    .await;
    let producer = broker.producer(&[("linger.ms", "0")]);
    let send = |range: std::ops::Range<i32>| {
        let producer = &producer;
        async move {
            for i in range {
                producer
                    .send(
                        FutureRecord::<(), _>::to("feed").payload(&format!("r{i}")),
                        Duration::from_secs(10),
                    )
                    .await
                    .unwrap();
            }
        }
    };
    send(0..10).await;
    let before = broker.consume("fed", 1, 10, Duration::from_secs(20));
    assert_eq!(before.len(), 10, "keep-all passes everything");
    let first = cli(&broker, &["transform", "list"]).1;
    match how {
        Redeploy::Command => redeploy(plugin_wasm("drop-odd-offsets").to_str().unwrap()),
        Redeploy::WatchedFile => {
            // Write the new module beside the file and rename it over, as
            // an editor or a build would.
            let next = dir.path().join("plugin.wasm.new");
            std::fs::copy(plugin_wasm("drop-odd-offsets"), &next).unwrap();
            std::fs::rename(&next, &watched).unwrap();
        }
    }
    // "running" again, for the new module, once the broker swapped it in.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = cli(&broker, &["transform", "list"]).1;
        if list != first && list.contains("running") {
            break;
        }
        assert!(Instant::now() < deadline, "redeploy never applied: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    send(10..20).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = broker.consume("fed", 1, 15, Duration::from_secs(10));
    let values: Vec<String> = after.iter().map(text).collect();
    // Offsets 10..20 of "feed": the new module keeps the even ones only.
    assert_eq!(
        &values[..10],
        (0..10)
            .map(|i| format!("r{i}"))
            .collect::<Vec<_>>()
            .as_slice()
    );
    assert_eq!(&values[10..], ["r10", "r12", "r14", "r16", "r18"]);
    drop(watcher);
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The leader of `topic`-`partition` as `node` sees it.
async fn leader_of(node: &TestBroker, topic: &str, partition: i32) -> i32 {
    let mut request = kafka_protocol::messages::MetadataRequest::default();
    request.topics = None;
    let response = node.client().await.send(&request).await.unwrap();
    response
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        .and_then(|t| t.partitions.iter().find(|p| p.partition_index == partition))
        .map_or(-1, |p| p.leader_id.0)
}

/// Sum of the high watermarks of `topic`'s three partitions, each asked
/// of its leader as `node` names it; `None` while a partition has no
/// leader answering (it is the `down` node, or leadership is moving).
async fn total_of(
    cluster: &crate::harness::TestCluster,
    node: usize,
    topic: &str,
    down: Option<usize>,
) -> Option<i64> {
    let mut total = 0;
    for p in 0..3 {
        let leader = leader_of(&cluster.nodes[node], topic, p).await;
        if leader <= 0 || Some(leader as usize - 1) == down {
            return None;
        }
        let on = &cluster.nodes[leader as usize - 1];
        total += crate::harness::list_offset(on, topic, p, -1).await.ok()?;
    }
    Some(total)
}

/// Waits until `total_of` answers at least `at_least`; returns it.
async fn wait_for_total(
    cluster: &crate::harness::TestCluster,
    node: usize,
    topic: &str,
    down: Option<usize>,
    at_least: i64,
) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let total = total_of(cluster, node, topic, down).await;
        if let Some(total) = total.filter(|&t| t >= at_least) {
            return total;
        }
        assert!(
            Instant::now() < deadline,
            "{topic} holds {total:?} records, not {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_every_record_is_transformed_once_by_its_partitions_leader_across_a_leader_kill(
) {
    let mut cluster = crate::harness::TestCluster::start_with(
        3,
        &[
            "--broker-session-timeout-ms",
            "2000",
            "--replica-lag-time-max-ms",
            "2000",
        ],
    );
    // Until all three registered, a topic of three replicas is refused.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut request = kafka_protocol::messages::MetadataRequest::default();
        request.topics = Some(Vec::new());
        let response = cluster.nodes[0]
            .client()
            .await
            .send(&request)
            .await
            .unwrap();
        if response.brokers.len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "three brokers never registered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crate::harness::create_replicated_topic(&cluster.nodes[0], "raw", 3, 3, &[]).await;
    crate::harness::create_replicated_topic(&cluster.nodes[0], "cooked", 3, 3, &[]).await;
    let wasm = plugin_wasm("enrich-json");
    // The deployment topic is made once all three brokers live.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out) = cli(
            &cluster.nodes[1],
            &[
                "transform",
                "deploy",
                wasm.to_str().unwrap(),
                "--name",
                "cook",
                "--input-topic",
                "raw",
                "--output-topic",
                "cooked",
                "--config",
                "add.via=runnel",
            ],
        );
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "deploy failed: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    const ROUND: usize = 1500;
    let send = |from: usize| {
        let producer = producer.clone();
        async move {
            use futures::stream::{FuturesUnordered, StreamExt};
            let mut pending = FuturesUnordered::new();
            for i in from..from + ROUND {
                let producer = producer.clone();
                pending.push(async move {
                    let value = format!("{{\"n\":{i}}}");
                    producer
                        .send(
                            FutureRecord::<(), _>::to("raw")
                                .partition((i % 3) as i32)
                                .payload(&value),
                            Duration::from_secs(60),
                        )
                        .await
                        .map_err(|(e, _)| e)
                        .expect("delivered");
                });
            }
            while pending.next().await.is_some() {}
        }
    };
    send(0).await;
    wait_for_total(&cluster, 0, "cooked", None, ROUND as i64).await;

    // The leader of input partition 0 dies: its new leader takes the
    // transform of that partition up where the output says it ended.
    let victim = leader_of(&cluster.nodes[0], "raw", 0).await as usize - 1;
    cluster.nodes[victim].kill();
    let live = (0..3).find(|&i| i != victim).unwrap();
    send(ROUND).await;
    wait_for_total(&cluster, live, "cooked", Some(victim), 2 * ROUND as i64).await;
    cluster.nodes[victim].restart();
    // Give a duplicate, if any, the chance to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        wait_for_total(&cluster, live, "cooked", None, 2 * ROUND as i64).await,
        2 * ROUND as i64,
        "each record is transformed by one broker only"
    );
    let messages = cluster.nodes[live].consume("cooked", 3, 2 * ROUND, Duration::from_secs(60));
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for m in &messages {
        let v: serde_json::Value = serde_json::from_str(&text(m)).expect("JSON output");
        assert_eq!(v["via"], "runnel", "transformed: {v}");
        *seen.entry(v["n"].as_u64().unwrap()).or_default() += 1;
    }
    for i in 0..2 * ROUND as u64 {
        assert_eq!(seen.get(&i), Some(&1), "record {i}");
    }
}

/// A broker with no replica of `_runnel_transforms` (a fourth node, added
/// as a broker only, after the topic was made on the first three) still
/// runs the transform of the input partitions it leads: it follows the
/// deployments from the topic's leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_with_no_replica_of_the_deployments_topic_runs_the_transforms_of_its_partitions() {
    const PARTITIONS: i32 = 4;
    const PER_PARTITION: usize = 50;
    let mut cluster = crate::harness::TestCluster::start(3);
    let wasm = plugin_wasm("enrich-json");
    let deploy = |node: &TestBroker| {
        cli(
            node,
            &[
                "transform",
                "deploy",
                wasm.to_str().unwrap(),
                "--name",
                "cook4",
                "--input-topic",
                "raw4",
                "--output-topic",
                "cooked4",
            ],
        )
    };
    // The deployments topic is made once the three brokers live; the
    // fourth joins after.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut request = kafka_protocol::messages::MetadataRequest::default();
        request.topics = None;
        let response = cluster.nodes[0]
            .client()
            .await
            .send(&request)
            .await
            .unwrap();
        if response
            .topics
            .iter()
            .any(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("_runnel_transforms"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no deployments topic");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.add_broker_only(&[]);
    crate::harness::create_replicated_topic(&cluster.nodes[0], "raw4", PARTITIONS, 1, &[]).await;
    crate::harness::create_replicated_topic(&cluster.nodes[0], "cooked4", PARTITIONS, 2, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out) = deploy(&cluster.nodes[1]);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "deploy failed: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut leaders = Vec::new();
    for p in 0..PARTITIONS {
        leaders.push(leader_of(&cluster.nodes[3], "raw4", p).await);
    }
    assert!(
        leaders.contains(&4),
        "node 4 leads an input partition: {leaders:?}"
    );
    let mut request = kafka_protocol::messages::MetadataRequest::default();
    request.topics = None;
    let response = cluster.nodes[3]
        .client()
        .await
        .send(&request)
        .await
        .unwrap();
    let deployments = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("_runnel_transforms"))
        .expect("the deployments topic");
    assert!(
        deployments.partitions[0]
            .replica_nodes
            .iter()
            .all(|r| r.0 != 4),
        "node 4 holds no replica of the deployments topic"
    );

    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "all")
        .create()
        .unwrap();
    for i in 0..PER_PARTITION * PARTITIONS as usize {
        let value = format!("{{\"n\":{i}}}");
        producer
            .send(
                FutureRecord::<(), _>::to("raw4")
                    .partition(i as i32 % PARTITIONS)
                    .payload(&value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
    // Every input partition's records come out, node 4's included.
    let consumed = cluster.nodes[0].consume(
        "cooked4",
        PARTITIONS,
        PER_PARTITION * PARTITIONS as usize,
        Duration::from_secs(60),
    );
    let mut seen: Vec<i64> = consumed
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            v["n"].as_i64().unwrap()
        })
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        PER_PARTITION * PARTITIONS as usize,
        "every record transformed once"
    );
}
