//! `redact-pii`: redacts e-mail addresses and payment card numbers in JSON
//! record values.
//!
//! Two modes:
//!
//! - **Scan** (default, no `fields`): every string value anywhere in the
//!   document (nested objects, arrays) is searched, and each e-mail address
//!   and each payment card number in it is replaced by the replacement text,
//!   keeping the text around it: `"mail bob@example.com now"` becomes
//!   `"mail [REDACTED] now"`. A JSON integer of 13–19 digits that passes the
//!   Luhn check is replaced (by the replacement string) too.
//! - **Fields** (`fields=email,card,/user/ssn`): only the listed fields are
//!   redacted, and their whole value is replaced by the replacement string,
//!   whatever its type (string, number, object, array); `null` stays `null`.
//!   A name matches a member of that name at any depth; an entry starting
//!   with `/` is a JSON Pointer to one exact place.
//!
//! Configuration: `fields` as above; `replacement` (default `[REDACTED]`).
//!
//! What counts as PII here:
//!
//! - An **e-mail address** is `local@domain` with a local part of ASCII
//!   letters, digits and `._%+-`, and a domain of at least two labels of
//!   letters, digits and `-` whose last label is at least two letters.
//! - A **card number** is 13 to 19 digits, optionally grouped by single
//!   spaces or dashes (`4111 1111 1111 1111`, `4111-1111-1111-1111`), that
//!   passes the Luhn check; digit groups are matched at group boundaries,
//!   so two card numbers in a row are both found. Any other Luhn-valid
//!   13–19 digit number (about one in ten random ones) is redacted too:
//!   the plugin prefers redacting an order id to leaking a card.
//!
//! Object keys are never changed. A value that is null or not JSON passes
//! through unchanged (logged at debug level); a document with nothing to
//! redact passes through byte for byte (not re-serialized).

use runnel_plugin::json::{self, Value};
use runnel_plugin::{debug, export_map, Config, OwnedRecord, Record};

const DEFAULT_REPLACEMENT: &str = "[REDACTED]";

/// The parsed configuration (public so the native benchmark can run the
/// same function outside WebAssembly).
pub struct Settings {
    /// Field names (any depth) to redact whole; scan mode when both are empty.
    names: Vec<String>,
    /// JSON Pointers to redact whole.
    pointers: Vec<String>,
    replacement: String,
}

impl Settings {
    pub fn from_config(config: &Config) -> Result<Settings, String> {
        let (pointers, names): (Vec<&str>, Vec<&str>) = config
            .list("fields")
            .into_iter()
            .partition(|f| f.starts_with('/'));
        Ok(Settings {
            names: names.into_iter().map(str::to_string).collect(),
            pointers: pointers.into_iter().map(str::to_string).collect(),
            replacement: config
                .get_or("replacement", DEFAULT_REPLACEMENT)
                .to_string(),
        })
    }

    fn scan_mode(&self) -> bool {
        self.names.is_empty() && self.pointers.is_empty()
    }
}

/// The plugin function.
pub fn redact(settings: &Settings, record: &Record) -> OwnedRecord {
    let Some(value) = record.value() else {
        return record.into_owned();
    };
    let mut doc = match json::parse(value) {
        Ok(doc) => doc,
        Err(e) => {
            debug!(
                "offset {}: value is not JSON ({e}), passed through",
                record.offset()
            );
            return record.into_owned();
        }
    };
    let changed = if settings.scan_mode() {
        scan(&mut doc, &settings.replacement)
    } else {
        redact_fields(&mut doc, settings)
    };
    if changed {
        record.with_value(json::to_bytes(&doc))
    } else {
        record.into_owned()
    }
}

/// Fields mode; returns whether anything changed.
fn redact_fields(doc: &mut Value, settings: &Settings) -> bool {
    let mut changed = false;
    let mut replace = |value: &mut Value| {
        if !value.is_null() && value.as_str() != Some(settings.replacement.as_str()) {
            *value = Value::String(settings.replacement.clone());
            changed = true;
        }
    };
    for pointer in &settings.pointers {
        if let Some(value) = doc.pointer_mut(pointer) {
            replace(value);
        }
    }
    if !settings.names.is_empty() {
        json::for_each_member_mut(doc, &mut |name: &str, value: &mut Value| {
            if settings.names.iter().any(|n| n == name) {
                replace(value);
            }
        });
    }
    changed
}

/// Scan mode; returns whether anything changed.
fn scan(value: &mut Value, replacement: &str) -> bool {
    match value {
        Value::String(text) => match redact_text(text, replacement) {
            Some(redacted) => {
                *text = redacted;
                true
            }
            None => false,
        },
        Value::Number(n) => {
            let card = n.as_u64().is_some_and(|n| {
                let digits = n.to_string();
                (13..=19).contains(&digits.len()) && luhn_valid(digits.bytes())
            });
            if card {
                *value = Value::String(replacement.to_string());
            }
            card
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| scan(v, replacement) | changed),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |changed, v| scan(v, replacement) | changed),
        Value::Null | Value::Bool(_) => false,
    }
}

/// `text` with every e-mail address and card number replaced, or `None` if
/// it has none.
fn redact_text(text: &str, replacement: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut spans = email_spans(bytes);
    spans.extend(card_spans(bytes));
    if spans.is_empty() {
        return None;
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        if end <= at {
            continue; // inside a span already replaced
        }
        if start >= at {
            out.push_str(&text[at..start]);
            out.push_str(replacement);
        }
        // Spans start and end at ASCII bytes, so `end` is a char boundary.
        at = end;
    }
    out.push_str(&text[at..]);
    Some(out)
}

fn is_local_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// Byte ranges of the e-mail addresses in `bytes`.
fn email_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    for (at, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'@') {
        let mut start = at;
        while start > 0 && is_local_byte(bytes[start - 1]) {
            start -= 1;
        }
        while start < at && bytes[start] == b'.' {
            start += 1;
        }
        let mut end = at + 1;
        while end < bytes.len() && is_domain_byte(bytes[end]) {
            end += 1;
        }
        // A sentence may end right after the address.
        while end > at + 1 && matches!(bytes[end - 1], b'.' | b'-') {
            end -= 1;
        }
        if start < at && valid_domain(&bytes[at + 1..end]) {
            spans.push((start, end));
        }
    }
    spans
}

fn valid_domain(domain: &[u8]) -> bool {
    let labels: Vec<&[u8]> = domain.split(|b| *b == b'.').collect();
    let Some(tld) = labels.last() else {
        return false;
    };
    labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l[0] != b'-' && l[l.len() - 1] != b'-')
        && tld.len() >= 2
        && tld.iter().all(u8::is_ascii_alphabetic)
}

/// Byte ranges of the card numbers in `bytes`.
fn card_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // A run of digit groups separated by single spaces or dashes.
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            groups.push((start, j));
            let separated = j + 1 < bytes.len()
                && matches!(bytes[j], b' ' | b'-')
                && bytes[j + 1].is_ascii_digit();
            if !separated {
                break;
            }
            j += 1;
        }
        // Leftmost-longest windows of whole groups holding a card number.
        let mut first = 0;
        while first < groups.len() {
            let mut digits = 0;
            let mut best = None;
            for last in first..groups.len() {
                digits += groups[last].1 - groups[last].0;
                if digits > 19 {
                    break;
                }
                let window = groups[first..=last]
                    .iter()
                    .flat_map(|&(s, e)| bytes[s..e].iter().copied());
                if digits >= 13 && luhn_valid(window) {
                    best = Some(last);
                }
            }
            match best {
                Some(last) => {
                    spans.push((groups[first].0, groups[last].1));
                    first = last + 1;
                }
                None => first += 1,
            }
        }
        i = j;
    }
    spans
}

/// The Luhn check over ASCII digits.
fn luhn_valid(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    let sum: u32 = digits
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

export_map!(redact, settings = Settings::from_config);

#[cfg(test)]
mod tests {
    use runnel_plugin::{testing, OwnedRecord};

    use super::*;

    fn run(config: &[(&str, &str)], value: &str) -> String {
        let settings = Settings::from_config(&Config::from_pairs(config.iter().copied())).unwrap();
        let out = testing::run_map(&[OwnedRecord::new().with_value(value)], |r: &Record| {
            redact(&settings, r)
        });
        String::from_utf8(out[0].value.clone().unwrap()).unwrap()
    }

    #[test]
    fn luhn_accepts_test_card_numbers_only() {
        assert!(luhn_valid("4111111111111111".bytes()));
        assert!(luhn_valid("5500000000000004".bytes()));
        assert!(luhn_valid("378282246310005".bytes()));
        assert!(!luhn_valid("4111111111111112".bytes()));
    }

    #[test]
    fn emails_are_found_with_their_boundaries() {
        let r = |t: &str| redact_text(t, "X");
        assert_eq!(
            r("mail bob.smith+tag@mail.example.com."),
            Some("mail X.".into())
        );
        assert_eq!(r("<a@b.co>, c_d@e-f.org"), Some("<X>, X".into()));
        assert_eq!(r("mailto:a@b.io"), Some("mailto:X".into()));
        assert_eq!(r("no @ here, a@b, a@b.c, a@-b.com, a@b..com"), None);
        assert_eq!(r("x@localhost"), None);
    }

    #[test]
    fn card_numbers_are_found_in_groups_and_runs() {
        let r = |t: &str| redact_text(t, "X");
        assert_eq!(r("card 4111 1111 1111 1111 ok"), Some("card X ok".into()));
        assert_eq!(r("4111-1111-1111-1111"), Some("X".into()));
        assert_eq!(r("4111111111111111"), Some("X".into()));
        assert_eq!(
            r("4111 1111 1111 1111 5500 0000 0000 0004"),
            Some("X X".into())
        );
        assert_eq!(r("4111111111111112"), None, "Luhn-invalid");
        assert_eq!(r("411111111111"), None, "12 digits");
        assert_eq!(r("41111111111111111111"), None, "20 digits in one group");
        assert_eq!(
            r("4111  1111 1111 1111"),
            None,
            "double space splits the run"
        );
        assert_eq!(r("ü 4111111111111111 ü"), Some("ü X ü".into()));
    }

    #[test]
    fn scan_mode_redacts_nested_strings_and_card_integers() {
        let value = r#"{"user":{"email":"a@b.example","note":"card 4111 1111 1111 1111"},"tags":["x@y.org","safe"],"pan":4111111111111111,"n":42,"a@b.example":1}"#;
        assert_eq!(
            run(&[], value),
            r#"{"user":{"email":"[REDACTED]","note":"card [REDACTED]"},"tags":["[REDACTED]","safe"],"pan":"[REDACTED]","n":42,"a@b.example":1}"#
        );
    }

    #[test]
    fn fields_mode_redacts_whole_values_of_named_fields_only() {
        let value = r#"{"email":"a@b.example","other":"c@d.example","nested":[{"email":{"x":1}}],"card":null,"user":{"ssn":"123"}}"#;
        assert_eq!(
            run(
                &[("fields", "email, card,/user/ssn"), ("replacement", "***")],
                value
            ),
            r#"{"email":"***","other":"c@d.example","nested":[{"email":"***"}],"card":null,"user":{"ssn":"***"}}"#
        );
    }

    #[test]
    fn untouched_and_non_json_values_pass_through_byte_for_byte() {
        assert_eq!(run(&[], r#"{ "a" :  "fine" }"#), r#"{ "a" :  "fine" }"#);
        assert_eq!(run(&[], "plain a@b.example"), "plain a@b.example");
    }
}
