//! `runnel transform ...`: deploy WASM plugins as broker-side topic
//! transforms, and the engine that runs them inside `runnel serve`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Subcommand};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use runnel_core::client::Client;
use runnel_core::transforms::{
    encode_records, Deployment, DeploymentHeader, OnError, TransformEngine, TransformFn,
    TransformRecord, TransformStatus, DEPLOYMENTS_TOPIC, STATUS_TOPIC,
};
use runnel_plugin_host::{Kind, Plugin, PluginHost, Record};

use crate::ConnectArgs;

/// Arguments of `runnel transform deploy` (also `runnel plugin deploy`).
#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The plugin module (.wasm)
    plugin: PathBuf,
    /// The transform's name
    #[arg(long)]
    name: String,
    /// The topic whose records the plugin processes
    #[arg(long)]
    input_topic: String,
    /// The topic the plugin's output records go to
    #[arg(long)]
    output_topic: String,
    /// Plugin configuration, e.g. --config field=email (repeatable)
    #[arg(short, long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// On a failing batch: stop, skip, or dead-letter:<topic>
    #[arg(long, default_value = "stop")]
    on_error: String,
    /// Also transform the records produced before the deployment (by
    /// default a transform starts with the first record produced after it)
    #[arg(long)]
    from_beginning: bool,
    /// Keep running and redeploy whenever the .wasm file changes (the
    /// broker swaps the module between batches)
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Subcommand, Debug)]
pub enum TransformCommand {
    /// Run a plugin on every record produced to an input topic, writing the
    /// results to an output topic (redeploying under the same name swaps
    /// the module)
    Deploy(DeployArgs),
    /// List deployed transforms and their state
    List {
        #[command(flatten)]
        format: crate::output::FormatArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Stop and remove a transform
    Delete {
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// One line of `transform list`.
#[derive(serde::Serialize)]
struct ListedTransform {
    name: String,
    input_topic: String,
    output_topic: String,
    /// `pending` until the broker reports on this module.
    state: String,
    error: Option<String>,
    on_error: String,
    sha256: String,
}

/// A plugin's `--config KEY=VALUE` pairs (`plugin run`, `plugin deploy`,
/// `transform deploy`).
pub fn parse_config(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut config = BTreeMap::new();
    for kv in pairs {
        match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                config.insert(k.trim().to_string(), v.to_string());
            }
            _ => bail!("--config '{kv}' is not KEY=VALUE"),
        }
    }
    Ok(config)
}

/// `runnel transform deploy`: checks the module locally, then writes the
/// deployment to the deployments topic; with `--watch`, again on every
/// change of the file.
pub async fn deploy(args: DeployArgs) -> Result<()> {
    if args.input_topic == args.output_topic {
        bail!("the input and output topics must differ (the transform would read its own output)");
    }
    let on_error =
        OnError::try_from(args.on_error.clone()).map_err(|e| anyhow::anyhow!("--on-error: {e}"))?;
    let config = parse_config(&args.config)?;
    let host = Arc::new(PluginHost::new(Default::default()).map_err(|e| anyhow::anyhow!("{e}"))?);
    let mut client = connect(&args.connect).await?;
    let mut deployed: Option<String> = None;
    loop {
        match deploy_once(
            &args,
            &host,
            &config,
            on_error.clone(),
            &mut client,
            &deployed,
        )
        .await
        {
            Ok(Some(sha256)) => {
                println!("deployed transform {} ({} ...)", args.name, &sha256[..12]);
                deployed = Some(sha256);
            }
            Ok(None) => {}
            // Without --watch every error ends the command; with it, a
            // broken file (e.g. half-written) waits for the next change.
            Err(e) if args.watch && deployed.is_some() => {
                eprintln!("not redeployed: {e:#}");
            }
            Err(e) => return Err(e),
        }
        if !args.watch {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Deploys the file's current module unless it is `deployed` already;
/// returns the new module's SHA-256.
async fn deploy_once(
    args: &DeployArgs,
    host: &Arc<PluginHost>,
    config: &BTreeMap<String, String>,
    on_error: OnError,
    client: &mut Client,
    deployed: &Option<String>,
) -> Result<Option<String>> {
    let module = std::fs::read(&args.plugin)
        .with_context(|| format!("cannot read plugin {}", args.plugin.display()))?;
    let sha256 = runnel_plugin_host::sha256_hex(&module);
    if deployed.as_deref() == Some(sha256.as_str()) {
        return Ok(None);
    }
    // Check the module here, so a bad one fails the command rather than
    // the broker.
    let host = host.clone();
    let checked_config = config.clone();
    let module = tokio::task::spawn_blocking(move || {
        let loaded = host
            .load("deploy-check", &module, &checked_config)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if loaded.kind() == Kind::Aggregate {
            bail!("aggregate plugins cannot run as topic transforms yet");
        }
        Ok::<_, anyhow::Error>(module)
    })
    .await??;
    let deployment = Deployment {
        header: DeploymentHeader {
            name: args.name.clone(),
            input_topic: args.input_topic.clone(),
            output_topic: args.output_topic.clone(),
            config: config.clone(),
            on_error,
            from_beginning: args.from_beginning,
            sha256: sha256.clone(),
            deployed_at_ms: runnel_core::broker::now_ms(),
        },
        module: Bytes::from(module),
    };
    write(
        client,
        DEPLOYMENTS_TOPIC,
        &args.name,
        Some(deployment.encode().map_err(anyhow::Error::msg)?),
    )
    .await?;
    Ok(Some(sha256))
}

/// Runs WASM plugins as transforms inside the broker.
pub struct WasmEngine {
    host: Arc<PluginHost>,
}

impl WasmEngine {
    pub fn new(host: Arc<PluginHost>) -> WasmEngine {
        WasmEngine { host }
    }
}

struct WasmTransform(Plugin);

fn to_record(r: &TransformRecord) -> Record {
    Record {
        offset: r.offset,
        timestamp: r.timestamp,
        key: r.key.clone(),
        value: r.value.clone(),
        headers: r.headers.clone(),
        source_index: 0,
    }
}

impl TransformFn for WasmTransform {
    fn apply(&self, input: &[TransformRecord]) -> Result<Vec<TransformRecord>, String> {
        let records: Vec<Record> = input.iter().map(to_record).collect();
        let out = self.0.process(&records).map_err(|e| e.to_string())?;
        Ok(out
            .into_iter()
            .map(|r| TransformRecord {
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r.headers,
                source_index: r.source_index,
            })
            .collect())
    }
}

impl TransformEngine for WasmEngine {
    fn load(&self, d: &Deployment) -> Result<Arc<dyn TransformFn>, String> {
        let plugin = self
            .host
            .load(&d.header.name, &d.module, &d.header.config)
            .map_err(|e| e.to_string())?;
        if plugin.kind() == Kind::Aggregate {
            return Err(
                "aggregate plugins keep state and cannot run as topic transforms yet".into(),
            );
        }
        Ok(Arc::new(WasmTransform(plugin)))
    }
}

async fn connect(args: &ConnectArgs) -> Result<Client> {
    Client::connect(&args.bootstrap, "runnel-cli")
        .await
        .with_context(|| format!("cannot reach a broker at {}", args.bootstrap))
}

/// Appends one record to partition 0 of a topic through the protocol.
async fn write(client: &mut Client, topic: &str, key: &str, value: Option<Bytes>) -> Result<()> {
    // Only the partition's leader takes writes.
    let mut leader = client
        .connect_to_leader(topic, 0, "runnel-cli")
        .await
        .with_context(|| format!("cannot reach the leader of {topic}"))?;
    let client = &mut leader;
    let record = TransformRecord {
        key: Some(Bytes::from(key.to_string())),
        value,
        timestamp: -1,
        ..Default::default()
    };
    let mut p = PartitionProduceData::default();
    p.index = 0;
    p.records = Some(encode_records(&[record])?);
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_data = vec![p];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 30_000;
    request.topic_data = vec![t];
    let response = client.send(&request).await?;
    let r = &response.responses[0].partition_responses[0];
    if r.error_code != 0 {
        let name = kafka_protocol::ResponseError::try_from_code(r.error_code)
            .map(|e| e.to_string())
            .unwrap_or_default();
        bail!(
            "writing to {topic}: {name} {}",
            r.error_message.as_deref().unwrap_or_default()
        );
    }
    Ok(())
}

/// Latest value per key of a compacted single-partition topic, read
/// through the broker at `bootstrap` (the web console's transforms page).
pub(crate) async fn read_latest_at(
    bootstrap: &str,
    topic: &str,
) -> Result<BTreeMap<String, Bytes>> {
    let mut client = Client::connect(bootstrap, "runnel-console")
        .await
        .with_context(|| format!("cannot reach a broker at {bootstrap}"))?;
    read_latest(&mut client, topic).await
}

/// Latest value per key of a compacted single-partition topic.
async fn read_latest(client: &mut Client, topic: &str) -> Result<BTreeMap<String, Bytes>> {
    // Only the partition's leader serves reads.
    let mut leader = client
        .connect_to_leader(topic, 0, "runnel-cli")
        .await
        .with_context(|| format!("cannot reach the leader of {topic}"))?;
    let client = &mut leader;
    let mut latest = BTreeMap::new();
    let mut offset = 0i64;
    loop {
        let mut fp = FetchPartition::default();
        fp.partition = 0;
        fp.fetch_offset = offset;
        fp.partition_max_bytes = 32 << 20;
        fp.current_leader_epoch = -1;
        let mut ft = FetchTopic::default();
        ft.topic = TopicName(StrBytes::from_string(topic.to_string()));
        ft.partitions = vec![fp];
        let mut request = FetchRequest::default();
        request.replica_id = (-1).into();
        request.max_bytes = 64 << 20;
        request.topics = vec![ft];
        let response = client.send_version(&request, 12).await?;
        let p = &response.responses[0].partitions[0];
        match p.error_code {
            0 => {}
            1 if offset < p.log_start_offset => {
                offset = p.log_start_offset;
                continue;
            }
            3 => return Ok(latest),
            code => bail!("reading {topic}: error {code}"),
        }
        let mut data = p.records.clone().unwrap_or_default();
        let mut advanced = false;
        while !data.is_empty() {
            let Ok(set) = kafka_protocol::records::RecordBatchDecoder::decode(&mut data) else {
                break;
            };
            for r in set.records {
                offset = offset.max(r.offset + 1);
                advanced = true;
                if let Some(k) = r.key {
                    let k = String::from_utf8_lossy(&k).into_owned();
                    match r.value {
                        Some(v) => {
                            latest.insert(k, v);
                        }
                        None => {
                            latest.remove(&k);
                        }
                    }
                }
            }
        }
        if !advanced || offset >= p.high_watermark {
            return Ok(latest);
        }
    }
}

pub async fn run(cmd: TransformCommand) -> Result<()> {
    match cmd {
        TransformCommand::Deploy(args) => deploy(args).await,
        TransformCommand::List { format, connect: c } => {
            let mut client = connect(&c).await?;
            let deployments = read_latest(&mut client, DEPLOYMENTS_TOPIC).await?;
            let statuses = read_latest(&mut client, STATUS_TOPIC).await?;
            let mut listed = Vec::new();
            for (name, raw) in deployments {
                let d = Deployment::decode(&raw).map_err(anyhow::Error::msg)?;
                // A status about another module means the broker has not
                // applied this deployment yet.
                let status = statuses
                    .get(&name)
                    .and_then(|s| serde_json::from_slice::<TransformStatus>(s).ok())
                    .filter(|s| s.sha256 == d.header.sha256);
                listed.push(ListedTransform {
                    name,
                    input_topic: d.header.input_topic.clone(),
                    output_topic: d.header.output_topic.clone(),
                    state: status
                        .as_ref()
                        .map_or("pending".to_string(), |s| s.state.clone()),
                    error: status.and_then(|s| s.error),
                    on_error: String::from(d.header.on_error.clone()),
                    sha256: d.header.sha256.clone(),
                });
            }
            if listed.is_empty() && format.get() == crate::output::Format::Text {
                eprintln!("no transforms");
            }
            crate::output::emit(format.get(), &listed, || {
                listed
                    .iter()
                    .map(|t| {
                        format!(
                            "{}\t{} -> {}\t{}\ton-error {}\tsha256 {}{}\n",
                            t.name,
                            t.input_topic,
                            t.output_topic,
                            t.state,
                            t.on_error,
                            &t.sha256[..12.min(t.sha256.len())],
                            t.error
                                .as_ref()
                                .map(|e| format!("  error: {e}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect()
            })
        }
        TransformCommand::Delete { name, connect: c } => {
            let mut client = connect(&c).await?;
            let deployments = read_latest(&mut client, DEPLOYMENTS_TOPIC).await?;
            if !deployments.contains_key(&name) {
                bail!("no transform named '{name}'");
            }
            write(&mut client, DEPLOYMENTS_TOPIC, &name, None).await?;
            println!("deleted transform {name}");
            Ok(())
        }
    }
}
