#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests (which start the real
# `runnel` binary and drive it with librdkafka), then the client
# compatibility checks (kcat, kafka-python, confluent-kafka).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --release --workspace
RUNNEL_BIN=target/release/runnel tests/compat/run.sh
