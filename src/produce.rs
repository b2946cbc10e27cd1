//! `runnel produce TOPIC`: one record per stdin line, through librdkafka.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::kafka_client::{apply_properties, CliContext};
use crate::ConnectArgs;

/// Deliveries awaited at once; bounds memory for large inputs.
const MAX_IN_FLIGHT: usize = 10_000;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic to write to
    pub topic: String,
    /// Split each line at the first SEP into key and value (lines without
    /// SEP get no key)
    #[arg(short = 'K', long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Write every record to this partition (default: by key hash, or spread)
    #[arg(short, long)]
    pub partition: Option<i32>,
    /// Header added to every record, e.g. -H source=cli (repeatable)
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Acknowledgements to wait for: all, 1 or 0
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Compression: none, gzip, snappy, lz4 or zstd
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// librdkafka property, e.g. -X session.timeout.ms=10000 (repeatable)
    #[arg(short = 'X', long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "30000")
        .set("socket.timeout.ms", "10000")
        .set("log_level", "3");
    config
}

pub async fn run(args: ProduceArgs) -> Result<()> {
    let mut headers = OwnedHeaders::new();
    for h in &args.headers {
        let Some((k, v)) = h.split_once('=') else {
            bail!("header '{h}' is not KEY=VALUE")
        };
        headers = headers.insert(Header {
            key: k,
            value: Some(v),
        });
    }
    let mut config = producer_config(&args.connect.bootstrap);
    config
        .set("acks", &args.acks)
        .set("compression.type", &args.compression);
    apply_properties(&mut config, &args.properties)?;
    let producer: FutureProducer<CliContext> = config
        .create_with_context(CliContext)
        .context("cannot create producer")?;
    // Fail fast with a readable error when no broker answers.
    producer
        .client()
        .fetch_metadata(Some(&args.topic), Duration::from_secs(5))
        // The error's own Display already names the cause; no chain.
        .map_err(|e| anyhow::anyhow!("cannot reach a broker at {}: {e}", args.connect.bootstrap))?;

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut in_flight = FuturesUnordered::new();
    let mut produced = 0u64;
    let mut line_no = 0u64;
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        line_no += 1;
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => (None, line),
            },
            None => (None, line),
        };
        let (producer, topic, headers, partition) =
            (&producer, &args.topic, headers.clone(), args.partition);
        in_flight.push(async move {
            let mut record: FutureRecord<'_, String, String> =
                FutureRecord::to(topic).payload(&value).headers(headers);
            if let Some(k) = &key {
                record = record.key(k);
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            (
                line_no,
                producer.send(record, Duration::from_secs(30)).await,
            )
        });
        if in_flight.len() >= MAX_IN_FLIGHT {
            if let Some((n, result)) = in_flight.next().await {
                result.map_err(|(e, _)| delivery_error(n, e))?;
                produced += 1;
            }
        }
    }
    while let Some((n, result)) = in_flight.next().await {
        result.map_err(|(e, _)| delivery_error(n, e))?;
        produced += 1;
    }
    producer
        .flush(Duration::from_secs(30))
        .context("flushing producer")?;
    eprintln!("produced {produced} records to {}", args.topic);
    Ok(())
}

/// A failed delivery, with a hint for the errors users can act on.
fn delivery_error(line: u64, e: rdkafka::error::KafkaError) -> anyhow::Error {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    let hint = match e {
        KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord) => {
            " (the topic validates schemas: records must be in the schema registry's \
             wire format with a schema registered under the topic's subject)"
        }
        _ => "",
    };
    anyhow::anyhow!("line {line}: {e}{hint}")
}
