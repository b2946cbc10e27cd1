//! What a [`StreamsBuilder`](crate::StreamsBuilder) builds: a graph of
//! operator specs, cut into sub-topologies, from which each task
//! instantiates its own processors and stores.
//!
//! A node spec knows its parents and children, the stores it uses, and a
//! factory that makes the node's processor for one task given its
//! children's. Factories are typed where they are written (in the DSL)
//! and meet here as `dyn Any`: a node's processor is a
//! `Handle<K, V>` of its input types, and its factory downcasts its
//! children's handles to its own output types.
//!
//! Sub-topologies are the connected parts of the graph, joined through
//! parent edges and shared stores; a repartition topic (written by one
//! sub-topology, read by another) is where the graph is cut. A task is
//! one sub-topology on one partition of its input topics.

use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use crate::processor::{
    Ctx, Downstream, Handle, Output, PunctuationType, StreamsError, TaskMetrics,
};
use crate::record::Record;
use crate::serdes::SerdeError;
use crate::store::{MemoryEngine, StateStore, StoreCodec, StoreEngine, StoreSpec};

/// A raw key or value as a topic holds it.
pub type Raw = Option<Vec<u8>>;

/// A topic named by the application (`External`) or owned by it and
/// named after its `application.id` (`Internal`: `<application.id>-<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicName {
    External(String),
    Internal(String),
}

impl TopicName {
    pub fn resolve(&self, application_id: &str) -> String {
        match self {
            TopicName::External(t) => t.clone(),
            TopicName::Internal(name) => format!("{application_id}-{name}"),
        }
    }
}

/// What a factory gets besides its children.
pub struct Build<'a> {
    pub application_id: &'a str,
    /// What the task runs once before its first record or punctuation
    /// (user processors' `init`), added by factories.
    pub(crate) inits: RefCell<Vec<InitHook>>,
}

/// A processor's start, given the task it runs in.
pub(crate) type InitHook = Box<dyn FnOnce(&mut Ctx) -> Result<(), StreamsError>>;

type Factory = Arc<dyn Fn(&Build<'_>, &[&dyn Any]) -> Box<dyn Any> + Send + Sync>;

pub(crate) struct NodeSpec {
    pub name: String,
    pub parents: Vec<usize>,
    pub children: Vec<usize>,
    pub stores: Vec<String>,
    /// For a source: the topics it reads.
    pub sources: Vec<TopicName>,
    /// For a sink: the topic it writes.
    pub sink: Option<TopicName>,
    /// The global stores it reads (held by the instance, not the task:
    /// they do not tie the node to any sub-topology).
    pub globals: Vec<String>,
    make: Factory,
}

/// Whether a record of a global table's topic reads with the table's
/// serdes: `Err(("key" or "value", why))` if not.
pub(crate) type GlobalCheck =
    Arc<dyn Fn(&[u8], Option<&[u8]>) -> Result<(), (&'static str, SerdeError)> + Send + Sync>;

/// Where a global store's rows come from.
#[derive(Clone)]
pub(crate) struct GlobalSource {
    pub topic: String,
    pub check: GlobalCheck,
}

/// An internal topic the application creates: repartition topics and
/// changelogs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalTopic {
    pub name: String,
    /// Compacted (changelogs) or deleted (repartition topics).
    pub compacted: bool,
    pub partitions: InternalPartitions,
}

/// How many partitions an internal topic gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalPartitions {
    /// As many as the sub-topology that writes it: a repartition topic
    /// (its readers then take that many tasks), a changelog (one
    /// partition per task).
    Writer,
    /// Exactly this many.
    Fixed(i32),
    /// As many as the sub-topology that reads it gets from its other
    /// inputs: the topic must be partitioned like a table that
    /// sub-topology already reads (a foreign-key join's subscription and
    /// response topics), whatever its writer's count.
    Reader,
}

/// Partition counts resolved from those of the topics that exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionCounts {
    /// Tasks per sub-topology, by sub-topology id.
    pub subtopologies: Vec<i32>,
    /// Partitions of each repartition topic, by resolved name.
    pub internal: BTreeMap<String, i32>,
}

#[derive(Default)]
pub(crate) struct Graph {
    pub nodes: Vec<NodeSpec>,
    pub stores: BTreeMap<String, StoreSpec>,
    /// Repartition topics (by unresolved name) and their partitions.
    pub repartition_partitions: BTreeMap<String, InternalPartitions>,
    /// How interactive queries read each store, where the DSL knows.
    pub codecs: BTreeMap<String, Arc<dyn StoreCodec>>,
    /// Global stores (also in `stores`) and the topics they hold.
    pub globals: BTreeMap<String, GlobalSource>,
    /// What the DSL found wrong, reported by `build`.
    pub errors: Vec<String>,
    counter: usize,
}

impl Graph {
    /// A node name in Kafka Streams' style: `KSTREAM-FILTER-0000000003`.
    pub fn name(&mut self, kind: &str) -> String {
        let n = self.counter;
        self.counter += 1;
        format!("{kind}-{n:010}")
    }

    /// Tells interactive queries how `store`'s keys and values read.
    pub fn set_codec(&mut self, store: &str, codec: Arc<dyn StoreCodec>) {
        self.codecs.entry(store.to_string()).or_insert(codec);
    }

    /// Adds a node whose processor takes `Record<KI, VI>` and forwards
    /// `Record<KO, VO>` to its children; returns its index.
    pub fn add<KI, VI, KO, VO, F>(
        &mut self,
        name: String,
        parents: &[usize],
        stores: Vec<String>,
        make: F,
    ) -> usize
    where
        KI: 'static,
        VI: 'static,
        KO: 'static,
        VO: 'static,
        F: Fn(&Build<'_>, Downstream<KO, VO>) -> Handle<KI, VI> + Send + Sync + 'static,
    {
        let index = self.nodes.len();
        let make: Factory = Arc::new(move |build, children| {
            let children = children
                .iter()
                .map(|c| {
                    c.downcast_ref::<Handle<KO, VO>>()
                        // The DSL connects a node only to children of its
                        // output type: a mismatch is a bug here.
                        .expect("a child's input type is its parent's output type")
                        .clone()
                })
                .collect();
            Box::new(make(build, Downstream(children))) as Box<dyn Any>
        });
        for &p in parents {
            self.nodes[p].children.push(index);
        }
        self.nodes.push(NodeSpec {
            name,
            parents: parents.to_vec(),
            children: Vec::new(),
            stores,
            sources: Vec::new(),
            sink: None,
            globals: Vec::new(),
            make,
        });
        index
    }
}

/// One sub-topology: its nodes, input topics and stores.
#[derive(Debug, Clone)]
pub struct SubTopology {
    pub id: usize,
    pub nodes: Vec<usize>,
    pub sources: Vec<TopicName>,
    pub sinks: Vec<TopicName>,
    pub stores: Vec<String>,
}

/// A built topology: what every task of an application is made from.
#[derive(Clone)]
pub struct Topology {
    graph: Arc<Graph>,
    subtopologies: Vec<SubTopology>,
}

impl Topology {
    pub(crate) fn new(graph: Graph) -> Topology {
        // Union-find over parent edges and shared stores.
        let n = graph.nodes.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        let union = |parent: &mut Vec<usize>, a: usize, b: usize| {
            let (ra, rb) = (find(parent, a), find(parent, b));
            if ra != rb {
                parent[ra.max(rb)] = ra.min(rb);
            }
        };
        let mut store_users: HashMap<&str, usize> = HashMap::new();
        for (i, node) in graph.nodes.iter().enumerate() {
            for &p in &node.parents {
                union(&mut parent, i, p);
            }
            for s in &node.stores {
                if let Some(&other) = store_users.get(s.as_str()) {
                    union(&mut parent, i, other);
                } else {
                    store_users.insert(s, i);
                }
            }
        }
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in 0..n {
            let root = find(&mut parent, i);
            groups.entry(root).or_default().push(i);
        }
        let subtopologies = groups
            .into_values()
            .enumerate()
            .map(|(id, nodes)| {
                let mut sources = BTreeSet::new();
                let mut sinks = BTreeSet::new();
                let mut stores = BTreeSet::new();
                for &i in &nodes {
                    let node = &graph.nodes[i];
                    sources.extend(node.sources.iter().cloned());
                    sinks.extend(node.sink.iter().cloned());
                    stores.extend(node.stores.iter().cloned());
                }
                SubTopology {
                    id,
                    nodes,
                    sources: sources.into_iter().collect(),
                    sinks: sinks.into_iter().collect(),
                    stores: stores.into_iter().collect(),
                }
            })
            .collect();
        Topology {
            graph: Arc::new(graph),
            subtopologies,
        }
    }

    pub fn subtopologies(&self) -> &[SubTopology] {
        &self.subtopologies
    }

    /// Every topic the application reads that it does not own.
    pub fn source_topics(&self, application_id: &str) -> Vec<String> {
        let mut topics: Vec<String> = self
            .subtopologies
            .iter()
            .flat_map(|s| s.sources.iter())
            .map(|t| t.resolve(application_id))
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// The topics the application owns: repartition topics and the
    /// changelogs of its logged stores.
    pub fn internal_topics(&self, application_id: &str) -> Vec<InternalTopic> {
        let mut out: Vec<InternalTopic> = self
            .graph
            .repartition_partitions
            .iter()
            .map(|(name, partitions)| InternalTopic {
                name: TopicName::Internal(name.clone()).resolve(application_id),
                compacted: false,
                partitions: *partitions,
            })
            .collect();
        for spec in self.graph.stores.values().filter(|s| s.logged) {
            out.push(InternalTopic {
                name: changelog_topic(application_id, &spec.name),
                compacted: true,
                partitions: InternalPartitions::Writer,
            });
        }
        out
    }

    /// Each sub-topology's task count and each repartition topic's
    /// partitions, given the partitions of the topics the application
    /// reads that exist (`existing`, by resolved name: the external ones,
    /// missing ones named in the error; an internal topic that exists
    /// keeps its count). A sub-topology takes the most partitions of its inputs
    /// ([`InternalPartitions::Reader`] topics aside: they take the
    /// sub-topology's count); a [`InternalPartitions::Writer`] topic takes
    /// its writer's. Resolved in passes, since a writer may come after its
    /// reader and sub-topologies may feed each other both ways (a
    /// foreign-key join's two sides do).
    pub fn partition_counts(
        &self,
        application_id: &str,
        existing: &HashMap<String, i32>,
    ) -> Result<PartitionCounts, String> {
        let app = application_id;
        let declared: BTreeMap<String, InternalPartitions> = self
            .graph
            .repartition_partitions
            .iter()
            .map(|(name, p)| (TopicName::Internal(name.clone()).resolve(app), *p))
            .collect();
        let mut known: HashMap<String, i32> = existing.clone();
        for (name, p) in &declared {
            if let InternalPartitions::Fixed(n) = p {
                known.entry(name.clone()).or_insert(*n);
            }
        }
        let follows_reader =
            |name: &str| matches!(declared.get(name), Some(InternalPartitions::Reader));
        let subs = &self.subtopologies;
        let mut counts: Vec<Option<i32>> = vec![None; subs.len()];
        for _ in 0..=subs.len() {
            for sub in subs {
                let mut n: Option<i32> = None;
                let mut unresolved = false;
                for t in &sub.sources {
                    let name = t.resolve(app);
                    if follows_reader(&name) {
                        continue;
                    }
                    match known.get(&name) {
                        Some(p) => n = Some(n.map_or(*p, |m| m.max(*p))),
                        None => unresolved = true,
                    }
                }
                let Some(n) = n.filter(|_| !unresolved) else {
                    continue;
                };
                counts[sub.id] = Some(n);
                for t in &sub.sources {
                    let name = t.resolve(app);
                    if follows_reader(&name) {
                        known.entry(name).or_insert(n);
                    }
                }
                for sink in &sub.sinks {
                    let name = sink.resolve(app);
                    if declared.get(&name) == Some(&InternalPartitions::Writer) {
                        known.entry(name).or_insert(n);
                    }
                }
            }
        }
        let mut subtopologies = Vec::with_capacity(subs.len());
        for sub in subs {
            match counts[sub.id] {
                Some(n) => subtopologies.push(n),
                None => {
                    let missing: Vec<String> = sub
                        .sources
                        .iter()
                        .map(|t| t.resolve(app))
                        .filter(|t| !known.contains_key(t))
                        .collect();
                    return Err(format!("input topics do not exist: {}", missing.join(", ")));
                }
            }
        }
        let internal = declared
            .keys()
            .filter_map(|name| known.get(name).map(|p| (name.clone(), *p)))
            .collect();
        Ok(PartitionCounts {
            subtopologies,
            internal,
        })
    }

    /// Each global store and the topic it holds whole (every partition,
    /// on every instance), by store name. Global topics are not among
    /// [`Topology::source_topics`]: no task reads them and the consumer
    /// group does not assign them.
    pub fn global_stores(&self) -> BTreeMap<String, String> {
        self.graph
            .globals
            .iter()
            .map(|(store, source)| (store.clone(), source.topic.clone()))
            .collect()
    }

    pub fn is_global_store(&self, name: &str) -> bool {
        self.graph.globals.contains_key(name)
    }

    pub(crate) fn global_source(&self, store: &str) -> Option<&GlobalSource> {
        self.graph.globals.get(store)
    }

    pub fn store_spec(&self, name: &str) -> Option<&StoreSpec> {
        self.graph.stores.get(name)
    }

    /// How queries read `name`'s keys and values, if the DSL said.
    pub fn store_codec(&self, name: &str) -> Option<Arc<dyn StoreCodec>> {
        self.graph.codecs.get(name).cloned()
    }

    /// The processors and stores of `subtopology` for one partition.
    pub fn task(
        &self,
        application_id: &str,
        subtopology: usize,
        partition: i32,
        mut engine: impl FnMut(&StoreSpec) -> Box<dyn StoreEngine>,
    ) -> Task {
        let sub = &self.subtopologies[subtopology];
        let build = Build {
            application_id,
            inits: RefCell::new(Vec::new()),
        };
        // Children have larger indices than their parents: make them first.
        let mut made: HashMap<usize, Box<dyn Any>> = HashMap::new();
        for &i in sub.nodes.iter().rev() {
            let node = &self.graph.nodes[i];
            let children: Vec<&dyn Any> = node.children.iter().map(|c| made[c].as_ref()).collect();
            let handle = (node.make)(&build, &children);
            made.insert(i, handle);
        }
        let mut sources = HashMap::new();
        for &i in &sub.nodes {
            for topic in &self.graph.nodes[i].sources {
                let handle = made[&i]
                    .downcast_ref::<Handle<Raw, Raw>>()
                    // Only source nodes list topics, and they take raw records.
                    .expect("a source node takes raw records")
                    .clone();
                sources.insert(topic.resolve(application_id), handle);
            }
        }
        let stores = sub
            .stores
            .iter()
            .map(|name| {
                let spec = self.graph.stores[name].clone();
                let engine = engine(&spec);
                (name.clone(), StateStore::new(spec, engine))
            })
            .collect();
        // Made children first: started parents first.
        let mut inits = build.inits.into_inner();
        inits.reverse();
        Task {
            id: TaskId {
                subtopology,
                partition,
            },
            application_id: application_id.to_string(),
            sources,
            ctx: Ctx::new(partition, stores),
            inits,
            init_failure: None,
        }
    }

    /// Each task with in-memory stores (the test driver).
    pub fn task_in_memory(&self, application_id: &str, subtopology: usize, partition: i32) -> Task {
        self.task(application_id, subtopology, partition, |_| {
            Box::<MemoryEngine>::default()
        })
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Topology {
    /// A text description in the spirit of Kafka Streams'
    /// `Topology#describe()`.
    pub fn describe(&self) -> String {
        let mut out = String::from("Topologies:\n");
        for sub in &self.subtopologies {
            out.push_str(&format!("  Sub-topology: {}\n", sub.id));
            for &i in &sub.nodes {
                let node = &self.graph.nodes[i];
                let children: Vec<&str> = node
                    .children
                    .iter()
                    .map(|c| self.graph.nodes[*c].name.as_str())
                    .collect();
                let mut line = format!("    {}", node.name);
                if !node.sources.is_empty() {
                    line.push_str(&format!(" (topics: {:?})", node.sources));
                }
                if let Some(sink) = &node.sink {
                    line.push_str(&format!(" (topic: {sink:?})"));
                }
                if !node.stores.is_empty() {
                    line.push_str(&format!(" (stores: {:?})", node.stores));
                }
                if !node.globals.is_empty() {
                    line.push_str(&format!(" (global stores: {:?})", node.globals));
                }
                line.push_str(&format!(
                    " --> {}\n",
                    if children.is_empty() {
                        "none".to_string()
                    } else {
                        children.join(", ")
                    }
                ));
                out.push_str(&line);
            }
        }
        // Kafka Streams lists them as sub-topologies that make no tasks.
        for (store, source) in &self.graph.globals {
            out.push_str(&format!(
                "  Global store: {store} (topic: {:?}, every partition, no tasks)\n",
                source.topic
            ));
        }
        out
    }
}

/// `<application.id>-<store>-changelog`.
pub fn changelog_topic(application_id: &str, store: &str) -> String {
    format!("{application_id}-{store}-changelog")
}

/// A task's identity: `<sub-topology>_<partition>` as Kafka Streams
/// writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    pub subtopology: usize,
    pub partition: i32,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.subtopology, self.partition)
    }
}

/// What to do with a record that fails.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ErrorHandling {
    /// Log it, count it, go on with the next record.
    #[default]
    LogAndContinue,
    /// Stop the task (the application reports the error).
    Fail,
    /// Write the input record to this topic with the error in its
    /// headers, count it, go on.
    DeadLetter(String),
}

/// One sub-topology's processors and stores for one partition.
pub struct Task {
    pub id: TaskId,
    application_id: String,
    sources: HashMap<String, Handle<Raw, Raw>>,
    ctx: Ctx,
    /// Processor starts not run yet: they run before the first record or
    /// punctuation, so after the runtime restored the stores.
    inits: Vec<InitHook>,
    /// Why a processor could not start: the task runs nothing after it.
    init_failure: Option<StreamsError>,
}

/// A record as read from a topic.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp: i64,
    pub headers: &'a [(String, Option<Vec<u8>>)],
}

impl Task {
    pub fn application_id(&self) -> &str {
        &self.application_id
    }

    /// The topics this task reads.
    pub fn source_topics(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    /// Starts the task's processors (once; later calls answer how that
    /// went). A processor that fails to start fails the task whatever the
    /// error handling: it would process nothing right.
    pub fn init(&mut self) -> Result<(), StreamsError> {
        for init in std::mem::take(&mut self.inits) {
            if let Err(e) = init(&mut self.ctx) {
                self.init_failure = Some(e);
                break;
            }
        }
        match &self.init_failure {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Sets the wall-clock time the task sees (milliseconds since the
    /// epoch) without punctuating: before its processors start, so the
    /// wall-clock punctuators they schedule count from it.
    pub fn set_wall_clock_ms(&mut self, now_ms: i64) {
        self.ctx.wall_clock_ms = now_ms;
    }

    /// Advances the task's wall clock to `now_ms` (it never goes back) and
    /// runs the wall-clock punctuators due; returns how many ran. A
    /// punctuator's failure is returned under [`ErrorHandling::Fail`] and
    /// logged otherwise (there is no input record to dead-letter).
    pub fn punctuate_wall_clock(
        &mut self,
        now_ms: i64,
        on_error: &ErrorHandling,
    ) -> Result<u64, StreamsError> {
        self.init()?;
        self.ctx.wall_clock_ms = self.ctx.wall_clock_ms.max(now_ms);
        let now = self.ctx.wall_clock_ms;
        self.punctuate(PunctuationType::WallClockTime, now, on_error)
    }

    fn punctuate(
        &mut self,
        kind: PunctuationType,
        now_ms: i64,
        on_error: &ErrorHandling,
    ) -> Result<u64, StreamsError> {
        let (ran, failed) = self.ctx.punctuate(kind, now_ms);
        for e in failed {
            if *on_error == ErrorHandling::Fail {
                return Err(e);
            }
            tracing::warn!(task = %self.id, error = %e, "a punctuator failed");
        }
        Ok(ran)
    }

    /// Runs one input record through the topology, then the stream-time
    /// punctuators it made due. A failure goes to `on_error`; only
    /// [`ErrorHandling::Fail`] makes this return it.
    pub fn process(
        &mut self,
        input: Input<'_>,
        on_error: &ErrorHandling,
    ) -> Result<(), StreamsError> {
        self.init()?;
        self.process_record(input, on_error)?;
        let now = self.ctx.stream_time;
        self.punctuate(PunctuationType::StreamTime, now, on_error)?;
        Ok(())
    }

    fn process_record(
        &mut self,
        input: Input<'_>,
        on_error: &ErrorHandling,
    ) -> Result<(), StreamsError> {
        let Some(source) = self.sources.get(input.topic).cloned() else {
            return Err(StreamsError::Processing(format!(
                "task {} does not read topic {}",
                self.id, input.topic
            )));
        };
        self.ctx.origin.topic = Arc::from(input.topic);
        self.ctx.origin.offset = input.offset;
        // The source advances stream time with the record's event time
        // (which a timestamp extractor may take from the record itself).
        self.ctx.metrics.records_processed += 1;
        let record = Record {
            key: input.key.map(<[u8]>::to_vec),
            value: input.value.map(<[u8]>::to_vec),
            timestamp: input.timestamp,
            headers: input.headers.to_vec(),
        };
        let outcome = source.borrow_mut().process(&mut self.ctx, record);
        match (outcome, on_error) {
            (Ok(()), _) => Ok(()),
            (Err(e), ErrorHandling::Fail) => {
                self.ctx.metrics.records_failed += 1;
                Err(e)
            }
            (Err(e), ErrorHandling::LogAndContinue) => {
                self.ctx.metrics.records_failed += 1;
                tracing::warn!(task = %self.id, error = %e, "a record failed; skipped");
                Ok(())
            }
            (Err(e), ErrorHandling::DeadLetter(topic)) => {
                self.ctx.metrics.records_failed += 1;
                let mut headers = input.headers.to_vec();
                headers.push((
                    "runnel.error.message".into(),
                    Some(e.to_string().into_bytes()),
                ));
                headers.push((
                    "runnel.error.topic".into(),
                    Some(input.topic.as_bytes().to_vec()),
                ));
                headers.push((
                    "runnel.error.partition".into(),
                    Some(input.partition.to_string().into_bytes()),
                ));
                headers.push((
                    "runnel.error.offset".into(),
                    Some(input.offset.to_string().into_bytes()),
                ));
                headers.push((
                    "runnel.error.task".into(),
                    Some(self.id.to_string().into_bytes()),
                ));
                self.ctx.out.push(Output {
                    topic: topic.clone(),
                    partition: None,
                    key: input.key.map(<[u8]>::to_vec),
                    value: input.value.map(<[u8]>::to_vec),
                    timestamp: input.timestamp,
                    headers,
                });
                Ok(())
            }
        }
    }

    /// What the task has written since the last call: records for its
    /// sinks, then each store's changelog writes (to the task's
    /// partition of `<application.id>-<store>-changelog`).
    pub fn take_outputs(&mut self) -> Vec<Output> {
        let mut out = std::mem::take(&mut self.ctx.out);
        let partition = self.id.partition;
        for (name, store) in self.ctx.stores.iter_mut() {
            let topic = changelog_topic(&self.application_id, name);
            for (key, value) in store.take_changelog() {
                out.push(Output {
                    topic: topic.clone(),
                    partition: Some(partition),
                    key: Some(key),
                    value,
                    timestamp: self.ctx.stream_time.max(0),
                    headers: Vec::new(),
                });
            }
        }
        out
    }

    pub fn metrics(&self) -> &TaskMetrics {
        &self.ctx.metrics
    }

    pub fn stream_time(&self) -> i64 {
        self.ctx.stream_time
    }

    /// Where records later than their grace go (besides being counted).
    pub fn set_late_records_topic(&mut self, topic: Option<String>) {
        self.ctx.late_records_topic = topic;
    }

    pub fn store(&self, name: &str) -> Option<&StateStore> {
        self.ctx.stores.get(name)
    }

    pub fn store_mut(&mut self, name: &str) -> Option<&mut StateStore> {
        self.ctx.stores.get_mut(name)
    }

    /// The first engine error of any of the task's stores.
    pub fn store_failure(&self) -> Option<String> {
        self.ctx
            .stores
            .iter()
            .find_map(|(name, s)| s.failure().map(|e| format!("{name}: {e}")))
    }

    pub fn store_names(&self) -> impl Iterator<Item = &str> {
        self.ctx.stores.keys().map(String::as_str)
    }

    /// Lets the task's processors read the instance's global stores
    /// (whoever runs the task attaches them before its first record).
    /// `handles` are `GlobalStores::handles`: stores on the shared
    /// engines, by name.
    pub fn attach_global_stores(&mut self, handles: BTreeMap<String, StateStore>) {
        self.ctx.globals = handles;
    }
}
