//! `runnel topic ...`: topic administration over the Kafka protocol, so it
//! works against Runnel, Kafka or Redpanda alike.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, ListOffsetsRequest, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use runnel_core::client::Client;

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
        connect: ConnectArgs,
    },
    /// Show partitions, offsets and configs of a topic
    Describe {
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete a topic and all its data
    Delete {
        name: String,
        /// Succeed if the topic does not exist
        #[arg(long)]
        if_exists: bool,
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
        /// Print JSON
        #[arg(long)]
        json: bool,
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

fn check(code: i16, message: Option<&StrBytes>, what: &str) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    let name = ResponseError::try_from_code(code)
        .map(|e| e.to_string())
        .unwrap_or_default();
    match message {
        Some(m) if !m.is_empty() => bail!("{what}: {m} ({name})"),
        _ => bail!("{what}: {name} (error {code})"),
    }
}

async fn connect(args: &ConnectArgs) -> Result<Client> {
    Client::connect(&args.bootstrap, "runnel-cli")
        .await
        .with_context(|| format!("cannot reach a broker at {}", args.bootstrap))
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
                    (
                        t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                        t.partitions.len(),
                    )
                })
                .collect();
            topics.sort();
            if topics.is_empty() {
                eprintln!("no topics");
            }
            for (name, partitions) in topics {
                println!("{name}\t{partitions} partitions");
            }
            Ok(())
        }
        TopicCommand::Describe { name, connect: c } => describe(&c, &name).await,
        TopicCommand::Reassign {
            topic,
            partition,
            replicas,
            cancel,
            plan,
            status,
            wait,
            timeout_ms,
            json,
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
                json,
                connect,
            })
            .await
        }
        TopicCommand::Delete {
            name,
            if_exists,
            connect: c,
        } => {
            let mut client = connect(&c).await?;
            let mut request = DeleteTopicsRequest::default();
            let version = client.version_for::<DeleteTopicsRequest>()?;
            if version >= 6 {
                let mut t = DeleteTopicState::default();
                t.name = Some(TopicName(StrBytes::from_string(name.clone())));
                request.topics = vec![t];
            } else {
                request.topic_names = vec![TopicName(StrBytes::from_string(name.clone()))];
            }
            request.timeout_ms = 30_000;
            let response = client.send(&request).await?;
            let result = response
                .responses
                .first()
                .context("empty DeleteTopics response")?;
            if if_exists && result.error_code == ResponseError::UnknownTopicOrPartition.code() {
                return Ok(());
            }
            check(
                result.error_code,
                result.error_message.as_ref(),
                &format!("cannot delete topic '{name}'"),
            )?;
            println!("deleted topic {name}");
            Ok(())
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
            let mut resource = AlterConfigsResource::default();
            resource.resource_type = 2;
            resource.resource_name = StrBytes::from_string(name.clone());
            for kv in &set {
                let (k, v) = parse_kv(kv)?;
                let mut c = AlterableConfig::default();
                c.name = StrBytes::from_string(k);
                c.config_operation = 0;
                c.value = Some(StrBytes::from_string(v));
                resource.configs.push(c);
            }
            for k in &delete {
                let mut c = AlterableConfig::default();
                c.name = StrBytes::from_string(k.clone());
                c.config_operation = 1;
                resource.configs.push(c);
            }
            let mut request = IncrementalAlterConfigsRequest::default();
            request.resources = vec![resource];
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

async fn describe(c: &ConnectArgs, name: &str) -> Result<()> {
    let mut client = connect(c).await?;
    let response = metadata(&mut client, Some(name)).await?;
    let topic = response.topics.first().context("empty Metadata response")?;
    check(
        topic.error_code,
        None,
        &format!("cannot describe topic '{name}'"),
    )?;
    let mut partitions: Vec<_> = topic.partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition_index);

    let offsets = |timestamp: i64| {
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_string(name.to_string()));
        t.partitions = partitions
            .iter()
            .map(|p| {
                let mut lp = ListOffsetsPartition::default();
                lp.partition_index = p.partition_index;
                lp.timestamp = timestamp;
                lp.current_leader_epoch = -1;
                lp
            })
            .collect();
        let mut request = ListOffsetsRequest::default();
        request.replica_id = (-1).into();
        request.topics = vec![t];
        request
    };
    let earliest = client.send(&offsets(-2)).await?;
    let latest = client.send(&offsets(-1)).await?;
    let find = |r: &kafka_protocol::messages::ListOffsetsResponse, p: i32| {
        r.topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|x| x.partition_index == p)
            .map(|x| {
                if x.error_code == 0 {
                    x.offset.to_string()
                } else {
                    format!("error {}", x.error_code)
                }
            })
            .unwrap_or_else(|| "?".into())
    };
    println!("topic:       {name}");
    println!("topic id:    {}", topic.topic_id);
    println!("partitions:  {}", partitions.len());
    println!("internal:    {}", topic.is_internal);
    println!();
    println!(
        "{:>9}  {:>6}  {:>12}  {:>12}  {:>8}  isr",
        "partition", "leader", "start offset", "end offset", "replicas"
    );
    for p in &partitions {
        println!(
            "{:>9}  {:>6}  {:>12}  {:>12}  {:>8}  {:?}",
            p.partition_index,
            p.leader_id.0,
            find(&earliest, p.partition_index),
            find(&latest, p.partition_index),
            p.replica_nodes.len(),
            p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>()
        );
    }

    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = 2;
    resource.resource_name = StrBytes::from_string(name.to_string());
    resource.configuration_keys = None;
    let mut request = DescribeConfigsRequest::default();
    request.resources = vec![resource];
    let configs = client.send(&request).await?;
    if let Some(result) = configs.results.first() {
        check(
            result.error_code,
            result.error_message.as_ref(),
            "cannot read topic configs",
        )?;
        println!();
        println!("configs (* = set on this topic):");
        for c in &result.configs {
            let marker = if c.config_source == 1 { "*" } else { " " };
            println!(
                "  {marker} {:<32} {}",
                c.name.as_str(),
                c.value.as_ref().map(|v| v.as_str()).unwrap_or("(null)")
            );
        }
    }
    Ok(())
}
