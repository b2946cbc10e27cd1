//! Stateful pipeline steps (`group_by`, `window`, `aggregate`, `emit`,
//! `join`), run on `runnel-streams`: checked here with the rest of the
//! file, built into a [`Topology`], tested on a [`TopologyTestDriver`]
//! and run by [`KafkaStreams`] under the application id
//! `_runnel_pipeline.<name>` (its consumer group, and the prefix of its
//! changelog and repartition topics: state survives a crash and moves
//! with its partitions, and two runs of one file share the partitions).
//!
//! A stateful pipeline reads a topic and writes a topic, both `json` or
//! `string`. Records inside are a nullable string key and a JSON value.
//! The stateless steps (filter, rename, drop, mask, filter and map
//! plugins) run where they stand in the chain; `route` does not (a
//! stateful pipeline writes its sink topic).
//!
//! # Output records
//!
//! An aggregate writes one record per update (or, with `emit: final`,
//! one per window once it closes): the key is the group key, the value a
//! JSON object with the aggregate under its name (`count`, `sum`, `min`,
//! `max`; a plugin's emitted value under `value`), and for windows
//! `window_start` and `window_end` (milliseconds; a session's end is its
//! last record's time). A join writes the stream record's value (an
//! object; any other value goes under `value`) with the other side's
//! value added under `as` (default: the other topic's name; `null` for a
//! left join without a match).
//!
//! # WASM aggregates
//!
//! `aggregate: {plugin: a.wasm}` runs an aggregate plugin (ABI kind 5)
//! one record at a time; the key's state lives in the aggregate's state
//! store (with its changelog), not in the plugin: the state is loaded
//! from the store, the plugin called, the new state written back. A
//! plugin failure leaves the state as it was and skips the record (it is
//! logged, and `pipeline test` reports it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use runnel_streams::serdes::{self, Serde, SerdeError, SerdeRef};
use runnel_streams::{
    Consumed, JoinWindows, KStream, KafkaStreams, Produced, SessionWindows, Stored, StreamJoined,
    StreamsBuilder, StreamsConfig, TimeWindows, Topology, TopologyTestDriver, Window,
};
use serde_json::{Map, Value};
use serde_yaml::Value as Yaml;

use super::spec::{
    config_string, key, parse_duration, parse_timestamp, JoinSpec, Step, TransformSpec, WindowSpec,
};
use super::transform::{Chain, Record, Transform};
use super::{compare, yaml_to_data, Checker, End, Mismatch, Pipeline};
use crate::record::Data;

/// A record's key inside a stateful pipeline.
pub type Key = Option<String>;

/// What a group's key is.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupKey {
    /// The record's key.
    Key,
    /// A field of the JSON value (a path).
    Value(Vec<String>),
}

/// The windows of an aggregate (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Windowing {
    Tumbling { size: i64, grace: i64 },
    Hopping { size: i64, advance: i64, grace: i64 },
    Session { gap: i64, grace: i64 },
}

/// What an aggregate computes.
#[derive(Clone)]
pub enum Aggregate {
    Count,
    Sum(Vec<String>),
    Min(Vec<String>),
    Max(Vec<String>),
    Plugin {
        path: String,
        plugin: Arc<runnel_plugin_host::Plugin>,
    },
}

impl Aggregate {
    /// The output field the result goes in.
    pub fn field(&self) -> &'static str {
        match self {
            Aggregate::Count => "count",
            Aggregate::Sum(_) => "sum",
            Aggregate::Min(_) => "min",
            Aggregate::Max(_) => "max",
            Aggregate::Plugin { .. } => "value",
        }
    }

    fn number_field(&self) -> Option<&[String]> {
        match self {
            Aggregate::Sum(p) | Aggregate::Min(p) | Aggregate::Max(p) => Some(p),
            _ => None,
        }
    }
}

/// `group_by`, optional `window`, `aggregate`, optional `emit: final`.
#[derive(Clone)]
pub struct Group {
    pub key: GroupKey,
    pub window: Option<Windowing>,
    pub aggregate: Aggregate,
    pub emit_final: bool,
}

/// A join of the stream with a table topic (on the key) or with another
/// stream topic (records whose times differ by at most `within`).
#[derive(Debug, Clone, PartialEq)]
pub struct Join {
    pub topic: String,
    pub table: bool,
    pub within: i64,
    pub grace: i64,
    pub left: bool,
    pub field: String,
}

/// One stage of a stateful pipeline.
#[derive(Clone)]
pub enum Stage {
    Stateless(Chain),
    Join(Join),
    Group(Group),
}

/// The stages of a stateful pipeline, in order.
#[derive(Clone, Default)]
pub struct Plan {
    pub stages: Vec<Stage>,
}

/// One checked step of the chain.
pub(super) enum Piece {
    Stateless(Arc<dyn Transform>),
    Route,
    GroupBy(GroupKey),
    Window(Windowing),
    Aggregate(Aggregate),
    Emit(bool),
    Join(Join),
}

/// `base` and then `k`.
fn under(base: &[Step], k: &str) -> Vec<Step> {
    let mut p = base.to_vec();
    p.push(key(k));
    p
}

fn duration(c: &mut Checker<'_>, at: &[Step], what: &str, v: &Yaml) -> Option<i64> {
    match parse_duration(&config_string(v)) {
        Ok(ms) => Some(ms),
        Err(e) => {
            c.at(
                at,
                format!("{what}: {e}"),
                Some("durations: 500ms, 30s, 5m, 1h, 1d"),
            );
            None
        }
    }
}

/// `value.<field>` (or `key`, where `key_ok`) as a path.
fn field_path(text: &str) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = text.trim().split('.').collect();
    if parts.len() < 2 || parts[0] != "value" || parts[1..].iter().any(|p| p.is_empty()) {
        return Err(format!("'{text}' is not a field of the value"));
    }
    Ok(parts[1..].iter().map(|p| p.to_string()).collect())
}

/// Checks the stateful parts of transform `i`.
pub(super) fn piece(
    c: &mut Checker<'_>,
    i: usize,
    t: &TransformSpec,
    dir: &Path,
    host: &runnel_plugin_host::PluginHost,
) -> Option<Piece> {
    let at = |k: &str| vec![key("transforms"), Step::Index(i), key(k)];
    if let Some(g) = &t.group_by {
        if g.trim() == "key" {
            return Some(Piece::GroupBy(GroupKey::Key));
        }
        return match field_path(g) {
            Ok(p) => Some(Piece::GroupBy(GroupKey::Value(p))),
            Err(e) => {
                c.at(
                    &at("group_by"),
                    format!("group_by {e}"),
                    Some("group by `key` or a field of the JSON value: `value.user_id`"),
                );
                None
            }
        };
    }
    if let Some(w) = &t.window {
        return window(c, i, w).map(Piece::Window);
    }
    if let Some(a) = &t.aggregate {
        return aggregate(c, i, a, dir, host).map(Piece::Aggregate);
    }
    if let Some(e) = &t.emit {
        return match e.as_str() {
            "final" => Some(Piece::Emit(true)),
            "updates" => Some(Piece::Emit(false)),
            other => {
                c.at(
                    &at("emit"),
                    format!("emit '{other}' is not final or updates"),
                    Some("`emit: final` writes one result per window once it closes"),
                );
                None
            }
        };
    }
    if let Some(j) = &t.join {
        return join(c, i, j).map(Piece::Join);
    }
    None
}

/// Checks a `window` step.
fn window(c: &mut Checker<'_>, i: usize, w: &WindowSpec) -> Option<Windowing> {
    let base = [key("transforms"), Step::Index(i), key("window")];
    let sub = |k: &str| under(&base, k);
    let grace = match &w.grace {
        Some(v) => duration(c, &sub("grace"), "window grace", v)?,
        None => 0,
    };
    let kinds = [&w.tumbling, &w.hopping, &w.session]
        .iter()
        .filter(|k| k.is_some())
        .count();
    if kinds != 1 {
        c.at(
            &base,
            "a window is exactly one of tumbling, hopping or session",
            Some("e.g. {tumbling: 1m}, {hopping: 5m, advance: 1m}, {session: 30s}; `grace` for late records"),
        );
        return None;
    }
    if w.advance.is_some() && w.hopping.is_none() {
        c.at(
            &sub("advance"),
            "only a hopping window takes `advance`",
            None,
        );
        return None;
    }
    let positive = |c: &mut Checker<'_>, k: &str, ms: i64| {
        if ms <= 0 {
            c.at(&sub(k), format!("the window's {k} must be positive"), None);
            None
        } else {
            Some(ms)
        }
    };
    let windowing = if let Some(v) = &w.tumbling {
        let size = duration(c, &sub("tumbling"), "tumbling window size", v)?;
        Windowing::Tumbling {
            size: positive(c, "tumbling", size)?,
            grace,
        }
    } else if let Some(v) = &w.hopping {
        let size = duration(c, &sub("hopping"), "hopping window size", v)?;
        let size = positive(c, "hopping", size)?;
        let Some(adv) = &w.advance else {
            c.at(
                &sub("hopping"),
                "a hopping window needs `advance`",
                Some("e.g. {hopping: 5m, advance: 1m}"),
            );
            return None;
        };
        let advance = duration(c, &sub("advance"), "hopping window advance", adv)?;
        let advance = positive(c, "advance", advance)?;
        if advance > size {
            c.at(
                &sub("advance"),
                "a hopping window's advance cannot be larger than its size",
                None,
            );
            return None;
        }
        Windowing::Hopping {
            size,
            advance,
            grace,
        }
    } else {
        let v = w.session.as_ref()?;
        let gap = duration(c, &sub("session"), "session gap", v)?;
        Windowing::Session {
            gap: positive(c, "session", gap)?,
            grace,
        }
    };
    Some(windowing)
}

/// Checks a `join` step.
fn join(c: &mut Checker<'_>, i: usize, j: &JoinSpec) -> Option<Join> {
    let base = [key("transforms"), Step::Index(i), key("join")];
    let sub = |k: &str| under(&base, k);
    let (topic, table) = match (&j.table, &j.stream) {
        (Some(t), None) => (t.clone(), true),
        (None, Some(s)) => (s.clone(), false),
        _ => {
            c.at(
                &base,
                "a join takes exactly one of `table` or `stream`",
                Some("e.g. {table: users} (on the key) or {stream: payments, within: 5m}"),
            );
            return None;
        }
    };
    if !super::is_topic_name(&topic) {
        let k = if table { "table" } else { "stream" };
        c.at(
            &sub(k),
            format!("'{topic}' is not a topic name (1-249 of a-z A-Z 0-9 . _ -)"),
            None,
        );
        return None;
    }
    let left = match j.kind.as_deref() {
        None | Some("inner") => false,
        Some("left") => true,
        Some(other) => {
            c.at(
                &sub("type"),
                format!("join type '{other}' is not inner or left"),
                None,
            );
            return None;
        }
    };
    let (mut within, mut grace) = (0, 0);
    if table {
        for k in ["within", "grace"] {
            let given = if k == "within" { &j.within } else { &j.grace };
            if given.is_some() {
                c.at(
                    &sub(k),
                    format!("a table join takes no `{k}`: it joins each record with the table's current row"),
                    None,
                );
                return None;
            }
        }
    } else {
        let Some(w) = &j.within else {
            c.at(
                &base,
                "a stream join needs `within`: how far apart the two records' times may be",
                Some("e.g. {stream: payments, within: 5m}"),
            );
            return None;
        };
        within = duration(c, &sub("within"), "join within", w)?;
        if let Some(g) = &j.grace {
            grace = duration(c, &sub("grace"), "join grace", g)?;
        }
    }
    let field = j.field.clone().unwrap_or_else(|| topic.clone());
    if field.is_empty() {
        c.at(&sub("as"), "the field name is empty", None);
        return None;
    }
    Some(Join {
        topic,
        table,
        within,
        grace,
        left,
        field,
    })
}

const AGGREGATES: &str = "count, {sum: value.<field>}, {min: value.<field>}, {max: value.<field>} or {plugin: <file>.wasm}";

fn aggregate(
    c: &mut Checker<'_>,
    i: usize,
    a: &Yaml,
    dir: &Path,
    host: &runnel_plugin_host::PluginHost,
) -> Option<Aggregate> {
    let at = vec![key("transforms"), Step::Index(i), key("aggregate")];
    let sub = |k: &str| under(&at, k);
    match a {
        Yaml::String(s) if s == "count" => Some(Aggregate::Count),
        Yaml::String(s) if matches!(s.as_str(), "sum" | "min" | "max") => {
            c.at(
                &at,
                format!("aggregate {s} needs a field"),
                Some(&format!("e.g. aggregate: {{{s}: value.amount}}")),
            );
            None
        }
        Yaml::Mapping(m) if m.len() == 1 || m.contains_key("plugin") => {
            let (k, v) = m.iter().next()?;
            let name = config_string(k);
            match name.as_str() {
                "count" => Some(Aggregate::Count),
                "sum" | "min" | "max" => {
                    let text = config_string(v);
                    match field_path(&text) {
                        Ok(p) => Some(match name.as_str() {
                            "sum" => Aggregate::Sum(p),
                            "min" => Aggregate::Min(p),
                            _ => Aggregate::Max(p),
                        }),
                        Err(e) => {
                            c.at(
                                &sub(&name),
                                format!("aggregate {name}: {e}"),
                                Some(&format!("e.g. aggregate: {{{name}: value.amount}}")),
                            );
                            None
                        }
                    }
                }
                "plugin" => {
                    let p = config_string(v);
                    let config = match m.get("config") {
                        None => Default::default(),
                        Some(Yaml::Mapping(cfg)) => cfg
                            .iter()
                            .map(|(k, v)| (config_string(k), config_string(v)))
                            .collect(),
                        Some(_) => {
                            c.at(&sub("config"), "a plugin's config is a map", None);
                            return None;
                        }
                    };
                    if let Some(extra) = m
                        .keys()
                        .map(config_string)
                        .find(|k| k != "plugin" && k != "config")
                    {
                        c.at(
                            &sub(&extra),
                            format!(
                                "an aggregate plugin takes `plugin` and `config`, not `{extra}`"
                            ),
                            None,
                        );
                        return None;
                    }
                    plugin(c, &sub("plugin"), &p, &config, dir, host)
                }
                other => {
                    c.at(
                        &at,
                        format!("unknown aggregate '{other}'"),
                        Some(&format!("an aggregate is {AGGREGATES}")),
                    );
                    None
                }
            }
        }
        other => {
            let text = match other {
                Yaml::String(s) => s.clone(),
                _ => serde_yaml::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            };
            c.at(
                &at,
                format!("unknown aggregate '{text}'"),
                Some(&format!("an aggregate is {AGGREGATES}")),
            );
            None
        }
    }
}

fn plugin(
    c: &mut Checker<'_>,
    at: &[Step],
    p: &str,
    config: &std::collections::BTreeMap<String, String>,
    dir: &Path,
    host: &runnel_plugin_host::PluginHost,
) -> Option<Aggregate> {
    let path = if Path::new(p).is_absolute() {
        PathBuf::from(p)
    } else {
        dir.join(p)
    };
    let wasm = match std::fs::read(&path) {
        Ok(w) => w,
        Err(e) => {
            c.at(
                at,
                format!("plugin {}: {e}", path.display()),
                Some("build the example plugins with plugins/build.sh, or give the path of a .wasm file"),
            );
            return None;
        }
    };
    match host.load(p, &wasm, config) {
        Ok(plugin) if plugin.kind() == runnel_plugin_host::Kind::Aggregate => {
            Some(Aggregate::Plugin {
                path: p.to_string(),
                plugin: Arc::new(plugin),
            })
        }
        Ok(plugin) => {
            c.at(
                at,
                format!(
                    "{p} is a {} plugin; `aggregate` takes an aggregate plugin",
                    plugin.kind()
                ),
                Some("put filter and map plugins in the chain as `- plugin: file.wasm`"),
            );
            None
        }
        Err(e) => {
            c.at(at, format!("plugin {p}: {e}"), None);
            None
        }
    }
}

/// Puts the checked steps in order: stateless steps, joins, and groups
/// (`group_by`, `window`, `aggregate`, `emit`). `None` when the chain has
/// no stateful step.
pub(super) fn assemble(c: &mut Checker<'_>, pieces: Vec<(usize, Piece)>) -> Option<Plan> {
    let stateful = pieces
        .iter()
        .any(|(_, p)| !matches!(p, Piece::Stateless(_) | Piece::Route));
    if !stateful {
        return None;
    }
    let at = |i: usize, k: &str| vec![key("transforms"), Step::Index(i), key(k)];
    let mut plan = Plan::default();
    let mut chain = Chain::default();
    // An open group: where its group_by is, its key and window.
    let mut open: Option<(usize, GroupKey, Option<Windowing>)> = None;
    // The stage before is a windowed aggregate (for `emit`).
    let mut after_aggregate: Option<bool> = None;
    for (i, piece) in pieces {
        let just_aggregated = after_aggregate.take();
        match piece {
            Piece::Route => c.at(
                &at(i, "route"),
                "route cannot be used with stateful steps: a stateful pipeline writes its sink topic",
                None,
            ),
            Piece::Stateless(step) => {
                if let Some((g, ..)) = &open {
                    c.at(
                        &[key("transforms"), Step::Index(i)],
                        format!(
                            "only `window` may come between group_by (transform {}) and its aggregate",
                            g + 1
                        ),
                        None,
                    );
                }
                chain.steps.push(step);
            }
            Piece::GroupBy(k) => {
                if let Some((g, ..)) = &open {
                    c.at(
                        &at(i, "group_by"),
                        format!("group_by of transform {} has no aggregate before this one", g + 1),
                        Some("a group_by is followed by an optional window and an aggregate"),
                    );
                }
                open = Some((i, k, None));
            }
            Piece::Window(w) => match &mut open {
                None => c.at(
                    &at(i, "window"),
                    "window needs a group_by before it",
                    Some("e.g. - group_by: value.user_id, then - window: {tumbling: 1m}"),
                ),
                Some((_, _, Some(_))) => c.at(
                    &at(i, "window"),
                    "a group has one window",
                    None,
                ),
                Some((_, _, slot)) => *slot = Some(w),
            },
            Piece::Aggregate(a) => match open.take() {
                None => c.at(
                    &at(i, "aggregate"),
                    "aggregate needs a group_by before it",
                    Some("e.g. - group_by: value.user_id (or key), then - aggregate: count"),
                ),
                Some((_, key, window)) => {
                    if matches!(window, Some(Windowing::Session { .. }))
                        && matches!(a, Aggregate::Plugin { .. })
                    {
                        c.at(
                            &at(i, "aggregate"),
                            "a plugin aggregate cannot run on session windows: two sessions' plugin states cannot be merged",
                            Some("use a tumbling or hopping window"),
                        );
                    }
                    if !chain.is_empty() {
                        plan.stages
                            .push(Stage::Stateless(std::mem::take(&mut chain)));
                    }
                    after_aggregate = Some(window.is_some());
                    plan.stages.push(Stage::Group(Group {
                        key,
                        window,
                        aggregate: a,
                        emit_final: false,
                    }));
                }
            },
            Piece::Emit(fin) => match (just_aggregated, plan.stages.last_mut()) {
                (Some(windowed), Some(Stage::Group(g))) => {
                    if fin && !windowed {
                        c.at(
                            &at(i, "emit"),
                            "emit: final needs a window: an aggregate without one never closes",
                            Some("add - window: {tumbling: 1m} between group_by and aggregate"),
                        );
                    }
                    g.emit_final = fin;
                }
                _ => c.at(
                    &at(i, "emit"),
                    "emit must come right after an aggregate",
                    None,
                ),
            },
            Piece::Join(j) => {
                if let Some((g, ..)) = &open {
                    c.at(
                        &at(i, "join"),
                        format!("a join cannot come between group_by (transform {}) and its aggregate", g + 1),
                        None,
                    );
                }
                if !chain.is_empty() {
                    plan.stages
                        .push(Stage::Stateless(std::mem::take(&mut chain)));
                }
                plan.stages.push(Stage::Join(j));
            }
        }
    }
    if let Some((g, ..)) = open {
        c.at(
            &at(g, "group_by"),
            "group_by needs an aggregate after it",
            Some("e.g. - aggregate: count"),
        );
    }
    if !chain.is_empty() {
        plan.stages.push(Stage::Stateless(chain));
    }
    Some(plan)
}

/// Checks what a stateful pipeline needs of the rest of the file.
pub(super) fn check_pipeline(
    c: &mut Checker<'_>,
    spec: &super::spec::Spec,
    source: &Option<End>,
    sink: &Option<End>,
) {
    let first = spec
        .transforms
        .iter()
        .position(TransformSpec::is_stateful)
        .unwrap_or(0);
    for (which, e) in [("source", source), ("sink", sink)] {
        match e {
            Some(End::Topic { format, .. }) if format != "json" && format != "string" => c.at(
                &[key(which), key("format")],
                format!("a pipeline with stateful steps reads and writes json or string topics, not {format}"),
                None,
            ),
            Some(End::Connector { .. }) => c.at(
                &[key(which)],
                format!("a pipeline with stateful steps (transform {}) must {} a topic", first + 1,
                    if which == "source" { "read" } else { "write" }),
                Some("run the connector in a pipeline of its own that writes (or reads) a topic"),
            ),
            _ => {}
        }
    }
    if !application_id(&spec.name)
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
    {
        c.at(
            &[key("name")],
            format!(
                "a pipeline with stateful steps names topics after itself: '{}' must be a-z A-Z 0-9 . _ -",
                spec.name
            ),
            None,
        );
    }
    let source_topic = match source {
        Some(End::Topic { name, .. }) => Some(name.as_str()),
        _ => None,
    };
    let mut seen: Vec<&str> = source_topic.into_iter().collect();
    for (i, t) in spec.transforms.iter().enumerate() {
        let Some(j) = &t.join else { continue };
        let (topic, k) = match (&j.table, &j.stream) {
            (Some(t), _) => (t.as_str(), "table"),
            (_, Some(s)) => (s.as_str(), "stream"),
            _ => continue,
        };
        if seen.contains(&topic) {
            c.at(
                &[key("transforms"), Step::Index(i), key("join"), key(k)],
                format!("topic {topic} is already read by this pipeline: a topic is read once"),
                None,
            );
        }
        seen.push(topic);
    }
    if spec
        .errors
        .as_ref()
        .is_some_and(|e| e.dead_letter_topic.is_some())
    {
        c.warn(
            &[key("errors"), key("dead_letter_topic")],
            "a pipeline with stateful steps logs and skips the records it cannot process; it writes no dead letters",
            None,
        );
    }
}

/// The application id (consumer group, prefix of internal topics) of a
/// stateful pipeline.
pub fn application_id(name: &str) -> String {
    format!("_runnel_pipeline.{name}")
}

/// JSON values on a topic or in a store: null ⇄ a null record; with
/// `json`, JSON text, else text as a string (and other values as JSON
/// text).
struct ValueSerde {
    json: bool,
}

impl Serde<Value> for ValueSerde {
    fn serialize(&self, value: &Value) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(match value {
            Value::Null => None,
            Value::String(s) if !self.json => Some(s.as_bytes().to_vec()),
            v => Some(serde_json::to_vec(v).map_err(|e| SerdeError::new(format!("JSON: {e}")))?),
        })
    }
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<Value, SerdeError> {
        match bytes {
            None => Ok(Value::Null),
            Some(b) if self.json => {
                serde_json::from_slice(b).map_err(|e| SerdeError::new(format!("JSON: {e}")))
            }
            Some(b) => Ok(Value::String(String::from_utf8_lossy(b).into_owned())),
        }
    }
    fn is_null(&self, value: &Value) -> bool {
        value.is_null()
    }
    fn to_json(&self, value: &Value) -> Option<Value> {
        Some(value.clone())
    }
}

fn values(json: bool) -> SerdeRef<Value> {
    Arc::new(ValueSerde { json })
}

fn keys() -> SerdeRef<Key> {
    serdes::nullable(serdes::string())
}

fn key_of(d: &Data) -> Key {
    match d.to_json() {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

fn at_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, p| v.get(p))
}

fn group_key(g: &GroupKey, k: &Key, v: &Value) -> Key {
    match g {
        GroupKey::Key => k.clone(),
        GroupKey::Value(path) => match at_path(v, path)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        },
    }
}

fn add(a: &Value, b: &Value) -> Value {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) if x.checked_add(y).is_some() => Value::from(x + y),
        _ => serde_json::Number::from_f64(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0))
            .map(Value::Number)
            .unwrap_or(Value::Null),
    }
}

fn pick(a: Value, b: Value, smaller: bool) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if (y < x) == smaller && x != y => b,
        (None, _) => b,
        _ => a,
    }
}

/// Where a chain's failures go: logged, and kept for `pipeline test`.
type Failures = Arc<Mutex<Vec<String>>>;

fn failed(failures: &Failures, message: String) {
    tracing::warn!("{message}");
    if let Ok(mut f) = failures.lock() {
        f.push(message);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn plugin_bytes(v: &Value) -> Option<Bytes> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(Bytes::from(s.clone().into_bytes())),
        other => Some(Bytes::from(other.to_string().into_bytes())),
    }
}

/// One record through an aggregate plugin, with the state `acc` holds
/// (`{"state": hex or null, "emitted": [values]}`, what the store keeps).
fn plugin_fold(
    plugin: &runnel_plugin_host::Plugin,
    path: &str,
    k: &Key,
    v: &Value,
    acc: Value,
    failures: &Failures,
) -> Value {
    let key = k.as_ref().map(|k| Bytes::from(k.clone().into_bytes()));
    let mut states = HashMap::new();
    if let Some(s) = acc.get("state").and_then(Value::as_str).and_then(unhex) {
        states.insert(key.clone(), Bytes::from(s));
    }
    let input = [runnel_plugin_host::Record {
        offset: 0,
        timestamp: -1,
        key: key.clone(),
        value: plugin_bytes(v),
        headers: Vec::new(),
        source_index: 0,
    }];
    match plugin.aggregate(&input, &mut states) {
        Ok(emitted) => {
            let emitted: Vec<Value> = emitted
                .into_iter()
                .map(|r| match r.value {
                    None => Value::Null,
                    Some(b) => serde_json::from_slice(&b).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(&b).into_owned())
                    }),
                })
                .collect();
            serde_json::json!({
                "state": states.get(&key).map(|s| hex(s)),
                "emitted": emitted,
            })
        }
        Err(e) => {
            failed(
                failures,
                format!("aggregate plugin {path}: record of key {k:?} skipped: {e}"),
            );
            let mut kept = acc;
            if let Value::Object(m) = &mut kept {
                m.insert("emitted".into(), Value::Array(Vec::new()));
            }
            kept
        }
    }
}

fn fold(agg: &Aggregate, k: &Key, v: &Value, acc: Value, failures: &Failures) -> Value {
    match agg {
        Aggregate::Count => Value::from(acc.as_i64().unwrap_or(0) + 1),
        Aggregate::Sum(p) | Aggregate::Min(p) | Aggregate::Max(p) => {
            let Some(n) = at_path(v, p).filter(|n| n.is_number()).cloned() else {
                return acc;
            };
            match (agg, acc.is_null()) {
                (_, true) => n,
                (Aggregate::Sum(_), _) => add(&acc, &n),
                (Aggregate::Min(_), _) => pick(acc, n, true),
                _ => pick(acc, n, false),
            }
        }
        Aggregate::Plugin { plugin, path } => plugin_fold(plugin, path, k, v, acc, failures),
    }
}

fn merge_sessions(agg: &Aggregate, a: Value, b: Value) -> Value {
    match agg {
        Aggregate::Count => Value::from(a.as_i64().unwrap_or(0) + b.as_i64().unwrap_or(0)),
        _ if a.is_null() => b,
        _ if b.is_null() => a,
        Aggregate::Sum(_) => add(&a, &b),
        Aggregate::Min(_) => pick(a, b, true),
        Aggregate::Max(_) => pick(a, b, false),
        // Refused by the checks.
        Aggregate::Plugin { .. } => b,
    }
}

/// An aggregate's output records for one update.
fn outputs(agg: &Aggregate, k: Key, window: Option<Window>, v: Option<Value>) -> Vec<(Key, Value)> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Vec::new();
    };
    let results = match agg {
        Aggregate::Plugin { .. } => match v.get("emitted") {
            Some(Value::Array(e)) => e.clone(),
            _ => Vec::new(),
        },
        _ => vec![v],
    };
    results
        .into_iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert(agg.field().into(), r);
            if let Some(w) = window {
                m.insert("window_start".into(), Value::from(w.start_ms));
                m.insert("window_end".into(), Value::from(w.end_ms));
            }
            (k.clone(), Value::Object(m))
        })
        .collect()
}

fn joined(v: &Value, other: Option<&Value>, field: &str) -> Value {
    let mut m = match v {
        Value::Object(m) => m.clone(),
        other => {
            let mut m = Map::new();
            m.insert("value".into(), other.clone());
            m
        }
    };
    m.insert(field.to_string(), other.cloned().unwrap_or(Value::Null));
    Value::Object(m)
}

impl Plan {
    /// The topology of the pipeline `p` (whose ends are topics).
    pub fn topology(&self, p: &Pipeline, failures: Failures) -> Result<Topology, String> {
        let (Some((source, source_json)), Some((sink, sink_json))) =
            (topic_of(&p.source), topic_of(&p.sink))
        else {
            return Err("a pipeline with stateful steps reads a topic and writes a topic".into());
        };
        let b = StreamsBuilder::new();
        let inner = values(true);
        let mut s: KStream<Key, Value> =
            b.stream(&source, Consumed::with(keys(), values(source_json)));
        // Whether keys may differ from the input's partitioning.
        let mut moved = false;
        let topic: Arc<str> = Arc::from(source.as_str());
        for (i, stage) in self.stages.iter().enumerate() {
            match stage {
                Stage::Stateless(chain) => {
                    let (chain, topic, failures) = (chain.clone(), topic.clone(), failures.clone());
                    s = s.flat_map(move |k: Key, v: Value| {
                        let record = Record {
                            topic: topic.clone(),
                            key: k.map(Data::string).unwrap_or(Data::Null),
                            value: Data::Json(v),
                            headers: Vec::new(),
                            timestamp_ms: None,
                            source_index: 0,
                        };
                        let outcome = chain.apply(vec![record]);
                        for f in outcome.failed {
                            failed(&failures, format!("record skipped: {}", f.error));
                        }
                        outcome
                            .records
                            .into_iter()
                            .map(|r| (key_of(&r.key), r.value.to_json()))
                            .collect::<Vec<_>>()
                    });
                    moved |= chain_moves_keys(stage);
                }
                Stage::Join(j) => {
                    if moved {
                        s = s.repartition(Some(&format!("join-{i}")), keys(), inner.clone());
                        moved = false;
                    }
                    let field = j.field.clone();
                    let consumed = Consumed::with(keys(), values(source_json));
                    if j.table {
                        let table =
                            b.table(&j.topic, consumed, Stored::as_(&format!("join-{i}-table")));
                        s = if j.left {
                            s.left_join_table(
                                &table,
                                keys(),
                                move |v: &Value, t: Option<&Value>| joined(v, t, &field),
                            )
                        } else {
                            s.join_table(&table, keys(), move |v: &Value, t: &Value| {
                                joined(v, Some(t), &field)
                            })
                        };
                    } else {
                        let other = b.stream(&j.topic, consumed);
                        let windows = JoinWindows::of_time_difference_with_grace(j.within, j.grace);
                        let serdes = StreamJoined::with(keys(), inner.clone(), inner.clone())
                            .with_name(&format!("join-{i}"));
                        s = if j.left {
                            s.left_join(
                                &other,
                                move |v: &Value, o: Option<&Value>| joined(v, o, &field),
                                windows,
                                serdes,
                            )
                        } else {
                            s.join(
                                &other,
                                move |v: &Value, o: &Value| joined(v, Some(o), &field),
                                windows,
                                serdes,
                            )
                        };
                    }
                }
                Stage::Group(g) => {
                    if let Some(path) = g.aggregate.number_field() {
                        // Records without the number are not part of it.
                        let (path, failures) = (path.to_vec(), failures.clone());
                        s = s.filter(move |_, v: &Value| {
                            let ok = at_path(v, &path).is_some_and(Value::is_number);
                            if !ok && !v.is_null() {
                                failed(
                                    &failures,
                                    format!(
                                        "record skipped: no number at value.{}",
                                        path.join(".")
                                    ),
                                );
                            }
                            ok
                        });
                    }
                    let gk = g.key.clone();
                    let grouped = s.group_by(
                        move |k: &Key, v: &Value| group_key(&gk, k, v),
                        keys(),
                        inner.clone(),
                    );
                    let stored = Stored::as_(&format!("agg-{i}"));
                    let (a1, f1) = (g.aggregate.clone(), failures.clone());
                    let folder = move |k: &Key, v: Value, acc: Value| fold(&a1, k, &v, acc, &f1);
                    let agg = g.aggregate.clone();
                    s = match g.window {
                        None => grouped
                            .aggregate(|| Value::Null, folder, inner.clone(), stored)
                            .to_stream()
                            .flat_map(move |k, v| outputs(&agg, k, None, v)),
                        Some(Windowing::Session { gap, grace }) => {
                            let a2 = g.aggregate.clone();
                            let mut table = grouped
                                .windowed_by_session(SessionWindows::with_inactivity_gap_and_grace(
                                    gap, grace,
                                ))
                                .aggregate(
                                    || Value::Null,
                                    folder,
                                    move |_, a, b| merge_sessions(&a2, a, b),
                                    inner.clone(),
                                    stored,
                                );
                            if g.emit_final {
                                table = table.suppress_until_window_closes(Stored::as_(&format!(
                                    "suppress-{i}"
                                )));
                            }
                            table
                                .to_stream()
                                .flat_map(move |k, v| outputs(&agg, k.key, Some(k.window), v))
                        }
                        Some(w) => {
                            let windows = match w {
                                Windowing::Tumbling { size, grace } => {
                                    TimeWindows::of_size_with_grace(size, grace)
                                }
                                Windowing::Hopping {
                                    size,
                                    advance,
                                    grace,
                                } => {
                                    TimeWindows::of_size_with_grace(size, grace).advance_by(advance)
                                }
                                Windowing::Session { .. } => unreachable!("matched above"),
                            };
                            let mut table = grouped.windowed_by(windows).aggregate(
                                || Value::Null,
                                folder,
                                inner.clone(),
                                stored,
                            );
                            if g.emit_final {
                                table = table.suppress_until_window_closes(Stored::as_(&format!(
                                    "suppress-{i}"
                                )));
                            }
                            table
                                .to_stream()
                                .flat_map(move |k, v| outputs(&agg, k.key, Some(k.window), v))
                        }
                    };
                    moved = true;
                }
            }
        }
        s.to(&sink, Produced::with(keys(), values(sink_json)));
        b.build().map_err(|e| e.to_string())
    }
}

fn chain_moves_keys(stage: &Stage) -> bool {
    match stage {
        Stage::Stateless(c) => c.steps.iter().any(|s| s.name().starts_with("plugin ")),
        _ => false,
    }
}

/// A topic end's name and whether it holds JSON.
fn topic_of(e: &End) -> Option<(String, bool)> {
    match e {
        End::Topic { name, format, .. } => Some((name.clone(), format == "json")),
        End::Connector { .. } => None,
    }
}

/// A test record's key or value as the topic holds it.
fn record_bytes(d: &Data, json: bool) -> Option<Vec<u8>> {
    match d.to_json() {
        Value::Null => None,
        Value::String(s) if !json => Some(s.into_bytes()),
        v => Some(v.to_string().into_bytes()),
    }
}

impl Pipeline {
    /// The stateful steps, when the pipeline has any.
    pub fn is_stateful(&self) -> bool {
        self.stateful.is_some()
    }

    /// Runs a stateful pipeline's test on a [`TopologyTestDriver`].
    pub(super) fn test_stateful(&self, plan: &Plan) -> Result<Vec<Mismatch>, String> {
        let test = self
            .spec
            .test
            .as_ref()
            .ok_or("the pipeline has no `test` section")?;
        let failures: Failures = Arc::default();
        let topology = plan.topology(self, failures.clone())?;
        let (Some((source, source_json)), Some((sink, sink_json))) =
            (topic_of(&self.source), topic_of(&self.sink))
        else {
            return Err("a pipeline with stateful steps reads a topic and writes a topic".into());
        };
        let inputs: Vec<String> = std::iter::once(source.clone())
            .chain(plan.stages.iter().filter_map(|s| match s {
                Stage::Join(j) => Some(j.topic.clone()),
                _ => None,
            }))
            .collect();
        let mut driver = TopologyTestDriver::new(topology, &application_id(&self.spec.name));
        let mut time = 0;
        for (n, r) in test.input.iter().enumerate() {
            let topic = r.topic.clone().unwrap_or_else(|| source.clone());
            if !inputs.contains(&topic) {
                return Err(format!(
                    "test.input record {n}: the pipeline reads {}, not {topic}",
                    inputs.join(", ")
                ));
            }
            if let Some(ts) = &r.timestamp {
                time = parse_timestamp(ts).map_err(|e| format!("test.input record {n}: {e}"))?;
            }
            let k = record_bytes(&yaml_to_data(&r.key), false);
            let v = record_bytes(&yaml_to_data(&r.value), source_json);
            driver
                .pipe_raw(&topic, k.as_deref(), v.as_deref(), time, &[])
                .map_err(|e| format!("test.input record {n}: {e}"))?;
        }
        let problems = failures.lock().map(|f| f.clone()).unwrap_or_default();
        if !problems.is_empty() {
            return Err(problems.join("\n"));
        }
        let output: Vec<Value> = driver
            .read_raw(&sink)
            .into_iter()
            .map(|o| {
                let key = o
                    .key
                    .map(|k| Value::String(String::from_utf8_lossy(&k).into_owned()))
                    .unwrap_or(Value::Null);
                let value = values(sink_json)
                    .deserialize(o.value.as_deref())
                    .unwrap_or(Value::Null);
                serde_json::json!({"topic": o.topic, "key": key, "value": value, "timestamp": o.timestamp})
            })
            .collect();
        compare(&output, &test.expect)
    }

    /// Starts a stateful pipeline on `bootstrap` (blocks while it creates
    /// its internal topics); `tune` sets what the command line says
    /// (state directory, query server, standbys).
    pub fn start_streams(
        &self,
        bootstrap: &str,
        tune: impl FnOnce(&mut StreamsConfig),
    ) -> Result<KafkaStreams, String> {
        let plan = self
            .stateful
            .as_ref()
            .ok_or("the pipeline has no stateful steps")?;
        let topology = plan.topology(self, Arc::default())?;
        let mut config = StreamsConfig::new(&application_id(&self.spec.name), bootstrap);
        // A run killed without leaving the group hands its partitions on
        // within 10 s (librdkafka's default waits 45 s).
        for (k, v) in [
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
        ] {
            config.client.insert(k.into(), v.into());
        }
        tune(&mut config);
        KafkaStreams::start(topology, config).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Diagnostic};
    use super::*;

    fn check(text: &str) -> Result<Pipeline, Vec<Diagnostic>> {
        let host = runnel_plugin_host::PluginHost::new(Default::default()).unwrap();
        parse("p.yaml", text, Path::new("."), &host)
    }

    fn errors(text: &str) -> Vec<String> {
        match check(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn has(lines: &[String], prefix: &str) {
        assert!(
            lines.iter().any(|l| l.starts_with(prefix)),
            "no line starts with {prefix:?}: {lines:#?}"
        );
    }

    #[test]
    fn stateful_steps_parse_into_stages() {
        let p = check(
            "name: clicks
source: {topic: clicks}
transforms:
  - filter: has(value.user)
  - join: {table: users, type: left, as: profile}
  - group_by: value.user
  - window: {hopping: 5m, advance: 1m, grace: 10s}
  - aggregate: {sum: value.n}
  - emit: final
  - drop: [sum]
sink: {topic: clicks-per-user}
",
        )
        .unwrap();
        let plan = p.stateful.as_ref().unwrap();
        assert_eq!(plan.stages.len(), 4);
        assert!(matches!(&plan.stages[0], Stage::Stateless(c) if c.steps.len() == 1));
        let Stage::Join(j) = &plan.stages[1] else {
            panic!("not a join")
        };
        assert_eq!(
            j,
            &Join {
                topic: "users".into(),
                table: true,
                within: 0,
                grace: 0,
                left: true,
                field: "profile".into(),
            }
        );
        let Stage::Group(g) = &plan.stages[2] else {
            panic!("not a group")
        };
        assert_eq!(g.key, GroupKey::Value(vec!["user".into()]));
        assert_eq!(
            g.window,
            Some(Windowing::Hopping {
                size: 300_000,
                advance: 60_000,
                grace: 10_000
            })
        );
        assert!(matches!(&g.aggregate, Aggregate::Sum(p) if p == &["n".to_string()]));
        assert!(g.emit_final);
        assert!(matches!(&plan.stages[3], Stage::Stateless(_)));
        // A pipeline without stateful steps has no plan.
        let p =
            check("name: p\nsource: {topic: a}\ntransforms:\n  - drop: [x]\nsink: {topic: b}\n")
                .unwrap();
        assert!(!p.is_stateful());
    }

    #[test]
    fn stateful_steps_are_checked_with_file_line_column() {
        let lines = errors(
            "name: p
source:
  topic: in
transforms:
  - group_by: value.
  - window:
      tumbling: 5 minutes
      grace: 1s
  - aggregate: avg
  - window: {tumbling: 1m}
  - aggregate: sum
  - emit: sometimes
sink:
  topic: out
",
        );
        has(
            &lines,
            "p.yaml:5:5: group_by 'value.' is not a field of the value",
        );
        has(
            &lines,
            "p.yaml:7:7: tumbling window size: '5 minutes' is not a duration",
        );
        has(&lines, "p.yaml:9:5: unknown aggregate 'avg'");
        has(&lines, "p.yaml:10:5: window needs a group_by before it");
        has(&lines, "p.yaml:11:5: aggregate sum needs a field");
        has(
            &lines,
            "p.yaml:12:5: emit 'sometimes' is not final or updates",
        );

        let lines = errors(
            "name: p
source: {topic: in}
transforms:
  - aggregate: count
sink: {topic: out}
",
        );
        assert_eq!(lines.len(), 1, "{lines:#?}");
        has(&lines, "p.yaml:4:5: aggregate needs a group_by before it");

        let lines = errors(
            "name: p
source: {topic: in}
transforms:
  - group_by: key
  - filter: value.a > 1
  - aggregate:
      max: amount
  - emit: final
  - group_by: key
sink: {topic: out}
",
        );
        has(
            &lines,
            "p.yaml:5:3: only `window` may come between group_by (transform 1) and its aggregate",
        );
        has(
            &lines,
            "p.yaml:7:7: aggregate max: 'amount' is not a field of the value",
        );
        has(&lines, "p.yaml:9:5: group_by needs an aggregate after it");

        let lines = errors(
            "name: p
source: {topic: in}
transforms:
  - group_by: key
  - aggregate: count
  - emit: final
sink: {topic: out}
",
        );
        has(&lines, "p.yaml:6:5: emit: final needs a window");

        let lines = errors(
            "name: p
source:
  connector: datagen
  config: {quickstart: users}
transforms:
  - group_by: key
  - window: {session: 0s}
  - aggregate: count
  - route: {field: s, topic: \"x-{}\"}
sink:
  connector: file-sink
  config: {file: /tmp/x}
",
        );
        has(
            &lines,
            "p.yaml:2:1: a pipeline with stateful steps (transform 1) must read a topic",
        );
        has(
            &lines,
            "p.yaml:10:1: a pipeline with stateful steps (transform 1) must write a topic",
        );
        has(&lines, "p.yaml:7:5: the window's session must be positive");
        has(
            &lines,
            "p.yaml:9:5: route cannot be used with stateful steps",
        );

        let lines = errors(
            "name: p
source: {topic: in}
transforms:
  - join:
      stream: in
  - join:
      table: users
      within: 5m
sink: {topic: out, format: avro}
",
        );
        has(&lines, "p.yaml:4:5: a stream join needs `within`");
        has(&lines, "p.yaml:8:7: a table join takes no `within`");
        has(&lines, "p.yaml:9:1: a pipeline with stateful steps reads and writes json or string topics, not avro");
    }

    const WINDOWED: &str = r#"name: clicks-per-user
source: {topic: clicks}
transforms:
  - filter: value.kind == "click"
  - group_by: value.user
  - window: {tumbling: 1m, grace: 0s}
  - aggregate: count
  - emit: final
sink: {topic: clicks-per-user}
test:
  input:
    - {value: {user: ann, kind: click}, timestamp: 1000}
    - {value: {user: bob, kind: click}, timestamp: 2000}
    - {value: {user: ann, kind: view}, timestamp: 3000}
    - {value: {user: ann, kind: click}, timestamp: "1970-01-01T00:00:59.999Z"}
    - {value: {user: ann, kind: click}, timestamp: 61000}
    - {value: {user: bob, kind: click}, timestamp: 125000}
  expect:
    - {key: ann, value: {count: 2, window_start: 0, window_end: 60000}}
    - {key: bob, value: {count: 1, window_start: 0, window_end: 60000}}
    - {key: ann, value: {count: 1, window_start: 60000, window_end: 120000}, timestamp: 61000}
"#;

    #[test]
    fn a_windowed_count_is_tested_without_a_broker() {
        let p = check(WINDOWED).unwrap();
        assert_eq!(p.test().unwrap(), vec![]);
        // A wrong expectation is a mismatch.
        let wrong = WINDOWED.replace("count: 2", "count: 3");
        let mismatches = check(&wrong).unwrap().test().unwrap();
        assert_eq!(mismatches.len(), 1, "{mismatches:?}");
        assert_eq!(mismatches[0].index, 0);
        assert_eq!(mismatches[0].actual["value"]["count"], 2);
    }

    #[test]
    fn the_reference_example_validates_and_its_test_passes() {
        let host = runnel_plugin_host::PluginHost::new(Default::default()).unwrap();
        let file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/streams/windowed-count.yaml");
        let p = super::super::load(&file, &host).unwrap();
        assert!(p.is_stateful());
        assert_eq!(p.test().unwrap(), vec![]);
        // The topics its comments name.
        let topology = p.stateful.as_ref().unwrap().topology(&p, Arc::default());
        let mut topics: Vec<String> = topology
            .unwrap()
            .internal_topics(&application_id(&p.spec.name))
            .into_iter()
            .map(|t| t.name)
            .collect();
        topics.sort();
        assert_eq!(
            topics,
            [
                "_runnel_pipeline.clicks-per-minute-agg-1-changelog",
                "_runnel_pipeline.clicks-per-minute-agg-1-repartition",
                "_runnel_pipeline.clicks-per-minute-suppress-1-changelog",
            ]
        );
    }

    #[test]
    fn hopping_windows_and_min_max_are_tested() {
        let p = check(
            "name: p
source: {topic: temps}
transforms:
  - group_by: key
  - window: {hopping: 10s, advance: 5s}
  - aggregate: {max: value.c}
  - emit: final
sink: {topic: peaks}
test:
  input:
    - {key: x, value: {c: 3}, timestamp: 6000}
    - {key: x, value: {c: 7}, timestamp: 8000}
    - {key: x, value: {c: 5}, timestamp: 12000}
    - {key: x, value: {c: 1}, timestamp: 30000}
  expect:
    - {key: x, value: {max: 7, window_start: 0, window_end: 10000}}
    - {key: x, value: {max: 7, window_start: 5000, window_end: 15000}}
    - {key: x, value: {max: 5, window_start: 10000, window_end: 20000}}
",
        )
        .unwrap();
        assert_eq!(p.test().unwrap(), vec![]);
        let p = check(
            "name: p
source: {topic: temps}
transforms:
  - group_by: value.room
  - aggregate: {min: value.c}
sink: {topic: lows, format: string}
test:
  input:
    - {value: {room: a, c: 3.5}}
    - {value: {room: a, c: 7}}
    - {value: {room: a, c: -1}}
  expect:
    - {key: a, value: '{\"min\":3.5}'}
    - {key: a, value: '{\"min\":3.5}'}
    - {key: a, value: '{\"min\":-1}'}
",
        )
        .unwrap();
        assert_eq!(p.test().unwrap(), vec![]);
    }

    #[test]
    fn a_wasm_aggregate_keeps_its_state_in_the_store() {
        let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist/running-count.wasm");
        if !wasm.exists() {
            // Built by plugins/build.sh (the integration tests run it).
            eprintln!("skipped: {} is not built", wasm.display());
            return;
        }
        let text = format!(
            "name: p
source: {{topic: clicks}}
transforms:
  - group_by: value.user
  - window: {{tumbling: 1m}}
  - aggregate: {{plugin: {}}}
sink: {{topic: counts}}
test:
  input:
    - {{value: {{user: a}}, timestamp: 0}}
    - {{value: {{user: a}}, timestamp: 1000}}
    - {{value: {{user: a}}, timestamp: 61000}}
  expect:
    - {{key: a, value: {{value: 1, window_start: 0, window_end: 60000}}}}
    - {{key: a, value: {{value: 2, window_start: 0, window_end: 60000}}}}
    - {{key: a, value: {{value: 1, window_start: 60000, window_end: 120000}}}}
",
            wasm.display()
        );
        let p = check(&text).unwrap();
        assert_eq!(p.test().unwrap(), vec![]);
        // The state is the plugin's 8-byte count, in the store.
        let Some(Stage::Group(g)) = p.stateful.as_ref().unwrap().stages.first() else {
            panic!("not a group")
        };
        let acc = fold(
            &g.aggregate,
            &Some("a".into()),
            &serde_json::json!({}),
            Value::Null,
            &Arc::default(),
        );
        assert_eq!(acc["state"], hex(&1u64.to_le_bytes()));
        let acc = fold(
            &g.aggregate,
            &Some("a".into()),
            &serde_json::json!({}),
            acc,
            &Arc::default(),
        );
        assert_eq!(
            acc,
            serde_json::json!({"state": hex(&2u64.to_le_bytes()), "emitted": [2]})
        );
        // Two sessions' plugin states cannot be merged.
        let lines = errors(&text.replace("tumbling: 1m", "session: 1m"));
        has(
            &lines,
            "p.yaml:6:5: a plugin aggregate cannot run on session windows",
        );
    }

    #[test]
    fn updates_sums_and_sessions_are_tested() {
        let p = check(
            "name: p
source: {topic: orders}
transforms:
  - group_by: key
  - window: {session: 10s}
  - aggregate: {sum: value.amount}
sink: {topic: totals}
test:
  input:
    - {key: a, value: {amount: 5}, timestamp: 0}
    - {key: a, value: {amount: 2.5}, timestamp: 4000}
    - {key: b, value: {note: none}, timestamp: 5000}
  expect:
    - {key: a, value: {sum: 5, window_start: 0, window_end: 0}}
    - {key: a, value: {sum: 7.5, window_start: 0, window_end: 4000}}
    - {key: a, value: {sum: 1, window_start: 20000, window_end: 20000}}
",
        )
        .unwrap();
        // The record without an amount is reported.
        let err = p.test().unwrap_err();
        assert!(err.contains("no number at value.amount"), "{err}");
        let text = p.text.replace(
            "{key: b, value: {note: none}, timestamp: 5000}",
            "{key: a, value: {amount: 1}, timestamp: 20000}",
        );
        assert_eq!(check(&text).unwrap().test().unwrap(), vec![]);
    }

    #[test]
    fn a_table_join_and_a_stream_join_are_tested() {
        let p = check(
            r#"name: enriched
source: {topic: orders}
transforms:
  - join: {table: users, type: left, as: user}
  - rename: {user: customer}
sink: {topic: orders-enriched}
test:
  input:
    - {topic: users, key: u1, value: {name: Ann}, timestamp: 0}
    - {key: u1, value: {amount: 5}, timestamp: 10}
    - {key: u2, value: {amount: 7}, timestamp: 20}
  expect:
    - {key: u1, value: {amount: 5, customer: {name: Ann}}}
    - {key: u2, value: {amount: 7, customer: null}}
"#,
        )
        .unwrap();
        assert_eq!(p.test().unwrap(), vec![]);

        let p = check(
            r#"name: paid
source: {topic: orders}
transforms:
  - join: {stream: payments, within: 5s}
  - group_by: key
  - aggregate: count
sink: {topic: paid-orders}
test:
  input:
    - {key: o1, value: {amount: 5}, timestamp: 0}
    - {topic: payments, key: o1, value: {ok: true}, timestamp: 3000}
    - {topic: payments, key: o2, value: {ok: true}, timestamp: 4000}
    - {topic: payments, key: o1, value: {ok: true}, timestamp: 9000}
  expect:
    - {key: o1, value: {count: 1}}
"#,
        )
        .unwrap();
        assert_eq!(p.test().unwrap(), vec![]);
        // A record for a topic the pipeline does not read.
        let p = check(
            "name: p\nsource: {topic: a}\ntransforms:\n  - group_by: key\n  - aggregate: count\nsink: {topic: b}\ntest:\n  input: [{topic: c, value: 1}]\n  expect: []\n",
        )
        .unwrap();
        assert!(p.test().unwrap_err().contains("reads a, not c"));
    }
}
