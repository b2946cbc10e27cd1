//! The PostgreSQL connectors against a real PostgreSQL server (a fresh
//! cluster per test, `harness::TestPostgres`) and the real `runnel`
//! binary (a broker, and a `runnel connect` worker beside it), connectors
//! created through the connect REST API: upserts that leave the
//! same rows when records come again, record failures that go to the
//! dead-letter topic, quoted names, a source that resumes without
//! repeating rows after its worker is SIGKILLed, and the tracking modes on
//! rows that share a timestamp (driven directly through the task API).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::message::Headers;
use rdkafka::producer::FutureRecord;
use rdkafka::Message;
use runnel_connect::plugin::{ConnectorPlugin, OffsetReader, SourceTask};
use runnel_connect::record::{Data, SourcePartition, SourceRecord};
use serde_json::{json, Value};

use crate::harness::{TestBroker, TestPostgres, TestWorker};

/// A broker, and a `runnel connect` worker in a process of its own (so a
/// worker thread that blocks cannot stall the broker).
fn broker_and_worker() -> (TestBroker, TestWorker) {
    let broker = TestBroker::start();
    let worker = TestWorker::start(&broker);
    (broker, worker)
}

/// The worker's REST API: create a connector, read its status and offsets.
struct Connect {
    base: String,
    http: reqwest::Client,
}

impl Connect {
    async fn of(worker: &TestWorker) -> Connect {
        let c = Connect {
            base: worker.url(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.http.get(&c.base).send().await.is_err() {
            assert!(Instant::now() < deadline, "{} never answered", c.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c
    }

    async fn get(&self, path: &str) -> Value {
        let r = self.http.get(format!("{}{path}", self.base)).send().await;
        let text = r.expect("GET").text().await.unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }

    async fn create(&self, name: &str, config: Value) {
        let body = json!({"name": name, "config": config});
        let r = self
            .http
            .post(format!("{}/connectors", self.base))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST /connectors");
        let status = r.status().as_u16();
        assert_eq!(status, 201, "create {name}: {}", r.text().await.unwrap());
    }

    /// Waits until the first task of `name` is in `state`; its status.
    async fn wait_task(&self, name: &str, state: &str) -> Value {
        // A restarted worker's tasks wait for the killed one's session to
        // time out.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.get(&format!("/connectors/{name}/status")).await;
            if v["tasks"][0]["state"] == state {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never got to {state}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Polls `sql` (one bigint) until it is `want`.
pub(crate) async fn wait_count(db: &tokio_postgres::Client, sql: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let got: i64 = match db.query_one(sql, &[]).await {
            Ok(row) => row.get(0),
            Err(_) => -1,
        };
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{sql}: {got}, not {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Produces (key, value) records and waits for each to be stored.
pub(crate) async fn produce(
    broker: &TestBroker,
    topic: &str,
    records: &[(Option<String>, String)],
) {
    let producer = broker.producer(&[]);
    for (key, value) in records {
        let mut r = FutureRecord::<str, str>::to(topic).payload(value);
        if let Some(k) = key {
            r = r.key(k);
        }
        producer.send(r, Duration::from_secs(10)).await.unwrap();
    }
}

fn orders(note: &str, n_offset: i64) -> Vec<(Option<String>, String)> {
    (0..200)
        .map(|i| {
            let v = json!({"n": i + n_offset, "price": i as f64 * 1.5, "ok": i % 2 == 0,
                           "tags": ["a", "b"], "meta": {"i": i}, "note": note});
            (Some(format!("k{i}")), v.to_string())
        })
        .collect()
}

#[tokio::test]
async fn the_sink_upserts_by_key_so_records_written_again_leave_the_same_rows() {
    let pg = TestPostgres::start();
    let db = pg.client().await;
    let (broker, worker) = broker_and_worker();
    let connect = Connect::of(&worker).await;
    produce(&broker, "orders", &orders("first", 0)).await;
    // Confluent's class name and a JDBC URL.
    connect
        .create(
            "orders-pg",
            json!({"connector.class": "io.confluent.connect.jdbc.JdbcSinkConnector",
                   "connection.url": format!("jdbc:postgresql://127.0.0.1:{}/postgres?user=postgres", pg.port),
                   "topics": "orders", "table.name.format": "kafka_${topic}",
                   "insert.mode": "upsert", "pk.mode": "record_key", "pk.fields": "order_id",
                   "auto.create": "true",
                   "value.converter": "json", "value.converter.schemas.enable": "false"}),
        )
        .await;
    wait_count(&db, "SELECT count(*) FROM kafka_orders", 200).await;
    let types: Vec<(String, String)> = db
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_name = 'kafka_orders' ORDER BY column_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let want: Vec<(String, String)> = [
        ("meta", "jsonb"),
        ("n", "bigint"),
        ("note", "text"),
        ("ok", "boolean"),
        ("order_id", "text"),
        ("price", "double precision"),
        ("tags", "jsonb"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(types, want);
    // The same keys again with new values: the rows change, none is added.
    produce(&broker, "orders", &orders("second", 1000)).await;
    wait_count(
        &db,
        "SELECT count(*) FROM kafka_orders WHERE note = 'second'",
        200,
    )
    .await;
    // And the first records once more, as a redelivery would bring them.
    produce(&broker, "orders", &orders("first", 0)).await;
    wait_count(
        &db,
        "SELECT count(*) FROM kafka_orders WHERE note = 'first'",
        200,
    )
    .await;
    let row = db
        .query_one(
            "SELECT count(*) OVER (), n, price, ok, meta->>'i', tags::text FROM kafka_orders WHERE order_id = 'k7'",
            &[],
        )
        .await
        .unwrap();
    let (count, n, price, ok): (i64, i64, f64, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!((count, n, price, ok), (1, 7, 10.5, false));
    assert_eq!(row.get::<_, String>(4), "7");
    assert_eq!(row.get::<_, String>(5), r#"["a", "b"]"#);
    let total: i64 = db
        .query_one("SELECT count(*) FROM kafka_orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 200);
    connect.wait_task("orders-pg", "RUNNING").await;
}

#[tokio::test]
async fn the_sink_retries_while_postgres_is_down_and_writes_every_record_once_it_is_back() {
    let pg = TestPostgres::start();
    let (broker, worker) = broker_and_worker();
    let connect = Connect::of(&worker).await;
    connect
        .create(
            "outage",
            json!({"connector.class": "postgres-sink", "connection.url": pg.url(),
                   "topics": "readings", "insert.mode": "upsert", "pk.mode": "record_value",
                   "pk.fields": "id", "auto.create": "true",
                   "errors.retry.timeout": "60000", "errors.retry.delay.max.ms": "500",
                   "value.converter": "json", "value.converter.schemas.enable": "false"}),
        )
        .await;
    let readings = |from: i64, to: i64| -> Vec<(Option<String>, String)> {
        (from..to)
            .map(|i| (None, json!({"id": i, "v": i * 10}).to_string()))
            .collect()
    };
    produce(&broker, "readings", &readings(0, 50)).await;
    {
        let db = pg.client().await;
        wait_count(&db, "SELECT count(*) FROM readings", 50).await;
    }
    // The connection is cut while records keep coming.
    pg.stop();
    produce(&broker, "readings", &readings(50, 100)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.start_again();
    let db = pg.client().await;
    wait_count(&db, "SELECT count(*) FROM readings", 100).await;
    let sum: i64 = db
        .query_one("SELECT sum(v)::bigint FROM readings", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, (0..100).map(|i| i * 10).sum::<i64>());
    let status = connect.wait_task("outage", "RUNNING").await;
    assert!(status["tasks"][0]["trace"].is_null(), "{status}");
}

/// The error a dead-letter record carries in its headers.
fn error_message(m: &rdkafka::message::OwnedMessage) -> String {
    m.headers()
        .and_then(|h| {
            h.iter()
                .find(|h| h.key == "__connect.errors.exception.message")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn records_the_sink_cannot_write_are_dead_lettered_and_odd_names_stay_names() {
    let pg = TestPostgres::start();
    let db = pg.client().await;
    let (broker, worker) = broker_and_worker();
    let connect = Connect::of(&worker).await;
    let odd_field = r#"v"; DROP TABLE kept; --"#;
    db.batch_execute("CREATE TABLE kept (x int)").await.unwrap();
    let sink = |tolerant: bool| {
        let mut c = json!({"connector.class": "postgres-sink", "connection.url": pg.url(),
               "topics": "events", "table.name.format": "Odd \"T\" ${topic}",
               "insert.mode": "upsert", "pk.mode": "record_value", "pk.fields": "id",
               "auto.create": "true", "auto.evolve": "true",
               "value.converter": "json", "value.converter.schemas.enable": "false"});
        if tolerant {
            c["errors.tolerance"] = json!("all");
            c["errors.deadletterqueue.topic.name"] = json!("events-dlq");
        }
        c
    };
    // A record without its key field comes first, alone.
    produce(&broker, "events", &[(None, r#"{"no_id": 1}"#.into())]).await;
    connect.create("tolerant", sink(true)).await;
    let dead = broker.consume("events-dlq", 1, 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1, "the record without id was dead-lettered");
    let message = error_message(&dead[0]);
    assert!(
        message.contains("record events/0@0: the value has no field 'id'"),
        "{message}"
    );
    // Rows with a field whose name is SQL, and a new field later.
    let good = json!({"id": 1, odd_field: "kept"}).to_string();
    produce(&broker, "events", &[(None, good)]).await;
    wait_count(&db, r#"SELECT count(*) FROM "Odd ""T"" events""#, 1).await;
    produce(
        &broker,
        "events",
        &[(None, json!({"id": 2, "extra": true}).to_string())],
    )
    .await;
    wait_count(
        &db,
        r#"SELECT count(*) FROM "Odd ""T"" events" WHERE extra"#,
        1,
    )
    .await;
    let odd: String = db
        .query_one(
            &format!(
                r#"SELECT "{}" FROM "Odd ""T"" events" WHERE id = 1"#,
                odd_field.replace('"', "\"\"")
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(odd, "kept");
    db.query_one("SELECT count(*) FROM kept", &[])
        .await
        .unwrap();
    // A value the column's type cannot take is refused by the server and
    // dead-lettered too, naming the record.
    produce(&broker, "events", &[(None, r#"{"id": "three"}"#.into())]).await;
    let dead = broker.consume("events-dlq", 1, 2, Duration::from_secs(30));
    assert_eq!(dead.len(), 2);
    let header = error_message(&dead[1]);
    assert!(
        header.contains("record events/0@3: PostgreSQL refused its row")
            && header.contains("22P02"),
        "{header}"
    );
    // Without tolerance the task fails and says why.
    connect.create("strict", sink(false)).await;
    let status = connect.wait_task("strict", "FAILED").await;
    let trace = status["tasks"][0]["trace"].as_str().unwrap_or_default();
    assert!(trace.contains("has no field 'id'"), "{status}");
    connect.wait_task("tolerant", "RUNNING").await;
}

/// The ids of the records on `topic` once `n` arrived (and nothing else
/// came for a while).
fn ids(broker: &TestBroker, topic: &str, n: usize) -> Vec<i64> {
    let records = broker.consume(topic, 1, n, Duration::from_secs(40));
    assert_eq!(
        records.len(),
        n,
        "{topic}: {} of {n} records",
        records.len()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let all = broker.consume(topic, 1, n + 1, Duration::from_secs(2));
    all.iter()
        .map(|m| {
            let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            v["id"].as_i64().unwrap()
        })
        .collect()
}

async fn insert_items(db: &tokio_postgres::Client, from: i64, to: i64) {
    db.execute(
        "INSERT INTO items (id, name, price, qty, ok, doc) \
         SELECT i, 'item-' || i, i * 1.5, i::int, i % 2 = 0, jsonb_build_object('i', i) \
         FROM generate_series($1::bigint, $2::bigint) i",
        &[&from, &to],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_source_emits_new_rows_and_resumes_after_a_sigkill_without_repeating_them() {
    let pg = TestPostgres::start();
    let db = pg.client().await;
    db.batch_execute(
        "CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(10,2), qty int, ok bool, \
         created timestamptz DEFAULT '2024-05-01 10:00:00.25+02', doc jsonb)",
    )
    .await
    .unwrap();
    insert_items(&db, 1, 50).await;
    let (broker, mut worker) = broker_and_worker();
    let connect = Connect::of(&worker).await;
    connect
        .create(
            "items-src",
            json!({"connector.class": "io.confluent.connect.jdbc.JdbcSourceConnector",
                   "connection.url": pg.url(), "table.whitelist": "public.items",
                   "mode": "incrementing", "incrementing.column.name": "id",
                   "topic.prefix": "pg-", "poll.interval.ms": "200", "batch.max.rows": "20",
                   "value.converter": "json", "value.converter.schemas.enable": "false"}),
        )
        .await;
    let records = broker.consume("pg-public.items", 1, 50, Duration::from_secs(40));
    assert_eq!(records.len(), 50);
    let first: Value = serde_json::from_slice(records[0].payload().unwrap()).unwrap();
    assert_eq!(
        first,
        json!({"id": 1, "name": "item-1", "price": "1.50", "qty": 1, "ok": false,
               "created": "2024-05-01T08:00:00.25+00:00", "doc": {"i": 1}})
    );
    assert_eq!(records[0].key().unwrap(), b"1");
    insert_items(&db, 51, 75).await;
    assert_eq!(
        ids(&broker, "pg-public.items", 75),
        (1..=75).collect::<Vec<_>>()
    );
    // Once offset 75 is committed, nothing before it is read again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = connect.get("/connectors/items-src/offsets").await;
        if v["offsets"][0]["offset"] == json!({"incrementing": 75}) {
            assert_eq!(
                v["offsets"][0]["partition"],
                json!({"table": "public.items"})
            );
            break;
        }
        assert!(Instant::now() < deadline, "offset 75 never committed: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.kill();
    insert_items(&db, 76, 100).await;
    worker.restart();
    let connect = Connect::of(&worker).await;
    connect.wait_task("items-src", "RUNNING").await;
    assert_eq!(
        ids(&broker, "pg-public.items", 100),
        (1..=100).collect::<Vec<_>>()
    );
}

/// Committed offsets, as the worker would keep them.
#[derive(Default)]
struct Offsets(Mutex<HashMap<String, Value>>);

impl Offsets {
    fn commit(&self, r: &SourceRecord) {
        self.0.lock().unwrap().insert(
            Value::Object((*r.source_partition).clone()).to_string(),
            r.source_offset.clone(),
        );
    }
}

impl OffsetReader for Offsets {
    fn offset(&self, partition: &SourcePartition) -> Option<Value> {
        self.0
            .lock()
            .unwrap()
            .get(&Value::Object(partition.clone()).to_string())
            .cloned()
    }
}

async fn task(pg: &TestPostgres, mode: &str, offsets: Arc<Offsets>) -> Box<dyn SourceTask> {
    let mut config: runnel_connect::plugin::Props = [
        ("name", "events"),
        ("connection.url", &pg.url()),
        ("table.whitelist", "events"),
        ("mode", mode),
        ("timestamp.column.name", "ts"),
        ("topic.prefix", "pg-"),
        ("poll.interval.ms", "10"),
        ("batch.max.rows", "3"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if mode.contains("incrementing") {
        config.insert("incrementing.column.name".into(), "id".into());
    }
    let plugin = runnel_connect::connectors::postgres::PostgresSource;
    let mut task = plugin.source_task(&config).unwrap();
    task.start(offsets).await.unwrap();
    task
}

/// Polls until a poll returns nothing; the ids read, in order.
async fn drain(task: &mut dyn SourceTask, offsets: &Offsets) -> Vec<i64> {
    let mut ids = Vec::new();
    for _ in 0..100 {
        let records = task.poll().await.unwrap();
        if records.is_empty() {
            return ids;
        }
        for r in &records {
            let Data::Json(v) = &r.value else {
                panic!("{r:?}")
            };
            ids.push(v["id"].as_i64().unwrap());
            offsets.commit(r);
        }
    }
    panic!("the source never ran out of rows: {ids:?}")
}

#[tokio::test]
async fn the_timestamp_modes_read_rows_that_share_a_timestamp_whole_and_see_updates() {
    let pg = TestPostgres::start();
    let db = pg.client().await;
    db.batch_execute(
        "CREATE TABLE events (id serial PRIMARY KEY, ts timestamp NOT NULL);
         INSERT INTO events (ts) SELECT '2024-05-01 10:00:00.000001' FROM generate_series(1, 7);
         INSERT INTO events (ts) SELECT '2024-05-01 10:00:01' FROM generate_series(1, 2);",
    )
    .await
    .unwrap();
    // timestamp+incrementing: batches of 3 cut through the 7 equal
    // timestamps, and the id tells the rows apart.
    let offsets = Arc::new(Offsets::default());
    let mut t = task(&pg, "timestamp+incrementing", offsets.clone()).await;
    assert_eq!(drain(&mut *t, &offsets).await, (1..=9).collect::<Vec<_>>());
    db.batch_execute("UPDATE events SET ts = '2024-05-02 00:00:00' WHERE id = 5")
        .await
        .unwrap();
    assert_eq!(drain(&mut *t, &offsets).await, vec![5]);
    let saved = offsets.offset(&serde_json::from_str(r#"{"table": "events"}"#).unwrap());
    assert_eq!(
        saved,
        Some(json!({"timestamp": "2024-05-02T00:00:00", "incrementing": 5}))
    );
    // A new task resumes after the committed offset.
    let mut again = task(&pg, "timestamp+incrementing", offsets.clone()).await;
    assert_eq!(drain(&mut *again, &offsets).await, Vec::<i64>::new());

    // timestamp alone: the batch that one timestamp fills is read whole,
    // and its rows' offsets never claim part of it.
    db.batch_execute("UPDATE events SET ts = '2024-05-01 10:00:00.000001' WHERE id = 5")
        .await
        .unwrap();
    let offsets = Arc::new(Offsets::default());
    let mut t = task(&pg, "timestamp", offsets.clone()).await;
    let first = t.poll().await.unwrap();
    assert_eq!(first.len(), 7, "{first:?}");
    let marks: Vec<&Value> = first
        .iter()
        .map(|r| &r.source_offset["timestamp"])
        .collect();
    assert!(marks[..6].iter().all(|m| m.is_null()), "{marks:?}");
    assert_eq!(marks[6], "2024-05-01T10:00:00.000001");
    // Killed after committing the third record: all seven come again.
    offsets.commit(&first[2]);
    let mut again = task(&pg, "timestamp", offsets.clone()).await;
    let mut read = drain(&mut *again, &offsets).await;
    // Rows of one timestamp come in no particular order.
    read[..7].sort();
    assert_eq!(read, (1..=9).collect::<Vec<_>>());
    assert_eq!(first[6].key, Data::Null);
}

#[tokio::test]
async fn pk_mode_kafka_makes_a_redelivery_of_keyless_records_rewrite_the_same_rows() {
    let pg = TestPostgres::start();
    let db = pg.client().await;
    let (broker, worker) = broker_and_worker();
    let connect = Connect::of(&worker).await;
    // Keyless and with repeated values: only the coordinates tell them apart.
    let records: Vec<(Option<String>, String)> = (0..100)
        .map(|i| (None, json!({"reading": i % 10}).to_string()))
        .collect();
    produce(&broker, "events", &records).await;
    let config = json!({"connector.class": "postgres-sink",
           "connection.url": format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port),
           "topics": "events", "insert.mode": "upsert", "pk.mode": "kafka",
           "auto.create": "true",
           "value.converter": "json", "value.converter.schemas.enable": "false"});
    connect.create("events-pg", config.clone()).await;
    wait_count(&db, "SELECT count(*) FROM events", 100).await;
    let key: Vec<String> = db
        .query(
            "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = 'events'::regclass AND i.indisprimary ORDER BY a.attname",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        key,
        ["__connect_offset", "__connect_partition", "__connect_topic"]
    );
    let row = db
        .query_one(
            "SELECT min(__connect_offset), max(__connect_offset), count(DISTINCT __connect_topic) FROM events",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        (0, 99, 1)
    );
    // A second connector (its own group, from the start) delivers the
    // same records again: every row is rewritten, none is added.
    let before: i64 = db
        .query_one("SELECT max(xmin::text::bigint) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    connect.create("events-pg-again", config).await;
    wait_count(
        &db,
        &format!("SELECT count(*) FROM events WHERE xmin::text::bigint > {before}"),
        100,
    )
    .await;
    wait_count(&db, "SELECT count(*) FROM events", 100).await;
    connect.wait_task("events-pg-again", "RUNNING").await;
}
