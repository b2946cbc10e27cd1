//! `runnel group ...`: inspect and manage consumer groups over the Kafka
//! protocol.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Subcommand;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::ResponseError;
use runnel_core::client::Client;

use crate::ConnectArgs;

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups and their states
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show members, assignments, committed offsets and lag
    Describe {
        group: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Move a group's committed offsets (the group must have no active members)
    ResetOffsets {
        group: String,
        /// Topic whose offsets to reset (all its partitions)
        #[arg(long)]
        topic: String,
        /// Reset to the earliest offset
        #[arg(long, group = "target")]
        to_earliest: bool,
        /// Reset to the latest offset (skip everything)
        #[arg(long, group = "target")]
        to_latest: bool,
        /// Reset to this offset
        #[arg(long, group = "target")]
        to_offset: Option<i64>,
        /// Move committed offsets by N (negative: back)
        #[arg(long, group = "target", allow_negative_numbers = true)]
        shift_by: Option<i64>,
        /// Reset to the first offset at or after this time (ms since epoch)
        #[arg(long, group = "target")]
        to_timestamp: Option<i64>,
        /// Apply the change (without it, only the plan is printed)
        #[arg(long)]
        execute: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete a group with no active members and its committed offsets
    Delete {
        group: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

fn error_name(code: i16) -> String {
    ResponseError::try_from_code(code)
        .map(|e| e.to_string())
        .unwrap_or_else(|| "NONE".into())
}

async fn connect(args: &ConnectArgs) -> Result<Client> {
    Client::connect(&args.bootstrap, "runnel-cli")
        .await
        .with_context(|| format!("cannot reach a broker at {}", args.bootstrap))
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Partitions of a consumer-protocol assignment (version in the first
/// two bytes).
fn decode_assignment(raw: &Bytes) -> Vec<(String, i32)> {
    if raw.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([raw[0], raw[1]]).clamp(0, 3);
    let mut buf = raw.slice(2..);
    match ConsumerProtocolAssignment::decode(&mut buf, version) {
        Ok(a) => a
            .assigned_partitions
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.topic.0.to_string(), *p))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

async fn committed(client: &mut Client, group: &str) -> Result<BTreeMap<(String, i32), i64>> {
    let mut request = OffsetFetchRequest::default();
    let version = client.version_for::<OffsetFetchRequest>()?;
    let mut out = BTreeMap::new();
    if version >= 8 {
        let mut g =
            kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup::default();
        g.group_id = GroupId(s(group));
        g.topics = None;
        request.groups = vec![g];
        let response = client.send(&request).await?;
        for g in response.groups {
            if g.error_code != 0 {
                bail!(
                    "cannot read offsets of group '{group}': {}",
                    error_name(g.error_code)
                );
            }
            for t in g.topics {
                for p in t.partitions {
                    out.insert(
                        (t.name.0.to_string(), p.partition_index),
                        p.committed_offset,
                    );
                }
            }
        }
    } else {
        request.group_id = GroupId(s(group));
        request.topics = None;
        let response = client.send(&request).await?;
        if response.error_code != 0 {
            bail!(
                "cannot read offsets of group '{group}': {}",
                error_name(response.error_code)
            );
        }
        for t in response.topics {
            for p in t.partitions {
                out.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    Ok(out)
}

/// ListOffsets for every given partition at `timestamp` (-1 latest, -2 earliest).
async fn list_offsets(
    client: &mut Client,
    partitions: &[(String, i32)],
    timestamp: i64,
) -> Result<BTreeMap<(String, i32), i64>> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    let mut request = ListOffsetsRequest::default();
    request.replica_id = (-1).into();
    request.topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            let mut lt = ListOffsetsTopic::default();
            lt.name = TopicName(s(t));
            lt.partitions = ps
                .into_iter()
                .map(|p| {
                    let mut lp = ListOffsetsPartition::default();
                    lp.partition_index = p;
                    lp.timestamp = timestamp;
                    lp.current_leader_epoch = -1;
                    lp
                })
                .collect();
            lt
        })
        .collect();
    let response = client.send(&request).await?;
    let mut out = BTreeMap::new();
    for t in response.topics {
        for p in t.partitions {
            if p.error_code == 0 {
                out.insert((t.name.0.to_string(), p.partition_index), p.offset);
            }
        }
    }
    Ok(out)
}

pub async fn run(cmd: GroupCommand) -> Result<()> {
    match cmd {
        GroupCommand::List { connect: c } => {
            let mut client = connect(&c).await?;
            let response = client.send(&ListGroupsRequest::default()).await?;
            if response.error_code != 0 {
                bail!("cannot list groups: {}", error_name(response.error_code));
            }
            let mut groups: Vec<_> = response
                .groups
                .iter()
                .map(|g| {
                    (
                        g.group_id.0.to_string(),
                        g.group_state.to_string(),
                        g.protocol_type.to_string(),
                    )
                })
                .collect();
            groups.sort();
            if groups.is_empty() {
                eprintln!("no groups");
            }
            for (id, state, ptype) in groups {
                let ptype = if ptype.is_empty() {
                    "-".to_string()
                } else {
                    ptype
                };
                println!("{id}\t{state}\t{ptype}");
            }
            Ok(())
        }
        GroupCommand::Describe { group, connect: c } => describe(&c, &group).await,
        GroupCommand::Delete { group, connect: c } => {
            let mut client = connect(&c).await?;
            let mut request = DeleteGroupsRequest::default();
            request.groups_names = vec![GroupId(s(&group))];
            let response = client.send(&request).await?;
            let code = response
                .results
                .first()
                .map(|r| r.error_code)
                .context("empty DeleteGroups response")?;
            match ResponseError::try_from_code(code) {
                None => {
                    println!("deleted group {group}");
                    Ok(())
                }
                Some(ResponseError::NonEmptyGroup) => {
                    bail!("group '{group}' has active members; stop them first")
                }
                Some(ResponseError::GroupIdNotFound) => bail!("group '{group}' does not exist"),
                Some(e) => bail!("cannot delete group '{group}': {e}"),
            }
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            shift_by,
            to_timestamp,
            execute,
            connect: c,
        } => {
            let mut client = connect(&c).await?;
            let mut request = MetadataRequest::default();
            let mut t = MetadataRequestTopic::default();
            t.name = Some(TopicName(s(&topic)));
            request.topics = Some(vec![t]);
            request.allow_auto_topic_creation = false;
            let metadata = client.send(&request).await?;
            let mt = metadata.topics.first().context("empty Metadata response")?;
            if mt.error_code != 0 {
                bail!("topic '{topic}': {}", error_name(mt.error_code));
            }
            let partitions: Vec<(String, i32)> = mt
                .partitions
                .iter()
                .map(|p| (topic.clone(), p.partition_index))
                .collect();
            let earliest = list_offsets(&mut client, &partitions, -2).await?;
            let latest = list_offsets(&mut client, &partitions, -1).await?;
            let current = committed(&mut client, &group).await?;
            let mut plan = Vec::new();
            for tp in &partitions {
                let (lo, hi) = (
                    earliest.get(tp).copied().unwrap_or(0),
                    latest.get(tp).copied().unwrap_or(0),
                );
                let target = if to_earliest {
                    lo
                } else if to_latest {
                    hi
                } else if let Some(o) = to_offset {
                    o
                } else if let Some(delta) = shift_by {
                    current.get(tp).copied().filter(|o| *o >= 0).unwrap_or(lo) + delta
                } else if let Some(ts) = to_timestamp {
                    let by_time = list_offsets(&mut client, std::slice::from_ref(tp), ts).await?;
                    by_time.get(tp).copied().filter(|o| *o >= 0).unwrap_or(hi)
                } else {
                    bail!("say where to: --to-earliest, --to-latest, --to-offset, --shift-by or --to-timestamp");
                };
                plan.push((tp.clone(), target.clamp(lo, hi)));
            }
            println!("{:<30} {:>9} {:>12}", "topic", "partition", "new offset");
            for ((t, p), o) in &plan {
                println!("{t:<30} {p:>9} {o:>12}");
            }
            if !execute {
                eprintln!("dry run: add --execute to apply");
                return Ok(());
            }
            let mut ct = OffsetCommitRequestTopic::default();
            ct.name = TopicName(s(&topic));
            ct.partitions = plan
                .iter()
                .map(|((_, p), o)| {
                    let mut cp = OffsetCommitRequestPartition::default();
                    cp.partition_index = *p;
                    cp.committed_offset = *o;
                    cp.committed_leader_epoch = -1;
                    cp
                })
                .collect();
            let mut commit = OffsetCommitRequest::default();
            commit.group_id = GroupId(s(&group));
            commit.generation_id_or_member_epoch = -1;
            commit.retention_time_ms = -1;
            commit.topics = vec![ct];
            let response = client.send(&commit).await?;
            for t in &response.topics {
                for p in &t.partitions {
                    match ResponseError::try_from_code(p.error_code) {
                        None => {}
                        Some(ResponseError::UnknownMemberId) => {
                            bail!("group '{group}' has active members; stop its consumers before resetting offsets")
                        }
                        Some(e) => bail!("cannot reset partition {}: {e}", p.partition_index),
                    }
                }
            }
            println!(
                "reset {} partitions of {topic} for group {group}",
                plan.len()
            );
            Ok(())
        }
    }
}

async fn describe(c: &ConnectArgs, group: &str) -> Result<()> {
    let mut client = connect(c).await?;
    let mut request = DescribeGroupsRequest::default();
    request.groups = vec![GroupId(s(group))];
    let response = client.send(&request).await?;
    let g = response
        .groups
        .first()
        .context("empty DescribeGroups response")?;
    if g.error_code != 0 && g.error_code != ResponseError::GroupIdNotFound.code() {
        bail!(
            "cannot describe group '{group}': {}",
            error_name(g.error_code)
        );
    }
    let committed = committed(&mut client, group).await?;
    if g.group_state.as_str() == "Dead" && committed.is_empty() {
        bail!("group '{group}' does not exist");
    }
    println!("group:     {group}");
    println!("state:     {}", g.group_state.as_str());
    println!(
        "protocol:  {} {}",
        g.protocol_type.as_str(),
        g.protocol_data.as_str()
    );
    println!("members:   {}", g.members.len());
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    for m in &g.members {
        let assigned = decode_assignment(&m.member_assignment);
        println!(
            "  {}  client {}  host {}{}  ({} partitions)",
            m.member_id.as_str(),
            m.client_id.as_str(),
            m.client_host.as_str(),
            m.group_instance_id
                .as_ref()
                .map(|i| format!("  instance {i}"))
                .unwrap_or_default(),
            assigned.len()
        );
        for tp in assigned {
            owner.insert(tp, m.client_id.to_string());
        }
    }
    let mut partitions: Vec<(String, i32)> = committed.keys().cloned().collect();
    for tp in owner.keys() {
        if !partitions.contains(tp) {
            partitions.push(tp.clone());
        }
    }
    partitions.sort();
    let ends = list_offsets(&mut client, &partitions, -1).await?;
    println!();
    println!(
        "{:<30} {:>9} {:>12} {:>12} {:>8}  member",
        "topic", "partition", "committed", "log end", "lag"
    );
    for tp in &partitions {
        let c = committed.get(tp).copied().unwrap_or(-1);
        let end = ends.get(tp).copied();
        let lag = match (c, end) {
            (c, Some(e)) if c >= 0 => (e - c).max(0).to_string(),
            _ => "-".into(),
        };
        println!(
            "{:<30} {:>9} {:>12} {:>12} {:>8}  {}",
            tp.0,
            tp.1,
            if c >= 0 { c.to_string() } else { "-".into() },
            end.map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
            lag,
            owner.get(tp).map(String::as_str).unwrap_or("-")
        );
    }
    Ok(())
}
