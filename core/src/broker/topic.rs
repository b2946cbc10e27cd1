//! A topic: its name, id, config overrides and live partitions; and
//! Kafka's rules for topic names and which topics are internal.
//!
//! What it is not: the list of topics or the admin operations that change
//! one (`metadata.rs`), nor a partition's log (`partition.rs`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use super::partition::Partition;
use crate::config::SchemaValidation;
use crate::error::BrokerError;

/// Longest topic name Kafka allows.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Topics Kafka treats as internal.
pub const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state"];

/// Prefix of the topics Runnel's own features keep their state in (e.g.
/// `_runnel_transforms`). They are ordinary topics to Kafka clients, but
/// listings hide them next to the internal ones.
pub const SYSTEM_TOPIC_PREFIX: &str = "_runnel_";

/// Default names of the connect worker's state topics (Kafka Connect's).
pub const CONNECT_TOPICS: &[&str] = &["connect-configs", "connect-offsets", "connect-status"];

/// Whether a listing should hide this topic unless asked for internal ones:
/// Kafka's internal topics, Runnel's own, the schema registry's and the
/// connect worker's.
pub fn is_system_topic(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
        || name.starts_with(SYSTEM_TOPIC_PREFIX)
        || name == runnel_schema_registry::SCHEMAS_TOPIC
        || CONNECT_TOPICS.contains(&name)
}

/// Kafka's topic name rules: 1-249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name cannot be '{name}'"));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(format!(
            "topic name is longer than {MAX_TOPIC_NAME_LEN} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name '{name}' contains '{c}'; allowed are a-z A-Z 0-9 . _ -"
        ));
    }
    Ok(())
}

/// A topic and its partitions. The partition count only ever grows. In a
/// cluster a broker holds only the partitions it has a replica of: the
/// others are `None` here (their state is in the metadata image), and a
/// reassignment can give this broker a replica or take one away.
pub struct Topic {
    pub name: Arc<str>,
    pub id: Uuid,
    configs: RwLock<BTreeMap<String, String>>,
    /// Derived from `configs` whenever they change.
    schema_validation: RwLock<SchemaValidation>,
    partitions: RwLock<Vec<Option<Arc<Partition>>>>,
}

impl Topic {
    pub(super) fn new(
        name: Arc<str>,
        id: Uuid,
        configs: BTreeMap<String, String>,
        partitions: Vec<Option<Arc<Partition>>>,
    ) -> Topic {
        Topic {
            name,
            id,
            schema_validation: RwLock::new(SchemaValidation::from_configs(&configs)),
            configs: RwLock::new(configs),
            partitions: RwLock::new(partitions),
        }
    }

    /// The partition `index` if this broker holds a replica of it.
    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        if index < 0 {
            return None;
        }
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(index as usize)
            .cloned()
            .flatten()
    }

    /// The partition `index` if this broker leads it: produce, consumer
    /// fetches, ListOffsets, DeleteRecords and OffsetForLeaderEpoch go to
    /// the leader. A partition of the topic led elsewhere is
    /// NOT_LEADER_OR_FOLLOWER, one the topic does not have unknown.
    pub fn leader_partition(&self, index: i32) -> Result<Arc<Partition>, BrokerError> {
        match self.partition(index) {
            Some(p) => p.check_leader().map(|()| p),
            None if index >= 0 && index < self.partition_count() => Err(
                BrokerError::NotLeaderOrFollower(self.name.to_string(), index),
            ),
            None => Err(BrokerError::UnknownPartition(self.name.to_string(), index)),
        }
    }

    /// The partitions this broker holds a replica of, by index.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// How many partitions the topic has (on every broker).
    pub fn partition_count(&self) -> i32 {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len() as i32
    }

    /// The topic's config overrides.
    pub fn configs(&self) -> BTreeMap<String, String> {
        self.configs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_internal(&self) -> bool {
        INTERNAL_TOPICS.contains(&&*self.name)
    }

    /// The topic's broker-side schema validation (off unless configured).
    pub fn schema_validation(&self) -> SchemaValidation {
        *self
            .schema_validation
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the config overrides (and what is derived from them).
    pub(super) fn set_configs(&self, configs: BTreeMap<String, String>) {
        let validation = SchemaValidation::from_configs(&configs);
        *self.configs.write().unwrap_or_else(|e| e.into_inner()) = configs;
        *self
            .schema_validation
            .write()
            .unwrap_or_else(|e| e.into_inner()) = validation;
    }

    /// Holds `partition` (or nothing) as partition `index`, which exists.
    pub(super) fn set_partition(&self, index: i32, partition: Option<Arc<Partition>>) {
        let mut partitions = self.partitions.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = usize::try_from(index)
            .ok()
            .and_then(|i| partitions.get_mut(i))
        {
            *slot = partition;
        }
    }

    /// Adds partitions after the last one.
    pub(super) fn add_partitions(&self, added: Vec<Option<Arc<Partition>>>) {
        self.partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .extend(added);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("has space").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
    }
}
