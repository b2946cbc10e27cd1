//! The byte formats of plugin ABI version 1: record batches, filter output
//! (kept indices) and aggregate state sections.
//!
//! This module is the codec only: it reads borrowed views out of a byte slice
//! and appends encodings to a `Vec<u8>`. It does no I/O, knows nothing of the
//! exports or of the host, and uses only `core` and `alloc`, so it builds
//! without `std`. [`crate::process`] drives it for the generated exports.
//!
//! All integers are little-endian. A record batch is
//!
//! ```text
//! offset  size  field
//! 0       4     record_count                      u32
//! 4       ...   record_count records, back to back:
//!
//! record:
//!   0     8     offset                            i64  (output: 0)
//!   8     8     timestamp                         i64  ms since the epoch, -1 if none
//!   16    4     source_index                      u32  input: index in the batch;
//!                                                      output: index of the input record
//!   20    4     key_len                           i32  -1 = null key
//!   24    4     value_len                         i32  -1 = null value
//!   28    4     header_count                      u32
//!   32    ...   key bytes, value bytes, then header_count headers:
//!                 4  name_len                     u32
//!                 .  name bytes (UTF-8)
//!                 4  value_len                    i32  -1 = null
//!                 .  value bytes
//! ```
//!
//! Filter output is `kept_count: u32` followed by `kept_count` input indices
//! (`u32`, strictly increasing). An aggregate's input is a record batch
//! followed by a state section, and its output a state section followed by
//! a record batch; a state section is
//!
//! ```text
//! 4   state_count                         u32
//! ... state_count entries:
//!       4  key_len                        i32  -1 = the null key
//!       .  key bytes
//!       4  state_len                      i32  -1 = no state (output: delete it)
//!       .  state bytes
//! ```
//!
//! Every length read from a batch is checked against the bytes actually
//! present before it is used, and a declared record count is checked against
//! the minimum size of that many records before anything is allocated for it.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// The timestamp of a record that has none.
pub const NO_TIMESTAMP: i64 = -1;

/// Bytes of the fixed part of a record: offset, timestamp, source index, key
/// and value lengths, header count.
pub const RECORD_FIXED_BYTES: usize = 32;

/// Bytes of the smallest state entry (null key, no state).
const STATE_ENTRY_MIN_BYTES: usize = 8;

/// Why a batch could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A field needs more bytes than are left.
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the buffer.
        available: usize,
    },
    /// A count declares more entries than the bytes left could hold.
    CountTooLarge {
        /// What was counted.
        what: &'static str,
        /// The declared count.
        declared: u32,
        /// Bytes left in the buffer.
        available: usize,
    },
    /// A length is negative but not `-1` (null).
    InvalidLength {
        /// Which length.
        what: &'static str,
        /// The value read.
        len: i32,
    },
    /// A header name is not UTF-8.
    HeaderNameNotUtf8,
    /// Bytes are left after the last field.
    TrailingBytes {
        /// How many.
        len: usize,
    },
    /// Two state entries for the same key.
    DuplicateStateKey,
    /// A value is too long for its 32-bit length field.
    TooLarge {
        /// What was being written.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated {
                what,
                needed,
                available,
            } => write!(
                f,
                "truncated {what}: needs {needed} bytes, {available} left"
            ),
            WireError::CountTooLarge {
                what,
                declared,
                available,
            } => write!(
                f,
                "{what} count {declared} cannot fit in the {available} bytes left"
            ),
            WireError::InvalidLength { what, len } => {
                write!(f, "invalid {what} length {len}")
            }
            WireError::HeaderNameNotUtf8 => f.write_str("header name is not UTF-8"),
            WireError::TrailingBytes { len } => {
                write!(f, "{len} unexpected bytes after the last field")
            }
            WireError::DuplicateStateKey => f.write_str("two state entries for the same key"),
            WireError::TooLarge { what, len } => {
                write!(f, "{what} of {len} bytes does not fit a 32-bit length")
            }
        }
    }
}

impl core::error::Error for WireError {}

/// A borrowed view of one record of an input batch. Nothing is copied: the
/// key, value and headers point into the batch the host wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    offset: i64,
    timestamp: i64,
    index: u32,
    source_index: u32,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    header_count: u32,
    headers: &'a [u8],
}

impl<'a> Record<'a> {
    /// The record's offset in its source (topic partition or pipeline input).
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Milliseconds since the Unix epoch, or [`NO_TIMESTAMP`] (-1).
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The record's position in the batch (0, 1, 2, ...).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The `source_index` field as written: in an input batch the same as
    /// [`Record::index`]; in an output batch the index of the input record
    /// this one came from.
    pub fn source_index(&self) -> u32 {
        self.source_index
    }

    /// The key, `None` for a null key.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// The value, `None` for a null value (a tombstone).
    pub fn value(&self) -> Option<&'a [u8]> {
        self.value
    }

    /// The key as UTF-8, `None` if it is null or not UTF-8.
    pub fn key_str(&self) -> Option<&'a str> {
        self.key.and_then(|k| core::str::from_utf8(k).ok())
    }

    /// The value as UTF-8, `None` if it is null or not UTF-8.
    pub fn value_str(&self) -> Option<&'a str> {
        self.value.and_then(|v| core::str::from_utf8(v).ok())
    }

    /// The headers in order; names may repeat.
    pub fn headers(&self) -> Headers<'a> {
        Headers {
            buf: self.headers,
            remaining: self.header_count,
        }
    }

    /// The value of the first header named `name`: `None` if there is no
    /// such header, `Some(None)` if its value is null.
    pub fn header(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// An owned copy of the record (timestamp, key, value, headers).
    pub fn into_owned(self) -> OwnedRecord {
        OwnedRecord {
            timestamp: self.timestamp,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            headers: self.owned_headers(),
        }
    }

    /// An owned copy of the record with another value; the old value is not
    /// copied.
    pub fn with_value(self, value: impl Into<Vec<u8>>) -> OwnedRecord {
        OwnedRecord {
            timestamp: self.timestamp,
            key: self.key.map(<[u8]>::to_vec),
            value: Some(value.into()),
            headers: self.owned_headers(),
        }
    }

    fn owned_headers(&self) -> Vec<(String, Option<Vec<u8>>)> {
        self.headers()
            .map(|(n, v)| (String::from(n), v.map(<[u8]>::to_vec)))
            .collect()
    }
}

/// Iterator over a record's headers: `(name, value)`, value `None` if null.
#[derive(Clone, Debug)]
pub struct Headers<'a> {
    buf: &'a [u8],
    remaining: u32,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a str, Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        // The bytes were validated when the record was read, so none of these
        // steps fail; if one did, iteration would simply end.
        let mut cursor = Cursor::new(self.buf);
        let name_len = cursor.u32("header name length").ok()? as usize;
        let name = cursor.take(name_len, "header name").ok()?;
        let name = core::str::from_utf8(name).ok()?;
        let value_len = cursor.i32("header value length").ok()?;
        let value = cursor.optional(value_len, "header value").ok()?;
        self.buf = cursor.rest();
        self.remaining -= 1;
        Some((name, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining as usize))
    }
}

/// A record a plugin emits. Output records carry no offset: whatever the
/// records are written to assigns them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedRecord {
    /// Milliseconds since the Unix epoch, or [`NO_TIMESTAMP`].
    pub timestamp: i64,
    /// The key, `None` for a null key.
    pub key: Option<Vec<u8>>,
    /// The value, `None` for a null value.
    pub value: Option<Vec<u8>>,
    /// Headers in order: `(name, value)`.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Default for OwnedRecord {
    fn default() -> Self {
        OwnedRecord {
            timestamp: NO_TIMESTAMP,
            key: None,
            value: None,
            headers: Vec::new(),
        }
    }
}

impl OwnedRecord {
    /// A record with no timestamp, key, value or headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// This record with `key` as its key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// This record with `value` as its value.
    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// This record with `timestamp` (ms since the epoch, or [`NO_TIMESTAMP`]).
    pub fn with_timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// This record with one more header.
    pub fn with_header(mut self, name: impl Into<String>, value: Option<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value));
        self
    }
}

/// A cursor over a byte slice that checks every length against the bytes
/// left.
#[derive(Clone, Debug)]
struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { buf }
    }

    fn rest(&self) -> &'a [u8] {
        self.buf
    }

    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if len > self.buf.len() {
            return Err(WireError::Truncated {
                what,
                needed: len,
                available: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(len);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let bytes = self.take(N, what)?;
        let mut array = [0u8; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, WireError> {
        self.array(what).map(i32::from_le_bytes)
    }

    /// Bytes of length `len`, `None` for `-1`.
    fn optional(&mut self, len: i32, what: &'static str) -> Result<Option<&'a [u8]>, WireError> {
        match len {
            -1 => Ok(None),
            len if len < 0 => Err(WireError::InvalidLength { what, len }),
            len => self.take(len as usize, what).map(Some),
        }
    }

    /// A count of entries of at least `min_entry_bytes` each, checked against
    /// the bytes left.
    fn count(&mut self, what: &'static str, min_entry_bytes: usize) -> Result<u32, WireError> {
        let declared = self.u32(what)?;
        let available = self.buf.len();
        if (declared as usize).saturating_mul(min_entry_bytes) > available {
            return Err(WireError::CountTooLarge {
                what,
                declared,
                available,
            });
        }
        Ok(declared)
    }
}

/// Reads the records of a batch one at a time, validating each as it goes.
///
/// ```
/// use runnel_plugin::wire::{BatchReader, BatchWriter};
/// use runnel_plugin::OwnedRecord;
///
/// let mut bytes = Vec::new();
/// let mut writer = BatchWriter::new(&mut bytes);
/// writer.push(0, &OwnedRecord::new().with_value("hello")).unwrap();
/// writer.finish();
///
/// let mut reader = BatchReader::new(&bytes).unwrap();
/// let record = reader.next_record().unwrap().unwrap();
/// assert_eq!(record.value(), Some(&b"hello"[..]));
/// assert!(reader.next_record().unwrap().is_none());
/// ```
#[derive(Clone, Debug)]
pub struct BatchReader<'a> {
    cursor: Cursor<'a>,
    declared: u32,
    next_index: u32,
}

impl<'a> BatchReader<'a> {
    /// Starts reading the batch at the beginning of `buf`; bytes after the
    /// batch are left for [`BatchReader::rest`].
    pub fn new(buf: &'a [u8]) -> Result<Self, WireError> {
        let mut cursor = Cursor::new(buf);
        let declared = cursor.count("record", RECORD_FIXED_BYTES)?;
        Ok(BatchReader {
            cursor,
            declared,
            next_index: 0,
        })
    }

    /// The record count the batch declares.
    pub fn declared_count(&self) -> u32 {
        self.declared
    }

    /// The next record, `None` after the last.
    #[inline]
    pub fn next_record(&mut self) -> Result<Option<Record<'a>>, WireError> {
        if self.next_index == self.declared {
            return Ok(None);
        }
        let fixed: [u8; RECORD_FIXED_BYTES] = self.cursor.array("record")?;
        let word = |at: usize| [fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]];
        let offset = i64::from_le_bytes([
            fixed[0], fixed[1], fixed[2], fixed[3], fixed[4], fixed[5], fixed[6], fixed[7],
        ]);
        let timestamp = i64::from_le_bytes([
            fixed[8], fixed[9], fixed[10], fixed[11], fixed[12], fixed[13], fixed[14], fixed[15],
        ]);
        let source_index = u32::from_le_bytes(word(16));
        let key_len = i32::from_le_bytes(word(20));
        let value_len = i32::from_le_bytes(word(24));
        let header_count = u32::from_le_bytes(word(28));
        let key = self.cursor.optional(key_len, "key")?;
        let value = self.cursor.optional(value_len, "value")?;
        let headers = self.skip_headers(header_count)?;
        let index = self.next_index;
        self.next_index += 1;
        Ok(Some(Record {
            offset,
            timestamp,
            index,
            source_index,
            key,
            value,
            header_count,
            headers,
        }))
    }

    /// Validates `count` headers and returns the bytes they occupy.
    fn skip_headers(&mut self, count: u32) -> Result<&'a [u8], WireError> {
        let start = self.cursor.rest();
        for _ in 0..count {
            let name_len = self.cursor.u32("header name length")? as usize;
            let name = self.cursor.take(name_len, "header name")?;
            if core::str::from_utf8(name).is_err() {
                return Err(WireError::HeaderNameNotUtf8);
            }
            let value_len = self.cursor.i32("header value length")?;
            self.cursor.optional(value_len, "header value")?;
        }
        let used = start.len() - self.cursor.rest().len();
        Ok(&start[..used])
    }

    /// The bytes after the records read so far (after the whole batch once
    /// [`BatchReader::next_record`] returned `None`).
    pub fn rest(&self) -> &'a [u8] {
        self.cursor.rest()
    }

    /// Reads the remaining records and checks that nothing follows them.
    pub fn finish(mut self) -> Result<(), WireError> {
        while self.next_record()?.is_some() {}
        match self.rest().len() {
            0 => Ok(()),
            len => Err(WireError::TrailingBytes { len }),
        }
    }
}

impl<'a> Iterator for BatchReader<'a> {
    type Item = Result<Record<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_record() {
            Ok(record) => record.map(Ok),
            Err(e) => {
                // Stop after the first error.
                self.declared = self.next_index;
                Some(Err(e))
            }
        }
    }
}

/// Reads a whole batch at the start of `buf`: its records and the bytes after
/// it.
pub fn read_batch(buf: &[u8]) -> Result<(Vec<Record<'_>>, &[u8]), WireError> {
    let mut reader = BatchReader::new(buf)?;
    let mut records = Vec::with_capacity(reader.declared_count() as usize);
    while let Some(record) = reader.next_record()? {
        records.push(record);
    }
    Ok((records, reader.rest()))
}

/// Appends a record batch to a buffer; the record count is written by
/// [`BatchWriter::finish`].
#[derive(Debug)]
pub struct BatchWriter<'o> {
    out: &'o mut Vec<u8>,
    count_at: usize,
    count: u32,
}

impl<'o> BatchWriter<'o> {
    /// Starts a batch at the end of `out`.
    pub fn new(out: &'o mut Vec<u8>) -> Self {
        let count_at = out.len();
        out.extend_from_slice(&0u32.to_le_bytes());
        BatchWriter {
            out,
            count_at,
            count: 0,
        }
    }

    /// Records written so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Appends `record`, produced from input record `source_index`.
    pub fn push(&mut self, source_index: u32, record: &OwnedRecord) -> Result<(), WireError> {
        self.push_parts(
            source_index,
            record.timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            record
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_deref())),
        )
    }

    /// Appends a copy of an input record, produced from input record
    /// `source_index`.
    pub fn push_record(&mut self, source_index: u32, record: &Record<'_>) -> Result<(), WireError> {
        self.push_parts(
            source_index,
            record.timestamp(),
            record.key(),
            record.value(),
            record.headers(),
        )
    }

    /// Appends an input record (for hosts and tests): with its source
    /// `offset`, and its position in the batch as its source index.
    pub fn push_input(&mut self, offset: i64, record: &OwnedRecord) -> Result<(), WireError> {
        let start = self.out.len();
        let result = self.try_push_parts(
            offset,
            self.count,
            record.timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            record
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_deref())),
        );
        if result.is_err() {
            self.out.truncate(start);
        }
        result
    }

    /// Appends a record from its parts.
    pub fn push_parts<'h>(
        &mut self,
        source_index: u32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    ) -> Result<(), WireError> {
        let start = self.out.len();
        let result = self.try_push_parts(0, source_index, timestamp, key, value, headers);
        if result.is_err() {
            // Leave the batch as it was before this record.
            self.out.truncate(start);
        }
        result
    }

    fn try_push_parts<'h>(
        &mut self,
        offset: i64,
        source_index: u32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    ) -> Result<(), WireError> {
        let out = &mut *self.out;
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&timestamp.to_le_bytes());
        out.extend_from_slice(&source_index.to_le_bytes());
        out.extend_from_slice(&optional_len(key, "key")?.to_le_bytes());
        out.extend_from_slice(&optional_len(value, "value")?.to_le_bytes());
        let header_count_at = out.len();
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(key.unwrap_or_default());
        out.extend_from_slice(value.unwrap_or_default());
        let mut header_count = 0u32;
        for (name, value) in headers {
            out.extend_from_slice(&u32_len(name.len(), "header name")?.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&optional_len(value, "header value")?.to_le_bytes());
            out.extend_from_slice(value.unwrap_or_default());
            header_count += 1;
        }
        out[header_count_at..header_count_at + 4].copy_from_slice(&header_count.to_le_bytes());
        self.count += 1;
        Ok(())
    }

    /// Writes the record count; returns it.
    pub fn finish(self) -> u32 {
        self.out[self.count_at..self.count_at + 4].copy_from_slice(&self.count.to_le_bytes());
        self.count
    }
}

fn u32_len(len: usize, what: &'static str) -> Result<u32, WireError> {
    u32::try_from(len).map_err(|_| WireError::TooLarge { what, len })
}

fn optional_len(bytes: Option<&[u8]>, what: &'static str) -> Result<i32, WireError> {
    match bytes {
        None => Ok(-1),
        Some(b) => i32::try_from(b.len()).map_err(|_| WireError::TooLarge { what, len: b.len() }),
    }
}

/// Appends a filter's output (kept indices) to a buffer; the count is
/// written by [`IndexWriter::finish`].
#[derive(Debug)]
pub struct IndexWriter<'o> {
    out: &'o mut Vec<u8>,
    count_at: usize,
    count: u32,
}

impl<'o> IndexWriter<'o> {
    /// Starts the output at the end of `out`, with room for `capacity`
    /// indices.
    pub fn new(out: &'o mut Vec<u8>, capacity: u32) -> Self {
        let count_at = out.len();
        out.reserve(4 + 4 * capacity as usize);
        out.extend_from_slice(&0u32.to_le_bytes());
        IndexWriter {
            out,
            count_at,
            count: 0,
        }
    }

    /// Keeps input record `index`. Indices must be pushed in increasing
    /// order.
    #[inline]
    pub fn push(&mut self, index: u32) {
        self.out.extend_from_slice(&index.to_le_bytes());
        self.count += 1;
    }

    /// Writes the count; returns it.
    pub fn finish(self) -> u32 {
        self.out[self.count_at..self.count_at + 4].copy_from_slice(&self.count.to_le_bytes());
        self.count
    }
}

/// Reads a filter's output: the kept indices. Does not check their order.
pub fn read_indices(buf: &[u8]) -> Result<Vec<u32>, WireError> {
    let mut cursor = Cursor::new(buf);
    let count = cursor.count("index", 4)?;
    let mut indices = Vec::with_capacity(count as usize);
    for _ in 0..count {
        indices.push(cursor.u32("index")?);
    }
    match cursor.rest().len() {
        0 => Ok(indices),
        len => Err(WireError::TrailingBytes { len }),
    }
}

/// One entry of an aggregate state section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateEntry<'a> {
    /// The key, `None` for the null key.
    pub key: Option<&'a [u8]>,
    /// The key's state, `None` if it has none (on output: delete it).
    pub state: Option<&'a [u8]>,
}

/// Reads a state section at the start of `buf`; returns its entries and the
/// bytes after it.
pub fn read_states(buf: &[u8]) -> Result<(Vec<StateEntry<'_>>, &[u8]), WireError> {
    let mut cursor = Cursor::new(buf);
    let count = cursor.count("state", STATE_ENTRY_MIN_BYTES)?;
    let mut entries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let key_len = cursor.i32("state key length")?;
        let key = cursor.optional(key_len, "state key")?;
        let state_len = cursor.i32("state length")?;
        let state = cursor.optional(state_len, "state")?;
        entries.push(StateEntry { key, state });
    }
    Ok((entries, cursor.rest()))
}

/// Appends a state section with the given entries.
pub fn write_states<'e>(
    out: &mut Vec<u8>,
    entries: impl ExactSizeIterator<Item = StateEntry<'e>>,
) -> Result<(), WireError> {
    let start = out.len();
    let result = try_write_states(out, entries);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn try_write_states<'e>(
    out: &mut Vec<u8>,
    entries: impl ExactSizeIterator<Item = StateEntry<'e>>,
) -> Result<(), WireError> {
    out.extend_from_slice(&u32_len(entries.len(), "state section")?.to_le_bytes());
    for entry in entries {
        out.extend_from_slice(&optional_len(entry.key, "state key")?.to_le_bytes());
        out.extend_from_slice(entry.key.unwrap_or_default());
        out.extend_from_slice(&optional_len(entry.state, "state")?.to_le_bytes());
        out.extend_from_slice(entry.state.unwrap_or_default());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn sample() -> Vec<OwnedRecord> {
        vec![
            OwnedRecord::new()
                .with_key("k1")
                .with_value("v1")
                .with_timestamp(1_700_000_000_000)
                .with_header("trace", Some(b"abc".to_vec()))
                .with_header("empty", None),
            OwnedRecord::new(),
            OwnedRecord::new()
                .with_value(Vec::new())
                .with_key(Vec::new()),
        ]
    }

    fn encode(records: &[OwnedRecord]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = BatchWriter::new(&mut out);
        for (i, r) in records.iter().enumerate() {
            writer.push(i as u32, r).unwrap();
        }
        writer.finish();
        out
    }

    #[test]
    fn encoded_batch_has_the_documented_layout() {
        let bytes = encode(&[OwnedRecord::new()
            .with_key("k")
            .with_value("vv")
            .with_timestamp(7)
            .with_header("h", None)]);
        let mut expected = Vec::new();
        expected.extend_from_slice(&1u32.to_le_bytes()); // record_count
        expected.extend_from_slice(&0i64.to_le_bytes()); // offset
        expected.extend_from_slice(&7i64.to_le_bytes()); // timestamp
        expected.extend_from_slice(&0u32.to_le_bytes()); // source_index
        expected.extend_from_slice(&1i32.to_le_bytes()); // key_len
        expected.extend_from_slice(&2i32.to_le_bytes()); // value_len
        expected.extend_from_slice(&1u32.to_le_bytes()); // header_count
        expected.extend_from_slice(b"kvv");
        expected.extend_from_slice(&1u32.to_le_bytes()); // name_len
        expected.extend_from_slice(b"h");
        expected.extend_from_slice(&(-1i32).to_le_bytes()); // null header value
        assert_eq!(bytes, expected);
    }

    #[test]
    fn records_round_trip_through_the_codec() {
        let records = sample();
        let bytes = encode(&records);
        let (read, rest) = read_batch(&bytes).unwrap();
        assert!(rest.is_empty());
        let owned: Vec<OwnedRecord> = read.iter().map(|r| r.into_owned()).collect();
        assert_eq!(owned, records);
        assert_eq!(read[0].key_str(), Some("k1"));
        assert_eq!(read[0].value_str(), Some("v1"));
        assert_eq!(read[0].header("trace"), Some(Some(&b"abc"[..])));
        assert_eq!(read[0].header("empty"), Some(None));
        assert_eq!(read[0].header("missing"), None);
        assert_eq!(read[1].key(), None);
        assert_eq!(read[1].value(), None);
        assert_eq!(read[1].timestamp(), NO_TIMESTAMP);
        assert_eq!(read[2].key(), Some(&b""[..]));
        assert_eq!(
            read.iter().map(|r| r.index()).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn input_offsets_are_read_and_output_offsets_are_zero() {
        let mut bytes = encode(&sample()[..1]);
        bytes[4..12].copy_from_slice(&42i64.to_le_bytes());
        let (read, _) = read_batch(&bytes).unwrap();
        assert_eq!(read[0].offset(), 42);
        let mut out = Vec::new();
        let mut writer = BatchWriter::new(&mut out);
        writer.push_record(5, &read[0]).unwrap();
        writer.finish();
        assert_eq!(&out[4..12], &0i64.to_le_bytes());
        assert_eq!(&out[20..24], &5u32.to_le_bytes());
    }

    #[test]
    fn every_truncation_of_a_batch_is_an_error() {
        let bytes = encode(&sample());
        for len in 0..bytes.len() {
            assert!(
                read_batch(&bytes[..len]).is_err(),
                "a batch cut at {len} bytes was accepted"
            );
        }
    }

    #[test]
    fn a_declared_count_larger_than_the_bytes_is_refused_before_allocating() {
        let mut bytes = u32::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 64]);
        assert_eq!(
            BatchReader::new(&bytes).unwrap_err(),
            WireError::CountTooLarge {
                what: "record",
                declared: u32::MAX,
                available: 64
            }
        );
    }

    #[test]
    fn negative_lengths_other_than_null_are_refused() {
        let mut bytes = encode(&sample()[..1]);
        bytes[24..28].copy_from_slice(&(-2i32).to_le_bytes());
        assert_eq!(
            read_batch(&bytes).unwrap_err(),
            WireError::InvalidLength {
                what: "key",
                len: -2
            }
        );
    }

    #[test]
    fn header_names_must_be_utf8() {
        let mut bytes = encode(&[OwnedRecord::new().with_header("h", None)]);
        bytes[40] = 0xff; // the name byte
        assert_eq!(
            read_batch(&bytes).unwrap_err(),
            WireError::HeaderNameNotUtf8
        );
    }

    #[test]
    fn finish_refuses_trailing_bytes() {
        let mut bytes = encode(&sample());
        assert!(BatchReader::new(&bytes).unwrap().finish().is_ok());
        bytes.push(0);
        assert_eq!(
            BatchReader::new(&bytes).unwrap().finish(),
            Err(WireError::TrailingBytes { len: 1 })
        );
    }

    #[test]
    fn the_iterator_stops_after_an_error() {
        let bytes = encode(&sample());
        let results: Vec<_> = BatchReader::new(&bytes[..bytes.len() - 1])
            .unwrap()
            .collect();
        assert_eq!(results.len(), 3);
        assert!(results[2].is_err());
    }

    #[test]
    fn indices_round_trip() {
        let mut out = Vec::new();
        let mut writer = IndexWriter::new(&mut out, 3);
        writer.push(0);
        writer.push(2);
        assert_eq!(writer.finish(), 2);
        assert_eq!(out, [2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(read_indices(&out).unwrap(), vec![0, 2]);
        assert!(read_indices(&out[..11]).is_err());
    }

    #[test]
    fn state_sections_round_trip() {
        let entries = vec![
            StateEntry {
                key: Some(b"a"),
                state: Some(b"\x01\x00"),
            },
            StateEntry {
                key: None,
                state: None,
            },
        ];
        let mut out = Vec::new();
        write_states(&mut out, entries.iter().copied()).unwrap();
        out.push(9);
        let (read, rest) = read_states(&out).unwrap();
        assert_eq!(read, entries);
        assert_eq!(rest, [9]);
        for len in 0..out.len() - 1 {
            assert!(read_states(&out[..len]).is_err(), "cut at {len}");
        }
    }
}
