//! Sliding windows (KIP-450): the windows records make exist, their
//! aggregates after in-order, out-of-order and simultaneous records, the
//! shared window of the first `diff` ms, the grace period on both sides
//! of its boundary, and suppression to final results.

mod common;

use common::*;
use runnel_streams::{serdes, Consumed, KStream, Produced, SlidingWindows, Stored, StreamsBuilder};

fn events(b: &StreamsBuilder) -> KStream<String, String> {
    b.stream("events", Consumed::with(s(), s()))
}

/// A sliding count of `events` written to `counts`, kept in `store`.
fn sliding_count(windows: SlidingWindows) -> StreamsBuilder {
    let b = StreamsBuilder::new();
    events(&b)
        .group_by_key(s(), s())
        .windowed_by_sliding(windows)
        .count(Stored::as_("store"))
        .to_stream()
        .to("counts", Produced::with(serdes::windowed(s()), nl()));
    b
}

fn row(key: &str, window: (i64, i64), value: i64, ts: i64) -> WindowedRow<i64> {
    (key.to_string(), window, Some(value), ts)
}

/// Every window of `key` in the store, as `(start, count)`.
fn stored(d: &runnel_streams::TopologyTestDriver, key: &str) -> Vec<(i64, i64)> {
    d.fetch_windows("store", &s(), &l(), &key.to_string(), i64::MIN, i64::MAX)
}

#[test]
fn the_kips_example_makes_five_windows_each_a_distinct_set_of_records() {
    // SlidingWindows' documentation: time difference 5000, records at
    // 8000, 9200 and 12400.
    let mut d = driver(sliding_count(
        SlidingWindows::of_time_difference_and_no_grace(5_000),
    ));
    kv(&mut d, "events", "A", "1", 8_000);
    kv(&mut d, "events", "A", "2", 9_200);
    kv(&mut d, "events", "A", "3", 12_400);
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![
            row("A", (3_000, 8_000), 1, 8_000),
            row("A", (4_200, 9_200), 2, 9_200),
            row("A", (8_001, 13_001), 1, 9_200),
            row("A", (7_400, 12_400), 3, 12_400),
            row("A", (8_001, 13_001), 2, 12_400),
            row("A", (9_201, 14_201), 1, 12_400),
        ]
    );
    assert_eq!(
        stored(&d, "A"),
        vec![(3_000, 1), (4_200, 2), (7_400, 3), (8_001, 2), (9_201, 1)]
    );
    assert_eq!(d.metrics().late_records_dropped, 0);
}

#[test]
fn a_sliding_reduce_builds_new_windows_from_the_right_records() {
    let b = StreamsBuilder::new();
    events(&b)
        .group_by_key(s(), s())
        .windowed_by_sliding(SlidingWindows::of_time_difference_and_no_grace(5_000))
        .reduce(|a, v| format!("{a}{v}"), Stored::as_("reduced"))
        .to_stream()
        .to("reduced", Produced::with(serdes::windowed(s()), ns()));
    let mut d = driver(b);
    kv(&mut d, "events", "A", "1", 8_000);
    kv(&mut d, "events", "A", "2", 9_200);
    kv(&mut d, "events", "A", "3", 12_400);
    let reduced: Vec<_> = windowed_strings(&mut d, "reduced")
        .into_iter()
        .map(|(_, w, v, _)| (w, v.unwrap()))
        .collect();
    let expect = |w: (i64, i64), v: &str| (w, v.to_string());
    assert_eq!(
        reduced,
        vec![
            expect((3_000, 8_000), "1"),
            expect((4_200, 9_200), "12"),
            // The window after record 1 holds record 2 only.
            expect((8_001, 13_001), "2"),
            expect((7_400, 12_400), "123"),
            expect((8_001, 13_001), "23"),
            expect((9_201, 14_201), "3"),
        ]
    );
}

#[test]
fn a_sliding_aggregate_starts_each_new_window_from_the_initializer_or_its_records() {
    let b = StreamsBuilder::new();
    events(&b)
        .group_by_key(s(), s())
        .windowed_by_sliding(SlidingWindows::of_time_difference_and_no_grace(10))
        .aggregate(
            || 100,
            |_, v: String, acc: i64| acc + v.parse::<i64>().unwrap(),
            l(),
            Stored::as_("sums"),
        )
        .to_stream()
        .to("sums", Produced::with(serdes::windowed(s()), nl()));
    let mut d = driver(b);
    kv(&mut d, "events", "k", "1", 20);
    kv(&mut d, "events", "k", "2", 25);
    assert_eq!(
        windowed_longs(&mut d, "sums"),
        vec![
            row("k", (10, 20), 101, 20),
            row("k", (15, 25), 103, 25),
            row("k", (21, 31), 102, 25),
        ]
    );
}

#[test]
fn an_out_of_order_record_updates_the_windows_holding_it_and_makes_its_own() {
    let mut d = driver(sliding_count(
        SlidingWindows::of_time_difference_with_grace(10, 100),
    ));
    kv(&mut d, "events", "a", "e", 10);
    kv(&mut d, "events", "a", "e", 20);
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![
            row("a", (0, 10), 1, 10),
            row("a", (10, 20), 2, 20),
            row("a", (11, 21), 1, 20),
        ]
    );
    kv(&mut d, "events", "a", "e", 15);
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![
            // Its own window takes record 10 from [0, 10].
            row("a", (5, 15), 2, 15),
            row("a", (10, 20), 3, 20),
            row("a", (11, 21), 2, 20),
            // The window after it holds what came after it: record 20.
            row("a", (16, 26), 1, 20),
        ]
    );
    assert_eq!(
        stored(&d, "a"),
        vec![(0, 1), (5, 2), (10, 3), (11, 2), (16, 1)]
    );
}

#[test]
fn records_at_the_same_instant_share_their_windows() {
    let mut d = driver(sliding_count(
        SlidingWindows::of_time_difference_with_grace(10, 100),
    ));
    kv(&mut d, "events", "a", "e", 30);
    kv(&mut d, "events", "a", "e", 30);
    kv(&mut d, "events", "a", "e", 35);
    kv(&mut d, "events", "a", "e", 35);
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![
            row("a", (20, 30), 1, 30),
            row("a", (20, 30), 2, 30),
            row("a", (25, 35), 3, 35),
            row("a", (31, 41), 1, 35),
            row("a", (25, 35), 4, 35),
            row("a", (31, 41), 2, 35),
        ]
    );
    assert_eq!(stored(&d, "a"), vec![(20, 2), (25, 4), (31, 2)]);
}

#[test]
fn the_records_of_the_first_time_difference_share_the_window_starting_at_zero() {
    let mut d = driver(sliding_count(
        SlidingWindows::of_time_difference_with_grace(10, 100),
    ));
    kv(&mut d, "events", "a", "e", 3);
    kv(&mut d, "events", "a", "e", 7);
    kv(&mut d, "events", "a", "e", 10);
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![
            row("a", (0, 10), 1, 3),
            row("a", (0, 10), 2, 7),
            row("a", (4, 14), 1, 7),
            row("a", (0, 10), 3, 10),
            row("a", (4, 14), 2, 10),
            row("a", (8, 18), 1, 10),
        ]
    );
}

#[test]
fn a_record_before_the_epoch_is_skipped_not_windowed() {
    let mut d = driver(sliding_count(
        SlidingWindows::of_time_difference_and_no_grace(10),
    ));
    kv(&mut d, "events", "a", "e", -1);
    assert!(windowed_longs(&mut d, "counts").is_empty());
    assert_eq!(d.metrics().records_skipped, 1);
}

#[test]
fn a_window_takes_records_while_its_end_plus_grace_is_not_before_stream_time() {
    // diff 10, grace 5; stream time 120: windows ending at 115 or later
    // are open.
    let mut d = driver(sliding_count(
        SlidingWindows::of_time_difference_with_grace(10, 5),
    ));
    kv(&mut d, "events", "clock", "e", 120);
    kv(&mut d, "events", "x", "e", 115); // [105, 115]: 115 + 5 = 120
    kv(&mut d, "events", "y", "e", 114); // [104, 114]: 114 + 5 < 120
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![
            row("clock", (110, 120), 1, 120),
            row("x", (105, 115), 1, 115)
        ]
    );
    assert_eq!(d.metrics().late_records_dropped, 1);
    assert!(stored(&d, "y").is_empty());
}

#[test]
fn a_record_late_for_the_window_it_ends_still_updates_the_open_windows_holding_it() {
    let mut d = driver(sliding_count(
        SlidingWindows::of_time_difference_with_grace(10, 5),
    ))
    .with_late_records_topic("late");
    kv(&mut d, "events", "a", "e", 118);
    kv(&mut d, "events", "clock", "e", 120);
    windowed_longs(&mut d, "counts");
    // [100, 110] closed at 116; [108, 118] holds 110 and is open.
    kv(&mut d, "events", "a", "e", 110);
    assert_eq!(
        windowed_longs(&mut d, "counts"),
        vec![row("a", (108, 118), 2, 118), row("a", (111, 121), 1, 118)]
    );
    assert_eq!(d.metrics().late_records_dropped, 0);
    // Every window holding 104 ends by 114: all closed.
    kv(&mut d, "events", "a", "e", 104);
    assert!(windowed_longs(&mut d, "counts").is_empty());
    assert_eq!(d.metrics().late_records_dropped, 1);
    assert_eq!(
        strings(&mut d, "late"),
        vec![(Some("a".into()), Some("e".into()), 104)]
    );
}

#[test]
fn a_sliding_store_writes_its_changelog_with_each_windows_latest_timestamp() {
    let mut d = driver(sliding_count(
        SlidingWindows::of_time_difference_and_no_grace(10),
    ));
    kv(&mut d, "events", "a", "e", 20);
    let changelog = d.read_raw("app-store-changelog");
    assert_eq!(changelog.len(), 1);
    let value = changelog[0].value.clone().unwrap();
    assert_eq!(&value[..8], &20i64.to_be_bytes());
    assert_eq!(&value[8..], &1i64.to_be_bytes());
}

fn suppressed_sliding_count(windows: SlidingWindows) -> StreamsBuilder {
    let b = StreamsBuilder::new();
    events(&b)
        .group_by_key(s(), s())
        .windowed_by_sliding(windows)
        .count(Stored::as_("store"))
        .suppress_until_window_closes(Stored::as_("buffer"))
        .to_stream()
        .to("final", Produced::with(serdes::windowed(s()), nl()));
    b
}

#[test]
fn suppression_emits_each_sliding_window_once_after_stream_time_passes_its_end_plus_grace() {
    let mut d = driver(suppressed_sliding_count(
        SlidingWindows::of_time_difference_with_grace(10, 2),
    ));
    kv(&mut d, "events", "a", "e", 10);
    kv(&mut d, "events", "a", "e", 10);
    kv(&mut d, "events", "a", "e", 12); // [0, 10] is open while stream time <= 12
    assert!(windowed_longs(&mut d, "final").is_empty());
    kv(&mut d, "events", "a", "e", 13);
    assert_eq!(
        windowed_longs(&mut d, "final"),
        vec![row("a", (0, 10), 2, 10)]
    );
    // Taken by [2, 12] and [3, 13]; [0, 10] stays final.
    kv(&mut d, "events", "a", "e", 10);
    assert!(windowed_longs(&mut d, "final").is_empty());
    kv(&mut d, "events", "b", "e", 100);
    assert_eq!(
        windowed_longs(&mut d, "final"),
        vec![
            row("a", (2, 12), 4, 12),
            row("a", (3, 13), 5, 13),
            row("a", (11, 21), 2, 13),
            row("a", (13, 23), 1, 13),
        ]
    );
}

/// The windows a set of records makes, as the KIP defines them: for each
/// record its left window (`[0, diff]` for the first `diff` ms) and, if a
/// later record falls in it, the window right after it; each with the
/// number of records it holds.
fn expected_windows(records: &[i64], diff: i64) -> Vec<(i64, i64)> {
    let mut starts = std::collections::BTreeSet::new();
    for &r in records {
        starts.insert((r - diff).max(0));
        if records.iter().any(|&o| o > r && o <= r + 1 + diff) {
            starts.insert(r + 1);
        }
    }
    starts
        .into_iter()
        .map(|s| {
            let n = records.iter().filter(|&&r| s <= r && r <= s + diff).count();
            (s, n as i64)
        })
        .collect()
}

#[test]
fn any_order_of_records_ends_with_the_windows_the_kip_defines() {
    // A small deterministic generator: the seed is printed on failure.
    for seed in 1..=200u64 {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let diff = 1 + next(12) as i64;
        let count = 1 + next(12) as usize;
        let records: Vec<i64> = (0..count).map(|_| next(60) as i64).collect();
        let mut d = driver(sliding_count(
            SlidingWindows::of_time_difference_with_grace(diff, 1_000),
        ));
        for &t in &records {
            kv(&mut d, "events", "k", "e", t);
        }
        assert_eq!(
            stored(&d, "k"),
            expected_windows(&records, diff),
            "seed {seed}: diff {diff}, records {records:?}"
        );
    }
}
