//! What a connector is: a plugin that validates its config, splits it into
//! task configs, and makes source or sink tasks.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::record::{SinkRecord, SourcePartition, SourceRecord};

/// A connector's or task's configuration: Kafka Connect's string map.
pub type Props = BTreeMap<String, String>;

/// A connector failure, with whether retrying may help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConnectError {
    pub message: String,
    /// A transient problem (a connection dropped): the runtime retries
    /// with backoff, within `errors.retry.timeout`.
    pub retriable: bool,
}

impl ConnectError {
    pub fn fatal(message: impl Into<String>) -> ConnectError {
        ConnectError {
            message: message.into(),
            retriable: false,
        }
    }

    pub fn retriable(message: impl Into<String>) -> ConnectError {
        ConnectError {
            message: message.into(),
            retriable: true,
        }
    }
}

impl From<std::io::Error> for ConnectError {
    fn from(e: std::io::Error) -> Self {
        ConnectError::retriable(e.to_string())
    }
}

pub type ConnectResult<T> = Result<T, ConnectError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorKind {
    Source,
    Sink,
}

impl ConnectorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorKind::Source => "source",
            ConnectorKind::Sink => "sink",
        }
    }
}

/// Value types of config keys (Kafka Connect's `ConfigDef.Type` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    String,
    Int,
    Long,
    Boolean,
    List,
    Password,
}

impl ConfigType {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigType::String => "STRING",
            ConfigType::Int => "INT",
            ConfigType::Long => "LONG",
            ConfigType::Boolean => "BOOLEAN",
            ConfigType::List => "LIST",
            ConfigType::Password => "PASSWORD",
        }
    }

    /// Checks a value's syntax.
    pub fn check(self, value: &str) -> Result<(), String> {
        match self {
            ConfigType::Int => value
                .trim()
                .parse::<i32>()
                .map(|_| ())
                .map_err(|_| format!("'{value}' is not an integer")),
            ConfigType::Long => value
                .trim()
                .parse::<i64>()
                .map(|_| ())
                .map_err(|_| format!("'{value}' is not a number")),
            ConfigType::Boolean => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "false" => Ok(()),
                _ => Err(format!("'{value}' is not true or false")),
            },
            _ => Ok(()),
        }
    }
}

/// One config key of a connector.
#[derive(Debug, Clone)]
pub struct ConfigKey {
    pub name: &'static str,
    pub kind: ConfigType,
    pub required: bool,
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

impl ConfigKey {
    pub const fn required(name: &'static str, kind: ConfigType, doc: &'static str) -> ConfigKey {
        ConfigKey {
            name,
            kind,
            required: true,
            default: None,
            doc,
        }
    }

    pub const fn optional(
        name: &'static str,
        kind: ConfigType,
        default: Option<&'static str>,
        doc: &'static str,
    ) -> ConfigKey {
        ConfigKey {
            name,
            kind,
            required: false,
            default,
            doc,
        }
    }
}

/// The position a source task resumes from, per source partition, as last
/// committed to `connect-offsets`.
pub trait OffsetReader: Send + Sync {
    fn offset(&self, partition: &SourcePartition) -> Option<Value>;
}

/// Where in a task a record failed: Kafka Connect's names, as the
/// `__connect.errors.stage` header of a dead letter carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    KeyConverter,
    ValueConverter,
    Transformation,
    TaskPut,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::KeyConverter => "KEY_CONVERTER",
            Stage::ValueConverter => "VALUE_CONVERTER",
            Stage::Transformation => "TRANSFORMATION",
            Stage::TaskPut => "TASK_PUT",
        }
    }
}

/// What became of a record a source task polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate<'a> {
    /// Stored in Kafka: the broker acknowledged it (every record a
    /// transform made of it) and every record before it.
    Stored,
    /// A pipeline's transforms left it out, as they were asked to.
    Filtered,
    /// A transform or a converter failed on it: it is not stored.
    /// `dead_lettered` when the dead-letter topic acknowledged it instead.
    Failed {
        stage: Stage,
        error: &'a str,
        dead_lettered: bool,
    },
}

/// A source task: reads records from outside.
#[async_trait]
pub trait SourceTask: Send {
    /// Prepares to read, resuming at the committed offsets.
    async fn start(&mut self, offsets: Arc<dyn OffsetReader>) -> ConnectResult<()>;
    /// The next records; may wait a little for new data and return none.
    async fn poll(&mut self) -> ConnectResult<Vec<SourceRecord>>;
    /// What became of the polled record with this source offset (which
    /// may be `Null`). Called for every record, in poll order, once its
    /// batch's writes (records and dead letters) are acknowledged and
    /// before the offset is committed. A failure that `errors.tolerance:
    /// none` does not tolerate is reported at once, before the task
    /// fails; the records after it are never reported.
    fn done(&mut self, _source_offset: &Value, _fate: Fate<'_>) {}
    /// The offsets of the records delivered so far are committed.
    async fn commit(&mut self) -> ConnectResult<()> {
        Ok(())
    }
    async fn stop(&mut self) {}
}

/// A sink task: writes records outside.
#[async_trait]
pub trait SinkTask: Send {
    async fn start(&mut self) -> ConnectResult<()> {
        Ok(())
    }
    /// Writes a batch (it may buffer until `flush`).
    async fn put(&mut self, records: &[SinkRecord]) -> ConnectResult<()>;
    /// Makes everything put so far durable; offsets are committed after.
    async fn flush(&mut self) -> ConnectResult<()>;
    async fn stop(&mut self) {}
}

/// A connector plugin.
pub trait ConnectorPlugin: Send + Sync {
    /// Runnel's name for it (`file-source`).
    fn name(&self) -> &'static str;
    /// Other names configs may use (Kafka's class names).
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    /// The class name shown by `/connector-plugins`.
    fn class(&self) -> &'static str {
        self.name()
    }
    fn kind(&self) -> ConnectorKind;
    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }
    /// The connector's own config keys.
    fn config_keys(&self) -> &'static [ConfigKey];
    /// Checks beyond the keys' types: (key, problem) pairs.
    fn validate(&self, _config: &Props) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Splits the connector config into at most `max_tasks` task configs.
    fn task_configs(&self, config: &Props, max_tasks: usize) -> ConnectResult<Vec<Props>> {
        let _ = max_tasks;
        Ok(vec![config.clone()])
    }
    fn source_task(&self, _config: &Props) -> ConnectResult<Box<dyn SourceTask>> {
        Err(ConnectError::fatal(format!(
            "{} is not a source",
            self.name()
        )))
    }
    fn sink_task(&self, _config: &Props) -> ConnectResult<Box<dyn SinkTask>> {
        Err(ConnectError::fatal(format!(
            "{} is not a sink",
            self.name()
        )))
    }
}
