//! State stores: what a task remembers between records.
//!
//! A store is named, belongs to one task (one partition of a
//! sub-topology) and holds bytes: the operators (de)serialize with their
//! serdes. Every write is also recorded for the store's changelog topic
//! (`<application.id>-<store>-changelog`, compacted, partition = the
//! task's), which the runtime produces before it commits the input
//! offsets, and from which a task restores the store when it starts or
//! moves. The engine under a store is pluggable ([`StoreEngine`]): an
//! in-memory ordered map (tests, the test driver) or a persistent one.
//!
//! Key layouts (so ordered range scans find what a window or session
//! operator needs):
//!
//! ```text
//! key-value store: key bytes
//! window store:    u32 BE key length | key | start (i64, sign bit flipped, BE) | u32 BE sequence
//! session store:   u32 BE key length | key | end   (flipped BE) | start (flipped BE)
//! ```

use std::collections::BTreeMap;
use std::ops::Bound;

/// Ordered bytes → bytes: what a store keeps its data in.
pub trait StoreEngine: Send {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    fn put(&mut self, key: &[u8], value: Option<&[u8]>);
    /// Entries with `from <= key < to`, in key order.
    fn range(&self, from: &[u8], to: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)>;
    /// Entries in key order, from the first key `>= from`.
    fn range_from(&self, from: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A [`StoreEngine`] in memory.
#[derive(Debug, Default)]
pub struct MemoryEngine(BTreeMap<Vec<u8>, Vec<u8>>);

impl StoreEngine for MemoryEngine {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key).cloned()
    }
    fn put(&mut self, key: &[u8], value: Option<&[u8]>) {
        match value {
            Some(v) => {
                self.0.insert(key.to_vec(), v.to_vec());
            }
            None => {
                self.0.remove(key);
            }
        }
    }
    fn range(&self, from: &[u8], to: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        if from >= to {
            return Vec::new();
        }
        self.0
            .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
    fn range_from(&self, from: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.0
            .range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// What a store is for: decides its key layout and its changelog's
/// cleanup policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    KeyValue,
    /// Windows (and join buffers) kept for `retention_ms` of stream time.
    Window {
        retention_ms: i64,
    },
    /// Sessions kept for `retention_ms` of stream time after they end.
    Session {
        retention_ms: i64,
    },
}

/// A store as a topology declares it.
#[derive(Debug, Clone)]
pub struct StoreSpec {
    pub name: String,
    pub kind: StoreKind,
    /// Whether writes go to a changelog topic (on by default).
    pub logged: bool,
}

/// One store of one task: its engine and the writes its changelog has
/// not been sent yet.
pub struct StateStore {
    pub spec: StoreSpec,
    engine: Box<dyn StoreEngine>,
    pending: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl StateStore {
    pub fn new(spec: StoreSpec, engine: Box<dyn StoreEngine>) -> StateStore {
        StateStore {
            spec,
            engine,
            pending: Vec::new(),
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.engine.get(key)
    }

    /// Writes (or with `None` deletes) `key`, and records the write for
    /// the changelog.
    pub fn put(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.engine.put(key, value);
        if self.spec.logged {
            self.pending.push((key.to_vec(), value.map(<[u8]>::to_vec)));
        }
    }

    /// A write read back from the changelog: applied, not logged again.
    pub fn restore(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.engine.put(key, value);
    }

    pub fn range(&self, from: &[u8], to: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.engine.range(from, to)
    }

    pub fn range_from(&self, from: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.engine.range_from(from, limit)
    }

    pub fn len(&self) -> usize {
        self.engine.len()
    }

    pub fn is_empty(&self) -> bool {
        self.engine.is_empty()
    }

    /// The writes since the last call, for the changelog topic.
    pub fn take_changelog(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        std::mem::take(&mut self.pending)
    }
}

/// Timestamps in keys sort as signed numbers.
fn time_bytes(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

fn time_from(bytes: &[u8]) -> i64 {
    let mut array = [0u8; 8];
    array.copy_from_slice(&bytes[..8]);
    (u64::from_be_bytes(array) ^ (1 << 63)) as i64
}

fn key_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + key.len() + 16);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The window store key of (`key`, window `start_ms`, `seq`).
pub fn window_key(key: &[u8], start_ms: i64, seq: u32) -> Vec<u8> {
    let mut out = key_prefix(key);
    out.extend_from_slice(&time_bytes(start_ms));
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

/// The (key, start, seq) of a window store key.
pub fn split_window_key(stored: &[u8]) -> Option<(&[u8], i64, u32)> {
    let len = u32::from_be_bytes(stored.get(..4)?.try_into().ok()?) as usize;
    let key = stored.get(4..4 + len)?;
    let rest = stored.get(4 + len..)?;
    if rest.len() != 12 {
        return None;
    }
    let seq = u32::from_be_bytes(rest[8..12].try_into().ok()?);
    Some((key, time_from(rest), seq))
}

/// Window store bounds: every entry of `key` with `from_ms <= start <= to_ms`.
pub fn window_range(key: &[u8], from_ms: i64, to_ms: i64) -> (Vec<u8>, Vec<u8>) {
    let low = window_key(key, from_ms, 0);
    let high = match to_ms.checked_add(1) {
        Some(t) => window_key(key, t, 0),
        None => {
            let mut k = key_prefix(key);
            k.extend_from_slice(&[0xff; 13]);
            k
        }
    };
    (low, high)
}

/// The session store key of `key`'s session `[start_ms, end_ms]`.
pub fn session_key(key: &[u8], start_ms: i64, end_ms: i64) -> Vec<u8> {
    let mut out = key_prefix(key);
    out.extend_from_slice(&time_bytes(end_ms));
    out.extend_from_slice(&time_bytes(start_ms));
    out
}

/// The (key, start, end) of a session store key.
pub fn split_session_key(stored: &[u8]) -> Option<(&[u8], i64, i64)> {
    let len = u32::from_be_bytes(stored.get(..4)?.try_into().ok()?) as usize;
    let key = stored.get(4..4 + len)?;
    let rest = stored.get(4 + len..)?;
    if rest.len() != 16 {
        return None;
    }
    Some((key, time_from(&rest[8..]), time_from(rest)))
}

/// Session store bounds: every session of `key` that ends at or after
/// `end_from_ms`.
pub fn sessions_ending_from(key: &[u8], end_from_ms: i64) -> (Vec<u8>, Vec<u8>) {
    let mut low = key_prefix(key);
    low.extend_from_slice(&time_bytes(end_from_ms));
    let mut high = key_prefix(key);
    high.extend_from_slice(&[0xff; 17]);
    (low, high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_keys_sort_by_key_then_time_including_negative_times() {
        let mut keys = [
            window_key(b"b", 0, 0),
            window_key(b"a", 10, 0),
            window_key(b"a", -5, 0),
            window_key(b"a", 10, 1),
        ];
        keys.sort();
        let split: Vec<_> = keys.iter().map(|k| split_window_key(k).unwrap()).collect();
        assert_eq!(
            split,
            vec![
                (&b"a"[..], -5, 0),
                (&b"a"[..], 10, 0),
                (&b"a"[..], 10, 1),
                (&b"b"[..], 0, 0)
            ]
        );
    }

    #[test]
    fn a_window_range_holds_one_keys_entries_in_the_time_bounds_only() {
        let mut store = MemoryEngine::default();
        for (k, t) in [(&b"a"[..], 0), (b"a", 5), (b"a", 10), (b"ab", 5), (b"b", 5)] {
            store.put(&window_key(k, t, 0), Some(b"v"));
        }
        let (low, high) = window_range(b"a", 5, 10);
        let found: Vec<_> = store
            .range(&low, &high)
            .iter()
            .map(|(k, _)| split_window_key(k).unwrap().1)
            .collect();
        assert_eq!(found, vec![5, 10]);
    }

    #[test]
    fn session_keys_round_trip_and_sort_by_end() {
        let k = session_key(b"u", 3, 9);
        assert_eq!(split_session_key(&k), Some((&b"u"[..], 3, 9)));
        assert!(session_key(b"u", 0, 5) < session_key(b"u", 1, 6));
        let (low, high) = sessions_ending_from(b"u", 6);
        assert!(session_key(b"u", 0, 5) < low);
        assert!(low <= session_key(b"u", 1, 6) && session_key(b"u", 1, 6) < high);
    }

    #[test]
    fn a_logged_store_records_its_writes_and_restores_without_logging() {
        let spec = StoreSpec {
            name: "s".into(),
            kind: StoreKind::KeyValue,
            logged: true,
        };
        let mut s = StateStore::new(spec, Box::<MemoryEngine>::default());
        s.put(b"k", Some(b"1"));
        s.put(b"k", None);
        s.restore(b"j", Some(b"2"));
        assert_eq!(
            s.take_changelog(),
            vec![(b"k".to_vec(), Some(b"1".to_vec())), (b"k".to_vec(), None)]
        );
        assert_eq!(s.get(b"j"), Some(b"2".to_vec()));
        assert!(s.take_changelog().is_empty());
    }
}
