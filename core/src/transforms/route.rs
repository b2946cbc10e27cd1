//! Where a transform's reads and writes go. What this broker leads is
//! reached in process: appends to the partition (returning once the
//! in-sync replicas have the records), progress in the local group
//! coordinator, output tails read from the log. What another broker leads
//! is reached over the Kafka protocol (`crate::client`): Produce with
//! acks=all to the partition's leader, OffsetCommit / OffsetFetch to the
//! group's coordinator, ListOffsets and Fetch to read an output tail.
//!
//! A single node only ever takes the local paths.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, ProduceRequest, ProduceResponse,
    TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::ResponseError;

use super::{read_batches, TransformRecord, HEADER_SOURCE, HEADER_TRANSFORM};
use crate::broker::Broker;
use crate::client::Client;
use crate::group::records::OffsetValue;
use crate::internal_topic::InternalPartition;
use crate::util::{lock, now_ms};

/// How long a remote request may take (a Produce waits for the ISR).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes asked for per Fetch of an output tail.
const TAIL_FETCH_BYTES: i32 = 4 << 20;

/// One connection per broker, used one request at a time.
type Connection = Arc<tokio::sync::Mutex<Option<Client>>>;

pub(super) struct Route {
    broker: Arc<Broker>,
    connections: Mutex<HashMap<i32, Connection>>,
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn code_error(what: &str, code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{what}: {e:?}"),
        None => format!("{what}: error code {code}"),
    }
}

impl Route {
    pub(super) fn new(broker: Arc<Broker>) -> Route {
        Route {
            broker,
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// The live broker leading `topic`-`partition`: (id, listener).
    fn leader_of(&self, topic: &str, partition: i32) -> Result<(i32, String), String> {
        self.broker
            .metadata()
            .partition_leader(topic, partition)
            .map(|(leader, _, listener)| (leader, listener))
            .ok_or_else(|| format!("partition {partition} of '{topic}' has no live leader"))
    }

    /// The live broker coordinating `group`: (id, listener).
    fn coordinator_of(&self, group: &str) -> Result<(i32, String), String> {
        self.broker
            .metadata()
            .group_coordinator(group)
            .ok_or_else(|| format!("group '{group}' has no live coordinator"))
    }

    /// Sends `request` at `version` to broker `node`, connecting first if
    /// needed; a failed exchange drops the connection.
    async fn send<R: Request>(
        &self,
        (node, addr): &(i32, String),
        request: &R,
        version: i16,
    ) -> Result<R::Response, String> {
        let node = *node;
        let connection = lock(&self.connections).entry(node).or_default().clone();
        let mut slot = connection.lock().await;
        if slot.is_none() {
            let name = format!("runnel-transforms-{}", self.broker.node_id());
            let mut client = Client::connect(addr, &name)
                .await
                .map_err(|e| format!("connecting to broker {node} at {addr}: {e}"))?;
            client.set_timeout(REQUEST_TIMEOUT);
            *slot = Some(client);
        }
        let client = slot.as_mut().expect("connected above");
        match client.send_version(request, version).await {
            Ok(response) => Ok(response),
            Err(e) => {
                *slot = None;
                Err(format!("request to broker {node} at {addr}: {e}"))
            }
        }
    }

    /// Appends `batch` to `topic`-`partition`; returns once the in-sync
    /// replicas have it.
    pub(super) async fn append(
        &self,
        topic: &str,
        partition: i32,
        batch: Bytes,
    ) -> Result<(), String> {
        if let Ok(local) = self.broker.partition(topic, partition) {
            if local.is_leader() {
                return InternalPartition::append(local, batch)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
            }
        }
        let leader = self.leader_of(topic, partition)?;
        let mut data = PartitionProduceData::default();
        data.index = partition;
        data.records = Some(batch);
        let mut t = TopicProduceData::default();
        t.name = TopicName(str_bytes(topic));
        t.partition_data = vec![data];
        let mut request = ProduceRequest::default();
        request.acks = -1;
        request.timeout_ms = REQUEST_TIMEOUT.as_millis() as i32;
        request.topic_data = vec![t];
        let response: ProduceResponse = self.send(&leader, &request, 9).await?;
        let code = response
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .map_or(ResponseError::UnknownServerError.code(), |p| p.error_code);
        if code != 0 {
            return Err(code_error(
                &format!(
                    "producing to partition {partition} of '{topic}' on broker {}",
                    leader.0
                ),
                code,
            ));
        }
        Ok(())
    }

    /// The offsets `group` committed for the partitions of `topic`.
    pub(super) async fn committed(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<HashMap<i32, i64>, String> {
        let of_topic = |offsets: HashMap<(String, i32), OffsetValue>| {
            offsets
                .into_iter()
                .filter(|((t, _), _)| t == topic)
                .map(|((_, p), v)| (p, v.offset))
                .collect()
        };
        match self.broker.groups().fetch_offsets(group) {
            Ok(offsets) => return Ok(of_topic(offsets)),
            Err(ResponseError::NotCoordinator) => {}
            Err(e) => return Err(format!("committed offsets of '{group}': {e:?}")),
        }
        let coordinator = self.coordinator_of(group)?;
        let mut request = OffsetFetchRequest::default();
        request.group_id = str_bytes(group).into();
        request.topics = None;
        let response: OffsetFetchResponse = self.send(&coordinator, &request, 7).await?;
        if response.error_code != 0 {
            return Err(code_error(
                &format!("committed offsets of '{group}' on broker {}", coordinator.0),
                response.error_code,
            ));
        }
        let mut offsets = HashMap::new();
        for t in response
            .topics
            .iter()
            .filter(|t| t.name.0.as_str() == topic)
        {
            for p in &t.partitions {
                if p.error_code == 0 && p.committed_offset >= 0 {
                    offsets.insert(p.partition_index, p.committed_offset);
                }
            }
        }
        Ok(offsets)
    }

    /// Commits `next` as `group`'s position in `topic`-`partition`.
    pub(super) async fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        next: i64,
    ) -> Result<(), String> {
        let coordinators = self.broker.groups();
        if coordinators.check_coordinator(group).is_ok() {
            let value = OffsetValue {
                offset: next,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: now_ms(),
            };
            return coordinators
                .commit_offsets(group, vec![((topic.to_string(), partition), value)])
                .await
                .map_err(|e| format!("committing progress: {e}"));
        }
        let coordinator = self.coordinator_of(group)?;
        let mut p = OffsetCommitRequestPartition::default();
        p.partition_index = partition;
        p.committed_offset = next;
        p.committed_leader_epoch = -1;
        p.committed_metadata = Some(StrBytes::new());
        let mut t = OffsetCommitRequestTopic::default();
        t.name = TopicName(str_bytes(topic));
        t.partitions = vec![p];
        let mut request = OffsetCommitRequest::default();
        request.group_id = str_bytes(group).into();
        // A simple commit: no generation, no member.
        request.generation_id_or_member_epoch = -1;
        request.member_id = StrBytes::new();
        request.topics = vec![t];
        let response: OffsetCommitResponse = self.send(&coordinator, &request, 8).await?;
        let code = response
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .map_or(ResponseError::UnknownServerError.code(), |p| p.error_code);
        if code != 0 {
            return Err(code_error(
                &format!(
                    "committing progress of '{group}' on broker {}",
                    coordinator.0
                ),
                code,
            ));
        }
        Ok(())
    }

    /// The last source offset of `input_partition` that transform `name`
    /// wrote to `topic`-`partition`, found in the output partition's tail
    /// (about the last `scan_bytes` of it locally; the last `scan_records`
    /// on another broker).
    pub(super) async fn last_written_source(
        &self,
        name: &str,
        topic: &str,
        partition: i32,
        input_partition: i32,
        scan_bytes: u64,
        scan_records: i64,
    ) -> Result<Option<i64>, String> {
        let mut last = LastSource::new(name, input_partition);
        if let Ok(local) = self.broker.partition(topic, partition) {
            if local.is_leader() {
                let bounds = local.offsets();
                let mut position = bounds.log_start;
                // Skip to roughly the last `scan_bytes`: walk from the start
                // only when the partition is small.
                if local.size_bytes() > scan_bytes {
                    let approx = (bounds.high_watermark - bounds.log_start) as u64 * scan_bytes
                        / local.size_bytes().max(1);
                    position = (bounds.high_watermark - approx as i64).max(bounds.log_start);
                }
                while position < bounds.high_watermark {
                    let Ok((records, next)) = super::read_records(&local, position, 4 << 20) else {
                        break;
                    };
                    last.see(&records);
                    if next <= position {
                        break;
                    }
                    position = next;
                }
                return Ok(last.found);
            }
        }
        let leader = self.leader_of(topic, partition)?;
        let (log_start, end) = self.bounds(&leader, topic, partition).await?;
        let mut position = (end - scan_records).max(log_start);
        while position < end {
            let mut p = FetchPartition::default();
            p.partition = partition;
            p.fetch_offset = position;
            p.partition_max_bytes = TAIL_FETCH_BYTES;
            p.current_leader_epoch = -1;
            p.last_fetched_epoch = -1;
            p.log_start_offset = -1;
            let mut t = FetchTopic::default();
            t.topic = TopicName(str_bytes(topic));
            t.partitions = vec![p];
            let mut request = FetchRequest::default();
            request.replica_id = (-1).into();
            request.max_wait_ms = 0;
            request.min_bytes = 0;
            request.max_bytes = TAIL_FETCH_BYTES;
            request.topics = vec![t];
            let response: FetchResponse = self.send(&leader, &request, 12).await?;
            let Some(answer) = response
                .responses
                .first()
                .and_then(|t| t.partitions.first())
            else {
                return Err("an empty fetch answer".into());
            };
            if answer.error_code != 0 {
                return Err(code_error(
                    &format!("reading the tail of partition {partition} of '{topic}'"),
                    answer.error_code,
                ));
            }
            let bytes = answer.records.clone().unwrap_or_default();
            let (records, next) =
                read_batches(&bytes, position).map_err(|e| format!("reading the tail: {e}"))?;
            last.see(&records);
            if next <= position {
                break;
            }
            position = next;
        }
        Ok(last.found)
    }

    /// (log start, high watermark) of a partition on its leader.
    async fn bounds(
        &self,
        leader: &(i32, String),
        topic: &str,
        partition: i32,
    ) -> Result<(i64, i64), String> {
        let mut offsets = [0i64; 2];
        for (slot, timestamp) in [(0, -2i64), (1, -1i64)] {
            let mut p = ListOffsetsPartition::default();
            p.partition_index = partition;
            p.timestamp = timestamp;
            p.current_leader_epoch = -1;
            let mut t = ListOffsetsTopic::default();
            t.name = TopicName(str_bytes(topic));
            t.partitions = vec![p];
            let mut request = ListOffsetsRequest::default();
            request.replica_id = (-1).into();
            request.topics = vec![t];
            let response: ListOffsetsResponse = self.send(leader, &request, 7).await?;
            let answer = response
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .ok_or("an empty ListOffsets answer")?;
            if answer.error_code != 0 {
                return Err(code_error(
                    &format!("offsets of partition {partition} of '{topic}'"),
                    answer.error_code,
                ));
            }
            offsets[slot] = answer.offset;
        }
        Ok((offsets[0], offsets[1]))
    }
}

/// The highest source offset of one input partition among a transform's
/// output records.
struct LastSource<'a> {
    name: &'a str,
    prefix: String,
    found: Option<i64>,
}

impl<'a> LastSource<'a> {
    fn new(name: &'a str, input_partition: i32) -> LastSource<'a> {
        LastSource {
            name,
            prefix: format!("{input_partition}:"),
            found: None,
        }
    }

    fn see(&mut self, records: &[TransformRecord]) {
        for r in records {
            let ours = r
                .headers
                .iter()
                .any(|(k, v)| k == HEADER_TRANSFORM && v.as_deref() == Some(self.name.as_bytes()));
            if !ours {
                continue;
            }
            let offset = r
                .headers
                .iter()
                .find(|(k, _)| k == HEADER_SOURCE)
                .and_then(|(_, v)| v.as_ref())
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.strip_prefix(&self.prefix))
                .and_then(|o| o.parse::<i64>().ok());
            if let Some(offset) = offset {
                self.found = Some(self.found.map_or(offset, |l| l.max(offset)));
            }
        }
    }
}
