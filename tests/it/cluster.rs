//! Several brokers on one metadata quorum (`--controller-quorum`): every
//! node sees the same topics, partitions are placed across the brokers,
//! each partition is served by the broker leading it, and a node that was
//! down catches up with the changes made meanwhile.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::harness::{create_topic, metric, TestBroker, TestCluster};

/// One v2 batch holding one record.
fn one_record_batch() -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(Bytes::from_static(b"elsewhere")),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &[record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

pub(crate) async fn metadata(node: &TestBroker) -> MetadataResponse {
    let mut client = node.client().await;
    let mut request = MetadataRequest::default();
    // All topics.
    request.topics = None;
    client.send(&request).await.expect("Metadata")
}

/// Waits until `node` lists `n` brokers.
pub(crate) async fn wait_for_brokers(node: &TestBroker, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = metadata(node).await.brokers.len();
        if listed == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node lists {listed} brokers, not {n}:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leader of each partition of `topic` as `node` sees it, once it
/// lists the topic with `partitions` partitions (`None` if it never does
/// within the time, or lists it without).
async fn leaders(node: &TestBroker, topic: &str, partitions: usize) -> Option<Vec<i32>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = metadata(node).await;
        let found = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic));
        if let Some(t) = found {
            if t.partitions.len() == partitions {
                let mut by_index: Vec<(i32, i32)> = t
                    .partitions
                    .iter()
                    .map(|p| (p.partition_index, p.leader_id.0))
                    .collect();
                by_index.sort();
                return Some(by_index.into_iter().map(|(_, l)| l).collect());
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CreateTopics of one partition with `factor` replicas: (error code, the
/// replication factor answered).
async fn create_with_factor(node: &TestBroker, name: &str, factor: i16) -> (i16, i16) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::CreateTopicsRequest;
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(StrBytes::from_string(name.to_string()));
    topic.num_partitions = 1;
    topic.replication_factor = factor;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![topic];
    request.timeout_ms = 10_000;
    let mut client = node.client().await;
    let response = client.send(&request).await.unwrap();
    let result = &response.topics[0];
    (result.error_code, result.replication_factor)
}

/// Whether `node` stops listing `topic` within the time.
async fn forgets(node: &TestBroker, topic: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let response = metadata(node).await;
        if !response
            .topics
            .iter()
            .any(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_agree_on_topics_and_each_partition_is_served_where_it_leads() {
    let cluster = TestCluster::start(3);
    for node in &cluster.nodes {
        wait_for_brokers(node, 3).await;
    }
    create_topic(&cluster.nodes[1], "spread", 6, &[]).await;
    let seen = leaders(&cluster.nodes[0], "spread", 6)
        .await
        .expect("node 1 lists the topic created through node 2");
    for node in &cluster.nodes[1..] {
        assert_eq!(
            leaders(node, "spread", 6).await.as_ref(),
            Some(&seen),
            "every node names the same leaders"
        );
    }
    let mut per_broker: BTreeMap<i32, usize> = BTreeMap::new();
    for leader in &seen {
        *per_broker.entry(*leader).or_default() += 1;
    }
    // Placement balances leaders over every topic, including the internal
    // ones the nodes created while the others were still registering (the
    // rule itself is unit-tested in `controller::decisions`): each leader
    // is one of the brokers.
    assert!(
        per_broker.keys().all(|b| (1..=3).contains(b)),
        "leaders are brokers of the cluster: {seen:?}"
    );
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for node in &cluster.nodes {
            ids.push(
                metadata(node)
                    .await
                    .cluster_id
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
            );
        }
        ids
    };
    assert!(
        ids.iter().all(|id| id == &ids[0] && !id.is_empty()),
        "one cluster id: {ids:?}"
    );

    // A client bootstrapped on all nodes writes each partition at its
    // leader, and reads everything back.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    for i in 0..60 {
        let value = format!("record-{i}");
        producer
            .send(
                FutureRecord::<(), _>::to("spread")
                    .partition(i % 6)
                    .payload(&value),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce {i}: {e}"));
    }
    let consumed = cluster.nodes[2].consume("spread", 6, 60, Duration::from_secs(30));
    assert_eq!(consumed.len(), 60, "every record is read back");

    // The replication factor: the cluster default is min(3, live brokers),
    // and more replicas than brokers is refused.
    assert_eq!(
        create_with_factor(&cluster.nodes[2], "defaulted", -1).await,
        (0, 3)
    );
    assert_eq!(
        create_with_factor(&cluster.nodes[2], "too-many", 4).await.0,
        38,
        "INVALID_REPLICATION_FACTOR"
    );
    // The node that created it answers once it applied the creation.
    let replicas = metadata(&cluster.nodes[2])
        .await
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("defaulted"))
        .map(|t| t.partitions[0].replica_nodes.len());
    assert_eq!(replicas, Some(3));

    // A broker that does not lead a partition refuses it with
    // NOT_LEADER_OR_FOLLOWER and says where the leader is (KIP-951).
    let leader = seen[0];
    let other = cluster
        .nodes
        .iter()
        .position(|n| n.port != cluster.nodes[(leader - 1) as usize].port)
        .unwrap();
    let epoch = metadata(&cluster.nodes[0])
        .await
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("spread"))
        .and_then(|t| t.partitions.iter().find(|p| p.partition_index == 0))
        .map(|p| p.leader_epoch)
        .unwrap();
    let mut client = cluster.nodes[other].client().await;
    let mut data = PartitionProduceData::default();
    data.index = 0;
    data.records = Some(one_record_batch());
    let mut topic = TopicProduceData::default();
    topic.name = TopicName(StrBytes::from_static_str("spread"));
    topic.partition_data = vec![data];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 5000;
    request.topic_data = vec![topic];
    let response: ProduceResponse = client.send_version(&request, 10).await.unwrap();
    let answer = &response.responses[0].partition_responses[0];
    assert_eq!(answer.error_code, 6, "NOT_LEADER_OR_FOLLOWER");
    assert_eq!(
        (
            answer.current_leader.leader_id.0,
            answer.current_leader.leader_epoch
        ),
        (leader, epoch)
    );
    let leader_port = cluster.nodes[(leader - 1) as usize].port as i32;
    assert!(
        response
            .node_endpoints
            .iter()
            .any(|n| n.node_id.0 == leader && n.port == leader_port),
        "the leader's endpoint is in the answer: {:?}",
        response.node_endpoints
    );
    let mut partition = FetchPartition::default();
    partition.partition = 0;
    partition.current_leader_epoch = -1;
    partition.partition_max_bytes = 1 << 20;
    let mut fetch_topic = FetchTopic::default();
    fetch_topic.topic = TopicName(StrBytes::from_static_str("spread"));
    fetch_topic.partitions = vec![partition];
    let mut request = FetchRequest::default();
    request.replica_id = (-1).into();
    request.max_bytes = 1 << 20;
    request.topics = vec![fetch_topic];
    let response: FetchResponse = client.send_version(&request, 12).await.unwrap();
    let answer = &response.responses[0].partitions[0];
    assert_eq!(answer.error_code, 6, "NOT_LEADER_OR_FOLLOWER");
    assert_eq!(answer.current_leader.leader_id.0, leader);

    // A deletion through any node reaches all of them.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", cluster.nodes[0].addr())
            .create()
            .unwrap();
    let opts = rdkafka::admin::AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let deleted = admin.delete_topics(&["spread"], &opts).await.unwrap();
    assert!(deleted[0].is_ok(), "{deleted:?}");
    for node in &cluster.nodes {
        assert!(forgets(node, "spread").await, "{}", node.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_was_down_rejoins_and_sees_what_changed_meanwhile() {
    let mut cluster = TestCluster::start(3);
    for node in &cluster.nodes {
        wait_for_brokers(node, 3).await;
    }
    cluster.nodes[2].kill();
    // Two of three voters are a majority: changes go on.
    create_topic(&cluster.nodes[0], "while-down", 3, &[]).await;
    assert!(leaders(&cluster.nodes[1], "while-down", 3).await.is_some());
    cluster.nodes[2].restart();
    let seen = leaders(&cluster.nodes[2], "while-down", 3).await;
    assert!(
        seen.is_some(),
        "the restarted node lists the topic created while it was down:\n{}",
        cluster.nodes[2].log()
    );
    wait_for_brokers(&cluster.nodes[2], 3).await;
}

/// The segment file of partition 0 of `topic` on `node`.
fn first_segment(node: &TestBroker, topic: &str) -> Vec<u8> {
    std::fs::read(
        node.dir
            .join(format!("{topic}-0"))
            .join("00000000000000000000.log"),
    )
    .unwrap_or_default()
}

/// One record to partition 0 of `topic` through the raw client: the error
/// code answered.
async fn raw_produce(node: &TestBroker, topic: &str, acks: i16) -> i16 {
    let mut data = PartitionProduceData::default();
    data.index = 0;
    data.records = Some(one_record_batch());
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_data = vec![data];
    let mut request = ProduceRequest::default();
    request.acks = acks;
    request.timeout_ms = 5000;
    request.topic_data = vec![t];
    let mut client = node.client().await;
    let response: ProduceResponse = client.send(&request).await.unwrap();
    response.responses[0].partition_responses[0].error_code
}

/// The ISR of partition 0 of `topic` as `node` lists it, sorted.
async fn isr(node: &TestBroker, topic: &str) -> Vec<i32> {
    let response = metadata(node).await;
    let mut isr: Vec<i32> = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        .and_then(|t| t.partitions.iter().find(|p| p.partition_index == 0))
        .map(|p| p.isr_nodes.iter().map(|b| b.0).collect())
        .unwrap_or_default();
    isr.sort();
    isr
}

/// Waits until `node` lists `expected` as the ISR of `topic`-0.
async fn wait_for_isr(node: &TestBroker, topic: &str, expected: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = isr(node, topic).await;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ISR {now:?}, expected {expected:?}:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn send(producer: &FutureProducer, topic: &str, value: &str) -> Result<i64, String> {
    producer
        .send(
            FutureRecord::<(), _>::to(topic).partition(0).payload(value),
            Duration::from_secs(30),
        )
        .await
        .map(|delivery| delivery.offset)
        .map_err(|(e, _)| e.to_string())
}

/// One config of `topic` as the broker at `addr` describes it.
async fn topic_config(addr: &str, topic: &str, key: &str) -> Option<String> {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::DescribeConfigsRequest;
    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = 2;
    resource.resource_name = StrBytes::from_string(topic.to_string());
    resource.configuration_keys = Some(vec![StrBytes::from_string(key.to_string())]);
    let mut request = DescribeConfigsRequest::default();
    request.resources = vec![resource];
    let mut client = runnel_core::client::Client::connect(addr, "runnel-tests")
        .await
        .ok()?;
    let response = client.send_version(&request, 4).await.ok()?;
    let result = response.results.into_iter().next()?;
    result
        .configs
        .into_iter()
        .find(|e| e.name.as_str() == key)
        .and_then(|e| e.value.map(|v| v.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_replicate_byte_for_byte_and_the_isr_decides_what_acks_all_waits_for() {
    let mut cluster = TestCluster::start_with(3, &["--replica-lag-time-max-ms", "1500"]);
    for node in &cluster.nodes {
        wait_for_brokers(node, 3).await;
    }
    assert_eq!(
        create_with_factor(&cluster.nodes[0], "replicated", 3).await,
        (0, 3)
    );
    let leader = leaders(&cluster.nodes[0], "replicated", 1).await.unwrap()[0];
    let leader_index = (leader - 1) as usize;
    let bootstrap = cluster.bootstrap();
    let all_nodes = |acks: &str, timeout_ms: &str| -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("acks", acks)
            .set("message.timeout.ms", timeout_ms)
            .create()
            .unwrap()
    };
    let producer = all_nodes("all", "30000");
    for i in 0..200 {
        let value = format!("replicated-{i}-{}", "r".repeat(i % 50));
        send(&producer, "replicated", &value)
            .await
            .unwrap_or_else(|e| panic!("acks=all produce {i}: {e}"));
    }
    // Every replica holds the same bytes: the leader's batches, offsets and
    // epochs, appended as they are.
    let expected = first_segment(&cluster.nodes[leader_index], "replicated");
    assert!(!expected.is_empty());
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in &cluster.nodes {
        while first_segment(node, "replicated") != expected {
            assert!(
                Instant::now() < deadline,
                "node {} does not hold the leader's log:\n{}",
                node.port,
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let consumed =
        cluster.nodes[leader_index].consume("replicated", 1, 200, Duration::from_secs(30));
    assert_eq!(consumed.len(), 200);
    wait_for_isr(&cluster.nodes[leader_index], "replicated", &[1, 2, 3]).await;

    // A follower that stops fetching leaves the ISR once it is behind for
    // replica.lag.time.max.ms (as in Kafka, a follower at the log end is
    // never behind: the next write starts the clock), and the acks=all
    // write waiting for it is then answered by the others.
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader_index).collect();
    cluster.nodes[followers[0]].kill();
    let waiting = send(&producer, "replicated", "with-two");
    let mut two: Vec<i32> = vec![leader, followers[1] as i32 + 1];
    two.sort();
    let (sent, ()) = tokio::join!(
        waiting,
        wait_for_isr(&cluster.nodes[leader_index], "replicated", &two)
    );
    sent.expect("acks=all with two of three in sync");
    // The leader's admin page counts the partition under-replicated.
    let urp = "runnel_partition_under_replicated{topic=\"replicated\",partition=\"0\"}";
    let page = cluster.nodes[leader_index].metrics().await;
    assert_eq!(metric(&page, urp), Some(1.0), "{page}");
    assert_eq!(
        metric(
            &page,
            "runnel_partition_in_sync_replicas{topic=\"replicated\",partition=\"0\"}"
        ),
        Some(2.0)
    );
    // (with the internal topics' partitions it leads and the dead node had)
    assert!(
        metric(&page, "runnel_broker_under_replicated_partitions").is_some_and(|n| n >= 1.0),
        "{page}"
    );

    // min.insync.replicas above the ISR (3 > 2 in sync): acks=all is
    // refused before the append (NOT_ENOUGH_REPLICAS), acks=1 still works.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", cluster.nodes[leader_index].addr())
            .create()
            .unwrap();
    let leader_addr = cluster.nodes[leader_index].addr();
    let set_min_isr = |value: &'static str| {
        let admin = &admin;
        let leader_addr = &leader_addr;
        async move {
            let opts =
                rdkafka::admin::AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
            let altered =
                admin
                    .alter_configs(
                        &[rdkafka::admin::AlterConfig::new(
                            rdkafka::admin::ResourceSpecifier::Topic("replicated"),
                        )
                        .set("min.insync.replicas", value)],
                        &opts,
                    )
                    .await
                    .unwrap();
            assert!(altered[0].is_ok(), "{altered:?}");
            // The change is committed; the leader may apply it a moment
            // later (as a Kafka broker does).
            let deadline = Instant::now() + Duration::from_secs(10);
            while topic_config(leader_addr, "replicated", "min.insync.replicas")
                .await
                .as_deref()
                != Some(value)
            {
                assert!(
                    Instant::now() < deadline,
                    "the leader did not apply {value}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    set_min_isr("3").await;
    assert_eq!(
        raw_produce(&cluster.nodes[leader_index], "replicated", -1).await,
        19,
        "NOT_ENOUGH_REPLICAS"
    );
    // A librdkafka producer that does not retry sees the broker's error.
    let no_retries: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("retries", "0")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    let refused = send(&no_retries, "replicated", "refused").await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("NotEnoughReplicas")),
        "{refused:?}"
    );
    send(&all_nodes("1", "10000"), "replicated", "leader-only")
        .await
        .expect("acks=1 needs the leader only");

    // Two of three brokers down (and with them the metadata quorum): an
    // acks=all write is not acknowledged.
    set_min_isr("2").await;
    cluster.nodes[followers[1]].kill();
    let lost = send(&all_nodes("all", "3000"), "replicated", "not-acknowledged").await;
    assert!(lost.is_err(), "acks=all with one of three alive: {lost:?}");

    // One broker back is enough again: it catches up, rejoins the ISR and
    // acks=all is answered.
    cluster.nodes[followers[1]].restart();
    send(&producer, "replicated", "one-back")
        .await
        .expect("acks=all with two of three brokers up");

    // The other follower comes back too and catches up; their logs are the
    // leader's again, and nothing refused was stored.
    cluster.nodes[followers[0]].restart();
    wait_for_isr(&cluster.nodes[leader_index], "replicated", &[1, 2, 3]).await;
    send(&producer, "replicated", "all-three-again")
        .await
        .expect("acks=all with the ISR whole again");
    let page = cluster.nodes[leader_index].metrics().await;
    assert_eq!(metric(&page, urp), Some(0.0), "{page}");
    let expected = first_segment(&cluster.nodes[leader_index], "replicated");
    let stored = |value: &str| expected.windows(value.len()).any(|w| w == value.as_bytes());
    assert!(stored("one-back") && stored("all-three-again"));
    assert!(
        !stored("refused") && !stored("elsewhere"),
        "a write refused with NOT_ENOUGH_REPLICAS was stored"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    for &i in &followers {
        while first_segment(&cluster.nodes[i], "replicated") != expected {
            assert!(
                Instant::now() < deadline,
                "node {} did not catch up:\n{}",
                cluster.nodes[i].port,
                cluster.nodes[i].log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The leader and leader epoch of `topic`-0 as the first live node of
/// `cluster` (skipping `down`) sees them.
async fn leader_of(cluster: &TestCluster, topic: &str, down: Option<usize>) -> (i32, i32) {
    for (i, node) in cluster.nodes.iter().enumerate() {
        if Some(i) == down {
            continue;
        }
        let response = metadata(node).await;
        if let Some(p) = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
            .and_then(|t| t.partitions.iter().find(|p| p.partition_index == 0))
        {
            return (p.leader_id.0, p.leader_epoch);
        }
    }
    (-1, -1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_acks_all_producer_loses_and_duplicates_nothing_across_leader_sigkills() {
    const ROUNDS: usize = 20;
    let mut cluster = TestCluster::start_with(
        3,
        &[
            "--broker-session-timeout-ms",
            "1500",
            "--replica-lag-time-max-ms",
            "1500",
        ],
    );
    for node in &cluster.nodes {
        wait_for_brokers(node, 3).await;
    }
    assert_eq!(
        create_with_factor(&cluster.nodes[0], "failover", 3).await,
        (0, 3)
    );
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .set("linger.ms", "2")
        .create()
        .unwrap();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut next = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // A window of sends in flight, acknowledged in order.
                let sends: Vec<_> = (next..next + 20)
                    .map(|i| {
                        let value = i.to_string();
                        let producer = &producer;
                        async move {
                            producer
                                .send(
                                    FutureRecord::<(), _>::to("failover")
                                        .partition(0)
                                        .payload(&value),
                                    Duration::from_secs(60),
                                )
                                .await
                                .map(|_| i)
                        }
                    })
                    .collect();
                for i in futures::future::join_all(sends).await.into_iter().flatten() {
                    acked.lock().unwrap().push(i);
                }
                next += 20;
            }
        })
    };
    let mut unavailable = Vec::new();
    for round in 0..ROUNDS {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (leader, epoch) = leader_of(&cluster, "failover", None).await;
        assert!(leader > 0, "round {round}: no leader");
        let index = (leader - 1) as usize;
        let killed_at = Instant::now();
        cluster.nodes[index].kill();
        // Another in-sync replica takes over.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (now, now_epoch) = leader_of(&cluster, "failover", Some(index)).await;
            if now > 0 && now != leader && now_epoch > epoch {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no new leader after {leader}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        unavailable.push(killed_at.elapsed());
        cluster.nodes[index].restart();
        // It catches up and is in sync again before the next round.
        let survivor = (index + 1) % 3;
        wait_for_isr(&cluster.nodes[survivor], "failover", &[1, 2, 3]).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(90), writer)
        .await
        .expect("the writer finishes")
        .unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "records were acknowledged: {}",
        acked.len()
    );

    let (leader, _) = leader_of(&cluster, "failover", None).await;
    let reader = &cluster.nodes[(leader - 1) as usize];
    let expected_max = *acked.iter().max().unwrap();
    let consumed = reader.consume(
        "failover",
        1,
        expected_max as usize + 1,
        Duration::from_secs(60),
    );
    let mut seen = std::collections::HashSet::new();
    let mut last_offset = -1;
    let mut last_value: Option<u64> = None;
    for m in &consumed {
        assert!(m.offset() > last_offset, "offsets strictly increase");
        last_offset = m.offset();
        let value: u64 = crate::harness::text(m).parse().unwrap();
        assert!(seen.insert(value), "{value} is stored twice");
        if let Some(previous) = last_value {
            assert!(value > previous, "{value} after {previous}: out of order");
        }
        last_value = Some(value);
    }
    for i in &acked {
        assert!(seen.contains(i), "acknowledged record {i} is lost");
    }
    let worst = unavailable.iter().max().unwrap();
    eprintln!(
        "{ROUNDS} leader kills: {} records acknowledged, leader back after {:?} at worst",
        acked.len(),
        worst
    );
}

/// CreateTopics with `partitions` partitions of `factor` replicas each,
/// asserting success.
async fn create_replicated(node: &TestBroker, name: &str, partitions: i32, factor: i16) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::CreateTopicsRequest;
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(StrBytes::from_string(name.to_string()));
    topic.num_partitions = partitions;
    topic.replication_factor = factor;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![topic];
    request.timeout_ms = 10_000;
    let mut client = node.client().await;
    let response = client.send(&request).await.unwrap();
    assert_eq!(response.topics[0].error_code, 0, "creating {name}");
}

/// The leader of `topic`-0 once every node of `cluster` names the same one
/// (polled every 10 ms, so the caller acts right after the last node
/// applied the creation).
async fn leader_everywhere(cluster: &TestCluster, topic: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen = Vec::new();
        for node in &cluster.nodes {
            let response = metadata(node).await;
            let leader = response
                .topics
                .iter()
                .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
                .and_then(|t| t.partitions.iter().find(|p| p.partition_index == 0))
                .map_or(-1, |p| p.leader_id.0);
            seen.push(leader);
        }
        if seen[0] > 0 && seen.iter().all(|&l| l == seen[0]) {
            return seen[0];
        }
        assert!(Instant::now() < deadline, "{topic}: leaders {seen:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_take_up_a_new_partition_at_once_and_its_first_acks_all_write_is_answered_quickly(
) {
    let cluster = TestCluster::start(3);
    for node in &cluster.nodes {
        wait_for_brokers(node, 3).await;
    }
    // Every node follows partitions of every other one: each follower has
    // a fetch waiting at each leader (up to its max wait) when the next
    // topics are created.
    create_replicated(&cluster.nodes[0], "busy", 3, 3).await;
    leader_everywhere(&cluster, "busy").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut slowest = Duration::ZERO;
    for i in 0..16 {
        let topic = format!("new-{i}");
        create_replicated(&cluster.nodes[0], &topic, 1, 3).await;
        let leader = leader_everywhere(&cluster, &topic).await;
        let leader = &cluster.nodes[(leader - 1) as usize];
        let started = Instant::now();
        assert_eq!(raw_produce(leader, &topic, -1).await, 0, "{topic}");
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("the slowest first acks=all write to a new topic took {slowest:?}");
    // A follower whose fetch in flight does not name the new partition
    // would leave it waiting for that fetch's max wait (500 ms); one that
    // asked before the leader knew the topic, and paused all its
    // partitions for that, for the pause (200 ms).
    assert!(
        slowest < Duration::from_millis(100),
        "the slowest first acks=all write took {slowest:?}"
    );
}

/// The leader of each partition of `topic` as the first live node (not in
/// `down`) answers, with that node's controller id.
async fn leaders_seen(
    cluster: &TestCluster,
    topic: &str,
    partitions: usize,
    down: &[usize],
) -> (Vec<i32>, i32) {
    let node = (0..cluster.nodes.len())
        .find(|i| !down.contains(i))
        .expect("a live node");
    let response = metadata(&cluster.nodes[node]).await;
    let mut leaders = vec![-1; partitions];
    if let Some(t) = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
    {
        for p in &t.partitions {
            if let Some(slot) = leaders.get_mut(p.partition_index as usize) {
                *slot = p.leader_id.0;
            }
        }
    }
    (leaders, response.controller_id.0)
}

/// How long after `since` node `victim` (id) is fenced as the live nodes
/// see it: no longer listed as a broker, and every partition of `topic`
/// led by a live broker (panics after 30 s).
async fn replaced_after(
    cluster: &TestCluster,
    topic: &str,
    partitions: usize,
    victim: i32,
    since: Instant,
) -> Duration {
    let down = [(victim - 1) as usize];
    loop {
        let (leaders, _) = leaders_seen(cluster, topic, partitions, &down).await;
        let listed = metadata(&cluster.nodes[if down[0] == 0 { 1 } else { 0 }])
            .await
            .brokers
            .iter()
            .any(|b| b.node_id.0 == victim);
        if !listed && leaders.iter().all(|&l| l > 0 && l != victim) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "{topic}: leaders {leaders:?} 30 s after node {victim} went down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With the default session timeout (9 s) a SIGKILLed broker is fenced
/// and its partitions get new leaders within seconds: once the dead
/// broker missed two heartbeats, the quorum's leader finds its listener
/// refusing connections and fences it. That holds for a broker that also
/// led the metadata quorum (a Raft election comes first). A broker that stops
/// answering without dying (SIGSTOP: its listener still accepts) keeps
/// its leaderships until its session times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_leader_is_replaced_within_seconds_with_the_default_session_timeout() {
    const PARTITIONS: usize = 3;
    let mut cluster = TestCluster::start(3);
    for node in &cluster.nodes {
        wait_for_brokers(node, 3).await;
    }
    create_replicated(&cluster.nodes[0], "crash", PARTITIONS as i32, 3).await;
    let settled = Instant::now() + Duration::from_secs(30);
    let (leaders, controller) = loop {
        let (leaders, controller) = leaders_seen(&cluster, "crash", PARTITIONS, &[]).await;
        if leaders.iter().all(|&l| l > 0) && controller > 0 {
            break (leaders, controller);
        }
        assert!(Instant::now() < settled, "leaders {leaders:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let bystander = *leaders
        .iter()
        .find(|&&l| l != controller)
        .expect("a partition led by a broker that does not lead the quorum");

    // A stalled broker is not a dead one.
    let stalled = &cluster.nodes[(bystander - 1) as usize];
    stalled.pause();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (during, _) =
        leaders_seen(&cluster, "crash", PARTITIONS, &[(bystander - 1) as usize]).await;
    stalled.resume();
    assert!(
        during.contains(&bystander),
        "node {bystander} lost its leaderships 4 s into a stall, before its 9 s session timed out: {during:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A killed broker, then the killed quorum leader.
    let mut taken = Vec::new();
    for round in 0..2 {
        let (leaders, controller) = leaders_seen(&cluster, "crash", PARTITIONS, &[]).await;
        assert!(controller > 0);
        let victim = if round == 0 {
            // A partition's leader that does not lead the quorum now.
            *leaders
                .iter()
                .find(|&&l| l > 0 && l != controller)
                .expect("a partition led by a broker that does not lead the quorum")
        } else {
            controller
        };
        eprintln!("killing node {victim} (the quorum's leader: {controller}), leaders {leaders:?}");
        let index = (victim - 1) as usize;
        cluster.nodes[index].kill();
        let killed_at = Instant::now();
        let took = replaced_after(&cluster, "crash", PARTITIONS, victim, killed_at).await;
        eprintln!("node {victim}'s partitions had new leaders {took:?} after its SIGKILL");
        taken.push(took);
        cluster.nodes[index].restart();
        for node in &cluster.nodes {
            wait_for_brokers(node, 3).await;
        }
    }
    // Without the probe each would take the 9 s session timeout, and the
    // quorum leader's kill an election more.
    for took in &taken {
        assert!(
            *took < Duration::from_secs(7),
            "new leaders after {taken:?}"
        );
    }
}

/// A fourth node started with `--process-roles broker` follows the quorum
/// without voting: it sees and makes topic changes (its proposals go to
/// the quorum's leader), holds replicas and leaderships and serves them,
/// rejoins after a SIGKILL, and never becomes the controller, not even
/// when the quorum's leader dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_only_node_follows_the_quorum_holds_replicas_and_never_votes() {
    const PARTITIONS: usize = 4;
    let mut cluster = TestCluster::start(3);
    cluster.add_broker_only(&[]);
    // Made through the broker-only node; leaders spread over four brokers.
    create_replicated(&cluster.nodes[3], "four", PARTITIONS as i32, 2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let controller = loop {
        let (leaders, controller) = leaders_seen(&cluster, "four", PARTITIONS, &[]).await;
        if leaders.iter().all(|&l| l > 0) {
            assert!(
                leaders.contains(&4),
                "the broker-only node leads a partition: {leaders:?}"
            );
            break controller;
        }
        assert!(Instant::now() < deadline, "leaders {leaders:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!((1..=3).contains(&controller), "controller {controller}");

    // Clients that know only the broker-only node write and read every
    // partition.
    let producer = cluster.nodes[3].producer(&[("acks", "all")]);
    for i in 0..40 {
        producer
            .send(
                FutureRecord::<(), str>::to("four")
                    .partition(i % PARTITIONS as i32)
                    .payload(&format!("r{i}")),
                Duration::from_secs(30),
            )
            .await
            .expect("acks=all write");
    }
    let read = cluster.nodes[3].consume("four", PARTITIONS as i32, 40, Duration::from_secs(30));
    assert_eq!(read.len(), 40);

    // The quorum's leader dies: another voter takes over, never node 4,
    // and node 4 follows the new leader's changes.
    let index = (controller - 1) as usize;
    cluster.nodes[index].kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, now) = leaders_seen(&cluster, "four", PARTITIONS, &[index]).await;
        assert_ne!(now, 4, "a broker-only node never leads the quorum");
        if now > 0 && now != controller {
            break;
        }
        assert!(Instant::now() < deadline, "no new controller");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    create_replicated(&cluster.nodes[3], "after", 1, 2).await;
    assert_eq!(
        leaders(&cluster.nodes[3], "after", 1)
            .await
            .map(|l| l.len()),
        Some(1)
    );
    cluster.nodes[index].restart();

    // A SIGKILLed broker-only node comes back as the same member and
    // catches up with what changed while it was down.
    cluster.nodes[3].kill();
    create_replicated(&cluster.nodes[0], "meanwhile", 2, 2).await;
    cluster.nodes[3].restart();
    wait_for_brokers(&cluster.nodes[3], 4).await;
    assert!(leaders(&cluster.nodes[3], "meanwhile", 2).await.is_some());
    assert!(!cluster.nodes[3].log().contains("panicked"));
    let read = cluster.nodes[3].consume("four", PARTITIONS as i32, 40, Duration::from_secs(30));
    assert_eq!(read.len(), 40, "after the restarts");
}
