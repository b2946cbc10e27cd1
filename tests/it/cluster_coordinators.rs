//! What coordinators serve in a cluster. Consumer groups: a group's
//! coordinator is the leader of its `__consumer_offsets` partition (kept
//! on three replicas); when that broker dies, the replica that takes the
//! partition over loads the group's committed offsets and serves them.
//! Producer ids: blocks come from the metadata quorum, so no two brokers
//! hand out the same id.

use std::time::{Duration, Instant};

use kafka_protocol::messages::{FindCoordinatorRequest, InitProducerIdRequest, MetadataRequest};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::harness::{TestBroker, TestCluster};

const GROUP: &str = "ledger-readers";
const TOPIC: &str = "ledger";

/// The coordinator `node` names for GROUP, once it names one (error NONE).
async fn coordinator_seen_by(node: &TestBroker, not: Option<i32>) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut request = FindCoordinatorRequest::default();
        request.key = StrBytes::from_static_str(GROUP);
        let answer = node.client().await.send_version(&request, 3).await;
        if let Ok(response) = answer {
            if response.error_code == 0 && Some(response.node_id.0) != not {
                return response.node_id.0;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no coordinator (other than {not:?}) for {GROUP}:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The replication factor of each partition of `topic` as `node` sees it.
async fn replication_factors(node: &TestBroker, topic: &str) -> Vec<usize> {
    let mut request = MetadataRequest::default();
    request.topics = None;
    let response = node.client().await.send(&request).await.unwrap();
    response
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        .map(|t| t.partitions.iter().map(|p| p.replica_nodes.len()).collect())
        .unwrap_or_default()
}

fn group_consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap()
}

/// The group's committed offset of TOPIC-0, asked through `consumer` until
/// an answer comes (the coordinator may be moving).
fn committed(consumer: &BaseConsumer) -> Offset {
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(TOPIC, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match consumer.committed_offsets(wanted.clone(), Duration::from_secs(5)) {
            Ok(list) => return list.find_partition(TOPIC, 0).map(|p| p.offset()).unwrap(),
            Err(e) => assert!(
                Instant::now() < deadline,
                "no committed offsets within the time: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads TOPIC in GROUP until `count` records arrived; returns their offsets.
fn read(consumer: &BaseConsumer, count: usize) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut offsets = Vec::new();
    while offsets.len() < count {
        assert!(
            Instant::now() < deadline,
            "read {} of {count} records",
            offsets.len()
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            offsets.push(m.offset());
        }
    }
    offsets
}

/// Commits `next` for TOPIC-0, retrying while the coordinator moves.
fn commit(consumer: &BaseConsumer, next: i64) {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(TOPIC, 0, Offset::Offset(next))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = consumer.commit(&list, CommitMode::Sync) {
        assert!(Instant::now() < deadline, "commit of {next} failed: {e}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_keeps_its_committed_offsets_across_a_coordinator_failover() {
    let mut cluster = TestCluster::start_with(
        3,
        &[
            "--broker-session-timeout-ms",
            "2000",
            "--replica-lag-time-max-ms",
            "2000",
        ],
    );
    let first = coordinator_seen_by(&cluster.nodes[0], None).await;
    for node in &cluster.nodes {
        assert_eq!(coordinator_seen_by(node, None).await, first);
    }
    let factors = replication_factors(&cluster.nodes[0], "__consumer_offsets").await;
    assert!(
        !factors.is_empty() && factors.iter().all(|&f| f == 3),
        "__consumer_offsets is kept on every broker of three: {factors:?}"
    );

    // The other internal topics get the same replication factor.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let factors = replication_factors(&cluster.nodes[1], "_runnel_transforms").await;
        if factors == [3] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "_runnel_transforms has replication factors {factors:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    crate::harness::create_replicated_topic(&cluster.nodes[0], TOPIC, 1, 3, &[]).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "all")
        .create()
        .unwrap();
    for i in 0..200 {
        producer
            .send(
                FutureRecord::<(), _>::to(TOPIC).payload(&i.to_string()),
                Duration::from_secs(30),
            )
            .await
            .expect("produce");
    }

    // The first reader processes 120 records and commits, then leaves.
    let bootstrap = cluster.bootstrap();
    let reader = tokio::task::spawn_blocking(move || {
        let consumer = group_consumer(&bootstrap);
        consumer.subscribe(&[TOPIC]).unwrap();
        let offsets = read(&consumer, 120);
        commit(&consumer, offsets[119] + 1);
        let stored = committed(&consumer);
        (offsets, stored)
    })
    .await
    .unwrap();
    assert_eq!(reader.0, (0..120).collect::<Vec<i64>>());
    assert_eq!(reader.1, Offset::Offset(120));

    // The coordinator dies; another replica of its partition takes over.
    let dead = first as usize - 1;
    cluster.nodes[dead].kill();
    let live: Vec<usize> = (0..3).filter(|&i| i != dead).collect();
    let second = coordinator_seen_by(&cluster.nodes[live[0]], Some(first)).await;
    assert_ne!(second, first);
    let bootstrap = live
        .iter()
        .map(|&i| cluster.nodes[i].addr())
        .collect::<Vec<_>>()
        .join(",");

    // The next reader starts where the first left off, and commits through
    // the new coordinator.
    let resumed = tokio::task::spawn_blocking(move || {
        let consumer = group_consumer(&bootstrap);
        let before = committed(&consumer);
        consumer.subscribe(&[TOPIC]).unwrap();
        let offsets = read(&consumer, 80);
        commit(&consumer, offsets[79] + 1);
        (before, offsets, committed(&consumer))
    })
    .await
    .unwrap();
    assert_eq!(
        resumed.0,
        Offset::Offset(120),
        "the new coordinator has the commit"
    );
    assert_eq!(
        resumed.1,
        (120..200).collect::<Vec<i64>>(),
        "nothing read twice, nothing skipped"
    );
    assert_eq!(resumed.2, Offset::Offset(200));

    // The dead broker returns: wherever the group is coordinated now, it
    // has the latest commit.
    cluster.nodes[dead].restart();
    let bootstrap = cluster.nodes[dead].addr();
    let after = tokio::task::spawn_blocking(move || committed(&group_consumer(&bootstrap)))
        .await
        .unwrap();
    assert_eq!(after, Offset::Offset(200));
}

async fn init_producer_id(node: &TestBroker) -> i64 {
    let mut request = InitProducerIdRequest::default();
    request.transactional_id = None;
    request.transaction_timeout_ms = 60_000;
    let response = node.client().await.send(&request).await.unwrap();
    assert_eq!(response.error_code, 0, "InitProducerId on {}", node.addr());
    response.producer_id.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_two_brokers_or_incarnations_hand_out_the_same_producer_id() {
    let mut cluster = TestCluster::start(3);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..3 {
        for node in &cluster.nodes {
            let id = init_producer_id(node).await;
            assert!(
                seen.insert(id),
                "producer id {id} handed out twice: {seen:?}"
            );
        }
    }
    // A broker that restarts (even killed) gets a new block.
    cluster.nodes[1].kill();
    cluster.nodes[1].restart();
    for _ in 0..3 {
        let id = init_producer_id(&cluster.nodes[1]).await;
        assert!(
            seen.insert(id),
            "producer id {id} handed out twice: {seen:?}"
        );
    }
}
