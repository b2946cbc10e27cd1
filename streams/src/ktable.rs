//! `KTable`: the latest value per key, as a stream of [`Change`]s, and
//! its operators (filter, map_values, to_stream, joins with another
//! table on the key, suppression of a windowed table's updates until its
//! windows close). Joins on a foreign key are in [`crate::fk_join`].

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use crate::nodes::{decode, encode_key, event_time, processor};
use crate::options::{add_store, Consumed, Data, Stored};
use crate::processor::{Ctx, Downstream, StreamsError};
use crate::record::{Change, Record, Windowed};
use crate::serdes::SerdeRef;
use crate::store::{self, StoreKind};
use crate::topology::{Graph, Raw, TopicName};

/// When the windows of a windowed table close: `end + grace_ms` (for
/// sessions, `grace_ms` includes the inactivity gap).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowClose {
    pub grace_ms: i64,
}

/// A table: the latest value per key.
pub struct KTable<K, V> {
    pub(crate) graph: Rc<RefCell<Graph>>,
    pub(crate) node: usize,
    /// The store holding the table, if it is materialized.
    pub(crate) store: Option<String>,
    pub(crate) key: SerdeRef<K>,
    /// The values' serde, where known.
    pub(crate) value: Option<SerdeRef<V>>,
    pub(crate) windows: Option<WindowClose>,
    _types: PhantomData<fn(K, V)>,
}

impl<K, V> Clone for KTable<K, V> {
    fn clone(&self) -> Self {
        KTable {
            graph: self.graph.clone(),
            node: self.node,
            store: self.store.clone(),
            key: self.key.clone(),
            value: self.value.clone(),
            windows: self.windows,
            _types: PhantomData,
        }
    }
}

fn store_bytes<V: 'static>(
    serde: &SerdeRef<V>,
    value: &V,
    store: &str,
) -> Result<Option<Vec<u8>>, StreamsError> {
    serde
        .serialize(value)
        .map_err(|error| StreamsError::Serialize {
            what: "value",
            target: format!("state store {store}"),
            error,
        })
}

impl<K: Data, V: Data> KTable<K, V> {
    pub(crate) fn new(
        graph: Rc<RefCell<Graph>>,
        node: usize,
        store: Option<String>,
        key: SerdeRef<K>,
        value: Option<SerdeRef<V>>,
        windows: Option<WindowClose>,
    ) -> KTable<K, V> {
        // A materialized table answers queries with its own serdes (a
        // windowed one's store is keyed by the inner key: its
        // aggregation says so itself).
        if let (Some(store), Some(v), None) = (&store, &value, windows) {
            graph
                .borrow_mut()
                .set_codec(store, crate::store::codec(key.clone(), v.clone(), None));
        }
        KTable {
            graph,
            node,
            store,
            key,
            value,
            windows,
            _types: PhantomData,
        }
    }

    /// The name of the store that holds this table, if it has one
    /// (source tables and aggregations do).
    pub fn store_name(&self) -> Option<&str> {
        self.store.as_deref()
    }

    pub(crate) fn from_topic(
        graph: &Rc<RefCell<Graph>>,
        topic: &str,
        consumed: Consumed<K, V>,
        stored: Stored,
    ) -> KTable<K, V> {
        let graph = graph.clone();
        let store = {
            let mut g = graph.borrow_mut();
            let spec = stored.spec(&mut g, StoreKind::KeyValue, "KTABLE-SOURCE");
            add_store(&mut g, spec)
        };
        let (key, value) = (consumed.key.clone(), consumed.value.clone());
        let timestamp = consumed.timestamp.clone();
        let store_name = store.clone();
        let node = {
            let mut g = graph.borrow_mut();
            let name = g.name("KTABLE-SOURCE");
            let node = g.add::<Raw, Raw, K, Change<V>, _>(
                name,
                &[],
                vec![store.clone()],
                move |_, down| {
                    let (key, value, store, timestamp) = (
                        key.clone(),
                        value.clone(),
                        store_name.clone(),
                        timestamp.clone(),
                    );
                    processor(move |ctx: &mut Ctx, r: Record<Raw, Raw>| {
                        let deserialize = |ctx: &Ctx, what, error| StreamsError::Deserialize {
                            what,
                            topic: ctx.origin.topic.to_string(),
                            partition: ctx.origin.partition,
                            offset: ctx.origin.offset,
                            error,
                        };
                        let Some(kb) = r.key else {
                            // A table row needs a key.
                            ctx.metrics.records_skipped += 1;
                            return Ok(());
                        };
                        let k = key
                            .deserialize(Some(&kb))
                            .map_err(|e| deserialize(ctx, "key", e))?;
                        let new = match &r.value {
                            Some(b) => Some(
                                value
                                    .deserialize(Some(b))
                                    .map_err(|e| deserialize(ctx, "value", e))?,
                            ),
                            None => None,
                        };
                        let ts = match &new {
                            Some(v) => event_time(ctx, timestamp.as_ref(), &k, v, r.timestamp),
                            // A tombstone has no value to extract a time from.
                            None => {
                                ctx.stream_time = ctx.stream_time.max(r.timestamp);
                                Some(r.timestamp)
                            }
                        };
                        let Some(ts) = ts else {
                            return Ok(());
                        };
                        let old = match ctx.store(&store).get(&kb) {
                            Some(b) => Some(decode(&value, &b, &store)?),
                            None => None,
                        };
                        if old.is_none() && new.is_none() {
                            return Ok(());
                        }
                        ctx.store(&store).put(&kb, r.value.as_deref());
                        down.forward(
                            ctx,
                            Record {
                                key: k,
                                value: Change { new, old },
                                timestamp: ts,
                                headers: r.headers,
                            },
                        )
                    })
                },
            );
            g.nodes[node].sources = vec![TopicName::External(topic.to_string())];
            node
        };
        KTable::new(
            graph,
            node,
            Some(store),
            consumed.key,
            Some(consumed.value),
            None,
        )
    }

    fn then<V2: Data, F, P>(&self, kind: &str, stores: Vec<String>, make: F) -> usize
    where
        F: Fn() -> P + Send + Sync + 'static,
        P: FnMut(
                &mut Ctx,
                Record<K, Change<V>>,
                &Downstream<K, Change<V2>>,
            ) -> Result<(), StreamsError>
            + 'static,
    {
        let mut g = self.graph.borrow_mut();
        let name = g.name(kind);
        g.add::<K, Change<V>, K, Change<V2>, _>(name, &[self.node], stores, move |_, down| {
            let mut f = make();
            processor(move |ctx: &mut Ctx, r: Record<K, Change<V>>| f(ctx, r, &down))
        })
    }

    /// The rows for which `predicate` holds (a row that stops matching is
    /// deleted downstream).
    pub fn filter(
        &self,
        predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> KTable<K, V> {
        let predicate = Arc::new(predicate);
        let node = self.then("KTABLE-FILTER", Vec::new(), move || {
            let p = predicate.clone();
            move |ctx: &mut Ctx, r: Record<K, Change<V>>, down: &Downstream<K, Change<V>>| {
                let keep = |v: Option<V>| v.filter(|v| p(&r.key, v));
                let change = Change {
                    new: keep(r.value.new.clone()),
                    old: keep(r.value.old.clone()),
                };
                if change.new.is_none() && change.old.is_none() {
                    return Ok(());
                }
                down.forward(ctx, Record { value: change, ..r })
            }
        });
        KTable::new(
            self.graph.clone(),
            node,
            None,
            self.key.clone(),
            self.value.clone(),
            self.windows,
        )
    }

    /// The rows for which `predicate` does not hold.
    pub fn filter_not(
        &self,
        predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> KTable<K, V> {
        self.filter(move |k, v| !predicate(k, v))
    }

    /// Each row's value replaced.
    pub fn map_values<V2: Data>(
        &self,
        f: impl Fn(&K, &V) -> V2 + Send + Sync + 'static,
    ) -> KTable<K, V2> {
        let f = Arc::new(f);
        let node = self.then("KTABLE-MAPVALUES", Vec::new(), move || {
            let f = f.clone();
            move |ctx: &mut Ctx, r: Record<K, Change<V>>, down: &Downstream<K, Change<V2>>| {
                let change = Change {
                    new: r.value.new.as_ref().map(|v| f(&r.key, v)),
                    old: r.value.old.as_ref().map(|v| f(&r.key, v)),
                };
                down.forward(
                    ctx,
                    Record {
                        key: r.key,
                        value: change,
                        timestamp: r.timestamp,
                        headers: r.headers,
                    },
                )
            }
        });
        KTable::new(
            self.graph.clone(),
            node,
            None,
            self.key.clone(),
            None,
            self.windows,
        )
    }

    /// Keeps the table in a store of its own (needed to join with a table
    /// that has none, e.g. after `filter`), with `value` for its values.
    pub fn materialize(&self, stored: Stored, value: SerdeRef<V>) -> KTable<K, V> {
        let store = {
            let mut g = self.graph.borrow_mut();
            let spec = stored.spec(&mut g, StoreKind::KeyValue, "KTABLE-MATERIALIZE");
            add_store(&mut g, spec)
        };
        let (key, serde, name) = (self.key.clone(), value.clone(), store.clone());
        let node = self.then("KTABLE-MATERIALIZE", vec![store.clone()], move || {
            let (key, serde, store) = (key.clone(), serde.clone(), name.clone());
            move |ctx: &mut Ctx, r: Record<K, Change<V>>, down: &Downstream<K, Change<V>>| {
                let Some(kb) = encode_key(&key, &r.key, &store)? else {
                    ctx.metrics.records_skipped += 1;
                    return Ok(());
                };
                let bytes = match &r.value.new {
                    Some(v) => store_bytes(&serde, v, &store)?,
                    None => None,
                };
                ctx.store(&store).put(&kb, bytes.as_deref());
                down.forward(ctx, r)
            }
        });
        KTable::new(
            self.graph.clone(),
            node,
            Some(store),
            self.key.clone(),
            Some(value),
            self.windows,
        )
    }

    /// The store and the values' serde of a table a join reads, or an
    /// error for the topology.
    pub(crate) fn lookup(&self, what: &str) -> Option<(String, SerdeRef<V>)> {
        match (&self.store, &self.value) {
            (Some(s), Some(v)) => Some((s.clone(), v.clone())),
            _ => {
                self.graph.borrow_mut().errors.push(format!(
                    "{what} reads a table that has no store of its own (after filter or map_values): call materialize on it first"
                ));
                None
            }
        }
    }

    /// Inner join with another table on the key: a row exists while both
    /// sides have one.
    pub fn join<V2: Data, R: Data>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(&V, &V2) -> R + Send + Sync + 'static,
    ) -> KTable<K, R> {
        self.join_tables(
            other,
            "KTABLE-JOIN",
            Arc::new(move |l: Option<&V>, r: Option<&V2>| match (l, r) {
                (Some(l), Some(r)) => Some(joiner(l, r)),
                _ => None,
            }),
        )
    }

    /// Left join: a row exists while this side has one.
    pub fn left_join<V2: Data, R: Data>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(&V, Option<&V2>) -> R + Send + Sync + 'static,
    ) -> KTable<K, R> {
        self.join_tables(
            other,
            "KTABLE-LEFTJOIN",
            Arc::new(move |l: Option<&V>, r: Option<&V2>| l.map(|l| joiner(l, r))),
        )
    }

    /// Outer join: a row exists while either side has one.
    pub fn outer_join<V2: Data, R: Data>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(Option<&V>, Option<&V2>) -> R + Send + Sync + 'static,
    ) -> KTable<K, R> {
        self.join_tables(
            other,
            "KTABLE-OUTERJOIN",
            Arc::new(move |l: Option<&V>, r: Option<&V2>| {
                if l.is_none() && r.is_none() {
                    None
                } else {
                    Some(joiner(l, r))
                }
            }),
        )
    }

    #[allow(clippy::type_complexity)] // the joiner over both sides' optional rows
    fn join_tables<V2: Data, R: Data>(
        &self,
        other: &KTable<K, V2>,
        kind: &str,
        joiner: Arc<dyn Fn(Option<&V>, Option<&V2>) -> Option<R> + Send + Sync>,
    ) -> KTable<K, R> {
        let (Some((left_store, left_serde)), Some((right_store, right_serde))) =
            (self.lookup(kind), other.lookup(kind))
        else {
            // Reported by `build`; a placeholder keeps the DSL going.
            return KTable::new(
                self.graph.clone(),
                self.node,
                None,
                self.key.clone(),
                None,
                None,
            );
        };
        let stores = vec![left_store.clone(), right_store.clone()];
        let key = self.key.clone();
        let mut g = self.graph.borrow_mut();
        // Each side looks up the other's row when its own changes.
        let left = {
            let name = g.name(&format!("{kind}-THIS"));
            let (key, joiner, store, serde) = (
                key.clone(),
                joiner.clone(),
                right_store.clone(),
                right_serde.clone(),
            );
            g.add::<K, Change<V>, K, Change<R>, _>(
                name,
                &[self.node],
                stores.clone(),
                move |_, down| {
                    let (key, joiner, store, serde) =
                        (key.clone(), joiner.clone(), store.clone(), serde.clone());
                    processor(move |ctx: &mut Ctx, r: Record<K, Change<V>>| {
                        let Some(kb) = encode_key(&key, &r.key, &store)? else {
                            return Ok(());
                        };
                        let other = match ctx.store(&store).get(&kb) {
                            Some(b) => Some(decode(&serde, &b, &store)?),
                            None => None,
                        };
                        let change = Change {
                            new: joiner(r.value.new.as_ref(), other.as_ref()),
                            old: joiner(r.value.old.as_ref(), other.as_ref()),
                        };
                        if change.new.is_none() && change.old.is_none() {
                            return Ok(());
                        }
                        down.forward(
                            ctx,
                            Record {
                                key: r.key,
                                value: change,
                                timestamp: r.timestamp,
                                headers: r.headers,
                            },
                        )
                    })
                },
            )
        };
        let right = {
            let name = g.name(&format!("{kind}-OTHER"));
            let (key, joiner, store, serde) = (
                key.clone(),
                joiner.clone(),
                left_store.clone(),
                left_serde.clone(),
            );
            g.add::<K, Change<V2>, K, Change<R>, _>(
                name,
                &[other.node],
                stores.clone(),
                move |_, down| {
                    let (key, joiner, store, serde) =
                        (key.clone(), joiner.clone(), store.clone(), serde.clone());
                    processor(move |ctx: &mut Ctx, r: Record<K, Change<V2>>| {
                        let Some(kb) = encode_key(&key, &r.key, &store)? else {
                            return Ok(());
                        };
                        let this = match ctx.store(&store).get(&kb) {
                            Some(b) => Some(decode(&serde, &b, &store)?),
                            None => None,
                        };
                        let change = Change {
                            new: joiner(this.as_ref(), r.value.new.as_ref()),
                            old: joiner(this.as_ref(), r.value.old.as_ref()),
                        };
                        if change.new.is_none() && change.old.is_none() {
                            return Ok(());
                        }
                        down.forward(
                            ctx,
                            Record {
                                key: r.key,
                                value: change,
                                timestamp: r.timestamp,
                                headers: r.headers,
                            },
                        )
                    })
                },
            )
        };
        let name = g.name(&format!("{kind}-MERGE"));
        let merged =
            g.add::<K, Change<R>, K, Change<R>, _>(name, &[left, right], Vec::new(), |_, down| {
                processor(move |ctx: &mut Ctx, r: Record<K, Change<R>>| down.forward(ctx, r))
            });
        drop(g);
        KTable::new(
            self.graph.clone(),
            merged,
            None,
            self.key.clone(),
            None,
            None,
        )
    }
}

impl<K: Data, V: Data> KTable<Windowed<K>, V> {
    /// Holds back a windowed table's updates until each window closes
    /// (its end plus the grace period has passed in stream time), then
    /// emits one final result per window. Kafka Streams'
    /// `suppress(untilWindowCloses(unbounded()))`. The buffer is a store
    /// with a changelog, so results survive a restart.
    pub fn suppress_until_window_closes(&self, stored: Stored) -> KTable<Windowed<K>, V> {
        let (Some(windows), Some(value)) = (self.windows, self.value.clone()) else {
            self.graph.borrow_mut().errors.push(
                "suppress_until_window_closes needs a windowed aggregation's table".to_string(),
            );
            return self.clone();
        };
        let store = {
            let mut g = self.graph.borrow_mut();
            let spec = stored.spec(&mut g, StoreKind::KeyValue, "KTABLE-SUPPRESS");
            add_store(&mut g, spec)
        };
        let (key, name) = (self.key.clone(), store.clone());
        let node = self.then("KTABLE-SUPPRESS", vec![store.clone()], move || {
            let (key, value, store) = (key.clone(), value.clone(), name.clone());
            move |ctx: &mut Ctx,
                  r: Record<Windowed<K>, Change<V>>,
                  down: &Downstream<Windowed<K>, Change<V>>| {
                // Buffer key: window end, then the windowed key (so the
                // buffer empties in the order windows close).
                let Some(wk) = encode_key(&key, &r.key, &store)? else {
                    return Ok(());
                };
                let mut bk = store::window_key(&[], r.key.window.end_ms, 0);
                bk.extend_from_slice(&wk);
                match &r.value.new {
                    Some(v) => {
                        let Some(vb) = store_bytes(&value, v, &store)? else {
                            return Ok(());
                        };
                        let mut entry = r.timestamp.to_be_bytes().to_vec();
                        entry.extend_from_slice(&vb);
                        ctx.store(&store).put(&bk, Some(&entry));
                    }
                    None => ctx.store(&store).put(&bk, None),
                }
                // Emit every window that has closed.
                let now = ctx.observe(&store, r.timestamp);
                let close = now.saturating_sub(windows.grace_ms);
                loop {
                    let first = ctx.store(&store).range_from(&[], 64);
                    if first.is_empty() {
                        return Ok(());
                    }
                    for (bk, entry) in first {
                        let Some((_, end, _)) = store::split_window_key(&bk[..16.min(bk.len())])
                        else {
                            return Err(StreamsError::Store {
                                store: store.clone(),
                                error: "a suppression buffer key of the wrong length".into(),
                            });
                        };
                        if end > close {
                            return Ok(());
                        }
                        if entry.len() < 8 {
                            return Err(StreamsError::Store {
                                store: store.clone(),
                                error: "a suppression buffer entry of the wrong length".into(),
                            });
                        }
                        let ts = i64::from_be_bytes(entry[..8].try_into().expect("8 bytes"));
                        let k = decode(&key, &bk[16..], &store)?;
                        let v = decode(&value, &entry[8..], &store)?;
                        ctx.store(&store).put(&bk, None);
                        down.forward(
                            ctx,
                            Record {
                                key: k,
                                value: Change {
                                    new: Some(v),
                                    old: None,
                                },
                                timestamp: ts,
                                headers: Vec::new(),
                            },
                        )?;
                    }
                }
            }
        });
        KTable::new(
            self.graph.clone(),
            node,
            None,
            self.key.clone(),
            self.value.clone(),
            self.windows,
        )
    }
}
