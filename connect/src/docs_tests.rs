//! Tests that keep the reference docs true: every config key of every
//! built-in connector (with its default), the common keys, the converter
//! settings, the Kafka Connect keys accepted and ignored, every key of the
//! pipeline YAML and every metric of the connect worker's `/metrics` must
//! be in `docs/`. A key added to the code and not to the docs fails here,
//! naming the file and the line to add.
//!
//! A child of `config` so it reads the tables the validation uses,
//! private ones included.

use super::{converter_settings, COMMON_KEYS, KAFKA_UNUSED, KAFKA_UNUSED_PREFIXES};
use crate::connectors;
use crate::pipeline::spec;
use crate::plugin::ConfigKey;

const CONNECTORS_MD: &str = include_str!("../../docs/connectors.md");
const PIPELINES_MD: &str = include_str!("../../docs/pipelines.md");
const METRICS_MD: &str = include_str!("../../docs/metrics.md");

/// The part of `doc` under the `## ` heading that starts with `title`
/// (up to the next `## `).
fn section<'a>(doc: &'a str, title: &str) -> Option<&'a str> {
    let start = doc
        .match_indices("\n## ")
        .map(|(i, _)| i + 1)
        .find(|&i| doc[i + 3..].starts_with(title))?;
    let end = doc[start + 3..]
        .find("\n## ")
        .map(|e| start + 3 + e)
        .unwrap_or(doc.len());
    Some(&doc[start..end])
}

/// The table row of `key` in `text`: a line starting with "| `key` |".
fn row<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = format!("| `{key}` |");
    text.lines().find(|l| l.starts_with(&start))
}

/// What is wrong with the row of `key` in `text`: missing, or without
/// its default or "required".
fn check_row(text: &str, key: &ConfigKey, problems: &mut Vec<String>, at: &str) {
    let Some(line) = row(text, key.name) else {
        problems.push(format!("{at}: no row | `{}` | ... |", key.name));
        return;
    };
    if key.required && !line.contains("required") {
        problems.push(format!(
            "{at}: the row of `{}` does not say required",
            key.name
        ));
    }
    if let Some(d) = key.default {
        // An empty default is written "empty".
        let shown = if d.is_empty() {
            "empty".to_string()
        } else {
            format!("`{d}`")
        };
        if !line.contains(&shown) {
            problems.push(format!(
                "{at}: the row of `{}` does not give its default {shown}",
                key.name
            ));
        }
    }
}

#[test]
fn docs_connectors_md_lists_every_key_of_every_builtin_connector() {
    let mut problems = Vec::new();
    for plugin in connectors::builtin() {
        let title = format!("`{}`", plugin.name());
        let Some(text) = section(CONNECTORS_MD, &title) else {
            problems.push(format!("docs/connectors.md: no section ## {title}"));
            continue;
        };
        let at = format!("docs/connectors.md ## {title}");
        if !text.contains(&format!("`{}`", plugin.class())) {
            problems.push(format!("{at}: the class `{}` is not named", plugin.class()));
        }
        for alias in plugin.aliases() {
            if !text.contains(&format!("`{alias}`")) {
                problems.push(format!("{at}: the alias `{alias}` is not named"));
            }
        }
        for key in plugin.config_keys() {
            check_row(text, key, &mut problems, &at);
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn docs_connectors_md_lists_the_common_keys_converters_and_ignored_keys() {
    let mut problems = Vec::new();
    let at = "docs/connectors.md ## Common keys";
    match section(CONNECTORS_MD, "Common keys") {
        None => problems.push(format!("{at}: no such section")),
        Some(text) => {
            for key in COMMON_KEYS {
                check_row(text, key, &mut problems, at);
            }
        }
    }
    let at = "docs/connectors.md ## Converters";
    match section(CONNECTORS_MD, "Converters") {
        None => problems.push(format!("{at}: no such section")),
        Some(text) => {
            for converter in ["json", "avro", "string", "bytes"] {
                if !text.contains(&format!("`{converter}`")) {
                    problems.push(format!("{at}: the converter `{converter}` is not named"));
                }
                for setting in converter_settings(converter) {
                    if !text.contains(&format!("`{setting}`"))
                        && !text.contains(&format!(".{setting}`"))
                    {
                        problems.push(format!(
                            "{at}: the {converter} converter's setting `{setting}` is not named"
                        ));
                    }
                }
            }
        }
    }
    let at = "docs/connectors.md ## Accepted and ignored";
    match section(CONNECTORS_MD, "Accepted and ignored") {
        None => problems.push(format!("{at}: no such section")),
        Some(text) => {
            for key in KAFKA_UNUSED.iter().chain(KAFKA_UNUSED_PREFIXES) {
                if !text.contains(&format!("`{key}")) {
                    problems.push(format!("{at}: `{key}` is not named"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The field names a serde-derived struct accepts, as its `Deserialize`
/// impl hands them to the deserializer (renames applied).
mod fields {
    use serde::de::{self, Deserializer, Visitor};

    pub struct Capture(pub &'static [&'static str]);

    impl<'de> Deserializer<'de> for &mut Capture {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(de::Error::custom("fields captured"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    pub fn of<T: for<'de> serde::Deserialize<'de>>() -> &'static [&'static str] {
        let mut c = Capture(&[]);
        let _ = T::deserialize(&mut c);
        c.0
    }
}

#[test]
fn docs_pipelines_md_lists_every_key_of_the_pipeline_yaml() {
    // (section of docs/pipelines.md, the struct's keys)
    let tables: [(&str, &[&str]); 9] = [
        ("Top-level keys", fields::of::<spec::Spec>()),
        ("Source and sink", fields::of::<spec::Endpoint>()),
        ("Transforms", fields::of::<spec::TransformSpec>()),
        ("`route`", fields::of::<spec::RouteSpec>()),
        ("`window`", fields::of::<spec::WindowSpec>()),
        ("`join`", fields::of::<spec::JoinSpec>()),
        ("`errors`", fields::of::<spec::ErrorsSpec>()),
        ("`test`", fields::of::<spec::TestSpec>()),
        ("`test`", fields::of::<spec::TestRecord>()),
    ];
    let mut problems = Vec::new();
    for (title, keys) in tables {
        assert!(!keys.is_empty(), "no fields captured for {title}");
        let Some(text) = section(PIPELINES_MD, title) else {
            problems.push(format!("docs/pipelines.md: no section ## {title}"));
            continue;
        };
        for key in keys {
            if row(text, key).is_none() {
                problems.push(format!(
                    "docs/pipelines.md ## {title}: no row | `{key}` | ... |"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn docs_metrics_md_names_every_metric_of_the_connect_worker() {
    let mut text = crate::metrics::render();
    text.push_str(&runnel_http::Metrics::new("docs").render_prometheus("runnel_connect"));
    let missing: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| !METRICS_MD.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/metrics.md does not name: {}",
        missing.join(", ")
    );
}
