//! The group coordinator: classic consumer groups (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup), committed offsets, and their persistence in the
//! compacted internal topic `__consumer_offsets`.
//!
//! Each group lives behind its own mutex and is never locked across an
//! `.await`; members waiting for a rebalance hold a oneshot receiver
//! instead. Writes to `__consumer_offsets` are serialised per partition of
//! that topic, and the in-memory state is updated only after the write
//! succeeded, so memory never runs ahead of the log. On start the topic
//! is read from the beginning to rebuild offsets and groups.
//!
//! It never sees the broker: it is handed the partitions of
//! `__consumer_offsets` as [`InternalPartition`]s (`crate::internal_topic`)
//! and keeps each group in the one `records::partition_for` names.
//!
//! Offsets committed inside a transaction (TxnOffsetCommit) are written
//! in a transactional batch of the producer and stay pending until the
//! transaction's marker reaches the partition: COMMIT makes them committed
//! offsets, ABORT drops them (`complete_txn`, called by the broker after it
//! wrote the marker; the same rule when a partition is loaded).
//!
//! What it is not: the new consumer protocol (KIP-848).

pub mod records;
pub mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, SyncGroupRequest,
    SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::error::BrokerError;
use crate::internal_topic::{encode_batch, replay, InternalPartition};
use crate::storage::records::{decode_batch, MAX_DECOMPRESSED_BYTES};
use crate::util::{lock, now_ms};
use records::{partition_for, GroupValue, OffsetValue, OffsetsKey};
use state::{Group, GroupState, Member};

/// Name of the internal topic holding commits and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Settings of the coordinator (from the broker config).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub offsets_topic_partitions: i32,
    pub offsets_retention_ms: i64,
    pub initial_rebalance_delay_ms: u64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub max_group_size: usize,
    pub offset_metadata_max_bytes: usize,
}

/// Committed offsets of one group, by (topic, partition).
pub type GroupOffsets = HashMap<(String, i32), OffsetValue>;

pub struct GroupCoordinator {
    config: GroupConfig,
    /// Partitions of `__consumer_offsets` (the topic's may differ from the
    /// configured count when it was created with another one).
    partition_count: AtomicI32,
    /// The groups of the loaded partitions.
    groups: Mutex<HashMap<String, Arc<Mutex<Group>>>>,
    offsets: Mutex<HashMap<String, GroupOffsets>>,
    /// The `__consumer_offsets` partitions this coordinator owns (this
    /// broker leads them), by index. A group whose partition is missing
    /// here is coordinated elsewhere (NOT_COORDINATOR); one whose partition
    /// is still loading answers COORDINATOR_LOAD_IN_PROGRESS.
    ///
    /// Lock order: `partitions`, then `groups`, then `offsets`.
    partitions: Mutex<HashMap<i32, Arc<OffsetsPartition>>>,
}

/// One `__consumer_offsets` partition this coordinator owns, and the lock
/// that serialises its writes.
struct OffsetsPartition {
    log: Arc<dyn InternalPartition>,
    /// The leader epoch the ownership came with.
    leader_epoch: i32,
    loaded: AtomicBool,
    write_lock: tokio::sync::Mutex<()>,
    pending_txns: Mutex<PendingTxnOffsets>,
}

/// What reading an offsets partition found.
#[derive(Default)]
struct LoadedState {
    offsets: HashMap<String, GroupOffsets>,
    groups: HashMap<String, GroupValue>,
    /// Offsets of transactions with no marker yet.
    pending: PendingTxnOffsets,
    records: u64,
}

/// Offsets committed in transactions that have not ended yet, by producer
/// id, then group: they become committed offsets when the transaction's
/// COMMIT marker reaches the partition and are dropped at its ABORT.
type PendingTxnOffsets = HashMap<i64, HashMap<String, GroupOffsets>>;

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Reads a partition of `__consumer_offsets` from its log start to its
/// log end: the latest committed offsets and group metadata of its groups,
/// and the offsets of transactions not ended yet. A transaction's offsets
/// count from its COMMIT marker on, in the marker's place. Blocking (file
/// reads).
fn read_offsets_partition(partition: &dyn InternalPartition) -> Result<LoadedState, BrokerError> {
    let mut state = LoadedState::default();
    replay(partition, |header, raw| {
        let set = match decode_batch(&raw, MAX_DECOMPRESSED_BYTES) {
            Ok(set) => set,
            Err(e) => {
                warn!(partition = partition.index(), offset = header.base_offset, error = %e, "skipping undecodable batch in __consumer_offsets");
                return;
            }
        };
        if header.is_control() {
            let ended = state.pending.remove(&header.producer_id);
            let commit = set
                .records
                .first()
                .and_then(|r| r.key.as_deref())
                .and_then(|k| k.get(2..4))
                == Some(&[0, 1][..]);
            if let (Some(ended), true) = (ended, commit) {
                for (group, offsets) in ended {
                    state.offsets.entry(group).or_default().extend(offsets);
                }
            }
            return;
        }
        let transactional = header.is_transactional() && header.producer_id >= 0;
        for record in set.records {
            state.records += 1;
            let Some(key) = record.key.as_deref().and_then(OffsetsKey::decode) else {
                continue;
            };
            match key {
                OffsetsKey::Offset {
                    group,
                    topic,
                    partition,
                } => {
                    let value = record.value.as_deref().map(OffsetValue::decode);
                    if transactional {
                        if let Some(Some(v)) = value {
                            state
                                .pending
                                .entry(header.producer_id)
                                .or_default()
                                .entry(group)
                                .or_default()
                                .insert((topic, partition), v);
                        }
                        continue;
                    }
                    match value {
                        Some(Some(v)) => {
                            state
                                .offsets
                                .entry(group)
                                .or_default()
                                .insert((topic, partition), v);
                        }
                        Some(None) => {}
                        None => {
                            if let Some(g) = state.offsets.get_mut(&group) {
                                g.remove(&(topic, partition));
                            }
                        }
                    }
                }
                OffsetsKey::Group { group } => {
                    match record.value.as_deref().map(GroupValue::decode) {
                        Some(Some(v)) => {
                            state.groups.insert(group, v);
                        }
                        Some(None) => {}
                        None => {
                            state.groups.remove(&group);
                        }
                    }
                }
            }
        }
    })?;
    state.offsets.retain(|_, o| !o.is_empty());
    Ok(state)
}

/// The `__consumer_offsets` records of a group's commits.
fn offset_records(
    group_id: &str,
    commits: &[((String, i32), OffsetValue)],
) -> Vec<(Bytes, Option<Bytes>)> {
    commits
        .iter()
        .map(|((topic, partition), v)| {
            let key = OffsetsKey::Offset {
                group: group_id.into(),
                topic: topic.clone(),
                partition: *partition,
            };
            (key.encode(), Some(v.encode()))
        })
        .collect()
}

/// The error a client sees for a failed write of group state (as Kafka
/// maps them): the coordinator moved, or is not available for now.
pub fn write_error(e: &BrokerError) -> ResponseError {
    match e {
        BrokerError::NotLeaderOrFollower(..) | BrokerError::UnknownPartition(..) => {
            ResponseError::NotCoordinator
        }
        _ => ResponseError::CoordinatorNotAvailable,
    }
}

fn join_error(error: ResponseError, member_id: &str) -> JoinGroupResponse {
    let mut r = JoinGroupResponse::default();
    r.error_code = error.code();
    r.generation_id = -1;
    r.member_id = str_bytes(member_id);
    r
}

impl GroupCoordinator {
    /// A coordinator that owns no partition yet: see
    /// [`GroupCoordinator::take_ownership`].
    pub fn new(config: GroupConfig) -> GroupCoordinator {
        GroupCoordinator {
            partition_count: AtomicI32::new(config.offsets_topic_partitions),
            config,
            groups: Mutex::new(HashMap::new()),
            offsets: Mutex::new(HashMap::new()),
            partitions: Mutex::new(HashMap::new()),
        }
    }

    /// The number of `__consumer_offsets` partitions groups are spread on.
    pub fn set_partition_count(&self, count: i32) {
        self.partition_count.store(count.max(1), Ordering::Release);
    }

    fn partition_of(&self, group_id: &str) -> i32 {
        partition_for(group_id, self.partition_count.load(Ordering::Acquire))
    }

    /// The partitions owned, as (index, leader epoch).
    pub fn owned_partitions(&self) -> Vec<(i32, i32)> {
        lock(&self.partitions)
            .iter()
            .map(|(&index, p)| (index, p.leader_epoch))
            .collect()
    }

    /// Whether a partition is still loading (ListGroups answers
    /// COORDINATOR_LOAD_IN_PROGRESS meanwhile).
    pub fn loading(&self) -> bool {
        lock(&self.partitions)
            .values()
            .any(|p| !p.loaded.load(Ordering::Acquire))
    }

    /// This broker became the leader of `log` (a partition of
    /// `__consumer_offsets`) in `leader_epoch`: the coordinator takes its
    /// groups over, loading them from the log in the background. Groups
    /// of the partition answer COORDINATOR_LOAD_IN_PROGRESS until then.
    /// Taking over a partition already owned in an older epoch reloads it
    /// (another broker may have led it in between).
    /// Returns the load started, `None` when already owned in this epoch.
    pub fn take_ownership(
        self: &Arc<Self>,
        log: Arc<dyn InternalPartition>,
        leader_epoch: i32,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let index = log.index();
        let current = lock(&self.partitions).get(&index).cloned();
        if let Some(current) = current {
            if current.leader_epoch == leader_epoch {
                return None;
            }
            self.give_up(index);
        }
        let owned = self.claim(log, leader_epoch);
        let me = self.clone();
        Some(tokio::spawn(async move {
            let started = Instant::now();
            let reader = owned.clone();
            let read =
                tokio::task::spawn_blocking(move || read_offsets_partition(reader.log.as_ref()))
                    .await;
            match read {
                Ok(Ok(state)) => {
                    let (groups, records) = (state.groups.len(), state.records);
                    if me.finish_load(&owned, state) {
                        let elapsed_ms = started.elapsed().as_millis() as u64;
                        // Fifty empty partitions at a first start are not
                        // news; a partition with groups (or a slow load) is.
                        if records > 0 || elapsed_ms >= 1000 {
                            info!(
                                partition = index,
                                leader_epoch,
                                groups,
                                records,
                                elapsed_ms,
                                "loaded {OFFSETS_TOPIC} partition: coordinating its groups"
                            );
                        } else {
                            tracing::debug!(
                                partition = index,
                                leader_epoch,
                                "loaded empty {OFFSETS_TOPIC} partition: coordinating its groups"
                            );
                        }
                    }
                }
                Ok(Err(e)) => {
                    warn!(partition = index, error = %e, "could not load {OFFSETS_TOPIC} partition; its groups stay unavailable here");
                }
                Err(e) => {
                    warn!(partition = index, error = %e, "loading {OFFSETS_TOPIC} partition failed");
                }
            }
        }))
    }

    /// This broker no longer leads partition `index` of
    /// `__consumer_offsets`: its groups are forgotten here (their new
    /// coordinator loads them), and members waiting for a rebalance are
    /// told NOT_COORDINATOR so they look for it.
    pub fn give_up(&self, index: i32) {
        let mut partitions = lock(&self.partitions);
        if partitions.remove(&index).is_none() {
            return;
        }
        let removed: Vec<(String, Arc<Mutex<Group>>)> = {
            let mut groups = lock(&self.groups);
            let ids: Vec<String> = groups
                .keys()
                .filter(|id| self.partition_of(id) == index)
                .cloned()
                .collect();
            ids.into_iter()
                .filter_map(|id| groups.remove(&id).map(|g| (id, g)))
                .collect()
        };
        lock(&self.offsets).retain(|id, _| self.partition_of(id) != index);
        drop(partitions);
        for (id, arc) in &removed {
            let mut g = lock(arc);
            g.state = GroupState::Dead;
            for m in g.members.values_mut() {
                if let Some(tx) = m.awaiting_join.take() {
                    let _ = tx.send(join_error(ResponseError::NotCoordinator, &m.member_id));
                }
                if let Some(tx) = m.awaiting_sync.take() {
                    let mut r = SyncGroupResponse::default();
                    r.error_code = ResponseError::NotCoordinator.code();
                    let _ = tx.send(r);
                }
            }
            debug!(group = %id, "group unloaded");
        }
        info!(
            partition = index,
            groups = removed.len(),
            "gave up {OFFSETS_TOPIC} partition: its groups are coordinated elsewhere"
        );
    }

    /// Registers `log` as owned, not loaded yet.
    fn claim(&self, log: Arc<dyn InternalPartition>, leader_epoch: i32) -> Arc<OffsetsPartition> {
        let owned = Arc::new(OffsetsPartition {
            log,
            leader_epoch,
            loaded: AtomicBool::new(false),
            write_lock: tokio::sync::Mutex::new(()),
            pending_txns: Mutex::new(HashMap::new()),
        });
        lock(&self.partitions).insert(owned.log.index(), owned.clone());
        owned
    }

    /// Makes the groups read from `owned` live, unless the partition was
    /// given up (or taken over again) meanwhile. Returns whether it did.
    fn finish_load(&self, owned: &Arc<OffsetsPartition>, state: LoadedState) -> bool {
        let partitions = lock(&self.partitions);
        match partitions.get(&owned.log.index()) {
            Some(current) if Arc::ptr_eq(current, owned) => {}
            _ => return false,
        }
        let now = Instant::now();
        {
            let mut groups = lock(&self.groups);
            for (id, value) in &state.groups {
                groups.insert(
                    id.clone(),
                    Arc::new(Mutex::new(Group::from_record(id, value, now))),
                );
            }
            for id in state.offsets.keys() {
                groups
                    .entry(id.clone())
                    .or_insert_with(|| Arc::new(Mutex::new(Group::new(id, now_ms()))));
            }
        }
        lock(&self.offsets).extend(state.offsets);
        *lock(&owned.pending_txns) = state.pending;
        owned.loaded.store(true, Ordering::Release);
        true
    }

    /// The loaded partition `group_id` lives in, or why this coordinator
    /// cannot serve the group.
    fn owner(&self, group_id: &str) -> Result<Arc<OffsetsPartition>, ResponseError> {
        let index = self.partition_of(group_id);
        match lock(&self.partitions).get(&index) {
            None => Err(ResponseError::NotCoordinator),
            Some(p) if !p.loaded.load(Ordering::Acquire) => {
                Err(ResponseError::CoordinatorLoadInProgress)
            }
            Some(p) => Ok(p.clone()),
        }
    }

    /// Whether this coordinator serves `group_id` now.
    pub fn check_coordinator(&self, group_id: &str) -> Result<(), ResponseError> {
        self.owner(group_id).map(|_| ())
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    fn group(&self, id: &str) -> Option<Arc<Mutex<Group>>> {
        lock(&self.groups).get(id).cloned()
    }

    fn group_or_create(&self, id: &str) -> Arc<Mutex<Group>> {
        lock(&self.groups)
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(Group::new(id, now_ms()))))
            .clone()
    }

    /// Appends records for `group` to its offsets partition, then runs
    /// `apply` while still holding the partition's write lock, so memory and
    /// log see changes in the same order.
    async fn persist<R>(
        &self,
        group: &str,
        entries: Vec<(Bytes, Option<Bytes>)>,
        apply: impl FnOnce() -> R,
    ) -> Result<R, BrokerError> {
        self.persist_as(group, entries, None, |_| apply()).await
    }

    /// As [`GroupCoordinator::persist`], the records in a transactional
    /// batch of `producer` (id, epoch) when there is one; `apply` is given
    /// the partition the records went to.
    async fn persist_as<R>(
        &self,
        group: &str,
        entries: Vec<(Bytes, Option<Bytes>)>,
        producer: Option<(i64, i16)>,
        apply: impl FnOnce(&OffsetsPartition) -> R,
    ) -> Result<R, BrokerError> {
        let index = self.partition_of(group);
        let not_here = || BrokerError::NotLeaderOrFollower(OFFSETS_TOPIC.into(), index);
        let partition = self.owner(group).map_err(|_| not_here())?;
        let _serial = partition.write_lock.lock().await;
        let batch = encode_batch(&entries, now_ms(), producer)?;
        partition.log.clone().append(batch).await?;
        // Still the owner: a give-up during the write dropped the state
        // this would change.
        let partitions = lock(&self.partitions);
        if !partitions
            .get(&index)
            .is_some_and(|p| Arc::ptr_eq(p, &partition))
        {
            return Err(not_here());
        }
        Ok(apply(&partition))
    }

    async fn persist_group(&self, group_id: &str, value: Option<GroupValue>) {
        let key = OffsetsKey::Group {
            group: group_id.to_string(),
        }
        .encode();
        if let Err(e) = self
            .persist(group_id, vec![(key, value.map(|v| v.encode()))], || ())
            .await
        {
            warn!(group = group_id, error = %e, "could not record group metadata");
        }
    }

    fn spawn_rebalance_timer(self: &Arc<Self>, group_id: String, epoch: u64, deadline: Instant) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut deadline = deadline;
            loop {
                tokio::time::sleep_until(deadline).await;
                let Some(arc) = me.group(&group_id) else {
                    return;
                };
                let persist = {
                    let mut g = lock(&arc);
                    if g.timer_epoch != epoch || g.state != GroupState::PreparingRebalance {
                        return;
                    }
                    match g.rebalance_deadline {
                        Some(d) if d > Instant::now() => {
                            deadline = d;
                            continue;
                        }
                        _ => {}
                    }
                    debug!(group = %group_id, members = g.members.len(), "join phase ended");
                    g.complete_join(now_ms()).then(|| g.to_record())
                };
                if let Some(record) = persist {
                    me.persist_group(&group_id, Some(record)).await;
                }
                return;
            }
        });
    }

    /// Starts a rebalance if the group is not already in one.
    fn rebalance(self: &Arc<Self>, g: &mut Group) {
        if let Some(deadline) = g.prepare_rebalance(
            Instant::now(),
            now_ms(),
            self.config.initial_rebalance_delay_ms,
        ) {
            info!(group = %g.id, generation = g.generation, members = g.members.len(), "rebalancing");
            self.spawn_rebalance_timer(g.id.clone(), g.timer_epoch, deadline);
        }
    }

    /// After members were removed: rebalance, finish a join phase, or
    /// settle as empty. Returns a record to persist when the group emptied.
    fn after_members_left(self: &Arc<Self>, g: &mut Group) -> Option<GroupValue> {
        match g.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if g.members.is_empty() {
                    g.prepare_rebalance(Instant::now(), now_ms(), 0);
                    g.complete_join(now_ms()).then(|| g.to_record())
                } else {
                    self.rebalance(g);
                    None
                }
            }
            GroupState::PreparingRebalance => Self::maybe_complete_join(g),
            _ => None,
        }
    }

    /// Ends the join phase if nobody is awaited any more. Returns a record
    /// to persist when the group emptied.
    fn maybe_complete_join(g: &mut Group) -> Option<GroupValue> {
        if !g.join_phase_done() {
            return None;
        }
        debug!(group = %g.id, members = g.members.len(), "join phase ended: every member rejoined");
        g.complete_join(now_ms()).then(|| g.to_record())
    }

    pub async fn join_group(
        self: &Arc<Self>,
        request: JoinGroupRequest,
        version: i16,
        client_id: &str,
        client_host: &str,
    ) -> JoinGroupResponse {
        let response = self
            .join_group_inner(request, version, client_id, client_host)
            .await;
        finalize_join(response, version)
    }

    async fn join_group_inner(
        self: &Arc<Self>,
        request: JoinGroupRequest,
        version: i16,
        client_id: &str,
        client_host: &str,
    ) -> JoinGroupResponse {
        let group_id = request.group_id.0.to_string();
        let member_id = request.member_id.to_string();
        if group_id.is_empty() {
            return join_error(ResponseError::InvalidGroupId, &member_id);
        }
        if let Err(e) = self.check_coordinator(&group_id) {
            return join_error(e, &member_id);
        }
        let session = request.session_timeout_ms;
        if session < self.config.min_session_timeout_ms
            || session > self.config.max_session_timeout_ms
        {
            return join_error(ResponseError::InvalidSessionTimeout, &member_id);
        }
        let rebalance_timeout = if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            session
        };
        let protocols: Vec<(String, Bytes)> = request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect();
        let protocol_type = request.protocol_type.to_string();
        if protocols.is_empty() || protocol_type.is_empty() {
            return join_error(ResponseError::InconsistentGroupProtocol, &member_id);
        }
        let instance_id = request
            .group_instance_id
            .as_ref()
            .map(|s| s.to_string())
            .filter(|_| version >= 5);
        let new_member = |id: &str, tx: Option<oneshot::Sender<JoinGroupResponse>>| Member {
            member_id: id.to_string(),
            group_instance_id: instance_id.clone(),
            client_id: client_id.to_string(),
            client_host: client_host.to_string(),
            session_timeout_ms: session,
            rebalance_timeout_ms: rebalance_timeout,
            protocols: protocols.clone(),
            assignment: Bytes::new(),
            last_heartbeat: Instant::now(),
            awaiting_join: tx,
            awaiting_sync: None,
        };

        let arc = self.group_or_create(&group_id);
        let (rx, persist) = {
            let mut g = lock(&arc);
            if g.state == GroupState::Dead {
                return join_error(ResponseError::CoordinatorNotAvailable, &member_id);
            }
            let (tx, rx) = oneshot::channel();
            let joining_id: String;
            if member_id.is_empty() {
                if let Some(iid) = &instance_id {
                    if let Some(old_id) = g.static_members.get(iid).cloned() {
                        // A static member restarted: it takes over its old
                        // identity under a new member id, fencing the old one.
                        if !g.supports(&protocol_type, &protocols, Some(&old_id)) {
                            return join_error(
                                ResponseError::InconsistentGroupProtocol,
                                &member_id,
                            );
                        }
                        let new_id = format!("{iid}-{}", uuid::Uuid::new_v4());
                        let was_leader = g.leader.as_deref() == Some(old_id.as_str());
                        let old = g.remove_member(&old_id);
                        let unchanged = old.as_ref().is_some_and(|o| o.protocols == protocols);
                        let mut m = new_member(&new_id, None);
                        if let Some(old) = old {
                            m.assignment = old.assignment;
                            if let Some(tx) = old.awaiting_join {
                                let _ = tx.send(join_error(
                                    ResponseError::FencedInstanceId,
                                    &old.member_id,
                                ));
                            }
                        }
                        g.static_members.insert(iid.clone(), new_id.clone());
                        g.members.insert(new_id.clone(), m);
                        if was_leader {
                            g.leader = Some(new_id.clone());
                        }
                        if g.state == GroupState::Stable && unchanged {
                            // No rebalance: the member gets its old assignment.
                            // A leader gets the member list but is told not
                            // to assign (KIP-814).
                            let mut r = JoinGroupResponse::default();
                            r.generation_id = g.generation;
                            r.protocol_type = g.protocol_type.as_deref().map(str_bytes);
                            r.protocol_name = g.protocol.as_deref().map(str_bytes);
                            r.leader = str_bytes(g.leader.as_deref().unwrap_or_default());
                            r.member_id = str_bytes(&new_id);
                            if was_leader {
                                r.members = member_list(&g);
                                r.skip_assignment = true;
                            }
                            return r;
                        }
                        joining_id = new_id;
                    } else {
                        if !g.supports(&protocol_type, &protocols, None) {
                            return join_error(
                                ResponseError::InconsistentGroupProtocol,
                                &member_id,
                            );
                        }
                        if g.members.len() + g.pending.len() >= self.config.max_group_size {
                            return join_error(ResponseError::GroupMaxSizeReached, &member_id);
                        }
                        let new_id = format!("{iid}-{}", uuid::Uuid::new_v4());
                        g.static_members.insert(iid.clone(), new_id.clone());
                        g.members.insert(new_id.clone(), new_member(&new_id, None));
                        joining_id = new_id;
                    }
                } else {
                    if !g.supports(&protocol_type, &protocols, None) {
                        return join_error(ResponseError::InconsistentGroupProtocol, &member_id);
                    }
                    if g.members.len() + g.pending.len() >= self.config.max_group_size {
                        return join_error(ResponseError::GroupMaxSizeReached, &member_id);
                    }
                    let new_id = format!("{client_id}-{}", uuid::Uuid::new_v4());
                    if version >= 4 {
                        // KIP-394: the client must come back with this id.
                        g.pending.insert(
                            new_id.clone(),
                            Instant::now() + Duration::from_millis(session as u64),
                        );
                        return join_error(ResponseError::MemberIdRequired, &new_id);
                    }
                    g.members.insert(new_id.clone(), new_member(&new_id, None));
                    joining_id = new_id;
                }
            } else if g.pending.remove(&member_id).is_some() {
                if !g.supports(&protocol_type, &protocols, None) {
                    return join_error(ResponseError::InconsistentGroupProtocol, &member_id);
                }
                g.members
                    .insert(member_id.clone(), new_member(&member_id, None));
                joining_id = member_id.clone();
            } else if g.members.contains_key(&member_id) {
                if let Err(e) = g.check_member(&member_id, instance_id.as_deref()) {
                    return join_error(e, &member_id);
                }
                if !g.supports(&protocol_type, &protocols, Some(&member_id)) {
                    return join_error(ResponseError::InconsistentGroupProtocol, &member_id);
                }
                let is_leader = g.leader.as_deref() == Some(member_id.as_str());
                let state = g.state;
                let (generation, leader, protocol, ptype) = (
                    g.generation,
                    g.leader.clone(),
                    g.protocol.clone(),
                    g.protocol_type.clone(),
                );
                let Some(m) = g.members.get_mut(&member_id) else {
                    return join_error(ResponseError::UnknownMemberId, &member_id);
                };
                let changed = m.protocols != protocols;
                m.protocols = protocols.clone();
                m.session_timeout_ms = session;
                m.rebalance_timeout_ms = rebalance_timeout;
                m.last_heartbeat = Instant::now();
                let settled = matches!(state, GroupState::Stable | GroupState::CompletingRebalance);
                if settled && !changed && (state == GroupState::CompletingRebalance || !is_leader) {
                    // Nothing changed: repeat the current generation.
                    let mut r = JoinGroupResponse::default();
                    r.generation_id = generation;
                    r.protocol_type = ptype.as_deref().map(str_bytes);
                    r.protocol_name = protocol.as_deref().map(str_bytes);
                    r.leader = str_bytes(leader.as_deref().unwrap_or_default());
                    r.member_id = str_bytes(&member_id);
                    if is_leader {
                        r.members = member_list(&g);
                    }
                    return r;
                }
                joining_id = member_id.clone();
            } else {
                return join_error(ResponseError::UnknownMemberId, &member_id);
            }

            if g.protocol_type.is_none() || g.members.len() == 1 {
                g.protocol_type = Some(protocol_type.clone());
            }
            if let Some(m) = g.members.get_mut(&joining_id) {
                m.awaiting_join = Some(tx);
            }
            if g.state != GroupState::PreparingRebalance {
                self.rebalance(&mut g);
            } else if g.initial_delay {
                // Each new member in the initial delay waits a bit longer
                // for the next one.
                let extended =
                    Instant::now() + Duration::from_millis(self.config.initial_rebalance_delay_ms);
                if g.rebalance_deadline.is_some_and(|d| d < extended) {
                    g.rebalance_deadline = Some(extended);
                }
            }
            let persist = Self::maybe_complete_join(&mut g);
            (rx, persist)
        };
        if let Some(record) = persist {
            self.persist_group(&group_id, Some(record)).await;
        }
        let limit = Duration::from_millis(
            rebalance_timeout.max(0) as u64 + self.config.initial_rebalance_delay_ms,
        ) + Duration::from_secs(5);
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(response)) => response,
            // The member was removed (left, fenced, expired) while waiting.
            _ => join_error(ResponseError::UnknownMemberId, &member_id),
        }
    }

    pub async fn sync_group(
        self: &Arc<Self>,
        request: SyncGroupRequest,
        version: i16,
    ) -> SyncGroupResponse {
        let mut response = self.sync_group_inner(request).await;
        if version < 5 {
            response.protocol_type = None;
            response.protocol_name = None;
        }
        response
    }

    async fn sync_group_inner(self: &Arc<Self>, request: SyncGroupRequest) -> SyncGroupResponse {
        let error = |e: ResponseError| {
            let mut r = SyncGroupResponse::default();
            r.error_code = e.code();
            r
        };
        let group_id = request.group_id.0.to_string();
        let member_id = request.member_id.to_string();
        if let Err(e) = self.check_coordinator(&group_id) {
            return error(e);
        }
        let Some(arc) = self.group(&group_id) else {
            return error(ResponseError::UnknownMemberId);
        };
        let (rx, persist) = {
            let mut g = lock(&arc);
            if let Err(e) = g.check_member(&member_id, request.group_instance_id.as_deref()) {
                return error(e);
            }
            if request.generation_id != g.generation {
                return error(ResponseError::IllegalGeneration);
            }
            if request
                .protocol_type
                .as_ref()
                .is_some_and(|t| Some(t.as_str()) != g.protocol_type.as_deref())
                || request
                    .protocol_name
                    .as_ref()
                    .is_some_and(|p| Some(p.as_str()) != g.protocol.as_deref())
            {
                return error(ResponseError::InconsistentGroupProtocol);
            }
            match g.state {
                GroupState::PreparingRebalance => return error(ResponseError::RebalanceInProgress),
                GroupState::Empty | GroupState::Dead => {
                    return error(ResponseError::UnknownMemberId)
                }
                GroupState::Stable => {
                    let mut r = SyncGroupResponse::default();
                    r.protocol_type = g.protocol_type.as_deref().map(str_bytes);
                    r.protocol_name = g.protocol.as_deref().map(str_bytes);
                    r.assignment = g
                        .members
                        .get(&member_id)
                        .map(|m| m.assignment.clone())
                        .unwrap_or_default();
                    return r;
                }
                GroupState::CompletingRebalance => {}
            }
            let (tx, rx) = oneshot::channel();
            if let Some(m) = g.members.get_mut(&member_id) {
                m.awaiting_sync = Some(tx);
                m.last_heartbeat = Instant::now();
            }
            let persist = if g.leader.as_deref() == Some(member_id.as_str()) {
                let assignments: HashMap<String, Bytes> = request
                    .assignments
                    .iter()
                    .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                    .collect();
                g.complete_sync(assignments, now_ms());
                info!(group = %group_id, generation = g.generation, members = g.members.len(), "group is stable");
                Some(g.to_record())
            } else {
                None
            };
            (rx, persist)
        };
        if let Some(record) = persist {
            self.persist_group(&group_id, Some(record)).await;
        }
        match tokio::time::timeout(Duration::from_secs(300), rx).await {
            Ok(Ok(response)) => response,
            _ => error(ResponseError::RebalanceInProgress),
        }
    }

    pub fn heartbeat(&self, request: HeartbeatRequest) -> HeartbeatResponse {
        let mut r = HeartbeatResponse::default();
        let code = |e: ResponseError| e.code();
        if let Err(e) = self.check_coordinator(&request.group_id.0) {
            r.error_code = code(e);
            return r;
        }
        let Some(arc) = self.group(&request.group_id.0) else {
            r.error_code = code(ResponseError::UnknownMemberId);
            return r;
        };
        let mut g = lock(&arc);
        let member_id = request.member_id.to_string();
        if let Err(e) = g.check_member(&member_id, request.group_instance_id.as_deref()) {
            r.error_code = code(e);
            return r;
        }
        let state = g.state;
        let generation = g.generation;
        if let Some(m) = g.members.get_mut(&member_id) {
            m.last_heartbeat = Instant::now();
        }
        r.error_code = match state {
            GroupState::PreparingRebalance => code(ResponseError::RebalanceInProgress),
            _ if request.generation_id != generation => code(ResponseError::IllegalGeneration),
            GroupState::Empty | GroupState::Dead => code(ResponseError::UnknownMemberId),
            _ => 0,
        };
        r
    }

    /// Removes members; one result per (member id, instance id).
    pub async fn leave_group(
        self: &Arc<Self>,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        self.check_coordinator(group_id)?;
        let Some(arc) = self.group(group_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        let (results, persist) = {
            let mut g = lock(&arc);
            let mut results = Vec::new();
            let mut removed = false;
            let mut pending_left = false;
            for (member_id, instance_id) in leaving {
                // A member id handed out with MEMBER_ID_REQUIRED that leaves
                // before joining is no longer waited for (as in Kafka).
                if instance_id.is_none() && g.pending.remove(member_id).is_some() {
                    info!(group = group_id, member = %member_id, "pending member left");
                    pending_left = true;
                    results.push(Ok(()));
                    continue;
                }
                // A static member may leave by instance id alone.
                let id = match (member_id.is_empty(), instance_id) {
                    (true, Some(iid)) => g.static_members.get(iid).cloned().unwrap_or_default(),
                    _ => member_id.clone(),
                };
                match g.check_member(&id, instance_id.as_deref()) {
                    Ok(()) => {
                        if let Some(m) = g.remove_member(&id) {
                            if let Some(tx) = m.awaiting_join {
                                let _ = tx.send(join_error(ResponseError::UnknownMemberId, &id));
                            }
                        }
                        info!(group = group_id, member = %id, "member left");
                        removed = true;
                        results.push(Ok(()));
                    }
                    Err(e) => results.push(Err(e)),
                }
            }
            let persist = if removed {
                self.after_members_left(&mut g)
            } else if pending_left {
                // Nothing owned partitions: no rebalance, but a join phase
                // may have waited for it.
                Self::maybe_complete_join(&mut g)
            } else {
                None
            };
            (results, persist)
        };
        if let Some(record) = persist {
            self.persist_group(group_id, Some(record)).await;
        }
        Ok(results)
    }

    /// Removes members whose sessions expired and pending member ids never
    /// used, then lets the group move on (a join phase that waited for
    /// them completes at once); run periodically.
    pub async fn expire_members(self: &Arc<Self>) {
        let groups: Vec<Arc<Mutex<Group>>> = lock(&self.groups).values().cloned().collect();
        let now = Instant::now();
        for arc in groups {
            let persist = {
                let mut g = lock(&arc);
                let expired = g.expire(now);
                if expired.is_empty() {
                    continue;
                }
                if expired.pending > 0 {
                    info!(group = %g.id, pending = expired.pending, state = g.state.name(), "pending member ids expired unused");
                }
                if expired.members.is_empty() {
                    // Only pending ids: nothing owned partitions, so no
                    // rebalance; a join phase may be able to end.
                    Self::maybe_complete_join(&mut g).map(|r| (g.id.clone(), r))
                } else {
                    info!(group = %g.id, members = ?expired.members, "session expired; removing members");
                    self.after_members_left(&mut g).map(|r| (g.id.clone(), r))
                }
            };
            if let Some((id, record)) = persist {
                self.persist_group(&id, Some(record)).await;
            }
        }
    }

    /// The group a commit names (made if new), or why this coordinator
    /// cannot take commits for it.
    fn group_to_commit(&self, group_id: &str) -> Result<Arc<Mutex<Group>>, ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        self.check_coordinator(group_id)?;
        Ok(self.group_or_create(group_id))
    }

    /// Validates an OffsetCommit against the group's membership and
    /// generation. A commit with generation -1 and no member id is a
    /// "simple" commit, allowed while the group has no members.
    pub fn check_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        let arc = self.group_to_commit(group_id)?;
        let mut g = lock(&arc);
        match g.state {
            GroupState::Dead => Err(ResponseError::CoordinatorNotAvailable),
            _ if generation < 0 && member_id.is_empty() => {
                if g.is_empty() {
                    Ok(())
                } else {
                    Err(ResponseError::UnknownMemberId)
                }
            }
            _ => {
                g.check_member(member_id, instance_id)?;
                if generation != g.generation {
                    return Err(ResponseError::IllegalGeneration);
                }
                match g.state {
                    // During PreparingRebalance members still own their
                    // partitions and must be able to commit what they
                    // processed before giving them up (as in Kafka). Once
                    // the new generation exists, the old one is done.
                    GroupState::CompletingRebalance => Err(ResponseError::RebalanceInProgress),
                    _ => {
                        if let Some(m) = g.members.get_mut(member_id) {
                            m.last_heartbeat = Instant::now();
                        }
                        Ok(())
                    }
                }
            }
        }
    }

    /// Validates a TxnOffsetCommit: as Kafka, the member and generation are
    /// checked only when the request names them (v3+, KIP-447); the group
    /// may have members (it is the application's own group).
    pub fn check_txn_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        let arc = self.group_to_commit(group_id)?;
        let g = lock(&arc);
        if g.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if !member_id.is_empty() {
            g.check_member(member_id, instance_id)?;
        }
        if generation >= 0 && generation != g.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// Stores committed offsets durably, then makes them visible.
    pub async fn commit_offsets(
        &self,
        group_id: &str,
        commits: Vec<((String, i32), OffsetValue)>,
    ) -> Result<(), BrokerError> {
        if commits.is_empty() {
            return Ok(());
        }
        let entries = offset_records(group_id, &commits);
        self.persist(group_id, entries, || {
            let mut offsets = lock(&self.offsets);
            let group = offsets.entry(group_id.to_string()).or_default();
            for (tp, v) in commits {
                group.insert(tp, v);
            }
        })
        .await
    }

    /// Stores offsets committed inside a transaction (TxnOffsetCommit):
    /// written to the group's partition in a transactional batch of the
    /// producer, they stay pending (not fetched, and reported unstable to
    /// a fetch that asks for stable offsets) until the transaction's
    /// marker reaches the partition ([`GroupCoordinator::complete_txn`]).
    pub async fn commit_txn_offsets(
        &self,
        group_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commits: Vec<((String, i32), OffsetValue)>,
    ) -> Result<(), BrokerError> {
        if commits.is_empty() {
            return Ok(());
        }
        let entries = offset_records(group_id, &commits);
        self.persist_as(
            group_id,
            entries,
            Some((producer_id, producer_epoch)),
            |partition| {
                let mut pending = lock(&partition.pending_txns);
                let group = pending
                    .entry(producer_id)
                    .or_default()
                    .entry(group_id.to_string())
                    .or_default();
                for (tp, v) in commits {
                    group.insert(tp, v);
                }
            },
        )
        .await
    }

    /// A transaction marker was written to partition `index` of
    /// `__consumer_offsets`: the producer's pending offsets there become
    /// committed offsets (COMMIT) or are dropped (ABORT).
    /// Waits for a TxnOffsetCommit being written to the partition, so
    /// offsets already in the log before the marker are never left pending.
    pub async fn complete_txn(&self, index: i32, producer_id: i64, commit: bool) {
        let Some(partition) = lock(&self.partitions).get(&index).cloned() else {
            return;
        };
        let _serial = partition.write_lock.lock().await;
        let Some(ended) = lock(&partition.pending_txns).remove(&producer_id) else {
            return;
        };
        if !commit {
            return;
        }
        let mut offsets = lock(&self.offsets);
        for (group, committed) in ended {
            offsets.entry(group).or_default().extend(committed);
        }
    }

    /// The partitions of `group_id` with offsets of a transaction still
    /// open: a fetch of stable offsets (KIP-447) is told to try again.
    pub fn unstable_partitions(&self, group_id: &str) -> Vec<(String, i32)> {
        let Ok(partition) = self.owner(group_id) else {
            return Vec::new();
        };
        let pending = lock(&partition.pending_txns);
        pending
            .values()
            .filter_map(|groups| groups.get(group_id))
            .flat_map(|offsets| offsets.keys().cloned())
            .collect()
    }

    /// Committed offsets of a group, or why this coordinator cannot tell.
    pub fn fetch_offsets(&self, group_id: &str) -> Result<GroupOffsets, ResponseError> {
        self.check_coordinator(group_id)?;
        Ok(lock(&self.offsets)
            .get(group_id)
            .cloned()
            .unwrap_or_default())
    }

    /// Deletes committed offsets (tombstones), e.g. OffsetDelete or expiry.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<(), BrokerError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let entries: Vec<(Bytes, Option<Bytes>)> = partitions
            .iter()
            .map(|(t, p)| {
                (
                    OffsetsKey::Offset {
                        group: group_id.into(),
                        topic: t.clone(),
                        partition: *p,
                    }
                    .encode(),
                    None,
                )
            })
            .collect();
        self.persist(group_id, entries, || {
            let mut offsets = lock(&self.offsets);
            if let Some(group) = offsets.get_mut(group_id) {
                for tp in &partitions {
                    group.remove(tp);
                }
                if group.is_empty() {
                    offsets.remove(group_id);
                }
            }
        })
        .await
    }

    /// Topics the group's members subscribe to (consumer protocol only).
    pub fn subscribed_topics(&self, group_id: &str) -> Option<Vec<String>> {
        let arc = self.group(group_id)?;
        let g = lock(&arc);
        if g.protocol_type.as_deref() != Some("consumer") || g.members.is_empty() {
            return Some(Vec::new());
        }
        let protocol = g.protocol.clone().unwrap_or_default();
        let mut topics = Vec::new();
        for m in g.members.values() {
            let meta = m.metadata_for(&protocol);
            if let Some(sub) = decode_subscription(&meta) {
                topics.extend(sub);
            }
        }
        topics.sort();
        topics.dedup();
        Some(topics)
    }

    pub fn group_exists(&self, group_id: &str) -> bool {
        self.group(group_id).is_some() || lock(&self.offsets).contains_key(group_id)
    }

    /// Every committed offset this coordinator holds, as (group, topic,
    /// partition, offset), sorted.
    pub fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        let mut out: Vec<_> = lock(&self.offsets)
            .iter()
            .flat_map(|(group, offsets)| {
                offsets.iter().map(move |((topic, partition), value)| {
                    (group.clone(), topic.clone(), *partition, value.offset)
                })
            })
            .collect();
        out.sort();
        out
    }

    /// (group id, protocol type, state) of every group.
    pub fn list_groups(&self) -> Vec<(String, String, &'static str)> {
        let groups: Vec<Arc<Mutex<Group>>> = lock(&self.groups).values().cloned().collect();
        let mut out: Vec<_> = groups
            .iter()
            .map(|arc| {
                let g = lock(arc);
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state.name(),
                )
            })
            .filter(|(_, _, state)| *state != "Dead")
            .collect();
        out.sort();
        out
    }

    /// A snapshot for DescribeGroups: state, protocol type, protocol and
    /// members as (member id, instance id, client id, host, metadata,
    /// assignment).
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let arc = self.group(group_id)?;
        let g = lock(&arc);
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupDescription {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: g
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Deletes an empty group with its offsets.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), ResponseError> {
        self.check_coordinator(group_id)?;
        let Some(arc) = self.group(group_id) else {
            return if lock(&self.offsets).contains_key(group_id) {
                self.delete_all_offsets(group_id).await
            } else {
                Err(ResponseError::GroupIdNotFound)
            };
        };
        {
            let mut g = lock(&arc);
            if !g.is_empty() {
                return Err(ResponseError::NonEmptyGroup);
            }
            g.state = GroupState::Dead;
        }
        self.delete_all_offsets(group_id).await?;
        self.persist_group(group_id, None).await;
        lock(&self.groups).remove(group_id);
        info!(group = group_id, "deleted group");
        Ok(())
    }

    async fn delete_all_offsets(&self, group_id: &str) -> Result<(), ResponseError> {
        let partitions: Vec<(String, i32)> = self.fetch_offsets(group_id)?.into_keys().collect();
        self.delete_offsets(group_id, partitions)
            .await
            .map_err(|e| write_error(&e))
    }

    /// Removes committed offsets older than `offsets_retention_ms` of
    /// groups without members (Kafka's offsets.retention.minutes).
    pub async fn expire_offsets(&self) {
        let cutoff = now_ms().saturating_sub(self.config.offsets_retention_ms);
        let candidates: Vec<(String, Vec<(String, i32)>)> = {
            let offsets = lock(&self.offsets);
            offsets
                .iter()
                .map(|(g, o)| {
                    (
                        g.clone(),
                        o.iter()
                            .filter(|(_, v)| v.commit_timestamp_ms < cutoff)
                            .map(|(tp, _)| tp.clone())
                            .collect::<Vec<_>>(),
                    )
                })
                .filter(|(_, tps)| !tps.is_empty())
                .collect()
        };
        for (group, expired) in candidates {
            let idle = self.group(&group).is_none_or(|arc| lock(&arc).is_empty());
            if !idle {
                continue;
            }
            info!(group = %group, partitions = expired.len(), "expiring committed offsets");
            if let Err(e) = self.delete_offsets(&group, expired).await {
                warn!(group = %group, error = %e, "could not expire offsets");
            }
        }
    }

    /// Runs member expiry and offset expiry until the coordinator is dropped.
    pub fn spawn_background_tasks(self: &Arc<Self>, offsets_check_every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { break };
                me.expire_members().await;
            }
        });
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(offsets_check_every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { break };
                me.expire_offsets().await;
            }
        });
    }
}

pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

pub struct GroupDescription {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// Topics in a consumer-protocol subscription (its version is the first
/// two bytes).
pub fn decode_subscription(raw: &Bytes) -> Option<Vec<String>> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    if raw.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([raw[0], raw[1]]);
    let mut buf = raw.slice(2..);
    let sub = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)).ok()?;
    Some(sub.topics.iter().map(|t| t.to_string()).collect())
}

/// The member list the leader assigns partitions from.
fn member_list(
    g: &Group,
) -> Vec<kafka_protocol::messages::join_group_response::JoinGroupResponseMember> {
    let protocol = g.protocol.clone().unwrap_or_default();
    g.members
        .values()
        .map(|m| {
            let mut jm =
                kafka_protocol::messages::join_group_response::JoinGroupResponseMember::default();
            jm.member_id = str_bytes(&m.member_id);
            jm.group_instance_id = m.group_instance_id.as_deref().map(str_bytes);
            jm.metadata = m.metadata_for(&protocol);
            jm
        })
        .collect()
}

/// Fields that exist only in some JoinGroup versions must keep their
/// defaults in others, or the response cannot be encoded.
fn finalize_join(mut r: JoinGroupResponse, version: i16) -> JoinGroupResponse {
    if version < 9 {
        r.skip_assignment = false;
    }
    if version < 7 {
        r.protocol_type = None;
        if r.protocol_name.is_none() {
            r.protocol_name = Some(StrBytes::new());
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::internal_topic::testing::LogPartition;

    fn open_partitions(dir: &std::path::Path, count: i32) -> Vec<Arc<LogPartition>> {
        (0..count)
            .map(|index| LogPartition::open(&dir.join(format!("{OFFSETS_TOPIC}-{index}")), index))
            .collect()
    }

    fn config(partitions: i32) -> GroupConfig {
        GroupConfig {
            offsets_topic_partitions: partitions,
            offsets_retention_ms: 7 * 24 * 3_600_000,
            initial_rebalance_delay_ms: 0,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            max_group_size: 100,
            offset_metadata_max_bytes: 4096,
        }
    }

    /// A coordinator owning all `partitions`, loaded.
    fn load(partitions: &[Arc<LogPartition>], count: i32) -> GroupCoordinator {
        let coordinator = GroupCoordinator::new(config(count));
        for p in partitions {
            let owned = coordinator.claim(p.clone(), 0);
            let state = read_offsets_partition(owned.log.as_ref()).unwrap();
            assert!(coordinator.finish_load(&owned, state));
        }
        coordinator
    }

    fn committed(offset: i64) -> OffsetValue {
        OffsetValue {
            offset,
            leader_epoch: -1,
            metadata: "m".into(),
            commit_timestamp_ms: now_ms(),
        }
    }

    #[tokio::test]
    async fn a_transactions_offsets_count_from_its_commit_marker_and_not_after_an_abort() {
        let dir = tempfile::tempdir().unwrap();
        let partitions = open_partitions(dir.path(), 1);
        let c = load(&partitions, 1);
        let tp = || ("in".to_string(), 0);
        c.commit_offsets("app", vec![(tp(), committed(5))])
            .await
            .unwrap();
        // Producer 7's transaction commits offset 10; producer 8's, 20,
        // is aborted.
        c.commit_txn_offsets("app", 7, 0, vec![(tp(), committed(10))])
            .await
            .unwrap();
        c.commit_txn_offsets("app", 8, 3, vec![(tp(), committed(20))])
            .await
            .unwrap();
        assert_eq!(c.fetch_offsets("app").unwrap()[&tp()].offset, 5, "pending");
        assert_eq!(c.unstable_partitions("app"), vec![tp(), tp()]);
        // An older epoch of producer 8 is fenced by the partition.
        assert!(c
            .commit_txn_offsets("app", 8, 2, vec![(tp(), committed(1))])
            .await
            .is_err());
        // The markers, as the broker writes them, then tells the coordinator.
        let log = partitions[0].clone();
        log.append_marker(7, 0, true);
        c.complete_txn(0, 7, true).await;
        assert_eq!(c.fetch_offsets("app").unwrap()[&tp()].offset, 10);
        assert_eq!(c.unstable_partitions("app"), vec![tp()]);
        log.append_marker(8, 3, false);
        c.complete_txn(0, 8, false).await;
        assert_eq!(c.fetch_offsets("app").unwrap()[&tp()].offset, 10);
        assert!(c.unstable_partitions("app").is_empty());

        // Loaded again: the same, read from the log in its order; a
        // transaction with no marker yet stays pending.
        c.commit_txn_offsets("app", 9, 0, vec![(tp(), committed(30))])
            .await
            .unwrap();
        let again = load(&partitions, 1);
        assert_eq!(again.fetch_offsets("app").unwrap()[&tp()].offset, 10);
        assert_eq!(again.unstable_partitions("app"), vec![tp()]);
        log.append_marker(9, 0, true);
        again.complete_txn(0, 9, true).await;
        assert_eq!(again.fetch_offsets("app").unwrap()[&tp()].offset, 30);
    }

    #[tokio::test]
    async fn offsets_committed_through_internal_partitions_are_loaded_again_without_a_broker() {
        let dir = tempfile::tempdir().unwrap();
        let partitions = open_partitions(dir.path(), 3);
        let first = load(&partitions, 3);
        first
            .commit_offsets("orders-app", vec![(("orders".into(), 0), committed(42))])
            .await
            .unwrap();
        first
            .commit_offsets("audit-app", vec![(("orders".into(), 1), committed(7))])
            .await
            .unwrap();
        first
            .delete_offsets("audit-app", vec![("orders".into(), 1)])
            .await
            .unwrap();

        let home = partition_for("orders-app", 3) as usize;
        assert!(
            partitions[home].bounds().1 > 0,
            "the commit went to the group's own partition"
        );

        let second = load(&partitions, 3);
        let offsets = second.fetch_offsets("orders-app").unwrap();
        assert_eq!(
            offsets.get(&("orders".into(), 0)).map(|v| v.offset),
            Some(42)
        );
        assert_eq!(
            offsets.get(&("orders".into(), 0)).map(|v| &*v.metadata),
            Some("m")
        );
        assert!(
            second.fetch_offsets("audit-app").unwrap().is_empty(),
            "the delete was loaded too"
        );
        assert!(!second.group_exists("audit-app"));
    }

    #[tokio::test]
    async fn a_group_whose_partition_the_coordinator_was_not_given_cannot_commit() {
        let dir = tempfile::tempdir().unwrap();
        let partitions = open_partitions(dir.path(), 3);
        let home = partition_for("orders-app", 3);
        let others: Vec<_> = partitions
            .iter()
            .filter(|p| p.index() != home)
            .cloned()
            .collect();
        let coordinator = load(&others, 3);
        let err = coordinator
            .commit_offsets("orders-app", vec![(("orders".into(), 0), committed(1))])
            .await
            .unwrap_err();
        assert!(
            matches!(err, BrokerError::NotLeaderOrFollower(ref t, p) if t == OFFSETS_TOPIC && p == home),
            "{err:?}"
        );
        assert_eq!(write_error(&err), ResponseError::NotCoordinator);
        assert_eq!(
            coordinator.fetch_offsets("orders-app").unwrap_err(),
            ResponseError::NotCoordinator
        );
        assert!(
            partitions.iter().all(|p| p.bounds().1 == 0),
            "nothing written"
        );
    }

    fn join_request(group: &str, member_id: &str) -> JoinGroupRequest {
        let mut request = JoinGroupRequest::default();
        request.group_id = kafka_protocol::messages::GroupId(str_bytes(group));
        request.member_id = str_bytes(member_id);
        request.session_timeout_ms = 10_000;
        request.rebalance_timeout_ms = 60_000;
        request.protocol_type = str_bytes("consumer");
        let mut protocol =
            kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol::default();
        protocol.name = str_bytes("range");
        protocol.metadata = Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0]);
        request.protocols.push(protocol);
        request
    }

    #[tokio::test]
    async fn a_partition_taken_over_answers_load_in_progress_until_loaded_then_serves_its_groups() {
        let dir = tempfile::tempdir().unwrap();
        let partitions = open_partitions(dir.path(), 3);
        let home = partition_for("orders-app", 3) as usize;
        let first = load(&partitions, 3);
        first
            .commit_offsets("orders-app", vec![(("orders".into(), 0), committed(42))])
            .await
            .unwrap();

        let second = Arc::new(GroupCoordinator::new(config(3)));
        assert_eq!(
            second.check_coordinator("orders-app"),
            Err(ResponseError::NotCoordinator),
            "a partition not taken over is coordinated elsewhere"
        );
        let load = second
            .take_ownership(partitions[home].clone(), 5)
            .expect("a load starts");
        // Until the load finished the group is not served from an empty
        // state: LOAD_IN_PROGRESS or the loaded offsets, never nothing.
        match second.fetch_offsets("orders-app") {
            Err(e) => assert_eq!(e, ResponseError::CoordinatorLoadInProgress),
            Ok(o) => assert_eq!(o.get(&("orders".into(), 0)).map(|v| v.offset), Some(42)),
        }
        load.await.unwrap();
        assert!(
            second.take_ownership(partitions[home].clone(), 5).is_none(),
            "owned in this epoch already"
        );
        let offsets = second.fetch_offsets("orders-app").unwrap();
        assert_eq!(
            offsets.get(&("orders".into(), 0)).map(|v| v.offset),
            Some(42)
        );
        assert_eq!(second.owned_partitions(), vec![(home as i32, 5)]);
    }

    #[tokio::test]
    async fn giving_a_partition_up_forgets_its_groups_and_sends_waiting_members_to_the_new_coordinator(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let partitions = open_partitions(dir.path(), 3);
        let home = partition_for("orders-app", 3);
        let mut cfg = config(3);
        cfg.initial_rebalance_delay_ms = 60_000;
        let coordinator = Arc::new(GroupCoordinator::new(cfg));
        for p in &partitions {
            coordinator
                .take_ownership(p.clone(), 1)
                .unwrap()
                .await
                .unwrap();
        }
        coordinator
            .commit_offsets("orders-app", vec![(("orders".into(), 0), committed(7))])
            .await
            .unwrap();
        // A member joins; the initial rebalance delay keeps it waiting.
        let id = match coordinator
            .join_group(join_request("orders-app", ""), 5, "c", "h")
            .await
        {
            r if r.error_code == ResponseError::MemberIdRequired.code() => r.member_id.to_string(),
            r => panic!("unexpected join answer {}", r.error_code),
        };
        let waiting = {
            let coordinator = coordinator.clone();
            tokio::spawn(async move {
                coordinator
                    .join_group(join_request("orders-app", &id), 5, "c", "h")
                    .await
            })
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            while coordinator
                .describe("orders-app")
                .is_none_or(|d| d.members.is_empty())
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the member joined and waits");

        coordinator.give_up(home);

        let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting member is answered at once")
            .unwrap();
        assert_eq!(answer.error_code, ResponseError::NotCoordinator.code());
        assert_eq!(
            coordinator.fetch_offsets("orders-app").unwrap_err(),
            ResponseError::NotCoordinator
        );
        assert!(coordinator.describe("orders-app").is_none());
        assert!(coordinator
            .list_groups()
            .iter()
            .all(|(g, _, _)| g != "orders-app"));
        let err = coordinator
            .commit_offsets("orders-app", vec![(("orders".into(), 0), committed(8))])
            .await
            .unwrap_err();
        assert_eq!(write_error(&err), ResponseError::NotCoordinator);
        assert_eq!(
            partitions[home as usize].bounds().1,
            1,
            "only the first commit was written"
        );

        // Taken over again in a later epoch: the log is read again.
        coordinator
            .take_ownership(partitions[home as usize].clone(), 2)
            .unwrap()
            .await
            .unwrap();
        assert_eq!(
            coordinator
                .fetch_offsets("orders-app")
                .unwrap()
                .get(&("orders".into(), 0))
                .map(|v| v.offset),
            Some(7)
        );
    }
}
