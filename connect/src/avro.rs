//! Kafka Connect's Avro converter (`io.confluent.connect.avro.AvroConverter`)
//! over the schema registry client of `runnel_schema_registry::client`,
//! in the Confluent wire format.
//!
//! Writing, the schema is either the latest version of a subject
//! (`use.latest.version=true`, or a fixed `subject`), or inferred from the
//! record and registered under `<topic>-key`/`<topic>-value` as Kafka
//! Connect's converter does (`auto.register.schemas`, default true).
//! Reading, the id names the writer's schema.

use std::sync::Arc;

use bytes::Bytes;
use runnel_schema_registry::client::{frame, infer_schema, ClientError, RegistryClient};
use serde_json::Value;

use crate::record::{ConvertError, Data};

/// A registry that could not be reached (or failed) may answer later.
impl From<ClientError> for ConvertError {
    fn from(e: ClientError) -> ConvertError {
        ConvertError {
            message: e.to_string(),
            retriable: e.is_retriable(),
        }
    }
}

/// `io.confluent.connect.avro.AvroConverter`.
pub struct AvroConverter {
    pub registry: Arc<RegistryClient>,
    /// Subjects are `<topic>-key` rather than `<topic>-value`.
    pub is_key: bool,
    /// Always write with this subject's latest schema.
    pub subject: Option<String>,
    pub use_latest_version: bool,
    pub auto_register: bool,
}

impl AvroConverter {
    fn subject(&self, topic: &str) -> String {
        match &self.subject {
            Some(s) => s.clone(),
            None => format!("{topic}-{}", if self.is_key { "key" } else { "value" }),
        }
    }

    pub async fn write(&self, topic: &str, data: &Data) -> Result<Option<Bytes>, ConvertError> {
        let value = match data {
            Data::Null | Data::Json(Value::Null) => return Ok(None),
            other => other.to_json(),
        };
        let subject = self.subject(topic);
        let (id, compiled) = if self.subject.is_some() || self.use_latest_version {
            self.registry.latest(&subject).await?
        } else {
            let text = infer_schema(&value).to_string();
            let id = self
                .registry
                .id_of(&subject, &text, self.auto_register)
                .await?;
            (id, self.registry.by_id(id).await?)
        };
        let body = compiled.encode(&value).map_err(|e| {
            ConvertError::new(format!(
                "record does not fit schema {id} of subject '{subject}': {e}"
            ))
        })?;
        Ok(Some(Bytes::from(frame(id, &body))))
    }

    pub async fn read(&self, bytes: Option<&[u8]>) -> Result<Data, ConvertError> {
        let Some(b) = bytes else {
            return Ok(Data::Null);
        };
        Ok(Data::Json(self.registry.decode(b).await?))
    }
}
