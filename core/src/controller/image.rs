//! `MetadataImage`: the cluster metadata the quorum agreed on, as of one
//! point in the metadata log.
//!
//! It is the controller's replicated state machine: every node starts from
//! the same snapshot and applies the same records in the same order with
//! [`MetadataImage::apply`], so every node holds the same image at the same
//! log index. `apply` is deterministic and total: a record that refers to
//! an unknown broker, topic or partition, or that was decided on a state
//! that is no longer current (a stale epoch), is ignored with a reason,
//! never a panic, and the image is left as it was.
//!
//! What it is not: a decision maker (which records a request turns into is
//! in [`super::decisions`]) and not the live partitions of a broker (those
//! follow the image).
//!
//! Maps are `BTreeMap`s so iteration, and therefore the decisions taken over
//! the image and the snapshot bytes, are the same on every node.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::records::*;

/// Largest snapshot image accepted when decoding (from disk or a peer).
pub const MAX_IMAGE_BYTES: usize = 1 << 30;

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerImage {
    pub broker_id: BrokerId,
    pub incarnation_id: Uuid,
    pub broker_epoch: i64,
    pub listener: String,
    pub rack: Option<String>,
    /// A fenced broker leads nothing and is in no ISR (except as the last
    /// member of one that has no leader).
    pub fenced: bool,
}

/// A partition's replication state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PartitionState {
    /// The assigned replicas; the first is the preferred leader. While a
    /// reassignment runs: its target, then the replicas it removes.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas. Never empty: when its last live member is
    /// fenced it stays, and the partition has no leader until it returns.
    pub isr: Vec<BrokerId>,
    /// [`NO_LEADER`] when there is none.
    pub leader: BrokerId,
    /// Bumped when the leader changes; fences requests of older leaders.
    pub leader_epoch: i32,
    /// Bumped on every change; fences changes decided on an older state.
    pub partition_epoch: i32,
    /// Replicas an ongoing reassignment adds (KIP-455): they follow the
    /// leader and join the ISR like any replica.
    #[serde(default)]
    pub adding_replicas: Vec<BrokerId>,
    /// Replicas an ongoing reassignment removes once every target replica
    /// is in the ISR.
    #[serde(default)]
    pub removing_replicas: Vec<BrokerId>,
}

impl PartitionState {
    /// Whether a reassignment is in progress.
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas the partition will have: the reassignment's target, or
    /// the replicas when none runs.
    pub fn target_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.removing_replicas.contains(b))
            .collect()
    }

    /// The replicas before the ongoing reassignment (what cancelling it
    /// restores).
    pub fn original_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.adding_replicas.contains(b))
            .collect()
    }
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub topic_id: Uuid,
    pub name: String,
    pub configs: BTreeMap<String, String>,
    pub partitions: BTreeMap<i32, PartitionState>,
}

/// The applied metadata. Cheap to share behind an `Arc`; cloned only when
/// records are applied while readers still hold the previous version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataImage {
    /// Raft log index of the last entry applied (0: none).
    offset: u64,
    brokers: BTreeMap<BrokerId, BrokerImage>,
    topics: BTreeMap<Uuid, TopicImage>,
    /// Derived from `topics`; not part of the snapshot.
    topic_ids: BTreeMap<String, Uuid>,
    broker_configs: BTreeMap<BrokerId, BTreeMap<String, String>>,
    cluster_configs: BTreeMap<String, String>,
    group_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// The first producer id not yet handed out.
    next_producer_id: i64,
}

/// The snapshot form of an image: what is stored, without derived indexes.
#[derive(Serialize, Deserialize)]
struct ImageSnapshot {
    offset: u64,
    brokers: Vec<BrokerImage>,
    topics: Vec<TopicImage>,
    broker_configs: BTreeMap<BrokerId, BTreeMap<String, String>>,
    cluster_configs: BTreeMap<String, String>,
    #[serde(default)]
    group_configs: BTreeMap<String, BTreeMap<String, String>>,
    next_producer_id: i64,
}

/// A snapshot that cannot be decoded into an image.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotDecodeError {
    #[error("metadata snapshot of {0} bytes is over the {MAX_IMAGE_BYTES} byte limit")]
    TooLarge(usize),
    #[error("metadata snapshot is not valid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("metadata snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

/// Checks a reassignment's sets against the replicas: both inside them,
/// disjoint, without repeats, and leaving at least one replica.
fn check_reassignment(
    replicas: &[BrokerId],
    adding: &[BrokerId],
    removing: &[BrokerId],
) -> RecordOutcome {
    for (name, set) in [("adding", adding), ("removing", removing)] {
        let mut seen = BTreeSet::new();
        for &b in set {
            if !replicas.contains(&b) {
                return Err(invalid(format!(
                    "{name} replica {b} is not among the replicas"
                )));
            }
            if !seen.insert(b) {
                return Err(invalid(format!("{name} replica {b} is listed twice")));
            }
        }
    }
    if let Some(b) = adding.iter().find(|b| removing.contains(b)) {
        return Err(invalid(format!("replica {b} is both added and removed")));
    }
    if replicas.iter().all(|b| removing.contains(b)) {
        return Err(invalid("a reassignment removes every replica"));
    }
    Ok(())
}

fn invalid(detail: impl Into<String>) -> Ignored {
    Ignored::Invalid {
        detail: detail.into(),
    }
}

impl MetadataImage {
    /// The empty image, before the first record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raft log index of the last applied entry (0 before any).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Records that everything up to log index `offset` is applied.
    pub(crate) fn set_offset(&mut self, offset: u64) {
        self.offset = offset;
    }

    // ----- queries -----

    pub fn broker(&self, broker_id: BrokerId) -> Option<&BrokerImage> {
        self.brokers.get(&broker_id)
    }

    /// Every registered broker, fenced or not, by id.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values()
    }

    /// Registered, unfenced brokers, by id.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    pub fn is_live(&self, broker_id: BrokerId) -> bool {
        self.brokers.get(&broker_id).is_some_and(|b| !b.fenced)
    }

    pub fn topic(&self, topic_id: &Uuid) -> Option<&TopicImage> {
        self.topics.get(topic_id)
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.topic_ids.get(name).and_then(|id| self.topics.get(id))
    }

    /// Every topic, by id.
    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values()
    }

    pub fn partition(&self, topic_id: &Uuid, partition: i32) -> Option<&PartitionState> {
        self.topics.get(topic_id)?.partitions.get(&partition)
    }

    /// The cluster-wide value of a config key, if set.
    pub fn cluster_config(&self, name: &str) -> Option<&str> {
        self.cluster_configs.get(name).map(String::as_str)
    }

    pub fn cluster_configs(&self) -> &BTreeMap<String, String> {
        &self.cluster_configs
    }

    /// Every group's configs (GROUP resources).
    pub fn group_configs(&self) -> &BTreeMap<String, BTreeMap<String, String>> {
        &self.group_configs
    }

    /// One broker's overrides.
    pub fn broker_configs(&self, broker_id: BrokerId) -> Option<&BTreeMap<String, String>> {
        self.broker_configs.get(&broker_id)
    }

    /// A topic's value of a config key: its override, else the cluster's.
    pub fn topic_config(&self, topic: &TopicImage, name: &str) -> Option<String> {
        topic
            .configs
            .get(name)
            .or_else(|| self.cluster_configs.get(name))
            .cloned()
    }

    /// The first producer id not yet handed out.
    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }

    // ----- apply -----

    /// Applies one record, or leaves the image unchanged and says why not.
    pub fn apply(&mut self, record: &MetadataRecord) -> RecordOutcome {
        match record {
            MetadataRecord::BrokerRegistered(r) => self.apply_registration(r),
            MetadataRecord::BrokerFenced(r) => self.apply_fencing(r, true),
            MetadataRecord::BrokerUnfenced(r) => self.apply_fencing(r, false),
            MetadataRecord::TopicCreated(r) => self.apply_topic_created(r),
            MetadataRecord::TopicDeleted { topic_id } => {
                let topic = self.topics.remove(topic_id).ok_or(Ignored::UnknownTopic {
                    topic_id: *topic_id,
                })?;
                self.topic_ids.remove(&topic.name);
                Ok(())
            }
            MetadataRecord::PartitionCreated(r) => self.apply_partition_created(r),
            MetadataRecord::PartitionChanged(r) => self.apply_partition_changed(r),
            MetadataRecord::ConfigChanged(r) => self.apply_config(r),
            MetadataRecord::ProducerIdsAllocated(r) => {
                if !self.brokers.contains_key(&r.broker_id) {
                    return Err(Ignored::UnknownBroker {
                        broker_id: r.broker_id,
                    });
                }
                if r.next_producer_id <= self.next_producer_id {
                    return Err(Ignored::StaleProducerIds {
                        current: self.next_producer_id,
                        record: r.next_producer_id,
                    });
                }
                self.next_producer_id = r.next_producer_id;
                Ok(())
            }
        }
    }

    fn apply_registration(&mut self, r: &BrokerRegistration) -> RecordOutcome {
        if r.broker_id < 0 {
            return Err(invalid(format!("broker id {} is negative", r.broker_id)));
        }
        if let Some(current) = self.brokers.get(&r.broker_id) {
            if current.incarnation_id == r.incarnation_id && current.broker_epoch == r.broker_epoch
            {
                // The same registration again (a retried proposal): nothing
                // changes, and it is not an error.
                return Ok(());
            }
            if r.broker_epoch <= current.broker_epoch {
                return Err(Ignored::StaleBrokerEpoch {
                    broker_id: r.broker_id,
                    current: current.broker_epoch,
                    record: r.broker_epoch,
                });
            }
        }
        self.brokers.insert(
            r.broker_id,
            BrokerImage {
                broker_id: r.broker_id,
                incarnation_id: r.incarnation_id,
                broker_epoch: r.broker_epoch,
                listener: r.listener.clone(),
                rack: r.rack.clone(),
                fenced: true,
            },
        );
        Ok(())
    }

    fn apply_fencing(&mut self, r: &BrokerEpochRef, fenced: bool) -> RecordOutcome {
        let broker = self
            .brokers
            .get_mut(&r.broker_id)
            .ok_or(Ignored::UnknownBroker {
                broker_id: r.broker_id,
            })?;
        if broker.broker_epoch != r.broker_epoch {
            return Err(Ignored::StaleBrokerEpoch {
                broker_id: r.broker_id,
                current: broker.broker_epoch,
                record: r.broker_epoch,
            });
        }
        broker.fenced = fenced;
        Ok(())
    }

    fn apply_topic_created(&mut self, r: &TopicCreated) -> RecordOutcome {
        if r.name.is_empty() {
            return Err(invalid("topic name is empty"));
        }
        if self.topic_ids.contains_key(&r.name) {
            return Err(Ignored::TopicNameExists {
                name: r.name.clone(),
            });
        }
        if self.topics.contains_key(&r.topic_id) {
            return Err(Ignored::TopicIdExists {
                topic_id: r.topic_id,
            });
        }
        self.topic_ids.insert(r.name.clone(), r.topic_id);
        self.topics.insert(
            r.topic_id,
            TopicImage {
                topic_id: r.topic_id,
                name: r.name.clone(),
                configs: r.configs.clone(),
                partitions: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// Checks a replica set, an ISR inside it and a leader inside the ISR.
    fn check_assignment(
        &self,
        replicas: &[BrokerId],
        isr: &[BrokerId],
        leader: BrokerId,
    ) -> RecordOutcome {
        if replicas.is_empty() {
            return Err(invalid("no replicas"));
        }
        let mut seen = BTreeSet::new();
        for &b in replicas {
            if !seen.insert(b) {
                return Err(invalid(format!("broker {b} is twice in the replicas")));
            }
            if !self.brokers.contains_key(&b) {
                return Err(Ignored::UnknownBroker { broker_id: b });
            }
        }
        if isr.is_empty() {
            return Err(invalid("the ISR is empty"));
        }
        let mut in_isr = BTreeSet::new();
        for &b in isr {
            if !seen.contains(&b) {
                return Err(invalid(format!("ISR member {b} is not a replica")));
            }
            if !in_isr.insert(b) {
                return Err(invalid(format!("broker {b} is twice in the ISR")));
            }
        }
        if leader != NO_LEADER && !in_isr.contains(&leader) {
            return Err(invalid(format!("leader {leader} is not in the ISR")));
        }
        Ok(())
    }

    fn apply_partition_created(&mut self, r: &PartitionCreated) -> RecordOutcome {
        let topic = self.topics.get(&r.topic_id).ok_or(Ignored::UnknownTopic {
            topic_id: r.topic_id,
        })?;
        if r.partition < 0 {
            return Err(invalid(format!(
                "partition index {} is negative",
                r.partition
            )));
        }
        if topic.partitions.contains_key(&r.partition) {
            return Err(Ignored::PartitionExists {
                topic_id: r.topic_id,
                partition: r.partition,
            });
        }
        if r.leader_epoch < 0 || r.partition_epoch < 0 {
            return Err(invalid("negative epoch"));
        }
        self.check_assignment(&r.replicas, &r.isr, r.leader)?;
        let state = PartitionState {
            replicas: r.replicas.clone(),
            isr: r.isr.clone(),
            leader: r.leader,
            leader_epoch: r.leader_epoch,
            partition_epoch: r.partition_epoch,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        };
        self.topics
            .get_mut(&r.topic_id)
            .expect("checked above")
            .partitions
            .insert(r.partition, state);
        Ok(())
    }

    fn apply_partition_changed(&mut self, r: &PartitionChanged) -> RecordOutcome {
        let current = self.partition(&r.topic_id, r.partition).ok_or_else(|| {
            if self.topics.contains_key(&r.topic_id) {
                Ignored::UnknownPartition {
                    topic_id: r.topic_id,
                    partition: r.partition,
                }
            } else {
                Ignored::UnknownTopic {
                    topic_id: r.topic_id,
                }
            }
        })?;
        if current.partition_epoch != r.partition_epoch {
            return Err(Ignored::StalePartitionEpoch {
                topic_id: r.topic_id,
                partition: r.partition,
                current: current.partition_epoch,
                record: r.partition_epoch,
            });
        }
        let replicas = r.replicas.as_ref().unwrap_or(&current.replicas);
        let isr = r.isr.as_ref().unwrap_or(&current.isr);
        let leader = r.leader.unwrap_or(current.leader);
        let adding = r
            .adding_replicas
            .as_ref()
            .unwrap_or(&current.adding_replicas);
        let removing = r
            .removing_replicas
            .as_ref()
            .unwrap_or(&current.removing_replicas);
        if leader < NO_LEADER {
            return Err(invalid(format!("leader {leader} is not a broker id")));
        }
        self.check_assignment(replicas, isr, leader)?;
        check_reassignment(replicas, adding, removing)?;
        let next = PartitionState {
            adding_replicas: adding.clone(),
            removing_replicas: removing.clone(),
            replicas: replicas.clone(),
            isr: isr.clone(),
            leader,
            leader_epoch: if leader != current.leader {
                current.leader_epoch.saturating_add(1)
            } else {
                current.leader_epoch
            },
            partition_epoch: current.partition_epoch.saturating_add(1),
        };
        *self
            .topics
            .get_mut(&r.topic_id)
            .and_then(|t| t.partitions.get_mut(&r.partition))
            .expect("checked above") = next;
        Ok(())
    }

    fn apply_config(&mut self, r: &ConfigChanged) -> RecordOutcome {
        if r.name.is_empty() {
            return Err(invalid("config name is empty"));
        }
        let configs = match &r.resource {
            &ConfigResource::Topic(topic_id) => {
                &mut self
                    .topics
                    .get_mut(&topic_id)
                    .ok_or(Ignored::UnknownTopic { topic_id })?
                    .configs
            }
            &ConfigResource::Broker(broker_id) => {
                if !self.brokers.contains_key(&broker_id) {
                    return Err(Ignored::UnknownBroker { broker_id });
                }
                self.broker_configs.entry(broker_id).or_default()
            }
            ConfigResource::Cluster => &mut self.cluster_configs,
            ConfigResource::Group(group) => {
                if group.is_empty() {
                    return Err(invalid("group name is empty"));
                }
                self.group_configs.entry(group.clone()).or_default()
            }
        };
        match &r.value {
            Some(value) => {
                configs.insert(r.name.clone(), value.clone());
            }
            None => {
                configs.remove(&r.name);
            }
        }
        match &r.resource {
            ConfigResource::Broker(broker_id)
                if self
                    .broker_configs
                    .get(broker_id)
                    .is_some_and(BTreeMap::is_empty) =>
            {
                self.broker_configs.remove(broker_id);
            }
            ConfigResource::Group(group)
                if self
                    .group_configs
                    .get(group)
                    .is_some_and(BTreeMap::is_empty) =>
            {
                self.group_configs.remove(group);
            }
            _ => {}
        }
        Ok(())
    }

    // ----- snapshots -----

    /// The image as snapshot bytes (JSON; deterministic for a given image).
    pub fn to_snapshot_bytes(&self) -> Vec<u8> {
        let snapshot = ImageSnapshot {
            offset: self.offset,
            brokers: self.brokers.values().cloned().collect(),
            topics: self.topics.values().cloned().collect(),
            broker_configs: self.broker_configs.clone(),
            cluster_configs: self.cluster_configs.clone(),
            group_configs: self.group_configs.clone(),
            next_producer_id: self.next_producer_id,
        };
        serde_json::to_vec(&snapshot).expect("an image always serializes")
    }

    /// Decodes snapshot bytes, checking that ids and names are unique.
    pub fn from_snapshot_bytes(bytes: &[u8]) -> Result<Self, SnapshotDecodeError> {
        if bytes.len() > MAX_IMAGE_BYTES {
            return Err(SnapshotDecodeError::TooLarge(bytes.len()));
        }
        let snapshot: ImageSnapshot = serde_json::from_slice(bytes)?;
        let mut image = MetadataImage {
            offset: snapshot.offset,
            broker_configs: snapshot.broker_configs,
            cluster_configs: snapshot.cluster_configs,
            group_configs: snapshot.group_configs,
            next_producer_id: snapshot.next_producer_id,
            ..Default::default()
        };
        for broker in snapshot.brokers {
            let id = broker.broker_id;
            if image.brokers.insert(id, broker).is_some() {
                return Err(SnapshotDecodeError::Inconsistent(format!(
                    "broker {id} appears twice"
                )));
            }
        }
        for topic in snapshot.topics {
            if image
                .topic_ids
                .insert(topic.name.clone(), topic.topic_id)
                .is_some()
            {
                return Err(SnapshotDecodeError::Inconsistent(format!(
                    "topic name '{}' appears twice",
                    topic.name
                )));
            }
            let id = topic.topic_id;
            if image.topics.insert(id, topic).is_some() {
                return Err(SnapshotDecodeError::Inconsistent(format!(
                    "topic id {id} appears twice"
                )));
            }
        }
        Ok(image)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn register(image: &mut MetadataImage, id: BrokerId, rack: Option<&str>) {
        let epoch = image.broker(id).map_or(1, |b| b.broker_epoch + 1);
        let record = MetadataRecord::BrokerRegistered(BrokerRegistration {
            broker_id: id,
            incarnation_id: Uuid::from_u128(1000 + epoch as u128 * 100 + id as u128),
            broker_epoch: epoch,
            listener: format!("127.0.0.1:{}", 9000 + id),
            rack: rack.map(String::from),
        });
        image.apply(&record).unwrap();
        image
            .apply(&MetadataRecord::BrokerUnfenced(BrokerEpochRef {
                broker_id: id,
                broker_epoch: epoch,
            }))
            .unwrap();
    }

    pub(crate) fn image_with_brokers(ids: &[BrokerId]) -> MetadataImage {
        let mut image = MetadataImage::new();
        for &id in ids {
            register(&mut image, id, None);
        }
        image
    }

    fn topic(image: &mut MetadataImage, name: &str, n: u128) -> Uuid {
        let topic_id = Uuid::from_u128(n);
        image
            .apply(&MetadataRecord::TopicCreated(TopicCreated {
                name: name.into(),
                topic_id,
                configs: BTreeMap::new(),
            }))
            .unwrap();
        topic_id
    }

    fn partition(topic_id: Uuid, p: i32, replicas: &[i32], leader: i32) -> MetadataRecord {
        MetadataRecord::PartitionCreated(PartitionCreated {
            topic_id,
            partition: p,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
        })
    }

    #[test]
    fn a_registered_broker_starts_fenced_and_is_live_once_unfenced() {
        let mut image = MetadataImage::new();
        let registration = BrokerRegistration {
            broker_id: 4,
            incarnation_id: Uuid::from_u128(1),
            broker_epoch: 10,
            listener: "h:1".into(),
            rack: None,
        };
        image
            .apply(&MetadataRecord::BrokerRegistered(registration.clone()))
            .unwrap();
        assert!(image.broker(4).unwrap().fenced);
        assert!(!image.is_live(4));
        // Unfencing for another epoch is stale.
        assert_eq!(
            image.apply(&MetadataRecord::BrokerUnfenced(BrokerEpochRef {
                broker_id: 4,
                broker_epoch: 9
            })),
            Err(Ignored::StaleBrokerEpoch {
                broker_id: 4,
                current: 10,
                record: 9
            })
        );
        image
            .apply(&MetadataRecord::BrokerUnfenced(BrokerEpochRef {
                broker_id: 4,
                broker_epoch: 10,
            }))
            .unwrap();
        assert!(image.is_live(4));
        // The same registration again is a no-op, an older one is stale.
        image
            .apply(&MetadataRecord::BrokerRegistered(registration.clone()))
            .unwrap();
        assert!(image.is_live(4), "a retried registration changes nothing");
        let older = BrokerRegistration {
            incarnation_id: Uuid::from_u128(2),
            broker_epoch: 10,
            ..registration
        };
        assert!(matches!(
            image.apply(&MetadataRecord::BrokerRegistered(older)),
            Err(Ignored::StaleBrokerEpoch { .. })
        ));
    }

    #[test]
    fn records_about_unknown_brokers_topics_and_partitions_are_ignored() {
        let mut image = image_with_brokers(&[1]);
        let before = image.clone();
        let ghost = Uuid::from_u128(99);
        let cases = [
            MetadataRecord::BrokerFenced(BrokerEpochRef {
                broker_id: 7,
                broker_epoch: 1,
            }),
            MetadataRecord::TopicDeleted { topic_id: ghost },
            partition(ghost, 0, &[1], 1),
            MetadataRecord::PartitionChanged(PartitionChanged {
                topic_id: ghost,
                partition: 0,
                partition_epoch: 0,
                leader: Some(1),
                ..Default::default()
            }),
            MetadataRecord::ConfigChanged(ConfigChanged {
                resource: ConfigResource::Topic(ghost),
                name: "retention.ms".into(),
                value: Some("1".into()),
            }),
            MetadataRecord::ConfigChanged(ConfigChanged {
                resource: ConfigResource::Broker(7),
                name: "x".into(),
                value: Some("1".into()),
            }),
            MetadataRecord::ProducerIdsAllocated(ProducerIdsAllocated {
                broker_id: 7,
                broker_epoch: 1,
                next_producer_id: 1000,
            }),
        ];
        for record in &cases {
            assert!(image.apply(record).is_err(), "{record:?} applied");
        }
        // A partition on a broker nobody registered.
        let t = topic(&mut image, "t", 1);
        let before_partition = image.clone();
        assert_eq!(
            image.apply(&partition(t, 0, &[1, 7], 1)),
            Err(Ignored::UnknownBroker { broker_id: 7 })
        );
        assert_eq!(image, before_partition);
        assert_ne!(image, before, "only the topic creation applied");
    }

    #[test]
    fn malformed_assignments_are_ignored_without_panicking() {
        let mut image = image_with_brokers(&[1, 2]);
        let t = topic(&mut image, "t", 1);
        let bad = [
            partition(t, 0, &[], NO_LEADER),
            partition(t, 0, &[1, 1], 1),
            partition(t, -1, &[1], 1),
            MetadataRecord::PartitionCreated(PartitionCreated {
                topic_id: t,
                partition: 0,
                replicas: vec![1, 2],
                isr: vec![1],
                leader: 2,
                leader_epoch: 0,
                partition_epoch: 0,
            }),
            MetadataRecord::PartitionCreated(PartitionCreated {
                topic_id: t,
                partition: 0,
                replicas: vec![1],
                isr: vec![2],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            }),
        ];
        for record in &bad {
            assert!(
                matches!(image.apply(record), Err(Ignored::Invalid { .. })),
                "{record:?}"
            );
        }
        assert!(image.topic(&t).unwrap().partitions.is_empty());
    }

    #[test]
    fn a_partition_change_bumps_epochs_and_a_stale_one_is_fenced() {
        let mut image = image_with_brokers(&[1, 2, 3]);
        let t = topic(&mut image, "t", 1);
        image.apply(&partition(t, 0, &[1, 2, 3], 1)).unwrap();

        // ISR shrink: partition epoch bumps, leader epoch does not.
        let shrink = MetadataRecord::PartitionChanged(PartitionChanged {
            topic_id: t,
            partition: 0,
            partition_epoch: 0,
            isr: Some(vec![1, 2]),
            ..Default::default()
        });
        image.apply(&shrink).unwrap();
        let p = image.partition(&t, 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 0, 1));
        assert_eq!(p.isr, vec![1, 2]);

        // The same change again was decided on epoch 0: fenced.
        assert_eq!(
            image.apply(&shrink),
            Err(Ignored::StalePartitionEpoch {
                topic_id: t,
                partition: 0,
                current: 1,
                record: 0
            })
        );

        // Leader change: both epochs bump.
        image
            .apply(&MetadataRecord::PartitionChanged(PartitionChanged {
                topic_id: t,
                partition: 0,
                partition_epoch: 1,
                leader: Some(2),
                isr: Some(vec![2]),
                ..Default::default()
            }))
            .unwrap();
        let p = image.partition(&t, 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 1, 2));

        // A leader outside the resulting ISR is invalid and changes nothing.
        let before = image.clone();
        assert!(image
            .apply(&MetadataRecord::PartitionChanged(PartitionChanged {
                topic_id: t,
                partition: 0,
                partition_epoch: 2,
                leader: Some(3),
                ..Default::default()
            }))
            .is_err());
        assert_eq!(image, before);
    }

    #[test]
    fn topics_are_found_by_name_and_id_until_deleted() {
        let mut image = image_with_brokers(&[1]);
        let t = topic(&mut image, "orders", 5);
        image.apply(&partition(t, 0, &[1], 1)).unwrap();
        assert_eq!(image.topic_by_name("orders").unwrap().topic_id, t);
        assert_eq!(
            image.apply(&MetadataRecord::TopicCreated(TopicCreated {
                name: "orders".into(),
                topic_id: Uuid::from_u128(6),
                configs: BTreeMap::new(),
            })),
            Err(Ignored::TopicNameExists {
                name: "orders".into()
            })
        );
        image
            .apply(&MetadataRecord::TopicDeleted { topic_id: t })
            .unwrap();
        assert!(image.topic_by_name("orders").is_none());
        assert!(image.partition(&t, 0).is_none());
        // The name is free again.
        topic(&mut image, "orders", 6);
    }

    #[test]
    fn group_configs_are_set_removed_and_kept_in_snapshots() {
        let mut image = image_with_brokers(&[1]);
        let set = |name: &str, value: Option<&str>| {
            MetadataRecord::ConfigChanged(ConfigChanged {
                resource: ConfigResource::Group("billing".into()),
                name: name.into(),
                value: value.map(str::to_string),
            })
        };
        image
            .apply(&set("consumer.session.timeout.ms", Some("50000")))
            .unwrap();
        assert_eq!(
            image.group_configs()["billing"]["consumer.session.timeout.ms"],
            "50000"
        );
        let copy = MetadataImage::from_snapshot_bytes(&image.to_snapshot_bytes()).unwrap();
        assert_eq!(copy, image, "a snapshot keeps group configs");
        image
            .apply(&set("consumer.session.timeout.ms", None))
            .unwrap();
        assert!(
            image.group_configs().is_empty(),
            "an emptied group is forgotten"
        );
        assert!(matches!(
            image.apply(&MetadataRecord::ConfigChanged(ConfigChanged {
                resource: ConfigResource::Group(String::new()),
                name: "x".into(),
                value: Some("1".into()),
            })),
            Err(Ignored::Invalid { .. })
        ));
    }

    #[test]
    fn configs_are_set_and_removed_with_topic_over_cluster_precedence() {
        let mut image = image_with_brokers(&[1]);
        let t = topic(&mut image, "t", 1);
        let set = |resource, value: Option<&str>| {
            MetadataRecord::ConfigChanged(ConfigChanged {
                resource,
                name: "unclean.leader.election.enable".into(),
                value: value.map(String::from),
            })
        };
        image
            .apply(&set(ConfigResource::Cluster, Some("true")))
            .unwrap();
        let topic_image = image.topic(&t).unwrap().clone();
        assert_eq!(
            image
                .topic_config(&topic_image, "unclean.leader.election.enable")
                .as_deref(),
            Some("true")
        );
        image
            .apply(&set(ConfigResource::Topic(t), Some("false")))
            .unwrap();
        let topic_image = image.topic(&t).unwrap().clone();
        assert_eq!(
            image
                .topic_config(&topic_image, "unclean.leader.election.enable")
                .as_deref(),
            Some("false")
        );
        image
            .apply(&set(ConfigResource::Broker(1), Some("x")))
            .unwrap();
        image.apply(&set(ConfigResource::Broker(1), None)).unwrap();
        assert!(image.broker_configs(1).is_none());
    }

    #[test]
    fn producer_id_blocks_only_move_forward() {
        let mut image = image_with_brokers(&[1]);
        let alloc = |next| {
            MetadataRecord::ProducerIdsAllocated(ProducerIdsAllocated {
                broker_id: 1,
                broker_epoch: 1,
                next_producer_id: next,
            })
        };
        image.apply(&alloc(1000)).unwrap();
        assert_eq!(
            image.apply(&alloc(1000)),
            Err(Ignored::StaleProducerIds {
                current: 1000,
                record: 1000
            })
        );
        image.apply(&alloc(2000)).unwrap();
        assert_eq!(image.next_producer_id(), 2000);
    }

    #[test]
    fn a_snapshot_decodes_to_the_same_image() {
        let mut image = image_with_brokers(&[1, 2]);
        let t = topic(&mut image, "t", 1);
        image.apply(&partition(t, 0, &[1, 2], 1)).unwrap();
        image.apply(&partition(t, 1, &[2, 1], 2)).unwrap();
        image.set_offset(42);
        let bytes = image.to_snapshot_bytes();
        let back = MetadataImage::from_snapshot_bytes(&bytes).unwrap();
        assert_eq!(back, image);
        assert_eq!(back.offset(), 42);
        assert_eq!(back.topic_by_name("t").unwrap().partitions.len(), 2);
        assert_eq!(back.to_snapshot_bytes(), bytes, "deterministic bytes");
    }

    #[test]
    fn a_damaged_or_inconsistent_snapshot_is_an_error() {
        let image = image_with_brokers(&[1]);
        let bytes = image.to_snapshot_bytes();
        assert!(MetadataImage::from_snapshot_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut doubled: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let broker = doubled["brokers"][0].clone();
        doubled["brokers"].as_array_mut().unwrap().push(broker);
        let err =
            MetadataImage::from_snapshot_bytes(&serde_json::to_vec(&doubled).unwrap()).unwrap_err();
        assert!(matches!(err, SnapshotDecodeError::Inconsistent(_)), "{err}");
    }

    #[test]
    fn reassignment_sets_must_be_inside_the_replicas_and_disjoint() {
        let mut image = image_with_brokers(&[1, 2, 3]);
        let t = topic(&mut image, "t", 1);
        image.apply(&partition(t, 0, &[1, 2], 1)).unwrap();
        let change = |replicas: &[i32], adding: &[i32], removing: &[i32]| {
            MetadataRecord::PartitionChanged(PartitionChanged {
                topic_id: t,
                partition: 0,
                partition_epoch: 0,
                replicas: Some(replicas.to_vec()),
                adding_replicas: Some(adding.to_vec()),
                removing_replicas: Some(removing.to_vec()),
                ..Default::default()
            })
        };
        let before = image.clone();
        for bad in [
            change(&[1, 2, 3], &[4], &[]),
            change(&[1, 2, 3], &[3, 3], &[]),
            change(&[1, 2, 3], &[3], &[3]),
            change(&[1, 2], &[], &[1, 2]),
        ] {
            assert!(
                matches!(image.apply(&bad), Err(Ignored::Invalid { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(image, before);
        image.apply(&change(&[3, 1, 2], &[3], &[1])).unwrap();
        let p = image.partition(&t, 0).unwrap();
        assert!(p.is_reassigning());
        assert_eq!(p.target_replicas(), vec![3, 2]);
        assert_eq!(p.original_replicas(), vec![1, 2]);
        let copy = MetadataImage::from_snapshot_bytes(&image.to_snapshot_bytes()).unwrap();
        assert_eq!(copy, image, "a snapshot keeps the reassignment");
    }

    #[test]
    fn a_snapshot_written_before_reassignments_existed_decodes_without_one() {
        let mut image = image_with_brokers(&[1]);
        let t = topic(&mut image, "t", 1);
        image.apply(&partition(t, 0, &[1], 1)).unwrap();
        let mut json: serde_json::Value =
            serde_json::from_slice(&image.to_snapshot_bytes()).unwrap();
        let p = json["topics"][0]["partitions"]["0"]
            .as_object_mut()
            .unwrap();
        assert!(p.remove("adding_replicas").is_some());
        assert!(p.remove("removing_replicas").is_some());
        let old = serde_json::to_vec(&json).unwrap();
        let decoded = MetadataImage::from_snapshot_bytes(&old).unwrap();
        assert_eq!(decoded, image);
        assert!(!decoded.partition(&t, 0).unwrap().is_reassigning());
    }
}
