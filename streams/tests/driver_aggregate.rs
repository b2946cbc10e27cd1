//! Grouping and per-key aggregations (count, reduce, aggregate): one
//! update per record, null keys and values skipped, repartitioning only
//! where the key may have changed, changelog writes.

mod common;

use common::*;
use runnel_streams::{serdes, Consumed, KStream, Produced, Stored, StreamsBuilder};

fn words(b: &StreamsBuilder) -> KStream<String, String> {
    b.stream("words", Consumed::with(s(), s()))
}

fn internal_topics(b: StreamsBuilder) -> Vec<String> {
    b.build()
        .unwrap()
        .internal_topics(APP)
        .into_iter()
        .map(|t| t.name)
        .collect()
}

#[test]
fn count_emits_the_running_count_of_a_key_on_every_record() {
    let b = StreamsBuilder::new();
    words(&b)
        .group_by_key(s(), s())
        .count(Stored::as_("counts"))
        .to_stream()
        .to("counts-out", Produced::with(s(), nl()));
    let mut d = driver(b);
    kv(&mut d, "words", "a", "x", 1);
    kv(&mut d, "words", "b", "x", 2);
    kv(&mut d, "words", "a", "y", 3);
    kv(&mut d, "words", "a", "z", 4);
    assert_eq!(
        longs(&mut d, "counts-out"),
        vec![
            ("a".into(), Some(1), 1),
            ("b".into(), Some(1), 2),
            ("a".into(), Some(2), 3),
            ("a".into(), Some(3), 4)
        ]
    );
    assert_eq!(d.get("counts", &s(), &l(), &"a".to_string()), Some(3));
    assert_eq!(d.get("counts", &s(), &l(), &"b".to_string()), Some(1));
    assert_eq!(d.get("counts", &s(), &l(), &"c".to_string()), None);
}

#[test]
fn every_store_write_of_a_count_goes_to_its_changelog_topic() {
    let b = StreamsBuilder::new();
    words(&b)
        .group_by_key(s(), s())
        .count(Stored::as_("counts"));
    let mut d = driver(b);
    kv(&mut d, "words", "a", "x", 10);
    kv(&mut d, "words", "a", "y", 20);
    let changelog = d.read_raw("app-counts-changelog");
    let rows: Vec<_> = changelog
        .iter()
        .map(|o| (o.key.clone(), o.value.clone(), o.partition, o.timestamp))
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                Some(b"a".to_vec()),
                Some(1i64.to_be_bytes().to_vec()),
                Some(0),
                10
            ),
            (
                Some(b"a".to_vec()),
                Some(2i64.to_be_bytes().to_vec()),
                Some(0),
                20
            )
        ]
    );
}

#[test]
fn a_store_without_logging_has_no_changelog_topic_and_writes_none() {
    let b = StreamsBuilder::new();
    words(&b)
        .group_by_key(s(), s())
        .count(Stored::as_("counts").without_logging());
    let topology = b.build().unwrap();
    assert!(topology.internal_topics(APP).is_empty());
    let mut d = runnel_streams::TopologyTestDriver::new(topology, APP);
    kv(&mut d, "words", "a", "x", 10);
    assert!(d.read_raw("app-counts-changelog").is_empty());
    assert_eq!(d.get("counts", &s(), &l(), &"a".to_string()), Some(1));
}

#[test]
fn reduce_keeps_the_first_value_as_is_and_combines_the_next_ones() {
    let b = StreamsBuilder::new();
    words(&b)
        .group_by_key(s(), s())
        .reduce(|acc, v| format!("{acc}+{v}"), Stored::as_("joined"))
        .to_stream()
        .to("out", Produced::with(s(), ns()));
    let mut d = driver(b);
    kv(&mut d, "words", "k", "a", 1);
    kv(&mut d, "words", "k", "b", 2);
    kv(&mut d, "words", "j", "c", 3);
    kv(&mut d, "words", "k", "d", 4);
    assert_eq!(
        pairs(&mut d, "out"),
        vec![
            ("k".into(), "a".into()),
            ("k".into(), "a+b".into()),
            ("j".into(), "c".into()),
            ("k".into(), "a+b+d".into())
        ]
    );
    assert_eq!(
        d.get("joined", &s(), &s(), &"k".to_string()),
        Some("a+b+d".to_string())
    );
}

#[test]
fn aggregate_starts_each_key_from_the_initializer_and_folds_every_value_in() {
    let b = StreamsBuilder::new();
    words(&b)
        .group_by_key(s(), s())
        .aggregate(
            || 100,
            |k: &String, v: String, acc: i64| acc + v.len() as i64 + k.len() as i64,
            l(),
            Stored::as_("lengths"),
        )
        .to_stream()
        .to("out", Produced::with(s(), nl()));
    let mut d = driver(b);
    kv(&mut d, "words", "k", "abc", 1);
    kv(&mut d, "words", "kk", "a", 2);
    kv(&mut d, "words", "k", "ab", 3);
    assert_eq!(
        longs(&mut d, "out"),
        vec![
            ("k".into(), Some(104), 1),
            ("kk".into(), Some(103), 2),
            ("k".into(), Some(107), 3)
        ]
    );
}

#[test]
fn the_old_value_of_each_update_lets_a_filter_delete_a_key_that_stops_matching() {
    // count(k) goes 1, 2, 3, 4: the filter keeps counts below 3, so the
    // third record must delete the row, which it can only know from the
    // old count (2) it replaces; the fourth changes nothing downstream.
    let b = StreamsBuilder::new();
    words(&b)
        .group_by_key(s(), s())
        .count(Stored::as_("counts"))
        .filter(|_, c| *c < 3)
        .to_stream()
        .to("small", Produced::with(s(), nl()));
    let mut d = driver(b);
    for ts in 1..=4 {
        kv(&mut d, "words", "k", "w", ts);
    }
    assert_eq!(
        longs(&mut d, "small"),
        vec![
            ("k".into(), Some(1), 1),
            ("k".into(), Some(2), 2),
            ("k".into(), None, 3)
        ]
    );
}

#[test]
fn records_with_a_null_key_or_a_null_value_are_skipped_and_counted() {
    let b = StreamsBuilder::new();
    b.stream("in", Consumed::with(ns(), ns()))
        .group_by_key(ns(), ns())
        .count(Stored::as_("counts"))
        .to_stream()
        .to("out", Produced::with(ns(), nl()));
    let mut d = driver(b);
    send(&mut d, "in", None, Some("v"), 1);
    send(&mut d, "in", Some("k"), None, 2);
    send(&mut d, "in", None, None, 3);
    send(&mut d, "in", Some("k"), Some("v"), 4);
    assert_eq!(
        d.read_key_values("out", &ns(), &nl()).unwrap(),
        vec![(Some("k".to_string()), Some(1))]
    );
    let m = d.metrics();
    assert_eq!(m.records_skipped, 3);
    assert_eq!(m.records_processed, 4);
    assert_eq!(m.records_failed, 0);
    assert_eq!(d.read_raw("app-counts-changelog").len(), 1);
}

#[test]
fn a_reduce_also_skips_null_values_instead_of_reducing_them() {
    let b = StreamsBuilder::new();
    b.stream("in", Consumed::with(s(), ns()))
        .group_by_key(s(), ns())
        .reduce(
            |a, b| Some(format!("{}{}", a.unwrap(), b.unwrap())),
            Stored::as_("r"),
        )
        .to_stream()
        .to("out", Produced::with(s(), serdes::nullable(ns())));
    let mut d = driver(b);
    send(&mut d, "in", Some("k"), Some("a"), 1);
    send(&mut d, "in", Some("k"), None, 2);
    send(&mut d, "in", Some("k"), Some("b"), 3);
    assert_eq!(
        pairs(&mut d, "out"),
        vec![("k".into(), "a".into()), ("k".into(), "ab".into())]
    );
    assert_eq!(d.metrics().records_skipped, 1);
}

#[test]
fn grouping_by_an_unchanged_key_does_not_repartition() {
    let b = StreamsBuilder::new();
    words(&b)
        .filter(|_, v| !v.is_empty())
        .map_values(|v| v.to_uppercase())
        .map_values_with_key(|_, v| v)
        .flat_map_values(|v: String| vec![v])
        .peek(|_, _| {})
        .group_by_key(s(), s())
        .count(Stored::as_("counts"));
    assert_eq!(internal_topics(b), vec!["app-counts-changelog".to_string()]);
}

type Rekey = fn(&KStream<String, String>) -> KStream<String, String>;

#[test]
fn grouping_after_an_operator_that_may_change_the_key_repartitions_through_the_stores_topic() {
    let key_changers: Vec<(&str, Rekey)> = vec![
        ("map", |st| st.map(|k, v| (k, v))),
        ("select_key", |st| st.select_key(|k, _| k.clone())),
        ("flat_map", |st| st.flat_map(|k, v| vec![(k, v)])),
        ("merge", |st| st.merge(&st.select_key(|k, _| k.clone()))),
    ];
    for (name, change) in key_changers {
        let b = StreamsBuilder::new();
        change(&words(&b))
            .filter(|_, _| true)
            .group_by_key(s(), s())
            .count(Stored::as_("counts"));
        let topology = b.build().unwrap();
        assert_eq!(topology.subtopologies().len(), 2, "{name}");
        let mut topics: Vec<_> = topology
            .internal_topics(APP)
            .into_iter()
            .map(|t| t.name)
            .collect();
        topics.sort();
        assert_eq!(
            topics,
            vec![
                "app-counts-changelog".to_string(),
                "app-counts-repartition".to_string()
            ],
            "{name}"
        );
    }
}

#[test]
fn an_explicit_repartition_means_the_grouping_need_not_repartition_again() {
    let b = StreamsBuilder::new();
    words(&b)
        .select_key(|_, v| v.clone())
        .repartition(Some("by-word"), s(), s())
        .group_by_key(s(), s())
        .count(Stored::as_("counts"));
    let mut topics = internal_topics(b);
    topics.sort();
    assert_eq!(
        topics,
        vec![
            "app-by-word-repartition".to_string(),
            "app-counts-changelog".to_string()
        ]
    );
}

#[test]
fn group_by_sends_records_through_the_repartition_topic_under_their_new_key() {
    let b = StreamsBuilder::new();
    words(&b)
        .group_by(|_, v: &String| v.clone(), s(), s())
        .count(Stored::as_("word-counts"))
        .to_stream()
        .to("out", Produced::with(s(), nl()));
    let mut d = driver(b);
    kv(&mut d, "words", "line-1", "cat", 5);
    kv(&mut d, "words", "line-2", "dog", 6);
    kv(&mut d, "words", "line-3", "cat", 7);
    assert_eq!(
        strings(&mut d, "app-word-counts-repartition"),
        vec![
            (Some("cat".into()), Some("cat".into()), 5),
            (Some("dog".into()), Some("dog".into()), 6),
            (Some("cat".into()), Some("cat".into()), 7)
        ]
    );
    assert_eq!(
        longs(&mut d, "out"),
        vec![
            ("cat".into(), Some(1), 5),
            ("dog".into(), Some(1), 6),
            ("cat".into(), Some(2), 7)
        ]
    );
}

#[test]
fn group_by_always_repartitions_even_when_the_key_is_kept() {
    let b = StreamsBuilder::new();
    words(&b)
        .group_by(|k: &String, _| k.clone(), s(), s())
        .count(Stored::as_("counts"));
    let mut topics = internal_topics(b);
    topics.sort();
    assert_eq!(
        topics,
        vec![
            "app-counts-changelog".to_string(),
            "app-counts-repartition".to_string()
        ]
    );
}

#[test]
fn a_group_by_that_yields_a_null_key_drops_the_record_at_the_aggregation() {
    let b = StreamsBuilder::new();
    words(&b)
        .group_by(
            |_, v: &String| (!v.is_empty()).then(|| v.clone()),
            ns(),
            s(),
        )
        .count(Stored::as_("counts"))
        .to_stream()
        .to("out", Produced::with(ns(), nl()));
    let mut d = driver(b);
    kv(&mut d, "words", "k", "", 1);
    kv(&mut d, "words", "k", "w", 2);
    assert_eq!(
        d.read_key_values("out", &ns(), &nl()).unwrap(),
        vec![(Some("w".to_string()), Some(1))]
    );
    assert_eq!(d.metrics().records_skipped, 1);
}

#[test]
fn word_count_over_lines_counts_every_word_across_records() {
    let b = StreamsBuilder::new();
    b.stream("lines", Consumed::with(ns(), s()))
        .flat_map_values(|l: String| {
            l.split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .group_by(|_, w: &String| w.clone(), s(), s())
        .count(Stored::as_("counts"));
    let mut d = driver(b);
    send(&mut d, "lines", None, Some("The cat and the hat"), 1);
    send(&mut d, "lines", None, Some("the end"), 2);
    for (word, n) in [("the", 3), ("cat", 1), ("and", 1), ("hat", 1), ("end", 1)] {
        assert_eq!(
            d.get("counts", &s(), &l(), &word.to_string()),
            Some(n),
            "{word}"
        );
    }
}
