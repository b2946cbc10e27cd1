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
//!   # Stateful steps (run on runnel-streams; topic source and sink):
//!   - join: {table: users, type: left, as: user}  # or {stream: t, within: 5m}
//!   - group_by: value.user_id       # or `key`
//!   - window: {tumbling: 1m, grace: 10s}  # or {hopping: 5m, advance: 1m}, {session: 30s}
//!   - aggregate: count              # or {sum: value.x}, {min: ..}, {max: ..}, {plugin: a.wasm}
//!   - emit: final                   # windows: one result per window once it closes
//! sink:                             # a connector, or `topic: users-clean`
//!   topic: users-clean
//!   format: json                    # topics: json (default), string, bytes or avro
//!   subject: users-clean-value      # avro: write with this subject's latest schema
//! errors:                           # optional
//!   tolerance: all                  # none (default) or all
//!   dead_letter_topic: users-dlq    # records a converter, transform or sink failed on
//! test:                             # for `runnel pipeline test`
//!   input:  [{value: {...}}, {key: k, value: "...", timestamp: 1000}]
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
    /// Stateful: the grouping key, `key` or `value.<field>`.
    #[serde(default)]
    pub group_by: Option<String>,
    /// Stateful: the windows of the aggregate that follows.
    #[serde(default)]
    pub window: Option<WindowSpec>,
    /// Stateful: `count`, `{sum|min|max: value.<field>}` or
    /// `{plugin: a.wasm, config: {...}}`.
    #[serde(default)]
    pub aggregate: Option<Yaml>,
    /// Stateful: a join with a table or stream topic.
    #[serde(default)]
    pub join: Option<JoinSpec>,
    /// Stateful: `final` (one result per window, once it closes) or
    /// `updates` (default: every change).
    #[serde(default)]
    pub emit: Option<String>,
}

impl TransformSpec {
    /// Whether the step keeps state (runs on runnel-streams).
    pub fn is_stateful(&self) -> bool {
        self.group_by.is_some()
            || self.window.is_some()
            || self.aggregate.is_some()
            || self.join.is_some()
            || self.emit.is_some()
    }
}

/// `window:` one of `tumbling: SIZE`, `hopping: SIZE` with `advance`, or
/// `session: GAP`; `grace` (default 0) for all. Durations: `500ms`,
/// `30s`, `5m`, `1h`, `1d`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    #[serde(default)]
    pub tumbling: Option<Yaml>,
    #[serde(default)]
    pub hopping: Option<Yaml>,
    #[serde(default)]
    pub advance: Option<Yaml>,
    #[serde(default)]
    pub session: Option<Yaml>,
    #[serde(default)]
    pub grace: Option<Yaml>,
}

/// `join:` with `table: TOPIC` (on the key) or `stream: TOPIC` within a
/// time difference (`within`, `grace`); `type` inner (default) or left;
/// `as` names the field the other side's value goes in (default: its
/// topic).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub within: Option<Yaml>,
    #[serde(default)]
    pub grace: Option<Yaml>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default, rename = "as")]
    pub field: Option<String>,
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
    /// Event time: milliseconds since the epoch, or an RFC 3339 time
    /// (`2024-01-01T00:00:05Z`).
    #[serde(default)]
    pub timestamp: Option<Yaml>,
}

/// A duration: a whole number with a unit (`500ms`, `30s`, `5m`, `1h`,
/// `1d`), in milliseconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    let (number, unit) = t.split_at(digits);
    let scale = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" if !number.is_empty() => {
            return Err(format!("'{t}' has no unit (ms, s, m, h or d), e.g. 30s"))
        }
        _ => {
            return Err(format!(
                "'{t}' is not a duration: a whole number and ms, s, m, h or d, e.g. 5m"
            ))
        }
    };
    let n: i64 = number.parse().map_err(|_| {
        format!("'{t}' is not a duration: a whole number and ms, s, m, h or d, e.g. 5m")
    })?;
    n.checked_mul(scale)
        .ok_or_else(|| format!("'{t}' is too long"))
}

/// A record time: milliseconds since the epoch, or an RFC 3339 time
/// (`2024-01-01T00:00:05Z`, `2024-01-01T01:00:05.250+01:00`).
pub fn parse_timestamp(v: &Yaml) -> Result<i64, String> {
    match v {
        Yaml::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("timestamp {n} is not a whole number of milliseconds")),
        Yaml::String(s) => parse_rfc3339(s).ok_or_else(|| {
            format!(
                "timestamp '{s}' is not milliseconds or an RFC 3339 time like 2024-01-01T00:00:05Z"
            )
        }),
        _ => Err("a timestamp is milliseconds or an RFC 3339 time".into()),
    }
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(part).ok()?.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
    {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return None;
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = std::str::from_utf8(&b[start..i.min(start + 3)]).ok()?;
        millis = frac.parse::<i64>().ok()? * 10i64.pow(3 - frac.len() as u32);
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'-' {
                -m
            } else {
                m
            }
        }
        _ => return None,
    };
    // Days since the epoch of a civil date (Howard Hinnant's algorithm).
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3_600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1_000 + millis)
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
    fn durations_and_timestamps_parse() {
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("5 min")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_duration("-1s").is_err());
        let ts = |s: &str| parse_timestamp(&Yaml::String(s.into()));
        assert_eq!(ts("1970-01-01T00:00:01Z"), Ok(1_000));
        assert_eq!(ts("2024-01-01T00:00:05Z"), Ok(1_704_067_205_000));
        assert_eq!(ts("2024-01-01T01:00:05.250+01:00"), Ok(1_704_067_205_250));
        assert!(ts("2024-01-01").is_err());
        assert_eq!(
            parse_timestamp(&serde_yaml::from_str("1000").unwrap()),
            Ok(1000)
        );
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
