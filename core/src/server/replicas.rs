//! Where partitions' leaders and replicas are moved by an operator:
//! ElectLeaders (API 43: preferred or unclean elections, KIP-460),
//! AlterPartitionReassignments (API 45) and ListPartitionReassignments
//! (API 46), Kafka's partition reassignment (KIP-455).
//!
//! The handlers only translate: the rules are the controller's
//! (`controller::decisions`: `elect_leader`, `alter_reassignment`,
//! `list_reassignments`), applied through `broker::Metadata`, which
//! proposes the records to the metadata quorum and answers once this broker
//! applied them. Like Kafka, each needs ALTER (DESCRIBE for the listing) on
//! the cluster resource (`authorizer.rs`).

use std::sync::Arc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::ResponseError;

use super::authorizer::{self, Operation, Resource};
use super::errors::kafka_error;
use super::str_bytes;
use crate::broker::{Broker, BrokerError};
use crate::controller::decisions::ElectionType;

/// Kafka's `ElectionType` codes.
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

fn topic_name(name: impl Into<String>) -> TopicName {
    TopicName(str_bytes(name))
}

/// An error code and its message, as the per-partition results carry them.
fn outcome_parts(outcome: &Result<(), BrokerError>) -> (i16, Option<String>) {
    match outcome {
        Ok(()) => (0, None),
        Err(e) => (kafka_error(e).code(), Some(e.to_string())),
    }
}

fn not_authorized(what: &str) -> (i16, String) {
    (
        ResponseError::ClusterAuthorizationFailed.code(),
        format!(
            "{what} needs the {:?} operation on the cluster",
            Operation::Alter
        ),
    )
}

/// ElectLeaders. `topic_partitions` null means every partition (results
/// then leave out those already led as asked, as Kafka). v0 has no
/// election type (preferred only) and no top-level error code.
pub async fn elect_leaders(
    broker: &Arc<Broker>,
    request: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    let mut response = ElectLeadersResponse::default();
    let refuse = |response: &mut ElectLeadersResponse, code: i16, message: String| {
        if version >= 1 {
            response.error_code = code;
        }
        // Every partition asked for gets the error too (v0 has no other
        // place for it).
        for topic in request.topic_partitions.iter().flatten() {
            let mut result = ReplicaElectionResult::default();
            result.topic = topic.topic.clone();
            result.partition_result = topic
                .partitions
                .iter()
                .map(|&p| {
                    let mut r = PartitionResult::default();
                    r.partition_id = p;
                    r.error_code = code;
                    r.error_message = Some(str_bytes(message.clone()));
                    r
                })
                .collect();
            response.replica_election_results.push(result);
        }
    };
    let election = match (version, request.election_type) {
        (0, _) | (_, PREFERRED) => ElectionType::Preferred,
        (_, UNCLEAN) => ElectionType::Unclean,
        (_, other) => {
            let message = format!("unknown election type {other}");
            refuse(&mut response, ResponseError::InvalidRequest.code(), message);
            return response;
        }
    };
    if !authorizer::is_authorized(Resource::Cluster, Operation::Alter) {
        let (code, message) = not_authorized("ElectLeaders");
        refuse(&mut response, code, message);
        return response;
    }
    let partitions = request.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
            .collect()
    });
    let results = broker.metadata().elect_leaders(election, partitions).await;
    response.replica_election_results = results
        .into_iter()
        .map(|(topic, partitions)| {
            let mut result = ReplicaElectionResult::default();
            result.topic = topic_name(topic);
            result.partition_result = partitions
                .into_iter()
                .map(|(p, outcome)| {
                    let (code, message) = outcome_parts(&outcome);
                    let mut r = PartitionResult::default();
                    r.partition_id = p;
                    r.error_code = code;
                    r.error_message = message.map(str_bytes);
                    r
                })
                .collect();
            result
        })
        .collect();
    response
}

/// AlterPartitionReassignments: per partition, a target replica list
/// starts (or replaces) a reassignment, null cancels one.
pub async fn alter_partition_reassignments(
    broker: &Arc<Broker>,
    request: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    let mut response = AlterPartitionReassignmentsResponse::default();
    // v0 has no flag: the replication factor may change (KIP-860).
    let allow_replication_factor_change = version < 1 || request.allow_replication_factor_change;
    response.allow_replication_factor_change = allow_replication_factor_change;
    if !authorizer::is_authorized(Resource::Cluster, Operation::Alter) {
        let (code, message) = not_authorized("AlterPartitionReassignments");
        response.error_code = code;
        response.error_message = Some(str_bytes(message));
        return response;
    }
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let target = p.replicas.map(|r| r.into_iter().map(|b| b.0).collect());
                    (p.partition_index, target)
                })
                .collect();
            (t.name.0.to_string(), partitions)
        })
        .collect();
    let results = broker
        .metadata()
        .alter_partition_reassignments(topics, allow_replication_factor_change)
        .await;
    response.responses = results
        .into_iter()
        .map(|(topic, partitions)| {
            let mut t = ReassignableTopicResponse::default();
            t.name = topic_name(topic);
            t.partitions = partitions
                .into_iter()
                .map(|(p, outcome)| {
                    let (code, message) = outcome_parts(&outcome);
                    let mut r = ReassignablePartitionResponse::default();
                    r.partition_index = p;
                    r.error_code = code;
                    r.error_message = message.map(str_bytes);
                    r
                })
                .collect();
            t
        })
        .collect();
    response
}

/// ListPartitionReassignments: the ongoing reassignments of every topic
/// (`topics` null) or of the partitions listed; unknown topics and
/// partitions without one are left out, as Kafka.
pub fn list_partition_reassignments(
    broker: &Arc<Broker>,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let mut response = ListPartitionReassignmentsResponse::default();
    if !authorizer::is_authorized(Resource::Cluster, Operation::Describe) {
        response.error_code = ResponseError::ClusterAuthorizationFailed.code();
        response.error_message = Some(str_bytes(format!(
            "ListPartitionReassignments needs the {:?} operation on the cluster",
            Operation::Describe
        )));
        return response;
    }
    let wanted: Option<Vec<(String, Vec<i32>)>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let ongoing = broker
        .metadata()
        .list_partition_reassignments(wanted.as_deref());
    let ids = |list: Vec<i32>| list.into_iter().map(BrokerId).collect::<Vec<_>>();
    for o in ongoing {
        let mut p = OngoingPartitionReassignment::default();
        p.partition_index = o.partition;
        p.replicas = ids(o.replicas);
        p.adding_replicas = ids(o.adding_replicas);
        p.removing_replicas = ids(o.removing_replicas);
        match response.topics.last_mut() {
            Some(t) if *t.name.0 == *o.topic => t.partitions.push(p),
            _ => {
                let mut t = OngoingTopicReassignment::default();
                t.name = topic_name(o.topic);
                t.partitions = vec![p];
                response.topics.push(t);
            }
        }
    }
    response
}
