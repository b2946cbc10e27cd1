//! Event time from the records themselves: a source's timestamp extractor
//! decides the timestamp windows, stream time and outputs see; a negative
//! one skips the record.

mod common;

use common::*;
use runnel_streams::{
    serdes, Consumed, KStream, Produced, SlidingWindows, Stored, StreamsBuilder, TimeWindows,
};

/// `events` whose values are `<event time>:<payload>`: the extractor reads
/// the time, or answers -1 for a value without one.
fn timed_events(b: &StreamsBuilder) -> KStream<String, String> {
    b.stream(
        "events",
        Consumed::with(s(), s()).with_timestamp_extractor(|_, v: &String, _| {
            v.split_once(':')
                .and_then(|(t, _)| t.parse().ok())
                .unwrap_or(-1)
        }),
    )
}

fn timed_windowed_count(windows: TimeWindows) -> StreamsBuilder {
    let b = StreamsBuilder::new();
    timed_events(&b)
        .group_by_key(s(), s())
        .windowed_by(windows)
        .count(Stored::as_("store"))
        .to_stream()
        .to("counts", Produced::with(serdes::windowed(s()), nl()));
    b
}

#[test]
fn windows_follow_the_extracted_time_not_the_records_own() {
    let mut d = driver(timed_windowed_count(TimeWindows::of_size_with_grace(
        1_000, 0,
    )));
    kv(&mut d, "events", "a", "1500:x", 0);
    kv(&mut d, "events", "a", "2500:y", 0);
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![
            ("a".to_string(), (1_000, 2_000), Some(1), 1_500),
            ("a".to_string(), (2_000, 3_000), Some(1), 2_500),
        ]
    );
}

#[test]
fn stream_time_follows_the_extracted_time_so_a_late_topic_timestamp_closes_nothing() {
    // Without the extractor the second record (topic time 1 000 000)
    // would close [0, 10) before the third arrives.
    let mut d = driver(timed_windowed_count(TimeWindows::of_size_with_grace(10, 0)));
    kv(&mut d, "events", "a", "5:x", 0);
    kv(&mut d, "events", "a", "6:x", 1_000_000);
    kv(&mut d, "events", "a", "7:x", 0);
    assert_eq!(
        windowed_longs(&mut d, "counts")
            .into_iter()
            .map(|(_, w, c, _)| (w, c))
            .collect::<Vec<_>>(),
        vec![((0, 10), Some(1)), ((0, 10), Some(2)), ((0, 10), Some(3))]
    );
    assert_eq!(d.metrics().late_records_dropped, 0);
    kv(&mut d, "events", "a", "10:x", 0);
    kv(&mut d, "events", "a", "9:x", 0);
    assert_eq!(d.metrics().late_records_dropped, 1);
}

#[test]
fn outputs_carry_the_extracted_time() {
    let b = StreamsBuilder::new();
    timed_events(&b)
        .map_values(|v: String| v.to_uppercase())
        .to("out", Produced::with(s(), s()));
    let mut d = driver(b);
    kv(&mut d, "events", "k", "42:hello", 7);
    assert_eq!(
        strings(&mut d, "out"),
        vec![(Some("k".into()), Some("42:HELLO".into()), 42)]
    );
}

#[test]
fn a_negative_extracted_time_skips_the_record_and_counts_it() {
    let b = StreamsBuilder::new();
    timed_events(&b).to("out", Produced::with(s(), s()));
    let mut d = driver(b);
    kv(&mut d, "events", "k", "no time here", 7);
    kv(&mut d, "events", "k", "-5:negative", 7);
    kv(&mut d, "events", "k", "3:fine", 7);
    assert_eq!(
        strings(&mut d, "out"),
        vec![(Some("k".into()), Some("3:fine".into()), 3)]
    );
    let m = d.metrics();
    assert_eq!(m.records_skipped, 2);
    assert_eq!(m.records_processed, 3);
}

#[test]
fn a_sliding_window_uses_the_extracted_time() {
    let b = StreamsBuilder::new();
    timed_events(&b)
        .group_by_key(s(), s())
        .windowed_by_sliding(SlidingWindows::of_time_difference_and_no_grace(10))
        .count(Stored::as_("store"))
        .to_stream()
        .to("counts", Produced::with(serdes::windowed(s()), nl()));
    let mut d = driver(b);
    kv(&mut d, "events", "a", "100:x", 0);
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![("a".to_string(), (90, 100), Some(1), 100)]
    );
}

#[test]
fn a_tables_rows_carry_the_extracted_time_and_tombstones_their_own() {
    let b = StreamsBuilder::new();
    b.table(
        "rows",
        Consumed::with(s(), s()).with_timestamp_extractor(|_, v: &String, _| v.len() as i64),
        Stored::as_("rows"),
    )
    .to_stream()
    .to("out", Produced::with(s(), ns()));
    let mut d = driver(b);
    kv(&mut d, "rows", "k", "abc", 100);
    send(&mut d, "rows", Some("k"), None, 200);
    assert_eq!(
        strings(&mut d, "out"),
        vec![
            (Some("k".into()), Some("abc".into()), 3),
            (Some("k".into()), None, 200)
        ]
    );
}
