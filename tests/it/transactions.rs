//! The partition side of transactions: transactional batches hold the last
//! stable offset back until a WriteTxnMarkers COMMIT or ABORT ends them;
//! read_committed fetches stop at it and name the aborted transactions,
//! which librdkafka's read_committed consumer then drops.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, FetchRequest, FetchResponse, InitProducerIdRequest,
    ListOffsetsRequest, ProduceRequest, ProducerId, TopicName, WriteTxnMarkersRequest,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use runnel_core::client::Client;

use crate::harness::{create_topic, record_batch, TestBroker, PLAIN};

const TOPIC: &str = "txn";

fn name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

async fn producer_id(client: &mut Client) -> i64 {
    let mut init = InitProducerIdRequest::default();
    init.transactional_id = None;
    init.transaction_timeout_ms = 60_000;
    init.producer_id = ProducerId(-1);
    init.producer_epoch = -1;
    let r = client.send(&init).await.unwrap();
    assert_eq!(r.error_code, 0);
    r.producer_id.0
}

async fn produce(client: &mut Client, records: Bytes) -> i64 {
    let mut p = PartitionProduceData::default();
    p.index = 0;
    p.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = name();
    t.partition_data = vec![p];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 5000;
    request.topic_data = vec![t];
    let response = client.send(&request).await.unwrap();
    let r = &response.responses[0].partition_responses[0];
    assert_eq!(r.error_code, 0, "produce");
    r.base_offset
}

async fn marker(client: &mut Client, producer_id: i64, epoch: i16, commit: bool) -> i16 {
    let mut t = WritableTxnMarkerTopic::default();
    t.name = name();
    t.partition_indexes = vec![0];
    let mut m = WritableTxnMarker::default();
    m.producer_id = ProducerId(producer_id);
    m.producer_epoch = epoch;
    m.transaction_result = commit;
    m.topics = vec![t];
    let mut request = WriteTxnMarkersRequest::default();
    request.markers = vec![m];
    let response = client.send(&request).await.unwrap();
    response.markers[0].topics[0].partitions[0].error_code
}

async fn fetch(client: &mut Client, offset: i64, read_committed: bool) -> FetchResponse {
    let mut p = FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = offset;
    p.partition_max_bytes = 1 << 20;
    p.current_leader_epoch = -1;
    let mut t = FetchTopic::default();
    t.topic = name();
    t.partitions = vec![p];
    let mut request = FetchRequest::default();
    request.replica_id = (-1).into();
    request.max_wait_ms = 0;
    request.max_bytes = 1 << 20;
    request.isolation_level = read_committed as i8;
    request.topics = vec![t];
    client.send_version(&request, 11).await.unwrap()
}

/// DescribeProducers of the partition: (producer id, epoch, last
/// sequence, open transaction's first offset), by id.
async fn producers(client: &mut Client) -> Vec<(i64, i32, i32, i64)> {
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    let mut t = TopicRequest::default();
    t.name = name();
    t.partition_indexes = vec![0, 9];
    let mut request = DescribeProducersRequest::default();
    request.topics = vec![t];
    let response = client.send(&request).await.unwrap();
    let partitions = &response.topics[0].partitions;
    assert_eq!(
        partitions[1].error_code,
        kafka_protocol::ResponseError::UnknownTopicOrPartition.code(),
        "a partition the topic does not have"
    );
    assert_eq!(partitions[0].error_code, 0);
    partitions[0]
        .active_producers
        .iter()
        .map(|p| {
            (
                p.producer_id.0,
                p.producer_epoch,
                p.last_sequence,
                p.current_txn_start_offset,
            )
        })
        .collect()
}

async fn latest(client: &mut Client, read_committed: bool) -> i64 {
    let mut p = ListOffsetsPartition::default();
    p.partition_index = 0;
    p.timestamp = -1;
    p.current_leader_epoch = -1;
    let mut t = ListOffsetsTopic::default();
    t.name = name();
    t.partitions = vec![p];
    let mut request = ListOffsetsRequest::default();
    request.replica_id = (-1).into();
    request.isolation_level = read_committed as i8;
    request.topics = vec![t];
    client.send(&request).await.unwrap().topics[0].partitions[0].offset
}

/// Every value a librdkafka consumer with `isolation.level` reads from the
/// start until `expected` arrived (or 20 s).
fn consume(broker: &TestBroker, isolation: &str, expected: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", format!("txn-{isolation}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while values.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    // Nothing more arrives after the expected records.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_transactions_hold_the_last_stable_offset_and_aborted_ones_are_dropped_by_read_committed_consumers(
) {
    let broker = TestBroker::start_alone(&[]);
    create_topic(&broker, TOPIC, 1, &[]).await;
    let mut client = broker.client().await;
    let a = producer_id(&mut client).await;
    let b = producer_id(&mut client).await;

    // 0-1: a's transaction; 2: plain; 3-4: b's transaction.
    assert_eq!(
        produce(&mut client, record_batch((a, 0, 0), true, &["a1", "a2"])).await,
        0
    );
    assert_eq!(
        produce(&mut client, record_batch(PLAIN, false, &["plain"])).await,
        2
    );
    assert_eq!(
        produce(&mut client, record_batch((b, 0, 0), true, &["b1", "b2"])).await,
        3
    );

    // Both open: read_committed sees nothing, read_uncommitted everything.
    let f = fetch(&mut client, 0, true).await;
    let p = &f.responses[0].partitions[0];
    assert_eq!((p.high_watermark, p.last_stable_offset), (5, 0));
    assert!(
        p.records.as_ref().is_none_or(|r| r.is_empty()),
        "nothing stable yet"
    );
    assert_eq!(latest(&mut client, true).await, 0);
    assert_eq!(latest(&mut client, false).await, 5);
    let f = fetch(&mut client, 0, false).await;
    assert!(f.responses[0].partitions[0]
        .records
        .as_ref()
        .is_some_and(|r| !r.is_empty()));

    // DescribeProducers shows the open transactions (what
    // kafka-transactions.sh uses to find a hanging one).
    assert_eq!(
        producers(&mut client).await,
        vec![(a, 0, 1, 0), (b, 0, 1, 3)]
    );

    // a aborts (marker at 5), b commits (marker at 6).
    assert_eq!(marker(&mut client, a, 0, false).await, 0);
    let f = fetch(&mut client, 0, true).await;
    let p = &f.responses[0].partitions[0];
    assert_eq!(p.last_stable_offset, 3, "b's transaction is still open");
    assert_eq!(marker(&mut client, b, 0, true).await, 0);
    let f = fetch(&mut client, 0, true).await;
    let p = &f.responses[0].partitions[0];
    assert_eq!((p.high_watermark, p.last_stable_offset), (7, 7));
    let aborted: Vec<(i64, i64)> = p
        .aborted_transactions
        .as_ref()
        .expect("read_committed names aborted transactions")
        .iter()
        .map(|t| (t.producer_id.0, t.first_offset))
        .collect();
    assert_eq!(aborted, vec![(a, 0)]);
    assert_eq!(latest(&mut client, true).await, 7);
    assert_eq!(
        producers(&mut client).await,
        vec![(a, 0, 1, -1), (b, 0, 1, -1)]
    );
    // A marker of an older epoch than the producer's is refused.
    assert_eq!(marker(&mut client, b, 1, false).await, 0);
    assert_eq!(
        marker(&mut client, b, 0, true).await,
        kafka_protocol::ResponseError::InvalidProducerEpoch.code()
    );

    // Real consumers: read_committed drops a's records, read_uncommitted
    // gets them; neither sees the markers.
    let committed = consume(&broker, "read_committed", 3);
    assert_eq!(committed, vec!["plain", "b1", "b2"]);
    let uncommitted = consume(&broker, "read_uncommitted", 5);
    assert_eq!(uncommitted, vec!["a1", "a2", "plain", "b1", "b2"]);

    // After a restart (state from the log and its snapshot) the same.
    let mut broker = broker;
    broker.restart();
    let mut client = broker.client().await;
    let f = fetch(&mut client, 0, true).await;
    let p = &f.responses[0].partitions[0];
    assert_eq!(p.last_stable_offset, p.high_watermark);
    assert_eq!(p.aborted_transactions.as_ref().map(Vec::len), Some(1));
    assert_eq!(
        consume(&broker, "read_committed", 3),
        vec!["plain", "b1", "b2"]
    );
}
