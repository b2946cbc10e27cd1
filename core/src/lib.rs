//! `runnel-core`: the Runnel broker.
//!
//! It speaks the Kafka wire protocol (through the `kafka-protocol` crate) and
//! stores partitions in a segmented log on local disk. It is a library: the
//! `runnel` binary wires it to configuration, signals and the command line.
//!
//! What it is not: a Kafka client library for applications (connectors and
//! stream processors use `rdkafka`), nor a schema registry.

pub mod storage;
