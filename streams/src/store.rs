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
//! prefixed key:     u32 BE prefix length | prefix | rest
//! ```
//!
//! A prefixed key keeps every entry of one prefix together whatever the
//! rest, so [`StateStore::scan_prefix`] finds them all (a foreign-key
//! join's subscriptions: the foreign key, then the subscriber's key).
//!
//! A timestamped window store (sliding windows) has the window store's
//! keys; each value starts with the largest timestamp of the records in
//! the window:
//!
//! ```text
//! value: latest record timestamp (i64 BE) | aggregate bytes
//! ```

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

/// Why a store engine failed (a disk error, a full disk, a corrupt file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EngineError(pub String);

/// Key-value pairs a range read found, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Ordered bytes → bytes: what a store keeps its data in.
pub trait StoreEngine: Send {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;
    fn put(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), EngineError>;
    /// Entries with `from <= key < to`, in key order.
    fn range(&self, from: &[u8], to: &[u8]) -> Result<Entries, EngineError>;
    /// Entries in key order, from the first key `>= from`.
    fn range_from(&self, from: &[u8], limit: usize) -> Result<Entries, EngineError>;
    /// Entries (an estimate for engines that cannot count cheaply).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Applies many writes at once (restoring from a changelog).
    fn put_batch(&mut self, entries: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), EngineError> {
        for (k, v) in entries {
            self.put(k, v.as_deref())?;
        }
        Ok(())
    }
    /// Makes what was written durable (called before a clean close).
    fn flush(&mut self) -> Result<(), EngineError> {
        Ok(())
    }
    /// Removes every entry.
    fn clear(&mut self) -> Result<(), EngineError>;
}

/// What a store's bytes mean, for queries from outside: keys from URL
/// text, keys and values as JSON.
pub trait StoreCodec: Send + Sync {
    fn key_from_text(&self, text: &str) -> Result<Vec<u8>, crate::serdes::SerdeError>;
    fn key_to_json(&self, bytes: &[u8]) -> serde_json::Value;
    fn value_to_json(&self, bytes: &[u8]) -> serde_json::Value;
    /// A window store's window size (a window's end is its start plus
    /// this).
    fn window_size_ms(&self) -> Option<i64>;
}

struct Typed<K, V> {
    key: crate::serdes::SerdeRef<K>,
    value: crate::serdes::SerdeRef<V>,
    window_size_ms: Option<i64>,
}

impl<K: 'static, V: 'static> StoreCodec for Typed<K, V> {
    fn key_from_text(&self, text: &str) -> Result<Vec<u8>, crate::serdes::SerdeError> {
        crate::serdes::text_to_bytes(&self.key, text)
    }
    fn key_to_json(&self, bytes: &[u8]) -> serde_json::Value {
        crate::serdes::bytes_to_json(&self.key, Some(bytes))
    }
    fn value_to_json(&self, bytes: &[u8]) -> serde_json::Value {
        crate::serdes::bytes_to_json(&self.value, Some(bytes))
    }
    fn window_size_ms(&self) -> Option<i64> {
        self.window_size_ms
    }
}

/// The codec of a store whose keys are `K`s (a window store: the
/// windowed key's `K`) and values `V`s.
pub fn codec<K: 'static, V: 'static>(
    key: crate::serdes::SerdeRef<K>,
    value: crate::serdes::SerdeRef<V>,
    window_size_ms: Option<i64>,
) -> std::sync::Arc<dyn StoreCodec> {
    std::sync::Arc::new(Typed {
        key,
        value,
        window_size_ms,
    })
}

/// A [`StoreEngine`] in memory.
#[derive(Debug, Default)]
pub struct MemoryEngine(BTreeMap<Vec<u8>, Vec<u8>>);

impl StoreEngine for MemoryEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.0.get(key).cloned())
    }
    fn put(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), EngineError> {
        match value {
            Some(v) => {
                self.0.insert(key.to_vec(), v.to_vec());
            }
            None => {
                self.0.remove(key);
            }
        }
        Ok(())
    }
    fn range(&self, from: &[u8], to: &[u8]) -> Result<Entries, EngineError> {
        if from >= to {
            return Ok(Vec::new());
        }
        Ok(self
            .0
            .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn range_from(&self, from: &[u8], limit: usize) -> Result<Entries, EngineError> {
        Ok(self
            .0
            .range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) -> Result<(), EngineError> {
        self.0.clear();
        Ok(())
    }
}

/// A persistent [`StoreEngine`]: an LSM tree on local disk (`fjall`),
/// chosen over `redb` by the benchmark in BENCHMARKS.md (writes and
/// read-modify-writes faster, bulk restore 2.5x faster). Writes go to
/// its journal without an fsync; a store is trusted after a restart only
/// when a clean close wrote its checkpoint (the runtime rebuilds it from
/// the changelog otherwise), so a crash costs a restore, never a wrong
/// state.
pub struct FjallEngine {
    db: fjall::Database,
    keyspace: fjall::Keyspace,
    path: std::path::PathBuf,
}

fn fjall_error(path: &std::path::Path, e: impl std::fmt::Display) -> EngineError {
    EngineError(format!("{}: {e}", path.display()))
}

impl FjallEngine {
    pub fn open(path: &std::path::Path) -> Result<FjallEngine, EngineError> {
        let db = fjall::Database::builder(path)
            .cache_size(32 << 20)
            .open()
            .map_err(|e| fjall_error(path, e))?;
        let keyspace = db
            .keyspace("store", fjall::KeyspaceCreateOptions::default)
            .map_err(|e| fjall_error(path, e))?;
        Ok(FjallEngine {
            db,
            keyspace,
            path: path.to_path_buf(),
        })
    }

    fn collect(&self, iter: fjall::Iter, limit: usize) -> Result<Entries, EngineError> {
        let mut out = Vec::new();
        for guard in iter.take(limit) {
            let (k, v) = guard.into_inner().map_err(|e| fjall_error(&self.path, e))?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

impl StoreEngine for FjallEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.keyspace
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| fjall_error(&self.path, e))
    }
    fn put(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), EngineError> {
        match value {
            Some(v) => self.keyspace.insert(key, v),
            None => self.keyspace.remove(key),
        }
        .map_err(|e| fjall_error(&self.path, e))
    }
    fn range(&self, from: &[u8], to: &[u8]) -> Result<Entries, EngineError> {
        if from >= to {
            return Ok(Vec::new());
        }
        self.collect(self.keyspace.range(from..to), usize::MAX)
    }
    fn range_from(&self, from: &[u8], limit: usize) -> Result<Entries, EngineError> {
        self.collect(self.keyspace.range(from..), limit)
    }
    fn put_batch(&mut self, entries: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), EngineError> {
        // One journal write for the lot.
        let mut batch = self.db.batch();
        for (k, v) in entries {
            match v {
                Some(v) => batch.insert(&self.keyspace, k.as_slice(), v.as_slice()),
                None => batch.remove(&self.keyspace, k.as_slice()),
            }
        }
        batch.commit().map_err(|e| fjall_error(&self.path, e))
    }
    fn len(&self) -> usize {
        self.keyspace.approximate_len()
    }
    fn flush(&mut self) -> Result<(), EngineError> {
        self.db
            .persist(fjall::PersistMode::SyncAll)
            .map_err(|e| fjall_error(&self.path, e))
    }
    fn clear(&mut self) -> Result<(), EngineError> {
        self.keyspace
            .clear()
            .map_err(|e| fjall_error(&self.path, e))
    }
}

/// One engine several holders use: a global store's, written by whoever
/// keeps it up to date (the stream thread's global consumer, the test
/// driver) and read by every task of the instance. A lock around the
/// engine rather than a copy per task: a global store holds a whole
/// topic, once per instance.
#[derive(Clone)]
pub struct SharedEngine(Arc<Mutex<Box<dyn StoreEngine>>>);

impl SharedEngine {
    pub fn new(engine: Box<dyn StoreEngine>) -> SharedEngine {
        SharedEngine(Arc::new(Mutex::new(engine)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Box<dyn StoreEngine>> {
        // An engine call does not panic halfway through a write it cannot
        // finish (errors are returned): a poisoned lock's engine is whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StoreEngine for SharedEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.lock().get(key)
    }
    fn put(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), EngineError> {
        self.lock().put(key, value)
    }
    fn range(&self, from: &[u8], to: &[u8]) -> Result<Entries, EngineError> {
        self.lock().range(from, to)
    }
    fn range_from(&self, from: &[u8], limit: usize) -> Result<Entries, EngineError> {
        self.lock().range_from(from, limit)
    }
    fn len(&self) -> usize {
        self.lock().len()
    }
    fn put_batch(&mut self, entries: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), EngineError> {
        self.lock().put_batch(entries)
    }
    fn flush(&mut self) -> Result<(), EngineError> {
        self.lock().flush()
    }
    fn clear(&mut self) -> Result<(), EngineError> {
        self.lock().clear()
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
    /// Windows whose values carry the latest timestamp of their records
    /// (sliding windows: which windows exist depends on where the records
    /// are), kept for `retention_ms` of stream time.
    TimestampedWindow {
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
///
/// Operators see an infallible store: an engine error is kept
/// ([`StateStore::failure`]), reads answer nothing meanwhile, and the
/// runtime stops the task before it commits anything processed since.
pub struct StateStore {
    pub spec: StoreSpec,
    engine: Box<dyn StoreEngine>,
    pending: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    failure: Option<EngineError>,
}

impl StateStore {
    pub fn new(spec: StoreSpec, engine: Box<dyn StoreEngine>) -> StateStore {
        StateStore {
            spec,
            engine,
            pending: Vec::new(),
            failure: None,
        }
    }

    fn keep<T: Default>(&mut self, r: Result<T, EngineError>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => {
                if self.failure.is_none() {
                    self.failure = Some(e);
                }
                T::default()
            }
        }
    }

    /// The first engine error since the store was made, if any.
    pub fn failure(&self) -> Option<&EngineError> {
        self.failure.as_ref()
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        // Reads cannot record a failure through `&self`; a failing engine
        // fails its writes too, which do.
        self.engine.get(key).ok().flatten()
    }

    /// Writes (or with `None` deletes) `key`, and records the write for
    /// the changelog.
    pub fn put(&mut self, key: &[u8], value: Option<&[u8]>) {
        let r = self.engine.put(key, value);
        self.keep(r);
        if self.spec.logged {
            self.pending.push((key.to_vec(), value.map(<[u8]>::to_vec)));
        }
    }

    /// A write read back from the changelog: applied, not logged again.
    pub fn restore(&mut self, key: &[u8], value: Option<&[u8]>) {
        let r = self.engine.put(key, value);
        self.keep(r);
    }

    /// Writes read back from the changelog, in order, applied at once.
    pub fn restore_batch(&mut self, entries: &[(Vec<u8>, Option<Vec<u8>>)]) {
        let r = self.engine.put_batch(entries);
        self.keep(r);
    }

    pub fn range(&self, from: &[u8], to: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.engine.range(from, to).unwrap_or_default()
    }

    pub fn range_from(&self, from: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.engine.range_from(from, limit).unwrap_or_default()
    }

    /// Every entry whose key starts with `prefixed_key(prefix, ..)`, in
    /// key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let low = key_prefix(prefix);
        match prefix_end(&low) {
            Some(high) => self.range(&low, &high),
            // Only a prefix of 4 GiB has no end; scan to the last key.
            None => self
                .range_from(&low, usize::MAX)
                .into_iter()
                .take_while(|(k, _)| k.starts_with(&low))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.engine.len()
    }

    pub fn is_empty(&self) -> bool {
        self.engine.is_empty()
    }

    /// Makes the engine's contents durable.
    pub fn flush(&mut self) -> Result<(), EngineError> {
        self.engine.flush()
    }

    /// Empties the store (a local copy that cannot be trusted).
    pub fn clear(&mut self) -> Result<(), EngineError> {
        self.engine.clear()
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

/// The smallest key greater than every key starting with `start`, if any
/// (none when `start` is all `0xff`).
fn prefix_end(start: &[u8]) -> Option<Vec<u8>> {
    let mut end = start.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The prefixed key of (`prefix`, `rest`): `u32 BE prefix length |
/// prefix | rest`. The length keeps prefixes apart (`a` + `b` never
/// meets `ab` + ``).
pub fn prefixed_key(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut out = key_prefix(prefix);
    out.extend_from_slice(rest);
    out
}

/// The (prefix, rest) of a prefixed key.
pub fn split_prefixed_key(stored: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(stored.get(..4)?.try_into().ok()?) as usize;
    let prefix = stored.get(4..4usize.checked_add(len)?)?;
    Some((prefix, &stored[4 + len..]))
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

/// A timestamped window store's value: the window's latest record
/// timestamp, then the aggregate.
pub fn timestamped_value(latest_ms: i64, aggregate: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + aggregate.len());
    out.extend_from_slice(&latest_ms.to_be_bytes());
    out.extend_from_slice(aggregate);
    out
}

/// The (latest record timestamp, aggregate bytes) of a timestamped window
/// store's value.
pub fn split_timestamped_value(stored: &[u8]) -> Option<(i64, &[u8])> {
    let ts = i64::from_be_bytes(stored.get(..8)?.try_into().ok()?);
    Some((ts, &stored[8..]))
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
            store.put(&window_key(k, t, 0), Some(b"v")).unwrap();
        }
        let (low, high) = window_range(b"a", 5, 10);
        let found: Vec<_> = store
            .range(&low, &high)
            .unwrap()
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
    fn a_prefix_scan_finds_exactly_the_entries_of_its_prefix() {
        let spec = StoreSpec {
            name: "s".into(),
            kind: StoreKind::KeyValue,
            logged: false,
        };
        let mut s = StateStore::new(spec, Box::<MemoryEngine>::default());
        for (prefix, rest) in [
            (&b"a"[..], &b"1"[..]),
            (b"a", b""),
            (b"a", b"\xff\xff"),
            (b"ab", b"2"),
            (b"", b"3"),
            (b"a\xff", b"4"),
            (b"b", b"5"),
        ] {
            s.put(&prefixed_key(prefix, rest), Some(b"v"));
        }
        let rests = |s: &StateStore, prefix: &[u8]| -> Vec<Vec<u8>> {
            s.scan_prefix(prefix)
                .iter()
                .map(|(k, _)| {
                    let (p, rest) = split_prefixed_key(k).unwrap();
                    assert_eq!(p, prefix);
                    rest.to_vec()
                })
                .collect()
        };
        assert_eq!(
            rests(&s, b"a"),
            vec![b"".to_vec(), b"1".to_vec(), b"\xff\xff".to_vec()]
        );
        assert_eq!(rests(&s, b"a\xff"), vec![b"4".to_vec()]);
        assert_eq!(rests(&s, b""), vec![b"3".to_vec()]);
        assert!(rests(&s, b"c").is_empty());
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(split_prefixed_key(&[0, 0, 0, 9, 1]), None);
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
