//! The operators' common ground: a typed [`Processor`] that gets one
//! record at a time and forwards what it makes to its children, and the
//! [`Ctx`] of the task it runs in (the record's origin, stream time, the
//! task's stores, what goes out to topics, counters, the punctuators
//! scheduled and when each is due).
//!
//! Processors of one task run on one thread and never block: a task is
//! the unit of parallelism, not an operator.

use std::cell::{Cell, RefCell};
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

/// Which clock a punctuator follows (Kafka Streams' `PunctuationType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PunctuationType {
    /// The task's stream time: a punctuator fires when a record moves it
    /// past the next multiple of the interval (once, however far it
    /// moves), never while no records come.
    StreamTime,
    /// The machine's clock (the test driver's virtual one in tests): a
    /// punctuator fires every interval from when it was scheduled, whether
    /// records come or not.
    WallClockTime,
}

/// Stops a scheduled punctuator (Kafka Streams' `Cancellable`).
#[derive(Debug, Clone)]
pub struct Cancellable(Rc<Cell<bool>>);

impl Cancellable {
    /// The punctuator fires no more (from inside its own call too).
    pub fn cancel(&self) {
        self.0.set(true);
    }
}

/// A punctuator as the task keeps it: what it runs when it is due.
type Fire = Box<dyn FnMut(&mut Ctx, i64) -> Result<(), StreamsError>>;

pub(crate) struct Scheduled {
    interval_ms: i64,
    kind: PunctuationType,
    /// When it fires next (on its clock).
    next_ms: i64,
    cancelled: Rc<Cell<bool>>,
    fire: Fire,
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
    /// Handles on the instance's global stores (read only here).
    pub(crate) globals: BTreeMap<String, StateStore>,
    pub(crate) out: Vec<Output>,
    pub(crate) metrics: TaskMetrics,
    /// Where records later than their grace go, if anywhere.
    pub(crate) late_records_topic: Option<String>,
    /// The punctuators the task's processors scheduled, in that order.
    punctuators: Vec<Scheduled>,
    /// The wall-clock time the task last saw, milliseconds since the
    /// epoch (set by whoever runs the task: the runtime or the driver).
    pub(crate) wall_clock_ms: i64,
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
            globals: BTreeMap::new(),
            out: Vec::new(),
            metrics: TaskMetrics::default(),
            late_records_topic: None,
            punctuators: Vec::new(),
            wall_clock_ms: 0,
        }
    }

    pub fn wall_clock_time(&self) -> i64 {
        self.wall_clock_ms
    }

    /// Schedules `fire` every `interval_ms` (positive) on `kind`'s clock.
    /// As in Kafka Streams, a stream-time punctuator is aligned to the
    /// epoch (due at 0, then at each multiple of the interval) and a
    /// wall-clock one to the moment it is scheduled.
    pub(crate) fn schedule(
        &mut self,
        interval_ms: i64,
        kind: PunctuationType,
        fire: Fire,
    ) -> Cancellable {
        let next_ms = match kind {
            PunctuationType::StreamTime => 0,
            PunctuationType::WallClockTime => self.wall_clock_ms.saturating_add(interval_ms),
        };
        let cancelled = Rc::new(Cell::new(false));
        self.punctuators.push(Scheduled {
            interval_ms,
            kind,
            next_ms,
            cancelled: cancelled.clone(),
            fire,
        });
        Cancellable(cancelled)
    }

    /// Runs every punctuator of `kind` due at `now_ms` once, in the order
    /// they were scheduled, each given `now_ms`; returns how many ran and
    /// what failed. Each next falls due at the first multiple of its
    /// interval (from its start) after `now_ms`: a clock that jumped
    /// several intervals fires it once, not once per interval missed.
    pub(crate) fn punctuate(
        &mut self,
        kind: PunctuationType,
        now_ms: i64,
    ) -> (u64, Vec<StreamsError>) {
        let mut due = std::mem::take(&mut self.punctuators);
        let (mut ran, mut failed) = (0, Vec::new());
        // Records forwarded by a punctuator come from no input record.
        self.origin.topic = Arc::from("");
        self.origin.offset = -1;
        for p in due.iter_mut() {
            if p.kind != kind || p.cancelled.get() || p.next_ms > now_ms {
                continue;
            }
            let missed = (now_ms - p.next_ms) / p.interval_ms;
            p.next_ms = p
                .next_ms
                .saturating_add(missed.saturating_add(1).saturating_mul(p.interval_ms));
            ran += 1;
            self.metrics.punctuations += 1;
            if let Err(e) = (p.fire)(self, now_ms) {
                failed.push(e);
            }
        }
        // Punctuators scheduled while these ran come after them.
        due.append(&mut self.punctuators);
        due.retain(|p| !p.cancelled.get());
        self.punctuators = due;
        (ran, failed)
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

    /// The global store `name`. Missing only if whoever runs the task did
    /// not attach the instance's global stores: an error, not a panic, so
    /// a topology run by hand fails its records instead of the process.
    pub(crate) fn global(&self, name: &str) -> Result<&StateStore, StreamsError> {
        self.globals.get(name).ok_or_else(|| StreamsError::Store {
            store: name.to_string(),
            error: "the global store is not attached to this task".into(),
        })
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

impl<K, V> Clone for Downstream<K, V> {
    fn clone(&self) -> Self {
        Downstream(self.0.clone())
    }
}

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
