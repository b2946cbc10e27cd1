//! Two helpers every layer above storage uses: the wall clock in Unix
//! milliseconds, and a mutex lock that survives poisoning.

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Locks a mutex, ignoring poisoning: a panic elsewhere must not wedge
/// every later request (the data it guards is kept consistent by the log's
/// own write-then-publish ordering).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
