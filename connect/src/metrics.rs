//! Counters of the connect runtime, and the rate limit that keeps a flood
//! of bad records or requests out of the log.
//!
//! The counters are process-wide (every worker and pipeline of the
//! process adds to them) and shown by the REST API at `/metrics` in
//! Prometheus' text format. Messages about records or requests from
//! outside go through a [`LogLimit`]: a few per minute reach the log, the
//! rest are counted, and the next message that gets through says how many
//! were left out.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the runtime counts.
pub struct Counters {
    /// Records a converter, transform or sink failed on (Kafka Connect's
    /// `total-record-failures`).
    pub record_failures: AtomicU64,
    /// Failed records skipped because `errors.tolerance` is `all`
    /// (`total-records-skipped`).
    pub records_skipped: AtomicU64,
    /// Records written to a dead-letter topic
    /// (`deadletterqueue-produce-requests`).
    pub dead_letters: AtomicU64,
    /// HTTP source requests answered with a 4xx status.
    pub http_source_refused: AtomicU64,
    /// REST API requests answered with a 4xx status.
    pub rest_client_errors: AtomicU64,
    /// Connector config keys reported as unknown (by validation, creation
    /// and update).
    pub unknown_config_keys: AtomicU64,
    /// Log messages a [`LogLimit`] left out.
    pub log_suppressed: AtomicU64,
}

pub static COUNTERS: Counters = Counters {
    record_failures: AtomicU64::new(0),
    records_skipped: AtomicU64::new(0),
    dead_letters: AtomicU64::new(0),
    http_source_refused: AtomicU64::new(0),
    rest_client_errors: AtomicU64::new(0),
    unknown_config_keys: AtomicU64::new(0),
    log_suppressed: AtomicU64::new(0),
};

/// One connector's counters in this process, over all its tasks (a
/// pipeline is a connector, its transforms run in the source task).
#[derive(Debug, Default)]
pub struct ConnectorCounters {
    /// Records a source task polled, or a sink task consumed from Kafka.
    pub records_read: AtomicU64,
    /// Records a source task produced to Kafka, or a sink task wrote out.
    pub records_written: AtomicU64,
    /// Records a converter, transform or the task failed on.
    pub failures: AtomicU64,
    /// Failed records sent to the dead-letter topic.
    pub dead_letters: AtomicU64,
    /// Batches that went through the connector's transform chain, and
    /// the time they took there (microseconds).
    pub transform_batches: AtomicU64,
    pub transform_us: AtomicU64,
}

impl ConnectorCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one batch through the transform chain that took `took`.
    pub fn transformed(&self, took: Duration) {
        self.transform_batches.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.transform_us.fetch_add(us, Ordering::Relaxed);
    }
}

static CONNECTORS: Mutex<BTreeMap<String, Arc<ConnectorCounters>>> = Mutex::new(BTreeMap::new());

/// The counters of connector `name` (made on first use; a deleted
/// connector's stay, as counters do, until the process ends).
pub fn connector(name: &str) -> Arc<ConnectorCounters> {
    let mut all = CONNECTORS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = all.get(name) {
        return c.clone();
    }
    let c = Arc::new(ConnectorCounters::default());
    all.insert(name.to_string(), c.clone());
    c
}

/// Label value escapes of Prometheus' text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The state of a connector and its tasks as `/metrics` shows them.
pub struct ConnectorState {
    pub name: String,
    /// RUNNING, PAUSED, FAILED, UNASSIGNED...
    pub state: String,
    pub tasks: Vec<String>,
}

/// Per-connector counters (of every connector that ever ran here) and
/// the states of `states` (the worker's connectors now).
pub fn render_connectors(states: &[ConnectorState]) -> String {
    let mut out = String::new();
    let all: Vec<(String, Arc<ConnectorCounters>)> = CONNECTORS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    type Value = fn(&ConnectorCounters) -> String;
    let rows: [(&str, &str, &str, Value); 6] = [
        (
            "runnel_connect_connector_records_read_total",
            "counter",
            "Records a connector's source tasks polled or its sink tasks consumed.",
            |c| c.records_read.load(Ordering::Relaxed).to_string(),
        ),
        (
            "runnel_connect_connector_records_written_total",
            "counter",
            "Records a connector's source tasks produced to Kafka or its sink tasks wrote out.",
            |c| c.records_written.load(Ordering::Relaxed).to_string(),
        ),
        (
            "runnel_connect_connector_failures_total",
            "counter",
            "Records a connector's converters, transforms or tasks failed on.",
            |c| c.failures.load(Ordering::Relaxed).to_string(),
        ),
        (
            "runnel_connect_connector_dead_letters_total",
            "counter",
            "A connector's failed records sent to its dead-letter topic.",
            |c| c.dead_letters.load(Ordering::Relaxed).to_string(),
        ),
        (
            "runnel_connect_connector_transform_batches_total",
            "counter",
            "Batches through a connector's (pipeline's) transform chain.",
            |c| c.transform_batches.load(Ordering::Relaxed).to_string(),
        ),
        (
            "runnel_connect_connector_transform_seconds_total",
            "counter",
            "Time batches spent in a connector's (pipeline's) transform chain.",
            |c| (c.transform_us.load(Ordering::Relaxed) as f64 / 1e6).to_string(),
        ),
    ];
    for (name, kind, help, value) in rows {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for (connector, c) in &all {
            let _ = writeln!(
                out,
                "{name}{{connector=\"{}\"}} {}",
                escape(connector),
                value(c)
            );
        }
    }
    let name = "runnel_connect_connector_state";
    let _ = write!(
        out,
        "# HELP {name} 1 for a connector's current state.\n# TYPE {name} gauge\n"
    );
    for c in states {
        let _ = writeln!(
            out,
            "{name}{{connector=\"{}\",state=\"{}\"}} 1",
            escape(&c.name),
            c.state
        );
    }
    let name = "runnel_connect_task_state";
    let _ = write!(
        out,
        "# HELP {name} 1 for a task's current state.\n# TYPE {name} gauge\n"
    );
    for c in states {
        for (task, state) in c.tasks.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{connector=\"{}\",task=\"{task}\",state=\"{state}\"}} 1",
                escape(&c.name)
            );
        }
    }
    out
}

/// Adds one to a counter.
pub fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The counters in Prometheus' text format.
pub fn render() -> String {
    let c = &COUNTERS;
    let rows: [(&str, &str, &AtomicU64); 7] = [
        (
            "runnel_connect_record_failures_total",
            "Records a converter, transform or sink failed on.",
            &c.record_failures,
        ),
        (
            "runnel_connect_records_skipped_total",
            "Failed records skipped under errors.tolerance=all.",
            &c.records_skipped,
        ),
        (
            "runnel_connect_dead_letters_total",
            "Records written to a dead-letter topic.",
            &c.dead_letters,
        ),
        (
            "runnel_connect_http_source_refused_total",
            "HTTP source requests answered with a 4xx status.",
            &c.http_source_refused,
        ),
        (
            "runnel_connect_rest_client_errors_total",
            "REST API requests answered with a 4xx status.",
            &c.rest_client_errors,
        ),
        (
            "runnel_connect_unknown_config_keys_total",
            "Connector config keys reported as unknown.",
            &c.unknown_config_keys,
        ),
        (
            "runnel_connect_log_messages_suppressed_total",
            "Log messages left out by the rate limit.",
            &c.log_suppressed,
        ),
    ];
    let mut out = String::new();
    for (name, help, value) in rows {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            value.load(Ordering::Relaxed)
        ));
    }
    out
}

/// A [`LogLimit`] for the connect runtime: `burst` lines per `window`,
/// every line held back counted in `runnel_connect_log_suppressed_total`.
#[derive(Debug)]
pub struct LogLimit(runnel_log_limit::LogLimit);

impl LogLimit {
    pub const fn new(burst: u32, window: Duration) -> LogLimit {
        LogLimit(runnel_log_limit::LogLimit::with_burst(burst, window))
    }

    /// Whether to log a message now: `Some(n)`, with the number of
    /// messages left out since the last one logged; `None` to leave this
    /// one out (it is counted).
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Option<u64> {
        let admitted = self.0.admit_at(now);
        if admitted.is_none() {
            count(&COUNTERS.log_suppressed);
        }
        admitted
    }
}

/// A message to show at most `max` characters of (an error that quotes a
/// record's data, in a header, a log line or an HTTP answer).
pub fn clip(message: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match message.char_indices().nth(max) {
        None => message.into(),
        Some((at, _)) => format!("{}... ({} bytes in all)", &message[..at], message.len()).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_limit_lets_a_burst_through_per_window_and_counts_the_rest() {
        let limit = LogLimit::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(limit.check_at(t0), Some(0));
        assert_eq!(limit.check_at(t0), Some(0));
        let before = COUNTERS.log_suppressed.load(Ordering::Relaxed);
        for _ in 0..5 {
            assert_eq!(limit.check_at(t0 + Duration::from_secs(30)), None);
        }
        assert!(COUNTERS.log_suppressed.load(Ordering::Relaxed) >= before + 5);
        // The next window's first message says how many were left out.
        assert_eq!(limit.check_at(t0 + Duration::from_secs(61)), Some(5));
        assert_eq!(limit.check_at(t0 + Duration::from_secs(62)), Some(0));
        assert_eq!(limit.check_at(t0 + Duration::from_secs(63)), None);
    }

    #[test]
    fn long_messages_are_clipped_at_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        let long = "é".repeat(20);
        let clipped = clip(&long, 4);
        assert!(clipped.starts_with("éééé... (40 bytes"), "{clipped}");
        assert!(render().contains("runnel_connect_dead_letters_total "));
    }
}
