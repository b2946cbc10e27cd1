//! The plumbing every operator uses: a processor made of a closure,
//! source and sink nodes (bytes ⇄ typed records), and the encoding of
//! keys and values for stores. Below the DSL types, above the topology.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

use crate::options::{Data, TimestampExtractor};
use crate::processor::{Ctx, Handle, Processor, StreamsError};
use crate::record::Record;
use crate::serdes::{self, SerdeRef};
use crate::topology::{Graph, Raw, TopicName};

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

/// Adds a source node reading `topics` and decoding with the serdes; its
/// records' event time comes from `timestamp` if given.
pub(crate) fn source_node<K: Data, V: Data>(
    graph: &Rc<RefCell<Graph>>,
    topics: Vec<TopicName>,
    key: SerdeRef<K>,
    value: SerdeRef<V>,
    timestamp: Option<TimestampExtractor<K, V>>,
) -> usize {
    let mut g = graph.borrow_mut();
    let name = g.name("KSTREAM-SOURCE");
    let node = g.add::<Raw, Raw, K, V, _>(name, &[], Vec::new(), move |_, down| {
        let (key, value, timestamp) = (key.clone(), value.clone(), timestamp.clone());
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
            let Some(ts) = event_time(ctx, timestamp.as_ref(), &k, &v, r.timestamp) else {
                return Ok(());
            };
            down.forward(
                ctx,
                Record {
                    key: k,
                    value: v,
                    timestamp: ts,
                    headers: r.headers,
                },
            )
        })
    });
    g.nodes[node].sources = topics;
    node
}

/// A source record's event time (from `extract` if there is one), which
/// advances the task's stream time; `None` for a record to skip (a
/// negative extracted time: logged and counted).
pub(crate) fn event_time<K, V>(
    ctx: &mut Ctx,
    extract: Option<&TimestampExtractor<K, V>>,
    key: &K,
    value: &V,
    record_ms: i64,
) -> Option<i64> {
    let ts = match extract {
        None => record_ms,
        Some(extract) => {
            let ts = extract(key, value, record_ms);
            if ts < 0 {
                tracing::warn!(
                    topic = %ctx.origin.topic,
                    partition = ctx.origin.partition,
                    offset = ctx.origin.offset,
                    timestamp = ts,
                    "the timestamp extractor gave a negative time; record skipped"
                );
                ctx.metrics.records_skipped += 1;
                return None;
            }
            ts
        }
    };
    ctx.stream_time = ctx.stream_time.max(ts);
    Some(ts)
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

pub(crate) fn store_error(store: &str, e: impl std::fmt::Display) -> StreamsError {
    StreamsError::Store {
        store: store.to_string(),
        error: e.to_string(),
    }
}

pub(crate) fn encode<T: 'static>(
    serde: &SerdeRef<T>,
    value: &T,
    target: &str,
) -> Result<Vec<u8>, StreamsError> {
    match serde.serialize(value) {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(StreamsError::Serialize {
            what: "value",
            target: target.to_string(),
            error: serdes::SerdeError::new("a null cannot be stored"),
        }),
        Err(error) => Err(StreamsError::Serialize {
            what: "value",
            target: target.to_string(),
            error,
        }),
    }
}

pub(crate) fn encode_key<T: 'static>(
    serde: &SerdeRef<T>,
    key: &T,
    store: &str,
) -> Result<Option<Vec<u8>>, StreamsError> {
    if serde.is_null(key) {
        return Ok(None);
    }
    serde
        .serialize(key)
        .map_err(|error| StreamsError::Serialize {
            what: "key",
            target: format!("state store {store}"),
            error,
        })
}

pub(crate) fn decode<T: 'static>(
    serde: &SerdeRef<T>,
    bytes: &[u8],
    store: &str,
) -> Result<T, StreamsError> {
    serde
        .deserialize(Some(bytes))
        .map_err(|e| store_error(store, e))
}
