//! `runnel bench streams`: the stream-processing library against a broker
//! started for the run, each figure next to a comparison from the same
//! run.
//!
//! - stateless: a `filter` + `map_values` topology vs. a plain loop that
//!   consumes the same records and produces the same result (librdkafka
//!   both, one thread each, `acks=all`);
//! - windowed count: one-minute windows over records with distinct keys
//!   (records/s, on one core), with and without the changelog (what the
//!   store writes cost);
//! - restore: a new instance of the windowed count reads its changelog
//!   back (records/s);
//! - interactive queries: `GET /stores/{store}/{key}` against a count
//!   per key (gets/s and latency from concurrent clients), while the
//!   stream thread is idle and while it processes, and what a query load
//!   costs the processing (records/s with and without it).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use runnel_streams::{
    serdes, Consumed, KafkaStreams, Produced, Stored, StreamsBuilder, StreamsConfig, TimeWindows,
    Topology,
};

use super::procs::ChildBroker;

#[derive(Args, Debug)]
pub struct StreamsBenchArgs {
    /// Records in the stateless runs
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
    /// Distinct keys (and records) in the windowed count
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: usize,
    /// Bytes per record value
    #[arg(long, default_value_t = 100)]
    pub record_bytes: usize,
    /// Kafka address of a running broker (default: start one)
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// Concurrent HTTP clients of the interactive-query run
    #[arg(long, default_value_t = 8)]
    pub query_clients: usize,
}

const STATELESS_IN: &str = "bench-streams-in";
const KEYED_IN: &str = "bench-streams-keys";

pub async fn run(args: StreamsBenchArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let broker;
    let bootstrap = match &args.bootstrap {
        Some(b) => b.clone(),
        None => {
            broker = ChildBroker::runnel(&tmp.path().join("data"))?;
            broker.addr.clone()
        }
    };
    println!("machine: {}", super::machine());
    super::create_topic(&bootstrap, STATELESS_IN, 1).await?;
    super::create_topic(&bootstrap, "bench-plain-out", 1).await?;
    super::create_topic(&bootstrap, "bench-streams-out", 1).await?;
    super::create_topic(&bootstrap, KEYED_IN, 1).await?;

    let b = bootstrap.clone();
    let state = tmp.path().join("state");
    let (records, bytes, keys) = (args.records, args.record_bytes, args.keys);
    tokio::task::spawn_blocking(move || -> Result<()> {
        eprintln!("writing {records} records of {bytes} B, and {keys} records with distinct keys ...");
        fill(&b, STATELESS_IN, records, bytes, false)?;
        fill(&b, KEYED_IN, keys, bytes, true)?;

        eprintln!("plain consume-then-produce loop ...");
        let plain = plain_loop(&b, records)?;
        eprintln!("stateless topology ...");
        let stateless = run_app(&b, stateless_topology(), "bench-stateless", records, None)?;
        println!();
        println!("| stateless filter + map_values, {records} records of {bytes} B, 1 partition | records/s | s |");
        println!("|---|---:|---:|");
        println!("| plain consume → produce loop (librdkafka) | {:.0} | {:.2} |", records as f64 / plain.as_secs_f64(), plain.as_secs_f64());
        println!(
            "| runnel-streams topology | {:.0} ({:.0}% of the loop) | {:.2} |",
            records as f64 / stateless.elapsed.as_secs_f64(),
            100.0 * plain.as_secs_f64() / stateless.elapsed.as_secs_f64(),
            stateless.elapsed.as_secs_f64()
        );
        println!(
            "\nstart → first record processed (joining the group): {:.2} s",
            stateless.startup.as_secs_f64()
        );

        let dir = |name: &str| Some(state.join(name));
        eprintln!("windowed count, stores in memory ...");
        let memory = run_app(&b, windowed_count(true), "bench-wc-memory", keys, None)?;
        eprintln!("windowed count, stores on disk without a changelog ...");
        let unlogged = run_app(&b, windowed_count(false), "bench-wc-unlogged", keys, dir("unlogged"))?;
        eprintln!("windowed count, stores on disk with their changelog ...");
        let logged = run_app(&b, windowed_count(true), "bench-wc", keys, dir("first"))?;
        eprintln!("restoring the windowed count's store on a new machine ...");
        let fresh = run_app(&b, windowed_count(true), "bench-wc", 0, dir("second"))?;
        eprintln!("restarting the windowed count where it ran ...");
        let again = run_app(&b, windowed_count(true), "bench-wc", 0, dir("first"))?;
        println!();
        println!("| windowed count (1 min tumbling), {keys} distinct keys, 1 partition | records/s | s |");
        println!("|---|---:|---:|");
        let rate = |r: &AppRun| keys as f64 / r.elapsed.as_secs_f64();
        println!("| store in memory, with changelog | {:.0} | {:.2} |", rate(&memory), memory.elapsed.as_secs_f64());
        println!("| store on disk (fjall), no changelog | {:.0} | {:.2} |", rate(&unlogged), unlogged.elapsed.as_secs_f64());
        println!("| store on disk (fjall), with changelog | {:.0} | {:.2} |", rate(&logged), logged.elapsed.as_secs_f64());
        for (what, r) in [("a new instance with an empty state directory", &fresh), ("a restart on the same state directory (clean close, checkpoint)", &again)] {
            let m = &r.metrics;
            println!(
                "| restore: {what}: {} changelog records | {:.0} | {:.2} |",
                m.records_restored,
                m.records_restored as f64 / m.restore_time.as_secs_f64().max(1e-9),
                m.restore_time.as_secs_f64()
            );
        }
        Ok(())
    })
    .await??;
    queries(&bootstrap, args.keys.min(500_000), args.query_clients).await?;
    Ok(())
}

/// A count per key over `keys` records of distinct keys, processed with
/// and without a query load, then queried while idle.
async fn queries(bootstrap: &str, keys: usize, clients: usize) -> Result<()> {
    let b = bootstrap.to_string();
    // The same application with its query server on, unused: what
    // answering queries costs is the only difference.
    eprintln!("count per key without queries ...");
    let quiet_addr = format!("127.0.0.1:{}", super::procs::free_port()?);
    let quiet = tokio::task::spawn_blocking(move || {
        run_app_with(
            &b,
            key_count(),
            "bench-kv-quiet",
            keys,
            None,
            Some(quiet_addr),
        )
    })
    .await??;
    let addr = format!("127.0.0.1:{}", super::procs::free_port()?);
    let mut config = StreamsConfig::new("bench-kv-queried", bootstrap);
    config.state_dir = None;
    config.commit_interval = Duration::from_secs(5);
    config.application_server = Some(addr.clone());
    eprintln!("count per key under a query load of {clients} clients ...");
    let started = Instant::now();
    let streams = KafkaStreams::start(key_count(), config)?;
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/stores/kv-counts");
    // Wait for the server, then load it until the count is done.
    let deadline = Instant::now() + Duration::from_secs(60);
    while http
        .get(format!("http://{addr}/stores"))
        .send()
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("the query server at {addr} never answered");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy_load = load(&http, &url, keys, clients, done.clone());
    let (busy, processed) = tokio::join!(busy_load, async {
        let mut first = None;
        loop {
            let m = streams.metrics();
            if first.is_none() && m.tasks.records_processed > 0 {
                first = Some(Instant::now());
            }
            if m.tasks.records_processed as usize >= keys || !streams.is_running() {
                done.store(true, std::sync::atomic::Ordering::Release);
                return first.map_or_else(|| started.elapsed(), |f| f.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let busy = busy?;
    let idle_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = idle_done.clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.store(true, std::sync::atomic::Ordering::Release);
    });
    let idle = load(&http, &url, keys, clients, idle_done).await?;
    timer.await?;
    tokio::task::spawn_blocking(move || streams.close()).await??;
    println!();
    println!(
        "| count per key, {keys} distinct keys, 1 partition, store in memory | records/s | s |"
    );
    println!("|---|---:|---:|");
    println!(
        "| query server on, no queries | {:.0} | {:.2} |",
        keys as f64 / quiet.elapsed.as_secs_f64(),
        quiet.elapsed.as_secs_f64()
    );
    println!(
        "| under a query load ({clients} HTTP clients) | {:.0} ({:.0}% of no queries) | {:.2} |",
        keys as f64 / processed.as_secs_f64(),
        100.0 * quiet.elapsed.as_secs_f64() / processed.as_secs_f64(),
        processed.as_secs_f64()
    );
    println!();
    println!("| GET /stores/kv-counts/{{key}}, {clients} concurrent clients | gets/s | p50 ms | p99 ms | found |");
    println!("|---|---:|---:|---:|---:|");
    for (what, l) in [
        ("while the stream thread processes", &busy),
        ("stream thread idle", &idle),
    ] {
        println!(
            "| {what} | {:.0} | {:.2} | {:.2} | {:.0}% |",
            l.gets as f64 / l.elapsed.as_secs_f64(),
            l.latency.value_at_quantile(0.5) as f64 / 1000.0,
            l.latency.value_at_quantile(0.99) as f64 / 1000.0,
            100.0 * l.found as f64 / l.gets.max(1) as f64
        );
    }
    Ok(())
}

/// What a query load measured.
struct Load {
    gets: u64,
    found: u64,
    elapsed: Duration,
    /// Microseconds.
    latency: hdrhistogram::Histogram<u64>,
}

/// `clients` loops of `GET url/<key>` over random keys until `done`.
async fn load(
    http: &reqwest::Client,
    url: &str,
    keys: usize,
    clients: usize,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<Load> {
    let started = Instant::now();
    let mut workers = Vec::new();
    for c in 0..clients {
        let (http, url, done) = (http.clone(), url.to_string(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut latency = hdrhistogram::Histogram::<u64>::new(3).expect("a histogram");
            let (mut gets, mut found) = (0u64, 0u64);
            let mut x = c as u64 * 7919 + 1;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let key = format!("key-{:09}", (x >> 33) as usize % keys.max(1));
                let t = Instant::now();
                let response = http.get(format!("{url}/{key}")).send().await?;
                if response.status().is_success() {
                    found += 1;
                }
                response.bytes().await?;
                latency.record(t.elapsed().as_micros() as u64).ok();
                gets += 1;
            }
            anyhow::Ok((gets, found, latency))
        }));
    }
    let mut out = Load {
        gets: 0,
        found: 0,
        elapsed: Duration::ZERO,
        latency: hdrhistogram::Histogram::new(3)?,
    };
    for w in workers {
        let (gets, found, latency) = w.await??;
        out.gets += gets;
        out.found += found;
        out.latency.add(latency)?;
    }
    out.elapsed = started.elapsed();
    Ok(out)
}

/// A count per key of the keyed input, in the store `kv-counts`.
fn key_count() -> Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream(KEYED_IN, Consumed::with(serdes::string(), serdes::bytes()))
        .group_by_key(serdes::string(), serdes::bytes())
        .count(Stored::as_("kv-counts"));
    builder.build().expect("a valid topology")
}

fn producer(bootstrap: &str) -> Result<ThreadedProducer<DefaultProducerContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("acks", "all")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("creating a producer")
}

fn send(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: Option<&[u8]>,
    value: &[u8],
) -> Result<()> {
    let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(value);
    if let Some(k) = key {
        r = r.key(k);
    }
    loop {
        match p.send(r) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                back,
            )) => {
                p.poll(Duration::from_millis(5));
                r = back;
            }
            Err((e, _)) => bail!("producing to {topic}: {e}"),
        }
    }
}

/// Writes `count` records; with `distinct_keys`, record `i` has key `i`
/// and a timestamp inside one minute.
fn fill(
    bootstrap: &str,
    topic: &str,
    count: usize,
    bytes: usize,
    distinct_keys: bool,
) -> Result<()> {
    let p = producer(bootstrap)?;
    let value = vec![b'v'; bytes];
    for i in 0..count {
        let key = format!("key-{i:09}");
        send(&p, topic, distinct_keys.then_some(key.as_bytes()), &value)?;
    }
    p.flush(Duration::from_secs(120))
        .context("flushing the input")?;
    Ok(())
}

fn transform(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() + 1);
    out.extend(v.iter().map(u8::to_ascii_uppercase));
    out.push(b'!');
    out
}

fn plain_loop(bootstrap: &str, records: usize) -> Result<Duration> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-plain-loop")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(STATELESS_IN, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let p = producer(bootstrap)?;
    let started = Instant::now();
    let mut seen = 0;
    let deadline = started + Duration::from_secs(600);
    while seen < records {
        if Instant::now() > deadline {
            bail!("the plain loop read only {seen} of {records} records");
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            seen += 1;
            let v = m.payload().unwrap_or_default();
            if v.first() != Some(&b'#') {
                send(&p, "bench-plain-out", m.key(), &transform(v))?;
            }
        }
    }
    p.flush(Duration::from_secs(120))?;
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(STATELESS_IN, 0, Offset::Offset(records as i64))?;
    consumer.commit(&offsets, rdkafka::consumer::CommitMode::Sync)?;
    Ok(started.elapsed())
}

fn stateless_topology() -> Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream(
            STATELESS_IN,
            Consumed::with(serdes::nullable(serdes::bytes()), serdes::bytes()),
        )
        .filter(|_, v| v.first() != Some(&b'#'))
        .map_values(|v: Vec<u8>| transform(&v))
        .to(
            "bench-streams-out",
            Produced::with(serdes::nullable(serdes::bytes()), serdes::bytes()),
        );
    builder.build().expect("a valid topology")
}

fn windowed_count(logged: bool) -> Topology {
    let builder = StreamsBuilder::new();
    let stored = if logged {
        Stored::as_("counts")
    } else {
        Stored::as_("counts").without_logging()
    };
    builder
        .stream(KEYED_IN, Consumed::with(serdes::bytes(), serdes::bytes()))
        .group_by_key(serdes::bytes(), serdes::bytes())
        .windowed_by(TimeWindows::of_size_with_grace(60_000, 3_600_000_000))
        .count(stored);
    builder.build().expect("a valid topology")
}

struct AppRun {
    /// Start → the first record processed (joining the group, restoring).
    startup: Duration,
    /// The first record processed → everything written and committed.
    elapsed: Duration,
    metrics: runnel_streams::StreamsMetrics,
}

/// Starts an application, waits until it processed `records` (all its
/// input) and closed (everything written and committed). Timed from its
/// first record (20 ms resolution): the group join before it is
/// reported apart.
fn run_app(
    bootstrap: &str,
    topology: Topology,
    app: &str,
    records: usize,
    state_dir: Option<std::path::PathBuf>,
) -> Result<AppRun> {
    run_app_with(bootstrap, topology, app, records, state_dir, None)
}

/// [`run_app`] with a query server on `server`.
fn run_app_with(
    bootstrap: &str,
    topology: Topology,
    app: &str,
    records: usize,
    state_dir: Option<std::path::PathBuf>,
    server: Option<String>,
) -> Result<AppRun> {
    let mut config = StreamsConfig::new(app, bootstrap);
    config.state_dir = state_dir;
    config.application_server = server;
    config.commit_interval = Duration::from_secs(5);
    let started = Instant::now();
    let streams = KafkaStreams::start(topology, config)?;
    let deadline = started + Duration::from_secs(900);
    let mut first = None;
    loop {
        let m = streams.metrics();
        if first.is_none() && m.tasks.records_processed > 0 {
            first = Some(Instant::now());
        }
        let restored = records == 0 && !m.active_tasks.is_empty();
        if m.tasks.records_processed as usize >= records && (records > 0 || restored) {
            break;
        }
        if !streams.is_running() || Instant::now() > deadline {
            let processed = m.tasks.records_processed;
            streams.close()?;
            bail!("{app} processed {processed} of {records} records");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let metrics = streams.metrics();
    streams.close()?;
    Ok(AppRun {
        startup: first.map_or(Duration::ZERO, |f| f.duration_since(started)),
        elapsed: first.map_or_else(|| started.elapsed(), |f| f.elapsed()),
        metrics,
    })
}
