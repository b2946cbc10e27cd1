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
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::harness::{create_topic, TestBroker, TestCluster};

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

async fn metadata(node: &TestBroker) -> MetadataResponse {
    let mut client = node.client().await;
    let mut request = MetadataRequest::default();
    // All topics.
    request.topics = None;
    client.send(&request).await.expect("Metadata")
}

/// Waits until `node` lists `n` brokers.
async fn wait_for_brokers(node: &TestBroker, n: usize) {
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
    let replicas = metadata(&cluster.nodes[0])
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
