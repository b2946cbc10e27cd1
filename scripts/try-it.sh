#!/usr/bin/env bash
# Runs the README's "Try it" section as written, from the repository's
# root, and checks what each step is said to print: the shell blocks are
# read from README.md itself, so a step that stops working, or a README
# edit that breaks a step, fails here.
#
#   scripts/try-it.sh           # after `cargo build --release`; ~2-4 min
#
# The single broker runs with the README's default ports (9092, 8081,
# 8083, 9644), the 3-node cluster on 9092-9094: nothing else may hold
# them. Data goes to a temporary directory (RUNNEL_DATA_DIR) instead of
# ./runnel-data; the files the steps create in the repository (user.avsc,
# shout/) and in /tmp are removed before and after.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
log=$work/try-it.log
serve_pid=""
cluster_pid=""

cleanup() {
    [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
    [ -n "$cluster_pid" ] && kill "$cluster_pid" 2>/dev/null && wait "$cluster_pid" 2>/dev/null
    pkill -f 'target/release/examples/word_count' 2>/dev/null
    rm -rf "$root/user.avsc" "$root/shout" /tmp/in.txt /tmp/out.txt /tmp/runnel-dev
    rm -rf "$work"
}
trap cleanup EXIT
cleanup_files() { rm -rf "$root/user.avsc" "$root/shout" /tmp/in.txt /tmp/out.txt /tmp/runnel-dev; }
cleanup_files

fail() {
    echo "try-it: $*" >&2
    echo "---- output ----" >&2
    cat "$log" >&2
    exit 1
}

# The section's ```sh blocks, one file each: block-1.sh, block-2.sh, ...
awk -v dir="$work" '
    /^## Try it/ { inside = 1; next }
    /^## / && inside { exit }
    inside && /^```sh/ { n++; file = dir "/block-" n ".sh"; printf "" > file; next }
    inside && /^```/ && file { file = ""; next }
    file { print >> file }
' README.md
blocks=$(ls "$work"/block-*.sh 2>/dev/null | wc -l)
[ "$blocks" -eq 4 ] || fail "expected 4 shell blocks in README's Try it section, found $blocks"

export RUNNEL_DATA_DIR=$work/data
: > "$log"

# Block 1: build and PATH.
# shellcheck disable=SC1090
source "$work/block-1.sh" >>"$log" 2>&1 || fail "block 1 (build) failed"
command -v runnel | grep -q "$root/target/release/runnel" || fail "runnel is not on PATH after block 1"

# Block 2: `runnel serve`, in the background here.
grep -qx 'runnel serve' "$work/block-2.sh" || fail "block 2 is not 'runnel serve'"
runnel serve >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 150); do
    curl -sf http://127.0.0.1:9644/v1/status/ready >/dev/null && break
    sleep 0.2
done
curl -sf http://127.0.0.1:9644/v1/status/ready >/dev/null || { cat "$work/serve.log" >&2; fail "runnel serve did not get ready"; }

# Block 3: everything, as written. Only the step said to be refused may
# fail; each step's promised output is checked below.
failed=$work/failed
: > "$failed"
(
    trap 'echo "$BASH_COMMAND" >> "'"$failed"'"' ERR
    set -o pipefail
    # shellcheck disable=SC1090
    source "$work/block-3.sh"
) >>"$log" 2>&1
grep -v '^runnel produce users$' "$failed" | grep . && fail "block 3: a step failed (above)"
grep -qx 'runnel produce users' "$failed" || fail "block 3: 'echo not avro | runnel produce users' was not refused"

expect() { grep -qF -- "$1" "$log" || fail "block 3 never printed: $1"; }
expect '"key":"alice"'
expect 'created topic orders'
expect 'registered users-value version 1 with schema id 1'
expect 'compatible with users-value'
expect '"value":{"name":"ann"}'
expect 'InvalidRecord'
expect 'first'
expect '[REDACTED]'
expect '"key":"the"'
expect 'runnel_partition_records_in_total{topic="orders"'
expect '"status":"ready"'
expect '{"TOTAL": 3}'
expect 'hello'

kill "$serve_pid"; wait "$serve_pid" 2>/dev/null; serve_pid=""

# Block 4: the 3-node cluster; its first line starts it, the rest are
# "in another terminal".
head -1 "$work/block-4.sh" | grep -q '^runnel serve --cluster-dev 3' || fail "block 4 does not start with runnel serve --cluster-dev 3"
unset RUNNEL_DATA_DIR
: > "$log"
bash -c "$(head -1 "$work/block-4.sh")" >"$work/cluster.log" 2>&1 &
cluster_pid=$!
# The block says to go on once it says "cluster ready" (every node
# registered).
for _ in $(seq 600); do
    grep -q 'cluster ready' "$work/cluster.log" && break
    sleep 0.2
done
grep -q 'cluster ready' "$work/cluster.log" || { cat "$work/cluster.log" >&2; fail "the 3-node cluster never said it was ready"; }
: > "$failed"
(
    trap 'echo "$BASH_COMMAND" >> "'"$failed"'"' ERR
    set -o pipefail
    # shellcheck disable=SC1090
    source <(tail -n +2 "$work/block-4.sh")
) >>"$log" 2>&1
grep . "$failed" && { cat "$work/cluster.log" >&2; fail "block 4: a step failed (above)"; }
expect 'controller'
kill "$cluster_pid"; wait "$cluster_pid" 2>/dev/null; cluster_pid=""
echo "try-it: the README's Try it section ran as written ($(( SECONDS ))s)"
