//! The Kafka protocol server: accepts connections, reads size-prefixed
//! frames, decodes requests with `kafka-protocol`, runs the handler and
//! writes responses in request order.
//!
//! ```text
//! request frame:  i32 size | i16 api_key | i16 api_version | i32 correlation_id
//!                 | nullable string client_id | [tagged fields] | body
//! response frame: i32 size | i32 correlation_id | [tagged fields] | body
//! ```
//! Limits enforced before anything is allocated: the frame size against
//! `max_request_bytes` (Produce) or `max_control_request_bytes` (everything
//! else), the bytes of all requests in flight against
//! `max_inflight_request_bytes`, and the number of connections. A frame that
//! breaks a limit, an unknown API key or an undecodable request closes the
//! connection with a log line, as Kafka does.
//!
//! Requests on one connection are handled one at a time (Kafka's ordering
//! guarantee); the next request is read while the previous response is
//! being written.

mod admin;
mod coordinator;
mod errors;
mod fetch;
pub mod frame;
mod groups;
mod legacy;
mod metadata;
mod offsets;
mod produce;
mod producer;
pub mod versions;

#[cfg(test)]
mod fuzz_tests;

use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, warn, Instrument};

use crate::broker::Broker;
use frame::{FrameBuf, ResponseFrame};

pub use errors::{code as error_code, kafka_error};

/// Smallest frame that can hold a request header.
const MIN_FRAME_BYTES: usize = 8;
/// Responses queued for writing per connection.
const RESPONSE_QUEUE_DEPTH: usize = 8;

/// Why a connection was closed by the broker.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("frame of {size} bytes is outside the allowed 8..={max} bytes")]
    FrameSize { size: i64, max: usize },
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("{api:?} v{version} is not supported")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("an acks=0 produce failed with error {0}; closing so the client notices")]
    UnacknowledgedProduceFailed(i16),
    #[error("cannot encode the {api:?} v{version} response: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A decoded request with the header fields handlers need.
pub struct Request {
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub version: i16,
    pub body: RequestKind,
}

/// Parses one request frame (without its size prefix). Never panics: any
/// malformed input becomes an error.
pub fn decode_request(frame: Bytes) -> Result<Request, ConnectionError> {
    if frame.len() < MIN_FRAME_BYTES {
        return Err(ConnectionError::FrameSize {
            size: frame.len() as i64,
            max: usize::MAX,
        });
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| ConnectionError::UnknownApiKey(raw_key))?;
    if !versions::can_handle(api_key, version) && api_key != ApiKey::ApiVersions {
        return Err(ConnectionError::UnsupportedVersion {
            api: api_key,
            version,
        });
    }
    let malformed = |reason: String| ConnectionError::Malformed {
        api: api_key,
        version,
        reason,
    };
    // The decoder returns errors for short or bad input; catch_unwind is a
    // second line of defence so a decoder bug cannot take the broker down.
    if api_key == ApiKey::ApiVersions && !versions::can_handle(api_key, version) {
        // A version newer than ours: answer UNSUPPORTED_VERSION with our
        // list. Only the correlation id is needed; the rest may be in a
        // layout this broker does not know.
        let mut header = RequestHeader::default();
        header.request_api_key = raw_key;
        header.request_api_version = version;
        header.correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        return Ok(Request {
            header,
            api_key,
            version,
            body: RequestKind::ApiVersions(Default::default()),
        });
    }
    let decoded =
        std::panic::catch_unwind(AssertUnwindSafe(|| decode_body(api_key, version, frame)));
    match decoded {
        Ok(Ok((header, body))) => Ok(Request {
            header,
            api_key,
            version,
            body,
        }),
        Ok(Err(e)) => Err(malformed(e.to_string())),
        Err(_) => Err(malformed("decoder panicked".into())),
    }
}

/// Decodes header and body; may panic only if the codec has a bug (the fuzz
/// tests call it directly to find such bugs).
fn decode_body(
    api_key: ApiKey,
    version: i16,
    frame: Bytes,
) -> anyhow::Result<(RequestHeader, RequestKind)> {
    let mut buf = frame;
    let header = RequestHeader::decode(&mut buf, api_key.request_header_version(version))?;
    let body = match api_key {
        // Versions older than the codec knows (message format v0/v1).
        ApiKey::Produce if legacy::handles(api_key, version) => {
            RequestKind::Produce(legacy::decode_produce(&mut buf, version)?)
        }
        ApiKey::Fetch if legacy::handles(api_key, version) => {
            RequestKind::Fetch(legacy::decode_fetch(&mut buf, version)?)
        }
        _ => RequestKind::decode(api_key, &mut buf, version)?,
    };
    Ok((header, body))
}

/// Encodes a response frame, size prefix included. Fetch responses
/// reference their record bytes instead of copying them (see `frame`).
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> anyhow::Result<ResponseFrame> {
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let header_version = api_key.response_header_version(version);
    if legacy::handles(api_key, version) {
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0);
        header.encode(&mut buf, header_version)?;
        match response {
            ResponseKind::Produce(r) => legacy::encode_produce(r, version, &mut buf)?,
            ResponseKind::Fetch(r) => legacy::encode_fetch(r, version, &mut buf)?,
            _ => anyhow::bail!("no legacy encoding for {api_key:?} v{version}"),
        }
        let size = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        return Ok(ResponseFrame::from_bytes(buf.freeze()));
    }
    if let ResponseKind::Fetch(fetch) = response {
        let mut buf = FrameBuf::new();
        for p in fetch.responses.iter().flat_map(|t| t.partitions.iter()) {
            if let Some(records) = &p.records {
                buf.register(records);
            }
        }
        header.encode(&mut buf, header_version)?;
        fetch.encode(&mut buf, version)?;
        return Ok(buf.into_frame());
    }
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    header.encode(&mut buf, header_version)?;
    response.encode(&mut buf, version)?;
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(ResponseFrame::from_bytes(buf.freeze()))
}

/// Runs the Kafka listener until `shutdown` resolves.
pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    let connections = Arc::new(Semaphore::new(broker.config().max_connections));
    let inflight = Arc::new(Semaphore::new(
        kib(broker.config().max_inflight_request_bytes) as usize,
    ));
    tokio::pin!(shutdown);
    info!(addr = %listener.local_addr()?, "Kafka listener ready");
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            warn!(%peer, limit = broker.config().max_connections, "connection limit reached; closing new connection");
            continue;
        };
        let broker = broker.clone();
        let inflight = inflight.clone();
        tokio::spawn(
            async move {
                let metrics = broker.metrics();
                metrics.connections_accepted.fetch_add(1, Ordering::Relaxed);
                metrics.connections_open.fetch_add(1, Ordering::Relaxed);
                match handle_connection(broker.clone(), stream, peer, inflight).await {
                    Ok(()) => debug!("connection closed by client"),
                    Err(ConnectionError::Io(e)) => debug!(error = %e, "connection ended"),
                    Err(e) => {
                        broker
                            .metrics()
                            .frames_rejected
                            .fetch_add(1, Ordering::Relaxed);
                        warn!(error = %e, "closing connection")
                    }
                }
                broker
                    .metrics()
                    .connections_open
                    .fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            }
            .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
    Ok(())
}

fn kib(bytes: usize) -> u32 {
    bytes.div_ceil(1024).min(u32::MAX as usize) as u32
}

async fn handle_connection(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    inflight: Arc<Semaphore>,
) -> Result<(), ConnectionError> {
    // Small responses must not wait for Nagle + delayed ACK (~40 ms).
    stream.set_nodelay(true)?;
    let (read_half, mut write_half) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let (tx, mut rx) = mpsc::channel::<ResponseFrame>(RESPONSE_QUEUE_DEPTH);
    let writer = tokio::spawn(async move {
        while let Some(mut frame) = rx.recv().await {
            // Vectored writes: header chunks and record bytes in one call.
            write_half.write_all_buf(&mut frame).await?;
        }
        write_half.shutdown().await
    });
    let idle = Duration::from_millis(broker.config().connections_max_idle_ms.max(1));
    let result = async {
        loop {
            let Some((frame, _permit)) = read_frame(&mut reader, &broker, &inflight, idle).await?
            else {
                return Ok(());
            };
            let request = decode_request(frame)?;
            broker.metrics().requests.fetch_add(1, Ordering::Relaxed);
            let api_key = request.api_key;
            let correlation_id = request.header.correlation_id;
            let Some((response, version)) = dispatch(&broker, request, peer).await? else {
                continue;
            };
            let frame =
                encode_response(api_key, version, correlation_id, &response).map_err(|e| {
                    ConnectionError::Encode {
                        api: api_key,
                        version,
                        reason: format!("{e:#}"),
                    }
                })?;
            if tx.send(frame).await.is_err() {
                return Ok(());
            }
        }
    }
    .await;
    drop(tx);
    match writer.await {
        Ok(Err(e)) if result.is_ok() => return Err(e.into()),
        _ => {}
    }
    result
}

/// Reads one frame. `Ok(None)` on a clean end of stream.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    broker: &Broker,
    inflight: &Arc<Semaphore>,
    idle: Duration,
) -> Result<Option<(Bytes, tokio::sync::OwnedSemaphorePermit)>, ConnectionError> {
    let mut size_buf = [0u8; 4];
    match tokio::time::timeout(idle, reader.read_exact(&mut size_buf)).await {
        Err(_) => return Err(ConnectionError::Idle(idle)),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(_)) => {}
    }
    let size = i32::from_be_bytes(size_buf) as i64;
    let config = broker.config();
    if size < MIN_FRAME_BYTES as i64 || size > config.max_request_bytes as i64 {
        return Err(ConnectionError::FrameSize {
            size,
            max: config.max_request_bytes,
        });
    }
    let mut key_buf = [0u8; 2];
    reader.read_exact(&mut key_buf).await?;
    let api_key = i16::from_be_bytes(key_buf);
    let max = if api_key == ApiKey::Produce as i16 {
        config.max_request_bytes
    } else {
        config.max_control_request_bytes
    };
    if size as usize > max {
        return Err(ConnectionError::FrameSize { size, max });
    }
    let permit = inflight
        .clone()
        .acquire_many_owned(kib(size as usize))
        .await
        .map_err(|_| io::Error::other("server shutting down"))?;
    let mut body = BytesMut::with_capacity(size as usize);
    body.put_slice(&key_buf);
    let mut rest = reader.take(size as u64 - 2);
    while body.len() < size as usize {
        if rest.read_buf(&mut body).await? == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(Some((body.freeze(), permit)))
}

/// Runs one request. `None` means no response is sent (Produce acks=0).
async fn dispatch(
    broker: &Arc<Broker>,
    request: Request,
    peer: SocketAddr,
) -> Result<Option<(ResponseKind, i16)>, ConnectionError> {
    let version = request.version;
    let response = match request.body {
        RequestKind::ApiVersions(_) => {
            let (response, version) = versions::api_versions_response(version);
            return Ok(Some((ResponseKind::ApiVersions(response), version)));
        }
        RequestKind::Produce(req) => {
            return match produce::handle(broker, req, version).await {
                Ok(response) => Ok(response.map(|r| (ResponseKind::Produce(r), version))),
                Err(code) => Err(ConnectionError::UnacknowledgedProduceFailed(code)),
            };
        }
        RequestKind::Fetch(req) => ResponseKind::Fetch(fetch::handle(broker, req, version).await),
        RequestKind::ListOffsets(req) => {
            ResponseKind::ListOffsets(offsets::list_offsets(broker, req, version))
        }
        RequestKind::Metadata(req) => {
            ResponseKind::Metadata(metadata::handle(broker, req, version).await)
        }
        RequestKind::JoinGroup(req) => {
            let client_id = request
                .header
                .client_id
                .as_deref()
                .unwrap_or_default()
                .to_string();
            // Kafka reports hosts as "/address".
            let host = format!("/{}", peer.ip());
            ResponseKind::JoinGroup(
                groups::join_group(broker, req, version, &client_id, &host).await,
            )
        }
        RequestKind::SyncGroup(req) => {
            ResponseKind::SyncGroup(groups::sync_group(broker, req, version).await)
        }
        RequestKind::Heartbeat(req) => ResponseKind::Heartbeat(groups::heartbeat(broker, req)),
        RequestKind::LeaveGroup(req) => {
            ResponseKind::LeaveGroup(groups::leave_group(broker, req, version).await)
        }
        RequestKind::OffsetCommit(req) => {
            ResponseKind::OffsetCommit(groups::offset_commit(broker, req, version).await)
        }
        RequestKind::OffsetFetch(req) => {
            ResponseKind::OffsetFetch(groups::offset_fetch(broker, req, version))
        }
        RequestKind::ListGroups(req) => {
            ResponseKind::ListGroups(groups::list_groups(broker, req, version))
        }
        RequestKind::DescribeGroups(req) => {
            ResponseKind::DescribeGroups(groups::describe_groups(broker, req, version))
        }
        RequestKind::DeleteGroups(req) => {
            ResponseKind::DeleteGroups(groups::delete_groups(broker, req).await)
        }
        RequestKind::OffsetDelete(req) => {
            ResponseKind::OffsetDelete(groups::offset_delete(broker, req).await)
        }
        RequestKind::InitProducerId(req) => {
            ResponseKind::InitProducerId(producer::init_producer_id(broker, req))
        }
        RequestKind::FindCoordinator(req) => {
            ResponseKind::FindCoordinator(coordinator::find_coordinator(broker, req, version))
        }
        RequestKind::DescribeCluster(req) => {
            ResponseKind::DescribeCluster(metadata::describe_cluster(broker, req))
        }
        RequestKind::DeleteRecords(req) => {
            ResponseKind::DeleteRecords(offsets::delete_records(broker, req))
        }
        RequestKind::CreateTopics(req) => {
            ResponseKind::CreateTopics(admin::create_topics(broker, req, version).await)
        }
        RequestKind::DeleteTopics(req) => {
            ResponseKind::DeleteTopics(admin::delete_topics(broker, req, version).await)
        }
        RequestKind::CreatePartitions(req) => {
            ResponseKind::CreatePartitions(admin::create_partitions(broker, req).await)
        }
        RequestKind::DescribeConfigs(req) => {
            ResponseKind::DescribeConfigs(admin::describe_configs(broker, req, version))
        }
        RequestKind::AlterConfigs(req) => {
            ResponseKind::AlterConfigs(admin::alter_configs(broker, req).await)
        }
        RequestKind::IncrementalAlterConfigs(req) => ResponseKind::IncrementalAlterConfigs(
            admin::incremental_alter_configs(broker, req).await,
        ),
        // decode_request only lets advertised APIs through; anything else
        // is a programming error, answered by closing the connection.
        _ => {
            return Err(ConnectionError::UnsupportedVersion {
                api: request.api_key,
                version,
            })
        }
    };
    Ok(Some((response, version)))
}

/// Helper for handlers: `Bytes` for a string, as `StrBytes`.
pub(crate) fn str_bytes(s: impl Into<String>) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.into())
}
