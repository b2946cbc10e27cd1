//! Interactive queries: what a store answers (keys, ranges, windows,
//! sessions) read straight from the test driver, and the HTTP routes an
//! instance serves them on (key text read by the store's serde, JSON
//! values, errors, the redirect to a key's owner).

mod common;

use std::sync::{mpsc, Arc};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use runnel_streams::http::{self, Job, Service};
use runnel_streams::query::Instance;
use runnel_streams::{
    serdes, Consumed, Query, QueryError, SessionWindows, Stored, StreamsBuilder, TimeWindows,
    Topology,
};
use serde_json::{json, Value};
use tower::ServiceExt;

/// Words counted per word (`counts`), per word and 10 s window
/// (`windowed`, a minute of grace), and per word and session with a 5 s gap (`sessions`).
fn topology() -> Topology {
    let b = StreamsBuilder::new();
    let words = b
        .stream("words", Consumed::with(s(), s()))
        .select_key(|_, w: &String| w.clone());
    let grouped = words.group_by_key(s(), s());
    grouped.count(Stored::as_("counts"));
    grouped
        .windowed_by(TimeWindows::of_size_with_grace(10_000, 60_000))
        .count(Stored::as_("windowed"));
    grouped
        .windowed_by_session(SessionWindows::with_inactivity_gap_and_no_grace(5_000))
        .count(Stored::as_("sessions"));
    b.build().expect("a valid topology")
}

fn fed() -> runnel_streams::TopologyTestDriver {
    let mut d = runnel_streams::TopologyTestDriver::new(topology(), APP);
    for (word, ts) in [
        ("bob", 1_000),
        ("alice", 2_000),
        ("alice", 3_000),
        ("carol", 4_000),
        ("alice", 12_000),
        ("bob", 30_000),
    ] {
        kv(&mut d, "words", "", word, ts);
    }
    d
}

fn key_query(store: &str, key: &str, from_ms: i64, to_ms: i64) -> Query {
    Query::Key {
        store: store.into(),
        key: key.as_bytes().to_vec(),
        from_ms,
        to_ms,
    }
}

/// (start, end, count) of each window or session a query found.
fn spans(found: &Value) -> Vec<(i64, i64, i64)> {
    found
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["start"].as_i64().unwrap(),
                w["end"].as_i64().unwrap(),
                w["value"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_key_reads_its_count_and_a_range_walks_the_keys_in_order() {
    let d = fed();
    let found = d.query(&key_query("counts", "alice", 0, 0)).unwrap();
    assert_eq!(found[0]["key"], json!("alice"));
    assert_eq!(found[0]["value"], json!(3));
    assert_eq!(
        d.query(&key_query("counts", "dave", 0, 0)).unwrap(),
        json!([])
    );
    let all = d
        .query(&Query::Range {
            store: "counts".into(),
            from: None,
            to: None,
            limit: 100,
        })
        .unwrap();
    let keys: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["alice", "bob", "carol"]);
    // [from, to), and a limit.
    let some = d
        .query(&Query::Range {
            store: "counts".into(),
            from: Some(b"b".to_vec()),
            to: Some(b"carol".to_vec()),
            limit: 100,
        })
        .unwrap();
    assert_eq!(some, json!([{"key": "bob", "value": 2, "task": "1_0"}]));
    let first = d
        .query(&Query::Range {
            store: "counts".into(),
            from: None,
            to: None,
            limit: 1,
        })
        .unwrap();
    assert_eq!(first.as_array().unwrap().len(), 1);
}

#[test]
fn a_window_fetch_answers_the_windows_whose_start_is_in_the_bounds() {
    let d = fed();
    let all = d
        .query(&key_query("windowed", "alice", i64::MIN, i64::MAX))
        .unwrap();
    let windows = spans(&all);
    assert_eq!(windows, vec![(0, 10_000, 2), (10_000, 20_000, 1)]);
    let bob = d
        .query(&key_query("windowed", "bob", i64::MIN, i64::MAX))
        .unwrap();
    assert_eq!(bob.as_array().unwrap().len(), 2, "{bob}");
    let middle = d
        .query(&key_query("windowed", "alice", 10_000, 29_999))
        .unwrap();
    assert_eq!(middle.as_array().unwrap().len(), 1);
    assert_eq!(middle[0]["start"], json!(10_000));
}

#[test]
fn a_session_fetch_answers_each_session_with_its_bounds() {
    let d = fed();
    let sessions = d
        .query(&key_query("sessions", "alice", i64::MIN, i64::MAX))
        .unwrap();
    let bounds = spans(&sessions);
    assert_eq!(bounds, vec![(2_000, 3_000, 2), (12_000, 12_000, 1)]);
}

#[test]
fn an_unknown_store_and_key_bounds_on_a_window_store_are_refused() {
    let d = fed();
    assert_eq!(
        d.query(&key_query("nope", "a", 0, 0)),
        Err(QueryError::UnknownStore("nope".into()))
    );
    let bounded = d.query(&Query::Range {
        store: "windowed".into(),
        from: Some(b"a".to_vec()),
        to: None,
        limit: 10,
    });
    assert!(
        matches!(bounded, Err(QueryError::BadRequest(_))),
        "{bounded:?}"
    );
    let stores = d.query(&Query::Stores).unwrap();
    let names: Vec<&str> = stores
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"counts") && names.contains(&"sessions"));
}

/// The driver on a thread of its own (it is not `Send`), answering the
/// service's queries the way the stream thread does.
fn service(instances: Vec<Instance>, me: Option<&str>, topology: Topology) -> Arc<Service> {
    let (jobs, queue) = mpsc::channel::<Job>();
    let t = topology.clone();
    std::thread::spawn(move || {
        let mut d = runnel_streams::TopologyTestDriver::new(t, APP);
        for (word, ts) in [("alice", 1_000), ("alice", 2_000), ("bob", 3_000)] {
            kv(&mut d, "words", "", word, ts);
        }
        for job in queue.iter() {
            let _ = job.reply.send(d.query(&job.query));
        }
    });
    Arc::new(Service::new(
        APP.into(),
        me.map(str::to_string),
        topology,
        vec![1; 4],
        jobs,
        Box::new(move || Ok(instances.clone())),
        Box::new(|| "runnel_streams_records_processed_total 3\n".to_string()),
    ))
}

async fn get(service: &Arc<Service>, uri: &str) -> (StatusCode, Option<String>, Value) {
    let response = http::router(service.clone())
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, location, value)
}

#[tokio::test]
async fn the_http_routes_answer_keys_ranges_windows_and_errors_as_json() {
    let s = service(Vec::new(), Some("127.0.0.1:7001"), topology());
    let (status, _, body) = get(&s, "/stores/counts/alice").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["value"], json!(2));
    let (status, _, body) = get(&s, "/stores/counts?limit=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!([{"key": "alice", "value": 2, "task": "1_0"}]));
    let (status, _, body) = get(&s, "/stores/windowed/alice?from=0&to=0").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["windows"][0]["end"], json!(10_000));
    assert_eq!(body["windows"][0]["value"], json!(2));
    // No owner elsewhere: a missing key is a 404 with a JSON body.
    let (status, _, body) = get(&s, "/stores/counts/zed").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error_code"], json!(404));
    assert!(body["message"].as_str().unwrap().contains("zed"));
    let (status, _, body) = get(&s, "/stores/nope/x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["message"].as_str().unwrap().contains("nope"));
    for bad in [
        "/stores/counts?limit=0",
        "/stores/counts?limit=lots",
        "/stores/windowed/alice?from=yesterday",
        "/stores/windowed?from=a",
    ] {
        let (status, _, body) = get(&s, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error_code"], json!(400), "{bad}");
    }
    let (status, _, body) = get(&s, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.as_str().unwrap().contains("records_processed_total 3"));
    let (status, _, body) = get(&s, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["application_id"], json!(APP));
}

#[tokio::test]
async fn a_key_held_elsewhere_is_redirected_to_its_owner_once() {
    let topology = topology();
    // The counts' sub-topology reads the repartition topic: whoever has
    // its partition 0 owns every key here (one partition).
    let sub = topology
        .subtopologies()
        .iter()
        .find(|s| s.stores.iter().any(|n| n == "counts"))
        .unwrap();
    let input = sub.sources[0].resolve(APP);
    let other = Instance {
        server: Some("10.0.0.2:7002".into()),
        member_id: "m2".into(),
        client_host: "/10.0.0.2".into(),
        partitions: vec![(input, 0)],
    };
    let s = service(vec![other], Some("127.0.0.1:7001"), topology);
    let (status, location, body) = get(&s, "/stores/counts/zed%20z").await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT, "{body}");
    assert_eq!(
        location.as_deref(),
        Some("http://10.0.0.2:7002/stores/counts/zed%20z?local=true")
    );
    // Asked for its own keys only, the instance answers 404 instead.
    let (status, location, _) = get(&s, "/stores/counts/zed?local=true").await;
    assert_eq!((status, location), (StatusCode::NOT_FOUND, None));
    // A key it holds is answered here whoever owns it by the hash.
    let (status, _, body) = get(&s, "/stores/counts/bob").await;
    assert_eq!((status, body["value"].clone()), (StatusCode::OK, json!(1)));
    let (status, _, body) = get(&s, "/stores/counts/zed/owner").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["server"], json!("10.0.0.2:7002"));
    assert_eq!(body["local"], json!(false));
    assert_eq!(body["partition"], json!(0));
    let (_, _, body) = get(&s, "/instances").await;
    assert_eq!(body[0]["server"], json!("10.0.0.2:7002"));
}

#[test]
fn keys_in_urls_are_read_by_the_stores_serde() {
    // A store keyed by longs: "42" is the 8-byte big-endian 42.
    let b = StreamsBuilder::new();
    b.stream("n", Consumed::with(l(), s()))
        .group_by_key(l(), s())
        .count(Stored::as_("by-number"));
    let t = b.build().unwrap();
    let codec = runnel_streams::query::store_codec(&t, "by-number").unwrap();
    assert_eq!(codec.key_from_text("42").unwrap(), 42i64.to_be_bytes());
    assert!(codec.key_from_text("forty-two").is_err());
    assert_eq!(codec.key_to_json(&42i64.to_be_bytes()), json!(42));
    // JSON keys: JSON text, or a bare word as a JSON string.
    let j = runnel_streams::query::codec(serdes::json::<String>(), l(), None);
    assert_eq!(j.key_from_text("alice").unwrap(), b"\"alice\"");
    assert_eq!(j.key_from_text("\"alice\"").unwrap(), b"\"alice\"");
    // Bytes no serde can read show as hex.
    assert_eq!(codec.value_to_json(&[0xff, 0x00]), json!("0xff00"));
}

#[test]
fn a_sliding_window_fetch_shows_the_aggregate_without_its_timestamp() {
    let b = StreamsBuilder::new();
    b.stream("words", Consumed::with(s(), s()))
        .group_by_key(s(), s())
        .windowed_by_sliding(runnel_streams::SlidingWindows::of_time_difference_and_no_grace(5_000))
        .count(Stored::as_("sliding"));
    let mut d = runnel_streams::TopologyTestDriver::new(b.build().unwrap(), APP);
    kv(&mut d, "words", "k", "x", 8_000);
    kv(&mut d, "words", "k", "y", 9_200);
    let found = d
        .query(&key_query("sliding", "k", i64::MIN, i64::MAX))
        .unwrap();
    let windows = spans(&found);
    // [3000, 8000] holds x; [4200, 9200] both; [8001, 13001] y.
    assert_eq!(
        windows,
        vec![(3_000, 8_000, 1), (4_200, 9_200, 2), (8_001, 13_001, 1)]
    );
}
