// Limiter::decide and memory per key as the number of tracked keys grows (memory store, one
// thread, the system clock). For each key count N: a fresh store tracks N distinct 32-byte values
// (one decision each), the growth of resident memory and the store's own account give the bytes
// per key, then decisions on keys drawn uniformly at random from the N are timed for `--seconds`,
// `--repeats` times; the median is reported. With `--batch B` above 1 the timed decisions go
// through Limiter::decide_batch, B requests at a time (each on its own key, drawn from the same
// random order), and the cost is still reported per decision. One JSON line per N on stdout:
//
//   {"keys":1000000,"algorithm":"token_bucket","batch":1,"ns_per_decision":...,
//    "decisions_per_s":...,"bytes_per_key_rss":...,"bytes_per_key_store":...,"tracked":...,
//    "insert_ns_per_key":...,"allowed_ratio":...,"ns_runs":[...]}
//
// The limit is 100 per second per key, as in limiter_bench.cc: over few keys most decisions are
// denials, over many nearly all are admitted.
//
// Usage: sluice_bench_scaling [--keys 1000,10000,...] [--algorithm token_bucket] [--seconds 1]
//                             [--repeats 3] [--batch 1]
// With several key counts, each is measured in a child process of its own, so that resident
// memory grows from the same start every time. scripts/bench-scaling.sh runs it.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "bench_values.h"
#include "sluice/limiter.h"
#include "sluice/memory_store.h"

namespace sluice {
namespace {

using bench::WriteValue;

struct Options {
  std::vector<std::size_t> keys = {1'000, 10'000, 100'000, 1'000'000, 3'000'000, 10'000'000};
  Algorithm algorithm = Algorithm::kTokenBucket;
  double seconds = 1.0;
  int repeats = 3;
  std::size_t batch = 1;  // 1: Limiter::decide; more: Limiter::decide_batch on that many
};

// One key-only default rule: every distinct value is its own counter, 100 per second.
std::shared_ptr<const RuleSet> ScalingRules(Algorithm a) {
  RuleSource src;
  DomainRules d;
  d.domain = "bench";
  DescriptorRule r;
  r.key = std::string(algorithm_name(a));
  r.limits.push_back(LimitDef::per_unit(100, Unit::kSecond, a));
  d.descriptors.push_back(r);
  src.domains.push_back(d);
  return RuleSet::compile(std::move(src));
}

// Resident memory of the process (VmRSS), from /proc.
std::size_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// The random key order of the timed loop: 4M indices (16 MiB, read sequentially), enough that
// one second of decisions rarely repeats a stretch of it.
constexpr std::size_t kOrderSize = std::size_t{1} << 22;

void Measure(std::size_t keys, const Options& opt) {
  const std::string name(algorithm_name(opt.algorithm));
  // Room for twice the keys: the store never reaches the three-quarters mark where it starts
  // reclaiming idle states, so every key stays tracked.
  MemoryStore store({.max_keys = std::max<std::size_t>(2 * keys, 1024)});
  Limiter limiter(ScalingRules(opt.algorithm), store, SystemClock::instance());
  Request req{"bench", {Descriptor{{{name, "tenant-................_________"}}, {}, {}}}, 1};
  std::string& value = req.descriptors[0].entries[0].value;

  // One decision on a key outside the N first, so that the limiter's per-thread buffers and the
  // store's shards exist before the baseline.
  WriteValue(value, keys);
  limiter.decide(req);
  const std::size_t rss_before = ResidentBytes();
  const auto insert_start = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < keys; ++i) {
    WriteValue(value, i);
    limiter.decide(req);
  }
  const double insert_s = Seconds(std::chrono::steady_clock::now() - insert_start);
  const std::size_t rss_after = ResidentBytes();
  const std::size_t tracked = store.size();
  const double rss_per_key =
      static_cast<double>(rss_after - rss_before) / static_cast<double>(keys);
  const double store_per_key =
      static_cast<double>(store.memory_bytes()) / static_cast<double>(tracked);

  std::vector<std::uint32_t> order(kOrderSize);
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<std::uint32_t> pick(0, static_cast<std::uint32_t>(keys - 1));
  for (auto& o : order)
    o = pick(rng);

  // For decide_batch: one request per place in the batch, each with its own value buffer, and
  // Decisions reused from one call to the next (as a caller deciding in batches would).
  std::vector<Request> batch(opt.batch, req);
  std::vector<Decision> decisions(opt.batch);

  // Timed in stretches of about 4096 decisions, reading the clock between them; a short untimed
  // pass first.
  const std::size_t stretch = (4096 + opt.batch - 1) / opt.batch * opt.batch;
  std::size_t at = 0;
  std::uint64_t allowed = 0, decided = 0;
  auto run_batch = [&] {
    if (opt.batch == 1) {
      for (std::size_t k = 0; k < stretch; ++k) {
        WriteValue(value, order[at++ & (kOrderSize - 1)]);
        allowed += limiter.decide(req).allowed;
      }
    } else {
      for (std::size_t k = 0; k < stretch; k += opt.batch) {
        for (Request& r : batch)
          WriteValue(r.descriptors[0].entries[0].value, order[at++ & (kOrderSize - 1)]);
        limiter.decide_batch(batch, decisions);
        for (const Decision& d : decisions)
          allowed += d.allowed;
      }
    }
    decided += stretch;
  };
  for (int b = 0; b < 16; ++b)
    run_batch();
  std::vector<double> ns_runs;
  allowed = decided = 0;
  for (int r = 0; r < opt.repeats; ++r) {
    const std::uint64_t decided_before = decided;
    const auto start = std::chrono::steady_clock::now();
    double elapsed = 0;
    do {
      run_batch();
      elapsed = Seconds(std::chrono::steady_clock::now() - start);
    } while (elapsed < opt.seconds);
    ns_runs.push_back(elapsed * 1e9 / static_cast<double>(decided - decided_before));
  }
  std::vector<double> sorted = ns_runs;
  std::sort(sorted.begin(), sorted.end());
  const double ns = sorted[sorted.size() / 2];

  std::string runs;
  for (double r : ns_runs)
    runs += (runs.empty() ? "" : ",") + std::to_string(r);
  std::printf(
      "{\"keys\":%zu,\"algorithm\":\"%s\",\"batch\":%zu,\"ns_per_decision\":%.1f,"
      "\"decisions_per_s\":%.0f,"
      "\"bytes_per_key_rss\":%.1f,\"bytes_per_key_store\":%.1f,\"tracked\":%zu,"
      "\"insert_ns_per_key\":%.1f,\"allowed_ratio\":%.4f,\"ns_runs\":[%s]}\n",
      keys, name.c_str(), opt.batch, ns, 1e9 / ns, rss_per_key, store_per_key, tracked,
      insert_s * 1e9 / static_cast<double>(keys),
      static_cast<double>(allowed) / static_cast<double>(decided), runs.c_str());
  std::fflush(stdout);
}

[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr,
               "sluice_bench_scaling: %s\n"
               "usage: sluice_bench_scaling [--keys N,N,...] [--algorithm NAME] [--seconds S] "
               "[--repeats R] [--batch B]\n",
               why);
  std::exit(2);
}

std::optional<std::vector<std::size_t>> ParseKeys(std::string_view s) {
  std::vector<std::size_t> out;
  while (!s.empty()) {
    const std::size_t comma = s.find(',');
    const std::string item(s.substr(0, comma));
    char* end = nullptr;
    const unsigned long long n = std::strtoull(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || n == 0 || n >= 0xFFFF'FFFFull) return std::nullopt;
    out.push_back(static_cast<std::size_t>(n));
    s = comma == std::string_view::npos ? std::string_view() : s.substr(comma + 1);
  }
  if (out.empty()) return std::nullopt;
  return out;
}

Options Parse(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) Usage("missing value after an option");
    const char* v = argv[++i];
    if (arg == "--keys") {
      auto keys = ParseKeys(v);
      if (!keys) Usage("--keys takes positive counts below 2^32, separated by commas");
      opt.keys = *keys;
    } else if (arg == "--algorithm") {
      auto a = parse_algorithm(v);
      if (!a) Usage("unknown --algorithm");
      opt.algorithm = *a;
    } else if (arg == "--seconds") {
      opt.seconds = std::atof(v);
      if (!(opt.seconds > 0)) Usage("--seconds must be positive");
    } else if (arg == "--repeats") {
      opt.repeats = std::atoi(v);
      if (opt.repeats < 1) Usage("--repeats must be at least 1");
    } else if (arg == "--batch") {
      const int b = std::atoi(v);
      if (b < 1 || b > 4096) Usage("--batch must be from 1 to 4096");
      opt.batch = static_cast<std::size_t>(b);
    } else {
      Usage("unknown option");
    }
  }
  return opt;
}

}  // namespace
}  // namespace sluice

int main(int argc, char** argv) {
  const sluice::Options opt = sluice::Parse(argc, argv);
  if (opt.keys.size() == 1) {
    sluice::Measure(opt.keys[0], opt);
    return 0;
  }
  for (std::size_t keys : opt.keys) {
    std::fflush(stdout);
    const pid_t child = fork();
    if (child < 0) {
      std::perror("fork");
      return 1;
    }
    if (child == 0) {
      sluice::Measure(keys, opt);
      std::fflush(stdout);
      _exit(0);
    }
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "sluice_bench_scaling: the run with %zu keys failed\n", keys);
      return 1;
    }
  }
  return 0;
}
