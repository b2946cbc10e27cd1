//! Converters between connector data and record bytes, named as in Kafka
//! Connect (`key.converter`, `value.converter`).
//!
//! | name | Kafka Connect class |
//! |---|---|
//! | `bytes` | `org.apache.kafka.connect.converters.ByteArrayConverter` |
//! | `string` | `org.apache.kafka.connect.storage.StringConverter` |
//! | `json` | `org.apache.kafka.connect.json.JsonConverter` (`schemas.enable`, default true as in Kafka) |
//! | `avro` | `io.confluent.connect.avro.AvroConverter` (`schema.registry.url`, `auto.register.schemas`, `use.latest.version`; Runnel adds `subject`) |

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use runnel_schema_registry::client::RegistryClient;
use serde_json::{json, Value};

use crate::avro::AvroConverter;
use crate::record::Data;

pub use crate::record::ConvertError;

/// Turns data into bytes and back.
#[async_trait]
pub trait Converter: Send + Sync {
    async fn encode(&self, topic: &str, data: &Data) -> Result<Option<Bytes>, ConvertError>;
    /// `encode` without awaiting, for converters that need no I/O (the
    /// worker's per-record fast path); `None` when `encode` must be used.
    fn encode_now(
        &self,
        _topic: &str,
        _data: &Data,
    ) -> Option<Result<Option<Bytes>, ConvertError>> {
        None
    }
    async fn decode(&self, topic: &str, bytes: Option<&[u8]>) -> Result<Data, ConvertError>;
}

/// Bytes as they are.
pub struct ByteArrayConverter;

/// Data as bytes: bytes as they are, text as UTF-8, other JSON as its text.
fn bytes_of(data: &Data) -> Option<Bytes> {
    data.to_bytes()
}

#[async_trait]
impl Converter for ByteArrayConverter {
    async fn encode(&self, _topic: &str, data: &Data) -> Result<Option<Bytes>, ConvertError> {
        Ok(bytes_of(data))
    }

    fn encode_now(&self, _topic: &str, data: &Data) -> Option<Result<Option<Bytes>, ConvertError>> {
        Some(Ok(bytes_of(data)))
    }

    async fn decode(&self, _topic: &str, bytes: Option<&[u8]>) -> Result<Data, ConvertError> {
        Ok(match bytes {
            None => Data::Null,
            Some(b) => Data::Bytes(Bytes::copy_from_slice(b)),
        })
    }
}

/// UTF-8 text.
pub struct StringConverter;

#[async_trait]
impl Converter for StringConverter {
    async fn encode(&self, _topic: &str, data: &Data) -> Result<Option<Bytes>, ConvertError> {
        Ok(bytes_of(data))
    }

    fn encode_now(&self, _topic: &str, data: &Data) -> Option<Result<Option<Bytes>, ConvertError>> {
        Some(Ok(bytes_of(data)))
    }

    async fn decode(&self, _topic: &str, bytes: Option<&[u8]>) -> Result<Data, ConvertError> {
        match bytes {
            None => Ok(Data::Null),
            Some(b) => std::str::from_utf8(b)
                .map(Data::string)
                .map_err(|e| ConvertError::new(format!("not UTF-8 text: {e}"))),
        }
    }
}

/// JSON, optionally in Kafka Connect's `{"schema":..., "payload":...}`
/// envelope.
pub struct JsonConverter {
    pub schemas_enable: bool,
}

/// The Kafka Connect schema of a JSON value (inferred: connectors here
/// carry no schemas).
fn connect_schema(v: &Value) -> Value {
    match v {
        Value::Null => json!({"type": "string", "optional": true}),
        Value::Bool(_) => json!({"type": "boolean", "optional": false}),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({"type": "int64", "optional": false}),
        Value::Number(_) => json!({"type": "double", "optional": false}),
        Value::String(_) => json!({"type": "string", "optional": false}),
        Value::Array(items) => json!({
            "type": "array",
            "items": items.first().map(connect_schema).unwrap_or(json!({"type": "string", "optional": true})),
            "optional": false
        }),
        Value::Object(fields) => json!({
            "type": "struct",
            "fields": fields
                .iter()
                .map(|(k, v)| {
                    let mut s = connect_schema(v);
                    s["field"] = Value::String(k.clone());
                    s
                })
                .collect::<Vec<_>>(),
            "optional": false
        }),
    }
}

impl JsonConverter {
    fn to_bytes(&self, data: &Data) -> Result<Option<Bytes>, ConvertError> {
        let owned;
        let value = match data {
            Data::Null => return Ok(None),
            Data::Json(v) => v,
            other => {
                owned = other.to_json();
                &owned
            }
        };
        if value.is_null() && !self.schemas_enable {
            return Ok(None);
        }
        let out = if self.schemas_enable {
            serde_json::to_vec(&json!({"schema": connect_schema(value), "payload": value}))
        } else {
            serde_json::to_vec(value)
        };
        out.map(|v| Some(Bytes::from(v)))
            .map_err(|e| ConvertError::new(e.to_string()))
    }
}

#[async_trait]
impl Converter for JsonConverter {
    async fn encode(&self, _topic: &str, data: &Data) -> Result<Option<Bytes>, ConvertError> {
        self.to_bytes(data)
    }

    fn encode_now(&self, _topic: &str, data: &Data) -> Option<Result<Option<Bytes>, ConvertError>> {
        Some(self.to_bytes(data))
    }

    async fn decode(&self, _topic: &str, bytes: Option<&[u8]>) -> Result<Data, ConvertError> {
        let Some(b) = bytes else {
            return Ok(Data::Null);
        };
        let v: Value =
            serde_json::from_slice(b).map_err(|e| ConvertError::new(format!("not JSON: {e}")))?;
        if self.schemas_enable {
            if let Value::Object(mut m) = v {
                if m.len() == 2 && m.contains_key("schema") && m.contains_key("payload") {
                    return Ok(Data::Json(m.remove("payload").unwrap_or(Value::Null)));
                }
                return Err(ConvertError::new(
                    "JsonConverter with schemas.enable=true needs {\"schema\": ..., \"payload\": ...}; \
                     set schemas.enable=false for plain JSON"
                        ,
                ));
            }
            return Err(ConvertError::new(
                "JsonConverter with schemas.enable=true needs an object with schema and payload",
            ));
        }
        Ok(Data::Json(v))
    }
}

/// The converter a connector config names under `prefix` (`key.converter`
/// or `value.converter`), with its `prefix.`-scoped settings.
pub fn from_config(
    prefix: &str,
    config: &BTreeMap<String, String>,
    default: &str,
) -> Result<Box<dyn Converter>, String> {
    let name = config.get(prefix).map(String::as_str).unwrap_or(default);
    let setting = |key: &str| config.get(&format!("{prefix}.{key}")).map(String::as_str);
    match name.trim() {
        "bytes" | "org.apache.kafka.connect.converters.ByteArrayConverter" => {
            Ok(Box::new(ByteArrayConverter))
        }
        "string" | "org.apache.kafka.connect.storage.StringConverter" => {
            Ok(Box::new(StringConverter))
        }
        "json" | "org.apache.kafka.connect.json.JsonConverter" => {
            let schemas_enable = match setting("schemas.enable") {
                None => name.trim() != "json",
                Some(v) => v.trim().eq_ignore_ascii_case("true"),
            };
            Ok(Box::new(JsonConverter { schemas_enable }))
        }
        "avro" | "io.confluent.connect.avro.AvroConverter" => {
            let url = setting("schema.registry.url")
                .ok_or_else(|| format!("the Avro converter needs {prefix}.schema.registry.url"))?;
            let flag = |key: &str, default: bool| match setting(key) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<bool>()
                    .map_err(|_| format!("{prefix}.{key} is '{v}', not true or false")),
            };
            Ok(Box::new(AvroConverter {
                registry: Arc::new(RegistryClient::new(url)?),
                is_key: prefix.ends_with("key.converter"),
                subject: setting("subject")
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                use_latest_version: flag("use.latest.version", false)?,
                auto_register: flag("auto.register.schemas", true)?,
            }))
        }
        other => Err(format!("unknown converter '{other}' ({KNOWN})")),
    }
}

/// What `from_config` knows, for messages.
pub const KNOWN: &str = "bytes, string, json, avro, or their Kafka Connect class names";

/// Whether `name` is a converter `from_config` knows.
pub fn is_known(name: &str) -> bool {
    matches!(
        name.trim(),
        "bytes"
            | "string"
            | "json"
            | "avro"
            | "org.apache.kafka.connect.converters.ByteArrayConverter"
            | "org.apache.kafka.connect.storage.StringConverter"
            | "org.apache.kafka.connect.json.JsonConverter"
            | "io.confluent.connect.avro.AvroConverter"
    )
}

/// The problem with a converter's settings under `prefix`, if any.
pub fn check(prefix: &str, config: &BTreeMap<String, String>) -> Option<String> {
    match config.get(prefix) {
        Some(name) if is_known(name) => from_config(prefix, config, "string").err(),
        Some(name) => Some(format!("unknown converter '{name}' ({KNOWN})")),
        None => None,
    }
}

/// Adapter so a `Converter` trait object is itself a converter.
#[async_trait]
impl Converter for AvroConverter {
    async fn encode(&self, topic: &str, data: &Data) -> Result<Option<Bytes>, ConvertError> {
        self.write(topic, data).await
    }

    async fn decode(&self, _topic: &str, bytes: Option<&[u8]>) -> Result<Data, ConvertError> {
        self.read(bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn strings_and_bytes_round_trip() {
        let s = StringConverter;
        let b = s
            .encode("t", &Data::string("héllo"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&b[..], "héllo".as_bytes());
        assert_eq!(
            s.decode("t", Some(&b)).await.unwrap(),
            Data::string("héllo")
        );
        assert!(s.decode("t", Some(&[0xff])).await.is_err());
        assert_eq!(s.encode("t", &Data::Null).await.unwrap(), None);
        let raw = ByteArrayConverter;
        assert_eq!(
            raw.decode("t", Some(&[0xff])).await.unwrap(),
            Data::Bytes(Bytes::from_static(&[0xff]))
        );
    }

    #[tokio::test]
    async fn json_uses_kafka_connects_envelope_when_schemas_are_enabled() {
        let with = JsonConverter {
            schemas_enable: true,
        };
        let data = Data::Json(json!({"id": 7, "name": "ann", "ok": true, "score": 1.5}));
        let bytes = with.encode("t", &data).await.unwrap().unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v["payload"],
            json!({"id": 7, "name": "ann", "ok": true, "score": 1.5})
        );
        assert_eq!(v["schema"]["type"], "struct");
        let id = v["schema"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["field"] == "id")
            .unwrap();
        assert_eq!(id["type"], "int64");
        assert_eq!(with.decode("t", Some(&bytes)).await.unwrap(), data);
        assert!(with.decode("t", Some(br#"{"id":1}"#)).await.is_err());
        let without = JsonConverter {
            schemas_enable: false,
        };
        assert_eq!(
            without.decode("t", Some(br#"{"id":1}"#)).await.unwrap(),
            Data::Json(json!({"id": 1}))
        );
        assert!(without.decode("t", Some(b"{nope")).await.is_err());
    }

    #[tokio::test]
    async fn converters_are_chosen_by_short_or_kafka_class_name() {
        let cfg = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let c = from_config(
            "value.converter",
            &cfg(&[
                (
                    "value.converter",
                    "org.apache.kafka.connect.json.JsonConverter",
                ),
                ("value.converter.schemas.enable", "false"),
            ]),
            "string",
        )
        .unwrap();
        assert_eq!(
            c.encode("t", &Data::Json(json!({"a": 1})))
                .await
                .unwrap()
                .unwrap(),
            Bytes::from_static(br#"{"a":1}"#)
        );
        // Kafka's JsonConverter defaults to schemas.enable=true.
        let c = from_config(
            "value.converter",
            &cfg(&[(
                "value.converter",
                "org.apache.kafka.connect.json.JsonConverter",
            )]),
            "string",
        )
        .unwrap();
        assert!(c.decode("t", Some(br#"{"a":1}"#)).await.is_err());
        assert!(from_config("key.converter", &cfg(&[("key.converter", "xml")]), "string").is_err());
        assert!(is_known("bytes") && !is_known("xml"));
        // Avro needs its registry.
        let e = check("value.converter", &cfg(&[("value.converter", "avro")])).unwrap();
        assert!(e.contains("value.converter.schema.registry.url"), "{e}");
        let e = check(
            "value.converter",
            &cfg(&[
                ("value.converter", "io.confluent.connect.avro.AvroConverter"),
                (
                    "value.converter.schema.registry.url",
                    "http://127.0.0.1:8081",
                ),
                ("value.converter.auto.register.schemas", "yes"),
            ]),
        )
        .unwrap();
        assert!(e.contains("not true or false"), "{e}");
        assert_eq!(
            check(
                "value.converter",
                &cfg(&[
                    ("value.converter", "avro"),
                    (
                        "value.converter.schema.registry.url",
                        "http://127.0.0.1:8081"
                    ),
                ]),
            ),
            None
        );
    }
}
