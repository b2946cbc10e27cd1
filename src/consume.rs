//! `runnel consume TOPIC`: print records to stdout, through librdkafka.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka_client::{apply_properties, CliContext};
use crate::ConnectArgs;

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Topic to read
    pub topic: String,
    /// Start at the oldest record instead of the end
    #[arg(short = 'B', long)]
    pub from_beginning: bool,
    /// Read only this partition
    #[arg(short, long)]
    pub partition: Option<i32>,
    /// Start at this offset (in --partition, or in every partition)
    #[arg(short, long)]
    pub offset: Option<i64>,
    /// Stop after this many records
    #[arg(short = 'n', long)]
    pub max: Option<u64>,
    /// Stop when the end of every partition is reached
    #[arg(short = 'e', long)]
    pub exit_at_end: bool,
    /// Print the key before the value
    #[arg(long)]
    pub print_key: bool,
    /// Print the timestamp (ms) first
    #[arg(long)]
    pub print_timestamp: bool,
    /// Print partition:offset first
    #[arg(long)]
    pub print_offset: bool,
    /// Print headers after the value
    #[arg(long)]
    pub print_headers: bool,
    /// Separator between printed fields
    #[arg(long, default_value = "\t")]
    pub separator: String,
    /// Consume as a member of this consumer group: partitions are shared
    /// with the group's other members; the offsets of printed records are
    /// committed in the background (every 5 s, as librdkafka's
    /// auto-commit) and when the command ends
    #[arg(short, long, conflicts_with_all = ["partition", "offset"])]
    pub group: Option<String>,
    /// librdkafka property, e.g. -X session.timeout.ms=10000 (repeatable)
    #[arg(short = 'X', long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn run(args: ConsumeArgs) -> Result<()> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.connect.bootstrap)
        .set("enable.auto.commit", "false")
        .set(
            "enable.partition.eof",
            if args.exit_at_end { "true" } else { "false" },
        )
        .set("socket.timeout.ms", "10000")
        .set("log_level", "3");
    match &args.group {
        Some(group) => {
            config
                .set("group.id", group)
                .set(
                    "auto.offset.reset",
                    if args.from_beginning {
                        "earliest"
                    } else {
                        "latest"
                    },
                )
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
    let metadata = consumer
        .fetch_metadata(Some(&args.topic), Duration::from_secs(5))
        // The error's own Display already names the cause; no chain.
        .map_err(|e| anyhow::anyhow!("cannot reach a broker at {}: {e}", args.connect.bootstrap))?;
    let topic = metadata.topics().first().context("no metadata for topic")?;
    if let Some(e) = topic.error() {
        bail!(
            "topic '{}': {}",
            args.topic,
            rdkafka::types::RDKafkaErrorCode::from(e)
        );
    }
    let mut partitions: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
    if args.group.is_some() {
        consumer.subscribe(&[args.topic.as_str()])?;
    } else {
        if let Some(p) = args.partition {
            if !partitions.contains(&p) {
                bail!("topic '{}' has no partition {p}", args.topic);
            }
            partitions = vec![p];
        }
        let start = match (args.offset, args.from_beginning) {
            (Some(o), _) => Offset::Offset(o),
            (None, true) => Offset::Beginning,
            (None, false) => Offset::End,
        };
        let mut assignment = TopicPartitionList::new();
        for p in &partitions {
            assignment.add_partition_offset(&args.topic, *p, start)?;
        }
        consumer.assign(&assignment)?;
    }

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut count = 0u64;
    // Per partition, the last record written out but not flushed yet:
    // stored for the group's commit once flushed.
    let mut printed: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
    let store = |printed: &mut std::collections::HashMap<i32, i64>| -> Result<()> {
        for (p, next) in printed.drain() {
            // A partition revoked meanwhile refuses it: its next owner
            // starts from the last commit, which is all it can do.
            let _ = consumer.store_offset(&args.topic, p, next);
        }
        Ok(())
    };
    let mut at_end: HashSet<i32> = HashSet::new();
    let sep = args.separator.as_str();
    if args.max == Some(0) {
        return Ok(());
    }
    // Written out but not flushed yet: flushed at 1000 records or when
    // no record came for 50 ms, so a reader of the output (and the
    // group's commit, which follows the flushes) is never far behind.
    let mut unflushed = false;
    loop {
        let received = tokio::select! {
            m = consumer.recv() => m,
            _ = tokio::time::sleep(Duration::from_millis(50)), if unflushed => {
                out.flush()?;
                store(&mut printed)?;
                unflushed = false;
                continue;
            }
            _ = tokio::signal::ctrl_c() => break,
        };
        match received {
            Ok(m) => {
                at_end.remove(&m.partition());
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
                writeln!(out)?;
                count += 1;
                unflushed = true;
                if args.group.is_some() {
                    // Printed first (the output is flushed below or at the
                    // end), then stored for the background commit.
                    // (rdkafka's store_offset commits the offset after it.)
                    printed.insert(m.partition(), m.offset());
                }
                if args.max.is_some_and(|max| count >= max) {
                    break;
                }
            }
            Err(KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
                let assigned = if args.group.is_some() {
                    consumer.assignment().map(|a| a.count()).unwrap_or(0)
                } else {
                    partitions.len()
                };
                if assigned > 0 && at_end.len() >= assigned {
                    break;
                }
            }
            Err(e) => bail!("consuming '{}': {e}", args.topic),
        }
        if count.is_multiple_of(1000) {
            out.flush()?;
            store(&mut printed)?;
            unflushed = false;
        }
    }
    out.flush()?;
    store(&mut printed)?;
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
