//! A seeded, randomized run of one partition on three brokers: a controller
//! (fencing, elections from the ISR, AlterPartition checked by epochs),
//! leaders built on [`LeaderState`], followers that fetch with their last
//! epoch and cut divergent tails by [`truncation_offset`], produces with
//! `acks=all` and `acks=1`, crashes, restarts, and brokers cut off from the
//! controller that keep acting on stale metadata (a "zombie" leader whose
//! followers still fetch from it). Metadata reaches each broker at random
//! moments, so brokers disagree about who leads.
//!
//! Logs are modelled as one leader epoch per record (offset = index) and
//! survive a crash whole: this checks the replication rules, not fsync.
//!
//! Invariants checked after every step:
//! - a leader's high watermark never goes backwards within its epoch;
//! - every offset below a leader's high watermark is on every member of its
//!   maximal ISR, the same record (same epoch at that offset);
//! - every record acknowledged with `acks=all` is on every member of the
//!   controller's ISR;
//! - a follower's truncation never removes an acknowledged record;
//! - and at the end, once every broker is back for good, all replicas
//!   converge on the leader's log, all in the ISR.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::controller::records::{BrokerId, NO_LEADER};
use crate::storage::epochs::LeaderEpochCache;

const BROKERS: usize = 3;
const REPLICA_LAG_TIME_MAX_MS: i64 = 10_000;
const MIN_ISR: usize = 2;

struct Node {
    id: BrokerId,
    running: bool,
    /// Cut off from the controller: no metadata in, no AlterPartition out,
    /// but fetches to and from it still flow.
    isolated: bool,
    /// The leader epoch of the record at each offset.
    log: Vec<i32>,
    epochs: LeaderEpochCache,
    high_watermark: i64,
    leader: Option<LeaderState>,
    /// The leader and leader epoch this node follows.
    follows: Option<(BrokerId, i32)>,
}

impl Node {
    fn log_end(&self) -> i64 {
        self.log.len() as i64
    }
}

struct Controller {
    leader: BrokerId,
    leader_epoch: i32,
    partition_epoch: i32,
    isr: Vec<BrokerId>,
    live: [bool; BROKERS],
}

impl Controller {
    fn assignment(&self) -> PartitionAssignment {
        PartitionAssignment {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            replicas: (0..BROKERS as BrokerId).collect(),
            isr: self.isr.clone(),
        }
    }

    /// A broker's session ended: out of the ISR (unless it is the last
    /// member), and a new leader from the ISR if it led.
    fn fence(&mut self, id: BrokerId) {
        if !std::mem::replace(&mut self.live[id as usize], false) {
            return;
        }
        let in_isr = self.isr.contains(&id);
        if in_isr && self.isr.len() > 1 {
            self.isr.retain(|&m| m != id);
            self.partition_epoch += 1;
        }
        if self.leader == id {
            self.leader = self
                .isr
                .iter()
                .copied()
                .find(|&m| self.live[m as usize])
                .unwrap_or(NO_LEADER);
            self.leader_epoch += 1;
            self.partition_epoch += 1;
        }
    }

    fn unfence(&mut self, id: BrokerId) {
        self.live[id as usize] = true;
        if self.leader == NO_LEADER && self.isr.contains(&id) {
            self.leader = id;
            self.leader_epoch += 1;
            self.partition_epoch += 1;
        }
    }

    /// The controller's side of AlterPartition.
    fn alter_isr(&mut self, from: BrokerId, request: &AlterIsrRequest) -> Result<(), IsrRefusal> {
        if !self.live[from as usize]
            || from != self.leader
            || request.leader_epoch != self.leader_epoch
            || request.partition_epoch != self.partition_epoch
        {
            return Err(IsrRefusal::Fenced);
        }
        let ineligible = request
            .new_isr
            .iter()
            .any(|&m| !self.isr.contains(&m) && !self.live[m as usize]);
        if ineligible {
            return Err(IsrRefusal::Rejected);
        }
        self.isr = request.new_isr.clone();
        self.partition_epoch += 1;
        Ok(())
    }
}

struct AcksAllProduce {
    leader: BrokerId,
    leader_epoch: i32,
    first_offset: i64,
    required_offset: i64,
}

struct Sim {
    seed: u64,
    step: usize,
    rng: StdRng,
    now_ms: i64,
    nodes: Vec<Node>,
    controller: Controller,
    inbox: Vec<(BrokerId, AlterIsrRequest)>,
    waiting: Vec<AcksAllProduce>,
    /// Acknowledged records: offset → leader epoch.
    acked: BTreeMap<i64, i32>,
    /// The highest high watermark seen per (leader, leader epoch).
    high_watermarks: BTreeMap<(BrokerId, i32), i64>,
    acks_done: usize,
    truncations: usize,
    elections: usize,
    /// The latest steps, printed when an invariant breaks.
    events: std::collections::VecDeque<String>,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let nodes = (0..BROKERS as BrokerId)
            .map(|id| Node {
                id,
                running: true,
                isolated: false,
                log: Vec::new(),
                epochs: LeaderEpochCache::new(),
                high_watermark: 0,
                leader: None,
                follows: None,
            })
            .collect();
        let mut sim = Sim {
            seed,
            step: 0,
            rng: StdRng::seed_from_u64(seed),
            now_ms: 0,
            nodes,
            controller: Controller {
                leader: 0,
                leader_epoch: 0,
                partition_epoch: 0,
                isr: (0..BROKERS as BrokerId).collect(),
                live: [true; BROKERS],
            },
            inbox: Vec::new(),
            waiting: Vec::new(),
            acked: BTreeMap::new(),
            high_watermarks: BTreeMap::new(),
            acks_done: 0,
            truncations: 0,
            elections: 0,
            events: std::collections::VecDeque::new(),
        };
        for id in 0..BROKERS as BrokerId {
            sim.deliver_metadata(id);
        }
        sim
    }

    fn context(&self) -> String {
        let events: Vec<&str> = self.events.iter().map(String::as_str).collect();
        format!(
            "seed {} step {} (rerun with REPLICATION_SIM_SEED={}); latest steps:\n  {}\n",
            self.seed,
            self.step,
            self.seed,
            events.join("\n  ")
        )
    }

    fn note(&mut self, event: String) {
        if self.events.len() == 60 {
            self.events.pop_front();
        }
        self.events
            .push_back(format!("{} @{}: {event}", self.step, self.now_ms));
    }

    fn random_node(&mut self) -> BrokerId {
        self.rng.random_range(0..BROKERS as BrokerId)
    }

    fn run(&mut self, steps: usize) {
        for step in 0..steps {
            self.step = step;
            self.now_ms += self.rng.random_range(0..500);
            let node = self.random_node();
            match self.rng.random_range(0..100) {
                0..=34 => self.fetch(node),
                35..=49 => self.produce(node, true),
                50..=54 => self.produce(node, false),
                55..=64 => self.deliver_metadata(node),
                65..=71 => self.shrink_isr(node),
                72..=81 => self.controller_handles_one(),
                82..=84 => self.crash(node),
                85..=86 => self.isolate(node),
                87..=92 => self.restore(node),
                _ => self.now_ms += self.rng.random_range(0..2 * REPLICA_LAG_TIME_MAX_MS),
            }
            self.answer_waiting_produces();
            self.check_invariants();
        }
    }

    fn deliver_metadata(&mut self, id: BrokerId) {
        let now_ms = self.now_ms;
        let c = &self.controller;
        let node = &mut self.nodes[id as usize];
        if !node.running || node.isolated {
            return;
        }
        if c.leader != id {
            node.leader = None;
            node.follows = (c.leader != NO_LEADER).then_some((c.leader, c.leader_epoch));
            let event = format!("{id} follows {:?}", node.follows);
            self.note(event);
            return;
        }
        node.follows = None;
        let log_end = node.log_end();
        match &mut node.leader {
            Some(state) if state.leader_epoch() == c.leader_epoch => {
                state.apply_metadata(c.assignment(), log_end, now_ms);
                let event = format!("{id} leads, metadata {:?}", c.assignment());
                self.note(event);
            }
            _ => {
                // Becoming leader: the new epoch starts at the log end.
                node.epochs.assign(c.leader_epoch, log_end);
                let high_watermark = node.high_watermark;
                node.leader = Some(LeaderState::new(
                    id,
                    c.assignment(),
                    log_end,
                    high_watermark,
                    now_ms,
                ));
                self.elections += 1;
                let event = format!(
                    "{id} becomes leader at {log_end} (hw {high_watermark}): {:?}",
                    c.assignment()
                );
                self.note(event);
            }
        }
    }

    fn fetch(&mut self, id: BrokerId) {
        let (seed, step) = (self.seed, self.step);
        let f = &self.nodes[id as usize];
        let Some((leader_id, epoch)) = f.follows else {
            return;
        };
        let l = &self.nodes[leader_id as usize];
        if !f.running || !l.running {
            return;
        }
        // The leader checks the follower's current leader epoch.
        if l.leader.as_ref().map(|s| s.leader_epoch()) != Some(epoch) {
            return;
        }
        let fetch_offset = f.log_end();
        let last_epoch = f.epochs.latest_epoch().unwrap_or(-1);
        let divergence = diverging_epoch(&l.epochs, l.log_end(), last_epoch, fetch_offset)
            .unwrap_or_else(|e| panic!("{}: {e}", self.context()));
        if let Some(answer) = divergence {
            let cut = truncation_offset(&f.epochs, fetch_offset, answer);
            for (&offset, &acked_epoch) in self.acked.range(cut.offset..) {
                assert!(
                    f.log.get(offset as usize) != Some(&acked_epoch),
                    "{}: broker {id} cuts its log at {} ({answer:?}), below the acknowledged \
                     record at {offset}",
                    self.context(),
                    cut.offset
                );
            }
            self.note(format!(
                "{id} fetches from {leader_id} at {fetch_offset} (epoch {last_epoch}): \
                 diverging {answer:?}, cut at {cut:?}"
            ));
            let f = &mut self.nodes[id as usize];
            f.log.truncate(cut.offset as usize);
            f.epochs.truncate_from_end(cut.offset);
            f.high_watermark = f.high_watermark.min(cut.offset);
            self.truncations += 1;
            return;
        }
        let count = self.rng.random_range(0..=8usize);
        let leader_log_end = l.log_end();
        let records: Vec<i32> = l.log[fetch_offset as usize..]
            .iter()
            .take(count)
            .copied()
            .collect();
        let now_ms = self.now_ms;
        let state = self.nodes[leader_id as usize].leader.as_mut().unwrap();
        let outcome = state
            .on_follower_fetch(id, fetch_offset, leader_log_end, now_ms)
            .unwrap_or_else(|e| panic!("seed {seed} step {step}: {e}"));
        let leader_high_watermark = state.high_watermark();
        let mut event = format!(
            "{id} fetches {} from {leader_id} at {fetch_offset} (leader end {leader_log_end}, \
             hw {leader_high_watermark})",
            records.len()
        );
        if outcome.expand_isr == Some(id) {
            let mut isr = state.isr().to_vec();
            isr.push(id);
            let request = state.propose_isr(isr).unwrap();
            event.push_str(&format!(", proposes {request:?}"));
            self.inbox.push((leader_id, request));
        }
        self.note(event);
        let f = &mut self.nodes[id as usize];
        for epoch in records {
            let offset = f.log_end();
            f.log.push(epoch);
            f.epochs.assign(epoch, offset);
        }
        f.high_watermark = after_fetch(0, f.log_end(), leader_high_watermark, 0).high_watermark;
    }

    fn produce(&mut self, id: BrokerId, acks_all: bool) {
        let count = self.rng.random_range(1..=4);
        let node = &mut self.nodes[id as usize];
        let Some(state) = node.leader.as_mut().filter(|_| node.running) else {
            return;
        };
        if acks_all && !state.enough_replicas(MIN_ISR) {
            return; // NOT_ENOUGH_REPLICAS
        }
        let epoch = state.leader_epoch();
        let first_offset = node.log.len() as i64;
        node.log.extend(std::iter::repeat_n(epoch, count));
        node.epochs.assign(epoch, first_offset);
        let log_end = node.log.len() as i64;
        state.on_local_append(log_end);
        self.note(format!(
            "{id} appends {first_offset}..{log_end} in epoch {epoch}, acks_all {acks_all}"
        ));
        if acks_all {
            self.waiting.push(AcksAllProduce {
                leader: id,
                leader_epoch: epoch,
                first_offset,
                required_offset: log_end,
            });
        }
    }

    fn shrink_isr(&mut self, id: BrokerId) {
        let now_ms = self.now_ms;
        let node = &mut self.nodes[id as usize];
        let Some(state) = node.leader.as_mut().filter(|_| node.running) else {
            return;
        };
        let lagging = state.lagging_replicas(now_ms, REPLICA_LAG_TIME_MAX_MS);
        if lagging.is_empty() {
            return;
        }
        let isr = state
            .isr()
            .iter()
            .copied()
            .filter(|m| !lagging.contains(m))
            .collect();
        if let Ok(request) = state.propose_isr(isr) {
            self.note(format!("{id} proposes {request:?}"));
            self.inbox.push((id, request));
        }
    }

    fn controller_handles_one(&mut self) {
        if self.inbox.is_empty() {
            return;
        }
        let (from, request) = self.inbox.remove(0);
        if self.nodes[from as usize].isolated {
            return; // lost on the way; the leader keeps it in flight
        }
        let answer = self.controller.alter_isr(from, &request);
        self.note(format!("controller answers {request:?}: {answer:?}"));
        let node = &mut self.nodes[from as usize];
        let Some(state) = node.leader.as_mut().filter(|_| node.running) else {
            return;
        };
        match answer {
            Ok(()) => {
                let c = &self.controller;
                state.isr_committed(&request, c.partition_epoch, c.isr.clone());
            }
            Err(refusal) => state.isr_refused(&request, refusal),
        }
    }

    fn crash(&mut self, id: BrokerId) {
        let node = &mut self.nodes[id as usize];
        node.running = false;
        node.leader = None;
        node.follows = None;
        self.controller.fence(id);
        self.note(format!("{id} crashes"));
    }

    fn isolate(&mut self, id: BrokerId) {
        if self.nodes[id as usize].running {
            self.nodes[id as usize].isolated = true;
            self.controller.fence(id);
            self.note(format!("{id} is cut off from the controller"));
        }
    }

    fn restore(&mut self, id: BrokerId) {
        let node = &mut self.nodes[id as usize];
        node.running = true;
        node.isolated = false;
        self.controller.unfence(id);
        self.note(format!("{id} is back"));
    }

    /// Everything comes back and stays up: the followers must cut their
    /// divergent tails, catch up, and rejoin the ISR, ending with the
    /// leader's log and high watermark everywhere.
    fn settle(&mut self) {
        for id in 0..BROKERS as BrokerId {
            self.restore(id);
        }
        for _ in 0..1_000 {
            self.step += 1;
            self.now_ms += 100;
            for id in 0..BROKERS as BrokerId {
                self.deliver_metadata(id);
                self.fetch(id);
            }
            while !self.inbox.is_empty() {
                self.controller_handles_one();
            }
            self.answer_waiting_produces();
            self.check_invariants();
            let leader = &self.nodes[self.controller.leader as usize];
            let settled = leader
                .leader
                .as_ref()
                .is_some_and(|s| s.high_watermark() == leader.log_end())
                && self.controller.isr.len() == BROKERS
                && self.nodes.iter().all(|n| n.log == leader.log);
            if settled {
                return;
            }
        }
        panic!("{}the replicas did not converge", self.context());
    }

    fn answer_waiting_produces(&mut self) {
        let nodes = &self.nodes;
        let mut acked = Vec::new();
        self.waiting.retain(|p| {
            let node = &nodes[p.leader as usize];
            let state = node.leader.as_ref().filter(|_| node.running);
            let Some(state) = state.filter(|s| s.leader_epoch() == p.leader_epoch) else {
                return false; // NOT_LEADER_OR_FOLLOWER
            };
            match state.check_acks_all(p.required_offset, MIN_ISR) {
                AcksAll::Pending => true,
                AcksAll::NotEnoughReplicasAfterAppend => false,
                AcksAll::Done => {
                    acked.push((p.first_offset..p.required_offset, p.leader_epoch));
                    false
                }
            }
        });
        for (offsets, epoch) in acked {
            self.acks_done += 1;
            self.note(format!("acks=all done for {offsets:?} of epoch {epoch}"));
            for offset in offsets {
                let before = self.acked.insert(offset, epoch);
                assert!(
                    before.is_none_or(|e| e == epoch),
                    "{}: offset {offset} acknowledged in epochs {before:?} and {epoch}",
                    self.context()
                );
            }
        }
    }

    fn check_invariants(&mut self) {
        let mut broken = None;
        for node in &self.nodes {
            let Some(state) = node.leader.as_ref().filter(|_| node.running) else {
                continue;
            };
            let hw = state.high_watermark();
            let seen = self
                .high_watermarks
                .entry((node.id, state.leader_epoch()))
                .or_insert(hw);
            if hw < *seen {
                broken = Some(format!(
                    "the high watermark of {} went from {seen} to {hw}",
                    node.id
                ));
            }
            *seen = hw;
            let mut maximal_isr = state.isr().to_vec();
            maximal_isr.extend(state.in_flight().map_or(&[][..], |r| &r.new_isr[..]));
            for &member in &maximal_isr {
                let log = &self.nodes[member as usize].log;
                if (log.len() as i64) < hw || log[..hw as usize] != node.log[..hw as usize] {
                    broken = Some(format!(
                        "ISR member {member} of leader {} lacks records below the high \
                         watermark {hw}",
                        node.id
                    ));
                }
            }
        }
        // The acknowledged records grow with the run: checked every few steps.
        if self.step.is_multiple_of(10) {
            for &member in &self.controller.isr {
                let log = &self.nodes[member as usize].log;
                for (&offset, &epoch) in &self.acked {
                    if log.get(offset as usize) != Some(&epoch) {
                        broken = Some(format!(
                            "ISR member {member} lacks the acknowledged record at {offset}"
                        ));
                    }
                }
            }
        }
        if let Some(broken) = broken {
            panic!("{}{broken}", self.context());
        }
    }
}

#[test]
fn randomized_leaders_followers_crashes_and_elections_keep_the_replication_invariants_and_converge()
{
    let seeds: Vec<u64> = match std::env::var("REPLICATION_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("REPLICATION_SIM_SEED is a number")],
        Err(_) => (0..200).collect(),
    };
    let (mut acks, mut truncations, mut elections) = (0, 0, 0);
    for seed in seeds {
        let mut sim = Sim::new(seed);
        sim.run(3_000);
        sim.settle();
        acks += sim.acks_done;
        truncations += sim.truncations;
        elections += sim.elections;
    }
    // The run must exercise what it checks.
    assert!(acks > 100, "{acks} acks=all produces acknowledged");
    assert!(truncations > 20, "{truncations} truncations");
    assert!(elections > 100, "{elections} elections");
}
