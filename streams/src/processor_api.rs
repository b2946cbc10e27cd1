//! The Processor API: user code as an operator of a topology, for what
//! the DSL does not say (Kafka Streams' `KStream#process` with a
//! `ProcessorContext`).
//!
//! A [`UserProcessor`] gets the records of a stream one at a time and
//! forwards what it likes; through its [`ProcessorContext`] it reads and
//! writes the key-value stores declared with it (changelogged like every
//! store) and schedules punctuators: callbacks run on the task's stream
//! time or on the wall clock, with the same context, e.g. to emit and
//! clear what a store gathered every minute. Each task makes its own
//! processor with the supplier given to [`KStream::process`]; one task's
//! processor runs on one thread, so punctuators need not be `Send`, and
//! state they share with their processor lives in its stores (or in an
//! `Rc<RefCell<_>>` both hold).
//!
//! ```
//! use runnel_streams::processor_api::{ProcessorContext, PunctuationType, UserProcessor};
//! use runnel_streams::{serdes, Consumed, Produced, Record, Stored, StreamsBuilder, StreamsError};
//!
//! /// Counts per key, emitted and cleared every 10 s of stream time.
//! struct Batch;
//!
//! impl UserProcessor<String, String, String, i64> for Batch {
//!     fn init(&mut self, ctx: &mut ProcessorContext<'_, String, i64>) -> Result<(), StreamsError> {
//!         ctx.schedule(10_000, PunctuationType::StreamTime, |ctx, now| {
//!             let counts = ctx.typed_store("counts", &serdes::string(), &serdes::i64())?.all()?;
//!             for (key, n) in counts {
//!                 ctx.forward(Record::new(key.clone(), n, now))?;
//!                 ctx.typed_store("counts", &serdes::string(), &serdes::i64())?.delete(&key)?;
//!             }
//!             Ok(())
//!         })?;
//!         Ok(())
//!     }
//!
//!     fn process(
//!         &mut self,
//!         ctx: &mut ProcessorContext<'_, String, i64>,
//!         r: Record<String, String>,
//!     ) -> Result<(), StreamsError> {
//!         let mut counts = ctx.typed_store("counts", &serdes::string(), &serdes::i64())?;
//!         let n = counts.get(&r.key)?.unwrap_or(0);
//!         counts.put(&r.key, &(n + 1))
//!     }
//! }
//!
//! let builder = StreamsBuilder::new();
//! builder
//!     .stream("events", Consumed::with(serdes::string(), serdes::string()))
//!     .process(|| Batch, vec![Stored::as_("counts")])
//!     .to("batches", Produced::with(serdes::string(), serdes::i64()));
//! assert!(builder.build().is_ok());
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use crate::kstream::KStream;
use crate::nodes::{decode, encode, encode_key};
use crate::options::{add_store, Data, Stored};
pub use crate::processor::{Cancellable, Origin, PunctuationType};
use crate::processor::{Ctx, Downstream, Handle, Processor, StreamsError};
use crate::record::Record;
use crate::serdes::SerdeRef;
use crate::store::{StateStore, StoreKind};
use crate::topology::InitHook;

/// An operator written by the application.
pub trait UserProcessor<K, V, KO, VO> {
    /// Called once per task before its first record or punctuation (after
    /// its stores are restored): the place to schedule punctuators.
    fn init(&mut self, ctx: &mut ProcessorContext<'_, KO, VO>) -> Result<(), StreamsError> {
        let _ = ctx;
        Ok(())
    }

    /// Called for each record of the stream.
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, KO, VO>,
        record: Record<K, V>,
    ) -> Result<(), StreamsError>;
}

/// What a user processor (or one of its punctuators) can do in its task.
pub struct ProcessorContext<'a, KO, VO> {
    ctx: &'a mut Ctx,
    down: &'a Downstream<KO, VO>,
    stores: &'a Rc<[String]>,
}

impl<KO: Data, VO: Data> ProcessorContext<'_, KO, VO> {
    /// Hands `record` to the operators after this one.
    pub fn forward(&mut self, record: Record<KO, VO>) -> Result<(), StreamsError> {
        self.down.forward(self.ctx, record)
    }

    /// The task's stream time: the largest event time it has processed.
    pub fn stream_time(&self) -> i64 {
        self.ctx.stream_time()
    }

    /// The wall-clock time the task last saw, milliseconds since the epoch.
    pub fn wall_clock_time(&self) -> i64 {
        self.ctx.wall_clock_time()
    }

    pub fn partition(&self) -> i32 {
        self.ctx.partition()
    }

    /// Where the record being processed came from (in a punctuator: an
    /// empty topic and offset -1).
    pub fn origin(&self) -> &Origin {
        self.ctx.origin()
    }

    /// Runs `punctuator` every `interval_ms` of `kind`'s clock, given the
    /// clock's time, until the returned handle cancels it. Stream-time
    /// punctuators fall due on multiples of the interval and run after the
    /// record that moved stream time to or past one; wall-clock ones every
    /// interval from now. A clock that jumps several intervals runs a
    /// punctuator once. Runs are counted in `TaskMetrics::punctuations`.
    pub fn schedule(
        &mut self,
        interval_ms: i64,
        kind: PunctuationType,
        mut punctuator: impl FnMut(&mut ProcessorContext<'_, KO, VO>, i64) -> Result<(), StreamsError>
            + 'static,
    ) -> Result<Cancellable, StreamsError> {
        if interval_ms <= 0 {
            return Err(StreamsError::Processing(format!(
                "a punctuation interval must be positive, not {interval_ms} ms"
            )));
        }
        let (down, stores) = (self.down.clone(), self.stores.clone());
        Ok(self.ctx.schedule(
            interval_ms,
            kind,
            Box::new(move |ctx: &mut Ctx, now_ms: i64| {
                let mut pc = ProcessorContext {
                    ctx,
                    down: &down,
                    stores: &stores,
                };
                punctuator(&mut pc, now_ms)
            }),
        ))
    }

    /// The key-value store `name`, in bytes. Only the stores declared with
    /// the processor are there.
    pub fn store(&mut self, name: &str) -> Result<KeyValueStore<'_>, StreamsError> {
        let missing = || {
            StreamsError::Processing(format!(
                "this processor has no state store {name}: declare it in KStream::process"
            ))
        };
        if !self.stores.iter().any(|s| s == name) {
            return Err(missing());
        }
        let store = self.ctx.stores.get_mut(name).ok_or_else(missing)?;
        Ok(KeyValueStore { store })
    }

    /// The key-value store `name`, read and written with these serdes.
    pub fn typed_store<K: 'static, V: 'static>(
        &mut self,
        name: &str,
        key: &SerdeRef<K>,
        value: &SerdeRef<V>,
    ) -> Result<TypedKeyValueStore<'_, K, V>, StreamsError> {
        Ok(TypedKeyValueStore {
            inner: self.store(name)?,
            key: key.clone(),
            value: value.clone(),
        })
    }
}

/// A key-value store of bytes, as a user processor sees it. Every write
/// also goes to the store's changelog (if it has one).
pub struct KeyValueStore<'a> {
    store: &'a mut StateStore,
}

impl KeyValueStore<'_> {
    pub fn name(&self) -> &str {
        &self.store.spec.name
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.store.get(key)
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.store.put(key, Some(value));
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.store.put(key, None);
    }

    /// The entries with `from <= key < to`, in key order.
    pub fn range(&self, from: &[u8], to: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.store.range(from, to)
    }

    /// Every entry, in key order.
    pub fn all(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.store.range_from(&[], usize::MAX)
    }
}

/// A key-value store read and written through serdes.
pub struct TypedKeyValueStore<'a, K, V> {
    inner: KeyValueStore<'a>,
    key: SerdeRef<K>,
    value: SerdeRef<V>,
}

impl<K: 'static, V: 'static> TypedKeyValueStore<'_, K, V> {
    fn key_bytes(&self, key: &K) -> Result<Vec<u8>, StreamsError> {
        let name = self.inner.name();
        encode_key(&self.key, key, name)?.ok_or_else(|| StreamsError::Serialize {
            what: "key",
            target: format!("state store {name}"),
            error: crate::serdes::SerdeError::new("a null key cannot be stored"),
        })
    }

    pub fn get(&self, key: &K) -> Result<Option<V>, StreamsError> {
        let kb = self.key_bytes(key)?;
        match self.inner.get(&kb) {
            Some(b) => Ok(Some(decode(&self.value, &b, self.inner.name())?)),
            None => Ok(None),
        }
    }

    pub fn put(&mut self, key: &K, value: &V) -> Result<(), StreamsError> {
        let kb = self.key_bytes(key)?;
        let vb = encode(
            &self.value,
            value,
            &format!("state store {}", self.inner.name()),
        )?;
        self.inner.put(&kb, &vb);
        Ok(())
    }

    pub fn delete(&mut self, key: &K) -> Result<(), StreamsError> {
        let kb = self.key_bytes(key)?;
        self.inner.delete(&kb);
        Ok(())
    }

    /// Every entry, in the order of the keys' bytes.
    pub fn all(&self) -> Result<Vec<(K, V)>, StreamsError> {
        let name = self.inner.name();
        self.inner
            .all()
            .into_iter()
            .map(|(k, v)| Ok((decode(&self.key, &k, name)?, decode(&self.value, &v, name)?)))
            .collect()
    }
}

/// A user processor in one task, with where its records go.
struct UserNode<P, KO, VO> {
    user: P,
    down: Downstream<KO, VO>,
    stores: Rc<[String]>,
}

impl<K, V, KO: Data, VO: Data, P: UserProcessor<K, V, KO, VO>> Processor<K, V>
    for UserNode<P, KO, VO>
{
    fn process(&mut self, ctx: &mut Ctx, record: Record<K, V>) -> Result<(), StreamsError> {
        let mut pc = ProcessorContext {
            ctx,
            down: &self.down,
            stores: &self.stores,
        };
        self.user.process(&mut pc, record)
    }
}

impl<P, KO: Data, VO: Data> UserNode<P, KO, VO> {
    fn init<K, V>(&mut self, ctx: &mut Ctx) -> Result<(), StreamsError>
    where
        P: UserProcessor<K, V, KO, VO>,
    {
        let mut pc = ProcessorContext {
            ctx,
            down: &self.down,
            stores: &self.stores,
        };
        self.user.init(&mut pc)
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    /// The stream through a processor of the application's: `supplier`
    /// makes one per task; `stores` are the key-value stores it may use
    /// (each named with [`Stored::as_`], changelogged unless
    /// [`Stored::without_logging`]). What it forwards is the new stream,
    /// whose keys it may have changed (a grouping or join after it
    /// repartitions).
    pub fn process<KO: Data, VO: Data, P>(
        &self,
        supplier: impl Fn() -> P + Send + Sync + 'static,
        stores: Vec<Stored>,
    ) -> KStream<KO, VO>
    where
        P: UserProcessor<K, V, KO, VO> + 'static,
    {
        let supplier = Arc::new(supplier);
        let node = {
            let mut g = self.graph.borrow_mut();
            let mut names = Vec::new();
            for stored in &stores {
                if stored.name.is_none() {
                    g.errors.push(
                        "a store of KStream::process needs a name (Stored::as_) to be found by"
                            .to_string(),
                    );
                    continue;
                }
                let spec = stored.spec(&mut g, StoreKind::KeyValue, "KSTREAM-PROCESSOR");
                names.push(add_store(&mut g, spec));
            }
            let name = g.name("KSTREAM-PROCESSOR");
            let node_stores = names.clone();
            g.add::<K, V, KO, VO, _>(name, &[self.node], names, move |build, down| {
                let node = Rc::new(RefCell::new(UserNode {
                    user: supplier(),
                    down,
                    stores: Rc::from(node_stores.clone()),
                }));
                let started = node.clone();
                let init: InitHook =
                    Box::new(move |ctx: &mut Ctx| started.borrow_mut().init::<K, V>(ctx));
                build.inits.borrow_mut().push(init);
                node as Handle<K, V>
            })
        };
        KStream::new(self.graph.clone(), node, true)
    }
}
