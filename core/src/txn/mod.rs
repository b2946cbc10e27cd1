//! The transaction coordinator: transactional ids, their producer ids and
//! epochs, the partitions of each open transaction, and the two-phase end
//! of a transaction (the decision written to `__transaction_state`, then a
//! COMMIT or ABORT marker on every partition, then the end written).
//!
//! Like the group coordinator it never sees the broker: it is handed the
//! partitions of `__transaction_state` this broker leads as
//! [`InternalPartition`]s (`take_ownership`, `give_up`) and asks a
//! [`TxnHost`] for what only the broker can do (producer ids, markers on
//! partitions led here or elsewhere). Each transactional id lives in the
//! partition `internal_topic::codec::partition_for` names.
//!
//! Each id's state sits behind its own async mutex, held while its next
//! record is written, so requests for one id are served one at a time and
//! memory never runs ahead of the log. The rules of the transitions are
//! pure functions in `state.rs`; the record formats Kafka's, in
//! `records.rs`. Markers are written by a task per ending transaction,
//! retried until every partition has its marker (a deleted topic counts as
//! done); a coordinator that takes a partition over resumes the endings it
//! finds decided but not ended.

pub mod records;
pub mod state;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use kafka_protocol::ResponseError;
use tracing::{debug, info, warn};

use crate::error::BrokerError;
use crate::internal_topic::codec::partition_for;
use crate::internal_topic::{encode_batch, replay, InternalPartition};
use crate::storage::records::{decode_batch, MAX_DECOMPRESSED_BYTES};
use crate::util::{lock, now_ms};
use records::{decode_key, encode_key, TxnStatus, TxnValue};
use state::Init;

/// Longest a request waits for its transactional id's ending transaction
/// to finish before it is answered CONCURRENT_TRANSACTIONS.
const ENDING_WAIT: Duration = Duration::from_millis(500);

/// Name of the internal topic holding the transactions' state.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Settings of the coordinator (from the broker config).
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// Partitions of `__transaction_state` when it is created.
    pub partitions: i32,
    /// The longest `transaction.timeout.ms` a producer may ask for.
    pub max_timeout_ms: i32,
    /// An idle transactional id is forgotten after this long.
    pub id_expiration_ms: i64,
    /// How often open transactions are checked for their timeout.
    pub abort_check_interval: Duration,
}

/// A transaction marker for the partitions of one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    /// The leader epoch of the coordinator's `__transaction_state`
    /// partition.
    pub coordinator_epoch: i32,
}

/// What became of a marker on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkerOutcome {
    /// The marker is on the partition's in-sync replicas.
    Written,
    /// The partition no longer exists (its topic was deleted): there is
    /// nothing to end there.
    Gone,
    /// Not now (no leader, a leader that moved, a timeout): try again.
    Retry(String),
}

/// What the coordinator needs of the broker it runs in.
pub trait TxnHost: Send + Sync {
    /// A producer id no broker of the cluster handed out before.
    fn allocate_producer_id(&self) -> BoxFuture<'static, Result<i64, BrokerError>>;

    /// Writes `marker` to each partition (at its leader, here or on
    /// another broker) and says what became of it on each.
    fn write_markers(
        &self,
        marker: Marker,
        partitions: Vec<(String, i32)>,
    ) -> BoxFuture<'static, Vec<((String, i32), MarkerOutcome)>>;

    /// Whether the partition exists (a transaction may write to it).
    fn partition_exists(&self, topic: &str, index: i32) -> bool;

    /// The `__consumer_offsets` partition of a group (AddOffsetsToTxn),
    /// `None` before that topic exists.
    fn offsets_partition(&self, group: &str) -> Option<(String, i32)>;
}

/// Why AddPartitionsToTxn was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddPartitionsError {
    /// The same error for every partition.
    All(ResponseError),
    /// These partitions do not exist; the others were not attempted.
    Unknown(Vec<(String, i32)>),
}

/// One transactional id as DescribeTransactions and ListTransactions show
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnDescription {
    pub transactional_id: String,
    pub value: TxnValue,
}

/// What the coordinator counts for `/metrics`.
#[derive(Debug, Default)]
pub struct TxnCounters {
    /// Transactions ended with a commit (every marker written).
    pub commits: AtomicU64,
    /// Transactions ended with an abort (asked for, fenced or timed out).
    pub aborts: AtomicU64,
    /// Open transactions aborted for their timeout.
    pub timeouts: AtomicU64,
}

/// How many transactional ids the coordinator holds, and how many of them
/// have a transaction open or ending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxnGauges {
    pub ids: usize,
    pub open: usize,
}

pub struct TransactionCoordinator {
    config: TxnConfig,
    counters: TxnCounters,
    host: Arc<dyn TxnHost>,
    /// Partitions of `__transaction_state` (the topic's own count once it
    /// exists).
    partition_count: AtomicI32,
    /// The partitions this coordinator owns (this broker leads them).
    ///
    /// Lock order: `partitions`, then `txns`, never across an `.await`.
    partitions: Mutex<HashMap<i32, Arc<StatePartition>>>,
    /// The transactional ids of the loaded partitions.
    txns: Mutex<HashMap<String, Arc<TxnEntry>>>,
}

/// One `__transaction_state` partition this coordinator owns.
struct StatePartition {
    log: Arc<dyn InternalPartition>,
    /// The leader epoch the ownership came with: the markers' coordinator
    /// epoch.
    leader_epoch: i32,
    loaded: AtomicBool,
}

/// One transactional id.
struct TxnEntry {
    id: String,
    partition: i32,
    state: tokio::sync::Mutex<TxnMeta>,
    /// Woken when a transaction of this id has ended (every marker
    /// written and the end recorded).
    ended: tokio::sync::Notify,
}

struct TxnMeta {
    /// What the log holds (or, for an id never written, its start).
    value: TxnValue,
    /// The producer id and epoch before the last InitProducerId bump, so
    /// that a retry of it (KIP-360) gets the same answer.
    previous: Option<(i64, i16)>,
}

/// Reads a `__transaction_state` partition: each transactional id's latest
/// value (tombstones forget it). Blocking (file reads).
fn read_state_partition(
    partition: &dyn InternalPartition,
) -> Result<HashMap<String, TxnValue>, BrokerError> {
    let mut txns = HashMap::new();
    replay(partition, |header, raw| {
        if header.is_control() {
            return;
        }
        let set = match decode_batch(&raw, MAX_DECOMPRESSED_BYTES) {
            Ok(set) => set,
            Err(e) => {
                warn!(partition = partition.index(), offset = header.base_offset, error = %e, "skipping undecodable batch in {TRANSACTION_STATE_TOPIC}");
                return;
            }
        };
        for record in set.records {
            let Some(id) = record.key.as_deref().and_then(decode_key) else {
                continue;
            };
            match record.value.as_deref().map(TxnValue::decode) {
                Some(Some(value)) => {
                    txns.insert(id, value);
                }
                Some(None) => {
                    warn!(partition = partition.index(), transactional_id = %id, "skipping unreadable transaction state");
                }
                None => {
                    txns.remove(&id);
                }
            }
        }
    })?;
    Ok(txns)
}

/// The error a client sees for a failed write of transaction state.
fn write_error(e: &BrokerError) -> ResponseError {
    match e {
        BrokerError::NotLeaderOrFollower(..) | BrokerError::UnknownPartition(..) => {
            ResponseError::NotCoordinator
        }
        _ => ResponseError::CoordinatorNotAvailable,
    }
}

impl TransactionCoordinator {
    /// A coordinator that owns no partition yet.
    pub fn new(config: TxnConfig, host: Arc<dyn TxnHost>) -> TransactionCoordinator {
        TransactionCoordinator {
            partition_count: AtomicI32::new(config.partitions),
            counters: TxnCounters::default(),
            config,
            host,
            partitions: Mutex::new(HashMap::new()),
            txns: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    pub fn counters(&self) -> &TxnCounters {
        &self.counters
    }

    /// The ids held and those with a transaction open or ending (an id
    /// busy with a request counts as open).
    pub fn gauges(&self) -> TxnGauges {
        let entries = self.entries();
        let open = entries
            .iter()
            .filter(|e| match e.state.try_lock() {
                Ok(meta) => !meta.value.status.is_idle() && meta.value.producer_epoch >= 0,
                Err(_) => true,
            })
            .count();
        TxnGauges {
            ids: entries.len(),
            open,
        }
    }

    /// The number of `__transaction_state` partitions ids are spread on.
    pub fn set_partition_count(&self, count: i32) {
        self.partition_count.store(count.max(1), Ordering::Release);
    }

    fn partition_of(&self, transactional_id: &str) -> i32 {
        partition_for(
            transactional_id,
            self.partition_count.load(Ordering::Acquire),
        )
    }

    /// The partitions owned, as (index, leader epoch).
    pub fn owned_partitions(&self) -> Vec<(i32, i32)> {
        lock(&self.partitions)
            .iter()
            .map(|(&index, p)| (index, p.leader_epoch))
            .collect()
    }

    /// This broker became the leader of `log` (a partition of
    /// `__transaction_state`) in `leader_epoch`: its transactional ids are
    /// loaded in the background (their requests answer
    /// COORDINATOR_LOAD_IN_PROGRESS until then), and the transactions
    /// found decided but not ended get their markers. Returns the load
    /// started, `None` when already owned in this epoch.
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
        let owned = Arc::new(StatePartition {
            log,
            leader_epoch,
            loaded: AtomicBool::new(false),
        });
        lock(&self.partitions).insert(index, owned.clone());
        let me = self.clone();
        Some(tokio::spawn(async move {
            let reader = owned.clone();
            let read =
                tokio::task::spawn_blocking(move || read_state_partition(reader.log.as_ref()))
                    .await;
            match read {
                Ok(Ok(txns)) => me.finish_load(index, &owned, txns),
                Ok(Err(e)) => {
                    warn!(partition = index, error = %e, "could not load {TRANSACTION_STATE_TOPIC} partition; its transactional ids stay unavailable here");
                }
                Err(e) => {
                    warn!(partition = index, error = %e, "loading {TRANSACTION_STATE_TOPIC} partition failed");
                }
            }
        }))
    }

    /// Makes the ids read from `owned` live, unless the partition was
    /// given up (or taken over again) meanwhile, and resumes the endings.
    fn finish_load(
        self: &Arc<Self>,
        index: i32,
        owned: &Arc<StatePartition>,
        read: HashMap<String, TxnValue>,
    ) {
        let mut ending = Vec::new();
        {
            let partitions = lock(&self.partitions);
            match partitions.get(&index) {
                Some(current) if Arc::ptr_eq(current, owned) => {}
                _ => return,
            }
            let mut txns = lock(&self.txns);
            for (id, value) in read {
                let is_ending = value.status.is_ending();
                let entry = Arc::new(TxnEntry {
                    id: id.clone(),
                    partition: index,
                    state: tokio::sync::Mutex::new(TxnMeta {
                        value,
                        previous: None,
                    }),
                    ended: tokio::sync::Notify::new(),
                });
                if is_ending {
                    ending.push(entry.clone());
                }
                txns.insert(id, entry);
            }
            owned.loaded.store(true, Ordering::Release);
        }
        let count = lock(&self.txns)
            .values()
            .filter(|e| e.partition == index)
            .count();
        if count > 0 {
            info!(
                partition = index,
                leader_epoch = owned.leader_epoch,
                transactional_ids = count,
                ending = ending.len(),
                "loaded {TRANSACTION_STATE_TOPIC} partition: coordinating its transactions"
            );
        } else {
            debug!(
                partition = index,
                "loaded empty {TRANSACTION_STATE_TOPIC} partition"
            );
        }
        for entry in ending {
            self.spawn_ending(entry);
        }
    }

    /// This broker no longer leads partition `index`: its ids are
    /// forgotten here (their new coordinator loads them and finishes what
    /// this one started).
    pub fn give_up(&self, index: i32) {
        let mut partitions = lock(&self.partitions);
        if partitions.remove(&index).is_none() {
            return;
        }
        let mut txns = lock(&self.txns);
        let before = txns.len();
        txns.retain(|_, e| e.partition != index);
        info!(
            partition = index,
            transactional_ids = before - txns.len(),
            "gave up {TRANSACTION_STATE_TOPIC} partition: its transactions are coordinated elsewhere"
        );
    }

    /// The loaded partition of `transactional_id`, or why this coordinator
    /// cannot serve it.
    fn owner(&self, transactional_id: &str) -> Result<Arc<StatePartition>, ResponseError> {
        match lock(&self.partitions).get(&self.partition_of(transactional_id)) {
            None => Err(ResponseError::NotCoordinator),
            Some(p) if !p.loaded.load(Ordering::Acquire) => {
                Err(ResponseError::CoordinatorLoadInProgress)
            }
            Some(p) => Ok(p.clone()),
        }
    }

    /// Whether this coordinator serves `transactional_id` now.
    pub fn check_coordinator(&self, transactional_id: &str) -> Result<(), ResponseError> {
        self.owner(transactional_id).map(|_| ())
    }

    fn entry(&self, transactional_id: &str) -> Result<Option<Arc<TxnEntry>>, ResponseError> {
        self.owner(transactional_id)?;
        Ok(lock(&self.txns).get(transactional_id).cloned())
    }

    /// Whether `entry` is still the live entry of its id on a partition
    /// this coordinator owns: false once it was given up or expired.
    fn is_current(&self, entry: &Arc<TxnEntry>) -> Option<Arc<StatePartition>> {
        let partitions = lock(&self.partitions);
        let partition = partitions.get(&entry.partition)?;
        let txns = lock(&self.txns);
        txns.get(&entry.id)
            .filter(|e| Arc::ptr_eq(e, entry))
            .map(|_| partition.clone())
    }

    /// Writes `value` as `entry`'s new state, then makes it the state in
    /// memory (the caller holds the entry's lock: `meta`).
    async fn write(
        &self,
        entry: &Arc<TxnEntry>,
        meta: &mut TxnMeta,
        value: Option<TxnValue>,
    ) -> Result<(), ResponseError> {
        let partition = self
            .is_current(entry)
            .ok_or(ResponseError::NotCoordinator)?;
        let batch = encode_batch(
            &[(encode_key(&entry.id), value.as_ref().map(TxnValue::encode))],
            now_ms(),
            None,
        )
        .map_err(|e| write_error(&e))?;
        partition.log.clone().append(batch).await.map_err(|e| {
            warn!(transactional_id = %entry.id, error = %e, "could not write transaction state");
            write_error(&e)
        })?;
        // Still the owner: a give-up during the write dropped this entry.
        match self.is_current(entry) {
            Some(p) if Arc::ptr_eq(&p, &partition) => {}
            _ => return Err(ResponseError::NotCoordinator),
        }
        if let Some(value) = value {
            meta.value = value;
        }
        Ok(())
    }

    /// InitProducerId with a transactional id: the producer id and the
    /// (bumped) epoch the producer goes on with. `expected` is the id and
    /// epoch the client has (v3+, KIP-360), if any.
    pub async fn init_producer_id(
        self: &Arc<Self>,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), ResponseError> {
        if transactional_id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        let entry = match self.entry(transactional_id)? {
            Some(entry) => entry,
            None => {
                let producer_id = self.allocate_producer_id().await?;
                let fresh = Arc::new(TxnEntry {
                    id: transactional_id.to_string(),
                    partition: self.partition_of(transactional_id),
                    state: tokio::sync::Mutex::new(TxnMeta {
                        value: TxnValue {
                            producer_id,
                            producer_epoch: -1,
                            timeout_ms,
                            status: TxnStatus::Empty,
                            partitions: BTreeSet::new(),
                            last_update_ms: now_ms(),
                            start_ms: -1,
                        },
                        previous: None,
                    }),
                    ended: tokio::sync::Notify::new(),
                });
                let partitions = lock(&self.partitions);
                if !partitions.contains_key(&fresh.partition) {
                    return Err(ResponseError::NotCoordinator);
                }
                lock(&self.txns)
                    .entry(transactional_id.to_string())
                    .or_insert(fresh)
                    .clone()
            }
        };
        // A first pass that aborts an open transaction goes on once its
        // markers are written: the new instance gets its epoch in one
        // request when the ending is quick, CONCURRENT_TRANSACTIONS if not.
        for pass in 0..2 {
            let mut meta = self.lock_settled(&entry).await;
            let new_id = if state::needs_new_producer_id(&meta.value) {
                Some(self.allocate_producer_id().await?)
            } else {
                None
            };
            let before = (meta.value.producer_id, meta.value.producer_epoch);
            match state::init_producer_id(
                &meta.value,
                meta.previous,
                expected,
                timeout_ms,
                new_id,
                now_ms(),
            )? {
                Init::Answer(id, epoch) => return Ok((id, epoch)),
                Init::Write(value) => {
                    self.write(&entry, &mut meta, Some(value)).await?;
                    meta.previous = (before.1 >= 0).then_some(before);
                    return Ok((meta.value.producer_id, meta.value.producer_epoch));
                }
                Init::AbortOpen(value) if pass == 0 => {
                    info!(
                        transactional_id,
                        producer_id = value.producer_id,
                        epoch = value.producer_epoch,
                        "a new instance fences the producer: aborting its open transaction"
                    );
                    self.write(&entry, &mut meta, Some(value)).await?;
                    // The epoch the client had stays valid for its retry.
                    meta.previous = Some(before);
                    drop(meta);
                    self.spawn_ending(entry.clone());
                }
                Init::AbortOpen(_) => break,
            }
        }
        Err(ResponseError::ConcurrentTransactions)
    }

    /// Locks `entry`'s state, first waiting (up to [`ENDING_WAIT`]) for a
    /// transaction being ended to finish: its producer's next request
    /// (AddPartitionsToTxn of the next transaction, usually sent at once)
    /// then goes on instead of being told CONCURRENT_TRANSACTIONS and
    /// retried after the client's backoff (100 ms in librdkafka).
    async fn lock_settled<'a>(
        &self,
        entry: &'a Arc<TxnEntry>,
    ) -> tokio::sync::MutexGuard<'a, TxnMeta> {
        let meta = entry.state.lock().await;
        if !meta.value.status.is_ending() {
            return meta;
        }
        let ended = entry.ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        drop(meta);
        let _ = tokio::time::timeout(ENDING_WAIT, ended).await;
        entry.state.lock().await
    }

    async fn allocate_producer_id(&self) -> Result<i64, ResponseError> {
        self.host.allocate_producer_id().await.map_err(|e| {
            warn!(error = %e, "cannot allocate a producer id for a transactional id");
            ResponseError::CoordinatorNotAvailable
        })
    }

    /// AddPartitionsToTxn: the partitions join the producer's transaction
    /// (which starts with the first of them).
    pub async fn add_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
    ) -> Result<(), AddPartitionsError> {
        let entry = self
            .entry(transactional_id)
            .map_err(AddPartitionsError::All)?
            .ok_or(AddPartitionsError::All(
                ResponseError::InvalidProducerIdMapping,
            ))?;
        let unknown: Vec<(String, i32)> = partitions
            .iter()
            .filter(|(t, p)| !self.host.partition_exists(t, *p))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(AddPartitionsError::Unknown(unknown));
        }
        let partitions: BTreeSet<(String, i32)> = partitions.into_iter().collect();
        let mut meta = self.lock_settled(&entry).await;
        let next = state::add_partitions(&meta.value, producer_id, epoch, &partitions, now_ms())
            .map_err(AddPartitionsError::All)?;
        if let Some(value) = next {
            self.write(&entry, &mut meta, Some(value))
                .await
                .map_err(AddPartitionsError::All)?;
        }
        Ok(())
    }

    /// AddOffsetsToTxn: the group's `__consumer_offsets` partition joins
    /// the transaction (TxnOffsetCommit then writes there).
    pub async fn add_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<(), ResponseError> {
        let partition = self
            .host
            .offsets_partition(group)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        match self
            .add_partitions(transactional_id, producer_id, epoch, vec![partition])
            .await
        {
            Ok(()) => Ok(()),
            Err(AddPartitionsError::All(e)) => Err(e),
            Err(AddPartitionsError::Unknown(_)) => Err(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// EndTxn: the decision is written, then the markers go out in the
    /// background (the producer's next request waits for them with
    /// CONCURRENT_TRANSACTIONS).
    pub async fn end_txn(
        self: &Arc<Self>,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), ResponseError> {
        let entry = self
            .entry(transactional_id)?
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        let mut meta = self.lock_settled(&entry).await;
        let Some(value) = state::end_txn(&meta.value, producer_id, epoch, commit, now_ms())? else {
            return Ok(());
        };
        self.write(&entry, &mut meta, Some(value)).await?;
        drop(meta);
        self.spawn_ending(entry);
        Ok(())
    }

    /// Ends a decided transaction: markers to every partition, retried
    /// until each is written (or its topic is gone), then the end written.
    /// Stops when this coordinator loses the id (its successor resumes).
    fn spawn_ending(self: &Arc<Self>, entry: Arc<TxnEntry>) {
        let me = self.clone();
        tokio::spawn(async move { me.end(entry).await });
    }

    async fn end(&self, entry: Arc<TxnEntry>) {
        let (decided, marker) = {
            let meta = entry.state.lock().await;
            let Some(partition) = self.is_current(&entry) else {
                return;
            };
            if !meta.value.status.is_ending() {
                return;
            }
            let marker = Marker {
                producer_id: meta.value.producer_id,
                producer_epoch: meta.value.producer_epoch,
                commit: meta.value.status == TxnStatus::PrepareCommit,
                coordinator_epoch: partition.leader_epoch,
            };
            (meta.value.clone(), marker)
        };
        let mut remaining: Vec<(String, i32)> = decided.partitions.iter().cloned().collect();
        let mut backoff = Duration::from_millis(20);
        let mut attempts = 0u32;
        while !remaining.is_empty() {
            let outcomes = self.host.write_markers(marker, remaining).await;
            remaining = Vec::new();
            for (tp, outcome) in outcomes {
                match outcome {
                    MarkerOutcome::Written => {}
                    MarkerOutcome::Gone => {
                        debug!(transactional_id = %entry.id, topic = %tp.0, partition = tp.1, "no marker needed: the partition is gone");
                    }
                    MarkerOutcome::Retry(why) => {
                        if attempts % 50 == 10 {
                            warn!(transactional_id = %entry.id, topic = %tp.0, partition = tp.1, reason = %why, "transaction marker not written yet; retrying");
                        }
                        remaining.push(tp);
                    }
                }
            }
            if remaining.is_empty() {
                break;
            }
            attempts += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            if self.is_current(&entry).is_none() {
                return;
            }
        }
        // Every marker is written: record the end.
        let mut backoff = Duration::from_millis(50);
        loop {
            let mut meta = entry.state.lock().await;
            if meta.value != decided {
                return;
            }
            let done = state::complete(&meta.value, now_ms());
            match self.write(&entry, &mut meta, Some(done)).await {
                Ok(()) => {
                    entry.ended.notify_waiters();
                    debug!(transactional_id = %entry.id, commit = marker.commit, "transaction ended");
                    let counter = if marker.commit {
                        &self.counters.commits
                    } else {
                        &self.counters.aborts
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(ResponseError::NotCoordinator) => return,
                Err(_) => {}
            }
            drop(meta);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// The current entries of the loaded partitions.
    fn entries(&self) -> Vec<Arc<TxnEntry>> {
        lock(&self.txns).values().cloned().collect()
    }

    /// Aborts the open transactions older than their timeout, fencing
    /// their producers (an id busy with a request is looked at next time).
    pub async fn abort_timed_out(self: &Arc<Self>) {
        let now = now_ms();
        for entry in self.entries() {
            let Ok(mut meta) = entry.state.try_lock() else {
                continue;
            };
            let Some(abort) = state::abort_if_timed_out(&meta.value, now) else {
                continue;
            };
            info!(transactional_id = %entry.id, producer_id = abort.producer_id, timeout_ms = abort.timeout_ms, "transaction timed out: aborting it and fencing its producer");
            if self.write(&entry, &mut meta, Some(abort)).await.is_ok() {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                drop(meta);
                self.spawn_ending(entry);
            }
        }
    }

    /// Forgets the transactional ids idle for longer than
    /// `id_expiration_ms` (a tombstone in their partition).
    pub async fn expire_ids(&self) {
        let now = now_ms();
        for entry in self.entries() {
            let Ok(mut meta) = entry.state.try_lock() else {
                continue;
            };
            if !state::expired(&meta.value, self.config.id_expiration_ms, now) {
                continue;
            }
            if self.write(&entry, &mut meta, None).await.is_ok() {
                let mut txns = lock(&self.txns);
                if txns.get(&entry.id).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
                    txns.remove(&entry.id);
                }
                debug!(transactional_id = %entry.id, "transactional id expired");
            }
        }
    }

    /// Runs the timeout check (and, hourly, the expiry of idle ids) until
    /// the coordinator is dropped.
    pub fn spawn_background_tasks(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        let every = self.config.abort_check_interval;
        tokio::spawn(async move {
            let mut last_expiry = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(every).await;
                let Some(me) = me.upgrade() else { return };
                me.abort_timed_out().await;
                if last_expiry.elapsed() >= Duration::from_secs(3600) {
                    last_expiry = tokio::time::Instant::now();
                    me.expire_ids().await;
                }
            }
        });
    }

    /// DescribeTransactions: each id's state, or why it cannot be told
    /// (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS,
    /// TRANSACTIONAL_ID_NOT_FOUND).
    pub async fn describe(&self, transactional_id: &str) -> Result<TxnValue, ResponseError> {
        let entry = self
            .entry(transactional_id)?
            .ok_or(ResponseError::TransactionalIdNotFound)?;
        let meta = entry.state.lock().await;
        if meta.value.producer_epoch < 0 {
            // Made by an InitProducerId that never got written.
            return Err(ResponseError::TransactionalIdNotFound);
        }
        Ok(meta.value.clone())
    }

    /// ListTransactions: the ids of the loaded partitions (filtered by the
    /// caller), or COORDINATOR_LOAD_IN_PROGRESS while one loads.
    pub async fn list(&self) -> Result<Vec<TxnDescription>, ResponseError> {
        if lock(&self.partitions)
            .values()
            .any(|p| !p.loaded.load(Ordering::Acquire))
        {
            return Err(ResponseError::CoordinatorLoadInProgress);
        }
        let mut listed = Vec::new();
        for entry in self.entries() {
            let meta = entry.state.lock().await;
            if meta.value.producer_epoch >= 0 {
                listed.push(TxnDescription {
                    transactional_id: entry.id.clone(),
                    value: meta.value.clone(),
                });
            }
        }
        listed.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(listed)
    }
}

/// Encodes one `__transaction_state` record (for tests that write the
/// topic as a crashed coordinator would have left it).
#[cfg(test)]
fn state_record(id: &str, value: &TxnValue) -> bytes::Bytes {
    encode_batch(&[(encode_key(id), Some(value.encode()))], now_ms(), None).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::internal_topic::testing::LogPartition;

    /// A host that records markers and can be told to refuse them.
    #[derive(Default)]
    struct FakeHost {
        next_id: std::sync::atomic::AtomicI64,
        markers: Mutex<Vec<(Marker, (String, i32))>>,
        refuse: AtomicBool,
    }

    impl TxnHost for FakeHost {
        fn allocate_producer_id(&self) -> BoxFuture<'static, Result<i64, BrokerError>> {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1000;
            Box::pin(async move { Ok(id) })
        }
        fn write_markers(
            &self,
            marker: Marker,
            partitions: Vec<(String, i32)>,
        ) -> BoxFuture<'static, Vec<((String, i32), MarkerOutcome)>> {
            let refuse = self.refuse.load(Ordering::Relaxed);
            let outcomes = partitions
                .into_iter()
                .map(|tp| {
                    if refuse {
                        (tp, MarkerOutcome::Retry("refused".into()))
                    } else if tp.0 == "deleted" {
                        (tp, MarkerOutcome::Gone)
                    } else {
                        lock(&self.markers).push((marker, tp.clone()));
                        (tp, MarkerOutcome::Written)
                    }
                })
                .collect();
            Box::pin(async move { outcomes })
        }
        fn partition_exists(&self, topic: &str, _index: i32) -> bool {
            topic != "missing"
        }
        fn offsets_partition(&self, group: &str) -> Option<(String, i32)> {
            Some(("__consumer_offsets".into(), partition_for(group, 50)))
        }
    }

    fn config() -> TxnConfig {
        TxnConfig {
            partitions: 1,
            max_timeout_ms: 60_000,
            id_expiration_ms: 3_600_000,
            abort_check_interval: Duration::from_millis(50),
        }
    }

    async fn coordinator(
        log: &Arc<LogPartition>,
        host: &Arc<FakeHost>,
        leader_epoch: i32,
    ) -> Arc<TransactionCoordinator> {
        let c = Arc::new(TransactionCoordinator::new(config(), host.clone()));
        c.take_ownership(log.clone(), leader_epoch)
            .unwrap()
            .await
            .unwrap();
        c
    }

    async fn wait_for_status(c: &TransactionCoordinator, id: &str, status: TxnStatus) -> TxnValue {
        for _ in 0..200 {
            let v = c.describe(id).await.unwrap();
            if v.status == status {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{id} never reached {status:?}: {:?}", c.describe(id).await);
    }

    #[tokio::test]
    async fn a_commit_writes_a_marker_to_every_partition_then_ends_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogPartition::open(dir.path(), 0);
        let host = Arc::new(FakeHost::default());
        let c = coordinator(&log, &host, 3).await;
        let (pid, epoch) = c.init_producer_id("app", 10_000, None).await.unwrap();
        assert_eq!((pid, epoch), (1000, 0));
        c.add_partitions(
            "app",
            pid,
            epoch,
            vec![("a".into(), 0), ("deleted".into(), 1)],
        )
        .await
        .unwrap();
        c.add_offsets("app", pid, epoch, "g").await.unwrap();
        assert_eq!(
            c.add_partitions("app", pid, epoch, vec![("missing".into(), 0)])
                .await,
            Err(AddPartitionsError::Unknown(vec![("missing".into(), 0)]))
        );
        assert_eq!(c.gauges(), TxnGauges { ids: 1, open: 1 });
        c.end_txn("app", pid, epoch, true).await.unwrap();
        let done = wait_for_status(&c, "app", TxnStatus::CompleteCommit).await;
        assert!(done.partitions.is_empty());
        assert_eq!(c.counters().commits.load(Ordering::Relaxed), 1);
        let markers = lock(&host.markers).clone();
        assert_eq!(
            markers.len(),
            2,
            "a and the group's offsets partition: {markers:?}"
        );
        assert!(markers.iter().all(|(m, _)| *m
            == Marker {
                producer_id: pid,
                producer_epoch: 0,
                commit: true,
                coordinator_epoch: 3
            }));
        // Another coordinator reads the same partition: same state, and
        // the next InitProducerId bumps the epoch.
        let again = coordinator(&log, &host, 4).await;
        assert_eq!(again.describe("app").await.unwrap(), done);
        assert_eq!(
            again.init_producer_id("app", 10_000, None).await.unwrap(),
            (pid, 1)
        );
    }

    #[tokio::test]
    async fn the_next_transaction_waits_for_the_previous_ones_markers_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogPartition::open(dir.path(), 0);
        let host = Arc::new(FakeHost::default());
        let c = coordinator(&log, &host, 1).await;
        let (pid, epoch) = c.init_producer_id("app", 10_000, None).await.unwrap();
        for round in 0..20 {
            // Right after EndTxn, as a producer sends it: no
            // CONCURRENT_TRANSACTIONS while the markers go out.
            c.add_partitions("app", pid, epoch, vec![("a".into(), round % 3)])
                .await
                .unwrap();
            c.end_txn("app", pid, epoch, round % 2 == 0).await.unwrap();
        }
        wait_for_status(&c, "app", TxnStatus::CompleteAbort).await;
        assert_eq!(lock(&host.markers).len(), 20);
    }

    #[tokio::test]
    async fn a_decision_left_without_its_markers_is_finished_by_the_next_coordinator() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogPartition::open(dir.path(), 0);
        let host = Arc::new(FakeHost::default());
        host.refuse.store(true, Ordering::Relaxed);
        let c = coordinator(&log, &host, 1).await;
        let (pid, epoch) = c.init_producer_id("app", 10_000, None).await.unwrap();
        c.add_partitions("app", pid, epoch, vec![("a".into(), 0)])
            .await
            .unwrap();
        c.end_txn("app", pid, epoch, false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            c.describe("app").await.unwrap().status,
            TxnStatus::PrepareAbort
        );
        // While markers are out, the producer is told to wait.
        assert_eq!(
            c.add_partitions("app", pid, epoch, vec![("a".into(), 0)])
                .await,
            Err(AddPartitionsError::All(
                ResponseError::ConcurrentTransactions
            ))
        );
        // This coordinator loses the partition; the next one resumes.
        c.give_up(0);
        assert_eq!(c.describe("app").await, Err(ResponseError::NotCoordinator));
        host.refuse.store(false, Ordering::Relaxed);
        let next = coordinator(&log, &host, 2).await;
        wait_for_status(&next, "app", TxnStatus::CompleteAbort).await;
        let markers = lock(&host.markers).clone();
        assert_eq!(markers.len(), 1);
        assert_eq!(
            (markers[0].0.commit, markers[0].0.coordinator_epoch),
            (false, 2)
        );
    }

    #[tokio::test]
    async fn a_new_instance_aborts_the_open_transaction_and_fences_the_old_producer() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogPartition::open(dir.path(), 0);
        let host = Arc::new(FakeHost::default());
        let c = coordinator(&log, &host, 1).await;
        let (pid, old) = c.init_producer_id("app", 10_000, None).await.unwrap();
        c.add_partitions("app", pid, old, vec![("a".into(), 0)])
            .await
            .unwrap();
        // The new instance's request waits for the abort's markers (quick
        // here), else it is told to retry.
        let mut answer = c.init_producer_id("app", 10_000, None).await;
        for _ in 0..100 {
            if answer.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            answer = c.init_producer_id("app", 10_000, None).await;
        }
        let (same_pid, new) = answer.unwrap();
        assert_eq!((same_pid, new), (pid, old + 2));
        let markers = lock(&host.markers).clone();
        assert_eq!(markers.len(), 1);
        assert_eq!(
            (markers[0].0.commit, markers[0].0.producer_epoch),
            (false, old + 1),
            "the abort's marker carries the fencing epoch"
        );
        assert_eq!(
            c.end_txn("app", pid, old, true).await,
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            c.add_partitions("app", pid, old, vec![("a".into(), 0)])
                .await,
            Err(AddPartitionsError::All(ResponseError::ProducerFenced))
        );
    }

    #[tokio::test]
    async fn an_open_transaction_past_its_timeout_is_aborted() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogPartition::open(dir.path(), 0);
        let host = Arc::new(FakeHost::default());
        let c = coordinator(&log, &host, 1).await;
        c.spawn_background_tasks();
        let (pid, epoch) = c.init_producer_id("slow", 100, None).await.unwrap();
        c.add_partitions("slow", pid, epoch, vec![("a".into(), 0)])
            .await
            .unwrap();
        let aborted = wait_for_status(&c, "slow", TxnStatus::CompleteAbort).await;
        assert_eq!(aborted.producer_epoch, epoch + 1);
        assert_eq!(c.counters().timeouts.load(Ordering::Relaxed), 1);
        assert_eq!(c.counters().aborts.load(Ordering::Relaxed), 1);
        assert_eq!(c.gauges(), TxnGauges { ids: 1, open: 0 });
        assert_eq!(
            c.end_txn("slow", pid, epoch, true).await,
            Err(ResponseError::ProducerFenced)
        );
    }

    #[tokio::test]
    async fn bad_requests_get_kafkas_errors_and_an_unowned_id_is_not_coordinated_here() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogPartition::open(dir.path(), 0);
        let host = Arc::new(FakeHost::default());
        let c = coordinator(&log, &host, 1).await;
        assert_eq!(
            c.init_producer_id("", 1000, None).await,
            Err(ResponseError::InvalidRequest)
        );
        assert_eq!(
            c.init_producer_id("x", 60_001, None).await,
            Err(ResponseError::InvalidTransactionTimeout)
        );
        assert_eq!(
            c.end_txn("never", 1, 0, true).await,
            Err(ResponseError::InvalidProducerIdMapping)
        );
        assert_eq!(
            c.describe("never").await,
            Err(ResponseError::TransactionalIdNotFound)
        );
        let (pid, epoch) = c.init_producer_id("x", 1000, None).await.unwrap();
        assert_eq!(
            c.end_txn("x", pid, epoch, true).await,
            Err(ResponseError::InvalidTxnState)
        );
        assert_eq!(
            c.end_txn("x", pid + 1, epoch, true).await,
            Err(ResponseError::InvalidProducerIdMapping)
        );
        let unowned = Arc::new(TransactionCoordinator::new(config(), host.clone()));
        assert_eq!(
            unowned.init_producer_id("x", 1000, None).await,
            Err(ResponseError::NotCoordinator)
        );
    }

    #[tokio::test]
    async fn ids_idle_past_their_expiry_are_forgotten_and_stay_forgotten_after_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogPartition::open(dir.path(), 0);
        let host = Arc::new(FakeHost::default());
        let mut cfg = config();
        cfg.id_expiration_ms = 0;
        let c = Arc::new(TransactionCoordinator::new(cfg, host.clone()));
        c.take_ownership(log.clone(), 1).unwrap().await.unwrap();
        c.init_producer_id("old", 1000, None).await.unwrap();
        // A record as a crashed coordinator left it: mid-transaction ids
        // never expire.
        let open = TxnValue {
            producer_id: 5,
            producer_epoch: 0,
            timeout_ms: 60_000,
            status: TxnStatus::Ongoing,
            partitions: [("a".to_string(), 0)].into_iter().collect(),
            last_update_ms: 0,
            start_ms: now_ms(),
        };
        log.clone()
            .append(state_record("busy", &open))
            .await
            .unwrap();
        let c = Arc::new(TransactionCoordinator::new(
            TxnConfig {
                id_expiration_ms: 0,
                ..config()
            },
            host.clone(),
        ));
        c.take_ownership(log.clone(), 2).unwrap().await.unwrap();
        c.expire_ids().await;
        assert_eq!(
            c.describe("old").await,
            Err(ResponseError::TransactionalIdNotFound)
        );
        assert_eq!(c.describe("busy").await.unwrap().status, TxnStatus::Ongoing);
        let reloaded = coordinator(&log, &host, 3).await;
        assert_eq!(
            reloaded.describe("old").await,
            Err(ResponseError::TransactionalIdNotFound)
        );
        let listed = reloaded.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].transactional_id, "busy");
    }
}
