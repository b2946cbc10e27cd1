//! Records as connectors see them: data before a converter turns it into
//! bytes (sources), after a converter read it from bytes (sinks).

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use serde_json::{Map, Value};

/// A key or a value.
#[derive(Debug, Clone)]
pub enum Data {
    Null,
    /// Opaque bytes (what `ByteArrayConverter` reads and writes).
    Bytes(Bytes),
    /// UTF-8 text in shared bytes (a file source's lines point into the
    /// buffer they were read into; the string converter sends them as
    /// they are).
    Text(ByteString),
    /// Structured data: a string, number, object, ... (what the JSON
    /// converter reads and writes).
    Json(Value),
}

impl Data {
    pub fn string(s: impl Into<String>) -> Data {
        Data::Text(ByteString::from(s.into()))
    }

    /// Text when the bytes are UTF-8 (without copying them), otherwise
    /// the bytes with invalid sequences replaced by U+FFFD.
    pub fn text_lossy(b: Bytes) -> Data {
        match ByteString::try_from(b.clone()) {
            Ok(s) => Data::Text(s),
            Err(_) => Data::string(String::from_utf8_lossy(&b).into_owned()),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Data::Null | Data::Json(Value::Null))
    }

    /// The text, when the data is text (a JSON string counts).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Data::Text(s) => Some(s),
            Data::Json(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The data as record bytes: bytes as they are, text as UTF-8, other
    /// JSON as its text; `None` for null.
    pub fn to_bytes(&self) -> Option<Bytes> {
        match self {
            Data::Null | Data::Json(Value::Null) => None,
            Data::Bytes(b) => Some(b.clone()),
            Data::Text(s) => Some(s.as_bytes().clone()),
            Data::Json(Value::String(s)) => Some(Bytes::copy_from_slice(s.as_bytes())),
            Data::Json(v) => Some(Bytes::from(v.to_string().into_bytes())),
        }
    }

    /// The data as JSON (bytes as a UTF-8 string where they are one).
    pub fn to_json(&self) -> Value {
        match self {
            Data::Null => Value::Null,
            Data::Json(v) => v.clone(),
            Data::Text(s) => Value::String(s.to_string()),
            Data::Bytes(b) => match std::str::from_utf8(b) {
                Ok(s) => Value::String(s.to_string()),
                Err(_) => Value::Array(b.iter().map(|x| Value::from(*x)).collect()),
            },
        }
    }
}

/// Text compares equal to a JSON string of the same characters: which of
/// the two a record holds depends on the converter that read it.
impl PartialEq for Data {
    fn eq(&self, other: &Data) -> bool {
        match (self, other) {
            (Data::Null, Data::Null) => true,
            (Data::Bytes(a), Data::Bytes(b)) => a == b,
            (Data::Json(a), Data::Json(b)) => a == b,
            (a, b) => match (a.as_str(), b.as_str()) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            },
        }
    }
}

/// Where a source record came from (a file, a table): the key of its
/// source offset in `connect-offsets`. Records of one partition share it.
pub type SourcePartition = Map<String, Value>;

/// A record a source task produced.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    pub source_partition: Arc<SourcePartition>,
    /// The position to resume after once this record is stored. `Null`
    /// (as in Kafka Connect) when the record has no position of its own:
    /// a later record's offset in the same poll covers it, which lets a
    /// source name the position once per batch.
    pub source_offset: Value,
    pub topic: Arc<str>,
    /// `None`: the producer's partitioner chooses by key.
    pub kafka_partition: Option<i32>,
    pub key: Data,
    pub value: Data,
    pub headers: Vec<(String, Bytes)>,
    pub timestamp_ms: Option<i64>,
}

impl SourceRecord {
    /// A record with just a value.
    pub fn new(
        source_partition: Arc<SourcePartition>,
        source_offset: Value,
        topic: Arc<str>,
        value: Data,
    ) -> SourceRecord {
        SourceRecord {
            source_partition,
            source_offset,
            topic,
            kafka_partition: None,
            key: Data::Null,
            value,
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }
}

/// A record a sink task receives.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkRecord {
    /// Shared by the records of one partition in a batch.
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Data,
    pub value: Data,
    pub headers: Vec<(String, Bytes)>,
}

/// Why data could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConvertError {
    pub message: String,
    /// The same data may convert later (a schema registry was down).
    pub retriable: bool,
}

impl ConvertError {
    pub fn new(message: impl Into<String>) -> ConvertError {
        ConvertError {
            message: message.into(),
            retriable: false,
        }
    }

    pub fn unavailable(message: impl Into<String>) -> ConvertError {
        ConvertError {
            message: message.into(),
            retriable: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_equals_the_json_string_of_the_same_characters_only() {
        let text = Data::text_lossy(Bytes::from_static(b"abc"));
        assert!(matches!(text, Data::Text(_)));
        assert_eq!(text, Data::Json(Value::String("abc".into())));
        assert_ne!(text, Data::Json(Value::String("abd".into())));
        assert_ne!(text, Data::Bytes(Bytes::from_static(b"abc")));
        assert_eq!(text.as_str(), Some("abc"));
        assert_eq!(text.to_json(), Value::String("abc".into()));
        assert_eq!(
            Data::text_lossy(Bytes::from_static(b"a\xff")),
            Data::string("a\u{fffd}")
        );
    }
}
