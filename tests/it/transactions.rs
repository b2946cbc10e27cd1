//! Transactions. The partition side: transactional batches hold the last
//! stable offset back until a WriteTxnMarkers COMMIT or ABORT ends them;
//! read_committed fetches stop at it and name the aborted transactions,
//! which librdkafka's read_committed consumer then drops. Then librdkafka's
//! transactional producer against the transaction coordinator: commits and
//! aborts, offsets committed with a transaction (consume-transform-produce),
//! fencing of an older instance, timeouts, a broker killed mid-transaction,
//! and a coordinator lost in a cluster.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTransactionsRequest, FetchRequest, FetchResponse,
    FindCoordinatorRequest, InitProducerIdRequest, ListOffsetsRequest, ListTransactionsRequest,
    OffsetFetchRequest, ProduceRequest, ProducerId, TopicName, WriteTxnMarkersRequest,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use runnel_core::client::Client;

use crate::harness::{
    create_replicated_topic, create_topic, metric, record_batch, TestBroker, TestCluster, PLAIN,
};

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
    // Transactional records need a transactional id in the request.
    request.transactional_id = Some(StrBytes::from_static_str("raw").into());
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
    read_values(&broker.addr(), TOPIC, 1, isolation, expected)
}

/// Every value of `partitions` partitions of `topic` a librdkafka consumer
/// with `isolation.level` reads from the start until `expected` arrived
/// (or 20 s), then for half a second more.
fn read_values(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
    expected: usize,
) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("txn-{isolation}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
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

// ---- librdkafka's transactional producer and the transaction coordinator

/// How long a transactional call may take in these tests.
const T: Duration = Duration::from_secs(30);

/// Fast timeout checks and few `__transaction_state` partitions.
const TXN_CONFIG: &str =
    "transaction_state_partitions: 4\ntransaction_abort_check_interval_ms: 200\ngroup_initial_rebalance_delay_ms: 100\n";

fn txn_producer(bootstrap: &str, id: &str, extra: &[(&str, &str)]) -> BaseProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", id)
        .set("linger.ms", "5");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().expect("create transactional producer")
}

fn send(producer: &BaseProducer, topic: &str, partition: i32, value: &str) {
    producer
        .send(
            BaseRecord::to(topic)
                .partition(partition)
                .key(value)
                .payload(value),
        )
        .expect("enqueue");
    producer.poll(Duration::ZERO);
}

fn sorted(mut values: Vec<String>) -> Vec<String> {
    values.sort_by_key(|v| v[1..].parse::<u32>().unwrap_or(u32::MAX));
    values
}

fn names(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("v{i}")).collect()
}

/// FindCoordinator for a transactional id: (node id, error code), asked
/// until the coordinator is there (the first ask makes the topic).
async fn transaction_coordinator(client: &mut Client, id: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut request = FindCoordinatorRequest::default();
        request.key_type = 1;
        request.key = StrBytes::from_string(id.to_string());
        let r = client.send_version(&request, 3).await.unwrap();
        if r.error_code == 0 {
            return r.node_id.0;
        }
        assert!(
            Instant::now() < deadline,
            "no transaction coordinator: error {}",
            r.error_code
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// DescribeTransactions of one id: (state, producer id, epoch, partitions).
async fn describe_txn(client: &mut Client, id: &str) -> (String, i64, i16, usize) {
    let mut request = DescribeTransactionsRequest::default();
    request.transactional_ids = vec![StrBytes::from_string(id.to_string()).into()];
    let r = client.send(&request).await.unwrap();
    let s = &r.transaction_states[0];
    assert_eq!(s.error_code, 0, "describe {id}");
    (
        s.transaction_state.to_string(),
        s.producer_id.0,
        s.producer_epoch,
        s.topics.iter().map(|t| t.partitions.len()).sum(),
    )
}

/// Waits until DescribeTransactions shows `id` in `state`.
async fn wait_for_txn_state(
    client: &mut Client,
    id: &str,
    state: &str,
) -> (String, i64, i16, usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = describe_txn(client, id).await;
        if d.0 == state {
            return d;
        }
        assert!(Instant::now() < deadline, "{id} stays {d:?}, not {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// ListOffsets latest with read_committed (the last stable offset) and
/// read_uncommitted (the high watermark) of partition `p` of `topic`.
async fn stable_and_end(client: &mut Client, topic: &str, p: i32) -> (i64, i64) {
    let mut out = [0i64; 2];
    for (i, isolation) in [1i8, 0].into_iter().enumerate() {
        let mut lp = ListOffsetsPartition::default();
        lp.partition_index = p;
        lp.timestamp = -1;
        lp.current_leader_epoch = -1;
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.to_string()));
        t.partitions = vec![lp];
        let mut request = ListOffsetsRequest::default();
        request.replica_id = (-1).into();
        request.isolation_level = isolation;
        request.topics = vec![t];
        out[i] = client.send(&request).await.unwrap().topics[0].partitions[0].offset;
    }
    (out[0], out[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_producer_commits_and_aborts_and_read_committed_consumers_see_only_commits()
{
    let broker = TestBroker::start_with_config(TXN_CONFIG, &[]);
    create_topic(&broker, "orders", 2, &[]).await;
    let addr = broker.addr();
    let producer = txn_producer(&addr, "orders-app", &[]);
    tokio::task::block_in_place(|| {
        producer.init_transactions(T).expect("init_transactions");
        // Committed, aborted, committed.
        for (range, commit) in [(0..6, true), (6..10, false), (10..13, true)] {
            producer.begin_transaction().unwrap();
            for i in range {
                send(&producer, "orders", i % 2, &format!("v{i}"));
            }
            if commit {
                producer.commit_transaction(T).expect("commit");
            } else {
                producer.flush(T).unwrap();
                producer.abort_transaction(T).expect("abort");
            }
        }
    });
    let committed =
        tokio::task::block_in_place(|| read_values(&addr, "orders", 2, "read_committed", 9));
    let mut expected = names(0..6);
    expected.extend(names(10..13));
    assert_eq!(sorted(committed), expected);
    let everything =
        tokio::task::block_in_place(|| read_values(&addr, "orders", 2, "read_uncommitted", 13));
    assert_eq!(sorted(everything), names(0..13));

    // The coordinator's view, as kafka-transactions.sh shows it.
    let mut client = broker.client().await;
    assert_eq!(transaction_coordinator(&mut client, "orders-app").await, 0);
    let (state, described_id, epoch, partitions) =
        wait_for_txn_state(&mut client, "orders-app", "CompleteCommit").await;
    assert!(described_id >= 0);
    assert_eq!((epoch, partitions), (0, 0));
    let mut list = ListTransactionsRequest::default();
    list.state_filters = vec![StrBytes::from_static_str("CompleteCommit")];
    list.duration_filter = -1;
    let listed = client.send_version(&list, 1).await.unwrap();
    assert_eq!(listed.error_code, 0);
    let ids: Vec<String> = listed
        .transaction_states
        .iter()
        .map(|t| t.transactional_id.0.to_string())
        .collect();
    assert_eq!(ids, vec!["orders-app"], "{state}");
    // A state that does not exist is named back and matches nothing; a
    // duration filter leaves out ids with no transaction open.
    list.state_filters = vec![StrBytes::from_static_str("NoSuchState")];
    let unknown = client.send_version(&list, 1).await.unwrap();
    assert_eq!(unknown.unknown_state_filters, list.state_filters);
    assert!(unknown.transaction_states.is_empty());
    list.state_filters = Vec::new();
    list.duration_filter = 0;
    let open = client.send_version(&list, 1).await.unwrap();
    assert!(open.transaction_states.is_empty(), "nothing is open");
    // The coordinator's counters on /metrics.
    let page = broker.metrics().await;
    let value = |series: &str| metric(&page, series).unwrap_or(-1.0);
    assert_eq!(
        (
            value("runnel_transaction_commits_total"),
            value("runnel_transaction_aborts_total"),
            value("runnel_transaction_ids"),
            value("runnel_transaction_open")
        ),
        (2.0, 1.0, 1.0, 0.0),
        "{page}"
    );
    // Nothing is left open: the stable offset is the end of each partition.
    for p in 0..2 {
        let (stable, end) = stable_and_end(&mut client, "orders", p).await;
        assert_eq!(stable, end, "partition {p}");
    }
    // A producer without a transactional id cannot write transactional
    // records (the raw request of the first test, without its id).
    let pid = producer_id(&mut client).await;
    let mut p = PartitionProduceData::default();
    p.index = 0;
    p.records = Some(record_batch((pid, 0, 0), true, &["sneaky"]));
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_static_str("orders"));
    t.partition_data = vec![p];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 5000;
    request.topic_data = vec![t];
    let r = client.send(&request).await.unwrap();
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        kafka_protocol::ResponseError::TransactionalIdAuthorizationFailed.code()
    );
}

/// The committed offset of `group` for partition 0 of `topic` (OffsetFetch
/// v7), with or without `require_stable`: (offset, error code).
async fn committed_offset(
    client: &mut Client,
    group: &str,
    topic: &str,
    require_stable: bool,
) -> (i64, i16) {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_indexes = vec![0];
    let mut request = OffsetFetchRequest::default();
    request.group_id = StrBytes::from_string(group.to_string()).into();
    request.topics = Some(vec![t]);
    request.require_stable = require_stable;
    let r = client.send_version(&request, 7).await.unwrap();
    assert_eq!(r.error_code, 0);
    let p = &r.topics[0].partitions[0];
    (p.committed_offset, p.error_code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumed_offsets_commit_with_the_transaction_and_are_dropped_with_its_abort() {
    let mut broker = TestBroker::start_with_config(TXN_CONFIG, &[]);
    create_topic(&broker, "in", 1, &[]).await;
    create_topic(&broker, "out", 1, &[]).await;
    let addr = broker.addr();
    let plain = broker.producer(&[]);
    for i in 0..15 {
        plain
            .send(
                FutureRecord::to("in")
                    .partition(0)
                    .key("k")
                    .payload(&format!("v{i}")),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("group.id", "eos-app")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let producer = txn_producer(&addr, "eos-app-0", &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("in", 0, Offset::Beginning)
        .unwrap();
    // Consume, transform, produce: the first 10 records' outputs and
    // offsets in one transaction that commits.
    let process = |count: usize| -> TopicPartitionList {
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        producer.begin_transaction().unwrap();
        while seen < count && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let value = String::from_utf8_lossy(m.payload().unwrap()).to_uppercase();
                send(&producer, "out", 0, &value);
                seen += 1;
            }
        }
        assert_eq!(seen, count);
        let position = consumer.position().unwrap();
        producer
            .send_offsets_to_transaction(&position, &consumer.group_metadata().unwrap(), T)
            .expect("send_offsets_to_transaction");
        position
    };
    tokio::task::block_in_place(|| {
        consumer.assign(&tpl).unwrap();
        producer.init_transactions(T).unwrap();
        let _ = process(10);
        producer.commit_transaction(T).expect("commit");
    });
    let mut client = broker.client().await;
    assert_eq!(
        committed_offset(&mut client, "eos-app", "in", true).await,
        (10, 0)
    );

    // The next 5 in a transaction left open: a fetch of stable offsets is
    // told to retry (KIP-447); a plain fetch sees the last commit.
    tokio::task::block_in_place(|| {
        let _ = process(5);
    });
    assert_eq!(
        committed_offset(&mut client, "eos-app", "in", true).await,
        (
            -1,
            kafka_protocol::ResponseError::UnstableOffsetCommit.code()
        )
    );
    assert_eq!(
        committed_offset(&mut client, "eos-app", "in", false).await,
        (10, 0)
    );
    // Aborted: the offsets stay where the commit left them.
    tokio::task::block_in_place(|| {
        producer.flush(T).unwrap();
        producer.abort_transaction(T).expect("abort")
    });
    assert_eq!(
        committed_offset(&mut client, "eos-app", "in", true).await,
        (10, 0)
    );
    let out = tokio::task::block_in_place(|| read_values(&addr, "out", 1, "read_committed", 10));
    assert_eq!(out, (0..10).map(|i| format!("V{i}")).collect::<Vec<_>>());

    // A restart loads the same: the aborted offsets are not applied.
    drop((producer, consumer));
    broker.restart();
    let mut client = broker.client().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut request = OffsetFetchRequest::default();
        request.group_id = StrBytes::from_static_str("eos-app").into();
        request.topics = None;
        let r = client.send_version(&request, 7).await.unwrap();
        if r.error_code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "group not loaded: {}",
            r.error_code
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        committed_offset(&mut client, "eos-app", "in", true).await,
        (10, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_fences_the_old_one_and_its_open_transaction_is_aborted() {
    let broker = TestBroker::start_with_config(TXN_CONFIG, &[]);
    create_topic(&broker, "fenced", 1, &[]).await;
    let addr = broker.addr();
    let old = txn_producer(&addr, "fence-me", &[]);
    tokio::task::block_in_place(|| {
        old.init_transactions(T).unwrap();
        old.begin_transaction().unwrap();
        send(&old, "fenced", 0, "v0");
        old.flush(T).unwrap();
    });
    let mut client = broker.client().await;
    let (_, producer_id, old_epoch, _) = describe_txn(&mut client, "fence-me").await;
    let new = txn_producer(&addr, "fence-me", &[]);
    tokio::task::block_in_place(|| {
        new.init_transactions(T).expect("the new instance starts");
        new.begin_transaction().unwrap();
        send(&new, "fenced", 0, "v1");
        new.commit_transaction(T).expect("the new instance commits");
    });
    let (state, same_id, new_epoch, _) = describe_txn(&mut client, "fence-me").await;
    assert_eq!((state.as_str(), same_id), ("CompleteCommit", producer_id));
    assert!(new_epoch > old_epoch, "{new_epoch} > {old_epoch}");
    // The old instance is fenced: its commit fails for good.
    let refused = tokio::task::block_in_place(|| {
        send(&old, "fenced", 0, "v2");
        old.commit_transaction(T)
    });
    match refused.expect_err("a fenced producer cannot commit") {
        rdkafka::error::KafkaError::Transaction(e) => assert!(
            e.is_fatal() || e.code() == rdkafka::types::RDKafkaErrorCode::Fenced,
            "{e}"
        ),
        other => panic!("not a transaction error: {other}"),
    }
    // Its first record was aborted with its transaction.
    let committed =
        tokio::task::block_in_place(|| read_values(&addr, "fenced", 1, "read_committed", 1));
    assert_eq!(committed, vec!["v1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_open_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let broker = TestBroker::start_with_config(TXN_CONFIG, &[]);
    create_topic(&broker, "slow", 1, &[]).await;
    let addr = broker.addr();
    let producer = txn_producer(
        &addr,
        "slow-app",
        &[
            ("transaction.timeout.ms", "1500"),
            ("message.timeout.ms", "1500"),
        ],
    );
    tokio::task::block_in_place(|| {
        producer.init_transactions(T).unwrap();
        producer.begin_transaction().unwrap();
        send(&producer, "slow", 0, "late");
        producer.flush(T).unwrap();
    });
    let mut client = broker.client().await;
    let (stable, end) = stable_and_end(&mut client, "slow", 0).await;
    assert_eq!(
        (stable, end),
        (0, 1),
        "the open transaction holds the stable offset"
    );
    wait_for_txn_state(&mut client, "slow-app", "CompleteAbort").await;
    let (stable, end) = stable_and_end(&mut client, "slow", 0).await;
    assert_eq!(stable, end, "the abort's marker released it");
    let refused = tokio::task::block_in_place(|| producer.commit_transaction(T));
    assert!(refused.is_err(), "the timed-out transaction cannot commit");
    let committed =
        tokio::task::block_in_place(|| read_values(&addr, "slow", 1, "read_committed", 0));
    assert!(committed.is_empty(), "{committed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_survives_a_broker_killed_in_its_middle() {
    let mut broker = TestBroker::start_with_config(TXN_CONFIG, &[]);
    create_topic(&broker, "crash", 2, &[]).await;
    let addr = broker.addr();
    let producer = txn_producer(&addr, "crash-app", &[("message.timeout.ms", "60000")]);
    tokio::task::block_in_place(|| {
        producer.init_transactions(T).unwrap();
        producer.begin_transaction().unwrap();
        for i in 0..4 {
            send(&producer, "crash", i % 2, &format!("v{i}"));
        }
        producer.flush(T).unwrap();
    });
    // SIGKILL with the transaction open, then the same broker again: the
    // coordinator reads it back, the producer finishes it.
    broker.restart();
    tokio::task::block_in_place(|| {
        for i in 4..6 {
            send(&producer, "crash", i % 2, &format!("v{i}"));
        }
        producer
            .commit_transaction(Duration::from_secs(60))
            .expect("commit after the restart");
    });
    let committed =
        tokio::task::block_in_place(|| read_values(&addr, "crash", 2, "read_committed", 6));
    assert_eq!(sorted(committed), names(0..6));
    let mut client = broker.client().await;
    wait_for_txn_state(&mut client, "crash-app", "CompleteCommit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_commits_across_a_cluster_after_its_coordinator_is_killed() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), TXN_CONFIG).unwrap();
    let path = config.path().display().to_string();
    let mut cluster = TestCluster::start_with(3, &["--config", &path]);
    let bootstrap = cluster.bootstrap();
    create_replicated_topic(&cluster.nodes[0], "spread", 3, 3, &[]).await;
    let producer = txn_producer(
        &bootstrap,
        "cluster-app",
        &[("message.timeout.ms", "60000")],
    );
    tokio::task::block_in_place(|| {
        producer.init_transactions(T).unwrap();
        producer.begin_transaction().unwrap();
        for i in 0..6 {
            send(&producer, "spread", i % 3, &format!("v{i}"));
        }
        producer.flush(T).unwrap();
    });
    let mut client = Client::connect(&bootstrap, "tests").await.unwrap();
    let coordinator = transaction_coordinator(&mut client, "cluster-app").await;
    // Node ids are 1, 2, 3 in order.
    let index = (coordinator - 1) as usize;
    cluster.nodes[index].kill();
    // The producer finds the new coordinator, which ends the transaction
    // with markers to the partitions' leaders on the other nodes.
    tokio::task::block_in_place(|| {
        producer
            .commit_transaction(Duration::from_secs(90))
            .expect("commit with a new coordinator");
    });
    let alive: Vec<String> = cluster
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, n)| n.addr())
        .collect();
    let committed = tokio::task::block_in_place(|| {
        read_values(&alive.join(","), "spread", 3, "read_committed", 6)
    });
    assert_eq!(sorted(committed), names(0..6));
}
