// Limiter::decide throughput: one descriptor, per algorithm, over 1, 100k and 1M distinct keys,
// on 1 and 2 threads, with the memory store and the system clock. Run with `make bench`.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench_values.h"
#include "sluice/limiter.h"
#include "sluice/memory_store.h"

namespace sluice {
namespace {

using bench::WriteValue;

constexpr Algorithm kAlgorithms[] = {Algorithm::kFixedWindow, Algorithm::kSlidingWindowLog,
                                     Algorithm::kSlidingWindowCounter, Algorithm::kTokenBucket};

std::shared_ptr<const RuleSet> BenchRules() {
  RuleSource src;
  DomainRules d;
  d.domain = "bench";
  for (Algorithm a : kAlgorithms) {
    DescriptorRule r;
    r.key = std::string(algorithm_name(a));  // the key-only default: one counter per value
    r.limits.push_back(LimitDef::per_unit(100, Unit::kSecond, a));
    d.descriptors.push_back(r);
  }
  src.domains.push_back(d);
  return RuleSet::compile(std::move(src));
}

std::string Value(std::size_t i) {
  std::string v = "tenant-................_________";
  WriteValue(v, i);
  return v;
}

constexpr std::size_t kOrderSize = std::size_t{1} << 20;

struct Fixture {
  explicit Fixture(std::size_t keys)
      : store({.max_keys = std::max<std::size_t>(2 * keys, 1024)}),
        limiter(BenchRules(), store, SystemClock::instance()) {
    std::mt19937_64 rng(42);
    order.resize(kOrderSize);
    for (auto& o : order)
      o = static_cast<std::uint32_t>(rng() % keys);
  }
  MemoryStore store;
  Limiter limiter;
  std::vector<std::uint32_t> order;
};

Fixture* g_fixture = nullptr;  // built by thread 0; read only inside the timed loop

void BM_Decide(benchmark::State& state) {
  const auto algorithm = static_cast<Algorithm>(state.range(0));
  const auto keys = static_cast<std::size_t>(state.range(1));
  if (state.thread_index() == 0) {
    g_fixture = new Fixture(keys);
    // Warm up: every key tracked before timing.
    Request warm{"bench", {Descriptor{{{std::string(algorithm_name(algorithm)), ""}}, {}, {}}}, 1};
    for (std::size_t i = 0; i < keys; ++i) {
      warm.descriptors[0].entries[0].value = Value(i);
      g_fixture->limiter.decide(warm);
    }
  }
  // Threads start their loops together after the set-up above.
  Request req{"bench", {Descriptor{{{std::string(algorithm_name(algorithm)), ""}}, {}, {}}}, 1};
  std::string& value = req.descriptors[0].entries[0].value;
  value = Value(0);
  // Threads walk far-apart parts of the sequence, so neither finds the other's keys in cache.
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * (kOrderSize / 2);
  std::uint64_t allowed = 0;
  for (auto _ : state) {
    Fixture& f = *g_fixture;
    WriteValue(value, f.order[i++ & (f.order.size() - 1)]);
    Decision d = f.limiter.decide(req);
    allowed += d.allowed;
    benchmark::DoNotOptimize(d);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["allowed_ratio"] =
      benchmark::Counter(static_cast<double>(allowed) / static_cast<double>(state.iterations()),
                         benchmark::Counter::kAvgThreads);
  if (state.thread_index() == 0) {
    state.SetLabel(std::string(algorithm_name(algorithm)));
  }
}

void TearDown(const benchmark::State& state) {
  if (state.thread_index() == 0 && g_fixture != nullptr) {
    delete g_fixture;
    g_fixture = nullptr;
  }
}

void DecideArgs(benchmark::internal::Benchmark* b) {
  for (Algorithm a : kAlgorithms) {
    for (std::int64_t keys : {1, 100'000, 1'000'000})
      b->Args({static_cast<std::int64_t>(a), keys});
  }
}

// Resident memory of the process, from /proc.
std::size_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

// Memory per tracked token-bucket key (32-byte values): the store's own count of its tables,
// and the growth of the process's resident memory while the keys were added.
void BM_MemoryPerKey(benchmark::State& state) {
  const auto keys = static_cast<std::size_t>(state.range(0));
  double store_bytes = 0, rss_bytes = 0;
  for (auto _ : state) {
    std::vector<std::string> values;
    values.reserve(keys);
    for (std::size_t i = 0; i < keys; ++i)
      values.push_back(Value(i));
    const std::size_t before = ResidentBytes();
    {
      MemoryStore store({.max_keys = 2 * keys});
      const LimitSpec spec{Algorithm::kTokenBucket, 100, 1'000'000, 0};
      const Micros now = SystemClock::instance().now_micros();
      for (const std::string& v : values) {
        Hit hit{v, &spec, 1, true};
        Verdict out;
        store.apply(std::span<const Hit>(&hit, 1), now, std::span<Verdict>(&out, 1));
      }
      store_bytes = static_cast<double>(store.memory_bytes()) / static_cast<double>(store.size());
      rss_bytes = static_cast<double>(ResidentBytes() - before) / static_cast<double>(store.size());
    }
  }
  state.counters["store_bytes_per_key"] = store_bytes;
  state.counters["rss_bytes_per_key"] = rss_bytes;
}

BENCHMARK(BM_Decide)
    ->Apply(DecideArgs)
    ->ArgNames({"algorithm", "keys"})
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime()
    ->Teardown(TearDown);
BENCHMARK(BM_MemoryPerKey)->Arg(1'000'000)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace sluice

BENCHMARK_MAIN();
