//! Transactions: the produce throughput of a transactional producer
//! (committing every N records) against an idempotent producer in the same
//! run, how long a commit takes, and read_committed against
//! read_uncommitted consumption of what the transactions wrote.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::procs::ChildBroker;
use super::{create_topic, machine, produce};

#[derive(Args, Debug)]
pub struct TxnBenchArgs {
    /// Records written by each producer
    #[arg(long, default_value_t = 400_000)]
    pub records: u64,
    /// Bytes per record value
    #[arg(long, default_value_t = 256)]
    pub record_bytes: usize,
    /// Partitions of each topic (every transaction writes to all of them)
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Records per transaction, one run for each (comma-separated)
    #[arg(long, value_delimiter = ',', default_values_t = [100u64, 1000, 10000])]
    pub transaction_records: Vec<u64>,
}

/// One producer run: records/s and, for transactions, the commit latency
/// (p50, p99 in ms).
struct ProducerRun {
    records_per_sec: f64,
    commit_ms: Option<(f64, f64)>,
}

fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> Result<BaseProducer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "60000")
        .set("log_level", "3");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().context("creating producer")
}

fn send_all(
    p: &BaseProducer,
    topic: &str,
    partitions: i32,
    value: &[u8],
    from: u64,
    count: u64,
) -> Result<()> {
    for i in from..from + count {
        let mut record = BaseRecord::<(), [u8]>::to(topic)
            .payload(value)
            .partition((i % partitions as u64) as i32);
        loop {
            match p.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    p.poll(Duration::from_millis(1));
                }
                Err((e, _)) => bail!("send failed: {e}"),
            }
        }
        if i % 1024 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    Ok(())
}

/// Serves delivery reports until no record is in flight.
fn drain(p: &BaseProducer) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while p.in_flight_count() > 0 {
        if Instant::now() > deadline {
            bail!("records still in flight after 120 s");
        }
        p.poll(Duration::from_millis(1));
    }
    Ok(())
}

/// `records` records in chunks of `per_chunk`, each chunk sent and then
/// waited for (every record acknowledged): in a transaction that is
/// committed when `transactional`, else by an idempotent producer — the
/// same flow, so the difference is the transactions' cost.
fn chunked(
    bootstrap: &str,
    topic: &str,
    args: &TxnBenchArgs,
    per_chunk: u64,
    transactional: bool,
) -> Result<ProducerRun> {
    let id = format!("bench-{topic}");
    let extra: &[(&str, &str)] = if transactional {
        &[("transactional.id", &id)]
    } else {
        &[]
    };
    let p = producer(bootstrap, extra)?;
    p.client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("metadata")?;
    let value = vec![b't'; args.record_bytes];
    // Producer ids before the clock starts: init_transactions, or for the
    // idempotent producer one record (librdkafka asks for its id ~0.5 s
    // after it starts).
    if transactional {
        p.init_transactions(Duration::from_secs(60))
            .context("init_transactions")?;
    } else {
        send_all(&p, topic, 1, &value, 0, 1)?;
        drain(&p)?;
    }
    let mut commits = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let started = Instant::now();
    let mut sent = 0;
    while sent < args.records {
        let n = per_chunk.min(args.records - sent);
        if transactional {
            p.begin_transaction().context("begin_transaction")?;
        }
        send_all(&p, topic, args.partitions, &value, sent, n)?;
        // With the rdkafka crate delivery reports are events the
        // application serves: serve them until none is in flight, then
        // commit. (`commit_transaction` alone flushes with
        // `rd_kafka_flush`, which in event mode sleeps ~100 ms per commit.)
        let commit = Instant::now();
        drain(&p)?;

        if transactional {
            p.commit_transaction(Duration::from_secs(60))
                .context("commit_transaction")?;
            commits.record((commit.elapsed().as_micros() as u64).max(1))?;
        }
        sent += n;
    }
    Ok(ProducerRun {
        records_per_sec: args.records as f64 / started.elapsed().as_secs_f64(),
        commit_ms: transactional.then(|| {
            (
                commits.value_at_quantile(0.5) as f64 / 1000.0,
                commits.value_at_quantile(0.99) as f64 / 1000.0,
            )
        }),
    })
}

/// Records/s reading all `records` records of `topic` with
/// `isolation.level`, timed from the first record.
fn consume(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    records: u64,
    isolation: &str,
) -> Result<f64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-txn-unused")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("queued.min.messages", "1000000")
        .set("log_level", "3")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut started = Instant::now();
    let mut n = 0u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while n < records {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                if n == 0 {
                    started = Instant::now();
                }
                n += 1;
            }
            Some(Err(e)) => bail!("consume error: {e}"),
            None if Instant::now() > deadline => bail!("timed out after {n} of {records}"),
            None => {}
        }
    }
    Ok(records as f64 / started.elapsed().as_secs_f64())
}

pub async fn run(args: TxnBenchArgs) -> Result<()> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let runnel = ChildBroker::runnel(&dir.path().join("data"))?;
    eprintln!("machine: {}", machine());
    let addr = runnel.addr.clone();
    for n in &args.transaction_records {
        create_topic(&addr, &format!("bench-idem-{n}"), args.partitions).await?;
        create_topic(&addr, &format!("bench-txn-{n}"), args.partitions).await?;
    }
    let bar = produce::progress_bar(4 * args.transaction_records.len() as u64, "producers");
    let args = std::sync::Arc::new(args);
    let mut runs = Vec::new();
    for &n in &args.transaction_records {
        // Alternated (idempotent, transactional, transactional,
        // idempotent), best of two each: neither gains from going first.
        let mut best: [Option<ProducerRun>; 2] = [None, None];
        for transactional in [false, true, true, false] {
            let (a, b) = (addr.clone(), args.clone());
            let prefix = if transactional { "txn" } else { "idem" };
            let run = tokio::task::spawn_blocking(move || {
                chunked(&a, &format!("bench-{prefix}-{n}"), &b, n, transactional)
            })
            .await??;
            bar.inc(1);
            let slot = &mut best[transactional as usize];
            if slot
                .as_ref()
                .is_none_or(|b| run.records_per_sec > b.records_per_sec)
            {
                *slot = Some(run);
            }
        }
        let [idem, txn] = best;
        runs.push((
            n,
            idem.context("idempotent run")?,
            txn.context("transactional run")?,
        ));
    }
    bar.finish_and_clear();
    // read_committed vs read_uncommitted over the same committed data,
    // alternated, best of two each.
    let topic = format!(
        "bench-txn-{}",
        args.transaction_records.iter().max().unwrap_or(&1000)
    );
    let (a, records, partitions) = (addr.clone(), args.records, args.partitions);
    let (committed, uncommitted) = tokio::task::spawn_blocking(move || -> Result<(f64, f64)> {
        let mut c = consume(&a, &topic, partitions, records, "read_committed")?;
        let mut u = consume(&a, &topic, partitions, records, "read_uncommitted")?;
        u = u.max(consume(
            &a,
            &topic,
            partitions,
            records,
            "read_uncommitted",
        )?);
        c = c.max(consume(&a, &topic, partitions, records, "read_committed")?);
        Ok((c, u))
    })
    .await??;

    println!(
        "| records per transaction ({} records of {} B, {} partitions, acks=all; best of 2) | transactional records/s | commit p50 / p99 | idempotent, same chunks, records/s | transactional / idempotent |",
        args.records, args.record_bytes, args.partitions
    );
    println!("|---|---:|---:|---:|---:|");
    for (n, idem, txn) in &runs {
        let (p50, p99) = txn.commit_ms.unwrap_or_default();
        println!(
            "| {n} | {:.0} | {p50:.1} ms / {p99:.1} ms | {:.0} | {:.0}% |",
            txn.records_per_sec,
            idem.records_per_sec,
            100.0 * txn.records_per_sec / idem.records_per_sec
        );
    }
    println!();
    println!("| consumer (all {records} records, best of 2) | records/s | vs read_uncommitted |");
    println!("|---|---:|---:|");
    println!("| read_uncommitted | {uncommitted:.0} | 100% |");
    println!(
        "| read_committed | {committed:.0} | {:.0}% |",
        100.0 * committed / uncommitted
    );
    Ok(())
}
