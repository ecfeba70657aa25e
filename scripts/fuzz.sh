#!/usr/bin/env bash
# make fuzz / make fuzz-smoke: every libFuzzer target of fuzz/ for a set time, one after another
# (docs/reliability.md, "Fuzzing").
#
#   scripts/fuzz.sh SECONDS [target...]
#
# Builds the targets in build-fuzz (clang++, -DSLUICE_FUZZ=ON: coverage, ASan and UBSan), then
# runs each target for SECONDS on a copy of its seed corpus, fuzz/corpus/<target>/, with its
# dictionary, fuzz/<target>.dict, when there is one. One fuzzer at a time, one process each (no
# -jobs or -workers): the machine is shared. Each run stops by itself (-max_total_time), is
# bounded in memory (-rss_limit_mb, also libFuzzer's limit on one allocation) and in time per
# input (-timeout), and is killed if it has not stopped a few minutes after its time (libFuzzer's
# out-of-memory report can take minutes on a large heap).
#
# Runs go to build-fuzz/fuzz-runs/<target>/: log.txt, the grown corpus, and the artifacts
# (crash-*, oom-*, timeout-*, leak-*). Fails when any target failed, printing the failure, the
# path of the input that caused it and the command that replays it; after all targets, a table
# of executions, exec/s, coverage (libFuzzer's cov: and ft:), corpus size and peak RSS.
#
# Environment: FUZZ_RSS_MB (2048), FUZZ_TIMEOUT (seconds per input, 60), FUZZ_BUILD (build-fuzz),
# JOBS (build parallelism, nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:?usage: scripts/fuzz.sh SECONDS [target...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(fuzz_rules fuzz_http_json fuzz_rls_proto fuzz_redis_reply)
fi
build=${FUZZ_BUILD:-build-fuzz}
rss_mb=${FUZZ_RSS_MB:-2048}
per_input=${FUZZ_TIMEOUT:-60}
jobs=${JOBS:-$(nproc)}

# -O1 and line tables only, as OSS-Fuzz builds: quicker to build than -O2 -g, stacks still name
# every line.
cmake -S . -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" -DSLUICE_FUZZ=ON \
  -DSLUICE_BUILD_TESTS=OFF -DSLUICE_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "$jobs" --target fuzzers

export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
summary=()
failed=()
for t in "${targets[@]}"; do
  run="$build/fuzz-runs/$t"
  rm -rf "$run"
  mkdir -p "$run/artifacts"
  cp -r "fuzz/corpus/$t" "$run/corpus"
  seeds=$(find "$run/corpus" -type f | wc -l)
  args=(-max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout="$per_input"
        -print_final_stats=1 -print_funcs=0 -artifact_prefix="$run/artifacts/")
  if [ -f "fuzz/$t.dict" ]; then args+=(-dict="fuzz/$t.dict"); fi
  echo "fuzz: $t for ${seconds}s from $seeds seeds (log: $run/log.txt)"
  status=0
  timeout -k 10 $((seconds + 240)) "$build/bin/fuzz/$t" "${args[@]}" "$run/corpus" \
    >"$run/log.txt" 2>&1 || status=$?

  # The last status line: "#N ... cov: C ft: F corp: K/S ...".
  last=$(grep -E '^#[0-9]+[[:space:]].*cov: ' "$run/log.txt" | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$run/log.txt" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$run/log.txt" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p' <<<"$last")
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$run/log.txt" | tail -1)
  summary+=("| $t | ${execs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | $seeds -> ${corp:-?} | ${rss:-?} |")

  if [ "$status" -ne 0 ]; then
    failed+=("$t")
    echo "fuzz: $t FAILED (exit status $status)" >&2
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
      echo "fuzz: $t did not stop by itself: killed ${seconds}+240 s after its start" >&2
    fi
    # The report: from the first sanitizer or libFuzzer error line to the input's path.
    sed -n '/^==[0-9]*==\|^invariant failed\|runtime error\|^ALARM/,/Test unit written to/p' \
      "$run/log.txt" | head -80 >&2 || true
    for a in "$run"/artifacts/*; do
      [ -e "$a" ] || continue
      echo "fuzz: $t input: $a" >&2
      echo "fuzz: replay with: $build/bin/fuzz/$t $a" >&2
    done
  fi
done

echo
echo "fuzz: ${seconds}s per target"
echo "| target | executions | exec/s | cov | ft | corpus (seeds -> files/size) | peak RSS (MB) |"
echo "|---|---:|---:|---:|---:|---|---:|"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
