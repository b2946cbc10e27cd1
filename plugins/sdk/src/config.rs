//! Plugin configuration: the JSON object of string values the host passes
//! to `runnel_init` once, before any batch.
//!
//! The values come from the pipeline YAML, `runnel plugin test --config
//! key=value` or `runnel transform deploy --config key=value`; they are
//! always strings, and the plugin parses numbers itself
//! ([`Config::parse`]). The SDK parses the object with the small parser in
//! this module (no `serde_json` needed) and keeps it for [`config`].

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

/// Most configuration bytes a plugin accepts. The host sends a few hundred
/// bytes in practice; anything this large is a mistake.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// A plugin's configuration: string keys to string values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    values: BTreeMap<String, String>,
}

/// Why configuration bytes are not a JSON object of strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// What is wrong.
    pub message: String,
    /// Byte position in the configuration where it was found.
    pub position: usize,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration at byte {}: {}",
            self.position, self.message
        )
    }
}

impl core::error::Error for ConfigError {}

impl Config {
    /// Parses the bytes given to `runnel_init`: a JSON object whose values
    /// are all strings, with no key twice.
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError {
                message: format!("{} bytes, more than {MAX_CONFIG_BYTES}", bytes.len()),
                position: 0,
            });
        }
        Parser { bytes, pos: 0 }.object()
    }

    /// A configuration from key/value pairs (for tests and defaults).
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Config
    where
        K: Into<String>,
        V: Into<String>,
    {
        Config {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The value of `key`, or `default`.
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// The value of `key`, or an error naming the missing key.
    pub fn require(&self, key: &str) -> Result<&str, String> {
        self.get(key)
            .ok_or_else(|| format!("configuration `{key}` is required"))
    }

    /// The value of `key` parsed as a `T` (a number, a bool...), `None` if
    /// unset, or an error naming the key and the value.
    pub fn parse<T>(&self, key: &str) -> Result<Option<T>, String>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(key) {
            None => Ok(None),
            Some(raw) => raw
                .trim()
                .parse()
                .map(Some)
                .map_err(|e| format!("configuration `{key}` = {raw:?}: {e}")),
        }
    }

    /// The value of `key` as a comma-separated list: items trimmed, empty
    /// items dropped; empty if unset.
    pub fn list(&self, key: &str) -> Vec<&str> {
        self.get(key)
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The keys starting with `prefix`, with the prefix removed, and their
    /// values, in key order: `add.env=prod` is `("env", "prod")` for prefix
    /// `"add."`.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.values
            .range::<str, _>((
                core::ops::Bound::Included(prefix),
                core::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(move |(k, v)| (&k[prefix.len()..], v.as_str()))
    }

    /// Every key and value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Number of keys set.
    pub fn len(&self) -> usize {
        self.values.len()
    }
}

/// The configuration passed to `runnel_init` (empty if the host passed
/// none). Available from the init hook on.
pub fn config() -> &'static Config {
    crate::rt::config()
}

/// A JSON parser for exactly one shape: an object of string values.
struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error<T>(&self, message: impl Into<String>) -> Result<T, ConfigError> {
        Err(ConfigError {
            message: message.into(),
            position: self.pos,
        })
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes.get(self.pos).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), ConfigError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            self.error(format!("expected `{}`", byte as char))
        }
    }

    fn object(mut self) -> Result<Config, ConfigError> {
        let mut values = BTreeMap::new();
        self.expect(b'{')?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                let key_at = self.pos;
                let key = self.string()?;
                self.expect(b':')?;
                if self.peek() != Some(b'"') {
                    return self.error(format!("the value of `{key}` must be a string"));
                }
                let value = self.string()?;
                if values.insert(key, value).is_some() {
                    self.pos = key_at;
                    return self.error("a key appears twice");
                }
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return self.error("expected `,` or `}`"),
                }
            }
        }
        if self.peek().is_some() {
            return self.error("unexpected bytes after the object");
        }
        Ok(Config { values })
    }

    fn string(&mut self) -> Result<String, ConfigError> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let Some(&byte) = self.bytes.get(self.pos) else {
                return self.error("unterminated string");
            };
            self.pos += 1;
            match byte {
                b'"' => break,
                b'\\' => self.escape(&mut out)?,
                0x00..=0x1f => {
                    self.pos -= 1;
                    return self.error("control character in a string");
                }
                _ => out.push(byte),
            }
        }
        String::from_utf8(out).or_else(|_| self.error("string is not UTF-8"))
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), ConfigError> {
        let Some(&byte) = self.bytes.get(self.pos) else {
            return self.error("unterminated escape");
        };
        self.pos += 1;
        let ch = match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let high = self.hex4()?;
                let code = if (0xd800..0xdc00).contains(&high) {
                    if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                        return self.error("unpaired surrogate");
                    }
                    self.pos += 2;
                    let low = self.hex4()?;
                    if !(0xdc00..0xe000).contains(&low) {
                        return self.error("unpaired surrogate");
                    }
                    0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00)
                } else {
                    high
                };
                match char::from_u32(code) {
                    Some(ch) => ch,
                    None => return self.error("unpaired surrogate"),
                }
            }
            _ => {
                self.pos -= 1;
                return self.error("unknown escape");
            }
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, ConfigError> {
        let Some(digits) = self.bytes.get(self.pos..self.pos + 4) else {
            return self.error("truncated \\u escape");
        };
        let mut code = 0;
        for &d in digits {
            let Some(v) = (d as char).to_digit(16) else {
                return self.error("bad \\u escape");
            };
            code = code * 16 + v;
        }
        self.pos += 4;
        Ok(code)
    }
}

impl FromIterator<(String, String)> for Config {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Config::from_pairs(iter)
    }
}

impl fmt::Display for Config {
    /// The configuration as `key=value` pairs separated by spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs: Vec<String> = self.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&pairs.join(" "))
    }
}

impl From<&Config> for BTreeMap<String, String> {
    fn from(config: &Config) -> Self {
        config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_json(text.as_bytes())
    }

    #[test]
    fn an_object_of_strings_is_parsed() {
        let config = parse(r#" { "field" : "email", "keep":"true" } "#).unwrap();
        assert_eq!(config.get("field"), Some("email"));
        assert_eq!(config.get("keep"), Some("true"));
        assert_eq!(config.get("other"), None);
        assert_eq!(config.len(), 2);
        assert!(parse("{}").unwrap().is_empty());
    }

    #[test]
    fn escapes_are_decoded() {
        let config = parse(r#"{"d": "a\nb\t\"q\"\\\/\u00e9\ud83d\ude00", "raw": "é"}"#).unwrap();
        assert_eq!(config.get("d"), Some("a\nb\t\"q\"\\/é😀"));
        assert_eq!(config.get("raw"), Some("é"));
    }

    #[test]
    fn other_shapes_are_refused_with_a_position() {
        for (text, message) in [
            ("", "expected `{`"),
            ("[]", "expected `{`"),
            (r#"{"n": 5}"#, "the value of `n` must be a string"),
            (r#"{"a": "1", "a": "2"}"#, "a key appears twice"),
            (r#"{"a": "1",}"#, "expected `\"`"),
            (r#"{"a": "1"} x"#, "unexpected bytes after the object"),
            (r#"{"a": "1"#, "unterminated string"),
            (r#"{"a": "\q"}"#, "unknown escape"),
            (r#"{"a": "\ud800"}"#, "unpaired surrogate"),
            ("{\"a\": \"\n\"}", "control character in a string"),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.message, message, "for {text:?}");
        }
        assert_eq!(parse(r#"{"n": 5}"#).unwrap_err().position, 6);
    }

    #[test]
    fn accessors_parse_lists_numbers_and_prefixes() {
        let config = Config::from_pairs([
            ("fields", " a, b ,,c "),
            ("n", " 42 "),
            ("bad", "x"),
            ("add.env", "prod"),
            ("add.region", "eu"),
            ("addition", "no"),
        ]);
        assert_eq!(config.list("fields"), vec!["a", "b", "c"]);
        assert!(config.list("missing").is_empty());
        assert_eq!(config.parse::<u32>("n"), Ok(Some(42)));
        assert_eq!(config.parse::<u32>("missing"), Ok(None));
        assert!(config.parse::<u32>("bad").unwrap_err().contains("`bad`"));
        assert_eq!(
            config.with_prefix("add.").collect::<Vec<_>>(),
            vec![("env", "prod"), ("region", "eu")]
        );
        assert_eq!(config.get_or("missing", "d"), "d");
        assert_eq!(
            config.require("missing").unwrap_err(),
            "configuration `missing` is required"
        );
    }
}
