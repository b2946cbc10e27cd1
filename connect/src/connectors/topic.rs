//! `topic-sink`: writes records to a Kafka topic (the `topic` setting, or
//! the topic a pipeline's `route` chose). Pipelines from a topic to a topic
//! run on it; as a connector it copies topics.

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::converter::{self, Converter};
use crate::plugin::{
    ConfigKey, ConfigType, ConnectError, ConnectResult, ConnectorKind, ConnectorPlugin, Props,
    SinkTask,
};
use crate::record::SinkRecord;

pub struct TopicSink;

static KEYS: &[ConfigKey] = &[
    ConfigKey::required("topics", ConfigType::List, "Topics to read."),
    ConfigKey::required("topic", ConfigType::String, "The topic to write to."),
    ConfigKey::required(
        "bootstrap.servers",
        ConfigType::String,
        "The Kafka cluster to write to.",
    ),
    ConfigKey::optional(
        "output.value.converter",
        ConfigType::String,
        Some("json"),
        "How written values become bytes: bytes, string, json, avro.",
    ),
    ConfigKey::optional(
        "output.key.converter",
        ConfigType::String,
        Some("string"),
        "How written keys become bytes: bytes, string, json, avro.",
    ),
];

impl ConnectorPlugin for TopicSink {
    fn name(&self) -> &'static str {
        "topic-sink"
    }
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }
    fn config_keys(&self) -> &'static [ConfigKey] {
        KEYS
    }
    fn sink_task(&self, config: &Props) -> ConnectResult<Box<dyn SinkTask>> {
        let producer: FutureProducer = ClientConfig::new()
            .set(
                "bootstrap.servers",
                config
                    .get("bootstrap.servers")
                    .map(String::as_str)
                    .unwrap_or(""),
            )
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .map_err(|e| ConnectError::fatal(format!("creating the producer: {e}")))?;
        let value = converter::from_config("output.value.converter", config, "json")
            .map_err(ConnectError::fatal)?;
        let key = converter::from_config("output.key.converter", config, "string")
            .map_err(ConnectError::fatal)?;
        Ok(Box::new(TopicSinkTask {
            producer,
            key,
            value,
        }))
    }
}

fn convert_error(e: converter::ConvertError) -> ConnectError {
    if e.retriable {
        ConnectError::retriable(e.message)
    } else {
        ConnectError::fatal(e.message)
    }
}

struct TopicSinkTask {
    producer: FutureProducer,
    key: Box<dyn Converter>,
    value: Box<dyn Converter>,
}

#[async_trait]
impl SinkTask for TopicSinkTask {
    async fn put(&mut self, records: &[SinkRecord]) -> ConnectResult<()> {
        // Every record is converted before any is produced: one that does
        // not convert fails the batch with nothing of it written, so when
        // the worker writes the batch again record by record the others
        // are written once.
        let mut encoded = Vec::with_capacity(records.len());
        for r in records {
            let key = self
                .key
                .encode(&r.topic, &r.key)
                .await
                .map_err(convert_error)?;
            let value = self
                .value
                .encode(&r.topic, &r.value)
                .await
                .map_err(convert_error)?;
            encoded.push((key, value));
        }
        let mut deliveries = Vec::with_capacity(records.len());
        for (r, (key, value)) in records.iter().zip(&encoded) {
            let mut record = FutureRecord::<[u8], [u8]>::to(&r.topic);
            if let Some(k) = &key {
                record = record.key(k);
            }
            if let Some(v) = &value {
                record = record.payload(v);
            }
            if let Some(ts) = r.timestamp_ms {
                record = record.timestamp(ts);
            }
            let delivery = loop {
                match self.producer.send_result(record) {
                    Ok(d) => break d,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(ConnectError::retriable(format!("producing: {e}"))),
                }
            };
            deliveries.push(delivery);
        }
        // `put` returns once every record is stored.
        for d in deliveries {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(ConnectError::retriable(format!(
                        "the broker refused a record: {e}"
                    )))
                }
                Err(_) => return Err(ConnectError::fatal("the producer was closed")),
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> ConnectResult<()> {
        Ok(())
    }
}
