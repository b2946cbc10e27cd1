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
/// Deepest nesting of a datum (recursive schemas: a linked list of this
/// many nodes validates; each level costs a few hundred bytes of stack).
pub const MAX_DEPTH: usize = 256;
/// Array or map items one datum may hold, beyond eight per byte of its
/// encoding: zero-byte items (nulls, empty records) cost time but no
/// input, so their count is bounded by the input's size.
pub const ITEMS_PER_DATUM: u64 = 1024;

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

/// One step of a compiled schema. A record is a program of steps; arrays,
/// maps, unions and nested records run other programs.
#[derive(Debug, Clone)]
enum Op {
    /// Fixed-size bytes: floats, doubles, fixed (merged when adjacent).
    Skip(usize),
    Boolean,
    Int,
    Long,
    Bytes,
    String,
    Enum(u32),
    Array(usize),
    Map(usize),
    Union(Box<[usize]>),
    Call(usize),
}

/// A schema compiled for validation: programs of [`Op`]s, run over the
/// bytes without recursion inside a record.
#[derive(Debug, Clone)]
pub struct AvroValidator {
    programs: Vec<Vec<Op>>,
    /// Whether each program is made of leaves only.
    flat: Vec<bool>,
    root: usize,
}

struct Compiler<'s> {
    programs: Vec<Vec<Op>>,
    /// Definitions of every named type, for references.
    definitions: HashMap<Name, &'s Schema>,
    /// Program of each record compiled (or being compiled).
    records: HashMap<Name, usize>,
    /// Nesting of `emit`, bounded.
    depth: usize,
}

fn collect<'s>(schema: &'s Schema, out: &mut HashMap<Name, &'s Schema>, depth: usize) {
    if depth > MAX_DEPTH * 4 {
        return;
    }
    match schema {
        Schema::Record(r) => {
            out.entry(r.name.clone()).or_insert(schema);
            for f in &r.fields {
                collect(&f.schema, out, depth + 1);
            }
        }
        Schema::Enum(e) => {
            out.entry(e.name.clone()).or_insert(schema);
        }
        Schema::Fixed(f) | Schema::Duration(f) => {
            out.entry(f.name.clone()).or_insert(schema);
        }
        Schema::Array(a) => collect(&a.items, out, depth + 1),
        Schema::Map(m) => collect(&m.types, out, depth + 1),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect(v, out, depth + 1)),
        _ => {}
    }
}

impl<'s> Compiler<'s> {
    /// A program validating one datum of `schema`.
    fn program(&mut self, schema: &'s Schema) -> Result<usize, String> {
        if let Schema::Ref { name } = schema {
            let def = *self
                .definitions
                .get(name)
                .ok_or_else(|| format!("unknown type {}", name.fullname(None)))?;
            return self.program(def);
        }
        if let Schema::Record(r) = schema {
            if let Some(p) = self.records.get(&r.name) {
                return Ok(*p);
            }
            let at = self.programs.len();
            self.programs.push(Vec::new());
            self.records.insert(r.name.clone(), at);
            let mut ops = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                self.emit(&f.schema, &mut ops)?;
            }
            self.programs[at] = ops;
            return Ok(at);
        }
        let mut ops = Vec::new();
        self.emit(schema, &mut ops)?;
        self.programs.push(ops);
        Ok(self.programs.len() - 1)
    }

    fn emit(&mut self, schema: &'s Schema, ops: &mut Vec<Op>) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH * 4 {
            return Err("schema is nested too deeply".into());
        }
        let skip = |ops: &mut Vec<Op>, n: usize| match ops.last_mut() {
            // Saturating: an absurd size then fails as truncated input.
            Some(Op::Skip(m)) => *m = m.saturating_add(n),
            _ => ops.push(Op::Skip(n)),
        };
        use apache_avro::schema::{InnerDecimalSchema, UuidSchema};
        match schema {
            Schema::Null => {}
            Schema::Boolean => ops.push(Op::Boolean),
            Schema::Int | Schema::Date | Schema::TimeMillis => ops.push(Op::Int),
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => ops.push(Op::Long),
            Schema::Float => skip(ops, 4),
            Schema::Double => skip(ops, 8),
            Schema::Bytes | Schema::BigDecimal => ops.push(Op::Bytes),
            Schema::String => ops.push(Op::String),
            Schema::Uuid(UuidSchema::String) => ops.push(Op::String),
            Schema::Uuid(UuidSchema::Bytes) => ops.push(Op::Bytes),
            Schema::Uuid(UuidSchema::Fixed(f)) | Schema::Fixed(f) | Schema::Duration(f) => {
                skip(ops, f.size)
            }
            Schema::Decimal(d) => match &d.inner {
                InnerDecimalSchema::Bytes => ops.push(Op::Bytes),
                InnerDecimalSchema::Fixed(f) => skip(ops, f.size),
            },
            Schema::Enum(e) => ops.push(Op::Enum(e.symbols.len() as u32)),
            Schema::Array(a) => {
                let p = self.program(&a.items)?;
                ops.push(Op::Array(p));
            }
            Schema::Map(m) => {
                let p = self.program(&m.types)?;
                ops.push(Op::Map(p));
            }
            Schema::Union(u) => {
                let mut branches = Vec::with_capacity(u.variants().len());
                for v in u.variants() {
                    branches.push(self.program(v)?);
                }
                ops.push(Op::Union(branches.into_boxed_slice()));
            }
            Schema::Record(_) => {
                let p = self.program(schema)?;
                ops.push(Op::Call(p));
            }
            Schema::Ref { name } => {
                let def = *self
                    .definitions
                    .get(name)
                    .ok_or_else(|| format!("unknown type {}", name.fullname(None)))?;
                self.depth -= 1;
                return self.emit(def, ops);
            }
        }
        self.depth -= 1;
        Ok(())
    }
}

/// A cursor over the body with the position for error messages.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Array and map items left to read.
    items_left: u64,
}

type Check = Result<(), &'static str>;

impl Reader<'_> {
    #[inline(always)]
    fn skip(&mut self, n: usize) -> Check {
        if self.bytes.len() - self.at < n {
            return Err("truncated");
        }
        self.at += n;
        Ok(())
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&[u8], &'static str> {
        if self.bytes.len() - self.at < n {
            return Err("truncated");
        }
        let slice = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(slice)
    }

    /// A zigzag varint of at most `max_bytes` bytes; one-byte values (the
    /// common case for lengths, counts and indexes) take the fast path.
    #[inline(always)]
    fn varint(&mut self, max_bytes: usize) -> Result<i64, &'static str> {
        let b = *self.bytes.get(self.at).ok_or("truncated number")?;
        if b < 0x80 {
            self.at += 1;
            return Ok((b >> 1) as i64 ^ -((b & 1) as i64));
        }
        self.varint_long(max_bytes)
    }

    #[inline]
    fn varint_long(&mut self, max_bytes: usize) -> Result<i64, &'static str> {
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

    #[inline(always)]
    fn int(&mut self) -> Result<i64, &'static str> {
        let v = self.varint(5)?;
        if v < i32::MIN as i64 || v > i32::MAX as i64 {
            return Err("int out of range");
        }
        Ok(v)
    }

    #[inline(always)]
    fn long(&mut self) -> Result<i64, &'static str> {
        self.varint(10)
    }

    #[inline(always)]
    fn length(&mut self) -> Result<usize, &'static str> {
        let n = self.long()?;
        if n < 0 {
            return Err("negative length");
        }
        usize::try_from(n).map_err(|_| "length overflows")
    }

    #[inline(always)]
    fn string(&mut self) -> Check {
        let n = self.length()?;
        let s = self.take(n)?;
        // Most strings are ASCII; the full UTF-8 check runs for the rest.
        if s.is_ascii() || std::str::from_utf8(s).is_ok() {
            Ok(())
        } else {
            Err("string is not UTF-8")
        }
    }

    /// Array and map blocks: counts, negative with a byte size, 0 ends.
    #[inline(always)]
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
            if count > self.items_left {
                return Err("more array or map items than the datum's size allows");
            }
            self.items_left -= count;
            for _ in 0..count {
                item(self)?;
            }
        }
    }
}

impl AvroValidator {
    /// Compiles a self-contained schema (references inlined).
    pub fn new(schema: &Schema) -> Result<AvroValidator, String> {
        let mut definitions = HashMap::new();
        collect(schema, &mut definitions, 0);
        let mut c = Compiler {
            programs: Vec::new(),
            definitions,
            records: HashMap::new(),
            depth: 0,
        };
        let root = c.program(schema)?;
        let flat = c
            .programs
            .iter()
            .map(|p| p.iter().all(Op::is_leaf))
            .collect();
        Ok(AvroValidator {
            programs: c.programs,
            flat,
            root,
        })
    }

    /// Checks that `body` is exactly one datum. On failure, the reason and
    /// the byte offset in the body.
    pub fn check(&self, body: &[u8]) -> Result<(), (&'static str, usize)> {
        let mut r = Reader {
            bytes: body,
            at: 0,
            items_left: ITEMS_PER_DATUM + 8 * body.len() as u64,
        };
        match self.run(self.root, &mut r, 0) {
            Ok(()) if r.at == body.len() => Ok(()),
            Ok(()) => Err(("bytes left over after the datum", r.at)),
            Err(reason) => Err((reason, r.at)),
        }
    }

    /// Runs one program; `depth` counts the programs running above it.
    fn run(&self, program: usize, r: &mut Reader<'_>, depth: usize) -> Check {
        if depth > MAX_DEPTH {
            return Err("datum nested too deeply");
        }
        self.run_ops(&self.programs[program], r, depth)
    }

    fn run_ops(&self, ops: &[Op], r: &mut Reader<'_>, depth: usize) -> Check {
        for op in ops {
            match op {
                Op::Array(item) => {
                    if depth >= MAX_DEPTH {
                        return Err("datum nested too deeply");
                    }
                    // Items made of leaves only (the common array of
                    // small records) run without a call per item.
                    let flat = self.flat[*item];
                    let item = &self.programs[*item];
                    if flat {
                        r.blocks(|r| item.iter().try_for_each(|op| leaf(op, r)))?
                    } else {
                        r.blocks(|r| self.run_ops(item, r, depth + 1))?
                    }
                }
                Op::Map(value) => {
                    if depth >= MAX_DEPTH {
                        return Err("datum nested too deeply");
                    }
                    let value = &self.programs[*value];
                    r.blocks(|r| {
                        r.string()?;
                        self.run_ops(value, r, depth + 1)
                    })?
                }
                Op::Union(branches) => {
                    let i = r.long()?;
                    let branch = usize::try_from(i)
                        .ok()
                        .and_then(|i| branches.get(i))
                        .ok_or("union index out of range")?;
                    self.run(*branch, r, depth + 1)?;
                }
                Op::Call(p) => self.run(*p, r, depth + 1)?,
                leaf_op => leaf(leaf_op, r)?,
            }
        }
        Ok(())
    }
}

impl Op {
    fn is_leaf(&self) -> bool {
        !matches!(self, Op::Array(_) | Op::Map(_) | Op::Union(_) | Op::Call(_))
    }
}

/// One step that reads a single value (no nested program).
#[inline(always)]
fn leaf(op: &Op, r: &mut Reader<'_>) -> Check {
    match op {
        Op::Skip(n) => r.skip(*n),
        Op::Boolean => match r.take(1)?[0] {
            0 | 1 => Ok(()),
            _ => Err("boolean is not 0 or 1"),
        },
        Op::Int => r.int().map(|_| ()),
        Op::Long => r.long().map(|_| ()),
        Op::Bytes => {
            let n = r.length()?;
            r.skip(n)
        }
        Op::String => r.string(),
        Op::Enum(symbols) => {
            let i = r.int()?;
            if i < 0 || i >= *symbols as i64 {
                return Err("enum index out of range");
            }
            Ok(())
        }
        Op::Array(_) | Op::Map(_) | Op::Union(_) | Op::Call(_) => Err("not a leaf"),
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
        assert_eq!(
            v.check(&huge).unwrap_err().0,
            "more array or map items than the datum's size allows"
        );
        // Zero-byte items cost no input, so a tiny body may hold only a few.
        let mut many = Vec::new();
        let mut n: u64 = 9_999_999 << 1;
        while n >= 0x80 {
            many.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        many.push(n as u8);
        many.push(0);
        let started = std::time::Instant::now();
        assert!(v.check(&many).is_err());
        assert!(started.elapsed() < std::time::Duration::from_millis(5));
        // A real array of nulls within the budget is fine.
        assert_eq!(v.check(&[200, 15, 0]), Ok(()));
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
        // A linked list of 200 nodes is valid; one deeper than the limit is
        // refused rather than exhausting the stack.
        let mut list = vec![2u8; 200];
        list.push(0);
        assert_eq!(v.check(&list), Ok(()));
        let deep = vec![2u8; 4 * MAX_DEPTH];
        assert_eq!(v.check(&deep).unwrap_err().0, "datum nested too deeply");
    }

    /// Differential check against apache-avro's decoder: for damaged
    /// encodings of a nested schema, the validator accepts exactly what
    /// the decoder reads completely.
    #[test]
    fn the_validator_agrees_with_apache_avro_on_damaged_data() {
        let text = r#"{"type":"record","name":"Doc","fields":[
            {"name":"id","type":"long"},
            {"name":"title","type":"string"},
            {"name":"ok","type":"boolean"},
            {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B","C"]}},
            {"name":"lines","type":{"type":"array","items":{"type":"record","name":"Line","fields":[
                {"name":"n","type":"int"},{"name":"s","type":["null","string"]}]}}},
            {"name":"grid","type":{"type":"array","items":{"type":"array","items":"float"}}},
            {"name":"meta","type":{"type":"map","values":"bytes"}}]}"#;
        let s = schema(text);
        let v = AvroValidator::new(&s).unwrap();
        let value = Value::Record(vec![
            ("id".into(), Value::Long(-123_456_789_012)),
            ("title".into(), Value::String("größe".into())),
            ("ok".into(), Value::Boolean(false)),
            ("kind".into(), Value::Enum(2, "C".into())),
            (
                "lines".into(),
                Value::Array(
                    (0..5)
                        .map(|i| {
                            Value::Record(vec![
                                ("n".into(), Value::Int(i * 1000 - 2000)),
                                (
                                    "s".into(),
                                    if i % 2 == 0 {
                                        Value::Union(0, Box::new(Value::Null))
                                    } else {
                                        Value::Union(1, Box::new(Value::String(format!("l{i}"))))
                                    },
                                ),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "grid".into(),
                Value::Array(vec![
                    Value::Array(vec![Value::Float(1.5), Value::Float(-2.0)]),
                    Value::Array(vec![]),
                ]),
            ),
            (
                "meta".into(),
                Value::Map(
                    [("k".to_string(), Value::Bytes(vec![0, 255]))]
                        .into_iter()
                        .collect(),
                ),
            ),
        ]);
        let body = encode(&s, value);
        assert_eq!(v.check(&body), Ok(()));
        let decodes = |bytes: &[u8]| {
            let mut rest = bytes;
            #[allow(deprecated)] // the plain whole-datum decoder of this version
            let ok = apache_avro::from_avro_datum(&s, &mut rest, None).is_ok();
            ok && rest.is_empty()
        };
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let mut damaged = body.clone();
            match next() % 3 {
                0 => {
                    let at = (next() as usize) % damaged.len();
                    damaged[at] = next() as u8;
                }
                1 => damaged.truncate((next() as usize) % damaged.len()),
                _ => {
                    let at = (next() as usize) % damaged.len();
                    damaged.insert(at, next() as u8);
                }
            }
            assert_eq!(
                v.check(&damaged).is_ok(),
                decodes(&damaged),
                "seed {seed}, round {round}: {damaged:?}"
            );
        }
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
