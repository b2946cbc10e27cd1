//! What a server refused or cut, counted for `/metrics` and logged at
//! WARN at most once per reason per [`LOG_INTERVAL`].
//!
//! Hostile input must not flood the log: a client that opens a thousand
//! half-sent requests gets one WARN line per reason every ten seconds,
//! saying how many more of the same were not logged, and the exact counts
//! are on `/metrics`.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runnel_log_limit::LogLimit;

/// Shortest time between two log lines of one reason.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why a connection or a request was refused or cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The server holds `max_connections` connections.
    TooManyConnections,
    /// The client address holds `max_connections_per_ip` connections.
    TooManyConnectionsFromAddress,
    /// A request's line and headers did not arrive within the header
    /// read timeout.
    HeaderTimeout,
    /// A request's body did not arrive within the body read timeout.
    BodyTimeout,
    /// The client did not read its answer for the body read timeout.
    WriteTimeout,
    /// The request target is longer than `max_uri_bytes`.
    UriTooLong,
    /// The request line and headers exceed `max_head_bytes` or
    /// `max_headers`.
    HeadTooLarge,
    /// The body exceeds `max_body_bytes`.
    BodyTooLarge,
    /// The request could not be parsed as HTTP/1.
    Malformed,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::TooManyConnections,
        Reason::TooManyConnectionsFromAddress,
        Reason::HeaderTimeout,
        Reason::BodyTimeout,
        Reason::WriteTimeout,
        Reason::UriTooLong,
        Reason::HeadTooLarge,
        Reason::BodyTooLarge,
        Reason::Malformed,
    ];

    /// The `reason` label on `/metrics` and in log lines.
    pub fn label(self) -> &'static str {
        match self {
            Reason::TooManyConnections => "max_connections",
            Reason::TooManyConnectionsFromAddress => "max_connections_per_ip",
            Reason::HeaderTimeout => "header_timeout",
            Reason::BodyTimeout => "body_timeout",
            Reason::WriteTimeout => "write_timeout",
            Reason::UriTooLong => "uri_too_long",
            Reason::HeadTooLarge => "head_too_large",
            Reason::BodyTooLarge => "body_too_large",
            Reason::Malformed => "malformed",
        }
    }

    fn index(self) -> usize {
        Reason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or_default()
    }
}

/// The counters of one HTTP server.
pub struct Metrics {
    server: &'static str,
    open: AtomicUsize,
    accepted: AtomicU64,
    idle_closed: AtomicU64,
    rejected: [AtomicU64; Reason::ALL.len()],
    logs: [LogLimit; Reason::ALL.len()],
}

impl Metrics {
    /// Counters for the server named `server` in log lines ("schema
    /// registry", "connect").
    pub fn new(server: &'static str) -> Arc<Metrics> {
        Arc::new(Metrics {
            server,
            open: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            idle_closed: AtomicU64::new(0),
            rejected: Default::default(),
            logs: std::array::from_fn(|_| LogLimit::new(LOG_INTERVAL)),
        })
    }

    /// Connections or requests refused or cut for `reason` so far.
    pub fn rejected(&self, reason: Reason) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub(crate) fn connection_opened(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn idle_closed(&self) {
        self.idle_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refusal and logs it unless a line of the same reason was
    /// logged less than [`LOG_INTERVAL`] ago.
    pub(crate) fn reject(&self, reason: Reason, peer: IpAddr, detail: fmt::Arguments<'_>) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.logs[reason.index()].admit() {
            tracing::warn!(
                server = self.server,
                reason = reason.label(),
                peer = %peer,
                suppressed,
                "{}: {detail} (at most one line per reason every {} s; `suppressed` counts the others)",
                self.server,
                LOG_INTERVAL.as_secs()
            );
        }
    }

    /// The counters in Prometheus text format, each name starting with
    /// `prefix` (`runnel_registry`, `runnel_connect`).
    pub fn render_prometheus(&self, prefix: &str) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, u64)]| {
            out.push_str(&format!(
                "# HELP {prefix}_{name} {help}\n# TYPE {prefix}_{name} {kind}\n"
            ));
            for (labels, value) in lines {
                out.push_str(&format!("{prefix}_{name}{labels} {value}\n"));
            }
        };
        metric(
            "http_connections_open",
            "gauge",
            "HTTP connections open now.",
            &[(String::new(), self.open() as u64)],
        );
        metric(
            "http_connections_total",
            "counter",
            "HTTP connections accepted.",
            &[(String::new(), self.accepted.load(Ordering::Relaxed))],
        );
        metric(
            "http_idle_closed_total",
            "counter",
            "Connections closed after sending nothing for the header read timeout.",
            &[(String::new(), self.idle_closed.load(Ordering::Relaxed))],
        );
        let rejected: Vec<(String, u64)> = Reason::ALL
            .iter()
            .map(|r| (format!("{{reason=\"{}\"}}", r.label()), self.rejected(*r)))
            .collect();
        metric(
            "http_rejected_total",
            "counter",
            "HTTP connections and requests refused or cut, by reason.",
            &rejected,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_counted_under_its_reason() {
        let m = Metrics::new("test");
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..5 {
            m.reject(Reason::HeaderTimeout, ip, format_args!("slow head"));
        }
        m.reject(Reason::BodyTooLarge, ip, format_args!("big body"));
        assert_eq!(m.rejected(Reason::HeaderTimeout), 5);
        assert_eq!(m.rejected(Reason::BodyTooLarge), 1);
        assert_eq!(m.rejected(Reason::Malformed), 0);
        let text = m.render_prometheus("runnel_test");
        assert!(
            text.contains("runnel_test_http_rejected_total{reason=\"header_timeout\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE runnel_test_http_connections_open gauge\n"),
            "{text}"
        );
    }
}
