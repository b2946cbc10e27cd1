//! Moving leaders and replicas on a 3-node cluster: ElectLeaders
//! (preferred and unclean), automatic preferred-leader balancing, and
//! partition reassignment (AlterPartitionReassignments /
//! ListPartitionReassignments) through the raw protocol and the CLI
//! (`runnel cluster rebalance`, `runnel topic reassign`).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, CreateTopicsRequest, ElectLeadersRequest,
    ListPartitionReassignmentsRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::harness::{TestBroker, TestCluster};

/// Kafka's error codes these tests expect.
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
const ELECTION_NOT_NEEDED: i16 = 84;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;

/// Longest wait for anything the cluster does in these tests.
const WAIT: Duration = Duration::from_secs(60);

/// Polls `check` until it holds, failing with `what` after `WAIT`.
async fn wait_until<F, Fut>(what: impl Fn() -> String, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?}: {}",
            what()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `find` until it finds something, failing with `what` after `WAIT`.
async fn wait_for<T, F, Fut>(what: impl Fn() -> String, mut find: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = find().await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?}: {}",
            what()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metadata(node: &TestBroker) -> MetadataResponse {
    let mut client = node.client().await;
    let mut request = MetadataRequest::default();
    request.topics = None;
    request.allow_auto_topic_creation = false;
    client.send(&request).await.expect("Metadata")
}

/// A partition as one node's metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionView {
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
}

async fn partition(node: &TestBroker, topic: &str, p: i32) -> Option<PartitionView> {
    let response = metadata(node).await;
    let t = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))?;
    let p = t.partitions.iter().find(|x| x.partition_index == p)?;
    let ids = |l: &[BrokerId]| l.iter().map(|b| b.0).collect::<Vec<_>>();
    Some(PartitionView {
        leader: p.leader_id.0,
        leader_epoch: p.leader_epoch,
        replicas: ids(&p.replica_nodes),
        isr: ids(&p.isr_nodes),
    })
}

async fn wait_for_brokers(cluster: &TestCluster) {
    for node in &cluster.nodes {
        wait_until(
            || format!("node {} lists 3 brokers:\n{}", node.port, node.log()),
            || async { metadata(node).await.brokers.len() == 3 },
        )
        .await;
    }
}

/// Creates a topic of `partitions` partitions and `factor` replicas
/// through `node`; returns once `node` lists it.
async fn create(node: &TestBroker, name: &str, partitions: i32, factor: i16) {
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(StrBytes::from_string(name.to_string()));
    topic.num_partitions = partitions;
    topic.replication_factor = factor;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![topic];
    request.timeout_ms = 10_000;
    let response = node.client().await.send(&request).await.unwrap();
    let result = &response.topics[0];
    assert_eq!(
        result.error_code, 0,
        "create {name}: {:?}",
        result.error_message
    );
}

/// ElectLeaders v2: per (topic, partition), the error code.
async fn elect(
    node: &TestBroker,
    election_type: i8,
    partitions: Option<&[(&str, i32)]>,
) -> BTreeMap<(String, i32), i16> {
    let mut request = ElectLeadersRequest::default();
    request.election_type = election_type;
    request.timeout_ms = 30_000;
    request.topic_partitions = partitions.map(|list| {
        let mut topics: Vec<TopicPartitions> = Vec::new();
        for (topic, p) in list {
            let name = TopicName(StrBytes::from_string(topic.to_string()));
            match topics.iter_mut().find(|t| t.topic == name) {
                Some(t) => t.partitions.push(*p),
                None => {
                    let mut t = TopicPartitions::default();
                    t.topic = name;
                    t.partitions = vec![*p];
                    topics.push(t);
                }
            }
        }
        topics
    });
    let mut client = node.client().await;
    let response = client
        .send_version(&request, 2)
        .await
        .expect("ElectLeaders");
    assert_eq!(response.error_code, 0);
    response
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result
                .iter()
                .map(move |p| ((t.topic.0.to_string(), p.partition_id), p.error_code))
        })
        .collect()
}

/// AlterPartitionReassignments v1: per (topic, partition), the error code.
async fn reassign(
    node: &TestBroker,
    moves: &[(&str, i32, Option<&[i32]>)],
    allow_replication_factor_change: bool,
) -> BTreeMap<(String, i32), i16> {
    let mut request = AlterPartitionReassignmentsRequest::default();
    request.allow_replication_factor_change = allow_replication_factor_change;
    for (topic, p, replicas) in moves {
        let mut rp = ReassignablePartition::default();
        rp.partition_index = *p;
        rp.replicas = replicas.map(|r| r.iter().copied().map(BrokerId).collect());
        let mut t = ReassignableTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.to_string()));
        t.partitions = vec![rp];
        request.topics.push(t);
    }
    let mut client = node.client().await;
    let response = client
        .send_version(&request, 1)
        .await
        .expect("AlterPartitionReassignments");
    assert_eq!(response.error_code, 0);
    response
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| ((t.name.0.to_string(), p.partition_index), p.error_code))
        })
        .collect()
}

/// ListPartitionReassignments of every topic: (topic, partition) →
/// (replicas, adding, removing).
async fn reassignments(
    node: &TestBroker,
) -> BTreeMap<(String, i32), (Vec<i32>, Vec<i32>, Vec<i32>)> {
    let mut request = ListPartitionReassignmentsRequest::default();
    request.topics = None;
    let mut client = node.client().await;
    let response = client
        .send(&request)
        .await
        .expect("ListPartitionReassignments");
    assert_eq!(response.error_code, 0);
    let ids = |l: &[BrokerId]| l.iter().map(|b| b.0).collect::<Vec<_>>();
    response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    (t.name.0.to_string(), p.partition_index),
                    (
                        ids(&p.replicas),
                        ids(&p.adding_replicas),
                        ids(&p.removing_replicas),
                    ),
                )
            })
        })
        .collect()
}

fn key(topic: &str, p: i32) -> (String, i32) {
    (topic.to_string(), p)
}

/// The first segment file of partition 0 of `topic` on `node`.
fn segment(node: &TestBroker, topic: &str) -> Vec<u8> {
    std::fs::read(
        node.dir
            .join(format!("{topic}-0"))
            .join("00000000000000000000.log"),
    )
    .unwrap_or_default()
}

/// Whether `node` holds no directory of partition 0 of `topic` any more
/// (neither the partition nor a copy being removed).
fn holds_nothing_of(node: &TestBroker, topic: &str) -> bool {
    let prefix = format!("{topic}-0");
    std::fs::read_dir(&node.dir)
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().starts_with(&prefix))
}

fn producer(cluster: &TestCluster) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

async fn produce(producer: &FutureProducer, topic: &str, values: impl Iterator<Item = String>) {
    let sends: Vec<_> = values
        .map(|value| async move {
            producer
                .send(
                    FutureRecord::<(), _>::to(topic)
                        .partition(0)
                        .payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("produce {value} to {topic}: {e}"))
        })
        .collect();
    futures::future::join_all(sends).await;
}

fn node(cluster: &TestCluster, id: i32) -> &TestBroker {
    &cluster.nodes[(id - 1) as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_leaders_moves_leadership_back_to_a_restarted_preferred_replica_which_the_old_leader_then_follows(
) {
    let mut cluster = TestCluster::start_with(
        3,
        &[
            "--broker-session-timeout-ms",
            "1500",
            "--replica-lag-time-max-ms",
            "1500",
            "--auto-leader-rebalance-enable",
            "false",
        ],
    );
    wait_for_brokers(&cluster).await;
    let admin = &cluster.nodes[0];
    assert!(
        admin
            .client()
            .await
            .version_for::<ElectLeadersRequest>()
            .is_ok(),
        "ElectLeaders is advertised in ApiVersions"
    );
    create(admin, "elect", 1, 3).await;
    let start = partition(admin, "elect", 0).await.unwrap();
    let preferred = start.replicas[0];
    assert_eq!(
        start.leader, preferred,
        "placement makes the first replica lead"
    );
    assert_eq!(
        elect(admin, 0, Some(&[("elect", 0)])).await[&key("elect", 0)],
        ELECTION_NOT_NEEDED
    );
    let writes = producer(&cluster);
    produce(&writes, "elect", (0..50).map(|i| format!("before-{i}"))).await;

    // The preferred leader dies: another in-sync replica takes over, and
    // while it is down it cannot be elected.
    cluster.nodes[(preferred - 1) as usize].kill();
    let survivor = cluster
        .nodes
        .iter()
        .position(|n| n.port != node(&cluster, preferred).port)
        .unwrap();
    let asker = &cluster.nodes[survivor];
    let moved = wait_for(
        || {
            format!(
                "a new leader of elect-0 after {preferred} died:\n{}",
                asker.log()
            )
        },
        || async {
            partition(asker, "elect", 0)
                .await
                .filter(|p| p.leader > 0 && p.leader != preferred)
        },
    )
    .await;
    assert_eq!(
        elect(asker, 0, Some(&[("elect", 0)])).await[&key("elect", 0)],
        PREFERRED_LEADER_NOT_AVAILABLE
    );
    produce(&writes, "elect", (0..50).map(|i| format!("while-down-{i}"))).await;

    // Back, it catches up and joins the ISR; automatic balancing is off,
    // so only the election moves leadership back.
    cluster.nodes[(preferred - 1) as usize].restart();
    let asker = &cluster.nodes[survivor];
    wait_until(
        || format!("{preferred} rejoins the ISR of elect-0"),
        || async {
            partition(asker, "elect", 0)
                .await
                .is_some_and(|p| p.isr.contains(&preferred))
        },
    )
    .await;
    assert_eq!(
        partition(asker, "elect", 0).await.unwrap().leader,
        moved.leader,
        "nothing moved leadership by itself"
    );
    assert_eq!(
        elect(asker, 0, Some(&[("elect", 0)])).await[&key("elect", 0)],
        0,
        "the preferred election succeeds"
    );
    let after = partition(asker, "elect", 0).await.unwrap();
    assert_eq!(after.leader, preferred);
    assert!(
        after.leader_epoch > moved.leader_epoch,
        "the leader epoch is bumped: {after:?} after {moved:?}"
    );
    assert_eq!(
        elect(asker, 0, Some(&[("elect", 0)])).await[&key("elect", 0)],
        ELECTION_NOT_NEEDED
    );
    // Every partition: the answer leaves out those already balanced.
    assert!(!elect(asker, 0, None).await.contains_key(&key("elect", 0)));
    // Unclean elections are for partitions without a leader.
    assert_eq!(
        elect(asker, 1, Some(&[("elect", 0)])).await[&key("elect", 0)],
        ELECTION_NOT_NEEDED
    );
    let unknown = elect(asker, 0, Some(&[("elect", 5), ("no-such-topic", 0)])).await;
    assert_eq!(unknown[&key("elect", 5)], UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(
        unknown[&key("no-such-topic", 0)],
        UNKNOWN_TOPIC_OR_PARTITION
    );

    // The old leader is a follower of the new one: acks=all writes need
    // it, and it holds the new leader's bytes.
    produce(&writes, "elect", (0..50).map(|i| format!("after-{i}"))).await;
    let old_leader = node(&cluster, moved.leader);
    let new_leader = node(&cluster, preferred);
    wait_until(
        || {
            format!(
                "broker {} holds the log of the new leader {preferred}:\n{}",
                moved.leader,
                old_leader.log()
            )
        },
        || async {
            let expected = segment(new_leader, "elect");
            !expected.is_empty() && segment(old_leader, "elect") == expected
        },
    )
    .await;
    assert!(
        partition(asker, "elect", 0)
            .await
            .unwrap()
            .isr
            .contains(&moved.leader),
        "the old leader stays in sync"
    );
    let consumed = new_leader.consume("elect", 1, 150, Duration::from_secs(30));
    assert_eq!(consumed.len(), 150, "every acknowledged record is there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_broker_leads_its_preferred_partitions_again_without_waiting_for_the_periodic_check(
) {
    // The default check interval (300 s) is far beyond this test: only the
    // check that follows a broker's return can move leadership back.
    let mut cluster = TestCluster::start_with(
        3,
        &[
            "--broker-session-timeout-ms",
            "1500",
            "--replica-lag-time-max-ms",
            "1500",
        ],
    );
    wait_for_brokers(&cluster).await;
    create(&cluster.nodes[0], "auto", 1, 3).await;
    let start = partition(&cluster.nodes[0], "auto", 0).await.unwrap();
    let preferred = start.replicas[0];
    produce(&producer(&cluster), "auto", (0..20).map(|i| i.to_string())).await;
    cluster.nodes[(preferred - 1) as usize].kill();
    let other = (preferred % 3) as usize;
    wait_until(
        || "leadership moves away from the dead preferred leader".into(),
        || async {
            partition(&cluster.nodes[other], "auto", 0)
                .await
                .is_some_and(|p| p.leader > 0 && p.leader != preferred)
        },
    )
    .await;
    cluster.nodes[(preferred - 1) as usize].restart();
    let restarted_at = Instant::now();
    let asker = &cluster.nodes[other];
    wait_until(
        || {
            format!(
                "broker {preferred} leads auto-0 again:\n{}",
                cluster.nodes[other].log()
            )
        },
        || async {
            partition(asker, "auto", 0)
                .await
                .is_some_and(|p| p.leader == preferred && p.isr.contains(&preferred))
        },
    )
    .await;
    eprintln!(
        "leadership back {:?} after the restart",
        restarted_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_check_hands_leadership_to_a_new_preferred_replica_and_the_cli_reorders_and_rebalances(
) {
    let cluster = TestCluster::start_with(
        3,
        &[
            "--leader-imbalance-check-interval-seconds",
            "1",
            "--leader-imbalance-per-broker-percentage",
            "0",
        ],
    );
    wait_for_brokers(&cluster).await;
    let admin = &cluster.nodes[0];
    create(admin, "reorder", 1, 3).await;
    let start = partition(admin, "reorder", 0).await.unwrap();
    // The CLI reorders the replicas: all in sync, so it completes at once
    // and the leader stays; the new first replica is preferred now.
    let mut order = start.replicas.clone();
    order.rotate_left(1);
    let replicas = order
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let out = admin.cli(
        &[
            "topic",
            "reassign",
            "reorder",
            "--partition",
            "0",
            "--replicas",
            &replicas,
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("reorder-0: moving to replicas {replicas}")),
        "{stdout}"
    );
    let reordered = partition(admin, "reorder", 0).await.unwrap();
    assert_eq!(reordered.replicas, order);
    // Within a few checks, the new preferred replica leads.
    wait_until(
        || format!("{} leads reorder-0:\n{}", order[0], admin.log()),
        || async {
            partition(admin, "reorder", 0)
                .await
                .is_some_and(|p| p.leader == order[0])
        },
    )
    .await;
    // Nothing is left for `runnel cluster rebalance` to do.
    let out = admin.cli(&["cluster", "rebalance", "--topic", "reorder"], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("every partition is led by its preferred replica"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_rebalance_prints_the_leaders_it_moved() {
    let cluster = TestCluster::start_with(3, &["--auto-leader-rebalance-enable", "false"]);
    wait_for_brokers(&cluster).await;
    let admin = &cluster.nodes[0];
    create(admin, "cli-elect", 1, 3).await;
    let start = partition(admin, "cli-elect", 0).await.unwrap();
    let mut order = start.replicas.clone();
    order.reverse();
    assert_eq!(
        reassign(admin, &[("cli-elect", 0, Some(&order))], true).await[&key("cli-elect", 0)],
        0
    );
    assert_eq!(
        partition(admin, "cli-elect", 0).await.unwrap().leader,
        start.leader
    );
    let out = admin.cli(&["cluster", "rebalance", "--json"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let moved = report["moved"].as_array().unwrap();
    assert!(
        moved.iter().any(|m| m["topic"] == "cli-elect"
            && m["partition"] == 0
            && m["from"] == start.leader
            && m["to"] == order[0]),
        "{report}"
    );
    assert_eq!(
        partition(admin, "cli-elect", 0).await.unwrap().leader,
        order[0]
    );
    let out = admin.cli(&["cluster", "rebalance"], None);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("every partition is led by its preferred replica"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_single_replica_copies_its_records_byte_for_byte_and_deletes_the_old_copy() {
    let cluster = TestCluster::start(3);
    wait_for_brokers(&cluster).await;
    let admin = &cluster.nodes[0];
    create(admin, "moving", 1, 1).await;
    let from = partition(admin, "moving", 0).await.unwrap().leader;
    let to = from % 3 + 1;
    produce(
        &producer(&cluster),
        "moving",
        (0..500).map(|i| format!("record-{i}-{}", "x".repeat(i % 40))),
    )
    .await;
    let original = segment(node(&cluster, from), "moving");
    assert!(!original.is_empty());
    assert!(holds_nothing_of(node(&cluster, to), "moving"));

    assert_eq!(
        reassign(admin, &[("moving", 0, Some(&[to]))], true).await[&key("moving", 0)],
        0
    );
    wait_until(
        || format!("moving-0 is on {to} alone:\n{}", node(&cluster, to).log()),
        || async {
            partition(admin, "moving", 0)
                .await
                .is_some_and(|p| p.replicas == vec![to] && p.leader == to && p.isr == vec![to])
        },
    )
    .await;
    assert!(reassignments(admin).await.is_empty(), "the move is done");
    assert_eq!(
        segment(node(&cluster, to), "moving"),
        original,
        "the new replica holds the old one's bytes"
    );
    wait_until(
        || {
            format!(
                "broker {from} deletes its copy:\n{}",
                node(&cluster, from).log()
            )
        },
        || async { holds_nothing_of(node(&cluster, from), "moving") },
    )
    .await;

    let consumed = cluster.nodes[2].consume("moving", 1, 500, Duration::from_secs(30));
    let values: Vec<String> = consumed.iter().map(crate::harness::text).collect();
    let expected: Vec<String> = (0..500)
        .map(|i| format!("record-{i}-{}", "x".repeat(i % 40)))
        .collect();
    let mut sorted = values.clone();
    sorted.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(sorted, expected_sorted, "consumers read everything");
    assert!(consumed.windows(2).all(|w| w[0].offset() < w[1].offset()));
    produce(
        &producer(&cluster),
        "moving",
        std::iter::once("after".into()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expanding_two_replicas_to_three_adds_an_in_sync_copy_and_the_cli_waits_for_it() {
    let cluster = TestCluster::start_with(3, &["--auto-leader-rebalance-enable", "false"]);
    wait_for_brokers(&cluster).await;
    let admin = &cluster.nodes[0];
    create(admin, "grow", 1, 2).await;
    let start = partition(admin, "grow", 0).await.unwrap();
    let third = (1..=3).find(|b| !start.replicas.contains(b)).unwrap();
    produce(&producer(&cluster), "grow", (0..200).map(|i| i.to_string())).await;
    let mut target = start.replicas.clone();
    target.push(third);
    let list = target
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let out = admin.cli(
        &[
            "topic",
            "reassign",
            "grow",
            "--partition",
            "0",
            "--replicas",
            &list,
            "--wait",
            "--timeout-ms",
            "60000",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let grown = partition(admin, "grow", 0).await.unwrap();
    assert_eq!(grown.replicas, target);
    assert_eq!(grown.leader, start.leader, "the leader did not change");
    assert!(grown.isr.contains(&third), "{grown:?}");
    let expected = segment(node(&cluster, start.leader), "grow");
    wait_until(
        || format!("broker {third} holds the leader's log"),
        || async { segment(node(&cluster, third), "grow") == expected },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_a_broker_that_is_down_is_listed_until_cancelled_a_replica_moved_away_while_down_is_deleted_on_return_and_bad_requests_get_kafkas_errors(
) {
    let mut cluster = TestCluster::start_with(
        3,
        &[
            "--broker-session-timeout-ms",
            "1500",
            "--auto-leader-rebalance-enable",
            "false",
        ],
    );
    wait_for_brokers(&cluster).await;
    let admin = &cluster.nodes[0];
    create(admin, "stuck", 1, 1).await;
    let holder = partition(admin, "stuck", 0).await.unwrap().leader;
    // A partition that lives on the broker about to go down.
    let down = (1..=3).find(|&b| b != holder && b != 1).unwrap();
    create(admin, "on-down", 1, 1).await;
    assert_eq!(
        reassign(admin, &[("on-down", 0, Some(&[down]))], true).await[&key("on-down", 0)],
        0
    );
    wait_until(
        || format!("on-down-0 moves to {down}"),
        || async {
            partition(admin, "on-down", 0)
                .await
                .is_some_and(|p| p.replicas == vec![down] && p.leader == down)
        },
    )
    .await;
    // A partition on every broker, with records on each.
    create(admin, "leaving", 1, 3).await;
    produce(
        &producer(&cluster),
        "leaving",
        (0..20).map(|i| i.to_string()),
    )
    .await;
    cluster.nodes[(down - 1) as usize].kill();
    let admin = &cluster.nodes[0];
    wait_until(
        || format!("on-down-0 has no leader once {down} is fenced"),
        || async {
            partition(admin, "on-down", 0)
                .await
                .is_some_and(|p| p.leader == -1)
        },
    )
    .await;
    // While it is down, its replica of leaving-0 is moved away: the others
    // are in sync, so the move completes at once.
    let staying: Vec<i32> = (1..=3).filter(|&b| b != down).collect();
    assert_eq!(
        reassign(admin, &[("leaving", 0, Some(&staying))], true).await[&key("leaving", 0)],
        0
    );
    assert_eq!(
        partition(admin, "leaving", 0).await.unwrap().replicas,
        staying
    );
    assert!(
        !holds_nothing_of(node(&cluster, down), "leaving"),
        "the down broker still has its copy"
    );

    // A move to the down broker starts, but cannot finish.
    assert_eq!(
        reassign(admin, &[("stuck", 0, Some(&[down, holder]))], true).await[&key("stuck", 0)],
        0
    );
    let listed = reassignments(admin).await;
    assert_eq!(
        listed.get(&key("stuck", 0)),
        Some(&(vec![down, holder], vec![down], vec![])),
        "{listed:?}"
    );
    let out = admin.cli(&["topic", "reassign", "--status", "--json"], None);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["reassignments"][0]["topic"], "stuck", "{status}");
    assert_eq!(
        status["reassignments"][0]["adding_replicas"],
        serde_json::json!([down])
    );
    // Its preferred leader (the target's first) is down: a preferred
    // election cannot help.
    assert_eq!(
        elect(admin, 0, Some(&[("stuck", 0)])).await[&key("stuck", 0)],
        PREFERRED_LEADER_NOT_AVAILABLE
    );

    // Cancelled, the partition is as it was; a second cancel has nothing
    // to cancel.
    let out = admin.cli(
        &["topic", "reassign", "stuck", "--partition", "0", "--cancel"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("stuck-0: move cancelled"));
    assert!(reassignments(admin).await.is_empty());
    let back = partition(admin, "stuck", 0).await.unwrap();
    assert_eq!((back.replicas, back.leader), (vec![holder], holder));
    assert_eq!(
        reassign(admin, &[("stuck", 0, None)], true).await[&key("stuck", 0)],
        NO_REASSIGNMENT_IN_PROGRESS
    );
    let out = admin.cli(
        &["topic", "reassign", "stuck", "--partition", "0", "--cancel"],
        None,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NoReassignmentInProgress"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Bad targets.
    let errors = reassign(
        admin,
        &[
            ("stuck", 0, Some(&[holder, holder])),
            ("on-down", 0, Some(&[holder, 9])),
            ("no-such-topic", 0, Some(&[holder])),
        ],
        true,
    )
    .await;
    assert_eq!(errors[&key("stuck", 0)], INVALID_REPLICA_ASSIGNMENT);
    assert_eq!(errors[&key("on-down", 0)], INVALID_REPLICA_ASSIGNMENT);
    assert_eq!(errors[&key("no-such-topic", 0)], UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(
        reassign(admin, &[("stuck", 7, Some(&[holder]))], true).await[&key("stuck", 7)],
        UNKNOWN_TOPIC_OR_PARTITION
    );
    let other = (1..=3).find(|&b| b != holder).unwrap();
    assert_eq!(
        reassign(admin, &[("stuck", 0, Some(&[holder, other]))], false).await[&key("stuck", 0)],
        INVALID_REPLICATION_FACTOR,
        "KIP-860: the replication factor may not change"
    );

    // A partition whose only replica is down: nobody can lead it.
    assert_eq!(
        elect(admin, 1, Some(&[("on-down", 0)])).await[&key("on-down", 0)],
        ELIGIBLE_LEADERS_NOT_AVAILABLE
    );
    assert_eq!(
        elect(admin, 0, Some(&[("on-down", 0)])).await[&key("on-down", 0)],
        PREFERRED_LEADER_NOT_AVAILABLE
    );
    let out = admin.cli(&["cluster", "rebalance"], None);
    assert!(!out.status.success(), "a partition could not be moved");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("PreferredLeaderNotAvailable"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The broker comes back: its partition is led again, and an
    // ElectLeaders v0 (no election type: preferred) finds nothing to do.
    cluster.nodes[(down - 1) as usize].restart();
    let admin = &cluster.nodes[0];
    wait_until(
        || format!("{down} leads on-down-0 again"),
        || async {
            partition(admin, "on-down", 0)
                .await
                .is_some_and(|p| p.leader == down)
        },
    )
    .await;
    // Back, it removes the copy it no longer holds.
    wait_until(
        || {
            format!(
                "broker {down} removes leaving-0:\n{}",
                node(&cluster, down).log()
            )
        },
        || async { holds_nothing_of(node(&cluster, down), "leaving") },
    )
    .await;
    let mut request = ElectLeadersRequest::default();
    let mut t = TopicPartitions::default();
    t.topic = TopicName(StrBytes::from_static_str("on-down"));
    t.partitions = vec![0];
    request.topic_partitions = Some(vec![t]);
    let response = admin
        .client()
        .await
        .send_version(&request, 0)
        .await
        .unwrap();
    assert_eq!(
        response.replica_election_results[0].partition_result[0].error_code,
        ELECTION_NOT_NEEDED
    );
}
