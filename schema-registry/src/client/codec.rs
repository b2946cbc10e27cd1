//! JSON ⇄ Avro: [`Compiled`] writes JSON as one Avro datum of a schema
//! (binary encoding) and reads one back, with errors naming the field
//! path; [`infer_schema`] is the schema Kafka Connect's Avro converter
//! writes for a value without one.
//!
//! Records are objects, unions their branch's value, enums their symbol,
//! logical types their underlying number (decimals a string), bytes a
//! string where they are UTF-8 and an array of byte values otherwise.

use std::collections::HashMap;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{InnerDecimalSchema, Name, UuidSchema};
use apache_avro::types::Value as Avro;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use serde_json::{json, Map, Number, Value};

/// Deepest nesting converted (records in records, arrays, ...).
const MAX_DEPTH: usize = 128;

/// A schema ready to write and read with.
#[derive(Debug)]
pub struct Compiled {
    pub schema: Schema,
    /// Named types, for `Ref`s (recursive schemas).
    names: HashMap<Name, Schema>,
}

impl Compiled {
    pub fn new(schema: Schema) -> Compiled {
        let mut names = HashMap::new();
        collect_names(&schema, &mut names, 0);
        Compiled { schema, names }
    }

    /// Encodes JSON as one datum of this schema.
    pub fn encode(&self, value: &Value) -> Result<Vec<u8>, String> {
        let avro = self.to_avro(value, &self.schema, "", 0)?;
        let writer = GenericDatumWriter::builder(&self.schema)
            .validate(false)
            .build()
            .map_err(|e| e.to_string())?;
        writer.write_value_to_vec(avro).map_err(|e| e.to_string())
    }

    /// Decodes one datum of this schema (all of `body`) as JSON.
    pub fn decode(&self, body: &[u8]) -> Result<Value, String> {
        let reader = GenericDatumReader::builder(&self.schema)
            .build()
            .map_err(|e| e.to_string())?;
        let mut input = body;
        let value = reader
            .read_value(&mut input)
            .map_err(|e| format!("Avro body does not match its schema: {e}"))?;
        if !input.is_empty() {
            return Err(format!(
                "{} bytes left over after the Avro datum",
                input.len()
            ));
        }
        self.to_json(value, &self.schema, 0)
    }

    /// Decodes one datum written with this schema (all of `body`) as a
    /// datum of `reader`, by Avro's schema resolution: fields the writer
    /// lacks take the reader's defaults, fields the reader lacks are
    /// dropped, numbers are promoted (int → long, ...). So a record written
    /// with an older compatible schema reads as the newer one.
    pub fn decode_as(&self, body: &[u8], reader: &Compiled) -> Result<Value, String> {
        let datum_reader = GenericDatumReader::builder(&self.schema)
            .reader_schema(&reader.schema)
            .build()
            .map_err(|e| e.to_string())?;
        let mut input = body;
        let value = datum_reader
            .read_value(&mut input)
            .map_err(|e| format!("Avro body does not match its schema or the reader's: {e}"))?;
        if !input.is_empty() {
            return Err(format!(
                "{} bytes left over after the Avro datum",
                input.len()
            ));
        }
        reader.to_json(value, &reader.schema, 0)
    }

    /// The schema a named reference (`Ref`) stands for; others as they are.
    pub fn resolve<'a>(&'a self, schema: &'a Schema) -> Result<&'a Schema, String> {
        match schema {
            Schema::Ref { name } => self
                .names
                .get(name)
                .ok_or_else(|| format!("schema refers to unknown type {}", name.fullname(None))),
            s => Ok(s),
        }
    }

    fn to_avro(
        &self,
        v: &Value,
        schema: &Schema,
        path: &str,
        depth: usize,
    ) -> Result<Avro, String> {
        if depth > MAX_DEPTH {
            return Err(format!("{} is nested too deeply", show(path)));
        }
        let schema = self.resolve(schema)?;
        let wrong = |want: &str| {
            Err(format!(
                "{} should be {want}, found {}",
                show(path),
                kind(v)
            ))
        };
        let int = |v: &Value| {
            v.as_i64()
                .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        };
        Ok(match schema {
            Schema::Null => match v {
                Value::Null => Avro::Null,
                _ => return wrong("null"),
            },
            Schema::Boolean => match v {
                Value::Bool(b) => Avro::Boolean(*b),
                _ => return wrong("a boolean"),
            },
            Schema::Int | Schema::Date | Schema::TimeMillis => {
                let Some(n) = int(v).and_then(|n| i32::try_from(n).ok()) else {
                    return wrong("an int (32-bit integer)");
                };
                match schema {
                    Schema::Date => Avro::Date(n),
                    Schema::TimeMillis => Avro::TimeMillis(n),
                    _ => Avro::Int(n),
                }
            }
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => {
                let Some(n) = int(v) else {
                    return wrong("a long (64-bit integer)");
                };
                match schema {
                    Schema::TimeMicros => Avro::TimeMicros(n),
                    Schema::TimestampMillis => Avro::TimestampMillis(n),
                    Schema::TimestampMicros => Avro::TimestampMicros(n),
                    Schema::TimestampNanos => Avro::TimestampNanos(n),
                    Schema::LocalTimestampMillis => Avro::LocalTimestampMillis(n),
                    Schema::LocalTimestampMicros => Avro::LocalTimestampMicros(n),
                    Schema::LocalTimestampNanos => Avro::LocalTimestampNanos(n),
                    _ => Avro::Long(n),
                }
            }
            Schema::Float => match v.as_f64() {
                Some(f) => Avro::Float(f as f32),
                None => return wrong("a float"),
            },
            Schema::Double => match v.as_f64() {
                Some(f) => Avro::Double(f),
                None => return wrong("a double"),
            },
            Schema::Bytes => match bytes_of(v) {
                Some(b) => Avro::Bytes(b),
                None => return wrong("bytes (a string or an array of byte values)"),
            },
            Schema::String | Schema::Uuid(UuidSchema::String) => match v {
                Value::String(s) => match schema {
                    Schema::Uuid(_) => Avro::Uuid(
                        s.parse()
                            .map_err(|_| format!("{} '{s}' is not a UUID", show(path)))?,
                    ),
                    _ => Avro::String(s.clone()),
                },
                _ => return wrong("a string"),
            },
            Schema::Uuid(_) => match v.as_str().and_then(|s| s.parse().ok()) {
                Some(u) => Avro::Uuid(u),
                None => return wrong("a UUID string"),
            },
            Schema::Fixed(f) => match bytes_of(v) {
                Some(b) if b.len() == f.size => Avro::Fixed(f.size, b),
                _ => return wrong(&format!("{} bytes", f.size)),
            },
            Schema::Duration(_) => {
                let part = |k: &str| {
                    v.get(k)
                        .and_then(Value::as_u64)
                        .and_then(|n| u32::try_from(n).ok())
                };
                match (part("months"), part("days"), part("millis")) {
                    (Some(m), Some(d), Some(ms)) => Avro::Duration(apache_avro::Duration::new(
                        apache_avro::Months::new(m),
                        apache_avro::Days::new(d),
                        apache_avro::Millis::new(ms),
                    )),
                    _ => return wrong("a duration {months, days, millis}"),
                }
            }
            Schema::Decimal(d) => {
                let unscaled = decimal_unscaled(v, d.scale).ok_or_else(|| {
                    format!(
                        "{} should be a decimal with at most {} fractional digits, found {}",
                        show(path),
                        d.scale,
                        v
                    )
                })?;
                let size = match &d.inner {
                    InnerDecimalSchema::Fixed(f) => f.size,
                    InnerDecimalSchema::Bytes => minimal_len(unscaled),
                };
                if size > 16 || minimal_len(unscaled) > size {
                    return Err(format!(
                        "{} {v} does not fit the decimal's {size} bytes",
                        show(path)
                    ));
                }
                let full = unscaled.to_be_bytes();
                Avro::Decimal(apache_avro::Decimal::from(&full[16 - size..]))
            }
            Schema::BigDecimal => {
                return Err(format!(
                    "{}: big-decimal fields are not supported by this converter",
                    show(path)
                ))
            }
            Schema::Enum(e) => match v.as_str() {
                Some(s) => match e.symbols.iter().position(|x| x == s) {
                    Some(i) => Avro::Enum(i as u32, s.to_string()),
                    None => {
                        return Err(format!(
                            "{} '{s}' is not one of the enum's symbols {:?}",
                            show(path),
                            e.symbols
                        ))
                    }
                },
                None => return wrong("an enum symbol (a string)"),
            },
            Schema::Array(a) => match v {
                Value::Array(items) => Avro::Array(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| {
                            self.to_avro(item, &a.items, &format!("{path}[{i}]"), depth + 1)
                        })
                        .collect::<Result<_, _>>()?,
                ),
                _ => return wrong("an array"),
            },
            Schema::Map(m) => match v {
                Value::Object(fields) => Avro::Map(
                    fields
                        .iter()
                        .map(|(k, item)| {
                            self.to_avro(item, &m.types, &join(path, k), depth + 1)
                                .map(|x| (k.clone(), x))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                _ => return wrong("an object (a map)"),
            },
            Schema::Union(u) => {
                let variants = u.variants();
                if v.is_null() {
                    match variants.iter().position(|s| matches!(s, Schema::Null)) {
                        Some(i) => Avro::Union(i as u32, Box::new(Avro::Null)),
                        None => return wrong("a value (the union has no null branch)"),
                    }
                } else {
                    let mut first_error = None;
                    let mut found = None;
                    for (i, branch) in variants.iter().enumerate() {
                        if matches!(branch, Schema::Null) {
                            continue;
                        }
                        match self.to_avro(v, branch, path, depth + 1) {
                            Ok(x) => {
                                found = Some(Avro::Union(i as u32, Box::new(x)));
                                break;
                            }
                            Err(e) => {
                                first_error.get_or_insert(e);
                            }
                        }
                    }
                    match found {
                        Some(x) => x,
                        None => {
                            return Err(first_error.unwrap_or_else(|| {
                                format!("{} matches no branch of its union", show(path))
                            }))
                        }
                    }
                }
            }
            Schema::Record(r) => {
                let Value::Object(fields) = v else {
                    return wrong(&format!("an object (record {})", r.name.fullname(None)));
                };
                if let Some(extra) = fields.keys().find(|k| !r.lookup.contains_key(*k)) {
                    return Err(format!(
                        "{} is not a field of record {}",
                        show(&join(path, extra)),
                        r.name.fullname(None)
                    ));
                }
                let mut out = Vec::with_capacity(r.fields.len());
                for f in &r.fields {
                    let at = join(path, &f.name);
                    let value = match fields.get(&f.name) {
                        Some(x) => self.to_avro(x, &f.schema, &at, depth + 1)?,
                        None => match &f.default {
                            // A union's default is of its first branch.
                            Some(d) => match self.resolve(&f.schema)? {
                                Schema::Union(u) => {
                                    let first = u.variants().first().ok_or_else(|| {
                                        format!("{} has an empty union", show(&at))
                                    })?;
                                    Avro::Union(
                                        0,
                                        Box::new(self.to_avro(d, first, &at, depth + 1)?),
                                    )
                                }
                                s => self.to_avro(d, s, &at, depth + 1)?,
                            },
                            None => {
                                return Err(format!(
                                    "{} is missing (record {} requires it: it has no default)",
                                    show(&at),
                                    r.name.fullname(None)
                                ))
                            }
                        },
                    };
                    out.push((f.name.clone(), value));
                }
                Avro::Record(out)
            }
            Schema::Ref { .. } => unreachable!("resolved above"),
        })
    }

    fn to_json(&self, v: Avro, schema: &Schema, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("datum is nested too deeply".into());
        }
        let schema = self.resolve(schema)?;
        let number = |f: f64| {
            Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        };
        Ok(match v {
            Avro::Null => Value::Null,
            Avro::Boolean(b) => Value::Bool(b),
            Avro::Int(n) | Avro::Date(n) | Avro::TimeMillis(n) => Value::from(n),
            Avro::Long(n)
            | Avro::TimeMicros(n)
            | Avro::TimestampMillis(n)
            | Avro::TimestampMicros(n)
            | Avro::TimestampNanos(n)
            | Avro::LocalTimestampMillis(n)
            | Avro::LocalTimestampMicros(n)
            | Avro::LocalTimestampNanos(n) => Value::from(n),
            Avro::Float(f) => number(f as f64),
            Avro::Double(f) => number(f),
            // A UTF-8 string where the bytes are one, else their values.
            Avro::Bytes(b) | Avro::Fixed(_, b) => match String::from_utf8(b) {
                Ok(s) => Value::String(s),
                Err(e) => Value::Array(e.into_bytes().into_iter().map(Value::from).collect()),
            },
            Avro::String(s) => Value::String(s),
            Avro::Uuid(u) => Value::String(u.to_string()),
            Avro::Enum(_, s) => Value::String(s),
            Avro::Duration(d) => json!({
                "months": u32::from(d.months()),
                "days": u32::from(d.days()),
                "millis": u32::from(d.millis()),
            }),
            Avro::Decimal(d) => {
                let scale = match schema {
                    Schema::Decimal(s) => s.scale,
                    _ => 0,
                };
                let raw: Vec<u8> = Vec::try_from(&d).map_err(|e| e.to_string())?;
                match unscaled_from_bytes(&raw) {
                    Some(n) => Value::String(format_decimal(n, scale)),
                    None => return Err("a decimal wider than 16 bytes cannot be read".into()),
                }
            }
            Avro::BigDecimal(d) => Value::String(d.to_string()),
            Avro::Union(i, inner) => {
                let branch = match schema {
                    Schema::Union(u) => u
                        .variants()
                        .get(i as usize)
                        .ok_or("union branch out of range")?,
                    s => s,
                };
                self.to_json(*inner, branch, depth + 1)?
            }
            Avro::Array(items) => {
                let item = match schema {
                    Schema::Array(a) => &*a.items,
                    s => s,
                };
                Value::Array(
                    items
                        .into_iter()
                        .map(|x| self.to_json(x, item, depth + 1))
                        .collect::<Result<_, _>>()?,
                )
            }
            Avro::Map(entries) => {
                let item = match schema {
                    Schema::Map(m) => &*m.types,
                    s => s,
                };
                let mut out = Map::new();
                let mut entries: Vec<_> = entries.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                for (k, x) in entries {
                    out.insert(k, self.to_json(x, item, depth + 1)?);
                }
                Value::Object(out)
            }
            Avro::Record(fields) => {
                let mut out = Map::new();
                for (i, (k, x)) in fields.into_iter().enumerate() {
                    let field_schema = match schema {
                        Schema::Record(r) => r.fields.get(i).map(|f| &f.schema).unwrap_or(schema),
                        s => s,
                    };
                    out.insert(k, self.to_json(x, field_schema, depth + 1)?);
                }
                Value::Object(out)
            }
        })
    }
}

fn collect_names(schema: &Schema, out: &mut HashMap<Name, Schema>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match schema {
        Schema::Record(r) => {
            out.insert(r.name.clone(), schema.clone());
            for f in &r.fields {
                collect_names(&f.schema, out, depth + 1);
            }
        }
        Schema::Enum(e) => {
            out.insert(e.name.clone(), schema.clone());
        }
        Schema::Fixed(f) => {
            out.insert(f.name.clone(), schema.clone());
        }
        Schema::Array(a) => collect_names(&a.items, out, depth + 1),
        Schema::Map(m) => collect_names(&m.types, out, depth + 1),
        Schema::Union(u) => u
            .variants()
            .iter()
            .for_each(|v| collect_names(v, out, depth + 1)),
        _ => {}
    }
}

fn show(path: &str) -> String {
    if path.is_empty() {
        "the value".into()
    } else {
        format!("field '{path}'")
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.len() <= 40 => format!("string \"{s}\""),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn bytes_of(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Array(items) => items
            .iter()
            .map(|x| x.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect(),
        _ => None,
    }
}

/// `12.34` with scale 2 → 1234; None when it has more fractional digits
/// than `scale` or does not fit.
fn decimal_unscaled(v: &Value, scale: usize) -> Option<i128> {
    let text = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(&text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > scale || scale > 38 {
        return None;
    }
    let mut n: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        n = n.checked_mul(10)?.checked_add((b - b'0') as i128)?;
    }
    n = n.checked_mul(10i128.checked_pow((scale - frac.len()) as u32)?)?;
    Some(if neg { -n } else { n })
}

/// Bytes of the shortest two's-complement big-endian form of `n`.
fn minimal_len(n: i128) -> usize {
    let bytes = n.to_be_bytes();
    let mut len = 16;
    while len > 1 {
        let (first, second) = (bytes[16 - len], bytes[16 - len + 1]);
        let redundant = (first == 0 && second & 0x80 == 0) || (first == 0xff && second & 0x80 != 0);
        if !redundant {
            break;
        }
        len -= 1;
    }
    len
}

fn unscaled_from_bytes(raw: &[u8]) -> Option<i128> {
    if raw.len() > 16 {
        return None;
    }
    if raw.is_empty() {
        return Some(0);
    }
    let fill = if raw[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut full = [fill; 16];
    full[16 - raw.len()..].copy_from_slice(raw);
    Some(i128::from_be_bytes(full))
}

fn format_decimal(n: i128, scale: usize) -> String {
    let digits = n.unsigned_abs().to_string();
    let sign = if n < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// The Avro schema Kafka Connect's converter would write for a value
/// without a declared schema: objects become records
/// (`io.confluent.connect.avro.ConnectDefault`, nested ones numbered),
/// integers `long`, other numbers `double`, nulls an optional string.
pub fn infer_schema(v: &Value) -> Value {
    let mut counter = 0;
    infer(v, &mut counter, 0)
}

fn infer(v: &Value, counter: &mut usize, depth: usize) -> Value {
    match v {
        Value::Null => json!(["null", "string"]),
        Value::Bool(_) => json!("boolean"),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!("long"),
        Value::Number(_) => json!("double"),
        Value::String(_) => json!("string"),
        Value::Array(items) => json!({
            "type": "array",
            "items": items.first().filter(|_| depth < MAX_DEPTH).map(|x| infer(x, counter, depth + 1)).unwrap_or(json!("string")),
        }),
        Value::Object(fields) => {
            *counter += 1;
            let name = if *counter == 1 {
                "ConnectDefault".to_string()
            } else {
                format!("ConnectDefault{counter}")
            };
            let fields: Vec<Value> = fields
                .iter()
                .filter(|_| depth < MAX_DEPTH)
                .map(|(k, x)| {
                    let t = infer(x, counter, depth + 1);
                    if x.is_null() {
                        json!({"name": k, "type": t, "default": null})
                    } else {
                        json!({"name": k, "type": t})
                    }
                })
                .collect();
            json!({
                "type": "record",
                "name": name,
                "namespace": "io.confluent.connect.avro",
                "fields": fields,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(text: &str) -> Compiled {
        Compiled::new(Schema::parse_str(text).unwrap())
    }

    #[test]
    fn json_round_trips_through_a_record_schema() {
        let c = compiled(
            r#"{"type":"record","name":"Order","fields":[
                {"name":"id","type":"long"},
                {"name":"qty","type":"int"},
                {"name":"note","type":["null","string"],"default":null},
                {"name":"status","type":{"type":"enum","name":"S","symbols":["NEW","PAID"]}},
                {"name":"tags","type":{"type":"array","items":"string"}},
                {"name":"attrs","type":{"type":"map","values":"double"}},
                {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
                {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
                {"name":"country","type":"string","default":"NL"}
            ]}"#,
        );
        let v = json!({"id": 7, "qty": 2, "note": "gift", "status": "PAID", "tags": ["a", "b"],
                       "attrs": {"w": 1.5}, "price": "12.30", "at": 1700000000000i64});
        let body = c.encode(&v).unwrap();
        let back = c.decode(&body).unwrap();
        let mut want = v.clone();
        want["price"] = json!("12.30");
        want["country"] = json!("NL");
        assert_eq!(back, want);
        // A null note takes the union's null branch.
        let mut v2 = v.clone();
        v2["note"] = Value::Null;
        assert_eq!(
            c.decode(&c.encode(&v2).unwrap()).unwrap()["note"],
            Value::Null
        );
        // The bytes are what any Avro library writes: id 7 zigzag = 14.
        assert_eq!(body[0], 14);
    }

    #[test]
    fn mismatches_say_which_field_and_why() {
        let c = compiled(
            r#"{"type":"record","name":"R","fields":[
                {"name":"id","type":"int"},
                {"name":"inner","type":{"type":"record","name":"I","fields":[{"name":"x","type":"string"}]}}]}"#,
        );
        let e = c
            .encode(&json!({"id": "seven", "inner": {"x": "a"}}))
            .unwrap_err();
        assert!(e.contains("field 'id'") && e.contains("int"), "{e}");
        let e = c.encode(&json!({"id": 1, "inner": {"x": 5}})).unwrap_err();
        assert!(e.contains("field 'inner.x'") && e.contains("string"), "{e}");
        let e = c.encode(&json!({"id": 1})).unwrap_err();
        assert!(e.contains("field 'inner' is missing"), "{e}");
        let e = c
            .encode(&json!({"id": 1, "inner": {"x": "a"}, "extra": 1}))
            .unwrap_err();
        assert!(e.contains("'extra' is not a field"), "{e}");
        let e = c
            .encode(&json!({"id": 3_000_000_000i64, "inner": {"x": "a"}}))
            .unwrap_err();
        assert!(e.contains("32-bit"), "{e}");
        // Bodies that are not a datum of the schema are refused.
        assert!(c.decode(&[0xff, 0xff, 0xff]).is_err());
        let good = c.encode(&json!({"id": 1, "inner": {"x": "a"}})).unwrap();
        let mut long = good.clone();
        long.push(0);
        assert!(c.decode(&long).unwrap_err().contains("left over"));
    }

    #[test]
    fn a_datum_of_an_older_schema_reads_as_the_newer_one() {
        let v1 = compiled(
            r#"{"type":"record","name":"Order","fields":[
                {"name":"id","type":"string"},{"name":"qty","type":"int"},{"name":"gone","type":"string"}]}"#,
        );
        let v2 = compiled(
            r#"{"type":"record","name":"Order","fields":[
                {"name":"id","type":"string"},{"name":"qty","type":"long"},
                {"name":"currency","type":"string","default":"EUR"}]}"#,
        );
        let body = v1
            .encode(&json!({"id": "o1", "qty": 3, "gone": "x"}))
            .unwrap();
        assert_eq!(
            v1.decode_as(&body, &v2).unwrap(),
            json!({"id": "o1", "qty": 3, "currency": "EUR"})
        );
        // A reader field without a default cannot be filled in.
        let v3 =
            compiled(r#"{"type":"record","name":"Order","fields":[{"name":"must","type":"int"}]}"#);
        assert!(v1.decode_as(&body, &v3).is_err());
        assert!(v1.decode_as(&body[..2], &v2).is_err());
    }

    #[test]
    fn recursive_schemas_and_fixed_decimals_work() {
        let c = compiled(
            r#"{"type":"record","name":"Node","fields":[
                {"name":"v","type":"int"},
                {"name":"next","type":["null","Node"],"default":null}]}"#,
        );
        let v = json!({"v": 1, "next": {"v": 2, "next": null}});
        assert_eq!(c.decode(&c.encode(&v).unwrap()).unwrap(), v);
        let d = compiled(
            r#"{"type":"fixed","name":"D","size":4,"logicalType":"decimal","precision":8,"scale":3}"#,
        );
        for s in ["-1.5", "0", "1234.567"] {
            let back = d.decode(&d.encode(&json!(s)).unwrap()).unwrap();
            assert_eq!(
                back.as_str().unwrap().parse::<f64>().unwrap(),
                s.parse::<f64>().unwrap()
            );
        }
        assert!(
            d.encode(&json!("1.2345")).is_err(),
            "more digits than the scale"
        );
        assert_eq!(format_decimal(-5, 2), "-0.05");
        assert_eq!(minimal_len(127), 1);
        assert_eq!(minimal_len(128), 2);
        assert_eq!(minimal_len(-128), 1);
        assert_eq!(minimal_len(-129), 2);
    }

    #[test]
    fn inferred_schemas_parse_and_fit_their_value() {
        let v = json!({"id": 1, "name": "ann", "score": 2.5, "ok": true, "tags": ["x"],
                       "addr": {"city": "Utrecht"}, "nick": null});
        let schema = infer_schema(&v);
        let c = compiled(&schema.to_string());
        assert_eq!(c.decode(&c.encode(&v).unwrap()).unwrap(), v);
        assert_eq!(schema["name"], "ConnectDefault");
        let addr = schema["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "addr")
            .unwrap();
        assert_eq!(addr["type"]["name"], "ConnectDefault2");
    }
}
