//! `KStream`: an unbounded sequence of records, and its stateless
//! operators (filter, map, flat_map, branch, merge, ...), sinks and
//! repartitioning.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use crate::ktable::KTable;
use crate::nodes::{processor, sink_node, source_node};
use crate::options::{Data, Produced};
use crate::processor::{Ctx, Downstream, StreamsError};
use crate::record::{Change, Record};
use crate::serdes::SerdeRef;
use crate::topology::{Graph, InternalPartitions, TopicName};

/// A branch's test in [`KStream::split`].
pub type Predicate<K, V> = Box<dyn Fn(&K, &V) -> bool + Send + Sync>;

/// A stream of records with keys `K` and values `V`.
pub struct KStream<K, V> {
    pub(crate) graph: Rc<RefCell<Graph>>,
    pub(crate) node: usize,
    /// Whether an operator may have changed the keys since the source: a
    /// grouping or join then repartitions first.
    pub(crate) key_changed: bool,
    _types: PhantomData<fn(K, V)>,
}

impl<K, V> Clone for KStream<K, V> {
    fn clone(&self) -> Self {
        KStream {
            graph: self.graph.clone(),
            node: self.node,
            key_changed: self.key_changed,
            _types: PhantomData,
        }
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    pub(crate) fn new(graph: Rc<RefCell<Graph>>, node: usize, key_changed: bool) -> KStream<K, V> {
        KStream {
            graph,
            node,
            key_changed,
            _types: PhantomData,
        }
    }

    /// Adds an operator taking this stream's records and making
    /// `Record<K2, V2>`s.
    pub(crate) fn then<K2: Data, V2: Data, F, P>(
        &self,
        kind: &str,
        key_changed: bool,
        make: F,
    ) -> KStream<K2, V2>
    where
        F: Fn() -> P + Send + Sync + 'static,
        P: FnMut(&mut Ctx, Record<K, V>, &Downstream<K2, V2>) -> Result<(), StreamsError> + 'static,
    {
        let node = {
            let mut g = self.graph.borrow_mut();
            let name = g.name(kind);
            g.add::<K, V, K2, V2, _>(name, &[self.node], Vec::new(), move |_, down| {
                let mut f = make();
                processor(move |ctx: &mut Ctx, r: Record<K, V>| f(ctx, r, &down))
            })
        };
        KStream::new(self.graph.clone(), node, self.key_changed || key_changed)
    }

    /// The records for which `predicate` holds.
    pub fn filter(
        &self,
        predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> KStream<K, V> {
        let predicate = Arc::new(predicate);
        self.then("KSTREAM-FILTER", false, move || {
            let p = predicate.clone();
            move |ctx: &mut Ctx, r: Record<K, V>, down: &Downstream<K, V>| {
                if p(&r.key, &r.value) {
                    down.forward(ctx, r)
                } else {
                    Ok(())
                }
            }
        })
    }

    /// The records for which `predicate` does not hold.
    pub fn filter_not(
        &self,
        predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> KStream<K, V> {
        self.filter(move |k, v| !predicate(k, v))
    }

    /// Each record's key and value replaced (the key may change: a
    /// grouping or join after this repartitions).
    pub fn map<K2: Data, V2: Data>(
        &self,
        f: impl Fn(K, V) -> (K2, V2) + Send + Sync + 'static,
    ) -> KStream<K2, V2> {
        let f = Arc::new(f);
        self.then("KSTREAM-MAP", true, move || {
            let f = f.clone();
            move |ctx: &mut Ctx, r: Record<K, V>, down: &Downstream<K2, V2>| {
                let (k, v) = f(r.key, r.value);
                down.forward(
                    ctx,
                    Record {
                        key: k,
                        value: v,
                        timestamp: r.timestamp,
                        headers: r.headers,
                    },
                )
            }
        })
    }

    /// Each record's value replaced; keys stay (no repartitioning).
    pub fn map_values<V2: Data>(
        &self,
        f: impl Fn(V) -> V2 + Send + Sync + 'static,
    ) -> KStream<K, V2> {
        self.map_values_with_key(move |_, v| f(v))
    }

    /// Each record's value replaced, seeing its key.
    pub fn map_values_with_key<V2: Data>(
        &self,
        f: impl Fn(&K, V) -> V2 + Send + Sync + 'static,
    ) -> KStream<K, V2> {
        let f = Arc::new(f);
        self.then("KSTREAM-MAPVALUES", false, move || {
            let f = f.clone();
            move |ctx: &mut Ctx, r: Record<K, V>, down: &Downstream<K, V2>| {
                let v = f(&r.key, r.value);
                down.forward(
                    ctx,
                    Record {
                        key: r.key,
                        value: v,
                        timestamp: r.timestamp,
                        headers: r.headers,
                    },
                )
            }
        })
    }

    /// Zero or more records per record.
    pub fn flat_map<K2: Data, V2: Data, I>(
        &self,
        f: impl Fn(K, V) -> I + Send + Sync + 'static,
    ) -> KStream<K2, V2>
    where
        I: IntoIterator<Item = (K2, V2)>,
    {
        let f = Arc::new(f);
        self.then("KSTREAM-FLATMAP", true, move || {
            let f = f.clone();
            move |ctx: &mut Ctx, r: Record<K, V>, down: &Downstream<K2, V2>| {
                for (k, v) in f(r.key, r.value) {
                    down.forward(
                        ctx,
                        Record {
                            key: k,
                            value: v,
                            timestamp: r.timestamp,
                            headers: r.headers.clone(),
                        },
                    )?;
                }
                Ok(())
            }
        })
    }

    /// Zero or more values per record, each with the record's key.
    pub fn flat_map_values<V2: Data, I>(
        &self,
        f: impl Fn(V) -> I + Send + Sync + 'static,
    ) -> KStream<K, V2>
    where
        I: IntoIterator<Item = V2>,
    {
        let f = Arc::new(f);
        self.then("KSTREAM-FLATMAPVALUES", false, move || {
            let f = f.clone();
            move |ctx: &mut Ctx, r: Record<K, V>, down: &Downstream<K, V2>| {
                for v in f(r.value) {
                    down.forward(
                        ctx,
                        Record {
                            key: r.key.clone(),
                            value: v,
                            timestamp: r.timestamp,
                            headers: r.headers.clone(),
                        },
                    )?;
                }
                Ok(())
            }
        })
    }

    /// Sees every record, changes nothing.
    pub fn peek(&self, f: impl Fn(&K, &V) + Send + Sync + 'static) -> KStream<K, V> {
        let f = Arc::new(f);
        self.then("KSTREAM-PEEK", false, move || {
            let f = f.clone();
            move |ctx: &mut Ctx, r: Record<K, V>, down: &Downstream<K, V>| {
                f(&r.key, &r.value);
                down.forward(ctx, r)
            }
        })
    }

    /// A new key for each record, computed from it.
    pub fn select_key<K2: Data>(
        &self,
        f: impl Fn(&K, &V) -> K2 + Send + Sync + 'static,
    ) -> KStream<K2, V> {
        let f = Arc::new(f);
        self.then("KSTREAM-KEY-SELECT", true, move || {
            let f = f.clone();
            move |ctx: &mut Ctx, r: Record<K, V>, down: &Downstream<K2, V>| {
                let k = f(&r.key, &r.value);
                down.forward(
                    ctx,
                    Record {
                        key: k,
                        value: r.value,
                        timestamp: r.timestamp,
                        headers: r.headers,
                    },
                )
            }
        })
    }

    /// Splits the stream: each record goes to the first branch whose
    /// predicate holds, or to the last stream returned (the default
    /// branch) if none does.
    pub fn split(&self, predicates: Vec<Predicate<K, V>>) -> Vec<KStream<K, V>> {
        let branches = predicates.len() + 1;
        let predicates = Arc::new(predicates);
        let split = {
            let mut g = self.graph.borrow_mut();
            let name = g.name("KSTREAM-BRANCH");
            g.add::<K, V, K, V, _>(name, &[self.node], Vec::new(), move |_, down| {
                let predicates = predicates.clone();
                // Children are the branches, in order (made right below).
                let children: Vec<Downstream<K, V>> =
                    down.0.into_iter().map(|c| Downstream(vec![c])).collect();
                processor(move |ctx: &mut Ctx, r: Record<K, V>| {
                    let i = predicates
                        .iter()
                        .position(|p| p(&r.key, &r.value))
                        .unwrap_or(predicates.len());
                    children[i].forward(ctx, r)
                })
            })
        };
        (0..branches)
            .map(|_| {
                let node = {
                    let mut g = self.graph.borrow_mut();
                    let name = g.name("KSTREAM-BRANCHCHILD");
                    g.add::<K, V, K, V, _>(name, &[split], Vec::new(), |_, down| {
                        processor(move |ctx: &mut Ctx, r: Record<K, V>| down.forward(ctx, r))
                    })
                };
                KStream::new(self.graph.clone(), node, self.key_changed)
            })
            .collect()
    }

    /// The records of both streams, as they come.
    pub fn merge(&self, other: &KStream<K, V>) -> KStream<K, V> {
        let node = {
            let mut g = self.graph.borrow_mut();
            let name = g.name("KSTREAM-MERGE");
            g.add::<K, V, K, V, _>(name, &[self.node, other.node], Vec::new(), |_, down| {
                processor(move |ctx: &mut Ctx, r: Record<K, V>| down.forward(ctx, r))
            })
        };
        KStream::new(
            self.graph.clone(),
            node,
            self.key_changed || other.key_changed,
        )
    }

    /// Writes every record to `topic`.
    pub fn to(&self, topic: &str, produced: Produced<K, V>) {
        sink_node(
            &self.graph,
            self.node,
            TopicName::External(topic.to_string()),
            produced.key,
            produced.value,
        );
    }

    /// Writes the stream through an internal topic
    /// (`<application.id>-<name>-repartition`) partitioned by its current
    /// key, and reads it back: downstream tasks see each key on one
    /// partition.
    pub fn repartition(
        &self,
        name: Option<&str>,
        key: SerdeRef<K>,
        value: SerdeRef<V>,
    ) -> KStream<K, V> {
        self.repartition_with(name, key, value, None)
    }

    pub(crate) fn repartition_with(
        &self,
        name: Option<&str>,
        key: SerdeRef<K>,
        value: SerdeRef<V>,
        partitions: Option<i32>,
    ) -> KStream<K, V> {
        let base = match name {
            Some(n) => n.to_string(),
            None => self.graph.borrow_mut().name("KSTREAM-REPARTITION"),
        };
        let topic = TopicName::Internal(format!("{base}-repartition"));
        {
            let mut g = self.graph.borrow_mut();
            let partitions =
                partitions.map_or(InternalPartitions::Writer, InternalPartitions::Fixed);
            if g.repartition_partitions
                .insert(format!("{base}-repartition"), partitions)
                .is_some()
            {
                g.errors.push(format!(
                    "repartition topic {base}-repartition is declared twice"
                ));
            }
        }
        sink_node(
            &self.graph,
            self.node,
            topic.clone(),
            key.clone(),
            value.clone(),
        );
        // Repartitioned records carry the event time they were written with.
        let node = source_node(&self.graph, vec![topic], key, value, None);
        KStream::new(self.graph.clone(), node, false)
    }
}

impl<K: Data, V: Data> KTable<K, V> {
    /// The table's updates as a stream: each row's new value (`None` for a
    /// deleted row).
    pub fn to_stream(&self) -> KStream<K, Option<V>> {
        let node = {
            let mut g = self.graph.borrow_mut();
            let name = g.name("KTABLE-TOSTREAM");
            g.add::<K, Change<V>, K, Option<V>, _>(
                name,
                &[self.node],
                Vec::new(),
                move |_, down| {
                    processor(move |ctx: &mut Ctx, r: Record<K, Change<V>>| {
                        down.forward(
                            ctx,
                            Record {
                                key: r.key,
                                value: r.value.new,
                                timestamp: r.timestamp,
                                headers: r.headers,
                            },
                        )
                    })
                },
            )
        };
        KStream::new(self.graph.clone(), node, false)
    }
}
