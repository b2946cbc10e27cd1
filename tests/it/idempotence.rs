//! Idempotent producers: retried batches are stored once, and a producer
//! writing through a broker crash ends with no duplicates and no gaps.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use runnel_core::client::Client;

use crate::harness::{create_topic, latest_offset, record_batch, text, TestBroker};

/// `count` records of `producer_id` from `base_sequence`, valued `v<seq>`.
fn idempotent_batch(producer_id: i64, epoch: i16, base_sequence: i32, count: usize) -> Bytes {
    let values: Vec<String> = (0..count)
        .map(|i| format!("v{}", base_sequence + i as i32))
        .collect();
    record_batch((producer_id, epoch, base_sequence), false, &values)
}

async fn produce(client: &mut Client, records: Bytes) -> (i16, i64) {
    let mut p = PartitionProduceData::default();
    p.index = 0;
    p.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_static_str("idem"));
    t.partition_data = vec![p];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 5000;
    request.topic_data = vec![t];
    let response = client.send(&request).await.unwrap();
    let r = &response.responses[0].partition_responses[0];
    (r.error_code, r.base_offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_batch_sent_twice_is_stored_once_with_one_offset() {
    let broker = TestBroker::start();
    create_topic(&broker, "idem", 1, &[]).await;
    let mut client = broker.client().await;
    let mut init = InitProducerIdRequest::default();
    init.transactional_id = None;
    init.transaction_timeout_ms = 60_000;
    init.producer_id = ProducerId(-1);
    init.producer_epoch = -1;
    let a = client.send(&init).await.unwrap();
    let b = client.send(&init).await.unwrap();
    assert_eq!((a.error_code, a.producer_epoch), (0, 0));
    assert_ne!(
        a.producer_id, b.producer_id,
        "every producer gets its own id"
    );
    let pid = a.producer_id.0;

    let batch = idempotent_batch(pid, 0, 0, 10);
    assert_eq!(produce(&mut client, batch.clone()).await, (0, 0));
    assert_eq!(
        produce(&mut client, batch).await,
        (0, 0),
        "the retry gets the original offset"
    );
    assert_eq!(
        latest_offset(&broker, "idem", 0).await,
        10,
        "and is not stored again"
    );
    assert_eq!(
        produce(&mut client, idempotent_batch(pid, 0, 10, 5)).await,
        (0, 10)
    );
    // A gap: OUT_OF_ORDER_SEQUENCE_NUMBER (45).
    assert_eq!(
        produce(&mut client, idempotent_batch(pid, 0, 20, 1))
            .await
            .0,
        45
    );
    // An unknown producer starting mid-sequence: UNKNOWN_PRODUCER_ID (59).
    assert_eq!(
        produce(&mut client, idempotent_batch(pid + 1000, 0, 7, 1))
            .await
            .0,
        59
    );
    // A stale epoch after a newer one: INVALID_PRODUCER_EPOCH (47).
    assert_eq!(
        produce(&mut client, idempotent_batch(pid, 1, 0, 1)).await.0,
        0
    );
    assert_eq!(
        produce(&mut client, idempotent_batch(pid, 0, 15, 1))
            .await
            .0,
        47
    );
    assert_eq!(latest_offset(&broker, "idem", 0).await, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_survives_a_broker_sigkill_without_duplicates_or_gaps() {
    let mut broker = TestBroker::start();
    // flush.messages=1 fsyncs before each acknowledgement: a kill then
    // often lands between a batch being written and its ack being sent,
    // which is exactly when a retry would duplicate it.
    create_topic(&broker, "exactly", 3, &[("flush.messages", "1")]).await;
    let producer = broker.producer(&[
        ("enable.idempotence", "true"),
        ("linger.ms", "5"),
        ("message.timeout.ms", "120000"),
        ("retry.backoff.ms", "50"),
        ("reconnect.backoff.ms", "50"),
        ("reconnect.backoff.max.ms", "200"),
    ]);
    const TOTAL: usize = 60_000;
    let mut pending = FuturesUnordered::new();
    let kill_points = [TOTAL / 4, TOTAL / 2, 3 * TOTAL / 4];
    for i in 0..TOTAL {
        let value = format!("{i:06}");
        let producer = &producer;
        pending.push(async move {
            let record = FutureRecord::<(), _>::to("exactly")
                .partition((i % 3) as i32)
                .payload(&value);
            producer
                .send(record, Duration::from_secs(120))
                .await
                .map_err(|(e, _)| e)
        });
        if pending.len() >= 2_000 {
            pending
                .next()
                .await
                .unwrap()
                .expect("every record is delivered eventually");
        }
        if kill_points.contains(&i) {
            // Mid-stream: kill the broker with records in flight, restart it.
            broker.kill();
            tokio::time::sleep(Duration::from_millis(200)).await;
            broker.restart();
        }
    }
    while let Some(result) = pending.next().await {
        result.expect("every record is delivered eventually");
    }

    let total: i64 = {
        let mut t = 0;
        for p in 0..3 {
            t += latest_offset(&broker, "exactly", p).await;
        }
        t
    };
    assert_eq!(total, TOTAL as i64, "no duplicates were stored");
    let messages = broker.consume("exactly", 3, TOTAL, Duration::from_secs(60));
    let mut per_partition: HashMap<i32, Vec<usize>> = HashMap::new();
    for m in &messages {
        per_partition
            .entry(m.partition())
            .or_default()
            .push(text(m).parse().unwrap());
    }
    for (p, values) in per_partition {
        let expected: Vec<usize> = (0..TOTAL).filter(|i| i % 3 == p as usize).collect();
        assert_eq!(
            values, expected,
            "partition {p}: every record once, in order"
        );
    }
}
