//! Waiting for `acks=all` without a purgatory of callbacks.
//!
//! A partition publishes a [`ReplicationStatus`] in one
//! `tokio::sync::watch` channel (one per partition, whatever the number of
//! waiters). A produce with `acks=all` appends, then awaits
//! [`wait_for_acks_all`] on a clone of the receiver: it checks the status,
//! sleeps until the status changes, checks again, until its offset is
//! committed, leadership is lost, or its timeout passes. Waiters cost
//! nothing while nothing moves: [`publish`] only wakes them when the status
//! really changed.
//!
//! ```
//! # use runnel_core::replication::{ReplicationStatus, publish, wait_for_acks_all, AcksAllWait};
//! # use std::time::Duration;
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let status = ReplicationStatus { high_watermark: 0, in_sync_replicas: 1, replicas: 1,
//!                                  leader_epoch: 3, leading: true };
//! let (tx, rx) = tokio::sync::watch::channel(status);
//! // The leader appends offsets 0..10 (alone in its ISR, it commits at once).
//! publish(&tx, ReplicationStatus { high_watermark: 10, ..status });
//! let outcome = wait_for_acks_all(rx, 3, 10, 1, Duration::from_secs(30)).await;
//! assert_eq!(outcome, AcksAllWait::Done);
//! # });
//! ```

use std::time::Duration;

use tokio::sync::watch;

/// What `acks=all` waiters need of a partition, published on every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationStatus {
    pub high_watermark: i64,
    /// The maximal ISR's size (committed members and proposed ones).
    pub in_sync_replicas: usize,
    /// The replication factor (bounds the effective `min.insync.replicas`).
    pub replicas: usize,
    pub leader_epoch: i32,
    /// Whether this broker still leads the partition in `leader_epoch`.
    pub leading: bool,
}

impl ReplicationStatus {
    /// The status after this broker stopped leading.
    pub fn not_leading(self) -> Self {
        ReplicationStatus {
            leading: false,
            ..self
        }
    }
}

/// Where an `acks=all` produce stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcksAll {
    /// The high watermark has not reached it yet.
    Pending,
    /// Committed on the ISR.
    Done,
    /// Committed, but the ISR had fallen below `min.insync.replicas`
    /// (NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    NotEnoughReplicasAfterAppend,
}

/// The one rule of `acks=all` (Kafka's `checkEnoughReplicasReachOffset`):
/// the produce whose last offset is `required_offset - 1` is answered once
/// the high watermark reaches `required_offset`, with an error when the
/// maximal ISR is then below the effective `min.insync.replicas`.
pub(crate) fn acks_all_outcome(
    high_watermark: i64,
    in_sync_replicas: usize,
    replicas: usize,
    required_offset: i64,
    min_isr: usize,
) -> AcksAll {
    if high_watermark < required_offset {
        AcksAll::Pending
    } else if in_sync_replicas >= min_isr.min(replicas) {
        AcksAll::Done
    } else {
        AcksAll::NotEnoughReplicasAfterAppend
    }
}

/// How an `acks=all` wait ended. Each maps to the produce's error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcksAllWait {
    /// NONE.
    Done,
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND.
    NotEnoughReplicasAfterAppend,
    /// NOT_LEADER_OR_FOLLOWER: leadership moved (or the partition went
    /// away) while waiting; the record may be truncated by the new leader.
    NotLeader,
    /// REQUEST_TIMED_OUT.
    Timeout,
}

/// Publishes `status`, waking the waiters only when it differs from what
/// they saw.
pub fn publish(tx: &watch::Sender<ReplicationStatus>, status: ReplicationStatus) {
    tx.send_if_modified(|current| {
        let changed = *current != status;
        *current = status;
        changed
    });
}

/// Waits until the records up to `required_offset - 1`, appended by this
/// broker as leader in `leader_epoch`, are committed on the ISR, or
/// `timeout` passes.
pub async fn wait_for_acks_all(
    mut status: watch::Receiver<ReplicationStatus>,
    leader_epoch: i32,
    required_offset: i64,
    min_isr: usize,
    timeout: Duration,
) -> AcksAllWait {
    let wait = async {
        loop {
            let current = *status.borrow_and_update();
            if !current.leading || current.leader_epoch != leader_epoch {
                return AcksAllWait::NotLeader;
            }
            match acks_all_outcome(
                current.high_watermark,
                current.in_sync_replicas,
                current.replicas,
                required_offset,
                min_isr,
            ) {
                AcksAll::Done => return AcksAllWait::Done,
                AcksAll::NotEnoughReplicasAfterAppend => {
                    return AcksAllWait::NotEnoughReplicasAfterAppend
                }
                AcksAll::Pending => {}
            }
            if status.changed().await.is_err() {
                // The partition dropped its sender: it is gone here.
                return AcksAllWait::NotLeader;
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .unwrap_or(AcksAllWait::Timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn leading(high_watermark: i64, in_sync_replicas: usize) -> ReplicationStatus {
        ReplicationStatus {
            high_watermark,
            in_sync_replicas,
            replicas: 3,
            leader_epoch: 4,
            leading: true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_is_woken_by_the_hw_passing_its_offset_and_times_out_otherwise() {
        let (tx, rx) = watch::channel(leading(100, 3));
        let passed = tokio::spawn(wait_for_acks_all(rx.clone(), 4, 110, 2, TIMEOUT));
        let never = tokio::spawn(wait_for_acks_all(rx, 4, 200, 2, TIMEOUT));
        tokio::time::sleep(Duration::from_secs(1)).await;
        publish(&tx, leading(105, 3));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!passed.is_finished(), "105 does not pass 110");
        let start = tokio::time::Instant::now();
        publish(&tx, leading(110, 3));
        assert_eq!(passed.await.unwrap(), AcksAllWait::Done);
        assert_eq!(start.elapsed(), Duration::ZERO, "woken at once");
        assert_eq!(never.await.unwrap(), AcksAllWait::Timeout);
        assert_eq!(start.elapsed(), TIMEOUT - Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_committed_offset_with_the_isr_below_min_insync_answers_not_enough_replicas_after_append(
    ) {
        let (tx, rx) = watch::channel(leading(100, 2));
        let waiter = tokio::spawn(wait_for_acks_all(rx, 4, 110, 2, TIMEOUT));
        tokio::task::yield_now().await;
        // The ISR shrinks to the leader alone, which commits at once.
        publish(&tx, leading(110, 1));
        assert_eq!(
            waiter.await.unwrap(),
            AcksAllWait::NotEnoughReplicasAfterAppend
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_answers_not_leader_when_leadership_moves() {
        let (tx, rx) = watch::channel(leading(100, 3));
        let waiter = tokio::spawn(wait_for_acks_all(rx.clone(), 4, 110, 2, TIMEOUT));
        tokio::task::yield_now().await;
        publish(&tx, leading(100, 3).not_leading());
        assert_eq!(waiter.await.unwrap(), AcksAllWait::NotLeader);
        // Leading again in a later epoch: the records of epoch 4 past the
        // high watermark may have been cut, so the answer stays NotLeader.
        publish(
            &tx,
            ReplicationStatus {
                leader_epoch: 6,
                ..leading(120, 3)
            },
        );
        let waiter = wait_for_acks_all(rx.clone(), 4, 110, 2, TIMEOUT).await;
        assert_eq!(waiter, AcksAllWait::NotLeader);
        // The partition goes away.
        let waiter = tokio::spawn(wait_for_acks_all(rx, 6, 130, 2, TIMEOUT));
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiter.await.unwrap(), AcksAllWait::NotLeader);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unchanged_status_wakes_no_waiter() {
        let (tx, mut rx) = watch::channel(leading(100, 3));
        rx.borrow_and_update();
        publish(&tx, leading(100, 3));
        assert!(!rx.has_changed().unwrap());
        publish(&tx, leading(101, 3));
        assert!(rx.has_changed().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn many_waiters_share_one_channel_and_each_gets_its_answer() {
        let (tx, rx) = watch::channel(leading(0, 3));
        let waiters: Vec<_> = (1..=1_000)
            .map(|offset| tokio::spawn(wait_for_acks_all(rx.clone(), 4, offset, 2, TIMEOUT)))
            .collect();
        for hw in (0..=500).step_by(50) {
            publish(&tx, leading(hw, 3));
            tokio::task::yield_now().await;
        }
        for (i, waiter) in waiters.into_iter().enumerate() {
            let expected = if i < 500 {
                AcksAllWait::Done
            } else {
                AcksAllWait::Timeout
            };
            assert_eq!(waiter.await.unwrap(), expected, "offset {}", i + 1);
        }
    }
}
