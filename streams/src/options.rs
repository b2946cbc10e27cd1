//! The options the DSL's operators take (serdes of sources and sinks,
//! store names), what every key and value type is, and what a topology
//! definition can get wrong. Below the DSL types: they all use it.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::serdes::SerdeRef;
use crate::store::{StoreKind, StoreSpec};
use crate::topology::Graph;

/// What every key and value type in a topology is: records are copied
/// when a stream feeds several operators.
pub trait Data: Clone + 'static {}
impl<T: Clone + 'static> Data for T {}

/// A topology definition the DSL got wrong (a name used twice, a join
/// without the stores it needs, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topology: {}", .0.join("; "))]
pub struct TopologyError(pub Vec<String>);

pub(crate) fn add_store(graph: &mut Graph, spec: StoreSpec) -> String {
    let name = spec.name.clone();
    if graph.stores.contains_key(&name) {
        graph
            .errors
            .push(format!("state store {name} is declared twice"));
    }
    graph.stores.insert(name.clone(), spec);
    name
}

/// Where a record's event time comes from: its key, value and the
/// timestamp it has in its topic, in; milliseconds since the epoch out.
pub type TimestampExtractor<K, V> = Arc<dyn Fn(&K, &V, i64) -> i64 + Send + Sync>;

/// How a source reads its keys and values, and their event time.
pub struct Consumed<K, V> {
    pub(crate) key: SerdeRef<K>,
    pub(crate) value: SerdeRef<V>,
    pub(crate) timestamp: Option<TimestampExtractor<K, V>>,
}

impl<K, V> Consumed<K, V> {
    /// Keys and values read with these serdes; each record's event time is
    /// the timestamp it has in its topic.
    pub fn with(key: SerdeRef<K>, value: SerdeRef<V>) -> Consumed<K, V> {
        Consumed {
            key,
            value,
            timestamp: None,
        }
    }

    /// Each record's event time taken from the record itself (a field of
    /// its value, say) by `extract(key, value, topic timestamp)`: it is the
    /// record's timestamp from the source on (windows, stream time,
    /// punctuation, the timestamps of what the topology writes).
    ///
    /// A negative result is not a time: the record is skipped, logged and
    /// counted in `records_skipped`. (Kafka Streams' default extractor
    /// fails the application instead; log-and-skip is its alternative,
    /// chosen here so one bad record does not stop a pipeline.) For a
    /// table, a tombstone has no value to look into and keeps its topic
    /// timestamp.
    pub fn with_timestamp_extractor(
        mut self,
        extract: impl Fn(&K, &V, i64) -> i64 + Send + Sync + 'static,
    ) -> Consumed<K, V> {
        self.timestamp = Some(Arc::new(extract));
        self
    }
}

/// How a sink writes its keys and values.
pub struct Produced<K, V> {
    pub(crate) key: SerdeRef<K>,
    pub(crate) value: SerdeRef<V>,
}

impl<K, V> Produced<K, V> {
    pub fn with(key: SerdeRef<K>, value: SerdeRef<V>) -> Produced<K, V> {
        Produced { key, value }
    }
}

/// A state store's name and whether it has a changelog.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    pub(crate) name: Option<String>,
    pub(crate) logged: bool,
    _private: PhantomData<()>,
}

impl Stored {
    /// A store named `name` (queryable by that name), with a changelog.
    pub fn as_(name: &str) -> Stored {
        Stored {
            name: Some(name.to_string()),
            logged: true,
            _private: PhantomData,
        }
    }

    /// A store named by the topology, with a changelog.
    pub fn unnamed() -> Stored {
        Stored {
            name: None,
            logged: true,
            _private: PhantomData,
        }
    }

    /// No changelog: the store starts empty after a restart or a move.
    pub fn without_logging(mut self) -> Stored {
        self.logged = false;
        self
    }

    pub(crate) fn spec(
        &self,
        graph: &mut Graph,
        kind: StoreKind,
        default_prefix: &str,
    ) -> StoreSpec {
        let name = match &self.name {
            Some(n) => n.clone(),
            None => graph.name(&format!("{default_prefix}-STATE-STORE")),
        };
        StoreSpec {
            name,
            kind,
            logged: self.logged,
        }
    }
}
