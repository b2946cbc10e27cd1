//! YAML pipelines: a source (a connector or a topic), a chain of
//! transforms, and a sink (a connector or a topic), validated before
//! anything runs and testable without a broker.
//!
//! A pipeline runs as one connector of a connect worker, with its chain
//! applied between the two ends: a source connector writing to the sink
//! topic, a sink connector reading the source topic, or (topic to topic)
//! the internal `topic-sink` connector. So it gets the worker's
//! at-least-once commits, retries and dead letters. Connector to connector
//! needs a topic in between (two pipelines), as in Kafka Connect.
//!
//! Checks that need a schema registry (field names against the source
//! topic's value schema) are in [`fields`]; the CLI runs them when it can
//! reach the registry.

pub mod fields;
pub mod spec;
pub mod stateful;
pub mod transform;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::config;
use crate::connectors;
use crate::plugin::{ConnectorKind, ConnectorPlugin, Props};
use crate::record::Data;
use spec::{config_string, key, locate, Spec, Step};
use transform::{Chain, Record, Transform};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The pipeline does not run.
    Error,
    /// It runs, but something in it is likely not what was meant.
    Warning,
}

/// One problem in a pipeline file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
    pub severity: Severity,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let warning = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        write!(
            f,
            "{}:{}:{}: {warning}{}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// What each end of a pipeline is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Topic {
        name: String,
        format: String,
        /// Avro: the subject whose latest schema writes records.
        subject: Option<String>,
    },
    Connector {
        plugin: String,
        config: Props,
    },
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.spec.name)
            .field("source", &self.source)
            .field("sink", &self.sink)
            .field("transforms", &self.chain.steps.len())
            .finish()
    }
}

/// A validated pipeline, ready to test or run.
pub struct Pipeline {
    pub spec: Spec,
    pub source: End,
    pub sink: End,
    pub chain: Chain,
    /// The stateful steps and the stateless ones between them, when the
    /// chain has any (it then runs on runnel-streams).
    pub stateful: Option<stateful::Plan>,
    pub path: PathBuf,
    /// The file's name and text, for diagnostics found later (against a
    /// registry's schemas).
    pub file: String,
    pub text: String,
    /// What the checks found that does not stop it from running.
    pub warnings: Vec<Diagnostic>,
}

/// Largest pipeline file read.
pub const MAX_FILE_BYTES: usize = 1 << 20;

struct Checker<'a> {
    file: String,
    text: &'a str,
    problems: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn at(&mut self, path: &[Step], message: impl Into<String>, hint: Option<&str>) {
        let d = self.diagnostic(path, message.into(), hint, Severity::Error);
        self.problems.push(d);
    }

    fn warn(&mut self, path: &[Step], message: impl Into<String>, hint: Option<&str>) {
        let d = self.diagnostic(path, message.into(), hint, Severity::Warning);
        self.warnings.push(d);
    }

    fn diagnostic(
        &self,
        path: &[Step],
        message: String,
        hint: Option<&str>,
        severity: Severity,
    ) -> Diagnostic {
        let (line, column) = locate(self.text, path);
        Diagnostic {
            file: self.file.clone(),
            line,
            column,
            message,
            hint: hint.map(str::to_string),
            severity,
        }
    }
}

const FORMATS: &[&str] = &["json", "string", "bytes", "avro"];

fn is_topic_name(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
}

fn end(
    c: &mut Checker<'_>,
    which: &str,
    e: &spec::Endpoint,
    plugins: &[Arc<dyn ConnectorPlugin>],
    want: ConnectorKind,
    name: &str,
) -> Option<End> {
    let base = [key(which)];
    let format = e.format.clone().unwrap_or_else(|| "json".into());
    if !FORMATS.contains(&format.as_str()) {
        c.at(
            &[key(which), key("format")],
            format!("{which}.format '{format}' is not json, string, bytes or avro"),
            None,
        );
    }
    if let Some(subject) = &e.subject {
        if format != "avro" {
            c.at(
                &[key(which), key("subject")],
                format!("{which}.subject needs `format: avro`"),
                Some("a subject names the Avro schema that encodes the records"),
            );
        } else if subject.trim().is_empty() {
            c.at(&[key(which), key("subject")], "the subject is empty", None);
        } else if which == "source" {
            c.at(
                &[key(which), key("subject")],
                "a source topic's records name their schema; only a sink takes a subject",
                None,
            );
        }
    }
    match (&e.topic, &e.connector) {
        (Some(_), Some(_)) | (None, None) => {
            c.at(
                &base,
                format!("{which} needs exactly one of `topic` or `connector`"),
                Some("e.g. `topic: orders`, or `connector: file-source` with its `config`"),
            );
            None
        }
        (Some(t), None) => {
            if !is_topic_name(t) {
                c.at(
                    &[key(which), key("topic")],
                    format!("'{t}' is not a topic name (1-249 of a-z A-Z 0-9 . _ -)"),
                    None,
                );
            }
            if !e.config.is_empty() {
                c.at(
                    &[key(which), key("config")],
                    format!("a topic {which} takes no config"),
                    None,
                );
            }
            Some(End::Topic {
                name: t.clone(),
                format,
                subject: e.subject.clone(),
            })
        }
        (None, Some(class)) => {
            let Some(plugin) = connectors::find(plugins, class) else {
                let known: Vec<&str> = plugins
                    .iter()
                    .filter(|p| p.kind() == want)
                    .map(|p| p.name())
                    .collect();
                c.at(
                    &[key(which), key("connector")],
                    format!("unknown connector '{class}'"),
                    Some(&format!("{which} connectors: {}", known.join(", "))),
                );
                return None;
            };
            if plugin.kind() != want {
                c.at(
                    &[key(which), key("connector")],
                    format!(
                        "'{class}' is a {} connector; the {which} needs a {} one",
                        plugin.kind().as_str(),
                        want.as_str()
                    ),
                    None,
                );
                return None;
            }
            let mut props: Props = e
                .config
                .iter()
                .map(|(k, v)| (k.clone(), config_string(v)))
                .collect();
            props.insert("name".into(), name.to_string());
            props.insert("connector.class".into(), plugin.name().to_string());
            Some(End::Connector {
                plugin: plugin.name().to_string(),
                config: props,
            })
        }
    }
}

/// Reads and checks a pipeline file. `plugins_host` loads WASM plugins
/// (relative paths are relative to the file).
pub fn load(
    path: &Path,
    plugins_host: &runnel_plugin_host::PluginHost,
) -> Result<Pipeline, Vec<Diagnostic>> {
    let file = path.display().to_string();
    let fail = |message: String| {
        vec![Diagnostic {
            file: file.clone(),
            line: 1,
            column: 1,
            message,
            hint: None,
            severity: Severity::Error,
        }]
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if meta.len() > MAX_FILE_BYTES as u64 {
        return Err(fail(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    parse(
        &file,
        &text,
        path.parent().unwrap_or(Path::new(".")),
        plugins_host,
    )
}

/// Checks a pipeline text (`dir` anchors relative plugin paths).
pub fn parse(
    file: &str,
    text: &str,
    dir: &Path,
    plugins_host: &runnel_plugin_host::PluginHost,
) -> Result<Pipeline, Vec<Diagnostic>> {
    let spec: Spec = serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        let message = e.to_string();
        // serde_yaml appends " at line L column C"; the prefix says it.
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        let hint = message.contains("unknown field").then(|| {
            "pipeline keys: name, source, transforms, sink, errors, test; a transform is one of plugin (+ config), filter, rename, drop, mask, route, group_by, window, aggregate, emit, join".to_string()
        });
        vec![Diagnostic {
            file: file.to_string(),
            line,
            column,
            message,
            hint,
            severity: Severity::Error,
        }]
    })?;
    let mut c = Checker {
        file: file.to_string(),
        text,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    if spec.name.is_empty() || spec.name.len() > 200 || spec.name.contains('/') {
        c.at(
            &[key("name")],
            "the name must be 1-200 characters without '/'",
            None,
        );
    }
    let plugins = connectors::builtin();
    let mut source = end(
        &mut c,
        "source",
        &spec.source,
        &plugins,
        ConnectorKind::Source,
        &spec.name,
    );
    let mut sink = end(
        &mut c,
        "sink",
        &spec.sink,
        &plugins,
        ConnectorKind::Sink,
        &spec.name,
    );
    // Files named by the file connectors are relative to the pipeline
    // file, like its plugins.
    for e in [&mut source, &mut sink].into_iter().flatten() {
        if let End::Connector { plugin, config } = e {
            if plugin == "file-source" || plugin == "file-sink" {
                if let Some(f) = config.get_mut("file") {
                    if !f.is_empty() && Path::new(f.as_str()).is_relative() {
                        *f = dir.join(f.as_str()).display().to_string();
                    }
                }
            }
        }
    }
    // The connector configs, checked as the worker will.
    for (which, e) in [("source", &source), ("sink", &sink)] {
        if let Some(End::Connector { config: props, .. }) = e {
            let mut check = props.clone();
            if which == "sink" {
                check
                    .entry("topics".into())
                    .or_insert_with(|| "pipeline-input".into());
            } else {
                check
                    .entry("topic".into())
                    .or_insert_with(|| "pipeline-output".into());
            }
            for entry in config::validate(&plugins, &check).entries {
                let field = entry.name.as_str();
                let at = [key(which), key("config"), key(field)];
                let doc = Some(entry.key.doc).filter(|d| !d.is_empty());
                for problem in &entry.errors {
                    c.at(&at, format!("{which}.config.{field}: {problem}"), doc);
                }
                for warning in &entry.warnings {
                    c.warn(&at, format!("{which}.config.{field}: {warning}"), doc);
                }
            }
        }
    }
    let mut chain = Chain::default();
    let mut pieces = Vec::new();
    for (i, t) in spec.transforms.iter().enumerate() {
        let here = [key("transforms"), Step::Index(i)];
        let kinds = [
            t.plugin.is_some(),
            t.filter.is_some(),
            t.rename.is_some(),
            t.drop.is_some(),
            t.mask.is_some(),
            t.route.is_some(),
            t.group_by.is_some(),
            t.window.is_some(),
            t.aggregate.is_some(),
            t.emit.is_some(),
            t.join.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            c.at(
                &here,
                format!(
                    "transform {} must be exactly one of plugin, filter, rename, drop, mask, route, group_by, window, aggregate, emit, join",
                    i + 1
                ),
                None,
            );
            continue;
        }
        if t.config.is_some() && t.plugin.is_none() {
            c.at(&here, "only a plugin transform takes `config`", None);
        }
        if t.is_stateful() {
            if let Some(p) = stateful::piece(&mut c, i, t, dir, plugins_host) {
                pieces.push((i, p));
            }
            continue;
        }
        let step: Option<Arc<dyn Transform>> = if let Some(p) = &t.plugin {
            let path = if Path::new(p).is_absolute() {
                PathBuf::from(p)
            } else {
                dir.join(p)
            };
            let at = [key("transforms"), Step::Index(i), key("plugin")];
            match std::fs::read(&path) {
                Err(e) => {
                    c.at(
                        &at,
                        format!("plugin {}: {e}", path.display()),
                        Some("build the example plugins with plugins/build.sh, or give the path of a .wasm file"),
                    );
                    None
                }
                Ok(wasm) => {
                    let config: BTreeMap<String, String> = t
                        .config
                        .as_ref()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (k.clone(), config_string(v)))
                                .collect()
                        })
                        .unwrap_or_default();
                    match plugins_host.load(p, &wasm, &config) {
                        Ok(plugin) if plugin.kind() == runnel_plugin_host::Kind::Aggregate => {
                            c.at(&at, format!("{p} is an aggregate plugin; pipelines run filter and map plugins"), None);
                            None
                        }
                        Ok(plugin) => Some(Arc::new(transform::Wasm {
                            path: p.clone(),
                            plugin: Arc::new(plugin),
                        })),
                        Err(e) => {
                            c.at(&at, format!("plugin {p}: {e}"), None);
                            None
                        }
                    }
                }
            }
        } else if let Some(expr) = &t.filter {
            match transform::Filter::new(expr) {
                Ok(f) => Some(Arc::new(f)),
                Err(e) => {
                    c.at(
                        &[key("transforms"), Step::Index(i), key("filter")],
                        format!("filter '{expr}': {e}"),
                        Some("e.g. value.amount > 100 && value.status == \"PAID\""),
                    );
                    None
                }
            }
        } else if let Some(map) = &t.rename {
            Some(Arc::new(transform::Rename(map.clone())))
        } else if let Some(fields) = &t.drop {
            Some(Arc::new(transform::Drop(fields.clone())))
        } else if let Some(fields) = &t.mask {
            Some(Arc::new(transform::Mask(fields.clone())))
        } else if let Some(r) = &t.route {
            if !r.topic.contains("{}") {
                c.at(
                    &[key("transforms"), Step::Index(i), key("route")],
                    format!(
                        "route topic '{}' has no {{}} for the field's value",
                        r.topic
                    ),
                    Some("e.g. topic: \"orders-{}\""),
                );
            }
            Some(Arc::new(transform::Route {
                field: r.field.clone(),
                template: r.topic.clone(),
            }))
        } else {
            None
        };
        if let Some(s) = step {
            pieces.push((
                i,
                if t.route.is_some() {
                    stateful::Piece::Route
                } else {
                    stateful::Piece::Stateless(s.clone())
                },
            ));
            chain.steps.push(s);
        }
    }
    let plan = stateful::assemble(&mut c, pieces);
    if spec.transforms.iter().any(spec::TransformSpec::is_stateful) {
        stateful::check_pipeline(&mut c, &spec, &source, &sink);
    }
    if let Some(errors) = &spec.errors {
        if let Some(t) = &errors.tolerance {
            if t != "none" && t != "all" {
                c.at(
                    &[key("errors"), key("tolerance")],
                    format!("'{t}' is not none or all"),
                    None,
                );
            }
        }
        if let Some(t) = &errors.dead_letter_topic {
            let at = [key("errors"), key("dead_letter_topic")];
            if !is_topic_name(t) {
                c.at(
                    &at,
                    format!("'{t}' is not a topic name (1-249 of a-z A-Z 0-9 . _ -)"),
                    None,
                );
            } else if errors.tolerance.as_deref() != Some("all") {
                c.warn(
                    &at,
                    "the dead-letter topic takes records only with `tolerance: all`; with none a failed record stops the pipeline",
                    None,
                );
            }
        }
    }
    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    Ok(Pipeline {
        source: source.expect("checked above"),
        sink: sink.expect("checked above"),
        spec,
        chain,
        stateful: plan,
        path: dir.to_path_buf(),
        file: file.to_string(),
        text: text.to_string(),
        warnings: c.warnings,
    })
}

fn yaml_to_data(v: &Option<serde_yaml::Value>) -> Data {
    match v {
        None | Some(serde_yaml::Value::Null) => Data::Null,
        Some(v) => Data::Json(serde_json::to_value(v).unwrap_or(Value::Null)),
    }
}

/// One difference between expected and actual output.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub index: usize,
    pub expected: Value,
    pub actual: Value,
}

fn describe(topic: &str, r: &Record) -> Value {
    serde_json::json!({
        "topic": topic,
        "key": r.key.to_json(),
        "value": r.value.to_json(),
        "timestamp": r.timestamp_ms,
    })
}

/// Compares a test's output records (`{topic, key, value, timestamp}`)
/// with its expectations: the topic where one is named, the timestamp
/// where one is given.
fn compare(output: &[Value], expect: &[spec::TestRecord]) -> Result<Vec<Mismatch>, String> {
    let mut mismatches = Vec::new();
    for i in 0..output.len().max(expect.len()) {
        let mut actual = output.get(i).cloned();
        let expected = match expect.get(i) {
            None => None,
            Some(e) => {
                let mut v = serde_json::json!({
                    "key": yaml_to_data(&e.key).to_json(),
                    "value": yaml_to_data(&e.value).to_json(),
                });
                v["topic"] = match (&e.topic, &actual) {
                    (Some(t), _) => Value::String(t.clone()),
                    (None, Some(a)) => a["topic"].clone(),
                    (None, None) => Value::Null,
                };
                match &e.timestamp {
                    Some(ts) => {
                        let ms = spec::parse_timestamp(ts)
                            .map_err(|err| format!("test.expect record {i}: {err}"))?;
                        v["timestamp"] = Value::from(ms);
                    }
                    None => {
                        if let Some(Value::Object(a)) = &mut actual {
                            a.remove("timestamp");
                        }
                    }
                }
                Some(v)
            }
        };
        if actual != expected {
            mismatches.push(Mismatch {
                index: i,
                expected: expected.unwrap_or(Value::Null),
                actual: actual.unwrap_or(Value::Null),
            });
        }
    }
    Ok(mismatches)
}

impl Pipeline {
    /// The topic records are written to (a topic sink's name; for a
    /// connector sink, the input topic name).
    pub fn output_topic(&self) -> String {
        match (&self.sink, &self.source) {
            (End::Topic { name, .. }, _) => name.clone(),
            (_, End::Topic { name, .. }) => name.clone(),
            _ => String::new(),
        }
    }

    /// Runs the chain on the file's `test.input` and compares with
    /// `test.expect` (the topic is compared where the expectation names
    /// one). Needs no broker.
    pub fn test(&self) -> Result<Vec<Mismatch>, String> {
        if let Some(plan) = &self.stateful {
            return self.test_stateful(plan);
        }
        let test = self
            .spec
            .test
            .as_ref()
            .ok_or("the pipeline has no `test` section")?;
        let topic: Arc<str> = Arc::from(self.output_topic());
        let mut input = Vec::new();
        for (n, r) in test.input.iter().enumerate() {
            let timestamp_ms = match &r.timestamp {
                Some(t) => Some(
                    spec::parse_timestamp(t).map_err(|e| format!("test.input record {n}: {e}"))?,
                ),
                None => None,
            };
            input.push(Record {
                topic: r
                    .topic
                    .as_deref()
                    .map(Arc::from)
                    .unwrap_or_else(|| topic.clone()),
                key: yaml_to_data(&r.key),
                value: yaml_to_data(&r.value),
                headers: Vec::new(),
                timestamp_ms,
                source_index: 0,
            });
        }
        let outcome = self.chain.apply(input);
        if !outcome.failed.is_empty() {
            let failures: Vec<String> = outcome
                .failed
                .iter()
                .map(|f| format!("test.input record {} failed: {}", f.source_index, f.error))
                .collect();
            return Err(failures.join("\n"));
        }
        let output: Vec<Value> = outcome
            .records
            .iter()
            .map(|r| describe(&r.topic, r))
            .collect();
        compare(&output, &test.expect)
    }

    /// The topic between the two connectors of a pipeline from a
    /// connector to a connector.
    pub fn between_topic(&self) -> String {
        format!("_runnel_pipeline.{}.records", self.spec.name)
    }

    /// The connectors that run this pipeline: (connector name, plugin
    /// name, config). One, or for a pipeline from a connector to a
    /// connector two: the source (with the transforms, named as the
    /// pipeline) writing JSON to [`Pipeline::between_topic`], and the sink
    /// (`<name>-sink`) reading it.
    pub fn connectors(&self, bootstrap: &str, registry: &str) -> Vec<(String, String, Props)> {
        let name = self.spec.name.clone();
        if let (End::Connector { .. }, End::Connector { .. }) = (&self.source, &self.sink) {
            let between = End::Topic {
                name: self.between_topic(),
                format: "json".into(),
                subject: None,
            };
            let (src, mut src_props) =
                self.connector_between(&self.source, &between, bootstrap, registry);
            let (dst, mut dst_props) =
                self.connector_between(&between, &self.sink, bootstrap, registry);
            let sink_name = format!("{name}-sink");
            src_props.insert("name".into(), name.clone());
            dst_props.insert("name".into(), sink_name.clone());
            return vec![(name, src, src_props), (sink_name, dst, dst_props)];
        }
        let (class, props) = self.connector(bootstrap, registry);
        vec![(name, class, props)]
    }

    /// The connector that runs this pipeline: (plugin name, config); for a
    /// pipeline from a connector to a connector, its source half.
    /// `registry` is the schema registry's URL (for Avro topics).
    pub fn connector(&self, bootstrap: &str, registry: &str) -> (String, Props) {
        match (&self.source, &self.sink) {
            (End::Connector { .. }, End::Connector { .. }) => {
                let mut all = self.connectors(bootstrap, registry);
                let (_, class, props) = all.remove(0);
                (class, props)
            }
            (source, sink) => self.connector_between(source, sink, bootstrap, registry),
        }
    }

    /// The connector from `source` to `sink` with the pipeline's settings.
    fn connector_between(
        &self,
        source: &End,
        sink: &End,
        bootstrap: &str,
        registry: &str,
    ) -> (String, Props) {
        let name = self.spec.name.clone();
        // The converter settings of a topic end, under `prefix`.
        let converter = |p: &mut Props, prefix: &str, format: &str, subject: &Option<String>| {
            let class = match format {
                "string" => "string",
                "bytes" => "bytes",
                "avro" => "avro",
                _ => "json",
            };
            p.insert(prefix.into(), class.into());
            if class == "avro" {
                p.insert(format!("{prefix}.schema.registry.url"), registry.into());
                if let Some(s) = subject {
                    p.insert(format!("{prefix}.subject"), s.clone());
                }
            }
        };
        let mut props = match (source, sink) {
            (
                End::Connector { plugin, config },
                End::Topic {
                    name: topic,
                    format,
                    subject,
                },
            ) => {
                let mut p = config.clone();
                p.insert("topic".into(), topic.clone());
                converter(&mut p, "value.converter", format, subject);
                (plugin.clone(), p)
            }
            (
                End::Topic {
                    name: topic,
                    format,
                    ..
                },
                End::Connector { plugin, config },
            ) => {
                let mut p = config.clone();
                p.insert("topics".into(), topic.clone());
                converter(&mut p, "value.converter", format, &None);
                (plugin.clone(), p)
            }
            (
                End::Topic {
                    name: from, format, ..
                },
                End::Topic {
                    name: to,
                    format: out,
                    subject,
                },
            ) => {
                let mut p = Props::new();
                p.insert("topics".into(), from.clone());
                p.insert("topic".into(), to.clone());
                converter(&mut p, "value.converter", format, &None);
                converter(&mut p, "output.value.converter", out, subject);
                p.insert("bootstrap.servers".into(), bootstrap.to_string());
                ("topic-sink".into(), p)
            }
            // Split by `connectors` into two halves through a topic.
            (End::Connector { plugin, config }, End::Connector { .. }) => {
                (plugin.clone(), config.clone())
            }
        };
        props.1.insert("name".into(), name);
        props.1.insert("connector.class".into(), props.0.clone());
        // Plain JSON in topics, without Kafka Connect's schema envelope.
        for prefix in ["value.converter", "output.value.converter"] {
            if props.1.get(prefix).is_some_and(|c| c == "json") {
                props
                    .1
                    .insert(format!("{prefix}.schemas.enable"), "false".into());
            }
        }
        if let Some(errors) = &self.spec.errors {
            if let Some(t) = &errors.tolerance {
                props.1.insert("errors.tolerance".into(), t.clone());
                // What is tolerated is still said.
                props.1.insert("errors.log.enable".into(), "true".into());
            }
            if let Some(d) = &errors.dead_letter_topic {
                props
                    .1
                    .insert("errors.deadletterqueue.topic.name".into(), d.clone());
            }
        }
        props
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> runnel_plugin_host::PluginHost {
        runnel_plugin_host::PluginHost::new(Default::default()).unwrap()
    }

    fn check(text: &str) -> Result<Pipeline, Vec<Diagnostic>> {
        parse("p.yaml", text, Path::new("."), &host())
    }

    #[test]
    fn problems_are_reported_with_file_line_column_and_a_hint() {
        let errs = check("name: p\nsource:\n  topic: in\nsink:\n  topic: out\ntransfroms: []\n")
            .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .to_string()
                .starts_with("p.yaml:6:1: unknown field `transfroms`"),
            "{}",
            errs[0]
        );
        assert!(errs[0].hint.as_deref().unwrap().contains("transforms"));

        let text = "name: p
source:
  connector: file-sorce
sink:
  topic: out
transforms:
  - filter: value.a >
  - plugin: missing.wasm
  - route: {field: s, topic: fixed}
";
        let errs = check(text).unwrap_err();
        let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            lines.iter().any(
                |l| l.starts_with("p.yaml:3:3: unknown connector 'file-sorce'")
                    && l.contains("file-source")
            ),
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("p.yaml:7:5: filter 'value.a >'")),
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("p.yaml:8:5: plugin") && l.contains("missing.wasm")),
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("p.yaml:9:5: route topic 'fixed'")),
            "{lines:#?}"
        );

        let errs = check("name: p\nsource:\n  connector: file-source\n  config:\n    topic: x\nsink:\n  topic: out\n").unwrap_err();
        assert!(
            errs[0]
                .to_string()
                .starts_with("p.yaml:4:3: source.config.file: Missing required"),
            "{:?}",
            errs
        );
        let errs = check("name: p\nsource:\n  topic: a\n  connector: datagen\nsink:\n  topic: b\n")
            .unwrap_err();
        assert!(errs[0].message.contains("exactly one of"), "{errs:?}");
        let errs =
            check("name: p\nsource:\n  topic: a\nsink:\n  connector: file-source\n").unwrap_err();
        assert!(errs[0].message.contains("needs a sink one"), "{errs:?}");
    }

    #[test]
    fn a_pipeline_test_compares_outputs_with_expectations() {
        let text = r#"name: p
source: {topic: orders}
transforms:
  - filter: value.amount > 10
  - mask: [card]
  - route: {field: status, topic: "orders-{}"}
sink: {topic: big-orders}
test:
  input:
    - value: {amount: 5, card: "4111", status: NEW}
    - value: {amount: 50, card: "4111", status: PAID}
  expect:
    - topic: orders-PAID
      value: {amount: 50, card: "****", status: PAID}
"#;
        let p = check(text).unwrap();
        assert_eq!(p.test().unwrap(), vec![]);
        let wrong = text.replace("orders-PAID", "orders-NEW");
        let mismatches = check(&wrong).unwrap().test().unwrap();
        assert_eq!(mismatches.len(), 1);
        assert_eq!(mismatches[0].actual["topic"], "orders-PAID");
        let (plugin, props) = p.connector("127.0.0.1:9092", "http://127.0.0.1:8081");
        assert_eq!(plugin, "topic-sink");
        assert_eq!(
            (props["topics"].as_str(), props["topic"].as_str()),
            ("orders", "big-orders")
        );
    }

    #[test]
    fn a_connector_to_connector_pipeline_runs_as_two_connectors_through_its_own_topic() {
        let p = check(
            "name: c2c\nsource:\n  connector: datagen\n  config:\n    quickstart: orders\n\
             transforms:\n  - drop: [note]\nsink:\n  connector: file-sink\n  config:\n    file: /tmp/out.jsonl\n",
        )
        .unwrap();
        let all = p.connectors("127.0.0.1:9092", "http://127.0.0.1:8081");
        assert_eq!(all.len(), 2);
        let (source, sink) = (&all[0], &all[1]);
        assert_eq!((source.0.as_str(), source.1.as_str()), ("c2c", "datagen"));
        assert_eq!(
            (sink.0.as_str(), sink.1.as_str()),
            ("c2c-sink", "file-sink")
        );
        assert_eq!(source.2["topic"], "_runnel_pipeline.c2c.records");
        assert_eq!(sink.2["topics"], "_runnel_pipeline.c2c.records");
        assert_eq!(sink.2["name"], "c2c-sink");
        // JSON on both sides of the topic between them.
        assert_eq!(source.2["value.converter"], "json");
        assert_eq!(sink.2["value.converter"], "json");
        // One-connector pipelines are unchanged.
        assert_eq!(p.connector("b", "r").0, "datagen");
    }
}
