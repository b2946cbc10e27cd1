//! A Kafka endpoint that acknowledges produce requests without storing
//! anything: the ceiling a producer can reach through the same client,
//! protocol codec and loopback network, with storage taken out.
//!
//! It answers ApiVersions, Metadata (every topic has `partitions`
//! partitions led by itself) and Produce (success, offsets counted per
//! partition). Anything else closes the connection.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use bytes::BytesMut;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    BrokerId, MetadataResponse, ProduceResponse, RequestKind, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use runnel_core::server::{decode_request, encode_response, versions};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub async fn run(addr: &str, partitions: i32) -> Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let port = listener.local_addr()?.port() as i32;
    let offsets: Arc<std::sync::Mutex<HashMap<(String, i32), i64>>> = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let offsets = offsets.clone();
        tokio::spawn(async move {
            let _ = serve(stream, port, partitions, offsets).await;
        });
    }
}

async fn serve(
    stream: TcpStream,
    port: i32,
    partitions: i32,
    offsets: Arc<std::sync::Mutex<HashMap<(String, i32), i64>>>,
) -> Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    loop {
        let size = reader.read_i32().await?;
        anyhow::ensure!((8..=200 << 20).contains(&size), "bad frame size {size}");
        let mut frame = BytesMut::with_capacity(size as usize);
        let mut take = (&mut reader).take(size as u64);
        while frame.len() < size as usize {
            anyhow::ensure!(take.read_buf(&mut frame).await? > 0, "eof");
        }
        let request = decode_request(frame.freeze())?;
        let (api_key, version, correlation_id) = (
            request.api_key,
            request.version,
            request.header.correlation_id,
        );
        let (response, version) = match request.body {
            RequestKind::ApiVersions(_) => {
                let (r, v) = versions::api_versions_response(version);
                (ResponseKind::ApiVersions(r), v)
            }
            RequestKind::Metadata(req) => {
                let mut r = MetadataResponse::default();
                let mut b = MetadataResponseBroker::default();
                b.node_id = BrokerId(0);
                b.host = StrBytes::from_static_str("127.0.0.1");
                b.port = port;
                r.brokers = vec![b];
                r.controller_id = BrokerId(0);
                r.cluster_id = Some(StrBytes::from_static_str("null-broker"));
                for t in req.topics.unwrap_or_default() {
                    let mut topic = MetadataResponseTopic::default();
                    topic.name = t.name;
                    topic.partitions = (0..partitions)
                        .map(|p| {
                            let mut mp = MetadataResponsePartition::default();
                            mp.partition_index = p;
                            mp.leader_id = BrokerId(0);
                            mp.replica_nodes = vec![BrokerId(0)];
                            mp.isr_nodes = vec![BrokerId(0)];
                            mp
                        })
                        .collect();
                    r.topics.push(topic);
                }
                (ResponseKind::Metadata(r), version)
            }
            RequestKind::Produce(req) => {
                let mut r = ProduceResponse::default();
                for t in req.topic_data {
                    let mut tr = TopicProduceResponse::default();
                    for p in t.partition_data {
                        // Count records from the batch headers, as a real
                        // broker must, but store nothing.
                        let records = p.records.unwrap_or_default();
                        let mut count = 0i64;
                        let mut at = 0usize;
                        while at + 61 <= records.len() {
                            let len =
                                i32::from_be_bytes(records[at + 8..at + 12].try_into()?) as usize;
                            count +=
                                i32::from_be_bytes(records[at + 57..at + 61].try_into()?) as i64;
                            at += 12 + len;
                        }
                        let mut pr = PartitionProduceResponse::default();
                        pr.index = p.index;
                        let mut map = offsets.lock().unwrap_or_else(|e| e.into_inner());
                        let next = map.entry((t.name.0.to_string(), p.index)).or_insert(0);
                        pr.base_offset = *next;
                        *next += count;
                        pr.log_append_time_ms = -1;
                        tr.partition_responses.push(pr);
                    }
                    tr.name = t.name;
                    r.responses.push(tr);
                }
                if req.acks == 0 {
                    continue;
                }
                (ResponseKind::Produce(r), version)
            }
            _ => anyhow::bail!("null broker does not serve {api_key:?}"),
        };
        let mut frame = encode_response(api_key, version, correlation_id, &response)?;
        write.write_all_buf(&mut frame).await?;
    }
}
