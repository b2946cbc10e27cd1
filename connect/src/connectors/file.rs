//! File source and sink: Kafka's `FileStreamSource` and `FileStreamSink`,
//! with their class names and config keys (`file`, `topic`, `topics`), so
//! existing Kafka Connect configs work unchanged.
//!
//! The source tails a file a line at a time (or a JSON document a line, with
//! `format=jsonlines`), and its source offset is the byte position after
//! the last line stored, so a restarted task continues there. A partial
//! last line waits until its newline arrives. The sink appends each
//! record's value as a line and fsyncs on flush, before offsets are
//! committed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::plugin::{
    ConfigKey, ConfigType, ConnectError, ConnectResult, ConnectorKind, ConnectorPlugin,
    OffsetReader, Props, SinkTask, SourceTask,
};
use crate::record::{Data, SinkRecord, SourcePartition, SourceRecord};

/// Longest line read; a longer one fails the task (it would not fit a
/// record anyway).
pub const MAX_LINE_BYTES: usize = 8 << 20;
/// Bytes read per poll.
const READ_CHUNK: usize = 1 << 20;

pub struct FileSource;
pub struct FileSink;

static SOURCE_KEYS: &[ConfigKey] = &[
    ConfigKey::required(
        "file",
        ConfigType::String,
        "The file to read (tailed as it grows).",
    ),
    ConfigKey::required("topic", ConfigType::String, "The topic to write lines to."),
    ConfigKey::optional(
        "format",
        ConfigType::String,
        Some("lines"),
        "lines: each line is a string value; jsonlines: each line is a JSON document.",
    ),
    ConfigKey::optional(
        "batch.size",
        ConfigType::Int,
        Some("2000"),
        "Most lines returned by one poll.",
    ),
    ConfigKey::optional(
        "poll.interval.ms",
        ConfigType::Long,
        Some("200"),
        "How long to wait at the end of the file before looking again.",
    ),
];

static SINK_KEYS: &[ConfigKey] = &[
    ConfigKey::required("file", ConfigType::String, "The file to append values to."),
    ConfigKey::required("topics", ConfigType::List, "Topics to read."),
];

fn prop<'a>(p: &'a Props, key: &str, default: &'a str) -> &'a str {
    p.get(key).map(String::as_str).unwrap_or(default)
}

impl ConnectorPlugin for FileSource {
    fn name(&self) -> &'static str {
        "file-source"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &[
            "FileStreamSource",
            "FileStreamSourceConnector",
            "org.apache.kafka.connect.file.FileStreamSourceConnector",
        ]
    }
    fn class(&self) -> &'static str {
        "org.apache.kafka.connect.file.FileStreamSourceConnector"
    }
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Source
    }
    fn config_keys(&self) -> &'static [ConfigKey] {
        SOURCE_KEYS
    }
    fn validate(&self, config: &Props) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match prop(config, "format", "lines") {
            "lines" | "jsonlines" => {}
            other => out.push((
                "format".into(),
                format!("'{other}' is not lines or jsonlines"),
            )),
        }
        out
    }
    fn source_task(&self, config: &Props) -> ConnectResult<Box<dyn SourceTask>> {
        let path = PathBuf::from(prop(config, "file", ""));
        let mut partition = Map::new();
        partition.insert("filename".into(), Value::String(path.display().to_string()));
        Ok(Box::new(FileSourceTask {
            path,
            topic: Arc::from(prop(config, "topic", "")),
            partition: Arc::new(partition),
            json: prop(config, "format", "lines") == "jsonlines",
            batch: prop(config, "batch.size", "2000")
                .parse()
                .unwrap_or(2000)
                .max(1),
            poll_interval: Duration::from_millis(
                prop(config, "poll.interval.ms", "200")
                    .parse()
                    .unwrap_or(200),
            ),
            position: 0,
            file: None,
            pending: BytesMut::new(),
        }))
    }
}

struct FileSourceTask {
    path: PathBuf,
    topic: Arc<str>,
    partition: Arc<SourcePartition>,
    json: bool,
    batch: usize,
    poll_interval: Duration,
    /// Byte position of the first byte of `pending`.
    position: u64,
    file: Option<tokio::fs::File>,
    /// Bytes read after `position` that are not records yet. Records'
    /// values are slices of it (split off and shared, not copied).
    pending: BytesMut,
}

impl FileSourceTask {
    /// Turns complete lines at the front of the buffer into records until
    /// the batch is full. Each line is split off the buffer and shared,
    /// not copied.
    fn take_lines(&mut self, records: &mut Vec<SourceRecord>) -> ConnectResult<()> {
        while records.len() < self.batch {
            let Some(nl) = memchr::memchr(b'\n', &self.pending) else {
                break;
            };
            let at = self.position;
            let mut line = self.pending.split_to(nl + 1).freeze();
            self.position += line.len() as u64;
            line.truncate(nl);
            if line.last() == Some(&b'\r') {
                line.truncate(nl - 1);
            }
            let value = if self.json {
                if line.trim_ascii().is_empty() {
                    continue;
                }
                Data::Json(serde_json::from_slice(&line).map_err(|e| {
                    ConnectError::fatal(format!(
                        "{}: the line at byte {at} is not JSON: {e}",
                        self.path.display()
                    ))
                })?)
            } else {
                Data::text_lossy(line)
            };
            records.push(SourceRecord::new(
                self.partition.clone(),
                Value::Null,
                self.topic.clone(),
                value,
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl SourceTask for FileSourceTask {
    async fn start(&mut self, offsets: Arc<dyn OffsetReader>) -> ConnectResult<()> {
        if let Some(offset) = offsets.offset(&self.partition) {
            self.position = offset["position"].as_u64().unwrap_or(0);
        }
        tracing::debug!(file = %self.path.display(), position = self.position, "file source resumes");
        Ok(())
    }

    async fn poll(&mut self) -> ConnectResult<Vec<SourceRecord>> {
        if self.file.is_none() {
            match tokio::fs::File::open(&self.path).await {
                Ok(mut f) => {
                    let len = f.metadata().await?.len();
                    if self.position > len {
                        // Truncated or replaced: start over.
                        tracing::warn!(file = %self.path.display(), position = self.position, len, "file is shorter than the saved position; reading it from the start");
                        self.position = 0;
                    }
                    f.seek(std::io::SeekFrom::Start(self.position)).await?;
                    self.file = Some(f);
                    self.pending.clear();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tokio::time::sleep(self.poll_interval).await;
                    return Ok(Vec::new());
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut records = Vec::with_capacity(self.batch.min(4096));
        self.take_lines(&mut records)?;
        // Read more only when what is buffered makes no full batch, so
        // the buffer never holds more than a batch and a chunk.
        if records.len() < self.batch {
            // What is left is a partial line; when records still share
            // the buffer, reserving moves it into a new one.
            self.pending.reserve(READ_CHUNK);
            let file = self.file.as_mut().expect("opened above");
            let n = file.read_buf(&mut self.pending).await?;
            if n == 0 && records.is_empty() {
                tokio::time::sleep(self.poll_interval).await;
                return Ok(records);
            }
            self.take_lines(&mut records)?;
        }
        // Offsets are committed per poll: only the last record names the
        // position (after every line taken, blank ones too); the others
        // are covered by it.
        if let Some(last) = records.last_mut() {
            last.source_offset = json!({ "position": self.position });
        }
        // What is left holds no newline only when a line is longer than
        // the limit.
        if self.pending.len() > MAX_LINE_BYTES && memchr::memchr(b'\n', &self.pending).is_none() {
            return Err(ConnectError::fatal(format!(
                "{}: a line longer than {MAX_LINE_BYTES} bytes at byte {}",
                self.path.display(),
                self.position
            )));
        }
        Ok(records)
    }
}

impl ConnectorPlugin for FileSink {
    fn name(&self) -> &'static str {
        "file-sink"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &[
            "FileStreamSink",
            "FileStreamSinkConnector",
            "org.apache.kafka.connect.file.FileStreamSinkConnector",
        ]
    }
    fn class(&self) -> &'static str {
        "org.apache.kafka.connect.file.FileStreamSinkConnector"
    }
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }
    fn config_keys(&self) -> &'static [ConfigKey] {
        SINK_KEYS
    }
    fn sink_task(&self, config: &Props) -> ConnectResult<Box<dyn SinkTask>> {
        Ok(Box::new(FileSinkTask {
            path: PathBuf::from(prop(config, "file", "")),
            file: None,
        }))
    }
}

struct FileSinkTask {
    path: PathBuf,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
}

#[async_trait]
impl SinkTask for FileSinkTask {
    async fn start(&mut self) -> ConnectResult<()> {
        let f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(|e| {
                ConnectError::retriable(format!("cannot open {}: {e}", self.path.display()))
            })?;
        self.file = Some(tokio::io::BufWriter::with_capacity(1 << 20, f));
        Ok(())
    }

    async fn put(&mut self, records: &[SinkRecord]) -> ConnectResult<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| ConnectError::fatal("the sink was not started"))?;
        // One write per batch: the lines are gathered first.
        let mut out = Vec::new();
        for r in records {
            match &r.value {
                Data::Null => {}
                Data::Bytes(b) => out.extend_from_slice(String::from_utf8_lossy(b).as_bytes()),
                Data::Text(s) => out.extend_from_slice(s.as_bytes()),
                Data::Json(Value::String(s)) => out.extend_from_slice(s.as_bytes()),
                Data::Json(v) => serde_json::to_writer(&mut out, v)
                    .map_err(|e| ConnectError::fatal(e.to_string()))?,
            }
            out.push(b'\n');
        }
        file.write_all(&out).await?;
        Ok(())
    }

    async fn flush(&mut self) -> ConnectResult<()> {
        if let Some(file) = self.file.as_mut() {
            file.flush().await?;
            file.get_ref().sync_data().await?;
        }
        Ok(())
    }

    async fn stop(&mut self) {
        let _ = self.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    struct Offsets(Mutex<HashMap<String, Value>>);
    impl OffsetReader for Offsets {
        fn offset(&self, partition: &SourcePartition) -> Option<Value> {
            self.0
                .lock()
                .unwrap()
                .get(&Value::Object(partition.clone()).to_string())
                .cloned()
        }
    }

    fn config(pairs: &[(&str, &str)]) -> Props {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn a_file_of_many_short_lines_is_read_in_batches_of_bounded_memory() {
        // More lines per read chunk than a batch holds, more bytes than
        // the line limit: the buffer must not grow with the file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        let line = "x".repeat(99);
        let lines = (3 * MAX_LINE_BYTES / 100) as u64;
        let text: String = (0..lines).map(|_| format!("{line}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let cfg = config(&[
            ("file", path.to_str().unwrap()),
            ("topic", "t"),
            ("batch.size", "100"),
            ("poll.interval.ms", "1"),
        ]);
        let mut task = FileSource.source_task(&cfg).unwrap();
        task.start(Arc::new(Offsets(Mutex::new(HashMap::new()))))
            .await
            .unwrap();
        let mut read = 0u64;
        loop {
            let batch = task.poll().await.unwrap();
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= 100);
            read += batch.len() as u64;
        }
        assert_eq!(read, lines);
    }

    #[tokio::test]
    async fn the_source_tails_a_file_and_resumes_at_the_saved_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "one\ntwo\r\nthr").unwrap();
        let cfg = config(&[
            ("file", path.to_str().unwrap()),
            ("topic", "t"),
            ("poll.interval.ms", "1"),
        ]);
        let offsets = Arc::new(Offsets(Mutex::new(HashMap::new())));
        let mut task = FileSource.source_task(&cfg).unwrap();
        task.start(offsets.clone()).await.unwrap();
        let records = task.poll().await.unwrap();
        let values: Vec<Data> = records.iter().map(|r| r.value.clone()).collect();
        assert_eq!(values, vec![Data::string("one"), Data::string("two")]);
        assert_eq!(records[1].source_offset, json!({"position": 9}));
        // The partial line waits for its newline.
        assert!(task.poll().await.unwrap().is_empty());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all_sync(b"ee\nfour\n");
        let records = task.poll().await.unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].value, Data::string("three"));
        // A new task resumes after "two" when that offset was committed.
        offsets.0.lock().unwrap().insert(
            Value::Object((*records[0].source_partition).clone()).to_string(),
            json!({"position": 9}),
        );
        let mut again = FileSource.source_task(&cfg).unwrap();
        again.start(offsets).await.unwrap();
        let records = again.poll().await.unwrap();
        let values: Vec<Data> = records.iter().map(|r| r.value.clone()).collect();
        assert_eq!(values, vec![Data::string("three"), Data::string("four")]);
    }

    #[tokio::test]
    async fn a_poll_names_its_position_once_and_invalid_utf8_becomes_replacement_characters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, b"a\n\xffb\nc\n").unwrap();
        let cfg = config(&[("file", path.to_str().unwrap()), ("topic", "t")]);
        let mut task = FileSource.source_task(&cfg).unwrap();
        task.start(Arc::new(Offsets(Mutex::new(HashMap::new()))))
            .await
            .unwrap();
        let records = task.poll().await.unwrap();
        let values: Vec<Data> = records.iter().map(|r| r.value.clone()).collect();
        assert_eq!(
            values,
            vec![
                Data::string("a"),
                Data::string("\u{fffd}b"),
                Data::string("c")
            ]
        );
        // Only the last record carries the position; the others are
        // covered by it.
        let offsets: Vec<&Value> = records.iter().map(|r| &r.source_offset).collect();
        assert_eq!(
            offsets,
            vec![&Value::Null, &Value::Null, &json!({"position": 7})]
        );
        assert!(records
            .iter()
            .all(|r| Arc::ptr_eq(&r.source_partition, &records[0].source_partition)));
    }

    #[tokio::test]
    async fn json_lines_become_json_values_and_bad_lines_fail_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "{\"a\":1}\n\n[2]\nnot json\n").unwrap();
        let cfg = config(&[
            ("file", path.to_str().unwrap()),
            ("topic", "t"),
            ("format", "jsonlines"),
        ]);
        let mut task = FileSource.source_task(&cfg).unwrap();
        task.start(Arc::new(Offsets(Mutex::new(HashMap::new()))))
            .await
            .unwrap();
        let err = task.poll().await.unwrap_err();
        assert!(!err.retriable && err.message.contains("not JSON"), "{err}");
        assert!(!FileSource
            .validate(&config(&[("format", "xml")]))
            .is_empty());
    }

    #[tokio::test]
    async fn the_sink_appends_values_as_lines_and_flush_makes_them_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let cfg = config(&[("file", path.to_str().unwrap()), ("topics", "t")]);
        let mut task = FileSink.sink_task(&cfg).unwrap();
        task.start().await.unwrap();
        let rec = |v: Data| SinkRecord {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: Data::Null,
            value: v,
            headers: vec![],
        };
        task.put(&[rec(Data::string("a")), rec(Data::Json(json!({"b": 2})))])
            .await
            .unwrap();
        task.flush().await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\n{\"b\":2}\n");
    }

    trait WriteAllSync {
        fn write_all_sync(&mut self, b: &[u8]);
    }
    impl WriteAllSync for std::fs::File {
        fn write_all_sync(&mut self, b: &[u8]) {
            use std::io::Write;
            self.write_all(b).unwrap();
        }
    }
}
