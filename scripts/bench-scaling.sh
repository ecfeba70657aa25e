#!/usr/bin/env bash
# Limiter::decide and memory per key as the memory store's key count grows from 1k to 10M, for
# the token bucket and the fixed window, deciding one request at a time (batch 1, decide()) and
# 16 at a time (decide_batch()): one fresh process per key count, algorithm and batch size. About
# two and a half minutes. Writes the JSON lines to <build-dir>/bench/scaling.jsonl and plots them
# into docs/img/scaling.png (needs Debian's python3-matplotlib).
#
#   scripts/bench-scaling.sh [build-dir]     (KEYS=1000,10000,... ALGORITHMS="token_bucket fixed_window"
#                                             BATCHES="1 16" SECONDS_PER_RUN=1 REPEATS=3)
set -euo pipefail
build=${1:-build}
keys=${KEYS:-1000,10000,100000,1000000,3000000,10000000}
algorithms=${ALGORITHMS:-token_bucket fixed_window}
batches=${BATCHES:-1 16}
seconds=${SECONDS_PER_RUN:-1}
repeats=${REPEATS:-3}
here=$(cd "$(dirname "$0")" && pwd)
out="$build/bench/scaling.jsonl"
mkdir -p "$build/bench"
: >"$out"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in ${keys//,/ }; do
  for a in $algorithms; do
    for b in $batches; do
      "$build/bin/sluice_bench_scaling" --keys "$n" --algorithm "$a" --batch "$b" \
        --seconds "$seconds" --repeats "$repeats" | tee -a "$out"
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); results: $out"
/usr/bin/python3 "$here/plot-scaling.py" "$out" "$here/../docs/img/scaling.png"
