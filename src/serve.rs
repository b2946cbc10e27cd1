//! `runnel serve`: load configuration, open storage, run the Kafka listener,
//! the admin listener (metrics, console) and the schema registry's and
//! connect worker's REST APIs until SIGINT/SIGTERM, then flush and
//! checkpoint.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use std::sync::Arc;

use runnel_core::broker::Broker;
use runnel_core::config::BrokerConfig;
use runnel_core::transforms::TransformManager;
use tracing::{info, warn};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// YAML config file (see runnel.example.yaml); flags and env vars override it
    #[arg(short, long, env = "RUNNEL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for partitions and metadata [default: ./runnel-data]
    #[arg(long, env = "RUNNEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the Kafka protocol listener [default: 127.0.0.1:9092]
    #[arg(long, env = "RUNNEL_KAFKA_ADDR")]
    pub kafka_addr: Option<String>,
    /// Address given to clients in metadata [default: --kafka-addr]
    #[arg(long, env = "RUNNEL_ADVERTISED_KAFKA_ADDR")]
    pub advertised_kafka_addr: Option<String>,
    /// This broker's node id [default: 0]
    #[arg(long, env = "RUNNEL_NODE_ID")]
    pub node_id: Option<i32>,
    /// Voters of the metadata quorum, id@host:port,... (every node of a cluster lists the same) [default: this node alone]
    #[arg(long, env = "RUNNEL_CONTROLLER_QUORUM")]
    pub controller_quorum: Option<String>,
    /// What this node runs: broker,controller (a voter of the metadata quorum) or broker (follows the quorum without voting; needs --controller-addr) [default: broker,controller]
    #[arg(long, env = "RUNNEL_PROCESS_ROLES")]
    pub process_roles: Option<String>,
    /// Where this node's controller listens for the other voters [default: its entry in --controller-quorum]
    #[arg(long, env = "RUNNEL_CONTROLLER_ADDR")]
    pub controller_addr: Option<String>,
    /// A follower behind its leader for this long leaves the ISR [default: 30000]
    #[arg(long, env = "RUNNEL_REPLICA_LAG_TIME_MAX_MS")]
    pub replica_lag_time_max_ms: Option<u64>,
    /// Fence a broker not heard from for this long; its partitions get new leaders [default: 9000]
    #[arg(long, env = "RUNNEL_BROKER_SESSION_TIMEOUT_MS")]
    pub broker_session_timeout_ms: Option<u64>,
    /// How often a broker heartbeats to the metadata quorum's leader [default: 500]
    #[arg(long, env = "RUNNEL_BROKER_HEARTBEAT_INTERVAL_MS")]
    pub broker_heartbeat_interval_ms: Option<u64>,
    /// Move partition leadership back to preferred replicas that are live and in sync [default: true]
    #[arg(long, env = "RUNNEL_AUTO_LEADER_REBALANCE_ENABLE")]
    pub auto_leader_rebalance_enable: Option<bool>,
    /// How often the leader balance is checked, in seconds [default: 300]
    #[arg(long, env = "RUNNEL_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS")]
    pub leader_imbalance_check_interval_seconds: Option<u64>,
    /// Rebalance a broker's leaderships when more than this percentage of its preferred partitions is led elsewhere [default: 10]
    #[arg(long, env = "RUNNEL_LEADER_IMBALANCE_PER_BROKER_PERCENTAGE")]
    pub leader_imbalance_per_broker_percentage: Option<u32>,
    /// Create unknown topics on first use by Metadata or Produce [default: true]
    #[arg(long, env = "RUNNEL_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics [default: 1]
    #[arg(long, env = "RUNNEL_DEFAULT_PARTITIONS")]
    pub default_partitions: Option<i32>,
    /// Admin HTTP address (/metrics, the web console), or "off" [default: 127.0.0.1:9644]
    #[arg(long, env = "RUNNEL_ADMIN_ADDR")]
    pub admin_addr: Option<String>,
    /// Host names the web console also answers under (comma-separated;
    /// `*.example.com` for subdomains), for a console reached by name
    /// behind a proxy; loopback names and IP addresses always work
    #[arg(
        long,
        env = "RUNNEL_ADMIN_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub admin_allowed_hosts: Vec<String>,
    /// Schema registry REST address, or "off" [default: 127.0.0.1:8081]
    #[arg(long, env = "RUNNEL_REGISTRY_ADDR")]
    pub registry_addr: Option<String>,
    /// Connect worker REST address, or "off" [default: 127.0.0.1:8083]
    #[arg(long, env = "RUNNEL_CONNECT_ADDR")]
    pub connect_addr: Option<String>,
    #[command(flatten)]
    pub http: crate::http::HttpArgs,
    /// Close a connection whose request has not fully arrived this long after its first byte [default: 30000]
    #[arg(long, env = "RUNNEL_REQUEST_READ_TIMEOUT_MS")]
    pub request_read_timeout_ms: Option<u64>,
    /// Close a connection that sends nothing (or reads no response) for this long [default: 600000]
    #[arg(long, env = "RUNNEL_CONNECTIONS_MAX_IDLE_MS")]
    pub connections_max_idle_ms: Option<u64>,
    /// Most connections open at once from one client IP address [default: 1000]
    #[arg(long, env = "RUNNEL_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Bytes of requests in flight from one client IP address [default: a quarter of max_inflight_request_bytes, at least max_request_bytes]
    #[arg(long, env = "RUNNEL_MAX_INFLIGHT_REQUEST_BYTES_PER_IP")]
    pub max_inflight_request_bytes_per_ip: Option<usize>,
    /// Start a development cluster of N nodes on loopback instead: N child
    /// `runnel serve` processes (node ids 1..N, every one a voter of the
    /// metadata quorum) with data in <data-dir>/node-<i>, Kafka on
    /// base-port+i-1 and the controller on base-port+100+i-1; the schema
    /// registry and the connect worker run on node 1 only
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=16))]
    pub cluster_dev: Option<u16>,
    /// Kafka port of node 1 of --cluster-dev [default: 9092]
    #[arg(long, value_name = "PORT", requires = "cluster_dev")]
    pub base_port: Option<u16>,
}

/// Builds the effective configuration: built-in defaults, then the config
/// file, then flags and environment variables.
pub fn load_config(args: &ServeArgs) -> Result<BrokerConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            // serde_yaml errors carry "at line L column C".
            serde_yaml::from_str::<BrokerConfig>(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => BrokerConfig::default(),
    };
    if let Some(v) = &args.data_dir {
        config.data_dir = v.clone();
    }
    if let Some(v) = &args.kafka_addr {
        config.kafka_addr = v.clone();
    }
    if let Some(v) = &args.advertised_kafka_addr {
        config.advertised_kafka_addr = Some(v.clone());
    }
    if let Some(v) = args.node_id {
        config.node_id = v;
    }
    if let Some(v) = &args.controller_quorum {
        config.controller_quorum = Some(v.clone());
    }
    if let Some(v) = &args.controller_addr {
        config.controller_addr = Some(v.clone());
    }
    if let Some(v) = &args.process_roles {
        config.process_roles = v.clone();
    }
    if let Some(v) = args.replica_lag_time_max_ms {
        config.replica_lag_time_max_ms = v;
    }
    if let Some(v) = args.broker_session_timeout_ms {
        config.broker_session_timeout_ms = v;
    }
    if let Some(v) = args.broker_heartbeat_interval_ms {
        config.broker_heartbeat_interval_ms = v;
    }
    if let Some(v) = args.auto_leader_rebalance_enable {
        config.auto_leader_rebalance_enable = v;
    }
    if let Some(v) = args.leader_imbalance_check_interval_seconds {
        config.leader_imbalance_check_interval_seconds = v;
    }
    if let Some(v) = args.leader_imbalance_per_broker_percentage {
        config.leader_imbalance_per_broker_percentage = v;
    }
    if let Some(v) = args.auto_create_topics {
        config.auto_create_topics = v;
    }
    if let Some(v) = args.default_partitions {
        config.default_partitions = v;
    }
    if let Some(v) = &args.admin_addr {
        config.admin_addr = v.clone();
    }
    if !args.admin_allowed_hosts.is_empty() {
        config.admin_allowed_hosts = args.admin_allowed_hosts.clone();
    }
    if let Some(v) = &args.registry_addr {
        config.registry_addr = v.clone();
    }
    if let Some(v) = &args.connect_addr {
        config.connect_addr = v.clone();
    }
    args.http.apply(&mut config.http);
    if let Some(v) = args.request_read_timeout_ms {
        config.request_read_timeout_ms = v;
    }
    if let Some(v) = args.connections_max_idle_ms {
        config.connections_max_idle_ms = v;
    }
    if let Some(v) = args.max_connections_per_ip {
        config.max_connections_per_ip = v;
    }
    if let Some(v) = args.max_inflight_request_bytes_per_ip {
        config.max_inflight_request_bytes_per_ip = Some(v);
    }
    config.validate().context("invalid configuration")?;
    Ok(config)
}

/// Raises the soft open-file limit to the hard one (a broker holds a file
/// per partition and per connection) and sizes the cache of closed
/// segments' read handles to a share of it.
fn prepare_open_file_limit() {
    use runnel_core::storage::handles;
    if let Err(e) = handles::raise_open_file_limit() {
        warn!(error = %e, "could not raise the open-file limit (RLIMIT_NOFILE)");
    }
    if let Ok((soft, hard)) = handles::open_file_limit() {
        let capacity = (soft / 4).clamp(16, 4096) as usize;
        handles::global().set_capacity(capacity);
        info!(
            soft,
            hard,
            closed_segment_handles = capacity,
            "open-file limit (RLIMIT_NOFILE)"
        );
    }
}

/// Runs one node (`--cluster-dev` is dispatched by `main` to
/// `dev_cluster`, which starts several of these as child processes).
pub async fn run(args: ServeArgs) -> Result<()> {
    let config = load_config(&args)?;
    prepare_open_file_limit();
    let listener = tokio::net::TcpListener::bind(&config.kafka_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.kafka_addr))?;
    // Bind the registry's port before opening storage, so a port in use
    // fails the start at once.
    let registry_listener = match crate::registry::listen_addr(&config.registry_addr) {
        None => None,
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr} for the schema registry (set --registry-addr, or 'off')"
            )
        })?),
    };
    let console_hosts = crate::admin::hosts::AllowedHosts::new(&config.admin_allowed_hosts)
        .map_err(|e| anyhow::anyhow!("admin_allowed_hosts (--admin-allowed-hosts): {e}"))?;
    let admin_listener = match crate::registry::listen_addr(&config.admin_addr) {
        None => None,
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} for the admin API (set --admin-addr, or 'off')")
        })?),
    };
    let connect_listener = match crate::registry::listen_addr(&config.connect_addr) {
        None => None,
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} for the connect worker (set --connect-addr, or 'off')")
        })?),
    };
    let kafka_local = listener.local_addr()?;
    let http_limits = crate::http::limits(&config.http);
    let data_dir = config.data_dir.clone();
    let mut config = config;
    if config.advertised_kafka_addr.is_none() && config.kafka_addr.ends_with(":0") {
        // Port 0 picks a free port: other brokers and clients need the one picked.
        config.advertised_kafka_addr = Some(kafka_local.to_string());
    }
    let broker = Broker::open(config)
        .await
        .with_context(|| format!("cannot open data directory {}", data_dir.display()))?;
    broker.spawn_background_tasks();
    let plugins = runnel_plugin_host::PluginHost::new(runnel_plugin_host::HostConfig {
        cache_dir: Some(data_dir.join("plugin-cache")),
        ..Default::default()
    })
    .context("starting the WASM plugin host")?;
    let engine = Arc::new(crate::transform::WasmEngine::new(Arc::new(plugins)));
    let transforms = TransformManager::start(broker.clone(), engine)
        .await
        .context("starting topic transforms")?;
    let admin_local = match &admin_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    info!(
        version = env!("CARGO_PKG_VERSION"),
        kafka = %kafka_local,
        admin = %admin_local.map_or("off".to_string(), |a| format!("http://{a}")),
        data_dir = %data_dir.display(),
        node_id = broker.node_id(),
        cluster_id = broker.cluster_id(),
        "runnel broker started"
    );
    // On a signal the registry and the connect worker stop first (they are
    // clients of this broker), then the broker hands its partitions over,
    // then the Kafka listener stops.
    let (stop_registry, registry_stopping) = tokio::sync::watch::channel(false);
    let (stop_broker, broker_stopping) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Their internal topics (`_schemas`, connect's) take the cluster's
    // replication factor only if that many brokers are alive when they are
    // created: in a cluster, wait for them first (bounded).
    let enough_brokers = {
        let broker = broker.clone();
        move || {
            let broker = broker.clone();
            async move {
                let wanted = broker.internal_replication_factor();
                if !broker
                    .wait_for_live_brokers(wanted, std::time::Duration::from_secs(60))
                    .await
                {
                    tracing::warn!(
                        wanted,
                        "fewer brokers than the internal topics' replication factor are alive; starting anyway (their topics get fewer replicas)"
                    );
                }
            }
        }
    };
    let url = |l: &Option<tokio::net::TcpListener>| -> Option<String> {
        let addr = l.as_ref()?.local_addr().ok()?;
        Some(format!("http://{}", crate::registry::loopback(addr)))
    };
    let services = crate::admin::Services {
        kafka: crate::registry::loopback(kafka_local),
        registry_url: url(&registry_listener),
        connect_url: url(&connect_listener),
    };
    let admin = admin_listener.map(|admin_listener| {
        let stopping = stopped(broker_stopping.clone());
        let limits = http_limits.clone();
        let broker = broker.clone();
        let transforms = transforms.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::admin::serve(
                broker,
                transforms,
                services,
                console_hosts,
                admin_listener,
                limits,
                stopping,
            )
            .await
            {
                tracing::error!("admin listener stopped: {e:#}");
            }
        })
    });
    let registry = registry_listener.map(|registry_listener| {
        let enough_brokers = enough_brokers();
        let stopping = stopped(registry_stopping.clone());
        let limits = http_limits.clone();
        tokio::spawn(async move {
            enough_brokers.await;
            crate::registry::run_embedded(
                crate::registry::loopback(kafka_local),
                registry_listener,
                limits,
                stopping,
            )
            .await
        })
    });
    let connect = connect_listener.map(|connect_listener| {
        let enough_brokers = enough_brokers();
        let stopping = stopped(registry_stopping.clone());
        let limits = http_limits.clone();
        tokio::spawn(async move {
            enough_brokers.await;
            crate::connect::run_embedded(
                crate::registry::loopback(kafka_local),
                connect_listener,
                limits,
                stopping,
            )
            .await
        })
    });
    let stopping = broker.clone();
    tokio::spawn(async move {
        crate::signals::shutdown_signal().await;
        info!("shutting down");
        let _ = stop_registry.send(true);
        for task in [registry, connect].into_iter().flatten() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(15), task).await;
        }
        // While the listener still serves: other replicas take over this
        // broker's partitions (clients follow them at once).
        stopping.controlled_shutdown().await;
        let _ = stop_broker.send(true);
    });
    runnel_core::server::serve(broker.clone(), listener, stopped(broker_stopping)).await?;
    if let Some(admin) = admin {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(15), admin).await;
    }
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.shutdown())
        .await?
        .context("flushing storage on shutdown")?;
    broker.stop_controller().await;
    Ok(())
}
