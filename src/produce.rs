//! `runnel produce [TOPIC]`: records from stdin, through librdkafka. By
//! default one record per line (the value; `-K SEP` splits off a key);
//! `-f FORMAT` reads keys, values, headers, partitions, timestamps and
//! topics in any layout (see `input_format`). With `--schema-id` or
//! `--subject`, each value is JSON written as Avro in the schema
//! registry's wire format.

use std::collections::HashSet;
use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::stream::{FuturesOrdered, StreamExt};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use runnel_schema_registry::client::{frame, Compiled, RegistryClient};

use crate::input_format::{InputFormat, InputRecord, MAX_FIELD_BYTES};
use crate::kafka_client::{apply_properties, CliContext};
use crate::ConnectArgs;

/// Deliveries awaited at once; bounds memory for large inputs.
const MAX_IN_FLIGHT: usize = 10_000;
/// Records read ahead of the producer.
const READ_AHEAD: usize = 1024;
/// Most distinct topics one run writes to (with `%t`).
const MAX_TOPICS: usize = 10_000;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic to write to (optional when -f reads it per record with %t)
    pub topic: Option<String>,
    /// Split each line at the first SEP into key and value (lines without
    /// SEP get no key)
    #[arg(short = 'K', long, value_name = "SEP", conflicts_with = "format")]
    pub key_separator: Option<String>,
    /// How records are laid out in the input: %k key, %v value, %h
    /// headers (k=v,k2=v2), %p partition, %T timestamp (ms), %t topic,
    /// with literal delimiters between them and \n, \t, \\ escapes, e.g.
    /// -f '%k %v\n' [default: one value per line]
    #[arg(short = 'f', long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// An empty value is written as a null value (a tombstone, which
    /// deletes the key from a compacted topic)
    #[arg(short = 'Z', long)]
    pub tombstone: bool,
    /// Write every record to this partition (default: by key hash, or spread)
    #[arg(short, long)]
    pub partition: Option<i32>,
    /// Header added to every record, e.g. -H source=cli (repeatable)
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Each value is JSON, written as Avro of this registered schema in
    /// the schema registry's wire format
    #[arg(long, value_name = "ID", conflicts_with = "subject")]
    pub schema_id: Option<i32>,
    /// Like --schema-id, with the latest schema of this subject (e.g.
    /// orders-value)
    #[arg(long, value_name = "SUBJECT")]
    pub subject: Option<String>,
    #[command(flatten)]
    pub registry: crate::schema::RegistryArgs,
    /// Print where each record went, one JSON object per line in input
    /// order: {"topic":..,"partition":..,"offset":..}
    #[arg(long)]
    pub print_offsets: bool,
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

/// One record to send, with the input line (or record number) it came from.
struct Input {
    number: u64,
    record: InputRecord,
}

/// Reads stdin in a thread of its own: value lines (split at `key_sep`),
/// or records in `format`.
fn spawn_reader(
    format: Option<InputFormat>,
    key_sep: Option<String>,
) -> tokio::sync::mpsc::Receiver<Result<Input, String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut r = std::io::BufReader::with_capacity(1 << 16, stdin.lock());
        let mut number = 0u64;
        loop {
            number += 1;
            let next = match &format {
                Some(f) => f.read(&mut r),
                None => read_line(&mut r, key_sep.as_deref()),
            };
            let item = match next {
                Ok(Some(record)) => Ok(Input { number, record }),
                Ok(None) => return,
                Err(e) => Err(format!("{} {number}: {e}", unit(format.is_some()))),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// What errors call one record of the input: a line, unless -f says
/// otherwise.
fn unit(formatted: bool) -> &'static str {
    if formatted {
        "record"
    } else {
        "line"
    }
}

/// One line: the value, or key SEP value.
fn read_line<R: BufRead>(r: &mut R, key_sep: Option<&str>) -> Result<Option<InputRecord>, String> {
    let mut line = Vec::new();
    let n = std::io::Read::take(&mut *r, MAX_FIELD_BYTES as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("reading stdin: {e}"))?;
    if n == 0 {
        return Ok(None);
    }
    if line.ends_with(b"\n") {
        line.pop();
        if line.ends_with(b"\r") {
            line.pop();
        }
    } else if line.len() > MAX_FIELD_BYTES {
        return Err(format!("a line longer than {MAX_FIELD_BYTES} bytes"));
    }
    let mut record = InputRecord::default();
    match key_sep.map(str::as_bytes) {
        Some(sep) if !sep.is_empty() => match line.windows(sep.len()).position(|w| w == sep) {
            Some(at) => {
                record.key = Some(line[..at].to_vec());
                record.value = line[at + sep.len()..].to_vec();
            }
            None => record.value = line,
        },
        _ => record.value = line,
    }
    Ok(Some(record))
}

/// Whether `topic` exists, asked without creating it; `None` when the
/// protocol client cannot ask (a listener that wants TLS or SASL, which
/// only librdkafka speaks here).
async fn topic_exists(bootstrap: &str, topic: &str) -> Option<bool> {
    let mut client = runnel_core::client::Client::connect(bootstrap, "runnel-cli")
        .await
        .ok()?;
    let mut request = MetadataRequest::default();
    let mut t = MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(topic.to_string())));
    request.topics = Some(vec![t]);
    request.allow_auto_topic_creation = false;
    let response = client.send(&request).await.ok()?;
    Some(
        response
            .topics
            .first()
            .is_some_and(|t| t.error_code != ResponseError::UnknownTopicOrPartition.code()),
    )
}

/// Makes sure `topic` can be written: when it does not exist, asks for it
/// the way a producer does (which makes a broker with topic auto-creation
/// create it) and says so.
async fn ensure_topic(
    producer: &FutureProducer<CliContext>,
    bootstrap: &str,
    topic: &str,
) -> Result<()> {
    match topic_exists(bootstrap, topic).await {
        // Exists, or cannot be told without librdkafka: produce as usual.
        Some(true) | None => return Ok(()),
        Some(false) => {}
    }
    let metadata = producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| anyhow::anyhow!("cannot reach a broker at {bootstrap}: {e}"))?;
    let created = metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none());
    if !created && topic_exists(bootstrap, topic).await != Some(true) {
        bail!(
            "topic '{topic}' does not exist and the broker does not create topics on use; \
             create it with `runnel topic create {topic}`"
        );
    }
    eprintln!("created topic {topic} (auto-created by the broker)");
    Ok(())
}

pub async fn run(args: ProduceArgs) -> Result<()> {
    let format = args
        .format
        .as_deref()
        .map(InputFormat::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!(e))?;
    let per_record_topic = format.as_ref().is_some_and(InputFormat::has_topic);
    if args.topic.is_none() && !per_record_topic {
        bail!("give a TOPIC (or a -f format with %t)");
    }
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
        .fetch_metadata(None, Duration::from_secs(5))
        // The error's own Display already names the cause; no chain.
        .map_err(|e| anyhow::anyhow!("cannot reach a broker at {}: {e}", args.connect.bootstrap))?;
    let mut checked: HashSet<String> = HashSet::new();
    if let Some(topic) = &args.topic {
        ensure_topic(&producer, &args.connect.bootstrap, topic).await?;
        checked.insert(topic.clone());
    }
    let schema: Option<(i32, Arc<Compiled>)> = match (&args.schema_id, &args.subject) {
        (None, None) => None,
        (id, subject) => {
            let registry =
                RegistryClient::with_timeout(&args.registry.url, Duration::from_secs(10))
                    .map_err(|e| anyhow::anyhow!("--registry-url: {e}"))?;
            Some(match (id, subject) {
                (Some(id), _) => (*id, registry.by_id(*id).await?),
                (None, Some(subject)) => registry.latest(subject).await?,
                (None, None) => unreachable!("matched above"),
            })
        }
    };

    let unit = unit(format.is_some());
    let mut input = spawn_reader(format, args.key_separator.clone());
    let mut in_flight = FuturesOrdered::new();
    let mut produced = 0u64;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut report =
        |topic: &str, d: &rdkafka::producer::future_producer::Delivery| -> Result<()> {
            if args.print_offsets {
                use std::io::Write;
                #[derive(serde::Serialize)]
                struct Produced<'a> {
                    topic: &'a str,
                    partition: i32,
                    offset: i64,
                }
                serde_json::to_writer(
                    &mut out,
                    &Produced {
                        topic,
                        partition: d.partition,
                        offset: d.offset,
                    },
                )?;
                writeln!(out)?;
            }
            Ok(())
        };
    while let Some(item) = input.recv().await {
        let Input { number, record } = item.map_err(|e| anyhow::anyhow!(e))?;
        let topic = match (&record.topic, &args.topic) {
            (Some(t), _) | (None, Some(t)) => t.clone(),
            (None, None) => bail!("{unit} {number}: no topic"),
        };
        if !checked.contains(&topic) {
            if checked.len() >= MAX_TOPICS {
                bail!("{unit} {number}: more than {MAX_TOPICS} topics in one run");
            }
            ensure_topic(&producer, &args.connect.bootstrap, &topic).await?;
            checked.insert(topic.clone());
        }
        let value: Option<Vec<u8>> = if args.tombstone && record.value.is_empty() {
            None
        } else {
            match &schema {
                None => Some(record.value),
                Some((id, compiled)) => {
                    let json: serde_json::Value =
                        serde_json::from_slice(&record.value).map_err(|e| {
                            anyhow::anyhow!("{unit} {number}: the value is not JSON: {e}")
                        })?;
                    let body = compiled.encode(&json).map_err(|e| {
                        anyhow::anyhow!("{unit} {number}: the value does not fit schema {id}: {e}")
                    })?;
                    Some(frame(*id, &body))
                }
            }
        };
        let mut record_headers = headers.clone();
        for (k, v) in &record.headers {
            record_headers = record_headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let partition = record.partition.or(args.partition);
        let (producer, key, timestamp) = (&producer, record.key, record.timestamp);
        in_flight.push_back(async move {
            let mut r: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&topic).headers(record_headers);
            if let Some(v) = &value {
                r = r.payload(v.as_slice());
            }
            if let Some(k) = &key {
                r = r.key(k.as_slice());
            }
            if let Some(p) = partition {
                r = r.partition(p);
            }
            if let Some(ts) = timestamp {
                r = r.timestamp(ts);
            }
            let result = producer.send(r, Duration::from_secs(30)).await;
            (number, topic, result)
        });
        if in_flight.len() >= MAX_IN_FLIGHT {
            if let Some((n, topic, result)) = in_flight.next().await {
                let d = result.map_err(|(e, _)| delivery_error(unit, n, e))?;
                report(&topic, &d)?;
                produced += 1;
            }
        }
    }
    while let Some((n, topic, result)) = in_flight.next().await {
        let d = result.map_err(|(e, _)| delivery_error(unit, n, e))?;
        report(&topic, &d)?;
        produced += 1;
    }
    {
        use std::io::Write;
        out.flush()?;
    }
    producer
        .flush(Duration::from_secs(30))
        .context("flushing producer")?;
    let to = match (&args.topic, checked.len()) {
        (Some(t), 1) => t.clone(),
        (_, n) => format!("{n} topics"),
    };
    eprintln!("produced {produced} records to {to}");
    Ok(())
}

/// A failed delivery, with a hint for the errors users can act on.
fn delivery_error(unit: &str, number: u64, e: rdkafka::error::KafkaError) -> anyhow::Error {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    let hint = match e {
        KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord) => {
            " (the topic validates schemas: records must be in the schema registry's \
             wire format with a schema registered under the topic's subject; \
             --subject or --schema-id writes them so)"
        }
        _ => "",
    };
    anyhow::anyhow!("{unit} {number}: {e}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_first_key_separator_and_keep_crlf_out() {
        let mut r = std::io::Cursor::new(b"k:v:w\r\nplain\n".to_vec());
        let a = read_line(&mut r, Some(":")).unwrap().unwrap();
        assert_eq!(
            (a.key.as_deref(), a.value.as_slice()),
            (Some(&b"k"[..]), &b"v:w"[..])
        );
        let b = read_line(&mut r, Some(":")).unwrap().unwrap();
        assert_eq!((b.key, b.value.as_slice()), (None, &b"plain"[..]));
        assert!(read_line(&mut r, Some(":")).unwrap().is_none());
    }
}
