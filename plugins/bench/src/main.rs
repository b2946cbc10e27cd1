//! Records per second through WASM plugins (via `runnel-plugin-host`) at
//! batch sizes 1, 100 and 1000, next to the same logic run natively in the
//! same process:
//!
//! - trivial filter: `keep-all.wasm` vs. a native closure that keeps every
//!   record (returning the kept records, as the host does);
//! - JSON redaction: `redact-pii.wasm` vs. the identical `redact` function
//!   of the `redact-pii` crate compiled natively, run over the same records
//!   through the SDK's batch codec.
//!
//! Usage: `cargo run --release -- [dist dir] [records]` (build the plugins
//! first with `plugins/build.sh`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use runnel_plugin::{Config, OwnedRecord};
use runnel_plugin_host::{HostConfig, PluginHost, Record};

fn documents(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let doc = if i % 4 == 0 {
                format!(r#"{{"id":{i},"user":{{"name":"user {i}","email":"user{i}@example.com"}},"card":"4111 1111 1111 1111","note":"order {i} shipped"}}"#)
            } else {
                format!(r#"{{"id":{i},"user":{{"name":"user {i}","city":"Lisbon"}},"items":[{{"sku":"A-{i}","qty":2}}],"note":"order {i} shipped"}}"#)
            };
            Record { offset: i as i64, timestamp: 1_700_000_000_000 + i as i64, key: Some(Bytes::from(format!("k{i}"))), value: Some(Bytes::from(doc)), headers: vec![], source_index: 0 }
        })
        .collect()
}

/// Runs `f` over `records` in chunks of `batch`, repeating until at least
/// `min` has passed; returns records per second.
fn rate(records: &[Record], batch: usize, min: Duration, mut f: impl FnMut(&[Record]) -> usize) -> f64 {
    let started = Instant::now();
    let mut done = 0usize;
    while started.elapsed() < min {
        for chunk in records.chunks(batch) {
            let out = f(chunk);
            assert!(out <= chunk.len() * 4);
            done += chunk.len();
        }
    }
    done as f64 / started.elapsed().as_secs_f64()
}

fn fmt(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.1} M", r / 1e6)
    } else {
        format!("{:.0} k", r / 1e3)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dist = std::path::PathBuf::from(args.get(1).cloned().unwrap_or_else(|| "../dist".into()));
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let records = documents(n);
    let host = PluginHost::new(HostConfig::default()).expect("host");
    let keep_all = host.load("keep-all", &std::fs::read(dist.join("keep-all.wasm")).expect("keep-all.wasm (run plugins/build.sh)"), &BTreeMap::new()).expect("load keep-all");
    let redact = host.load("redact-pii", &std::fs::read(dist.join("redact-pii.wasm")).expect("redact-pii.wasm"), &BTreeMap::new()).expect("load redact-pii");
    let settings = redact_pii::Settings::from_config(&Config::from_json(b"{}").expect("config")).expect("settings");
    let owned: Vec<OwnedRecord> = records
        .iter()
        .map(|r| {
            let mut o = OwnedRecord::new().with_value(r.value.as_deref().unwrap_or_default().to_vec()).with_timestamp(r.timestamp);
            o.key = r.key.as_ref().map(|k| k.to_vec());
            o
        })
        .collect();
    let min = Duration::from_secs(2);
    println!("{n} JSON records of ~{} bytes; each figure runs >= {min:?}", records.iter().map(|r| r.value.as_ref().unwrap().len()).sum::<usize>() / n);
    println!("| plugin | batch | WASM records/s | native records/s | WASM / native |");
    println!("|---|---:|---:|---:|---:|");
    for batch in [1, 100, 1000] {
        let wasm = rate(&records, batch, min, |chunk| keep_all.process(chunk).expect("keep-all").len());
        let native = rate(&records, batch, min, |chunk| chunk.iter().filter(|_| true).cloned().collect::<Vec<_>>().len());
        println!("| trivial filter (keep-all) | {batch} | {} | {} | {:.0}% |", fmt(wasm), fmt(native), 100.0 * wasm / native);
    }
    for batch in [1, 100, 1000] {
        let wasm = rate(&records, batch, min, |chunk| redact.process(chunk).expect("redact").len());
        let native = {
            let started = Instant::now();
            let mut done = 0usize;
            while started.elapsed() < min {
                for chunk in owned.chunks(batch) {
                    let out = runnel_plugin::testing::run_map(chunk, |r| redact_pii::redact(&settings, r));
                    done += out.len();
                }
            }
            done as f64 / started.elapsed().as_secs_f64()
        };
        println!("| JSON redact (redact-pii) | {batch} | {} | {} | {:.0}% |", fmt(wasm), fmt(native), 100.0 * wasm / native);
    }
}
