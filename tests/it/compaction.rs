//! Log compaction end to end: a `cleanup.policy=compact` topic written by
//! librdkafka (lz4) ends up holding exactly the latest value of every live
//! key, each at the offset its produce was acknowledged with; tombstones go
//! after `delete.retention.ms`; and SIGKILLs while the cleaner runs lose
//! nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::harness::{create_topic, latest_offset, TestBroker};

const TOPIC: &str = "compacted";
const KEYS: usize = 1000;
const VERSIONS: usize = 8;

/// What a consumer must see: key → (offset, value) of every live key.
type View = BTreeMap<String, (i64, String)>;

fn cleaner_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("fast-cleaner.yaml");
    std::fs::write(
        &path,
        "log_cleaner_interval_ms: 100\nflush_checkpoint_interval_ms: 300\n",
    )
    .unwrap();
    path
}

/// A value that lz4 cannot shrink much, so the topic spans many segments.
fn value(key: &str, version: usize) -> String {
    let mut x = (version as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ key
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let noise: String = (0..6)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{x:016x}")
        })
        .collect();
    format!("{key}-v{version}-{noise}")
}

fn main_key(i: usize) -> String {
    format!("key-{i:04}")
}

/// Keys ≡ 3 (mod 10) are deleted with tombstones.
fn deleted(i: usize) -> bool {
    i % 10 == 3
}

/// Produces one version of `keys`, 50 at a time (so that a produce request
/// stays far below `segment.bytes`), and records the acks.
async fn produce_version(
    producer: &FutureProducer,
    keys: &[String],
    version: usize,
    view: &mut View,
) {
    for chunk in keys.chunks(50) {
        let sends = chunk.iter().map(|key| {
            let value = value(key, version);
            async move {
                let delivery = producer
                    .send(
                        FutureRecord::to(TOPIC)
                            .partition(0)
                            .key(key)
                            .payload(&value),
                        Duration::from_secs(30),
                    )
                    .await
                    .unwrap_or_else(|(e, _)| panic!("produce {key}: {e}"));
                (key.clone(), delivery.offset, value)
            }
        });
        for (key, offset, value) in join_all(sends).await {
            view.insert(key, (offset, value));
        }
    }
}

async fn produce_tombstones(producer: &FutureProducer, keys: &[String]) -> i64 {
    let sends = keys.iter().map(|key| async move {
        producer
            .send(
                FutureRecord::<String, ()>::to(TOPIC).partition(0).key(key),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("tombstone {key}: {e}"))
            .offset
    });
    join_all(sends).await.into_iter().max().unwrap()
}

/// Sets one config of the topic (IncrementalAlterConfigs).
async fn set_topic_config(broker: &TestBroker, key: &str, value: &str) {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    use kafka_protocol::protocol::StrBytes;
    let mut config = AlterableConfig::default();
    config.name = StrBytes::from_string(key.into());
    config.config_operation = 0;
    config.value = Some(StrBytes::from_string(value.into()));
    let mut resource = AlterConfigsResource::default();
    resource.resource_type = 2;
    resource.resource_name = StrBytes::from_string(TOPIC.into());
    resource.configs = vec![config];
    let mut request = IncrementalAlterConfigsRequest::default();
    request.resources = vec![resource];
    let response = broker
        .client()
        .await
        .send(&request)
        .await
        .expect("alter configs");
    assert_eq!(response.responses[0].error_code, 0, "set {key}={value}");
}

/// Base offsets of the partition's segments, from the files on disk.
fn segment_bases(broker: &TestBroker) -> Vec<i64> {
    let mut bases: Vec<i64> = std::fs::read_dir(broker.dir.join(format!("{TOPIC}-0")))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    bases
}

fn cleaned_files(broker: &TestBroker) -> usize {
    std::fs::read_dir(broker.dir.join(format!("{TOPIC}-0")))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".cleaned"))
                .count()
        })
        .unwrap_or(0)
}

/// Produces unique filler keys until the active segment starts after
/// `offset`, so everything up to it is in closed segments the cleaner may
/// compact. The fillers are live keys too.
async fn roll_past(broker: &TestBroker, producer: &FutureProducer, offset: i64, view: &mut View) {
    let mut round = 0;
    while segment_bases(broker).last().copied().unwrap_or(0) <= offset {
        let keys: Vec<String> = (0..100)
            .map(|i| format!("filler-{offset}-{round}-{i}"))
            .collect();
        produce_version(producer, &keys, 0, view).await;
        round += 1;
        assert!(round < 100, "the segment never rolled");
    }
}

/// Reads the whole partition from the beginning up to the high watermark:
/// key → every (offset, value) seen, `None` values being tombstones.
async fn read_all(broker: &TestBroker) -> BTreeMap<String, Vec<(i64, Option<String>)>> {
    let end = latest_offset(broker, TOPIC, 0).await;
    let consumer = broker.consumer();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut seen: BTreeMap<String, Vec<(i64, Option<String>)>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = -1;
    while last < end - 1 {
        assert!(
            Instant::now() < deadline,
            "could not read up to offset {end}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = m.offset();
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let value = m.payload().map(|v| String::from_utf8_lossy(v).into_owned());
                seen.entry(key).or_default().push((m.offset(), value));
            }
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    seen
}

/// Differences between what the partition holds and `view`.
fn mismatches(seen: &BTreeMap<String, Vec<(i64, Option<String>)>>, view: &View) -> Vec<String> {
    let mut out = Vec::new();
    for (key, records) in seen {
        match (view.get(key), records.as_slice()) {
            (Some((offset, value)), [(o, Some(v))]) if o == offset && v == value => {}
            (None, _) => out.push(format!("{key}: should be gone, holds {records:?}")),
            (Some(expected), _) => out.push(format!(
                "{key}: expected only {expected:?}, holds {records:?}"
            )),
        }
    }
    for key in view.keys().filter(|k| !seen.contains_key(*k)) {
        out.push(format!("{key}: missing"));
    }
    out
}

/// Polls until the partition holds exactly `view`, then checks it.
async fn wait_until_compacted(broker: &TestBroker, view: &View) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen = read_all(broker).await;
        let wrong = mismatches(&seen, view);
        if wrong.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "not compacted after 90 s: {} keys wrong, e.g. {:#?}",
                wrong.len(),
                &wrong[..wrong.len().min(10)]
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_keeps_the_latest_value_of_each_key_at_its_acknowledged_offset_across_sigkills(
) {
    let tmp = tempfile::tempdir().unwrap();
    let config = cleaner_config(tmp.path());
    let mut broker = TestBroker::start_with(&["--config", config.to_str().unwrap()]);
    create_topic(
        &broker,
        TOPIC,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "32768"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "1000"),
        ],
    )
    .await;
    let lz4 = [
        ("compression.type", "lz4"),
        ("acks", "all"),
        ("linger.ms", "5"),
    ];
    let mut view = View::new();
    {
        let producer = broker.producer(&lz4);
        let keys: Vec<String> = (0..KEYS).map(main_key).collect();
        for version in 0..VERSIONS {
            produce_version(&producer, &keys, version, &mut view).await;
        }
        let dead: Vec<String> = (0..KEYS).filter(|&i| deleted(i)).map(main_key).collect();
        let last_tombstone = produce_tombstones(&producer, &dead).await;
        for key in &dead {
            view.remove(key);
        }
        roll_past(&broker, &producer, last_tombstone, &mut view).await;
    }
    wait_until_compacted(&broker, &view).await;
    assert!(
        broker.log().contains("cleaned log"),
        "the cleaner logs its work"
    );
    assert_eq!(cleaned_files(&broker), 0);

    // Now kill the broker while it cleans new versions, a few times.
    let live: Vec<String> = (0..KEYS).filter(|&i| !deleted(i)).map(main_key).collect();
    let mut kills_mid_pass = 0;
    for round in 0..5 {
        // Hold the cleaner back while a new version of every key goes in,
        // then let it loose on all of it and kill it in the middle.
        set_topic_config(&broker, "min.cleanable.dirty.ratio", "0.99").await;
        let producer = broker.producer(&lz4);
        produce_version(&producer, &live, 100 + round, &mut view).await;
        let end = latest_offset(&broker, TOPIC, 0).await;
        roll_past(&broker, &producer, end - 1, &mut view).await;
        drop(producer);
        set_topic_config(&broker, "min.cleanable.dirty.ratio", "0.01").await;
        let deadline = Instant::now() + Duration::from_secs(3);
        while cleaned_files(&broker) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(100));
        }
        broker.kill();
        if cleaned_files(&broker) > 0 {
            kills_mid_pass += 1;
        }
        broker.restart();
    }
    eprintln!("{kills_mid_pass} of 5 kills landed while a segment was being cleaned");
    assert!(kills_mid_pass > 0, "no kill landed during a cleaning pass");
    wait_until_compacted(&broker, &view).await;
    assert_eq!(broker.log().matches("runnel broker started").count(), 6);
}
