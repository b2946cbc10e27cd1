//! Fetch: serve stored batches as they are on disk, with long polling.
//!
//! A fetch first plans its reads (which file range of which segment) under
//! each partition's lock, waits while fewer than `min_bytes` are available
//! and `max_wait_ms` has not passed, and only then reads the bytes, outside
//! the locks. Batches are never decoded or re-encoded, except for Fetch
//! v0-3, whose clients read message format v0/v1: for them the batches
//! read are converted down (`storage::legacy::down_convert`).
//!
//! Byte limits follow Kafka (KIP-74): `partition_max_bytes` per partition,
//! `max_bytes` for the whole response, except that the first batch of the
//! first partition with data is returned whole even when it is larger, so a
//! consumer can always make progress.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::select_all;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::ResponseError;
use tokio::sync::watch;

use crate::storage::producer_state::AbortedTxn;
use tokio::time::Instant;
use uuid::Uuid;

use super::epochs::check_current_leader_epoch;
use super::errors::kafka_error;
use super::str_bytes;
use crate::broker::{Broker, Partition};
use crate::replication::EpochEndOffset;
use crate::storage::batch::BatchIter;
use crate::storage::records::MAX_DECOMPRESSED_BYTES;
use crate::storage::{legacy, ReadSlice};

/// Longest a fetch may wait for data, whatever the client asks.
const MAX_WAIT_MS: i32 = 30_000;

/// Most bytes of message format v0/v1 one partition of a Fetch v0-3 answer
/// is converted into (at least one batch is): converted sets are larger
/// than the batches they come from, and v0-2 have no response limit.
const MAX_DOWN_CONVERTED_BYTES: usize = 32 << 20;

struct Wanted {
    topic_name: TopicName,
    topic_id: Uuid,
    index: i32,
    fetch_offset: i64,
    partition_max_bytes: usize,
    target: Result<Arc<Partition>, ResponseError>,
    /// For a follower whose log diverged from the leader's: where it must
    /// truncate to (nothing is read).
    diverging: Option<EpochEndOffset>,
    /// A follower's fetch refused with the partition's offsets still in
    /// the answer (OFFSET_OUT_OF_RANGE: the follower resets from them).
    refused: Option<ResponseError>,
}

struct Planned {
    error: Option<ResponseError>,
    high_watermark: i64,
    last_stable: i64,
    log_start: i64,
    slice: Option<ReadSlice>,
    /// For read_committed: the aborted transactions with records in the
    /// slice.
    aborted: Vec<AbortedTxn>,
}

pub async fn handle(broker: &Arc<Broker>, request: FetchRequest, version: i16) -> FetchResponse {
    broker
        .metrics()
        .fetch_requests
        .fetch_add(1, Ordering::Relaxed);
    let mut response = FetchResponse::default();
    // Incremental fetch sessions (KIP-227) are not offered: session id 0 in
    // every response tells clients to keep sending full fetches.
    if version >= 7 && request.session_id != 0 {
        response.error_code = ResponseError::FetchSessionIdNotFound.code();
        return response;
    }
    let max_wait = Duration::from_millis(request.max_wait_ms.clamp(0, MAX_WAIT_MS) as u64);
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = if version >= 3 {
        request.max_bytes.max(0) as usize
    } else {
        i32::MAX as usize
    };
    let read_committed = request.isolation_level == 1;
    // A follower replicating (its broker id; consumers send -1).
    let replica = if version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    let follower = replica >= 0;

    let mut wanted = Vec::new();
    for topic in request.topics {
        let resolved = if version >= 13 {
            broker
                .topic_by_id(topic.topic_id)
                .ok_or(ResponseError::UnknownTopicId)
        } else {
            broker
                .topic(&topic.topic.0)
                .ok_or(ResponseError::UnknownTopicOrPartition)
        };
        for p in topic.partitions {
            let mut target = match &resolved {
                Err(e) => Err(*e),
                Ok(t) => match t.leader_partition(p.partition) {
                    Err(e) => Err(kafka_error(&e)),
                    Ok(partition) => {
                        let current = if version >= 9 {
                            p.current_leader_epoch
                        } else {
                            -1
                        };
                        check_current_leader_epoch(current, partition.leader_epoch())
                            .map(|()| partition)
                    }
                },
            };
            let mut diverging = None;
            let mut refused = None;
            if follower {
                if let Ok(partition) = &target {
                    let last_fetched_epoch = if version >= 12 {
                        p.last_fetched_epoch
                    } else {
                        -1
                    };
                    match partition.diverging_epoch(last_fetched_epoch, p.fetch_offset) {
                        Ok(Some(d)) => diverging = Some(d),
                        // The fetch offset is the follower's log end.
                        Ok(None) => {
                            if let Err(e) = partition.follower_fetched(replica, p.fetch_offset) {
                                match kafka_error(&e) {
                                    ResponseError::OffsetOutOfRange => {
                                        refused = Some(ResponseError::OffsetOutOfRange)
                                    }
                                    code => target = Err(code),
                                }
                            }
                        }
                        Err(_) => target = Err(ResponseError::OffsetOutOfRange),
                    }
                }
            }
            wanted.push(Wanted {
                topic_name: topic.topic.clone(),
                topic_id: topic.topic_id,
                index: p.partition,
                fetch_offset: p.fetch_offset,
                partition_max_bytes: p.partition_max_bytes.max(0) as usize,
                target,
                diverging,
                refused,
            });
        }
    }

    // Subscribe before the first look at the logs, so no append is missed.
    let mut watchers: Vec<watch::Receiver<i64>> = wanted
        .iter()
        .filter_map(|w| {
            w.target.as_ref().ok().map(|p| {
                if follower {
                    p.subscribe_appends()
                } else {
                    p.subscribe()
                }
            })
        })
        .collect();
    let deadline = Instant::now() + max_wait;
    let plans = loop {
        let (plans, total, any_error) = plan(&wanted, max_bytes, follower, read_committed);
        if total >= min_bytes || any_error || watchers.is_empty() || Instant::now() >= deadline {
            break plans;
        }
        let changed = select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
        tokio::select! {
            (result, _, _) = changed => {
                if result.is_err() {
                    // A partition went away (topic deleted): answer now.
                    break plan(&wanted, max_bytes, follower, read_committed).0;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {}
        }
    };

    let mut bytes_out = 0u64;
    for (w, planned) in wanted.into_iter().zip(plans) {
        let mut data = PartitionData::default();
        data.partition_index = w.index;
        data.high_watermark = planned.high_watermark;
        data.last_stable_offset = planned.last_stable;
        data.log_start_offset = planned.log_start;
        data.aborted_transactions = read_committed.then(|| {
            planned
                .aborted
                .iter()
                .map(|a| {
                    let mut t = AbortedTransaction::default();
                    t.producer_id = a.producer_id.into();
                    t.first_offset = a.first_offset;
                    t
                })
                .collect()
        });
        data.preferred_read_replica = (-1).into();
        if let Some(d) = w.diverging {
            data.diverging_epoch.epoch = d.epoch;
            data.diverging_epoch.end_offset = d.end_offset;
        }
        let mut error = planned.error;
        let mut records = match planned.slice {
            Some(slice) => match slice.read() {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::error!(topic = %w.topic_name.0, partition = w.index, error = %e, "reading segment failed");
                    error = Some(ResponseError::KafkaStorageError);
                    Bytes::new()
                }
            },
            None => Bytes::new(),
        };
        if !follower && !records.is_empty() {
            if let Ok(partition) = &w.target {
                let count: i64 = BatchIter::new(&records, false)
                    .map_while(Result::ok)
                    .map(|(_, header)| i64::from(header.records_count.max(0)))
                    .sum();
                partition
                    .counters
                    .fetched(records.len() as u64, count as u64);
            }
        }
        if version < 4 && !records.is_empty() {
            // Fetch v0-3 predate record format v2 (v0-1: message format
            // v0, v2-3: v1): the only place batches are re-encoded.
            let magic = if version >= 2 { 1 } else { 0 };
            let limit = w.partition_max_bytes.min(MAX_DOWN_CONVERTED_BYTES);
            match legacy::down_convert(
                &records,
                w.fetch_offset,
                magic,
                limit,
                MAX_DECOMPRESSED_BYTES,
            ) {
                Ok(converted) => records = converted,
                Err(e) => {
                    tracing::warn!(topic = %w.topic_name.0, partition = w.index, error = %e, "converting batches for an old fetch failed");
                    error = Some(ResponseError::CorruptMessage);
                    records = Bytes::new();
                }
            }
        }
        bytes_out += records.len() as u64;
        data.error_code = error.map_or(0, |e| e.code());
        if version >= 12 && error == Some(ResponseError::NotLeaderOrFollower) {
            // KIP-951: where the leader is now (node endpoints from v16).
            let name = match broker.topic_by_id(w.topic_id) {
                Some(t) if version >= 13 => t.name.to_string(),
                _ => w.topic_name.0.to_string(),
            };
            if let Some((leader, epoch, host, port)) =
                super::metadata::leader_hint(broker, &name, w.index)
            {
                data.current_leader.leader_id = BrokerId(leader);
                data.current_leader.leader_epoch = epoch;
                if version >= 16
                    && !response
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
        // Never null: librdkafka rejects a null record set.
        data.records = Some(records);
        let same_topic = response
            .responses
            .last()
            .is_some_and(|t: &FetchableTopicResponse| {
                if version >= 13 {
                    t.topic_id == w.topic_id
                } else {
                    t.topic == w.topic_name
                }
            });
        if !same_topic {
            let mut t = FetchableTopicResponse::default();
            t.topic = w.topic_name;
            t.topic_id = w.topic_id;
            response.responses.push(t);
        }
        if let Some(t) = response.responses.last_mut() {
            t.partitions.push(data);
        }
    }
    broker
        .metrics()
        .bytes_out
        .fetch_add(bytes_out, Ordering::Relaxed);
    response
}

/// Decides what each partition would return now. Returns the plans, the
/// total bytes planned, and whether any partition has an error (which makes
/// the fetch answer at once).
fn plan(
    wanted: &[Wanted],
    max_bytes: usize,
    follower: bool,
    read_committed: bool,
) -> (Vec<Planned>, usize, bool) {
    let mut total = 0usize;
    let mut any_error = false;
    let mut plans = Vec::with_capacity(wanted.len());
    for w in wanted {
        let mut planned = Planned {
            error: None,
            high_watermark: -1,
            last_stable: -1,
            log_start: -1,
            slice: None,
            aborted: Vec::new(),
        };
        match &w.target {
            Err(e) => {
                planned.error = Some(*e);
                any_error = true;
            }
            Ok(partition) => {
                let offsets = partition.offsets();
                planned.high_watermark = offsets.high_watermark;
                planned.last_stable = offsets.last_stable;
                planned.log_start = offsets.log_start;
                let budget = w.partition_max_bytes.min(max_bytes.saturating_sub(total));
                let first_with_data = total == 0;
                if w.diverging.is_some() || w.refused.is_some() {
                    // Answered at once: the follower truncates or resets first.
                    planned.error = w.refused;
                    any_error = true;
                } else if budget > 0 || first_with_data {
                    let read = if follower {
                        partition.read_for_follower(w.fetch_offset, budget)
                    } else {
                        partition.read_isolated(
                            w.fetch_offset,
                            budget,
                            first_with_data,
                            read_committed,
                        )
                    };
                    match read {
                        Ok(Some(slice)) => {
                            total += slice.len;
                            if read_committed {
                                planned.aborted =
                                    partition.aborted_between(w.fetch_offset, offsets.last_stable);
                            }
                            planned.slice = Some(slice);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            planned.error = Some(kafka_error(&e));
                            any_error = true;
                        }
                    }
                }
            }
        }
        plans.push(planned);
    }
    (plans, total, any_error)
}
