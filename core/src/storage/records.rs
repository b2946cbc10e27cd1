//! Decoding the records inside a stored batch, with a cap on how much a
//! compressed batch may expand.
//!
//! The broker rarely needs individual records (fetches serve batches as
//! stored), but some operations do: ListOffsets by timestamp, and later
//! compaction and schema validation. A producer controls the compressed
//! bytes, so a 1 MB gzip batch could inflate to gigabytes; every
//! decompression here stops at `max_decompressed_bytes` and fails cleanly.
//! The codecs are the same crates `kafka-protocol` uses, read through
//! `Read::take` so the cap holds before memory is spent.

use std::io::Read;

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder, RecordSet};

/// Default cap on one batch's decompressed size.
pub const MAX_DECOMPRESSED_BYTES: usize = 64 << 20;

/// xerial snappy-java framing used by Kafka's Java clients.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("batch decompresses to more than {0} bytes")]
    TooLarge(usize),
    #[error("cannot decode records: {0}")]
    Malformed(String),
}

/// Decodes one batch (`raw` starts at its base offset field).
pub fn decode_batch(raw: &Bytes, max_decompressed_bytes: usize) -> Result<RecordSet, RecordsError> {
    let mut buf = raw.clone();
    let decompress = |compressed: &mut Bytes, codec: Compression| -> anyhow::Result<Bytes> {
        decompress(compressed, codec, max_decompressed_bytes).map_err(anyhow::Error::new)
    };
    RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(decompress)).map_err(|e| {
        match e.downcast_ref::<RecordsError>() {
            Some(RecordsError::TooLarge(n)) => RecordsError::TooLarge(*n),
            _ => RecordsError::Malformed(format!("{e:#}")),
        }
    })
}

fn read_capped(mut reader: impl Read, max: usize) -> Result<Bytes, RecordsError> {
    let mut out = Vec::new();
    (&mut reader)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| RecordsError::Malformed(e.to_string()))?;
    if out.len() > max {
        return Err(RecordsError::TooLarge(max));
    }
    Ok(Bytes::from(out))
}

fn snappy_block(block: &[u8], budget: usize, out: &mut Vec<u8>) -> Result<(), RecordsError> {
    let len =
        snap::raw::decompress_len(block).map_err(|e| RecordsError::Malformed(e.to_string()))?;
    if len > budget {
        return Err(RecordsError::TooLarge(out.len() + budget));
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| RecordsError::Malformed(e.to_string()))?;
    Ok(())
}

/// Decompresses a batch's records section with a size cap.
pub fn decompress(
    compressed: &Bytes,
    codec: Compression,
    max: usize,
) -> Result<Bytes, RecordsError> {
    match codec {
        Compression::None => Ok(compressed.clone()),
        Compression::Gzip => read_capped(flate2::read::MultiGzDecoder::new(&compressed[..]), max),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(&compressed[..])
                .map_err(|e| RecordsError::Malformed(e.to_string()))?;
            read_capped(decoder, max)
        }
        Compression::Lz4 => {
            let decoder = lz4::Decoder::new(&compressed[..])
                .map_err(|e| RecordsError::Malformed(e.to_string()))?;
            read_capped(decoder, max)
        }
        Compression::Snappy => {
            let mut out = Vec::new();
            if compressed.len() >= XERIAL_HEADER_BYTES && compressed.starts_with(XERIAL_MAGIC) {
                let mut rest = &compressed[XERIAL_HEADER_BYTES..];
                while !rest.is_empty() {
                    if rest.len() < 4 {
                        return Err(RecordsError::Malformed(
                            "truncated snappy block length".into(),
                        ));
                    }
                    let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                    let block = rest
                        .get(4..4 + n)
                        .ok_or_else(|| RecordsError::Malformed("truncated snappy block".into()))?;
                    snappy_block(block, max - out.len(), &mut out)?;
                    rest = &rest[4 + n..];
                }
            } else {
                snappy_block(compressed, max, &mut out)?;
            }
            Ok(Bytes::from(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::tests::make_batch;
    use bytes::BytesMut;
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    #[test]
    fn every_codec_decodes_within_the_cap() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = make_batch(50, 300, codec);
            let set = decode_batch(&batch, MAX_DECOMPRESSED_BYTES).unwrap();
            assert_eq!(set.records.len(), 50, "{codec:?}");
            assert_eq!(set.records[49].value.as_ref().unwrap().len(), 300);
        }
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_cap() {
        // 50 records of 1 MB of zeros each compress to a few kilobytes.
        let records: Vec<Record> = (0..50)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: i as i32 - 1,
                timestamp: 0,
                key: None,
                value: Some(Bytes::from(vec![0u8; 1 << 20])),
                headers: Default::default(),
            })
            .collect();
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut buf = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut buf,
                &records,
                &RecordEncodeOptions {
                    version: 2,
                    compression: codec,
                },
            )
            .unwrap();
            let batch = buf.freeze();
            assert!(batch.len() < 8 << 20, "{codec:?} compresses well");
            let err = decode_batch(&batch, 4 << 20).unwrap_err();
            assert!(matches!(err, RecordsError::TooLarge(_)), "{codec:?}: {err}");
            assert!(
                decode_batch(&batch, 64 << 20).is_ok(),
                "{codec:?} decodes under a large enough cap"
            );
        }
    }
}
