//! `runnel group ...`: inspect and manage consumer groups over the Kafka
//! protocol.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, OffsetCommitRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use runnel_core::client::ClusterClient;
use serde::Serialize;

use crate::kafka_client::{resolve_offsets, select_names};
use crate::offset_spec::OffsetSpec;
use crate::output::{emit, table, FormatArgs};
use crate::ConnectArgs;

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups and their states
    List {
        #[command(flatten)]
        format: FormatArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show members, assignments (member id, client id and host per
    /// partition), committed offsets and lag
    Describe {
        group: String,
        #[command(flatten)]
        format: FormatArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Move a group's committed offsets (the group must have no members):
    /// for the topics it has offsets for, or those named
    Seek {
        group: String,
        /// Where to: start, end, N, -N (N before the end), +N (N after the
        /// start) or @TIME (the first record at or after it: ms since the
        /// epoch or RFC 3339)
        #[arg(long, allow_hyphen_values = true, value_name = "OFFSET")]
        to: OffsetSpec,
        /// Only these topics, all their partitions (comma-separated)
        #[arg(
            long,
            value_delimiter = ',',
            value_name = "TOPIC",
            conflicts_with = "topic"
        )]
        topics: Vec<String>,
        /// Only this partition, TOPIC:PARTITION (repeatable)
        #[arg(long, value_name = "TOPIC:PARTITION")]
        topic: Vec<String>,
        #[command(flatten)]
        format: FormatArgs,
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
        format: FormatArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete groups with no active members, and their committed offsets
    Delete {
        /// Groups to delete (with --regex, expressions a whole id must match)
        #[arg(required = true, value_name = "GROUP")]
        groups: Vec<String>,
        /// Delete every group whose whole id matches one of the expressions
        #[arg(long)]
        regex: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

fn error_name(code: i16) -> String {
    ResponseError::try_from_code(code)
        .map(|e| e.to_string())
        .unwrap_or_else(|| "NONE".into())
}

async fn connect(args: &ConnectArgs) -> Result<ClusterClient> {
    crate::kafka_client::cluster_client(&args.bootstrap).await
}

#[derive(Serialize)]
struct ListedGroup {
    group: String,
    state: String,
    protocol_type: String,
}

/// Every group of the cluster (ListGroups asked of every broker).
async fn list_groups(cluster: &mut ClusterClient) -> Result<Vec<ListedGroup>> {
    Ok(cluster
        .list_groups()
        .await?
        .into_iter()
        .map(|g| ListedGroup {
            group: g.group_id,
            state: g.state,
            protocol_type: g.protocol_type,
        })
        .collect())
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// The committed offsets of `group` (OffsetFetch to its coordinator).
async fn committed(
    cluster: &mut ClusterClient,
    group: &str,
) -> Result<BTreeMap<(String, i32), i64>> {
    Ok(cluster.committed_offsets(group).await?)
}

pub async fn run(cmd: GroupCommand) -> Result<()> {
    match cmd {
        GroupCommand::List { format, connect: c } => {
            let mut client = connect(&c).await?;
            let groups = list_groups(&mut client).await?;
            if groups.is_empty() && format.get() == crate::output::Format::Text {
                eprintln!("no groups");
            }
            emit(format.get(), &groups, || {
                groups
                    .iter()
                    .map(|g| {
                        let ptype = if g.protocol_type.is_empty() {
                            "-"
                        } else {
                            &g.protocol_type
                        };
                        format!("{}\t{}\t{ptype}\n", g.group, g.state)
                    })
                    .collect()
            })
        }
        GroupCommand::Describe {
            group,
            format,
            connect: c,
        } => describe(&c, &group, &format).await,
        GroupCommand::Seek {
            group,
            to,
            topics,
            topic,
            format,
            connect: c,
        } => seek(&c, &group, to, &topics, &topic, &format).await,
        GroupCommand::Delete {
            groups,
            regex,
            connect: c,
        } => {
            let mut client = connect(&c).await?;
            let groups = if regex {
                let all: Vec<String> = list_groups(&mut client)
                    .await?
                    .into_iter()
                    .map(|g| g.group)
                    .collect();
                select_names(&groups, true, &all, "group")?
            } else {
                select_names(&groups, false, &[], "group")?
            };
            let mut failed = Vec::new();
            for group in &groups {
                // DeleteGroups goes to each group's coordinator.
                let coordinator = match client.coordinator(group).await {
                    Ok(c) => c,
                    Err(e) => {
                        failed.push(format!("group '{group}': {e}"));
                        continue;
                    }
                };
                let mut request = DeleteGroupsRequest::default();
                request.groups_names = vec![GroupId(s(group))];
                let response = coordinator.send(&request).await?;
                let Some(code) = response
                    .results
                    .iter()
                    .find(|r| r.group_id.0.as_str() == group)
                    .map(|r| r.error_code)
                else {
                    failed.push(format!("group '{group}': no answer"));
                    continue;
                };
                match ResponseError::try_from_code(code) {
                    None => println!("deleted group {group}"),
                    Some(ResponseError::NonEmptyGroup) => failed.push(format!(
                        "group '{group}' has active members; stop them first"
                    )),
                    Some(ResponseError::GroupIdNotFound) => {
                        failed.push(format!("group '{group}' does not exist"))
                    }
                    Some(e) => failed.push(format!("cannot delete group '{group}': {e}")),
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                bail!("{}", failed.join("; "))
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
            format,
            connect: c,
        } => {
            let target = if to_earliest {
                ResetTo::Earliest
            } else if to_latest {
                ResetTo::Latest
            } else if let Some(o) = to_offset {
                ResetTo::Offset(o)
            } else if let Some(delta) = shift_by {
                ResetTo::Shift(delta)
            } else if let Some(ts) = to_timestamp {
                ResetTo::Timestamp(ts)
            } else {
                bail!("say where to: --to-earliest, --to-latest, --to-offset, --shift-by or --to-timestamp");
            };
            reset_offsets(&c, &group, &topic, target, execute, &format).await
        }
    }
}

/// Where `group reset-offsets` moves each partition.
#[derive(Clone, Copy)]
enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
    Shift(i64),
    Timestamp(i64),
}

#[derive(Serialize)]
struct ResetPlan {
    group: String,
    topic: String,
    /// false for a dry run (nothing committed).
    executed: bool,
    partitions: Vec<Sought>,
}

/// `group reset-offsets`: the new offset of each partition of `topic`
/// (within its log start and end), committed with `execute`.
async fn reset_offsets(
    c: &ConnectArgs,
    group: &str,
    topic: &str,
    to: ResetTo,
    execute: bool,
    format: &FormatArgs,
) -> Result<()> {
    let mut client = connect(c).await?;
    let Some(ids) = client.partitions(topic) else {
        bail!("topic '{topic}' does not exist");
    };
    let partitions: Vec<(String, i32)> = ids.iter().map(|p| (topic.to_string(), *p)).collect();
    let earliest = client.list_offsets(&partitions, -2).await?;
    let latest = client.list_offsets(&partitions, -1).await?;
    let by_time = match to {
        ResetTo::Timestamp(ts) => client.list_offsets(&partitions, ts).await?,
        _ => BTreeMap::new(),
    };
    let current = committed(&mut client, group).await?;
    let mut plan = ResetPlan {
        group: group.to_string(),
        topic: topic.to_string(),
        executed: false,
        partitions: Vec::new(),
    };
    for tp in &partitions {
        let (Some(&lo), Some(&hi)) = (earliest.get(tp), latest.get(tp)) else {
            bail!("cannot read the offsets of {}/{}", tp.0, tp.1);
        };
        let from = current.get(tp).copied();
        let target = match to {
            ResetTo::Earliest => lo,
            ResetTo::Latest => hi,
            ResetTo::Offset(o) => o,
            ResetTo::Shift(delta) => from.unwrap_or(lo) + delta,
            ResetTo::Timestamp(_) => by_time.get(tp).copied().filter(|o| *o >= 0).unwrap_or(hi),
        };
        plan.partitions.push(Sought {
            topic: topic.to_string(),
            partition: tp.1,
            from,
            to: target.clamp(lo, hi),
        });
    }
    if execute {
        let targets: Vec<((String, i32), i64)> = plan
            .partitions
            .iter()
            .map(|p| ((p.topic.clone(), p.partition), p.to))
            .collect();
        commit_offsets(&mut client, group, &targets, "resetting offsets").await?;
        plan.executed = true;
    }
    emit(format.get(), &plan, || {
        let mut out = format!("{:<30} {:>9} {:>12}\n", "topic", "partition", "new offset");
        for p in &plan.partitions {
            out.push_str(&format!(
                "{:<30} {:>9} {:>12}\n",
                p.topic, p.partition, p.to
            ));
        }
        if plan.executed {
            out.push_str(&format!(
                "reset {} partitions of {topic} for group {group}\n",
                plan.partitions.len()
            ));
        }
        out
    })?;
    if !execute {
        eprintln!("dry run: add --execute to apply");
    }
    Ok(())
}

#[derive(Serialize)]
struct GroupDescription {
    group: String,
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<Member>,
    partitions: Vec<PartitionLag>,
    /// Sum of the partitions' lag.
    total_lag: i64,
}

#[derive(Serialize, Clone)]
struct Member {
    member_id: String,
    client_id: String,
    host: String,
    instance_id: Option<String>,
    partitions: usize,
}

#[derive(Serialize)]
struct PartitionLag {
    topic: String,
    partition: i32,
    /// None: no offset committed.
    committed: Option<i64>,
    log_end: Option<i64>,
    lag: Option<i64>,
    member_id: Option<String>,
    client_id: Option<String>,
    host: Option<String>,
}

/// A group's state and members (DescribeGroups); `None` if it does not exist.
async fn group_state(
    cluster: &mut ClusterClient,
    group: &str,
) -> Result<kafka_protocol::messages::describe_groups_response::DescribedGroup> {
    let mut request = DescribeGroupsRequest::default();
    request.groups = vec![GroupId(s(group))];
    let response = cluster.coordinator(group).await?.send(&request).await?;
    let g = response
        .groups
        .into_iter()
        .next()
        .context("empty DescribeGroups response")?;
    if g.error_code != 0 && g.error_code != ResponseError::GroupIdNotFound.code() {
        bail!(
            "cannot describe group '{group}': {}",
            error_name(g.error_code)
        );
    }
    Ok(g)
}

async fn describe(c: &ConnectArgs, group: &str, format: &FormatArgs) -> Result<()> {
    let mut client = connect(c).await?;
    let g = group_state(&mut client, group).await?;
    let committed = committed(&mut client, group).await?;
    if g.group_state.as_str() == "Dead" && committed.is_empty() {
        bail!("group '{group}' does not exist");
    }
    let mut members = Vec::new();
    let mut owner: BTreeMap<(String, i32), Member> = BTreeMap::new();
    for m in &g.members {
        let assigned = runnel_core::client::assigned_partitions(&m.member_assignment);
        let member = Member {
            member_id: m.member_id.to_string(),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
            partitions: assigned.len(),
        };
        for tp in assigned {
            owner.insert(tp, member.clone());
        }
        members.push(member);
    }
    let mut partitions: Vec<(String, i32)> = committed.keys().cloned().collect();
    for tp in owner.keys() {
        if !partitions.contains(tp) {
            partitions.push(tp.clone());
        }
    }
    partitions.sort();
    let ends = client.list_offsets(&partitions, -1).await?;
    let lags: Vec<PartitionLag> = partitions
        .iter()
        .map(|tp| {
            let c = committed.get(tp).copied().filter(|c| *c >= 0);
            let end = ends.get(tp).copied();
            let m = owner.get(tp);
            PartitionLag {
                topic: tp.0.clone(),
                partition: tp.1,
                committed: c,
                log_end: end,
                lag: match (c, end) {
                    (Some(c), Some(e)) => Some((e - c).max(0)),
                    _ => None,
                },
                member_id: m.map(|m| m.member_id.clone()),
                client_id: m.map(|m| m.client_id.clone()),
                host: m.map(|m| m.host.clone()),
            }
        })
        .collect();
    let d = GroupDescription {
        group: group.to_string(),
        state: g.group_state.to_string(),
        protocol_type: g.protocol_type.to_string(),
        protocol: g.protocol_data.to_string(),
        members,
        total_lag: lags.iter().filter_map(|l| l.lag).sum(),
        partitions: lags,
    };
    emit(format.get(), &d, || render_description(&d))
}

fn render_description(d: &GroupDescription) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "group:     {}", d.group);
    let _ = writeln!(out, "state:     {}", d.state);
    let _ = writeln!(out, "protocol:  {} {}", d.protocol_type, d.protocol);
    let _ = writeln!(out, "members:   {}", d.members.len());
    for m in &d.members {
        let _ = writeln!(
            out,
            "  {}  client {}  host {}{}  ({} partitions)",
            m.member_id,
            m.client_id,
            m.host,
            m.instance_id
                .as_ref()
                .map(|i| format!("  instance {i}"))
                .unwrap_or_default(),
            m.partitions
        );
    }
    let _ = writeln!(out, "total lag: {}", d.total_lag);
    out.push('\n');
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let mut rows = vec![[
        "TOPIC",
        "PARTITION",
        "COMMITTED",
        "LOG-END",
        "LAG",
        "MEMBER-ID",
        "CLIENT-ID",
        "HOST",
    ]
    .map(String::from)
    .to_vec()];
    for p in &d.partitions {
        rows.push(vec![
            p.topic.clone(),
            p.partition.to_string(),
            dash(p.committed.map(|c| c.to_string())),
            dash(p.log_end.map(|c| c.to_string())),
            dash(p.lag.map(|c| c.to_string())),
            dash(p.member_id.clone()),
            dash(p.client_id.clone()),
            dash(p.host.clone()),
        ]);
    }
    out.push_str(&table(&rows));
    out
}

#[derive(Serialize)]
struct Sought {
    topic: String,
    partition: i32,
    /// The committed offset before, if any.
    from: Option<i64>,
    to: i64,
}

/// Commits `offsets` for `group` at its coordinator as an admin does
/// (generation -1: refused while the group has members).
async fn commit_offsets(
    cluster: &mut ClusterClient,
    group: &str,
    offsets: &[((String, i32), i64)],
    doing: &str,
) -> Result<()> {
    let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    for ((t, p), o) in offsets {
        by_topic.entry(t).or_default().push((*p, *o));
    }
    let mut commit = OffsetCommitRequest::default();
    commit.group_id = GroupId(s(group));
    commit.generation_id_or_member_epoch = -1;
    commit.retention_time_ms = -1;
    commit.topics = by_topic
        .iter()
        .map(|(t, ps)| {
            let mut ct = OffsetCommitRequestTopic::default();
            ct.name = TopicName(s(t));
            ct.partitions = ps
                .iter()
                .map(|(p, o)| {
                    let mut cp = OffsetCommitRequestPartition::default();
                    cp.partition_index = *p;
                    cp.committed_offset = *o;
                    cp.committed_leader_epoch = -1;
                    cp
                })
                .collect();
            ct
        })
        .collect();
    let response = cluster.coordinator(group).await?.send(&commit).await?;
    for t in &response.topics {
        for p in &t.partitions {
            match ResponseError::try_from_code(p.error_code) {
                None => {}
                Some(ResponseError::UnknownMemberId) => {
                    bail!("group '{group}' has active members; stop its consumers before {doing}")
                }
                Some(e) => bail!("cannot commit {}/{}: {e}", t.name.0, p.partition_index),
            }
        }
    }
    Ok(())
}

/// `group seek`: OffsetCommit of where `to` points, for a group without
/// members.
async fn seek(
    c: &ConnectArgs,
    group: &str,
    to: OffsetSpec,
    topics: &[String],
    topic_partitions: &[String],
    format: &FormatArgs,
) -> Result<()> {
    let mut client = connect(c).await?;
    let g = group_state(&mut client, group).await?;
    if !g.members.is_empty() {
        bail!(
            "group '{group}' has {} active member(s) (state {}); stop its consumers before seeking",
            g.members.len(),
            g.group_state.as_str()
        );
    }
    let current = committed(&mut client, group).await?;
    let metadata = client.metadata().clone();
    let partitions_of = |name: &str| -> Result<Vec<i32>> {
        let t = metadata
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name))
            .with_context(|| format!("topic '{name}' does not exist"))?;
        if t.error_code != 0 {
            bail!("topic '{name}': {}", error_name(t.error_code));
        }
        Ok(t.partitions.iter().map(|p| p.partition_index).collect())
    };
    let mut partitions: Vec<(String, i32)> = Vec::new();
    if !topic_partitions.is_empty() {
        for tp in topic_partitions {
            let Some((t, p)) = tp
                .rsplit_once(':')
                .and_then(|(t, p)| Some((t, p.parse::<i32>().ok()?)))
            else {
                bail!("--topic '{tp}' is not TOPIC:PARTITION");
            };
            if !partitions_of(t)?.contains(&p) {
                bail!("topic '{t}' has no partition {p}");
            }
            partitions.push((t.to_string(), p));
        }
    } else if !topics.is_empty() {
        for t in topics {
            for p in partitions_of(t)? {
                partitions.push((t.clone(), p));
            }
        }
    } else {
        let named: std::collections::BTreeSet<&str> =
            current.keys().map(|(t, _)| t.as_str()).collect();
        if named.is_empty() {
            bail!("group '{group}' has no committed offsets; name the topics with --topics");
        }
        for t in named {
            for p in partitions_of(t)? {
                partitions.push((t.to_string(), p));
            }
        }
    }
    partitions.sort();
    partitions.dedup();
    let targets = resolve_offsets(&mut client, &partitions, to).await?;
    let targets: Vec<((String, i32), i64)> = targets.into_iter().collect();
    commit_offsets(&mut client, group, &targets, "seeking").await?;
    let moved: Vec<Sought> = targets
        .iter()
        .map(|((t, p), o)| Sought {
            topic: t.clone(),
            partition: *p,
            from: current.get(&(t.clone(), *p)).copied().filter(|c| *c >= 0),
            to: *o,
        })
        .collect();
    emit(format.get(), &moved, || {
        let mut rows = vec![["TOPIC", "PARTITION", "FROM", "TO"]
            .map(String::from)
            .to_vec()];
        for m in &moved {
            rows.push(vec![
                m.topic.clone(),
                m.partition.to_string(),
                m.from.map(|f| f.to_string()).unwrap_or_else(|| "-".into()),
                m.to.to_string(),
            ]);
        }
        table(&rows)
    })
}
