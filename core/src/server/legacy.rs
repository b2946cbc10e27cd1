//! Request versions Kafka 4.0 removed (KIP-896) and the `kafka-protocol`
//! crate no longer decodes, kept for the old tools that still send them
//! (Sarama before 1.27, kafka-go 0.2, Burrow, kafka-python with an old
//! `api_version`).
//!
//! Each old request is decoded into the current request type and answered
//! by the ordinary handler with its old version number, so the rules live in
//! one place; the handler reads the version where the semantics differ. The
//! one field the current types lost that changes an answer, OffsetCommit
//! v1's per-partition commit timestamp, travels next to the request in
//! [`LegacyFields`]. Responses are written in the old layout from the
//! current response type.
//!
//! Produce v0-2 and Fetch v0-3 (message format v0/v1) are in
//! `legacy_records`, which reads with this module's `Reader`.
//!
//! The old formats, field by field (all non-flexible: `string` is an i16
//! length and UTF-8 bytes, -1 for null; `[x]` is an i32 count and the
//! elements):
//! ```text
//! ListOffsets v0      request   replica_id i32, [topic string,
//!                                 [partition i32, timestamp i64, max_num_offsets i32]]
//!                     response  [topic string, [partition i32, error_code i16,
//!                                 old_style_offsets [i64]]]
//! OffsetCommit v0     request   group_id string, [topic string,
//!                                 [partition i32, offset i64, metadata string?]]
//! OffsetCommit v1     request   group_id string, generation_id i32, member_id string,
//!                                 [topic string, [partition i32, offset i64,
//!                                  commit_timestamp i64, metadata string?]]
//!                     response  (v0, v1) as v2: [topic string, [partition i32, error_code i16]]
//! OffsetFetch v0      request and response as v1
//! CreateTopics v0     request   [name string, num_partitions i32, replication_factor i16,
//!                                 [partition i32, [broker i32]], [config string, value string?]],
//!                               timeout_ms i32
//! CreateTopics v1     request   as v0, then validate_only bool (= v2)
//!                     response  v0: [name string, error_code i16]
//!                               v1: [name string, error_code i16, error_message string?]
//! DeleteTopics v0     request   as v1: [name string], timeout_ms i32
//!                     response  [name string, error_code i16]  (v1 without throttle_time_ms)
//! DescribeConfigs v0  request   [resource_type i8, resource_name string, [key string]?]
//!                     response  throttle_time_ms i32, [error_code i16, error_message string?,
//!                                 resource_type i8, resource_name string,
//!                                 [name string, value string?, read_only bool,
//!                                  is_default bool, is_sensitive bool]]
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// The oldest version of each API this module decodes; versions from there
/// up to the codec's floor are legacy.
const OLDEST: &[(ApiKey, i16)] = &[
    (ApiKey::ListOffsets, 0),
    (ApiKey::OffsetCommit, 0),
    (ApiKey::OffsetFetch, 0),
    (ApiKey::CreateTopics, 0),
    (ApiKey::DeleteTopics, 0),
    (ApiKey::DescribeConfigs, 0),
];

/// ConfigSource DEFAULT_CONFIG: what v0's `is_default` reports.
const SOURCE_DEFAULT: i8 = 5;

/// Whether `version` of `api` is one this module decodes (below the codec's
/// floor).
pub fn decodes(api: ApiKey, version: i16) -> bool {
    OLDEST
        .iter()
        .any(|(key, oldest)| *key == api && version >= *oldest)
        && version < api.valid_versions().min
}

/// The lowest version of `api` the broker can decode, this module included.
pub fn lowest_version(api: ApiKey) -> i16 {
    OLDEST
        .iter()
        .find(|(key, _)| *key == api)
        .map(|(_, oldest)| *oldest)
        .unwrap_or_else(|| api.valid_versions().min)
}

/// Fields of old versions that the current request types no longer have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyFields {
    /// OffsetCommit v1: the commit timestamp of each partition, in request
    /// order (topic by topic); -1 means "now".
    CommitTimestamps(Vec<Vec<i64>>),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LegacyError(String);

fn err<T>(what: impl Into<String>) -> Result<T, LegacyError> {
    Err(LegacyError(what.into()))
}

/// Reads the primitives of non-flexible versions, checking every length
/// against the bytes present before allocating.
pub(super) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(super) fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.remaining()
    }

    /// The next `len` bytes, as a slice of the frame (no copy).
    pub(super) fn bytes(&mut self, len: usize, what: &str) -> Result<Bytes, LegacyError> {
        self.need(len, what)?;
        Ok(self.buf.split_to(len))
    }

    fn need(&self, n: usize, what: &str) -> Result<(), LegacyError> {
        if self.buf.remaining() < n {
            return err(format!(
                "{what}: needs {n} bytes, {} left",
                self.buf.remaining()
            ));
        }
        Ok(())
    }

    fn i8(&mut self) -> Result<i8, LegacyError> {
        self.need(1, "int8")?;
        Ok(self.buf.get_i8())
    }

    fn bool(&mut self) -> Result<bool, LegacyError> {
        Ok(self.i8()? != 0)
    }

    pub(super) fn i16(&mut self) -> Result<i16, LegacyError> {
        self.need(2, "int16")?;
        Ok(self.buf.get_i16())
    }

    pub(super) fn i32(&mut self) -> Result<i32, LegacyError> {
        self.need(4, "int32")?;
        Ok(self.buf.get_i32())
    }

    pub(super) fn i64(&mut self) -> Result<i64, LegacyError> {
        self.need(8, "int64")?;
        Ok(self.buf.get_i64())
    }

    fn nullable_string(&mut self) -> Result<Option<StrBytes>, LegacyError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        self.need(len as usize, "string")?;
        let raw = self.buf.split_to(len as usize);
        StrBytes::from_utf8(raw)
            .map(Some)
            .map_err(|_| LegacyError("string is not UTF-8".into()))
    }

    pub(super) fn string(&mut self) -> Result<StrBytes, LegacyError> {
        self.nullable_string()?
            .ok_or_else(|| LegacyError("a non-nullable string is null".into()))
    }

    /// An array whose elements take at least `min_element_bytes` each:
    /// a count larger than the bytes present allow is refused before
    /// anything is allocated.
    fn nullable_array<T>(
        &mut self,
        min_element_bytes: usize,
        mut element: impl FnMut(&mut Self) -> Result<T, LegacyError>,
    ) -> Result<Option<Vec<T>>, LegacyError> {
        let count = self.i32()?;
        if count < 0 {
            return Ok(None);
        }
        let count = count as usize;
        if count.saturating_mul(min_element_bytes.max(1)) > self.buf.remaining() {
            return err(format!(
                "array of {count} elements does not fit in the {} bytes left",
                self.buf.remaining()
            ));
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(element(self)?);
        }
        Ok(Some(out))
    }

    pub(super) fn array<T>(
        &mut self,
        min_element_bytes: usize,
        element: impl FnMut(&mut Self) -> Result<T, LegacyError>,
    ) -> Result<Vec<T>, LegacyError> {
        self.nullable_array(min_element_bytes, element)?
            .ok_or_else(|| LegacyError("a non-nullable array is null".into()))
    }
}

fn put_string(out: &mut BytesMut, s: Option<&str>) {
    match s {
        None => out.put_i16(-1),
        Some(s) => {
            // Names and messages come from the broker and fit in an i16
            // length; cut anything longer rather than write a bad frame.
            let bytes = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
            out.put_i16(bytes.len() as i16);
            out.put_slice(bytes);
        }
    }
}

fn put_count(out: &mut BytesMut, n: usize) {
    out.put_i32(n.min(i32::MAX as usize) as i32);
}

/// Decodes the body of a legacy request (see [`decodes`]).
pub fn decode_body(
    api: ApiKey,
    version: i16,
    buf: Bytes,
) -> Result<(RequestKind, Option<LegacyFields>), LegacyError> {
    let codec = |e: anyhow::Error| LegacyError(e.to_string());
    let mut r = Reader { buf };
    match api {
        ApiKey::ListOffsets => {
            let mut request = ListOffsetsRequest::default();
            request.replica_id = BrokerId(r.i32()?);
            request.topics = r.array(6, |r| {
                let mut topic = ListOffsetsTopic::default();
                topic.name = TopicName(r.string()?);
                topic.partitions = r.array(16, |r| {
                    let mut p = ListOffsetsPartition::default();
                    p.partition_index = r.i32()?;
                    p.timestamp = r.i64()?;
                    // At most one offset is answered (see `encode_body`);
                    // every client sends 1.
                    let _max_num_offsets = r.i32()?;
                    Ok(p)
                })?;
                Ok(topic)
            })?;
            Ok((RequestKind::ListOffsets(request), None))
        }
        ApiKey::OffsetCommit => {
            let mut request = OffsetCommitRequest::default();
            request.group_id = GroupId(r.string()?);
            if version >= 1 {
                request.generation_id_or_member_epoch = r.i32()?;
                request.member_id = r.string()?;
            } else {
                // v0 commits are "simple" commits: no generation, no member.
                request.generation_id_or_member_epoch = -1;
                request.member_id = StrBytes::default();
            }
            let mut timestamps = Vec::new();
            let partition_bytes = if version >= 1 { 22 } else { 14 };
            request.topics = r.array(6, |r| {
                let mut topic = OffsetCommitRequestTopic::default();
                topic.name = TopicName(r.string()?);
                let mut topic_timestamps = Vec::new();
                topic.partitions = r.array(partition_bytes, |r| {
                    let mut p = OffsetCommitRequestPartition::default();
                    p.partition_index = r.i32()?;
                    p.committed_offset = r.i64()?;
                    if version >= 1 {
                        topic_timestamps.push(r.i64()?);
                    }
                    p.committed_metadata = r.nullable_string()?;
                    Ok(p)
                })?;
                timestamps.push(topic_timestamps);
                Ok(topic)
            })?;
            let legacy = (version >= 1).then_some(LegacyFields::CommitTimestamps(timestamps));
            Ok((RequestKind::OffsetCommit(request), legacy))
        }
        ApiKey::OffsetFetch => {
            // v0 is v1 on the wire (v0 read ZooKeeper in old Kafka).
            let request = OffsetFetchRequest::decode(&mut r.buf, 1).map_err(codec)?;
            Ok((RequestKind::OffsetFetch(request), None))
        }
        ApiKey::CreateTopics => {
            let mut request = CreateTopicsRequest::default();
            request.topics = r.array(18, |r| {
                let mut topic = CreatableTopic::default();
                topic.name = TopicName(r.string()?);
                topic.num_partitions = r.i32()?;
                topic.replication_factor = r.i16()?;
                topic.assignments = r.array(8, |r| {
                    let mut a = CreatableReplicaAssignment::default();
                    a.partition_index = r.i32()?;
                    a.broker_ids = r.array(4, |r| Ok(BrokerId(r.i32()?)))?;
                    Ok(a)
                })?;
                topic.configs = r.array(4, |r| {
                    let mut c = CreatableTopicConfig::default();
                    c.name = r.string()?;
                    c.value = r.nullable_string()?;
                    Ok(c)
                })?;
                Ok(topic)
            })?;
            request.timeout_ms = r.i32()?;
            request.validate_only = version >= 1 && r.bool()?;
            Ok((RequestKind::CreateTopics(request), None))
        }
        ApiKey::DeleteTopics => {
            let request = DeleteTopicsRequest::decode(&mut r.buf, 1).map_err(codec)?;
            Ok((RequestKind::DeleteTopics(request), None))
        }
        ApiKey::DescribeConfigs => {
            let mut request = DescribeConfigsRequest::default();
            request.resources = r.array(7, |r| {
                let mut resource = DescribeConfigsResource::default();
                resource.resource_type = r.i8()?;
                resource.resource_name = r.string()?;
                resource.configuration_keys = r.nullable_array(2, |r| r.string())?;
                Ok(resource)
            })?;
            Ok((RequestKind::DescribeConfigs(request), None))
        }
        other => err(format!("{other:?} v{version} is not a legacy version")),
    }
}

/// Writes the body of a legacy response (see [`decodes`]).
pub fn encode_body(
    api: ApiKey,
    version: i16,
    response: &ResponseKind,
    out: &mut BytesMut,
) -> Result<(), LegacyError> {
    let codec = |e: anyhow::Error| LegacyError(e.to_string());
    match (api, response) {
        (ApiKey::ListOffsets, ResponseKind::ListOffsets(r)) => {
            put_count(out, r.topics.len());
            for t in &r.topics {
                put_string(out, Some(&t.name.0));
                put_count(out, t.partitions.len());
                for p in &t.partitions {
                    out.put_i32(p.partition_index);
                    out.put_i16(p.error_code);
                    // The offset v1 would answer; none when there is none.
                    if p.error_code == 0 && p.offset >= 0 {
                        put_count(out, 1);
                        out.put_i64(p.offset);
                    } else {
                        put_count(out, 0);
                    }
                }
            }
            Ok(())
        }
        (ApiKey::OffsetCommit, ResponseKind::OffsetCommit(r)) => r.encode(out, 2).map_err(codec),
        (ApiKey::OffsetFetch, ResponseKind::OffsetFetch(r)) => r.encode(out, 1).map_err(codec),
        (ApiKey::CreateTopics, ResponseKind::CreateTopics(r)) => {
            put_count(out, r.topics.len());
            for t in &r.topics {
                put_string(out, Some(&t.name.0));
                out.put_i16(t.error_code);
                if version >= 1 {
                    put_string(out, t.error_message.as_deref());
                }
            }
            Ok(())
        }
        (ApiKey::DeleteTopics, ResponseKind::DeleteTopics(r)) => {
            put_count(out, r.responses.len());
            for t in &r.responses {
                put_string(
                    out,
                    Some(t.name.as_ref().map(|n| n.0.as_str()).unwrap_or("")),
                );
                out.put_i16(t.error_code);
            }
            Ok(())
        }
        (ApiKey::DescribeConfigs, ResponseKind::DescribeConfigs(r)) => {
            out.put_i32(r.throttle_time_ms);
            put_count(out, r.results.len());
            for result in &r.results {
                out.put_i16(result.error_code);
                put_string(out, result.error_message.as_deref());
                out.put_i8(result.resource_type);
                put_string(out, Some(&result.resource_name));
                put_count(out, result.configs.len());
                for c in &result.configs {
                    put_string(out, Some(&c.name));
                    put_string(out, c.value.as_deref());
                    out.put_u8(c.read_only as u8);
                    out.put_u8((c.config_source == SOURCE_DEFAULT) as u8);
                    out.put_u8(c.is_sensitive as u8);
                }
            }
            Ok(())
        }
        _ => err(format!(
            "{api:?} v{version}: no legacy encoding for this response"
        )),
    }
}

/// A valid body of each legacy request version, for the fuzz tests' seeds.
#[cfg(test)]
pub(crate) fn example_body(api: ApiKey, version: i16) -> BytesMut {
    let mut b = BytesMut::new();
    let s = |b: &mut BytesMut, v: &str| put_string(b, Some(v));
    match api {
        ApiKey::ListOffsets => {
            b.put_i32(-1);
            b.put_i32(1);
            s(&mut b, "fuzz");
            b.put_i32(1);
            b.put_i32(0);
            b.put_i64(-1);
            b.put_i32(1);
        }
        ApiKey::OffsetCommit => {
            s(&mut b, "group");
            if version >= 1 {
                b.put_i32(-1);
                s(&mut b, "");
            }
            b.put_i32(1);
            s(&mut b, "fuzz");
            b.put_i32(1);
            b.put_i32(0);
            b.put_i64(7);
            if version >= 1 {
                b.put_i64(-1);
            }
            s(&mut b, "meta");
        }
        ApiKey::OffsetFetch => {
            s(&mut b, "group");
            b.put_i32(1);
            s(&mut b, "fuzz");
            b.put_i32(1);
            b.put_i32(0);
        }
        ApiKey::CreateTopics => {
            b.put_i32(1);
            s(&mut b, "made-by-fuzz");
            b.put_i32(1);
            b.put_i16(1);
            b.put_i32(0);
            b.put_i32(1);
            s(&mut b, "retention.ms");
            s(&mut b, "1000");
            b.put_i32(1000);
            if version >= 1 {
                b.put_u8(1);
            }
        }
        ApiKey::DeleteTopics => {
            b.put_i32(1);
            s(&mut b, "no-such-topic");
            b.put_i32(1000);
        }
        ApiKey::DescribeConfigs => {
            b.put_i32(1);
            b.put_i8(2);
            s(&mut b, "fuzz");
            b.put_i32(-1);
        }
        other => panic!("no legacy example for {other:?}"),
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut BytesMut, s: &str) {
        put_string(out, Some(s));
    }

    #[test]
    fn only_versions_below_the_codecs_floor_are_legacy() {
        assert!(decodes(ApiKey::OffsetCommit, 0));
        assert!(decodes(ApiKey::OffsetCommit, 1));
        assert!(!decodes(ApiKey::OffsetCommit, 2));
        assert!(decodes(ApiKey::DescribeConfigs, 0));
        assert!(
            !decodes(ApiKey::Produce, 0),
            "old message formats are not here"
        );
        assert_eq!(lowest_version(ApiKey::ListOffsets), 0);
        assert_eq!(lowest_version(ApiKey::Fetch), 4);
    }

    #[test]
    fn an_offset_commit_v1_keeps_its_commit_timestamps() {
        let mut raw = BytesMut::new();
        string(&mut raw, "group");
        raw.put_i32(3); // generation
        string(&mut raw, "member-1");
        raw.put_i32(1);
        string(&mut raw, "orders");
        raw.put_i32(2);
        for (p, ts) in [(0, 1_000i64), (1, -1)] {
            raw.put_i32(p);
            raw.put_i64(42);
            raw.put_i64(ts);
            put_string(&mut raw, None);
        }
        let (body, legacy) = decode_body(ApiKey::OffsetCommit, 1, raw.freeze()).unwrap();
        let RequestKind::OffsetCommit(r) = body else {
            panic!("{body:?}")
        };
        assert_eq!(
            (r.generation_id_or_member_epoch, r.member_id.as_str()),
            (3, "member-1")
        );
        assert_eq!(r.topics[0].partitions[1].committed_offset, 42);
        assert_eq!(
            legacy,
            Some(LegacyFields::CommitTimestamps(vec![vec![1_000, -1]]))
        );
    }

    #[test]
    fn a_count_larger_than_the_bytes_present_is_refused_before_allocating() {
        let mut raw = BytesMut::new();
        raw.put_i32(-1); // replica id
        raw.put_i32(i32::MAX); // topics
        let e = decode_body(ApiKey::ListOffsets, 0, raw.freeze()).unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
        let truncated = Bytes::from_static(&[0, 5, b'g']);
        assert!(decode_body(ApiKey::OffsetCommit, 0, truncated).is_err());
    }

    #[test]
    fn describe_configs_v0_reports_defaults_as_is_default() {
        use kafka_protocol::messages::describe_configs_response::{
            DescribeConfigsResourceResult, DescribeConfigsResult,
        };
        let mut entry = DescribeConfigsResourceResult::default();
        entry.name = StrBytes::from_static_str("retention.ms");
        entry.value = Some(StrBytes::from_static_str("1000"));
        entry.config_source = SOURCE_DEFAULT;
        let mut result = DescribeConfigsResult::default();
        result.error_message = None;
        result.resource_type = 2;
        result.resource_name = StrBytes::from_static_str("t");
        result.configs = vec![entry];
        let mut response = DescribeConfigsResponse::default();
        response.results = vec![result];
        let mut out = BytesMut::new();
        encode_body(
            ApiKey::DescribeConfigs,
            0,
            &ResponseKind::DescribeConfigs(response),
            &mut out,
        )
        .unwrap();
        let mut expected = BytesMut::new();
        expected.put_i32(0); // throttle
        expected.put_i32(1);
        expected.put_i16(0);
        put_string(&mut expected, None);
        expected.put_i8(2);
        string(&mut expected, "t");
        expected.put_i32(1);
        string(&mut expected, "retention.ms");
        string(&mut expected, "1000");
        expected.put_slice(&[0, 1, 0]); // read_only, is_default, is_sensitive
        assert_eq!(out, expected);
    }
}
