//! The schema registry served by `runnel serve` (and by `runnel registry
//! serve` against the same broker): its REST API over the real `_schemas`
//! topic, restarts after SIGKILL, a second registry process, the topic's
//! record format, broker-side validation of produced records, and the
//! `runnel schema` CLI.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::harness::{create_topic, free_port, TestBroker, BIN};

const USER_V1: &str = r#"{"type":"record","name":"User","namespace":"example","fields":[{"name":"name","type":"string"}]}"#;
const USER_V2: &str = r#"{"type":"record","name":"User","namespace":"example","fields":[{"name":"name","type":"string"},{"name":"age","type":"int","default":0}]}"#;
const ORDER: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int"},{"name":"note","type":["null","string"],"default":null}]}"#;

/// A REST client for one registry.
struct Rest {
    base: String,
    http: reqwest::Client,
}

impl Rest {
    fn new(base: String) -> Rest {
        Rest {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .body(b.to_string());
        }
        let response = r.send().await.expect("registry request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> Value {
        let (status, v) = self.call("GET", path, None).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// Registers a schema; returns its id.
    async fn register(&self, subject: &str, schema: &str) -> i64 {
        let (status, v) = self
            .call(
                "POST",
                &format!("/subjects/{subject}/versions"),
                Some(json!({ "schema": schema })),
            )
            .await;
        assert_eq!(status, 200, "register under {subject}: {v}");
        v["id"].as_i64().unwrap()
    }

    /// Waits until the registry answers (it starts after the broker).
    async fn ready(base: String) -> Rest {
        let rest = Rest::new(base);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = rest.http.get(format!("{}/", rest.base)).send().await {
                if r.status().is_success() {
                    return rest;
                }
            }
            assert!(
                Instant::now() < deadline,
                "registry at {} never became ready",
                rest.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn registry(broker: &TestBroker) -> Rest {
    Rest::ready(broker.registry_url()).await
}

/// A `runnel registry serve` process against a broker. Killed on drop.
struct StandaloneRegistry {
    child: Child,
    port: u16,
}

impl StandaloneRegistry {
    fn start(broker: &TestBroker) -> StandaloneRegistry {
        let port = free_port();
        let child = Command::new(BIN)
            .args(["registry", "serve", "--bootstrap", &broker.addr()])
            .args(["--registry-addr", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start runnel registry serve");
        StandaloneRegistry { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for StandaloneRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything observable about a registry, for before/after comparisons.
async fn snapshot(rest: &Rest) -> Value {
    let mut out = serde_json::Map::new();
    for path in [
        "/subjects",
        "/subjects?deleted=true",
        "/schemas?deleted=true",
        "/config",
        "/mode",
    ] {
        out.insert(path.into(), rest.call("GET", path, None).await.1);
    }
    let subjects = rest.get("/subjects?deleted=true").await;
    for s in subjects.as_array().unwrap() {
        let s = s.as_str().unwrap();
        for path in [
            format!("/subjects/{s}/versions?deleted=true"),
            format!("/config/{s}"),
            format!("/mode/{s}"),
        ] {
            let r = rest.call("GET", &path, None).await;
            out.insert(path, json!([r.0, r.1]));
        }
    }
    for id in 1..=6 {
        let path = format!("/schemas/ids/{id}");
        let r = rest.call("GET", &path, None).await;
        out.insert(path, json!([r.0, r.1]));
    }
    Value::Object(out)
}

#[tokio::test]
async fn everything_registered_survives_a_sigkill_with_the_same_ids() {
    let mut broker = TestBroker::start();
    let rest = registry(&broker).await;
    assert_eq!(rest.register("users-value", USER_V1).await, 1);
    assert_eq!(rest.register("users-value", USER_V2).await, 2);
    assert_eq!(
        rest.register("copy-value", USER_V1).await,
        1,
        "same schema, same id"
    );
    assert_eq!(rest.register("orders-value", ORDER).await, 3);
    let doomed = r#"{"type":"enum","name":"Doomed","symbols":["A"]}"#;
    assert_eq!(rest.register("doomed-value", doomed).await, 4);
    rest.call(
        "PUT",
        "/config/orders-value",
        Some(json!({"compatibility": "FULL"})),
    )
    .await;
    rest.call("PUT", "/mode/copy-value", Some(json!({"mode": "READONLY"})))
        .await;
    // Soft-delete a version, soft- then hard-delete a subject.
    assert_eq!(
        rest.call("DELETE", "/subjects/users-value/versions/1", None)
            .await,
        (200, json!(1))
    );
    assert_eq!(
        rest.call("DELETE", "/subjects/doomed-value", None).await.0,
        200
    );
    assert_eq!(
        rest.call("DELETE", "/subjects/doomed-value?permanent=true", None)
            .await,
        (200, json!([1]))
    );
    let before = snapshot(&rest).await;
    assert_eq!(
        before["/subjects"],
        json!(["copy-value", "orders-value", "users-value"])
    );
    assert_eq!(before["/schemas/ids/4"][0], 404, "hard-deleted: {before}");
    assert_eq!(
        before["/subjects/users-value/versions?deleted=true"][1],
        json!([1, 2])
    );

    broker.kill();
    broker.restart();
    let rest = registry(&broker).await;
    let after = snapshot(&rest).await;
    assert_eq!(after, before);
    // Soft-deleted versions stay hidden, settings still apply.
    let (status, v) = rest
        .call("GET", "/subjects/users-value/versions/1", None)
        .await;
    assert_eq!((status, v["error_code"].clone()), (404, json!(40402)));
    let (status, v) = rest
        .call(
            "POST",
            "/subjects/copy-value/versions",
            Some(json!({"schema": USER_V2})),
        )
        .await;
    assert_eq!(
        (status, v["error_code"].clone()),
        (422, json!(42205)),
        "read-only"
    );
    // The hard-deleted id 4 is not given out again.
    let fresh = r#"{"type":"fixed","name":"Fresh","size":4}"#;
    assert_eq!(rest.register("fresh-value", fresh).await, 5);
    // A permanently deleted subject starts over at version 1.
    assert_eq!(rest.register("doomed-value", doomed).await, 6);
    assert_eq!(
        rest.get("/subjects/doomed-value/versions").await,
        json!([1])
    );
}

#[tokio::test]
async fn a_second_registry_process_sees_and_extends_the_same_registry() {
    let broker = TestBroker::start();
    let a = registry(&broker).await;
    let standalone = StandaloneRegistry::start(&broker);
    let b = Rest::ready(standalone.url()).await;
    assert_eq!(a.register("users-value", USER_V1).await, 1);
    // B follows the topic: the schema appears without any request to A.
    let deadline = Instant::now() + Duration::from_secs(10);
    while b
        .call("GET", "/subjects/users-value/versions/1", None)
        .await
        .0
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "the second registry never saw the schema"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.get("/schemas/ids/1").await, a.get("/schemas/ids/1").await);
    // A write through B plans against everything in the topic.
    assert_eq!(b.register("users-value", USER_V2).await, 2);
    assert_eq!(a.get("/subjects/users-value/versions").await, json!([1, 2]));
    // Both write at once: every schema gets one id, both agree on all.
    let schemas: Vec<String> = (0..16)
        .map(|i| {
            format!(r#"{{"type":"record","name":"R{i}","fields":[{{"name":"f","type":"int"}}]}}"#)
        })
        .collect();
    let writes = schemas.iter().enumerate().map(|(i, s)| {
        let (rest, subject) = if i % 2 == 0 {
            (&a, "shared")
        } else {
            (&b, "shared")
        };
        let subject = format!("{subject}-{}", i % 4);
        async move {
            // Separate subjects under NONE, so the racing versions are all legal.
            rest.call(
                "PUT",
                &format!("/config/{subject}"),
                Some(json!({"compatibility": "NONE"})),
            )
            .await;
            rest.register(&subject, s).await
        }
    });
    let ids = futures::future::join_all(writes).await;
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), schemas.len(), "ids given twice: {ids:?}");
    // Let B catch up with A's last writes, then compare everything.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (sa, sb) = (a.get("/schemas").await, b.get("/schemas").await);
        if sa == sb && sa.as_array().unwrap().len() == 2 + schemas.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "registries disagree:\n{sa}\n{sb}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (s, id) in schemas.iter().zip(&ids) {
        let v = a.get(&format!("/schemas/ids/{id}")).await;
        let stored: Value = serde_json::from_str(v["schema"].as_str().unwrap()).unwrap();
        assert_eq!(stored, serde_json::from_str::<Value>(s).unwrap());
    }
}

#[tokio::test]
async fn the_schemas_topic_holds_confluent_shaped_records() {
    let broker = TestBroker::start();
    let rest = registry(&broker).await;
    rest.register("users-value", USER_V1).await;
    rest.call(
        "PUT",
        "/config/users-value",
        Some(json!({"compatibility": "FULL"})),
    )
    .await;
    let records = broker.consume("_schemas", 1, 2, Duration::from_secs(10));
    let texts: Vec<(String, String)> = records
        .iter()
        .map(|m| {
            (
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    assert_eq!(
        texts[0].0,
        r#"{"keytype":"SCHEMA","subject":"users-value","version":1,"magic":1}"#
    );
    let value: Value = serde_json::from_str(&texts[0].1).unwrap();
    assert_eq!(value["subject"], "users-value");
    assert_eq!(
        (value["version"].as_i64(), value["id"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(value["deleted"], false);
    assert_eq!(
        texts[1],
        (
            r#"{"keytype":"CONFIG","subject":"users-value","magic":0}"#.to_string(),
            r#"{"compatibilityLevel":"FULL"}"#.to_string()
        )
    );
    // The topic is compacted and single-partition, as the registry needs.
    let out = Command::new(BIN)
        .args([
            "topic",
            "describe",
            "_schemas",
            "--bootstrap",
            &broker.addr(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cleanup.policy") && text.contains("compact"),
        "{text}"
    );
}

fn avro(schema: &str, value: Avro) -> Vec<u8> {
    let schema = Schema::parse_str(schema).unwrap();
    apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()
        .unwrap()
        .write_value_to_vec(value)
        .unwrap()
}

fn framed(id: i64, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(id as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn order(id: &str, qty: i32) -> Avro {
    Avro::Record(vec![
        ("id".into(), Avro::String(id.into())),
        ("qty".into(), Avro::Int(qty)),
        ("note".into(), Avro::Union(0, Box::new(Avro::Null))),
    ])
}

/// Produces one record and waits for its own result.
async fn send(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<i64, KafkaError> {
    let mut record = FutureRecord::<[u8], [u8]>::to(topic);
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(v) = value {
        record = record.payload(v);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map(|d| d.offset)
        .map_err(|(e, _)| e)
}

fn is_invalid_record(r: &Result<i64, KafkaError>) -> bool {
    matches!(
        r,
        Err(KafkaError::MessageProduction(
            RDKafkaErrorCode::InvalidRecord
        ))
    )
}

#[tokio::test]
async fn validated_topics_accept_registered_avro_and_reject_everything_else() {
    let broker = TestBroker::start();
    let rest = registry(&broker).await;
    create_topic(
        &broker,
        "orders",
        1,
        &[("confluent.value.schema.validation", "true")],
    )
    .await;
    create_topic(&broker, "plain", 1, &[]).await;
    let id = rest.register("orders-value", ORDER).await;
    let other = rest.register("users-value", USER_V1).await;
    let producer = broker.producer(&[("linger.ms", "0"), ("retries", "0")]);
    let good = framed(id, &avro(ORDER, order("o-1", 2)));

    assert_eq!(
        send(&producer, "orders", None, Some(&good)).await.unwrap(),
        0
    );
    let mut wrong_magic = good.clone();
    wrong_magic[0] = 1;
    let unknown_id = framed(9999, &avro(ORDER, order("o-2", 2)));
    let truncated = good[..good.len() - 1].to_vec();
    let mut bad_union = good.clone();
    *bad_union.last_mut().unwrap() = 8; // union index 4 of 2 branches
    let wrong_subject = framed(
        other,
        &avro(
            USER_V1,
            Avro::Record(vec![("name".into(), Avro::String("x".into()))]),
        ),
    );
    for (what, payload) in [
        ("wrong magic byte", &wrong_magic),
        ("unknown schema id", &unknown_id),
        ("truncated body", &truncated),
        ("undecodable union index", &bad_union),
        ("schema of another subject", &wrong_subject),
        ("plain text", &b"hello".to_vec()),
    ] {
        let r = send(&producer, "orders", None, Some(payload)).await;
        assert!(is_invalid_record(&r), "{what}: {r:?}");
    }
    // A tombstone carries no schema and is accepted; so is the next good record.
    assert_eq!(
        send(&producer, "orders", Some(b"k"), None).await.unwrap(),
        1
    );
    assert_eq!(
        send(&producer, "orders", None, Some(&good)).await.unwrap(),
        2
    );
    // Topics without validation take anything.
    assert!(send(&producer, "plain", None, Some(b"hello")).await.is_ok());
    // A schema registered a moment ago is known to the next produce.
    let v2 = ORDER.replace(
        r#"{"name":"note""#,
        r#"{"name":"tag","type":"string","default":""},{"name":"note""#,
    );
    let id2 = rest.register("orders-value", &v2).await;
    let body = avro(
        &v2,
        Avro::Record(vec![
            ("id".into(), Avro::String("o-3".into())),
            ("qty".into(), Avro::Int(1)),
            ("tag".into(), Avro::String("t".into())),
            (
                "note".into(),
                Avro::Union(1, Box::new(Avro::String("n".into()))),
            ),
        ]),
    );
    assert_eq!(
        send(&producer, "orders", None, Some(&framed(id2, &body)))
            .await
            .unwrap(),
        3
    );
    let stored = broker.consume("orders", 1, 4, Duration::from_secs(10));
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[0].payload().unwrap(), &good[..]);
}

fn batch(values: &[&[u8]], compression: Compression) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32 - 1,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::copy_from_slice(v)),
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

#[tokio::test]
async fn a_rejected_partition_says_which_record_and_why_and_other_partitions_are_stored() {
    let broker = TestBroker::start();
    let rest = registry(&broker).await;
    create_topic(
        &broker,
        "orders",
        2,
        &[("confluent.value.schema.validation", "true")],
    )
    .await;
    let id = rest.register("orders-value", ORDER).await;
    let good = framed(id, &avro(ORDER, order("o-1", 1)));
    let bad = framed(4242, &avro(ORDER, order("o-2", 1)));
    // Partition 0 gets a zstd batch whose third record is bad; partition
    // 1 a good one, in the same request.
    let mut p0 = PartitionProduceData::default();
    p0.index = 0;
    p0.records = Some(batch(&[&good, &good, &bad], Compression::Zstd));
    let mut p1 = PartitionProduceData::default();
    p1.index = 1;
    p1.records = Some(batch(&[&good, &good], Compression::None));
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_static_str("orders"));
    t.partition_data = vec![p0, p1];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 10_000;
    request.topic_data = vec![t];
    let mut client = broker.client().await;
    let response = client.send_version(&request, 9).await.unwrap();
    let parts = &response.responses[0].partition_responses;
    let p0 = parts.iter().find(|p| p.index == 0).unwrap();
    let p1 = parts.iter().find(|p| p.index == 1).unwrap();
    assert_eq!(p0.error_code, 87, "INVALID_RECORD");
    let message = p0.error_message.as_ref().unwrap().to_string();
    assert!(
        message.contains("record 2") && message.contains("schema id 4242 is unknown"),
        "{message}"
    );
    assert_eq!(p0.record_errors.len(), 1);
    assert_eq!(p0.record_errors[0].batch_index, 2);
    assert_eq!((p1.error_code, p1.base_offset), (0, 0));
    assert_eq!(
        crate::harness::latest_offset(&broker, "orders", 0).await,
        0,
        "nothing of partition 0 stored"
    );
    assert_eq!(crate::harness::latest_offset(&broker, "orders", 1).await, 2);
}

/// Sends one partition's record set to `topic` with Produce v9; returns
/// (error code, message, record error indexes).
async fn raw_produce(broker: &TestBroker, topic: &str, records: Bytes) -> (i16, String, Vec<i32>) {
    let mut p = PartitionProduceData::default();
    p.index = 0;
    p.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_data = vec![p];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 10_000;
    request.topic_data = vec![t];
    let mut client = broker.client().await;
    let response = client.send_version(&request, 9).await.unwrap();
    let p = &response.responses[0].partition_responses[0];
    (
        p.error_code,
        p.error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
        p.record_errors.iter().map(|e| e.batch_index).collect(),
    )
}

/// Rewrites a batch's record count and last offset delta, with a valid CRC.
fn with_record_count(batch: &Bytes, count: i32) -> Bytes {
    let mut b = batch.to_vec();
    b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    b[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

#[tokio::test]
async fn records_hidden_past_a_batchs_record_count_or_in_a_control_batch_are_refused() {
    let broker = TestBroker::start();
    let rest = registry(&broker).await;
    create_topic(
        &broker,
        "orders",
        1,
        &[("confluent.value.schema.validation", "true")],
    )
    .await;
    let id = rest.register("orders-value", ORDER).await;
    let good = framed(id, &avro(ORDER, order("o-1", 1)));
    // Two records, of which the header admits one: consumers that read
    // to the end of the batch would see the unchecked second one.
    let smuggled = with_record_count(&batch(&[&good, b"junk"], Compression::None), 1);
    let (code, message, _) = raw_produce(&broker, "orders", smuggled).await;
    assert_eq!(code, 87, "{message}");
    assert!(
        message.contains("follow the batch's declared records"),
        "{message}"
    );
    // A control batch from a client.
    let mut control = batch(&[&good], Compression::None).to_vec();
    let attributes = i16::from_be_bytes([control[21], control[22]]) | 0x20;
    control[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&control[21..]);
    control[17..21].copy_from_slice(&crc.to_be_bytes());
    let (code, message, _) = raw_produce(&broker, "orders", Bytes::from(control)).await;
    assert_eq!(code, 87, "{message}");
    assert!(message.contains("control batch"), "{message}");
    // The honest batch is stored.
    let (code, message, _) =
        raw_produce(&broker, "orders", batch(&[&good], Compression::None)).await;
    assert_eq!(code, 0, "{message}");
    assert_eq!(crate::harness::latest_offset(&broker, "orders", 0).await, 1);
}

#[tokio::test]
async fn an_unreadable_batch_for_the_schemas_topic_is_refused_and_the_registry_goes_on() {
    let broker = TestBroker::start();
    let rest = registry(&broker).await;
    // Anyone can produce to _schemas: a batch that claims zstd but is not.
    // The append walks every batch's records, so it never reaches the log.
    let mut bogus = batch(&[b"{\"keytype\":\"NOOP\",\"magic\":0}"], Compression::None).to_vec();
    let attributes = i16::from_be_bytes([bogus[21], bogus[22]]) | 4;
    bogus[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&bogus[21..]);
    bogus[17..21].copy_from_slice(&crc.to_be_bytes());
    let (code, message, _) = raw_produce(&broker, "_schemas", Bytes::from(bogus)).await;
    assert_eq!(code, 87, "{message}");
    assert!(message.contains("cannot decompress"), "{message}");
    // The registry and the broker's validation go on.
    create_topic(
        &broker,
        "orders",
        1,
        &[("confluent.value.schema.validation", "true")],
    )
    .await;
    let id = rest.register("orders-value", ORDER).await;
    let producer = broker.producer(&[("linger.ms", "0"), ("retries", "0")]);
    let good = framed(id, &avro(ORDER, order("o-1", 1)));
    assert!(send(&producer, "orders", None, Some(&good)).await.is_ok());
}

#[tokio::test]
async fn key_validation_and_record_name_subjects_follow_the_topic_configs() {
    let broker = TestBroker::start();
    let rest = registry(&broker).await;
    create_topic(
        &broker,
        "keyed",
        1,
        &[
            ("confluent.key.schema.validation", "true"),
            (
                "confluent.key.subject.name.strategy",
                "io.confluent.kafka.serializers.subject.RecordNameStrategy",
            ),
        ],
    )
    .await;
    // RecordNameStrategy: the subject is the record's full name.
    let id = rest.register("example.User", USER_V1).await;
    let key = framed(
        id,
        &avro(
            USER_V1,
            Avro::Record(vec![("name".into(), Avro::String("ann".into()))]),
        ),
    );
    let producer = broker.producer(&[("linger.ms", "0"), ("retries", "0")]);
    assert!(send(&producer, "keyed", Some(&key), Some(b"any value"))
        .await
        .is_ok());
    assert!(is_invalid_record(
        &send(&producer, "keyed", Some(b"plain key"), Some(b"v")).await
    ));
    // Registered only under <topic>-key: not what RecordNameStrategy asks for.
    let id2 = rest.register("keyed-key", USER_V2).await;
    let key2 = framed(
        id2,
        &avro(
            USER_V2,
            Avro::Record(vec![
                ("name".into(), Avro::String("bo".into())),
                ("age".into(), Avro::Int(3)),
            ]),
        ),
    );
    assert!(is_invalid_record(
        &send(&producer, "keyed", Some(&key2), Some(b"v")).await
    ));
    // Switch to TopicNameStrategy: now keyed-key is the subject.
    set_topic_config(
        &broker,
        "keyed",
        "confluent.key.subject.name.strategy=TopicNameStrategy",
    );
    assert!(send(&producer, "keyed", Some(&key2), Some(b"v"))
        .await
        .is_ok());
    // Turning validation off accepts anything again.
    set_topic_config(&broker, "keyed", "confluent.key.schema.validation=false");
    assert!(send(&producer, "keyed", Some(b"plain key"), Some(b"v"))
        .await
        .is_ok());
    // Soft-deleting the subject makes its ids unusable for validation.
    set_topic_config(&broker, "keyed", "confluent.key.schema.validation=true");
    rest.call("DELETE", "/subjects/keyed-key", None).await;
    assert!(is_invalid_record(
        &send(&producer, "keyed", Some(&key2), Some(b"v")).await
    ));
}

fn cli(broker: &TestBroker, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let out = broker.cli(args, stdin);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `runnel topic alter-config TOPIC --set KEY=VALUE`, which must succeed.
fn set_topic_config(broker: &TestBroker, topic: &str, setting: &str) {
    let (ok, _, err) = cli(
        broker,
        &["topic", "alter-config", topic, "--set", setting],
        None,
    );
    assert!(ok, "alter-config {setting}: {err}");
}

#[tokio::test]
async fn the_schema_cli_registers_gets_lists_checks_and_deletes() {
    let broker = TestBroker::start();
    registry(&broker).await;
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1.avsc");
    std::fs::write(&v1, USER_V1).unwrap();
    let v1 = v1.to_str().unwrap();
    let (ok, out, err) = cli(&broker, &["schema", "register", "users-value", v1], None);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "registered users-value version 1 with schema id 1"
    );
    let (ok, out, _) = cli(
        &broker,
        &["schema", "register", "users-value", "-"],
        Some(USER_V2),
    );
    assert!(ok);
    assert_eq!(
        out.trim(),
        "registered users-value version 2 with schema id 2"
    );
    let (_, out, _) = cli(&broker, &["schema", "list"], None);
    assert_eq!(out, "users-value\n");
    let (_, out, _) = cli(&broker, &["schema", "list", "users-value"], None);
    assert_eq!(out, "1\n2\n");
    let (ok, out, _) = cli(&broker, &["schema", "get", "users-value"], None);
    assert!(ok);
    assert!(
        out.starts_with("subject users-value version 2 id 2\n"),
        "{out}"
    );
    assert!(out.contains("\"age\""), "{out}");
    let (_, out, _) = cli(&broker, &["schema", "get", "--id", "1"], None);
    let printed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(printed, serde_json::from_str::<Value>(USER_V1).unwrap());
    // check: compatible, then incompatible with the reason and exit 1.
    let (ok, out, _) = cli(
        &broker,
        &["schema", "check", "users-value", "-"],
        Some(USER_V1),
    );
    assert!(ok, "{out}");
    let bad = USER_V1.replace("\"string\"", "\"int\"");
    let (ok, out, err) = cli(
        &broker,
        &["schema", "check", "users-value", "-"],
        Some(&bad),
    );
    assert!(!ok);
    assert!(
        out.contains("INCOMPATIBLE") && out.contains("TYPE_MISMATCH"),
        "{out}"
    );
    assert!(err.contains("not compatible"), "{err}");
    // Registering it fails with the registry's 409 message.
    let (ok, _, err) = cli(
        &broker,
        &["schema", "register", "users-value", "-"],
        Some(&bad),
    );
    assert!(!ok);
    assert!(err.contains("409") && err.contains("incompatible"), "{err}");
    // A broken file is reported with its position.
    let (ok, _, err) = cli(
        &broker,
        &["schema", "register", "users-value", "-"],
        Some("{\"type\":"),
    );
    assert!(!ok);
    assert!(err.contains("line 1"), "{err}");
    // config, delete.
    let (ok, out, _) = cli(
        &broker,
        &["schema", "config", "users-value", "--set", "full"],
        None,
    );
    assert!(ok, "{out}");
    let (_, out, _) = cli(&broker, &["schema", "config", "users-value"], None);
    assert_eq!(out.trim(), "FULL");
    let (ok, out, _) = cli(
        &broker,
        &["schema", "delete", "users-value", "--version", "1"],
        None,
    );
    assert!(ok);
    assert_eq!(out.trim(), "soft-deleted users-value version(s) 1");
    let (_, out, _) = cli(&broker, &["schema", "list", "users-value"], None);
    assert_eq!(out, "2\n");
    // No registry there: a readable error.
    let out = Command::new(BIN)
        .args(["schema", "list", "--registry", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the schema registry"));
}

#[tokio::test]
async fn the_schemas_topic_can_be_read_back_by_a_plain_consumer_after_restart() {
    // The broker's own view (for validation) is rebuilt from the topic
    // after a restart too: a produce right after the restart validates.
    let mut broker = TestBroker::start();
    let rest = registry(&broker).await;
    create_topic(
        &broker,
        "orders",
        1,
        &[("confluent.value.schema.validation", "true")],
    )
    .await;
    let id = rest.register("orders-value", ORDER).await;
    broker.kill();
    broker.restart();
    let producer = broker.producer(&[("linger.ms", "0"), ("retries", "0")]);
    let good = framed(id, &avro(ORDER, order("o-9", 9)));
    assert!(send(&producer, "orders", None, Some(&good)).await.is_ok());
    assert!(is_invalid_record(
        &send(&producer, "orders", None, Some(b"junk")).await
    ));
    let consumer = broker.consumer();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("_schemas", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut keys = Vec::new();
    while keys.is_empty() && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            keys.push(String::from_utf8_lossy(m.key().unwrap()).into_owned());
        }
    }
    assert_eq!(
        keys[0],
        r#"{"keytype":"SCHEMA","subject":"orders-value","version":1,"magic":1}"#
    );
}

#[tokio::test]
async fn the_registry_serves_its_metrics_and_health_and_the_broker_its_own() {
    let broker = TestBroker::start();
    let rest = registry(&broker).await;
    rest.register("users-value", USER_V1).await;
    create_topic(
        &broker,
        "orders",
        1,
        &[("confluent.value.schema.validation", "true")],
    )
    .await;
    let producer = broker.producer(&[("linger.ms", "0"), ("retries", "0")]);
    assert!(is_invalid_record(
        &send(&producer, "orders", None, Some(b"junk")).await
    ));
    let (status, v) = rest.call("GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let text = v.as_str().unwrap();
    for line in [
        "runnel_registry_registrations_total 1",
        "runnel_registry_schemas 1",
    ] {
        assert!(text.contains(line), "no '{line}' in:\n{text}");
    }
    // The broker's own counters are on its admin listener, not here.
    assert!(!text.contains("runnel_broker_"), "{text}");
    let page = broker.metrics().await;
    assert!(
        page.contains("runnel_broker_schema_rejections_total 1"),
        "{page}"
    );
    let (status, v) = rest.call("GET", "/health", None).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("UP")));
}

#[tokio::test]
async fn avro_that_avro_java_refuses_is_refused_with_42201_and_what_it_accepts_registers() {
    let broker = TestBroker::start();
    let rest = registry(&broker).await;
    let refused = [
        // A union's default must match its first branch.
        (
            r#"{"type":"record","name":"R","fields":[{"name":"note","type":["null","string"],"default":"none"}]}"#,
            "Invalid default for field note",
        ),
        // A fixed default has exactly `size` bytes.
        (
            r#"{"type":"record","name":"R","fields":[{"name":"id","type":{"type":"fixed","name":"Id","size":4},"default":"abc"}]}"#,
            "not a fixed Id (size 4)",
        ),
        // Aliases are an array.
        (
            r#"{"type":"record","name":"R","aliases":"Old","fields":[{"name":"a","type":"int"}]}"#,
            "aliases must be an array",
        ),
        // And the rest of Avro Java's default rules.
        (
            r#"{"type":"record","name":"R","fields":[{"name":"xs","type":{"type":"array","items":["null","int"]},"default":[1]}]}"#,
            "Invalid default for field xs",
        ),
        (
            r#"{"type":"record","name":"R","fields":[{"name":"b","type":"bytes","default":"\u20ac"}]}"#,
            "above \\u00FF",
        ),
        (
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":"float","default":1e39}]}"#,
            "out of range",
        ),
    ];
    for (schema, want) in refused {
        for path in [
            "/subjects/r-value/versions",
            "/compatibility/subjects/r-value/versions",
        ] {
            let (status, v) = rest
                .call("POST", path, Some(json!({ "schema": schema })))
                .await;
            assert_eq!(
                (status, v["error_code"].as_i64()),
                (422, Some(42201)),
                "{path} {schema}: {v}"
            );
            let message = v["message"].as_str().unwrap();
            assert!(message.contains(want), "{schema}: {message}");
        }
    }
    assert_eq!(rest.get("/subjects").await, json!([]));
    let accepted = [
        r#"{"type":"record","name":"R","fields":[{"name":"note","type":["null","string"],"default":null}]}"#,
        r#"{"type":"record","name":"R","fields":[{"name":"note","type":["null","string"],"default":null},{"name":"x","type":"double","default":1.5}]}"#,
        r#"{"type":"record","name":"R","fields":[{"name":"note","type":["null","string"],"default":null},{"name":"x","type":"double","default":1.5},{"name":"b","type":"bytes","default":"\u00ff\u0000"}]}"#,
    ];
    for (i, schema) in accepted.iter().enumerate() {
        assert_eq!(rest.register("r-value", schema).await, i as i64 + 1);
    }
}

#[test]
fn the_registry_can_be_turned_off_and_a_taken_port_fails_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(tmp.path().join("a"))
        .args(["--kafka-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--registry-addr", &taken_addr, "--connect-addr", "off"])
        .args(["--admin-addr", "off"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot listen on {taken_addr} for the schema registry"
        )),
        "{err}"
    );
    // With the registry off the broker runs alone: no _schemas topic.
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(tmp.path().join("b"))
        .args(["--kafka-addr", &format!("127.0.0.1:{port}")])
        .args(["--registry-addr", "off", "--connect-addr", "off"])
        .args(["--admin-addr", "off"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new(BIN)
        .args([
            "topic",
            "list",
            "--internal",
            "--bootstrap",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let topics = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && topics.contains("__consumer_offsets"),
        "{topics}"
    );
    assert!(!topics.contains("_schemas"), "{topics}");
}

/// In a cluster with more brokers than `_schemas` has replicas, a broker
/// holding none of it still validates what is produced to the partitions
/// it leads: it follows the topic's leader, and a schema registered later
/// reaches it within a fetch round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_with_no_replica_of_the_schemas_topic_validates_by_following_its_leader() {
    let mut cluster = crate::harness::TestCluster::start(3);
    // The cluster's nodes run no registry: one of its own, as `runnel
    // registry serve` (or Confluent's) would be deployed.
    let standalone = StandaloneRegistry::start(&cluster.nodes[0]);
    let rest = Rest::ready(standalone.url()).await;
    let id = rest.register("orders-value", ORDER).await;
    cluster.add_broker_only(&[]);
    let node = |response: &kafka_protocol::messages::MetadataResponse, topic: &str| {
        response
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some(topic))
            .map(|t| {
                t.partitions
                    .iter()
                    .map(|p| {
                        (
                            p.partition_index,
                            p.leader_id.0,
                            p.replica_nodes.iter().map(|r| r.0).collect::<Vec<_>>(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
    };
    let response = crate::cluster::metadata(&cluster.nodes[3]).await;
    let schemas = node(&response, "_schemas").expect("_schemas exists");
    assert!(
        schemas
            .iter()
            .all(|(_, _, replicas)| !replicas.contains(&4)),
        "node 4 holds no replica of _schemas: {schemas:?}"
    );
    crate::harness::create_replicated_topic(
        &cluster.nodes[0],
        "orders",
        4,
        1,
        &[("confluent.value.schema.validation", "true")],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let partition = loop {
        let response = crate::cluster::metadata(&cluster.nodes[3]).await;
        if let Some(p) = node(&response, "orders")
            .and_then(|ps| ps.into_iter().find(|(_, leader, _)| *leader == 4))
        {
            break p.0;
        }
        assert!(
            Instant::now() < deadline,
            "no partition of orders on node 4"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.nodes[3].addr())
        .set("linger.ms", "0")
        .set("retries", "0")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    let send_to_4 = |value: Vec<u8>| {
        let producer = &producer;
        async move {
            producer
                .send(
                    FutureRecord::<[u8], [u8]>::to("orders")
                        .partition(partition)
                        .payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .map(|d| d.offset)
                .map_err(|(e, _)| e)
        }
    };
    let good = framed(id, &avro(ORDER, order("o-1", 2)));
    assert_eq!(
        send_to_4(good.clone()).await.unwrap(),
        0,
        "the copy of _schemas is filled as the broker starts"
    );
    let unknown = send_to_4(framed(9999, &avro(ORDER, order("o-2", 2)))).await;
    assert!(is_invalid_record(&unknown), "{unknown:?}");
    let garbage = send_to_4(b"not avro".to_vec()).await;
    assert!(is_invalid_record(&garbage), "{garbage:?}");

    // A schema registered now, through another node's registry.
    let other = rest.register("users-value", USER_V1).await;
    let v2 = ORDER.replace(
        r#"{"name":"note""#,
        r#"{"name":"tag","type":"string","default":""},{"name":"note""#,
    );
    let id2 = rest.register("orders-value", &v2).await;
    let body = avro(
        &v2,
        Avro::Record(vec![
            ("id".into(), Avro::String("o-3".into())),
            ("qty".into(), Avro::Int(1)),
            ("tag".into(), Avro::String("t".into())),
            ("note".into(), Avro::Union(0, Box::new(Avro::Null))),
        ]),
    );
    let started = Instant::now();
    let mut accepted = send_to_4(framed(id2, &body)).await;
    while accepted.is_err() && started.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        accepted = send_to_4(framed(id2, &body)).await;
    }
    assert!(accepted.is_ok(), "a new schema on node 4: {accepted:?}");
    eprintln!(
        "a new schema was accepted on node 4 after {:?}",
        started.elapsed()
    );
    // Registered, but under another subject: refused.
    let wrong = send_to_4(framed(
        other,
        &avro(
            USER_V1,
            Avro::Record(vec![("name".into(), Avro::String("x".into()))]),
        ),
    ))
    .await;
    assert!(is_invalid_record(&wrong), "{wrong:?}");
}
