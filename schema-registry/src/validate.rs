//! Payload validation: the Confluent wire format and an Avro body check.
//!
//! A record produced by a Confluent serializer is
//!
//! ```text
//! byte 0      magic, always 0
//! bytes 1..5  schema id, big-endian i32
//! bytes 5..   the Avro binary encoding of one datum of that schema
//! ```
//!
//! [`AvroValidator`] checks that the body is exactly one well-formed datum
//! of its schema without building any values: it walks a compiled form of
//! the schema over the bytes, checking varints, lengths, UTF-8, enum and
//! union indexes, and that nothing is left over. It allocates nothing per
//! record, so the broker can run it on every produced record.

use std::collections::HashMap;

use apache_avro::schema::Name;
use apache_avro::Schema;

/// Magic byte of the Confluent wire format.
pub const MAGIC: u8 = 0;
/// Magic byte, then the 4-byte id.
pub const HEADER_BYTES: usize = 5;
/// Deepest nesting of a datum (recursive schemas).
pub const MAX_DEPTH: usize = 64;
/// Most array or map items in one datum: zero-byte items (nulls, empty
/// records) cost time but no input, so their count is capped.
pub const MAX_ITEMS: u64 = 10_000_000;

/// Why a payload is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload of {0} bytes is too short for the schema registry wire format (magic byte and 4-byte schema id)")]
    TooShort(usize),
    #[error("magic byte is {0}, not 0: the payload is not in the schema registry wire format")]
    BadMagic(u8),
    #[error("schema id {0} is unknown to the schema registry")]
    UnknownId(i32),
    #[error("schema id {id} is not registered under subject '{subject}'")]
    WrongSubject { id: i32, subject: String },
    #[error("schema {id} cannot be used for validation: {reason}")]
    UnusableSchema { id: i32, reason: String },
    #[error("Avro body does not match schema {id}: {reason} at byte {offset}")]
    BadBody {
        id: i32,
        reason: &'static str,
        offset: usize,
    },
}

/// Splits a wire-format payload into its schema id and Avro body.
pub fn split(payload: &[u8]) -> Result<(i32, &[u8]), PayloadError> {
    if payload.len() < HEADER_BYTES {
        return Err(PayloadError::TooShort(payload.len()));
    }
    if payload[0] != MAGIC {
        return Err(PayloadError::BadMagic(payload[0]));
    }
    let id = i32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
    Ok((id, &payload[HEADER_BYTES..]))
}

#[derive(Debug, Clone)]
enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Fixed(usize),
    Enum(u32),
    Array(usize),
    Map(usize),
    Union(Vec<usize>),
    Record(Vec<usize>),
    /// A named type resolved after compilation (recursive schemas).
    Ref(Name),
}

/// A schema compiled for validation.
#[derive(Debug, Clone)]
pub struct AvroValidator {
    nodes: Vec<Node>,
    root: usize,
}

struct Compiler {
    nodes: Vec<Node>,
    named: HashMap<Name, usize>,
}

impl Compiler {
    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn compile(&mut self, schema: &Schema, depth: usize) -> Result<usize, String> {
        if depth > MAX_DEPTH * 4 {
            return Err("schema is nested too deeply".into());
        }
        Ok(match schema {
            Schema::Null => self.push(Node::Null),
            Schema::Boolean => self.push(Node::Boolean),
            Schema::Int | Schema::Date | Schema::TimeMillis => self.push(Node::Int),
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => self.push(Node::Long),
            Schema::Float => self.push(Node::Float),
            Schema::Double => self.push(Node::Double),
            Schema::Bytes | Schema::BigDecimal => self.push(Node::Bytes),
            Schema::String => self.push(Node::String),
            Schema::Uuid(u) => match u {
                apache_avro::schema::UuidSchema::String => self.push(Node::String),
                apache_avro::schema::UuidSchema::Bytes => self.push(Node::Bytes),
                apache_avro::schema::UuidSchema::Fixed(f) => {
                    self.named(&f.name, Node::Fixed(f.size))
                }
            },
            Schema::Decimal(d) => match &d.inner {
                apache_avro::schema::InnerDecimalSchema::Bytes => self.push(Node::Bytes),
                apache_avro::schema::InnerDecimalSchema::Fixed(f) => {
                    self.named(&f.name, Node::Fixed(f.size))
                }
            },
            Schema::Fixed(f) => self.named(&f.name, Node::Fixed(f.size)),
            Schema::Duration(f) => self.named(&f.name, Node::Fixed(f.size)),
            Schema::Enum(e) => self.named(&e.name, Node::Enum(e.symbols.len() as u32)),
            Schema::Array(a) => {
                let at = self.push(Node::Null);
                let item = self.compile(&a.items, depth + 1)?;
                self.nodes[at] = Node::Array(item);
                at
            }
            Schema::Map(m) => {
                let at = self.push(Node::Null);
                let value = self.compile(&m.types, depth + 1)?;
                self.nodes[at] = Node::Map(value);
                at
            }
            Schema::Union(u) => {
                let at = self.push(Node::Null);
                let mut branches = Vec::with_capacity(u.variants().len());
                for v in u.variants() {
                    branches.push(self.compile(v, depth + 1)?);
                }
                self.nodes[at] = Node::Union(branches);
                at
            }
            Schema::Record(r) => {
                let at = self.push(Node::Record(Vec::new()));
                self.named.insert(r.name.clone(), at);
                let mut fields = Vec::with_capacity(r.fields.len());
                for f in &r.fields {
                    fields.push(self.compile(&f.schema, depth + 1)?);
                }
                self.nodes[at] = Node::Record(fields);
                at
            }
            Schema::Ref { name } => match self.named.get(name) {
                Some(at) => *at,
                None => self.push(Node::Ref(name.clone())),
            },
        })
    }

    fn named(&mut self, name: &Name, node: Node) -> usize {
        let at = self.push(node);
        self.named.insert(name.clone(), at);
        at
    }
}

/// A cursor over the body with the position for error messages.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    items: u64,
}

type Check = Result<(), &'static str>;

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], &'static str> {
        let end = self.at.checked_add(n).ok_or("length overflows")?;
        let slice = self.bytes.get(self.at..end).ok_or("truncated")?;
        self.at = end;
        Ok(slice)
    }

    /// A zigzag varint of at most `max_bytes` bytes.
    fn varint(&mut self, max_bytes: usize) -> Result<i64, &'static str> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let b = *self.bytes.get(self.at).ok_or("truncated number")?;
            self.at += 1;
            value |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err("number is longer than its type allows")
    }

    fn int(&mut self) -> Result<i64, &'static str> {
        let v = self.varint(5)?;
        if v < i32::MIN as i64 || v > i32::MAX as i64 {
            return Err("int out of range");
        }
        Ok(v)
    }

    fn long(&mut self) -> Result<i64, &'static str> {
        self.varint(10)
    }

    fn length(&mut self) -> Result<usize, &'static str> {
        let n = self.long()?;
        if n < 0 {
            return Err("negative length");
        }
        usize::try_from(n).map_err(|_| "length overflows")
    }

    fn string(&mut self) -> Check {
        let n = self.length()?;
        let s = self.take(n)?;
        std::str::from_utf8(s)
            .map(|_| ())
            .map_err(|_| "string is not UTF-8")
    }

    /// Array and map blocks: counts, negative with a byte size, 0 ends.
    fn blocks(&mut self, mut item: impl FnMut(&mut Self) -> Check) -> Check {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            let count = if count < 0 {
                self.length()?; // the block's byte size, unused
                count.unsigned_abs()
            } else {
                count as u64
            };
            self.items = self.items.saturating_add(count);
            if self.items > MAX_ITEMS {
                return Err("too many array or map items");
            }
            for _ in 0..count {
                item(self)?;
            }
        }
    }
}

impl AvroValidator {
    /// Compiles a self-contained schema (references inlined).
    pub fn new(schema: &Schema) -> Result<AvroValidator, String> {
        let mut c = Compiler {
            nodes: Vec::new(),
            named: HashMap::new(),
        };
        let root = c.compile(schema, 0)?;
        // Resolve forward references now that every named type is known.
        for i in 0..c.nodes.len() {
            if let Node::Ref(name) = &c.nodes[i] {
                let target = *c
                    .named
                    .get(name)
                    .ok_or_else(|| format!("unknown type {}", name.fullname(None)))?;
                c.nodes[i] = c.nodes[target].clone();
            }
        }
        Ok(AvroValidator {
            nodes: c.nodes,
            root,
        })
    }

    /// Checks that `body` is exactly one datum. On failure, the reason and
    /// the byte offset in the body.
    pub fn check(&self, body: &[u8]) -> Result<(), (&'static str, usize)> {
        let mut r = Reader {
            bytes: body,
            at: 0,
            items: 0,
        };
        match self.datum(self.root, &mut r, 0) {
            Ok(()) if r.at == body.len() => Ok(()),
            Ok(()) => Err(("bytes left over after the datum", r.at)),
            Err(reason) => Err((reason, r.at)),
        }
    }

    fn datum(&self, node: usize, r: &mut Reader<'_>, depth: usize) -> Check {
        if depth > MAX_DEPTH {
            return Err("datum nested too deeply");
        }
        match &self.nodes[node] {
            Node::Null => Ok(()),
            Node::Boolean => match r.take(1)?[0] {
                0 | 1 => Ok(()),
                _ => Err("boolean is not 0 or 1"),
            },
            Node::Int => r.int().map(|_| ()),
            Node::Long => r.long().map(|_| ()),
            Node::Float => r.take(4).map(|_| ()),
            Node::Double => r.take(8).map(|_| ()),
            Node::Bytes => {
                let n = r.length()?;
                r.take(n).map(|_| ())
            }
            Node::String => r.string(),
            Node::Fixed(n) => r.take(*n).map(|_| ()),
            Node::Enum(symbols) => {
                let i = r.int()?;
                if i < 0 || i >= *symbols as i64 {
                    return Err("enum index out of range");
                }
                Ok(())
            }
            Node::Array(item) => r.blocks(|r| self.datum(*item, r, depth + 1)),
            Node::Map(value) => r.blocks(|r| {
                r.string()?;
                self.datum(*value, r, depth + 1)
            }),
            Node::Union(branches) => {
                let i = r.long()?;
                let branch = usize::try_from(i)
                    .ok()
                    .and_then(|i| branches.get(i))
                    .ok_or("union index out of range")?;
                self.datum(*branch, r, depth + 1)
            }
            Node::Record(fields) => {
                for f in fields {
                    self.datum(*f, r, depth + 1)?;
                }
                Ok(())
            }
            Node::Ref(_) => Err("unresolved type"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    fn schema(text: &str) -> Schema {
        crate::schema::parse(text, &[], false).unwrap().schema
    }

    fn encode(schema: &Schema, value: Value) -> Vec<u8> {
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap()
    }

    const ORDER: &str = r#"{"type":"record","name":"Order","fields":[
        {"name":"id","type":"string"},
        {"name":"qty","type":"int"},
        {"name":"price","type":"double"},
        {"name":"tags","type":{"type":"array","items":"string"}},
        {"name":"attrs","type":{"type":"map","values":"long"}},
        {"name":"note","type":["null","string"]},
        {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"]}},
        {"name":"digest","type":{"type":"fixed","name":"Digest","size":4}},
        {"name":"ok","type":"boolean"}]}"#;

    fn order_value() -> Value {
        Value::Record(vec![
            ("id".into(), Value::String("o-1".into())),
            ("qty".into(), Value::Int(3)),
            ("price".into(), Value::Double(9.5)),
            (
                "tags".into(),
                Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
            ),
            (
                "attrs".into(),
                Value::Map([("x".to_string(), Value::Long(1))].into_iter().collect()),
            ),
            (
                "note".into(),
                Value::Union(1, Box::new(Value::String("hi".into()))),
            ),
            ("status".into(), Value::Enum(1, "PAID".into())),
            ("digest".into(), Value::Fixed(4, vec![1, 2, 3, 4])),
            ("ok".into(), Value::Boolean(true)),
        ])
    }

    #[test]
    fn a_datum_written_by_apache_avro_is_valid() {
        let s = schema(ORDER);
        let v = AvroValidator::new(&s).unwrap();
        let body = encode(&s, order_value());
        assert_eq!(v.check(&body), Ok(()));
    }

    #[test]
    fn every_kind_of_damage_is_caught_with_its_offset() {
        let s = schema(ORDER);
        let v = AvroValidator::new(&s).unwrap();
        let body = encode(&s, order_value());
        // Any truncation fails.
        for cut in 0..body.len() {
            assert!(v.check(&body[..cut]).is_err(), "truncated at {cut} passed");
        }
        // Trailing bytes fail.
        let mut longer = body.clone();
        longer.push(0);
        assert_eq!(
            v.check(&longer).unwrap_err().0,
            "bytes left over after the datum"
        );
        // A bad enum index (the status byte is 2 = zigzag 1; 4 = index 2).
        let status_at = body.len() - 6;
        let mut bad = body.clone();
        bad[status_at] = 4;
        assert_eq!(v.check(&bad).unwrap_err().0, "enum index out of range");
        // A boolean that is not 0/1.
        let mut bad = body.clone();
        *bad.last_mut().unwrap() = 7;
        assert_eq!(
            v.check(&bad).unwrap_err(),
            ("boolean is not 0 or 1", body.len())
        );
        // Invalid UTF-8 in the first string.
        let mut bad = body.clone();
        bad[1] = 0xff;
        assert_eq!(v.check(&bad).unwrap_err().0, "string is not UTF-8");
        // A union index past the branches.
        let s2 = schema(r#"["null","int"]"#);
        let v2 = AvroValidator::new(&s2).unwrap();
        assert_eq!(v2.check(&[4, 2]).unwrap_err().0, "union index out of range");
        assert_eq!(v2.check(&[2, 2]), Ok(()));
    }

    #[test]
    fn hostile_counts_and_lengths_fail_fast() {
        let s = schema(r#"{"type":"array","items":"null"}"#);
        let v = AvroValidator::new(&s).unwrap();
        // count = huge (zigzag of i64::MAX/2), then nothing.
        let huge = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(v.check(&huge).unwrap_err().0, "too many array or map items");
        let s = schema(r#""bytes""#);
        let v = AvroValidator::new(&s).unwrap();
        assert_eq!(v.check(&huge).unwrap_err().0, "truncated");
        assert_eq!(v.check(&[1]).unwrap_err().0, "negative length");
        let too_long = [0xff; 11];
        assert_eq!(
            AvroValidator::new(&schema(r#""long""#))
                .unwrap()
                .check(&too_long)
                .unwrap_err()
                .0,
            "number is longer than its type allows"
        );
    }

    #[test]
    fn recursive_schemas_validate_and_depth_is_bounded() {
        let s = schema(
            r#"{"type":"record","name":"Node","fields":[{"name":"next","type":["null","Node"]}]}"#,
        );
        let v = AvroValidator::new(&s).unwrap();
        // Three nodes: [1 = branch Node] [1] [0 = null].
        assert_eq!(v.check(&[2, 2, 0]), Ok(()));
        let deep = vec![2u8; 1000];
        assert_eq!(v.check(&deep).unwrap_err().0, "datum nested too deeply");
    }

    #[test]
    fn the_wire_format_header_is_checked() {
        assert_eq!(split(&[0, 0, 0, 0, 7, 1, 2]).unwrap(), (7, &[1u8, 2][..]));
        assert_eq!(split(&[0, 0, 0]).unwrap_err(), PayloadError::TooShort(3));
        assert_eq!(
            split(&[1, 0, 0, 0, 7]).unwrap_err(),
            PayloadError::BadMagic(1)
        );
    }
}
