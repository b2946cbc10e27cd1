#!/usr/bin/env python3
"""`runnel consume --group` against `runnel consume` (assigned partitions,
no group), in the same run, on one broker.

Starts a broker in a temp dir, writes RECORDS records of 100 bytes to a
topic of 4 partitions with `runnel produce`, then reads the whole topic
REPEAT times with each command in turn (A B A B ...), a new group each
time, output to a pipe this script drains. For each read it reports:

- wall: from starting the command to its exit (a group's join waits for
  the broker's group.initial.rebalance.delay.ms, 3000 ms by default);
- rate: records per second from the first output to the last.

Usage: scripts/bench-consume-group.py [--records 2000000] [--repeat 3]
       [--bin target/release/runnel]
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_all(cmd):
    """Runs cmd, drains its stdout; returns (records, wall_s, rate)."""
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    first = last = None
    lines = 0
    while True:
        chunk = p.stdout.read1(1 << 20)
        if not chunk:
            break
        now = time.monotonic()
        if first is None:
            first = now
        last = now
        lines += chunk.count(b"\n")
    if p.wait() != 0:
        sys.exit(f"{' '.join(cmd)} exited {p.returncode}")
    wall = time.monotonic() - start
    span = (last - first) if first is not None else 0.0
    return lines, wall, (lines / span if span > 0 else float("nan"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bin", default="target/release/runnel")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="runnel-bench-")
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = subprocess.Popen(
        [args.bin, "serve", "--data-dir", f"{tmp}/data",
         "--kafka-addr", bootstrap, "--registry-addr", "off", "--connect-addr", "off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("the broker did not start")
                time.sleep(0.1)
        env = dict(os.environ, RUNNEL_BOOTSTRAP=bootstrap)
        subprocess.run([args.bin, "topic", "create", "bench", "-p", "4"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        value = "x" * 100
        data = "".join(f"{value}\n" for _ in range(args.records)).encode()
        t = time.monotonic()
        subprocess.run([args.bin, "produce", "bench", "--brokers", bootstrap],
                       input=data, check=True, stderr=subprocess.DEVNULL)
        print(f"produced {args.records} records of 100 B in {time.monotonic() - t:.1f} s")
        plain = [args.bin, "consume", "bench", "-B", "-e", "--brokers", bootstrap]
        results = {"group": [], "plain": []}
        for i in range(args.repeat):
            for name in ("group", "plain"):
                cmd = plain + (["--group", f"bench-{i}"] if name == "group" else [])
                n, wall, rate = read_all(cmd)
                if n != args.records:
                    sys.exit(f"{name}: read {n} of {args.records} records")
                results[name].append((wall, rate))
                print(f"run {i + 1} {name:5}: wall {wall:6.2f} s, "
                      f"first to last record {rate:12.0f} records/s")
        med = {k: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v))
               for k, v in results.items()}
        print(f"median group: wall {med['group'][0]:.2f} s, {med['group'][1]:.0f} records/s")
        print(f"median plain: wall {med['plain'][0]:.2f} s, {med['plain'][1]:.0f} records/s")
        print(f"group/plain: rate {med['group'][1] / med['plain'][1]:.0%}, "
              f"wall {med['plain'][0] / med['group'][0]:.0%} (plain wall / group wall)")
    finally:
        broker.terminate()
        broker.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
