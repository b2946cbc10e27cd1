//! `runnel bench cluster`: what replication costs and how fast a 3-node
//! cluster recovers, with a single node measured in the same run.
//!
//! Three `runnel serve` child processes of this binary (node ids 1-3, every
//! one a voter of the metadata quorum, on free loopback ports, data in a
//! temporary directory) and one single-node broker. Measured:
//!
//! - produce throughput and latency of the same librdkafka producer into an
//!   RF 1 topic with `acks=1`, an RF 3 topic with `acks=1` and an RF 3
//!   topic with `acks=all`, next to the single node with `acks=1` and
//!   `acks=all` (cases alternate inside every repeat, so drift on the
//!   machine hits all of them); latency once more at a fixed offered load;
//!   consume throughput of what the RF 3 topic holds, next to the single
//!   node's;
//! - the failover window: an idempotent `acks=all` producer writes to one
//!   RF 3 partition without pause while its leader is SIGKILLed; the
//!   window ends at the first write the new leader acknowledges (an offset
//!   at or past where its leader epoch starts, so acknowledgements the old
//!   leader sent before it died never count);
//! - follower catch-up: one follower is stopped, data is written to its
//!   partition, it is started again; timed until its log holds as many
//!   bytes as the leader's (the logs are byte-identical when complete) and
//!   until it is back in the ISR.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    BrokerId, MetadataRequest, MetadataResponse, OffsetForLeaderEpochRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use runnel_core::client::Client;

use super::procs::{broker_exe, free_port, ChildBroker};
use super::produce::{ProduceResult, Workload};
use super::{consume, create_topic_replicated, delete_topic, machine, median, ms, produce_once};

/// Nodes of the benchmarked cluster.
const NODES: usize = 3;
/// How long the cluster, a restarted node or a topic's replicas may take.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a failover may take before the round is given up.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Steady writes before each leader kill.
const STEADY_BEFORE_KILL: Duration = Duration::from_secs(2);
/// Records per second of the failover writer.
const FAILOVER_WRITES_PER_SEC: u64 = 1000;
/// Lines of a node's log shown when it fails.
const LOG_TAIL_LINES: usize = 30;

#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// Bytes per record value
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Partitions of the produce topics
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Payload megabytes per produce run
    #[arg(long, default_value_t = 256)]
    pub megabytes: u64,
    /// Produce runs per case; the median is reported
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Records per second offered in the latency runs
    #[arg(long, default_value_t = 5000)]
    pub latency_rate: u64,
    /// Seconds per latency run
    #[arg(long, default_value_t = 5)]
    pub latency_seconds: u64,
    /// Leader SIGKILLs in the failover measurement
    #[arg(long, default_value_t = 3)]
    pub failovers: usize,
    /// Leader stops by SIGTERM (a graceful shutdown) in the failover
    /// measurement, after the SIGKILLs
    #[arg(long, default_value_t = 3)]
    pub graceful_failovers: usize,
    /// Megabytes written while a follower is down
    #[arg(long, default_value_t = 256)]
    pub catch_up_megabytes: u64,
    /// The nodes' broker_session_timeout_ms (the broker's default when unset)
    #[arg(long)]
    pub broker_session_timeout_ms: Option<u64>,
    /// The nodes' replica_lag_time_max_ms (the broker's default when unset)
    #[arg(long)]
    pub replica_lag_time_max_ms: Option<u64>,
    /// Leave out the single-node broker
    #[arg(long)]
    pub no_single_node: bool,
}

// ---------------------------------------------------------------------------
// The cluster's processes

/// One node: a `runnel serve` child process, started again after a kill
/// with the same arguments and data.
struct Node {
    id: i32,
    kafka_addr: String,
    data_dir: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

struct Cluster {
    nodes: Vec<Node>,
}

impl Node {
    /// Starts the process (its log appended to `self.log`). Call from the
    /// async context, never from a blocking-pool thread: the child is
    /// tied to the thread that starts it (see below).
    fn spawn(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("creating {}", self.log.display()))?;
        let mut command = Command::new(broker_exe()?);
        command
            .args(&self.args)
            .env("RUNNEL_LOG", "warn")
            .env("RUNNEL_ADMIN_ADDR", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        #[cfg(target_os = "linux")]
        // SAFETY: between fork and exec the closure only calls prctl, which
        // is async-signal-safe. A node outlives no benchmark that is
        // interrupted (Ctrl-C skips the destructors).
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.child = Some(
            command
                .spawn()
                .with_context(|| format!("starting node {}", self.id))?,
        );
        Ok(())
    }

    fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, and reaps the process.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (the node shuts down gracefully); [`Node::reap`]
    /// waits for it.
    fn terminate(&mut self) {
        if let Some(child) = &self.child {
            // SAFETY: a signal to our own child, not yet reaped (`child`
            // is only taken by `kill` and `reap`, which wait for it).
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
    }

    /// Waits for a terminated node to exit; SIGKILL after 30 s.
    async fn reap(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGTERM, and waits until the node exited.
    async fn stop(&mut self) {
        self.terminate();
        self.reap().await;
    }

    /// Waits until the node accepts Kafka connections.
    async fn wait_listening(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if tokio::net::TcpStream::connect(&self.kafka_addr)
                .await
                .is_ok()
            {
                return Ok(());
            }
            self.check_running()?;
            if Instant::now() > deadline {
                bail!(
                    "node {} did not listen on {} within {timeout:?}; last lines of its log:\n{}",
                    self.id,
                    self.kafka_addr,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "node {} exited with {status}; last lines of its log:\n{}",
                    self.id,
                    self.log_tail()
                );
            }
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Bytes of the segment files of `topic`-`partition` on this node.
    fn log_bytes(&self, topic: &str, partition: i32) -> u64 {
        let dir = self.data_dir.join(format!("{topic}-{partition}"));
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Cluster {
    /// Starts `NODES` nodes in `root` and waits until each serves and
    /// lists every node as a live (registered, unfenced) broker.
    async fn start(root: &Path, extra: &[String]) -> Result<Cluster> {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let controller_addrs: Vec<String> = (0..NODES)
            .map(|_| Ok(format!("127.0.0.1:{}", free_port()?)))
            .collect::<Result<_>>()?;
        let quorum = controller_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}@{a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, controller) in controller_addrs.iter().enumerate() {
            let id = i as i32 + 1;
            let kafka_addr = format!("127.0.0.1:{}", free_port()?);
            let data_dir = root.join(format!("node-{id}"));
            let mut args: Vec<String> = [
                "serve",
                "--node-id",
                &id.to_string(),
                "--controller-quorum",
                &quorum,
                "--controller-addr",
                controller,
                "--kafka-addr",
                &kafka_addr,
                "--advertised-kafka-addr",
                &kafka_addr,
                "--registry-addr",
                "off",
                "--connect-addr",
                "off",
                "--data-dir",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.push(data_dir.display().to_string());
            args.extend(extra.iter().cloned());
            nodes.push(Node {
                id,
                kafka_addr,
                log: root.join(format!("node-{id}.log")),
                data_dir,
                args,
                child: None,
            });
        }
        let mut cluster = Cluster { nodes };
        // A node waits for a quorum before it serves: start all, then wait.
        for node in &mut cluster.nodes {
            node.spawn()?;
        }
        for node in &mut cluster.nodes {
            node.wait_listening(SETTLE_TIMEOUT).await?;
        }
        cluster.wait_all_live().await?;
        Ok(cluster)
    }

    fn node(&mut self, id: i32) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    /// The Kafka addresses of the running nodes.
    fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.is_up())
            .map(|n| n.kafka_addr.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// One running node's address, for admin requests.
    fn bootstrap_one(&self) -> String {
        self.up()
            .next()
            .map(|n| n.kafka_addr.clone())
            .unwrap_or_default()
    }

    fn up(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.is_up())
    }

    /// Waits until every node runs and each lists all of them as live.
    async fn wait_all_live(&mut self) -> Result<()> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let mut all = true;
            for node in &mut self.nodes {
                node.check_running()?;
                let listed = match metadata(&node.kafka_addr, Some(&[])).await {
                    Ok(m) => m.brokers.len(),
                    Err(_) => 0,
                };
                all &= node.is_up() && listed == NODES;
            }
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the nodes did not all register and see each other within {SETTLE_TIMEOUT:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node sees every partition of `topic` led,
    /// with all `replicas` in its ISR.
    async fn wait_full_isr(&mut self, topic: &str, partitions: i32, replicas: usize) -> Result<()> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let mut all = true;
            for node in self.nodes.iter_mut().filter(|n| n.is_up()) {
                node.check_running()?;
                let seen = placements(&node.kafka_addr, topic)
                    .await
                    .unwrap_or_default();
                all &= seen.len() == partitions as usize
                    && seen.iter().all(|p| p.leader > 0 && p.isr.len() == replicas);
            }
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{topic} did not get a leader and {replicas} in-sync replicas on every node within {SETTLE_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where partition 0 of `topic` is led, as the first running node that
    /// knows it sees it (skipping `except`).
    async fn placement(&self, topic: &str, except: Option<i32>) -> Option<Placement> {
        for node in self.up().filter(|n| Some(n.id) != except) {
            if let Ok(p) = placements(&node.kafka_addr, topic).await {
                if let Some(first) = p.into_iter().next() {
                    return Some(first);
                }
            }
        }
        None
    }

    /// The controller (the metadata quorum's leader) as a running node
    /// reports it.
    async fn controller(&self) -> Option<i32> {
        for node in self.up() {
            if let Ok(m) = metadata(&node.kafka_addr, Some(&[])).await {
                return Some(m.controller_id.0);
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------
// Protocol helpers

/// Leader, epoch and replicas of one partition.
#[derive(Debug, Clone, PartialEq)]
struct Placement {
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
}

async fn metadata(addr: &str, topics: Option<&[&str]>) -> Result<MetadataResponse> {
    let ask = async {
        let mut client = Client::connect(addr, "runnel-bench").await?;
        client.set_timeout(Duration::from_secs(5));
        let mut request = MetadataRequest::default();
        request.topics = topics.map(|names| {
            names
                .iter()
                .map(|n| {
                    let mut t = MetadataRequestTopic::default();
                    t.name = Some(TopicName(StrBytes::from_string(n.to_string())));
                    t
                })
                .collect()
        });
        request.allow_auto_topic_creation = false;
        anyhow::Ok(client.send(&request).await?)
    };
    tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .with_context(|| format!("no Metadata answer from {addr} within 5 s"))?
}

/// The partitions of `topic` as the node at `addr` sees them, by index
/// (empty while it does not know the topic).
async fn placements(addr: &str, topic: &str) -> Result<Vec<Placement>> {
    let response = metadata(addr, Some(&[topic])).await?;
    let Some(t) = response
        .topics
        .into_iter()
        .find(|t| t.error_code == 0 && t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
    else {
        return Ok(Vec::new());
    };
    let mut partitions = t.partitions;
    partitions.sort_by_key(|p| p.partition_index);
    let ids = |v: Vec<BrokerId>| v.into_iter().map(|b| b.0).collect::<Vec<_>>();
    Ok(partitions
        .into_iter()
        .map(|p| Placement {
            leader: p.leader_id.0,
            leader_epoch: p.leader_epoch,
            replicas: ids(p.replica_nodes),
            isr: ids(p.isr_nodes),
        })
        .collect())
}

/// Where leader epoch `epoch` of partition 0 ends in the log of the node
/// at `addr` (its leader in `current_epoch`): the offset its next epoch
/// starts at.
async fn epoch_end_offset(addr: &str, topic: &str, current_epoch: i32, epoch: i32) -> Result<i64> {
    let ask = async {
        let mut client = Client::connect(addr, "runnel-bench").await?;
        client.set_timeout(Duration::from_secs(5));
        let mut p = OffsetForLeaderPartition::default();
        p.partition = 0;
        p.current_leader_epoch = current_epoch;
        p.leader_epoch = epoch;
        let mut t = OffsetForLeaderTopic::default();
        t.topic = TopicName(StrBytes::from_string(topic.to_string()));
        t.partitions = vec![p];
        let mut request = OffsetForLeaderEpochRequest::default();
        request.replica_id = BrokerId(-1);
        request.topics = vec![t];
        let response = client.send(&request).await?;
        let answer = response
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .context("empty OffsetForLeaderEpoch answer")?;
        anyhow::ensure!(
            answer.error_code == 0 && answer.end_offset >= 0,
            "OffsetForLeaderEpoch: error {}, end offset {}",
            answer.error_code,
            answer.end_offset
        );
        anyhow::Ok(answer.end_offset)
    };
    tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .context("no OffsetForLeaderEpoch answer within 5 s")?
}

/// One `acks=all` write of one record to partition 0 of `topic` through
/// the protocol client: the partition's error code (0 once committed).
async fn raw_acks_all(addr: &str, topic: &str) -> Result<i16> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::ProduceRequest;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
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
        timestamp: runnel_core::util::now_ms(),
        key: None,
        value: Some(bytes::Bytes::from_static(b"raw failover probe")),
        headers: Default::default(),
    };
    let mut batch = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        &[record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )?;
    let mut data = PartitionProduceData::default();
    data.index = 0;
    data.records = Some(batch.freeze());
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_data = vec![data];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 2000;
    request.topic_data = vec![t];
    let ask = async {
        let mut client = Client::connect(addr, "runnel-bench").await?;
        client.set_timeout(Duration::from_secs(5));
        let response = client.send(&request).await?;
        let code = response
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .map(|p| p.error_code)
            .context("empty Produce answer")?;
        anyhow::Ok(code)
    };
    tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .context("no Produce answer within 5 s")?
}

// ---------------------------------------------------------------------------
// The failover writer

/// Acknowledged writes: when each acknowledgement arrived and its offset.
#[derive(Default)]
struct Acks {
    acked: Mutex<Vec<(Instant, i64)>>,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Acks {
    /// When the first acknowledgement at or past `offset` that arrived
    /// after `since` arrived.
    fn first_at_or_past(&self, offset: i64, since: Instant) -> Option<Instant> {
        first_ack_at_or_past(
            &self.acked.lock().unwrap_or_else(|e| e.into_inner()),
            offset,
            since,
        )
    }
}

/// The arrival of the first acknowledgement at or past `offset` among those
/// that arrived after `since` (in arrival order).
fn first_ack_at_or_past(acked: &[(Instant, i64)], offset: i64, since: Instant) -> Option<Instant> {
    acked
        .iter()
        .filter(|(at, _)| *at >= since)
        .find(|(_, o)| *o >= offset)
        .map(|(at, _)| *at)
}

struct AckContext(Arc<Acks>);

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => self
                .0
                .acked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((Instant::now(), m.offset())),
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                self.0
                    .first_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// An idempotent `acks=all` producer writing to partition 0 of a topic at
/// a steady rate on its own thread until stopped.
struct Writer {
    acks: Arc<Acks>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<u64>>,
}

impl Writer {
    fn start(bootstrap: &str, topic: &str, record_bytes: usize) -> Result<Writer> {
        let acks = Arc::new(Acks::default());
        let producer: ThreadedProducer<AckContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "1")
            .set("message.timeout.ms", "120000")
            .set("log_level", "3")
            .create_with_context(AckContext(acks.clone()))
            .context("creating the failover producer")?;
        producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .context("metadata for the failover producer")?;
        let stop = Arc::new(AtomicBool::new(false));
        let (topic, flag) = (topic.to_string(), stop.clone());
        let thread = std::thread::spawn(move || -> Result<u64> {
            let payload = vec![b'f'; record_bytes];
            let every = Duration::from_secs_f64(1.0 / FAILOVER_WRITES_PER_SEC as f64);
            let started = Instant::now();
            let mut sent = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let due = started + every * sent as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let mut record = BaseRecord::<(), [u8], ()>::to(&topic)
                    .payload(&payload)
                    .partition(0);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err((e, _)) => bail!("failover producer: send failed: {e}"),
                    }
                }
                sent += 1;
            }
            producer
                .flush(Duration::from_secs(120))
                .context("failover producer: flush")?;
            Ok(sent)
        });
        Ok(Writer { acks, stop, thread })
    }

    /// Stops writing, waits for every delivery report; returns (sent,
    /// acknowledged), or the first failed delivery.
    fn finish(self) -> Result<(u64, usize)> {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("the failover producer thread panicked"))??;
        if let Some(e) = self
            .acks
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            bail!(
                "{} failover writes failed, first: {e}",
                self.acks.failed.load(Ordering::Relaxed)
            );
        }
        let acked = self
            .acks
            .acked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        Ok((sent, acked))
    }
}

// ---------------------------------------------------------------------------
// Measurements

/// One produce case: where, replication factor and acks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    SingleNode,
    Cluster,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    target: Target,
    replication: i16,
    acks: i32,
}

impl Case {
    fn label(&self) -> String {
        let acks = if self.acks == -1 {
            "all".to_string()
        } else {
            self.acks.to_string()
        };
        match self.target {
            Target::SingleNode => format!("single node, acks={acks}"),
            Target::Cluster => format!("3 nodes, RF {}, acks={acks}", self.replication),
        }
    }

    /// Topic configs: RF 3 topics take min.insync.replicas=2, as a
    /// production RF 3 topic would.
    fn configs(&self) -> Vec<(&'static str, &'static str)> {
        if self.replication >= 3 {
            vec![("min.insync.replicas", "2")]
        } else {
            Vec::new()
        }
    }
}

/// Where the cases run.
struct Targets<'a> {
    single: Option<&'a ChildBroker>,
    cluster: &'a mut Cluster,
}

impl Targets<'_> {
    fn addr(&self, case: &Case) -> String {
        match case.target {
            Target::SingleNode => self.single.map(|s| s.addr.clone()).unwrap_or_default(),
            Target::Cluster => self.cluster.bootstrap(),
        }
    }

    /// A node to send admin requests to.
    fn admin_addr(&self, case: &Case) -> String {
        match case.target {
            Target::SingleNode => self.addr(case),
            Target::Cluster => self.cluster.bootstrap_one(),
        }
    }

    /// Creates `topic` for `case`, waits until all its replicas are in
    /// sync on every node, and writes one record to each partition with
    /// the case's acks: the returned latency of that first write is not
    /// part of the measurements that follow (for RF 3 it includes the
    /// followers taking the new partition up).
    async fn create(&mut self, case: &Case, topic: &str, partitions: i32) -> Result<u64> {
        let admin = self.admin_addr(case);
        create_topic_replicated(&admin, topic, partitions, case.replication, &case.configs())
            .await?;
        if case.target == Target::Cluster {
            self.cluster
                .wait_full_isr(topic, partitions, case.replication as usize)
                .await?;
        }
        let first = Workload {
            record_bytes: 1024,
            partitions,
            acks: case.acks,
            records: partitions as u64,
            rate: None,
            linger_ms: 0,
            payload: None,
            sliding_payload: false,
            compression: "none",
        };
        let written = produce_once(&self.addr(case), topic, &first, "first write").await?;
        Ok(written.p99_us)
    }

    /// Reads `topic` from offset 0 to `end_offsets` with raw Fetch
    /// requests to each partition's leader (one leader after the other).
    async fn raw_fetch(
        &self,
        case: &Case,
        topic: &str,
        end_offsets: &[i64],
    ) -> Result<consume::ConsumeResult> {
        let leaders: Vec<String> = match case.target {
            Target::SingleNode => vec![self.addr(case); end_offsets.len()],
            Target::Cluster => {
                let seen = placements(&self.cluster.bootstrap_one(), topic).await?;
                anyhow::ensure!(
                    seen.len() == end_offsets.len(),
                    "{topic}: partitions unknown"
                );
                seen.iter()
                    .map(|p| {
                        self.cluster
                            .nodes
                            .iter()
                            .find(|n| n.id == p.leader)
                            .map(|n| n.kafka_addr.clone())
                            .with_context(|| format!("{topic}: no leader"))
                    })
                    .collect::<Result<_>>()?
            }
        };
        let mut total = consume::ConsumeResult {
            records: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
        };
        let mut distinct = leaders.clone();
        distinct.sort();
        distinct.dedup();
        for leader in distinct {
            let led: Vec<i64> = end_offsets
                .iter()
                .zip(&leaders)
                .map(|(&end, l)| if *l == leader { end } else { 0 })
                .collect();
            let part = consume::raw_fetch(&leader, topic, &led).await?;
            total.records += part.records;
            total.bytes += part.bytes;
            total.elapsed += part.elapsed;
        }
        Ok(total)
    }

    async fn delete(&self, case: &Case, topic: &str) -> Result<()> {
        delete_topic(&self.admin_addr(case), topic).await?;
        // Deleting drops the data: each run starts with the same amount of
        // page cache to fill.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    }
}

fn cases(single_node: bool) -> Vec<Case> {
    let mut v = Vec::new();
    if single_node {
        for acks in [1, -1] {
            v.push(Case {
                target: Target::SingleNode,
                replication: 1,
                acks,
            });
        }
    }
    for (replication, acks) in [(1, 1), (3, 1), (3, -1)] {
        v.push(Case {
            target: Target::Cluster,
            replication,
            acks,
        });
    }
    v
}

struct ProduceRows {
    /// Each case's median run, and the median latency of the first write
    /// to its new topics (microseconds).
    throughput: Vec<(Case, ProduceResult, u64)>,
    latency: Vec<(Case, ProduceResult)>,
    /// Raw Fetch (batch bytes) and librdkafka (payload bytes).
    consume: Vec<(String, consume::ConsumeResult, consume::ConsumeResult)>,
}

async fn produce_cases(args: &ClusterArgs, targets: &mut Targets<'_>) -> Result<ProduceRows> {
    let cases = cases(targets.single.is_some());
    let size = args.record_bytes;
    let partitions = args.partitions.max(1);
    let throughput_load = Workload {
        record_bytes: size,
        partitions,
        acks: 1,
        records: (args.megabytes * 1_000_000 / size as u64).max(1000),
        rate: None,
        linger_ms: 5,
        payload: None,
        sliding_payload: false,
        compression: "none",
    };
    let mut runs: Vec<Vec<ProduceResult>> = vec![Vec::new(); cases.len()];
    let mut first_writes: Vec<Vec<u64>> = vec![Vec::new(); cases.len()];
    let mut consumed = Vec::new();
    let repeat = args.repeat.max(1);
    for r in 0..repeat {
        for (i, case) in cases.iter().enumerate() {
            let topic = format!("bench-produce-{i}-{r}");
            first_writes[i].push(targets.create(case, &topic, partitions).await?);
            let workload = Workload {
                acks: case.acks,
                ..throughput_load.clone()
            };
            let label = case.label();
            let result = produce_once(&targets.addr(case), &topic, &workload, &label).await?;
            eprintln!(
                "  run {}: {label}: {:.0} MB/s (p50 {} ms, p99 {} ms)",
                r + 1,
                result.mb_per_sec(),
                ms(result.p50_us),
                ms(result.p99_us)
            );
            runs[i].push(result);
            // Read back what the last run wrote: the RF 3 acks=all topic and
            // the single node's acks=all topic.
            if r + 1 == repeat && case.acks == -1 {
                // The first write put one record in each partition.
                let (per, rest) = (
                    workload.records / partitions as u64,
                    workload.records % partitions as u64,
                );
                let end_offsets: Vec<i64> = (0..partitions as u64)
                    .map(|p| (1 + per + u64::from(p < rest)) as i64)
                    .collect();
                let raw = targets.raw_fetch(case, &topic, &end_offsets).await?;
                let (addr, t, n) = (targets.addr(case), topic.clone(), workload.records);
                let read = tokio::task::spawn_blocking(move || {
                    consume::rdkafka_consume(&addr, &t, partitions, n)
                })
                .await??;
                eprintln!(
                    "  consume: {label} topic: raw Fetch {:.0} MB/s, librdkafka {:.0} MB/s",
                    raw.mb_per_sec(),
                    read.mb_per_sec()
                );
                consumed.push((label, raw, read));
            }
            targets.delete(case, &topic).await?;
        }
    }
    let mut latency = Vec::new();
    let records = args.latency_rate.max(1) * args.latency_seconds.max(1);
    for (i, case) in cases.iter().enumerate() {
        let topic = format!("bench-latency-{i}");
        targets.create(case, &topic, partitions).await?;
        let workload = Workload {
            acks: case.acks,
            records,
            rate: Some(args.latency_rate.max(1)),
            linger_ms: 1,
            ..throughput_load.clone()
        };
        let label = format!("{} at {}/s", case.label(), args.latency_rate);
        let result = produce_once(&targets.addr(case), &topic, &workload, &label).await?;
        eprintln!(
            "  {label}: p50 {} ms, p99 {} ms",
            ms(result.p50_us),
            ms(result.p99_us)
        );
        latency.push((*case, result));
        targets.delete(case, &topic).await?;
    }
    Ok(ProduceRows {
        throughput: cases
            .into_iter()
            .zip(runs)
            .zip(first_writes)
            .map(|((c, r), f)| (c, median(r), median_u64(f)))
            .collect(),
        latency,
        consume: consumed,
    })
}

/// How a leader is stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    /// SIGKILL: the process is gone at once, nothing is said to anyone.
    Kill,
    /// SIGTERM: the broker shuts down gracefully.
    Term,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Kill => "SIGKILL",
            Stop::Term => "SIGTERM",
        }
    }
}

/// One stopped leader.
struct Failover {
    stop: Stop,
    killed: i32,
    killed_was_controller: bool,
    new_leader: i32,
    /// Kill → a node's Metadata names the new leader.
    to_metadata: Duration,
    /// Kill → the new leader answers an `acks=all` write of the protocol
    /// client (sent as soon as the metadata names it): what the broker
    /// offers, without librdkafka's own recovery.
    to_raw_ack: Duration,
    /// Kill → the first write the new leader acknowledged arrived.
    to_first_ack: Duration,
}

async fn failovers(
    args: &ClusterArgs,
    cluster: &mut Cluster,
) -> Result<(Vec<Failover>, u64, usize)> {
    let topic = "bench-failover";
    create_topic_replicated(
        &cluster.bootstrap_one(),
        topic,
        1,
        3,
        &[("min.insync.replicas", "2")],
    )
    .await?;
    cluster.wait_full_isr(topic, 1, 3).await?;
    let writer = Writer::start(&cluster.bootstrap(), topic, args.record_bytes)?;
    let mut rounds = Vec::new();
    let stops = std::iter::repeat_n(Stop::Kill, args.failovers)
        .chain(std::iter::repeat_n(Stop::Term, args.graceful_failovers));
    for (round, stop) in stops.enumerate() {
        let outcome = failover_round(cluster, topic, &writer, round, stop).await;
        match outcome {
            Ok(f) => {
                eprintln!(
                    "  failover {}: {} to node {}{}, node {} leads; new leader in metadata after {} ms, a raw acks=all write answered after {} ms, librdkafka's first acks=all write after {} ms",
                    round + 1,
                    f.stop.name(),
                    f.killed,
                    if f.killed_was_controller { " (the controller)" } else { "" },
                    f.new_leader,
                    f.to_metadata.as_millis(),
                    f.to_raw_ack.as_millis(),
                    f.to_first_ack.as_millis()
                );
                rounds.push(f);
            }
            Err(e) => {
                // Its thread stops on its own; the error is what matters.
                writer.stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
    let (sent, acked) = tokio::task::spawn_blocking(move || writer.finish()).await??;
    delete_topic(&cluster.bootstrap_one(), topic).await?;
    Ok((rounds, sent, acked))
}

async fn failover_round(
    cluster: &mut Cluster,
    topic: &str,
    writer: &Writer,
    round: usize,
    stop: Stop,
) -> Result<Failover> {
    cluster.wait_full_isr(topic, 1, 3).await?;
    tokio::time::sleep(STEADY_BEFORE_KILL).await;
    let before = cluster
        .placement(topic, None)
        .await
        .context("no node knows the failover topic")?;
    let controller = cluster.controller().await;
    let killed = before.leader;
    anyhow::ensure!(
        killed > 0,
        "round {}: the partition has no leader",
        round + 1
    );
    let killed_at = Instant::now();
    match stop {
        Stop::Kill => cluster.node(killed).kill(),
        Stop::Term => cluster.node(killed).terminate(),
    }

    // The survivors' metadata names another leader, in a later epoch.
    let deadline = killed_at + FAILOVER_TIMEOUT;
    let (after, to_metadata) = loop {
        if let Some(p) = cluster.placement(topic, Some(killed)).await {
            if p.leader > 0 && p.leader != killed && p.leader_epoch > before.leader_epoch {
                break (p, killed_at.elapsed());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "round {}: no new leader within {FAILOVER_TIMEOUT:?} after node {killed} was killed",
                round + 1
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let new_addr = cluster.node(after.leader).kafka_addr.clone();
    let to_raw_ack = loop {
        if let Ok(0) = raw_acks_all(&new_addr, topic).await {
            break killed_at.elapsed();
        }
        if Instant::now() > deadline {
            bail!(
                "round {}: node {} leads, but refused acks=all writes for {FAILOVER_TIMEOUT:?}",
                round + 1,
                after.leader
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Where the new leader's epochs after the old one start: every write
    // it acknowledges lies there or later, every one the old leader
    // acknowledged before it.
    let new_epoch_start = loop {
        match epoch_end_offset(&new_addr, topic, after.leader_epoch, before.leader_epoch).await {
            Ok(offset) => break offset,
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!(
                    "round {}: asking node {} where its leader epoch starts",
                    round + 1,
                    after.leader
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let first_ack = loop {
        if let Some(at) = writer.acks.first_at_or_past(new_epoch_start, killed_at) {
            break at;
        }
        if Instant::now() > deadline {
            bail!(
                "round {}: node {} leads, but no write at offset {new_epoch_start} or later was acknowledged within {FAILOVER_TIMEOUT:?} of the kill",
                round + 1,
                after.leader
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let failover = Failover {
        stop,
        killed,
        killed_was_controller: controller == Some(killed),
        new_leader: after.leader,
        to_metadata,
        to_raw_ack,
        to_first_ack: first_ack.duration_since(killed_at),
    };
    // Back to three in-sync replicas before the next round.
    let node = cluster.node(killed);
    node.reap().await;
    node.spawn()?;
    node.wait_listening(SETTLE_TIMEOUT).await?;
    cluster.wait_all_live().await?;
    cluster.wait_full_isr(topic, 1, 3).await?;
    Ok(failover)
}

/// A follower stopped while data is written, then started again.
struct CatchUp {
    megabytes: f64,
    follower: i32,
    /// Start → the node accepts Kafka connections.
    to_listening: Duration,
    /// Start → its log holds as many bytes as the leader's.
    to_equal_log: Duration,
    /// Start → the leader's Metadata lists it in the ISR again.
    to_isr: Duration,
}

impl CatchUp {
    /// Megabytes per second from listening to a complete log.
    fn rate(&self) -> f64 {
        self.megabytes / (self.to_equal_log - self.to_listening).as_secs_f64()
    }
}

async fn catch_up(args: &ClusterArgs, cluster: &mut Cluster) -> Result<CatchUp> {
    let topic = "bench-catch-up";
    create_topic_replicated(
        &cluster.bootstrap_one(),
        topic,
        1,
        3,
        &[("min.insync.replicas", "1")],
    )
    .await?;
    cluster.wait_full_isr(topic, 1, 3).await?;
    let placement = cluster
        .placement(topic, None)
        .await
        .context("no node knows the catch-up topic")?;
    let leader = placement.leader;
    // A follower that is not the controller, so no quorum election adds to
    // what is measured.
    let controller = cluster.controller().await;
    let follower = placement
        .replicas
        .iter()
        .copied()
        .filter(|&r| r != leader)
        .min_by_key(|&r| Some(r) == controller)
        .context("the catch-up topic has no follower")?;
    eprintln!("  catch-up: stopping follower node {follower} (leader: node {leader})");
    cluster.node(follower).stop().await;

    let records = (args.catch_up_megabytes * 1_000_000 / args.record_bytes as u64).max(1000);
    let workload = Workload {
        record_bytes: args.record_bytes,
        partitions: 1,
        acks: 1,
        records,
        rate: None,
        linger_ms: 5,
        payload: None,
        sliding_payload: false,
        compression: "none",
    };
    produce_once(
        &cluster.bootstrap(),
        topic,
        &workload,
        "writing while a follower is down",
    )
    .await?;
    let leader_bytes = cluster.node(leader).log_bytes(topic, 0);
    let megabytes = (leader_bytes - cluster.node(follower).log_bytes(topic, 0)) as f64 / 1e6;

    let started = Instant::now();
    let node = cluster.node(follower);
    node.spawn()?;
    node.wait_listening(SETTLE_TIMEOUT).await?;
    let to_listening = started.elapsed();
    let leader_addr = cluster.node(leader).kafka_addr.clone();
    let deadline = started + SETTLE_TIMEOUT;
    let (mut to_equal_log, mut to_isr) = (None, None);
    while to_equal_log.is_none() || to_isr.is_none() {
        if to_equal_log.is_none() && cluster.node(follower).log_bytes(topic, 0) >= leader_bytes {
            to_equal_log = Some(started.elapsed());
        }
        if to_isr.is_none() {
            if let Ok(p) = placements(&leader_addr, topic).await {
                if p.first().is_some_and(|p| p.isr.contains(&follower)) && to_equal_log.is_some() {
                    to_isr = Some(started.elapsed());
                }
            }
        }
        cluster.node(follower).check_running()?;
        if Instant::now() > deadline {
            bail!("node {follower} did not catch up within {SETTLE_TIMEOUT:?} of its start");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    delete_topic(&cluster.bootstrap_one(), topic).await?;
    Ok(CatchUp {
        megabytes,
        follower,
        to_listening,
        to_equal_log: to_equal_log.unwrap_or_default(),
        to_isr: to_isr.unwrap_or_default(),
    })
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn median_duration(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub async fn run(args: ClusterArgs) -> Result<()> {
    anyhow::ensure!(args.record_bytes > 0, "--record-bytes must be positive");
    let dir = tempfile::tempdir().context("temp dir")?;
    eprintln!("machine: {}", machine());
    let mut extra = Vec::new();
    if let Some(ms) = args.broker_session_timeout_ms {
        extra.extend(["--broker-session-timeout-ms".to_string(), ms.to_string()]);
    }
    if let Some(ms) = args.replica_lag_time_max_ms {
        extra.extend(["--replica-lag-time-max-ms".to_string(), ms.to_string()]);
    }
    eprintln!(
        "starting a {NODES}-node cluster and a single node in {}",
        dir.path().display()
    );
    let started = Instant::now();
    let mut cluster = Cluster::start(&dir.path().join("cluster"), &extra).await?;
    let cluster_start = started.elapsed();
    eprintln!(
        "  cluster ready (every node registered and unfenced) in {:.1} s",
        cluster_start.as_secs_f64()
    );
    let single = if args.no_single_node {
        None
    } else {
        Some(ChildBroker::runnel(&dir.path().join("single"))?)
    };

    let rows = {
        let mut targets = Targets {
            single: single.as_ref(),
            cluster: &mut cluster,
        };
        produce_cases(&args, &mut targets).await?
    };
    drop(single);
    eprintln!("follower catch-up");
    let catch = catch_up(&args, &mut cluster).await?;
    eprintln!(
        "failover: {} leader SIGKILLs, {} leader SIGTERMs",
        args.failovers, args.graceful_failovers
    );
    let (rounds, sent, acked) = failovers(&args, &mut cluster).await?;

    let size = args.record_bytes;
    let partitions = args.partitions.max(1);
    println!(
        "Produce, {size} B records, {partitions} partition(s), {} MB per run, median of {} (librdkafka linger.ms=5; latency from send to delivery report, mostly queueing at full throughput):",
        args.megabytes,
        args.repeat.max(1)
    );
    println!();
    println!("| case | records/s | MB/s | p50 ms | p99 ms | vs first row | first write to a new topic ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let base = rows
        .throughput
        .first()
        .map(|(_, r, _)| r.mb_per_sec())
        .unwrap_or(1.0);
    for (case, r, first) in &rows.throughput {
        println!(
            "| {} | {:.0} | {:.0} | {} | {} | {:.0}% | {} |",
            case.label(),
            r.records_per_sec(),
            r.mb_per_sec(),
            ms(r.p50_us),
            ms(r.p99_us),
            100.0 * r.mb_per_sec() / base,
            ms(*first)
        );
    }
    println!();
    println!(
        "Latency at {} records/s offered for {} s (linger.ms=1):",
        args.latency_rate, args.latency_seconds
    );
    println!();
    println!("| case | p50 ms | p99 ms |");
    println!("|---|---:|---:|");
    for (case, r) in &rows.latency {
        println!("| {} | {} | {} |", case.label(), ms(r.p50_us), ms(r.p99_us));
    }
    println!();
    println!("Consume the acks=all topic of the last run from offset 0: raw Fetch requests to the partition leaders (record-batch bytes; the broker's read path) and a librdkafka consumer (payload bytes, including its start):");
    println!();
    println!("| topic written by | raw Fetch records/s | raw Fetch MB/s | librdkafka records/s | librdkafka MB/s |");
    println!("|---|---:|---:|---:|---:|");
    for (label, raw, rd) in &rows.consume {
        println!(
            "| {label} | {:.0} | {:.0} | {:.0} | {:.0} |",
            raw.records_per_sec(),
            raw.mb_per_sec(),
            rd.records_per_sec(),
            rd.mb_per_sec()
        );
    }
    println!();
    println!(
        "Follower catch-up: node {} stopped, {:.0} MB written to its partition (acks=1), node started again:",
        catch.follower, catch.megabytes
    );
    println!();
    println!("| start → listening s | start → log equal to the leader's s | start → back in the ISR s | catch-up MB/s (listening → log equal) |");
    println!("|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {} | {:.0} |",
        secs(catch.to_listening),
        secs(catch.to_equal_log),
        secs(catch.to_isr),
        catch.rate()
    );
    println!();
    println!(
        "Failover: an idempotent acks=all producer writes {FAILOVER_WRITES_PER_SEC} records/s to one RF 3 partition (min.insync.replicas=2) while its leader is stopped; {sent} records sent, {acked} acknowledged, none failed:"
    );
    println!();
    println!("| round | stop | stopped leader | new leader | stop → new leader in metadata ms | stop → raw acks=all write answered ms | stop → librdkafka's first acks=all write acknowledged ms |");
    println!("|---:|---|---|---:|---:|---:|---:|");
    for (i, f) in rounds.iter().enumerate() {
        println!(
            "| {} | {} | node {}{} | node {} | {} | {} | {} |",
            i + 1,
            f.stop.name(),
            f.killed,
            if f.killed_was_controller {
                " (controller)"
            } else {
                ""
            },
            f.new_leader,
            f.to_metadata.as_millis(),
            f.to_raw_ack.as_millis(),
            f.to_first_ack.as_millis()
        );
    }
    for stop in [Stop::Kill, Stop::Term] {
        let of = |f: &&Failover| f.stop == stop;
        let median_of = |d: fn(&Failover) -> Duration| {
            median_duration(rounds.iter().filter(of).map(d).collect()).as_millis()
        };
        if rounds.iter().any(|f| f.stop == stop) {
            println!(
                "| median | {} | | | {} | {} | {} |",
                stop.name(),
                median_of(|f| f.to_metadata),
                median_of(|f| f.to_raw_ack),
                median_of(|f| f.to_first_ack)
            );
        }
    }
    println!();
    println!(
        "Cluster start (3 nodes until each lists all as registered and unfenced): {:.1} s",
        cluster_start.as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_ends_at_the_first_acknowledgement_at_or_past_the_new_epoch() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let acked = vec![
            (at(0), 10),
            // The old leader's last answers, read after the kill.
            (at(5), 11),
            (at(6), 12),
            // A retried record the new leader recognised as a duplicate.
            (at(900), 12),
            (at(901), 13),
            (at(902), 14),
        ];
        let killed = at(4);
        assert_eq!(first_ack_at_or_past(&acked, 13, killed), Some(at(901)));
        assert_eq!(first_ack_at_or_past(&acked, 15, killed), None);
        // Acknowledgements before the kill never count.
        assert_eq!(first_ack_at_or_past(&acked, 10, killed), Some(at(5)));
    }

    #[test]
    fn cases_compare_the_single_node_with_rf_1_and_rf_3_in_the_cluster() {
        let labels: Vec<String> = cases(true).iter().map(Case::label).collect();
        assert_eq!(
            labels,
            vec![
                "single node, acks=1",
                "single node, acks=all",
                "3 nodes, RF 1, acks=1",
                "3 nodes, RF 3, acks=1",
                "3 nodes, RF 3, acks=all",
            ]
        );
        assert_eq!(cases(false).len(), 3);
        for c in cases(true) {
            let min_isr_set = !c.configs().is_empty();
            assert_eq!(c.replication == 3, min_isr_set, "{}", c.label());
        }
    }
}
