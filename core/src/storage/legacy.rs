//! Message format v0 and v1 ("message sets"), spoken by clients older than
//! Kafka 0.11: Produce v0-2 carry them, Fetch v0-3 expect them. The log
//! stores only v2 batches, so a produced message set becomes one v2 batch
//! before it is validated like any other ([`to_v2_batch`]), and stored
//! batches are converted down for old fetches ([`down_convert`]). Both
//! directions decode and re-encode, so they are only for these old
//! versions; newer requests never come here.
//!
//! ```text
//! message set:  (offset i64 | message_size i32 | message)*
//! message v0:   crc u32 | magic i8 = 0 | attributes i8 | key | value
//! message v1:   crc u32 | magic i8 = 1 | attributes i8 | timestamp i64 | key | value
//!   crc         CRC-32 (IEEE) of everything after it
//!   attributes  bits 0-2 codec (0 none, 1 gzip, 2 snappy, 3 lz4),
//!               bit 3 (v1) the timestamp is the broker's append time
//!   key, value  i32 length (-1: null) | bytes
//! ```
//! A compressed message is a wrapper whose value is the compressed message
//! set of the real ("inner") messages, which are never compressed
//! themselves. Inner offsets are absolute in v0 and relative (0..n) in v1,
//! where the wrapper's offset is the absolute offset of the last inner
//! message. A v0 message has no timestamp: as a v2 record its timestamp is
//! -1.
//!
//! Magic-0 LZ4 wrappers from clients before Kafka 0.10 carry a wrong frame
//! header checksum (KAFKA-3160); `records` reads LZ4 frames without
//! checking it.
//!
//! Converting down, a batch compressed with gzip or snappy (and lz4 for
//! v1) becomes one wrapper in the same codec; lz4 for v0 (whose framing
//! old clients computed wrongly) and zstd (which needs Fetch v10) become
//! uncompressed messages, which every client reads. Record headers have no
//! place in v0/v1 and are left out, as Kafka does.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::records::{Compression, IEEE};

use super::batch::{
    BatchError, BatchIter, ATTR_CONTROL, ATTR_LOG_APPEND_TIME, BATCH_HEADER_BYTES, MAGIC_V2,
};
use super::log::AppendError;
use super::records::{self, RawRecords, RecordsError};
use super::validator::{build_batch, NO_TIMESTAMP};

/// One record's `(timestamp, key, value)`, borrowed.
type FlatRecord<'a> = (i64, Option<&'a [u8]>, Option<&'a [u8]>);

/// `offset` + `message_size`.
const MESSAGE_OVERHEAD: usize = 12;
/// Bytes of a v0 message before its key: crc, magic, attributes.
const V0_HEADER: usize = 6;
/// Attribute bit (v1): the timestamp is the broker's append time.
const LEGACY_LOG_APPEND_TIME: i8 = 1 << 3;

/// Whether a record set is in message format v0 or v1: the magic byte
/// sits at the same position (16) in every format.
pub fn is_legacy(records: &[u8]) -> bool {
    records.len() > 16 && (records[16] as i8) < MAGIC_V2
}

/// One message of a set, borrowed from it (or from a decompressed wrapper).
struct Message<'a> {
    // Producers' offsets are replaced by the log's; only tests read them.
    #[cfg_attr(not(test), allow(dead_code))]
    offset: i64,
    magic: i8,
    attributes: i8,
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
}

fn corrupt(reason: &'static str) -> AppendError {
    AppendError::Corrupt(BatchError::Inconsistent(reason))
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}

fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

/// Reads a length-prefixed field of `body` at `*at`.
fn bytes_field<'a>(body: &'a [u8], at: &mut usize) -> Result<Option<&'a [u8]>, AppendError> {
    let len = body
        .get(*at..*at + 4)
        .map(be_i32)
        .ok_or_else(|| corrupt("message field runs past the message"))?;
    *at += 4;
    if len < 0 {
        return Ok(None);
    }
    let field = body
        .get(*at..*at + len as usize)
        .ok_or_else(|| corrupt("message field runs past the message"))?;
    *at += len as usize;
    Ok(Some(field))
}

/// Parses the messages of a set, checking each CRC. A partial message at
/// the end is an error: producers send whole messages.
fn parse_set(set: &[u8]) -> Result<Vec<Message<'_>>, AppendError> {
    let mut messages = Vec::new();
    let mut at = 0usize;
    while at < set.len() {
        let head = set
            .get(at..at + MESSAGE_OVERHEAD)
            .ok_or_else(|| corrupt("message set ends inside a message header"))?;
        let offset = be_i64(head);
        let size = be_i32(&head[8..]);
        let body = usize::try_from(size)
            .ok()
            .filter(|&s| s >= V0_HEADER + 8)
            .and_then(|s| set.get(at + MESSAGE_OVERHEAD..at + MESSAGE_OVERHEAD + s))
            .ok_or_else(|| corrupt("message size is invalid or runs past the message set"))?;
        let stored = u32::from_be_bytes(body[..4].try_into().expect("4 bytes"));
        let computed = IEEE.checksum(&body[4..]);
        if stored != computed {
            return Err(AppendError::Corrupt(BatchError::CrcMismatch {
                stored,
                computed,
            }));
        }
        let magic = body[4] as i8;
        let attributes = body[5] as i8;
        let mut p = V0_HEADER;
        let timestamp = match magic {
            0 => NO_TIMESTAMP,
            1 => {
                let ts = body
                    .get(p..p + 8)
                    .map(be_i64)
                    .ok_or_else(|| corrupt("v1 message too short for its timestamp"))?;
                p += 8;
                ts
            }
            other => {
                return Err(AppendError::Invalid(format!(
                    "message with magic {other} in a v0/v1 message set"
                )))
            }
        };
        let key = bytes_field(body, &mut p)?;
        let value = bytes_field(body, &mut p)?;
        if p != body.len() {
            return Err(corrupt("message size does not match its fields"));
        }
        messages.push(Message {
            offset,
            magic,
            attributes,
            timestamp,
            key,
            value,
        });
        at += MESSAGE_OVERHEAD + body.len();
    }
    Ok(messages)
}

fn legacy_codec(attributes: i8) -> Result<Compression, AppendError> {
    match attributes & 0x7 {
        0 => Ok(Compression::None),
        1 => Ok(Compression::Gzip),
        2 => Ok(Compression::Snappy),
        3 => Ok(Compression::Lz4),
        other => Err(AppendError::Invalid(format!(
            "compression codec {other} is not allowed in message format v0/v1"
        ))),
    }
}

fn put_varint(buf: &mut BytesMut, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn varint_len(value: i64) -> usize {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Appends one v2 record (no headers) to a records section.
fn put_record(
    section: &mut BytesMut,
    timestamp_delta: i64,
    offset_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let field_len = |f: Option<&[u8]>| match f {
        Some(b) => varint_len(b.len() as i64) + b.len(),
        None => 1,
    };
    let body_len = 1
        + varint_len(timestamp_delta)
        + varint_len(offset_delta)
        + field_len(key)
        + field_len(value)
        + 1;
    put_varint(section, body_len as i64);
    section.put_u8(0); // attributes
    put_varint(section, timestamp_delta);
    put_varint(section, offset_delta);
    for field in [key, value] {
        match field {
            Some(b) => {
                put_varint(section, b.len() as i64);
                section.put_slice(b);
            }
            None => put_varint(section, -1),
        }
    }
    put_varint(section, 0); // headers
}

/// Converts a produced v0/v1 message set into one v2 batch (base offset 0,
/// no producer id), compressed with the codec of its first compressed
/// wrapper. Decompressed wrappers together may not exceed
/// `max_decompressed_bytes`. An empty set gives an empty record set.
pub fn to_v2_batch(set: &[u8], max_decompressed_bytes: usize) -> Result<Bytes, AppendError> {
    let outer = parse_set(set)?;
    let Some(first) = outer.first() else {
        return Ok(Bytes::new());
    };
    let magic = first.magic;
    let mut codec = Compression::None;
    let mut log_append_time = false;
    // Decompressed wrapper values, kept alive for the borrowed inner messages.
    let mut inflated: Vec<Vec<u8>> = Vec::new();
    let mut budget = max_decompressed_bytes;
    for m in &outer {
        if m.magic != magic {
            return Err(AppendError::Invalid(
                "a message set mixes magic 0 and magic 1 messages".into(),
            ));
        }
        log_append_time |= magic == 1 && m.attributes & LEGACY_LOG_APPEND_TIME != 0;
        let c = legacy_codec(m.attributes)?;
        if c == Compression::None {
            continue;
        }
        if codec == Compression::None {
            codec = c;
        }
        let compressed = m.value.ok_or_else(|| {
            AppendError::Invalid("compressed wrapper message without a value".into())
        })?;
        let mut out = Vec::new();
        // Magic 0's LZ4 header checksum is wrong (see `records`), which the
        // block reader there does not check.
        records::decompress_into(compressed, c, budget, &mut out).map_err(|e| match e {
            RecordsError::TooLarge(max) => {
                AppendError::Invalid(format!("message set decompresses to more than {max} bytes"))
            }
            RecordsError::Malformed(m) => {
                AppendError::Invalid(format!("cannot decompress a {c:?} wrapper message: {m}"))
            }
        })?;
        budget -= out.len();
        inflated.push(out);
    }

    // (timestamp, key, value) of every record, in order.
    let mut flat: Vec<FlatRecord<'_>> = Vec::new();
    let mut inflated_sets = inflated.iter();
    for m in &outer {
        if legacy_codec(m.attributes)? == Compression::None {
            flat.push((m.timestamp, m.key, m.value));
            continue;
        }
        let inner_set = inflated_sets.next().expect("one inflated set per wrapper");
        for inner in parse_set(inner_set)? {
            if inner.magic != magic {
                return Err(AppendError::Invalid(
                    "an inner message's magic differs from its wrapper's".into(),
                ));
            }
            if inner.attributes & 0x7 != 0 {
                return Err(AppendError::Invalid(
                    "a compressed wrapper holds a compressed message".into(),
                ));
            }
            flat.push((inner.timestamp, inner.key, inner.value));
        }
    }
    let count = i32::try_from(flat.len())
        .map_err(|_| AppendError::Invalid("too many messages in one message set".into()))?;
    if count == 0 {
        return Err(AppendError::Invalid(
            "a wrapper message holds no messages".into(),
        ));
    }

    let base_timestamp = flat[0].0;
    let max_timestamp = flat.iter().map(|r| r.0).max().unwrap_or(NO_TIMESTAMP);
    let mut section =
        BytesMut::with_capacity(set.len() + inflated.iter().map(Vec::len).sum::<usize>());
    for (i, (timestamp, key, value)) in flat.iter().enumerate() {
        put_record(
            &mut section,
            timestamp.wrapping_sub(base_timestamp),
            i as i64,
            *key,
            *value,
        );
    }
    let mut head = [0u8; BATCH_HEADER_BYTES];
    head[12..16].copy_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    head[16] = MAGIC_V2 as u8;
    head[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    head[27..35].copy_from_slice(&base_timestamp.to_be_bytes());
    head[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    head[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // producer id
    head[51..53].copy_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    head[53..57].copy_from_slice(&(-1i32).to_be_bytes()); // base sequence
    head[57..61].copy_from_slice(&count.to_be_bytes());
    let mut attributes = codec as i16;
    if log_append_time {
        attributes |= ATTR_LOG_APPEND_TIME;
    }
    build_batch(&head, attributes, &section, codec)
        .map_err(|e| AppendError::Invalid(format!("cannot build the converted batch: {e}")))
}

/// Encodes one message of format `magic` (with its offset and size).
fn put_message(
    out: &mut BytesMut,
    offset: i64,
    magic: i8,
    attributes: i8,
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let body_len = V0_HEADER
        + if magic == 1 { 8 } else { 0 }
        + 8
        + key.map_or(0, <[u8]>::len)
        + value.map_or(0, <[u8]>::len);
    out.put_i64(offset);
    out.put_i32(body_len as i32);
    let crc_at = out.len();
    out.put_u32(0);
    out.put_i8(magic);
    out.put_i8(attributes);
    if magic == 1 {
        out.put_i64(timestamp);
    }
    for field in [key, value] {
        match field {
            Some(b) => {
                out.put_i32(b.len() as i32);
                out.put_slice(b);
            }
            None => out.put_i32(-1),
        }
    }
    let crc = IEEE.checksum(&out[crc_at + 4..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The codec a batch in `codec` keeps when converted to format `magic`.
fn down_codec(codec: Compression, magic: i8) -> Compression {
    match (codec, magic) {
        (Compression::Gzip | Compression::Snappy, _) => codec,
        (Compression::Lz4, 1) => codec,
        _ => Compression::None,
    }
}

/// Converts the whole v2 batches at the start of `stored` (as read for a
/// fetch; a batch cut off at the end is left out) into a message set of
/// format `magic` (0 or 1). Records of uncompressed batches below
/// `fetch_offset` are left out; a compressed batch is converted whole, as
/// old consumers skip what they already have. Control batches are dropped.
/// Conversion stops after the batch that brings the output to `max_bytes`
/// (a converted set can be larger than the batches it comes from), and
/// no batch may decompress to more than `max_decompressed_bytes`.
pub fn down_convert(
    stored: &[u8],
    fetch_offset: i64,
    magic: i8,
    max_bytes: usize,
    max_decompressed_bytes: usize,
) -> Result<Bytes, RecordsError> {
    let mut out = BytesMut::with_capacity(stored.len() + stored.len() / 4);
    let mut inner = BytesMut::new();
    let mut section_buf = Vec::new();
    for item in BatchIter::new(stored, false) {
        let Ok((at, header)) = item else { break };
        if header.attributes & ATTR_CONTROL != 0 {
            continue;
        }
        let raw = &stored[at..at + header.total_bytes()];
        let codec = records::codec_from_id(header.codec())
            .ok_or_else(|| RecordsError::Malformed(format!("unknown codec {}", header.codec())))?;
        section_buf.clear();
        records::decompress_into(
            &raw[BATCH_HEADER_BYTES..],
            codec,
            max_decompressed_bytes,
            &mut section_buf,
        )?;
        let target = down_codec(codec, magic);
        let log_append_time = header.attributes & ATTR_LOG_APPEND_TIME != 0;
        let timestamp_attr = if magic == 1 && log_append_time {
            LEGACY_LOG_APPEND_TIME
        } else {
            0
        };
        let timestamp_of = |delta: i64| {
            if log_append_time {
                header.max_timestamp
            } else {
                header.base_timestamp.wrapping_add(delta)
            }
        };
        let mut walk = RawRecords::new(&section_buf, header.records_count.max(0) as usize);
        if target == Compression::None {
            for record in walk.by_ref() {
                let r = record?;
                let offset = header.base_offset + r.offset_delta as i64;
                if offset < fetch_offset {
                    continue;
                }
                put_message(
                    &mut out,
                    offset,
                    magic,
                    timestamp_attr,
                    timestamp_of(r.timestamp_delta),
                    r.key,
                    r.value,
                );
            }
        } else {
            inner.clear();
            let mut first_offset = None;
            let mut last_offset = header.base_offset;
            let mut max_timestamp = NO_TIMESTAMP;
            for record in walk.by_ref() {
                let r = record?;
                let offset = header.base_offset + r.offset_delta as i64;
                let first = *first_offset.get_or_insert(offset);
                let timestamp = timestamp_of(r.timestamp_delta);
                max_timestamp = max_timestamp.max(timestamp);
                last_offset = offset;
                let inner_offset = if magic == 1 { offset - first } else { offset };
                put_message(
                    &mut inner,
                    inner_offset,
                    magic,
                    timestamp_attr,
                    timestamp,
                    r.key,
                    r.value,
                );
            }
            if first_offset.is_none() {
                continue;
            }
            let mut compressed = BytesMut::new();
            records::compress_into(&inner, target, &mut compressed)?;
            put_message(
                &mut out,
                last_offset,
                magic,
                target as i8 | timestamp_attr,
                max_timestamp,
                None,
                Some(&compressed),
            );
        }
        walk.finish()?;
        if out.len() >= max_bytes {
            break;
        }
    }
    Ok(out.freeze())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::batch::tests::make_batch_at;
    use crate::storage::batch::{validate_produced_batch, BatchHeader};
    use crate::storage::records::{decode_batch, MAX_DECOMPRESSED_BYTES};

    /// `(key, value, timestamp)` of a test message.
    pub(crate) type TestMessage<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);

    /// An uncompressed message set of format `magic`.
    pub(crate) fn set_of(magic: i8, messages: &[TestMessage<'_>]) -> Bytes {
        let mut out = BytesMut::new();
        for (i, (k, v, ts)) in messages.iter().enumerate() {
            put_message(&mut out, i as i64, magic, 0, *ts, *k, *v);
        }
        out.freeze()
    }

    fn wrapped(magic: i8, codec: Compression, inner: &Bytes, ts: i64) -> Bytes {
        let mut compressed = BytesMut::new();
        records::compress_into(inner, codec, &mut compressed).unwrap();
        let mut out = BytesMut::new();
        put_message(&mut out, 0, magic, codec as i8, ts, None, Some(&compressed));
        out.freeze()
    }

    #[test]
    fn message_sets_become_one_v2_batch_with_their_records() {
        let msgs: [TestMessage<'_>; 3] = [
            (Some(b"k0"), Some(b"v0"), 1000),
            (None, Some(b"v1"), 1003),
            (Some(b"k2"), None, 999),
        ];
        for magic in [0i8, 1] {
            let plain = set_of(magic, &msgs);
            for (set, codec) in [
                (plain.clone(), Compression::None),
                (
                    wrapped(magic, Compression::Gzip, &plain, 1003),
                    Compression::Gzip,
                ),
                (
                    wrapped(magic, Compression::Snappy, &plain, 1003),
                    Compression::Snappy,
                ),
                (
                    wrapped(magic, Compression::Lz4, &plain, 1003),
                    Compression::Lz4,
                ),
            ] {
                assert!(is_legacy(&set));
                let batch = to_v2_batch(&set, MAX_DECOMPRESSED_BYTES).unwrap();
                let h = validate_produced_batch(&batch).unwrap();
                assert_eq!(h.codec(), codec as i16, "magic {magic}");
                assert_eq!((h.records_count, h.producer_id), (3, -1));
                let want_max = if magic == 1 { 1003 } else { -1 };
                assert_eq!(h.max_timestamp, want_max);
                let decoded = decode_batch(&batch, MAX_DECOMPRESSED_BYTES).unwrap();
                for (r, (k, v, ts)) in decoded.records.iter().zip(&msgs) {
                    assert_eq!(r.key.as_deref(), *k);
                    assert_eq!(r.value.as_deref(), *v);
                    assert_eq!(r.timestamp, if magic == 1 { *ts } else { -1 });
                }
            }
        }
    }

    #[test]
    fn magic_0_lz4_with_kafkas_old_header_checksum_is_read() {
        let plain = set_of(0, &[(Some(b"k".as_slice()), Some(&[7u8; 100_000][..]), -1)]);
        let mut frame = BytesMut::new();
        records::compress_into(&plain, Compression::Lz4, &mut frame).unwrap();
        let hc = 6 + if frame[4] & 0x08 != 0 { 8 } else { 0 };
        frame[hc] ^= 0xff; // what pre-0.10 clients computed differs
                           // A decoder that checks the header checksum refuses the frame.
        let mut standard = Vec::new();
        let checked = lz4::Decoder::new(&frame[..])
            .and_then(|mut d| std::io::Read::read_to_end(&mut d, &mut standard));
        assert!(checked.is_err());
        let mut out = BytesMut::new();
        put_message(
            &mut out,
            0,
            0,
            Compression::Lz4 as i8,
            -1,
            None,
            Some(&frame),
        );
        let batch = to_v2_batch(&out, MAX_DECOMPRESSED_BYTES).unwrap();
        let decoded = decode_batch(&batch, MAX_DECOMPRESSED_BYTES).unwrap();
        assert_eq!(
            decoded.records[0].value.as_deref(),
            Some(&[7u8; 100_000][..])
        );
        // The cap holds here too.
        assert!(matches!(
            to_v2_batch(&out, 50_000),
            Err(AppendError::Invalid(_))
        ));
    }

    #[test]
    fn damaged_and_mixed_message_sets_are_refused() {
        let set = set_of(1, &[(Some(b"k".as_slice()), Some(b"v".as_slice()), 5)]);
        let mut bad = set.to_vec();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(matches!(
            to_v2_batch(&bad, MAX_DECOMPRESSED_BYTES),
            Err(AppendError::Corrupt(BatchError::CrcMismatch { .. }))
        ));
        for cut in 1..set.len() {
            assert!(
                to_v2_batch(&set[..cut], MAX_DECOMPRESSED_BYTES).is_err(),
                "cut {cut}"
            );
        }
        let mut mixed = set.to_vec();
        mixed.extend_from_slice(&set_of(0, &[(None, Some(b"x".as_slice()), -1)]));
        assert!(matches!(
            to_v2_batch(&mixed, MAX_DECOMPRESSED_BYTES),
            Err(AppendError::Invalid(_))
        ));
        // A wrapper inside a wrapper.
        let inner = wrapped(1, Compression::Gzip, &set, 5);
        let nested = wrapped(1, Compression::Gzip, &inner, 5);
        assert!(matches!(
            to_v2_batch(&nested, MAX_DECOMPRESSED_BYTES),
            Err(AppendError::Invalid(_))
        ));
        // A gzip bomb stops at the cap.
        let big = set_of(1, &[(None, Some(&vec![0u8; 1 << 20]), 5)]);
        let bomb = wrapped(1, Compression::Gzip, &big, 5);
        assert!(matches!(
            to_v2_batch(&bomb, 1 << 16),
            Err(AppendError::Invalid(_))
        ));
    }

    /// `(offset, key, value, timestamp, codec of its wrapper)` of every
    /// message in a down-converted set, opened and made absolute.
    fn open(set: &[u8], magic: i8) -> Vec<(i64, Vec<u8>, i64, i8)> {
        let mut out = Vec::new();
        for m in parse_set(set).unwrap() {
            assert_eq!(m.magic, magic);
            let codec = legacy_codec(m.attributes).unwrap();
            if codec == Compression::None {
                out.push((m.offset, m.value.unwrap().to_vec(), m.timestamp, 0));
                continue;
            }
            let mut inflated = Vec::new();
            records::decompress_into(m.value.unwrap(), codec, 1 << 30, &mut inflated).unwrap();
            let inner = parse_set(&inflated).unwrap();
            let last = inner.last().unwrap().offset;
            for i in inner {
                let offset = if magic == 1 {
                    m.offset - last + i.offset
                } else {
                    i.offset
                };
                out.push((offset, i.value.unwrap().to_vec(), i.timestamp, codec as i8));
            }
        }
        out
    }

    #[test]
    fn batches_convert_down_with_offsets_timestamps_and_codecs() {
        let mut stored = Vec::new();
        for (i, codec) in [
            Compression::None,
            Compression::Gzip,
            Compression::Lz4,
            Compression::Zstd,
        ]
        .into_iter()
        .enumerate()
        {
            let mut b = make_batch_at(4, 10, codec, 5000 + 100 * i as i64).to_vec();
            b[..8].copy_from_slice(&(4 * i as i64).to_be_bytes());
            stored.extend_from_slice(&b);
        }
        // A batch cut off at the end of a read is left out.
        let cut = make_batch_at(2, 10, Compression::None, 9);
        stored.extend_from_slice(&cut[..cut.len() - 3]);
        for magic in [0i8, 1] {
            let set = down_convert(&stored, 1, magic, usize::MAX, MAX_DECOMPRESSED_BYTES).unwrap();
            let messages = open(&set, magic);
            let offsets: Vec<i64> = messages.iter().map(|m| m.0).collect();
            assert_eq!(offsets, (1..16).collect::<Vec<_>>(), "magic {magic}");
            let codecs: Vec<i8> = messages.iter().map(|m| m.3).collect();
            let lz4 = if magic == 1 { 3 } else { 0 };
            assert_eq!(
                codecs,
                [[0; 3].as_slice(), &[1; 4], &[lz4; 4], &[0; 4]].concat()
            );
            for (offset, _, ts, _) in &messages {
                let (batch, i) = (offset / 4, offset % 4);
                let want = if magic == 1 {
                    5000 + 100 * batch + i
                } else {
                    -1
                };
                assert_eq!(*ts, want, "magic {magic} offset {offset}");
            }
        }
    }

    #[test]
    fn conversion_stops_after_the_batch_that_reaches_the_byte_limit() {
        let mut stored = Vec::new();
        for i in 0..10i64 {
            let mut b = make_batch_at(10, 100, Compression::Zstd, 5).to_vec();
            b[..8].copy_from_slice(&(10 * i).to_be_bytes());
            stored.extend_from_slice(&b);
        }
        let all = down_convert(&stored, 0, 1, usize::MAX, MAX_DECOMPRESSED_BYTES).unwrap();
        assert_eq!(open(&all, 1).len(), 100);
        let some = down_convert(&stored, 0, 1, 2500, MAX_DECOMPRESSED_BYTES).unwrap();
        let offsets: Vec<i64> = open(&some, 1).iter().map(|m| m.0).collect();
        assert_eq!(
            offsets,
            (0..20).collect::<Vec<_>>(),
            "whole batches, at least one"
        );
        let one = down_convert(&stored, 0, 1, 1, MAX_DECOMPRESSED_BYTES).unwrap();
        assert_eq!(open(&one, 1).len(), 10);
    }

    #[test]
    fn log_append_time_batches_carry_their_append_time_in_v1() {
        let mut b = make_batch_at(2, 10, Compression::Gzip, 100).to_vec();
        let attributes = i16::from_be_bytes([b[21], b[22]]) | ATTR_LOG_APPEND_TIME;
        b[21..23].copy_from_slice(&attributes.to_be_bytes());
        b[35..43].copy_from_slice(&777i64.to_be_bytes());
        let set = down_convert(&b, 0, 1, usize::MAX, MAX_DECOMPRESSED_BYTES).unwrap();
        let wrapper = &parse_set(&set).unwrap()[0];
        assert_eq!(wrapper.attributes, 1 | LEGACY_LOG_APPEND_TIME);
        assert_eq!(wrapper.timestamp, 777);
        assert!(open(&set, 1).iter().all(|m| m.2 == 777));
        let _ = BatchHeader::parse(&b).unwrap();
    }
}
