//! What the broker checks and changes when it appends a record batch, as
//! Kafka's log validator does: keyless records on compacted topics, record
//! timestamps (`message.timestamp.*`), the batch header's max timestamp
//! computed from the records, and the topic's `compression.type`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use runnel_core::broker::now_ms;
use runnel_core::client::Client;

use crate::harness::{create_topic, latest_offset, list_offset, stored_codecs, text, TestBroker};

const INVALID_RECORD: i16 = 87;
const INVALID_TIMESTAMP: i16 = 32;

/// One v2 batch of `(key, value, timestamp)` records, as a producer sends it.
fn batch(records: &[(Option<&str>, &str, i64)], compression: Compression) -> Bytes {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value, ts))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32 - 1,
            timestamp: *ts,
            key: key.map(|k| Bytes::from(k.to_string())),
            value: Some(Bytes::from(value.to_string())),
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

/// The batch with its header's `maxTimestamp` replaced (and the CRC-32C
/// fixed), as Sarama before 1.45.1 sends it.
fn with_header_max_timestamp(batch: Bytes, max_timestamp: i64) -> Bytes {
    let mut b = batch.to_vec();
    b[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// Produces one record set to partition 0 at the newest version both sides
/// support and returns the partition's answer.
async fn produce(client: &mut Client, topic: &str, records: Bytes) -> PartitionProduceResponse {
    let mut p = PartitionProduceData::default();
    p.index = 0;
    p.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_data = vec![p];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 5000;
    request.topic_data = vec![t];
    let response: ProduceResponse = client.send(&request).await.expect("Produce");
    response.responses[0].partition_responses[0].clone()
}

/// `(batch_index, message)` of each record error in a produce answer.
fn record_errors(p: &PartitionProduceResponse) -> Vec<(i32, String)> {
    p.record_errors
        .iter()
        .map(|e| {
            (
                e.batch_index,
                e.batch_index_error_message
                    .as_deref()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_refuses_keyless_records_and_names_each_in_record_errors() {
    let broker = TestBroker::start();
    create_topic(&broker, "keyed", 1, &[("cleanup.policy", "compact")]).await;
    let mut client = broker.client().await;
    let ts = now_ms();

    let mixed = batch(
        &[
            (Some("a"), "1", ts),
            (None, "2", ts),
            (Some("c"), "3", ts),
            (None, "4", ts),
        ],
        Compression::Lz4,
    );
    let answer = produce(&mut client, "keyed", mixed).await;
    assert_eq!(answer.error_code, INVALID_RECORD, "{answer:?}");
    let errors = record_errors(&answer);
    assert_eq!(
        errors.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![1, 3],
        "{errors:?}"
    );
    for (_, message) in &errors {
        assert!(
            message.contains("Compacted topic cannot accept message without key"),
            "{message}"
        );
    }
    let top = answer.error_message.as_deref().unwrap_or_default();
    assert!(top.contains("2 record errors"), "{top}");
    assert_eq!(
        latest_offset(&broker, "keyed", 0).await,
        0,
        "nothing of the refused batch is stored"
    );

    // Keyed records (and tombstones, which have keys) are taken.
    let keyed = batch(
        &[(Some("a"), "1", ts), (Some("b"), "2", ts)],
        Compression::None,
    );
    assert_eq!(produce(&mut client, "keyed", keyed).await.error_code, 0);

    // librdkafka reports the refusal per message.
    let producer = broker.producer(&[]);
    let refused = producer
        .send(
            FutureRecord::<(), _>::to("keyed")
                .partition(0)
                .payload("no key"),
            Duration::from_secs(10),
        )
        .await;
    match refused {
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord), _)) => {}
        other => panic!("expected INVALID_RECORD for a keyless record, got {other:?}"),
    }
    producer
        .send(
            FutureRecord::to("keyed").partition(0).key("k").payload("v"),
            Duration::from_secs(10),
        )
        .await
        .expect("a keyed record is taken");
    assert_eq!(latest_offset(&broker, "keyed", 0).await, 3);

    // A topic that is not compacted takes keyless records.
    create_topic(&broker, "plain", 1, &[]).await;
    let keyless = batch(&[(None, "x", ts)], Compression::None);
    assert_eq!(produce(&mut client, "plain", keyless).await.error_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_max_timestamp_of_minus_one_is_recomputed_for_time_lookups_and_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("fast-retention.yaml");
    std::fs::write(&config, "retention_check_interval_ms: 100\n").unwrap();
    let broker = TestBroker::start_with(&["--config", config.to_str().unwrap()]);
    create_topic(&broker, "sarama", 1, &[]).await;
    create_topic(&broker, "sarama-aged", 1, &[("retention.ms", "3600000")]).await;
    let mut client = broker.client().await;

    // Three batches of three records, one minute apart, two hours ago,
    // each with -1 in the header's maxTimestamp.
    let base = now_ms() - 2 * 3_600_000;
    for b in 0..3i64 {
        let ts = base + b * 60_000;
        let set = batch(
            &[
                (Some("k"), "a", ts),
                (Some("k"), "b", ts + 10),
                (Some("k"), "c", ts + 20),
            ],
            if b == 1 {
                Compression::Gzip
            } else {
                Compression::None
            },
        );
        for topic in ["sarama", "sarama-aged"] {
            let answer = produce(
                &mut client,
                topic,
                with_header_max_timestamp(set.clone(), -1),
            )
            .await;
            assert_eq!(answer.error_code, 0, "{answer:?}");
        }
    }

    // ListOffsets by timestamp finds the first record at or after it.
    assert_eq!(
        list_offset(&broker, "sarama", 0, base + 60_005).await,
        Ok(4)
    );
    assert_eq!(
        list_offset(&broker, "sarama", 0, base + 120_000).await,
        Ok(6)
    );
    assert_eq!(
        list_offset(&broker, "sarama", 0, base + 120_021).await,
        Ok(-1)
    );
    // The latest timestamp (-3) is the last record's.
    assert_eq!(list_offset(&broker, "sarama", 0, -3).await, Ok(8));

    // The stored headers carry the records' max timestamp.
    let consumed = broker.consume("sarama", 1, 9, Duration::from_secs(10));
    assert_eq!(consumed.len(), 9);
    assert_eq!(
        consumed[8].timestamp().to_millis(),
        Some(base + 120_020),
        "records keep their own timestamps"
    );

    // Time retention deletes records two hours old under a one hour limit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while list_offset(&broker, "sarama-aged", 0, -2).await != Ok(9) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        list_offset(&broker, "sarama-aged", 0, -2).await,
        Ok(9),
        "expired records are deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_outside_the_topics_bounds_are_refused_with_invalid_timestamp() {
    let broker = TestBroker::start();
    let hour = 3_600_000i64;
    create_topic(&broker, "default-bounds", 1, &[]).await;
    create_topic(
        &broker,
        "recent-only",
        1,
        &[("message.timestamp.before.max.ms", "60000")],
    )
    .await;
    create_topic(
        &broker,
        "far-future",
        1,
        &[("message.timestamp.after.max.ms", "86400000")],
    )
    .await;
    create_topic(
        &broker,
        "difference",
        1,
        &[("message.timestamp.difference.max.ms", "60000")],
    )
    .await;
    create_topic(
        &broker,
        "append-time",
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    )
    .await;
    let mut client = broker.client().await;
    let now = now_ms();
    let future = now + 2 * hour;
    let past = now - 2 * hour;
    let set = |ts: i64| {
        batch(
            &[
                (Some("a"), "ok", now),
                (Some("b"), "odd", ts),
                (Some("c"), "ok", now),
            ],
            Compression::Snappy,
        )
    };

    // Kafka 4's default allows one hour into the future, any age.
    let answer = produce(&mut client, "default-bounds", set(future)).await;
    assert_eq!(answer.error_code, INVALID_TIMESTAMP, "{answer:?}");
    let errors = record_errors(&answer);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, 1);
    assert!(
        errors[0].1.contains(&future.to_string()) && errors[0].1.contains("out of range"),
        "{}",
        errors[0].1
    );
    assert_eq!(
        produce(&mut client, "default-bounds", set(past))
            .await
            .error_code,
        0
    );
    assert_eq!(
        produce(&mut client, "default-bounds", set(-1))
            .await
            .error_code,
        0,
        "a record without a timestamp is not checked"
    );

    assert_eq!(
        produce(&mut client, "recent-only", set(past))
            .await
            .error_code,
        INVALID_TIMESTAMP
    );
    assert_eq!(
        produce(&mut client, "recent-only", set(now))
            .await
            .error_code,
        0
    );
    assert_eq!(
        produce(&mut client, "far-future", set(future))
            .await
            .error_code,
        0
    );
    for ts in [past, future] {
        assert_eq!(
            produce(&mut client, "difference", set(ts)).await.error_code,
            INVALID_TIMESTAMP,
            "message.timestamp.difference.max.ms bounds both sides ({ts})"
        );
    }
    // LogAppendTime topics take any timestamp and store the broker's time.
    let answer = produce(&mut client, "append-time", set(future)).await;
    assert_eq!(answer.error_code, 0, "{answer:?}");
    assert!((answer.log_append_time_ms - now).abs() < 60_000);

    assert_eq!(latest_offset(&broker, "default-bounds", 0).await, 6);
    assert_eq!(latest_offset(&broker, "recent-only", 0).await, 3);
}

/// Produces `n` records with the producer's codec `codec`; record i has key
/// k{i}, header i=<i> and timestamp `ts + i`.
async fn produce_with_codec(broker: &TestBroker, topic: &str, codec: &str, n: usize, ts: i64) {
    let producer = broker.producer(&[("compression.type", codec), ("linger.ms", "20")]);
    let sends: Vec<_> = (0..n)
        .map(|i| {
            let producer = &producer;
            async move {
                let key = format!("k{i}");
                let value = codec_test_value(codec, i);
                let headers = OwnedHeaders::new().insert(Header {
                    key: "i",
                    value: Some(&i.to_string()),
                });
                producer
                    .send(
                        FutureRecord::to(topic)
                            .partition(0)
                            .key(&key)
                            .payload(&value)
                            .headers(headers)
                            .timestamp(ts + i as i64),
                        Duration::from_secs(30),
                    )
                    .await
            }
        })
        .collect();
    for r in futures::future::join_all(sends).await {
        r.unwrap_or_else(|(e, _)| panic!("produce with {codec} to {topic}: {e}"));
    }
}

/// A value long and repetitive enough that every codec shrinks even a batch of one record:
/// librdkafka sends a batch uncompressed when compression would not make it smaller.
fn codec_test_value(codec: &str, i: usize) -> String {
    format!("{codec}-{i}-{}", "v".repeat(100 + i % 40))
}

fn verify_records(broker: &TestBroker, topic: &str, codecs: &[&str], n: usize, ts: i64) {
    let total = n * codecs.len();
    let consumed = broker.consume(topic, 1, total, Duration::from_secs(30));
    assert_eq!(consumed.len(), total, "{topic}: records read back");
    for (at, m) in consumed.iter().enumerate() {
        let (codec, i) = (codecs[at / n], at % n);
        assert_eq!(m.offset(), at as i64);
        assert_eq!(
            m.key(),
            Some(format!("k{i}").as_bytes()),
            "{topic} offset {at}"
        );
        assert_eq!(text(m), codec_test_value(codec, i));
        assert_eq!(m.timestamp().to_millis(), Some(ts + i as i64));
        let header = m.headers().and_then(|h| h.iter().next()).expect("header");
        assert_eq!(
            (header.key, header.value),
            ("i", Some(i.to_string().as_bytes()))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_compression_type_recompresses_whatever_the_producer_sent() {
    let broker = TestBroker::start();
    let producer_codecs = ["none", "snappy", "lz4", "zstd", "gzip"];
    let ts = now_ms() - 60_000;
    let n = 300;
    for (topic_codec, id) in [
        ("gzip", 1),
        ("snappy", 2),
        ("lz4", 3),
        ("zstd", 4),
        ("uncompressed", 0),
    ] {
        let topic = format!("stored-as-{topic_codec}");
        create_topic(&broker, &topic, 1, &[("compression.type", topic_codec)]).await;
        for codec in producer_codecs {
            produce_with_codec(&broker, &topic, codec, n, ts).await;
        }
        assert_eq!(
            stored_codecs(&broker, &topic, 0).await,
            BTreeSet::from([id]),
            "{topic}: every batch is stored in the topic's codec"
        );
        verify_records(&broker, &topic, &producer_codecs, n, ts);
    }
    // `producer` keeps the producer's codec, byte for byte.
    create_topic(&broker, "as-sent", 1, &[("compression.type", "producer")]).await;
    produce_with_codec(&broker, "as-sent", "lz4", n, ts).await;
    assert_eq!(
        stored_codecs(&broker, "as-sent", 0).await,
        BTreeSet::from([3])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_default_compression_type_applies_to_topics_without_an_override() {
    let broker = TestBroker::start_with_config("log:\n  compression_type: zstd\n", &[]);
    let ts = now_ms();
    create_topic(&broker, "by-default", 1, &[]).await;
    produce_with_codec(&broker, "by-default", "none", 200, ts).await;
    assert_eq!(
        stored_codecs(&broker, "by-default", 0).await,
        BTreeSet::from([4])
    );
    verify_records(&broker, "by-default", &["none"], 200, ts);
    // An override wins over the broker default.
    create_topic(&broker, "own-codec", 1, &[("compression.type", "producer")]).await;
    produce_with_codec(&broker, "own-codec", "none", 10, ts).await;
    assert_eq!(
        stored_codecs(&broker, "own-codec", 0).await,
        BTreeSet::from([0])
    );
}
