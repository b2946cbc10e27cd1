//! Page views per user per minute: JSON page views in `page-views`
//! (key: the user) → one final count per user and one-minute window in
//! `page-views-per-minute` (JSON `{"user", "window_start", "views"}`),
//! emitted once the window closes (10 s of grace for late views).
//!
//! ```text
//! runnel topic create page-views --partitions 3
//! runnel topic create page-views-per-minute --partitions 3
//! cargo run -p runnel-streams --example page_views
//! echo 'alice {"page": "/home"}' | runnel produce page-views -K ' '
//! ```

#[path = "run.rs"]
mod run;

use runnel_streams::{serdes, Consumed, Produced, Stored, StreamsBuilder, TimeWindows, Topology};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct PageView {
    page: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct ViewsPerMinute {
    user: String,
    window_start: i64,
    views: i64,
}

fn topology() -> Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream(
            "page-views",
            Consumed::with(serdes::string(), serdes::json::<PageView>()),
        )
        .group_by_key(serdes::string(), serdes::json::<PageView>())
        .windowed_by(TimeWindows::of_size_with_grace(60_000, 10_000))
        .count(Stored::as_("page-views-per-minute-store"))
        .suppress_until_window_closes(Stored::unnamed())
        .to_stream()
        .map(|w, views| {
            let out = ViewsPerMinute {
                user: w.key.clone(),
                window_start: w.window.start_ms,
                views: views.unwrap_or(0),
            };
            (w.key, out)
        })
        .to(
            "page-views-per-minute",
            Produced::with(serdes::string(), serdes::json::<ViewsPerMinute>()),
        );
    builder.build().expect("a valid topology")
}

fn main() {
    run::run("page-views", topology());
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_streams::TopologyTestDriver;

    #[test]
    fn one_final_count_per_user_and_minute_once_the_window_closes() {
        let mut driver = TopologyTestDriver::new(topology(), "page-views");
        let (k, v) = (serdes::string(), serdes::json::<PageView>());
        let view = |p: &str| PageView { page: p.into() };
        driver
            .pipe("page-views", &k, &v, "alice".into(), view("/a"), 1_000)
            .unwrap();
        driver
            .pipe("page-views", &k, &v, "alice".into(), view("/b"), 59_000)
            .unwrap();
        driver
            .pipe("page-views", &k, &v, "bob".into(), view("/a"), 30_000)
            .unwrap();
        // Within the grace: still counted in the first minute.
        driver
            .pipe("page-views", &k, &v, "alice".into(), view("/c"), 65_000)
            .unwrap();
        driver
            .pipe("page-views", &k, &v, "alice".into(), view("/late"), 50_000)
            .unwrap();
        let out_serde = serdes::json::<ViewsPerMinute>();
        assert!(driver
            .read_output("page-views-per-minute", &k, &out_serde)
            .unwrap()
            .is_empty());
        // Stream time passes 60 s + 10 s of grace: the first minute closes.
        driver
            .pipe("page-views", &k, &v, "carol".into(), view("/a"), 70_000)
            .unwrap();
        // Too late now: dropped.
        driver
            .pipe(
                "page-views",
                &k,
                &v,
                "alice".into(),
                view("/too-late"),
                40_000,
            )
            .unwrap();
        let mut out: Vec<_> = driver
            .read_output("page-views-per-minute", &k, &out_serde)
            .unwrap()
            .into_iter()
            .map(|r| r.value)
            .collect();
        out.sort_by(|a, b| a.user.cmp(&b.user));
        assert_eq!(
            out,
            vec![
                ViewsPerMinute {
                    user: "alice".into(),
                    window_start: 0,
                    views: 3
                },
                ViewsPerMinute {
                    user: "bob".into(),
                    window_start: 0,
                    views: 1
                },
            ]
        );
        assert_eq!(driver.metrics().late_records_dropped, 1);
    }
}
