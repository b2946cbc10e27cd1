//! Broker-side schema validation: topics with
//! `confluent.value.schema.validation=true` (or `.key.`) accept only
//! records framed the Confluent way (magic 0, 4-byte schema id, Avro body)
//! whose id is registered under the topic's subject and whose body is one
//! datum of that schema.
//!
//! The broker reads the registry's state from its own `_schemas`
//! partition, in process, through [`InternalTopics`] (it never sees the
//! broker): [`SchemaCatalog`] applies the records it has not
//! seen yet with the registry's [`Store`] rules, so it agrees with every
//! registry that reads the same topic. It catches up whenever the topic
//! has grown, before validating, so a schema registered a moment ago (the
//! registry answers only after its record is in the log) is known to the
//! very next produce.
//!
//! What it is not: a registry. Nothing here writes to `_schemas`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use runnel_schema_registry::records::{Record, SCHEMAS_TOPIC};
use runnel_schema_registry::validate::{split, AvroValidator, PayloadError};
use runnel_schema_registry::Store;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::config::{SchemaValidation, SubjectNameStrategy};
use crate::error::{BrokerError, InvalidRecord};
use crate::internal_topic::InternalTopics;
use crate::log_limit::{LogLimit, DEFAULT_INTERVAL};
use crate::storage::batch::BatchIter;
use crate::storage::records::{records_section, RawRecords, MAX_DECOMPRESSED_BYTES};
use crate::storage::ReadError;
use crate::util::lock;

/// Bytes of `_schemas` read per step while catching up.
const CATCH_UP_READ_BYTES: usize = 4 << 20;
/// Any client can produce garbage to `_schemas`: one line per interval.
static UNREADABLE_LOG: LogLimit = LogLimit::new(DEFAULT_INTERVAL);

/// One compiled validator per schema id (or why the schema cannot be used).
type Compiled = Arc<Result<AvroValidator, String>>;

struct State {
    store: Store,
    /// Next offset of `_schemas` partition 0 to apply.
    position: i64,
    /// The topic's id, so that a recreated topic is read from scratch.
    topic_id: Option<Uuid>,
    validators: HashMap<i32, Compiled>,
}

/// The registry state as the broker sees it, for validation.
pub struct SchemaCatalog {
    /// Where `_schemas` is read from.
    topics: Arc<dyn InternalTopics>,
    state: RwLock<State>,
    /// Serialises catching up.
    catching_up: Mutex<()>,
}

impl SchemaCatalog {
    /// A catalog that reads `_schemas` from `topics` (nothing is read
    /// until the first validation).
    pub fn new(topics: Arc<dyn InternalTopics>) -> Self {
        SchemaCatalog {
            topics,
            state: RwLock::new(State {
                store: Store::new(),
                position: 0,
                topic_id: None,
                validators: HashMap::new(),
            }),
            catching_up: Mutex::new(()),
        }
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies the `_schemas` records appended since the last call.
    pub fn catch_up(&self) {
        let Some((topic_id, partition)) = self.topics.partition(SCHEMAS_TOPIC, 0) else {
            return;
        };
        let (_, end) = partition.bounds();
        {
            let s = self.read_state();
            if s.topic_id == Some(topic_id) && s.position >= end {
                return;
            }
        }
        let _one = lock(&self.catching_up);
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if state.topic_id != Some(topic_id) {
            if state.topic_id.is_some() {
                info!("{SCHEMAS_TOPIC} was recreated; reading it from the start");
            }
            state.store = Store::new();
            state.validators.clear();
            state.position = partition.bounds().0;
            state.topic_id = Some(topic_id);
        }
        let mut applied = 0usize;
        while state.position < end {
            let read = partition.read(state.position, CATCH_UP_READ_BYTES);
            let bytes = match read {
                Ok(Some(bytes)) => bytes,
                Ok(None) => break,
                Err(BrokerError::Read(ReadError::OffsetOutOfRange { log_start, .. }))
                    if log_start > state.position =>
                {
                    state.position = log_start;
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "reading {SCHEMAS_TOPIC} for schema validation failed");
                    break;
                }
            };
            let before = state.position;
            for item in BatchIter::new(&bytes, false) {
                let Ok((at, header)) = item else { break };
                let next = header.next_offset();
                if next <= state.position || header.is_control() {
                    state.position = state.position.max(next);
                    continue;
                }
                let raw = bytes.slice(at..at + header.total_bytes());
                // A batch that does not decode (anyone can produce to the
                // topic) is skipped, not retried forever.
                match records_section(&raw, MAX_DECOMPRESSED_BYTES) {
                    Ok(section) => {
                        let count = header.records_count.max(0) as usize;
                        for r in RawRecords::new(&section, count) {
                            let Ok(r) = r else {
                                if let Some(suppressed) = UNREADABLE_LOG.admit() {
                                    warn!(
                                        offset = header.base_offset,
                                        suppressed,
                                        "skipping the rest of an unreadable {SCHEMAS_TOPIC} batch"
                                    );
                                }
                                break;
                            };
                            if header.base_offset + (r.offset_delta as i64) < state.position {
                                continue;
                            }
                            match Record::decode(r.key, r.value) {
                                Ok(record) => {
                                    state.store.apply(record);
                                    applied += 1;
                                }
                                Err(e) => debug!(error = %e, "skipping a schemas record"),
                            }
                        }
                    }
                    Err(e) => {
                        if let Some(suppressed) = UNREADABLE_LOG.admit() {
                            warn!(offset = header.base_offset, error = %e, suppressed, "skipping an unreadable {SCHEMAS_TOPIC} batch")
                        }
                    }
                }
                state.position = next;
            }
            if state.position <= before {
                break;
            }
        }
        if applied > 0 {
            // An id may have been deleted and (in IMPORT mode) given to
            // another schema: compile again what is used next.
            state.validators.clear();
            debug!(
                records = applied,
                position = state.position,
                "schema catalog caught up"
            );
        }
    }

    fn compiled(&self, id: i32) -> Option<Compiled> {
        if let Some(v) = self.read_state().validators.get(&id) {
            return Some(v.clone());
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let compiled = match state.store.parsed(id) {
            Ok(parsed) => Arc::new(AvroValidator::new(&parsed.schema)),
            Err(e) if state.store.schema(id).is_some() => Arc::new(Err(e.to_string())),
            Err(_) => return None,
        };
        state.validators.insert(id, compiled.clone());
        Some(compiled)
    }

    /// The subject a schema must be registered under.
    fn subject_for(
        &self,
        strategy: SubjectNameStrategy,
        topic: &str,
        field: &'static str,
        id: i32,
    ) -> Result<String, PayloadError> {
        let record_name = || {
            self.read_state()
                .store
                .parsed(id)
                .ok()
                .and_then(|p| p.full_name())
                .ok_or_else(|| PayloadError::UnusableSchema {
                    id,
                    reason: "the subject name strategy needs a named (record) schema".into(),
                })
        };
        Ok(match strategy {
            SubjectNameStrategy::Topic => format!("{topic}-{field}"),
            SubjectNameStrategy::Record => record_name()?,
            SubjectNameStrategy::TopicRecord => format!("{topic}-{}", record_name()?),
        })
    }

    fn registered_under(&self, id: i32, subject: &str) -> bool {
        self.read_state()
            .store
            .id_versions(id, false)
            .iter()
            .any(|(s, _)| s == subject)
    }

    /// Checks one key or value.
    fn check_payload(
        &self,
        topic: &str,
        field: &'static str,
        strategy: SubjectNameStrategy,
        payload: &[u8],
        last: &mut Option<(i32, Compiled)>,
    ) -> Result<(), PayloadError> {
        let (id, body) = split(payload)?;
        if last.as_ref().is_none_or(|(last_id, _)| *last_id != id) {
            let compiled = match self.compiled(id) {
                Some(v) => v,
                None => {
                    // Registered a moment ago? Read the newest records.
                    self.catch_up();
                    self.compiled(id).ok_or(PayloadError::UnknownId(id))?
                }
            };
            let subject = self.subject_for(strategy, topic, field, id)?;
            if !self.registered_under(id, &subject) {
                self.catch_up();
                if !self.registered_under(id, &subject) {
                    return Err(PayloadError::WrongSubject { id, subject });
                }
            }
            *last = Some((id, compiled));
        }
        // Records of a batch mostly share one schema: no lookup, no
        // reference count per record.
        let Some((_, validator)) = last.as_ref() else {
            return Err(PayloadError::UnknownId(id));
        };
        match &**validator {
            Ok(v) => v
                .check(body)
                .map_err(|(reason, offset)| PayloadError::BadBody { id, reason, offset }),
            Err(reason) => Err(PayloadError::UnusableSchema {
                id,
                reason: reason.clone(),
            }),
        }
    }

    /// Validates every record of a produced record set against the
    /// topic's policy. Batches that do not parse are left to the append,
    /// which rejects them as corrupt.
    pub fn validate(
        &self,
        topic: &str,
        policy: SchemaValidation,
        records: &Bytes,
    ) -> Result<(), InvalidRecord> {
        self.catch_up();
        let mut last_key = None;
        let mut last_value = None;
        for item in BatchIter::new(records, false) {
            let Ok((at, header)) = item else {
                return Ok(());
            };
            let invalid = |index: i32, field, reason: String| InvalidRecord {
                batch_index: index,
                field,
                reason,
            };
            if header.is_control() {
                // Only transaction coordinators write control batches.
                return Err(invalid(
                    0,
                    "batch",
                    "a client cannot produce a control batch".into(),
                ));
            }
            let raw = records.slice(at..at + header.total_bytes());
            let section = records_section(&raw, MAX_DECOMPRESSED_BYTES)
                .map_err(|e| invalid(0, "batch", e.to_string()))?;
            let count = header.records_count.max(0) as usize;
            let mut walk = RawRecords::new(&section, count);
            for (index, record) in walk.by_ref().enumerate() {
                let index = index as i32;
                let record = record.map_err(|e| invalid(index, "record", e.to_string()))?;
                if record.offset_delta != index {
                    return Err(invalid(
                        index,
                        "record",
                        format!("offset delta {} where {index} belongs", record.offset_delta),
                    ));
                }
                for (field, strategy, payload) in [
                    ("key", policy.key, record.key),
                    ("value", policy.value, record.value),
                ] {
                    // A null key or value (a tombstone) carries no schema.
                    let (Some(strategy), Some(payload)) = (strategy, payload) else {
                        continue;
                    };
                    let last = if field == "key" {
                        &mut last_key
                    } else {
                        &mut last_value
                    };
                    self.check_payload(topic, field, strategy, payload, last)
                        .map_err(|e| invalid(index, field, e.to_string()))?;
                }
            }
            walk.finish()
                .map_err(|e| invalid(count as i32, "batch", e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::internal_topic::testing::{LogPartition, LogTopics};
    use crate::internal_topic::InternalPartition;
    use kafka_protocol::records::{
        Compression, Record as KafkaRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use runnel_schema_registry::records::SchemaValue;

    type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

    /// One uncompressed batch of these keys and values.
    fn batch(records: &[KeyValue]) -> Bytes {
        let records: Vec<KafkaRecord> = records
            .iter()
            .enumerate()
            .map(|(i, (key, value))| KafkaRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32 - 1,
                timestamp: 1000,
                key: key.clone().map(Bytes::from),
                value: value.clone().map(Bytes::from),
                headers: Default::default(),
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.freeze()
    }

    /// The `_schemas` record of a registration.
    fn registered(subject: &str, id: i32, schema: &str) -> KeyValue {
        let value = SchemaValue {
            subject: subject.into(),
            version: 1,
            id,
            schema_type: Default::default(),
            references: Vec::new(),
            schema: schema.into(),
            deleted: false,
        };
        let (key, value) = Record::Schema(subject.into(), 1, Some(value)).encode();
        (Some(key), value)
    }

    /// A produced record set: one value in the Confluent framing.
    fn produced(id: i32, avro: &[u8]) -> Bytes {
        let mut value = vec![0];
        value.extend_from_slice(&id.to_be_bytes());
        value.extend_from_slice(avro);
        batch(&[(None, Some(value))])
    }

    /// `_schemas` partition 0 in `dir`, as a topic with a new id.
    async fn schemas_topic(topics: &LogTopics, dir: &std::path::Path, records: &[KeyValue]) {
        let partition = LogPartition::open(dir, 0);
        partition.clone().append(batch(records)).await.unwrap();
        topics.create(SCHEMAS_TOPIC, vec![partition]);
    }

    #[tokio::test]
    async fn the_catalog_follows_schemas_through_internal_topics_without_a_broker() {
        let dir = tempfile::tempdir().unwrap();
        let topics = Arc::new(LogTopics::default());
        let catalog = SchemaCatalog::new(topics.clone());
        let policy = SchemaValidation {
            key: None,
            value: Some(SubjectNameStrategy::Topic),
        };
        // The Avro string "hi": its length (2, zigzag: 4), then the bytes.
        let hi = b"\x04hi";
        assert!(
            catalog
                .validate("orders", policy, &produced(1, hi))
                .is_err(),
            "no {SCHEMAS_TOPIC} yet: no schema is known"
        );

        let first = dir.path().join("first");
        schemas_topic(
            &topics,
            &first,
            &[registered("orders-value", 1, "\"string\"")],
        )
        .await;
        catalog
            .validate("orders", policy, &produced(1, hi))
            .unwrap();
        let unknown = catalog
            .validate("orders", policy, &produced(2, hi))
            .unwrap_err();
        assert!(unknown.reason.contains('2'), "{unknown}");
        assert!(catalog
            .validate("orders", policy, &produced(1, b"\x05"))
            .is_err());

        // The topic deleted and created again: read from its start, so
        // id 1 now belongs to another subject only.
        let second = dir.path().join("second");
        schemas_topic(
            &topics,
            &second,
            &[registered("payments-value", 1, "\"string\"")],
        )
        .await;
        let moved = catalog
            .validate("orders", policy, &produced(1, hi))
            .unwrap_err();
        assert!(moved.reason.contains("orders-value"), "{moved}");
        catalog
            .validate("payments", policy, &produced(1, hi))
            .unwrap();
    }
}
