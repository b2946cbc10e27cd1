//! `runnel cluster status` against a real 3-node cluster, and the
//! one-command development cluster `runnel serve --cluster-dev N`.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

use crate::harness::{free_port, TestBroker, TestCluster, BIN};

async fn metadata(node: &TestBroker) -> MetadataResponse {
    let mut client = node.client().await;
    let mut request = MetadataRequest::default();
    request.topics = None;
    client.send(&request).await.expect("Metadata")
}

/// Waits until `node` lists `brokers` brokers and `topic` with a leader on
/// each of its `partitions` partitions.
async fn wait_for(node: &TestBroker, brokers: usize, topic: &str, partitions: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = metadata(node).await;
        let led = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
            .is_some_and(|t| {
                t.partitions.len() == partitions && t.partitions.iter().all(|p| p.leader_id.0 >= 0)
            });
        if response.brokers.len() == brokers && led {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node does not list {brokers} brokers and {topic} led:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "cluster status --json prints JSON ({e}):\n{}\n{}",
            stdout(out),
            stderr(out)
        )
    })
}

/// The `topic` partitions of a `--json` status: (partition, leader,
/// replicas, isr).
fn partitions_of(status: &Value, topic: &str) -> Vec<(i64, i64, Vec<i64>, Vec<i64>)> {
    let ids = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    status["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == topic)
        .unwrap_or_else(|| panic!("status lists {topic}: {status}"))["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap(),
                p["leader"].as_i64().unwrap(),
                ids(&p["replicas"]),
                ids(&p["isr"]),
            )
        })
        .collect()
}

/// The same partitions as a Metadata response names them.
fn partitions_in_metadata(
    response: &MetadataResponse,
    topic: &str,
) -> Vec<(i64, i64, Vec<i64>, Vec<i64>)> {
    let t = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        .expect("metadata lists the topic");
    let ids = |l: &[kafka_protocol::messages::BrokerId]| l.iter().map(|b| b.0 as i64).collect();
    let mut out: Vec<_> = t
        .partitions
        .iter()
        .map(|p| {
            (
                p.partition_index as i64,
                p.leader_id.0 as i64,
                ids(&p.replica_nodes),
                ids(&p.isr_nodes),
            )
        })
        .collect();
    out.sort();
    out
}

/// (id, live, controller) of each broker of a `--json` status.
fn brokers_of(status: &Value) -> Vec<(i64, bool, bool)> {
    status["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_i64().unwrap(),
                b["live"].as_bool().unwrap(),
                b["controller"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_shows_every_broker_the_controller_and_each_partition_as_metadata_does() {
    let cluster = TestCluster::start(3);
    let node = &cluster.nodes[0];
    let created = node.cli(&["topic", "create", "orders", "-p", "3", "-r", "3"], None);
    assert!(created.status.success(), "{}", stderr(&created));
    wait_for(node, 3, "orders", 3).await;

    let out = node.cli(
        &[
            "cluster",
            "status",
            "--json",
            "--bootstrap",
            &cluster.bootstrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let status = json(&out);
    let response = metadata(node).await;
    let controller = response.controller_id.0 as i64;
    assert!((1..=3).contains(&controller), "a voter leads: {controller}");
    assert_eq!(status["controller_id"], controller);
    assert_eq!(
        status["cluster_id"].as_str(),
        response.cluster_id.as_deref(),
        "the cluster id"
    );
    assert_eq!(
        brokers_of(&status),
        (1..=3)
            .map(|id| (id, true, id == controller))
            .collect::<Vec<_>>(),
        "three live brokers, one of them the controller"
    );
    let orders = partitions_of(&status, "orders");
    assert_eq!(orders, partitions_in_metadata(&response, "orders"));
    assert!(
        orders.iter().all(|(_, _, replicas, _)| replicas.len() == 3),
        "replication factor 3: {orders:?}"
    );
    assert_eq!(status["summary"]["under_replicated_partitions"], 0);
    assert_eq!(status["summary"]["partitions_without_leader"], 0);

    // The table says the same, one row per partition.
    let out = node.cli(&["cluster", "status"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    for (partition, leader, replicas, isr) in &orders {
        let list = |l: &[i64]| {
            l.iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let row = table
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .take(2)
                    .eq(["orders", &partition.to_string()])
            })
            .unwrap_or_else(|| panic!("a row for orders {partition}:\n{table}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[2], leader.to_string(), "{row}");
        assert_eq!(cells[4], list(replicas), "{row}");
        assert_eq!(cells[5], list(isr), "{row}");
    }
    assert!(
        table.contains("3 brokers (3 live)")
            && table.contains("0 under-replicated, 0 without a leader"),
        "{table}"
    );

    // Nothing needs attention.
    let out = node.cli(&["cluster", "status", "--under-replicated"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("no partition to list"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_shown_not_live_and_status_exits_non_zero_with_one_line() {
    let mut cluster = TestCluster::start(3);
    let created = cluster.nodes[0].cli(&["topic", "create", "spread", "-p", "3", "-r", "3"], None);
    assert!(created.status.success(), "{}", stderr(&created));
    wait_for(&cluster.nodes[0], 3, "spread", 3).await;
    let out = cluster.nodes[0].cli(&["cluster", "health", "--format", "json"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["healthy"], true);
    let killed_addr = cluster.nodes[2].addr();
    cluster.nodes[2].kill();

    // `cluster health`: unhealthy, the broker named, a non-zero exit.
    let out = cluster.nodes[0].cli(&["cluster", "health", "--format", "json"], None);
    assert!(!out.status.success(), "a broker down is unhealthy");
    let health = json(&out);
    assert_eq!(health["healthy"], false, "{health}");
    assert_eq!(health["down_brokers"], serde_json::json!([3]), "{health}");
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));

    let out = cluster.nodes[0].cli(&["cluster", "status", "--json"], None);
    assert!(!out.status.success(), "a broker down fails the status");
    let live: Vec<(i64, bool)> = brokers_of(&json(&out))
        .into_iter()
        .map(|(id, live, _)| (id, live))
        .collect();
    assert_eq!(live, vec![(1, true), (2, true), (3, false)]);
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("broker 3") && err.contains(&killed_addr),
        "{err}"
    );

    // Bootstrapped on the killed node alone, nothing answers.
    let out = cluster.nodes[0].cli(&["cluster", "status", "--bootstrap", &killed_addr], None);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with(&format!("error: cannot reach a broker at {killed_addr}")),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
}

/// A port for node 1 of a development cluster of `n` nodes such that every
/// port it uses (base..base+n, base+100..base+100+n, the admin ports
/// base+552..base+552+n) is free now.
fn free_dev_cluster_base(n: u16) -> u16 {
    for _ in 0..100 {
        let base = free_port();
        if base > u16::MAX - 552 - n {
            continue;
        }
        let ports = (0..n).flat_map(|i| [base + i, base + 100 + i, base + 552 + i]);
        let held: Vec<_> = ports.map(|p| TcpListener::bind(("127.0.0.1", p))).collect();
        if held.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no free block of ports for a development cluster");
}

/// A `runnel serve --cluster-dev` process whose stdout lines arrive on a
/// channel. Killed when dropped.
struct DevCluster {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl DevCluster {
    fn start(n: u16, base: u16) -> DevCluster {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--cluster-dev", &n.to_string(), "--base-port"])
            .arg(base.to_string())
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .args(["--registry-addr", "off", "--connect-addr", "off"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start runnel serve --cluster-dev");
        let (tx, lines) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        DevCluster {
            child,
            lines,
            seen: Vec::new(),
            _tmp: tmp,
        }
    }

    /// Waits for a line starting with `prefix`; `None` if the process ends
    /// or the time passes first.
    fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// The pids the nodes started with, from the start lines.
    fn node_pids(&self) -> Vec<i32> {
        self.seen
            .iter()
            .filter(|l| l.trim_start().starts_with("node "))
            .filter_map(|l| l.rsplit_once("pid ").and_then(|(_, p)| p.parse().ok()))
            .collect()
    }

    /// Exit status within `timeout` (None: still running).
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Everything printed so far, after draining what is buffered.
    fn output(&mut self) -> String {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_cluster_dev_starts_three_nodes_that_clients_use_through_its_bootstrap_list_and_sigterm_stops_them_all(
) {
    let base = free_dev_cluster_base(3);
    let mut dev = DevCluster::start(3, base);
    let bootstrap = dev
        .wait_line("bootstrap: ", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the bootstrap list is printed:\n{}", dev.output()))
        .trim_start_matches("bootstrap: ")
        .to_string();
    assert_eq!(
        bootstrap,
        format!(
            "127.0.0.1:{base},127.0.0.1:{},127.0.0.1:{}",
            base + 1,
            base + 2
        )
    );
    if dev
        .wait_line("cluster ready", Duration::from_secs(60))
        .is_none()
    {
        panic!("the cluster starts:\n{}", dev.output());
    }
    let pids = dev.node_pids();
    assert_eq!(pids.len(), 3, "{}", dev.output());

    // Every node is a live broker of one cluster.
    let status = Command::new(BIN)
        .args(["cluster", "status", "--json", "--bootstrap", &bootstrap])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", stderr(&status));
    let live: Vec<(i64, bool)> = brokers_of(&json(&status))
        .into_iter()
        .map(|(id, live, _)| (id, live))
        .collect();
    assert_eq!(live, vec![(1, true), (2, true), (3, true)]);

    // A client writes and reads through the bootstrap list.
    let created = Command::new(BIN)
        .args(["topic", "create", "dev", "-p", "3", "--bootstrap"])
        .arg(format!("127.0.0.1:{base}"))
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", stderr(&created));
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    for i in 0..30 {
        let value = format!("record-{i}");
        producer
            .send(
                FutureRecord::<(), _>::to("dev")
                    .partition(i % 3)
                    .payload(&value),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce {i}: {e}"));
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "dev-cluster-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset("dev", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut read = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while read.len() < 30 && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            read.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    read.sort();
    let mut expected: Vec<String> = (0..30).map(|i| format!("record-{i}")).collect();
    expected.sort();
    assert_eq!(read, expected);
    drop(consumer);
    drop(producer);

    // SIGTERM stops every node, and the supervisor exits cleanly.
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(dev.child.id() as i32, libc::SIGTERM);
    }
    let status = dev.wait_exit(Duration::from_secs(40));
    let output = dev.output();
    assert!(
        status.is_some_and(|s| s.success()),
        "exits 0 after SIGTERM ({status:?}):\n{output}"
    );
    assert!(output.contains("every node stopped"), "{output}");
    for pid in pids {
        assert!(!process_exists(pid), "node pid {pid} is gone");
    }
    for port in [base, base + 1, base + 2] {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nothing serves on {port}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_cluster_dev_exits_non_zero_with_the_log_tail_of_a_node_that_cannot_start() {
    let base = free_dev_cluster_base(3);
    // Node 2's Kafka port is taken.
    let _taken = TcpListener::bind(("127.0.0.1", base + 1)).unwrap();
    let mut dev = DevCluster::start(3, base);
    let status = dev.wait_exit(Duration::from_secs(60));
    let output = dev.output();
    assert!(
        status.is_some_and(|s| !s.success()),
        "exits non-zero ({status:?}):\n{output}"
    );
    assert!(
        output.contains("node 2 exited during start")
            && output.contains(&format!("cannot listen on 127.0.0.1:{}", base + 1)),
        "names the node and shows why from its log:\n{output}"
    );
    for pid in dev.node_pids() {
        assert!(!process_exists(pid), "node pid {pid} was stopped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_cluster_dev_stopped_while_its_nodes_start_leaves_no_node_running() {
    let base = free_dev_cluster_base(3);
    let mut dev = DevCluster::start(3, base);
    if dev
        .wait_line("bootstrap: ", Duration::from_secs(10))
        .is_none()
    {
        panic!("the nodes are started:\n{}", dev.output());
    }
    let pids = dev.node_pids();
    assert_eq!(pids.len(), 3, "{}", dev.output());
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(dev.child.id() as i32, libc::SIGTERM);
    }
    let status = dev.wait_exit(Duration::from_secs(40));
    let output = dev.output();
    assert!(status.is_some(), "stops within the time:\n{output}");
    for pid in pids {
        assert!(!process_exists(pid), "node pid {pid} is gone:\n{output}");
    }
}

/// Runs `runnel ARGS --format json --bootstrap <node>` and parses stdout.
fn cli_json(node: &TestBroker, args: &[&str]) -> Value {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--format", "json"]);
    let out = node.cli(&all, None);
    assert!(
        out.status.success(),
        "runnel {}: {}",
        all.join(" "),
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "runnel {} prints JSON ({e}): {}",
            all.join(" "),
            stdout(&out)
        )
    })
}

/// GET `path` of `node`'s console API as JSON.
async fn console_get(node: &TestBroker, path: &str) -> Value {
    let r = reqwest::get(format!("{}/api{path}", node.admin_url()))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    serde_json::from_str(&r.text().await.expect("body")).expect("JSON")
}

/// In a cluster most partitions are led, and most groups coordinated, by
/// another broker than the one a command connects to: ListOffsets,
/// DeleteRecords, OffsetFetch/OffsetCommit/DescribeGroups/DeleteGroups and
/// ListGroups must reach the right brokers (one node's answers alone say
/// NOT_LEADER_OR_FOLLOWER / NOT_COORDINATOR, or leave groups out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_and_the_console_ask_each_partitions_leader_and_each_groups_coordinator() {
    use rdkafka::consumer::CommitMode;
    use runnel_core::client::ClusterClient;

    let cluster = TestCluster::start(3);
    let node = &cluster.nodes[0];
    let created = node.cli(&["topic", "create", "spread", "-p", "6", "-r", "1"], None);
    assert!(created.status.success(), "{}", stderr(&created));
    wait_for(node, 3, "spread", 6).await;
    let mut admin = ClusterClient::connect(&node.addr(), "test").await.unwrap();
    let elsewhere = (0..6)
        .filter(|p| admin.leader("spread", *p) != Some(1))
        .count();
    assert!(elsewhere > 0, "some partitions are led by nodes 2 and 3");

    // 100 records in each partition.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "all")
        .create()
        .unwrap();
    for p in 0..6 {
        for i in 0..100 {
            let value = format!("record {i} of partition {p}");
            producer
                .send(
                    FutureRecord::<(), _>::to("spread")
                        .partition(p)
                        .payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .expect("produce");
        }
    }

    // Groups g0..g5: g{i} committed 100 - 10*i on every partition (lag 60*i).
    let groups: Vec<String> = (0..6).map(|i| format!("g{i}")).collect();
    for (i, group) in groups.iter().enumerate() {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap())
            .set("group.id", group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..6 {
            tpl.add_partition_offset("spread", p, Offset::Offset(100 - 10 * i as i64))
                .unwrap();
        }
        consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    }
    let mut coordinated_elsewhere = 0;
    for group in &groups {
        if admin.coordinator_id(group).await.unwrap() != 1 {
            coordinated_elsewhere += 1;
        }
    }
    assert!(
        coordinated_elsewhere > 0,
        "some groups are coordinated by nodes 2 and 3"
    );

    // topic describe: every partition's offsets, wherever it is led.
    let described = cli_json(node, &["topic", "describe", "spread"]);
    let ends: Vec<(i64, i64)> = described["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start_offset"].as_i64().unwrap_or(-1),
                p["end_offset"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(ends, vec![(0, 100); 6], "{described}");

    // group list: every group, whichever broker coordinates it.
    let listed = cli_json(node, &["group", "list"]);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["group"].as_str())
        .collect();
    for group in &groups {
        assert!(names.contains(&group.as_str()), "{group} in {listed}");
    }

    // group describe: committed offsets and lag from the coordinator and
    // the leaders.
    for (i, group) in groups.iter().enumerate() {
        let d = cli_json(node, &["group", "describe", group]);
        assert_eq!(d["total_lag"], 60 * i as i64, "{group}: {d}");
        let committed: Vec<i64> = d["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["committed"].as_i64().unwrap_or(-1))
            .collect();
        assert_eq!(committed, vec![100 - 10 * i as i64; 6], "{group}: {d}");
    }

    // reset-offsets (JSON plan, executed) and seek commit at the coordinator.
    let plan = cli_json(
        node,
        &[
            "group",
            "reset-offsets",
            "g3",
            "--topic",
            "spread",
            "--to-earliest",
            "--execute",
        ],
    );
    assert_eq!(plan["executed"], true, "{plan}");
    let moved: Vec<(i64, i64)> = plan["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["from"].as_i64().unwrap(), p["to"].as_i64().unwrap()))
        .collect();
    assert_eq!(moved, vec![(70, 0); 6], "{plan}");
    assert_eq!(
        cli_json(node, &["group", "describe", "g3"])["total_lag"],
        600
    );
    let dry = cli_json(
        node,
        &[
            "group",
            "reset-offsets",
            "g2",
            "--topic",
            "spread",
            "--shift-by",
            "-5",
        ],
    );
    assert_eq!(dry["executed"], false, "{dry}");
    assert_eq!(dry["partitions"][0]["to"], 75, "{dry}");
    assert_eq!(
        cli_json(node, &["group", "describe", "g2"])["total_lag"],
        120,
        "a dry run commits nothing"
    );
    cli_json(node, &["group", "seek", "g4", "--to", "end"]);
    assert_eq!(cli_json(node, &["group", "describe", "g4"])["total_lag"], 0);

    // delete reaches the coordinator of each group.
    let deleted = node.cli(&["group", "delete", "g5", "g1"], None);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    let listed = cli_json(node, &["group", "list"]).to_string();
    assert!(
        !listed.contains("\"g5\"") && !listed.contains("\"g1\""),
        "{listed}"
    );

    // trim-prefix: DeleteRecords at each leader.
    cli_json(node, &["topic", "trim-prefix", "spread", "-o", "10"]);
    let described = cli_json(node, &["topic", "describe", "spread"]);
    let starts: Vec<i64> = described["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["start_offset"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(starts, vec![10; 6], "{described}");

    // The console of node 1: records held and size over the whole cluster,
    // group lag from coordinators and leaders.
    let topics = console_get(node, "/topics").await;
    let spread = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "spread")
        .cloned()
        .unwrap_or_else(|| panic!("spread in {topics}"));
    assert_eq!(spread["messages"], 540, "{spread}");
    let mut leader_bytes = 0.0;
    for (index, n) in cluster.nodes.iter().enumerate() {
        let node_id = index as i32 + 1;
        let page = n.metrics().await;
        for line in page.lines().filter(|l| {
            l.starts_with("runnel_partition_log_size_bytes{") && l.contains("topic=\"spread\"")
        }) {
            let partition: i32 = line
                .split("partition=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .and_then(|p| p.parse().ok())
                .unwrap();
            if admin.leader("spread", partition) == Some(node_id) {
                leader_bytes += line.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
            }
        }
    }
    assert!(leader_bytes > 6000.0, "600 records hold some bytes");
    assert_eq!(
        spread["size_bytes"].as_f64(),
        Some(leader_bytes),
        "{spread}"
    );
    let listed = console_get(node, "/groups").await;
    let lag_of = |g: &str| {
        listed["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["group_id"] == g)
            .map(|x| x["lag"].clone())
            .unwrap_or_else(|| panic!("{g} in {listed}"))
    };
    // After the trim the log starts at 10; lag counts from the committed
    // offset as Kafka's tools do.
    assert_eq!(lag_of("g0"), 0);
    assert_eq!(lag_of("g2"), 120);
    assert_eq!(lag_of("g3"), 600);
    assert_eq!(lag_of("g4"), 0);
}
