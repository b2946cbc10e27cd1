//! `runnel pipeline run|validate|test FILE.yaml`: YAML pipelines (see
//! `runnel_connect::pipeline` for the format).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use runnel_connect::pipeline::fields::Shape;
use runnel_connect::pipeline::{self, Diagnostic, Pipeline};
use runnel_connect::worker::{Worker, WorkerConfig};
use runnel_schema_registry::client::RegistryClient;
use tracing::info;

#[derive(Subcommand, Debug)]
pub enum PipelineCommand {
    /// Check a pipeline file without running anything (field names too,
    /// against the source topic's value schema when the registry has one)
    Validate {
        file: PathBuf,
        /// Schema registry with the source topic's schema (`<topic>-value`)
        #[arg(
            long,
            alias = "registry",
            env = "RUNNEL_REGISTRY_URL",
            default_value_t = crate::profile::registry_url()
        )]
        registry_url: String,
    },
    /// Run the pipeline's transforms on its `test.input` and compare with
    /// `test.expect` (no broker needed)
    Test { file: PathBuf },
    /// Run a pipeline until Ctrl-C
    Run {
        file: PathBuf,
        #[command(flatten)]
        connect: crate::ConnectArgs,
        /// Schema registry for topics with `format: avro`
        #[arg(
            long,
            alias = "registry",
            env = "RUNNEL_REGISTRY_URL",
            default_value_t = crate::profile::registry_url()
        )]
        registry_url: String,
        #[command(flatten)]
        streams: StreamsArgs,
    },
}

/// How a pipeline with stateful steps runs on runnel-streams.
#[derive(clap::Args, Debug, Clone)]
pub struct StreamsArgs {
    /// Where stateful steps keep their stores on disk (one directory per
    /// task; reused across runs so a restart restores only what changed)
    #[arg(long, env = "RUNNEL_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Serve the pipeline over HTTP on HOST:PORT, with `/metrics`: a
    /// stateful pipeline's stores (`GET /stores/agg-<n>/<key>`), a
    /// stateless one's connect REST API (`GET /connectors/<name>/status`)
    /// and per-connector records read/written, failures, dead letters and
    /// transform time
    #[arg(long, alias = "http-addr", value_name = "HOST:PORT")]
    pub query_addr: Option<String>,
    /// Keep warm copies of each task's stores on this many other `pipeline
    /// run`s of the same pipeline, so a takeover restores little
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub standby_replicas: usize,
}

fn load(file: &std::path::Path) -> Result<Pipeline> {
    let host = runnel_plugin_host::PluginHost::new(Default::default())
        .context("starting the WASM plugin host")?;
    let p = pipeline::load(file, &host).map_err(|problems| refused(file, &problems))?;
    for w in &p.warnings {
        eprintln!("{w}");
    }
    Ok(p)
}

fn refused(file: &std::path::Path, problems: &[Diagnostic]) -> anyhow::Error {
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    anyhow::anyhow!(
        "{} problem(s) in {}:\n{}",
        problems.len(),
        file.display(),
        text.join("\n")
    )
}

/// Checks the transforms' field names against the registered value schema
/// of the source topic (subject `<topic>-value`), when there is one.
/// Refuses the pipeline over a name the schema lacks; says so when the
/// registry cannot be asked.
async fn check_schema(file: &std::path::Path, p: &Pipeline, registry_url: &str) -> Result<()> {
    let pipeline::End::Topic { name, .. } = &p.source else {
        return Ok(());
    };
    if p.spec.transforms.is_empty() {
        return Ok(());
    }
    let subject = format!("{name}-value");
    let schema = match RegistryClient::with_timeout(registry_url, Duration::from_secs(5)) {
        Ok(client) => client
            .latest_if_any(&subject)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match schema {
        Ok(Some((_, schema))) => {
            let problems = p.check_fields(&Shape::from_avro(&schema));
            if !problems.is_empty() {
                return Err(refused(file, &problems));
            }
        }
        // No schema: nothing to check against.
        Ok(None) => {}
        Err(e) => eprintln!(
            "{}: note: field names not checked against {subject}: {e}",
            file.display()
        ),
    }
    Ok(())
}

fn describe(p: &Pipeline) -> String {
    let end = |e: &pipeline::End| match e {
        pipeline::End::Topic { name, .. } => format!("topic {name}"),
        pipeline::End::Connector { plugin, .. } => format!("connector {plugin}"),
    };
    let steps = if p.is_stateful() {
        format!("{} step(s) on runnel-streams", p.spec.transforms.len())
    } else {
        format!("{} transform(s)", p.chain.steps.len())
    };
    format!("{} -> {steps} -> {}", end(&p.source), end(&p.sink))
}

/// Runs a stateful pipeline as the runnel-streams application
/// `_runnel_pipeline.<name>` until a stop signal (or until it fails).
async fn run_streams(p: Pipeline, bootstrap: &str, args: StreamsArgs) -> Result<()> {
    let name = p.spec.name.clone();
    let app = pipeline::stateful::application_id(&name);
    let summary = describe(&p);
    let b = bootstrap.to_string();
    let query = args.query_addr.clone();
    let streams = tokio::task::spawn_blocking(move || {
        p.start_streams(&b, |config| {
            if let Some(dir) = args.state_dir {
                config.state_dir = Some(dir);
            }
            config.application_server = args.query_addr;
            config.num_standby_replicas = args.standby_replicas;
        })
    })
    .await
    .context("starting the stream thread")?
    .map_err(|e| anyhow::anyhow!("{e}"))
    .with_context(|| format!("starting pipeline {name} on {bootstrap}"))?;
    info!(pipeline = %name, application = %app, "pipeline running ({summary}); Ctrl-C stops it");
    eprintln!("pipeline {name} running as {app} ({summary}); Ctrl-C stops it");
    if let Some(addr) = query {
        eprintln!("its stores: curl http://{addr}/stores");
    }
    let stopped = async {
        while streams.is_running() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = crate::signals::shutdown_signal() => {}
        _ = stopped => {}
    }
    let outcome = tokio::task::spawn_blocking(move || streams.close())
        .await
        .context("stopping the stream thread")?;
    match outcome {
        Ok(()) => {
            eprintln!("pipeline {name} stopped");
            Ok(())
        }
        Err(e) => bail!("pipeline {name} failed: {e}"),
    }
}

pub async fn run(cmd: PipelineCommand) -> Result<()> {
    match cmd {
        PipelineCommand::Validate { file, registry_url } => {
            let p = load(&file)?;
            check_schema(&file, &p, &registry_url).await?;
            println!("{}: ok ({})", file.display(), describe(&p));
        }
        PipelineCommand::Test { file } => {
            let p = load(&file)?;
            let mismatches = p
                .test()
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let count = p.spec.test.as_ref().map_or(0, |t| t.expect.len());
            if mismatches.is_empty() {
                println!(
                    "{}: ok ({count} expected record(s) matched)",
                    file.display()
                );
            } else {
                for m in &mismatches {
                    println!(
                        "record {}:\n  expected {}\n  got      {}",
                        m.index, m.expected, m.actual
                    );
                }
                bail!("{}: {} record(s) differ", file.display(), mismatches.len());
            }
        }
        PipelineCommand::Run {
            file,
            connect,
            registry_url,
            streams,
        } => {
            let p = load(&file)?;
            check_schema(&file, &p, &registry_url).await?;
            if p.is_stateful() {
                return run_streams(p, &connect.bootstrap, streams).await;
            }
            let name = p.spec.name.clone();
            let connectors = p.connectors(&connect.bootstrap, &registry_url);
            let mut config = WorkerConfig::new(connect.bootstrap.clone());
            // A pipeline keeps its own state, apart from any connect worker's.
            config.topics.configs = format!("_runnel_pipeline.{name}.configs");
            config.topics.offsets = format!("_runnel_pipeline.{name}.offsets");
            config.topics.status = format!("_runnel_pipeline.{name}.status");
            config.worker_id = format!("pipeline-{name}-{}", std::process::id());
            // Several `pipeline run`s of one pipeline share its tasks.
            config.group_id = format!("_runnel_pipeline.{name}");
            let chains = HashMap::from([(name.clone(), p.chain.clone())]);
            let worker = Worker::start_with_transforms(
                config,
                runnel_connect::connectors::builtin(),
                chains,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))
            .with_context(|| format!("starting pipeline {name} on {}", connect.bootstrap))?;
            for (connector, _, props) in &connectors {
                worker
                    .put_connector(connector, props.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let rest = match &streams.query_addr {
                Some(addr) => {
                    let listener = tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("cannot listen on {addr} (--query-addr)"))?;
                    eprintln!("its status and metrics: curl http://{addr}/metrics");
                    let worker = worker.clone();
                    let limits = crate::http::HttpArgs::default().limits()?;
                    Some(tokio::spawn(async move {
                        let stop = crate::signals::shutdown_signal();
                        if let Err(e) =
                            runnel_connect::rest::serve(worker, listener, limits, stop).await
                        {
                            tracing::error!("pipeline HTTP server stopped: {e}");
                        }
                    }))
                }
                None => None,
            };
            let classes: Vec<&str> = connectors.iter().map(|c| c.1.as_str()).collect();
            info!(pipeline = %name, connectors = ?classes, "pipeline running ({}); Ctrl-C stops it", describe(&p));
            eprintln!(
                "pipeline {name} running ({}); Ctrl-C stops it",
                describe(&p)
            );
            let status = {
                let worker = worker.clone();
                let names: Vec<String> = connectors.iter().map(|c| c.0.clone()).collect();
                tokio::spawn(async move {
                    let mut last = vec![String::new(); names.len()];
                    loop {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        for (name, last) in names.iter().zip(last.iter_mut()) {
                            if let Ok((state, _, tasks)) = worker.status(name).await {
                                let now = format!(
                                    "{} {:?}",
                                    state.state.as_str(),
                                    tasks.iter().map(|t| t.state.as_str()).collect::<Vec<_>>()
                                );
                                if now != *last {
                                    for t in &tasks {
                                        if let Some(trace) = t.state.trace() {
                                            eprintln!("pipeline {name}: task failed: {trace}");
                                        }
                                    }
                                    *last = now;
                                }
                            }
                        }
                    }
                })
            };
            crate::signals::shutdown_signal().await;
            status.abort();
            if let Some(rest) = rest {
                rest.abort();
            }
            crate::connect::close(worker).await;
            eprintln!("pipeline {name} stopped");
        }
    }
    Ok(())
}
