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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{self, Validation};
use crate::connectors;
use crate::converter;
use crate::pipeline::transform::{Chain, Record};
use crate::plugin::{ConnectError, ConnectResult, ConnectorKind, ConnectorPlugin, Props};
use crate::record::{Data, SinkRecord, SourcePartition, SourceRecord};
use crate::store::{self, OffsetStore, Topics};

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
}

impl WorkerConfig {
    pub fn new(bootstrap: impl Into<String>) -> WorkerConfig {
        WorkerConfig {
            bootstrap: bootstrap.into(),
            topics: Topics::default(),
            worker_id: "runnel-connect".into(),
            properties: Vec::new(),
            commit_interval: Duration::from_millis(1000),
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
    config: Props,
    state: Arc<Mutex<RunState>>,
    target: watch::Sender<TargetState>,
    join: tokio::task::JoinHandle<()>,
}

struct Connector {
    config: Props,
    plugin: Arc<dyn ConnectorPlugin>,
    target: TargetState,
    state: RunState,
    tasks: Vec<Task>,
}

/// A connect worker.
pub struct Worker {
    config: WorkerConfig,
    plugins: Vec<Arc<dyn ConnectorPlugin>>,
    producer: FutureProducer,
    offsets: Arc<OffsetStore>,
    connectors: tokio::sync::Mutex<BTreeMap<String, Connector>>,
    /// Transform chains of pipelines, by connector name.
    chains: Mutex<HashMap<String, Arc<Chain>>>,
}

/// Awaits `$op` (an expression making a fresh future each time), retrying
/// retriable failures as `$policy` says; gives up early when `$target`
/// says stop.
macro_rules! retry {
    ($policy:expr, $target:expr, $op:expr) => {{
        let started = Instant::now();
        let mut delay = Duration::from_millis(300);
        loop {
            match $op.await {
                Ok(v) => break Ok(v),
                Err(e) if e.retriable && $policy.may_retry(started, delay, &$target) => {
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
    /// Connects, creates the internal topics if needed, reads them, and
    /// starts every connector they describe.
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
        let (c, p, topics) = (client.clone(), producer.clone(), config.topics.clone());
        let (offsets, saved) = tokio::task::spawn_blocking(move || {
            let offsets = OffsetStore::load(&c, p, &topics.offsets)?;
            let configs = store::read_to_end(&c, &topics.configs)?;
            Ok::<_, ConnectError>((offsets, configs))
        })
        .await
        .map_err(|e| ConnectError::fatal(e.to_string()))??;
        let worker = Arc::new(Worker {
            config,
            plugins,
            producer,
            offsets: Arc::new(offsets),
            connectors: tokio::sync::Mutex::new(BTreeMap::new()),
            chains: Mutex::new(chains.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()),
        });
        // The latest record per key is the state.
        let mut configs: BTreeMap<String, Option<Props>> = BTreeMap::new();
        let mut targets: HashMap<String, TargetState> = HashMap::new();
        for (key, value) in saved {
            let key = String::from_utf8_lossy(&key).into_owned();
            let value: Option<Value> = value.and_then(|v| serde_json::from_slice(&v).ok());
            if let Some(name) = key.strip_prefix("connector-") {
                let props = value
                    .and_then(|v| serde_json::from_value::<Props>(v["properties"].clone()).ok());
                configs.insert(name.to_string(), props);
            } else if let Some(name) = key.strip_prefix("target-state-") {
                let state = value
                    .as_ref()
                    .and_then(|v| v["state"].as_str())
                    .map(TargetState::parse)
                    .unwrap_or(TargetState::Started);
                targets.insert(name.to_string(), state);
            }
        }
        for (name, props) in configs {
            let Some(props) = props else { continue };
            let target = targets.get(&name).copied().unwrap_or(TargetState::Started);
            if let Err(e) = worker.launch(&name, props, target).await {
                warn!(connector = %name, error = %e, "cannot start a saved connector");
            }
        }
        info!(bootstrap = %worker.config.bootstrap, "connect worker started");
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

    async fn write_config(&self, key: &str, value: Option<Value>) -> Result<(), WorkerError> {
        let bytes = value.map(|v| serde_json::to_vec(&v).unwrap_or_default());
        store::write(
            &self.producer,
            &self.config.topics.configs,
            key.as_bytes(),
            bytes.as_deref(),
        )
        .await
        .map_err(WorkerError::from)
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
        let created = {
            let mut connectors = self.connectors.lock().await;
            let created = match connectors.remove(name) {
                Some(old) => {
                    stop_tasks(old.tasks).await;
                    false
                }
                None => true,
            };
            drop(connectors);
            created
        };
        self.write_config(
            &format!("connector-{name}"),
            Some(json!({ "properties": config })),
        )
        .await?;
        if created {
            self.write_config(
                &format!("target-state-{name}"),
                Some(json!({"state": TargetState::Started.as_str()})),
            )
            .await?;
        }
        self.launch(name, config, TargetState::Started).await?;
        info!(connector = name, created, "connector configured");
        Ok(created)
    }

    /// Creates a connector; fails if it exists.
    pub async fn create_connector(
        self: &Arc<Self>,
        name: &str,
        config: Props,
    ) -> Result<(), WorkerError> {
        if self.connectors.lock().await.contains_key(name) {
            return Err(WorkerError::Exists(name.to_string()));
        }
        self.put_connector(name, config).await.map(|_| ())
    }

    /// Starts a connector's tasks in `target` state.
    async fn launch(
        self: &Arc<Self>,
        name: &str,
        config: Props,
        target: TargetState,
    ) -> Result<(), WorkerError> {
        let validation = self.validate(&config);
        let plugin = validation
            .plugin
            .clone()
            .ok_or_else(|| WorkerError::Invalid(validation.problems()))?;
        let max_tasks = config::get(&config, "tasks.max", "1")
            .parse::<usize>()
            .unwrap_or(1);
        let mut connector = Connector {
            config: config.clone(),
            plugin: plugin.clone(),
            target,
            state: RunState::Running,
            tasks: Vec::new(),
        };
        match plugin.task_configs(&config, max_tasks.clamp(1, config::MAX_TASKS)) {
            Err(e) => connector.state = RunState::Failed(e.message),
            Ok(task_configs) => {
                for (id, mut task_config) in task_configs.into_iter().enumerate() {
                    // Task configs inherit the connector's common settings.
                    for (k, v) in &config {
                        task_config.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                    connector
                        .tasks
                        .push(self.spawn_task(name, id, task_config, target));
                }
            }
        }
        connector.state = match (&connector.state, target) {
            (RunState::Failed(m), _) => RunState::Failed(m.clone()),
            (_, TargetState::Started) => RunState::Running,
            (_, TargetState::Paused) => RunState::Paused,
            (_, TargetState::Stopped) => RunState::Stopped,
        };
        self.write_status(&format!("status-connector-{name}"), &connector.state)
            .await;
        self.connectors
            .lock()
            .await
            .insert(name.to_string(), connector);
        Ok(())
    }

    fn spawn_task(
        self: &Arc<Self>,
        name: &str,
        id: usize,
        config: Props,
        target: TargetState,
    ) -> Task {
        let state = Arc::new(Mutex::new(RunState::Unassigned));
        let (tx, rx) = watch::channel(target);
        let worker = self.clone();
        let (task_name, task_config, task_state) =
            (name.to_string(), config.clone(), state.clone());
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
            worker
                .write_status(&format!("status-task-{task_name}-{id}"), &final_state)
                .await;
        });
        Task {
            config,
            state,
            target: tx,
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
        mut target: watch::Receiver<TargetState>,
    ) -> ConnectResult<()> {
        let key_converter = converter::from_config("key.converter", config, "string")
            .map_err(ConnectError::fatal)?;
        let value_converter = converter::from_config("value.converter", config, "string")
            .map_err(ConnectError::fatal)?;
        let mut task = plugin.source_task(config)?;
        let result: ConnectResult<()> =
            retry!(policy, target, task.start(self.offsets.reader(name)));
        result?;
        // Offsets of records stored but not yet committed: partition → offset.
        let mut pending: HashMap<String, (SourcePartition, Value)> = HashMap::new();
        let mut last_commit = Instant::now();
        loop {
            let wanted = *target.borrow();
            match wanted {
                TargetState::Stopped => break,
                TargetState::Paused => {
                    self.set_task_state(name, id, &state, RunState::Paused)
                        .await;
                    self.commit_source(name, &mut pending, &mut *task).await?;
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
            // A pipeline's transforms run between the poll and the produce.
            let outputs: Vec<SourceRecord> = match self.transforms(name) {
                _ if inputs.is_empty() => Vec::new(),
                None => inputs.clone(),
                Some(chain) => match chain.apply(inputs.iter().map(to_pipeline_source).collect()) {
                    Ok(out) => out
                        .into_iter()
                        .map(|r| {
                            let from = &inputs[r.source_index];
                            SourceRecord {
                                source_partition: from.source_partition.clone(),
                                source_offset: from.source_offset.clone(),
                                topic: r.topic,
                                kafka_partition: from.kafka_partition,
                                key: r.key,
                                value: r.value,
                                headers: r.headers,
                                timestamp_ms: r.timestamp_ms,
                            }
                        })
                        .collect(),
                    Err(e) => {
                        policy.tolerate(name, "transforming records", &e)?;
                        Vec::new()
                    }
                },
            };
            let mut deliveries = Vec::with_capacity(outputs.len());
            for r in outputs {
                let key = retry!(policy, target, key_converter.encode(&r.topic, &r.key));
                let value = retry!(policy, target, value_converter.encode(&r.topic, &r.value));
                let (key, value) = match (key, value) {
                    (Ok(k), Ok(v)) => (k, v),
                    (Err(e), _) | (_, Err(e)) => {
                        // Skipped; its offset counts as done below.
                        policy.tolerate(name, "converting a source record", &e.message)?;
                        continue;
                    }
                };
                let mut record = FutureRecord::<[u8], [u8]>::to(&r.topic);
                if let Some(k) = &key {
                    record = record.key(k);
                }
                if let Some(v) = &value {
                    record = record.payload(v);
                }
                if let Some(p) = r.kafka_partition {
                    record = record.partition(p);
                }
                if let Some(ts) = r.timestamp_ms {
                    record = record.timestamp(ts);
                }
                if !r.headers.is_empty() {
                    let mut headers = OwnedHeaders::new();
                    for (k, v) in &r.headers {
                        headers = headers.insert(Header {
                            key: k,
                            value: Some(v.as_ref()),
                        });
                    }
                    record = record.headers(headers);
                }
                // Enqueue now (waiting while librdkafka's queue is full);
                // the delivery report is awaited below.
                let delivery = loop {
                    match self.producer.send_result(record) {
                        Ok(d) => break d,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err((e, _)) => {
                            return Err(ConnectError::fatal(format!(
                                "cannot produce a record: {e}"
                            )))
                        }
                    }
                };
                deliveries.push(delivery);
            }
            // Every record of the batch is stored before any of its
            // offsets counts as done.
            for delivery in deliveries {
                match delivery.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => {
                        return Err(ConnectError::fatal(format!(
                            "the broker refused a record: {e}"
                        )))
                    }
                    Err(_) => return Err(ConnectError::fatal("the producer was closed")),
                }
            }
            for r in inputs {
                task.delivered(&r.source_offset);
                pending.insert(
                    Value::Object(r.source_partition.clone()).to_string(),
                    (r.source_partition, r.source_offset),
                );
            }
            if last_commit.elapsed() >= self.config.commit_interval {
                self.commit_source(name, &mut pending, &mut *task).await?;
                last_commit = Instant::now();
            }
        }
        self.commit_source(name, &mut pending, &mut *task).await?;
        task.stop().await;
        Ok(())
    }

    async fn commit_source(
        &self,
        name: &str,
        pending: &mut HashMap<String, (SourcePartition, Value)>,
        task: &mut dyn crate::plugin::SourceTask,
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
        let dead_letter = config
            .get("errors.deadletterqueue.topic.name")
            .filter(|t| !t.trim().is_empty())
            .cloned();
        let consumer: StreamConsumer = self
            .config
            .client()
            .set("group.id", format!("connect-{name}"))
            .set("client.id", format!("connector-consumer-{name}-{id}"))
            // Static membership: a restarted worker takes its task's place
            // at once instead of waiting for the old member to time out.
            .set(
                "group.instance.id",
                format!("{}-{name}-{id}", self.config.worker_id),
            )
            .set("session.timeout.ms", "10000")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create()
            .map_err(|e| ConnectError::fatal(format!("creating the consumer: {e}")))?;
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topic_refs)
            .map_err(|e| ConnectError::fatal(format!("subscribing to {topics:?}: {e}")))?;
        let mut task = plugin.sink_task(config)?;
        let result: ConnectResult<()> = retry!(policy, target, task.start());
        result?;
        let mut uncommitted: HashMap<(String, i32), i64> = HashMap::new();
        let mut last_commit = Instant::now();
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
            let mut batch = Vec::new();
            let mut positions = Vec::new();
            let wait = tokio::time::sleep(Duration::from_millis(200));
            tokio::pin!(wait);
            while batch.len() < MAX_BATCH {
                let message = tokio::select! {
                    m = consumer.recv() => m,
                    _ = &mut wait => break,
                    _ = target.changed() => break,
                };
                let m = match message {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(connector = name, error = %e, "consumer error");
                        break;
                    }
                };
                positions.push(((m.topic().to_string(), m.partition()), m.offset()));
                let key = retry!(policy, target, key_converter.decode(m.topic(), m.key()));
                let value = retry!(
                    policy,
                    target,
                    value_converter.decode(m.topic(), m.payload())
                );
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
                match (key, value) {
                    (Ok(key), Ok(value)) => batch.push(SinkRecord {
                        topic: m.topic().to_string(),
                        partition: m.partition(),
                        offset: m.offset(),
                        timestamp_ms: m.timestamp().to_millis(),
                        key,
                        value,
                        headers,
                    }),
                    (Err(e), _) | (_, Err(e)) => {
                        policy.tolerate(name, "converting a record", &e.message)?;
                        if let Some(dlq) = &dead_letter {
                            self.dead_letter(dlq, &policy, &m, "VALUE_CONVERTER", &e.message)
                                .await?;
                        }
                    }
                }
                if batch.len() == 1 {
                    // Once records flow, wait only a little for more.
                    wait.as_mut()
                        .reset(tokio::time::Instant::now() + Duration::from_millis(20));
                }
            }
            if let (Some(chain), false) = (self.transforms(name), batch.is_empty()) {
                let output_topic = config.get("topic").cloned();
                let inputs: Vec<Record> = batch
                    .iter()
                    .map(|r| Record {
                        topic: output_topic.clone().unwrap_or_else(|| r.topic.clone()),
                        key: r.key.clone(),
                        value: r.value.clone(),
                        headers: r.headers.clone(),
                        timestamp_ms: r.timestamp_ms,
                        source_index: 0,
                    })
                    .collect();
                batch = match chain.apply(inputs) {
                    Ok(out) => out
                        .into_iter()
                        .map(|r| {
                            let from = &batch[r.source_index];
                            SinkRecord {
                                topic: r.topic,
                                partition: from.partition,
                                offset: from.offset,
                                timestamp_ms: r.timestamp_ms,
                                key: r.key,
                                value: r.value,
                                headers: r.headers,
                            }
                        })
                        .collect(),
                    Err(e) => {
                        policy.tolerate(name, "transforming records", &e)?;
                        Vec::new()
                    }
                };
            }
            if !batch.is_empty() {
                let result: ConnectResult<()> = retry!(policy, target, task.put(batch.clone()));
                if let Err(e) = result {
                    policy.tolerate(name, "writing records", &e.message)?;
                    // Tolerated: the records go to the dead-letter topic.
                    if let Some(dlq) = &dead_letter {
                        for r in &batch {
                            self.dead_letter_record(dlq, &policy, r, "TASK_PUT", &e.message)
                                .await?;
                        }
                    }
                }
            }
            for (tp, offset) in positions {
                uncommitted.insert(tp, offset + 1);
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
        consumer: &StreamConsumer,
        uncommitted: &mut HashMap<(String, i32), i64>,
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
        consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| ConnectError::retriable(format!("committing offsets: {e}")))?;
        uncommitted.clear();
        Ok(())
    }

    async fn send_dead_letter(
        &self,
        topic: &str,
        policy: &ErrorPolicy,
        (key, value): (Option<&[u8]>, Option<&[u8]>),
        origin: (&str, i32, i64),
        (stage, error): (&str, &str),
    ) -> ConnectResult<()> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if policy.context_headers {
            let (t, p, o) = origin;
            let (p, o) = (p.to_string(), o.to_string());
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "__connect.errors.topic",
                    value: Some(t),
                })
                .insert(Header {
                    key: "__connect.errors.partition",
                    value: Some(p.as_str()),
                })
                .insert(Header {
                    key: "__connect.errors.offset",
                    value: Some(o.as_str()),
                })
                .insert(Header {
                    key: "__connect.errors.stage",
                    value: Some(stage),
                })
                .insert(Header {
                    key: "__connect.errors.exception.message",
                    value: Some(error),
                });
            record = record.headers(headers);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| {
                ConnectError::retriable(format!("writing to dead-letter topic {topic}: {e}"))
            })
    }

    async fn dead_letter(
        &self,
        topic: &str,
        policy: &ErrorPolicy,
        m: &rdkafka::message::BorrowedMessage<'_>,
        stage: &str,
        error: &str,
    ) -> ConnectResult<()> {
        self.send_dead_letter(
            topic,
            policy,
            (m.key(), m.payload()),
            (m.topic(), m.partition(), m.offset()),
            (stage, error),
        )
        .await
    }

    async fn dead_letter_record(
        &self,
        topic: &str,
        policy: &ErrorPolicy,
        r: &SinkRecord,
        stage: &str,
        error: &str,
    ) -> ConnectResult<()> {
        let bytes = |d: &Data| match d {
            Data::Null => None,
            Data::Bytes(b) => Some(b.to_vec()),
            Data::Json(Value::String(s)) => Some(s.clone().into_bytes()),
            Data::Json(v) => Some(v.to_string().into_bytes()),
        };
        let (key, value) = (bytes(&r.key), bytes(&r.value));
        self.send_dead_letter(
            topic,
            policy,
            (key.as_deref(), value.as_deref()),
            (&r.topic, r.partition, r.offset),
            (stage, error),
        )
        .await
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
        Ok((
            c.config.clone(),
            c.plugin.kind(),
            c.tasks.iter().map(|t| t.config.clone()).collect(),
        ))
    }

    /// (connector state, kind, [task state]).
    pub async fn status(
        &self,
        name: &str,
    ) -> Result<(RunState, ConnectorKind, Vec<RunState>), WorkerError> {
        let connectors = self.connectors.lock().await;
        let c = connectors
            .get(name)
            .ok_or_else(|| WorkerError::NotFound(name.to_string()))?;
        let tasks: Vec<RunState> = c.tasks.iter().map(|t| lock(&t.state).clone()).collect();
        let state = match (&c.state, c.target) {
            (RunState::Failed(m), _) => RunState::Failed(m.clone()),
            (_, TargetState::Paused) => RunState::Paused,
            (_, TargetState::Stopped) => RunState::Stopped,
            (s, TargetState::Started) => s.clone(),
        };
        Ok((state, c.plugin.kind(), tasks))
    }

    pub async fn delete_connector(&self, name: &str) -> Result<(), WorkerError> {
        let connector = self
            .connectors
            .lock()
            .await
            .remove(name)
            .ok_or_else(|| WorkerError::NotFound(name.to_string()))?;
        stop_tasks(connector.tasks).await;
        self.write_config(&format!("connector-{name}"), None)
            .await?;
        self.write_config(&format!("target-state-{name}"), None)
            .await?;
        info!(connector = name, "connector deleted");
        Ok(())
    }

    /// Pauses, resumes or stops a connector.
    pub async fn set_target(&self, name: &str, target: TargetState) -> Result<(), WorkerError> {
        {
            let mut connectors = self.connectors.lock().await;
            let c = connectors
                .get_mut(name)
                .ok_or_else(|| WorkerError::NotFound(name.to_string()))?;
            c.target = target;
            for t in &c.tasks {
                let _ = t.target.send(target);
            }
        }
        self.write_config(
            &format!("target-state-{name}"),
            Some(json!({"state": target.as_str()})),
        )
        .await?;
        Ok(())
    }

    /// Restarts a connector's tasks (all, or one).
    pub async fn restart(
        self: &Arc<Self>,
        name: &str,
        task: Option<usize>,
    ) -> Result<(), WorkerError> {
        let (config, target) = {
            let connectors = self.connectors.lock().await;
            let c = connectors
                .get(name)
                .ok_or_else(|| WorkerError::NotFound(name.to_string()))?;
            if let Some(t) = task {
                if t >= c.tasks.len() {
                    return Err(WorkerError::TaskNotFound(name.to_string(), t));
                }
            }
            (c.config.clone(), c.target)
        };
        match task {
            None => {
                let old = self.connectors.lock().await.remove(name);
                if let Some(old) = old {
                    stop_tasks(old.tasks).await;
                }
                self.launch(name, config, target).await
            }
            Some(t) => {
                let mut connectors = self.connectors.lock().await;
                let c = connectors
                    .get_mut(name)
                    .ok_or_else(|| WorkerError::NotFound(name.to_string()))?;
                let task_config = c.tasks[t].config.clone();
                let new = self.spawn_task(name, t, task_config, target);
                let old = std::mem::replace(&mut c.tasks[t], new);
                drop(connectors);
                stop_tasks(vec![old]).await;
                Ok(())
            }
        }
    }

    /// Committed source offsets: (partition, offset).
    pub async fn offsets(&self, name: &str) -> Result<Vec<(Value, Value)>, WorkerError> {
        self.connector(name).await?;
        Ok(self.offsets.of(name))
    }

    /// Forgets a stopped source connector's offsets (it starts over).
    pub async fn reset_offsets(&self, name: &str) -> Result<(), WorkerError> {
        let (state, kind, _) = self.status(name).await?;
        if state != RunState::Stopped {
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

    /// Stops every task, committing what they did.
    pub async fn shutdown(&self) {
        let connectors = std::mem::take(&mut *self.connectors.lock().await);
        for (_, c) in connectors {
            stop_tasks(c.tasks).await;
        }
    }
}

fn to_pipeline_source(r: &SourceRecord) -> Record {
    Record {
        topic: r.topic.clone(),
        key: r.key.clone(),
        value: r.value.clone(),
        headers: r.headers.clone(),
        timestamp_ms: r.timestamp_ms,
        source_index: 0,
    }
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
        }
    }

    /// A failed record: Ok to skip it, or the error that fails the task.
    fn tolerate(&self, connector: &str, what: &str, error: &str) -> ConnectResult<()> {
        if self.tolerate_all {
            if self.log {
                warn!(connector, "tolerated a failure {what}: {error}");
            }
            Ok(())
        } else {
            Err(ConnectError::fatal(format!(
                "{what} failed and errors.tolerance is none: {error}"
            )))
        }
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
