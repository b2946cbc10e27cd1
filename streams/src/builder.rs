//! The DSL's entry point and the options its operators take.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

use crate::kstream::{source_node, KStream};
use crate::ktable::KTable;
use crate::serdes::SerdeRef;
use crate::store::{StoreKind, StoreSpec};
use crate::topology::{Graph, Topology};

/// What every key and value type in a topology is: records are copied
/// when a stream feeds several operators.
pub trait Data: Clone + 'static {}
impl<T: Clone + 'static> Data for T {}

/// A topology definition the DSL got wrong (a name used twice, a join
/// without the stores it needs, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topology: {}", .0.join("; "))]
pub struct TopologyError(pub Vec<String>);

/// Builds a [`Topology`] with Kafka Streams' DSL.
///
/// ```
/// use runnel_streams::{serdes, Consumed, Produced, Stored, StreamsBuilder};
/// let builder = StreamsBuilder::new();
/// builder
///     .stream("lines", Consumed::with(serdes::nullable(serdes::string()), serdes::string()))
///     .flat_map_values(|line: String| {
///         line.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>()
///     })
///     .group_by(|_, word: &String| word.clone(), serdes::string(), serdes::string())
///     .count(Stored::as_("counts"))
///     .to_stream()
///     .to("word-counts", Produced::with(serdes::string(), serdes::nullable(serdes::i64())));
/// let topology = builder.build().unwrap();
/// assert_eq!(topology.subtopologies().len(), 2); // split at the repartition topic
/// ```
#[derive(Clone, Default)]
pub struct StreamsBuilder {
    pub(crate) graph: Rc<RefCell<Graph>>,
}

impl StreamsBuilder {
    pub fn new() -> StreamsBuilder {
        StreamsBuilder::default()
    }

    /// A stream of the records of `topic`.
    pub fn stream<K: Data, V: Data>(&self, topic: &str, consumed: Consumed<K, V>) -> KStream<K, V> {
        self.streams(&[topic], consumed)
    }

    /// One stream of the records of several topics.
    pub fn streams<K: Data, V: Data>(
        &self,
        topics: &[&str],
        consumed: Consumed<K, V>,
    ) -> KStream<K, V> {
        let topics = topics
            .iter()
            .map(|t| crate::topology::TopicName::External(t.to_string()))
            .collect();
        let node = source_node(&self.graph, topics, consumed.key, consumed.value);
        KStream::new(self.graph.clone(), node, false)
    }

    /// A table of the latest value per key of `topic` (a null value
    /// deletes the key), materialized in a store.
    pub fn table<K: Data, V: Data>(
        &self,
        topic: &str,
        consumed: Consumed<K, V>,
        stored: Stored,
    ) -> KTable<K, V> {
        KTable::from_topic(self, topic, consumed, stored)
    }

    /// The topology, or what is wrong with it.
    pub fn build(self) -> Result<Topology, TopologyError> {
        let mut graph = std::mem::take(&mut *self.graph.borrow_mut());
        // A task hands each input record to the one source of its topic:
        // as in Kafka Streams, a topic is read once (a stream can be used
        // several times). Repartition topics are checked where declared.
        let mut read = std::collections::BTreeSet::new();
        for topic in graph.nodes.iter().flat_map(|n| n.sources.iter()) {
            if let crate::topology::TopicName::External(name) = topic {
                if !read.insert(name.clone()) {
                    graph
                        .errors
                        .push(format!("topic {name} is read by more than one source"));
                }
            }
        }
        if !graph.errors.is_empty() {
            return Err(TopologyError(graph.errors));
        }
        Ok(Topology::new(graph))
    }
}

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

/// How a source reads its keys and values.
pub struct Consumed<K, V> {
    pub(crate) key: SerdeRef<K>,
    pub(crate) value: SerdeRef<V>,
}

impl<K, V> Consumed<K, V> {
    pub fn with(key: SerdeRef<K>, value: SerdeRef<V>) -> Consumed<K, V> {
        Consumed { key, value }
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
