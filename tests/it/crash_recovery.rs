//! Crashes and damaged files: SIGKILL never loses acknowledged records, and
//! a torn or corrupted segment tail is cut on start while everything before
//! it is still served.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;

use crate::harness::{create_topic, latest_offset, list_offset, text, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_a_broker_sigkill_during_produce() {
    let mut broker = TestBroker::start();
    create_topic(&broker, "crash", 4, &[("segment.bytes", "262144")]).await;
    let producer = Arc::new(broker.producer(&[
        ("acks", "1"),
        ("linger.ms", "2"),
        ("message.timeout.ms", "60000"),
        ("retry.backoff.ms", "50"),
        ("reconnect.backoff.ms", "50"),
    ]));
    // value -> (partition, offset) for every acknowledged record
    let acked: Arc<Mutex<HashMap<String, (i32, i64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (producer, acked, stop) = (producer.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            let mut pending = futures::stream::FuturesUnordered::new();
            use futures::StreamExt;
            while !stop.load(Ordering::Relaxed) {
                let value = format!("record-{i}");
                i += 1;
                let producer = producer.clone();
                pending.push(async move {
                    let r = producer
                        .send(
                            FutureRecord::<(), _>::to("crash").payload(&value),
                            Duration::from_secs(60),
                        )
                        .await;
                    (value, r)
                });
                if pending.len() >= 200 {
                    if let Some((value, Ok(d))) = pending.next().await {
                        acked.lock().unwrap().insert(value, (d.partition, d.offset));
                    }
                }
            }
            while let Some((value, r)) = pending.next().await {
                if let Ok(d) = r {
                    acked.lock().unwrap().insert(value, (d.partition, d.offset));
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let acked_before_kill = acked.lock().unwrap().len();
    broker.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked_before_kill > 1000,
        "the producer was busy before the kill ({acked_before_kill} acked)"
    );
    assert!(
        acked.len() > acked_before_kill,
        "producing resumed after the restart"
    );

    let total: i64 = {
        let mut t = 0;
        for p in 0..4 {
            t += latest_offset(&broker, "crash", p).await;
        }
        t
    };
    let messages = broker.consume("crash", 4, total as usize, Duration::from_secs(60));
    assert_eq!(messages.len() as i64, total);
    let stored: HashMap<(i32, i64), String> = messages
        .iter()
        .map(|m| ((m.partition(), m.offset()), text(m)))
        .collect();
    for (value, (partition, offset)) in &acked {
        assert_eq!(
            stored.get(&(*partition, *offset)),
            Some(value),
            "acknowledged record {value} at {partition}/{offset} must be stored there"
        );
    }
}

/// Produces `n` records one batch each (linger 0, awaited one by one).
async fn produce_batches(broker: &TestBroker, topic: &str, n: usize) {
    let producer = broker.producer(&[("linger.ms", "0"), ("acks", "1")]);
    for i in 0..n {
        let value = format!("batch-{i}-{}", "y".repeat(100));
        producer
            .send(
                FutureRecord::<(), _>::to(topic)
                    .partition(0)
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .expect("produce");
    }
}

fn segment_path(broker: &TestBroker, topic: &str) -> std::path::PathBuf {
    broker
        .dir
        .join(format!("{topic}-0"))
        .join("00000000000000000000.log")
}

/// Checks offsets 0..n hold batch-0 .. batch-(n-1).
fn assert_prefix_served(broker: &TestBroker, topic: &str, n: usize) {
    let messages = broker.consume(topic, 1, n, Duration::from_secs(30));
    assert_eq!(
        messages.len(),
        n,
        "records before the damage must all be served"
    );
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m.offset(), i as i64);
        assert!(
            text(m).starts_with(&format!("batch-{i}-")),
            "offset {i} holds {}",
            text(m)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_segment_tail_is_cut_on_start_and_everything_before_is_served() {
    let mut broker = TestBroker::start();
    create_topic(&broker, "torn", 1, &[]).await;
    produce_batches(&broker, "torn", 50).await;
    broker.kill();
    // A torn write: the last batch lost its final 10 bytes.
    let path = segment_path(&broker, "torn");
    let len = std::fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    broker.restart();
    assert_eq!(
        latest_offset(&broker, "torn", 0).await,
        49,
        "the torn last batch is dropped"
    );
    assert!(
        broker.log().contains("truncated damaged log tail"),
        "recovery is logged"
    );
    assert_prefix_served(&broker, "torn", 49);
    // New writes continue at the cut.
    produce_batches(&broker, "torn", 1).await;
    assert_eq!(latest_offset(&broker, "torn", 0).await, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bytes_in_a_segment_cut_the_log_at_the_damaged_batch() {
    let mut broker = TestBroker::start();
    create_topic(&broker, "flipped", 1, &[]).await;
    produce_batches(&broker, "flipped", 40).await;
    // Even after a clean shutdown, the active segment is verified on start.
    assert_eq!(broker.stop(), Some(0));
    let path = segment_path(&broker, "flipped");
    let mut raw = std::fs::read(&path).unwrap();
    // Each batch has the same size here: damage the value bytes of batch 30.
    let batch_len = raw.len() / 40;
    raw[30 * batch_len + batch_len - 5] ^= 0xff;
    std::fs::write(&path, &raw).unwrap();
    broker.restart();
    assert_eq!(latest_offset(&broker, "flipped", 0).await, 30);
    assert_prefix_served(&broker, "flipped", 30);
    assert_eq!(list_offset(&broker, "flipped", 0, -2).await, Ok(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_checkpoint_or_a_lost_metadata_log_does_not_stop_the_broker() {
    let mut broker = TestBroker::start();
    create_topic(&broker, "meta", 2, &[("retention.ms", "3600000")]).await;
    produce_batches(&broker, "meta", 10).await;
    broker.kill();
    std::fs::write(
        broker.dir.join("recovery-point-offset-checkpoint"),
        b"garbage\n",
    )
    .unwrap();
    // Without its metadata log, and with a damaged topics.json of an older
    // version, the broker rebuilds its topics from the partition
    // directories.
    std::fs::remove_dir_all(broker.dir.join("__cluster_metadata")).unwrap();
    std::fs::write(broker.dir.join("topics.json"), b"{ truncated").unwrap();
    broker.restart();
    assert_eq!(latest_offset(&broker, "meta", 0).await, 10);
    assert_prefix_served(&broker, "meta", 10);
    assert!(broker
        .log()
        .contains("rebuilding topics from partition directories"));
}

/// The `topics.json` an older version kept: every topic found in the data
/// directory with its id (from `partition.metadata`) and partition count.
fn write_legacy_topics_json(dir: &std::path::Path, configs: &HashMap<&str, serde_json::Value>) {
    let mut topics: std::collections::BTreeMap<String, (String, i32)> = Default::default();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((topic, p)) = name.rsplit_once('-') else {
            continue;
        };
        let Ok(p) = p.parse::<i32>() else { continue };
        let meta = std::fs::read_to_string(entry.path().join("partition.metadata")).unwrap();
        let id = meta
            .lines()
            .find_map(|l| l.strip_prefix("topic_id:"))
            .unwrap()
            .trim()
            .to_string();
        let slot = topics.entry(topic.to_string()).or_insert((id, 0));
        slot.1 = slot.1.max(p + 1);
    }
    let list: Vec<serde_json::Value> = topics
        .into_iter()
        .map(|(name, (id, partitions))| {
            let configs = configs
                .get(name.as_str())
                .cloned()
                .unwrap_or(serde_json::json!({}));
            serde_json::json!({"name": name, "id": id, "partitions": partitions, "configs": configs})
        })
        .collect();
    let file = serde_json::json!({"version": 1, "topics": list});
    std::fs::write(dir.join("topics.json"), serde_json::to_vec(&file).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_the_version_before_the_metadata_log_opens_without_loss() {
    let mut broker = TestBroker::start();
    create_topic(&broker, "kept", 2, &[]).await;
    produce_batches(&broker, "kept", 12).await;
    assert_eq!(broker.stop(), Some(0));
    // What the version before kept instead of a metadata log.
    std::fs::remove_dir_all(broker.dir.join("__cluster_metadata")).unwrap();
    let configs = HashMap::from([(
        "kept",
        serde_json::json!({"retention.ms": "3600000", "cleanup.policy": "delete"}),
    )]);
    write_legacy_topics_json(&broker.dir, &configs);
    std::fs::write(
        broker.dir.join("dynamic-configs.json"),
        br#"{"version": 1, "broker": {"log.retention.bytes": "1048576000"}, "cluster_default": {}, "groups": {}}"#,
    )
    .unwrap();
    // Producer ids below this end may still be held by producers.
    std::fs::write(broker.dir.join("producer-id-block"), "3000\n").unwrap();
    broker.restart();
    assert_eq!(latest_offset(&broker, "kept", 0).await, 12);
    assert!(
        init_producer_id(&broker).await >= 3000,
        "producer ids continue after the block of the version before"
    );
    assert!(
        broker.dir.join("producer-id-block.migrated").exists()
            && !broker.dir.join("producer-id-block").exists()
    );
    assert_prefix_served(&broker, "kept", 12);
    assert!(
        broker.dir.join("topics.json.migrated").exists()
            && !broker.dir.join("topics.json").exists(),
        "topics.json is moved into the metadata log once"
    );
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", broker.addr())
            .create()
            .unwrap();
    let opts = rdkafka::admin::AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let described = admin
        .describe_configs(
            &[
                rdkafka::admin::ResourceSpecifier::Topic("kept"),
                rdkafka::admin::ResourceSpecifier::Broker(0),
            ],
            &opts,
        )
        .await
        .unwrap();
    let topic = described[0].as_ref().unwrap();
    assert_eq!(
        topic.get("retention.ms").and_then(|e| e.value.as_deref()),
        Some("3600000"),
        "the topic keeps its override"
    );
    let broker_configs = described[1].as_ref().unwrap();
    assert_eq!(
        broker_configs
            .get("log.retention.bytes")
            .and_then(|e| e.value.as_deref()),
        Some("1048576000"),
        "the broker keeps its dynamic config"
    );
    // A restart reads it all from the metadata log, and new records follow.
    produce_batches(&broker, "kept", 1).await;
    broker.kill();
    broker.restart();
    assert!(
        init_producer_id(&broker).await >= 4000,
        "a new incarnation gets a new block"
    );
    assert_eq!(latest_offset(&broker, "kept", 0).await, 13);
    assert_prefix_served(&broker, "kept", 12);
}

async fn init_producer_id(broker: &TestBroker) -> i64 {
    let mut request = kafka_protocol::messages::InitProducerIdRequest::default();
    request.transactional_id = None;
    request.transaction_timeout_ms = 60_000;
    let response = broker.client().await.send(&request).await.unwrap();
    assert_eq!(response.error_code, 0);
    response.producer_id.0
}
