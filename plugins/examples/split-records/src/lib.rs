//! `split-records`: turns one record into many.
//!
//! - A value that is a JSON array becomes one record per element, each the
//!   element's compact JSON (`[{"a":1},"x",2]` → `{"a":1}`, `"x"`, `2`).
//!   An empty array emits nothing.
//! - Any other value is split on a delimiter; empty pieces are dropped
//!   (`"a\n\nb\n"` → `a`, `b`).
//!
//! Every piece keeps the record's key, timestamp and headers. A null value
//! (a tombstone) passes through as one record, since dropping it would lose
//! the deletion.
//!
//! Configuration: `delimiter` (default a newline). The escapes `\n`, `\r`,
//! `\t` and `\\` in it are decoded, so `--config 'delimiter=\r\n'` works from
//! a shell.

use runnel_plugin::json::{self, Value};
use runnel_plugin::{export_flat_map, Config, OwnedRecord, Record};

struct Settings {
    delimiter: Vec<u8>,
}

impl Settings {
    fn from_config(config: &Config) -> Result<Settings, String> {
        let delimiter = unescape(config.get_or("delimiter", "\n"))?;
        if delimiter.is_empty() {
            return Err("configuration `delimiter` must not be empty".into());
        }
        Ok(Settings {
            delimiter: delimiter.into_bytes(),
        })
    }
}

fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            other => {
                return Err(format!(
                    "configuration `delimiter` = {raw:?}: unknown escape \\{}",
                    other.map(String::from).unwrap_or_default()
                ))
            }
        }
    }
    Ok(out)
}

fn split(settings: &Settings, record: &Record) -> Vec<OwnedRecord> {
    let Some(value) = record.value() else {
        return vec![record.into_owned()];
    };
    if value.trim_ascii_start().first() == Some(&b'[') {
        if let Ok(Value::Array(items)) = json::parse(value) {
            return items
                .iter()
                .map(|item| record.with_value(json::to_bytes(item)))
                .collect();
        }
    }
    pieces(value, &settings.delimiter)
        .filter(|piece| !piece.is_empty())
        .map(|piece| record.with_value(piece))
        .collect()
}

/// `value` cut at every occurrence of `delimiter` (not empty).
fn pieces<'a>(value: &'a [u8], delimiter: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let current = rest?;
        match current
            .windows(delimiter.len())
            .position(|w| w == delimiter)
        {
            Some(at) => {
                rest = Some(&current[at + delimiter.len()..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

export_flat_map!(split, settings = Settings::from_config);

#[cfg(test)]
mod tests {
    use runnel_plugin::{testing, OwnedRecord};

    use super::*;

    fn run(config: &[(&str, &str)], value: Option<&str>) -> Vec<(u32, Option<String>)> {
        let settings = Settings::from_config(&Config::from_pairs(config.iter().copied())).unwrap();
        let mut input = OwnedRecord::new().with_key("k");
        input.value = value.map(|v| v.as_bytes().to_vec());
        testing::run_flat_map(&[input], |r: &Record| split(&settings, r))
            .into_iter()
            .map(|(i, r)| {
                assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
                (i, r.value.map(|v| String::from_utf8(v).unwrap()))
            })
            .collect()
    }

    fn values(out: Vec<(u32, Option<String>)>) -> Vec<String> {
        out.into_iter().map(|(_, v)| v.unwrap()).collect()
    }

    #[test]
    fn a_json_array_becomes_one_record_per_element() {
        assert_eq!(
            values(run(&[], Some(r#" [{"a": 1}, "x", 2, []]"#))),
            vec![r#"{"a":1}"#, r#""x""#, "2", "[]"]
        );
        assert!(run(&[], Some("[]")).is_empty());
    }

    #[test]
    fn text_splits_on_the_delimiter_and_drops_empty_pieces() {
        assert_eq!(values(run(&[], Some("a\n\nb\n"))), vec!["a", "b"]);
        assert_eq!(
            values(run(&[("delimiter", "||")], Some("||a||b|c||"))),
            vec!["a", "b|c"]
        );
        assert_eq!(
            values(run(&[("delimiter", "\\r\\n")], Some("a\r\nb"))),
            vec!["a", "b"]
        );
        assert_eq!(values(run(&[], Some("[not json"))), vec!["[not json"]);
        assert!(run(&[], Some("")).is_empty());
    }

    #[test]
    fn a_tombstone_passes_through() {
        assert_eq!(run(&[], None), vec![(0, None)]);
    }

    #[test]
    fn bad_delimiters_are_refused() {
        assert!(Settings::from_config(&Config::from_pairs([("delimiter", "")])).is_err());
        assert!(Settings::from_config(&Config::from_pairs([("delimiter", "\\x")])).is_err());
    }
}
