//! A Confluent-compatible schema registry for Avro.
//!
//! Pure parts (no I/O), used by the broker for payload validation:
//! [`schema`] (parsing, references, normalisation), [`compat`] (the seven
//! compatibility levels), [`records`] (the `_schemas` topic's keys and
//! values), [`store`] (the registry state rebuilt from those records) and
//! [`validate`] (the Confluent wire format and an allocation-free Avro body
//! check).
//!
//! With the `server` feature (default): [`api`], the REST API on axum, and
//! [`kafka`], which keeps the state in a `_schemas` topic on any Kafka
//! broker through `rdkafka`.

pub mod validate;
