//! Records of the internal `__consumer_offsets` topic, in Kafka's own
//! formats so that a dump of the topic reads like Kafka's.
//!
//! All integers are big-endian; `string` is an i16 length then UTF-8 bytes
//! (-1 for null); `bytes` is an i32 length then the bytes.
//!
//! ```text
//! offset commit key (version 1)       value (version 3; null = tombstone)
//!   i16 version = 1                     i16 version = 3
//!   string group                        i64 offset
//!   string topic                        i32 leader epoch
//!   i32 partition                       string metadata
//!                                       i64 commit timestamp (ms)
//!
//! group metadata key (version 2)      value (version 3; null = group deleted)
//!   i16 version = 2                     i16 version = 3
//!   string group                        string protocol type
//!                                       i32 generation
//!                                       string protocol (nullable)
//!                                       string leader (nullable)
//!                                       i64 state timestamp (ms)
//!                                       i32 member count, then per member:
//!                                         string member id
//!                                         string group instance id (nullable)
//!                                         string client id
//!                                         string client host
//!                                         i32 rebalance timeout ms
//!                                         i32 session timeout ms
//!                                         bytes subscription (chosen protocol's metadata)
//!                                         bytes assignment
//! ```
//! A group's records go to partition `abs(javaHash(group)) % partitions`,
//! the same partition Kafka would pick.

use bytes::{BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberRecord>,
}

pub use crate::internal_topic::codec::{java_string_hash, partition_for};
use crate::internal_topic::codec::{put_bytes, put_string, Reader};

impl OffsetsKey {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            OffsetsKey::Offset {
                group,
                topic,
                partition,
            } => {
                buf.put_i16(1);
                put_string(&mut buf, Some(group));
                put_string(&mut buf, Some(topic));
                buf.put_i32(*partition);
            }
            OffsetsKey::Group { group } => {
                buf.put_i16(2);
                put_string(&mut buf, Some(group));
            }
        }
        buf.freeze()
    }

    pub fn decode(raw: &[u8]) -> Option<OffsetsKey> {
        let mut r = Reader(raw);
        let version = r.i16()?;
        let key = match version {
            0 | 1 => OffsetsKey::Offset {
                group: r.string()?,
                topic: r.string()?,
                partition: r.i32()?,
            },
            2 => OffsetsKey::Group { group: r.string()? },
            _ => return None,
        };
        Some(key)
    }

    pub fn group(&self) -> &str {
        match self {
            OffsetsKey::Offset { group, .. } | OffsetsKey::Group { group } => group,
        }
    }
}

impl OffsetValue {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(3);
        buf.put_i64(self.offset);
        buf.put_i32(self.leader_epoch);
        put_string(&mut buf, Some(&self.metadata));
        buf.put_i64(self.commit_timestamp_ms);
        buf.freeze()
    }

    /// Reads values written by any Kafka version (0 to 3) or by us.
    pub fn decode(raw: &[u8]) -> Option<OffsetValue> {
        let mut r = Reader(raw);
        let version = r.i16()?;
        let offset = r.i64()?;
        let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
        let metadata = r.string()?;
        let commit_timestamp_ms = r.i64()?;
        if version == 1 {
            let _expire = r.i64()?;
        }
        Some(OffsetValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp_ms,
        })
    }
}

impl GroupValue {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(3);
        put_string(&mut buf, Some(&self.protocol_type));
        buf.put_i32(self.generation);
        put_string(&mut buf, self.protocol.as_deref());
        put_string(&mut buf, self.leader.as_deref());
        buf.put_i64(self.state_timestamp_ms);
        buf.put_i32(self.members.len() as i32);
        for m in &self.members {
            put_string(&mut buf, Some(&m.member_id));
            put_string(&mut buf, m.group_instance_id.as_deref());
            put_string(&mut buf, Some(&m.client_id));
            put_string(&mut buf, Some(&m.client_host));
            buf.put_i32(m.rebalance_timeout_ms);
            buf.put_i32(m.session_timeout_ms);
            put_bytes(&mut buf, &m.subscription);
            put_bytes(&mut buf, &m.assignment);
        }
        buf.freeze()
    }

    pub fn decode(raw: &[u8]) -> Option<GroupValue> {
        let mut r = Reader(raw);
        let version = r.i16()?;
        if !(0..=3).contains(&version) {
            return None;
        }
        let protocol_type = r.string()?;
        let generation = r.i32()?;
        let protocol = r.nullable_string()?;
        let leader = r.nullable_string()?;
        let state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
        let count = r.count()?;
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            let member_id = r.string()?;
            let group_instance_id = if version >= 3 {
                r.nullable_string()?
            } else {
                None
            };
            let client_id = r.string()?;
            let client_host = r.string()?;
            let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
            let session_timeout_ms = r.i32()?;
            let subscription = r.bytes()?;
            let assignment = r.bytes()?;
            let rebalance_timeout_ms = if rebalance_timeout_ms < 0 {
                session_timeout_ms
            } else {
                rebalance_timeout_ms
            };
            members.push(MemberRecord {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms,
                session_timeout_ms,
                subscription,
                assignment,
            });
        }
        Some(GroupValue {
            protocol_type,
            generation,
            protocol,
            leader,
            state_timestamp_ms,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let k = OffsetsKey::Offset {
            group: "g".into(),
            topic: "orders".into(),
            partition: 3,
        };
        assert_eq!(OffsetsKey::decode(&k.encode()), Some(k));
        let k = OffsetsKey::Group { group: "g".into() };
        assert_eq!(OffsetsKey::decode(&k.encode()), Some(k));
        let v = OffsetValue {
            offset: 42,
            leader_epoch: 7,
            metadata: "meta".into(),
            commit_timestamp_ms: 1234,
        };
        assert_eq!(OffsetValue::decode(&v.encode()), Some(v));
        let g = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp_ms: 99,
            members: vec![MemberRecord {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 30_000,
                session_timeout_ms: 10_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"assign"),
            }],
        };
        assert_eq!(GroupValue::decode(&g.encode()), Some(g));
    }

    #[test]
    fn garbage_does_not_decode() {
        assert_eq!(OffsetsKey::decode(&[0, 9, 1]), None);
        assert_eq!(OffsetValue::decode(&[0, 3, 0]), None);
        let mut bad = vec![0, 3, 0, 1, b'x', 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff];
        bad.extend_from_slice(&[0; 8]);
        bad.extend_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(GroupValue::decode(&bad), None, "impossible member count");
    }
}
