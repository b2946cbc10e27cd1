//! `runnel-connect`: a connector runtime, like Kafka Connect, that is a
//! Kafka client (through `rdkafka`): it works against Runnel, Kafka or
//! Redpanda alike and never links the broker.
//!
//! [`plugin`] defines connectors (a plugin that splits its config into
//! tasks; source tasks poll records from outside, sink tasks write records
//! outside); [`connectors`] holds the built-in ones; [`converter`] turns
//! data into record bytes and back; [`worker`] runs tasks with
//! at-least-once delivery and keeps configs, source offsets and status in
//! compacted topics ([`store`]); [`rest`] is the Kafka-Connect-compatible
//! REST API; [`metrics`] counts failed records and refused requests.

pub mod avro;
pub mod cluster;
pub mod config;
pub mod connectors;
pub mod converter;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod record;
pub mod rest;
pub mod store;
pub mod worker;
