//! Records round-trip through the broker exactly: every codec, keys,
//! headers, timestamps and per-partition order; and survive a restart.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use crate::harness::{create_topic, key, latest_offset, stored_codecs, text, TestBroker};

const PARTITIONS: i32 = 8;
const RECORDS: usize = 100_000;
const BASE_TS: i64 = 1_700_000_000_000;

/// Produces `RECORDS` records spread over 8 partitions; record i goes to
/// partition i % 8 with key k{i}, header seq=i and timestamp BASE_TS + i.
async fn produce_records(broker: &TestBroker, topic: &str, codec: &str) {
    let producer = broker.producer(&[
        ("compression.type", codec),
        ("acks", "all"),
        ("linger.ms", "20"),
        ("batch.num.messages", "2000"),
        ("batch.size", "60000"),
    ]);
    for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(20_000) {
        let futures: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let key = format!("k{i}");
                let value = format!("{codec}-value-{i}-{}", "x".repeat(i % 50));
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "seq",
                        value: Some(&i.to_string()),
                    })
                    .insert(Header {
                        key: "codec",
                        value: Some(codec),
                    });
                let producer = &producer;
                async move {
                    let record = FutureRecord::to(topic)
                        .partition((i % PARTITIONS as usize) as i32)
                        .key(&key)
                        .payload(&value)
                        .headers(headers)
                        .timestamp(BASE_TS + i as i64);
                    producer.send(record, Duration::from_secs(30)).await
                }
            })
            .collect();
        for result in join_all(futures).await {
            result.unwrap_or_else(|(e, _)| panic!("delivery failed with {codec}: {e}"));
        }
    }
}

/// Checks every record: content, headers, timestamp, and that each
/// partition holds its records in production order at dense offsets.
fn verify(messages: &[rdkafka::message::OwnedMessage], codec: &str) {
    assert_eq!(messages.len(), RECORDS, "{codec}: record count");
    let mut next_in_partition: HashMap<i32, (usize, i64)> = HashMap::new();
    for m in messages {
        let p = m.partition();
        let (expected_seq, expected_offset) = next_in_partition
            .get(&p)
            .copied()
            .unwrap_or((p as usize, 0));
        let i = expected_seq;
        assert_eq!(
            m.offset(),
            expected_offset,
            "{codec}: partition {p} offsets must be dense"
        );
        assert_eq!(
            key(m),
            format!("k{i}"),
            "{codec}: key at partition {p} offset {}",
            m.offset()
        );
        assert_eq!(text(m), format!("{codec}-value-{i}-{}", "x".repeat(i % 50)));
        assert_eq!(
            m.timestamp().to_millis(),
            Some(BASE_TS + i as i64),
            "{codec}: timestamp"
        );
        let headers = m.headers().expect("headers present");
        let seq = headers
            .iter()
            .find(|h| h.key == "seq")
            .and_then(|h| h.value)
            .expect("seq header");
        assert_eq!(seq, i.to_string().as_bytes());
        let c = headers
            .iter()
            .find(|h| h.key == "codec")
            .and_then(|h| h.value)
            .expect("codec header");
        assert_eq!(c, codec.as_bytes());
        next_in_partition.insert(p, (i + PARTITIONS as usize, expected_offset + 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_in_every_codec_with_keys_headers_timestamps_and_order() {
    let broker = TestBroker::start();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("roundtrip-{codec}");
        create_topic(&broker, &topic, PARTITIONS, &[]).await;
        produce_records(&broker, &topic, codec).await;
        // The client really compressed, and the broker stored it as sent.
        let expected = match codec {
            "none" => 0,
            "gzip" => 1,
            "snappy" => 2,
            "lz4" => 3,
            _ => 4,
        };
        // librdkafka sends a batch uncompressed when compressing would not
        // shrink it, so "none" may appear next to the requested codec.
        let stored = stored_codecs(&broker, &topic, 0).await;
        assert!(
            stored.contains(&expected) && stored.iter().all(|c| *c == expected || *c == 0),
            "{codec}: stored batches must carry the producer's codec, found {stored:?}"
        );
        let messages = broker.consume(&topic, PARTITIONS, RECORDS, Duration::from_secs(120));
        verify(&messages, codec);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_every_record_and_offset() {
    let mut broker = TestBroker::start();
    // Small segments, so the restart has several per partition to load.
    create_topic(
        &broker,
        "durable",
        PARTITIONS,
        &[("segment.bytes", "65536")],
    )
    .await;
    produce_records(&broker, "durable", "lz4").await;
    let before = broker.consume("durable", PARTITIONS, RECORDS, Duration::from_secs(60));
    verify(&before, "lz4");

    assert_eq!(broker.stop(), Some(0), "graceful shutdown exits 0");
    assert!(broker.log().contains("storage flushed and checkpointed"));
    broker.restart();
    let after = broker.consume("durable", PARTITIONS, RECORDS, Duration::from_secs(60));
    verify(&after, "lz4");
    for p in 0..PARTITIONS {
        assert_eq!(
            latest_offset(&broker, "durable", p).await,
            (RECORDS / PARTITIONS as usize) as i64
        );
    }

    // And the log keeps growing where it left off.
    let producer = broker.producer(&[]);
    let delivery = producer
        .send(
            FutureRecord::to("durable")
                .partition(3)
                .key("after")
                .payload("restart"),
            Duration::from_secs(10),
        )
        .await
        .expect("produce after restart");
    assert_eq!(
        (delivery.partition, delivery.offset),
        (3, (RECORDS / PARTITIONS as usize) as i64)
    );
}
