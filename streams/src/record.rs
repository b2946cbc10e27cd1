//! What flows between the operators of a topology: a typed record with
//! its timestamp and headers, a table's change, and a windowed key.

/// A record's headers, in order (Kafka allows repeated names and null
/// values).
pub type Headers = Vec<(String, Option<Vec<u8>>)>;

/// A typed record inside a topology.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<K, V> {
    pub key: K,
    pub value: V,
    /// Event time, milliseconds since the epoch.
    pub timestamp: i64,
    pub headers: Headers,
}

impl<K, V> Record<K, V> {
    pub fn new(key: K, value: V, timestamp: i64) -> Record<K, V> {
        Record {
            key,
            value,
            timestamp,
            headers: Vec::new(),
        }
    }

    /// The same timestamp and headers around another key and value.
    pub fn with<K2, V2>(self, key: K2, value: V2) -> Record<K2, V2> {
        Record {
            key,
            value,
            timestamp: self.timestamp,
            headers: self.headers,
        }
    }
}

/// An update of a table's row: its value after and before (`None`: the
/// row does not exist / is deleted).
#[derive(Debug, Clone, PartialEq)]
pub struct Change<V> {
    pub new: Option<V>,
    pub old: Option<V>,
}

/// A time window: `[start_ms, end_ms)` for tumbling and hopping windows;
/// `[start_ms, end_ms]` (both ends included) for sliding windows and
/// sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// A key of a windowed aggregation: the grouping key and its window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Windowed<K> {
    pub key: K,
    pub window: Window,
}
