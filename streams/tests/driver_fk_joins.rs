//! Foreign-key table–table joins (KIP-213), inner and left: a left row
//! subscribes to the right row its value names and gets its value; a
//! right update reaches every subscriber; a row that changes its foreign
//! key moves, and an answer meant for its old value is dropped; deletions
//! on either side, rows without a foreign key, and the two internal
//! topics that cut the topology.
//!
//! Orders (`order id -> "customer:item"`) join customers (`customer id ->
//! name`); an order with an empty customer part has no foreign key.

mod common;

use std::collections::HashMap;

use common::*;
use runnel_streams::{
    Consumed, InternalPartitions, KTable, Produced, Stored, StreamsBuilder, TopologyTestDriver,
};

const REGISTRATION: &str = "app-enriched-subscription-registration-topic";
const RESPONSE: &str = "app-enriched-subscription-response-topic";

/// The customer an order names, if any.
fn customer(order: &str) -> Option<String> {
    let (customer, _) = order.split_once(':')?;
    (!customer.is_empty()).then(|| customer.to_string())
}

fn show(order: &str, customer: Option<&String>) -> String {
    format!("{order}+{}", customer.map_or("null", String::as_str))
}

fn tables(b: &StreamsBuilder) -> (KTable<String, String>, KTable<String, String>) {
    let orders = b.table("orders", Consumed::with(s(), s()), Stored::as_("orders"));
    let customers = b.table(
        "customers",
        Consumed::with(s(), s()),
        Stored::as_("customers"),
    );
    (orders, customers)
}

fn join(left_join: bool) -> StreamsBuilder {
    let b = StreamsBuilder::new();
    let (orders, customers) = tables(&b);
    let joined = if left_join {
        orders.left_join_foreign_key(
            &customers,
            |o: &String| customer(o),
            |o: &String, c: Option<&String>| show(o, c),
            Stored::as_("enriched"),
            s(),
        )
    } else {
        orders.join_foreign_key(
            &customers,
            |o: &String| customer(o),
            |o: &String, c: &String| show(o, Some(c)),
            Stored::as_("enriched"),
            s(),
        )
    };
    joined.to_stream().to("out", Produced::with(s(), ns()));
    b
}

fn inner() -> TopologyTestDriver {
    driver(join(false))
}

fn left() -> TopologyTestDriver {
    driver(join(true))
}

fn row(key: &str, value: Option<&str>, ts: i64) -> Row {
    (Some(key.into()), value.map(str::to_string), ts)
}

fn result(d: &TopologyTestDriver, order: &str) -> Option<String> {
    d.get("enriched", &s(), &s(), &order.to_string())
}

/// How many orders subscribe to some customer.
fn subscriptions(d: &TopologyTestDriver) -> usize {
    d.store("enriched-subscription-store").unwrap().len()
}

#[test]
fn a_left_row_subscribes_to_its_foreign_key_and_gets_the_right_value() {
    let mut d = inner();
    kv(&mut d, "customers", "c1", "Ada", 1);
    kv(&mut d, "orders", "o1", "c1:book", 2);
    assert_eq!(
        strings(&mut d, "out"),
        vec![row("o1", Some("c1:book+Ada"), 2)]
    );
    assert_eq!(result(&d, "o1").as_deref(), Some("c1:book+Ada"));
    // The subscription travelled keyed by the customer, the answer by the
    // order.
    let sent = d.read_raw(REGISTRATION);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].key.as_deref(), Some(&b"c1"[..]));
    let answered = d.read_raw(RESPONSE);
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0].key.as_deref(), Some(&b"o1"[..]));
    assert_eq!(subscriptions(&d), 1);
}

#[test]
fn a_left_row_whose_right_row_comes_later_joins_when_it_comes() {
    let mut d = inner();
    kv(&mut d, "orders", "o1", "c1:book", 1);
    assert!(strings(&mut d, "out").is_empty());
    assert!(
        d.read_raw(RESPONSE).is_empty(),
        "an inner join's new row is answered only if its right row exists"
    );
    kv(&mut d, "customers", "c1", "Ada", 2);
    assert_eq!(
        strings(&mut d, "out"),
        vec![row("o1", Some("c1:book+Ada"), 2)]
    );
}

#[test]
fn a_right_update_reaches_every_left_row_with_that_foreign_key_and_no_other() {
    let mut d = inner();
    kv(&mut d, "customers", "c1", "Ada", 1);
    kv(&mut d, "customers", "c2", "Cy", 2);
    // `c1` and `c10` share a byte prefix but not a foreign key.
    kv(&mut d, "customers", "c10", "Dee", 3);
    kv(&mut d, "orders", "o1", "c1:book", 4);
    kv(&mut d, "orders", "o2", "c1:pen", 5);
    kv(&mut d, "orders", "o3", "c2:ink", 6);
    kv(&mut d, "orders", "o4", "c10:cap", 7);
    strings(&mut d, "out");
    kv(&mut d, "customers", "c1", "Bea", 8);
    let mut out = strings(&mut d, "out");
    out.sort();
    assert_eq!(
        out,
        vec![
            row("o1", Some("c1:book+Bea"), 8),
            row("o2", Some("c1:pen+Bea"), 8)
        ]
    );
}

#[test]
fn a_left_row_whose_foreign_key_changes_moves_to_the_new_right_row_and_leaves_the_old_one() {
    let mut d = inner();
    kv(&mut d, "customers", "c1", "Ada", 1);
    kv(&mut d, "customers", "c2", "Cy", 2);
    kv(&mut d, "orders", "o1", "c1:book", 3);
    kv(&mut d, "orders", "o1", "c2:book", 4);
    assert_eq!(
        strings(&mut d, "out"),
        vec![
            row("o1", Some("c1:book+Ada"), 3),
            row("o1", Some("c2:book+Cy"), 4)
        ]
    );
    assert_eq!(subscriptions(&d), 1, "unsubscribed from c1");
    kv(&mut d, "customers", "c1", "Bea", 5);
    assert!(
        strings(&mut d, "out").is_empty(),
        "c1 no longer concerns o1"
    );
    kv(&mut d, "customers", "c2", "Dan", 6);
    assert_eq!(
        strings(&mut d, "out"),
        vec![row("o1", Some("c2:book+Dan"), 6)]
    );
}

#[test]
fn a_left_row_that_moves_to_a_foreign_key_without_a_right_row_loses_its_result() {
    let mut d = inner();
    kv(&mut d, "customers", "c1", "Ada", 1);
    kv(&mut d, "orders", "o1", "c1:book", 2);
    kv(&mut d, "orders", "o1", "c9:book", 3);
    assert_eq!(
        strings(&mut d, "out"),
        vec![row("o1", Some("c1:book+Ada"), 2), row("o1", None, 3)]
    );
    assert_eq!(result(&d, "o1"), None);
}

#[test]
fn an_answer_for_the_old_foreign_key_that_arrives_after_the_row_moved_is_dropped() {
    let mut d = inner();
    kv(&mut d, "customers", "c1", "Ada", 1);
    kv(&mut d, "customers", "c2", "Cy", 2);
    kv(&mut d, "orders", "o1", "c1:book", 3);
    // The answer from c1's side, as if it were delayed on its way back
    // (the two topics' partitions are read independently).
    let late = d.read_raw(RESPONSE).remove(0);
    kv(&mut d, "orders", "o1", "c2:book", 4);
    strings(&mut d, "out");
    d.pipe_raw(RESPONSE, late.key.as_deref(), late.value.as_deref(), 5, &[])
        .unwrap();
    assert!(strings(&mut d, "out").is_empty());
    assert_eq!(result(&d, "o1").as_deref(), Some("c2:book+Cy"));
}

#[test]
fn when_one_input_changes_a_row_twice_only_the_answer_for_its_latest_value_counts() {
    // The left table is an aggregation: one event updates an order twice
    // before either subscription is answered, so the first answer comes
    // back after the order has moved on to c2.
    let b = StreamsBuilder::new();
    let customers = b.table(
        "customers",
        Consumed::with(s(), s()),
        Stored::as_("customers"),
    );
    b.stream("order-events", Consumed::with(s(), s()))
        .flat_map_values(|v: String| v.split('|').map(str::to_string).collect::<Vec<_>>())
        .group_by_key(s(), s())
        .reduce(|_, latest| latest, Stored::as_("orders"))
        .join_foreign_key(
            &customers,
            |o: &String| customer(o),
            |o: &String, c: &String| show(o, Some(c)),
            Stored::as_("enriched"),
            s(),
        )
        .to_stream()
        .to("out", Produced::with(s(), ns()));
    let mut d = driver(b);
    kv(&mut d, "customers", "c1", "Ada", 1);
    kv(&mut d, "customers", "c2", "Cy", 2);
    kv(&mut d, "order-events", "o1", "c1:book|c2:book", 3);
    assert_eq!(
        d.read_raw(RESPONSE).len(),
        2,
        "both subscriptions were answered"
    );
    assert_eq!(
        strings(&mut d, "out"),
        vec![row("o1", Some("c2:book+Cy"), 3)]
    );
}

#[test]
fn a_change_of_the_left_value_that_keeps_the_foreign_key_joins_the_new_value() {
    let mut d = inner();
    kv(&mut d, "customers", "c1", "Ada", 1);
    kv(&mut d, "orders", "o1", "c1:book", 2);
    kv(&mut d, "orders", "o1", "c1:pen", 3);
    assert_eq!(
        strings(&mut d, "out"),
        vec![
            row("o1", Some("c1:book+Ada"), 2),
            row("o1", Some("c1:pen+Ada"), 3)
        ]
    );
    assert_eq!(subscriptions(&d), 1);
}

#[test]
fn deleting_a_left_row_deletes_its_result_and_unsubscribes_it() {
    let mut d = inner();
    kv(&mut d, "customers", "c1", "Ada", 1);
    kv(&mut d, "orders", "o1", "c1:book", 2);
    send(&mut d, "orders", Some("o1"), None, 3);
    assert_eq!(
        strings(&mut d, "out"),
        vec![row("o1", Some("c1:book+Ada"), 2), row("o1", None, 3)]
    );
    assert_eq!(subscriptions(&d), 0);
    kv(&mut d, "customers", "c1", "Bea", 4);
    assert!(strings(&mut d, "out").is_empty());
}

#[test]
fn deleting_a_left_row_that_had_no_result_emits_nothing() {
    let mut d = inner();
    kv(&mut d, "orders", "o1", "c1:book", 1);
    send(&mut d, "orders", Some("o1"), None, 2);
    assert!(strings(&mut d, "out").is_empty());
    assert_eq!(subscriptions(&d), 0);
}

#[test]
fn an_inner_join_deletes_the_results_of_a_deleted_right_row_and_joins_again_when_it_returns() {
    let mut d = inner();
    kv(&mut d, "customers", "c1", "Ada", 1);
    kv(&mut d, "orders", "o1", "c1:book", 2);
    kv(&mut d, "orders", "o2", "c1:pen", 3);
    strings(&mut d, "out");
    send(&mut d, "customers", Some("c1"), None, 4);
    let mut out = strings(&mut d, "out");
    out.sort();
    assert_eq!(out, vec![row("o1", None, 4), row("o2", None, 4)]);
    kv(&mut d, "customers", "c1", "Bea", 5);
    let mut out = strings(&mut d, "out");
    out.sort();
    assert_eq!(
        out,
        vec![
            row("o1", Some("c1:book+Bea"), 5),
            row("o2", Some("c1:pen+Bea"), 5)
        ]
    );
}

#[test]
fn a_left_join_keeps_the_rows_of_a_deleted_right_row_with_no_right_value() {
    let mut d = left();
    kv(&mut d, "customers", "c1", "Ada", 1);
    kv(&mut d, "orders", "o1", "c1:book", 2);
    send(&mut d, "customers", Some("c1"), None, 3);
    assert_eq!(
        strings(&mut d, "out"),
        vec![
            row("o1", Some("c1:book+Ada"), 2),
            row("o1", Some("c1:book+null"), 3)
        ]
    );
}

#[test]
fn a_left_join_emits_a_row_whose_foreign_key_has_no_right_row_and_joins_it_when_it_comes() {
    let mut d = left();
    kv(&mut d, "orders", "o1", "c1:book", 1);
    kv(&mut d, "customers", "c1", "Ada", 2);
    send(&mut d, "orders", Some("o1"), None, 3);
    assert_eq!(
        strings(&mut d, "out"),
        vec![
            row("o1", Some("c1:book+null"), 1),
            row("o1", Some("c1:book+Ada"), 2),
            row("o1", None, 3)
        ]
    );
}

#[test]
fn an_inner_join_emits_nothing_for_a_row_without_a_foreign_key_and_deletes_a_result_it_had() {
    let mut d = inner();
    kv(&mut d, "customers", "c1", "Ada", 1);
    kv(&mut d, "orders", "o1", ":book", 2);
    assert!(strings(&mut d, "out").is_empty());
    assert!(
        d.read_raw(REGISTRATION).is_empty(),
        "nothing to subscribe to"
    );
    kv(&mut d, "orders", "o2", "c1:pen", 3);
    kv(&mut d, "orders", "o2", ":pen", 4);
    assert_eq!(
        strings(&mut d, "out"),
        vec![row("o2", Some("c1:pen+Ada"), 3), row("o2", None, 4)]
    );
    assert_eq!(subscriptions(&d), 0, "o2 left c1");
}

#[test]
fn a_left_join_emits_a_row_without_a_foreign_key_with_no_right_value() {
    let mut d = left();
    kv(&mut d, "customers", "c1", "Ada", 1);
    kv(&mut d, "orders", "o1", ":book", 2);
    kv(&mut d, "orders", "o1", "c1:book", 3);
    kv(&mut d, "orders", "o1", ":book", 4);
    assert_eq!(
        strings(&mut d, "out"),
        vec![
            row("o1", Some(":book+null"), 2),
            row("o1", Some("c1:book+Ada"), 3),
            row("o1", Some(":book+null"), 4)
        ]
    );
    assert_eq!(subscriptions(&d), 0);
}

#[test]
fn a_table_derived_from_the_result_sees_its_old_values() {
    // A filter deletes a row that stops matching only if it is told the
    // row's old value: the join keeps its results to tell it.
    let b = StreamsBuilder::new();
    let (orders, customers) = tables(&b);
    orders
        .join_foreign_key(
            &customers,
            |o: &String| customer(o),
            |o: &String, c: &String| show(o, Some(c)),
            Stored::as_("enriched"),
            s(),
        )
        .filter(|_, v| v.ends_with("+Ada"))
        .to_stream()
        .to("out", Produced::with(s(), ns()));
    let mut d = driver(b);
    kv(&mut d, "customers", "c1", "Ada", 1);
    kv(&mut d, "orders", "o1", "c1:book", 2);
    kv(&mut d, "customers", "c1", "Bea", 3);
    assert_eq!(
        strings(&mut d, "out"),
        vec![row("o1", Some("c1:book+Ada"), 2), row("o1", None, 3)]
    );
}

#[test]
fn the_join_and_its_subscriptions_are_kept_in_logged_stores() {
    let mut d = inner();
    kv(&mut d, "customers", "c1", "Ada", 1);
    kv(&mut d, "orders", "o1", "c1:book", 2);
    assert_eq!(
        strings(&mut d, "app-enriched-changelog"),
        vec![row("o1", Some("c1:book+Ada"), 2)]
    );
    assert_eq!(
        d.read_raw("app-enriched-subscription-store-changelog")
            .len(),
        1
    );
}

#[test]
fn a_foreign_key_join_is_cut_into_two_sub_topologies_around_its_two_internal_topics() {
    let topology = join(false).build().unwrap();
    let description = topology.describe();
    let subs: Vec<&str> = description.split("  Sub-topology: ").skip(1).collect();
    assert_eq!(subs.len(), 2, "{description}");
    // The left side writes subscriptions and reads answers; the right
    // side the other way round.
    let (left, right) = if subs[0].contains("\"orders\"") {
        (subs[0], subs[1])
    } else {
        (subs[1], subs[0])
    };
    let registration = "\"enriched-subscription-registration-topic\"";
    let response = "\"enriched-subscription-response-topic\"";
    for (side, name, reads, writes) in [
        (left, "left", response, registration),
        (right, "right", registration, response),
    ] {
        assert!(
            side.contains(&format!("(topics: [Internal({reads})])")),
            "the {name} side reads {reads}:\n{description}"
        );
        assert!(
            side.contains(&format!("(topic: Internal({writes}))")),
            "the {name} side writes {writes}:\n{description}"
        );
    }
    assert!(right.contains("\"customers\"") && !left.contains("\"customers\""));
    assert!(left.contains("KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-RESOLVER"));
    assert!(right.contains("\"enriched-subscription-store\""));
    let mut internal: Vec<_> = topology
        .internal_topics(APP)
        .into_iter()
        .map(|t| (t.name, t.compacted, t.partitions))
        .collect();
    internal.sort_by(|a, b| a.0.cmp(&b.0));
    let changelog = |name: &str| (name.to_string(), true, InternalPartitions::Writer);
    assert_eq!(
        internal,
        vec![
            changelog("app-customers-changelog"),
            changelog("app-enriched-changelog"),
            (REGISTRATION.to_string(), false, InternalPartitions::Reader),
            (RESPONSE.to_string(), false, InternalPartitions::Reader),
            changelog("app-enriched-subscription-store-changelog"),
            changelog("app-orders-changelog"),
        ]
    );
}

#[test]
fn the_subscription_topic_is_partitioned_like_the_right_table_and_the_response_topic_like_the_left()
{
    let topology = join(false).build().unwrap();
    let external = HashMap::from([("orders".to_string(), 3), ("customers".to_string(), 5)]);
    let counts = topology.partition_counts(APP, &external).unwrap();
    assert_eq!(counts.internal[REGISTRATION], 5);
    assert_eq!(counts.internal[RESPONSE], 3);
    let mut tasks: Vec<(bool, i32)> = topology
        .subtopologies()
        .iter()
        .map(|sub| {
            let reads_orders = sub
                .sources
                .iter()
                .any(|t| format!("{t:?}").contains("\"orders\""));
            (reads_orders, counts.subtopologies[sub.id])
        })
        .collect();
    tasks.sort();
    assert_eq!(tasks, vec![(false, 5), (true, 3)]);
    let missing = topology
        .partition_counts(APP, &HashMap::from([("orders".to_string(), 3)]))
        .unwrap_err();
    assert!(missing.contains("customers"), "{missing}");
}

#[test]
fn a_foreign_key_join_of_a_table_without_a_store_is_a_topology_error() {
    let b = StreamsBuilder::new();
    let (orders, customers) = tables(&b);
    orders.join_foreign_key(
        &customers.filter(|_, name| !name.is_empty()),
        |o: &String| customer(o),
        |o: &String, c: &String| show(o, Some(c)),
        Stored::as_("enriched"),
        s(),
    );
    let error = b.build().unwrap_err();
    assert!(error.to_string().contains("materialize"), "{error}");
}

#[test]
fn an_undecodable_answer_is_an_error_of_that_record_not_a_panic() {
    let mut d = inner();
    let error = d
        .pipe_raw(RESPONSE, Some(b"o1"), Some(b"garbage"), 1, &[])
        .unwrap_err();
    assert!(
        error.to_string().contains("subscription response"),
        "{error}"
    );
    let error = d
        .pipe_raw(REGISTRATION, Some(b"c1"), None, 2, &[])
        .unwrap_err();
    assert!(error.to_string().contains("subscription"), "{error}");
}
