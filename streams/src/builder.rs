//! The DSL's entry point.

use std::cell::RefCell;
use std::rc::Rc;

use crate::global::GlobalKTable;
use crate::kstream::KStream;
use crate::ktable::KTable;
use crate::nodes::source_node;
pub use crate::options::{Consumed, Data, Produced, Stored, TimestampExtractor, TopologyError};
use crate::topology::{Graph, Topology};

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
        let node = source_node(
            &self.graph,
            topics,
            consumed.key,
            consumed.value,
            consumed.timestamp,
        );
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
        KTable::from_topic(&self.graph, topic, consumed, stored)
    }

    /// A global table of `topic`: every partition of it held by every
    /// instance in the global store `stored` names (no changelog: the
    /// topic is one), for [`KStream::join_global`] on any key a stream
    /// record maps to. See [`crate::global`].
    pub fn global_table<K: Data, V: Data>(
        &self,
        topic: &str,
        consumed: Consumed<K, V>,
        stored: Stored,
    ) -> GlobalKTable<K, V> {
        GlobalKTable::from_topic(&self.graph, topic, consumed, stored)
    }

    /// The topology, or what is wrong with it.
    pub fn build(self) -> Result<Topology, TopologyError> {
        let mut graph = std::mem::take(&mut *self.graph.borrow_mut());
        // A task hands each input record to the one source of its topic:
        // as in Kafka Streams, a topic is read once (a stream can be used
        // several times). Repartition topics are checked where declared.
        // A global table's topic is read by no task: it cannot also be a
        // task's input.
        let mut read = std::collections::BTreeSet::new();
        let sources = graph.nodes.iter().flat_map(|n| n.sources.iter());
        let globals = graph.globals.values().map(|g| &g.topic);
        let external = sources
            .filter_map(|t| match t {
                crate::topology::TopicName::External(name) => Some(name),
                crate::topology::TopicName::Internal(_) => None,
            })
            .chain(globals);
        let mut twice = Vec::new();
        for name in external {
            if !read.insert(name.clone()) {
                twice.push(format!("topic {name} is read by more than one source"));
            }
        }
        graph.errors.extend(twice);
        if !graph.errors.is_empty() {
            return Err(TopologyError(graph.errors));
        }
        Ok(Topology::new(graph))
    }
}
