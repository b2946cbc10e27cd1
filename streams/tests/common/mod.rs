//! Shorthands shared by the test-driver tests: serdes, piping records
//! with raw (possibly null) keys and values, and reading outputs back as
//! plain tuples so a test can compare a whole topic at once.

#![allow(dead_code)] // each test file uses its own part of this

use runnel_streams::serdes::{self, Serde, SerdeRef};
use runnel_streams::{Output, StreamsBuilder, TopologyTestDriver, Window};

pub const APP: &str = "app";

pub fn s() -> SerdeRef<String> {
    serdes::string()
}

pub fn ns() -> SerdeRef<Option<String>> {
    serdes::nullable(serdes::string())
}

pub fn l() -> SerdeRef<i64> {
    serdes::i64()
}

pub fn nl() -> SerdeRef<Option<i64>> {
    serdes::nullable(serdes::i64())
}

pub fn driver(builder: StreamsBuilder) -> TopologyTestDriver {
    TopologyTestDriver::new(builder.build().expect("a valid topology"), APP)
}

/// Pipes a record of UTF-8 key and value (`None`: null).
pub fn send(
    d: &mut TopologyTestDriver,
    topic: &str,
    key: Option<&str>,
    value: Option<&str>,
    ts: i64,
) {
    d.pipe_raw(
        topic,
        key.map(str::as_bytes),
        value.map(str::as_bytes),
        ts,
        &[],
    )
    .expect("the record is processed");
}

/// Pipes a record with a non-null key and value.
pub fn kv(d: &mut TopologyTestDriver, topic: &str, key: &str, value: &str, ts: i64) {
    send(d, topic, Some(key), Some(value), ts);
}

fn text(bytes: &Option<Vec<u8>>) -> Option<String> {
    bytes
        .as_ref()
        .map(|b| String::from_utf8(b.clone()).expect("UTF-8"))
}

fn long(bytes: &Option<Vec<u8>>) -> Option<i64> {
    bytes
        .as_ref()
        .map(|b| i64::from_be_bytes(b.as_slice().try_into().expect("8 bytes")))
}

/// A record as `(key, value, timestamp)`, key and value as text.
pub type Row = (Option<String>, Option<String>, i64);

/// `(key, value, timestamp)` of every record written to `topic` since the
/// last read, keys and values as UTF-8 text.
pub fn strings(d: &mut TopologyTestDriver, topic: &str) -> Vec<Row> {
    d.read_raw(topic)
        .iter()
        .map(|o| (text(&o.key), text(&o.value), o.timestamp))
        .collect()
}

/// `(key, value)` of every record written to `topic`, both non-null text.
pub fn pairs(d: &mut TopologyTestDriver, topic: &str) -> Vec<(String, String)> {
    strings(d, topic)
        .into_iter()
        .map(|(k, v, _)| (k.expect("a key"), v.expect("a value")))
        .collect()
}

/// `(key, count, timestamp)` of every record written to `topic`: text keys,
/// big-endian long values (`None`: a tombstone).
pub fn longs(d: &mut TopologyTestDriver, topic: &str) -> Vec<(String, Option<i64>, i64)> {
    d.read_raw(topic)
        .iter()
        .map(|o| (text(&o.key).expect("a key"), long(&o.value), o.timestamp))
        .collect()
}

/// A windowed record as `(key, [start, end), value, timestamp)`.
pub type WindowedRow<V> = (String, (i64, i64), Option<V>, i64);

fn windowed_key(o: &Output) -> (String, Window) {
    let w = serdes::windowed(serdes::string())
        .deserialize(o.key.as_deref())
        .expect("a windowed key");
    (w.key, w.window)
}

/// Every record written to `topic`: windowed text keys, long values.
pub fn windowed_longs(d: &mut TopologyTestDriver, topic: &str) -> Vec<WindowedRow<i64>> {
    d.read_raw(topic)
        .iter()
        .map(|o| {
            let (k, w) = windowed_key(o);
            (k, (w.start_ms, w.end_ms), long(&o.value), o.timestamp)
        })
        .collect()
}

/// Every record written to `topic`: windowed text keys, text values.
pub fn windowed_strings(d: &mut TopologyTestDriver, topic: &str) -> Vec<WindowedRow<String>> {
    d.read_raw(topic)
        .iter()
        .map(|o| {
            let (k, w) = windowed_key(o);
            (k, (w.start_ms, w.end_ms), text(&o.value), o.timestamp)
        })
        .collect()
}

/// The header `name`'s value as text, if the record has it.
pub fn header(o: &Output, name: &str) -> Option<String> {
    o.headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| text(v))
}
