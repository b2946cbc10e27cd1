//! The registry's log on a Kafka broker: the compacted `_schemas` topic,
//! written with an idempotent producer and followed by a consumer thread
//! that applies every record to the [`Store`].
//!
//! Works against any Kafka-protocol broker (Runnel, Kafka, Redpanda);
//! `runnel serve` uses it against its own listener.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::error::RegistryError;
use crate::records::{Record, MAX_RECORD_BYTES, SCHEMAS_TOPIC};
use crate::service::SchemaLog;
use crate::store::{Applied, Store};

/// How the registry reaches its broker.
#[derive(Debug, Clone)]
pub struct KafkaLogConfig {
    pub bootstrap: String,
    pub topic: String,
    /// Extra librdkafka properties for every client (security settings...).
    pub properties: Vec<(String, String)>,
    /// How long a single broker operation may take.
    pub timeout: Duration,
}

impl KafkaLogConfig {
    pub fn new(bootstrap: impl Into<String>) -> KafkaLogConfig {
        KafkaLogConfig {
            bootstrap: bootstrap.into(),
            topic: SCHEMAS_TOPIC.to_string(),
            properties: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            // Registry writes are small request/response exchanges.
            .set("socket.nagle.disable", "true");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// The `_schemas` topic as a [`SchemaLog`].
pub struct KafkaLog {
    config: KafkaLogConfig,
    producer: FutureProducer,
    stop: Arc<AtomicBool>,
    reader: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for KafkaLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn store_error(what: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Store(format!("{what}: {e}"))
}

impl KafkaLog {
    /// Creates the topic if needed (one partition, compacted) and starts
    /// the reader thread, which applies records to `store` and publishes
    /// the next offset it will apply on `applied`.
    pub async fn start(
        config: KafkaLogConfig,
        store: Arc<RwLock<Store>>,
        applied: watch::Sender<i64>,
    ) -> Result<Arc<KafkaLog>, RegistryError> {
        ensure_topic(&config).await?;
        let producer: FutureProducer = config
            .client()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .set("message.max.bytes", (MAX_RECORD_BYTES + 65536).to_string())
            .set("message.timeout.ms", config.timeout.as_millis().to_string())
            .create()
            .map_err(|e| store_error("creating the producer", e))?;
        let consumer: BaseConsumer = config
            .client()
            .set("group.id", "runnel-schema-registry")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "20")
            .set(
                "fetch.message.max.bytes",
                (MAX_RECORD_BYTES + 65536).to_string(),
            )
            .create()
            .map_err(|e| store_error("creating the consumer", e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&config.topic, 0, Offset::Beginning)
            .map_err(|e| store_error("assigning the topic", e))?;
        consumer
            .assign(&tpl)
            .map_err(|e| store_error("assigning the topic", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let topic = config.topic.clone();
        let reader = std::thread::Builder::new()
            .name("schema-reader".into())
            .spawn(move || read_loop(consumer, &topic, store, applied, flag))
            .map_err(|e| store_error("starting the reader", e))?;
        info!(topic = %config.topic, bootstrap = %config.bootstrap, "schema registry store started");
        Ok(Arc::new(KafkaLog {
            config,
            producer,
            stop,
            reader: std::sync::Mutex::new(Some(reader)),
        }))
    }
}

async fn ensure_topic(config: &KafkaLogConfig) -> Result<(), RegistryError> {
    let admin: AdminClient<DefaultClientContext> = config
        .client()
        .create()
        .map_err(|e| store_error("creating the admin client", e))?;
    let topic = NewTopic::new(&config.topic, 1, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact");
    let options = AdminOptions::new().operation_timeout(Some(config.timeout));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(|e| store_error(&format!("creating topic {}", config.topic), e))?;
    for result in results {
        match result {
            Ok(_) => info!(topic = %config.topic, "created the schemas topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(store_error(&format!("creating topic {name}"), code));
            }
        }
    }
    let timeout = config.timeout;
    let name = config.topic.clone();
    let admin = Arc::new(admin);
    let metadata_admin = admin.clone();
    let partitions = tokio::task::spawn_blocking(move || {
        metadata_admin
            .inner()
            .fetch_metadata(Some(&name), timeout)
            .map(|m| m.topics().first().map_or(0, |t| t.partitions().len()))
    })
    .await
    .map_err(|e| store_error("metadata", e))?
    .map_err(|e| store_error("reading the topic's metadata", e))?;
    if partitions != 1 {
        return Err(RegistryError::Store(format!(
            "the schemas topic {} has {partitions} partitions; it must have exactly 1",
            config.topic
        )));
    }
    // A topic created by someone else (auto-creation, a stray producer)
    // may delete old segments, and with them registered schemas.
    let resource = ResourceSpecifier::Topic(&config.topic);
    let configs = admin
        .describe_configs([&resource], &options)
        .await
        .map_err(|e| store_error("reading the topic's configs", e))?;
    let policy = configs
        .into_iter()
        .next()
        .and_then(|r| r.ok())
        .and_then(|r| r.get("cleanup.policy").and_then(|e| e.value.clone()));
    match policy {
        Some(p) if p.split(',').map(str::trim).eq(["compact"]) => Ok(()),
        Some(p) => Err(RegistryError::Store(format!(
            "the schemas topic {} has cleanup.policy={p}; it must be compact, or registered \
             schemas are deleted with old segments (set it with: runnel topic alter-config {} --set cleanup.policy=compact)",
            config.topic, config.topic
        ))),
        None => {
            warn!(topic = %config.topic, "could not read the schemas topic's cleanup.policy");
            Ok(())
        }
    }
}

fn read_loop(
    consumer: BaseConsumer,
    topic: &str,
    store: Arc<RwLock<Store>>,
    applied: watch::Sender<i64>,
    stop: Arc<AtomicBool>,
) {
    let mut next = 0i64;
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let record = Record::decode(m.key(), m.payload());
                match record {
                    Ok(r) => {
                        let outcome = store.write().unwrap_or_else(|e| e.into_inner()).apply(r);
                        if let Applied::Rejected(why) = outcome {
                            debug!(offset = m.offset(), reason = %why, "ignoring a conflicting schemas record");
                        }
                    }
                    Err(e) => {
                        warn!(offset = m.offset(), error = %e, "skipping an unreadable schemas record")
                    }
                }
                next = next.max(m.offset() + 1);
                applied.send_replace(next);
            }
            Some(Err(KafkaError::MessageConsumption(
                code @ (RDKafkaErrorCode::BadCompression | RDKafkaErrorCode::BadMessage),
            ))) => {
                // A batch no client can read (anyone may produce to the
                // topic): step past it, an offset at a time, rather than
                // stop here for good.
                let at = match consumer
                    .position()
                    .ok()
                    .and_then(|tpl| tpl.find_partition(topic, 0).map(|p| p.offset()))
                {
                    Some(Offset::Offset(o)) => o.max(next),
                    _ => next,
                };
                warn!(offset = at, error = %code, "skipping an unreadable record of the schemas topic");
                if consumer
                    .seek(topic, 0, Offset::Offset(at + 1), Duration::from_secs(5))
                    .is_ok()
                {
                    next = at + 1;
                    applied.send_replace(next);
                }
            }
            Some(Err(e)) => {
                warn!(error = %e, "reading the schemas topic");
                std::thread::sleep(Duration::from_millis(100));
            }
            None => {
                // Caught up: the position covers offsets without records
                // (compacted away, control batches).
                if let Ok(tpl) = consumer.position() {
                    if let Some(Offset::Offset(o)) =
                        tpl.find_partition(topic, 0).map(|p| p.offset())
                    {
                        if o > next {
                            next = o;
                            applied.send_replace(next);
                        }
                    }
                }
            }
        }
    }
}

impl SchemaLog for KafkaLog {
    fn append(&self, records: Vec<Record>) -> BoxFuture<'_, Result<i64, RegistryError>> {
        Box::pin(async move {
            let mut last = -1;
            let mut pending = Vec::with_capacity(records.len());
            for r in &records {
                let (key, value) = r.encode();
                let mut record = FutureRecord::<Vec<u8>, Vec<u8>>::to(&self.config.topic)
                    .partition(0)
                    .key(&key);
                if let Some(v) = &value {
                    record = record.payload(v);
                }
                // The producer keeps order (idempotence); wait for all.
                let delivery = self
                    .producer
                    .send_result(record)
                    .map_err(|(e, _)| store_error("writing to the schemas topic", e))?;
                pending.push(delivery);
            }
            for d in pending {
                match d.await {
                    Ok(Ok(delivery)) => last = last.max(delivery.offset),
                    Ok(Err((e, _))) => return Err(store_error("writing to the schemas topic", e)),
                    Err(_) => {
                        return Err(RegistryError::Store(
                            "the producer was closed while writing".into(),
                        ))
                    }
                }
            }
            Ok(last)
        })
    }

    fn end_offset(&self) -> BoxFuture<'_, Result<i64, RegistryError>> {
        Box::pin(async move {
            let producer = self.producer.clone();
            let topic = self.config.topic.clone();
            let timeout = self.config.timeout;
            tokio::task::spawn_blocking(move || {
                producer.client().fetch_watermarks(&topic, 0, timeout)
            })
            .await
            .map_err(|e| store_error("watermarks", e))?
            .map(|(_, high)| high)
            .map_err(|e| store_error("reading the end of the schemas topic", e))
        })
    }

    fn close(&self) {
        let _ = self.producer.flush(Duration::from_secs(5));
        self.stop.store(true, Ordering::Release);
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(reader) = reader {
            // The reader polls in 100 ms steps; its consumer closes as it ends.
            let _ = reader.join();
        }
    }
}

/// Starts a registry on the `_schemas` topic of a broker and waits until
/// it has read everything already in the topic.
pub async fn open_registry(
    config: KafkaLogConfig,
) -> Result<Arc<crate::service::Registry>, RegistryError> {
    let store = Arc::new(RwLock::new(Store::new()));
    let (tx, rx) = watch::channel(0);
    let timeout = config.timeout;
    let log = KafkaLog::start(config, store.clone(), tx).await?;
    let registry = Arc::new(crate::service::Registry::new(store, rx, log, timeout));
    let started = std::time::Instant::now();
    registry.sync().await?;
    let (schemas, subjects) = {
        let s = registry.read();
        (s.schemas().len(), s.subjects("", true, false).len())
    };
    info!(
        schemas,
        subjects,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "schema registry loaded"
    );
    Ok(registry)
}
