//! The broker's `/metrics` page in Prometheus' text format: the broker's
//! counters and request latencies (`metrics`), then what only the broker's
//! state can tell — each partition this broker holds (traffic, log size and
//! offsets, leadership, replication), the lag of the consumer groups it
//! coordinates, and the disk of its data directory.
//!
//! A scrape takes each partition's log lock once (for its size and
//! offsets) and the group coordinator's offsets lock once; nothing on the
//! produce or fetch path waits for more than that.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use kafka_protocol::messages::ApiKey;

use super::{Broker, Partition};

/// One partition's sample, gathered once and written under every metric.
struct PartitionSample {
    topic: Arc<str>,
    index: i32,
    partition: Arc<Partition>,
    size: u64,
    log_start: i64,
    log_end: i64,
    high_watermark: i64,
    leader: bool,
    in_sync: usize,
    replicas: usize,
}

impl PartitionSample {
    fn under_replicated(&self) -> bool {
        self.leader && self.in_sync < self.replicas
    }
}

/// A label value with Prometheus' escapes (topic and group names may hold
/// `"` or `\` only in theory, but a scrape must never break on one).
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains(['"', '\\', '\n']) {
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        value.into()
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

/// The whole page.
pub fn render(broker: &Broker) -> String {
    let mut out = broker.metrics().render_prometheus();
    broker
        .metrics()
        .latency
        .render_prometheus(&mut out, |key| match ApiKey::try_from(key) {
            Ok(api) => format!("{api:?}"),
            Err(()) => format!("api_{key}"),
        });
    let samples = sample_partitions(broker);
    render_partitions(&mut out, &samples);
    render_group_lag(&mut out, broker, &samples);
    render_transactions(&mut out, broker);
    render_disk(&mut out, &broker.config().data_dir);
    out
}

fn sample_partitions(broker: &Broker) -> Vec<PartitionSample> {
    let mut samples = Vec::new();
    for topic in broker.topics() {
        for partition in topic.partitions() {
            let offsets = partition.offsets();
            let status = *partition.replication_status().borrow();
            samples.push(PartitionSample {
                topic: topic.name.clone(),
                index: partition.index,
                size: partition.size_bytes(),
                log_start: offsets.log_start,
                log_end: offsets.log_end,
                high_watermark: offsets.high_watermark,
                leader: partition.is_leader(),
                in_sync: status.in_sync_replicas,
                replicas: status.replicas,
                partition,
            });
        }
    }
    samples.sort_by(|a, b| (&a.topic, a.index).cmp(&(&b.topic, b.index)));
    samples
}

fn render_partitions(out: &mut String, samples: &[PartitionSample]) {
    type Value = fn(&PartitionSample) -> String;
    let rows: [(&str, &str, &str, Value); 12] = [
        (
            "runnel_partition_bytes_in_total",
            "counter",
            "Record batch bytes producers appended to the partition on this broker.",
            |p| p.partition.counters.bytes_in.load(Ordering::Relaxed).to_string(),
        ),
        (
            "runnel_partition_records_in_total",
            "counter",
            "Records producers appended to the partition on this broker.",
            |p| p.partition.counters.records_in.load(Ordering::Relaxed).to_string(),
        ),
        (
            "runnel_partition_bytes_out_total",
            "counter",
            "Record batch bytes consumers fetched from the partition on this broker (not replication).",
            |p| p.partition.counters.bytes_out.load(Ordering::Relaxed).to_string(),
        ),
        (
            "runnel_partition_records_out_total",
            "counter",
            "Records in the batches consumers fetched from the partition on this broker.",
            |p| p.partition.counters.records_out.load(Ordering::Relaxed).to_string(),
        ),
        (
            "runnel_partition_log_size_bytes",
            "gauge",
            "Bytes of the partition's log segments on disk.",
            |p| p.size.to_string(),
        ),
        (
            "runnel_partition_log_start_offset",
            "gauge",
            "First offset of the partition's log.",
            |p| p.log_start.to_string(),
        ),
        (
            "runnel_partition_log_end_offset",
            "gauge",
            "Offset the next record appended to the partition gets.",
            |p| p.log_end.to_string(),
        ),
        (
            "runnel_partition_high_watermark",
            "gauge",
            "First offset consumers cannot read yet (committed up to here).",
            |p| p.high_watermark.to_string(),
        ),
        (
            "runnel_partition_leader",
            "gauge",
            "1 if this broker leads the partition.",
            |p| u8::from(p.leader).to_string(),
        ),
        (
            "runnel_partition_replicas",
            "gauge",
            "Replicas of the partition (as its leader sees them; 1 on a follower).",
            |p| p.replicas.to_string(),
        ),
        (
            "runnel_partition_in_sync_replicas",
            "gauge",
            "Replicas in the partition's ISR (as its leader sees them; 1 on a follower).",
            |p| p.in_sync.to_string(),
        ),
        (
            "runnel_partition_under_replicated",
            "gauge",
            "1 if this broker leads the partition and fewer replicas than all are in sync.",
            |p| u8::from(p.under_replicated()).to_string(),
        ),
    ];
    for (name, kind, help, value) in rows {
        header(out, name, kind, help);
        for p in samples {
            let _ = writeln!(
                out,
                "{name}{{topic=\"{}\",partition=\"{}\"}} {}",
                escape(&p.topic),
                p.index,
                value(p)
            );
        }
    }
    let summary = [
        (
            "runnel_broker_partitions",
            "Partitions this broker holds a replica of.",
            samples.len(),
        ),
        (
            "runnel_broker_leader_partitions",
            "Partitions this broker leads.",
            samples.iter().filter(|p| p.leader).count(),
        ),
        (
            "runnel_broker_under_replicated_partitions",
            "Partitions this broker leads with fewer replicas than all in sync.",
            samples.iter().filter(|p| p.under_replicated()).count(),
        ),
    ];
    for (name, help, value) in summary {
        header(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// Committed offsets of the groups this broker coordinates, and their lag
/// behind the high watermark of partitions it leads (a partition led
/// elsewhere has its lag on that broker's page only if it also coordinates
/// the group: the offset is shown, the lag left out).
fn render_group_lag(out: &mut String, broker: &Broker, samples: &[PartitionSample]) {
    let committed = broker.groups().committed_offsets();
    let high_watermarks: HashMap<(&str, i32), i64> = samples
        .iter()
        .filter(|p| p.leader)
        .map(|p| ((&*p.topic, p.index), p.high_watermark))
        .collect();
    let name = "runnel_group_committed_offset";
    header(
        out,
        name,
        "gauge",
        "Offset a consumer group committed for a partition (groups this broker coordinates).",
    );
    for (group, topic, partition, offset) in &committed {
        let _ = writeln!(
            out,
            "{name}{{group=\"{}\",topic=\"{}\",partition=\"{partition}\"}} {offset}",
            escape(group),
            escape(topic)
        );
    }
    let name = "runnel_group_lag";
    header(
        out,
        name,
        "gauge",
        "Records between a group's committed offset and the partition's high watermark.",
    );
    let mut total: HashMap<&str, i64> = HashMap::new();
    for (group, topic, partition, offset) in &committed {
        let Some(&high_watermark) = high_watermarks.get(&(topic.as_str(), *partition)) else {
            continue;
        };
        let lag = (high_watermark - offset.max(&0)).max(0);
        *total.entry(group).or_default() += lag;
        let _ = writeln!(
            out,
            "{name}{{group=\"{}\",topic=\"{}\",partition=\"{partition}\"}} {lag}",
            escape(group),
            escape(topic)
        );
    }
    let name = "runnel_group_lag_sum";
    header(
        out,
        name,
        "gauge",
        "A group's lag summed over the partitions this broker leads.",
    );
    let mut total: Vec<_> = total.into_iter().collect();
    total.sort();
    for (group, lag) in total {
        let _ = writeln!(out, "{name}{{group=\"{}\"}} {lag}", escape(group));
    }
}

/// The transaction coordinator's counters and the transactional ids it
/// holds (those of the `__transaction_state` partitions this broker leads).
fn render_transactions(out: &mut String, broker: &Broker) {
    use std::sync::atomic::Ordering::Relaxed;
    let counters = broker.transactions().counters();
    let gauges = broker.transactions().gauges();
    let rows = [
        (
            "runnel_transaction_commits_total",
            "counter",
            "Transactions this broker's coordinator ended with a commit (every marker written).",
            counters.commits.load(Relaxed),
        ),
        (
            "runnel_transaction_aborts_total",
            "counter",
            "Transactions this broker's coordinator ended with an abort (asked for, fenced or timed out).",
            counters.aborts.load(Relaxed),
        ),
        (
            "runnel_transaction_timeouts_total",
            "counter",
            "Open transactions aborted for their transaction.timeout.ms.",
            counters.timeouts.load(Relaxed),
        ),
        (
            "runnel_transaction_ids",
            "gauge",
            "Transactional ids this broker coordinates.",
            gauges.ids as u64,
        ),
        (
            "runnel_transaction_open",
            "gauge",
            "Transactional ids this broker coordinates with a transaction open or ending.",
            gauges.open as u64,
        ),
    ];
    for (name, kind, help, value) in rows {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// Free and total bytes of the file system holding the data directory.
fn render_disk(out: &mut String, data_dir: &Path) {
    let Some((free, total)) = disk_space(data_dir) else {
        return;
    };
    for (name, help, value) in [
        (
            "runnel_broker_disk_free_bytes",
            "Bytes available to the broker on the data directory's file system.",
            free,
        ),
        (
            "runnel_broker_disk_total_bytes",
            "Size of the data directory's file system.",
            total,
        ),
    ] {
        header(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// (available, total) bytes of the file system holding `path`.
pub fn disk_space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stat` is a buffer of
    // the struct statvfs fills; it is read only when the call succeeds.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    let fragment = stat.f_frsize as u64;
    Some((
        (stat.f_bavail as u64).saturating_mul(fragment),
        (stat.f_blocks as u64).saturating_mul(fragment),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("plain.topic"), "plain.topic");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn the_data_directory_has_a_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (free, total) = disk_space(dir.path()).unwrap();
        assert!(total > 0 && free <= total, "{free} of {total}");
        assert!(disk_space(Path::new("/no/such/dir")).is_none());
    }
}
