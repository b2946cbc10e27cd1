//! Sliding windows (Kafka Streams' `SlidingWindows`, KIP-450): windows of
//! a fixed length that exist where the records are, not on a grid.
//!
//! A window `[start, end]` includes both ends and spans the time
//! difference (`end - start == diff`). Each record at `t` belongs to the
//! window that ends at it, `[t - diff, t]`; the window that starts right
//! after it, `[t + 1, t + 1 + diff]`, exists as soon as a record falls in
//! it. Those two kinds are the only windows there are, and an empty one
//! never exists: every distinct set of records that fits in `diff` gets
//! exactly one window and one aggregate. Windows never start before 0
//! (as in Kafka): the records in `[0, diff)` share the window `[0, diff]`
//! instead of windows reaching before the epoch.
//!
//! Aggregates cannot be subtracted from, so a new window's aggregate is
//! taken from a window that already holds the same records (see
//! [`SlidingWindowedKStream`]'s processor); for that the store keeps, next
//! to each window's aggregate, the latest timestamp among its records.

use crate::grouped::{aggregating, counting, reducing, FoldIn, KGroupedStream};
use crate::ktable::{KTable, WindowClose};
use crate::nodes::{encode, encode_key, processor, store_error};
use crate::options::{Data, Stored};
use crate::processor::Ctx;
use crate::record::{Change, Record, Window, Windowed};
use crate::serdes::{self, SerdeRef};
use crate::store::{self, StoreKind};

/// Sliding windows of `diff_ms`, accepting records for `grace_ms` after a
/// window ends (in stream time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindows {
    pub diff_ms: i64,
    pub grace_ms: i64,
}

impl SlidingWindows {
    /// Windows spanning `diff_ms` (both ends included) that take records
    /// until stream time passes their end plus `grace_ms`.
    pub fn of_time_difference_with_grace(diff_ms: i64, grace_ms: i64) -> SlidingWindows {
        assert!(
            diff_ms > 0,
            "a sliding window's time difference must be positive"
        );
        assert!(grace_ms >= 0, "a grace period cannot be negative");
        SlidingWindows { diff_ms, grace_ms }
    }

    /// Windows that close as soon as stream time passes their end.
    pub fn of_time_difference_and_no_grace(diff_ms: i64) -> SlidingWindows {
        SlidingWindows::of_time_difference_with_grace(diff_ms, 0)
    }

    /// The window a record at `timestamp` ends (`[0, diff]` for the records
    /// of the first `diff` ms, which share it).
    fn left_start(&self, timestamp: i64) -> i64 {
        timestamp.saturating_sub(self.diff_ms).max(0)
    }

    /// Stream time this operator keeps windows for: a record it still
    /// accepts (`t + diff` not before the close time) may need the
    /// aggregate of the window ending at its predecessor, which starts up
    /// to `2 * diff + 1` before `t`.
    fn retention_ms(&self) -> i64 {
        self.diff_ms
            .saturating_mul(2)
            .saturating_add(self.grace_ms)
            .saturating_add(1)
    }
}

impl<K: Data, V: Data> KGroupedStream<K, V> {
    /// Aggregations per key and sliding window.
    pub fn windowed_by_sliding(&self, windows: SlidingWindows) -> SlidingWindowedKStream<K, V> {
        SlidingWindowedKStream {
            grouped: KGroupedStream::new(self.stream.clone(), self.key.clone(), self.value.clone()),
            windows,
        }
    }
}

/// A grouped stream aggregated per sliding window.
///
/// Results come out per record, oldest window first: each window the
/// record went into with its new aggregate (stamped with the window's
/// latest record timestamp), and each window the record made exist. A
/// record is dropped as late (counted, and copied to the late records
/// topic if there is one) when no window it belongs to is still open; a
/// window `[start, end]` is open while `end + grace` is not before the
/// operator's stream time.
pub struct SlidingWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: SlidingWindows,
}

/// A window of one key as the store holds it, before this record.
struct Found<A> {
    start: i64,
    latest: i64,
    aggregate: A,
}

/// What processing one record writes to one window.
struct Write<A> {
    start: i64,
    latest: i64,
    old: Option<A>,
    new: A,
}

impl<K: Data, V: Data> SlidingWindowedKStream<K, V> {
    pub fn count(&self, stored: Stored) -> KTable<Windowed<K>, i64> {
        self.fold(stored, serdes::i64(), counting())
    }

    pub fn reduce(
        &self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        stored: Stored,
    ) -> KTable<Windowed<K>, V> {
        self.fold(stored, self.grouped.value.clone(), reducing(reducer))
    }

    pub fn aggregate<A: Data>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        aggregate: SerdeRef<A>,
        stored: Stored,
    ) -> KTable<Windowed<K>, A> {
        self.fold(stored, aggregate, aggregating(init, aggregator))
    }

    fn fold<A: Data>(
        &self,
        stored: Stored,
        aggregate: SerdeRef<A>,
        fold_in: FoldIn<K, V, A>,
    ) -> KTable<Windowed<K>, A> {
        let windows = self.windows;
        let store = self.grouped.store_spec(
            &stored,
            StoreKind::TimestampedWindow {
                retention_ms: windows.retention_ms(),
            },
            "KSTREAM-AGGREGATE",
        );
        let input = self.grouped.input(&store);
        let (key, value) = (self.grouped.key.clone(), self.grouped.value.clone());
        let agg_serde = aggregate.clone();
        let store_name = store.clone();
        let node = {
            let mut g = input.graph.borrow_mut();
            let name = g.name("KSTREAM-SLIDINGWINDOWAGGREGATE");
            g.add::<K, V, Windowed<K>, Change<A>, _>(
                name,
                &[input.node],
                vec![store.clone()],
                move |_, down| {
                    let (key, value, agg_serde, fold_in, store) = (
                        key.clone(),
                        value.clone(),
                        agg_serde.clone(),
                        fold_in.clone(),
                        store_name.clone(),
                    );
                    processor(move |ctx: &mut Ctx, r: Record<K, V>| {
                        let Some(kb) = encode_key(&key, &r.key, &store)? else {
                            ctx.metrics.records_skipped += 1;
                            return Ok(());
                        };
                        // Windows start at 0 or later, so a record before
                        // the epoch has none (Kafka fails the task on it).
                        if value.is_null(&r.value) || r.timestamp < 0 {
                            ctx.metrics.records_skipped += 1;
                            return Ok(());
                        }
                        let t = r.timestamp;
                        let diff = windows.diff_ms;
                        let now = ctx.observe(&store, t);
                        let close = now.saturating_sub(windows.grace_ms);
                        let is_open = |start: i64| start.saturating_add(diff) >= close;
                        let late = |ctx: &mut Ctx, kb: Vec<u8>| {
                            let v = value.serialize(&r.value).ok().flatten();
                            ctx.late(Some(kb), v, t, now);
                        };
                        // Every window holding `t` ends by `t + diff`.
                        if t.saturating_add(diff) < close {
                            late(ctx, kb);
                            return Ok(());
                        }
                        // Windows of this key past their retention go.
                        let expired_before = now.saturating_sub(windows.retention_ms());
                        let (low, high) =
                            store::window_range(&kb, i64::MIN, expired_before.saturating_sub(1));
                        for (k, _) in ctx.store(&store).range(&low, &high) {
                            ctx.store(&store).put(&k, None);
                        }
                        // The windows that can matter to `t`: those holding
                        // it, the one ending at its predecessor, and the
                        // ones starting right after each of them.
                        let (low, high) = store::window_range(
                            &kb,
                            t.saturating_sub(diff.saturating_mul(2)).max(0),
                            t.saturating_add(1),
                        );
                        let mut found = Vec::new();
                        for (k, v) in ctx.store(&store).range(&low, &high) {
                            let (Some((_, start, _)), Some((latest, bytes))) = (
                                store::split_window_key(&k),
                                store::split_timestamped_value(&v),
                            ) else {
                                return Err(store_error(
                                    &store,
                                    "a sliding window entry of the wrong length",
                                ));
                            };
                            let aggregate = agg_serde
                                .deserialize(Some(bytes))
                                .map_err(|e| store_error(&store, e))?;
                            found.push(Found {
                                start,
                                latest,
                                aggregate,
                            });
                        }
                        let writes = sliding_writes(&windows, t, &found, &is_open, |acc| {
                            fold_in(&r.key, acc, r.value.clone())
                        });
                        let took_record = writes.iter().any(|w| w.start <= t);
                        if !took_record {
                            late(ctx, kb.clone());
                        }
                        for w in writes {
                            let bytes =
                                encode(&agg_serde, &w.new, &format!("state store {store}"))?;
                            ctx.store(&store).put(
                                &store::window_key(&kb, w.start, 0),
                                Some(&store::timestamped_value(w.latest, &bytes)),
                            );
                            down.forward(
                                ctx,
                                Record {
                                    key: Windowed {
                                        key: r.key.clone(),
                                        window: Window {
                                            start_ms: w.start,
                                            end_ms: w.start + diff,
                                        },
                                    },
                                    value: Change {
                                        new: Some(w.new),
                                        old: w.old,
                                    },
                                    timestamp: w.latest,
                                    headers: r.headers.clone(),
                                },
                            )?;
                        }
                        Ok(())
                    })
                },
            )
        };
        // Queries show a window's end as its start plus the difference
        // (both ends inside).
        input.graph.borrow_mut().set_codec(
            &store,
            crate::store::codec(
                self.grouped.key.clone(),
                aggregate.clone(),
                Some(windows.diff_ms),
            ),
        );
        KTable::new(
            input.graph.clone(),
            node,
            Some(store),
            serdes::windowed(self.grouped.key.clone()),
            Some(aggregate),
            // Both ends are inside the window: it closes once stream time
            // is past `end + grace`, one ms later than a window whose end
            // is outside it.
            Some(WindowClose {
                grace_ms: windows.grace_ms.saturating_add(1),
            }),
        )
    }
}

/// What a record at `t` writes, oldest window first, given the key's
/// windows `found` (start in `[t - 2 * diff, t + 1]`, ascending) before
/// it. `add` folds the record into an aggregate (`None`: a new one).
///
/// Why each new window's aggregate is right, given that windows exist
/// exactly where records are (and only then):
/// - the window ending at `t` (if new) holds the records of
///   `[t - diff, t)`. If there are any, the latest of them, `p`, ends a
///   window; the existing window that ends last before `t` holds exactly
///   those records (a record before `t - diff` in it would have a window
///   starting right after it, ending before `t`, and starting later).
///   Its latest timestamp tells whether `p >= t - diff`.
/// - the window starting after the predecessor `p` (if new and `t` is in
///   it) held nothing before `t`: it would exist otherwise.
/// - the window starting after `t` (if new) holds the records of
///   `(t, t + 1 + diff]`, which the latest-starting window holding `t`
///   held before `t` came, if its latest record is after `t`.
fn sliding_writes<A: Clone>(
    windows: &SlidingWindows,
    t: i64,
    found: &[Found<A>],
    is_open: &dyn Fn(i64) -> bool,
    add: impl Fn(Option<A>) -> A,
) -> Vec<Write<A>> {
    let diff = windows.diff_ms;
    let exists = |start: i64| found.iter().any(|w| w.start == start);
    let holds_t = |w: &&Found<A>| w.start <= t && t <= w.start + diff;
    let mut writes = Vec::new();
    // Every open window already holding `t` takes it.
    for w in found.iter().filter(holds_t) {
        if is_open(w.start) {
            writes.push(Write {
                start: w.start,
                latest: w.latest.max(t),
                old: Some(w.aggregate.clone()),
                new: add(Some(w.aggregate.clone())),
            });
        }
    }
    // The window ending at `t`.
    let left = windows.left_start(t);
    if !exists(left) && is_open(left) {
        let before = found
            .iter()
            .rfind(|w| w.start + diff < t)
            .filter(|w| w.latest >= t - diff);
        writes.push(Write {
            start: left,
            latest: t,
            old: None,
            new: add(before.map(|w| w.aggregate.clone())),
        });
    }
    // The window right after the predecessor, now that `t` is in it.
    let predecessor = found.iter().map(|w| w.latest).filter(|&l| l < t).max();
    if let Some(p) = predecessor {
        let start = p + 1;
        if start + diff >= t && start != left && !exists(start) && is_open(start) {
            writes.push(Write {
                start,
                latest: t,
                old: None,
                new: add(None),
            });
        }
    }
    // The window right after `t`, if a later record is in it.
    let right = t.saturating_add(1);
    if !exists(right) {
        if let Some(w) = found.iter().rfind(holds_t) {
            if w.latest > t {
                writes.push(Write {
                    start: right,
                    latest: w.latest,
                    old: None,
                    new: w.aggregate.clone(),
                });
            }
        }
    }
    writes.sort_by_key(|w| w.start);
    writes
}
