//! `filter-json-field`: keeps records whose JSON value has a field, or has
//! it equal to a given value.
//!
//! Configuration:
//!
//! | key | meaning |
//! |---|---|
//! | `field` (required) | a top-level field name, or a JSON Pointer if it starts with `/` (`/user/address/country`, `/tags/0`) |
//! | `equals` (optional) | keep only records whose field equals this text; without it, keep records that have the field (even when it is `null`) |
//!
//! The comparison is on text: a string field compares its contents
//! (`"DE"` equals `DE`), any other field its compact JSON (`42`, `true`,
//! `null`, `{"a":1}`). Records whose value is null or not JSON are dropped.

use runnel_plugin::{export_filter, json, Config, Record};

struct Settings {
    field: String,
    equals: Option<String>,
}

impl Settings {
    fn from_config(config: &Config) -> Result<Settings, String> {
        let field = config.require("field")?;
        if field.is_empty() {
            return Err("configuration `field` must not be empty".into());
        }
        Ok(Settings {
            field: field.to_string(),
            equals: config.get("equals").map(str::to_string),
        })
    }
}

fn matches(settings: &Settings, record: &Record) -> bool {
    let Some(doc) = record.value().and_then(|v| json::parse(v).ok()) else {
        return false;
    };
    match (json::field(&doc, &settings.field), &settings.equals) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(found), Some(expected)) => json::text(found) == expected.as_str(),
    }
}

export_filter!(matches, settings = Settings::from_config);

#[cfg(test)]
mod tests {
    use runnel_plugin::{testing, OwnedRecord};

    use super::*;

    fn kept(config: &[(&str, &str)], values: &[&str]) -> Vec<u32> {
        let settings = Settings::from_config(&Config::from_pairs(config.iter().copied())).unwrap();
        let records: Vec<OwnedRecord> = values
            .iter()
            .map(|v| OwnedRecord::new().with_value(*v))
            .collect();
        testing::run_filter(&records, |r: &Record| matches(&settings, r))
    }

    #[test]
    fn a_field_is_required() {
        assert!(Settings::from_config(&Config::default()).is_err());
        assert!(Settings::from_config(&Config::from_pairs([("field", "")])).is_err());
    }

    #[test]
    fn existence_and_equality_by_name_and_pointer() {
        let values = [
            r#"{"a": "x"}"#,
            r#"{"a": null}"#,
            r#"{"b": 1}"#,
            "not json",
            r#"{"a": 7}"#,
        ];
        assert_eq!(kept(&[("field", "a")], &values), vec![0, 1, 4]);
        assert_eq!(kept(&[("field", "a"), ("equals", "x")], &values), vec![0]);
        assert_eq!(kept(&[("field", "a"), ("equals", "7")], &values), vec![4]);
        assert_eq!(
            kept(&[("field", "a"), ("equals", "null")], &values),
            vec![1]
        );
        assert_eq!(
            kept(
                &[("field", "/u/c"), ("equals", "DE")],
                &[
                    r#"{"u": {"c": "DE"}}"#,
                    r#"{"u": {"c": "FR"}}"#,
                    r#"{"u": 1}"#
                ]
            ),
            vec![0]
        );
    }
}
