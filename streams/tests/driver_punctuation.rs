//! The Processor API: user processors that forward, keep state in their
//! stores, and schedule punctuators on stream time and on the (virtual)
//! wall clock.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::*;
use runnel_streams::{
    serdes, Consumed, ErrorHandling, KStream, ProcessorContext, Produced, PunctuationType, Record,
    Stored, StreamsBuilder, StreamsError, UserProcessor,
};

fn events(b: &StreamsBuilder) -> KStream<String, String> {
    b.stream("events", Consumed::with(s(), s()))
}

/// Forwards `("tick", <clock time>)` every `interval_ms` of `kind`'s clock;
/// passes each record on as `("record@<timestamp>", -1)`.
struct Ticker {
    interval_ms: i64,
    kind: PunctuationType,
}

impl UserProcessor<String, String, String, i64> for Ticker {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, String, i64>) -> Result<(), StreamsError> {
        ctx.schedule(self.interval_ms, self.kind, |ctx, now| {
            ctx.forward(Record::new("tick".to_string(), now, now))
        })?;
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, i64>,
        r: Record<String, String>,
    ) -> Result<(), StreamsError> {
        ctx.forward(Record::new(
            format!("record@{}", r.timestamp),
            -1,
            r.timestamp,
        ))
    }
}

fn ticker(interval_ms: i64, kind: PunctuationType) -> StreamsBuilder {
    let b = StreamsBuilder::new();
    events(&b)
        .process(move || Ticker { interval_ms, kind }, Vec::new())
        .to("out", Produced::with(s(), l()));
    b
}

/// `(key, value)` of what `out` got, ticks as `tick@<time>`.
fn out(d: &mut runnel_streams::TopologyTestDriver) -> Vec<String> {
    longs(d, "out")
        .into_iter()
        .map(|(k, v, ts)| {
            if k == "tick" {
                assert_eq!(v, Some(ts), "a tick carries the time it ran at");
                format!("tick@{ts}")
            } else {
                k
            }
        })
        .collect()
}

#[test]
fn a_stream_time_punctuator_fires_once_per_interval_boundary_reached_and_never_while_time_stands_still(
) {
    let mut d = driver(ticker(10, PunctuationType::StreamTime));
    // Due at 0, then at each multiple of 10 stream time reaches.
    for ts in [3, 7, 7, 10, 5, 35, 39, 40] {
        kv(&mut d, "events", "k", "v", ts);
    }
    assert_eq!(
        out(&mut d),
        vec![
            "record@3",
            "tick@3",
            "record@7",
            "record@7",
            "record@10",
            "tick@10",
            "record@5",
            "record@35",
            "tick@35",
            "record@39",
            "record@40",
            "tick@40"
        ]
    );
    assert_eq!(d.metrics().punctuations, 4);
    // The wall clock does not move stream time.
    d.advance_wall_clock_time(1_000_000).unwrap();
    assert!(out(&mut d).is_empty());
}

#[test]
fn a_wall_clock_punctuator_fires_every_interval_the_clock_advances_whether_records_come_or_not() {
    let mut d = driver(ticker(1_000, PunctuationType::WallClockTime));
    d.advance_wall_clock_time(999).unwrap();
    assert!(out(&mut d).is_empty());
    d.advance_wall_clock_time(1).unwrap();
    assert_eq!(out(&mut d), vec!["tick@1000"]);
    // Records move stream time, not the wall clock.
    kv(&mut d, "events", "k", "v", 1_000_000);
    assert_eq!(out(&mut d), vec!["record@1000000"]);
    // Two and a half intervals: one run, the next due on the grid (4000).
    d.advance_wall_clock_time(2_500).unwrap();
    assert_eq!(out(&mut d), vec!["tick@3500"]);
    d.advance_wall_clock_time(499).unwrap();
    assert!(out(&mut d).is_empty());
    d.advance_wall_clock_time(1).unwrap();
    assert_eq!(out(&mut d), vec!["tick@4000"]);
    assert_eq!(d.metrics().punctuations, 3);
}

#[test]
fn a_wall_clock_punctuator_counts_from_the_drivers_start_time() {
    let mut d = driver(ticker(1_000, PunctuationType::WallClockTime)).with_wall_clock_start(50_000);
    d.advance_wall_clock_time(999).unwrap();
    assert!(out(&mut d).is_empty());
    d.advance_wall_clock_time(1).unwrap();
    assert_eq!(out(&mut d), vec!["tick@51000"]);
    assert_eq!(d.wall_clock_time(), 51_000);
}

/// Counts per key in the store `counts`; every 10 s of wall clock, emits
/// each count and clears it.
struct EmitAndClear;

impl UserProcessor<String, String, String, i64> for EmitAndClear {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, String, i64>) -> Result<(), StreamsError> {
        ctx.schedule(10_000, PunctuationType::WallClockTime, |ctx, now| {
            let counts = ctx.typed_store("counts", &s(), &l())?.all()?;
            for (key, n) in counts {
                ctx.forward(Record::new(key.clone(), n, now))?;
                ctx.typed_store("counts", &s(), &l())?.delete(&key)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, i64>,
        r: Record<String, String>,
    ) -> Result<(), StreamsError> {
        let mut counts = ctx.typed_store("counts", &s(), &l())?;
        let n = counts.get(&r.key)?.unwrap_or(0);
        counts.put(&r.key, &(n + 1))
    }
}

#[test]
fn a_punctuator_emits_and_clears_what_the_processor_gathered_in_its_store() {
    let b = StreamsBuilder::new();
    events(&b)
        .process(|| EmitAndClear, vec![Stored::as_("counts")])
        .to("batches", Produced::with(s(), l()));
    let mut d = driver(b);
    kv(&mut d, "events", "a", "x", 1);
    kv(&mut d, "events", "b", "x", 2);
    kv(&mut d, "events", "a", "x", 3);
    assert!(longs(&mut d, "batches").is_empty());
    assert_eq!(d.get("counts", &s(), &l(), &"a".to_string()), Some(2));
    d.advance_wall_clock_time(10_000).unwrap();
    assert_eq!(
        longs(&mut d, "batches"),
        vec![
            ("a".to_string(), Some(2), 10_000),
            ("b".to_string(), Some(1), 10_000)
        ]
    );
    assert_eq!(d.get("counts", &s(), &l(), &"a".to_string()), None);
    // The changelog saw the counts and their deletion.
    let changelog = d.read_raw("app-counts-changelog");
    assert_eq!(changelog.len(), 5);
    assert!(changelog[3..].iter().all(|o| o.value.is_none()));
    d.advance_wall_clock_time(10_000).unwrap();
    assert!(longs(&mut d, "batches").is_empty());
    kv(&mut d, "events", "a", "x", 4);
    d.advance_wall_clock_time(10_000).unwrap();
    assert_eq!(
        longs(&mut d, "batches"),
        vec![("a".to_string(), Some(1), 30_000)]
    );
}

#[test]
fn what_a_punctuator_forwards_reaches_operators_in_other_sub_topologies() {
    // `process` may change keys: the count after it repartitions.
    let b = StreamsBuilder::new();
    events(&b)
        .process(
            || Ticker {
                interval_ms: 100,
                kind: PunctuationType::WallClockTime,
            },
            Vec::new(),
        )
        .group_by_key(s(), l())
        .count(Stored::as_("ticks"))
        .to_stream()
        .to("tick-counts", Produced::with(s(), nl()));
    let topology = b.build().unwrap();
    assert_eq!(topology.subtopologies().len(), 2);
    let mut d = runnel_streams::TopologyTestDriver::new(topology, APP);
    d.advance_wall_clock_time(100).unwrap();
    d.advance_wall_clock_time(100).unwrap();
    assert_eq!(
        longs(&mut d, "tick-counts"),
        vec![
            ("tick".to_string(), Some(1), 100),
            ("tick".to_string(), Some(2), 200)
        ]
    );
}

/// Ticks on stream time, and cancels itself after `runs` ticks.
struct Limited {
    runs: i64,
}

impl UserProcessor<String, String, String, i64> for Limited {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, String, i64>) -> Result<(), StreamsError> {
        let runs = self.runs;
        let handle = Rc::new(RefCell::new(None::<runnel_streams::Cancellable>));
        let own = handle.clone();
        let mut n = 0;
        let cancellable = ctx.schedule(10, PunctuationType::StreamTime, move |ctx, now| {
            n += 1;
            if n == runs {
                if let Some(c) = own.borrow().as_ref() {
                    c.cancel();
                }
            }
            ctx.forward(Record::new("tick".to_string(), now, now))
        })?;
        *handle.borrow_mut() = Some(cancellable);
        Ok(())
    }

    fn process(
        &mut self,
        _: &mut ProcessorContext<'_, String, i64>,
        _: Record<String, String>,
    ) -> Result<(), StreamsError> {
        Ok(())
    }
}

#[test]
fn a_cancelled_punctuator_runs_no_more() {
    let b = StreamsBuilder::new();
    events(&b)
        .process(|| Limited { runs: 2 }, Vec::new())
        .to("out", Produced::with(s(), l()));
    let mut d = driver(b);
    for ts in [0, 10, 20, 30] {
        kv(&mut d, "events", "k", "v", ts);
    }
    assert_eq!(out(&mut d), vec!["tick@0", "tick@10"]);
    assert_eq!(d.metrics().punctuations, 2);
}

#[test]
fn stream_time_punctuation_follows_the_extracted_event_time() {
    let b = StreamsBuilder::new();
    b.stream(
        "events",
        Consumed::with(s(), s())
            .with_timestamp_extractor(|_, v: &String, _| v.parse().unwrap_or(-1)),
    )
    .process(
        || Ticker {
            interval_ms: 100,
            kind: PunctuationType::StreamTime,
        },
        Vec::new(),
    )
    .to("out", Produced::with(s(), l()));
    let mut d = driver(b);
    kv(&mut d, "events", "k", "50", 1_000_000);
    kv(&mut d, "events", "k", "99", 1_000_000);
    kv(&mut d, "events", "k", "not a time", 5_000_000);
    kv(&mut d, "events", "k", "100", 0);
    assert_eq!(
        out(&mut d),
        vec![
            "record@50",
            "tick@50",
            "record@99",
            "record@100",
            "tick@100"
        ]
    );
}

/// Uses what it was told to, at init or per record.
struct Misbehaving {
    interval_ms: i64,
    store: &'static str,
}

impl UserProcessor<String, String, String, String> for Misbehaving {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, String, String>) -> Result<(), StreamsError> {
        ctx.schedule(self.interval_ms, PunctuationType::StreamTime, |_, _| Ok(()))?;
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, String, String>,
        r: Record<String, String>,
    ) -> Result<(), StreamsError> {
        ctx.store(self.store)?
            .put(r.key.as_bytes(), r.value.as_bytes());
        ctx.forward(r)
    }
}

fn misbehaving(interval_ms: i64, store: &'static str) -> StreamsBuilder {
    let b = StreamsBuilder::new();
    events(&b)
        .process(
            move || Misbehaving { interval_ms, store },
            vec![Stored::as_("mine")],
        )
        .to("out", Produced::with(s(), s()));
    b
}

#[test]
fn a_processor_that_cannot_start_fails_its_task_with_an_error_not_a_panic() {
    let mut d = driver(misbehaving(0, "mine"));
    let err = d
        .pipe_raw("events", Some(b"k"), Some(b"v"), 1, &[])
        .unwrap_err();
    assert!(err.to_string().contains("must be positive"), "{err}");
    // However errors are handled: it would process nothing right.
    let mut d = driver(misbehaving(-5, "mine")).with_error_handling(ErrorHandling::LogAndContinue);
    assert!(d.advance_wall_clock_time(1).is_err());
    assert!(d
        .pipe_raw("events", Some(b"k"), Some(b"v"), 1, &[])
        .is_err());
}

#[test]
fn a_store_the_processor_did_not_declare_is_an_error_for_the_error_handler() {
    let mut d = driver(misbehaving(10, "elsewhere"));
    let err = d
        .pipe_raw("events", Some(b"k"), Some(b"v"), 1, &[])
        .unwrap_err();
    assert!(
        err.to_string().contains("no state store elsewhere"),
        "{err}"
    );
    let mut d =
        driver(misbehaving(10, "elsewhere")).with_error_handling(ErrorHandling::LogAndContinue);
    kv(&mut d, "events", "k", "v", 1);
    assert_eq!(d.metrics().records_failed, 1);
    assert!(strings(&mut d, "out").is_empty());
}

#[test]
fn a_processors_store_needs_a_name() {
    let b = StreamsBuilder::new();
    events(&b)
        .process(
            || Misbehaving {
                interval_ms: 10,
                store: "mine",
            },
            vec![Stored::unnamed()],
        )
        .to("out", Produced::with(s(), s()));
    let err = b.build().unwrap_err();
    assert!(err.to_string().contains("needs a name"), "{err}");
}

#[test]
fn a_processor_forwards_to_the_dsl_and_its_store_is_queryable() {
    let mut d = driver(misbehaving(10, "mine"));
    kv(&mut d, "events", "k", "v", 1);
    assert_eq!(pairs(&mut d, "out"), vec![("k".into(), "v".into())]);
    assert_eq!(
        d.get("mine", &s(), &serdes::string(), &"k".to_string()),
        Some("v".to_string())
    );
}
