//! The one place where broker errors become Kafka error codes.

use kafka_protocol::ResponseError;

use crate::broker::BrokerError;
use crate::storage::producer_state::SequenceError;
use crate::storage::validator::RecordErrorKind;
use crate::storage::{AppendError, ReadError};

/// The Kafka error code for a broker error, plus a message for the
/// responses that carry one.
pub fn kafka_error(e: &BrokerError) -> ResponseError {
    match e {
        BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition(..) => {
            ResponseError::UnknownTopicOrPartition
        }
        BrokerError::UnknownTopicId(_) => ResponseError::UnknownTopicId,
        BrokerError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        BrokerError::InternalTopic(..) => ResponseError::InvalidTopicException,
        BrokerError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        BrokerError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        BrokerError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        BrokerError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        BrokerError::InvalidConfig(_) => ResponseError::InvalidConfig,
        BrokerError::InvalidRequest(_) => ResponseError::InvalidRequest,
        BrokerError::Append(a) => match a {
            AppendError::Corrupt(_) => ResponseError::CorruptMessage,
            AppendError::Invalid(_) => ResponseError::InvalidRecord,
            AppendError::Records(records) => match records.kind() {
                RecordErrorKind::InvalidTimestamp => ResponseError::InvalidTimestamp,
                RecordErrorKind::InvalidRecord => ResponseError::InvalidRecord,
            },
            AppendError::TooLarge { .. } => ResponseError::MessageTooLarge,
            AppendError::LargerThanSegment { .. } => ResponseError::RecordListTooLarge,
            AppendError::Sequence(SequenceError::InvalidEpoch { .. }) => {
                ResponseError::InvalidProducerEpoch
            }
            AppendError::Sequence(SequenceError::OutOfOrder { .. }) => {
                ResponseError::OutOfOrderSequenceNumber
            }
            AppendError::Sequence(SequenceError::UnknownProducer { .. }) => {
                ResponseError::UnknownProducerId
            }
            AppendError::DuplicateInRecordSet(_) => ResponseError::DuplicateSequenceNumber,
            AppendError::Io(_) => ResponseError::KafkaStorageError,
        },
        BrokerError::Read(r) => match r {
            ReadError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            ReadError::Io(_) => ResponseError::KafkaStorageError,
        },
        BrokerError::InvalidRecord(_) => ResponseError::InvalidRecord,
        BrokerError::Io(_) => ResponseError::KafkaStorageError,
        BrokerError::NotLeaderOrFollower(..) => ResponseError::NotLeaderOrFollower,
        BrokerError::MetadataTimeout(_) | BrokerError::NotCommitted(..) => {
            ResponseError::RequestTimedOut
        }
        BrokerError::ElectionNotNeeded(_) => ResponseError::ElectionNotNeeded,
        BrokerError::PreferredLeaderNotAvailable(_) => ResponseError::PreferredLeaderNotAvailable,
        BrokerError::EligibleLeadersNotAvailable(_) => ResponseError::EligibleLeadersNotAvailable,
        BrokerError::NoReassignmentInProgress(_) => ResponseError::NoReassignmentInProgress,
    }
}

pub fn code(e: &BrokerError) -> i16 {
    kafka_error(e).code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_map_to_the_kafka_codes_clients_expect() {
        let too_large = BrokerError::Append(AppendError::TooLarge { size: 10, max: 1 });
        assert_eq!(code(&too_large), 10);
        let corrupt = BrokerError::Append(AppendError::Corrupt(
            crate::storage::batch::BatchError::BadLength(1),
        ));
        assert_eq!(code(&corrupt), 2);
        let oor = BrokerError::Read(ReadError::OffsetOutOfRange {
            offset: 5,
            log_start: 0,
            log_end: 1,
        });
        assert_eq!(code(&oor), 1);
        assert_eq!(code(&BrokerError::UnknownTopic("t".into())), 3);
        assert_eq!(code(&BrokerError::InvalidTopic("bad".into())), 17);
        assert_eq!(code(&BrokerError::Io(std::io::Error::other("disk"))), 56);
    }

    #[test]
    fn election_and_reassignment_errors_have_kafkas_codes() {
        let m = || String::from("x");
        assert_eq!(code(&BrokerError::InvalidReplicaAssignment(m())), 39);
        assert_eq!(code(&BrokerError::PreferredLeaderNotAvailable(m())), 80);
        assert_eq!(code(&BrokerError::EligibleLeadersNotAvailable(m())), 83);
        assert_eq!(code(&BrokerError::ElectionNotNeeded(m())), 84);
        assert_eq!(code(&BrokerError::NoReassignmentInProgress(m())), 85);
    }
}
