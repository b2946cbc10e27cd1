//! `postgres-sink` (also `io.confluent.connect.jdbc.JdbcSinkConnector`):
//! each record becomes a row of the table `table.name.format` names.
//!
//! A record's value must be a JSON object (the `json` converter; a string
//! or bytes value holding a JSON object, as the default `string` converter
//! gives, is read as that object). Its fields are the columns, with
//! `fields.whitelist` keeping only some; with `pk.mode=record_key` the key
//! supplies the key columns (an object's fields, or one value named by
//! `pk.fields`, `__connect_key` by default) and wins over a value field of
//! the same name; with `pk.mode=record_value` they are value fields; with
//! `pk.mode=kafka` they are the record's topic, partition and offset
//! (`__connect_topic`, `__connect_partition`, `__connect_offset`, or the
//! three `pk.fields`), which makes an upsert idempotent for any records. A
//! value field that is null and not a column is left out. Values are bound
//! as parameters in PostgreSQL's text format, so the server reads each as
//! its column's type ([`sql::JsonParam`]).
//!
//! `insert.mode=upsert` writes `INSERT ... ON CONFLICT (key) DO UPDATE`:
//! writing the same records twice, as at-least-once delivery may, leaves
//! the same rows. Plain `insert` with a primary key fails on a redelivered
//! row (unique violation) and without one adds it again.
//!
//! A batch (`put`) is turned into rows first; a record that does not fit
//! (not an object, a key field missing, a column the table lacks) fails
//! the batch before anything is written, with an error naming it, that is
//! not retried, so `errors.tolerance` and the dead-letter topic apply.
//! Then the rows are written `batch.size` at a time, each group in one
//! transaction of pipelined prepared statements, and `put` returns only
//! after its `COMMIT`: `flush` has nothing left to do. Connection failures
//! are retriable, and the next attempt reconnects. A row the server
//! refuses (a value its column cannot take, a constraint) fails the batch
//! naming the record.
//!
//! `auto.create` creates a missing table from the first record's fields
//! (integer → BIGINT, above i64 → NUMERIC, other number → DOUBLE PRECISION,
//! bool → BOOLEAN, string or null → TEXT, object or array → JSONB; the key
//! columns NOT NULL and the primary key); `auto.evolve` adds a column for a
//! new field. A tombstone (null value) deletes the row of its key with
//! `delete.enabled=true` and is skipped otherwise.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::sql::{self, JsonParam, TableName};
use super::{
    check_range, connect, describe, flag, list, number, task_settings, PASSWORD_KEY, URL_KEY,
    USER_KEY,
};
use crate::plugin::{
    ConfigKey, ConfigType, ConnectError, ConnectResult, ConnectorKind, ConnectorPlugin, Props,
    SinkTask,
};
use crate::record::{Data, SinkRecord};

pub struct PostgresSink;

/// Most rows in one transaction.
pub const MAX_BATCH_SIZE: i64 = 100_000;
/// Prepared statements kept per task (one per table, operation and set of
/// columns); past this the cache starts over.
const MAX_STATEMENTS: usize = 1024;
/// Tables whose columns a task remembers.
const MAX_TABLES: usize = 1024;
/// The key column of a key that is one value, unless `pk.fields` names it.
const DEFAULT_KEY_COLUMN: &str = "__connect_key";
/// The key columns of `pk.mode=kafka`, as Confluent's JDBC sink names them.
const KAFKA_KEY_COLUMNS: [&str; 3] = ["__connect_topic", "__connect_partition", "__connect_offset"];

static KEYS: &[ConfigKey] = &[
    URL_KEY,
    USER_KEY,
    PASSWORD_KEY,
    ConfigKey::required("topics", ConfigType::List, "Topics to read."),
    ConfigKey::optional(
        "table.name.format",
        ConfigType::String,
        Some("${topic}"),
        "The table of a topic's records; ${topic} is the topic, a dot separates the schema (public.kafka_${topic}).",
    ),
    ConfigKey::optional(
        "insert.mode",
        ConfigType::String,
        Some("insert"),
        "insert: INSERT each record; upsert: INSERT ... ON CONFLICT (key) DO UPDATE, so redelivered records overwrite their rows.",
    ),
    ConfigKey::optional(
        "pk.mode",
        ConfigType::String,
        Some("none"),
        "Where the key columns come from: none, kafka (the record's topic, partition and offset), record_key (the record's key) or record_value (fields of the value).",
    ),
    ConfigKey::optional(
        "pk.fields",
        ConfigType::List,
        Some(""),
        "The key columns: kafka: three names for topic, partition and offset (default __connect_topic,__connect_partition,__connect_offset); record_value: value fields (required); record_key: fields of an object key (default all), or the column of a key that is one value (default __connect_key).",
    ),
    ConfigKey::optional(
        "fields.whitelist",
        ConfigType::List,
        Some(""),
        "Value fields to write (default all); key columns are always written.",
    ),
    ConfigKey::optional(
        "auto.create",
        ConfigType::Boolean,
        Some("false"),
        "Create a missing table from the first record's fields.",
    ),
    ConfigKey::optional(
        "auto.evolve",
        ConfigType::Boolean,
        Some("false"),
        "Add a column for a field the table does not have.",
    ),
    ConfigKey::optional(
        "delete.enabled",
        ConfigType::Boolean,
        Some("false"),
        "A record with a null value deletes the row of its key (needs pk.mode=record_key); otherwise it is skipped.",
    ),
    ConfigKey::optional(
        "batch.size",
        ConfigType::Int,
        Some("3000"),
        "Most rows written in one transaction.",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PkMode {
    None,
    /// The record's coordinates: idempotent for any records.
    Kafka,
    RecordKey,
    RecordValue,
}

/// The sink's settings, from a config.
#[derive(Debug, Clone)]
struct Settings {
    table_format: String,
    upsert: bool,
    pk_mode: PkMode,
    pk_fields: Vec<String>,
    whitelist: Option<BTreeSet<String>>,
    auto_create: bool,
    auto_evolve: bool,
    delete_enabled: bool,
    batch_size: usize,
}

impl Settings {
    /// The settings, or every (key, problem).
    fn from_props(p: &Props) -> Result<Settings, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let upsert = match p
            .get("insert.mode")
            .map(|m| m.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("insert") => false,
            Some("upsert") => true,
            Some(other) => {
                problems.push((
                    "insert.mode".into(),
                    format!("'{other}' is not insert or upsert"),
                ));
                false
            }
        };
        let pk_mode = match p
            .get("pk.mode")
            .map(|m| m.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("none") => Some(PkMode::None),
            Some("kafka") => Some(PkMode::Kafka),
            Some("record_key") => Some(PkMode::RecordKey),
            Some("record_value") => Some(PkMode::RecordValue),
            Some(other) => {
                problems.push((
                    "pk.mode".into(),
                    format!("'{other}' is not none, kafka, record_key or record_value"),
                ));
                None
            }
        };
        let pk_fields = list(p, "pk.fields");
        if upsert && pk_mode == Some(PkMode::None) {
            problems.push((
                "pk.mode".into(),
                "insert.mode=upsert needs key columns: pk.mode=kafka, record_key or record_value"
                    .into(),
            ));
        }
        let pk_mode = pk_mode.unwrap_or(PkMode::None);
        if pk_mode == PkMode::Kafka && !pk_fields.is_empty() && pk_fields.len() != 3 {
            problems.push((
                "pk.fields".into(),
                format!(
                    "pk.mode=kafka takes three column names (topic, partition, offset), not {}",
                    pk_fields.len()
                ),
            ));
        }
        if pk_mode == PkMode::RecordValue && pk_fields.is_empty() {
            problems.push((
                "pk.fields".into(),
                "pk.mode=record_value needs the value fields that make the key".into(),
            ));
        }
        for key in ["pk.fields", "fields.whitelist"] {
            for field in list(p, key) {
                if let Err(e) = sql::check_ident(&field) {
                    problems.push((key.into(), format!("not a column name: {e}")));
                }
            }
        }
        let delete_enabled = flag(p, "delete.enabled");
        if delete_enabled && pk_mode != PkMode::RecordKey {
            problems.push((
                "delete.enabled".into(),
                "deleting by key needs pk.mode=record_key".into(),
            ));
        }
        problems.extend(check_range(p, "batch.size", 1..=MAX_BATCH_SIZE));
        let table_format = p
            .get("table.name.format")
            .cloned()
            .unwrap_or_else(|| "${topic}".into());
        let topics = list(p, "topics");
        for topic in &topics {
            if let Err(e) = TableName::for_topic(&table_format, topic) {
                problems.push((
                    "table.name.format".into(),
                    format!("no table name for topic '{topic}': {e}"),
                ));
                break;
            }
        }
        let whitelist: BTreeSet<String> = list(p, "fields.whitelist").into_iter().collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Settings {
            table_format,
            upsert,
            pk_mode,
            pk_fields,
            whitelist: (!whitelist.is_empty()).then_some(whitelist),
            auto_create: flag(p, "auto.create"),
            auto_evolve: flag(p, "auto.evolve"),
            delete_enabled,
            batch_size: number(p, "batch.size", 3000).clamp(1, MAX_BATCH_SIZE) as usize,
        })
    }

    /// The row a record becomes; `None` for a tombstone that is skipped.
    fn row(&self, r: &SinkRecord) -> Result<Option<Row>, String> {
        let at = format!("{}/{}@{}", r.topic, r.partition, r.offset);
        let fail = |m: String| format!("record {at}: {m}");
        let table = TableName::for_topic(&self.table_format, &r.topic)
            .map_err(|e| fail(format!("table.name.format gives no table name: {e}")))?;
        let value = object(&r.value, "value").map_err(fail)?;
        let mut columns: Vec<String> = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        let mut push_key = |name: &str, v: Option<&Value>, from: &str| -> Result<(), String> {
            match v {
                None => Err(fail(format!(
                    "the {from} has no field '{name}' (pk.fields)"
                ))),
                Some(Value::Null) => Err(fail(format!("key field '{name}' of the {from} is null"))),
                Some(v) => {
                    columns.push(name.to_string());
                    values.push(v.clone());
                    Ok(())
                }
            }
        };
        match self.pk_mode {
            PkMode::None => {}
            PkMode::Kafka => {
                let names: Vec<&str> = if self.pk_fields.len() == 3 {
                    self.pk_fields.iter().map(String::as_str).collect()
                } else {
                    KAFKA_KEY_COLUMNS.to_vec()
                };
                let coordinates = [
                    Value::String(r.topic.to_string()),
                    Value::from(r.partition),
                    Value::from(r.offset),
                ];
                for (name, v) in names.into_iter().zip(coordinates) {
                    push_key(name, Some(&v), "record")?;
                }
            }
            PkMode::RecordKey => match key(&r.key).map_err(fail)? {
                Key::Fields(fields) if self.pk_fields.is_empty() => {
                    for (name, v) in &fields {
                        push_key(name, Some(v), "key")?;
                    }
                }
                Key::Fields(fields) => {
                    for name in &self.pk_fields {
                        push_key(name, fields.get(name), "key")?;
                    }
                }
                Key::One(v) => {
                    if self.pk_fields.len() > 1 {
                        return Err(fail(format!(
                            "the key is one value, but pk.fields names {} columns",
                            self.pk_fields.len()
                        )));
                    }
                    let name = self
                        .pk_fields
                        .first()
                        .map(String::as_str)
                        .unwrap_or(DEFAULT_KEY_COLUMN);
                    push_key(name, Some(&v), "key")?;
                }
            },
            PkMode::RecordValue => {
                if let Some(value) = &value {
                    for name in &self.pk_fields {
                        push_key(name, value.get(name), "value")?;
                    }
                }
            }
        }
        let key_len = columns.len();
        let Some(value) = value else {
            if self.delete_enabled && key_len > 0 {
                return Ok(Some(Row {
                    table,
                    op: Op::Delete,
                    columns,
                    values,
                    key_len,
                    at,
                }));
            }
            return Ok(None);
        };
        for (name, v) in value {
            if columns[..key_len].contains(&name) {
                continue;
            }
            if self.whitelist.as_ref().is_some_and(|w| !w.contains(&name)) {
                continue;
            }
            columns.push(name);
            values.push(v);
        }
        if columns.is_empty() {
            return Err(fail("the value has no field to write".into()));
        }
        if columns.len() > sql::MAX_COLUMNS {
            return Err(fail(format!(
                "{} fields, more than a table's {} columns",
                columns.len(),
                sql::MAX_COLUMNS
            )));
        }
        for c in &columns {
            sql::check_ident(c).map_err(|e| fail(format!("a field is not a column name: {e}")))?;
        }
        Ok(Some(Row {
            table,
            op: Op::Write,
            columns,
            values,
            key_len,
            at,
        }))
    }
}

/// A record's data as a JSON object; `None` for null.
fn object(data: &Data, what: &str) -> Result<Option<Map<String, Value>>, String> {
    let text = match data {
        Data::Null | Data::Json(Value::Null) => return Ok(None),
        Data::Json(Value::Object(m)) => return Ok(Some(m.clone())),
        Data::Json(Value::String(s)) => s.as_str(),
        Data::Text(s) => s,
        Data::Bytes(b) => std::str::from_utf8(b)
            .map_err(|_| format!("the {what} is bytes that are not UTF-8 JSON"))?,
        Data::Json(other) => {
            return Err(format!(
                "the {what} is {}, not a JSON object",
                kind_of(other)
            ))
        }
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        _ => Err(format!(
            "the {what} is a string, not a JSON object (with value.converter=json it must be an object)"
        )),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A record key: an object's fields, or one value.
enum Key {
    Fields(Map<String, Value>),
    One(Value),
}

fn key(data: &Data) -> Result<Key, String> {
    let one = |s: &str| match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(m)) if s.trim_start().starts_with('{') => Key::Fields(m),
        _ => Key::One(Value::String(s.to_string())),
    };
    match data {
        Data::Null | Data::Json(Value::Null) => {
            Err("the record has no key (pk.mode=record_key)".into())
        }
        Data::Json(Value::Object(m)) => Ok(Key::Fields(m.clone())),
        Data::Json(Value::Array(_)) => {
            Err("the key is an array; it must be an object or one value".into())
        }
        Data::Json(Value::String(s)) => Ok(one(s)),
        Data::Text(s) => Ok(one(s)),
        Data::Json(v) => Ok(Key::One(v.clone())),
        Data::Bytes(b) => std::str::from_utf8(b)
            .map(one)
            .map_err(|_| "the key is bytes that are not UTF-8".into()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Write,
    Delete,
}

/// One row to write (or delete).
#[derive(Debug, Clone, PartialEq)]
struct Row {
    table: TableName,
    op: Op,
    /// The key columns first, then the value's.
    columns: Vec<String>,
    values: Vec<Value>,
    key_len: usize,
    /// `topic/partition@offset` of the record, for messages.
    at: String,
}

type StatementKey = (TableName, Op, Vec<String>, usize);

impl ConnectorPlugin for PostgresSink {
    fn name(&self) -> &'static str {
        "postgres-sink"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &[
            "io.confluent.connect.jdbc.JdbcSinkConnector",
            "JdbcSinkConnector",
        ]
    }
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }
    fn config_keys(&self) -> &'static [ConfigKey] {
        KEYS
    }
    fn validate(&self, config: &Props) -> Vec<(String, String)> {
        super::validate(config, Settings::from_props)
    }
    fn task_configs(&self, config: &Props, max_tasks: usize) -> ConnectResult<Vec<Props>> {
        // Tasks share the consumer group, so partitions (and with them
        // keys) are split between them.
        Ok(vec![config.clone(); max_tasks.max(1)])
    }
    fn sink_task(&self, config: &Props) -> ConnectResult<Box<dyn SinkTask>> {
        let (settings, connection) = task_settings(config, Settings::from_props)?;
        Ok(Box::new(PostgresSinkTask {
            name: config.get("name").cloned().unwrap_or_default(),
            connection,
            settings,
            client: None,
            tables: HashMap::new(),
            statements: HashMap::new(),
        }))
    }
}

struct PostgresSinkTask {
    name: String,
    connection: tokio_postgres::Config,
    settings: Settings,
    client: Option<Client>,
    /// The columns of tables written so far.
    tables: HashMap<TableName, BTreeSet<String>>,
    statements: HashMap<StatementKey, Statement>,
}

/// Runs one group of rows in one transaction: every statement is sent
/// before the first answer is awaited (pipelined), and the first row that
/// failed is reported (with its index) once all have answered.
async fn transact(
    client: &mut Client,
    rows: &[Row],
    statements: &[Statement],
) -> Result<(), (Option<usize>, tokio_postgres::Error)> {
    let tx = client.transaction().await.map_err(|e| (None, e))?;
    let params: Vec<Vec<JsonParam<'_>>> = rows
        .iter()
        .map(|r| r.values.iter().map(JsonParam).collect())
        .collect();
    let executions = statements.iter().zip(&params).map(|(statement, params)| {
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let tx = &tx;
        async move { tx.execute(statement, &refs).await }
    });
    let results = futures::future::join_all(executions).await;
    if let Some((i, Err(e))) = results.into_iter().enumerate().find(|(_, r)| r.is_err()) {
        return Err((Some(i), e));
    }
    // Dropping an uncommitted transaction rolls it back.
    tx.commit().await.map_err(|e| (None, e))
}

impl PostgresSinkTask {
    async fn client(&mut self) -> ConnectResult<&mut Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            // Prepared statements belong to the connection that is gone.
            self.statements.clear();
            self.tables.clear();
            self.client = Some(connect(&self.connection, &self.name).await?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| ConnectError::retriable("no PostgreSQL connection"))
    }

    /// A driver failure as the task's error. What was learnt about tables
    /// and statements may be out of date after any failure, so it is
    /// forgotten; a lost connection is dropped so the next try reconnects.
    fn failed(
        &mut self,
        e: &tokio_postgres::Error,
        row: Option<&Row>,
        doing: &str,
    ) -> ConnectError {
        let (retriable, message) = describe(e);
        self.statements.clear();
        self.tables.clear();
        if retriable {
            self.client = None;
        }
        let class = e.code().map(|c| &c.code()[..2]);
        let message = match (row, class) {
            (Some(row), Some("22" | "23")) => format!(
                "record {}: PostgreSQL refused its row in {}: {message}",
                row.at, row.table
            ),
            (Some(row), _) if e.code() == Some(&SqlState::INVALID_COLUMN_REFERENCE) => format!(
                "record {}: upserting into {} needs a primary key or unique index on ({}): {message}",
                row.at,
                row.table,
                row.columns[..row.key_len].join(", ")
            ),
            (Some(row), _) => format!("record {}: {doing} {}: {message}", row.at, row.table),
            (None, _) => format!("{doing}: {message}"),
        };
        if retriable {
            ConnectError::retriable(message)
        } else {
            ConnectError::fatal(message)
        }
    }

    /// The columns of a table, or `None` if there is no such table.
    async fn columns(&mut self, table: &TableName) -> ConnectResult<Option<BTreeSet<String>>> {
        let client = self.client().await?;
        let result = client.query_opt(sql::TABLE_COLUMNS, &[&table.sql()]).await;
        let row = match result {
            Ok(row) => row,
            Err(e) => {
                return Err(self.failed(&e, None, &format!("reading the columns of {table}")))
            }
        };
        match row.map(|r| r.try_get::<_, Vec<String>>(0)) {
            None => Ok(None),
            Some(Ok(columns)) => Ok(Some(columns.into_iter().collect())),
            Some(Err(e)) => Err(self.failed(&e, None, &format!("reading the columns of {table}"))),
        }
    }

    /// Runs DDL; an object another task created meanwhile counts as done.
    async fn ddl(&mut self, statement: &str, row: &Row) -> ConnectResult<()> {
        let client = self.client().await?;
        match client.execute(statement, &[]).await {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.code(),
                    Some(&SqlState::DUPLICATE_TABLE)
                        | Some(&SqlState::DUPLICATE_COLUMN)
                        | Some(&SqlState::UNIQUE_VIOLATION)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(self.failed(&e, Some(row), "changing the table")),
        }
    }

    /// Makes sure every row's table exists and has its columns (creating
    /// or adding them if allowed); drops deletes from tables that do not
    /// exist and null fields that are not columns.
    async fn prepare_tables(&mut self, rows: Vec<Row>) -> ConnectResult<Vec<Row>> {
        if self.tables.len() > MAX_TABLES {
            self.tables.clear();
        }
        let mut out = Vec::with_capacity(rows.len());
        for mut row in rows {
            if !self.tables.contains_key(&row.table) {
                let columns = match self.columns(&row.table).await? {
                    Some(c) => c,
                    None if row.op == Op::Delete => continue,
                    None if self.settings.auto_create => {
                        let defs: Vec<(String, &'static str)> = row
                            .columns
                            .iter()
                            .zip(&row.values)
                            .map(|(c, v)| (c.clone(), sql::column_type(v)))
                            .collect();
                        let statement =
                            sql::create_table(&row.table, &defs, &row.columns[..row.key_len]);
                        self.ddl(&statement, &row).await?;
                        tracing::info!(connector = %self.name, table = %row.table, "created the table");
                        self.columns(&row.table).await?.unwrap_or_default()
                    }
                    None => {
                        return Err(ConnectError::fatal(format!(
                        "record {}: table {} does not exist (create it, or set auto.create=true)",
                        row.at, row.table
                    )))
                    }
                };
                self.tables.insert(row.table.clone(), columns);
            }
            let known = self.tables.get(&row.table).cloned().unwrap_or_default();
            let mut i = row.columns.len();
            while i > 0 {
                i -= 1;
                if known.contains(&row.columns[i]) {
                    continue;
                }
                if i >= row.key_len && row.values[i].is_null() {
                    row.columns.remove(i);
                    row.values.remove(i);
                } else if self.settings.auto_evolve {
                    let statement = sql::add_column(
                        &row.table,
                        &row.columns[i],
                        sql::column_type(&row.values[i]),
                    );
                    self.ddl(&statement, &row).await?;
                    tracing::info!(connector = %self.name, table = %row.table, column = %row.columns[i], "added a column");
                    if let Some(t) = self.tables.get_mut(&row.table) {
                        t.insert(row.columns[i].clone());
                    }
                } else {
                    return Err(ConnectError::fatal(format!(
                        "record {}: table {} has no column '{}' (add it, or set auto.evolve=true)",
                        row.at, row.table, row.columns[i]
                    )));
                }
            }
            if row.op == Op::Write && row.columns.is_empty() {
                continue;
            }
            out.push(row);
        }
        Ok(out)
    }

    /// The prepared statement for a row (cached).
    async fn statement(&mut self, row: &Row) -> ConnectResult<Statement> {
        let key: StatementKey = (row.table.clone(), row.op, row.columns.clone(), row.key_len);
        if let Some(s) = self.statements.get(&key) {
            return Ok(s.clone());
        }
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.clear();
        }
        let text = match row.op {
            Op::Write => sql::insert(
                &row.table,
                &row.columns,
                self.settings.upsert.then(|| &row.columns[..row.key_len]),
            ),
            Op::Delete => sql::delete(&row.table, &row.columns),
        };
        let client = self.client().await?;
        let result = client.prepare(&text).await;
        match result {
            Ok(s) => {
                self.statements.insert(key, s.clone());
                Ok(s)
            }
            Err(e) => Err(self.failed(&e, Some(row), "preparing a statement for")),
        }
    }

    /// Writes one group of rows in one transaction.
    async fn write(&mut self, rows: Vec<Row>) -> ConnectResult<()> {
        let rows = self.prepare_tables(rows).await?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut statements = Vec::with_capacity(rows.len());
        for row in &rows {
            statements.push(self.statement(row).await?);
        }
        let client = self.client().await?;
        match transact(client, &rows, &statements).await {
            Ok(()) => Ok(()),
            Err((index, e)) => {
                let row = index.and_then(|i| rows.get(i));
                Err(self.failed(&e, row, "writing to"))
            }
        }
    }
}

#[async_trait]
impl SinkTask for PostgresSinkTask {
    async fn start(&mut self) -> ConnectResult<()> {
        self.client().await.map(|_| ())
    }

    async fn put(&mut self, records: &[SinkRecord]) -> ConnectResult<()> {
        // Every record is checked before anything is written.
        let mut rows = Vec::with_capacity(records.len());
        for r in records {
            if let Some(row) = self.settings.row(r).map_err(ConnectError::fatal)? {
                rows.push(row);
            }
        }
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(self.settings.batch_size));
            self.write(rows).await?;
            rows = rest;
        }
        Ok(())
    }

    async fn flush(&mut self) -> ConnectResult<()> {
        // Every put returned after its COMMIT.
        Ok(())
    }

    async fn stop(&mut self) {
        self.client = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::postgres::tests::props;
    use serde_json::json;

    fn record(key: Data, value: Data) -> SinkRecord {
        SinkRecord {
            topic: "orders".into(),
            partition: 2,
            offset: 17,
            timestamp_ms: None,
            key,
            value,
            headers: vec![],
        }
    }

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let mut p = props(&[
            ("connection.url", "postgres://u@h/db"),
            ("topics", "orders"),
        ]);
        p.extend(props(pairs));
        Settings::from_props(&p).unwrap()
    }

    fn problems(pairs: &[(&str, &str)]) -> Vec<String> {
        let mut p = props(&[
            ("connection.url", "postgres://u@h/db"),
            ("topics", "orders"),
        ]);
        p.extend(props(pairs));
        PostgresSink
            .validate(&p)
            .into_iter()
            .map(|(k, m)| format!("{k}: {m}"))
            .collect()
    }

    #[test]
    fn bad_settings_are_named_by_their_key() {
        assert_eq!(problems(&[]), Vec::<String>::new());
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("insert.mode", "merge")],
                "insert.mode: 'merge' is not insert or upsert",
            ),
            (&[("pk.mode", "offset")], "pk.mode: 'offset' is not none"),
            (
                &[("pk.mode", "kafka"), ("pk.fields", "t,p")],
                "pk.fields: pk.mode=kafka takes three column names",
            ),
            (
                &[("insert.mode", "upsert")],
                "pk.mode: insert.mode=upsert needs key columns",
            ),
            (
                &[("pk.mode", "record_value")],
                "pk.fields: pk.mode=record_value needs",
            ),
            (
                &[("delete.enabled", "true")],
                "delete.enabled: deleting by key needs",
            ),
            (
                &[("batch.size", "0")],
                "batch.size: 0 is not between 1 and 100000",
            ),
            (
                &[("table.name.format", "a.b.${topic}")],
                "table.name.format: no table name for topic 'orders'",
            ),
            (
                &[("connection.url", "mysql://h/db")],
                "connection.url: 'mysql://h/db' is not a PostgreSQL URL",
            ),
            (
                &[("connection.url", "postgres://h/db")],
                "connection.user: no user",
            ),
        ];
        for (pairs, want) in cases {
            let got = problems(pairs);
            assert!(
                got.iter().any(|p| p.starts_with(want)),
                "{pairs:?}: {got:?}"
            );
        }
        // Missing required keys, through the common validation.
        let plugins = crate::connectors::builtin();
        let v = crate::config::validate(
            &plugins,
            &props(&[
                ("name", "pg"),
                (
                    "connector.class",
                    "io.confluent.connect.jdbc.JdbcSinkConnector",
                ),
            ]),
        );
        let problems = v.problems();
        for key in ["connection.url:", "topics:"] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} in {problems:?}"
            );
        }
        assert_eq!(v.plugin.unwrap().name(), "postgres-sink");
    }

    #[test]
    fn pk_mode_kafka_keys_rows_by_topic_partition_and_offset() {
        let s = settings(&[("insert.mode", "upsert"), ("pk.mode", "kafka")]);
        // No key at all: the coordinates are the key.
        let row = s
            .row(&record(Data::Null, Data::Json(json!({"a": 1}))))
            .unwrap()
            .unwrap();
        assert_eq!(
            row.columns,
            [
                "__connect_topic",
                "__connect_partition",
                "__connect_offset",
                "a"
            ]
        );
        assert_eq!(row.values, [json!("orders"), json!(2), json!(17), json!(1)]);
        assert_eq!(row.key_len, 3);
        let named = settings(&[
            ("insert.mode", "upsert"),
            ("pk.mode", "kafka"),
            ("pk.fields", "t,p,o"),
        ]);
        let row = named
            .row(&record(
                Data::Null,
                Data::Json(json!({"o": "from the value"})),
            ))
            .unwrap()
            .unwrap();
        // The coordinates win over a value field of the same name.
        assert_eq!(row.columns, ["t", "p", "o"]);
        assert_eq!(row.values, [json!("orders"), json!(2), json!(17)]);
    }

    #[test]
    fn records_become_rows_with_key_columns_first() {
        let s = settings(&[
            ("insert.mode", "upsert"),
            ("pk.mode", "record_key"),
            ("pk.fields", "id"),
        ]);
        let row = s
            .row(&record(
                Data::string("42"),
                Data::Json(json!({"b": 1, "a": "x", "id": 7})),
            ))
            .unwrap()
            .unwrap();
        assert_eq!(row.columns, vec!["id", "a", "b"]);
        assert_eq!(row.values, vec![json!("42"), json!("x"), json!(1)]);
        assert_eq!(
            (row.key_len, row.op, row.at.as_str()),
            (1, Op::Write, "orders/2@17")
        );
        // An object key gives its fields; a JSON text value is read.
        let s = settings(&[("pk.mode", "record_key")]);
        let row = s
            .row(&record(
                Data::Json(json!({"region": "eu", "n": 1})),
                Data::string(r#"{"v": true}"#),
            ))
            .unwrap()
            .unwrap();
        assert_eq!(
            (row.columns.clone(), row.key_len),
            (vec!["n".to_string(), "region".into(), "v".into()], 2)
        );
        let row = s
            .row(&record(Data::Json(json!(5)), Data::Json(json!({"v": 1}))))
            .unwrap()
            .unwrap();
        assert_eq!(row.columns[0], "__connect_key");
        // Value fields as the key, and a whitelist.
        let s = settings(&[
            ("pk.mode", "record_value"),
            ("pk.fields", "id"),
            ("fields.whitelist", "a"),
        ]);
        let row = s
            .row(&record(
                Data::Null,
                Data::Json(json!({"a": 1, "b": 2, "id": 3})),
            ))
            .unwrap()
            .unwrap();
        assert_eq!(row.columns, vec!["id", "a"]);
    }

    #[test]
    fn records_that_do_not_fit_are_refused_with_where_and_why() {
        let s = settings(&[("pk.mode", "record_value"), ("pk.fields", "id")]);
        let err = |s: &Settings, key: Data, value: Data| s.row(&record(key, value)).unwrap_err();
        let e = err(&s, Data::Null, Data::Json(json!({"a": 1})));
        assert_eq!(
            e,
            "record orders/2@17: the value has no field 'id' (pk.fields)"
        );
        let e = err(&s, Data::Null, Data::Json(json!({"id": null})));
        assert!(e.contains("key field 'id' of the value is null"), "{e}");
        let e = err(&s, Data::Null, Data::Json(json!([1])));
        assert!(
            e.contains("the value is an array, not a JSON object"),
            "{e}"
        );
        let e = err(&s, Data::Null, Data::string("not json"));
        assert!(e.contains("not a JSON object"), "{e}");
        let long = "f".repeat(64);
        let e = err(
            &s,
            Data::Null,
            Data::Json(json!({"id": 1, long.clone(): 1})),
        );
        assert!(e.contains("longer than 63 bytes"), "{e}");
        let s = settings(&[("pk.mode", "record_key")]);
        let e = err(&s, Data::Null, Data::Json(json!({"a": 1})));
        assert!(e.contains("has no key"), "{e}");
        let s = settings(&[("pk.mode", "record_key"), ("pk.fields", "a,b")]);
        let e = err(&s, Data::string("k"), Data::Json(json!({"x": 1})));
        assert!(e.contains("one value, but pk.fields names 2"), "{e}");
    }

    #[test]
    fn tombstones_delete_by_key_or_are_skipped() {
        let s = settings(&[
            ("pk.mode", "record_key"),
            ("pk.fields", "id"),
            ("delete.enabled", "true"),
        ]);
        let row = s
            .row(&record(Data::string("9"), Data::Null))
            .unwrap()
            .unwrap();
        assert_eq!(
            (row.op, row.columns.clone(), row.values.clone()),
            (Op::Delete, vec!["id".to_string()], vec![json!("9")])
        );
        let s = settings(&[("pk.mode", "record_key"), ("pk.fields", "id")]);
        assert_eq!(s.row(&record(Data::string("9"), Data::Null)).unwrap(), None);
    }

    #[test]
    fn a_sink_runs_one_task_per_tasks_max() {
        let p = props(&[
            ("connection.url", "postgres://u@h/db"),
            ("topics", "orders"),
        ]);
        assert_eq!(PostgresSink.task_configs(&p, 3).unwrap().len(), 3);
        assert!(PostgresSink.sink_task(&p).is_ok());
    }
}
