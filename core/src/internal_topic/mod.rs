//! What a coordinator needs of the topic it keeps its state in: the
//! narrow interface between the broker and the components built on
//! internal topics (the group coordinator on `__consumer_offsets`, the
//! schema catalog following `_schemas`).
//!
//! The broker implements these traits and wires the coordinators to
//! them; the coordinators never see the broker. That keeps the import
//! graph one-way (broker → coordinators → this module) and gives the
//! replication layer one place to change what "append" means: in a
//! cluster, a coordinator is handed the partitions it leads (and loses
//! them when leadership moves), and an append returns once the in-sync
//! replicas have the records.
//!
//! What it is not: a client API. Reads return whole stored batches,
//! unchanged; records are encoded and decoded by the coordinators.

pub mod codec;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use uuid::Uuid;

use crate::error::BrokerError;
use crate::storage::batch::{BatchHeader, BatchIter};

/// One partition of an internal topic, as the coordinator that keeps its
/// state there uses it.
pub trait InternalPartition: Send + Sync {
    /// The partition's index in its topic.
    fn index(&self) -> i32;

    /// The log start offset and the high watermark: the offsets a
    /// coordinator may read, `[log_start, high_watermark)`.
    fn bounds(&self) -> (i64, i64);

    /// The stored batches from the one that holds `offset` on, below the
    /// high watermark: at most `max_bytes`, or the first batch whole if it
    /// is larger. `None` at the end of what may be read.
    fn read(&self, offset: i64, max_bytes: usize) -> Result<Option<Bytes>, BrokerError>;

    /// The log end offset: everything written here, committed or not.
    fn log_end(&self) -> i64;

    /// As [`InternalPartition::read`], but up to the log end. For the
    /// coordinator that leads the partition and loads it: a leader's own
    /// records become committed, or it loses the leadership and unloads.
    fn read_to_log_end(&self, offset: i64, max_bytes: usize) -> Result<Option<Bytes>, BrokerError>;

    /// Appends a record set (v2 batches) and returns once it is committed:
    /// written (and fsynced if the topic's flush policy asks for it) and,
    /// in a cluster, on every in-sync replica. Fails with
    /// `NotLeaderOrFollower` when this broker does not lead the partition
    /// (or stopped leading it before the records were committed). Returns
    /// the base offset the records got.
    fn append(self: Arc<Self>, records: Bytes) -> BoxFuture<'static, Result<i64, BrokerError>>;
}

/// Reads `partition` from its log start to its log end (what a
/// coordinator does when it takes the partition over), handing each
/// stored batch to `visit` with its header. Blocking (file reads).
pub fn replay(
    partition: &dyn InternalPartition,
    mut visit: impl FnMut(&BatchHeader, Bytes),
) -> Result<(), BrokerError> {
    let (log_start, _) = partition.bounds();
    let log_end = partition.log_end();
    let mut position = log_start;
    while position < log_end {
        let Some(bytes) = partition.read_to_log_end(position, 4 << 20)? else {
            break;
        };
        let mut advanced = false;
        for item in BatchIter::new(&bytes, false) {
            let Ok((at, header)) = item else { break };
            position = header.next_offset();
            advanced = true;
            visit(&header, bytes.slice(at..at + header.total_bytes()));
        }
        if !advanced {
            break;
        }
    }
    Ok(())
}

/// Encodes key/value pairs as one uncompressed batch for an internal topic:
/// a transactional batch of `producer` (id, epoch) for a transaction's
/// offsets (TxnOffsetCommit), else one of no producer.
pub fn encode_batch(
    entries: &[(Bytes, Option<Bytes>)],
    timestamp: i64,
    producer: Option<(i64, i16)>,
) -> Result<Bytes, BrokerError> {
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    let records: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // Keeps offset - sequence constant so the encoder emits one batch
            // with base sequence -1 (no sequence, as Kafka writes them).
            sequence: i as i32 - 1,
            timestamp,
            key: Some(key.clone()),
            value: value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| {
        BrokerError::Io(std::io::Error::other(format!(
            "encoding internal records: {e}"
        )))
    })?;
    Ok(buf.freeze())
}

/// Where a coordinator finds the internal topics it follows.
pub trait InternalTopics: Send + Sync {
    /// Partition `index` of `topic` with the topic's id (a topic deleted
    /// and created again has a new one), if both exist.
    fn partition(&self, topic: &str, index: i32) -> Option<(Uuid, Arc<dyn InternalPartition>)>;
}

/// Internal topics on real logs in a directory, with no broker around
/// them: what the coordinators' tests run on.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::Mutex;

    use super::*;
    use crate::storage::{LogConfig, PartitionLog};
    use crate::util::{lock, now_ms};

    /// One partition: a log of its own, everything appended is committed.
    pub struct LogPartition {
        index: i32,
        log: Mutex<PartitionLog>,
    }

    impl LogPartition {
        pub fn open(dir: &Path, index: i32) -> Arc<LogPartition> {
            let (log, _) = PartitionLog::open(dir, LogConfig::default(), 0, 0, now_ms()).unwrap();
            Arc::new(LogPartition {
                index,
                log: Mutex::new(log),
            })
        }
    }

    impl LogPartition {
        /// Writes a transaction marker, as WriteTxnMarkers does.
        pub fn append_marker(&self, producer_id: i64, producer_epoch: i16, commit: bool) {
            lock(&self.log)
                .append_marker(producer_id, producer_epoch, commit, 0, 0, now_ms())
                .unwrap();
        }
    }

    impl InternalPartition for LogPartition {
        fn index(&self) -> i32 {
            self.index
        }

        fn bounds(&self) -> (i64, i64) {
            let log = lock(&self.log);
            (log.log_start_offset(), log.log_end_offset())
        }

        fn read(&self, offset: i64, max_bytes: usize) -> Result<Option<Bytes>, BrokerError> {
            let log = lock(&self.log);
            // Everything appended is committed: the log end bounds reads.
            let high_watermark = log.log_end_offset();
            match log.read(offset, max_bytes, true, high_watermark)? {
                Some(slice) => Ok(Some(slice.read()?)),
                None => Ok(None),
            }
        }

        fn log_end(&self) -> i64 {
            lock(&self.log).log_end_offset()
        }

        fn read_to_log_end(
            &self,
            offset: i64,
            max_bytes: usize,
        ) -> Result<Option<Bytes>, BrokerError> {
            self.read(offset, max_bytes)
        }

        fn append(self: Arc<Self>, records: Bytes) -> BoxFuture<'static, Result<i64, BrokerError>> {
            Box::pin(async move {
                let info = lock(&self.log).append(&records, 0, now_ms())?;
                Ok(info.base_offset)
            })
        }
    }

    /// A topic's id and partitions.
    type TopicLogs = (Uuid, Vec<Arc<LogPartition>>);

    /// Topics by name.
    #[derive(Default)]
    pub struct LogTopics {
        topics: Mutex<HashMap<String, TopicLogs>>,
    }

    impl LogTopics {
        /// Makes `name` a topic of these partitions, with a new id (as a
        /// topic deleted and created again has).
        pub fn create(&self, name: &str, partitions: Vec<Arc<LogPartition>>) {
            lock(&self.topics).insert(name.to_string(), (Uuid::new_v4(), partitions));
        }
    }

    impl InternalTopics for LogTopics {
        fn partition(&self, topic: &str, index: i32) -> Option<(Uuid, Arc<dyn InternalPartition>)> {
            let topics = lock(&self.topics);
            let (id, partitions) = topics.get(topic)?;
            let partition = partitions.get(usize::try_from(index).ok()?)?.clone();
            Some((*id, partition))
        }
    }
}
