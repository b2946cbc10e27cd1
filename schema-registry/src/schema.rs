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
    let json = parse_schema_json(text)?;
    parse_value(text, &json, dependencies, normalize)
}

/// Parses a schema offered to the registry (to register, look up or
/// check): [`parse`], then the rules Avro Java (1.11, what Confluent's
/// registry runs) enforces when it parses a schema and apache-avro does
/// not, so that every client can read what the registry hands out:
/// names, namespaces and aliases of the right shape ([`check_names`]) and
/// every default valid for its schema ([`check_defaults`]). Stored
/// schemas are read with [`parse`] alone, so one registered before these
/// checks stays readable.
pub fn parse_strict(
    text: &str,
    dependencies: &[String],
    normalize: bool,
) -> Result<ParsedSchema, String> {
    let json = parse_schema_json(text)?;
    check_names(&json)?;
    let parsed = parse_value(text, &json, dependencies, normalize)?;
    let mut named = HashMap::new();
    collect_named(&parsed.schema, &mut named);
    for dep in dependencies {
        if let Ok(schema) = Schema::parse_str(dep) {
            collect_named(&schema, &mut named);
        }
    }
    check_defaults(&parsed.schema, &named, &mut HashSet::new(), 0)?;
    Ok(parsed)
}

/// The JSON of a schema text within the size and depth limits.
fn parse_schema_json(text: &str) -> Result<Value, String> {
    if text.len() > MAX_SCHEMA_BYTES {
        return Err(format!(
            "schema of {} bytes exceeds the limit of {MAX_SCHEMA_BYTES} bytes",
            text.len()
        ));
    }
    parse_json(text)
}

fn parse_value(
    text: &str,
    json: &Value,
    dependencies: &[String],
    normalize: bool,
) -> Result<ParsedSchema, String> {
    let canonical = canonical_text(json, normalize)?;
    for dep in dependencies {
        parse_json(dep).map_err(|e| format!("referenced schema: {e}"))?;
    }
    let (schema, defined) = if dependencies.is_empty() {
        let schema = Schema::parse(json).map_err(|e| e.to_string())?;
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

// ---------------------------------------------------------------- strict rules

/// Checks a name as Avro Java does: a letter or `_`, then letters, digits
/// or `_` (the last part of a dotted full name; Java checks no more).
fn check_name(name: &str) -> Result<(), String> {
    let simple = name.rsplit('.').next().unwrap_or(name);
    let mut chars = simple.chars();
    match chars.next() {
        None => Err(format!("Empty name: {name:?}")),
        Some(c) if !(c.is_alphabetic() || c == '_') => {
            Err(format!("Illegal initial character: {name}"))
        }
        _ if chars.any(|c| !(c.is_alphanumeric() || c == '_')) => {
            Err(format!("Illegal character in: {name}"))
        }
        _ => Ok(()),
    }
}

/// `aliases`, when present, is an array of strings (of valid names for a
/// named type; a field's aliases Java takes as they are).
fn check_aliases(aliases: Option<&Value>, names: bool, owner: &str) -> Result<(), String> {
    let Some(aliases) = aliases else {
        return Ok(());
    };
    let Value::Array(list) = aliases else {
        return Err(format!(
            "{owner}: aliases must be an array of names, got {aliases}"
        ));
    };
    for alias in list {
        match alias {
            Value::String(a) if names => check_name(a).map_err(|e| format!("{owner}: {e}"))?,
            Value::String(_) => {}
            other => return Err(format!("{owner}: an alias must be a string, got {other}")),
        }
    }
    Ok(())
}

/// Checks the shape of names, namespaces, aliases, field names and enum
/// symbols in a schema's JSON (before apache-avro, which takes some wrong
/// shapes silently: `"aliases": "Old"` is no alias at all to it, while
/// Avro Java refuses the schema).
pub fn check_names(schema: &Value) -> Result<(), String> {
    match schema {
        Value::Array(branches) => branches.iter().try_for_each(check_names),
        Value::Object(map) => {
            let kind = match map.get("type") {
                Some(Value::String(kind)) => kind.as_str(),
                Some(nested) => return check_names(nested),
                None => return Ok(()),
            };
            match kind {
                "record" | "error" | "enum" | "fixed" => {}
                "array" => return map.get("items").map_or(Ok(()), check_names),
                "map" => return map.get("values").map_or(Ok(()), check_names),
                _ => return Ok(()),
            }
            let name = match map.get("name") {
                Some(Value::String(name)) => name,
                Some(other) => {
                    return Err(format!(
                        "the name of a {kind} must be a string, got {other}"
                    ))
                }
                None => return Err(format!("No name in schema: a {kind} needs a name")),
            };
            check_name(name)?;
            let owner = format!("{kind} {name}");
            match map.get("namespace") {
                None | Some(Value::Null) | Some(Value::String(_)) => {}
                Some(other) => {
                    return Err(format!("{owner}: namespace must be a string, got {other}"))
                }
            }
            check_aliases(map.get("aliases"), true, &owner)?;
            if kind == "enum" {
                for symbol in map
                    .get("symbols")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    match symbol {
                        Value::String(s) => check_name(s).map_err(|e| format!("{owner}: {e}"))?,
                        other => {
                            return Err(format!("{owner}: a symbol must be a string, got {other}"))
                        }
                    }
                }
            }
            for field in map
                .get("fields")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(field) = field.as_object() else {
                    continue;
                };
                let field_name = match field.get("name") {
                    Some(Value::String(n)) => n,
                    Some(other) => {
                        return Err(format!(
                            "{owner}: a field name must be a string, got {other}"
                        ))
                    }
                    None => return Err(format!("{owner}: No field name")),
                };
                check_name(field_name).map_err(|e| format!("{owner}: {e}"))?;
                let field_owner = format!("field {field_name} of {owner}");
                check_aliases(field.get("aliases"), false, &field_owner)?;
                if let Some(t) = field.get("type") {
                    check_names(t)?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Checks every field default (and enum default) in `schema`, as Avro
/// Java 1.11 does when it parses a schema, and a little further where a
/// default could not be decoded at all: a union's default matches its
/// first branch (the spec until Avro 1.12, and what Confluent's registry
/// and most readers expect), a `fixed` default has exactly `size` bytes,
/// an enum default is one of its symbols, numbers fit their type.
/// `named` resolves references by name; `seen` stops at recursive types.
fn check_defaults(
    schema: &Schema,
    named: &HashMap<Name, Schema>,
    seen: &mut HashSet<Name>,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_SCHEMA_DEPTH {
        return Ok(());
    }
    let recurse = |s: &Schema, seen: &mut HashSet<Name>| check_defaults(s, named, seen, depth + 1);
    match schema {
        Schema::Record(r) => {
            if !seen.insert(r.name.clone()) {
                return Ok(());
            }
            for f in &r.fields {
                if let Some(default) = &f.default {
                    field_default(&f.schema, default, named).map_err(|why| {
                        let schema = match &f.schema {
                            Schema::Ref { name } => named.get(name).unwrap_or(&f.schema),
                            other => other,
                        };
                        format!(
                            "Invalid default for field {}: {default} not a {}{why}",
                            f.name,
                            describe(schema)
                        )
                    })?;
                }
                recurse(&f.schema, seen)?;
            }
            Ok(())
        }
        Schema::Enum(e) => match &e.default {
            Some(d) if !e.symbols.contains(d) => Err(format!(
                "enum {}: default {d} is not one of its symbols",
                e.name.fullname(None)
            )),
            _ => Ok(()),
        },
        Schema::Array(a) => recurse(&a.items, seen),
        Schema::Map(m) => recurse(&m.types, seen),
        Schema::Union(u) => u.variants().iter().try_for_each(|v| recurse(v, seen)),
        Schema::Ref { name } => match named.get(name) {
            Some(def) => recurse(def, seen),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// A field's default: as [`valid_default`], except that a `float` or
/// `double` field may give it as a string Java reads as a double ("NaN",
/// "Infinity", "1.5"), which Avro Java converts.
fn field_default(
    schema: &Schema,
    value: &Value,
    named: &HashMap<Name, Schema>,
) -> Result<(), String> {
    if let (Schema::Float | Schema::Double, Value::String(text)) = (schema, value) {
        return if java_double(text) {
            Ok(())
        } else {
            Err(String::new())
        };
    }
    valid_default(schema, value, named, 0)
}

/// Whether Java's `Double.valueOf` reads `text`.
fn java_double(text: &str) -> bool {
    let t = text.trim();
    let t = t.strip_suffix(['d', 'D', 'f', 'F']).unwrap_or(t);
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    matches!(unsigned, "NaN" | "Infinity")
        || (unsigned.bytes().any(|b| b.is_ascii_digit())
            && !unsigned
                .bytes()
                .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E')
            && t.parse::<f64>().is_ok())
}

/// The bytes of a `bytes` or `fixed` default: a string of code points up
/// to U+00FF, one byte each.
fn byte_string(value: &Value) -> Result<usize, String> {
    let Value::String(s) = value else {
        return Err(String::new());
    };
    if s.chars().any(|c| c as u32 > 0xFF) {
        return Err(": a character above \\u00FF is no byte".into());
    }
    Ok(s.chars().count())
}

fn fixed_default(value: &Value, size: usize, name: &Name) -> Result<(), String> {
    let n = byte_string(value)?;
    if n != size {
        return Err(format!(
            ": {n} bytes, and {} has {size}",
            name.fullname(None)
        ));
    }
    Ok(())
}

/// Whether `value` is a valid default of `schema`; `Err` carries the
/// reason after the type (empty when "not a <type>" says it all).
fn valid_default(
    schema: &Schema,
    value: &Value,
    named: &HashMap<Name, Schema>,
    depth: usize,
) -> Result<(), String> {
    use apache_avro::schema::{InnerDecimalSchema, UuidSchema};
    if depth > MAX_SCHEMA_DEPTH {
        return Ok(());
    }
    let no = || Err(String::new());
    let out_of_range = || Err(": out of range".to_string());
    let inner = |s: &Schema, v: &Value| valid_default(s, v, named, depth + 1);
    match schema {
        Schema::Null => value.is_null().then_some(()).ok_or_default(),
        Schema::Boolean => value.is_boolean().then_some(()).ok_or_default(),
        Schema::Int | Schema::Date | Schema::TimeMillis => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => match n.as_i64() {
                Some(i) if i32::try_from(i).is_ok() => Ok(()),
                _ => out_of_range(),
            },
            _ => no(),
        },
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => match value {
            Value::Number(n) if n.is_i64() => Ok(()),
            Value::Number(n) if n.is_u64() => out_of_range(),
            _ => no(),
        },
        Schema::Float => match value.as_f64() {
            Some(f) if f.abs() <= f64::from(f32::MAX) => Ok(()),
            Some(_) => out_of_range(),
            None => no(),
        },
        Schema::Double => value.is_number().then_some(()).ok_or_default(),
        Schema::String | Schema::Uuid(UuidSchema::String) => {
            value.is_string().then_some(()).ok_or_default()
        }
        Schema::Bytes | Schema::BigDecimal | Schema::Uuid(UuidSchema::Bytes) => {
            byte_string(value).map(|_| ())
        }
        Schema::Decimal(d) => match &d.inner {
            InnerDecimalSchema::Bytes => byte_string(value).map(|_| ()),
            InnerDecimalSchema::Fixed(f) => fixed_default(value, f.size, &f.name),
        },
        Schema::Fixed(f) | Schema::Uuid(UuidSchema::Fixed(f)) | Schema::Duration(f) => {
            fixed_default(value, f.size, &f.name)
        }
        Schema::Enum(e) => match value {
            Value::String(s) if e.symbols.contains(s) => Ok(()),
            Value::String(s) => Err(format!(": no symbol {s}")),
            _ => no(),
        },
        Schema::Array(a) => match value {
            Value::Array(items) => items
                .iter()
                .try_for_each(|v| inner(&a.items, v))
                .map_err(|_| String::new()),
            _ => no(),
        },
        Schema::Map(m) => match value {
            Value::Object(values) => values
                .values()
                .try_for_each(|v| inner(&m.types, v))
                .map_err(|_| String::new()),
            _ => no(),
        },
        Schema::Union(u) => match u.variants().first() {
            Some(first) => inner(first, value).map_err(|_| {
                format!(
                    " (a union's default must match its first branch, {})",
                    describe(first)
                )
            }),
            None => no(),
        },
        Schema::Record(r) => {
            let Value::Object(fields) = value else {
                return no();
            };
            for f in &r.fields {
                match fields.get(&f.name) {
                    Some(v) => inner(&f.schema, v).map_err(|_| {
                        format!(": field {} is not a {}", f.name, describe(&f.schema))
                    })?,
                    None if f.default.is_some() => {}
                    None => {
                        return Err(format!(": field {} is missing and has no default", f.name))
                    }
                }
            }
            Ok(())
        }
        Schema::Ref { name } => match named.get(name) {
            Some(def) => inner(def, value),
            None => Ok(()),
        },
    }
}

/// `Err(String::new())` for a false check.
trait OkOrDefault {
    fn ok_or_default(self) -> Result<(), String>;
}

impl OkOrDefault for Option<()> {
    fn ok_or_default(self) -> Result<(), String> {
        self.ok_or_else(String::new)
    }
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

    /// A record `R` with one field `f` of `field_type` and `default`.
    fn field(field_type: &str, default: &str) -> String {
        format!(
            r#"{{"type":"record","name":"R","fields":[{{"name":"f","type":{field_type},"default":{default}}}]}}"#
        )
    }

    #[test]
    fn schemas_avro_java_refuses_are_refused_with_a_message() {
        // What apache-avro itself refuses, with its own message.
        const AVRO: &str = "field `f` in `R` must be a";
        let cases: Vec<(String, &str)> = vec![
            // Defaults, checked as Avro Java 1.11 (Confluent's) checks them.
            (field(r#"["null","string"]"#, r#""x""#), "Invalid default for field f: \"x\" not a union [null, string] (a union's default must match its first branch, null)"),
            (field(r#"["int","null"]"#, "null"), "not a union [int, null]"),
            (field(r#"{"type":"fixed","name":"F","size":4}"#, r#""abc""#), "not a fixed F (size 4): 3 bytes"),
            (field(r#"{"type":"enum","name":"E","symbols":["A","B"]}"#, r#""C""#), AVRO),
            (field(r#""int""#, "3000000000"), AVRO),
            (field(r#""int""#, "1.5"), AVRO),
            (field(r#""long""#, "18446744073709551615"), "too large"),
            (field(r#""long""#, "2.0"), AVRO),
            (field(r#""float""#, "1e39"), "not a float: out of range"),
            (field(r#""double""#, r#""lots""#), AVRO),
            (field(r#""boolean""#, "0"), AVRO),
            (field(r#""string""#, "null"), AVRO),
            (field(r#""bytes""#, r#""\u0100""#), "not a bytes: a character above \\u00FF"),
            (field(r#"{"type":"array","items":"int"}"#, r#"[1,"x"]"#), AVRO),
            (field(r#"{"type":"array","items":["null","int"]}"#, "[1]"), "not a array of union [null, int]"),
            (field(r#"{"type":"map","values":"string"}"#, r#"{"a":1}"#), AVRO),
            (field(r#"{"type":"record","name":"In","fields":[{"name":"a","type":"int"}]}"#, "{}"), AVRO),
            (field(r#"{"type":"record","name":"In","fields":[{"name":"a","type":"int"}]}"#, "[]"), AVRO),
            (
                r#"{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"fixed","name":"F","size":2}},{"name":"b","type":"F","default":"abc"}]}"#.into(),
                "Invalid default for field b: \"abc\" not a fixed F (size 2): 3 bytes, and F has 2",
            ),
            (
                r#"{"type":"record","name":"R","fields":[{"name":"in","type":{"type":"record","name":"In","fields":[{"name":"x","type":["null","int"],"default":5}]}}]}"#.into(),
                "Invalid default for field x: 5 not a union [null, int]",
            ),
            (
                r#"{"type":"enum","name":"E","symbols":["A","B"],"default":"C"}"#.into(),
                "not among allowed symbols",
            ),
            // Names, namespaces and aliases of the wrong shape.
            (r#"{"type":"record","name":"R","aliases":"Old","fields":[]}"#.into(), "record R: aliases must be an array of names, got \"Old\""),
            (r#"{"type":"record","name":"R","aliases":["Old",5],"fields":[]}"#.into(), "record R: an alias must be a string, got 5"),
            (r#"{"type":"record","name":"R","fields":[{"name":"f","type":"int","aliases":"g"}]}"#.into(), "field f of record R: aliases must be an array of names"),
            (r#"{"type":"record","name":"R","aliases":["bad-alias"],"fields":[]}"#.into(), "Illegal character in: bad-alias"),
            (r#"{"type":"record","name":"my-record","fields":[]}"#.into(), "Illegal character in: my-record"),
            (r#"{"type":"record","name":"R","fields":[{"name":"1st","type":"int"}]}"#.into(), "Illegal initial character: 1st"),
            (r#"{"type":"record","name":5,"fields":[]}"#.into(), "the name of a record must be a string, got 5"),
            (r#"{"type":"fixed","name":"F","namespace":5,"size":1}"#.into(), "fixed F: namespace must be a string, got 5"),
            (r#"{"type":"enum","name":"E","symbols":["A","B C"]}"#.into(), "Illegal character in: B C"),
        ];
        let wrong: Vec<String> = cases
            .iter()
            .filter_map(|(schema, want)| match parse_strict(schema, &[], false) {
                Ok(_) => Some(format!("accepted: {schema}")),
                Err(e) if !e.contains(want) => {
                    Some(format!("{schema}\n  said: {e}\n  want: {want}"))
                }
                Err(_) => None,
            })
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn schemas_avro_java_accepts_still_parse_strictly() {
        let cases = [
            field(r#"["null","string"]"#, "null"),
            field(r#"["string","null"]"#, r#""x""#),
            field(r#""double""#, "1.5"),
            field(r#""double""#, "1"),
            field(r#""double""#, r#""NaN""#),
            field(r#""float""#, "-2.5e10"),
            field(r#""long""#, "-9223372036854775808"),
            field(r#""int""#, "-2147483648"),
            field(r#""bytes""#, r#""\u00ff\u0000A""#),
            field(r#"{"type":"fixed","name":"F","size":4}"#, r#""\u0000\u0001\u00ff\u0003""#),
            field(r#"{"type":"enum","name":"E","symbols":["A","B"]}"#, r#""B""#),
            field(r#"{"type":"array","items":"int"}"#, "[]"),
            field(r#"{"type":"array","items":["null","int"]}"#, "[null]"),
            field(r#"{"type":"map","values":"long"}"#, r#"{"a":1}"#),
            field(
                r#"{"type":"record","name":"In","fields":[{"name":"a","type":"int"},{"name":"b","type":"string","default":"z"}]}"#,
                r#"{"a":1}"#,
            ),
            field(r#"{"type":"bytes","logicalType":"decimal","precision":4,"scale":2}"#, r#""\u0000""#),
            field(r#"{"type":"int","logicalType":"date"}"#, "0"),
            field(r#"{"type":"string","logicalType":"uuid"}"#, r#""00000000-0000-0000-0000-000000000000""#),
            r#"{"type":"record","name":"R","namespace":null,"aliases":["Old","com.acme.Older"],"fields":[{"name":"f","type":"int","aliases":["g"]}]}"#.to_string(),
            r#"{"type":"record","name":"com.acme.R","namespace":"","fields":[{"name":"_f","type":{"type":"enum","name":"E","symbols":["A","_B"],"default":"A"}}]}"#.to_string(),
            // A recursive type, its default stopping at null.
            r#"{"type":"record","name":"Node","fields":[{"name":"next","type":["null","Node"],"default":null}]}"#.to_string(),
        ];
        for schema in &cases {
            if let Err(e) = parse_strict(schema, &[], false) {
                panic!("refused: {schema}\n  said: {e}");
            }
        }
    }

    #[test]
    fn stored_schemas_are_parsed_without_the_strict_checks() {
        // Registered before the checks existed: still readable.
        let old = field(r#"["null","string"]"#, r#""x""#);
        assert!(parse(&old, &[], false).is_ok());
        assert!(parse_strict(&old, &[], false).is_err());
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
