//! A pipeline's field names checked against the schema of its source
//! topic's values, before anything runs: a filter on `value.amout` when
//! the schema has `amount`, or a `drop: [emial]`, is reported with the
//! file, line and column of the name and the field it most likely means.
//!
//! The check follows the value through the chain: `rename` moves a field,
//! `drop` removes it, `mask` turns it into a string, and after a WASM
//! plugin nothing is known any more (so nothing is checked).

use std::collections::BTreeMap;

use apache_avro::Schema;
use runnel_schema_registry::client::Compiled;

use super::spec::{key, locate, Step};
use super::transform::{Filter, Root};
use super::{Diagnostic, Pipeline, Severity};
use crate::config::near_miss;

/// What a value looks like, as far as a schema says.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Not known: anything goes (a map, a union of several kinds, what a
    /// plugin returns).
    Any,
    /// An object with these fields.
    Object(BTreeMap<String, Shape>),
    /// A value without fields, by its type's name.
    Scalar(&'static str),
}

/// Nesting followed at most (recursive schemas end as `Any`).
const MAX_DEPTH: usize = 32;

impl Shape {
    /// The JSON shape of values of an Avro schema, as the Avro converter
    /// reads them: records are objects, a union of null and one other
    /// type is that type.
    pub fn from_avro(schema: &Compiled) -> Shape {
        avro_shape(schema, &schema.schema, 0)
    }
}

fn avro_shape(c: &Compiled, schema: &Schema, depth: usize) -> Shape {
    if depth > MAX_DEPTH {
        return Shape::Any;
    }
    let Ok(schema) = c.resolve(schema) else {
        return Shape::Any;
    };
    match schema {
        Schema::Record(r) => Shape::Object(
            r.fields
                .iter()
                .map(|f| (f.name.clone(), avro_shape(c, &f.schema, depth + 1)))
                .collect(),
        ),
        Schema::Union(u) => {
            let other: Vec<&Schema> = u
                .variants()
                .iter()
                .filter(|v| !matches!(v, Schema::Null))
                .collect();
            match other.as_slice() {
                [one] => avro_shape(c, one, depth + 1),
                _ => Shape::Any,
            }
        }
        Schema::Map(_) | Schema::Duration(_) | Schema::Ref { .. } => Shape::Any,
        Schema::Null => Shape::Scalar("null"),
        Schema::Boolean => Shape::Scalar("boolean"),
        Schema::Int | Schema::Date | Schema::TimeMillis => Shape::Scalar("int"),
        Schema::Float | Schema::Double => Shape::Scalar("number"),
        Schema::Array(_) => Shape::Scalar("array"),
        Schema::Enum(_) => Shape::Scalar("enum"),
        Schema::Bytes | Schema::Fixed(_) => Shape::Scalar("bytes"),
        Schema::String | Schema::Uuid(_) => Shape::Scalar("string"),
        Schema::Decimal(_) | Schema::BigDecimal => Shape::Scalar("decimal"),
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Shape::Scalar("long"),
    }
}

/// Why a path is not in a shape: a message and a hint.
struct Miss {
    message: String,
    hint: String,
}

/// `None` when `value.<path>` is there (or cannot be known).
fn missing(shape: &Shape, path: &[String]) -> Option<Miss> {
    let mut at = shape;
    for (depth, part) in path.iter().enumerate() {
        let here = std::iter::once("value")
            .chain(path[..depth].iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(".");
        match at {
            Shape::Any => return None,
            Shape::Scalar(kind) => {
                return Some(Miss {
                    message: format!("{here} is a {kind} in the schema: it has no field {part}"),
                    hint: format!("the schema's {here} has no fields"),
                })
            }
            Shape::Object(fields) => match fields.get(part) {
                Some(next) => at = next,
                None => {
                    let hint = match near_miss(part, fields.keys().map(String::as_str)) {
                        Some(near) => format!("did you mean {here}.{near}?"),
                        None => format!(
                            "the fields of {here} are {}",
                            fields.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    };
                    return Some(Miss {
                        message: format!("the schema has no field {here}.{part}"),
                        hint,
                    });
                }
            },
        }
    }
    None
}

/// Where `name` is written on the line a path leads to: the position of
/// the name itself when it is on that line, else the path's.
fn locate_name(text: &str, path: &[Step], name: &str) -> (usize, usize) {
    let (line, column) = locate(text, path);
    let Some(content) = text.lines().nth(line.saturating_sub(1)) else {
        return (line, column);
    };
    let part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    let mut from = column.saturating_sub(1).min(content.len());
    while let Some(found) = content.get(from..).and_then(|rest| rest.find(name)) {
        let at = from + found;
        let before = content[..at].chars().next_back();
        let after = content[at + name.len()..].chars().next();
        if !before.is_some_and(part) && !after.is_some_and(part) {
            return (line, content[..at].chars().count() + 1);
        }
        from = at + name.len();
    }
    (line, column)
}

impl Pipeline {
    /// The names the transforms use, checked against `value`: the shape
    /// of the source topic's values (from its registered schema).
    pub fn check_fields(&self, value: &Shape) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        let mut problem = |path: &[Step], name: &str, miss: Miss| {
            let (line, column) = locate_name(&self.text, path, name);
            out.push(Diagnostic {
                file: self.file.clone(),
                line,
                column,
                message: miss.message,
                hint: Some(miss.hint),
                severity: Severity::Error,
            });
        };
        let mut shape = value.clone();
        for (i, t) in self.spec.transforms.iter().enumerate() {
            // Stateful steps change the records' shape (checked no further).
            if shape == Shape::Any || t.is_stateful() {
                break;
            }
            let here = |k: &str| vec![key("transforms"), Step::Index(i), key(k)];
            let top = |f: &str| vec![f.to_string()];
            if let Some(expression) = &t.filter {
                let Ok(filter) = Filter::new(expression) else {
                    continue;
                };
                for field in filter.reads().iter().chain(filter.tests()) {
                    if field.root != Root::Value {
                        continue;
                    }
                    if let Some(miss) = missing(&shape, &field.path) {
                        problem(&here("filter"), &field.text, miss);
                    }
                }
            } else if let Some(map) = &t.rename {
                for (from, to) in map {
                    match missing(&shape, &top(from)) {
                        Some(miss) => problem(&here("rename"), from, miss),
                        None => {
                            if let Shape::Object(fields) = &mut shape {
                                if let Some(s) = fields.remove(from) {
                                    fields.insert(to.clone(), s);
                                }
                            }
                        }
                    }
                }
            } else if let Some(names) = t.drop.as_ref().or(t.mask.as_ref()) {
                let which = if t.drop.is_some() { "drop" } else { "mask" };
                for name in names {
                    match missing(&shape, &top(name)) {
                        Some(miss) => problem(&here(which), name, miss),
                        None => {
                            if let Shape::Object(fields) = &mut shape {
                                if which == "drop" {
                                    fields.remove(name);
                                } else if let Some(f) = fields.get_mut(name) {
                                    *f = Shape::Scalar("string");
                                }
                            }
                        }
                    }
                }
            } else if let Some(route) = &t.route {
                let path: Vec<String> = route.field.split('.').map(str::to_string).collect();
                if let Some(miss) = missing(&shape, &path) {
                    problem(&here("route"), &route.field, miss);
                }
            } else if t.plugin.is_some() {
                shape = Shape::Any;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn order_schema() -> Shape {
        let schema = Schema::parse_str(
            r#"{"type": "record", "name": "Order", "fields": [
                {"name": "id", "type": "long"},
                {"name": "amount", "type": "long"},
                {"name": "status", "type": "string"},
                {"name": "card", "type": ["null", "string"], "default": null},
                {"name": "customer", "type": {"type": "record", "name": "Customer", "fields": [
                    {"name": "country", "type": "string"}]}},
                {"name": "tags", "type": {"type": "map", "values": "string"}}
            ]}"#,
        )
        .unwrap();
        Shape::from_avro(&Compiled::new(schema))
    }

    fn check(text: &str) -> Vec<String> {
        let host = runnel_plugin_host::PluginHost::new(Default::default()).unwrap();
        let p = super::super::parse("p.yaml", text, Path::new("."), &host).unwrap();
        p.check_fields(&order_schema())
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn names_the_schema_lacks_are_reported_where_they_are_written() {
        let problems = check(
            "name: p
source:
  topic: orders
transforms:
  - filter: value.amout >= 100 && has(value.customer.contry)
  - rename: {stauts: state}
  - drop: [card, emial]
sink:
  topic: out
",
        );
        assert_eq!(
            problems,
            vec![
                "p.yaml:5:13: the schema has no field value.amout\n  hint: did you mean value.amount?",
                "p.yaml:5:39: the schema has no field value.customer.contry\n  hint: did you mean value.customer.country?",
                "p.yaml:6:14: the schema has no field value.stauts\n  hint: did you mean value.status?",
                "p.yaml:7:18: the schema has no field value.emial\n  hint: the fields of value are amount, customer, id, status, tags",
            ]
        );
    }

    #[test]
    fn the_check_follows_the_value_through_the_chain() {
        // Renamed, masked and map fields are fine; a dropped one is gone,
        // and a scalar has no fields.
        let problems = check(
            "name: p
source:
  topic: orders
transforms:
  - rename: {amount: amount_eur}
  - mask: [card]
  - filter: value.amount_eur > 1 && value.tags.anything == \"x\" && value.card == \"****\"
  - drop: [status]
  - filter: value.status == \"PAID\" || value.id.x == 1
sink:
  topic: out
",
        );
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("p.yaml:9:13: the schema has no field value.status"));
        assert!(
            problems[1]
                .starts_with("p.yaml:9:39: value.id is a long in the schema: it has no field x"),
            "{}",
            problems[1]
        );
        // After a plugin nothing is known.
        let host = runnel_plugin_host::PluginHost::new(Default::default()).unwrap();
        let mut p = super::super::parse(
            "p.yaml",
            "name: p\nsource: {topic: a}\nsink: {topic: b}\ntransforms:\n  - filter: value.nope == 1\n",
            Path::new("."),
            &host,
        )
        .unwrap();
        assert_eq!(p.check_fields(&order_schema()).len(), 1);
        assert!(p.check_fields(&Shape::Any).is_empty());
        p.spec.transforms[0].filter = None;
        p.spec.transforms[0].plugin = Some("x.wasm".into());
        assert!(p.check_fields(&order_schema()).is_empty());
    }
}
