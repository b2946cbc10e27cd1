//! KTables: a topic read as the latest value per key, tombstones,
//! filter/map_values on changes, to_stream and materialize.

mod common;

use common::*;
use runnel_streams::{Consumed, KTable, Produced, Stored, StreamsBuilder};

fn users(b: &StreamsBuilder) -> KTable<String, String> {
    b.table(
        "users",
        Consumed::with(s(), s()),
        Stored::as_("users-store"),
    )
}

fn to_out(table: &KTable<String, String>, topic: &str) {
    table.to_stream().to(topic, Produced::with(s(), ns()));
}

#[test]
fn a_table_keeps_the_latest_value_per_key_and_a_tombstone_deletes_it() {
    let b = StreamsBuilder::new();
    to_out(&users(&b), "out");
    let mut d = driver(b);
    kv(&mut d, "users", "alice", "Paris", 1);
    kv(&mut d, "users", "bob", "Rome", 2);
    kv(&mut d, "users", "alice", "Oslo", 3);
    send(&mut d, "users", Some("bob"), None, 4);
    assert_eq!(
        strings(&mut d, "out"),
        vec![
            (Some("alice".into()), Some("Paris".into()), 1),
            (Some("bob".into()), Some("Rome".into()), 2),
            (Some("alice".into()), Some("Oslo".into()), 3),
            (Some("bob".into()), None, 4)
        ]
    );
    assert_eq!(
        d.get("users-store", &s(), &s(), &"alice".to_string()),
        Some("Oslo".to_string())
    );
    assert_eq!(d.get("users-store", &s(), &s(), &"bob".to_string()), None);
}

#[test]
fn a_source_tables_store_logs_every_update_and_delete_to_its_changelog() {
    let b = StreamsBuilder::new();
    users(&b);
    let mut d = driver(b);
    kv(&mut d, "users", "alice", "Paris", 1);
    send(&mut d, "users", Some("alice"), None, 2);
    assert_eq!(
        strings(&mut d, "app-users-store-changelog"),
        vec![
            (Some("alice".into()), Some("Paris".into()), 1),
            (Some("alice".into()), None, 2)
        ]
    );
}

#[test]
fn a_tombstone_for_a_key_the_table_does_not_hold_changes_nothing() {
    let b = StreamsBuilder::new();
    to_out(&users(&b), "out");
    let mut d = driver(b);
    send(&mut d, "users", Some("ghost"), None, 1);
    assert!(strings(&mut d, "out").is_empty());
    assert!(d.read_raw("app-users-store-changelog").is_empty());
}

#[test]
fn a_table_record_without_a_key_is_skipped_and_counted() {
    let b = StreamsBuilder::new();
    to_out(&users(&b), "out");
    let mut d = driver(b);
    send(&mut d, "users", None, Some("nobody"), 1);
    assert!(strings(&mut d, "out").is_empty());
    assert_eq!(d.metrics().records_skipped, 1);
    assert!(d.store("users-store").unwrap().is_empty());
}

#[test]
fn a_filtered_table_deletes_a_row_when_it_stops_matching_and_only_then() {
    let b = StreamsBuilder::new();
    to_out(&users(&b).filter(|_, city| city.starts_with('P')), "in-p");
    let mut d = driver(b);
    kv(&mut d, "users", "a", "Paris", 1); // matches: insert
    kv(&mut d, "users", "a", "Prague", 2); // still matches: update
    kv(&mut d, "users", "a", "Oslo", 3); // stops matching: delete
    kv(&mut d, "users", "a", "Rome", 4); // did not and does not match
    kv(&mut d, "users", "b", "Lima", 5); // never matched
    send(&mut d, "users", Some("b"), None, 6); // deleting a non-matching row
    kv(&mut d, "users", "c", "Pisa", 7);
    send(&mut d, "users", Some("c"), None, 8); // deleting a matching row
    assert_eq!(
        strings(&mut d, "in-p"),
        vec![
            (Some("a".into()), Some("Paris".into()), 1),
            (Some("a".into()), Some("Prague".into()), 2),
            (Some("a".into()), None, 3),
            (Some("c".into()), Some("Pisa".into()), 7),
            (Some("c".into()), None, 8)
        ]
    );
}

#[test]
fn filter_not_keeps_the_rows_the_predicate_rejects() {
    let b = StreamsBuilder::new();
    to_out(
        &users(&b).filter_not(|_, city| city.starts_with('P')),
        "not-p",
    );
    let mut d = driver(b);
    kv(&mut d, "users", "a", "Oslo", 1);
    kv(&mut d, "users", "a", "Paris", 2);
    kv(&mut d, "users", "b", "Paris", 3);
    assert_eq!(
        strings(&mut d, "not-p"),
        vec![
            (Some("a".into()), Some("Oslo".into()), 1),
            (Some("a".into()), None, 2)
        ]
    );
}

#[test]
fn map_values_maps_every_row_and_passes_deletes_on_as_deletes() {
    let b = StreamsBuilder::new();
    to_out(
        &users(&b).map_values(|k, city| format!("{k}@{}", city.to_lowercase())),
        "out",
    );
    let mut d = driver(b);
    kv(&mut d, "users", "a", "Paris", 1);
    kv(&mut d, "users", "a", "Oslo", 2);
    send(&mut d, "users", Some("a"), None, 3);
    assert_eq!(
        strings(&mut d, "out"),
        vec![
            (Some("a".into()), Some("a@paris".into()), 1),
            (Some("a".into()), Some("a@oslo".into()), 2),
            (Some("a".into()), None, 3)
        ]
    );
}

#[test]
fn to_stream_keeps_each_updates_key_timestamp_and_headers() {
    let b = StreamsBuilder::new();
    to_out(&users(&b), "out");
    let mut d = driver(b);
    let headers = vec![("origin".to_string(), Some(b"crm".to_vec()))];
    d.pipe_raw("users", Some(b"a"), Some(b"Paris"), 77, &headers)
        .unwrap();
    let out = d.read_raw("out");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].timestamp, 77);
    assert_eq!(out[0].headers, headers);
}

#[test]
fn materialize_keeps_a_derived_table_in_a_queryable_logged_store() {
    let b = StreamsBuilder::new();
    let source = users(&b);
    let filtered = source.filter(|_, city| city.len() > 4);
    assert_eq!(source.store_name(), Some("users-store"));
    assert_eq!(filtered.store_name(), None);
    let stored = filtered.materialize(Stored::as_("long-names"), s());
    assert_eq!(stored.store_name(), Some("long-names"));
    to_out(&stored, "out");
    let mut d = driver(b);
    kv(&mut d, "users", "a", "Paris", 1);
    kv(&mut d, "users", "b", "Rome", 2);
    kv(&mut d, "users", "c", "Lisbon", 3);
    assert_eq!(
        d.get("long-names", &s(), &s(), &"a".to_string()),
        Some("Paris".to_string())
    );
    assert_eq!(d.get("long-names", &s(), &s(), &"b".to_string()), None);
    kv(&mut d, "users", "a", "Oslo", 4);
    assert_eq!(d.get("long-names", &s(), &s(), &"a".to_string()), None);
    assert_eq!(
        d.get("long-names", &s(), &s(), &"c".to_string()),
        Some("Lisbon".to_string())
    );
    assert_eq!(
        strings(&mut d, "app-long-names-changelog"),
        vec![
            (Some("a".into()), Some("Paris".into()), 1),
            (Some("c".into()), Some("Lisbon".into()), 3),
            (Some("a".into()), None, 4)
        ]
    );
    assert_eq!(
        strings(&mut d, "out"),
        vec![
            (Some("a".into()), Some("Paris".into()), 1),
            (Some("c".into()), Some("Lisbon".into()), 3),
            (Some("a".into()), None, 4)
        ]
    );
}

#[test]
fn a_value_that_does_not_decode_is_not_written_to_the_table() {
    let b = StreamsBuilder::new();
    b.table("scores", Consumed::with(s(), l()), Stored::as_("scores"))
        .to_stream()
        .to("out", Produced::with(s(), nl()));
    let mut d = driver(b).with_error_handling(runnel_streams::ErrorHandling::LogAndContinue);
    d.pipe_raw("scores", Some(b"a"), Some(b"not a long"), 1, &[])
        .unwrap();
    assert_eq!(d.metrics().records_failed, 1);
    assert!(d.store("scores").unwrap().is_empty());
    d.pipe("scores", &s(), &l(), "a".to_string(), 9, 2).unwrap();
    assert_eq!(longs(&mut d, "out"), vec![("a".into(), Some(9), 2)]);
}
