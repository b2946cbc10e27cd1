//! A Confluent-compatible schema registry for Avro.
//!
//! Pure parts (no I/O), also used by the broker for payload validation:
//! [`schema`] (parsing, references, canonical and normalised text),
//! [`compat`] (the seven compatibility levels), [`records`] (the
//! `_schemas` topic's keys and values), [`store`] (the registry state
//! rebuilt from those records, and the rules that turn requests into
//! records), [`validate`] (the Confluent wire format and an
//! allocation-free Avro body check) and [`error`] (Confluent's error
//! codes, mapped in one place).
//!
//! With the `server` feature (default): [`api`], the REST API on axum, and
//! [`kafka`], which keeps the state in a `_schemas` topic on any Kafka
//! broker through `rdkafka`.
//!
//! With the `client` feature: [`client`], a cached client of a registry's
//! REST API and JSON ⇄ Avro in the Confluent wire format, for Kafka
//! clients (connect's Avro converter, streams).
//!
//! What it is not: a registry for Protobuf or JSON Schema (only Avro).

pub mod compat;
pub mod error;
pub mod records;
pub mod schema;
pub mod store;
pub mod validate;

pub use compat::CompatibilityLevel;
pub use error::RegistryError;
pub use records::{Mode, SCHEMAS_TOPIC};
pub use store::Store;

#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "server")]
pub mod kafka;
#[cfg(feature = "server")]
pub mod service;

/// Percent-encodes one path segment of a REST API URL (a subject name or a
/// version), keeping only RFC 3986's unreserved characters as they are.
pub fn path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
