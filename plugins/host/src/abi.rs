//! Encoding and decoding of the batch formats of plugin ABI version 1
//! (`plugins/ABI.md`). Pure functions over byte slices: no wasmtime here,
//! so the formats are tested on their own.

use bytes::Bytes;

use crate::Record;

/// Fixed bytes of one record before its key.
const RECORD_HEADER_BYTES: usize = 32;

/// Why an output region does not follow the ABI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

fn bad(msg: impl Into<String>) -> FormatError {
    FormatError(msg.into())
}

fn opt_len(b: &Option<Bytes>) -> usize {
    b.as_ref().map_or(0, |b| b.len())
}

/// Bytes `encode_batch` will write for these records.
pub fn batch_len(records: &[Record]) -> usize {
    4 + records
        .iter()
        .map(|r| {
            RECORD_HEADER_BYTES
                + opt_len(&r.key)
                + opt_len(&r.value)
                + r.headers
                    .iter()
                    .map(|(n, v)| 8 + n.len() + opt_len(v))
                    .sum::<usize>()
        })
        .sum::<usize>()
}

/// Sequential writer over a buffer of exactly the right size.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, at: 0 }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }

    fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }

    fn i32(&mut self, v: i32) {
        self.put(&v.to_le_bytes());
    }

    fn i64(&mut self, v: i64) {
        self.put(&v.to_le_bytes());
    }

    fn opt(&mut self, b: &Option<Bytes>) {
        match b {
            Some(b) => self.i32(b.len() as i32),
            None => self.i32(-1),
        }
    }

    pub fn written(&self) -> usize {
        self.at
    }
}

/// Writes a record batch; `buf` must be `batch_len(records)` long.
pub fn encode_batch(records: &[Record], w: &mut Writer<'_>) {
    w.u32(records.len() as u32);
    for (i, r) in records.iter().enumerate() {
        w.i64(r.offset);
        w.i64(r.timestamp);
        w.u32(i as u32);
        w.opt(&r.key);
        w.opt(&r.value);
        w.u32(r.headers.len() as u32);
        if let Some(k) = &r.key {
            w.put(k);
        }
        if let Some(v) = &r.value {
            w.put(v);
        }
        for (name, value) in &r.headers {
            w.u32(name.len() as u32);
            w.put(name.as_bytes());
            w.opt(value);
            if let Some(v) = value {
                w.put(v);
            }
        }
    }
}

/// (key, state) pairs of an aggregate; `None` state means none / delete.
pub type KeyStates = Vec<(Option<Bytes>, Option<Bytes>)>;

/// Bytes of the aggregate state section.
pub fn states_len(states: &[(Option<Bytes>, Option<Bytes>)]) -> usize {
    4 + states
        .iter()
        .map(|(k, s)| 8 + opt_len(k) + opt_len(s))
        .sum::<usize>()
}

pub fn encode_states(states: &[(Option<Bytes>, Option<Bytes>)], w: &mut Writer<'_>) {
    w.u32(states.len() as u32);
    for (key, state) in states {
        w.opt(key);
        if let Some(k) = key {
            w.put(k);
        }
        w.opt(state);
        if let Some(s) = state {
            w.put(s);
        }
    }
}

/// Bounds-checked reader over a guest's output region.
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FormatError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| bad(format!("output ends inside {what} at byte {}", self.at)))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    fn i32(&mut self, what: &str) -> Result<i32, FormatError> {
        Ok(i32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    fn i64(&mut self, what: &str) -> Result<i64, FormatError> {
        Ok(i64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    fn opt_bytes(&mut self, len: i32, what: &str) -> Result<Option<Bytes>, FormatError> {
        match len {
            -1 => Ok(None),
            n if n < 0 => Err(bad(format!("{what} length {n} is negative"))),
            n => Ok(Some(Bytes::copy_from_slice(self.take(n as usize, what)?))),
        }
    }

    pub fn is_done(&self) -> bool {
        self.at == self.buf.len()
    }

    pub fn position(&self) -> usize {
        self.at
    }
}

/// Decodes an output record batch. `inputs` gives offsets to copy and
/// bounds the source indexes.
pub fn decode_batch(r: &mut Reader<'_>, inputs: &[Record]) -> Result<Vec<Record>, FormatError> {
    let count = r.u32("the record count")? as usize;
    // Each record takes at least its fixed header: refuse impossible counts
    // before allocating.
    if count > r.buf.len().saturating_sub(r.at) / RECORD_HEADER_BYTES {
        return Err(bad(format!(
            "record count {count} does not fit in the output"
        )));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let _offset = r.i64("a record")?;
        let timestamp = r.i64("a record")?;
        let source_index = r.u32("a record")?;
        let key_len = r.i32("a record")?;
        let value_len = r.i32("a record")?;
        let header_count = r.u32("a record")? as usize;
        let source = inputs.get(source_index as usize).ok_or_else(|| {
            bad(format!(
                "output record {i} names input {source_index}, but the batch has {}",
                inputs.len()
            ))
        })?;
        let key = r.opt_bytes(key_len, "a key")?;
        let value = r.opt_bytes(value_len, "a value")?;
        if header_count > r.buf.len().saturating_sub(r.at) / 8 {
            return Err(bad(format!(
                "header count {header_count} of record {i} does not fit"
            )));
        }
        let mut headers = Vec::with_capacity(header_count);
        for _ in 0..header_count {
            let name_len = r.u32("a header")? as usize;
            let name = std::str::from_utf8(r.take(name_len, "a header name")?)
                .map_err(|_| bad(format!("a header name of record {i} is not UTF-8")))?
                .to_string();
            let vlen = r.i32("a header")?;
            headers.push((name, r.opt_bytes(vlen, "a header value")?));
        }
        out.push(Record {
            offset: source.offset,
            timestamp,
            key,
            value,
            headers,
            source_index,
        });
    }
    Ok(out)
}

/// Decodes a filter's output: the kept input indexes.
pub fn decode_filter(r: &mut Reader<'_>, input_len: usize) -> Result<Vec<u32>, FormatError> {
    let count = r.u32("the kept count")? as usize;
    if count > input_len {
        return Err(bad(format!("keeps {count} records of {input_len}")));
    }
    let mut kept = Vec::with_capacity(count);
    for _ in 0..count {
        let i = r.u32("the kept indexes")?;
        if i as usize >= input_len || kept.last().is_some_and(|last| *last >= i) {
            return Err(bad(format!(
                "kept index {i} is out of range or not increasing"
            )));
        }
        kept.push(i);
    }
    Ok(kept)
}

/// Decodes an aggregate's state section.
pub fn decode_states(r: &mut Reader<'_>) -> Result<KeyStates, FormatError> {
    let count = r.u32("the state count")? as usize;
    if count > r.buf.len().saturating_sub(r.at) / 8 {
        return Err(bad(format!(
            "state count {count} does not fit in the output"
        )));
    }
    let mut states = Vec::with_capacity(count);
    for _ in 0..count {
        let klen = r.i32("a state key")?;
        let key = r.opt_bytes(klen, "a state key")?;
        let slen = r.i32("a state")?;
        states.push((key, r.opt_bytes(slen, "a state")?));
    }
    Ok(states)
}

/// Checks the source indexes of a batch against its kind's rule.
pub fn check_order(
    records: &[Record],
    input_len: usize,
    kind: crate::Kind,
) -> Result<(), FormatError> {
    use crate::Kind::*;
    match kind {
        Map => {
            if records.len() != input_len {
                return Err(bad(format!(
                    "a map must return {input_len} records, returned {}",
                    records.len()
                )));
            }
            if let Some((i, r)) = records
                .iter()
                .enumerate()
                .find(|(i, r)| r.source_index as usize != *i)
            {
                return Err(bad(format!(
                    "map output {i} names input {}",
                    r.source_index
                )));
            }
        }
        FilterMap => {
            if records
                .windows(2)
                .any(|w| w[1].source_index <= w[0].source_index)
            {
                return Err(bad("filter-map source indexes must strictly increase"));
            }
        }
        FlatMap | Aggregate => {
            if records
                .windows(2)
                .any(|w| w[1].source_index < w[0].source_index)
            {
                return Err(bad("flat-map source indexes must not decrease"));
            }
        }
        Filter => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: i64, key: Option<&str>, value: Option<&str>) -> Record {
        Record {
            offset: 100 + i,
            timestamp: 1000 + i,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: vec![
                ("h".into(), Some(Bytes::from_static(b"hv"))),
                ("n".into(), None),
            ],
            source_index: 0,
        }
    }

    #[test]
    fn a_batch_round_trips_through_the_format() {
        let input = vec![
            record(0, Some("k"), Some("v")),
            record(1, None, None),
            record(2, Some(""), Some("é")),
        ];
        let mut buf = vec![0u8; batch_len(&input)];
        let mut w = Writer::new(&mut buf);
        encode_batch(&input, &mut w);
        assert_eq!(w.written(), buf.len());
        let mut r = Reader::new(&buf);
        let out = decode_batch(&mut r, &input).unwrap();
        assert!(r.is_done());
        for (i, (a, b)) in input.iter().zip(&out).enumerate() {
            assert_eq!(
                (a.offset, a.timestamp, &a.key, &a.value, &a.headers),
                (b.offset, b.timestamp, &b.key, &b.value, &b.headers)
            );
            assert_eq!(b.source_index as usize, i);
        }
        check_order(&out, 3, crate::Kind::Map).unwrap();
    }

    #[test]
    fn malformed_outputs_are_refused_with_a_reason() {
        let input = vec![record(0, None, Some("v"))];
        // Claims 1000 records in 8 bytes.
        assert!(decode_batch(&mut Reader::new(&[0xe8, 3, 0, 0, 0, 0, 0, 0]), &input).is_err());
        // A source index past the input.
        let mut one = vec![0u8; batch_len(&input)];
        encode_batch(&input, &mut Writer::new(&mut one));
        one[4 + 16] = 5;
        let err = decode_batch(&mut Reader::new(&one), &input).unwrap_err();
        assert!(err.0.contains("names input 5"), "{err}");
        // Filters must keep increasing, in-range indexes.
        assert!(decode_filter(&mut Reader::new(&[2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]), 3).is_err());
        assert!(decode_filter(&mut Reader::new(&[1, 0, 0, 0, 9, 0, 0, 0]), 3).is_err());
        assert_eq!(
            decode_filter(&mut Reader::new(&[2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0]), 3).unwrap(),
            vec![0, 2]
        );
        // Truncated anywhere.
        for cut in 0..one.len() {
            let _ = decode_batch(&mut Reader::new(&one[..cut]), &input);
        }
    }
}
