//! Consumer group benchmarks: rebalance time, OffsetCommit rate, and
//! consuming with a group vs. consuming assigned partitions.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use runnel_core::client::Client;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn group_consumer(bootstrap: &str, group: &str) -> Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .set("queued.min.messages", "1000000")
        .set("log_level", "3")
        .create()?)
}

/// Milliseconds until `members` new consumers of one group all hold
/// partitions, and then until one more member is absorbed by a rebalance.
pub fn rebalance_times(bootstrap: &str, topic: &str, members: usize) -> Result<(f64, f64)> {
    let poll_until_assigned = |consumers: &[BaseConsumer], started: Instant| -> Result<f64> {
        let deadline = started + Duration::from_secs(60);
        loop {
            for c in consumers {
                let _ = c.poll(Duration::from_millis(1));
            }
            if consumers
                .iter()
                .all(|c| c.assignment().map(|a| a.count() > 0).unwrap_or(false))
            {
                return Ok(started.elapsed().as_secs_f64() * 1000.0);
            }
            if Instant::now() > deadline {
                bail!("the group did not stabilise within 60 s");
            }
        }
    };
    let mut consumers = Vec::new();
    for _ in 0..members {
        consumers.push(group_consumer(bootstrap, "bench-rebalance")?);
    }
    let started = Instant::now();
    for c in &consumers {
        c.subscribe(&[topic])?;
    }
    let first = poll_until_assigned(&consumers, started)?;
    let extra = group_consumer(bootstrap, "bench-rebalance")?;
    let started = Instant::now();
    extra.subscribe(&[topic])?;
    consumers.push(extra);
    let join = poll_until_assigned(&consumers, started)?;
    Ok((first, join))
}

/// Requests per second from `connections` clients, each sending one
/// request at a time built by `make` for `duration`.
async fn request_rate<F>(
    bootstrap: &str,
    connections: usize,
    duration: Duration,
    make: F,
) -> Result<f64>
where
    F: Fn(usize, u64) -> (i16, i16, BytesMut) + Send + Sync + Clone + 'static,
{
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (bootstrap, make) = (bootstrap.to_string(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&bootstrap, "runnel-bench").await?;
            let started = Instant::now();
            let mut n = 0u64;
            while started.elapsed() < duration {
                let (key, version, body) = make(c, n);
                client.send_raw(key, version, &body).await?;
                n += 1;
            }
            Ok::<u64, anyhow::Error>(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / duration.as_secs_f64())
}

/// OffsetCommit requests/s (one partition per commit, like a consumer
/// committing after each poll), and in the same run Produce requests/s of
/// one small record (the same append path) as the comparison.
pub async fn commit_rate(bootstrap: &str, topic: &str, connections: usize) -> Result<(f64, f64)> {
    use kafka_protocol::protocol::Encodable;
    let topic = topic.to_string();
    let t2 = topic.clone();
    let commits = request_rate(
        bootstrap,
        connections,
        Duration::from_secs(3),
        move |c, n| {
            let mut p = OffsetCommitRequestPartition::default();
            p.partition_index = 0;
            p.committed_offset = n as i64;
            p.committed_leader_epoch = -1;
            let mut t = OffsetCommitRequestTopic::default();
            t.name = TopicName(s(&t2));
            t.partitions = vec![p];
            let mut r = OffsetCommitRequest::default();
            r.group_id = GroupId(s(&format!("bench-commit-{c}")));
            r.generation_id_or_member_epoch = -1;
            r.topics = vec![t];
            let mut body = BytesMut::new();
            r.encode(&mut body, 8).expect("encodable commit");
            (8, 8, body)
        },
    )
    .await?;
    let batch = {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let record = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 0,
            key: Some(bytes::Bytes::from_static(b"key-of-a-commit")),
            value: Some(bytes::Bytes::from(vec![0u8; 40])),
            headers: Default::default(),
        };
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            [&record],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .context("encoding a record")?;
        buf.freeze()
    };
    let produces = request_rate(
        bootstrap,
        connections,
        Duration::from_secs(3),
        move |_, _| {
            let mut p = PartitionProduceData::default();
            p.index = 0;
            p.records = Some(batch.clone());
            let mut t = TopicProduceData::default();
            t.name = TopicName(s(&topic));
            t.partition_data = vec![p];
            let mut r = ProduceRequest::default();
            r.acks = 1;
            r.timeout_ms = 5000;
            r.topic_data = vec![t];
            let mut body = BytesMut::new();
            r.encode(&mut body, 9).expect("encodable produce");
            (0, 9, body)
        },
    )
    .await?;
    Ok((commits, produces))
}

/// MB/s consuming `total` records of a topic: once as a group member
/// (subscribe, auto-commit), once with assigned partitions and no group
/// coordination.
pub fn group_vs_plain(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    total: u64,
) -> Result<(f64, f64)> {
    // Timed from the first record, so joining the group (and its initial
    // rebalance delay) is not counted as consuming time.
    let run = |consumer: BaseConsumer| -> Result<f64> {
        let mut started = Instant::now();
        let (mut n, mut bytes) = (0u64, 0u64);
        let deadline = started + Duration::from_secs(300);
        while n < total {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    if n == 0 {
                        started = Instant::now();
                    }
                    n += 1;
                    bytes += m.payload_len() as u64;
                }
                Some(Err(e)) => bail!("consume error: {e}"),
                None if Instant::now() > deadline => bail!("timed out after {n} of {total}"),
                None => {}
            }
        }
        Ok(bytes as f64 / started.elapsed().as_secs_f64() / 1e6)
    };
    let plain_run = || -> Result<f64> {
        let plain = group_consumer(bootstrap, "bench-plain-unused")?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        plain.assign(&tpl)?;
        run(plain)
    };
    let group_run = |group: &str| -> Result<f64> {
        let grouped = group_consumer(bootstrap, group)?;
        grouped.subscribe(&[topic])?;
        run(grouped)
    };
    // Alternate, so neither reader benefits from going second.
    let mut with_group = vec![group_run("bench-throughput-1")?];
    let mut without = vec![plain_run()?];
    without.push(plain_run()?);
    with_group.push(group_run("bench-throughput-2")?);
    let best = |v: Vec<f64>| v.into_iter().fold(0.0, f64::max);
    Ok((best(with_group), best(without)))
}
