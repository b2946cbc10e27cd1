//! Exact protocol behaviour with hand-built requests: error codes for bad
//! input, connection handling for malformed frames, long-poll fetches,
//! ListOffsets and DeleteRecords.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, CreateTopicsRequest, DeleteRecordsRequest, FetchRequest,
    FetchResponse, MetadataRequest, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use runnel_core::client::Client;

use crate::harness::{create_topic, list_offset, TestBroker};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// One v2 batch of `count` records of `value_len` bytes, timestamps from `ts`.
fn batch(count: usize, value_len: usize, ts: i64) -> Bytes {
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
            timestamp: ts + i as i64,
            key: None,
            value: Some(Bytes::from(vec![b'r'; value_len])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

async fn produce(client: &mut Client, topic: &str, partition: i32, records: Bytes) -> (i16, i64) {
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = name(topic);
    t.partition_data = vec![p];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 5000;
    request.topic_data = vec![t];
    let response: ProduceResponse = client.send(&request).await.unwrap();
    let r = &response.responses[0].partition_responses[0];
    (r.error_code, r.base_offset)
}

fn fetch_request(topic: &str, offset: i64, max_wait_ms: i32) -> FetchRequest {
    let mut p = FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = offset;
    p.partition_max_bytes = 1 << 20;
    p.current_leader_epoch = -1;
    let mut t = FetchTopic::default();
    t.topic = name(topic);
    t.partitions = vec![p];
    let mut request = FetchRequest::default();
    request.replica_id = (-1).into();
    request.max_wait_ms = max_wait_ms;
    request.min_bytes = 1;
    request.max_bytes = 50 << 20;
    request.topics = vec![t];
    request
}

async fn fetch(client: &mut Client, topic: &str, offset: i64, max_wait_ms: i32) -> (i16, Bytes) {
    // v12 addresses topics by name, which is what this test uses.
    let response: FetchResponse = client
        .send_version(&fetch_request(topic, offset, max_wait_ms), 12)
        .await
        .unwrap();
    let p = &response.responses[0].partitions[0];
    (p.error_code, p.records.clone().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_produce_input_gets_the_proper_kafka_error_codes() {
    let broker = TestBroker::start();
    create_topic(&broker, "strict", 1, &[("max.message.bytes", "2048")]).await;
    let mut client = broker.client().await;

    assert_eq!(
        produce(&mut client, "strict", 0, batch(3, 10, 1000)).await,
        (0, 0)
    );

    // A flipped bit in the records: CRC-32C mismatch -> CORRUPT_MESSAGE (2).
    let mut bad = batch(3, 10, 1000).to_vec();
    let n = bad.len();
    bad[n - 2] ^= 0x10;
    assert_eq!(
        produce(&mut client, "strict", 0, Bytes::from(bad)).await.0,
        2
    );

    // A batch larger than max.message.bytes -> MESSAGE_TOO_LARGE (10).
    assert_eq!(
        produce(&mut client, "strict", 0, batch(10, 500, 1000))
            .await
            .0,
        10
    );

    // A record set cut in the middle of a batch -> CORRUPT_MESSAGE.
    let whole = batch(3, 10, 1000);
    assert_eq!(
        produce(&mut client, "strict", 0, whole.slice(..whole.len() - 7))
            .await
            .0,
        2
    );

    // Old record format (magic 1) -> INVALID_RECORD (87).
    let mut v1 = batch(1, 10, 1000).to_vec();
    v1[16] = 1;
    assert_eq!(
        produce(&mut client, "strict", 0, Bytes::from(v1)).await.0,
        87
    );

    // Unknown partition -> UNKNOWN_TOPIC_OR_PARTITION (3).
    assert_eq!(
        produce(&mut client, "strict", 7, batch(1, 10, 1000))
            .await
            .0,
        3
    );

    // Invalid topic name -> INVALID_TOPIC_EXCEPTION (17).
    assert_eq!(
        produce(&mut client, "no spaces allowed", 0, batch(1, 10, 1000))
            .await
            .0,
        17
    );

    // Nothing bad was stored.
    assert_eq!(list_offset(&broker, "strict", 0, -1).await, Ok(3));
    let (code, records) = fetch(&mut client, "strict", 0, 0).await;
    assert_eq!(code, 0);
    assert_eq!(records.len(), batch(3, 10, 1000).len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_auto_creates_topics_and_metadata_respects_the_flag() {
    let broker = TestBroker::start_with(&["--default-partitions", "3"]);
    let mut client = broker.client().await;
    assert_eq!(produce(&mut client, "auto", 2, batch(1, 5, 0)).await.0, 0);

    let mut request = MetadataRequest::default();
    let mut t = MetadataRequestTopic::default();
    t.name = Some(name("never-created"));
    request.topics = Some(vec![t]);
    request.allow_auto_topic_creation = false;
    let response = client.send(&request).await.unwrap();
    assert_eq!(
        response.topics[0].error_code, 3,
        "no auto-creation when the client says no"
    );

    let mut request = MetadataRequest::default();
    request.topics = None;
    let response = client.send(&request).await.unwrap();
    let auto = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("auto"))
        .unwrap();
    assert_eq!(
        auto.partitions.len(),
        3,
        "auto-created topics get the default partition count"
    );

    let no_auto = TestBroker::start_with(&["--auto-create-topics", "false"]);
    let mut client = no_auto.client().await;
    assert_eq!(produce(&mut client, "auto", 0, batch(1, 5, 0)).await.0, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_errors_and_long_polling() {
    let broker = TestBroker::start();
    create_topic(&broker, "poll", 1, &[]).await;
    let mut client = broker.client().await;
    produce(&mut client, "poll", 0, batch(2, 10, 0)).await;

    // Beyond the log end -> OFFSET_OUT_OF_RANGE (1).
    assert_eq!(fetch(&mut client, "poll", 5, 0).await.0, 1);
    // Unknown topic -> UNKNOWN_TOPIC_OR_PARTITION (3).
    assert_eq!(fetch(&mut client, "nope", 0, 0).await.0, 3);

    // At the end with nothing new: waits for max_wait_ms, returns empty.
    let started = Instant::now();
    let (code, records) = fetch(&mut client, "poll", 2, 400).await;
    let waited = started.elapsed();
    assert_eq!((code, records.len()), (0, 0));
    assert!(
        waited >= Duration::from_millis(350),
        "long poll returned after {waited:?}"
    );

    // A produce during the wait ends it early with the new data.
    let addr = broker.addr();
    let producer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut other = Client::connect(&addr, "producer").await.unwrap();
        produce(&mut other, "poll", 0, batch(1, 10, 0)).await
    });
    let started = Instant::now();
    let (code, records) = fetch(&mut client, "poll", 2, 10_000).await;
    let waited = started.elapsed();
    assert_eq!(producer.await.unwrap(), (0, 2));
    assert_eq!(code, 0);
    assert!(!records.is_empty(), "the new batch is returned");
    assert!(
        waited < Duration::from_secs(5),
        "fetch woke up on the append, after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_by_time_and_delete_records() {
    let broker = TestBroker::start();
    create_topic(&broker, "times", 1, &[]).await;
    let mut client = broker.client().await;
    for i in 0..10 {
        // batch i: offsets 5i..5i+4, timestamps 10_000*i + 0..4
        produce(&mut client, "times", 0, batch(5, 10, 10_000 * i)).await;
    }
    assert_eq!(list_offset(&broker, "times", 0, -2).await, Ok(0));
    assert_eq!(list_offset(&broker, "times", 0, -1).await, Ok(50));
    assert_eq!(list_offset(&broker, "times", 0, 30_002).await, Ok(17));
    assert_eq!(list_offset(&broker, "times", 0, 30_005).await, Ok(20));
    assert_eq!(list_offset(&broker, "times", 0, 1_000_000).await, Ok(-1));
    assert_eq!(
        list_offset(&broker, "times", 0, -3).await,
        Ok(49),
        "max timestamp"
    );

    let mut p = DeleteRecordsPartition::default();
    p.partition_index = 0;
    p.offset = 23;
    let mut t = DeleteRecordsTopic::default();
    t.name = name("times");
    t.partitions = vec![p];
    let mut request = DeleteRecordsRequest::default();
    request.topics = vec![t];
    let response = client.send(&request).await.unwrap();
    let r = &response.topics[0].partitions[0];
    assert_eq!((r.error_code, r.low_watermark), (0, 23));
    assert_eq!(list_offset(&broker, "times", 0, -2).await, Ok(23));
    assert_eq!(
        fetch(&mut client, "times", 10, 0).await.0,
        1,
        "deleted records are out of range"
    );
    assert_eq!(fetch(&mut client, "times", 23, 0).await.0, 0);

    // Deleting past the high watermark is refused.
    let mut request = request.clone();
    request.topics[0].partitions[0].offset = 500;
    let response = client.send(&request).await.unwrap();
    assert_eq!(response.topics[0].partitions[0].error_code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_validates_its_input() {
    let broker = TestBroker::start();
    let mut client = broker.client().await;
    let topic = |n: &str, partitions: i32, rf: i16| {
        let mut t = CreatableTopic::default();
        t.name = name(n);
        t.num_partitions = partitions;
        t.replication_factor = rf;
        t
    };
    let mut with_bad_config = topic("cfg", 1, 1);
    let mut c = kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default();
    c.name = StrBytes::from_static_str("retention.ms");
    c.value = Some(StrBytes::from_static_str("soon"));
    with_bad_config.configs.push(c);
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![
        topic("ok", 2, 1),
        topic("zero", 0, 1),
        topic("rf3", 1, 3),
        topic("bad/name", 1, 1),
        with_bad_config,
        topic("dup", 1, 1),
        topic("dup", 1, 1),
    ];
    let response = client.send(&request).await.unwrap();
    let codes: Vec<(String, i16)> = response
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.error_code))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("ok".into(), 0),
            ("zero".into(), 37),
            ("rf3".into(), 38),
            ("bad/name".into(), 17),
            ("cfg".into(), 40),
            ("dup".into(), 42),
            ("dup".into(), 42),
        ]
    );
    let again = client.send(&request).await.unwrap();
    assert_eq!(again.topics[0].error_code, 36, "TOPIC_ALREADY_EXISTS");
}

/// Writes raw bytes and reports whether the broker closed the connection.
fn closes_connection(addr: &str, bytes: &[u8]) -> bool {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let mut buf = [0u8; 64];
    matches!(stream.read(&mut buf), Ok(0) | Err(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_the_connection_and_the_broker_keeps_serving() {
    let broker = TestBroker::start();
    let addr = broker.addr();
    // Oversized frame: 200 MiB declared, beyond max_request_bytes.
    assert!(closes_connection(&addr, &(200i32 << 20).to_be_bytes()));
    // Negative size.
    assert!(closes_connection(&addr, &(-5i32).to_be_bytes()));
    // A Metadata frame over the control-request limit (8 MiB).
    let mut big = (9i32 << 20).to_be_bytes().to_vec();
    big.extend_from_slice(&3i16.to_be_bytes());
    assert!(closes_connection(&addr, &big));
    // Unknown API key.
    let mut unknown = 8i32.to_be_bytes().to_vec();
    unknown.extend_from_slice(&[0x03, 0xE7, 0, 0, 0, 0, 0, 1]);
    assert!(closes_connection(&addr, &unknown));
    // Metadata v0 declaring two billion topics in a 10-byte body.
    let mut huge_array = 16i32.to_be_bytes().to_vec();
    huge_array.extend_from_slice(&[0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff]); // header, null client id
    huge_array.extend_from_slice(&0x7fff_fff0i32.to_be_bytes());
    huge_array.extend_from_slice(&[0, 1]);
    assert!(closes_connection(&addr, &huge_array));
    // Random garbage of many shapes.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..200 {
        let len = (seed % 200) as usize + 8;
        let mut frame = ((len as i32).to_be_bytes()).to_vec();
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            frame.push(seed as u8);
        }
        let _ = closes_connection(&addr, &frame);
    }
    // Still alive and answering.
    let mut client = broker.client().await;
    let response = client.send(&MetadataRequest::default()).await.unwrap();
    assert_eq!(response.brokers.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_of_an_unknown_version_answers_unsupported_version_in_v0() {
    let broker = TestBroker::start();
    let mut stream = TcpStream::connect(broker.addr()).unwrap();
    // ApiVersions v99, correlation id 7, null client id.
    let body = [0u8, 18, 0, 99, 0, 0, 0, 7, 0xff, 0xff];
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    stream.write_all(&frame).unwrap();
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap();
    let mut response = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut response).unwrap();
    assert_eq!(&response[..4], &7i32.to_be_bytes());
    let decoded = ApiVersionsResponse::decode(&mut Bytes::from(response[4..].to_vec()), 0).unwrap();
    assert_eq!(decoded.error_code, 35);
    assert!(decoded
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16 && k.min_version == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_acks_zero_produce_closes_the_connection() {
    use kafka_protocol::protocol::Encodable;
    let broker = TestBroker::start();
    create_topic(&broker, "fire-and-forget", 1, &[]).await;
    let encode = |records: Bytes| {
        let mut p = PartitionProduceData::default();
        p.index = 0;
        p.records = Some(records);
        let mut t = TopicProduceData::default();
        t.name = name("fire-and-forget");
        t.partition_data = vec![p];
        let mut request = ProduceRequest::default();
        request.acks = 0;
        request.timeout_ms = 5000;
        request.topic_data = vec![t];
        let mut body = BytesMut::new();
        request.encode(&mut body, 9).unwrap();
        body
    };
    let mut client = broker.client().await;
    // A good acks=0 produce: no response, the connection stays usable.
    client
        .send_no_response(ApiKey::Produce as i16, 9, &encode(batch(2, 10, 0)))
        .await
        .unwrap();
    assert!(client.send(&MetadataRequest::default()).await.is_ok());
    // A corrupt one: the broker closes the connection.
    let mut bad = batch(2, 10, 0).to_vec();
    let n = bad.len();
    bad[n - 1] ^= 1;
    client
        .send_no_response(ApiKey::Produce as i16, 9, &encode(Bytes::from(bad)))
        .await
        .unwrap();
    assert!(
        client.send(&MetadataRequest::default()).await.is_err(),
        "connection must be closed"
    );
    assert_eq!(list_offset(&broker, "fire-and-forget", 0, -1).await, Ok(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_offsets_topic_cannot_be_written_deleted_or_repartitioned() {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::{CreatePartitionsRequest, DeleteTopicsRequest};
    let broker = TestBroker::start();
    let mut client = broker.client().await;
    let mut all = MetadataRequest::default();
    all.topics = None;
    let metadata = client.send(&all).await.unwrap();
    let offsets = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("__consumer_offsets"))
        .expect("the offsets topic exists from the start");
    assert!(offsets.is_internal);
    assert_eq!(offsets.partitions.len(), 50);
    assert_eq!(
        produce(&mut client, "__consumer_offsets", 0, batch(1, 10, 0))
            .await
            .0,
        17
    );
    let mut del = DeleteTopicsRequest::default();
    let mut t = DeleteTopicState::default();
    t.name = Some(name("__consumer_offsets"));
    del.topics = vec![t];
    assert_eq!(client.send(&del).await.unwrap().responses[0].error_code, 17);
    let mut grow = CreatePartitionsRequest::default();
    let mut t = CreatePartitionsTopic::default();
    t.name = name("__consumer_offsets");
    t.count = 60;
    grow.topics = vec![t];
    assert_eq!(client.send(&grow).await.unwrap().results[0].error_code, 17);
}

/// A broker whose data directory is a tmpfs of `size` of its own: `runnel
/// serve` runs in a new mount namespace (`unshare`; a user namespace maps
/// the caller to root there, so no privilege is needed where unprivileged
/// user namespaces are allowed) in which the directory is mounted first.
/// Killed when dropped.
struct SmallDiskBroker {
    child: std::process::Child,
    port: u16,
    admin_port: u16,
    data_dir: std::path::PathBuf,
    log: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

impl SmallDiskBroker {
    fn start(size: &str) -> SmallDiskBroker {
        use crate::harness::{free_port, BIN};
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        std::fs::create_dir(&data_dir).unwrap();
        let log = tmp.path().join("broker.log");
        let (port, admin_port) = (free_port(), free_port());
        let child = std::process::Command::new("unshare")
            .args(["--mount", "--map-root-user", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs -o size={size} runnel-test \"$0\" && exec \"$@\""
            ))
            .arg(&data_dir)
            .arg(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--kafka-addr", &format!("127.0.0.1:{port}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .args(["--registry-addr", "off"])
            .args(["--connect-addr", "off"])
            .env("RUNNEL_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("run unshare (util-linux)");
        let mut broker = SmallDiskBroker {
            child,
            port,
            admin_port,
            data_dir,
            log,
            _tmp: tmp,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(broker.addr()).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!(
                    "the broker on a small tmpfs exited with {status}; this test needs `unshare \
                     --mount --map-root-user` (root, or unprivileged user namespaces):\n{}",
                    broker.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "not listening:\n{}",
                broker.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What the broker logged, without terminal colours.
    fn log(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw.as_str();
        while let Some(at) = rest.find('\x1b') {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            rest = rest.find('m').map_or("", |end| &rest[end + 1..]);
        }
        out.push_str(rest);
        out
    }

    async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.admin_port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match reqwest::get(&url).await {
                Ok(r) if r.status().is_success() => return r.text().await.unwrap(),
                other if Instant::now() > deadline => panic!("GET {url}: {other:?}"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

impl Drop for SmallDiskBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- broker log ----\n{}", self.log());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_refused_with_storage_errors_logged_once_and_counted() {
    // A small tmpfs needs a mount namespace: root, or unprivileged user
    // namespaces. Where neither exists the point is still shown by the unit
    // test `a_failed_append_reaches_the_broker_metrics_and_a_later_success_clears_disk_full`.
    let probe = std::process::Command::new("unshare")
        .args(["--mount", "--map-root-user", "sh", "-c"])
        .arg("mount -t tmpfs -o size=1m runnel-probe /mnt")
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIPPED: this machine cannot mount a tmpfs in a user namespace ({probe:?}); \
             run as root or enable unprivileged user namespaces to fill a real disk"
        );
        return;
    }
    let broker = SmallDiskBroker::start("8m");
    let mut client = Client::connect(&broker.addr(), "disk-full").await.unwrap();
    // Fill the disk: 256 KiB batches until the broker refuses one.
    let mut refused = None;
    for _ in 0..200 {
        let (code, _) = produce(&mut client, "fill", 0, batch(64, 4096, 0)).await;
        if code != 0 {
            refused = Some(code);
            break;
        }
    }
    assert_eq!(
        refused,
        Some(56),
        "KAFKA_STORAGE_ERROR once the disk is full"
    );
    for _ in 0..30 {
        assert_eq!(
            produce(&mut client, "fill", 0, batch(64, 4096, 0)).await.0,
            56
        );
    }

    let log = broker.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("disk full")).collect();
    assert!(
        (1..=2).contains(&lines.len()) && lines[0].contains("ERROR"),
        "31 refusals are logged once or twice, at ERROR:\n{}",
        lines.join("\n")
    );
    assert!(
        lines[0].contains("fill")
            && lines[0].contains("partition=0")
            && lines[0].contains(&broker.data_dir.display().to_string()),
        "the line names the partition and the data dir: {}",
        lines[0]
    );
    let text = broker.metrics().await;
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert!(value("runnel_broker_storage_errors_total") >= 31.0);
    assert_eq!(value("runnel_broker_disk_full"), 1.0);
    let last = value("runnel_broker_last_storage_error_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - 60.0..=now + 1.0).contains(&last), "{last} vs {now}");

    // Space freed (the topic deleted): the next write succeeds and the
    // gauge clears.
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::DeleteTopicsRequest;
    let mut delete = DeleteTopicsRequest::default();
    let mut t = DeleteTopicState::default();
    t.name = Some(name("fill"));
    delete.topics = vec![t];
    delete.timeout_ms = 5000;
    let response = client.send(&delete).await.unwrap();
    assert_eq!(response.responses[0].error_code, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    while produce(&mut client, "after", 0, batch(1, 100, 0)).await.0 != 0 {
        assert!(
            Instant::now() < deadline,
            "no write succeeded after freeing space"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = broker.metrics().await;
    assert!(
        text.contains("\nrunnel_broker_disk_full 0\n"),
        "the gauge clears:\n{text}"
    );
}
