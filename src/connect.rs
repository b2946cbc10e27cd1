//! The connect worker: embedded in `runnel serve`, or on its own with
//! `runnel connect --bootstrap HOST:PORT` against any Kafka broker.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use runnel_connect::worker::{Worker, WorkerConfig};
use tracing::{error, info};

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Kafka broker address (host:port, or a comma-separated list)
    #[arg(
        short,
        long,
        visible_alias = "brokers",
        env = "RUNNEL_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    /// REST API address
    #[arg(long, env = "RUNNEL_CONNECT_ADDR", default_value = "127.0.0.1:8083")]
    pub connect_addr: String,
    /// Workers with the same group id share the connectors' tasks, and
    /// take over a dead worker's (Kafka Connect's group.id); they must
    /// share the three topics, too. Default: connect-cluster, or
    /// connect-cluster.<config topic> with another --config-topic
    #[arg(long, env = "RUNNEL_CONNECT_GROUP")]
    pub group_id: Option<String>,
    /// How long a worker may be silent before its tasks move to the
    /// others, in milliseconds
    #[arg(long, default_value_t = 10_000)]
    pub session_timeout_ms: u64,
    /// Topic of connector configs
    #[arg(long, default_value = "connect-configs")]
    pub config_topic: String,
    /// Topic of source offsets
    #[arg(long, default_value = "connect-offsets")]
    pub offset_topic: String,
    /// Topic of connector and task status
    #[arg(long, default_value = "connect-status")]
    pub status_topic: String,
    /// How often progress is committed, in milliseconds
    #[arg(long, default_value_t = 1000)]
    pub commit_interval_ms: u64,
    /// librdkafka property for the worker's clients, e.g.
    /// -X security.protocol=SASL_SSL (repeatable)
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    #[command(flatten)]
    pub http: crate::http::HttpArgs,
}

async fn serve(
    config: WorkerConfig,
    listener: tokio::net::TcpListener,
    limits: runnel_http::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let bootstrap = config.bootstrap.clone();
    let worker = Worker::start(config, runnel_connect::connectors::builtin())
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))
        .with_context(|| format!("starting the connect worker on {bootstrap}"))?;
    info!(rest = %listener.local_addr()?, bootstrap = %bootstrap, "connect worker REST API started");
    let result = runnel_connect::rest::serve(worker.clone(), listener, limits, shutdown).await;
    close(worker).await;
    result.context("serving the connect REST API")
}

/// Stops the worker's tasks (committing what they did) within 30 s, then
/// drops its clients on a thread of their own and waits up to 10 s for
/// that: closing a Kafka client waits for its broker, and a broker that
/// is gone must not keep the process from exiting, while a broker in this
/// process must outlive its clients (or they report it down as it stops).
pub(crate) async fn close(worker: std::sync::Arc<Worker>) {
    if tokio::time::timeout(Duration::from_secs(30), worker.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connect worker: tasks did not stop within 30 s; leaving them");
    }
    let (dropped, done) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        drop(worker);
        let _ = dropped.send(());
    });
    let _ = tokio::time::timeout(Duration::from_secs(10), done).await;
}

fn worker_config(bootstrap: String, listener: &tokio::net::TcpListener) -> WorkerConfig {
    let mut config = WorkerConfig::new(bootstrap);
    if let Ok(addr) = listener.local_addr() {
        config.worker_id = addr.to_string();
    }
    config
}

/// The worker inside `runnel serve`. Failures are logged: the broker keeps
/// serving Kafka clients.
pub async fn run_embedded(
    bootstrap: String,
    listener: tokio::net::TcpListener,
    limits: runnel_http::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let config = worker_config(bootstrap, &listener);
    if let Err(e) = serve(config, listener, limits, shutdown).await {
        error!("connect worker stopped: {e:#}");
    }
}

pub async fn run(args: ConnectArgs) -> Result<()> {
    let limits = args.http.limits()?;
    let listener = tokio::net::TcpListener::bind(&args.connect_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.connect_addr))?;
    let mut config = worker_config(args.bootstrap, &listener);
    config.topics.configs = args.config_topic.clone();
    config.topics.offsets = args.offset_topic;
    config.topics.status = args.status_topic;
    config.commit_interval = Duration::from_millis(args.commit_interval_ms.max(10));
    config.group_id = match args.group_id {
        Some(g) => g,
        None if args.config_topic == "connect-configs" => "connect-cluster".into(),
        None => format!("connect-cluster.{}", args.config_topic),
    };
    config.session_timeout = Duration::from_millis(args.session_timeout_ms.clamp(1000, 300_000));
    for p in &args.properties {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("-X {p}: expected KEY=VALUE"))?;
        config
            .properties
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    serve(config, listener, limits, crate::signals::shutdown_signal()).await
}
