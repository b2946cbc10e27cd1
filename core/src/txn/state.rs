//! One transactional id's state and the rules of its transitions, as pure
//! functions over the value its latest `__transaction_state` record holds
//! (no I/O, no clock: callers pass `now_ms`). The coordinator writes what
//! these return before it answers, so memory never runs ahead of the log.
//!
//! ```text
//!             InitProducerId (epoch + 1)
//!   Empty ◀──────────────────────────────── CompleteCommit / CompleteAbort
//!     │ AddPartitionsToTxn / AddOffsetsToTxn           ▲
//!     ▼                                                │ every marker written
//!   Ongoing ── EndTxn ──▶ PrepareCommit / PrepareAbort ┘
//!     │                        ▲
//!     └── timeout, or InitProducerId of a new instance:
//!         PrepareAbort with epoch + 1 (fences the old producer)
//! ```

use std::collections::BTreeSet;

use kafka_protocol::ResponseError;

use super::records::{TxnStatus, TxnValue};

/// An epoch this high cannot be bumped: the producer gets a new id
/// (Kafka's rule, which keeps `i16::MAX` free for its own use).
pub const MAX_EPOCH: i16 = i16::MAX - 1;

/// What InitProducerId decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Init {
    /// Answer this producer id and epoch; nothing to write (a retry of a
    /// request whose bump is already written).
    Answer(i64, i16),
    /// Write this value (the bumped epoch, or a new id), then answer it.
    Write(TxnValue),
    /// A transaction is open: write this abort (at a bumped epoch, which
    /// fences the previous instance), end it, and answer
    /// CONCURRENT_TRANSACTIONS so the client asks again.
    AbortOpen(TxnValue),
}

/// Whether InitProducerId needs a new producer id (the epoch is spent).
pub fn needs_new_producer_id(current: &TxnValue) -> bool {
    current.producer_epoch >= MAX_EPOCH
}

/// InitProducerId of a transactional id whose state is `current`.
/// `previous` is the (id, epoch) before the last bump, for KIP-360 retries;
/// `expected` the (id, epoch) the client says it has (v3+), if any;
/// `new_id` a fresh producer id when [`needs_new_producer_id`].
pub fn init_producer_id(
    current: &TxnValue,
    previous: Option<(i64, i16)>,
    expected: Option<(i64, i16)>,
    timeout_ms: i32,
    new_id: Option<i64>,
    now_ms: i64,
) -> Result<Init, ResponseError> {
    if let Some(expected) = expected {
        let is_current = expected == (current.producer_id, current.producer_epoch);
        let is_previous = Some(expected) == previous;
        if !is_current && !is_previous {
            return Err(ResponseError::ProducerFenced);
        }
        if is_previous && !is_current && current.status == TxnStatus::Empty {
            return Ok(Init::Answer(current.producer_id, current.producer_epoch));
        }
    }
    match current.status {
        s if s.is_ending() || s == TxnStatus::Dead => Err(ResponseError::ConcurrentTransactions),
        TxnStatus::Ongoing => Ok(Init::AbortOpen(fence(current, now_ms))),
        _ => {
            let (producer_id, producer_epoch) = match new_id {
                Some(id) if needs_new_producer_id(current) => (id, 0),
                _ if needs_new_producer_id(current) => {
                    return Err(ResponseError::CoordinatorNotAvailable)
                }
                _ => (current.producer_id, current.producer_epoch + 1),
            };
            Ok(Init::Write(TxnValue {
                producer_id,
                producer_epoch,
                timeout_ms,
                status: TxnStatus::Empty,
                partitions: BTreeSet::new(),
                last_update_ms: now_ms,
                start_ms: -1,
            }))
        }
    }
}

/// The abort of an open transaction with the epoch bumped (unless it is
/// spent): markers of the new epoch fence the producer that opened it.
fn fence(current: &TxnValue, now_ms: i64) -> TxnValue {
    TxnValue {
        producer_epoch: if current.producer_epoch < MAX_EPOCH {
            current.producer_epoch + 1
        } else {
            current.producer_epoch
        },
        status: TxnStatus::PrepareAbort,
        last_update_ms: now_ms,
        ..current.clone()
    }
}

/// The request's producer must be the transactional id's current one.
fn check_producer(current: &TxnValue, producer_id: i64, epoch: i16) -> Result<(), ResponseError> {
    if producer_id != current.producer_id {
        Err(ResponseError::InvalidProducerIdMapping)
    } else if epoch != current.producer_epoch {
        Err(ResponseError::ProducerFenced)
    } else {
        Ok(())
    }
}

/// AddPartitionsToTxn (and AddOffsetsToTxn, whose partition is the group's
/// offsets partition): the value to write, `None` when every partition is
/// in the transaction already.
pub fn add_partitions(
    current: &TxnValue,
    producer_id: i64,
    epoch: i16,
    partitions: &BTreeSet<(String, i32)>,
    now_ms: i64,
) -> Result<Option<TxnValue>, ResponseError> {
    check_producer(current, producer_id, epoch)?;
    match current.status {
        s if s.is_ending() || s == TxnStatus::Dead => Err(ResponseError::ConcurrentTransactions),
        TxnStatus::Ongoing if partitions.is_subset(&current.partitions) => Ok(None),
        status => Ok(Some(TxnValue {
            status: TxnStatus::Ongoing,
            partitions: current.partitions.union(partitions).cloned().collect(),
            start_ms: if status == TxnStatus::Ongoing {
                current.start_ms
            } else {
                now_ms
            },
            last_update_ms: now_ms,
            ..current.clone()
        })),
    }
}

/// EndTxn: the PrepareCommit / PrepareAbort to write, or `None` for a
/// retry of a request whose transaction already ended that way.
pub fn end_txn(
    current: &TxnValue,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    now_ms: i64,
) -> Result<Option<TxnValue>, ResponseError> {
    check_producer(current, producer_id, epoch)?;
    match (current.status, commit) {
        (TxnStatus::Ongoing, _) => Ok(Some(TxnValue {
            status: if commit {
                TxnStatus::PrepareCommit
            } else {
                TxnStatus::PrepareAbort
            },
            last_update_ms: now_ms,
            ..current.clone()
        })),
        (TxnStatus::CompleteCommit, true) | (TxnStatus::CompleteAbort, false) => Ok(None),
        (TxnStatus::PrepareCommit, true) | (TxnStatus::PrepareAbort, false) => {
            Err(ResponseError::ConcurrentTransactions)
        }
        (TxnStatus::Dead | TxnStatus::PrepareEpochFence, _) => {
            Err(ResponseError::ConcurrentTransactions)
        }
        _ => Err(ResponseError::InvalidTxnState),
    }
}

/// Every marker is written: the transaction has ended.
pub fn complete(current: &TxnValue, now_ms: i64) -> TxnValue {
    TxnValue {
        status: if current.status == TxnStatus::PrepareCommit {
            TxnStatus::CompleteCommit
        } else {
            TxnStatus::CompleteAbort
        },
        partitions: BTreeSet::new(),
        last_update_ms: now_ms,
        ..current.clone()
    }
}

/// An open transaction older than its timeout: its abort, at a bumped
/// epoch (the producer is fenced, as in Kafka).
pub fn abort_if_timed_out(current: &TxnValue, now_ms: i64) -> Option<TxnValue> {
    let deadline = current.start_ms.saturating_add(current.timeout_ms as i64);
    (current.status == TxnStatus::Ongoing && now_ms >= deadline).then(|| fence(current, now_ms))
}

/// An idle transactional id not used for `expiration_ms` is forgotten
/// (Kafka's `transactional.id.expiration.ms`).
pub fn expired(current: &TxnValue, expiration_ms: i64, now_ms: i64) -> bool {
    current.status.is_idle() && now_ms.saturating_sub(current.last_update_ms) >= expiration_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(status: TxnStatus, epoch: i16) -> TxnValue {
        TxnValue {
            producer_id: 10,
            producer_epoch: epoch,
            timeout_ms: 1000,
            status,
            partitions: BTreeSet::new(),
            last_update_ms: 0,
            start_ms: -1,
        }
    }

    fn parts(list: &[(&str, i32)]) -> BTreeSet<(String, i32)> {
        list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    #[test]
    fn codes_and_names_are_kafkas() {
        for s in TxnStatus::ALL {
            assert_eq!(TxnStatus::from_code(s.code()), Some(s));
            assert_eq!(TxnStatus::from_name(s.name()), Some(s));
        }
        assert_eq!(TxnStatus::PrepareAbort.code(), 3);
        assert_eq!(TxnStatus::from_code(8), None);
    }

    #[test]
    fn a_transaction_goes_from_empty_through_ongoing_and_prepare_to_complete() {
        // A new id starts at epoch -1: its first InitProducerId gives 0.
        let Init::Write(v) =
            init_producer_id(&value(TxnStatus::Empty, -1), None, None, 500, None, 1).unwrap()
        else {
            panic!("a bump is written");
        };
        assert_eq!(
            (v.producer_id, v.producer_epoch, v.timeout_ms),
            (10, 0, 500)
        );
        let added = add_partitions(&v, 10, 0, &parts(&[("a", 0)]), 5)
            .unwrap()
            .unwrap();
        assert_eq!((added.status, added.start_ms), (TxnStatus::Ongoing, 5));
        // Adding what is there writes nothing; more keeps the start.
        assert_eq!(
            add_partitions(&added, 10, 0, &parts(&[("a", 0)]), 6).unwrap(),
            None
        );
        let more = add_partitions(&added, 10, 0, &parts(&[("b", 1)]), 7)
            .unwrap()
            .unwrap();
        assert_eq!((more.partitions.len(), more.start_ms), (2, 5));
        let prepared = end_txn(&more, 10, 0, true, 8).unwrap().unwrap();
        assert_eq!(prepared.status, TxnStatus::PrepareCommit);
        // While markers are written, the producer waits.
        assert_eq!(
            add_partitions(&prepared, 10, 0, &parts(&[("a", 0)]), 9),
            Err(ResponseError::ConcurrentTransactions)
        );
        assert_eq!(
            end_txn(&prepared, 10, 0, true, 9),
            Err(ResponseError::ConcurrentTransactions)
        );
        assert_eq!(
            end_txn(&prepared, 10, 0, false, 9),
            Err(ResponseError::InvalidTxnState)
        );
        let done = complete(&prepared, 10);
        assert_eq!(
            (done.status, done.partitions.len()),
            (TxnStatus::CompleteCommit, 0)
        );
        // A retried EndTxn(commit) succeeds; an abort of it cannot.
        assert_eq!(end_txn(&done, 10, 0, true, 11), Ok(None));
        assert_eq!(
            end_txn(&done, 10, 0, false, 11),
            Err(ResponseError::InvalidTxnState)
        );
        // The next transaction starts anew.
        let next = add_partitions(&done, 10, 0, &parts(&[("c", 2)]), 12)
            .unwrap()
            .unwrap();
        assert_eq!((next.partitions, next.start_ms), (parts(&[("c", 2)]), 12));
    }

    #[test]
    fn requests_of_another_producer_or_an_older_epoch_are_refused() {
        let v = value(TxnStatus::Ongoing, 3);
        assert_eq!(
            add_partitions(&v, 11, 3, &parts(&[("a", 0)]), 0),
            Err(ResponseError::InvalidProducerIdMapping)
        );
        assert_eq!(
            end_txn(&v, 10, 2, true, 0),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            end_txn(&value(TxnStatus::Empty, 3), 10, 3, true, 0),
            Err(ResponseError::InvalidTxnState)
        );
    }

    #[test]
    fn a_new_instance_fences_the_old_one_and_aborts_its_open_transaction() {
        let mut open = value(TxnStatus::Ongoing, 4);
        open.partitions = parts(&[("a", 0)]);
        let Init::AbortOpen(abort) = init_producer_id(&open, None, None, 1000, None, 50).unwrap()
        else {
            panic!("the open transaction is aborted first");
        };
        assert_eq!(
            (abort.status, abort.producer_epoch),
            (TxnStatus::PrepareAbort, 5)
        );
        assert_eq!(
            abort.partitions, open.partitions,
            "markers go to its partitions"
        );
        // Asked again while the abort's markers are written, then after.
        assert_eq!(
            init_producer_id(&abort, None, None, 1000, None, 51),
            Err(ResponseError::ConcurrentTransactions)
        );
        let Init::Write(v) =
            init_producer_id(&complete(&abort, 52), None, None, 1000, None, 53).unwrap()
        else {
            panic!("a bump");
        };
        assert_eq!(v.producer_epoch, 6);
        // The old instance's requests are fenced.
        assert_eq!(
            end_txn(&v, 10, 4, true, 54),
            Err(ResponseError::ProducerFenced)
        );
    }

    #[test]
    fn kip_360_bumps_check_the_epoch_the_client_has_and_answer_retries() {
        let v = value(TxnStatus::CompleteAbort, 7);
        assert_eq!(
            init_producer_id(&v, None, Some((10, 6)), 1000, None, 0),
            Err(ResponseError::ProducerFenced)
        );
        let Init::Write(bumped) = init_producer_id(&v, None, Some((10, 7)), 1000, None, 0).unwrap()
        else {
            panic!("a bump");
        };
        assert_eq!(bumped.producer_epoch, 8);
        // The same request again (its answer was lost): the same answer.
        assert_eq!(
            init_producer_id(&bumped, Some((10, 7)), Some((10, 7)), 1000, None, 1),
            Ok(Init::Answer(10, 8))
        );
    }

    #[test]
    fn a_spent_epoch_gets_a_new_producer_id() {
        let v = value(TxnStatus::CompleteCommit, MAX_EPOCH);
        assert!(needs_new_producer_id(&v));
        let Init::Write(fresh) = init_producer_id(&v, None, None, 1000, Some(99), 0).unwrap()
        else {
            panic!("a new id");
        };
        assert_eq!((fresh.producer_id, fresh.producer_epoch), (99, 0));
    }

    #[test]
    fn open_transactions_time_out_into_a_fencing_abort_and_idle_ids_expire() {
        let mut v = value(TxnStatus::Ongoing, 1);
        v.start_ms = 100;
        assert_eq!(abort_if_timed_out(&v, 1099), None);
        let abort = abort_if_timed_out(&v, 1100).unwrap();
        assert_eq!(
            (abort.status, abort.producer_epoch),
            (TxnStatus::PrepareAbort, 2)
        );
        assert!(
            !expired(&v, 10, 10_000),
            "an open transaction never expires"
        );
        assert!(expired(&complete(&abort, 0), 10, 10));
    }
}
