//! The broker's side of [`crate::internal_topic`]: its partitions as the
//! coordinators see them, and the wiring of the group coordinator to
//! `__consumer_offsets` and of the transaction coordinator to
//! `__transaction_state` (made at the first FindCoordinator for a
//! transactional id, as Kafka does).
//!
//! The coordinators (`crate::group`, `crate::schemas`) know only the
//! traits; this file is the one place that hands them the broker's
//! partitions. In a cluster it is where a coordinator is given the
//! partitions this node leads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tracing::{info, warn};
use uuid::Uuid;

use super::metadata::Metadata;
use super::partition::Partition;
use super::producer_ids::ProducerIdAllocator;
use super::transactions::BrokerTxnHost;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::group::{GroupConfig, GroupCoordinator, OFFSETS_TOPIC};
use crate::internal_topic::{InternalPartition, InternalTopics};
use crate::replication::{wait_for_acks_all, AcksAllWait};
use crate::txn::{TransactionCoordinator, TxnConfig, TRANSACTION_STATE_TOPIC};

/// How long a coordinator's write waits for the in-sync replicas.
const INTERNAL_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

impl InternalPartition for Partition {
    fn index(&self) -> i32 {
        self.index
    }

    fn bounds(&self) -> (i64, i64) {
        let offsets = self.offsets();
        (offsets.log_start, offsets.high_watermark)
    }

    fn read(&self, offset: i64, max_bytes: usize) -> Result<Option<Bytes>, BrokerError> {
        match Partition::read(self, offset, max_bytes, true)? {
            Some(slice) => Ok(Some(slice.read()?)),
            None => Ok(None),
        }
    }

    fn log_end(&self) -> i64 {
        self.offsets().log_end
    }

    fn read_to_log_end(&self, offset: i64, max_bytes: usize) -> Result<Option<Bytes>, BrokerError> {
        match self.read_for_follower(offset, max_bytes)? {
            Some(slice) => Ok(Some(slice.read()?)),
            None => Ok(None),
        }
    }

    fn append(self: Arc<Self>, records: Bytes) -> BoxFuture<'static, Result<i64, BrokerError>> {
        Box::pin(async move {
            let leader_epoch = self.leader_epoch();
            let info = Partition::append(&self, &records).await?;
            // As a producer with acks=all (Kafka's offsets.commit.timeout.ms).
            let waited = wait_for_acks_all(
                self.replication_status(),
                leader_epoch,
                info.last_offset + 1,
                1,
                INTERNAL_COMMIT_TIMEOUT,
            )
            .await;
            match waited {
                AcksAllWait::Done | AcksAllWait::NotEnoughReplicasAfterAppend => {
                    Ok(info.base_offset)
                }
                AcksAllWait::NotLeader => Err(BrokerError::NotLeaderOrFollower(
                    self.topic.to_string(),
                    self.index,
                )),
                AcksAllWait::Timeout => Err(BrokerError::NotCommitted(
                    self.topic.to_string(),
                    self.index,
                    format!(
                        "offsets up to {} after {INTERNAL_COMMIT_TIMEOUT:?}",
                        info.last_offset
                    ),
                )),
            }
        })
    }
}

impl InternalTopics for Metadata {
    fn partition(&self, topic: &str, index: i32) -> Option<(Uuid, Arc<dyn InternalPartition>)> {
        let topic = self.topic(topic)?;
        Some((topic.id, topic.partition(index)?))
    }
}

/// The group coordinator of this broker. It owns the partitions of
/// `__consumer_offsets` this broker leads and follows the leadership from
/// then on (see [`follow_leadership`]).
///
/// A single node creates the topic if needed and loads its groups before
/// this returns. A node of a cluster creates it in the background once as
/// many brokers as the topic's replication factor are alive (created
/// earlier, it would keep fewer replicas for good); until then, and while
/// partitions load, clients are told to look again.
pub(super) async fn start_group_coordinator(
    metadata: &Arc<Metadata>,
    config: &BrokerConfig,
) -> Result<Arc<GroupCoordinator>, BrokerError> {
    let group_config = GroupConfig {
        offsets_topic_partitions: config.offsets_topic_partitions,
        offsets_retention_ms: config.offsets_retention_minutes.saturating_mul(60_000),
        initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
        min_session_timeout_ms: config.group_min_session_timeout_ms,
        max_session_timeout_ms: config.group_max_session_timeout_ms,
        max_group_size: config.group_max_size,
        offset_metadata_max_bytes: config.offset_metadata_max_bytes,
    };
    let coordinator = Arc::new(GroupCoordinator::new(group_config));
    let replication_factor = super::internal_replication_factor(config);
    if replication_factor == 1 {
        create_internal_topic(metadata, OFFSETS_TOPIC, config.offsets_topic_partitions, 1).await?;
        for handle in sync_ownership(metadata, OFFSETS_TOPIC, &coordinator) {
            let _ = handle.await;
        }
    } else {
        let metadata = metadata.clone();
        let partitions = config.offsets_topic_partitions;
        tokio::spawn(async move {
            create_when_enough_brokers(&metadata, OFFSETS_TOPIC, partitions, replication_factor)
                .await
        });
    }
    follow_leadership(metadata, OFFSETS_TOPIC, &coordinator);
    Ok(coordinator)
}

/// The transaction coordinator of this broker. It owns the partitions of
/// `__transaction_state` this broker leads once the topic exists (see
/// [`create_transaction_state_topic`]) and follows their leadership.
pub(super) fn start_transaction_coordinator(
    metadata: &Arc<Metadata>,
    config: &BrokerConfig,
    groups: &Arc<GroupCoordinator>,
    producer_ids: &Arc<ProducerIdAllocator>,
) -> Arc<TransactionCoordinator> {
    let host = BrokerTxnHost::new(
        metadata.clone(),
        groups.clone(),
        producer_ids.clone(),
        config.node_id,
    );
    let coordinator = Arc::new(TransactionCoordinator::new(
        TxnConfig {
            partitions: config.transaction_state_partitions,
            max_timeout_ms: config.transaction_max_timeout_ms,
            id_expiration_ms: config.transactional_id_expiration_ms,
            abort_check_interval: Duration::from_millis(config.transaction_abort_check_interval_ms),
        },
        Arc::new(host),
    ));
    coordinator.spawn_background_tasks();
    follow_leadership(metadata, TRANSACTION_STATE_TOPIC, &coordinator);
    coordinator
}

/// Makes `__transaction_state` in the background unless it exists (the
/// first FindCoordinator for a transactional id asks for it, and is told
/// to look again meanwhile); in a cluster, once as many brokers as its
/// replication factor are alive.
pub(super) fn create_transaction_state_topic(metadata: &Arc<Metadata>, config: &BrokerConfig) {
    let metadata = metadata.clone();
    let partitions = config.transaction_state_partitions;
    let replication_factor = super::internal_replication_factor(config);
    tokio::spawn(async move {
        create_when_enough_brokers(
            &metadata,
            TRANSACTION_STATE_TOPIC,
            partitions,
            replication_factor,
        )
        .await
    });
}

/// Creates internal topic `name` (compacted) with `replication_factor`
/// replicas unless it exists.
async fn create_internal_topic(
    metadata: &Metadata,
    name: &str,
    partitions: i32,
    replication_factor: usize,
) -> Result<(), BrokerError> {
    if metadata.image().topic_by_name(name).is_some() {
        return Ok(());
    }
    let mut configs = BTreeMap::new();
    configs.insert("cleanup.policy".to_string(), "compact".to_string());
    configs.insert("segment.bytes".to_string(), (100 << 20).to_string());
    let created = metadata
        .create_topic(name, partitions, replication_factor as i16, configs, false)
        .await;
    match created {
        Ok(t) => {
            info!(
                partitions = t.partition_count(),
                replication_factor, "created {name}"
            );
            Ok(())
        }
        // Another broker of the cluster created it first.
        Err(BrokerError::TopicExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Waits until `replication_factor` brokers are alive, then creates
/// internal topic `name` unless another broker did.
async fn create_when_enough_brokers(
    metadata: &Metadata,
    name: &str,
    partitions: i32,
    replication_factor: usize,
) {
    if !metadata
        .wait_for_live_brokers(replication_factor, Duration::from_secs(10))
        .await
    {
        info!(
            replication_factor,
            "waiting for enough live brokers to create {name}; its coordinator is unavailable until then"
        );
        metadata
            .wait_for_live_brokers(replication_factor, Duration::MAX)
            .await;
    }
    while let Err(e) = create_internal_topic(metadata, name, partitions, replication_factor).await {
        warn!(error = %e, "creating {name} failed; trying again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A coordinator that keeps its state in the partitions of an internal
/// topic and serves what is in the partitions this broker leads.
trait PartitionOwner: Send + Sync + 'static {
    /// The partitions owned, as (index, leader epoch).
    fn owned(&self) -> Vec<(i32, i32)>;
    fn set_partition_count(&self, count: i32);
    fn give_up(&self, index: i32);
    /// Takes over a partition led here in `leader_epoch`; the load started.
    fn take(
        self: &Arc<Self>,
        log: Arc<dyn InternalPartition>,
        leader_epoch: i32,
    ) -> Option<tokio::task::JoinHandle<()>>;
}

impl PartitionOwner for GroupCoordinator {
    fn owned(&self) -> Vec<(i32, i32)> {
        self.owned_partitions()
    }
    fn set_partition_count(&self, count: i32) {
        GroupCoordinator::set_partition_count(self, count)
    }
    fn give_up(&self, index: i32) {
        GroupCoordinator::give_up(self, index)
    }
    fn take(
        self: &Arc<Self>,
        log: Arc<dyn InternalPartition>,
        leader_epoch: i32,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.take_ownership(log, leader_epoch)
    }
}

impl PartitionOwner for TransactionCoordinator {
    fn owned(&self) -> Vec<(i32, i32)> {
        self.owned_partitions()
    }
    fn set_partition_count(&self, count: i32) {
        TransactionCoordinator::set_partition_count(self, count)
    }
    fn give_up(&self, index: i32) {
        TransactionCoordinator::give_up(self, index)
    }
    fn take(
        self: &Arc<Self>,
        log: Arc<dyn InternalPartition>,
        leader_epoch: i32,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.take_ownership(log, leader_epoch)
    }
}

/// Brings the coordinator's partitions in line with the partitions of
/// internal topic `name` this broker leads now: takes over the ones it
/// leads (in a new epoch), gives up the others. Returns the loads started.
fn sync_ownership<C: PartitionOwner>(
    metadata: &Metadata,
    name: &str,
    coordinator: &Arc<C>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let owned = coordinator.owned();
    let Some(topic) = metadata.topic(name) else {
        for (index, _) in owned {
            coordinator.give_up(index);
        }
        return Vec::new();
    };
    coordinator.set_partition_count(topic.partition_count());
    for (index, _) in &owned {
        if !topic.partition(*index).is_some_and(|p| p.is_leader()) {
            coordinator.give_up(*index);
        }
    }
    topic
        .partitions()
        .into_iter()
        .filter(|p| p.is_leader())
        .filter_map(|p| {
            let epoch = p.leader_epoch();
            coordinator.take(p as Arc<dyn InternalPartition>, epoch)
        })
        .collect()
}

/// Follows the leadership of internal topic `name`'s partitions: after
/// every metadata change this broker applied (and every second, as a
/// backstop) the coordinator takes over or gives up partitions. Stops when
/// the coordinator is dropped.
fn follow_leadership<C: PartitionOwner>(
    metadata: &Arc<Metadata>,
    name: &'static str,
    coordinator: &Arc<C>,
) {
    let metadata = Arc::downgrade(metadata);
    let coordinator = Arc::downgrade(coordinator);
    let mut applied = match metadata.upgrade() {
        Some(m) => m.subscribe_applied(),
        None => return,
    };
    tokio::spawn(async move {
        loop {
            {
                let (Some(metadata), Some(coordinator)) =
                    (metadata.upgrade(), coordinator.upgrade())
                else {
                    return;
                };
                sync_ownership(&metadata, name, &coordinator);
            }
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
}
