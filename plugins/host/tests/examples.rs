//! The example plugins of `plugins/examples`, as built modules, run through
//! the host: what each one does to records, and how each failure plugin
//! fails.
//!
//! The modules come from `plugins/dist`. The first test that needs one runs
//! `plugins/build.sh` (once per test process; it is idempotent and takes
//! well under a second when nothing changed), so these tests always run the
//! current plugin sources, and fail when the plugins cannot be built.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use runnel_plugin_host::{FailureKind, HostConfig, Kind, Plugin, PluginError, PluginHost, Record};
use serde_json::{json, Value};

fn plugins_dir() -> PathBuf {
    // CARGO_MANIFEST_DIR is plugins/host.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("plugins/host has a parent")
        .to_path_buf()
}

/// Runs `plugins/build.sh` once per process; panics with its output if it
/// fails.
fn ensure_built() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let script = plugins_dir().join("build.sh");
        let output = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed ({}):\n{}{}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    if let Err(message) = built {
        panic!("the example plugins could not be built: {message}");
    }
}

fn wasm(name: &str) -> Vec<u8> {
    ensure_built();
    let path = plugins_dir().join("dist").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn host() -> PluginHost {
    PluginHost::new(HostConfig {
        batch_deadline: Duration::from_millis(300),
        memory_limit_bytes: 16 << 20,
        max_instances: 8,
        ..HostConfig::default()
    })
    .expect("a host with default settings starts")
}

fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(host: &PluginHost, name: &str, pairs: &[(&str, &str)]) -> Plugin {
    host.load(name, &wasm(name), &config(pairs))
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn load_error(name: &str, pairs: &[(&str, &str)]) -> PluginError {
    match host().load(name, &wasm(name), &config(pairs)) {
        Ok(_) => panic!("{name} accepted the configuration {pairs:?}"),
        Err(e) => e,
    }
}

fn record(offset: i64, key: Option<&str>, value: Option<&str>) -> Record {
    Record {
        offset,
        timestamp: 1_700_000_000_000 + offset,
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        headers: Vec::new(),
        source_index: 0,
    }
}

/// Records with the given values, at offsets from `first_offset`, keyed
/// `k<offset>`.
fn records(first_offset: i64, values: &[&str]) -> Vec<Record> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let offset = first_offset + i as i64;
            record(offset, Some(&format!("k{offset}")), Some(v))
        })
        .collect()
}

fn text(bytes: &Option<Bytes>) -> String {
    let bytes = bytes.as_ref().expect("a value");
    String::from_utf8(bytes.to_vec()).expect("a UTF-8 value")
}

fn texts(out: &[Record]) -> Vec<String> {
    out.iter().map(|r| text(&r.value)).collect()
}

fn json_of(r: &Record) -> Value {
    serde_json::from_slice(r.value.as_ref().expect("a value")).expect("a JSON value")
}

fn offsets(out: &[Record]) -> Vec<i64> {
    out.iter().map(|r| r.offset).collect()
}

fn process_error(plugin: &Plugin, input: &[Record]) -> PluginError {
    match plugin.process(input) {
        Ok(out) => panic!("{} did not fail; it returned {out:?}", plugin.name()),
        Err(e) => e,
    }
}

#[test]
fn every_example_declares_its_kind_and_imports_only_the_abi() {
    let host = host();
    for (name, kind) in [
        ("keep-all", Kind::Filter),
        ("drop-odd-offsets", Kind::Filter),
        ("filter-json-field", Kind::Filter),
        ("redact-pii", Kind::Map),
        ("enrich-json", Kind::Map),
        ("split-records", Kind::FlatMap),
        ("running-count", Kind::Aggregate),
        ("c-uppercase", Kind::Map),
        ("spin-forever", Kind::Filter),
        ("alloc-forever", Kind::Filter),
        ("trap-on-poison", Kind::Filter),
        ("fail-on-poison", Kind::Filter),
    ] {
        let info = host
            .inspect(&wasm(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((info.abi_version, info.kind), (1, kind), "{name}");
        assert!(info.has_init, "{name} exports runnel_init");
        for import in &info.imports {
            assert!(
                import == "env.runnel_log" || import == "env.runnel_fail",
                "{name} imports {import}"
            );
        }
    }
}

#[test]
fn keep_all_keeps_every_record_untouched_across_many_batches() {
    let host = host();
    let plugin = load(&host, "keep-all", &[]);
    let mut input = records(1000, &["a"; 1000]);
    input[1].key = None;
    input[2].value = None;
    input[3].headers = vec![
        ("trace".into(), Some(Bytes::from_static(b"t-1"))),
        ("empty".into(), None),
    ];
    input[4].timestamp = -1;
    for _ in 0..3 {
        let out = plugin.process(&input).unwrap();
        assert_eq!(out.len(), input.len());
        for (i, (got, sent)) in out.iter().zip(&input).enumerate() {
            let expected = Record {
                source_index: i as u32,
                ..sent.clone()
            };
            assert_eq!(got, &expected);
        }
    }
    assert!(plugin.process(&[]).unwrap().is_empty());
}

#[test]
fn drop_odd_offsets_sees_the_offsets_the_host_passes() {
    let host = host();
    let plugin = load(&host, "drop-odd-offsets", &[]);
    let out = plugin.process(&records(41, &["x"; 6])).unwrap();
    assert_eq!(offsets(&out), vec![42, 44, 46]);
    assert_eq!(
        out.iter().map(|r| r.source_index).collect::<Vec<_>>(),
        vec![1, 3, 5]
    );
}

#[test]
fn filter_json_field_keeps_records_whose_field_equals_the_value() {
    let host = host();
    let plugin = load(
        &host,
        "filter-json-field",
        &[("field", "country"), ("equals", "DE")],
    );
    let input = records(
        0,
        &[
            r#"{"country": "DE", "n": 1}"#,
            r#"{"country": "FR"}"#,
            r#"{"n": 2}"#,
            "not json",
            r#"{"country": "DE"}"#,
            r#"["country", "DE"]"#,
            r#"{"country": "de"}"#,
        ],
    );
    assert_eq!(offsets(&plugin.process(&input).unwrap()), vec![0, 4]);

    // Other types compare by their JSON text.
    let plugin = load(
        &host,
        "filter-json-field",
        &[("field", "n"), ("equals", "1")],
    );
    assert_eq!(offsets(&plugin.process(&input).unwrap()), vec![0]);
}

#[test]
fn filter_json_field_without_equals_keeps_records_that_have_the_field() {
    let host = host();
    let plugin = load(&host, "filter-json-field", &[("field", "/user/email")]);
    let input = records(
        10,
        &[
            r#"{"user": {"email": "a@b.example"}}"#,
            r#"{"user": {"name": "a"}}"#,
            r#"{"user": {"email": null}}"#,
            r#"{"email": "top-level"}"#,
        ],
    );
    let mut input = input;
    input.push(record(14, None, None));
    assert_eq!(offsets(&plugin.process(&input).unwrap()), vec![10, 12]);
}

#[test]
fn filter_json_field_refuses_to_load_without_a_field() {
    let e = load_error("filter-json-field", &[]);
    assert_eq!(e.kind, FailureKind::Refused, "{e}");
    assert!(e.message.contains("`field` is required"), "{e}");
}

#[test]
fn redact_pii_redacts_emails_and_luhn_valid_cards_anywhere_in_the_document() {
    let host = host();
    let plugin = load(&host, "redact-pii", &[]);
    let doc = json!({
        "id": 7,
        "contact": {"email": "jane.doe+news@mail.example.com", "phone": "555-0100"},
        "notes": [
            "call jane@example.org or bob@example.net today.",
            {"deep": ["card 4111 1111 1111 1111 exp 12/30"]},
            "ref 4111-1111-1111-1112 is not a card (Luhn)",
            "two: 5500000000000004,378282246310005"
        ],
        "pan": 4111111111111111u64,
        "amount": 1234567890123u64,
        "jane@example.org": "keys are kept"
    });
    let mut input = records(0, &[&doc.to_string()]);
    input[0].headers = vec![("h".into(), Some(Bytes::from_static(b"v")))];
    let out = plugin.process(&input).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(
        json_of(&out[0]),
        json!({
            "id": 7,
            "contact": {"email": "[REDACTED]", "phone": "555-0100"},
            "notes": [
                "call [REDACTED] or [REDACTED] today.",
                {"deep": ["card [REDACTED] exp 12/30"]},
                "ref 4111-1111-1111-1112 is not a card (Luhn)",
                "two: [REDACTED],[REDACTED]"
            ],
            "pan": "[REDACTED]",
            "amount": 1234567890123u64,
            "jane@example.org": "keys are kept"
        })
    );
    // Everything but the value is the input's.
    assert_eq!(
        (
            &out[0].key,
            out[0].offset,
            out[0].timestamp,
            &out[0].headers
        ),
        (
            &input[0].key,
            input[0].offset,
            input[0].timestamp,
            &input[0].headers
        )
    );
}

#[test]
fn redact_pii_with_fields_replaces_only_those_fields_whole() {
    let host = host();
    let plugin = load(
        &host,
        "redact-pii",
        &[
            ("fields", "email, card,/billing/iban"),
            ("replacement", "***"),
        ],
    );
    let doc = json!({
        "email": "a@b.example",
        "card": {"number": "4111111111111111", "exp": "12/30"},
        "comment": "write to c@d.example",
        "orders": [{"email": "e@f.example"}, {"email": null}],
        "billing": {"iban": "DE89370400440532013000", "email_count": 2}
    });
    let out = plugin.process(&records(0, &[&doc.to_string()])).unwrap();
    assert_eq!(
        json_of(&out[0]),
        json!({
            "email": "***",
            "card": "***",
            "comment": "write to c@d.example",
            "orders": [{"email": "***"}, {"email": null}],
            "billing": {"iban": "***", "email_count": 2}
        })
    );
}

#[test]
fn redact_pii_passes_non_json_and_clean_values_through_byte_for_byte() {
    let host = host();
    let plugin = load(&host, "redact-pii", &[]);
    let clean = r#"{ "a" : "nothing here",  "n": 1.50 }"#;
    let mut input = records(5, &["plain text with a@b.example", clean]);
    input.push(record(7, Some("tombstone"), None));
    let out = plugin.process(&input).unwrap();
    assert_eq!(
        texts(&out[..2]),
        vec!["plain text with a@b.example".to_string(), clean.to_string()]
    );
    assert_eq!(out[2].value, None);
    assert_eq!(offsets(&out), vec![5, 6, 7]);
}

#[test]
fn enrich_json_drops_renames_adds_and_stamps_fields() {
    let host = host();
    let plugin = load(
        &host,
        "enrich-json",
        &[
            ("drop", "password,tmp"),
            ("rename.usr", "user"),
            ("add.env", "prod"),
            ("add.source", "runnel"),
            ("timestamp_field", "ingested_at"),
            ("timestamp_format", "rfc3339"),
        ],
    );
    let mut input = records(
        0,
        &[
            r#"{"usr": "bob", "password": "x", "tmp": 1, "n": 2}"#,
            "[1, 2]",
            "not json",
        ],
    );
    input[0].timestamp = 1_700_000_000_123;
    let out = plugin.process(&input).unwrap();
    assert_eq!(
        text(&out[0].value),
        r#"{"user":"bob","n":2,"env":"prod","source":"runnel","ingested_at":"2023-11-14T22:13:20.123Z"}"#
    );
    assert_eq!(texts(&out[1..]), vec!["[1, 2]", "not json"]);

    let plugin = load(&host, "enrich-json", &[("timestamp_field", "ts")]);
    let mut input = records(0, &["{}", "{}"]);
    input[1].timestamp = -1;
    assert_eq!(
        texts(&plugin.process(&input).unwrap()),
        vec![r#"{"ts":1700000000000}"#, "{}"]
    );
}

#[test]
fn enrich_json_refuses_an_unknown_timestamp_format() {
    let e = load_error(
        "enrich-json",
        &[("timestamp_field", "ts"), ("timestamp_format", "iso")],
    );
    assert_eq!(e.kind, FailureKind::Refused, "{e}");
    assert!(e.message.contains("timestamp_format"), "{e}");
}

#[test]
fn split_records_turns_arrays_into_elements_and_text_into_lines() {
    let host = host();
    let plugin = load(&host, "split-records", &[]);
    let mut input = records(
        100,
        &[r#"[{"a": 1}, "x", 2]"#, "first\n\nsecond\n", "[]", "single"],
    );
    input.push(record(104, Some("gone"), None));
    let out = plugin.process(&input).unwrap();
    let got: Vec<(u32, i64, Option<String>, Option<String>)> = out
        .iter()
        .map(|r| {
            (
                r.source_index,
                r.offset,
                r.key
                    .as_ref()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
                r.value
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v).into_owned()),
            )
        })
        .collect();
    let expect = |i: u32, key: &str, value: Option<&str>| {
        (
            i,
            100 + i as i64,
            Some(key.to_string()),
            value.map(str::to_string),
        )
    };
    assert_eq!(
        got,
        vec![
            expect(0, "k100", Some(r#"{"a":1}"#)),
            expect(0, "k100", Some(r#""x""#)),
            expect(0, "k100", Some("2")),
            expect(1, "k101", Some("first")),
            expect(1, "k101", Some("second")),
            expect(3, "k103", Some("single")),
            expect(4, "gone", None),
        ]
    );
    assert!(out
        .iter()
        .all(|r| r.timestamp == input[r.source_index as usize].timestamp));
}

#[test]
fn split_records_uses_the_configured_delimiter() {
    let host = host();
    let plugin = load(&host, "split-records", &[("delimiter", ";")]);
    let out = plugin.process(&records(0, &["a;b;;c\nd;"])).unwrap();
    assert_eq!(texts(&out), vec!["a", "b", "c\nd"]);
}

#[test]
fn running_count_counts_per_key_across_batches_with_host_kept_state() {
    let host = host();
    let plugin = load(&host, "running-count", &[]);
    assert_eq!(plugin.kind(), Kind::Aggregate);
    let mut state: HashMap<Option<Bytes>, Bytes> = HashMap::new();
    let batch = |keys: &[Option<&str>], first: i64| -> Vec<Record> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| record(first + i as i64, *k, Some("x")))
            .collect()
    };
    let key = |k: &str| Some(Bytes::copy_from_slice(k.as_bytes()));

    let out = plugin
        .aggregate(
            &batch(&[Some("a"), Some("b"), Some("a"), None], 0),
            &mut state,
        )
        .unwrap();
    assert_eq!(texts(&out), vec!["1", "1", "2", "1"]);
    assert_eq!(out[2].key, key("a"));
    assert_eq!(out[3].key, None);
    assert_eq!(offsets(&out), vec![0, 1, 2, 3]);
    assert_eq!(state[&key("a")], Bytes::from(2u64.to_le_bytes().to_vec()));
    assert_eq!(state[&None], Bytes::from(1u64.to_le_bytes().to_vec()));

    let out = plugin
        .aggregate(&batch(&[Some("a"), Some("c")], 4), &mut state)
        .unwrap();
    assert_eq!(texts(&out), vec!["3", "1"]);
    assert_eq!(state.len(), 4);
    assert_eq!(state[&key("b")], Bytes::from(1u64.to_le_bytes().to_vec()));

    // A corrupt state fails the batch instead of restarting the count.
    state.insert(key("a"), Bytes::from_static(b"bad"));
    let e = plugin
        .aggregate(&batch(&[Some("a")], 6), &mut state)
        .unwrap_err();
    assert_eq!(
        (e.kind, e.first_offset),
        (FailureKind::Failed, Some(6)),
        "{e}"
    );
    assert!(e.message.contains("not an 8-byte count"), "{e}");
}

#[test]
fn the_c_plugin_upper_cases_ascii_values_in_place() {
    let host = host();
    let plugin = load(&host, "c-uppercase", &[]);
    let mut input = records(20, &["hello, World 42", "ünïcödé stays", ""]);
    input[0].headers = vec![("x-case".into(), Some(Bytes::from_static(b"lower")))];
    input.push(record(23, Some("k"), None));
    for _ in 0..2 {
        let out = plugin.process(&input).unwrap();
        assert_eq!(
            texts(&out[..3]),
            vec!["HELLO, WORLD 42", "üNïCöDé STAYS", ""]
        );
        assert_eq!(out[3].value, None);
        assert_eq!(out[0].headers, input[0].headers);
        assert_eq!(out[0].key, input[0].key);
        assert_eq!(offsets(&out), vec![20, 21, 22, 23]);
    }
}

#[test]
fn the_c_plugin_refuses_configuration() {
    let e = load_error("c-uppercase", &[("any", "thing")]);
    assert_eq!(e.kind, FailureKind::Refused, "{e}");
    assert!(e.message.contains("takes no configuration"), "{e}");
}

#[test]
fn a_plugin_that_spins_forever_times_out_on_every_batch() {
    let host = host();
    let plugin = load(&host, "spin-forever", &[]);
    for first in [10, 20] {
        let started = Instant::now();
        let e = process_error(&plugin, &records(first, &["x"]));
        assert_eq!(
            (e.kind, e.first_offset, e.plugin.as_str()),
            (FailureKind::Timeout, Some(first), "spin-forever"),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{e}");
    }
}

#[test]
fn a_plugin_that_allocates_without_bound_runs_out_of_memory() {
    let host = host();
    let plugin = load(&host, "alloc-forever", &[]);
    let e = process_error(&plugin, &records(3, &["x"]));
    assert_eq!(
        (e.kind, e.first_offset),
        (FailureKind::OutOfMemory, Some(3)),
        "{e}"
    );
}

#[test]
fn a_panic_traps_with_its_message_and_the_next_batch_gets_a_fresh_instance() {
    let host = host();
    let plugin = load(&host, "trap-on-poison", &[]);
    assert_eq!(plugin.process(&records(0, &["a", "b"])).unwrap().len(), 2);
    let e = process_error(&plugin, &records(40, &["fine", "fine", "poison", "fine"]));
    assert_eq!(
        (e.kind, e.first_offset),
        (FailureKind::Trap, Some(40)),
        "{e}"
    );
    assert!(e.message.contains("poison record at offset 42"), "{e}");
    assert_eq!(plugin.process(&records(44, &["c"])).unwrap().len(), 1);
}

#[test]
fn runnel_fail_fails_the_batch_with_the_plugins_message() {
    let host = host();
    let plugin = load(&host, "fail-on-poison", &[]);
    let e = process_error(&plugin, &records(7, &["ok", "poison"]));
    assert_eq!(
        (e.kind, e.first_offset),
        (FailureKind::Failed, Some(7)),
        "{e}"
    );
    assert_eq!(e.message, "poison record at offset 8");
    assert_eq!(plugin.process(&records(9, &["ok"])).unwrap().len(), 1);
}
