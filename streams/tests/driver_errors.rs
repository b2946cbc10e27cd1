//! What a record that fails does under each error handling (log and
//! continue, fail, dead-letter topic), and the topology mistakes `build`
//! reports.

mod common;

use common::*;
use runnel_streams::serdes::{Serde, SerdeError};
use runnel_streams::{
    serdes, Consumed, ErrorHandling, JoinWindows, KTable, Produced, Stored, StreamJoined,
    StreamsBuilder, StreamsError, TopologyTestDriver,
};

/// Longs in, doubled, out.
fn doubler() -> StreamsBuilder {
    let b = StreamsBuilder::new();
    b.stream("numbers", Consumed::with(s(), l()))
        .map_values(|v| v * 2)
        .to("doubled", Produced::with(s(), l()));
    b
}

fn pipe_long(d: &mut TopologyTestDriver, key: &str, v: i64, ts: i64) {
    d.pipe("numbers", &s(), &l(), key.to_string(), v, ts)
        .unwrap();
}

#[test]
fn with_log_and_continue_an_undecodable_value_is_skipped_counted_and_the_next_record_processed() {
    let mut d = driver(doubler()).with_error_handling(ErrorHandling::LogAndContinue);
    d.pipe_raw("numbers", Some(b"k"), Some(b"not 8 bytes"), 1, &[])
        .unwrap();
    pipe_long(&mut d, "k", 21, 2);
    assert_eq!(longs(&mut d, "doubled"), vec![("k".into(), Some(42), 2)]);
    let m = d.metrics();
    assert_eq!(
        (m.records_failed, m.records_processed, m.records_skipped),
        (1, 2, 0)
    );
}

#[test]
fn with_fail_an_undecodable_value_is_returned_as_a_deserialization_error() {
    let mut d = driver(doubler()).with_error_handling(ErrorHandling::Fail);
    pipe_long(&mut d, "k", 1, 1);
    let err = d
        .pipe_raw("numbers", Some(b"k"), Some(b"xyz"), 2, &[])
        .unwrap_err();
    match &err {
        StreamsError::Deserialize {
            what,
            topic,
            partition,
            offset,
            error,
        } => {
            assert_eq!(
                (*what, topic.as_str(), *partition, *offset),
                ("value", "numbers", 0, 1)
            );
            assert_eq!(error, &SerdeError::new("a long takes 8 bytes, not 3"));
        }
        other => panic!("not a deserialization error: {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "deserializing value of numbers-0@1: a long takes 8 bytes, not 3"
    );
    assert_eq!(d.metrics().records_failed, 1);
    assert_eq!(longs(&mut d, "doubled"), vec![("k".into(), Some(2), 1)]);
}

#[test]
fn the_test_driver_fails_on_the_first_bad_record_by_default() {
    let mut d = driver(doubler());
    let err = d
        .pipe_raw(
            "numbers",
            Some(&[0xff, 0xfe]),
            Some(&7i64.to_be_bytes()),
            1,
            &[],
        )
        .unwrap_err();
    assert!(
        matches!(err, StreamsError::Deserialize { what: "key", .. }),
        "{err:?}"
    );
}

#[test]
fn a_null_value_for_a_serde_that_refuses_nulls_is_a_failure_not_a_skip() {
    let mut d = driver(doubler()).with_error_handling(ErrorHandling::LogAndContinue);
    d.pipe_raw("numbers", Some(b"k"), None, 1, &[]).unwrap();
    let m = d.metrics();
    assert_eq!((m.records_failed, m.records_skipped), (1, 0));
    assert!(d.read_raw("doubled").is_empty());
}

#[test]
fn with_a_dead_letter_topic_the_raw_record_goes_there_with_the_error_in_its_headers() {
    let mut d = driver(doubler()).with_error_handling(ErrorHandling::DeadLetter("dlq".into()));
    pipe_long(&mut d, "k", 1, 1);
    pipe_long(&mut d, "k", 2, 2);
    let original = vec![("trace".to_string(), Some(b"abc".to_vec()))];
    d.pipe_raw("numbers", Some(b"bad"), Some(b"\x01\x02"), 33, &original)
        .unwrap();
    pipe_long(&mut d, "k", 3, 4);
    let dlq = d.read_raw("dlq");
    assert_eq!(dlq.len(), 1);
    let r = &dlq[0];
    assert_eq!(r.key.as_deref(), Some(&b"bad"[..]));
    assert_eq!(r.value.as_deref(), Some(&b"\x01\x02"[..]));
    assert_eq!(r.timestamp, 33);
    assert_eq!(
        r.headers[0], original[0],
        "the record's own headers come first"
    );
    assert_eq!(
        header(r, "runnel.error.message").as_deref(),
        Some("deserializing value of numbers-0@2: a long takes 8 bytes, not 2")
    );
    assert_eq!(header(r, "runnel.error.topic").as_deref(), Some("numbers"));
    assert_eq!(header(r, "runnel.error.partition").as_deref(), Some("0"));
    assert_eq!(header(r, "runnel.error.offset").as_deref(), Some("2"));
    assert_eq!(header(r, "runnel.error.task").as_deref(), Some("0_0"));
    assert_eq!(
        longs(&mut d, "doubled"),
        vec![
            ("k".into(), Some(2), 1),
            ("k".into(), Some(4), 2),
            ("k".into(), Some(6), 4)
        ]
    );
    assert_eq!(d.metrics().records_failed, 1);
}

/// Text that refuses the value "poison": to write it (`Picky(true)`) or
/// to read it back (`Picky(false)`).
struct Picky(bool);

impl Serde<String> for Picky {
    fn serialize(&self, value: &String) -> Result<Option<Vec<u8>>, SerdeError> {
        if self.0 && value == "poison" {
            return Err(SerdeError::new("refused"));
        }
        serdes::string().serialize(value)
    }
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<String, SerdeError> {
        if !self.0 && bytes == Some(&b"poison"[..]) {
            return Err(SerdeError::new("refused"));
        }
        serdes::string().deserialize(bytes)
    }
}

#[test]
fn a_record_that_fails_when_read_back_from_a_repartition_topic_is_dead_lettered_from_there() {
    let b = StreamsBuilder::new();
    b.stream("in", Consumed::with(s(), s()))
        .select_key(|_, v| v.clone())
        .repartition(Some("rk"), s(), std::sync::Arc::new(Picky(false)))
        .to("out", Produced::with(s(), s()));
    let mut d = driver(b).with_error_handling(ErrorHandling::DeadLetter("dlq".into()));
    kv(&mut d, "in", "k", "fine", 1);
    kv(&mut d, "in", "k", "poison", 2);
    let dlq = d.read_raw("dlq");
    assert_eq!(dlq.len(), 1);
    assert_eq!(
        dlq[0].key.as_deref(),
        Some(&b"poison"[..]),
        "the re-keyed record"
    );
    assert_eq!(
        header(&dlq[0], "runnel.error.topic").as_deref(),
        Some("app-rk-repartition")
    );
    assert_eq!(header(&dlq[0], "runnel.error.offset").as_deref(), Some("1"));
    assert_eq!(header(&dlq[0], "runnel.error.task").as_deref(), Some("1_0"));
    assert_eq!(pairs(&mut d, "out"), vec![("fine".into(), "fine".into())]);
    assert_eq!(d.metrics().records_failed, 1);
}

#[test]
fn a_value_a_sink_cannot_serialize_fails_the_record_and_names_the_topic() {
    let b = StreamsBuilder::new();
    b.stream("in", Consumed::with(s(), s()))
        .to("out", Produced::with(s(), std::sync::Arc::new(Picky(true))));
    let mut d = driver(b);
    kv(&mut d, "in", "k", "fine", 1);
    let err = d
        .pipe_raw("in", Some(b"k"), Some(b"poison"), 2, &[])
        .unwrap_err();
    assert_eq!(
        err,
        StreamsError::Serialize {
            what: "value",
            target: "topic out".into(),
            error: SerdeError::new("refused"),
        }
    );
    assert_eq!(pairs(&mut d, "out"), vec![("k".into(), "fine".into())]);
}

#[test]
fn a_value_a_sink_cannot_serialize_is_dead_lettered_as_its_input_record() {
    let b = StreamsBuilder::new();
    b.stream("in", Consumed::with(s(), s()))
        .to("out", Produced::with(s(), std::sync::Arc::new(Picky(true))));
    let mut d = driver(b).with_error_handling(ErrorHandling::DeadLetter("dlq".into()));
    kv(&mut d, "in", "k", "poison", 1);
    let dlq = strings(&mut d, "dlq");
    assert_eq!(dlq, vec![(Some("k".into()), Some("poison".into()), 1)]);
    assert!(d.read_raw("out").is_empty());
}

// Topology errors.

fn build_error(b: StreamsBuilder) -> Vec<String> {
    match b.build() {
        Ok(_) => panic!("the topology built"),
        Err(e) => e.0,
    }
}

#[test]
fn build_reports_a_stream_table_join_with_a_table_that_has_no_store() {
    let b = StreamsBuilder::new();
    let table: KTable<String, String> = b
        .table("t", Consumed::with(s(), s()), Stored::as_("t"))
        .filter(|_, _| true);
    b.stream("s", Consumed::with(s(), s()))
        .join_table(&table, s(), |a: &String, b: &String| format!("{a}{b}"))
        .to("out", Produced::with(s(), s()));
    let errors = build_error(b);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("a stream-table join reads a table that has no store of its own"),
        "{errors:?}"
    );
}

#[test]
fn build_reports_a_table_table_join_with_a_table_that_has_no_store() {
    let b = StreamsBuilder::new();
    let left: KTable<String, String> = b.table("l", Consumed::with(s(), s()), Stored::as_("l"));
    let right = b
        .table("r", Consumed::with(s(), s()), Stored::as_("r"))
        .map_values(|_, v: &String| v.len() as i64);
    left.join(&right, |a: &String, n: &i64| format!("{a}{n}"));
    let errors = build_error(b);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("call materialize on it first"),
        "{errors:?}"
    );
}

#[test]
fn build_reports_a_store_declared_twice() {
    let b = StreamsBuilder::new();
    let grouped = b
        .stream("s", Consumed::with(s(), s()))
        .group_by_key(s(), s());
    grouped.count(Stored::as_("counts"));
    grouped.reduce(|a, _| a, Stored::as_("counts"));
    assert_eq!(
        build_error(b),
        vec!["state store counts is declared twice".to_string()]
    );
}

#[test]
fn build_reports_a_repartition_topic_declared_twice() {
    let b = StreamsBuilder::new();
    let stream = b.stream("s", Consumed::with(s(), s()));
    stream.repartition(Some("again"), s(), s());
    stream.repartition(Some("again"), s(), s());
    assert_eq!(
        build_error(b),
        vec!["repartition topic again-repartition is declared twice".to_string()]
    );
}

#[test]
fn build_reports_a_join_of_a_stream_whose_key_may_have_changed() {
    let b = StreamsBuilder::new();
    let table: KTable<String, String> = b.table("t", Consumed::with(s(), s()), Stored::as_("t"));
    let rekeyed = b
        .stream("s", Consumed::with(s(), s()))
        .select_key(|_, v: &String| v.clone());
    rekeyed.join_table(&table, s(), |a: &String, b: &String| format!("{a}{b}"));
    rekeyed.join(
        &b.stream("s2", Consumed::with(s(), s())),
        |a: &String, b: &String| format!("{a}{b}"),
        JoinWindows::of_time_difference_and_no_grace(5),
        StreamJoined::with(s(), s(), s()),
    );
    let errors = build_error(b);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("repartition it first"), "{errors:?}");
    assert!(errors[1].contains("repartition it first"), "{errors:?}");
}

#[test]
fn a_rekeyed_stream_joins_a_table_once_repartitioned() {
    let b = StreamsBuilder::new();
    let table: KTable<String, String> = b.table("t", Consumed::with(s(), s()), Stored::as_("t"));
    b.stream("s", Consumed::with(s(), s()))
        .select_key(|_, v: &String| v.clone())
        .repartition(Some("by-value"), s(), s())
        .join_table(&table, s(), |a: &String, b: &String| format!("{a}+{b}"))
        .to("out", Produced::with(s(), s()));
    let mut d = driver(b);
    kv(&mut d, "t", "x", "row", 1);
    kv(&mut d, "s", "k", "x", 2);
    assert_eq!(pairs(&mut d, "out"), vec![("x".into(), "x+row".into())]);
}

#[test]
fn build_reports_suppression_of_a_table_that_is_not_windowed() {
    // Windowed keys, but read from a topic: no windows close behind it.
    let b = StreamsBuilder::new();
    b.table(
        "windowed",
        Consumed::with(serdes::windowed(s()), l()),
        Stored::as_("w"),
    )
    .suppress_until_window_closes(Stored::as_("buffer"));
    assert_eq!(
        build_error(b),
        vec!["suppress_until_window_closes needs a windowed aggregation's table".to_string()]
    );
}

#[test]
fn build_reports_every_mistake_at_once() {
    let b = StreamsBuilder::new();
    let s1 = b.stream("s", Consumed::with(s(), s()));
    s1.group_by_key(s(), s()).count(Stored::as_("dup"));
    s1.group_by_key(s(), s()).count(Stored::as_("dup"));
    let table = b
        .table("t", Consumed::with(s(), s()), Stored::as_("t"))
        .filter(|_, _| true);
    s1.join_table(&table, s(), |a: &String, b: &String| format!("{a}{b}"));
    assert_eq!(build_error(b).len(), 2);
}

#[test]
fn build_reports_a_topic_read_by_two_sources() {
    // Kafka Streams refuses to subscribe one topic twice: read it once
    // and use the stream twice instead.
    let b = StreamsBuilder::new();
    let first = b.stream("x", Consumed::with(s(), s()));
    let second = b.stream("x", Consumed::with(s(), s()));
    first
        .merge(&second.map_values(|v| v.to_uppercase()))
        .to("out", Produced::with(s(), s()));
    assert_eq!(
        build_error(b),
        vec!["topic x is read by more than one source".to_string()]
    );
}

#[test]
fn one_stream_used_twice_sees_every_record_in_both_uses() {
    let b = StreamsBuilder::new();
    let x = b.stream("x", Consumed::with(s(), s()));
    let upper = x.map_values(|v| v.to_uppercase());
    x.merge(&upper).to("out", Produced::with(s(), s()));
    let mut d = driver(b);
    kv(&mut d, "x", "k", "a", 1);
    // A record visits an operator's children in the order they were added.
    assert_eq!(
        pairs(&mut d, "out"),
        vec![("k".into(), "A".into()), ("k".into(), "a".into())]
    );
}
