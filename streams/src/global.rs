//! Global tables (Kafka Streams' `GlobalKTable`): a topic held whole,
//! every partition of it, by every instance, in a global store no task
//! owns; and the stream joins that read one.
//!
//! A global store is not split into tasks and its topic is not part of
//! the consumer group's assignment: whoever runs the topology (the
//! runtime's stream thread, the test driver) reads every partition of the
//! topic into the store ([`GlobalStores`]) and hands every task of every
//! sub-topology a handle on it. So a stream joins a global table on any
//! key it computes from a record (a key mapper) with neither
//! co-partitioning nor a repartition topic: whichever task processes a
//! record finds every row. The price is a copy of the whole topic per
//! instance.
//!
//! The topic is the store's changelog: a global store has no changelog
//! topic of its own and is restored by reading its topic (from the
//! offsets a clean close checkpointed, or from the beginning into an
//! emptied store). Rows are the topic's bytes as they are; a record
//! without a key is no row, one with a null value deletes its key, and a
//! record the table's serdes cannot read is not stored (the error
//! handling decides whether that stops the application).
//!
//! A stream–global table join follows Kafka Streams: only stream records
//! trigger it (a table update changes the store, nothing downstream); the
//! key mapper gets every stream record, one with a null key too
//! (KIP-962); a null mapped key finds no row, so an inner join drops the
//! record (counted in `records_skipped`) and a left join joins it with
//! `None`; the result keeps the stream record's key, timestamp and
//! headers.
//!
//! Who calls this: [`crate::StreamsBuilder::global_table`] and the joins
//! on [`KStream`] build; [`crate::TopologyTestDriver`] and the runtime's
//! global consumer (`global_updater.rs`) keep the stores up to date.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use crate::join::forward_joined;
use crate::kstream::KStream;
use crate::nodes::{decode, encode_key, processor};
use crate::options::{add_store, Consumed, Data, Stored};
use crate::processor::{Ctx, StreamsError};
use crate::record::Record;
use crate::serdes::SerdeRef;
use crate::store::{MemoryEngine, SharedEngine, StateStore, StoreEngine, StoreKind, StoreSpec};
use crate::topology::{ErrorHandling, GlobalCheck, GlobalSource, Graph, Topology};

/// A table of the latest value per key of a whole topic, held by every
/// instance (see the module docs).
pub struct GlobalKTable<K, V> {
    pub(crate) graph: Rc<RefCell<Graph>>,
    pub(crate) store: String,
    pub(crate) key: SerdeRef<K>,
    pub(crate) value: SerdeRef<V>,
    _types: PhantomData<fn(K, V)>,
}

impl<K, V> Clone for GlobalKTable<K, V> {
    fn clone(&self) -> Self {
        GlobalKTable {
            graph: self.graph.clone(),
            store: self.store.clone(),
            key: self.key.clone(),
            value: self.value.clone(),
            _types: PhantomData,
        }
    }
}

impl<K: Data, V: Data> GlobalKTable<K, V> {
    /// The global store holding the table (queryable by that name on
    /// every instance).
    pub fn store_name(&self) -> &str {
        &self.store
    }

    /// A global table of `topic`. `consumed`'s timestamp extractor, if
    /// any, is not used: a global table's rows have no time that matters
    /// (the stream record's time is the join result's).
    pub(crate) fn from_topic(
        graph: &Rc<RefCell<Graph>>,
        topic: &str,
        consumed: Consumed<K, V>,
        stored: Stored,
    ) -> GlobalKTable<K, V> {
        let (key, value) = (consumed.key, consumed.value);
        let mut g = graph.borrow_mut();
        let mut spec = stored.spec(&mut g, StoreKind::KeyValue, "GLOBALKTABLE-SOURCE");
        // The topic is the store's changelog.
        spec.logged = false;
        let store = add_store(&mut g, spec);
        g.set_codec(
            &store,
            crate::store::codec(key.clone(), value.clone(), None),
        );
        let (k, v) = (key.clone(), value.clone());
        let check: GlobalCheck = Arc::new(move |kb: &[u8], vb: Option<&[u8]>| {
            k.deserialize(Some(kb)).map_err(|e| ("key", e))?;
            if let Some(vb) = vb {
                v.deserialize(Some(vb)).map_err(|e| ("value", e))?;
            }
            Ok(())
        });
        g.globals.insert(
            store.clone(),
            GlobalSource {
                topic: topic.to_string(),
                check,
            },
        );
        drop(g);
        GlobalKTable {
            graph: graph.clone(),
            store,
            key,
            value,
            _types: PhantomData,
        }
    }
}

/// A key mapper: the global table's key a stream record joins on.
type KeyMapper<K, V, GK> = Arc<dyn Fn(&K, &V) -> GK + Send + Sync>;

/// A joiner over the row found, if any; `None` drops the record.
type RowJoiner<V, GV, R> = Arc<dyn Fn(&V, Option<&GV>) -> Option<R> + Send + Sync>;

impl<K: Data, V: Data> KStream<K, V> {
    /// Each record joined with the global table's row for the key
    /// `key_mapper` gives it; records with no row (or a null mapped key)
    /// are dropped. No co-partitioning needed: every task sees the whole
    /// table.
    pub fn join_global<GK: Data, GV: Data, R: Data>(
        &self,
        table: &GlobalKTable<GK, GV>,
        key_mapper: impl Fn(&K, &V) -> GK + Send + Sync + 'static,
        joiner: impl Fn(&V, &GV) -> R + Send + Sync + 'static,
    ) -> KStream<K, R> {
        self.global_join(
            table,
            "KSTREAM-GLOBALJOIN",
            Arc::new(key_mapper),
            Arc::new(move |v: &V, row: Option<&GV>| row.map(|row| joiner(v, row))),
        )
    }

    /// Each record joined with the global table's row for the key
    /// `key_mapper` gives it, or with `None` when there is none (or the
    /// mapped key is null).
    pub fn left_join_global<GK: Data, GV: Data, R: Data>(
        &self,
        table: &GlobalKTable<GK, GV>,
        key_mapper: impl Fn(&K, &V) -> GK + Send + Sync + 'static,
        joiner: impl Fn(&V, Option<&GV>) -> R + Send + Sync + 'static,
    ) -> KStream<K, R> {
        self.global_join(
            table,
            "KSTREAM-GLOBALLEFTJOIN",
            Arc::new(key_mapper),
            Arc::new(move |v: &V, row: Option<&GV>| Some(joiner(v, row))),
        )
    }

    fn global_join<GK: Data, GV: Data, R: Data>(
        &self,
        table: &GlobalKTable<GK, GV>,
        kind: &str,
        key_mapper: KeyMapper<K, V, GK>,
        joiner: RowJoiner<V, GV, R>,
    ) -> KStream<K, R> {
        if !Rc::ptr_eq(&self.graph, &table.graph) {
            self.graph.borrow_mut().errors.push(format!(
                "a stream joins global table {} of another StreamsBuilder",
                table.store
            ));
            return KStream::new(self.graph.clone(), self.node, self.key_changed);
        }
        let left = kind == "KSTREAM-GLOBALLEFTJOIN";
        let (store, key, value) = (table.store.clone(), table.key.clone(), table.value.clone());
        let node = {
            let mut g = self.graph.borrow_mut();
            let name = g.name(kind);
            let node = g.add::<K, V, K, R, _>(name, &[self.node], Vec::new(), move |_, down| {
                let (store, key, value) = (store.clone(), key.clone(), value.clone());
                let (key_mapper, joiner) = (key_mapper.clone(), joiner.clone());
                processor(move |ctx: &mut Ctx, r: Record<K, V>| {
                    let mapped = key_mapper(&r.key, &r.value);
                    let row = match encode_key(&key, &mapped, &store)? {
                        Some(kb) => match ctx.global(&store)?.get(&kb) {
                            Some(b) => Some(decode(&value, &b, &store)?),
                            None => None,
                        },
                        // A null mapped key finds no row: a left join
                        // keeps the record, an inner one drops it.
                        None if left => None,
                        None => {
                            ctx.metrics.records_skipped += 1;
                            return Ok(());
                        }
                    };
                    forward_joined(ctx, &down, r, row.as_ref(), &*joiner)
                })
            });
            g.nodes[node].globals = vec![table.store.clone()];
            node
        };
        // The keys are the stream's own: a later grouping or join on them
        // needs a repartition only if it needed one before.
        KStream::new(self.graph.clone(), node, self.key_changed)
    }
}

/// One global store as its keeper holds it.
struct Global {
    topic: String,
    check: GlobalCheck,
    engine: SharedEngine,
    store: StateStore,
}

/// A record of a global topic on its way into the store.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// An instance's global stores, kept up to date by whoever runs the
/// topology; tasks read them through handles on the same engines
/// ([`crate::Task::attach_global_stores`]).
#[derive(Default)]
pub struct GlobalStores {
    stores: BTreeMap<String, Global>,
}

impl GlobalStores {
    /// The topology's global stores, in memory.
    pub fn in_memory(topology: &Topology) -> GlobalStores {
        GlobalStores::open(topology, |_| Box::<MemoryEngine>::default())
    }

    /// The topology's global stores on the engines `engine` makes.
    pub fn open(
        topology: &Topology,
        mut engine: impl FnMut(&StoreSpec) -> Box<dyn StoreEngine>,
    ) -> GlobalStores {
        let mut stores = BTreeMap::new();
        for name in topology.global_stores().keys() {
            let (Some(spec), Some(source)) =
                (topology.store_spec(name), topology.global_source(name))
            else {
                continue;
            };
            let engine = SharedEngine::new(engine(spec));
            let store = StateStore::new(spec.clone(), Box::new(engine.clone()));
            stores.insert(
                name.clone(),
                Global {
                    topic: source.topic.clone(),
                    check: source.check.clone(),
                    engine,
                    store,
                },
            );
        }
        GlobalStores { stores }
    }

    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }

    pub fn store(&self, name: &str) -> Option<&StateStore> {
        self.stores.get(name).map(|g| &g.store)
    }

    pub fn store_mut(&mut self, name: &str) -> Option<&mut StateStore> {
        self.stores.get_mut(name).map(|g| &mut g.store)
    }

    pub fn store_names(&self) -> impl Iterator<Item = &str> {
        self.stores.keys().map(String::as_str)
    }

    /// Each global topic and the store that holds it.
    pub fn topics(&self) -> impl Iterator<Item = (&str, &str)> {
        self.stores
            .iter()
            .map(|(name, g)| (g.topic.as_str(), name.as_str()))
    }

    /// Whether `topic` feeds a global store.
    pub fn reads(&self, topic: &str) -> bool {
        self.stores.values().any(|g| g.topic == topic)
    }

    /// A handle on each store for a task (same engines, no changelog),
    /// by name ([`crate::Task::attach_global_stores`]).
    pub fn handles(&self) -> BTreeMap<String, StateStore> {
        self.stores
            .iter()
            .map(|(name, g)| {
                let store = StateStore::new(g.store.spec.clone(), Box::new(g.engine.clone()));
                (name.clone(), store)
            })
            .collect()
    }

    /// Writes records of `topic` into its store, in order, at once: a
    /// record with a value is a row, one without deletes its key, one
    /// without a key is skipped. A record the table's serdes cannot read
    /// is returned as the error under [`ErrorHandling::Fail`] (nothing of
    /// the batch is written then) and logged and skipped otherwise.
    /// Returns how many records were written.
    pub fn apply(
        &mut self,
        topic: &str,
        records: &[GlobalRecord],
        on_error: &ErrorHandling,
    ) -> Result<u64, StreamsError> {
        let Some(global) = self.stores.values_mut().find(|g| g.topic == topic) else {
            return Err(StreamsError::Processing(format!(
                "topic {topic} feeds no global store"
            )));
        };
        let mut batch = Vec::with_capacity(records.len());
        for r in records {
            let Some(key) = &r.key else {
                tracing::warn!(
                    topic,
                    partition = r.partition,
                    offset = r.offset,
                    "a global table record without a key; skipped"
                );
                continue;
            };
            if let Err((what, error)) = (global.check)(key, r.value.as_deref()) {
                let error = StreamsError::Deserialize {
                    what,
                    topic: topic.to_string(),
                    partition: r.partition,
                    offset: r.offset,
                    error,
                };
                if *on_error == ErrorHandling::Fail {
                    return Err(error);
                }
                tracing::warn!(%error, "a global table record did not deserialize; skipped");
                continue;
            }
            batch.push((key.clone(), r.value.clone()));
        }
        global.store.restore_batch(&batch);
        Ok(batch.len() as u64)
    }

    /// The first engine error of any global store.
    pub fn failure(&self) -> Option<String> {
        self.stores
            .iter()
            .find_map(|(name, g)| g.store.failure().map(|e| format!("{name}: {e}")))
    }
}
