# sluice: the two commands a new machine needs are `make run` and `make test`.
BUILD      ?= build
GENERATOR  ?= Ninja
CMAKE_ARGS ?=
JOBS       ?= $(shell nproc)

.PHONY: deps build run demo test test-plain test-asan test-tsan bench bench-peers bench-peers-smoke bench-scaling soak soak-smoke fuzz fuzz-smoke format format-check clean

deps:
	@bash scripts/install-deps.sh

$(BUILD)/build.ninja: CMakeLists.txt
	@cmake -S . -B $(BUILD) -G $(GENERATOR) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS) >/dev/null

build: deps $(BUILD)/build.ninja
	@cmake --build $(BUILD) -j $(JOBS)

# Builds, then starts the server on its defaults: the example rules built in, the memory store,
# HTTP on 127.0.0.1:8080 and gRPC on 127.0.0.1:8081. Ctrl-C stops it.
run: build
	@$(BUILD)/bin/sluice serve

# The four algorithms side by side on the same hits (examples/demo.yaml).
demo: build
	@$(BUILD)/bin/sluice demo --config examples

# Every test: plain, then under address+undefined and thread sanitizers; then a few seconds of
# each system of the peer benchmarks, so that the script never rots; then a 60 s soak; then 30 s
# of each fuzz target.
test: deps format-check test-plain test-asan test-tsan bench-peers-smoke soak-smoke fuzz-smoke

test-plain: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan: deps
	@cmake -S . -B build-asan -G $(GENERATOR) -DCMAKE_BUILD_TYPE=Debug -DSLUICE_SANITIZE=address,undefined -DSLUICE_BUILD_BENCH=OFF >/dev/null
	@cmake --build build-asan -j $(JOBS)
	@cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS)

test-tsan: deps
	@cmake -S . -B build-tsan -G $(GENERATOR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLUICE_SANITIZE=thread -DSLUICE_BUILD_BENCH=OFF >/dev/null
	@cmake --build build-tsan -j $(JOBS)
	@cd build-tsan && TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/test/tsan.supp" ctest --output-on-failure -j $(JOBS)

bench: build
	@bash scripts/bench.sh $(BUILD)

# sluice beside Python's limits, Node's rate-limiter-flexible, nginx limit_req and the ceilings,
# on the same workloads in one run; regenerates docs/benchmarks.md's peers section and plots.
bench-peers: build
	@bash bench/peers/run.sh $(BUILD)

bench-peers-smoke: build
	@bash bench/peers/run.sh --smoke $(BUILD)

# Limiter::decide's cost and the memory per key from 1k to 10M keys in the memory store (about a
# minute); writes $(BUILD)/bench/scaling.jsonl and docs/img/scaling.png (needs python3-matplotlib).
bench-scaling: build
	@bash scripts/bench-scaling.sh $(BUILD)

# `sluice serve` under steady load for 10 minutes, its RSS sampled every second; fails if RSS
# grows after warm-up (scripts/soak.sh; docs/reliability.md). soak-smoke: 60 s.
soak: build
	@bash scripts/soak.sh $(BUILD)

soak-smoke: build
	@bash scripts/soak.sh --smoke $(BUILD)

# libFuzzer on every input sluice reads from outside (fuzz/, docs/reliability.md): each target for
# FUZZ_SECONDS, one after another, on a copy of its corpus; fails on a crash, naming the input.
# fuzz-smoke: 30 s each (in make test; with the build, about 5 minutes on a fresh machine).
FUZZ_SECONDS ?= 300

fuzz: deps
	@JOBS=$(JOBS) bash scripts/fuzz.sh $(FUZZ_SECONDS)

fuzz-smoke: deps
	@JOBS=$(JOBS) bash scripts/fuzz.sh 30

format:
	@clang-format -i $$(git ls-files '*.h' '*.cc')

format-check:
	@clang-format --dry-run --Werror $$(git ls-files '*.h' '*.cc')

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz
