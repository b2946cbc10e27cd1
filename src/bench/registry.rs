//! `runnel bench registry`: schema registrations and lookups per second
//! over the REST API, and what broker-side validation costs a producer.
//!
//! Comparisons in the same run:
//! - registrations: one `acks=all` produce of a record of the same size to
//!   a topic, waited for, at the same concurrency — the log write every
//!   registration makes;
//! - lookups by id: `GET /` (an empty answer) on the same server with the
//!   same client and concurrency — the HTTP ceiling;
//! - validation: the same librdkafka producer and the same 1 KiB Avro
//!   records to a topic without validation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use apache_avro::types::Value as Avro;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

/// An order record whose Avro encoding is about 1 KiB.
pub const ORDER_SCHEMA: &str = r#"{"type":"record","name":"Order","namespace":"bench","fields":[
    {"name":"id","type":"string"},
    {"name":"customer","type":"long"},
    {"name":"qty","type":"int"},
    {"name":"price","type":"double"},
    {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID","SHIPPED"]}},
    {"name":"tags","type":{"type":"array","items":"string"}},
    {"name":"note","type":["null","string"],"default":null},
    {"name":"lines","type":{"type":"array","items":{"type":"record","name":"Line","fields":[
        {"name":"sku","type":"string"},{"name":"units","type":"int"},{"name":"cents","type":"long"}]}}}]}"#;

/// A page-view event: a dozen fields, mostly text, about 1 KiB.
pub const EVENT_SCHEMA: &str = r#"{"type":"record","name":"PageView","namespace":"bench","fields":[
    {"name":"event_id","type":{"type":"string","logicalType":"uuid"}},
    {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"user_id","type":"long"},
    {"name":"session","type":"string"},
    {"name":"url","type":"string"},
    {"name":"referrer","type":["null","string"],"default":null},
    {"name":"user_agent","type":"string"},
    {"name":"country","type":{"type":"enum","name":"Country","symbols":["DE","FR","US","JP","BR"]}},
    {"name":"duration_ms","type":"int"},
    {"name":"attributes","type":{"type":"map","values":"string"}},
    {"name":"tags","type":{"type":"array","items":"string"}},
    {"name":"body","type":"string"}]}"#;

fn frame(id: i32, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn encode(schema: &str, value: Avro) -> Result<Vec<u8>> {
    let schema = apache_avro::Schema::parse_str(schema)?;
    Ok(
        apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()?
            .write_value_to_vec(value)?,
    )
}

/// One framed (magic 0, schema id, body) page-view event of `target` bytes.
pub fn event_payload(id: i32, target: usize) -> Result<Vec<u8>> {
    let value = |body: String| {
        Avro::Record(vec![
            (
                "event_id".into(),
                Avro::String("6f1c2a44-8d0e-4b7e-9a51-3c2f0e9d7b18".into()),
            ),
            ("ts".into(), Avro::Long(1_764_615_000_123)),
            ("user_id".into(), Avro::Long(98_765_432_101)),
            ("session".into(), Avro::String("s-2f9c61e0b7".into())),
            (
                "url".into(),
                Avro::String("https://shop.example.com/products/kettle-1l-steel?ref=home".into()),
            ),
            (
                "referrer".into(),
                Avro::Union(1, Box::new(Avro::String("https://www.example.org/search?q=kettle".into()))),
            ),
            (
                "user_agent".into(),
                Avro::String("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36".into()),
            ),
            ("country".into(), Avro::Enum(0, "DE".into())),
            ("duration_ms".into(), Avro::Int(5230)),
            (
                "attributes".into(),
                Avro::Map(
                    [("ab", "variant-b"), ("theme", "dark"), ("locale", "de-DE"), ("cart", "3")]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), Avro::String(v.into())))
                        .collect(),
                ),
            ),
            (
                "tags".into(),
                Avro::Array(["organic", "campaign-42", "mobile"].map(|t| Avro::String(t.into())).to_vec()),
            ),
            ("body".into(), Avro::String(body)),
        ])
    };
    let base = encode(EVENT_SCHEMA, value(String::new()))?.len() + 5;
    let filler = "Ein Wasserkocher aus Edelstahl, 1 Liter, mit Kalkfilter. ".repeat(20);
    let body: String = filler
        .chars()
        .take(target.saturating_sub(base + 2))
        .collect();
    Ok(frame(id, encode(EVENT_SCHEMA, value(body))?))
}

/// One framed (magic 0, schema id, body) Avro order of about `target`
/// bytes: many small fields, the hardest case for validation per byte.
pub fn order_payload(id: i32, target: usize) -> Result<Vec<u8>> {
    let schema = apache_avro::Schema::parse_str(ORDER_SCHEMA)?;
    let line = |i: i64| {
        Avro::Record(vec![
            ("sku".into(), Avro::String(format!("SKU-{i:08}"))),
            ("units".into(), Avro::Int(i as i32 % 7 + 1)),
            ("cents".into(), Avro::Long(1999 * i)),
        ])
    };
    let mut lines = 1;
    loop {
        let value = Avro::Record(vec![
            ("id".into(), Avro::String("order-000000000001".into())),
            ("customer".into(), Avro::Long(123_456_789)),
            ("qty".into(), Avro::Int(3)),
            ("price".into(), Avro::Double(59.97)),
            ("status".into(), Avro::Enum(1, "PAID".into())),
            (
                "tags".into(),
                Avro::Array(vec![
                    Avro::String("gift".into()),
                    Avro::String("express".into()),
                ]),
            ),
            (
                "note".into(),
                Avro::Union(1, Box::new(Avro::String("leave at the door".into()))),
            ),
            ("lines".into(), Avro::Array((0..lines).map(line).collect())),
        ]);
        let body = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()?
            .write_value_to_vec(value)?;
        if body.len() + 5 >= target || lines > 10_000 {
            return Ok(frame(id, body));
        }
        lines += 1;
    }
}

/// A REST client for the benchmark.
#[derive(Clone)]
pub struct Rest {
    base: String,
    http: reqwest::Client,
}

impl Rest {
    pub fn new(base: &str) -> Result<Rest> {
        Ok(Rest {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(256)
                .build()?,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .body(b.to_string());
        }
        let response = r.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn register(&self, subject: &str, schema: &str) -> Result<i32> {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/subjects/{subject}/versions"),
                Some(json!({ "schema": schema })),
            )
            .await?;
        v["id"]
            .as_i64()
            .map(|i| i as i32)
            .context("registration answered without an id")
    }
}

/// Runs `total` operations with `concurrency` tasks; returns operations/s.
async fn rate<F, Fut>(total: u64, concurrency: usize, op: F) -> Result<f64>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, op) = (next.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                op(i).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Distinct schemas, one per subject, registered at `concurrency`.
pub async fn registrations(rest: &Rest, count: u64, concurrency: usize) -> Result<f64> {
    registrations_from(rest, 0, count, concurrency).await
}

/// As [`registrations`], numbering subjects from `first`.
pub async fn registrations_from(
    rest: &Rest,
    first: u64,
    count: u64,
    concurrency: usize,
) -> Result<f64> {
    let rest = rest.clone();
    rate(count, concurrency, move |i| {
        let i = i + first;
        let rest = rest.clone();
        async move {
            let schema = format!(
                r#"{{"type":"record","name":"R{i}","namespace":"bench","fields":[{{"name":"f{i}","type":"long"}},{{"name":"s","type":"string","default":""}}]}}"#
            );
            rest.register(&format!("bench-registrations-{i}"), &schema)
                .await
                .map(|_| ())
        }
    })
    .await
}

/// The log write a registration makes, alone: an `acks=all` idempotent
/// produce of a record of registration size, waited for.
pub async fn log_writes(
    bootstrap: &str,
    topic: &str,
    count: u64,
    concurrency: usize,
) -> Result<f64> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .create()?;
    let key = br#"{"keytype":"SCHEMA","subject":"bench-registrations-0","version":1,"magic":1}"#;
    let value = vec![b'v'; 200];
    // Connect and learn the partition before the clock starts.
    producer
        .send(
            FutureRecord::to(topic).key(&key[..]).payload(&value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
    let topic = topic.to_string();
    rate(count, concurrency, move |_| {
        let (producer, topic, value) = (producer.clone(), topic.clone(), value.clone());
        async move {
            producer
                .send(
                    FutureRecord::to(&topic).key(&key[..]).payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))
        }
    })
    .await
}

/// `GET path(i)` `count` times at `concurrency`.
pub async fn gets(
    rest: &Rest,
    count: u64,
    concurrency: usize,
    path: impl Fn(u64) -> String + Clone + Send + Sync + 'static,
) -> Result<f64> {
    let rest = rest.clone();
    rate(count, concurrency, move |i| {
        let (rest, p) = (rest.clone(), path(i));
        async move { rest.call(reqwest::Method::GET, &p, None).await.map(|_| ()) }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benchmark_records_are_about_1_kib_and_valid() {
        for (text, payload) in [
            (ORDER_SCHEMA, order_payload(7, 1024).unwrap()),
            (EVENT_SCHEMA, event_payload(7, 1024).unwrap()),
        ] {
            assert!((1000..1100).contains(&payload.len()), "{}", payload.len());
            let (id, body) = runnel_schema_registry::validate::split(&payload).unwrap();
            assert_eq!(id, 7);
            let schema = runnel_schema_registry::schema::parse(text, &[], false).unwrap();
            let v = runnel_schema_registry::validate::AvroValidator::new(&schema.schema).unwrap();
            assert_eq!(v.check(body), Ok(()));
        }
    }
}
