#!/bin/bash
# Runs engine configs sequentially. Before each run waits until the machine is idle
# (other processes < 0.25 core over 3 s); after each run prints how much CPU other
# processes used during it ("foreign" cores), so contended runs can be discarded.
# usage: ./run.sh <bench|crash> <engine>... [-- extra args]; env passes through.
B=$(dirname "$0")/target/release/storebench
mode=$1; shift
engines=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do engines+=("$1"); shift; done; [ "$1" = "--" ] && shift
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
wait_idle() {
  for i in $(seq 1 600); do
    a=$(busy); sleep 3; b=$(busy)
    [ $((b - a)) -lt 75 ] && return 0   # < 0.25 core (100 ticks/s)
  done; echo "(gave up waiting for idle)"
}
for e in "${engines[@]}"; do
  wait_idle
  a=$(busy); t0=$(date +%s.%N)
  out=$( { /usr/bin/time -f "CPU %U %S" $B $mode $e "$@"; } 2>&1 )
  b=$(busy); t1=$(date +%s.%N)
  echo "$out"
  mine=$(echo "$out" | awk '/^CPU /{print ($2+$3)*100}')
  echo "$e: wall $(echo "$t1 - $t0" | bc) s, foreign CPU $(echo "scale=2; ($b - $a - $mine) / 100 / ($t1 - $t0)" | bc) cores"
done
