//! The client commands as a user of rpk would drive them: consume's JSON
//! records and offset syntax, several topics and regexes, produce's input
//! formats, tombstones and Avro through the schema registry, `--format`
//! on list and describe commands, topic and group administration, the CLI
//! profile and shell completion. Every test runs the real binary.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rdkafka::producer::FutureRecord;
use serde_json::Value;

use crate::harness::{TestBroker, BIN};

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every JSON document printed (one per line, or pretty over several).
fn json_docs(text: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .map(|v| v.expect("valid JSON"))
        .collect()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn offsets(records: &[Value]) -> Vec<i64> {
    records
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect()
}

/// 2023-11-14T22:13:20Z.
const BASE_MS: i64 = 1_700_000_000_000;

#[test]
fn consume_prints_json_records_and_starts_where_rpk_offsets_say() {
    let broker = TestBroker::start();
    ok(&broker.cli(&["topic", "create", "events", "-p", "1"], None));
    // %T timestamps one second apart, a key and a header per record.
    let input: String = (0..10)
        .map(|i| format!("{}\tk{i}\tsrc=x{i}\tvalue {i}\n", BASE_MS + i * 1000))
        .collect();
    ok(&broker.cli(
        &["produce", "events", "-f", "%T\\t%k\\t%h\\t%v\\n"],
        Some(&input),
    ));

    let all = json_docs(&ok(
        &broker.cli(&["consume", "events", "-o", "start", "-e"], None)
    ));
    assert_eq!(offsets(&all), (0..10).collect::<Vec<_>>());
    let first = &all[0];
    assert_eq!(first["topic"], "events");
    assert_eq!(first["key"], "k0");
    assert_eq!(first["value"], "value 0");
    assert_eq!(first["partition"], 0);
    assert_eq!(first["timestamp"], BASE_MS);
    assert_eq!(
        first["headers"],
        serde_json::json!([{"key": "src", "value": "x0"}])
    );

    let from = |offset: &str, extra: &[&str]| -> Vec<i64> {
        let mut args = vec!["consume", "events", "-o", offset, "-e"];
        args.extend_from_slice(extra);
        offsets(&json_docs(&ok(&broker.cli(&args, None))))
    };
    assert_eq!(from("-3", &[]), vec![7, 8, 9], "-N: N before the end");
    assert_eq!(from("-1", &[]), vec![9], "-o -1 as typed");
    assert_eq!(from("+8", &[]), vec![8, 9], "+N: N after the start");
    assert_eq!(from("5", &["-n", "2"]), vec![5, 6], "an absolute offset");
    assert_eq!(from("-30", &[]).len(), 10, "not before the start");
    assert_eq!(
        from(&format!("@{}", BASE_MS + 6_500), &[]),
        vec![7, 8, 9],
        "@ms: the first record at or after it"
    );
    assert_eq!(
        from("@2023-11-14T22:13:25Z", &[]),
        vec![5, 6, 7, 8, 9],
        "@RFC 3339"
    );
    assert_eq!(from("end", &[]), Vec::<i64>::new());
    assert_eq!(from("9", &["-B"]), vec![9], "-o wins over -B, as before");

    // Pretty-printed: the same records over several lines.
    let pretty = ok(&broker.cli(
        &["consume", "events", "-o", "-2", "-e", "--pretty-print"],
        None,
    ));
    assert!(pretty.lines().count() > 2 * 5, "{pretty}");
    assert_eq!(offsets(&json_docs(&pretty)), vec![8, 9]);

    // The text format stays for scripts that used it.
    let text = ok(&broker.cli(&["consume", "events", "-o", "8", "-e", "--print-key"], None));
    assert_eq!(text, "k8\tvalue 8\nk9\tvalue 9\n");
    let text = ok(&broker.cli(
        &["consume", "events", "-o", "9", "-e", "--format", "text"],
        None,
    ));
    assert_eq!(text, "value 9\n");

    // Bad offsets: one readable line.
    let e = err(&broker.cli(&["consume", "events", "-o", "soon"], None));
    assert!(e.contains("'soon' is not an offset"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_null_payloads_print_as_base64_and_null() {
    let broker = TestBroker::start();
    let producer = broker.producer(&[]);
    producer
        .send(
            FutureRecord::to("raw")
                .key(&[0xffu8, 0x00][..])
                .payload(&[0xc3u8, 0x28][..]),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    producer
        .send(
            FutureRecord::<str, [u8]>::to("raw").key("gone"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let out =
        tokio::task::block_in_place(|| ok(&broker.cli(&["consume", "raw", "-B", "-e"], None)));
    let records = json_docs(&out);
    assert_eq!(records[0]["key"], "/wA=");
    assert_eq!(records[0]["key_encoding"], "base64");
    assert_eq!(records[0]["value"], "wyg=");
    assert_eq!(records[0]["value_encoding"], "base64");
    assert_eq!(records[1]["key"], "gone");
    assert!(records[1]["value"].is_null(), "{out}");
    assert!(records[1].get("value_encoding").is_none());
}

#[test]
fn produce_reads_formats_writes_tombstones_and_prints_where_records_went() {
    let broker = TestBroker::start();
    // The topic does not exist: the broker creates it, and the CLI says so.
    let out = broker.cli(
        &[
            "produce",
            "kv",
            "-f",
            "%k=%v\\n",
            "--tombstone",
            "--print-offsets",
        ],
        Some("a=1\nb=2\na=\n"),
    );
    let printed = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("created topic kv"), "{stderr}");
    let produced = json_docs(&printed);
    assert_eq!(produced.len(), 3);
    for (i, p) in produced.iter().enumerate() {
        assert_eq!(p["topic"], "kv");
        assert!(p["offset"].as_i64().unwrap() >= 0, "{i}: {p}");
    }
    let records = json_docs(&ok(&broker.cli(&["consume", "kv", "-B", "-e"], None)));
    let mut got: Vec<(String, Value)> = records
        .iter()
        .map(|r| (r["key"].as_str().unwrap().to_string(), r["value"].clone()))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.is_null().cmp(&b.1.is_null())));
    assert_eq!(
        got,
        vec![
            ("a".to_string(), Value::from("1")),
            ("a".to_string(), Value::Null),
            ("b".to_string(), Value::from("2")),
        ]
    );
    // The printed offsets are the records' own.
    for p in &produced {
        assert!(records
            .iter()
            .any(|r| r["partition"] == p["partition"] && r["offset"] == p["offset"]));
    }
    // A second run does not create the topic again.
    let out = broker.cli(&["produce", "kv"], Some("c\n"));
    ok(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("created topic"));

    // %t: records name their own topic; %p their partition.
    ok(&broker.cli(&["topic", "create", "two", "-p", "2"], None));
    let out = broker.cli(
        &["produce", "-f", "%t %p %v\\n", "--print-offsets"],
        Some("two 1 x\ntwo 0 y\nkv 0 z\n"),
    );
    let produced = json_docs(&ok(&out));
    let placed: Vec<(String, i64)> = produced
        .iter()
        .map(|p| {
            (
                p["topic"].as_str().unwrap().to_string(),
                p["partition"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        placed,
        vec![("two".into(), 1), ("two".into(), 0), ("kv".into(), 0)],
        "in input order"
    );

    // Bad formats and input: one line naming the problem.
    let e = err(&broker.cli(&["produce", "kv", "-f", "%k%v"], Some("x\n")));
    assert!(e.contains("delimiter"), "{e}");
    let e = err(&broker.cli(&["produce", "kv", "-f", "%p %v\\n"], Some("zero x\n")));
    assert!(e.contains("record 1") && e.contains("partition"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn consume_reads_several_topics_and_topics_matching_a_regex() {
    let broker = TestBroker::start();
    for (topic, n) in [("logs-a", 3), ("logs-b", 2), ("metrics", 4)] {
        let input: String = (0..n).map(|i| format!("{topic} {i}\n")).collect();
        ok(&broker.cli(&["produce", topic], Some(&input)));
    }
    let count_by_topic = |records: &[Value]| {
        let mut m = std::collections::BTreeMap::new();
        for r in records {
            *m.entry(r["topic"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
        m.into_iter().collect::<Vec<(String, i32)>>()
    };
    // Both topics have a partition 0: -e ends only when both are read.
    let out = ok(&broker.cli(&["consume", "logs-a", "metrics", "-B", "-e"], None));
    assert_eq!(
        count_by_topic(&json_docs(&out)),
        vec![("logs-a".into(), 3), ("metrics".into(), 4)]
    );
    let out = ok(&broker.cli(&["consume", "logs-.*", "--regex", "-B", "-e"], None));
    assert_eq!(
        count_by_topic(&json_docs(&out)),
        vec![("logs-a".into(), 3), ("logs-b".into(), 2)]
    );
    // As a group member too.
    let out = ok(&broker.cli(
        &["consume", "logs-.*", "--regex", "-B", "-e", "--group", "g"],
        None,
    ));
    assert_eq!(json_docs(&out).len(), 5);
    let e = err(&broker.cli(&["consume", "nothing-.*", "--regex", "-e"], None));
    assert!(e.contains("no topic matches"), "{e}");
    let e = err(&broker.cli(&["consume", "logs-a", "--group", "g", "-o", "-1"], None));
    assert!(e.contains("group seek"), "{e}");
}

const USER_SCHEMA: &str = r#"{"type":"record","name":"User","fields":[{"name":"name","type":"string"},{"name":"age","type":"int"}]}"#;

#[test]
fn produce_encodes_json_as_avro_and_consume_decodes_it_through_the_registry() {
    let broker = TestBroker::start();
    let out = ok(&broker.cli(
        &["schema", "register", "users-value", "-"],
        Some(USER_SCHEMA),
    ));
    assert!(out.contains("schema id"), "{out}");
    let id = json(&ok(
        &broker.cli(&["schema", "get", "users-value", "--format", "json"], None)
    ))["id"]
        .as_i64()
        .unwrap();
    ok(&broker.cli(
        &["produce", "users", "--subject", "users-value"],
        Some("{\"name\":\"ann\",\"age\":31}\n"),
    ));
    ok(&broker.cli(
        &["produce", "users", "--schema-id", &id.to_string()],
        Some("{\"name\":\"bob\",\"age\":42}\n"),
    ));
    let records = json_docs(&ok(&broker.cli(
        &["consume", "users", "-B", "-e", "--use-schema-registry"],
        None,
    )));
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[0]["value"],
        serde_json::json!({"name": "ann", "age": 31})
    );
    assert_eq!(
        records[1]["value"],
        serde_json::json!({"name": "bob", "age": 42})
    );
    assert_eq!(records[0]["value_schema_id"], id);
    // Without the flag, the wire format is printed as it is.
    let raw = json_docs(&ok(
        &broker.cli(&["consume", "users", "-B", "-e", "-n", "1"], None)
    ));
    assert!(raw[0]["value"].as_str().unwrap().starts_with('\u{0}'));
    // A value that does not fit the schema is refused before producing.
    let e = err(&broker.cli(
        &["produce", "users", "--subject", "users-value"],
        Some("{\"name\":\"eve\"}\n"),
    ));
    assert!(e.contains("line 1") && e.contains("age"), "{e}");
    // --registry (the older name) still works.
    ok(&broker.cli(
        &["schema", "list", "--registry", &broker.registry_url()],
        None,
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_schema_registry_decodes_the_key_the_value_or_both() {
    let broker = TestBroker::start();
    let key_id = tokio::task::block_in_place(|| {
        ok(&broker.cli(
            &["schema", "register", "pairs-key", "-"],
            Some("\"string\""),
        ));
        json(&ok(&broker.cli(
            &["schema", "get", "pairs-key", "--format", "json"],
            None,
        )))["id"]
            .as_i64()
            .unwrap()
    });
    // An Avro string "k" (length 1 zigzag-encoded as 2, then the byte),
    // framed with magic byte 0 and the schema id.
    let mut key = vec![0u8];
    key.extend_from_slice(&(key_id as i32).to_be_bytes());
    key.extend_from_slice(&[2, b'k']);
    broker
        .producer(&[])
        .send(
            FutureRecord::to("pairs").key(&key[..]).payload("plain"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    tokio::task::block_in_place(|| {
        let read = |part: &str| {
            json_docs(&ok(&broker.cli(
                &[
                    "consume",
                    "pairs",
                    "-B",
                    "-e",
                    &format!("--use-schema-registry={part}"),
                ],
                None,
            )))
            .remove(0)
        };
        let k = read("key");
        assert_eq!(k["key"], "k");
        assert_eq!(k["key_schema_id"], key_id);
        assert_eq!(
            k["value"], "plain",
            "a value not in the wire format stays as it is"
        );
        let v = read("value");
        assert!(v.get("key_schema_id").is_none(), "{v}");
        assert_eq!(read("both")["key"], "k");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_describe_commands_print_json_and_yaml() {
    let broker = TestBroker::start();
    tokio::task::block_in_place(|| {
        ok(&broker.cli(
            &[
                "topic",
                "create",
                "orders",
                "-p",
                "3",
                "-c",
                "retention.ms=60000",
            ],
            None,
        ));
        ok(&broker.cli(&["produce", "orders", "-K", ":"], Some("a:1\nb:2\n")));
        ok(&broker.cli(
            &["consume", "orders", "-B", "-e", "--group", "billing"],
            None,
        ));

        let topics = json(&ok(
            &broker.cli(&["topic", "list", "--format", "json"], None)
        ));
        assert_eq!(
            topics,
            serde_json::json!([{"name": "orders", "partitions": 3, "internal": false}])
        );
        let yaml: serde_yaml::Value = serde_yaml::from_str(&ok(
            &broker.cli(&["topic", "list", "--format", "yaml"], None)
        ))
        .unwrap();
        assert_eq!(yaml[0]["name"].as_str(), Some("orders"));

        let d = json(&ok(
            &broker.cli(&["topic", "describe", "orders", "--json"], None)
        ));
        assert_eq!(d["partitions"].as_array().unwrap().len(), 3);
        let ends: i64 = d["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["end_offset"].as_i64().unwrap())
            .sum();
        assert_eq!(ends, 2);
        assert!(d["configs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "retention.ms"
                && c["value"] == "60000"
                && c["set_here"] == true));

        let groups = json(&ok(
            &broker.cli(&["group", "list", "--format", "json"], None)
        ));
        assert_eq!(groups[0]["group"], "billing");
        assert_eq!(groups[0]["state"], "Empty");
        let g: serde_yaml::Value = serde_yaml::from_str(&ok(
            &broker.cli(&["group", "describe", "billing", "--format", "yaml"], None)
        ))
        .unwrap();
        assert_eq!(g["total_lag"].as_i64(), Some(0));
        assert!(g["partitions"].as_sequence().is_some_and(|p| !p.is_empty()));

        let info = json(&ok(
            &broker.cli(&["cluster", "info", "--format", "json"], None)
        ));
        assert!(info["cluster_id"].is_string());
        assert_eq!(info["brokers"].as_array().unwrap().len(), 1);
        assert_eq!(info["brokers"][0]["address"], broker.addr());
        let health = json(&ok(
            &broker.cli(&["cluster", "health", "--format", "json"], None)
        ));
        assert_eq!(health["healthy"], true, "{health}");
        assert_eq!(health["down_brokers"], serde_json::json!([]));
        let status = json(&ok(
            &broker.cli(&["cluster", "status", "--format", "json"], None)
        ));
        assert_eq!(status["summary"]["brokers"], 1);

        ok(&broker.cli(&["schema", "register", "u-value", "-"], Some(USER_SCHEMA)));
        let subjects = json(&ok(
            &broker.cli(&["schema", "list", "--format", "json"], None)
        ));
        assert_eq!(subjects, serde_json::json!(["u-value"]));
        let schema = json(&ok(
            &broker.cli(&["schema", "get", "u-value", "--format", "json"], None)
        ));
        assert_eq!(
            schema["schema"]["name"], "User",
            "the schema as a structure"
        );
    });
}

#[test]
fn broker_configs_are_read_and_set_from_the_cli() {
    let broker = TestBroker::start();
    ok(&broker.cli(
        &["cluster", "config", "set", "log.retention.ms=7200000"],
        None,
    ));
    let v = ok(&broker.cli(&["cluster", "config", "get", "log.retention.ms"], None));
    assert_eq!(v, "7200000\n");
    let all = json(&ok(
        &broker.cli(&["cluster", "config", "get", "--format", "json"], None)
    ));
    let entry = all
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "log.retention.ms")
        .cloned()
        .unwrap();
    assert_eq!(entry["source"], "dynamic cluster default", "{entry}");
    let e = err(&broker.cli(&["cluster", "config", "set", "log.retention.ms=soon"], None));
    assert!(e.contains("log.retention.ms"), "{e}");
    ok(&broker.cli(&["cluster", "config", "set", "log.retention.ms="], None));
    let v = ok(&broker.cli(&["cluster", "config", "get", "log.retention.ms"], None));
    assert_eq!(v, "604800000\n", "back to the default");
}

#[test]
fn topics_grow_lose_their_oldest_records_and_go_by_regex() {
    let broker = TestBroker::start();
    ok(&broker.cli(&["topic", "create", "t-1", "-p", "1"], None));
    ok(&broker.cli(&["topic", "create", "t-2", "-p", "1"], None));
    ok(&broker.cli(&["topic", "create", "keep", "-p", "1"], None));
    let out = ok(&broker.cli(&["topic", "add-partitions", "t-1", "--num", "2"], None));
    assert!(out.contains("1 -> 3 partitions"), "{out}");
    let d = json(&ok(
        &broker.cli(&["topic", "describe", "t-1", "--format", "json"], None)
    ));
    assert_eq!(d["partitions"].as_array().unwrap().len(), 3);

    let input: String = (0..10).map(|i| format!("v{i}\n")).collect();
    ok(&broker.cli(&["produce", "t-2"], Some(&input)));
    let trimmed = json(&ok(&broker.cli(
        &[
            "topic",
            "trim-prefix",
            "t-2",
            "-o",
            "-4",
            "--format",
            "json",
        ],
        None,
    )));
    assert_eq!(trimmed[0]["low_watermark"], 6);
    let left = json_docs(&ok(&broker.cli(&["consume", "t-2", "-B", "-e"], None)));
    assert_eq!(offsets(&left), vec![6, 7, 8, 9]);
    let e = err(&broker.cli(&["topic", "trim-prefix", "t-2", "-p", "7", "-o", "1"], None));
    assert!(e.contains("no partition 7"), "{e}");

    let out = ok(&broker.cli(&["topic", "delete", "t-.*", "--regex"], None));
    assert_eq!(out, "deleted topic t-1\ndeleted topic t-2\n");
    let names = json(&ok(&broker.cli(&["topic", "list", "--json"], None)));
    assert_eq!(
        names,
        serde_json::json!([{"name": "keep", "partitions": 1, "internal": false}])
    );
    let e = err(&broker.cli(&["topic", "delete", "keep", "gone"], None));
    assert!(e.contains("'gone'"), "{e}");
    assert_eq!(
        json(&ok(&broker.cli(&["topic", "list", "--json"], None))),
        serde_json::json!([]),
        "the existing one of the two went"
    );
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn group_describe_names_each_partitions_member_and_seek_waits_for_an_empty_group() {
    let broker = TestBroker::start();
    ok(&broker.cli(&["topic", "create", "work", "-p", "2"], None));
    let input: String = (0..20).map(|i| format!("{} job {i}\n", i % 2)).collect();
    ok(&broker.cli(&["produce", "work", "-f", "%p %v\\n"], Some(&input)));
    // A member that stays: a group consumer in another process.
    let mut member = Command::new(BIN)
        .args(["consume", "work", "--group", "workers", "-B"])
        .args(["-X", "client.id=worker-7", "--brokers", &broker.addr()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let describe = || {
        json(&ok(&broker.cli(
            &["group", "describe", "workers", "--format", "json"],
            None,
        )))
    };
    wait_for("the member owns both partitions", || {
        // Until the member joins, the group does not exist.
        let out = broker.cli(&["group", "describe", "workers", "--format", "json"], None);
        if !out.status.success() {
            return false;
        }
        let d = json(&String::from_utf8_lossy(&out.stdout));
        d["state"] == "Stable"
            && d["partitions"].as_array().unwrap().len() == 2
            && d["partitions"][0]["committed"] == 10
    });
    let d = describe();
    let member_id = d["members"][0]["member_id"].as_str().unwrap().to_string();
    for p in d["partitions"].as_array().unwrap() {
        assert_eq!(p["client_id"], "worker-7", "{p}");
        assert_eq!(p["member_id"], member_id.as_str());
        assert!(p["host"].as_str().unwrap().contains("127.0.0.1"), "{p}");
        assert_eq!(p["lag"], 0);
    }
    let text = ok(&broker.cli(&["group", "describe", "workers"], None));
    assert!(
        text.contains("worker-7") && text.contains(&member_id),
        "{text}"
    );

    let e = err(&broker.cli(&["group", "seek", "workers", "--to", "start"], None));
    assert!(e.contains("active member") && e.lines().count() == 1, "{e}");

    // SIGINT: the member leaves the group and commits.
    // SAFETY: signalling a child this test spawned and still owns.
    unsafe {
        libc::kill(member.id() as i32, libc::SIGINT);
    }
    member.wait().unwrap();
    wait_for("the group is empty", || {
        describe()["members"] == serde_json::json!([])
    });

    let moved = json(&ok(&broker.cli(
        &["group", "seek", "workers", "--to", "-3", "--format", "json"],
        None,
    )));
    let to: Vec<(i64, i64)> = moved
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["from"].as_i64().unwrap(), m["to"].as_i64().unwrap()))
        .collect();
    assert_eq!(to, vec![(10, 7), (10, 7)]);
    assert_eq!(describe()["total_lag"], 6);
    ok(&broker.cli(
        &["group", "seek", "workers", "--to", "4", "--topic", "work:1"],
        None,
    ));
    let d = describe();
    assert_eq!(d["partitions"][0]["committed"], 7);
    assert_eq!(d["partitions"][1]["committed"], 4);

    ok(&broker.cli(&["consume", "work", "-B", "-e", "--group", "other"], None));
    let out = ok(&broker.cli(&["group", "delete", "workers", "other"], None));
    assert_eq!(out, "deleted group workers\ndeleted group other\n");
}

#[test]
fn the_profile_gives_brokers_when_no_flag_or_env_var_does() {
    let broker = TestBroker::start();
    ok(&broker.cli(&["topic", "create", "p", "-p", "1"], None));
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("cli.yaml");
    let run = |args: &[&str], env_bootstrap: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("RUNNEL_CLI_CONFIG", &profile)
            .env_remove("RUNNEL_BOOTSTRAP")
            .env_remove("RUNNEL_REGISTRY_URL");
        if let Some(b) = env_bootstrap {
            c.env("RUNNEL_BOOTSTRAP", b);
        }
        c.output().unwrap()
    };
    // No profile yet: the built-in default (nothing listens there in tests
    // unless by chance, so only the default's name is checked).
    let shown = json(&ok(&run(&["profile", "show", "--format", "json"], None)));
    assert_eq!(shown["brokers"]["from"], "default");

    // The first broker of the list does not answer; the second does.
    let brokers = format!("127.0.0.1:1,{}", broker.addr());
    ok(&run(
        &[
            "profile",
            "set",
            &format!("brokers={brokers}"),
            &format!("registry_url={}", broker.registry_url()),
        ],
        None,
    ));
    let shown = json(&ok(&run(&["profile", "show", "--format", "json"], None)));
    assert_eq!(shown["brokers"]["value"], brokers.as_str());
    assert_eq!(shown["brokers"]["from"], "profile");
    let topics = json(&ok(&run(&["topic", "list", "--format", "json"], None)));
    assert_eq!(topics[0]["name"], "p");
    ok(&run(&["schema", "list"], None));

    // The env var beats the profile, and the flag beats the env var.
    let e = err(&run(&["topic", "list"], Some("127.0.0.1:1")));
    assert!(e.contains("cannot reach a broker at 127.0.0.1:1"), "{e}");
    ok(&run(
        &["topic", "list", "--brokers", &broker.addr()],
        Some("127.0.0.1:1"),
    ));

    // A broken profile: one line naming the file.
    std::fs::write(&profile, "brokers: [\n").unwrap();
    let e = err(&run(&["topic", "list"], None));
    assert!(e.contains("cli.yaml") && e.lines().count() == 1, "{e}");
    std::fs::write(&profile, "borkers: x\n").unwrap();
    let e = err(&run(&["topic", "list"], None));
    assert!(e.contains("unknown field"), "{e}");
}

#[test]
fn completion_scripts_are_printed_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F _runnel"),
        ("zsh", "#compdef runnel"),
        ("fish", "complete -c runnel"),
    ] {
        let out = Command::new(BIN)
            .args(["completion", shell])
            .output()
            .unwrap();
        let script = ok(&out);
        assert!(
            script.contains(marker),
            "{shell}: {}",
            &script[..200.min(script.len())]
        );
        assert!(
            script.contains("trim-prefix"),
            "{shell} knows the subcommands"
        );
    }
    let out = Command::new(BIN)
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn logdirs_describe_shows_the_bytes_of_each_partition_and_the_disk() {
    let broker = TestBroker::start();
    let out = broker.cli(&["topic", "create", "sized", "--partitions", "2"], None);
    ok(&out);
    let lines: String = (0..200)
        .map(|i| format!("record-{i}-{}\n", "z".repeat(100)))
        .collect();
    ok(&broker.cli(&["produce", "sized", "-p", "1"], Some(&lines)));
    let out = broker.cli(
        &[
            "logdirs", "describe", "--topic", "sized", "--format", "json",
        ],
        None,
    );
    let report = json(&ok(&out));
    let broker_dirs = &report["brokers"][0];
    assert!(broker_dirs["error"].is_null(), "{report}");
    let dir = &broker_dirs["dirs"][0];
    assert!(dir["disk_total_bytes"].as_i64().unwrap() > 0, "{report}");
    assert!(dir["disk_usable_bytes"].as_i64().unwrap() > 0, "{report}");
    let partitions = dir["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 2, "only the asked topic: {report}");
    let size = |p: i64| {
        partitions
            .iter()
            .find(|x| x["topic"] == "sized" && x["partition"] == p)
            .and_then(|x| x["size_bytes"].as_i64())
            .unwrap_or_else(|| panic!("no sized-{p} in {report}"))
    };
    assert_eq!(size(0), 0, "{report}");
    assert!(size(1) > 200 * 100, "{report}");
    // Without --topic: every partition, internal ones included.
    let all = json(&ok(
        &broker.cli(&["logdirs", "describe", "--format", "json"], None)
    ));
    let count = all["brokers"][0]["dirs"][0]["partitions"]
        .as_array()
        .unwrap()
        .len();
    assert!(count > 2, "{all}");
}
