//! Durable storage: a segmented, append-only log per partition.
//!
//! Layers, bottom up:
//! - [`batch`]: the v2 record batch header, validation and CRC-32C.
//! - [`index`]: sparse offset and time indexes of one segment.
//! - [`segment`]: one `.log` file with its indexes.
//! - [`handles`]: open files: read handles of closed segments, opened on
//!   demand in a bounded cache, and the open-file limit.
//! - [`log`]: the partition log (append as leader or follower, read up to a
//!   bound, roll, retention, truncation, recovery).
//! - [`checkpoint`]: recovery-point and log-start checkpoint files.
//! - [`epochs`]: the leader-epoch cache and its `leader-epoch-checkpoint`.
//! - [`records`]: decoding records inside a batch, with a decompression cap.
//! - [`validator`]: the per-record rules of an append (keys, timestamps) and
//!   the header and codec changes the broker makes on the way in.
//! - [`legacy`]: message format v0/v1 (Produce v0-2, Fetch v0-3), converted
//!   to and from v2 batches.
//! - [`producer_state`]: idempotent producers' sequence state and its snapshots.
//! - [`cleaner`]: log compaction, rewriting closed segments in the background.
//!
//! Storage knows nothing about the Kafka wire protocol, topics' configs or
//! networking; the broker module maps requests onto it.

mod append;
pub mod batch;
pub mod checkpoint;
pub mod cleaner;
pub mod epochs;
pub mod handles;
pub mod index;
pub mod legacy;
pub mod log;
pub mod producer_state;
pub mod records;
pub mod segment;
mod swap;
pub mod validator;

pub use log::{
    AppendError, AppendInfo, FollowerAppendError, LogConfig, LogRecovery, PartitionLog, ReadError,
    ReadSlice, TimestampType,
};
