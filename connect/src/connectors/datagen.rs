//! A data generator source for demos and benchmarks: JSON records of one of
//! a few shapes (`quickstart=orders|users|pageviews`), at a given rate or
//! as fast as the broker takes them, for ever or `max.records`.
//!
//! Records are numbered, and the number is the source offset: a restarted
//! task continues the sequence, and the same seed gives the same data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use crate::plugin::{
    ConfigKey, ConfigType, ConnectResult, ConnectorKind, ConnectorPlugin, OffsetReader, Props,
    SourceTask,
};
use crate::record::{Data, SourcePartition, SourceRecord};

pub struct Datagen;

static KEYS: &[ConfigKey] = &[
    ConfigKey::required("topic", ConfigType::String, "The topic to write to."),
    ConfigKey::optional(
        "quickstart",
        ConfigType::String,
        Some("orders"),
        "The record shape: orders, users or pageviews.",
    ),
    ConfigKey::optional(
        "max.records",
        ConfigType::Long,
        Some("-1"),
        "Records to generate in all; -1 for no end.",
    ),
    ConfigKey::optional(
        "rate",
        ConfigType::Long,
        Some("0"),
        "Records per second; 0 for as fast as possible.",
    ),
    ConfigKey::optional(
        "batch.size",
        ConfigType::Int,
        Some("1000"),
        "Records per poll.",
    ),
    ConfigKey::optional(
        "seed",
        ConfigType::Long,
        Some("42"),
        "Seed of the generator (the same seed gives the same records).",
    ),
];

const SHAPES: &[&str] = &["orders", "users", "pageviews"];

impl ConnectorPlugin for Datagen {
    fn name(&self) -> &'static str {
        "datagen"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &[
            "DatagenConnector",
            "io.confluent.kafka.connect.datagen.DatagenConnector",
        ]
    }
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Source
    }
    fn config_keys(&self) -> &'static [ConfigKey] {
        KEYS
    }
    fn validate(&self, config: &Props) -> Vec<(String, String)> {
        let shape = config
            .get("quickstart")
            .map(String::as_str)
            .unwrap_or("orders");
        if SHAPES.contains(&shape) {
            Vec::new()
        } else {
            vec![(
                "quickstart".into(),
                format!("'{shape}' is not one of {}", SHAPES.join(", ")),
            )]
        }
    }
    fn source_task(&self, config: &Props) -> ConnectResult<Box<dyn SourceTask>> {
        let get = |k: &str, d: i64| {
            config
                .get(k)
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(d)
        };
        Ok(Box::new(DatagenTask {
            name: config.get("name").cloned().unwrap_or_default(),
            topic: config.get("topic").cloned().unwrap_or_default(),
            shape: config
                .get("quickstart")
                .cloned()
                .unwrap_or_else(|| "orders".into()),
            max: get("max.records", -1),
            rate: get("rate", 0).max(0) as u64,
            batch: get("batch.size", 1000).clamp(1, 100_000) as usize,
            seed: get("seed", 42) as u64,
            next: 0,
            started: Instant::now(),
            started_at: 0,
        }))
    }
}

struct DatagenTask {
    name: String,
    topic: String,
    shape: String,
    max: i64,
    rate: u64,
    batch: usize,
    seed: u64,
    next: u64,
    started: Instant,
    started_at: u64,
}

/// A small deterministic mix of `seed` and `n` (splitmix64).
fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed
        .wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const NAMES: &[&str] = &["ann", "bo", "cy", "dee", "eli", "fay", "gus", "hal"];
const PAGES: &[&str] = &["/", "/products", "/cart", "/checkout", "/help"];
const STATUSES: &[&str] = &["NEW", "PAID", "SHIPPED"];

/// Record `n` of a shape: (key, value).
pub fn generate(shape: &str, seed: u64, n: u64, now_ms: i64) -> (String, Value) {
    let r = mix(seed, n);
    let name = NAMES[(r % NAMES.len() as u64) as usize];
    match shape {
        "users" => (
            format!("user-{n}"),
            json!({
                "user_id": n,
                "name": format!("{name}-{}", r % 1000),
                "email": format!("{name}{}@example.com", r % 1000),
                "ssn": format!("{:03}-{:02}-{:04}", r % 900 + 100, (r >> 10) % 90 + 10, (r >> 20) % 9000 + 1000),
                "registered_at": now_ms,
            }),
        ),
        "pageviews" => (
            format!("user-{}", r % 500),
            json!({
                "view_id": n,
                "user_id": r % 500,
                "page": PAGES[((r >> 8) % PAGES.len() as u64) as usize],
                "duration_ms": (r >> 16) % 30_000,
                "ts": now_ms,
            }),
        ),
        _ => (
            format!("order-{n}"),
            json!({
                "order_id": n,
                "customer": name,
                "amount_cents": (r >> 4) % 100_000,
                "items": (r >> 24) % 9 + 1,
                "status": STATUSES[((r >> 32) % 3) as usize],
                "ts": now_ms,
            }),
        ),
    }
}

impl DatagenTask {
    fn partition(&self) -> SourcePartition {
        let mut p = Map::new();
        p.insert("datagen".into(), Value::String(self.name.clone()));
        p
    }
}

#[async_trait]
impl SourceTask for DatagenTask {
    async fn start(&mut self, offsets: Arc<dyn OffsetReader>) -> ConnectResult<()> {
        if let Some(o) = offsets.offset(&self.partition()) {
            self.next = o["next"].as_u64().unwrap_or(0);
        }
        self.started = Instant::now();
        self.started_at = self.next;
        Ok(())
    }

    async fn poll(&mut self) -> ConnectResult<Vec<SourceRecord>> {
        let mut count = self.batch as u64;
        if self.max >= 0 {
            count = count.min((self.max as u64).saturating_sub(self.next));
            if count == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Ok(Vec::new());
            }
        }
        if self.rate > 0 {
            // Never run ahead of `rate` records per second.
            let due = (self.started.elapsed().as_secs_f64() * self.rate as f64) as u64;
            let made = self.next - self.started_at;
            if made >= due {
                let wait = Duration::from_secs_f64((made + 1 - due) as f64 / self.rate as f64);
                tokio::time::sleep(wait.min(Duration::from_millis(200))).await;
                return Ok(Vec::new());
            }
            count = count.min(due - made);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let partition = Arc::new(self.partition());
        let topic: Arc<str> = Arc::from(self.topic.as_str());
        let mut out = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let n = self.next;
            let (key, value) = generate(&self.shape, self.seed, n, now);
            self.next += 1;
            let mut r = SourceRecord::new(
                partition.clone(),
                json!({ "next": self.next }),
                topic.clone(),
                Data::Json(value),
            );
            r.key = Data::string(key);
            out.push(r);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoOffsets;
    impl OffsetReader for NoOffsets {
        fn offset(&self, _: &SourcePartition) -> Option<Value> {
            Some(json!({"next": 10}))
        }
    }

    #[tokio::test]
    async fn records_are_numbered_reproducible_and_bounded() {
        assert_eq!(generate("orders", 1, 5, 0), generate("orders", 1, 5, 0));
        assert_ne!(generate("orders", 1, 5, 0), generate("orders", 2, 5, 0));
        let cfg: Props = [
            ("topic", "t"),
            ("max.records", "25"),
            ("batch.size", "10"),
            ("name", "d"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut task = Datagen.source_task(&cfg).unwrap();
        task.start(Arc::new(NoOffsets)).await.unwrap();
        let a = task.poll().await.unwrap();
        let b = task.poll().await.unwrap();
        assert_eq!((a.len(), b.len()), (10, 5), "resumes at 10, stops at 25");
        assert_eq!(a[0].key, Data::string("order-10"));
        assert_eq!(b[4].source_offset, json!({"next": 25}));
        assert!(task.poll().await.unwrap().is_empty());
        assert!(!Datagen
            .validate(
                &[("quickstart".to_string(), "cats".to_string())]
                    .into_iter()
                    .collect()
            )
            .is_empty());
    }

    #[tokio::test]
    async fn a_rate_limits_the_records_per_second() {
        let cfg: Props = [("topic", "t"), ("rate", "200"), ("name", "d")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut task = Datagen.source_task(&cfg).unwrap();
        task.start(Arc::new(NoOffsets)).await.unwrap();
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < Duration::from_millis(500) {
            n += task.poll().await.unwrap().len();
        }
        assert!((60..=130).contains(&n), "{n} records in 0.5 s at 200/s");
    }
}
