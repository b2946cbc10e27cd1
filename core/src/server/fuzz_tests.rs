//! Property-based fuzzing of the request path: random frames, and valid
//! frames of every advertised API and version with random mutations, go
//! through the decoder and — when they decode — through the handlers of a
//! real broker. Nothing may panic; every decoded request gets an encodable
//! response. Failures print the proptest seed and the minimal input.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::Compression;
use proptest::prelude::*;

use super::{decode_body, decode_request, dispatch, encode_response, versions};
use crate::broker::Broker;
use crate::config::BrokerConfig;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A populated request of each advertised API.
fn seed_body(key: ApiKey, version: i16, topic_id: uuid::Uuid) -> RequestKind {
    let topic = TopicName(s("fuzz"));
    match key {
        ApiKey::Produce => {
            let mut p = PartitionProduceData::default();
            p.records = Some(crate::storage::batch::tests::make_batch(
                3,
                20,
                Compression::None,
            ));
            let mut t = TopicProduceData::default();
            t.name = topic;
            t.partition_data = vec![p];
            let mut r = ProduceRequest::default();
            r.acks = 1;
            r.topic_data = vec![t];
            RequestKind::Produce(r)
        }
        ApiKey::Fetch => {
            let mut p = FetchPartition::default();
            p.partition_max_bytes = 1 << 20;
            let mut t = FetchTopic::default();
            // Topics are named up to v12 and identified by id from v13.
            if version >= 13 {
                t.topic_id = topic_id;
            } else {
                t.topic = topic;
            }
            t.partitions = vec![p];
            let mut r = FetchRequest::default();
            r.max_wait_ms = 100;
            r.max_bytes = 1 << 20;
            r.topics = vec![t];
            RequestKind::Fetch(r)
        }
        ApiKey::ListOffsets => {
            let mut p = ListOffsetsPartition::default();
            p.timestamp = 1_700_000_000_001;
            let mut t = ListOffsetsTopic::default();
            t.name = topic;
            t.partitions = vec![p];
            let mut r = ListOffsetsRequest::default();
            r.topics = vec![t];
            RequestKind::ListOffsets(r)
        }
        ApiKey::Metadata => {
            let mut t = MetadataRequestTopic::default();
            t.name = Some(topic);
            let mut r = MetadataRequest::default();
            r.topics = Some(vec![t]);
            RequestKind::Metadata(r)
        }
        ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::JoinGroup => {
            let mut p = join_group_request::JoinGroupRequestProtocol::default();
            p.name = s("range");
            p.metadata = bytes::Bytes::from_static(&[
                0, 1, 0, 0, 0, 1, 0, 4, b'f', b'u', b'z', b'z', 0, 0, 0, 0,
            ]);
            let mut r = JoinGroupRequest::default();
            r.group_id = GroupId(s("fuzz-group"));
            r.session_timeout_ms = 10_000;
            if version >= 1 {
                r.rebalance_timeout_ms = 10_000;
            }
            r.protocol_type = s("consumer");
            r.protocols = vec![p];
            RequestKind::JoinGroup(r)
        }
        ApiKey::SyncGroup => {
            let mut r = SyncGroupRequest::default();
            r.group_id = GroupId(s("fuzz-group"));
            r.generation_id = 1;
            r.member_id = s("member");
            RequestKind::SyncGroup(r)
        }
        ApiKey::Heartbeat => {
            let mut r = HeartbeatRequest::default();
            r.group_id = GroupId(s("fuzz-group"));
            r.generation_id = 1;
            r.member_id = s("member");
            RequestKind::Heartbeat(r)
        }
        ApiKey::LeaveGroup => {
            let mut r = LeaveGroupRequest::default();
            r.group_id = GroupId(s("fuzz-group"));
            if version >= 3 {
                let mut m = leave_group_request::MemberIdentity::default();
                m.member_id = s("member");
                r.members = vec![m];
            } else {
                r.member_id = s("member");
            }
            RequestKind::LeaveGroup(r)
        }
        ApiKey::OffsetCommit => {
            let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
            p.committed_offset = 1;
            p.committed_metadata = Some(s("meta"));
            let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
            t.name = topic;
            t.partitions = vec![p];
            let mut r = OffsetCommitRequest::default();
            r.group_id = GroupId(s("fuzz-group"));
            r.generation_id_or_member_epoch = -1;
            r.topics = vec![t];
            RequestKind::OffsetCommit(r)
        }
        ApiKey::OffsetFetch => {
            let mut r = OffsetFetchRequest::default();
            if version >= 8 {
                let mut t = offset_fetch_request::OffsetFetchRequestTopics::default();
                t.name = topic;
                t.partition_indexes = vec![0, 1];
                let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
                g.group_id = GroupId(s("fuzz-group"));
                g.topics = Some(vec![t]);
                r.groups = vec![g];
            } else {
                let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
                t.name = topic;
                t.partition_indexes = vec![0, 1];
                r.group_id = GroupId(s("fuzz-group"));
                r.topics = Some(vec![t]);
            }
            RequestKind::OffsetFetch(r)
        }
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::DescribeGroups => {
            let mut r = DescribeGroupsRequest::default();
            r.groups = vec![GroupId(s("fuzz-group"))];
            RequestKind::DescribeGroups(r)
        }
        ApiKey::DeleteGroups => {
            let mut r = DeleteGroupsRequest::default();
            r.groups_names = vec![GroupId(s("other-group"))];
            RequestKind::DeleteGroups(r)
        }
        ApiKey::OffsetDelete => {
            let mut p = offset_delete_request::OffsetDeleteRequestPartition::default();
            p.partition_index = 0;
            let mut t = offset_delete_request::OffsetDeleteRequestTopic::default();
            t.name = topic;
            t.partitions = vec![p];
            let mut r = OffsetDeleteRequest::default();
            r.group_id = GroupId(s("fuzz-group"));
            r.topics = vec![t];
            RequestKind::OffsetDelete(r)
        }
        ApiKey::InitProducerId => {
            let mut r = InitProducerIdRequest::default();
            r.transactional_id = None;
            r.transaction_timeout_ms = 60_000;
            r.producer_id = ProducerId(-1);
            r.producer_epoch = -1;
            RequestKind::InitProducerId(r)
        }
        ApiKey::FindCoordinator => {
            let mut r = FindCoordinatorRequest::default();
            if version >= 4 {
                r.coordinator_keys = vec![s("group-a"), s("group-b")];
            } else {
                r.key = s("group-a");
            }
            RequestKind::FindCoordinator(r)
        }
        ApiKey::CreateTopics => {
            let mut c = CreatableTopicConfig::default();
            c.name = s("retention.ms");
            c.value = Some(s("1000"));
            let mut t = CreatableTopic::default();
            t.name = TopicName(s("fuzz2"));
            t.num_partitions = 2;
            t.replication_factor = 1;
            t.configs = vec![c];
            let mut r = CreateTopicsRequest::default();
            r.topics = vec![t];
            RequestKind::CreateTopics(r)
        }
        ApiKey::DeleteTopics => {
            let mut t = DeleteTopicState::default();
            t.name = Some(TopicName(s("fuzz2")));
            let mut r = DeleteTopicsRequest::default();
            if version >= 6 {
                r.topics = vec![t];
            } else {
                r.topic_names = vec![TopicName(s("fuzz2"))];
            }
            RequestKind::DeleteTopics(r)
        }
        ApiKey::OffsetForLeaderEpoch => {
            let mut p = offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
            p.current_leader_epoch = -1;
            p.leader_epoch = 0;
            let mut t = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
            t.topic = topic;
            t.partitions = vec![p];
            let mut r = OffsetForLeaderEpochRequest::default();
            r.replica_id = BrokerId(-1);
            r.topics = vec![t];
            RequestKind::OffsetForLeaderEpoch(r)
        }
        ApiKey::DeleteRecords => {
            let mut p = DeleteRecordsPartition::default();
            p.offset = 1;
            let mut t = DeleteRecordsTopic::default();
            t.name = topic;
            t.partitions = vec![p];
            let mut r = DeleteRecordsRequest::default();
            r.topics = vec![t];
            RequestKind::DeleteRecords(r)
        }
        ApiKey::DescribeProducers => {
            let mut t =
                kafka_protocol::messages::describe_producers_request::TopicRequest::default();
            t.name = topic;
            t.partition_indexes = vec![0, 1];
            let mut r = DescribeProducersRequest::default();
            r.topics = vec![t];
            RequestKind::DescribeProducers(r)
        }
        ApiKey::WriteTxnMarkers => {
            let mut t =
                kafka_protocol::messages::write_txn_markers_request::WritableTxnMarkerTopic::default();
            t.name = topic;
            t.partition_indexes = vec![0];
            let mut m =
                kafka_protocol::messages::write_txn_markers_request::WritableTxnMarker::default();
            m.producer_id = 7.into();
            m.producer_epoch = 0;
            m.transaction_result = false;
            m.topics = vec![t];
            let mut r = WriteTxnMarkersRequest::default();
            r.markers = vec![m];
            RequestKind::WriteTxnMarkers(r)
        }
        ApiKey::AddPartitionsToTxn => {
            let mut t = add_partitions_to_txn_request::AddPartitionsToTxnTopic::default();
            t.name = topic;
            t.partitions = vec![0, 1];
            let mut r = AddPartitionsToTxnRequest::default();
            r.v3_and_below_transactional_id = s("fuzz-txn").into();
            r.v3_and_below_producer_id = 7.into();
            r.v3_and_below_topics = vec![t];
            RequestKind::AddPartitionsToTxn(r)
        }
        ApiKey::AddOffsetsToTxn => {
            let mut r = AddOffsetsToTxnRequest::default();
            r.transactional_id = s("fuzz-txn").into();
            r.producer_id = 7.into();
            r.group_id = s("fuzz-group").into();
            RequestKind::AddOffsetsToTxn(r)
        }
        ApiKey::EndTxn => {
            let mut r = EndTxnRequest::default();
            r.transactional_id = s("fuzz-txn").into();
            r.producer_id = 7.into();
            r.committed = true;
            RequestKind::EndTxn(r)
        }
        ApiKey::TxnOffsetCommit => {
            let mut p = txn_offset_commit_request::TxnOffsetCommitRequestPartition::default();
            p.committed_offset = 1;
            p.committed_metadata = Some(s("m"));
            let mut t = txn_offset_commit_request::TxnOffsetCommitRequestTopic::default();
            t.name = topic;
            t.partitions = vec![p];
            let mut r = TxnOffsetCommitRequest::default();
            r.transactional_id = s("fuzz-txn").into();
            r.group_id = s("fuzz-group").into();
            r.producer_id = 7.into();
            r.generation_id = -1;
            r.topics = vec![t];
            RequestKind::TxnOffsetCommit(r)
        }
        ApiKey::DescribeTransactions => {
            let mut r = DescribeTransactionsRequest::default();
            r.transactional_ids = vec![s("fuzz-txn").into(), s("other").into()];
            RequestKind::DescribeTransactions(r)
        }
        ApiKey::ListTransactions => {
            let mut r = ListTransactionsRequest::default();
            r.state_filters = vec![s("Ongoing"), s("NoSuchState")];
            r.duration_filter = -1;
            RequestKind::ListTransactions(r)
        }
        ApiKey::DescribeConfigs => {
            let mut res = DescribeConfigsResource::default();
            res.resource_type = 2;
            res.resource_name = s("fuzz");
            let mut r = DescribeConfigsRequest::default();
            r.resources = vec![res];
            r.include_synonyms = true;
            RequestKind::DescribeConfigs(r)
        }
        ApiKey::AlterConfigs => {
            let mut c = alter_configs_request::AlterableConfig::default();
            c.name = s("retention.bytes");
            c.value = Some(s("100000"));
            let mut res = alter_configs_request::AlterConfigsResource::default();
            res.resource_type = 2;
            res.resource_name = s("fuzz");
            res.configs = vec![c];
            let mut r = AlterConfigsRequest::default();
            r.resources = vec![res];
            RequestKind::AlterConfigs(r)
        }
        ApiKey::IncrementalAlterConfigs => {
            let mut c = incremental_alter_configs_request::AlterableConfig::default();
            c.name = s("cleanup.policy");
            c.config_operation = 2;
            c.value = Some(s("compact"));
            let mut res = incremental_alter_configs_request::AlterConfigsResource::default();
            res.resource_type = 2;
            res.resource_name = s("fuzz");
            res.configs = vec![c];
            let mut r = IncrementalAlterConfigsRequest::default();
            r.resources = vec![res];
            RequestKind::IncrementalAlterConfigs(r)
        }
        ApiKey::CreatePartitions => {
            let mut t = CreatePartitionsTopic::default();
            t.name = topic;
            t.count = 3;
            let mut r = CreatePartitionsRequest::default();
            r.topics = vec![t];
            RequestKind::CreatePartitions(r)
        }
        ApiKey::DescribeLogDirs => {
            let mut t = kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic::default();
            t.topic = topic;
            t.partitions = vec![0];
            let mut r = kafka_protocol::messages::DescribeLogDirsRequest::default();
            r.topics = Some(vec![t]);
            RequestKind::DescribeLogDirs(r)
        }
        ApiKey::DescribeCluster => {
            let mut r = DescribeClusterRequest::default();
            if version >= 1 {
                r.endpoint_type = 1;
            }
            RequestKind::DescribeCluster(r)
        }
        ApiKey::ElectLeaders => {
            let mut t = elect_leaders_request::TopicPartitions::default();
            t.topic = topic;
            t.partitions = vec![0];
            let mut r = ElectLeadersRequest::default();
            r.topic_partitions = Some(vec![t]);
            RequestKind::ElectLeaders(r)
        }
        ApiKey::AlterPartitionReassignments => {
            let mut p = alter_partition_reassignments_request::ReassignablePartition::default();
            p.replicas = Some(vec![BrokerId(0)]);
            let mut t = alter_partition_reassignments_request::ReassignableTopic::default();
            t.name = topic;
            t.partitions = vec![p];
            let mut r = AlterPartitionReassignmentsRequest::default();
            r.topics = vec![t];
            RequestKind::AlterPartitionReassignments(r)
        }
        ApiKey::ListPartitionReassignments => {
            RequestKind::ListPartitionReassignments(ListPartitionReassignmentsRequest::default())
        }
        other => panic!("no seed for {other:?}"),
    }
}

/// Frames (without size prefix) for every advertised API at every version
/// the broker decodes.
fn seed_frames(topic_id: uuid::Uuid) -> Vec<Bytes> {
    let mut frames = Vec::new();
    for api in versions::SUPPORTED_APIS {
        for version in api.min_decodable..=api.max {
            let mut header = RequestHeader::default();
            header.request_api_key = api.key as i16;
            header.request_api_version = version;
            header.correlation_id = 42;
            header.client_id = Some(s("fuzzer"));
            let mut buf = BytesMut::new();
            header
                .encode(&mut buf, api.key.request_header_version(version))
                .unwrap();
            if super::legacy::decodes(api.key, version) {
                buf.extend_from_slice(&super::legacy::example_body(api.key, version));
                frames.push(buf.freeze());
                continue;
            }
            let body = seed_body(api.key, version, topic_id);
            if super::legacy_records::handles(api.key, version) {
                let body = match body {
                    // Old producers send message format v0/v1.
                    RequestKind::Produce(mut r) => {
                        let set = crate::storage::legacy::tests::set_of(
                            (version >= 2) as i8,
                            &[(
                                Some(b"k".as_slice()),
                                Some(b"v".as_slice()),
                                1_700_000_000_000,
                            )],
                        );
                        r.topic_data[0].partition_data[0].records = Some(set);
                        RequestKind::Produce(r)
                    }
                    other => other,
                };
                buf.extend_from_slice(
                    &super::legacy_records::encode_request(&body, version).unwrap(),
                );
            } else {
                body.encode(&mut buf, version)
                    .unwrap_or_else(|e| panic!("{:?} v{version}: {e:#}", api.key));
            }
            frames.push(buf.freeze());
        }
    }
    frames
}

#[derive(Debug, Clone)]
enum Mutation {
    SetByte(usize, u8),
    PutI32(usize, i32),
    Truncate(usize),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting_i32 = prop_oneof![
        Just(-1i32),
        Just(0),
        Just(i32::MAX),
        Just(i32::MIN),
        Just(0x7fff_fff0),
        any::<i32>()
    ];
    // Mostly in-place changes, so many mutated frames still decode and
    // reach the handlers with odd field values.
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::SetByte(p, b)),
        4 => (any::<usize>(), interesting_i32).prop_map(|(p, v)| Mutation::PutI32(p, v)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(p, b)| Mutation::Insert(p, b)),
    ]
}

/// Applies mutations, never touching the first 4 bytes (api key and
/// version) so the mutated frame still reaches that API's decoder.
fn mutate(frame: &Bytes, mutations: &[Mutation]) -> Bytes {
    let mut v = frame.to_vec();
    for m in mutations {
        let body = v.len().saturating_sub(4).max(1);
        match m {
            Mutation::SetByte(p, b) if v.len() > 4 => v[4 + p % body] = *b,
            Mutation::PutI32(p, x) if v.len() >= 8 => {
                let at = 4 + p % (v.len() - 7);
                v[at..at + 4].copy_from_slice(&x.to_be_bytes());
            }
            Mutation::Truncate(p) => v.truncate(4 + p % body),
            Mutation::Insert(p, bytes) => {
                let at = (4 + p % body).min(v.len());
                v.splice(at..at, bytes.iter().copied());
            }
            _ => {}
        }
    }
    Bytes::from(v)
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    broker: Arc<Broker>,
    frames: Vec<Bytes>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        max_partitions_per_topic: 8,
        offsets_topic_partitions: 4,
        transaction_state_partitions: 4,
        ..BrokerConfig::default()
    };
    // Paused time: long-poll fetches finish instantly instead of waiting.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let broker = runtime.block_on(Broker::open(config)).unwrap();
    let topic_id = runtime.block_on(async {
        broker
            .metadata()
            .create_topic("fuzz", 2, 1, Default::default(), false)
            .await
            .unwrap()
            .id
    });
    Fixture {
        runtime,
        broker,
        frames: seed_frames(topic_id),
        _dir: dir,
    }
}

/// Runs a frame the way a connection does: decode, dispatch, encode.
fn run_frame(f: &Fixture, frame: Bytes) {
    let Ok(request) = decode_request(frame) else {
        return;
    };
    let (api_key, correlation_id) = (request.api_key, request.header.correlation_id);
    let outcome = f
        .runtime
        .block_on(dispatch(&f.broker, request, "127.0.0.1:1".parse().unwrap()));
    if let Ok(Some((response, version))) = outcome {
        encode_response(api_key, version, correlation_id, &response)
            .expect("every response encodes");
    }
}

#[test]
fn every_seed_frame_decodes_and_is_answered() {
    let f = fixture();
    for frame in &f.frames {
        let request = decode_request(frame.clone()).expect("seed frames are valid");
        assert_eq!(request.header.correlation_id, 42);
        run_frame(&f, frame.clone());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_decoder(raw in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_request(Bytes::from(raw));
    }

    #[test]
    fn mutated_frames_never_panic_the_codec(seed in any::<prop::sample::Index>(), mutations in prop::collection::vec(mutation(), 1..6)) {
        let frames = seed_frames(uuid::Uuid::new_v4());
        let frame = mutate(&frames[seed.index(frames.len())], &mutations);
        if frame.len() >= 8 {
            let api_key = ApiKey::try_from(i16::from_be_bytes([frame[0], frame[1]])).unwrap();
            let version = i16::from_be_bytes([frame[2], frame[3]]);
            // Called without catch_unwind: a codec panic fails the test.
            let _ = decode_body(api_key, version, frame);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_requests_never_panic_the_handlers(seed in any::<prop::sample::Index>(), mutations in prop::collection::vec(mutation(), 1..3)) {
        thread_local! {
            static FIXTURE: Fixture = fixture();
        }
        FIXTURE.with(|f| {
            let frame = mutate(&f.frames[seed.index(f.frames.len())], &mutations);
            let mut sized = BytesMut::new();
            sized.put_slice(&frame);
            run_frame(f, sized.freeze());
        });
    }
}
