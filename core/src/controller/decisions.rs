//! The controller's decisions: pure functions from the current
//! [`MetadataImage`] and a request to the records to propose.
//!
//! Nothing here does I/O, reads a clock or draws random numbers (ids such as
//! a new topic's id are passed in), so every rule is unit-tested without
//! Raft. A decision is taken on one image; if the image moved before the
//! records commit, the epochs inside them make [`MetadataImage::apply`]
//! ignore what no longer fits (a second topic of the same name, a partition
//! change decided on an older partition epoch), and the proposer sees it in
//! the [`ProposalOutcome`](super::records::ProposalOutcome).
//!
//! Covered: replica placement for new topics and partitions, broker
//! registration, fencing with leader election from the ISR (unclean only
//! where `unclean.leader.election.enable` is true), unfencing, ISR changes
//! (AlterPartition) validated by epochs, leader elections (ElectLeaders and
//! automatic preferred-leader balancing), partition reassignments
//! (KIP-455), and producer-id blocks. Every partition change goes through
//! one builder (`PartitionChange`: complete a reassignment the ISR allows,
//! elect, write what differs), as KRaft's `PartitionChangeBuilder`.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::image::{MetadataImage, PartitionState, TopicImage};
use super::records::*;

/// Producer ids handed to a broker at a time (Kafka's block size).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// Most partitions one topic may have (as the broker's CreateTopics limit).
pub const MAX_PARTITIONS: i32 = 100_000;

/// The topic config that allows electing an out-of-sync replica.
pub const UNCLEAN_LEADER_ELECTION: &str = "unclean.leader.election.enable";

/// The cluster config giving a new topic's replication factor when the
/// request leaves it to the broker.
pub const DEFAULT_REPLICATION_FACTOR: &str = "default.replication.factor";

/// A request the controller refuses. Each maps to one Kafka error code
/// (named in the variant's doc), assigned where responses are built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    /// INVALID_REPLICATION_FACTOR
    #[error("replication factor {requested} is not possible with {live} live broker(s)")]
    InvalidReplicationFactor { requested: i32, live: usize },
    /// INVALID_PARTITIONS
    #[error("{0}")]
    InvalidPartitions(String),
    /// INVALID_TOPIC_EXCEPTION
    #[error("{0}")]
    InvalidTopic(String),
    /// TOPIC_ALREADY_EXISTS
    #[error("topic '{0}' already exists")]
    TopicAlreadyExists(String),
    /// UNKNOWN_TOPIC_OR_PARTITION / UNKNOWN_TOPIC_ID
    #[error("unknown topic or partition {0}")]
    UnknownTopicOrPartition(String),
    /// BROKER_ID_NOT_REGISTERED
    #[error("broker {0} is not registered")]
    BrokerNotRegistered(BrokerId),
    /// STALE_BROKER_EPOCH
    #[error("broker {broker_id} has epoch {current}, the request carries {request}")]
    StaleBrokerEpoch {
        broker_id: BrokerId,
        current: i64,
        request: i64,
    },
    /// DUPLICATE_BROKER_REGISTRATION
    #[error("broker {0} is registered by another process whose session is alive")]
    DuplicateBrokerRegistration(BrokerId),
    /// NOT_LEADER_OR_FOLLOWER
    #[error("broker {broker_id} is not the leader of {partition} (leader: {leader})")]
    NotLeader {
        broker_id: BrokerId,
        partition: String,
        leader: BrokerId,
    },
    /// FENCED_LEADER_EPOCH
    #[error("leader epoch {request} of {partition} is older than the current {current}")]
    FencedLeaderEpoch {
        partition: String,
        current: i32,
        request: i32,
    },
    /// UNKNOWN_LEADER_EPOCH
    #[error("leader epoch {request} of {partition} is newer than the current {current}")]
    UnknownLeaderEpoch {
        partition: String,
        current: i32,
        request: i32,
    },
    /// INVALID_UPDATE_VERSION: the change was decided on another partition epoch.
    #[error("partition epoch {request} of {partition} is not the current {current}")]
    StalePartitionEpoch {
        partition: String,
        current: i32,
        request: i32,
    },
    /// INVALID_REQUEST
    #[error("invalid ISR for {partition}: {detail}")]
    InvalidIsr { partition: String, detail: String },
    /// INELIGIBLE_REPLICA
    #[error(
        "replica {broker_id} of {partition} cannot join the ISR: it is fenced or unregistered"
    )]
    IneligibleReplica {
        partition: String,
        broker_id: BrokerId,
    },
    /// UNKNOWN_SERVER_ERROR: the id space is used up.
    #[error("producer ids are exhausted")]
    ProducerIdsExhausted,
    /// ELECTION_NOT_NEEDED: the partition already has the leader asked for.
    #[error("{0}")]
    ElectionNotNeeded(String),
    /// PREFERRED_LEADER_NOT_AVAILABLE
    #[error("the preferred leader {preferred} of {partition} is not in sync or not live")]
    PreferredLeaderNotAvailable {
        partition: String,
        preferred: BrokerId,
    },
    /// ELIGIBLE_LEADERS_NOT_AVAILABLE
    #[error("no replica of {0} is live")]
    EligibleLeadersNotAvailable(String),
    /// INVALID_REPLICA_ASSIGNMENT
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// NO_REASSIGNMENT_IN_PROGRESS
    #[error("no reassignment of {0} is in progress")]
    NoReassignmentInProgress(String),
}

fn partition_name(topic: &TopicImage, partition: i32) -> String {
    format!("{}-{}", topic.name, partition)
}

// ----- placement -----

/// Replicas and preferred leaders already on each live broker.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    leaders: usize,
    replicas: usize,
}

/// Chooses replicas for `partition_count` new partitions of
/// `replication_factor` replicas each, over the live brokers.
///
/// The first replica of each is its preferred leader. Choices count what
/// the image already places, so leaders and replicas stay even across
/// topics: the leader is the live broker leading the fewest partitions
/// (then holding the fewest replicas, then the next in id order after the
/// previous leader); each follower is the broker holding the fewest
/// replicas, preferring racks the partition does not use yet, then the
/// brokers after the leader in id order.
pub fn place_replicas(
    image: &MetadataImage,
    partition_count: i32,
    replication_factor: i32,
) -> Result<Vec<Vec<BrokerId>>, DecisionError> {
    if partition_count <= 0 || partition_count > MAX_PARTITIONS {
        return Err(DecisionError::InvalidPartitions(format!(
            "number of partitions must be between 1 and {MAX_PARTITIONS}, not {partition_count}"
        )));
    }
    let live: Vec<(BrokerId, Option<&str>)> = image
        .live_brokers()
        .map(|b| (b.broker_id, b.rack.as_deref()))
        .collect();
    if replication_factor <= 0 || replication_factor as usize > live.len() {
        return Err(DecisionError::InvalidReplicationFactor {
            requested: replication_factor,
            live: live.len(),
        });
    }
    let mut load: BTreeMap<BrokerId, Load> =
        live.iter().map(|&(b, _)| (b, Load::default())).collect();
    for topic in image.topics() {
        for p in topic.partitions.values() {
            for (i, b) in p.replicas.iter().enumerate() {
                if let Some(l) = load.get_mut(b) {
                    l.replicas += 1;
                    if i == 0 {
                        l.leaders += 1;
                    }
                }
            }
        }
    }
    let n = live.len();
    // Position in id order after `from`: 1 for the next broker, n for `from`.
    let after = |from: usize, i: usize| (i + n - from - 1) % n;
    let mut assignments = Vec::with_capacity(partition_count as usize);
    let mut previous_leader = n - 1;
    for _ in 0..partition_count {
        let leader = (0..n)
            .min_by_key(|&i| {
                let l = load[&live[i].0];
                (l.leaders, l.replicas, after(previous_leader, i))
            })
            .expect("at least one live broker");
        previous_leader = leader;
        let mut chosen = vec![leader];
        let mut racks: BTreeSet<Option<&str>> = BTreeSet::from([live[leader].1]);
        while chosen.len() < replication_factor as usize {
            let next = (0..n)
                .filter(|i| !chosen.contains(i))
                .min_by_key(|&i| {
                    let rack_used = live[i].1.is_some() && racks.contains(&live[i].1);
                    (rack_used, load[&live[i].0].replicas, after(leader, i))
                })
                .expect("replication factor is at most the live brokers");
            racks.insert(live[next].1);
            chosen.push(next);
        }
        let replicas: Vec<BrokerId> = chosen.iter().map(|&i| live[i].0).collect();
        for (i, b) in replicas.iter().enumerate() {
            let l = load.get_mut(b).expect("a live broker");
            l.replicas += 1;
            if i == 0 {
                l.leaders += 1;
            }
        }
        assignments.push(replicas);
    }
    Ok(assignments)
}

fn partition_created(topic_id: Uuid, partition: i32, replicas: Vec<BrokerId>) -> MetadataRecord {
    MetadataRecord::PartitionCreated(PartitionCreated {
        topic_id,
        partition,
        leader: replicas[0],
        isr: replicas.clone(),
        replicas,
        leader_epoch: 0,
        partition_epoch: 0,
    })
}

// ----- topics -----

/// A CreateTopics entry, as the controller needs it.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// Chosen by the caller (random), so the decision stays pure.
    pub topic_id: Uuid,
    pub partitions: i32,
    /// `None`: the cluster's `default.replication.factor`, else
    /// min(3, live brokers).
    pub replication_factor: Option<i32>,
    pub configs: BTreeMap<String, String>,
}

/// The records that create a topic: the topic, then each partition.
///
/// The topic name must already satisfy Kafka's naming rules (the request
/// handler checks them, as it does today).
pub fn create_topic(
    image: &MetadataImage,
    request: &NewTopic,
) -> Result<Vec<MetadataRecord>, DecisionError> {
    if request.name.is_empty() {
        return Err(DecisionError::InvalidTopic("topic name is empty".into()));
    }
    if image.topic_by_name(&request.name).is_some() {
        return Err(DecisionError::TopicAlreadyExists(request.name.clone()));
    }
    if image.topic(&request.topic_id).is_some() || request.topic_id.is_nil() {
        return Err(DecisionError::InvalidTopic(format!(
            "topic id {} is taken",
            request.topic_id
        )));
    }
    let live = image.live_brokers().count();
    let replication_factor =
        match request.replication_factor {
            Some(rf) => rf,
            None => match image.cluster_config(DEFAULT_REPLICATION_FACTOR) {
                Some(v) => v.trim().parse::<i32>().map_err(|_| {
                    DecisionError::InvalidReplicationFactor {
                        requested: -1,
                        live,
                    }
                })?,
                None => live.min(3) as i32,
            },
        };
    let assignments = place_replicas(image, request.partitions, replication_factor)?;
    let mut records = Vec::with_capacity(assignments.len() + 1);
    records.push(MetadataRecord::TopicCreated(TopicCreated {
        name: request.name.clone(),
        topic_id: request.topic_id,
        configs: request.configs.clone(),
    }));
    for (p, replicas) in assignments.into_iter().enumerate() {
        records.push(partition_created(request.topic_id, p as i32, replicas));
    }
    Ok(records)
}

/// The records that grow a topic to `total` partitions (CreatePartitions),
/// with the topic's current replication factor.
pub fn add_partitions(
    image: &MetadataImage,
    topic_name: &str,
    total: i32,
) -> Result<Vec<MetadataRecord>, DecisionError> {
    let topic = image
        .topic_by_name(topic_name)
        .ok_or_else(|| DecisionError::UnknownTopicOrPartition(topic_name.into()))?;
    let current = topic.partitions.len() as i32;
    if total <= current {
        return Err(DecisionError::InvalidPartitions(format!(
            "topic '{topic_name}' has {current} partitions; the new count {total} must be larger"
        )));
    }
    let replication_factor = topic
        .partitions
        .values()
        .next()
        .map_or(1, |p| p.replicas.len() as i32);
    let assignments = place_replicas(image, total - current, replication_factor)?;
    Ok(assignments
        .into_iter()
        .enumerate()
        .map(|(i, replicas)| partition_created(topic.topic_id, current + i as i32, replicas))
        .collect())
}

/// The record that deletes a topic.
pub fn delete_topic(
    image: &MetadataImage,
    topic_name: &str,
) -> Result<MetadataRecord, DecisionError> {
    let topic = image
        .topic_by_name(topic_name)
        .ok_or_else(|| DecisionError::UnknownTopicOrPartition(topic_name.into()))?;
    Ok(MetadataRecord::TopicDeleted {
        topic_id: topic.topic_id,
    })
}

// ----- brokers: registration, fencing, election -----

/// A BrokerRegistration request.
#[derive(Debug, Clone)]
pub struct BrokerRegistrationRequest {
    pub broker_id: BrokerId,
    pub incarnation_id: Uuid,
    pub listener: String,
    pub rack: Option<String>,
}

/// The records that register a broker and its new epoch.
///
/// The same incarnation registering again gets its current epoch back (a
/// retry). A new incarnation is refused while the previous one's session is
/// alive (`previous_session_alive`, known to the heartbeat tracker, not the
/// log); otherwise it gets the next epoch, and if the previous incarnation
/// was unfenced it is fenced first, with its partitions' leaders moved, as
/// a process that restarted may have lost what it had not flushed.
pub fn register_broker(
    image: &MetadataImage,
    request: &BrokerRegistrationRequest,
    previous_session_alive: bool,
) -> Result<(i64, Vec<MetadataRecord>), DecisionError> {
    if request.broker_id < 0 {
        return Err(DecisionError::BrokerNotRegistered(request.broker_id));
    }
    let mut records = Vec::new();
    let epoch = match image.broker(request.broker_id) {
        Some(b) if b.incarnation_id == request.incarnation_id => {
            return Ok((b.broker_epoch, vec![]))
        }
        Some(_) if previous_session_alive => {
            return Err(DecisionError::DuplicateBrokerRegistration(
                request.broker_id,
            ))
        }
        Some(b) => {
            if !b.fenced {
                records = fence_broker(image, request.broker_id)?;
            }
            b.broker_epoch + 1
        }
        None => 1,
    };
    records.push(MetadataRecord::BrokerRegistered(BrokerRegistration {
        broker_id: request.broker_id,
        incarnation_id: request.incarnation_id,
        broker_epoch: epoch,
        listener: request.listener.clone(),
        rack: request.rack.clone(),
    }));
    Ok((epoch, records))
}

fn unclean_allowed(image: &MetadataImage, topic: &TopicImage) -> bool {
    image
        .topic_config(topic, UNCLEAN_LEADER_ELECTION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// How a change picks the partition's leader (KRaft's
/// `PartitionChangeBuilder.Election`). A leader is *valid* when it is in
/// the (new) ISR and live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Election {
    /// Keep a valid leader; otherwise the first valid replica in replica
    /// order; otherwise none.
    Online,
    /// The first replica (the preferred leader) if it is valid; otherwise
    /// as `Online`.
    Preferred,
    /// As `Online`; when no replica is valid, the first live replica,
    /// which becomes the whole ISR (it may lack committed records).
    Unclean,
}

/// The state a change moves one partition to. [`PartitionChange::build`]
/// completes a reassignment the new ISR allows, elects the leader and
/// writes the record of what differs from the current state: the one way
/// every decision below changes a partition (fencing, unfencing, ISR
/// changes, elections, reassignments), so each follows the same rules.
struct PartitionChange<'a> {
    topic: &'a TopicImage,
    index: i32,
    current: &'a PartitionState,
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    adding: Vec<BrokerId>,
    removing: Vec<BrokerId>,
    election: Election,
}

impl<'a> PartitionChange<'a> {
    /// No change yet: the targets are the current state.
    fn new(topic: &'a TopicImage, index: i32, current: &'a PartitionState) -> Self {
        PartitionChange {
            topic,
            index,
            current,
            replicas: current.replicas.clone(),
            isr: current.isr.clone(),
            adding: current.adding_replicas.clone(),
            removing: current.removing_replicas.clone(),
            election: Election::Online,
        }
    }

    /// The ISR the change aims at (never empty: callers keep the last
    /// member of an ISR that would be).
    fn isr(mut self, isr: Vec<BrokerId>) -> Self {
        self.isr = isr;
        self
    }

    fn election(mut self, election: Election) -> Self {
        self.election = election;
        self
    }

    /// `Unclean` where the topic allows it, otherwise `Online`.
    fn online_or_unclean(self, image: &MetadataImage) -> Self {
        let election = if unclean_allowed(image, self.topic) {
            Election::Unclean
        } else {
            Election::Online
        };
        self.election(election)
    }

    /// KIP-455's completion: once every target replica is in the ISR, the
    /// removed replicas leave the replicas and the ISR.
    fn complete_reassignment(&mut self) {
        if self.adding.is_empty() && self.removing.is_empty() {
            return;
        }
        let kept = |list: &[BrokerId]| -> Vec<BrokerId> {
            list.iter()
                .copied()
                .filter(|b| !self.removing.contains(b))
                .collect()
        };
        let replicas = kept(&self.replicas);
        let isr = kept(&self.isr);
        if replicas.is_empty() || isr.is_empty() || !replicas.iter().all(|b| isr.contains(b)) {
            return;
        }
        self.replicas = replicas;
        self.isr = isr;
        self.adding.clear();
        self.removing.clear();
    }

    /// The leader (and for an unclean election, the ISR) of the new state.
    fn elect(&mut self, is_live: &dyn Fn(BrokerId) -> bool) -> BrokerId {
        let isr = &self.isr;
        let valid = |b: BrokerId| b != NO_LEADER && isr.contains(&b) && is_live(b);
        let current = self.current.leader;
        let first_valid = || self.replicas.iter().copied().find(|&b| valid(b));
        let chosen = match self.election {
            Election::Preferred => self
                .replicas
                .first()
                .copied()
                .filter(|&b| valid(b))
                .or_else(|| valid(current).then_some(current))
                .or_else(first_valid),
            Election::Online | Election::Unclean => {
                (valid(current).then_some(current)).or_else(first_valid)
            }
        };
        if let Some(leader) = chosen {
            return leader;
        }
        if self.election == Election::Unclean {
            if let Some(leader) = self.replicas.iter().copied().find(|&b| is_live(b)) {
                self.isr = vec![leader];
                return leader;
            }
        }
        NO_LEADER
    }

    /// The record that moves the partition to the target state, or `None`
    /// when nothing would change.
    fn build(mut self, is_live: &dyn Fn(BrokerId) -> bool) -> Option<MetadataRecord> {
        self.complete_reassignment();
        let leader = self.elect(is_live);
        let p = self.current;
        let changed = |new: &Vec<BrokerId>, old: &Vec<BrokerId>| (new != old).then(|| new.clone());
        let record = PartitionChanged {
            topic_id: self.topic.topic_id,
            partition: self.index,
            partition_epoch: p.partition_epoch,
            leader: (leader != p.leader).then_some(leader),
            isr: changed(&self.isr, &p.isr),
            replicas: changed(&self.replicas, &p.replicas),
            adding_replicas: changed(&self.adding, &p.adding_replicas),
            removing_replicas: changed(&self.removing, &p.removing_replicas),
        };
        let unchanged = record.leader.is_none()
            && record.isr.is_none()
            && record.replicas.is_none()
            && record.adding_replicas.is_none()
            && record.removing_replicas.is_none();
        (!unchanged).then_some(MetadataRecord::PartitionChanged(record))
    }
}

/// The records that fence a broker whose session expired: `BrokerFenced`,
/// then for every partition it led or was in sync for, a change that
/// removes it from the ISR and, where it led, elects a new leader from the
/// ISR (leader epoch bumped by the apply).
///
/// The ISR never becomes empty: when the fenced broker is its last member
/// it stays, and the partition is left without a leader (it gets one when
/// that broker returns) unless the topic allows unclean election, which
/// elects the first live replica with itself as the ISR. A broker that is
/// already fenced yields no records.
pub fn fence_broker(
    image: &MetadataImage,
    broker_id: BrokerId,
) -> Result<Vec<MetadataRecord>, DecisionError> {
    let broker = image
        .broker(broker_id)
        .ok_or(DecisionError::BrokerNotRegistered(broker_id))?;
    if broker.fenced {
        return Ok(vec![]);
    }
    let mut records = vec![MetadataRecord::BrokerFenced(BrokerEpochRef {
        broker_id,
        broker_epoch: broker.broker_epoch,
    })];
    let is_live = |b: BrokerId| b != broker_id && image.is_live(b);
    for topic in image.topics() {
        for (&index, p) in &topic.partitions {
            if p.leader != broker_id && !p.isr.contains(&broker_id) {
                continue;
            }
            let mut isr: Vec<BrokerId> =
                p.isr.iter().copied().filter(|&b| b != broker_id).collect();
            if isr.is_empty() {
                isr = p.isr.clone();
            }
            records.extend(
                PartitionChange::new(topic, index, p)
                    .isr(isr)
                    .online_or_unclean(image)
                    .build(&is_live),
            );
        }
    }
    Ok(records)
}

/// The records that unfence a broker that caught up: `BrokerUnfenced`,
/// then a leader for every partition that has none and can now get one
/// (clean from its ISR; unclean only where the topic allows it).
pub fn unfence_broker(
    image: &MetadataImage,
    broker_id: BrokerId,
    broker_epoch: i64,
) -> Result<Vec<MetadataRecord>, DecisionError> {
    let broker = image
        .broker(broker_id)
        .ok_or(DecisionError::BrokerNotRegistered(broker_id))?;
    if broker.broker_epoch != broker_epoch {
        return Err(DecisionError::StaleBrokerEpoch {
            broker_id,
            current: broker.broker_epoch,
            request: broker_epoch,
        });
    }
    if !broker.fenced {
        return Ok(vec![]);
    }
    let mut records = vec![MetadataRecord::BrokerUnfenced(BrokerEpochRef {
        broker_id,
        broker_epoch,
    })];
    let is_live = |b: BrokerId| b == broker_id || image.is_live(b);
    for topic in image.topics() {
        for (&index, p) in &topic.partitions {
            if p.leader != NO_LEADER || !p.replicas.contains(&broker_id) {
                continue;
            }
            records.extend(
                PartitionChange::new(topic, index, p)
                    .online_or_unclean(image)
                    .build(&is_live),
            );
        }
    }
    Ok(records)
}

// ----- ISR changes -----

/// An AlterPartition entry from a partition leader.
#[derive(Debug, Clone)]
pub struct AlterPartitionRequest {
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    /// The partition epoch the leader's view is at.
    pub partition_epoch: i32,
    pub new_isr: Vec<BrokerId>,
}

/// Validates a leader's ISR change and returns the record to propose, or
/// `None` when the ISR is already what it asks. An ISR that holds every
/// target replica of an ongoing reassignment completes it.
///
/// Fenced when it comes from an older broker incarnation (stale broker
/// epoch), an older leader (leader epoch) or an older view of the partition
/// (partition epoch: another change landed since the leader read it).
pub fn alter_partition(
    image: &MetadataImage,
    request: &AlterPartitionRequest,
) -> Result<Option<MetadataRecord>, DecisionError> {
    let broker = image
        .broker(request.broker_id)
        .ok_or(DecisionError::BrokerNotRegistered(request.broker_id))?;
    if broker.broker_epoch != request.broker_epoch {
        return Err(DecisionError::StaleBrokerEpoch {
            broker_id: request.broker_id,
            current: broker.broker_epoch,
            request: request.broker_epoch,
        });
    }
    let topic = image.topic(&request.topic_id).ok_or_else(|| {
        DecisionError::UnknownTopicOrPartition(format!(
            "{}-{}",
            request.topic_id, request.partition
        ))
    })?;
    let name = partition_name(topic, request.partition);
    let p = topic
        .partitions
        .get(&request.partition)
        .ok_or_else(|| DecisionError::UnknownTopicOrPartition(name.clone()))?;
    if request.leader_epoch < p.leader_epoch {
        return Err(DecisionError::FencedLeaderEpoch {
            partition: name,
            current: p.leader_epoch,
            request: request.leader_epoch,
        });
    }
    if request.leader_epoch > p.leader_epoch {
        return Err(DecisionError::UnknownLeaderEpoch {
            partition: name,
            current: p.leader_epoch,
            request: request.leader_epoch,
        });
    }
    if p.leader != request.broker_id {
        return Err(DecisionError::NotLeader {
            broker_id: request.broker_id,
            partition: name,
            leader: p.leader,
        });
    }
    if request.partition_epoch != p.partition_epoch {
        return Err(DecisionError::StalePartitionEpoch {
            partition: name,
            current: p.partition_epoch,
            request: request.partition_epoch,
        });
    }
    let invalid = |detail: String| DecisionError::InvalidIsr {
        partition: name.clone(),
        detail,
    };
    if !request.new_isr.contains(&p.leader) {
        return Err(invalid(format!("the leader {} is not in it", p.leader)));
    }
    let mut seen = BTreeSet::new();
    for &b in &request.new_isr {
        if !p.replicas.contains(&b) {
            return Err(invalid(format!("{b} is not a replica")));
        }
        if !seen.insert(b) {
            return Err(invalid(format!("{b} is listed twice")));
        }
        if b != p.leader && !p.isr.contains(&b) && !image.is_live(b) {
            return Err(DecisionError::IneligibleReplica {
                partition: name.clone(),
                broker_id: b,
            });
        }
    }
    if request.new_isr == p.isr {
        return Ok(None);
    }
    // An ISR that now holds every target replica of a reassignment
    // completes it in the same change (the leader moves if it is removed).
    Ok(PartitionChange::new(topic, request.partition, p)
        .isr(request.new_isr.clone())
        .build(&|b| image.is_live(b)))
}

// ----- leader elections -----

/// What an ElectLeaders request asks for (KIP-460's election types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// The first replica, if it is live and in the ISR (type 0).
    Preferred,
    /// For a partition without a leader: a live ISR member, else any live
    /// replica, which may lack committed records (type 1). Explicit, so it
    /// ignores `unclean.leader.election.enable`, as in Kafka.
    Unclean,
}

fn topic_partition<'a>(
    image: &'a MetadataImage,
    topic_name: &str,
    partition: i32,
) -> Result<(&'a TopicImage, &'a PartitionState), DecisionError> {
    let topic = image
        .topic_by_name(topic_name)
        .ok_or_else(|| DecisionError::UnknownTopicOrPartition(topic_name.to_string()))?;
    let p = topic
        .partitions
        .get(&partition)
        .ok_or_else(|| DecisionError::UnknownTopicOrPartition(partition_name(topic, partition)))?;
    Ok((topic, p))
}

/// The record of one ElectLeaders entry (Kafka's `electLeader`).
///
/// Preferred: ELECTION_NOT_NEEDED when the first replica leads already,
/// PREFERRED_LEADER_NOT_AVAILABLE when it is not live or not in the ISR
/// (and no other leader is needed). Unclean: ELECTION_NOT_NEEDED when the
/// partition has a leader, ELIGIBLE_LEADERS_NOT_AVAILABLE when no replica
/// is live. The new leader's epoch is bumped by the apply.
pub fn elect_leader(
    image: &MetadataImage,
    topic_name: &str,
    partition: i32,
    election: ElectionType,
) -> Result<MetadataRecord, DecisionError> {
    let (topic, p) = topic_partition(image, topic_name, partition)?;
    let name = partition_name(topic, partition);
    let is_live = |b: BrokerId| image.is_live(b);
    match election {
        ElectionType::Preferred => {
            let preferred = p.replicas.first().copied().unwrap_or(NO_LEADER);
            if p.leader == preferred {
                return Err(DecisionError::ElectionNotNeeded(format!(
                    "{name} is led by its preferred replica {preferred}"
                )));
            }
            PartitionChange::new(topic, partition, p)
                .election(Election::Preferred)
                .build(&is_live)
                .ok_or(DecisionError::PreferredLeaderNotAvailable {
                    partition: name,
                    preferred,
                })
        }
        ElectionType::Unclean => {
            if p.leader != NO_LEADER {
                return Err(DecisionError::ElectionNotNeeded(format!(
                    "{name} has a leader ({})",
                    p.leader
                )));
            }
            PartitionChange::new(topic, partition, p)
                .election(Election::Unclean)
                .build(&is_live)
                .ok_or(DecisionError::EligibleLeadersNotAvailable(name))
        }
    }
}

/// A broker's preferred partitions: how many, and the ones led elsewhere.
type Preferred<'a> = (usize, Vec<(&'a TopicImage, i32, &'a PartitionState)>);

/// Per live broker (of `brokers`, if given), the partitions whose
/// preferred leader it is, reassigning ones aside.
fn preferred_partitions<'a>(
    image: &'a MetadataImage,
    brokers: Option<&BTreeSet<BrokerId>>,
) -> BTreeMap<BrokerId, Preferred<'a>> {
    let mut by_broker: BTreeMap<BrokerId, Preferred> = BTreeMap::new();
    for topic in image.topics() {
        for (&index, p) in &topic.partitions {
            let Some(&preferred) = p.replicas.first() else {
                continue;
            };
            if p.is_reassigning()
                || !image.is_live(preferred)
                || brokers.is_some_and(|only| !only.contains(&preferred))
            {
                continue;
            }
            let entry = by_broker.entry(preferred).or_default();
            entry.0 += 1;
            if p.leader != preferred {
                entry.1.push((topic, index, p));
            }
        }
    }
    by_broker
}

/// Kafka's test: a broker is imbalanced when the share of its preferred
/// partitions led elsewhere is above `imbalance_percentage`.
fn over(imbalance_percentage: u32, (total, elsewhere): &Preferred) -> bool {
    elsewhere.len() as u64 * 100 > u64::from(imbalance_percentage) * *total as u64
}

/// The live brokers whose leader imbalance is above
/// `imbalance_percentage` (see [`rebalance_leaders`]).
pub fn imbalanced_brokers(image: &MetadataImage, imbalance_percentage: u32) -> BTreeSet<BrokerId> {
    preferred_partitions(image, None)
        .into_iter()
        .filter(|(_, preferred)| over(imbalance_percentage, preferred))
        .map(|(b, _)| b)
        .collect()
}

/// Automatic preferred-leader balancing (Kafka's
/// `auto.leader.rebalance.enable`): for each live broker, among the
/// partitions whose preferred leader it is (reassigning ones aside), the
/// share it does not lead; above `imbalance_percentage`
/// (`leader.imbalance.per.broker.percentage`), every such partition where
/// it is in the ISR gets it back as leader. `brokers` narrows the check to
/// some brokers (those that just returned). At most `max_records`.
pub fn rebalance_leaders(
    image: &MetadataImage,
    imbalance_percentage: u32,
    brokers: Option<&BTreeSet<BrokerId>>,
    max_records: usize,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for (broker, preferred) in preferred_partitions(image, brokers) {
        if !over(imbalance_percentage, &preferred) {
            continue;
        }
        for (topic, index, p) in preferred.1 {
            if records.len() >= max_records {
                return records;
            }
            if !p.isr.contains(&broker) {
                continue;
            }
            records.extend(
                PartitionChange::new(topic, index, p)
                    .election(Election::Preferred)
                    .build(&|b| image.is_live(b)),
            );
        }
    }
    records
}

// ----- reassignments -----

/// The record of one AlterPartitionReassignments entry (KIP-455, as
/// KRaft's `changePartitionReassignment` / `cancelPartitionReassignment`).
///
/// `target: Some(replicas)` starts (or replaces) a reassignment: the
/// replicas become the target followed by the current replicas it drops
/// (`removing_replicas`); the new ones (`adding_replicas`) follow the
/// leader and join the ISR; once every target replica is in the ISR the
/// change that brings it there completes the reassignment (see
/// [`alter_partition`]), which also happens at once when the ISR already
/// holds them (a reorder, a shrink). A target that replaces an ongoing
/// reassignment starts from the replicas of the moment, as in Kafka: what
/// the old target was adding and the new one does not keep is removed
/// like any replica. `None` cancels: the replicas and ISR lose the added
/// replicas (NO_REASSIGNMENT_IN_PROGRESS when none runs;
/// INVALID_REPLICA_ASSIGNMENT when only added replicas are in sync and
/// the topic forbids unclean election). A target that is empty, repeats a
/// broker or names an unregistered one is INVALID_REPLICA_ASSIGNMENT; one
/// of another size when `allow_replication_factor_change` is false
/// (KIP-860) INVALID_REPLICATION_FACTOR. `Ok(None)`: nothing to change.
pub fn alter_reassignment(
    image: &MetadataImage,
    topic_name: &str,
    partition: i32,
    target: Option<&[BrokerId]>,
    allow_replication_factor_change: bool,
) -> Result<Option<MetadataRecord>, DecisionError> {
    let (topic, p) = topic_partition(image, topic_name, partition)?;
    let name = partition_name(topic, partition);
    let is_live = |b: BrokerId| image.is_live(b);
    let Some(target) = target else {
        if !p.is_reassigning() {
            return Err(DecisionError::NoReassignmentInProgress(name));
        }
        let replicas = p.original_replicas();
        let mut isr: Vec<BrokerId> = p
            .isr
            .iter()
            .copied()
            .filter(|b| !p.adding_replicas.contains(b))
            .collect();
        if isr.is_empty() {
            if !unclean_allowed(image, topic) {
                return Err(DecisionError::InvalidReplicaAssignment(format!(
                    "cancelling the reassignment of {name} would need an unclean leader election: only added replicas are in sync"
                )));
            }
            isr = vec![replicas[0]];
        }
        let mut change = PartitionChange::new(topic, partition, p)
            .isr(isr)
            .online_or_unclean(image);
        change.replicas = replicas;
        change.adding.clear();
        change.removing.clear();
        return Ok(change.build(&is_live));
    };
    let invalid = |why: String| DecisionError::InvalidReplicaAssignment(format!("{name}: {why}"));
    if target.is_empty() {
        return Err(invalid("the target replica list is empty".into()));
    }
    let mut seen = BTreeSet::new();
    for &b in target {
        if !seen.insert(b) {
            return Err(invalid(format!("broker {b} is listed more than once")));
        }
        if image.broker(b).is_none() {
            return Err(invalid(format!("broker {b} is not registered")));
        }
    }
    let original = p.original_replicas();
    if !allow_replication_factor_change && target.len() != original.len() {
        return Err(DecisionError::InvalidReplicationFactor {
            requested: target.len() as i32,
            live: image.live_brokers().count(),
        });
    }
    let removing: BTreeSet<BrokerId> = p
        .replicas
        .iter()
        .copied()
        .filter(|b| !target.contains(b))
        .collect();
    let adding: BTreeSet<BrokerId> = target
        .iter()
        .copied()
        .filter(|b| !p.replicas.contains(b))
        .collect();
    let mut change = PartitionChange::new(topic, partition, p);
    change.replicas = target
        .iter()
        .copied()
        .chain(removing.iter().copied())
        .collect();
    change.adding = adding.into_iter().collect();
    change.removing = removing.into_iter().collect();
    Ok(change.build(&is_live))
}

/// One partition's ongoing reassignment (ListPartitionReassignments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<BrokerId>,
    pub adding_replicas: Vec<BrokerId>,
    pub removing_replicas: Vec<BrokerId>,
}

/// The ongoing reassignments: of every topic (`None`), or of the listed
/// partitions of the listed topics (unknown ones are skipped, as Kafka).
pub fn list_reassignments(
    image: &MetadataImage,
    wanted: Option<&[(String, Vec<i32>)]>,
) -> Vec<OngoingReassignment> {
    let ongoing = |topic: &TopicImage, index: i32, p: &PartitionState| {
        p.is_reassigning().then(|| OngoingReassignment {
            topic: topic.name.clone(),
            partition: index,
            replicas: p.replicas.clone(),
            adding_replicas: p.adding_replicas.clone(),
            removing_replicas: p.removing_replicas.clone(),
        })
    };
    match wanted {
        None => {
            let mut all: Vec<OngoingReassignment> = image
                .topics()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .filter_map(move |(&i, p)| ongoing(t, i, p))
                })
                .collect();
            all.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
            all
        }
        Some(wanted) => wanted
            .iter()
            .filter_map(|(name, indexes)| image.topic_by_name(name).map(|t| (t, indexes)))
            .flat_map(|(t, indexes)| {
                indexes
                    .iter()
                    .filter_map(move |i| t.partitions.get(i).and_then(|p| ongoing(t, *i, p)))
            })
            .collect(),
    }
}

// ----- producer ids -----

/// Producer ids `[first, first + size)` for one broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdBlock {
    pub broker_id: BrokerId,
    pub first_producer_id: i64,
    pub size: i64,
}

/// The next block of producer ids for a broker, and the record that hands
/// it out. Only the broker's current incarnation gets one.
pub fn allocate_producer_ids(
    image: &MetadataImage,
    broker_id: BrokerId,
    broker_epoch: i64,
) -> Result<(ProducerIdBlock, MetadataRecord), DecisionError> {
    let broker = image
        .broker(broker_id)
        .ok_or(DecisionError::BrokerNotRegistered(broker_id))?;
    if broker.broker_epoch != broker_epoch {
        return Err(DecisionError::StaleBrokerEpoch {
            broker_id,
            current: broker.broker_epoch,
            request: broker_epoch,
        });
    }
    let first = image.next_producer_id();
    let next = first
        .checked_add(PRODUCER_ID_BLOCK_SIZE)
        .ok_or(DecisionError::ProducerIdsExhausted)?;
    Ok((
        ProducerIdBlock {
            broker_id,
            first_producer_id: first,
            size: PRODUCER_ID_BLOCK_SIZE,
        },
        MetadataRecord::ProducerIdsAllocated(ProducerIdsAllocated {
            broker_id,
            broker_epoch,
            next_producer_id: next,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::image::tests::{image_with_brokers, register};

    fn apply_all(image: &mut MetadataImage, records: &[MetadataRecord]) {
        for r in records {
            image.apply(r).unwrap_or_else(|e| panic!("{r:?}: {e}"));
        }
    }

    /// Takes a decision on the image and applies its records.
    fn step(
        image: &mut MetadataImage,
        decide: impl FnOnce(&MetadataImage) -> Result<Vec<MetadataRecord>, DecisionError>,
    ) {
        let records = decide(image).unwrap();
        apply_all(image, &records);
    }

    fn new_topic(name: &str, id: u128, partitions: i32, rf: Option<i32>) -> NewTopic {
        NewTopic {
            name: name.into(),
            topic_id: Uuid::from_u128(id),
            partitions,
            replication_factor: rf,
            configs: BTreeMap::new(),
        }
    }

    fn create(image: &mut MetadataImage, name: &str, id: u128, partitions: i32, rf: i32) -> Uuid {
        let records = create_topic(image, &new_topic(name, id, partitions, Some(rf))).unwrap();
        apply_all(image, &records);
        Uuid::from_u128(id)
    }

    fn counts(image: &MetadataImage) -> (BTreeMap<BrokerId, usize>, BTreeMap<BrokerId, usize>) {
        let mut leaders = BTreeMap::new();
        let mut replicas = BTreeMap::new();
        for t in image.topics() {
            for p in t.partitions.values() {
                *leaders.entry(p.leader).or_default() += 1;
                for &b in &p.replicas {
                    *replicas.entry(b).or_default() += 1;
                }
            }
        }
        (leaders, replicas)
    }

    #[test]
    fn placement_spreads_leaders_and_replicas_evenly_over_live_brokers() {
        let mut image = image_with_brokers(&[1, 2, 3]);
        create(&mut image, "t", 1, 6, 2);
        let (leaders, replicas) = counts(&image);
        assert_eq!(leaders, BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
        assert_eq!(replicas, BTreeMap::from([(1, 4), (2, 4), (3, 4)]));
        for p in image.topic_by_name("t").unwrap().partitions.values() {
            assert_eq!(p.leader, p.replicas[0]);
            assert_eq!(p.isr, p.replicas);
            assert_ne!(p.replicas[0], p.replicas[1]);
        }
    }

    #[test]
    fn placement_balances_across_topics_and_skips_fenced_brokers() {
        let mut image = image_with_brokers(&[1, 2, 3, 4]);
        create(&mut image, "a", 1, 1, 1);
        // Broker 4 goes away: new topics avoid it.
        step(&mut image, |i| fence_broker(i, 4));
        create(&mut image, "b", 2, 2, 1);
        let b = image.topic_by_name("b").unwrap();
        let b_leaders: BTreeSet<BrokerId> = b.partitions.values().map(|p| p.leader).collect();
        let a_leader = image.topic_by_name("a").unwrap().partitions[&0].leader;
        assert!(
            !b_leaders.contains(&a_leader),
            "a's leader {a_leader} got more"
        );
        assert!(!b_leaders.contains(&4), "a fenced broker got a replica");
        assert_eq!(b_leaders.len(), 2);
    }

    #[test]
    fn placement_prefers_replicas_in_other_racks() {
        let mut image = MetadataImage::new();
        register(&mut image, 1, Some("a"));
        register(&mut image, 2, Some("a"));
        register(&mut image, 3, Some("b"));
        register(&mut image, 4, Some("b"));
        create(&mut image, "t", 1, 8, 2);
        for p in image.topic_by_name("t").unwrap().partitions.values() {
            let racks: BTreeSet<_> = p
                .replicas
                .iter()
                .map(|b| image.broker(*b).unwrap().rack.clone())
                .collect();
            assert_eq!(racks.len(), 2, "{:?} in one rack", p.replicas);
        }
        let (leaders, _) = counts(&image);
        assert!(leaders.values().all(|&n| n == 2), "{leaders:?}");
    }

    #[test]
    fn a_replication_factor_above_the_live_brokers_is_invalid() {
        let mut image = image_with_brokers(&[1, 2, 3]);
        step(&mut image, |i| fence_broker(i, 3));
        assert_eq!(
            create_topic(&image, &new_topic("t", 1, 1, Some(3))),
            Err(DecisionError::InvalidReplicationFactor {
                requested: 3,
                live: 2
            })
        );
        assert!(matches!(
            create_topic(&image, &new_topic("t", 1, 1, Some(0))),
            Err(DecisionError::InvalidReplicationFactor { .. })
        ));
        assert!(matches!(
            create_topic(&image, &new_topic("t", 1, 0, Some(1))),
            Err(DecisionError::InvalidPartitions(_))
        ));
    }

    #[test]
    fn the_default_replication_factor_is_at_most_three_or_the_cluster_setting() {
        let mut image = image_with_brokers(&[1, 2, 3, 4, 5]);
        let records = create_topic(&image, &new_topic("t", 1, 1, None)).unwrap();
        apply_all(&mut image, &records);
        assert_eq!(
            image.topic_by_name("t").unwrap().partitions[&0]
                .replicas
                .len(),
            3
        );

        let two = image_with_brokers(&[1, 2]);
        let records = create_topic(&two, &new_topic("t", 1, 1, None)).unwrap();
        let MetadataRecord::PartitionCreated(p) = &records[1] else {
            panic!()
        };
        assert_eq!(p.replicas.len(), 2);

        image
            .apply(&MetadataRecord::ConfigChanged(ConfigChanged {
                resource: ConfigResource::Cluster,
                name: DEFAULT_REPLICATION_FACTOR.into(),
                value: Some("5".into()),
            }))
            .unwrap();
        let records = create_topic(&image, &new_topic("u", 2, 1, None)).unwrap();
        let MetadataRecord::PartitionCreated(p) = &records[1] else {
            panic!()
        };
        assert_eq!(p.replicas.len(), 5);
    }

    #[test]
    fn a_second_creation_of_a_name_is_refused_or_ignored_when_it_races() {
        let mut image = image_with_brokers(&[1]);
        let first = create_topic(&image, &new_topic("t", 1, 1, Some(1))).unwrap();
        let racing = create_topic(&image, &new_topic("t", 2, 1, Some(1))).unwrap();
        apply_all(&mut image, &first);
        assert_eq!(
            create_topic(&image, &new_topic("t", 3, 1, Some(1))),
            Err(DecisionError::TopicAlreadyExists("t".into()))
        );
        // Decided on the old image: the apply ignores it, partitions too.
        assert!(matches!(
            image.apply(&racing[0]),
            Err(Ignored::TopicNameExists { .. })
        ));
        assert!(matches!(
            image.apply(&racing[1]),
            Err(Ignored::UnknownTopic { .. })
        ));
        assert_eq!(image.topics().count(), 1);
    }

    #[test]
    fn fencing_the_leader_elects_the_next_isr_member_and_bumps_epochs() {
        let mut image = image_with_brokers(&[1, 2, 3]);
        let t = create(&mut image, "t", 1, 3, 3);
        let led_by_1: Vec<i32> = image
            .topic(&t)
            .unwrap()
            .partitions
            .iter()
            .filter(|(_, p)| p.leader == 1)
            .map(|(&i, _)| i)
            .collect();
        assert_eq!(led_by_1.len(), 1);
        let before = image.clone();

        let records = fence_broker(&image, 1).unwrap();
        assert!(matches!(records[0], MetadataRecord::BrokerFenced(_)));
        apply_all(&mut image, &records);
        assert!(!image.is_live(1));
        for (i, p) in &image.topic(&t).unwrap().partitions {
            let old = before.partition(&t, *i).unwrap();
            assert!(!p.isr.contains(&1), "{i}: {:?}", p.isr);
            assert_ne!(p.leader, 1);
            assert_eq!(p.partition_epoch, old.partition_epoch + 1);
            if led_by_1.contains(i) {
                assert_eq!(p.leader_epoch, old.leader_epoch + 1);
                // The first remaining replica in preferred order.
                let expected = *old.replicas.iter().find(|&&b| b != 1).unwrap();
                assert_eq!(p.leader, expected);
            } else {
                assert_eq!(
                    p.leader_epoch, old.leader_epoch,
                    "followers only shrink the ISR"
                );
            }
        }
        // Fencing again changes nothing.
        assert_eq!(fence_broker(&image, 1).unwrap(), vec![]);
    }

    #[test]
    fn a_partition_whose_last_isr_member_is_fenced_has_no_leader_until_it_returns() {
        let mut image = image_with_brokers(&[1, 2]);
        let t = create(&mut image, "t", 1, 1, 2);
        let leader = image.partition(&t, 0).unwrap().leader;
        let follower = 3 - leader;
        // The ISR shrinks to the leader alone, then the leader dies.
        step(&mut image, |i| fence_broker(i, follower));
        step(&mut image, |i| fence_broker(i, leader));
        let p = image.partition(&t, 0).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![leader]));
        assert_eq!(p.leader_epoch, 1);

        // The follower returning does not lead: it is out of sync.
        let epoch = image.broker(follower).unwrap().broker_epoch;
        let records = unfence_broker(&image, follower, epoch).unwrap();
        assert_eq!(records.len(), 1, "only the unfencing: {records:?}");
        apply_all(&mut image, &records);
        assert_eq!(image.partition(&t, 0).unwrap().leader, NO_LEADER);

        // The last ISR member returning leads again.
        let epoch = image.broker(leader).unwrap().broker_epoch;
        step(&mut image, |i| unfence_broker(i, leader, epoch));
        let p = image.partition(&t, 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch), (leader, 2));
    }

    #[test]
    fn unclean_election_needs_the_topic_config() {
        let mut image = image_with_brokers(&[1, 2]);
        let t = create(&mut image, "t", 1, 1, 2);
        let leader = image.partition(&t, 0).unwrap().leader;
        let follower = 3 - leader;
        // The follower falls out of the ISR (but stays live), then the leader dies.
        let p = image.partition(&t, 0).unwrap().clone();
        let shrink = alter_partition(
            &image,
            &AlterPartitionRequest {
                broker_id: leader,
                broker_epoch: image.broker(leader).unwrap().broker_epoch,
                topic_id: t,
                partition: 0,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                new_isr: vec![leader],
            },
        )
        .unwrap()
        .unwrap();
        apply_all(&mut image, &[shrink]);
        let mut unclean = image.clone();

        step(&mut image, |i| fence_broker(i, leader));
        assert_eq!(
            image.partition(&t, 0).unwrap().leader,
            NO_LEADER,
            "clean only"
        );

        unclean
            .apply(&MetadataRecord::ConfigChanged(ConfigChanged {
                resource: ConfigResource::Topic(t),
                name: UNCLEAN_LEADER_ELECTION.into(),
                value: Some("true".into()),
            }))
            .unwrap();
        step(&mut unclean, |i| fence_broker(i, leader));
        let p = unclean.partition(&t, 0).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (follower, vec![follower]));
    }

    #[test]
    fn isr_changes_are_fenced_by_broker_leader_and_partition_epochs() {
        let mut image = image_with_brokers(&[1, 2, 3]);
        let t = create(&mut image, "t", 1, 1, 3);
        let p = image.partition(&t, 0).unwrap().clone();
        let leader = p.leader;
        let request = AlterPartitionRequest {
            broker_id: leader,
            broker_epoch: image.broker(leader).unwrap().broker_epoch,
            topic_id: t,
            partition: 0,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: p.replicas[..2].to_vec(),
        };
        let record = alter_partition(&image, &request).unwrap().unwrap();
        apply_all(&mut image, &[record]);
        assert_eq!(image.partition(&t, 0).unwrap().partition_epoch, 1);

        // The same request again was decided on partition epoch 0: fenced.
        assert!(matches!(
            alter_partition(&image, &request),
            Err(DecisionError::StalePartitionEpoch {
                current: 1,
                request: 0,
                ..
            })
        ));
        let current = AlterPartitionRequest {
            partition_epoch: 1,
            ..request.clone()
        };
        assert_eq!(
            alter_partition(&image, &current),
            Ok(None),
            "already the ISR"
        );
        assert!(matches!(
            alter_partition(
                &image,
                &AlterPartitionRequest {
                    leader_epoch: -1,
                    ..current.clone()
                }
            ),
            Err(DecisionError::FencedLeaderEpoch { .. })
        ));
        assert!(matches!(
            alter_partition(
                &image,
                &AlterPartitionRequest {
                    broker_epoch: 0,
                    ..current.clone()
                }
            ),
            Err(DecisionError::StaleBrokerEpoch { .. })
        ));
        let other = p.replicas[1];
        assert!(matches!(
            alter_partition(
                &image,
                &AlterPartitionRequest {
                    broker_id: other,
                    broker_epoch: image.broker(other).unwrap().broker_epoch,
                    ..current.clone()
                }
            ),
            Err(DecisionError::NotLeader { .. })
        ));
        assert!(matches!(
            alter_partition(
                &image,
                &AlterPartitionRequest {
                    new_isr: vec![other],
                    ..current.clone()
                }
            ),
            Err(DecisionError::InvalidIsr { .. })
        ));
        // A fenced replica cannot rejoin the ISR.
        let third = p.replicas[2];
        step(&mut image, |i| fence_broker(i, third));
        let p = image.partition(&t, 0).unwrap().clone();
        assert!(matches!(
            alter_partition(&image, &AlterPartitionRequest {
                partition_epoch: p.partition_epoch,
                new_isr: p.replicas.clone(),
                ..current
            }),
            Err(DecisionError::IneligibleReplica { broker_id, .. }) if broker_id == third
        ));
    }

    #[test]
    fn producer_id_blocks_are_disjoint_and_need_the_current_broker_epoch() {
        let mut image = image_with_brokers(&[1, 2]);
        let (a, record) = allocate_producer_ids(&image, 1, 1).unwrap();
        apply_all(&mut image, &[record]);
        let (b, record) = allocate_producer_ids(&image, 2, 1).unwrap();
        apply_all(&mut image, &[record]);
        assert_eq!((a.first_producer_id, a.size), (0, PRODUCER_ID_BLOCK_SIZE));
        assert_eq!(b.first_producer_id, PRODUCER_ID_BLOCK_SIZE);
        assert_eq!(
            allocate_producer_ids(&image, 1, 7),
            Err(DecisionError::StaleBrokerEpoch {
                broker_id: 1,
                current: 1,
                request: 7
            })
        );
        assert_eq!(
            allocate_producer_ids(&image, 9, 1).unwrap_err(),
            DecisionError::BrokerNotRegistered(9)
        );
    }

    #[test]
    fn a_restarted_broker_gets_a_new_epoch_and_its_old_incarnation_is_fenced() {
        let mut image = image_with_brokers(&[1, 2]);
        let t = create(&mut image, "t", 1, 2, 2);
        let request = BrokerRegistrationRequest {
            broker_id: 1,
            incarnation_id: Uuid::from_u128(77),
            listener: "127.0.0.1:1".into(),
            rack: None,
        };
        assert_eq!(
            register_broker(&image, &request, true),
            Err(DecisionError::DuplicateBrokerRegistration(1))
        );
        let (epoch, records) = register_broker(&image, &request, false).unwrap();
        assert_eq!(epoch, 2);
        apply_all(&mut image, &records);
        let b = image.broker(1).unwrap();
        assert!(b.fenced);
        assert_eq!(b.broker_epoch, 2);
        for p in image.topic(&t).unwrap().partitions.values() {
            assert!(!p.isr.contains(&1) && p.leader == 2, "{p:?}");
        }
        // Retrying the same registration returns the same epoch, no records.
        assert_eq!(register_broker(&image, &request, true), Ok((2, vec![])));
    }

    #[test]
    fn adding_partitions_keeps_the_replication_factor() {
        let mut image = image_with_brokers(&[1, 2, 3]);
        let t = create(&mut image, "t", 1, 1, 2);
        let records = add_partitions(&image, "t", 3).unwrap();
        apply_all(&mut image, &records);
        let topic = image.topic(&t).unwrap();
        assert_eq!(topic.partitions.len(), 3);
        assert!(topic.partitions.values().all(|p| p.replicas.len() == 2));
        assert!(matches!(
            add_partitions(&image, "t", 3),
            Err(DecisionError::InvalidPartitions(_))
        ));
        assert!(matches!(
            delete_topic(&image, "nope"),
            Err(DecisionError::UnknownTopicOrPartition(_))
        ));
    }

    /// A topic whose partitions have exactly these replicas (all in sync,
    /// the first leading).
    fn topic_with(
        image: &mut MetadataImage,
        name: &str,
        id: u128,
        partitions: &[&[BrokerId]],
    ) -> Uuid {
        let topic_id = Uuid::from_u128(id);
        let mut records = vec![MetadataRecord::TopicCreated(TopicCreated {
            name: name.into(),
            topic_id,
            configs: BTreeMap::new(),
        })];
        for (i, replicas) in partitions.iter().enumerate() {
            records.push(partition_created(topic_id, i as i32, replicas.to_vec()));
        }
        apply_all(image, &records);
        topic_id
    }

    /// The current leader of `t`-`p` asks for `new_isr`; the record is
    /// applied. Returns whether there was one.
    fn change_isr(image: &mut MetadataImage, t: Uuid, p: i32, new_isr: &[BrokerId]) -> bool {
        let state = image.partition(&t, p).unwrap().clone();
        let request = AlterPartitionRequest {
            broker_id: state.leader,
            broker_epoch: image.broker(state.leader).unwrap().broker_epoch,
            topic_id: t,
            partition: p,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            new_isr: new_isr.to_vec(),
        };
        match alter_partition(image, &request).unwrap() {
            Some(record) => {
                apply_all(image, &[record]);
                true
            }
            None => false,
        }
    }

    fn reassign(
        image: &mut MetadataImage,
        topic: &str,
        p: i32,
        target: Option<&[BrokerId]>,
    ) -> Result<(), DecisionError> {
        let record = alter_reassignment(image, topic, p, target, true)?;
        apply_all(image, &record.into_iter().collect::<Vec<_>>());
        Ok(())
    }

    fn state(image: &MetadataImage, t: Uuid, p: i32) -> PartitionState {
        image.partition(&t, p).unwrap().clone()
    }

    #[test]
    fn a_preferred_election_needs_the_first_replica_live_and_in_sync_and_bumps_the_leader_epoch() {
        let mut image = image_with_brokers(&[1, 2, 3]);
        let t = topic_with(&mut image, "t", 1, &[&[1, 2, 3]]);
        assert_eq!(
            elect_leader(&image, "t", 0, ElectionType::Preferred),
            Err(DecisionError::ElectionNotNeeded(
                "t-0 is led by its preferred replica 1".into()
            ))
        );
        // Broker 1 dies: 2 leads. Back, it is live but out of sync.
        step(&mut image, |i| fence_broker(i, 1));
        step(&mut image, |i| unfence_broker(i, 1, 1));
        let before = state(&image, t, 0);
        assert_eq!((before.leader, before.isr.clone()), (2, vec![2, 3]));
        assert_eq!(
            elect_leader(&image, "t", 0, ElectionType::Preferred),
            Err(DecisionError::PreferredLeaderNotAvailable {
                partition: "t-0".into(),
                preferred: 1
            })
        );
        // It caught up and joined the ISR: the election moves leadership.
        assert!(change_isr(&mut image, t, 0, &[2, 3, 1]));
        let record = elect_leader(&image, "t", 0, ElectionType::Preferred).unwrap();
        apply_all(&mut image, &[record]);
        let after = state(&image, t, 0);
        assert_eq!(after.leader, 1);
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        assert_eq!(after.isr, vec![2, 3, 1], "the ISR stays");
        // A fenced preferred replica cannot lead either.
        step(&mut image, |i| fence_broker(i, 1));
        assert!(change_isr(&mut image, t, 0, &[2, 3]) || state(&image, t, 0).isr == vec![2, 3]);
        assert!(matches!(
            elect_leader(&image, "t", 0, ElectionType::Preferred),
            Err(DecisionError::PreferredLeaderNotAvailable { preferred: 1, .. })
        ));
        assert!(matches!(
            elect_leader(&image, "nope", 0, ElectionType::Preferred),
            Err(DecisionError::UnknownTopicOrPartition(_))
        ));
        assert!(matches!(
            elect_leader(&image, "t", 7, ElectionType::Preferred),
            Err(DecisionError::UnknownTopicOrPartition(_))
        ));
    }

    #[test]
    fn an_unclean_election_picks_a_live_replica_outside_the_isr_only_for_a_partition_without_leader(
    ) {
        let mut image = image_with_brokers(&[1, 2, 3]);
        let t = topic_with(&mut image, "t", 1, &[&[1, 2]]);
        assert!(matches!(
            elect_leader(&image, "t", 0, ElectionType::Unclean),
            Err(DecisionError::ElectionNotNeeded(_))
        ));
        // 2 leaves the ISR, then 1 (the last member) dies: no leader, and
        // the topic does not allow unclean elections by itself.
        assert!(change_isr(&mut image, t, 0, &[1]));
        step(&mut image, |i| fence_broker(i, 1));
        assert_eq!(state(&image, t, 0).leader, NO_LEADER);
        let clean_only = image.clone();
        // Asked for explicitly, 2 leads with an ISR of itself.
        let record = elect_leader(&image, "t", 0, ElectionType::Unclean).unwrap();
        apply_all(&mut image, &[record]);
        let p = state(&image, t, 0);
        assert_eq!((p.leader, p.isr), (2, vec![2]));
        // With every replica down there is nobody to elect.
        let mut image = clean_only;
        step(&mut image, |i| fence_broker(i, 2));
        assert_eq!(
            elect_leader(&image, "t", 0, ElectionType::Unclean),
            Err(DecisionError::EligibleLeadersNotAvailable("t-0".into()))
        );
    }

    #[test]
    fn automatic_balancing_moves_leaders_back_only_above_the_imbalance_percentage() {
        let mut image = image_with_brokers(&[1, 2, 3]);
        // Broker 1 is the preferred leader of ten partitions.
        let ten: Vec<&[BrokerId]> = vec![&[1, 2, 3]; 10];
        let t = topic_with(&mut image, "t", 1, &ten);
        let move_to_2 = |image: &mut MetadataImage, p: i32| {
            let s = state(image, t, p);
            apply_all(
                image,
                &[MetadataRecord::PartitionChanged(PartitionChanged {
                    topic_id: t,
                    partition: p,
                    partition_epoch: s.partition_epoch,
                    leader: Some(2),
                    ..Default::default()
                })],
            );
        };
        move_to_2(&mut image, 0);
        // 1 of 10 led elsewhere is 10%: not above 10%.
        assert!(rebalance_leaders(&image, 10, None, 1000).is_empty());
        let records = rebalance_leaders(&image, 0, None, 1000);
        assert_eq!(records.len(), 1, "{records:?}");
        move_to_2(&mut image, 1);
        move_to_2(&mut image, 2);
        // 3 of 10 is above: each of them moves back, where 1 is in sync.
        assert!(change_isr_from(&mut image, t, 2, &[2, 3]));
        let records = rebalance_leaders(&image, 10, None, 1000);
        apply_all(&mut image, &records);
        let leaders: Vec<BrokerId> = (0..3).map(|p| state(&image, t, p).leader).collect();
        assert_eq!(leaders, vec![1, 1, 2], "2 stays where 1 is out of sync");
        assert!(rebalance_leaders(&image, 0, Some(&BTreeSet::from([2, 3])), 1000).is_empty());
        // A cap on the records of one pass.
        move_to_2(&mut image, 0);
        move_to_2(&mut image, 1);
        assert_eq!(rebalance_leaders(&image, 10, None, 1).len(), 1);
        assert_eq!(imbalanced_brokers(&image, 10), BTreeSet::from([1]));
        assert!(
            imbalanced_brokers(&image, 30).is_empty(),
            "3 of 10 is not above 30%"
        );
        // A preferred broker that is not live is left alone.
        step(&mut image, |i| fence_broker(i, 1));
        assert!(rebalance_leaders(&image, 0, None, 1000).is_empty());
    }

    /// `change_isr` for a partition led by `leader`'s current incarnation.
    fn change_isr_from(image: &mut MetadataImage, t: Uuid, p: i32, new_isr: &[BrokerId]) -> bool {
        change_isr(image, t, p, new_isr)
    }

    #[test]
    fn moving_a_single_replica_adds_the_target_first_and_completes_when_it_is_in_sync() {
        let mut image = image_with_brokers(&[1, 2, 3]);
        let t = topic_with(&mut image, "t", 1, &[&[1]]);
        reassign(&mut image, "t", 0, Some(&[2])).unwrap();
        let moving = state(&image, t, 0);
        assert_eq!(moving.replicas, vec![2, 1], "target, then what it removes");
        assert_eq!(
            (
                moving.adding_replicas.clone(),
                moving.removing_replicas.clone()
            ),
            (vec![2], vec![1])
        );
        assert_eq!(
            (moving.leader, moving.isr.clone()),
            (1, vec![1]),
            "the old replica leads"
        );
        assert_eq!(
            list_reassignments(&image, None),
            vec![OngoingReassignment {
                topic: "t".into(),
                partition: 0,
                replicas: vec![2, 1],
                adding_replicas: vec![2],
                removing_replicas: vec![1],
            }]
        );
        // The new replica caught up: the ISR change that adds it completes
        // the move, and leadership goes to the target.
        assert!(change_isr(&mut image, t, 0, &[1, 2]));
        let done = state(&image, t, 0);
        assert_eq!(
            (done.replicas.clone(), done.isr.clone(), done.leader),
            (vec![2], vec![2], 2)
        );
        assert!(!done.is_reassigning());
        assert_eq!(done.leader_epoch, moving.leader_epoch + 1);
        assert!(list_reassignments(&image, None).is_empty());
    }

    #[test]
    fn expanding_the_replicas_keeps_the_leader_and_completes_once_the_new_one_is_in_sync() {
        let mut image = image_with_brokers(&[1, 2, 3]);
        let t = topic_with(&mut image, "t", 1, &[&[1, 2]]);
        reassign(&mut image, "t", 0, Some(&[1, 2, 3])).unwrap();
        let growing = state(&image, t, 0);
        assert_eq!(
            (
                growing.replicas.clone(),
                growing.adding_replicas.clone(),
                growing.removing_replicas.clone()
            ),
            (vec![1, 2, 3], vec![3], vec![])
        );
        assert!(change_isr(&mut image, t, 0, &[1, 2, 3]));
        let done = state(&image, t, 0);
        assert_eq!((done.replicas.clone(), done.leader), (vec![1, 2, 3], 1));
        assert_eq!(
            done.leader_epoch, growing.leader_epoch,
            "the leader did not change"
        );
        assert!(!done.is_reassigning());
    }

    #[test]
    fn a_reassignment_the_isr_already_covers_completes_at_once() {
        let mut image = image_with_brokers(&[1, 2, 3]);
        let t = topic_with(&mut image, "t", 1, &[&[1, 2, 3], &[1, 2, 3]]);
        // A reorder: the leader stays (it is valid), the preferred one changes.
        reassign(&mut image, "t", 0, Some(&[3, 1, 2])).unwrap();
        let p = state(&image, t, 0);
        assert_eq!(
            (p.replicas.clone(), p.leader, p.is_reassigning()),
            (vec![3, 1, 2], 1, false)
        );
        // A shrink that removes the leader moves leadership.
        reassign(&mut image, "t", 1, Some(&[2, 3])).unwrap();
        let p = state(&image, t, 1);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![2, 3], vec![2, 3], 2)
        );
        // The same target again changes nothing.
        assert_eq!(
            alter_reassignment(&image, "t", 1, Some(&[2, 3]), true),
            Ok(None)
        );
    }

    #[test]
    fn cancelling_restores_the_original_replicas_and_a_new_target_replaces_the_ongoing_one() {
        let mut image = image_with_brokers(&[1, 2, 3]);
        let t = topic_with(&mut image, "t", 1, &[&[1]]);
        let original = state(&image, t, 0);
        assert!(matches!(
            reassign(&mut image, "t", 0, None),
            Err(DecisionError::NoReassignmentInProgress(_))
        ));
        reassign(&mut image, "t", 0, Some(&[2])).unwrap();
        // Replaced before it completed: 2 is removed again.
        reassign(&mut image, "t", 0, Some(&[3])).unwrap();
        let p = state(&image, t, 0);
        assert_eq!(
            (
                p.replicas.clone(),
                p.adding_replicas.clone(),
                p.removing_replicas.clone()
            ),
            (vec![3, 1, 2], vec![3], vec![1, 2])
        );
        // Cancelling drops what the latest target added; as in Kafka, the
        // replica the replaced target was adding counts as current.
        reassign(&mut image, "t", 0, None).unwrap();
        let p = state(&image, t, 0);
        assert_eq!(
            (
                p.replicas.clone(),
                p.isr.clone(),
                p.leader,
                p.is_reassigning()
            ),
            (vec![1, 2], original.isr.clone(), original.leader, false)
        );
        assert!(matches!(
            reassign(&mut image, "t", 0, None),
            Err(DecisionError::NoReassignmentInProgress(_))
        ));
        // One reassignment cancelled restores the replicas exactly.
        reassign(&mut image, "t", 0, Some(&[1, 3])).unwrap();
        reassign(&mut image, "t", 0, None).unwrap();
        assert_eq!(state(&image, t, 0).replicas, vec![1, 2]);
    }

    #[test]
    fn cancelling_when_only_added_replicas_are_in_sync_needs_unclean_election() {
        let mut image = image_with_brokers(&[1, 2, 3, 4]);
        let t = topic_with(&mut image, "t", 1, &[&[1, 2]]);
        reassign(&mut image, "t", 0, Some(&[3, 4])).unwrap();
        assert!(change_isr(&mut image, t, 0, &[1, 2, 3]));
        step(&mut image, |i| fence_broker(i, 1));
        step(&mut image, |i| fence_broker(i, 2));
        let p = state(&image, t, 0);
        assert_eq!(
            (p.leader, p.isr.clone(), p.is_reassigning()),
            (3, vec![3], true)
        );
        assert!(matches!(
            alter_reassignment(&image, "t", 0, None, true),
            Err(DecisionError::InvalidReplicaAssignment(_))
        ));
        image
            .apply(&MetadataRecord::ConfigChanged(ConfigChanged {
                resource: ConfigResource::Topic(t),
                name: UNCLEAN_LEADER_ELECTION.into(),
                value: Some("true".into()),
            }))
            .unwrap();
        reassign(&mut image, "t", 0, None).unwrap();
        let p = state(&image, t, 0);
        assert_eq!(p.replicas, vec![1, 2]);
        assert!(!p.is_reassigning());
        assert_eq!(p.isr, vec![1], "the first original replica, unclean");
        assert_eq!(p.leader, NO_LEADER, "it is down: it leads when it returns");
    }

    #[test]
    fn invalid_targets_are_refused_with_the_reason() {
        let mut image = image_with_brokers(&[1, 2, 3]);
        topic_with(&mut image, "t", 1, &[&[1, 2]]);
        for target in [&[][..], &[1, 1], &[1, 9]] {
            assert!(
                matches!(
                    alter_reassignment(&image, "t", 0, Some(target), true),
                    Err(DecisionError::InvalidReplicaAssignment(_))
                ),
                "{target:?}"
            );
        }
        let err = alter_reassignment(&image, "t", 0, Some(&[1, 9]), true).unwrap_err();
        assert!(
            err.to_string().contains("broker 9 is not registered"),
            "{err}"
        );
        assert!(matches!(
            alter_reassignment(&image, "t", 3, Some(&[1]), true),
            Err(DecisionError::UnknownTopicOrPartition(_))
        ));
        assert!(matches!(
            alter_reassignment(&image, "t", 0, Some(&[1, 2, 3]), false),
            Err(DecisionError::InvalidReplicationFactor { requested: 3, .. })
        ));
        assert!(alter_reassignment(&image, "t", 0, Some(&[2, 3]), false).is_ok());
    }

    #[test]
    fn ongoing_reassignments_are_listed_for_the_partitions_asked() {
        let mut image = image_with_brokers(&[1, 2, 3]);
        topic_with(&mut image, "a", 1, &[&[1], &[2]]);
        topic_with(&mut image, "b", 2, &[&[1]]);
        reassign(&mut image, "a", 1, Some(&[3])).unwrap();
        reassign(&mut image, "b", 0, Some(&[1, 2])).unwrap();
        let all: Vec<(String, i32)> = list_reassignments(&image, None)
            .into_iter()
            .map(|r| (r.topic, r.partition))
            .collect();
        assert_eq!(all, vec![("a".into(), 1), ("b".into(), 0)]);
        let asked = [
            ("a".to_string(), vec![0, 1, 5]),
            ("nope".to_string(), vec![0]),
        ];
        let some = list_reassignments(&image, Some(&asked));
        assert_eq!(some.len(), 1);
        assert_eq!(
            (
                some[0].adding_replicas.clone(),
                some[0].removing_replicas.clone()
            ),
            (vec![3], vec![2])
        );
    }

    #[test]
    fn a_reassigned_leader_keeps_leading_until_the_move_completes() {
        let mut image = image_with_brokers(&[1, 2, 3, 4]);
        let t = topic_with(&mut image, "t", 1, &[&[1, 2, 3]]);
        reassign(&mut image, "t", 0, Some(&[2, 3, 4])).unwrap();
        assert_eq!(state(&image, t, 0).leader, 1);
        // A follower leaving the ISR does not complete anything.
        assert!(change_isr(&mut image, t, 0, &[1, 2]));
        assert!(state(&image, t, 0).is_reassigning());
        assert!(change_isr(&mut image, t, 0, &[1, 2, 3, 4]));
        let p = state(&image, t, 0);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![2, 3, 4], vec![2, 3, 4], 2)
        );
    }
}
