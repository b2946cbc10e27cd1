//! Confluent Schema Registry framing and Avro binary primitives.
//!
//! Records produced with a Confluent serializer start with a 5-byte prefix:
//!
//! ```text
//! offset  size  field
//! 0       1     magic byte, 0
//! 1       4     schema id, u32 big-endian (the registry's id)
//! 5       ...   Avro binary body (no schema, no container header)
//! ```
//!
//! [`split`] and [`frame`] read and write that prefix; [`Reader`] and the
//! `write_*` functions read and write the Avro binary encoding of the
//! primitive types (zig-zag varint `int`/`long`, `float`, `double`,
//! `boolean`, length-prefixed `bytes`/`string`, block counts of arrays and
//! maps, union branch indices).
//!
//! **Why there is no schema-driven decoder.** The body can only be decoded
//! with the writer's schema, which lives in the schema registry, and a
//! plugin cannot fetch it: ABI version 1 gives plugins no I/O (pure
//! functions of input, configuration and state). A general decoder would
//! need the schema passed in configuration and a full schema resolver
//! (~the size of every other module of this SDK together, and a large
//! dependency in every plugin). Plugins typically need a few fields of one
//! known schema: they read them in order with [`Reader`], or route and
//! filter by schema id without decoding the body at all.
//!
//! Only `core` and `alloc` are used.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// The magic byte of the Confluent wire format.
pub const MAGIC: u8 = 0;

/// Bytes of the Confluent prefix: magic byte and schema id.
pub const PREFIX_BYTES: usize = 5;

/// Why bytes are not in the expected format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AvroError {
    /// Fewer than 5 bytes: no Confluent prefix.
    NotFramed,
    /// The first byte is not the magic byte 0.
    BadMagic(u8),
    /// A value needs more bytes than are left.
    Truncated,
    /// A varint longer than 10 bytes.
    VarintTooLong,
    /// A `long` where an `int` (32 bits) was expected.
    IntOutOfRange(i64),
    /// A negative length for `bytes` or `string`.
    NegativeLength(i64),
    /// A `boolean` byte other than 0 or 1.
    InvalidBoolean(u8),
    /// A `string` that is not UTF-8.
    InvalidUtf8,
}

impl fmt::Display for AvroError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AvroError::NotFramed => f.write_str("shorter than the 5-byte Confluent prefix"),
            AvroError::BadMagic(b) => write!(f, "magic byte is {b}, not 0"),
            AvroError::Truncated => f.write_str("truncated Avro value"),
            AvroError::VarintTooLong => f.write_str("varint longer than 10 bytes"),
            AvroError::IntOutOfRange(v) => write!(f, "int out of range: {v}"),
            AvroError::NegativeLength(v) => write!(f, "negative length {v}"),
            AvroError::InvalidBoolean(b) => write!(f, "boolean byte {b}"),
            AvroError::InvalidUtf8 => f.write_str("string is not UTF-8"),
        }
    }
}

impl core::error::Error for AvroError {}

/// A value in the Confluent wire format, split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framed<'a> {
    /// The schema registry id of the writer's schema.
    pub schema_id: u32,
    /// The Avro binary body.
    pub body: &'a [u8],
}

/// Splits a Confluent-framed value into schema id and body.
pub fn split(bytes: &[u8]) -> Result<Framed<'_>, AvroError> {
    let Some((prefix, body)) = bytes.split_first_chunk::<PREFIX_BYTES>() else {
        return Err(AvroError::NotFramed);
    };
    if prefix[0] != MAGIC {
        return Err(AvroError::BadMagic(prefix[0]));
    }
    let schema_id = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
    Ok(Framed { schema_id, body })
}

/// Frames an Avro body for the Confluent wire format.
pub fn frame(schema_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX_BYTES + body.len());
    write_prefix(&mut out, schema_id);
    out.extend_from_slice(body);
    out
}

/// Appends the 5-byte prefix; append the body after it.
pub fn write_prefix(out: &mut Vec<u8>, schema_id: u32) {
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

/// Reads Avro binary values in order from a body.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader at the start of `body`.
    pub fn new(body: &'a [u8]) -> Self {
        Reader { buf: body }
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], AvroError> {
        if len > self.buf.len() {
            return Err(AvroError::Truncated);
        }
        let (head, tail) = self.buf.split_at(len);
        self.buf = tail;
        Ok(head)
    }

    /// A `long`: zig-zag varint.
    pub fn read_long(&mut self) -> Result<i64, AvroError> {
        let mut raw: u64 = 0;
        for i in 0..10 {
            let byte = *self.buf.first().ok_or(AvroError::Truncated)?;
            self.buf = &self.buf[1..];
            raw |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(AvroError::VarintTooLong)
    }

    /// An `int` (also an `enum` symbol index).
    pub fn read_int(&mut self) -> Result<i32, AvroError> {
        let v = self.read_long()?;
        i32::try_from(v).map_err(|_| AvroError::IntOutOfRange(v))
    }

    /// A `boolean`.
    pub fn read_boolean(&mut self) -> Result<bool, AvroError> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(AvroError::InvalidBoolean(b)),
        }
    }

    /// A `float`: 4 bytes little-endian.
    pub fn read_float(&mut self) -> Result<f32, AvroError> {
        let b = self.take(4)?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A `double`: 8 bytes little-endian.
    pub fn read_double(&mut self) -> Result<f64, AvroError> {
        let b = self.take(8)?;
        Ok(f64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }

    /// `bytes`: a `long` length, then that many bytes (borrowed).
    pub fn read_bytes(&mut self) -> Result<&'a [u8], AvroError> {
        let len = self.read_long()?;
        let len = usize::try_from(len).map_err(|_| AvroError::NegativeLength(len))?;
        self.take(len)
    }

    /// A `string`: like `bytes`, UTF-8.
    pub fn read_string(&mut self) -> Result<&'a str, AvroError> {
        core::str::from_utf8(self.read_bytes()?).map_err(|_| AvroError::InvalidUtf8)
    }

    /// A `fixed` of `size` bytes.
    pub fn read_fixed(&mut self, size: usize) -> Result<&'a [u8], AvroError> {
        self.take(size)
    }

    /// The branch index of a `union` (`0` is the first branch, often
    /// `null`).
    pub fn read_union_branch(&mut self) -> Result<i64, AvroError> {
        self.read_long()
    }

    /// The item count of the next block of an `array` or `map`; `0` ends the
    /// value. A negative count (followed by the block's byte size) is
    /// returned as its absolute value, the size skipped.
    pub fn read_block_count(&mut self) -> Result<u64, AvroError> {
        let count = self.read_long()?;
        if count < 0 {
            self.read_long()?;
        }
        Ok(count.unsigned_abs())
    }
}

/// Appends a `long`.
pub fn write_long(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

/// Appends an `int`.
pub fn write_int(out: &mut Vec<u8>, value: i32) {
    write_long(out, i64::from(value));
}

/// Appends a `boolean`.
pub fn write_boolean(out: &mut Vec<u8>, value: bool) {
    out.push(u8::from(value));
}

/// Appends a `float`.
pub fn write_float(out: &mut Vec<u8>, value: f32) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends a `double`.
pub fn write_double(out: &mut Vec<u8>, value: f64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends `bytes`.
pub fn write_bytes(out: &mut Vec<u8>, value: &[u8]) {
    write_long(out, value.len() as i64);
    out.extend_from_slice(value);
}

/// Appends a `string`.
pub fn write_string(out: &mut Vec<u8>, value: &str) {
    write_bytes(out, value.as_bytes());
}

/// Decodes a whole `string` body (a value whose schema is `"string"`).
pub fn string_body(body: &[u8]) -> Result<String, AvroError> {
    let mut reader = Reader::new(body);
    let s = reader.read_string()?;
    Ok(String::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn frames_split_into_schema_id_and_body() {
        let framed = frame(0x01020304, b"body");
        assert_eq!(framed, [0, 1, 2, 3, 4, b'b', b'o', b'd', b'y']);
        assert_eq!(
            split(&framed),
            Ok(Framed {
                schema_id: 0x01020304,
                body: b"body"
            })
        );
        assert_eq!(split(&framed[..4]), Err(AvroError::NotFramed));
        assert_eq!(split(&[1, 0, 0, 0, 0]), Err(AvroError::BadMagic(1)));
        assert_eq!(split(&[0, 0, 0, 0, 7]).unwrap().body, b"");
    }

    #[test]
    fn longs_use_the_zigzag_varints_of_the_spec() {
        // Examples from the Avro specification.
        for (value, encoded) in [
            (0i64, vec![0x00]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (-2, vec![0x03]),
            (2, vec![0x04]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
        ] {
            let mut out = Vec::new();
            write_long(&mut out, value);
            assert_eq!(out, encoded, "encoding {value}");
            assert_eq!(Reader::new(&encoded).read_long(), Ok(value));
        }
        for value in [i64::MIN, i64::MAX, i32::MIN as i64, 1 << 40] {
            let mut out = Vec::new();
            write_long(&mut out, value);
            assert_eq!(Reader::new(&out).read_long(), Ok(value));
        }
        assert_eq!(
            Reader::new(&[0xff; 11]).read_long(),
            Err(AvroError::VarintTooLong)
        );
        assert_eq!(Reader::new(&[0x80]).read_long(), Err(AvroError::Truncated));
    }

    #[test]
    fn a_record_of_primitives_round_trips() {
        let mut body = Vec::new();
        write_string(&mut body, "héllo");
        write_int(&mut body, -7);
        write_boolean(&mut body, true);
        write_double(&mut body, 2.5);
        write_float(&mut body, -1.5);
        write_bytes(&mut body, &[1, 2]);
        write_long(&mut body, 1); // union branch 1
        let framed = frame(42, &body);

        let Framed { schema_id, body } = split(&framed).unwrap();
        assert_eq!(schema_id, 42);
        let mut r = Reader::new(body);
        assert_eq!(r.read_string(), Ok("héllo"));
        assert_eq!(r.read_int(), Ok(-7));
        assert_eq!(r.read_boolean(), Ok(true));
        assert_eq!(r.read_double(), Ok(2.5));
        assert_eq!(r.read_float(), Ok(-1.5));
        assert_eq!(r.read_bytes(), Ok(&[1u8, 2][..]));
        assert_eq!(r.read_union_branch(), Ok(1));
        assert!(r.is_empty());
    }

    #[test]
    fn malformed_values_are_errors() {
        let mut out = Vec::new();
        write_long(&mut out, 1 << 40);
        assert_eq!(
            Reader::new(&out).read_int(),
            Err(AvroError::IntOutOfRange(1 << 40))
        );
        assert_eq!(
            Reader::new(&[0x03]).read_bytes(),
            Err(AvroError::NegativeLength(-2))
        );
        assert_eq!(
            Reader::new(&[0x08, b'a']).read_bytes(),
            Err(AvroError::Truncated)
        );
        assert_eq!(
            Reader::new(&[0x02, 0xff]).read_string(),
            Err(AvroError::InvalidUtf8)
        );
        assert_eq!(
            Reader::new(&[2]).read_boolean(),
            Err(AvroError::InvalidBoolean(2))
        );
    }

    #[test]
    fn negative_block_counts_skip_the_block_size() {
        let mut body = Vec::new();
        write_long(&mut body, -2);
        write_long(&mut body, 4);
        write_int(&mut body, 1);
        write_int(&mut body, 2);
        write_long(&mut body, 0);
        let mut r = Reader::new(&body);
        assert_eq!(r.read_block_count(), Ok(2));
        assert_eq!(r.read_int(), Ok(1));
        assert_eq!(r.read_int(), Ok(2));
        assert_eq!(r.read_block_count(), Ok(0));
        assert_eq!(string_body(&[0x04, b'h', b'i']).as_deref(), Ok("hi"));
    }
}
