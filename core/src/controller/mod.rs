//! The metadata controller: a Raft quorum (on `openraft`) that agrees on
//! the cluster's metadata log, like Kafka's KRaft.
//!
//! Every voter keeps the log and a [`MetadataImage`] built by applying it.
//! Changes are [`MetadataRecord`]s: a caller takes a decision over the
//! current image ([`decisions`]), proposes the resulting records with
//! [`Controller::propose`], and gets back, once they are committed and
//! applied, the log index and whether each record applied (a record decided
//! on a state that moved meanwhile is ignored by every node alike).
//!
//! ```no_run
//! # async fn demo() -> Result<(), runnel_core::controller::ControllerError> {
//! use runnel_core::controller::{Controller, ControllerConfig, parse_voters};
//! let config = ControllerConfig::new(
//!     1,
//!     parse_voters("1@127.0.0.1:9093")?,
//!     "127.0.0.1:9093",
//!     "./runnel-data/__cluster_metadata",
//! );
//! let controller = Controller::start(config).await?; // a quorum of one
//! let image = controller.image();
//! # Ok(()) }
//! ```
//!
//! Modules: [`records`] (what the log holds), [`image`] (the state machine),
//! [`decisions`] (pure rules from image + request to records), [`store`]
//! (log, vote and snapshots on disk) and [`network`] (RPCs over TCP).
//!
//! The broker starts one in every `runnel serve` (a quorum of this node
//! alone unless `controller_quorum` names several voters); `broker::metadata`
//! proposes admin operations and broker registrations here and follows the
//! image.

pub mod decisions;
pub mod image;
pub mod network;
pub mod records;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Raft, ServerState, SnapshotPolicy};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

pub use image::MetadataImage;
pub use records::{MetadataProposal, MetadataRecord, ProposalOutcome};

pub use network::Sessions;
use network::{Call, CallError, Network, NetworkLimits, ProposalClients, RpcResponse};
use store::StoreOptions;

/// A controller's id in the quorum (in combined mode, its broker id).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft's types for the metadata quorum.
    pub TypeConfig:
        D = MetadataProposal,
        R = ProposalOutcome,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// One voter of the quorum: `id@host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: NodeId,
    /// The controller listener of that voter.
    pub addr: String,
}

/// Parses a voter list such as `1@host1:9093,2@host2:9093,3@host3:9093`
/// (Kafka's `controller.quorum.voters` form).
pub fn parse_voters(list: &str) -> Result<Vec<Voter>, ControllerError> {
    let mut voters = Vec::new();
    let mut ids = BTreeSet::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |why: &str| {
            ControllerError::Config(format!(
                "voter '{item}' in '{list}': {why} (expected id@host:port)"
            ))
        };
        let (id, addr) = item.split_once('@').ok_or_else(|| bad("no '@'"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| bad("the id is not a number"))?;
        let addr = addr.trim();
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad("bad host or port"));
        }
        if !ids.insert(id) {
            return Err(bad("the id is listed twice"));
        }
        voters.push(Voter {
            id,
            addr: addr.to_string(),
        });
    }
    if voters.is_empty() {
        return Err(ControllerError::Config(format!(
            "no voters in '{list}' (expected id@host:port,...)"
        )));
    }
    Ok(voters)
}

/// Raft timing and snapshot settings.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    /// The leader's heartbeat to followers.
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in this range
    /// starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A snapshot is built after this many entries since the last one.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging
    /// follower catches up from the log instead of a whole snapshot.
    pub entries_kept_after_snapshot: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            // A follower of a leader it heard from waits openraft's leader
            // lease (the max timeout) plus a random timeout before it
            // stands: 1.5-2 s after the leader died (Kafka's KRaft: a 1 s
            // election timeout, 2 s fetch timeout).
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_after_entries: 5000,
            entries_kept_after_snapshot: 1000,
        }
    }
}

/// What [`Controller::start`] needs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub node_id: NodeId,
    /// The static voter list; this node is in it unless it is a learner.
    pub voters: Vec<Voter>,
    /// Whether this node votes (`process_roles` includes `controller`).
    /// A node that does not is a learner: it asks the quorum's leader to
    /// replicate the log to it at `listen_addr`, applies it, and forwards
    /// its proposals and heartbeats like a follower, but never votes or
    /// leads.
    pub voter: bool,
    /// Where this controller listens for its peers (`--controller-addr`);
    /// empty for a quorum of this node alone, which needs no listener.
    pub listen_addr: String,
    /// The metadata directory (`<data-dir>/__cluster_metadata`).
    pub dir: PathBuf,
    pub raft: RaftSettings,
    pub store: StoreOptions,
    pub network: NetworkLimits,
    /// How long [`Controller::propose`] waits for a leader to commit and
    /// this node to apply.
    pub propose_timeout: Duration,
}

impl ControllerConfig {
    /// A config with default settings.
    pub fn new(
        node_id: NodeId,
        voters: Vec<Voter>,
        listen_addr: impl Into<String>,
        dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            node_id,
            voters,
            voter: true,
            listen_addr: listen_addr.into(),
            dir: dir.into(),
            raft: RaftSettings::default(),
            store: StoreOptions::default(),
            network: NetworkLimits::default(),
            propose_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the controller could not do something.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("controller config: {0}")]
    Config(String),
    #[error("metadata store: {0}")]
    Store(#[from] store::StoreError),
    #[error("controller listener {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("proposal refused: {0}")]
    InvalidProposal(String),
    /// No leader committed the proposal in time: it may still commit later.
    #[error("no leader committed the proposal within {0:?} (it may still commit)")]
    Timeout(Duration),
    /// The connection to the leader failed after the proposal was sent:
    /// it may have been committed.
    #[error("forwarding the proposal to the leader failed, outcome unknown: {0}")]
    OutcomeUnknown(CallError),
    /// Raft stopped (shutdown or a storage failure).
    #[error("the metadata quorum stopped: {0}")]
    Stopped(String),
}

/// A running controller: one voter of the metadata quorum.
pub struct Controller {
    node_id: NodeId,
    raft: Raft<TypeConfig>,
    image: watch::Receiver<Arc<MetadataImage>>,
    server: std::sync::Mutex<Option<JoinHandle<()>>>,
    network: Network,
    limits: NetworkLimits,
    max_entry_bytes: usize,
    proposal_clients: ProposalClients,
    propose_timeout: Duration,
    /// Open while openraft still holds the store (and its directory lock).
    store_alive: store::Liveness,
    /// The brokers' heartbeats this controller received.
    sessions: Sessions,
}

/// A learner's side of joining: asks the quorum's leader (or each voter
/// in turn while none is known) to add this node at `addr`, until the
/// membership this node has applied lists it there. Runs until then, or
/// until Raft stops.
async fn join_as_learner(
    raft: Raft<TypeConfig>,
    node_id: NodeId,
    addr: String,
    voters: Vec<Voter>,
    limits: NetworkLimits,
) {
    let mut next = 0usize;
    let mut attempt = 0u32;
    loop {
        let (joined, leader) = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            let joined = metrics
                .membership_config
                .membership()
                .get_node(&node_id)
                .is_some_and(|n| n.addr == addr);
            (joined, metrics.current_leader)
        };
        if joined {
            info!(node_id, %addr, "this broker-only node follows the metadata quorum as a learner");
            return;
        }
        let target = match leader.and_then(|l| voters.iter().find(|v| v.id == l)) {
            Some(v) => v,
            None => {
                next = (next + 1) % voters.len();
                &voters[next]
            }
        };
        attempt += 1;
        let mut client = network::PeerClient::new(target.id, target.addr.clone(), limits);
        let call = Call::AddLearner {
            node_id,
            addr: addr.clone(),
        };
        match client.call(call, Duration::from_secs(5)).await {
            Ok(RpcResponse::LearnerAdded) => {}
            Ok(RpcResponse::Refused(why)) if attempt.is_multiple_of(10) => {
                warn!(attempt, voter = target.id, %why, "joining the metadata quorum as a learner")
            }
            Err(e) if attempt.is_multiple_of(10) => {
                warn!(attempt, voter = target.id, error = %e, "joining the metadata quorum as a learner")
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        if raft.metrics().borrow().running_state.is_err() {
            return;
        }
    }
}

impl Controller {
    /// Opens the metadata directory, starts Raft and the RPC listener, and
    /// initializes the quorum if it never was: a quorum of one elects
    /// itself at once; the voters of a larger one each initialize with the
    /// same static list (safe and idempotent in openraft: a node that has
    /// any log or vote refuses), then elect a leader among themselves.
    pub async fn start(config: ControllerConfig) -> Result<Controller, ControllerError> {
        let ControllerConfig {
            node_id,
            voters,
            voter,
            listen_addr,
            dir,
            raft: settings,
            store: store_options,
            network: limits,
            propose_timeout,
        } = config;
        if !voter && voters.iter().any(|v| v.id == node_id) {
            return Err(ControllerError::Config(format!(
                "node {node_id} is a voter of the quorum; only a node outside the voters can be broker-only"
            )));
        }
        if !voter && listen_addr.is_empty() {
            return Err(ControllerError::Config(
                "a broker-only node needs a controller address, where the quorum's leader sends it the metadata log".into(),
            ));
        }
        if voter && !voters.iter().any(|v| v.id == node_id) {
            return Err(ControllerError::Config(format!(
                "node {node_id} is not among the voters {}",
                voters
                    .iter()
                    .map(|v| format!("{}@{}", v.id, v.addr))
                    .collect::<Vec<_>>()
                    .join(",")
            )));
        }
        // A JSON-encoded entry inside a frame must fit in the frame.
        if store_options.max_entry_bytes + 1024 > limits.max_frame_bytes {
            return Err(ControllerError::Config(format!(
                "the entry limit {} does not fit the frame limit {}",
                store_options.max_entry_bytes, limits.max_frame_bytes
            )));
        }
        let raft_config = openraft::Config {
            cluster_name: "runnel-metadata".into(),
            heartbeat_interval: settings.heartbeat_ms,
            election_timeout_min: settings.election_timeout_min_ms,
            election_timeout_max: settings.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_after_entries),
            max_in_snapshot_log_to_keep: settings.entries_kept_after_snapshot,
            // Snapshot bytes travel as a JSON array (up to 4 bytes per
            // byte): 1 MiB chunks stay well inside a frame.
            snapshot_max_chunk_size: (limits.max_frame_bytes as u64 / 8).min(1 << 20),
            ..Default::default()
        }
        .validate()
        .map_err(|e| ControllerError::Config(e.to_string()))?;

        let store_dir = dir.clone();
        let (log_store, state_machine) =
            tokio::task::spawn_blocking(move || store::open(&store_dir, store_options))
                .await
                .map_err(|e| ControllerError::Stopped(e.to_string()))??;
        let image = state_machine.subscribe();
        let store_alive = state_machine.liveness();

        // A quorum of this node alone has no peer to listen for.
        let alone = voter && voters.len() == 1;
        if listen_addr.is_empty() && !alone {
            return Err(ControllerError::Config(
                "a controller of a quorum of several voters needs a listen address".into(),
            ));
        }
        let listener = if listen_addr.is_empty() {
            None
        } else {
            Some(
                tokio::net::TcpListener::bind(&listen_addr)
                    .await
                    .map_err(|source| ControllerError::Listen {
                        addr: listen_addr.clone(),
                        source,
                    })?,
            )
        };
        let addrs: BTreeMap<NodeId, String> =
            voters.iter().map(|v| (v.id, v.addr.clone())).collect();
        let network = Network::new(node_id, addrs, limits);
        let raft = Raft::new(
            node_id,
            Arc::new(raft_config),
            network.clone(),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| ControllerError::Stopped(e.to_string()))?;
        let sessions = Sessions::default();
        let server = match listener {
            Some(listener) => tokio::spawn(network::serve(
                listener,
                node_id,
                raft.clone(),
                limits,
                store_options.max_entry_bytes,
                sessions.clone(),
            )),
            None => tokio::spawn(async {}),
        };

        let members: BTreeMap<NodeId, BasicNode> = voters
            .iter()
            .map(|v| (v.id, BasicNode::new(&v.addr)))
            .collect();
        if !voter {
            tokio::spawn(join_as_learner(
                raft.clone(),
                node_id,
                listen_addr.clone(),
                voters.clone(),
                limits,
            ));
        } else {
            match raft.initialize(members.clone()).await {
                Ok(()) => info!(
                    node_id,
                    voters = members.len(),
                    "initialized the metadata quorum"
                ),
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                    let stored: BTreeSet<NodeId> = raft
                        .metrics()
                        .borrow()
                        .membership_config
                        .membership()
                        .voter_ids()
                        .collect();
                    let configured: BTreeSet<NodeId> = members.keys().copied().collect();
                    if !stored.is_empty() && stored != configured {
                        warn!(?stored, ?configured, "the configured voters differ from the quorum's; the quorum's stand (membership changes are not supported yet)");
                    }
                }
                Err(e) => {
                    let _ = raft.shutdown().await;
                    server.abort();
                    return Err(ControllerError::Stopped(e.to_string()));
                }
            }
        }
        info!(node_id, addr = %listen_addr, dir = %dir.display(), voter, "metadata controller started");
        Ok(Controller {
            node_id,
            raft,
            image,
            server: std::sync::Mutex::new(Some(server)),
            network,
            limits,
            max_entry_bytes: store_options.max_entry_bytes,
            proposal_clients: ProposalClients::default(),
            propose_timeout,
            store_alive,
            sessions,
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The current leader, if this node knows one.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Whether this node is the leader now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Tells the quorum's leader that broker `broker_id` (in `broker_epoch`)
    /// is alive. A leader that hears nothing from a broker for its session
    /// timeout fences it.
    pub async fn heartbeat(
        &self,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<(), ControllerError> {
        let Some(leader) = self.leader() else {
            return Err(ControllerError::Timeout(self.propose_timeout));
        };
        if leader == self.node_id {
            self.sessions.record(broker_id, broker_epoch);
            return Ok(());
        }
        let Some(addr) = self.network.addr_of(leader) else {
            return Err(ControllerError::Stopped(format!(
                "the leader {leader} is not a configured voter"
            )));
        };
        let mut client = self.proposal_clients.take(leader, addr, self.limits);
        let timeout = Duration::from_secs(2);
        let result = client
            .call(
                Call::Heartbeat {
                    broker_id,
                    broker_epoch,
                },
                timeout,
            )
            .await;
        self.proposal_clients.give_back(client);
        match result {
            Ok(RpcResponse::Heartbeat) => Ok(()),
            Ok(other) => Err(ControllerError::Stopped(format!(
                "the leader answered a heartbeat with {other:?}"
            ))),
            Err(e) => Err(ControllerError::OutcomeUnknown(e)),
        }
    }

    /// The heartbeats this controller received.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The image as of the last entry this node applied.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// Follows the applied image: changes after every applied batch.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.clone()
    }

    /// openraft's metrics (state, term, leader, log and snapshot ids).
    pub fn metrics(&self) -> watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>> {
        self.raft.metrics()
    }

    /// Commits `records` as one entry and waits until this node applied it.
    ///
    /// Any voter accepts a proposal: one that is not the leader forwards it
    /// to the leader over the controller network. A proposal the old leader
    /// refused (leadership moved before it was appended) is sent again to
    /// the new leader until `propose_timeout`; once it may have been
    /// appended it is never sent twice, and a lost answer is
    /// [`ControllerError::OutcomeUnknown`] or [`ControllerError::Timeout`].
    pub async fn propose(
        &self,
        records: Vec<MetadataRecord>,
    ) -> Result<ProposalOutcome, ControllerError> {
        if records.is_empty() || records.len() > records::MAX_RECORDS_PER_PROPOSAL {
            return Err(ControllerError::InvalidProposal(format!(
                "a proposal carries 1 to {} records, not {}",
                records::MAX_RECORDS_PER_PROPOSAL,
                records.len()
            )));
        }
        let proposal = MetadataProposal { records };
        // The entry around it adds its log id and tags.
        let bytes = serde_json::to_vec(&proposal)
            .map_err(|e| ControllerError::InvalidProposal(e.to_string()))?
            .len();
        if bytes + 256 > self.max_entry_bytes {
            return Err(ControllerError::InvalidProposal(format!(
                "{bytes} bytes of records is over the {} byte entry limit",
                self.max_entry_bytes
            )));
        }
        let deadline = Instant::now() + self.propose_timeout;
        let outcome = self.commit(proposal, deadline).await?;
        self.wait_applied(outcome.log_index, deadline).await?;
        Ok(outcome)
    }

    async fn commit(
        &self,
        proposal: MetadataProposal,
        deadline: Instant,
    ) -> Result<ProposalOutcome, ControllerError> {
        let timeout = self.propose_timeout;
        let mut backoff = Duration::from_millis(20);
        let mut leader_hint: Option<NodeId> = None;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            if attempts > 2 {
                // Views of the leadership disagree or are moving: pause
                // between attempts instead of bouncing between nodes.
                tokio::time::sleep_until((Instant::now() + backoff).min(deadline)).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            let leader = match leader_hint.take().or_else(|| self.leader()) {
                Some(leader) => leader,
                None => {
                    self.wait_for_leader(deadline).await?;
                    continue;
                }
            };
            let refused_with = if leader == self.node_id {
                match tokio::time::timeout_at(deadline, self.raft.client_write(proposal.clone()))
                    .await
                {
                    Err(_) => return Err(ControllerError::Timeout(timeout)),
                    Ok(Ok(response)) => return Ok(response.data),
                    Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                        f.leader_id
                    }
                    Ok(Err(e)) => return Err(ControllerError::Stopped(e.to_string())),
                }
            } else {
                let Some(addr) = self.network.addr_of(leader) else {
                    return Err(ControllerError::Stopped(format!(
                        "the leader {leader} is not a configured voter"
                    )));
                };
                let mut client = self.proposal_clients.take(leader, addr, self.limits);
                let remaining = deadline.saturating_duration_since(Instant::now());
                let call = Call::Propose {
                    proposal: proposal.clone(),
                    timeout_ms: remaining.as_millis() as u64,
                };
                let result = client.call(call, remaining).await;
                self.proposal_clients.give_back(client);
                match result {
                    Ok(RpcResponse::Propose(Ok(response))) => return Ok(response.data),
                    Ok(RpcResponse::Propose(Err(RaftError::APIError(
                        ClientWriteError::ForwardToLeader(f),
                    )))) => f.leader_id,
                    Ok(RpcResponse::Propose(Err(e))) => {
                        return Err(ControllerError::Stopped(format!("leader {leader}: {e}")))
                    }
                    Ok(_) => {
                        return Err(ControllerError::OutcomeUnknown(CallError::Mismatch {
                            target: leader,
                        }))
                    }
                    // Nothing was sent: try whoever leads next.
                    Err(CallError::Unreachable { .. }) => None,
                    Err(CallError::Timeout { .. }) => {
                        return Err(ControllerError::Timeout(timeout))
                    }
                    Err(e @ CallError::TooLarge { .. }) => {
                        return Err(ControllerError::InvalidProposal(e.to_string()))
                    }
                    Err(e) => return Err(ControllerError::OutcomeUnknown(e)),
                }
            };
            // Not appended: retry at the leader named, else after a pause.
            if Instant::now() >= deadline {
                return Err(ControllerError::Timeout(timeout));
            }
            leader_hint = refused_with.filter(|&next| next != leader);
        }
    }

    /// Waits until some node is known to lead.
    async fn wait_for_leader(&self, deadline: Instant) -> Result<NodeId, ControllerError> {
        let mut metrics = self.raft.metrics();
        loop {
            if let Some(leader) = metrics.borrow_and_update().current_leader {
                return Ok(leader);
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Err(_) => return Err(ControllerError::Timeout(self.propose_timeout)),
                Ok(Err(_)) => return Err(ControllerError::Stopped("raft stopped".into())),
                Ok(Ok(())) => {}
            }
        }
    }

    /// Waits until this node applied the log up to `index`.
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ControllerError> {
        let mut image = self.image.clone();
        let reached =
            tokio::time::timeout_at(deadline, image.wait_for(|image| image.offset() >= index))
                .await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ControllerError::Stopped("the state machine stopped".into())),
            Err(_) => Err(ControllerError::Timeout(self.propose_timeout)),
        }
    }

    /// Stops Raft and the listener, and waits (up to a few seconds) until
    /// the metadata directory is released, so it can be opened again.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            warn!(error = %e, "raft shutdown");
        }
        let server = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(server) = server {
            server.abort();
            let _ = server.await;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.store_alive.is_open() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        info!(node_id = self.node_id, "metadata controller stopped");
    }
}

#[cfg(test)]
mod tests;
