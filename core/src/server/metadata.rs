//! Metadata and DescribeCluster: who the brokers are and where partitions
//! live. On a single node every partition is led by this broker with itself
//! as the only replica and in-sync replica.

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

fn topic_entry(broker: &Broker, topic: &Topic, with_operations: bool) -> MetadataResponseTopic {
    let node = BrokerId(broker.node_id());
    let mut t = MetadataResponseTopic::default();
    t.name = Some(TopicName(str_bytes(topic.name.to_string())));
    t.topic_id = topic.id;
    t.is_internal = topic.is_internal();
    t.topic_authorized_operations =
        authorizer::if_requested(with_operations, Resource::Topic(&topic.name));
    t.partitions = topic
        .partitions()
        .iter()
        .map(|p| {
            let mut mp = MetadataResponsePartition::default();
            mp.partition_index = p.index;
            mp.leader_id = node;
            mp.leader_epoch = p.leader_epoch();
            mp.replica_nodes = vec![node];
            mp.isr_nodes = vec![node];
            mp
        })
        .collect();
    t
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
    let (host, port) = broker.advertised_address();
    let mut b = MetadataResponseBroker::default();
    b.node_id = BrokerId(broker.node_id());
    b.host = str_bytes(host);
    b.port = port;
    response.brokers = vec![b];
    response.cluster_id = Some(str_bytes(broker.cluster_id()));
    response.controller_id = BrokerId(broker.node_id());
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
            .map(|t| topic_entry(broker, t, with_operations))
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
                Ok(topic) => topic_entry(broker, &topic, with_operations),
                Err(e) => error_entry(Some(name), uuid::Uuid::nil(), kafka_error(&e)),
            },
            None => match broker.topic_by_id(requested.topic_id) {
                Some(topic) => topic_entry(broker, &topic, with_operations),
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
    response.controller_id = BrokerId(broker.node_id());
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
    let (host, port) = broker.advertised_address();
    let mut b = DescribeClusterBroker::default();
    b.broker_id = BrokerId(broker.node_id());
    b.host = str_bytes(host);
    b.port = port;
    response.brokers = vec![b];
    response
}
