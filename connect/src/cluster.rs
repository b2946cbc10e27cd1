//! What workers sharing a `group.id` need to work as one cluster.
//!
//! - [`Tail`](runnel_tail::Tail) (started with [`READER_GROUP`]) follows an
//!   internal topic for as long as the worker runs, so every worker sees
//!   every other worker's writes (configs, status, offsets), and a writer
//!   can wait until its own write is applied.
//! - [`Membership`] is a consumer group membership (librdkafka's, on any
//!   Kafka broker): its members are the live workers. The broker drops a
//!   worker that stops heartbeating (SIGKILL, partition) after
//!   `session.timeout.ms`, and every survivor hears of the rebalance.
//! - [`assign`] spreads connectors and tasks over the members. Every
//!   worker computes it from the same inputs (the member list and the
//!   configs) and runs only its own share, so no leader is needed.
//!
//! Between a change and the moment every worker has seen it, two workers
//! may both run a task for a moment (or none may). Delivery stays
//! at-least-once: a sink task's consumer group splits partitions between
//! the two, and a source task's duplicates are what at-least-once allows.

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::ClientContext;
use runnel_tail::TailError;
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::plugin::{ConnectError, ConnectResult};

/// The group id of the consumers that follow the internal topics (never
/// joined: their partitions are assigned).
pub const READER_GROUP: &str = "runnel-connect-reader";

/// A task that failed is fatal; anything else may work on a retry.
impl From<TailError> for ConnectError {
    fn from(e: TailError) -> ConnectError {
        ConnectError {
            message: e.to_string(),
            retriable: e.is_retriable(),
        }
    }
}

fn kafka_error(what: &str, e: impl std::fmt::Display) -> ConnectError {
    ConnectError::retriable(format!("{what}: {e}"))
}

/// Wakes the worker when its group rebalances.
pub struct MemberContext {
    changed: Arc<Notify>,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        debug!(?rebalance, "connect group rebalanced");
        self.changed.notify_one();
    }
}

/// This worker's membership of the workers' group.
pub struct Membership {
    group: String,
    /// The client id this worker joined with: unique per process.
    me: String,
    consumer: Arc<StreamConsumer<MemberContext>>,
    /// Notified on every rebalance.
    pub changed: Arc<Notify>,
    last: Mutex<Option<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Membership {
    /// Joins `group` as `worker_id` (made unique with a random suffix).
    /// The group subscribes to `topic` (any topic will do; its records
    /// are not used).
    pub fn join(
        client: &ClientConfig,
        group: &str,
        worker_id: &str,
        topic: &str,
        session_timeout: Duration,
    ) -> ConnectResult<Membership> {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let me = format!("{worker_id}{MEMBER_SUFFIX}{}", &suffix[..8]);
        let changed = Arc::new(Notify::new());
        let session_ms = session_timeout.as_millis().clamp(1000, 300_000) as u64;
        let consumer: StreamConsumer<MemberContext> = client
            .clone()
            .set("group.id", group)
            .set("client.id", &me)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            .set("session.timeout.ms", session_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (session_ms / 4).max(250).to_string(),
            )
            .create_with_context(MemberContext {
                changed: changed.clone(),
            })
            .map_err(|e| kafka_error("joining the workers' group", e))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| kafka_error("joining the workers' group", e))?;
        let consumer = Arc::new(consumer);
        // The consumer must be polled to heartbeat and to rebalance.
        let c = consumer.clone();
        let group_name = group.to_string();
        let task = tokio::spawn(async move {
            let mut last_error = String::new();
            loop {
                if let Err(e) = c.recv().await {
                    // E.g. a session timeout outside the broker's limits:
                    // said once, not at every poll.
                    let error = e.to_string();
                    if error != last_error {
                        warn!(group = %group_name, %error, "the workers' group");
                        last_error = error;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        Ok(Membership {
            group: group.to_string(),
            me,
            consumer,
            changed,
            last: Mutex::new(None),
            task,
        })
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// Leaves the group now, so the others rebalance without waiting for
    /// the session to time out.
    pub fn leave(&self) {
        self.task.abort();
        self.consumer.unsubscribe();
    }

    /// The live workers (their client ids, sorted) when the group is
    /// stable and this worker is in it; else the last such list, or None
    /// before the first.
    pub async fn members(&self) -> Option<Vec<String>> {
        let (c, g) = (self.consumer.clone(), self.group.clone());
        let described = tokio::task::spawn_blocking(move || {
            c.fetch_group_list(Some(&g), Duration::from_secs(5))
                .ok()
                .and_then(|list| {
                    list.groups()
                        .iter()
                        .find(|gi| gi.name() == g)
                        .filter(|gi| gi.state() == "Stable")
                        .map(|gi| {
                            let mut m: Vec<String> = gi
                                .members()
                                .iter()
                                .map(|m| m.client_id().to_string())
                                .collect();
                            m.sort();
                            m.dedup();
                            m
                        })
                })
        })
        .await
        .ok()
        .flatten()
        .filter(|m| m.contains(&self.me));
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = described {
            *last = Some(m);
        }
        last.clone()
    }
}

/// One thing a worker runs: a connector (its status) or one of its tasks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unit {
    Connector(String),
    Task(String, usize),
}

/// What separates a worker's id from the per-run suffix of its member id.
const MEMBER_SUFFIX: char = '#';

/// The worker id in a member id (the same across the worker's restarts).
fn worker_of(member: &str) -> &str {
    member.split(MEMBER_SUFFIX).next().unwrap_or(member)
}

/// A unit's weight on a member (rendezvous hashing): FNV-1a over the
/// member's stable name (its address, without the per-run suffix) and the
/// unit, then a 64-bit finalizer so that names differing in one byte do
/// not get related weights. Defined byte by byte, so every worker, of any
/// version or platform, computes the same.
fn weight(member: &str, unit: &Unit) -> u64 {
    let stable = worker_of(member);
    let mut h = fnv::FnvHasher::default();
    h.write(stable.as_bytes());
    h.write(&[0xff]);
    match unit {
        Unit::Connector(c) => {
            h.write(b"c");
            h.write(c.as_bytes());
        }
        Unit::Task(c, t) => {
            h.write(b"t");
            h.write(c.as_bytes());
            h.write(&[0xff]);
            h.write(&(*t as u64).to_le_bytes());
        }
    }
    let mut x = h.finish();
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Spreads units over members, connectors and tasks each evenly (every
/// member gets ⌊units/members⌋ or one more of each), and stably: a unit
/// goes to the member it weighs most on that has room, so adding or
/// removing a connector or a worker moves few units, not every unit after
/// it. Tasks of one connector prefer members with fewer of its tasks, so
/// a connector's tasks run in parallel where they can. `connectors` are
/// (name, task count); `members` sorted. Returns each unit's owner (an
/// index into `members`). Every worker computes the same answer.
pub fn assign(connectors: &[(String, usize)], members: &[String]) -> Vec<(Unit, usize)> {
    let mut out = Vec::new();
    if members.is_empty() {
        return out;
    }
    let names: Vec<Unit> = connectors
        .iter()
        .map(|(name, _)| Unit::Connector(name.clone()))
        .collect();
    spread(names, members, &mut out);
    let tasks: Vec<Unit> = connectors
        .iter()
        .flat_map(|(name, tasks)| (0..*tasks).map(move |t| Unit::Task(name.clone(), t)))
        .collect();
    spread(tasks, members, &mut out);
    out
}

/// Balanced rendezvous: first every unit takes its best member below
/// ⌊units/members⌋; the units that found every member full (there are
/// fewer of them than members) then take their best member below one
/// more. Each member ends with ⌊units/members⌋ or one more.
fn spread(units: Vec<Unit>, members: &[String], out: &mut Vec<(Unit, usize)>) {
    let floor = units.len() / members.len();
    let mut load = vec![0usize; members.len()];
    // Tasks of each connector per member.
    let mut siblings: HashMap<String, Vec<usize>> = HashMap::new();
    let mut place = |unit: Unit, cap: usize, out: &mut Vec<(Unit, usize)>| -> Option<Unit> {
        let counts = match &unit {
            Unit::Task(c, _) => Some(
                siblings
                    .entry(c.clone())
                    .or_insert_with(|| vec![0; members.len()]),
            ),
            Unit::Connector(_) => None,
        };
        let best = (0..members.len())
            .filter(|&m| load[m] < cap)
            .max_by_key(|&m| {
                let mine = counts.as_ref().map_or(0, |c| c[m]);
                (
                    std::cmp::Reverse(mine),
                    weight(&members[m], &unit),
                    std::cmp::Reverse(m),
                )
            });
        match best {
            Some(m) => {
                load[m] += 1;
                if let Some(c) = counts {
                    c[m] += 1;
                }
                out.push((unit, m));
                None
            }
            None => Some(unit),
        }
    };
    let deferred: Vec<Unit> = units
        .into_iter()
        .filter_map(|u| place(u, floor, out))
        .collect();
    for u in deferred {
        // Always placed (fewer deferred units than members); the last
        // resort only keeps a unit from being dropped if that were wrong.
        if let Some(u) = place(u, floor + 1, out) {
            place(u, usize::MAX, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(out: &[(Unit, usize)], member: usize) -> Vec<Unit> {
        out.iter()
            .filter(|(_, m)| *m == member)
            .map(|(u, _)| u.clone())
            .collect()
    }

    fn members(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("127.0.0.1:{}#{i:08x}", 8083 + i))
            .collect()
    }

    fn owners(out: &[(Unit, usize)], members: &[String]) -> HashMap<Unit, String> {
        out.iter()
            .map(|(u, m)| (u.clone(), worker_of(&members[*m]).to_string()))
            .collect()
    }

    #[test]
    fn units_are_spread_evenly_and_every_unit_has_one_owner() {
        // Many shapes: 1-5 workers, 0-12 connectors of 1-5 tasks.
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..300 {
            let n = 1 + next(5) as usize;
            let connectors: Vec<(String, usize)> = (0..next(13))
                .map(|i| (format!("c{i:02}"), 1 + next(5) as usize))
                .collect();
            let members = members(n);
            let out = assign(&connectors, &members);
            let tasks: usize = connectors.iter().map(|c| c.1).sum();
            assert_eq!(out.len(), connectors.len() + tasks);
            assert_eq!(owners(&out, &members).len(), out.len(), "a unit twice");
            for (kind_is_task, total) in [(false, connectors.len()), (true, tasks)] {
                for m in 0..n {
                    let have = share(&out, m)
                        .iter()
                        .filter(|u| matches!(u, Unit::Task(..)) == kind_is_task)
                        .count();
                    assert!(
                        have == total / n || have == total / n + 1,
                        "{n} workers, {connectors:?}: worker {m} has {have} of {total}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_tasks_of_one_connector_run_on_different_workers() {
        for (workers, tasks) in [(2, 2), (2, 5), (3, 3), (3, 7), (4, 2)] {
            let members = members(workers);
            let out = assign(&[("big".to_string(), tasks)], &members);
            let per: Vec<usize> = (0..workers)
                .map(|m| {
                    share(&out, m)
                        .iter()
                        .filter(|u| matches!(u, Unit::Task(..)))
                        .count()
                })
                .collect();
            let (lo, hi) = (per.iter().min().unwrap(), per.iter().max().unwrap());
            assert!(hi - lo <= 1, "{workers} workers, {tasks} tasks: {per:?}");
        }
    }

    #[test]
    fn adding_a_connector_or_losing_a_worker_moves_few_of_the_other_units() {
        let connectors: Vec<(String, usize)> = (0..12).map(|i| (format!("c{i:02}"), 3)).collect();
        let three = members(3);
        let before = owners(&assign(&connectors, &three), &three);

        // A new connector that sorts in the middle.
        let mut more = connectors.clone();
        more.insert(5, ("c04b".to_string(), 3));
        let after = owners(&assign(&more, &three), &three);
        let moved = before.iter().filter(|(u, m)| after[*u] != **m).count();
        // Round-robin by position would move about two thirds of the 48.
        assert!(moved <= 6, "{moved} of {} units moved", before.len());

        // A worker gone: its units move, few others do.
        let two: Vec<String> = three[..2].to_vec();
        let after = owners(&assign(&connectors, &two), &two);
        let gone = worker_of(&three[2]);
        let moved = before
            .iter()
            .filter(|(u, m)| m.as_str() != gone && after[*u] != **m)
            .count();
        assert!(moved <= 6, "{moved} units of the remaining workers moved");

        // A restarted worker (same address, new suffix) gets its units back.
        let mut restarted = three.clone();
        restarted[1] = format!("{}#ffffffff", worker_of(&three[1]));
        restarted.sort();
        assert_eq!(owners(&assign(&connectors, &restarted), &restarted), before);
    }

    #[test]
    fn a_lone_worker_runs_everything_and_no_worker_runs_nothing() {
        let connectors = vec![("a".to_string(), 2)];
        let out = assign(&connectors, &["w".to_string()]);
        assert!(out.iter().all(|(_, m)| *m == 0));
        assert_eq!(out.len(), 3);
        assert!(assign(&connectors, &[]).is_empty());
    }

    #[test]
    fn every_worker_computes_the_same_assignment() {
        let connectors = vec![("x".to_string(), 4), ("y".to_string(), 1)];
        let members = vec!["a#1".to_string(), "b#2".to_string(), "c#3".to_string()];
        assert_eq!(assign(&connectors, &members), assign(&connectors, &members));
    }
}
