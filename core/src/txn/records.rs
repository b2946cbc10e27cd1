//! Records of the internal `__transaction_state` topic, in Kafka's own
//! formats (version 0) so that a dump of the topic reads like Kafka's.
//! Primitives as in `crate::internal_topic::codec`. The rules of the
//! transitions between the statuses are in `state.rs`.
//!
//! ```text
//! key (version 0)                  value (version 0; null = tombstone)
//!   i16 version = 0                  i16 version = 0
//!   string transactional id          i64 producer id
//!                                    i16 producer epoch
//!                                    i32 transaction timeout ms
//!                                    i8  status (see TxnStatus)
//!                                    i32 topic count (-1 = null), then per topic:
//!                                      string topic
//!                                      i32 partition count, then i32 each
//!                                    i64 last update timestamp (ms)
//!                                    i64 start timestamp (ms)
//! ```
//! A transactional id's records go to partition
//! `abs(javaHash(transactional id)) % partitions`, as in Kafka.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};

use crate::internal_topic::codec::{put_string, Reader};

/// Kafka's transaction states (their codes in `__transaction_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnStatus {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnStatus {
    pub const ALL: [TxnStatus; 8] = [
        TxnStatus::Empty,
        TxnStatus::Ongoing,
        TxnStatus::PrepareCommit,
        TxnStatus::PrepareAbort,
        TxnStatus::CompleteCommit,
        TxnStatus::CompleteAbort,
        TxnStatus::Dead,
        TxnStatus::PrepareEpochFence,
    ];

    pub fn code(self) -> i8 {
        match self {
            TxnStatus::Empty => 0,
            TxnStatus::Ongoing => 1,
            TxnStatus::PrepareCommit => 2,
            TxnStatus::PrepareAbort => 3,
            TxnStatus::CompleteCommit => 4,
            TxnStatus::CompleteAbort => 5,
            TxnStatus::Dead => 6,
            TxnStatus::PrepareEpochFence => 7,
        }
    }

    pub fn from_code(code: i8) -> Option<TxnStatus> {
        TxnStatus::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The name DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        match self {
            TxnStatus::Empty => "Empty",
            TxnStatus::Ongoing => "Ongoing",
            TxnStatus::PrepareCommit => "PrepareCommit",
            TxnStatus::PrepareAbort => "PrepareAbort",
            TxnStatus::CompleteCommit => "CompleteCommit",
            TxnStatus::CompleteAbort => "CompleteAbort",
            TxnStatus::Dead => "Dead",
            TxnStatus::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnStatus> {
        TxnStatus::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether markers are being written: the transaction is decided but
    /// not yet ended on every partition.
    pub fn is_ending(self) -> bool {
        matches!(
            self,
            TxnStatus::PrepareCommit | TxnStatus::PrepareAbort | TxnStatus::PrepareEpochFence
        )
    }

    /// Whether no transaction is open (a new one may start).
    pub fn is_idle(self) -> bool {
        matches!(
            self,
            TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort
        )
    }
}

/// The state of one transactional id, as its latest record holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnValue {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub status: TxnStatus,
    /// The partitions of the open (or ending) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    pub last_update_ms: i64,
    pub start_ms: i64,
}

pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + transactional_id.len());
    buf.put_i16(0);
    put_string(&mut buf, Some(transactional_id));
    buf.freeze()
}

/// The transactional id of a key of version 0 or 1 (Kafka's versions
/// share the layout); `None` for anything else.
pub fn decode_key(raw: &[u8]) -> Option<String> {
    let mut r = Reader(raw);
    if !(0..=1).contains(&r.i16()?) {
        return None;
    }
    r.string()
}

impl TxnValue {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_i16(0);
        buf.put_i64(self.producer_id);
        buf.put_i16(self.producer_epoch);
        buf.put_i32(self.timeout_ms);
        buf.put_i8(self.status.code());
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in &self.partitions {
            topics.entry(topic).or_default().push(*partition);
        }
        buf.put_i32(topics.len() as i32);
        for (topic, partitions) in topics {
            put_string(&mut buf, Some(topic));
            buf.put_i32(partitions.len() as i32);
            for p in partitions {
                buf.put_i32(p);
            }
        }
        buf.put_i64(self.last_update_ms);
        buf.put_i64(self.start_ms);
        buf.freeze()
    }

    /// Reads a value of version 0; `None` for anything else (a later
    /// version, damage).
    pub fn decode(raw: &[u8]) -> Option<TxnValue> {
        let mut r = Reader(raw);
        if r.i16()? != 0 {
            return None;
        }
        let producer_id = r.i64()?;
        let producer_epoch = r.i16()?;
        let timeout_ms = r.i32()?;
        let status = TxnStatus::from_code(r.i8()?)?;
        let mut partitions = BTreeSet::new();
        for _ in 0..r.count()? {
            let topic = r.string()?;
            for _ in 0..r.count()? {
                partitions.insert((topic.clone(), r.i32()?));
            }
        }
        Some(TxnValue {
            producer_id,
            producer_epoch,
            timeout_ms,
            status,
            partitions,
            last_update_ms: r.i64()?,
            start_ms: r.i64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        assert_eq!(
            decode_key(&encode_key("payments-1")).as_deref(),
            Some("payments-1")
        );
        let v = TxnValue {
            producer_id: 4000,
            producer_epoch: 7,
            timeout_ms: 60_000,
            status: TxnStatus::PrepareCommit,
            partitions: [
                ("a".to_string(), 0),
                ("a".to_string(), 3),
                ("b".to_string(), 1),
            ]
            .into_iter()
            .collect(),
            last_update_ms: 99,
            start_ms: 42,
        };
        assert_eq!(TxnValue::decode(&v.encode()), Some(v.clone()));
        let empty = TxnValue {
            partitions: BTreeSet::new(),
            status: TxnStatus::Empty,
            ..v
        };
        assert_eq!(TxnValue::decode(&empty.encode()), Some(empty));
    }

    #[test]
    fn a_value_as_kafka_writes_it_is_read() {
        // Kafka 3.x, TransactionLogValue v0: pid 1000, epoch 2, timeout
        // 60000, Ongoing, topic "t" partitions [0], timestamps 5 and 4.
        let mut raw = vec![0, 0];
        raw.extend_from_slice(&1000i64.to_be_bytes());
        raw.extend_from_slice(&2i16.to_be_bytes());
        raw.extend_from_slice(&60_000i32.to_be_bytes());
        raw.push(1);
        raw.extend_from_slice(&1i32.to_be_bytes());
        raw.extend_from_slice(&[0, 1, b't']);
        raw.extend_from_slice(&1i32.to_be_bytes());
        raw.extend_from_slice(&0i32.to_be_bytes());
        raw.extend_from_slice(&5i64.to_be_bytes());
        raw.extend_from_slice(&4i64.to_be_bytes());
        let v = TxnValue::decode(&raw).unwrap();
        assert_eq!(v.status, TxnStatus::Ongoing);
        assert_eq!(
            v.partitions.into_iter().collect::<Vec<_>>(),
            vec![("t".to_string(), 0)]
        );
        assert_eq!((v.last_update_ms, v.start_ms), (5, 4));
    }

    #[test]
    fn damage_does_not_decode() {
        assert_eq!(decode_key(&[0, 5, 0]), None);
        assert_eq!(TxnValue::decode(&[0, 0, 1]), None);
        assert_eq!(TxnValue::decode(&[0, 1]), None, "an unknown version");
        let mut bad = TxnValue {
            producer_id: 1,
            producer_epoch: 0,
            timeout_ms: 1,
            status: TxnStatus::Empty,
            partitions: BTreeSet::new(),
            last_update_ms: 0,
            start_ms: 0,
        }
        .encode()
        .to_vec();
        bad[16] = 42; // no such status
        assert_eq!(TxnValue::decode(&bad), None);
    }
}
