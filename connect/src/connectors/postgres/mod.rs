//! PostgreSQL sink and source: the config keys and class names of
//! Confluent's JDBC connectors (`io.confluent.connect.jdbc.*`), for
//! PostgreSQL only, over `tokio-postgres` (there is no JDBC here).
//!
//! - [`sink::PostgresSink`] (`postgres-sink`) writes each record as a row:
//!   insert or upsert (`INSERT ... ON CONFLICT (key) DO UPDATE`), one
//!   transaction per batch, acknowledged only after `COMMIT`, so the worker
//!   commits consumer offsets only for rows that are durable, and
//!   redelivered records (at-least-once) overwrite their rows instead of
//!   adding rows.
//! - [`source::PostgresSource`] (`postgres-source`) polls tables (or a
//!   query) for rows after its stored offset: an incrementing column, a
//!   timestamp column, or both.
//!
//! This module holds what both share: reading `connection.url`,
//! connecting, and telling a transient failure (retried by the worker)
//! from one that retrying cannot fix. [`sql`] builds every statement.
//!
//! Not supported: TLS (`sslmode=require`; `prefer`, the default, connects
//! without it), other databases, Kafka Connect schemas (values are JSON).

use std::time::Duration;

use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::plugin::{ConfigKey, ConfigType, ConnectError, ConnectResult, Props};

pub mod sink;
pub mod source;
pub mod sql;

pub use sink::PostgresSink;
pub use source::PostgresSource;

/// How long connecting may take unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection keys both connectors take.
pub(crate) const URL_KEY: ConfigKey = ConfigKey::required(
    "connection.url",
    ConfigType::String,
    "The database: postgres://user:password@host:port/db, postgresql://..., or jdbc:postgresql://host:port/db.",
);
pub(crate) const USER_KEY: ConfigKey = ConfigKey::optional(
    "connection.user",
    ConfigType::String,
    None,
    "The user (overrides one in the URL).",
);
pub(crate) const PASSWORD_KEY: ConfigKey = ConfigKey::optional(
    "connection.password",
    ConfigType::Password,
    None,
    "The password (overrides one in the URL).",
);

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `jdbc:postgresql://host:port/db?user=u&currentSchema=s` as the URL
/// `tokio-postgres` reads. JDBC's own parameters are translated
/// (`currentSchema`, `ApplicationName`, `connectTimeout`, `ssl`); libpq's
/// pass through.
fn from_jdbc(rest: &str) -> Result<String, String> {
    let (base, query) = match rest.split_once('?') {
        Some((b, q)) => (b, q),
        None => (rest, ""),
    };
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let translated = match k {
            "user" | "password" | "sslmode" | "application_name" | "connect_timeout"
            | "options" | "target_session_attrs" | "keepalives" | "keepalives_idle" => {
                (k.to_string(), v.to_string())
            }
            "currentSchema" => (
                "options".to_string(),
                percent_encode(&format!("-c search_path={v}")),
            ),
            "ApplicationName" => ("application_name".to_string(), v.to_string()),
            "connectTimeout" | "loginTimeout" => ("connect_timeout".to_string(), v.to_string()),
            "ssl" => (
                "sslmode".to_string(),
                if v == "true" { "require" } else { "disable" }.to_string(),
            ),
            other => {
                return Err(format!(
                    "the JDBC parameter '{other}' is not supported (supported: user, password, sslmode, ssl, currentSchema, ApplicationName, connectTimeout)"
                ))
            }
        };
        params.push(format!("{}={}", translated.0, translated.1));
    }
    let mut url = format!("postgresql://{base}");
    if !params.is_empty() {
        url.push('?');
        url.push_str(&params.join("&"));
    }
    Ok(url)
}

/// The URL with its password replaced, for messages.
pub(crate) fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                let start = scheme_end + 3 + colon + 1;
                out.replace_range(start..scheme_end + 3 + at, "****");
            }
        }
    }
    if let Some(p) = out.find("password=") {
        let start = p + "password=".len();
        let end = out[start..].find('&').map_or(out.len(), |e| start + e);
        out.replace_range(start..end, "****");
    }
    out
}

/// Reads `connection.url` (three forms) into a client config.
pub fn parse_url(url: &str) -> Result<Config, String> {
    let url = url.trim();
    let lower = url.to_ascii_lowercase();
    let text = if let Some(rest) = lower
        .strip_prefix("jdbc:postgresql://")
        .map(|_| &url["jdbc:postgresql://".len()..])
    {
        from_jdbc(rest)?
    } else if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        url.to_string()
    } else {
        return Err(format!(
            "'{}' is not a PostgreSQL URL (postgres://user:password@host:port/db, postgresql://..., or jdbc:postgresql://host:port/db)",
            redact(url)
        ));
    };
    let config: Config = text
        .parse()
        .map_err(|e| format!("'{}' cannot be read: {e}", redact(url)))?;
    if config.get_hosts().is_empty() {
        return Err(format!("'{}' names no host", redact(url)));
    }
    Ok(config)
}

/// The client config from `connection.url`, `connection.user` and
/// `connection.password`, or (key, problem).
pub fn connection_config(props: &Props) -> Result<Config, (String, String)> {
    let url = props
        .get("connection.url")
        .map(String::as_str)
        .unwrap_or("");
    let mut config = parse_url(url).map_err(|e| ("connection.url".to_string(), e))?;
    if let Some(user) = props.get("connection.user").filter(|u| !u.is_empty()) {
        config.user(user);
    }
    if let Some(password) = props.get("connection.password").filter(|p| !p.is_empty()) {
        config.password(password);
    }
    if config.get_user().is_none() {
        return Err((
            "connection.user".into(),
            "no user: set connection.user or give one in connection.url".into(),
        ));
    }
    if config.get_ssl_mode() == SslMode::Require {
        return Err((
            "connection.url".into(),
            "sslmode=require needs TLS, which this connector does not support (use sslmode=disable or prefer)".into(),
        ));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(config)
}

/// Reads a connector's own settings: the settings, or every (key, problem).
pub(crate) type ReadSettings<T> = fn(&Props) -> Result<T, Vec<(String, String)>>;

/// The (key, problem) pairs of a config: its connection keys' and its
/// settings'.
pub(crate) fn validate<T>(props: &Props, settings: ReadSettings<T>) -> Vec<(String, String)> {
    let mut out = match connection_config(props) {
        Ok(_) => Vec::new(),
        // A missing URL is already reported as a missing required key.
        Err(_) if !props.contains_key("connection.url") => Vec::new(),
        Err(problem) => vec![problem],
    };
    if let Err(problems) = settings(props) {
        out.extend(problems);
    }
    out
}

/// A task's settings and client config; problems fail the task at once.
pub(crate) fn task_settings<T>(
    props: &Props,
    settings: ReadSettings<T>,
) -> ConnectResult<(T, Config)> {
    let settings = settings(props).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
        ConnectError::fatal(lines.join("; "))
    })?;
    let connection =
        connection_config(props).map_err(|(k, m)| ConnectError::fatal(format!("{k}: {m}")))?;
    Ok((settings, connection))
}

/// Connects; the connection runs on its own task until the client drops.
pub(crate) async fn connect(config: &Config, who: &str) -> ConnectResult<Client> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        let (retriable, message) = describe(&e);
        let message = format!("{who}: connecting to PostgreSQL: {message}");
        // Wrong password or database: retrying will not help.
        if retriable {
            ConnectError::retriable(message)
        } else {
            ConnectError::fatal(message)
        }
    })?;
    let who = who.to_string();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(connector = %who, error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Whether a failure may go away by itself (the connection, the server's
/// resources, a conflict with another transaction), and what to say.
pub(crate) fn describe(e: &tokio_postgres::Error) -> (bool, String) {
    let Some(db) = e.as_db_error() else {
        let causes = std::iter::successors(std::error::Error::source(e), |s| s.source());
        let mut message = e.to_string();
        let mut io = false;
        for cause in causes {
            io |= cause.is::<std::io::Error>();
            message.push_str(&format!(": {cause}"));
        }
        // No answer from the server (I/O, a closed connection, a timeout)
        // may come next time; a value that does not convert will not.
        let retriable = io || e.is_closed() || message.starts_with("timeout");
        return (retriable, message);
    };
    let code = db.code().code();
    let retriable = matches!(&code[..2], "08" | "40" | "53" | "57" | "58")
        || *db.code() == SqlState::LOCK_NOT_AVAILABLE;
    let mut message = format!("{}: {} (SQLSTATE {code})", db.severity(), db.message());
    if let Some(d) = db.detail() {
        message.push_str(&format!("; {d}"));
    }
    if let Some(h) = db.hint() {
        message.push_str(&format!("; hint: {h}"));
    }
    (retriable, message)
}

/// A driver error as a connector error.
pub(crate) fn to_connect_error(context: &str, e: &tokio_postgres::Error) -> ConnectError {
    let (retriable, message) = describe(e);
    let message = format!("{context}: {message}");
    if retriable {
        ConnectError::retriable(message)
    } else {
        ConnectError::fatal(message)
    }
}

/// A whole-number config value, or its default.
pub(crate) fn number(props: &Props, key: &str, default: i64) -> i64 {
    props
        .get(key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A boolean config value, or false.
pub(crate) fn flag(props: &Props, key: &str) -> bool {
    props
        .get(key)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The items of a list value (`a, b,c`), trimmed, without empty ones.
pub(crate) fn list(props: &Props, key: &str) -> Vec<String> {
    props
        .get(key)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Checks that a number key is within `range`: (key, problem).
pub(crate) fn check_range(
    props: &Props,
    key: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Option<(String, String)> {
    let v = props.get(key)?.trim().parse::<i64>().ok()?;
    (!range.contains(&v)).then(|| {
        (
            key.to_string(),
            format!("{v} is not between {} and {}", range.start(), range.end()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn props(pairs: &[(&str, &str)]) -> Props {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_url_form_is_read() {
        let c = parse_url("postgres://ann:secret@db.local:6543/shop").unwrap();
        assert_eq!(c.get_user(), Some("ann"));
        assert_eq!(c.get_password(), Some(&b"secret"[..]));
        assert_eq!(c.get_ports(), &[6543]);
        assert_eq!(c.get_dbname(), Some("shop"));
        let c = parse_url("postgresql://127.0.0.1/shop?application_name=x").unwrap();
        assert_eq!(c.get_application_name(), Some("x"));
        let c = parse_url(
            "jdbc:postgresql://127.0.0.1:5433/shop?user=bob&password=pw&currentSchema=sales&ssl=false",
        )
        .unwrap();
        assert_eq!(
            (c.get_user(), c.get_ports(), c.get_dbname()),
            (Some("bob"), &[5433][..], Some("shop"))
        );
        assert_eq!(c.get_options(), Some("-c search_path=sales"));
        assert_eq!(c.get_ssl_mode(), SslMode::Disable);
        let err = parse_url("mysql://x/y").unwrap_err();
        assert!(err.contains("is not a PostgreSQL URL"), "{err}");
        let err = parse_url("jdbc:postgresql://h/db?socketFactory=x").unwrap_err();
        assert!(err.contains("'socketFactory' is not supported"), "{err}");
        let err = parse_url("postgres://u:hunter2@h/db?nonsense=1").unwrap_err();
        assert!(!err.contains("hunter2") && err.contains("****"), "{err}");
        assert!(parse_url("postgres:///db").unwrap_err().contains("no host"));
    }

    #[test]
    fn passwords_never_appear_in_messages() {
        assert_eq!(
            redact("postgres://ann:se:cret@h:1/db"),
            "postgres://ann:****@h:1/db"
        );
        assert_eq!(
            redact("jdbc:postgresql://h/db?user=a&password=pw&x=1"),
            "jdbc:postgresql://h/db?user=a&password=****&x=1"
        );
        assert_eq!(redact("postgres://ann@h/db"), "postgres://ann@h/db");
    }

    #[test]
    fn user_and_password_keys_override_the_url() {
        let c = connection_config(&props(&[
            ("connection.url", "postgres://ann:a@h/db"),
            ("connection.user", "bob"),
            ("connection.password", "b"),
        ]))
        .unwrap();
        assert_eq!(
            (c.get_user(), c.get_password()),
            (Some("bob"), Some(&b"b"[..]))
        );
        assert_eq!(c.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        let (key, problem) =
            connection_config(&props(&[("connection.url", "postgres://h/db")])).unwrap_err();
        assert_eq!(key, "connection.user", "{problem}");
        let (key, problem) = connection_config(&props(&[(
            "connection.url",
            "postgres://u@h/db?sslmode=require",
        )]))
        .unwrap_err();
        assert_eq!(key, "connection.url");
        assert!(problem.contains("TLS"), "{problem}");
    }
}
