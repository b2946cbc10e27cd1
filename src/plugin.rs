//! `runnel plugin ...`: create, build, test and inspect WASM plugins, with
//! no broker involved.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Subcommand;
use runnel_plugin_host::{HostConfig, Kind, PluginHost, Record};
use serde_json::{Map, Value};

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Create a new plugin crate from a template
    New {
        /// Crate name (also the directory created)
        name: String,
        /// filter, map, filter-map, flat-map or aggregate
        #[arg(long, default_value = "filter")]
        kind: String,
        /// Path to the runnel-plugin SDK crate [default: the one next to this runnel's source]
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build a plugin crate to a .wasm module
    Build {
        /// The plugin crate's directory
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run a plugin on records from a JSON-lines file and print its output
    /// as JSON lines (no broker needed)
    Test {
        /// The plugin module (.wasm)
        plugin: PathBuf,
        /// JSON lines, one record each: {"key": .., "value": <string or JSON>,
        /// "headers": {..}, "timestamp": ms}; only "value" is required
        #[arg(short, long)]
        input: PathBuf,
        /// Plugin configuration, e.g. --config field=email (repeatable)
        #[arg(short, long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Records per call into the plugin
        #[arg(long, default_value_t = 100)]
        batch_size: usize,
    },
    /// Show a plugin's kind, ABI version, exports and imports
    Inspect {
        /// The plugin module (.wasm)
        plugin: PathBuf,
    },
    /// Deploy a plugin as a broker-side topic transform (the same as
    /// `runnel transform deploy`)
    Deploy(crate::transform::DeployArgs),
}

pub async fn run(cmd: PluginCommand) -> Result<()> {
    if let PluginCommand::Deploy(args) = cmd {
        return crate::transform::deploy(args).await;
    }
    // The host's work is CPU-bound and blocking; keep it off the runtime.
    tokio::task::spawn_blocking(move || match cmd {
        PluginCommand::New { name, kind, sdk } => new_plugin(&name, &kind, sdk),
        PluginCommand::Build { dir } => build(&dir).map(|wasm| println!("{}", wasm.display())),
        PluginCommand::Test {
            plugin,
            input,
            config,
            batch_size,
        } => test(&plugin, &input, &config, batch_size),
        PluginCommand::Inspect { plugin } => inspect(&plugin),
        PluginCommand::Deploy(_) => unreachable!("handled above"),
    })
    .await?
}

fn read_module(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read plugin {}", path.display()))
}

fn inspect(path: &Path) -> Result<()> {
    let host = PluginHost::new(HostConfig::default())?;
    let info = host
        .inspect(&read_module(path)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    println!("plugin:       {}", path.display());
    println!("kind:         {}", info.kind);
    println!(
        "ABI version:  {} (this host runs {:?})",
        info.abi_version,
        runnel_plugin_host::SUPPORTED_ABI_VERSIONS
    );
    println!(
        "takes config: {}",
        if info.has_init {
            "yes (runnel_init)"
        } else {
            "no"
        }
    );
    println!("sha256:       {}", info.sha256);
    println!("exports:      {}", info.exports.join(", "));
    println!(
        "imports:      {}",
        if info.imports.is_empty() {
            "none".to_string()
        } else {
            info.imports.join(", ")
        }
    );
    Ok(())
}

/// Bytes of a JSON value given as a key or value: strings as their text,
/// anything else as compact JSON.
fn json_bytes(v: &Value) -> Option<Bytes> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(Bytes::from(s.clone())),
        other => Some(Bytes::from(other.to_string())),
    }
}

/// Parses one input line into a record at `offset`.
fn parse_line(line: &str, offset: i64) -> Result<Record, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err("not a JSON object".into());
    };
    for k in obj.keys() {
        if !matches!(k.as_str(), "key" | "value" | "headers" | "timestamp") {
            return Err(format!(
                "unknown field \"{k}\" (expected key, value, headers, timestamp)"
            ));
        }
    }
    let value = obj.get("value").ok_or("missing \"value\"")?;
    let timestamp = match obj.get("timestamp") {
        None | Some(Value::Null) => -1,
        Some(Value::Number(n)) => n.as_i64().ok_or("\"timestamp\" must be an integer (ms)")?,
        Some(_) => return Err("\"timestamp\" must be an integer (ms)".into()),
    };
    let headers = match obj.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(h)) => h
            .iter()
            .map(|(k, v)| match v {
                Value::Null => Ok((k.clone(), None)),
                Value::String(s) => Ok((k.clone(), Some(Bytes::from(s.clone())))),
                _ => Err(format!("header \"{k}\" must be a string or null")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("\"headers\" must be an object".into()),
    };
    Ok(Record {
        offset,
        timestamp,
        key: obj.get("key").and_then(json_bytes),
        value: json_bytes(value),
        headers,
        source_index: 0,
    })
}

/// Renders bytes for output: JSON documents as JSON, other UTF-8 as a
/// string, anything else as hex.
fn render(b: &Option<Bytes>) -> Value {
    match b {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => match serde_json::from_str::<Value>(s) {
                Ok(v @ (Value::Object(_) | Value::Array(_))) => v,
                _ => Value::String(s.to_string()),
            },
            Err(_) => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                serde_json::json!({ "hex": hex })
            }
        },
    }
}

fn render_record(r: &Record) -> Value {
    let mut out = Map::new();
    out.insert("source_line".into(), Value::from(r.offset + 1));
    out.insert("key".into(), render(&r.key));
    out.insert("value".into(), render(&r.value));
    if !r.headers.is_empty() {
        let h: Map<String, Value> = r
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_ref().map_or(Value::Null, |v| {
                        Value::String(String::from_utf8_lossy(v).into_owned())
                    }),
                )
            })
            .collect();
        out.insert("headers".into(), Value::Object(h));
    }
    if r.timestamp >= 0 {
        out.insert("timestamp".into(), Value::from(r.timestamp));
    }
    Value::Object(out)
}

fn test(plugin_path: &Path, input: &Path, config: &[String], batch_size: usize) -> Result<()> {
    let config = crate::transform::parse_config(config)?;
    let file =
        std::fs::File::open(input).with_context(|| format!("cannot read {}", input.display()))?;
    let mut records = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", input.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = parse_line(&line, i as i64)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", input.display(), i + 1))?;
        records.push(record);
    }
    let host = PluginHost::new(HostConfig::default())?;
    let name = plugin_path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let plugin = host
        .load(name, &read_module(plugin_path)?, &config)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut state: HashMap<Option<Bytes>, Bytes> = HashMap::new();
    let mut emitted = 0usize;
    for chunk in records.chunks(batch_size.max(1)) {
        let outputs = if plugin.kind() == Kind::Aggregate {
            plugin.aggregate(chunk, &mut state)
        } else {
            plugin.process(chunk)
        }
        .map_err(|e| anyhow::anyhow!("{e} (input line {})", e.first_offset.map_or(0, |o| o + 1)))?;
        for r in &outputs {
            writeln!(out, "{}", render_record(r))?;
        }
        emitted += outputs.len();
    }
    out.flush()?;
    eprintln!(
        "{}: {} records in, {emitted} out ({})",
        plugin_path.display(),
        records.len(),
        plugin.kind()
    );
    Ok(())
}

/// Whether rustup has the wasm32 target (the normal, documented path).
fn rustup_has_wasm_target() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-unknown-unknown")
        })
        .unwrap_or(false)
}

fn build(dir: &Path) -> Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.exists() {
        bail!(
            "{} has no Cargo.toml: give the plugin crate's directory",
            dir.display()
        );
    }
    let mut cmd;
    if rustup_has_wasm_target() {
        cmd = Command::new("cargo");
        cmd.args(["build", "--release", "--target", "wasm32-unknown-unknown"]);
    } else if Path::new("/usr/bin/cargo").exists()
        && Path::new("/usr/lib/rustlib/src/rust/library").exists()
    {
        // Debian's toolchain (rustc-web, cargo-web, rust-web-src, lld)
        // builds the standard library for wasm32 from source.
        cmd = Command::new("/usr/bin/cargo");
        cmd.env("RUSTC", "/usr/bin/rustc")
            .env("RUSTC_BOOTSTRAP", "1")
            .env(
                "PATH",
                format!("/usr/bin:{}", std::env::var("PATH").unwrap_or_default()),
            )
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-unknown-unknown",
                "-Zbuild-std=std,panic_abort",
            ]);
    } else {
        bail!("no WebAssembly toolchain found: run `rustup target add wasm32-unknown-unknown`");
    }
    let status = cmd.current_dir(dir).status().context("running cargo")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    let out_dir = target_dir(dir)?.join("wasm32-unknown-unknown/release");
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in
        std::fs::read_dir(&out_dir).with_context(|| format!("reading {}", out_dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let modified = std::fs::metadata(&path)?.modified()?;
            if newest.as_ref().is_none_or(|(t, _)| modified > *t) {
                newest = Some((modified, path));
            }
        }
    }
    newest
        .map(|(_, p)| p)
        .with_context(|| format!("no .wasm produced in {}", out_dir.display()))
}

fn target_dir(dir: &Path) -> Result<PathBuf> {
    let out = Command::new("cargo")
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(dir)
        .output()
        .context("running cargo metadata")?;
    let v: Value = serde_json::from_slice(&out.stdout).context("reading cargo metadata")?;
    Ok(PathBuf::from(
        v["target_directory"]
            .as_str()
            .context("no target directory in cargo metadata")?,
    ))
}

/// The body of a new plugin's `src/lib.rs` for each kind.
fn template(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "filter" => {
            r#"use runnel_plugin::{export_filter, Config, Record};

/// What the plugin needs from its configuration, parsed once.
struct Settings {
    needle: Vec<u8>,
}

fn settings(config: &Config) -> Result<Settings, String> {
    Ok(Settings { needle: config.get_or("needle", "error").as_bytes().to_vec() })
}

/// Keeps records whose value contains the needle (config `needle`).
fn keep(settings: &Settings, record: &Record) -> bool {
    let needle = settings.needle.as_slice();
    record.value().is_some_and(|v| v.windows(needle.len()).any(|w| w == needle))
}

export_filter!(keep, settings = settings);
"#
        }
        "map" => {
            r#"use runnel_plugin::{export_map, OwnedRecord, Record};

/// Upper-cases every value.
fn upper(record: &Record) -> OwnedRecord {
    let value = record.value().unwrap_or_default().to_ascii_uppercase();
    record.with_value(value)
}

export_map!(upper);
"#
        }
        "filter-map" => {
            r#"use runnel_plugin::{export_filter_map, OwnedRecord, Record};

/// Trims values and drops the empty ones.
fn trim(record: &Record) -> Option<OwnedRecord> {
    let value = record.value_str()?.trim();
    (!value.is_empty()).then(|| record.with_value(value))
}

export_filter_map!(trim);
"#
        }
        "flat-map" => {
            r#"use runnel_plugin::{export_flat_map, OwnedRecord, Record};

/// One record per line of the value.
fn lines(record: &Record) -> Vec<OwnedRecord> {
    let value = record.value_str().unwrap_or_default();
    value.lines().filter(|l| !l.is_empty()).map(|l| record.with_value(l)).collect()
}

export_flat_map!(lines);
"#
        }
        "aggregate" => {
            r#"use runnel_plugin::{export_aggregate, OwnedRecord, Record};

/// Counts records per key; the state is the count (u64, little-endian).
fn count(record: &Record, state: &mut Option<Vec<u8>>) -> Option<OwnedRecord> {
    let before = state.as_deref().and_then(|s| <[u8; 8]>::try_from(s).ok()).map_or(0, u64::from_le_bytes);
    let now = before + 1;
    *state = Some(now.to_le_bytes().to_vec());
    let mut out = OwnedRecord::new().with_value(now.to_string());
    out.key = record.key().map(<[u8]>::to_vec);
    Some(out)
}

export_aggregate!(count);
"#
        }
        _ => return None,
    })
}

fn new_plugin(name: &str, kind: &str, sdk: Option<PathBuf>) -> Result<()> {
    let body = template(kind).with_context(|| {
        format!("'{kind}' is not a plugin kind (filter, map, filter-map, flat-map, aggregate)")
    })?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("'{name}' is not a valid crate name (letters, digits, - and _)");
    }
    let dir = PathBuf::from(name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    // The SDK is not published; by default point at the copy next to the
    // source this runnel was built from.
    let sdk = sdk.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/sdk"));
    let sdk = std::fs::canonicalize(&sdk).unwrap_or(sdk);
    if !sdk.join("Cargo.toml").exists() {
        bail!(
            "the runnel-plugin SDK was not found at {}; pass --sdk PATH",
            sdk.display()
        );
    }
    std::fs::create_dir_all(dir.join("src"))?;
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"

[lib]
# A plugin is a WebAssembly module: build with `runnel plugin build`.
crate-type = ["cdylib"]

[dependencies]
runnel-plugin = {{ path = "{}" }}

[profile.release]
# A panic aborts, which the host reports as a trap of this batch.
panic = "abort"
lto = true
codegen-units = 1

# A plugin builds on its own, not as part of an enclosing workspace.
[workspace]
"#,
        sdk.display()
    );
    std::fs::write(dir.join("Cargo.toml"), manifest)?;
    std::fs::write(
        dir.join("src/lib.rs"),
        format!("//! `{name}`: a Runnel {kind} plugin.\n\n{body}"),
    )?;
    std::fs::write(dir.join("records.jsonl"), "{\"key\": \"a\", \"value\": \"an error happened\"}\n{\"key\": \"b\", \"value\": \"all good\"}\n")?;
    println!("created {kind} plugin {name}/");
    println!("  build:  runnel plugin build {name}");
    println!(
        "  try it: runnel plugin test <the .wasm printed by build> --input {name}/records.jsonl"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_lines_accept_strings_json_and_headers_and_name_mistakes() {
        let r = parse_line(
            r#"{"key":"k","value":{"a":1},"headers":{"h":"v","n":null},"timestamp":5}"#,
            3,
        )
        .unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&br#"{"a":1}"#[..]));
        assert_eq!(
            r.headers,
            vec![
                ("h".into(), Some(Bytes::from_static(b"v"))),
                ("n".into(), None)
            ]
        );
        assert_eq!((r.offset, r.timestamp), (3, 5));
        assert_eq!(
            parse_line(r#"{"value":"text"}"#, 0)
                .unwrap()
                .value
                .as_deref(),
            Some(&b"text"[..])
        );
        assert!(parse_line(r#"{"key":"k"}"#, 0)
            .unwrap_err()
            .contains("missing \"value\""));
        assert!(parse_line(r#"{"value":1,"vaule":2}"#, 0)
            .unwrap_err()
            .contains("unknown field \"vaule\""));
        assert!(parse_line("not json", 0).unwrap_err().contains("not JSON"));
        assert!(parse_line(r#"{"value":1,"timestamp":"x"}"#, 0).is_err());
    }

    #[test]
    fn outputs_render_json_as_json_and_binary_as_hex() {
        assert_eq!(
            render(&Some(Bytes::from_static(br#"{"a":1}"#))),
            serde_json::json!({"a": 1})
        );
        assert_eq!(
            render(&Some(Bytes::from_static(b"plain"))),
            Value::String("plain".into())
        );
        assert_eq!(
            render(&Some(Bytes::from_static(&[0xff, 0x00]))),
            serde_json::json!({"hex": "ff00"})
        );
        assert_eq!(render(&None), Value::Null);
    }
}
