#!/bin/bash
cd $(dirname "$0")
cargo build --release
mkdir -p results
for r in 1 2 3; do
  ./run.sh bench redb redb-sync redb-sync100 fjall fjall-sync fjall-tx > results/bench-r$r.log 2>&1
done
./run.sh crash redb redb-sync redb-sync100 fjall fjall-sync > results/crash.log 2>&1
SETTLE=1 FJALL_FLUSH_ON_CLOSE=1 ./run.sh bench fjall redb > results/settle-flush.log 2>&1
FJALL_MEMTABLE_MB=16 ./run.sh bench fjall > results/memtable16.log 2>&1
FJALL_MEMTABLE_MB=16 ./run.sh crash fjall > results/memtable16-crash.log 2>&1
./run.sh bench redb fjall -- --cache-mb 256 > results/cache256.log 2>&1
echo done > results/ALLDONE
