//! One consumer group: its members and the classic rebalance state
//! machine, with no I/O and no locking (the coordinator does both).
//!
//! ```text
//!            first JoinGroup                 all members joined, or
//!   Empty ────────────────▶ PreparingRebalance ── rebalance timeout ──▶ CompletingRebalance
//!     ▲                        ▲        ▲                                    │ leader's SyncGroup
//!     │ last member leaves     │        └──── join / leave / expiry ─────────┤
//!     │ or expires             └───────────── join / leave / expiry ─── Stable ◀┘
//!   (any state) ── DeleteGroups on an empty group ──▶ Dead
//! ```
//! Members waiting in JoinGroup or SyncGroup hold a oneshot sender; the
//! transitions answer them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupResponse, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::records::{GroupValue, MemberRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The names Kafka uses in DescribeGroups and ListGroups.
    pub fn name(&self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat: Instant,
    pub awaiting_join: Option<oneshot::Sender<JoinGroupResponse>>,
    pub awaiting_sync: Option<oneshot::Sender<SyncGroupResponse>>,
}

impl Member {
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn session_expired(&self, now: Instant) -> bool {
        // Members blocked in JoinGroup or SyncGroup cannot heartbeat.
        self.awaiting_join.is_none()
            && self.awaiting_sync.is_none()
            && now.duration_since(self.last_heartbeat)
                > Duration::from_millis(self.session_timeout_ms.max(0) as u64)
    }
}

/// What one [`Group::expire`] pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// Members whose session timed out.
    pub members: Vec<String>,
    /// How many pending member ids (KIP-394) timed out unused.
    pub pending: usize,
}

impl Expired {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending == 0
    }
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// Members in the order they joined (the first becomes leader).
    pub members: IndexMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, and until when they
    /// may come back with them.
    pub pending: HashMap<String, Instant>,
    /// group.instance.id -> member id of static members.
    pub static_members: HashMap<String, String>,
    /// When the current join phase ends at the latest.
    pub rebalance_deadline: Option<Instant>,
    /// In the initial-rebalance delay of a group that was empty: wait for
    /// more members even when everyone known has joined.
    pub initial_delay: bool,
    pub state_timestamp_ms: i64,
    /// Bumped whenever a join phase starts, so stale timers do nothing.
    pub timer_epoch: u64,
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl Group {
    pub fn new(id: &str, now_ms: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: IndexMap::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline: None,
            initial_delay: false,
            state_timestamp_ms: now_ms,
            timer_epoch: 0,
        }
    }

    fn set_state(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_timestamp_ms = now_ms;
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Protocols every member supports (all of a joining member's when
    /// the group is empty).
    pub fn candidate_protocols(&self) -> HashSet<String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else {
            return HashSet::new();
        };
        let mut common: HashSet<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in members {
            let theirs: HashSet<&String> = m.protocols.iter().map(|(n, _)| n).collect();
            common.retain(|p| theirs.contains(p));
        }
        common
    }

    /// Whether a member with these protocols can join: same protocol type
    /// and at least one protocol in common with everyone else.
    pub fn supports(
        &self,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
        replacing: Option<&str>,
    ) -> bool {
        let others: Vec<&Member> = self
            .members
            .values()
            .filter(|m| Some(m.member_id.as_str()) != replacing)
            .collect();
        if others.is_empty() {
            return !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// The protocol most members prefer among those all support.
    pub fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                *votes.entry(name).or_default() += 1;
            }
        }
        // Ties break by the leader-to-be's preference, deterministically.
        let first_prefs: Vec<&str> = self
            .members
            .values()
            .next()
            .map(|m| m.protocols.iter().map(|(n, _)| n.as_str()).collect())
            .unwrap_or_default();
        votes
            .into_iter()
            .max_by_key(|(name, count)| {
                (
                    *count,
                    std::cmp::Reverse(first_prefs.iter().position(|p| p == name)),
                )
            })
            .map(|(name, _)| name.to_string())
    }

    pub fn all_members_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    /// Whether the current join phase can end now: every member rejoined,
    /// no member id handed out with MEMBER_ID_REQUIRED is still awaited, and
    /// the initial-rebalance delay is over. Checked after every change that
    /// can make it true (a join, a leave, an expiry), as Kafka does.
    pub fn join_phase_done(&self) -> bool {
        self.state == GroupState::PreparingRebalance
            && !self.initial_delay
            && self.all_members_joined()
    }

    /// Starts a join phase. Waiting SyncGroup calls are told to rejoin.
    /// Returns the phase's deadline when a timer must be started.
    pub fn prepare_rebalance(
        &mut self,
        now: Instant,
        now_ms: i64,
        initial_delay_ms: u64,
    ) -> Option<Instant> {
        for m in self.members.values_mut() {
            if let Some(tx) = m.awaiting_sync.take() {
                let mut r = SyncGroupResponse::default();
                r.error_code = ResponseError::RebalanceInProgress.code();
                let _ = tx.send(r);
            }
        }
        if self.state == GroupState::PreparingRebalance {
            return None;
        }
        let was_empty = self.state == GroupState::Empty;
        let max_rebalance_ms = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms.max(0) as u64)
            .max()
            .unwrap_or(0);
        let wait_ms = if was_empty {
            initial_delay_ms.min(max_rebalance_ms.max(initial_delay_ms))
        } else {
            max_rebalance_ms
        };
        self.initial_delay = was_empty && initial_delay_ms > 0;
        self.set_state(GroupState::PreparingRebalance, now_ms);
        self.timer_epoch += 1;
        let deadline = now + Duration::from_millis(wait_ms);
        self.rebalance_deadline = Some(deadline);
        Some(deadline)
    }

    /// Ends the join phase: drops members that did not rejoin, picks the
    /// protocol and leader, bumps the generation and answers every waiting
    /// JoinGroup. Returns true when the group ended up empty.
    pub fn complete_join(&mut self, now_ms: i64) -> bool {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.pending.clear();
        self.rebalance_deadline = None;
        self.initial_delay = false;
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.set_state(GroupState::Empty, now_ms);
            return true;
        }
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.set_state(GroupState::CompletingRebalance, now_ms);
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let member_list: Vec<JoinGroupResponseMember> = self
            .members
            .values()
            .map(|m| {
                let mut jm = JoinGroupResponseMember::default();
                jm.member_id = str_bytes(&m.member_id);
                jm.group_instance_id = m.group_instance_id.as_deref().map(str_bytes);
                jm.metadata = m.metadata_for(&protocol);
                jm
            })
            .collect();
        let (generation, protocol_type) = (self.generation, self.protocol_type.clone());
        for m in self.members.values_mut() {
            if let Some(tx) = m.awaiting_join.take() {
                let mut r = JoinGroupResponse::default();
                r.generation_id = generation;
                r.protocol_type = protocol_type.as_deref().map(str_bytes);
                r.protocol_name = Some(str_bytes(&protocol));
                r.leader = str_bytes(&leader);
                r.member_id = str_bytes(&m.member_id);
                if m.member_id == leader {
                    r.members = member_list.clone();
                }
                let _ = tx.send(r);
            }
            m.last_heartbeat = Instant::now();
        }
        false
    }

    /// The leader's assignments arrived: store them, become Stable and
    /// answer every waiting SyncGroup.
    pub fn complete_sync(&mut self, assignments: HashMap<String, Bytes>, now_ms: i64) {
        for m in self.members.values_mut() {
            m.assignment = assignments.get(&m.member_id).cloned().unwrap_or_default();
        }
        self.set_state(GroupState::Stable, now_ms);
        let (protocol_type, protocol) = (self.protocol_type.clone(), self.protocol.clone());
        for m in self.members.values_mut() {
            if let Some(tx) = m.awaiting_sync.take() {
                let mut r = SyncGroupResponse::default();
                r.protocol_type = protocol_type.as_deref().map(str_bytes);
                r.protocol_name = protocol.as_deref().map(str_bytes);
                r.assignment = m.assignment.clone();
                let _ = tx.send(r);
            }
        }
    }

    pub fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.shift_remove(member_id)?;
        if let Some(iid) = &member.group_instance_id {
            if self.static_members.get(iid).map(String::as_str) == Some(member_id) {
                self.static_members.remove(iid);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        Some(member)
    }

    /// Removes members whose session expired and pending member ids that
    /// were not used within their session timeout (KIP-394: a client may
    /// abandon the id it was handed, e.g. when its subscription changed
    /// mid-join). Either can end a join phase that waited for them; the
    /// caller checks [`Group::join_phase_done`].
    pub fn expire(&mut self, now: Instant) -> Expired {
        let pending_before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now);
        let pending = pending_before - self.pending.len();
        let members: Vec<String> = self
            .members
            .values()
            .filter(|m| m.session_expired(now))
            .map(|m| m.member_id.clone())
            .collect();
        for id in &members {
            self.remove_member(id);
        }
        Expired { members, pending }
    }

    /// Checks a member's identity for Heartbeat, SyncGroup and OffsetCommit.
    pub fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if let Some(iid) = instance_id {
            match self.static_members.get(iid) {
                Some(current) if current == member_id => {}
                Some(_) => return Err(ResponseError::FencedInstanceId),
                None => return Err(ResponseError::UnknownMemberId),
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        Ok(())
    }

    /// The group as stored in `__consumer_offsets`.
    pub fn to_record(&self) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_timestamp_ms,
            members: self
                .members
                .values()
                .map(|m| MemberRecord {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Restores a group loaded from `__consumer_offsets`. Members come
    /// back as they were (Stable); those that do not heartbeat again
    /// expire after their session timeout, as after a coordinator move in
    /// Kafka.
    pub fn from_record(id: &str, value: &GroupValue, now: Instant) -> Group {
        let mut group = Group::new(id, value.state_timestamp_ms);
        group.generation = value.generation;
        group.protocol_type =
            (!value.protocol_type.is_empty()).then(|| value.protocol_type.clone());
        group.protocol = value.protocol.clone();
        group.leader = value.leader.clone();
        for m in &value.members {
            let protocol = value.protocol.clone().unwrap_or_default();
            if let Some(iid) = &m.group_instance_id {
                group
                    .static_members
                    .insert(iid.clone(), m.member_id.clone());
            }
            group.members.insert(
                m.member_id.clone(),
                Member {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: vec![(protocol, m.subscription.clone())],
                    assignment: m.assignment.clone(),
                    last_heartbeat: now,
                    awaiting_join: None,
                    awaiting_sync: None,
                },
            );
        }
        group.state = if group.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        group
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, protocols: &[&str]) -> Member {
        Member {
            member_id: id.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(format!("{id}:{p}"))))
                .collect(),
            assignment: Bytes::new(),
            last_heartbeat: Instant::now(),
            awaiting_join: None,
            awaiting_sync: None,
        }
    }

    #[test]
    fn the_protocol_all_members_support_with_most_votes_is_chosen() {
        let mut g = Group::new("g", 0);
        g.protocol_type = Some("consumer".into());
        g.members
            .insert("a".into(), member("a", &["cooperative-sticky", "range"]));
        g.members
            .insert("b".into(), member("b", &["range", "roundrobin"]));
        g.members
            .insert("c".into(), member("c", &["roundrobin", "range"]));
        assert_eq!(g.select_protocol().as_deref(), Some("range"));
        assert!(g.supports("consumer", &[("range".into(), Bytes::new())], None));
        assert!(!g.supports("consumer", &[("sticky".into(), Bytes::new())], None));
        assert!(!g.supports("connect", &[("range".into(), Bytes::new())], None));
    }

    #[test]
    fn a_join_phase_answers_every_member_and_only_the_leader_gets_the_member_list() {
        let mut g = Group::new("g", 0);
        g.protocol_type = Some("consumer".into());
        let mut receivers = Vec::new();
        for id in ["a", "b"] {
            let (tx, rx) = oneshot::channel();
            let mut m = member(id, &["range"]);
            m.awaiting_join = Some(tx);
            g.members.insert(id.into(), m);
            receivers.push(rx);
        }
        assert!(g.prepare_rebalance(Instant::now(), 0, 0).is_some());
        assert!(g.all_members_joined());
        assert!(!g.complete_join(0));
        assert_eq!(
            (g.state, g.generation),
            (GroupState::CompletingRebalance, 1)
        );
        let a = receivers[0].try_recv().unwrap();
        let b = receivers[1].try_recv().unwrap();
        assert_eq!((a.generation_id, a.leader.as_str()), (1, "a"));
        assert_eq!(a.members.len(), 2);
        assert!(b.members.is_empty());
        assert_eq!(&a.members[1].metadata[..], b"b:range");
    }

    #[test]
    fn members_that_do_not_rejoin_are_dropped_and_an_empty_group_becomes_empty() {
        let mut g = Group::new("g", 0);
        g.members.insert("a".into(), member("a", &["range"]));
        g.prepare_rebalance(Instant::now(), 0, 0);
        assert!(!g.all_members_joined());
        assert!(g.complete_join(0));
        assert_eq!(g.state, GroupState::Empty);
        assert!(g.members.is_empty());
    }

    #[test]
    fn silent_members_expire_but_not_while_blocked_in_a_join() {
        let mut g = Group::new("g", 0);
        let mut quiet = member("quiet", &["range"]);
        quiet.last_heartbeat = Instant::now() - Duration::from_secs(60);
        let mut joining = member("joining", &["range"]);
        joining.last_heartbeat = Instant::now() - Duration::from_secs(60);
        joining.awaiting_join = Some(oneshot::channel().0);
        g.members.insert("quiet".into(), quiet);
        g.members.insert("joining".into(), joining);
        assert_eq!(g.expire(Instant::now()).members, vec!["quiet".to_string()]);
        assert!(g.members.contains_key("joining"));
    }

    #[test]
    fn an_abandoned_pending_member_id_expires_and_no_longer_holds_up_the_join_phase() {
        let start = Instant::now();
        let mut g = Group::new("g", 0);
        g.protocol_type = Some("consumer".into());
        let mut rejoined = member("a", &["range"]);
        rejoined.awaiting_join = Some(oneshot::channel().0);
        g.members.insert("a".into(), rejoined);
        g.prepare_rebalance(start, 0, 0);
        // A second client was handed an id with MEMBER_ID_REQUIRED and a
        // 3 s session, and never came back with it.
        g.pending
            .insert("abandoned".into(), start + Duration::from_secs(3));
        assert!(!g.join_phase_done(), "the pending id is still awaited");
        assert!(g.expire(start + Duration::from_secs(2)).is_empty());
        assert!(!g.join_phase_done());

        let expired = g.expire(start + Duration::from_secs(4));
        assert_eq!(
            expired,
            Expired {
                members: vec![],
                pending: 1
            }
        );
        assert!(g.join_phase_done(), "only rejoined members are left");
        assert!(!g.complete_join(0));
        assert_eq!(
            (g.state, g.generation),
            (GroupState::CompletingRebalance, 1)
        );
    }

    #[test]
    fn the_initial_rebalance_delay_holds_the_join_phase_even_when_everyone_joined() {
        let mut g = Group::new("g", 0);
        let mut m = member("a", &["range"]);
        m.awaiting_join = Some(oneshot::channel().0);
        g.members.insert("a".into(), m);
        g.prepare_rebalance(Instant::now(), 0, 3000);
        assert!(g.all_members_joined() && !g.join_phase_done());
        g.initial_delay = false;
        assert!(g.join_phase_done());
    }

    #[test]
    fn static_members_are_fenced_by_a_newer_instance() {
        let mut g = Group::new("g", 0);
        let mut m = member("new-id", &["range"]);
        m.group_instance_id = Some("host-1".into());
        g.members.insert("new-id".into(), m);
        g.static_members.insert("host-1".into(), "new-id".into());
        assert_eq!(g.check_member("new-id", Some("host-1")), Ok(()));
        assert_eq!(
            g.check_member("old-id", Some("host-1")),
            Err(ResponseError::FencedInstanceId)
        );
        assert_eq!(
            g.check_member("nobody", None),
            Err(ResponseError::UnknownMemberId)
        );
    }
}
