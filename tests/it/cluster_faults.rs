//! Faults a 3-node cluster survives without losing an acknowledged record:
//! a leader cut off from its peers by a network partition, a leader that
//! dies holding records no follower has (its log diverges from the next
//! leader's), and a rolling restart under a steady producer.
//!
//! The nodes are real `runnel serve` processes (`TestCluster`). Faults are
//! signals (SIGKILL, SIGSTOP, SIGTERM) and, for network partitions, the
//! harness's `FaultProxy` on every link between two nodes
//! (`TestCluster::start_linked`). Logs are compared batch by batch as the
//! segment files hold them.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::cluster::{metadata, wait_for_brokers};
use crate::harness::{
    create_replicated_topic, latest_offset, list_offset, record_batch, segment_bases,
    stored_batches, text, StoredBatch, TestBroker, TestCluster, PLAIN,
};

/// Fence a silent broker and drop a silent follower from the ISR after
/// 1.5 s (defaults: 9 s and 30 s), so failovers happen within a test.
const FAST_FAILOVER: [&str; 4] = [
    "--broker-session-timeout-ms",
    "1500",
    "--replica-lag-time-max-ms",
    "1500",
];

/// One partition as a node's Metadata answer describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionView {
    leader: i32,
    leader_epoch: i32,
    /// Sorted.
    isr: Vec<i32>,
}

async fn partition_view(node: &TestBroker, topic: &str, partition: i32) -> Option<PartitionView> {
    let response = metadata(node).await;
    let p = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))?
        .partitions
        .iter()
        .find(|p| p.partition_index == partition)?;
    let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
    isr.sort();
    Some(PartitionView {
        leader: p.leader_id.0,
        leader_epoch: p.leader_epoch,
        isr,
    })
}

/// Waits until `node` lists every one of `partitions` partitions of
/// `topic` with a leader and `isr` as its ISR; returns them.
async fn wait_for_isr(
    node: &TestBroker,
    topic: &str,
    partitions: i32,
    isr: &[i32],
    timeout: Duration,
) -> Vec<PartitionView> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut views = Vec::new();
        for p in 0..partitions {
            views.push(partition_view(node, topic, p).await);
        }
        if views
            .iter()
            .all(|v| v.as_ref().is_some_and(|v| v.leader > 0 && v.isr == isr))
        {
            return views.into_iter().flatten().collect();
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: ISR {isr:?} not reached within {timeout:?}: {views:?}\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a node of `asked` names a leader of `topic`-`partition`
/// other than `old.leader`, in a later epoch; returns what it names and
/// how long after `since` (the fault) that was.
async fn wait_for_new_leader(
    cluster: &TestCluster,
    asked: &[usize],
    topic: &str,
    partition: i32,
    old: &PartitionView,
    since: Instant,
) -> (PartitionView, Duration) {
    let timeout = Duration::from_secs(30);
    let started = Instant::now();
    loop {
        for &i in asked {
            if let Some(view) = partition_view(&cluster.nodes[i], topic, partition).await {
                if view.leader > 0
                    && view.leader != old.leader
                    && view.leader_epoch > old.leader_epoch
                {
                    return (view, since.elapsed());
                }
            }
        }
        assert!(
            started.elapsed() < timeout,
            "{topic}-{partition}: no new leader after {} within {timeout:?}",
            old.leader
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The cluster's node with id `id`.
fn node(cluster: &TestCluster, id: i32) -> &TestBroker {
    &cluster.nodes[(id - 1) as usize]
}

/// One Produce of `values` as one batch to `topic`-`partition`, sent to
/// `node` itself (its real port, not the address it advertises): the
/// error code answered, or the client's error.
async fn produce_directly(
    node: &TestBroker,
    topic: &str,
    partition: i32,
    values: &[String],
    acks: i16,
    timeout_ms: i32,
) -> Result<i16, String> {
    let mut data = PartitionProduceData::default();
    data.index = partition;
    data.records = Some(record_batch(PLAIN, false, values));
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_data = vec![data];
    let mut request = ProduceRequest::default();
    request.acks = acks;
    request.timeout_ms = timeout_ms;
    request.topic_data = vec![t];
    let mut client = node.client().await;
    client.set_timeout(Duration::from_millis(timeout_ms as u64) + Duration::from_secs(10));
    let response: ProduceResponse = client.send(&request).await.map_err(|e| e.to_string())?;
    Ok(response.responses[0].partition_responses[0].error_code)
}

fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "1");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().expect("create producer")
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    value: &str,
) -> Result<i64, String> {
    producer
        .send(
            FutureRecord::<(), _>::to(topic)
                .partition(partition)
                .payload(value),
            Duration::from_secs(60),
        )
        .await
        .map(|delivery| delivery.offset)
        .map_err(|(e, _)| e.to_string())
}

/// Sends `values` one after the other, each acknowledged before the next.
async fn send_all(producer: &FutureProducer, topic: &str, values: &[String]) {
    for value in values {
        send(producer, topic, 0, value)
            .await
            .unwrap_or_else(|e| panic!("acks=all produce of {value}: {e}"));
    }
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn holds(batches: &[StoredBatch], needle: &str) -> bool {
    batches.iter().any(|b| {
        b.bytes
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    })
}

/// The batches of `node`'s log below `high_watermark`, if they cover
/// exactly the offsets `[0, high_watermark)`.
fn committed_batches(
    node: &TestBroker,
    topic: &str,
    partition: i32,
    high_watermark: i64,
) -> Option<Vec<StoredBatch>> {
    let below: Vec<StoredBatch> = stored_batches(node, topic, partition)
        .into_iter()
        .filter(|b| b.base_offset < high_watermark)
        .collect();
    let contiguous = below
        .windows(2)
        .all(|w| w[1].base_offset == w[0].last_offset + 1);
    let covers = below.first().map(|b| b.base_offset) == Some(0)
        && below.last().map(|b| b.last_offset + 1) == Some(high_watermark);
    (contiguous && covers).then_some(below)
}

/// Waits until every node of `cluster` holds the same batches, byte for
/// byte, for offsets `[0, high_watermark)`; returns them.
async fn wait_for_identical_logs(
    cluster: &TestCluster,
    topic: &str,
    partition: i32,
    high_watermark: i64,
) -> Vec<StoredBatch> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs: Vec<Option<Vec<StoredBatch>>> = cluster
            .nodes
            .iter()
            .map(|n| committed_batches(n, topic, partition, high_watermark))
            .collect();
        if logs[0].is_some() && logs.iter().all(|l| l == &logs[0]) {
            return logs[0].clone().unwrap();
        }
        if Instant::now() >= deadline {
            let ends: Vec<Option<i64>> = cluster
                .nodes
                .iter()
                .map(|n| {
                    stored_batches(n, topic, partition)
                        .last()
                        .map(|b| b.last_offset + 1)
                })
                .collect();
            panic!(
                "{topic}-{partition}: the nodes' logs differ below the high watermark \
                 {high_watermark} (log ends {ends:?}, complete below it: {:?})",
                logs.iter().map(Option::is_some).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node leading `topic`-`partition` now and its high watermark, asked
/// of that node. Leadership may move at any time once every replica is in
/// sync (back to the preferred replica), so a refusal asks again.
async fn leader_high_watermark(cluster: &TestCluster, topic: &str, partition: i32) -> (i32, i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for n in &cluster.nodes {
            let Some(view) = partition_view(n, topic, partition).await else {
                continue;
            };
            if view.leader <= 0 {
                continue;
            }
            let leader = node(cluster, view.leader);
            if let Ok(high_watermark) = list_offset(leader, topic, partition, -1).await {
                return (view.leader, high_watermark);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{topic}-{partition}: no leader answered ListOffsets"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every record value of `topic`-0 read from the beginning up to its
/// leader's high watermark (offsets run without gaps: no compaction, no
/// transactions), with offsets checked to increase.
async fn read_back(cluster: &TestCluster, topic: &str, acknowledged: usize) -> Vec<String> {
    // A leader elected since the last write (the preferred replica taking
    // its leadership back, for one) may answer a high watermark below
    // what the old leader acknowledged until its followers fetch again,
    // as in Kafka: wait until it covers every acknowledged record.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (leader, high_watermark) = loop {
        let (leader, high_watermark) = leader_high_watermark(cluster, topic, 0).await;
        if high_watermark >= acknowledged as i64 || Instant::now() > deadline {
            break (leader, high_watermark);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let consumed =
        node(cluster, leader).consume(topic, 1, high_watermark as usize, Duration::from_secs(30));
    assert_eq!(
        consumed.len() as i64,
        high_watermark,
        "read up to the high watermark"
    );
    assert!(
        consumed.windows(2).all(|w| w[0].offset() < w[1].offset()),
        "offsets increase"
    );
    consumed.iter().map(text).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_cannot_acknowledge_acks_all_and_rejoins_without_losing_anything() {
    const TOPIC: &str = "isolated";
    let cluster = TestCluster::start_linked(3, &FAST_FAILOVER);
    for n in &cluster.nodes {
        wait_for_brokers(n, 3).await;
    }
    create_replicated_topic(
        &cluster.nodes[0],
        TOPIC,
        1,
        3,
        &[("min.insync.replicas", "2")],
    )
    .await;
    let old = wait_for_isr(
        &cluster.nodes[0],
        TOPIC,
        1,
        &[1, 2, 3],
        Duration::from_secs(30),
    )
    .await
    .remove(0);
    let isolated = (old.leader - 1) as usize;
    let others: Vec<usize> = (0..3).filter(|&i| i != isolated).collect();
    let bootstrap_of = |indices: &[usize]| {
        indices
            .iter()
            .map(|&i| cluster.nodes[i].addr())
            .collect::<Vec<_>>()
            .join(",")
    };

    let mut acknowledged = values("before", 40);
    send_all(&producer(&cluster.bootstrap(), &[]), TOPIC, &acknowledged).await;

    cluster.isolate(isolated);
    let isolated_at = Instant::now();
    // Sent to the old leader itself: it appends the batch, but no follower
    // can fetch it and the ISR cannot shrink without the quorum, so the
    // write is never acknowledged. Meanwhile the two others fence it and
    // elect one of them.
    let stranded = values("unacknowledged", 3);
    let (answer, (new, took)) = tokio::join!(
        produce_directly(&cluster.nodes[isolated], TOPIC, 0, &stranded, -1, 5000),
        wait_for_new_leader(&cluster, &others, TOPIC, 0, &old, isolated_at)
    );
    eprintln!(
        "leader {} isolated: {} leads in epoch {} after {took:?}",
        old.leader, new.leader, new.leader_epoch
    );
    assert!(
        answer != Ok(0),
        "the isolated leader acknowledged an acks=all write: {answer:?}"
    );
    eprintln!("acks=all at the isolated leader answered {answer:?}");
    assert!(
        holds(
            &stored_batches(&cluster.nodes[isolated], TOPIC, 0),
            "unacknowledged-0"
        ),
        "the isolated leader appended the unacknowledged batch (the tail it must drop later)"
    );
    assert!(others.contains(&((new.leader - 1) as usize)));
    let during = values("during", 40);
    send_all(&producer(&bootstrap_of(&others), &[]), TOPIC, &during).await;
    acknowledged.extend(during);
    // Still cut off, the old leader acknowledges nothing.
    let again = produce_directly(
        &cluster.nodes[isolated],
        TOPIC,
        0,
        &values("late", 1),
        -1,
        1000,
    )
    .await;
    assert!(again != Ok(0), "{again:?}");

    cluster.heal(isolated);
    // It learns it was replaced, drops its tail, catches up and is in sync
    // again.
    wait_for_isr(
        node(&cluster, new.leader),
        TOPIC,
        1,
        &[1, 2, 3],
        Duration::from_secs(60),
    )
    .await;
    let after = values("after", 20);
    send_all(&producer(&cluster.bootstrap(), &[]), TOPIC, &after).await;
    acknowledged.extend(after);

    let (_, high_watermark) = leader_high_watermark(&cluster, TOPIC, 0).await;
    let log = wait_for_identical_logs(&cluster, TOPIC, 0, high_watermark).await;
    for n in &cluster.nodes {
        let batches = stored_batches(n, TOPIC, 0);
        assert!(
            !holds(&batches, "unacknowledged") && !holds(&batches, "late-0"),
            "node {} still holds the unacknowledged tail",
            n.port
        );
    }
    assert!(
        log.iter().any(|b| b.leader_epoch == new.leader_epoch),
        "the new leader's batches carry its epoch"
    );

    let mut read = read_back(&cluster, TOPIC, acknowledged.len()).await;
    let mut expected = acknowledged.clone();
    read.sort();
    expected.sort();
    assert_eq!(
        read, expected,
        "every acknowledged record exactly once, nothing else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_was_down_truncates_its_divergent_tail_by_leader_epoch() {
    const TOPIC: &str = "divergent";
    let mut cluster = TestCluster::start_linked(3, &FAST_FAILOVER);
    for n in &cluster.nodes {
        wait_for_brokers(n, 3).await;
    }
    create_replicated_topic(
        &cluster.nodes[0],
        TOPIC,
        1,
        3,
        &[("min.insync.replicas", "1")],
    )
    .await;
    let old = wait_for_isr(
        &cluster.nodes[0],
        TOPIC,
        1,
        &[1, 2, 3],
        Duration::from_secs(30),
    )
    .await
    .remove(0);
    let old_leader = (old.leader - 1) as usize;
    let followers: Vec<usize> = (0..3).filter(|&i| i != old_leader).collect();

    let committed = values("committed", 30);
    send_all(&producer(&cluster.bootstrap(), &[]), TOPIC, &committed).await;
    let diverges_at = committed.len() as i64;
    wait_for_identical_logs(&cluster, TOPIC, 0, diverges_at).await;

    // The followers lose their fetch connections (reset: no answer on its
    // way reaches them) and stop (SIGSTOP: the same incarnations come
    // back later, still in the ISR). Alone, the leader has no quorum to
    // shrink the ISR, so what it appends now with acks=1 is in no
    // follower's log and stays above its high watermark: an uncommitted
    // tail of its epoch.
    cluster.cut_replication_from(old_leader);
    for &f in &followers {
        cluster.nodes[f].pause();
    }
    for i in 0..3 {
        let tail = vec![format!("uncommitted-{i}-a"), format!("uncommitted-{i}-b")];
        assert_eq!(
            produce_directly(&cluster.nodes[old_leader], TOPIC, 0, &tail, 1, 5000).await,
            Ok(0),
            "acks=1 needs the leader only"
        );
    }
    assert_eq!(
        latest_offset(&cluster.nodes[old_leader], TOPIC, 0).await,
        diverges_at,
        "the tail is not committed"
    );
    let old_tail_end = diverges_at + 6;
    assert_eq!(
        stored_batches(&cluster.nodes[old_leader], TOPIC, 0)
            .last()
            .map(|b| b.last_offset + 1),
        Some(old_tail_end)
    );

    // The leader dies with it; the followers come back and one of them
    // leads, and writes other records at the same offsets.
    cluster.nodes[old_leader].kill();
    let killed_at = Instant::now();
    cluster.heal(old_leader);
    for &f in &followers {
        cluster.nodes[f].resume();
    }
    let (new, took) = wait_for_new_leader(&cluster, &followers, TOPIC, 0, &old, killed_at).await;
    eprintln!(
        "leader {} killed: {} leads in epoch {} after {took:?}",
        old.leader, new.leader, new.leader_epoch
    );
    let mut survivors: Vec<i32> = followers.iter().map(|&f| f as i32 + 1).collect();
    survivors.sort();
    let settled = wait_for_isr(
        node(&cluster, new.leader),
        TOPIC,
        1,
        &survivors,
        Duration::from_secs(30),
    )
    .await
    .remove(0);
    let leader_index = (settled.leader - 1) as usize;
    let leader = &cluster.nodes[leader_index];
    for i in 0..5 {
        let replacement = vec![format!("new-leader-{i}-a"), format!("new-leader-{i}-b")];
        assert_eq!(
            produce_directly(leader, TOPIC, 0, &replacement, -1, 10_000).await,
            Ok(0)
        );
    }
    let high_watermark = diverges_at + 10;
    assert_eq!(latest_offset(leader, TOPIC, 0).await, high_watermark);

    // The old leader returns as a follower. Its high watermark after the
    // restart is its log end (it covers the whole divergent tail), so a
    // cut by high watermark would keep that tail; the leader's diverging
    // epoch makes it cut exactly where its epoch ended in the new leader's
    // log.
    cluster.nodes[old_leader].restart();
    let leader = &cluster.nodes[leader_index];
    wait_for_isr(leader, TOPIC, 1, &[1, 2, 3], Duration::from_secs(60)).await;
    let log = wait_for_identical_logs(&cluster, TOPIC, 0, high_watermark).await;
    let rejoined = stored_batches(&cluster.nodes[old_leader], TOPIC, 0);
    assert!(
        !holds(&rejoined, "uncommitted"),
        "the divergent tail is gone"
    );
    assert!(
        holds(&rejoined, "new-leader-4-b"),
        "the new leader's records are there"
    );
    assert!(
        log.iter()
            .filter(|b| b.base_offset >= diverges_at)
            .all(|b| b.leader_epoch > old.leader_epoch),
        "from the divergence on, every batch is of a later epoch"
    );
    assert_eq!(
        segment_bases(&cluster.nodes[old_leader], TOPIC, 0),
        vec![0, diverges_at],
        "the log was cut at offset {diverges_at}, where the old epoch ends in the new \
         leader's log, and went on in a new segment there (nothing below was dropped)"
    );

    let mut expected = committed.clone();
    expected
        .extend((0..5).flat_map(|i| [format!("new-leader-{i}-a"), format!("new-leader-{i}-b")]));
    let read = read_back(&cluster, TOPIC, expected.len()).await;
    assert_eq!(read, expected);
}

/// Per partition, the sequence number of each acknowledged record and when
/// its acknowledgement arrived.
type AckLog = Mutex<BTreeMap<i32, Vec<(u64, Instant)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_never_leaves_a_partition_without_a_leader_for_long() {
    const TOPIC: &str = "rolling";
    const PARTITIONS: i32 = 6;
    /// The longest a partition may refuse writes: below the default
    /// broker session timeout (9 s), so a stop the controller notices only
    /// by the missing heartbeats fails (the measured numbers are printed).
    const BOUND: Duration = Duration::from_secs(5);
    // Default session and lag timeouts: what a rolling restart costs as
    // shipped.
    let mut cluster = TestCluster::start(3);
    for n in &cluster.nodes {
        wait_for_brokers(n, 3).await;
    }
    create_replicated_topic(&cluster.nodes[0], TOPIC, PARTITIONS, 3, &[]).await;
    wait_for_isr(
        &cluster.nodes[0],
        TOPIC,
        PARTITIONS,
        &[1, 2, 3],
        Duration::from_secs(30),
    )
    .await;

    // One writer per partition, one record in flight at a time: the time
    // between two acknowledgements is how long the partition could not
    // take a write.
    let producer = Arc::new(producer(
        &cluster.bootstrap(),
        &[
            ("enable.idempotence", "true"),
            ("message.timeout.ms", "120000"),
        ],
    ));
    let acks: Arc<AckLog> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..PARTITIONS)
        .map(|p| {
            let (producer, acks, failures, stop) = (
                producer.clone(),
                acks.clone(),
                failures.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let value = format!("{p}-{seq}");
                    match send(&producer, TOPIC, p, &value).await {
                        Ok(_) => acks
                            .lock()
                            .unwrap()
                            .entry(p)
                            .or_default()
                            .push((seq, Instant::now())),
                        Err(e) => failures.lock().unwrap().push(format!("{value}: {e}")),
                    }
                    seq += 1;
                }
            })
        })
        .collect();
    let acked_per_partition = |acks: &AckLog| {
        let acks = acks.lock().unwrap();
        (0..PARTITIONS)
            .map(|p| acks.get(&p).map_or(0, Vec::len))
            .collect::<Vec<_>>()
    };
    let wait_for_progress = |more: usize| {
        let acks = acks.clone();
        async move {
            let from = acked_per_partition(&acks);
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let now = acked_per_partition(&acks);
                if now.iter().zip(&from).all(|(n, f)| *n >= f + more) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "writes stalled: {from:?} -> {now:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for_progress(20).await;

    for i in 0..cluster.nodes.len() {
        let stopped_at = Instant::now();
        assert_eq!(
            cluster.nodes[i].stop(),
            Some(0),
            "node {} stops cleanly",
            i + 1
        );
        // However long the node stays down (an upgrade, a slow disk),
        // its partitions take writes again without it.
        wait_for_progress(5).await;
        eprintln!(
            "node {} stopped: every partition took writes again after {:?}",
            i + 1,
            stopped_at.elapsed()
        );
        cluster.nodes[i].restart();
        let other = (i + 1) % cluster.nodes.len();
        wait_for_isr(
            &cluster.nodes[other],
            TOPIC,
            PARTITIONS,
            &[1, 2, 3],
            Duration::from_secs(60),
        )
        .await;
        eprintln!(
            "node {} restarted and back in every ISR after {:?}",
            i + 1,
            stopped_at.elapsed()
        );
        wait_for_progress(20).await;
    }

    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(150), writer)
            .await
            .expect("the writer finishes")
            .unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "writes failed: {failures:?}");
    let acks = acks.lock().unwrap().clone();
    let mut worst = Duration::ZERO;
    for (p, acked) in &acks {
        let gap = acked
            .windows(2)
            .map(|w| w[1].1 - w[0].1)
            .max()
            .unwrap_or_default();
        eprintln!(
            "partition {p}: {} records acknowledged, longest gap between two {gap:?}",
            acked.len()
        );
        worst = worst.max(gap);
    }
    eprintln!("rolling restart of 3 nodes: longest time a partition took no write {worst:?}");
    assert!(worst < BOUND, "a partition took no write for {worst:?}");

    // Nothing acknowledged is lost or doubled, and each partition keeps
    // the order it was written in.
    let mut stored = 0;
    for p in 0..PARTITIONS {
        let view = partition_view(&cluster.nodes[0], TOPIC, p).await.unwrap();
        stored += latest_offset(node(&cluster, view.leader), TOPIC, p).await as usize;
    }
    let consumed = cluster.nodes[0].consume(TOPIC, PARTITIONS, stored, Duration::from_secs(60));
    assert_eq!(consumed.len(), stored, "read up to the high watermarks");
    let mut seen: HashSet<String> = HashSet::new();
    let mut last: BTreeMap<i32, (i64, u64)> = BTreeMap::new();
    for m in &consumed {
        let value = text(m);
        assert!(seen.insert(value.clone()), "{value} is stored twice");
        let seq: u64 = value.split_once('-').unwrap().1.parse().unwrap();
        if let Some(&(offset, previous)) = last.get(&m.partition()) {
            assert!(
                m.offset() > offset && seq > previous,
                "{value} out of order"
            );
        }
        last.insert(m.partition(), (m.offset(), seq));
    }
    for (p, acked) in &acks {
        for (seq, _) in acked {
            assert!(
                seen.contains(&format!("{p}-{seq}")),
                "acknowledged record {p}-{seq} is lost"
            );
        }
    }
    let acknowledged: usize = acks.values().map(Vec::len).sum();
    assert_eq!(
        seen.len(),
        acknowledged,
        "nothing but what was acknowledged"
    );
}
