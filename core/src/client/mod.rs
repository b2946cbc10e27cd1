//! A minimal Kafka protocol client: one connection, one request at a time,
//! versions negotiated with ApiVersions.
//!
//! It exists for admin commands (`runnel topic ...`) and protocol-level
//! tests, where a full client library would hide the exact requests sent.
//! Applications should use a real client (librdkafka through `rdkafka`).

pub mod cluster;

pub use cluster::{ClusterClient, ClusterError};

use std::collections::HashMap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Largest response frame the client accepts.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection error")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0:?} waiting for the broker")]
    Timeout(Duration),
    #[error("the broker does not support {0:?} in a version this client knows")]
    Unsupported(ApiKey),
    #[error("bad response: {0}")]
    Protocol(String),
}

pub struct Client {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    next_correlation_id: i32,
    client_id: StrBytes,
    broker_versions: HashMap<i16, (i16, i16)>,
    timeout: Duration,
}

impl Client {
    /// Connects and asks the broker which API versions it supports.
    /// `addrs` may list several brokers, `host:port[,host:port...]`: the
    /// first that answers is used.
    pub async fn connect(addrs: &str, client_id: &str) -> Result<Client, ClientError> {
        let mut last = None;
        for addr in addrs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match Self::connect_one(addr, client_id).await {
                Ok(client) => return Ok(client),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Connect {
            addr: addrs.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address given"),
        }))
    }

    async fn connect_one(addr: &str, client_id: &str) -> Result<Client, ClientError> {
        let timeout = Duration::from_secs(30);
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Connect {
                addr: addr.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
            })?
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let mut client = Client {
            reader: BufReader::new(read),
            writer: write,
            next_correlation_id: 1,
            client_id: StrBytes::from_string(client_id.to_string()),
            broker_versions: HashMap::new(),
            timeout,
        };
        let mut request = ApiVersionsRequest::default();
        request.client_software_name = StrBytes::from_static_str("runnel-cli");
        request.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        let response = client.send_version(&request, 3).await?;
        if response.error_code != 0 {
            return Err(ClientError::Protocol(format!(
                "ApiVersions failed with error {}",
                response.error_code
            )));
        }
        client.broker_versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(client)
    }

    /// The `host:port` of the broker leading `topic`-`partition` (from a
    /// Metadata request to this broker), `None` while it has no leader.
    pub async fn leader_address(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<String>, ClientError> {
        let mut request = kafka_protocol::messages::MetadataRequest::default();
        let mut t = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
        t.name = Some(kafka_protocol::messages::TopicName(StrBytes::from_string(
            topic.to_string(),
        )));
        request.topics = Some(vec![t]);
        request.allow_auto_topic_creation = false;
        let response = self.send(&request).await?;
        let leader = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
            .and_then(|t| t.partitions.iter().find(|p| p.partition_index == partition))
            .map(|p| p.leader_id);
        Ok(leader.and_then(|id| {
            response
                .brokers
                .iter()
                .find(|b| b.node_id == id)
                .map(|b| format!("{}:{}", b.host, b.port))
        }))
    }

    /// A connection to the broker leading `topic`-`partition`, found through
    /// this one.
    pub async fn connect_to_leader(
        &mut self,
        topic: &str,
        partition: i32,
        client_id: &str,
    ) -> Result<Client, ClientError> {
        match self.leader_address(topic, partition).await? {
            Some(addr) => Client::connect(&addr, client_id).await,
            None => Err(ClientError::Protocol(format!(
                "partition {partition} of '{topic}' has no leader"
            ))),
        }
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The highest version of `R` both sides support.
    pub fn version_for<R: Request>(&self) -> Result<i16, ClientError> {
        let key = ApiKey::try_from(R::KEY)
            .map_err(|_| ClientError::Protocol("unknown api key".into()))?;
        let (min, max) = self
            .broker_versions
            .get(&R::KEY)
            .copied()
            .ok_or(ClientError::Unsupported(key))?;
        let version = max.min(R::VERSIONS.max);
        if version < min.max(R::VERSIONS.min) {
            return Err(ClientError::Unsupported(key));
        }
        Ok(version)
    }

    /// Sends a request at the best common version and waits for its response.
    pub async fn send<R: Request>(&mut self, request: &R) -> Result<R::Response, ClientError> {
        let version = self.version_for::<R>()?;
        self.send_version(request, version).await
    }

    /// Sends a request at a given version.
    pub async fn send_version<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let mut body = BytesMut::new();
        request
            .encode(&mut body, version)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut frame = self.send_raw(R::KEY, version, &body).await?;
        R::Response::decode(&mut frame, version).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Sends an already-encoded request body and returns the response body
    /// (after the response header).
    pub async fn send_raw(
        &mut self,
        api_key: i16,
        version: i16,
        body: &[u8],
    ) -> Result<Bytes, ClientError> {
        let (key, correlation_id) = self.write_request(api_key, version, body).await?;
        let timeout = self.timeout;
        let mut response = tokio::time::timeout(timeout, self.read_frame())
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;
        let header = ResponseHeader::decode(&mut response, key.response_header_version(version))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if header.correlation_id != correlation_id {
            return Err(ClientError::Protocol(format!(
                "response correlation id {} does not match request {correlation_id}",
                header.correlation_id
            )));
        }
        Ok(response)
    }

    /// Sends a request that gets no response (Produce with acks=0).
    pub async fn send_no_response(
        &mut self,
        api_key: i16,
        version: i16,
        body: &[u8],
    ) -> Result<(), ClientError> {
        self.write_request(api_key, version, body).await.map(|_| ())
    }

    async fn write_request(
        &mut self,
        api_key: i16,
        version: i16,
        body: &[u8],
    ) -> Result<(ApiKey, i32), ClientError> {
        let key = ApiKey::try_from(api_key)
            .map_err(|_| ClientError::Protocol("unknown api key".into()))?;
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let mut header = RequestHeader::default();
        header.request_api_key = api_key;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(self.client_id.clone());
        let mut frame = BytesMut::with_capacity(body.len() + 64);
        frame.put_i32(0);
        header
            .encode(&mut frame, key.request_header_version(version))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        frame.put_slice(body);
        let size = (frame.len() - 4) as i32;
        frame[0..4].copy_from_slice(&size.to_be_bytes());
        self.writer.write_all(&frame).await?;
        Ok((key, correlation_id))
    }

    async fn read_frame(&mut self) -> Result<Bytes, ClientError> {
        let size = self.reader.read_i32().await?;
        if size < 4 || size as usize > MAX_RESPONSE_BYTES {
            return Err(ClientError::Protocol(format!(
                "response frame of {size} bytes"
            )));
        }
        let mut buf = BytesMut::zeroed(size as usize);
        self.reader.read_exact(&mut buf).await?;
        Ok(buf.freeze())
    }
}

/// Config resource types of DescribeConfigs / IncrementalAlterConfigs.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// An IncrementalAlterConfigs request for one resource: `set` keys to
/// their values (SET), `delete` keys back to their defaults (DELETE).
pub fn alter_configs_request(
    resource_type: i8,
    name: &str,
    set: &[(String, String)],
    delete: &[String],
) -> kafka_protocol::messages::IncrementalAlterConfigsRequest {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let mut resource = AlterConfigsResource::default();
    resource.resource_type = resource_type;
    resource.resource_name = StrBytes::from_string(name.to_string());
    for (k, v) in set {
        let mut c = AlterableConfig::default();
        c.name = StrBytes::from_string(k.clone());
        c.config_operation = 0;
        c.value = Some(StrBytes::from_string(v.clone()));
        resource.configs.push(c);
    }
    for k in delete {
        let mut c = AlterableConfig::default();
        c.name = StrBytes::from_string(k.clone());
        c.config_operation = 1;
        resource.configs.push(c);
    }
    let mut request = kafka_protocol::messages::IncrementalAlterConfigsRequest::default();
    request.resources = vec![resource];
    request
}

/// The partitions of a consumer-protocol member assignment (as
/// DescribeGroups and SyncGroup carry it: a version in the first two
/// bytes); empty when it is not one.
pub fn assigned_partitions(raw: &[u8]) -> Vec<(String, i32)> {
    use kafka_protocol::messages::ConsumerProtocolAssignment;
    if raw.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([raw[0], raw[1]]).clamp(0, 3);
    let mut buf = Bytes::copy_from_slice(&raw[2..]);
    match ConsumerProtocolAssignment::decode(&mut buf, version) {
        Ok(a) => a
            .assigned_partitions
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.topic.0.to_string(), *p))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}
