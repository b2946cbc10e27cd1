//! The records of the metadata log: what the controller quorum agrees on.
//!
//! Every change to cluster metadata is one of these records, proposed to the
//! quorum in a [`MetadataProposal`] (a batch that lands in one Raft entry)
//! and applied, in log order, by [`MetadataImage::apply`] on every node. They
//! follow KRaft's records (`RegisterBrokerRecord`, `FenceBrokerRecord`,
//! `TopicRecord`, `PartitionRecord`, `PartitionChangeRecord`, `ConfigRecord`,
//! `ProducerIdsRecord`, `RemoveTopicRecord`), named here by the event they
//! record.
//!
//! What this module is not: the rules. A record says what happened; whether
//! it still applies (an unknown topic, a stale epoch) is decided by
//! [`MetadataImage::apply`], deterministically, and which records a request
//! turns into is decided by [`super::decisions`].
//!
//! Encoding: serde, as JSON in the Raft log and on the wire. A record is an
//! object tagged by `"type"`, e.g.
//! `{"type":"topic_deleted","topic_id":"…"}`. Fields added later must carry
//! `#[serde(default)]`, so older logs keep decoding.
//!
//! [`MetadataImage::apply`]: super::image::MetadataImage::apply

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A broker's id (`node.id`); in combined mode also its controller's Raft
/// node id.
pub type BrokerId = i32;

/// The leader of a partition that has none (Kafka's `-1`).
pub const NO_LEADER: BrokerId = -1;

/// Most records one proposal may carry. A topic's creation is one record
/// per partition plus one, and Kafka caps partitions per request far below
/// this.
pub const MAX_RECORDS_PER_PROPOSAL: usize = 100_000;

/// One change to cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetadataRecord {
    /// A broker (re)registered: a new incarnation starts fenced.
    BrokerRegistered(BrokerRegistration),
    /// A broker's session ended: it leads nothing and is in no ISR
    /// (the partition changes that follow say so).
    BrokerFenced(BrokerEpochRef),
    /// A registered broker caught up and may lead and follow again.
    BrokerUnfenced(BrokerEpochRef),
    TopicCreated(TopicCreated),
    /// A topic and all its partitions are gone.
    TopicDeleted {
        topic_id: Uuid,
    },
    PartitionCreated(PartitionCreated),
    PartitionChanged(PartitionChanged),
    ConfigChanged(ConfigChanged),
    /// A block of producer ids was handed to a broker.
    ProducerIdsAllocated(ProducerIdsAllocated),
}

/// `BrokerRegistered`: who a broker is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub broker_id: BrokerId,
    /// Random per process start: a different one means the broker restarted.
    pub incarnation_id: Uuid,
    /// Grows with every new incarnation of this broker; requests carrying an
    /// older epoch come from a previous incarnation and are fenced.
    pub broker_epoch: i64,
    /// The Kafka listener clients and other brokers connect to, `host:port`.
    pub listener: String,
    #[serde(default)]
    pub rack: Option<String>,
}

/// `BrokerFenced` / `BrokerUnfenced`: the registration they apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerEpochRef {
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicCreated {
    pub name: String,
    pub topic_id: Uuid,
    /// Topic-level config overrides (`retention.ms`, …); unset keys take the
    /// cluster's defaults.
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

/// `PartitionCreated`: a partition's first state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCreated {
    pub topic_id: Uuid,
    pub partition: i32,
    /// The assigned replicas; the first is the preferred leader.
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    /// [`NO_LEADER`] when there is none.
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// `PartitionChanged`, like KRaft's `PartitionChangeRecord`: the fields that
/// are `Some` change, the others stay.
///
/// It applies only to the partition state it was decided on:
/// `partition_epoch` is that state's epoch, and a record whose epoch is no
/// longer current is ignored (fenced), so two decisions taken on the same
/// state cannot both land. Applying it bumps the partition epoch by one,
/// and the leader epoch by one when the leader changes.
///
/// A reassignment (KIP-455) is a change too: it sets `replicas` to the
/// target followed by the replicas it removes, and names both sets in
/// `adding_replicas` / `removing_replicas`; the change that completes or
/// cancels it empties them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PartitionChanged {
    pub topic_id: Uuid,
    pub partition: i32,
    /// The partition epoch this change was decided on.
    pub partition_epoch: i32,
    /// The new leader ([`NO_LEADER`] for none).
    #[serde(default)]
    pub leader: Option<BrokerId>,
    #[serde(default)]
    pub isr: Option<Vec<BrokerId>>,
    #[serde(default)]
    pub replicas: Option<Vec<BrokerId>>,
    /// Replicas a reassignment adds (not yet in sync), `Some(vec![])` to
    /// clear them.
    #[serde(default)]
    pub adding_replicas: Option<Vec<BrokerId>>,
    /// Replicas a reassignment removes once the added ones are in sync.
    #[serde(default)]
    pub removing_replicas: Option<Vec<BrokerId>>,
}

/// What a config change applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum ConfigResource {
    /// A topic's override (by id, so a change decided for a deleted topic
    /// cannot land on a new topic of the same name).
    Topic(Uuid),
    /// One broker's override.
    Broker(BrokerId),
    /// The cluster-wide default (Kafka's broker resource with an empty name).
    Cluster,
    /// A consumer group's configs (Kafka's GROUP resource, KIP-848).
    Group(String),
}

impl fmt::Display for ConfigResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigResource::Topic(id) => write!(f, "topic {id}"),
            ConfigResource::Broker(id) => write!(f, "broker {id}"),
            ConfigResource::Cluster => f.write_str("cluster default"),
            ConfigResource::Group(g) => write!(f, "group {g}"),
        }
    }
}

/// `ConfigChanged`: one key set (or removed, with `value: None`), as KRaft's
/// `ConfigRecord`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChanged {
    pub resource: ConfigResource,
    pub name: String,
    pub value: Option<String>,
}

/// `ProducerIdsAllocated`: ids below `next_producer_id` are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdsAllocated {
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
    /// The first id of the next block.
    pub next_producer_id: i64,
}

/// What a proposal carries: records applied in order, in one Raft entry.
///
/// Each record is applied or ignored on its own (see
/// [`MetadataImage::apply`](super::image::MetadataImage::apply)); a batch is
/// atomic in the sense that no other proposal's records land between its
/// records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MetadataProposal {
    pub records: Vec<MetadataRecord>,
}

impl fmt::Display for MetadataProposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} metadata record(s)", self.records.len())
    }
}

/// Why a record was not applied. Deterministic: every node ignores the same
/// records for the same reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Ignored {
    #[error("unknown broker {broker_id}")]
    UnknownBroker { broker_id: BrokerId },
    #[error("broker {broker_id} has epoch {current}, the record is for epoch {record}")]
    StaleBrokerEpoch {
        broker_id: BrokerId,
        current: i64,
        record: i64,
    },
    #[error("unknown topic id {topic_id}")]
    UnknownTopic { topic_id: Uuid },
    #[error("a topic named '{name}' already exists")]
    TopicNameExists { name: String },
    #[error("a topic with id {topic_id} already exists")]
    TopicIdExists { topic_id: Uuid },
    #[error("unknown partition {topic_id}-{partition}")]
    UnknownPartition { topic_id: Uuid, partition: i32 },
    #[error("partition {topic_id}-{partition} already exists")]
    PartitionExists { topic_id: Uuid, partition: i32 },
    #[error(
        "partition {topic_id}-{partition} has partition epoch {current}, the change was decided on {record}"
    )]
    StalePartitionEpoch {
        topic_id: Uuid,
        partition: i32,
        current: i32,
        record: i32,
    },
    #[error("producer ids up to {current} are already allocated, the record ends at {record}")]
    StaleProducerIds { current: i64, record: i64 },
    #[error("invalid record: {detail}")]
    Invalid { detail: String },
}

/// The result of applying one record.
pub type RecordOutcome = Result<(), Ignored>;

/// What applying a proposal did: the Raft log index it was applied at and,
/// per record in order, whether it applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProposalOutcome {
    pub log_index: u64,
    pub outcomes: Vec<RecordOutcome>,
}

impl ProposalOutcome {
    /// Whether every record of the proposal applied.
    pub fn all_applied(&self) -> bool {
        self.outcomes.iter().all(Result::is_ok)
    }

    /// The first record that was ignored, with its position.
    pub fn first_ignored(&self) -> Option<(usize, &Ignored)> {
        self.outcomes
            .iter()
            .enumerate()
            .find_map(|(i, o)| o.as_ref().err().map(|e| (i, e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_json_tagged_by_type() {
        let topic_id = Uuid::from_u128(7);
        let records = vec![
            MetadataRecord::BrokerRegistered(BrokerRegistration {
                broker_id: 1,
                incarnation_id: Uuid::from_u128(1),
                broker_epoch: 3,
                listener: "127.0.0.1:9092".into(),
                rack: Some("r1".into()),
            }),
            MetadataRecord::BrokerFenced(BrokerEpochRef {
                broker_id: 1,
                broker_epoch: 3,
            }),
            MetadataRecord::TopicDeleted { topic_id },
            MetadataRecord::PartitionChanged(PartitionChanged {
                topic_id,
                partition: 0,
                partition_epoch: 4,
                leader: Some(NO_LEADER),
                ..Default::default()
            }),
            MetadataRecord::ConfigChanged(ConfigChanged {
                resource: ConfigResource::Cluster,
                name: "min.insync.replicas".into(),
                value: Some("2".into()),
            }),
        ];
        let proposal = MetadataProposal { records };
        let json = serde_json::to_string(&proposal).unwrap();
        assert!(json.contains(r#""type":"topic_deleted""#), "{json}");
        let back: MetadataProposal = serde_json::from_str(&json).unwrap();
        assert_eq!(back, proposal);
    }

    #[test]
    fn a_partition_change_without_optional_fields_decodes_as_no_change() {
        let json = format!(
            r#"{{"type":"partition_changed","topic_id":"{}","partition":2,"partition_epoch":5}}"#,
            Uuid::from_u128(9)
        );
        let record: MetadataRecord = serde_json::from_str(&json).unwrap();
        let MetadataRecord::PartitionChanged(change) = record else {
            panic!("wrong variant");
        };
        assert_eq!(
            (change.leader, change.isr, change.replicas),
            (None, None, None)
        );
        assert_eq!(
            (change.adding_replicas, change.removing_replicas),
            (None, None),
            "a record written before reassignments existed changes neither"
        );
    }
}
