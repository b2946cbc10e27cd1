//! [`LeaderState`]: what the leader of one partition knows of its
//! followers, and the rules that turn it into a high watermark, ISR changes
//! and `acks=all` answers (Kafka's `Partition` on the leader side).
//!
//! Pure: no I/O, no clock, no locks. Every call that needs the time takes
//! `now_ms`; the partition that owns the state calls it under its own lock
//! and acts on what comes back (publishes the high watermark, sends the
//! AlterPartition request, answers waiting produces).
//!
//! The rules:
//! - on becoming leader (or on a new leader epoch) every follower's log end
//!   is unknown, so the high watermark cannot move until each ISR member
//!   fetched in this epoch; ISR members count as caught up at that moment,
//!   the others never were;
//! - a follower's fetch at offset `o` says its log ends at `o`. It was
//!   caught up at this fetch if `o` reaches the leader's log end now, or
//!   at its previous fetch if `o` reaches the leader's log end as it was
//!   then (a follower fetching steadily behind a busy leader stays in sync);
//! - the high watermark is the smallest log end over the *maximal* ISR:
//!   the committed ISR and the members of an in-flight change (KIP-497),
//!   so a replica is counted from the moment the leader proposes it and
//!   until the removal of one is committed. It never goes backwards;
//! - a replica outside the ISR may join when its log end reaches both the
//!   high watermark and the start of the current leader epoch; an ISR
//!   member other than the leader leaves when it was last caught up more
//!   than `replica.lag.time.max.ms` ago (a follower already at the leader's
//!   log end is never lagging);
//! - one AlterPartition at a time. Committed: the new ISR and partition
//!   epoch apply. Refused as ineligible: back to the committed ISR. Refused
//!   for stale epochs (the controller moved on): the change stays in flight
//!   and nothing more is proposed until new metadata arrives, because the
//!   leader no longer knows what the controller holds;
//! - `acks=all` is answered once the high watermark reaches the produce's
//!   last offset + 1, with NOT_ENOUGH_REPLICAS_AFTER_APPEND when the
//!   maximal ISR then is below `min.insync.replicas` (bounded by the
//!   replication factor, as Kafka's effective min ISR).

use std::collections::BTreeMap;

use crate::controller::decisions::DecisionError;
use crate::controller::records::BrokerId;

use super::{acks_all_outcome, AcksAll, ReplicationStatus};

/// What the metadata quorum decided about one partition, as a leader needs
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAssignment {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The assigned replicas, the leader among them.
    pub replicas: Vec<BrokerId>,
    /// The committed in-sync replicas, the leader among them.
    pub isr: Vec<BrokerId>,
}

/// An ISR change for the controller (the broker adds its own epoch and the
/// topic id to make it an AlterPartition request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterIsrRequest {
    pub leader: BrokerId,
    pub leader_epoch: i32,
    /// The partition epoch the change was decided on.
    pub partition_epoch: i32,
    pub new_isr: Vec<BrokerId>,
}

/// Why the controller refused an ISR change, as the leader acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsrRefusal {
    /// The controller says the change was not applied and the leader's view
    /// is current (INELIGIBLE_REPLICA, OPERATION_NOT_ATTEMPTED): back to
    /// the committed ISR; a later change may be proposed.
    Rejected,
    /// The leader's view is out of date (stale partition or leader epoch,
    /// unknown partition, not the leader, invalid request): whether anything
    /// was applied is unknown, so the change stays in flight and nothing is
    /// proposed until new metadata arrives.
    Fenced,
}

impl From<&DecisionError> for IsrRefusal {
    fn from(error: &DecisionError) -> Self {
        match error {
            DecisionError::IneligibleReplica { .. } => IsrRefusal::Rejected,
            _ => IsrRefusal::Fenced,
        }
    }
}

/// A request the leader state refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaderError {
    /// NOT_LEADER_OR_FOLLOWER: a fetch from a broker that holds no replica.
    #[error("broker {0} is not a replica of this partition")]
    NotAReplica(BrokerId),
    /// OFFSET_OUT_OF_RANGE: a follower cannot have more than the leader.
    #[error("fetch offset {fetch_offset} of replica {follower} is beyond the leader's log end {log_end}")]
    FetchBeyondLogEnd {
        follower: BrokerId,
        fetch_offset: i64,
        log_end: i64,
    },
    /// A proposal while another ISR change is in flight.
    #[error("an ISR change is already in flight")]
    IsrChangeInFlight,
    /// A proposal after a refusal for stale epochs, before new metadata.
    #[error("the ISR change was refused for stale epochs; waiting for new metadata")]
    FencedUntilMetadata,
    /// A proposed ISR the controller would refuse anyway.
    #[error("invalid ISR {isr:?}: {reason}")]
    InvalidIsr {
        isr: Vec<BrokerId>,
        reason: &'static str,
    },
}

/// What a follower's fetch moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchOutcome {
    /// The new high watermark, when it moved.
    pub high_watermark: Option<i64>,
    /// The fetching replica, when it is outside the ISR and may join it
    /// now (the broker checks its liveness and proposes the expansion).
    pub expand_isr: Option<BrokerId>,
}

/// The leader's view of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Follower {
    /// `None` until it fetched in this leader epoch.
    log_end: Option<i64>,
    /// The leader's log end at the follower's previous fetch.
    last_fetch_leader_log_end: Option<i64>,
    last_fetch_ms: i64,
    last_caught_up_ms: i64,
}

impl Follower {
    fn unknown(in_sync: bool, now_ms: i64) -> Self {
        Follower {
            log_end: None,
            last_fetch_leader_log_end: None,
            last_fetch_ms: 0,
            // Kafka: an ISR member gets a full lag period to fetch, a
            // replica outside the ISR has never been caught up.
            last_caught_up_ms: if in_sync { now_ms } else { 0 },
        }
    }
}

/// The ISR as the leader holds it: the committed set and at most one
/// change in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Isr {
    committed: Vec<BrokerId>,
    in_flight: Option<AlterIsrRequest>,
    /// The in-flight change was refused for stale epochs.
    fenced: bool,
}

impl Isr {
    /// Whether `id` counts for the high watermark: committed or proposed.
    fn in_maximal(&self, id: BrokerId) -> bool {
        self.committed.contains(&id)
            || self
                .in_flight
                .as_ref()
                .is_some_and(|r| r.new_isr.contains(&id))
    }

    fn maximal_len(&self) -> usize {
        let added = self.in_flight.as_ref().map_or(0, |r| {
            r.new_isr
                .iter()
                .filter(|id| !self.committed.contains(id))
                .count()
        });
        self.committed.len() + added
    }
}

/// The state of one partition while this broker leads it.
#[derive(Debug, Clone)]
pub struct LeaderState {
    local: BrokerId,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: Vec<BrokerId>,
    isr: Isr,
    followers: BTreeMap<BrokerId, Follower>,
    log_end: i64,
    high_watermark: i64,
    /// The log end when this leader epoch began: a replica joining the ISR
    /// must have at least that much, so it holds everything earlier
    /// leaders committed.
    epoch_start_offset: i64,
}

impl LeaderState {
    /// This broker becomes leader of a partition whose log ends at
    /// `log_end` with high watermark `high_watermark` (the caller has
    /// assigned the leader epoch at `log_end` in the log's epoch cache).
    pub fn new(
        local: BrokerId,
        assignment: PartitionAssignment,
        log_end: i64,
        high_watermark: i64,
        now_ms: i64,
    ) -> Self {
        let mut state = LeaderState {
            local,
            leader_epoch: assignment.leader_epoch,
            partition_epoch: assignment.partition_epoch,
            replicas: Vec::new(),
            isr: Isr {
                committed: Vec::new(),
                in_flight: None,
                fenced: false,
            },
            followers: BTreeMap::new(),
            log_end,
            high_watermark: high_watermark.min(log_end),
            epoch_start_offset: log_end,
        };
        state.set_assignment(assignment, now_ms);
        state.update_high_watermark();
        state
    }

    pub fn local(&self) -> BrokerId {
        self.local
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }

    pub fn replicas(&self) -> &[BrokerId] {
        &self.replicas
    }

    /// The committed ISR.
    pub fn isr(&self) -> &[BrokerId] {
        &self.isr.committed
    }

    /// The ISR change waiting for the controller, to resend after a
    /// transport failure.
    pub fn in_flight(&self) -> Option<&AlterIsrRequest> {
        self.isr.in_flight.as_ref()
    }

    pub fn log_end(&self) -> i64 {
        self.log_end
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Where this leader epoch began in the log.
    pub fn epoch_start_offset(&self) -> i64 {
        self.epoch_start_offset
    }

    /// A follower's log end as last fetched in this epoch.
    pub fn follower_log_end(&self, follower: BrokerId) -> Option<i64> {
        self.followers.get(&follower).and_then(|f| f.log_end)
    }

    /// New metadata for the partition this broker still leads. Metadata at
    /// the partition epoch the leader holds, or an older one, changes
    /// nothing (an AlterPartition answer may have brought a newer one
    /// first; and an in-flight change must stay counted until the
    /// controller decided something newer, or it could commit a replica
    /// the high watermark no longer waits for). A newer partition epoch
    /// settles the in-flight change: a request decided on an older one is
    /// refused. A new leader epoch starts over as [`new`](Self::new) does
    /// (every follower's log end unknown). Returns the new high watermark
    /// when it moved (a smaller ISR).
    pub fn apply_metadata(
        &mut self,
        assignment: PartitionAssignment,
        log_end: i64,
        now_ms: i64,
    ) -> Option<i64> {
        if assignment.leader_epoch < self.leader_epoch
            || (assignment.leader_epoch == self.leader_epoch
                && assignment.partition_epoch <= self.partition_epoch)
        {
            return None;
        }
        self.log_end = self.log_end.max(log_end);
        if assignment.leader_epoch > self.leader_epoch {
            self.followers.clear();
            self.epoch_start_offset = self.log_end;
        }
        self.leader_epoch = assignment.leader_epoch;
        self.partition_epoch = assignment.partition_epoch;
        self.isr.in_flight = None;
        self.isr.fenced = false;
        self.set_assignment(assignment, now_ms);
        self.update_high_watermark()
    }

    fn set_assignment(&mut self, assignment: PartitionAssignment, now_ms: i64) {
        let local = self.local;
        self.followers
            .retain(|id, _| assignment.replicas.contains(id));
        for &id in assignment.replicas.iter().filter(|&&id| id != local) {
            let in_sync = assignment.isr.contains(&id);
            self.followers
                .entry(id)
                .or_insert_with(|| Follower::unknown(in_sync, now_ms));
        }
        self.replicas = assignment.replicas;
        self.isr.committed = assignment.isr;
    }

    /// The leader appended: its log now ends at `log_end`. Returns the new
    /// high watermark when it moved (a leader alone in its ISR commits at
    /// once).
    pub fn on_local_append(&mut self, log_end: i64) -> Option<i64> {
        self.log_end = self.log_end.max(log_end);
        self.update_high_watermark()
    }

    /// A follower fetched from `fetch_offset` while the leader's log ended
    /// at `leader_log_end`.
    pub fn on_follower_fetch(
        &mut self,
        follower: BrokerId,
        fetch_offset: i64,
        leader_log_end: i64,
        now_ms: i64,
    ) -> Result<FetchOutcome, LeaderError> {
        self.log_end = self.log_end.max(leader_log_end);
        let log_end = self.log_end;
        let state = self
            .followers
            .get_mut(&follower)
            .ok_or(LeaderError::NotAReplica(follower))?;
        if !(0..=log_end).contains(&fetch_offset) {
            return Err(LeaderError::FetchBeyondLogEnd {
                follower,
                fetch_offset,
                log_end,
            });
        }
        if fetch_offset >= log_end {
            state.last_caught_up_ms = state.last_caught_up_ms.max(now_ms);
        } else if state
            .last_fetch_leader_log_end
            .is_some_and(|previous| fetch_offset >= previous)
        {
            state.last_caught_up_ms = state.last_caught_up_ms.max(state.last_fetch_ms);
        }
        state.log_end = Some(fetch_offset);
        state.last_fetch_leader_log_end = Some(
            state
                .last_fetch_leader_log_end
                .map_or(log_end, |previous| previous.max(log_end)),
        );
        state.last_fetch_ms = now_ms;
        let high_watermark = self.update_high_watermark();
        let expand_isr = self.may_join_isr(follower).then_some(follower);
        Ok(FetchOutcome {
            high_watermark,
            expand_isr,
        })
    }

    /// Whether `follower`, outside the ISR, has all the ISR must have.
    fn may_join_isr(&self, follower: BrokerId) -> bool {
        if self.isr.in_flight.is_some() || self.isr.committed.contains(&follower) {
            return false;
        }
        self.follower_log_end(follower)
            .is_some_and(|end| end >= self.high_watermark && end >= self.epoch_start_offset)
    }

    /// Moves the high watermark to the smallest log end over the maximal
    /// ISR, if that is higher. Returns the new value when it moved.
    fn update_high_watermark(&mut self) -> Option<i64> {
        let mut candidate = self.log_end;
        for (&id, follower) in &self.followers {
            if !self.isr.in_maximal(id) {
                continue;
            }
            match follower.log_end {
                // Not fetched in this epoch: nothing is known to be there.
                None => return None,
                Some(end) => candidate = candidate.min(end),
            }
        }
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            Some(candidate)
        } else {
            None
        }
    }

    /// ISR members (not the leader) last caught up more than
    /// `replica_lag_time_max_ms` before `now_ms`: the replicas to remove.
    /// Empty while an ISR change is in flight (it is decided on the
    /// committed ISR).
    pub fn lagging_replicas(&self, now_ms: i64, replica_lag_time_max_ms: i64) -> Vec<BrokerId> {
        if self.isr.in_flight.is_some() {
            return Vec::new();
        }
        self.isr
            .committed
            .iter()
            .copied()
            .filter(|&id| id != self.local)
            .filter(|id| match self.followers.get(id) {
                Some(f) => {
                    f.log_end != Some(self.log_end)
                        && now_ms.saturating_sub(f.last_caught_up_ms) > replica_lag_time_max_ms
                }
                // Listed in the ISR but not assigned: it cannot fetch.
                None => true,
            })
            .collect()
    }

    /// Proposes `new_isr` to the controller. The leader must be in it and
    /// every member must be a replica, listed once.
    pub fn propose_isr(&mut self, new_isr: Vec<BrokerId>) -> Result<AlterIsrRequest, LeaderError> {
        if self.isr.fenced {
            return Err(LeaderError::FencedUntilMetadata);
        }
        if self.isr.in_flight.is_some() {
            return Err(LeaderError::IsrChangeInFlight);
        }
        let invalid = |reason| LeaderError::InvalidIsr {
            isr: new_isr.clone(),
            reason,
        };
        if !new_isr.contains(&self.local) {
            return Err(invalid("the leader is not in it"));
        }
        if new_isr.iter().any(|id| !self.replicas.contains(id)) {
            return Err(invalid("a member is not a replica"));
        }
        if (1..new_isr.len()).any(|i| new_isr[..i].contains(&new_isr[i])) {
            return Err(invalid("a member is listed twice"));
        }
        let request = AlterIsrRequest {
            leader: self.local,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            new_isr,
        };
        self.isr.in_flight = Some(request.clone());
        Ok(request)
    }

    /// The controller committed `request` as `isr` at `partition_epoch`.
    /// Ignored unless `request` is the change in flight (new metadata came
    /// first and says it all) and the partition epoch is not older than the
    /// leader's. Returns the new high watermark when it moved (a removed
    /// member no longer holds it back).
    pub fn isr_committed(
        &mut self,
        request: &AlterIsrRequest,
        partition_epoch: i32,
        isr: Vec<BrokerId>,
    ) -> Option<i64> {
        if self.isr.in_flight.as_ref() != Some(request) || partition_epoch < self.partition_epoch {
            return None;
        }
        self.partition_epoch = partition_epoch;
        self.isr.committed = isr;
        self.isr.in_flight = None;
        self.isr.fenced = false;
        self.update_high_watermark()
    }

    /// The controller refused `request`. Ignored unless it is the change in
    /// flight (a late answer to a change new metadata already settled).
    pub fn isr_refused(&mut self, request: &AlterIsrRequest, refusal: IsrRefusal) {
        if self.isr.in_flight.as_ref() != Some(request) {
            return;
        }
        match refusal {
            IsrRefusal::Rejected => {
                self.isr.in_flight = None;
                self.isr.fenced = false;
            }
            IsrRefusal::Fenced => self.isr.fenced = true,
        }
    }

    /// Kafka's effective `min.insync.replicas`: never above the number of
    /// replicas, so a topic configured beyond its replication factor can
    /// still be written.
    fn effective_min_isr(&self, min_isr: usize) -> usize {
        min_isr.min(self.replicas.len())
    }

    /// Whether an `acks=all` produce may be appended: the committed ISR
    /// reaches `min.insync.replicas` (otherwise NOT_ENOUGH_REPLICAS).
    pub fn enough_replicas(&self, min_isr: usize) -> bool {
        self.isr.committed.len() >= self.effective_min_isr(min_isr)
    }

    /// Where an `acks=all` produce whose last offset is
    /// `required_offset - 1` stands (Kafka's
    /// `checkEnoughReplicasReachOffset`).
    pub fn check_acks_all(&self, required_offset: i64, min_isr: usize) -> AcksAll {
        acks_all_outcome(
            self.high_watermark,
            self.isr.maximal_len(),
            self.replicas.len(),
            required_offset,
            min_isr,
        )
    }

    /// What the partition publishes to its `acks=all` waiters.
    pub fn status(&self) -> ReplicationStatus {
        ReplicationStatus {
            high_watermark: self.high_watermark,
            in_sync_replicas: self.isr.maximal_len(),
            replicas: self.replicas.len(),
            leader_epoch: self.leader_epoch,
            leading: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG_MS: i64 = 30_000;

    fn assignment(replicas: &[BrokerId], isr: &[BrokerId]) -> PartitionAssignment {
        PartitionAssignment {
            leader_epoch: 5,
            partition_epoch: 10,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
        }
    }

    /// Broker 1 leads replicas 1, 2, 3, all in sync, its log ending at 100
    /// with the high watermark at 100, at time 0.
    fn leader_of_three() -> LeaderState {
        LeaderState::new(1, assignment(&[1, 2, 3], &[1, 2, 3]), 100, 100, 0)
    }

    #[test]
    fn a_new_leader_does_not_move_the_hw_until_its_followers_fetched() {
        let mut leader = LeaderState::new(1, assignment(&[1, 2, 3], &[1, 2, 3]), 100, 80, 0);
        assert_eq!(leader.high_watermark(), 80);
        assert_eq!(leader.on_local_append(120), None);
        let moved = leader.on_follower_fetch(2, 120, 120, 1).unwrap();
        assert_eq!(moved.high_watermark, None, "replica 3 has not fetched yet");
        assert_eq!(leader.high_watermark(), 80);
        let moved = leader.on_follower_fetch(3, 110, 120, 2).unwrap();
        assert_eq!(moved.high_watermark, Some(110));
        assert_eq!(leader.high_watermark(), 110);
    }

    #[test]
    fn the_hw_does_not_move_past_what_every_isr_member_has() {
        let mut leader = leader_of_three();
        leader.on_local_append(150);
        leader.on_follower_fetch(2, 150, 150, 1).unwrap();
        leader.on_follower_fetch(3, 130, 150, 1).unwrap();
        assert_eq!(leader.high_watermark(), 130);
        // A replica outside the ISR does not hold it back.
        let mut leader = LeaderState::new(1, assignment(&[1, 2, 3], &[1, 2]), 100, 100, 0);
        leader.on_local_append(150);
        leader.on_follower_fetch(2, 140, 150, 1).unwrap();
        assert_eq!(leader.high_watermark(), 140);
    }

    #[test]
    fn the_hw_never_goes_backwards() {
        let mut leader = leader_of_three();
        leader.on_local_append(150);
        leader.on_follower_fetch(2, 150, 150, 1).unwrap();
        leader.on_follower_fetch(3, 150, 150, 1).unwrap();
        assert_eq!(leader.high_watermark(), 150);
        // A follower truncated and fetches from lower down.
        let moved = leader.on_follower_fetch(3, 120, 150, 2).unwrap();
        assert_eq!(moved.high_watermark, None);
        assert_eq!(leader.high_watermark(), 150);
        // A leader built with a high watermark above its log end bounds it.
        assert_eq!(
            LeaderState::new(1, assignment(&[1, 2], &[1, 2]), 10, 50, 0).high_watermark(),
            10
        );
    }

    #[test]
    fn a_leader_alone_in_its_isr_moves_the_hw_at_once() {
        let mut leader = LeaderState::new(1, assignment(&[1, 2, 3], &[1]), 100, 90, 0);
        assert_eq!(leader.high_watermark(), 100, "at once on becoming leader");
        assert_eq!(leader.on_local_append(130), Some(130));
        assert_eq!(leader.high_watermark(), 130);
    }

    #[test]
    fn a_fetch_from_a_broker_outside_the_assignment_is_refused() {
        let mut leader = leader_of_three();
        assert_eq!(
            leader.on_follower_fetch(7, 100, 100, 1),
            Err(LeaderError::NotAReplica(7))
        );
        assert_eq!(
            leader.on_follower_fetch(1, 100, 100, 1),
            Err(LeaderError::NotAReplica(1)),
            "the leader does not fetch from itself"
        );
        assert!(matches!(
            leader.on_follower_fetch(2, 101, 100, 1),
            Err(LeaderError::FetchBeyondLogEnd { .. })
        ));
        assert!(leader.on_follower_fetch(2, -1, 100, 1).is_err());
        assert_eq!(leader.follower_log_end(2), None, "nothing recorded");
    }

    #[test]
    fn a_follower_that_stops_fetching_leaves_the_isr_after_the_lag_time_and_not_before() {
        let mut leader = leader_of_three();
        leader.on_follower_fetch(2, 100, 100, 1_000).unwrap();
        leader.on_follower_fetch(3, 100, 100, 1_000).unwrap();
        leader.on_local_append(110);
        // Replica 2 keeps fetching and catching up; replica 3 stops.
        let mut now = 1_000;
        while now < 1_000 + LAG_MS {
            now += 500;
            leader.on_follower_fetch(2, 110, 110, now).unwrap();
            assert_eq!(leader.lagging_replicas(now, LAG_MS), Vec::<BrokerId>::new());
        }
        assert_eq!(now, 1_000 + LAG_MS, "exactly the lag time: still in sync");
        assert_eq!(leader.lagging_replicas(now + 1, LAG_MS), vec![3]);
    }

    #[test]
    fn a_follower_already_at_the_leaders_log_end_never_lags() {
        let mut leader = leader_of_three();
        leader.on_follower_fetch(2, 100, 100, 1).unwrap();
        leader.on_follower_fetch(3, 100, 100, 1).unwrap();
        assert!(leader.lagging_replicas(10 * LAG_MS, LAG_MS).is_empty());
    }

    #[test]
    fn an_isr_member_that_never_fetches_from_a_new_leader_lags_after_the_lag_time() {
        let leader = LeaderState::new(1, assignment(&[1, 2], &[1, 2]), 100, 100, 5_000);
        assert!(leader.lagging_replicas(5_000 + LAG_MS, LAG_MS).is_empty());
        assert_eq!(leader.lagging_replicas(5_001 + LAG_MS, LAG_MS), vec![2]);
    }

    #[test]
    fn a_follower_fetching_steadily_behind_a_busy_leader_stays_in_sync() {
        let mut leader = leader_of_three();
        leader.on_follower_fetch(3, 100, 100, 0).unwrap();
        // Every fetch reaches what the leader had at the previous fetch,
        // never what it has now.
        let mut leader_end = 100;
        let mut now = 0;
        for _ in 0..100 {
            let fetched_to = leader_end;
            leader_end += 10;
            now += 1_000;
            leader.on_local_append(leader_end);
            leader
                .on_follower_fetch(2, fetched_to, leader_end, now)
                .unwrap();
            leader
                .on_follower_fetch(3, fetched_to, leader_end, now)
                .unwrap();
        }
        assert!(now > 3 * LAG_MS);
        assert!(leader.lagging_replicas(now, LAG_MS).is_empty());
        // A follower falling further behind at every fetch is caught up at
        // no fetch and lags.
        let mut leader = leader_of_three();
        leader.on_follower_fetch(3, 100, 100, 0).unwrap();
        for i in 1..=100 {
            leader.on_local_append(100 + 20 * i);
            leader
                .on_follower_fetch(2, 100 + 10 * i, 100 + 20 * i, 1_000 * i)
                .unwrap();
            leader
                .on_follower_fetch(3, 100 + 20 * i, 100 + 20 * i, 1_000 * i)
                .unwrap();
        }
        assert_eq!(leader.lagging_replicas(100_000, LAG_MS), vec![2]);
    }

    #[test]
    fn a_caught_up_replica_outside_the_isr_is_a_candidate_to_join() {
        let mut leader = LeaderState::new(1, assignment(&[1, 2, 3], &[1, 2]), 100, 100, 0);
        leader.on_local_append(120);
        leader.on_follower_fetch(2, 120, 120, 1).unwrap();
        assert_eq!(leader.high_watermark(), 120);
        let outcome = leader.on_follower_fetch(3, 110, 120, 1).unwrap();
        assert_eq!(outcome.expand_isr, None, "below the high watermark");
        let outcome = leader.on_follower_fetch(3, 120, 120, 2).unwrap();
        assert_eq!(outcome.expand_isr, Some(3));
        // An ISR member is no candidate.
        let outcome = leader.on_follower_fetch(2, 120, 120, 2).unwrap();
        assert_eq!(outcome.expand_isr, None);
    }

    #[test]
    fn a_replica_must_reach_the_start_of_the_leader_epoch_to_join() {
        // The log ends at 100, the high watermark is 60: a replica at 80
        // passes the high watermark but lacks what earlier leaders wrote.
        let mut leader = LeaderState::new(1, assignment(&[1, 2, 3], &[1, 2]), 100, 60, 0);
        assert_eq!(leader.epoch_start_offset(), 100);
        let outcome = leader.on_follower_fetch(3, 80, 100, 1).unwrap();
        assert_eq!(outcome.expand_isr, None);
        let outcome = leader.on_follower_fetch(3, 100, 100, 2).unwrap();
        assert_eq!(outcome.expand_isr, Some(3));
    }

    #[test]
    fn a_pending_isr_expansion_counts_the_new_member_for_the_hw() {
        let mut leader = LeaderState::new(1, assignment(&[1, 2, 3], &[1, 2]), 100, 100, 0);
        leader.on_follower_fetch(2, 100, 100, 1).unwrap();
        leader.on_follower_fetch(3, 100, 100, 1).unwrap();
        let request = leader.propose_isr(vec![1, 2, 3]).unwrap();
        assert_eq!(
            request,
            AlterIsrRequest {
                leader: 1,
                leader_epoch: 5,
                partition_epoch: 10,
                new_isr: vec![1, 2, 3],
            }
        );
        leader.on_local_append(150);
        leader.on_follower_fetch(2, 150, 150, 2).unwrap();
        assert_eq!(leader.high_watermark(), 100, "replica 3 already counts");
        assert_eq!(leader.check_acks_all(150, 3), AcksAll::Pending);
        leader.on_follower_fetch(3, 150, 150, 2).unwrap();
        assert_eq!(leader.high_watermark(), 150);
        assert_eq!(leader.check_acks_all(150, 3), AcksAll::Done);
        assert!(
            !leader.enough_replicas(3),
            "appends check the committed ISR"
        );
        leader.isr_committed(&request, 11, vec![1, 2, 3]);
        assert!(leader.enough_replicas(3));
        assert_eq!(leader.partition_epoch(), 11);
    }

    #[test]
    fn a_pending_isr_removal_still_counts_the_member_until_committed() {
        let mut leader = leader_of_three();
        leader.on_follower_fetch(2, 100, 100, 1).unwrap();
        leader.on_follower_fetch(3, 100, 100, 1).unwrap();
        leader.on_local_append(150);
        leader.on_follower_fetch(2, 150, 150, 2).unwrap();
        let request = leader.propose_isr(vec![1, 2]).unwrap();
        assert_eq!(leader.high_watermark(), 100, "replica 3 still holds it");
        assert_eq!(leader.isr_committed(&request, 11, vec![1, 2]), Some(150));
    }

    #[test]
    fn one_isr_change_is_in_flight_at_a_time() {
        let mut leader = leader_of_three();
        let request = leader.propose_isr(vec![1, 2]).unwrap();
        assert_eq!(
            leader.propose_isr(vec![1]),
            Err(LeaderError::IsrChangeInFlight)
        );
        assert!(
            leader.lagging_replicas(10 * LAG_MS, LAG_MS).is_empty(),
            "no shrink decided while one is in flight"
        );
        leader.on_local_append(120);
        leader.on_follower_fetch(2, 120, 120, 1).unwrap();
        leader.on_follower_fetch(3, 120, 120, 1).unwrap();
        // An ineligible replica: back to the committed ISR, free to propose.
        leader.isr_refused(&request, IsrRefusal::Rejected);
        assert_eq!(leader.in_flight(), None);
        assert_eq!(leader.isr(), [1, 2, 3]);
        let next = leader.propose_isr(vec![1, 3]).unwrap();
        // A late answer to the first change does not touch the second.
        leader.isr_refused(&request, IsrRefusal::Fenced);
        assert_eq!(leader.isr_committed(&request, 11, vec![1, 2]), None);
        assert_eq!(leader.in_flight(), Some(&next));
        assert_eq!(leader.isr(), [1, 2, 3]);
    }

    #[test]
    fn a_refusal_for_stale_epochs_stops_proposals_until_new_metadata() {
        let mut leader = leader_of_three();
        leader.on_follower_fetch(2, 100, 100, 1).unwrap();
        let request = leader.propose_isr(vec![1, 2]).unwrap();
        let stale = DecisionError::StalePartitionEpoch {
            partition: "t-0".into(),
            current: 11,
            request: 10,
        };
        leader.isr_refused(&request, IsrRefusal::from(&stale));
        assert_eq!(
            leader.propose_isr(vec![1, 2]),
            Err(LeaderError::FencedUntilMetadata)
        );
        assert!(leader.in_flight().is_some(), "the maximal ISR still holds");
        // An answer for an older partition epoch changes nothing.
        assert_eq!(leader.isr_committed(&request, 9, vec![1]), None);
        assert_eq!(leader.isr(), [1, 2, 3]);
        assert!(leader.in_flight().is_some());
        // New metadata: the controller's ISR, proposals allowed again.
        leader.apply_metadata(assignment_at(5, 11, &[1, 2, 3], &[1, 2]), 100, 2);
        assert_eq!(leader.isr(), [1, 2]);
        assert_eq!(leader.partition_epoch(), 11);
        // The late answer to the change the metadata already settled.
        assert_eq!(leader.isr_committed(&request, 12, vec![1]), None);
        assert_eq!(leader.isr(), [1, 2]);
        assert!(leader.propose_isr(vec![1]).is_ok());
    }

    fn assignment_at(
        leader_epoch: i32,
        partition_epoch: i32,
        replicas: &[BrokerId],
        isr: &[BrokerId],
    ) -> PartitionAssignment {
        PartitionAssignment {
            leader_epoch,
            partition_epoch,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
        }
    }

    #[test]
    fn metadata_keeps_follower_state_in_an_epoch_and_resets_it_in_a_new_one() {
        let mut leader = leader_of_three();
        leader.on_follower_fetch(2, 100, 100, 1).unwrap();
        leader.on_follower_fetch(3, 100, 100, 1).unwrap();
        // Stale metadata is ignored.
        leader.apply_metadata(assignment_at(5, 9, &[1, 2], &[1]), 100, 2);
        assert_eq!(leader.replicas(), [1, 2, 3]);
        // Same leader epoch, replica 3 removed from the assignment.
        leader.apply_metadata(assignment_at(5, 11, &[1, 2], &[1, 2]), 100, 2);
        assert_eq!(leader.follower_log_end(2), Some(100));
        assert!(leader.on_follower_fetch(3, 100, 100, 3).is_err());
        // A new leader epoch: every log end unknown again.
        leader.on_local_append(130);
        leader.apply_metadata(assignment_at(6, 12, &[1, 2], &[1, 2]), 130, 4);
        assert_eq!(leader.follower_log_end(2), None);
        assert_eq!(leader.epoch_start_offset(), 130);
        assert_eq!(leader.high_watermark(), 100);
    }

    #[test]
    fn metadata_at_the_same_partition_epoch_keeps_an_in_flight_expansion_counted() {
        let mut leader = LeaderState::new(1, assignment(&[1, 2, 3], &[1, 2]), 100, 100, 0);
        leader.on_follower_fetch(2, 100, 100, 1).unwrap();
        let outcome = leader.on_follower_fetch(3, 100, 100, 1).unwrap();
        assert_eq!(outcome.expand_isr, Some(3));
        let request = leader.propose_isr(vec![1, 2, 3]).unwrap();
        // The same metadata again: the controller may still commit the
        // expansion, so replica 3 must keep holding the high watermark.
        leader.apply_metadata(assignment(&[1, 2, 3], &[1, 2]), 100, 2);
        assert_eq!(leader.in_flight(), Some(&request));
        leader.on_local_append(120);
        leader.on_follower_fetch(2, 120, 120, 3).unwrap();
        assert_eq!(leader.high_watermark(), 100);
        assert_eq!(leader.isr_committed(&request, 11, vec![1, 2, 3]), None);
        assert_eq!(leader.isr(), [1, 2, 3]);
    }

    #[test]
    fn invalid_isr_proposals_are_refused() {
        let mut leader = leader_of_three();
        for isr in [vec![2, 3], vec![1, 4], vec![1, 2, 2]] {
            assert!(
                matches!(
                    leader.propose_isr(isr.clone()),
                    Err(LeaderError::InvalidIsr { .. })
                ),
                "{isr:?}"
            );
        }
        assert_eq!(leader.in_flight(), None);
    }

    #[test]
    fn acks_all_with_isr_below_min_insync_replicas_after_the_append_answers_not_enough_replicas_after_append(
    ) {
        let mut leader = leader_of_three();
        leader.on_follower_fetch(2, 100, 100, 1).unwrap();
        leader.on_follower_fetch(3, 100, 100, 1).unwrap();
        assert!(leader.enough_replicas(2));
        leader.on_local_append(110);
        assert_eq!(leader.check_acks_all(110, 2), AcksAll::Pending);
        // Both followers stop; the ISR shrinks to the leader alone.
        let request = leader.propose_isr(vec![1]).unwrap();
        assert_eq!(leader.isr_committed(&request, 11, vec![1]), Some(110));
        assert_eq!(
            leader.check_acks_all(110, 2),
            AcksAll::NotEnoughReplicasAfterAppend
        );
        assert!(!leader.enough_replicas(2), "the next append is refused");
        assert_eq!(leader.check_acks_all(110, 1), AcksAll::Done);
    }

    #[test]
    fn min_insync_replicas_above_the_replication_factor_is_bounded_by_it() {
        let leader = LeaderState::new(1, assignment(&[1], &[1]), 0, 0, 0);
        assert!(leader.enough_replicas(2));
        assert_eq!(leader.check_acks_all(0, 2), AcksAll::Done);
    }
}
