//! The registry service: reads from the local [`Store`], writes through a
//! [`SchemaLog`] with the plan → append → apply → verify cycle described
//! in [`crate::store`].
//!
//! Reads never wait for the log. A write first catches up with the end
//! of the log (so it plans against every record written so far, by any
//! process), and answers only after its own records were applied, so a
//! client reads its writes from this registry at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::error::RegistryError;
use crate::records::Record;
use crate::store::{RegisterPlan, SchemaRequest, Store};

/// Where records are appended. The implementation also runs the reader
/// that applies every record of the log to the store.
pub trait SchemaLog: Send + Sync + 'static {
    /// Appends records in order; returns the offset of the last one.
    fn append(&self, records: Vec<Record>) -> BoxFuture<'_, Result<i64, RegistryError>>;
    /// The offset the next record will get.
    fn end_offset(&self) -> BoxFuture<'_, Result<i64, RegistryError>>;
    /// Sends anything buffered and stops the reader (on shutdown).
    fn close(&self) {}
}

/// How many times a write is planned again after losing to a concurrent
/// writer.
const MAX_WRITE_ATTEMPTS: usize = 8;

/// Counters exported at `/metrics`.
#[derive(Debug, Default)]
pub struct RegistryMetrics {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub registrations: AtomicU64,
    pub lookups_by_id: AtomicU64,
    pub write_conflicts: AtomicU64,
}

/// A registry over one log.
pub struct Registry {
    store: Arc<RwLock<Store>>,
    applied: watch::Receiver<i64>,
    log: Arc<dyn SchemaLog>,
    writes: tokio::sync::Mutex<()>,
    timeout: Duration,
    pub metrics: RegistryMetrics,
}

impl Registry {
    /// A registry whose `log` applies records to `store` and announces
    /// the next offset to apply on `applied`.
    pub fn new(
        store: Arc<RwLock<Store>>,
        applied: watch::Receiver<i64>,
        log: Arc<dyn SchemaLog>,
        timeout: Duration,
    ) -> Registry {
        Registry {
            store,
            applied,
            log,
            writes: tokio::sync::Mutex::new(()),
            timeout,
            metrics: RegistryMetrics::default(),
        }
    }

    /// The state, for reads.
    pub fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The next offset the reader will apply.
    pub fn applied_offset(&self) -> i64 {
        *self.applied.borrow()
    }

    /// Waits until everything before `offset` is applied.
    async fn wait_applied(&self, offset: i64) -> Result<(), RegistryError> {
        let mut rx = self.applied.clone();
        let wait = async move { rx.wait_for(|applied| *applied >= offset).await.map(|_| ()) };
        match tokio::time::timeout(self.timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(RegistryError::Store("the schemas reader stopped".into())),
            Err(_) => Err(RegistryError::Timeout(format!(
                "the schemas topic was not read up to offset {offset} within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// Catches up with every record written so far.
    pub async fn sync(&self) -> Result<(), RegistryError> {
        let end = self.log.end_offset().await?;
        self.wait_applied(end).await
    }

    async fn append(&self, records: Vec<Record>) -> Result<(), RegistryError> {
        let last = self.log.append(records).await?;
        self.wait_applied(last + 1).await
    }

    /// Runs a write that cannot conflict (configs, modes, deletes: the
    /// last writer wins, as in Confluent): plan against the caught-up
    /// state, append, wait until applied.
    pub async fn write<T>(
        &self,
        plan: impl Fn(&Store) -> Result<(T, Vec<Record>), RegistryError>,
    ) -> Result<T, RegistryError> {
        let _one_at_a_time = self.writes.lock().await;
        self.sync().await?;
        let (out, records) = plan(&self.read())?;
        if !records.is_empty() {
            self.append(records).await?;
        }
        Ok(out)
    }

    /// Registers a schema: `(id, version)`.
    pub async fn register(
        &self,
        subject: &str,
        req: &SchemaRequest,
        normalize: bool,
    ) -> Result<(i32, i32), RegistryError> {
        // Fast path without the log: the subject already has it.
        if let Ok(RegisterPlan::Existing { id, version }) =
            self.read().plan_register(subject, req, normalize)
        {
            return Ok((id, version));
        }
        let _one_at_a_time = self.writes.lock().await;
        for attempt in 1..=MAX_WRITE_ATTEMPTS {
            // Plan against every record written so far, by any registry.
            // (Planning against a stale state would usually be caught by
            // the check below, but not a new id that a permanent delete
            // elsewhere has just freed.)
            self.sync().await?;
            let plan = self.read().plan_register(subject, req, normalize)?;
            let (record, id, version) = match plan {
                RegisterPlan::Existing { id, version } => return Ok((id, version)),
                RegisterPlan::New {
                    record,
                    id,
                    version,
                } => (record, id, version),
            };
            self.append(vec![record.clone()]).await?;
            if self.read().took_effect(&record) {
                self.metrics.registrations.fetch_add(1, Ordering::Relaxed);
                info!(subject, id, version, "registered schema");
                return Ok((id, version));
            }
            // Another registry wrote a conflicting record first, and every
            // reader ignores ours. It must not outlive that: compaction
            // keeps only the latest record of a key, and could leave ours
            // alone. Read to the end, then write the key's current value
            // (or a marker readers ignore) after it.
            self.metrics.write_conflicts.fetch_add(1, Ordering::Relaxed);
            debug!(
                subject,
                id, version, attempt, "registration lost to a concurrent writer"
            );
            self.sync().await?;
            let supersede = self.read().supersede(subject, version);
            self.append(vec![supersede]).await?;
        }
        Err(RegistryError::Store(format!(
            "registering under {subject} kept conflicting with concurrent writes; gave up after {MAX_WRITE_ATTEMPTS} attempts"
        )))
    }

    /// Flushes and stops the log's clients.
    pub fn close(&self) {
        self.log.close();
    }
}

/// A log kept in memory, applied synchronously: for tests and for
/// running the REST API without a broker.
pub struct MemoryLog {
    records: std::sync::Mutex<Vec<Record>>,
    store: Arc<RwLock<Store>>,
    applied: watch::Sender<i64>,
}

impl MemoryLog {
    /// A registry over an empty in-memory log.
    pub fn registry() -> (Arc<Registry>, Arc<MemoryLog>) {
        let store = Arc::new(RwLock::new(Store::new()));
        let (tx, rx) = watch::channel(0);
        let log = Arc::new(MemoryLog {
            records: std::sync::Mutex::new(Vec::new()),
            store: store.clone(),
            applied: tx,
        });
        let registry = Registry::new(store, rx, log.clone(), Duration::from_secs(5));
        (Arc::new(registry), log)
    }

    /// Every record appended so far.
    pub fn records(&self) -> Vec<Record> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Appends a record as another writer would, applying it at once.
    pub fn push(&self, record: Record) -> i64 {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.push(record.clone());
        self.store
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(record);
        let next = records.len() as i64;
        self.applied.send_replace(next);
        next - 1
    }
}

impl SchemaLog for MemoryLog {
    fn append(&self, records: Vec<Record>) -> BoxFuture<'_, Result<i64, RegistryError>> {
        Box::pin(async move {
            let mut last = -1;
            for r in records {
                last = self.push(r);
            }
            Ok(last)
        })
    }

    fn end_offset(&self) -> BoxFuture<'_, Result<i64, RegistryError>> {
        Box::pin(
            async move { Ok(self.records.lock().unwrap_or_else(|e| e.into_inner()).len() as i64) },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::SchemaValue;
    use crate::schema::SchemaType;
    use std::sync::atomic::AtomicBool;

    /// A log where another registry writes a competing record just before
    /// the first append of this one.
    struct RacingLog {
        inner: Arc<MemoryLog>,
        competitor: std::sync::Mutex<Option<Record>>,
        raced: AtomicBool,
    }

    impl SchemaLog for RacingLog {
        fn append(&self, records: Vec<Record>) -> BoxFuture<'_, Result<i64, RegistryError>> {
            if let Some(r) = self.competitor.lock().unwrap().take() {
                self.inner.push(r);
                self.raced.store(true, Ordering::SeqCst);
            }
            self.inner.append(records)
        }

        fn end_offset(&self) -> BoxFuture<'_, Result<i64, RegistryError>> {
            self.inner.end_offset()
        }
    }

    /// What compaction leaves of a log: the latest record of each key, in
    /// log order (tombstones kept, as within `delete.retention.ms`).
    fn compact(records: &[Record]) -> Vec<Record> {
        let mut last = std::collections::HashMap::new();
        for (i, r) in records.iter().enumerate() {
            last.insert(r.key(), i);
        }
        records
            .iter()
            .enumerate()
            .filter(|(i, r)| last.get(&r.key()) == Some(i))
            .map(|(_, r)| r.clone())
            .collect()
    }

    fn replay(records: &[Record]) -> Store {
        let mut store = Store::new();
        for r in records {
            store.apply(r.clone());
        }
        store
    }

    #[tokio::test]
    async fn a_loser_on_another_key_is_superseded_so_compaction_cannot_revive_it() {
        let (_, memory) = MemoryLog::registry();
        // Another registry gives id 1 to "string" under subject a just
        // before this one plans id 1 for "int" under subject b.
        let winner = Record::Schema(
            "a".into(),
            1,
            Some(SchemaValue {
                subject: "a".into(),
                version: 1,
                id: 1,
                schema_type: SchemaType::Avro,
                references: vec![],
                schema: "\"string\"".into(),
                deleted: false,
            }),
        );
        let log = Arc::new(RacingLog {
            inner: memory.clone(),
            competitor: std::sync::Mutex::new(Some(winner)),
            raced: AtomicBool::new(false),
        });
        let registry = Registry::new(
            memory.store.clone(),
            memory.applied.subscribe(),
            log.clone(),
            Duration::from_secs(5),
        );
        let req = SchemaRequest {
            schema: "\"int\"".into(),
            ..Default::default()
        };
        assert_eq!(registry.register("b", &req, false).await.unwrap(), (2, 1));
        // Later the winner's key is written again (a soft delete), which
        // moves its surviving record after the loser's in a compacted log.
        let (_, records) = memory
            .store
            .read()
            .unwrap()
            .plan_delete_subject("a", false)
            .unwrap();
        for r in records {
            memory.push(r);
        }
        let full = memory.records();
        for log in [full.clone(), compact(&full)] {
            let store = replay(&log);
            assert_eq!(store.schema(1).unwrap().canonical, "\"string\"");
            assert_eq!(store.schema(2).unwrap().canonical, "\"int\"");
            assert!(store.registered("b", 1, 2));
        }
    }

    #[tokio::test]
    async fn a_registration_that_loses_a_race_restates_the_winner_and_retries() {
        let (_, memory) = MemoryLog::registry();
        let winner = Record::Schema(
            "s".into(),
            1,
            Some(SchemaValue {
                subject: "s".into(),
                version: 1,
                id: 1,
                schema_type: SchemaType::Avro,
                references: vec![],
                schema: "\"string\"".into(),
                deleted: false,
            }),
        );
        let log = Arc::new(RacingLog {
            inner: memory.clone(),
            competitor: std::sync::Mutex::new(Some(winner.clone())),
            raced: AtomicBool::new(false),
        });
        let registry = Registry::new(
            memory.store.clone(),
            memory.applied.subscribe(),
            log.clone(),
            Duration::from_secs(5),
        );
        let req = SchemaRequest {
            schema: "\"long\"".into(),
            ..Default::default()
        };
        // "long" is not a compatible successor of "string" under BACKWARD,
        // so make the subject NONE first.
        memory.push(Record::Config(
            Some("s".into()),
            Some(crate::records::ConfigValue {
                compatibility_level: crate::compat::CompatibilityLevel::None,
            }),
        ));
        let (id, version) = registry.register("s", &req, false).await.unwrap();
        assert!(log.raced.load(Ordering::SeqCst));
        assert_eq!((id, version), (2, 2), "planned again above the winner");
        assert_eq!(registry.metrics.write_conflicts.load(Ordering::Relaxed), 1);
        // In the log: winner, our losing record, the winner restated, ours.
        // The latest record for key (s, 1) is the winner, so compaction
        // keeps it.
        let records = memory.records();
        let latest_for_s1 = records
            .iter()
            .rev()
            .find(|r| matches!(r, Record::Schema(s, 1, _) if s == "s"))
            .unwrap();
        assert_eq!(latest_for_s1, &winner);
        let mut replay = Store::new();
        for r in records {
            replay.apply(r);
        }
        assert!(replay.registered("s", 1, 1) && replay.registered("s", 2, 2));
    }
}
