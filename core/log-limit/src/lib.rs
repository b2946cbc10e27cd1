//! Rate-limited logging for events a peer (or a full disk) can repeat at
//! will: malformed frames, cut connections, rejected HTTP requests, bad
//! records in a connector, storage errors under load.
//!
//! A [`LogLimit`] lets `burst` events through per window (one, by default)
//! and counts the ones it holds back; the next line it lets through reports
//! that count, so the log shows that something keeps happening without one
//! line per event. Counting every event is the metrics' job; this only
//! decides whether to write a line.
//!
//! ```
//! use std::time::Duration;
//! use runnel_log_limit::LogLimit;
//!
//! static BAD_INPUT: LogLimit = LogLimit::new(Duration::from_secs(10));
//! if let Some(suppressed) = BAD_INPUT.admit() {
//!     eprintln!("closing connection: malformed request ({suppressed} more not logged)");
//! }
//! ```
//!
//! Time is a parameter of [`LogLimit::admit_at`], so tests need no clock.
//! This crate has no dependencies: the broker core links it without the
//! HTTP stack.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The interval used for logs about peer input and storage errors.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// At most `burst` log lines per `window`; counts the events it holds back.
#[derive(Debug)]
pub struct LogLimit {
    burst: u32,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When the current window began (at the first line let through after
    /// the previous one ended); `None` before the first event.
    started: Option<Instant>,
    /// Lines let through in the current window.
    logged: u32,
    /// Events held back since the last line.
    suppressed: u64,
}

impl LogLimit {
    /// One line per `interval`.
    pub const fn new(interval: Duration) -> LogLimit {
        LogLimit::with_burst(1, interval)
    }

    /// `burst` lines per `window` (at least one).
    pub const fn with_burst(burst: u32, window: Duration) -> LogLimit {
        LogLimit {
            burst: if burst == 0 { 1 } else { burst },
            window,
            state: Mutex::new(State {
                started: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether to log this event now: `Some(n)` with the number of events
    /// held back since the previous line, or `None` to stay quiet.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    /// [`admit`](Self::admit) at a given instant.
    pub fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let in_window = state
            .started
            .is_some_and(|start| now.saturating_duration_since(start) < self.window);
        if !in_window {
            state.started = Some(now);
            state.logged = 0;
        }
        if state.logged < self.burst {
            state.logged += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit::new(DEFAULT_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_reports_what_it_held_back() {
        let limit = LogLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(limit.admit_at(at(0)), Some(0), "the first event is logged");
        assert_eq!(limit.admit_at(at(1)), None);
        assert_eq!(limit.admit_at(at(5_000)), None);
        assert_eq!(limit.admit_at(at(9_999)), None);
        assert_eq!(
            limit.admit_at(at(10_000)),
            Some(3),
            "after the interval, with the three held back"
        );
        assert_eq!(limit.admit_at(at(10_001)), None);
        assert_eq!(
            limit.admit_at(at(60_000)),
            Some(1),
            "a quiet spell does not bank lines"
        );
        assert_eq!(limit.admit_at(at(60_001)), None);
    }

    #[test]
    fn a_flood_of_events_yields_one_line_per_interval() {
        let limit = LogLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        // 10,000 events 3.5 ms apart (35 s): a line every 10 s.
        let lines: Vec<(u64, u64)> = (0..10_000u64)
            .filter_map(|i| {
                let suppressed = limit.admit_at(t0 + Duration::from_micros(i * 3_500))?;
                Some((i, suppressed))
            })
            .collect();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0], (0, 0));
        for pair in lines.windows(2) {
            let ((before, _), (at, suppressed)) = (pair[0], pair[1]);
            assert_eq!(
                suppressed,
                at - before - 1,
                "each line counts every event since the previous one"
            );
        }
    }

    #[test]
    fn an_instant_before_the_last_line_is_held_back() {
        let limit = LogLimit::new(Duration::from_secs(1));
        let t0 = Instant::now() + Duration::from_secs(5);
        assert_eq!(limit.admit_at(t0), Some(0));
        assert_eq!(limit.admit_at(t0 - Duration::from_secs(3)), None);
    }

    #[test]
    fn a_burst_goes_through_per_window_and_the_rest_is_counted() {
        let limit = LogLimit::with_burst(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(limit.admit_at(t0), Some(0));
        assert_eq!(limit.admit_at(t0), Some(0));
        for _ in 0..5 {
            assert_eq!(limit.admit_at(t0 + Duration::from_secs(30)), None);
        }
        // The next window's first line says how many were left out.
        assert_eq!(limit.admit_at(t0 + Duration::from_secs(61)), Some(5));
        assert_eq!(limit.admit_at(t0 + Duration::from_secs(62)), Some(0));
        assert_eq!(limit.admit_at(t0 + Duration::from_secs(63)), None);
    }
}
