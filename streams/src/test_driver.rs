//! A deterministic way to run a topology without a broker or threads,
//! like Kafka Streams' `TopologyTestDriver`: pipe records (with their
//! timestamps) into input topics, read what the topology wrote to its
//! output topics, look into its stores.
//!
//! Every topic has one partition here, so each sub-topology is one task.
//! What a task writes to a topic another task reads (a repartition
//! topic) is handed to it at once, in order. Stores are in memory; their
//! changelog writes can be read like any output topic. A record piped
//! into (or written to) a global table's topic updates its global store
//! at once, before the next record. Wall-clock
//! punctuators follow a virtual clock that only
//! [`TopologyTestDriver::advance_wall_clock_time`] moves.
//!
//! ```
//! use runnel_streams::{serdes, Consumed, Produced, StreamsBuilder, TopologyTestDriver};
//! let builder = StreamsBuilder::new();
//! builder
//!     .stream("in", Consumed::with(serdes::string(), serdes::string()))
//!     .map_values(|v: String| v.to_uppercase())
//!     .to("out", Produced::with(serdes::string(), serdes::string()));
//! let mut driver = TopologyTestDriver::new(builder.build().unwrap(), "app");
//! let (s, s2) = (serdes::string(), serdes::string());
//! driver.pipe("in", &s, &s2, "k".to_string(), "hello".to_string(), 1_000).unwrap();
//! let out = driver.read_output("out", &s, &s2).unwrap();
//! assert_eq!(out[0].value, "HELLO");
//! assert_eq!(out[0].timestamp, 1_000);
//! ```

use std::collections::{BTreeMap, VecDeque};

use crate::global::{GlobalRecord, GlobalStores};
use crate::processor::{Output, StreamsError, TaskMetrics};
use crate::query::{Query, QueryError};
use crate::record::{Record, Window};
use crate::serdes::{SerdeError, SerdeRef};
use crate::store::{self, StateStore, StoreKind};
use crate::topology::{ErrorHandling, Input, Task, Topology};

/// Runs a topology in the calling thread, one record at a time.
pub struct TopologyTestDriver {
    topology: Topology,
    tasks: Vec<Task>,
    /// The global stores every task reads.
    globals: GlobalStores,
    on_error: ErrorHandling,
    /// What each topic received, not yet read.
    topics: BTreeMap<String, VecDeque<Output>>,
    /// The next offset per topic.
    offsets: BTreeMap<String, i64>,
    /// The virtual wall clock wall-clock punctuators follow, milliseconds.
    wall_clock_ms: i64,
}

impl TopologyTestDriver {
    pub fn new(topology: Topology, application_id: &str) -> TopologyTestDriver {
        let globals = GlobalStores::in_memory(&topology);
        let tasks = (0..topology.subtopologies().len())
            .map(|s| {
                let mut task = topology.task_in_memory(application_id, s, 0);
                task.attach_global_stores(globals.handles());
                task
            })
            .collect();
        TopologyTestDriver {
            topology,
            tasks,
            globals,
            on_error: ErrorHandling::Fail,
            topics: BTreeMap::new(),
            offsets: BTreeMap::new(),
            wall_clock_ms: 0,
        }
    }

    /// Starts the virtual wall clock at `ms` instead of 0 (call it before
    /// piping anything: processors start, and schedule their wall-clock
    /// punctuators, at the first record or clock advance).
    pub fn with_wall_clock_start(mut self, ms: i64) -> TopologyTestDriver {
        self.wall_clock_ms = ms;
        for t in &mut self.tasks {
            t.set_wall_clock_ms(ms);
        }
        self
    }

    /// The virtual wall clock, milliseconds.
    pub fn wall_clock_time(&self) -> i64 {
        self.wall_clock_ms
    }

    /// Moves the virtual wall clock `ms` forward and runs the wall-clock
    /// punctuators that fell due (each once, however far the clock moved);
    /// what they write is routed like the outputs of a piped record.
    pub fn advance_wall_clock_time(&mut self, ms: i64) -> Result<(), StreamsError> {
        self.wall_clock_ms = self.wall_clock_ms.saturating_add(ms.max(0));
        let mut queue = VecDeque::new();
        for task in &mut self.tasks {
            task.punctuate_wall_clock(self.wall_clock_ms, &self.on_error)?;
            queue.extend(task.take_outputs());
        }
        self.deliver(queue, false)
    }

    /// What a failing record does (by default the error is returned).
    pub fn with_error_handling(mut self, on_error: ErrorHandling) -> TopologyTestDriver {
        self.on_error = on_error;
        self
    }

    /// Copies records later than their grace to `topic`.
    pub fn with_late_records_topic(mut self, topic: &str) -> TopologyTestDriver {
        for t in &mut self.tasks {
            t.set_late_records_topic(Some(topic.to_string()));
        }
        self
    }

    /// Pipes a typed record into `topic`.
    pub fn pipe<K: 'static, V: 'static>(
        &mut self,
        topic: &str,
        key_serde: &SerdeRef<K>,
        value_serde: &SerdeRef<V>,
        key: K,
        value: V,
        timestamp: i64,
    ) -> Result<(), StreamsError> {
        let serialize = |what, error: SerdeError| StreamsError::Serialize {
            what,
            target: format!("topic {topic}"),
            error,
        };
        let k = key_serde.serialize(&key).map_err(|e| serialize("key", e))?;
        let v = value_serde
            .serialize(&value)
            .map_err(|e| serialize("value", e))?;
        self.pipe_raw(topic, k.as_deref(), v.as_deref(), timestamp, &[])
    }

    /// Pipes a record of raw bytes (`None`: null) into `topic`.
    pub fn pipe_raw(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: &[(String, Option<Vec<u8>>)],
    ) -> Result<(), StreamsError> {
        let mut queue = VecDeque::new();
        queue.push_back(Output {
            topic: topic.to_string(),
            partition: Some(0),
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            timestamp,
            headers: headers.to_vec(),
        });
        self.deliver(queue, true)
    }

    /// Writes the records of `queue` to their topics and runs them through
    /// the tasks reading those, with what they write in turn, in order.
    /// With `first_is_input`, the first record is an input piped in, not
    /// kept for `read_raw`.
    fn deliver(
        &mut self,
        mut queue: VecDeque<Output>,
        first_is_input: bool,
    ) -> Result<(), StreamsError> {
        let mut first = first_is_input;
        while let Some(record) = queue.pop_front() {
            let offset = {
                let next = self.offsets.entry(record.topic.clone()).or_insert(0);
                *next += 1;
                *next - 1
            };
            if !first {
                self.topics
                    .entry(record.topic.clone())
                    .or_default()
                    .push_back(record.clone());
            }
            first = false;
            if self.globals.reads(&record.topic) {
                let global = GlobalRecord {
                    partition: 0,
                    offset,
                    key: record.key.clone(),
                    value: record.value.clone(),
                };
                self.globals
                    .apply(&record.topic, &[global], &self.on_error)?;
                if let Some(e) = self.globals.failure() {
                    return Err(StreamsError::Processing(e));
                }
                // No task reads a global topic (`build` refuses one).
                continue;
            }
            for task in &mut self.tasks {
                if !task.source_topics().any(|t| t == record.topic) {
                    continue;
                }
                task.process(
                    Input {
                        topic: &record.topic,
                        partition: 0,
                        offset,
                        key: record.key.as_deref(),
                        value: record.value.as_deref(),
                        timestamp: record.timestamp,
                        headers: &record.headers,
                    },
                    &self.on_error,
                )?;
                queue.extend(task.take_outputs());
            }
        }
        Ok(())
    }

    /// Every record written to `topic` since the last read, as written.
    pub fn read_raw(&mut self, topic: &str) -> Vec<Output> {
        self.topics
            .get_mut(topic)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default()
    }

    /// Every record written to `topic` since the last read, decoded.
    pub fn read_output<K: 'static, V: 'static>(
        &mut self,
        topic: &str,
        key_serde: &SerdeRef<K>,
        value_serde: &SerdeRef<V>,
    ) -> Result<Vec<Record<K, V>>, SerdeError> {
        self.read_raw(topic)
            .into_iter()
            .map(|o| {
                Ok(Record {
                    key: key_serde.deserialize(o.key.as_deref())?,
                    value: value_serde.deserialize(o.value.as_deref())?,
                    timestamp: o.timestamp,
                    headers: o.headers,
                })
            })
            .collect()
    }

    /// Key and value of every record written to `topic` since the last
    /// read.
    pub fn read_key_values<K: 'static, V: 'static>(
        &mut self,
        topic: &str,
        key_serde: &SerdeRef<K>,
        value_serde: &SerdeRef<V>,
    ) -> Result<Vec<(K, V)>, SerdeError> {
        Ok(self
            .read_output(topic, key_serde, value_serde)?
            .into_iter()
            .map(|r| (r.key, r.value))
            .collect())
    }

    /// The store named `name`: a global store, or in whichever task has
    /// it.
    pub fn store(&self, name: &str) -> Option<&StateStore> {
        self.globals
            .store(name)
            .or_else(|| self.tasks.iter().find_map(|t| t.store(name)))
    }

    /// A key-value store's value for `key`.
    pub fn get<K: 'static, V: 'static>(
        &self,
        store: &str,
        key_serde: &SerdeRef<K>,
        value_serde: &SerdeRef<V>,
        key: &K,
    ) -> Option<V> {
        let kb = key_serde.serialize(key).ok()??;
        let vb = self.store(store)?.get(&kb)?;
        value_serde.deserialize(Some(&vb)).ok()
    }

    /// A window store's windows of `key` starting in `[from_ms, to_ms]`
    /// (for sliding windows: the aggregates, without their timestamps).
    pub fn fetch_windows<K: 'static, V: 'static>(
        &self,
        store: &str,
        key_serde: &SerdeRef<K>,
        value_serde: &SerdeRef<V>,
        key: &K,
        from_ms: i64,
        to_ms: i64,
    ) -> Vec<(i64, V)> {
        let (Some(s), Ok(Some(kb))) = (self.store(store), key_serde.serialize(key)) else {
            return Vec::new();
        };
        let (low, high) = store::window_range(&kb, from_ms, to_ms);
        let timestamped = matches!(s.spec.kind, StoreKind::TimestampedWindow { .. });
        s.range(&low, &high)
            .into_iter()
            .filter_map(|(k, v)| {
                let (_, start, _) = store::split_window_key(&k)?;
                let v = if timestamped {
                    store::split_timestamped_value(&v)?.1
                } else {
                    &v[..]
                };
                Some((start, value_serde.deserialize(Some(v)).ok()?))
            })
            .collect()
    }

    /// A session store's sessions of `key`.
    pub fn fetch_sessions<K: 'static, V: 'static>(
        &self,
        store: &str,
        key_serde: &SerdeRef<K>,
        value_serde: &SerdeRef<V>,
        key: &K,
    ) -> Vec<(Window, V)> {
        let (Some(s), Ok(Some(kb))) = (self.store(store), key_serde.serialize(key)) else {
            return Vec::new();
        };
        let (low, high) = store::sessions_ending_from(&kb, i64::MIN);
        s.range(&low, &high)
            .into_iter()
            .filter_map(|(k, v)| {
                let (_, start, end) = store::split_session_key(&k)?;
                Some((
                    Window {
                        start_ms: start,
                        end_ms: end,
                    },
                    value_serde.deserialize(Some(&v)).ok()?,
                ))
            })
            .collect()
    }

    /// Answers an interactive query from the stores, as an instance's
    /// query server would (see [`crate::query::answer`]).
    pub fn query(&self, query: &Query) -> Result<serde_json::Value, QueryError> {
        crate::query::answer(&self.topology, self.tasks.iter(), &self.globals, query)
    }

    /// The topology the driver runs.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The tasks' counters, added up.
    pub fn metrics(&self) -> TaskMetrics {
        let mut m = TaskMetrics::default();
        for t in &self.tasks {
            m += t.metrics();
        }
        m
    }
}
