//! Foreign-key table–table joins (Kafka Streams' KIP-213): each row of
//! the left table joins the row of the right table whose key a function
//! extracts from the left row's value. The result is a table keyed like
//! the left one.
//!
//! The two tables need not be co-partitioned (different keys, different
//! partition counts), so the join talks through two internal topics and
//! runs in the sub-topologies of both tables:
//!
//! 1. The left task, on a change of a row, sends a *subscription* to
//!    `<application.id>-<name>-subscription-registration-topic`, keyed by
//!    the foreign key (so it lands on the partition of the right row):
//!    the left key and a hash of the left value. A row whose foreign key
//!    changed unsubscribes from the old one first; a deleted row only
//!    unsubscribes.
//! 2. The right task keeps the subscriptions in
//!    `<name>-subscription-store`, keyed by (foreign key, left key) as a
//!    [prefixed key](crate::store::prefixed_key). A subscription is
//!    answered at once with the right row; a change of a right row is
//!    answered to every subscriber of its key (one prefix scan). Answers
//!    go to `<application.id>-<name>-subscription-response-topic`, keyed
//!    by the left key (so they land on the partition of the left row).
//! 3. The left task keeps an answer only if its hash is still that of
//!    the row's current value: an answer meant for an older value (from
//!    the old foreign key, say, arriving after the row moved) is dropped.
//!    It then joins the current left value with the answer's right value.
//!
//! A deleted left row and a row without a foreign key need no lookup:
//! the left task resolves them at once. The result is kept in the store
//! the join is given (`<name>`), which lets it emit a deletion only for a
//! row that had a result and tell downstream operators the old value.
//!
//! Both internal topics take their partition count from the side that
//! reads them ([`InternalPartitions::Reader`]): the subscription topic
//! has as many as the right table's inputs, the response topic as many
//! as the left's. The foreign key is written with the right table's key
//! serde, so a subscription lands where the right row is when the right
//! table's topic is partitioned by its serialized key.
//!
//! On the internal topics (this crate's own format, versioned by its
//! first byte) and in the subscription store:
//!
//! ```text
//! subscription  key:   foreign key (the right table's key serde)
//!               value: u8 version = 0 | u8 instruction | [16] hash of the left value | left key
//!               instruction: 0 unsubscribe, 1 subscribe (answer if the right row exists),
//!                            2 subscribe (answer always, with no value if there is no row)
//! response      key:   left key (the left table's key serde)
//!               value: u8 version = 0 | [16] hash from the subscription | u8 1 if a value
//!                      follows, else 0 | right value (the right table's value serde)
//! subscription store key:   u32 BE foreign key length | foreign key | left key
//!                    value: [16] hash from the subscription
//! ```
//!
//! The hash is MurmurHash3 x64 128 (as in Kafka Streams) of the left
//! value's bytes as the left table's store holds them, so both ends of
//! the left task hash the same bytes whatever the serde does on a round
//! trip.

use std::sync::Arc;

use crate::ktable::KTable;
use crate::nodes::{decode, encode, encode_key, processor, sink_node, source_node};
use crate::options::{add_store, Data, Stored};
use crate::processor::{Ctx, StreamsError};
use crate::record::{Change, Record};
use crate::serdes::{self, SerdeError, SerdeRef};
use crate::store::{self, StoreKind, StoreSpec};
use crate::topology::{InternalPartitions, Raw, TopicName};

/// The joiner over the left value and the right one (if any): `None` is
/// no result row.
type FkJoiner<V, VO, R> = Arc<dyn Fn(&V, Option<&VO>) -> Option<R> + Send + Sync>;

/// The foreign key of a left value (`None`: the row joins nothing).
type ForeignKey<V, KO> = Arc<dyn Fn(&V) -> Option<KO> + Send + Sync>;

const VERSION: u8 = 0;
const HASH_BYTES: usize = 16;

/// What a subscription asks the right task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Instruction {
    Unsubscribe = 0,
    /// Answer only if the right row exists: nothing to undo on the left
    /// (an inner join's row that had no result).
    SubscribeAnswerIfFound = 1,
    /// Answer even without a right row: a left join's row, or an inner
    /// join's row whose previous result must go.
    SubscribeAnswerAlways = 2,
}

fn subscription(instruction: Instruction, hash: &[u8; HASH_BYTES], left_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + HASH_BYTES + left_key.len());
    out.push(VERSION);
    out.push(instruction as u8);
    out.extend_from_slice(hash);
    out.extend_from_slice(left_key);
    out
}

/// (instruction, hash, left key) of a subscription.
fn read_subscription(
    bytes: Option<&[u8]>,
) -> Result<(Instruction, [u8; HASH_BYTES], &[u8]), SerdeError> {
    let bytes = bytes.ok_or_else(|| SerdeError::new("a subscription cannot be null"))?;
    if bytes.len() < 2 + HASH_BYTES {
        return Err(SerdeError::new(format!(
            "a subscription takes at least {} bytes, not {}",
            2 + HASH_BYTES,
            bytes.len()
        )));
    }
    if bytes[0] != VERSION {
        return Err(SerdeError::new(format!(
            "subscription version {} is unknown",
            bytes[0]
        )));
    }
    let instruction = match bytes[1] {
        0 => Instruction::Unsubscribe,
        1 => Instruction::SubscribeAnswerIfFound,
        2 => Instruction::SubscribeAnswerAlways,
        other => {
            return Err(SerdeError::new(format!(
                "subscription instruction {other} is unknown"
            )))
        }
    };
    let hash = bytes[2..2 + HASH_BYTES].try_into().expect("16 bytes");
    Ok((instruction, hash, &bytes[2 + HASH_BYTES..]))
}

fn response(hash: &[u8], right: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + HASH_BYTES + right.map_or(0, <[u8]>::len));
    out.push(VERSION);
    out.extend_from_slice(hash);
    match right {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(v);
        }
        None => out.push(0),
    }
    out
}

/// (hash, right value) of a response.
fn read_response(bytes: Option<&[u8]>) -> Result<([u8; HASH_BYTES], Option<&[u8]>), SerdeError> {
    let bytes = bytes.ok_or_else(|| SerdeError::new("a subscription response cannot be null"))?;
    if bytes.len() < 2 + HASH_BYTES {
        return Err(SerdeError::new(format!(
            "a subscription response takes at least {} bytes, not {}",
            2 + HASH_BYTES,
            bytes.len()
        )));
    }
    if bytes[0] != VERSION {
        return Err(SerdeError::new(format!(
            "subscription response version {} is unknown",
            bytes[0]
        )));
    }
    let hash = bytes[1..1 + HASH_BYTES].try_into().expect("16 bytes");
    let right = match bytes[1 + HASH_BYTES] {
        0 if bytes.len() == 2 + HASH_BYTES => None,
        1 => Some(&bytes[2 + HASH_BYTES..]),
        _ => {
            return Err(SerdeError::new(
                "a subscription response's value flag is not 0 or 1",
            ))
        }
    };
    Ok((hash, right))
}

/// MurmurHash3 x64 128 with seed 0 (Kafka Streams hashes the left value
/// with it), as the bytes of `h1` then `h2`, little-endian.
fn murmur3_128(data: &[u8]) -> [u8; HASH_BYTES] {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    fn fmix(mut k: u64) -> u64 {
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    }
    let (mut h1, mut h2) = (0u64, 0u64);
    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let k1 = u64::from_le_bytes(block[..8].try_into().expect("8 bytes"));
        let k2 = u64::from_le_bytes(block[8..].try_into().expect("8 bytes"));
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    let mut t = [0u8; 16];
    t[..tail.len()].copy_from_slice(tail);
    if tail.len() > 8 {
        let k2 = u64::from_le_bytes(t[8..].try_into().expect("8 bytes"));
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    }
    if !tail.is_empty() {
        let k1 = u64::from_le_bytes(t[..8].try_into().expect("8 bytes"));
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    }
    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix(h1);
    h2 = fmix(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    let mut out = [0u8; HASH_BYTES];
    out[..8].copy_from_slice(&h1.to_le_bytes());
    out[8..].copy_from_slice(&h2.to_le_bytes());
    out
}

/// What a record of an internal topic that does not decode fails with.
fn undecodable(ctx: &Ctx, what: &'static str, error: SerdeError) -> StreamsError {
    StreamsError::Deserialize {
        what,
        topic: ctx.origin.topic.to_string(),
        partition: ctx.origin.partition,
        offset: ctx.origin.offset,
        error,
    }
}

impl<K: Data, V: Data> KTable<K, V> {
    /// Inner foreign-key join: each row joins the row of `other` whose
    /// key `foreign_key` extracts from its value; a row exists while both
    /// do. A row without a foreign key (`None`) joins nothing.
    ///
    /// The result is kept in the store `stored` names (its values written
    /// with `value`), which also names the join's internal topics and
    /// subscription store (see the [module docs](crate::fk_join)). Both
    /// tables need a store of their own (`materialize` a derived one).
    ///
    /// ```
    /// use runnel_streams::{serdes, Consumed, KTable, Produced, Stored, StreamsBuilder, TopologyTestDriver};
    /// let b = StreamsBuilder::new();
    /// let s = serdes::string;
    /// let orders: KTable<String, String> =
    ///     b.table("orders", Consumed::with(s(), s()), Stored::as_("orders"));
    /// let customers: KTable<String, String> =
    ///     b.table("customers", Consumed::with(s(), s()), Stored::as_("customers"));
    /// orders
    ///     .join_foreign_key(
    ///         &customers,
    ///         |order: &String| order.split(':').next().map(str::to_string),
    ///         |order: &String, customer: &String| format!("{order} for {customer}"),
    ///         Stored::as_("enriched"),
    ///         s(),
    ///     )
    ///     .to_stream()
    ///     .to("enriched", Produced::with(s(), serdes::nullable(s())));
    /// let mut d = TopologyTestDriver::new(b.build().unwrap(), "shop");
    /// d.pipe("customers", &s(), &s(), "c1".to_string(), "Ada".to_string(), 1).unwrap();
    /// d.pipe("orders", &s(), &s(), "o1".to_string(), "c1:book".to_string(), 2).unwrap();
    /// let out = d.read_key_values("enriched", &s(), &serdes::nullable(s())).unwrap();
    /// assert_eq!(out, vec![("o1".to_string(), Some("c1:book for Ada".to_string()))]);
    /// ```
    pub fn join_foreign_key<KO: Data, VO: Data, R: Data>(
        &self,
        other: &KTable<KO, VO>,
        foreign_key: impl Fn(&V) -> Option<KO> + Send + Sync + 'static,
        joiner: impl Fn(&V, &VO) -> R + Send + Sync + 'static,
        stored: Stored,
        value: SerdeRef<R>,
    ) -> KTable<K, R> {
        self.foreign_key_join(
            other,
            Arc::new(foreign_key),
            Arc::new(move |l: &V, r: Option<&VO>| r.map(|r| joiner(l, r))),
            false,
            stored,
            value,
        )
    }

    /// Left foreign-key join: a row exists while this side has one; the
    /// joiner sees `None` for a row without a foreign key or whose foreign
    /// key has no row in `other`. Otherwise as
    /// [`join_foreign_key`](KTable::join_foreign_key).
    pub fn left_join_foreign_key<KO: Data, VO: Data, R: Data>(
        &self,
        other: &KTable<KO, VO>,
        foreign_key: impl Fn(&V) -> Option<KO> + Send + Sync + 'static,
        joiner: impl Fn(&V, Option<&VO>) -> R + Send + Sync + 'static,
        stored: Stored,
        value: SerdeRef<R>,
    ) -> KTable<K, R> {
        self.foreign_key_join(
            other,
            Arc::new(foreign_key),
            Arc::new(move |l: &V, r: Option<&VO>| Some(joiner(l, r))),
            true,
            stored,
            value,
        )
    }

    fn foreign_key_join<KO: Data, VO: Data, R: Data>(
        &self,
        other: &KTable<KO, VO>,
        foreign_key: ForeignKey<V, KO>,
        joiner: FkJoiner<V, VO, R>,
        left_join: bool,
        stored: Stored,
        value: SerdeRef<R>,
    ) -> KTable<K, R> {
        let what = if left_join {
            "left_join_foreign_key"
        } else {
            "join_foreign_key"
        };
        let placeholder = || {
            // Reported by `build`; a placeholder keeps the DSL going.
            KTable::new(
                self.graph.clone(),
                self.node,
                None,
                self.key.clone(),
                None,
                None,
            )
        };
        if self.windows.is_some() || other.windows.is_some() {
            self.graph.borrow_mut().errors.push(format!(
                "{what} joins a windowed table: its store is keyed by window, not by the table's key"
            ));
            return placeholder();
        }
        let (Some((left_store, left_serde)), Some((right_store, right_serde))) =
            (self.lookup(what), other.lookup(what))
        else {
            return placeholder();
        };
        let raw = serdes::nullable(serdes::bytes());
        let (key, fk_serde) = (self.key.clone(), other.key.clone());

        // Names: the result store's, and everything else after it.
        let (result_store, subscriptions, registration, answers) = {
            let mut g = self.graph.borrow_mut();
            let spec = stored.spec(&mut g, StoreKind::KeyValue, "KTABLE-FK-JOIN-OUTPUT");
            let base = spec.name.clone();
            let subscriptions = StoreSpec {
                name: format!("{base}-subscription-store"),
                kind: StoreKind::KeyValue,
                logged: spec.logged,
            };
            let result_store = add_store(&mut g, spec);
            let subscriptions = add_store(&mut g, subscriptions);
            let registration = format!("{base}-subscription-registration-topic");
            let answers = format!("{base}-subscription-response-topic");
            for topic in [&registration, &answers] {
                if g.repartition_partitions
                    .insert(topic.clone(), InternalPartitions::Reader)
                    .is_some()
                {
                    g.errors
                        .push(format!("internal topic {topic} is declared twice"));
                }
            }
            (result_store, subscriptions, registration, answers)
        };
        let foreign_key_bytes = {
            let (foreign_key, fk_serde) = (foreign_key.clone(), fk_serde.clone());
            let target = format!("topic {registration}");
            move |v: &V| -> Result<Option<Vec<u8>>, StreamsError> {
                let Some(fk) = foreign_key(v) else {
                    return Ok(None);
                };
                if fk_serde.is_null(&fk) {
                    return Ok(None);
                }
                fk_serde
                    .serialize(&fk)
                    .map_err(|error| StreamsError::Serialize {
                        what: "foreign key",
                        target: target.clone(),
                        error,
                    })
            }
        };
        let foreign_key_bytes = Arc::new(foreign_key_bytes);

        // Left task: subscriptions out.
        let register = {
            let mut g = self.graph.borrow_mut();
            let name = g.name("KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION");
            let (key, fk_bytes, left_store, result_store) = (
                key.clone(),
                foreign_key_bytes.clone(),
                left_store.clone(),
                result_store.clone(),
            );
            g.add::<K, Change<V>, Raw, Raw, _>(
                name,
                &[self.node],
                vec![left_store.clone(), result_store.clone()],
                move |_, down| {
                    let (key, fk_bytes, left_store, result_store) = (
                        key.clone(),
                        fk_bytes.clone(),
                        left_store.clone(),
                        result_store.clone(),
                    );
                    processor(move |ctx: &mut Ctx, r: Record<K, Change<V>>| {
                        let Some(kb) = encode_key(&key, &r.key, &left_store)? else {
                            return Ok(());
                        };
                        let old_fk = match &r.value.old {
                            Some(v) => fk_bytes(v)?,
                            None => None,
                        };
                        let new_fk = match &r.value.new {
                            Some(v) => fk_bytes(v)?,
                            None => None,
                        };
                        let send = |ctx: &mut Ctx, fk: Vec<u8>, value: Vec<u8>| {
                            down.forward(
                                ctx,
                                Record {
                                    key: Some(fk),
                                    value: Some(value),
                                    timestamp: r.timestamp,
                                    headers: r.headers.clone(),
                                },
                            )
                        };
                        if let Some(old) = old_fk {
                            if new_fk.as_ref() != Some(&old) {
                                let unsubscribe =
                                    subscription(Instruction::Unsubscribe, &[0; HASH_BYTES], &kb);
                                send(ctx, old, unsubscribe)?;
                            }
                        }
                        let Some(new) = new_fk else {
                            return Ok(());
                        };
                        // The table's store holds the row's new value before
                        // its change is forwarded; the answer is checked
                        // against the hash of those same bytes.
                        let Some(current) = ctx.store(&left_store).get(&kb) else {
                            return Err(StreamsError::Store {
                                store: left_store.clone(),
                                error: "the store does not hold the row its table just changed"
                                    .into(),
                            });
                        };
                        let instruction =
                            if left_join || ctx.store(&result_store).get(&kb).is_some() {
                                Instruction::SubscribeAnswerAlways
                            } else {
                                Instruction::SubscribeAnswerIfFound
                            };
                        send(
                            ctx,
                            new,
                            subscription(instruction, &murmur3_128(&current), &kb),
                        )
                    })
                },
            )
        };
        sink_node(
            &self.graph,
            register,
            TopicName::Internal(registration.clone()),
            raw.clone(),
            raw.clone(),
        );

        // Left task: rows that need no lookup (deleted, or without a
        // foreign key) are resolved at once.
        let without_lookup = {
            let mut g = self.graph.borrow_mut();
            let name = g.name("KTABLE-FK-JOIN-WITHOUT-FOREIGN-KEY");
            let (fk_bytes, joiner) = (foreign_key_bytes.clone(), joiner.clone());
            g.add::<K, Change<V>, K, Option<R>, _>(
                name,
                &[self.node],
                Vec::new(),
                move |_, down| {
                    let (fk_bytes, joiner) = (fk_bytes.clone(), joiner.clone());
                    processor(move |ctx: &mut Ctx, r: Record<K, Change<V>>| {
                        let result = match &r.value.new {
                            None => None,
                            Some(v) if fk_bytes(v)?.is_none() => joiner(v, None),
                            Some(_) => return Ok(()),
                        };
                        down.forward(
                            ctx,
                            Record {
                                key: r.key,
                                value: result,
                                timestamp: r.timestamp,
                                headers: r.headers,
                            },
                        )
                    })
                },
            )
        };

        // Right task: subscriptions in, answers out.
        let subscribed = source_node(
            &self.graph,
            vec![TopicName::Internal(registration)],
            raw.clone(),
            raw.clone(),
            None,
        );
        let answer_subscription = {
            let mut g = self.graph.borrow_mut();
            let name = g.name("KTABLE-FK-JOIN-SUBSCRIPTION-PROCESSOR");
            let (subscriptions, right_store) = (subscriptions.clone(), right_store.clone());
            g.add::<Raw, Raw, Raw, Raw, _>(
                name,
                &[subscribed],
                vec![subscriptions.clone(), right_store.clone()],
                move |_, down| {
                    let (subscriptions, right_store) = (subscriptions.clone(), right_store.clone());
                    processor(move |ctx: &mut Ctx, r: Record<Raw, Raw>| {
                        let Some(fk) = r.key.as_deref() else {
                            ctx.metrics.records_skipped += 1;
                            return Ok(());
                        };
                        let (instruction, hash, left_key) =
                            read_subscription(r.value.as_deref())
                                .map_err(|e| undecodable(ctx, "subscription", e))?;
                        let entry = store::prefixed_key(fk, left_key);
                        if instruction == Instruction::Unsubscribe {
                            ctx.store(&subscriptions).put(&entry, None);
                            return Ok(());
                        }
                        ctx.store(&subscriptions).put(&entry, Some(&hash));
                        let right = ctx.store(&right_store).get(fk);
                        if right.is_none() && instruction == Instruction::SubscribeAnswerIfFound {
                            return Ok(());
                        }
                        let answer = response(&hash, right.as_deref());
                        down.forward(
                            ctx,
                            Record {
                                key: Some(left_key.to_vec()),
                                value: Some(answer),
                                timestamp: r.timestamp,
                                headers: r.headers,
                            },
                        )
                    })
                },
            )
        };
        // Right task: a right row's change answers all its subscribers.
        let answer_change = {
            let mut g = self.graph.borrow_mut();
            let name = g.name("KTABLE-FK-JOIN-FOREIGN-TABLE-PROCESSOR");
            let (subscriptions, fk_serde, right_serde) =
                (subscriptions.clone(), fk_serde.clone(), right_serde.clone());
            let target = format!("topic {answers}");
            g.add::<KO, Change<VO>, Raw, Raw, _>(
                name,
                &[other.node],
                vec![subscriptions.clone()],
                move |_, down| {
                    let (subscriptions, fk_serde, right_serde, target) = (
                        subscriptions.clone(),
                        fk_serde.clone(),
                        right_serde.clone(),
                        target.clone(),
                    );
                    processor(move |ctx: &mut Ctx, r: Record<KO, Change<VO>>| {
                        let Some(fk) = encode_key(&fk_serde, &r.key, &subscriptions)? else {
                            return Ok(());
                        };
                        let right = match &r.value.new {
                            Some(v) => Some(encode(&right_serde, v, &target)?),
                            None => None,
                        };
                        for (entry, hash) in ctx.store(&subscriptions).scan_prefix(&fk) {
                            let left_key = store::split_prefixed_key(&entry)
                                .map(|(_, rest)| rest.to_vec())
                                .filter(|_| hash.len() == HASH_BYTES)
                                .ok_or_else(|| StreamsError::Store {
                                    store: subscriptions.clone(),
                                    error: "a subscription entry of the wrong length".into(),
                                })?;
                            down.forward(
                                ctx,
                                Record {
                                    key: Some(left_key),
                                    value: Some(response(&hash, right.as_deref())),
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
        let answered = {
            let mut g = self.graph.borrow_mut();
            let name = g.name("KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE");
            g.add::<Raw, Raw, Raw, Raw, _>(
                name,
                &[answer_subscription, answer_change],
                Vec::new(),
                |_, down| processor(move |ctx: &mut Ctx, r: Record<Raw, Raw>| down.forward(ctx, r)),
            )
        };
        sink_node(
            &self.graph,
            answered,
            TopicName::Internal(answers.clone()),
            raw.clone(),
            raw.clone(),
        );

        // Left task: answers in, checked against the row's current value.
        let responses = source_node(
            &self.graph,
            vec![TopicName::Internal(answers)],
            raw.clone(),
            raw,
            None,
        );
        let resolve = {
            let mut g = self.graph.borrow_mut();
            let name = g.name("KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-RESOLVER");
            let (key, left_store) = (key.clone(), left_store.clone());
            g.add::<Raw, Raw, K, Option<R>, _>(
                name,
                &[responses],
                vec![left_store.clone()],
                move |_, down| {
                    let (key, left_store, left_serde, right_serde, joiner) = (
                        key.clone(),
                        left_store.clone(),
                        left_serde.clone(),
                        right_serde.clone(),
                        joiner.clone(),
                    );
                    processor(move |ctx: &mut Ctx, r: Record<Raw, Raw>| {
                        let Some(kb) = r.key.as_deref() else {
                            ctx.metrics.records_skipped += 1;
                            return Ok(());
                        };
                        let (hash, right) = read_response(r.value.as_deref())
                            .map_err(|e| undecodable(ctx, "subscription response", e))?;
                        // An answer for a value the row no longer has (or
                        // for a row that is gone) is stale: a newer
                        // subscription's answer, or the row's deletion,
                        // decides the result.
                        let Some(current) = ctx.store(&left_store).get(kb) else {
                            return Ok(());
                        };
                        if murmur3_128(&current) != hash {
                            return Ok(());
                        }
                        let k = key
                            .deserialize(Some(kb))
                            .map_err(|e| undecodable(ctx, "key", e))?;
                        let left = decode(&left_serde, &current, &left_store)?;
                        let right = match right {
                            Some(b) => Some(
                                right_serde
                                    .deserialize(Some(b))
                                    .map_err(|e| undecodable(ctx, "value", e))?,
                            ),
                            None => None,
                        };
                        down.forward(
                            ctx,
                            Record {
                                key: k,
                                value: joiner(&left, right.as_ref()),
                                timestamp: r.timestamp,
                                headers: r.headers,
                            },
                        )
                    })
                },
            )
        };

        // Left task: the result table, and its old values.
        let output = {
            let mut g = self.graph.borrow_mut();
            let name = g.name("KTABLE-FK-JOIN-OUTPUT");
            let (key, value, result_store) = (key.clone(), value.clone(), result_store.clone());
            let target = format!("state store {result_store}");
            g.add::<K, Option<R>, K, Change<R>, _>(
                name,
                &[without_lookup, resolve],
                vec![result_store.clone()],
                move |_, down| {
                    let (key, value, result_store, target) = (
                        key.clone(),
                        value.clone(),
                        result_store.clone(),
                        target.clone(),
                    );
                    processor(move |ctx: &mut Ctx, r: Record<K, Option<R>>| {
                        let Some(kb) = encode_key(&key, &r.key, &result_store)? else {
                            return Ok(());
                        };
                        let old = match ctx.store(&result_store).get(&kb) {
                            Some(b) => Some(decode(&value, &b, &result_store)?),
                            None => None,
                        };
                        if old.is_none() && r.value.is_none() {
                            return Ok(());
                        }
                        let bytes = match &r.value {
                            Some(v) => Some(encode(&value, v, &target)?),
                            None => None,
                        };
                        ctx.store(&result_store).put(&kb, bytes.as_deref());
                        down.forward(
                            ctx,
                            Record {
                                key: r.key,
                                value: Change { new: r.value, old },
                                timestamp: r.timestamp,
                                headers: r.headers,
                            },
                        )
                    })
                },
            )
        };
        KTable::new(
            self.graph.clone(),
            output,
            Some(result_store),
            self.key.clone(),
            Some(value),
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_left_value_hash_is_murmur3_x64_128_for_every_tail_length() {
        // Reference values of the canonical implementation (seed 0).
        let forty: Vec<u8> = (0..40).collect();
        for (input, expected) in [
            (&b""[..], "00000000000000000000000000000000"),
            (b"a", "897859f6655555855a890e51483ab5e6"),
            (b"hello", "029bbd41b3a7d8cb191dae486a901e5b"),
            (b"0123456789abcdef", "a7d14acf946de04bda08a7635c5bc387"),
            (b"0123456789abcdefXYZ", "1d904a6c0275d399f39cf8ea56e2694e"),
            (
                b"The quick brown fox jumps over the lazy dog",
                "6c1b07bc7bbc4be347939ac4a93c437a",
            ),
            (&forty, "64808c41d854a0c3ad124c9730ca01a0"),
        ] {
            assert_eq!(hex(&murmur3_128(input)), expected, "{input:?}");
        }
    }

    #[test]
    fn subscriptions_and_responses_read_back_what_was_written() {
        let hash = murmur3_128(b"v");
        let s = subscription(Instruction::SubscribeAnswerAlways, &hash, b"left");
        assert_eq!(
            read_subscription(Some(&s)),
            Ok((Instruction::SubscribeAnswerAlways, hash, &b"left"[..]))
        );
        let r = response(&hash, Some(b""));
        assert_eq!(read_response(Some(&r)), Ok((hash, Some(&b""[..]))));
        let r = response(&hash, None);
        assert_eq!(read_response(Some(&r)), Ok((hash, None)));
    }

    #[test]
    fn internal_records_that_are_short_null_or_of_an_unknown_version_are_refused() {
        let hash = murmur3_128(b"v");
        let s = subscription(Instruction::Unsubscribe, &hash, b"k");
        assert!(read_subscription(None).is_err());
        assert!(read_subscription(Some(&s[..10])).is_err());
        let mut v1 = s.clone();
        v1[0] = 1;
        assert!(read_subscription(Some(&v1)).is_err());
        let mut odd = s;
        odd[1] = 9;
        assert!(read_subscription(Some(&odd)).is_err());
        let r = response(&hash, None);
        assert!(read_response(Some(&r[..5])).is_err());
        let mut bad_flag = r.clone();
        bad_flag[17] = 7;
        assert!(read_response(Some(&bad_flag)).is_err());
        let mut trailing = r;
        trailing.push(1);
        assert!(read_response(Some(&trailing)).is_err());
    }
}
