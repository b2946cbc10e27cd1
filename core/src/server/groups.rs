//! Consumer group APIs: JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, TxnOffsetCommit, OffsetFetch, ListGroups, DescribeGroups,
//! DeleteGroups and OffsetDelete. Request/response shapes per version are handled here; the
//! group logic lives in `crate::group`.

use std::sync::Arc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::authorizer::{self, Resource};
use super::legacy::LegacyFields;
use super::str_bytes;
use crate::broker::{now_ms, Broker};
use crate::group::records::OffsetValue;
use crate::group::write_error;

pub async fn join_group(
    broker: &Arc<Broker>,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
    client_host: &str,
) -> JoinGroupResponse {
    broker
        .groups()
        .join_group(request, version, client_id, client_host)
        .await
}

pub async fn sync_group(
    broker: &Arc<Broker>,
    request: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    broker.groups().sync_group(request, version).await
}

pub fn heartbeat(broker: &Arc<Broker>, request: HeartbeatRequest) -> HeartbeatResponse {
    broker.groups().heartbeat(request)
}

pub async fn leave_group(
    broker: &Arc<Broker>,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let mut response = LeaveGroupResponse::default();
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    match broker
        .groups()
        .leave_group(&request.group_id.0, &leaving)
        .await
    {
        Err(e) => response.error_code = e.code(),
        Ok(results) if version >= 3 => {
            response.members = leaving
                .iter()
                .zip(results)
                .map(|((member_id, instance_id), result)| {
                    let mut m = leave_group_response::MemberResponse::default();
                    m.member_id = str_bytes(member_id.clone());
                    m.group_instance_id = instance_id.clone().map(str_bytes);
                    m.error_code = result.err().map_or(0, |e| e.code());
                    m
                })
                .collect();
        }
        Ok(results) => {
            response.error_code = results
                .into_iter()
                .find_map(|r| r.err())
                .map_or(0, |e| e.code());
        }
    }
    response
}

/// Why one partition's commit (OffsetCommit, TxnOffsetCommit) is refused:
/// the group's check failed, the partition is not one of the topic's
/// `partition_count` (from the metadata: in a cluster the coordinator need
/// not hold a replica), or its metadata is too long.
fn commit_refusal(
    check: &Result<(), ResponseError>,
    partition_count: Option<i32>,
    partition: i32,
    metadata_len: usize,
    max_metadata: usize,
) -> Option<ResponseError> {
    match check {
        Err(e) => Some(*e),
        Ok(()) if !partition_count.is_some_and(|n| (0..n).contains(&partition)) => {
            Some(ResponseError::UnknownTopicOrPartition)
        }
        Ok(()) if metadata_len > max_metadata => Some(ResponseError::OffsetMetadataTooLarge),
        Ok(()) => None,
    }
}

/// OffsetCommit. v0 commits are simple commits (no generation, no member);
/// v1 carries a commit timestamp per partition (`legacy`), which becomes the
/// commit's timestamp unless it is -1, as in Kafka.
pub async fn offset_commit(
    broker: &Arc<Broker>,
    request: OffsetCommitRequest,
    version: i16,
    legacy: Option<LegacyFields>,
) -> OffsetCommitResponse {
    let commit_timestamps = match legacy {
        Some(LegacyFields::CommitTimestamps(t)) => t,
        None => Vec::new(),
    };
    let coordinator = broker.groups();
    let group_id = request.group_id.0.to_string();
    let instance_id = request
        .group_instance_id
        .as_ref()
        .filter(|_| version >= 7)
        .map(|s| s.to_string());
    let check = coordinator.check_commit(
        &group_id,
        request.generation_id_or_member_epoch,
        &request.member_id,
        instance_id.as_deref(),
    );
    let max_metadata = coordinator.config().offset_metadata_max_bytes;
    let now = now_ms();
    let mut response = OffsetCommitResponse::default();
    let mut accepted = Vec::new();
    // (topic index, partition index) of accepted entries, to fill in errors
    // if the write fails.
    let mut accepted_at = Vec::new();
    for (topic_index, topic) in request.topics.into_iter().enumerate() {
        let name = topic.name.0.to_string();
        let known = broker.topic(&name);
        let mut t = OffsetCommitResponseTopic::default();
        t.name = topic.name.clone();
        for (partition_index, p) in topic.partitions.into_iter().enumerate() {
            let commit_timestamp_ms = commit_timestamps
                .get(topic_index)
                .and_then(|t| t.get(partition_index))
                .copied()
                .filter(|ts| *ts != -1)
                .unwrap_or(now);
            let mut r = OffsetCommitResponsePartition::default();
            r.partition_index = p.partition_index;
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let error = commit_refusal(
                &check,
                known.as_ref().map(|t| t.partition_count()),
                p.partition_index,
                metadata.len(),
                max_metadata,
            );
            match error {
                Some(e) => r.error_code = e.code(),
                None => {
                    accepted_at.push((response.topics.len(), t.partitions.len()));
                    accepted.push((
                        (name.clone(), p.partition_index),
                        OffsetValue {
                            offset: p.committed_offset,
                            leader_epoch: if version >= 6 {
                                p.committed_leader_epoch
                            } else {
                                -1
                            },
                            metadata,
                            commit_timestamp_ms,
                        },
                    ));
                }
            }
            t.partitions.push(r);
        }
        response.topics.push(t);
    }
    if let Err(e) = coordinator.commit_offsets(&group_id, accepted).await {
        let error = write_error(&e);
        if error == ResponseError::NotCoordinator {
            tracing::info!(group = %group_id, error = %e, "commit refused: the group's coordinator moved");
        } else {
            tracing::error!(group = %group_id, error = %e, "could not store committed offsets");
        }
        for (ti, pi) in accepted_at {
            response.topics[ti].partitions[pi].error_code = error.code();
        }
    }
    response
}

/// TxnOffsetCommit: offsets committed inside a transaction, pending in the
/// group coordinator until the transaction's marker reaches the group's
/// offsets partition (the transaction coordinator added that partition to
/// the transaction with AddOffsetsToTxn).
pub async fn txn_offset_commit(
    broker: &Arc<Broker>,
    request: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    use kafka_protocol::messages::txn_offset_commit_response::{
        TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
    };
    let coordinator = broker.groups();
    let group_id = request.group_id.0.to_string();
    let (generation, member_id, instance_id) = if version >= 3 {
        (
            request.generation_id,
            request.member_id.to_string(),
            request.group_instance_id.as_ref().map(|s| s.to_string()),
        )
    } else {
        (-1, String::new(), None)
    };
    let check =
        coordinator.check_txn_commit(&group_id, generation, &member_id, instance_id.as_deref());
    let max_metadata = coordinator.config().offset_metadata_max_bytes;
    let now = now_ms();
    let mut response = TxnOffsetCommitResponse::default();
    let mut accepted = Vec::new();
    let mut accepted_at = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let known = broker
            .metadata()
            .image()
            .topic_by_name(&name)
            .map(|t| t.partitions.len() as i32);
        let mut t = TxnOffsetCommitResponseTopic::default();
        t.name = topic.name.clone();
        for p in topic.partitions {
            let mut r = TxnOffsetCommitResponsePartition::default();
            r.partition_index = p.partition_index;
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let error = commit_refusal(
                &check,
                known,
                p.partition_index,
                metadata.len(),
                max_metadata,
            );
            match error {
                Some(e) => r.error_code = e.code(),
                None => {
                    accepted_at.push((response.topics.len(), t.partitions.len()));
                    accepted.push((
                        (name.clone(), p.partition_index),
                        OffsetValue {
                            offset: p.committed_offset,
                            leader_epoch: if version >= 2 {
                                p.committed_leader_epoch
                            } else {
                                -1
                            },
                            metadata,
                            commit_timestamp_ms: now,
                        },
                    ));
                }
            }
            t.partitions.push(r);
        }
        response.topics.push(t);
    }
    if accepted.is_empty() {
        return response;
    }
    let written = coordinator
        .commit_txn_offsets(
            &group_id,
            request.producer_id.0,
            request.producer_epoch,
            accepted,
        )
        .await;
    if let Err(e) = written {
        let error = match &e {
            // The producer was fenced on the group's partition.
            crate::broker::BrokerError::Append(crate::storage::AppendError::Sequence(
                crate::storage::producer_state::SequenceError::InvalidEpoch { .. },
            )) => {
                if version >= 3 {
                    ResponseError::ProducerFenced
                } else {
                    ResponseError::InvalidProducerEpoch
                }
            }
            e => write_error(e),
        };
        tracing::info!(group = %group_id, error = %e, "transactional offset commit refused");
        for (ti, pi) in accepted_at {
            response.topics[ti].partitions[pi].error_code = error.code();
        }
    }
    response
}

/// (partition, committed offset, leader epoch, metadata, error code)
type PartitionOffset = (i32, i64, i32, String, i16);

/// Offsets of one group for OffsetFetch: the requested partitions, or all;
/// or why this broker cannot answer for the group. With `require_stable`
/// (KIP-447), a partition with offsets of a transaction still open is
/// answered UNSTABLE_OFFSET_COMMIT, and the client asks again.
fn group_offsets(
    broker: &Arc<Broker>,
    group_id: &str,
    requested: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Vec<(String, Vec<PartitionOffset>)>, ResponseError> {
    let committed = broker.groups().fetch_offsets(group_id)?;
    let unstable: std::collections::HashSet<(String, i32)> = if require_stable {
        broker
            .groups()
            .unstable_partitions(group_id)
            .into_iter()
            .collect()
    } else {
        Default::default()
    };
    let unstable_code = ResponseError::UnstableOffsetCommit.code();
    Ok(match requested {
        Some(topics) => topics
            .into_iter()
            .map(|(topic, partitions)| {
                let entries = partitions
                    .into_iter()
                    .map(|p| {
                        if unstable.contains(&(topic.clone(), p)) {
                            return (p, -1, -1, String::new(), unstable_code);
                        }
                        match committed.get(&(topic.clone(), p)) {
                            Some(v) => (p, v.offset, v.leader_epoch, v.metadata.clone(), 0),
                            None => (p, -1, -1, String::new(), 0),
                        }
                    })
                    .collect();
                (topic, entries)
            })
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<PartitionOffset>> =
                Default::default();
            for ((topic, p), v) in committed {
                let entry = if unstable.contains(&(topic.clone(), p)) {
                    (p, -1, -1, String::new(), unstable_code)
                } else {
                    (p, v.offset, v.leader_epoch, v.metadata, 0)
                };
                by_topic.entry(topic).or_default().push(entry);
            }
            by_topic
                .into_iter()
                .map(|(t, mut ps)| {
                    ps.sort_by_key(|e| e.0);
                    (t, ps)
                })
                .collect()
        }
    })
}

pub fn offset_fetch(
    broker: &Arc<Broker>,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    if version >= 8 {
        for g in request.groups {
            let requested = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect()
            });
            let mut out = OffsetFetchResponseGroup::default();
            out.group_id = g.group_id.clone();
            let offsets =
                match group_offsets(broker, &g.group_id.0, requested, request.require_stable) {
                    Ok(offsets) => offsets,
                    Err(e) => {
                        out.error_code = e.code();
                        response.groups.push(out);
                        continue;
                    }
                };
            out.topics = offsets
                .into_iter()
                .map(|(topic, entries)| {
                    let mut t = OffsetFetchResponseTopics::default();
                    t.name = TopicName(str_bytes(topic));
                    t.partitions = entries
                        .into_iter()
                        .map(|(p, offset, epoch, metadata, error_code)| {
                            let mut r = OffsetFetchResponsePartitions::default();
                            r.partition_index = p;
                            r.committed_offset = offset;
                            r.committed_leader_epoch = epoch;
                            r.metadata = Some(str_bytes(metadata));
                            r.error_code = error_code;
                            r
                        })
                        .collect();
                    t
                })
                .collect();
            response.groups.push(out);
        }
        return response;
    }
    let requested = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let require_stable = version >= 7 && request.require_stable;
    let offsets = match group_offsets(
        broker,
        &request.group_id.0,
        requested.clone(),
        require_stable,
    ) {
        Ok(offsets) => offsets,
        Err(e) if version >= 2 => {
            response.error_code = e.code();
            return response;
        }
        Err(e) => {
            // v0 and v1 have no top-level error: each requested partition
            // carries it.
            response.topics = requested
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, partitions)| {
                    let mut t = OffsetFetchResponseTopic::default();
                    t.name = TopicName(str_bytes(topic));
                    t.partitions = partitions
                        .into_iter()
                        .map(|p| {
                            let mut r = OffsetFetchResponsePartition::default();
                            r.partition_index = p;
                            r.committed_offset = -1;
                            r.error_code = e.code();
                            r
                        })
                        .collect();
                    t
                })
                .collect();
            return response;
        }
    };
    response.topics = offsets
        .into_iter()
        .map(|(topic, entries)| {
            let mut t = OffsetFetchResponseTopic::default();
            t.name = TopicName(str_bytes(topic));
            t.partitions = entries
                .into_iter()
                .map(|(p, offset, epoch, metadata, error_code)| {
                    let mut r = OffsetFetchResponsePartition::default();
                    r.partition_index = p;
                    r.committed_offset = offset;
                    if version >= 5 {
                        r.committed_leader_epoch = epoch;
                    }
                    r.metadata = Some(str_bytes(metadata));
                    r.error_code = error_code;
                    r
                })
                .collect();
            t
        })
        .collect();
    response
}

pub fn list_groups(
    broker: &Arc<Broker>,
    request: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let mut response = ListGroupsResponse::default();
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    if broker.groups().loading() {
        response.error_code = ResponseError::CoordinatorLoadInProgress.code();
        return response;
    }
    for (id, protocol_type, state) in broker.groups().list_groups() {
        if version >= 4 && !states.is_empty() && !states.contains(&state.to_lowercase()) {
            continue;
        }
        if version >= 5 && !types.is_empty() && !types.iter().any(|t| t == "classic") {
            continue;
        }
        let mut g = ListedGroup::default();
        g.group_id = GroupId(str_bytes(id));
        g.protocol_type = str_bytes(protocol_type);
        if version >= 4 {
            g.group_state = str_bytes(state);
        }
        if version >= 5 {
            g.group_type = str_bytes("classic");
        }
        response.groups.push(g);
    }
    response
}

pub fn describe_groups(
    broker: &Arc<Broker>,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut response = DescribeGroupsResponse::default();
    for group_id in request.groups {
        let mut g = DescribedGroup::default();
        g.group_id = group_id.clone();
        g.authorized_operations = authorizer::OMITTED;
        if let Err(e) = broker.groups().check_coordinator(&group_id.0) {
            g.error_code = e.code();
            response.groups.push(g);
            continue;
        }
        match broker.groups().describe(&group_id.0) {
            Some(d) => {
                g.authorized_operations = authorizer::if_requested(
                    version >= 3 && request.include_authorized_operations,
                    Resource::Group(&group_id.0),
                );
                g.group_state = str_bytes(d.state);
                g.protocol_type = str_bytes(d.protocol_type);
                g.protocol_data = str_bytes(d.protocol);
                g.members = d
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut dm = DescribedGroupMember::default();
                        dm.member_id = str_bytes(m.member_id);
                        if version >= 4 {
                            dm.group_instance_id = m.group_instance_id.map(str_bytes);
                        }
                        dm.client_id = str_bytes(m.client_id);
                        dm.client_host = str_bytes(m.client_host);
                        dm.member_metadata = m.metadata;
                        dm.member_assignment = m.assignment;
                        dm
                    })
                    .collect();
            }
            None => {
                // Kafka describes an unknown group as Dead (v6 adds an error).
                g.group_state = str_bytes("Dead");
                if version >= 6 {
                    g.error_code = ResponseError::GroupIdNotFound.code();
                }
            }
        }
        response.groups.push(g);
    }
    response
}

pub async fn delete_groups(
    broker: &Arc<Broker>,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut response = DeleteGroupsResponse::default();
    for group_id in request.groups_names {
        let mut r = delete_groups_response::DeletableGroupResult::default();
        r.error_code = broker
            .groups()
            .delete_group(&group_id.0)
            .await
            .err()
            .map_or(0, |e| e.code());
        r.group_id = group_id;
        response.results.push(r);
    }
    response
}

pub async fn offset_delete(
    broker: &Arc<Broker>,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let mut response = OffsetDeleteResponse::default();
    let coordinator = broker.groups();
    let group_id = request.group_id.0.to_string();
    if let Err(e) = coordinator.check_coordinator(&group_id) {
        response.error_code = e.code();
        return response;
    }
    if !coordinator.group_exists(&group_id) {
        response.error_code = ResponseError::GroupIdNotFound.code();
        return response;
    }
    let subscribed = coordinator.subscribed_topics(&group_id).unwrap_or_default();
    let mut deletable = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut t = OffsetDeleteResponseTopic::default();
        t.name = topic.name.clone();
        for p in topic.partitions {
            let mut r = OffsetDeleteResponsePartition::default();
            r.partition_index = p.partition_index;
            if subscribed.contains(&name) {
                r.error_code = ResponseError::GroupSubscribedToTopic.code();
            } else {
                deletable.push((name.clone(), p.partition_index));
            }
            t.partitions.push(r);
        }
        response.topics.push(t);
    }
    if let Err(e) = coordinator.delete_offsets(&group_id, deletable).await {
        response.error_code = write_error(&e).code();
    }
    response
}
