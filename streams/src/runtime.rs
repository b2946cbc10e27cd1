//! Running a topology against a Kafka cluster: [`KafkaStreams`].
//!
//! An instance is one consumer in the consumer group named by the
//! application id, one producer, and one processing thread that owns
//! the tasks of the partitions the group gave it. Instances of one
//! application share the input partitions; when one dies, the group
//! gives its partitions to the survivors, which restore the tasks'
//! stores from their changelog topics and go on from the committed
//! offsets.
//!
//! Processing guarantee: at-least-once. An input offset is committed only
//! after every record its processing wrote (outputs, repartition records,
//! changelog writes) is acknowledged by the brokers (`acks=all`). A crash
//! between the writes and the commit processes those inputs again: their
//! outputs may be written twice, and a store restored from a changelog
//! that already holds their writes counts them twice. The commit goes
//! through one seam, `commit`: exactly-once (a transactional producer
//! that adds the input offsets to its transaction) takes its place once
//! the brokers serve transactions; until then asking for it is refused
//! rather than faked.
//!
//! Global tables are not part of the group: before the stream thread
//! joins it, it reads every partition of each global table's topic into
//! the instance's global stores, then keeps them up to date before each
//! record (`global_updater.rs`).
//!
//! The consumer uses the `range` assignor, which gives partition `p` of
//! every input topic to the same instance when the topics have the same
//! number of partitions: the co-partitioning a join or a task with
//! several inputs needs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

mod global_updater;
mod standby;

use crate::processor::TaskMetrics;
use crate::store::{FjallEngine, MemoryEngine, StoreEngine, StoreSpec};
use crate::topology::{ErrorHandling, Input, Task, TaskId, Topology};

/// What can stop an application.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{what}: {error}")]
    Kafka { what: String, error: KafkaError },
    #[error("records could not be written: {0}")]
    Delivery(String),
    #[error("task {task}: {error}")]
    Processing {
        task: TaskId,
        error: crate::StreamsError,
    },
    #[error("{0}")]
    Topology(String),
    #[error("state store: {0}")]
    Store(String),
    /// A global table's record failed under [`ErrorHandling::Fail`].
    #[error("global table: {0}")]
    Global(crate::StreamsError),
}

pub(crate) fn kafka(what: impl Into<String>) -> impl FnOnce(KafkaError) -> RuntimeError {
    let what = what.into();
    move |error| RuntimeError::Kafka { what, error }
}

/// Processing guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessingGuarantee {
    #[default]
    AtLeastOnce,
    /// Kafka's `exactly_once_v2`: refused until the brokers serve
    /// transactions.
    ExactlyOnceV2,
}

/// An application's settings (Kafka Streams' names in the comments).
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// `application.id`: the consumer group, and the prefix of internal
    /// topics.
    pub application_id: String,
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// `commit.interval.ms`.
    pub commit_interval: Duration,
    /// `replication.factor` of internal topics (-1: the brokers'
    /// default).
    pub replication_factor: i32,
    pub processing_guarantee: ProcessingGuarantee,
    /// What a record that fails to deserialize or process does.
    pub on_error: ErrorHandling,
    /// Where records later than their window's grace are copied.
    pub late_records_topic: Option<String>,
    /// More librdkafka settings for the consumer and producer.
    pub client: BTreeMap<String, String>,
    /// Largest time one poll waits for records.
    pub poll_interval: Duration,
    /// `state.dir`: where stores live on disk, one directory per task
    /// (`<state_dir>/<application.id>/<task>/<store>`); `None` keeps them
    /// in memory (restored from the changelog on every start).
    pub state_dir: Option<std::path::PathBuf>,
    /// `application.server`: `host:port` where this instance serves
    /// interactive queries over HTTP (see [`crate::http`]), also how the
    /// other instances name it. `None`: no query server.
    pub application_server: Option<String>,
    /// `num.standby.replicas`: warm copies of each stateful task's
    /// stores kept on that many other instances (see the `standby`
    /// module).
    pub num_standby_replicas: usize,
}

impl StreamsConfig {
    pub fn new(application_id: &str, bootstrap_servers: &str) -> StreamsConfig {
        StreamsConfig {
            application_id: application_id.to_string(),
            bootstrap_servers: bootstrap_servers.to_string(),
            commit_interval: Duration::from_millis(1000),
            replication_factor: -1,
            processing_guarantee: ProcessingGuarantee::AtLeastOnce,
            on_error: ErrorHandling::LogAndContinue,
            late_records_topic: None,
            client: BTreeMap::new(),
            poll_interval: Duration::from_millis(100),
            state_dir: Some(std::env::temp_dir().join("runnel-streams")),
            application_server: None,
            num_standby_replicas: 0,
        }
    }

    fn validate(&self) -> Result<(), RuntimeError> {
        if self.application_id.is_empty()
            || !self
                .application_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(RuntimeError::Config(format!(
                "application.id {:?} must be non-empty ASCII letters, digits, '.', '_' or '-' (it names topics)",
                self.application_id
            )));
        }
        if self.processing_guarantee == ProcessingGuarantee::ExactlyOnceV2 {
            return Err(RuntimeError::Config(
                "exactly_once_v2 needs broker transactions (a transactional producer adding the input offsets to its transaction); use at_least_once".into(),
            ));
        }
        if let Some(server) = &self.application_server {
            let port = server.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            if !matches!(port, Some(Ok(p)) if p > 0) || server.contains('@') {
                return Err(RuntimeError::Config(format!(
                    "application.server {server:?} must be host:port with a port above 0 (other instances send queries there)"
                )));
            }
        }
        if self.commit_interval.is_zero() {
            return Err(RuntimeError::Config(
                "commit.interval.ms must be positive".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }
}

/// Counters of a running instance.
#[derive(Debug, Clone, Default)]
pub struct StreamsMetrics {
    /// Of every task this instance ran: the live ones and those closed
    /// (moved away by a rebalance) since it started.
    pub tasks: TaskMetrics,
    /// The part of `tasks` that closed tasks counted.
    pub closed_tasks: TaskMetrics,
    pub commits: u64,
    pub records_restored: u64,
    pub restore_time: Duration,
    /// Changelog records still to read by the restore under way.
    pub restore_remaining: u64,
    /// The tasks this instance keeps standby replicas of.
    pub standby_tasks: Vec<TaskId>,
    /// Changelog records applied to standby replicas.
    pub standby_records: u64,
    pub active_tasks: Vec<TaskId>,
    /// Records behind the end of each assigned input partition, as the
    /// consumer last reported (every second).
    pub consumer_lag: BTreeMap<(String, i32), i64>,
}

impl StreamsMetrics {
    /// The counters as Prometheus text, labelled with the application id.
    pub fn render_prometheus(&self, application_id: &str) -> String {
        let app = application_id.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            out.push_str(&format!(
                "# HELP runnel_streams_{name} {help}\n# TYPE runnel_streams_{name} {kind}\nrunnel_streams_{name}{{application=\"{app}\"}} {value}\n"
            ));
        };
        let t = &self.tasks;
        let rows: [(&str, &str, &str, String); 12] = [
            (
                "records_processed_total",
                "counter",
                "Input records processed.",
                t.records_processed.to_string(),
            ),
            (
                "late_records_dropped_total",
                "counter",
                "Records later than their window's grace, dropped.",
                t.late_records_dropped.to_string(),
            ),
            (
                "records_skipped_total",
                "counter",
                "Records skipped by null rules or invalid timestamps.",
                t.records_skipped.to_string(),
            ),
            (
                "records_failed_total",
                "counter",
                "Records that failed and went to the error handler.",
                t.records_failed.to_string(),
            ),
            (
                "punctuations_total",
                "counter",
                "Punctuator calls.",
                t.punctuations.to_string(),
            ),
            (
                "commits_total",
                "counter",
                "Offset commits.",
                self.commits.to_string(),
            ),
            (
                "records_restored_total",
                "counter",
                "Changelog records read into stores.",
                self.records_restored.to_string(),
            ),
            (
                "restore_seconds_total",
                "counter",
                "Time spent restoring stores.",
                format!("{:.3}", self.restore_time.as_secs_f64()),
            ),
            (
                "restore_remaining_records",
                "gauge",
                "Changelog records still to read by the restore under way.",
                self.restore_remaining.to_string(),
            ),
            (
                "active_tasks",
                "gauge",
                "Tasks this instance runs.",
                self.active_tasks.len().to_string(),
            ),
            (
                "standby_tasks",
                "gauge",
                "Tasks this instance keeps standby replicas of.",
                self.standby_tasks.len().to_string(),
            ),
            (
                "standby_records_total",
                "counter",
                "Changelog records applied to standby replicas.",
                self.standby_records.to_string(),
            ),
        ];
        for (name, kind, help, value) in rows {
            metric(name, kind, help, value);
        }
        out.push_str("# HELP runnel_streams_consumer_lag Records behind the end of an assigned input partition.\n# TYPE runnel_streams_consumer_lag gauge\n");
        for ((topic, partition), lag) in &self.consumer_lag {
            let topic = topic.replace('\\', "\\\\").replace('"', "\\\"");
            out.push_str(&format!(
                "runnel_streams_consumer_lag{{application=\"{app}\",topic=\"{topic}\",partition=\"{partition}\"}} {lag}\n"
            ));
        }
        out
    }
}

/// How often the stream thread publishes its counters.
const METRICS_INTERVAL: Duration = Duration::from_millis(50);

/// Offsets processed but not committed yet, and what a rebalance needs
/// to commit them.
#[derive(Default)]
struct Shared {
    /// Next offset to commit per input partition.
    /// By topic, then partition: the stream thread records a record
    /// without allocating (the topics stay as keys across commits).
    processed: Mutex<HashMap<String, HashMap<i32, i64>>>,
    /// Set by a rebalance: the processing thread rebuilds its tasks.
    reassigned: AtomicBool,
    /// Delivery failures since the last commit.
    failed: Mutex<Vec<String>>,
    /// The consumer's last reported lag per assigned partition.
    lag: Mutex<BTreeMap<(String, i32), i64>>,
}

struct Context {
    shared: Arc<Shared>,
    producer: Mutex<Option<ThreadedProducer<Delivery>>>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut lag = BTreeMap::new();
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                // -1 is librdkafka's unassigned partition; a lag of -1 is
                // not known yet.
                if partition >= 0 && p.consumer_lag >= 0 && p.fetch_state != "none" {
                    lag.insert((topic.clone(), partition), p.consumer_lag);
                }
            }
        }
        *self.shared.lag.lock().unwrap_or_else(|e| e.into_inner()) = lag;
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            // Commit what is processed before the partitions go, so their
            // next owner starts where this instance stopped.
            if let Some(producer) = self
                .producer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                if let Err(e) = commit(&self.shared, producer, consumer) {
                    tracing::warn!(error = %e, "committing before a rebalance failed; the next owner reprocesses from the last commit");
                }
            }
        }
        self.shared.reassigned.store(true, Ordering::Release);
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {
        self.shared.reassigned.store(true, Ordering::Release);
    }
}

/// The producer's delivery reports: failures are kept for the commit.
struct Delivery {
    shared: Arc<Shared>,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            self.shared
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{}-{}: {e}", m.topic(), m.partition()));
        }
    }
}

/// The commit seam: makes everything written so far durable, then
/// commits the input offsets. At-least-once: flush the producer
/// (`acks=all`), check no write failed, commit the offsets.
fn commit<C: ConsumerContext>(
    shared: &Shared,
    producer: &ThreadedProducer<Delivery>,
    consumer: &BaseConsumer<C>,
) -> Result<bool, RuntimeError> {
    producer
        .flush(Duration::from_secs(60))
        .map_err(kafka("waiting for written records to be acknowledged"))?;
    let failed = std::mem::take(&mut *shared.failed.lock().unwrap_or_else(|e| e.into_inner()));
    if !failed.is_empty() {
        return Err(RuntimeError::Delivery(failed.join("; ")));
    }
    let offsets: Vec<(String, i32, i64)> = shared
        .processed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter_mut()
        .flat_map(|(topic, partitions)| {
            partitions.drain().map(|(p, next)| (topic.clone(), p, next))
        })
        .collect();
    if offsets.is_empty() {
        return Ok(false);
    }
    let mut list = TopicPartitionList::new();
    for (topic, partition, next) in &offsets {
        list.add_partition_offset(topic, *partition, Offset::Offset(*next))
            .map_err(kafka("listing offsets to commit"))?;
    }
    if let Err(e) = consumer.commit(&list, CommitMode::Sync) {
        // Not committed: keep them for the next try (unless newer ones
        // were recorded meanwhile).
        let mut processed = shared.processed.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, partition, next) in offsets {
            processed
                .entry(topic)
                .or_default()
                .entry(partition)
                .or_insert(next);
        }
        return Err(RuntimeError::Kafka {
            what: "committing offsets".into(),
            error: e,
        });
    }
    Ok(true)
}

/// A running application instance.
pub struct KafkaStreams {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<(), RuntimeError>>>,
    metrics: Arc<Mutex<StreamsMetrics>>,
    /// The query server: its address, how to stop it, its thread.
    query: Option<QueryServer>,
}

struct QueryServer {
    addr: std::net::SocketAddr,
    shutdown: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl KafkaStreams {
    /// Creates the internal topics and starts processing on a thread of
    /// its own.
    pub fn start(topology: Topology, config: StreamsConfig) -> Result<KafkaStreams, RuntimeError> {
        config.validate()?;
        let partitions = prepare_topics(&topology, &config)?;
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(Mutex::new(StreamsMetrics::default()));
        let (query, jobs) = match &config.application_server {
            Some(server) => {
                let (server, jobs) =
                    start_query_server(&topology, &config, server, &partitions, &metrics)?;
                (Some(server), Some(jobs))
            }
            None => (None, None),
        };
        let (s, m) = (stop.clone(), metrics.clone());
        let thread = std::thread::Builder::new()
            .name(format!("{}-stream-thread", config.application_id))
            .spawn(move || {
                let outcome = run(topology, config, partitions, jobs, &s, &m);
                if let Err(e) = &outcome {
                    tracing::error!(error = %e, "stream thread stopped");
                }
                outcome
            })
            .map_err(|e| RuntimeError::Config(format!("starting the stream thread: {e}")))?;
        Ok(KafkaStreams {
            stop,
            thread: Some(thread),
            metrics,
            query,
        })
    }

    /// Where the query server listens, if this instance has one.
    pub fn query_addr(&self) -> Option<std::net::SocketAddr> {
        self.query.as_ref().map(|q| q.addr)
    }

    pub fn metrics(&self) -> StreamsMetrics {
        self.metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the stream thread is still running.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Commits what is processed, leaves the group and stops.
    pub fn close(mut self) -> Result<(), RuntimeError> {
        self.stop.store(true, Ordering::Release);
        if let Some(q) = self.query.take() {
            let _ = q.shutdown.send(());
            let _ = q.thread.join();
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(outcome)) => outcome,
            Some(Err(_)) => Err(RuntimeError::Topology("the stream thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for KafkaStreams {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(q) = self.query.take() {
            let _ = q.shutdown.send(());
        }
    }
}

/// Where queries wait for the stream thread, and the bell that wakes it.
type QueryQueue = (
    std::sync::mpsc::Receiver<crate::http::Job>,
    Arc<crate::http::Doorbell>,
);

/// Binds the query server's address and starts it; returns it and the
/// queue its queries reach the stream thread through.
fn start_query_server(
    topology: &Topology,
    config: &StreamsConfig,
    server: &str,
    partitions: &[i32],
    metrics: &Arc<Mutex<StreamsMetrics>>,
) -> Result<(QueryServer, QueryQueue), RuntimeError> {
    let listener = std::net::TcpListener::bind(server).map_err(|e| {
        RuntimeError::Config(format!(
            "application.server {server}: cannot listen there: {e}"
        ))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| RuntimeError::Config(format!("application.server {server}: {e}")))?;
    let (jobs, queue) = std::sync::mpsc::channel();
    let describer: BaseConsumer = config
        .client_config()
        .create()
        .map_err(kafka("creating a client to describe the group"))?;
    let app = config.application_id.clone();
    let membership: crate::http::Membership = Box::new(move || {
        let list = describer
            .fetch_group_list(Some(&app), Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for group in list.groups() {
            for m in group.members() {
                let partitions = match m.assignment() {
                    Some(a) => crate::query::assigned_partitions(a)?,
                    None => Vec::new(),
                };
                out.push(crate::query::Instance {
                    server: crate::query::server_of(m.client_id()),
                    member_id: m.id().to_string(),
                    client_host: m.client_host().to_string(),
                    partitions,
                });
            }
        }
        Ok(out)
    });
    let (m, app) = (metrics.clone(), config.application_id.clone());
    let service = crate::http::Service::new(
        config.application_id.clone(),
        Some(server.to_string()),
        topology.clone(),
        partitions.to_vec(),
        jobs,
        membership,
        Box::new(move || {
            m.lock()
                .unwrap_or_else(|e| e.into_inner())
                .render_prometheus(&app)
        }),
    );
    let bell = Arc::new(crate::http::Doorbell::default());
    let service = service.with_doorbell(bell.clone());
    let (shutdown, stopped) = tokio::sync::oneshot::channel();
    let thread = crate::http::spawn(listener, Arc::new(service), stopped)
        .map_err(|e| RuntimeError::Config(format!("starting the query server: {e}")))?;
    tracing::info!(%addr, "serving interactive queries");
    Ok((
        QueryServer {
            addr,
            shutdown,
            thread,
        },
        (queue, bell),
    ))
}

/// Partitions of each sub-topology (those of its input topics), after
/// creating the internal topics the application needs.
fn prepare_topics(topology: &Topology, config: &StreamsConfig) -> Result<Vec<i32>, RuntimeError> {
    let app = &config.application_id;
    let probe: BaseConsumer = config
        .client_config()
        .create()
        .map_err(kafka("creating a metadata client"))?;
    let mut known: HashMap<String, i32> = HashMap::new();
    for topic in topology.source_topics(app) {
        let md = probe
            .fetch_metadata(Some(&topic), Duration::from_secs(30))
            .map_err(kafka(format!("metadata of {topic}")))?;
        if let Some(t) = md.topics().first() {
            if t.error().is_none() && !t.partitions().is_empty() {
                known.insert(topic.clone(), t.partitions().len() as i32);
            }
        }
    }
    for topic in topology.global_stores().values() {
        let md = probe
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .map_err(kafka(format!("metadata of {topic}")))?;
        let exists = md
            .topics()
            .first()
            .is_some_and(|t| t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            return Err(RuntimeError::Topology(format!(
                "global table topic {topic} does not exist"
            )));
        }
    }
    let counts = topology
        .partition_counts(app, &known)
        .map_err(RuntimeError::Topology)?;
    let out = counts.subtopologies;
    let subs = topology.subtopologies();
    // Create repartition topics and changelogs (existing ones stay).
    let mut wanted: Vec<(String, i32, bool)> = counts
        .internal
        .into_iter()
        .map(|(name, p)| (name, p, false))
        .collect();
    for sub in subs {
        for store in &sub.stores {
            if topology.store_spec(store).is_some_and(|s| s.logged) {
                wanted.push((
                    crate::topology::changelog_topic(app, store),
                    out[sub.id],
                    true,
                ));
            }
        }
    }
    if !wanted.is_empty() {
        let admin: AdminClient<DefaultClientContext> = config
            .client_config()
            .create()
            .map_err(kafka("creating an admin client"))?;
        let topics: Vec<NewTopic<'_>> = wanted
            .iter()
            .map(|(name, partitions, compacted)| {
                let t = NewTopic::new(
                    name,
                    *partitions,
                    TopicReplication::Fixed(config.replication_factor),
                );
                if *compacted {
                    t.set("cleanup.policy", "compact")
                } else {
                    t
                }
            })
            .collect();
        let results =
            futures::executor::block_on(admin.create_topics(&topics, &AdminOptions::new()))
                .map_err(kafka("creating internal topics"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(RuntimeError::Topology(format!(
                        "creating internal topic {name}: {code}"
                    )))
                }
            }
        }
    }
    Ok(out)
}

/// Which task reads each input partition, by topic then partition (looked
/// up per record without allocating).
type Routes = HashMap<String, HashMap<i32, TaskId>>;

/// The stream thread.
fn run(
    topology: Topology,
    config: StreamsConfig,
    partitions: Vec<i32>,
    jobs: Option<QueryQueue>,
    stop: &AtomicBool,
    metrics: &Mutex<StreamsMetrics>,
) -> Result<(), RuntimeError> {
    let app = config.application_id.clone();
    let shared = Arc::new(Shared::default());
    // The consumer's client id. The query server rides in it (how the
    // other instances learn it); otherwise it is the user's or the app's,
    // made unique when standbys are placed (each instance finds itself
    // in the group's description by it).
    let me = match (&config.application_server, config.client.get("client.id")) {
        (None, Some(own)) if config.num_standby_replicas == 0 => own.clone(),
        (None, own) if config.num_standby_replicas > 0 => {
            let nonce = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            format!(
                "{}-{:x}-{:x}",
                own.map_or(app.as_str(), String::as_str),
                std::process::id(),
                nonce & 0xffff_ffff
            )
        }
        (server, _) => crate::query::client_id(&app, server.as_deref()),
    };
    let producer: ThreadedProducer<Delivery> = config
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        // Java's partitioner, so a repartition topic puts a key where a
        // Java client (or Kafka Streams) would.
        .set("partitioner", "murmur2_random")
        .create_with_context(Delivery {
            shared: shared.clone(),
        })
        .map_err(kafka("creating the producer"))?;
    let mut consumer: BaseConsumer<Context> = config
        .client_config()
        .set("group.id", &app)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range")
        .set("enable.partition.eof", "false")
        // The lag per partition, in the instance's metrics.
        .set("statistics.interval.ms", "1000")
        .set("client.id", &me)
        .create_with_context(Context {
            shared: shared.clone(),
            producer: Mutex::new(Some(producer.clone())),
        })
        .map_err(kafka("creating the consumer"))?;
    // With a query server, the thread waits for whichever comes first, a
    // record (or any consumer event) or a query, instead of in a poll.
    let bell = jobs.as_ref().map(|(_, bell)| bell.clone());
    if let Some(bell) = &bell {
        let b = bell.clone();
        consumer.set_nonempty_callback(move || b.ring());
    }
    let jobs = jobs.map(|(queue, _)| queue);
    let consumer = consumer;
    // Names the cluster in store checkpoints (a state directory reused
    // against another cluster is not trusted).
    let cluster = consumer
        .client()
        .fetch_cluster_id(Duration::from_secs(30))
        .ok_or_else(|| {
            RuntimeError::Config(format!(
                "no broker of {} answered",
                config.bootstrap_servers
            ))
        })?;
    // The global stores are whole before any task processes a record,
    // and before the group waits on this instance.
    let mut global = global_updater::GlobalUpdater::start(&topology, &config, &cluster, metrics)?;
    let topics = topology.source_topics(&app);
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    if !names.is_empty() {
        consumer.subscribe(&names).map_err(kafka("subscribing"))?;
    }

    let mut tasks: BTreeMap<TaskId, Task> = BTreeMap::new();
    // The state directory locks of the tasks with local stores.
    let mut locks: HashMap<TaskId, std::fs::File> = HashMap::new();
    // Which task reads each input partition.
    let mut routes: Routes = HashMap::new();
    let mut standbys = standby::Standbys::new(config.num_standby_replicas);
    let mut last_commit = Instant::now();
    let mut last_metrics = Instant::now();
    let outcome = loop {
        if stop.load(Ordering::Acquire) {
            break Ok(());
        }
        let polled = match &bell {
            None => consumer.poll(config.poll_interval),
            Some(bell) => match consumer.poll(Duration::ZERO) {
                Some(m) => Some(m),
                None => {
                    bell.wait(config.poll_interval);
                    consumer.poll(Duration::ZERO)
                }
            },
        };
        if shared.reassigned.swap(false, Ordering::AcqRel) {
            let assignment = consumer
                .assignment()
                .map_err(kafka("reading the assignment"))?;
            rebuild_tasks(
                &topology,
                &config,
                (&consumer, &cluster),
                &partitions,
                &assignment,
                (&mut tasks, &mut locks),
                (&mut routes, &global.stores),
                &mut standbys,
                metrics,
            )?;
            let active = tasks.keys().copied().collect();
            standbys.plan(
                &consumer,
                &me,
                &topology,
                &config,
                &partitions,
                &active,
                &cluster,
            )?;
        }
        // What the global topics received so far is in the stores before
        // the next record (and query) reads them.
        if let Err(e) = global.poll(&config.on_error) {
            break Err(e);
        }
        if let Some(jobs) = &jobs {
            crate::http::serve_jobs(&topology, jobs, tasks.values(), &global.stores);
        }
        if standbys.enabled() {
            if standbys.plan_due() {
                let active = tasks.keys().copied().collect();
                standbys.plan(
                    &consumer,
                    &me,
                    &topology,
                    &config,
                    &partitions,
                    &active,
                    &cluster,
                )?;
            }
            standbys.apply();
        }
        if let Some(message) = polled {
            let m = match message {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "consumer error");
                    continue;
                }
            };
            let route = routes.get(m.topic()).and_then(|p| p.get(&m.partition()));
            let Some(id) = route.copied() else {
                // Not ours any more (a rebalance is under way).
                continue;
            };
            let task = tasks.get_mut(&id).expect("routes name live tasks");
            let headers: Vec<(String, Option<Vec<u8>>)> = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default();
            let timestamp = m.timestamp().to_millis().unwrap_or(0);
            let input = Input {
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key(),
                value: m.payload(),
                timestamp,
                headers: &headers,
            };
            if let Err(error) = task.process(input, &config.on_error) {
                break Err(RuntimeError::Processing { task: id, error });
            }
            if let Some(e) = task.store_failure() {
                // Nothing processed since the last commit is committed.
                break Err(RuntimeError::Store(format!("task {id}: {e}")));
            }
            for out in task.take_outputs() {
                send(&producer, out)?;
            }
            let mut processed = shared.processed.lock().unwrap_or_else(|e| e.into_inner());
            match processed.get_mut(m.topic()) {
                Some(partitions) => {
                    partitions.insert(m.partition(), m.offset() + 1);
                }
                None => {
                    processed
                        .entry(m.topic().to_string())
                        .or_default()
                        .insert(m.partition(), m.offset() + 1);
                }
            }
        }
        // Wall-clock punctuators run between records, whether any came.
        let now_ms = wall_clock_ms();
        let mut failed = None;
        for (id, task) in tasks.iter_mut() {
            match task.punctuate_wall_clock(now_ms, &config.on_error) {
                Ok(0) => {}
                Ok(_) => {
                    if let Some(e) = task.store_failure() {
                        failed = Some(RuntimeError::Store(format!("task {id}: {e}")));
                        break;
                    }
                    for out in task.take_outputs() {
                        send(&producer, out)?;
                    }
                }
                Err(error) => {
                    failed = Some(RuntimeError::Processing { task: *id, error });
                    break;
                }
            }
        }
        if let Some(e) = failed {
            break Err(e);
        }
        if last_metrics.elapsed() >= METRICS_INTERVAL {
            update_metrics(metrics, &shared, &tasks, &standbys);
            last_metrics = Instant::now();
        }
        if last_commit.elapsed() >= config.commit_interval {
            if commit(&shared, &producer, &consumer)? {
                metrics.lock().unwrap_or_else(|e| e.into_inner()).commits += 1;
            }
            last_commit = Instant::now();
            update_metrics(metrics, &shared, &tasks, &standbys);
        }
    };
    // Leave cleanly: commit what was processed, checkpoint the stores,
    // then leave the group.
    if outcome.is_ok() {
        commit(&shared, &producer, &consumer)?;
        for (_, task) in std::mem::take(&mut tasks) {
            close_task(&config, &consumer, &cluster, task, &mut locks, metrics);
        }
        standbys.close_all(&config, &cluster);
        global.close(&cluster);
    }
    *consumer
        .context()
        .producer
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = None;
    consumer.unsubscribe();
    update_metrics(metrics, &shared, &tasks, &standbys);
    outcome
}

/// The machine's clock, milliseconds since the epoch (what wall-clock
/// punctuators follow).
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn update_metrics(
    metrics: &Mutex<StreamsMetrics>,
    shared: &Shared,
    tasks: &BTreeMap<TaskId, Task>,
    standbys: &standby::Standbys,
) {
    let lag = shared.lag.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut m = metrics.lock().unwrap_or_else(|e| e.into_inner());
    m.consumer_lag = lag;
    m.standby_tasks = standbys.task_ids();
    m.standby_records = standbys.applied;
    let mut sum = m.closed_tasks.clone();
    for t in tasks.values() {
        sum += t.metrics();
    }
    m.tasks = sum;
    m.active_tasks = tasks.keys().copied().collect();
}

fn send(
    producer: &ThreadedProducer<Delivery>,
    out: crate::processor::Output,
) -> Result<(), RuntimeError> {
    let mut headers = OwnedHeaders::new_with_capacity(out.headers.len());
    for (k, v) in &out.headers {
        headers = headers.insert(Header {
            key: k,
            value: v.as_deref(),
        });
    }
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&out.topic)
        .timestamp(out.timestamp)
        .headers(headers);
    if let Some(k) = out.key.as_deref() {
        record = record.key(k);
    }
    if let Some(v) = out.value.as_deref() {
        record = record.payload(v);
    }
    if let Some(p) = out.partition {
        record = record.partition(p);
    }
    let mut record = record;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                if Instant::now() < deadline =>
            {
                producer.poll(Duration::from_millis(10));
                record = r;
            }
            Err((e, _)) => return Err(kafka(format!("writing to {}", out.topic))(e)),
        }
    }
}

/// Makes the tasks of the current assignment: keeps those still
/// assigned, closes the others, restores new ones from their changelogs.
#[allow(clippy::too_many_arguments)] // the stream thread's state, passed apart
fn rebuild_tasks<C: ConsumerContext>(
    topology: &Topology,
    config: &StreamsConfig,
    (consumer, cluster): (&BaseConsumer<C>, &str),
    partitions: &[i32],
    assignment: &TopicPartitionList,
    (tasks, locks): (
        &mut BTreeMap<TaskId, Task>,
        &mut HashMap<TaskId, std::fs::File>,
    ),
    (routes, globals): (&mut Routes, &crate::global::GlobalStores),
    standbys: &mut standby::Standbys,
    metrics: &Mutex<StreamsMetrics>,
) -> Result<(), RuntimeError> {
    let app = &config.application_id;
    let assigned: BTreeSet<(String, i32)> = assignment
        .elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect();
    let mut wanted = BTreeSet::new();
    for sub in topology.subtopologies() {
        for p in 0..partitions[sub.id] {
            let sources: Vec<String> = sub.sources.iter().map(|t| t.resolve(app)).collect();
            let have = sources
                .iter()
                .filter(|t| assigned.contains(&((*t).clone(), p)))
                .count();
            if have == sources.len() {
                wanted.insert(TaskId {
                    subtopology: sub.id,
                    partition: p,
                });
            } else if have > 0 {
                tracing::warn!(
                    subtopology = sub.id,
                    partition = p,
                    "only some inputs of a task are assigned here: are its input topics co-partitioned (same partition count)?"
                );
            }
        }
    }
    let gone: Vec<TaskId> = tasks
        .keys()
        .filter(|id| !wanted.contains(id))
        .copied()
        .collect();
    for id in gone {
        if let Some(task) = tasks.remove(&id) {
            // Its inputs were committed before the partitions were revoked.
            close_task(config, consumer, cluster, task, locks, metrics);
        }
    }
    routes.clear();
    for id in &wanted {
        if !tasks.contains_key(id) {
            let started = Instant::now();
            let (mut task, checkpoints) = match standbys.take(config, *id) {
                Some(standby) => {
                    tracing::info!(task = %id, "a standby becomes active");
                    task_from_standby(topology, config, *id, standby, locks)?
                }
                None => open_task(topology, config, cluster, *id, locks)?,
            };
            task.set_late_records_topic(config.late_records_topic.clone());
            task.attach_global_stores(globals.handles());
            let restored = restore(config, &mut task, &checkpoints, metrics)?;
            // Its processors start with their first record or punctuation,
            // their wall-clock punctuators counting from now.
            task.set_wall_clock_ms(wall_clock_ms());
            let mut m = metrics.lock().unwrap_or_else(|e| e.into_inner());
            m.records_restored += restored;
            m.restore_time += started.elapsed();
            tracing::info!(task = %id, records = restored, took = ?started.elapsed(), "task restored");
            tasks.insert(*id, task);
        }
        for topic in tasks[id].source_topics() {
            routes
                .entry(topic.to_string())
                .or_default()
                .insert(id.partition, *id);
        }
    }
    metrics
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .active_tasks = tasks.keys().copied().collect();
    Ok(())
}

/// Reads each store's changelog partition to its end into the store.
fn restore(
    config: &StreamsConfig,
    task: &mut Task,
    checkpoints: &HashMap<String, i64>,
    metrics: &Mutex<StreamsMetrics>,
) -> Result<u64, RuntimeError> {
    let remaining = |n: i64| {
        metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .restore_remaining = n.max(0) as u64;
    };
    let stores: Vec<String> = task.store_names().map(str::to_string).collect();
    let mut total = 0;
    for store in stores {
        if !task.store(&store).is_some_and(|s| s.spec.logged) {
            continue;
        }
        let topic = crate::topology::changelog_topic(&config.application_id, &store);
        let partition = task.id.partition;
        let consumer: BaseConsumer = config
            .client_config()
            // librdkafka wants a group even for assigned partitions; this
            // one never joins or commits.
            .set("group.id", format!("{}-restore", config.application_id))
            .set("enable.auto.commit", "false")
            // The end is the high watermark read below (a partition-EOF
            // event would also be logged as a client error).
            .set("enable.partition.eof", "false")
            .set("fetch.max.bytes", "52428800")
            .set("max.partition.fetch.bytes", "16777216")
            .set("queued.min.messages", "1000000")
            .create()
            .map_err(kafka("creating a restore consumer"))?;
        let (low, high) = consumer
            .fetch_watermarks(&topic, partition, Duration::from_secs(30))
            .map_err(kafka(format!("the offsets of {topic}-{partition}")))?;
        let low = checkpoints.get(&store).map_or(low, |c| (*c).max(low));
        if high <= low {
            continue;
        }
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&topic, partition, Offset::Offset(low))
            .map_err(kafka("assigning a changelog"))?;
        consumer
            .assign(&list)
            .map_err(kafka("assigning a changelog"))?;
        let target = task.store_mut(&store).expect("listed above");
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut batch = Vec::with_capacity(RESTORE_BATCH);
        let mut next = low;
        while next < high {
            if Instant::now() > deadline {
                return Err(RuntimeError::Topology(format!(
                    "restoring {store} from {topic}-{partition} stalled at offset {next} of {high}"
                )));
            }
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    if let Some(k) = m.key() {
                        batch.push((k.to_vec(), m.payload().map(<[u8]>::to_vec)));
                        total += 1;
                        if batch.len() >= RESTORE_BATCH {
                            target.restore_batch(&batch);
                            batch.clear();
                            remaining(high - m.offset() - 1);
                        }
                    }
                    next = m.offset() + 1;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => tracing::warn!(error = %e, "restoring {store}"),
                None => {
                    // Offsets up to the high watermark may hold no record
                    // (compacted away): the fetch position tells.
                    let past_end = consumer.position().ok().is_some_and(|p| {
                        p.elements().iter().any(|e| match e.offset() {
                            Offset::Offset(o) => o >= high,
                            _ => false,
                        })
                    });
                    if past_end {
                        break;
                    }
                }
            }
        }
        target.restore_batch(&batch);
        remaining(0);
    }
    Ok(total)
}

/// Changelog records applied to a store at once while restoring.
pub(crate) const RESTORE_BATCH: usize = 10_000;

/// A task with its stores: on disk under `state_dir` when its directory
/// lock is free (another instance on this machine may hold it for a
/// moment during a handover; then in memory), in memory otherwise.
/// Returns the changelog offsets each store is known to hold up to
/// (from a clean close's checkpoint); a store without one is emptied,
/// to be rebuilt from its changelog.
fn open_task(
    topology: &Topology,
    config: &StreamsConfig,
    cluster: &str,
    id: TaskId,
    locks: &mut HashMap<TaskId, std::fs::File>,
) -> Result<(Task, HashMap<String, i64>), RuntimeError> {
    let app = &config.application_id;
    let memory = |_: &StoreSpec| Box::<MemoryEngine>::default() as Box<dyn StoreEngine>;
    let Some(dir) = task_dir(config, id) else {
        return Ok((
            topology.task(app, id.subtopology, id.partition, memory),
            HashMap::new(),
        ));
    };
    let io = |what: &str, e: std::io::Error| {
        RuntimeError::Store(format!("{what} {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(&dir).map_err(|e| io("creating", e))?;
    let lock = std::fs::File::create(dir.join(".lock")).map_err(|e| io("locking", e))?;
    if lock.try_lock().is_err() {
        tracing::warn!(task = %id, dir = %dir.display(), "the task's state directory is locked by another instance; its stores stay in memory");
        return Ok((
            topology.task(app, id.subtopology, id.partition, memory),
            HashMap::new(),
        ));
    }
    let mut failed = None;
    let mut task =
        topology.task(
            app,
            id.subtopology,
            id.partition,
            |spec: &StoreSpec| match FjallEngine::open(&dir.join(&spec.name)) {
                Ok(e) => Box::new(e) as Box<dyn StoreEngine>,
                Err(e) => {
                    failed.get_or_insert(e);
                    Box::<MemoryEngine>::default()
                }
            },
        );
    if let Some(e) = failed {
        return Err(RuntimeError::Store(format!(
            "opening the stores of task {id}: {e}"
        )));
    }
    let mut checkpoints = HashMap::new();
    let names: Vec<String> = task.store_names().map(str::to_string).collect();
    for name in names {
        let offset = take_checkpoint(&dir, &name, cluster);
        let store = task.store_mut(&name).expect("listed above");
        match offset {
            Some(o) if store.spec.logged => {
                checkpoints.insert(name, o);
            }
            _ => store
                .clear()
                .map_err(|e| RuntimeError::Store(format!("emptying {name} of task {id}: {e}")))?,
        }
    }
    locks.insert(id, lock);
    Ok((task, checkpoints))
}

/// The changelog offset a store's checkpoint file says it holds up to,
/// if it names this cluster; the file is removed (trusted once: from now
/// on the store changes without a checkpoint until the next clean close
/// writes one).
pub(crate) fn take_checkpoint(dir: &std::path::Path, store: &str, cluster: &str) -> Option<i64> {
    let file = dir.join(format!("{store}.checkpoint"));
    // `<cluster id> <offset>`: a checkpoint of another cluster's
    // changelog (a state directory reused against a new cluster) means
    // nothing here.
    let offset = std::fs::read_to_string(&file).ok().and_then(|s| {
        let (c, o) = s.trim().split_once(' ')?;
        (c == cluster).then(|| o.parse::<i64>().ok()).flatten()
    });
    let _ = std::fs::remove_file(&file);
    offset
}

/// Records that `store` holds its changelog up to `offset`.
pub(crate) fn write_checkpoint(dir: &std::path::Path, store: &str, cluster: &str, offset: i64) {
    let file = dir.join(format!("{store}.checkpoint"));
    if let Err(e) = std::fs::write(&file, format!("{cluster} {offset}\n")) {
        tracing::warn!(file = %file.display(), error = %e, "writing a checkpoint failed");
    }
}

/// A task made from a standby's stores (becoming active here): its
/// logged stores are the standby's, at the offsets it holds up to; the
/// others start empty.
fn task_from_standby(
    topology: &Topology,
    config: &StreamsConfig,
    id: TaskId,
    mut standby: standby::Standby,
    locks: &mut HashMap<TaskId, std::fs::File>,
) -> Result<(Task, HashMap<String, i64>), RuntimeError> {
    let dir = task_dir(config, id);
    let mut failed = None;
    let task = topology.task(
        &config.application_id,
        id.subtopology,
        id.partition,
        |spec: &StoreSpec| {
            if let Some(engine) = standby.engines.remove(&spec.name) {
                return engine;
            }
            let Some(dir) = &dir else {
                return Box::<MemoryEngine>::default() as Box<dyn StoreEngine>;
            };
            // An unlogged store: empty, as after any move.
            match FjallEngine::open(&dir.join(&spec.name)).and_then(|mut e| {
                e.clear()?;
                Ok(e)
            }) {
                Ok(e) => Box::new(e) as Box<dyn StoreEngine>,
                Err(e) => {
                    failed.get_or_insert(e);
                    Box::<MemoryEngine>::default()
                }
            }
        },
    );
    if let Some(e) = failed {
        return Err(RuntimeError::Store(format!(
            "opening the stores of task {id}: {e}"
        )));
    }
    if let Some(lock) = standby.lock.take() {
        locks.insert(id, lock);
    }
    Ok((task, standby.offsets))
}

pub(crate) fn task_dir(config: &StreamsConfig, id: TaskId) -> Option<std::path::PathBuf> {
    config
        .state_dir
        .as_ref()
        .map(|d| d.join(&config.application_id).join(id.to_string()))
}

/// Closes a task whose inputs are committed: its stores are made durable
/// and checkpointed at their changelogs' ends, so the next owner on this
/// machine restores only what was written after.
fn close_task<C: ConsumerContext>(
    config: &StreamsConfig,
    consumer: &BaseConsumer<C>,
    cluster: &str,
    mut task: Task,
    locks: &mut HashMap<TaskId, std::fs::File>,
    metrics: &Mutex<StreamsMetrics>,
) {
    let id = task.id;
    metrics
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .closed_tasks += task.metrics();
    let Some(lock) = locks.remove(&id) else {
        return;
    };
    let Some(dir) = task_dir(config, id) else {
        return;
    };
    let names: Vec<String> = task.store_names().map(str::to_string).collect();
    for name in names {
        let store = task.store_mut(&name).expect("listed above");
        if !store.spec.logged || store.failure().is_some() {
            continue;
        }
        if let Err(e) = store.flush() {
            tracing::warn!(task = %id, store = %name, error = %e, "flushing a store failed; it is rebuilt from its changelog next time");
            continue;
        }
        let topic = crate::topology::changelog_topic(&config.application_id, &name);
        match consumer.fetch_watermarks(&topic, id.partition, Duration::from_secs(10)) {
            Ok((_, high)) => write_checkpoint(&dir, &name, cluster, high),
            Err(e) => {
                tracing::warn!(task = %id, store = %name, error = %e, "no checkpoint: the changelog's end is unknown")
            }
        }
    }
    // The stores close before another instance may take the lock.
    drop(task);
    drop(lock);
}

#[cfg(test)]
mod metrics_docs_tests {
    use super::StreamsMetrics;

    const METRICS_MD: &str = include_str!("../../docs/metrics.md");

    /// docs/metrics.md's `## Streams` table names exactly the families an
    /// instance's `/metrics` renders.
    #[test]
    fn docs_metrics_md_names_every_streams_metric_and_no_other() {
        let mut metrics = StreamsMetrics::default();
        metrics.consumer_lag.insert(("in".to_string(), 0), 3);
        let page = metrics.render_prometheus("app");
        let exported: std::collections::BTreeSet<&str> = page
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let start = METRICS_MD.find("\n## Streams\n").expect("## Streams");
        let section = &METRICS_MD[start + 1..];
        let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
        let documented: std::collections::BTreeSet<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .filter(|n| n.starts_with("runnel_streams_"))
            .collect();
        assert!(exported.len() >= 10, "{page}");
        assert_eq!(
            exported, documented,
            "exported vs docs/metrics.md ## Streams"
        );
    }
}
