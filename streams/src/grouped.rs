//! Grouped streams and their aggregations: per key (`count`, `reduce`,
//! `aggregate` into a [`KTable`]), per time window (tumbling and
//! hopping, with a grace period) and per session.
//!
//! Kafka Streams' null rules hold: a record whose key is null is skipped
//! (there is no group to put it in), and so is one whose value is null.

use std::sync::Arc;

use crate::kstream::KStream;
use crate::ktable::{KTable, WindowClose};
use crate::nodes::{decode, encode, encode_key, processor, store_error};
use crate::options::{add_store, Data, Stored};
use crate::processor::Ctx;
use crate::record::{Change, Record, Window, Windowed};
use crate::serdes::{self, SerdeRef};
use crate::store::{self, StoreKind};

/// A stream grouped by key, ready to aggregate.
pub struct KGroupedStream<K, V> {
    pub(crate) stream: KStream<K, V>,
    pub(crate) key: SerdeRef<K>,
    pub(crate) value: SerdeRef<V>,
}

/// How a new value folds into a group's aggregate (`None`: the group has
/// none yet).
pub(crate) type FoldIn<K, V, A> = Arc<dyn Fn(&K, Option<A>, V) -> A + Send + Sync>;

/// `count`'s fold: one more.
pub(crate) fn counting<K, V>() -> FoldIn<K, V, i64> {
    Arc::new(|_, acc: Option<i64>, _| acc.unwrap_or(0) + 1)
}

/// `reduce`'s fold: the first value as is, then `reducer`.
pub(crate) fn reducing<K, V: 'static>(
    reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
) -> FoldIn<K, V, V> {
    Arc::new(move |_, acc, v| match acc {
        None => v,
        Some(a) => reducer(a, v),
    })
}

/// `aggregate`'s fold: `aggregator` from `init()`.
pub(crate) fn aggregating<K, V, A>(
    init: impl Fn() -> A + Send + Sync + 'static,
    aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
) -> FoldIn<K, V, A> {
    Arc::new(move |k, acc, v| aggregator(k, v, acc.unwrap_or_else(&init)))
}

impl<K: Data, V: Data> KGroupedStream<K, V> {
    pub(crate) fn new(
        stream: KStream<K, V>,
        key: SerdeRef<K>,
        value: SerdeRef<V>,
    ) -> KGroupedStream<K, V> {
        KGroupedStream { stream, key, value }
    }

    /// The stream to aggregate: repartitioned by key first if an operator
    /// may have changed the keys.
    pub(crate) fn input(&self, store: &str) -> KStream<K, V> {
        if self.stream.key_changed {
            self.stream
                .repartition(Some(store), self.key.clone(), self.value.clone())
        } else {
            self.stream.clone()
        }
    }

    pub(crate) fn store_spec(&self, stored: &Stored, kind: StoreKind, prefix: &str) -> String {
        let mut g = self.stream.graph.borrow_mut();
        let spec = stored.spec(&mut g, kind, prefix);
        add_store(&mut g, spec)
    }

    /// The number of records per key.
    pub fn count(&self, stored: Stored) -> KTable<K, i64> {
        self.fold(stored, serdes::i64(), counting())
    }

    /// Each key's values combined with `reducer` (the first value as is).
    pub fn reduce(
        &self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        stored: Stored,
    ) -> KTable<K, V> {
        self.fold(stored, self.value.clone(), reducing(reducer))
    }

    /// Each key's values folded into an `A` that starts as `init()`.
    pub fn aggregate<A: Data>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        aggregate: SerdeRef<A>,
        stored: Stored,
    ) -> KTable<K, A> {
        self.fold(stored, aggregate, aggregating(init, aggregator))
    }

    fn fold<A: Data>(
        &self,
        stored: Stored,
        aggregate: SerdeRef<A>,
        fold_in: FoldIn<K, V, A>,
    ) -> KTable<K, A> {
        let store = self.store_spec(&stored, StoreKind::KeyValue, "KSTREAM-AGGREGATE");
        let input = self.input(&store);
        let (key, value) = (self.key.clone(), self.value.clone());
        let agg_serde = aggregate.clone();
        let store_name = store.clone();
        let node = {
            let mut g = input.graph.borrow_mut();
            let name = g.name("KSTREAM-AGGREGATE");
            g.add::<K, V, K, Change<A>, _>(
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
                        if value.is_null(&r.value) {
                            ctx.metrics.records_skipped += 1;
                            return Ok(());
                        }
                        let old = match ctx.store(&store).get(&kb) {
                            Some(b) => Some(decode(&agg_serde, &b, &store)?),
                            None => None,
                        };
                        let new = fold_in(&r.key, old.clone(), r.value);
                        let bytes = encode(&agg_serde, &new, &format!("state store {store}"))?;
                        ctx.store(&store).put(&kb, Some(&bytes));
                        down.forward(
                            ctx,
                            Record {
                                key: r.key,
                                value: Change {
                                    new: Some(new),
                                    old,
                                },
                                timestamp: r.timestamp,
                                headers: r.headers,
                            },
                        )
                    })
                },
            )
        };
        KTable::new(
            input.graph.clone(),
            node,
            Some(store),
            self.key.clone(),
            Some(aggregate),
            None,
        )
    }

    /// Aggregations per key and time window.
    pub fn windowed_by(&self, windows: TimeWindows) -> TimeWindowedKStream<K, V> {
        TimeWindowedKStream {
            grouped: KGroupedStream::new(self.stream.clone(), self.key.clone(), self.value.clone()),
            windows,
        }
    }

    /// Aggregations per key and session of activity.
    pub fn windowed_by_session(&self, windows: SessionWindows) -> SessionWindowedKStream<K, V> {
        SessionWindowedKStream {
            grouped: KGroupedStream::new(self.stream.clone(), self.key.clone(), self.value.clone()),
            windows,
        }
    }
}

/// Fixed-size windows: tumbling (advance = size) or hopping, aligned to
/// the epoch, each `[start, start + size)`; a record later than its
/// window's end plus the grace period is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindows {
    pub size_ms: i64,
    pub advance_ms: i64,
    pub grace_ms: i64,
}

impl TimeWindows {
    /// Tumbling windows of `size_ms` accepting records up to `grace_ms`
    /// after a window ends.
    pub fn of_size_with_grace(size_ms: i64, grace_ms: i64) -> TimeWindows {
        assert!(size_ms > 0, "a window's size must be positive");
        assert!(grace_ms >= 0, "a grace period cannot be negative");
        TimeWindows {
            size_ms,
            advance_ms: size_ms,
            grace_ms,
        }
    }

    /// Tumbling windows that close when they end.
    pub fn of_size_without_grace(size_ms: i64) -> TimeWindows {
        TimeWindows::of_size_with_grace(size_ms, 0)
    }

    /// Hopping windows: a new one every `advance_ms`.
    pub fn advance_by(mut self, advance_ms: i64) -> TimeWindows {
        assert!(
            advance_ms > 0 && advance_ms <= self.size_ms,
            "a window's advance must be positive and at most its size"
        );
        self.advance_ms = advance_ms;
        self
    }

    /// The windows `timestamp` falls in, oldest first.
    pub fn windows_for(&self, timestamp: i64) -> Vec<Window> {
        let mut start =
            (timestamp - self.size_ms + self.advance_ms).max(0) / self.advance_ms * self.advance_ms;
        let mut out = Vec::new();
        while start <= timestamp {
            out.push(Window {
                start_ms: start,
                end_ms: start + self.size_ms,
            });
            start += self.advance_ms;
        }
        out
    }
}

/// Sessions: a key's records no more than `gap_ms` apart form one
/// session `[first, last]`; a record that bridges two sessions merges
/// them. A session takes records until stream time reaches its end plus
/// the gap plus `grace_ms` (as in Kafka Streams); its results are
/// stamped with its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWindows {
    pub gap_ms: i64,
    pub grace_ms: i64,
}

impl SessionWindows {
    pub fn with_inactivity_gap_and_grace(gap_ms: i64, grace_ms: i64) -> SessionWindows {
        assert!(gap_ms > 0, "a session's inactivity gap must be positive");
        assert!(grace_ms >= 0, "a grace period cannot be negative");
        SessionWindows { gap_ms, grace_ms }
    }

    pub fn with_inactivity_gap_and_no_grace(gap_ms: i64) -> SessionWindows {
        SessionWindows::with_inactivity_gap_and_grace(gap_ms, 0)
    }
}

/// A grouped stream aggregated per time window.
pub struct TimeWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: TimeWindows,
}

impl<K: Data, V: Data> TimeWindowedKStream<K, V> {
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
        let retention_ms = windows.size_ms + windows.grace_ms;
        let store = self.grouped.store_spec(
            &stored,
            StoreKind::Window { retention_ms },
            "KSTREAM-AGGREGATE",
        );
        let input = self.grouped.input(&store);
        let (key, value) = (self.grouped.key.clone(), self.grouped.value.clone());
        let agg_serde = aggregate.clone();
        let store_name = store.clone();
        let node = {
            let mut g = input.graph.borrow_mut();
            let name = g.name("KSTREAM-WINDOWED-AGGREGATE");
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
                        if value.is_null(&r.value) {
                            ctx.metrics.records_skipped += 1;
                            return Ok(());
                        }
                        let now = ctx.observe(&store, r.timestamp);
                        let close = now.saturating_sub(windows.grace_ms);
                        let open: Vec<Window> = windows
                            .windows_for(r.timestamp)
                            .into_iter()
                            .filter(|w| w.end_ms > close)
                            .collect();
                        if open.is_empty() {
                            let v = value.serialize(&r.value).ok().flatten();
                            ctx.late(Some(kb), v, r.timestamp, now);
                            return Ok(());
                        }
                        // Windows of this key past their retention go.
                        let expired_before = now.saturating_sub(retention_ms);
                        let (low, high) =
                            store::window_range(&kb, i64::MIN, expired_before.saturating_sub(1));
                        let expired = ctx.store(&store).range(&low, &high);
                        for (k, _) in expired {
                            ctx.store(&store).put(&k, None);
                        }
                        for window in open {
                            let wk = store::window_key(&kb, window.start_ms, 0);
                            let old = match ctx.store(&store).get(&wk) {
                                Some(b) => Some(decode(&agg_serde, &b, &store)?),
                                None => None,
                            };
                            let new = fold_in(&r.key, old.clone(), r.value.clone());
                            let bytes = encode(&agg_serde, &new, &format!("state store {store}"))?;
                            ctx.store(&store).put(&wk, Some(&bytes));
                            down.forward(
                                ctx,
                                Record {
                                    key: Windowed {
                                        key: r.key.clone(),
                                        window,
                                    },
                                    value: Change {
                                        new: Some(new),
                                        old,
                                    },
                                    timestamp: r.timestamp,
                                    headers: r.headers.clone(),
                                },
                            )?;
                        }
                        Ok(())
                    })
                },
            )
        };
        input.graph.borrow_mut().set_codec(
            &store,
            crate::store::codec(
                self.grouped.key.clone(),
                aggregate.clone(),
                Some(windows.size_ms),
            ),
        );
        KTable::new(
            input.graph.clone(),
            node,
            Some(store),
            serdes::windowed(self.grouped.key.clone()),
            Some(aggregate),
            Some(WindowClose {
                grace_ms: windows.grace_ms,
            }),
        )
    }
}

/// A grouped stream aggregated per session.
pub struct SessionWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: SessionWindows,
}

/// How two sessions' aggregates combine when a record merges them.
type Merge<K, A> = Arc<dyn Fn(&K, A, A) -> A + Send + Sync>;

impl<K: Data, V: Data> SessionWindowedKStream<K, V> {
    pub fn count(&self, stored: Stored) -> KTable<Windowed<K>, i64> {
        self.fold(stored, serdes::i64(), counting(), Arc::new(|_, a, b| a + b))
    }

    pub fn reduce(
        &self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        stored: Stored,
    ) -> KTable<Windowed<K>, V> {
        let reducer = Arc::new(reducer);
        let merge = reducer.clone();
        self.fold(
            stored,
            self.grouped.value.clone(),
            reducing(move |a, b| reducer(a, b)),
            Arc::new(move |_, a, b| merge(a, b)),
        )
    }

    /// `merger` combines two sessions' aggregates when a record bridges
    /// them.
    pub fn aggregate<A: Data>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        merger: impl Fn(&K, A, A) -> A + Send + Sync + 'static,
        aggregate: SerdeRef<A>,
        stored: Stored,
    ) -> KTable<Windowed<K>, A> {
        self.fold(
            stored,
            aggregate,
            aggregating(init, aggregator),
            Arc::new(merger),
        )
    }

    fn fold<A: Data>(
        &self,
        stored: Stored,
        aggregate: SerdeRef<A>,
        fold_in: FoldIn<K, V, A>,
        merge: Merge<K, A>,
    ) -> KTable<Windowed<K>, A> {
        let windows = self.windows;
        let retention_ms = windows.gap_ms + windows.grace_ms;
        let store = self.grouped.store_spec(
            &stored,
            StoreKind::Session { retention_ms },
            "KSTREAM-AGGREGATE",
        );
        let input = self.grouped.input(&store);
        let (key, value) = (self.grouped.key.clone(), self.grouped.value.clone());
        let agg_serde = aggregate.clone();
        let store_name = store.clone();
        let node = {
            let mut g = input.graph.borrow_mut();
            let name = g.name("KSTREAM-SESSION-WINDOWED-AGGREGATE");
            g.add::<K, V, Windowed<K>, Change<A>, _>(
                name,
                &[input.node],
                vec![store.clone()],
                move |_, down| {
                    let (key, value, agg_serde, fold_in, merge, store) = (
                        key.clone(),
                        value.clone(),
                        agg_serde.clone(),
                        fold_in.clone(),
                        merge.clone(),
                        store_name.clone(),
                    );
                    processor(move |ctx: &mut Ctx, r: Record<K, V>| {
                        let Some(kb) = encode_key(&key, &r.key, &store)? else {
                            ctx.metrics.records_skipped += 1;
                            return Ok(());
                        };
                        if value.is_null(&r.value) {
                            ctx.metrics.records_skipped += 1;
                            return Ok(());
                        }
                        let ts = r.timestamp;
                        // A session can still grow by a record up to the
                        // gap after its end: it closes at end + gap + grace.
                        let now = ctx.observe(&store, ts);
                        let close = now
                            .saturating_sub(windows.gap_ms)
                            .saturating_sub(windows.grace_ms);
                        let (low, high) =
                            store::sessions_ending_from(&kb, ts.saturating_sub(windows.gap_ms));
                        let mut overlapping = Vec::new();
                        for (k, v) in ctx.store(&store).range(&low, &high) {
                            let Some((_, start, end)) = store::split_session_key(&k) else {
                                return Err(store_error(
                                    &store,
                                    "a session key of the wrong length",
                                ));
                            };
                            if start <= ts.saturating_add(windows.gap_ms) {
                                overlapping.push((
                                    k.clone(),
                                    start,
                                    end,
                                    decode(&agg_serde, &v, &store)?,
                                ));
                            }
                        }
                        let start = overlapping
                            .iter()
                            .map(|s| s.1)
                            .chain([ts])
                            .min()
                            .unwrap_or(ts);
                        let end = overlapping
                            .iter()
                            .map(|s| s.2)
                            .chain([ts])
                            .max()
                            .unwrap_or(ts);
                        if end < close {
                            let v = value.serialize(&r.value).ok().flatten();
                            ctx.late(Some(kb), v, ts, now);
                            return Ok(());
                        }
                        // Results are stamped with their session's end (its
                        // largest timestamp). A record landing on a session
                        // of just its own timestamp updates it in place.
                        let replaced = (start, end) != (ts, ts);
                        let mut acc: Option<A> = None;
                        for (stored_key, s_start, s_end, agg) in overlapping {
                            if replaced {
                                ctx.store(&store).put(&stored_key, None);
                                down.forward(
                                    ctx,
                                    Record {
                                        key: Windowed {
                                            key: r.key.clone(),
                                            window: Window {
                                                start_ms: s_start,
                                                end_ms: s_end,
                                            },
                                        },
                                        value: Change {
                                            new: None,
                                            old: Some(agg.clone()),
                                        },
                                        timestamp: s_end,
                                        headers: r.headers.clone(),
                                    },
                                )?;
                            }
                            acc = Some(match acc {
                                None => agg,
                                Some(a) => merge(&r.key, a, agg),
                            });
                        }
                        let new = fold_in(&r.key, acc, r.value);
                        let bytes = encode(&agg_serde, &new, &format!("state store {store}"))?;
                        ctx.store(&store)
                            .put(&store::session_key(&kb, start, end), Some(&bytes));
                        down.forward(
                            ctx,
                            Record {
                                key: Windowed {
                                    key: r.key,
                                    window: Window {
                                        start_ms: start,
                                        end_ms: end,
                                    },
                                },
                                value: Change {
                                    new: Some(new),
                                    old: None,
                                },
                                timestamp: end,
                                headers: r.headers,
                            },
                        )
                    })
                },
            )
        };
        input.graph.borrow_mut().set_codec(
            &store,
            crate::store::codec(self.grouped.key.clone(), aggregate.clone(), None),
        );
        KTable::new(
            input.graph.clone(),
            node,
            Some(store),
            serdes::windowed(self.grouped.key.clone()),
            Some(aggregate),
            Some(WindowClose {
                grace_ms: windows.gap_ms + windows.grace_ms,
            }),
        )
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    /// Groups by the current key (repartitioning first if an operator may
    /// have changed it).
    pub fn group_by_key(&self, key: SerdeRef<K>, value: SerdeRef<V>) -> KGroupedStream<K, V> {
        KGroupedStream::new(self.clone(), key, value)
    }

    /// Groups by a key computed from each record (always repartitions).
    pub fn group_by<K2: Data>(
        &self,
        f: impl Fn(&K, &V) -> K2 + Send + Sync + 'static,
        key: SerdeRef<K2>,
        value: SerdeRef<V>,
    ) -> KGroupedStream<K2, V> {
        self.select_key(f).group_by_key(key, value)
    }
}
