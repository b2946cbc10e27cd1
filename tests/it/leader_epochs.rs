//! OffsetForLeaderEpoch (API 23) against the real binary: the end offset
//! of a leader epoch from the partition's leader-epoch cache, the
//! `current_leader_epoch` fencing, and the answers a restart keeps.

use std::time::Duration;

use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::EpochEndOffset;
use kafka_protocol::messages::{
    BrokerId, MetadataRequest, MetadataResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::FutureRecord;

use crate::harness::{create_topic, latest_offset, TestBroker};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;

/// Asks for `(partition, current_leader_epoch, leader_epoch)` of `topic`.
async fn end_offsets(
    broker: &TestBroker,
    topic: &str,
    asks: &[(i32, i32, i32)],
    version: i16,
) -> Vec<EpochEndOffset> {
    let mut client = broker.client().await;
    let mut t = OffsetForLeaderTopic::default();
    t.topic = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions = asks
        .iter()
        .map(|&(partition, current, epoch)| {
            let mut p = OffsetForLeaderPartition::default();
            p.partition = partition;
            p.current_leader_epoch = current;
            p.leader_epoch = epoch;
            p
        })
        .collect();
    let mut request = OffsetForLeaderEpochRequest::default();
    request.replica_id = BrokerId(-1);
    request.topics = vec![t];
    let response: OffsetForLeaderEpochResponse = client
        .send_version(&request, version)
        .await
        .expect("OffsetForLeaderEpoch");
    assert_eq!(response.topics.len(), 1);
    response.topics[0].partitions.clone()
}

async fn leader_epoch(broker: &TestBroker, topic: &str) -> i32 {
    let mut client = broker.client().await;
    let mut t = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(topic.to_string())));
    let mut request = MetadataRequest::default();
    request.topics = Some(vec![t]);
    let response: MetadataResponse = client.send_version(&request, 9).await.expect("Metadata");
    response.topics[0].partitions[0].leader_epoch
}

fn answer(p: &EpochEndOffset) -> (i16, i32, i64) {
    (p.error_code, p.leader_epoch, p.end_offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_for_leader_epoch_answers_from_the_epoch_cache_and_fences_stale_epochs() {
    let mut broker = TestBroker::start();
    create_topic(&broker, "epochs", 1, &[]).await;
    let producer = broker.producer(&[]);
    for i in 0..7 {
        producer
            .send(
                FutureRecord::to("epochs")
                    .key("k")
                    .payload(&format!("r{i}")),
                Duration::from_secs(10),
            )
            .await
            .expect("produce");
    }
    drop(producer);
    assert_eq!(latest_offset(&broker, "epochs", 0).await, 7);
    let epoch = leader_epoch(&broker, "epochs").await;
    assert!(epoch >= 0, "Metadata reports the leader epoch");

    for version in [2, 3, 4] {
        let got = end_offsets(
            &broker,
            "epochs",
            &[
                // The current epoch ends at the log end.
                (0, -1, epoch),
                // An epoch above every one the log knows: undefined.
                (0, -1, epoch + 5),
                // A partition that does not exist.
                (9, -1, epoch),
            ],
            version,
        )
        .await;
        let answers: Vec<_> = got.iter().map(answer).collect();
        assert_eq!(
            answers,
            vec![
                (0, epoch, 7),
                (0, -1, -1),
                (UNKNOWN_TOPIC_OR_PARTITION, -1, -1)
            ],
            "v{version}"
        );
    }

    // current_leader_epoch (v2+): newer than ours is unknown, older fenced.
    let got = end_offsets(
        &broker,
        "epochs",
        &[(0, epoch + 1, epoch), (0, epoch, epoch)],
        4,
    )
    .await;
    assert_eq!(answer(&got[0]).0, UNKNOWN_LEADER_EPOCH);
    assert_eq!(answer(&got[1]), (0, epoch, 7));
    if epoch > 0 {
        let got = end_offsets(&broker, "epochs", &[(0, epoch - 1, epoch)], 4).await;
        assert_eq!(answer(&got[0]).0, FENCED_LEADER_EPOCH);
    }

    let unknown = end_offsets(&broker, "no-such-topic", &[(0, -1, 0)], 4).await;
    assert_eq!(answer(&unknown[0]).0, UNKNOWN_TOPIC_OR_PARTITION);

    // After a restart the cache (checkpoint or batches) answers the same
    // for every epoch the log holds, and a consumer reads everything.
    broker.restart();
    let after = leader_epoch(&broker, "epochs").await;
    let got = end_offsets(&broker, "epochs", &[(0, -1, epoch), (0, -1, after)], 4).await;
    if after == epoch {
        assert_eq!(answer(&got[0]), (0, epoch, 7));
    } else {
        // A new epoch after the restart starts at the old log end.
        assert_eq!(answer(&got[0]), (0, epoch, 7));
        assert_eq!(answer(&got[1]).2, 7);
    }
    let consumed = broker.consume("epochs", 1, 7, Duration::from_secs(30));
    assert_eq!(consumed.len(), 7);
}
