#!/usr/bin/env bash
# redis_cpu.sh PORT LABEL -- COMMAND...: runs a benchmark command against the Redis on PORT (on
# this machine) and prints its decisions/s and the Redis server's CPU time per decision, from
# /proc (user + system). COMMAND must print one JSON line last with "decisions_per_s" and
# "seconds" (sluice_peer_bench, rlf_bench.js, limits_bench.py do). Redis is flushed first.
#
#   bench/peers/redis_cpu.sh 6379 sluice -- build/bin/sluice_peer_bench --storage redis \
#     --redis-url redis://127.0.0.1:6379 --workload uniform --seconds 4
set -euo pipefail
if [[ $# -lt 4 || $3 != -- ]]; then
  echo "usage: $0 PORT LABEL -- COMMAND..." >&2
  exit 2
fi
port=$1 label=$2
shift 3
pid=$(redis-cli -p "$port" info server | tr -d '\r' | awk -F: '$1 == "process_id" {print $2}')
[[ -r /proc/$pid/stat ]] || { echo "no redis-server of ours on port $port" >&2; exit 2; }
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
redis-cli -p "$port" flushall >/dev/null
before=$(ticks)
line=$("$@" 2>/dev/null | tail -1)
after=$(ticks)
hz=$(getconf CLK_TCK)
/usr/bin/python3 -c '
import json, sys
d = json.loads(sys.argv[1]); label = sys.argv[2]
ticks, hz = float(sys.argv[3]), float(sys.argv[4])
decisions = d["decisions_per_s"] * d["seconds"]
print("%-16s %8.1f k/s   Redis CPU %.2f us/decision (%.0f%% of a core)"
      % (label, d["decisions_per_s"] / 1e3, ticks / hz * 1e6 / decisions, ticks / hz / d["seconds"] * 100))
' "$line" "$label" "$((after - before))" "$hz"
