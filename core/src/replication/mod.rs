//! Partition replication's rules, Kafka's: what a leader does with its
//! followers' fetches, when records are committed, how the ISR changes,
//! when an `acks=all` produce is answered, and how a follower finds and
//! cuts a divergent tail.
//!
//! - [`leader`]: [`LeaderState`], one partition led by this broker — each
//!   follower's log end and last caught-up time, the high watermark (over
//!   the maximal ISR, KIP-497), ISR shrink and expansion candidates, the
//!   one in-flight AlterPartition, `min.insync.replicas` and `acks=all`.
//! - [`wait`]: [`ReplicationStatus`] published in a `watch` per partition,
//!   and [`wait_for_acks_all`], how a produce waits on it.
//! - [`follower`]: divergence by leader epoch for the leader to answer in
//!   Fetch (KIP-320), where the follower cuts its log (KIP-101, KIP-279),
//!   and the high watermark and log start a follower takes from its leader.
//!
//! What it is not: the fetcher, the Fetch handler or the AlterPartition
//! client. Nothing here does I/O, reads a clock or takes a lock: callers
//! pass the time and the offsets, and act on what comes back, so every rule
//! is tested with a hand-driven clock (and a randomized run of leaders,
//! followers, crashes and elections in `sim_tests`). It knows the
//! controller only by its broker ids and refusals, and storage only by the
//! leader-epoch cache.

pub mod follower;
pub mod leader;
pub mod wait;

#[cfg(test)]
mod sim_tests;

pub use follower::{
    after_fetch, diverging_epoch, out_of_range_reset, truncation_offset, EpochEndOffset,
    FollowerOffsets, OutOfRangeReset, Truncation, UnknownLastFetchedEpoch,
};
pub use leader::{
    AlterIsrRequest, FetchOutcome, IsrRefusal, LeaderError, LeaderState, PartitionAssignment,
};
pub(crate) use wait::acks_all_outcome;
pub use wait::{publish, wait_for_acks_all, AcksAll, AcksAllWait, ReplicationStatus};
