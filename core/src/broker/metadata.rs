//! This broker's view of the cluster's metadata: which topics exist (name,
//! id, partitions with their replicas, leader and epochs, config
//! overrides) and the configs changed at runtime (broker, cluster default,
//! groups), as the metadata quorum (`crate::controller`) agreed them.
//!
//! Admin operations are decided over the current image
//! (`controller::decisions`), proposed to the quorum, and answered once
//! this broker applied them. Applying an image (`apply_image`, on every
//! change the quorum commits) brings the local state in line: partitions
//! this broker has a replica of are opened or created, deleted topics'
//! data removed, configs applied, and each partition learns whether this
//! broker leads it and in which leader epoch.
//!
//! A data directory of a version before the metadata log has its
//! `topics.json` and `dynamic-configs.json` moved into the log once
//! (`migrate`), then renamed `*.migrated`.
//!
//! What it is not: the partitions' data path (`partition.rs`) or the
//! logs' maintenance (`log_manager.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};
use uuid::Uuid;

use super::log_manager::{LogManager, StartCheckpoints};
use super::meta::{self, DynamicConfigs, TopicRecord};
use super::partition::Partition;
use super::replica_fetcher::{Followed, ReplicaFetchers};
use super::topic::{validate_topic_name, Topic};
use crate::config::{
    resolve_log_config, validate_dynamic_broker_configs, validate_group_configs,
    validate_topic_config, BrokerConfig, ConfigError, ConfigType, LogDefaults,
};
use crate::controller::decisions::{
    self, AlterPartitionRequest, BrokerRegistrationRequest, DecisionError, ElectionType, NewTopic,
    OngoingReassignment, ProducerIdBlock, PRODUCER_ID_BLOCK_SIZE,
};
use crate::controller::records::{
    BrokerId, ConfigChanged, ConfigResource, ProducerIdsAllocated, TopicCreated,
};
use crate::controller::{
    Controller, ControllerConfig, ControllerError, MetadataImage, MetadataRecord, ProposalOutcome,
};
use crate::error::BrokerError;
use crate::group::OFFSETS_TOPIC;
use crate::internal_topic::codec::partition_for;
use crate::replication::leader::{AlterIsrRequest, IsrRefusal};
use crate::storage::PartitionLog;
use crate::txn::TRANSACTION_STATE_TOPIC;
use crate::util::lock;

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

/// Where the metadata quorum keeps its log and snapshots, in the data dir.
pub const METADATA_DIR: &str = "__cluster_metadata";

/// How long an admin operation waits for this broker to apply the change
/// the quorum committed.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Records per proposal when a whole `topics.json` moves into the log.
const MIGRATION_CHUNK: usize = 5000;

/// Partition changes per proposal of an election, a reassignment request
/// or a balancing pass (Kafka elects at most 1000 leaders per pass).
const MAX_CHANGES_PER_PROPOSAL: usize = 1000;

/// How often a partition change is decided again when the partition moved
/// between the decision and the commit (its record was then ignored).
const DECISION_ATTEMPTS: usize = 3;

/// The shortest pause between two leader-balancing checks, so the burst
/// of ISR changes of a returning broker is checked a few times, not once
/// per change.
const BALANCE_PAUSE: Duration = Duration::from_millis(250);

/// What applying images keeps between runs.
#[derive(Default)]
struct ApplyState {
    /// Recovery points and log starts read at start; only the first
    /// application (the logs that exist on disk) uses them.
    start_checkpoints: Option<StartCheckpoints>,
    /// Replicas of this broker whose log could not be opened: offline
    /// until the broker restarts, not tried again on every change.
    offline: HashSet<(Uuid, i32)>,
}

/// Automatic preferred-leader balancing (`auto_leader_rebalance_enable`).
#[derive(Debug, Clone, Copy)]
struct LeaderBalance {
    interval: Duration,
    imbalance_percentage: u32,
}

/// Per topic, per partition: the outcome of an election or reassignment.
pub type PartitionResults = Vec<(String, Vec<(i32, Result<(), BrokerError>)>)>;

/// Per topic, per partition: a reassignment's target replicas (`None`
/// cancels the ongoing one).
pub type ReassignmentTargets = Vec<(String, Vec<(i32, Option<Vec<BrokerId>>)>)>;

/// This broker's view of the cluster's topics and configs, following the
/// metadata quorum.
pub struct Metadata {
    data_dir: PathBuf,
    pub(super) node_id: BrokerId,
    /// Topic defaults of the configuration the broker started with.
    static_log_defaults: LogDefaults,
    auto_create_topics: bool,
    default_partitions: i32,
    max_partitions_per_topic: i32,
    controller: Controller,
    /// The image this broker's local state was last brought in line with.
    image: RwLock<Arc<MetadataImage>>,
    /// The log index of `image`, for admin operations waiting to see their
    /// change applied.
    applied: watch::Sender<u64>,
    /// Configs changed at runtime (broker, cluster default, groups).
    dynamic: RwLock<DynamicConfigs>,
    /// Topic defaults in effect: `static_log_defaults` with the dynamic
    /// broker configs applied.
    log_defaults: RwLock<Arc<LogDefaults>>,
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    /// Serialises this broker's admin decisions (the quorum orders them
    /// with other brokers').
    admin: tokio::sync::Mutex<()>,
    /// Serialises applying images.
    applying: Mutex<ApplyState>,
    /// Logs of new local partitions made before their records were
    /// proposed (so a creation that cannot make them fails whole, before
    /// it is recorded), by topic id and partition; the application that
    /// sees their records moves them into place.
    prepared: Mutex<HashMap<(Uuid, i32), PartitionLog>>,
    /// The follower side: tasks fetching from the leaders of the
    /// partitions this broker follows.
    fetchers: ReplicaFetchers,
    /// This broker's epoch of its current registration.
    broker_epoch: std::sync::atomic::AtomicI64,
    /// Set by [`Metadata::controlled_shutdown`]: a broker on its way out
    /// does not ask to be unfenced again.
    stopping: std::sync::atomic::AtomicBool,
    replica_lag_time_max_ms: i64,
    session_timeout: Duration,
    heartbeat_interval: Duration,
    /// `None` when automatic leader balancing is off.
    leader_balance: Option<LeaderBalance>,
    logs: Arc<LogManager>,
}

/// What the quorum's leader keeps between its checks of the brokers'
/// sessions (reset when it stops leading).
#[derive(Default)]
struct SessionWatch {
    /// When this node became the leader: a broker not heard from since
    /// counts from then.
    leading_since: Option<std::time::Instant>,
    /// When each silent broker (id, epoch) was last probed.
    probed: HashMap<(BrokerId, i64), std::time::Instant>,
    /// Probes under way: (id, epoch) and whether the connection was
    /// refused.
    probes: tokio::task::JoinSet<((BrokerId, i64), bool)>,
    /// Silent brokers whose listener refused a connection.
    refused: HashSet<(BrokerId, i64)>,
}

fn controller_error(e: ControllerError) -> BrokerError {
    match e {
        ControllerError::InvalidProposal(m) => BrokerError::InvalidRequest(m),
        other => BrokerError::MetadataTimeout(other.to_string()),
    }
}

fn decision_error(e: DecisionError) -> BrokerError {
    match e {
        DecisionError::InvalidReplicationFactor { .. } => {
            BrokerError::InvalidReplicationFactor(e.to_string())
        }
        DecisionError::InvalidPartitions(m) => BrokerError::InvalidPartitions(m),
        DecisionError::InvalidTopic(m) => BrokerError::InvalidTopic(m),
        DecisionError::TopicAlreadyExists(name) => BrokerError::TopicExists(name),
        DecisionError::UnknownTopicOrPartition(name) => BrokerError::UnknownTopic(name),
        DecisionError::ElectionNotNeeded(m) => BrokerError::ElectionNotNeeded(m),
        e @ DecisionError::PreferredLeaderNotAvailable { .. } => {
            BrokerError::PreferredLeaderNotAvailable(e.to_string())
        }
        e @ DecisionError::EligibleLeadersNotAvailable(_) => {
            BrokerError::EligibleLeadersNotAvailable(e.to_string())
        }
        DecisionError::InvalidReplicaAssignment(m) => BrokerError::InvalidReplicaAssignment(m),
        e @ DecisionError::NoReassignmentInProgress(_) => {
            BrokerError::NoReassignmentInProgress(e.to_string())
        }
        other => BrokerError::InvalidRequest(other.to_string()),
    }
}

/// The records that set `resource`'s configs from `before` to `after`.
fn config_changes(
    resource: &ConfigResource,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<MetadataRecord> {
    let set = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Some(v.clone())));
    let removed = before
        .keys()
        .filter(|k| !after.contains_key(*k))
        .map(|k| (k.clone(), None));
    set.chain(removed)
        .map(|(name, value)| {
            MetadataRecord::ConfigChanged(ConfigChanged {
                resource: resource.clone(),
                name,
                value,
            })
        })
        .collect()
}

impl Metadata {
    /// Starts this node's controller (a quorum of one unless the config
    /// names voters), registers the broker, moves a `topics.json` of an
    /// older version into the metadata log, opens every local partition
    /// the metadata names, and follows the quorum from then on.
    pub(super) async fn open(
        config: &BrokerConfig,
        logs: Arc<LogManager>,
    ) -> Result<Arc<Metadata>, BrokerError> {
        let dir = &config.data_dir;
        logs.remove_deleted_partitions()?;
        let (voters, listen_addr) = config.controller_listener()?;
        let mut controller_config = ControllerConfig::new(
            config.node_id as u64,
            voters,
            listen_addr,
            dir.join(METADATA_DIR),
        );
        controller_config.voter = config.is_controller()?;
        let controller = Controller::start(controller_config)
            .await
            .map_err(|e| match e {
                ControllerError::Store(e) => BrokerError::Io(io::Error::other(e.to_string())),
                ControllerError::Config(m) => BrokerError::InvalidConfig(ConfigError(m)),
                other => BrokerError::Io(io::Error::other(other.to_string())),
            })?;
        let metadata = Arc::new(Metadata {
            data_dir: dir.clone(),
            node_id: config.node_id,
            static_log_defaults: config.log.clone(),
            auto_create_topics: config.auto_create_topics,
            default_partitions: config.default_partitions,
            max_partitions_per_topic: config.max_partitions_per_topic,
            controller,
            image: RwLock::new(Arc::new(MetadataImage::new())),
            applied: watch::channel(0).0,
            dynamic: RwLock::new(DynamicConfigs::default()),
            log_defaults: RwLock::new(Arc::new(config.log.clone())),
            topics: RwLock::new(HashMap::new()),
            admin: tokio::sync::Mutex::new(()),
            applying: Mutex::new(ApplyState {
                start_checkpoints: Some(logs.read_checkpoints()),
                offline: HashSet::new(),
            }),
            prepared: Mutex::new(HashMap::new()),
            fetchers: ReplicaFetchers::new(config.node_id),
            broker_epoch: std::sync::atomic::AtomicI64::new(-1),
            stopping: std::sync::atomic::AtomicBool::new(false),
            replica_lag_time_max_ms: config.replica_lag_time_max_ms as i64,
            session_timeout: Duration::from_millis(config.broker_session_timeout_ms),
            heartbeat_interval: Duration::from_millis(config.broker_heartbeat_interval_ms),
            leader_balance: config.auto_leader_rebalance_enable.then(|| LeaderBalance {
                interval: Duration::from_secs(config.leader_imbalance_check_interval_seconds),
                imbalance_percentage: config.leader_imbalance_per_broker_percentage,
            }),
            logs,
        });
        metadata.register(config).await?;
        let legacy = meta::topics_path(dir).exists() || meta::dynamic_configs_path(dir).exists();
        let legacy_topics = if legacy {
            meta::load_topics(dir)?
        } else {
            Vec::new()
        };
        metadata.logs.finish_pending_partitions(&legacy_topics)?;
        if legacy {
            metadata.migrate(legacy_topics).await?;
        }
        metadata.migrate_producer_ids().await?;
        let image = metadata.controller.image();
        let first = metadata.clone();
        tokio::task::spawn_blocking(move || first.apply_image(image))
            .await
            .map_err(|e| BrokerError::Io(io::Error::other(e.to_string())))?;
        metadata.follow();
        metadata.maintain_isrs();
        metadata.keep_sessions();
        metadata.balance_leaders();
        Ok(metadata)
    }

    /// Registers this broker (a new incarnation, with the next broker
    /// epoch) and unfences it, retrying until the quorum answers.
    async fn register(&self, config: &BrokerConfig) -> Result<(), BrokerError> {
        let listener = config
            .advertised_kafka_addr
            .clone()
            .unwrap_or_else(|| config.kafka_addr.clone());
        let request = BrokerRegistrationRequest {
            broker_id: self.node_id,
            incarnation_id: Uuid::new_v4(),
            listener,
            rack: None,
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.try_register(&request).await {
                Ok(epoch) => {
                    self.broker_epoch
                        .store(epoch, std::sync::atomic::Ordering::Release);
                    info!(
                        node_id = self.node_id,
                        broker_epoch = epoch,
                        "registered with the metadata quorum"
                    );
                    return Ok(());
                }
                Err(BrokerError::MetadataTimeout(why)) => {
                    warn!(attempt, error = %why, "waiting for the metadata quorum to register this broker");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_register(&self, request: &BrokerRegistrationRequest) -> Result<i64, BrokerError> {
        let image = self.controller.image();
        let (epoch, records) =
            decisions::register_broker(&image, request, false).map_err(decision_error)?;
        if !records.is_empty() {
            let outcome = self.propose(records).await?;
            if let Some((_, why)) = outcome.first_ignored() {
                return Err(BrokerError::MetadataTimeout(format!(
                    "registration decided on a state that moved: {why}"
                )));
            }
        }
        let image = self.controller.image();
        let records =
            decisions::unfence_broker(&image, self.node_id, epoch).map_err(decision_error)?;
        if !records.is_empty() {
            let outcome = self.propose(records).await?;
            if let Some((_, why)) = outcome.first_ignored() {
                return Err(BrokerError::MetadataTimeout(format!(
                    "unfencing decided on a state that moved: {why}"
                )));
            }
        }
        Ok(epoch)
    }

    /// A new block of producer ids for this broker from the quorum. Another
    /// broker's block may be decided at the same time: the one recorded
    /// second is ignored (blocks never overlap) and this one asks again.
    pub async fn allocate_producer_ids(&self) -> Result<ProducerIdBlock, BrokerError> {
        let epoch = self.broker_epoch.load(std::sync::atomic::Ordering::Acquire);
        let mut last_refusal = String::new();
        for _ in 0..10 {
            let image = self.controller.image();
            let (block, record) = decisions::allocate_producer_ids(&image, self.node_id, epoch)
                .map_err(decision_error)?;
            let outcome = self.propose(vec![record]).await?;
            match outcome.first_ignored() {
                None => return Ok(block),
                Some((_, why)) => last_refusal = why.to_string(),
            }
        }
        Err(BrokerError::MetadataTimeout(format!(
            "no producer id block after 10 attempts: {last_refusal}"
        )))
    }

    /// An older version handed out producer ids below the end stored in
    /// `producer-id-block`: the quorum continues after it (rounded up to a
    /// whole block, so blocks stay aligned and a block decided on a stale
    /// image can never overlap), then the file is renamed `*.migrated`.
    async fn migrate_producer_ids(&self) -> Result<(), BrokerError> {
        let Some(end) = super::producer_ids::legacy_block_end(&self.data_dir)? else {
            return Ok(());
        };
        let aligned = (end.saturating_add(PRODUCER_ID_BLOCK_SIZE - 1) / PRODUCER_ID_BLOCK_SIZE)
            .saturating_mul(PRODUCER_ID_BLOCK_SIZE);
        if self.controller.image().next_producer_id() < aligned {
            let record = MetadataRecord::ProducerIdsAllocated(ProducerIdsAllocated {
                broker_id: self.node_id,
                broker_epoch: self.broker_epoch.load(std::sync::atomic::Ordering::Acquire),
                next_producer_id: aligned,
            });
            let outcome = self.propose(vec![record]).await?;
            if let Some((_, why)) = outcome.first_ignored() {
                if self.controller.image().next_producer_id() < aligned {
                    return Err(BrokerError::MetadataTimeout(format!(
                        "moving producer ids past {aligned} was not recorded: {why}"
                    )));
                }
            }
        }
        let path = super::producer_ids::legacy_path(&self.data_dir);
        let mut done = path.clone().into_os_string();
        done.push(".migrated");
        std::fs::rename(&path, &done)?;
        info!(
            next_producer_id = aligned,
            "producer ids now come from the metadata quorum"
        );
        Ok(())
    }

    /// Moves what `topics.json` and `dynamic-configs.json` of an older
    /// version hold into the metadata log (topics keep their ids; this
    /// broker is the only replica and leader in epoch 0, as the batches on
    /// disk say), then renames the files `*.migrated`. Idempotent: what
    /// the log already has is not proposed again.
    async fn migrate(&self, topics: Vec<TopicRecord>) -> Result<(), BrokerError> {
        let dir = self.data_dir.clone();
        let dynamic = load_valid_dynamic_configs(&dir)?;
        let image = self.controller.image();
        let node = self.node_id;
        let mut records = Vec::new();
        for t in &topics {
            if image.topic(&t.id).is_some() || image.topic_by_name(&t.name).is_some() {
                continue;
            }
            records.push(MetadataRecord::TopicCreated(TopicCreated {
                name: t.name.clone(),
                topic_id: t.id,
                configs: t.configs.clone(),
            }));
            for p in 0..t.partitions {
                records.push(MetadataRecord::PartitionCreated(
                    crate::controller::records::PartitionCreated {
                        topic_id: t.id,
                        partition: p,
                        replicas: vec![node],
                        isr: vec![node],
                        leader: node,
                        leader_epoch: 0,
                        partition_epoch: 0,
                    },
                ));
            }
        }
        let empty = BTreeMap::new();
        records.extend(config_changes(
            &ConfigResource::Broker(node),
            image.broker_configs(node).unwrap_or(&empty),
            &dynamic.broker,
        ));
        records.extend(config_changes(
            &ConfigResource::Cluster,
            image.cluster_configs(),
            &dynamic.cluster_default,
        ));
        for (group, configs) in &dynamic.groups {
            records.extend(config_changes(
                &ConfigResource::Group(group.clone()),
                image.group_configs().get(group).unwrap_or(&empty),
                configs,
            ));
        }
        // A topic's records stay in one proposal where they fit.
        let count = records.len();
        let mut batch = Vec::new();
        for record in records {
            let topic_starts = matches!(record, MetadataRecord::TopicCreated(_));
            if topic_starts && batch.len() >= MIGRATION_CHUNK {
                self.propose(std::mem::take(&mut batch)).await?;
            }
            batch.push(record);
        }
        if !batch.is_empty() {
            self.propose(batch).await?;
        }
        for path in [meta::topics_path(&dir), meta::dynamic_configs_path(&dir)] {
            if path.exists() {
                let mut done = path.clone().into_os_string();
                done.push(".migrated");
                std::fs::rename(&path, &done)?;
            }
        }
        meta::sync_dir(&dir)?;
        info!(
            topics = topics.len(),
            records = count,
            "moved topics.json and dynamic-configs.json into the metadata log"
        );
        Ok(())
    }

    /// Applies every image the quorum commits, in the background, until
    /// the metadata is dropped.
    fn follow(self: &Arc<Self>) {
        let weak: Weak<Metadata> = Arc::downgrade(self);
        let mut images = self.controller.subscribe();
        tokio::spawn(async move {
            while images.changed().await.is_ok() {
                let image = images.borrow_and_update().clone();
                let Some(metadata) = weak.upgrade() else {
                    break;
                };
                let applied = tokio::task::spawn_blocking(move || metadata.apply_image(image));
                if let Err(e) = applied.await {
                    error!(error = %e, "applying metadata panicked");
                }
            }
        });
    }

    /// Checks the ISR of every partition this broker leads, periodically:
    /// followers lagging longer than `replica_lag_time_max_ms` leave it,
    /// followers that caught up join it, through AlterPartition decisions
    /// proposed to the quorum (epochs fence a stale leader's change).
    fn maintain_isrs(self: &Arc<Self>) {
        let weak: Weak<Metadata> = Arc::downgrade(self);
        let every =
            Duration::from_millis((self.replica_lag_time_max_ms as u64 / 4).clamp(50, 1000));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(metadata) = weak.upgrade() else {
                    break;
                };
                for topic in metadata.topics() {
                    for partition in topic.partitions() {
                        if !partition.is_leader() {
                            continue;
                        }
                        let Some(change) = partition.isr_change(metadata.replica_lag_time_max_ms)
                        else {
                            continue;
                        };
                        metadata.alter_isr(topic.id, &partition, change).await;
                    }
                }
            }
        });
    }

    /// Broker sessions: this broker heartbeats to the quorum's leader
    /// every heartbeat interval (and asks to be unfenced when it finds
    /// itself fenced in its current epoch, e.g. after a network partition
    /// healed); while this node leads the quorum, it fences the brokers
    /// whose sessions expired or whose process is gone (see
    /// [`Metadata::fence_silent`]), and their partitions get new leaders
    /// from their ISRs.
    fn keep_sessions(self: &Arc<Self>) {
        let weak: Weak<Metadata> = Arc::downgrade(self);
        let every = self.heartbeat_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(metadata) = weak.upgrade() else {
                    break;
                };
                metadata.heartbeat().await;
            }
        });
        // Its own task: a heartbeat waiting on a quorum that lost its
        // leader does not delay the checks.
        let weak: Weak<Metadata> = Arc::downgrade(self);
        let every = (self.heartbeat_interval / 4)
            .clamp(Duration::from_millis(20), Duration::from_millis(250));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut sessions = SessionWatch::default();
            loop {
                tick.tick().await;
                let Some(metadata) = weak.upgrade() else {
                    break;
                };
                if metadata.controller.is_leader() {
                    metadata.fence_silent(&mut sessions).await;
                } else {
                    sessions = SessionWatch::default();
                }
            }
        });
    }

    async fn heartbeat(&self) {
        let epoch = self.broker_epoch.load(std::sync::atomic::Ordering::Acquire);
        if let Err(e) = self.controller.heartbeat(self.node_id, epoch).await {
            tracing::debug!(error = %e, "heartbeat not delivered");
            return;
        }
        let image = self.controller.image();
        let fenced = image
            .broker(self.node_id)
            .is_some_and(|b| b.fenced && b.broker_epoch == epoch);
        if fenced && !self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            match decisions::unfence_broker(&image, self.node_id, epoch) {
                Ok(records) if !records.is_empty() => {
                    info!(
                        node_id = self.node_id,
                        "this broker is fenced; asking to be unfenced"
                    );
                    if let Err(e) = self.propose(records).await {
                        warn!(error = %e, "unfencing this broker failed; it is tried again");
                    }
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "unfencing this broker refused"),
            }
        }
    }

    /// Kafka's controlled shutdown, run while this broker still serves:
    /// it fences itself through the quorum, so each partition it leads
    /// gets a new leader from its ISR (and it leaves every ISR) before it
    /// stops, instead of a session timeout after. Produces in flight here
    /// end with NOT_LEADER_OR_FOLLOWER naming the new leader, and clients
    /// retry there; what the ISR acknowledged is on the new leaders.
    ///
    /// Nothing is proposed when no other broker is live to take over (a
    /// single node). Bounded by `timeout`: a quorum that does not answer
    /// in time leaves the handover to the session timeout. From here on
    /// this broker does not ask to be unfenced.
    pub async fn controlled_shutdown(&self, timeout: Duration) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        let handover = async {
            loop {
                let image = self.controller.image();
                if !image.live_brokers().any(|b| b.broker_id != self.node_id) {
                    return Ok::<usize, String>(0);
                }
                let records =
                    decisions::fence_broker(&image, self.node_id).map_err(|e| e.to_string())?;
                if records.is_empty() {
                    // Fenced already.
                    return Ok(0);
                }
                let moved = records.len() - 1;
                let outcome = self.propose(records).await.map_err(|e| e.to_string())?;
                self.wait_applied(outcome.log_index)
                    .await
                    .map_err(|e| e.to_string())?;
                if outcome.all_applied() {
                    return Ok(moved);
                }
                // Decided on a state that moved (an ISR change committed
                // meanwhile): decide again on the new one.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        match tokio::time::timeout(timeout, handover).await {
            Ok(Ok(0)) => {}
            Ok(Ok(moved)) => info!(
                node_id = self.node_id,
                partitions = moved,
                "controlled shutdown: this broker is fenced, its partitions have new leaders"
            ),
            Ok(Err(e)) => {
                warn!(error = %e, "controlled shutdown failed; the other brokers take over after the session timeout")
            }
            Err(_) => {
                warn!(timeout = ?timeout, "controlled shutdown did not finish in time; the other brokers take over after the session timeout")
            }
        }
    }

    /// As the quorum's leader: fences each live broker whose last
    /// heartbeat (or this node's election, for one not heard since) is
    /// older than the session timeout. One silent for two heartbeat
    /// intervals (or not heard at all since this node was elected) is
    /// probed first: a connection to its Kafka listener that
    /// is refused means nothing listens there, the process is gone (killed,
    /// crashed, its machine rebooted), and it is fenced at once rather
    /// than a session timeout later. A connection that is accepted or does
    /// not answer (a live broker behind a network partition, a stalled
    /// process) proves nothing: that broker waits for the timeout.
    async fn fence_silent(self: &Arc<Self>, sessions: &mut SessionWatch) {
        let image = self.controller.image();
        let now = std::time::Instant::now();
        let since = *sessions.leading_since.get_or_insert(now);
        let mut expired: Vec<(BrokerId, i64, &'static str)> = Vec::new();
        for broker in image.live_brokers() {
            if broker.broker_id == self.node_id {
                continue;
            }
            let last = self
                .controller
                .sessions()
                .last(broker.broker_id, broker.broker_epoch)
                .map_or(since, |at| at.max(since));
            let silent = now.duration_since(last);
            if silent > self.session_timeout {
                expired.push((
                    broker.broker_id,
                    broker.broker_epoch,
                    "no heartbeat for the session timeout",
                ));
                continue;
            }
            let key = (broker.broker_id, broker.broker_epoch);
            // A broker that has not heartbeated since this node took over
            // the quorum may be the old leader itself, gone with it: it is
            // probed at once, not two heartbeats later.
            let unheard = self
                .controller
                .sessions()
                .last(broker.broker_id, broker.broker_epoch)
                .is_none_or(|at| at < since);
            if silent <= self.heartbeat_interval * 2 && !unheard {
                // Heard again: whatever a probe found is out of date.
                sessions.refused.remove(&key);
                continue;
            }
            if sessions.refused.remove(&key) {
                expired.push((
                    broker.broker_id,
                    broker.broker_epoch,
                    "no heartbeat and its listener refuses connections: the process is gone",
                ));
                continue;
            }
            let due = sessions
                .probed
                .get(&key)
                .is_none_or(|at| now.duration_since(*at) >= self.heartbeat_interval);
            if !due {
                continue;
            }
            sessions.probed.insert(key, now);
            let listener = broker.listener.clone();
            let wait = self.heartbeat_interval.min(Duration::from_secs(1));
            sessions.probes.spawn(async move {
                let refused = matches!(
                    tokio::time::timeout(wait, tokio::net::TcpStream::connect(&listener)).await,
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
                );
                (key, refused)
            });
        }
        // Probes answered since the last check: a refusal fences at the
        // next one (the broker may have heartbeated meanwhile).
        while let Some(done) = sessions.probes.try_join_next() {
            if let Ok((key, true)) = done {
                sessions.refused.insert(key);
            }
        }
        // Forget brokers that were fenced or registered again since.
        let current = |(id, epoch): &(BrokerId, i64)| {
            image
                .broker(*id)
                .is_some_and(|b| b.broker_epoch == *epoch && !b.fenced)
        };
        sessions.probed.retain(|key, _| current(key));
        sessions.refused.retain(current);
        for (broker_id, broker_epoch, why) in expired {
            let image = self.controller.image();
            if !image
                .broker(broker_id)
                .is_some_and(|b| b.broker_epoch == broker_epoch && !b.fenced)
            {
                continue;
            }
            let Ok(records) = decisions::fence_broker(&image, broker_id) else {
                continue;
            };
            if records.is_empty() {
                continue;
            }
            warn!(
                broker_id,
                broker_epoch,
                reason = why,
                "fencing a broker: its partitions get new leaders"
            );
            if let Err(e) = self.propose(records).await {
                warn!(broker_id, error = %e, "fencing a broker failed; it is tried again");
            }
        }
    }

    /// Automatic preferred-leader balancing while this node leads the
    /// quorum (off unless `auto_leader_rebalance_enable`): every
    /// `leader_imbalance_check_interval_seconds` over all brokers, and
    /// after every metadata change for the brokers that returned (a new
    /// registration or an unfencing) and may get leaderships back, as
    /// soon as their replicas are in sync again; a returned broker is
    /// watched until its imbalance is below the threshold or the next
    /// periodic check covers it. Every node watches the same images, so a
    /// new quorum leader knows which brokers returned.
    fn balance_leaders(self: &Arc<Self>) {
        let Some(balance) = self.leader_balance else {
            return;
        };
        let weak: Weak<Metadata> = Arc::downgrade(self);
        let mut images = self.controller.subscribe();
        tokio::spawn(async move {
            let live_epochs = |image: &MetadataImage| -> BTreeMap<BrokerId, i64> {
                image
                    .live_brokers()
                    .map(|b| (b.broker_id, b.broker_epoch))
                    .collect()
            };
            let mut live = live_epochs(&images.borrow_and_update());
            let mut returned: BTreeSet<BrokerId> = BTreeSet::new();
            let mut next_check = tokio::time::Instant::now() + balance.interval;
            loop {
                let periodic = tokio::select! {
                    changed = images.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        false
                    }
                    () = tokio::time::sleep_until(next_check) => true,
                };
                let Some(metadata) = weak.upgrade() else {
                    break;
                };
                let image = images.borrow_and_update().clone();
                let now_live = live_epochs(&image);
                returned.extend(
                    now_live
                        .iter()
                        .filter(|&(id, epoch)| live.get(id) != Some(epoch))
                        .map(|(&id, _)| id),
                );
                live = now_live;
                let imbalanced =
                    decisions::imbalanced_brokers(&image, balance.imbalance_percentage);
                returned.retain(|b| imbalanced.contains(b));
                let scope = if periodic {
                    next_check = tokio::time::Instant::now() + balance.interval;
                    returned.clear();
                    None
                } else if returned.is_empty() {
                    continue;
                } else {
                    Some(returned.clone())
                };
                if !metadata.controller.is_leader() {
                    continue;
                }
                metadata
                    .rebalance(scope.as_ref(), balance.imbalance_percentage)
                    .await;
                drop(metadata);
                tokio::time::sleep(BALANCE_PAUSE).await;
            }
        });
    }

    /// One balancing pass: preferred leaders that are live and in sync get
    /// their partitions back where their broker's imbalance is above the
    /// threshold (`brokers`: only these brokers').
    async fn rebalance(&self, brokers: Option<&BTreeSet<BrokerId>>, imbalance_percentage: u32) {
        // Each proposal moves at most MAX_CHANGES_PER_PROPOSAL leaders; a
        // full one is followed by another, within a bound.
        for _ in 0..100 {
            let image = self.controller.image();
            let records = decisions::rebalance_leaders(
                &image,
                imbalance_percentage,
                brokers,
                MAX_CHANGES_PER_PROPOSAL,
            );
            if records.is_empty() {
                return;
            }
            let proposed = records.len();
            match self.propose(records).await {
                Ok(outcome) => {
                    let moved = outcome.outcomes.iter().filter(|o| o.is_ok()).count();
                    info!(
                        partitions = moved,
                        "moved partition leadership back to the preferred replicas"
                    );
                    if proposed < MAX_CHANGES_PER_PROPOSAL {
                        return;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "leader balancing not committed; it is tried again at the next check");
                    return;
                }
            }
        }
    }

    /// Sends one ISR change to the quorum; the metadata that commits it
    /// settles it on the partition (or the refusal does).
    async fn alter_isr(&self, topic_id: Uuid, partition: &Partition, change: AlterIsrRequest) {
        let request = AlterPartitionRequest {
            broker_id: self.node_id,
            broker_epoch: self.broker_epoch.load(std::sync::atomic::Ordering::Acquire),
            topic_id,
            partition: partition.index,
            leader_epoch: change.leader_epoch,
            partition_epoch: change.partition_epoch,
            new_isr: change.new_isr.clone(),
        };
        let record = match decisions::alter_partition(&self.controller.image(), &request) {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(e) => {
                warn!(topic = %partition.topic, partition = partition.index, error = %e, "ISR change refused");
                partition.isr_refused(&change, IsrRefusal::from(&e));
                return;
            }
        };
        info!(topic = %partition.topic, partition = partition.index, isr = ?change.new_isr, "changing the ISR");
        match self.propose(vec![record]).await {
            // Applying the committed record settles the change.
            Ok(outcome) if outcome.all_applied() => {}
            Ok(_) => partition.isr_refused(&change, IsrRefusal::Fenced),
            Err(e) => {
                warn!(topic = %partition.topic, partition = partition.index, error = %e, "ISR change not committed; it is tried again");
                partition.isr_refused(&change, IsrRefusal::Rejected);
            }
        }
    }

    /// Brings the local state in line with `image`: dynamic configs and
    /// topic defaults, topics created (their local partitions opened or
    /// made) or deleted (their data removed), partitions added, replicas
    /// this broker gained (made empty, then fetched from the leader) or
    /// lost (stopped, their data removed; at the first application also
    /// the directories of replicas lost while the broker was down),
    /// configs changed, and each local partition's leadership and leader
    /// epoch. Blocking (opens logs): call from a blocking thread.
    fn apply_image(&self, image: Arc<MetadataImage>) {
        let mut state = lock(&self.applying);
        if image.offset() < *self.applied.borrow() {
            return;
        }
        let started = std::time::Instant::now();
        let checkpoints = state.start_checkpoints.take();
        let first = checkpoints.is_some();
        let checkpoints = checkpoints.unwrap_or_default();

        let dynamic = DynamicConfigs {
            broker: image
                .broker_configs(self.node_id)
                .cloned()
                .unwrap_or_default(),
            cluster_default: image.cluster_configs().clone(),
            groups: image.group_configs().clone(),
        };
        let defaults_changed = *self.dynamic.read().unwrap_or_else(|e| e.into_inner()) != dynamic;
        if defaults_changed {
            let defaults = Arc::new(effective_log_defaults(&self.static_log_defaults, &dynamic));
            *self.dynamic.write().unwrap_or_else(|e| e.into_inner()) = dynamic;
            *self.log_defaults.write().unwrap_or_else(|e| e.into_inner()) = defaults;
        }
        let defaults = self.log_defaults();

        let mut current = self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut next = HashMap::with_capacity(image.topics().count());
        let mut truncated = 0u64;
        let mut followed: HashMap<BrokerId, (String, Vec<Followed>)> = HashMap::new();
        for t in image.topics() {
            let name: Arc<str> = t.name.as_str().into();
            let local = match current.remove(&name) {
                Some(local) if local.id == t.topic_id => Some(local),
                Some(older) => {
                    self.remove_topic(&older);
                    None
                }
                None => None,
            };
            let topic = local.unwrap_or_else(|| {
                Arc::new(Topic::new(
                    name.clone(),
                    t.topic_id,
                    t.configs.clone(),
                    Vec::new(),
                ))
            });
            let configs_changed = topic.configs() != t.configs;
            if configs_changed {
                topic.set_configs(t.configs.clone());
            }
            let log_config = resolve_log_config(&t.configs, &defaults);
            if configs_changed || defaults_changed {
                self.logs.reconfigure(&topic, &log_config);
            }
            let have = topic.partition_count();
            let mut failed = Vec::new();
            let mut open = |index: i32| -> Option<Arc<Partition>> {
                let opened = match lock(&self.prepared).remove(&(t.topic_id, index)) {
                    Some(log) => self
                        .logs
                        .install_prepared(&name, index, log)
                        .map(|p| (p, 0)),
                    None => self.logs.open_partition(
                        &name,
                        t.topic_id,
                        index,
                        &log_config,
                        &checkpoints,
                    ),
                };
                match opened {
                    Ok((partition, cut)) => {
                        truncated += cut;
                        Some(partition)
                    }
                    Err(e) => {
                        error!(topic = %name, partition = index, error = %e, "cannot open a partition of this broker; it stays offline");
                        failed.push((t.topic_id, index));
                        None
                    }
                }
            };
            // Partitions this broker had: a reassignment may have added a
            // replica here or taken this one away.
            for (&index, p) in t.partitions.range(..have) {
                let holds = p.replicas.contains(&self.node_id);
                match topic.partition(index) {
                    None if holds && !state.offline.contains(&(t.topic_id, index)) => {
                        if let Some(partition) = open(index) {
                            info!(topic = %name, partition = index, leader = p.leader, "this broker is a new replica of the partition; it follows the leader");
                            topic.set_partition(index, Some(partition));
                        }
                    }
                    Some(partition) if !holds => {
                        // Steps down first: produces waiting for acks=all
                        // are answered NOT_LEADER_OR_FOLLOWER.
                        partition.apply_state(self.node_id, p);
                        topic.set_partition(index, None);
                        self.logs.remove_partition(&partition);
                        info!(topic = %name, partition = index, "this broker no longer holds a replica of the partition; its data is removed");
                    }
                    _ => {}
                }
            }
            let mut added = Vec::new();
            for (&index, p) in t.partitions.range(have..) {
                let local = if p.replicas.contains(&self.node_id) {
                    open(index)
                } else {
                    if first {
                        self.logs.remove_stray_partition(&name, t.topic_id, index);
                    }
                    None
                };
                added.push(local);
            }
            state.offline.extend(failed);
            if !added.is_empty() {
                topic.add_partitions(added);
            }
            for (&index, p) in &t.partitions {
                if let Some(partition) = topic.partition(index) {
                    partition.apply_state(self.node_id, p);
                    let leader = image.broker(p.leader).filter(|b| !b.fenced);
                    if let Some(leader) = leader.filter(|b| b.broker_id != self.node_id) {
                        followed
                            .entry(leader.broker_id)
                            .or_insert_with(|| (leader.listener.clone(), Vec::new()))
                            .1
                            .push(Followed {
                                partition: partition.clone(),
                                leader_epoch: p.leader_epoch,
                            });
                    }
                }
            }
            next.insert(name, topic);
        }
        for gone in current.into_values() {
            self.remove_topic(&gone);
        }
        self.fetchers.update(followed);
        *self.topics.write().unwrap_or_else(|e| e.into_inner()) = next;
        let offset = image.offset();
        *self.image.write().unwrap_or_else(|e| e.into_inner()) = image;
        self.applied.send_replace(offset);
        if first {
            let topics = self.topics();
            info!(
                topics = topics.len(),
                partitions = topics.iter().map(|t| t.partitions().len()).sum::<usize>(),
                truncated_bytes = truncated,
                elapsed_ms = started.elapsed().as_millis() as u64,
                data_dir = %self.data_dir.display(),
                "storage loaded"
            );
        }
    }

    fn remove_topic(&self, topic: &Topic) {
        self.logs.delete_partitions(topic);
        info!(topic = %topic.name, "deleted topic");
    }

    async fn propose(&self, records: Vec<MetadataRecord>) -> Result<ProposalOutcome, BrokerError> {
        self.controller
            .propose(records)
            .await
            .map_err(controller_error)
    }

    /// The live broker leading `topic`-`partition` in the image this broker
    /// applied: (its id, the leader epoch, its Kafka listener).
    pub fn partition_leader(&self, topic: &str, partition: i32) -> Option<(BrokerId, i32, String)> {
        let image = self.image();
        let state = image.topic_by_name(topic)?.partitions.get(&partition)?;
        let leader = image.broker(state.leader).filter(|b| !b.fenced)?;
        Some((state.leader, state.leader_epoch, leader.listener.clone()))
    }

    /// The live broker coordinating consumer group `group`: the leader of
    /// its `__consumer_offsets` partition (Kafka's hash of the group id).
    pub fn group_coordinator(&self, group: &str) -> Option<(BrokerId, String)> {
        let count = self.image().topic_by_name(OFFSETS_TOPIC)?.partitions.len() as i32;
        let (leader, _, listener) =
            self.partition_leader(OFFSETS_TOPIC, partition_for(group, count))?;
        Some((leader, listener))
    }

    /// The live broker coordinating transactional id `id`: the leader of
    /// its `__transaction_state` partition. `Err(false)` while the topic
    /// does not exist, `Err(true)` when the partition has no live leader.
    pub fn transaction_coordinator(&self, id: &str) -> Result<(BrokerId, String), bool> {
        let count = match self.image().topic_by_name(TRANSACTION_STATE_TOPIC) {
            Some(t) => t.partitions.len() as i32,
            None => return Err(false),
        };
        let (leader, _, listener) = self
            .partition_leader(TRANSACTION_STATE_TOPIC, partition_for(id, count))
            .ok_or(true)?;
        Ok((leader, listener))
    }

    /// Waits until at least `count` brokers are registered and unfenced in
    /// the image this broker applied, or `timeout` passed; returns whether
    /// they are.
    pub async fn wait_for_live_brokers(&self, count: usize, timeout: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        let live = |m: &Metadata| m.image().live_brokers().count() >= count;
        let reached = tokio::time::timeout(timeout, async {
            while !live(self) {
                if applied.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        reached.is_ok() && live(self)
    }

    /// A receiver that wakes after each metadata change this broker applied
    /// (its local partitions already follow it).
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Waits until this broker applied the log up to `index`.
    async fn wait_applied(&self, index: u64) -> Result<(), BrokerError> {
        let mut applied = self.applied.subscribe();
        let reached = tokio::time::timeout(APPLY_TIMEOUT, applied.wait_for(|&at| at >= index))
            .await
            .map(|r| r.is_ok());
        match reached {
            Ok(true) => Ok(()),
            _ => Err(BrokerError::MetadataTimeout(format!(
                "the change (metadata log index {index}) was not applied here within {APPLY_TIMEOUT:?}"
            ))),
        }
    }

    /// Waits until this broker applied everything the controller has.
    async fn catch_up(&self) -> Result<(), BrokerError> {
        self.wait_applied(self.controller.image().offset()).await
    }

    /// Proposes the records of a creation whose local partitions were
    /// prepared; the prepared logs go whenever the records do not apply.
    async fn propose_with_prepared(
        &self,
        name: &str,
        topic_id: Uuid,
        prepared: Vec<(i32, PartitionLog)>,
        records: Vec<MetadataRecord>,
    ) -> Result<ProposalOutcome, BrokerError> {
        {
            let mut map = lock(&self.prepared);
            for (p, log) in prepared {
                map.insert((topic_id, p), log);
            }
        }
        let result = self.propose(records).await;
        let ok = matches!(&result, Ok(outcome) if outcome.all_applied());
        if ok {
            if let Ok(outcome) = &result {
                self.wait_applied(outcome.log_index).await?;
            }
        }
        // Whatever the application did not take is not needed.
        let left: Vec<(i32, PartitionLog)> = {
            let mut map = lock(&self.prepared);
            let keys: Vec<(Uuid, i32)> = map.keys().filter(|k| k.0 == topic_id).copied().collect();
            keys.into_iter()
                .filter_map(|k| map.remove(&k).map(|log| (k.1, log)))
                .collect()
        };
        if !left.is_empty() {
            self.logs.discard_prepared(name, topic_id, left);
        }
        result
    }

    /// The metadata quorum this broker is a voter of.
    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// The image the local state follows (brokers, partitions' replicas,
    /// leaders and ISRs).
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops the controller and releases the metadata directory.
    pub async fn shutdown(&self) {
        self.controller.shutdown().await;
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

    /// A partition this broker holds a replica of.
    pub fn partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>, BrokerError> {
        let t = self
            .topic(topic)
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_string()))?;
        match t.partition(index) {
            Some(p) => Ok(p),
            None if index >= 0 && index < t.partition_count() => {
                Err(BrokerError::NotLeaderOrFollower(topic.to_string(), index))
            }
            None => Err(BrokerError::UnknownPartition(topic.to_string(), index)),
        }
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

    /// Checks a CreateTopics request for one topic without creating it:
    /// the records it would propose, and the partition count.
    fn decide_new_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &BTreeMap<String, String>,
    ) -> Result<(NewTopic, Vec<MetadataRecord>), BrokerError> {
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
        for (k, v) in configs {
            validate_topic_config(k, v)?;
        }
        let request = NewTopic {
            name: name.to_string(),
            topic_id: Uuid::new_v4(),
            partitions,
            replication_factor: (replication_factor != -1).then_some(replication_factor as i32),
            configs: configs.clone(),
        };
        let records =
            decisions::create_topic(&self.controller.image(), &request).map_err(decision_error)?;
        Ok((request, records))
    }

    /// Checks a CreateTopics request for one topic without creating it;
    /// returns the partition count it would have.
    pub fn validate_new_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &BTreeMap<String, String>,
    ) -> Result<i32, BrokerError> {
        let (request, _) = self.decide_new_topic(name, partitions, replication_factor, configs)?;
        Ok(request.partitions)
    }

    /// Creates a topic with all its partitions, or nothing: the partitions
    /// this broker holds are made before the topic is proposed, and a
    /// failure to make them fails the creation.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>, BrokerError> {
        let _admin = self.admin.lock().await;
        let decided = self.decide_new_topic(name, partitions, replication_factor, &configs);
        let (request, records) = match decided {
            Err(BrokerError::TopicExists(name)) => {
                // Another broker created it: answer once it is known here.
                self.catch_up().await?;
                return Err(BrokerError::TopicExists(name));
            }
            other => other?,
        };
        if validate_only {
            return Ok(Arc::new(Topic::new(
                name.into(),
                request.topic_id,
                configs,
                vec![None; request.partitions as usize],
            )));
        }
        let log_config = resolve_log_config(&configs, &self.log_defaults());
        let local = self.local_partitions(&records);
        let prepared = self
            .logs
            .prepare_partitions(name, request.topic_id, &local, &log_config)?;
        let outcome = self
            .propose_with_prepared(name, request.topic_id, prepared, records)
            .await?;
        if !outcome.all_applied() {
            self.catch_up().await?;
            return Err(BrokerError::TopicExists(name.to_string()));
        }
        let topic = self
            .topic(name)
            .filter(|t| t.id == request.topic_id)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
        info!(
            topic = name,
            partitions = request.partitions,
            "created topic"
        );
        Ok(topic)
    }

    /// The partitions of `records` this broker has a replica of.
    fn local_partitions(&self, records: &[MetadataRecord]) -> Vec<i32> {
        records
            .iter()
            .filter_map(|r| match r {
                MetadataRecord::PartitionCreated(p) if p.replicas.contains(&self.node_id) => {
                    Some(p.partition)
                }
                _ => None,
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
        let record =
            decisions::delete_topic(&self.controller.image(), name).map_err(decision_error)?;
        let outcome = self.propose(vec![record]).await?;
        if !outcome.all_applied() {
            return Err(BrokerError::UnknownTopic(name.to_string()));
        }
        self.wait_applied(outcome.log_index).await?;
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
        let records = decisions::add_partitions(&self.controller.image(), name, count)
            .map_err(decision_error)?;
        if validate_only {
            return Ok(());
        }
        let log_config = resolve_log_config(&topic.configs(), &self.log_defaults());
        let local = self.local_partitions(&records);
        let prepared = self
            .logs
            .prepare_partitions(name, topic.id, &local, &log_config)?;
        let outcome = self
            .propose_with_prepared(name, topic.id, prepared, records)
            .await?;
        if !outcome.all_applied() {
            return Err(BrokerError::InvalidPartitions(format!(
                "topic '{name}' changed while its partitions were added; try again"
            )));
        }
        info!(topic = name, from = current, to = count, "added partitions");
        Ok(())
    }

    /// Proposes config records and waits until they apply here.
    async fn propose_configs(&self, records: Vec<MetadataRecord>) -> Result<(), BrokerError> {
        if records.is_empty() {
            return Ok(());
        }
        let outcome = self.propose(records).await?;
        if let Some((_, why)) = outcome.first_ignored() {
            return Err(BrokerError::InvalidRequest(format!(
                "the config change was not applied: {why}"
            )));
        }
        self.wait_applied(outcome.log_index).await
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
        let before = topic.configs();
        let mut configs = if replace_all {
            BTreeMap::new()
        } else {
            before.clone()
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
        let records = config_changes(&ConfigResource::Topic(topic.id), &before, &configs);
        self.propose_configs(records).await?;
        info!(topic = name, "altered topic configs");
        Ok(())
    }

    /// Changes dynamic broker configs, for this broker or as the cluster
    /// default (all or nothing), through the metadata log; every topic
    /// without its own override follows the new defaults once applied.
    pub async fn alter_broker_configs(
        &self,
        scope: BrokerConfigScope,
        changes: &[ConfigChange],
        replace_all: bool,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().await;
        let mut dynamic = self.dynamic_configs();
        let current = effective_log_defaults(&self.static_log_defaults, &dynamic);
        let (resource, level) = match scope {
            BrokerConfigScope::Broker => {
                (ConfigResource::Broker(self.node_id), &mut dynamic.broker)
            }
            BrokerConfigScope::ClusterDefault => {
                (ConfigResource::Cluster, &mut dynamic.cluster_default)
            }
        };
        let before = level.clone();
        if replace_all {
            level.clear();
        }
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
        let records = config_changes(&resource, &before, level);
        self.propose_configs(records).await?;
        info!(?scope, "altered dynamic broker configs");
        Ok(())
    }

    /// Decides one change per entry of `keys` with `decide` over the
    /// current image (each decision sees the ones taken before it, as in
    /// Kafka's single-threaded controller, so an entry listed twice sees
    /// its first change), proposes the records in batches, and decides
    /// again the entries whose records were ignored because their
    /// partition moved between the decision and the commit. Returns each
    /// entry's outcome, in order, once this broker applied the changes.
    async fn change_partitions<K>(
        &self,
        keys: &[K],
        decide: impl Fn(&MetadataImage, &K) -> Result<Option<MetadataRecord>, DecisionError>,
    ) -> Vec<Result<(), BrokerError>> {
        let _admin = self.admin.lock().await;
        let mut results: Vec<Option<Result<(), BrokerError>>> =
            std::iter::repeat_with(|| None).take(keys.len()).collect();
        let mut pending: Vec<usize> = (0..keys.len()).collect();
        for _ in 0..DECISION_ATTEMPTS {
            let mut scratch = (*self.controller.image()).clone();
            let mut decided: Vec<(usize, MetadataRecord)> = Vec::new();
            for &i in &pending {
                match decide(&scratch, &keys[i]) {
                    Err(e) => results[i] = Some(Err(decision_error(e))),
                    Ok(None) => results[i] = Some(Ok(())),
                    Ok(Some(record)) => match scratch.apply(&record) {
                        Ok(()) => decided.push((i, record)),
                        Err(why) => {
                            results[i] = Some(Err(BrokerError::InvalidRequest(format!(
                                "the change does not apply: {why}"
                            ))))
                        }
                    },
                }
            }
            pending.clear();
            let mut applied_at = None;
            for batch in decided.chunks(MAX_CHANGES_PER_PROPOSAL) {
                let records = batch.iter().map(|(_, r)| r.clone()).collect();
                match self.propose(records).await {
                    Ok(outcome) => {
                        applied_at = Some(outcome.log_index);
                        for ((i, _), o) in batch.iter().zip(&outcome.outcomes) {
                            match o {
                                Ok(()) => results[*i] = Some(Ok(())),
                                Err(_) => pending.push(*i),
                            }
                        }
                    }
                    Err(e) => {
                        for (i, _) in batch {
                            results[*i] = Some(Err(BrokerError::MetadataTimeout(e.to_string())));
                        }
                    }
                }
            }
            if let Some(index) = applied_at {
                if let Err(e) = self.wait_applied(index).await {
                    warn!(error = %e, "a committed partition change is not applied here yet");
                }
            }
            if pending.is_empty() {
                break;
            }
        }
        for i in pending {
            results[i] = Some(Err(BrokerError::MetadataTimeout(
                "the partition kept changing while the change was decided; try again".into(),
            )));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(BrokerError::InvalidRequest("not decided".into()))))
            .collect()
    }

    /// ElectLeaders: per partition (`None`: every partition of every
    /// topic, answered without those that need no election, as Kafka),
    /// the outcome of a preferred or unclean election.
    pub async fn elect_leaders(
        &self,
        election: ElectionType,
        partitions: Option<Vec<(String, Vec<i32>)>>,
    ) -> PartitionResults {
        let all = partitions.is_none();
        let partitions = partitions.unwrap_or_else(|| {
            self.controller
                .image()
                .topics()
                .map(|t| (t.name.clone(), t.partitions.keys().copied().collect()))
                .collect()
        });
        let keys: Vec<(String, i32)> = partitions
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.clone(), p)))
            .collect();
        let outcomes = self
            .change_partitions(&keys, |image, (topic, p)| {
                decisions::elect_leader(image, topic, *p, election).map(Some)
            })
            .await;
        let elected = outcomes.iter().filter(|o| o.is_ok()).count();
        if elected > 0 {
            info!(?election, partitions = elected, "elected partition leaders");
        }
        let mut outcomes = outcomes.into_iter();
        partitions
            .into_iter()
            .map(|(topic, ps)| {
                let results = ps
                    .into_iter()
                    .map(|p| (p, outcomes.next().expect("one outcome per partition")))
                    .filter(|(_, o)| !(all && matches!(o, Err(BrokerError::ElectionNotNeeded(_)))))
                    .collect();
                (topic, results)
            })
            .collect()
    }

    /// AlterPartitionReassignments: per partition, start (or replace) a
    /// reassignment to the target replicas, or cancel one (`None`).
    pub async fn alter_partition_reassignments(
        &self,
        topics: ReassignmentTargets,
        allow_replication_factor_change: bool,
    ) -> PartitionResults {
        let keys: Vec<(&str, i32, Option<&[BrokerId]>)> = topics
            .iter()
            .flat_map(|(t, ps)| {
                ps.iter()
                    .map(move |(p, target)| (t.as_str(), *p, target.as_deref()))
            })
            .collect();
        let outcomes = self
            .change_partitions(&keys, |image, &(topic, p, target)| {
                decisions::alter_reassignment(
                    image,
                    topic,
                    p,
                    target,
                    allow_replication_factor_change,
                )
            })
            .await;
        for ((topic, p, target), outcome) in keys.iter().zip(&outcomes) {
            match (target, outcome) {
                (Some(target), Ok(())) => {
                    info!(
                        topic,
                        partition = p,
                        ?target,
                        "partition reassignment started"
                    )
                }
                (None, Ok(())) => info!(topic, partition = p, "partition reassignment cancelled"),
                (_, Err(e)) => {
                    info!(topic, partition = p, error = %e, "partition reassignment refused")
                }
            }
        }
        let mut outcomes = outcomes.into_iter();
        topics
            .into_iter()
            .map(|(topic, ps)| {
                let results = ps
                    .into_iter()
                    .map(|(p, _)| (p, outcomes.next().expect("one outcome per partition")))
                    .collect();
                (topic, results)
            })
            .collect()
    }

    /// ListPartitionReassignments: the ongoing reassignments (of every
    /// topic, or of the partitions listed), as this broker applied them.
    pub fn list_partition_reassignments(
        &self,
        wanted: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<OngoingReassignment> {
        decisions::list_reassignments(&self.image(), wanted)
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

    /// Changes a group's configs (all or nothing) through the metadata log.
    pub async fn alter_group_configs(
        &self,
        group: &str,
        changes: &[ConfigChange],
        replace_all: bool,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().await;
        let before = self.group_configs(group);
        let mut configs = if replace_all {
            BTreeMap::new()
        } else {
            before.clone()
        };
        // No group config is a list.
        apply_config_changes(&mut configs, changes, |_| None)?;
        validate_group_configs(&configs)?;
        if validate_only {
            return Ok(());
        }
        let records = config_changes(&ConfigResource::Group(group.to_string()), &before, &configs);
        self.propose_configs(records).await?;
        info!(group, "altered group configs");
        Ok(())
    }
}
