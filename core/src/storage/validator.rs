//! The log validator: the rules a produced record set must pass before the
//! log assigns it offsets, and the changes the broker makes to a batch on
//! the way in (Kafka's `LogValidator`).
//!
//! Every v2 batch of a record set is checked whole (length, CRC-32C, dense
//! offsets, `max.message.bytes`, see [`batch`]) and then its records are
//! walked once, borrowed from the request when the batch is uncompressed
//! and decompressed with a cap into a buffer reused across appends when it
//! is not:
//!
//! - **framing**: the declared record count, offset deltas `0..n`, no bytes
//!   after the last record;
//! - **keys**: a compacted topic refuses a record without a key
//!   (INVALID_RECORD);
//! - **timestamps**: under `CreateTime`, a record timestamp other than -1
//!   must lie in `[now - message.timestamp.before.max.ms, now +
//!   message.timestamp.after.max.ms]`, and a producer may not mark a batch
//!   `LogAppendTime` (INVALID_TIMESTAMP, KIP-937).
//!
//! Each refused record is reported by its index in the record set
//! (Kafka's `batch_index`), and any refused record refuses the whole set.
//!
//! What the broker changes:
//!
//! - **`maxTimestamp`** and the timestamp-type attribute are what the
//!   records say (`CreateTime`) or the append time (`LogAppendTime`), not
//!   what the producer wrote: Sarama before 1.45.1 writes -1 there, which
//!   would hide the batch from time lookups and time retention. The header
//!   is rewritten, and its CRC-32C recomputed, only when it differs.
//! - **`compression.type`**: a batch in another codec than the topic's is
//!   recompressed. The records section is byte for byte the same in every
//!   codec, so only the compressed bytes and the header change.
//!
//! Everything else is the producer's bytes: a batch that needs no change
//! is handed to the log as a slice of the request.

use std::cell::RefCell;
use std::fmt::Display;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::Compression;

use super::append::{AppendError, TimestampType};
pub use super::append::{RecordError, RecordErrorKind, RecordErrors};
use super::batch::{
    self, BatchError, BatchHeader, ATTR_CONTROL, ATTR_LOG_APPEND_TIME, BATCH_HEADER_BYTES,
    LOG_OVERHEAD,
};
use super::records::{self, RawRecords, RecordsError, MAX_DECOMPRESSED_BYTES};

/// `timestamp` of a record that has none (magic 0 data, some clients).
pub const NO_TIMESTAMP: i64 = -1;

/// Most record errors one answer lists; the count says how many there were.
pub const MAX_RECORD_ERRORS: usize = 1000;

/// A decompression buffer larger than this is not kept for the next batch.
const SCRATCH_KEEP_BYTES: usize = 4 << 20;

/// A topic's `compression.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopicCompression {
    /// Batches are stored in the codec the producer chose.
    #[default]
    Producer,
    /// Every batch is stored in this codec (`uncompressed` is `None`).
    Codec(Compression),
}

impl TopicCompression {
    /// Parses Kafka's values: `producer`, `uncompressed`, `gzip`, `snappy`,
    /// `lz4`, `zstd`.
    pub fn parse(value: &str) -> Option<TopicCompression> {
        Some(match value.trim() {
            "producer" => TopicCompression::Producer,
            "uncompressed" => TopicCompression::Codec(Compression::None),
            "gzip" => TopicCompression::Codec(Compression::Gzip),
            "snappy" => TopicCompression::Codec(Compression::Snappy),
            "lz4" => TopicCompression::Codec(Compression::Lz4),
            "zstd" => TopicCompression::Codec(Compression::Zstd),
            _ => return None,
        })
    }
}

/// What a partition's appends must obey, from its topic's configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendRules {
    pub timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`: how old a record may be.
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far in the future it may be.
    pub timestamp_after_max_ms: i64,
    /// `cleanup.policy` includes `compact`: records need keys.
    pub compacted: bool,
    pub compression: TopicCompression,
    pub max_message_bytes: usize,
}

/// One batch as the log will store it; only `baseOffset` and
/// `partitionLeaderEpoch` (outside the CRC) remain to be patched.
#[derive(Debug, Clone)]
pub struct ValidBatch {
    /// The header as stored, with the producer's base offset.
    pub header: BatchHeader,
    /// The 61 header bytes as stored.
    pub head: [u8; BATCH_HEADER_BYTES],
    /// The bytes after the header: a slice of the request unless the batch
    /// was recompressed.
    pub body: Bytes,
}

impl ValidBatch {
    /// A batch taken as it is, without the append rules: what an older
    /// broker or a transaction coordinator may have written (for tests of
    /// code that reads such logs).
    #[cfg(test)]
    pub(crate) fn unchecked(raw: &Bytes) -> ValidBatch {
        let mut head = [0u8; BATCH_HEADER_BYTES];
        head.copy_from_slice(&raw[..BATCH_HEADER_BYTES]);
        ValidBatch {
            header: BatchHeader::parse(raw).expect("a batch header"),
            head,
            body: raw.slice(BATCH_HEADER_BYTES..),
        }
    }
}

/// Collects refused records up to the cap.
struct Refusals {
    errors: Vec<RecordError>,
    total: usize,
}

impl Refusals {
    fn push(&mut self, batch_index: i32, kind: RecordErrorKind, message: impl FnOnce() -> String) {
        self.total += 1;
        if self.errors.len() < MAX_RECORD_ERRORS {
            self.errors.push(RecordError {
                batch_index,
                kind,
                message: message(),
            });
        }
    }
}

thread_local! {
    /// Decompressed records of the batch being validated, reused so that a
    /// compressed append does not allocate per batch.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Validates a producer's record set under `rules` at `now_ms` and returns
/// its batches as they are to be stored. `partition` names the partition in
/// messages (`topic-index`). Nothing is kept when this fails.
pub fn validate(
    records: &Bytes,
    rules: &AppendRules,
    now_ms: i64,
    partition: &dyn Display,
) -> Result<Vec<ValidBatch>, AppendError> {
    let mut batches = Vec::new();
    let mut refusals = Refusals {
        errors: Vec::new(),
        total: 0,
    };
    let mut position = 0usize;
    let mut first_index = 0i32;
    while position < records.len() {
        let header = batch::validate_produced_batch(&records[position..]).map_err(|e| match e {
            BatchError::UnsupportedMagic(_) | BatchError::Inconsistent(_) => {
                AppendError::Invalid(e.to_string())
            }
            _ => AppendError::Corrupt(e),
        })?;
        let total = header.total_bytes();
        if total > rules.max_message_bytes {
            return Err(AppendError::TooLarge {
                size: total,
                max: rules.max_message_bytes,
            });
        }
        if header.attributes & ATTR_CONTROL != 0 {
            return Err(AppendError::Invalid(
                "clients are not allowed to write control records".into(),
            ));
        }
        let raw = records.slice(position..position + total);
        batches.push(validate_batch(
            &raw,
            header,
            rules,
            now_ms,
            partition,
            first_index,
            &mut refusals,
        )?);
        first_index = first_index.saturating_add(header.records_count);
        position += total;
    }
    if refusals.total > 0 {
        return Err(AppendError::Records(RecordErrors {
            errors: refusals.errors,
            total: refusals.total,
        }));
    }
    Ok(batches)
}

/// Walks one batch's records and builds the batch to store.
fn validate_batch(
    raw: &Bytes,
    header: BatchHeader,
    rules: &AppendRules,
    now_ms: i64,
    partition: &dyn Display,
    first_index: i32,
    refusals: &mut Refusals,
) -> Result<ValidBatch, AppendError> {
    let body = &raw[BATCH_HEADER_BYTES..];
    let source = records::codec_from_id(header.codec())
        .ok_or_else(|| AppendError::Invalid(format!("unknown codec {}", header.codec())))?;
    let target = match rules.compression {
        TopicCompression::Codec(c) if c != source => Some(c),
        _ => None,
    };
    let walk = |section: &[u8], refusals: &mut Refusals| {
        walk_records(
            section,
            &header,
            rules,
            now_ms,
            partition,
            first_index,
            refusals,
        )
    };
    let (max_timestamp, recompressed) = if source == Compression::None {
        let max_timestamp = walk(body, refusals)?;
        let recompressed = match target {
            Some(codec) if refusals.total == 0 => Some(recompress(raw, body, codec)?),
            _ => None,
        };
        (max_timestamp, recompressed)
    } else {
        SCRATCH.with(|scratch| {
            let mut section = scratch.borrow_mut();
            section.clear();
            let result =
                records::decompress_into(body, source, MAX_DECOMPRESSED_BYTES, &mut section)
                    .map_err(|e| match e {
                        RecordsError::TooLarge(max) => AppendError::Invalid(format!(
                            "batch decompresses to more than {max} bytes"
                        )),
                        RecordsError::Malformed(m) => {
                            AppendError::Invalid(format!("cannot decompress the batch: {m}"))
                        }
                    })
                    .and_then(|()| {
                        let max_timestamp = walk(&section, refusals)?;
                        let recompressed = match target {
                            Some(codec) if refusals.total == 0 => {
                                Some(recompress(raw, &section, codec)?)
                            }
                            _ => None,
                        };
                        Ok((max_timestamp, recompressed))
                    });
            if section.capacity() > SCRATCH_KEEP_BYTES {
                *section = Vec::new();
            }
            result
        })?
    };
    if refusals.total > 0 {
        // The set is refused; the batch itself no longer matters.
        return Ok(ValidBatch {
            header,
            head: [0; BATCH_HEADER_BYTES],
            body: Bytes::new(),
        });
    }
    let (mut head, body) = match recompressed {
        Some(batch) => {
            if batch.len() > rules.max_message_bytes {
                return Err(AppendError::TooLarge {
                    size: batch.len(),
                    max: rules.max_message_bytes,
                });
            }
            let mut head = [0u8; BATCH_HEADER_BYTES];
            head.copy_from_slice(&batch[..BATCH_HEADER_BYTES]);
            (head, batch.slice(BATCH_HEADER_BYTES..))
        }
        None => {
            let mut head = [0u8; BATCH_HEADER_BYTES];
            head.copy_from_slice(&raw[..BATCH_HEADER_BYTES]);
            (head, raw.slice(BATCH_HEADER_BYTES..))
        }
    };
    let (log_append_time, max_timestamp) = match rules.timestamp_type {
        TimestampType::LogAppendTime => (true, now_ms),
        TimestampType::CreateTime => (false, max_timestamp),
    };
    let stored = BatchHeader::parse(&head).map_err(AppendError::Corrupt)?;
    let has_log_append_time = stored.attributes & ATTR_LOG_APPEND_TIME != 0;
    if stored.max_timestamp != max_timestamp || has_log_append_time != log_append_time {
        let attributes = if log_append_time {
            stored.attributes | ATTR_LOG_APPEND_TIME
        } else {
            stored.attributes & !ATTR_LOG_APPEND_TIME
        };
        batch::set_timestamp_fields(&mut head, attributes, max_timestamp, &body);
    }
    let header = BatchHeader::parse(&head).map_err(AppendError::Corrupt)?;
    Ok(ValidBatch { header, head, body })
}

/// Checks the records of one batch (`section` is its records section,
/// decompressed) and returns their largest timestamp (-1 if none has one).
fn walk_records(
    section: &[u8],
    header: &BatchHeader,
    rules: &AppendRules,
    now_ms: i64,
    partition: &dyn Display,
    first_index: i32,
    refusals: &mut Refusals,
) -> Result<i64, AppendError> {
    let count = header.records_count.max(0) as usize;
    let producer_log_append_time = header.attributes & ATTR_LOG_APPEND_TIME != 0;
    let check_time = rules.timestamp_type == TimestampType::CreateTime;
    // Long.MAX_VALUE is Kafka's "no bound".
    let lowest = if rules.timestamp_before_max_ms == i64::MAX {
        i64::MIN
    } else {
        now_ms.saturating_sub(rules.timestamp_before_max_ms)
    };
    let highest = now_ms.saturating_add(rules.timestamp_after_max_ms);
    let mut max_timestamp = NO_TIMESTAMP;
    let mut walk = RawRecords::new(section, count);
    for (i, record) in walk.by_ref().enumerate() {
        let record =
            record.map_err(|e| AppendError::Invalid(format!("record {i} of the batch: {e}")))?;
        if record.offset_delta as usize != i {
            return Err(AppendError::Invalid(format!(
                "record {i} of the batch has offset delta {}",
                record.offset_delta
            )));
        }
        let timestamp = header.base_timestamp.wrapping_add(record.timestamp_delta);
        max_timestamp = max_timestamp.max(timestamp);
        let index = first_index.saturating_add(i as i32);
        if rules.compacted && record.key.is_none() {
            refusals.push(index, RecordErrorKind::InvalidRecord, || {
                format!("Compacted topic cannot accept message without key in topic partition {partition}.")
            });
        } else if check_time && timestamp != NO_TIMESTAMP {
            if timestamp < lowest || timestamp > highest {
                refusals.push(index, RecordErrorKind::InvalidTimestamp, || {
                    format!(
                        "Timestamp {timestamp} of message with offset {i} is out of range. \
                         The timestamp should be within [{lowest}, {highest}]"
                    )
                });
            }
        } else if producer_log_append_time {
            refusals.push(index, RecordErrorKind::InvalidTimestamp, || {
                format!(
                    "Invalid timestamp type in message {i}. Producer should not set \
                     timestamp type to LogAppendTime."
                )
            });
        }
    }
    walk.finish()
        .map_err(|e| AppendError::Invalid(format!("batch of {count} records: {e}")))?;
    Ok(max_timestamp)
}

/// The batch `raw` with its records section compressed with `codec`
/// instead: same header fields but the codec bits, length and CRC.
fn recompress(raw: &[u8], section: &[u8], codec: Compression) -> Result<Bytes, AppendError> {
    let header = BatchHeader::parse(raw).map_err(AppendError::Corrupt)?;
    let attributes = (header.attributes & !0x7) | codec as i16;
    build_batch(&raw[..BATCH_HEADER_BYTES], attributes, section, codec)
        .map_err(|e| AppendError::Invalid(e.to_string()))
}

/// A v2 batch with the header fields of `head` (61 bytes), `attributes`,
/// and `section` compressed with `codec`; length and CRC computed.
pub fn build_batch(
    head: &[u8],
    attributes: i16,
    section: &[u8],
    codec: Compression,
) -> Result<Bytes, RecordsError> {
    let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + section.len() / 2 + 64);
    out.extend_from_slice(&head[..BATCH_HEADER_BYTES]);
    records::compress_into(section, codec, &mut out)?;
    let length = i32::try_from(out.len() - LOG_OVERHEAD)
        .map_err(|_| RecordsError::TooLarge(i32::MAX as usize))?;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::tests::make_batch_at;
    use crate::storage::batch::validate_batch;
    use crate::storage::records::{decode_batch, records_section};
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions};

    const NOW: i64 = 1_700_000_000_000;

    /// Kafka 4's defaults: any age, at most an hour ahead.
    fn rules() -> AppendRules {
        AppendRules {
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: 3_600_000,
            compacted: false,
            compression: TopicCompression::Producer,
            max_message_bytes: 1_048_588,
        }
    }

    /// A batch of records `(key, timestamp)`.
    fn keyed(records: &[(Option<&str>, i64)], compression: Compression) -> Bytes {
        let records: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (key, ts))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: kafka_protocol::records::TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32 - 1,
                timestamp: *ts,
                key: key.map(|k| Bytes::from(k.to_string())),
                value: Some(Bytes::from(format!("value-{i}"))),
                headers: Default::default(),
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

    /// The stored bytes of a validated batch.
    fn stored(b: &ValidBatch) -> Bytes {
        let mut v = b.head.to_vec();
        v.extend_from_slice(&b.body);
        Bytes::from(v)
    }

    fn refused(result: Result<Vec<ValidBatch>, AppendError>) -> RecordErrors {
        match result {
            Err(AppendError::Records(e)) => e,
            other => panic!("expected record errors, got {other:?}"),
        }
    }

    #[test]
    fn a_batch_that_needs_no_change_is_the_producers_bytes() {
        let batch = keyed(&[(Some("a"), NOW), (Some("b"), NOW + 5)], Compression::Lz4);
        let out = validate(&batch, &rules(), NOW, &"t-0").unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(stored(&out[0]), batch);
        assert_eq!(out[0].body.as_ptr(), batch[BATCH_HEADER_BYTES..].as_ptr());
        assert_eq!(out[0].header.max_timestamp, NOW + 5);
    }

    #[test]
    fn a_wrong_max_timestamp_is_recomputed_from_the_records_with_a_valid_crc() {
        for codec in [Compression::None, Compression::Gzip, Compression::Zstd] {
            for wrong in [-1, 0, NOW + 999] {
                let mut b = keyed(&[(Some("a"), NOW - 10), (Some("b"), NOW - 20)], codec).to_vec();
                b[35..43].copy_from_slice(&wrong.to_be_bytes());
                let crc = crc32c::crc32c(&b[21..]);
                b[17..21].copy_from_slice(&crc.to_be_bytes());
                let out = validate(&Bytes::from(b), &rules(), NOW, &"t-0").unwrap();
                let bytes = stored(&out[0]);
                let h = validate_batch(&bytes).expect("CRC is valid after the rewrite");
                assert_eq!(h.max_timestamp, NOW - 10, "{codec:?} with {wrong}");
                assert_eq!(out[0].header, h);
            }
        }
    }

    #[test]
    fn log_append_time_sets_the_attribute_and_the_append_time() {
        let r = AppendRules {
            timestamp_type: TimestampType::LogAppendTime,
            ..rules()
        };
        // Timestamps far out of range are not checked under LogAppendTime.
        let batch = keyed(&[(Some("a"), 5), (Some("b"), NOW * 2)], Compression::None);
        let out = validate(&batch, &r, NOW, &"t-0").unwrap();
        let h = validate_batch(&stored(&out[0])).unwrap();
        assert_eq!(h.max_timestamp, NOW);
        assert_ne!(h.attributes & ATTR_LOG_APPEND_TIME, 0);
        // A producer that marks its batch LogAppendTime is refused.
        let mut b = batch.to_vec();
        b[22] |= ATTR_LOG_APPEND_TIME as u8;
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        let errors = refused(validate(&Bytes::from(b), &r, NOW, &"t-0"));
        assert_eq!(errors.kind(), RecordErrorKind::InvalidTimestamp);
        assert_eq!(errors.total, 2);
    }

    #[test]
    fn keyless_records_on_compacted_topics_are_refused_by_index_across_batches() {
        let r = AppendRules {
            compacted: true,
            ..rules()
        };
        let mut set = keyed(&[(Some("a"), NOW), (None, NOW)], Compression::None).to_vec();
        set.extend_from_slice(&keyed(
            &[(None, NOW), (Some("d"), NOW), (None, NOW)],
            Compression::Snappy,
        ));
        let errors = refused(validate(&Bytes::from(set), &r, NOW, &"t-3"));
        let indexes: Vec<i32> = errors.errors.iter().map(|e| e.batch_index).collect();
        assert_eq!(indexes, vec![1, 2, 4]);
        assert_eq!(errors.kind(), RecordErrorKind::InvalidRecord);
        assert!(errors.errors[0].message.contains("topic partition t-3"));
        let top = errors.to_string();
        assert!(top.contains("3 record errors in total"), "{top}");
        assert!(top.contains("RecordError(batchIndex=1"), "{top}");
        // A key problem is reported before a timestamp problem of the same
        // record, and timestamp problems make the answer INVALID_TIMESTAMP.
        let set = keyed(
            &[(None, NOW + 7_200_000), (Some("b"), NOW + 7_200_000)],
            Compression::None,
        );
        let errors = refused(validate(&set, &r, NOW, &"t-3"));
        assert_eq!(errors.errors[0].kind, RecordErrorKind::InvalidRecord);
        assert_eq!(errors.errors[1].kind, RecordErrorKind::InvalidTimestamp);
        assert_eq!(errors.kind(), RecordErrorKind::InvalidTimestamp);
    }

    #[test]
    fn timestamps_are_checked_against_both_bounds() {
        let r = AppendRules {
            timestamp_before_max_ms: 1000,
            timestamp_after_max_ms: 2000,
            ..rules()
        };
        let ok = [NOW - 1000, NOW, NOW + 2000, NO_TIMESTAMP];
        for ts in ok {
            let batch = keyed(&[(Some("a"), ts)], Compression::None);
            assert!(validate(&batch, &r, NOW, &"t-0").is_ok(), "{ts}");
        }
        for ts in [NOW - 1001, NOW + 2001, 0] {
            let batch = keyed(&[(Some("a"), NOW), (Some("b"), ts)], Compression::Gzip);
            let errors = refused(validate(&batch, &r, NOW, &"t-0"));
            assert_eq!(errors.errors.len(), 1, "{ts}");
            assert_eq!(errors.errors[0].batch_index, 1);
            assert!(errors.errors[0].message.contains(&format!(
                "within [{}, {}]",
                NOW - 1000,
                NOW + 2000
            )));
        }
        // Unbounded settings never overflow.
        let open = AppendRules {
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
            ..rules()
        };
        for ts in [i64::MIN + 1, i64::MAX - 1] {
            let batch = keyed(&[(Some("a"), ts)], Compression::None);
            assert!(validate(&batch, &open, NOW, &"t-0").is_ok(), "{ts}");
        }
    }

    #[test]
    fn error_lists_are_capped_but_counted() {
        let r = AppendRules {
            compacted: true,
            ..rules()
        };
        let records: Vec<(Option<&str>, i64)> =
            (0..MAX_RECORD_ERRORS + 5).map(|_| (None, NOW)).collect();
        let errors = refused(validate(
            &keyed(&records, Compression::Lz4),
            &r,
            NOW,
            &"t-0",
        ));
        assert_eq!(errors.errors.len(), MAX_RECORD_ERRORS);
        assert_eq!(errors.total, MAX_RECORD_ERRORS + 5);
    }

    #[test]
    fn recompression_keeps_every_record_byte_and_the_producer_fields() {
        let batch = crate::storage::batch::tests::make_idempotent_batch(42, 3, 17, 20);
        let source_section = records_section(&batch, MAX_DECOMPRESSED_BYTES).unwrap();
        let source = decode_batch(&batch, MAX_DECOMPRESSED_BYTES).unwrap();
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Zstd,
        ] {
            let r = AppendRules {
                compression: TopicCompression::Codec(codec),
                ..rules()
            };
            let out = validate(&batch, &r, NOW, &"t-0").unwrap();
            let bytes = stored(&out[0]);
            let h = validate_produced_batch_ok(&bytes);
            assert_eq!(h.codec(), codec as i16);
            assert_eq!(out[0].header, h);
            let before = BatchHeader::parse(&batch).unwrap();
            assert_eq!(
                (
                    h.producer_id,
                    h.producer_epoch,
                    h.base_sequence,
                    h.records_count
                ),
                (
                    before.producer_id,
                    before.producer_epoch,
                    before.base_sequence,
                    before.records_count
                )
            );
            assert_eq!(
                records_section(&bytes, MAX_DECOMPRESSED_BYTES).unwrap(),
                source_section,
                "{codec:?}"
            );
            assert_eq!(
                decode_batch(&bytes, MAX_DECOMPRESSED_BYTES)
                    .unwrap()
                    .records,
                source.records
            );
        }
    }

    fn validate_produced_batch_ok(bytes: &[u8]) -> BatchHeader {
        batch::validate_produced_batch(bytes).expect("a valid batch")
    }

    #[test]
    fn a_record_count_that_disagrees_with_the_records_is_refused() {
        let batch = make_batch_at(3, 10, Compression::None, NOW);
        let mut b = batch.to_vec();
        // Claim two records (and a last offset delta of 1).
        b[23..27].copy_from_slice(&1i32.to_be_bytes());
        b[57..61].copy_from_slice(&2i32.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&Bytes::from(b), &rules(), NOW, &"t-0"),
            Err(AppendError::Invalid(_))
        ));
    }

    #[test]
    fn control_batches_from_clients_are_refused() {
        let mut b = make_batch_at(1, 10, Compression::None, NOW).to_vec();
        b[22] |= ATTR_CONTROL as u8;
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&Bytes::from(b), &rules(), NOW, &"t-0"),
            Err(AppendError::Invalid(_))
        ));
    }

    #[test]
    fn topic_compression_parses_kafkas_values() {
        assert_eq!(
            TopicCompression::parse("producer"),
            Some(TopicCompression::Producer)
        );
        assert_eq!(
            TopicCompression::parse("uncompressed"),
            Some(TopicCompression::Codec(Compression::None))
        );
        assert_eq!(
            TopicCompression::parse("zstd"),
            Some(TopicCompression::Codec(Compression::Zstd))
        );
        assert_eq!(TopicCompression::parse("none"), None);
    }
}
