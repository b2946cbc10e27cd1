//! `postgres-source` (also `io.confluent.connect.jdbc.JdbcSourceConnector`):
//! polls tables (`table.whitelist`, split between `tasks.max` tasks) or one
//! `query` for rows it has not read yet, and writes each row as a record to
//! `topic.prefix` + table (or `topic`, for every table).
//!
//! What "not read yet" means is the `mode`:
//!
//! | mode | reads, in this order | source offset |
//! |---|---|---|
//! | `incrementing` | `id > $last` by `id` | `{"incrementing": 41}` |
//! | `timestamp` | `ts > $last` by `ts` | `{"timestamp": "2024-05-01T10:00:00.5+00:00"}` |
//! | `timestamp+incrementing` | `ts > $ts OR (ts = $ts AND id > $id)` by `ts, id` | both |
//!
//! with at most `batch.max.rows` rows a query, all values bound as
//! parameters. The source partition is `{"table": "<name as listed>"}`
//! (`{"query": "query"}` for a query); a restarted task resumes after the
//! committed offset. Rows whose tracking columns are NULL are never read.
//! `incrementing` sees new rows only; the timestamp modes see updated rows
//! again when their timestamp moves. Rows that share a timestamp are never
//! split by `timestamp` mode: a batch stops before the last timestamp it
//! may not have read whole (or, when one timestamp fills a whole batch,
//! reads all its rows, up to [`MAX_EQUAL_ROWS`]), and a row's offset is
//! the last timestamp read whole; `timestamp+incrementing` tells such rows
//! apart by the incrementing column. A transaction that commits after rows
//! with later values were read is missed by every mode (as in Confluent's
//! connector); `timestamp.delay.interval.ms` leaves recent rows for later.
//!
//! A row's value is the JSON object PostgreSQL makes of it (`row_to_json`)
//! with one change: NUMERIC columns are exact decimal strings (`"12.50"`),
//! because a JSON number would be read as a double. So integers and floats
//! are numbers, booleans booleans, text strings, json and jsonb nested
//! JSON, arrays arrays, bytea `"\\x..."` hex strings, and timestamps ISO
//! 8601 strings with microseconds: TIMESTAMPTZ in UTC
//! (`"2024-05-01T10:00:00.123456+00:00"`, the session's time zone is UTC),
//! TIMESTAMP without a zone, DATE as `"2024-05-01"`. The key is the
//! incrementing column's value (a number) in the incrementing modes, and
//! null otherwise.
//!
//! The columns are learnt when a table is first polled, and again every
//! [`DESCRIBE_INTERVAL`], so columns added later appear in records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

use super::sql::{After, JsonParam, Mode, SourceQuery, TableName};
use super::{
    check_range, connect, list, number, task_settings, to_connect_error, PASSWORD_KEY, URL_KEY,
    USER_KEY,
};
use crate::plugin::{
    ConfigKey, ConfigType, ConnectError, ConnectResult, ConnectorKind, ConnectorPlugin,
    OffsetReader, Props, SourceTask,
};
use crate::record::{Data, SourcePartition, SourceRecord};

pub struct PostgresSource;

/// Most rows one query returns.
pub const MAX_BATCH_ROWS: i64 = 100_000;
/// Most rows that may share one timestamp in `timestamp` mode (they are
/// read in one go); more fail the task: use `timestamp+incrementing`.
pub const MAX_EQUAL_ROWS: i64 = 100_000;
/// Largest row, as JSON; a larger one fails the task (it would not fit a
/// record either).
pub const MAX_ROW_BYTES: usize = 8 << 20;
/// Most tables one connector polls.
pub const MAX_TABLES: usize = 1000;
/// How often a table's columns are looked up again.
pub const DESCRIBE_INTERVAL: Duration = Duration::from_secs(60);

static KEYS: &[ConfigKey] = &[
    URL_KEY,
    USER_KEY,
    PASSWORD_KEY,
    ConfigKey::optional(
        "table.whitelist",
        ConfigType::List,
        None,
        "Tables to poll (table or schema.table), split between the tasks; or give query.",
    ),
    ConfigKey::optional(
        "query",
        ConfigType::String,
        None,
        "A SELECT to poll instead of tables (its rows are filtered and ordered by the tracking columns).",
    ),
    ConfigKey::required(
        "mode",
        ConfigType::String,
        "How new rows are found: incrementing, timestamp or timestamp+incrementing.",
    ),
    ConfigKey::optional(
        "incrementing.column.name",
        ConfigType::String,
        None,
        "A strictly increasing integer column (incrementing modes).",
    ),
    ConfigKey::optional(
        "timestamp.column.name",
        ConfigType::String,
        None,
        "A TIMESTAMP, TIMESTAMPTZ or DATE column set on insert and update (timestamp modes).",
    ),
    ConfigKey::optional(
        "topic.prefix",
        ConfigType::String,
        Some(""),
        "A table's records go to this prefix + the table's name (a query's to the prefix).",
    ),
    ConfigKey::optional(
        "topic",
        ConfigType::String,
        None,
        "One topic for the records of every table (instead of topic.prefix).",
    ),
    ConfigKey::optional(
        "poll.interval.ms",
        ConfigType::Long,
        Some("5000"),
        "How long to wait before looking again when no table had new rows.",
    ),
    ConfigKey::optional(
        "batch.max.rows",
        ConfigType::Int,
        Some("100"),
        "Most rows read by one query (and one poll).",
    ),
    ConfigKey::optional(
        "timestamp.delay.interval.ms",
        ConfigType::Long,
        Some("0"),
        "Timestamp modes: read a row only once its timestamp is this much older than the server's clock, so transactions still open have committed.",
    ),
];

/// What a connector polls.
#[derive(Debug, Clone)]
enum Relations {
    Tables(Vec<(String, TableName)>),
    Query(String),
}

#[derive(Debug, Clone)]
struct Settings {
    relations: Relations,
    mode: Mode,
    incrementing: Option<String>,
    timestamp: Option<String>,
    topic_prefix: String,
    topic: Option<String>,
    poll_interval: Duration,
    batch_max_rows: i64,
    delay_ms: i64,
}

fn topic_name_problem(topic: &str) -> Option<String> {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    (!ok).then(|| format!("'{topic}' is not a topic name (1-249 of a-z A-Z 0-9 . _ -)"))
}

impl Settings {
    fn from_props(p: &Props) -> Result<Settings, Vec<(String, String)>> {
        let mut problems: Vec<(String, String)> = Vec::new();
        let tables = list(p, "table.whitelist");
        let query = p
            .get("query")
            .map(|q| q.trim().trim_end_matches(';').trim().to_string())
            .filter(|q| !q.is_empty());
        let topic = p
            .get("topic")
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let topic_prefix = p.get("topic.prefix").cloned().unwrap_or_default();
        let relations = match (tables.is_empty(), query) {
            (false, Some(_)) | (true, None) => {
                problems.push((
                    "table.whitelist".into(),
                    "give exactly one of table.whitelist and query".into(),
                ));
                Relations::Tables(Vec::new())
            }
            (true, Some(q)) => {
                if topic.is_none() && topic_prefix.is_empty() {
                    problems.push((
                        "topic.prefix".into(),
                        "a query's records go to topic.prefix (or topic); set one".into(),
                    ));
                }
                Relations::Query(q)
            }
            (false, None) => {
                if tables.len() > MAX_TABLES {
                    problems.push((
                        "table.whitelist".into(),
                        format!("{} tables, more than {MAX_TABLES}", tables.len()),
                    ));
                }
                let mut parsed = Vec::new();
                for t in tables {
                    match TableName::parse(&t) {
                        Ok(name) => {
                            if topic.is_none() {
                                if let Some(e) = topic_name_problem(&format!("{topic_prefix}{t}")) {
                                    problems.push((
                                        "table.whitelist".into(),
                                        format!("the topic of {t}: {e}"),
                                    ));
                                }
                            }
                            parsed.push((t, name));
                        }
                        Err(e) => problems.push(("table.whitelist".into(), format!("'{t}': {e}"))),
                    }
                }
                Relations::Tables(parsed)
            }
        };
        if let Some(t) = &topic {
            if let Some(e) = topic_name_problem(t) {
                problems.push(("topic".into(), e));
            }
        }
        let mode = p.get("mode").map(|m| (m, Mode::parse(m)));
        let mode = match mode {
            Some((_, Some(mode))) => mode,
            Some((m, None)) => {
                problems.push((
                    "mode".into(),
                    format!("'{m}' is not incrementing, timestamp or timestamp+incrementing"),
                ));
                Mode::Incrementing
            }
            // Reported as a missing required key.
            None => Mode::Incrementing,
        };
        let column = |key: &str, needed: bool, problems: &mut Vec<(String, String)>| {
            let c = p
                .get(key)
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty());
            match (&c, needed) {
                (None, true) if p.contains_key("mode") => problems.push((
                    key.to_string(),
                    format!(
                        "mode={} needs the column",
                        p.get("mode").map(String::as_str).unwrap_or("")
                    ),
                )),
                (Some(name), true) => {
                    if let Err(e) = super::sql::check_ident(name) {
                        problems.push((key.to_string(), e));
                    }
                }
                _ => {}
            }
            c.filter(|_| needed)
        };
        let incrementing = column(
            "incrementing.column.name",
            mode.incrementing(),
            &mut problems,
        );
        let timestamp = column("timestamp.column.name", mode.timestamp(), &mut problems);
        problems.extend(check_range(p, "poll.interval.ms", 1..=86_400_000));
        problems.extend(check_range(p, "batch.max.rows", 1..=MAX_BATCH_ROWS));
        problems.extend(check_range(
            p,
            "timestamp.delay.interval.ms",
            0..=604_800_000,
        ));
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Settings {
            relations,
            mode,
            incrementing,
            timestamp,
            topic_prefix,
            topic,
            poll_interval: Duration::from_millis(number(p, "poll.interval.ms", 5000).max(1) as u64),
            batch_max_rows: number(p, "batch.max.rows", 100).clamp(1, MAX_BATCH_ROWS),
            delay_ms: number(p, "timestamp.delay.interval.ms", 0).max(0),
        })
    }
}

/// How far a table has been read: everything up to and including this.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Offset {
    /// As PostgreSQL's JSON writes the timestamp (bound back as text, so
    /// exact to the microsecond).
    timestamp: Option<String>,
    incrementing: Option<i64>,
}

impl Offset {
    fn from_json(v: &Value, mode: Mode) -> Offset {
        let timestamp = v
            .get("timestamp")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut incrementing = v.get("incrementing").and_then(Value::as_i64);
        if mode == Mode::TimestampIncrementing && timestamp.is_some() && incrementing.is_none() {
            // Saved by timestamp mode: read that timestamp's rows again
            // rather than miss any.
            incrementing = Some(i64::MIN);
        }
        Offset {
            timestamp,
            incrementing,
        }
    }

    fn to_json(&self, mode: Mode) -> Value {
        let mut m = Map::new();
        if mode.timestamp() {
            m.insert(
                "timestamp".into(),
                self.timestamp.clone().map_or(Value::Null, Value::String),
            );
        }
        if mode.incrementing() {
            m.insert(
                "incrementing".into(),
                self.incrementing.map_or(Value::Null, Value::from),
            );
        }
        Value::Object(m)
    }

    /// Which poll statement reads after this offset, and its values.
    fn after(&self, mode: Mode) -> (After, Vec<Value>) {
        match (mode, &self.timestamp, self.incrementing) {
            (Mode::Incrementing, _, Some(i)) => (After::One, vec![Value::from(i)]),
            (Mode::Timestamp, Some(t), _) => (After::One, vec![Value::String(t.clone())]),
            (Mode::TimestampIncrementing, Some(t), Some(i)) => {
                (After::Both, vec![Value::String(t.clone()), Value::from(i)])
            }
            _ => (After::Start, Vec::new()),
        }
    }
}

/// A row read, with its tracking values.
struct Read {
    value: Map<String, Value>,
    offset: Offset,
}

/// The prepared statements of a table.
struct Prepared {
    columns: Vec<(String, bool)>,
    start: Statement,
    after: Statement,
    /// Timestamp mode: every row of one timestamp.
    equal: Option<Statement>,
    at: Instant,
}

struct Table {
    /// As listed (or `query`).
    name: String,
    relation: String,
    partition: Arc<SourcePartition>,
    topic: Arc<str>,
    offset: Offset,
    prepared: Option<Prepared>,
}

impl ConnectorPlugin for PostgresSource {
    fn name(&self) -> &'static str {
        "postgres-source"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &[
            "io.confluent.connect.jdbc.JdbcSourceConnector",
            "JdbcSourceConnector",
        ]
    }
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Source
    }
    fn config_keys(&self) -> &'static [ConfigKey] {
        KEYS
    }
    fn validate(&self, config: &Props) -> Vec<(String, String)> {
        super::validate(config, Settings::from_props)
    }
    fn task_configs(&self, config: &Props, max_tasks: usize) -> ConnectResult<Vec<Props>> {
        let tables = list(config, "table.whitelist");
        if tables.is_empty() {
            return Ok(vec![config.clone()]);
        }
        let n = max_tasks.clamp(1, tables.len());
        Ok((0..n)
            .map(|t| {
                let mine: Vec<&str> = tables
                    .iter()
                    .skip(t)
                    .step_by(n)
                    .map(String::as_str)
                    .collect();
                let mut c = config.clone();
                c.insert("table.whitelist".into(), mine.join(","));
                c
            })
            .collect())
    }
    fn source_task(&self, config: &Props) -> ConnectResult<Box<dyn SourceTask>> {
        let (settings, connection) = task_settings(config, Settings::from_props)?;
        let topic_of = |suffix: &str| -> Arc<str> {
            match &settings.topic {
                Some(t) => Arc::from(t.as_str()),
                None => Arc::from(format!("{}{suffix}", settings.topic_prefix)),
            }
        };
        let tables = match &settings.relations {
            Relations::Tables(tables) => tables
                .iter()
                .map(|(name, table)| Table {
                    name: name.clone(),
                    relation: table.sql(),
                    partition: Arc::new(Map::from_iter([(
                        "table".to_string(),
                        Value::String(name.clone()),
                    )])),
                    topic: topic_of(name),
                    offset: Offset::default(),
                    prepared: None,
                })
                .collect(),
            Relations::Query(q) => vec![Table {
                name: "query".into(),
                relation: format!("({q})"),
                partition: Arc::new(Map::from_iter([(
                    "query".to_string(),
                    Value::String("query".into()),
                )])),
                topic: topic_of(""),
                offset: Offset::default(),
                prepared: None,
            }],
        };
        Ok(Box::new(PostgresSourceTask {
            name: config.get("name").cloned().unwrap_or_default(),
            connection,
            settings,
            client: None,
            tables,
            next: 0,
        }))
    }
}

struct PostgresSourceTask {
    name: String,
    connection: tokio_postgres::Config,
    settings: Settings,
    client: Option<Client>,
    tables: Vec<Table>,
    /// The table the next poll starts with (each gets its turn).
    next: usize,
}

impl PostgresSourceTask {
    async fn client(&mut self) -> ConnectResult<&Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            for t in &mut self.tables {
                t.prepared = None;
            }
            let client = connect(&self.connection, &self.name).await?;
            client
                .batch_execute("SET TIME ZONE 'UTC'")
                .await
                .map_err(|e| to_connect_error("setting the time zone", &e))?;
            self.client = Some(client);
        }
        self.client
            .as_ref()
            .ok_or_else(|| ConnectError::retriable("no PostgreSQL connection"))
    }

    /// A driver failure while reading table `i`; a lost connection is
    /// dropped, so the next poll reconnects.
    fn failed(&mut self, i: usize, doing: &str, e: &tokio_postgres::Error) -> ConnectError {
        let error = to_connect_error(&format!("{doing} {}", self.tables[i].name), e);
        self.tables[i].prepared = None;
        if error.retriable {
            self.client = None;
        }
        error
    }

    /// Learns table `i`'s columns and prepares its polls.
    async fn prepare(&mut self, i: usize) -> ConnectResult<()> {
        let s = self.settings.clone();
        let relation = self.tables[i].relation.clone();
        let table = self.tables[i].name.clone();
        let previous = self.tables[i].prepared.as_ref().map(|p| p.columns.clone());
        let client = self.client().await?;
        let described = client.prepare(&SourceQuery::describe(&relation)).await;
        let described = match described {
            Ok(d) => d,
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                return Err(ConnectError::fatal(format!(
                    "{table}: the table does not exist"
                )))
            }
            Err(e) => return Err(self.failed(i, "reading the columns of", &e)),
        };
        let columns: Vec<(String, bool)> = described
            .columns()
            .iter()
            .map(|c| (c.name().to_string(), *c.type_() == Type::NUMERIC))
            .collect();
        let check = |name: &Option<String>, key: &str, types: &[Type], what: &str| {
            let Some(name) = name else { return Ok(()) };
            match described.columns().iter().find(|c| c.name() == name) {
                None => Err(ConnectError::fatal(format!(
                    "{table}: no column '{name}' ({key})"
                ))),
                Some(c) if !types.contains(c.type_()) => Err(ConnectError::fatal(format!(
                    "{table}: column '{name}' ({key}) is {}, not {what}",
                    c.type_()
                ))),
                Some(_) => Ok(()),
            }
        };
        check(
            &s.incrementing,
            "incrementing.column.name",
            &[Type::INT2, Type::INT4, Type::INT8],
            "an integer",
        )?;
        check(
            &s.timestamp,
            "timestamp.column.name",
            &[Type::TIMESTAMP, Type::TIMESTAMPTZ, Type::DATE],
            "a timestamp or date",
        )?;
        if previous.as_ref() == Some(&columns) {
            if let Some(p) = self.tables[i].prepared.as_mut() {
                p.at = Instant::now();
            }
            return Ok(());
        }
        let query = SourceQuery {
            relation,
            columns: columns.clone(),
            mode: s.mode,
            incrementing: s.incrementing.clone(),
            timestamp: s.timestamp.clone(),
            delay_ms: s.delay_ms,
        };
        let after = if s.mode == Mode::TimestampIncrementing {
            After::Both
        } else {
            After::One
        };
        let statements = async {
            let start = client.prepare(&query.poll(After::Start)).await?;
            let after = client.prepare(&query.poll(after)).await?;
            let equal = if s.mode == Mode::Timestamp {
                Some(client.prepare(&query.poll(After::Equal)).await?)
            } else {
                None
            };
            Ok::<_, tokio_postgres::Error>((start, after, equal))
        }
        .await;
        match statements {
            Ok((start, after, equal)) => {
                self.tables[i].prepared = Some(Prepared {
                    columns,
                    start,
                    after,
                    equal,
                    at: Instant::now(),
                });
                Ok(())
            }
            Err(e) => Err(self.failed(i, "preparing the polls of", &e)),
        }
    }

    /// Runs one poll statement of table `i`: `$1` is `limit`, then
    /// `values`, then the delay.
    async fn query(
        &mut self,
        i: usize,
        which: After,
        limit: i64,
        values: &[Value],
    ) -> ConnectResult<Vec<Read>> {
        let Some(p) = &self.tables[i].prepared else {
            return Err(ConnectError::retriable(
                "the table's polls are not prepared",
            ));
        };
        let statement = match which {
            After::Start => &p.start,
            After::Equal => p.equal.as_ref().unwrap_or(&p.after),
            After::One | After::Both => &p.after,
        }
        .clone();
        let delay = self.settings.delay_ms;
        let json: Vec<JsonParam<'_>> = values.iter().map(JsonParam).collect();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&limit];
        params.extend(json.iter().map(|p| p as &(dyn ToSql + Sync)));
        if delay > 0 && self.settings.timestamp.is_some() {
            params.push(&delay);
        }
        let Some(client) = self.client.as_ref() else {
            return Err(ConnectError::retriable("no PostgreSQL connection"));
        };
        let rows = match client.query(&statement, &params).await {
            Ok(rows) => rows,
            Err(e) => return Err(self.failed(i, "reading", &e)),
        };
        let table = &self.tables[i].name;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let text: String = row.try_get(0).map_err(|e| {
                ConnectError::fatal(format!("{table}: a row is not JSON text: {e}"))
            })?;
            if text.len() > MAX_ROW_BYTES {
                return Err(ConnectError::fatal(format!(
                    "{table}: a row is {} bytes as JSON, more than {MAX_ROW_BYTES}",
                    text.len()
                )));
            }
            let Ok(Value::Object(value)) = serde_json::from_str::<Value>(&text) else {
                return Err(ConnectError::fatal(format!(
                    "{table}: PostgreSQL's JSON of a row is not an object"
                )));
            };
            let field = |c: &Option<String>| c.as_ref().and_then(|c| value.get(c));
            let offset = Offset {
                timestamp: match field(&self.settings.timestamp) {
                    None => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(other) => {
                        return Err(ConnectError::fatal(format!(
                            "{table}: the timestamp column reads as {other}, not a string"
                        )))
                    }
                },
                incrementing: match field(&self.settings.incrementing) {
                    None => None,
                    Some(v) => Some(v.as_i64().ok_or_else(|| {
                        ConnectError::fatal(format!(
                            "{table}: the incrementing column reads as {v}, not a 64-bit integer"
                        ))
                    })?),
                },
            };
            out.push(Read { value, offset });
        }
        Ok(out)
    }

    /// The records of table `i` after its offset (at most a batch).
    async fn poll_table(&mut self, i: usize) -> ConnectResult<Vec<SourceRecord>> {
        let stale = self.tables[i]
            .prepared
            .as_ref()
            .is_none_or(|p| p.at.elapsed() >= DESCRIBE_INTERVAL);
        if stale {
            self.prepare(i).await?;
        }
        let mode = self.settings.mode;
        let limit = self.settings.batch_max_rows;
        let (which, values) = self.tables[i].offset.after(mode);
        let mut rows = self.query(i, which, limit, &values).await?;
        if mode == Mode::Timestamp && rows.len() as i64 == limit {
            // The last timestamp may have more rows than fitted: leave it
            // for the next poll, or, if it filled the batch, read it whole.
            let last = rows.last().and_then(|r| r.offset.timestamp.clone());
            let first_of_last = rows
                .iter()
                .position(|r| r.offset.timestamp == last)
                .unwrap_or(0);
            if first_of_last > 0 {
                rows.truncate(first_of_last);
            } else if let Some(ts) = last {
                rows = self
                    .query(
                        i,
                        After::Equal,
                        MAX_EQUAL_ROWS + 1,
                        &[Value::String(ts.clone())],
                    )
                    .await?;
                if rows.len() as i64 > MAX_EQUAL_ROWS {
                    return Err(ConnectError::fatal(format!(
                        "{}: more than {MAX_EQUAL_ROWS} rows have the timestamp {ts}; use mode=timestamp+incrementing",
                        self.tables[i].name
                    )));
                }
            }
        }
        let table = &mut self.tables[i];
        let mut done = table.offset.clone();
        let mut records = Vec::with_capacity(rows.len());
        for k in 0..rows.len() {
            // In timestamp mode a row's offset is the last timestamp whose
            // rows are all read, so a restart never skips part of one.
            let whole = mode != Mode::Timestamp
                || rows
                    .get(k + 1)
                    .is_none_or(|n| n.offset.timestamp != rows[k].offset.timestamp);
            if whole {
                done = rows[k].offset.clone();
            }
            let key = match (mode.incrementing(), rows[k].offset.incrementing) {
                (true, Some(n)) => Data::Json(Value::from(n)),
                _ => Data::Null,
            };
            let mut record = SourceRecord::new(
                table.partition.clone(),
                done.to_json(mode),
                table.topic.clone(),
                Data::Json(Value::Object(std::mem::take(&mut rows[k].value))),
            );
            record.key = key;
            records.push(record);
        }
        table.offset = done;
        Ok(records)
    }
}

#[async_trait]
impl SourceTask for PostgresSourceTask {
    async fn start(&mut self, offsets: Arc<dyn OffsetReader>) -> ConnectResult<()> {
        let mode = self.settings.mode;
        for t in &mut self.tables {
            if let Some(saved) = offsets.offset(&t.partition) {
                t.offset = Offset::from_json(&saved, mode);
                tracing::info!(connector = %self.name, table = %t.name, offset = %saved, "resuming after the committed offset");
            }
        }
        // Problems with the tables show now rather than at the first poll.
        for i in 0..self.tables.len() {
            self.prepare(i).await?;
        }
        Ok(())
    }

    async fn poll(&mut self) -> ConnectResult<Vec<SourceRecord>> {
        let mut out = Vec::new();
        let n = self.tables.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            out.extend(self.poll_table(i).await?);
            if out.len() as i64 >= self.settings.batch_max_rows {
                self.next = (i + 1) % n;
                return Ok(out);
            }
        }
        if out.is_empty() {
            tokio::time::sleep(self.settings.poll_interval).await;
        }
        Ok(out)
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

    fn problems(pairs: &[(&str, &str)]) -> Vec<String> {
        let mut p = props(&[("connection.url", "jdbc:postgresql://h:5432/db?user=u")]);
        p.extend(props(pairs));
        PostgresSource
            .validate(&p)
            .into_iter()
            .map(|(k, m)| format!("{k}: {m}"))
            .collect()
    }

    #[test]
    fn bad_settings_are_named_by_their_key() {
        let ok: &[(&str, &str)] = &[
            ("table.whitelist", "items, sales.orders"),
            ("mode", "incrementing"),
            ("incrementing.column.name", "id"),
        ];
        assert_eq!(problems(ok), Vec::<String>::new());
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("mode", "bulk"), ("table.whitelist", "t")],
                "mode: 'bulk' is not incrementing",
            ),
            (
                &[("mode", "incrementing"), ("table.whitelist", "t")],
                "incrementing.column.name: mode=incrementing needs the column",
            ),
            (
                &[
                    ("mode", "timestamp+incrementing"),
                    ("table.whitelist", "t"),
                    ("incrementing.column.name", "id"),
                ],
                "timestamp.column.name: mode=timestamp+incrementing needs",
            ),
            (
                &[("mode", "timestamp"), ("timestamp.column.name", "ts")],
                "table.whitelist: give exactly one of",
            ),
            (
                &[
                    ("mode", "timestamp"),
                    ("timestamp.column.name", "ts"),
                    ("table.whitelist", "t"),
                    ("query", "SELECT 1"),
                ],
                "table.whitelist: give exactly one of",
            ),
            (
                &[
                    ("mode", "timestamp"),
                    ("timestamp.column.name", "ts"),
                    ("query", "SELECT 1"),
                ],
                "topic.prefix: a query's records",
            ),
            (
                &[
                    ("mode", "timestamp"),
                    ("timestamp.column.name", "ts"),
                    ("table.whitelist", "a.b.c"),
                ],
                "table.whitelist: 'a.b.c'",
            ),
            (
                &[
                    ("mode", "timestamp"),
                    ("timestamp.column.name", "ts"),
                    ("table.whitelist", "my table"),
                ],
                "table.whitelist: the topic of my table",
            ),
            (
                &[
                    ("mode", "timestamp"),
                    ("timestamp.column.name", "ts"),
                    ("table.whitelist", "t"),
                    ("batch.max.rows", "0"),
                ],
                "batch.max.rows: 0 is not between",
            ),
            (
                &[
                    ("mode", "timestamp"),
                    ("timestamp.column.name", "ts"),
                    ("table.whitelist", "t"),
                    ("connection.url", "jdbc:mysql://h/db"),
                ],
                "connection.url:",
            ),
        ];
        for (pairs, want) in cases {
            let got = problems(pairs);
            assert!(
                got.iter().any(|p| p.starts_with(want)),
                "{pairs:?}: {got:?}"
            );
        }
        // A missing mode is a missing required key.
        let plugins = crate::connectors::builtin();
        let v = crate::config::validate(
            &plugins,
            &props(&[
                ("name", "pg"),
                (
                    "connector.class",
                    "io.confluent.connect.jdbc.JdbcSourceConnector",
                ),
                ("table.whitelist", "t"),
                ("connection.url", "postgres://u@h/db"),
            ]),
        );
        assert!(
            v.problems()
                .iter()
                .any(|p| p.starts_with("mode: Missing required")),
            "{:?}",
            v.problems()
        );
    }

    #[test]
    fn tables_are_split_between_tasks() {
        let p = props(&[
            ("connection.url", "postgres://u@h/db"),
            ("table.whitelist", "a,b,c"),
            ("mode", "incrementing"),
            ("incrementing.column.name", "id"),
        ]);
        let tasks = PostgresSource.task_configs(&p, 2).unwrap();
        let lists: Vec<&str> = tasks
            .iter()
            .map(|t| t["table.whitelist"].as_str())
            .collect();
        assert_eq!(lists, vec!["a,c", "b"]);
        assert_eq!(PostgresSource.task_configs(&p, 9).unwrap().len(), 3);
        assert!(PostgresSource.source_task(&tasks[0]).is_ok());
    }

    #[test]
    fn offsets_round_trip_and_choose_the_poll() {
        let o = Offset {
            timestamp: Some("2024-05-01T10:00:00+00:00".into()),
            incrementing: Some(7),
        };
        let both = Mode::TimestampIncrementing;
        assert_eq!(
            o.to_json(both),
            json!({"timestamp": "2024-05-01T10:00:00+00:00", "incrementing": 7})
        );
        assert_eq!(Offset::from_json(&o.to_json(both), both), o);
        assert_eq!(o.after(both).0, After::Both);
        assert_eq!(o.to_json(Mode::Incrementing), json!({"incrementing": 7}));
        assert_eq!(
            Offset::default().to_json(Mode::Timestamp),
            json!({"timestamp": null})
        );
        assert_eq!(
            Offset::default().after(Mode::Timestamp),
            (After::Start, vec![])
        );
        // A timestamp-only offset in timestamp+incrementing mode re-reads
        // that timestamp rather than skip rows.
        let t = Offset::from_json(&json!({"timestamp": "x"}), both);
        assert_eq!(
            t.after(both),
            (After::Both, vec![json!("x"), json!(i64::MIN)])
        );
    }
}
