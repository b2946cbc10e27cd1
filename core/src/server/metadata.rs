//! Metadata and DescribeCluster: who the brokers are and where partitions
//! live, from the metadata image this broker applied (on a single node,
//! this broker leads every partition and is its only replica).

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::ResponseError;

use super::authorizer::{self, Resource};
use super::errors::kafka_error;
use super::str_bytes;
use crate::broker::{Broker, Topic};
use crate::controller::records::NO_LEADER;
use crate::controller::MetadataImage;

fn topic_entry(
    image: &MetadataImage,
    topic: &Topic,
    with_operations: bool,
) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(str_bytes(topic.name.to_string())));
    t.topic_id = topic.id;
    t.is_internal = topic.is_internal();
    t.topic_authorized_operations =
        authorizer::if_requested(with_operations, Resource::Topic(&topic.name));
    let ids = |list: &[i32]| list.iter().map(|&b| BrokerId(b)).collect::<Vec<_>>();
    if let Some(state) = image.topic(&topic.id) {
        t.partitions = state
            .partitions
            .iter()
            .map(|(&index, p)| {
                let mut mp = MetadataResponsePartition::default();
                mp.partition_index = index;
                mp.leader_id = BrokerId(p.leader);
                mp.leader_epoch = p.leader_epoch;
                mp.replica_nodes = ids(&p.replicas);
                mp.isr_nodes = ids(&p.isr);
                // Replicas on fenced brokers are offline.
                mp.offline_replicas = p
                    .replicas
                    .iter()
                    .filter(|&&b| !image.is_live(b))
                    .map(|&b| BrokerId(b))
                    .collect();
                if p.leader == NO_LEADER {
                    mp.error_code = ResponseError::LeaderNotAvailable.code();
                }
                mp
            })
            .collect();
    }
    t
}

/// The live brokers as Metadata lists them (host and port of their
/// listener).
fn live_brokers(image: &MetadataImage) -> Vec<(i32, String, i32)> {
    image
        .live_brokers()
        .map(|b| {
            let (host, port) = split_host_port(&b.listener);
            (b.broker_id, host, port)
        })
        .collect()
}

/// Where a partition's leader is now (KIP-951), for the
/// NOT_LEADER_OR_FOLLOWER answers of Produce v10+ and Fetch v12+ so that
/// clients switch without a Metadata round trip: (leader id, leader epoch,
/// host, port), or `None` when the partition has no live leader.
pub fn leader_hint(
    broker: &Broker,
    topic: &str,
    partition: i32,
) -> Option<(i32, i32, String, i32)> {
    let (leader, leader_epoch, listener) = broker.metadata().partition_leader(topic, partition)?;
    let (host, port) = split_host_port(&listener);
    Some((leader, leader_epoch, host, port))
}

/// `host:port` (or `[v6]:port`) → (host, port).
pub fn split_host_port(addr: &str) -> (String, i32) {
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            (host.to_string(), port.parse().unwrap_or(9092))
        }
        None => (addr.to_string(), 9092),
    }
}

/// The controller Kafka clients are told of: the quorum's leader, or this
/// broker while there is none.
fn controller_id(broker: &Broker) -> BrokerId {
    let leader = broker.metadata().controller().leader();
    BrokerId(leader.map_or(broker.node_id(), |l| l as i32))
}

fn error_entry(
    name: Option<TopicName>,
    id: uuid::Uuid,
    error: ResponseError,
) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.error_code = error.code();
    t.name = name;
    t.topic_id = id;
    t.topic_authorized_operations = authorizer::OMITTED;
    t
}

pub async fn handle(
    broker: &Arc<Broker>,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let mut response = MetadataResponse::default();
    let image = broker.metadata().image();
    response.brokers = live_brokers(&image)
        .into_iter()
        .map(|(id, host, port)| {
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(id);
            b.host = str_bytes(host);
            b.port = port;
            b
        })
        .collect();
    response.cluster_id = Some(str_bytes(broker.cluster_id()));
    response.controller_id = controller_id(broker);
    // Asked for in v8-10 only; v11 moved it to DescribeCluster.
    response.cluster_authorized_operations = authorizer::if_requested(
        (8..=10).contains(&version) && request.include_cluster_authorized_operations,
        Resource::Cluster,
    );
    let with_operations = version >= 8 && request.include_topic_authorized_operations;

    // v0 has no way to say "all topics" but an empty list; v1+ uses null.
    let all = match &request.topics {
        None => true,
        Some(list) => list.is_empty() && version == 0,
    };
    if all {
        response.topics = broker
            .topics()
            .iter()
            .map(|t| topic_entry(&image, t, with_operations))
            .collect();
        return response;
    }
    let allow_auto_create = version < 4 || request.allow_auto_topic_creation;
    for requested in request.topics.unwrap_or_default() {
        let entry = match requested.name {
            Some(name) => match broker
                .metadata()
                .topic_or_auto_create(&name.0, allow_auto_create)
                .await
            {
                Ok(topic) => topic_entry(&broker.metadata().image(), &topic, with_operations),
                Err(e) => error_entry(Some(name), uuid::Uuid::nil(), kafka_error(&e)),
            },
            None => match broker.topic_by_id(requested.topic_id) {
                Some(topic) => topic_entry(&image, &topic, with_operations),
                None => error_entry(None, requested.topic_id, ResponseError::UnknownTopicId),
            },
        };
        response.topics.push(entry);
    }
    response
}

pub fn describe_cluster(
    broker: &Arc<Broker>,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let mut response = DescribeClusterResponse::default();
    response.cluster_id = str_bytes(broker.cluster_id());
    response.controller_id = controller_id(broker);
    response.endpoint_type = request.endpoint_type;
    response.cluster_authorized_operations = authorizer::if_requested(
        request.include_cluster_authorized_operations,
        Resource::Cluster,
    );
    if request.endpoint_type != 1 {
        // Only broker endpoints are served here (1 = brokers, 2 = controllers).
        response.error_code = ResponseError::MismatchedEndpointType.code();
        response.error_message = Some(str_bytes("this listener serves broker endpoints only"));
        return response;
    }
    response.brokers = live_brokers(&broker.metadata().image())
        .into_iter()
        .map(|(id, host, port)| {
            let mut b = DescribeClusterBroker::default();
            b.broker_id = BrokerId(id);
            b.host = str_bytes(host);
            b.port = port;
            b
        })
        .collect();
    response
}
