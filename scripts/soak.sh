#!/usr/bin/env bash
# make soak / make soak-smoke: `sluice serve` under steady load from sluice-bench, its RSS sampled
# every second; passes when RSS does not grow after warm-up.
#
#   scripts/soak.sh [--smoke] [build-dir]
#
# The full soak (make soak, by hand) runs 600 s; the smoke (make soak-smoke, in make test) 60 s.
# The server: the example rules built in (remote_address 100 per second per value), the memory
# store bounded to MAX_KEYS (1,000,000; smoke 100,000), HTTP and gRPC on free loopback ports. The
# load: sluice-bench over gRPC and over HTTP (POST /json), open loop at RATE requests/s each
# (5,000), each request one of KEYS distinct addresses (10,000,000) drawn by DISTRIBUTION
# (uniform): ten times more keys than the store holds, so that it fills during warm-up and then
# evicts all along.
#
# The rule: after warm-up (the first WARMUP seconds: a fifth of the run, 20 s for the smoke), the
# samples are split into thirds by time; the soak passes when the largest RSS of the last third is
# at most the largest of the first third + 5 %, every request of the load was answered
# (sluice-bench's exit status 0), and the server was still running at the end and exited 0 on
# SIGTERM. Samples go to <build>/soak/rss.csv (milliseconds since the start, RSS in KiB); the
# summary is printed.
#
# Environment: DURATION (seconds), WARMUP, RATE, KEYS, MAX_KEYS, DISTRIBUTION (uniform, zipf,
# cycle).
set -euo pipefail
smoke=0
if [ "${1:-}" = "--smoke" ]; then
  smoke=1
  shift
fi
build=${1:-build}
if [ "$smoke" = 1 ]; then
  duration=${DURATION:-60}
  max_keys=${MAX_KEYS:-100000}
else
  duration=${DURATION:-600}
  max_keys=${MAX_KEYS:-1000000}
fi
# Warm-up: until the store has filled and evicts (smoke: 20 s; full: 120 s).
if [ "$smoke" = 1 ]; then warmup=${WARMUP:-20}; else warmup=${WARMUP:-$((duration / 5))}; fi
rate=${RATE:-5000}
keys=${KEYS:-10000000}
distribution=${DISTRIBUTION:-uniform}
sluice=$build/bin/sluice
bench=$build/bin/sluice-bench
out=$build/soak
mkdir -p "$out"
csv=$out/rss.csv
log=$out/serve.log
: >"$csv"

server=""
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$server" ]; then kill -TERM "$server" 2>/dev/null || true; fi
}
trap cleanup EXIT

"$sluice" serve --http-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 \
  --storage "memory://?max_keys=$max_keys" --log-level info >/dev/null 2>"$log" &
server=$!
http_port=""
for _ in $(seq 100); do
  if line=$(grep -o 'HTTP on 127.0.0.1:[0-9]*, gRPC on 127.0.0.1:[0-9]*' "$log" 2>/dev/null); then
    http_port=$(echo "$line" | sed 's/HTTP on 127.0.0.1:\([0-9]*\),.*/\1/')
    grpc_port=$(echo "$line" | sed 's/.*gRPC on 127.0.0.1:\([0-9]*\)/\1/')
    break
  fi
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$http_port" ]; then
  echo "soak: sluice serve did not start:" >&2
  cat "$log" >&2
  exit 1
fi
echo "soak: sluice serve (pid $server) on HTTP :$http_port, gRPC :$grpc_port, memory://?max_keys=$max_keys;" \
  "${duration}s of ${rate}/s over gRPC and ${rate}/s over HTTP /json, $keys keys ($distribution), warm-up ${warmup}s"

load=(--keys "$keys" --key-distribution "$distribution" --rate "$rate" --duration "$duration"
  --warmup 0 --concurrency 64 --timeout-ms 2000 --json)
"$bench" --grpc "127.0.0.1:$grpc_port" "${load[@]}" >"$out/bench-grpc.json" 2>&1 &
pids+=($!)
"$bench" --http "127.0.0.1:$http_port" --endpoint json --seed 7 "${load[@]}" >"$out/bench-http.json" 2>&1 &
pids+=($!)

# One sample a second, for the run's length.
start=$(date +%s%N)
for _ in $(seq "$duration"); do
  sleep 1
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$server/status" 2>/dev/null || true)
  [ -n "$rss" ] || break
  echo "$((($(date +%s%N) - start) / 1000000)),$rss" >>"$csv"
done

bench_ok=1
for p in "${pids[@]}"; do wait "$p" || bench_ok=0; done
pids=()
# Still running, then stopped by SIGTERM (graceful, exit 0) within 15 s.
alive=1
kill -0 "$server" 2>/dev/null || alive=0
kill -TERM "$server" 2>/dev/null || true
for _ in $(seq 150); do
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$server" 2>/dev/null && kill -KILL "$server"
status=0
wait "$server" || status=$?
server=""
[ "$status" = 0 ] || alive=0

python3 - "$csv" "$warmup" "$bench_ok" "$alive" "$out" <<'EOF'
import json, sys
csv, warmup, bench_ok, alive, out = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1", sys.argv[5]
samples = [(float(t) / 1000, float(r)) for t, r in (line.split(",") for line in open(csv) if line.strip())]
mb = lambda kib: kib / 1024
if not samples:
    print("soak: FAIL: no RSS samples (the server died at once?)")
    sys.exit(1)
# The curve: RSS at each tenth of the run.
n = len(samples)
curve = [samples[min(n - 1, (n * k) // 10)] for k in range(10)] + [samples[-1]]
print("soak: RSS (MiB) over time: " + "  ".join(f"{t:.0f}s {mb(r):.1f}" for t, r in curve))
after = [s for s in samples if s[0] >= warmup]
ok = True
if len(after) < 3:
    print(f"soak: FAIL: {len(after)} samples after the {warmup:.0f}s warm-up")
    sys.exit(1)
span = after[-1][0] - after[0][0]
thirds = [[r for t, r in after if after[0][0] + span * k / 3 <= t <= after[0][0] + span * (k + 1) / 3] for k in range(3)]
first, last = max(thirds[0]), max(thirds[2])
bound = first * 1.05
print(f"soak: after warm-up ({len(after)} samples): max RSS first third {mb(first):.1f} MiB, "
      f"middle {mb(max(thirds[1])):.1f} MiB, last third {mb(last):.1f} MiB (bound {mb(bound):.1f} MiB); "
      f"peak of the whole run {mb(max(r for _, r in samples)):.1f} MiB")
for name in ("grpc", "http"):
    try:
        text = open(f"{out}/bench-{name}.json").read().strip().splitlines()[-1]
        j = json.loads(text)
        summary = {k: j[k] for k in j if k in ("requests", "rps", "ok", "over_limit", "errors", "p50_us", "p99_us", "p999_us", "max_us")}
        print(f"soak: load over {name}: {json.dumps(summary)}")
    except Exception as e:  # noqa: BLE001 - a summary is informative only
        print(f"soak: load over {name}: no summary ({e})")
if last > bound:
    print("soak: FAIL: RSS grew after warm-up"); ok = False
if not bench_ok:
    print("soak: FAIL: the load saw errors (sluice-bench exited non-zero)"); ok = False
if not alive:
    print("soak: FAIL: the server was not running at the end, or did not exit 0 on SIGTERM"); ok = False
print("soak: PASS" if ok else "soak: FAILED")
sys.exit(0 if ok else 1)
EOF
