//! FindCoordinator: which broker coordinates a consumer group or a
//! transactional id. On a single node that is always this broker.
//!
//! (librdkafka also uses FindCoordinator in its feature probes: LZ4 is only
//! enabled when the broker advertises it.)

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::broker::Broker;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub fn find_coordinator(
    broker: &Arc<Broker>,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let (host, port) = broker.advertised_address();
    let node = BrokerId(broker.node_id());
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
                    c.node_id = node;
                    c.host = str_bytes(host.clone());
                    c.port = port;
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
        response.node_id = node;
        response.host = str_bytes(host);
        response.port = port;
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
