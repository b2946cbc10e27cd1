//! A client of the whole cluster for admin work: requests that a Kafka
//! admin client routes go where Kafka routes them — ListOffsets and
//! DeleteRecords to each partition's leader, group requests to the group's
//! coordinator (FindCoordinator), ListGroups and DescribeLogDirs to every
//! broker — over one connection per broker, opened when first needed.
//!
//! On one node every route ends at the same broker; in a cluster a request
//! sent to the bootstrap broker alone would be answered
//! NOT_LEADER_OR_FOLLOWER or NOT_COORDINATOR for most partitions and groups.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    DescribeLogDirsRequest, FindCoordinatorRequest, GroupId, ListGroupsRequest, ListOffsetsRequest,
    MetadataRequest, MetadataResponse, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{Client, ClientError};

/// Error codes after which a coordinator lookup is worth repeating.
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;

/// How long a coordinator lookup keeps trying while the coordinator moves
/// or loads.
const COORDINATOR_WAIT: Duration = Duration::from_secs(5);

/// Most connections one `ClusterClient` keeps (one per broker).
const MAX_CONNECTIONS: usize = 1000;

/// Bytes of each partition replica: (topic, partition) → broker → bytes.
pub type ReplicaSizes = BTreeMap<(String, i32), BTreeMap<i32, i64>>;

/// One group as ListGroups names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    /// The broker that coordinates it (the one that listed it).
    pub coordinator: i32,
}

/// A Kafka error code in an answer, with what was asked.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {}", error_text(*.code, .message.as_deref()))]
pub struct Refused {
    pub what: String,
    pub code: i16,
    pub message: Option<String>,
}

fn error_text(code: i16, message: Option<&str>) -> String {
    let name = kafka_protocol::ResponseError::try_from_code(code)
        .map(|e| e.to_string())
        .unwrap_or_else(|| format!("error {code}"));
    match message.filter(|m| !m.is_empty()) {
        Some(m) => format!("{m} ({name})"),
        None => name,
    }
}

/// What a cluster-wide admin call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Refused(#[from] Refused),
}

impl ClusterError {
    /// The Kafka error code, when a broker refused.
    pub fn code(&self) -> Option<i16> {
        match self {
            ClusterError::Refused(r) => Some(r.code),
            ClusterError::Client(_) => None,
        }
    }
}

fn name(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The cluster as one broker's metadata describes it, and a connection to
/// each broker asked so far.
pub struct ClusterClient {
    bootstrap: Client,
    metadata: MetadataResponse,
    connections: HashMap<i32, Client>,
    client_id: String,
    timeout: Duration,
}

impl ClusterClient {
    /// Connects to the first broker of `bootstrap` that answers and reads
    /// the cluster's metadata (every topic; none created).
    pub async fn connect(bootstrap: &str, client_id: &str) -> Result<ClusterClient, ClientError> {
        let client = Client::connect(bootstrap, client_id).await?;
        ClusterClient::from_client(client, client_id).await
    }

    /// Uses an open connection as the bootstrap broker.
    pub async fn from_client(
        mut bootstrap: Client,
        client_id: &str,
    ) -> Result<ClusterClient, ClientError> {
        let metadata = all_metadata(&mut bootstrap).await?;
        let timeout = bootstrap.timeout;
        Ok(ClusterClient {
            bootstrap,
            metadata,
            connections: HashMap::new(),
            client_id: client_id.to_string(),
            timeout,
        })
    }

    /// Bounds every request of this client and of the connections it opens.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.bootstrap.set_timeout(timeout);
        for c in self.connections.values_mut() {
            c.set_timeout(timeout);
        }
    }

    /// The metadata read at connect (or at the last [`refresh`](Self::refresh)).
    pub fn metadata(&self) -> &MetadataResponse {
        &self.metadata
    }

    /// Reads the metadata again (after topics or leaders changed).
    pub async fn refresh(&mut self) -> Result<(), ClientError> {
        self.metadata = all_metadata(&mut self.bootstrap).await?;
        Ok(())
    }

    /// The connection to the bootstrap broker, for requests any broker
    /// answers (Metadata, CreateTopics, DescribeConfigs, ...).
    pub fn bootstrap(&mut self) -> &mut Client {
        &mut self.bootstrap
    }

    /// Ids of the brokers in the metadata, ascending.
    pub fn broker_ids(&self) -> Vec<i32> {
        let mut ids: Vec<i32> = self.metadata.brokers.iter().map(|b| b.node_id.0).collect();
        ids.sort_unstable();
        ids
    }

    /// `host:port` of broker `id`.
    pub fn broker_address(&self, id: i32) -> Option<String> {
        self.metadata
            .brokers
            .iter()
            .find(|b| b.node_id.0 == id)
            .map(|b| format!("{}:{}", b.host, b.port))
    }

    /// The partitions of `topic`, ascending (`None`: not in the metadata).
    pub fn partitions(&self, topic: &str) -> Option<Vec<i32>> {
        let t = self
            .metadata
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))?;
        let mut ps: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
        ps.sort_unstable();
        Some(ps)
    }

    /// The leader of `topic`-`partition` in the metadata (`None`: unknown
    /// partition or no leader).
    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        self.metadata
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))?
            .partitions
            .iter()
            .find(|p| p.partition_index == partition)
            .map(|p| p.leader_id.0)
            .filter(|id| *id >= 0)
    }

    /// The connection to broker `id`, opened on first use.
    pub async fn broker(&mut self, id: i32) -> Result<&mut Client, ClientError> {
        if !self.connections.contains_key(&id) {
            let addr = self.broker_address(id).ok_or_else(|| {
                ClientError::Protocol(format!("broker {id} is not in the cluster's metadata"))
            })?;
            if self.connections.len() >= MAX_CONNECTIONS {
                self.connections.clear();
            }
            let mut client = Client::connect(&addr, &self.client_id).await?;
            client.set_timeout(self.timeout);
            self.connections.insert(id, client);
        }
        Ok(self.connections.get_mut(&id).expect("inserted above"))
    }

    /// ListOffsets at `timestamp` (-1 latest, -2 earliest, else ms) for each
    /// of `partitions`, asked of each partition's leader. A partition whose
    /// leader is unknown or refuses is left out of the answer.
    pub async fn list_offsets(
        &mut self,
        partitions: &[(String, i32)],
        timestamp: i64,
    ) -> Result<BTreeMap<(String, i32), i64>, ClientError> {
        let mut by_leader: BTreeMap<i32, BTreeMap<&str, Vec<i32>>> = BTreeMap::new();
        for (t, p) in partitions {
            if let Some(leader) = self.leader(t, *p) {
                by_leader
                    .entry(leader)
                    .or_default()
                    .entry(t)
                    .or_default()
                    .push(*p);
            }
        }
        let mut out = BTreeMap::new();
        for (leader, topics) in by_leader {
            let request = list_offsets_request(&topics, timestamp);
            let response = self.broker(leader).await?.send(&request).await?;
            for t in response.topics {
                for p in t.partitions {
                    if p.error_code == 0 {
                        out.insert((t.name.0.to_string(), p.partition_index), p.offset);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The broker coordinating `group` (FindCoordinator, tried again for a
    /// few seconds while the coordinator loads or moves).
    pub async fn coordinator_id(&mut self, group: &str) -> Result<i32, ClusterError> {
        let deadline = tokio::time::Instant::now() + COORDINATOR_WAIT;
        loop {
            let mut request = FindCoordinatorRequest::default();
            request.key_type = 0;
            let version = self.bootstrap.version_for::<FindCoordinatorRequest>()?;
            let (code, message, node) = if version >= 4 {
                request.coordinator_keys = vec![name(group)];
                let response = self.bootstrap.send_version(&request, version).await?;
                let c = response.coordinators.into_iter().next().ok_or_else(|| {
                    ClientError::Protocol("empty FindCoordinator response".into())
                })?;
                (c.error_code, c.error_message, c.node_id.0)
            } else {
                request.key = name(group);
                let response = self.bootstrap.send_version(&request, version).await?;
                (
                    response.error_code,
                    response.error_message,
                    response.node_id.0,
                )
            };
            if code == 0 {
                if self.broker_address(node).is_none() {
                    self.refresh().await?;
                }
                return Ok(node);
            }
            let retriable = matches!(
                code,
                COORDINATOR_LOAD_IN_PROGRESS | COORDINATOR_NOT_AVAILABLE | NOT_COORDINATOR
            );
            if !retriable || tokio::time::Instant::now() >= deadline {
                return Err(Refused {
                    what: format!("no coordinator for group '{group}'"),
                    code,
                    message: message.map(|m| m.to_string()),
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The connection to the broker coordinating `group`.
    pub async fn coordinator(&mut self, group: &str) -> Result<&mut Client, ClusterError> {
        let id = self.coordinator_id(group).await?;
        Ok(self.broker(id).await?)
    }

    /// Every group of the cluster: ListGroups asked of every broker (each
    /// names the groups it coordinates), sorted by id. A broker that cannot
    /// be reached fails the call: a partial list would hide groups.
    pub async fn list_groups(&mut self) -> Result<Vec<ListedGroup>, ClusterError> {
        let mut groups: BTreeMap<String, ListedGroup> = BTreeMap::new();
        for id in self.broker_ids() {
            let response = self
                .broker(id)
                .await?
                .send(&ListGroupsRequest::default())
                .await?;
            if response.error_code != 0 {
                return Err(Refused {
                    what: format!("broker {id} cannot list groups"),
                    code: response.error_code,
                    message: None,
                }
                .into());
            }
            for g in response.groups {
                let group_id = g.group_id.0.to_string();
                groups.insert(
                    group_id.clone(),
                    ListedGroup {
                        group_id,
                        state: g.group_state.to_string(),
                        protocol_type: g.protocol_type.to_string(),
                        coordinator: id,
                    },
                );
            }
        }
        Ok(groups.into_values().collect())
    }

    /// Bytes on disk of each partition replica: DescribeLogDirs asked of
    /// every broker (each answers for its own disks), as
    /// (topic, partition) → broker → bytes. The brokers that did not
    /// answer come second, with why.
    pub async fn replica_sizes(&mut self) -> (ReplicaSizes, Vec<(i32, ClusterError)>) {
        let mut sizes = ReplicaSizes::new();
        let mut failed = Vec::new();
        let mut request = DescribeLogDirsRequest::default();
        request.topics = None;
        for id in self.broker_ids() {
            let answer = async { self.broker(id).await?.send(&request).await }.await;
            match answer {
                Err(e) => failed.push((id, e.into())),
                Ok(response) if response.error_code != 0 => failed.push((
                    id,
                    Refused {
                        what: format!("broker {id} cannot describe its log dirs"),
                        code: response.error_code,
                        message: None,
                    }
                    .into(),
                )),
                Ok(response) => {
                    for dir in response.results.iter().filter(|d| d.error_code == 0) {
                        for t in &dir.topics {
                            for p in &t.partitions {
                                *sizes
                                    .entry((t.name.0.to_string(), p.partition_index))
                                    .or_default()
                                    .entry(id)
                                    .or_default() += p.partition_size.max(0);
                            }
                        }
                    }
                }
            }
        }
        (sizes, failed)
    }

    /// The committed offsets of `group` on every partition it has one for
    /// (OffsetFetch to its coordinator; -1 entries left out).
    pub async fn committed_offsets(
        &mut self,
        group: &str,
    ) -> Result<BTreeMap<(String, i32), i64>, ClusterError> {
        let client = self.coordinator(group).await?;
        let version = client.version_for::<OffsetFetchRequest>()?;
        let mut request = OffsetFetchRequest::default();
        let refused = |code: i16, what: String| Refused {
            what,
            code,
            message: None,
        };
        let what = || format!("cannot read the offsets of group '{group}'");
        // (topic, partition, committed offset, error code)
        let mut entries: Vec<(String, i32, i64, i16)> = Vec::new();
        if version >= 8 {
            let mut g = OffsetFetchRequestGroup::default();
            g.group_id = GroupId(name(group));
            g.topics = None;
            request.groups = vec![g];
            let response = client.send_version(&request, version).await?;
            for g in response.groups {
                if g.error_code != 0 {
                    return Err(refused(g.error_code, what()).into());
                }
                for t in g.topics {
                    for p in t.partitions {
                        entries.push((
                            t.name.0.to_string(),
                            p.partition_index,
                            p.committed_offset,
                            p.error_code,
                        ));
                    }
                }
            }
        } else {
            request.group_id = GroupId(name(group));
            request.topics = None;
            let response = client.send_version(&request, version).await?;
            if response.error_code != 0 {
                return Err(refused(response.error_code, what()).into());
            }
            for t in response.topics {
                for p in t.partitions {
                    entries.push((
                        t.name.0.to_string(),
                        p.partition_index,
                        p.committed_offset,
                        p.error_code,
                    ));
                }
            }
        }
        let mut out = BTreeMap::new();
        for (topic, partition, offset, code) in entries {
            if code != 0 {
                return Err(refused(code, format!("{}: {topic}/{partition}", what())).into());
            }
            if offset >= 0 {
                out.insert((topic, partition), offset);
            }
        }
        Ok(out)
    }
}

async fn all_metadata(client: &mut Client) -> Result<MetadataResponse, ClientError> {
    let mut request = MetadataRequest::default();
    request.topics = None;
    request.allow_auto_topic_creation = false;
    client.send(&request).await
}

fn list_offsets_request(topics: &BTreeMap<&str, Vec<i32>>, timestamp: i64) -> ListOffsetsRequest {
    let mut request = ListOffsetsRequest::default();
    request.replica_id = (-1).into();
    request.topics = topics
        .iter()
        .map(|(t, ps)| {
            let mut lt = ListOffsetsTopic::default();
            lt.name = TopicName(name(t));
            lt.partitions = ps
                .iter()
                .map(|p| {
                    let mut lp = ListOffsetsPartition::default();
                    lp.partition_index = *p;
                    lp.timestamp = timestamp;
                    lp.current_leader_epoch = -1;
                    lp
                })
                .collect();
            lt
        })
        .collect();
    request
}
