#!/usr/bin/env bash
# Runs sluice's benchmarks and prints medians. Usage: scripts/bench.sh [build-dir] [filter]
# Results are also written to <build-dir>/bench/ as JSON for docs/benchmarks.md.
set -euo pipefail
build=${1:-build}
filter=${2:-.}
out="$build/bench"
mkdir -p "$out"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$build/bin/sluice_bench_limiter" \
  --benchmark_filter="$filter" \
  --benchmark_min_time=0.5 \
  --benchmark_repetitions=3 \
  --benchmark_report_aggregates_only=true \
  --benchmark_display_aggregates_only=true \
  --benchmark_out="$out/limiter.json" --benchmark_out_format=json \
  | grep -E "median|Benchmark|---|Memory" || true
echo "full results: $out/limiter.json"

# Decisions/s through the Redis store beside redis-benchmark running the same EVALSHA (the
# ceiling), three runs; then latency at half load.
if [ -x "$build/bin/sluice_bench_redis" ] && [ "$filter" = "." ]; then
  for run in 1 2 3; do
    echo "redis run $run:"
    "$build/bin/sluice_bench_redis" --seconds 4 | sed 's/^/  /'
  done
fi

# The server beside the no-op server (the ceiling), over gRPC and HTTP.
if [ -x "$build/bin/sluice-bench" ] && [ "$filter" = "." ]; then
  echo "server:"
  bash "$(dirname "$0")/bench-server.sh" "$build" | sed 's/^/  /'
fi
