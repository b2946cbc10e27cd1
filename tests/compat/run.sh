#!/usr/bin/env bash
# Client-compatibility tests: starts a throw-away Runnel broker and drives it
# with kcat (librdkafka from Debian) and two Python clients (kafka-python and
# confluent-kafka, see compat_test.py), then a 3-node cluster whose partition
# leader is SIGKILLed under each client's producer (cluster_test.py,
# node/cluster_test.js). Installs what it needs on Debian 12.
#
# Usage: tests/compat/run.sh            (from anywhere; exits non-zero on failure)
#
# Environment:
#   RUNNEL_BIN       broker binary (default: target/release/runnel, built if missing)
#   COMPAT_VENV      Python venv to use/create (default: .venv-compat in the repo)
#   COMPAT_PYTHON    Python used to create the venv (default: python3)
#   COMPAT_RECORDS   records per codec and Python client (default: 1000)
#   COMPAT_KEEP_TMP  1 = keep the temp dir (broker data and log) for inspection
#   RUNNEL_LOG       broker log filter (default: info,runnel_core::server=debug)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
# Relative paths given in the environment are relative to the caller's cwd.
abs_path() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
[ -z "${RUNNEL_BIN:-}" ] || RUNNEL_BIN=$(abs_path "$RUNNEL_BIN")
[ -z "${COMPAT_VENV:-}" ] || COMPAT_VENV=$(abs_path "$COMPAT_VENV")
cd "$REPO_ROOT"

VENV=${COMPAT_VENV:-$REPO_ROOT/.venv-compat}
PYTHON=${COMPAT_PYTHON:-python3}
RECORDS=${COMPAT_RECORDS:-1000}
KCAT_RECORDS=200
CODECS=(none gzip snappy lz4 zstd)
START_TIME=$(date +%s)

log() { printf '[compat] %s\n' "$*" >&2; }
die() { printf '[compat] FATAL: %s\n' "$*" >&2; exit 2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root or sudo to run: $*"
    fi
}

APT_UPDATED=0
apt_install() {
    log "apt-get install $*"
    if [ "$APT_UPDATED" -eq 0 ]; then
        # A fresh machine has empty package lists: update once first.
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}

# ---------------------------------------------------------------- 1. tools

if ! command -v kcat >/dev/null 2>&1; then
    apt_install kcat
fi
command -v kcat >/dev/null 2>&1 || die "kcat not found after installing it"
command -v timeout >/dev/null 2>&1 || die "timeout (coreutils) not found"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    apt_install python3 python3-venv
    PYTHON=python3
fi

REQ_FILE=$SCRIPT_DIR/requirements.txt
req_stamp() { { cat "$REQ_FILE"; "$VENV/bin/python" -V 2>&1; } | sha256sum | cut -d' ' -f1; }

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    log "creating venv $VENV with $PYTHON"
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV" >&2; then
        # Debian's python3 needs python3-venv (ensurepip) for this.
        rm -rf "$VENV"
        apt_install python3-venv
        "$PYTHON" -m venv "$VENV" >&2 || die "cannot create a venv with $PYTHON"
    fi
fi
venv_ok() {
    [ "$(cat "$VENV/.compat-requirements" 2>/dev/null || true)" = "$(req_stamp)" ] \
        && "$VENV/bin/python" -c 'import confluent_kafka, kafka, snappy, lz4.frame, xxhash, zstandard, fastavro, confluent_kafka.schema_registry.avro' 2>/dev/null
}
if ! venv_ok; then
    log "pip install -r tests/compat/requirements.txt"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --prefer-binary -r "$REQ_FILE" >&2 \
        || die "pip install failed"
    req_stamp >"$VENV/.compat-requirements"
fi
PY=$VENV/bin/python

# ---------------------------------------------------------------- 2. broker binary

RUNNEL=${RUNNEL_BIN:-$REPO_ROOT/target/release/runnel}
if [ ! -x "$RUNNEL" ]; then
    [ -z "${RUNNEL_BIN:-}" ] || die "RUNNEL_BIN=$RUNNEL is not an executable"
    log "building the broker: cargo build --release --bin runnel"
    cargo build --release --bin runnel >&2
fi
[ -x "$RUNNEL" ] || die "no runnel binary at $RUNNEL"

# ---------------------------------------------------------------- 3. broker

WORK=$(mktemp -d "${TMPDIR:-/tmp}/runnel-compat.XXXXXX")
BROKER_LOG=$WORK/broker.log
DATA_DIR=$WORK/data
# Broker config (--config): consumer group timings short enough for tests.
# A new group waits group_initial_rebalance_delay_ms (Kafka default 3 s)
# before its first assignment; consumers use session.timeout.ms 6000 and
# short heartbeat intervals, which the minimum session timeout must allow.
BROKER_CONFIG=$WORK/broker.yaml
cat >"$BROKER_CONFIG" <<'YAML'
group_initial_rebalance_delay_ms: 200
group_min_session_timeout_ms: 1000
YAML
BROKER_PID=
PORT=
REGISTRY_PORT=

stop_broker() {
    # Sends SIGTERM, waits up to $1 seconds, then SIGKILL. Returns the
    # broker's exit status (137 when it had to be killed).
    local grace=${1:-10} i status=0
    [ -n "$BROKER_PID" ] || return 0
    if kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        for ((i = 0; i < grace * 10; i++)); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$BROKER_PID" 2>/dev/null; then
            log "broker did not stop within ${grace}s of SIGTERM; killing it"
            kill -KILL "$BROKER_PID" 2>/dev/null || true
        fi
    fi
    wait "$BROKER_PID" 2>/dev/null || status=$?
    BROKER_PID=
    return "$status"
}

cleanup() {
    local rc=$?
    stop_broker 5 || true
    # The 3-node cluster's nodes (section 7), if any still run.
    for pidfile in "$WORK"/cluster/node-*.pid; do
        [ -e "$pidfile" ] && kill -KILL "$(cat "$pidfile")" 2>/dev/null || true
    done
    if [ "${COMPAT_KEEP_TMP:-0}" = 1 ]; then
        log "kept $WORK (broker log: $BROKER_LOG)"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Starts the broker on $PORT (chosen here unless given) and waits until the
# port accepts connections (20s).
start_broker() {
    local want_port=${1:-} i
    for _ in 1 2 3; do
        PORT=${want_port:-$(free_port)}
        [ -n "$want_port" ] && [ -n "$REGISTRY_PORT" ] || REGISTRY_PORT=$(free_port)
        RUNNEL_LOG=${RUNNEL_LOG:-info,runnel_core::server=debug} NO_COLOR=1 \
            "$RUNNEL" serve --config "$BROKER_CONFIG" --data-dir "$DATA_DIR" --kafka-addr "127.0.0.1:$PORT" \
            --registry-addr "127.0.0.1:$REGISTRY_PORT" --connect-addr off --admin-addr 127.0.0.1:0 \
            --default-partitions 1 --auto-create-topics true >>"$BROKER_LOG" 2>&1 &
        BROKER_PID=$!
        for ((i = 0; i < 200; i++)); do
            if port_open "$PORT" && port_open "$REGISTRY_PORT"; then
                log "broker pid $BROKER_PID listening on 127.0.0.1:$PORT, schema registry on $REGISTRY_PORT (data $DATA_DIR)"
                return 0
            fi
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$BROKER_PID" 2>/dev/null; then
            stop_broker 2 || true
            log "broker did not accept connections on port $PORT within 20s"
            tail -n 20 "$BROKER_LOG" >&2
            return 1
        fi
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=
        if [ -z "$want_port" ] && grep -q 'Address already in use' "$BROKER_LOG"; then
            log "port $PORT was taken; retrying with another"
            continue
        fi
        log "broker exited during startup:"
        tail -n 20 "$BROKER_LOG" >&2
        return 1
    done
    return 1
}

log "runnel: $RUNNEL ($("$RUNNEL" --version 2>/dev/null || echo unknown version))"
start_broker || die "could not start the broker"
BOOTSTRAP=127.0.0.1:$PORT
RUN_ID=$(date +%s)-$$

# ---------------------------------------------------------------- check runner

PASSED=0
FAILED=0
SKIPPED=0
FAILED_NAMES=()

# check NAME FUNC ARGS...: runs FUNC, prints PASS/FAIL with its output on
# failure. FUNC must return non-zero on failure (errexit does not apply
# inside a function run as a condition, so each one checks explicitly).
check() {
    local name=$1 out rc t0 t1
    shift
    out=$WORK/check.out
    t0=$(date +%s.%N)
    if "$@" >"$out" 2>&1; then rc=0; else rc=$?; fi
    t1=$(date +%s.%N)
    local secs
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    if [ "$rc" -eq 0 ]; then
        PASSED=$((PASSED + 1))
        printf 'PASS      %s (%ss)\n' "$name" "$secs"
    elif [ "$rc" -eq 77 ]; then
        SKIPPED=$((SKIPPED + 1))
        printf 'SKIP      %s: %s\n' "$name" "$(tail -n 1 "$out")"
    else
        FAILED=$((FAILED + 1))
        FAILED_NAMES+=("$name")
        printf 'FAIL      %s (%ss)\n' "$name" "$secs"
        sed -e 's/^/          /' "$out" | head -n 40
    fi
    return 0
}

# ---------------------------------------------------------------- 4. kcat

KCAT_VERSION=$(kcat -V 2>&1 | sed -n 's/^Version \([^ ]*\).*librdkafka \([^ ]*\).*/kcat \1, librdkafka \2/p')
echo "--- ${KCAT_VERSION:-kcat}"

kcat_metadata() {
    local md
    md=$(timeout --foreground 20 kcat -b "$BOOTSTRAP" -L -m 10 2>&1) || { echo "kcat -L failed: $md"; return 1; }
    echo "$md"
    grep -qF "broker 0 at 127.0.0.1:$PORT" <<<"$md" || { echo "broker 0 at 127.0.0.1:$PORT not listed"; return 1; }
    grep -qE '^ *1 brokers:' <<<"$md" || { echo "expected exactly 1 broker"; return 1; }
}
check "kcat -L: metadata lists broker 0 at 127.0.0.1:$PORT" kcat_metadata

kcat_topic() { echo "compat-kcat-$1-$RUN_ID"; }

# Input lines key:value (first ':' separates them); values are compressible.
for codec in "${CODECS[@]}"; do
    awk -v n="$KCAT_RECORDS" -v codec="$codec" 'BEGIN {
        for (i = 0; i < n; i++) {
            pad = ""; for (j = 0; j <= i % 30; j++) pad = pad "abc"
            printf "key-%02d:value-%s-%04d-%s\n", i % 13, codec, i, pad
        }
    }' >"$WORK/kcat-$codec.in"
    sed 's/:/=/' "$WORK/kcat-$codec.in" >"$WORK/kcat-$codec.expected"
done

kcat_produce() {
    local codec=$1 topic err
    topic=$(kcat_topic "$codec")
    err=$WORK/kcat-$codec.produce.err
    if ! timeout --foreground 60 kcat -b "$BOOTSTRAP" -P -t "$topic" -K: -z "$codec" -X acks=all \
        <"$WORK/kcat-$codec.in" 2>"$err"; then
        echo "kcat -P exited non-zero:"; cat "$err"; return 1
    fi
    if grep -qiE 'error|fail' "$err"; then
        echo "kcat -P reported errors:"; cat "$err"; return 1
    fi
}

# kcat_consume CODEC OFFSET: consumes the whole topic and compares exactly.
kcat_consume() {
    local codec=$1 start=$2 topic out
    topic=$(kcat_topic "$codec")
    out=$WORK/kcat-$codec.$start.out
    if ! timeout --foreground 60 kcat -b "$BOOTSTRAP" -C -t "$topic" -e -o "$start" -q -f '%k=%s\n' \
        >"$out" 2>"$out.err"; then
        echo "kcat -C -o $start exited non-zero:"; head -n 10 "$out.err"; return 1
    fi
    if ! cmp -s "$WORK/kcat-$codec.expected" "$out"; then
        echo "consumed $(wc -l <"$out") lines, expected $KCAT_RECORDS; first differences:"
        diff "$WORK/kcat-$codec.expected" "$out" | head -n 10
        head -n 5 "$out.err"
        return 1
    fi
}

kcat_wire() {
    "$PY" "$SCRIPT_DIR/compat_test.py" --bootstrap "$BOOTSTRAP" inspect \
        --topic "$(kcat_topic "$1")" --codec "$1" --count "$KCAT_RECORDS"
}

for codec in "${CODECS[@]}"; do
    check "kcat -P -K: -z $codec: produce $KCAT_RECORDS keyed records (topic auto-created)" kcat_produce "$codec"
    check "kcat -C -o beginning -e: read back exactly ($codec)" kcat_consume "$codec" beginning
    check "kcat -C -o 0 -e: read back exactly ($codec)" kcat_consume "$codec" 0
    check "wire: kcat $codec batches stored as $codec, CRC ok" kcat_wire "$codec"
done

# kcat_query TOPIC TS: prints the offset kcat -Q returns for partition 0.
kcat_query() {
    local out
    out=$(timeout --foreground 30 kcat -b "$BOOTSTRAP" -Q -t "$1:0:$2" 2>&1) || { echo "kcat -Q -t $1:0:$2 failed: $out" >&2; return 1; }
    # "TOPIC [0] offset N" (": error" appended on a per-partition error)
    if ! grep -qE "\[0\] offset -?[0-9]+$" <<<"$out"; then
        echo "kcat -Q -t $1:0:$2: unexpected output: $out" >&2; return 1
    fi
    sed -nE 's/.*\[0\] offset (-?[0-9]+)$/\1/p' <<<"$out" | tail -n 1
}

kcat_offsets() {
    local topic got tsfile ts want
    topic=$(kcat_topic none)
    got=$(kcat_query "$topic" -2) || return 1
    [ "$got" = 0 ] || { echo "beginning offset (-2): expected 0, got $got"; return 1; }
    got=$(kcat_query "$topic" -1) || return 1
    [ "$got" = "$KCAT_RECORDS" ] || { echo "end offset (-1): expected $KCAT_RECORDS, got $got"; return 1; }
    # By timestamp: three produce runs 50 ms apart give three distinct
    # timestamp groups (kcat cannot set timestamps itself).
    topic=compat-kcat-ts-$RUN_ID
    for batch in a b c; do
        printf "$batch-%d:v\n" 0 1 2 3 4 | timeout --foreground 30 kcat -b "$BOOTSTRAP" -P -t "$topic" -K: 2>&1 \
            || { echo "kcat -P to $topic failed"; return 1; }
        sleep 0.05
    done
    # Timestamps as stored, read with -o 0 (no ListOffsets involved).
    tsfile=$WORK/kcat-ts.ts
    timeout --foreground 60 kcat -b "$BOOTSTRAP" -C -t "$topic" -e -o 0 -q -f '%o %T\n' >"$tsfile" 2>/dev/null \
        || { echo "kcat -C -f '%o %T' failed"; return 1; }
    [ "$(wc -l <"$tsfile")" -eq 15 ] || { echo "could not read the timestamps:"; cat "$tsfile"; return 1; }
    for probe in 0 5 7 10 14; do
        ts=$(awk -v n="$probe" '$1 == n { print $2 }' "$tsfile")
        want=$(awk -v t="$ts" '$2 >= t { print $1; exit }' "$tsfile")
        got=$(kcat_query "$topic" "$ts") || return 1
        [ "$got" = "$want" ] || { echo "offset for timestamp $ts (of offset $probe): expected $want, got $got"; cat "$tsfile"; return 1; }
    done
    ts=$(awk '{ t = $2 } END { printf "%.0f\n", t + 60000 }' "$tsfile")
    got=$(kcat_query "$topic" "$ts") || return 1
    [ "$got" = -1 ] || { echo "offset for a timestamp past the end ($ts): expected -1, got $got"; return 1; }
    echo "beginning 0, end $KCAT_RECORDS, by timestamp ok"
}
check "kcat -Q: list offsets (beginning/end) and offsets for timestamps" kcat_offsets

# kcat -G: balanced consumer (group join, auto commit on close). The topic
# has 3 partitions (created with compat_test.py create-topic: kcat cannot
# create topics, and auto-created topics get 1 partition). The first run
# must print every record once; the second run of the same group must print
# only the records produced after the first run.
KCAT_GROUP_TOPIC=compat-kcat-group-$RUN_ID
KCAT_GROUP=compat-kcat-group-$RUN_ID
KCAT_GROUP_RECORDS=300
KCAT_GROUP_MORE=20
for batch in 1 2; do
    awk -v first="$([ "$batch" = 1 ] && echo 0 || echo "$KCAT_GROUP_RECORDS")" \
        -v n="$([ "$batch" = 1 ] && echo "$KCAT_GROUP_RECORDS" || echo "$KCAT_GROUP_MORE")" 'BEGIN {
        for (i = first; i < first + n; i++) printf "key-%02d:group-value-%04d\n", i % 17, i
    }' >"$WORK/kcat-group-$batch.in"
    sed 's/:/=/' "$WORK/kcat-group-$batch.in" | sort >"$WORK/kcat-group-$batch.expected"
done

kcat_group_produce() {
    local batch=$1 err=$WORK/kcat-group-produce-$1.err
    if ! timeout --foreground 60 kcat -b "$BOOTSTRAP" -P -t "$KCAT_GROUP_TOPIC" -K: -X acks=all \
        <"$WORK/kcat-group-$batch.in" 2>"$err"; then
        echo "kcat -P exited non-zero:"; cat "$err"; return 1
    fi
    if grep -qiE 'error|fail' "$err"; then echo "kcat -P reported errors:"; cat "$err"; return 1; fi
}

kcat_group_setup() {
    "$PY" "$SCRIPT_DIR/compat_test.py" --bootstrap "$BOOTSTRAP" create-topic \
        --topic "$KCAT_GROUP_TOPIC" --partitions 3 || return 1
    kcat_group_produce 1 || return 1
    # The keys must have spread over all 3 partitions, or the group test
    # would not cover a multi-partition assignment.
    local parts
    parts=$(timeout --foreground 60 kcat -b "$BOOTSTRAP" -C -t "$KCAT_GROUP_TOPIC" -o 0 -e -q -f '%p\n' \
        2>/dev/null | sort -u | tr '\n' ' ')
    [ "$parts" = "0 1 2 " ] || { echo "records landed in partitions '$parts', expected 0 1 2"; return 1; }
    touch "$WORK/kcat-group.ready"
}

# kcat_group_consume RUN EXPECTED: one balanced-consumer run of the group
# (auto.offset.reset=earliest for a group without offsets; no -o, since -o
# would override the committed offsets), compared with EXPECTED (sorted,
# the partitions interleave).
kcat_group_consume() {
    local run=$1 expected=$2 out=$WORK/kcat-group-run$1.out
    if ! timeout --foreground 60 kcat -b "$BOOTSTRAP" -G "$KCAT_GROUP" -X auto.offset.reset=earliest \
        -e -q -f '%p %o %k=%s\n' "$KCAT_GROUP_TOPIC" >"$out" 2>"$out.err"; then
        echo "kcat -G (run $run) exited non-zero:"; head -n 10 "$out.err"; return 1
    fi
    local dups
    dups=$(cut -d' ' -f1,2 "$out" | sort | uniq -d | head -n 5)
    [ -z "$dups" ] || { echo "records consumed twice (partition offset): $dups"; return 1; }
    if ! cut -d' ' -f3- "$out" | sort | cmp -s "$expected" -; then
        echo "run $run consumed $(wc -l <"$out") records, expected $(wc -l <"$expected"); first differences:"
        cut -d' ' -f3- "$out" | sort | diff "$expected" - | head -n 10
        head -n 5 "$out.err"
        return 1
    fi
}

# Exit status 77 makes check() report a SKIP.
kcat_group_first() {
    [ -e "$WORK/kcat-group.ready" ] || { echo "prerequisite check failed"; return 77; }
    kcat_group_consume 1 "$WORK/kcat-group-1.expected" || return 1
    touch "$WORK/kcat-group.first-ok"
}
kcat_group_second() {
    [ -e "$WORK/kcat-group.first-ok" ] || { echo "prerequisite check failed"; return 77; }
    kcat_group_produce 2 || return 1
    kcat_group_consume 2 "$WORK/kcat-group-2.expected"
}

check "kcat -P: $KCAT_GROUP_RECORDS keyed records to a 3-partition topic for the group checks" kcat_group_setup
check "kcat -G: balanced consumer reads all $KCAT_GROUP_RECORDS records of 3 partitions exactly once" kcat_group_first
check "kcat -G: a second run of the group reads only the $KCAT_GROUP_MORE records produced since" kcat_group_second

# ---------------------------------------------------------------- 5. Python clients

echo "--- Python clients ($("$PY" -V 2>&1))"
PY_RESULTS=$WORK/python-results.json
PY_RC=0
timeout --foreground 300 "$PY" "$SCRIPT_DIR/compat_test.py" --bootstrap "$BOOTSTRAP" --records "$RECORDS" \
    --results "$PY_RESULTS" || PY_RC=$?
PY_PASSED=0 PY_FAILED=0 PY_SKIPPED=0 PY_GAPS=0
if [ -s "$PY_RESULTS" ]; then
    read -r PY_PASSED PY_FAILED PY_SKIPPED PY_GAPS < <("$PY" -c '
import json, sys
c = json.load(open(sys.argv[1]))["counts"]
print(c["PASS"], c["FAIL"], c["SKIP"], c["KNOWN-GAP"])' "$PY_RESULTS")
    if [ "$PY_RC" -ne 0 ] && [ "$PY_FAILED" -eq 0 ]; then
        PY_FAILED=1
        FAILED_NAMES+=("compat_test.py exited $PY_RC")
    fi
    while IFS= read -r name; do
        [ -n "$name" ] && FAILED_NAMES+=("$name")
    done < <("$PY" -c '
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    if r["status"] == "FAIL":
        print(r["name"])' "$PY_RESULTS")
else
    PY_FAILED=1
    FAILED_NAMES+=("compat_test.py crashed or timed out (exit $PY_RC, no results)")
fi

# ---------------------------------------------------------------- 5b. schema registry

echo "--- schema registry (confluent-kafka SchemaRegistryClient, AvroSerializer, AvroDeserializer)"
sr_python() {
    timeout --foreground 180 "$PY" "$SCRIPT_DIR/schema_registry_test.py" \
        --bootstrap "$BOOTSTRAP" --registry "http://127.0.0.1:$REGISTRY_PORT"
}
check "confluent-kafka schema registry client: register, evolve, 409, produce/consume Avro with broker-side validation" sr_python

# kafkajs and @kafkajs/confluent-schema-registry, pinned in node/package-lock.json.
NODE_DIR=$SCRIPT_DIR/node
# Returns 77 (SKIP) without node and npm, 1 if npm ci fails.
node_deps() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        echo "node and npm are not installed"; return 77
    fi
    if [ ! -d "$NODE_DIR/node_modules/kafkajs" ]; then
        (cd "$NODE_DIR" && timeout 300 npm ci --no-audit --no-fund --ignore-scripts) || { echo "npm ci failed"; return 1; }
    fi
}
node_sr() {
    node_deps || return $?
    timeout --foreground 120 node "$NODE_DIR/schema_registry_test.js" "$BOOTSTRAP" "http://127.0.0.1:$REGISTRY_PORT"
}
check "kafkajs + @kafkajs/confluent-schema-registry: register, 409, produce/consume Avro with broker-side validation" node_sr

# ---------------------------------------------------------------- 6. shutdown, restart

echo "--- broker lifecycle"
graceful_stop() {
    local status=0 pid=$BROKER_PID
    stop_broker 15 || status=$?
    [ "$status" -eq 0 ] || { echo "broker pid $pid exited with status $status after SIGTERM"; tail -n 5 "$BROKER_LOG"; return 1; }
    if port_open "$PORT"; then echo "port $PORT still accepts connections"; return 1; fi
}
check "broker exits 0 on SIGTERM and frees its port" graceful_stop

restart_read_back() {
    if [ -n "$BROKER_PID" ]; then stop_broker 5 || true; fi
    start_broker "$PORT" || { echo "restart failed"; return 1; }
    kcat_consume zstd 0
}
check "restart on the same data dir: kcat reads back the zstd topic" restart_read_back

# ---------------------------------------------------------------- 7. 3-node cluster

# Three `runnel serve` nodes on loopback, every one a voter of the metadata
# quorum, started and killed through $CLUSTER/node, which the client scripts
# call too: `node start ID`, `node kill ID` (SIGKILL), `node stop ID`
# (SIGTERM, then a clean exit is checked). Failover is shortened (a silent
# broker is fenced after 3 s instead of 9 s) to keep the run short.
echo "--- 3-node cluster (partition leader SIGKILLed under an idempotent acks=all producer)"
CLUSTER=$WORK/cluster
mkdir -p "$CLUSTER"
QUORUM=
CLUSTER_BOOTSTRAP=
for id in 1 2 3; do
    free_port >"$CLUSTER/node-$id.kafka-port"
    free_port >"$CLUSTER/node-$id.controller-port"
    QUORUM+="${QUORUM:+,}$id@127.0.0.1:$(cat "$CLUSTER/node-$id.controller-port")"
    CLUSTER_BOOTSTRAP+="${CLUSTER_BOOTSTRAP:+,}127.0.0.1:$(cat "$CLUSTER/node-$id.kafka-port")"
done
# Written with this run's paths and quorum; \$ marks what it expands itself.
cat >"$CLUSTER/node" <<NODE_SCRIPT
#!/usr/bin/env bash
# node start|kill|stop ID: one node of the compat run's 3-node cluster.
set -euo pipefail
action=\$1 id=\$2
dir=$CLUSTER
pidfile=\$dir/node-\$id.pid
port=\$(cat "\$dir/node-\$id.kafka-port")
# Exited, even if not reaped yet (its parent is gone; a zombie's state is Z).
gone() {
    local pid
    pid=\$(cat "\$pidfile")
    ! kill -0 "\$pid" 2>/dev/null || [ "\$(awk '{ print \$3 }' "/proc/\$pid/stat" 2>/dev/null)" = Z ]
}
case \$action in
start)
    RUNNEL_LOG=\${RUNNEL_LOG:-info} NO_COLOR=1 "$RUNNEL" serve --config "$BROKER_CONFIG" \\
        --node-id "\$id" --controller-quorum "$QUORUM" \\
        --controller-addr "127.0.0.1:\$(cat "\$dir/node-\$id.controller-port")" \\
        --kafka-addr "127.0.0.1:\$port" --data-dir "\$dir/node-\$id" \\
        --registry-addr off --connect-addr off --admin-addr 127.0.0.1:0 \\
        --broker-session-timeout-ms 3000 --replica-lag-time-max-ms 3000 \\
        >>"\$dir/node-\$id.log" 2>&1 </dev/null &
    echo \$! >"\$pidfile"
    for _ in \$(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/\$port") 2>/dev/null && exit 0
        gone && { echo "node \$id exited during startup:"; tail -n 20 "\$dir/node-\$id.log"; exit 1; }
        sleep 0.1
    done
    echo "node \$id does not listen on \$port after 30 s"; exit 1 ;;
kill)
    kill -KILL "\$(cat "\$pidfile")"
    for _ in \$(seq 100); do gone && exit 0; sleep 0.1; done
    echo "node \$id still runs after SIGKILL"; exit 1 ;;
stop)
    pid=\$(cat "\$pidfile")
    kill -TERM "\$pid"
    for _ in \$(seq 300); do gone && break; sleep 0.1; done
    gone || { echo "node \$id did not stop within 30 s of SIGTERM"; kill -KILL "\$pid"; exit 1; }
    # Not our child, so no exit status: a clean stop ends with these lines.
    tail -n 3 "\$dir/node-\$id.log" | grep -q 'metadata controller stopped' \\
        || { echo "node \$id did not stop cleanly:"; tail -n 5 "\$dir/node-\$id.log"; exit 1; } ;;
*)
    echo "usage: node start|kill|stop ID"; exit 2 ;;
esac
NODE_SCRIPT
chmod +x "$CLUSTER/node"

cluster_start() {
    local id md=
    for id in 1 2 3; do "$CLUSTER/node" start "$id" || return 1; done
    # Every node registered: a topic with 3 replicas can be created.
    for _ in $(seq 100); do
        md=$(timeout --foreground 10 kcat -b "$CLUSTER_BOOTSTRAP" -L -m 5 2>&1) || true
        if grep -qE '^ *3 brokers:' <<<"$md"; then
            sed -n '1,5p' <<<"$md"
            touch "$CLUSTER/ready"
            return 0
        fi
        sleep 0.2
    done
    echo "the cluster does not list 3 brokers after 20 s:"; echo "$md"; return 1
}
cluster_client() {
    [ -e "$CLUSTER/ready" ] || { echo "the cluster did not start"; return 77; }
    timeout --foreground 150 "$PY" "$SCRIPT_DIR/cluster_test.py" --bootstrap "$CLUSTER_BOOTSTRAP" \
        --node-cmd "$CLUSTER/node" --client "$1"
}
cluster_kafkajs() {
    [ -e "$CLUSTER/ready" ] || { echo "the cluster did not start"; return 77; }
    node_deps || return $?
    timeout --foreground 150 node "$NODE_DIR/cluster_test.js" "$CLUSTER_BOOTSTRAP" "$CLUSTER/node"
}
cluster_stop() {
    [ -e "$CLUSTER/ready" ] || { echo "the cluster did not start"; return 77; }
    local id rc=0
    for id in 1 2 3; do "$CLUSTER/node" stop "$id" || rc=1; done
    return "$rc"
}
check "3-node cluster: three voters of one metadata quorum start and list each other" cluster_start
check "confluent-kafka on 3 nodes: RF 3 topic, leader SIGKILLed mid-stream and restarted, every acknowledged record read back once" cluster_client confluent
check "kafka-python on 3 nodes: RF 3 topic, leader SIGKILLed mid-stream and restarted, every acknowledged record read back once" cluster_client kafka-python
check "kafkajs on 3 nodes: RF 3 topic, leader SIGKILLed mid-stream and restarted, every acknowledged record read back once" cluster_kafkajs
check "3-node cluster: every node stops cleanly on SIGTERM" cluster_stop

# ---------------------------------------------------------------- 8. summary

TOTAL_PASSED=$((PASSED + PY_PASSED))
TOTAL_FAILED=$((FAILED + PY_FAILED))
TOTAL_SKIPPED=$((SKIPPED + PY_SKIPPED))
ELAPSED=$(($(date +%s) - START_TIME))

echo
echo "==== Runnel client compatibility: $([ "$TOTAL_FAILED" -eq 0 ] && echo PASS || echo FAIL) (${ELAPSED}s) ===="
echo "kcat/broker checks:  $PASSED passed, $FAILED failed, $SKIPPED skipped  (${KCAT_VERSION:-kcat})"
echo "Python checks:       $PY_PASSED passed, $PY_FAILED failed, $PY_SKIPPED skipped, $PY_GAPS known gap(s)  ($("$PY" -c 'import confluent_kafka as c, kafka as k; print("confluent-kafka %s / librdkafka %s, kafka-python %s" % (c.__version__, c.libversion()[0], k.__version__))'))"
if [ "${#FAILED_NAMES[@]}" -gt 0 ]; then
    echo "Failed checks:"
    printf '  - %s\n' "${FAILED_NAMES[@]}"
fi
if [ "$TOTAL_FAILED" -gt 0 ]; then
    if [ "${COMPAT_KEEP_TMP:-0}" = 1 ]; then
        echo "Broker log warnings/errors (full log kept: $BROKER_LOG):"
    else
        echo "Broker log warnings/errors (COMPAT_KEEP_TMP=1 keeps the full log and data):"
    fi
    sed -e 's/\x1b\[[0-9;]*m//g' "$BROKER_LOG" | grep -aE ' (WARN|ERROR) |connection ended error=' \
        | sed -E 's/^[^ ]+ +//; s/peer=[0-9.:]+/peer=*/' | awk '!seen[$0]++' | head -n 20 \
        | sed -e 's/^/  /' | grep . || echo "  (none)"
    echo "The 3-node cluster's logs: $CLUSTER/node-{1,2,3}.log"
fi
echo "compat: $TOTAL_PASSED passed, $TOTAL_FAILED failed, $TOTAL_SKIPPED skipped"
[ "$TOTAL_FAILED" -eq 0 ]
