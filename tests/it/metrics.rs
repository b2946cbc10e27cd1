//! The broker's admin listener: `/metrics` moves per partition with what
//! producers and consumers do, request latencies per API, group lag, disk;
//! `/v1/status/ready`; all with the schema registry and connect off.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Message};

use crate::harness::{create_topic, metric, TestBroker};

fn partition_series(name: &str, topic: &str, partition: i32) -> String {
    format!("{name}{{topic=\"{topic}\",partition=\"{partition}\"}}")
}

/// The sum of `name` over both partitions of `topic`.
fn both(page: &str, name: &str, topic: &str) -> f64 {
    (0..2)
        .map(|p| {
            metric(page, &partition_series(name, topic, p))
                .unwrap_or_else(|| panic!("no {name} for {topic}-{p} in\n{page}"))
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_partition_traffic_latencies_and_group_lag_move_with_the_clients() {
    let broker = TestBroker::start_alone(&[]);
    create_topic(&broker, "metered", 2, &[]).await;
    let page = broker.metrics().await;
    assert_eq!(
        both(&page, "runnel_partition_records_in_total", "metered"),
        0.0
    );
    assert_eq!(
        both(&page, "runnel_partition_log_end_offset", "metered"),
        0.0
    );

    let producer = broker.producer(&[]);
    let mut produced_bytes = 0;
    for i in 0..300 {
        let value = format!("value-{i}-{}", "x".repeat(i % 40));
        produced_bytes += value.len();
        producer
            .send(
                FutureRecord::to("metered")
                    .key(&format!("k{i}"))
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let page = broker.metrics().await;
    assert_eq!(
        both(&page, "runnel_partition_records_in_total", "metered"),
        300.0
    );
    assert_eq!(
        both(&page, "runnel_partition_log_end_offset", "metered"),
        300.0
    );
    assert_eq!(
        both(&page, "runnel_partition_high_watermark", "metered"),
        300.0
    );
    assert_eq!(
        both(&page, "runnel_partition_log_start_offset", "metered"),
        0.0
    );
    let bytes_in = both(&page, "runnel_partition_bytes_in_total", "metered");
    assert!(
        bytes_in > produced_bytes as f64,
        "{bytes_in} bytes for {produced_bytes} of values"
    );
    assert!(both(&page, "runnel_partition_log_size_bytes", "metered") >= bytes_in);
    assert_eq!(
        both(&page, "runnel_partition_records_out_total", "metered"),
        0.0
    );
    assert_eq!(both(&page, "runnel_partition_leader", "metered"), 2.0);
    assert_eq!(
        metric(&page, "runnel_broker_under_replicated_partitions"),
        Some(0.0)
    );

    // Request latency: a histogram per API, cumulative buckets ending in
    // +Inf = count, and Produce among them.
    let produce_count = metric(
        &page,
        "runnel_broker_request_latency_seconds_count{api=\"Produce\"}",
    )
    .unwrap_or_else(|| panic!("no Produce latency in\n{page}"));
    assert!(produce_count >= 1.0);
    let buckets: Vec<f64> = page
        .lines()
        .filter(|l| l.starts_with("runnel_broker_request_latency_seconds_bucket{api=\"Produce\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(buckets.len() > 10, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(*buckets.last().unwrap(), produce_count);
    assert!(metric(&page, "runnel_broker_disk_free_bytes").unwrap() > 0.0);
    assert!(metric(&page, "runnel_broker_disk_total_bytes").unwrap() > 0.0);

    // A group consumes everything and commits: records out move, lag 0.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", "metered-group")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&["metered"]).unwrap();
    let mut seen = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "consumed {seen} of 300"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            assert!(m.payload().is_some());
            seen += 1;
        }
    }
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
    let page = broker.metrics().await;
    assert_eq!(
        both(&page, "runnel_partition_records_out_total", "metered"),
        300.0
    );
    assert!(both(&page, "runnel_partition_bytes_out_total", "metered") >= bytes_in);
    let lag = |page: &str| {
        (0..2)
            .map(|p| {
                metric(
                    page,
                    &format!(
                        "runnel_group_lag{{group=\"metered-group\",topic=\"metered\",partition=\"{p}\"}}"
                    ),
                )
                .unwrap_or_else(|| panic!("no lag of metered-{p} in\n{page}"))
            })
            .sum::<f64>()
    };
    assert_eq!(lag(&page), 0.0);
    let committed: f64 = (0..2)
        .map(|p| {
            let series = format!(
                "runnel_group_committed_offset{{group=\"metered-group\",topic=\"metered\",partition=\"{p}\"}}"
            );
            metric(&page, &series).unwrap_or_else(|| panic!("no {series} in\n{page}"))
        })
        .sum();
    assert_eq!(committed, 300.0);

    // 25 more records the group has not read: its lag is 25.
    for i in 0..25 {
        producer
            .send(
                FutureRecord::<(), _>::to("metered").payload(&format!("late-{i}")),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let page = broker.metrics().await;
    assert_eq!(lag(&page), 25.0);
    assert_eq!(
        metric(&page, "runnel_group_lag_sum{group=\"metered-group\"}"),
        Some(25.0)
    );
    let fetches = metric(
        &page,
        "runnel_broker_request_latency_seconds_count{api=\"Fetch\"}",
    );
    assert!(fetches.is_some_and(|n| n >= 1.0), "{page}");

    // The readiness probe, on the same listener.
    let ready = reqwest::get(format!("{}/v1/status/ready", broker.admin_url()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&ready.text().await.unwrap()).unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["kafka"], broker.addr());
    assert!(
        body["schema_registry"].is_null() && body["connect"].is_null(),
        "{body}"
    );
}

#[test]
fn the_admin_listener_can_be_turned_off_and_a_taken_port_fails_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["serve", "--data-dir"])
        .arg(tmp.path())
        .args(["--kafka-addr", "127.0.0.1:0", "--admin-addr", &taken_addr])
        .args(["--registry-addr", "off", "--connect-addr", "off"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {taken_addr} for the admin API")),
        "{err}"
    );
}

/// Metric families a page declares (`# TYPE name kind`).
fn families(page: &str) -> std::collections::BTreeSet<String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// The `runnel_...` names in the first cells of `## section`'s table rows
/// of docs/metrics.md.
fn documented_metrics(docs: &str, section: &str) -> std::collections::BTreeSet<String> {
    let start = docs
        .find(&format!("\n## {section}\n"))
        .unwrap_or_else(|| panic!("docs/metrics.md has no section ## {section}"));
    let body = &docs[start + section.len() + 5..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    body.lines()
        .filter_map(|l| l.strip_prefix("| `runnel_"))
        .filter_map(|l| l.split('`').next())
        .map(|name| format!("runnel_{name}"))
        .collect()
}

/// One server for both checks below: the dashboard and the metrics
/// reference are held against the pages a broker with the registry and
/// the connect worker serves (with a topic, a group and requests made, so
/// every family has its header).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_and_docs_metrics_md_match_what_the_servers_export() {
    let broker = TestBroker::start();
    let producer = broker.producer(&[]);
    producer
        .send(
            FutureRecord::to("documented").key("k").payload("v"),
            Duration::from_secs(10),
        )
        .await
        .expect("produce");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", "documented-group")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("documented", 0, rdkafka::Offset::Offset(1))
        .unwrap();
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    let mut pages = vec![("Broker", broker.metrics().await)];
    for (section, base) in [
        ("Connect worker", broker.connect_url()),
        ("Schema registry", broker.registry_url()),
    ] {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let page = loop {
            match reqwest::get(format!("{base}/metrics")).await {
                Ok(r) if r.status().is_success() => break r.text().await.unwrap(),
                other => {
                    assert!(std::time::Instant::now() < deadline, "{base}: {other:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        pages.push((section, page));
    }
    let mut known = std::collections::BTreeSet::new();
    for (_, page) in &pages {
        known.extend(families(page));
    }

    // docs/metrics.md: each server's section names exactly its families.
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    let mut problems = Vec::new();
    for (section, page) in &pages {
        let exported = families(page);
        let documented = documented_metrics(&docs, section);
        for name in exported.difference(&documented) {
            problems.push(format!(
                "## {section}: `{name}` is exported, not documented"
            ));
        }
        for name in documented.difference(&exported) {
            problems.push(format!(
                "## {section}: `{name}` is documented, not exported"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/metrics.md:\n{}",
        problems.join("\n")
    );

    // The dashboard asks only for exported families.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dashboards/runnel-grafana.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["definition"].as_str() {
            exprs.push(q.to_string());
        }
    }
    assert!(exprs.len() > 20, "{exprs:?}");
    let mut asked = std::collections::BTreeSet::new();
    for expr in &exprs {
        let bytes = expr.as_bytes();
        let mut i = 0;
        while let Some(at) = expr[i..].find("runnel_") {
            let start = i + at;
            let end = start
                + expr[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(expr.len() - start);
            let preceded =
                start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            if !preceded {
                asked.insert(expr[start..end].to_string());
            }
            i = end;
        }
    }
    let missing: Vec<&String> = asked
        .iter()
        .filter(|name| {
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| known.contains(*base));
            family.is_none() && !known.contains(*name)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard asks for {missing:?}; exported: {known:?}"
    );
    assert!(asked.len() >= 20, "{asked:?}");
}
