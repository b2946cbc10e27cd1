//! The transaction coordinator's APIs: InitProducerId (also for idempotent
//! producers, with no transactional id), AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn, DescribeTransactions and ListTransactions.
//! Request/response shapes per version are handled here; the transaction
//! logic lives in `crate::txn`.
//!
//! Clients older than KIP-588 (InitProducerId < v4, AddPartitionsToTxn,
//! AddOffsetsToTxn and EndTxn < v2) do not know PRODUCER_FENCED: they are
//! told INVALID_PRODUCER_EPOCH, as Kafka does.

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TopicName,
};
use kafka_protocol::ResponseError;
use tracing::error;

use super::str_bytes;
use crate::broker::{now_ms, Broker};
use crate::log_limit::{LogLimit, DEFAULT_INTERVAL};
use crate::txn::records::TxnStatus;
use crate::txn::AddPartitionsError;

/// Can be triggered by every request of a client.
static ALLOCATION_LOG: LogLimit = LogLimit::new(DEFAULT_INTERVAL);

/// Most partitions one AddPartitionsToTxn may name, and most ids one
/// DescribeTransactions may ask about.
const MAX_NAMED: usize = 10_000;

/// PRODUCER_FENCED for the versions that know it, else
/// INVALID_PRODUCER_EPOCH.
fn fenced_as(error: ResponseError, knows_fenced: bool) -> ResponseError {
    if error == ResponseError::ProducerFenced && !knows_fenced {
        ResponseError::InvalidProducerEpoch
    } else {
        error
    }
}

pub async fn init_producer_id(
    broker: &Arc<Broker>,
    request: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    if let Some(id) = &request.transactional_id {
        // v3+ may name the id and epoch the producer has (KIP-360).
        let expected = (version >= 3 && request.producer_id.0 >= 0)
            .then_some((request.producer_id.0, request.producer_epoch));
        match broker
            .transactions()
            .init_producer_id(&id.0, request.transaction_timeout_ms, expected)
            .await
        {
            Ok((producer_id, epoch)) => {
                response.producer_id = ProducerId(producer_id);
                response.producer_epoch = epoch;
            }
            Err(e) => response.error_code = fenced_as(e, version >= 4).code(),
        }
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

/// AddPartitionsToTxn v0-3 (one transaction per request; v4+ is the
/// brokers' batched form of KIP-890, not advertised).
pub async fn add_partitions_to_txn(
    broker: &Arc<Broker>,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    let named: Vec<(String, i32)> = request
        .v3_and_below_topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect();
    let outcome = if named.len() > MAX_NAMED {
        Err(AddPartitionsError::All(ResponseError::InvalidRequest))
    } else {
        broker
            .transactions()
            .add_partitions(
                &request.v3_and_below_transactional_id.0,
                request.v3_and_below_producer_id.0,
                request.v3_and_below_producer_epoch,
                named,
            )
            .await
    };
    let unknown: HashSet<(String, i32)> = match &outcome {
        Err(AddPartitionsError::Unknown(list)) => list.iter().cloned().collect(),
        _ => HashSet::new(),
    };
    let code_for = |topic: &str, partition: i32| -> i16 {
        match &outcome {
            Ok(()) => 0,
            Err(AddPartitionsError::All(e)) => fenced_as(*e, version >= 2).code(),
            Err(AddPartitionsError::Unknown(_)) => {
                if unknown.contains(&(topic.to_string(), partition)) {
                    ResponseError::UnknownTopicOrPartition.code()
                } else {
                    ResponseError::OperationNotAttempted.code()
                }
            }
        }
    };
    let mut response = AddPartitionsToTxnResponse::default();
    response.results_by_topic_v3_and_below = request
        .v3_and_below_topics
        .into_iter()
        .map(|t| {
            let mut r = AddPartitionsToTxnTopicResult::default();
            r.results_by_partition = t
                .partitions
                .iter()
                .map(|&p| {
                    let mut pr = AddPartitionsToTxnPartitionResult::default();
                    pr.partition_index = p;
                    pr.partition_error_code = code_for(&t.name.0, p);
                    pr
                })
                .collect();
            r.name = t.name;
            r
        })
        .collect();
    response
}

pub async fn add_offsets_to_txn(
    broker: &Arc<Broker>,
    request: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let mut response = AddOffsetsToTxnResponse::default();
    if let Err(e) = broker
        .transactions()
        .add_offsets(
            &request.transactional_id.0,
            request.producer_id.0,
            request.producer_epoch,
            &request.group_id.0,
        )
        .await
    {
        response.error_code = fenced_as(e, version >= 2).code();
    }
    response
}

pub async fn end_txn(broker: &Arc<Broker>, request: EndTxnRequest, version: i16) -> EndTxnResponse {
    let mut response = EndTxnResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    if let Err(e) = broker
        .transactions()
        .end_txn(
            &request.transactional_id.0,
            request.producer_id.0,
            request.producer_epoch,
            request.committed,
        )
        .await
    {
        response.error_code = fenced_as(e, version >= 2).code();
    }
    response
}

pub async fn describe_transactions(
    broker: &Arc<Broker>,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
    let mut response = DescribeTransactionsResponse::default();
    for (i, id) in request.transactional_ids.into_iter().enumerate() {
        let mut s = TransactionState::default();
        s.producer_id = ProducerId(-1);
        s.producer_epoch = -1;
        s.transaction_start_time_ms = -1;
        s.transaction_state = str_bytes("");
        let described = if i >= MAX_NAMED {
            Err(ResponseError::InvalidRequest)
        } else {
            broker.transactions().describe(&id.0).await
        };
        match described {
            Err(e) => s.error_code = e.code(),
            Ok(v) => {
                s.transaction_state = str_bytes(v.status.name());
                s.transaction_timeout_ms = v.timeout_ms;
                s.transaction_start_time_ms = v.start_ms;
                s.producer_id = ProducerId(v.producer_id);
                s.producer_epoch = v.producer_epoch;
                let mut topics: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
                for (topic, p) in v.partitions {
                    topics.entry(topic).or_default().push(p);
                }
                s.topics = topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        let mut t = TopicData::default();
                        t.topic = TopicName(str_bytes(topic));
                        t.partitions = partitions;
                        t
                    })
                    .collect();
            }
        }
        s.transactional_id = id;
        response.transaction_states.push(s);
    }
    response
}

/// ListTransactions v0-1: the transactional ids this broker coordinates,
/// filtered by state, producer id and (v1) how long they have been open.
pub async fn list_transactions(
    broker: &Arc<Broker>,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    use kafka_protocol::messages::list_transactions_response::TransactionState;
    let mut response = ListTransactionsResponse::default();
    let mut states = HashSet::new();
    for name in &request.state_filters {
        match TxnStatus::from_name(name) {
            Some(s) => {
                states.insert(s);
            }
            None => response.unknown_state_filters.push(name.clone()),
        }
    }
    let producers: HashSet<i64> = request.producer_id_filters.iter().map(|p| p.0).collect();
    let listed = match broker.transactions().list().await {
        Ok(listed) => listed,
        Err(e) => {
            response.error_code = e.code();
            return response;
        }
    };
    let now = now_ms();
    if states.is_empty() && !request.state_filters.is_empty() {
        // Only states that do not exist were asked for: nothing matches.
        return response;
    }
    response.transaction_states = listed
        .into_iter()
        .filter(|t| states.is_empty() || states.contains(&t.value.status))
        .filter(|t| producers.is_empty() || producers.contains(&t.value.producer_id))
        .filter(|t| {
            // Open longer than the filter (v1; -1 = any).
            request.duration_filter < 0
                || (t.value.start_ms >= 0
                    && !t.value.status.is_idle()
                    && now - t.value.start_ms >= request.duration_filter)
        })
        .map(|t| {
            let mut s = TransactionState::default();
            s.transactional_id =
                kafka_protocol::messages::TransactionalId(str_bytes(t.transactional_id));
            s.producer_id = ProducerId(t.value.producer_id);
            s.transaction_state = str_bytes(t.value.status.name());
            s
        })
        .collect();
    response
}
