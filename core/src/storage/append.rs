//! What an append is refused with and the timestamp types it stamps:
//! shared by the log validator (which decides) and the partition log
//! (which writes), below both.

use std::io;

use super::batch::BatchError;
use super::producer_state::SequenceError;

/// Whether record timestamps are the producer's or the broker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Why an append was refused. Nothing was written when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("corrupt record batch: {0}")]
    Corrupt(BatchError),
    #[error("invalid record batch: {0}")]
    Invalid(String),
    /// Records the topic's rules refuse (keys, timestamps), by index.
    #[error("{0}")]
    Records(RecordErrors),
    #[error("record batch of {size} bytes exceeds max.message.bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("record set of {size} bytes is larger than segment.bytes ({segment_bytes})")]
    LargerThanSegment { size: usize, segment_bytes: u64 },
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error("a record set with several batches repeats an earlier batch of producer {0}")]
    DuplicateInRecordSet(i64),
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordErrorKind {
    InvalidRecord,
    InvalidTimestamp,
}

/// One refused record: its index in the record set and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub batch_index: i32,
    pub kind: RecordErrorKind,
    pub message: String,
}

/// The records of a record set that were refused (at most
/// `validator::MAX_RECORD_ERRORS` of them listed; `total` counts all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordErrors {
    pub errors: Vec<RecordError>,
    pub total: usize,
}

impl RecordErrors {
    /// The code of the whole answer: INVALID_TIMESTAMP if any record had a
    /// bad timestamp, INVALID_RECORD otherwise (as Kafka decides).
    pub fn kind(&self) -> RecordErrorKind {
        if self
            .errors
            .iter()
            .any(|e| e.kind == RecordErrorKind::InvalidTimestamp)
        {
            RecordErrorKind::InvalidTimestamp
        } else {
            RecordErrorKind::InvalidRecord
        }
    }
}

impl std::fmt::Display for RecordErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind() == RecordErrorKind::InvalidTimestamp {
            return write!(
                f,
                "One or more records have been rejected due to invalid timestamp"
            );
        }
        write!(
            f,
            "One or more records have been rejected due to {} record errors in total, \
             and only showing the first three errors at most: [",
            self.total
        )?;
        for (i, e) in self.errors.iter().take(3).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(
                f,
                "RecordError(batchIndex={}, message='{}')",
                e.batch_index, e.message
            )?;
        }
        f.write_str("]")
    }
}
