//! Retention by size and by time, applied by the broker's background task.

use std::time::{Duration, Instant};

use rdkafka::producer::FutureRecord;

use crate::harness::{create_topic, list_offset, TestBroker};

fn fast_retention_config(broker_dir: &std::path::Path) -> std::path::PathBuf {
    let path = broker_dir.join("fast-retention.yaml");
    std::fs::write(&path, "retention_check_interval_ms: 100\n").unwrap();
    path
}

async fn produce_one_batch_each(
    broker: &TestBroker,
    topic: &str,
    n: usize,
    timestamp: Option<i64>,
) {
    let producer = broker.producer(&[("linger.ms", "0")]);
    for i in 0..n {
        let value = format!("{i:04}-{}", "z".repeat(200));
        let mut record = FutureRecord::<(), _>::to(topic)
            .partition(0)
            .payload(&value);
        if let Some(ts) = timestamp {
            record = record.timestamp(ts);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("produce");
    }
}

async fn wait_for_start_offset(
    broker: &TestBroker,
    topic: &str,
    check: impl Fn(i64) -> bool,
) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let start = list_offset(broker, topic, 0, -2).await.unwrap();
        if check(start) || Instant::now() > deadline {
            return start;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_bytes_deletes_old_segments_and_advances_the_start_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let config = fast_retention_config(tmp.path());
    let broker = TestBroker::start_with(&["--config", config.to_str().unwrap()]);
    create_topic(
        &broker,
        "sized",
        1,
        &[("segment.bytes", "4096"), ("retention.bytes", "8192")],
    )
    .await;
    produce_one_batch_each(&broker, "sized", 200, None).await;
    // Retention runs every 100 ms: a pass while the records were still
    // arriving may have advanced the start already, so wait for the pass
    // after the last record too.
    let on_disk = || -> u64 {
        std::fs::read_dir(broker.dir.join("sized-0"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while on_disk() > 8192 + 4096 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = wait_for_start_offset(&broker, "sized", |s| s > 100).await;
    assert!(start > 100, "log start offset should advance, is {start}");
    assert_eq!(list_offset(&broker, "sized", 0, -1).await, Ok(200));
    let kept = on_disk();
    assert!(kept <= 8192 + 4096, "kept {kept} bytes of segments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_ms_deletes_expired_records_even_in_the_active_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let config = fast_retention_config(tmp.path());
    let broker = TestBroker::start_with(&["--config", config.to_str().unwrap()]);
    create_topic(&broker, "aged", 1, &[("retention.ms", "60000")]).await;
    let an_hour_ago = runnel_core::broker::now_ms() - 3_600_000;
    produce_one_batch_each(&broker, "aged", 20, Some(an_hour_ago)).await;
    let start = wait_for_start_offset(&broker, "aged", |s| s == 20).await;
    assert_eq!(start, 20, "every expired record is gone");
    // Fresh records are kept.
    produce_one_batch_each(&broker, "aged", 5, None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(list_offset(&broker, "aged", 0, -2).await, Ok(20));
    assert_eq!(list_offset(&broker, "aged", 0, -1).await, Ok(25));
}
