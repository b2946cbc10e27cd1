//! `runnel-streams` applications against the real broker: instances of
//! one application share the input partitions; a SIGKILLed instance's
//! tasks move to the survivor, which restores their stores from the
//! changelog topics; a restart resumes from the committed offsets with
//! the state intact.
//!
//! An application instance is this test binary run again as the ignored
//! test [`counting_application_instance`], so it can be SIGKILLed like
//! any process.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::producer::FutureRecord;
use rdkafka::Message;

use crate::harness::{create_topic, TestBroker};

const INPUT: &str = "streams-clicks";
const OUTPUT: &str = "streams-click-counts";
const APP: &str = "click-counter";
const KEYS: usize = 50;

/// Counts records per key: `INPUT` → group by key → count → `OUTPUT`.
fn counting_topology() -> runnel_streams::Topology {
    use runnel_streams::{serdes, Consumed, Produced, Stored, StreamsBuilder};
    let builder = StreamsBuilder::new();
    builder
        .stream(INPUT, Consumed::with(serdes::string(), serdes::string()))
        .group_by_key(serdes::string(), serdes::string())
        .count(Stored::as_("click-counts"))
        .to_stream()
        .to(
            OUTPUT,
            Produced::with(serdes::string(), serdes::nullable(serdes::i64())),
        );
    builder.build().expect("a valid topology")
}

/// Runs one instance of the counting application while its parent test
/// lets it (only when started by [`Instance::start`]).
#[test]
#[ignore = "an application instance, started by the streams tests"]
fn counting_application_instance() {
    let Ok(bootstrap) = std::env::var("RUNNEL_STREAMS_TEST_BOOTSTRAP") else {
        return;
    };
    let mut config = runnel_streams::StreamsConfig::new(APP, &bootstrap);
    config.state_dir = std::env::var_os("RUNNEL_STREAMS_TEST_STATE").map(Into::into);
    config.commit_interval = Duration::from_millis(200);
    config
        .client
        .insert("session.timeout.ms".into(), "6000".into());
    config
        .client
        .insert("heartbeat.interval.ms".into(), "500".into());
    let app = runnel_streams::KafkaStreams::start(counting_topology(), config)
        .expect("start the application");
    eprintln!("instance running");
    // Until SIGKILL or SIGTERM (which ends the process without a close:
    // the survivor's takeover and the restart are what is tested).
    while app.is_running() {
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the stream thread stopped: {:?}", app.close());
}

struct Instance(Child);

impl Instance {
    fn start(broker: &TestBroker, state: &std::path::Path) -> Instance {
        let child = Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "streams::counting_application_instance",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env("RUNNEL_STREAMS_TEST_BOOTSTRAP", broker.addr())
            .env("RUNNEL_STREAMS_TEST_STATE", state)
            .env("RUST_LOG", "runnel_streams=info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start an application instance");
        Instance(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn produce_clicks(broker: &TestBroker, from: usize, count: usize, pace: Duration) {
    let producer = broker.producer(&[("acks", "all"), ("enable.idempotence", "true")]);
    for i in from..from + count {
        let key = format!("user-{}", i % KEYS);
        let value = format!("click-{i}");
        producer
            .send(
                FutureRecord::to(INPUT).key(&key).payload(&value),
                Duration::from_secs(30),
            )
            .await
            .expect("produce a click");
        if !pace.is_zero() && i % 100 == 0 {
            tokio::time::sleep(pace).await;
        }
    }
}

/// The latest count per key in the output topic.
fn latest_counts(broker: &TestBroker) -> BTreeMap<String, i64> {
    let records = broker.consume(OUTPUT, 4, 200_000, Duration::from_secs(3));
    let mut counts = BTreeMap::new();
    for m in records {
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
        let value = m.payload().expect("a count");
        let count = i64::from_be_bytes(value.try_into().expect("8 bytes"));
        // Per key, the output partition keeps the order of the updates.
        counts.insert(key, count);
    }
    counts
}

/// Waits until every key's latest count is at least what was produced
/// for it; returns the counts.
async fn wait_for_counts(
    broker: &TestBroker,
    produced: usize,
    timeout: Duration,
) -> BTreeMap<String, i64> {
    let per_key = (produced / KEYS) as i64;
    let deadline = Instant::now() + timeout;
    loop {
        let counts = latest_counts(broker);
        let complete = counts.len() == KEYS && counts.values().all(|c| *c >= per_key);
        if complete || Instant::now() > deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instances_counts_move_to_the_survivor_and_a_restart_keeps_them() {
    let broker = TestBroker::start();
    create_topic(&broker, INPUT, 4, &[]).await;
    create_topic(&broker, OUTPUT, 4, &[]).await;
    let state = tempfile::tempdir().expect("a state directory");
    let (state_a, state_b) = (state.path().join("a"), state.path().join("b"));
    let mut a = Instance::start(&broker, &state_a);
    let mut b = Instance::start(&broker, &state_b);

    // Clicks flow steadily while one instance is SIGKILLed mid-stream;
    // the survivor counts the rest.
    const FIRST: usize = 10_000;
    let deadline = Instant::now() + Duration::from_secs(60);
    produce_clicks(&broker, 0, 500, Duration::ZERO).await;
    while latest_counts(&broker).len() < KEYS {
        assert!(Instant::now() < deadline, "the instances never counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, ()) = tokio::join!(
        produce_clicks(&broker, 500, FIRST - 500, Duration::from_millis(10)),
        async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            a.kill();
        }
    );
    let counts = wait_for_counts(&broker, FIRST, Duration::from_secs(90)).await;
    let per_key = (FIRST / KEYS) as i64;
    let short: Vec<_> = counts.iter().filter(|(_, c)| **c < per_key).collect();
    assert!(
        counts.len() == KEYS && short.is_empty(),
        "every click is counted after the survivor took over (expected {per_key} per key): short {short:?}, {} keys",
        counts.len()
    );
    let total: i64 = counts.values().sum();
    eprintln!(
        "after SIGKILL of one instance: {total} counted for {FIRST} clicks ({} counted twice)",
        total - FIRST as i64
    );

    // Both instances down, then up again: they restore the counts and go
    // on from the committed offsets.
    b.kill();
    drop((a, b));
    let _a = Instance::start(&broker, &state_a);
    let _b = Instance::start(&broker, &state_b);
    const MORE: usize = 2_000;
    produce_clicks(&broker, FIRST, MORE, Duration::ZERO).await;
    let after = wait_for_counts(&broker, FIRST + MORE, Duration::from_secs(90)).await;
    let per_key_after = ((FIRST + MORE) / KEYS) as i64;
    for (key, before) in &counts {
        let now = after.get(key).copied().unwrap_or(0);
        assert!(
            now >= before + (MORE / KEYS) as i64 && now >= per_key_after,
            "{key}: {before} before the restart, {now} after {MORE} more clicks (state lost or clicks missed)"
        );
    }
    let total_after: i64 = after.values().sum();
    eprintln!(
        "after a restart of both: {total_after} counted for {} clicks ({} counted twice in all)",
        FIRST + MORE,
        total_after - (FIRST + MORE) as i64
    );
}
