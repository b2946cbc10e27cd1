//! A follower's rules, and the leader's answer that drives them: where a
//! follower's log diverges from its leader's and where to cut it
//! (KIP-101, KIP-279, KIP-320, KIP-595), and the high watermark and log
//! start a follower takes from a fetch answer.
//!
//! Pure functions over leader-epoch caches (`storage::epochs`) and offsets;
//! the fetcher that calls them does the I/O (`PartitionLog::truncate_to`,
//! `truncate_fully_and_start_at`, `append_as_follower`).
//!
//! How a divergent tail is found. Every batch carries the leader epoch that
//! wrote it, and each log's epoch cache says where every epoch started. A
//! follower fetches with the epoch of its last batch (Fetch v12+); the
//! leader checks that its own log holds that epoch up to the fetch offset
//! ([`diverging_epoch`]). If not, it answers with the largest epoch it has
//! that is not above the follower's and where that epoch ends in its log;
//! the follower cuts its own log at [`truncation_offset`] and fetches again
//! (walking back one epoch at a time while it does not know the epoch the
//! leader named). The same answer arrives from OffsetForLeaderEpoch. The
//! high watermark is never used to cut a log: a follower's high watermark
//! can lag the leader's, so cutting there could throw away committed
//! records.

use crate::storage::epochs::{LeaderEpochCache, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};

/// An epoch and where it ends in a log (the `diverging_epoch` of a Fetch
/// answer, or an OffsetForLeaderEpoch answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEndOffset {
    pub epoch: i32,
    pub end_offset: i64,
}

/// The leader cannot place the follower's last fetched epoch in its log
/// (its cache does not reach back to that epoch): OFFSET_OUT_OF_RANGE, so
/// the follower resets through ListOffsets as after any out-of-range fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the leader's log has no end offset for last fetched epoch {last_fetched_epoch}")]
pub struct UnknownLastFetchedEpoch {
    pub last_fetched_epoch: i32,
}

/// For the LEADER answering a Fetch (v12+) whose partition says the
/// follower's log ends at `fetch_offset` with a last batch of
/// `last_fetched_epoch`: `None` when the leader's log holds that epoch up
/// to `fetch_offset` (no divergence, the read goes ahead), otherwise the
/// epoch and end offset the follower must truncate to. A negative
/// `last_fetched_epoch` (an empty follower log, or an older Fetch version)
/// checks nothing.
pub fn diverging_epoch(
    leader: &LeaderEpochCache,
    leader_log_end: i64,
    last_fetched_epoch: i32,
    fetch_offset: i64,
) -> Result<Option<EpochEndOffset>, UnknownLastFetchedEpoch> {
    if last_fetched_epoch < 0 {
        return Ok(None);
    }
    let (epoch, end_offset) = leader.end_offset_for(last_fetched_epoch, leader_log_end);
    if epoch == UNDEFINED_EPOCH || end_offset == UNDEFINED_EPOCH_OFFSET {
        return Err(UnknownLastFetchedEpoch { last_fetched_epoch });
    }
    if epoch < last_fetched_epoch || end_offset < fetch_offset {
        return Ok(Some(EpochEndOffset { epoch, end_offset }));
    }
    Ok(None)
}

/// Where the follower cuts its log after a leader's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// Cut the log here (nothing to do when it is the log end).
    pub offset: i64,
    /// `false` when the follower did not know the epoch the leader named:
    /// it cut back to the end of its own largest epoch below, and must ask
    /// again (a fetch with its new last epoch, or OffsetForLeaderEpoch).
    pub complete: bool,
}

/// For the FOLLOWER whose log ends at `follower_log_end`, given the
/// leader's `answer` (a Fetch `diverging_epoch` or OffsetForLeaderEpoch):
/// - the follower knows the answered epoch: cut at the smaller of its own
///   end and the leader's end for that epoch (KIP-279);
/// - it only knows a smaller epoch: cut at the end of that one and ask
///   again (the leader's next answer names an epoch at or below it);
/// - the leader has no end offset for the epoch ([`UNDEFINED_EPOCH_OFFSET`]):
///   nothing is cut; the follower keeps fetching from its log end, as
///   Kafka keeps its fetch offset;
/// - the leader names no epoch (an old answer without one), or the follower
///   has no epochs at all: cut at the leader's end offset if below its own.
///
/// The result never exceeds `follower_log_end`.
pub fn truncation_offset(
    follower: &LeaderEpochCache,
    follower_log_end: i64,
    answer: EpochEndOffset,
) -> Truncation {
    let complete = |offset: i64| Truncation {
        offset: offset.min(follower_log_end),
        complete: true,
    };
    if answer.end_offset == UNDEFINED_EPOCH_OFFSET {
        return complete(follower_log_end);
    }
    if answer.epoch == UNDEFINED_EPOCH {
        return complete(answer.end_offset);
    }
    let (epoch, end_offset) = follower.end_offset_for(answer.epoch, follower_log_end);
    if epoch == UNDEFINED_EPOCH || end_offset == UNDEFINED_EPOCH_OFFSET {
        return complete(answer.end_offset);
    }
    if epoch != answer.epoch {
        return Truncation {
            offset: end_offset.min(follower_log_end),
            complete: false,
        };
    }
    complete(end_offset.min(answer.end_offset))
}

/// A follower's high watermark and log start after a fetch answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerOffsets {
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// For the FOLLOWER whose log spans `[log_start_offset, log_end)` after
/// appending a fetch answer that carried the leader's `leader_high_watermark`
/// and `leader_log_start_offset`:
/// - its high watermark is the leader's, bounded by what it has;
/// - its log start follows the leader's (retention and DeleteRecords
///   replicate this way), never backwards and never past its own high
///   watermark (records above it may still be on their way).
pub fn after_fetch(
    log_start_offset: i64,
    log_end: i64,
    leader_high_watermark: i64,
    leader_log_start_offset: i64,
) -> FollowerOffsets {
    let high_watermark = leader_high_watermark.min(log_end).max(log_start_offset);
    FollowerOffsets {
        high_watermark,
        log_start_offset: log_start_offset.max(leader_log_start_offset.min(high_watermark)),
    }
}

/// What a follower does after the leader answered OFFSET_OUT_OF_RANGE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfRangeReset {
    /// The leader's log ends below the follower's (only after an unclean
    /// election): cut the log there.
    TruncateTo(i64),
    /// The leader's log starts past the follower's end (retention moved on
    /// while the follower was away): drop the whole log and start there.
    StartAt(i64),
    /// The follower's log end is within the leader's log again: fetch on.
    FetchFrom(i64),
}

/// For the FOLLOWER whose fetch at its log end `follower_log_end` was out
/// of range, given the leader's log start and end (ListOffsets earliest and
/// latest).
pub fn out_of_range_reset(
    follower_log_end: i64,
    leader_log_start_offset: i64,
    leader_log_end: i64,
) -> OutOfRangeReset {
    if leader_log_end < follower_log_end {
        OutOfRangeReset::TruncateTo(leader_log_end)
    } else if leader_log_start_offset > follower_log_end {
        OutOfRangeReset::StartAt(leader_log_start_offset)
    } else {
        OutOfRangeReset::FetchFrom(follower_log_end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::new();
        for &(epoch, offset) in entries {
            assert!(c.assign(epoch, offset));
        }
        c
    }

    fn end(epoch: i32, end_offset: i64) -> EpochEndOffset {
        EpochEndOffset { epoch, end_offset }
    }

    fn done(offset: i64) -> Truncation {
        Truncation {
            offset,
            complete: true,
        }
    }

    #[test]
    fn a_follower_whose_last_epoch_the_leader_holds_up_to_the_fetch_offset_does_not_diverge() {
        let leader = cache(&[(1, 0), (3, 50), (5, 80)]);
        assert_eq!(diverging_epoch(&leader, 100, 5, 100), Ok(None));
        assert_eq!(diverging_epoch(&leader, 100, 5, 90), Ok(None));
        assert_eq!(
            diverging_epoch(&leader, 100, 3, 80),
            Ok(None),
            "epoch 3 ends at 80"
        );
        assert_eq!(
            diverging_epoch(&leader, 100, -1, 0),
            Ok(None),
            "nothing to check"
        );
    }

    #[test]
    fn a_follower_with_more_of_an_epoch_than_the_leader_diverges_at_its_end() {
        let leader = cache(&[(1, 0), (3, 50), (5, 80)]);
        // The follower wrote epoch 3 up to 90; the leader's ends at 80.
        assert_eq!(diverging_epoch(&leader, 100, 3, 90), Ok(Some(end(3, 80))));
        // The follower has epoch 4, which the leader never had.
        assert_eq!(diverging_epoch(&leader, 100, 4, 85), Ok(Some(end(3, 80))));
        // An epoch above the leader's latest, or a cache that knows nothing.
        assert_eq!(
            diverging_epoch(&leader, 100, 6, 100),
            Err(UnknownLastFetchedEpoch {
                last_fetched_epoch: 6
            })
        );
        assert!(diverging_epoch(&LeaderEpochCache::new(), 0, 0, 10).is_err());
    }

    #[test]
    fn a_follower_with_a_divergent_tail_from_an_older_epoch_truncates_to_the_leaders_epoch_end() {
        // Both wrote epoch 2 from 10; the follower (leader of epoch 2) kept
        // writing to 40, the new leader had 25 of it and then wrote epoch 3.
        let leader = cache(&[(0, 0), (2, 10), (3, 25)]);
        let follower = cache(&[(0, 0), (2, 10)]);
        let answer = diverging_epoch(&leader, 60, 2, 40).unwrap().unwrap();
        assert_eq!(answer, end(2, 25));
        assert_eq!(truncation_offset(&follower, 40, answer), done(25));
        // After the cut the follower fetches from 25 with epoch 2: in line.
        assert_eq!(diverging_epoch(&leader, 60, 2, 25), Ok(None));
    }

    #[test]
    fn a_follower_cuts_at_the_smaller_of_both_ends_of_the_epoch() {
        let follower = cache(&[(0, 0), (2, 10), (4, 30)]);
        // The leader's epoch 2 ended later than the follower's own.
        assert_eq!(truncation_offset(&follower, 45, end(2, 35)), done(30));
        assert_eq!(truncation_offset(&follower, 45, end(4, 40)), done(40));
        assert_eq!(
            truncation_offset(&follower, 45, end(4, 50)),
            done(45),
            "never past its end"
        );
    }

    #[test]
    fn kip_279_a_follower_that_does_not_know_the_answered_epoch_walks_back_one_epoch_at_a_time() {
        // Leader and follower were leaders in turn without seeing each
        // other's epochs: the leader has 1, 3, 5; the follower 1, 2, 4.
        let leader = cache(&[(1, 0), (3, 20), (5, 40)]);
        let follower = cache(&[(1, 0), (2, 15), (4, 30)]);
        let mut follower_cache = follower.clone();
        let mut log_end = 50;
        let mut steps = Vec::new();
        loop {
            let last_epoch = follower_cache.latest_epoch().unwrap();
            let Some(answer) = diverging_epoch(&leader, 60, last_epoch, log_end).unwrap() else {
                break;
            };
            let cut = truncation_offset(&follower_cache, log_end, answer);
            steps.push((answer, cut));
            log_end = cut.offset;
            follower_cache.truncate_from_end(log_end);
            assert!(steps.len() < 5, "the walk ends: {steps:?}");
        }
        assert_eq!(
            steps,
            [
                // Epoch 4 is not the leader's: it names 3, ending at 40; the
                // follower knows only 2 below 3 and cuts at its end, 30.
                (
                    end(3, 40),
                    Truncation {
                        offset: 30,
                        complete: false
                    }
                ),
                // Epoch 2: the leader's largest at or below is 1, ending at
                // 20; the follower's epoch 1 ends at 15.
                (end(1, 20), done(15)),
            ]
        );
        assert_eq!(log_end, 15);
        assert_eq!(follower_cache.latest_epoch(), Some(1));
    }

    #[test]
    fn an_offset_for_leader_epoch_answer_below_the_followers_earliest_epoch_cuts_at_its_start() {
        // The follower's log starts at 100 in epoch 7 (older epochs were
        // deleted); the leader's epoch 5 ended at 120.
        let follower = cache(&[(7, 100), (8, 150)]);
        assert_eq!(truncation_offset(&follower, 170, end(5, 120)), done(100));
    }

    #[test]
    fn undefined_answers_fall_back_as_kafka_does_and_never_to_the_high_watermark() {
        let follower = cache(&[(1, 0), (2, 15)]);
        // No end offset known to the leader: keep the log, fetch on.
        assert_eq!(
            truncation_offset(&follower, 40, end(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)),
            done(40)
        );
        assert_eq!(
            truncation_offset(&follower, 40, end(2, UNDEFINED_EPOCH_OFFSET)),
            done(40)
        );
        // An answer without an epoch: the leader's end offset.
        assert_eq!(
            truncation_offset(&follower, 40, end(UNDEFINED_EPOCH, 30)),
            done(30)
        );
        assert_eq!(
            truncation_offset(&follower, 40, end(UNDEFINED_EPOCH, 50)),
            done(40)
        );
        // A follower without epochs: the leader's end offset.
        assert_eq!(
            truncation_offset(&LeaderEpochCache::new(), 40, end(3, 22)),
            done(22)
        );
    }

    #[test]
    fn the_followers_high_watermark_is_the_leaders_bounded_by_its_own_log() {
        assert_eq!(after_fetch(0, 100, 80, 0).high_watermark, 80);
        assert_eq!(after_fetch(0, 100, 120, 0).high_watermark, 100);
        assert_eq!(after_fetch(50, 100, 20, 0).high_watermark, 50);
    }

    #[test]
    fn the_followers_log_start_follows_the_leaders_up_to_its_high_watermark() {
        // DeleteRecords on the leader moved its log start to 60.
        assert_eq!(
            after_fetch(0, 100, 100, 60),
            FollowerOffsets {
                high_watermark: 100,
                log_start_offset: 60
            }
        );
        // Never backwards.
        assert_eq!(after_fetch(70, 100, 100, 60).log_start_offset, 70);
        // Not past what the follower has committed yet.
        assert_eq!(after_fetch(0, 50, 100, 60).log_start_offset, 50);
    }

    #[test]
    fn an_out_of_range_follower_starts_over_at_the_leaders_log_start_or_cuts_to_its_end() {
        assert_eq!(
            out_of_range_reset(10, 500, 900),
            OutOfRangeReset::StartAt(500)
        );
        assert_eq!(
            out_of_range_reset(950, 500, 900),
            OutOfRangeReset::TruncateTo(900)
        );
        assert_eq!(
            out_of_range_reset(600, 500, 900),
            OutOfRangeReset::FetchFrom(600)
        );
    }
}
