//! Connector configs: Kafka Connect's common keys, the plugin's own, and
//! per-field validation (what `PUT /connector-plugins/{p}/config/validate`
//! answers and what creating a connector checks).
//!
//! A key that is neither common, nor the plugin's, nor a setting of a
//! converter the config names (`value.converter.schemas.enable`) is
//! unknown. As in Kafka Connect an unknown key is not an error in itself
//! (it may be meant for something else), but it is never silent: it is a
//! warning in its own entry of the validation, which creating or updating
//! the connector also logs. It is an error when it is definitely wrong: a
//! near miss of one of the plugin's keys (`fiel` for `file`, `batch_size`
//! for `batch.size`) while that key is not set.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::connectors;
use crate::converter;
use crate::plugin::{ConfigKey, ConfigType, ConnectorPlugin, Props};

/// Most tasks one connector may ask for.
pub const MAX_TASKS: usize = 256;

pub static COMMON_KEYS: &[ConfigKey] = &[
    ConfigKey::required("name", ConfigType::String, "Globally unique name of the connector."),
    ConfigKey::required(
        "connector.class",
        ConfigType::String,
        "The connector: a name from /connector-plugins or its class name.",
    ),
    ConfigKey::optional(
        "tasks.max",
        ConfigType::Int,
        Some("1"),
        "Most tasks the connector runs.",
    ),
    ConfigKey::optional(
        "key.converter",
        ConfigType::String,
        Some("string"),
        "How keys become bytes: bytes, string, json (or Kafka Connect class names).",
    ),
    ConfigKey::optional(
        "value.converter",
        ConfigType::String,
        Some("string"),
        "How values become bytes: bytes, string, json (or Kafka Connect class names).",
    ),
    ConfigKey::optional(
        "errors.tolerance",
        ConfigType::String,
        Some("none"),
        "none: a record that fails stops the task; all: it is skipped (and sent to the dead-letter topic, if there is one); the other records of its batch go on either way.",
    ),
    ConfigKey::optional(
        "errors.retry.timeout",
        ConfigType::Long,
        Some("0"),
        "How long (ms) a retriable failure is retried; -1 forever.",
    ),
    ConfigKey::optional(
        "errors.retry.delay.max.ms",
        ConfigType::Long,
        Some("60000"),
        "Longest wait between retries (ms); waits double from 300 ms.",
    ),
    ConfigKey::optional(
        "errors.log.enable",
        ConfigType::Boolean,
        Some("false"),
        "Log tolerated failures (at most 10 a minute per task; the rest are counted).",
    ),
    ConfigKey::optional(
        "errors.deadletterqueue.topic.name",
        ConfigType::String,
        None,
        "The topic that receives records that failed (errors.tolerance=all), with headers naming the error. Sinks, as in Kafka Connect, and (a Runnel addition) sources, for records a converter or transform failed on.",
    ),
    ConfigKey::optional(
        "errors.deadletterqueue.context.headers.enable",
        ConfigType::Boolean,
        Some("true"),
        "Add the __connect.errors.* headers to dead-letter records.",
    ),
];

/// Kafka Connect settings Runnel accepts without acting on them: reported
/// as ignored rather than as unknown.
static KAFKA_UNUSED: &[&str] = &[
    "header.converter",
    "config.action.reload",
    "tasks.max.enforce",
    "errors.log.include.messages",
    "errors.deadletterqueue.topic.replication.factor",
    "topics.regex",
    "predicates",
    "topic.creation.groups",
    "exactly.once.support",
    "transaction.boundary",
    "transaction.boundary.interval.ms",
    "offsets.storage.topic",
];

/// Prefixes of Kafka Connect settings Runnel does not act on.
static KAFKA_UNUSED_PREFIXES: &[&str] = &[
    "producer.override.",
    "consumer.override.",
    "admin.override.",
    "topic.creation.",
    "predicates.",
    "header.converter.",
];

/// One key's definition, value and problems.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key as the config names it.
    pub name: String,
    /// Its definition (an empty name for a key the plugin does not know).
    pub key: ConfigKey,
    pub group: &'static str,
    pub value: Option<String>,
    pub errors: Vec<String>,
    /// Not errors (the config is accepted), but said: unknown keys.
    pub warnings: Vec<String>,
}

/// The outcome of validating a connector config.
pub struct Validation {
    pub plugin: Option<Arc<dyn ConnectorPlugin>>,
    pub entries: Vec<Entry>,
}

impl Validation {
    pub fn error_count(&self) -> usize {
        self.entries.iter().map(|e| e.errors.len()).sum()
    }

    /// `key: problem` lines.
    pub fn problems(&self) -> Vec<String> {
        self.entries
            .iter()
            .flat_map(|e| e.errors.iter().map(move |m| format!("{}: {m}", e.name)))
            .collect()
    }

    /// `key: warning` lines.
    pub fn warnings(&self) -> Vec<String> {
        self.entries
            .iter()
            .flat_map(|e| e.warnings.iter().map(move |m| format!("{}: {m}", e.name)))
            .collect()
    }

    /// Kafka Connect's `ConfigInfos` body.
    pub fn to_json(&self, class: &str) -> Value {
        let mut groups: Vec<&str> = Vec::new();
        for e in &self.entries {
            if !groups.contains(&e.group) {
                groups.push(e.group);
            }
        }
        json!({
            "name": self.plugin.as_ref().map(|p| p.class()).unwrap_or(class),
            "error_count": self.error_count(),
            "groups": groups,
            "configs": self.entries.iter().map(|e| json!({
                "definition": {
                    "name": e.name,
                    "type": e.key.kind.as_str(),
                    "required": e.key.required,
                    "default_value": e.key.default,
                    "importance": if e.key.required { "HIGH" } else if e.key.name.is_empty() { "LOW" } else { "MEDIUM" },
                    "documentation": e.key.doc,
                    "group": e.group,
                    "width": "NONE",
                    "display_name": e.name,
                    "dependents": [],
                    "order": 0,
                },
                "value": {
                    "name": e.name,
                    "value": e.value,
                    "recommended_values": [],
                    "errors": e.errors,
                    "warnings": e.warnings,
                    "visible": true,
                },
            })).collect::<Vec<_>>(),
        })
    }
}

fn check_key(key: &ConfigKey, group: &'static str, config: &Props) -> Entry {
    let value = config.get(key.name).cloned();
    let mut errors = Vec::new();
    match &value {
        None if key.required => errors.push(format!(
            "Missing required configuration \"{}\" which has no default value.",
            key.name
        )),
        Some(v) if key.required && v.trim().is_empty() => {
            errors.push(format!("\"{}\" must not be empty", key.name))
        }
        Some(v) => {
            if let Err(e) = key.kind.check(v) {
                errors.push(format!(
                    "Invalid value {v} for configuration {}: {e}",
                    key.name
                ));
            }
        }
        None => {}
    }
    Entry {
        name: key.name.to_string(),
        key: key.clone(),
        group,
        value: value.or_else(|| key.default.map(str::to_string)),
        errors,
        warnings: Vec::new(),
    }
}

/// An entry for a key no definition covers.
fn unknown_entry(name: &str, value: Option<&String>, group: &'static str) -> Entry {
    Entry {
        name: name.to_string(),
        key: ConfigKey::optional("", ConfigType::String, None, ""),
        group,
        value: value.cloned(),
        errors: Vec::new(),
        warnings: Vec::new(),
    }
}

/// A key as compared for near misses: lower case, `_` and `-` as `.`.
fn normalized(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '_' | '-' => '.',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The candidate `key` is most likely a misspelling of, if any is close:
/// the same apart from case and separators, or a few edits away (one for
/// short keys, up to three for long ones).
pub fn near_miss<'a>(key: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let key = normalized(key);
    let limit = match key.chars().count() {
        0..=2 => 0,
        3..=5 => 1,
        6..=12 => 2,
        _ => 3,
    };
    candidates
        .into_iter()
        .filter(|c| !c.is_empty())
        .map(|c| (strsim::damerau_levenshtein(&key, &normalized(c)), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The settings a converter takes under its key (`value.converter.<setting>`).
fn converter_settings(name: &str) -> &'static [&'static str] {
    match name.trim() {
        "json" | "org.apache.kafka.connect.json.JsonConverter" => &["schemas.enable"],
        "avro" | "io.confluent.connect.avro.AvroConverter" => &[
            "schema.registry.url",
            "auto.register.schemas",
            "use.latest.version",
            "subject",
        ],
        _ => &[],
    }
}

/// Entries for the keys of `config` that neither the common keys nor the
/// plugin's define: errors for near misses of a key that is not set,
/// warnings for the rest.
fn unknown_keys(plugin: &dyn ConnectorPlugin, config: &Props) -> Vec<Entry> {
    let known: Vec<&ConfigKey> = COMMON_KEYS.iter().chain(plugin.config_keys()).collect();
    let is_known = |k: &str| known.iter().any(|d| d.name == k);
    // Keys that name a converter take its settings under their name.
    let converters: Vec<&ConfigKey> = known
        .iter()
        .copied()
        .filter(|d| d.name.ends_with("converter"))
        .collect();
    let mut out = Vec::new();
    for (k, v) in config {
        if is_known(k) {
            continue;
        }
        // `transforms` is refused as a whole; its settings go with it.
        if k.starts_with("transforms.") && config.contains_key("transforms") {
            continue;
        }
        let mut entry = unknown_entry(k, Some(v), "Unknown");
        let setting = converters.iter().find_map(|d| {
            let rest = k.strip_prefix(d.name)?.strip_prefix('.')?;
            Some((d, rest))
        });
        if let Some((d, setting)) = setting {
            let converter = config
                .get(d.name)
                .map(String::as_str)
                .or(d.default)
                .unwrap_or("string");
            let settings = converter_settings(converter);
            if settings.contains(&setting) {
                continue;
            }
            match near_miss(setting, settings.iter().copied()) {
                Some(near) if !config.contains_key(&format!("{}.{near}", d.name)) => {
                    entry.errors.push(format!(
                        "Unknown configuration '{k}'; did you mean '{}.{near}'?",
                        d.name
                    ))
                }
                _ => entry.warnings.push(format!(
                    "'{setting}' is not a setting of the {} converter ({}); ignored",
                    converter.trim(),
                    if settings.is_empty() {
                        "it takes none".to_string()
                    } else {
                        format!("it takes {}", settings.join(", "))
                    }
                )),
            }
        } else if KAFKA_UNUSED.contains(&k.as_str())
            || KAFKA_UNUSED_PREFIXES.iter().any(|p| k.starts_with(p))
        {
            entry.warnings.push(format!(
                "'{k}' is a Kafka Connect setting Runnel does not use; ignored"
            ));
        } else {
            let names = known.iter().map(|d| d.name);
            match near_miss(k, names) {
                Some(near) if !config.contains_key(near) => entry.errors.push(format!(
                    "Unknown configuration '{k}' for {}; did you mean '{near}'?",
                    plugin.name()
                )),
                Some(near) => entry.warnings.push(format!(
                    "Unknown configuration '{k}' for {} is ignored (it looks like '{near}', which is set too)",
                    plugin.name()
                )),
                None => entry.warnings.push(format!(
                    "Unknown configuration '{k}' for {} is ignored; its keys are {}",
                    plugin.name(),
                    plugin
                        .config_keys()
                        .iter()
                        .map(|d| d.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
        crate::metrics::count(&crate::metrics::COUNTERS.unknown_config_keys);
        out.push(entry);
    }
    out
}

/// Validates a connector config against the common keys and its plugin's.
pub fn validate(plugins: &[Arc<dyn ConnectorPlugin>], config: &Props) -> Validation {
    let mut entries: Vec<Entry> = COMMON_KEYS
        .iter()
        .map(|k| check_key(k, "Common", config))
        .collect();
    let class = config
        .get("connector.class")
        .map(String::as_str)
        .unwrap_or("");
    let plugin = connectors::find(plugins, class).cloned();
    let entry = |entries: &mut Vec<Entry>, name: &str| -> Option<usize> {
        entries.iter().position(|e| e.name == name)
    };
    match &plugin {
        None if !class.is_empty() => {
            let known: Vec<&str> = plugins.iter().map(|p| p.name()).collect();
            if let Some(i) = entry(&mut entries, "connector.class") {
                entries[i].errors.push(format!(
                    "no connector named '{class}' (known: {})",
                    known.join(", ")
                ));
            }
        }
        None => {}
        Some(p) => {
            for key in p.config_keys() {
                entries.push(check_key(key, "Connector", config));
            }
            for (k, problem) in p.validate(config) {
                match entry(&mut entries, &k) {
                    Some(i) => entries[i].errors.push(problem),
                    None => {
                        let mut e = unknown_entry(&k, config.get(&k), "Connector");
                        e.errors.push(problem);
                        entries.push(e);
                    }
                }
            }
            entries.extend(unknown_keys(&**p, config));
        }
    }
    if let Some(v) = config
        .get("tasks.max")
        .and_then(|v| v.trim().parse::<i64>().ok())
    {
        if !(1..=MAX_TASKS as i64).contains(&v) {
            if let Some(i) = entry(&mut entries, "tasks.max") {
                entries[i]
                    .errors
                    .push(format!("tasks.max must be between 1 and {MAX_TASKS}"));
            }
        }
    }
    for key in ["key.converter", "value.converter"] {
        if let Some(problem) = converter::check(key, config) {
            if let Some(i) = entry(&mut entries, key) {
                entries[i].errors.push(problem);
            }
        }
    }
    if let Some(v) = config.get("errors.tolerance") {
        if v != "none" && v != "all" {
            if let Some(i) = entry(&mut entries, "errors.tolerance") {
                entries[i].errors.push(format!("'{v}' is not none or all"));
            }
        }
    }
    if config
        .get("transforms")
        .is_some_and(|t| !t.trim().is_empty())
    {
        // Replaces the unknown-key entry `transforms` got.
        entries.retain(|e| e.name != "transforms");
        entries.push(Entry {
            name: "transforms".into(),
            key: ConfigKey::optional(
                "transforms",
                ConfigType::List,
                None,
                "Single message transforms.",
            ),
            group: "Transforms",
            value: config.get("transforms").cloned(),
            errors: vec![
                "single message transforms are not supported; use a YAML pipeline's transforms"
                    .into(),
            ],
            warnings: Vec::new(),
        });
    }
    Validation { plugin, entries }
}

/// A config value, or its default.
pub fn get<'a>(config: &'a Props, key: &str, default: &'a str) -> &'a str {
    config.get(key).map(String::as_str).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Props {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_kafka_connect_file_source_config_validates_unchanged() {
        let plugins = connectors::builtin();
        let v = validate(
            &plugins,
            &config(&[
                ("name", "local-file-source"),
                ("connector.class", "FileStreamSource"),
                ("tasks.max", "1"),
                ("file", "test.txt"),
                ("topic", "connect-test"),
            ]),
        );
        assert_eq!(v.error_count(), 0, "{:?}", v.problems());
        assert_eq!(v.plugin.unwrap().name(), "file-source");
    }

    #[test]
    fn problems_name_their_fields() {
        let plugins = connectors::builtin();
        let v = validate(
            &plugins,
            &config(&[
                ("name", "x"),
                (
                    "connector.class",
                    "org.apache.kafka.connect.file.FileStreamSinkConnector",
                ),
                ("tasks.max", "zero"),
                ("value.converter", "xml"),
                ("errors.tolerance", "some"),
            ]),
        );
        let problems = v.problems();
        for want in [
            "tasks.max:",
            "value.converter:",
            "errors.tolerance:",
            "file:",
            "topics:",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(want)),
                "{want} in {problems:?}"
            );
        }
        let json = v.to_json("FileStreamSink");
        assert_eq!(json["error_count"], problems.len());
        let v = validate(
            &plugins,
            &config(&[("name", "x"), ("connector.class", "Nope")]),
        );
        assert!(
            v.problems()[0].contains("no connector named 'Nope'"),
            "{:?}",
            v.problems()
        );
    }

    #[test]
    fn a_near_miss_of_a_missing_key_is_an_error_and_other_unknown_keys_warn() {
        let plugins = connectors::builtin();
        let v = validate(
            &plugins,
            &config(&[
                ("name", "x"),
                ("connector.class", "FileStreamSink"),
                ("fiel", "/tmp/out.txt"),
                ("topics", "t"),
                ("fsync_every", "10"),
            ]),
        );
        let fiel = v.entries.iter().find(|e| e.name == "fiel").unwrap();
        assert_eq!(
            fiel.errors,
            vec!["Unknown configuration 'fiel' for file-sink; did you mean 'file'?"]
        );
        let fsync = v.entries.iter().find(|e| e.name == "fsync_every").unwrap();
        assert!(fsync.errors.is_empty());
        assert!(
            fsync.warnings[0].starts_with("Unknown configuration 'fsync_every' for file-sink is ignored; its keys are file, topics"),
            "{:?}",
            fsync.warnings
        );
        // `file` is missing, and the near miss says so.
        assert_eq!(v.error_count(), 2, "{:?}", v.problems());
        assert_eq!(v.warnings().len(), 1);
        let json = v.to_json("FileStreamSink");
        let entry = json["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["value"]["name"] == "fsync_every")
            .unwrap()
            .clone();
        assert_eq!(entry["value"]["errors"], json!([]));
        assert_eq!(entry["value"]["warnings"].as_array().unwrap().len(), 1);

        // With the intended key set, the near miss only warns.
        let v = validate(
            &plugins,
            &config(&[
                ("name", "x"),
                ("connector.class", "file-source"),
                ("file", "in.txt"),
                ("topic", "t"),
                ("batch.size", "5"),
                ("batch_size", "10"),
                ("poll.interval_ms", "5"),
            ]),
        );
        assert_eq!(
            v.problems(),
            vec!["poll.interval_ms: Unknown configuration 'poll.interval_ms' for file-source; did you mean 'poll.interval.ms'?"]
        );
        assert_eq!(
            v.warnings(),
            vec!["batch_size: Unknown configuration 'batch_size' for file-source is ignored (it looks like 'batch.size', which is set too)"]
        );
    }

    #[test]
    fn converter_settings_and_kafka_framework_keys_are_known() {
        let plugins = connectors::builtin();
        let v = validate(
            &plugins,
            &config(&[
                ("name", "x"),
                ("connector.class", "FileStreamSink"),
                ("file", "out.txt"),
                ("topics", "t"),
                ("errors.tolerance", "all"),
                ("errors.deadletterqueue.topic.name", "dlq"),
                ("value.converter", "json"),
                ("key.converter", "avro"),
                ("key.converter.schema.registry.url", "http://127.0.0.1:8081"),
                ("consumer.override.max.poll.records", "10"),
                ("value.converter.schemas.enabel", "true"),
            ]),
        );
        // A misspelt converter setting is wrong; a Kafka setting Runnel
        // does not use is said to be ignored.
        assert_eq!(
            v.problems(),
            vec!["value.converter.schemas.enabel: Unknown configuration 'value.converter.schemas.enabel'; did you mean 'value.converter.schemas.enable'?"]
        );
        let warnings = v.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("Runnel does not use"), "{warnings:?}");
        // A setting of a converter the config does not use.
        let v = validate(
            &plugins,
            &config(&[
                ("name", "x"),
                ("connector.class", "file-source"),
                ("file", "in.txt"),
                ("topic", "t"),
                ("value.converter.schemas.enable", "false"),
                ("errors.deadletterqueue.topic.name", "dlq"),
            ]),
        );
        assert_eq!(v.error_count(), 0, "{:?}", v.problems());
        assert_eq!(
            v.warnings(),
            vec!["value.converter.schemas.enable: 'schemas.enable' is not a setting of the string converter (it takes none); ignored"]
        );
        // A topic sink takes output converters and their settings.
        let v = validate(
            &plugins,
            &config(&[
                ("name", "x"),
                ("connector.class", "topic-sink"),
                ("topics", "a"),
                ("topic", "b"),
                ("bootstrap.servers", "127.0.0.1:9092"),
                ("output.value.converter", "json"),
                ("output.value.converter.schemas.enable", "false"),
            ]),
        );
        assert_eq!(
            (v.error_count(), v.warnings().len()),
            (0, 0),
            "{:?}",
            v.warnings()
        );
    }

    #[test]
    fn near_misses_are_close_in_spelling_or_separators_only() {
        let keys = ["file", "topics", "batch.size", "poll.interval.ms"];
        assert_eq!(near_miss("fiel", keys), Some("file"));
        assert_eq!(near_miss("topic", keys), Some("topics"));
        assert_eq!(near_miss("BATCH_SIZE", keys), Some("batch.size"));
        assert_eq!(
            near_miss("poll-interval-ms", keys),
            Some("poll.interval.ms")
        );
        assert_eq!(near_miss("fsync_every", keys), None);
        assert_eq!(near_miss("url", keys), None);
        assert_eq!(near_miss("xy", ["x"]), None);
    }
}

#[cfg(test)]
#[path = "docs_tests.rs"]
mod docs;
