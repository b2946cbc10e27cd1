//! Running out of file descriptors: topic creation is all or nothing, the
//! broker raises its soft open-file limit, and closed segments do not hold
//! files open. Limits are set on the real process (setrlimit before exec,
//! prlimit while it runs); open files are counted in /proc/<pid>/fd.

use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{CreateTopicsRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::FutureRecord;

use crate::harness::{create_topic, TestBroker};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.into()))
}

/// CreateTopics for one topic: (error code, message).
async fn try_create(
    broker: &TestBroker,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> (i16, Option<String>) {
    let mut client = broker.client().await;
    client.set_timeout(Duration::from_secs(120));
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = partitions;
    t.replication_factor = 1;
    for (k, v) in configs {
        let mut c = CreatableTopicConfig::default();
        c.name = StrBytes::from_string(k.to_string());
        c.value = Some(StrBytes::from_string(v.to_string()));
        t.configs.push(c);
    }
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![t];
    request.timeout_ms = 120_000;
    let response = client.send(&request).await.expect("CreateTopics");
    let r = &response.topics[0];
    (
        r.error_code,
        r.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// The error code Metadata answers for a topic (no auto-creation).
async fn metadata_error(broker: &TestBroker, topic: &str) -> (i16, usize) {
    let mut client = broker.client().await;
    let mut t = MetadataRequestTopic::default();
    t.name = Some(name(topic));
    let mut request = MetadataRequest::default();
    request.topics = Some(vec![t]);
    request.allow_auto_topic_creation = false;
    let response = client.send(&request).await.expect("Metadata");
    let t = &response.topics[0];
    (t.error_code, t.partitions.len())
}

/// Entries of the data directory that belong to `topic`.
fn dirs_of(broker: &TestBroker, topic: &str) -> Vec<String> {
    let prefix = format!("{topic}-");
    std::fs::read_dir(&broker.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Sets the running broker's soft open-file limit (prlimit); returns the
/// one it had.
fn set_soft_open_file_limit(broker: &TestBroker, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit with a null new limit only reads the current one.
    let rc = unsafe {
        libc::prlimit(
            broker.pid() as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(rc, 0, "read the broker's limit");
    let new = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: old.rlim_max,
    };
    // SAFETY: sets the limit of our own child process from a struct we own.
    let rc = unsafe {
        libc::prlimit(
            broker.pid() as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "set the broker's limit");
    old.rlim_cur
}

/// Waits until the broker's open-file count stops moving (its embedded
/// registry and connect worker create their topics at start).
fn settled_open_files(broker: &TestBroker) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = broker.open_files();
    let mut stable_since = Instant::now();
    while stable_since.elapsed() < Duration::from_secs(2) {
        assert!(Instant::now() < deadline, "open files never settled");
        std::thread::sleep(Duration::from_millis(100));
        let now = broker.open_files();
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_topics_that_fails_part_way_leaves_nothing_behind_also_after_a_restart() {
    let mut broker = TestBroker::start();
    create_topic(&broker, "before", 1, &[]).await;
    let open = tokio::task::block_in_place(|| settled_open_files(&broker));
    // Room for about 60 more files: the 200 partitions do not fit.
    let before = set_soft_open_file_limit(&broker, open as u64 + 60);
    let (code, message) = try_create(&broker, "big", 200, &[]).await;
    set_soft_open_file_limit(&broker, before);
    let message = message.unwrap_or_default();
    assert_eq!(code, 56, "KAFKA_STORAGE_ERROR: {message}");
    let leftovers = dirs_of(&broker, "big");
    assert_eq!(
        leftovers.len(),
        0,
        "no partition left on disk: {leftovers:?}"
    );
    assert_eq!(
        metadata_error(&broker, "big").await,
        (3, 0),
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert!(
        message.contains("RLIMIT_NOFILE") && message.contains("big-"),
        "the error names the file and the limit to raise: {message}"
    );

    // A crash in the middle of a creation (SIGKILL before the metadata
    // log recorded it) leaves partitions under their temporary names only.
    let id = "5f0c2a9e1b7d4c3a8e6f0b1d2c3a4e5f";
    for p in 0..3 {
        let dir = broker.dir.join(format!("crashed-{p}.{id}-new"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("partition.metadata"),
            "version: 0\ntopic_id: 5f0c2a9e-1b7d-4c3a-8e6f-0b1d2c3a4e5f\n",
        )
        .unwrap();
    }
    broker.restart();
    assert_eq!(
        metadata_error(&broker, "big").await,
        (3, 0),
        "still unknown after a restart"
    );
    assert_eq!(metadata_error(&broker, "crashed").await, (3, 0));
    assert_eq!(dirs_of(&broker, "big"), Vec::<String>::new());
    assert_eq!(
        dirs_of(&broker, "crashed"),
        Vec::<String>::new(),
        "undone at start"
    );
    assert_eq!(metadata_error(&broker, "before").await, (0, 1));

    // With enough files the same creation succeeds, whole.
    assert_eq!(try_create(&broker, "big", 200, &[]).await.0, 0);
    assert_eq!(dirs_of(&broker, "big").len(), 200);
    broker.restart();
    assert_eq!(metadata_error(&broker, "big").await, (0, 200));
}

/// Waits until a restarted broker answers (opening thousands of partitions
/// takes a while on a busy machine).
async fn wait_serving(broker: &TestBroker) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while runnel_core::client::Client::connect(&broker.addr(), "wait")
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the broker never answered");
    }
}

fn limits_of(broker: &TestBroker) -> String {
    std::fs::read_to_string(format!("/proc/{}/limits", broker.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_started_with_a_low_soft_limit_raises_it_and_serves_2000_partitions() {
    let mut broker = TestBroker::start_with_open_file_limit(256, 4096, &[]);
    let limits = limits_of(&broker);
    assert!(
        limits.split_whitespace().filter(|w| *w == "4096").count() == 2,
        "the soft limit was raised to the hard one: {limits}"
    );
    assert!(broker.log().contains("raised the open-file limit"));
    assert_eq!(try_create(&broker, "wide", 2000, &[]).await.0, 0);
    // A restart opens all 2,000 partitions again, from a soft limit of 256.
    broker.restart();
    wait_serving(&broker).await;
    assert_eq!(metadata_error(&broker, "wide").await, (0, 2000));
    let producer = broker.producer(&[]);
    for p in [0, 999, 1999] {
        producer
            .send(
                FutureRecord::<(), _>::to("wide").partition(p).payload("x"),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
    let open = broker.open_files();
    eprintln!("open files with 2,000 partitions: {open}");
    assert!(open > 2000, "one file per partition is open: {open}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_segments_stay_closed_and_a_topic_with_more_segments_than_the_limit_is_readable() {
    // Hard = soft: the limit cannot be raised.
    let mut broker = TestBroker::start_with_open_file_limit(256, 256, &[]);
    assert_eq!(
        try_create(&broker, "many", 1, &[("segment.bytes", "1024")])
            .await
            .0,
        0
    );
    let producer = broker.producer(&[("linger.ms", "0")]);
    let value = "v".repeat(600);
    const RECORDS: usize = 400;
    for i in 0..RECORDS {
        // One record per batch, and a batch of 600 bytes per segment.
        producer
            .send(
                FutureRecord::to("many")
                    .key(&format!("k{i}"))
                    .payload(&value),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("record {i}: {e}"));
    }
    let segments = std::fs::read_dir(broker.dir.join("many-0"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count();
    let open = broker.open_files();
    eprintln!("{segments} segments, {open} open files");
    assert!(segments >= RECORDS, "a segment per record: {segments}");
    assert!(open < 256, "closed segments hold no files: {open}");

    // The same data directory starts under the same limit and every record
    // reads back.
    broker.restart();
    let messages =
        tokio::task::block_in_place(|| broker.consume("many", 1, RECORDS, Duration::from_secs(60)));
    assert_eq!(messages.len(), RECORDS);
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(crate::harness::key(m), format!("k{i}"));
    }
    let open = broker.open_files();
    eprintln!("after reading every segment: {open} open files");
    assert!(open < 256, "{open}");
}
