//! The CLI profile: addresses the client commands would otherwise need as
//! flags on every call (brokers, schema registry, connect REST API), in a
//! small YAML file.
//!
//! ```yaml
//! brokers: 10.0.0.1:9092,10.0.0.2:9092
//! registry_url: http://10.0.0.1:8081
//! connect_url: http://10.0.0.1:8083
//! ```
//!
//! The file is `$RUNNEL_CLI_CONFIG`, else `$XDG_CONFIG_HOME/runnel/cli.yaml`,
//! else `~/.config/runnel/cli.yaml`; a missing file is an empty profile.
//! A value is taken from, in order: its flag, its environment variable
//! (`RUNNEL_BOOTSTRAP`, `RUNNEL_REGISTRY_URL`, `RUNNEL_CONNECT_URL`), the
//! profile, the built-in default. The profile is read once, before the
//! command line is parsed, and becomes the flags' defaults (so `--help`
//! shows the values in force). It is not read by `runnel serve` and the
//! other servers, whose settings live in their own config file.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde::{Deserialize, Serialize};

/// Largest profile file read: it holds three addresses.
const MAX_PROFILE_BYTES: u64 = 64 * 1024;

pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
pub const DEFAULT_REGISTRY_URL: &str = "http://127.0.0.1:8081";
pub const DEFAULT_CONNECT_URL: &str = "http://127.0.0.1:8083";

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    /// Kafka bootstrap brokers, host:port[,host:port...]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    /// Schema registry base URL
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_url: Option<String>,
    /// Connect REST API base URL
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_url: Option<String>,
}

static LOADED: OnceLock<Profile> = OnceLock::new();

/// Where the profile is read from and written to.
pub fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RUNNEL_CLI_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config_home.join("runnel").join("cli.yaml"))
}

/// Reads the profile at `path`; a missing file is an empty profile.
pub fn read(path: &std::path::Path) -> Result<Profile> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Profile::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size > MAX_PROFILE_BYTES {
        bail!(
            "{} is {size} bytes; a CLI profile is at most {MAX_PROFILE_BYTES}",
            path.display()
        );
    }
    let text =
        std::io::read_to_string(file).with_context(|| format!("cannot read {}", path.display()))?;
    if text.trim().is_empty() {
        return Ok(Profile::default());
    }
    serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a valid CLI profile", path.display()))
}

/// Loads the profile for this process; called once before parsing flags.
pub fn load() -> Result<()> {
    let profile = match path() {
        Some(p) => read(&p)?,
        None => Profile::default(),
    };
    let _ = LOADED.set(profile);
    Ok(())
}

fn loaded() -> &'static Profile {
    LOADED.get_or_init(Profile::default)
}

/// The default of `--brokers`: the profile's, else 127.0.0.1:9092.
pub fn brokers() -> String {
    loaded()
        .brokers
        .clone()
        .unwrap_or_else(|| DEFAULT_BROKERS.to_string())
}

/// The default of `--registry-url`: the profile's, else http://127.0.0.1:8081.
pub fn registry_url() -> String {
    loaded()
        .registry_url
        .clone()
        .unwrap_or_else(|| DEFAULT_REGISTRY_URL.to_string())
}

#[derive(Subcommand, Debug)]
pub enum ProfileCommand {
    /// Print the values in force and where each comes from (flag values
    /// aside: env var, profile file or built-in default)
    Show {
        #[command(flatten)]
        format: crate::output::FormatArgs,
    },
    /// Set keys in the profile file (brokers, registry_url, connect_url);
    /// an empty value removes the key
    Set {
        #[arg(value_name = "KEY=VALUE", required = true)]
        pairs: Vec<String>,
    },
    /// Print the path of the profile file
    Path,
}

#[derive(Serialize)]
struct Shown {
    file: Option<String>,
    brokers: Source,
    registry_url: Source,
    connect_url: Source,
}

#[derive(Serialize)]
struct Source {
    value: String,
    from: String,
}

fn source(env: &str, profile: &Option<String>, default: &str) -> Source {
    match (std::env::var(env).ok().filter(|v| !v.is_empty()), profile) {
        (Some(v), _) => Source {
            value: v,
            from: format!("env {env}"),
        },
        (None, Some(v)) => Source {
            value: v.clone(),
            from: "profile".into(),
        },
        (None, None) => Source {
            value: default.to_string(),
            from: "default".into(),
        },
    }
}

pub fn run(cmd: ProfileCommand) -> Result<()> {
    let file = path();
    match cmd {
        ProfileCommand::Path => {
            match &file {
                Some(p) => println!("{}", p.display()),
                None => bail!("no profile path: set RUNNEL_CLI_CONFIG or HOME"),
            }
            Ok(())
        }
        ProfileCommand::Show { format } => {
            let p = loaded();
            let shown = Shown {
                file: file.as_ref().map(|f| f.display().to_string()),
                brokers: source("RUNNEL_BOOTSTRAP", &p.brokers, DEFAULT_BROKERS),
                registry_url: source("RUNNEL_REGISTRY_URL", &p.registry_url, DEFAULT_REGISTRY_URL),
                connect_url: source("RUNNEL_CONNECT_URL", &p.connect_url, DEFAULT_CONNECT_URL),
            };
            crate::output::emit(format.get(), &shown, || {
                let mut out = format!(
                    "file:          {}\n",
                    shown.file.as_deref().unwrap_or("(none)")
                );
                for (k, s) in [
                    ("brokers", &shown.brokers),
                    ("registry_url", &shown.registry_url),
                    ("connect_url", &shown.connect_url),
                ] {
                    out.push_str(&format!(
                        "{:<14} {}  ({})\n",
                        format!("{k}:"),
                        s.value,
                        s.from
                    ));
                }
                out
            })
        }
        ProfileCommand::Set { pairs } => {
            let Some(file) = file else {
                bail!("no profile path: set RUNNEL_CLI_CONFIG or HOME");
            };
            let mut profile = read(&file)?;
            for pair in &pairs {
                let Some((k, v)) = pair.split_once('=') else {
                    bail!("'{pair}' is not KEY=VALUE");
                };
                let v = (!v.trim().is_empty()).then(|| v.trim().to_string());
                match k.trim() {
                    "brokers" => profile.brokers = v,
                    "registry_url" => profile.registry_url = v,
                    "connect_url" => profile.connect_url = v,
                    other => {
                        bail!("unknown profile key '{other}' (brokers, registry_url, connect_url)")
                    }
                }
            }
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let text = serde_yaml::to_string(&profile)?;
            std::fs::write(&file, text)
                .with_context(|| format!("cannot write {}", file.display()))?;
            eprintln!("wrote {}", file.display());
            Ok(())
        }
    }
}
