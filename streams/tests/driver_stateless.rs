//! Stateless operators through the test driver: each record in, the
//! records it becomes out, with its timestamp and headers.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use runnel_streams::kstream::Predicate;
use runnel_streams::{serdes, Consumed, Produced, StreamsBuilder};

fn strings_in(b: &StreamsBuilder, topic: &str) -> runnel_streams::KStream<String, String> {
    b.stream(topic, Consumed::with(s(), s()))
}

fn to_out(stream: &runnel_streams::KStream<String, String>, topic: &str) {
    stream.to(topic, Produced::with(s(), s()));
}

#[test]
fn filter_keeps_the_matching_records_and_filter_not_the_others() {
    let b = StreamsBuilder::new();
    let input = strings_in(&b, "fruit");
    to_out(&input.filter(|_, v| v.starts_with('a')), "a-fruit");
    to_out(&input.filter_not(|_, v| v.starts_with('a')), "other-fruit");
    let mut d = driver(b);
    kv(&mut d, "fruit", "1", "apple", 10);
    kv(&mut d, "fruit", "2", "banana", 20);
    kv(&mut d, "fruit", "3", "avocado", 30);
    assert_eq!(
        strings(&mut d, "a-fruit"),
        vec![
            (Some("1".into()), Some("apple".into()), 10),
            (Some("3".into()), Some("avocado".into()), 30)
        ]
    );
    assert_eq!(
        strings(&mut d, "other-fruit"),
        vec![(Some("2".into()), Some("banana".into()), 20)]
    );
}

#[test]
fn map_replaces_key_and_value_and_keeps_timestamp_and_headers() {
    let b = StreamsBuilder::new();
    to_out(
        &strings_in(&b, "in").map(|k, v| (v, format!("from {k}"))),
        "out",
    );
    let mut d = driver(b);
    let headers = vec![
        ("trace".to_string(), Some(b"t-1".to_vec())),
        ("empty".to_string(), None),
        ("trace".to_string(), Some(b"t-2".to_vec())),
    ];
    d.pipe_raw("in", Some(b"k"), Some(b"v"), 1_234, &headers)
        .unwrap();
    let out = d.read_output("out", &s(), &s()).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].key.as_str(), out[0].value.as_str()),
        ("v", "from k")
    );
    assert_eq!(out[0].timestamp, 1_234);
    assert_eq!(out[0].headers, headers);
}

#[test]
fn map_values_keeps_the_key_and_map_values_with_key_sees_it() {
    let b = StreamsBuilder::new();
    let input = strings_in(&b, "in");
    to_out(&input.map_values(|v| v.to_uppercase()), "upper");
    to_out(
        &input.map_values_with_key(|k, v| format!("{k}={v}")),
        "keyed",
    );
    let mut d = driver(b);
    kv(&mut d, "in", "a", "x", 5);
    kv(&mut d, "in", "b", "y", 6);
    assert_eq!(
        strings(&mut d, "upper"),
        vec![
            (Some("a".into()), Some("X".into()), 5),
            (Some("b".into()), Some("Y".into()), 6)
        ]
    );
    assert_eq!(
        pairs(&mut d, "keyed"),
        vec![("a".into(), "a=x".into()), ("b".into(), "b=y".into())]
    );
}

#[test]
fn flat_map_makes_zero_or_more_records_each_with_the_input_timestamp_and_headers() {
    let b = StreamsBuilder::new();
    to_out(
        &strings_in(&b, "in").flat_map(|k, v| {
            v.split(',')
                .filter(|p| !p.is_empty())
                .map(|p| (format!("{k}.{p}"), p.to_string()))
                .collect::<Vec<_>>()
        }),
        "out",
    );
    let mut d = driver(b);
    let headers = vec![("h".to_string(), Some(b"1".to_vec()))];
    d.pipe_raw("in", Some(b"k"), Some(b"x,y,z"), 7, &headers)
        .unwrap();
    d.pipe_raw("in", Some(b"e"), Some(b""), 8, &[]).unwrap();
    let out = d.read_output("out", &s(), &s()).unwrap();
    let rows: Vec<_> = out
        .iter()
        .map(|r| {
            (
                r.key.as_str(),
                r.value.as_str(),
                r.timestamp,
                r.headers.clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("k.x", "x", 7, headers.clone()),
            ("k.y", "y", 7, headers.clone()),
            ("k.z", "z", 7, headers.clone()),
        ]
    );
}

#[test]
fn flat_map_values_gives_every_value_the_input_key() {
    let b = StreamsBuilder::new();
    to_out(
        &strings_in(&b, "lines").flat_map_values(|line: String| {
            line.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        }),
        "words",
    );
    let mut d = driver(b);
    kv(&mut d, "lines", "l1", "to be or", 3);
    kv(&mut d, "lines", "l2", "   ", 4);
    assert_eq!(
        strings(&mut d, "words"),
        vec![
            (Some("l1".into()), Some("to".into()), 3),
            (Some("l1".into()), Some("be".into()), 3),
            (Some("l1".into()), Some("or".into()), 3)
        ]
    );
}

#[test]
fn peek_sees_every_record_in_order_and_passes_it_on_unchanged() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let b = StreamsBuilder::new();
    let log = seen.clone();
    to_out(
        &strings_in(&b, "in").peek(move |k, v| log.lock().unwrap().push(format!("{k}:{v}"))),
        "out",
    );
    let mut d = driver(b);
    kv(&mut d, "in", "a", "1", 1);
    kv(&mut d, "in", "b", "2", 2);
    assert_eq!(*seen.lock().unwrap(), vec!["a:1", "b:2"]);
    assert_eq!(
        strings(&mut d, "out"),
        vec![
            (Some("a".into()), Some("1".into()), 1),
            (Some("b".into()), Some("2".into()), 2)
        ]
    );
}

#[test]
fn select_key_replaces_only_the_key() {
    let b = StreamsBuilder::new();
    to_out(
        &strings_in(&b, "in").select_key(|_, v| v.chars().next().unwrap().to_string()),
        "out",
    );
    let mut d = driver(b);
    kv(&mut d, "in", "k1", "apple", 11);
    kv(&mut d, "in", "k2", "berry", 12);
    assert_eq!(
        strings(&mut d, "out"),
        vec![
            (Some("a".into()), Some("apple".into()), 11),
            (Some("b".into()), Some("berry".into()), 12)
        ]
    );
}

#[test]
fn split_sends_each_record_to_the_first_matching_branch_only_and_the_rest_to_the_default() {
    let b = StreamsBuilder::new();
    let predicates: Vec<Predicate<String, i64>> =
        vec![Box::new(|_, v| *v > 100), Box::new(|_, v| *v > 10)];
    let branches = b
        .stream("amounts", Consumed::with(s(), l()))
        .split(predicates);
    assert_eq!(branches.len(), 3);
    for (branch, topic) in branches.iter().zip(["large", "medium", "small"]) {
        branch.to(topic, Produced::with(s(), l()));
    }
    let mut d = driver(b);
    for (k, v) in [("a", 500), ("b", 50), ("c", 5), ("d", 101), ("e", 100)] {
        d.pipe("amounts", &s(), &l(), k.to_string(), v, 1).unwrap();
    }
    // 500 and 101 also pass the second predicate: only the first counts.
    assert_eq!(
        longs(&mut d, "large"),
        vec![("a".into(), Some(500), 1), ("d".into(), Some(101), 1)]
    );
    assert_eq!(
        longs(&mut d, "medium"),
        vec![("b".into(), Some(50), 1), ("e".into(), Some(100), 1)]
    );
    assert_eq!(longs(&mut d, "small"), vec![("c".into(), Some(5), 1)]);
}

#[test]
fn split_without_predicates_has_only_the_default_branch() {
    let b = StreamsBuilder::new();
    let branches = strings_in(&b, "in").split(Vec::new());
    assert_eq!(branches.len(), 1);
    to_out(&branches[0], "out");
    let mut d = driver(b);
    kv(&mut d, "in", "k", "v", 1);
    assert_eq!(pairs(&mut d, "out"), vec![("k".into(), "v".into())]);
}

#[test]
fn merge_passes_the_records_of_both_streams_in_the_order_they_are_processed() {
    let b = StreamsBuilder::new();
    let left = strings_in(&b, "left");
    let right = strings_in(&b, "right").map_values(|v| format!("r-{v}"));
    to_out(&left.merge(&right), "merged");
    let mut d = driver(b);
    kv(&mut d, "left", "a", "1", 30);
    kv(&mut d, "right", "b", "2", 10);
    kv(&mut d, "left", "c", "3", 20);
    assert_eq!(
        strings(&mut d, "merged"),
        vec![
            (Some("a".into()), Some("1".into()), 30),
            (Some("b".into()), Some("r-2".into()), 10),
            (Some("c".into()), Some("3".into()), 20)
        ]
    );
}

#[test]
fn a_stream_of_several_topics_reads_them_all() {
    let b = StreamsBuilder::new();
    to_out(&b.streams(&["t1", "t2"], Consumed::with(s(), s())), "out");
    let mut d = driver(b);
    kv(&mut d, "t2", "b", "2", 2);
    kv(&mut d, "t1", "a", "1", 1);
    assert_eq!(
        pairs(&mut d, "out"),
        vec![("b".into(), "2".into()), ("a".into(), "1".into())]
    );
}

#[test]
fn to_writes_keys_and_values_with_the_produced_serdes() {
    let b = StreamsBuilder::new();
    b.stream("in", Consumed::with(s(), s()))
        .map_values(|v| v.len() as i64)
        .to("lengths", Produced::with(s(), l()));
    let mut d = driver(b);
    kv(&mut d, "in", "k", "hello", 9);
    let raw = d.read_raw("lengths");
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(raw[0].value.as_deref(), Some(&5i64.to_be_bytes()[..]));
    assert_eq!(raw[0].timestamp, 9);
    assert_eq!(raw[0].partition, None, "the producer partitions by key");
}

#[test]
fn null_keys_and_values_pass_through_stateless_operators() {
    let b = StreamsBuilder::new();
    b.stream("in", Consumed::with(ns(), ns()))
        .filter(|_, v| v.as_deref() != Some("drop"))
        .map_values(|v| v.map(|v| v.to_uppercase()))
        .to("out", Produced::with(ns(), ns()));
    let mut d = driver(b);
    send(&mut d, "in", None, Some("a"), 1);
    send(&mut d, "in", Some("k"), None, 2);
    send(&mut d, "in", None, None, 3);
    send(&mut d, "in", Some("k"), Some("drop"), 4);
    assert_eq!(
        strings(&mut d, "out"),
        vec![
            (None, Some("A".into()), 1),
            (Some("k".into()), None, 2),
            (None, None, 3)
        ]
    );
    assert_eq!(d.metrics().records_skipped, 0);
    assert_eq!(d.metrics().records_processed, 4);
}

#[test]
fn repartition_writes_through_the_named_internal_topic_and_reads_the_records_back() {
    let b = StreamsBuilder::new();
    let headers = vec![("h".to_string(), Some(b"v".to_vec()))];
    to_out(
        &strings_in(&b, "in")
            .select_key(|_, v| v.clone())
            .repartition(Some("by-value"), s(), s())
            .map_values(|v| format!("{v}!")),
        "out",
    );
    let topology = b.build().unwrap();
    assert_eq!(
        topology.subtopologies().len(),
        2,
        "cut at the repartition topic"
    );
    let internal: Vec<_> = topology
        .internal_topics(APP)
        .into_iter()
        .map(|t| (t.name, t.compacted))
        .collect();
    assert_eq!(
        internal,
        vec![("app-by-value-repartition".to_string(), false)]
    );
    let mut d = runnel_streams::TopologyTestDriver::new(topology, APP);
    d.pipe_raw("in", Some(b"k"), Some(b"x"), 42, &headers)
        .unwrap();
    let through = d.read_raw("app-by-value-repartition");
    assert_eq!(through.len(), 1);
    assert_eq!(through[0].key.as_deref(), Some(&b"x"[..]));
    assert_eq!(through[0].value.as_deref(), Some(&b"x"[..]));
    assert_eq!(through[0].timestamp, 42);
    assert_eq!(through[0].headers, headers);
    let out = d.read_output("out", &s(), &s()).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].key.as_str(), out[0].value.as_str()), ("x", "x!"));
    assert_eq!(out[0].timestamp, 42);
    assert_eq!(out[0].headers, headers);
}

#[test]
fn an_unnamed_repartition_topic_gets_a_generated_name_under_the_application_id() {
    let b = StreamsBuilder::new();
    to_out(&strings_in(&b, "in").repartition(None, s(), s()), "out");
    let topology = b.build().unwrap();
    let names: Vec<_> = topology
        .internal_topics("shop")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names.len(), 1);
    assert!(
        names[0].starts_with("shop-KSTREAM-REPARTITION-") && names[0].ends_with("-repartition"),
        "{names:?}"
    );
    let mut d = runnel_streams::TopologyTestDriver::new(topology, "shop");
    kv(&mut d, "in", "k", "v", 1);
    assert_eq!(d.read_raw(&names[0]).len(), 1);
    assert_eq!(pairs(&mut d, "out"), vec![("k".into(), "v".into())]);
}

#[test]
fn a_value_serde_other_than_strings_round_trips_through_a_repartition_topic() {
    let b = StreamsBuilder::new();
    b.stream("in", Consumed::with(s(), serdes::json::<Vec<u32>>()))
        .map(|k, v: Vec<u32>| (v.len() as i64, format!("{k}:{v:?}")))
        .repartition(Some("by-len"), l(), s())
        .to("out", Produced::with(l(), s()));
    let mut d = driver(b);
    d.pipe(
        "in",
        &s(),
        &serdes::json(),
        "k".to_string(),
        vec![1u32, 2, 3],
        5,
    )
    .unwrap();
    assert_eq!(
        d.read_key_values("out", &l(), &s()).unwrap(),
        vec![(3, "k:[1, 2, 3]".to_string())]
    );
}

#[test]
fn a_repartition_topic_takes_the_partitions_of_the_sub_topology_that_writes_it() {
    let b = StreamsBuilder::new();
    let left = strings_in(&b, "in").select_key(|_, v| v.clone());
    let other = strings_in(&b, "other");
    to_out(
        &left.merge(&other).repartition(Some("by-value"), s(), s()),
        "out",
    );
    let topology = b.build().unwrap();
    let partitions =
        std::collections::HashMap::from([("in".to_string(), 4), ("other".to_string(), 6)]);
    let counts = topology.partition_counts(APP, &partitions).unwrap();
    assert_eq!(counts.internal["app-by-value-repartition"], 6);
    let mut tasks = counts.subtopologies.clone();
    tasks.sort();
    assert_eq!(tasks, vec![6, 6], "the reader takes what the writer wrote");
    let missing = topology
        .partition_counts(APP, &std::collections::HashMap::new())
        .unwrap_err();
    assert!(
        missing.contains("in") && missing.contains("other"),
        "{missing}"
    );
}
