//! `runnel bench connect`: records/s through the connect runtime and the
//! pipeline runner, each next to a plain librdkafka produce or consume of
//! the same records in the same run.
//!
//! - file source → topic (the worker inside `runnel serve`), against a
//!   plain produce of the same lines with acks=all and linger.ms=5, as the
//!   worker's producer (which is also idempotent);
//! - topic → file sink, against a plain consume of the same topic;
//! - `runnel pipeline run` with a file source, one WASM transform and a
//!   topic sink, and the same pipeline without the transform, against the
//!   plain produce;
//! - `runnel pipeline run` with a file source of JSON lines, a built-in
//!   filter that keeps every record and a topic sink (against the plain
//!   produce), and from that topic through the same filter into a file
//!   sink (against the plain consume).
//!
//! Connect rates are measured from the first record seen at the far end to
//! the last, so a new consumer group's join delay is left out; the plain
//! produce and consume run from their first request to their last record.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;

use super::procs::ChildBroker;
use super::produce::{self, Workload};
use super::{consume, machine, median_f64, produce_once};

#[derive(Args, Debug)]
pub struct ConnectBenchArgs {
    /// Records per measurement
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Bytes per record (a JSON line)
    #[arg(long, default_value_t = 200)]
    pub record_bytes: usize,
    /// The trivial WASM transform for the pipeline measurement
    #[arg(long, default_value = "plugins/dist/keep-all.wasm")]
    pub plugin: PathBuf,
    /// Runs per measurement; the median is reported
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
}

/// One JSON line of exactly `bytes` bytes (newline excluded) for record `i`.
fn line(i: u64, bytes: usize) -> String {
    let head = format!(
        r#"{{"id":{i},"customer":"c-{:04}","amount_cents":{},"currency":"EUR","note":""#,
        i % 10_000,
        (i * 7919) % 100_000
    );
    let pad = bytes.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// Writes `records` lines to `path`; the total bytes written.
fn write_lines(path: &Path, records: u64, bytes: usize) -> Result<u64> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut total = 0;
    for i in 0..records {
        let l = line(i, bytes);
        total += l.len() as u64 + 1;
        writeln!(f, "{l}")?;
    }
    f.flush()?;
    Ok(total)
}

/// Waits until `topic` (one partition) holds `records` records, with a
/// progress bar; the time from its first record to its last.
fn wait_topic(addr: &str, topic: &str, records: u64, label: &str) -> Result<Duration> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "runnel-bench-watch")
        .set("log_level", "3")
        .create()?;
    wait_for(records, label, || {
        Ok(consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(5))
            .map(|(_, high)| high.max(0) as u64)
            .unwrap_or(0))
    })
}

/// Polls `count` until it reaches `total`; the time from the first
/// non-zero count to `total`.
fn wait_for(total: u64, label: &str, mut count: impl FnMut() -> Result<u64>) -> Result<Duration> {
    let bar = produce::progress_bar(total, label);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<Instant> = None;
    loop {
        let n = count()?;
        if n > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        bar.set_position(n.min(total));
        if n >= total {
            bar.finish_and_clear();
            return Ok(first.map(|f| f.elapsed()).unwrap_or_default());
        }
        if Instant::now() > deadline {
            bail!("{label}: {n} of {total} after 600 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Rest {
    http: reqwest::Client,
    base: String,
}

impl Rest {
    async fn put(&self, name: &str, config: serde_json::Value) -> Result<()> {
        let r = self
            .http
            .put(format!("{}/connectors/{name}/config", self.base))
            .header("Content-Type", "application/json")
            .body(config.to_string())
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("creating connector {name}: {}", r.text().await?);
        }
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.http
            .delete(format!("{}/connectors/{name}", self.base))
            .send()
            .await?;
        Ok(())
    }

    async fn wait_running(&self, name: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self
                .http
                .get(format!("{}/connectors/{name}/status", self.base))
                .send()
                .await?
                .text()
                .await?;
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if v["tasks"][0]["state"] == "RUNNING" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("connector {name} did not start: {v}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn rate(records: u64, d: Duration) -> f64 {
    records as f64 / d.as_secs_f64().max(1e-9)
}

pub async fn run(args: ConnectBenchArgs) -> Result<()> {
    let plugin = std::fs::canonicalize(&args.plugin).with_context(|| {
        format!(
            "the WASM transform {} is missing; build the example plugins with plugins/build.sh, or pass --plugin",
            args.plugin.display()
        )
    })?;
    let dir = tempfile::tempdir().context("temp dir")?;
    let (broker, connect_url) = ChildBroker::runnel_with_connect(&dir.path().join("data"))?;
    eprintln!("machine: {}", machine());
    let rest = Rest {
        http: reqwest::Client::new(),
        base: connect_url,
    };
    let n = args.records.max(1000);
    let input = dir.path().join("input.jsonl");
    let input_bytes = write_lines(&input, n, args.record_bytes)?;
    let record_bytes = (input_bytes / n) as usize;

    // The workers' group forms once; later connectors start at once.
    let warm = dir.path().join("warm.txt");
    std::fs::write(&warm, "warm\n")?;
    rest.put(
        "bench-warm",
        json!({"connector.class": "FileStreamSource", "file": warm, "topic": "bench-warm"}),
    )
    .await?;
    rest.wait_running("bench-warm").await?;
    rest.delete("bench-warm").await?;

    let payload = Arc::new(line(0, args.record_bytes).into_bytes());
    let workload = Workload {
        record_bytes,
        partitions: 1,
        acks: -1,
        records: n,
        rate: None,
        linger_ms: 5,
        payload: Some(payload),
        sliding_payload: false,
        compression: "none",
    };
    let (mut plain_p, mut plain_c, mut source, mut sink, mut wasm, mut bare) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut filter_source, mut filter_sink) = (vec![], vec![]);
    for r in 0..args.repeat.max(1) {
        let topic = format!("bench-plain-{r}");
        super::create_topic(&broker.addr, &topic, 1).await?;
        let p = produce_once(&broker.addr, &topic, &workload, "plain produce").await?;
        plain_p.push(p.records_per_sec());

        let topic = format!("bench-file-{r}");
        super::create_topic(&broker.addr, &topic, 1).await?;
        rest.put(
            &format!("bench-source-{r}"),
            json!({"connector.class": "FileStreamSource", "file": input, "topic": topic}),
        )
        .await?;
        let (addr, t) = (broker.addr.clone(), topic.clone());
        let d =
            tokio::task::spawn_blocking(move || wait_topic(&addr, &t, n, "file source -> topic"))
                .await??;
        source.push(rate(n, d));
        rest.delete(&format!("bench-source-{r}")).await?;

        let (addr, t) = (broker.addr.clone(), topic.clone());
        let c = tokio::task::spawn_blocking(move || consume::rdkafka_consume(&addr, &t, 1, n))
            .await??;
        plain_c.push(c.records_per_sec());

        let out = dir.path().join(format!("out-{r}.jsonl"));
        rest.put(
            &format!("bench-sink-{r}"),
            json!({"connector.class": "FileStreamSink", "file": out, "topics": topic}),
        )
        .await?;
        let o = out.clone();
        let d = tokio::task::spawn_blocking(move || {
            // Lines are all the same length: bytes say how many are in.
            wait_for(n, "topic -> file sink", || {
                Ok(std::fs::metadata(&o).map(|m| m.len()).unwrap_or(0) / (record_bytes as u64))
            })
        })
        .await??;
        sink.push(rate(n, d));
        rest.delete(&format!("bench-sink-{r}")).await?;
        std::fs::remove_file(&out).ok();

        for (with_plugin, runs) in [(true, &mut wasm), (false, &mut bare)] {
            let name = format!(
                "bench-pipe-{}-{r}",
                if with_plugin { "wasm" } else { "bare" }
            );
            let yaml = dir.path().join(format!("{name}.yaml"));
            let transforms = if with_plugin {
                format!("transforms:\n  - plugin: {}\n", plugin.display())
            } else {
                String::new()
            };
            std::fs::write(
                &yaml,
                format!(
                    "name: {name}\nsource:\n  connector: file-source\n  config:\n    file: {}\n{transforms}sink:\n  topic: {name}\n  format: string\n",
                    input.display()
                ),
            )?;
            super::create_topic(&broker.addr, &name, 1).await?;
            let mut child = Command::new(std::env::current_exe()?)
                .args(["pipeline", "run"])
                .arg(&yaml)
                .args(["--bootstrap", &broker.addr])
                .env("RUNNEL_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting runnel pipeline run")?;
            let (addr, t) = (broker.addr.clone(), name.clone());
            let label = if with_plugin {
                "pipeline, 1 WASM transform"
            } else {
                "pipeline, no transform"
            };
            let d = tokio::task::spawn_blocking(move || wait_topic(&addr, &t, n, label)).await?;
            let _ = child.kill();
            let _ = child.wait();
            runs.push(rate(n, d?));
        }

        // The built-in filter on both sides of a topic: evaluated on every
        // record, keeping them all.
        let filter =
            "transforms:\n  - filter: value.amount_cents >= 0 && value.currency == \"EUR\"\n";
        let name = format!("bench-filter-source-{r}");
        let yaml = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &yaml,
            format!(
                "name: {name}\nsource:\n  connector: file-source\n  config:\n    file: {}\n    format: jsonlines\n{filter}sink:\n  topic: {name}\n",
                input.display()
            ),
        )?;
        super::create_topic(&broker.addr, &name, 1).await?;
        let child = pipeline_run(&yaml, &broker.addr)?;
        let (addr, t) = (broker.addr.clone(), name.clone());
        let d = tokio::task::spawn_blocking(move || {
            wait_topic(&addr, &t, n, "pipeline, file -> filter -> topic")
        })
        .await;
        drop(child);
        filter_source.push(rate(n, d??));

        let name = format!("bench-filter-sink-{r}");
        let yaml = dir.path().join(format!("{name}.yaml"));
        let out = dir.path().join(format!("{name}.jsonl"));
        std::fs::write(
            &yaml,
            format!(
                "name: {name}\nsource:\n  topic: {topic}\n{filter}sink:\n  connector: file-sink\n  config:\n    file: {}\n",
                out.display()
            ),
        )?;
        let child = pipeline_run(&yaml, &broker.addr)?;
        let o = out.clone();
        let d = tokio::task::spawn_blocking(move || {
            // The sink writes each value as compact JSON, as long as the
            // line it came from.
            wait_for(n, "pipeline, topic -> filter -> file", || {
                Ok(std::fs::metadata(&o).map(|m| m.len()).unwrap_or(0) / (record_bytes as u64))
            })
        })
        .await;
        drop(child);
        filter_sink.push(rate(n, d??));
        std::fs::remove_file(&out).ok();

        eprintln!(
            "  run {}: plain produce {:.0}/s, file source {:.0}/s, plain consume {:.0}/s, file sink {:.0}/s, pipeline+wasm {:.0}/s, pipeline bare {:.0}/s, file->filter->topic {:.0}/s, topic->filter->file {:.0}/s",
            r + 1,
            plain_p[r],
            source[r],
            plain_c[r],
            sink[r],
            wasm[r],
            bare[r],
            filter_source[r],
            filter_sink[r]
        );
    }
    let (pp, pc) = (median_f64(plain_p), median_f64(plain_c));
    let row = |what: &str, runs: Vec<f64>, base: f64, base_name: &str| {
        let v = median_f64(runs);
        println!(
            "| {what} | {v:.0} records/s ({:.0} MB/s) | {base_name}: {base:.0} records/s | {:.0}% |",
            v * record_bytes as f64 / 1e6,
            100.0 * v / base
        );
    };
    println!(
        "| {n} records of {record_bytes} B (JSON lines) | result | comparison (same run) | ratio |"
    );
    println!("|---|---:|---|---:|");
    row(
        "file source -> topic (worker in runnel serve)",
        source,
        pp,
        "plain produce, acks=all",
    );
    row(
        "topic -> file sink (worker in runnel serve)",
        sink,
        pc,
        "plain consume",
    );
    row(
        "pipeline: file -> keep-all.wasm -> topic",
        wasm,
        pp,
        "plain produce, acks=all",
    );
    row(
        "pipeline: file -> topic, no transform",
        bare,
        pp,
        "plain produce, acks=all",
    );
    row(
        "pipeline: file (JSON lines) -> filter -> topic",
        filter_source,
        pp,
        "plain produce, acks=all",
    );
    row(
        "pipeline: topic -> filter -> file sink",
        filter_sink,
        pc,
        "plain consume",
    );
    Ok(())
}

/// A `runnel pipeline run` of `yaml` against `bootstrap`; killed on drop.
fn pipeline_run(yaml: &Path, bootstrap: &str) -> Result<KillOnDrop> {
    let child = Command::new(std::env::current_exe()?)
        .args(["pipeline", "run"])
        .arg(yaml)
        .args(["--bootstrap", bootstrap])
        .env("RUNNEL_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting runnel pipeline run")?;
    Ok(KillOnDrop(child))
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
