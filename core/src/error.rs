//! The errors of the broker's operations, in domain terms: the broker,
//! the coordinators that keep their state in internal topics and the
//! protocol handlers all speak them.
//!
//! What it is not: Kafka error codes. `server/errors.rs` alone maps these
//! errors to codes.

use std::io;

use uuid::Uuid;

use crate::config::ConfigError;
use crate::storage::{AppendError, ReadError};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("topic id {0} does not exist")]
    UnknownTopicId(Uuid),
    #[error("partition {1} of topic '{0}' does not exist")]
    UnknownPartition(String, i32),
    #[error("invalid topic name: {0}")]
    InvalidTopic(String),
    #[error("'{0}' is an internal topic: {1}")]
    InternalTopic(String, &'static str),
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// A request Kafka refuses as INVALID_REQUEST (e.g. a broker config
    /// value that does not validate).
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    InvalidRecord(#[from] InvalidRecord),
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
    /// This broker does not lead the partition (NOT_LEADER_OR_FOLLOWER).
    #[error("this broker is not the leader of partition {1} of topic '{0}'")]
    NotLeaderOrFollower(String, i32),
    /// The metadata quorum did not take a change in time (REQUEST_TIMED_OUT).
    #[error("the metadata quorum did not commit the change: {0}")]
    MetadataTimeout(String),
    /// Records were written here but the in-sync replicas did not all have
    /// them in time (REQUEST_TIMED_OUT); they may still be committed.
    #[error(
        "partition {1} of topic '{0}': written, but not committed on the in-sync replicas: {2}"
    )]
    NotCommitted(String, i32, String),
    /// The partition already has the leader an election asks for
    /// (ELECTION_NOT_NEEDED).
    #[error("{0}")]
    ElectionNotNeeded(String),
    /// PREFERRED_LEADER_NOT_AVAILABLE
    #[error("{0}")]
    PreferredLeaderNotAvailable(String),
    /// ELIGIBLE_LEADERS_NOT_AVAILABLE
    #[error("{0}")]
    EligibleLeadersNotAvailable(String),
    /// A cancellation of a reassignment that is not running
    /// (NO_REASSIGNMENT_IN_PROGRESS).
    #[error("{0}")]
    NoReassignmentInProgress(String),
}

/// A produced record set refused by broker-side schema validation
/// (`crate::schemas`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {batch_index} of the batch: {field}: {reason}")]
pub struct InvalidRecord {
    /// Index of the record in its batch (Kafka's `batch_index`).
    pub batch_index: i32,
    /// `key` or `value`.
    pub field: &'static str,
    pub reason: String,
}
