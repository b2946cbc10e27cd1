//! The metadata authority: which topics exist (name, id, partition
//! count, config overrides), the configs changed at runtime (broker,
//! cluster default, groups), and the admin operations that change them,
//! recorded in `topics.json` and `dynamic-configs.json` (`meta.rs`)
//! before they apply. It is the part a replicated metadata log will
//! replace: today every change is decided here, on this node.
//!
//! Changes reach the logs through the log manager (new partitions, new
//! log configs, deleted data).
//!
//! What it is not: the partitions' data path (`partition.rs`) or the
//! logs' maintenance (`log_manager.rs`).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tracing::{info, warn};
use uuid::Uuid;

use super::log_manager::LogManager;
use super::meta::{self, DynamicConfigs, TopicRecord};
use super::partition::Partition;
use super::topic::{validate_topic_name, Topic};
use crate::config::{
    resolve_log_config, validate_dynamic_broker_configs, validate_group_configs,
    validate_topic_config, BrokerConfig, ConfigError, ConfigType, LogDefaults,
};
use crate::error::BrokerError;

/// How a config change applies (IncrementalAlterConfigs operations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

/// Which level of dynamic broker configs a change is for: this broker's
/// (resource name = its id) or the cluster default (resource name "").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerConfigScope {
    Broker,
    ClusterDefault,
}

/// Applies changes to a set of config overrides, with Kafka's rules:
/// DELETE of a key that is not set does nothing; APPEND and SUBTRACT only
/// work on list configs (`list_default` gives a list config's default, and
/// `None` for every other key) and take comma-separated items. Values are
/// validated by the caller, on the result.
fn apply_config_changes(
    configs: &mut BTreeMap<String, String>,
    changes: &[ConfigChange],
    list_default: impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for change in changes {
        match change {
            ConfigChange::Set(k, v) => {
                configs.insert(k.clone(), v.clone());
            }
            ConfigChange::Delete(k) => {
                configs.remove(k);
            }
            ConfigChange::Append(k, v) | ConfigChange::Subtract(k, v) => {
                let op = if matches!(change, ConfigChange::Append(..)) {
                    "APPEND"
                } else {
                    "SUBTRACT"
                };
                let default = list_default(k).ok_or_else(|| {
                    ConfigError(format!(
                        "Can't {op} to key {k} because its type is not LIST."
                    ))
                })?;
                let current = configs.get(k).cloned().unwrap_or(default);
                let mut items: Vec<String> = current
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if op == "APPEND" {
                        if !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        }
                    } else if let Some(at) = items.iter().position(|i| i == item) {
                        items.remove(at);
                    }
                }
                configs.insert(k.clone(), items.join(","));
            }
        }
    }
    Ok(())
}

/// The static topic defaults with the dynamic broker configs on top (this
/// broker's win over the cluster default's, key by key).
fn effective_log_defaults(static_defaults: &LogDefaults, dynamic: &DynamicConfigs) -> LogDefaults {
    let mut defaults = static_defaults.clone();
    defaults.dynamic = dynamic.cluster_default.clone();
    defaults
        .dynamic
        .extend(dynamic.broker.iter().map(|(k, v)| (k.clone(), v.clone())));
    defaults
}

/// Loads `dynamic-configs.json`, dropping (with a warning) what no longer
/// validates, e.g. after a downgrade.
fn load_valid_dynamic_configs(dir: &Path) -> io::Result<DynamicConfigs> {
    let mut dynamic = meta::load_dynamic_configs(dir)?;
    for (level, configs) in [
        ("broker", &mut dynamic.broker),
        ("cluster default", &mut dynamic.cluster_default),
    ] {
        configs.retain(|k, v| {
            let one = BTreeMap::from([(k.clone(), v.clone())]);
            match validate_dynamic_broker_configs(&one) {
                Ok(()) => true,
                Err(e) => {
                    warn!(level, key = %k, error = %e, "ignoring a stored dynamic broker config");
                    false
                }
            }
        });
    }
    dynamic
        .groups
        .retain(|group, configs| match validate_group_configs(configs) {
            Ok(()) => true,
            Err(e) => {
                warn!(group = %group, error = %e, "ignoring stored group configs");
                false
            }
        });
    Ok(dynamic)
}

/// The topics and configs of the cluster (today: of this broker).
pub struct Metadata {
    data_dir: PathBuf,
    /// Topic defaults of the configuration the broker started with.
    static_log_defaults: LogDefaults,
    auto_create_topics: bool,
    default_partitions: i32,
    max_partitions_per_topic: i32,
    /// Configs changed at runtime (broker, cluster default, groups).
    dynamic: RwLock<DynamicConfigs>,
    /// Topic defaults in effect: `static_log_defaults` with the dynamic
    /// broker configs applied.
    log_defaults: RwLock<Arc<LogDefaults>>,
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    /// Serialises topic creation, deletion and config changes, and the
    /// `topics.json` writes that record them.
    admin: tokio::sync::Mutex<()>,
    logs: Arc<LogManager>,
}

impl Metadata {
    /// Loads `topics.json` and `dynamic-configs.json` and has `logs` open
    /// every recorded partition (finishing or undoing a creation a crash
    /// interrupted).
    pub(super) fn open(
        config: &BrokerConfig,
        logs: Arc<LogManager>,
    ) -> Result<Metadata, BrokerError> {
        let dir = &config.data_dir;
        logs.remove_deleted_partitions()?;
        let records = meta::load_topics(dir)?;
        logs.finish_pending_partitions(&records)?;
        let dynamic = load_valid_dynamic_configs(dir)?;
        let log_defaults = effective_log_defaults(&config.log, &dynamic);
        let topics = logs.open_topics(records, &log_defaults)?;
        Ok(Metadata {
            data_dir: dir.clone(),
            static_log_defaults: config.log.clone(),
            auto_create_topics: config.auto_create_topics,
            default_partitions: config.default_partitions,
            max_partitions_per_topic: config.max_partitions_per_topic,
            dynamic: RwLock::new(dynamic),
            log_defaults: RwLock::new(Arc::new(log_defaults)),
            topics: RwLock::new(topics),
            admin: tokio::sync::Mutex::new(()),
            logs,
        })
    }

    /// The topic defaults in effect (dynamic broker configs applied).
    pub fn log_defaults(&self) -> Arc<LogDefaults> {
        self.log_defaults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The configs changed at runtime.
    pub fn dynamic_configs(&self) -> DynamicConfigs {
        self.dynamic
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>, BrokerError> {
        let t = self
            .topic(topic)
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_string()))?;
        t.partition(index)
            .ok_or_else(|| BrokerError::UnknownPartition(topic.to_string(), index))
    }

    /// Returns the topic, creating it with broker defaults when it does not
    /// exist and auto-creation is on.
    pub async fn topic_or_auto_create(
        &self,
        name: &str,
        allowed: bool,
    ) -> Result<Arc<Topic>, BrokerError> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        validate_topic_name(name).map_err(BrokerError::InvalidTopic)?;
        if !(allowed && self.auto_create_topics) {
            return Err(BrokerError::UnknownTopic(name.to_string()));
        }
        match self
            .create_topic(name, -1, -1, BTreeMap::new(), false)
            .await
        {
            Ok(t) => {
                info!(topic = name, "auto-created topic");
                Ok(t)
            }
            // Lost a race with another creator: fine.
            Err(BrokerError::TopicExists(_)) => self
                .topic(name)
                .ok_or_else(|| BrokerError::UnknownTopic(name.to_string())),
            Err(e) => Err(e),
        }
    }

    /// Checks a CreateTopics request for one topic without creating it.
    pub fn validate_new_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &BTreeMap<String, String>,
    ) -> Result<i32, BrokerError> {
        validate_topic_name(name).map_err(BrokerError::InvalidTopic)?;
        if self.topic(name).is_some() {
            return Err(BrokerError::TopicExists(name.to_string()));
        }
        let partitions = if partitions == -1 {
            self.default_partitions
        } else {
            partitions
        };
        let max = self.max_partitions_per_topic;
        if partitions < 1 {
            return Err(BrokerError::InvalidPartitions(
                "Number of partitions was set to an invalid non-positive value.".into(),
            ));
        }
        if partitions > max {
            return Err(BrokerError::InvalidPartitions(format!(
                "number of partitions must be at most {max}, got {partitions}"
            )));
        }
        if replication_factor == 0 || replication_factor < -1 {
            return Err(BrokerError::InvalidReplicationFactor(
                "Replication factor must be larger than 0, or -1 to use the default value.".into(),
            ));
        }
        if replication_factor != -1 && replication_factor != 1 {
            return Err(BrokerError::InvalidReplicationFactor(format!(
                "replication factor {replication_factor} is larger than the 1 available broker"
            )));
        }
        for (k, v) in configs {
            validate_topic_config(k, v)?;
        }
        Ok(partitions)
    }

    /// Creates a topic with all its partitions, or nothing (see
    /// `add_partitions_atomically`).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, BrokerError> {
        let _admin = self.admin.lock().await;
        self.create_topic_locked(name, partitions, replication_factor, configs, validate_only)
    }

    /// Creates a topic; the caller holds the admin lock (or, while the
    /// broker opens, has the only reference to the metadata).
    pub(super) fn create_topic_locked(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, BrokerError> {
        let partitions = self.validate_new_topic(name, partitions, replication_factor, &configs)?;
        let id = Uuid::new_v4();
        let name_arc: Arc<str> = name.into();
        let log_config = resolve_log_config(&configs, &self.log_defaults());
        let mut logs = Vec::new();
        if !validate_only {
            let mut all = self.topic_records();
            all.push(TopicRecord {
                name: name.to_string(),
                id,
                partitions,
                configs: configs.clone(),
            });
            logs = self.logs.create_partitions(
                &name_arc,
                id,
                0..partitions,
                &log_config,
                || meta::save_topics(&self.data_dir, &all),
                || meta::save_topics(&self.data_dir, &self.topic_records()),
            )?;
        }
        let topic = Arc::new(Topic::new(name_arc.clone(), id, configs, logs));
        if !validate_only {
            self.topics
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name_arc, topic.clone());
            info!(topic = name, partitions, "created topic");
        }
        Ok(topic)
    }

    /// What `topics.json` records: every topic's name, id, partition count
    /// and config overrides.
    fn topic_records(&self) -> Vec<TopicRecord> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|t| TopicRecord {
                name: t.name.to_string(),
                id: t.id,
                partitions: t.partition_count(),
                configs: t.configs(),
            })
            .collect()
    }

    /// Deletes a topic: forgets it, then removes its data in the background.
    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, BrokerError> {
        let _admin = self.admin.lock().await;
        let topic = self
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
        if topic.is_internal() {
            return Err(BrokerError::InternalTopic(
                name.to_string(),
                "it cannot be deleted",
            ));
        }
        let mut remaining = self.topic_records();
        remaining.retain(|t| t.name != name);
        meta::save_topics(&self.data_dir, &remaining)?;
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.logs.delete_partitions(&topic);
        info!(topic = name, "deleted topic");
        Ok(topic.id)
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().await;
        let topic = self
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
        if topic.is_internal() {
            return Err(BrokerError::InternalTopic(
                name.to_string(),
                "its partition count is fixed",
            ));
        }
        let current = topic.partition_count();
        if count <= current {
            return Err(BrokerError::InvalidPartitions(format!(
                "topic '{name}' has {current} partitions; the new count must be larger, got {count}"
            )));
        }
        let max = self.max_partitions_per_topic;
        if count > max {
            return Err(BrokerError::InvalidPartitions(format!(
                "number of partitions must be at most {max}"
            )));
        }
        if validate_only {
            return Ok(());
        }
        let log_config = resolve_log_config(&topic.configs(), &self.log_defaults());
        let mut records = self.topic_records();
        if let Some(r) = records.iter_mut().find(|r| r.name == name) {
            r.partitions = count;
        }
        let added = self.logs.create_partitions(
            &topic.name,
            topic.id,
            current..count,
            &log_config,
            || meta::save_topics(&self.data_dir, &records),
            || meta::save_topics(&self.data_dir, &self.topic_records()),
        )?;
        topic.add_partitions(added);
        info!(topic = name, from = current, to = count, "added partitions");
        Ok(())
    }

    /// Applies config changes to a topic (all or nothing).
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        changes: &[ConfigChange],
        replace_all: bool,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().await;
        let topic = self
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
        let mut configs = if replace_all {
            BTreeMap::new()
        } else {
            topic.configs()
        };
        let defaults = self.log_defaults();
        apply_config_changes(&mut configs, changes, |k| {
            crate::config::topic_config_def(k)
                .filter(|def| def.kind == ConfigType::List)
                .map(|def| def.default_value(&defaults))
        })?;
        for (k, v) in &configs {
            validate_topic_config(k, v)?;
        }
        if validate_only {
            return Ok(());
        }
        let log_config = resolve_log_config(&configs, &self.log_defaults());
        topic.set_configs(configs);
        meta::save_topics(&self.data_dir, &self.topic_records())?;
        self.logs.reconfigure(&topic, &log_config);
        info!(topic = name, "altered topic configs");
        Ok(())
    }

    /// Changes dynamic broker configs, for this broker or as the cluster
    /// default (all or nothing), stores them in `dynamic-configs.json` and
    /// applies them at once: every topic without its own override follows
    /// the new defaults.
    pub async fn alter_broker_configs(
        &self,
        scope: BrokerConfigScope,
        changes: &[ConfigChange],
        replace_all: bool,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().await;
        let mut dynamic = self.dynamic_configs();
        let level = match scope {
            BrokerConfigScope::Broker => &mut dynamic.broker,
            BrokerConfigScope::ClusterDefault => &mut dynamic.cluster_default,
        };
        if replace_all {
            level.clear();
        }
        let current = effective_log_defaults(&self.static_log_defaults, &self.dynamic_configs());
        apply_config_changes(level, changes, |k| {
            let key = crate::config::dynamic_broker_key(k)?;
            (key.kind() == ConfigType::List).then(|| match key {
                crate::config::DynamicBrokerKey::TopicDefault(def) => def.default_value(&current),
                _ => String::new(),
            })
        })?;
        // Kafka refuses broker config values that do not validate with
        // INVALID_REQUEST (KAFKA-13609), unlike topic configs.
        validate_dynamic_broker_configs(level).map_err(|e| BrokerError::InvalidRequest(e.0))?;
        if validate_only {
            return Ok(());
        }
        meta::save_dynamic_configs(&self.data_dir, &dynamic)?;
        let defaults = Arc::new(effective_log_defaults(&self.static_log_defaults, &dynamic));
        *self.dynamic.write().unwrap_or_else(|e| e.into_inner()) = dynamic;
        *self.log_defaults.write().unwrap_or_else(|e| e.into_inner()) = defaults.clone();
        for topic in self.topics() {
            let log_config = resolve_log_config(&topic.configs(), &defaults);
            self.logs.reconfigure(&topic, &log_config);
        }
        info!(?scope, "altered dynamic broker configs");
        Ok(())
    }

    /// A group's configs (GROUP resource), as set.
    pub fn group_configs(&self, group: &str) -> BTreeMap<String, String> {
        self.dynamic
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .groups
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// Changes a group's configs (all or nothing) and stores them.
    pub async fn alter_group_configs(
        &self,
        group: &str,
        changes: &[ConfigChange],
        replace_all: bool,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().await;
        let mut dynamic = self.dynamic_configs();
        let mut configs = if replace_all {
            BTreeMap::new()
        } else {
            dynamic.groups.get(group).cloned().unwrap_or_default()
        };
        // No group config is a list.
        apply_config_changes(&mut configs, changes, |_| None)?;
        validate_group_configs(&configs)?;
        if validate_only {
            return Ok(());
        }
        if configs.is_empty() {
            dynamic.groups.remove(group);
        } else {
            dynamic.groups.insert(group.to_string(), configs);
        }
        meta::save_dynamic_configs(&self.data_dir, &dynamic)?;
        *self.dynamic.write().unwrap_or_else(|e| e.into_inner()) = dynamic;
        info!(group, "altered group configs");
        Ok(())
    }
}
