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
//! else), the bytes of requests in flight against the broker's and the
//! client address's budgets (counted as the bytes arrive, see `limits`), and
//! the number of connections, overall and per client address. A request
//! must arrive within `request_read_timeout_ms` of its first byte, and a
//! connection that sends nothing (or reads none of its responses) for
//! `connections_max_idle_ms` is closed. A frame that breaks a limit, an
//! unknown API key or an undecodable request closes the connection, as
//! Kafka does. Every close is counted by reason in `BrokerMetrics`; the log
//! gets at most one line per reason per 10 s (a client can repeat bad input
//! at will).
//!
//! Requests on one connection are handled one at a time (Kafka's ordering
//! guarantee); the next request is read while the previous response is
//! being written.

mod admin;
pub mod authorizer;
mod coordinator;
mod epochs;
mod errors;
mod fetch;
pub mod frame;
mod groups;
pub mod legacy;
mod legacy_records;
mod limits;
mod metadata;
mod offsets;
mod produce;
mod replicas;
mod transactions;
mod txn;
pub mod versions;

#[cfg(test)]
mod fuzz_tests;

use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use crate::broker::{Broker, CloseReason};
use crate::log_limit::LogLimit;
use frame::{FrameBuf, ResponseFrame};
use limits::{kib, Budgets, Peers, RequestBudget};

pub use errors::{code as error_code, kafka_error};

/// Smallest frame that can hold a request header.
const MIN_FRAME_BYTES: usize = 8;
/// Responses queued for writing per connection.
const RESPONSE_QUEUE_DEPTH: usize = 8;
/// Request bytes budgeted and read per step.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A request's buffer starts at most this large and doubles as its bytes
/// arrive. The largest request of a producer with default settings
/// (librdkafka's and Java's send at most about 1 MB) therefore lands in one
/// allocation and is never copied; memory pages are touched only as bytes
/// arrive, and larger buffers are at most twice what arrived.
const INITIAL_REQUEST_BUFFER_BYTES: usize = 1 << 20;

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
    #[error(
        "request not received within {timeout:?} of its first byte ({arrived} of {} bytes arrived)",
        declared(*size)
    )]
    RequestReadTimeout {
        /// The declared size, -1 while the size prefix is incomplete.
        size: i64,
        arrived: usize,
        timeout: Duration,
    },
    #[error(
        "nothing received for {idle:?} in the middle of a request ({arrived} of {} bytes arrived)",
        declared(*size)
    )]
    RequestStalled {
        size: i64,
        arrived: usize,
        idle: Duration,
    },
    #[error("no byte of a response could be written for {0:?}: the client does not read")]
    ResponseWriteTimeout(Duration),
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

fn declared(size: i64) -> String {
    if size < 0 {
        "an unknown number of".into()
    } else {
        size.to_string()
    }
}

impl ConnectionError {
    /// The metric reason of a close; `None` for I/O errors (the peer went
    /// away or reset the connection).
    pub fn close_reason(&self) -> Option<CloseReason> {
        Some(match self {
            ConnectionError::FrameSize { .. } => CloseReason::FrameSize,
            ConnectionError::UnknownApiKey(_) => CloseReason::UnknownApiKey,
            ConnectionError::UnsupportedVersion { .. } => CloseReason::UnsupportedVersion,
            ConnectionError::Malformed { .. } => CloseReason::MalformedRequest,
            ConnectionError::Idle(_) => CloseReason::Idle,
            ConnectionError::RequestReadTimeout { .. } | ConnectionError::RequestStalled { .. } => {
                CloseReason::RequestReadTimeout
            }
            ConnectionError::ResponseWriteTimeout(_) => CloseReason::ResponseWriteTimeout,
            ConnectionError::UnacknowledgedProduceFailed(_) => {
                CloseReason::UnacknowledgedProduceFailed
            }
            ConnectionError::Encode { .. } => CloseReason::EncodeFailed,
            ConnectionError::Io(_) => return None,
        })
    }
}

/// A decoded request with the header fields handlers need.
pub struct Request {
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub version: i16,
    pub body: RequestKind,
    /// Fields of a removed old version the body type has no room for.
    pub legacy: Option<legacy::LegacyFields>,
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
            legacy: None,
        });
    }
    let decoded =
        std::panic::catch_unwind(AssertUnwindSafe(|| decode_body(api_key, version, frame)));
    match decoded {
        Ok(Ok((header, body, legacy))) => Ok(Request {
            header,
            api_key,
            version,
            body,
            legacy,
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
) -> anyhow::Result<(RequestHeader, RequestKind, Option<legacy::LegacyFields>)> {
    let mut buf = frame;
    let header = RequestHeader::decode(&mut buf, api_key.request_header_version(version))?;
    if legacy::decodes(api_key, version) {
        let (body, fields) = legacy::decode_body(api_key, version, buf)?;
        return Ok((header, body, fields));
    }
    let body = match api_key {
        // Versions older than the codec knows (message format v0/v1).
        ApiKey::Produce if legacy_records::handles(api_key, version) => {
            RequestKind::Produce(legacy_records::decode_produce(buf, version)?)
        }
        ApiKey::Fetch if legacy_records::handles(api_key, version) => {
            RequestKind::Fetch(legacy_records::decode_fetch(buf, version)?)
        }
        _ => RequestKind::decode(api_key, &mut buf, version)?,
    };
    Ok((header, body, None))
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
    if legacy_records::handles(api_key, version) {
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0);
        header.encode(&mut buf, header_version)?;
        match response {
            ResponseKind::Produce(r) => legacy_records::encode_produce(r, version, &mut buf)?,
            ResponseKind::Fetch(r) => legacy_records::encode_fetch(r, version, &mut buf)?,
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
    if legacy::decodes(api_key, version) {
        legacy::encode_body(api_key, version, response, &mut buf)?;
    } else {
        response.encode(&mut buf, version)?;
    }
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(ResponseFrame::from_bytes(buf.freeze()))
}

/// What every connection of one listener shares: its limits, budgets and
/// the rate limits of its log lines.
struct Listener {
    broker: Arc<Broker>,
    connections: Arc<Semaphore>,
    peers: Arc<Peers>,
    inflight: Arc<Semaphore>,
    idle: Duration,
    request_read_timeout: Duration,
    /// One log limit per close reason.
    close_logs: [LogLimit; CloseReason::ALL.len()],
    accept_log: LogLimit,
}

impl Listener {
    fn new(broker: Arc<Broker>) -> Listener {
        let config = broker.config();
        Listener {
            connections: Arc::new(Semaphore::new(config.max_connections)),
            peers: Peers::new(
                config.max_connections_per_ip,
                config.inflight_request_bytes_per_ip(),
            ),
            inflight: Arc::new(Semaphore::new(
                kib(config.max_inflight_request_bytes) as usize
            )),
            idle: Duration::from_millis(config.connections_max_idle_ms.max(1)),
            request_read_timeout: Duration::from_millis(config.request_read_timeout_ms.max(1)),
            close_logs: std::array::from_fn(|_| LogLimit::default()),
            accept_log: LogLimit::default(),
            broker,
        }
    }

    /// Counts a connection the broker closes, and logs it unless a line
    /// for the same reason was written in the last 10 s.
    fn closed(&self, peer: SocketAddr, reason: CloseReason, error: &dyn std::fmt::Display) {
        self.broker.metrics().connection_closed(reason);
        if reason == CloseReason::Idle {
            // Routine housekeeping, as in Kafka: not worth a warning.
            debug!(%peer, %error, "closing idle connection");
            return;
        }
        if let Some(suppressed) = self.close_logs[reason as usize].admit() {
            warn!(%peer, reason = reason.label(), %error, suppressed, "closing connection");
        }
    }
}

/// Runs the Kafka listener until `shutdown` resolves.
pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    let shared = Arc::new(Listener::new(broker));
    tokio::pin!(shutdown);
    info!(addr = %listener.local_addr()?, "Kafka listener ready");
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    if let Some(suppressed) = shared.accept_log.admit() {
                        warn!(error = %e, suppressed, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            let limit = shared.broker.config().max_connections;
            shared.closed(
                peer,
                CloseReason::ConnectionLimit,
                &format_args!("the broker's limit of {limit} connections is reached"),
            );
            continue;
        };
        let Some(from_peer) = shared.peers.admit(peer.ip()) else {
            let limit = shared.broker.config().max_connections_per_ip;
            shared.closed(
                peer,
                CloseReason::IpConnectionLimit,
                &format_args!("{} already has {limit} connections open", peer.ip()),
            );
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(
            async move {
                let metrics = shared.broker.metrics();
                metrics.connections_accepted.fetch_add(1, Ordering::Relaxed);
                metrics.connections_open.fetch_add(1, Ordering::Relaxed);
                let budgets = Budgets::for_peer(shared.inflight.clone(), &from_peer);
                match handle_connection(&shared, stream, peer, budgets).await {
                    Ok(()) => debug!("connection closed by client"),
                    Err(e) => match e.close_reason() {
                        None => debug!(error = %e, "connection ended"),
                        Some(reason) => shared.closed(peer, reason, &e),
                    },
                }
                metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
                drop((from_peer, permit));
            }
            .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
    Ok(())
}

async fn handle_connection(
    shared: &Listener,
    stream: TcpStream,
    peer: SocketAddr,
    budgets: Budgets,
) -> Result<(), ConnectionError> {
    let broker = &shared.broker;
    // Small responses must not wait for Nagle + delayed ACK (~40 ms).
    stream.set_nodelay(true)?;
    let (read_half, mut write_half) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let (tx, mut rx) = mpsc::channel::<ResponseFrame>(RESPONSE_QUEUE_DEPTH);
    let idle = shared.idle;
    let mut writer = tokio::spawn(async move {
        while let Some(mut frame) = rx.recv().await {
            write_frame(&mut write_half, &mut frame, idle).await?;
        }
        write_half.shutdown().await?;
        Ok(())
    });
    // The writer ends early only when it fails; then the connection is
    // over, and waiting for the next request would only delay the close.
    let mut written = None;
    let result = async {
        loop {
            let next = tokio::select! {
                next = read_frame(&mut reader, shared, &budgets) => next?,
                done = &mut writer => {
                    written = Some(done);
                    return Ok(());
                }
            };
            let Some((frame, _budget)) = next else {
                return Ok(());
            };
            let request = decode_request(frame)?;
            broker.metrics().requests.fetch_add(1, Ordering::Relaxed);
            let api_key = request.api_key;
            let correlation_id = request.header.correlation_id;
            let started = std::time::Instant::now();
            let dispatched = dispatch(broker, request, peer).await?;
            broker
                .metrics()
                .latency
                .observe(api_key as i16, started.elapsed());
            let Some((response, version)) = dispatched else {
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
    let written = match written {
        Some(done) => done,
        None => writer.await,
    };
    match written {
        // A client that stops reading is the cause, whatever the reader saw.
        Ok(Err(e)) if result.is_ok() || matches!(e, ConnectionError::ResponseWriteTimeout(_)) => {
            Err(e)
        }
        _ => result,
    }
}

/// Writes a response frame with vectored writes (header chunks and record
/// bytes in one call). A client that stops reading would hold the frame,
/// and the queue behind it, for ever: when a whole `idle` period passes
/// without a byte written, the connection ends (as in Kafka, any bytes
/// moved count as activity; silence is checked once per period, so a stall
/// ends the connection between one and two periods after the last byte).
/// The timer is armed once per frame, and only if a write has to wait, so
/// a fast client costs no timer at all.
async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &mut ResponseFrame,
    idle: Duration,
) -> Result<(), ConnectionError> {
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    let mut progressed = false;
    while frame.has_remaining() {
        let write = std::future::poll_fn(|cx| {
            let mut slices = [io::IoSlice::new(&[]); 64];
            let n = frame.chunks_vectored(&mut slices);
            std::pin::Pin::new(&mut *writer).poll_write_vectored(cx, &slices[..n])
        });
        tokio::select! {
            biased;
            written = write => {
                let written = written?;
                if written == 0 {
                    return Err(io::Error::from(io::ErrorKind::WriteZero).into());
                }
                frame.advance(written);
                progressed = true;
            }
            _ = &mut timer => {
                if !std::mem::take(&mut progressed) {
                    return Err(ConnectionError::ResponseWriteTimeout(idle));
                }
                timer.as_mut().reset(Instant::now() + idle);
            }
        }
    }
    Ok(())
}

/// The time limits of one request being read: the request read timeout
/// from its first byte, and the idle timeout between two reads.
struct RequestClock {
    deadline: Instant,
    timeout: Duration,
    idle: Duration,
}

impl RequestClock {
    /// Runs one read of the request, `arrived` bytes of a declared `size`
    /// (-1 while unknown) into it.
    async fn read<T>(
        &self,
        read: impl std::future::Future<Output = io::Result<T>>,
        size: i64,
        arrived: usize,
    ) -> Result<T, ConnectionError> {
        let idle_at = Instant::now() + self.idle;
        if idle_at < self.deadline {
            match tokio::time::timeout_at(idle_at, read).await {
                Ok(r) => Ok(r?),
                Err(_) => Err(ConnectionError::RequestStalled {
                    size,
                    arrived,
                    idle: self.idle,
                }),
            }
        } else {
            match tokio::time::timeout_at(self.deadline, read).await {
                Ok(r) => Ok(r?),
                Err(_) => Err(self.timed_out(size, arrived)),
            }
        }
    }

    fn timed_out(&self, size: i64, arrived: usize) -> ConnectionError {
        ConnectionError::RequestReadTimeout {
            size,
            arrived,
            timeout: self.timeout,
        }
    }
}

/// Reads one frame, with the budget its bytes hold until it is handled.
/// `Ok(None)` on a clean end of stream.
async fn read_frame<'a, R: AsyncBufRead + Unpin>(
    reader: &mut R,
    shared: &'a Listener,
    budgets: &'a Budgets,
) -> Result<Option<(Bytes, RequestBudget<'a>)>, ConnectionError> {
    // Between requests only the idle timeout applies.
    match tokio::time::timeout(shared.idle, reader.fill_buf()).await {
        Err(_) => return Err(ConnectionError::Idle(shared.idle)),
        Ok(Ok([])) => return Ok(None),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.into()),
    }
    let clock = RequestClock {
        deadline: Instant::now() + shared.request_read_timeout,
        timeout: shared.request_read_timeout,
        idle: shared.idle,
    };
    let mut size_buf = [0u8; 4];
    clock.read(reader.read_exact(&mut size_buf), -1, 0).await?;
    let size = i32::from_be_bytes(size_buf) as i64;
    let config = shared.broker.config();
    if size < MIN_FRAME_BYTES as i64 || size > config.max_request_bytes as i64 {
        return Err(ConnectionError::FrameSize {
            size,
            max: config.max_request_bytes,
        });
    }
    let mut key_buf = [0u8; 2];
    clock.read(reader.read_exact(&mut key_buf), size, 0).await?;
    let api_key = i16::from_be_bytes(key_buf);
    let max = if api_key == ApiKey::Produce as i16 {
        config.max_request_bytes
    } else {
        config.max_control_request_bytes
    };
    if size as usize > max {
        return Err(ConnectionError::FrameSize { size, max });
    }
    let total = size as usize;
    // The budget and the buffer grow with the bytes that arrive, never
    // with the size the client declared.
    let mut budget = RequestBudget::new(budgets, shared.broker.metrics());
    // A Vec, for exact capacities: it ends full, and `Bytes::from` takes it
    // over without a copy.
    let mut body: Vec<u8> = Vec::with_capacity(total.min(INITIAL_REQUEST_BUFFER_BYTES));
    body.extend_from_slice(&key_buf);
    while body.len() < total {
        let arrived = body.len();
        let step = (total - arrived).min(READ_CHUNK_BYTES);
        match tokio::time::timeout_at(clock.deadline, budget.cover(arrived + step)).await {
            Err(_) => return Err(clock.timed_out(size, arrived)),
            Ok(Err(_)) => return Err(io::Error::other("server shutting down").into()),
            Ok(Ok(())) => {}
        }
        if body.capacity() < arrived + step {
            let grown = (body.capacity() * 2).clamp(arrived + step, total);
            body.reserve_exact(grown - arrived);
        }
        let mut chunk = (&mut *reader).take(step as u64);
        if clock.read(chunk.read_buf(&mut body), size, arrived).await? == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(Some((Bytes::from(body), budget)))
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
        RequestKind::OffsetForLeaderEpoch(req) => {
            ResponseKind::OffsetForLeaderEpoch(epochs::offset_for_leader_epoch(broker, req))
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
        RequestKind::OffsetCommit(req) => ResponseKind::OffsetCommit(
            groups::offset_commit(broker, req, version, request.legacy).await,
        ),
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
            ResponseKind::InitProducerId(transactions::init_producer_id(broker, req, version).await)
        }
        RequestKind::AddPartitionsToTxn(req) => ResponseKind::AddPartitionsToTxn(
            transactions::add_partitions_to_txn(broker, req, version).await,
        ),
        RequestKind::AddOffsetsToTxn(req) => ResponseKind::AddOffsetsToTxn(
            transactions::add_offsets_to_txn(broker, req, version).await,
        ),
        RequestKind::EndTxn(req) => {
            ResponseKind::EndTxn(transactions::end_txn(broker, req, version).await)
        }
        RequestKind::TxnOffsetCommit(req) => {
            ResponseKind::TxnOffsetCommit(groups::txn_offset_commit(broker, req, version).await)
        }
        RequestKind::DescribeTransactions(req) => ResponseKind::DescribeTransactions(
            transactions::describe_transactions(broker, req).await,
        ),
        RequestKind::ListTransactions(req) => {
            ResponseKind::ListTransactions(transactions::list_transactions(broker, req).await)
        }
        RequestKind::FindCoordinator(req) => {
            ResponseKind::FindCoordinator(coordinator::find_coordinator(broker, req, version))
        }
        RequestKind::DescribeCluster(req) => {
            ResponseKind::DescribeCluster(metadata::describe_cluster(broker, req))
        }
        RequestKind::DescribeProducers(req) => {
            ResponseKind::DescribeProducers(txn::describe_producers(broker, req))
        }
        RequestKind::WriteTxnMarkers(req) => {
            ResponseKind::WriteTxnMarkers(txn::write_txn_markers(broker, req).await)
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
        RequestKind::DescribeLogDirs(req) => {
            ResponseKind::DescribeLogDirs(admin::describe_log_dirs(broker, req))
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
        RequestKind::ElectLeaders(req) => {
            ResponseKind::ElectLeaders(replicas::elect_leaders(broker, req, version).await)
        }
        RequestKind::AlterPartitionReassignments(req) => ResponseKind::AlterPartitionReassignments(
            replicas::alter_partition_reassignments(broker, req, version).await,
        ),
        RequestKind::ListPartitionReassignments(req) => ResponseKind::ListPartitionReassignments(
            replicas::list_partition_reassignments(broker, req),
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

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use tokio::io::{AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::config::BrokerConfig;

    async fn listener(config: BrokerConfig) -> (tempfile::TempDir, Listener) {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig {
            data_dir: dir.path().join("data"),
            ..config
        })
        .await
        .unwrap();
        (dir, Listener::new(broker))
    }

    fn produce_frame_start(declared: i32, body_bytes: usize) -> Vec<u8> {
        let mut frame = declared.to_be_bytes().to_vec();
        frame.extend_from_slice(&(ApiKey::Produce as i16).to_be_bytes());
        frame.extend((0..body_bytes - 2).map(|i| i as u8));
        frame
    }

    fn held_bytes(shared: &Listener) -> u64 {
        shared
            .broker
            .metrics()
            .inflight_request_bytes
            .load(Ordering::Relaxed)
    }

    async fn connect(shared: &Listener) -> (DuplexStream, BufReader<DuplexStream>, Budgets) {
        let (client, server) = tokio::io::duplex(4 << 20);
        let peer = shared.peers.admit(IpAddr::from([10, 0, 0, 1])).unwrap();
        let budgets = Budgets::for_peer(shared.inflight.clone(), &peer);
        (client, BufReader::new(server), budgets)
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_holds_budget_for_the_bytes_that_arrived_not_the_size_it_declares() {
        let (_dir, shared) = listener(BrokerConfig::default()).await;
        let (mut client, mut reader, budgets) = connect(&shared).await;
        let total_kib = shared.inflight.available_permits();
        client
            .write_all(&produce_frame_start(100_000_000, 64 * 1024))
            .await
            .unwrap();
        let read = read_frame(&mut reader, &shared, &budgets);
        tokio::pin!(read);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), &mut read)
                .await
                .is_err(),
            "the request is incomplete"
        );
        let held = held_bytes(&shared);
        assert!(
            (64 * 1024..=130 * 1024).contains(&held),
            "64 KiB arrived of 100 MB declared, {held} bytes held"
        );
        assert_eq!(
            shared.inflight.available_permits() as u64,
            total_kib as u64 - held / 1024
        );
        let started = Instant::now();
        match read.await {
            Err(ConnectionError::RequestReadTimeout { size, arrived, .. }) => {
                assert_eq!((size, arrived), (100_000_000, 64 * 1024))
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("an incomplete request was returned"),
        }
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(29),
            "30 s from its first byte"
        );
        assert_eq!(held_bytes(&shared), 0, "the budget is given back");
        assert_eq!(shared.inflight.available_permits(), total_kib);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silence_in_the_middle_of_a_request_ends_it_after_the_idle_timeout() {
        let (_dir, shared) = listener(BrokerConfig {
            connections_max_idle_ms: 2_000,
            request_read_timeout_ms: 60_000,
            ..Default::default()
        })
        .await;
        let (mut client, mut reader, budgets) = connect(&shared).await;
        client
            .write_all(&produce_frame_start(1000, 100))
            .await
            .unwrap();
        let started = Instant::now();
        match read_frame(&mut reader, &shared, &budgets).await {
            Err(ConnectionError::RequestStalled { arrived: 100, .. }) => {}
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("an incomplete request was returned"),
        }
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        // Between requests the same silence is a plain idle close.
        let (_client, mut reader, budgets) = connect(&shared).await;
        assert!(matches!(
            read_frame(&mut reader, &shared, &budgets).await,
            Err(ConnectionError::Idle(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_write_ends_only_after_the_idle_timeout_without_progress() {
        let idle = Duration::from_secs(2);
        let frame = || ResponseFrame::from_bytes(Bytes::from(vec![7u8; 10 * 1024]));

        // A client that reads 512 bytes a second: slow, but never idle.
        let (mut writer, mut reader) = tokio::io::duplex(1024);
        let slow_reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut total = 0;
            while total < 10 * 1024 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                total += reader.read(&mut buf).await.unwrap();
            }
            total
        });
        let started = Instant::now();
        write_frame(&mut writer, &mut frame(), idle).await.unwrap();
        assert!(started.elapsed() > idle * 5, "{:?}", started.elapsed());
        assert_eq!(slow_reader.await.unwrap(), 10 * 1024);

        // A client that reads nothing: its buffer takes the first KiB, then
        // nothing moves. Silence is checked once per idle period, so the
        // write ends within two of them.
        let (mut writer, _reader) = tokio::io::duplex(1024);
        let started = Instant::now();
        assert!(matches!(
            write_frame(&mut writer, &mut frame(), idle).await,
            Err(ConnectionError::ResponseWriteTimeout(_))
        ));
        assert_eq!(started.elapsed(), idle * 2);
    }

    #[tokio::test]
    async fn a_request_larger_than_the_first_buffer_arrives_whole_and_holds_its_size() {
        let (_dir, shared) = listener(BrokerConfig::default()).await;
        let (mut client, mut reader, budgets) = connect(&shared).await;
        let size = 3 * 1024 * 1024 + 17;
        let frame = produce_frame_start(size as i32, size);
        let writer = tokio::spawn(async move {
            for chunk in frame.chunks(100_000) {
                client.write_all(chunk).await.unwrap();
            }
            client
        });
        let (body, budget) = read_frame(&mut reader, &shared, &budgets)
            .await
            .unwrap()
            .expect("a frame");
        let _client = writer.await.unwrap();
        assert_eq!(body.len(), size);
        assert_eq!(&body[..], &produce_frame_start(size as i32, size)[4..]);
        assert_eq!(held_bytes(&shared), kib(size) as u64 * 1024);
        drop(budget);
        assert_eq!(held_bytes(&shared), 0);
    }
}
