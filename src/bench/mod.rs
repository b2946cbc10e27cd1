//! `runnel bench ...`: throughput and latency of the broker, each figure
//! next to a ceiling measured in the same run on the same machine.
//!
//! - `produce`: librdkafka producer → Runnel, and the same producer → the
//!   null broker (acknowledges without storing). The ratio says how much of
//!   the achievable throughput storage leaves.
//! - `consume`: raw Fetch requests and a librdkafka consumer reading data
//!   already written, next to single-stream loopback TCP.
//! - `group`, `registry`, `connect`, `cluster`: see their modules.
//!
//! Without `--bootstrap`, brokers are started as child processes in a
//! temporary directory and removed afterwards.

mod cluster;
mod connect;
mod consume;
mod group;
mod null_broker;
mod procs;
mod produce;
mod registry;
mod streams;
mod transactions;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use runnel_core::client::Client;

use procs::ChildBroker;
use produce::Workload;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Produce throughput and latency vs. a no-storage broker
    Produce(ProduceArgs),
    /// Fetch/consume throughput of written data vs. loopback TCP
    Consume(ConsumeArgs),
    /// Consumer groups: rebalance time, OffsetCommit rate, group vs. plain consume
    Group(GroupArgs),
    /// Schema registry: registrations/s, lookups/s, and produce throughput
    /// with broker-side validation on vs. off
    Registry(RegistryArgs),
    /// Connect and pipelines: records/s through file source -> topic,
    /// topic -> file sink and a pipeline with a WASM transform, vs. plain
    /// produce/consume
    Connect(connect::ConnectBenchArgs),
    /// A 3-node cluster on loopback: produce with RF 3 acks=all vs RF 1
    /// acks=1, consume, the failover window after a leader SIGKILL and
    /// follower catch-up, next to a single node in the same run
    Cluster(cluster::ClusterArgs),
    /// Stream processing: a stateless topology vs. a plain
    /// consume-then-produce loop, a windowed count over distinct keys
    /// (with and without its changelog), restoring its store
    Streams(streams::StreamsBenchArgs),
    /// Transactions: a transactional producer (N records per transaction)
    /// vs. an idempotent one, commit latency, read_committed vs.
    /// read_uncommitted consumption
    Transactions(transactions::TxnBenchArgs),
    /// Run the no-storage ceiling broker (used by `bench produce`)
    #[command(hide = true)]
    NullBroker {
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
    },
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Bytes per record value
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Partitions of the benchmark topic
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Producer acks (1 or -1)
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub acks: i32,
    /// Payload megabytes per run
    #[arg(long, default_value_t = 512)]
    pub megabytes: u64,
    /// Run every combination of 100 B / 1 KiB records, 1 / 8 partitions and acks 1 / -1
    #[arg(long)]
    pub matrix: bool,
    /// Runs per measurement; the median is reported
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Offer this many records per second (for latency) instead of as many as possible
    #[arg(long)]
    pub rate: Option<u64>,
    /// Producer linger.ms
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u32,
    /// Producer compression.type (none, gzip, snappy, lz4, zstd)
    #[arg(long, default_value = "none", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    pub compression: String,
    /// Compare topics with these compression.type values in one run (e.g.
    /// producer,uncompressed,gzip,snappy,lz4,zstd): the broker recompresses
    /// what the producer sent into the topic's codec. Records are varied
    /// JSON log lines instead of filler.
    #[arg(long, value_delimiter = ',')]
    pub topic_compression: Vec<String>,
}

#[derive(Args, Debug)]
pub struct GroupArgs {
    /// Members that join a new group at once
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// The broker's group_initial_rebalance_delay_ms (Kafka's default is 3000)
    #[arg(long, default_value_t = 3000)]
    pub initial_delay_ms: u64,
    /// Concurrent connections sending OffsetCommit requests
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Megabytes consumed with and without a group
    #[arg(long, default_value_t = 1024)]
    pub megabytes: u64,
}

#[derive(Args, Debug)]
pub struct RegistryArgs {
    /// Schemas registered, one subject each
    #[arg(long, default_value_t = 2000)]
    pub registrations: u64,
    /// Lookups of schemas by id
    #[arg(long, default_value_t = 50_000)]
    pub lookups: u64,
    /// Concurrent HTTP requests
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Megabytes of 1 KiB Avro records per produce run
    #[arg(long, default_value_t = 1024)]
    pub megabytes: u64,
    /// Produce runs per topic kind (validation on / off); the median is reported
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Partitions of the produce topics
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Run the clients on CPU 0 and the broker on CPU 1 (as when they are
    /// on different machines) instead of letting them share both
    #[arg(long)]
    pub pin: bool,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Bytes per record value
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Partitions of the benchmark topic
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Megabytes written before reading them back
    #[arg(long, default_value_t = 2048)]
    pub megabytes: u64,
}

pub async fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::NullBroker { addr, partitions } => null_broker::run(&addr, partitions).await,
        BenchCommand::Produce(args) => bench_produce(args).await,
        BenchCommand::Consume(args) => bench_consume(args).await,
        BenchCommand::Group(args) => bench_group(args).await,
        BenchCommand::Registry(args) => bench_registry(args).await,
        BenchCommand::Connect(args) => connect::run(args).await,
        BenchCommand::Cluster(args) => cluster::run(args).await,
        BenchCommand::Streams(args) => streams::run(args).await,
        BenchCommand::Transactions(args) => transactions::run(args).await,
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}; client and broker on the same machine")
}

async fn delete_topic(addr: &str, name: &str) -> Result<()> {
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::DeleteTopicsRequest;
    let mut client = Client::connect(addr, "runnel-bench").await?;
    let mut t = DeleteTopicState::default();
    t.name = Some(TopicName(StrBytes::from_string(name.to_string())));
    let mut request = DeleteTopicsRequest::default();
    request.topics = vec![t];
    client.send(&request).await?;
    Ok(())
}

/// Buffered sequential write of `bytes` in 1 MiB chunks to a file in
/// `dir`, then delete it: what the filesystem accepts, with no broker.
fn file_write_mb_per_sec(dir: &std::path::Path, bytes: u64) -> Result<f64> {
    use std::io::Write;
    let path = dir.join("baseline-write.tmp");
    let chunk = vec![b'w'; 1 << 20];
    let started = std::time::Instant::now();
    let mut f = std::fs::File::create(&path)?;
    let mut written = 0u64;
    while written < bytes {
        f.write_all(&chunk)?;
        written += chunk.len() as u64;
    }
    let elapsed = started.elapsed();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(written as f64 / elapsed.as_secs_f64() / 1e6)
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The run with the median throughput.
fn median(mut runs: Vec<produce::ProduceResult>) -> produce::ProduceResult {
    runs.sort_by(|a, b| a.mb_per_sec().total_cmp(&b.mb_per_sec()));
    runs.swap_remove(runs.len() / 2)
}

async fn create_topic(addr: &str, name: &str, partitions: i32) -> Result<()> {
    create_topic_with(addr, name, partitions, &[]).await
}

async fn create_topic_with(
    addr: &str,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<()> {
    create_topic_replicated(addr, name, partitions, 1, configs).await
}

async fn create_topic_replicated(
    addr: &str,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(&str, &str)],
) -> Result<()> {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    let mut client = Client::connect(addr, "runnel-bench").await?;
    let mut t = CreatableTopic::default();
    t.name = TopicName(StrBytes::from_string(name.to_string()));
    t.num_partitions = partitions;
    t.replication_factor = replication_factor;
    for (k, v) in configs {
        let mut c = CreatableTopicConfig::default();
        c.name = StrBytes::from_string(k.to_string());
        c.value = Some(StrBytes::from_string(v.to_string()));
        t.configs.push(c);
    }
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![t];
    let response = client.send(&request).await?;
    let code = response.topics[0].error_code;
    anyhow::ensure!(code == 0, "creating {name}: error {code}");
    Ok(())
}

async fn produce_once(
    addr: &str,
    topic: &str,
    workload: &Workload,
    label: &str,
) -> Result<produce::ProduceResult> {
    let bar = produce::progress_bar(workload.records, label);
    let (addr, topic, w, b) = (
        addr.to_string(),
        topic.to_string(),
        workload.clone(),
        bar.clone(),
    );
    let result = tokio::task::spawn_blocking(move || produce::run(&addr, &topic, &w, &b)).await??;
    bar.finish_and_clear();
    Ok(result)
}

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

/// The broker's user-mode CPU seconds per GB of payload since
/// `before`, as text ("?" where /proc cannot tell).
fn cpu_per_gb(broker: &ChildBroker, before: Option<f64>, workload: &Workload) -> String {
    let gb = (workload.records * workload.record_bytes as u64) as f64 / 1e9;
    match (before, broker.user_cpu_seconds()) {
        (Some(a), Some(b)) => format!("{:.2}", (b - a) / gb),
        _ => "?".into(),
    }
}

/// A librdkafka codec name as the `&'static str` the workload takes.
fn codec_name(name: &str) -> Result<&'static str> {
    ["none", "gzip", "snappy", "lz4", "zstd"]
        .into_iter()
        .find(|c| *c == name)
        .with_context(|| format!("unknown codec {name}"))
}

/// Produce into topics of each `compression.type`, alternating them in
/// every repeat, so the cost of recompressing on append is measured
/// against `producer` (no recompression) on the same machine state.
async fn bench_produce_topic_codecs(args: &ProduceArgs) -> Result<()> {
    for c in &args.topic_compression {
        anyhow::ensure!(
            runnel_core::storage::validator::TopicCompression::parse(c).is_some(),
            "'{c}' is not a topic compression.type"
        );
    }
    let dir = tempfile::tempdir().context("temp dir")?;
    let runnel = ChildBroker::runnel(&dir.path().join("data"))?;
    eprintln!("machine: {}", machine());
    let size = args.record_bytes;
    let workload = Workload {
        record_bytes: size,
        partitions: args.partitions,
        acks: args.acks,
        records: (args.megabytes * 1_000_000 / size as u64).max(1000),
        rate: args.rate,
        linger_ms: args.linger_ms,
        payload: Some(Arc::new(produce::text_corpus(4 << 20))),
        sliding_payload: true,
        compression: codec_name(&args.compression)?,
    };
    let mut runs: Vec<Vec<produce::ProduceResult>> = vec![Vec::new(); args.topic_compression.len()];
    let mut cpu: Vec<Vec<String>> = vec![Vec::new(); args.topic_compression.len()];
    for r in 0..args.repeat.max(1) {
        for (i, codec) in args.topic_compression.iter().enumerate() {
            let topic = format!("bench-{codec}-{r}");
            create_topic_with(
                &runnel.addr,
                &topic,
                args.partitions,
                &[("compression.type", codec)],
            )
            .await?;
            let cpu_before = runnel.user_cpu_seconds();
            let result = produce_once(&runnel.addr, &topic, &workload, codec).await?;
            let cpu_run = cpu_per_gb(&runnel, cpu_before, &workload);
            eprintln!(
                "  run {}: topic {codec}: {:.0} MB/s (p50 {} ms, p99 {} ms), broker user CPU {cpu_run} s/GB",
                r + 1,
                result.mb_per_sec(),
                ms(result.p50_us),
                ms(result.p99_us)
            );
            runs[i].push(result);
            cpu[i].push(cpu_run);
            delete_topic(&runnel.addr, &topic).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    println!(
        "| topic compression.type | producer codec | record | Runnel records/s | Runnel MB/s | p50 ms | p99 ms | vs first row | broker user CPU s/GB (each run) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut first = None;
    for ((codec, results), cpu) in args.topic_compression.iter().zip(runs).zip(cpu) {
        let r = median(results);
        let base = *first.get_or_insert(r.mb_per_sec());
        println!(
            "| {codec} | {} | {size} B | {:.0} | {:.0} | {} | {} | {:.0}% | {} |",
            args.compression,
            r.records_per_sec(),
            r.mb_per_sec(),
            ms(r.p50_us),
            ms(r.p99_us),
            100.0 * r.mb_per_sec() / base,
            cpu.join(" / ")
        );
    }
    Ok(())
}

async fn bench_produce(args: ProduceArgs) -> Result<()> {
    if !args.topic_compression.is_empty() {
        return bench_produce_topic_codecs(&args).await;
    }
    let combos: Vec<(usize, i32, i32)> = if args.matrix {
        let mut v = Vec::new();
        for size in [100, 1024] {
            for partitions in [1, 8] {
                for acks in [1, -1] {
                    v.push((size, partitions, acks));
                }
            }
        }
        v
    } else {
        vec![(args.record_bytes, args.partitions, args.acks)]
    };
    let dir = tempfile::tempdir().context("temp dir")?;
    let runnel = ChildBroker::runnel(&dir.path().join("data"))?;
    eprintln!("machine: {}", machine());
    if let Some(rate) = args.rate {
        eprintln!(
            "offered load: {rate} records/s, linger.ms={}",
            args.linger_ms
        );
    }
    println!(
        "| record | partitions | acks | Runnel records/s | Runnel MB/s | p50 ms | p99 ms | no-storage MB/s | Runnel / no-storage | file write MB/s | Runnel / file write |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let repeat = args.repeat.max(1);
    for (i, (size, partitions, acks)) in combos.into_iter().enumerate() {
        let records = (args.megabytes * 1_000_000 / size as u64).max(1000);
        let workload = Workload {
            record_bytes: size,
            partitions,
            acks,
            records,
            rate: args.rate,
            linger_ms: args.linger_ms,
            payload: None,
            sliding_payload: false,
            compression: codec_name(&args.compression)?,
        };
        let (mut ceilings, mut runs, mut disk) = (Vec::new(), Vec::new(), Vec::new());
        // Alternate ceiling and Runnel runs so drift on the machine hits both.
        for r in 0..repeat {
            let null = ChildBroker::null(partitions)?;
            ceilings
                .push(produce_once(&null.addr, "bench", &workload, "no-storage ceiling").await?);
            drop(null);
            let topic = format!("bench-{i}-{r}");
            create_topic(&runnel.addr, &topic, partitions).await?;
            let cpu_before = runnel.user_cpu_seconds();
            runs.push(produce_once(&runnel.addr, &topic, &workload, "runnel").await?);
            let cpu = cpu_per_gb(&runnel, cpu_before, &workload);
            eprintln!(
                "  run {}: no-storage {:.0} MB/s (p50 {} ms, p99 {} ms), runnel {:.0} MB/s (p50 {} ms, p99 {} ms), broker user CPU {cpu} s/GB",
                r + 1,
                ceilings[r].mb_per_sec(),
                ms(ceilings[r].p50_us),
                ms(ceilings[r].p99_us),
                runs[r].mb_per_sec(),
                ms(runs[r].p50_us),
                ms(runs[r].p99_us),
            );
            // Deleting drops the written data, so each run starts with the
            // same amount of page cache to fill.
            delete_topic(&runnel.addr, &topic).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let bytes = workload.records * size as u64;
            let data_dir = dir.path().to_path_buf();
            disk.push(
                tokio::task::spawn_blocking(move || file_write_mb_per_sec(&data_dir, bytes))
                    .await??,
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (ceiling, r, disk) = (median(ceilings), median(runs), median_f64(disk));
        println!(
            "| {size} B | {partitions} | {acks} | {:.0} | {:.0} | {} | {} | {:.0} | {:.0}% | {disk:.0} | {:.0}% |",
            r.records_per_sec(),
            r.mb_per_sec(),
            ms(r.p50_us),
            ms(r.p99_us),
            ceiling.mb_per_sec(),
            100.0 * r.mb_per_sec() / ceiling.mb_per_sec(),
            100.0 * r.mb_per_sec() / disk
        );
    }
    Ok(())
}

async fn bench_consume(args: ConsumeArgs) -> Result<()> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let runnel = ChildBroker::runnel(&dir.path().join("data"))?;
    eprintln!("machine: {}", machine());
    let topic = "consume-bench";
    create_topic(&runnel.addr, topic, args.partitions).await?;
    let records = (args.megabytes * 1_000_000 / args.record_bytes as u64).max(1000);
    let workload = Workload {
        record_bytes: args.record_bytes,
        partitions: args.partitions,
        acks: 1,
        records,
        rate: None,
        linger_ms: 5,
        payload: None,
        sliding_payload: false,
        compression: "none",
    };
    produce_once(&runnel.addr, topic, &workload, "writing test data").await?;
    let per_partition = records / args.partitions as u64;
    let remainder = records % args.partitions as u64;
    let end_offsets: Vec<i64> = (0..args.partitions as u64)
        .map(|p| (per_partition + u64::from(p < remainder)) as i64)
        .collect();

    let tcp =
        tokio::task::spawn_blocking(|| consume::loopback_tcp(Duration::from_secs(2))).await??;
    let raw = consume::raw_fetch(&runnel.addr, topic, &end_offsets).await?;
    let (addr, partitions) = (runnel.addr.clone(), args.partitions);
    let rd = tokio::task::spawn_blocking(move || {
        consume::rdkafka_consume(&addr, topic, partitions, records)
    })
    .await??;
    println!("| reader | record | partitions | records/s | MB/s | loopback TCP MB/s | ratio |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, r) in [
        ("raw Fetch (batch bytes)", &raw),
        ("librdkafka consumer (payload bytes)", &rd),
    ] {
        println!(
            "| {name} | {} B | {} | {:.0} | {:.0} | {:.0} | {:.0}% |",
            args.record_bytes,
            args.partitions,
            r.records_per_sec(),
            r.mb_per_sec(),
            tcp,
            100.0 * r.mb_per_sec() / tcp
        );
    }
    Ok(())
}

async fn bench_group(args: GroupArgs) -> Result<()> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let yaml = format!(
        "group_initial_rebalance_delay_ms: {}\n",
        args.initial_delay_ms
    );
    let runnel = ChildBroker::runnel_with_config(&dir.path().join("data"), &yaml)?;
    eprintln!("machine: {}", machine());
    let members = args.members.max(1);
    create_topic(&runnel.addr, "bench-group", (members as i32 + 1) * 2).await?;
    let (addr, n) = (runnel.addr.clone(), members);
    let (first, join) =
        tokio::task::spawn_blocking(move || group::rebalance_times(&addr, "bench-group", n))
            .await??;

    create_topic(&runnel.addr, "bench-commits", 1).await?;
    let (commits, produces) =
        group::commit_rate(&runnel.addr, "bench-commits", args.connections).await?;

    let partitions = 4;
    create_topic(&runnel.addr, "bench-consume", partitions).await?;
    let records = (args.megabytes * 1_000_000 / 1024).max(1000);
    let workload = Workload {
        record_bytes: 1024,
        partitions,
        acks: 1,
        records,
        rate: None,
        linger_ms: 5,
        payload: None,
        sliding_payload: false,
        compression: "none",
    };
    produce_once(
        &runnel.addr,
        "bench-consume",
        &workload,
        "writing test data",
    )
    .await?;
    let addr = runnel.addr.clone();
    let (grouped, plain) = tokio::task::spawn_blocking(move || {
        group::group_vs_plain(&addr, "bench-consume", partitions, records)
    })
    .await??;

    println!("| measurement | result | comparison (same run) |");
    println!("|---|---:|---|");
    println!(
        "| {members} members join a new group until all hold partitions (initial delay {} ms) | {first:.0} ms | initial delay alone: {} ms |",
        args.initial_delay_ms, args.initial_delay_ms
    );
    println!("| one more member joins the stable group, until all {} hold partitions again | {join:.0} ms | |", members + 1);
    println!(
        "| OffsetCommit requests/s ({} connections, one partition each) | {commits:.0} | Produce of one small record: {produces:.0} requests/s ({:.0}%) |",
        args.connections,
        100.0 * commits / produces
    );
    println!(
        "| consume 1 KiB records with a group (subscribe, auto-commit; best of 2) | {grouped:.0} MB/s | assigned partitions, no group (best of 2): {plain:.0} MB/s ({:.0}%) |",
        100.0 * grouped / plain
    );
    Ok(())
}

async fn bench_registry(args: RegistryArgs) -> Result<()> {
    let dir = tempfile::tempdir().context("temp dir")?;
    if args.pin {
        procs::pin_self(0)?;
    }
    let runnel =
        ChildBroker::runnel_with_registry(&dir.path().join("data"), args.pin.then_some(1))?;
    eprintln!("machine: {}", machine());
    if args.pin {
        eprintln!("clients pinned to CPU 0, broker to CPU 1");
    }
    let url = runnel
        .registry_url
        .clone()
        .context("the broker runs no registry")?;
    let rest = registry::Rest::new(&url)?;
    // The registry answers once it has read the _schemas topic.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while registry::gets(&rest, 1, 1, |_| "/".to_string())
        .await
        .is_err()
    {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the schema registry did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = args.concurrency.max(1);
    let n = args.registrations.max(100);
    create_topic(&runnel.addr, "bench-log-writes", 1).await?;
    let half = n / 2;
    let reg_1 = registry::registrations(&rest, half.min(500), 1).await?;
    let log_1 = registry::log_writes(&runnel.addr, "bench-log-writes", half.min(500), 1).await?;
    // Subjects continue after the sequential ones.
    let first = half.min(500);
    let reg_c = registry::registrations_from(&rest, first, n - first, c).await?;
    let log_c = registry::log_writes(&runnel.addr, "bench-log-writes", n, c).await?;
    let ids = n;
    let lookups_n = args.lookups.max(1000);
    let lookups = registry::gets(&rest, lookups_n, c, move |i| {
        format!("/schemas/ids/{}", i % ids + 1)
    })
    .await?;
    let ceiling = registry::gets(&rest, lookups_n, c, |_| "/".to_string()).await?;

    // Produce with validation on vs off: the same 1 KiB Avro records.
    let event_id = rest
        .register("bench.PageView", registry::EVENT_SCHEMA)
        .await?;
    let order_id = rest.register("bench.Order", registry::ORDER_SCHEMA).await?;
    let payloads = [
        (
            "page-view events (12 fields, mostly text)",
            registry::event_payload(event_id, 1024)?,
        ),
        (
            "orders (8 fields and an array of ~60 small records)",
            registry::order_payload(order_id, 1024)?,
        ),
    ];
    let validated = [
        ("confluent.value.schema.validation", "true"),
        (
            "confluent.value.subject.name.strategy",
            "io.confluent.kafka.serializers.subject.RecordNameStrategy",
        ),
    ];
    let mut rows = Vec::new();
    for (p, (label, payload)) in payloads.into_iter().enumerate() {
        let record_bytes = payload.len();
        let records = (args.megabytes * 1_000_000 / record_bytes as u64).max(1000);
        let workload = Workload {
            record_bytes,
            partitions: args.partitions,
            acks: 1,
            records,
            rate: None,
            linger_ms: 5,
            payload: Some(Arc::new(payload)),
            sliding_payload: false,
            compression: "none",
        };
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for r in 0..args.repeat.max(1) {
            for (kind, configs) in [("plain", &[][..]), ("validated", &validated[..])] {
                let topic = format!("bench-avro-{p}-{kind}-{r}");
                create_topic_with(&runnel.addr, &topic, args.partitions, configs).await?;
                let cpu_before = runnel.user_cpu_seconds().unwrap_or(0.0);
                let result = produce_once(&runnel.addr, &topic, &workload, kind).await?;
                let cpu_us = (runnel.user_cpu_seconds().unwrap_or(0.0) - cpu_before) * 1e6
                    / result.records as f64;
                eprintln!(
                    "  {label}, run {}: {kind} {:.0} MB/s ({:.0} records/s), broker user CPU {cpu_us:.2} us/record",
                    r + 1,
                    result.mb_per_sec(),
                    result.records_per_sec()
                );
                if configs.is_empty() {
                    off.push((result, cpu_us));
                } else {
                    on.push((result, cpu_us));
                }
                delete_topic(&runnel.addr, &topic).await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        let cpu = |runs: &[(produce::ProduceResult, f64)]| {
            median_f64(runs.iter().map(|(_, c)| *c).collect())
        };
        let (cpu_on, cpu_off) = (cpu(&on), cpu(&off));
        let on = median(on.into_iter().map(|(r, _)| r).collect());
        let off = median(off.into_iter().map(|(r, _)| r).collect());
        rows.push((label, record_bytes, on, off, cpu_on, cpu_off));
    }
    println!("| measurement | result | comparison (same run) | ratio |");
    println!("|---|---:|---|---:|");
    println!(
        "| registrations/s, 1 client | {reg_1:.0} | acks=all produce round trips/s, 1 client: {log_1:.0} | {:.0}% |",
        100.0 * reg_1 / log_1
    );
    println!(
        "| registrations/s, {c} concurrent | {reg_c:.0} | acks=all produce round trips/s, {c} concurrent: {log_c:.0} | {:.0}% |",
        100.0 * reg_c / log_c
    );
    println!(
        "| lookups by id/s ({c} concurrent, {n} ids) | {lookups:.0} | GET / requests/s: {ceiling:.0} | {:.0}% |",
        100.0 * lookups / ceiling
    );
    for (label, record_bytes, on, off, cpu_on, cpu_off) in &rows {
        println!(
            "| produce {record_bytes} B Avro {label}, validation on | {:.0} MB/s ({:.0} records/s) | validation off: {:.0} MB/s ({:.0} records/s) | {:.0}% |",
            on.mb_per_sec(),
            on.records_per_sec(),
            off.mb_per_sec(),
            off.records_per_sec(),
            100.0 * on.mb_per_sec() / off.mb_per_sec()
        );
        println!(
            "| broker user-mode CPU per record, {label}, validation on | {cpu_on:.2} us | validation off: {cpu_off:.2} us | +{:.0}% |",
            100.0 * (cpu_on - cpu_off) / cpu_off
        );
    }
    Ok(())
}
