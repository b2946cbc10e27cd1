//! `runnel schema ...`: a client of any Confluent-compatible schema
//! registry's REST API (Runnel's, Confluent's, Redpanda's).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use runnel_schema_registry::path_segment;
use serde_json::{json, Value};

#[derive(Args, Clone, Debug)]
pub struct RegistryArgs {
    /// Schema registry URL; default from the CLI profile (`runnel profile`)
    #[arg(
        short = 'r',
        long = "registry-url",
        alias = "registry",
        env = "RUNNEL_REGISTRY_URL",
        value_name = "URL",
        default_value_t = crate::profile::registry_url()
    )]
    pub url: String,
}

#[derive(Subcommand, Debug)]
pub enum SchemaCommand {
    /// Register a schema under a subject (prints its id and version)
    Register {
        subject: String,
        /// Avro schema file (JSON), or - for stdin
        file: PathBuf,
        /// A reference to another subject's schema, NAME=SUBJECT:VERSION
        /// (repeatable)
        #[arg(long = "reference", value_name = "NAME=SUBJECT:VERSION")]
        references: Vec<String>,
        /// Normalise the schema before registering (Confluent's normalize=true)
        #[arg(long)]
        normalize: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Print a schema: by --id, or a subject's version (latest by default)
    #[command(disable_version_flag = true)]
    Get {
        /// Subject (omit with --id)
        subject: Option<String>,
        /// Version number or "latest"
        #[arg(short, long, default_value = "latest")]
        version: String,
        /// Global schema id
        #[arg(long, conflicts_with = "subject")]
        id: Option<i32>,
        /// Include soft-deleted versions
        #[arg(long)]
        deleted: bool,
        #[command(flatten)]
        format: crate::output::FormatArgs,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// List subjects, or the versions of one subject
    List {
        subject: Option<String>,
        /// Include soft-deleted subjects or versions
        #[arg(long)]
        deleted: bool,
        #[command(flatten)]
        format: crate::output::FormatArgs,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Check whether a schema is compatible with a subject (exit status 1
    /// when it is not)
    #[command(disable_version_flag = true)]
    Check {
        subject: String,
        /// Avro schema file (JSON), or - for stdin
        file: PathBuf,
        /// Check against this version only [default: every version the
        /// subject's compatibility level requires]
        #[arg(short, long)]
        version: Option<String>,
        #[arg(long = "reference", value_name = "NAME=SUBJECT:VERSION")]
        references: Vec<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Delete a subject, or one version of it (soft unless --permanent)
    #[command(disable_version_flag = true)]
    Delete {
        subject: String,
        #[arg(short, long)]
        version: Option<String>,
        /// Delete for good (a soft delete must come first)
        #[arg(long)]
        permanent: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Show or set the compatibility level (global, or of a subject)
    Config {
        subject: Option<String>,
        /// NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE,
        /// FULL or FULL_TRANSITIVE
        #[arg(long)]
        set: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

/// A small REST client that turns registry errors into readable ones.
struct Registry {
    base: String,
    http: reqwest::Client,
}

impl Registry {
    fn new(args: &RegistryArgs) -> Result<Registry> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("creating the HTTP client")?;
        Ok(Registry {
            base: args.url.trim_end_matches('/').to_string(),
            http,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .header("Accept", "application/vnd.schemaregistry.v1+json");
        if let Some(b) = body {
            request = request
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .body(b.to_string());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the schema registry at {}", self.base))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if !status.is_success() {
            let code = value["error_code"]
                .as_i64()
                .unwrap_or(status.as_u16() as i64);
            let message = value["message"].as_str().unwrap_or(&text);
            bail!(
                "{method} {path}: {} (error code {code}): {message}",
                status.as_u16()
            );
        }
        Ok(value)
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }
}

fn read_schema(file: &PathBuf) -> Result<String> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the schema from stdin")?
    } else {
        std::fs::read_to_string(file)
            .with_context(|| format!("cannot read schema file {}", file.display()))?
    };
    // Catch a broken file here with its line and column.
    serde_json::from_str::<Value>(&text)
        .with_context(|| format!("{} is not valid JSON", file.display()))?;
    Ok(text)
}

fn parse_references(refs: &[String]) -> Result<Value> {
    let mut out = Vec::new();
    for r in refs {
        let parsed = r.split_once('=').and_then(|(name, rest)| {
            let (subject, version) = rest.rsplit_once(':')?;
            Some((name, subject, version.parse::<i32>().ok()?))
        });
        let Some((name, subject, version)) = parsed else {
            bail!("--reference {r}: expected NAME=SUBJECT:VERSION");
        };
        out.push(json!({"name": name, "subject": subject, "version": version}));
    }
    Ok(Value::Array(out))
}

/// The body of a register, lookup or compatibility request.
fn schema_body(file: &PathBuf, references: &[String]) -> Result<Value> {
    Ok(json!({
        "schema": read_schema(file)?,
        "schemaType": "AVRO",
        "references": parse_references(references)?,
    }))
}

/// A registry answer with its `schema` string parsed into JSON, so JSON
/// and YAML output show the schema as a structure.
fn with_parsed_schema(mut v: Value) -> Value {
    if let Some(parsed) = v["schema"]
        .as_str()
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
    {
        v["schema"] = parsed;
    }
    v
}

fn print_schema(text: &str) {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => println!(
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_else(|_| text.to_string())
        ),
        Err(_) => println!("{text}"),
    }
}

pub async fn run(cmd: SchemaCommand) -> Result<()> {
    match cmd {
        SchemaCommand::Register {
            subject,
            file,
            references,
            normalize,
            registry,
        } => {
            let r = Registry::new(&registry)?;
            let body = schema_body(&file, &references)?;
            let s = path_segment(&subject);
            let registered = r
                .call(
                    reqwest::Method::POST,
                    &format!("/subjects/{s}/versions?normalize={normalize}"),
                    Some(body.clone()),
                )
                .await?;
            let found = r
                .call(
                    reqwest::Method::POST,
                    &format!("/subjects/{s}?normalize={normalize}"),
                    Some(body),
                )
                .await?;
            println!(
                "registered {subject} version {} with schema id {}",
                found["version"], registered["id"]
            );
        }
        SchemaCommand::Get {
            subject,
            version,
            id,
            deleted,
            format,
            registry,
        } => {
            let r = Registry::new(&registry)?;
            let format = format.get();
            match (id, subject) {
                (Some(id), _) => {
                    let v = r.get(&format!("/schemas/ids/{id}")).await?;
                    if format != crate::output::Format::Text {
                        let mut v = with_parsed_schema(v);
                        v["id"] = json!(id);
                        return crate::output::emit(format, &v, String::new);
                    }
                    print_schema(v["schema"].as_str().unwrap_or_default());
                }
                (None, Some(subject)) => {
                    let v = r
                        .get(&format!(
                            "/subjects/{}/versions/{}?deleted={deleted}",
                            path_segment(&subject),
                            path_segment(&version)
                        ))
                        .await?;
                    if format != crate::output::Format::Text {
                        return crate::output::emit(format, &with_parsed_schema(v), String::new);
                    }
                    println!(
                        "subject {} version {} id {}",
                        v["subject"].as_str().unwrap_or(&subject),
                        v["version"],
                        v["id"]
                    );
                    if let Some(refs) = v["references"].as_array() {
                        for reference in refs {
                            println!(
                                "reference {} -> {} version {}",
                                reference["name"].as_str().unwrap_or_default(),
                                reference["subject"].as_str().unwrap_or_default(),
                                reference["version"]
                            );
                        }
                    }
                    print_schema(v["schema"].as_str().unwrap_or_default());
                }
                (None, None) => bail!("give a subject or --id"),
            }
        }
        SchemaCommand::List {
            subject,
            deleted,
            format,
            registry,
        } => {
            let r = Registry::new(&registry)?;
            let path = match &subject {
                Some(s) => format!("/subjects/{}/versions?deleted={deleted}", path_segment(s)),
                None => format!("/subjects?deleted={deleted}"),
            };
            let items = r.get(&path).await?.as_array().cloned().unwrap_or_default();
            crate::output::emit(format.get(), &items, || {
                items
                    .iter()
                    .map(|item| match item {
                        Value::String(s) => format!("{s}\n"),
                        other => format!("{other}\n"),
                    })
                    .collect()
            })?;
        }
        SchemaCommand::Check {
            subject,
            file,
            version,
            references,
            registry,
        } => {
            let r = Registry::new(&registry)?;
            let body = schema_body(&file, &references)?;
            let s = path_segment(&subject);
            let path = match &version {
                Some(v) => format!(
                    "/compatibility/subjects/{s}/versions/{}?verbose=true",
                    path_segment(v)
                ),
                None => format!("/compatibility/subjects/{s}/versions?verbose=true"),
            };
            let v = r.call(reqwest::Method::POST, &path, Some(body)).await?;
            if v["is_compatible"].as_bool() == Some(true) {
                println!("compatible with {subject}");
            } else {
                println!("INCOMPATIBLE with {subject}:");
                for m in v["messages"].as_array().cloned().unwrap_or_default() {
                    println!("  {}", m.as_str().unwrap_or_default());
                }
                bail!("the schema is not compatible with {subject}");
            }
        }
        SchemaCommand::Delete {
            subject,
            version,
            permanent,
            registry,
        } => {
            let r = Registry::new(&registry)?;
            let s = path_segment(&subject);
            let path = match &version {
                Some(v) => format!(
                    "/subjects/{s}/versions/{}?permanent={permanent}",
                    path_segment(v)
                ),
                None => format!("/subjects/{s}?permanent={permanent}"),
            };
            let v = r.call(reqwest::Method::DELETE, &path, None).await?;
            let how = if permanent { "permanently " } else { "soft-" };
            println!("{how}deleted {subject} version(s) {v}");
        }
        SchemaCommand::Config {
            subject,
            set,
            registry,
        } => {
            let r = Registry::new(&registry)?;
            let path = match &subject {
                Some(s) => format!("/config/{}", path_segment(s)),
                None => "/config".to_string(),
            };
            match set {
                Some(level) => {
                    r.call(
                        reqwest::Method::PUT,
                        &path,
                        Some(json!({"compatibility": level})),
                    )
                    .await?;
                    println!(
                        "{} compatibility set to {}",
                        subject.as_deref().unwrap_or("global"),
                        level.to_ascii_uppercase()
                    );
                }
                None => {
                    let query = if subject.is_some() {
                        "?defaultToGlobal=true"
                    } else {
                        ""
                    };
                    let v = r.get(&format!("{path}{query}")).await?;
                    println!("{}", v["compatibilityLevel"].as_str().unwrap_or_default());
                }
            }
        }
    }
    Ok(())
}
