//! FindCoordinator: which broker coordinates a consumer group (the leader
//! of the group's `__consumer_offsets` partition, from the metadata image)
//! or a transactional id (the leader of its `__transaction_state`
//! partition; the first such request makes that topic).
//!
//! (librdkafka also uses FindCoordinator in its feature probes: LZ4 is only
//! enabled when the broker advertises it.)

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::ResponseError;

use super::metadata::split_host_port;
use super::str_bytes;
use crate::broker::Broker;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// The broker coordinating `key`: (node id, host, port).
fn coordinator_of(
    broker: &Broker,
    key_type: i8,
    key: &str,
) -> Result<(BrokerId, String, i32), ResponseError> {
    let own = || {
        let (host, port) = broker.advertised_address();
        Ok((BrokerId(broker.node_id()), host, port))
    };
    if key_type == KEY_TYPE_TRANSACTION {
        return match broker.metadata().transaction_coordinator(key) {
            Ok((leader, _)) if leader == broker.node_id() => own(),
            Ok((leader, listener)) => {
                let (host, port) = split_host_port(&listener);
                Ok((BrokerId(leader), host, port))
            }
            Err(exists) => {
                if !exists {
                    broker.request_transaction_state_topic();
                }
                Err(ResponseError::CoordinatorNotAvailable)
            }
        };
    }
    match broker.metadata().group_coordinator(key) {
        Some((leader, _)) if leader == broker.node_id() => own(),
        Some((leader, listener)) => {
            let (host, port) = split_host_port(&listener);
            Ok((BrokerId(leader), host, port))
        }
        // No `__consumer_offsets` yet, or no live leader of the partition.
        None => Err(ResponseError::CoordinatorNotAvailable),
    }
}

pub fn find_coordinator(
    broker: &Arc<Broker>,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let known_type = matches!(request.key_type, KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION);
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        // Batched keys: one answer per key.
        response.coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let mut c = Coordinator::default();
                c.key = key;
                if known_type {
                    match coordinator_of(broker, request.key_type, &c.key) {
                        Ok((node, host, port)) => {
                            c.node_id = node;
                            c.host = str_bytes(host);
                            c.port = port;
                        }
                        Err(e) => {
                            c.node_id = BrokerId(-1);
                            c.error_code = e.code();
                        }
                    }
                } else {
                    c.node_id = BrokerId(-1);
                    c.error_code = ResponseError::InvalidRequest.code();
                    c.error_message = Some(str_bytes(format!(
                        "unknown coordinator key type {}",
                        request.key_type
                    )));
                }
                c
            })
            .collect();
    } else if known_type {
        match coordinator_of(broker, request.key_type, &request.key) {
            Ok((node, host, port)) => {
                response.node_id = node;
                response.host = str_bytes(host);
                response.port = port;
            }
            Err(e) => {
                response.node_id = BrokerId(-1);
                response.error_code = e.code();
            }
        }
    } else {
        response.node_id = BrokerId(-1);
        response.error_code = ResponseError::InvalidRequest.code();
        if version >= 1 {
            response.error_message = Some(str_bytes(format!(
                "unknown coordinator key type {}",
                request.key_type
            )));
        }
    }
    response
}
