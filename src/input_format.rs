//! The input format of `runnel produce -f` (rpk's `-f`): how a record is
//! read from stdin, as fields between literal delimiters.
//!
//! | token | meaning |
//! |---|---|
//! | `%t` | topic |
//! | `%k` | key (empty: no key) |
//! | `%v` | value |
//! | `%p` | partition number |
//! | `%T` | timestamp, ms since the epoch |
//! | `%h` | headers, `KEY=VALUE` pairs separated by `,` |
//! | `%%` | a literal `%` |
//! | `\n` `\t` `\r` `\\` | newline, tab, carriage return, backslash |
//!
//! Any other text is a literal that must appear in the input as it is. A
//! field reads up to the literal after it, so two fields need a literal
//! between them; a format that ends with a field gets a `\n` after it.
//! For example `-f '%k %v\n'` reads `key value` lines, and
//! `-f '%t\t%p\t%v\n'` a topic, partition and value per line.

use std::io::{BufRead, Read};

/// Largest field (and line) read from the input: a bound on memory for
/// input without delimiters; Kafka's default record limit is 1 MiB.
pub const MAX_FIELD_BYTES: usize = 16 << 20;
/// Most headers one record may carry.
pub const MAX_HEADERS: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(Vec<u8>),
    Topic,
    Key,
    Value,
    Partition,
    Timestamp,
    Headers,
}

#[derive(Clone, Debug)]
pub struct InputFormat {
    parts: Vec<Part>,
}

/// One record read from the input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InputRecord {
    pub topic: Option<String>,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub partition: Option<i32>,
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl InputFormat {
    pub fn parse(format: &str) -> Result<InputFormat, String> {
        let mut parts: Vec<Part> = Vec::new();
        let mut literal = Vec::new();
        let mut chars = format.chars();
        let flush = |literal: &mut Vec<u8>, parts: &mut Vec<Part>| {
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(literal)));
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => literal.push(b'\n'),
                    Some('t') => literal.push(b'\t'),
                    Some('r') => literal.push(b'\r'),
                    Some('\\') => literal.push(b'\\'),
                    other => {
                        return Err(format!(
                            "-f: unknown escape \\{} (\\n, \\t, \\r or \\\\)",
                            other.map(String::from).unwrap_or_default()
                        ))
                    }
                },
                '%' => {
                    let field = match chars.next() {
                        Some('%') => {
                            literal.push(b'%');
                            continue;
                        }
                        Some('t') => Part::Topic,
                        Some('k') => Part::Key,
                        Some('v') => Part::Value,
                        Some('p') => Part::Partition,
                        Some('T') => Part::Timestamp,
                        Some('h') => Part::Headers,
                        other => {
                            return Err(format!(
                                "-f: unknown field %{} (%t, %k, %v, %p, %T, %h or %%)",
                                other.map(String::from).unwrap_or_default()
                            ))
                        }
                    };
                    flush(&mut literal, &mut parts);
                    if parts.last().is_some_and(|p| !matches!(p, Part::Literal(_))) {
                        return Err(
                            "-f: two fields in a row need a delimiter between them".to_string()
                        );
                    }
                    if parts.contains(&field) {
                        return Err(format!("-f: {field:?} appears twice"));
                    }
                    parts.push(field);
                }
                c => {
                    let mut buf = [0u8; 4];
                    literal.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        flush(&mut literal, &mut parts);
        if !parts.contains(&Part::Value) {
            return Err("-f: the format has no %v (value)".to_string());
        }
        if !matches!(parts.last(), Some(Part::Literal(_))) {
            parts.push(Part::Literal(b"\n".to_vec()));
        }
        Ok(InputFormat { parts })
    }

    /// Whether records name their topic (`%t`).
    pub fn has_topic(&self) -> bool {
        self.parts.contains(&Part::Topic)
    }

    /// Reads the next record; `None` at the end of the input.
    pub fn read<R: BufRead>(&self, r: &mut R) -> Result<Option<InputRecord>, String> {
        if r.fill_buf()
            .map_err(|e| format!("reading stdin: {e}"))?
            .is_empty()
        {
            return Ok(None);
        }
        self.read_rest(r, 0, InputRecord::default()).map(Some)
    }

    /// Reads the parts from `from` on into `record`.
    fn read_rest<R: BufRead>(
        &self,
        r: &mut R,
        from: usize,
        mut record: InputRecord,
    ) -> Result<InputRecord, String> {
        let mut i = from;
        while i < self.parts.len() {
            let last = i + 1 == self.parts.len();
            match &self.parts[i] {
                Part::Literal(lit) => {
                    let mut got = Vec::with_capacity(lit.len());
                    std::io::Read::take(&mut *r, lit.len() as u64)
                        .read_to_end(&mut got)
                        .map_err(|e| format!("reading stdin: {e}"))?;
                    if got.is_empty() && last {
                        return Ok(record);
                    }
                    if got != *lit {
                        return Err(format!(
                            "expected {:?} but read {:?}",
                            String::from_utf8_lossy(lit),
                            String::from_utf8_lossy(&got)
                        ));
                    }
                    i += 1;
                }
                field => {
                    let delimiter = match self.parts.get(i + 1) {
                        Some(Part::Literal(d)) => d.clone(),
                        _ => b"\n".to_vec(),
                    };
                    let (bytes, found) = read_until(r, &delimiter)?;
                    let next_is_last = i + 2 == self.parts.len();
                    if !found && !next_is_last {
                        return Err(format!(
                            "the input ended inside a record (no {:?} after {field:?})",
                            String::from_utf8_lossy(&delimiter)
                        ));
                    }
                    set(&mut record, field, bytes)?;
                    i += 2;
                }
            }
        }
        Ok(record)
    }
}

/// Reads up to and including `delimiter`; returns what came before it and
/// whether it was found (else the input ended).
fn read_until<R: BufRead>(r: &mut R, delimiter: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let last = *delimiter.last().expect("literals are never empty");
    let mut out = Vec::new();
    loop {
        let limit = (MAX_FIELD_BYTES + delimiter.len() - out.len().min(MAX_FIELD_BYTES)) as u64;
        let n = std::io::Read::take(&mut *r, limit)
            .read_until(last, &mut out)
            .map_err(|e| format!("reading stdin: {e}"))?;
        if out.ends_with(delimiter) {
            out.truncate(out.len() - delimiter.len());
            return Ok((out, true));
        }
        if out.len() > MAX_FIELD_BYTES {
            return Err(format!(
                "a field longer than {MAX_FIELD_BYTES} bytes (is the delimiter right?)"
            ));
        }
        if n == 0 || !out.ends_with(&[last]) {
            return Ok((out, false));
        }
    }
}

fn set(record: &mut InputRecord, field: &Part, bytes: Vec<u8>) -> Result<(), String> {
    let text = |what: &str, bytes: &[u8]| -> Result<String, String> {
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("the {what} is not UTF-8"))
    };
    match field {
        Part::Topic => {
            let t = text("topic", &bytes)?;
            if t.is_empty() {
                return Err("empty topic".to_string());
            }
            record.topic = Some(t);
        }
        Part::Key => record.key = (!bytes.is_empty()).then_some(bytes),
        Part::Value => record.value = bytes,
        Part::Partition => {
            let t = text("partition", &bytes)?;
            record.partition = Some(
                t.trim()
                    .parse::<i32>()
                    .ok()
                    .filter(|p| *p >= 0)
                    .ok_or_else(|| format!("partition '{t}' is not a partition number"))?,
            );
        }
        Part::Timestamp => {
            let t = text("timestamp", &bytes)?;
            record.timestamp = Some(
                t.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|t| *t >= 0)
                    .ok_or_else(|| format!("timestamp '{t}' is not ms since the epoch"))?,
            );
        }
        Part::Headers => {
            let t = text("headers", &bytes)?;
            for pair in t.split(',').filter(|p| !p.is_empty()) {
                let Some((k, v)) = pair.split_once('=') else {
                    return Err(format!("header '{pair}' is not KEY=VALUE"));
                };
                if record.headers.len() >= MAX_HEADERS {
                    return Err(format!("more than {MAX_HEADERS} headers"));
                }
                record.headers.push((k.to_string(), v.as_bytes().to_vec()));
            }
        }
        Part::Literal(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(format: &str, input: &str) -> Result<Vec<InputRecord>, String> {
        let f = InputFormat::parse(format)?;
        let mut r = std::io::Cursor::new(input.as_bytes().to_vec());
        let mut out = Vec::new();
        while let Some(rec) = f.read(&mut r)? {
            out.push(rec);
        }
        Ok(out)
    }

    #[test]
    fn key_and_value_between_a_space_and_a_newline() {
        let got = read_all("%k %v\\n", "a 1\nb two words\n c\n").unwrap();
        let pairs: Vec<(Option<&[u8]>, &[u8])> = got
            .iter()
            .map(|r| (r.key.as_deref(), r.value.as_slice()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                (Some(&b"a"[..]), &b"1"[..]),
                (Some(&b"b"[..]), &b"two words"[..]),
                (None, &b"c"[..])
            ]
        );
    }

    #[test]
    fn every_field_and_a_missing_final_newline() {
        let got = read_all("%t\\t%p\\t%T\\t%h\\t%k=%v", "t1\t2\t1700\th1=x,h2=y\tk=v=w").unwrap();
        assert_eq!(
            got,
            vec![InputRecord {
                topic: Some("t1".into()),
                key: Some(b"k".to_vec()),
                value: b"v=w".to_vec(),
                partition: Some(2),
                timestamp: Some(1700),
                headers: vec![("h1".into(), b"x".to_vec()), ("h2".into(), b"y".to_vec())],
            }]
        );
    }

    #[test]
    fn leading_literals_and_multi_byte_delimiters() {
        let got = read_all("key: %k || %v;;", "key: a || 1;;key: b || 2;;").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].key.as_deref(), Some(&b"b"[..]));
        assert_eq!(got[1].value, b"2");
    }

    #[test]
    fn bad_formats_and_inputs_are_refused_with_a_reason() {
        assert!(InputFormat::parse("%k%v")
            .unwrap_err()
            .contains("delimiter"));
        assert!(InputFormat::parse("%k\\n").unwrap_err().contains("%v"));
        assert!(InputFormat::parse("%x %v")
            .unwrap_err()
            .contains("unknown field"));
        assert!(read_all("%p %v\\n", "x 1\n")
            .unwrap_err()
            .contains("partition"));
        assert!(read_all("%k %v\\n", "no-space\n")
            .unwrap_err()
            .contains("ended"));
    }
}
