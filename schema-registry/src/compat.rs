//! Compatibility levels and the check a new schema must pass against the
//! versions already registered under its subject.
//!
//! The check itself is Avro schema resolution as implemented by
//! `apache-avro` ([`SchemaCompatibility::can_read`]): "can a reader with
//! schema R read data written with schema W?". Its `Partial` verdict
//! (resolution works for some data only, e.g. the writer's enum has a
//! symbol the reader lacks) counts as incompatible, as in Confluent's
//! registry. This module decides which pairs to check and explains a
//! failure in Confluent's verbose message format.
//!
//! | level | checks the new schema against | direction |
//! |---|---|---|
//! | `BACKWARD` | the latest version | new reads old data |
//! | `FORWARD` | the latest version | old reads new data |
//! | `FULL` | the latest version | both |
//! | `*_TRANSITIVE` | every live version | as above |
//! | `NONE` | nothing | |

use std::fmt;

use apache_avro::error::CompatibilityError;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::Schema;
use serde::{Deserialize, Serialize};

use crate::schema::describe;

/// One of Confluent's seven compatibility levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityLevel {
    None,
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl CompatibilityLevel {
    pub const ALL: [CompatibilityLevel; 7] = [
        CompatibilityLevel::None,
        CompatibilityLevel::Backward,
        CompatibilityLevel::BackwardTransitive,
        CompatibilityLevel::Forward,
        CompatibilityLevel::ForwardTransitive,
        CompatibilityLevel::Full,
        CompatibilityLevel::FullTransitive,
    ];

    /// Parses a level name, case-insensitively.
    pub fn parse(s: &str) -> Option<CompatibilityLevel> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s.trim()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityLevel::None => "NONE",
            CompatibilityLevel::Backward => "BACKWARD",
            CompatibilityLevel::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityLevel::Forward => "FORWARD",
            CompatibilityLevel::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityLevel::Full => "FULL",
            CompatibilityLevel::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Whether every earlier version is checked, not only the latest.
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::FullTransitive
        )
    }

    fn backward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Backward
                | CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Forward
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An earlier version the new schema is checked against.
pub struct Previous<'a> {
    pub version: i32,
    pub canonical: &'a str,
    pub schema: &'a Schema,
}

/// Checks `new` against `previous` (the subject's live versions, oldest
/// first) under `level`. Returns no messages when compatible, otherwise
/// Confluent-style messages naming the error, the path and the version.
pub fn check(level: CompatibilityLevel, new: &Schema, previous: &[Previous<'_>]) -> Vec<String> {
    if level == CompatibilityLevel::None || previous.is_empty() {
        return Vec::new();
    }
    let against: &[Previous<'_>] = if level.is_transitive() {
        previous
    } else {
        &previous[previous.len() - 1..]
    };
    let mut messages = Vec::new();
    // Newest first, as Confluent reports them.
    for old in against.iter().rev() {
        let mut problems = Vec::new();
        if level.backward() {
            problems.extend(incompatibilities(old.schema, new));
        }
        if level.forward() {
            problems.extend(incompatibilities(new, old.schema));
        }
        if problems.is_empty() {
            continue;
        }
        messages.extend(problems.iter().map(Incompatibility::message));
        messages.push(format!("{{oldSchemaVersion: {}}}", old.version));
        messages.push(format!("{{oldSchema: '{}'}}", old.canonical));
        messages.push(format!("{{compatibility: '{level}'}}"));
    }
    messages
}

/// One reason a reader cannot read a writer's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// Confluent's error type name, e.g. `READER_FIELD_MISSING_DEFAULT_VALUE`.
    pub kind: &'static str,
    /// Where in the reader schema, e.g. `/fields/1/type`.
    pub path: String,
    pub description: String,
}

impl Incompatibility {
    pub fn message(&self) -> String {
        format!(
            "{{errorType:'{}', description:'{}', additionalInfo:'{}'}}",
            self.kind, self.description, self.path
        )
    }
}

/// Most schema nodes a reference expansion may produce; past it the
/// schema is checked as written.
const MAX_EXPANDED_NODES: usize = 100_000;

/// The schema with every use of a named type replaced by its definition,
/// except uses inside that definition (recursion). `apache-avro`'s checker
/// compares a reference only with a reference of the same name, so a type
/// defined at one place in the old schema and another in the new one (a
/// field using it added before its first use) would look like a type
/// change without this.
fn expand(schema: &Schema) -> std::borrow::Cow<'_, Schema> {
    use apache_avro::schema::{Name, RecordSchema, UnionSchema};
    use std::collections::HashMap;
    fn collect(schema: &Schema, out: &mut HashMap<Name, Schema>) {
        match schema {
            Schema::Record(r) => {
                out.entry(r.name.clone()).or_insert_with(|| schema.clone());
                r.fields.iter().for_each(|f| collect(&f.schema, out));
            }
            Schema::Enum(e) => {
                out.entry(e.name.clone()).or_insert_with(|| schema.clone());
            }
            Schema::Fixed(f) => {
                out.entry(f.name.clone()).or_insert_with(|| schema.clone());
            }
            Schema::Array(a) => collect(&a.items, out),
            Schema::Map(m) => collect(&m.types, out),
            Schema::Union(u) => u.variants().iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    fn walk(
        schema: &Schema,
        defs: &HashMap<Name, Schema>,
        open: &mut Vec<Name>,
        nodes: &mut usize,
    ) -> Option<Schema> {
        *nodes += 1;
        if *nodes > MAX_EXPANDED_NODES || open.len() > crate::schema::MAX_SCHEMA_DEPTH {
            return None;
        }
        Some(match schema {
            Schema::Ref { name } if !open.contains(name) => match defs.get(name) {
                Some(def) => walk(def, defs, open, nodes)?,
                None => schema.clone(),
            },
            Schema::Record(r) => {
                open.push(r.name.clone());
                let mut fields = Vec::with_capacity(r.fields.len());
                for f in &r.fields {
                    let mut f = f.clone();
                    f.schema = walk(&f.schema, defs, open, nodes)?;
                    fields.push(f);
                }
                open.pop();
                Schema::Record(RecordSchema {
                    fields,
                    ..r.clone()
                })
            }
            Schema::Array(a) => {
                let mut a = a.clone();
                a.items = Box::new(walk(&a.items, defs, open, nodes)?);
                Schema::Array(a)
            }
            Schema::Map(m) => {
                let mut m = m.clone();
                m.types = Box::new(walk(&m.types, defs, open, nodes)?);
                Schema::Map(m)
            }
            Schema::Union(u) => {
                let mut variants = Vec::with_capacity(u.variants().len());
                for v in u.variants() {
                    variants.push(walk(v, defs, open, nodes)?);
                }
                Schema::Union(UnionSchema::new(variants).ok()?)
            }
            other => other.clone(),
        })
    }
    let mut defs = HashMap::new();
    collect(schema, &mut defs);
    if defs.is_empty() {
        return std::borrow::Cow::Borrowed(schema);
    }
    match walk(schema, &defs, &mut Vec::new(), &mut 0) {
        Some(expanded) => std::borrow::Cow::Owned(expanded),
        None => std::borrow::Cow::Borrowed(schema),
    }
}

/// Why a reader with schema `reader` cannot read all data written with
/// `writer`; empty when it can.
pub fn incompatibilities(writer: &Schema, reader: &Schema) -> Vec<Incompatibility> {
    let (writer, reader) = (&*expand(writer), &*expand(reader));
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => Vec::new(),
        Ok(Compatibility::Partial) => {
            let mut out = Vec::new();
            explain_partial(writer, reader, String::new(), &mut out, 0);
            if out.is_empty() {
                out.push(Incompatibility {
                    kind: "TYPE_MISMATCH",
                    path: "/".into(),
                    description: format!(
                        "the {} in the new schema can read only some values of the {} in the old schema",
                        describe(reader),
                        describe(writer)
                    ),
                });
            }
            out
        }
        Err(e) => vec![explain_error(&e, writer, reader, String::new())],
    }
}

fn field_index<'a>(schema: &'a Schema, name: &str) -> Option<(usize, &'a Schema)> {
    match schema {
        Schema::Record(r) => r
            .fields
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == name || f.aliases.iter().any(|a| a == name))
            .map(|(i, f)| (i, &f.schema)),
        _ => None,
    }
}

fn writer_field<'a>(writer: &'a Schema, reader: &Schema, name: &str) -> Option<&'a Schema> {
    let Schema::Record(w) = writer else {
        return None;
    };
    let aliases: Vec<&str> = match reader {
        Schema::Record(r) => r
            .fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.aliases.iter().map(String::as_str).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    std::iter::once(name)
        .chain(aliases)
        .find_map(|n| w.fields.iter().find(|f| f.name == n))
        .map(|f| &f.schema)
}

fn path_or_root(path: &str) -> String {
    if path.is_empty() {
        "/".to_string()
    } else {
        path.to_string()
    }
}

fn explain_error(
    e: &CompatibilityError,
    writer: &Schema,
    reader: &Schema,
    path: String,
) -> Incompatibility {
    match e {
        CompatibilityError::FieldTypeMismatch(name, inner) => {
            let (index, reader_field) = match field_index(reader, name) {
                Some((i, s)) => (i.to_string(), Some(s)),
                None => (name.clone(), None),
            };
            let path = format!("{path}/fields/{index}/type");
            match (writer_field(writer, reader, name), reader_field) {
                (Some(w), Some(r)) => explain_error(inner, w, r, path),
                _ => explain_error(inner, writer, reader, path),
            }
        }
        CompatibilityError::MissingDefaultValue(name) => {
            let index = field_index(reader, name)
                .map(|(i, _)| i.to_string())
                .unwrap_or_else(|| name.clone());
            Incompatibility {
                kind: "READER_FIELD_MISSING_DEFAULT_VALUE",
                path: format!("{path}/fields/{index}"),
                description: format!(
                    "The field '{name}' at path '{path}/fields/{index}' in the new schema has no default value and is missing in the old schema"
                ),
            }
        }
        CompatibilityError::NameMismatch {
            writer_name,
            reader_name,
        } => Incompatibility {
            kind: "NAME_MISMATCH",
            path: format!("{}/name", path),
            description: format!(
                "The type name at path '{}' in the new schema ({reader_name}) does not match the type name in the old schema ({writer_name})",
                path_or_root(&path)
            ),
        },
        CompatibilityError::MissingSymbols => Incompatibility {
            kind: "MISSING_ENUM_SYMBOLS",
            path: format!("{path}/symbols"),
            description: format!(
                "The new schema's enum at path '{}' has none of the old schema's symbols",
                path_or_root(&path)
            ),
        },
        CompatibilityError::MissingUnionElements
        | CompatibilityError::SchemaMismatchAllUnionElements => Incompatibility {
            kind: "MISSING_UNION_BRANCH",
            path: path_or_root(&path),
            description: format!(
                "The new schema's {} at path '{}' cannot read any branch of the old schema's {}",
                describe(reader),
                path_or_root(&path),
                describe(writer)
            ),
        },
        CompatibilityError::FixedMismatch => Incompatibility {
            kind: "FIXED_SIZE_MISMATCH",
            path: format!("{path}/size"),
            description: format!(
                "The size of the fixed type at path '{}' differs: new schema {}, old schema {}",
                path_or_root(&path),
                describe(reader),
                describe(writer)
            ),
        },
        CompatibilityError::DecimalMismatch { .. } => Incompatibility {
            kind: "TYPE_MISMATCH",
            path: path_or_root(&path),
            description: format!(
                "The decimal at path '{}' changed precision or scale: new schema {}, old schema {}",
                path_or_root(&path),
                describe(reader),
                describe(writer)
            ),
        },
        CompatibilityError::WrongType { .. }
        | CompatibilityError::TypeExpected { .. }
        | CompatibilityError::Inconclusive(_) => Incompatibility {
            kind: "TYPE_MISMATCH",
            path: path_or_root(&path),
            description: format!(
                "The type (path '{}') of a field in the new schema ({}) does not match with the old schema ({})",
                path_or_root(&path),
                describe(reader),
                describe(writer)
            ),
        },
    }
}

/// Finds what makes a `Partial` verdict partial: writer enum symbols the
/// reader lacks, writer union branches the reader cannot read.
fn explain_partial(
    writer: &Schema,
    reader: &Schema,
    path: String,
    out: &mut Vec<Incompatibility>,
    depth: usize,
) {
    if depth > crate::schema::MAX_SCHEMA_DEPTH {
        return;
    }
    let full = |w: &Schema, r: &Schema| {
        matches!(SchemaCompatibility::can_read(w, r), Ok(Compatibility::Full))
    };
    match (writer, reader) {
        (Schema::Record(_), Schema::Record(r)) => {
            for (i, rf) in r.fields.iter().enumerate() {
                if let Some(wf) = writer_field(writer, reader, &rf.name) {
                    if !full(wf, &rf.schema) {
                        explain_partial(
                            wf,
                            &rf.schema,
                            format!("{path}/fields/{i}/type"),
                            out,
                            depth + 1,
                        );
                    }
                }
            }
        }
        (Schema::Enum(w), Schema::Enum(r)) => {
            let missing: Vec<&str> = w
                .symbols
                .iter()
                .filter(|s| !r.symbols.contains(s))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                out.push(Incompatibility {
                    kind: "MISSING_ENUM_SYMBOLS",
                    path: format!("{path}/symbols"),
                    description: format!(
                        "The new schema is missing enum symbols '[{}]' at path '{}' in the old schema",
                        missing.join(", "),
                        path_or_root(&path)
                    ),
                });
            }
        }
        (Schema::Array(w), Schema::Array(r)) => {
            explain_partial(&w.items, &r.items, format!("{path}/items"), out, depth + 1)
        }
        (Schema::Map(w), Schema::Map(r)) => {
            explain_partial(&w.types, &r.types, format!("{path}/values"), out, depth + 1)
        }
        (Schema::Union(w), _) => {
            let readers: Vec<&Schema> = match reader {
                Schema::Union(r) => r.variants().iter().collect(),
                other => vec![other],
            };
            for (i, branch) in w.variants().iter().enumerate() {
                if readers.iter().any(|r| full(branch, r)) {
                    continue;
                }
                // A branch that some reader branch reads partially is
                // explained inside; one that nothing reads is missing.
                match readers.iter().find(|r| {
                    matches!(
                        SchemaCompatibility::can_read(branch, r),
                        Ok(Compatibility::Partial)
                    )
                }) {
                    Some(r) => explain_partial(branch, r, format!("{path}/{i}"), out, depth + 1),
                    None => out.push(Incompatibility {
                        kind: "MISSING_UNION_BRANCH",
                        path: format!("{path}/{i}"),
                        description: format!(
                            "The new schema is missing a type inside a union field at path '{path}/{i}' in the old schema: {}",
                            describe(branch)
                        ),
                    }),
                }
            }
        }
        (_, Schema::Union(r)) => {
            if let Some(b) = r.variants().iter().find(|b| {
                matches!(
                    SchemaCompatibility::can_read(writer, b),
                    Ok(Compatibility::Partial)
                )
            }) {
                explain_partial(writer, b, path, out, depth + 1);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    //! The table below is Confluent's documented rules ("Schema Evolution
    //! and Compatibility": what each level allows), one row per kind of
    //! change, with the verdict for every level.
    use super::*;
    use crate::schema::parse;

    use CompatibilityLevel as L;

    fn s(text: &str) -> Schema {
        parse(text, &[], false)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .schema
    }

    fn record(fields: &str) -> String {
        format!(r#"{{"type":"record","name":"Order","namespace":"com.acme","fields":[{fields}]}}"#)
    }

    const ID: &str = r#"{"name":"id","type":"string"}"#;

    /// (old, new, [compatible under BACKWARD, FORWARD, FULL]) for a change
    /// from `old` to `new` with one earlier version.
    fn rows() -> Vec<(&'static str, String, String, [bool; 3])> {
        let enum_ab =
            r#"{"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"]}}"#;
        let enum_abc = r#"{"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID","SHIPPED"]}}"#;
        let enum_ab_default = r#"{"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"],"default":"NEW"}}"#;
        let enum_abc_default = r#"{"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID","SHIPPED"],"default":"NEW"}}"#;
        let union2 = r#"{"name":"note","type":["null","string"],"default":null}"#;
        let union3 = r#"{"name":"note","type":["null","string","int"],"default":null}"#;
        vec![
            (
                "add a field with a default",
                record(ID),
                record(&format!(
                    r#"{ID},{{"name":"qty","type":"int","default":1}}"#
                )),
                [true, true, true],
            ),
            (
                "add a field without a default",
                record(ID),
                record(&format!(r#"{ID},{{"name":"qty","type":"int"}}"#)),
                [false, true, false],
            ),
            (
                "remove a field that had a default",
                record(&format!(
                    r#"{ID},{{"name":"qty","type":"int","default":1}}"#
                )),
                record(ID),
                [true, true, true],
            ),
            (
                "remove a field without a default",
                record(&format!(r#"{ID},{{"name":"qty","type":"int"}}"#)),
                record(ID),
                [true, false, false],
            ),
            (
                "promote int to long",
                record(r#"{"name":"qty","type":"int"}"#),
                record(r#"{"name":"qty","type":"long"}"#),
                [true, false, false],
            ),
            (
                "demote long to int",
                record(r#"{"name":"qty","type":"long"}"#),
                record(r#"{"name":"qty","type":"int"}"#),
                [false, true, false],
            ),
            (
                "change string to int",
                record(r#"{"name":"qty","type":"string"}"#),
                record(r#"{"name":"qty","type":"int"}"#),
                [false, false, false],
            ),
            (
                "add an enum symbol",
                record(enum_ab),
                record(enum_abc),
                [true, false, false],
            ),
            (
                "remove an enum symbol",
                record(enum_abc),
                record(enum_ab),
                [false, true, false],
            ),
            (
                "add an enum symbol when the enum has a default",
                record(enum_ab_default),
                record(enum_abc_default),
                [true, true, true],
            ),
            (
                "add a union branch",
                record(union2),
                record(union3),
                [true, false, false],
            ),
            (
                "remove a union branch",
                record(union3),
                record(union2),
                [false, true, false],
            ),
            (
                "rename the record",
                record(ID),
                record(ID).replace("\"Order\"", "\"Invoice\""),
                [false, false, false],
            ),
            (
                "rename a field keeping the old name as an alias",
                record(r#"{"name":"id","type":"string"}"#),
                record(r#"{"name":"order_id","type":"string","aliases":["id"]}"#),
                [true, false, false],
            ),
        ]
    }

    fn verdict(level: L, old: &str, new: &str) -> bool {
        let old_schema = s(old);
        let prev = [Previous {
            version: 1,
            canonical: old,
            schema: &old_schema,
        }];
        check(level, &s(new), &prev).is_empty()
    }

    #[test]
    fn every_level_gives_confluents_verdict_for_every_kind_of_change() {
        let mut failures = Vec::new();
        for (what, old, new, [backward, forward, full]) in rows() {
            let expected = [
                (L::None, true),
                (L::Backward, backward),
                (L::BackwardTransitive, backward),
                (L::Forward, forward),
                (L::ForwardTransitive, forward),
                (L::Full, full),
                (L::FullTransitive, full),
            ];
            for (level, want) in expected {
                let got = verdict(level, &old, &new);
                if got != want {
                    failures.push(format!("{what} under {level}: expected {want}, got {got}"));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn transitive_levels_check_every_version_and_plain_levels_only_the_latest() {
        // v1 has qty without a default, v2 drops it, v3 adds it back with a
        // different type. v3 is backward compatible with v2 (new field with
        // a default), but not with v1 (v1 wrote qty as a string).
        let v1 = record(&format!(r#"{ID},{{"name":"qty","type":"string"}}"#));
        let v2 = record(ID);
        let v3 = record(&format!(
            r#"{ID},{{"name":"qty","type":"int","default":0}}"#
        ));
        let (s1, s2, s3) = (s(&v1), s(&v2), s(&v3));
        let prev = [
            Previous {
                version: 1,
                canonical: &v1,
                schema: &s1,
            },
            Previous {
                version: 2,
                canonical: &v2,
                schema: &s2,
            },
        ];
        assert!(check(L::Backward, &s3, &prev).is_empty());
        let messages = check(L::BackwardTransitive, &s3, &prev);
        assert!(!messages.is_empty());
        assert!(
            messages.iter().any(|m| m == "{oldSchemaVersion: 1}"),
            "{messages:?}"
        );
        assert!(
            !messages.iter().any(|m| m == "{oldSchemaVersion: 2}"),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("TYPE_MISMATCH") && m.contains("/fields/1/type")),
            "{messages:?}"
        );
    }

    #[test]
    fn messages_name_the_error_type_the_field_path_and_the_level() {
        let old = record(ID);
        let new = record(&format!(r#"{ID},{{"name":"qty","type":"int"}}"#));
        let old_schema = s(&old);
        let prev = [Previous {
            version: 3,
            canonical: &old,
            schema: &old_schema,
        }];
        let m = check(L::Backward, &s(&new), &prev);
        assert_eq!(m.len(), 4, "{m:?}");
        assert!(
            m[0].starts_with("{errorType:'READER_FIELD_MISSING_DEFAULT_VALUE'"),
            "{m:?}"
        );
        assert!(
            m[0].contains("'qty'") && m[0].contains("/fields/1"),
            "{m:?}"
        );
        assert_eq!(m[1], "{oldSchemaVersion: 3}");
        assert!(
            m[2].starts_with("{oldSchema: '{\"type\":\"record\""),
            "{m:?}"
        );
        assert_eq!(m[3], "{compatibility: 'BACKWARD'}");

        let enum_abc = record(
            r#"{"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID","SHIPPED"]}}"#,
        );
        let enum_ab = record(
            r#"{"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"]}}"#,
        );
        let problems = incompatibilities(&s(&enum_abc), &s(&enum_ab));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].kind, "MISSING_ENUM_SYMBOLS");
        assert!(problems[0].description.contains("SHIPPED"), "{problems:?}");
        assert_eq!(problems[0].path, "/fields/0/type/symbols");

        let u3 = record(r#"{"name":"note","type":["null","string","int"]}"#);
        let u2 = record(r#"{"name":"note","type":["null","string"]}"#);
        let problems = incompatibilities(&s(&u3), &s(&u2));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].kind, "MISSING_UNION_BRANCH");
        assert_eq!(problems[0].path, "/fields/0/type/2");
    }

    #[test]
    fn a_named_type_used_before_its_old_first_use_is_still_the_same_type() {
        // Old: ship has the Address definition. New: bill, added first,
        // carries the definition and ship refers to it by name.
        let old = r#"{"type":"record","name":"Order","fields":[
            {"name":"ship","type":{"type":"record","name":"Address","fields":[{"name":"city","type":"string"}]}}]}"#;
        let new = r#"{"type":"record","name":"Order","fields":[
            {"name":"bill","type":["null",{"type":"record","name":"Address","fields":[{"name":"city","type":"string"}]}],"default":null},
            {"name":"ship","type":"Address"}]}"#;
        for level in [L::Backward, L::Forward, L::Full] {
            assert!(verdict(level, old, new), "{level}");
        }
        // A recursive type still checks (and terminates).
        let list = r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","Node"],"default":null}]}"#;
        let list2 = r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"long"},{"name":"next","type":["null","Node"],"default":null}]}"#;
        assert!(verdict(L::Backward, list, list2));
        assert!(!verdict(L::Forward, list, list2));
    }

    #[test]
    fn level_names_parse_case_insensitively() {
        assert_eq!(
            CompatibilityLevel::parse("full_transitive"),
            Some(L::FullTransitive)
        );
        assert_eq!(CompatibilityLevel::parse("NONE"), Some(L::None));
        assert_eq!(CompatibilityLevel::parse("sideways"), None);
        assert_eq!(
            serde_json::to_string(&L::BackwardTransitive).unwrap(),
            "\"BACKWARD_TRANSITIVE\""
        );
    }
}
