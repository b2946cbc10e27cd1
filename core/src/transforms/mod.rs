//! Broker-side topic transforms: run a function on every record produced to
//! an input topic and append the results to an output topic, inside the
//! broker (no network hop), like Redpanda's data transforms.
//!
//! The broker does not know what the function is: the `runnel` binary
//! provides a [`TransformEngine`] that loads WASM plugins. This module owns
//! deployment, reading, writing, progress and failure handling.
//!
//! Deployments are records in the compacted topic `_runnel_transforms`
//! (key = transform name, value below; a tombstone removes it), so
//! `runnel transform deploy` works over the Kafka protocol and a redeploy
//! under the same name swaps the module for the next batch:
//!
//! ```text
//! value = u32 (big-endian) header length | header JSON | module bytes
//! header = {"name","input_topic","output_topic","config":{..},
//!           "on_error":"stop"|"skip"|"dead-letter:<topic>",
//!           "from_beginning":bool,"sha256","deployed_at_ms"}
//! ```
//!
//! Delivery is at-least-once from the plugin's point of view and
//! effectively once in the output topic: each input partition's position
//! is committed in `__consumer_offsets` under the group
//! `__transform-<name>` after its outputs are appended, and every output
//! record carries the headers `runnel.transform` (the name) and
//! `runnel.source` (`<partition>:<offset>` of its input). After a crash the
//! runner resumes after the last source offset found at the tail of the
//! output partition, so a batch written but not yet committed is not
//! written again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::broker::{Broker, BrokerError, Partition};
use crate::storage::batch::BatchIter;
use crate::storage::records::{decode_batch, MAX_DECOMPRESSED_BYTES};
use crate::util::{lock, now_ms};

mod route;

/// The compacted topic holding deployments.
pub const DEPLOYMENTS_TOPIC: &str = "_runnel_transforms";
/// The compacted topic holding each transform's last reported status.
pub const STATUS_TOPIC: &str = "_runnel_transform_status";
/// Largest deployment record (header + module).
pub const MAX_DEPLOYMENT_BYTES: usize = 16 << 20;
/// Output record headers used to resume without duplicates.
pub const HEADER_TRANSFORM: &str = "runnel.transform";
pub const HEADER_SOURCE: &str = "runnel.source";
/// Input bytes read per batch.
const READ_BYTES: usize = 1 << 20;
/// How far back the output tail is searched after a restart: bytes of a
/// local partition, records of one on another broker.
const RESUME_SCAN_BYTES: u64 = 16 << 20;
const RESUME_SCAN_RECORDS: i64 = 50_000;

/// One record passed to or returned from a transform.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransformRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Output only: index of the input record it came from.
    pub source_index: u32,
}

/// A loaded transform function.
pub trait TransformFn: Send + Sync {
    /// Transforms a batch. Errors are plain messages; the runner applies
    /// the deployment's error policy.
    fn apply(&self, input: &[TransformRecord]) -> Result<Vec<TransformRecord>, String>;
}

/// Turns a deployment's module and config into a function.
pub trait TransformEngine: Send + Sync + 'static {
    fn load(&self, deployment: &Deployment) -> Result<Arc<dyn TransformFn>, String>;
}

/// What happens to a batch the function fails on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum OnError {
    /// Stop the transform until it is redeployed.
    Stop,
    /// Skip the batch and go on.
    Skip,
    /// Write the batch's input records to this topic, with the error in
    /// headers, and go on.
    DeadLetter(String),
}

impl From<OnError> for String {
    fn from(e: OnError) -> String {
        match e {
            OnError::Stop => "stop".into(),
            OnError::Skip => "skip".into(),
            OnError::DeadLetter(t) => format!("dead-letter:{t}"),
        }
    }
}

impl TryFrom<String> for OnError {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "stop" => Ok(OnError::Stop),
            "skip" => Ok(OnError::Skip),
            other => match other.strip_prefix("dead-letter:") {
                Some(t) if !t.is_empty() => Ok(OnError::DeadLetter(t.to_string())),
                _ => Err(format!(
                    "'{other}' is not stop, skip or dead-letter:<topic>"
                )),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentHeader {
    pub name: String,
    pub input_topic: String,
    pub output_topic: String,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    pub on_error: OnError,
    #[serde(default)]
    pub from_beginning: bool,
    pub sha256: String,
    pub deployed_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub header: DeploymentHeader,
    pub module: Bytes,
}

impl Deployment {
    pub fn encode(&self) -> Result<Bytes, String> {
        let header = serde_json::to_vec(&self.header).map_err(|e| e.to_string())?;
        let mut out = BytesMut::with_capacity(4 + header.len() + self.module.len());
        out.put_u32(header.len() as u32);
        out.put_slice(&header);
        out.put_slice(&self.module);
        if out.len() > MAX_DEPLOYMENT_BYTES {
            return Err(format!(
                "deployment of {} bytes exceeds {MAX_DEPLOYMENT_BYTES}",
                out.len()
            ));
        }
        Ok(out.freeze())
    }

    pub fn decode(raw: &Bytes) -> Result<Deployment, String> {
        if raw.len() < 4 {
            return Err("deployment record is too short".into());
        }
        let len = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
        let header = raw
            .get(4..4 + len)
            .ok_or("deployment header is truncated")?;
        let header: DeploymentHeader =
            serde_json::from_slice(header).map_err(|e| format!("deployment header: {e}"))?;
        Ok(Deployment {
            header,
            module: raw.slice(4 + len..),
        })
    }
}

/// A transform's state as last reported by its runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransformStatus {
    pub state: String,
    #[serde(default)]
    pub error: Option<String>,
    pub sha256: String,
    pub updated_at_ms: i64,
}

/// Encodes records as one uncompressed batch for an append.
pub fn encode_records(records: &[TransformRecord]) -> Result<Bytes, BrokerError> {
    let encoded: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // offset - sequence constant: one batch, base sequence -1.
            sequence: i as i32 - 1,
            timestamp: if r.timestamp >= 0 {
                r.timestamp
            } else {
                now_ms()
            },
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        kafka_protocol::protocol::StrBytes::from_string(k.clone()),
                        v.clone(),
                    )
                })
                .collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &encoded,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| BrokerError::Io(std::io::Error::other(format!("encoding records: {e}"))))?;
    Ok(buf.freeze())
}

/// Reads whole decoded records of a partition from `position`, at most
/// about `max_bytes`. Returns the records and the offset after the last
/// batch read (which may skip control batches).
pub fn read_records(
    partition: &Partition,
    position: i64,
    max_bytes: usize,
) -> Result<(Vec<TransformRecord>, i64), BrokerError> {
    let Some(slice) = partition.read(position, max_bytes, true)? else {
        return Ok((Vec::new(), position));
    };
    read_batches(&slice.read()?, position)
}

/// Decodes the records of stored batches (`bytes`), skipping control
/// batches and records before `position`. Returns the records and the
/// offset after the last batch.
pub fn read_batches(
    bytes: &Bytes,
    position: i64,
) -> Result<(Vec<TransformRecord>, i64), BrokerError> {
    let mut records = Vec::new();
    let mut next = position;
    for item in BatchIter::new(bytes, false) {
        let Ok((at, header)) = item else { break };
        next = header.next_offset();
        if header.is_control() {
            continue;
        }
        let raw = bytes.slice(at..at + header.total_bytes());
        let set = decode_batch(&raw, MAX_DECOMPRESSED_BYTES).map_err(|e| {
            BrokerError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            ))
        })?;
        for r in set.records {
            if r.offset < position {
                continue;
            }
            records.push(TransformRecord {
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                source_index: 0,
            });
        }
    }
    Ok((records, next))
}

/// Runs every deployed transform of a broker.
pub struct TransformManager {
    broker: Arc<Broker>,
    /// Where writes, progress and output tails go (local or remote).
    route: route::Route,
    engine: Arc<dyn TransformEngine>,
    running: Mutex<HashMap<String, RunningTransform>>,
    /// What each transform did on this broker (kept after an undeploy,
    /// as counters are).
    counters: Mutex<std::collections::BTreeMap<String, Arc<TransformCounters>>>,
}

/// One transform's work on this broker, over the input partitions it
/// leads.
#[derive(Debug, Default)]
pub struct TransformCounters {
    pub records_in: std::sync::atomic::AtomicU64,
    pub records_out: std::sync::atomic::AtomicU64,
    /// Batches the plugin failed on (stopped, skipped or dead-lettered).
    pub failed_batches: std::sync::atomic::AtomicU64,
    pub dead_letters: std::sync::atomic::AtomicU64,
    /// Batches the plugin ran on, and the time it took (microseconds).
    pub batches: std::sync::atomic::AtomicU64,
    pub apply_us: std::sync::atomic::AtomicU64,
}

impl TransformCounters {
    fn add(counter: &std::sync::atomic::AtomicU64, n: u64) {
        counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

struct RunningTransform {
    header: DeploymentHeader,
    function: Arc<Mutex<Arc<dyn TransformFn>>>,
    stop: watch::Sender<bool>,
}

fn group_for(name: &str) -> String {
    format!("__transform-{name}")
}

impl TransformManager {
    /// Creates the deployment topics if needed and starts following
    /// deployments. A single node creates them before this returns; a node
    /// of a cluster in the background, once as many brokers as their
    /// replication factor are alive.
    pub async fn start(
        broker: Arc<Broker>,
        engine: Arc<dyn TransformEngine>,
    ) -> Result<Arc<TransformManager>, BrokerError> {
        let manager = Arc::new(TransformManager {
            route: route::Route::new(broker.clone()),
            broker,
            engine,
            running: Mutex::new(HashMap::new()),
            counters: Mutex::new(Default::default()),
        });
        let replication_factor = manager.broker.internal_replication_factor();
        if replication_factor == 1 {
            manager.create_topics(1).await?;
            let me = manager.clone();
            tokio::spawn(async move { me.follow_deployments().await });
        } else {
            let me = manager.clone();
            tokio::spawn(async move {
                // Created earlier, the topics would keep fewer replicas.
                me.broker
                    .wait_for_live_brokers(replication_factor, Duration::MAX)
                    .await;
                loop {
                    match me.create_topics(replication_factor as i16).await {
                        Ok(()) => break,
                        Err(e) => {
                            warn!(error = %e, "creating the transforms' topics failed; trying again");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
                me.follow_deployments().await
            });
        }
        Ok(manager)
    }

    async fn create_topics(&self, replication_factor: i16) -> Result<(), BrokerError> {
        for topic in [DEPLOYMENTS_TOPIC, STATUS_TOPIC] {
            if self.broker.topic(topic).is_none() {
                let mut configs = BTreeMap::new();
                configs.insert("cleanup.policy".to_string(), "compact".to_string());
                configs.insert(
                    "max.message.bytes".to_string(),
                    MAX_DEPLOYMENT_BYTES.to_string(),
                );
                match self
                    .broker
                    .metadata()
                    .create_topic(topic, 1, replication_factor, configs, false)
                    .await
                {
                    Ok(_) | Err(BrokerError::TopicExists(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Applies every deployment record as it is committed: read from this
    /// broker's replica of the topic, or (a broker with none, in a larger
    /// cluster) from a copy that follows its leader.
    async fn follow_deployments(self: Arc<Self>) {
        let followed = self.broker.follow_topic(DEPLOYMENTS_TOPIC);
        let mut position: Option<(uuid::Uuid, i64)> = None;
        loop {
            let Some(mut source) = followed.source() else {
                tracing::debug!("{DEPLOYMENTS_TOPIC} does not exist yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let mut at = match position {
                Some((id, at)) if id == source.topic_id => at,
                // First read, or the topic was made again.
                _ => source.partition.bounds().0,
            };
            loop {
                match source.partition.read(at, 64 << 20) {
                    Ok(Some(bytes)) => match read_batches(&bytes, at) {
                        Ok((records, next)) => {
                            for r in records {
                                self.apply_deployment_record(&r).await;
                            }
                            if next > at {
                                at = next;
                                continue;
                            }
                        }
                        Err(e) => error!(error = %e, "reading {DEPLOYMENTS_TOPIC} failed"),
                    },
                    Ok(None) => {}
                    Err(BrokerError::Read(crate::storage::ReadError::OffsetOutOfRange {
                        log_start,
                        ..
                    })) if log_start > at => {
                        at = log_start;
                        continue;
                    }
                    Err(e) => error!(error = %e, "reading {DEPLOYMENTS_TOPIC} failed"),
                }
                break;
            }
            position = Some((source.topic_id, at));
            // Woken by what the source commits next; looked up again now
            // and then, as the source moves (a replica made here).
            let _ = tokio::time::timeout(Duration::from_secs(1), source.changes.changed()).await;
        }
    }

    async fn apply_deployment_record(self: &Arc<Self>, record: &TransformRecord) {
        let Some(name) = record
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
        else {
            return;
        };
        let Some(value) = &record.value else {
            if let Some(r) = lock(&self.running).remove(&name) {
                let _ = r.stop.send(true);
                info!(transform = %name, "transform deleted");
            }
            return;
        };
        let deployment = match Deployment::decode(value) {
            Ok(d) => d,
            Err(e) => {
                warn!(transform = %name, error = %e, "ignoring unreadable deployment");
                return;
            }
        };
        let function = match self.engine.load(&deployment) {
            Ok(f) => f,
            Err(e) => {
                error!(transform = %name, error = %e, "cannot load the transform");
                self.report(
                    &name,
                    "failed",
                    Some(format!("cannot load the module: {e}")),
                    &deployment.header.sha256,
                )
                .await;
                return;
            }
        };
        let (function, stopped) = {
            let mut running = lock(&self.running);
            let mut function = Some(function);
            if let Some(existing) = running.get_mut(&name) {
                let same_wiring = existing.header.input_topic == deployment.header.input_topic
                    && existing.header.output_topic == deployment.header.output_topic
                    && existing.header.on_error == deployment.header.on_error;
                if same_wiring {
                    // Hot swap: the next batch uses the new function.
                    *lock(&existing.function) = function.take().expect("function present");
                    existing.header = deployment.header.clone();
                } else {
                    let _ = existing.stop.send(true);
                    running.remove(&name);
                }
            }
            match function {
                None => (None, None),
                Some(function) => {
                    let (stop, stopped) = watch::channel(false);
                    let function = Arc::new(Mutex::new(function));
                    running.insert(
                        name.clone(),
                        RunningTransform {
                            header: deployment.header.clone(),
                            function: function.clone(),
                            stop,
                        },
                    );
                    (Some(function), Some(stopped))
                }
            }
        };
        let (Some(function), Some(stopped)) = (function, stopped) else {
            info!(transform = %name, sha256 = %deployment.header.sha256, "transform module replaced");
            self.report(&name, "running", None, &deployment.header.sha256)
                .await;
            return;
        };
        info!(transform = %name, input = %deployment.header.input_topic, output = %deployment.header.output_topic, "transform deployed");
        let me = self.clone();
        tokio::spawn(async move { me.run(deployment.header, function, stopped).await });
    }

    async fn report(&self, name: &str, state: &str, error: Option<String>, sha256: &str) {
        let status = TransformStatus {
            state: state.into(),
            error,
            sha256: sha256.into(),
            updated_at_ms: now_ms(),
        };
        let Ok(value) = serde_json::to_vec(&status) else {
            return;
        };
        let record = TransformRecord {
            key: Some(Bytes::from(name.to_string())),
            value: Some(Bytes::from(value)),
            timestamp: -1,
            ..Default::default()
        };
        let result = match encode_records(&[record]) {
            Ok(batch) => self.route.append(STATUS_TOPIC, 0, batch).await,
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = result {
            warn!(transform = name, error = %e, "could not record transform status");
        }
    }

    async fn run(
        self: Arc<Self>,
        header: DeploymentHeader,
        function: Arc<Mutex<Arc<dyn TransformFn>>>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let name = header.name.clone();
        let (input, output) = loop {
            let input = self.broker.topic(&header.input_topic);
            let output = self
                .broker
                .metadata()
                .topic_or_auto_create(&header.output_topic, true)
                .await
                .ok();
            if let (Some(i), Some(o)) = (input, output) {
                break (i, o);
            }
            self.report(
                &name,
                "waiting",
                Some(format!("waiting for topic '{}'", header.input_topic)),
                &header.sha256,
            )
            .await;
            tokio::select! {
                _ = stopped.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };
        // The input partitions this broker leads, with their positions and
        // a receiver of their appends. Leadership moves: each round takes
        // up the partitions led here now (resuming after what was committed
        // and written) and drops the others.
        let mut led: HashMap<i32, (Arc<Partition>, watch::Receiver<i64>, i64)> = HashMap::new();
        let mut reported_running = false;
        loop {
            if *stopped.borrow() {
                return;
            }
            let partitions = input.partitions();
            led.retain(|index, _| {
                partitions
                    .iter()
                    .any(|p| p.index == *index && p.is_leader())
            });
            for partition in partitions.into_iter().filter(|p| p.is_leader()) {
                if led.contains_key(&partition.index) {
                    continue;
                }
                let changes = partition.subscribe();
                match self.resume_position(&header, &output, &partition).await {
                    Ok(position) => {
                        info!(transform = %name, partition = partition.index, position, "transform takes up a partition led here");
                        led.insert(partition.index, (partition, changes, position));
                    }
                    Err(message) => {
                        warn!(transform = %name, partition = partition.index, "cannot resume: {message}; trying again");
                    }
                }
            }
            if !reported_running {
                self.report(&name, "running", None, &header.sha256).await;
                reported_running = true;
            }
            let mut progressed = false;
            let indexes: Vec<i32> = led.keys().copied().collect();
            for index in indexes {
                let Some((partition, _, position)) = led.get(&index) else {
                    continue;
                };
                let (partition, position) = (partition.clone(), *position);
                match self
                    .step(&header, &function, &partition, &output, position)
                    .await
                {
                    Ok(next) if next > position => {
                        if let Some(entry) = led.get_mut(&index) {
                            entry.2 = next;
                        }
                        progressed = true;
                    }
                    Ok(_) => {}
                    Err(StepError::Stopped(message)) => {
                        error!(transform = %name, partition = index, "{message}; transform stopped until redeployed");
                        self.report(&name, "failed", Some(message), &header.sha256)
                            .await;
                        let _ = stopped.changed().await;
                        return;
                    }
                    Err(StepError::Retry(message)) => {
                        warn!(transform = %name, partition = index, "{message}; retrying");
                        // Outputs may have been written without their
                        // commit: resume from what the output holds.
                        led.remove(&index);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            if !progressed {
                // Woken by an append to a led partition, or after a second
                // (leadership may have moved).
                let changed = async {
                    if led.is_empty() {
                        futures::future::pending::<()>().await;
                    }
                    let _ = futures::future::select_all(
                        led.values_mut().map(|(_, rx, _)| Box::pin(rx.changed())),
                    )
                    .await;
                };
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = changed => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }

    /// Where processing of an input partition starts: after the committed
    /// position, and after the last record of it the output already holds
    /// (written but not committed before a crash or a leadership change).
    async fn resume_position(
        &self,
        header: &DeploymentHeader,
        output: &Arc<crate::broker::Topic>,
        partition: &Arc<Partition>,
    ) -> Result<i64, String> {
        let committed = self
            .route
            .committed(&group_for(&header.name), &header.input_topic)
            .await?;
        let bounds = partition.offsets();
        let start = match committed.get(&partition.index) {
            Some(&offset) => offset,
            None if header.from_beginning => bounds.log_start,
            // Records produced since the deployment, wherever and whenever
            // a broker takes the partition up (brokers of a cluster see
            // the deployment at slightly different moments).
            None => match partition.offset_for_timestamp(header.deployed_at_ms) {
                Ok(Some((offset, _))) => offset,
                Ok(None) => bounds.high_watermark,
                Err(e) => return Err(format!("finding where the deployment began: {e}")),
            },
        };
        let out_index = partition.index % output.partition_count().max(1);
        let written = self
            .route
            .last_written_source(
                &header.name,
                &header.output_topic,
                out_index,
                partition.index,
                RESUME_SCAN_BYTES,
                RESUME_SCAN_RECORDS,
            )
            .await?;
        let resumed = written.map_or(start, |s| start.max(s + 1));
        Ok(resumed.max(bounds.log_start))
    }

    /// Processes one batch of one partition. Returns the next position.
    async fn step(
        &self,
        header: &DeploymentHeader,
        function: &Arc<Mutex<Arc<dyn TransformFn>>>,
        partition: &Arc<Partition>,
        output: &Arc<crate::broker::Topic>,
        position: i64,
    ) -> Result<i64, StepError> {
        let (records, next) = match read_records(partition, position, READ_BYTES) {
            Ok(r) => r,
            Err(BrokerError::Read(crate::storage::ReadError::OffsetOutOfRange {
                log_start,
                ..
            })) if log_start > position => {
                return Ok(log_start);
            }
            Err(e) => return Err(StepError::Retry(format!("reading input: {e}"))),
        };
        if records.is_empty() {
            if next > position {
                self.commit(header, partition.index, next).await?;
            }
            return Ok(next);
        }
        let f = lock(function).clone();
        let input = records.clone();
        let counters = self.counters(&header.name);
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || f.apply(&input))
            .await
            .map_err(|e| StepError::Retry(format!("transform task failed: {e}")))?;
        TransformCounters::add(&counters.batches, 1);
        TransformCounters::add(
            &counters.apply_us,
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        );
        TransformCounters::add(&counters.records_in, records.len() as u64);
        if result.is_err() {
            TransformCounters::add(&counters.failed_batches, 1);
        }
        let out_index = partition.index % output.partition_count().max(1);
        match result {
            Ok(outputs) => {
                if !outputs.is_empty() {
                    let tagged: Vec<TransformRecord> = outputs
                        .into_iter()
                        .map(|mut r| {
                            let source = records
                                .get(r.source_index as usize)
                                .map_or(r.offset, |s| s.offset);
                            r.headers.push((
                                HEADER_TRANSFORM.into(),
                                Some(Bytes::from(header.name.clone())),
                            ));
                            r.headers.push((
                                HEADER_SOURCE.into(),
                                Some(Bytes::from(format!("{}:{source}", partition.index))),
                            ));
                            r
                        })
                        .collect();
                    let tagged_len = tagged.len();
                    let batch =
                        encode_records(&tagged).map_err(|e| StepError::Retry(e.to_string()))?;
                    self.route
                        .append(&header.output_topic, out_index, batch)
                        .await
                        .map_err(|e| {
                            StepError::Retry(format!("writing to '{}': {e}", header.output_topic))
                        })?;
                    TransformCounters::add(&counters.records_out, tagged_len as u64);
                }
            }
            Err(message) => match &header.on_error {
                OnError::Stop => {
                    return Err(StepError::Stopped(format!(
                        "the plugin failed on partition {} at offset {position}: {message}",
                        partition.index
                    )))
                }
                OnError::Skip => {
                    warn!(transform = %header.name, partition = partition.index, offset = position, "skipping a batch the plugin failed on: {message}");
                }
                OnError::DeadLetter(topic) => {
                    self.broker
                        .metadata()
                        .topic_or_auto_create(topic, true)
                        .await
                        .map_err(|e| {
                            StepError::Retry(format!("dead-letter topic '{topic}': {e}"))
                        })?;
                    let dead: Vec<TransformRecord> = records
                        .iter()
                        .map(|r| {
                            let mut d = r.clone();
                            d.headers
                                .push(("runnel.error".into(), Some(Bytes::from(message.clone()))));
                            d.headers.push((
                                "runnel.error.stage".into(),
                                Some(Bytes::from(format!("transform {}", header.name))),
                            ));
                            d.headers.push((
                                "runnel.source.topic".into(),
                                Some(Bytes::from(header.input_topic.clone())),
                            ));
                            d.headers.push((
                                "runnel.source.partition".into(),
                                Some(Bytes::from(partition.index.to_string())),
                            ));
                            d.headers.push((
                                "runnel.source.offset".into(),
                                Some(Bytes::from(r.offset.to_string())),
                            ));
                            d
                        })
                        .collect();
                    let batch =
                        encode_records(&dead).map_err(|e| StepError::Retry(e.to_string()))?;
                    self.route
                        .append(topic, 0, batch)
                        .await
                        .map_err(|e| StepError::Retry(format!("writing to '{topic}': {e}")))?;
                    TransformCounters::add(&counters.dead_letters, records.len() as u64);
                }
            },
        }
        self.commit(header, partition.index, next).await?;
        Ok(next)
    }

    async fn commit(
        &self,
        header: &DeploymentHeader,
        partition: i32,
        next: i64,
    ) -> Result<(), StepError> {
        self.route
            .commit(
                &group_for(&header.name),
                &header.input_topic,
                partition,
                next,
            )
            .await
            .map_err(StepError::Retry)
    }

    /// The counters of transform `name` (made on first use).
    fn counters(&self, name: &str) -> Arc<TransformCounters> {
        lock(&self.counters)
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Every transform's counters, and whether it runs here now, in
    /// Prometheus' text format.
    pub fn render_prometheus(&self) -> String {
        use std::fmt::Write;
        use std::sync::atomic::Ordering::Relaxed;
        let running = self.running();
        let all: Vec<(String, Arc<TransformCounters>)> = lock(&self.counters)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        type Value = fn(&TransformCounters) -> String;
        let rows: [(&str, &str, &str, Value); 6] = [
            (
                "runnel_transform_records_in_total",
                "counter",
                "Records a broker-side transform read from its input partitions led here.",
                |c| c.records_in.load(Relaxed).to_string(),
            ),
            (
                "runnel_transform_records_out_total",
                "counter",
                "Records a transform wrote to its output topic.",
                |c| c.records_out.load(Relaxed).to_string(),
            ),
            (
                "runnel_transform_failed_batches_total",
                "counter",
                "Batches a transform's plugin failed on.",
                |c| c.failed_batches.load(Relaxed).to_string(),
            ),
            (
                "runnel_transform_dead_letters_total",
                "counter",
                "Records a transform sent to its dead-letter topic.",
                |c| c.dead_letters.load(Relaxed).to_string(),
            ),
            (
                "runnel_transform_batches_total",
                "counter",
                "Batches a transform's plugin ran on.",
                |c| c.batches.load(Relaxed).to_string(),
            ),
            (
                "runnel_transform_seconds_total",
                "counter",
                "Time a transform's plugin took over its batches.",
                |c| (c.apply_us.load(Relaxed) as f64 / 1e6).to_string(),
            ),
        ];
        let label = |name: &str| name.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::new();
        for (metric, kind, help, value) in rows {
            let _ = write!(out, "# HELP {metric} {help}\n# TYPE {metric} {kind}\n");
            for (name, c) in &all {
                let _ = writeln!(
                    out,
                    "{metric}{{transform=\"{}\"}} {}",
                    label(name),
                    value(c)
                );
            }
        }
        let metric = "runnel_transform_running";
        let _ = write!(
            out,
            "# HELP {metric} 1 for a transform running on this broker.\n# TYPE {metric} gauge\n"
        );
        for name in &running {
            let _ = writeln!(out, "{metric}{{transform=\"{}\"}} 1", label(name));
        }
        out
    }

    /// Names of running transforms (for tests and tools).
    pub fn running(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.running).keys().cloned().collect();
        names.sort();
        names
    }
}

enum StepError {
    Stopped(String),
    Retry(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployments_round_trip_and_bad_ones_are_reported() {
        let d = Deployment {
            header: DeploymentHeader {
                name: "t".into(),
                input_topic: "a".into(),
                output_topic: "b".into(),
                config: BTreeMap::from([("k".to_string(), "v".to_string())]),
                on_error: OnError::DeadLetter("dlq".into()),
                from_beginning: true,
                sha256: "abc".into(),
                deployed_at_ms: 5,
            },
            module: Bytes::from_static(b"\0asm\x01\0\0\0"),
        };
        let raw = d.encode().unwrap();
        assert_eq!(Deployment::decode(&raw).unwrap(), d);
        assert!(Deployment::decode(&raw.slice(..3)).is_err());
        assert!(Deployment::decode(&Bytes::from_static(b"\0\0\0\x09{bad json")).is_err());
        assert_eq!(OnError::try_from("skip".to_string()), Ok(OnError::Skip));
        assert!(OnError::try_from("dead-letter:".to_string()).is_err());
    }
}
