//! `cargo bench -p runnel-core --bench append`: the CPU cost of what an
//! append does to a produced record set, on 1 MiB record sets of 100 B and
//! 1 KiB JSON-like records: the log validator (every record walked; the
//! batch decompressed first when it is compressed) next to the CRC-32C check
//! alone (what an append did before the validator), recompression into a
//! topic's `compression.type`, and the conversion of message format v0/v1.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use runnel_core::storage::legacy;
use runnel_core::storage::validator::{self, AppendRules, TopicCompression};
use runnel_core::storage::TimestampType as LogTimestampType;

const NOW: i64 = 1_764_000_000_000;

/// Made-up JSON log lines (gzip to about a third), deterministic.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(len + 200);
    while out.len() < len {
        let line = format!(
            "{{\"user\":{},\"action\":\"{}\",\"path\":\"/api/v1/{}\",\"latency_ms\":{}}}\n",
            next() % 100_000,
            ["login", "search", "cart", "checkout"][(next() % 4) as usize],
            next() % 1_000_000,
            next() % 900
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
}

/// One ~1 MiB batch of `record_bytes` records in `codec`.
fn batch(record_bytes: usize, codec: Compression) -> (Bytes, usize) {
    let count = (1 << 20) / record_bytes;
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
            timestamp: NOW - 1000 + i as i64,
            key: Some(Bytes::from(format!("key-{}", i % 1000))),
            value: Some(Bytes::from(text(record_bytes, i as u64))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: codec,
        },
    )
    .expect("encode");
    (buf.freeze(), count)
}

fn rules(compression: TopicCompression) -> AppendRules {
    AppendRules {
        timestamp_type: LogTimestampType::CreateTime,
        timestamp_before_max_ms: i64::MAX,
        timestamp_after_max_ms: 3_600_000,
        compacted: true,
        compression,
        max_message_bytes: 64 << 20,
    }
}

/// Runs `f` repeatedly for about `budget`; the fastest of several rounds,
/// per call.
fn time(budget: Duration, mut f: impl FnMut()) -> Duration {
    let mut best = Duration::MAX;
    let started = Instant::now();
    while started.elapsed() < budget {
        let t = Instant::now();
        for _ in 0..4 {
            f();
        }
        best = best.min(t.elapsed() / 4);
    }
    best
}

fn row(what: &str, input: &Bytes, count: usize, per_call: Duration) {
    let mb_s = input.len() as f64 / per_call.as_secs_f64() / 1e6;
    let ns_record = per_call.as_nanos() as f64 / count as f64;
    println!(
        "| {what} | {} KiB | {count} | {:.0} | {mb_s:.0} | {ns_record:.1} |",
        input.len() / 1024,
        per_call.as_secs_f64() * 1e6
    );
}

fn main() {
    let budget = Duration::from_millis(600);
    println!("| work on one record set | size | records | µs | MB/s of input | ns per record |");
    println!("|---|---:|---:|---:|---:|---:|");
    for record_bytes in [100usize, 1024] {
        let (plain, count) = batch(record_bytes, Compression::None);
        row(
            &format!("CRC-32C only, {record_bytes} B records"),
            &plain,
            count,
            time(budget, || {
                black_box(crc32c::crc32c(&plain[21..]));
            }),
        );
        for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let (set, count) = batch(record_bytes, codec);
            let producer = rules(TopicCompression::Producer);
            row(
                &format!("validate, {record_bytes} B records, {codec:?}"),
                &set,
                count,
                time(budget, || {
                    black_box(validator::validate(&set, &producer, NOW, &"t-0").expect("valid"));
                }),
            );
        }
    }
    let (plain, count) = batch(1024, Compression::None);
    for codec in [
        Compression::Lz4,
        Compression::Snappy,
        Compression::Zstd,
        Compression::Gzip,
    ] {
        let to = rules(TopicCompression::Codec(codec));
        row(
            &format!("recompress uncompressed to {codec:?}, 1 KiB records"),
            &plain,
            count,
            time(budget, || {
                black_box(validator::validate(&plain, &to, NOW, &"t-0").expect("valid"));
            }),
        );
    }
    let (lz4, _) = batch(1024, Compression::Lz4);
    let v1 = legacy::down_convert(&plain, 0, 1, usize::MAX, 64 << 20).expect("convert");
    row(
        "message format v1 to a v2 batch, 1 KiB records",
        &v1,
        count,
        time(budget, || {
            black_box(legacy::to_v2_batch(&v1, 64 << 20).expect("convert"));
        }),
    );
    for (name, stored) in [("uncompressed", &plain), ("lz4", &lz4)] {
        row(
            &format!("{name} v2 batch down to message format v1, 1 KiB records"),
            stored,
            count,
            time(budget, || {
                black_box(
                    legacy::down_convert(stored, 0, 1, usize::MAX, 64 << 20).expect("convert"),
                );
            }),
        );
    }
}
