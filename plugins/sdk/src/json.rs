//! JSON helpers for plugins whose values are JSON documents, on top of
//! `serde_json` (re-exported, with `preserve_order`: a rewritten document
//! keeps its field order).
//!
//! ```
//! use runnel_plugin::json;
//!
//! let mut doc = json::parse(br#"{"user": {"email": "a@b.example"}, "n": 1}"#).unwrap();
//! assert_eq!(json::field(&doc, "n"), Some(&json::Value::from(1)));
//! assert_eq!(json::field(&doc, "/user/email").map(json::text).as_deref(), Some("a@b.example"));
//! json::for_each_string_mut(&mut doc, &mut |s: &mut String| *s = s.to_uppercase());
//! assert_eq!(json::to_bytes(&doc), br#"{"user":{"email":"A@B.EXAMPLE"},"n":1}"#);
//! ```
//!
//! `serde_json` refuses documents nested deeper than 128 levels, so the
//! recursive walks here are bounded.

use std::borrow::Cow;
use std::string::String;
use std::vec::Vec;

pub use serde_json::{self, json, Map, Number, Value};

/// Parses a JSON document (a record value, typically).
pub fn parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Serializes a document compactly.
pub fn to_bytes(value: &Value) -> Vec<u8> {
    // Serializing a `Value` into a `Vec` cannot fail: its map keys are
    // strings and writing to a `Vec` does no I/O.
    serde_json::to_vec(value).expect("a serde_json::Value always serializes")
}

/// A field of a document: `path` is a JSON Pointer (RFC 6901) if it starts
/// with `/` (`/user/email`, `/items/0`), otherwise the name of a top-level
/// field.
pub fn field<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    if path.starts_with('/') {
        value.pointer(path)
    } else {
        value.get(path)
    }
}

/// [`field`], mutable.
pub fn field_mut<'v>(value: &'v mut Value, path: &str) -> Option<&'v mut Value> {
    if path.starts_with('/') {
        value.pointer_mut(path)
    } else {
        value.get_mut(path)
    }
}

/// A value as text: a string's contents, or the compact JSON of anything
/// else (`42`, `true`, `null`, `{"a":1}`).
pub fn text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

/// Calls `f` on every string value in the document, at any depth (object
/// keys are not visited).
pub fn for_each_string_mut<F>(value: &mut Value, f: &mut F)
where
    F: FnMut(&mut String),
{
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter_mut().for_each(|v| for_each_string_mut(v, f)),
        Value::Object(map) => map.values_mut().for_each(|v| for_each_string_mut(v, f)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Calls `f` on every object member `(name, value)` in the document, at any
/// depth, outermost first; members inside a visited value are visited too.
pub fn for_each_member_mut<F>(value: &mut Value, f: &mut F)
where
    F: FnMut(&str, &mut Value),
{
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| for_each_member_mut(v, f)),
        Value::Object(map) => {
            for (name, member) in map.iter_mut() {
                f(name, member);
                for_each_member_mut(member, f);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_by_name_or_pointer() {
        let doc = json!({"a": {"b": [10, 20]}, "a/b": 1});
        assert_eq!(field(&doc, "a/b"), Some(&json!(1)));
        assert_eq!(field(&doc, "/a/b/1"), Some(&json!(20)));
        assert_eq!(field(&doc, "/a/missing"), None);
        assert_eq!(field(&doc, "missing"), None);
    }

    #[test]
    fn text_is_string_contents_or_json() {
        assert_eq!(text(&json!("x")), "x");
        assert_eq!(text(&json!(4.5)), "4.5");
        assert_eq!(text(&json!(null)), "null");
        assert_eq!(text(&json!({"k": [1]})), r#"{"k":[1]}"#);
    }

    #[test]
    fn rewriting_keeps_field_order() {
        let mut doc = parse(br#"{"z": "1", "a": ["2", {"m": "3"}], "k": 4}"#).unwrap();
        for_each_string_mut(&mut doc, &mut |s: &mut String| s.push('!'));
        assert_eq!(
            to_bytes(&doc),
            br#"{"z":"1!","a":["2!",{"m":"3!"}],"k":4}"#.to_vec()
        );
    }

    #[test]
    fn members_are_visited_at_every_depth() {
        let mut doc = json!({"a": {"a": 1}, "b": [{"a": 2}]});
        let mut seen = Vec::new();
        for_each_member_mut(&mut doc, &mut |name: &str, _: &mut Value| {
            seen.push(name.to_string())
        });
        assert_eq!(seen, vec!["a", "a", "b", "a"]);
    }
}
