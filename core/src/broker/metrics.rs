//! The broker's counters: requests (and their latency per API), bytes,
//! connections closed by reason, each partition's traffic
//! (`PartitionCounters`) and the health of storage writes
//! (`StorageHealth`, shared with every partition), rendered in Prometheus'
//! text format.
//!
//! What it is not: the page of every partition and group (`exposition`,
//! which reads these with the broker's state), the HTTP endpoint (the
//! admin listener of `runnel serve`) or the counters of the REST servers
//! (`runnel-http`).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tracing::{error, info};

use crate::log_limit::LogLimit;
use crate::util::now_ms;

/// Why the broker closed a client connection. Each reason has its own
/// counter (`runnel_broker_connections_closed_total{reason="..."}`) and its
/// own rate-limited log line in the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A frame size outside the limits (too small, negative, too large).
    FrameSize,
    /// An API key the broker does not know.
    UnknownApiKey,
    /// An API version the broker does not serve.
    UnsupportedVersion,
    /// A request that does not decode.
    MalformedRequest,
    /// A request that did not arrive in full within the request read
    /// timeout (or sent nothing for the idle timeout in the middle).
    RequestReadTimeout,
    /// No request for the idle timeout (routine housekeeping, as in Kafka).
    Idle,
    /// A response that made no progress for the idle timeout: the client
    /// stopped reading.
    ResponseWriteTimeout,
    /// The broker's connection limit was reached.
    ConnectionLimit,
    /// The client address's connection limit was reached.
    IpConnectionLimit,
    /// An acks=0 produce failed: Kafka closes the connection so the client
    /// notices.
    UnacknowledgedProduceFailed,
    /// The response could not be encoded.
    EncodeFailed,
}

impl CloseReason {
    pub const ALL: [CloseReason; 11] = [
        CloseReason::FrameSize,
        CloseReason::UnknownApiKey,
        CloseReason::UnsupportedVersion,
        CloseReason::MalformedRequest,
        CloseReason::RequestReadTimeout,
        CloseReason::Idle,
        CloseReason::ResponseWriteTimeout,
        CloseReason::ConnectionLimit,
        CloseReason::IpConnectionLimit,
        CloseReason::UnacknowledgedProduceFailed,
        CloseReason::EncodeFailed,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::FrameSize => "frame_size",
            CloseReason::UnknownApiKey => "unknown_api_key",
            CloseReason::UnsupportedVersion => "unsupported_version",
            CloseReason::MalformedRequest => "malformed_request",
            CloseReason::RequestReadTimeout => "request_read_timeout",
            CloseReason::Idle => "idle",
            CloseReason::ResponseWriteTimeout => "response_write_timeout",
            CloseReason::ConnectionLimit => "connection_limit",
            CloseReason::IpConnectionLimit => "ip_connection_limit",
            CloseReason::UnacknowledgedProduceFailed => "acks0_produce_failed",
            CloseReason::EncodeFailed => "encode_failed",
        }
    }

    /// Whether the reason is bad input from the peer (a refused frame).
    pub fn is_bad_frame(self) -> bool {
        matches!(
            self,
            CloseReason::FrameSize
                | CloseReason::UnknownApiKey
                | CloseReason::UnsupportedVersion
                | CloseReason::MalformedRequest
        )
    }
}

/// Counters exported as metrics.
#[derive(Debug, Default)]
pub struct BrokerMetrics {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub records_in: AtomicU64,
    pub produce_requests: AtomicU64,
    pub fetch_requests: AtomicU64,
    pub requests: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_open: AtomicU64,
    pub frames_rejected: AtomicU64,
    /// Partition record sets refused by broker-side schema validation.
    pub records_rejected_by_schema: AtomicU64,
    /// Bytes of requests read or being read and not yet handled (gauge).
    pub inflight_request_bytes: AtomicU64,
    /// Connections the broker closed, indexed by `CloseReason as usize`.
    connections_closed: [AtomicU64; CloseReason::ALL.len()],
    /// Storage write errors; shared with every partition.
    pub storage: Arc<StorageHealth>,
    /// How long requests took, per API key.
    pub latency: RequestLatency,
}

/// Upper bounds of the request latency histogram's buckets, in
/// microseconds (the `le` labels are these in seconds).
const LATENCY_BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// API keys with a histogram of their own; a larger key is counted under
/// the last one (Kafka's keys end below 100).
const LATENCY_API_KEYS: usize = 128;

/// One API's latency histogram: a counter per bucket (not cumulative; the
/// page sums them), the sum and the count.
#[derive(Debug, Default)]
struct ApiLatency {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// Request latency histograms per API key: from a decoded request to its
/// encoded response (a Fetch's long poll and an `acks=all` wait included,
/// as in Kafka's TotalTimeMs).
#[derive(Debug)]
pub struct RequestLatency(Box<[ApiLatency]>);

impl Default for RequestLatency {
    fn default() -> Self {
        RequestLatency(
            (0..LATENCY_API_KEYS)
                .map(|_| ApiLatency::default())
                .collect(),
        )
    }
}

impl RequestLatency {
    /// Records one request of API `api_key` that took `elapsed`.
    pub fn observe(&self, api_key: i16, elapsed: std::time::Duration) {
        let slot = (api_key.max(0) as usize).min(LATENCY_API_KEYS - 1);
        let api = &self.0[slot];
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        // Above the last bound: counted only in `count` (the +Inf bucket).
        if let Some(bucket) = LATENCY_BUCKETS_US.iter().position(|&b| us <= b) {
            api.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        api.sum_us.fetch_add(us, Ordering::Relaxed);
        api.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests of `api_key` recorded so far.
    pub fn count(&self, api_key: i16) -> u64 {
        self.0
            .get(api_key.max(0) as usize)
            .map_or(0, |api| api.count.load(Ordering::Relaxed))
    }

    /// The histograms of the APIs seen so far, `name` giving an API key's
    /// label.
    pub fn render_prometheus(&self, out: &mut String, name: impl Fn(i16) -> String) {
        use std::fmt::Write;
        let metric = "runnel_broker_request_latency_seconds";
        let _ = write!(
            out,
            "# HELP {metric} Time from a decoded request to its encoded response, by API.\n# TYPE {metric} histogram\n"
        );
        for (key, api) in self.0.iter().enumerate() {
            let count = api.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let label = name(key as i16);
            let mut cumulative = 0;
            for (bound, bucket) in LATENCY_BUCKETS_US.iter().zip(&api.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "{metric}_bucket{{api=\"{label}\",le=\"{}\"}} {cumulative}",
                    *bound as f64 / 1e6
                );
            }
            let _ = writeln!(
                out,
                "{metric}_bucket{{api=\"{label}\",le=\"+Inf\"}} {count}"
            );
            let sum = api.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{metric}_sum{{api=\"{label}\"}} {sum}");
            let _ = writeln!(out, "{metric}_count{{api=\"{label}\"}} {count}");
        }
    }
}

/// One partition's traffic through this broker: what producers appended
/// and what consumers fetched (followers' fetches are replication, not
/// counted here).
#[derive(Debug, Default)]
pub struct PartitionCounters {
    pub bytes_in: AtomicU64,
    pub records_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub records_out: AtomicU64,
}

impl PartitionCounters {
    pub fn appended(&self, bytes: u64, records: u64) {
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        self.records_in.fetch_add(records, Ordering::Relaxed);
    }

    pub fn fetched(&self, bytes: u64, records: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        self.records_out.fetch_add(records, Ordering::Relaxed);
    }
}

impl BrokerMetrics {
    /// Counts a connection the broker closed (and a refused frame when
    /// the reason is bad input).
    pub fn connection_closed(&self, reason: CloseReason) {
        self.connections_closed[reason as usize].fetch_add(1, Ordering::Relaxed);
        if reason.is_bad_frame() {
            self.frames_rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Connections closed for `reason` so far.
    pub fn connections_closed(&self, reason: CloseReason) -> u64 {
        self.connections_closed[reason as usize].load(Ordering::Relaxed)
    }

    /// The counters in Prometheus' text format.
    pub fn render_prometheus(&self) -> String {
        let rows: [(&str, &str, &str, &AtomicU64); 12] = [
            (
                "runnel_broker_bytes_in_total",
                "counter",
                "Record batch bytes appended by Produce.",
                &self.bytes_in,
            ),
            (
                "runnel_broker_bytes_out_total",
                "counter",
                "Record batch bytes served by Fetch.",
                &self.bytes_out,
            ),
            (
                "runnel_broker_records_in_total",
                "counter",
                "Records appended by Produce.",
                &self.records_in,
            ),
            (
                "runnel_broker_produce_requests_total",
                "counter",
                "Produce requests.",
                &self.produce_requests,
            ),
            (
                "runnel_broker_fetch_requests_total",
                "counter",
                "Fetch requests.",
                &self.fetch_requests,
            ),
            (
                "runnel_broker_requests_total",
                "counter",
                "Kafka protocol requests of every kind.",
                &self.requests,
            ),
            (
                "runnel_broker_connections_accepted_total",
                "counter",
                "Client connections accepted.",
                &self.connections_accepted,
            ),
            (
                "runnel_broker_connections_open",
                "gauge",
                "Client connections open now.",
                &self.connections_open,
            ),
            (
                "runnel_broker_frames_rejected_total",
                "counter",
                "Request frames refused (bad size, unknown API, unsupported version, malformed).",
                &self.frames_rejected,
            ),
            (
                "runnel_broker_schema_rejections_total",
                "counter",
                "Partition record sets refused by schema validation.",
                &self.records_rejected_by_schema,
            ),
            (
                "runnel_broker_inflight_request_bytes",
                "gauge",
                "Bytes of requests received and not yet handled (counted as they arrive).",
                &self.inflight_request_bytes,
            ),
            (
                "runnel_broker_storage_errors_total",
                "counter",
                "Failed log writes and fsyncs (appends fail with KAFKA_STORAGE_ERROR).",
                &self.storage.errors,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        let name = "runnel_broker_connections_closed_total";
        out.push_str(&format!(
            "# HELP {name} Client connections closed by the broker, by reason.\n# TYPE {name} counter\n"
        ));
        for reason in CloseReason::ALL {
            out.push_str(&format!(
                "{name}{{reason=\"{}\"}} {}\n",
                reason.label(),
                self.connections_closed(reason)
            ));
        }
        let name = "runnel_broker_disk_full";
        out.push_str(&format!(
            "# HELP {name} 1 from a write that failed for lack of space (or quota) until a write succeeds.\n# TYPE {name} gauge\n{name} {}\n",
            u8::from(self.storage.disk_full())
        ));
        let name = "runnel_broker_last_storage_error_timestamp_seconds";
        let last_ms = self.storage.last_error_ms();
        out.push_str(&format!(
            "# HELP {name} Unix time of the last storage write error (0: none).\n# TYPE {name} gauge\n{name} {}.{:03}\n",
            last_ms / 1000,
            last_ms % 1000
        ));
        out
    }
}

/// Whether an I/O error means the disk (or the user's quota) is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// What appends and flushes report about the disk: how many writes failed,
/// whether the last failure was a full disk (until a write succeeds), and
/// when the last one happened. Failures are logged at ERROR, at most once
/// per interval, so a full disk under load leaves a trace without flooding
/// the log.
#[derive(Debug, Default)]
pub struct StorageHealth {
    errors: AtomicU64,
    pub(super) disk_full: AtomicBool,
    last_error_ms: std::sync::atomic::AtomicI64,
    /// One limit per kind, so a full disk is never hidden behind the line
    /// of another I/O error.
    full_log: LogLimit,
    error_log: LogLimit,
}

impl StorageHealth {
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn disk_full(&self) -> bool {
        self.disk_full.load(Ordering::Relaxed)
    }

    /// Unix milliseconds of the last failure, 0 if none.
    pub fn last_error_ms(&self) -> i64 {
        self.last_error_ms.load(Ordering::Relaxed)
    }

    /// Records a failed write of a partition (append, roll, fsync) and
    /// returns whether it was logged.
    pub fn write_failed(
        &self,
        topic: &str,
        partition: i32,
        partition_dir: &Path,
        error: &io::Error,
        now: Instant,
    ) -> bool {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.last_error_ms.store(now_ms(), Ordering::Relaxed);
        let full = is_disk_full(error);
        if full {
            self.disk_full.store(true, Ordering::Relaxed);
        }
        let log = if full {
            &self.full_log
        } else {
            &self.error_log
        };
        let Some(suppressed) = log.admit_at(now) else {
            return false;
        };
        let data_dir = partition_dir.parent().unwrap_or(partition_dir);
        if full {
            error!(
                topic,
                partition,
                data_dir = %data_dir.display(),
                error = %error,
                suppressed,
                "disk full: a write to the log failed; produce is refused with KAFKA_STORAGE_ERROR until space is freed"
            );
        } else {
            error!(
                topic,
                partition,
                data_dir = %data_dir.display(),
                error = %error,
                suppressed,
                "a write to the log failed; produce is refused with KAFKA_STORAGE_ERROR"
            );
        }
        true
    }

    /// Records a successful append: a full disk has room again.
    pub fn write_succeeded(&self) {
        // A load first: the flag is almost always clear, and this runs on
        // every append.
        if self.disk_full.load(Ordering::Relaxed) && self.disk_full.swap(false, Ordering::Relaxed) {
            info!("a write to the log succeeded again after the disk was full");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn storage_health_counts_every_failure_flags_a_full_disk_and_logs_once_per_interval() {
        let health = StorageHealth::default();
        let dir = Path::new("/data/orders-3");
        let enospc = io::Error::from_raw_os_error(libc::ENOSPC);
        let edquot = io::Error::from_raw_os_error(libc::EDQUOT);
        let eio = io::Error::from_raw_os_error(libc::EIO);
        assert!(is_disk_full(&enospc) && is_disk_full(&edquot) && !is_disk_full(&eio));

        let t0 = Instant::now();
        assert!(!health.disk_full());
        assert_eq!(health.last_error_ms(), 0);
        assert!(health.write_failed("orders", 3, dir, &eio, t0), "logged");
        assert!(!health.disk_full(), "an I/O error is not a full disk");
        assert!(health.last_error_ms() > 0);
        let logged: Vec<bool> = [1, 500, 9_999, 10_000, 10_001]
            .into_iter()
            .map(|ms| {
                health.write_failed("orders", 3, dir, &enospc, t0 + Duration::from_millis(ms))
            })
            .collect();
        assert_eq!(
            logged,
            [true, false, false, false, true],
            "the first full disk is logged even right after another error"
        );
        assert_eq!(health.errors(), 6, "every failure is counted");
        assert!(health.disk_full());

        health.write_succeeded();
        assert!(!health.disk_full(), "a write that succeeds clears the flag");
        assert_eq!(health.errors(), 6);
        let metrics = BrokerMetrics {
            storage: Arc::new(health),
            ..Default::default()
        };
        let text = metrics.render_prometheus();
        assert!(
            text.contains("\nrunnel_broker_storage_errors_total 6\n"),
            "{text}"
        );
        assert!(text.contains("\nrunnel_broker_disk_full 0\n"), "{text}");
        assert!(
            !text.contains("runnel_broker_last_storage_error_timestamp_seconds 0.000"),
            "{text}"
        );
    }

    #[test]
    fn closed_connections_are_counted_by_reason_and_bad_frames_as_rejected() {
        let metrics = BrokerMetrics::default();
        metrics.connection_closed(CloseReason::MalformedRequest);
        metrics.connection_closed(CloseReason::MalformedRequest);
        metrics.connection_closed(CloseReason::RequestReadTimeout);
        assert_eq!(metrics.frames_rejected.load(Ordering::Relaxed), 2);
        let text = metrics.render_prometheus();
        for line in [
            "runnel_broker_connections_closed_total{reason=\"malformed_request\"} 2",
            "runnel_broker_connections_closed_total{reason=\"request_read_timeout\"} 1",
            "runnel_broker_connections_closed_total{reason=\"ip_connection_limit\"} 0",
            "runnel_broker_inflight_request_bytes 0",
            "runnel_broker_last_storage_error_timestamp_seconds 0.000",
        ] {
            assert!(text.contains(line), "no '{line}' in:\n{text}");
        }
    }
}
