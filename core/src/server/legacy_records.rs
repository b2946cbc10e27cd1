//! Produce v0-2 and Fetch v0-3 on the wire: `kafka-protocol` decodes
//! Produce from v3 and Fetch from v4 only (the versions Kafka 4 kept), so
//! these older layouts are read into the same request types the handlers
//! take, and their answers written from the same response types. Their
//! record sets are message format v0/v1, converted by `storage::legacy`.
//!
//! ```text
//! Produce v0-2 request:  acks i16 | timeout_ms i32
//!                        | [topic string | [partition i32 | records bytes]]
//! Produce v0-2 response: [topic string | [partition i32 | error_code i16
//!                        | base_offset i64 | log_append_time_ms i64 (v2)]]
//!                        | throttle_time_ms i32 (v1+)
//! Fetch v0-3 request:    replica_id i32 | max_wait_ms i32 | min_bytes i32
//!                        | max_bytes i32 (v3) | [topic string
//!                        | [partition i32 | fetch_offset i64 | partition_max_bytes i32]]
//! Fetch v0-3 response:   throttle_time_ms i32 (v1+) | [topic string
//!                        | [partition i32 | error_code i16 | high_watermark i64
//!                        | records bytes]]
//! ```
//! Arrays are an i32 count; strings an i16 length, read by `legacy::Reader`
//! (shared with the other KIP-896 versions). A count larger than the
//! bytes left could hold is refused before anything is allocated.

use super::legacy::Reader;
use anyhow::{bail, ensure, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, TopicName,
};

/// Whether this API version's body is handled here rather than by
/// `kafka-protocol`.
pub fn handles(api_key: ApiKey, version: i16) -> bool {
    matches!(
        (api_key, version),
        (ApiKey::Produce, 0..=2) | (ApiKey::Fetch, 0..=3)
    )
}

/// Decodes a Produce v0-2 body. The record sets stay slices of the frame.
pub fn decode_produce(buf: Bytes, version: i16) -> Result<ProduceRequest> {
    ensure!(
        (0..=2).contains(&version),
        "Produce v{version} is not a legacy version"
    );
    let mut r = Reader::new(buf);
    let mut request = ProduceRequest::default();
    request.acks = r.i16()?;
    request.timeout_ms = r.i32()?;
    request.topic_data = r.array(6, |r| {
        let mut topic = TopicProduceData::default();
        topic.name = TopicName(r.string()?);
        topic.partition_data = r.array(8, |r| {
            let mut p = PartitionProduceData::default();
            p.index = r.i32()?;
            let len = r.i32()?;
            p.records = if len < 0 {
                None
            } else {
                Some(r.bytes(len as usize, "records")?)
            };
            Ok(p)
        })?;
        Ok(topic)
    })?;
    ensure!(
        r.remaining() == 0,
        "{} bytes after the request",
        r.remaining()
    );
    Ok(request)
}

/// Decodes a Fetch v0-3 body.
pub fn decode_fetch(buf: Bytes, version: i16) -> Result<FetchRequest> {
    ensure!(
        (0..=3).contains(&version),
        "Fetch v{version} is not a legacy version"
    );
    let mut r = Reader::new(buf);
    let mut request = FetchRequest::default();
    request.replica_id = r.i32()?.into();
    request.max_wait_ms = r.i32()?;
    request.min_bytes = r.i32()?;
    if version >= 3 {
        request.max_bytes = r.i32()?;
    }
    request.topics = r.array(6, |r| {
        let mut topic = FetchTopic::default();
        topic.topic = TopicName(r.string()?);
        topic.partitions = r.array(16, |r| {
            let mut p = FetchPartition::default();
            p.partition = r.i32()?;
            p.fetch_offset = r.i64()?;
            p.partition_max_bytes = r.i32()?;
            Ok(p)
        })?;
        Ok(topic)
    })?;
    ensure!(
        r.remaining() == 0,
        "{} bytes after the request",
        r.remaining()
    );
    Ok(request)
}

fn put_string(buf: &mut BytesMut, s: &str) -> Result<()> {
    let Ok(len) = i16::try_from(s.len()) else {
        bail!("string of {} bytes", s.len());
    };
    buf.put_i16(len);
    buf.put_slice(s.as_bytes());
    Ok(())
}

/// Writes a Produce v0-2 response body.
pub fn encode_produce(response: &ProduceResponse, version: i16, buf: &mut BytesMut) -> Result<()> {
    buf.put_i32(response.responses.len() as i32);
    for topic in &response.responses {
        put_string(buf, &topic.name.0)?;
        buf.put_i32(topic.partition_responses.len() as i32);
        for p in &topic.partition_responses {
            buf.put_i32(p.index);
            buf.put_i16(p.error_code);
            buf.put_i64(p.base_offset);
            if version >= 2 {
                buf.put_i64(p.log_append_time_ms);
            }
        }
    }
    if version >= 1 {
        buf.put_i32(response.throttle_time_ms);
    }
    Ok(())
}

/// Writes a Fetch v0-3 response body. The record sets must already be in
/// the message format of this version.
pub fn encode_fetch(response: &FetchResponse, version: i16, buf: &mut BytesMut) -> Result<()> {
    if version >= 1 {
        buf.put_i32(response.throttle_time_ms);
    }
    buf.put_i32(response.responses.len() as i32);
    for topic in &response.responses {
        put_string(buf, &topic.topic.0)?;
        buf.put_i32(topic.partitions.len() as i32);
        for p in &topic.partitions {
            buf.put_i32(p.partition_index);
            buf.put_i16(p.error_code);
            buf.put_i64(p.high_watermark);
            let records = p.records.as_deref().unwrap_or_default();
            buf.put_i32(i32::try_from(records.len())?);
            buf.put_slice(records);
        }
    }
    Ok(())
}

/// Writes a legacy request body (what an old client sends), for tests.
#[cfg(test)]
pub(crate) fn encode_request(
    request: &kafka_protocol::messages::RequestKind,
    version: i16,
) -> Result<BytesMut> {
    use kafka_protocol::messages::RequestKind;
    let mut b = BytesMut::new();
    match request {
        RequestKind::Produce(r) => {
            b.put_i16(r.acks);
            b.put_i32(r.timeout_ms);
            b.put_i32(r.topic_data.len() as i32);
            for t in &r.topic_data {
                put_string(&mut b, &t.name.0)?;
                b.put_i32(t.partition_data.len() as i32);
                for p in &t.partition_data {
                    b.put_i32(p.index);
                    match &p.records {
                        Some(records) => {
                            b.put_i32(records.len() as i32);
                            b.put_slice(records);
                        }
                        None => b.put_i32(-1),
                    }
                }
            }
        }
        RequestKind::Fetch(r) => {
            b.put_i32(r.replica_id.0);
            b.put_i32(r.max_wait_ms);
            b.put_i32(r.min_bytes);
            if version >= 3 {
                b.put_i32(r.max_bytes);
            }
            b.put_i32(r.topics.len() as i32);
            for t in &r.topics {
                put_string(&mut b, &t.topic.0)?;
                b.put_i32(t.partitions.len() as i32);
                for p in &t.partitions {
                    b.put_i32(p.partition);
                    b.put_i64(p.fetch_offset);
                    b.put_i32(p.partition_max_bytes);
                }
            }
        }
        _ => bail!("no legacy layout for this request"),
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn produce_body(records: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(1);
        b.put_i32(1500);
        b.put_i32(1);
        put_string(&mut b, "t").unwrap();
        b.put_i32(1);
        b.put_i32(2);
        b.put_i32(records.len() as i32);
        b.put_slice(records);
        b.freeze()
    }

    #[test]
    fn a_produce_v0_body_decodes_with_its_records_borrowed() {
        let body = produce_body(b"message-set");
        let buf = body.clone();
        let request = decode_produce(buf, 0).unwrap();
        assert_eq!((request.acks, request.timeout_ms), (1, 1500));
        let p = &request.topic_data[0].partition_data[0];
        assert_eq!(p.index, 2);
        let records = p.records.as_ref().unwrap();
        assert_eq!(&records[..], b"message-set");
        assert_eq!(records.as_ptr(), body[body.len() - 11..].as_ptr());
        // Every truncation fails cleanly.
        for cut in 0..body.len() {
            assert!(decode_produce(body.slice(..cut), 0).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn absurd_counts_are_refused_before_allocating() {
        let mut b = BytesMut::new();
        b.put_i16(1);
        b.put_i32(1500);
        b.put_i32(i32::MAX);
        assert!(decode_produce(b.freeze(), 1).is_err());
        let mut b = BytesMut::new();
        b.put_i32(-1);
        b.put_i32(100);
        b.put_i32(1);
        b.put_i32(0x7fff_fff0);
        assert!(decode_fetch(b.freeze(), 0).is_err());
    }

    #[test]
    fn requests_round_trip_through_the_test_encoder() {
        use kafka_protocol::messages::RequestKind;
        let buf = produce_body(b"abc");
        let request = decode_produce(buf, 2).unwrap();
        let again = encode_request(&RequestKind::Produce(request.clone()), 2).unwrap();
        assert_eq!(decode_produce(again.freeze(), 2).unwrap(), request);
    }

    #[test]
    fn fetch_v3_reads_max_bytes_and_v0_does_not() {
        for version in [0i16, 3] {
            let mut b = BytesMut::new();
            b.put_i32(-1);
            b.put_i32(250);
            b.put_i32(1);
            if version == 3 {
                b.put_i32(4096);
            }
            b.put_i32(1);
            put_string(&mut b, "topic").unwrap();
            b.put_i32(1);
            b.put_i32(0);
            b.put_i64(42);
            b.put_i32(1024);
            let request = decode_fetch(b.freeze(), version).unwrap();
            assert_eq!(request.max_wait_ms, 250);
            assert_eq!(
                request.max_bytes,
                if version == 3 { 4096 } else { i32::MAX }
            );
            let p = &request.topics[0].partitions[0];
            assert_eq!(
                (p.partition, p.fetch_offset, p.partition_max_bytes),
                (0, 42, 1024)
            );
        }
    }
}
