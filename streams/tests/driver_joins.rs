//! Joins: stream–table (a lookup triggered by the stream only),
//! table–table (inner/left/outer, both sides trigger, tombstones delete)
//! and stream–stream within join windows (inner/left/outer, asymmetric
//! windows, grace, results only after a window closes for the outer
//! side). The developer guide's semantics tables are replayed row by
//! row (all records share one key).

mod common;

use common::*;
use runnel_streams::{
    Consumed, JoinWindows, KStream, KTable, Produced, Stored, StreamJoined, StreamsBuilder,
};

fn show(l: Option<&str>, r: Option<&str>) -> String {
    format!("[{}, {}]", l.unwrap_or("null"), r.unwrap_or("null"))
}

// Stream–table joins.

fn stream_table(left_join: bool) -> StreamsBuilder {
    let b = StreamsBuilder::new();
    let table: KTable<Option<String>, String> = b.table(
        "right",
        Consumed::with(ns(), s()),
        Stored::as_("right-store"),
    );
    let stream = b.stream("left", Consumed::with(ns(), s()));
    let joined = if left_join {
        stream.left_join_table(&table, ns(), |v: &String, t: Option<&String>| {
            show(Some(v), t.map(String::as_str))
        })
    } else {
        stream.join_table(&table, ns(), |v: &String, t: &String| {
            show(Some(v), Some(t))
        })
    };
    joined.to("out", Produced::with(ns(), s()));
    b
}

/// The input rows the guide's three semantics tables share: `(time,
/// side, value)`, all of one key (`None`: a null value, for a table a
/// tombstone).
const GUIDE_ROWS: [(i64, &str, Option<&str>); 15] = [
    (1, "left", None),
    (2, "right", None),
    (3, "left", Some("A")),
    (4, "right", Some("a")),
    (5, "left", Some("B")),
    (6, "right", Some("b")),
    (7, "left", None),
    (8, "right", None),
    (9, "left", Some("C")),
    (10, "right", Some("c")),
    (11, "right", None),
    (12, "left", None),
    (13, "right", None),
    (14, "right", Some("d")),
    (15, "left", Some("D")),
];

fn replay_stream_table(left_join: bool) -> Vec<Row> {
    let mut d = driver(stream_table(left_join));
    for (ts, side, value) in GUIDE_ROWS {
        // A null stream value cannot be read with a plain value serde:
        // those rows are left out.
        if side == "right" || value.is_some() {
            send(&mut d, side, Some("k"), value, ts);
        }
    }
    strings(&mut d, "out")
}

fn at(v: &str, ts: i64) -> Row {
    (Some("k".to_string()), Some(v.to_string()), ts)
}

#[test]
fn a_stream_table_inner_join_follows_the_developer_guides_table() {
    assert_eq!(
        replay_stream_table(false),
        vec![at("[B, a]", 5), at("[D, d]", 15)]
    );
}

#[test]
fn a_stream_table_left_join_follows_the_developer_guides_table() {
    assert_eq!(
        replay_stream_table(true),
        vec![
            at("[A, null]", 3),
            at("[B, a]", 5),
            at("[C, null]", 9),
            at("[D, d]", 15)
        ]
    );
}

#[test]
fn a_stream_table_join_result_keeps_the_stream_records_timestamp_and_headers() {
    let mut d = driver(stream_table(false));
    send(&mut d, "right", Some("k"), Some("row"), 100);
    let headers = vec![("h".to_string(), Some(b"1".to_vec()))];
    d.pipe_raw("left", Some(b"k"), Some(b"v"), 7, &headers)
        .unwrap();
    let out = d.read_raw("out");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].value.as_deref(), Some(&b"[v, row]"[..]));
    assert_eq!(out[0].timestamp, 7);
    assert_eq!(out[0].headers, headers);
}

#[test]
fn a_stream_record_with_a_null_key_is_dropped_by_an_inner_join_and_counted() {
    let mut d = driver(stream_table(false));
    send(&mut d, "right", Some("k"), Some("row"), 1);
    send(&mut d, "left", None, Some("v"), 2);
    assert!(strings(&mut d, "out").is_empty());
    assert_eq!(d.metrics().records_skipped, 1);
}

#[test]
fn a_stream_record_with_a_null_key_is_kept_by_a_left_join_without_a_row() {
    let mut d = driver(stream_table(true));
    send(&mut d, "left", None, Some("v"), 2);
    assert_eq!(
        strings(&mut d, "out"),
        vec![(None, Some("[v, null]".to_string()), 2)]
    );
    assert_eq!(d.metrics().records_skipped, 0);
}

#[test]
fn table_updates_and_deletes_never_trigger_a_stream_table_join() {
    let mut d = driver(stream_table(true));
    send(&mut d, "right", Some("k"), Some("a"), 1);
    send(&mut d, "right", Some("k"), Some("b"), 2);
    send(&mut d, "right", Some("k"), None, 3);
    assert!(strings(&mut d, "out").is_empty());
}

// Table–table joins.

fn table_table(kind: &str) -> StreamsBuilder {
    let b = StreamsBuilder::new();
    let left: KTable<String, String> =
        b.table("left", Consumed::with(s(), s()), Stored::as_("left-store"));
    let right: KTable<String, String> = b.table(
        "right",
        Consumed::with(s(), s()),
        Stored::as_("right-store"),
    );
    let joined = match kind {
        "inner" => left.join(&right, |l: &String, r: &String| show(Some(l), Some(r))),
        "left" => left.left_join(&right, |l: &String, r: Option<&String>| {
            show(Some(l), r.map(String::as_str))
        }),
        _ => left.outer_join(&right, |l: Option<&String>, r: Option<&String>| {
            show(l.map(String::as_str), r.map(String::as_str))
        }),
    };
    joined.to_stream().to("out", Produced::with(s(), ns()));
    b
}

fn replay_table_table(kind: &str) -> Vec<Row> {
    let mut d = driver(table_table(kind));
    for (ts, side, value) in GUIDE_ROWS {
        send(&mut d, side, Some("k"), value, ts);
    }
    strings(&mut d, "out")
}

fn deleted(ts: i64) -> Row {
    (Some("k".to_string()), None, ts)
}

#[test]
fn a_table_table_inner_join_follows_the_developer_guides_table() {
    assert_eq!(
        replay_table_table("inner"),
        vec![
            at("[A, a]", 4),
            at("[B, a]", 5),
            at("[B, b]", 6),
            deleted(7),
            at("[C, c]", 10),
            deleted(11),
            at("[D, d]", 15)
        ]
    );
}

#[test]
fn a_table_table_left_join_follows_the_developer_guides_table() {
    assert_eq!(
        replay_table_table("left"),
        vec![
            at("[A, null]", 3),
            at("[A, a]", 4),
            at("[B, a]", 5),
            at("[B, b]", 6),
            deleted(7),
            at("[C, null]", 9),
            at("[C, c]", 10),
            at("[C, null]", 11),
            deleted(12),
            at("[D, d]", 15)
        ]
    );
}

#[test]
fn a_table_table_outer_join_follows_the_developer_guides_table() {
    assert_eq!(
        replay_table_table("outer"),
        vec![
            at("[A, null]", 3),
            at("[A, a]", 4),
            at("[B, a]", 5),
            at("[B, b]", 6),
            at("[null, b]", 7),
            deleted(8),
            at("[C, null]", 9),
            at("[C, c]", 10),
            at("[C, null]", 11),
            deleted(12),
            at("[null, d]", 14),
            at("[D, d]", 15)
        ]
    );
}

#[test]
fn a_table_table_join_of_a_derived_table_reads_its_materialized_store() {
    let b = StreamsBuilder::new();
    let left: KTable<String, String> =
        b.table("left", Consumed::with(s(), s()), Stored::as_("left-store"));
    let right: KTable<String, String> = b.table(
        "right",
        Consumed::with(s(), s()),
        Stored::as_("right-store"),
    );
    let upper = right
        .map_values(|_, v| v.to_uppercase())
        .materialize(Stored::as_("upper"), s());
    left.join(&upper, |l: &String, r: &String| format!("{l}{r}"))
        .to_stream()
        .to("out", Produced::with(s(), ns()));
    let mut d = driver(b);
    kv(&mut d, "right", "k", "x", 1);
    kv(&mut d, "left", "k", "a", 2);
    kv(&mut d, "right", "k", "y", 3);
    assert_eq!(
        pairs(&mut d, "out"),
        vec![("k".into(), "aX".into()), ("k".into(), "aY".into())]
    );
}

#[test]
fn a_table_table_join_ignores_records_without_a_key() {
    let b = StreamsBuilder::new();
    let left: KTable<Option<String>, String> =
        b.table("left", Consumed::with(ns(), s()), Stored::as_("left-store"));
    let right: KTable<Option<String>, String> = b.table(
        "right",
        Consumed::with(ns(), s()),
        Stored::as_("right-store"),
    );
    left.outer_join(&right, |l: Option<&String>, r: Option<&String>| {
        show(l.map(String::as_str), r.map(String::as_str))
    })
    .to_stream()
    .to("out", Produced::with(ns(), ns()));
    let mut d = driver(b);
    send(&mut d, "left", None, Some("A"), 1);
    send(&mut d, "right", None, Some("a"), 2);
    assert!(strings(&mut d, "out").is_empty());
    assert_eq!(d.metrics().records_skipped, 2);
}

// Stream–stream joins.

/// `left` and `right` joined with nullable values (so null values can be
/// piped), written to `out`.
fn stream_stream(kind: &str, windows: JoinWindows) -> StreamsBuilder {
    let b = StreamsBuilder::new();
    let left: KStream<String, Option<String>> = b.stream("left", Consumed::with(s(), ns()));
    let right: KStream<String, Option<String>> = b.stream("right", Consumed::with(s(), ns()));
    let serdes = StreamJoined::with(s(), ns(), ns()).with_name("j");
    let text = |v: Option<&Option<String>>| v.map(|v| v.clone().expect("no null values join"));
    let joined = match kind {
        "inner" => left.join(
            &right,
            move |l: &Option<String>, r: &Option<String>| {
                show(text(Some(l)).as_deref(), text(Some(r)).as_deref())
            },
            windows,
            serdes,
        ),
        "left" => left.left_join(
            &right,
            move |l: &Option<String>, r: Option<&Option<String>>| {
                show(text(Some(l)).as_deref(), text(r).as_deref())
            },
            windows,
            serdes,
        ),
        _ => left.outer_join(
            &right,
            move |l: Option<&Option<String>>, r: Option<&Option<String>>| {
                show(text(l).as_deref(), text(r).as_deref())
            },
            windows,
            serdes,
        ),
    };
    joined.to("out", Produced::with(s(), s()));
    b
}

/// The guide's stream–stream rows after the shared ones (window 15,
/// grace 5). The guide shows the unmatched E, F and f emitted at exactly
/// 60, 80 and 100; a record of that time could still join them (it is
/// just within the grace), so they are emitted once stream time is past
/// it: here the records that advance it come 1, 2 and 3 ms later.
const STREAM_ROWS_AFTER: [(i64, &str, Option<&str>); 5] = [
    (40, "left", Some("E")),
    (61, "left", Some("F")),
    (82, "right", Some("f")),
    (103, "left", Some("G")),
    (104, "left", None),
];

fn replay_stream_stream(kind: &str) -> (Vec<Row>, u64) {
    let mut d = driver(stream_stream(
        kind,
        JoinWindows::of_time_difference_with_grace(15, 5),
    ));
    for (ts, side, value) in GUIDE_ROWS.into_iter().chain(STREAM_ROWS_AFTER) {
        send(&mut d, side, Some("k"), value, ts);
    }
    (strings(&mut d, "out"), d.metrics().records_skipped)
}

fn inner_rows() -> Vec<Row> {
    vec![
        at("[A, a]", 4),
        at("[B, a]", 5),
        at("[A, b]", 6),
        at("[B, b]", 6),
        at("[C, a]", 9),
        at("[C, b]", 9),
        at("[A, c]", 10),
        at("[B, c]", 10),
        at("[C, c]", 10),
        at("[A, d]", 14),
        at("[B, d]", 14),
        at("[C, d]", 14),
        at("[D, a]", 15),
        at("[D, b]", 15),
        at("[D, c]", 15),
        at("[D, d]", 15),
    ]
}

#[test]
fn a_stream_stream_inner_join_follows_the_developer_guides_table() {
    let (out, skipped) = replay_stream_stream("inner");
    assert_eq!(out, inner_rows());
    assert_eq!(skipped, 8, "the null values");
}

#[test]
fn a_stream_stream_left_join_follows_the_developer_guides_table() {
    let mut expected = inner_rows();
    expected.push(at("[E, null]", 40)); // when F at 61 passes 40 + 15 + 5
    expected.push(at("[F, null]", 61)); // when f at 82 passes 61 + 15 + 5
    let (out, skipped) = replay_stream_stream("left");
    assert_eq!(out, expected);
    assert_eq!(skipped, 8);
}

#[test]
fn a_stream_stream_outer_join_follows_the_developer_guides_table() {
    let mut expected = inner_rows();
    expected.push(at("[E, null]", 40));
    expected.push(at("[F, null]", 61));
    expected.push(at("[null, f]", 82)); // when G at 103 passes 82 + 15 + 5
    let (out, _) = replay_stream_stream("outer");
    assert_eq!(out, expected);
}

#[test]
fn an_unmatched_record_can_still_join_until_stream_time_passes_its_window_end_plus_grace() {
    // E at 40 (window 15, grace 5): at stream time 60, a right record at
    // 55 is 5 ms late, within the grace, and within E's window.
    let mut d = driver(stream_stream(
        "left",
        JoinWindows::of_time_difference_with_grace(15, 5),
    ));
    kv(&mut d, "left", "k", "E", 40);
    kv(&mut d, "left", "other", "F", 60);
    assert!(strings(&mut d, "out").is_empty(), "E is not closed at 60");
    kv(&mut d, "right", "k", "e", 55);
    kv(&mut d, "left", "other", "G", 200);
    let out = strings(&mut d, "out");
    assert_eq!(out[0], at("[E, e]", 55));
    assert!(
        !out.iter()
            .any(|(_, v, _)| v.as_deref() == Some("[E, null]")),
        "{out:?}"
    );
}

#[test]
fn a_left_join_never_emits_an_unmatched_result_for_a_record_that_later_joins() {
    let mut d = driver(stream_stream(
        "left",
        JoinWindows::of_time_difference_with_grace(10, 5),
    ));
    kv(&mut d, "left", "k", "A", 0);
    kv(&mut d, "left", "x", "X", 12); // stream time 12: A's window is open
    kv(&mut d, "right", "k", "a", 9);
    assert_eq!(strings(&mut d, "out"), vec![at("[A, a]", 9)]);
    kv(&mut d, "left", "x", "Y", 1_000);
    let late: Vec<_> = strings(&mut d, "out")
        .into_iter()
        .filter(|(k, _, _)| k.as_deref() == Some("k"))
        .collect();
    assert!(late.is_empty(), "{late:?}");
}

#[test]
fn an_unmatched_left_record_is_emitted_when_stream_time_passes_its_window_end_plus_grace() {
    let mut d = driver(stream_stream(
        "left",
        JoinWindows::of_time_difference_with_grace(10, 5),
    ));
    kv(&mut d, "left", "k", "A", 20);
    kv(&mut d, "right", "x", "clock", 35); // 35 = 20 + 10 + 5: not yet
    assert!(strings(&mut d, "out").is_empty());
    kv(&mut d, "right", "x", "clock", 36);
    assert_eq!(strings(&mut d, "out"), vec![at("[A, null]", 20)]);
    kv(&mut d, "right", "x", "clock", 100);
    assert!(strings(&mut d, "out").is_empty(), "emitted once");
}

#[test]
fn a_record_filtered_out_before_the_join_does_not_advance_the_joins_stream_time() {
    let b = StreamsBuilder::new();
    let left: KStream<String, String> = b.stream("left", Consumed::with(s(), s()));
    let right: KStream<String, String> = b.stream("right", Consumed::with(s(), s()));
    left.filter(|_, v| v != "skip")
        .left_join(
            &right,
            |l: &String, r: Option<&String>| show(Some(l), r.map(String::as_str)),
            JoinWindows::of_time_difference_and_no_grace(10),
            StreamJoined::with(s(), s(), s()),
        )
        .to("out", Produced::with(s(), s()));
    let mut d = driver(b);
    kv(&mut d, "left", "k", "A", 0);
    kv(&mut d, "left", "x", "skip", 1_000);
    kv(&mut d, "right", "k", "a", 5);
    assert_eq!(strings(&mut d, "out"), vec![at("[A, a]", 5)]);
    assert_eq!(d.metrics().late_records_dropped, 0);
}

#[test]
fn an_outer_join_emits_an_unmatched_right_record_after_its_mirrored_window_closes() {
    // before 2, after 10: a right record at r joins left records in
    // [r - 10, r + 2], so it is unmatched for good once stream time is
    // past r + 2 + grace.
    let windows = JoinWindows::of_time_difference_and_no_grace(0)
        .before(2)
        .after(10);
    let mut d = driver(stream_stream("outer", windows));
    kv(&mut d, "right", "k", "b", 100);
    kv(&mut d, "left", "x", "clock", 102);
    assert!(strings(&mut d, "out").is_empty());
    kv(&mut d, "left", "x", "clock", 103);
    let out = strings(&mut d, "out");
    assert_eq!(
        out.into_iter()
            .filter(|(k, _, _)| k.as_deref() == Some("k"))
            .collect::<Vec<_>>(),
        vec![at("[null, b]", 100)]
    );
}

#[test]
fn asymmetric_join_windows_bound_the_other_side_before_and_after() {
    // The right record may be up to 10 ms before the left one and not
    // after it: left.ts - 10 <= right.ts <= left.ts.
    let windows = JoinWindows::of_time_difference_and_no_grace(0).before(10);
    let records = [
        ("right", "r9", 9),
        ("right", "r10", 10),
        ("left", "A", 20),
        ("right", "r20", 20),
        ("right", "r21", 21),
    ];
    assert_eq!(
        inner_join_of(windows, &records),
        vec![at("[A, r10]", 20), at("[A, r20]", 20)]
    );
}

/// What an inner join with `windows` writes for `(side, value, time)`
/// records, all of key `k`.
fn inner_join_of(windows: JoinWindows, records: &[(&str, &str, i64)]) -> Vec<Row> {
    let mut d = driver(stream_stream("inner", windows));
    for (side, value, ts) in records {
        kv(&mut d, side, "k", value, *ts);
    }
    strings(&mut d, "out")
}

#[test]
fn a_stream_stream_join_result_carries_the_later_of_both_timestamps() {
    let windows = JoinWindows::of_time_difference_with_grace(10, 10);
    // a is out of order, earlier than A.
    let records = [("left", "A", 10), ("right", "a", 4), ("right", "b", 17)];
    assert_eq!(
        inner_join_of(windows, &records),
        vec![at("[A, a]", 10), at("[A, b]", 17)]
    );
}

#[test]
fn records_with_the_same_key_and_timestamp_on_one_side_all_join() {
    let windows = JoinWindows::of_time_difference_and_no_grace(5);
    let records = [("left", "A1", 10), ("left", "A2", 10), ("right", "a", 10)];
    assert_eq!(
        inner_join_of(windows, &records),
        vec![at("[A1, a]", 10), at("[A2, a]", 10)]
    );
}

#[test]
fn a_record_later_than_its_window_and_grace_is_dropped_counted_and_copied_to_the_late_topic() {
    let mut d = driver(stream_stream(
        "left",
        JoinWindows::of_time_difference_with_grace(10, 5),
    ))
    .with_late_records_topic("late");
    kv(&mut d, "left", "clock", "C", 30);
    kv(&mut d, "left", "k", "A", 15); // 15 + 10 + 5 = 30: accepted
    kv(&mut d, "left", "k", "B", 14); // 14 + 10 + 5 < 30: late
    kv(&mut d, "right", "k", "a", 20); // within 10 of both A and B
    assert_eq!(strings(&mut d, "out"), vec![at("[A, a]", 20)]);
    assert_eq!(d.metrics().late_records_dropped, 1);
    assert_eq!(
        strings(&mut d, "late"),
        vec![(Some("k".into()), Some("B".into()), 14)]
    );
}

fn nullable_key_stream_stream(kind: &str) -> StreamsBuilder {
    let b = StreamsBuilder::new();
    let left: KStream<Option<String>, String> = b.stream("left", Consumed::with(ns(), s()));
    let right: KStream<Option<String>, String> = b.stream("right", Consumed::with(ns(), s()));
    let serdes = StreamJoined::with(ns(), s(), s());
    let windows = JoinWindows::of_time_difference_and_no_grace(10);
    let joined = match kind {
        "inner" => left.join(
            &right,
            |l: &String, r: &String| show(Some(l), Some(r)),
            windows,
            serdes,
        ),
        "left" => left.left_join(
            &right,
            |l: &String, r: Option<&String>| show(Some(l), r.map(String::as_str)),
            windows,
            serdes,
        ),
        _ => left.outer_join(
            &right,
            |l: Option<&String>, r: Option<&String>| {
                show(l.map(String::as_str), r.map(String::as_str))
            },
            windows,
            serdes,
        ),
    };
    joined.to("out", Produced::with(ns(), s()));
    b
}

#[test]
fn an_inner_stream_stream_join_skips_and_counts_records_without_a_key() {
    let mut d = driver(nullable_key_stream_stream("inner"));
    send(&mut d, "left", None, Some("A"), 1);
    send(&mut d, "right", None, Some("a"), 2);
    assert!(strings(&mut d, "out").is_empty());
    assert_eq!(d.metrics().records_skipped, 2);
}

#[test]
fn a_left_stream_stream_join_passes_a_left_record_without_a_key_on_at_once() {
    let mut d = driver(nullable_key_stream_stream("left"));
    send(&mut d, "left", None, Some("A"), 1);
    send(&mut d, "right", None, Some("a"), 2);
    assert_eq!(
        strings(&mut d, "out"),
        vec![(None, Some("[A, null]".into()), 1)]
    );
    assert_eq!(d.metrics().records_skipped, 1, "the right one");
}

#[test]
fn an_outer_stream_stream_join_passes_records_without_a_key_on_from_both_sides() {
    let mut d = driver(nullable_key_stream_stream("outer"));
    send(&mut d, "left", None, Some("A"), 1);
    send(&mut d, "right", None, Some("a"), 2);
    assert_eq!(
        strings(&mut d, "out"),
        vec![
            (None, Some("[A, null]".into()), 1),
            (None, Some("[null, a]".into()), 2)
        ]
    );
    assert_eq!(d.metrics().records_skipped, 0);
}

#[test]
fn a_stream_stream_joins_buffers_are_named_logged_stores() {
    let b = stream_stream("outer", JoinWindows::of_time_difference_and_no_grace(5));
    let mut topics: Vec<_> = b
        .build()
        .unwrap()
        .internal_topics(APP)
        .into_iter()
        .map(|t| (t.name, t.compacted))
        .collect();
    topics.sort();
    assert_eq!(
        topics,
        vec![
            ("app-j-other-join-store-changelog".to_string(), true),
            ("app-j-outer-shared-join-store-changelog".to_string(), true),
            ("app-j-this-join-store-changelog".to_string(), true)
        ]
    );
}

#[test]
fn records_of_one_side_read_from_two_topics_at_the_same_offset_both_join() {
    let b = StreamsBuilder::new();
    let left: KStream<String, String> = b.streams(&["l1", "l2"], Consumed::with(s(), s()));
    let right: KStream<String, String> = b.stream("right", Consumed::with(s(), s()));
    left.join(
        &right,
        |l: &String, r: &String| show(Some(l), Some(r)),
        JoinWindows::of_time_difference_and_no_grace(5),
        StreamJoined::with(s(), s(), s()),
    )
    .to("out", Produced::with(s(), s()));
    let mut d = driver(b);
    kv(&mut d, "l1", "k", "A1", 10); // offset 0 of l1
    kv(&mut d, "l2", "k", "A2", 10); // offset 0 of l2
    kv(&mut d, "right", "k", "a", 10);
    assert_eq!(
        strings(&mut d, "out"),
        vec![at("[A1, a]", 10), at("[A2, a]", 10)]
    );
}
