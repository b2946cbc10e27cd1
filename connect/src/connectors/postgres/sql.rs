//! The SQL the PostgreSQL connectors send, as text built from quoted
//! identifiers, and the one way a JSON value becomes a bind parameter.
//!
//! Pure: no connection, no I/O, tested alone. Names (tables, columns) are
//! always double-quoted with embedded quotes doubled, so a field called
//! `x"; DROP TABLE t; --` is a column of that name and nothing else;
//! values are never part of the text, only `$n` parameters.

use std::error::Error;

use bytes::BytesMut;
use serde_json::Value;
use tokio_postgres::types::{to_sql_checked, Format, IsNull, Kind, ToSql, Type};

/// Longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`). A longer one
/// would be cut silently, and two long names could become the same column.
pub const MAX_IDENT_BYTES: usize = 63;

/// Most columns a table has in PostgreSQL (and so a row here).
pub const MAX_COLUMNS: usize = 1600;

/// Checks that PostgreSQL can name something `name` exactly.
pub fn check_ident(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an empty name".into());
    }
    if name.len() > MAX_IDENT_BYTES {
        return Err(format!(
            "'{name}' is longer than {MAX_IDENT_BYTES} bytes (PostgreSQL would cut it)"
        ));
    }
    if name.contains('\0') {
        return Err(format!(
            "'{}' contains a NUL character",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// `"name"`, with embedded double quotes doubled: always one identifier,
/// whatever `name` holds. Callers check names with [`check_ident`] first.
pub fn quote(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for ch in name.chars() {
        if ch == '"' {
            out.push('"');
        }
        out.push(ch);
    }
    out.push('"');
    out
}

/// A table, optionally in a schema.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    fn new(schema: Option<&str>, name: &str) -> Result<TableName, String> {
        if let Some(s) = schema {
            check_ident(s).map_err(|e| format!("schema: {e}"))?;
        }
        check_ident(name)?;
        Ok(TableName {
            schema: schema.map(str::to_string),
            name: name.to_string(),
        })
    }

    /// `table` or `schema.table` (as `table.whitelist` lists them).
    pub fn parse(text: &str) -> Result<TableName, String> {
        let parts: Vec<&str> = text.trim().split('.').collect();
        match parts.as_slice() {
            [name] => TableName::new(None, name),
            [schema, name] => TableName::new(Some(schema), name),
            _ => Err(format!(
                "'{text}' has more than one dot (schema.table at most)"
            )),
        }
    }

    /// The table `table.name.format` names for `topic`. A dot in the
    /// format separates the schema; dots in the topic stay in the name
    /// (`public.${topic}` with topic `orders.v1` is table `orders.v1` in
    /// schema `public`).
    pub fn for_topic(format: &str, topic: &str) -> Result<TableName, String> {
        let parts: Vec<String> = format
            .split('.')
            .map(|p| p.replace("${topic}", topic))
            .collect();
        match parts.as_slice() {
            [name] => TableName::new(None, name),
            [schema, name] => TableName::new(Some(schema), name),
            _ => Err(format!(
                "'{format}' has more than one dot (schema.table at most)"
            )),
        }
    }

    /// The quoted name for SQL text.
    pub fn sql(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", quote(s), quote(&self.name)),
            None => quote(&self.name),
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

fn columns_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(", ")
}

fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `INSERT` of one row; with `conflict` (the key columns), an upsert that
/// updates the other columns of the row with that key.
pub fn insert(table: &TableName, columns: &[String], conflict: Option<&[String]>) -> String {
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        table.sql(),
        columns_list(columns),
        placeholders(1, columns.len())
    );
    if let Some(key) = conflict {
        let set: Vec<String> = columns
            .iter()
            .filter(|c| !key.contains(c))
            .map(|c| format!("{0} = EXCLUDED.{0}", quote(c)))
            .collect();
        sql.push_str(&format!(" ON CONFLICT ({}) DO ", columns_list(key)));
        if set.is_empty() {
            sql.push_str("NOTHING");
        } else {
            sql.push_str("UPDATE SET ");
            sql.push_str(&set.join(", "));
        }
    }
    sql
}

/// `DELETE` of the row with a key.
pub fn delete(table: &TableName, key: &[String]) -> String {
    let conditions: Vec<String> = key
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = ${}", quote(c), i + 1))
        .collect();
    format!(
        "DELETE FROM {} WHERE {}",
        table.sql(),
        conditions.join(" AND ")
    )
}

/// The column type `auto.create` and `auto.evolve` give a JSON value.
pub fn column_type(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "BOOLEAN",
        Value::Number(n) if n.is_i64() => "BIGINT",
        // Above i64::MAX: exact in NUMERIC.
        Value::Number(n) if n.is_u64() => "NUMERIC",
        Value::Number(_) => "DOUBLE PRECISION",
        Value::Array(_) | Value::Object(_) => "JSONB",
        // A null says nothing of the type; TEXT takes any later value.
        Value::Null | Value::String(_) => "TEXT",
    }
}

/// `CREATE TABLE IF NOT EXISTS`, key columns `NOT NULL` and the primary key.
pub fn create_table(
    table: &TableName,
    columns: &[(String, &'static str)],
    key: &[String],
) -> String {
    let mut defs: Vec<String> = columns
        .iter()
        .map(|(c, ty)| {
            if key.contains(c) {
                format!("{} {ty} NOT NULL", quote(c))
            } else {
                format!("{} {ty}", quote(c))
            }
        })
        .collect();
    if !key.is_empty() {
        defs.push(format!("PRIMARY KEY ({})", columns_list(key)));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        table.sql(),
        defs.join(", ")
    )
}

pub fn add_column(table: &TableName, column: &str, ty: &str) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {ty}",
        table.sql(),
        quote(column)
    )
}

/// The column names of a table, or no row when there is no such table (the
/// parameter is [`TableName::sql`]; `to_regclass` follows `search_path` as
/// the statements do).
pub const TABLE_COLUMNS: &str = "SELECT array(SELECT a.attname::text FROM pg_attribute a \
     WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) \
     FROM (SELECT to_regclass($1)::oid AS oid) t WHERE t.oid IS NOT NULL";

/// A JSON value as a bind parameter, sent in PostgreSQL's text format so
/// the server reads it as whatever type the column has: `42` fits a
/// BIGINT, a NUMERIC or a TEXT column, `"2024-05-01T10:00:00Z"` a
/// TIMESTAMPTZ, an object a JSONB. Exceptions, because the server's text
/// input would not take the JSON form: a number bound to a TIMESTAMP,
/// TIMESTAMPTZ or DATE is epoch milliseconds (UTC), and an array bound to
/// an array column becomes an array literal (`{1,2}`). JSON null is SQL
/// NULL. A value the column's type cannot read fails the row on the server
/// (SQLSTATE class 22).
#[derive(Debug)]
pub struct JsonParam<'a>(pub &'a Value);

impl ToSql for JsonParam<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        if self.0.is_null() {
            return Ok(IsNull::Yes);
        }
        out.extend_from_slice(text(self.0, ty).as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// The text form of a (non-null) JSON value for a column of type `ty`.
pub fn text(v: &Value, ty: &Type) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_i64() {
            Some(ms) if *ty == Type::TIMESTAMPTZ => format!("{}+00", epoch_ms(ms, true)),
            Some(ms) if *ty == Type::TIMESTAMP => epoch_ms(ms, true),
            Some(ms) if *ty == Type::DATE => epoch_ms(ms, false),
            _ => n.to_string(),
        },
        Value::Array(items) => match ty.kind() {
            Kind::Array(member) => array_literal(items, member),
            _ => v.to_string(),
        },
        Value::Object(_) => v.to_string(),
    }
}

/// `{"a","b",NULL,{...}}`: every element quoted, nested arrays as nested
/// braces.
fn array_literal(items: &[Value], member: &Type) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|item| match item {
            Value::Null => "NULL".to_string(),
            Value::Array(inner) => array_literal(inner, member),
            other => {
                let t = text(other, member);
                format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\""))
            }
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// Epoch milliseconds as `YYYY-MM-DD[ HH:MM:SS.mmm]` in UTC (years before
/// 1 as PostgreSQL writes them, with `BC`).
fn epoch_ms(ms: i64, with_time: bool) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (year, era) = if y <= 0 { (1 - y, " BC") } else { (y, "") };
    if with_time {
        format!(
            "{year:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{milli:03}{era}",
            sod / 3600,
            sod % 3600 / 60,
            sod % 60
        )
    } else {
        format!("{year:04}-{m:02}-{d:02}{era}")
    }
}

/// Days since 1970-01-01 → proleptic Gregorian (year, month, day)
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// How a source reads what it has not read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Incrementing,
    Timestamp,
    TimestampIncrementing,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s.trim() {
            "incrementing" => Some(Mode::Incrementing),
            "timestamp" => Some(Mode::Timestamp),
            "timestamp+incrementing" => Some(Mode::TimestampIncrementing),
            _ => None,
        }
    }

    pub fn incrementing(self) -> bool {
        self != Mode::Timestamp
    }

    pub fn timestamp(self) -> bool {
        self != Mode::Incrementing
    }
}

/// The queries of one source table (or `query`), from its columns.
///
/// A poll reads, in the tracking columns' order, at most `$1` rows after
/// the offset, each as one JSON object made by the server (`row_to_json`):
/// NUMERIC columns are cast to text first so they arrive as exact strings.
/// Rows whose tracking columns are NULL are never read.
#[derive(Debug, Clone)]
pub struct SourceQuery {
    /// `"schema"."table"`, or `(query)`.
    pub relation: String,
    /// Column names, and whether each is NUMERIC.
    pub columns: Vec<(String, bool)>,
    pub mode: Mode,
    pub incrementing: Option<String>,
    pub timestamp: Option<String>,
    /// Only rows whose timestamp is this much older than the server's
    /// clock are read (0: no delay).
    pub delay_ms: i64,
}

/// What a source poll's rows are read after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Nothing read yet: from the start.
    Start,
    /// `$2` is the last offset (one tracking column, or the timestamp).
    One,
    /// `$2` the timestamp, `$3` the incrementing value.
    Both,
    /// Every row with exactly the timestamp `$2` (timestamp mode, when a
    /// full batch shared one timestamp).
    Equal,
}

impl SourceQuery {
    /// The statement that learns a relation's columns.
    pub fn describe(relation: &str) -> String {
        format!("SELECT * FROM {relation} AS q LIMIT 0")
    }

    fn order(&self, alias: &str) -> String {
        let mut cols = Vec::new();
        if let Some(ts) = &self.timestamp {
            cols.push(format!("{alias}.{}", quote(ts)));
        }
        if let Some(inc) = &self.incrementing {
            cols.push(format!("{alias}.{}", quote(inc)));
        }
        cols.join(", ")
    }

    /// The poll statement. Parameters: `$1` the row limit, then the offset
    /// (see [`After`]), then the delay in milliseconds if there is one.
    pub fn poll(&self, after: After) -> String {
        let select: Vec<String> = self
            .columns
            .iter()
            .map(|(c, numeric)| {
                if *numeric {
                    format!("q.{0}::text AS {0}", quote(c))
                } else {
                    format!("q.{}", quote(c))
                }
            })
            .collect();
        let mut conditions: Vec<String> = [&self.timestamp, &self.incrementing]
            .into_iter()
            .flatten()
            .map(|c| format!("q.{} IS NOT NULL", quote(c)))
            .collect();
        let ts = self.timestamp.as_deref().map(|c| format!("q.{}", quote(c)));
        let inc = self
            .incrementing
            .as_deref()
            .map(|c| format!("q.{}", quote(c)));
        let mut next = 2;
        match (after, &ts, &inc) {
            (After::Start, _, _) => {}
            (After::Equal, Some(ts), _) => {
                conditions.push(format!("{ts} = $2"));
                next = 3;
            }
            (After::Both, Some(ts), Some(inc)) => {
                conditions.push(format!("({ts} > $2 OR ({ts} = $2 AND {inc} > $3))"));
                next = 4;
            }
            (_, Some(ts), _) => {
                conditions.push(format!("{ts} > $2"));
                next = 3;
            }
            (_, None, Some(inc)) => {
                conditions.push(format!("{inc} > $2"));
                next = 3;
            }
            (_, None, None) => {}
        }
        if let (Some(ts), true) = (&ts, self.delay_ms > 0) {
            conditions.push(format!(
                "{ts} < CURRENT_TIMESTAMP - ${next}::int8 * interval '1 millisecond'"
            ));
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        format!(
            "SELECT row_to_json(r)::text FROM (SELECT {} FROM {} AS q{filter} ORDER BY {} LIMIT $1) AS r ORDER BY {}",
            select.join(", "),
            self.relation,
            self.order("q"),
            self.order("r"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_always_one_quoted_identifier() {
        assert_eq!(quote("orders"), "\"orders\"");
        assert_eq!(quote("Order Lines"), "\"Order Lines\"");
        assert_eq!(
            quote("x\"; DROP TABLE t; --"),
            "\"x\"\"; DROP TABLE t; --\""
        );
        assert!(check_ident("").is_err());
        assert!(check_ident(&"a".repeat(64)).is_err());
        assert!(check_ident(&"a".repeat(63)).is_ok());
        assert!(check_ident("a\0b").is_err());
    }

    #[test]
    fn table_names_come_from_the_format_and_the_topic() {
        let t = TableName::for_topic("${topic}", "orders.v1").unwrap();
        assert_eq!(
            (t.schema.as_deref(), t.sql()),
            (None, "\"orders.v1\"".into())
        );
        let t = TableName::for_topic("sales.kafka_${topic}", "orders").unwrap();
        assert_eq!(t.sql(), "\"sales\".\"kafka_orders\"");
        assert_eq!(t.to_string(), "sales.kafka_orders");
        assert!(TableName::for_topic("a.b.${topic}", "t").is_err());
        assert!(TableName::for_topic("${topic}", &"t".repeat(70)).is_err());
        assert_eq!(
            TableName::parse(" public.items ").unwrap().sql(),
            "\"public\".\"items\""
        );
        assert!(TableName::parse("public.").is_err());
        assert!(TableName::parse("a.b.c").is_err());
    }

    #[test]
    fn inserts_upserts_and_deletes_bind_every_value() {
        let t = TableName::parse("t").unwrap();
        let cols = vec!["id".to_string(), "na\"me".to_string(), "n".to_string()];
        assert_eq!(
            insert(&t, &cols, None),
            r#"INSERT INTO "t" ("id", "na""me", "n") VALUES ($1, $2, $3)"#
        );
        assert_eq!(
            insert(&t, &cols, Some(&["id".to_string()])),
            r#"INSERT INTO "t" ("id", "na""me", "n") VALUES ($1, $2, $3) ON CONFLICT ("id") DO UPDATE SET "na""me" = EXCLUDED."na""me", "n" = EXCLUDED."n""#
        );
        assert_eq!(
            insert(&t, &cols[..1], Some(&cols[..1])),
            r#"INSERT INTO "t" ("id") VALUES ($1) ON CONFLICT ("id") DO NOTHING"#
        );
        assert_eq!(
            delete(&t, &cols[..2]),
            r#"DELETE FROM "t" WHERE "id" = $1 AND "na""me" = $2"#
        );
    }

    #[test]
    fn auto_create_maps_json_types_to_postgres_types() {
        let v = json!({"i": 1, "big": u64::MAX, "f": 1.5, "b": true, "s": "x", "o": {}, "a": [], "n": null});
        let types: Vec<(&str, &str)> = v
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), column_type(v)))
            .collect();
        assert_eq!(
            types,
            vec![
                ("a", "JSONB"),
                ("b", "BOOLEAN"),
                ("big", "NUMERIC"),
                ("f", "DOUBLE PRECISION"),
                ("i", "BIGINT"),
                ("n", "TEXT"),
                ("o", "JSONB"),
                ("s", "TEXT"),
            ]
        );
        let t = TableName::parse("s.t").unwrap();
        assert_eq!(
            create_table(
                &t,
                &[("id".into(), "BIGINT"), ("v".into(), "TEXT")],
                &["id".into()]
            ),
            r#"CREATE TABLE IF NOT EXISTS "s"."t" ("id" BIGINT NOT NULL, "v" TEXT, PRIMARY KEY ("id"))"#
        );
        assert_eq!(
            add_column(&t, "x y", "JSONB"),
            r#"ALTER TABLE "s"."t" ADD COLUMN IF NOT EXISTS "x y" JSONB"#
        );
    }

    #[test]
    fn values_become_the_text_postgres_reads_for_the_column_type() {
        assert_eq!(text(&json!(42), &Type::INT8), "42");
        assert_eq!(text(&json!(1.5), &Type::NUMERIC), "1.5");
        assert_eq!(text(&json!(true), &Type::BOOL), "true");
        assert_eq!(text(&json!("it's"), &Type::TEXT), "it's");
        assert_eq!(text(&json!({"a": [1]}), &Type::JSONB), r#"{"a":[1]}"#);
        assert_eq!(text(&json!([1, 2]), &Type::JSONB), "[1,2]");
        assert_eq!(
            text(&json!(["a\"b", null, "c\\d"]), &Type::TEXT_ARRAY),
            r#"{"a\"b",NULL,"c\\d"}"#
        );
        assert_eq!(
            text(&json!([[1, 2], [3, 4]]), &Type::INT8_ARRAY),
            r#"{{"1","2"},{"3","4"}}"#
        );
        assert_eq!(
            text(&json!(1_714_557_600_123i64), &Type::TIMESTAMPTZ),
            "2024-05-01 10:00:00.123+00"
        );
        assert_eq!(
            text(&json!(-1), &Type::TIMESTAMP),
            "1969-12-31 23:59:59.999"
        );
        assert_eq!(text(&json!(0), &Type::DATE), "1970-01-01");
        assert_eq!(
            text(&json!(-62_135_596_800_001i64), &Type::DATE),
            "0001-12-31 BC"
        );
        assert_eq!(
            text(&json!(1_714_557_600_123i64), &Type::INT8),
            "1714557600123"
        );
        assert_eq!(text(&json!("2024-05-01"), &Type::DATE), "2024-05-01");
    }

    fn query(mode: Mode, delay_ms: i64) -> SourceQuery {
        SourceQuery {
            relation: TableName::parse("public.items").unwrap().sql(),
            columns: vec![
                ("id".into(), false),
                ("price".into(), true),
                ("ts".into(), false),
            ],
            mode,
            incrementing: mode.incrementing().then(|| "id".to_string()),
            timestamp: mode.timestamp().then(|| "ts".to_string()),
            delay_ms,
        }
    }

    #[test]
    fn source_polls_read_after_the_offset_in_tracking_order() {
        let q = query(Mode::Incrementing, 0);
        assert_eq!(
            q.poll(After::Start),
            r#"SELECT row_to_json(r)::text FROM (SELECT q."id", q."price"::text AS "price", q."ts" FROM "public"."items" AS q WHERE q."id" IS NOT NULL ORDER BY q."id" LIMIT $1) AS r ORDER BY r."id""#
        );
        assert!(q
            .poll(After::One)
            .contains(r#"WHERE q."id" IS NOT NULL AND q."id" > $2 ORDER BY q."id" LIMIT $1"#));
        let q = query(Mode::TimestampIncrementing, 0);
        assert!(q.poll(After::Both).contains(
            r#"WHERE q."ts" IS NOT NULL AND q."id" IS NOT NULL AND (q."ts" > $2 OR (q."ts" = $2 AND q."id" > $3)) ORDER BY q."ts", q."id" LIMIT $1"#
        ), "{}", q.poll(After::Both));
        let q = query(Mode::Timestamp, 5000);
        assert!(q.poll(After::One).contains(
            r#"q."ts" > $2 AND q."ts" < CURRENT_TIMESTAMP - $3::int8 * interval '1 millisecond' ORDER BY q."ts" LIMIT $1"#
        ), "{}", q.poll(After::One));
        assert!(q.poll(After::Start).contains("- $2::int8"));
        assert!(q.poll(After::Equal).contains(r#"q."ts" = $2 AND"#));
        assert_eq!(
            SourceQuery::describe("(SELECT 1)"),
            "SELECT * FROM (SELECT 1) AS q LIMIT 0"
        );
        assert_eq!(Mode::parse("bulk"), None);
    }
}
