//! `KStream`: an unbounded sequence of records, and its stateless
//! operators (filter, map, flat_map, branch, merge, ...), sinks and
//! repartitioning.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use crate::builder::{Data, Produced};
use crate::grouped::KGroupedStream;
use crate::processor::{Ctx, Downstream, Handle, Processor, StreamsError};
use crate::record::Record;
use crate::serdes::SerdeRef;
use crate::topology::{Graph, Raw, TopicName};

/// A branch's test in [`KStream::split`].
pub type Predicate<K, V> = Box<dyn Fn(&K, &V) -> bool + Send + Sync>;

/// A processor made of a closure.
pub(crate) struct FnProcessor<K, V, F>(F, PhantomData<fn(K, V)>);

impl<K, V, F> Processor<K, V> for FnProcessor<K, V, F>
where
    F: FnMut(&mut Ctx, Record<K, V>) -> Result<(), StreamsError>,
{
    fn process(&mut self, ctx: &mut Ctx, record: Record<K, V>) -> Result<(), StreamsError> {
        (self.0)(ctx, record)
    }
}

/// A handle around a closure processor.
pub(crate) fn processor<K: 'static, V: 'static>(
    f: impl FnMut(&mut Ctx, Record<K, V>) -> Result<(), StreamsError> + 'static,
) -> Handle<K, V> {
    Rc::new(RefCell::new(FnProcessor(f, PhantomData)))
}

/// Adds a source node reading `topics` and decoding with the serdes.
pub(crate) fn source_node<K: Data, V: Data>(
    graph: &Rc<RefCell<Graph>>,
    topics: Vec<TopicName>,
    key: SerdeRef<K>,
    value: SerdeRef<V>,
) -> usize {
    let mut g = graph.borrow_mut();
    let name = g.name("KSTREAM-SOURCE");
    let node = g.add::<Raw, Raw, K, V, _>(name, &[], Vec::new(), move |_, down| {
        let (key, value) = (key.clone(), value.clone());
        processor(move |ctx: &mut Ctx, r: Record<Raw, Raw>| {
            let deserialize = |what, e| StreamsError::Deserialize {
                what,
                topic: ctx.origin.topic.to_string(),
                partition: ctx.origin.partition,
                offset: ctx.origin.offset,
                error: e,
            };
            let k = key
                .deserialize(r.key.as_deref())
                .map_err(|e| deserialize("key", e))?;
            let v = value
                .deserialize(r.value.as_deref())
                .map_err(|e| deserialize("value", e))?;
            down.forward(
                ctx,
                Record {
                    key: k,
                    value: v,
                    timestamp: r.timestamp,
                    headers: r.headers,
                },
            )
        })
    });
    g.nodes[node].sources = topics;
    node
}

/// Adds a sink node writing to `topic`.
pub(crate) fn sink_node<K: Data, V: Data>(
    graph: &Rc<RefCell<Graph>>,
    parent: usize,
    topic: TopicName,
    key: SerdeRef<K>,
    value: SerdeRef<V>,
) -> usize {
    let mut g = graph.borrow_mut();
    let name = g.name("KSTREAM-SINK");
    let sink_topic = topic.clone();
    let node = g.add::<K, V, (), (), _>(name, &[parent], Vec::new(), move |build, _| {
        let (key, value) = (key.clone(), value.clone());
        let topic = sink_topic.resolve(build.application_id);
        processor(move |ctx: &mut Ctx, r: Record<K, V>| {
            let serialize = |what, e| StreamsError::Serialize {
                what,
                target: format!("topic {topic}"),
                error: e,
            };
            let k = key.serialize(&r.key).map_err(|e| serialize("key", e))?;
            let v = value
                .serialize(&r.value)
                .map_err(|e| serialize("value", e))?;
            ctx.emit(crate::processor::Output {
                topic: topic.clone(),
                partition: None,
                key: k,
                value: v,
                timestamp: r.timestamp,
                headers: r.headers,
            });
            Ok(())
        })
    });
    g.nodes[node].sink = Some(topic);
    node
}

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
        let node = source_node(&self.graph, vec![topic], key, value);
        KStream::new(self.graph.clone(), node, false)
    }

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
