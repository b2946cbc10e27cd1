//! The schema registry's server: embedded in `runnel serve`, or on its own
//! with `runnel registry serve` against any Kafka broker.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use runnel_schema_registry::api;
use runnel_schema_registry::kafka::{open_registry, KafkaLogConfig};
use tracing::{error, info};

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Run a schema registry (Confluent's REST API) on a Kafka broker's
    /// _schemas topic
    Serve {
        /// Kafka broker address (host:port, or a comma-separated list)
        #[arg(
            short,
            long,
            visible_alias = "brokers",
            env = "RUNNEL_BOOTSTRAP",
            default_value = "127.0.0.1:9092"
        )]
        bootstrap: String,
        /// REST API address
        #[arg(long, env = "RUNNEL_REGISTRY_ADDR", default_value = "127.0.0.1:8081")]
        registry_addr: String,
        /// Topic holding the registry's state (Runnel's broker-side
        /// validation reads _schemas)
        #[arg(long, default_value = runnel_schema_registry::SCHEMAS_TOPIC)]
        topic: String,
        /// librdkafka property for the registry's clients, e.g.
        /// -X security.protocol=SASL_SSL (repeatable)
        #[arg(short = 'X', value_name = "KEY=VALUE")]
        properties: Vec<String>,
        #[command(flatten)]
        http: crate::http::HttpArgs,
    },
}

/// The address to listen on, or None when the registry is turned off.
pub fn listen_addr(setting: &str) -> Option<&str> {
    match setting.trim() {
        "" | "off" | "none" | "false" => None,
        addr => Some(addr),
    }
}

/// An address a local client can connect to for a listener bound to
/// `addr` (0.0.0.0 becomes 127.0.0.1).
pub fn loopback(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        let ip = if addr.is_ipv4() { "127.0.0.1" } else { "[::1]" };
        format!("{ip}:{}", addr.port())
    } else {
        addr.to_string()
    }
}

fn parse_properties(props: &[String]) -> Result<Vec<(String, String)>> {
    props
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .with_context(|| format!("-X {p}: expected KEY=VALUE"))
        })
        .collect()
}

async fn serve(
    config: KafkaLogConfig,
    listener: tokio::net::TcpListener,
    limits: runnel_http::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let bootstrap = config.bootstrap.clone();
    let registry = open_registry(config)
        .await
        .with_context(|| format!("starting the schema registry on {bootstrap}"))?;
    info!(rest = %listener.local_addr()?, bootstrap = %bootstrap, "schema registry started");
    api::serve(registry, listener, None, limits, shutdown)
        .await
        .context("serving the schema registry")
}

/// The registry inside `runnel serve`, talking to the broker over its own
/// listener like any other client. Failures are logged: the broker keeps
/// serving Kafka clients.
pub async fn run_embedded(
    bootstrap: String,
    listener: tokio::net::TcpListener,
    limits: runnel_http::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut config = KafkaLogConfig::new(bootstrap);
    config.timeout = Duration::from_secs(30);
    if let Err(e) = serve(config, listener, limits, shutdown).await {
        error!("schema registry stopped: {e:#}");
    }
}

pub async fn run(cmd: RegistryCommand) -> Result<()> {
    match cmd {
        RegistryCommand::Serve {
            bootstrap,
            registry_addr,
            topic,
            properties,
            http,
        } => {
            let limits = http.limits()?;
            let mut config = KafkaLogConfig::new(bootstrap);
            config.topic = topic;
            config.properties = parse_properties(&properties)?;
            let listener = tokio::net::TcpListener::bind(&registry_addr)
                .await
                .with_context(|| format!("cannot listen on {registry_addr}"))?;
            serve(config, listener, limits, crate::signals::shutdown_signal()).await
        }
    }
}
