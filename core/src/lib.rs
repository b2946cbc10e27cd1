//! `runnel-core`: the Runnel broker.
//!
//! It speaks the Kafka wire protocol (through the `kafka-protocol` crate) and
//! stores partitions in a segmented log on local disk. It is a library: the
//! `runnel` binary wires it to configuration, signals and the command line.
//!
//! Modules, bottom up: [`storage`] (segmented logs, no networking),
//! [`error`] and [`util`] (shared by everything above storage),
//! [`internal_topic`] (what coordinators need of an internal topic's
//! partitions), the coordinators [`group`], [`txn`] and [`schemas`] (built
//! only on that interface), [`broker`] (metadata, partitions, log
//! management, background maintenance; it owns and wires the
//! coordinators), [`server`] (the Kafka protocol listener) and [`client`]
//! (a minimal protocol client for admin tools, inter-broker requests and
//! tests). [`alloc`] guards the process against huge allocations declared
//! by malformed requests.
//!
//! [`controller`] is the metadata quorum (Raft, on `openraft`): the
//! metadata log, its image, and the controller's decisions; the broker's
//! `Metadata` runs one voter of it.
//!
//! [`replication`] holds partition replication's rules (leader and follower
//! side, `acks=all` waits) as pure state, used by the broker's partitions
//! and its replica fetcher.
//!
//! [`schemas`] validates produced payloads against the schema registry's
//! `_schemas` topic, read in process. [`transforms`] runs broker-side
//! topic transforms on top of the broker. [`log_limit`] keeps events a
//! peer can repeat at will (bad frames, cut connections, a full disk)
//! from flooding the log.
//!
//! What it is not: a Kafka client library for applications (connectors and
//! stream processors use `rdkafka`), nor a schema registry (it only reads
//! the registry's topic, with the rules of `runnel-schema-registry`).

pub mod alloc;
pub mod broker;
pub mod client;
pub mod config;
pub mod controller;
pub mod error;
pub mod group;
pub mod internal_topic;
pub use runnel_log_limit as log_limit;
pub mod replication;
pub mod schemas;
pub mod server;
pub mod storage;
pub mod transforms;
pub mod txn;
pub mod util;

// Unit tests decode hostile frames too; they need the same protection.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: alloc::GuardedAlloc = alloc::GuardedAlloc;
