//! Joins of a stream: with a table (each stream record looks up the
//! table's current row) and with another stream within a time window
//! (both sides buffered in window stores).
//!
//! Kafka Streams' semantics: records with a null key or value do not
//! join (they are skipped and counted), except that the outer side of a
//! left or outer join passes a record with a null key (and a value) on
//! at once without a partner; a stream–table join is triggered
//! by the stream side only; a stream–stream left or outer join emits a
//! record without a partner only once its window has closed (no
//! premature `(v, null)` followed by `(v, w)`), and joined results carry
//! the larger of the two timestamps.

use std::sync::Arc;

use crate::kstream::KStream;
use crate::ktable::KTable;
use crate::nodes::{decode, encode_key, processor};
use crate::options::{add_store, Data};
use crate::processor::{Ctx, Downstream, StreamsError};
use crate::record::Record;
use crate::serdes::SerdeRef;
use crate::store::{self, StoreKind, StoreSpec};

/// How far apart two records of a stream–stream join may be: the other
/// side's record may be up to `before_ms` earlier or `after_ms` later;
/// records are accepted up to `grace_ms` after their window closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindows {
    pub before_ms: i64,
    pub after_ms: i64,
    pub grace_ms: i64,
}

impl JoinWindows {
    pub fn of_time_difference_with_grace(difference_ms: i64, grace_ms: i64) -> JoinWindows {
        assert!(
            difference_ms >= 0 && grace_ms >= 0,
            "join windows cannot be negative"
        );
        JoinWindows {
            before_ms: difference_ms,
            after_ms: difference_ms,
            grace_ms,
        }
    }

    pub fn of_time_difference_and_no_grace(difference_ms: i64) -> JoinWindows {
        JoinWindows::of_time_difference_with_grace(difference_ms, 0)
    }

    pub fn before(mut self, before_ms: i64) -> JoinWindows {
        self.before_ms = before_ms;
        self
    }

    pub fn after(mut self, after_ms: i64) -> JoinWindows {
        self.after_ms = after_ms;
        self
    }
}

/// The serdes (and optionally the store name prefix) of a stream–stream
/// join's buffers.
pub struct StreamJoined<K, V, V2> {
    pub(crate) key: SerdeRef<K>,
    pub(crate) this: SerdeRef<V>,
    pub(crate) other: SerdeRef<V2>,
    pub(crate) name: Option<String>,
}

impl<K, V, V2> StreamJoined<K, V, V2> {
    pub fn with(
        key: SerdeRef<K>,
        this: SerdeRef<V>,
        other: SerdeRef<V2>,
    ) -> StreamJoined<K, V, V2> {
        StreamJoined {
            key,
            this,
            other,
            name: None,
        }
    }

    /// Names the buffers `<name>-this-join-store` and
    /// `<name>-other-join-store`.
    pub fn with_name(mut self, name: &str) -> StreamJoined<K, V, V2> {
        self.name = Some(name.to_string());
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Inner,
    Left,
    Outer,
}

type Joiner<V, V2, R> = Arc<dyn Fn(Option<&V>, Option<&V2>) -> R + Send + Sync>;

impl<K: Data, V: Data> KStream<K, V> {
    /// Each record joined with the table's current row for its key;
    /// records with no row are dropped.
    pub fn join_table<V2: Data, R: Data>(
        &self,
        table: &KTable<K, V2>,
        key: SerdeRef<K>,
        joiner: impl Fn(&V, &V2) -> R + Send + Sync + 'static,
    ) -> KStream<K, R> {
        self.table_join(
            table,
            key,
            false,
            Arc::new(move |v: &V, t: Option<&V2>| t.map(|t| joiner(v, t))),
        )
    }

    /// Each record joined with the table's current row for its key, or
    /// with `None` if there is none (or its key is null).
    pub fn left_join_table<V2: Data, R: Data>(
        &self,
        table: &KTable<K, V2>,
        key: SerdeRef<K>,
        joiner: impl Fn(&V, Option<&V2>) -> R + Send + Sync + 'static,
    ) -> KStream<K, R> {
        self.table_join(
            table,
            key,
            true,
            Arc::new(move |v: &V, t: Option<&V2>| Some(joiner(v, t))),
        )
    }

    #[allow(clippy::type_complexity)] // the joiner over the optional row
    fn table_join<V2: Data, R: Data>(
        &self,
        table: &KTable<K, V2>,
        key: SerdeRef<K>,
        left: bool,
        joiner: Arc<dyn Fn(&V, Option<&V2>) -> Option<R> + Send + Sync>,
    ) -> KStream<K, R> {
        let Some((store, serde)) = table.lookup("a stream-table join") else {
            return KStream::new(self.graph.clone(), self.node, self.key_changed);
        };
        let stream = if self.key_changed {
            // The records must meet the table's partition of their key.
            let mut g = self.graph.borrow_mut();
            g.errors.push(
                "a stream whose keys may have changed joins a table: repartition it first (KStream::repartition with the table's key serde)"
                    .to_string(),
            );
            drop(g);
            self.clone()
        } else {
            self.clone()
        };
        let kind = if left {
            "KSTREAM-LEFTJOIN"
        } else {
            "KSTREAM-JOIN"
        };
        let node = {
            let mut g = stream.graph.borrow_mut();
            let name = g.name(kind);
            g.add::<K, V, K, R, _>(name, &[stream.node], vec![store.clone()], move |_, down| {
                let (key, serde, store, joiner) =
                    (key.clone(), serde.clone(), store.clone(), joiner.clone());
                processor(move |ctx: &mut Ctx, r: Record<K, V>| {
                    let row = match encode_key(&key, &r.key, &store)? {
                        Some(kb) => match ctx.store(&store).get(&kb) {
                            Some(b) => Some(decode(&serde, &b, &store)?),
                            None => None,
                        },
                        // A left join keeps a record with a null key (it
                        // has no row); an inner join drops it.
                        None if left => None,
                        None => {
                            ctx.metrics.records_skipped += 1;
                            return Ok(());
                        }
                    };
                    forward_joined(ctx, &down, r, row.as_ref(), &*joiner)
                })
            })
        };
        KStream::new(stream.graph.clone(), node, false)
    }

    /// Inner join with another stream: a result for each pair of records
    /// with the same key within `windows`.
    pub fn join<V2: Data, R: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(&V, &V2) -> R + Send + Sync + 'static,
        windows: JoinWindows,
        serdes: StreamJoined<K, V, V2>,
    ) -> KStream<K, R> {
        self.stream_join(
            other,
            Mode::Inner,
            Arc::new(move |a: Option<&V>, b: Option<&V2>| match (a, b) {
                (Some(a), Some(b)) => joiner(a, b),
                // Inner joins only ever call with both sides.
                _ => unreachable!("an inner join result without both sides"),
            }),
            windows,
            serdes,
        )
    }

    /// Left join: also each record of this stream that found no partner
    /// by the time its window closed, with `None`.
    pub fn left_join<V2: Data, R: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(&V, Option<&V2>) -> R + Send + Sync + 'static,
        windows: JoinWindows,
        serdes: StreamJoined<K, V, V2>,
    ) -> KStream<K, R> {
        self.stream_join(
            other,
            Mode::Left,
            Arc::new(move |a: Option<&V>, b: Option<&V2>| match a {
                Some(a) => joiner(a, b),
                None => unreachable!("a left join result without its left side"),
            }),
            windows,
            serdes,
        )
    }

    /// Outer join: also each record of either stream that found no
    /// partner by the time its window closed.
    pub fn outer_join<V2: Data, R: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(Option<&V>, Option<&V2>) -> R + Send + Sync + 'static,
        windows: JoinWindows,
        serdes: StreamJoined<K, V, V2>,
    ) -> KStream<K, R> {
        self.stream_join(other, Mode::Outer, Arc::new(joiner), windows, serdes)
    }

    fn stream_join<V2: Data, R: Data>(
        &self,
        other: &KStream<K, V2>,
        mode: Mode,
        joiner: Joiner<V, V2, R>,
        windows: JoinWindows,
        serdes: StreamJoined<K, V, V2>,
    ) -> KStream<K, R> {
        if self.key_changed || other.key_changed {
            self.graph.borrow_mut().errors.push(
                "a stream-stream join of a stream whose keys may have changed: repartition it first".to_string(),
            );
        }
        let retention_ms = windows.before_ms + windows.after_ms + windows.grace_ms;
        let (this_store, other_store, pending_store) = {
            let mut g = self.graph.borrow_mut();
            let base = match &serdes.name {
                Some(n) => n.clone(),
                None => g.name("KSTREAM-JOIN"),
            };
            let window = |name: String| StoreSpec {
                name,
                kind: StoreKind::Window { retention_ms },
                logged: true,
            };
            let this = add_store(&mut g, window(format!("{base}-this-join-store")));
            let other = add_store(&mut g, window(format!("{base}-other-join-store")));
            let pending = add_store(
                &mut g,
                StoreSpec {
                    name: format!("{base}-outer-shared-join-store"),
                    kind: StoreKind::KeyValue,
                    logged: true,
                },
            );
            (this, other, pending)
        };
        let stores = vec![
            this_store.clone(),
            other_store.clone(),
            pending_store.clone(),
        ];
        let shared = Arc::new(JoinShared {
            key: serdes.key.clone(),
            this: serdes.this.clone(),
            other: serdes.other.clone(),
            joiner,
            windows,
            mode,
            this_store,
            other_store,
            pending_store,
        });
        let mut g = self.graph.borrow_mut();
        let left = {
            let name = g.name("KSTREAM-JOINTHIS");
            let shared = shared.clone();
            g.add::<K, V, K, R, _>(name, &[self.node], stores.clone(), move |_, down| {
                let shared = shared.clone();
                processor(move |ctx: &mut Ctx, r: Record<K, V>| {
                    let mut out = Vec::new();
                    shared.this_side(ctx, r, &mut out)?;
                    for record in out {
                        down.forward(ctx, record)?;
                    }
                    Ok(())
                })
            })
        };
        let right = {
            let name = g.name("KSTREAM-JOINOTHER");
            let shared = shared.clone();
            g.add::<K, V2, K, R, _>(name, &[other.node], stores.clone(), move |_, down| {
                let shared = shared.clone();
                processor(move |ctx: &mut Ctx, r: Record<K, V2>| {
                    let mut out = Vec::new();
                    shared.other_side(ctx, r, &mut out)?;
                    for record in out {
                        down.forward(ctx, record)?;
                    }
                    Ok(())
                })
            })
        };
        let name = g.name("KSTREAM-JOIN-MERGE");
        let merged = g.add::<K, R, K, R, _>(name, &[left, right], Vec::new(), |_, down| {
            processor(move |ctx: &mut Ctx, r: Record<K, R>| down.forward(ctx, r))
        });
        drop(g);
        KStream::new(self.graph.clone(), merged, false)
    }
}

/// Both sides of one stream–stream join.
struct JoinShared<K, V, V2, R> {
    key: SerdeRef<K>,
    this: SerdeRef<V>,
    other: SerdeRef<V2>,
    joiner: Joiner<V, V2, R>,
    windows: JoinWindows,
    mode: Mode,
    this_store: String,
    other_store: String,
    pending_store: String,
}

const THIS: u8 = 0;
const OTHER: u8 = 1;

/// A pending (not yet joined) record's key: its time first so the
/// pending store empties in time order.
/// A stream record joined with the table row its key found (`None`: no
/// row) and forwarded with the stream's key, time and headers, unless the
/// joiner drops it (stream–table and stream–global-table joins).
pub(crate) fn forward_joined<K: Data, V, V2, R: Data>(
    ctx: &mut Ctx,
    down: &Downstream<K, R>,
    r: Record<K, V>,
    row: Option<&V2>,
    joiner: &dyn Fn(&V, Option<&V2>) -> Option<R>,
) -> Result<(), StreamsError> {
    match joiner(&r.value, row) {
        Some(value) => down.forward(
            ctx,
            Record {
                key: r.key,
                value,
                timestamp: r.timestamp,
                headers: r.headers,
            },
        ),
        None => Ok(()),
    }
}

fn pending_key(side: u8, buffered: &[u8], timestamp: i64) -> Vec<u8> {
    let mut k = store::window_key(&[], timestamp, 0);
    k.push(side);
    k.extend_from_slice(buffered);
    k
}

/// The window store key for a record to buffer: its offset as sequence
/// number, moved past any entry already there (a record of another topic
/// of the same side at the same offset, key and time: both must stay).
fn free_window_key(ctx: &mut Ctx, store: &str, kb: &[u8], timestamp: i64) -> Vec<u8> {
    let mut seq = ctx.origin.offset as u32;
    loop {
        let key = store::window_key(kb, timestamp, seq);
        if ctx.store(store).get(&key).is_none() {
            return key;
        }
        seq = seq.wrapping_add(1);
    }
}

fn value_bytes<T: 'static>(
    serde: &SerdeRef<T>,
    v: &T,
    store: &str,
) -> Result<Option<Vec<u8>>, StreamsError> {
    serde.serialize(v).map_err(|error| StreamsError::Serialize {
        what: "value",
        target: format!("state store {store}"),
        error,
    })
}

impl<K: Data, V: Data, V2: Data, R: Data> JoinShared<K, V, V2, R> {
    fn this_side(
        &self,
        ctx: &mut Ctx,
        r: Record<K, V>,
        out: &mut Vec<Record<K, R>>,
    ) -> Result<(), StreamsError> {
        // Both sides of the join share one stream time.
        let now = ctx.observe(&self.pending_store, r.timestamp);
        let key = encode_key(&self.key, &r.key, &self.this_store)?;
        let Some(vb) = value_bytes(&self.this, &r.value, &self.this_store)? else {
            ctx.metrics.records_skipped += 1;
            return Ok(());
        };
        let Some(kb) = key else {
            // A null key never joins: a left or outer join passes the
            // record on at once without a partner, an inner one drops it.
            if self.mode == Mode::Inner {
                ctx.metrics.records_skipped += 1;
            } else {
                let value = (self.joiner)(Some(&r.value), None);
                out.push(Record {
                    key: r.key,
                    value,
                    timestamp: r.timestamp,
                    headers: r.headers,
                });
            }
            return Ok(());
        };
        let ts = r.timestamp;
        let w = self.windows;
        if ts + w.after_ms + w.grace_ms < now {
            ctx.late(Some(kb), Some(vb), ts, now);
            return Ok(());
        }
        let own = free_window_key(ctx, &self.this_store, &kb, ts);
        ctx.store(&self.this_store).put(&own, Some(&vb));
        let (low, high) = store::window_range(&kb, ts - w.before_ms, ts + w.after_ms);
        let matches = ctx.store(&self.other_store).range(&low, &high);
        for (k, b) in &matches {
            let (_, other_ts, _) =
                store::split_window_key(k).ok_or_else(|| self.bad_key(&self.other_store))?;
            let o = decode(&self.other, b, &self.other_store)?;
            out.push(Record {
                key: r.key.clone(),
                value: (self.joiner)(Some(&r.value), Some(&o)),
                timestamp: ts.max(other_ts),
                headers: r.headers.clone(),
            });
            if self.mode == Mode::Outer {
                ctx.store(&self.pending_store)
                    .put(&pending_key(OTHER, k, other_ts), None);
            }
        }
        if matches.is_empty() && self.mode != Mode::Inner {
            ctx.store(&self.pending_store)
                .put(&pending_key(THIS, &own, ts), Some(&vb));
        }
        self.expire(ctx, &kb, now, out)
    }

    fn other_side(
        &self,
        ctx: &mut Ctx,
        r: Record<K, V2>,
        out: &mut Vec<Record<K, R>>,
    ) -> Result<(), StreamsError> {
        // Both sides of the join share one stream time.
        let now = ctx.observe(&self.pending_store, r.timestamp);
        let key = encode_key(&self.key, &r.key, &self.other_store)?;
        let Some(vb) = value_bytes(&self.other, &r.value, &self.other_store)? else {
            ctx.metrics.records_skipped += 1;
            return Ok(());
        };
        let Some(kb) = key else {
            // As on this side: only an outer join keeps the other side's
            // records without a key.
            if self.mode == Mode::Outer {
                let value = (self.joiner)(None, Some(&r.value));
                out.push(Record {
                    key: r.key,
                    value,
                    timestamp: r.timestamp,
                    headers: r.headers,
                });
            } else {
                ctx.metrics.records_skipped += 1;
            }
            return Ok(());
        };
        let ts = r.timestamp;
        let w = self.windows;
        // Seen from the other side, the window is mirrored.
        if ts + w.before_ms + w.grace_ms < now {
            ctx.late(Some(kb), Some(vb), ts, now);
            return Ok(());
        }
        let own = free_window_key(ctx, &self.other_store, &kb, ts);
        ctx.store(&self.other_store).put(&own, Some(&vb));
        let (low, high) = store::window_range(&kb, ts - w.after_ms, ts + w.before_ms);
        let matches = ctx.store(&self.this_store).range(&low, &high);
        for (k, b) in &matches {
            let (_, this_ts, _) =
                store::split_window_key(k).ok_or_else(|| self.bad_key(&self.this_store))?;
            let t = decode(&self.this, b, &self.this_store)?;
            out.push(Record {
                key: r.key.clone(),
                value: (self.joiner)(Some(&t), Some(&r.value)),
                timestamp: ts.max(this_ts),
                headers: r.headers.clone(),
            });
            if self.mode != Mode::Inner {
                ctx.store(&self.pending_store)
                    .put(&pending_key(THIS, k, this_ts), None);
            }
        }
        if matches.is_empty() && self.mode == Mode::Outer {
            ctx.store(&self.pending_store)
                .put(&pending_key(OTHER, &own, ts), Some(&vb));
        }
        self.expire(ctx, &kb, now, out)
    }

    fn bad_key(&self, store: &str) -> StreamsError {
        StreamsError::Store {
            store: store.to_string(),
            error: "a join buffer key of the wrong length".into(),
        }
    }

    /// Emits the pending records whose windows have closed, and drops
    /// this key's buffered records that no window can reach any more.
    fn expire(
        &self,
        ctx: &mut Ctx,
        kb: &[u8],
        now: i64,
        out: &mut Vec<Record<K, R>>,
    ) -> Result<(), StreamsError> {
        let w = self.windows;
        if self.mode != Mode::Inner {
            let earliest_close = w.after_ms.min(w.before_ms) + w.grace_ms;
            'scan: loop {
                let batch = ctx.store(&self.pending_store).range_from(&[], 64);
                if batch.is_empty() {
                    break;
                }
                let mut emitted = 0;
                for (pk, vb) in batch {
                    let bad = || StreamsError::Store {
                        store: self.pending_store.clone(),
                        error: "a pending join key of the wrong length".into(),
                    };
                    let (_, ts, _) =
                        store::split_window_key(pk.get(..16).ok_or_else(bad)?).ok_or_else(bad)?;
                    if ts + earliest_close >= now {
                        break 'scan;
                    }
                    let side = *pk.get(16).ok_or_else(bad)?;
                    let buffered = &pk[17..];
                    let (key_bytes, _, _) = store::split_window_key(buffered).ok_or_else(bad)?;
                    let closes = if side == THIS {
                        ts + w.after_ms + w.grace_ms
                    } else {
                        ts + w.before_ms + w.grace_ms
                    };
                    if closes >= now {
                        continue;
                    }
                    let key = decode(&self.key, key_bytes, &self.pending_store)?;
                    let value = if side == THIS {
                        let v = decode(&self.this, &vb, &self.pending_store)?;
                        (self.joiner)(Some(&v), None)
                    } else {
                        let v = decode(&self.other, &vb, &self.pending_store)?;
                        (self.joiner)(None, Some(&v))
                    };
                    ctx.store(&self.pending_store).put(&pk, None);
                    emitted += 1;
                    out.push(Record {
                        key,
                        value,
                        timestamp: ts,
                        headers: Vec::new(),
                    });
                }
                if emitted == 0 {
                    break;
                }
            }
        }
        let horizon = now.saturating_sub(w.before_ms + w.after_ms + w.grace_ms);
        for store in [&self.this_store, &self.other_store] {
            let (low, high) = store::window_range(kb, i64::MIN, horizon.saturating_sub(1));
            for (k, _) in ctx.store(store).range(&low, &high) {
                ctx.store(store).put(&k, None);
            }
        }
        Ok(())
    }
}
