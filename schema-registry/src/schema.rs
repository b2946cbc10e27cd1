//! Avro schemas as the registry sees them: parsing with references, the
//! canonical text that identifies a schema, and its normalised form.
//!
//! A schema is identified by its **canonical text** plus its references,
//! never by the Avro "Parsing Canonical Form" fingerprint: that form drops
//! defaults, docs, aliases and custom properties, and two schemas that
//! differ in a default are different schemas to their readers.
//!
//! The canonical text is the client's JSON with insignificant whitespace
//! removed, the keys of every schema object in a fixed order (the order
//! Avro's Java `Schema.toString()` uses, which is what Confluent returns),
//! other properties sorted by name, and `{"type":"int"}` written as
//! `"int"`. With `normalize=true` names are also fully qualified and
//! `namespace` keys dropped, so two spellings of the same schema compare
//! equal.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use apache_avro::schema::{Name, RecordSchema, UnionSchema};
use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest schema text accepted (the REST body limit is a little larger).
pub const MAX_SCHEMA_BYTES: usize = 1 << 20;
/// Deepest nesting of JSON accepted in a schema, so that hostile input
/// cannot overflow the stack of the recursive parsers.
pub const MAX_SCHEMA_DEPTH: usize = 64;
/// Most references one schema may name, directly or transitively.
pub const MAX_REFERENCES: usize = 1000;
/// Most branches of one union. Compatibility checks compare unions branch
/// by branch (quadratic), so this bounds what one request can cost; real
/// schemas have a handful.
pub const MAX_UNION_BRANCHES: usize = 256;

const PRIMITIVES: &[&str] = &[
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// Key order of a schema object; other keys follow, sorted.
const SCHEMA_KEYS: &[&str] = &[
    "type",
    "name",
    "namespace",
    "doc",
    "fields",
    "symbols",
    "items",
    "values",
    "size",
    "default",
    "aliases",
    "logicalType",
    "precision",
    "scale",
];
/// Key order of a record field object; other keys follow, sorted.
const FIELD_KEYS: &[&str] = &["name", "type", "doc", "default", "order", "aliases"];

/// The schema formats the registry knows. Only Avro is supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum SchemaType {
    #[default]
    #[serde(rename = "AVRO")]
    Avro,
}

impl SchemaType {
    pub fn parse(s: &str) -> Option<SchemaType> {
        match s.to_ascii_uppercase().as_str() {
            "AVRO" => Some(SchemaType::Avro),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
        }
    }

    pub fn is_avro(&self) -> bool {
        *self == SchemaType::Avro
    }
}

/// A named reference from one schema to a version of another subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SchemaReference {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

/// A schema parsed and resolved: its canonical text and the Avro schema
/// with every reference inlined, so it stands alone.
#[derive(Debug, Clone)]
pub struct ParsedSchema {
    pub canonical: String,
    pub schema: Schema,
}

impl ParsedSchema {
    /// The record, enum or fixed full name of the top-level schema (what
    /// `RecordNameStrategy` names a subject after).
    pub fn full_name(&self) -> Option<String> {
        self.schema.name().map(|n| n.fullname(None))
    }
}

/// Parses a schema whose references resolved to `dependencies` (the texts
/// of every referenced schema, transitively, each once). `normalize`
/// chooses the normalised canonical text.
pub fn parse(text: &str, dependencies: &[String], normalize: bool) -> Result<ParsedSchema, String> {
    if text.len() > MAX_SCHEMA_BYTES {
        return Err(format!(
            "schema of {} bytes exceeds the limit of {MAX_SCHEMA_BYTES} bytes",
            text.len()
        ));
    }
    let json = parse_json(text)?;
    let canonical = canonical_text(&json, normalize)?;
    for dep in dependencies {
        parse_json(dep).map_err(|e| format!("referenced schema: {e}"))?;
    }
    let (schema, defined) = if dependencies.is_empty() {
        let schema = Schema::parse(&json).map_err(|e| e.to_string())?;
        (schema, Vec::new())
    } else {
        Schema::parse_str_with_list(text, dependencies.iter().map(String::as_str))
            .map_err(|e| e.to_string())?
    };
    check_unions(&schema, 0)?;
    let schema = if defined.is_empty() {
        schema
    } else {
        let mut named = HashMap::new();
        for s in &defined {
            collect_named(s, &mut named);
        }
        inline_references(&schema, &named, &mut HashSet::new(), 0)?
    };
    Ok(ParsedSchema { canonical, schema })
}

/// Refuses unions wider than [`MAX_UNION_BRANCHES`].
fn check_unions(schema: &Schema, depth: usize) -> Result<(), String> {
    if depth > MAX_SCHEMA_DEPTH {
        return Ok(());
    }
    match schema {
        Schema::Union(u) => {
            if u.variants().len() > MAX_UNION_BRANCHES {
                return Err(format!(
                    "a union has {} branches; at most {MAX_UNION_BRANCHES} are allowed",
                    u.variants().len()
                ));
            }
            u.variants()
                .iter()
                .try_for_each(|v| check_unions(v, depth + 1))
        }
        Schema::Record(r) => r
            .fields
            .iter()
            .try_for_each(|f| check_unions(&f.schema, depth + 1)),
        Schema::Array(a) => check_unions(&a.items, depth + 1),
        Schema::Map(m) => check_unions(&m.types, depth + 1),
        _ => Ok(()),
    }
}

/// Parses JSON text with a nesting limit.
pub fn parse_json(text: &str) -> Result<Value, String> {
    check_depth(text)?;
    serde_json::from_str::<Value>(text).map_err(|e| format!("invalid JSON: {e}"))
}

/// Rejects JSON nested deeper than [`MAX_SCHEMA_DEPTH`] before a recursive
/// parser sees it.
fn check_depth(text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_SCHEMA_DEPTH {
                    return Err(format!(
                        "schema is nested deeper than {MAX_SCHEMA_DEPTH} levels"
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The canonical text of a parsed schema JSON (see the module docs).
pub fn canonical_text(json: &Value, normalize: bool) -> Result<String, String> {
    let mut out = String::new();
    write_schema(json, &mut out, None, normalize);
    Ok(out)
}

/// The normalised canonical text of an already canonical schema text.
pub fn normalized_text(canonical: &str) -> Result<String, String> {
    canonical_text(&parse_json(canonical)?, true)
}

fn is_primitive(s: &str) -> bool {
    PRIMITIVES.contains(&s)
}

fn qualify(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        _ if name.contains('.') || is_primitive(name) => name.trim_start_matches('.').to_string(),
        Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

fn write_json(value: &Value, out: &mut String) {
    // Serialising a `Value` to a string cannot fail.
    out.push_str(&serde_json::to_string(value).unwrap_or_default());
}

fn write_str(s: &str, out: &mut String) {
    write_json(&Value::String(s.to_string()), out);
}

/// Writes one schema. `namespace` is the enclosing namespace (used only
/// when normalising).
fn write_schema(value: &Value, out: &mut String, namespace: Option<&str>, normalize: bool) {
    match value {
        Value::String(name) if normalize => write_str(&qualify(name, namespace), out),
        Value::Array(branches) => {
            out.push('[');
            for (i, b) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_schema(b, out, namespace, normalize);
            }
            out.push(']');
        }
        Value::Object(map) => {
            if map.len() == 1 {
                if let Some(Value::String(t)) = map.get("type") {
                    if is_primitive(t) {
                        write_str(t, out);
                        return;
                    }
                }
            }
            let kind = map.get("type").and_then(Value::as_str).unwrap_or("");
            let named = matches!(kind, "record" | "error" | "enum" | "fixed");
            // The namespace of this type, which is also the enclosing
            // namespace of the types nested in it.
            let mut own_ns = namespace.map(str::to_string);
            let mut full_name = None;
            if named {
                if let Some(Value::String(name)) = map.get("name") {
                    let explicit = map.get("namespace").and_then(Value::as_str);
                    let full = match name.rsplit_once('.') {
                        Some(_) => name.trim_start_matches('.').to_string(),
                        None => qualify(name, explicit.or(namespace)),
                    };
                    own_ns = full.rsplit_once('.').map(|(ns, _)| ns.to_string());
                    full_name = Some(full);
                }
            }
            out.push('{');
            let mut first = true;
            let mut key = |k: &str, out: &mut String| {
                if !first {
                    out.push(',');
                }
                first = false;
                write_str(k, out);
                out.push(':');
            };
            let ordered = SCHEMA_KEYS
                .iter()
                .filter_map(|k| map.get_key_value(*k))
                .chain(
                    map.iter()
                        .filter(|(k, _)| !SCHEMA_KEYS.contains(&k.as_str())),
                );
            for (k, v) in ordered {
                match k.as_str() {
                    "namespace" if normalize && named => continue,
                    "name" if normalize && named => {
                        key(k, out);
                        write_str(full_name.as_deref().unwrap_or_default(), out);
                    }
                    "type" if !v.is_string() => {
                        key(k, out);
                        write_schema(v, out, own_ns.as_deref(), normalize);
                    }
                    "items" | "values" => {
                        key(k, out);
                        write_schema(v, out, own_ns.as_deref(), normalize);
                    }
                    "fields" if kind == "record" || kind == "error" => {
                        key(k, out);
                        write_fields(v, out, own_ns.as_deref(), normalize);
                    }
                    "aliases" if normalize && named => {
                        key(k, out);
                        let mut aliases: Vec<String> = v
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(Value::as_str)
                                    .map(|s| qualify(s, own_ns.as_deref()))
                                    .collect()
                            })
                            .unwrap_or_default();
                        aliases.sort();
                        write_json(&Value::from(aliases), out);
                    }
                    _ => {
                        key(k, out);
                        write_json(v, out);
                    }
                }
            }
            out.push('}');
        }
        other => write_json(other, out),
    }
}

fn write_fields(fields: &Value, out: &mut String, namespace: Option<&str>, normalize: bool) {
    let Some(fields) = fields.as_array() else {
        write_json(fields, out);
        return;
    };
    out.push('[');
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let Some(map) = field.as_object() else {
            write_json(field, out);
            continue;
        };
        out.push('{');
        let ordered = FIELD_KEYS
            .iter()
            .filter_map(|k| map.get_key_value(*k))
            .chain(
                map.iter()
                    .filter(|(k, _)| !FIELD_KEYS.contains(&k.as_str())),
            );
        for (j, (k, v)) in ordered.enumerate() {
            if j > 0 {
                out.push(',');
            }
            write_str(k, out);
            out.push(':');
            if k == "type" {
                write_schema(v, out, namespace, normalize);
            } else {
                write_json(v, out);
            }
        }
        out.push('}');
    }
    out.push(']');
}

/// Every named type defined in `schema`, by full name.
fn collect_named(schema: &Schema, out: &mut HashMap<Name, Schema>) {
    match schema {
        Schema::Record(r) => {
            out.entry(r.name.clone()).or_insert_with(|| schema.clone());
            for f in &r.fields {
                collect_named(&f.schema, out);
            }
        }
        Schema::Enum(e) => {
            out.entry(e.name.clone()).or_insert_with(|| schema.clone());
        }
        Schema::Fixed(f) => {
            out.entry(f.name.clone()).or_insert_with(|| schema.clone());
        }
        Schema::Array(a) => collect_named(&a.items, out),
        Schema::Map(m) => collect_named(&m.types, out),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_named(v, out)),
        _ => {}
    }
}

/// Replaces the first use of each referenced type with its definition, so
/// that compatibility checks and validators see the referenced schema's
/// fields rather than a bare name. Later uses stay references, as in a
/// self-contained schema.
fn inline_references(
    schema: &Schema,
    named: &HashMap<Name, Schema>,
    defined: &mut HashSet<Name>,
    depth: usize,
) -> Result<Schema, String> {
    if depth > MAX_SCHEMA_DEPTH {
        return Err(format!(
            "schema is nested deeper than {MAX_SCHEMA_DEPTH} levels"
        ));
    }
    let recurse = |s: &Schema, defined: &mut HashSet<Name>| -> Result<Schema, String> {
        inline_references(s, named, defined, depth + 1)
    };
    Ok(match schema {
        Schema::Ref { name } => {
            if defined.contains(name) {
                schema.clone()
            } else if let Some(def) = named.get(name) {
                defined.insert(name.clone());
                recurse(def, defined)?
            } else {
                schema.clone()
            }
        }
        Schema::Record(r) => {
            defined.insert(r.name.clone());
            let mut fields = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                let mut f = f.clone();
                f.schema = recurse(&f.schema, defined)?;
                fields.push(f);
            }
            Schema::Record(RecordSchema {
                fields,
                ..r.clone()
            })
        }
        Schema::Enum(e) => {
            defined.insert(e.name.clone());
            schema.clone()
        }
        Schema::Fixed(f) => {
            defined.insert(f.name.clone());
            schema.clone()
        }
        Schema::Array(a) => {
            let mut a = a.clone();
            a.items = Box::new(recurse(&a.items, defined)?);
            Schema::Array(a)
        }
        Schema::Map(m) => {
            let mut m = m.clone();
            m.types = Box::new(recurse(&m.types, defined)?);
            Schema::Map(m)
        }
        Schema::Union(u) => {
            let mut variants = Vec::with_capacity(u.variants().len());
            for v in u.variants() {
                variants.push(recurse(v, defined)?);
            }
            Schema::Union(UnionSchema::new(variants).map_err(|e| e.to_string())?)
        }
        other => other.clone(),
    })
}

/// A short name of a schema's kind for messages ("record Order", "int").
pub fn describe(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => format!("record {}", r.name.fullname(None)),
        Schema::Enum(e) => format!("enum {}", e.name.fullname(None)),
        Schema::Fixed(f) => format!("fixed {} (size {})", f.name.fullname(None), f.size),
        Schema::Ref { name } => name.fullname(None),
        Schema::Array(a) => format!("array of {}", describe(&a.items)),
        Schema::Map(m) => format!("map of {}", describe(&m.types)),
        Schema::Union(u) => {
            let mut s = String::from("union [");
            for (i, v) in u.variants().iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                let _ = write!(s, "{}", describe(v));
            }
            s.push(']');
            s
        }
        Schema::Decimal(d) => format!("decimal({}, {})", d.precision, d.scale),
        other => {
            let kind = apache_avro::schema::SchemaKind::from(other);
            format!("{kind:?}").to_ascii_lowercase()
        }
    }
}

/// Custom properties of a JSON schema object, for messages and tests.
pub fn properties(json: &Value) -> BTreeMap<String, Value> {
    json.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !SCHEMA_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        parse(text, &[], false).unwrap().canonical
    }

    #[test]
    fn canonical_text_removes_whitespace_and_orders_keys_like_avro_java() {
        let text = r#"{
            "fields": [ {"type": "int", "name": "a", "default": 1, "doc": "A"} ],
            "namespace": "com.acme",
            "name": "Order",
            "type": "record",
            "connect.name": "x"
        }"#;
        assert_eq!(
            canon(text),
            r#"{"type":"record","name":"Order","namespace":"com.acme","fields":[{"name":"a","type":"int","doc":"A","default":1}],"connect.name":"x"}"#
        );
    }

    #[test]
    fn a_primitive_written_as_an_object_is_the_primitive() {
        assert_eq!(canon(r#"{"type": "string"}"#), r#""string""#);
        assert_eq!(canon(r#""string""#), r#""string""#);
        assert_eq!(
            canon(r#"{"type": "long", "logicalType": "timestamp-millis"}"#),
            r#"{"type":"long","logicalType":"timestamp-millis"}"#
        );
    }

    #[test]
    fn defaults_docs_and_properties_are_part_of_the_identity() {
        let a = canon(
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":"int","default":1}]}"#,
        );
        let b = canon(
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":"int","default":2}]}"#,
        );
        assert_ne!(a, b);
        // Avro's parsing canonical form would call them equal.
        let pa = Schema::parse_str(&a).unwrap();
        let pb = Schema::parse_str(&b).unwrap();
        assert_eq!(pa.canonical_form(), pb.canonical_form());
    }

    #[test]
    fn normalizing_qualifies_names_and_drops_namespaces() {
        let a = r#"{"type":"record","name":"Order","namespace":"com.acme","fields":[
            {"name":"item","type":{"type":"record","name":"Item","fields":[{"name":"n","type":"int"}]}},
            {"name":"again","type":"Item"}]}"#;
        let b = r#"{"type":"record","name":"com.acme.Order","fields":[
            {"name":"item","type":{"type":"record","name":"com.acme.Item","fields":[{"name":"n","type":"int"}]}},
            {"name":"again","type":"com.acme.Item"}]}"#;
        assert_ne!(canon(a), canon(b));
        let na = parse(a, &[], true).unwrap().canonical;
        let nb = parse(b, &[], true).unwrap().canonical;
        assert_eq!(na, nb);
        assert!(na.contains(r#""name":"com.acme.Item""#), "{na}");
        assert!(!na.contains("namespace"), "{na}");
        assert_eq!(normalized_text(&canon(a)).unwrap(), na);
    }

    #[test]
    fn invalid_schemas_are_rejected_with_a_reason() {
        for bad in [
            "not json",
            r#"{"type":"record","name":"R"}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":"nope"}]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":"int","default":"x"}]}"#,
            r#"{"type":"enum","name":"E","symbols":["A","A"]}"#,
        ] {
            assert!(parse(bad, &[], false).is_err(), "{bad} was accepted");
        }
        let deep = format!("{}\"int\"{}", "[".repeat(100), "]".repeat(100));
        assert!(parse(&deep, &[], false).unwrap_err().contains("nested"));
        let wide: Vec<String> = (0..300)
            .map(|i| format!(r#"{{"type":"fixed","name":"F{i}","size":1}}"#))
            .collect();
        let wide = format!("[{}]", wide.join(","));
        assert!(parse(&wide, &[], false).unwrap_err().contains("branches"));
    }

    #[test]
    fn references_are_inlined_so_the_schema_stands_alone() {
        let address = r#"{"type":"record","name":"Address","namespace":"com.acme","fields":[{"name":"city","type":"string"}]}"#;
        let order = r#"{"type":"record","name":"Order","namespace":"com.acme","fields":[
            {"name":"ship_to","type":"com.acme.Address"},{"name":"bill_to","type":"com.acme.Address"}]}"#;
        assert!(parse(order, &[], false).is_err());
        let parsed = parse(order, &[address.to_string()], false).unwrap();
        let Schema::Record(r) = &parsed.schema else {
            panic!("not a record")
        };
        assert!(matches!(r.fields[0].schema, Schema::Record(_)));
        assert!(matches!(r.fields[1].schema, Schema::Ref { .. }));
        assert_eq!(parsed.full_name().as_deref(), Some("com.acme.Order"));
    }
}
