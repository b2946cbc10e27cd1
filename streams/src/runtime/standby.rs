//! Standby replicas (`num.standby.replicas`): warm copies of other
//! instances' task stores, kept up to date from the changelogs, so a task
//! that moves here after its instance dies restores only the tail of its
//! changelog instead of all of it.
//!
//! librdkafka's consumer has no place for Kafka Streams' assignor, so
//! standbys are placed by a rule every instance computes alike from the
//! group's description (DescribeGroups): members sorted by member id;
//! a task's standbys are the `num_standby_replicas` members after its
//! active member, in that order and wrapping around. Each instance opens
//! the standbys the rule gives it (after every rebalance and every few
//! seconds), closes the others, and applies their changelog records in
//! the stream thread between input records, with one consumer outside
//! the group assigned every standby changelog partition.
//!
//! A standby's store holds the changelog up to its next offset and
//! nothing else (only changelog records are written to it), so that
//! offset is a true checkpoint: written to `<store>.checkpoint` when the
//! standby closes, handed to the task in memory when it becomes active.
//! An active task closed by a rebalance leaves a checkpoint too, so the
//! instance it leaves usually becomes one of its standbys at once, warm.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{kafka, RuntimeError, StreamsConfig};
use crate::store::{FjallEngine, MemoryEngine, StoreEngine};
use crate::topology::{changelog_topic, TaskId, Topology};

/// How often the placement is computed again without a rebalance (other
/// instances' standbys change when they join or leave).
const PLAN_INTERVAL: Duration = Duration::from_secs(5);
/// Most changelog records applied per stream-thread loop.
const APPLY_BUDGET: usize = 20_000;

/// Changelog writes to apply at once.
type Batch = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// A standby task's stores.
pub(crate) struct Standby {
    /// The task's logged stores' engines, by store name.
    pub engines: HashMap<String, Box<dyn StoreEngine>>,
    /// Per store: the next changelog offset (the store holds everything
    /// before it).
    pub offsets: HashMap<String, i64>,
    /// The task directory's lock, when the stores are on disk.
    pub lock: Option<std::fs::File>,
}

/// The standbys of one instance.
pub(crate) struct Standbys {
    replicas: usize,
    consumer: Option<BaseConsumer>,
    tasks: BTreeMap<TaskId, Standby>,
    /// Changelog topic → store name.
    stores_by_topic: HashMap<String, String>,
    last_plan: Option<Instant>,
    /// Changelog records applied since the start.
    pub applied: u64,
}

/// One group member as the placement rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub member_id: String,
    pub client_id: String,
    pub tasks: BTreeSet<TaskId>,
}

/// The tasks `me` (a client id) keeps standbys of: for each task active
/// on another member, the `replicas` members after it (by member id,
/// wrapping) hold its standbys. `has_state` says which tasks have
/// logged stores (the others need none).
pub(crate) fn placement(
    members: &[Member],
    me: &str,
    replicas: usize,
    has_state: impl Fn(&TaskId) -> bool,
) -> BTreeSet<TaskId> {
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    let Some(mine) = sorted.iter().position(|m| m.client_id == me) else {
        return BTreeSet::new();
    };
    let n = sorted.len();
    let mut out = BTreeSet::new();
    for (i, member) in sorted.iter().enumerate() {
        if i == mine {
            continue;
        }
        // Is `mine` among the `replicas` members after `i`?
        let distance = (mine + n - i) % n;
        if distance >= 1 && distance <= replicas.min(n - 1) {
            out.extend(member.tasks.iter().filter(|t| has_state(t)).copied());
        }
    }
    let active_here = &sorted[mine].tasks;
    out.retain(|t| !active_here.contains(t));
    out
}

/// The tasks a member's input partitions make (all of a sub-topology's
/// inputs of one partition).
pub(crate) fn tasks_of(
    topology: &Topology,
    application_id: &str,
    partitions: &[i32],
    assigned: &[(String, i32)],
) -> BTreeSet<TaskId> {
    let assigned: BTreeSet<(&str, i32)> = assigned.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    let mut out = BTreeSet::new();
    for sub in topology.subtopologies() {
        let inputs: Vec<String> = sub
            .sources
            .iter()
            .map(|t| t.resolve(application_id))
            .collect();
        for p in 0..partitions.get(sub.id).copied().unwrap_or(0) {
            if !inputs.is_empty() && inputs.iter().all(|t| assigned.contains(&(t.as_str(), p))) {
                out.insert(TaskId {
                    subtopology: sub.id,
                    partition: p,
                });
            }
        }
    }
    out
}

impl Standbys {
    pub fn new(replicas: usize) -> Standbys {
        Standbys {
            replicas,
            consumer: None,
            tasks: BTreeMap::new(),
            stores_by_topic: HashMap::new(),
            last_plan: None,
            applied: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.replicas > 0
    }

    pub fn task_ids(&self) -> Vec<TaskId> {
        self.tasks.keys().copied().collect()
    }

    /// Whether the placement is due again.
    pub fn plan_due(&self) -> bool {
        self.enabled() && self.last_plan.is_none_or(|t| t.elapsed() >= PLAN_INTERVAL)
    }

    /// Computes the placement from the group's description and opens and
    /// closes standbys to match it. `active` are this instance's tasks.
    #[allow(clippy::too_many_arguments)] // the stream thread's state, passed apart
    pub fn plan<C: ConsumerContext>(
        &mut self,
        group: &BaseConsumer<C>,
        me: &str,
        topology: &Topology,
        config: &StreamsConfig,
        partitions: &[i32],
        active: &BTreeSet<TaskId>,
        cluster: &str,
    ) -> Result<(), RuntimeError> {
        if !self.enabled() {
            return Ok(());
        }
        self.last_plan = Some(Instant::now());
        let app = &config.application_id;
        let list = match group.fetch_group_list(Some(app), Duration::from_secs(5)) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "describing the group for standby placement failed; trying again later");
                return Ok(());
            }
        };
        let mut members = Vec::new();
        for g in list.groups() {
            if g.state() != "Stable" {
                // Assignments are being made: the next plan sees them.
                self.last_plan = None;
                return Ok(());
            }
            for m in g.members() {
                let assigned = match m.assignment() {
                    Some(a) => crate::query::assigned_partitions(a).unwrap_or_default(),
                    None => Vec::new(),
                };
                members.push(Member {
                    member_id: m.id().to_string(),
                    client_id: m.client_id().to_string(),
                    tasks: tasks_of(topology, app, partitions, &assigned),
                });
            }
        }
        let has_state = |t: &TaskId| {
            topology.subtopologies()[t.subtopology]
                .stores
                .iter()
                .any(|s| topology.store_spec(s).is_some_and(|spec| spec.logged))
        };
        let mut wanted = placement(&members, me, self.replicas, has_state);
        wanted.retain(|t| !active.contains(t));
        let gone: Vec<TaskId> = self
            .tasks
            .keys()
            .filter(|t| !wanted.contains(t))
            .copied()
            .collect();
        let mut changed = !gone.is_empty();
        for id in gone {
            if let Some(standby) = self.tasks.remove(&id) {
                close(config, cluster, id, standby);
            }
        }
        for id in wanted {
            if self.tasks.contains_key(&id) {
                continue;
            }
            if let Some(standby) = open(topology, config, cluster, id)? {
                tracing::info!(task = %id, "standby opened");
                self.tasks.insert(id, standby);
                changed = true;
            }
        }
        if changed {
            self.assign(config)?;
        }
        Ok(())
    }

    /// Assigns the standby consumer every standby changelog partition at
    /// its next offset.
    fn assign(&mut self, config: &StreamsConfig) -> Result<(), RuntimeError> {
        let app = &config.application_id;
        if self.consumer.is_none() {
            let consumer: BaseConsumer = config
                .client_config()
                .set("group.id", format!("{app}-standby"))
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "false")
                .set("auto.offset.reset", "earliest")
                .create()
                .map_err(kafka("creating the standby consumer"))?;
            self.consumer = Some(consumer);
        }
        let consumer = self.consumer.as_ref().expect("made above");
        let mut list = TopicPartitionList::new();
        self.stores_by_topic.clear();
        for (id, standby) in &self.tasks {
            for (store, next) in &standby.offsets {
                let topic = changelog_topic(app, store);
                list.add_partition_offset(&topic, id.partition, Offset::Offset(*next))
                    .map_err(kafka("assigning standby changelogs"))?;
                self.stores_by_topic.insert(topic, store.clone());
            }
        }
        consumer
            .assign(&list)
            .map_err(kafka("assigning standby changelogs"))
    }

    /// Applies the changelog records that arrived (up to a budget).
    pub fn apply(&mut self) {
        let Some(consumer) = self.consumer.as_ref() else {
            return;
        };
        if self.tasks.is_empty() {
            return;
        }
        let mut batches: HashMap<(TaskId, String), Batch> = HashMap::new();
        let mut next: HashMap<(TaskId, String), i64> = HashMap::new();
        for _ in 0..APPLY_BUDGET {
            match consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => {
                    let Some(store) = self.stores_by_topic.get(m.topic()) else {
                        continue;
                    };
                    let id = self
                        .tasks
                        .keys()
                        .find(|t| {
                            t.partition == m.partition()
                                && self.tasks[t].offsets.contains_key(store)
                        })
                        .copied();
                    let Some(id) = id else { continue };
                    let at = (id, store.clone());
                    if let Some(k) = m.key() {
                        batches
                            .entry(at.clone())
                            .or_default()
                            .push((k.to_vec(), m.payload().map(<[u8]>::to_vec)));
                    }
                    next.insert(at, m.offset() + 1);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "reading a standby changelog");
                    break;
                }
                None => break,
            }
        }
        for ((id, store), offset) in next {
            let Some(standby) = self.tasks.get_mut(&id) else {
                continue;
            };
            if let Some(batch) = batches.remove(&(id, store.clone())) {
                let Some(engine) = standby.engines.get_mut(&store) else {
                    continue;
                };
                if let Err(e) = engine.put_batch(&batch) {
                    // Dropped, not trusted: the task restores in full if
                    // it becomes active here.
                    tracing::warn!(task = %id, store, error = %e, "a standby store failed; dropped");
                    self.tasks.remove(&id);
                    continue;
                }
                self.applied += batch.len() as u64;
            }
            if let Some(o) = standby.offsets.get_mut(&store) {
                *o = offset;
            }
        }
    }

    /// Hands over the standby of `id` (becoming active here), if any.
    pub fn take(&mut self, config: &StreamsConfig, id: TaskId) -> Option<Standby> {
        let standby = self.tasks.remove(&id)?;
        if let Err(e) = self.assign(config) {
            tracing::warn!(error = %e, "reassigning the standby consumer");
        }
        Some(standby)
    }

    /// Closes every standby with a checkpoint (a clean shutdown).
    pub fn close_all(&mut self, config: &StreamsConfig, cluster: &str) {
        for (id, standby) in std::mem::take(&mut self.tasks) {
            close(config, cluster, id, standby);
        }
    }
}

/// Opens the standby of `id`: its logged stores on disk (when the task
/// directory is free) from their checkpoints, or emptied to be filled
/// from the changelogs' start; in memory without a state directory.
fn open(
    topology: &Topology,
    config: &StreamsConfig,
    cluster: &str,
    id: TaskId,
) -> Result<Option<Standby>, RuntimeError> {
    let stores: Vec<String> = topology.subtopologies()[id.subtopology]
        .stores
        .iter()
        .filter(|s| topology.store_spec(s).is_some_and(|spec| spec.logged))
        .cloned()
        .collect();
    let mut standby = Standby {
        engines: HashMap::new(),
        offsets: HashMap::new(),
        lock: None,
    };
    let Some(dir) = super::task_dir(config, id) else {
        for store in stores {
            standby
                .engines
                .insert(store.clone(), Box::<MemoryEngine>::default());
            standby.offsets.insert(store, 0);
        }
        return Ok(Some(standby));
    };
    let io = |what: &str, e: std::io::Error| {
        RuntimeError::Store(format!("{what} {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(&dir).map_err(|e| io("creating", e))?;
    let lock = std::fs::File::create(dir.join(".lock")).map_err(|e| io("locking", e))?;
    if lock.try_lock().is_err() {
        // An active task of this machine still has it (closing): the next
        // plan tries again.
        return Ok(None);
    }
    for store in stores {
        let mut engine = FjallEngine::open(&dir.join(&store))
            .map_err(|e| RuntimeError::Store(format!("opening standby {store} of {id}: {e}")))?;
        let offset = match super::take_checkpoint(&dir, &store, cluster) {
            Some(o) => o,
            None => {
                engine.clear().map_err(|e| {
                    RuntimeError::Store(format!("emptying standby {store} of {id}: {e}"))
                })?;
                0
            }
        };
        standby.engines.insert(store.clone(), Box::new(engine));
        standby.offsets.insert(store, offset);
    }
    standby.lock = Some(lock);
    Ok(Some(standby))
}

/// Closes a standby: its stores made durable and checkpointed at the
/// offsets they hold up to.
fn close(config: &StreamsConfig, cluster: &str, id: TaskId, mut standby: Standby) {
    if let Some(dir) = super::task_dir(config, id) {
        for (store, engine) in standby.engines.iter_mut() {
            if let Err(e) = engine.flush() {
                tracing::warn!(task = %id, store, error = %e, "flushing a standby failed; no checkpoint");
                continue;
            }
            if let Some(offset) = standby.offsets.get(store) {
                super::write_checkpoint(&dir, store, cluster, *offset);
            }
        }
    }
    tracing::info!(task = %id, "standby closed");
    // The stores close before the lock is released.
    drop(standby.engines);
    drop(standby.lock);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, tasks: &[i32]) -> Member {
        Member {
            member_id: id.into(),
            client_id: format!("client-{id}"),
            tasks: tasks
                .iter()
                .map(|p| TaskId {
                    subtopology: 0,
                    partition: *p,
                })
                .collect(),
        }
    }

    fn parts(set: &BTreeSet<TaskId>) -> Vec<i32> {
        set.iter().map(|t| t.partition).collect()
    }

    #[test]
    fn each_task_has_its_standbys_on_the_members_after_its_own() {
        let members = [
            member("c", &[4, 5]),
            member("a", &[0, 1]),
            member("b", &[2, 3]),
        ];
        let all = |_: &TaskId| true;
        // Sorted a, b, c: b keeps a's, c keeps b's, a keeps c's.
        assert_eq!(parts(&placement(&members, "client-a", 1, all)), vec![4, 5]);
        assert_eq!(parts(&placement(&members, "client-b", 1, all)), vec![0, 1]);
        assert_eq!(parts(&placement(&members, "client-c", 1, all)), vec![2, 3]);
        // Two replicas: everyone keeps everyone else's.
        assert_eq!(
            parts(&placement(&members, "client-a", 2, all)),
            vec![2, 3, 4, 5]
        );
        // More replicas than other members: still each task once.
        assert_eq!(
            parts(&placement(&members, "client-a", 5, all)),
            vec![2, 3, 4, 5]
        );
    }

    #[test]
    fn no_standby_for_a_stateless_task_an_unknown_member_or_a_lone_one() {
        let members = [member("a", &[0]), member("b", &[1])];
        assert!(placement(&members, "client-b", 1, |_| false).is_empty());
        assert!(placement(&members, "client-x", 1, |_| true).is_empty());
        assert!(placement(&members[..1], "client-a", 1, |_| true).is_empty());
    }
}
