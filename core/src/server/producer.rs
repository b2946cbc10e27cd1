//! InitProducerId: producer ids and epochs for idempotent producers.
//!
//! Transactions are not supported yet: a request with a transactional id is
//! refused.

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;
use tracing::{error, warn};

use crate::broker::Broker;
use crate::log_limit::{LogLimit, DEFAULT_INTERVAL};

/// Both lines can be triggered by every request of a client.
static TRANSACTIONAL_LOG: LogLimit = LogLimit::new(DEFAULT_INTERVAL);
static ALLOCATION_LOG: LogLimit = LogLimit::new(DEFAULT_INTERVAL);

pub async fn init_producer_id(
    broker: &Arc<Broker>,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    if let Some(id) = &request.transactional_id {
        if let Some(suppressed) = TRANSACTIONAL_LOG.admit() {
            warn!(transactional_id = %id.0, suppressed, "transactions are not supported yet; refusing InitProducerId");
        }
        response.error_code = ResponseError::InvalidRequest.code();
        return response;
    }
    // Non-transactional producers always get a fresh id at epoch 0; an
    // existing id/epoch in the request (KIP-360 epoch bump) is answered the
    // same way, as Kafka does without a transactional id.
    match broker.allocate_producer_id().await {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(e) => {
            if let Some(suppressed) = ALLOCATION_LOG.admit() {
                error!(error = %e, suppressed, "cannot allocate a producer id");
            }
            // Retriable: the client asks again (the quorum may be
            // electing a leader).
            response.error_code = match e {
                crate::broker::BrokerError::Io(_) => ResponseError::KafkaStorageError.code(),
                _ => ResponseError::CoordinatorNotAvailable.code(),
            };
        }
    }
    response
}
