//! Order enrichment, a stream–table join: orders in `orders` (key: the
//! customer id, JSON `{"id", "amount"}`) joined with the latest customer
//! record in `customers` (a compacted topic, key: the customer id, JSON
//! `{"name", "tier"}`) → `enriched-orders`. Orders of unknown customers
//! go on with `"customer": null` (a left join).
//!
//! ```text
//! runnel topic create customers --partitions 3 --config cleanup.policy=compact
//! runnel topic create orders --partitions 3
//! runnel topic create enriched-orders --partitions 3
//! cargo run -p runnel-streams --example order_enrichment
//! ```
//! Both input topics must have the same number of partitions
//! (co-partitioned), as in Kafka Streams.

#[path = "run.rs"]
mod run;

use runnel_streams::{serdes, Consumed, Produced, Stored, StreamsBuilder, Topology};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Order {
    id: String,
    amount: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Customer {
    name: String,
    tier: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct EnrichedOrder {
    id: String,
    amount: f64,
    customer: Option<Customer>,
}

fn topology() -> Topology {
    let builder = StreamsBuilder::new();
    let customers = builder.table(
        "customers",
        Consumed::with(serdes::string(), serdes::json::<Customer>()),
        Stored::as_("customers-store"),
    );
    builder
        .stream(
            "orders",
            Consumed::with(serdes::string(), serdes::json::<Order>()),
        )
        .left_join_table(
            &customers,
            serdes::string(),
            |order: &Order, customer: Option<&Customer>| EnrichedOrder {
                id: order.id.clone(),
                amount: order.amount,
                customer: customer.cloned(),
            },
        )
        .to(
            "enriched-orders",
            Produced::with(serdes::string(), serdes::json::<EnrichedOrder>()),
        );
    builder.build().expect("a valid topology")
}

fn main() {
    run::run("order-enrichment", topology());
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_streams::TopologyTestDriver;

    #[test]
    fn orders_carry_the_customer_as_of_the_order_and_unknown_customers_get_none() {
        let mut driver = TopologyTestDriver::new(topology(), "order-enrichment");
        let (k, c, o) = (
            serdes::string(),
            serdes::json::<Customer>(),
            serdes::json::<Order>(),
        );
        let order = |id: &str| Order {
            id: id.into(),
            amount: 9.5,
        };
        driver
            .pipe("orders", &k, &o, "c1".into(), order("o1"), 1)
            .unwrap();
        let gold = Customer {
            name: "Ada".into(),
            tier: "gold".into(),
        };
        driver
            .pipe("customers", &k, &c, "c1".into(), gold.clone(), 2)
            .unwrap();
        driver
            .pipe("orders", &k, &o, "c1".into(), order("o2"), 3)
            .unwrap();
        // A tombstone removes the customer.
        driver
            .pipe_raw("customers", Some(b"c1"), None, 4, &[])
            .unwrap();
        driver
            .pipe("orders", &k, &o, "c1".into(), order("o3"), 5)
            .unwrap();
        let out: Vec<_> = driver
            .read_key_values("enriched-orders", &k, &serdes::json::<EnrichedOrder>())
            .unwrap()
            .into_iter()
            .map(|(_, v)| (v.id, v.customer))
            .collect();
        assert_eq!(
            out,
            vec![
                ("o1".into(), None),
                ("o2".into(), Some(gold)),
                ("o3".into(), None)
            ]
        );
    }
}
