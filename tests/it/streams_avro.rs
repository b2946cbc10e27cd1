//! `runnel-streams` Avro serdes against the schema registry of a real
//! `runnel serve`: topologies run in the `TopologyTestDriver` (no broker
//! needed for processing) while every schema is registered in, and looked
//! up from, the real registry. Output is checked byte by byte against the
//! Confluent wire format and the ids the registry's REST API reports.

use std::time::{Duration, Instant};

use runnel_streams::query::Query;
use runnel_streams::serdes::{
    self,
    avro::{AvroConfig, AvroRegistry, WriteSchema},
};
use runnel_streams::{
    Consumed, ErrorHandling, Produced, Stored, StreamsBuilder, TopologyTestDriver,
};
use serde_json::{json, Value};

use crate::harness::TestBroker;

const ORDER_V1: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
    {"name":"id","type":"string"},{"name":"qty","type":"int"},{"name":"price_cents","type":"long"}]}"#;
/// V1 and a field with a default: backward compatible.
const ORDER_V2: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
    {"name":"id","type":"string"},{"name":"qty","type":"int"},{"name":"price_cents","type":"long"},
    {"name":"currency","type":"string","default":"EUR"}]}"#;
const TOTAL: &str = r#"{"type":"record","name":"Total","namespace":"shop","fields":[
    {"name":"order","type":"string"},{"name":"cents","type":"long"},
    {"name":"currency","type":"string"}]}"#;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Order {
    id: String,
    qty: i32,
    price_cents: i64,
    currency: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Total {
    order: String,
    cents: i64,
    currency: String,
}

/// The registry's REST API, for what the test checks independently of
/// the serdes.
struct Rest {
    base: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Rest {
    /// Waits until the registry of `broker` answers (it starts after the
    /// broker).
    fn ready(broker: &TestBroker) -> Rest {
        let rest = Rest {
            base: broker.registry_url(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while rest.try_get("/subjects").is_none() {
            assert!(Instant::now() < deadline, "registry never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        rest
    }

    fn try_get(&self, path: &str) -> Option<Value> {
        let url = format!("{}{path}", self.base);
        self.runtime.block_on(async {
            let response = self.http.get(url).send().await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            serde_json::from_str(&response.text().await.ok()?).ok()
        })
    }

    fn get(&self, path: &str) -> Value {
        self.try_get(path)
            .unwrap_or_else(|| panic!("GET {path} failed"))
    }

    fn register(&self, subject: &str, schema: &str) -> i32 {
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let text = self.runtime.block_on(async {
            self.http
                .post(url)
                .header("content-type", "application/vnd.schemaregistry.v1+json")
                .body(json!({ "schema": schema }).to_string())
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        let answer: Value = serde_json::from_str(&text).unwrap();
        answer["id"].as_i64().expect("an id") as i32
    }

    /// The id of a subject's latest version.
    fn latest_id(&self, subject: &str) -> i32 {
        self.get(&format!("/subjects/{subject}/versions/latest"))["id"]
            .as_i64()
            .unwrap() as i32
    }
}

/// The schema id of a payload in the Confluent wire format.
fn framed_id(payload: &[u8]) -> i32 {
    assert_eq!(payload[0], 0, "magic byte");
    i32::from_be_bytes(payload[1..5].try_into().unwrap())
}

#[test]
fn generic_avro_orders_become_typed_avro_totals_framed_with_registered_ids() {
    let broker = TestBroker::start();
    let rest = Rest::ready(&broker);
    let registry = AvroRegistry::new(&broker.registry_url()).unwrap();
    let orders = serdes::avro::generic(
        &registry,
        AvroConfig::value_of("avro-orders").schema(ORDER_V1),
    )
    .unwrap();
    let totals =
        serdes::avro::typed::<Total>(&registry, AvroConfig::value_of("avro-totals").schema(TOTAL))
            .unwrap();

    let builder = StreamsBuilder::new();
    builder
        .stream(
            "avro-orders",
            Consumed::with(serdes::string(), orders.clone()),
        )
        .map_values(|o: Value| Total {
            order: o["id"].as_str().unwrap_or_default().to_string(),
            cents: o["qty"].as_i64().unwrap_or(0) * o["price_cents"].as_i64().unwrap_or(0),
            currency: "EUR".into(),
        })
        .to(
            "avro-totals",
            Produced::with(serdes::string(), totals.clone()),
        );
    // The totals again, as a table of generic values to query.
    let read_only = serdes::avro::generic(&registry, AvroConfig::value_of("avro-totals")).unwrap();
    builder.table(
        "avro-totals",
        Consumed::with(serdes::string(), read_only.clone()),
        Stored::as_("totals-by-order"),
    );
    let mut driver = TopologyTestDriver::new(builder.build().unwrap(), "avro-app");

    let key = serdes::string();
    for (id, qty, price) in [("o1", 2, 250), ("o2", 1, 1999)] {
        let order = json!({"id": id, "qty": qty, "price_cents": price});
        driver
            .pipe("avro-orders", &key, &orders, id.to_string(), order, 0)
            .unwrap();
    }

    // The input schema was registered under the topic's value subject.
    let order_id = rest.latest_id("avro-orders-value");
    let total_id = rest.latest_id("avro-totals-value");
    let stored: Value = serde_json::from_str(
        rest.get(&format!("/schemas/ids/{total_id}"))["schema"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored["name"], "Total");
    assert_ne!(order_id, total_id);

    let written = driver.read_raw("avro-totals");
    assert_eq!(written.len(), 2);
    for record in &written {
        let value = record.value.as_deref().unwrap();
        assert_eq!(framed_id(value), total_id);
    }
    let back: Vec<Total> = written
        .iter()
        .map(|r| totals.deserialize(r.value.as_deref()).unwrap())
        .collect();
    assert_eq!(
        back,
        vec![
            Total {
                order: "o1".into(),
                cents: 500,
                currency: "EUR".into()
            },
            Total {
                order: "o2".into(),
                cents: 1999,
                currency: "EUR".into()
            },
        ]
    );
    // A serde of another application reads the bytes by their id alone.
    let other = AvroRegistry::new(&broker.registry_url()).unwrap();
    let generic = serdes::avro::generic(&other, AvroConfig::subject("unused")).unwrap();
    assert_eq!(
        generic.deserialize(written[1].value.as_deref()).unwrap(),
        json!({"order": "o2", "cents": 1999, "currency": "EUR"})
    );

    // Interactive queries show the Avro values as JSON.
    let found = driver
        .query(&Query::Key {
            store: "totals-by-order".into(),
            key: b"o1".to_vec(),
            from_ms: 0,
            to_ms: 0,
        })
        .unwrap();
    assert_eq!(
        found[0]["value"],
        json!({"order": "o1", "cents": 500, "currency": "EUR"})
    );
}

#[test]
fn orders_written_with_an_older_schema_read_with_the_newer_one() {
    let broker = TestBroker::start();
    let rest = Rest::ready(&broker);
    let v1 = rest.register("avro-evolving-value", ORDER_V1);
    let v2 = rest.register("avro-evolving-value", ORDER_V2);
    assert_ne!(v1, v2);

    let registry = AvroRegistry::new(&broker.registry_url()).unwrap();
    // Producers of either version, writing only registered schemas.
    let old_writer = serdes::avro::generic(
        &registry,
        AvroConfig::value_of("avro-evolving")
            .schema(ORDER_V1)
            .write(WriteSchema::LookUp),
    )
    .unwrap();
    let new_writer = serdes::avro::typed::<Order>(
        &registry,
        AvroConfig::value_of("avro-evolving")
            .schema(ORDER_V2)
            .write(WriteSchema::LookUp),
    )
    .unwrap();
    // The application reads every order as the newer version.
    let reader = serdes::avro::typed::<Order>(
        &registry,
        AvroConfig::value_of("avro-evolving").schema(ORDER_V2),
    )
    .unwrap();
    let latest = serdes::avro::generic(
        &registry,
        AvroConfig::value_of("avro-currencies").write(WriteSchema::Latest),
    )
    .unwrap();
    let currency_v1 = rest.register(
        "avro-currencies-value",
        r#"{"type":"record","name":"Currency","fields":[{"name":"order","type":"string"},{"name":"currency","type":"string"}]}"#,
    );

    let builder = StreamsBuilder::new();
    builder
        .stream("avro-evolving", Consumed::with(serdes::string(), reader))
        .map_values(|o: Order| json!({"order": o.id, "currency": o.currency}))
        .to(
            "avro-currencies",
            Produced::with(serdes::string(), latest.clone()),
        );
    let mut driver = TopologyTestDriver::new(builder.build().unwrap(), "avro-evolution")
        .with_error_handling(ErrorHandling::Fail);

    let key = serdes::string();
    let old = json!({"id": "old", "qty": 1, "price_cents": 100});
    driver
        .pipe("avro-evolving", &key, &old_writer, "old".into(), old, 0)
        .unwrap();
    let new = Order {
        id: "new".into(),
        qty: 1,
        price_cents: 100,
        currency: "USD".into(),
    };
    driver
        .pipe("avro-evolving", &key, &new_writer, "new".into(), new, 0)
        .unwrap();

    let written = driver.read_raw("avro-currencies");
    let ids: Vec<i32> = written
        .iter()
        .map(|r| framed_id(r.value.as_deref().unwrap()))
        .collect();
    assert_eq!(ids, vec![currency_v1, currency_v1]);
    let values: Vec<Value> = written
        .iter()
        .map(|r| latest.deserialize(r.value.as_deref()).unwrap())
        .collect();
    assert_eq!(
        values,
        vec![
            json!({"order": "old", "currency": "EUR"}),
            json!({"order": "new", "currency": "USD"}),
        ]
    );
    assert_eq!(driver.metrics().records_failed, 0);
}

#[test]
fn payloads_with_an_unknown_schema_id_go_to_the_dead_letter_topic() {
    let broker = TestBroker::start();
    let _rest = Rest::ready(&broker);
    let registry = AvroRegistry::new(&broker.registry_url()).unwrap();
    let orders = serdes::avro::generic(
        &registry,
        AvroConfig::value_of("avro-dlq-orders").schema(ORDER_V1),
    )
    .unwrap();
    let builder = StreamsBuilder::new();
    builder
        .stream(
            "avro-dlq-orders",
            Consumed::with(serdes::string(), orders.clone()),
        )
        .to(
            "avro-dlq-copy",
            Produced::with(serdes::string(), orders.clone()),
        );
    let mut driver = TopologyTestDriver::new(builder.build().unwrap(), "avro-dlq")
        .with_error_handling(ErrorHandling::DeadLetter("avro-dlq-dead".into()));

    // No schema has this id; the bytes after it are never looked at.
    let unknown = [0, 0x7f, 0, 0, 1, 2, 3];
    driver
        .pipe_raw("avro-dlq-orders", Some(b"bad"), Some(&unknown), 0, &[])
        .unwrap();
    // Not the wire format at all.
    driver
        .pipe_raw(
            "avro-dlq-orders",
            Some(b"plain"),
            Some(b"{\"id\":1}"),
            0,
            &[],
        )
        .unwrap();
    let good = json!({"id": "o1", "qty": 1, "price_cents": 5});
    driver
        .pipe(
            "avro-dlq-orders",
            &serdes::string(),
            &orders,
            "good".into(),
            good.clone(),
            0,
        )
        .unwrap();

    assert_eq!(driver.metrics().records_failed, 2);
    let dead = driver.read_raw("avro-dlq-dead");
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].value.as_deref(), Some(&unknown[..]));
    let message = |i: usize| {
        let (_, v) = dead[i]
            .headers
            .iter()
            .find(|(k, _)| k == "runnel.error.message")
            .expect("an error message header");
        String::from_utf8(v.clone().unwrap()).unwrap()
    };
    let unknown_id = 0x7f00_0001;
    assert!(
        message(0).contains(&format!(
            "schema id {unknown_id} is unknown to the schema registry"
        )),
        "{}",
        message(0)
    );
    assert!(message(1).contains("magic byte"), "{}", message(1));
    let copied = driver.read_raw("avro-dlq-copy");
    assert_eq!(copied.len(), 1);
    assert_eq!(
        orders.deserialize(copied[0].value.as_deref()).unwrap(),
        good
    );
}
