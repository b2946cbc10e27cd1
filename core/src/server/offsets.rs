//! ListOffsets (earliest, latest, max timestamp, by timestamp) and
//! DeleteRecords. ListOffsets v0 (decoded by `legacy`) is answered here too:
//! its one offset is the one v1 finds.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use kafka_protocol::ResponseError;

use super::epochs::check_current_leader_epoch;
use super::errors::kafka_error;
use crate::broker::{Broker, Partition};

/// Special timestamps of ListOffsets.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

fn lookup(
    partition: &Partition,
    timestamp: i64,
    version: i16,
    read_committed: bool,
) -> Result<(i64, i64), ResponseError> {
    let offsets = partition.offsets();
    match timestamp {
        // read_committed consumers end at the last stable offset.
        LATEST if read_committed => Ok((offsets.last_stable, -1)),
        LATEST => Ok((offsets.high_watermark, -1)),
        EARLIEST => Ok((offsets.log_start, -1)),
        EARLIEST_LOCAL if version >= 8 => Ok((offsets.log_start, -1)),
        MAX_TIMESTAMP if version >= 7 => match partition.max_timestamp_offset() {
            Ok(Some((offset, ts))) => Ok((offset, ts)),
            Ok(None) => Ok((-1, -1)),
            Err(e) => Err(kafka_error(&e)),
        },
        // v0 knows only latest and earliest (Kafka answers the others so).
        t if t < 0 && version == 0 => Err(ResponseError::UnsupportedVersion),
        t if t < 0 => Err(ResponseError::InvalidRequest),
        t => match partition.offset_for_timestamp(t) {
            Ok(Some((offset, ts))) if offset < offsets.high_watermark => Ok((offset, ts)),
            // No record that new: Kafka answers -1/-1.
            Ok(_) => Ok((-1, -1)),
            Err(e) => Err(kafka_error(&e)),
        },
    }
}

pub fn list_offsets(
    broker: &Arc<Broker>,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let mut response = ListOffsetsResponse::default();
    let read_committed = version >= 2 && request.isolation_level == 1;
    for topic in request.topics {
        let mut t = ListOffsetsTopicResponse::default();
        let resolved = broker.topic(&topic.name.0);
        t.name = topic.name;
        for p in topic.partitions {
            let mut r = ListOffsetsPartitionResponse::default();
            r.partition_index = p.partition_index;
            r.offset = -1;
            r.timestamp = -1;
            let partition = match resolved.as_ref() {
                Some(t) => t
                    .leader_partition(p.partition_index)
                    .map_err(|e| kafka_error(&e)),
                None => Err(ResponseError::UnknownTopicOrPartition),
            };
            let result = match partition {
                Err(e) => Err(e),
                Ok(partition) => {
                    let ours = partition.leader_epoch();
                    if version >= 4 {
                        r.leader_epoch = ours;
                    }
                    let current = if version >= 4 {
                        p.current_leader_epoch
                    } else {
                        -1
                    };
                    check_current_leader_epoch(current, ours)
                        .and_then(|()| lookup(&partition, p.timestamp, version, read_committed))
                }
            };
            match result {
                Ok((offset, timestamp)) => {
                    r.offset = offset;
                    r.timestamp = timestamp;
                }
                Err(e) => r.error_code = e.code(),
            }
            t.partitions.push(r);
        }
        response.topics.push(t);
    }
    response
}

pub fn delete_records(
    broker: &Arc<Broker>,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut response = DeleteRecordsResponse::default();
    let mut changed = false;
    for topic in request.topics {
        let mut t = DeleteRecordsTopicResult::default();
        let name = topic.name.0.to_string();
        t.name = topic.name;
        for p in topic.partitions {
            let mut r = DeleteRecordsPartitionResult::default();
            r.partition_index = p.partition_index;
            r.low_watermark = -1;
            let result = broker
                .partition(&name, p.partition_index)
                .and_then(|partition| partition.check_leader().map(|()| partition))
                .and_then(|partition| partition.delete_records_before(p.offset));
            match result {
                Ok(low) => {
                    r.low_watermark = low;
                    changed = true;
                }
                Err(e) => r.error_code = kafka_error(&e).code(),
            }
            t.partitions.push(r);
        }
        response.topics.push(t);
    }
    if changed {
        broker.log_start_changed();
    }
    response
}
