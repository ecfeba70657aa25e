#!/usr/bin/env bash
# Server benchmark: `sluice serve` (memory store, the example rules) beside the no-op server
# (the same gRPC and Beast code, deciding nothing: the ceiling), loaded by sluice-bench over
# gRPC and over HTTP (/json, /v1/check, /v1/authz), alternating the two servers, three rounds.
# Prints the medians and sluice's share of the ceiling.
#
#   scripts/bench-server.sh [build-dir]        (SECONDS_PER_RUN=5 ROUNDS=3 KEYS=10000 CONCURRENCY=64)
set -euo pipefail
build=${1:-build}
seconds=${SECONDS_PER_RUN:-5}
rounds=${ROUNDS:-3}
keys=${KEYS:-10000}
concurrency=${CONCURRENCY:-64}
py=/usr/bin/python3
work=$(mktemp -d /tmp/sluice-bench-server.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# wait_for PATTERN FILE: until the server logged its ports (bounded).
wait_for() {
  for _ in $(seq 100); do grep -qE "$1" "$2" 2>/dev/null && return 0; sleep 0.1; done
  echo "server did not start:" >&2; cat "$2" >&2; exit 1
}

"$build/bin/sluice" serve --http-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 >/dev/null 2>"$work/sluice.log" &
pids+=($!)
"$build/bin/sluice_noop_server" --http-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 2>"$work/noop.log" &
pids+=($!)
wait_for "serving: HTTP on" "$work/sluice.log"
wait_for "noop server: HTTP port" "$work/noop.log"
s_http=$(sed -nE 's/.*HTTP on 127\.0\.0\.1:([0-9]+).*/\1/p' "$work/sluice.log" | head -1)
s_grpc=$(sed -nE 's/.*gRPC on 127\.0\.0\.1:([0-9]+).*/\1/p' "$work/sluice.log" | head -1)
n_http=$(sed -nE 's/.*HTTP port ([0-9]+).*/\1/p' "$work/noop.log")
n_grpc=$(sed -nE 's/.*gRPC port ([0-9]+).*/\1/p' "$work/noop.log")

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "each run: ${seconds}s after 1s warmup, concurrency $concurrency, $keys keys; $rounds rounds"

run() {  # run LABEL SERVER TARGET-ARGS...
  local label=$1 server=$2
  shift 2
  "$build/bin/sluice-bench" "$@" --keys "$keys" --concurrency "$concurrency" \
    --duration "$seconds" --warmup 1 --json 2>/dev/null |
    "$py" -c "import json,sys; d=json.load(sys.stdin); d['label']='$label'; d['server']='$server'; print(json.dumps(d))" \
      >>"$work/results.jsonl" || echo "run failed: $label $server" >&2
}

for round in $(seq "$rounds"); do
  # Alternate which server goes first, so drift in the machine's load falls on both.
  if [ $((round % 2)) -eq 1 ]; then order="sluice noop"; else order="noop sluice"; fi
  for server in $order; do
    if [ "$server" = sluice ]; then h=$s_http; g=$s_grpc; else h=$n_http; g=$n_grpc; fi
    run grpc "$server" --grpc "127.0.0.1:$g"
    run "http /json" "$server" --http "127.0.0.1:$h" --endpoint json
    run "http /v1/check" "$server" --http "127.0.0.1:$h" --endpoint check
    run "http /v1/authz" "$server" --http "127.0.0.1:$h" --endpoint authz --path /api/orders --key client_ip
  done
  echo "round $round done"
done

"$py" - "$work/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
# share: the median over rounds of sluice / no-op measured back to back in the same round (the
# machine's load drifts between rounds; within a round both servers see about the same).
print(f"{'workload':<16}{'sluice req/s':>14}{'no-op req/s':>14}{'share':>8}{'sluice p99':>12}{'no-op p99':>11}   runs (sluice / no-op req/s)")
for label in ["grpc", "http /json", "http /v1/check", "http /v1/authz"]:
    s = [r for r in rows if r["label"] == label and r["server"] == "sluice"]
    n = [r for r in rows if r["label"] == label and r["server"] == "noop"]
    if not s or not n:
        continue
    sm = statistics.median(r["rps"] for r in s)
    nm = statistics.median(r["rps"] for r in n)
    sp = statistics.median(r["p99_us"] for r in s)
    np_ = statistics.median(r["p99_us"] for r in n)
    errs = sum(r["errors"] for r in s + n)
    runs = " ".join(f"{int(a['rps'])}/{int(b['rps'])}" for a, b in zip(s, n))
    share = statistics.median(a["rps"] / b["rps"] for a, b in zip(s, n))
    print(f"{label:<16}{sm:>14,.0f}{nm:>14,.0f}{share:>8.1%}{sp / 1000:>10.2f}ms{np_ / 1000:>9.2f}ms   {runs}" + (f"  ERRORS {errs}" if errs else ""))
PY
