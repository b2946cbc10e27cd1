//! The controllers' RPCs over TCP: openraft's AppendEntries, Vote and
//! InstallSnapshot, and forwarded proposals.
//!
//! Every message is one frame:
//!
//! ```text
//! 0          4
//! +----------+--------------------------------------+
//! | len      | JSON (len bytes)                     |
//! +----------+--------------------------------------+
//! len: u32 big-endian, at most `max_frame_bytes` (checked before the
//!      body is read or allocated)
//! ```
//!
//! A request is a [`RpcRequest`] (which node it is for, and the call), the
//! answer an [`RpcResponse`]. A connection carries one call at a time;
//! a client keeps it for the next call and drops it on any error, so a
//! peer that vanished mid-call costs one error, never a hang: connecting,
//! and a whole call, are bounded by timeouts.
//!
//! What it is not: authenticated. The controller port must only be
//! reachable by the cluster's own nodes.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    ClientWriteError, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError,
    RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteResponse, InstallSnapshotRequest,
    InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, Raft};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::image::MAX_IMAGE_BYTES;
use super::records::{MetadataProposal, MAX_RECORDS_PER_PROPOSAL};
use super::{NodeId, TypeConfig};

/// Bounds on the controller network.
#[derive(Debug, Clone, Copy)]
pub struct NetworkLimits {
    /// Largest frame sent or accepted.
    pub max_frame_bytes: usize,
    /// Longest wait for a TCP connection to a peer.
    pub connect_timeout: Duration,
    /// Longest a server waits for the next request on an open connection,
    /// and for a started frame to arrive whole.
    pub idle_timeout: Duration,
    /// Connections a controller serves at once.
    pub max_connections: usize,
}

impl Default for NetworkLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 16 << 20,
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            max_connections: 64,
        }
    }
}

/// A call to a controller.
#[derive(Debug, Serialize, Deserialize)]
pub struct RpcRequest {
    /// The node the caller means to reach: a mismatch (a wrong address in a
    /// voter list) is refused instead of answered by the wrong node.
    pub to: NodeId,
    pub call: Call,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A proposal forwarded to the node believed to be the leader, with
    /// how long the caller waits for it.
    Propose {
        proposal: MetadataProposal,
        timeout_ms: u64,
    },
    /// A broker's session is alive (sent to the quorum's leader, which
    /// fences brokers whose sessions expire).
    Heartbeat {
        broker_id: i32,
        broker_epoch: i64,
    },
    /// A broker-only node (`process_roles: broker`) asks the quorum's
    /// leader to replicate the metadata log to it, at `addr`, as a
    /// learner: a member that applies the log but does not vote.
    AddLearner {
        node_id: NodeId,
        addr: String,
    },
}

/// The brokers' last heartbeats as this controller received them: broker
/// id → (broker epoch, when).
#[derive(Clone, Default)]
pub struct Sessions(
    Arc<std::sync::Mutex<std::collections::HashMap<i32, (i64, std::time::Instant)>>>,
);

impl Sessions {
    pub fn record(&self, broker_id: i32, broker_epoch: i64) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(broker_id, (broker_epoch, std::time::Instant::now()));
    }

    /// When `broker_id` last heartbeated in `broker_epoch`.
    pub fn last(&self, broker_id: i32, broker_epoch: i64) -> Option<std::time::Instant> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&broker_id)
            .filter(|(epoch, _)| *epoch == broker_epoch)
            .map(|(_, at)| *at)
    }
}

type ProposeResult =
    Result<ClientWriteResponse<TypeConfig>, RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>;

/// The answer to a [`Call`], or why it was refused.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RpcResponse {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Propose(ProposeResult),
    Heartbeat,
    /// The learner is (now) a member at the address it gave.
    LearnerAdded,
    /// Not handled: wrong node, over a limit.
    Refused(String),
}

/// Why a call did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing was sent: the peer could not be reached.
    #[error("controller {target} at {addr} is unreachable: {source}")]
    Unreachable {
        target: NodeId,
        addr: String,
        source: io::Error,
    },
    /// The request may have been sent; no answer came in time.
    #[error("controller {target} did not answer within {timeout:?}")]
    Timeout { target: NodeId, timeout: Duration },
    /// The connection failed mid-call: the request may have been handled.
    #[error("connection to controller {target} failed mid-call: {source}")]
    Network { target: NodeId, source: io::Error },
    /// The request is over the frame limit; nothing was sent.
    #[error("request of {bytes} bytes is over the {limit} byte frame limit")]
    TooLarge { bytes: usize, limit: usize },
    /// The peer refused it.
    #[error("controller {target} refused the call: {reason}")]
    Refused { target: NodeId, reason: String },
    /// The peer answered a different call.
    #[error("controller {target} answered another kind of call")]
    Mismatch { target: NodeId },
}

fn encode_frame<T: Serialize>(value: &T, limit: usize) -> Result<Vec<u8>, CallError> {
    let mut bytes = vec![0u8; 4];
    serde_json::to_writer(&mut bytes, value).map_err(|e| CallError::Network {
        target: 0,
        source: io::Error::other(e),
    })?;
    let len = bytes.len() - 4;
    if len > limit {
        return Err(CallError::TooLarge { bytes: len, limit });
    }
    bytes[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(bytes)
}

/// Reads one frame; `Ok(None)` on a clean end of stream before it starts.
async fn read_frame(stream: &mut TcpStream, limit: usize) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the {limit} byte limit"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(Some(body))
}

// ===================================================================
// Client
// ===================================================================

/// One connection to a peer controller, reconnected on demand.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    limits: NetworkLimits,
    conn: Option<TcpStream>,
}

impl PeerClient {
    pub fn new(target: NodeId, addr: String, limits: NetworkLimits) -> Self {
        Self {
            target,
            addr,
            limits,
            conn: None,
        }
    }

    /// Sends a call and waits for its answer, all within `timeout`.
    pub async fn call(&mut self, call: Call, timeout: Duration) -> Result<RpcResponse, CallError> {
        let frame = encode_frame(
            &RpcRequest {
                to: self.target,
                call,
            },
            self.limits.max_frame_bytes,
        )?;
        let deadline = Instant::now() + timeout;
        // A kept connection the peer closed meanwhile (idle timeout,
        // restart) is replaced before sending, so a request is never lost
        // into a dead socket and reported as "maybe handled".
        if let Some(conn) = &self.conn {
            match conn.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // End of stream, an error, or bytes nobody asked for.
                _ => self.conn = None,
            }
        }
        if self.conn.is_none() {
            let connect_deadline = deadline.min(Instant::now() + self.limits.connect_timeout);
            let connected =
                tokio::time::timeout_at(connect_deadline, TcpStream::connect(&self.addr)).await;
            let stream = match connected {
                Ok(Ok(s)) => s,
                Ok(Err(source)) => {
                    return Err(CallError::Unreachable {
                        target: self.target,
                        addr: self.addr.clone(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(CallError::Unreachable {
                        target: self.target,
                        addr: self.addr.clone(),
                        source: io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
                    })
                }
            };
            let _ = stream.set_nodelay(true);
            self.conn = Some(stream);
        }
        let stream = self.conn.as_mut().expect("connected above");
        let limit = self.limits.max_frame_bytes;
        let exchange = async {
            stream.write_all(&frame).await?;
            match read_frame(stream, limit).await? {
                Some(body) => serde_json::from_slice::<RpcResponse>(&body)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
                None => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection",
                )),
            }
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Ok(RpcResponse::Refused(reason))) => {
                self.conn = None;
                Err(CallError::Refused {
                    target: self.target,
                    reason,
                })
            }
            Ok(Ok(response)) => Ok(response),
            Ok(Err(source)) => {
                self.conn = None;
                Err(CallError::Network {
                    target: self.target,
                    source,
                })
            }
            Err(_) => {
                self.conn = None;
                Err(CallError::Timeout {
                    target: self.target,
                    timeout,
                })
            }
        }
    }
}

/// Creates openraft's per-peer clients. Addresses come from the configured
/// voter list first (so a moved voter is reached at its new address), else
/// from the membership stored in the log.
#[derive(Clone)]
pub struct Network {
    from: NodeId,
    addrs: Arc<BTreeMap<NodeId, String>>,
    limits: NetworkLimits,
}

impl Network {
    pub fn new(from: NodeId, addrs: BTreeMap<NodeId, String>, limits: NetworkLimits) -> Self {
        Self {
            from,
            addrs: Arc::new(addrs),
            limits,
        }
    }

    pub fn addr_of(&self, node: NodeId) -> Option<&str> {
        self.addrs.get(&node).map(String::as_str)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> RaftPeer {
        let addr = self
            .addrs
            .get(&target)
            .cloned()
            .unwrap_or_else(|| node.addr.clone());
        RaftPeer {
            from: self.from,
            client: PeerClient::new(target, addr, self.limits),
        }
    }
}

/// openraft's client of one peer.
pub struct RaftPeer {
    /// This controller's id.
    from: NodeId,
    client: PeerClient,
}

fn rpc_error<E: std::error::Error>(
    id: NodeId,
    action: RPCTypes,
    e: CallError,
) -> RPCError<NodeId, BasicNode, E> {
    match e {
        CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        CallError::Timeout { target, timeout } => RPCError::Timeout(Timeout {
            action,
            id,
            target,
            timeout,
        }),
        CallError::TooLarge { .. }
        | CallError::Network { .. }
        | CallError::Refused { .. }
        | CallError::Mismatch { .. } => RPCError::Network(NetworkError::new(&e)),
    }
}

impl RaftNetwork<TypeConfig> for RaftPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let id = self.from;
        let entries = rpc.entries.len() as u64;
        let target = self.client.target;
        match self
            .client
            .call(Call::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(RpcResponse::AppendEntries(Ok(r))) => Ok(r),
            Ok(RpcResponse::AppendEntries(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(target, e)))
            }
            Ok(_) => Err(rpc_error(
                id,
                RPCTypes::AppendEntries,
                CallError::Mismatch { target },
            )),
            // openraft splits the batch and retries.
            Err(CallError::TooLarge { .. }) if entries > 1 => Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries / 2),
            )),
            Err(e) => Err(rpc_error(id, RPCTypes::AppendEntries, e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let id = self.from;
        let target = self.client.target;
        match self
            .client
            .call(Call::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(RpcResponse::InstallSnapshot(Ok(r))) => Ok(r),
            Ok(RpcResponse::InstallSnapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(target, e)))
            }
            Ok(_) => Err(rpc_error(
                id,
                RPCTypes::InstallSnapshot,
                CallError::Mismatch { target },
            )),
            Err(e) => Err(rpc_error(id, RPCTypes::InstallSnapshot, e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let id = self.from;
        let target = self.client.target;
        match self.client.call(Call::Vote(rpc), option.hard_ttl()).await {
            Ok(RpcResponse::Vote(Ok(r))) => Ok(r),
            Ok(RpcResponse::Vote(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(target, e)))
            }
            Ok(_) => Err(rpc_error(
                id,
                RPCTypes::Vote,
                CallError::Mismatch { target },
            )),
            Err(e) => Err(rpc_error(id, RPCTypes::Vote, e)),
        }
    }
}

/// Idle connections to peers for forwarded proposals, a few per peer.
#[derive(Default)]
pub struct ProposalClients {
    idle: Mutex<HashMap<NodeId, Vec<PeerClient>>>,
}

/// Idle connections kept per peer.
const IDLE_PROPOSAL_CLIENTS: usize = 4;

impl ProposalClients {
    pub fn take(&self, target: NodeId, addr: &str, limits: NetworkLimits) -> PeerClient {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.get_mut(&target)
            .and_then(Vec::pop)
            .unwrap_or_else(|| PeerClient::new(target, addr.to_string(), limits))
    }

    pub fn give_back(&self, client: PeerClient) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let pool = idle.entry(client.target).or_default();
        if pool.len() < IDLE_PROPOSAL_CLIENTS && client.conn.is_some() {
            pool.push(client);
        }
    }
}

// ===================================================================
// Server
// ===================================================================

/// Serves controller RPCs on `listener` for `raft` until the task is
/// dropped or aborted (which also ends every connection it serves).
/// `max_entry_bytes` is the log store's entry limit: a leader's entry over
/// it is refused here, instead of failing the append (which would stop
/// this node's Raft).
pub async fn serve(
    listener: TcpListener,
    node_id: NodeId,
    raft: Raft<TypeConfig>,
    limits: NetworkLimits,
    max_entry_bytes: usize,
    sessions: Sessions,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "controller listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(%peer, limit = limits.max_connections, "refusing a controller connection over the limit");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let raft = raft.clone();
        let sessions = sessions.clone();
        connections.spawn(async move {
            let _permit = permit;
            if let Err(e) =
                serve_connection(stream, node_id, raft, limits, max_entry_bytes, sessions).await
            {
                debug!(%peer, error = %e, "controller connection ended");
            }
        });
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    node_id: NodeId,
    raft: Raft<TypeConfig>,
    limits: NetworkLimits,
    max_entry_bytes: usize,
    sessions: Sessions,
) -> io::Result<()> {
    loop {
        let frame = match tokio::time::timeout(
            limits.idle_timeout,
            read_frame(&mut stream, limits.max_frame_bytes),
        )
        .await
        {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        let response = match serde_json::from_slice::<RpcRequest>(&frame) {
            // Only a frame larger than the entry limit can hold an entry
            // over it.
            Ok(request) if frame.len() > max_entry_bytes => {
                match oversized_entry(&request.call, max_entry_bytes) {
                    Some(refusal) => refusal,
                    None => handle(request, node_id, &raft, limits, &sessions).await,
                }
            }
            Ok(request) => handle(request, node_id, &raft, limits, &sessions).await,
            Err(e) => RpcResponse::Refused(format!("malformed request: {e}")),
        };
        let refused = matches!(response, RpcResponse::Refused(_));
        let bytes = match encode_frame(&response, limits.max_frame_bytes) {
            Ok(bytes) => bytes,
            Err(e) => encode_frame(
                &RpcResponse::Refused(format!("response not sent: {e}")),
                limits.max_frame_bytes,
            )
            .map_err(|e| io::Error::other(e.to_string()))?,
        };
        tokio::time::timeout(limits.idle_timeout, stream.write_all(&bytes))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "response write timed out"))??;
        if refused {
            // The caller drops the connection too; a malformed stream is
            // not worth reading on.
            return Ok(());
        }
    }
}

/// A refusal if an AppendEntries carries an entry over `max_entry_bytes`.
fn oversized_entry(call: &Call, max_entry_bytes: usize) -> Option<RpcResponse> {
    let Call::AppendEntries(rpc) = call else {
        return None;
    };
    rpc.entries.iter().find_map(|entry| {
        let bytes = serde_json::to_vec(entry).map_or(usize::MAX, |b| b.len());
        (bytes > max_entry_bytes).then(|| {
            RpcResponse::Refused(format!(
                "entry {} is {bytes} bytes, over this node's {max_entry_bytes} byte entry limit",
                entry.log_id.index
            ))
        })
    })
}

async fn handle(
    request: RpcRequest,
    node_id: NodeId,
    raft: &Raft<TypeConfig>,
    limits: NetworkLimits,
    sessions: &Sessions,
) -> RpcResponse {
    if request.to != node_id {
        return RpcResponse::Refused(format!(
            "this is controller {node_id}, not controller {}",
            request.to
        ));
    }
    match request.call {
        Call::AppendEntries(rpc) => RpcResponse::AppendEntries(raft.append_entries(rpc).await),
        Call::Vote(rpc) => RpcResponse::Vote(raft.vote(rpc).await),
        Call::InstallSnapshot(rpc) => {
            // openraft writes the chunk at `offset` of an in-memory buffer:
            // an offset past the largest image would allocate for nothing.
            let end = rpc.offset.saturating_add(rpc.data.len() as u64);
            if end > MAX_IMAGE_BYTES as u64 {
                return RpcResponse::Refused(format!(
                    "snapshot chunk ends at byte {end}, past the {MAX_IMAGE_BYTES} byte limit"
                ));
            }
            RpcResponse::InstallSnapshot(raft.install_snapshot(rpc).await)
        }
        Call::Propose {
            proposal,
            timeout_ms,
        } => {
            if proposal.records.is_empty() || proposal.records.len() > MAX_RECORDS_PER_PROPOSAL {
                return RpcResponse::Refused(format!(
                    "a proposal carries 1 to {MAX_RECORDS_PER_PROPOSAL} records, not {}",
                    proposal.records.len()
                ));
            }
            // A write that cannot commit (no quorum) must not hold this
            // connection, and its permit, past the caller's interest.
            let timeout = Duration::from_millis(timeout_ms).min(limits.idle_timeout);
            match tokio::time::timeout(timeout, raft.client_write(proposal)).await {
                Ok(result) => RpcResponse::Propose(result),
                Err(_) => RpcResponse::Refused(format!(
                    "not committed within {timeout:?} (it may still commit)"
                )),
            }
        }
        Call::Heartbeat {
            broker_id,
            broker_epoch,
        } => {
            sessions.record(broker_id, broker_epoch);
            RpcResponse::Heartbeat
        }
        Call::AddLearner { node_id, addr } => match add_learner(raft, node_id, &addr, limits).await
        {
            Ok(()) => RpcResponse::LearnerAdded,
            Err(why) => RpcResponse::Refused(why),
        },
    }
}

/// At most this many learners (broker-only nodes) join a quorum.
const MAX_LEARNERS: usize = 1000;

/// As the quorum's leader: makes `node_id` a learner at `addr`, or
/// updates the address of one that moved. Nothing changes for one that
/// is a member at that address already (a restart).
async fn add_learner(
    raft: &Raft<TypeConfig>,
    node_id: NodeId,
    addr: &str,
    limits: NetworkLimits,
) -> Result<(), String> {
    let valid_addr = addr.len() <= 255
        && addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !valid_addr {
        return Err(format!(
            "'{}' is not a host:port address",
            addr.chars().take(255).collect::<String>()
        ));
    }
    let (leading, membership) = {
        let metrics = raft.metrics();
        let metrics = metrics.borrow();
        (
            metrics.state == openraft::ServerState::Leader,
            metrics.membership_config.membership().clone(),
        )
    };
    if !leading {
        return Err("not the quorum's leader".into());
    }
    if membership.voter_ids().any(|v| v == node_id) {
        return Err(format!(
            "node {node_id} is a voter of the quorum, not a broker-only node"
        ));
    }
    let wait = limits.idle_timeout;
    let result = match membership.get_node(&node_id) {
        Some(node) if node.addr == addr => return Ok(()),
        Some(_) => {
            let nodes = BTreeMap::from([(node_id, BasicNode::new(addr))]);
            let change = raft.change_membership(openraft::ChangeMembers::SetNodes(nodes), true);
            tokio::time::timeout(wait, change)
                .await
                .map(|r| r.map(|_| ()).map_err(|e| e.to_string()))
        }
        None => {
            if membership.learner_ids().count() >= MAX_LEARNERS {
                return Err(format!("the quorum has {MAX_LEARNERS} learners already"));
            }
            let change = raft.add_learner(node_id, BasicNode::new(addr), false);
            tokio::time::timeout(wait, change)
                .await
                .map(|r| r.map(|_| ()).map_err(|e| e.to_string()))
        }
    };
    match result {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "the membership change did not commit within {wait:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> NetworkLimits {
        NetworkLimits {
            max_frame_bytes: 1024,
            connect_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(5),
            max_connections: 4,
        }
    }

    fn vote_call() -> Call {
        Call::Vote(VoteRequest {
            vote: openraft::Vote::new(1, 1),
            last_log_id: None,
        })
    }

    #[tokio::test]
    async fn a_peer_that_is_not_listening_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let mut client = PeerClient::new(2, addr, limits());
        let err = client
            .call(vote_call(), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            matches!(err, CallError::Unreachable { target: 2, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_peer_that_vanishes_mid_call_is_a_network_error_not_a_hang() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            // Read the request's header, then close without answering.
            let mut header = [0u8; 4];
            stream.read_exact(&mut header).await.unwrap();
        });
        let mut client = PeerClient::new(2, addr, limits());
        let started = std::time::Instant::now();
        let err = client
            .call(vote_call(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::Network { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(4));
        server.await.unwrap();
    }

    /// A peer that answers one call per connection, then closes it.
    async fn one_answer_per_connection(listener: TcpListener) {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let Some(_) = read_frame(&mut stream, 1024).await.unwrap() else {
                continue;
            };
            let answer =
                RpcResponse::Vote(Ok(VoteResponse::new(openraft::Vote::new(1, 1), None, true)));
            stream
                .write_all(&encode_frame(&answer, 1024).unwrap())
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_kept_connection_the_peer_closed_is_replaced_before_sending() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(one_answer_per_connection(listener));
        let mut client = PeerClient::new(2, addr, limits());
        for call in 0..3 {
            let answer = client.call(vote_call(), Duration::from_secs(2)).await;
            assert!(
                matches!(answer, Ok(RpcResponse::Vote(Ok(_)))),
                "call {call}: {answer:?}"
            );
            // Let the peer's close arrive before the next call.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.abort();
    }

    #[test]
    fn an_append_with_an_entry_over_the_entry_limit_is_refused() {
        use crate::controller::records::MetadataRecord;
        let entry = |name: &str| openraft::Entry::<TypeConfig> {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 1),
            payload: openraft::EntryPayload::Normal(MetadataProposal {
                records: vec![MetadataRecord::TopicCreated(
                    crate::controller::records::TopicCreated {
                        name: name.into(),
                        topic_id: uuid::Uuid::from_u128(1),
                        configs: Default::default(),
                    },
                )],
            }),
        };
        let call = |name: &str| {
            Call::AppendEntries(AppendEntriesRequest {
                vote: openraft::Vote::new_committed(1, 1),
                prev_log_id: None,
                leader_commit: None,
                entries: vec![entry("small"), entry(name)],
            })
        };
        assert!(oversized_entry(&call("ok"), 1000).is_none());
        let refusal = oversized_entry(&call(&"x".repeat(2000)), 1000);
        assert!(
            matches!(&refusal, Some(RpcResponse::Refused(r)) if r.contains("1000 byte entry limit")),
            "{refusal:?}"
        );
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(stream);
        });
        let mut client = PeerClient::new(2, addr, limits());
        let err = client
            .call(vote_call(), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::Timeout { .. }), "{err}");
        server.abort();
    }

    #[tokio::test]
    async fn an_answer_declaring_an_oversized_frame_is_refused_before_allocating() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut header = [0u8; 4];
            stream.read_exact(&mut header).await.unwrap();
            let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
            stream.read_exact(&mut body).await.unwrap();
            stream.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
        });
        let mut client = PeerClient::new(2, addr, limits());
        let err = client
            .call(vote_call(), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("over the 1024 byte limit"),
            "{err}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn a_request_over_the_frame_limit_is_not_sent() {
        let mut client = PeerClient::new(2, "127.0.0.1:9".into(), limits());
        let records = (0..100)
            .map(|i| super::super::records::MetadataRecord::TopicDeleted {
                topic_id: uuid::Uuid::from_u128(i),
            })
            .collect();
        let err = client
            .call(
                Call::Propose {
                    proposal: MetadataProposal { records },
                    timeout_ms: 1000,
                },
                Duration::from_secs(1),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, CallError::TooLarge { limit: 1024, .. }),
            "{err}"
        );
    }
}
