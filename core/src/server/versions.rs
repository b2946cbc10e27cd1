//! The API versions the broker advertises, and the ApiVersions handler.
//!
//! Ranges are chosen for librdkafka's feature probes as well as for what we
//! can decode: librdkafka enables gzip/snappy/lz4 only when Produce v0 lies
//! in the advertised range, record format v2 needs Produce v3 and Fetch v4,
//! zstd needs Produce v7 and Fetch v10, and LZ4 needs FindCoordinator.
//! Produce v0-2 and Fetch v0-3 carry message format v0/v1:
//! `server::legacy_records` decodes them (the codec starts at Produce v3 and
//! Fetch v4) and `storage::legacy` converts their record sets. The other
//! versions Kafka 4.0 removed (KIP-896) but old tools still send are decoded
//! by `server::legacy` (ListOffsets v0, OffsetCommit v0-1, OffsetFetch v0,
//! CreateTopics v0-1, DeleteTopics v0, DescribeConfigs v0).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::ResponseError;

/// One advertised API: the range clients see and the lowest version the
/// broker can actually decode.
#[derive(Debug, Clone, Copy)]
pub struct Supported {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
    pub min_decodable: i16,
}

const fn api(key: ApiKey, min: i16, max: i16) -> Supported {
    Supported {
        key,
        min,
        max,
        min_decodable: min,
    }
}

pub const SUPPORTED_APIS: &[Supported] = &[
    api(ApiKey::Produce, 0, 10),
    api(ApiKey::Fetch, 0, 16),
    api(ApiKey::ListOffsets, 0, 8),
    api(ApiKey::OffsetForLeaderEpoch, 2, 4),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::FindCoordinator, 0, 4),
    api(ApiKey::InitProducerId, 0, 5),
    api(ApiKey::AddPartitionsToTxn, 0, 3),
    api(ApiKey::AddOffsetsToTxn, 0, 4),
    api(ApiKey::EndTxn, 0, 4),
    api(ApiKey::TxnOffsetCommit, 0, 4),
    api(ApiKey::DescribeTransactions, 0, 0),
    api(ApiKey::ListTransactions, 0, 1),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::OffsetCommit, 0, 8),
    api(ApiKey::OffsetFetch, 0, 8),
    api(ApiKey::ListGroups, 0, 5),
    api(ApiKey::DescribeGroups, 0, 5),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::OffsetDelete, 0, 0),
    api(ApiKey::ApiVersions, 0, 3),
    api(ApiKey::CreateTopics, 0, 7),
    api(ApiKey::DeleteTopics, 0, 6),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::WriteTxnMarkers, 1, 1),
    api(ApiKey::DescribeProducers, 0, 0),
    api(ApiKey::DescribeConfigs, 0, 4),
    api(ApiKey::DescribeLogDirs, 1, 4),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    api(ApiKey::DescribeCluster, 0, 1),
    api(ApiKey::ElectLeaders, 0, 2),
    api(ApiKey::AlterPartitionReassignments, 0, 1),
    api(ApiKey::ListPartitionReassignments, 0, 0),
];

pub fn supported(key: ApiKey) -> Option<&'static Supported> {
    SUPPORTED_APIS.iter().find(|s| s.key == key)
}

/// Whether the broker can decode and answer this API version.
pub fn can_handle(key: ApiKey, version: i16) -> bool {
    supported(key).is_some_and(|s| version >= s.min_decodable && version <= s.max)
}

/// The ApiVersions response. A version the broker does not know is answered
/// with UNSUPPORTED_VERSION in v0 format (as Kafka does), so the client can
/// retry with one from the list.
pub fn api_versions_response(requested_version: i16) -> (ApiVersionsResponse, i16) {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = SUPPORTED_APIS
        .iter()
        .map(|s| {
            let mut v = ApiVersion::default();
            v.api_key = s.key as i16;
            v.min_version = s.min;
            v.max_version = s.max;
            v
        })
        .collect();
    // No supported/finalized feature tags: librdkafka < 2.2 misparses them.
    let max = supported(ApiKey::ApiVersions).map(|s| s.max).unwrap_or(0);
    if requested_version > max || requested_version < 0 {
        response.error_code = ResponseError::UnsupportedVersion.code();
        (response, 0)
    } else {
        (response, requested_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn librdkafka_probes_find_the_ranges_they_need() {
        let produce = supported(ApiKey::Produce).unwrap();
        let fetch = supported(ApiKey::Fetch).unwrap();
        assert_eq!(produce.min, 0, "compression probes need Produce v0");
        assert!(
            produce.max >= 7 && fetch.max >= 10,
            "zstd needs Produce v7 / Fetch v10"
        );
        assert!(fetch.min <= 4);
    }

    #[test]
    fn every_advertised_version_is_within_what_the_codecs_know() {
        for s in SUPPORTED_APIS {
            let codec = s.key.valid_versions();
            for version in s.min_decodable..=s.max {
                assert!(
                    (version >= codec.min && version <= codec.max)
                        || super::super::legacy::decodes(s.key, version)
                        || super::super::legacy_records::handles(s.key, version),
                    "{:?} v{version}",
                    s.key
                );
            }
        }
    }

    #[test]
    fn no_advertised_api_starts_above_what_can_be_decoded() {
        // KIP-896 removed old versions from Kafka 4.0; old tools still send
        // them, so everything the codecs decode is advertised.
        for s in SUPPORTED_APIS {
            let lowest = if matches!(s.key, ApiKey::Produce | ApiKey::Fetch) {
                0 // message format v0/v1, converted by legacy_records
            } else {
                crate::server::legacy::lowest_version(s.key)
            };
            assert_eq!(s.min, lowest.min(s.min_decodable), "{:?}", s.key);
        }
    }

    #[test]
    fn elections_and_reassignments_are_advertised_in_every_version_the_codec_knows() {
        for key in [
            ApiKey::ElectLeaders,
            ApiKey::AlterPartitionReassignments,
            ApiKey::ListPartitionReassignments,
        ] {
            let s = supported(key).unwrap_or_else(|| panic!("{key:?} is not advertised"));
            let codec = key.valid_versions();
            assert_eq!((s.min, s.max), (codec.min, codec.max), "{key:?}");
        }
    }

    #[test]
    fn an_unknown_api_versions_version_gets_an_error_in_v0_format() {
        let (response, version) = api_versions_response(99);
        assert_eq!(version, 0);
        assert_eq!(response.error_code, 35);
        let (ok, v) = api_versions_response(3);
        assert_eq!((ok.error_code, v), (0, 3));
        let mut buf = BytesMut::new();
        ok.encode(&mut buf, 3).unwrap();
        // v3 body ends with an empty tagged-field section: no feature tags.
        assert_eq!(*buf.last().unwrap(), 0);
    }
}
