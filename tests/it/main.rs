//! Integration tests: each starts the real `runnel` binary on a free port in
//! a temp dir and drives it with real clients (librdkafka through `rdkafka`,
//! the `runnel` CLI, and a raw protocol client for exact requests).
//!
//! All tests are compiled into this one binary.

mod fault_proxy;
mod harness;

mod admin_configs;
mod append_rules;
mod broker_cli;
mod cli_tools;
mod cluster;
mod cluster_admin;
mod cluster_cli;
mod cluster_coordinators;
mod cluster_faults;
mod compaction;
mod connect;
mod console;
mod crash_recovery;
mod groups;
mod hostile_clients;
mod http_limits;
mod idempotence;
mod leader_epochs;
mod metrics;
mod old_formats;
mod old_versions;
mod pipeline;
mod plugin_cli;
mod postgres;
mod produce_consume;
mod protocol_errors;
mod resource_limits;
mod retention;
mod schema_registry;
mod streams;
mod streams_avro;
mod transactions;
mod transforms;
