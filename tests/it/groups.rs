//! Consumer groups with real clients: partition assignment, rebalances on
//! join, leave and SIGKILL, committed offsets across a broker crash, and the
//! exact protocol rules (member ids, generations, static members, commit
//! metadata) with raw requests.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use runnel_core::client::Client;

use crate::harness::{create_topic, text, TestBroker, BIN};

/// Fast rebalances and short sessions, so the tests take seconds.
const GROUP_CONFIG: &str =
    "group_initial_rebalance_delay_ms: 200\ngroup_min_session_timeout_ms: 1000\n";

fn group_consumer(broker: &TestBroker, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "300")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .expect("create group consumer")
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

#[test]
fn three_members_of_one_group_split_six_partitions_without_overlap() {
    let broker = TestBroker::start_with_config(GROUP_CONFIG, &[]);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(create_topic(&broker, "split", 6, &[]));
    let consumers: Vec<BaseConsumer> = (0..3)
        .map(|_| group_consumer(&broker, "splitters"))
        .collect();
    for c in &consumers {
        c.subscribe(&["split"]).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let assignments = loop {
        for c in &consumers {
            let _ = c.poll(Duration::from_millis(50));
        }
        let sets: Vec<BTreeSet<i32>> = consumers
            .iter()
            .map(|c| {
                c.assignment()
                    .unwrap()
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect()
            })
            .collect();
        let total: usize = sets.iter().map(|s| s.len()).sum();
        if sets.iter().all(|s| !s.is_empty()) && total == 6 {
            break sets;
        }
        assert!(
            Instant::now() < deadline,
            "no stable 3-way assignment: {sets:?}"
        );
    };
    let union: BTreeSet<i32> = assignments.iter().flatten().copied().collect();
    assert_eq!(
        union,
        (0..6).collect(),
        "every partition is owned by exactly one member: {assignments:?}"
    );
    for a in &assignments {
        assert_eq!(a.len(), 2, "an even split: {assignments:?}");
    }
}

/// A group member polling in its own thread, committing every record
/// synchronously after recording it.
struct Worker {
    stop: Arc<AtomicBool>,
    assigned: Arc<Mutex<BTreeSet<i32>>>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn start(broker: &TestBroker, name: &str, seen: Arc<Mutex<Vec<(String, String)>>>) -> Worker {
        let consumer = group_consumer(broker, "workers");
        consumer.subscribe(&["work"]).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let assigned: Arc<Mutex<BTreeSet<i32>>> = Arc::default();
        let (stop2, assigned2, name) = (stop.clone(), assigned.clone(), name.to_string());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => {
                        seen.lock().unwrap().push((name.clone(), text(&m.detach())));
                        consumer
                            .commit_message(&m, CommitMode::Sync)
                            .expect("sync commit");
                    }
                    Some(Err(e)) => eprintln!("{name}: {e}"),
                    None => {}
                }
                let now: BTreeSet<i32> = consumer
                    .assignment()
                    .unwrap()
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                *assigned2.lock().unwrap() = now;
            }
            // Dropping the consumer leaves the group.
            drop(consumer);
        });
        Worker {
            stop,
            assigned,
            thread: Some(thread),
        }
    }

    fn assigned(&self) -> BTreeSet<i32> {
        self.assigned.lock().unwrap().clone()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn joins_leaves_and_a_killed_member_rebalance_and_every_record_is_consumed_once() {
    let broker = TestBroker::start_with_config(GROUP_CONFIG, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(create_topic(&broker, "work", 6, &[]));
    let producer = broker.producer(&[("linger.ms", "1")]);
    let mut next = 0usize;
    let mut produce = |n: usize| {
        for _ in 0..n {
            let value = format!("r{next:05}");
            rt.block_on(
                producer.send(
                    FutureRecord::<(), _>::to("work")
                        .partition((next % 6) as i32)
                        .payload(&value),
                    Duration::from_secs(10),
                ),
            )
            .expect("produce");
            next += 1;
        }
        next
    };
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let victim_out = broker.dir.with_file_name("victim.out");
    let unique_consumed = |seen: &Arc<Mutex<Vec<(String, String)>>>| -> HashSet<String> {
        let mut all: HashSet<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v.clone())
            .collect();
        if let Ok(text) = std::fs::read_to_string(&victim_out) {
            all.extend(text.lines().map(String::from));
        }
        all
    };

    let mut a = Worker::start(&broker, "a", seen.clone());
    let b = Worker::start(&broker, "b", seen.clone());
    wait_until(
        "a and b share the partitions",
        Duration::from_secs(20),
        || {
            a.assigned().len() + b.assigned().len() == 6
                && !a.assigned().is_empty()
                && !b.assigned().is_empty()
        },
    );
    let total = produce(300);
    wait_until("phase 1 consumed", Duration::from_secs(30), || {
        unique_consumed(&seen).len() >= total
    });

    // A member joins: the partitions are spread over three.
    let c = Worker::start(&broker, "c", seen.clone());
    wait_until("c gets partitions", Duration::from_secs(20), || {
        !c.assigned().is_empty()
            && a.assigned().len() + b.assigned().len() + c.assigned().len() == 6
    });
    let total = produce(300);
    wait_until("phase 2 consumed", Duration::from_secs(30), || {
        unique_consumed(&seen).len() >= total
    });

    // A member leaves: the other two take over its partitions.
    a.stop();
    wait_until("b and c own everything", Duration::from_secs(20), || {
        b.assigned().len() + c.assigned().len() == 6
    });
    let total = produce(300);
    wait_until("phase 3 consumed", Duration::from_secs(30), || {
        unique_consumed(&seen).len() >= total
    });

    // A member in another process joins, works, and is SIGKILLed.
    let mut victim = Command::new(BIN)
        .args([
            "consume",
            "work",
            "--group",
            "workers",
            "--from-beginning",
            "-X",
            "session.timeout.ms=2000",
        ])
        .args([
            "-X",
            "heartbeat.interval.ms=300",
            "--bootstrap",
            &broker.addr(),
        ])
        .stdout(std::fs::File::create(&victim_out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "the victim takes partitions",
        Duration::from_secs(20),
        || b.assigned().len() + c.assigned().len() < 6,
    );
    let total = produce(300);
    wait_until("phase 4 consumed", Duration::from_secs(30), || {
        unique_consumed(&seen).len() >= total
    });
    let victim_lines = std::fs::read_to_string(&victim_out)
        .unwrap()
        .lines()
        .count();
    assert!(victim_lines > 0, "the victim consumed its share");
    victim.kill().unwrap();
    victim.wait().unwrap();
    // Its session expires; b and c take everything back.
    wait_until(
        "b and c own everything again",
        Duration::from_secs(20),
        || b.assigned().len() + c.assigned().len() == 6,
    );
    let total = produce(300);
    wait_until("phase 5 consumed", Duration::from_secs(30), || {
        unique_consumed(&seen).len() >= total
    });
    drop((b, c));

    // Every record was consumed; only the killed member may have seen a
    // record that another member saw again (its crash window).
    let consumed = unique_consumed(&seen);
    for i in 0..total {
        assert!(
            consumed.contains(&format!("r{i:05}")),
            "record r{i:05} was never consumed"
        );
    }
    let mut counts: HashMap<String, Vec<String>> = HashMap::new();
    for (who, v) in seen.lock().unwrap().iter() {
        counts.entry(v.clone()).or_default().push(who.clone());
    }
    for line in std::fs::read_to_string(&victim_out).unwrap().lines() {
        counts
            .entry(line.to_string())
            .or_default()
            .push("victim".into());
    }
    let duplicates: Vec<_> = counts.iter().filter(|(_, who)| who.len() > 1).collect();
    for (value, who) in &duplicates {
        assert!(
            who.contains(&"victim".to_string()),
            "{value} consumed twice outside the crash window: {who:?}"
        );
    }
    // The victim's crash window is the background commit's interval
    // (librdkafka's auto-commit, 5 s): what it printed since its last
    // commit may be consumed again by the others, nothing else.
    eprintln!(
        "{} records consumed again after the SIGKILLed member's last commit",
        duplicates.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_resumes_from_its_committed_offsets_after_a_broker_sigkill() {
    let mut broker = TestBroker::start_with_config(GROUP_CONFIG, &[]);
    create_topic(&broker, "resume", 3, &[]).await;
    let producer = broker.producer(&[]);
    for i in 0..300 {
        let v = format!("old-{i}");
        producer
            .send(
                FutureRecord::<(), _>::to("resume")
                    .partition(i % 3)
                    .payload(&v),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let read = |broker: &TestBroker, expect: usize, settle: Duration| -> Vec<String> {
        let consumer = group_consumer(broker, "resumers");
        consumer.subscribe(&["resume"]).unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut quiet_since = Instant::now();
        loop {
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    got.push(text(&m.detach()));
                    consumer.commit_message(&m, CommitMode::Sync).unwrap();
                    quiet_since = Instant::now();
                }
                Some(Err(e)) => panic!("{e}"),
                None => {}
            }
            if got.len() >= expect && quiet_since.elapsed() > settle {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "got only {} of {expect}",
                got.len()
            );
        }
        got
    };
    let first = tokio::task::block_in_place(|| read(&broker, 300, Duration::from_millis(500)));
    assert_eq!(first.len(), 300);

    broker.kill();
    broker.restart();
    for i in 0..100 {
        let v = format!("new-{i}");
        producer
            .send(
                FutureRecord::<(), _>::to("resume")
                    .partition(i % 3)
                    .payload(&v),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
    let second = tokio::task::block_in_place(|| read(&broker, 100, Duration::from_secs(2)));
    assert_eq!(
        second.len(),
        100,
        "only the new records, nothing from before the crash: {:?}",
        &second[..5.min(second.len())]
    );
    assert!(second.iter().all(|v| v.starts_with("new-")));

    // The CLI shows the committed offsets and zero lag, and deletes the
    // group once it has no members.
    let out = Command::new(BIN)
        .args([
            "group",
            "describe",
            "resumers",
            "--bootstrap",
            &broker.addr(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in 0..3 {
        // 300 old records split 100/100/100, 100 new ones 34/33/33.
        let end = if p == 0 { "134" } else { "133" };
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("resume") && l.split_whitespace().nth(1) == Some(&p.to_string())
            })
            .unwrap_or_else(|| panic!("no line for partition {p}: {text}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((cols[2], cols[3], cols[4]), (end, end, "0"), "{line}");
    }
    let out = Command::new(BIN)
        .args(["group", "list", "--bootstrap", &broker.addr()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("resumers\tEmpty"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = Command::new(BIN)
        .args(["group", "delete", "resumers", "--bootstrap", &broker.addr()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new(BIN)
        .args(["group", "list", "--bootstrap", &broker.addr()])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("resumers"));
}

fn protocol() -> JoinGroupRequestProtocol {
    let mut p = JoinGroupRequestProtocol::default();
    p.name = s("range");
    p.metadata = Bytes::from_static(b"subscription");
    p
}

fn join_request(group: &str, member_id: &str, instance: Option<&str>) -> JoinGroupRequest {
    let mut r = JoinGroupRequest::default();
    r.group_id = GroupId(s(group));
    r.session_timeout_ms = 10_000;
    r.rebalance_timeout_ms = 10_000;
    r.member_id = s(member_id);
    r.group_instance_id = instance.map(s);
    r.protocol_type = s("consumer");
    r.protocols = vec![protocol()];
    r
}

async fn sync(
    client: &mut Client,
    group: &str,
    generation: i32,
    member: &str,
    assignment: &[u8],
) -> SyncGroupResponse {
    let mut a = SyncGroupRequestAssignment::default();
    a.member_id = s(member);
    a.assignment = Bytes::copy_from_slice(assignment);
    let mut r = SyncGroupRequest::default();
    r.group_id = GroupId(s(group));
    r.generation_id = generation;
    r.member_id = s(member);
    r.assignments = if assignment.is_empty() {
        vec![]
    } else {
        vec![a]
    };
    client.send(&r).await.unwrap()
}

async fn heartbeat(
    client: &mut Client,
    group: &str,
    generation: i32,
    member: &str,
    instance: Option<&str>,
) -> i16 {
    let mut r = HeartbeatRequest::default();
    r.group_id = GroupId(s(group));
    r.generation_id = generation;
    r.member_id = s(member);
    r.group_instance_id = instance.map(s);
    client.send(&r).await.unwrap().error_code
}

async fn commit(
    client: &mut Client,
    group: &str,
    generation: i32,
    member: &str,
    offset: i64,
    metadata: &str,
) -> i16 {
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = offset;
    p.committed_metadata = Some(s(metadata));
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(s("proto"));
    t.partitions = vec![p];
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(s(group));
    r.generation_id_or_member_epoch = generation;
    r.member_id = s(member);
    r.topics = vec![t];
    client.send(&r).await.unwrap().topics[0].partitions[0].error_code
}

async fn fetch_offset(client: &mut Client, group: &str) -> (i64, String) {
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(s("proto"));
    t.partition_indexes = vec![0];
    let mut r = OffsetFetchRequest::default();
    r.group_id = GroupId(s(group));
    r.topics = Some(vec![t]);
    let response = client.send_version(&r, 7).await.unwrap();
    let p = &response.topics[0].partitions[0];
    (
        p.committed_offset,
        p.metadata
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_ids_generations_static_members_and_commit_metadata_follow_kafka() {
    let broker = TestBroker::start_with_config(GROUP_CONFIG, &[]);
    create_topic(&broker, "proto", 1, &[]).await;
    let mut client = broker.client().await;

    // KIP-394: a new member is first given its id.
    let first = client
        .send_version(&join_request("g", "", None), 5)
        .await
        .unwrap();
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    let member = first.member_id.to_string();
    assert!(!member.is_empty());
    let joined = client
        .send_version(&join_request("g", &member, None), 5)
        .await
        .unwrap();
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    assert_eq!(joined.leader.as_str(), member, "the only member leads");
    assert_eq!(joined.members.len(), 1);
    let synced = sync(&mut client, "g", 1, &member, b"assignment-1").await;
    assert_eq!(
        (synced.error_code, &synced.assignment[..]),
        (0, &b"assignment-1"[..])
    );

    assert_eq!(heartbeat(&mut client, "g", 1, &member, None).await, 0);
    assert_eq!(
        heartbeat(&mut client, "g", 0, &member, None).await,
        ResponseError::IllegalGeneration.code()
    );
    assert_eq!(
        heartbeat(&mut client, "g", 1, "stranger", None).await,
        ResponseError::UnknownMemberId.code()
    );

    // Commits: metadata round-trips; stale generations are refused.
    assert_eq!(
        commit(&mut client, "g", 1, &member, 42, "checkpoint-a").await,
        0
    );
    assert_eq!(
        commit(&mut client, "g", 0, &member, 99, "stale").await,
        ResponseError::IllegalGeneration.code()
    );
    assert_eq!(
        commit(&mut client, "g", -1, "", 99, "simple").await,
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        fetch_offset(&mut client, "g").await,
        (42, "checkpoint-a".to_string())
    );

    // Static membership: a restarted instance takes over without a
    // rebalance and fences its previous incarnation.
    let joined = client
        .send_version(&join_request("static", "", Some("host-1")), 5)
        .await
        .unwrap();
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    let old_id = joined.member_id.to_string();
    assert_eq!(
        sync(&mut client, "static", 1, &old_id, b"mine")
            .await
            .error_code,
        0
    );
    let again = client
        .send_version(&join_request("static", "", Some("host-1")), 5)
        .await
        .unwrap();
    assert_eq!(
        (again.error_code, again.generation_id),
        (0, 1),
        "same generation: no rebalance"
    );
    let new_id = again.member_id.to_string();
    assert_ne!(new_id, old_id);
    assert_eq!(
        heartbeat(&mut client, "static", 1, &old_id, Some("host-1")).await,
        ResponseError::FencedInstanceId.code()
    );
    assert_eq!(
        heartbeat(&mut client, "static", 1, &new_id, Some("host-1")).await,
        0
    );
    let resynced = sync(&mut client, "static", 1, &new_id, b"").await;
    assert_eq!(
        &resynced.assignment[..],
        b"mine",
        "the old assignment is kept"
    );

    // Leaving empties the group; a simple commit is then allowed.
    let mut leave = LeaveGroupRequest::default();
    leave.group_id = GroupId(s("g"));
    leave.member_id = s(&member);
    assert_eq!(client.send_version(&leave, 2).await.unwrap().error_code, 0);
    assert_eq!(commit(&mut client, "g", -1, "", 7, "manual").await, 0);
    assert_eq!(
        fetch_offset(&mut client, "g").await,
        (7, "manual".to_string())
    );

    // A group with members cannot be deleted; an empty one is deleted with
    // its offsets; an unknown one is reported.
    let mut del = DeleteGroupsRequest::default();
    del.groups_names = vec![GroupId(s("static")), GroupId(s("g")), GroupId(s("nope"))];
    let codes: Vec<i16> = client
        .send(&del)
        .await
        .unwrap()
        .results
        .iter()
        .map(|r| r.error_code)
        .collect();
    assert_eq!(
        codes,
        vec![
            ResponseError::NonEmptyGroup.code(),
            0,
            ResponseError::GroupIdNotFound.code()
        ]
    );
    assert_eq!(fetch_offset(&mut client, "g").await.0, -1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_of_idle_groups_expire_after_the_retention() {
    let broker = TestBroker::start_with_config(
        "offsets_retention_minutes: 0\noffsets_retention_check_interval_ms: 200\n",
        &[],
    );
    create_topic(&broker, "proto", 1, &[]).await;
    let mut client = broker.client().await;
    assert_eq!(commit(&mut client, "idle", -1, "", 5, "").await, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fetch_offset(&mut client, "idle").await.0 != -1 {
        assert!(Instant::now() < deadline, "offsets never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_delete_refuses_subscribed_topics_and_reset_offsets_moves_an_idle_group() {
    let broker = TestBroker::start_with_config(GROUP_CONFIG, &[]);
    create_topic(&broker, "proto", 1, &[]).await;
    create_topic(&broker, "other", 1, &[]).await;
    let producer = broker.producer(&[]);
    for i in 0..20 {
        let v = format!("v{i}");
        producer
            .send(
                FutureRecord::<(), _>::to("proto").payload(&v),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let mut client = broker.client().await;
    // An active consumer subscribed to "proto" that has committed.
    let consumer = group_consumer(&broker, "active");
    consumer.subscribe(&["proto"]).unwrap();
    let consumer = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = 0;
        while seen < 20 {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                seen += 1;
                consumer.commit_message(&m, CommitMode::Sync).unwrap();
            }
            assert!(Instant::now() < deadline);
        }
        consumer
    });
    assert_eq!(
        commit(&mut client, "active", -1, "", 3, "").await,
        ResponseError::UnknownMemberId.code()
    );
    let offset_delete = |topic: &str| {
        let mut p = offset_delete_request::OffsetDeleteRequestPartition::default();
        p.partition_index = 0;
        let mut t = offset_delete_request::OffsetDeleteRequestTopic::default();
        t.name = TopicName(s(topic));
        t.partitions = vec![p];
        let mut r = OffsetDeleteRequest::default();
        r.group_id = GroupId(s("active"));
        r.topics = vec![t];
        r
    };
    let refused = client.send(&offset_delete("proto")).await.unwrap();
    assert_eq!(
        refused.topics[0].partitions[0].error_code,
        ResponseError::GroupSubscribedToTopic.code()
    );
    let allowed = client.send(&offset_delete("other")).await.unwrap();
    assert_eq!(
        (
            allowed.error_code,
            allowed.topics[0].partitions[0].error_code
        ),
        (0, 0)
    );
    let mut unknown = offset_delete("proto");
    unknown.group_id = GroupId(s("no-such-group"));
    assert_eq!(
        client.send(&unknown).await.unwrap().error_code,
        ResponseError::GroupIdNotFound.code()
    );

    // reset-offsets: refused while members are active, applied once idle.
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .args(["--bootstrap", &broker.addr()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = run(&[
        "group",
        "reset-offsets",
        "active",
        "--topic",
        "proto",
        "--to-offset",
        "5",
        "--execute",
    ]);
    assert!(!ok && err.contains("active members"), "{err}");
    drop(consumer);
    // Wait until the consumer's LeaveGroup emptied the group.
    let deadline = Instant::now() + Duration::from_secs(20);
    while commit(&mut client, "active", -1, "", 20, "").await != 0 {
        assert!(Instant::now() < deadline, "group never became empty");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out, _) = run(&[
        "group",
        "reset-offsets",
        "active",
        "--topic",
        "proto",
        "--shift-by",
        "-5",
    ]);
    assert!(ok && out.contains("15"), "dry run prints the plan: {out}");
    assert_eq!(
        fetch_offset(&mut client, "active").await.0,
        20,
        "a dry run changes nothing"
    );
    let (ok, _, err) = run(&[
        "group",
        "reset-offsets",
        "active",
        "--topic",
        "proto",
        "--shift-by",
        "-5",
        "--execute",
    ]);
    assert!(ok, "{err}");
    assert_eq!(fetch_offset(&mut client, "active").await.0, 15);
    let (ok, _, _) = run(&[
        "group",
        "reset-offsets",
        "active",
        "--topic",
        "proto",
        "--to-earliest",
        "--execute",
    ]);
    assert!(ok);
    assert_eq!(fetch_offset(&mut client, "active").await.0, 0);
}

/// KIP-394's MEMBER_ID_REQUIRED step hands out a member id the group then
/// waits for. librdkafka abandons that id when its subscription changes
/// mid-join; Kafka lets the pending id expire after its session timeout and
/// completes the join phase at once, instead of waiting out the rebalance
/// timeout of the members that did rejoin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_pending_member_id_expires_and_the_rejoin_completes_in_seconds() {
    let broker = TestBroker::start_with_config(GROUP_CONFIG, &[]);
    let mut leader = broker.client().await;
    let mut request = join_request("pending", "", None);
    request.rebalance_timeout_ms = 120_000;
    let first = leader.send_version(&request, 5).await.unwrap();
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    let member = first.member_id.to_string();
    request.member_id = s(&member);
    let joined = leader.send_version(&request, 5).await.unwrap();
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    assert_eq!(
        sync(&mut leader, "pending", 1, &member, b"a")
            .await
            .error_code,
        0
    );

    // Another client is handed an id (2 s session) and never uses it.
    let mut other = broker.client().await;
    let mut abandoned = join_request("pending", "", None);
    abandoned.session_timeout_ms = 2_000;
    let handed = other.send_version(&abandoned, 5).await.unwrap();
    assert_eq!(handed.error_code, ResponseError::MemberIdRequired.code());
    drop(other);

    // The leader's subscription changes: it rejoins and a join phase starts
    // that waits for the pending id. Its rebalance timeout is two minutes.
    let started = Instant::now();
    request.protocols[0].metadata = Bytes::from_static(b"new subscription");
    let rejoined = tokio::time::timeout(Duration::from_secs(20), leader.send_version(&request, 5))
        .await
        .expect("the join phase waited for the abandoned member id beyond its session timeout")
        .unwrap();
    let took = started.elapsed();
    assert_eq!((rejoined.error_code, rejoined.generation_id), (0, 2));
    assert_eq!(rejoined.members.len(), 1, "the abandoned id is no member");
    assert!(
        took >= Duration::from_millis(1_500) && took < Duration::from_secs(6),
        "the rejoin completes when the pending id's 2 s session ends, took {took:?}"
    );
    assert_eq!(
        sync(&mut leader, "pending", 2, &member, b"b")
            .await
            .error_code,
        0
    );

    // A pending id that leaves (LeaveGroup) is not waited for either.
    let mut other = broker.client().await;
    abandoned.session_timeout_ms = 60_000;
    let handed = other.send_version(&abandoned, 5).await.unwrap();
    assert_eq!(handed.error_code, ResponseError::MemberIdRequired.code());
    let mut leave = LeaveGroupRequest::default();
    leave.group_id = GroupId(s("pending"));
    leave.members = vec![{
        let mut m = leave_group_request::MemberIdentity::default();
        m.member_id = handed.member_id.clone();
        m
    }];
    let left = other.send_version(&leave, 3).await.unwrap();
    assert_eq!((left.error_code, left.members[0].error_code), (0, 0));
    let started = Instant::now();
    request.protocols[0].metadata = Bytes::from_static(b"third subscription");
    let rejoined = tokio::time::timeout(Duration::from_secs(20), leader.send_version(&request, 5))
        .await
        .expect("the join phase waited for a pending id that left")
        .unwrap();
    assert_eq!((rejoined.error_code, rejoined.generation_id), (0, 3));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
