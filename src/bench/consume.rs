//! Consume throughput: raw Fetch requests (the broker's read path alone) and
//! a librdkafka consumer (what applications see), next to the loopback TCP
//! ceiling measured in the same run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use runnel_core::client::Client;

#[derive(Debug, Clone)]
pub struct ConsumeResult {
    pub records: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl ConsumeResult {
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

/// Reads every partition from offset 0 to `end_offsets[p]` with Fetch
/// requests; counts the record-batch bytes returned.
pub async fn raw_fetch(bootstrap: &str, topic: &str, end_offsets: &[i64]) -> Result<ConsumeResult> {
    let mut client = Client::connect(bootstrap, "runnel-bench").await?;
    let mut next: Vec<i64> = vec![0; end_offsets.len()];
    let mut bytes = 0u64;
    let mut records = 0u64;
    let started = Instant::now();
    while next.iter().zip(end_offsets).any(|(n, e)| n < e) {
        let mut t = FetchTopic::default();
        t.topic = TopicName(StrBytes::from_string(topic.to_string()));
        for (p, offset) in next.iter().enumerate() {
            if *offset < end_offsets[p] {
                let mut fp = FetchPartition::default();
                fp.partition = p as i32;
                fp.fetch_offset = *offset;
                fp.partition_max_bytes = 4 << 20;
                fp.current_leader_epoch = -1;
                t.partitions.push(fp);
            }
        }
        let mut request = FetchRequest::default();
        request.replica_id = (-1).into();
        request.max_wait_ms = 500;
        request.min_bytes = 1;
        // Under glibc's 32 MiB mmap threshold, so the client reuses its
        // buffers instead of faulting in fresh pages for every response.
        request.max_bytes = 16 << 20;
        request.topics = vec![t];
        let response = client.send_version(&request, 12).await?;
        for topic in &response.responses {
            for p in &topic.partitions {
                if p.error_code != 0 {
                    bail!(
                        "fetch error {} on partition {}",
                        p.error_code,
                        p.partition_index
                    );
                }
                let data = p.records.clone().unwrap_or_default();
                // Walk whole batches; a trailing partial batch is fetched again.
                let mut at = 0usize;
                while at + 61 <= data.len() {
                    let len = 12 + i32::from_be_bytes(data[at + 8..at + 12].try_into()?) as usize;
                    if at + len > data.len() {
                        break;
                    }
                    let base = i64::from_be_bytes(data[at..at + 8].try_into()?);
                    let delta = i32::from_be_bytes(data[at + 23..at + 27].try_into()?) as i64;
                    records += delta as u64 + 1;
                    next[p.partition_index as usize] = base + delta + 1;
                    at += len;
                }
                bytes += at as u64;
            }
        }
    }
    Ok(ConsumeResult {
        records,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// Consumes `total` records from the beginning with librdkafka; counts
/// payload bytes.
pub fn rdkafka_consume(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    total: u64,
) -> Result<ConsumeResult> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "runnel-bench")
        .set("enable.auto.commit", "false")
        // librdkafka defaults except a deeper local queue; a larger
        // max.partition.fetch.bytes makes small records overflow
        // queued.min.messages and back off for fetch.queue.backoff.ms.
        .set("queued.min.messages", "1000000")
        .set("queued.max.messages.kbytes", "262144")
        .set("log_level", "3")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    let deadline = started + Duration::from_secs(300);
    while records < total {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                records += 1;
                bytes += m.payload_len() as u64;
            }
            Some(Err(e)) => bail!("consume error: {e}"),
            None if Instant::now() > deadline => {
                bail!("timed out after {records} of {total} records")
            }
            None => {}
        }
    }
    Ok(ConsumeResult {
        records,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// Single-stream loopback TCP throughput: the transport's own limit.
pub fn loopback_tcp(duration: Duration) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    });
    let mut s = TcpStream::connect(addr).context("loopback connect")?;
    let buf = vec![7u8; 1 << 20];
    let started = Instant::now();
    while started.elapsed() < duration {
        s.write_all(&buf)?;
    }
    drop(s);
    let total = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
    Ok(total as f64 / started.elapsed().as_secs_f64() / 1e6)
}
