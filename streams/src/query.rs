//! Interactive queries: reading an application's state stores from
//! outside the topology, and finding which instance holds a key.
//!
//! A store is split across tasks (one per partition) and tasks across
//! instances. A query runs on the thread that owns the tasks (the stream
//! thread, or the test driver's), over the stores of this instance's
//! tasks ([`answer`]); [`crate::http`] serves that over HTTP and sends a
//! client to the instance that owns a key when it is not here.
//!
//! Which instance owns a key: the key's partition is what Java's default
//! partitioner (murmur2, the one the runtime's producer uses for
//! repartition topics) gives for the key's bytes, and the owner is the
//! group member assigned that partition of the store's input topics. A
//! store fed straight from an input topic that a producer partitioned
//! otherwise (librdkafka's default, `consistent_random`, hashes with
//! CRC32) has its keys elsewhere: a lookup therefore searches every local
//! task first and only then asks the owner.
//!
//! A global store (see [`crate::global`]) is whole on every instance: it
//! answers locally, and has no owner to send a client to.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::global::GlobalStores;
use crate::serdes::{self, SerdeError};
use crate::store::StateStore;
use crate::store::{self, StoreKind};
pub use crate::store::{codec, StoreCodec};
use crate::topology::{Task, TaskId, Topology};

/// The codec of a store the topology declared without one (join buffers,
/// suppression buffers): keys and values shown as raw bytes.
struct RawCodec;

impl StoreCodec for RawCodec {
    fn key_from_text(&self, text: &str) -> Result<Vec<u8>, SerdeError> {
        Ok(text.as_bytes().to_vec())
    }
    fn key_to_json(&self, bytes: &[u8]) -> Value {
        serdes::raw_json(bytes)
    }
    fn value_to_json(&self, bytes: &[u8]) -> Value {
        serdes::raw_json(bytes)
    }
    fn window_size_ms(&self) -> Option<i64> {
        None
    }
}

/// Why a query got no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("no state store named {0:?} in this application")]
    UnknownStore(String),
    #[error("{0}")]
    BadRequest(String),
    /// The stores are not available for now (the instance is starting,
    /// restoring, rebalancing or stopping).
    #[error("{0}")]
    Unavailable(String),
}

/// Most entries one range query answers.
pub const MAX_RANGE_LIMIT: usize = 10_000;

/// A read of one store on this instance. Keys are bytes as the store
/// holds them (see [`StoreCodec::key_from_text`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// A key-value store's value of a key; a window store's windows of
    /// the key starting in `[from_ms, to_ms]`; a session store's sessions
    /// of the key ending in it.
    Key {
        store: String,
        key: Vec<u8>,
        from_ms: i64,
        to_ms: i64,
    },
    /// Entries of a store in key order (a key-value store: keys in
    /// `[from, to)`, bounds optional), at most `limit`.
    Range {
        store: String,
        from: Option<Vec<u8>>,
        to: Option<Vec<u8>>,
        limit: usize,
    },
    /// The stores of this instance: tasks and entries per store.
    Stores,
}

/// One entry a query found, as JSON (key, value, and for windowed stores
/// the window).
pub type Found = Value;

fn store_kind(topology: &Topology, store: &str) -> Result<StoreKind, QueryError> {
    topology
        .store_spec(store)
        .map(|s| s.kind)
        .ok_or_else(|| QueryError::UnknownStore(store.to_string()))
}

/// The codec of `store` (raw when the topology gave it none).
pub fn store_codec(topology: &Topology, store: &str) -> Result<Arc<dyn StoreCodec>, QueryError> {
    store_kind(topology, store)?;
    Ok(topology
        .store_codec(store)
        .unwrap_or_else(|| Arc::new(RawCodec)))
}

/// Answers `query` from `tasks` (this instance's) and the instance's
/// global stores: the entries found, in key order across tasks. A global
/// store is whole on every instance, so its answers are always local
/// (their `"task"` is `"global"`).
pub fn answer<'a>(
    topology: &Topology,
    tasks: impl Iterator<Item = &'a Task>,
    globals: &GlobalStores,
    query: &Query,
) -> Result<Value, QueryError> {
    let tasks: Vec<&Task> = tasks.collect();
    // The stores a query of `store` reads, each with what holds it.
    let holders = |store: &str| -> Vec<(String, &StateStore)> {
        match globals.store(store) {
            Some(s) => vec![("global".to_string(), s)],
            None => tasks
                .iter()
                .filter_map(|t| Some((t.id.to_string(), t.store(store)?)))
                .collect(),
        }
    };
    match query {
        Query::Stores => {
            let mut stores: BTreeMap<String, (Vec<String>, usize)> = BTreeMap::new();
            for t in &tasks {
                for name in t.store_names() {
                    let entry = stores.entry(name.to_string()).or_default();
                    entry.0.push(t.id.to_string());
                    entry.1 += t.store(name).map_or(0, |s| s.len());
                }
            }
            for name in globals.store_names() {
                let entries = globals.store(name).map_or(0, |s| s.len());
                stores.insert(name.to_string(), (vec!["global".to_string()], entries));
            }
            let list: Vec<Value> = stores
                .into_iter()
                .map(|(name, (tasks, entries))| {
                    let kind = match topology.store_spec(&name).map(|s| s.kind) {
                        Some(StoreKind::Window { .. } | StoreKind::TimestampedWindow { .. }) => {
                            "window"
                        }
                        Some(StoreKind::Session { .. }) => "session",
                        _ => "key-value",
                    };
                    let global = topology.is_global_store(&name);
                    json!({"name": name, "kind": kind, "tasks": tasks, "approximate_entries": entries, "global": global})
                })
                .collect();
            Ok(Value::Array(list))
        }
        Query::Key {
            store,
            key,
            from_ms,
            to_ms,
        } => {
            let kind = store_kind(topology, store)?;
            let codec = store_codec(topology, store)?;
            let mut found = Vec::new();
            for (holder, s) in holders(store) {
                match kind {
                    StoreKind::KeyValue => {
                        if let Some(v) = s.get(key) {
                            found.push(json!({
                                "key": codec.key_to_json(key),
                                "value": codec.value_to_json(&v),
                                "task": holder,
                            }));
                        }
                    }
                    StoreKind::Window { .. } | StoreKind::TimestampedWindow { .. } => {
                        let (low, high) = store::window_range(key, *from_ms, *to_ms);
                        for (k, v) in s.range(&low, &high) {
                            if let Some(w) = window_entry(&*codec, kind, &k, &v, &holder) {
                                found.push(w);
                            }
                        }
                    }
                    StoreKind::Session { .. } => {
                        let (low, high) = store::sessions_ending_from(key, *from_ms);
                        for (k, v) in s.range(&low, &high) {
                            if let Some(e) = session_entry(&*codec, &k, &v, &holder) {
                                if e["end"].as_i64().is_some_and(|end| end <= *to_ms) {
                                    found.push(e);
                                }
                            }
                        }
                    }
                }
            }
            Ok(Value::Array(found))
        }
        Query::Range {
            store,
            from,
            to,
            limit,
        } => {
            let kind = store_kind(topology, store)?;
            let codec = store_codec(topology, store)?;
            if kind != StoreKind::KeyValue && (from.is_some() || to.is_some()) {
                return Err(QueryError::BadRequest(format!(
                    "{store} is a windowed store: its ranges are by key and time (GET /stores/{store}/{{key}}?from=&to=), not by key bounds"
                )));
            }
            let limit = (*limit).min(MAX_RANGE_LIMIT);
            let low = from.clone().unwrap_or_default();
            // Each task's first `limit` entries from `low`, merged in key
            // order, cut at `limit`.
            let mut all: Vec<(Vec<u8>, Vec<u8>, String)> = Vec::new();
            for (holder, s) in holders(store) {
                let entries = match to {
                    Some(high) => {
                        let mut e = s.range(&low, high);
                        e.truncate(limit);
                        e
                    }
                    None => s.range_from(&low, limit),
                };
                all.extend(entries.into_iter().map(|(k, v)| (k, v, holder.clone())));
            }
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all.truncate(limit);
            let found = all
                .into_iter()
                .filter_map(|(k, v, holder)| match kind {
                    StoreKind::KeyValue => Some(json!({
                        "key": codec.key_to_json(&k),
                        "value": codec.value_to_json(&v),
                        "task": holder,
                    })),
                    StoreKind::Window { .. } | StoreKind::TimestampedWindow { .. } => {
                        window_entry(&*codec, kind, &k, &v, &holder)
                    }
                    StoreKind::Session { .. } => session_entry(&*codec, &k, &v, &holder),
                })
                .collect();
            Ok(Value::Array(found))
        }
    }
}

fn window_entry(
    codec: &dyn StoreCodec,
    kind: StoreKind,
    stored: &[u8],
    value: &[u8],
    task: &str,
) -> Option<Value> {
    let (key, start, _) = store::split_window_key(stored)?;
    // A timestamped window's value starts with its latest record's time.
    let value = match kind {
        StoreKind::TimestampedWindow { .. } => value.get(8..)?,
        _ => value,
    };
    let mut entry = json!({
        "key": codec.key_to_json(key),
        "start": start,
        "value": codec.value_to_json(value),
        "task": task,
    });
    if let Some(size) = codec.window_size_ms() {
        entry["end"] = json!(start.saturating_add(size));
    }
    Some(entry)
}

fn session_entry(codec: &dyn StoreCodec, stored: &[u8], value: &[u8], task: &str) -> Option<Value> {
    let (key, start, end) = store::split_session_key(stored)?;
    Some(json!({
        "key": codec.key_to_json(key),
        "start": start,
        "end": end,
        "value": codec.value_to_json(value),
        "task": task,
    }))
}

/// Kafka's murmur2 (the Java client's default partitioner's hash, and
/// librdkafka's `murmur2` partitioners').
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Java's default partitioner gives a key among
/// `partitions`.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// One instance of an application, as its consumer group describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Its `application.server` (`host:port`), if it serves queries.
    pub server: Option<String>,
    pub member_id: String,
    pub client_host: String,
    /// The input partitions the group assigned it.
    pub partitions: Vec<(String, i32)>,
}

/// The client id an instance's consumer uses: the application id, and
/// the query server after `@` (how other instances learn where it
/// serves: the group's description carries client ids).
pub fn client_id(application_id: &str, server: Option<&str>) -> String {
    match server {
        Some(s) => format!("{application_id}@{s}"),
        None => application_id.to_string(),
    }
}

/// The query server a client id names (see [`client_id`]).
pub fn server_of(client_id: &str) -> Option<String> {
    let (_, server) = client_id.rsplit_once('@')?;
    (!server.is_empty()).then(|| server.to_string())
}

/// The partitions a consumer group member's assignment (the consumer
/// protocol's `ConsumerProtocolAssignment`) lists.
pub fn assigned_partitions(assignment: &[u8]) -> Result<Vec<(String, i32)>, String> {
    use kafka_protocol::protocol::Decodable;
    if assignment.is_empty() {
        return Ok(Vec::new());
    }
    let mut buf = bytes::Bytes::copy_from_slice(assignment);
    if buf.len() < 2 {
        return Err("an assignment shorter than its version".into());
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    let _ = bytes::Buf::get_i16(&mut buf);
    // Later versions only add fields at the end: read them as the newest
    // this crate knows.
    let decoded =
        kafka_protocol::messages::ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3))
            .map_err(|e| format!("an undecodable assignment: {e}"))?;
    Ok(decoded
        .assigned_partitions
        .into_iter()
        .flat_map(|t| {
            let topic = t.topic.0.to_string();
            t.partitions.into_iter().map(move |p| (topic.clone(), p))
        })
        .collect())
}

/// Where a key of a store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyQueryMetadata {
    pub partition: i32,
    /// The task that holds the partition's part of the store.
    pub task: TaskId,
    /// The instance the group assigned it to, if any (none while a
    /// rebalance is under way).
    pub owner: Option<Instance>,
}

/// The owner of `key` of `store`, given the sub-topologies' partition
/// counts and the group's instances.
pub fn key_owner(
    topology: &Topology,
    application_id: &str,
    partitions: &[i32],
    instances: &[Instance],
    store: &str,
    key: &[u8],
) -> Result<KeyQueryMetadata, QueryError> {
    store_kind(topology, store)?;
    if topology.is_global_store(store) {
        return Err(QueryError::BadRequest(format!(
            "{store} is a global store: every instance holds all of it, ask any one"
        )));
    }
    let sub = topology
        .subtopologies()
        .iter()
        .find(|s| s.stores.iter().any(|n| n == store))
        .ok_or_else(|| QueryError::UnknownStore(store.to_string()))?;
    let count = partitions.get(sub.id).copied().unwrap_or(1);
    let partition = partition_for(key, count);
    let inputs: Vec<String> = sub
        .sources
        .iter()
        .map(|t| t.resolve(application_id))
        .collect();
    let owner = instances
        .iter()
        .find(|i| {
            i.partitions
                .iter()
                .any(|(t, p)| *p == partition && inputs.contains(t))
        })
        .cloned();
    Ok(KeyQueryMetadata {
        partition,
        task: TaskId {
            subtopology: sub.id,
            partition,
        },
        owner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_clients_hash() {
        // The values of Kafka's own `Utils.murmur2` for these strings.
        for (text, hash) in [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ] {
            assert_eq!(murmur2(text.as_bytes()), hash, "{text}");
        }
        assert!((0..4).contains(&partition_for(b"foobar", 4)));
    }

    #[test]
    fn a_query_server_rides_in_the_client_id() {
        assert_eq!(
            server_of(&client_id("app", Some("127.0.0.1:7070"))),
            Some("127.0.0.1:7070".to_string())
        );
        assert_eq!(server_of(&client_id("app", None)), None);
        assert_eq!(server_of("rdkafka"), None);
    }

    #[test]
    fn an_assignment_decodes_to_its_partitions_and_garbage_is_an_error() {
        use kafka_protocol::messages::{ConsumerProtocolAssignment, TopicName};
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            kafka_protocol::messages::consumer_protocol_assignment::TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_static_str("clicks")))
                .with_partitions(vec![0, 2]),
        ]);
        let mut buf = bytes::BytesMut::new();
        buf.extend_from_slice(&1i16.to_be_bytes());
        assignment.encode(&mut buf, 1).unwrap();
        assert_eq!(
            assigned_partitions(&buf).unwrap(),
            vec![("clicks".to_string(), 0), ("clicks".to_string(), 2)]
        );
        assert_eq!(assigned_partitions(&[]).unwrap(), vec![]);
        assert!(assigned_partitions(&[0, 1, 0, 0, 0, 9]).is_err());
    }
}
