//! `runnel logdirs describe`: every broker's log directories over the
//! Kafka protocol (DescribeLogDirs, asked of each broker, since each
//! answers for its own disks): bytes per partition replica, per directory
//! and in total.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap::Subcommand;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::{DescribeLogDirsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use crate::kafka_client::{admin_client, cluster_metadata, error_name};
use crate::output::{emit, table, FormatArgs};
use crate::ConnectArgs;

#[derive(Subcommand, Debug)]
pub enum LogdirsCommand {
    /// Bytes on disk per partition replica, log directory and broker
    Describe {
        /// Only these topics' partitions (repeatable)
        #[arg(long = "topic", value_name = "TOPIC")]
        topics: Vec<String>,
        #[command(flatten)]
        format: FormatArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

#[derive(Serialize)]
struct Report {
    brokers: Vec<BrokerDirs>,
    total_bytes: i64,
}

#[derive(Serialize)]
struct BrokerDirs {
    broker: i32,
    error: Option<String>,
    dirs: Vec<Dir>,
    total_bytes: i64,
}

#[derive(Serialize)]
struct Dir {
    path: String,
    error: Option<String>,
    /// Bytes of the disk, -1 if the broker does not say.
    disk_total_bytes: i64,
    disk_usable_bytes: i64,
    partitions: Vec<PartitionSize>,
    size_bytes: i64,
}

#[derive(Serialize)]
struct PartitionSize {
    topic: String,
    partition: i32,
    size_bytes: i64,
    offset_lag: i64,
}

pub async fn run(cmd: LogdirsCommand) -> Result<()> {
    let LogdirsCommand::Describe {
        topics,
        format,
        connect,
    } = cmd;
    let mut client = admin_client(&connect.bootstrap).await?;
    let metadata = cluster_metadata(&mut client).await?;
    let mut request = DescribeLogDirsRequest::default();
    if !topics.is_empty() {
        let mut wanted = Vec::new();
        for name in &topics {
            let Some(t) = metadata
                .topics
                .iter()
                .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name))
            else {
                bail!("topic '{name}' does not exist");
            };
            let mut d = DescribableLogDirTopic::default();
            d.topic = TopicName(StrBytes::from_string(name.clone()));
            d.partitions = t.partitions.iter().map(|p| p.partition_index).collect();
            wanted.push(d);
        }
        request.topics = Some(wanted);
    } else {
        request.topics = None;
    }
    let mut report = Report {
        brokers: Vec::new(),
        total_bytes: 0,
    };
    let mut brokers: Vec<(i32, String)> = metadata
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
        .collect();
    brokers.sort();
    for (id, addr) in brokers {
        let answer = async {
            let mut c = admin_client(&addr).await?;
            anyhow::Ok(c.send(&request).await?)
        }
        .await;
        let mut broker = BrokerDirs {
            broker: id,
            error: None,
            dirs: Vec::new(),
            total_bytes: 0,
        };
        match answer {
            Err(e) => broker.error = Some(format!("{e:#}")),
            Ok(response) => {
                broker.error = error_name(response.error_code);
                for r in response.results {
                    let mut partitions: Vec<PartitionSize> = r
                        .topics
                        .iter()
                        .flat_map(|t| {
                            t.partitions.iter().map(|p| PartitionSize {
                                topic: t.name.0.to_string(),
                                partition: p.partition_index,
                                size_bytes: p.partition_size,
                                offset_lag: p.offset_lag,
                            })
                        })
                        .collect();
                    partitions
                        .sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
                    let size_bytes = partitions.iter().map(|p| p.size_bytes.max(0)).sum();
                    broker.total_bytes += size_bytes;
                    broker.dirs.push(Dir {
                        path: r.log_dir.to_string(),
                        error: error_name(r.error_code),
                        disk_total_bytes: r.total_bytes,
                        disk_usable_bytes: r.usable_bytes,
                        partitions,
                        size_bytes,
                    });
                }
            }
        }
        report.total_bytes += broker.total_bytes;
        report.brokers.push(broker);
    }
    emit(format.get(), &report, || render(&report))?;
    if let Some(b) = report.brokers.iter().find(|b| b.error.is_some()) {
        bail!(
            "broker {}: {}",
            b.broker,
            b.error.as_deref().unwrap_or_default()
        );
    }
    Ok(())
}

fn render(report: &Report) -> String {
    let mut rows = vec![["BROKER", "DIR", "TOPIC", "PARTITION", "SIZE"]
        .map(String::from)
        .to_vec()];
    let mut per_topic: BTreeMap<&str, i64> = BTreeMap::new();
    for b in &report.brokers {
        for d in &b.dirs {
            for p in &d.partitions {
                *per_topic.entry(&p.topic).or_default() += p.size_bytes.max(0);
                rows.push(vec![
                    b.broker.to_string(),
                    d.path.clone(),
                    p.topic.clone(),
                    p.partition.to_string(),
                    human_bytes(p.size_bytes),
                ]);
            }
        }
    }
    let mut out = table(&rows);
    out.push('\n');
    for b in &report.brokers {
        out.push_str(&format!(
            "broker {}: {}{}\n",
            b.broker,
            human_bytes(b.total_bytes),
            b.error
                .as_ref()
                .map(|e| format!(" ({})", crate::output::alert(e)))
                .unwrap_or_default()
        ));
    }
    out.push_str(&format!("total: {}\n", human_bytes(report.total_bytes)));
    out
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: i64) -> String {
    if n < 0 {
        return "-".into();
    }
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[unit])
    }
}
