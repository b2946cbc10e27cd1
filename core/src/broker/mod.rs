//! The broker: the metadata authority, the partitions' logs, the
//! coordinators built on internal topics, and the background work that
//! keeps the logs healthy, wired together. Each lives in its own module:
//!
//! - `metadata.rs`: which topics exist, their configs and the configs
//!   changed at runtime, and the admin operations (recorded through
//!   `meta.rs`);
//! - `topic.rs`, `partition.rs`: a topic and its live partitions (the
//!   append and read path);
//! - `log_manager.rs`, `cleaning.rs`: opening logs, creating and removing
//!   partition directories, retention, flush and checkpoints, compaction;
//! - `metrics.rs`: the broker's counters and storage health;
//! - `coordinators.rs`: the partitions handed to the group and transaction
//!   coordinators and the schema catalog, which know them only through
//!   [`crate::internal_topic`];
//! - `transactions.rs`: transaction markers on the partitions led here, and
//!   what the transaction coordinator asks of the broker;
//! - `producer_ids.rs`: producer id blocks for InitProducerId.
//!
//! This layer speaks in domain terms (topics, offsets, configs) and returns
//! typed errors; the `server` module translates Kafka requests into calls
//! here and errors into Kafka error codes. Nothing here touches sockets.

pub mod cleaning;
mod coordinators;
pub mod exposition;
pub mod followed_topic;
pub mod log_manager;
pub mod meta;
pub mod metadata;
pub mod metrics;
mod partition;
pub mod producer_ids;
mod replica_fetcher;
mod topic;
mod transactions;

use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info};
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::group::GroupCoordinator;
use crate::schemas::SchemaCatalog;
use crate::txn::{Marker, TransactionCoordinator};
use cleaning::{CleanerPassSummary, LogCleanerState};
use log_manager::LogManager;
use meta::DataDirLock;
use metadata::Metadata;

pub use crate::error::BrokerError;
pub use crate::util::now_ms;
pub use metadata::{BrokerConfigScope, ConfigChange};
pub use metrics::{is_disk_full, BrokerMetrics, CloseReason, StorageHealth};
pub use partition::{Partition, PartitionOffsets};
pub use topic::{
    is_system_topic, validate_topic_name, Topic, CONNECT_TOPICS, INTERNAL_TOPICS,
    MAX_TOPIC_NAME_LEN, SYSTEM_TOPIC_PREFIX,
};

/// Kafka's replication factor for internal topics (3), bounded by the
/// voters of the metadata quorum.
pub(crate) fn internal_replication_factor(config: &BrokerConfig) -> usize {
    const KAFKA_INTERNAL_REPLICATION_FACTOR: usize = 3;
    let voters = match &config.controller_quorum {
        Some(_) => config.controller_listener().map_or(1, |(v, _)| v.len()),
        None => 1,
    };
    KAFKA_INTERNAL_REPLICATION_FACTOR.min(voters.max(1))
}
/// How long a stopping broker waits for the quorum to hand its partitions
/// over before it stops anyway (the session timeout then does it).
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How often every partition's high watermark is checkpointed.
const HIGH_WATERMARK_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// The broker. Shared by every connection as `Arc<Broker>`.
pub struct Broker {
    /// The configuration the broker started with (file, flags, defaults).
    config: BrokerConfig,
    cluster_id: String,
    metadata: Arc<Metadata>,
    logs: Arc<LogManager>,
    metrics: BrokerMetrics,
    producer_ids: Arc<producer_ids::ProducerIdAllocator>,
    groups: Arc<GroupCoordinator>,
    transactions: Arc<TransactionCoordinator>,
    /// Whether `__transaction_state` was asked for (it is made once).
    transaction_state_requested: AtomicBool,
    schemas: SchemaCatalog,
    _lock: DataDirLock,
}

impl Broker {
    /// Opens the data directory: takes its lock, loads metadata, opens
    /// (and if needed recovers) every partition log and loads the group
    /// coordinator.
    pub async fn open(config: BrokerConfig) -> Result<Arc<Broker>, BrokerError> {
        config.validate()?;
        let dir = config.data_dir.clone();
        let lock = meta::lock_data_dir(&dir)?;
        let quorum_id = match &config.controller_quorum {
            Some(_) => {
                let (voters, _) = config.controller_listener()?;
                let voters: Vec<(u64, String)> =
                    voters.into_iter().map(|v| (v.id, v.addr)).collect();
                Some(meta::cluster_id_of_quorum(&voters))
            }
            None => None,
        };
        let cluster_id = meta::load_or_create_identity(&dir, config.node_id, quorum_id.as_deref())?;
        let metrics = BrokerMetrics::default();
        let logs = Arc::new(LogManager::new(&config, metrics.storage.clone()));
        let metadata = Metadata::open(&config, logs.clone()).await?;
        let producer_ids = Arc::new(producer_ids::ProducerIdAllocator::new());
        let groups = coordinators::start_group_coordinator(&metadata, &config).await?;
        let transactions =
            coordinators::start_transaction_coordinator(&metadata, &config, &groups, &producer_ids);
        let schemas = SchemaCatalog::new(followed_topic::FollowedTopic::start(
            metadata.clone(),
            runnel_schema_registry::SCHEMAS_TOPIC,
        ));
        Ok(Arc::new(Broker {
            config,
            cluster_id,
            metadata,
            logs,
            metrics,
            producer_ids,
            groups,
            transactions,
            transaction_state_requested: AtomicBool::new(false),
            schemas,
            _lock: lock,
        }))
    }

    /// The configuration the broker started with. Topic defaults may have
    /// changed since: see [`Metadata::log_defaults`].
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Topics, configs and the admin operations on them.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The partitions' logs on disk.
    pub fn logs(&self) -> &LogManager {
        &self.logs
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn metrics(&self) -> &BrokerMetrics {
        &self.metrics
    }

    /// A producer id no broker of the cluster handed out before.
    pub async fn allocate_producer_id(&self) -> Result<i64, BrokerError> {
        self.producer_ids
            .allocate(|| self.metadata.allocate_producer_ids())
            .await
    }

    /// The registry state used for broker-side schema validation.
    pub fn schemas(&self) -> &SchemaCatalog {
        &self.schemas
    }

    /// The group coordinator (consumer groups and committed offsets).
    pub fn groups(&self) -> &Arc<GroupCoordinator> {
        &self.groups
    }

    /// The transaction coordinator (transactional ids, their transactions).
    pub fn transactions(&self) -> &Arc<TransactionCoordinator> {
        &self.transactions
    }

    /// Makes `__transaction_state` in the background unless it exists or
    /// was asked for already (the first FindCoordinator for a
    /// transactional id does).
    pub fn request_transaction_state_topic(&self) {
        if !self
            .transaction_state_requested
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            coordinators::create_transaction_state_topic(&self.metadata, &self.config);
        }
    }

    /// Writes a transaction marker to a partition this broker leads and
    /// waits for its in-sync replicas (WriteTxnMarkers).
    pub async fn write_txn_marker(
        &self,
        topic: &str,
        index: i32,
        marker: Marker,
    ) -> Result<(), BrokerError> {
        transactions::write_marker(&self.metadata, &self.groups, topic, index, marker).await
    }

    /// The replication factor of the internal topics (`__consumer_offsets`,
    /// `_schemas`, connect's and the transforms' topics): Kafka's 3,
    /// bounded by the voters of the metadata quorum (1 for a single node).
    pub fn internal_replication_factor(&self) -> usize {
        internal_replication_factor(&self.config)
    }

    /// Waits until at least `count` brokers are registered and unfenced, or
    /// `timeout` passed; returns whether they are.
    pub async fn wait_for_live_brokers(&self, count: usize, timeout: Duration) -> bool {
        self.metadata.wait_for_live_brokers(count, timeout).await
    }

    /// Host and port clients should connect to.
    pub fn advertised_address(&self) -> (String, i32) {
        let addr = self
            .config
            .advertised_kafka_addr
            .as_deref()
            .unwrap_or(&self.config.kafka_addr);
        match addr.rsplit_once(':') {
            Some((host, port)) => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                (host.to_string(), port.parse().unwrap_or(9092))
            }
            None => (addr.to_string(), 9092),
        }
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.metadata.topic(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.metadata.topic_by_id(id)
    }

    /// Partition 0 of internal topic `topic`, read locally or, on a broker
    /// with no replica of it, from a copy that follows its leader.
    pub fn follow_topic(&self, topic: &str) -> Arc<followed_topic::FollowedTopic> {
        followed_topic::FollowedTopic::start(self.metadata.clone(), topic)
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.metadata.topics()
    }

    pub fn partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>, BrokerError> {
        self.metadata.partition(topic, index)
    }

    /// Applies retention to every partition.
    pub fn apply_retention(&self) {
        if self.logs.apply_retention(&self.topics()) > 0 {
            self.log_start_changed();
        }
    }

    /// Fsyncs every partition with new data and records recovery points
    /// and log starts.
    pub fn flush_and_checkpoint(&self, closing: bool) -> io::Result<()> {
        self.logs.flush(&self.topics(), closing)?;
        self.logs.write_high_watermark_checkpoint(&self.topics())?;
        self.logs.write_log_start_checkpoint(&self.topics())
    }

    /// One pass of the log cleaner over every compacted partition.
    /// Blocking: call from a blocking thread.
    pub fn run_log_cleaner(&self, state: &mut LogCleanerState) -> CleanerPassSummary {
        let summary = self.logs.run_log_cleaner(&self.topics(), state);
        if summary.log_start_moved {
            self.log_start_changed();
        }
        summary
    }

    /// Records a log start change (DeleteRecords, retention, compaction)
    /// durably.
    pub fn log_start_changed(&self) {
        if let Err(e) = self.logs.write_log_start_checkpoint(&self.topics()) {
            error!(error = %e, "writing log start checkpoint failed");
        }
    }

    /// Runs retention, periodic flushing, the log cleaner and group
    /// maintenance until the broker is dropped.
    pub fn spawn_background_tasks(self: &Arc<Self>) {
        self.spawn_log_cleaner();
        self.groups().spawn_background_tasks(Duration::from_millis(
            self.config.offsets_retention_check_interval_ms.max(100),
        ));
        let weak = Arc::downgrade(self);
        let retention_every =
            Duration::from_millis(self.config.retention_check_interval_ms.max(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(retention_every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(broker) = weak.upgrade() else { break };
                let _ = tokio::task::spawn_blocking(move || broker.apply_retention()).await;
            }
        });
        let weak = Arc::downgrade(self);
        let flush_every = Duration::from_millis(self.config.flush_checkpoint_interval_ms.max(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(flush_every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(broker) = weak.upgrade() else { break };
                let result =
                    tokio::task::spawn_blocking(move || broker.flush_and_checkpoint(false)).await;
                if let Ok(Err(e)) = result {
                    error!(error = %e, "checkpoint failed");
                }
            }
        });
        // High watermarks more often (Kafka's
        // replica.high.watermark.checkpoint.interval.ms): one small file.
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HIGH_WATERMARK_CHECKPOINT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(broker) = weak.upgrade() else { break };
                let result = tokio::task::spawn_blocking(move || {
                    broker
                        .logs
                        .write_high_watermark_checkpoint(&broker.topics())
                })
                .await;
                if let Ok(Err(e)) = result {
                    error!(error = %e, "writing the high watermark checkpoint failed");
                }
            }
        });
    }

    /// Starts the cleaner task; it stops when the broker is dropped.
    fn spawn_log_cleaner(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every = Duration::from_millis(self.config.log_cleaner_interval_ms.max(10));
        let data_dir = self.config.data_dir.clone();
        tokio::spawn(async move {
            let mut state: Option<LogCleanerState> = None;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(broker) = weak.upgrade() else { break };
                let taken = state.take();
                let data_dir = data_dir.clone();
                let result = tokio::task::spawn_blocking(move || {
                    let mut state = taken.unwrap_or_else(|| LogCleanerState::load(&data_dir));
                    broker.run_log_cleaner(&mut state);
                    state
                })
                .await;
                match result {
                    Ok(s) => state = Some(s),
                    // The state is read again from the checkpoint next time.
                    Err(e) => error!(error = %e, "log cleaner pass panicked"),
                }
            }
        });
    }

    /// Flushes every log and writes checkpoints; call before exiting.
    pub fn shutdown(&self) -> io::Result<()> {
        self.flush_and_checkpoint(true)?;
        info!("storage flushed and checkpointed");
        Ok(())
    }

    /// Hands this broker's partitions over to other replicas before it
    /// stops (Kafka's controlled shutdown, see
    /// [`Metadata::controlled_shutdown`]); call while the Kafka listener
    /// still serves, before [`Broker::shutdown`].
    pub async fn controlled_shutdown(&self) {
        self.metadata
            .controlled_shutdown(CONTROLLED_SHUTDOWN_TIMEOUT)
            .await;
    }

    /// Stops the metadata controller (releasing its directory); after
    /// [`Broker::shutdown`], before exiting.
    pub async fn stop_controller(&self) {
        self.metadata.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::AppendError;
    use bytes::Bytes;
    use std::collections::BTreeMap;
    use std::sync::atomic::Ordering;

    /// One uncompressed batch of `count` small records.
    fn batch(count: usize) -> Bytes {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32 - 1,
                timestamp: 1000,
                key: None,
                value: Some(Bytes::from(vec![b'v'; 600])),
                headers: Default::default(),
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_append_reaches_the_broker_metrics_and_a_later_success_clears_disk_full() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let broker = Broker::open(BrokerConfig {
            data_dir: data_dir.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let configs = BTreeMap::from([("segment.bytes".to_string(), "1024".to_string())]);
        let topic = broker
            .metadata()
            .create_topic("t", 1, 1, configs, false)
            .await
            .unwrap();
        let partition = topic.partition(0).unwrap();
        partition.append(&batch(1)).await.unwrap();
        broker
            .metrics()
            .storage
            .disk_full
            .store(true, Ordering::Relaxed);

        // The next append has to roll to a new segment file, and the
        // partition's directory is gone: a real I/O error.
        let moved = dir.path().join("moved");
        std::fs::rename(meta::partition_dir(&data_dir, "t", 0), &moved).unwrap();
        let err = partition.append(&batch(1)).await.unwrap_err();
        assert!(
            matches!(err, BrokerError::Append(AppendError::Io(_))),
            "{err:?}"
        );
        let storage = &broker.metrics().storage;
        assert_eq!(storage.errors(), 1);
        assert!(storage.last_error_ms() > 0);
        assert!(storage.disk_full(), "not cleared by a failure");

        // Refusals that are not storage errors are not counted.
        assert!(partition
            .append(&Bytes::from_static(b"junk"))
            .await
            .is_err());
        assert_eq!(storage.errors(), 1);

        std::fs::rename(&moved, meta::partition_dir(&data_dir, "t", 0)).unwrap();
        partition.append(&batch(1)).await.unwrap();
        assert!(!storage.disk_full(), "cleared by the append that succeeded");
        assert_eq!(storage.errors(), 1);
    }
}
