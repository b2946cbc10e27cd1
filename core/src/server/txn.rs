//! The partition side of transactions: WriteTxnMarkers, which a
//! transaction coordinator sends to each partition's leader to end a
//! transaction there with a COMMIT or ABORT control batch (written by
//! `Broker::write_txn_marker`, which the coordinator of this broker calls
//! directly), and
//! DescribeProducers (KIP-664), which shows each partition's producers and
//! their open transactions (how `kafka-transactions.sh` finds a hanging
//! one).

use std::sync::Arc;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use kafka_protocol::ResponseError;

use super::errors::kafka_error;
use crate::broker::Broker;
use crate::txn::Marker;

/// Most markers (producers) one request may carry.
const MAX_MARKERS: usize = 10_000;

/// Writes each marker to each named partition this broker leads and waits
/// until the in-sync replicas have it (as acks=all). Errors are per
/// partition: NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION,
/// INVALID_PRODUCER_EPOCH for a marker of a fenced epoch,
/// KAFKA_STORAGE_ERROR, REQUEST_TIMED_OUT.
pub async fn write_txn_markers(
    broker: &Arc<Broker>,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let mut response = WriteTxnMarkersResponse::default();
    let too_many = request.markers.len() > MAX_MARKERS;
    for marker in request.markers {
        let mut result = WritableTxnMarkerResult::default();
        result.producer_id = marker.producer_id;
        let written = Marker {
            producer_id: marker.producer_id.0,
            producer_epoch: marker.producer_epoch,
            commit: marker.transaction_result,
            coordinator_epoch: marker.coordinator_epoch,
        };
        for topic in marker.topics {
            let mut t = WritableTxnMarkerTopicResult::default();
            for index in topic.partition_indexes {
                let mut p = WritableTxnMarkerPartitionResult::default();
                p.partition_index = index;
                let outcome = if too_many {
                    Err(ResponseError::InvalidRequest)
                } else {
                    broker
                        .write_txn_marker(&topic.name.0, index, written)
                        .await
                        .map_err(|e| kafka_error(&e))
                };
                if let Err(e) = outcome {
                    p.error_code = e.code();
                }
                t.partitions.push(p);
            }
            t.name = topic.name;
            result.topics.push(t);
        }
        response.markers.push(result);
    }
    response
}

/// Most partitions one DescribeProducers request may name.
const MAX_DESCRIBED_PARTITIONS: usize = 10_000;

/// Each named partition's producers, from its leader (others are answered
/// NOT_LEADER_OR_FOLLOWER or UNKNOWN_TOPIC_OR_PARTITION).
pub fn describe_producers(
    broker: &Arc<Broker>,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    use kafka_protocol::messages::describe_producers_response::{
        PartitionResponse, ProducerState, TopicResponse,
    };
    let mut response = DescribeProducersResponse::default();
    let mut described = 0usize;
    for topic in request.topics {
        let mut t = TopicResponse::default();
        let resolved = broker.topic(&topic.name.0);
        t.name = topic.name;
        for index in topic.partition_indexes {
            described += 1;
            let mut p = PartitionResponse::default();
            p.partition_index = index;
            let partition = if described > MAX_DESCRIBED_PARTITIONS {
                Err(ResponseError::InvalidRequest)
            } else {
                match resolved.as_ref().map(|t| t.leader_partition(index)) {
                    None => Err(ResponseError::UnknownTopicOrPartition),
                    Some(Err(e)) => Err(kafka_error(&e)),
                    Some(Ok(partition)) => Ok(partition),
                }
            };
            match partition {
                Err(e) => p.error_code = e.code(),
                Ok(partition) => {
                    p.active_producers = partition
                        .producers()
                        .into_iter()
                        .map(|(id, epoch, last_sequence, last_timestamp, txn_start)| {
                            let mut s = ProducerState::default();
                            s.producer_id = id.into();
                            s.producer_epoch = epoch as i32;
                            s.last_sequence = last_sequence;
                            s.last_timestamp = last_timestamp;
                            s.coordinator_epoch = -1;
                            s.current_txn_start_offset = txn_start;
                            s
                        })
                        .collect();
                }
            }
            t.partitions.push(p);
        }
        response.topics.push(t);
    }
    response
}
