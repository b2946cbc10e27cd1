//! Leader epochs on the wire: OffsetForLeaderEpoch (API 23; KIP-101,
//! KIP-279, KIP-320) and the `current_leader_epoch` check every
//! partition-level request shares.
//!
//! OffsetForLeaderEpoch answers, for a leader epoch, the largest epoch at
//! or below it that this partition's log knows and the offset where that
//! epoch ends: the start of the next higher epoch, or the log end for the
//! latest one (the partition's leader-epoch cache, `storage::epochs`).
//! Consumers use it to detect a log that was truncated under their position
//! after a leader change (KIP-320); followers use it to find where their
//! log diverges from the leader's before they fetch (KIP-279).

use std::sync::Arc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;

use super::errors::kafka_error;
use crate::broker::Broker;

/// Kafka's "no epoch" / "no offset" markers.
const UNDEFINED_EPOCH: i32 = -1;
const UNDEFINED_OFFSET: i64 = -1;

/// The check of a request's `current_leader_epoch` against this replica's:
/// a client that knows a newer epoch than ours is ahead of our metadata
/// (UNKNOWN_LEADER_EPOCH, retriable), one that knows an older epoch is
/// behind (FENCED_LEADER_EPOCH: refresh metadata). `-1` means the client
/// does not say, and passes.
pub fn check_current_leader_epoch(current: i32, ours: i32) -> Result<(), ResponseError> {
    if current < 0 || current == ours {
        Ok(())
    } else if current > ours {
        Err(ResponseError::UnknownLeaderEpoch)
    } else {
        Err(ResponseError::FencedLeaderEpoch)
    }
}

pub fn offset_for_leader_epoch(
    broker: &Arc<Broker>,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut response = OffsetForLeaderEpochResponse::default();
    for topic in request.topics {
        let resolved = broker.topic(&topic.topic.0);
        let mut t = OffsetForLeaderTopicResult::default();
        t.topic = topic.topic;
        for p in topic.partitions {
            let mut r = EpochEndOffset::default();
            r.partition = p.partition;
            r.leader_epoch = UNDEFINED_EPOCH;
            r.end_offset = UNDEFINED_OFFSET;
            let partition = match resolved.as_ref() {
                Some(t) => t.leader_partition(p.partition).map_err(|e| kafka_error(&e)),
                None => Err(ResponseError::UnknownTopicOrPartition),
            };
            let answer = match partition {
                Err(e) => Err(e),
                Ok(partition) => {
                    // Every version served (v2+, as Kafka 4) carries
                    // current_leader_epoch.
                    check_current_leader_epoch(p.current_leader_epoch, partition.leader_epoch())
                        .and_then(|()| {
                            partition
                                .end_offset_for_epoch(p.leader_epoch)
                                .map_err(|e| kafka_error(&e))
                        })
                }
            };
            match answer {
                Ok((epoch, end_offset)) => {
                    r.leader_epoch = epoch;
                    r.end_offset = end_offset;
                }
                Err(e) => r.error_code = e.code(),
            }
            t.partitions.push(r);
        }
        response.topics.push(t);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_leader_epoch_check_follows_kafka() {
        assert_eq!(check_current_leader_epoch(-1, 5), Ok(()));
        assert_eq!(check_current_leader_epoch(5, 5), Ok(()));
        assert_eq!(
            check_current_leader_epoch(6, 5),
            Err(ResponseError::UnknownLeaderEpoch)
        );
        assert_eq!(
            check_current_leader_epoch(4, 5),
            Err(ResponseError::FencedLeaderEpoch)
        );
    }
}
