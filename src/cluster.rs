//! `runnel cluster status`: the cluster as its brokers report it over the
//! Kafka protocol — the cluster id, the controller (the metadata quorum's
//! leader), every broker and whether it answers, and each partition's
//! leader, replicas and in-sync replicas.
//!
//! One Metadata request to the first bootstrap broker that answers gives a
//! single consistent view of the metadata image; every broker it names is
//! then asked for its API versions to see whether it answers itself.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
use kafka_protocol::ResponseError;
use runnel_core::client::Client;
use serde::Serialize;

use crate::ConnectArgs;

/// How long one broker may take to answer before it counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the bootstrap broker may take to answer Metadata.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show the cluster id, the controller, every broker (and whether it
    /// answers) and each partition's leader, replicas and in-sync replicas.
    /// Exits non-zero if no bootstrap broker answers or a broker of the
    /// cluster is not live.
    Status {
        /// JSON and YAML list every topic, internal ones included
        #[command(flatten)]
        format: crate::output::FormatArgs,
        /// List only the partitions that need attention: under-replicated
        /// (fewer in-sync replicas than replicas) or without a leader
        #[arg(long)]
        under_replicated: bool,
        /// List internal topics too (__consumer_offsets, _schemas, ...);
        /// the summary always counts them
        #[arg(long)]
        internal: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// The cluster id, the controller and the brokers
    Info {
        #[command(flatten)]
        format: crate::output::FormatArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Whether the cluster is healthy: every broker answers, every
    /// partition has a leader and its full in-sync replica set. Exits
    /// non-zero when it is not
    Health {
        #[command(flatten)]
        format: crate::output::FormatArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show or change broker configs (DescribeConfigs,
    /// IncrementalAlterConfigs)
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Elect the preferred leader (the first replica) of every partition
    /// where it is live and in sync, and print which leaders moved. Exits
    /// non-zero if a partition's preferred leader cannot lead now
    Rebalance {
        /// Only this topic's partitions
        #[arg(long)]
        topic: Option<String>,
        #[command(flatten)]
        format: crate::output::FormatArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print a broker's configs (all, or one KEY) and where each value
    /// comes from
    Get {
        key: Option<String>,
        /// The broker to ask [default: the first that answers]
        #[arg(long)]
        broker: Option<i32>,
        #[command(flatten)]
        format: crate::output::FormatArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Set dynamic broker configs, for the whole cluster or one --broker;
    /// an empty value (KEY=) removes the setting
    Set {
        #[arg(value_name = "KEY=VALUE", required = true)]
        pairs: Vec<String>,
        /// Only this broker [default: the cluster-wide default]
        #[arg(long)]
        broker: Option<i32>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

pub async fn run(cmd: ClusterCommand) -> Result<()> {
    match cmd {
        ClusterCommand::Info { format, connect } => info(&connect.bootstrap, &format).await,
        ClusterCommand::Health { format, connect } => health(&connect.bootstrap, &format).await,
        ClusterCommand::Config(ConfigCommand::Get {
            key,
            broker,
            format,
            connect,
        }) => config_get(&connect.bootstrap, key.as_deref(), broker, &format).await,
        ClusterCommand::Config(ConfigCommand::Set {
            pairs,
            broker,
            connect,
        }) => config_set(&connect.bootstrap, &pairs, broker).await,
        ClusterCommand::Status {
            format,
            under_replicated,
            internal,
            connect,
        } => {
            let (bootstrap, response) = fetch_metadata(&connect.bootstrap).await?;
            let reachable = probe_brokers(&response).await;
            let mut status = Status::from_metadata(&response, &reachable, bootstrap);
            if under_replicated {
                status.keep_partitions_needing_attention();
            }
            crate::output::emit(format.get(), &status, || {
                status.render(internal || under_replicated)
            })?;
            match status.brokers.iter().find(|b| !b.live) {
                Some(b) => bail!(
                    "broker {} {} is not live: {}",
                    b.id,
                    b.address.as_deref().unwrap_or("(no address)"),
                    b.state
                ),
                None => Ok(()),
            }
        }
        ClusterCommand::Rebalance {
            topic,
            format,
            connect,
        } => rebalance(&connect.bootstrap, topic.as_deref(), format.get()).await,
    }
}

#[derive(Serialize)]
struct Info {
    cluster_id: Option<String>,
    controller_id: i32,
    brokers: Vec<InfoBroker>,
}

#[derive(Serialize)]
struct InfoBroker {
    id: i32,
    address: String,
    rack: Option<String>,
    controller: bool,
}

/// `cluster info`: one Metadata request.
async fn info(bootstrap: &str, format: &crate::output::FormatArgs) -> Result<()> {
    let (_, response) = fetch_metadata(bootstrap).await?;
    let controller_id = response.controller_id.0;
    let mut brokers: Vec<InfoBroker> = response
        .brokers
        .iter()
        .map(|b| InfoBroker {
            id: b.node_id.0,
            address: join_host_port(&b.host, b.port),
            rack: b.rack.as_ref().map(|r| r.to_string()),
            controller: b.node_id.0 == controller_id,
        })
        .collect();
    brokers.sort_by_key(|b| b.id);
    let info = Info {
        cluster_id: response.cluster_id.as_ref().map(|s| s.to_string()),
        controller_id,
        brokers,
    };
    crate::output::emit(format.get(), &info, || {
        let mut out = format!(
            "cluster:     {}\ncontroller:  {}\n\n",
            info.cluster_id.as_deref().unwrap_or("(unknown)"),
            if info.controller_id < 0 {
                "none".to_string()
            } else {
                info.controller_id.to_string()
            }
        );
        let mut rows = vec![["ID", "ADDRESS", "RACK", "CONTROLLER"]
            .map(String::from)
            .to_vec()];
        for b in &info.brokers {
            rows.push(vec![
                b.id.to_string(),
                b.address.clone(),
                b.rack.clone().unwrap_or_else(|| "-".into()),
                if b.controller { "yes" } else { "" }.to_string(),
            ]);
        }
        out.push_str(&crate::output::table(&rows));
        out
    })
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Health {
    pub healthy: bool,
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    /// Brokers that do not answer, or that replicas name but the metadata
    /// does not list as live.
    pub down_brokers: Vec<i32>,
    /// topic/partition of the partitions without a leader.
    pub leaderless_partitions: Vec<String>,
    /// topic/partition of the partitions with fewer in-sync replicas than
    /// replicas.
    pub under_replicated_partitions: Vec<String>,
}

impl Health {
    pub fn of(status: &Status) -> Health {
        let named = |pick: fn(&PartitionStatus) -> bool| -> Vec<String> {
            status
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .filter(move |p| pick(p))
                        .map(move |p| format!("{}/{}", t.name, p.partition))
                })
                .collect()
        };
        let down_brokers: Vec<i32> = status
            .brokers
            .iter()
            .filter(|b| !b.live)
            .map(|b| b.id)
            .collect();
        let leaderless_partitions = named(|p| p.without_leader);
        let under_replicated_partitions = named(|p| p.under_replicated);
        Health {
            healthy: down_brokers.is_empty()
                && leaderless_partitions.is_empty()
                && under_replicated_partitions.is_empty()
                && status.controller_id >= 0,
            cluster_id: status.cluster_id.clone(),
            controller_id: status.controller_id,
            down_brokers,
            leaderless_partitions,
            under_replicated_partitions,
        }
    }
}

/// `cluster health`: `cluster status`'s view, reduced to what is wrong.
async fn health(bootstrap: &str, format: &crate::output::FormatArgs) -> Result<()> {
    let (addr, response) = fetch_metadata(bootstrap).await?;
    let reachable = probe_brokers(&response).await;
    let status = Status::from_metadata(&response, &reachable, addr);
    let health = Health::of(&status);
    crate::output::emit(format.get(), &health, || {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(" ")
            }
        };
        let mut out = format!(
            "healthy:                      {}\n",
            if health.healthy {
                "yes".to_string()
            } else {
                crate::output::alert("no")
            }
        );
        out.push_str(&format!(
            "controller:                   {}\n",
            if health.controller_id < 0 {
                "none".to_string()
            } else {
                health.controller_id.to_string()
            }
        ));
        out.push_str(&format!(
            "down brokers:                 {}\n",
            list(
                &health
                    .down_brokers
                    .iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
            )
        ));
        out.push_str(&format!(
            "leaderless partitions:        {}\n",
            list(&health.leaderless_partitions)
        ));
        out.push_str(&format!(
            "under-replicated partitions:  {}\n",
            list(&health.under_replicated_partitions)
        ));
        out
    })?;
    if !health.healthy {
        bail!(
            "the cluster is not healthy: {} broker(s) down, {} partition(s) without a leader, {} under-replicated",
            health.down_brokers.len(),
            health.leaderless_partitions.len(),
            health.under_replicated_partitions.len()
        );
    }
    Ok(())
}

#[derive(Serialize)]
struct BrokerConfig {
    name: String,
    value: Option<String>,
    source: &'static str,
    read_only: bool,
    sensitive: bool,
}

fn config_source(source: i8) -> &'static str {
    match source {
        1 => "topic",
        2 => "dynamic broker",
        3 => "dynamic cluster default",
        4 => "static broker",
        5 => "default",
        6 => "dynamic broker logger",
        8 => "group",
        _ => "unknown",
    }
}

/// The broker to ask: `broker`, else the one that answered.
async fn broker_client(bootstrap: &str, broker: Option<i32>) -> Result<(Client, i32)> {
    let (addr, response) = fetch_metadata(bootstrap).await?;
    let (id, addr) = match broker {
        Some(id) => {
            let b = response
                .brokers
                .iter()
                .find(|b| b.node_id.0 == id)
                .with_context(|| format!("broker {id} is not in the cluster's metadata"))?;
            (id, join_host_port(&b.host, b.port))
        }
        None => {
            let id = response
                .brokers
                .iter()
                .find(|b| join_host_port(&b.host, b.port) == addr)
                .or(response.brokers.first())
                .map(|b| b.node_id.0)
                .context("the metadata names no broker")?;
            (id, addr)
        }
    };
    let mut client = Client::connect(&addr, "runnel-cli")
        .await
        .with_context(|| format!("cannot reach broker {id} at {addr}"))?;
    client.set_timeout(REQUEST_TIMEOUT);
    Ok((client, id))
}

async fn config_get(
    bootstrap: &str,
    key: Option<&str>,
    broker: Option<i32>,
    format: &crate::output::FormatArgs,
) -> Result<()> {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::DescribeConfigsRequest;
    use kafka_protocol::protocol::StrBytes;
    let (mut client, id) = broker_client(bootstrap, broker).await?;
    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = 4;
    resource.resource_name = StrBytes::from_string(id.to_string());
    resource.configuration_keys = key.map(|k| vec![StrBytes::from_string(k.to_string())]);
    let mut request = DescribeConfigsRequest::default();
    request.resources = vec![resource];
    let response = client.send(&request).await?;
    let result = response
        .results
        .first()
        .context("empty DescribeConfigs response")?;
    crate::kafka_client::check(
        result.error_code,
        result.error_message.as_ref(),
        &format!("cannot read the configs of broker {id}"),
    )?;
    let mut configs: Vec<BrokerConfig> = result
        .configs
        .iter()
        .map(|c| BrokerConfig {
            name: c.name.to_string(),
            value: c.value.as_ref().map(|v| v.to_string()),
            source: config_source(c.config_source),
            read_only: c.read_only,
            sensitive: c.is_sensitive,
        })
        .collect();
    configs.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(k) = key {
        if configs.is_empty() {
            bail!("broker {id} has no config '{k}'");
        }
    }
    crate::output::emit(format.get(), &configs, || {
        if let (Some(_), [c]) = (key, configs.as_slice()) {
            return format!("{}\n", c.value.as_deref().unwrap_or("(null)"));
        }
        let mut rows = vec![["KEY", "VALUE", "SOURCE"].map(String::from).to_vec()];
        for c in &configs {
            rows.push(vec![
                c.name.clone(),
                c.value.clone().unwrap_or_else(|| "(null)".into()),
                format!(
                    "{}{}",
                    c.source,
                    if c.read_only { ", read-only" } else { "" }
                ),
            ]);
        }
        crate::output::table(&rows)
    })
}

async fn config_set(bootstrap: &str, pairs: &[String], broker: Option<i32>) -> Result<()> {
    use runnel_core::client::{alter_configs_request, RESOURCE_BROKER};
    let (mut client, _) = broker_client(bootstrap, broker).await?;
    // KEY=VALUE sets a key, KEY= deletes it (back to the default).
    let (mut set, mut delete) = (Vec::new(), Vec::new());
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
            bail!("'{pair}' is not KEY=VALUE");
        };
        let k = k.trim().to_string();
        if v.is_empty() {
            delete.push(k);
        } else {
            set.push((k, v.to_string()));
        }
    }
    // "" is the cluster-wide default; an id is that broker alone.
    let name = broker.map(|b| b.to_string()).unwrap_or_default();
    let request = alter_configs_request(RESOURCE_BROKER, &name, &set, &delete);
    let response = client.send(&request).await?;
    let result = response
        .responses
        .first()
        .context("empty IncrementalAlterConfigs response")?;
    crate::kafka_client::check(
        result.error_code,
        result.error_message.as_ref(),
        "cannot change broker configs",
    )?;
    let scope = broker
        .map(|b| format!("broker {b}"))
        .unwrap_or_else(|| "the cluster".into());
    println!("updated {} config(s) of {scope}", pairs.len());
    Ok(())
}

/// A partition whose leader moved to its preferred replica.
#[derive(Serialize, Debug, PartialEq)]
pub struct Moved {
    pub topic: String,
    pub partition: i32,
    pub from: i32,
    pub to: i32,
}

/// A partition whose preferred replica could not become its leader.
#[derive(Serialize, Debug, PartialEq)]
pub struct NotMoved {
    pub topic: String,
    pub partition: i32,
    pub preferred: i32,
    pub error: String,
}

#[derive(Serialize, Debug, Default)]
pub struct Rebalanced {
    pub moved: Vec<Moved>,
    pub not_moved: Vec<NotMoved>,
}

impl Rebalanced {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for m in &self.moved {
            let _ = writeln!(
                out,
                "{}-{}: leader {} -> {}",
                m.topic, m.partition, m.from, m.to
            );
        }
        for n in &self.not_moved {
            let _ = writeln!(
                out,
                "{}-{}: not moved to {}: {}",
                n.topic, n.partition, n.preferred, n.error
            );
        }
        if self.moved.is_empty() && self.not_moved.is_empty() {
            out.push_str("every partition is led by its preferred replica\n");
        } else {
            let _ = writeln!(
                out,
                "{} partition leader(s) moved to the preferred replica",
                self.moved.len()
            );
        }
        out
    }
}

/// Leader and replicas of every partition a Metadata response lists.
fn assignments(response: &MetadataResponse) -> BTreeMap<(String, i32), (i32, Vec<i32>)> {
    response
        .topics
        .iter()
        .flat_map(|t| {
            let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            t.partitions.iter().map(move |p| {
                (
                    (name.clone(), p.partition_index),
                    (p.leader_id.0, p.replica_nodes.iter().map(|b| b.0).collect()),
                )
            })
        })
        .collect()
}

/// `runnel cluster rebalance`: one ElectLeaders (preferred) for every
/// partition (or one topic's), then the leaders before and after.
async fn rebalance(
    bootstrap: &str,
    topic: Option<&str>,
    format: crate::output::Format,
) -> Result<()> {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::{ElectLeadersRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let (addr, before) = fetch_metadata(bootstrap).await?;
    let before = assignments(&before);
    let mut request = ElectLeadersRequest::default();
    request.election_type = 0;
    request.timeout_ms = 60_000;
    if let Some(topic) = topic {
        let partitions: Vec<i32> = before
            .keys()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| *p)
            .collect();
        if partitions.is_empty() {
            bail!("topic '{topic}' does not exist");
        }
        let mut t = TopicPartitions::default();
        t.topic = TopicName(StrBytes::from_string(topic.to_string()));
        t.partitions = partitions;
        request.topic_partitions = Some(vec![t]);
    } else {
        // Every partition; the answer leaves out those already balanced.
        request.topic_partitions = None;
    }
    let mut client = Client::connect(&addr, "runnel-cli")
        .await
        .with_context(|| format!("cannot reach a broker at {addr}"))?;
    client.set_timeout(Duration::from_secs(70));
    let response = client.send(&request).await?;
    if let Some(e) = error_name(response.error_code) {
        bail!("the election was refused: {e}");
    }
    let mut report = Rebalanced::default();
    let mut elected = Vec::new();
    for t in &response.replica_election_results {
        let name = t.topic.0.to_string();
        for p in &t.partition_result {
            if p.error_code == ResponseError::ElectionNotNeeded.code() {
                continue;
            }
            let (from, replicas) = before
                .get(&(name.clone(), p.partition_id))
                .cloned()
                .unwrap_or((-1, Vec::new()));
            if p.error_code == 0 {
                elected.push((name.clone(), p.partition_id, from));
            } else {
                let code = error_name(p.error_code).unwrap_or_default();
                report.not_moved.push(NotMoved {
                    topic: name.clone(),
                    partition: p.partition_id,
                    preferred: replicas.first().copied().unwrap_or(-1),
                    error: match p.error_message.as_ref().filter(|m| !m.is_empty()) {
                        Some(m) => format!("{m} ({code})"),
                        None => code,
                    },
                });
            }
        }
    }
    if !elected.is_empty() {
        // The broker answered once it applied the elections itself.
        let after = {
            let mut request = MetadataRequest::default();
            request.topics = None;
            request.allow_auto_topic_creation = false;
            assignments(&client.send(&request).await?)
        };
        for (topic, partition, from) in elected {
            let to = after
                .get(&(topic.clone(), partition))
                .map_or(-1, |(leader, _)| *leader);
            report.moved.push(Moved {
                topic,
                partition,
                from,
                to,
            });
        }
    }
    report
        .moved
        .sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    report
        .not_moved
        .sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    crate::output::emit(format, &report, || report.render())?;
    if !report.not_moved.is_empty() {
        bail!(
            "{} partition(s) could not be led by their preferred replica",
            report.not_moved.len()
        );
    }
    Ok(())
}

/// Asks the bootstrap brokers in order for the whole cluster's metadata;
/// returns the address that answered and its answer.
async fn fetch_metadata(bootstrap: &str) -> Result<(String, MetadataResponse)> {
    let addrs: Vec<&str> = bootstrap
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if addrs.is_empty() {
        bail!("--bootstrap names no broker");
    }
    let mut last_error = None;
    for addr in &addrs {
        let attempt = async {
            let mut client = Client::connect(addr, "runnel-cli").await?;
            client.set_timeout(REQUEST_TIMEOUT);
            let mut request = MetadataRequest::default();
            // All topics; never create one.
            request.topics = None;
            request.allow_auto_topic_creation = false;
            anyhow::Ok(client.send(&request).await?)
        };
        match attempt.await {
            Ok(response) => return Ok((addr.to_string(), response)),
            Err(e) => last_error = Some(e),
        }
    }
    let e = last_error.unwrap_or_else(|| anyhow!("no address"));
    Err(e).with_context(|| format!("cannot reach a broker at {}", addrs.join(",")))
}

/// Whether each broker of the Metadata response answers an ApiVersions
/// request of its own within `PROBE_TIMEOUT` (all asked at once).
async fn probe_brokers(response: &MetadataResponse) -> BTreeMap<i32, bool> {
    let probes = response.brokers.iter().map(|b| {
        let id = b.node_id.0;
        let addr = join_host_port(&b.host, b.port);
        async move {
            let answered =
                tokio::time::timeout(PROBE_TIMEOUT, Client::connect(&addr, "runnel-cli"))
                    .await
                    .is_ok_and(|r| r.is_ok());
            (id, answered)
        }
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .collect()
}

fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[derive(Serialize, Debug)]
pub struct Status {
    pub cluster_id: Option<String>,
    /// The metadata quorum's leader (-1: none known).
    pub controller_id: i32,
    /// The bootstrap address whose broker answered.
    pub answered_by: String,
    pub brokers: Vec<BrokerStatus>,
    pub topics: Vec<TopicStatus>,
    pub summary: Summary,
}

#[derive(Serialize, Debug)]
pub struct BrokerStatus {
    pub id: i32,
    /// host:port clients are given (none for a broker the metadata only
    /// names as a replica).
    pub address: Option<String>,
    /// Listed among the live brokers of the metadata image.
    pub in_metadata: bool,
    /// Answered a request of its own.
    pub reachable: bool,
    pub live: bool,
    /// "live", "unreachable" or "offline" (a replica holder the metadata
    /// does not list as live).
    pub state: &'static str,
    pub controller: bool,
}

#[derive(Serialize, Debug)]
pub struct TopicStatus {
    pub name: String,
    pub internal: bool,
    /// The topic's error, if the broker reported one.
    pub error: Option<String>,
    pub partitions: Vec<PartitionStatus>,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct PartitionStatus {
    pub partition: i32,
    /// -1: no leader.
    pub leader: i32,
    /// -1: not reported (Metadata before v7).
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    /// Fewer in-sync replicas than replicas.
    pub under_replicated: bool,
    /// Leader -1 or LEADER_NOT_AVAILABLE.
    pub without_leader: bool,
    pub error: Option<String>,
}

impl PartitionStatus {
    fn needs_attention(&self) -> bool {
        self.under_replicated || self.without_leader
    }
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Summary {
    pub brokers: usize,
    pub live_brokers: usize,
    /// Every topic, internal ones included.
    pub topics: usize,
    pub partitions: usize,
    pub under_replicated_partitions: usize,
    pub partitions_without_leader: usize,
}

fn error_name(code: i16) -> Option<String> {
    (code != 0).then(|| match ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?}"),
        None => format!("error {code}"),
    })
}

impl Status {
    /// The status a Metadata response and the brokers' probes describe.
    pub fn from_metadata(
        response: &MetadataResponse,
        reachable: &BTreeMap<i32, bool>,
        answered_by: String,
    ) -> Status {
        let controller_id = response.controller_id.0;
        let mut topics: Vec<TopicStatus> = response
            .topics
            .iter()
            .map(|t| {
                let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                let mut partitions: Vec<PartitionStatus> = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let ids = |l: &[kafka_protocol::messages::BrokerId]| {
                            l.iter().map(|b| b.0).collect::<Vec<i32>>()
                        };
                        let replicas = ids(&p.replica_nodes);
                        let isr = ids(&p.isr_nodes);
                        PartitionStatus {
                            partition: p.partition_index,
                            leader: p.leader_id.0,
                            leader_epoch: p.leader_epoch,
                            under_replicated: isr.len() < replicas.len(),
                            without_leader: p.leader_id.0 < 0
                                || p.error_code == ResponseError::LeaderNotAvailable.code(),
                            replicas,
                            isr,
                            offline_replicas: ids(&p.offline_replicas),
                            error: error_name(p.error_code),
                        }
                    })
                    .collect();
                partitions.sort_by_key(|p| p.partition);
                TopicStatus {
                    internal: t.is_internal || runnel_core::broker::is_system_topic(&name),
                    name,
                    error: error_name(t.error_code),
                    partitions,
                }
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));

        // The live brokers, and any broker a partition names that is not
        // among them (fenced, or never registered).
        let listed: BTreeMap<i32, String> = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, join_host_port(&b.host, b.port)))
            .collect();
        let named: BTreeSet<i32> = topics
            .iter()
            .flat_map(|t| &t.partitions)
            .flat_map(|p| p.replicas.iter().chain(&p.isr).copied())
            .filter(|&id| id >= 0)
            .collect();
        let ids: BTreeSet<i32> = listed.keys().copied().chain(named).collect();
        let brokers: Vec<BrokerStatus> = ids
            .into_iter()
            .map(|id| {
                let in_metadata = listed.contains_key(&id);
                let reachable = reachable.get(&id).copied().unwrap_or(false);
                let state = match (in_metadata, reachable) {
                    (true, true) => "live",
                    (true, false) => "unreachable",
                    (false, _) => "offline",
                };
                BrokerStatus {
                    id,
                    address: listed.get(&id).cloned(),
                    in_metadata,
                    reachable,
                    live: in_metadata && reachable,
                    state,
                    controller: id == controller_id,
                }
            })
            .collect();
        let all = || topics.iter().flat_map(|t| &t.partitions);
        let summary = Summary {
            brokers: brokers.len(),
            live_brokers: brokers.iter().filter(|b| b.live).count(),
            topics: topics.len(),
            partitions: all().count(),
            under_replicated_partitions: all().filter(|p| p.under_replicated).count(),
            partitions_without_leader: all().filter(|p| p.without_leader).count(),
        };
        Status {
            cluster_id: response.cluster_id.as_ref().map(|s| s.to_string()),
            controller_id,
            answered_by,
            brokers,
            topics,
            summary,
        }
    }

    /// Drops every partition that is fully replicated and led, and the
    /// topics left without partitions (the summary still counts them all).
    pub fn keep_partitions_needing_attention(&mut self) {
        for t in &mut self.topics {
            t.partitions.retain(PartitionStatus::needs_attention);
        }
        self.topics
            .retain(|t| !t.partitions.is_empty() || t.error.is_some());
    }

    /// The human-readable report: cluster, brokers, partitions (internal
    /// topics only if `internal`), summary.
    pub fn render(&self, internal: bool) -> String {
        let mut out = String::new();
        let controller = if self.controller_id < 0 {
            "none".to_string()
        } else {
            self.controller_id.to_string()
        };
        let _ = writeln!(
            out,
            "cluster {}, controller {controller}",
            self.cluster_id.as_deref().unwrap_or("(unknown)")
        );
        out.push('\n');
        let mut rows = vec![vec![
            "BROKER".to_string(),
            "ADDRESS".to_string(),
            "STATE".to_string(),
            "CONTROLLER".to_string(),
        ]];
        for b in &self.brokers {
            rows.push(vec![
                b.id.to_string(),
                b.address.clone().unwrap_or_else(|| "-".into()),
                b.state.to_string(),
                if b.controller { "yes" } else { "" }.to_string(),
            ]);
        }
        out.push_str(&crate::output::table(&rows));

        let shown: Vec<&TopicStatus> = self
            .topics
            .iter()
            .filter(|t| internal || !t.internal)
            .collect();
        let list = |l: &[i32]| {
            if l.is_empty() {
                "-".to_string()
            } else {
                l.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
            }
        };
        let mut rows = vec![[
            "TOPIC",
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "OFFLINE",
            "STATUS",
        ]
        .map(String::from)
        .to_vec()];
        for t in &shown {
            if let Some(e) = &t.error {
                rows.push(vec![
                    t.name.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    e.clone(),
                ]);
            }
            for p in &t.partitions {
                let mut notes = Vec::new();
                if p.without_leader {
                    notes.push("no leader");
                }
                if p.under_replicated {
                    notes.push("under-replicated");
                }
                rows.push(vec![
                    t.name.clone(),
                    p.partition.to_string(),
                    if p.leader < 0 {
                        "none".into()
                    } else {
                        p.leader.to_string()
                    },
                    if p.leader_epoch < 0 {
                        "-".into()
                    } else {
                        p.leader_epoch.to_string()
                    },
                    list(&p.replicas),
                    list(&p.isr),
                    list(&p.offline_replicas),
                    if notes.is_empty() {
                        "ok".into()
                    } else {
                        notes.join(", ")
                    },
                ]);
            }
        }
        out.push('\n');
        if rows.len() > 1 {
            out.push_str(&crate::output::table(&rows));
        } else {
            out.push_str("no partition to list\n");
        }
        let hidden: Vec<&str> = self
            .topics
            .iter()
            .filter(|t| !internal && t.internal)
            .map(|t| t.name.as_str())
            .collect();
        if !hidden.is_empty() {
            let _ = writeln!(
                out,
                "({} internal topics not listed; --internal lists them)",
                hidden.len()
            );
        }
        let s = &self.summary;
        out.push('\n');
        let _ = writeln!(
            out,
            "{} brokers ({} live); {} partitions in {} topics, {} under-replicated, {} without a leader",
            s.brokers,
            s.live_brokers,
            s.partitions,
            s.topics,
            s.under_replicated_partitions,
            s.partitions_without_leader
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::{BrokerId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn partition(
        index: i32,
        leader: i32,
        replicas: &[i32],
        isr: &[i32],
    ) -> MetadataResponsePartition {
        let ids = |l: &[i32]| l.iter().map(|&b| BrokerId(b)).collect::<Vec<_>>();
        let mut p = MetadataResponsePartition::default();
        p.partition_index = index;
        p.leader_id = BrokerId(leader);
        p.leader_epoch = 4;
        p.replica_nodes = ids(replicas);
        p.isr_nodes = ids(isr);
        if leader < 0 {
            p.error_code = ResponseError::LeaderNotAvailable.code();
        }
        p
    }

    fn topic(
        name: &str,
        internal: bool,
        partitions: Vec<MetadataResponsePartition>,
    ) -> MetadataResponseTopic {
        let mut t = MetadataResponseTopic::default();
        t.name = Some(TopicName(StrBytes::from_string(name.into())));
        t.is_internal = internal;
        t.partitions = partitions;
        t
    }

    /// Brokers 1 and 2 listed (2 does not answer), 3 only named as a
    /// replica; one healthy partition, one under-replicated, one leaderless.
    fn response() -> MetadataResponse {
        let mut r = MetadataResponse::default();
        r.cluster_id = Some(StrBytes::from_static_str("c1"));
        r.controller_id = BrokerId(2);
        r.brokers = [1, 2]
            .map(|id| {
                let mut b = MetadataResponseBroker::default();
                b.node_id = BrokerId(id);
                b.host = StrBytes::from_static_str("127.0.0.1");
                b.port = 9091 + id;
                b
            })
            .to_vec();
        r.topics = vec![
            topic(
                "orders",
                false,
                vec![
                    partition(1, 2, &[2, 3], &[2]),
                    partition(0, 1, &[1, 2], &[1, 2]),
                    partition(2, -1, &[3], &[3]),
                ],
            ),
            topic(
                "__consumer_offsets",
                true,
                vec![partition(0, 1, &[1], &[1])],
            ),
        ];
        r
    }

    fn status() -> Status {
        let reachable = BTreeMap::from([(1, true), (2, false)]);
        Status::from_metadata(&response(), &reachable, "127.0.0.1:9092".into())
    }

    #[test]
    fn brokers_are_live_only_when_listed_and_answering_and_replica_holders_not_listed_are_offline()
    {
        let s = status();
        let states: Vec<(i32, &str, bool, bool)> = s
            .brokers
            .iter()
            .map(|b| (b.id, b.state, b.live, b.controller))
            .collect();
        assert_eq!(
            states,
            vec![
                (1, "live", true, false),
                (2, "unreachable", false, true),
                (3, "offline", false, false)
            ]
        );
        assert_eq!(s.brokers[0].address.as_deref(), Some("127.0.0.1:9092"));
        assert_eq!(s.brokers[2].address, None);
    }

    #[test]
    fn the_summary_counts_every_partition_under_replicated_and_leaderless_ones() {
        assert_eq!(
            status().summary,
            Summary {
                brokers: 3,
                live_brokers: 1,
                topics: 2,
                partitions: 4,
                under_replicated_partitions: 1,
                partitions_without_leader: 1,
            }
        );
    }

    #[test]
    fn under_replicated_keeps_only_partitions_needing_attention() {
        let mut s = status();
        s.keep_partitions_needing_attention();
        let left: Vec<(&str, i32)> = s
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.name.as_str(), p.partition))
            })
            .collect();
        assert_eq!(left, vec![("orders", 1), ("orders", 2)]);
        assert_eq!(s.summary.partitions, 4, "the summary still counts all");
    }

    #[test]
    fn the_table_lists_partitions_in_order_and_hides_internal_topics_unless_asked() {
        let text = status().render(false);
        assert!(text.starts_with("cluster c1, controller 2\n"), "{text}");
        let rows: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| l.starts_with("orders") || l.starts_with("__consumer_offsets"))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            vec![
                vec!["orders", "0", "1", "4", "1,2", "1,2", "-", "ok"],
                vec!["orders", "1", "2", "4", "2,3", "2", "-", "under-replicated"],
                vec!["orders", "2", "none", "4", "3", "3", "-", "no", "leader"],
            ]
        );
        assert!(text.contains("(1 internal topics not listed"), "{text}");
        assert!(text.contains(
            "3 brokers (1 live); 4 partitions in 2 topics, 1 under-replicated, 1 without a leader"
        ));
        assert!(status().render(true).contains("\n__consumer_offsets  0"));
    }

    #[test]
    fn health_lists_down_brokers_leaderless_and_under_replicated_partitions() {
        let h = Health::of(&status());
        assert!(!h.healthy);
        assert_eq!(h.down_brokers, vec![2, 3]);
        assert_eq!(h.leaderless_partitions, vec!["orders/2".to_string()]);
        assert_eq!(h.under_replicated_partitions, vec!["orders/1".to_string()]);

        let all_live = BTreeMap::from([(1, true), (2, true)]);
        let mut healthy = response();
        healthy.topics = vec![topic(
            "orders",
            false,
            vec![partition(0, 1, &[1, 2], &[1, 2])],
        )];
        let h = Health::of(&Status::from_metadata(&healthy, &all_live, "a".into()));
        assert!(h.healthy, "{h:?}");
    }
}
