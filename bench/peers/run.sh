#!/usr/bin/env bash
# make bench-peers: sluice and what users would pick instead, on the same workloads, side by
# side in one run. Every run prints one JSON line into <build>/bench/peers/results.jsonl;
# bench/peers/report.py then writes the tables and plots (docs/benchmarks.md, docs/img/).
#
#   bench/peers/run.sh [--smoke] [build-dir]
#
# --smoke runs every system for 1 s on the small workloads only (CI: the script must not rot).
# SECONDS_PER_RUN (default 5) and ROUNDS (default 1) set the full run's length.
#
# Library paths (each in its own process, closed loop, the rule 100 per second per key):
#   sluice (memory, Redis, eventual), Python's limits (memory and Redis, fixed and moving
#   window), Node's rate-limiter-flexible (memory and Redis); the Redis path's ceiling:
#   Redis running sluice's decide script, one request per call, pipelined (sluice_peer_bench
#   --ceiling).
# Service paths (sluice-bench, 64 in flight): `sluice serve` over gRPC and HTTP /v1/authz, the
#   no-op servers (the same transport code deciding nothing: the ceiling), and nginx limit_req
#   (the in-gateway C reference) over the same HTTP request. Over gRPC the key is
#   remote_address, over HTTP the address in X-Real-IP (which nginx keys limit_req by): key i
#   is address i + 1 in 10.0.0.0/8, room for 16.7M keys.
# Workloads: hot (one key), uniform (100,000 keys drawn uniformly), zipf (1,000,000 keys drawn
#   with probability proportional to 1/rank, exponent 1), on every path: the library benchmarks
#   walk a table of keys drawn before the run, sluice-bench draws with --key-distribution.
set -euo pipefail
smoke=0
if [ "${1:-}" = "--smoke" ]; then
  smoke=1
  shift
fi
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
seconds=${SECONDS_PER_RUN:-5}
rounds=${ROUNDS:-1}
workloads="hot uniform zipf"
if [ "$smoke" = 1 ]; then
  seconds=1
  rounds=1
  workloads="hot uniform"
fi
out="$build/bench/peers"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
work=$(mktemp -d /tmp/sluice-peers.XXXXXX)
pids=()
failures=0
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

bash "$here/install.sh"
for bin in sluice sluice-bench sluice_noop_server sluice_peer_bench; do
  [ -x "$build/bin/$bin" ] || { echo "bench-peers: $build/bin/$bin is missing (make build)" >&2; exit 1; }
done

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wait_for PATTERN FILE: until a server logged that it listens (bounded).
wait_for() {
  for _ in $(seq 100); do grep -qE "$1" "$2" 2>/dev/null && return 0; sleep 0.1; done
  echo "bench-peers: a server did not start:" >&2
  cat "$2" >&2
  exit 1
}
# peak_rss PID: the peak resident memory of a server, in KiB, with its children (nginx's workers).
peak_rss() {
  local total=0 p v
  for p in "$1" $(pgrep -P "$1" || true); do
    v=$(sed -nE 's/^VmHWM:\s+([0-9]+) kB/\1/p' "/proc/$p/status" 2>/dev/null || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
# tag SYSTEM VARIANT WORKLOAD [PID]: adds the names (and a server's peak RSS) to a JSON line.
tag() {
  local rss=0
  [ -n "${4:-}" ] && rss=$(peak_rss "$4")
  "$py" -c '
import json, sys
system, variant, workload, rss = sys.argv[1:5]
d = json.loads(sys.stdin.read())
d.setdefault("system", system)
d.setdefault("variant", variant)
d["workload"] = workload
if "rps" in d:
    d["decisions_per_s"] = d["rps"]
if int(rss):
    d["peak_rss_kib"] = int(rss)
print(json.dumps(d))' "$1" "$2" "$3" "$rss"
}
# record SYSTEM VARIANT WORKLOAD PID COMMAND...: runs one benchmark, appends its line.
record() {
  local system=$1 variant=$2 workload=$3 pid=$4
  shift 4
  local line
  if line=$("$@" 2>"$work/last.err") && [ -n "$line" ]; then
    printf '%s\n' "$line" | tail -1 | tag "$system" "$variant" "$workload" "$pid" >>"$results"
    echo "  $system / $variant / $workload: $(printf '%s\n' "$line" | tail -1 | "$py" -c 'import json,sys; d=json.load(sys.stdin); print("{:,.0f}/s".format(d.get("decisions_per_s", d.get("rps", 0))))')"
  else
    echo "  $system / $variant / $workload: FAILED ($(head -c 300 "$work/last.err"))" >&2
    failures=$((failures + 1))
  fi
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "each run: ${seconds}s; rounds: $rounds; workloads: $workloads"

# One redis-server for every Redis path, flushed between runs.
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --logfile "$work/redis.log" &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis_url="redis://127.0.0.1:$rport"
flush() { redis-cli -p "$rport" flushall >/dev/null; }

keys_of() { case $1 in hot) echo 1 ;; uniform) echo 100000 ;; zipf) echo 1000000 ;; esac; }
lib() {  # lib WORKLOAD: every library path on one workload
  local w=$1 s=$seconds
  record sluice "library memory fixed" "$w" "" "$build/bin/sluice_peer_bench" --storage memory --workload "$w" --seconds "$s"
  record sluice "library memory moving" "$w" "" "$build/bin/sluice_peer_bench" --storage memory --workload "$w" --seconds "$s" --algorithm moving
  record python-limits "memory fixed" "$w" "" "$py" "$here/limits_bench.py" --storage memory --workload "$w" --seconds "$s" --algorithm fixed
  record python-limits "memory moving" "$w" "" "$py" "$here/limits_bench.py" --storage memory --workload "$w" --seconds "$s" --algorithm moving
  record rate-limiter-flexible memory "$w" "" node "$here/rlf_bench.js" --storage memory --workload "$w" --seconds "$s"
  flush
  record sluice "library redis fixed" "$w" "" "$build/bin/sluice_peer_bench" --storage redis --redis-url "$redis_url" --workload "$w" --seconds "$s"
  flush
  record sluice "library eventual fixed" "$w" "" "$build/bin/sluice_peer_bench" --storage eventual --redis-url "$redis_url" --workload "$w" --seconds "$s"
  flush
  record python-limits "redis fixed" "$w" "" "$py" "$here/limits_bench.py" --storage redis --redis-url "$redis_url" --workload "$w" --seconds "$s" --algorithm fixed
  flush
  record python-limits "redis moving" "$w" "" "$py" "$here/limits_bench.py" --storage redis --redis-url "$redis_url" --workload "$w" --seconds "$s" --algorithm moving
  flush
  record rate-limiter-flexible redis "$w" "" node "$here/rlf_bench.js" --storage redis --redis-url "$redis_url" --workload "$w" --seconds "$s"
  flush
}

# The Redis path's ceiling: Redis running sluice's decide script for one request per call (a
# fixed window of 100 per second, `now` fixed at the start), 50 connections each 16 calls deep,
# no other client work (bench/redis_ceiling.h; redis-benchmark cannot send the script's binary
# arguments). sluice's store puts the requests that wait while a call is out into one call, so
# under load it can pass this figure.
ceiling() {  # ceiling WORKLOAD
  local w=$1
  record redis "decide script (ceiling)" "$w" "" "$build/bin/sluice_peer_bench" --ceiling --redis-url "$redis_url" --workload "$w" --seconds "$seconds"
  flush
}

# The servers: sluice on the memory store with the peers' rule, the no-op server, and nginx.
cat >"$work/envoy.yaml" <<'EOF'
domain: edge_proxy
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 100}
EOF
cat >"$work/paths.yaml" <<'EOF'
rules:
  - path: /bench
    descriptors:
      - key: client_ip
        unit: second
        requests_per_unit: 100
EOF
"$build/bin/sluice" serve --config "$work" --http-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 \
  --watch-interval-ms 0 >/dev/null 2>"$work/sluice.log" &
sluice_pid=$!
pids+=($sluice_pid)
"$build/bin/sluice_noop_server" --http-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 2>"$work/noop.log" &
noop_pid=$!
pids+=($noop_pid)
nport=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  # 100 per second per client address, bursts of 100 answered at once: the peers' rule.
  limit_req_zone \$http_x_real_ip zone=peers:64m rate=100r/s;
  limit_req_status 429;
  server {
    listen 127.0.0.1:$nport;
    # empty_gif answers in the content phase, after limit_req (preaccess phase); "return 200"
    # would answer in the rewrite phase, before limit_req, and nothing would ever be limited.
    location = /v1/authz { limit_req zone=peers burst=100 nodelay; empty_gif; }
  }
}
EOF
nginx -c "$work/nginx.conf" -p "$work/nginx" 2>"$work/nginx/start.log" &
nginx_pid=$!
pids+=($nginx_pid)
wait_for "serving: HTTP on" "$work/sluice.log"
wait_for "noop server: HTTP port" "$work/noop.log"
for _ in $(seq 100); do [ -s "$work/nginx.pid" ] && break; sleep 0.1; done
s_http=$(sed -nE 's/.*HTTP on 127\.0\.0\.1:([0-9]+).*/\1/p' "$work/sluice.log" | head -1)
s_grpc=$(sed -nE 's/.*gRPC on 127\.0\.0\.1:([0-9]+).*/\1/p' "$work/sluice.log" | head -1)
n_http=$(sed -nE 's/.*HTTP port ([0-9]+).*/\1/p' "$work/noop.log")
n_grpc=$(sed -nE 's/.*gRPC port ([0-9]+).*/\1/p' "$work/noop.log")

service() {  # service WORKLOAD
  local w=$1 keys
  keys=$(keys_of "$w")
  local common=(--keys "$keys" --concurrency 64 --duration "$seconds" --warmup 1 --json)
  # The keys drawn as the library paths draw theirs (hot has one key: nothing to draw).
  case $w in
    uniform) common+=(--key-distribution uniform) ;;
    zipf) common+=(--key-distribution zipf --zipf-exponent 1) ;;
  esac
  record sluice "server gRPC" "$w" "$sluice_pid" "$build/bin/sluice-bench" --grpc "127.0.0.1:$s_grpc" "${common[@]}"
  record noop "server gRPC (ceiling)" "$w" "$noop_pid" "$build/bin/sluice-bench" --grpc "127.0.0.1:$n_grpc" "${common[@]}"
  record sluice "server HTTP /v1/authz" "$w" "$sluice_pid" "$build/bin/sluice-bench" --http "127.0.0.1:$s_http" --endpoint authz --path /bench "${common[@]}"
  record noop "server HTTP /v1/authz (ceiling)" "$w" "$noop_pid" "$build/bin/sluice-bench" --http "127.0.0.1:$n_http" --endpoint authz --path /bench "${common[@]}"
  record nginx "limit_req HTTP" "$w" "$(cat "$work/nginx.pid")" "$build/bin/sluice-bench" --http "127.0.0.1:$nport" --endpoint authz --path /bench "${common[@]}"
}

for round in $(seq "$rounds"); do
  for w in $workloads; do
    echo "round $round, workload $w:"
    lib "$w"
    ceiling "$w"
    service "$w"
  done
done
echo "results: $results"
if [ "$smoke" = 1 ]; then
  # The smoke run checks that the report and its plots still come out, next to the results.
  "$py" "$here/report.py" "$results" --img "$out"
else
  root=$(cd "$here/../.." && pwd)
  "$py" "$here/report.py" "$results" --docs "$root/docs/benchmarks.md" --img "$root/docs/img"
fi
if [ "$failures" -gt 0 ]; then
  echo "bench-peers: $failures runs failed" >&2
  exit 1
fi
