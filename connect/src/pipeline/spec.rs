//! The YAML pipeline format, and where in the file each part is (for
//! `file:line:column` diagnostics).
//!
//! ```yaml
//! name: users-clean                 # also the name of its connector
//! source:                           # a connector, or `topic: users`
//!   connector: datagen
//!   config: {quickstart: users, max.records: 1000}
//! transforms:                       # applied in order
//!   - plugin: plugins/dist/redact-pii.wasm
//!     config: {fields: "email,ssn"}
//!   - filter: value.amount_cents > 1000   # has(value.x): the field is there
//!   - rename: {mail: email}
//!   - drop: [internal_id]
//!   - mask: [ssn]
//!   - route: {field: status, topic: "orders-{}"}
//! sink:                             # a connector, or `topic: users-clean`
//!   topic: users-clean
//!   format: json                    # topics: json (default), string, bytes or avro
//!   subject: users-clean-value      # avro: write with this subject's latest schema
//! errors:                           # optional
//!   tolerance: all                  # none (default) or all
//!   dead_letter_topic: users-dlq    # records a converter, transform or sink failed on
//! test:                             # for `runnel pipeline test`
//!   input:  [{value: {...}}, {key: k, value: "..."}]
//!   expect: [{value: {...}}, {topic: t, value: ...}]
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::Value as Yaml;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub name: String,
    pub source: Endpoint,
    #[serde(default)]
    pub transforms: Vec<TransformSpec>,
    pub sink: Endpoint,
    #[serde(default)]
    pub errors: Option<ErrorsSpec>,
    #[serde(default)]
    pub test: Option<TestSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub connector: Option<String>,
    #[serde(default)]
    pub config: BTreeMap<String, Yaml>,
    #[serde(default)]
    pub format: Option<String>,
    /// `format: avro`: write with this subject's latest schema.
    #[serde(default)]
    pub subject: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformSpec {
    #[serde(default)]
    pub plugin: Option<String>,
    #[serde(default)]
    pub config: Option<BTreeMap<String, Yaml>>,
    #[serde(default)]
    pub filter: Option<String>,
    #[serde(default)]
    pub rename: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub drop: Option<Vec<String>>,
    #[serde(default)]
    pub mask: Option<Vec<String>>,
    #[serde(default)]
    pub route: Option<RouteSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub field: String,
    pub topic: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorsSpec {
    #[serde(default)]
    pub tolerance: Option<String>,
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    pub input: Vec<TestRecord>,
    pub expect: Vec<TestRecord>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TestRecord {
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub key: Option<Yaml>,
    #[serde(default)]
    pub value: Option<Yaml>,
}

/// A YAML scalar as a config string.
pub fn config_string(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        Yaml::Null => String::new(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Number(n) => n.to_string(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

pub fn key(k: &str) -> Step {
    Step::Key(k.to_string())
}

/// Where a path is in block-style YAML: (line, column), 1-based. Finds the
/// deepest part of the path it can; a flow-style value (`{a: 1}`) is
/// found at its parent's line.
pub fn locate(text: &str, path: &[Step]) -> (usize, usize) {
    // (indent, step) of the keys and items enclosing the current line.
    let mut stack: Vec<(usize, Step)> = Vec::new();
    let mut counters: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut best = (1, 1, 0usize);
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split(" #").next().unwrap_or(raw);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let mut indent = line.len() - line.trim_start().len();
        let mut rest = line.trim_start();
        let mut steps: Vec<(usize, Step)> = Vec::new();
        // "- key: v": an item, then maybe a key at the item's content indent.
        while let Some(after) = rest
            .strip_prefix("- ")
            .or_else(|| (rest == "-").then_some(""))
        {
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            let parent = stack.len();
            let c = counters.entry((parent, indent)).or_insert(0);
            let index = *c;
            *c += 1;
            // Deeper counters belong to the previous item.
            counters.retain(|(p, _), _| *p <= parent);
            steps.push((indent, Step::Index(index)));
            stack.push((indent, Step::Index(index)));
            indent += 2;
            rest = after.trim_start();
        }
        if let Some((k, _)) = rest.split_once(':') {
            let k = k.trim().trim_matches('"').trim_matches('\'');
            if !k.is_empty() && !k.contains(' ') {
                while stack.last().is_some_and(|(i, _)| *i >= indent) {
                    stack.pop();
                }
                stack.push((indent, Step::Key(k.to_string())));
                steps.push((indent, Step::Key(k.to_string())));
            }
        }
        if steps.is_empty() {
            continue;
        }
        // How much of the path does this line's position match?
        let here: Vec<&Step> = stack.iter().map(|(_, s)| s).collect();
        let matched = here.iter().zip(path).take_while(|(a, b)| **a == *b).count();
        // The line is (inside) the path's deepest part found so far when
        // all it opens matches, or it opens the whole path.
        if matched > best.2 && (matched == here.len() || matched == path.len()) {
            let column = stack.get(matched - 1).map(|(i, _)| i + 1).unwrap_or(1);
            best = (n + 1, column, matched);
            if matched == path.len() {
                break;
            }
        }
    }
    (best.0, best.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "name: p
source:
  connector: datagen
  config:
    quickstart: users
transforms:
  - plugin: a.wasm
    config: {x: 1}
  - filter: value.a > 1
  # a comment
  - mask: [ssn]
sink:
  topic: out
";

    #[test]
    fn paths_are_found_at_their_line_and_column() {
        assert_eq!(locate(TEXT, &[key("name")]), (1, 1));
        assert_eq!(locate(TEXT, &[key("source"), key("connector")]), (3, 3));
        assert_eq!(
            locate(TEXT, &[key("source"), key("config"), key("quickstart")]),
            (5, 5)
        );
        assert_eq!(
            locate(TEXT, &[key("transforms"), Step::Index(0), key("plugin")]),
            (7, 5)
        );
        assert_eq!(
            locate(TEXT, &[key("transforms"), Step::Index(1), key("filter")]),
            (9, 5)
        );
        assert_eq!(locate(TEXT, &[key("transforms"), Step::Index(2)]), (11, 3));
        assert_eq!(locate(TEXT, &[key("sink"), key("topic")]), (13, 3));
        // Not there: the deepest part that is.
        assert_eq!(locate(TEXT, &[key("sink"), key("format")]), (12, 1));
    }

    #[test]
    fn the_format_parses_and_unknown_keys_are_refused() {
        let spec: Spec = serde_yaml::from_str(TEXT).unwrap();
        assert_eq!(spec.transforms.len(), 3);
        assert_eq!(config_string(&spec.source.config["quickstart"]), "users");
        let err = serde_yaml::from_str::<Spec>("name: p\nsorce: {}\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `sorce`"), "{err}");
        assert_eq!(err.location().map(|l| l.line()), Some(2));
    }
}
