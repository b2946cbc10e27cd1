//! InitProducerId: producer ids and epochs for idempotent producers.
//!
//! Transactions are not supported yet: a request with a transactional id is
//! refused.

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;
use tracing::{error, warn};

use crate::broker::Broker;

pub fn init_producer_id(
    broker: &Arc<Broker>,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    if let Some(id) = &request.transactional_id {
        warn!(transactional_id = %id.0, "transactions are not supported yet; refusing InitProducerId");
        response.error_code = ResponseError::InvalidRequest.code();
        return response;
    }
    // Non-transactional producers always get a fresh id at epoch 0; an
    // existing id/epoch in the request (KIP-360 epoch bump) is answered the
    // same way, as Kafka does without a transactional id.
    match broker.producer_ids().allocate() {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(e) => {
            error!(error = %e, "cannot allocate a producer id");
            response.error_code = ResponseError::KafkaStorageError.code();
        }
    }
    response
}
