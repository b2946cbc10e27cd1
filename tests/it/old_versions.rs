//! Request versions Kafka 4.0 removed (KIP-896) that old tools still send
//! (Sarama 1.22, kafka-go 0.2, Burrow, kafka-python with an old
//! `api_version`): each is written byte by byte here, from the protocol
//! guide, and sent through the raw client.

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, GroupId, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::FutureRecord;
use runnel_core::client::Client;

use crate::harness::TestBroker;

/// Writes non-flexible request bodies.
#[derive(Default)]
struct Body(BytesMut);

impl Body {
    fn i8(mut self, v: i8) -> Self {
        self.0.put_i8(v);
        self
    }
    fn i16(mut self, v: i16) -> Self {
        self.0.put_i16(v);
        self
    }
    fn i32(mut self, v: i32) -> Self {
        self.0.put_i32(v);
        self
    }
    fn i64(mut self, v: i64) -> Self {
        self.0.put_i64(v);
        self
    }
    fn str(mut self, v: Option<&str>) -> Self {
        match v {
            None => self.0.put_i16(-1),
            Some(s) => {
                self.0.put_i16(s.len() as i16);
                self.0.put_slice(s.as_bytes());
            }
        }
        self
    }
    fn s(self, v: &str) -> Self {
        self.str(Some(v))
    }
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Reads non-flexible response bodies.
struct Reply(Bytes);

impl Reply {
    fn i8(&mut self) -> i8 {
        self.0.get_i8()
    }
    fn i16(&mut self) -> i16 {
        self.0.get_i16()
    }
    fn i32(&mut self) -> i32 {
        self.0.get_i32()
    }
    fn i64(&mut self) -> i64 {
        self.0.get_i64()
    }
    fn str(&mut self) -> Option<String> {
        let len = self.0.get_i16();
        if len < 0 {
            return None;
        }
        let raw = self.0.split_to(len as usize);
        Some(String::from_utf8(raw.to_vec()).unwrap())
    }
    fn s(&mut self) -> String {
        self.str().unwrap()
    }
    fn done(&self) {
        assert!(self.0.is_empty(), "{} bytes left over", self.0.len());
    }
}

async fn send(client: &mut Client, api: ApiKey, version: i16, body: &Body) -> Reply {
    Reply(
        client
            .send_raw(api as i16, version, body.bytes())
            .await
            .unwrap_or_else(|e| panic!("{api:?} v{version}: {e}")),
    )
}

/// CreateTopics v0/v1 for one topic; (error code, message for v1).
async fn create_topic(
    client: &mut Client,
    version: i16,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> (i16, Option<String>) {
    let mut body = Body::default()
        .i32(1)
        .s(name)
        .i32(partitions)
        .i16(1)
        .i32(0)
        .i32(configs.len() as i32);
    for (k, v) in configs {
        body = body.s(k).s(v);
    }
    body = body.i32(10_000);
    if version >= 1 {
        body = body.i8(validate_only as i8);
    }
    let mut reply = send(client, ApiKey::CreateTopics, version, &body).await;
    assert_eq!(reply.i32(), 1);
    assert_eq!(reply.s(), name);
    let code = reply.i16();
    // A success may carry a null or an empty message.
    let message = if version >= 1 {
        reply.str().filter(|m| !m.is_empty())
    } else {
        None
    };
    reply.done();
    (code, message)
}

/// ListOffsets v0 for one partition: (error code, old-style offsets).
async fn list_offsets_v0(
    client: &mut Client,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> (i16, Vec<i64>) {
    let body = Body::default()
        .i32(-1)
        .i32(1)
        .s(topic)
        .i32(1)
        .i32(partition)
        .i64(timestamp)
        .i32(1);
    let mut reply = send(client, ApiKey::ListOffsets, 0, &body).await;
    assert_eq!((reply.i32(), reply.s()), (1, topic.to_string()));
    assert_eq!((reply.i32(), reply.i32()), (1, partition));
    let code = reply.i16();
    let offsets = (0..reply.i32()).map(|_| reply.i64()).collect();
    reply.done();
    (code, offsets)
}

/// OffsetCommit v0 (no generation) or v1 (with commit timestamps) of
/// (partition, offset, commit timestamp) entries; the error codes.
async fn commit(
    client: &mut Client,
    version: i16,
    group: &str,
    topic: &str,
    entries: &[(i32, i64, i64)],
) -> Vec<i16> {
    let mut body = Body::default().s(group);
    if version >= 1 {
        body = body.i32(-1).s("");
    }
    body = body.i32(1).s(topic).i32(entries.len() as i32);
    for (partition, offset, timestamp) in entries {
        body = body.i32(*partition).i64(*offset);
        if version >= 1 {
            body = body.i64(*timestamp);
        }
        body = body.s("from an old client");
    }
    let mut reply = send(client, ApiKey::OffsetCommit, version, &body).await;
    assert_eq!((reply.i32(), reply.s()), (1, topic.to_string()));
    let codes = (0..reply.i32())
        .map(|_| {
            reply.i32();
            reply.i16()
        })
        .collect();
    reply.done();
    codes
}

/// OffsetFetch v0 of partitions: (partition, offset, metadata, error).
async fn fetch_offsets_v0(
    client: &mut Client,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Vec<(i32, i64, Option<String>, i16)> {
    let mut body = Body::default()
        .s(group)
        .i32(1)
        .s(topic)
        .i32(partitions.len() as i32);
    for p in partitions {
        body = body.i32(*p);
    }
    let mut reply = send(client, ApiKey::OffsetFetch, 0, &body).await;
    assert_eq!((reply.i32(), reply.s()), (1, topic.to_string()));
    let out = (0..reply.i32())
        .map(|_| (reply.i32(), reply.i64(), reply.str(), reply.i16()))
        .collect();
    reply.done();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_tools_requests_of_versions_kafka_4_removed_are_answered() {
    let broker = TestBroker::start_with_config(
        "offsets_retention_minutes: 1\noffsets_retention_check_interval_ms: 200\n",
        &[],
    );
    let mut client = broker.client().await;

    // ApiVersions advertises the old versions.
    let versions = client
        .send_version(&ApiVersionsRequest::default(), 0)
        .await
        .unwrap();
    for api in [
        ApiKey::ListOffsets,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::CreateTopics,
        ApiKey::DeleteTopics,
        ApiKey::DescribeConfigs,
    ] {
        let range = versions
            .api_keys
            .iter()
            .find(|k| k.api_key == api as i16)
            .unwrap();
        assert_eq!(range.min_version, 0, "{api:?}");
    }

    // CreateTopics v0 and v1 (validate_only, errors with messages).
    assert_eq!(
        create_topic(
            &mut client,
            0,
            "legacy",
            2,
            &[("retention.ms", "3600000")],
            false
        )
        .await,
        (0, None)
    );
    assert_eq!(
        create_topic(&mut client, 1, "checked", 3, &[], true).await,
        (0, None)
    );
    let (code, _) = create_topic(&mut client, 0, "legacy", 2, &[], false).await;
    assert_eq!(code, 36, "TOPIC_ALREADY_EXISTS");
    let (code, message) =
        create_topic(&mut client, 1, "bad", 1, &[("retention.ms", "soon")], false).await;
    assert_eq!(code, 40, "INVALID_CONFIG");
    assert!(message.unwrap().contains("retention.ms"));

    let producer = broker.producer(&[]);
    for i in 0..5 {
        producer
            .send(
                FutureRecord::<(), _>::to("legacy")
                    .partition(0)
                    .payload(&format!("r{i}")),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    // ListOffsets v0: latest and earliest as one old-style offset each.
    assert_eq!(
        list_offsets_v0(&mut client, "legacy", 0, -1).await,
        (0, vec![5])
    );
    assert_eq!(
        list_offsets_v0(&mut client, "legacy", 0, -2).await,
        (0, vec![0])
    );
    assert_eq!(
        list_offsets_v0(&mut client, "legacy", 1, -1).await,
        (0, vec![0])
    );
    assert_eq!(
        list_offsets_v0(&mut client, "legacy", 0, -3).await,
        (35, vec![]),
        "v0 knows only latest and earliest: UNSUPPORTED_VERSION"
    );
    assert_eq!(
        list_offsets_v0(&mut client, "legacy", 7, -1).await,
        (3, vec![]),
        "UNKNOWN_TOPIC_OR_PARTITION"
    );

    // OffsetCommit v0 and OffsetFetch v0.
    assert_eq!(
        commit(&mut client, 0, "old", "legacy", &[(0, 3, 0)]).await,
        vec![0]
    );
    assert_eq!(
        fetch_offsets_v0(&mut client, "old", "legacy", &[0, 1]).await,
        vec![
            (0, 3, Some("from an old client".into()), 0),
            (1, -1, Some(String::new()), 0)
        ]
    );

    // OffsetCommit v1: a commit timestamp ten minutes old expires with a
    // one-minute retention; "-1" (now) does not.
    let ten_minutes_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 600_000;
    assert_eq!(
        commit(
            &mut client,
            1,
            "old-v1",
            "legacy",
            &[(0, 4, ten_minutes_ago), (1, 2, -1)]
        )
        .await,
        vec![0, 0]
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let offsets = fetch_offsets_v0(&mut client, "old-v1", "legacy", &[0, 1]).await;
        let (p0, p1) = (offsets[0].1, offsets[1].1);
        assert_eq!(p1, 2, "the commit made now is kept");
        if p0 == -1 {
            break;
        }
        assert_eq!(p0, 4);
        assert!(
            Instant::now() < deadline,
            "the commit timestamped ten minutes ago never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The current version reads what v1 wrote.
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(StrBytes::from_static_str("legacy"));
    t.partition_indexes = vec![1];
    let mut fetch = OffsetFetchRequest::default();
    fetch.group_id = GroupId(StrBytes::from_static_str("old-v1"));
    fetch.topics = Some(vec![t]);
    let response = client.send_version(&fetch, 7).await.unwrap();
    assert_eq!(response.topics[0].partitions[0].committed_offset, 2);

    // DescribeConfigs v0: is_default instead of a source.
    let body = Body::default()
        .i32(1)
        .i8(2)
        .s("legacy")
        .i32(2)
        .s("retention.ms")
        .s("cleanup.policy");
    let mut reply = send(&mut client, ApiKey::DescribeConfigs, 0, &body).await;
    assert_eq!(reply.i32(), 0, "throttle time");
    assert_eq!(reply.i32(), 1);
    assert_eq!(reply.i16(), 0);
    assert_eq!(reply.str().unwrap_or_default(), "");
    assert_eq!((reply.i8(), reply.s()), (2, "legacy".to_string()));
    let mut entries = Vec::new();
    for _ in 0..reply.i32() {
        let name = reply.s();
        let value = reply.str();
        let (read_only, is_default, sensitive) = (reply.i8(), reply.i8(), reply.i8());
        entries.push((name, value, read_only, is_default, sensitive));
    }
    reply.done();
    entries.sort();
    assert_eq!(
        entries,
        vec![
            ("cleanup.policy".into(), Some("delete".into()), 0, 1, 0),
            ("retention.ms".into(), Some("3600000".into()), 0, 0, 0),
        ]
    );

    // DeleteTopics v0.
    let body = Body::default()
        .i32(2)
        .s("legacy")
        .s("never-made")
        .i32(10_000);
    let mut reply = send(&mut client, ApiKey::DeleteTopics, 0, &body).await;
    let mut results: Vec<(String, i16)> =
        (0..reply.i32()).map(|_| (reply.s(), reply.i16())).collect();
    reply.done();
    results.sort();
    assert_eq!(
        results,
        vec![("legacy".to_string(), 0), ("never-made".to_string(), 3)]
    );
    assert_eq!(
        list_offsets_v0(&mut client, "legacy", 0, -1).await.0,
        3,
        "the topic is gone"
    );
}
