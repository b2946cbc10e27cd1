//! Records as connectors see them: data before a converter turns it into
//! bytes (sources), after a converter read it from bytes (sinks).

use bytes::Bytes;
use serde_json::{Map, Value};

/// A key or a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Null,
    /// Opaque bytes (what `ByteArrayConverter` reads and writes).
    Bytes(Bytes),
    /// Structured data: a string, number, object, ... (what the string and
    /// JSON converters read and write).
    Json(Value),
}

impl Data {
    pub fn string(s: impl Into<String>) -> Data {
        Data::Json(Value::String(s.into()))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Data::Null | Data::Json(Value::Null))
    }

    /// The data as JSON (bytes as a UTF-8 string where they are one).
    pub fn to_json(&self) -> Value {
        match self {
            Data::Null => Value::Null,
            Data::Json(v) => v.clone(),
            Data::Bytes(b) => match std::str::from_utf8(b) {
                Ok(s) => Value::String(s.to_string()),
                Err(_) => Value::Array(b.iter().map(|x| Value::from(*x)).collect()),
            },
        }
    }
}

/// Where a source record came from (a file, a table): the key of its
/// source offset in `connect-offsets`.
pub type SourcePartition = Map<String, Value>;

/// A record a source task produced.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    pub source_partition: SourcePartition,
    /// The position to resume after once this record is stored.
    pub source_offset: Value,
    pub topic: String,
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
        source_partition: SourcePartition,
        source_offset: Value,
        topic: impl Into<String>,
        value: Data,
    ) -> SourceRecord {
        SourceRecord {
            source_partition,
            source_offset,
            topic: topic.into(),
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
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Data,
    pub value: Data,
    pub headers: Vec<(String, Bytes)>,
}
