//! Global tables: a stream joins a whole topic on a key it maps from each
//! record (orders keyed by order id meet customers keyed by customer id),
//! with no co-partitioning and no repartition topic; updates and
//! tombstones reach later stream records; Kafka Streams' null rules for
//! stream–global table joins; the global store answers queries (also
//! over HTTP, where it is local on every instance).

mod common;

use std::sync::{mpsc, Arc};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use runnel_streams::http::{self, Job, Service};
use runnel_streams::query::Instance;
use runnel_streams::{
    Consumed, ErrorHandling, GlobalKTable, Produced, Query, Stored, StreamsBuilder, StreamsError,
    Topology, TopologyTestDriver,
};
use serde_json::{json, Value};
use tower::ServiceExt;

/// An order's value: `<customer id>:<amount>` (an empty customer id: an
/// order of no customer).
fn customer_of(order: &str) -> String {
    order.split(':').next().unwrap_or_default().to_string()
}

fn amount_of(order: &str) -> &str {
    order.split_once(':').map_or("", |(_, a)| a)
}

fn customers(b: &StreamsBuilder) -> GlobalKTable<String, String> {
    b.global_table(
        "customers",
        Consumed::with(s(), s()),
        Stored::as_("customers-store"),
    )
}

/// `orders` (key: order id) joined with `customers` through each order's
/// customer id into `enriched`: `<amount> for <name>` (`nobody` when a
/// left join finds no customer).
fn enrichment(left_join: bool) -> StreamsBuilder {
    let b = StreamsBuilder::new();
    let customers = customers(&b);
    let orders = b.stream("orders", Consumed::with(s(), s()));
    let mapper = |_: &String, order: &String| customer_of(order);
    let enriched = if left_join {
        orders.left_join_global(
            &customers,
            mapper,
            |order: &String, name: Option<&String>| {
                format!(
                    "{} for {}",
                    amount_of(order),
                    name.map_or("nobody", String::as_str)
                )
            },
        )
    } else {
        orders.join_global(&customers, mapper, |order: &String, name: &String| {
            format!("{} for {name}", amount_of(order))
        })
    };
    enriched.to("enriched", Produced::with(s(), s()));
    b
}

fn row(key: &str, value: &str, ts: i64) -> Row {
    (Some(key.to_string()), Some(value.to_string()), ts)
}

#[test]
fn an_inner_join_enriches_each_order_with_its_customer_found_through_the_key_mapper() {
    let mut d = driver(enrichment(false));
    kv(&mut d, "customers", "c1", "Alice", 1);
    kv(&mut d, "customers", "c2", "Bob", 2);
    kv(&mut d, "orders", "o1", "c1:10", 100);
    kv(&mut d, "orders", "o2", "c2:20", 101);
    kv(&mut d, "orders", "o3", "c9:30", 102);
    // The result keeps the order's key and time; an order of an unknown
    // customer is dropped.
    assert_eq!(
        strings(&mut d, "enriched"),
        vec![row("o1", "10 for Alice", 100), row("o2", "20 for Bob", 101)]
    );
}

#[test]
fn a_left_join_keeps_an_order_whose_customer_is_unknown() {
    let mut d = driver(enrichment(true));
    kv(&mut d, "customers", "c1", "Alice", 1);
    kv(&mut d, "orders", "o1", "c1:10", 100);
    kv(&mut d, "orders", "o2", "c9:30", 101);
    assert_eq!(
        strings(&mut d, "enriched"),
        vec![
            row("o1", "10 for Alice", 100),
            row("o2", "30 for nobody", 101)
        ]
    );
}

#[test]
fn updates_and_tombstones_of_the_global_table_reach_later_orders_only() {
    for left_join in [false, true] {
        let mut d = driver(enrichment(left_join));
        kv(&mut d, "customers", "c1", "Alice", 1);
        kv(&mut d, "orders", "o1", "c1:10", 100);
        // A table update triggers nothing itself.
        kv(&mut d, "customers", "c1", "Alice Smith", 2);
        assert_eq!(
            strings(&mut d, "enriched"),
            vec![row("o1", "10 for Alice", 100)]
        );
        kv(&mut d, "orders", "o2", "c1:20", 101);
        send(&mut d, "customers", Some("c1"), None, 3);
        kv(&mut d, "orders", "o3", "c1:30", 102);
        let mut expected = vec![row("o2", "20 for Alice Smith", 101)];
        if left_join {
            expected.push(row("o3", "30 for nobody", 102));
        }
        assert_eq!(
            strings(&mut d, "enriched"),
            expected,
            "left join: {left_join}"
        );
        assert_eq!(d.store("customers-store").map(|s| s.len()), Some(0));
    }
}

/// Orders whose customer id may be null (`None` for an empty one),
/// joined with customers keyed by a nullable string.
fn nullable_enrichment(left_join: bool) -> StreamsBuilder {
    let b = StreamsBuilder::new();
    let customers: GlobalKTable<Option<String>, String> = b.global_table(
        "customers",
        Consumed::with(ns(), s()),
        Stored::as_("customers-store"),
    );
    let orders = b.stream("orders", Consumed::with(ns(), s()));
    let mapper =
        |_: &Option<String>, order: &String| Some(customer_of(order)).filter(|c| !c.is_empty());
    let enriched = if left_join {
        orders.left_join_global(
            &customers,
            mapper,
            |order: &String, name: Option<&String>| {
                format!(
                    "{} for {}",
                    amount_of(order),
                    name.map_or("nobody", String::as_str)
                )
            },
        )
    } else {
        orders.join_global(&customers, mapper, |order: &String, name: &String| {
            format!("{} for {name}", amount_of(order))
        })
    };
    enriched.to("enriched", Produced::with(ns(), s()));
    b
}

#[test]
fn a_null_mapped_key_is_dropped_by_an_inner_join_and_counted() {
    let mut d = driver(nullable_enrichment(false));
    kv(&mut d, "customers", "c1", "Alice", 1);
    kv(&mut d, "orders", "o1", ":10", 100);
    assert!(strings(&mut d, "enriched").is_empty());
    assert_eq!(d.metrics().records_skipped, 1);
}

#[test]
fn a_null_mapped_key_is_joined_with_no_row_by_a_left_join() {
    let mut d = driver(nullable_enrichment(true));
    kv(&mut d, "customers", "c1", "Alice", 1);
    kv(&mut d, "orders", "o1", ":10", 100);
    assert_eq!(
        strings(&mut d, "enriched"),
        vec![row("o1", "10 for nobody", 100)]
    );
    assert_eq!(d.metrics().records_skipped, 0);
}

#[test]
fn a_stream_record_with_a_null_key_still_joins_through_its_mapped_key() {
    // KIP-962: the key mapper, not the stream's key, says what a record
    // joins; only a null mapped key finds nothing.
    for left_join in [false, true] {
        let mut d = driver(nullable_enrichment(left_join));
        kv(&mut d, "customers", "c1", "Alice", 1);
        send(&mut d, "orders", None, Some("c1:10"), 100);
        assert_eq!(
            strings(&mut d, "enriched"),
            vec![(None, Some("10 for Alice".to_string()), 100)],
            "left join: {left_join}"
        );
    }
}

#[test]
fn a_global_table_record_without_a_key_is_no_row() {
    let mut d = driver(enrichment(true));
    send(&mut d, "customers", None, Some("Nobody"), 1);
    assert_eq!(d.store("customers-store").map(|s| s.len()), Some(0));
}

#[test]
fn an_undecodable_global_record_is_not_stored_and_fails_or_is_skipped_by_the_error_handling() {
    let build = || {
        let b = StreamsBuilder::new();
        let limits = b.global_table(
            "limits",
            Consumed::with(s(), l()),
            Stored::as_("limits-store"),
        );
        b.stream("orders", Consumed::with(s(), s()))
            .join_global(&limits, |_, o: &String| customer_of(o), |_, l: &i64| *l)
            .to("out", Produced::with(s(), l()));
        b.build().unwrap()
    };
    let mut failing = TopologyTestDriver::new(build(), APP);
    let error = failing
        .pipe_raw("limits", Some(b"c1"), Some(b"abc"), 1, &[])
        .unwrap_err();
    assert!(
        matches!(&error, StreamsError::Deserialize { what: "value", topic, .. } if topic == "limits"),
        "{error}"
    );
    assert_eq!(failing.store("limits-store").map(|s| s.len()), Some(0));

    let mut skipping =
        TopologyTestDriver::new(build(), APP).with_error_handling(ErrorHandling::LogAndContinue);
    skipping
        .pipe_raw("limits", Some(b"c1"), Some(b"abc"), 1, &[])
        .unwrap();
    skipping
        .pipe("limits", &s(), &l(), "c2".to_string(), 7, 2)
        .unwrap();
    assert_eq!(
        skipping.get("limits-store", &s(), &l(), &"c2".to_string()),
        Some(7)
    );
    assert_eq!(skipping.store("limits-store").map(|s| s.len()), Some(1));
}

#[test]
fn a_global_join_needs_no_repartition_even_after_the_key_changed() {
    let b = StreamsBuilder::new();
    let customers = customers(&b);
    // Orders rekeyed by their amount: a join with a (partitioned) table
    // would need a repartition first; a global one does not.
    b.stream("orders", Consumed::with(s(), s()))
        .select_key(|_, order: &String| amount_of(order).to_string())
        .join_global(
            &customers,
            |_, order: &String| customer_of(order),
            |order: &String, name: &String| format!("{order} {name}"),
        )
        .to("enriched", Produced::with(s(), s()));
    let topology: Topology = b.build().expect("a valid topology");
    assert_eq!(topology.subtopologies().len(), 1);
    assert!(
        topology.internal_topics(APP).is_empty(),
        "{:?}",
        topology.internal_topics(APP)
    );
    // The global topic is read by no task and assigned by no group.
    assert_eq!(topology.source_topics(APP), vec!["orders".to_string()]);
    assert_eq!(
        topology.global_stores().into_iter().collect::<Vec<_>>(),
        vec![("customers-store".to_string(), "customers".to_string())]
    );
    assert!(!topology.subtopologies()[0]
        .stores
        .contains(&"customers-store".to_string()));
    let described = topology.describe();
    assert!(
        described.contains("Global store: customers-store (topic: \"customers\""),
        "{described}"
    );
    assert!(
        described.contains("(global stores: [\"customers-store\"])"),
        "{described}"
    );

    let mut d = TopologyTestDriver::new(topology, APP);
    kv(&mut d, "customers", "c1", "Alice", 1);
    kv(&mut d, "orders", "o1", "c1:10", 100);
    assert_eq!(
        strings(&mut d, "enriched"),
        vec![row("10", "c1:10 Alice", 100)]
    );
}

#[test]
fn every_sub_topology_reads_the_same_global_table() {
    // Two unrelated streams (two sub-topologies, so two tasks) join one
    // global table.
    let b = StreamsBuilder::new();
    let customers = customers(&b);
    for (input, output) in [("orders", "enriched"), ("returns", "refunds")] {
        b.stream(input, Consumed::with(s(), s()))
            .join_global(
                &customers,
                |_, v: &String| customer_of(v),
                |v: &String, name: &String| format!("{} for {name}", amount_of(v)),
            )
            .to(output, Produced::with(s(), s()));
    }
    let topology = b.build().unwrap();
    assert_eq!(topology.subtopologies().len(), 2);
    let mut d = TopologyTestDriver::new(topology, APP);
    kv(&mut d, "customers", "c1", "Alice", 1);
    kv(&mut d, "orders", "o1", "c1:10", 100);
    kv(&mut d, "returns", "r1", "c1:4", 101);
    assert_eq!(
        pairs(&mut d, "enriched"),
        vec![("o1".into(), "10 for Alice".into())]
    );
    assert_eq!(
        pairs(&mut d, "refunds"),
        vec![("r1".into(), "4 for Alice".into())]
    );
}

#[test]
fn what_the_topology_writes_to_a_global_topic_updates_the_global_store() {
    let b = enrichment(false);
    b.stream("signups", Consumed::with(s(), s()))
        .map_values(|name: String| name.to_uppercase())
        .to("customers", Produced::with(s(), s()));
    let mut d = driver(b);
    kv(&mut d, "signups", "c1", "alice", 1);
    kv(&mut d, "orders", "o1", "c1:10", 100);
    assert_eq!(
        pairs(&mut d, "enriched"),
        vec![("o1".into(), "10 for ALICE".into())]
    );
}

#[test]
fn a_topic_cannot_be_both_a_global_table_and_a_stream() {
    let b = StreamsBuilder::new();
    customers(&b);
    b.stream("customers", Consumed::with(s(), s()))
        .to("out", Produced::with(s(), s()));
    let error = b.build().unwrap_err();
    assert!(
        error
            .0
            .iter()
            .any(|e| e.contains("topic customers is read by more than one source")),
        "{error}"
    );
}

#[test]
fn a_global_table_of_another_builder_is_refused() {
    let other = StreamsBuilder::new();
    let customers = customers(&other);
    let b = StreamsBuilder::new();
    b.stream("orders", Consumed::with(s(), s()))
        .join_global(
            &customers,
            |_, v: &String| customer_of(v),
            |v: &String, _: &String| v.clone(),
        )
        .to("out", Produced::with(s(), s()));
    let error = b.build().unwrap_err();
    assert!(
        error.to_string().contains("another StreamsBuilder"),
        "{error}"
    );
}

fn fed() -> runnel_streams::TopologyTestDriver {
    let mut d = driver(enrichment(false));
    for (id, name) in [("c1", "Alice"), ("c2", "Bob"), ("c3", "Carol")] {
        kv(&mut d, "customers", id, name, 1);
    }
    d
}

#[test]
fn the_global_store_answers_keys_and_ranges_as_one_whole_store() {
    let d = fed();
    assert_eq!(
        d.get("customers-store", &s(), &s(), &"c2".to_string()),
        Some("Bob".to_string())
    );
    let key = |k: &str| Query::Key {
        store: "customers-store".into(),
        key: k.as_bytes().to_vec(),
        from_ms: 0,
        to_ms: 0,
    };
    assert_eq!(
        d.query(&key("c2")).unwrap(),
        json!([{"key": "c2", "value": "Bob", "task": "global"}])
    );
    assert_eq!(d.query(&key("c9")).unwrap(), json!([]));
    let range = d
        .query(&Query::Range {
            store: "customers-store".into(),
            from: Some(b"c2".to_vec()),
            to: None,
            limit: 10,
        })
        .unwrap();
    assert_eq!(
        range,
        json!([
            {"key": "c2", "value": "Bob", "task": "global"},
            {"key": "c3", "value": "Carol", "task": "global"}
        ])
    );
    let stores = d.query(&Query::Stores).unwrap();
    assert_eq!(
        stores,
        json!([{"name": "customers-store", "kind": "key-value", "tasks": ["global"], "approximate_entries": 3, "global": true}])
    );
}

/// The driver on a thread of its own, answering an HTTP service's
/// queries as the stream thread does, with another instance in the
/// group holding every input partition.
fn service() -> Arc<Service> {
    let (jobs, queue) = mpsc::channel::<Job>();
    let topology = enrichment(false).build().unwrap();
    std::thread::spawn(move || {
        let d = fed();
        for job in queue.iter() {
            let _ = job.reply.send(d.query(&job.query));
        }
    });
    let other = Instance {
        server: Some("127.0.0.1:7002".into()),
        member_id: "other".into(),
        client_host: "/127.0.0.1".into(),
        partitions: vec![("orders".into(), 0)],
    };
    Arc::new(Service::new(
        APP.into(),
        Some("127.0.0.1:7001".into()),
        topology,
        vec![1],
        jobs,
        Box::new(move || Ok(vec![other.clone()])),
        Box::new(String::new),
    ))
}

async fn get(service: &Arc<Service>, uri: &str) -> (StatusCode, Value) {
    let response = http::router(service.clone())
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn over_http_a_global_store_is_answered_here_and_never_redirected() {
    let s = service();
    let (status, body) = get(&s, "/stores/customers-store/c1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["value"], json!("Alice"));
    // A key it lacks is nowhere: 404, not a redirect to the instance
    // holding the partitions.
    let (status, _) = get(&s, "/stores/customers-store/c9").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, owner) = get(&s, "/stores/customers-store/c9/owner").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(owner["global"], json!(true));
    assert_eq!(owner["local"], json!(true));
    assert_eq!(owner["server"], json!("127.0.0.1:7001"));
}
