//! `runnel serve --cluster-dev N`: a cluster of N nodes on loopback in one
//! command, for trying a cluster (and failover) on one machine.
//!
//! This process runs no broker itself: it starts N child `runnel serve`
//! processes of its own binary, node ids 1..N, every one a voter of the
//! metadata quorum, waits (bounded) until every node serves and node 1
//! lists all N brokers, prints the bootstrap list, and forwards SIGINT /
//! SIGTERM to the children and waits for them. A node that stops on its own
//! is reported and the others keep running (killing one is how failover is
//! tried); a node that fails to start stops the whole cluster with its log
//! tail.
//!
//! Layout for `--base-port B` and `--data-dir D`: node i listens for Kafka
//! clients on 127.0.0.1:B+i-1 and for the other voters on
//! 127.0.0.1:B+100+i-1, serves its admin API (metrics, console) on
//! 127.0.0.1:B+552+i-1 (9644 for node 1 with the default base port, as a
//! single node; `--admin-addr off` turns them off, `--admin-addr H:P`
//! puts node i on H:P+i-1), keeps its data in D/node-i and logs to
//! D/node-i.log.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::MetadataRequest;
use runnel_core::client::Client;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

use crate::serve::ServeArgs;

/// Kafka port of node 1 unless --base-port says otherwise.
const DEFAULT_BASE_PORT: u16 = 9092;
/// A node's controller port is its Kafka port plus this.
const CONTROLLER_PORT_OFFSET: u16 = 100;
/// A node's admin port is its Kafka port plus this (9644 for 9092).
const ADMIN_PORT_OFFSET: u16 = 552;
/// How long the nodes may take to serve and see each other.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of a node's log shown when it fails.
const LOG_TAIL_LINES: usize = 20;

/// One node of the development cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: u16,
    pub kafka_addr: String,
    pub controller_addr: String,
    /// Where the node's admin API listens (by default; `--admin-addr`
    /// changes it in `node_args`).
    pub admin_addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

/// The nodes for `n` nodes from `base_port` in `data_dir`.
pub fn plan(n: u16, base_port: u16, data_dir: &Path) -> Result<Vec<Node>> {
    let last = u32::from(base_port) + u32::from(ADMIN_PORT_OFFSET) + u32::from(n) - 1;
    if base_port == 0 || last > u32::from(u16::MAX) {
        bail!(
            "--base-port {base_port} leaves no room for {n} nodes (their ports run up to \
             base+{ADMIN_PORT_OFFSET}+{n}-1, at most 65535)"
        );
    }
    Ok((1..=n)
        .map(|id| {
            let kafka = base_port + id - 1;
            Node {
                id,
                kafka_addr: format!("127.0.0.1:{kafka}"),
                controller_addr: format!("127.0.0.1:{}", kafka + CONTROLLER_PORT_OFFSET),
                admin_addr: format!("127.0.0.1:{}", kafka + ADMIN_PORT_OFFSET),
                data_dir: data_dir.join(format!("node-{id}")),
                log: data_dir.join(format!("node-{id}.log")),
            }
        })
        .collect())
}

/// Node `node`'s admin address: off for all when `--admin-addr` is off,
/// `H:P+i-1` for `--admin-addr H:P`, else the layout's.
fn admin_addr(given: Option<&str>, node: &Node) -> String {
    let Some(given) = given else {
        return node.admin_addr.clone();
    };
    let Some(addr) = crate::registry::listen_addr(given) else {
        return "off".into();
    };
    match addr.rsplit_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(port) if port > 0 => match port.checked_add(node.id - 1) {
                Some(port) => format!("{host}:{port}"),
                None => addr.to_string(),
            },
            _ => addr.to_string(),
        },
        None => addr.to_string(),
    }
}

/// The `--controller-quorum` every node is given.
pub fn quorum(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("{}@{}", n.id, n.controller_addr))
        .collect::<Vec<_>>()
        .join(",")
}

/// The Kafka addresses of all nodes, for `bootstrap.servers`.
pub fn bootstrap(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| n.kafka_addr.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The `runnel serve` arguments of `node`: its own addresses, id and data
/// directory, then every option of `args` that is not per node.
pub fn node_args(args: &ServeArgs, node: &Node, quorum: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![
        "serve".into(),
        "--node-id".into(),
        node.id.to_string(),
        "--controller-quorum".into(),
        quorum.into(),
        "--controller-addr".into(),
        node.controller_addr.clone(),
        "--kafka-addr".into(),
        node.kafka_addr.clone(),
        "--advertised-kafka-addr".into(),
        node.kafka_addr.clone(),
        "--data-dir".into(),
        node.data_dir.display().to_string(),
    ];
    let mut flag = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            out.push(format!("--{name}"));
            out.push(v);
        }
    };
    flag(
        "config",
        args.config.as_ref().map(|p| p.display().to_string()),
    );
    flag(
        "admin-addr",
        Some(admin_addr(args.admin_addr.as_deref(), node)),
    );
    if node.id == 1 {
        flag("registry-addr", args.registry_addr.clone());
        flag("connect-addr", args.connect_addr.clone());
    } else {
        flag("registry-addr", Some("off".into()));
        flag("connect-addr", Some("off".into()));
    }
    flag(
        "replica-lag-time-max-ms",
        text(&args.replica_lag_time_max_ms),
    );
    flag(
        "broker-session-timeout-ms",
        text(&args.broker_session_timeout_ms),
    );
    flag(
        "broker-heartbeat-interval-ms",
        text(&args.broker_heartbeat_interval_ms),
    );
    flag(
        "auto-leader-rebalance-enable",
        text(&args.auto_leader_rebalance_enable),
    );
    flag(
        "leader-imbalance-check-interval-seconds",
        text(&args.leader_imbalance_check_interval_seconds),
    );
    flag(
        "leader-imbalance-per-broker-percentage",
        text(&args.leader_imbalance_per_broker_percentage),
    );
    flag("auto-create-topics", text(&args.auto_create_topics));
    flag("default-partitions", text(&args.default_partitions));
    flag(
        "request-read-timeout-ms",
        text(&args.request_read_timeout_ms),
    );
    flag(
        "connections-max-idle-ms",
        text(&args.connections_max_idle_ms),
    );
    flag("max-connections-per-ip", text(&args.max_connections_per_ip));
    flag(
        "max-inflight-request-bytes-per-ip",
        text(&args.max_inflight_request_bytes_per_ip),
    );
    let h = &args.http;
    flag(
        "http-header-read-timeout-ms",
        text(&h.http_header_read_timeout_ms),
    );
    flag(
        "http-body-read-timeout-ms",
        text(&h.http_body_read_timeout_ms),
    );
    flag("http-max-connections", text(&h.http_max_connections));
    flag(
        "http-max-connections-per-ip",
        text(&h.http_max_connections_per_ip),
    );
    out
}

/// An option's value as a command-line argument.
fn text<T: ToString>(value: &Option<T>) -> Option<String> {
    value.as_ref().map(ToString::to_string)
}

/// Options that --cluster-dev sets per node, so giving them is a mistake.
fn refuse_per_node_options(args: &ServeArgs) -> Result<()> {
    let given = [
        ("--node-id / RUNNEL_NODE_ID", args.node_id.is_some()),
        (
            "--controller-quorum / RUNNEL_CONTROLLER_QUORUM",
            args.controller_quorum.is_some(),
        ),
        (
            "--controller-addr / RUNNEL_CONTROLLER_ADDR",
            args.controller_addr.is_some(),
        ),
        (
            "--kafka-addr / RUNNEL_KAFKA_ADDR",
            args.kafka_addr.is_some(),
        ),
        (
            "--advertised-kafka-addr / RUNNEL_ADVERTISED_KAFKA_ADDR",
            args.advertised_kafka_addr.is_some(),
        ),
    ];
    let set: Vec<&str> = given
        .iter()
        .filter(|(_, is_set)| *is_set)
        .map(|(name, _)| *name)
        .collect();
    if !set.is_empty() {
        bail!(
            "--cluster-dev chooses each node's id and addresses itself; remove {} (use --base-port to move the ports)",
            set.join(", ")
        );
    }
    Ok(())
}

/// What became of a node's process.
struct Exit {
    node: usize,
    status: std::io::Result<ExitStatus>,
    /// Killed after not stopping within STOP_TIMEOUT of SIGTERM.
    killed: bool,
}

/// Waits for `child`; on `stop`, sends it SIGTERM (while it is still
/// unreaped, so the pid is still its own) and waits STOP_TIMEOUT before
/// killing it.
async fn supervise(
    node: usize,
    mut child: Child,
    mut stop: watch::Receiver<bool>,
    exits: mpsc::UnboundedSender<Exit>,
) {
    let status = tokio::select! {
        status = child.wait() => Some(status),
        _ = stop.wait_for(|s| *s) => None,
    };
    let exit = match status {
        Some(status) => Exit {
            node,
            status,
            killed: false,
        },
        None => {
            if let Some(pid) = child.id() {
                // SAFETY: a signal to our own child, which has not been
                // reaped (`id` is None once it is).
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
            match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
                Ok(status) => Exit {
                    node,
                    status,
                    killed: false,
                },
                Err(_) => {
                    let _ = child.start_kill();
                    Exit {
                        node,
                        status: child.wait().await,
                        killed: true,
                    }
                }
            }
        }
    };
    let _ = exits.send(exit);
}

/// The last lines of a node's log.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("unknown status ({e})"),
    }
}

/// Whether every node serves Kafka and node 1 lists all of them.
async fn ready(nodes: &[Node]) -> bool {
    for node in nodes {
        if tokio::net::TcpStream::connect(&node.kafka_addr)
            .await
            .is_err()
        {
            return false;
        }
    }
    let listed = async {
        let mut client = Client::connect(&nodes[0].kafka_addr, "runnel-cluster-dev").await?;
        client.set_timeout(Duration::from_secs(5));
        let mut request = MetadataRequest::default();
        // No topics: only the brokers.
        request.topics = Some(Vec::new());
        request.allow_auto_topic_creation = false;
        anyhow::Ok(client.send(&request).await?.brokers.len())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), listed).await,
        Ok(Ok(n)) if n == nodes.len()
    )
}

pub async fn run(args: ServeArgs, n: u16) -> Result<()> {
    refuse_per_node_options(&args)?;
    let data_dir = crate::serve::load_config(&args)?.data_dir;
    let nodes = plan(n, args.base_port.unwrap_or(DEFAULT_BASE_PORT), &data_dir)?;
    let quorum = quorum(&nodes);
    let bootstrap = bootstrap(&nodes);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the runnel binary to start nodes")?;

    println!(
        "starting a {n}-node development cluster in {}",
        data_dir.display()
    );
    // One listener for the stop signals for the whole run, so a signal
    // that arrives while the start is being checked is not lost.
    let (signal_tx, mut signalled) = watch::channel(false);
    tokio::spawn(async move {
        crate::signals::shutdown_signal().await;
        let _ = signal_tx.send(true);
    });
    let (stop, stopping) = watch::channel(false);
    let (exits_tx, mut exits) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let spawned = std::fs::File::create(&node.log)
            .and_then(|log| Ok((log.try_clone()?, log)))
            .with_context(|| format!("cannot create log file {}", node.log.display()))
            .and_then(|(out, err)| {
                let mut command = Command::new(&exe);
                command
                    .args(node_args(&args, node, &quorum))
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err);
                #[cfg(target_os = "linux")]
                // SAFETY: between fork and exec the closure only calls
                // prctl, which is async-signal-safe. A node whose
                // supervisor dies (even by SIGKILL) gets SIGTERM, so no
                // node outlives the cluster it belongs to.
                unsafe {
                    command.pre_exec(|| {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                command
                    .spawn()
                    .with_context(|| format!("cannot start node {}", node.id))
            });
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = stop.send(true);
                for task in tasks {
                    let _ = task.await;
                }
                return Err(e);
            }
        };
        println!(
            "  node {}: kafka {}, controller {}, data {}, log {}, pid {}",
            node.id,
            node.kafka_addr,
            node.controller_addr,
            node.data_dir.display(),
            node.log.display(),
            child.id().unwrap_or_default()
        );
        tasks.push(tokio::spawn(supervise(
            i,
            child,
            stopping.clone(),
            exits_tx.clone(),
        )));
    }
    drop(exits_tx);
    println!("controller quorum: {quorum}");
    println!("bootstrap: {bootstrap}");

    // Start: every node serves and node 1 lists all of them, within the
    // time; a node that exits meanwhile stops the cluster.
    let started = Instant::now();
    let failure: Option<String> = loop {
        tokio::select! {
            is_ready = ready(&nodes) => if is_ready {
                break None;
            },
            _ = signalled.wait_for(|s| *s) => break Some("stopped during start".into()),
        }
        if let Ok(exit) = exits.try_recv() {
            let node = &nodes[exit.node];
            break Some(format!(
                "node {} exited during start with {}; last lines of {}:\n{}",
                node.id,
                describe(&exit.status),
                node.log.display(),
                log_tail(&node.log)
            ));
        }
        if started.elapsed() > START_TIMEOUT {
            break Some(format!(
                "the nodes did not all serve and see each other within {} s; logs: {}",
                START_TIMEOUT.as_secs(),
                nodes
                    .iter()
                    .map(|n| n.log.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = signalled.wait_for(|s| *s) => break Some("stopped during start".into()),
        }
    };
    if let Some(failure) = failure {
        let _ = stop.send(true);
        for task in tasks {
            let _ = task.await;
        }
        bail!("{failure}");
    }
    println!(
        "cluster ready in {:.1} s: try `runnel cluster status --bootstrap {bootstrap}`; \
         Ctrl-C stops every node",
        started.elapsed().as_secs_f64()
    );

    // Run: report nodes that stop on their own, until a signal or until
    // none is left.
    let mut running = nodes.len();
    let mut failed: Vec<String> = Vec::new();
    let mut report = |exit: Exit, expected: bool| {
        let node = &nodes[exit.node];
        let ok = matches!(&exit.status, Ok(s) if s.success()) && !exit.killed;
        let what = if exit.killed {
            format!(
                "did not stop within {} s and was killed",
                STOP_TIMEOUT.as_secs()
            )
        } else {
            format!("exited with {}", describe(&exit.status))
        };
        if !ok || !expected {
            eprintln!("node {} {what} (log {})", node.id, node.log.display());
        }
        if !ok {
            failed.push(format!("node {} {what}", node.id));
        }
    };
    let signalled = loop {
        tokio::select! {
            exit = exits.recv() => match exit {
                Some(exit) => {
                    report(exit, false);
                    running -= 1;
                    if running == 0 {
                        break false;
                    }
                }
                None => break false,
            },
            _ = signalled.wait_for(|s| *s) => break true,
        }
    };
    if signalled {
        println!("stopping {running} nodes");
        let _ = stop.send(true);
        while let Some(exit) = exits.recv().await {
            report(exit, true);
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    if failed.is_empty() {
        println!("every node stopped");
        Ok(())
    } else {
        bail!("{}", failed.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn args(line: &[&str]) -> ServeArgs {
        Cli::parse_from(std::iter::once("serve").chain(line.iter().copied())).serve
    }

    #[test]
    fn node_i_gets_consecutive_kafka_ports_and_controller_ports_a_hundred_above() {
        let nodes = plan(3, 9092, Path::new("d")).unwrap();
        let addrs: Vec<(&str, &str)> = nodes
            .iter()
            .map(|n| (n.kafka_addr.as_str(), n.controller_addr.as_str()))
            .collect();
        assert_eq!(
            addrs,
            vec![
                ("127.0.0.1:9092", "127.0.0.1:9192"),
                ("127.0.0.1:9093", "127.0.0.1:9193"),
                ("127.0.0.1:9094", "127.0.0.1:9194"),
            ]
        );
        assert_eq!(nodes[1].data_dir, Path::new("d/node-2"));
        assert_eq!(nodes[1].log, Path::new("d/node-2.log"));
        assert_eq!(
            quorum(&nodes),
            "1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194"
        );
        assert_eq!(
            bootstrap(&nodes),
            "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094"
        );
    }

    #[test]
    fn ports_past_65535_are_refused() {
        assert!(plan(3, 64_981, Path::new("d")).is_ok());
        let e = plan(3, 64_982, Path::new("d")).unwrap_err().to_string();
        assert!(e.contains("--base-port 64982"), "{e}");
    }

    #[test]
    fn only_node_1_runs_the_registry_and_connect_and_shared_options_reach_every_node() {
        let a = args(&[
            "--cluster-dev",
            "2",
            "--registry-addr",
            "127.0.0.1:18081",
            "--default-partitions",
            "4",
            "--broker-session-timeout-ms",
            "3000",
            "--replica-lag-time-max-ms",
            "2000",
            "--leader-imbalance-check-interval-seconds",
            "5",
            "--auto-leader-rebalance-enable",
            "false",
        ]);
        let nodes = plan(2, 9092, Path::new("d")).unwrap();
        let first = node_args(&a, &nodes[0], "q").join(" ");
        let second = node_args(&a, &nodes[1], "q").join(" ");
        assert!(first.contains("--registry-addr 127.0.0.1:18081"), "{first}");
        assert!(!first.contains("--connect-addr"), "{first}");
        assert!(second.contains("--registry-addr off --connect-addr off"));
        for line in [&first, &second] {
            assert!(line.contains("--default-partitions 4"), "{line}");
            assert!(line.contains("--broker-session-timeout-ms 3000"), "{line}");
            assert!(line.contains("--replica-lag-time-max-ms 2000"), "{line}");
            assert!(
                line.contains("--leader-imbalance-check-interval-seconds 5"),
                "{line}"
            );
            assert!(
                line.contains("--auto-leader-rebalance-enable false"),
                "{line}"
            );
            assert!(line.contains("--controller-quorum q"), "{line}");
        }
        assert!(second.contains("--node-id 2 "), "{second}");
        assert!(second.contains("--data-dir d/node-2"), "{second}");
    }

    #[test]
    fn every_node_gets_its_own_admin_port_and_off_turns_all_off() {
        let nodes = plan(3, 9092, Path::new("d")).unwrap();
        let line = |a: &[&str], i: usize| node_args(&args(a), &nodes[i], "q").join(" ");
        let plain = ["--cluster-dev", "3"];
        assert!(line(&plain, 0).contains("--admin-addr 127.0.0.1:9644"));
        assert!(line(&plain, 2).contains("--admin-addr 127.0.0.1:9646"));
        let given = ["--cluster-dev", "3", "--admin-addr", "0.0.0.0:7000"];
        assert!(line(&given, 1).contains("--admin-addr 0.0.0.0:7001"));
        let off = ["--cluster-dev", "3", "--admin-addr", "off"];
        for i in 0..3 {
            assert!(line(&off, i).contains("--admin-addr off"));
        }
        let moved = plan(2, 20000, Path::new("d")).unwrap();
        assert_eq!(moved[1].admin_addr, "127.0.0.1:20553");
        assert!(plan(2, 65000, Path::new("d")).is_err());
    }

    #[test]
    fn per_node_options_are_refused_with_cluster_dev() {
        let e = refuse_per_node_options(&args(&["--cluster-dev", "3", "--node-id", "2"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--node-id"), "{e}");
        assert!(refuse_per_node_options(&args(&["--cluster-dev", "3"])).is_ok());
    }
}
