//! Record batch headers (Kafka record format v2), read and validated without
//! decompressing or copying the records.
//!
//! The broker stores batches exactly as producers sent them. It only needs the
//! fixed 61-byte header to assign offsets, check integrity and index the batch.
//! Decoding individual records (keys, values, headers) is done elsewhere and
//! only where it is unavoidable (e.g. ListOffsets by timestamp), through the
//! `kafka-protocol` crate.
//!
//! ```text
//! offset  size  field                  notes
//! 0       8     baseOffset             patched by the broker on append
//! 8       4     batchLength            bytes after this field
//! 12      4     partitionLeaderEpoch   patched by the broker on append
//! 16      1     magic                  must be 2
//! 17      4     crc                    CRC-32C of bytes 21..end
//! 21      2     attributes             bits 0-2 codec, 3 timestamp type,
//!                                      4 transactional, 5 control
//! 23      4     lastOffsetDelta
//! 27      8     baseTimestamp
//! 35      8     maxTimestamp
//! 43      8     producerId
//! 51      2     producerEpoch
//! 53      4     baseSequence
//! 57      4     recordsCount
//! 61      ...   records (possibly compressed)
//! ```
//!
//! Because the CRC covers only bytes from `attributes` onward, patching
//! `baseOffset` and `partitionLeaderEpoch` never requires a new checksum.
//! The log validator (`validator.rs`) also rewrites `attributes` and
//! `maxTimestamp` when the producer's values are wrong, and then the CRC.

use std::fmt;

use bytes::Bytes;

/// Size of the fixed part of a v2 record batch.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before the `batchLength` field ends: `baseOffset` + `batchLength`.
pub const LOG_OVERHEAD: usize = 12;
/// Smallest value `batchLength` can take for a well-formed v2 batch.
pub const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32;
/// The only record format Runnel stores.
pub const MAGIC_V2: i8 = 2;

const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const MAX_TIMESTAMP_OFFSET: usize = 35;

/// Attribute bit: the batch belongs to a transaction.
pub const ATTR_TRANSACTIONAL: i16 = 1 << 4;
/// Attribute bit: the batch holds control records (transaction markers).
pub const ATTR_CONTROL: i16 = 1 << 5;
/// Attribute bit: `maxTimestamp` is the broker's append time.
pub const ATTR_LOG_APPEND_TIME: i16 = 1 << 3;

/// Why a byte range is not a valid record batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the header or the declared length needs.
    Truncated { needed: usize, available: usize },
    /// `batchLength` is smaller than a header or otherwise impossible.
    BadLength(i32),
    /// A record format other than v2.
    UnsupportedMagic(i8),
    /// The stored CRC-32C does not match the bytes.
    CrcMismatch { stored: u32, computed: u32 },
    /// Header fields contradict each other.
    Inconsistent(&'static str),
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Truncated { needed, available } => {
                write!(
                    f,
                    "record batch truncated: needs {needed} bytes, {available} present"
                )
            }
            BatchError::BadLength(len) => write!(f, "record batch length {len} is invalid"),
            BatchError::UnsupportedMagic(m) => {
                write!(f, "record format v{m} is not supported (only v2)")
            }
            BatchError::CrcMismatch { stored, computed } => write!(
                f,
                "record batch CRC-32C mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            BatchError::Inconsistent(what) => write!(f, "record batch header inconsistent: {what}"),
        }
    }
}

impl std::error::Error for BatchError {}

/// The fixed header of one v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Value of the `batchLength` field (total size minus [`LOG_OVERHEAD`]).
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8-byte slice"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4-byte slice"))
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2-byte slice"))
}

impl BatchHeader {
    /// Reads just `baseOffset` and `batchLength` (the first 12 bytes), enough
    /// to walk a sequence of batches.
    pub fn peek_size(bytes: &[u8]) -> Result<(i64, usize), BatchError> {
        if bytes.len() < LOG_OVERHEAD {
            return Err(BatchError::Truncated {
                needed: LOG_OVERHEAD,
                available: bytes.len(),
            });
        }
        let length = be_i32(bytes, 8);
        if length < MIN_BATCH_LENGTH {
            return Err(BatchError::BadLength(length));
        }
        Ok((be_i64(bytes, 0), LOG_OVERHEAD + length as usize))
    }

    /// Parses the 61-byte header at the start of `bytes`. Does not look at
    /// the records or check the CRC.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_BYTES,
                available: bytes.len(),
            });
        }
        let header = BatchHeader {
            base_offset: be_i64(bytes, 0),
            batch_length: be_i32(bytes, 8),
            partition_leader_epoch: be_i32(bytes, 12),
            magic: bytes[16] as i8,
            crc: u32::from_be_bytes(
                bytes[CRC_OFFSET..CRC_OFFSET + 4]
                    .try_into()
                    .expect("4 bytes"),
            ),
            attributes: be_i16(bytes, 21),
            last_offset_delta: be_i32(bytes, 23),
            base_timestamp: be_i64(bytes, 27),
            max_timestamp: be_i64(bytes, 35),
            producer_id: be_i64(bytes, 43),
            producer_epoch: be_i16(bytes, 51),
            base_sequence: be_i32(bytes, 53),
            records_count: be_i32(bytes, 57),
        };
        if header.magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(header.magic));
        }
        if header.batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::BadLength(header.batch_length));
        }
        Ok(header)
    }

    /// Total bytes the batch occupies, header included.
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Offset the next batch after this one starts at.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Compression codec id from the attributes (0 none, 1 gzip, 2 snappy,
    /// 3 lz4, 4 zstd).
    pub fn codec(&self) -> i16 {
        self.attributes & 0x7
    }
}

/// Checks one whole batch at the start of `bytes`: header, declared length
/// against the bytes present, CRC-32C, and the offset/count fields.
/// Returns the header; the batch occupies `header.total_bytes()` bytes.
pub fn validate_batch(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    let total = header.total_bytes();
    if bytes.len() < total {
        return Err(BatchError::Truncated {
            needed: total,
            available: bytes.len(),
        });
    }
    let computed = crc32c::crc32c(&bytes[ATTRIBUTES_OFFSET..total]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    if header.last_offset_delta < 0 {
        return Err(BatchError::Inconsistent("negative lastOffsetDelta"));
    }
    if header.records_count < 0 {
        return Err(BatchError::Inconsistent("negative recordsCount"));
    }
    if header.codec() > 4 {
        return Err(BatchError::Inconsistent("unknown compression codec"));
    }
    Ok(header)
}

/// Checks a batch as a producer must send it: in addition to
/// [`validate_batch`], the records must be dense (`recordsCount ==
/// lastOffsetDelta + 1`) and non-empty. Compacted batches that the broker
/// itself writes may have gaps, producers' batches never do.
pub fn validate_produced_batch(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = validate_batch(bytes)?;
    if header.records_count == 0 {
        return Err(BatchError::Inconsistent("batch holds no records"));
    }
    if header.records_count as i64 != header.last_offset_delta as i64 + 1 {
        return Err(BatchError::Inconsistent(
            "recordsCount does not match lastOffsetDelta",
        ));
    }
    Ok(header)
}

/// Writes `base_offset` and `leader_epoch` into a batch header (at least
/// its first 16 bytes; the fields outside the CRC).
pub fn patch_header_prefix(prefix: &mut [u8], base_offset: i64, leader_epoch: i32) {
    prefix[0..8].copy_from_slice(&base_offset.to_be_bytes());
    prefix[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Rewrites `attributes` and `maxTimestamp` in a batch's 61 header bytes and
/// recomputes the CRC-32C over them and `body` (the bytes after the
/// header), without copying the body.
pub fn set_timestamp_fields(
    head: &mut [u8; BATCH_HEADER_BYTES],
    attributes: i16,
    max_timestamp: i64,
    body: &[u8],
) {
    head[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    head[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&max_timestamp.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head[ATTRIBUTES_OFFSET..]), body);
    head[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Iterates over consecutive whole batches in a buffer, validating each.
/// Stops at the first invalid or incomplete batch and reports where.
pub struct BatchIter<'a> {
    bytes: &'a [u8],
    position: usize,
    check_crc: bool,
}

impl<'a> BatchIter<'a> {
    pub fn new(bytes: &'a [u8], check_crc: bool) -> Self {
        BatchIter {
            bytes,
            position: 0,
            check_crc,
        }
    }

    /// Byte position of the next batch within the buffer.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl Iterator for BatchIter<'_> {
    /// `(position, header)` of each batch, or the error that stopped iteration.
    type Item = Result<(usize, BatchHeader), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.bytes[self.position..];
        if rest.is_empty() {
            return None;
        }
        let result = if self.check_crc {
            validate_batch(rest)
        } else {
            BatchHeader::parse(rest).and_then(|h| {
                if rest.len() < h.total_bytes() {
                    Err(BatchError::Truncated {
                        needed: h.total_bytes(),
                        available: rest.len(),
                    })
                } else {
                    Ok(h)
                }
            })
        };
        match result {
            Ok(header) => {
                let at = self.position;
                self.position += header.total_bytes();
                Some(Ok((at, header)))
            }
            Err(e) => {
                // Make the iterator fused: an error ends the walk.
                self.bytes = &self.bytes[..self.position];
                Some(Err(e))
            }
        }
    }
}

/// A transaction marker (Kafka's control batch): one control record whose
/// key is (version 0, type 0 ABORT or 1 COMMIT) and whose value is
/// (version 0, the coordinator's epoch), in a transactional, uncompressed
/// batch of `producer_id` and `producer_epoch`.
pub fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Bytes {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&(commit as i16).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key: Some(Bytes::from(key)),
        value: Some(Bytes::from(value)),
        headers: Default::default(),
    };
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        std::slice::from_ref(&record),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("a control record always encodes");
    buf.freeze()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// Encodes `count` records with the given codec into one v2 batch, the way
    /// a producer would.
    pub(crate) fn make_batch(count: usize, value_len: usize, compression: Compression) -> Bytes {
        make_batch_at(count, value_len, compression, 1_700_000_000_000)
    }

    pub(crate) fn make_batch_at(
        count: usize,
        value_len: usize,
        compression: Compression,
        timestamp: i64,
    ) -> Bytes {
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
                // The encoder groups records into one batch only while
                // offset - sequence stays constant; base sequence is -1.
                sequence: i as i32 - 1,
                timestamp: timestamp + i as i64,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(vec![b'v'; value_len])),
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
        .expect("encode batch");
        buf.freeze()
    }

    /// A batch as an idempotent producer sends it.
    pub(crate) fn make_idempotent_batch(
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
        count: usize,
    ) -> Bytes {
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: base_sequence + i as i32,
                timestamp: 1_700_000_000_000,
                key: None,
                value: Some(Bytes::from(format!("seq-{}", base_sequence + i as i32))),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::Lz4,
            },
        )
        .expect("encode batch");
        buf.freeze()
    }

    #[test]
    fn a_well_formed_batch_validates_and_reports_its_fields() {
        let batch = make_batch(10, 20, Compression::None);
        let h = validate_produced_batch(&batch).unwrap();
        assert_eq!(h.records_count, 10);
        assert_eq!(h.last_offset_delta, 9);
        assert_eq!(h.total_bytes(), batch.len());
        assert_eq!(h.base_timestamp, 1_700_000_000_000);
        assert_eq!(h.max_timestamp, 1_700_000_000_009);
        assert_eq!(h.codec(), 0);
    }

    #[test]
    fn every_codec_is_recognised() {
        for (c, id) in [
            (Compression::Gzip, 1),
            (Compression::Snappy, 2),
            (Compression::Lz4, 3),
            (Compression::Zstd, 4),
        ] {
            let batch = make_batch(5, 100, c);
            assert_eq!(validate_produced_batch(&batch).unwrap().codec(), id);
        }
    }

    #[test]
    fn a_flipped_bit_in_the_records_fails_the_crc() {
        let batch = make_batch(3, 10, Compression::None);
        let mut bad = batch.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        assert!(matches!(
            validate_batch(&bad),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn patching_offset_and_epoch_keeps_the_crc_valid() {
        let batch = make_batch(3, 10, Compression::None);
        let mut patched = batch.to_vec();
        patch_header_prefix(&mut patched[..16], 123_456, 7);
        let h = validate_batch(&patched).unwrap();
        assert_eq!(h.base_offset, 123_456);
        assert_eq!(h.partition_leader_epoch, 7);
        assert_eq!(h.last_offset(), 123_458);
    }

    #[test]
    fn truncated_and_short_inputs_are_rejected_without_panicking() {
        let batch = make_batch(3, 10, Compression::None);
        for cut in 0..batch.len() {
            assert!(validate_batch(&batch[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_wrong_magic_byte_is_unsupported() {
        let mut bad = make_batch(1, 1, Compression::None).to_vec();
        bad[16] = 1;
        assert_eq!(validate_batch(&bad), Err(BatchError::UnsupportedMagic(1)));
    }

    #[test]
    fn the_iterator_stops_at_the_first_damaged_batch() {
        let a = make_batch(2, 10, Compression::None);
        let b = make_batch(2, 10, Compression::None);
        let mut buf = a.to_vec();
        buf.extend_from_slice(&b);
        buf.extend_from_slice(&b[..20]);
        let mut it = BatchIter::new(&buf, true);
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
        assert_eq!(it.position(), a.len() + b.len());
    }
}
