//! The operators' common ground: a typed [`Processor`] that gets one
//! record at a time and forwards what it makes to its children, and the
//! [`Ctx`] of the task it runs in (the record's origin, stream time, the
//! task's stores, what goes out to topics, counters).
//!
//! Processors of one task run on one thread and never block: a task is
//! the unit of parallelism, not an operator.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::record::{Headers, Record};
use crate::serdes::SerdeError;
use crate::store::StateStore;

/// Why processing a record failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StreamsError {
    /// A key or value read from a topic did not decode.
    #[error("deserializing {what} of {topic}-{partition}@{offset}: {error}")]
    Deserialize {
        what: &'static str,
        topic: String,
        partition: i32,
        offset: i64,
        error: SerdeError,
    },
    /// A key or value to write (to a topic or a store) did not encode.
    #[error("serializing {what} for {target}: {error}")]
    Serialize {
        what: &'static str,
        target: String,
        error: SerdeError,
    },
    /// A store held bytes its operator cannot read.
    #[error("state store {store}: {error}")]
    Store { store: String, error: String },
    /// User code reported a failure.
    #[error("{0}")]
    Processing(String),
}

/// A record on its way to a topic (an output, a repartition topic or a
/// changelog).
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub topic: String,
    /// Set for changelogs (the task's partition); otherwise the producer
    /// partitions by key.
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: i64,
    pub headers: Headers,
}

/// What a task counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskMetrics {
    pub records_processed: u64,
    /// Records later than their window's grace, dropped.
    pub late_records_dropped: u64,
    /// Records skipped by an operator's null rules (a null key where a
    /// key is needed, a null value an aggregation ignores).
    pub records_skipped: u64,
    /// Records that failed and went to the error handler.
    pub records_failed: u64,
    pub punctuations: u64,
}

impl std::ops::AddAssign<&TaskMetrics> for TaskMetrics {
    fn add_assign(&mut self, other: &TaskMetrics) {
        self.records_processed += other.records_processed;
        self.late_records_dropped += other.late_records_dropped;
        self.records_skipped += other.records_skipped;
        self.records_failed += other.records_failed;
        self.punctuations += other.punctuations;
    }
}

/// Where a record being processed came from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// The task a processor runs in.
pub struct Ctx {
    pub(crate) origin: Origin,
    /// The largest timestamp this task has processed.
    pub(crate) stream_time: i64,
    /// Each time-dependent operator's own stream time (by the name of its
    /// store): the largest timestamp of the records that reached it.
    operator_time: BTreeMap<String, i64>,
    pub(crate) stores: BTreeMap<String, StateStore>,
    pub(crate) out: Vec<Output>,
    pub(crate) metrics: TaskMetrics,
    /// Where records later than their grace go, if anywhere.
    pub(crate) late_records_topic: Option<String>,
}

impl Ctx {
    pub(crate) fn new(partition: i32, stores: BTreeMap<String, StateStore>) -> Ctx {
        Ctx {
            origin: Origin {
                topic: Arc::from(""),
                partition,
                offset: -1,
            },
            stream_time: i64::MIN,
            operator_time: BTreeMap::new(),
            stores,
            out: Vec::new(),
            metrics: TaskMetrics::default(),
            late_records_topic: None,
        }
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn stream_time(&self) -> i64 {
        self.stream_time
    }

    pub fn partition(&self) -> i32 {
        self.origin.partition
    }

    /// Advances the stream time of the operator named `operator` (by its
    /// store) to `timestamp` if that is later, and returns it. As in Kafka
    /// Streams, an operator's stream time only advances when a record
    /// reaches it: records filtered out or routed elsewhere upstream
    /// close none of its windows.
    pub(crate) fn observe(&mut self, operator: &str, timestamp: i64) -> i64 {
        if let Some(time) = self.operator_time.get_mut(operator) {
            *time = (*time).max(timestamp);
            return *time;
        }
        self.operator_time.insert(operator.to_string(), timestamp);
        timestamp
    }

    pub(crate) fn store(&mut self, name: &str) -> &mut StateStore {
        // Stores are created for the task from the topology's own list
        // of what each operator uses, so a missing one is a bug here.
        self.stores
            .get_mut(name)
            .unwrap_or_else(|| panic!("state store {name} was not created for this task"))
    }

    pub(crate) fn emit(&mut self, output: Output) {
        self.out.push(output);
    }

    /// A record dropped for being late (for its operator's `stream_time`):
    /// counted, and copied to the late records topic if the application
    /// has one.
    pub(crate) fn late(
        &mut self,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        timestamp: i64,
        stream_time: i64,
    ) {
        self.metrics.late_records_dropped += 1;
        if let Some(topic) = self.late_records_topic.clone() {
            let headers = vec![
                (
                    "runnel.late.source".to_string(),
                    Some(
                        format!(
                            "{}-{}@{}",
                            self.origin.topic, self.origin.partition, self.origin.offset
                        )
                        .into_bytes(),
                    ),
                ),
                (
                    "runnel.late.stream.time".to_string(),
                    Some(stream_time.to_string().into_bytes()),
                ),
            ];
            self.out.push(Output {
                topic,
                partition: None,
                key,
                value,
                timestamp,
                headers,
            });
        }
    }
}

/// An operator instance of one task.
pub trait Processor<K, V> {
    fn process(&mut self, ctx: &mut Ctx, record: Record<K, V>) -> Result<(), StreamsError>;
}

/// A processor as its parents hold it (several may: `merge`).
pub type Handle<K, V> = Rc<RefCell<dyn Processor<K, V>>>;

/// The children a processor forwards to.
pub struct Downstream<K, V>(pub(crate) Vec<Handle<K, V>>);

impl<K: Clone, V: Clone> Downstream<K, V> {
    /// Hands `record` to every child (a copy to each but the last).
    pub fn forward(&self, ctx: &mut Ctx, record: Record<K, V>) -> Result<(), StreamsError> {
        if let Some((last, rest)) = self.0.split_last() {
            for child in rest {
                child.borrow_mut().process(ctx, record.clone())?;
            }
            last.borrow_mut().process(ctx, record)?;
        }
        Ok(())
    }
}
