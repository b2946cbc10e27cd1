//! `runnel topic ...`: topic administration over the Kafka protocol, so it
//! works against Runnel, Kafka or Redpanda alike.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, MetadataRequest,
    MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use runnel_core::client::Client;
use runnel_core::client::{alter_configs_request, RESOURCE_TOPIC};

use crate::kafka_client::check;
use serde::Serialize;

use crate::kafka_client::{cluster_metadata, resolve_offsets, select_names};
use crate::offset_spec::OffsetSpec;
use crate::output::{emit, FormatArgs};
use crate::ConnectArgs;

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic
    Create {
        name: String,
        /// Number of partitions [default: the broker's default]
        #[arg(short, long)]
        partitions: Option<i32>,
        /// Replication factor [default: the broker's default]
        #[arg(short, long)]
        replication_factor: Option<i16>,
        /// Topic config, e.g. -c retention.ms=3600000 (repeatable)
        #[arg(short, long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Succeed if the topic already exists
        #[arg(long)]
        if_not_exists: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List topics
    List {
        /// Include internal topics (__consumer_offsets) and the state topics
        /// of Runnel's features (_runnel_*, _schemas, connect-*)
        #[arg(long)]
        internal: bool,
        #[command(flatten)]
        format: FormatArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show partitions, offsets and configs of a topic
    Describe {
        name: String,
        #[command(flatten)]
        format: FormatArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete topics and all their data
    Delete {
        /// Topics to delete (with --regex, expressions a whole name must match)
        #[arg(required = true, value_name = "TOPIC")]
        names: Vec<String>,
        /// Delete every topic whose whole name matches one of the
        /// expressions (internal topics only by one starting with _)
        #[arg(long)]
        regex: bool,
        /// Succeed if a topic does not exist
        #[arg(long)]
        if_exists: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Add partitions to a topic (records with a key may map to another
    /// partition afterwards)
    AddPartitions {
        topic: String,
        /// How many partitions to add
        #[arg(short, long, value_name = "N")]
        num: i32,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete the records before an offset (DeleteRecords): the log start
    /// moves there
    TrimPrefix {
        topic: String,
        /// Only these partitions (comma-separated or repeated) [default: all]
        #[arg(short, long = "partition", value_delimiter = ',', value_name = "P")]
        partitions: Vec<i32>,
        /// The new log start: N, -N (keep the last N records), +N (drop the
        /// first N), end (drop everything), or @TIME (drop what is older)
        #[arg(short, long, allow_hyphen_values = true, value_name = "OFFSET")]
        offset: OffsetSpec,
        /// Print JSON or YAML instead of lines
        #[command(flatten)]
        format: FormatArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Move a partition's replicas to other brokers (the data is copied by
    /// the new replicas, then the old ones are removed), cancel a move, or
    /// show the moves in progress. Many partitions at once: --plan with a
    /// JSON plan in kafka-reassign-partitions' format
    Reassign {
        /// The topic (not with --plan; with --status, only its moves)
        topic: Option<String>,
        /// The partition to move
        #[arg(short, long)]
        partition: Option<i32>,
        /// The new replicas, preferred leader first (broker ids), e.g. 2,3,1
        #[arg(long, value_delimiter = ',', num_args = 1)]
        replicas: Option<Vec<i32>>,
        /// Cancel the partition's move in progress: its replicas go back to
        /// what they were
        #[arg(long, conflicts_with = "replicas")]
        cancel: bool,
        /// A JSON plan: {"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[2,3,1]}]}
        /// ("replicas": null cancels that partition's move)
        #[arg(long, value_name = "FILE", conflicts_with_all = ["topic", "partition", "replicas", "cancel"])]
        plan: Option<std::path::PathBuf>,
        /// Show the moves in progress (replicas, adding, removing) instead
        #[arg(long, conflicts_with_all = ["partition", "replicas", "cancel", "plan", "wait"])]
        status: bool,
        /// Wait until the moves started are done
        #[arg(long)]
        wait: bool,
        /// Longest --wait, in milliseconds
        #[arg(long, default_value_t = 600_000, requires = "wait")]
        timeout_ms: u64,
        #[command(flatten)]
        format: FormatArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Set or remove topic configs
    AlterConfig {
        name: String,
        /// Config to set, e.g. --set retention.ms=60000 (repeatable)
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Config to reset to the broker default (repeatable)
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

fn parse_kv(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => bail!("'{s}' is not KEY=VALUE"),
    }
}

async fn connect(args: &ConnectArgs) -> Result<Client> {
    crate::kafka_client::admin_client(&args.bootstrap).await
}

#[derive(Serialize)]
struct ListedTopic {
    name: String,
    partitions: usize,
    internal: bool,
}

pub async fn run(cmd: TopicCommand) -> Result<()> {
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
            connect: c,
        } => {
            let mut client = connect(&c).await?;
            let mut topic = CreatableTopic::default();
            topic.name = TopicName(StrBytes::from_string(name.clone()));
            topic.num_partitions = partitions.unwrap_or(-1);
            topic.replication_factor = replication_factor.unwrap_or(-1);
            for kv in &configs {
                let (k, v) = parse_kv(kv)?;
                let mut c = CreatableTopicConfig::default();
                c.name = StrBytes::from_string(k);
                c.value = Some(StrBytes::from_string(v));
                topic.configs.push(c);
            }
            let mut request = CreateTopicsRequest::default();
            request.topics = vec![topic];
            request.timeout_ms = 30_000;
            let response = client.send(&request).await?;
            let result = response
                .topics
                .first()
                .context("empty CreateTopics response")?;
            if if_not_exists && result.error_code == ResponseError::TopicAlreadyExists.code() {
                return Ok(());
            }
            check(
                result.error_code,
                result.error_message.as_ref(),
                &format!("cannot create topic '{name}'"),
            )?;
            println!(
                "created topic {name} ({} partitions)",
                result.num_partitions
            );
            Ok(())
        }
        TopicCommand::List {
            internal,
            format,
            connect: c,
        } => {
            let mut client = connect(&c).await?;
            let response = metadata(&mut client, None).await?;
            let mut topics: Vec<_> = response
                .topics
                .iter()
                .filter(|t| {
                    let name = t.name.as_ref().map(|n| n.0.as_str()).unwrap_or_default();
                    internal || !(t.is_internal || runnel_core::broker::is_system_topic(name))
                })
                .map(|t| {
                    let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                    ListedTopic {
                        internal: t.is_internal || runnel_core::broker::is_system_topic(&name),
                        name,
                        partitions: t.partitions.len(),
                    }
                })
                .collect();
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            if topics.is_empty() && format.get() == crate::output::Format::Text {
                eprintln!("no topics");
            }
            emit(format.get(), &topics, || {
                topics
                    .iter()
                    .map(|t| format!("{}\t{} partitions\n", t.name, t.partitions))
                    .collect()
            })
        }
        TopicCommand::Describe {
            name,
            format,
            connect: c,
        } => describe(&c, &name, &format).await,
        TopicCommand::AddPartitions {
            topic,
            num,
            connect: c,
        } => add_partitions(&c, &topic, num).await,
        TopicCommand::TrimPrefix {
            topic,
            partitions,
            offset,
            format,
            connect: c,
        } => trim_prefix(&c, &topic, &partitions, offset, &format).await,
        TopicCommand::Reassign {
            topic,
            partition,
            replicas,
            cancel,
            plan,
            status,
            wait,
            timeout_ms,
            format,
            connect,
        } => {
            crate::reassign::run(crate::reassign::ReassignArgs {
                topic,
                partition,
                replicas,
                cancel,
                plan,
                status,
                wait,
                timeout_ms,
                format: format.get(),
                connect,
            })
            .await
        }
        TopicCommand::Delete {
            names,
            regex,
            if_exists,
            connect: c,
        } => {
            let mut client = connect(&c).await?;
            let all: Vec<String> = cluster_metadata(&mut client)
                .await?
                .topics
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                .collect();
            let names = if regex {
                select_names(&names, true, &all, "topic")?
            } else {
                select_names(&names, false, &all, "topic")?
            };
            let mut request = DeleteTopicsRequest::default();
            let version = client.version_for::<DeleteTopicsRequest>()?;
            let topic_names: Vec<TopicName> = names
                .iter()
                .map(|n| TopicName(StrBytes::from_string(n.clone())))
                .collect();
            if version >= 6 {
                request.topics = topic_names
                    .into_iter()
                    .map(|n| {
                        let mut t = DeleteTopicState::default();
                        t.name = Some(n);
                        t
                    })
                    .collect();
            } else {
                request.topic_names = topic_names;
            }
            request.timeout_ms = 30_000;
            let response = client.send(&request).await?;
            let mut failed = Vec::new();
            for name in &names {
                let Some(result) = response
                    .responses
                    .iter()
                    .find(|r| r.name.as_ref().is_some_and(|n| n.0.as_str() == name))
                else {
                    failed.push(format!("'{name}': no answer"));
                    continue;
                };
                if if_exists && result.error_code == ResponseError::UnknownTopicOrPartition.code() {
                    continue;
                }
                match check(
                    result.error_code,
                    result.error_message.as_ref(),
                    &format!("cannot delete topic '{name}'"),
                ) {
                    Ok(()) => println!("deleted topic {name}"),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            match failed.len() {
                0 => Ok(()),
                1 => bail!("{}", failed[0]),
                _ => bail!("{}", failed.join("; ")),
            }
        }
        TopicCommand::AlterConfig {
            name,
            set,
            delete,
            connect: c,
        } => {
            if set.is_empty() && delete.is_empty() {
                bail!("nothing to change: give --set KEY=VALUE or --delete KEY");
            }
            let mut client = connect(&c).await?;
            let set = set
                .iter()
                .map(|kv| parse_kv(kv))
                .collect::<Result<Vec<_>>>()?;
            let request = alter_configs_request(RESOURCE_TOPIC, &name, &set, &delete);
            let response = client.send(&request).await?;
            let result = response
                .responses
                .first()
                .context("empty IncrementalAlterConfigs response")?;
            check(
                result.error_code,
                result.error_message.as_ref(),
                &format!("cannot alter topic '{name}'"),
            )?;
            println!("updated configs of topic {name}");
            Ok(())
        }
    }
}

async fn metadata(client: &mut Client, topic: Option<&str>) -> Result<MetadataResponse> {
    let mut request = MetadataRequest::default();
    request.topics = topic.map(|name| {
        let mut t = MetadataRequestTopic::default();
        t.name = Some(TopicName(StrBytes::from_string(name.to_string())));
        vec![t]
    });
    request.allow_auto_topic_creation = false;
    Ok(client.send(&request).await?)
}

#[derive(Serialize)]
struct TopicDescription {
    name: String,
    topic_id: String,
    internal: bool,
    partitions: Vec<PartitionDescription>,
    configs: Vec<ConfigEntry>,
}

#[derive(Serialize)]
struct PartitionDescription {
    partition: i32,
    leader: i32,
    start_offset: Option<i64>,
    end_offset: Option<i64>,
    replicas: Vec<i32>,
    isr: Vec<i32>,
}

#[derive(Serialize)]
struct ConfigEntry {
    name: String,
    value: Option<String>,
    /// Set on this topic (not a default).
    set_here: bool,
}

async fn describe(c: &ConnectArgs, name: &str, format: &FormatArgs) -> Result<()> {
    let mut cluster = crate::kafka_client::cluster_client(&c.bootstrap).await?;
    let response = metadata(cluster.bootstrap(), Some(name)).await?;
    let topic = response.topics.first().context("empty Metadata response")?;
    check(
        topic.error_code,
        None,
        &format!("cannot describe topic '{name}'"),
    )?;
    let mut partitions: Vec<_> = topic.partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition_index);
    let tps: Vec<(String, i32)> = partitions
        .iter()
        .map(|p| (name.to_string(), p.partition_index))
        .collect();
    let earliest = cluster.list_offsets(&tps, -2).await?;
    let latest = cluster.list_offsets(&tps, -1).await?;
    let client = cluster.bootstrap();

    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = 2;
    resource.resource_name = StrBytes::from_string(name.to_string());
    resource.configuration_keys = None;
    let mut request = DescribeConfigsRequest::default();
    request.resources = vec![resource];
    let configs = client.send(&request).await?;
    let mut config_entries = Vec::new();
    if let Some(result) = configs.results.first() {
        check(
            result.error_code,
            result.error_message.as_ref(),
            "cannot read topic configs",
        )?;
        for c in &result.configs {
            config_entries.push(ConfigEntry {
                name: c.name.to_string(),
                value: c.value.as_ref().map(|v| v.to_string()),
                set_here: c.config_source == 1,
            });
        }
    }
    let d = TopicDescription {
        name: name.to_string(),
        topic_id: topic.topic_id.to_string(),
        internal: topic.is_internal,
        partitions: partitions
            .iter()
            .map(|p| {
                let tp = (name.to_string(), p.partition_index);
                PartitionDescription {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    start_offset: earliest.get(&tp).copied(),
                    end_offset: latest.get(&tp).copied(),
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                }
            })
            .collect(),
        configs: config_entries,
    };
    emit(format.get(), &d, || render_description(&d))
}

fn render_description(d: &TopicDescription) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "topic:       {}", d.name);
    let _ = writeln!(out, "topic id:    {}", d.topic_id);
    let _ = writeln!(out, "partitions:  {}", d.partitions.len());
    let _ = writeln!(out, "internal:    {}", d.internal);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>9}  {:>6}  {:>12}  {:>12}  {:>8}  isr",
        "partition", "leader", "start offset", "end offset", "replicas"
    );
    let offset = |o: Option<i64>| o.map(|o| o.to_string()).unwrap_or_else(|| "?".into());
    for p in &d.partitions {
        let _ = writeln!(
            out,
            "{:>9}  {:>6}  {:>12}  {:>12}  {:>8}  {:?}",
            p.partition,
            p.leader,
            offset(p.start_offset),
            offset(p.end_offset),
            p.replicas.len(),
            p.isr
        );
    }
    if !d.configs.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "configs (* = set on this topic):");
        for c in &d.configs {
            let marker = if c.set_here { "*" } else { " " };
            let _ = writeln!(
                out,
                "  {marker} {:<32} {}",
                c.name,
                c.value.as_deref().unwrap_or("(null)")
            );
        }
    }
    out
}

/// `topic add-partitions`: CreatePartitions to the current count + `num`.
async fn add_partitions(c: &ConnectArgs, topic: &str, num: i32) -> Result<()> {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::CreatePartitionsRequest;
    if num < 1 {
        bail!("--num must be at least 1");
    }
    let mut client = connect(c).await?;
    let response = metadata(&mut client, Some(topic)).await?;
    let t = response.topics.first().context("empty Metadata response")?;
    check(t.error_code, None, &format!("topic '{topic}'"))?;
    let current = t.partitions.len() as i32;
    let total = current.checked_add(num).context("--num is too large")?;
    let mut ct = CreatePartitionsTopic::default();
    ct.name = TopicName(StrBytes::from_string(topic.to_string()));
    ct.count = total;
    ct.assignments = None;
    let mut request = CreatePartitionsRequest::default();
    request.topics = vec![ct];
    request.timeout_ms = 30_000;
    let response = client.send(&request).await?;
    let result = response
        .results
        .first()
        .context("empty CreatePartitions response")?;
    check(
        result.error_code,
        result.error_message.as_ref(),
        &format!("cannot add partitions to '{topic}'"),
    )?;
    println!("topic {topic}: {current} -> {total} partitions");
    Ok(())
}

#[derive(Serialize)]
struct Trimmed {
    topic: String,
    partition: i32,
    /// The new log start offset.
    low_watermark: i64,
}

/// `topic trim-prefix`: DeleteRecords up to where `spec` points, sent to
/// each partition's leader.
async fn trim_prefix(
    c: &ConnectArgs,
    topic: &str,
    only: &[i32],
    spec: OffsetSpec,
    format: &FormatArgs,
) -> Result<()> {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::DeleteRecordsRequest;
    let mut cluster = crate::kafka_client::cluster_client(&c.bootstrap).await?;
    let response = metadata(cluster.bootstrap(), Some(topic)).await?;
    let t = response.topics.first().context("empty Metadata response")?;
    check(t.error_code, None, &format!("topic '{topic}'"))?;
    let ids: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
    for p in only {
        if !ids.contains(p) {
            bail!("topic '{topic}' has no partition {p}");
        }
    }
    // By leader: DeleteRecords goes to the broker leading the partition.
    let mut by_leader: std::collections::BTreeMap<i32, Vec<i32>> = Default::default();
    for p in &t.partitions {
        if only.is_empty() || only.contains(&p.partition_index) {
            by_leader
                .entry(p.leader_id.0)
                .or_default()
                .push(p.partition_index);
        }
    }
    let mut done = Vec::new();
    for (leader, partitions) in by_leader {
        if leader < 0 {
            bail!("partitions {partitions:?} of '{topic}' have no leader");
        }
        let tps: Vec<(String, i32)> = partitions.iter().map(|p| (topic.to_string(), *p)).collect();
        let targets = resolve_offsets(&mut cluster, &tps, spec).await?;
        let mut dt = DeleteRecordsTopic::default();
        dt.name = TopicName(StrBytes::from_string(topic.to_string()));
        dt.partitions = targets
            .iter()
            .map(|((_, p), o)| {
                let mut dp = DeleteRecordsPartition::default();
                dp.partition_index = *p;
                dp.offset = *o;
                dp
            })
            .collect();
        let mut request = DeleteRecordsRequest::default();
        request.topics = vec![dt];
        request.timeout_ms = 30_000;
        let answer = cluster.broker(leader).await?.send(&request).await?;
        for rt in &answer.topics {
            for rp in &rt.partitions {
                check(
                    rp.error_code,
                    None,
                    &format!("cannot trim {topic}/{}", rp.partition_index),
                )?;
                done.push(Trimmed {
                    topic: topic.to_string(),
                    partition: rp.partition_index,
                    low_watermark: rp.low_watermark,
                });
            }
        }
    }
    done.sort_by_key(|t| t.partition);
    emit(format.get(), &done, || {
        done.iter()
            .map(|t| {
                format!(
                    "{}/{}: log start now {}\n",
                    t.topic, t.partition, t.low_watermark
                )
            })
            .collect()
    })
}
