//! `runnel`: a Kafka-compatible streaming platform in one binary.
//!
//! This crate is deliberately thin: it parses the command line and wires the
//! library crates together. The broker lives in `runnel-core`.

mod admin;
mod bench;
mod cluster;
mod connect;
mod console;
mod consume;
mod dev_cluster;
#[cfg(test)]
mod docs_tests;
mod group;
mod http;
mod input_format;
mod kafka_client;
mod logdirs;
mod offset_spec;
mod output;
mod pipeline;
mod plugin;
mod produce;
mod profile;
mod reassign;
mod registry;
mod schema;
mod serve;
mod signals;
mod topic;
mod transform;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Malformed requests can make the protocol decoder ask for absurd amounts of
// memory up front; see `runnel_core::alloc` for why this keeps the broker up.
#[global_allocator]
static ALLOCATOR: runnel_core::alloc::GuardedAlloc = runnel_core::alloc::GuardedAlloc;

#[derive(Parser)]
#[command(
    name = "runnel",
    version,
    about = "A Kafka-compatible streaming platform in one binary",
    long_about = "A Kafka-compatible streaming platform in one binary.\n\n\
        Start a broker with `runnel serve`, then point any Kafka client at 127.0.0.1:9092\n\
        and schema registry clients at http://127.0.0.1:8081, or use the built-in\n\
        `topic`, `produce`, `consume` and `schema` commands.",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (Kafka protocol on --kafka-addr, schema registry on
    /// --registry-addr, data in --data-dir)
    Serve(Box<serve::ServeArgs>),
    /// Run the schema registry on its own, against any Kafka broker
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// Register, fetch, list and check Avro schemas in a schema registry
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    /// Run a connect worker (connectors and the Kafka Connect REST API) on
    /// its own, against any Kafka broker
    Connect(connect::ConnectArgs),
    /// Validate, test and run YAML pipelines (source -> transforms -> sink)
    #[command(subcommand)]
    Pipeline(pipeline::PipelineCommand),
    /// Show the cluster (controller, brokers, partition leaders, replicas and
    /// ISR) and move leaders back to their preferred replicas
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Create, list, describe, delete and configure topics
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// List, describe, reset and delete consumer groups
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Produce records from stdin (one value per line, or any layout with -f)
    Produce(produce::ProduceArgs),
    /// Print records of topics to stdout (one JSON object per record)
    Consume(consume::ConsumeArgs),
    /// Show the brokers' log directories: bytes per partition and totals
    #[command(subcommand)]
    Logdirs(logdirs::LogdirsCommand),
    /// Show or set the CLI profile (brokers, registry and connect URLs used
    /// when no flag or env var gives them)
    #[command(subcommand)]
    Profile(profile::ProfileCommand),
    /// Print a shell completion script: runnel completion bash > /etc/bash_completion.d/runnel
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Deploy WASM plugins as broker-side topic transforms
    #[command(subcommand)]
    Transform(transform::TransformCommand),
    /// Create, build, test and inspect WASM plugins
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Measure produce and consume throughput and latency
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn init_tracing(default_level: &str) {
    let wanted = std::env::var("RUNNEL_LOG").unwrap_or_else(|_| default_level.to_string());
    let mut filter = tracing_subscriber::EnvFilter::try_new(&wanted)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // The Raft library reports every election step at INFO; its warnings
    // are what an operator needs unless RUNNEL_LOG asks for it by name.
    if !wanted.contains("openraft") {
        if let Ok(quiet) = "openraft=warn".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    // Colours only for a person at a terminal: a log file, a pipe or a
    // journal gets plain text (and NO_COLOR turns them off anywhere).
    use std::io::IsTerminal;
    let colours = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colours)
        .init();
}

fn main() -> ExitCode {
    // The profile gives the flags their defaults, so it comes first.
    if let Err(e) = profile::load() {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    if let Command::Completion { shell } = &cli.command {
        use clap::CommandFactory;
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "runnel",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let server = matches!(
        cli.command,
        Command::Serve(_)
            | Command::Registry(_)
            | Command::Connect(_)
            | Command::Bench(_)
            | Command::Pipeline(pipeline::PipelineCommand::Run { .. })
    );
    if !server {
        // A command whose output is piped into `head` ends quietly when
        // the reader goes, as `cat` does (Rust ignores SIGPIPE, so each
        // print would panic on the broken pipe). Sockets are unaffected:
        // writes to them never raise SIGPIPE (MSG_NOSIGNAL).
        // SAFETY: called before any other thread exists; SIG_DFL is a
        // valid disposition for SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    init_tracing(
        if matches!(
            cli.command,
            Command::Serve(_)
                | Command::Registry(_)
                | Command::Connect(_)
                | Command::Pipeline(pipeline::PipelineCommand::Run { .. })
        ) {
            "info"
        } else {
            "warn"
        },
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => match args.cluster_dev {
                Some(nodes) => dev_cluster::run(*args, nodes).await,
                None => serve::run(*args).await,
            },
            Command::Registry(cmd) => registry::run(cmd).await,
            Command::Schema(cmd) => schema::run(cmd).await,
            Command::Connect(args) => connect::run(args).await,
            Command::Pipeline(cmd) => pipeline::run(cmd).await,
            Command::Cluster(cmd) => cluster::run(cmd).await,
            Command::Topic(cmd) => topic::run(cmd).await,
            Command::Group(cmd) => group::run(cmd).await,
            Command::Produce(args) => produce::run(args).await,
            Command::Consume(args) => consume::run(args).await,
            Command::Logdirs(cmd) => logdirs::run(cmd).await,
            Command::Profile(cmd) => profile::run(cmd),
            Command::Completion { .. } => Ok(()),
            Command::Plugin(cmd) => plugin::run(cmd).await,
            Command::Transform(cmd) => transform::run(cmd).await,
            Command::Bench(cmd) => bench::run(cmd).await,
        }
    });
    // Blocking tasks (e.g. stdin readers) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One readable line: the error and its causes.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Options shared by every command that talks to a running broker.
#[derive(clap::Args, Clone, Debug)]
pub struct ConnectArgs {
    /// Broker addresses, host:port[,host:port...] (the first that answers
    /// is used); default from the CLI profile (`runnel profile`)
    #[arg(
        short,
        long,
        visible_alias = "brokers",
        env = "RUNNEL_BOOTSTRAP",
        value_name = "HOST:PORT[,...]",
        default_value_t = profile::brokers()
    )]
    pub bootstrap: String,
}

#[cfg(test)]
mod cli_reference {
    //! `docs/cli.md` is generated from the clap definitions: every command's
    //! long help, as `runnel <command> --help` prints it. The test fails
    //! when the file is out of date; `RUNNEL_UPDATE_DOCS=1 cargo test -p
    //! runnel --bins cli_reference` writes it.

    use clap::CommandFactory;

    fn section(out: &mut String, command: &mut clap::Command, path: &str) {
        let hidden = command.is_hide_set();
        if hidden {
            return;
        }
        let help = command.render_long_help().to_string();
        out.push_str(&format!(
            "## `{path}`\n\n```text\n{}\n```\n\n",
            help.trim_end()
        ));
        let names: Vec<String> = command
            .get_subcommands()
            .filter(|c| !c.is_hide_set() && c.get_name() != "help")
            .map(|c| c.get_name().to_string())
            .collect();
        for name in names {
            if let Some(sub) = command.find_subcommand_mut(&name) {
                let mut sub = sub.clone();
                section(out, &mut sub, &format!("{path} {name}"));
            }
        }
    }

    fn render() -> String {
        let mut command = super::Cli::command();
        command.build();
        let mut out = String::from(
            "# CLI reference\n\nGenerated from the command definitions (`src/main.rs`'s test \
             `cli_reference`); every section is what `--help` prints. Flags with an \
             environment variable take it when the flag is not given, and the CLI profile \
             (`runnel profile`) gives defaults for the connection flags.\n\n",
        );
        section(&mut out, &mut command, "runnel");
        out
    }

    #[test]
    fn docs_cli_md_is_the_help_of_every_command() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md");
        let rendered = render();
        if std::env::var_os("RUNNEL_UPDATE_DOCS").is_some() {
            std::fs::write(path, &rendered).unwrap();
        }
        let stored = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            stored == rendered,
            "docs/cli.md is out of date: run RUNNEL_UPDATE_DOCS=1 cargo test -p runnel --bins cli_reference"
        );
    }
}
