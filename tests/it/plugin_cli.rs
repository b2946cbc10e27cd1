//! `runnel plugin ...` with real plugins: inspect, test on JSON lines
//! (including readable errors), and a new plugin from the template built
//! and run.

use std::process::Command;

use crate::harness::{plugin_wasm, BIN};

fn runnel(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inspect_names_kind_version_and_exports() {
    let wasm = plugin_wasm("redact-pii");
    let (ok, out, err) = runnel(&["plugin", "inspect", wasm.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("kind:         map"), "{out}");
    assert!(out.contains("ABI version:  1"), "{out}");
    assert!(out.contains("runnel_process"), "{out}");
    let (ok, _, err) = runnel(&["plugin", "inspect", "/dev/null"]);
    assert!(
        !ok && err.contains("not a valid WebAssembly module"),
        "{err}"
    );
}

#[test]
fn test_runs_a_plugin_on_json_lines_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"key": "a", "value": {"user": "bob@example.com", "card": "4111 1111 1111 1111", "city": "Paris"}}"#,
            "\n",
            r#"{"value": "not json at all", "headers": {"h": "v"}, "timestamp": 5}"#,
            "\n"
        ),
    )
    .unwrap();
    let wasm = plugin_wasm("redact-pii");
    let (ok, out, err) = runnel(&[
        "plugin",
        "test",
        wasm.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["value"]["user"], "[REDACTED]");
    assert_eq!(lines[0]["value"]["card"], "[REDACTED]");
    assert_eq!(lines[0]["value"]["city"], "Paris");
    assert_eq!(lines[0]["key"], "a");
    assert_eq!(lines[1]["value"], "not json at all");
    assert_eq!(lines[1]["headers"]["h"], "v");
    assert_eq!(lines[1]["timestamp"], 5);

    // Configuration reaches the plugin.
    let (ok, out, _) = runnel(&[
        "plugin",
        "test",
        wasm.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--config",
        "fields=city",
    ]);
    assert!(ok);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        (
            first["value"]["city"].as_str(),
            first["value"]["user"].as_str()
        ),
        (Some("[REDACTED]"), Some("bob@example.com"))
    );

    // A malformed line is named; nothing runs.
    std::fs::write(&input, "{\"value\": 1}\n{\"key\": \"no value\"}\n").unwrap();
    let (ok, out, err) = runnel(&[
        "plugin",
        "test",
        wasm.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(!ok && out.is_empty());
    assert!(err.contains("in.jsonl:2: missing \"value\""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // A plugin failure names the plugin and the input line.
    std::fs::write(&input, "{\"value\": \"fine\"}\n{\"value\": \"poison\"}\n").unwrap();
    let poison = plugin_wasm("trap-on-poison");
    let (ok, _, err) = runnel(&[
        "plugin",
        "test",
        poison.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--batch-size",
        "1",
    ]);
    assert!(!ok);
    assert!(
        err.contains("plugin 'trap-on-poison' trapped") && err.contains("input line 2"),
        "{err}"
    );
}

#[test]
fn a_new_plugin_from_the_template_builds_and_runs() {
    // Needs a wasm32 toolchain, as plugins/build.sh sets up.
    plugin_wasm("keep-all");
    let dir = tempfile::tempdir().unwrap();
    let run_in = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run_in(&["plugin", "new", "needle-filter", "--kind", "filter"]);
    assert!(ok, "{err}");
    assert!(out.contains("created filter plugin needle-filter/"));
    let (ok, wasm, err) = run_in(&["plugin", "build", "needle-filter"]);
    assert!(ok, "{err}");
    let wasm = wasm.trim().to_string();
    assert!(wasm.ends_with(".wasm"), "{wasm}");
    let input = dir.path().join("needle-filter/records.jsonl");
    let (ok, out, err) = run_in(&[
        "plugin",
        "test",
        &wasm,
        "--input",
        input.to_str().unwrap(),
        "--config",
        "needle=good",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1);
    assert!(out.contains("all good"), "{out}");
    let (ok, _, err) = run_in(&["plugin", "new", "needle-filter"]);
    assert!(!ok && err.contains("already exists"), "{err}");
}
