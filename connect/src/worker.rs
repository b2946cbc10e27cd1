//! The worker: runs connectors' tasks, moves their records through Kafka,
//! commits their progress, and keeps configs and status in the internal
//! topics.
//!
//! Delivery is at-least-once. A source task's offsets are committed only
//! after every record before them is acknowledged by the broker
//! (`acks=all`); a sink task's consumer offsets only after the sink's
//! `flush` made the records durable. A worker killed at any moment starts
//! again from the last committed positions: nothing acknowledged is lost,
//! and what ran after the last commit runs again.

use std::collections::HashSet;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, FutureProducer, FutureRecord, ProducerContext, ThreadedProducer,
};
use rdkafka::ClientContext;
use rdkafka::{Message, Offset, TopicPartitionList};
use runnel_tail::Tail;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::cluster::{self, Membership, Unit, READER_GROUP};
use crate::config::{self, Validation};
use crate::connectors;
use crate::converter;
use crate::metrics::{self, ConnectorCounters, LogLimit};
use crate::pipeline::transform::{Chain, Record};
use crate::plugin::{
    ConnectError, ConnectResult, ConnectorKind, ConnectorPlugin, Fate, Props, SourceTask, Stage,
};
use crate::record::{SinkRecord, SourcePartition};
use crate::store::{self, KeyValue, OffsetStore, Topics};

/// How a worker reaches Kafka and where it keeps its state.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub bootstrap: String,
    /// Prefix of sink consumer groups (`connect-<name>`, as Kafka Connect).
    pub topics: Topics,
    /// Shown in statuses (`host:port` of the REST API).
    pub worker_id: String,
    /// Extra librdkafka properties for every client.
    pub properties: Vec<(String, String)>,
    /// How often source offsets and sink positions are committed.
    pub commit_interval: Duration,
    /// Workers with the same group id share the connectors' tasks (Kafka
    /// Connect's `group.id`).
    pub group_id: String,
    /// How long a silent worker stays in the group before its tasks move.
    pub session_timeout: Duration,
}

impl WorkerConfig {
    pub fn new(bootstrap: impl Into<String>) -> WorkerConfig {
        WorkerConfig {
            bootstrap: bootstrap.into(),
            topics: Topics::default(),
            worker_id: "runnel-connect".into(),
            properties: Vec::new(),
            commit_interval: Duration::from_millis(1000),
            group_id: "connect-cluster".into(),
            session_timeout: Duration::from_secs(10),
        }
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("socket.nagle.disable", "true");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// What a connector should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    Started,
    Paused,
    Stopped,
}

impl TargetState {
    fn as_str(self) -> &'static str {
        match self {
            TargetState::Started => "STARTED",
            TargetState::Paused => "PAUSED",
            TargetState::Stopped => "STOPPED",
        }
    }

    fn parse(s: &str) -> TargetState {
        match s {
            "PAUSED" => TargetState::Paused,
            "STOPPED" => TargetState::Stopped,
            _ => TargetState::Started,
        }
    }
}

/// A connector's or task's state as Kafka Connect reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Unassigned,
    Running,
    Paused,
    Stopped,
    Failed(String),
}

impl RunState {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunState::Unassigned => "UNASSIGNED",
            RunState::Running => "RUNNING",
            RunState::Paused => "PAUSED",
            RunState::Stopped => "STOPPED",
            RunState::Failed(_) => "FAILED",
        }
    }

    /// The state a `connect-status` record names.
    fn parse(state: &str, trace: &str) -> RunState {
        match state {
            "RUNNING" => RunState::Running,
            "PAUSED" => RunState::Paused,
            "STOPPED" => RunState::Stopped,
            "FAILED" => RunState::Failed(trace.to_string()),
            _ => RunState::Unassigned,
        }
    }

    pub fn trace(&self) -> Option<&str> {
        match self {
            RunState::Failed(t) => Some(t),
            _ => None,
        }
    }
}

/// Why a request to the worker failed (mapped to HTTP by the REST API).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WorkerError {
    #[error("Connector {0} not found")]
    NotFound(String),
    #[error("Connector {0} already exists")]
    Exists(String),
    #[error("Task {1} of connector {0} not found")]
    TaskNotFound(String, usize),
    #[error("Connector configuration is invalid and contains the following {} error(s):\n{}", .0.len(), .0.join("\n"))]
    Invalid(Vec<String>),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Kafka(String),
}

impl From<ConnectError> for WorkerError {
    fn from(e: ConnectError) -> Self {
        WorkerError::Kafka(e.message)
    }
}

struct Task {
    state: Arc<Mutex<RunState>>,
    target: watch::Sender<TargetState>,
    /// Set when the task stops because it moved to another worker: its
    /// last state is then not recorded (the new owner records its own).
    quiet: Arc<AtomicBool>,
    join: tokio::task::JoinHandle<()>,
}

/// A connector as the cluster's configs describe it, and what this worker
/// runs of it.
struct Connector {
    config: Props,
    plugin: Option<Arc<dyn ConnectorPlugin>>,
    target: TargetState,
    /// Running, or Failed when its config cannot make tasks.
    state: RunState,
    task_configs: Vec<Props>,
    /// Whether this worker reports the connector's own status.
    owned: bool,
    /// The tasks this worker runs, by id.
    tasks: BTreeMap<usize, Task>,
}

/// The cluster's connectors as `connect-configs` says, latest record per
/// key.
#[derive(Default)]
struct Configs {
    connectors: BTreeMap<String, Props>,
    targets: HashMap<String, TargetState>,
    /// Restart requests read after start-up: (connector, task or all).
    restarts: Vec<(String, Option<usize>)>,
    loaded: bool,
}

impl Configs {
    fn apply(&mut self, (key, value): KeyValue) {
        let key = String::from_utf8_lossy(&key).into_owned();
        let value: Option<Value> = value.and_then(|v| serde_json::from_slice(&v).ok());
        if let Some(name) = key.strip_prefix("connector-") {
            match value.and_then(|v| serde_json::from_value::<Props>(v["properties"].clone()).ok())
            {
                Some(props) => {
                    self.connectors.insert(name.to_string(), props);
                }
                None => {
                    self.connectors.remove(name);
                }
            }
        } else if let Some(name) = key.strip_prefix("target-state-") {
            match value.as_ref().and_then(|v| v["state"].as_str()) {
                Some(s) => {
                    self.targets.insert(name.to_string(), TargetState::parse(s));
                }
                None => {
                    self.targets.remove(name);
                }
            }
        } else if self.loaded {
            // Restart requests are acted on once, by every worker running
            // at the time (the one that asked included).
            if let Some(name) = key.strip_prefix("restart-connector-") {
                self.restarts.push((name.to_string(), None));
            } else if let Some(rest) = key.strip_prefix("restart-task-") {
                if let Some((name, id)) = rest.rsplit_once('-') {
                    if let Ok(id) = id.parse() {
                        self.restarts.push((name.to_string(), Some(id)));
                    }
                }
            }
        }
    }
}

/// A connector's or task's state and the worker that reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitStatus {
    pub state: RunState,
    pub worker_id: String,
}

/// A connect worker.
pub struct Worker {
    config: WorkerConfig,
    plugins: Vec<Arc<dyn ConnectorPlugin>>,
    producer: FutureProducer,
    records: ThreadedProducer<AckContext>,
    offsets: Arc<OffsetStore>,
    configs: Arc<Mutex<Configs>>,
    config_tail: Tail,
    /// The latest `connect-status` record per key: (state, worker).
    statuses: Arc<Mutex<HashMap<String, UnitStatus>>>,
    _status_tail: Tail,
    membership: Membership,
    /// Every connector of the cluster, with what runs here.
    connectors: tokio::sync::Mutex<BTreeMap<String, Connector>>,
    /// One reconciliation at a time.
    reconciling: tokio::sync::Mutex<()>,
    /// Woken when the configs change.
    wake: Arc<Notify>,
    background: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Transform chains of pipelines, by connector name.
    chains: Mutex<HashMap<String, Arc<Chain>>>,
    /// The config (a hash) whose warnings were logged, by connector.
    warned: Mutex<HashMap<String, u64>>,
}

/// Awaits `$op` (an expression making a fresh future each time), retrying
/// retriable failures as `$policy` says; gives up early when `$target`
/// says stop.
macro_rules! retry {
    ($policy:expr, $target:expr, $op:expr) => {{
        // The retry timeout counts from the first failure (no clock read
        // on the per-record path when the first try succeeds).
        let mut started: Option<Instant> = None;
        let mut delay = Duration::from_millis(300);
        loop {
            match $op.await {
                Ok(v) => break Ok(v),
                Err(e)
                    if e.retriable
                        && $policy.may_retry(
                            *started.get_or_insert_with(Instant::now),
                            delay,
                            &$target,
                        ) =>
                {
                    warn!(error = %e.message, wait_ms = delay.as_millis() as u64, "retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = $target.changed() => {}
                    }
                    delay = $policy.next_delay(delay);
                }
                Err(e) => break Err(e),
            }
        }
    }};
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Worker {
    /// Connects, creates the internal topics if needed, reads them, joins
    /// the workers' group and runs its share of the connectors they
    /// describe.
    pub async fn start(
        config: WorkerConfig,
        plugins: Vec<Arc<dyn ConnectorPlugin>>,
    ) -> ConnectResult<Arc<Worker>> {
        Self::start_with_transforms(config, plugins, HashMap::new()).await
    }

    /// As [`Worker::start`], with pipelines' transform chains attached to
    /// their connectors from the start.
    pub async fn start_with_transforms(
        config: WorkerConfig,
        plugins: Vec<Arc<dyn ConnectorPlugin>>,
        chains: HashMap<String, Chain>,
    ) -> ConnectResult<Arc<Worker>> {
        let client = config.client();
        store::ensure_topics(&client, &config.topics).await?;
        let producer: FutureProducer = client
            .clone()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .map_err(|e| ConnectError::retriable(format!("creating the producer: {e}")))?;
        // Sources' records go through a producer that counts a batch's
        // acknowledgements instead of making a future per record.
        let records: ThreadedProducer<AckContext> = client
            .clone()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create_with_context(AckContext)
            .map_err(|e| ConnectError::retriable(format!("creating the producer: {e}")))?;
        let offsets =
            OffsetStore::follow(&client, producer.clone(), &config.topics.offsets).await?;
        let wake = Arc::new(Notify::new());
        let configs = Arc::new(Mutex::new(Configs::default()));
        let config_tail = {
            let (configs, wake) = (configs.clone(), wake.clone());
            Tail::start(&client, READER_GROUP, &config.topics.configs, move |kv| {
                lock(&configs).apply(kv);
                wake.notify_one();
            })
            .await?
        };
        lock(&configs).loaded = true;
        let statuses = Arc::new(Mutex::new(HashMap::new()));
        let status_tail = {
            let statuses = statuses.clone();
            Tail::start(
                &client,
                READER_GROUP,
                &config.topics.status,
                move |(key, value)| {
                    let key = String::from_utf8_lossy(&key).into_owned();
                    let value: Option<Value> = value.and_then(|v| serde_json::from_slice(&v).ok());
                    let mut statuses = lock(&statuses);
                    match value {
                        Some(v) => {
                            let state = RunState::parse(
                                v["state"].as_str().unwrap_or_default(),
                                v["trace"].as_str().unwrap_or_default(),
                            );
                            let worker_id = v["worker_id"].as_str().unwrap_or_default().to_string();
                            statuses.insert(key, UnitStatus { state, worker_id });
                        }
                        None => {
                            statuses.remove(&key);
                        }
                    }
                },
            )
            .await?
        };
        let membership = Membership::join(
            &client,
            &config.group_id,
            &config.worker_id,
            &config.topics.configs,
            config.session_timeout,
        )?;
        let worker = Arc::new(Worker {
            config,
            plugins,
            producer,
            records,
            offsets: Arc::new(offsets),
            configs,
            config_tail,
            statuses,
            _status_tail: status_tail,
            membership,
            connectors: tokio::sync::Mutex::new(BTreeMap::new()),
            reconciling: tokio::sync::Mutex::new(()),
            wake,
            background: Mutex::new(None),
            chains: Mutex::new(chains.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()),
            warned: Mutex::new(HashMap::new()),
        });
        // Reconciles on every config change and rebalance, and every few
        // seconds in case a group description came while it was unstable.
        let weak = Arc::downgrade(&worker);
        let (wake, changed) = (worker.wake.clone(), worker.membership.changed.clone());
        let background = tokio::spawn(async move {
            loop {
                let Some(worker) = weak.upgrade() else { break };
                let joined = worker.reconcile().await;
                drop(worker);
                let idle = if joined {
                    Duration::from_secs(3)
                } else {
                    Duration::from_millis(500)
                };
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = changed.notified() => {}
                    _ = tokio::time::sleep(idle) => {}
                }
            }
        });
        *lock(&worker.background) = Some(background);
        info!(
            bootstrap = %worker.config.bootstrap,
            group = %worker.config.group_id,
            member = %worker.membership.me(),
            "connect worker started"
        );
        Ok(worker)
    }

    /// Attaches a pipeline's transforms to the connector `name` (before
    /// it is created).
    pub fn set_transforms(&self, name: &str, chain: Chain) {
        lock(&self.chains).insert(name.to_string(), Arc::new(chain));
    }

    fn transforms(&self, name: &str) -> Option<Arc<Chain>> {
        lock(&self.chains)
            .get(name)
            .filter(|c| !c.is_empty())
            .cloned()
    }

    pub fn plugins(&self) -> &[Arc<dyn ConnectorPlugin>] {
        &self.plugins
    }

    pub fn worker_id(&self) -> &str {
        &self.config.worker_id
    }

    pub fn validate(&self, config: &Props) -> Validation {
        config::validate(&self.plugins, config)
    }

    /// Writes a `connect-configs` record, waits until this worker has read
    /// it back, and acts on it.
    async fn write_config(
        self: &Arc<Self>,
        key: &str,
        value: Option<Value>,
    ) -> Result<(), WorkerError> {
        let bytes = value.map(|v| serde_json::to_vec(&v).unwrap_or_default());
        let (partition, offset) = store::write(
            &self.producer,
            &self.config.topics.configs,
            key.as_bytes(),
            bytes.as_deref(),
        )
        .await?;
        self.config_tail
            .wait_applied(partition, offset)
            .await
            .map_err(ConnectError::from)?;
        Ok(())
    }

    async fn write_status(&self, key: &str, state: &RunState) {
        let value = json!({
            "state": state.as_str(),
            "trace": state.trace(),
            "worker_id": self.config.worker_id,
            "generation": 0,
        });
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        if let Err(e) = store::write(
            &self.producer,
            &self.config.topics.status,
            key.as_bytes(),
            Some(&bytes),
        )
        .await
        {
            warn!(key, error = %e, "could not record a status");
        }
    }

    /// A connector's plugin, state (Failed when its config cannot make
    /// tasks) and task configs.
    fn layout(&self, config: &Props) -> (Option<Arc<dyn ConnectorPlugin>>, RunState, Vec<Props>) {
        let validation = self.validate(config);
        let Some(plugin) = validation.plugin.clone() else {
            return (
                None,
                RunState::Failed(validation.problems().join("\n")),
                Vec::new(),
            );
        };
        let max_tasks = config::get(config, "tasks.max", "1")
            .parse::<usize>()
            .unwrap_or(1);
        match plugin.task_configs(config, max_tasks.clamp(1, config::MAX_TASKS)) {
            Err(e) => (Some(plugin), RunState::Failed(e.message), Vec::new()),
            Ok(task_configs) => {
                let task_configs = task_configs
                    .into_iter()
                    .map(|mut task_config| {
                        // Task configs inherit the connector's common settings.
                        for (k, v) in config {
                            task_config.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                        task_config
                    })
                    .collect();
                (Some(plugin), RunState::Running, task_configs)
            }
        }
    }

    /// Makes what this worker runs match the configs and its share of the
    /// assignment. Returns whether the worker is in the group yet.
    async fn reconcile(self: &Arc<Self>) -> bool {
        let _one = self.reconciling.lock().await;
        let (wanted, targets, restarts) = {
            let mut c = lock(&self.configs);
            (
                c.connectors.clone(),
                c.targets.clone(),
                std::mem::take(&mut c.restarts),
            )
        };
        let members = self.membership.members().await;
        let mut plans = BTreeMap::new();
        for (name, config) in wanted {
            let target = targets.get(&name).copied().unwrap_or(TargetState::Started);
            let (plugin, state, task_configs) = self.layout(&config);
            plans.insert(name, (config, plugin, state, task_configs, target));
        }
        let mine: Option<HashSet<Unit>> = members.as_ref().map(|members| {
            let counts: Vec<(String, usize)> =
                plans.iter().map(|(n, p)| (n.clone(), p.3.len())).collect();
            let me = members.iter().position(|m| m == self.membership.me());
            cluster::assign(&counts, members)
                .into_iter()
                .filter(|(_, owner)| Some(*owner) == me)
                .map(|(unit, _)| unit)
                .collect()
        });
        // First what must stop: deleted, reconfigured, moved, restarted.
        let mut stopping: Vec<Task> = Vec::new();
        let mut statuses: Vec<(String, RunState)> = Vec::new();
        {
            let mut connectors = self.connectors.lock().await;
            let gone: Vec<String> = connectors
                .keys()
                .filter(|n| !plans.contains_key(*n))
                .cloned()
                .collect();
            for name in gone {
                if let Some(c) = connectors.remove(&name) {
                    stopping.extend(c.tasks.into_values());
                }
            }
            for (name, (config, plugin, state, task_configs, target)) in &plans {
                let c = connectors.entry(name.clone()).or_insert_with(|| Connector {
                    config: config.clone(),
                    plugin: plugin.clone(),
                    target: *target,
                    state: state.clone(),
                    task_configs: task_configs.clone(),
                    owned: false,
                    tasks: BTreeMap::new(),
                });
                let mut report = false;
                if c.config != *config || c.task_configs != *task_configs || c.state != *state {
                    stopping.extend(std::mem::take(&mut c.tasks).into_values());
                    c.config = config.clone();
                    c.plugin = plugin.clone();
                    c.task_configs = task_configs.clone();
                    c.state = state.clone();
                    report = true;
                }
                if c.target != *target {
                    c.target = *target;
                    for t in c.tasks.values() {
                        let _ = t.target.send(*target);
                    }
                    report = true;
                }
                if let Some(mine) = &mine {
                    let owns = mine.contains(&Unit::Connector(name.clone()));
                    if owns && (report || !c.owned) {
                        statuses.push((format!("status-connector-{name}"), c.shown_state()));
                    }
                    c.owned = owns;
                    let moved: Vec<usize> = c
                        .tasks
                        .keys()
                        .filter(|id| !mine.contains(&Unit::Task(name.clone(), **id)))
                        .copied()
                        .collect();
                    for id in moved {
                        stopping.extend(c.tasks.remove(&id));
                    }
                }
            }
            for (name, task) in restarts {
                if let Some(c) = connectors.get_mut(&name) {
                    match task {
                        None => stopping.extend(std::mem::take(&mut c.tasks).into_values()),
                        Some(id) => stopping.extend(c.tasks.remove(&id)),
                    }
                }
            }
        }
        for t in &stopping {
            t.quiet.store(true, Ordering::SeqCst);
        }
        stop_tasks(stopping).await;
        // Then what must start.
        if let Some(mine) = &mine {
            let mut connectors = self.connectors.lock().await;
            for (name, c) in connectors.iter_mut() {
                for (id, task_config) in c.task_configs.iter().enumerate() {
                    if mine.contains(&Unit::Task(name.clone(), id)) && !c.tasks.contains_key(&id) {
                        let task = self.spawn_task(name, id, task_config.clone(), c.target);
                        c.tasks.insert(id, task);
                    }
                }
            }
        }
        for (key, state) in statuses {
            self.write_status(&key, &state).await;
        }
        mine.is_some()
    }

    /// Creates a connector (or replaces its config). Returns whether it
    /// was created.
    pub async fn put_connector(
        self: &Arc<Self>,
        name: &str,
        mut config: Props,
    ) -> Result<bool, WorkerError> {
        if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control() || c == '/') {
            return Err(WorkerError::BadRequest(format!(
                "connector name '{name}' must be 1-255 characters without '/' or control characters"
            )));
        }
        match config.get("name") {
            Some(n) if n != name => {
                return Err(WorkerError::BadRequest(format!(
                    "the config's name '{n}' is not the connector's name '{name}'"
                )))
            }
            _ => {
                config.insert("name".into(), name.to_string());
            }
        }
        let validation = self.validate(&config);
        if validation.error_count() > 0 {
            return Err(WorkerError::Invalid(validation.problems()));
        }
        self.warn_once(name, &config, validation.warnings());
        let created = !lock(&self.configs).connectors.contains_key(name);
        if created {
            self.write_config(
                &format!("target-state-{name}"),
                Some(json!({"state": TargetState::Started.as_str()})),
            )
            .await?;
        }
        self.write_config(
            &format!("connector-{name}"),
            Some(json!({ "properties": config })),
        )
        .await?;
        self.reconcile().await;
        info!(connector = name, created, "connector configured");
        Ok(created)
    }

    /// Logs a connector config's warnings (its unknown keys) once per
    /// config, not at every write of the same config; rate-limited, since
    /// configs come from clients.
    fn warn_once(&self, name: &str, config: &Props, warnings: Vec<String>) {
        use std::hash::{Hash, Hasher};
        let mut warned = lock(&self.warned);
        if warnings.is_empty() {
            warned.remove(name);
            return;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        config.hash(&mut hasher);
        let fingerprint = hasher.finish();
        if warned.insert(name.to_string(), fingerprint) == Some(fingerprint) {
            return;
        }
        if let Some(left_out) = CONFIG_WARNINGS.check() {
            warn!(
                connector = name,
                left_out,
                "connector config: {}",
                warnings.join("; ")
            );
        }
    }

    /// Creates a connector; fails if it exists.
    pub async fn create_connector(
        self: &Arc<Self>,
        name: &str,
        config: Props,
    ) -> Result<(), WorkerError> {
        if lock(&self.configs).connectors.contains_key(name) {
            return Err(WorkerError::Exists(name.to_string()));
        }
        self.put_connector(name, config).await.map(|_| ())
    }

    fn spawn_task(
        self: &Arc<Self>,
        name: &str,
        id: usize,
        config: Props,
        target: TargetState,
    ) -> Task {
        let state = Arc::new(Mutex::new(RunState::Unassigned));
        let quiet = Arc::new(AtomicBool::new(false));
        let (tx, rx) = watch::channel(target);
        let worker = self.clone();
        let (task_name, task_config, task_state, task_quiet) = (
            name.to_string(),
            config.clone(),
            state.clone(),
            quiet.clone(),
        );
        let join = tokio::spawn(async move {
            let outcome = worker
                .run_task(&task_name, id, task_config, task_state.clone(), rx)
                .await;
            let final_state = match outcome {
                Ok(()) => RunState::Stopped,
                Err(e) => {
                    warn!(connector = %task_name, task = id, error = %e, "task failed");
                    RunState::Failed(e.message)
                }
            };
            *lock(&task_state) = final_state.clone();
            if !task_quiet.load(Ordering::SeqCst) {
                worker
                    .write_status(&format!("status-task-{task_name}-{id}"), &final_state)
                    .await;
            }
        });
        Task {
            state,
            target: tx,
            quiet,
            join,
        }
    }

    async fn set_task_state(&self, name: &str, id: usize, cell: &Mutex<RunState>, state: RunState) {
        let changed = {
            let mut s = lock(cell);
            let changed = *s != state;
            *s = state.clone();
            changed
        };
        if changed {
            self.write_status(&format!("status-task-{name}-{id}"), &state)
                .await;
        }
    }

    async fn run_task(
        self: &Arc<Self>,
        name: &str,
        id: usize,
        config: Props,
        state: Arc<Mutex<RunState>>,
        target: watch::Receiver<TargetState>,
    ) -> ConnectResult<()> {
        let plugin = connectors::find(&self.plugins, config::get(&config, "connector.class", ""))
            .cloned()
            .ok_or_else(|| ConnectError::fatal("the connector's plugin disappeared"))?;
        let policy = ErrorPolicy::from_config(&config);
        info!(connector = name, task = id, "task starting");
        match plugin.kind() {
            ConnectorKind::Source => {
                self.run_source(name, id, &config, plugin, policy, state, target)
                    .await
            }
            ConnectorKind::Sink => {
                self.run_sink(name, id, &config, plugin, policy, state, target)
                    .await
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // the task's whole context, once
    async fn run_source(
        self: &Arc<Self>,
        name: &str,
        id: usize,
        config: &Props,
        plugin: Arc<dyn ConnectorPlugin>,
        policy: ErrorPolicy,
        state: Arc<Mutex<RunState>>,
        target: watch::Receiver<TargetState>,
    ) -> ConnectResult<()> {
        let mut task = plugin.source_task(config)?;
        let result = self
            .source_loop(name, id, config, &mut *task, policy, state, target)
            .await;
        // Also when the task failed: a source's listeners and connections
        // close, and it answers what it still owes its clients.
        task.stop().await;
        result
    }

    #[allow(clippy::too_many_arguments)] // the task's whole context, once
    async fn source_loop(
        self: &Arc<Self>,
        name: &str,
        id: usize,
        config: &Props,
        task: &mut dyn SourceTask,
        policy: ErrorPolicy,
        state: Arc<Mutex<RunState>>,
        mut target: watch::Receiver<TargetState>,
    ) -> ConnectResult<()> {
        let key_converter = converter::from_config("key.converter", config, "string")
            .map_err(ConnectError::fatal)?;
        let value_converter = converter::from_config("value.converter", config, "string")
            .map_err(ConnectError::fatal)?;
        let dead_letter = dead_letter_topic(config);
        let counters = metrics::connector(name);
        // Offsets another worker committed before the task moved here.
        let result: ConnectResult<()> = retry!(policy, target, self.offsets.catch_up());
        result?;
        let result: ConnectResult<()> =
            retry!(policy, target, task.start(self.offsets.reader(name)));
        result?;
        // Offsets of records stored but not yet committed: partition → offset.
        let mut pending: HashMap<String, (Arc<SourcePartition>, Value)> = HashMap::new();
        // Batches sent but not yet acknowledged, oldest first: the next
        // poll overlaps with their round trip.
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut last_commit = Instant::now();
        loop {
            let wanted = *target.borrow();
            match wanted {
                TargetState::Stopped => break,
                TargetState::Paused => {
                    self.set_task_state(name, id, &state, RunState::Paused)
                        .await;
                    retire(&mut inflight, 0, task, &mut pending).await?;
                    self.commit_source(name, &mut pending, task).await?;
                    if target.changed().await.is_err() {
                        break;
                    }
                    continue;
                }
                TargetState::Started => {
                    self.set_task_state(name, id, &state, RunState::Running)
                        .await
                }
            }
            // A poll is not cancelled (it may have read data already); it
            // returns within the connector's poll interval.
            let inputs = retry!(policy, target, task.poll())?;
            // The records' offsets stay here; the records move on.
            let polled = inputs.len();
            ConnectorCounters::add(&counters.records_read, polled as u64);
            let mut offsets = Vec::with_capacity(polled);
            let mut latest: Vec<(Arc<SourcePartition>, usize)> = Vec::new();
            let mut kafka_partitions = Vec::with_capacity(polled);
            let mut records = Vec::with_capacity(polled);
            for (i, r) in inputs.into_iter().enumerate() {
                note_latest(&mut latest, i, r.source_partition, &r.source_offset);
                offsets.push(r.source_offset);
                kafka_partitions.push(r.kafka_partition);
                records.push(Record {
                    topic: r.topic,
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                    timestamp_ms: r.timestamp_ms,
                    source_index: i,
                });
            }
            // Polled records this batch does not store, by index (none on
            // the fast path), and the records that failed.
            let mut settled: Vec<(usize, Settled)> = Vec::new();
            let mut failed: Vec<Failed> = Vec::new();
            // A pipeline's transforms run between the poll and the produce.
            let outputs: Vec<Record> = match self.transforms(name) {
                Some(chain) if !records.is_empty() => {
                    let started = Instant::now();
                    let outcome = chain.apply(records);
                    counters.transformed(started.elapsed());
                    // An input with neither an output nor a failure was
                    // filtered out.
                    let mut accounted = vec![false; polled];
                    for r in &outcome.records {
                        if let Some(a) = accounted.get_mut(r.source_index) {
                            *a = true;
                        }
                    }
                    for f in outcome.failed {
                        if let Some(a) = accounted.get_mut(f.source_index) {
                            *a = true;
                        }
                        let offset = offsets.get(f.source_index).unwrap_or(&Value::Null);
                        settle_failure(
                            &policy,
                            name,
                            task,
                            offset,
                            Stage::Transformation,
                            &f.error,
                        )?;
                        failed.push(Failed {
                            index: f.source_index,
                            stage: Stage::Transformation,
                            error: f.error,
                            record: f.record,
                        });
                    }
                    settled.extend(
                        accounted
                            .iter()
                            .enumerate()
                            .filter(|(_, a)| !**a)
                            .map(|(i, _)| (i, Settled::Filtered)),
                    );
                    outcome.records
                }
                _ => records,
            };
            let acks = Arc::new(BatchAcks::default());
            for r in outputs {
                let key = match key_converter.encode_now(&r.topic, &r.key) {
                    Some(k) => k,
                    None => retry!(policy, target, key_converter.encode(&r.topic, &r.key)),
                };
                let value = match value_converter.encode_now(&r.topic, &r.value) {
                    Some(v) => v,
                    None => retry!(policy, target, value_converter.encode(&r.topic, &r.value)),
                };
                let converted = match (key, value) {
                    (Ok(k), Ok(v)) => Ok((k, v)),
                    (Err(e), _) => Err((Stage::KeyConverter, e.message)),
                    (_, Err(e)) => Err((Stage::ValueConverter, e.message)),
                };
                let (key, value) = match converted {
                    Ok(kv) => kv,
                    Err((stage, error)) => {
                        let offset = offsets.get(r.source_index).unwrap_or(&Value::Null);
                        settle_failure(&policy, name, task, offset, stage, &error)?;
                        failed.push(Failed {
                            index: r.source_index,
                            stage,
                            error,
                            record: Some(r),
                        });
                        continue;
                    }
                };
                let mut record =
                    BaseRecord::<[u8], [u8], _>::with_opaque_to(&r.topic, acks.clone());
                if let Some(k) = &key {
                    record = record.key(k);
                }
                if let Some(v) = &value {
                    record = record.payload(v);
                }
                if let Some(p) = kafka_partitions.get(r.source_index).copied().flatten() {
                    record = record.partition(p);
                }
                if let Some(ts) = r.timestamp_ms {
                    record = record.timestamp(ts);
                }
                if !r.headers.is_empty() {
                    record = record.headers(owned_headers(&r.headers));
                }
                self.enqueue(&acks, record).await?;
                ConnectorCounters::add(&counters.records_written, 1);
            }
            if !failed.is_empty() {
                // Dead letters go with the batch: its offsets count as done
                // only once they, too, are acknowledged.
                failed.sort_by_key(|f| f.index);
                for f in &failed {
                    if let Some(dlq) = &dead_letter {
                        let (key, value, headers, topic) = match &f.record {
                            Some(r) => (
                                r.key.to_bytes(),
                                r.value.to_bytes(),
                                owned_headers(&r.headers),
                                &*r.topic,
                            ),
                            None => (None, None, OwnedHeaders::new(), ""),
                        };
                        let context = ErrorContext {
                            topic,
                            origin: None,
                            connector: name,
                            task: id,
                            stage: f.stage,
                            error: &f.error,
                        };
                        let mut record =
                            BaseRecord::<[u8], [u8], _>::with_opaque_to(dlq, acks.clone())
                                .headers(policy.error_headers(headers, &context));
                        if let Some(k) = &key {
                            record = record.key(k);
                        }
                        if let Some(v) = &value {
                            record = record.payload(v);
                        }
                        self.enqueue(&acks, record).await?;
                        metrics::count(&metrics::COUNTERS.dead_letters);
                        ConnectorCounters::add(&counters.dead_letters, 1);
                    }
                    settled.push((
                        f.index,
                        Settled::Failed {
                            stage: f.stage,
                            error: f.error.clone(),
                            dead_lettered: dead_letter.is_some(),
                        },
                    ));
                }
                settled.sort_by_key(|(i, _)| *i);
                // One fate per polled record (two outputs of one may fail).
                settled.dedup_by_key(|(i, _)| *i);
            }
            // A record's offset counts as done once it and every record
            // before it are stored. Small batches (a source that waits for
            // data, like the HTTP source) are waited for at once, so their
            // acknowledgements are not held back by the next poll.
            let latest = latest
                .into_iter()
                .map(|(p, i)| (p, offsets[i].clone()))
                .collect();
            inflight.push_back(InFlight {
                acks,
                offsets,
                latest,
                settled,
            });
            let keep = if polled < PIPELINE_MIN_BATCH {
                0
            } else {
                MAX_IN_FLIGHT
            };
            retire(&mut inflight, keep, task, &mut pending).await?;
            if last_commit.elapsed() >= self.config.commit_interval {
                retire(&mut inflight, 0, task, &mut pending).await?;
                self.commit_source(name, &mut pending, task).await?;
                last_commit = Instant::now();
            }
        }
        retire(&mut inflight, 0, task, &mut pending).await?;
        self.commit_source(name, &mut pending, task).await?;
        Ok(())
    }

    /// Enqueues a record of a source batch (waiting while librdkafka's
    /// queue is full); its acknowledgement is awaited in `retire`.
    async fn enqueue(
        &self,
        acks: &BatchAcks,
        mut record: BaseRecord<'_, [u8], [u8], Arc<BatchAcks>>,
    ) -> ConnectResult<()> {
        acks.left.fetch_add(1, Ordering::SeqCst);
        loop {
            match self.records.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => {
                    return Err(ConnectError::fatal(format!("cannot produce a record: {e}")))
                }
            }
        }
    }

    async fn commit_source(
        &self,
        name: &str,
        pending: &mut HashMap<String, (Arc<SourcePartition>, Value)>,
        task: &mut dyn SourceTask,
    ) -> ConnectResult<()> {
        if pending.is_empty() {
            return Ok(());
        }
        self.offsets.commit(name, pending).await?;
        pending.clear();
        task.commit().await
    }

    #[allow(clippy::too_many_arguments)] // the task's whole context, once
    async fn run_sink(
        self: &Arc<Self>,
        name: &str,
        id: usize,
        config: &Props,
        plugin: Arc<dyn ConnectorPlugin>,
        policy: ErrorPolicy,
        state: Arc<Mutex<RunState>>,
        mut target: watch::Receiver<TargetState>,
    ) -> ConnectResult<()> {
        let key_converter = converter::from_config("key.converter", config, "string")
            .map_err(ConnectError::fatal)?;
        let value_converter = converter::from_config("value.converter", config, "string")
            .map_err(ConnectError::fatal)?;
        let topics: Vec<String> = config::get(config, "topics", "")
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if topics.is_empty() {
            return Err(ConnectError::fatal("a sink needs topics"));
        }
        let dead_letter = dead_letter_topic(config);
        // A pipeline's records go on to this topic (a topic sink's).
        let output_topic: Option<Arc<str>> = config.get("topic").map(|t| Arc::from(t.as_str()));
        let mut client = self.config.client();
        // librdkafka pauses fetching for fetch.queue.backoff.ms (1 s by
        // default) once its local queue holds queued.min.messages; a sink
        // draining the queue faster than that would then wait for the
        // pause instead of for data.
        if client.get("fetch.queue.backoff.ms").is_none() {
            client.set("fetch.queue.backoff.ms", "10");
        }
        let consumer: StreamConsumer = client
            .set("group.id", format!("connect-{name}"))
            .set("client.id", format!("connector-consumer-{name}-{id}"))
            // Static membership: the task's next run (after a restart, or
            // on another worker) takes its place at once instead of
            // waiting for the old member to time out.
            .set(
                "group.instance.id",
                format!("{}.{name}-{id}", self.config.group_id),
            )
            .set("session.timeout.ms", "10000")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create()
            .map_err(|e| ConnectError::fatal(format!("creating the consumer: {e}")))?;
        let consumer = Arc::new(consumer);
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topic_refs)
            .map_err(|e| ConnectError::fatal(format!("subscribing to {topics:?}: {e}")))?;
        let mut task = plugin.sink_task(config)?;
        let result: ConnectResult<()> = retry!(policy, target, task.start());
        result?;
        let mut uncommitted: HashMap<(Arc<str>, i32), i64> = HashMap::new();
        let mut last_commit = Instant::now();
        let counters = metrics::connector(name);
        const MAX_BATCH: usize = 2000;
        loop {
            let wanted = *target.borrow();
            match wanted {
                TargetState::Stopped => break,
                TargetState::Paused => {
                    self.set_task_state(name, id, &state, RunState::Paused)
                        .await;
                    self.commit_sink(
                        &consumer,
                        &mut uncommitted,
                        &mut *task,
                        &policy,
                        &mut target,
                    )
                    .await?;
                    if target.changed().await.is_err() {
                        break;
                    }
                    continue;
                }
                TargetState::Started => {
                    self.set_task_state(name, id, &state, RunState::Running)
                        .await
                }
            }
            // A batch: what arrives within 100 ms of the first record.
            let mut batch: Vec<SinkRecord> = Vec::new();
            // The messages consumed, kept until the batch is done so a
            // dead letter carries a failed record's bytes as they were
            // read; `origin[i]` is `batch[i]`'s message.
            let mut messages = Vec::new();
            let mut origin: Vec<usize> = Vec::new();
            // (message, stage, error) of the records that failed.
            let mut failed: Vec<(usize, Stage, String)> = Vec::new();
            // The last offset of each run of records from one partition.
            let mut positions: Vec<(Arc<str>, i32, i64)> = Vec::new();
            let wait = tokio::time::sleep(Duration::from_millis(200));
            tokio::pin!(wait);
            while messages.len() < MAX_BATCH {
                let message = tokio::select! {
                    m = consumer.recv() => m,
                    _ = &mut wait => break,
                    _ = target.changed() => break,
                };
                let m = match message {
                    Ok(m) => m,
                    Err(e) => {
                        if let Some(left_out) = CONSUMER_ERRORS.check() {
                            warn!(connector = name, error = %e, left_out, "consumer error");
                        }
                        break;
                    }
                };
                // Records of a partition share its topic name.
                let topic = match positions.last() {
                    Some((t, _, _)) if **t == *m.topic() => t.clone(),
                    _ => Arc::from(m.topic()),
                };
                match positions.last_mut() {
                    Some((t, p, o)) if Arc::ptr_eq(t, &topic) && *p == m.partition() => {
                        *o = m.offset()
                    }
                    _ => positions.push((topic.clone(), m.partition(), m.offset())),
                }
                let key = retry!(policy, target, key_converter.decode(m.topic(), m.key()));
                let value = retry!(
                    policy,
                    target,
                    value_converter.decode(m.topic(), m.payload())
                );
                let converted = match (key, value) {
                    (Ok(k), Ok(v)) => Ok((k, v)),
                    (Err(e), _) => Err((Stage::KeyConverter, e.message)),
                    (_, Err(e)) => Err((Stage::ValueConverter, e.message)),
                };
                match converted {
                    Ok((key, value)) => {
                        let headers: Vec<(String, Bytes)> = m
                            .headers()
                            .map(|h| {
                                h.iter()
                                    .map(|h| {
                                        (
                                            h.key.to_string(),
                                            Bytes::copy_from_slice(h.value.unwrap_or_default()),
                                        )
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        origin.push(messages.len());
                        batch.push(SinkRecord {
                            topic,
                            partition: m.partition(),
                            offset: m.offset(),
                            timestamp_ms: m.timestamp().to_millis(),
                            key,
                            value,
                            headers,
                        });
                    }
                    Err((stage, error)) => {
                        policy.tolerate(name, stage, &error)?;
                        failed.push((messages.len(), stage, error));
                    }
                }
                messages.push(m);
                if messages.len() == 1 {
                    // Once records flow, wait only a little for more.
                    wait.as_mut()
                        .reset(tokio::time::Instant::now() + Duration::from_millis(20));
                }
            }
            if let (Some(chain), false) = (self.transforms(name), batch.is_empty()) {
                // The records move into the chain; their coordinates stay.
                let mut coordinates = Vec::with_capacity(batch.len());
                let inputs: Vec<Record> = batch
                    .into_iter()
                    .map(|r| {
                        coordinates.push((r.partition, r.offset));
                        Record {
                            topic: output_topic.clone().unwrap_or(r.topic),
                            key: r.key,
                            value: r.value,
                            headers: r.headers,
                            timestamp_ms: r.timestamp_ms,
                            source_index: 0,
                        }
                    })
                    .collect();
                let started = Instant::now();
                let outcome = chain.apply(inputs);
                counters.transformed(started.elapsed());
                for f in outcome.failed {
                    policy.tolerate(name, Stage::Transformation, &f.error)?;
                    failed.push((origin[f.source_index], Stage::Transformation, f.error));
                }
                // (The chain names only indexes of its input.)
                let mut kept = Vec::with_capacity(outcome.records.len());
                batch = outcome
                    .records
                    .into_iter()
                    .map(|r| {
                        let (partition, offset) = coordinates[r.source_index];
                        kept.push(origin[r.source_index]);
                        SinkRecord {
                            topic: r.topic,
                            partition,
                            offset,
                            timestamp_ms: r.timestamp_ms,
                            key: r.key,
                            value: r.value,
                            headers: r.headers,
                        }
                    })
                    .collect();
                origin = kept;
            }
            ConnectorCounters::add(&counters.records_read, messages.len() as u64);
            let failed_before_put = failed.len();
            if !batch.is_empty() {
                let result: ConnectResult<()> = retry!(policy, target, task.put(&batch));
                if let Err(e) = result {
                    if !policy.tolerates() {
                        return Err(policy.intolerable(Stage::TaskPut, &e.message));
                    }
                    // Tolerated: the batch is written again one record at a
                    // time, so only the records at fault go to the
                    // dead-letter topic.
                    if batch.len() == 1 {
                        policy.tolerate(name, Stage::TaskPut, &e.message)?;
                        failed.push((origin[0], Stage::TaskPut, e.message));
                    } else {
                        for (r, at) in batch.iter().zip(&origin) {
                            let one: ConnectResult<()> =
                                retry!(policy, target, task.put(std::slice::from_ref(r)));
                            if let Err(e) = one {
                                policy.tolerate(name, Stage::TaskPut, &e.message)?;
                                failed.push((*at, Stage::TaskPut, e.message));
                            }
                        }
                    }
                }
            }
            if let (Some(dlq), false) = (&dead_letter, failed.is_empty()) {
                // Before the batch's positions count: a position is
                // committed only after its records are written or
                // dead-lettered.
                failed.sort_by_key(|f| f.0);
                let letters = failed.iter().map(|(at, stage, error)| {
                    let m = &messages[*at];
                    let context = ErrorContext {
                        topic: m.topic(),
                        origin: Some((m.partition(), m.offset())),
                        connector: name,
                        task: id,
                        stage: *stage,
                        error,
                    };
                    let headers = m.headers().map(|h| h.detach()).unwrap_or_default();
                    self.send_dead_letter(
                        dlq,
                        (m.key(), m.payload()),
                        policy.error_headers(headers, &context),
                    )
                });
                futures::future::try_join_all(letters).await?;
                ConnectorCounters::add(&counters.dead_letters, failed.len() as u64);
            }
            let put_failures = failed.len() - failed_before_put;
            ConnectorCounters::add(
                &counters.records_written,
                batch.len().saturating_sub(put_failures) as u64,
            );
            drop(messages);
            for (topic, partition, offset) in positions {
                uncommitted.insert((topic, partition), offset + 1);
            }
            if last_commit.elapsed() >= self.config.commit_interval {
                self.commit_sink(
                    &consumer,
                    &mut uncommitted,
                    &mut *task,
                    &policy,
                    &mut target,
                )
                .await?;
                last_commit = Instant::now();
            }
        }
        self.commit_sink(
            &consumer,
            &mut uncommitted,
            &mut *task,
            &policy,
            &mut target,
        )
        .await?;
        task.stop().await;
        Ok(())
    }

    /// Flushes the sink, then commits the consumer's positions.
    async fn commit_sink(
        &self,
        consumer: &Arc<StreamConsumer>,
        uncommitted: &mut HashMap<(Arc<str>, i32), i64>,
        task: &mut dyn crate::plugin::SinkTask,
        policy: &ErrorPolicy,
        target: &mut watch::Receiver<TargetState>,
    ) -> ConnectResult<()> {
        if uncommitted.is_empty() {
            return Ok(());
        }
        let result: ConnectResult<()> = retry!(policy, target, task.flush());
        result?;
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in uncommitted.iter() {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|e| ConnectError::fatal(e.to_string()))?;
        }
        // A synchronous commit blocks: off the async threads.
        let c = consumer.clone();
        tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| ConnectError::fatal(e.to_string()))?
            .map_err(|e| ConnectError::retriable(format!("committing offsets: {e}")))?;
        uncommitted.clear();
        Ok(())
    }

    /// Writes a sink's dead letter and waits for its acknowledgement.
    async fn send_dead_letter(
        &self,
        topic: &str,
        (key, value): (Option<&[u8]>, Option<&[u8]>),
        headers: OwnedHeaders,
    ) -> ConnectResult<()> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| metrics::count(&metrics::COUNTERS.dead_letters))
            .map_err(|(e, _)| {
                ConnectError::retriable(format!("writing to dead-letter topic {topic}: {e}"))
            })
    }

    // ------------------------------------------------------------ control

    pub async fn connector_names(&self) -> Vec<String> {
        self.connectors.lock().await.keys().cloned().collect()
    }

    /// (config, kind, task configs) of a connector.
    pub async fn connector(
        &self,
        name: &str,
    ) -> Result<(Props, ConnectorKind, Vec<Props>), WorkerError> {
        let connectors = self.connectors.lock().await;
        let c = connectors
            .get(name)
            .ok_or_else(|| WorkerError::NotFound(name.to_string()))?;
        Ok((c.config.clone(), c.kind(), c.task_configs.clone()))
    }

    /// (connector status, kind, [task status]): this worker's own units
    /// as they are, the others' as their workers last reported them.
    pub async fn status(
        &self,
        name: &str,
    ) -> Result<(UnitStatus, ConnectorKind, Vec<UnitStatus>), WorkerError> {
        let connectors = self.connectors.lock().await;
        let c = connectors
            .get(name)
            .ok_or_else(|| WorkerError::NotFound(name.to_string()))?;
        let me = &self.config.worker_id;
        let statuses = lock(&self.statuses);
        let reported = |key: String| match statuses.get(&key) {
            // Not running here (any more), whatever was said before.
            Some(s) if s.worker_id == *me => UnitStatus {
                state: RunState::Unassigned,
                worker_id: String::new(),
            },
            Some(s) => s.clone(),
            None => UnitStatus {
                state: RunState::Unassigned,
                worker_id: String::new(),
            },
        };
        let connector = if c.owned || matches!(c.state, RunState::Failed(_)) {
            UnitStatus {
                state: c.shown_state(),
                worker_id: me.clone(),
            }
        } else {
            reported(format!("status-connector-{name}"))
        };
        let tasks = (0..c.task_configs.len())
            .map(|id| match c.tasks.get(&id) {
                Some(t) => UnitStatus {
                    state: lock(&t.state).clone(),
                    worker_id: me.clone(),
                },
                None => reported(format!("status-task-{name}-{id}")),
            })
            .collect();
        Ok((connector, c.kind(), tasks))
    }

    pub async fn delete_connector(self: &Arc<Self>, name: &str) -> Result<(), WorkerError> {
        if !lock(&self.configs).connectors.contains_key(name) {
            return Err(WorkerError::NotFound(name.to_string()));
        }
        self.write_config(&format!("connector-{name}"), None)
            .await?;
        self.write_config(&format!("target-state-{name}"), None)
            .await?;
        lock(&self.warned).remove(name);
        self.reconcile().await;
        info!(connector = name, "connector deleted");
        Ok(())
    }

    /// Pauses, resumes or stops a connector.
    pub async fn set_target(
        self: &Arc<Self>,
        name: &str,
        target: TargetState,
    ) -> Result<(), WorkerError> {
        if !lock(&self.configs).connectors.contains_key(name) {
            return Err(WorkerError::NotFound(name.to_string()));
        }
        self.write_config(
            &format!("target-state-{name}"),
            Some(json!({"state": target.as_str()})),
        )
        .await?;
        self.reconcile().await;
        Ok(())
    }

    /// Restarts a connector's tasks (all, or one), wherever they run: the
    /// request goes through `connect-configs` to every worker.
    pub async fn restart(
        self: &Arc<Self>,
        name: &str,
        task: Option<usize>,
    ) -> Result<(), WorkerError> {
        let tasks = self.connector(name).await?.2.len();
        let key = match task {
            Some(t) if t >= tasks => return Err(WorkerError::TaskNotFound(name.to_string(), t)),
            Some(t) => format!("restart-task-{name}-{t}"),
            None => format!("restart-connector-{name}"),
        };
        self.write_config(
            &key,
            Some(json!({"include-tasks": true, "only-failed": false})),
        )
        .await?;
        self.reconcile().await;
        Ok(())
    }

    /// Committed source offsets: (partition, offset).
    pub async fn offsets(&self, name: &str) -> Result<Vec<(Value, Value)>, WorkerError> {
        self.connector(name).await?;
        Ok(self.offsets.of(name))
    }

    /// Forgets a stopped source connector's offsets (it starts over).
    pub async fn reset_offsets(&self, name: &str) -> Result<(), WorkerError> {
        let (target, kind) = {
            let connectors = self.connectors.lock().await;
            let c = connectors
                .get(name)
                .ok_or_else(|| WorkerError::NotFound(name.to_string()))?;
            (c.target, c.kind())
        };
        if target != TargetState::Stopped {
            return Err(WorkerError::Conflict(format!(
                "Connectors must be in the STOPPED state before their offsets can be modified. \
                 This can be done for the specified connector by issuing a 'PUT' request to the \
                 '/connectors/{name}/stop' endpoint"
            )));
        }
        if kind == ConnectorKind::Sink {
            return Err(WorkerError::BadRequest(
                "resetting a sink's offsets is not supported; use runnel group reset-offsets on its group".into(),
            ));
        }
        self.offsets.reset(name).await?;
        Ok(())
    }

    /// Stops every task, committing what they did, and leaves the group
    /// (the other workers take the tasks over at once).
    pub async fn shutdown(&self) {
        if let Some(b) = lock(&self.background).take() {
            b.abort();
        }
        let _one = self.reconciling.lock().await;
        let connectors = std::mem::take(&mut *self.connectors.lock().await);
        for (_, c) in connectors {
            stop_tasks(c.tasks.into_values().collect()).await;
        }
        self.membership.leave();
    }
}

impl Connector {
    fn kind(&self) -> ConnectorKind {
        match &self.plugin {
            Some(p) => p.kind(),
            None if self.config.contains_key("topics") => ConnectorKind::Sink,
            None => ConnectorKind::Source,
        }
    }

    /// The connector's own state as reported.
    fn shown_state(&self) -> RunState {
        match (&self.state, self.target) {
            (RunState::Failed(m), _) => RunState::Failed(m.clone()),
            (_, TargetState::Paused) => RunState::Paused,
            (_, TargetState::Stopped) => RunState::Stopped,
            (s, TargetState::Started) => s.clone(),
        }
    }
}

/// Acknowledgements a source batch still waits for.
#[derive(Default)]
struct BatchAcks {
    left: AtomicUsize,
    /// The first record the broker refused.
    error: Mutex<Option<String>>,
    /// Notified when `left` reaches zero.
    done: Notify,
}

/// Counts each delivery report against its batch.
struct AckContext;

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Arc<BatchAcks>;

    fn delivery(&self, result: &DeliveryResult<'_>, acks: Arc<BatchAcks>) {
        if let Err((e, _)) = result {
            lock(&acks.error).get_or_insert_with(|| e.to_string());
        }
        if acks.left.fetch_sub(1, Ordering::SeqCst) == 1 {
            acks.done.notify_one();
        }
    }
}

/// A source batch sent to the broker: its delivery reports and the
/// source offsets it completes.
struct InFlight {
    acks: Arc<BatchAcks>,
    /// Every polled record's offset, in order.
    offsets: Vec<Value>,
    /// The last offset of each run of records from one source partition.
    latest: Vec<(Arc<SourcePartition>, Value)>,
    /// The polled records it does not store, by index in order; every
    /// other one is stored.
    settled: Vec<(usize, Settled)>,
}

/// Why a polled record is not stored.
#[derive(Debug, Clone, PartialEq)]
enum Settled {
    Filtered,
    Failed {
        stage: Stage,
        error: String,
        dead_lettered: bool,
    },
}

impl Settled {
    fn fate(&self) -> Fate<'_> {
        match self {
            Settled::Filtered => Fate::Filtered,
            Settled::Failed {
                stage,
                error,
                dead_lettered,
            } => Fate::Failed {
                stage: *stage,
                error,
                dead_lettered: *dead_lettered,
            },
        }
    }
}

/// A source record that failed, and the record as the failing step had it
/// (for the dead-letter topic).
struct Failed {
    index: usize,
    stage: Stage,
    error: String,
    record: Option<Record>,
}

/// Checks a source record's failure against the policy. When it is not
/// tolerated, the task hears of the record at once (an HTTP source answers
/// its client) and the error fails the task.
fn settle_failure(
    policy: &ErrorPolicy,
    connector: &str,
    task: &mut dyn SourceTask,
    offset: &Value,
    stage: Stage,
    error: &str,
) -> ConnectResult<()> {
    policy.tolerate(connector, stage, error).inspect_err(|_| {
        task.done(
            offset,
            Fate::Failed {
                stage,
                error,
                dead_lettered: false,
            },
        )
    })
}

/// The connector's dead-letter topic, if it has one.
fn dead_letter_topic(config: &Props) -> Option<String> {
    config
        .get("errors.deadletterqueue.topic.name")
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

fn owned_headers(headers: &[(String, Bytes)]) -> OwnedHeaders {
    let mut owned = OwnedHeaders::new_with_capacity(headers.len());
    for (k, v) in headers {
        owned = owned.insert(Header {
            key: k,
            value: Some(v.as_ref()),
        });
    }
    owned
}

/// Where a failed record came from and why it failed, for the
/// `__connect.errors.*` headers of its dead letter.
struct ErrorContext<'a> {
    /// The topic it was read from (sinks) or meant for (sources).
    topic: &'a str,
    /// Its partition and offset (sinks).
    origin: Option<(i32, i64)>,
    connector: &'a str,
    task: usize,
    stage: Stage,
    error: &'a str,
}

/// Consumer errors logged at most, per minute and process.
static CONSUMER_ERRORS: LogLimit = LogLimit::new(10, Duration::from_secs(60));
/// Connector config warnings logged at most, per minute and process.
static CONFIG_WARNINGS: LogLimit = LogLimit::new(20, Duration::from_secs(60));

/// Notes record `i` as the last of its run of records from one source
/// partition, unless its offset is `Null`: such a record has no position
/// of its own and a later one of the poll covers it.
fn note_latest(
    latest: &mut Vec<(Arc<SourcePartition>, usize)>,
    i: usize,
    partition: Arc<SourcePartition>,
    offset: &Value,
) {
    if offset.is_null() {
        return;
    }
    match latest.last_mut() {
        // (`Arc` equality compares pointers first.)
        Some((p, last)) if *p == partition => *last = i,
        _ => latest.push((partition, i)),
    }
}

/// Source batches smaller than this are acknowledged before the next poll.
const PIPELINE_MIN_BATCH: usize = 256;
/// Full batches in flight at most.
const MAX_IN_FLIGHT: usize = 8;

/// Awaits the oldest in-flight batches until at most `keep` remain; marks
/// their offsets delivered and pending commit.
async fn retire(
    inflight: &mut VecDeque<InFlight>,
    keep: usize,
    task: &mut dyn SourceTask,
    pending: &mut HashMap<String, (Arc<SourcePartition>, Value)>,
) -> ConnectResult<()> {
    while inflight.len() > keep {
        let Some(batch) = inflight.pop_front() else {
            break;
        };
        while batch.acks.left.load(Ordering::SeqCst) > 0 {
            batch.acks.done.notified().await;
        }
        if let Some(e) = lock(&batch.acks.error).take() {
            return Err(ConnectError::fatal(format!(
                "the broker refused a record: {e}"
            )));
        }
        let mut settled = batch.settled.iter().peekable();
        for (i, offset) in batch.offsets.iter().enumerate() {
            match settled.next_if(|(at, _)| *at == i) {
                Some((_, s)) => task.done(offset, s.fate()),
                None => task.done(offset, Fate::Stored),
            }
        }
        for (partition, offset) in batch.latest {
            pending.insert(
                serde_json::to_string(&*partition).unwrap_or_default(),
                (partition, offset),
            );
        }
    }
    Ok(())
}

/// Asks tasks to stop and waits (a little) for them to commit and end.
async fn stop_tasks(tasks: Vec<Task>) {
    for t in &tasks {
        let _ = t.target.send(TargetState::Stopped);
    }
    for t in tasks {
        let mut join = t.join;
        if tokio::time::timeout(Duration::from_secs(10), &mut join)
            .await
            .is_err()
        {
            join.abort();
        }
    }
}

/// `errors.*` settings of a connector.
#[derive(Debug, Clone)]
pub struct ErrorPolicy {
    tolerate_all: bool,
    retry_timeout: Option<Duration>,
    retry_delay_max: Duration,
    log: bool,
    context_headers: bool,
    /// Tolerated failures logged (with `errors.log.enable`) at most, per
    /// task: a source fed bad records must not flood the log.
    log_limit: Arc<LogLimit>,
}

impl ErrorPolicy {
    pub fn from_config(config: &Props) -> ErrorPolicy {
        let ms = |k: &str, d: i64| {
            config::get(config, k, "")
                .trim()
                .parse::<i64>()
                .unwrap_or(d)
        };
        let timeout = ms("errors.retry.timeout", 0);
        ErrorPolicy {
            tolerate_all: config::get(config, "errors.tolerance", "none") == "all",
            retry_timeout: if timeout < 0 {
                None
            } else {
                Some(Duration::from_millis(timeout as u64))
            },
            retry_delay_max: Duration::from_millis(
                ms("errors.retry.delay.max.ms", 60_000).max(1) as u64
            ),
            log: config::get(config, "errors.log.enable", "false") == "true",
            context_headers: config::get(
                config,
                "errors.deadletterqueue.context.headers.enable",
                "true",
            ) == "true",
            log_limit: Arc::new(LogLimit::new(10, Duration::from_secs(60))),
        }
    }

    /// Whether failed records are skipped (`errors.tolerance: all`).
    fn tolerates(&self) -> bool {
        self.tolerate_all
    }

    /// The error that fails a task over a record that failed at `stage`.
    fn intolerable(&self, stage: Stage, error: &str) -> ConnectError {
        let what = match stage {
            Stage::KeyConverter => "converting a record's key",
            Stage::ValueConverter => "converting a record's value",
            Stage::Transformation => "transforming a record",
            Stage::TaskPut => "writing records",
        };
        ConnectError::fatal(format!(
            "{what} failed and errors.tolerance is none: {}",
            metrics::clip(error, 2000)
        ))
    }

    /// A record failed: Ok to skip it, or the error that fails the task.
    fn tolerate(&self, connector: &str, stage: Stage, error: &str) -> ConnectResult<()> {
        metrics::count(&metrics::COUNTERS.record_failures);
        ConnectorCounters::add(&metrics::connector(connector).failures, 1);
        if !self.tolerate_all {
            return Err(self.intolerable(stage, error));
        }
        metrics::count(&metrics::COUNTERS.records_skipped);
        if self.log {
            if let Some(left_out) = self.log_limit.check() {
                warn!(
                    connector,
                    stage = stage.as_str(),
                    left_out,
                    "tolerated a failed record: {}",
                    metrics::clip(error, 500)
                );
            }
        }
        Ok(())
    }

    /// `headers` with Kafka Connect's `__connect.errors.*` headers added
    /// (unless `errors.deadletterqueue.context.headers.enable` is false).
    fn error_headers(&self, headers: OwnedHeaders, c: &ErrorContext<'_>) -> OwnedHeaders {
        if !self.context_headers {
            return headers;
        }
        let mut headers = headers.insert(Header {
            key: "__connect.errors.topic",
            value: Some(c.topic),
        });
        if let Some((partition, offset)) = c.origin {
            let (p, o) = (partition.to_string(), offset.to_string());
            headers = headers
                .insert(Header {
                    key: "__connect.errors.partition",
                    value: Some(p.as_str()),
                })
                .insert(Header {
                    key: "__connect.errors.offset",
                    value: Some(o.as_str()),
                });
        }
        let task = c.task.to_string();
        headers
            .insert(Header {
                key: "__connect.errors.connector.name",
                value: Some(c.connector),
            })
            .insert(Header {
                key: "__connect.errors.task.id",
                value: Some(task.as_str()),
            })
            .insert(Header {
                key: "__connect.errors.stage",
                value: Some(c.stage.as_str()),
            })
            .insert(Header {
                key: "__connect.errors.exception.message",
                value: Some(&*metrics::clip(c.error, 8000)),
            })
    }

    /// Whether a retriable failure may be retried after `delay` more.
    fn may_retry(
        &self,
        started: Instant,
        delay: Duration,
        target: &watch::Receiver<TargetState>,
    ) -> bool {
        let expired = self
            .retry_timeout
            .is_some_and(|t| started.elapsed() + delay > t);
        !expired && *target.borrow() != TargetState::Stopped
    }

    /// Waits double from 300 ms up to `errors.retry.delay.max.ms`.
    fn next_delay(&self, delay: Duration) -> Duration {
        (delay * 2).min(self.retry_delay_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_latest_offset_skips_records_without_one() {
        let part = |name: &str| Arc::new(SourcePartition::from_iter([(name.into(), json!(1))]));
        let (a, b) = (part("a"), part("b"));
        let polled = [
            (a.clone(), json!({"n": 1})),
            (a.clone(), Value::Null),
            (b.clone(), Value::Null),
            (b.clone(), json!({"n": 2})),
            (b.clone(), Value::Null),
            // Equal by value, another allocation: the same partition.
            (part("b"), json!({"n": 3})),
        ];
        let mut latest = Vec::new();
        for (i, (p, o)) in polled.into_iter().enumerate() {
            note_latest(&mut latest, i, p, &o);
        }
        assert_eq!(latest, vec![(a, 0), (b, 5)]);
    }
}
