#!/usr/bin/env bash
# The whole test suite: the example plugins' build, Rust unit and
# integration tests (which start the real `runnel` binary and drive it with
# librdkafka), then the client compatibility checks (kcat, kafka-python,
# confluent-kafka, kafkajs; one broker, then a 3-node cluster).
set -euo pipefail
cd "$(dirname "$0")/.."

# Example WASM plugins (installs a wasm32 toolchain if needed), used by the
# plugin host's and the broker's tests.
plugins/build.sh
cargo test --release --workspace
RUNNEL_BIN=target/release/runnel tests/compat/run.sh
