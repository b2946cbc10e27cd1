//! Clients of the message format v0/v1 era: Produce v0-2 carry message sets
//! (magic 0 and 1, possibly compressed wrapper messages) and Fetch v0-3
//! expects them back. The broker stores v2 batches and converts on the way
//! in and out; these tests speak the old formats with hand-built frames.
//!
//! ```text
//! message set:  (offset i64 | message_size i32 | message)*
//! message:      crc u32 (CRC-32 of the rest) | magic i8 | attributes i8
//!               | timestamp i64 (magic 1 only) | key bytes | value bytes
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Snappy};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType, IEEE,
};
use rdkafka::message::Message;
use runnel_core::client::Client;

use crate::harness::{create_topic, latest_offset, stored_codecs, TestBroker};

/// One message as the tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    /// -1 for magic 0.
    timestamp: i64,
}

fn msg(key: Option<&str>, value: Option<&str>, timestamp: i64) -> Msg {
    Msg {
        offset: 0,
        key: key.map(|k| k.as_bytes().to_vec()),
        value: value.map(|v| v.as_bytes().to_vec()),
        timestamp,
    }
}

fn put_bytes(buf: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            buf.put_i32(b.len() as i32);
            buf.put_slice(b);
        }
        None => buf.put_i32(-1),
    }
}

/// Encodes one message (offset and size included).
fn encode_message(
    buf: &mut BytesMut,
    offset: i64,
    magic: i8,
    attributes: i8,
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let mut body = BytesMut::new();
    body.put_i8(magic);
    body.put_i8(attributes);
    if magic == 1 {
        body.put_i64(timestamp);
    }
    put_bytes(&mut body, key);
    put_bytes(&mut body, value);
    buf.put_i64(offset);
    buf.put_i32(body.len() as i32 + 4);
    buf.put_u32(IEEE.checksum(&body));
    buf.put_slice(&body);
}

/// An uncompressed message set; offsets 0.. (the broker assigns its own).
fn message_set(magic: i8, msgs: &[Msg]) -> Bytes {
    let mut buf = BytesMut::new();
    for (i, m) in msgs.iter().enumerate() {
        encode_message(
            &mut buf,
            i as i64,
            magic,
            0,
            m.timestamp,
            m.key.as_deref(),
            m.value.as_deref(),
        );
    }
    buf.freeze()
}

/// One wrapper message whose value is the compressed message set of `msgs`
/// (magic 1: inner offsets relative, wrapper offset = last relative offset,
/// wrapper timestamp = the largest inner one).
fn compressed_set(magic: i8, codec: i8, msgs: &[Msg]) -> Bytes {
    let inner = message_set(magic, msgs);
    let mut compressed = BytesMut::new();
    match codec {
        1 => Gzip::compress(&mut compressed, |b: &mut BytesMut| {
            b.put_slice(&inner);
            Ok(())
        }),
        2 => Snappy::compress(&mut compressed, |b: &mut BytesMut| {
            b.put_slice(&inner);
            Ok(())
        }),
        _ => unreachable!("codec {codec}"),
    }
    .unwrap();
    let mut buf = BytesMut::new();
    let max_ts = msgs.iter().map(|m| m.timestamp).max().unwrap_or(-1);
    encode_message(
        &mut buf,
        msgs.len() as i64 - 1,
        magic,
        codec,
        max_ts,
        None,
        Some(&compressed),
    );
    buf.freeze()
}

fn put_str(buf: &mut BytesMut, s: &str) {
    buf.put_i16(s.len() as i16);
    buf.put_slice(s.as_bytes());
}

/// Produce v0-2 with one partition's message set: (error code, base offset,
/// log append time (v2, else -1)).
async fn produce_old(
    client: &mut Client,
    version: i16,
    topic: &str,
    set: &Bytes,
) -> (i16, i64, i64) {
    let mut body = BytesMut::new();
    body.put_i16(-1); // acks
    body.put_i32(5000); // timeout
    body.put_i32(1);
    put_str(&mut body, topic);
    body.put_i32(1);
    body.put_i32(0);
    body.put_i32(set.len() as i32);
    body.put_slice(set);
    let mut r = client
        .send_raw(ApiKey::Produce as i16, version, &body)
        .await
        .expect("old produce answered");
    let mut take = |n: usize| r.split_to(n);
    let topics = i32::from_be_bytes(take(4)[..].try_into().unwrap());
    assert_eq!(topics, 1);
    let name_len = i16::from_be_bytes(take(2)[..].try_into().unwrap()) as usize;
    assert_eq!(&take(name_len)[..], topic.as_bytes());
    assert_eq!(i32::from_be_bytes(take(4)[..].try_into().unwrap()), 1);
    assert_eq!(i32::from_be_bytes(take(4)[..].try_into().unwrap()), 0);
    let code = i16::from_be_bytes(take(2)[..].try_into().unwrap());
    let base = i64::from_be_bytes(take(8)[..].try_into().unwrap());
    let append_time = if version >= 2 {
        i64::from_be_bytes(take(8)[..].try_into().unwrap())
    } else {
        -1
    };
    if version >= 1 {
        take(4); // throttle_time_ms
    }
    assert!(
        r.is_empty(),
        "{} bytes left in the v{version} answer",
        r.len()
    );
    (code, base, append_time)
}

/// Fetch v0-3 of partition 0 from `offset`: (error code, high watermark,
/// message set).
async fn fetch_old(
    client: &mut Client,
    version: i16,
    topic: &str,
    offset: i64,
) -> (i16, i64, Bytes) {
    let mut body = BytesMut::new();
    body.put_i32(-1); // replica id
    body.put_i32(100); // max wait
    body.put_i32(1); // min bytes
    if version >= 3 {
        body.put_i32(1 << 20);
    }
    body.put_i32(1);
    put_str(&mut body, topic);
    body.put_i32(1);
    body.put_i32(0);
    body.put_i64(offset);
    body.put_i32(1 << 20);
    let mut r = client
        .send_raw(ApiKey::Fetch as i16, version, &body)
        .await
        .expect("old fetch answered");
    let mut take = |n: usize| r.split_to(n);
    if version >= 1 {
        take(4); // throttle_time_ms
    }
    assert_eq!(i32::from_be_bytes(take(4)[..].try_into().unwrap()), 1);
    let name_len = i16::from_be_bytes(take(2)[..].try_into().unwrap()) as usize;
    assert_eq!(&take(name_len)[..], topic.as_bytes());
    assert_eq!(i32::from_be_bytes(take(4)[..].try_into().unwrap()), 1);
    assert_eq!(i32::from_be_bytes(take(4)[..].try_into().unwrap()), 0);
    let code = i16::from_be_bytes(take(2)[..].try_into().unwrap());
    let high_watermark = i64::from_be_bytes(take(8)[..].try_into().unwrap());
    let len = i32::from_be_bytes(take(4)[..].try_into().unwrap());
    let set = if len > 0 {
        take(len as usize)
    } else {
        Bytes::new()
    };
    assert!(
        r.is_empty(),
        "{} bytes left in the v{version} answer",
        r.len()
    );
    (code, high_watermark, set)
}

/// What a decoded message set held.
#[derive(Debug, Default)]
struct Decoded {
    messages: Vec<Msg>,
    /// Codec of every top-level message.
    codecs: BTreeSet<i8>,
    magics: BTreeSet<i8>,
}

fn get_bytes(b: &[u8], at: &mut usize) -> Option<Vec<u8>> {
    let len = i32::from_be_bytes(b[*at..*at + 4].try_into().unwrap());
    *at += 4;
    if len < 0 {
        return None;
    }
    let v = b[*at..*at + len as usize].to_vec();
    *at += len as usize;
    Some(v)
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    use kafka_protocol::compression::Decompressor;
    let mut input = Bytes::copy_from_slice(b);
    Gzip::decompress(&mut input, |out: &mut Bytes| Ok(out.to_vec())).unwrap()
}

fn unsnappy(b: &[u8]) -> Vec<u8> {
    use kafka_protocol::compression::Decompressor;
    let mut input = Bytes::copy_from_slice(b);
    Snappy::decompress(&mut input, |out: &mut Bytes| Ok(out.to_vec())).unwrap()
}

/// Decodes a message set, checking every CRC; wrapper messages are opened
/// and their inner offsets made absolute (magic 1: relative to the
/// wrapper's offset, which is the last inner one).
fn decode(set: &[u8], out: &mut Decoded) {
    for m in decode_set(set, out, true) {
        out.messages.push(m);
    }
}

fn decode_set(set: &[u8], out: &mut Decoded, top: bool) -> Vec<Msg> {
    let mut messages = Vec::new();
    let mut at = 0;
    while at + 12 <= set.len() {
        let offset = i64::from_be_bytes(set[at..at + 8].try_into().unwrap());
        let size = i32::from_be_bytes(set[at + 8..at + 12].try_into().unwrap()) as usize;
        if at + 12 + size > set.len() {
            break; // a partial message at the end of a fetch
        }
        let m = &set[at + 12..at + 12 + size];
        let crc = u32::from_be_bytes(m[0..4].try_into().unwrap());
        assert_eq!(
            crc,
            IEEE.checksum(&m[4..]),
            "CRC of the message at {offset}"
        );
        let (magic, attributes) = (m[4] as i8, m[5] as i8);
        let mut p = 6;
        let timestamp = if magic == 1 {
            p += 8;
            i64::from_be_bytes(m[6..14].try_into().unwrap())
        } else {
            -1
        };
        let key = get_bytes(m, &mut p);
        let value = get_bytes(m, &mut p);
        assert_eq!(p, m.len(), "message length");
        let codec = attributes & 7;
        if top {
            out.codecs.insert(codec);
            out.magics.insert(magic);
        } else {
            assert_eq!(codec, 0, "inner messages are not compressed");
        }
        if codec == 0 {
            messages.push(Msg {
                offset,
                key,
                value,
                timestamp,
            });
        } else {
            let payload = value.expect("wrapper value");
            let raw = match codec {
                1 => gunzip(&payload),
                2 => unsnappy(&payload),
                3 => {
                    use kafka_protocol::compression::{Decompressor, Lz4};
                    let mut input = Bytes::from(payload);
                    Lz4::decompress(&mut input, |b: &mut Bytes| Ok(b.to_vec())).unwrap()
                }
                other => panic!("codec {other} in a v{magic} message set"),
            };
            let mut inner = decode_set(&raw, out, false);
            if magic == 1 {
                let last = inner.last().map(|m| m.offset).unwrap_or(0);
                for m in &mut inner {
                    m.offset += offset - last;
                }
            }
            messages.extend(inner);
        }
        at += 12 + size;
    }
    messages
}

async fn api_versions(client: &mut Client, key: ApiKey) -> (i16, i16) {
    let response = client
        .send_version(&ApiVersionsRequest::default(), 0)
        .await
        .unwrap();
    let k = response
        .api_keys
        .iter()
        .find(|k| k.api_key == key as i16)
        .expect("advertised");
    (k.min_version, k.max_version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_sets_of_produce_v0_to_v2_are_stored_as_v2_batches_readable_by_librdkafka() {
    let broker = TestBroker::start();
    create_topic(&broker, "legacy-in", 1, &[]).await;
    let mut client = broker.client().await;
    assert_eq!(api_versions(&mut client, ApiKey::Produce).await.0, 0);
    let t = runnel_core::broker::now_ms() - 10_000;

    // v0: magic 0, uncompressed; null key, null value.
    let v0 = [
        msg(Some("k0"), Some("v0"), -1),
        msg(None, Some("v1"), -1),
        msg(Some("k2"), None, -1),
    ];
    let set = message_set(0, &v0);
    assert_eq!(
        produce_old(&mut client, 0, "legacy-in", &set).await,
        (0, 0, -1)
    );
    // v1: magic 0, one gzip wrapper of three messages.
    let v1 = [
        msg(Some("k3"), Some("v3"), -1),
        msg(Some("k4"), Some("v4"), -1),
        msg(Some("k5"), Some("v5"), -1),
    ];
    let set = compressed_set(0, 1, &v1);
    assert_eq!(
        produce_old(&mut client, 1, "legacy-in", &set).await,
        (0, 3, -1)
    );
    // v2: magic 1 with timestamps, uncompressed, then a snappy wrapper.
    let v2 = [
        msg(Some("k6"), Some("v6"), t),
        msg(Some("k7"), Some("v7"), t + 1),
    ];
    let set = message_set(1, &v2);
    assert_eq!(
        produce_old(&mut client, 2, "legacy-in", &set).await,
        (0, 6, -1)
    );
    let v2c = [
        msg(Some("k8"), Some("v8"), t + 10),
        msg(Some("k9"), Some("v9"), t + 11),
        msg(None, Some("v10"), t + 12),
    ];
    let set = compressed_set(1, 2, &v2c);
    assert_eq!(
        produce_old(&mut client, 2, "legacy-in", &set).await,
        (0, 8, -1)
    );

    // A damaged message is refused with CORRUPT_MESSAGE, and the
    // connection stays usable.
    let mut bad = message_set(1, &v2).to_vec();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let (code, _, _) = produce_old(&mut client, 2, "legacy-in", &Bytes::from(bad)).await;
    assert_eq!(code, 2);
    assert_eq!(latest_offset(&broker, "legacy-in", 0).await, 11);

    // Stored as v2 batches, the wrappers' codecs kept.
    assert_eq!(
        stored_codecs(&broker, "legacy-in", 0).await,
        BTreeSet::from([0, 1, 2])
    );
    let consumed = broker.consume("legacy-in", 1, 11, Duration::from_secs(10));
    let expected: Vec<&Msg> = v0.iter().chain(&v1).chain(&v2).chain(&v2c).collect();
    assert_eq!(consumed.len(), expected.len());
    for (i, (m, want)) in consumed.iter().zip(expected).enumerate() {
        assert_eq!(m.offset(), i as i64);
        assert_eq!(m.key(), want.key.as_deref(), "key at {i}");
        assert_eq!(m.payload(), want.value.as_deref(), "value at {i}");
        let ts = m.timestamp().to_millis();
        if want.timestamp < 0 {
            assert_eq!(ts, None, "magic 0 records have no timestamp ({i})");
        } else {
            assert_eq!(ts, Some(want.timestamp), "timestamp at {i}");
        }
    }

    // Produce v3 and later must carry v2 batches.
    let mut p = kafka_protocol::messages::produce_request::PartitionProduceData::default();
    p.index = 0;
    p.records = Some(message_set(1, &v2));
    let mut topic = kafka_protocol::messages::produce_request::TopicProduceData::default();
    topic.name = kafka_protocol::messages::TopicName(StrBytes::from_static_str("legacy-in"));
    topic.partition_data = vec![p];
    let mut request = kafka_protocol::messages::ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 5000;
    request.topic_data = vec![topic];
    let answer = client.send_version(&request, 3).await.unwrap();
    assert_eq!(answer.responses[0].partition_responses[0].error_code, 87);
}

/// A v2 batch of `count` records (keys k<first+i>, values v<first+i>,
/// timestamps ts+i, a header each) in one codec.
fn v2_batch(first: usize, count: usize, ts: i64, compression: Compression) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32 - 1,
            timestamp: ts + i as i64,
            key: Some(Bytes::from(format!("k{}", first + i))),
            value: Some(Bytes::from(format!("v{}", first + i))),
            headers: [(
                StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"x")),
            )]
            .into_iter()
            .collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_v0_to_v3_converts_stored_batches_down_to_message_format_v0_and_v1() {
    let broker = TestBroker::start();
    create_topic(&broker, "legacy-out", 1, &[]).await;
    let mut client = broker.client().await;
    assert_eq!(api_versions(&mut client, ApiKey::Fetch).await.0, 0);
    let ts = runnel_core::broker::now_ms() - 60_000;
    // Offsets 0-4 plain, 5-9 gzip, 10-12 zstd, 13-16 lz4, 17-19 snappy.
    let batches = [
        (0, 5, Compression::None),
        (5, 5, Compression::Gzip),
        (10, 3, Compression::Zstd),
        (13, 4, Compression::Lz4),
        (17, 3, Compression::Snappy),
    ];
    for (first, count, codec) in batches {
        let mut p = kafka_protocol::messages::produce_request::PartitionProduceData::default();
        p.index = 0;
        p.records = Some(v2_batch(first, count, ts + first as i64, codec));
        let mut topic = kafka_protocol::messages::produce_request::TopicProduceData::default();
        topic.name = kafka_protocol::messages::TopicName(StrBytes::from_static_str("legacy-out"));
        topic.partition_data = vec![p];
        let mut request = kafka_protocol::messages::ProduceRequest::default();
        request.acks = -1;
        request.timeout_ms = 5000;
        request.topic_data = vec![topic];
        let answer = client.send(&request).await.unwrap();
        assert_eq!(answer.responses[0].partition_responses[0].error_code, 0);
    }

    for version in 0..=3i16 {
        let magic = if version >= 2 { 1 } else { 0 };
        let mut got = Decoded::default();
        let mut offset = 0;
        // Old consumers fetch until they have everything.
        while offset < 20 {
            let (code, hw, set) = fetch_old(&mut client, version, "legacy-out", offset).await;
            assert_eq!((code, hw), (0, 20), "Fetch v{version} at {offset}");
            let mut part = Decoded::default();
            decode(&set, &mut part);
            got.codecs.extend(part.codecs);
            got.magics.extend(part.magics);
            // A wrapper may start before the fetch offset; clients skip
            // what they already have.
            let new: Vec<Msg> = part
                .messages
                .into_iter()
                .filter(|m| m.offset >= offset)
                .collect();
            let Some(last) = new.last() else {
                panic!("Fetch v{version} at {offset} returned no new message");
            };
            offset = last.offset + 1;
            got.messages.extend(new);
        }
        assert_eq!(got.magics, BTreeSet::from([magic]), "Fetch v{version}");
        // gzip and snappy wrappers stay; lz4 only for magic 1 (magic 0's
        // lz4 framing was broken); zstd has no older format.
        let want_codecs = if magic == 1 {
            BTreeSet::from([0, 1, 2, 3])
        } else {
            BTreeSet::from([0, 1, 2])
        };
        assert_eq!(got.codecs, want_codecs, "Fetch v{version}");
        let offsets: Vec<i64> = got.messages.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, (0..20).collect::<Vec<_>>(), "Fetch v{version}");
        for m in &got.messages {
            let i = m.offset as usize;
            assert_eq!(m.key.as_deref(), Some(format!("k{i}").as_bytes()));
            assert_eq!(m.value.as_deref(), Some(format!("v{i}").as_bytes()));
            let want_ts = if magic == 1 { ts + i as i64 } else { -1 };
            assert_eq!(m.timestamp, want_ts, "Fetch v{version} timestamp of {i}");
        }
    }

    // From the middle of an uncompressed batch, the records before the
    // fetch offset are left out.
    let (_, _, set) = fetch_old(&mut client, 2, "legacy-out", 3).await;
    let mut got = Decoded::default();
    decode(&set, &mut got);
    assert_eq!(got.messages.first().map(|m| m.offset), Some(3));

    // A fetch past the end is OFFSET_OUT_OF_RANGE, as for newer versions.
    let (code, _, set) = fetch_old(&mut client, 0, "legacy-out", 99).await;
    assert_eq!((code, set.len()), (1, 0));
}
