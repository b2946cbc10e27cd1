//! Stateful stream processing on Kafka topics.
//!
//! `runnel-streams` is a Kafka client library in the spirit of Kafka
//! Streams: a DSL ([`StreamsBuilder`], [`KStream`], [`KTable`]) builds a
//! [`Topology`]; every sub-topology runs as one task per input partition;
//! tasks keep their state in stores backed by compacted changelog topics.
//! It talks the Kafka protocol only (it never links the broker), so it
//! runs against Runnel, Kafka or Redpanda alike.
//!
//! What is here: the DSL (stateless operators, grouping and aggregation,
//! tumbling/hopping/sliding/session windows with grace and suppression,
//! KTables, global tables ([`GlobalKTable`]: a whole topic on every
//! instance, joined by a stream on a key mapped from each record without
//! co-partitioning), stream–table, stream–stream and table–table joins,
//! foreign-key table–table joins through subscription and response
//! topics, event time taken from the records by a timestamp extractor),
//! the Processor API ([`KStream::process`] with a [`UserProcessor`]:
//! forwarding, key-value stores, punctuation on stream time and
//! wall-clock time), serdes ([`serdes`]; with the `avro` feature, Avro
//! in the Confluent wire format through a schema registry:
//! [`serdes::avro`]), state stores and their changelog writes, standby
//! replicas (`num_standby_replicas`), interactive queries over HTTP
//! ([`http`]), and a deterministic
//! [`TopologyTestDriver`] (with a virtual wall clock).
//!
//! ```
//! use runnel_streams::{serdes, Consumed, Produced, Stored, StreamsBuilder, TopologyTestDriver};
//! let builder = StreamsBuilder::new();
//! builder
//!     .stream("lines", Consumed::with(serdes::nullable(serdes::string()), serdes::string()))
//!     .flat_map_values(|l: String| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
//!     .group_by(|_, w: &String| w.clone(), serdes::string(), serdes::string())
//!     .count(Stored::as_("counts"))
//!     .to_stream()
//!     .to("counts", Produced::with(serdes::string(), serdes::nullable(serdes::i64())));
//! let mut driver = TopologyTestDriver::new(builder.build().unwrap(), "wordcount");
//! let (k, v) = (serdes::nullable(serdes::string()), serdes::string());
//! driver.pipe("lines", &k, &v, None, "a b a".to_string(), 0).unwrap();
//! let (s, c) = (serdes::string(), serdes::i64());
//! assert_eq!(driver.get("counts", &s, &c, &"a".to_string()), Some(2));
//! ```

pub mod builder;
pub mod fk_join;
pub mod global;
pub mod grouped;
pub mod http;
pub mod join;
pub mod kstream;
pub mod ktable;
mod nodes;
pub mod options;
pub mod processor;
pub mod processor_api;
pub mod query;
pub mod record;
pub mod runtime;
pub mod serdes;
pub mod sliding;
pub mod store;
pub mod test_driver;
pub mod topology;

pub use builder::{
    Consumed, Data, Produced, Stored, StreamsBuilder, TimestampExtractor, TopologyError,
};
pub use global::{GlobalKTable, GlobalStores};
pub use grouped::{
    KGroupedStream, SessionWindowedKStream, SessionWindows, TimeWindowedKStream, TimeWindows,
};
pub use join::{JoinWindows, StreamJoined};
pub use kstream::KStream;
pub use ktable::KTable;
pub use processor::{Cancellable, Output, PunctuationType, StreamsError, TaskMetrics};
pub use processor_api::{KeyValueStore, ProcessorContext, TypedKeyValueStore, UserProcessor};
pub use query::{KeyQueryMetadata, Query, QueryError};
pub use record::{Change, Headers, Record, Window, Windowed};
pub use runtime::{KafkaStreams, ProcessingGuarantee, RuntimeError, StreamsConfig, StreamsMetrics};
pub use sliding::{SlidingWindowedKStream, SlidingWindows};
pub use test_driver::TopologyTestDriver;
pub use topology::{
    ErrorHandling, InternalPartitions, InternalTopic, PartitionCounts, Task, TaskId, Topology,
};
