//! `enrich-json`: reshapes JSON object values: drops, renames and adds
//! top-level fields, and can add the record's timestamp.
//!
//! Configuration (all optional; applied in this order):
//!
//! | key | meaning |
//! |---|---|
//! | `drop=a,b` | remove these fields |
//! | `rename.<old>=<new>` | rename field `old` to `new`: in place, replacing a field already named `new`; all renames apply at once |
//! | `add.<name>=<value>` | set field `name` to the string `value` (replaces an existing one) |
//! | `timestamp_field=<name>` | set field `name` to the record's timestamp, skipped for records without one |
//! | `timestamp_format=millis\|rfc3339` | the timestamp as a number of ms since the epoch (default) or an RFC 3339 UTC string (`2024-01-02T03:04:05.678Z`) |
//!
//! New fields go at the end of the object, in key order. A value that is
//! null, not JSON, or JSON but not an object passes through unchanged
//! (logged at debug level).

use runnel_plugin::json::{self, Map, Value};
use runnel_plugin::{debug, export_map, Config, OwnedRecord, Record, NO_TIMESTAMP};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimestampFormat {
    Millis,
    Rfc3339,
}

struct Settings {
    drop: Vec<String>,
    rename: Vec<(String, String)>,
    add: Vec<(String, String)>,
    timestamp_field: Option<(String, TimestampFormat)>,
}

impl Settings {
    fn from_config(config: &Config) -> Result<Settings, String> {
        let format = match config.get_or("timestamp_format", "millis") {
            "millis" => TimestampFormat::Millis,
            "rfc3339" => TimestampFormat::Rfc3339,
            other => {
                return Err(format!(
                    "configuration `timestamp_format` = {other:?}: expected millis or rfc3339"
                ))
            }
        };
        let pairs = |prefix: &str| -> Result<Vec<(String, String)>, String> {
            config
                .with_prefix(prefix)
                .map(|(k, v)| {
                    if k.is_empty() {
                        Err(format!(
                            "configuration `{prefix}` needs a field name after the dot"
                        ))
                    } else {
                        Ok((k.to_string(), v.to_string()))
                    }
                })
                .collect()
        };
        let rename = pairs("rename.")?;
        if let Some((old, _)) = rename.iter().find(|(_, new)| new.is_empty()) {
            return Err(format!("configuration `rename.{old}` needs a new name"));
        }
        let timestamp_field = match config.get("timestamp_field") {
            Some("") => return Err("configuration `timestamp_field` must not be empty".into()),
            Some(name) => Some((name.to_string(), format)),
            None => None,
        };
        Ok(Settings {
            drop: config
                .list("drop")
                .into_iter()
                .map(str::to_string)
                .collect(),
            rename,
            add: pairs("add.")?,
            timestamp_field,
        })
    }
}

fn enrich(settings: &Settings, record: &Record) -> OwnedRecord {
    let parsed = record.value().map(json::parse);
    let mut doc = match parsed {
        Some(Ok(Value::Object(doc))) => doc,
        Some(Ok(_)) => {
            debug!(
                "offset {}: value is not a JSON object, passed through",
                record.offset()
            );
            return record.into_owned();
        }
        Some(Err(e)) => {
            debug!(
                "offset {}: value is not JSON ({e}), passed through",
                record.offset()
            );
            return record.into_owned();
        }
        None => return record.into_owned(),
    };
    for name in &settings.drop {
        doc.shift_remove(name);
    }
    if !settings.rename.is_empty() {
        doc = rename(doc, &settings.rename);
    }
    for (name, value) in &settings.add {
        doc.insert(name.clone(), Value::String(value.clone()));
    }
    if let Some((name, format)) = &settings.timestamp_field {
        if record.timestamp() != NO_TIMESTAMP {
            let value = match format {
                TimestampFormat::Millis => Value::from(record.timestamp()),
                TimestampFormat::Rfc3339 => Value::String(rfc3339(record.timestamp())),
            };
            doc.insert(name.clone(), value);
        }
    }
    record.with_value(json::to_bytes(&Value::Object(doc)))
}

/// `doc` with fields renamed, all at once (`a→b, b→c` swaps names rather
/// than chaining). A renamed field keeps its position and replaces a field
/// that already had its new name.
fn rename(doc: Map<String, Value>, renames: &[(String, String)]) -> Map<String, Value> {
    let new_name = |key: &str| {
        renames
            .iter()
            .find(|(old, _)| old == key)
            .map(|(_, new)| new)
    };
    let replaced: Vec<&String> = renames
        .iter()
        .filter(|(old, _)| doc.contains_key(old))
        .map(|(_, new)| new)
        .collect();
    let mut renamed = Map::with_capacity(doc.len());
    for (key, value) in doc {
        match new_name(&key) {
            Some(new) => {
                renamed.insert(new.clone(), value);
            }
            None if replaced.contains(&&key) => {}
            None => {
                renamed.insert(key, value);
            }
        }
    }
    renamed
}

/// `ms` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (proleptic Gregorian,
/// UTC).
fn rfc3339(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let ms_of_day = ms.rem_euclid(86_400_000);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000
    )
}

export_map!(enrich, settings = Settings::from_config);

#[cfg(test)]
mod tests {
    use runnel_plugin::{testing, OwnedRecord};

    use super::*;

    fn run(config: &[(&str, &str)], value: &str, timestamp: i64) -> String {
        let settings = Settings::from_config(&Config::from_pairs(config.iter().copied())).unwrap();
        let input = OwnedRecord::new()
            .with_value(value)
            .with_timestamp(timestamp);
        let out = testing::run_map(&[input], |r: &Record| enrich(&settings, r));
        String::from_utf8(out[0].value.clone().unwrap()).unwrap()
    }

    #[test]
    fn drop_rename_add_and_timestamp_apply_in_order() {
        let config = [
            ("drop", "secret, tmp"),
            ("rename.usr", "user"),
            ("rename.secret", "never"),
            ("add.env", "prod"),
            ("add.user", "overridden"),
            ("timestamp_field", "ts"),
        ];
        assert_eq!(
            run(
                &config,
                r#"{"id":1,"usr":"bob","secret":"x","tmp":2,"z":null}"#,
                1_700_000_000_123
            ),
            r#"{"id":1,"user":"overridden","z":null,"env":"prod","ts":1700000000123}"#
        );
    }

    #[test]
    fn rename_keeps_the_position_and_replaces_the_target() {
        assert_eq!(
            run(&[("rename.a", "c")], r#"{"c":0,"a":1,"b":2}"#, -1),
            r#"{"c":1,"b":2}"#
        );
        assert_eq!(
            run(&[("rename.a", "b")], r#"{"a":1,"c":2}"#, -1),
            r#"{"b":1,"c":2}"#
        );
        assert_eq!(
            run(
                &[("rename.a", "b"), ("rename.b", "a")],
                r#"{"a":1,"b":2}"#,
                -1
            ),
            r#"{"b":1,"a":2}"#
        );
    }

    #[test]
    fn timestamps_format_as_rfc3339_and_absent_ones_are_skipped() {
        let config = [("timestamp_field", "at"), ("timestamp_format", "rfc3339")];
        assert_eq!(
            run(&config, "{}", 1_700_000_000_123),
            r#"{"at":"2023-11-14T22:13:20.123Z"}"#
        );
        assert_eq!(run(&config, "{}", NO_TIMESTAMP), "{}");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(-1_000), "1969-12-31T23:59:59.000Z");
    }

    #[test]
    fn non_objects_pass_through() {
        assert_eq!(run(&[("add.a", "b")], "[1,2]", -1), "[1,2]");
        assert_eq!(run(&[("add.a", "b")], "text", -1), "text");
    }

    #[test]
    fn bad_configuration_is_refused() {
        for config in [
            vec![("timestamp_format", "iso")],
            vec![("rename.a", "")],
            vec![("add.", "x")],
            vec![("timestamp_field", "")],
        ] {
            assert!(
                Settings::from_config(&Config::from_pairs(config.clone())).is_err(),
                "{config:?}"
            );
        }
    }
}
