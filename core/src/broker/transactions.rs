//! The broker's side of transactions: transaction markers written to the
//! partitions this broker leads (WriteTxnMarkers from any coordinator,
//! including its own), and [`BrokerTxnHost`], what the transaction
//! coordinator (`crate::txn`) asks of the broker — producer ids, and
//! markers sent to each partition's leader, in process or over the Kafka
//! protocol.
//!
//! A marker on a `__consumer_offsets` partition also ends the
//! transaction's offsets there in the group coordinator.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::metadata::Metadata;
use super::producer_ids::ProducerIdAllocator;
use crate::client::Client;
use crate::error::BrokerError;
use crate::group::{GroupCoordinator, OFFSETS_TOPIC};
use crate::internal_topic::codec::partition_for;
use crate::replication::{wait_for_acks_all, AcksAllWait};
use crate::storage::producer_state::SequenceError;
use crate::storage::AppendError;
use crate::txn::{Marker, MarkerOutcome, TxnHost};
use crate::util::lock;

/// Longest wait for the in-sync replicas to have a marker.
const MARKER_REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for another broker's answer to WriteTxnMarkers (its own
/// wait for the in-sync replicas, and some).
const REMOTE_MARKER_TIMEOUT: Duration = Duration::from_secs(40);

/// Writes `marker` to partition `index` of `topic`, which this broker must
/// lead, and waits until the in-sync replicas have it (as acks=all).
/// Fails with `UnknownTopic`/`UnknownPartition`, `NotLeaderOrFollower`, an
/// append error (a marker of a fenced epoch is `InvalidEpoch`), or
/// `NotCommitted` when the replicas did not get it in time.
pub async fn write_marker(
    metadata: &Metadata,
    groups: &GroupCoordinator,
    topic: &str,
    index: i32,
    marker: Marker,
) -> Result<(), BrokerError> {
    let partition = metadata
        .topic(topic)
        .ok_or_else(|| BrokerError::UnknownTopic(topic.to_string()))?
        .leader_partition(index)?;
    let leader_epoch = partition.leader_epoch();
    let info = partition
        .append_marker(
            marker.producer_id,
            marker.producer_epoch,
            marker.commit,
            marker.coordinator_epoch,
        )
        .await?;
    if topic == OFFSETS_TOPIC {
        groups
            .complete_txn(index, marker.producer_id, marker.commit)
            .await;
    }
    // Every in-sync replica, however few.
    match wait_for_acks_all(
        partition.replication_status(),
        leader_epoch,
        info.last_offset + 1,
        1,
        MARKER_REPLICATION_TIMEOUT,
    )
    .await
    {
        AcksAllWait::Done => Ok(()),
        AcksAllWait::NotLeader => Err(BrokerError::NotLeaderOrFollower(topic.to_string(), index)),
        waited @ (AcksAllWait::NotEnoughReplicasAfterAppend | AcksAllWait::Timeout) => {
            Err(BrokerError::NotCommitted(
                topic.to_string(),
                index,
                format!(
                    "transaction marker at offset {}: {waited:?}",
                    info.last_offset
                ),
            ))
        }
    }
}

/// What the transaction coordinator of this broker asks of it.
pub(super) struct BrokerTxnHost {
    pub(super) metadata: Arc<Metadata>,
    pub(super) groups: Arc<GroupCoordinator>,
    pub(super) producer_ids: Arc<ProducerIdAllocator>,
    pub(super) node_id: i32,
    /// One connection per other broker markers go to (opened on first
    /// use, dropped after an error).
    peers: Mutex<HashMap<i32, Arc<tokio::sync::Mutex<Option<Client>>>>>,
}

impl BrokerTxnHost {
    pub(super) fn new(
        metadata: Arc<Metadata>,
        groups: Arc<GroupCoordinator>,
        producer_ids: Arc<ProducerIdAllocator>,
        node_id: i32,
    ) -> BrokerTxnHost {
        BrokerTxnHost {
            metadata,
            groups,
            producer_ids,
            node_id,
            peers: Mutex::new(HashMap::new()),
        }
    }

    fn peer(&self, id: i32) -> Arc<tokio::sync::Mutex<Option<Client>>> {
        lock(&self.peers).entry(id).or_default().clone()
    }
}

/// What another broker's answer for a partition means for the
/// coordinator.
fn outcome(metadata: &Metadata, topic: &str, result: Result<(), ResponseError>) -> MarkerOutcome {
    match result {
        Ok(()) => MarkerOutcome::Written,
        Err(ResponseError::UnknownTopicOrPartition)
            if metadata.image().topic_by_name(topic).is_none() =>
        {
            MarkerOutcome::Gone
        }
        // The partition has seen a newer epoch of this producer: a newer
        // decision ended the transaction there already.
        Err(ResponseError::InvalidProducerEpoch) => MarkerOutcome::Written,
        Err(e) => MarkerOutcome::Retry(format!("{e:?}")),
    }
}

/// What a marker written here means for the coordinator.
fn local_outcome(
    metadata: &Metadata,
    topic: &str,
    result: Result<(), BrokerError>,
) -> MarkerOutcome {
    match result {
        Ok(()) => MarkerOutcome::Written,
        Err(BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition(..))
            if metadata.image().topic_by_name(topic).is_none() =>
        {
            MarkerOutcome::Gone
        }
        Err(BrokerError::Append(AppendError::Sequence(SequenceError::InvalidEpoch { .. }))) => {
            MarkerOutcome::Written
        }
        Err(e) => MarkerOutcome::Retry(e.to_string()),
    }
}

/// Sends one WriteTxnMarkers to broker `leader` for `partitions`.
async fn send_markers(
    connection: Arc<tokio::sync::Mutex<Option<Client>>>,
    address: String,
    marker: Marker,
    partitions: &[(String, i32)],
) -> Result<Vec<((String, i32), Result<(), ResponseError>)>, String> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        topics.entry(t).or_default().push(*p);
    }
    let mut request = WriteTxnMarkersRequest::default();
    let mut m = WritableTxnMarker::default();
    m.producer_id = ProducerId(marker.producer_id);
    m.producer_epoch = marker.producer_epoch;
    m.transaction_result = marker.commit;
    m.coordinator_epoch = marker.coordinator_epoch;
    m.topics = topics
        .into_iter()
        .map(|(name, indexes)| {
            let mut t = WritableTxnMarkerTopic::default();
            t.name = TopicName(StrBytes::from_string(name.to_string()));
            t.partition_indexes = indexes;
            t
        })
        .collect();
    request.markers = vec![m];
    let mut slot = connection.lock().await;
    if slot.is_none() {
        let mut client = Client::connect(&address, "runnel-txn-markers")
            .await
            .map_err(|e| format!("connecting to {address}: {e}"))?;
        client.set_timeout(REMOTE_MARKER_TIMEOUT);
        *slot = Some(client);
    }
    let Some(client) = slot.as_mut() else {
        return Err("no connection".into());
    };
    let response = match client.send(&request).await {
        Ok(r) => r,
        Err(e) => {
            *slot = None;
            return Err(format!("WriteTxnMarkers to {address}: {e}"));
        }
    };
    let mut results = Vec::new();
    for m in response.markers {
        for t in m.topics {
            for p in t.partitions {
                let result = match ResponseError::try_from_code(p.error_code) {
                    None => Ok(()),
                    Some(e) => Err(e),
                };
                results.push(((t.name.0.to_string(), p.partition_index), result));
            }
        }
    }
    Ok(results)
}

impl TxnHost for BrokerTxnHost {
    fn allocate_producer_id(&self) -> BoxFuture<'static, Result<i64, BrokerError>> {
        let metadata = self.metadata.clone();
        let ids = self.producer_ids.clone();
        Box::pin(async move { ids.allocate(|| metadata.allocate_producer_ids()).await })
    }

    fn write_markers(
        &self,
        marker: Marker,
        partitions: Vec<(String, i32)>,
    ) -> BoxFuture<'static, Vec<((String, i32), MarkerOutcome)>> {
        let metadata = self.metadata.clone();
        let groups = self.groups.clone();
        let node_id = self.node_id;
        // Partitions by the broker that leads them now.
        let mut by_leader: BTreeMap<i32, (String, Vec<(String, i32)>)> = BTreeMap::new();
        let mut outcomes = Vec::new();
        for (topic, index) in partitions {
            match metadata.partition_leader(&topic, index) {
                Some((leader, _, listener)) => by_leader
                    .entry(leader)
                    .or_insert_with(|| (listener, Vec::new()))
                    .1
                    .push((topic, index)),
                None if metadata.image().topic_by_name(&topic).is_none() => {
                    outcomes.push(((topic, index), MarkerOutcome::Gone))
                }
                None => outcomes.push((
                    (topic, index),
                    MarkerOutcome::Retry("the partition has no live leader".into()),
                )),
            }
        }
        let remote: Vec<_> = by_leader
            .into_iter()
            .map(|(leader, (address, partitions))| {
                let connection = (leader != node_id).then(|| self.peer(leader));
                (connection, address, partitions)
            })
            .collect();
        Box::pin(async move {
            let sends = remote.into_iter().map(|(connection, address, partitions)| {
                let metadata = metadata.clone();
                let groups = groups.clone();
                async move {
                    let mut done = Vec::new();
                    match connection {
                        None => {
                            for (topic, index) in partitions {
                                let result =
                                    write_marker(&metadata, &groups, &topic, index, marker).await;
                                let o = local_outcome(&metadata, &topic, result);
                                done.push(((topic, index), o));
                            }
                        }
                        Some(connection) => {
                            match send_markers(connection, address, marker, &partitions).await {
                                Ok(results) => {
                                    for ((topic, index), result) in results {
                                        let o = outcome(&metadata, &topic, result);
                                        done.push(((topic, index), o));
                                    }
                                }
                                Err(why) => {
                                    for tp in partitions {
                                        done.push((tp, MarkerOutcome::Retry(why.clone())));
                                    }
                                }
                            }
                        }
                    }
                    done
                }
            });
            for done in futures::future::join_all(sends).await {
                outcomes.extend(done);
            }
            outcomes
        })
    }

    fn partition_exists(&self, topic: &str, index: i32) -> bool {
        self.metadata
            .image()
            .topic_by_name(topic)
            .is_some_and(|t| t.partitions.contains_key(&index))
    }

    fn offsets_partition(&self, group: &str) -> Option<(String, i32)> {
        let count = self
            .metadata
            .image()
            .topic_by_name(OFFSETS_TOPIC)?
            .partitions
            .len() as i32;
        Some((OFFSETS_TOPIC.to_string(), partition_for(group, count)))
    }
}
