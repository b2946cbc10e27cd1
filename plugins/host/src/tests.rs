//! ABI conformance and failure handling, with plugins written in WAT so no
//! guest toolchain is needed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::*;

/// A module with the required exports around a custom `runnel_process`
/// body. `runnel_alloc` returns 1024 after growing memory to fit twice the
/// input, so the process body may write its output at `$ptr + $len`.
fn module(version: i32, kind: i32, process_body: &str, extra: &str) -> String {
    format!(
        r#"(module
  (import "env" "runnel_log" (func $log (param i32 i32 i32)))
  (import "env" "runnel_fail" (func $fail (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "poisoned record")
  (func (export "runnel_abi_version") (result i32) (i32.const {version}))
  (func (export "runnel_kind") (result i32) (i32.const {kind}))
  (func (export "runnel_alloc") (param $len i32) (result i32)
    (local $need i32)
    (local.set $need (i32.add (i32.const 1040) (i32.mul (local.get $len) (i32.const 2))))
    (block $done
      (loop $grow
        (br_if $done (i32.ge_u (i32.mul (memory.size) (i32.const 65536)) (local.get $need)))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then (return (i32.const 0))))
        (br $grow)))
    (i32.const 1024))
  (func (export "runnel_process") (param $ptr i32) (param $len i32) (result i64)
    {process_body})
  {extra}
)"#
    )
}

/// The instructions of KEEP_ALL, for bodies that add their own checks
/// after the locals.
macro_rules! keep_all_body {
    () => {
        r#"
    (local.set $count (i32.load (local.get $ptr)))
    (local.set $out (i32.add (local.get $ptr) (local.get $len)))
    (i32.store (local.get $out) (local.get $count))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (i32.store (i32.add (i32.add (local.get $out) (i32.const 4)) (i32.mul (local.get $i) (i32.const 4))) (local.get $i))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
      (i64.extend_i32_u (i32.add (i32.const 4) (i32.mul (local.get $count) (i32.const 4)))))"#
    };
}

/// Keeps every record: writes the count and indexes 0..count after the input.
const KEEP_ALL: &str = concat!(
    "(local $count i32) (local $out i32) (local $i i32)",
    keep_all_body!()
);

/// Returns the input batch unchanged: a valid identity map.
const IDENTITY_MAP: &str = r#"
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len)))"#;

fn host() -> PluginHost {
    PluginHost::new(HostConfig {
        batch_deadline: Duration::from_millis(200),
        memory_limit_bytes: 4 << 20,
        ..HostConfig::default()
    })
    .unwrap()
}

fn batch(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            offset: 500 + i as i64,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("value-{i}"))),
            headers: vec![("h".into(), Some(Bytes::from_static(b"1")))],
            source_index: 0,
        })
        .collect()
}

fn none() -> BTreeMap<String, String> {
    BTreeMap::new()
}

#[test]
fn a_filter_keeps_records_without_copying_them_back() {
    let host = host();
    let plugin = host
        .load("keep-all", module(1, 1, KEEP_ALL, "").as_bytes(), &none())
        .unwrap();
    assert_eq!(plugin.kind(), Kind::Filter);
    let input = batch(100);
    let out = plugin.process(&input).unwrap();
    assert_eq!(out.len(), 100);
    for (i, r) in out.iter().enumerate() {
        assert_eq!(
            (r.source_index as usize, r.offset, &r.value),
            (i, input[i].offset, &input[i].value)
        );
    }
    // The instance is reused: many batches, including an empty one.
    for n in [0, 1, 1000, 3] {
        assert_eq!(plugin.process(&batch(n)).unwrap().len(), n);
    }
}

#[test]
fn a_map_returns_records_with_their_source_offsets() {
    let host = host();
    let plugin = host
        .load(
            "identity",
            module(1, 2, IDENTITY_MAP, "").as_bytes(),
            &none(),
        )
        .unwrap();
    let input = batch(10);
    let out = plugin.process(&input).unwrap();
    assert_eq!(out.len(), 10);
    assert_eq!(out[3].offset, 503);
    assert_eq!(out[3].key, input[3].key);
    assert_eq!(out[3].headers, input[3].headers);
}

#[test]
fn modules_that_break_the_abi_are_refused_with_the_reason() {
    let host = host();
    let err = |wat: String| {
        host.load("bad", wat.as_bytes(), &none())
            .err()
            .expect("refused")
    };
    let e = err(module(2, 1, KEEP_ALL, ""));
    assert_eq!(e.kind, FailureKind::Refused);
    assert!(e.message.contains("ABI version 2"), "{e}");
    let e = err(module(1, 9, KEEP_ALL, ""));
    assert!(e.message.contains("unknown kind 9"), "{e}");
    let e = err(r#"(module (memory (export "memory") 1) (func (export "runnel_abi_version") (result i32) (i32.const 1)))"#.into());
    assert!(e.message.contains("runnel_kind"), "{e}");
    let e = err(r#"(module (memory (export "memory") 1))"#.into());
    assert!(e.message.contains("runnel_abi_version"), "{e}");
    let e = err(module(1, 1, KEEP_ALL, "").replace(
        r#"(import "env" "runnel_fail" (func $fail (param i32 i32)))"#,
        r#"(import "wasi_snapshot_preview1" "fd_write" (func $fail (param i32 i32 i32 i32) (result i32)))"#,
    ));
    assert!(e.message.contains("wasi_snapshot_preview1.fd_write"), "{e}");
    let e = err("not wasm at all".into());
    assert!(e.message.contains("not a valid WebAssembly module"), "{e}");
    let e = err(module(1, 1, KEEP_ALL, "").replace("(param $ptr i32) (param $len i32) (result i64)", "(param $ptr i32) (param $len i32) (result i32) (i32.const 0) (drop (i32.const 0)) (return (i32.const 0))"));
    assert_eq!(e.kind, FailureKind::Refused, "{e}");
    // Configuration without runnel_init is refused too.
    let mut config = none();
    config.insert("field".into(), "x".into());
    let e = host
        .load("no-init", module(1, 1, KEEP_ALL, "").as_bytes(), &config)
        .err()
        .unwrap();
    assert!(e.message.contains("runnel_init"), "{e}");
}

#[test]
fn configuration_reaches_runnel_init_and_a_refusal_is_reported() {
    let host = host();
    // Accepts the configuration only if it is longer than "{}".
    let init = r#"(func (export "runnel_init") (param $p i32) (param $n i32) (result i32)
        (if (result i32) (i32.gt_u (local.get $n) (i32.const 2))
          (then (i32.const 0))
          (else (call $log (i32.const 1) (i32.const 16) (i32.const 15)) (i32.const 7))))"#;
    let mut config = none();
    config.insert("field".into(), "email".into());
    assert!(host
        .load("cfg", module(1, 1, KEEP_ALL, init).as_bytes(), &config)
        .is_ok());
    let e = host
        .load("cfg", module(1, 1, KEEP_ALL, init).as_bytes(), &none())
        .err()
        .unwrap();
    assert_eq!(e.kind, FailureKind::Refused);
    assert!(
        e.message.contains("code 7") && e.message.contains("poisoned record"),
        "{e}"
    );
}

#[test]
fn a_plugin_that_loops_forever_is_stopped_at_its_deadline() {
    let host = host();
    let spin = r#"(loop $forever (br $forever)) (i64.const 0)"#;
    let plugin = host
        .load("spin", module(1, 1, spin, "").as_bytes(), &none())
        .unwrap();
    let started = Instant::now();
    let e = plugin.process(&batch(3)).unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.kind, FailureKind::Timeout, "{e}");
    assert_eq!(e.first_offset, Some(500));
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(2),
        "stopped after {took:?}"
    );
    assert!(
        e.to_string()
            .contains("plugin 'spin' timed out on the batch starting at offset 500"),
        "{e}"
    );
}

#[test]
fn a_plugin_that_allocates_without_bound_is_stopped_at_its_memory_cap() {
    let host = host();
    let hog = r#"(loop $more (drop (memory.grow (i32.const 16))) (br $more)) (i64.const 0)"#;
    let plugin = host
        .load("hog", module(1, 1, hog, "").as_bytes(), &none())
        .unwrap();
    let e = plugin.process(&batch(2)).unwrap_err();
    assert_eq!(e.kind, FailureKind::OutOfMemory, "{e}");
    assert!(e.message.contains("4194304"), "{e}");
}

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn guest_logs_go_to_tracing_with_the_plugin_name_and_level() {
    let host = host();
    // Logs "poisoned record" at warn (2) once per batch, keeps all.
    let chatty = concat!(
        "(local $count i32) (local $out i32) (local $i i32)",
        "(call $log (i32.const 2) (i32.const 16) (i32.const 15))",
        keep_all_body!()
    );
    let plugin = host
        .load("chatty", module(1, 1, chatty, "").as_bytes(), &none())
        .unwrap();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        assert_eq!(plugin.process(&batch(3)).unwrap().len(), 3);
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("poisoned record"))
        .unwrap_or_else(|| panic!("no guest log line in: {text}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("plugin=chatty"), "{line}");
}

#[test]
fn a_trap_mid_batch_names_the_offset_and_other_plugins_keep_working() {
    let host = host();
    // Traps when the batch has more than 2 records, keeps all otherwise.
    let picky = concat!(
        "(local $count i32) (local $out i32) (local $i i32)",
        "(if (i32.gt_u (i32.load (local.get $ptr)) (i32.const 2)) (then (call $log (i32.const 1) (i32.const 16) (i32.const 15)) (unreachable)))",
        keep_all_body!()
    );
    let plugin = host
        .load("picky", module(1, 1, picky, "").as_bytes(), &none())
        .unwrap();
    let other = host
        .load("other", module(1, 1, KEEP_ALL, "").as_bytes(), &none())
        .unwrap();
    let e = plugin.process(&batch(5)).unwrap_err();
    assert_eq!(
        (e.kind, e.first_offset),
        (FailureKind::Trap, Some(500)),
        "{e}"
    );
    assert!(
        e.message.contains("poisoned record"),
        "the plugin's last error log is included: {e}"
    );
    // The same plugin gets a new instance and serves the next batch; the
    // other plugin never noticed.
    assert_eq!(plugin.process(&batch(2)).unwrap().len(), 2);
    assert_eq!(other.process(&batch(5)).unwrap().len(), 5);
}

#[test]
fn runnel_fail_and_malformed_outputs_fail_the_batch_with_their_kind() {
    let host = host();
    let failing = r#"(call $fail (i32.const 16) (i32.const 15)) (i64.const 0)"#;
    let plugin = host
        .load("fails", module(1, 1, failing, "").as_bytes(), &none())
        .unwrap();
    let e = plugin.process(&batch(1)).unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (FailureKind::Failed, "poisoned record")
    );

    // Points the output far outside memory.
    let outside = r#"(i64.const 0x7fff0000000000ff)"#;
    let plugin = host
        .load("outside", module(1, 1, outside, "").as_bytes(), &none())
        .unwrap();
    assert_eq!(
        plugin.process(&batch(1)).unwrap_err().kind,
        FailureKind::InvalidOutput
    );

    // A filter claiming to keep more records than it got.
    let liar = r#"(i32.store (i32.const 512) (i32.const 99)) (i64.or (i64.shl (i64.const 512) (i64.const 32)) (i64.const 4))"#;
    let plugin = host
        .load("liar", module(1, 1, liar, "").as_bytes(), &none())
        .unwrap();
    let e = plugin.process(&batch(3)).unwrap_err();
    assert_eq!(e.kind, FailureKind::InvalidOutput);
    assert!(e.message.contains("keeps 99 records of 3"), "{e}");

    // A map returning fewer records than it was given.
    let short_map = r#"(i32.store (local.get $ptr) (i32.const 0)) (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.const 4))"#;
    let plugin = host
        .load("short", module(1, 2, short_map, "").as_bytes(), &none())
        .unwrap();
    let e = plugin.process(&batch(3)).unwrap_err();
    assert!(e.message.contains("a map must return 3 records"), "{e}");
}

#[test]
fn an_aggregate_needs_state_and_other_kinds_refuse_it() {
    let host = host();
    let plugin = host
        .load("keep", module(1, 1, KEEP_ALL, "").as_bytes(), &none())
        .unwrap();
    let mut state = HashMap::new();
    assert_eq!(
        plugin.aggregate(&batch(1), &mut state).unwrap_err().kind,
        FailureKind::Refused
    );
}

#[test]
fn compiled_modules_are_cached_on_disk_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..HostConfig::default()
    };
    let wat = module(1, 1, KEEP_ALL, "");
    let host = PluginHost::new(config.clone()).unwrap();
    host.load("a", wat.as_bytes(), &none()).unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "one compiled artifact");
    // A second host (as after a restart) loads from the cache.
    let again = PluginHost::new(config).unwrap();
    let plugin = again.load("a", wat.as_bytes(), &none()).unwrap();
    assert_eq!(plugin.process(&batch(3)).unwrap().len(), 3);
    // A corrupt cache entry is ignored and replaced.
    let path = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&path, b"garbage").unwrap();
    let third = PluginHost::new(HostConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..HostConfig::default()
    })
    .unwrap();
    assert!(third.load("a", wat.as_bytes(), &none()).is_ok());
}

#[test]
fn inspect_reports_kind_version_and_exports_without_configuring() {
    let host = host();
    let info = host
        .inspect(module(1, 4, IDENTITY_MAP, "").as_bytes())
        .unwrap();
    assert_eq!(
        (info.abi_version, info.kind, info.has_init),
        (1, Kind::FlatMap, false)
    );
    assert!(info.exports.contains(&"runnel_process".to_string()));
    assert_eq!(
        info.imports,
        vec!["env.runnel_log".to_string(), "env.runnel_fail".to_string()]
    );
    assert_eq!(info.sha256.len(), 64);
}

#[test]
fn a_replaced_module_serves_new_batches_while_old_ones_finish() {
    let host = Arc::new(host());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.wasm");
    std::fs::write(&path, module(1, 1, KEEP_ALL, "")).unwrap();
    let handle = PluginHandle::new(&host, "p", &std::fs::read(&path).unwrap(), none()).unwrap();
    let in_flight = handle.current();
    assert_eq!(in_flight.kind(), Kind::Filter);
    handle.watch(&host, &path, Duration::from_millis(50));
    // Swap to a module that keeps nothing (a filter writing count 0).
    let keep_none = r#"(i32.store (i32.const 512) (i32.const 0)) (i64.or (i64.shl (i64.const 512) (i64.const 32)) (i64.const 4))"#;
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&path, module(1, 1, keep_none, "")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while handle.current().sha256() == in_flight.sha256() {
        assert!(
            Instant::now() < deadline,
            "the new module was never picked up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        handle.current().process(&batch(4)).unwrap().len(),
        0,
        "new batches use the new module"
    );
    assert_eq!(
        in_flight.process(&batch(4)).unwrap().len(),
        4,
        "a batch that started earlier keeps the old one"
    );
    // A broken replacement is refused and the current module stays.
    std::fs::write(&path, "garbage").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(handle.current().process(&batch(2)).unwrap().len(), 0);
}
