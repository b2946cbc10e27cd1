//! The broker's side of [`crate::internal_topic`]: its partitions as the
//! coordinators see them, and the wiring of the group coordinator to
//! `__consumer_offsets`.
//!
//! The coordinators (`crate::group`, `crate::schemas`) know only the
//! traits; this file is the one place that hands them the broker's
//! partitions. In a cluster it is where a coordinator is given the
//! partitions this node leads.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use tracing::info;
use uuid::Uuid;

use super::metadata::Metadata;
use super::partition::Partition;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::group::{GroupConfig, GroupCoordinator, OFFSETS_TOPIC};
use crate::internal_topic::{InternalPartition, InternalTopics};

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

    fn append(self: Arc<Self>, records: Bytes) -> BoxFuture<'static, Result<i64, BrokerError>> {
        Box::pin(async move { Ok(Partition::append(&self, &records).await?.base_offset) })
    }
}

impl InternalTopics for Metadata {
    fn partition(&self, topic: &str, index: i32) -> Option<(Uuid, Arc<dyn InternalPartition>)> {
        let topic = self.topic(topic)?;
        Some((topic.id, topic.partition(index)?))
    }
}

/// Creates `__consumer_offsets` if needed and loads the group coordinator
/// from its partitions on this broker. Runs while the broker opens.
pub(super) async fn start_group_coordinator(
    metadata: &Metadata,
    config: &BrokerConfig,
) -> Result<GroupCoordinator, BrokerError> {
    let topic = match metadata.topic(OFFSETS_TOPIC) {
        Some(t) => t,
        None => {
            let mut configs = BTreeMap::new();
            configs.insert("cleanup.policy".to_string(), "compact".to_string());
            configs.insert("segment.bytes".to_string(), (100 << 20).to_string());
            let created = metadata
                .create_topic(
                    OFFSETS_TOPIC,
                    config.offsets_topic_partitions,
                    -1,
                    configs,
                    false,
                )
                .await;
            match created {
                Ok(t) => {
                    info!(partitions = t.partition_count(), "created {OFFSETS_TOPIC}");
                    t
                }
                // Another broker of the cluster created it first.
                Err(BrokerError::TopicExists(_)) => metadata
                    .topic(OFFSETS_TOPIC)
                    .ok_or_else(|| BrokerError::UnknownTopic(OFFSETS_TOPIC.into()))?,
                Err(e) => return Err(e),
            }
        }
    };
    let group_config = GroupConfig {
        offsets_topic_partitions: topic.partition_count(),
        offsets_retention_ms: config.offsets_retention_minutes.saturating_mul(60_000),
        initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
        min_session_timeout_ms: config.group_min_session_timeout_ms,
        max_session_timeout_ms: config.group_max_session_timeout_ms,
        max_group_size: config.group_max_size,
        offset_metadata_max_bytes: config.offset_metadata_max_bytes,
    };
    let partitions = topic
        .partitions()
        .into_iter()
        .map(|p| p as Arc<dyn InternalPartition>)
        .collect();
    GroupCoordinator::load(partitions, group_config)
}
