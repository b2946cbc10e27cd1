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
//! (AlterPartition) validated by epochs, and producer-id blocks.

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

/// A new leader and ISR for a partition, or `None` if none can be chosen.
///
/// Clean: the first replica (preferred order) that is in `isr` and live.
/// Unclean, only if allowed: the first live replica, which becomes the
/// whole ISR.
fn elect(
    p: &PartitionState,
    isr: &[BrokerId],
    is_live: &dyn Fn(BrokerId) -> bool,
    unclean: bool,
) -> Option<(BrokerId, Vec<BrokerId>)> {
    if let Some(&leader) = p.replicas.iter().find(|&&b| isr.contains(&b) && is_live(b)) {
        return Some((leader, isr.to_vec()));
    }
    if unclean {
        if let Some(&leader) = p.replicas.iter().find(|&&b| is_live(b)) {
            return Some((leader, vec![leader]));
        }
    }
    None
}

fn change(
    topic: &TopicImage,
    partition: i32,
    p: &PartitionState,
    leader: BrokerId,
    isr: Vec<BrokerId>,
) -> Option<MetadataRecord> {
    if leader == p.leader && isr == p.isr {
        return None;
    }
    Some(MetadataRecord::PartitionChanged(PartitionChanged {
        topic_id: topic.topic_id,
        partition,
        partition_epoch: p.partition_epoch,
        leader: (leader != p.leader).then_some(leader),
        isr: (isr != p.isr).then_some(isr),
        replicas: None,
    }))
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
        let unclean = unclean_allowed(image, topic);
        for (&index, p) in &topic.partitions {
            if p.leader != broker_id && !p.isr.contains(&broker_id) {
                continue;
            }
            let mut isr: Vec<BrokerId> =
                p.isr.iter().copied().filter(|&b| b != broker_id).collect();
            if isr.is_empty() {
                isr = p.isr.clone();
            }
            let (leader, isr) = if p.leader == broker_id || p.leader == NO_LEADER {
                elect(p, &isr, &is_live, unclean).unwrap_or((NO_LEADER, isr))
            } else {
                (p.leader, isr)
            };
            records.extend(change(topic, index, p, leader, isr));
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
        let unclean = unclean_allowed(image, topic);
        for (&index, p) in &topic.partitions {
            if p.leader != NO_LEADER || !p.replicas.contains(&broker_id) {
                continue;
            }
            if let Some((leader, isr)) = elect(p, &p.isr, &is_live, unclean) {
                records.extend(change(topic, index, p, leader, isr));
            }
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
/// `None` when the ISR is already what it asks.
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
    Ok(Some(MetadataRecord::PartitionChanged(PartitionChanged {
        topic_id: request.topic_id,
        partition: request.partition,
        partition_epoch: p.partition_epoch,
        leader: None,
        isr: Some(request.new_isr.clone()),
        replicas: None,
    })))
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
}
