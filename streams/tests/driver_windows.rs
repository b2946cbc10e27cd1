//! Windowed aggregations: tumbling and hopping windows aligned to the
//! epoch, session windows, the grace period (on both sides of its
//! boundary), late records, and suppression until a window closes.

mod common;

use common::*;
use runnel_streams::{
    serdes, Consumed, KStream, Produced, SessionWindows, Stored, StreamsBuilder, TimeWindows,
    Window,
};

fn events(b: &StreamsBuilder) -> KStream<String, String> {
    b.stream("events", Consumed::with(s(), s()))
}

/// A windowed count of `events` written to `counts` (and kept in the
/// store `store`).
fn time_windowed_count(windows: TimeWindows) -> StreamsBuilder {
    let b = StreamsBuilder::new();
    events(&b)
        .group_by_key(s(), s())
        .windowed_by(windows)
        .count(Stored::as_("store"))
        .to_stream()
        .to("counts", Produced::with(serdes::windowed(s()), nl()));
    b
}

fn session_count(windows: SessionWindows) -> StreamsBuilder {
    let b = StreamsBuilder::new();
    events(&b)
        .group_by_key(s(), s())
        .windowed_by_session(windows)
        .count(Stored::as_("sessions"))
        .to_stream()
        .to("counts", Produced::with(serdes::windowed(s()), nl()));
    b
}

fn w(start_ms: i64, end_ms: i64) -> Window {
    Window { start_ms, end_ms }
}

fn row(key: &str, window: (i64, i64), value: Option<i64>, ts: i64) -> WindowedRow<i64> {
    (key.to_string(), window, value, ts)
}

#[test]
fn windows_of_a_timestamp_are_aligned_to_the_epoch() {
    let tumbling = TimeWindows::of_size_without_grace(5_000);
    assert_eq!(tumbling.windows_for(7_000), vec![w(5_000, 10_000)]);
    // The developer guide's example: size 5000, advance 3000 gives
    // [0;5000), [3000;8000), ...
    let hopping = TimeWindows::of_size_without_grace(5_000).advance_by(3_000);
    assert_eq!(
        hopping.windows_for(4_000),
        vec![w(0, 5_000), w(3_000, 8_000)]
    );
    assert_eq!(hopping.windows_for(1_000), vec![w(0, 5_000)]);
    assert_eq!(
        hopping.windows_for(6_000),
        vec![w(3_000, 8_000), w(6_000, 11_000)]
    );
}

#[test]
fn a_tumbling_window_counts_each_record_in_exactly_one_window_start_inclusive_end_exclusive() {
    let mut d = driver(time_windowed_count(TimeWindows::of_size_with_grace(
        10, 100,
    )));
    for (key, ts) in [("a", 0), ("a", 9), ("a", 10), ("b", 9), ("a", 25)] {
        kv(&mut d, "events", key, "e", ts);
    }
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![
            row("a", (0, 10), Some(1), 0),
            row("a", (0, 10), Some(2), 9),
            row("a", (10, 20), Some(1), 10),
            row("b", (0, 10), Some(1), 9),
            row("a", (20, 30), Some(1), 25)
        ]
    );
    assert_eq!(
        d.fetch_windows("store", &s(), &l(), &"a".to_string(), 0, 100),
        vec![(0, 2), (10, 1), (20, 1)]
    );
    assert_eq!(d.metrics().late_records_dropped, 0);
}

#[test]
fn a_hopping_window_record_updates_every_window_it_falls_in_oldest_first() {
    let mut d = driver(time_windowed_count(
        TimeWindows::of_size_with_grace(10, 100).advance_by(5),
    ));
    kv(&mut d, "events", "a", "e", 3);
    kv(&mut d, "events", "a", "e", 12);
    kv(&mut d, "events", "a", "e", 7);
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![
            row("a", (0, 10), Some(1), 3),
            row("a", (5, 15), Some(1), 12),
            row("a", (10, 20), Some(1), 12),
            row("a", (0, 10), Some(2), 7),
            row("a", (5, 15), Some(2), 7)
        ]
    );
}

#[test]
fn a_windowed_reduce_and_aggregate_fold_per_key_and_window() {
    let b = StreamsBuilder::new();
    let grouped = events(&b).group_by_key(s(), s());
    let windows = TimeWindows::of_size_with_grace(10, 100);
    grouped
        .windowed_by(windows)
        .reduce(|a, v| format!("{a}{v}"), Stored::as_("reduced"))
        .to_stream()
        .to("reduced", Produced::with(serdes::windowed(s()), ns()));
    grouped
        .windowed_by(windows)
        .aggregate(
            || 0,
            |_, v: String, acc: i64| acc + v.len() as i64,
            l(),
            Stored::as_("lengths"),
        )
        .to_stream()
        .to("lengths", Produced::with(serdes::windowed(s()), nl()));
    let mut d = driver(b);
    kv(&mut d, "events", "k", "x", 1);
    kv(&mut d, "events", "k", "yy", 2);
    kv(&mut d, "events", "k", "zzz", 11);
    let reduced: Vec<_> = windowed_strings(&mut d, "reduced")
        .into_iter()
        .map(|(k, w, v, _)| (k, w, v.unwrap()))
        .collect();
    assert_eq!(
        reduced,
        vec![
            ("k".to_string(), (0, 10), "x".to_string()),
            ("k".to_string(), (0, 10), "xyy".to_string()),
            ("k".to_string(), (10, 20), "zzz".to_string())
        ]
    );
    assert_eq!(
        windowed_longs(&mut d, "lengths"),
        vec![
            row("k", (0, 10), Some(1), 1),
            row("k", (0, 10), Some(3), 2),
            row("k", (10, 20), Some(3), 11)
        ]
    );
}

#[test]
fn an_out_of_order_record_within_the_grace_period_still_counts_in_its_window() {
    let mut d = driver(time_windowed_count(TimeWindows::of_size_with_grace(10, 5)));
    kv(&mut d, "events", "a", "e", 2);
    kv(&mut d, "events", "a", "e", 12);
    kv(&mut d, "events", "a", "e", 4); // stream time 12 < 10 + 5
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![
            row("a", (0, 10), Some(1), 2),
            row("a", (10, 20), Some(1), 12),
            row("a", (0, 10), Some(2), 4)
        ]
    );
    assert_eq!(d.metrics().late_records_dropped, 0);
}

#[test]
fn a_window_accepts_records_until_stream_time_reaches_its_end_plus_grace() {
    // [0, 10) with 5 ms of grace closes when stream time reaches 15.
    let mut d = driver(time_windowed_count(TimeWindows::of_size_with_grace(10, 5)));
    kv(&mut d, "events", "a", "e", 14);
    kv(&mut d, "events", "a", "e", 9); // 14 < 15: still open
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![
            row("a", (10, 20), Some(1), 14),
            row("a", (0, 10), Some(1), 9)
        ]
    );
    assert_eq!(d.metrics().late_records_dropped, 0);
    kv(&mut d, "events", "b", "e", 15);
    kv(&mut d, "events", "a", "e", 9); // 15 = 10 + 5: closed
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![row("b", (10, 20), Some(1), 15)]
    );
    assert_eq!(d.metrics().late_records_dropped, 1);
    assert_eq!(
        d.fetch_windows("store", &s(), &l(), &"a".to_string(), 0, 0),
        vec![(0, 1)]
    );
}

#[test]
fn without_grace_a_window_closes_as_soon_as_stream_time_reaches_its_end() {
    let mut d = driver(time_windowed_count(TimeWindows::of_size_without_grace(10)));
    kv(&mut d, "events", "a", "e", 9);
    kv(&mut d, "events", "a", "e", 10);
    kv(&mut d, "events", "a", "e", 9);
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![
            row("a", (0, 10), Some(1), 9),
            row("a", (10, 20), Some(1), 10)
        ]
    );
    assert_eq!(d.metrics().late_records_dropped, 1);
}

#[test]
fn a_hopping_record_late_for_its_oldest_window_still_updates_the_open_ones() {
    // size 10, advance 5, no grace: a record at 12 falls in [5, 15) and
    // [10, 20); at stream time 16 the first has closed, the second not.
    let mut d = driver(time_windowed_count(
        TimeWindows::of_size_without_grace(10).advance_by(5),
    ));
    kv(&mut d, "events", "b", "e", 16);
    windowed_longs(&mut d, "counts");
    kv(&mut d, "events", "a", "e", 12);
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![row("a", (10, 20), Some(1), 12)]
    );
    assert!(d
        .fetch_windows("store", &s(), &l(), &"a".to_string(), 5, 5)
        .is_empty());
}

#[test]
fn a_late_record_is_dropped_counted_and_copied_to_the_late_records_topic() {
    let mut d = driver(time_windowed_count(TimeWindows::of_size_with_grace(10, 5)))
        .with_late_records_topic("late");
    kv(&mut d, "events", "a", "e", 30);
    d.pipe_raw("events", Some(b"a"), Some(b"too late"), 3, &[])
        .unwrap();
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![row("a", (30, 40), Some(1), 30)]
    );
    assert_eq!(d.metrics().late_records_dropped, 1);
    let late = d.read_raw("late");
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].key.as_deref(), Some(&b"a"[..]));
    assert_eq!(late[0].value.as_deref(), Some(&b"too late"[..]));
    assert_eq!(late[0].timestamp, 3);
    assert_eq!(
        header(&late[0], "runnel.late.source").as_deref(),
        Some("events-0@1")
    );
    assert_eq!(
        header(&late[0], "runnel.late.stream.time").as_deref(),
        Some("30")
    );
}

#[test]
fn late_records_go_nowhere_but_the_counter_without_a_late_records_topic() {
    let mut d = driver(time_windowed_count(TimeWindows::of_size_with_grace(10, 5)));
    kv(&mut d, "events", "a", "e", 30);
    kv(&mut d, "events", "a", "e", 3);
    kv(&mut d, "events", "a", "e", 4);
    assert_eq!(d.metrics().late_records_dropped, 2);
    assert!(d.read_raw("late").is_empty());
}

#[test]
fn a_record_that_never_reaches_the_window_operator_does_not_advance_its_stream_time() {
    // Stream time is per processor: "this time will only advance when a
    // new record arrives at the processor". A record filtered out before
    // the aggregation closes no window.
    let b = StreamsBuilder::new();
    events(&b)
        .filter(|_, v| v != "ignored")
        .group_by_key(s(), s())
        .windowed_by(TimeWindows::of_size_without_grace(10))
        .count(Stored::as_("store"))
        .to_stream()
        .to("counts", Produced::with(serdes::windowed(s()), nl()));
    let mut d = driver(b);
    kv(&mut d, "events", "a", "e", 1);
    kv(&mut d, "events", "a", "ignored", 1_000);
    kv(&mut d, "events", "a", "e", 2);
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![row("a", (0, 10), Some(1), 1), row("a", (0, 10), Some(2), 2)]
    );
    assert_eq!(d.metrics().late_records_dropped, 0);
}

#[test]
fn records_with_a_null_key_are_skipped_by_a_windowed_count() {
    let b = StreamsBuilder::new();
    b.stream("events", Consumed::with(ns(), s()))
        .group_by_key(ns(), s())
        .windowed_by(TimeWindows::of_size_without_grace(10))
        .count(Stored::as_("store"));
    let mut d = driver(b);
    send(&mut d, "events", None, Some("e"), 1);
    assert_eq!(d.metrics().records_skipped, 1);
    assert!(d.store("store").unwrap().is_empty());
}

// Session windows.

#[test]
fn records_exactly_the_inactivity_gap_apart_share_a_session_and_one_more_ms_splits_them() {
    let mut d = driver(session_count(
        SessionWindows::with_inactivity_gap_and_grace(10, 100),
    ));
    kv(&mut d, "events", "a", "e", 0);
    kv(&mut d, "events", "a", "e", 10);
    kv(&mut d, "events", "b", "e", 0);
    kv(&mut d, "events", "b", "e", 11);
    assert_eq!(
        d.fetch_sessions("sessions", &s(), &l(), &"a".to_string()),
        vec![(w(0, 10), 2)]
    );
    assert_eq!(
        d.fetch_sessions("sessions", &s(), &l(), &"b".to_string()),
        vec![(w(0, 0), 1), (w(11, 11), 1)]
    );
}

#[test]
fn extending_a_session_replaces_it_with_a_tombstone_and_the_longer_session() {
    let mut d = driver(session_count(
        SessionWindows::with_inactivity_gap_and_grace(10, 100),
    ));
    kv(&mut d, "events", "a", "e", 0);
    kv(&mut d, "events", "a", "e", 7);
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![
            row("a", (0, 0), Some(1), 0),
            row("a", (0, 0), None, 0),
            row("a", (0, 7), Some(2), 7)
        ]
    );
}

#[test]
fn a_second_record_at_the_same_instant_updates_its_one_instant_session_in_place() {
    let mut d = driver(session_count(
        SessionWindows::with_inactivity_gap_and_grace(10, 100),
    ));
    kv(&mut d, "events", "a", "e", 5);
    kv(&mut d, "events", "a", "e", 5);
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![row("a", (5, 5), Some(1), 5), row("a", (5, 5), Some(2), 5)]
    );
}

#[test]
fn an_out_of_order_record_between_two_sessions_merges_them_into_one() {
    let mut d = driver(session_count(
        SessionWindows::with_inactivity_gap_and_grace(5, 100),
    ));
    kv(&mut d, "events", "a", "e", 0);
    kv(&mut d, "events", "a", "e", 10);
    windowed_longs(&mut d, "counts");
    kv(&mut d, "events", "a", "e", 5);
    // Each result is stamped with its session's end (the largest
    // timestamp in it).
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![
            row("a", (0, 0), None, 0),
            row("a", (10, 10), None, 10),
            row("a", (0, 10), Some(3), 10)
        ]
    );
    assert_eq!(
        d.fetch_sessions("sessions", &s(), &l(), &"a".to_string()),
        vec![(w(0, 10), 3)]
    );
}

#[test]
fn session_aggregates_merge_with_the_merger_when_a_record_bridges_them() {
    let b = StreamsBuilder::new();
    events(&b)
        .group_by_key(s(), s())
        .windowed_by_session(SessionWindows::with_inactivity_gap_and_grace(5, 100))
        .aggregate(
            String::new,
            |_, v: String, acc: String| format!("{acc}{v}"),
            |_, a: String, b: String| match (a.is_empty(), b.is_empty()) {
                (true, _) => b,
                (_, true) => a,
                _ => format!("{a}|{b}"),
            },
            s(),
            Stored::as_("sessions"),
        );
    let mut d = driver(b);
    kv(&mut d, "events", "k", "a", 0);
    kv(&mut d, "events", "k", "b", 2);
    kv(&mut d, "events", "k", "c", 12);
    kv(&mut d, "events", "k", "d", 9);
    assert_eq!(
        d.fetch_sessions("sessions", &s(), &s(), &"k".to_string()),
        vec![(w(0, 2), "ab".to_string()), (w(9, 12), "cd".to_string())]
    );
    kv(&mut d, "events", "k", "e", 6); // 4 after the first, 3 before the second
    assert_eq!(
        d.fetch_sessions("sessions", &s(), &s(), &"k".to_string()),
        vec![(w(0, 12), "ab|cde".to_string())]
    );
}

#[test]
fn the_developer_guides_session_example_merges_green_and_extends_blue() {
    // Inactivity gap of 5 (minutes in the guide, ms here), no grace.
    let mut d = driver(session_count(
        SessionWindows::with_inactivity_gap_and_no_grace(5),
    ));
    kv(&mut d, "events", "green", "e", 0);
    kv(&mut d, "events", "green", "e", 6);
    kv(&mut d, "events", "blue", "e", 2);
    kv(&mut d, "events", "green", "e", 4); // out of order: merges [0] and [6]
    kv(&mut d, "events", "blue", "e", 5); // out of order: extends [2] to [2, 5]
    kv(&mut d, "events", "blue", "e", 11);
    assert_eq!(d.metrics().late_records_dropped, 0);
    assert_eq!(
        d.fetch_sessions("sessions", &s(), &l(), &"green".to_string()),
        vec![(w(0, 6), 3)]
    );
    assert_eq!(
        d.fetch_sessions("sessions", &s(), &l(), &"blue".to_string()),
        vec![(w(2, 5), 2), (w(11, 11), 1)]
    );
}

#[test]
fn a_session_accepts_records_until_stream_time_passes_its_end_plus_gap_plus_grace() {
    // gap 5, grace 2: a session ending at e closes once stream time is
    // past e + 7.
    let mut d = driver(session_count(
        SessionWindows::with_inactivity_gap_and_grace(5, 2),
    ));
    kv(&mut d, "events", "clock", "e", 20);
    kv(&mut d, "events", "a", "e", 13); // 13 = 20 - 7: still accepted
    kv(&mut d, "events", "b", "e", 12); // 12 < 20 - 7: late
    assert_eq!(d.metrics().late_records_dropped, 1);
    assert_eq!(
        d.fetch_sessions("sessions", &s(), &l(), &"a".to_string()),
        vec![(w(13, 13), 1)]
    );
    assert!(d
        .fetch_sessions("sessions", &s(), &l(), &"b".to_string())
        .is_empty());
}

#[test]
fn a_late_record_cannot_extend_or_merge_a_closed_session() {
    let mut d = driver(session_count(
        SessionWindows::with_inactivity_gap_and_no_grace(5),
    ))
    .with_late_records_topic("late");
    kv(&mut d, "events", "a", "e", 0);
    kv(&mut d, "events", "b", "e", 100);
    kv(&mut d, "events", "a", "e", 3);
    assert_eq!(d.metrics().late_records_dropped, 1);
    assert_eq!(
        d.fetch_sessions("sessions", &s(), &l(), &"a".to_string()),
        vec![(w(0, 0), 1)]
    );
    let late = strings(&mut d, "late");
    assert_eq!(late, vec![(Some("a".into()), Some("e".into()), 3)]);
}

// Suppression until windows close.

fn suppressed_count(windows: TimeWindows) -> StreamsBuilder {
    let b = StreamsBuilder::new();
    events(&b)
        .group_by_key(s(), s())
        .windowed_by(windows)
        .count(Stored::as_("store"))
        .suppress_until_window_closes(Stored::as_("buffer"))
        .to_stream()
        .to("final", Produced::with(serdes::windowed(s()), nl()));
    b
}

#[test]
fn suppression_emits_nothing_until_the_window_closes_then_exactly_one_final_result() {
    let mut d = driver(suppressed_count(TimeWindows::of_size_with_grace(10, 5)));
    kv(&mut d, "events", "a", "e", 1);
    kv(&mut d, "events", "a", "e", 3);
    kv(&mut d, "events", "a", "e", 12);
    kv(&mut d, "events", "a", "e", 14); // stream time 14 < 10 + 5
    assert!(windowed_longs(&mut d, "final").is_empty());
    kv(&mut d, "events", "b", "e", 15); // [0, 10) closes
    assert_eq!(
        windowed_longs(&mut d, "final"),
        vec![row("a", (0, 10), Some(2), 3)]
    );
    kv(&mut d, "events", "b", "e", 16);
    kv(&mut d, "events", "a", "e", 19);
    assert!(windowed_longs(&mut d, "final").is_empty());
    kv(&mut d, "events", "c", "e", 40); // [10, 20) closes for a and b
    assert_eq!(
        windowed_longs(&mut d, "final"),
        vec![
            row("a", (10, 20), Some(3), 19),
            row("b", (10, 20), Some(2), 16)
        ]
    );
}

#[test]
fn suppression_includes_out_of_order_updates_that_arrive_within_the_grace() {
    let mut d = driver(suppressed_count(TimeWindows::of_size_with_grace(10, 5)));
    kv(&mut d, "events", "a", "e", 1);
    kv(&mut d, "events", "b", "e", 12);
    kv(&mut d, "events", "a", "e", 9);
    kv(&mut d, "events", "a", "e", 2);
    kv(&mut d, "events", "b", "e", 20);
    let finals: Vec<_> = windowed_longs(&mut d, "final")
        .into_iter()
        .map(|(k, w, v, _)| (k, w, v))
        .collect();
    assert_eq!(finals, vec![("a".to_string(), (0, 10), Some(3))]);
}

#[test]
fn a_record_dropped_as_late_after_its_window_closed_emits_no_second_final_result() {
    let mut d = driver(suppressed_count(TimeWindows::of_size_without_grace(10)));
    kv(&mut d, "events", "a", "e", 5);
    kv(&mut d, "events", "a", "e", 10);
    assert_eq!(
        windowed_longs(&mut d, "final"),
        vec![row("a", (0, 10), Some(1), 5)]
    );
    kv(&mut d, "events", "a", "e", 6);
    kv(&mut d, "events", "a", "e", 11);
    assert!(windowed_longs(&mut d, "final").is_empty());
    assert_eq!(d.metrics().late_records_dropped, 1);
    kv(&mut d, "events", "a", "e", 20);
    assert_eq!(
        windowed_longs(&mut d, "final"),
        vec![row("a", (10, 20), Some(2), 11)]
    );
}

#[test]
fn the_suppression_buffer_is_a_logged_store_that_empties_as_windows_close() {
    let mut d = driver(suppressed_count(TimeWindows::of_size_without_grace(10)));
    kv(&mut d, "events", "a", "e", 5);
    assert_eq!(d.store("buffer").unwrap().len(), 1);
    assert_eq!(d.read_raw("app-buffer-changelog").len(), 1);
    kv(&mut d, "events", "a", "e", 10);
    // [10, 20) entered the buffer, [0, 10) left it.
    assert_eq!(d.store("buffer").unwrap().len(), 1);
    let changelog = d.read_raw("app-buffer-changelog");
    assert_eq!(changelog.len(), 2);
    assert!(
        changelog.iter().any(|o| o.value.is_none()),
        "a delete for the emitted window"
    );
}

#[test]
fn suppressed_session_results_wait_for_the_inactivity_gap_and_the_grace() {
    let b = StreamsBuilder::new();
    events(&b)
        .group_by_key(s(), s())
        .windowed_by_session(SessionWindows::with_inactivity_gap_and_grace(5, 2))
        .count(Stored::as_("sessions"))
        .suppress_until_window_closes(Stored::as_("buffer"))
        .to_stream()
        .to("final", Produced::with(serdes::windowed(s()), nl()));
    let mut d = driver(b);
    kv(&mut d, "events", "a", "e", 0);
    kv(&mut d, "events", "a", "e", 3);
    kv(&mut d, "events", "b", "e", 9); // 9 < 3 + 5 + 2
    assert!(windowed_longs(&mut d, "final").is_empty());
    kv(&mut d, "events", "b", "e", 10); // 10 = 3 + 5 + 2: closed
    assert_eq!(
        windowed_longs(&mut d, "final"),
        vec![row("a", (0, 3), Some(2), 3)]
    );
}
