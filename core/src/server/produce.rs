//! Produce: validate and append record sets, answer with their offsets.
//! Message sets of format v0/v1 (Produce v0-2) are converted to a v2 batch
//! first (`storage::legacy`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;
use tracing::debug;

use bytes::Bytes;

use super::errors::kafka_error;
use super::str_bytes;
use crate::broker::{Broker, BrokerError, Partition, Topic};
use crate::config::effective_value;
use crate::replication::{wait_for_acks_all, AcksAllWait};
use crate::storage::batch::BatchIter;
use crate::storage::records::MAX_DECOMPRESSED_BYTES;
use crate::storage::{legacy, AppendError, AppendInfo};

fn partition_error(
    index: i32,
    error: ResponseError,
    message: Option<String>,
) -> PartitionProduceResponse {
    let mut p = PartitionProduceResponse::default();
    p.index = index;
    p.error_code = error.code();
    p.base_offset = -1;
    p.log_append_time_ms = -1;
    p.log_start_offset = -1;
    p.error_message = message.map(str_bytes);
    p
}

/// Why a partition's record set was refused: code, message, and the
/// records at fault (index in the batch, reason) when it was about records.
type Refusal = (ResponseError, Option<String>, Vec<(i32, String)>);

fn refusal(e: &BrokerError) -> Refusal {
    let records = match e {
        BrokerError::InvalidRecord(invalid) => vec![(invalid.batch_index, e.to_string())],
        BrokerError::Append(AppendError::Records(refused)) => refused
            .errors
            .iter()
            .map(|r| (r.batch_index, r.message.clone()))
            .collect(),
        _ => Vec::new(),
    };
    (kafka_error(e), Some(e.to_string()), records)
}

/// Validates (when the topic asks for it) and appends one partition's
/// record set. Produce v0-2 may carry message format v0/v1, which becomes
/// a v2 batch first.
async fn produce_partition(
    broker: &Arc<Broker>,
    topic: &Topic,
    partition: &Arc<Partition>,
    records: &Bytes,
    version: i16,
    acks: i16,
    timeout: Duration,
) -> Result<AppendInfo, Refusal> {
    let metrics = broker.metrics();
    let converted;
    let records = if version < 3 && legacy::is_legacy(records) {
        converted = legacy::to_v2_batch(records, MAX_DECOMPRESSED_BYTES).map_err(|e| {
            debug!(topic = %topic.name, partition = partition.index, error = %e, "old message set refused");
            refusal(&BrokerError::Append(e))
        })?;
        &converted
    } else {
        records
    };
    let policy = topic.schema_validation();
    if policy.is_on() {
        if let Err(invalid) = broker.schemas().validate(&topic.name, policy, records) {
            debug!(topic = %topic.name, partition = partition.index, error = %invalid, "produce rejected by schema validation");
            metrics
                .records_rejected_by_schema
                .fetch_add(1, Ordering::Relaxed);
            return Err(refusal(&BrokerError::InvalidRecord(invalid)));
        }
    }
    // acks=all: refused before the append when too few replicas are in
    // sync (`min.insync.replicas`, bounded by the replication factor).
    let min_isr = if acks == -1 {
        let defaults = broker.metadata().log_defaults();
        let min_isr = effective_value("min.insync.replicas", &topic.configs(), &defaults)
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(1);
        if !partition.enough_replicas(min_isr) {
            let status = *partition.replication_status().borrow();
            return Err((
                ResponseError::NotEnoughReplicas,
                Some(format!(
                    "fewer replicas than min.insync.replicas ({min_isr}) are in sync, of {}",
                    status.replicas
                )),
                Vec::new(),
            ));
        }
        min_isr
    } else {
        0
    };
    let leader_epoch = partition.leader_epoch();
    match partition.append(records).await {
        Ok(info) => {
            partition
                .counters
                .appended(info.bytes as u64, info.records as u64);
            metrics
                .bytes_in
                .fetch_add(info.bytes as u64, Ordering::Relaxed);
            metrics
                .records_in
                .fetch_add(info.records as u64, Ordering::Relaxed);
            if acks == -1 {
                let waited = wait_for_acks_all(
                    partition.replication_status(),
                    leader_epoch,
                    info.last_offset + 1,
                    min_isr,
                    timeout,
                )
                .await;
                let failed = match waited {
                    AcksAllWait::Done => None,
                    AcksAllWait::NotEnoughReplicasAfterAppend => {
                        Some(ResponseError::NotEnoughReplicasAfterAppend)
                    }
                    AcksAllWait::NotLeader => Some(ResponseError::NotLeaderOrFollower),
                    AcksAllWait::Timeout => Some(ResponseError::RequestTimedOut),
                };
                if let Some(error) = failed {
                    return Err((
                        error,
                        Some(format!(
                            "acks=all: {waited:?} for offsets up to {}",
                            info.last_offset
                        )),
                        Vec::new(),
                    ));
                }
            }
            Ok(info)
        }
        Err(e) => {
            debug!(topic = %topic.name, partition = partition.index, error = %e, "produce rejected");
            Err(refusal(&e))
        }
    }
}

/// Whether a partition's record set starts with a transactional batch
/// (a producer's batches are all transactional or none are).
fn has_transactional_batches(request: &ProduceRequest) -> bool {
    request
        .topic_data
        .iter()
        .flat_map(|t| t.partition_data.iter())
        .filter_map(|p| p.records.as_ref())
        .any(|records| {
            matches!(
                BatchIter::new(records, false).next(),
                Some(Ok((_, header))) if header.is_transactional()
            )
        })
}

/// Handles a Produce request. `Ok(None)` for a successful acks=0 request
/// (no response is sent); `Err(code)` for a failed acks=0 request, which
/// closes the connection.
pub async fn handle(
    broker: &Arc<Broker>,
    request: ProduceRequest,
    version: i16,
) -> Result<Option<ProduceResponse>, i16> {
    let acks = request.acks;
    // How long acks=all waits for the in-sync replicas.
    let timeout = Duration::from_millis(request.timeout_ms.clamp(0, 300_000) as u64);
    let metrics = broker.metrics();
    metrics.produce_requests.fetch_add(1, Ordering::Relaxed);
    let request_error = if !matches!(acks, -1..=1) {
        Some((
            ResponseError::InvalidRequiredAcks,
            format!("acks must be -1, 0 or 1, got {acks}"),
        ))
    } else if request.transactional_id.is_none() && has_transactional_batches(&request) {
        // As Kafka: transactional records need the producer's
        // transactional id (which an authorizer would check).
        Some((
            ResponseError::TransactionalIdAuthorizationFailed,
            "transactional records need a transactional id in the request".to_string(),
        ))
    } else {
        None
    };
    let mut response = ProduceResponse::default();
    for topic_data in request.topic_data {
        let name = topic_data.name.0.to_string();
        let mut topic_response = TopicProduceResponse::default();
        topic_response.name = topic_data.name;
        topic_response.topic_id = topic_data.topic_id;
        let topic = match &request_error {
            Some((code, message)) => Err((*code, Some(message.clone()), Vec::new())),
            None => match broker.metadata().topic_or_auto_create(&name, true).await {
                Ok(t) if t.is_internal() => Err(refusal(&BrokerError::InternalTopic(
                    name.clone(),
                    "clients cannot produce to it",
                ))),
                Ok(t) => Ok(t),
                Err(e) => Err(refusal(&e)),
            },
        };
        for data in topic_data.partition_data {
            let index = data.index;
            let result = match &topic {
                Err(e) => Err(e.clone()),
                Ok(topic) => match topic.leader_partition(index) {
                    Err(e) => Err(refusal(&e)),
                    Ok(partition) => {
                        let records = data.records.unwrap_or_default();
                        produce_partition(
                            broker, topic, &partition, &records, version, acks, timeout,
                        )
                        .await
                    }
                },
            };
            let partition_response = match result {
                Ok(info) => {
                    let mut p = PartitionProduceResponse::default();
                    p.index = index;
                    p.base_offset = info.base_offset;
                    p.log_append_time_ms = info.log_append_time_ms;
                    p.log_start_offset = info.log_start_offset;
                    p
                }
                // Error messages and record errors exist from v8 on; older
                // clients get the code only.
                Err((code, message, records)) => {
                    let mut p = partition_error(index, code, message.filter(|_| version >= 8));
                    if version >= 10 && code == ResponseError::NotLeaderOrFollower {
                        if let Some((leader, epoch, host, port)) =
                            super::metadata::leader_hint(broker, &name, index)
                        {
                            p.current_leader.leader_id = BrokerId(leader);
                            p.current_leader.leader_epoch = epoch;
                            if !response
                                .node_endpoints
                                .iter()
                                .any(|n| n.node_id.0 == leader)
                            {
                                let mut node = NodeEndpoint::default();
                                node.node_id = BrokerId(leader);
                                node.host = str_bytes(host);
                                node.port = port;
                                response.node_endpoints.push(node);
                            }
                        }
                    }
                    if version >= 8 {
                        p.record_errors = records
                            .into_iter()
                            .map(|(batch_index, message)| {
                                let mut e = BatchIndexAndErrorMessage::default();
                                e.batch_index = batch_index;
                                e.batch_index_error_message = Some(str_bytes(message));
                                e
                            })
                            .collect();
                    }
                    p
                }
            };
            topic_response.partition_responses.push(partition_response);
        }
        response.responses.push(topic_response);
    }
    if acks == 0 {
        // No response is sent; Kafka closes the connection instead so the
        // client learns that something failed.
        let failed = response
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .find(|p| p.error_code != 0);
        return match failed {
            Some(p) => Err(p.error_code),
            None => Ok(None),
        };
    }
    Ok(Some(response))
}
