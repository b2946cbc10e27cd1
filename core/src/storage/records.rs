//! Decoding the records inside a stored batch, with a cap on how much a
//! compressed batch may expand, and a zero-copy walk over the records of a
//! batch ([`RawRecords`]) for checks that read every record.
//!
//! The broker rarely needs individual records (fetches serve batches as
//! stored), but some operations do: ListOffsets by timestamp, and later
//! compaction and schema validation. A producer controls the compressed
//! bytes, so a 1 MB gzip batch could inflate to gigabytes; every
//! decompression here stops at `max_decompressed_bytes` and fails cleanly.
//! The codecs are the same crates `kafka-protocol` uses, read through
//! `Read::take` so the cap holds before memory is spent.

use std::io::Read;

use bytes::{Bytes, BytesMut};
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

impl RecordsError {
    fn with_cap(self, max: usize) -> RecordsError {
        match self {
            RecordsError::TooLarge(_) => RecordsError::TooLarge(max),
            other => other,
        }
    }
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

fn snappy_block(block: &[u8], budget: usize, out: &mut Vec<u8>) -> Result<(), RecordsError> {
    let len =
        snap::raw::decompress_len(block).map_err(|e| RecordsError::Malformed(e.to_string()))?;
    if len > budget {
        return Err(RecordsError::TooLarge(budget));
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
    if codec == Compression::None {
        return Ok(compressed.clone());
    }
    let mut out = Vec::new();
    decompress_into(compressed, codec, max, &mut out)?;
    Ok(Bytes::from(out))
}

/// Decompresses `compressed` with a size cap, appending to `out` (which a
/// caller may reuse between batches to avoid an allocation per batch).
pub fn decompress_into(
    compressed: &[u8],
    codec: Compression,
    max: usize,
    out: &mut Vec<u8>,
) -> Result<(), RecordsError> {
    let start = out.len();
    let read_capped = |reader: &mut dyn Read, out: &mut Vec<u8>| -> Result<(), RecordsError> {
        reader
            .take(max as u64 + 1)
            .read_to_end(out)
            .map_err(|e| RecordsError::Malformed(e.to_string()))?;
        if out.len() - start > max {
            return Err(RecordsError::TooLarge(max));
        }
        Ok(())
    };
    match codec {
        Compression::None => {
            if compressed.len() > max {
                return Err(RecordsError::TooLarge(max));
            }
            out.extend_from_slice(compressed);
            Ok(())
        }
        Compression::Gzip => read_capped(&mut flate2::read::MultiGzDecoder::new(compressed), out),
        Compression::Zstd => {
            // A frame that declares its size (librdkafka's do) is decoded in
            // one call into place; others are streamed.
            if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(compressed) {
                if size > max as u64 {
                    return Err(RecordsError::TooLarge(max));
                }
                out.resize(start + size as usize, 0);
                match zstd::bulk::decompress_to_buffer(compressed, &mut out[start..]) {
                    Ok(n) if n == size as usize => return Ok(()),
                    // Several frames, or a wrong size: stream instead.
                    _ => out.truncate(start),
                }
            }
            let mut decoder = zstd::stream::read::Decoder::new(compressed)
                .map_err(|e| RecordsError::Malformed(e.to_string()))?;
            read_capped(&mut decoder, out)
        }
        Compression::Lz4 => {
            if lz4_independent_blocks(compressed, max, out)? {
                return Ok(());
            }
            let mut decoder = lz4::Decoder::new(compressed)
                .map_err(|e| RecordsError::Malformed(e.to_string()))?;
            read_capped(&mut decoder, out)
        }
        Compression::Snappy => {
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
                    snappy_block(block, max - (out.len() - start), out)
                        .map_err(|e| e.with_cap(max))?;
                    rest = &rest[4 + n..];
                }
                Ok(())
            } else {
                snappy_block(compressed, max, out).map_err(|e| e.with_cap(max))
            }
        }
    }
}

/// Decodes an LZ4 frame of independent blocks (what Kafka's clients write)
/// block by block straight into `out`, which is several times faster than
/// the streaming decoder. `Ok(false)`, with `out` unchanged, for frames it
/// leaves to that decoder (linked blocks, a dictionary).
///
/// Checksums are not verified: the batch's CRC-32C (a message's CRC-32 in
/// formats v0/v1) already covers every compressed byte, and magic-0
/// producers (Kafka's clients before 0.10, KAFKA-3160) computed the header
/// checksum over the wrong bytes, so checking it would refuse their data.
///
/// ```text
/// frame: magic 04 22 4d 18 | FLG | BD | content size u64 (FLG bit 3)
///        | dictionary id u32 (FLG bit 0) | header checksum u8
///        | (block size u32 LE (bit 31: stored) | data | checksum u32 (FLG bit 4))*
///        | 00 00 00 00 | content checksum u32 (FLG bit 2)
/// ```
fn lz4_independent_blocks(
    frame: &[u8],
    max: usize,
    out: &mut Vec<u8>,
) -> Result<bool, RecordsError> {
    let bad = |why: &str| RecordsError::Malformed(format!("LZ4 frame: {why}"));
    if frame.len() < 7 || frame[..4] != [0x04, 0x22, 0x4d, 0x18] {
        return Err(bad("no frame magic"));
    }
    let (flg, bd) = (frame[4], frame[5]);
    if flg >> 6 != 1 {
        return Err(bad("unknown frame version"));
    }
    if flg & 0x20 == 0 || flg & 0x01 != 0 {
        return Ok(false);
    }
    let block_max: usize = match (bd >> 4) & 0x7 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        _ => return Err(bad("invalid block size")),
    };
    let block_checksum = flg & 0x10 != 0;
    // Magic, FLG, BD, the content size if present, the header checksum.
    let mut at = 6 + if flg & 0x08 != 0 { 8 } else { 0 } + 1;
    let start = out.len();
    let result = loop {
        let Some(size) = frame.get(at..at + 4) else {
            break Err(bad("truncated block size"));
        };
        let size = u32::from_le_bytes(size.try_into().expect("4 bytes"));
        at += 4;
        if size == 0 {
            break Ok(true);
        }
        let len = (size & 0x7fff_ffff) as usize;
        let Some(data) = frame.get(at..at + len) else {
            break Err(bad("truncated block"));
        };
        at += len + if block_checksum { 4 } else { 0 };
        let used = out.len() - start;
        if size & 0x8000_0000 != 0 {
            if used + len > max {
                break Err(RecordsError::TooLarge(max));
            }
            out.extend_from_slice(data);
            continue;
        }
        let room = block_max.min(max - used);
        let at_out = out.len();
        out.resize(at_out + room, 0);
        match lz4::block::decompress_to_buffer(data, Some(room as i32), &mut out[at_out..]) {
            Ok(n) => out.truncate(at_out + n),
            Err(_) if room < block_max => break Err(RecordsError::TooLarge(max)),
            Err(e) => break Err(bad(&e.to_string())),
        }
    };
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// The codec of a batch's attributes (bits 0-2), if it is one Kafka knows.
pub fn codec_from_id(id: i16) -> Option<Compression> {
    match id {
        0 => Some(Compression::None),
        1 => Some(Compression::Gzip),
        2 => Some(Compression::Snappy),
        3 => Some(Compression::Lz4),
        4 => Some(Compression::Zstd),
        _ => None,
    }
}

/// Compresses a records section (or a legacy message set) with `codec`,
/// appending to `out`, with the codecs and framing Kafka's clients read:
/// gzip (default level), xerial-framed snappy, zstd (level 3), and LZ4
/// frames of independent 64 KiB blocks in LZ4's fast mode (the high
/// compression levels run at a tenth of its speed).
pub fn compress_into(
    section: &[u8],
    codec: Compression,
    out: &mut BytesMut,
) -> Result<(), RecordsError> {
    use bytes::BufMut;
    use kafka_protocol::compression::{Compressor, Gzip, Snappy, Zstd};
    let failed = |e: &dyn std::fmt::Display| {
        RecordsError::Malformed(format!("cannot compress with {codec:?}: {e:#}"))
    };
    let fill = |tmp: &mut BytesMut| {
        tmp.extend_from_slice(section);
        Ok(())
    };
    match codec {
        Compression::None => {
            out.extend_from_slice(section);
            Ok(())
        }
        Compression::Gzip => Gzip::compress(out, fill).map_err(|e| failed(&e)),
        Compression::Snappy => Snappy::compress(out, fill).map_err(|e| failed(&e)),
        Compression::Zstd => Zstd::compress(out, fill).map_err(|e| failed(&e)),
        Compression::Lz4 => {
            let mut encoder = lz4::EncoderBuilder::new()
                .level(0)
                .block_size(lz4::BlockSize::Max64KB)
                .block_mode(lz4::BlockMode::Independent)
                .build(out.writer())
                .map_err(|e| failed(&e))?;
            std::io::Write::write_all(&mut encoder, section).map_err(|e| failed(&e))?;
            let (_, result) = encoder.finish();
            result.map_err(|e| failed(&e))
        }
    }
}

/// Reads a zigzag varint of at most `max_bytes` bytes: (value, length).
pub(crate) fn read_zigzag(bytes: &[u8], max_bytes: usize) -> anyhow::Result<(i64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().take(max_bytes).enumerate() {
        value |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((((value >> 1) as i64) ^ -((value & 1) as i64), i + 1));
        }
    }
    anyhow::bail!("malformed varint")
}

pub(crate) fn read_varint(bytes: &[u8]) -> anyhow::Result<(i32, usize)> {
    let (v, n) = read_zigzag(bytes, 5)?;
    let v = i32::try_from(v).map_err(|_| anyhow::anyhow!("varint out of range"))?;
    Ok((v, n))
}

pub(crate) fn read_varlong(bytes: &[u8]) -> anyhow::Result<(i64, usize)> {
    read_zigzag(bytes, 10)
}

/// The type in the key of a control batch's first record (its records
/// section, uncompressed, starting right after the batch header): 0 ABORT,
/// 1 COMMIT. `None` when the bytes are not a control record key.
pub fn control_record_type(records: &[u8]) -> Option<i16> {
    let mut at = 0;
    let (_length, n) = read_varint(records.get(at..)?).ok()?;
    at += n;
    at += 1; // attributes
    let (_timestamp_delta, n) = read_varlong(records.get(at..)?).ok()?;
    at += n;
    let (_offset_delta, n) = read_varint(records.get(at..)?).ok()?;
    at += n;
    let (key_length, n) = read_varint(records.get(at..)?).ok()?;
    at += n;
    if key_length < 4 {
        return None;
    }
    let key = records.get(at..at + 4)?;
    Some(i16::from_be_bytes([key[2], key[3]]))
}

/// Most bytes [`control_record_type`] reads.
pub const CONTROL_KEY_PREFIX_BYTES: usize = 5 + 1 + 10 + 5 + 5 + 4;

/// The records section of one batch (`raw` starts at its base offset),
/// decompressed with a cap: borrowed from `raw` when uncompressed.
pub fn records_section(raw: &Bytes, max_decompressed_bytes: usize) -> Result<Bytes, RecordsError> {
    use super::batch::BATCH_HEADER_BYTES;
    let header = super::batch::BatchHeader::parse(raw)
        .map_err(|e| RecordsError::Malformed(e.to_string()))?;
    let end = header.total_bytes().min(raw.len());
    if end < BATCH_HEADER_BYTES {
        return Err(RecordsError::Malformed(
            "batch is shorter than its header".into(),
        ));
    }
    let compressed = raw.slice(BATCH_HEADER_BYTES..end);
    let codec = codec_from_id(header.codec())
        .ok_or_else(|| RecordsError::Malformed(format!("unknown codec {}", header.codec())))?;
    decompress(&compressed, codec, max_decompressed_bytes)
}

/// One record of a batch, borrowed from its records section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Walks the `count` records of a records section without copying or
/// allocating:
///
/// ```text
/// length varint | attributes i8 | timestampDelta varlong | offsetDelta varint
/// | keyLength varint | key | valueLength varint | value
/// | headerCount varint | (headerKeyLength varint | key | headerValueLength varint | value)*
/// ```
pub struct RawRecords<'a> {
    bytes: &'a [u8],
    at: usize,
    remaining: usize,
}

impl<'a> RawRecords<'a> {
    pub fn new(section: &'a [u8], count: usize) -> RawRecords<'a> {
        RawRecords {
            bytes: section,
            at: 0,
            remaining: count,
        }
    }

    /// After the last record: whether the section ended there. Consumers
    /// read records until the section ends, whatever the batch's record
    /// count says, so bytes left over would be records no check saw.
    pub fn finish(&self) -> Result<(), RecordsError> {
        if self.remaining == 0 && self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(RecordsError::Malformed(format!(
                "{} bytes follow the batch's declared records",
                self.bytes.len().saturating_sub(self.at)
            )))
        }
    }

    fn parse(body: &'a [u8]) -> anyhow::Result<RawRecord<'a>> {
        let mut at = 1; // attributes
        let (timestamp_delta, n) = read_varlong(body.get(at..).unwrap_or_default())?;
        at += n;
        let (offset_delta, n) = read_varint(body.get(at..).unwrap_or_default())?;
        at += n;
        let bytes_field = |at: &mut usize| -> anyhow::Result<Option<&'a [u8]>> {
            let (len, n) = read_varint(body.get(*at..).unwrap_or_default())?;
            *at += n;
            if len < 0 {
                return Ok(None);
            }
            let end = *at + len as usize;
            let field = body
                .get(*at..end)
                .ok_or_else(|| anyhow::anyhow!("field runs past the record"))?;
            *at = end;
            Ok(Some(field))
        };
        let key = bytes_field(&mut at)?;
        let value = bytes_field(&mut at)?;
        let (headers, n) = read_varint(body.get(at..).unwrap_or_default())?;
        at += n;
        for _ in 0..headers.max(0) {
            bytes_field(&mut at)?;
            bytes_field(&mut at)?;
        }
        if at != body.len() {
            anyhow::bail!("record length does not match its fields");
        }
        Ok(RawRecord {
            timestamp_delta,
            offset_delta,
            key,
            value,
        })
    }
}

impl<'a> Iterator for RawRecords<'a> {
    type Item = Result<RawRecord<'a>, RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let result = (|| {
            let (length, n) = read_varint(&self.bytes[self.at..])?;
            let length =
                usize::try_from(length).map_err(|_| anyhow::anyhow!("negative record length"))?;
            let start = self.at + n;
            let body = self
                .bytes
                .get(start..start + length)
                .ok_or_else(|| anyhow::anyhow!("record runs past the batch"))?;
            self.at = start + length;
            Self::parse(body)
        })();
        if result.is_err() {
            self.remaining = 0;
        }
        Some(result.map_err(|e| RecordsError::Malformed(e.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::tests::make_batch;
    use bytes::BytesMut;
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    #[test]
    fn raw_records_borrow_keys_and_values_of_every_codec() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = make_batch(20, 100, codec);
            let decoded = decode_batch(&batch, MAX_DECOMPRESSED_BYTES).unwrap();
            let section = records_section(&batch, MAX_DECOMPRESSED_BYTES).unwrap();
            let raw: Vec<RawRecord<'_>> = RawRecords::new(&section, 20)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(raw.len(), 20, "{codec:?}");
            for (r, d) in raw.iter().zip(&decoded.records) {
                assert_eq!(r.key, d.key.as_deref());
                assert_eq!(r.value, d.value.as_deref());
                assert_eq!(r.offset_delta as i64, d.offset);
            }
        }
        // Damage stops the walk with an error, not a panic.
        let batch = make_batch(3, 10, Compression::None);
        let section = records_section(&batch, MAX_DECOMPRESSED_BYTES).unwrap();
        let mut walk = RawRecords::new(&section, 3);
        assert_eq!(walk.by_ref().filter(|r| r.is_ok()).count(), 3);
        assert!(walk.finish().is_ok());
        // A record count smaller than what the section holds is caught.
        let mut walk = RawRecords::new(&section, 2);
        assert_eq!(walk.by_ref().count(), 2);
        assert!(walk.finish().is_err());
        for cut in 0..section.len() {
            let results: Vec<_> = RawRecords::new(&section[..cut], 3).collect();
            assert!(results.iter().any(|r| r.is_err()), "cut at {cut}");
        }
    }

    #[test]
    fn lz4_frames_decode_block_by_block_or_through_the_streaming_decoder() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        for (mode, size) in [
            (lz4::BlockMode::Independent, lz4::BlockSize::Max64KB),
            (lz4::BlockMode::Independent, lz4::BlockSize::Max4MB),
            (lz4::BlockMode::Linked, lz4::BlockSize::Max64KB),
        ] {
            let mut encoder = lz4::EncoderBuilder::new()
                .block_mode(mode.clone())
                .block_size(size.clone())
                .build(Vec::new())
                .unwrap();
            std::io::Write::write_all(&mut encoder, &data).unwrap();
            let (frame, result) = encoder.finish();
            result.unwrap();
            let mut out = b"kept".to_vec();
            decompress_into(&frame, Compression::Lz4, 4 << 20, &mut out).unwrap();
            assert_eq!(&out[4..], &data[..], "{mode:?} {size:?}");
            assert!(matches!(
                decompress_into(&frame, Compression::Lz4, 100_000, &mut Vec::new()),
                Err(RecordsError::TooLarge(100_000))
            ));
            if matches!(mode, lz4::BlockMode::Linked) {
                // The streaming decoder's business; a short frame in a
                // batch with a valid CRC shows as missing records.
                continue;
            }
            for cut in [5, 7, 20, frame.len() - 5] {
                let mut out = Vec::new();
                assert!(
                    decompress_into(&frame[..cut], Compression::Lz4, 4 << 20, &mut out).is_err()
                );
            }
        }
    }

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
