//! Produce throughput and latency through librdkafka, against Runnel and
//! against the null broker (same client, same protocol, no storage).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

/// One produce workload.
#[derive(Debug, Clone)]
pub struct Workload {
    pub record_bytes: usize,
    pub partitions: i32,
    pub acks: i32,
    pub records: u64,
    /// Records per second to offer; `None` sends as fast as possible.
    pub rate: Option<u64>,
    pub linger_ms: u32,
    /// The value of every record (`record_bytes` of filler when unset).
    pub payload: Option<std::sync::Arc<Vec<u8>>>,
    /// Record i's value is the `record_bytes`-long window of `payload` at a
    /// position that moves with i: compressible but not identical records
    /// (see [`text_corpus`]). Otherwise every record is the whole payload.
    pub sliding_payload: bool,
    /// The producer's `compression.type` (`none`, `gzip`, `snappy`, `lz4`,
    /// `zstd`).
    pub compression: &'static str,
}

/// About `len` bytes of made-up log lines: text that compresses like real
/// log or JSON data (gzip to roughly a third), deterministic.
pub fn text_corpus(len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "checkout",
        "login",
        "search",
        "cart",
        "profile",
        "orders",
        "payment",
        "refund",
        "inventory",
        "shipping",
        "review",
        "catalog",
        "session",
        "token",
        "export",
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(len + 200);
    let mut ms = 1_764_000_000_000u64;
    while out.len() < len {
        ms += next() % 50;
        let (w1, w2) = (WORDS[(next() % 15) as usize], WORDS[(next() % 15) as usize]);
        let line = format!(
            "{{\"ts\":{ms},\"level\":\"INFO\",\"user\":{},\"action\":\"{w1}\",\"path\":\"/api/v1/{w2}/{}\",\"latency_ms\":{},\"status\":{}}}\n",
            next() % 100_000,
            next() % 1_000_000,
            next() % 900,
            [200, 200, 200, 201, 404, 500][(next() % 6) as usize],
        );
        out.extend_from_slice(line.as_bytes());
    }
    out
}

#[derive(Debug, Clone)]
pub struct ProduceResult {
    pub records: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub p50_us: u64,
    pub p99_us: u64,
}

impl ProduceResult {
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

struct LatencyContext {
    latencies_us: Mutex<Histogram<u64>>,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for LatencyContext {}

impl ProducerContext for LatencyContext {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at: Self::DeliveryOpaque) {
        match result {
            Ok(_) => {
                let us = sent_at.elapsed().as_micros() as u64;
                let _ = self
                    .latencies_us
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(us.max(1));
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Produces `workload.records` records to `topic` as fast as librdkafka
/// accepts them and waits for every delivery report.
pub fn run(
    bootstrap: &str,
    topic: &str,
    workload: &Workload,
    progress: &ProgressBar,
) -> Result<ProduceResult> {
    let context = LatencyContext {
        latencies_us: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_error: Mutex::new(None),
    };
    let producer: ThreadedProducer<LatencyContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", workload.acks.to_string())
        .set("linger.ms", workload.linger_ms.to_string())
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "60000")
        .set("log_level", "3")
        .set("compression.type", workload.compression)
        .create_with_context(context)
        .context("creating producer")?;
    // Connect and learn the partitions before the clock starts.
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("metadata")?;

    let payload = match &workload.payload {
        Some(p) => p.as_ref().clone(),
        None => vec![b'r'; workload.record_bytes],
    };
    let started = Instant::now();
    for i in 0..workload.records {
        if let Some(rate) = workload.rate {
            // Open-loop pacing: record i is due at i / rate seconds.
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let value = if workload.sliding_payload && payload.len() > workload.record_bytes {
            let at = (i as usize * 4099) % (payload.len() - workload.record_bytes);
            &payload[at..at + workload.record_bytes]
        } else {
            payload.as_slice()
        };
        let mut record = BaseRecord::<(), [u8], _>::with_opaque_to(topic, Box::new(Instant::now()))
            .payload(value)
            .partition((i % workload.partitions as u64) as i32);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => bail!("send failed: {e}"),
            }
        }
        if i % 65_536 == 0 {
            progress.set_position(producer.context().delivered.load(Ordering::Relaxed));
        }
    }
    let context = producer.context();
    while context.delivered.load(Ordering::Relaxed) + context.failed.load(Ordering::Relaxed)
        < workload.records
    {
        std::thread::sleep(Duration::from_millis(1));
        progress.set_position(context.delivered.load(Ordering::Relaxed));
    }
    let elapsed = started.elapsed();
    progress.set_position(workload.records);
    if let Some(e) = context
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
    {
        bail!(
            "{} deliveries failed, first: {e}",
            context.failed.load(Ordering::Relaxed)
        );
    }
    let h = context
        .latencies_us
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    Ok(ProduceResult {
        records: workload.records,
        bytes: workload.records * workload.record_bytes as u64,
        elapsed,
        p50_us: h.value_at_quantile(0.50),
        p99_us: h.value_at_quantile(0.99),
    })
}

pub fn progress_bar(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}
