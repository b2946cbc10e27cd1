//! Broker metadata on disk: the data directory lock, `meta.properties`
//! (cluster and node identity) and `topics.json` (topics, ids, partition
//! counts and config overrides).
//!
//! ```text
//! <data dir>/
//!   .lock                          held (flock) while a broker uses the dir
//!   meta.properties                version=1, cluster.id=..., node.id=...
//!   topics.json                    {"version":1,"topics":[{name,id,partitions,configs}]}
//!   dynamic-configs.json           {"version":1,"broker":{key:value},
//!                                   "cluster_default":{key:value},"groups":{group:{key:value}}}
//!   recovery-point-offset-checkpoint
//!   log-start-offset-checkpoint
//!   <topic>-<partition>/
//!     partition.metadata           version: 0 / topic_id: <uuid>
//!     <segments>
//!   <topic>-<partition>.<id>-new/  a partition of a topic being created
//!   <topic>-<partition>.<id>-delete/  a partition of a deleted topic
//! ```
//! Creating a topic (or adding partitions) is all or nothing: every new
//! partition is first made under its `-new` name, then `topics.json` is
//! written (the commit point), then the directories get their final names.
//! A crash before the commit leaves only `-new` directories, which the next
//! start removes; a crash after it leaves some, which the next start
//! renames ([`finish_pending_partitions`]).
//! `topics.json` is replaced atomically on every change. If it is lost or
//! damaged, topics are rebuilt from the partition directories and their
//! `partition.metadata` files (config overrides cannot be recovered then, and
//! a warning says so), so a damaged file never stops the broker.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;
use uuid::Uuid;

use crate::storage::checkpoint::write_atomically;
use crate::storage::handles::explain;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicRecord {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TopicsFile {
    version: u32,
    topics: Vec<TopicRecord>,
}

/// Configs changed at runtime through (Incremental)AlterConfigs: this
/// broker's, the cluster default (resource name ""), and per group. Values
/// are as the client sent them; they are validated before they are stored
/// and again when loaded.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DynamicConfigs {
    #[serde(default)]
    pub broker: BTreeMap<String, String>,
    #[serde(default)]
    pub cluster_default: BTreeMap<String, String>,
    #[serde(default)]
    pub groups: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DynamicConfigsFile {
    version: u32,
    #[serde(flatten)]
    configs: DynamicConfigs,
}

pub fn dynamic_configs_path(dir: &Path) -> PathBuf {
    dir.join("dynamic-configs.json")
}

pub fn save_dynamic_configs(dir: &Path, configs: &DynamicConfigs) -> io::Result<()> {
    let file = DynamicConfigsFile {
        version: 1,
        configs: configs.clone(),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
    let path = dynamic_configs_path(dir);
    write_atomically(&path, &json).map_err(|e| explain(e, "writing", &path))
}

/// Loads `dynamic-configs.json`; a missing file is no configs, a damaged
/// one is ignored with a warning (the broker runs on its config file).
pub fn load_dynamic_configs(dir: &Path) -> io::Result<DynamicConfigs> {
    let path = dynamic_configs_path(dir);
    match fs::read(&path) {
        Ok(raw) => match serde_json::from_slice::<DynamicConfigsFile>(&raw) {
            Ok(file) => Ok(file.configs),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "dynamic-configs.json is damaged; ignoring configs changed at runtime");
                Ok(DynamicConfigs::default())
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DynamicConfigs::default()),
        Err(e) => Err(e),
    }
}

/// Holds the exclusive lock on a data directory for the broker's lifetime.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Takes the data directory's lock so two brokers never share one.
pub fn lock_data_dir(dir: &Path) -> io::Result<DataDirLock> {
    fs::create_dir_all(dir)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "data directory {} is in use by another runnel process",
                dir.display()
            ),
        )),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Reads or creates `meta.properties`; returns the cluster id. Refuses to
/// start a broker whose node id differs from the one that created the dir.
///
/// A new directory gets `cluster_id` when given (every node of a cluster
/// derives the same one from its quorum, see [`cluster_id_of_quorum`]), a
/// random one otherwise.
pub fn load_or_create_identity(
    dir: &Path,
    node_id: i32,
    cluster_id: Option<&str>,
) -> io::Result<String> {
    let path = dir.join("meta.properties");
    match fs::read_to_string(&path) {
        Ok(text) => {
            let props: HashMap<&str, &str> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim(), v.trim()))
                .collect();
            let stored_cluster = props.get("cluster.id").map(|s| s.to_string());
            let stored_node = props.get("node.id").and_then(|s| s.parse::<i32>().ok());
            match (stored_cluster, stored_node) {
                (Some(stored_id), Some(stored)) if stored == node_id => {
                    if let Some(wanted) = cluster_id.filter(|&w| w != stored_id) {
                        warn!(path = %path.display(), stored = %stored_id, quorum = wanted, "this data directory keeps the cluster id it was created with");
                    }
                    Ok(stored_id)
                }
                (Some(_), Some(stored)) => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} belongs to node {stored}, but this broker is node {node_id}",
                        path.display()
                    ),
                )),
                _ => {
                    warn!(path = %path.display(), "meta.properties is damaged; writing a new identity");
                    create_identity(&path, node_id, cluster_id)
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_identity(&path, node_id, cluster_id)
        }
        Err(e) => Err(e),
    }
}

fn create_identity(path: &Path, node_id: i32, cluster_id: Option<&str>) -> io::Result<String> {
    let cluster_id = cluster_id.map_or_else(new_cluster_id, str::to_string);
    let text =
        format!("#Runnel broker identity\nversion=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
    write_atomically(path, text.as_bytes())?;
    Ok(cluster_id)
}

/// A Kafka-style cluster id: 16 random bytes in URL-safe base64 (22 chars).
fn new_cluster_id() -> String {
    encode_cluster_id(Uuid::new_v4().as_u128())
}

fn encode_cluster_id(bits: u128) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..22)
        .map(|i| ALPHABET[((bits >> (i * 6)) & 63) as usize] as char)
        .collect()
}

/// The cluster id every node of a quorum derives from the voter list
/// (ids and addresses, in any order): the same list, the same id.
pub fn cluster_id_of_quorum(voters: &[(u64, String)]) -> String {
    let mut sorted: Vec<&(u64, String)> = voters.iter().collect();
    sorted.sort();
    // FNV-1a, 128 bits: stable across versions and platforms.
    let mut hash: u128 = 0x6c62272e07bb014262b821756295c58d;
    for (id, addr) in sorted {
        for byte in id.to_le_bytes().iter().chain(addr.as_bytes()).chain(b",") {
            hash ^= *byte as u128;
            hash = hash.wrapping_mul(0x0000000001000000000000000000013B);
        }
    }
    encode_cluster_id(hash)
}

pub fn topics_path(dir: &Path) -> PathBuf {
    dir.join("topics.json")
}

pub fn save_topics(dir: &Path, topics: &[TopicRecord]) -> io::Result<()> {
    let mut sorted = topics.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let file = TopicsFile {
        version: 1,
        topics: sorted,
    };
    let json = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
    let path = topics_path(dir);
    write_atomically(&path, &json).map_err(|e| explain(e, "writing", &path))
}

/// Loads `topics.json`, or rebuilds the topic list from partition
/// directories when it is missing or unreadable.
pub fn load_topics(dir: &Path) -> io::Result<Vec<TopicRecord>> {
    let path = topics_path(dir);
    let from_dirs = scan_partition_dirs(dir)?;
    let parsed = match fs::read(&path) {
        Ok(raw) => match serde_json::from_slice::<TopicsFile>(&raw) {
            Ok(file) => Some(file.topics),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "topics.json is damaged; rebuilding topics from partition directories (config overrides are lost)");
                None
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !from_dirs.is_empty() {
                warn!(path = %path.display(), "topics.json is missing; rebuilding topics from partition directories (config overrides are lost)");
            }
            None
        }
        Err(e) => return Err(e),
    };
    let mut topics = match parsed {
        Some(topics) => topics,
        None => {
            let rebuilt: Vec<TopicRecord> = from_dirs
                .into_iter()
                .map(|(name, (id, partitions))| TopicRecord {
                    name,
                    id: id.unwrap_or_else(Uuid::new_v4),
                    partitions,
                    configs: BTreeMap::new(),
                })
                .collect();
            if !rebuilt.is_empty() {
                save_topics(dir, &rebuilt)?;
            }
            rebuilt
        }
    };
    topics.retain(|t| {
        let ok = super::topic::validate_topic_name(&t.name).is_ok() && t.partitions > 0;
        if !ok {
            warn!(topic = %t.name, "ignoring invalid topic entry in topics.json");
        }
        ok
    });
    Ok(topics)
}

/// Finds `<topic>-<n>` directories: topic name → (topic id, partition count).
fn scan_partition_dirs(dir: &Path) -> io::Result<BTreeMap<String, (Option<Uuid>, i32)>> {
    let mut found: BTreeMap<String, (Option<Uuid>, i32)> = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name();
        let Some((topic, partition)) = name.to_str().and_then(parse_partition_dir) else {
            continue;
        };
        let id = read_partition_metadata(&entry.path());
        let slot = found.entry(topic.to_string()).or_insert((None, 0));
        slot.0 = slot.0.or(id);
        slot.1 = slot.1.max(partition + 1);
    }
    Ok(found)
}

/// `orders-3` → (`orders`, 3). Deleted directories (`orders-3.<id>-delete`)
/// do not parse.
pub fn parse_partition_dir(name: &str) -> Option<(&str, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    if partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let partition: i32 = partition.parse().ok()?;
    super::topic::validate_topic_name(topic).ok()?;
    Some((topic, partition))
}

pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

const PENDING_SUFFIX: &str = "-new";

/// Where a partition of a topic being created lives until the topic is in
/// `topics.json`: `<topic>-<partition>.<topic id>-new`.
pub fn pending_partition_dir(data_dir: &Path, topic: &str, partition: i32, id: Uuid) -> PathBuf {
    data_dir.join(format!(
        "{topic}-{partition}.{}{PENDING_SUFFIX}",
        id.simple()
    ))
}

/// `orders-3.<id>-new` -> (`orders`, 3, id).
fn parse_pending_partition_dir(name: &str) -> Option<(&str, i32, Uuid)> {
    let (partition_dir, id) = name.strip_suffix(PENDING_SUFFIX)?.rsplit_once('.')?;
    let id = Uuid::try_parse(id).ok()?;
    let (topic, partition) = parse_partition_dir(partition_dir)?;
    Some((topic, partition, id))
}

/// Finishes or undoes topic creations a crash interrupted: a `-new`
/// partition directory of a topic `topics.json` records (same id, partition
/// in range) and whose final directory is missing gets its final name;
/// every other one is removed. Returns (finished, removed).
pub fn finish_pending_partitions(
    data_dir: &Path,
    topics: &[TopicRecord],
) -> io::Result<(usize, usize)> {
    let (mut finished, mut removed) = (0, 0);
    for entry in fs::read_dir(data_dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name();
        let Some((topic, partition, id)) = name.to_str().and_then(parse_pending_partition_dir)
        else {
            continue;
        };
        let recorded = topics
            .iter()
            .any(|t| t.name == topic && t.id == id && partition < t.partitions);
        let target = partition_dir(data_dir, topic, partition);
        if recorded && !target.exists() {
            fs::rename(entry.path(), &target)?;
            finished += 1;
        } else {
            fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    if finished + removed > 0 {
        sync_dir(data_dir)?;
        tracing::info!(
            finished,
            removed,
            "completed or undid partition creations a stop interrupted"
        );
    }
    Ok((finished, removed))
}

/// Fsyncs a directory, so renames and removals in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| explain(e, "syncing", dir))
}

pub fn write_partition_metadata(dir: &Path, topic_id: Uuid) -> io::Result<()> {
    fs::create_dir_all(dir).map_err(|e| explain(e, "creating", dir))?;
    let path = dir.join("partition.metadata");
    let text = format!("version: 0\ntopic_id: {topic_id}\n");
    if fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    write_atomically(&path, text.as_bytes()).map_err(|e| explain(e, "writing", &path))
}

pub fn read_partition_metadata(dir: &Path) -> Option<Uuid> {
    let text = fs::read_to_string(dir.join("partition.metadata")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("topic_id:"))
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
}

/// Removes directories of deleted topics left by an interrupted deletion.
pub fn remove_deleted_dirs(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() && entry.file_name().to_string_lossy().ends_with("-delete") {
            fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_dir_names_parse_from_the_right() {
        assert_eq!(parse_partition_dir("orders-3"), Some(("orders", 3)));
        assert_eq!(parse_partition_dir("my-topic-12"), Some(("my-topic", 12)));
        assert_eq!(parse_partition_dir("orders-3.1234-delete"), None);
        assert_eq!(parse_partition_dir("orders"), None);
    }

    #[test]
    fn topics_survive_a_lost_topics_file() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        for p in 0..3 {
            write_partition_metadata(&partition_dir(dir.path(), "orders", p), id).unwrap();
        }
        save_topics(
            dir.path(),
            &[TopicRecord {
                name: "orders".into(),
                id,
                partitions: 3,
                configs: BTreeMap::new(),
            }],
        )
        .unwrap();
        fs::write(topics_path(dir.path()), b"{ not json").unwrap();
        let topics = load_topics(dir.path()).unwrap();
        assert_eq!(topics.len(), 1);
        assert_eq!((topics[0].id, topics[0].partitions), (id, 3));
    }

    #[test]
    fn an_interrupted_creation_is_finished_if_recorded_and_undone_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let (recorded, unrecorded) = (Uuid::new_v4(), Uuid::new_v4());
        // A crash after topics.json recorded "done" (3 partitions), with
        // partition 0 already renamed; and one before "undone" was recorded.
        write_partition_metadata(&partition_dir(dir.path(), "done", 0), recorded).unwrap();
        for p in 1..3 {
            write_partition_metadata(
                &pending_partition_dir(dir.path(), "done", p, recorded),
                recorded,
            )
            .unwrap();
        }
        for p in 0..2 {
            write_partition_metadata(
                &pending_partition_dir(dir.path(), "undone", p, unrecorded),
                unrecorded,
            )
            .unwrap();
        }
        // A leftover of an older incarnation of "done".
        write_partition_metadata(
            &pending_partition_dir(dir.path(), "done", 1, Uuid::new_v4()),
            Uuid::new_v4(),
        )
        .unwrap();
        let topics = [TopicRecord {
            name: "done".into(),
            id: recorded,
            partitions: 3,
            configs: BTreeMap::new(),
        }];
        assert_eq!(
            finish_pending_partitions(dir.path(), &topics).unwrap(),
            (2, 3)
        );
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["done-0", "done-1", "done-2"]);
        for p in 0..3 {
            assert_eq!(
                read_partition_metadata(&partition_dir(dir.path(), "done", p)),
                Some(recorded)
            );
        }
        assert_eq!(
            parse_pending_partition_dir(&format!("my-topic-7.{}-new", recorded.simple())),
            Some(("my-topic", 7, recorded))
        );
        assert_eq!(
            parse_partition_dir(&format!("t-0.{}-new", recorded.simple())),
            None
        );
    }

    #[test]
    fn the_identity_is_stable_and_guards_the_node_id() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_identity(dir.path(), 1, None).unwrap();
        assert_eq!(a.len(), 22);
        assert_eq!(load_or_create_identity(dir.path(), 1, None).unwrap(), a);
        assert!(load_or_create_identity(dir.path(), 2, None).is_err());
    }

    #[test]
    fn the_nodes_of_a_quorum_derive_one_cluster_id_from_it() {
        let voters = |order: &[u64]| -> Vec<(u64, String)> {
            order
                .iter()
                .map(|&i| (i, format!("10.0.0.{i}:9093")))
                .collect()
        };
        let id = cluster_id_of_quorum(&voters(&[1, 2, 3]));
        assert_eq!(id.len(), 22);
        assert_eq!(
            cluster_id_of_quorum(&voters(&[3, 1, 2])),
            id,
            "order does not matter"
        );
        assert_ne!(cluster_id_of_quorum(&voters(&[1, 2])), id);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            load_or_create_identity(dir.path(), 2, Some(&id)).unwrap(),
            id
        );
    }

    #[test]
    fn a_data_dir_cannot_be_locked_twice() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_data_dir(dir.path()).unwrap();
        assert!(lock_data_dir(dir.path()).is_err());
    }
}
