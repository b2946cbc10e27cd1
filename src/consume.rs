//! `runnel consume TOPIC...`: print records to stdout, through librdkafka.
//!
//! By default each record is one JSON object on one line:
//!
//! ```text
//! {"topic":"t","key":"k","value":"v","headers":[{"key":"h","value":"x"}],"partition":0,"offset":5,"timestamp":1700000000000}
//! ```
//!
//! A key, value or header value that is not UTF-8 is printed in base64
//! with a `key_encoding` / `value_encoding` / `encoding` field saying so;
//! a null one as `null`. With `--use-schema-registry`, a payload in the
//! Confluent wire format is decoded to JSON with the schema its id names
//! (`value_schema_id` / `key_schema_id` say which). `--format text` (or any
//! `--print-*` flag) prints the value (and the fields asked for) per line.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::{Args, ValueEnum};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use runnel_schema_registry::client::RegistryClient;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;

use crate::kafka_client::{apply_properties, select_names, CliContext};
use crate::offset_spec::OffsetSpec;
use crate::ConnectArgs;

/// How long a metadata or offsets lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Most topics one command reads (a regex can match many).
const MAX_TOPICS: usize = 10_000;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordFormat {
    /// One JSON object per record and line
    Json,
    /// The value (and the fields --print-* asks for) per line
    Text,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaPart {
    Key,
    Value,
    Both,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Topics to read (one or more; with --regex, regular expressions that
    /// must match a whole topic name)
    #[arg(required = true, value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// Read every topic whose whole name matches one of the TOPIC
    /// expressions (internal topics only by an expression starting with _)
    #[arg(long)]
    pub regex: bool,
    /// Start at the oldest record (same as -o start; -o wins if both are given)
    #[arg(short = 'B', long)]
    pub from_beginning: bool,
    /// Read only these partitions (comma-separated or repeated)
    #[arg(short, long = "partition", value_delimiter = ',', value_name = "P")]
    pub partitions: Vec<i32>,
    /// Where to start in each partition: start, end (the default), N (an
    /// offset), -N (N records before the end), +N (N after the start),
    /// @TIME (the first record at or after TIME: ms since the epoch or
    /// RFC 3339, e.g. @2024-05-01T12:00:00Z). With --group, only start or
    /// end, for partitions without a committed offset
    #[arg(short, long, allow_hyphen_values = true, value_name = "OFFSET")]
    pub offset: Option<OffsetSpec>,
    /// Stop after this many records
    #[arg(short = 'n', long)]
    pub max: Option<u64>,
    /// Stop when the end of every partition is reached
    #[arg(short = 'e', long)]
    pub exit_at_end: bool,
    /// Output format [default: json, or text with a --print-* flag or
    /// --separator]
    #[arg(long, value_enum)]
    pub format: Option<RecordFormat>,
    /// Indent the JSON of each record over several lines
    #[arg(long)]
    pub pretty_print: bool,
    /// Text format: print the key before the value
    #[arg(long)]
    pub print_key: bool,
    /// Text format: print the timestamp (ms) first
    #[arg(long)]
    pub print_timestamp: bool,
    /// Text format: print partition:offset first
    #[arg(long)]
    pub print_offset: bool,
    /// Text format: print headers after the value
    #[arg(long)]
    pub print_headers: bool,
    /// Text format: separator between printed fields [default: tab]
    #[arg(long)]
    pub separator: Option<String>,
    /// Decode payloads in the schema registry's wire format (magic byte 0,
    /// 4-byte schema id, Avro) to JSON: the value (bare flag), the key or
    /// both. Payloads not in that format are printed as they are
    #[arg(
        long,
        value_enum,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "value",
        value_name = "PART"
    )]
    pub use_schema_registry: Option<SchemaPart>,
    #[command(flatten)]
    pub registry: crate::schema::RegistryArgs,
    /// Consume as a member of this consumer group: partitions are shared
    /// with the group's other members; the offsets of printed records are
    /// committed in the background (every 5 s, as librdkafka's
    /// auto-commit) and when the command ends
    #[arg(short, long, conflicts_with = "partitions")]
    pub group: Option<String>,
    /// librdkafka property, e.g. -X session.timeout.ms=10000 (repeatable)
    #[arg(short = 'X', long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn run(args: ConsumeArgs) -> Result<()> {
    let text_flags = args.print_key
        || args.print_timestamp
        || args.print_offset
        || args.print_headers
        || args.separator.is_some();
    let format = args.format.unwrap_or(if text_flags {
        RecordFormat::Text
    } else {
        RecordFormat::Json
    });
    if format == RecordFormat::Json && text_flags {
        bail!("--print-* and --separator shape the text format: add --format text");
    }
    let start = match (args.offset, args.from_beginning) {
        (Some(o), _) => o,
        (None, true) => OffsetSpec::Start,
        (None, false) => OffsetSpec::End,
    };
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.connect.bootstrap)
        .set("enable.auto.commit", "false")
        .set(
            "enable.partition.eof",
            if args.exit_at_end { "true" } else { "false" },
        )
        .set("socket.timeout.ms", "10000")
        // Small records fill librdkafka's queue after one fetch; it then
        // waits fetch.queue.backoff.ms (1 s by default) before fetching
        // again, which left the printing loop idle most of the time.
        .set("queued.min.messages", "1000000")
        .set("fetch.queue.backoff.ms", "10")
        .set("log_level", "3");
    match &args.group {
        Some(group) => {
            let reset = match start {
                OffsetSpec::Start => "earliest",
                OffsetSpec::End => "latest",
                other => bail!(
                    "with --group, -o is start or end (where partitions without a \
                     committed offset begin), not {other}; move the group's offsets \
                     with `runnel group seek`"
                ),
            };
            config
                .set("group.id", group)
                .set("auto.offset.reset", reset)
                // Offsets are stored once a record is printed and
                // committed in the background from there: a crash repeats
                // at most the last commit interval's records.
                .set("enable.auto.commit", "true")
                .set("enable.auto.offset.store", "false");
        }
        // Partitions are assigned explicitly; the group id is never used
        // for coordination, only required by librdkafka.
        None => {
            config.set("group.id", "runnel-cli-consume");
        }
    }
    apply_properties(&mut config, &args.properties)?;
    let consumer: StreamConsumer<CliContext> = config
        .create_with_context(CliContext)
        .context("cannot create consumer")?;
    let registry = match args.use_schema_registry {
        Some(_) => Some(
            RegistryClient::with_timeout(&args.registry.url, Duration::from_secs(10))
                .map_err(|e| anyhow::anyhow!("--registry-url: {e}"))?,
        ),
        None => None,
    };
    let (decode_key, decode_value) = match args.use_schema_registry {
        None => (false, false),
        Some(SchemaPart::Key) => (true, false),
        Some(SchemaPart::Value) => (false, true),
        Some(SchemaPart::Both) => (true, true),
    };

    // One metadata request: every topic with --regex, else the named ones.
    let single = (!args.regex && args.topics.len() == 1).then(|| args.topics[0].as_str());
    let metadata = consumer
        .fetch_metadata(single, LOOKUP_TIMEOUT)
        // The error's own Display already names the cause; no chain.
        .map_err(|e| anyhow::anyhow!("cannot reach a broker at {}: {e}", args.connect.bootstrap))?;
    let known: Vec<String> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name().to_string())
        .collect();
    let topics = select_names(&args.topics, args.regex, &known, "topic")?;
    if topics.len() > MAX_TOPICS {
        bail!(
            "{} topics match; at most {MAX_TOPICS} at once",
            topics.len()
        );
    }
    let mut partitions: Vec<(String, i32)> = Vec::new();
    for name in &topics {
        let Some(t) = metadata.topics().iter().find(|t| t.name() == name) else {
            bail!("topic '{name}' does not exist");
        };
        if let Some(e) = t.error() {
            bail!(
                "topic '{name}': {}",
                rdkafka::types::RDKafkaErrorCode::from(e)
            );
        }
        let ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        for p in &args.partitions {
            if !ids.contains(p) {
                bail!("topic '{name}' has no partition {p}");
            }
        }
        for p in ids {
            if args.partitions.is_empty() || args.partitions.contains(&p) {
                partitions.push((name.clone(), p));
            }
        }
    }
    if args.group.is_some() {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
    } else {
        let assignment = start_offsets(&consumer, &partitions, start)?;
        consumer.assign(&assignment)?;
    }

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut count = 0u64;
    // Per partition, the last record written out but not flushed yet:
    // stored for the group's commit once flushed.
    // By topic then partition, so a record's topic is looked up, not copied.
    let mut printed: HashMap<String, HashMap<i32, i64>> = HashMap::new();
    let store = |printed: &mut HashMap<String, HashMap<i32, i64>>| {
        for (t, partitions) in printed.iter_mut() {
            for (p, next) in partitions.drain() {
                // A partition revoked meanwhile refuses it: its next owner
                // starts from the last commit, which is all it can do.
                let _ = consumer.store_offset(t, p, next);
            }
        }
    };
    let mut at_end: HashSet<(String, i32)> = HashSet::new();
    let sep = args.separator.as_deref().unwrap_or("\t");
    if args.max == Some(0) {
        return Ok(());
    }
    // Written out but not flushed yet: flushed at 1000 records or when
    // no record came for 50 ms, so a reader of the output (and the
    // group's commit, which follows the flushes) is never far behind.
    let mut unflushed = false;
    let mut line = Vec::with_capacity(1024);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let received = tokio::select! {
            m = consumer.recv() => m,
            _ = tokio::time::sleep(Duration::from_millis(50)), if unflushed => {
                out.flush()?;
                store(&mut printed);
                unflushed = false;
                continue;
            }
            _ = &mut ctrl_c => break,
        };
        match received {
            Ok(m) => {
                if !at_end.is_empty() {
                    at_end.remove(&(m.topic().to_string(), m.partition()));
                }
                line.clear();
                match format {
                    RecordFormat::Text => write_text(&mut line, &m, &args, sep)?,
                    RecordFormat::Json => {
                        let key =
                            decoded(registry.as_ref(), decode_key, m.key(), &m, "key").await?;
                        let value =
                            decoded(registry.as_ref(), decode_value, m.payload(), &m, "value")
                                .await?;
                        write_json(&mut line, &m, key, value, args.pretty_print)?;
                    }
                }
                line.push(b'\n');
                out.write_all(&line)?;
                count += 1;
                unflushed = true;
                if args.group.is_some() {
                    // Printed first (the output is flushed below or at the
                    // end), then stored for the background commit.
                    // (rdkafka's store_offset commits the offset after it.)
                    match printed.get_mut(m.topic()) {
                        Some(partitions) => {
                            partitions.insert(m.partition(), m.offset());
                        }
                        None => {
                            printed.insert(
                                m.topic().to_string(),
                                HashMap::from([(m.partition(), m.offset())]),
                            );
                        }
                    }
                }
                if args.max.is_some_and(|max| count >= max) {
                    break;
                }
            }
            Err(KafkaError::PartitionEOF(p)) => {
                let assigned: Vec<(String, i32)> = if args.group.is_some() {
                    consumer
                        .assignment()
                        .map(|a| {
                            a.elements()
                                .iter()
                                .map(|e| (e.topic().to_string(), e.partition()))
                                .collect()
                        })
                        .unwrap_or_default()
                } else {
                    partitions.clone()
                };
                mark_at_end(&consumer, &assigned, p, &mut at_end);
                if !assigned.is_empty() && assigned.iter().all(|tp| at_end.contains(tp)) {
                    break;
                }
            }
            Err(e) => bail!("consuming {}: {e}", topics.join(", ")),
        }
        if count.is_multiple_of(1000) {
            out.flush()?;
            store(&mut printed);
            unflushed = false;
        }
    }
    out.flush()?;
    store(&mut printed);
    if args.group.is_some() {
        // What was printed is committed before the command ends.
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(())
            | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => bail!("committing the group's offsets: {e}"),
        }
    }
    Ok(())
}

/// The assignment that starts each partition where `start` says.
fn start_offsets(
    consumer: &StreamConsumer<CliContext>,
    partitions: &[(String, i32)],
    start: OffsetSpec,
) -> Result<TopicPartitionList> {
    let mut assignment = TopicPartitionList::new();
    match start {
        OffsetSpec::Start | OffsetSpec::End => {
            let offset = if start == OffsetSpec::Start {
                Offset::Beginning
            } else {
                Offset::End
            };
            for (t, p) in partitions {
                assignment.add_partition_offset(t, *p, offset)?;
            }
        }
        OffsetSpec::Timestamp(ts) => {
            let mut query = TopicPartitionList::new();
            for (t, p) in partitions {
                query.add_partition_offset(t, *p, Offset::Offset(ts))?;
            }
            let found = consumer
                .offsets_for_times(query, LOOKUP_TIMEOUT)
                .context("looking up offsets by time")?;
            for e in found.elements() {
                // No record at or after the time: from the end.
                let offset = match e.offset() {
                    Offset::Offset(o) if o >= 0 => Offset::Offset(o),
                    _ => Offset::End,
                };
                assignment.add_partition_offset(e.topic(), e.partition(), offset)?;
            }
        }
        spec => {
            for (t, p) in partitions {
                let (low, high) = consumer
                    .fetch_watermarks(t, *p, LOOKUP_TIMEOUT)
                    .with_context(|| format!("reading the offsets of {t}/{p}"))?;
                let offset = spec.resolve(low, high, None);
                assignment.add_partition_offset(t, *p, Offset::Offset(offset))?;
            }
        }
    }
    Ok(assignment)
}

/// librdkafka reports the end of a partition by number only; with several
/// topics, the partitions of that number whose position reached their
/// high watermark are the ones at their end.
fn mark_at_end(
    consumer: &StreamConsumer<CliContext>,
    assigned: &[(String, i32)],
    partition: i32,
    at_end: &mut HashSet<(String, i32)>,
) {
    let candidates: Vec<&(String, i32)> = assigned
        .iter()
        .filter(|(_, p)| *p == partition)
        .filter(|tp| !at_end.contains(*tp))
        .collect();
    if candidates.len() <= 1 {
        at_end.extend(candidates.into_iter().cloned());
        return;
    }
    let positions = consumer.position().unwrap_or_default();
    for (t, p) in candidates {
        let position = positions
            .find_partition(t, *p)
            .map(|e| e.offset())
            .unwrap_or(Offset::Invalid);
        // Asked only at an end of partition, a few times per partition.
        let Ok((low, high)) = consumer.fetch_watermarks(t, *p, LOOKUP_TIMEOUT) else {
            continue;
        };
        let done = match position {
            Offset::Offset(o) => o >= high,
            // Nothing fetched yet: at its end only if it is empty.
            _ => low == high,
        };
        if done {
            at_end.insert((t.clone(), *p));
        }
    }
}

/// A key, value or header value as printed in JSON.
enum Field<'a> {
    Null,
    Text(&'a str),
    Base64(String),
    Decoded(i32, Value),
}

impl<'a> Field<'a> {
    fn of(bytes: Option<&'a [u8]>) -> Field<'a> {
        match bytes {
            None => Field::Null,
            Some(b) => match std::str::from_utf8(b) {
                Ok(s) => Field::Text(s),
                Err(_) => Field::Base64(base64::engine::general_purpose::STANDARD.encode(b)),
            },
        }
    }

    fn write<M: SerializeMap>(&self, map: &mut M, name: &str) -> Result<(), M::Error> {
        match self {
            Field::Null => map.serialize_entry(name, &Value::Null),
            Field::Text(s) => map.serialize_entry(name, s),
            Field::Base64(s) => {
                map.serialize_entry(name, s)?;
                map.serialize_entry(&format!("{name}_encoding"), "base64")
            }
            Field::Decoded(id, v) => {
                map.serialize_entry(name, v)?;
                map.serialize_entry(&format!("{name}_schema_id"), id)
            }
        }
    }
}

/// A payload, decoded with the registry when asked and in its wire format.
async fn decoded<'a>(
    registry: Option<&RegistryClient>,
    decode: bool,
    bytes: Option<&'a [u8]>,
    m: &BorrowedMessage<'_>,
    what: &str,
) -> Result<Field<'a>> {
    if let (true, Some(registry), Some(b)) = (decode, registry, bytes) {
        if b.len() >= 5 && b[0] == 0 {
            let id = i32::from_be_bytes([b[1], b[2], b[3], b[4]]);
            let value = registry.decode(b).await.map_err(|e| {
                anyhow::anyhow!(
                    "{}/{} offset {}: cannot decode the {what}: {e}",
                    m.topic(),
                    m.partition(),
                    m.offset()
                )
            })?;
            return Ok(Field::Decoded(id, value));
        }
    }
    Ok(Field::of(bytes))
}

struct Header<'a> {
    key: &'a str,
    value: Field<'a>,
}

impl serde::Serialize for Header<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("key", self.key)?;
        match &self.value {
            Field::Base64(v) => {
                map.serialize_entry("value", v)?;
                map.serialize_entry("encoding", "base64")?;
            }
            other => other.write(&mut map, "value")?,
        }
        map.end()
    }
}

struct JsonRecord<'a> {
    topic: &'a str,
    key: Field<'a>,
    value: Field<'a>,
    headers: Vec<Header<'a>>,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
}

impl serde::Serialize for JsonRecord<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("topic", self.topic)?;
        self.key.write(&mut map, "key")?;
        self.value.write(&mut map, "value")?;
        map.serialize_entry("headers", &self.headers)?;
        map.serialize_entry("partition", &self.partition)?;
        map.serialize_entry("offset", &self.offset)?;
        map.serialize_entry("timestamp", &self.timestamp)?;
        map.end()
    }
}

fn write_json(
    out: &mut Vec<u8>,
    m: &BorrowedMessage<'_>,
    key: Field<'_>,
    value: Field<'_>,
    pretty: bool,
) -> Result<()> {
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| Header {
                    key: h.key,
                    value: Field::of(h.value),
                })
                .collect()
        })
        .unwrap_or_default();
    let record = JsonRecord {
        topic: m.topic(),
        key,
        value,
        headers,
        partition: m.partition(),
        offset: m.offset(),
        timestamp: m.timestamp().to_millis(),
    };
    if pretty {
        serde_json::to_writer_pretty(out, &record)?;
    } else {
        serde_json::to_writer(out, &record)?;
    }
    Ok(())
}

fn write_text(
    out: &mut Vec<u8>,
    m: &BorrowedMessage<'_>,
    args: &ConsumeArgs,
    sep: &str,
) -> Result<()> {
    if args.print_offset {
        write!(out, "{}:{}{sep}", m.partition(), m.offset())?;
    }
    if args.print_timestamp {
        write!(out, "{}{sep}", m.timestamp().to_millis().unwrap_or(-1))?;
    }
    if args.print_key {
        let key = m.key().map(String::from_utf8_lossy).unwrap_or_default();
        write!(out, "{key}{sep}")?;
    }
    let value = m.payload().map(String::from_utf8_lossy).unwrap_or_default();
    write!(out, "{value}")?;
    if args.print_headers {
        if let Some(headers) = m.headers() {
            let rendered: Vec<String> = headers
                .iter()
                .map(|h| {
                    format!(
                        "{}={}",
                        h.key,
                        h.value.map(String::from_utf8_lossy).unwrap_or_default()
                    )
                })
                .collect();
            write!(out, "{sep}{}", rendered.join(","))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn regexes_match_whole_topic_names_and_leave_internal_topics_out() {
        let all = names(&[
            "orders",
            "orders-eu",
            "my-orders",
            "__consumer_offsets",
            "_schemas",
        ]);
        assert_eq!(
            select_names(&names(&["orders.*"]), true, &all, "topic").unwrap(),
            names(&["orders", "orders-eu"])
        );
        assert_eq!(
            select_names(&names(&[".*"]), true, &all, "topic").unwrap(),
            names(&["my-orders", "orders", "orders-eu"])
        );
        assert_eq!(
            select_names(&names(&["_.*"]), true, &all, "topic").unwrap(),
            names(&["__consumer_offsets", "_schemas"])
        );
        assert!(select_names(&names(&["nothing"]), true, &all, "topic").is_err());
        assert!(select_names(&names(&["("]), true, &all, "topic").is_err());
        assert_eq!(
            select_names(&names(&["a", "b", "a"]), false, &all, "topic").unwrap(),
            names(&["a", "b"])
        );
    }
}
