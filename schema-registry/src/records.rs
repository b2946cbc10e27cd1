//! The records of the `_schemas` topic: every registry change is one
//! record, with JSON keys and values shaped like Confluent's, so a dump of
//! the topic reads the same as one from a Confluent registry.
//!
//! The topic is compacted; a record's key says what it describes, and the
//! latest value per key is the state. A `null` value (tombstone) removes
//! the key's state (a permanently deleted version, a deleted config).
//!
//! ```text
//! key   {"keytype":"SCHEMA","subject":"orders-value","version":2,"magic":1}
//! value {"subject":"orders-value","version":2,"id":7,
//!        "references":[{"name":"..","subject":"..","version":1}],   (omitted when empty)
//!        "schemaType":"AVRO",                                      (omitted for Avro)
//!        "schema":"{\"type\":\"record\",...}","deleted":false}
//!
//! key   {"keytype":"CONFIG","subject":"orders-value","magic":0}    (subject null: global)
//! value {"compatibilityLevel":"FULL"}
//!
//! key   {"keytype":"MODE","subject":null,"magic":0}
//! value {"mode":"IMPORT"}
//!
//! key   {"keytype":"DELETE_SUBJECT","subject":"orders-value","magic":0}
//! value {"subject":"orders-value","version":3}     (soft delete of versions <= 3)
//!
//! key   {"keytype":"CLEAR_SUBJECT","subject":"orders-value","magic":0}
//! value {"subject":"orders-value"}                 (permanent delete of a subject)
//!
//! key   {"keytype":"NOOP","magic":0}               (value null; a marker)
//! ```
//!
//! Ids are never reused, even after a permanently deleted schema's
//! records are compacted away: a hard delete that removes the highest id
//! also writes `{"keytype":"ID_FLOOR","magic":0}` →
//! `{"id":N}`, which keeps the floor under the next id (a Runnel
//! addition; Confluent's readers skip unknown key types).

use serde::{Deserialize, Serialize};

use crate::compat::CompatibilityLevel;
use crate::schema::{SchemaReference, SchemaType};

/// The topic the registry keeps its state in.
pub const SCHEMAS_TOPIC: &str = "_schemas";

/// Largest key or value accepted from the topic.
pub const MAX_RECORD_BYTES: usize = 4 << 20;

/// Registry modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    #[default]
    Readwrite,
    Readonly,
    /// Registering with a given id is allowed (migrations between
    /// registries); compatibility is not checked.
    Import,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s.trim().to_ascii_uppercase().as_str() {
            "READWRITE" => Some(Mode::Readwrite),
            "READONLY" => Some(Mode::Readonly),
            "IMPORT" => Some(Mode::Import),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Readwrite => "READWRITE",
            Mode::Readonly => "READONLY",
            Mode::Import => "IMPORT",
        }
    }
}

/// A `_schemas` record key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Key {
    Schema {
        subject: String,
        version: i32,
        magic: i32,
    },
    Config {
        subject: Option<String>,
        magic: i32,
    },
    Mode {
        subject: Option<String>,
        magic: i32,
    },
    DeleteSubject {
        subject: String,
        magic: i32,
    },
    ClearSubject {
        subject: String,
        magic: i32,
    },
    Noop {
        magic: i32,
    },
    IdFloor {
        magic: i32,
    },
}

impl Key {
    pub fn schema(subject: &str, version: i32) -> Key {
        Key::Schema {
            subject: subject.to_string(),
            version,
            magic: 1,
        }
    }

    pub fn config(subject: Option<&str>) -> Key {
        Key::Config {
            subject: subject.map(str::to_string),
            magic: 0,
        }
    }

    pub fn mode(subject: Option<&str>) -> Key {
        Key::Mode {
            subject: subject.map(str::to_string),
            magic: 0,
        }
    }

    pub fn delete_subject(subject: &str) -> Key {
        Key::DeleteSubject {
            subject: subject.to_string(),
            magic: 0,
        }
    }

    pub fn clear_subject(subject: &str) -> Key {
        Key::ClearSubject {
            subject: subject.to_string(),
            magic: 0,
        }
    }

    pub fn noop() -> Key {
        Key::Noop { magic: 0 }
    }

    pub fn id_floor() -> Key {
        Key::IdFloor { magic: 0 }
    }
}

/// The value of a `SCHEMA` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaValue {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    #[serde(
        rename = "schemaType",
        default,
        skip_serializing_if = "SchemaType::is_avro"
    )]
    pub schema_type: SchemaType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<SchemaReference>,
    pub schema: String,
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigValue {
    #[serde(rename = "compatibilityLevel")]
    pub compatibility_level: CompatibilityLevel,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeValue {
    pub mode: Mode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteSubjectValue {
    pub subject: String,
    pub version: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearSubjectValue {
    pub subject: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdFloorValue {
    pub id: i32,
}

/// A decoded record: its key and, unless it is a tombstone, its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Schema(String, i32, Option<SchemaValue>),
    Config(Option<String>, Option<ConfigValue>),
    Mode(Option<String>, Option<ModeValue>),
    DeleteSubject(String, Option<DeleteSubjectValue>),
    ClearSubject(String, Option<ClearSubjectValue>),
    Noop,
    IdFloor(Option<IdFloorValue>),
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record has no key")]
    NoKey,
    #[error("record of {0} bytes exceeds {MAX_RECORD_BYTES}")]
    TooLarge(usize),
    #[error("unreadable key: {0}")]
    Key(String),
    #[error("unreadable value for {0}: {1}")]
    Value(String, String),
}

fn value<T: for<'de> Deserialize<'de>>(
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<Option<T>, RecordError> {
    match value {
        None => Ok(None),
        Some(v) => serde_json::from_slice(v).map(Some).map_err(|e| {
            RecordError::Value(String::from_utf8_lossy(key).into_owned(), e.to_string())
        }),
    }
}

impl Record {
    /// Decodes a record of the topic. Unknown key types are an error the
    /// caller logs and skips.
    pub fn decode(key: Option<&[u8]>, val: Option<&[u8]>) -> Result<Record, RecordError> {
        let key = key.ok_or(RecordError::NoKey)?;
        let size = key.len() + val.map_or(0, <[u8]>::len);
        if size > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge(size));
        }
        let parsed: Key =
            serde_json::from_slice(key).map_err(|e| RecordError::Key(e.to_string()))?;
        Ok(match parsed {
            Key::Schema {
                subject, version, ..
            } => Record::Schema(subject, version, value(key, val)?),
            Key::Config { subject, .. } => Record::Config(subject, value(key, val)?),
            Key::Mode { subject, .. } => Record::Mode(subject, value(key, val)?),
            Key::DeleteSubject { subject, .. } => Record::DeleteSubject(subject, value(key, val)?),
            Key::ClearSubject { subject, .. } => Record::ClearSubject(subject, value(key, val)?),
            Key::Noop { .. } => Record::Noop,
            Key::IdFloor { .. } => Record::IdFloor(value(key, val)?),
        })
    }

    /// The record's key.
    pub fn key(&self) -> Key {
        match self {
            Record::Schema(s, v, _) => Key::schema(s, *v),
            Record::Config(s, _) => Key::config(s.as_deref()),
            Record::Mode(s, _) => Key::mode(s.as_deref()),
            Record::DeleteSubject(s, _) => Key::delete_subject(s),
            Record::ClearSubject(s, _) => Key::clear_subject(s),
            Record::Noop => Key::noop(),
            Record::IdFloor(_) => Key::id_floor(),
        }
    }

    /// Key and value bytes as written to the topic.
    pub fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        // Serialising these plain structs cannot fail.
        let key = serde_json::to_vec(&self.key()).unwrap_or_default();
        let value = match self {
            Record::Schema(_, _, v) => v.as_ref().map(serde_json::to_vec),
            Record::Config(_, v) => v.as_ref().map(serde_json::to_vec),
            Record::Mode(_, v) => v.as_ref().map(serde_json::to_vec),
            Record::DeleteSubject(_, v) => v.as_ref().map(serde_json::to_vec),
            Record::ClearSubject(_, v) => v.as_ref().map(serde_json::to_vec),
            Record::Noop => None,
            Record::IdFloor(v) => v.as_ref().map(serde_json::to_vec),
        };
        (key, value.map(|v| v.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_written_in_confluents_shape() {
        let (key, _) = Record::Schema("orders-value".into(), 2, None).encode();
        assert_eq!(
            String::from_utf8(key).unwrap(),
            r#"{"keytype":"SCHEMA","subject":"orders-value","version":2,"magic":1}"#
        );
        let (key, value) = Record::Config(
            None,
            Some(ConfigValue {
                compatibility_level: CompatibilityLevel::FullTransitive,
            }),
        )
        .encode();
        assert_eq!(
            String::from_utf8(key).unwrap(),
            r#"{"keytype":"CONFIG","subject":null,"magic":0}"#
        );
        assert_eq!(
            String::from_utf8(value.unwrap()).unwrap(),
            r#"{"compatibilityLevel":"FULL_TRANSITIVE"}"#
        );
        let (key, value) = Record::Noop.encode();
        assert_eq!(
            String::from_utf8(key).unwrap(),
            r#"{"keytype":"NOOP","magic":0}"#
        );
        assert!(value.is_none());
    }

    #[test]
    fn schema_values_round_trip_and_omit_avro_type_and_empty_references() {
        let v = SchemaValue {
            subject: "s".into(),
            version: 1,
            id: 9,
            schema_type: SchemaType::Avro,
            references: vec![],
            schema: "\"string\"".into(),
            deleted: false,
        };
        let record = Record::Schema("s".into(), 1, Some(v));
        let (key, value) = record.encode();
        let text = String::from_utf8(value.clone().unwrap()).unwrap();
        assert_eq!(
            text,
            r#"{"subject":"s","version":1,"id":9,"schema":"\"string\"","deleted":false}"#
        );
        assert_eq!(
            Record::decode(Some(&key), value.as_deref()).unwrap(),
            record
        );
    }

    #[test]
    fn confluent_written_records_decode() {
        let key = br#"{"subject":"t-value","version":1,"magic":1,"keytype":"SCHEMA"}"#;
        let value = br#"{"subject":"t-value","version":1,"id":1,"schemaType":"AVRO","schema":"\"int\"","deleted":false,"md5":"x"}"#;
        match Record::decode(Some(key), Some(value)).unwrap() {
            Record::Schema(s, 1, Some(v)) => {
                assert_eq!(s, "t-value");
                assert_eq!(v.id, 1);
            }
            other => panic!("{other:?}"),
        }
        let tombstone = Record::decode(Some(key), None).unwrap();
        assert_eq!(tombstone, Record::Schema("t-value".into(), 1, None));
        assert!(Record::decode(Some(br#"{"keytype":"WHAT","magic":0}"#), None).is_err());
        assert!(Record::decode(None, None).is_err());
    }
}
