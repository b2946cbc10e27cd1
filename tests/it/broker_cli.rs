//! The `runnel` command line against a running broker: topic admin,
//! produce and consume, readable one-line errors, config files.

use std::process::{Command, Output};

use crate::harness::{TestBroker, BIN};

fn runnel(broker: &TestBroker, args: &[&str], stdin: Option<&str>) -> Output {
    broker.cli(args, stdin)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn topic_commands_create_list_describe_alter_and_delete() {
    let broker = TestBroker::start();
    let out = runnel(
        &broker,
        &[
            "topic",
            "create",
            "orders",
            "-p",
            "4",
            "-c",
            "retention.ms=3600000",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("created topic orders (4 partitions)"));

    // The broker's own state topics are listed only on request.
    let out = runnel(&broker, &["topic", "list"], None);
    assert_eq!(stdout(&out), "orders\t4 partitions\n");
    let out = runnel(&broker, &["topic", "list", "--internal"], None);
    assert!(
        stdout(&out).contains("_runnel_transforms\t1 partitions\n"),
        "{}",
        stdout(&out)
    );

    let out = runnel(
        &broker,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "retention.bytes=1048576",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = runnel(&broker, &["topic", "describe", "orders"], None);
    let text = stdout(&out);
    assert!(text.contains("partitions:  4"), "{text}");
    assert!(
        text.contains("* retention.ms") && text.contains("3600000"),
        "{text}"
    );
    assert!(
        text.contains("* retention.bytes") && text.contains("1048576"),
        "{text}"
    );
    assert!(
        text.contains("  cleanup.policy"),
        "defaults are listed too: {text}"
    );

    let out = runnel(
        &broker,
        &[
            "topic",
            "alter-config",
            "orders",
            "--delete",
            "retention.ms",
        ],
        None,
    );
    assert!(out.status.success());
    let text = stdout(&runnel(&broker, &["topic", "describe", "orders"], None));
    assert!(
        text.contains("  retention.ms") && text.contains("604800000"),
        "{text}"
    );

    // Errors: one readable line, non-zero exit.
    let out = runnel(&broker, &["topic", "create", "orders"], None);
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"));
    let out = runnel(
        &broker,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "retention.ms=forever",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("retention.ms"), "{}", stderr(&out));
    assert!(runnel(
        &broker,
        &["topic", "create", "orders", "--if-not-exists"],
        None
    )
    .status
    .success());

    let out = runnel(&broker, &["topic", "delete", "orders"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&runnel(&broker, &["topic", "list"], None)), "");
    let out = runnel(&broker, &["topic", "delete", "orders"], None);
    assert!(!out.status.success());
    assert!(
        runnel(&broker, &["topic", "delete", "orders", "--if-exists"], None)
            .status
            .success()
    );
}

#[test]
fn produce_and_consume_commands_round_trip_keys_and_values() {
    let broker = TestBroker::start();
    assert!(
        runnel(&broker, &["topic", "create", "lines", "-p", "2"], None)
            .status
            .success()
    );
    let input: String = (0..500)
        .map(|i| format!("key{}:value {i}\n", i % 7))
        .collect();
    let out = runnel(
        &broker,
        &["produce", "lines", "-K", ":", "--compression", "snappy"],
        Some(&input),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("produced 500 records"));

    let out = runnel(
        &broker,
        &[
            "consume",
            "lines",
            "--from-beginning",
            "--exit-at-end",
            "--print-key",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut got: Vec<String> = stdout(&out).lines().map(|l| l.replace('\t', ":")).collect();
    let mut want: Vec<String> = input.lines().map(String::from).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // --partition, --offset and --max
    let out = runnel(
        &broker,
        &[
            "consume",
            "lines",
            "-p",
            "1",
            "-o",
            "3",
            "-n",
            "2",
            "--print-offset",
        ],
        None,
    );
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with("1:3\t") && lines[1].starts_with("1:4\t"),
        "{lines:?}"
    );
}

#[test]
fn a_group_consumer_commits_what_it_printed_so_the_next_run_goes_on_from_there() {
    let broker = TestBroker::start();
    let input: String = (0..3_000).map(|i| format!("line {i}\n")).collect();
    let out = runnel(&broker, &["produce", "work"], Some(&input));
    assert!(out.status.success(), "{}", stderr(&out));
    let group = [
        "consume",
        "work",
        "--group",
        "g",
        "--from-beginning",
        "--exit-at-end",
        // Values as they are, to compare with the input.
        "--format",
        "text",
    ];
    let first = runnel(&broker, &group, None);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(stdout(&first).lines().count(), 3_000);
    let more: String = (3_000..3_010).map(|i| format!("line {i}\n")).collect();
    assert!(runnel(&broker, &["produce", "work"], Some(&more))
        .status
        .success());
    let second = runnel(&broker, &group, None);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(
        stdout(&second),
        more,
        "only what the first run did not print"
    );
}

#[test]
fn output_piped_into_head_ends_quietly_when_head_exits() {
    let broker = TestBroker::start();
    let input: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let out = runnel(&broker, &["produce", "piped"], Some(&input));
    assert!(out.status.success(), "{}", stderr(&out));
    let shell = format!(
        "{BIN} consume piped --from-beginning --exit-at-end --format text --bootstrap {} | head -n 1",
        broker.addr()
    );
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", &shell])
        .output()
        .expect("run a pipeline");
    assert_eq!(stdout(&out), "line 0\n");
    let err = stderr(&out);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "a closed pipe is not an error: {err}"
    );
    // The consumer ends by SIGPIPE, as `cat` would (141 with pipefail).
    assert_eq!(out.status.code(), Some(141), "{err}");
}

#[test]
fn commands_fail_with_one_line_when_no_broker_answers() {
    let out = Command::new(BIN)
        .args(["topic", "list", "--bootstrap", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: cannot reach a broker at 127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn a_bad_config_file_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runnel.yaml");
    std::fs::write(&path, "node_id: 1\nlog:\n  retention_ms: soon\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("runnel.yaml") && err.contains("line 3"),
        "{err}"
    );

    std::fs::write(&path, "node_id: 1\nunknown_key: 5\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `unknown_key`"), "{err}");
}

#[test]
fn the_reference_config_file_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/runnel.example.yaml");
    let text = std::fs::read_to_string(path).expect("runnel.example.yaml exists");
    let config: runnel_core::config::BrokerConfig = serde_yaml::from_str(&text).expect("parses");
    config.validate().expect("validates");
    assert_eq!(
        config,
        runnel_core::config::BrokerConfig::default(),
        "the reference file documents the defaults"
    );
}

#[test]
fn two_brokers_cannot_share_a_data_directory() {
    let broker = TestBroker::start();
    let out = Command::new(BIN)
        .args(["serve", "--kafka-addr", "127.0.0.1:0"])
        .args([
            "--admin-addr",
            "off",
            "--registry-addr",
            "off",
            "--connect-addr",
            "off",
            "--data-dir",
        ])
        .arg(&broker.dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another runnel process"));
}

/// A broker's log at the default level, written to a file: no colour
/// escapes, a first start that fits on a screen, and Ctrl-C (SIGINT)
/// ending it (the registry and connect worker first) with no ERROR.
#[test]
fn the_default_log_is_plain_short_and_quiet_about_routine_events() {
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("broker.log");
    let port = crate::harness::free_port();
    let admin = crate::harness::free_port();
    let (registry, connect) = (crate::harness::free_port(), crate::harness::free_port());
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(tmp.path().join("data"))
        .args(["--kafka-addr", &format!("127.0.0.1:{port}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--registry-addr", &format!("127.0.0.1:{registry}")])
        .args(["--connect-addr", &format!("127.0.0.1:{connect}")])
        .env_remove("RUNNEL_LOG")
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    while !read().contains("connect worker REST API started") {
        assert!(
            Instant::now() < deadline,
            "no start within 30 s:\n{}",
            read()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: a signal to our own child process by pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no exit after SIGINT:\n{}",
            read()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = read();
    assert!(status.success(), "{status}:\n{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour escapes in a log file:\n{text}"
    );
    let at = |level: &str| text.lines().filter(|l| l.contains(level)).count();
    assert_eq!(at(" ERROR "), 0, "{text}");
    assert_eq!(at(" WARN "), 0, "{text}");
    assert!(
        text.contains("shutting down") && text.contains("storage flushed"),
        "{text}"
    );
    let lines = text.lines().count();
    assert!(
        lines <= 40,
        "{lines} lines for a first start and stop:\n{text}"
    );
}
