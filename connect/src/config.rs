//! Connector configs: Kafka Connect's common keys, the plugin's own, and
//! per-field validation (what `PUT /connector-plugins/{p}/config/validate`
//! answers and what creating a connector checks).

use std::sync::Arc;

use serde_json::{json, Value};

use crate::connectors;
use crate::converter;
use crate::plugin::{ConfigKey, ConfigType, ConnectorKind, ConnectorPlugin, Props};

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
        "none: a record that fails stops the task; all: it is skipped (and sent to the dead-letter topic of a sink).",
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
        "Log each tolerated failure.",
    ),
    ConfigKey::optional(
        "errors.deadletterqueue.topic.name",
        ConfigType::String,
        None,
        "Sinks: the topic that receives records that failed, with headers naming the error.",
    ),
    ConfigKey::optional(
        "errors.deadletterqueue.context.headers.enable",
        ConfigType::Boolean,
        Some("true"),
        "Sinks: add the __connect.errors.* headers to dead-letter records.",
    ),
];

/// One key's definition, value and problems.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: ConfigKey,
    pub group: &'static str,
    pub value: Option<String>,
    pub errors: Vec<String>,
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
            .flat_map(|e| e.errors.iter().map(move |m| format!("{}: {m}", e.key.name)))
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
                    "name": e.key.name,
                    "type": e.key.kind.as_str(),
                    "required": e.key.required,
                    "default_value": e.key.default,
                    "importance": if e.key.required { "HIGH" } else { "MEDIUM" },
                    "documentation": e.key.doc,
                    "group": e.group,
                    "width": "NONE",
                    "display_name": e.key.name,
                    "dependents": [],
                    "order": 0,
                },
                "value": {
                    "name": e.key.name,
                    "value": e.value,
                    "recommended_values": [],
                    "errors": e.errors,
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
        key: key.clone(),
        group,
        value: value.or_else(|| key.default.map(str::to_string)),
        errors,
    }
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
        entries.iter().position(|e| e.key.name == name)
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
                    None => entries.push(Entry {
                        key: ConfigKey::optional("", ConfigType::String, None, ""),
                        group: "Connector",
                        value: config.get(&k).cloned(),
                        errors: vec![format!("{k}: {problem}")],
                    }),
                }
            }
            if p.kind() == ConnectorKind::Source {
                if let Some(i) = entry(&mut entries, "errors.deadletterqueue.topic.name") {
                    if config.contains_key("errors.deadletterqueue.topic.name") {
                        entries[i]
                            .errors
                            .push("dead-letter topics are for sink connectors".into());
                    }
                }
            }
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
        entries.push(Entry {
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
}
