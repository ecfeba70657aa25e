// Decisions/s through the Redis store, side by side with Redis running the same script for one
// request per call as fast as it can take it (bench/redis_ceiling.h) on the same redis-server:
// the ceiling for one decision per call on this machine. Then the latency of one decision at half
// the measured throughput.
//
//   build/bin/sluice_bench_redis [--seconds S] [--threads T] [--keys K]
//
// Starts its own redis-server on a free loopback port (the test harness) and stops it at exit.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "redis_ceiling.h"
#include "sluice/limiter.h"
#include "sluice/redis_store.h"
#include "storage/redis/decide.h"
#include "storage/redis/script.h"
#include "support/redis_harness.h"

namespace {

using Steady = std::chrono::steady_clock;
using sluice::Micros;

struct Args {
  double seconds = 5;
  int threads = 128;
  int keys = 100'000;
};

Args ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--seconds")
      a.seconds = std::atof(argv[i + 1]);
    else if (flag == "--threads")
      a.threads = std::atoi(argv[i + 1]);
    else if (flag == "--keys")
      a.keys = std::atoi(argv[i + 1]);
  }
  return a;
}

std::shared_ptr<const sluice::RuleSet> Rules() {
  sluice::RuleSource src;
  sluice::DomainRules d;
  d.domain = "bench";
  sluice::DescriptorRule r;
  r.key = "user";
  r.limits.push_back(
      sluice::LimitDef::per_unit(1000, sluice::Unit::kSecond, sluice::Algorithm::kTokenBucket));
  d.descriptors.push_back(r);
  src.domains.push_back(d);
  return sluice::RuleSet::compile(std::move(src));
}

// The ceiling (bench/redis_ceiling.h): Redis running the decide script for one token-bucket
// request per call, 50 connections 16 deep, `now` fixed at the start: each key sees a few hits of
// its 1,000-token bucket, all allowed, as in sluice's run. Returns calls/s.
double Ceiling(const sluice::testing::RedisServer& server, int keys, double seconds) {
  sluice::bench::CeilingOptions o;
  o.port = server.port();
  o.keys = static_cast<std::size_t>(keys);
  o.seconds = seconds;
  o.algorithm = sluice::Algorithm::kTokenBucket;
  o.limit = 1000;
  try {
    return sluice::bench::RedisCeiling(o).calls_per_s;
  } catch (const std::exception& e) {
    std::cerr << "ceiling: " << e.what() << "\n";
    return 0;
  }
}

struct Load {
  double per_second = 0;
  std::uint64_t errors = 0;
  std::vector<double> latencies_us;  // sorted
};

// Decides through `limiter` on `threads` threads for `seconds`; with `rate` > 0, paces the
// decisions to that total rate (open loop) and records each one's latency.
Load Run(sluice::Limiter& limiter, int threads, double seconds, int keys, double rate) {
  std::atomic<std::uint64_t> done{0}, errors{0};
  std::vector<std::vector<double>> lat(threads);
  const auto start = Steady::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937_64 rng(t + 1);
      sluice::Request r{"bench", {sluice::Descriptor{{{"user", ""}}, {}, {}}}, 1};
      const double interval = rate > 0 ? threads / rate : 0;  // seconds between this thread's hits
      auto next = start + std::chrono::duration<double>(interval * t / threads);
      std::uint64_t n = 0;
      while (true) {
        if (rate > 0) {
          std::this_thread::sleep_until(next);  // pacing the load generator, not a test wait
          next +=
              std::chrono::duration_cast<Steady::duration>(std::chrono::duration<double>(interval));
        }
        const auto t0 = Steady::now();
        if (t0 >= end) break;
        r.descriptors[0].entries[0].value = "u" + std::to_string(rng() % keys);
        sluice::Decision d = limiter.decide(r);
        if (!d.error.empty()) errors.fetch_add(1, std::memory_order_relaxed);
        if (rate > 0) {
          lat[t].push_back(std::chrono::duration<double, std::micro>(Steady::now() - t0).count());
        }
        ++n;
      }
      done.fetch_add(n);
    });
  }
  for (auto& th : pool)
    th.join();
  Load load;
  load.per_second = static_cast<double>(done.load()) /
                    std::chrono::duration<double>(Steady::now() - start).count();
  load.errors = errors.load();
  for (auto& v : lat)
    load.latencies_us.insert(load.latencies_us.end(), v.begin(), v.end());
  std::sort(load.latencies_us.begin(), load.latencies_us.end());
  return load;
}

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  return sorted[std::min(sorted.size() - 1, static_cast<std::size_t>(p * sorted.size()))];
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = ParseArgs(argc, argv);
  sluice::testing::RedisServer server;

  sluice::RedisStoreOptions o;
  o.port = server.port();
  o.prefix = "bench:";
  o.connections = 1;
  o.command_timeout = std::chrono::milliseconds(2000);
  sluice::RedisStore store(o);
  sluice::Limiter limiter(Rules(), store, sluice::SystemClock::instance());
  Run(limiter, args.threads, 0.5, args.keys, 0);  // warm up

  const double ceiling = Ceiling(server, args.keys, 3);
  const Load load = Run(limiter, args.threads, args.seconds, args.keys, 0);
  const double ceiling_after = Ceiling(server, args.keys, 3);
  const double ceil_median = (ceiling + ceiling_after) / 2;

  std::printf("ceiling (decide script, 50 connections, pipeline 16): %.0f and %.0f calls/s\n",
              ceiling, ceiling_after);
  std::printf(
      "sluice Limiter + RedisStore (%d threads, 1 connection): %.0f decisions/s, %llu "
      "errors = %.1f%% of the ceiling\n",
      args.threads, load.per_second, static_cast<unsigned long long>(load.errors),
      100 * load.per_second / ceil_median);

  // Paced (open loop) at half the throughput, on fewer threads: each waits for its next slot,
  // so latency is the decision's own, not a queue's.
  const double half = load.per_second / 2;
  const Load paced = Run(limiter, std::min(args.threads, 16), args.seconds, args.keys, half);
  std::printf(
      "at half load (%.0f decisions/s offered, %.0f done): p50 %.0f us, p90 %.0f us, "
      "p99 %.0f us, p99.9 %.0f us\n",
      half, paced.per_second, Percentile(paced.latencies_us, 0.5),
      Percentile(paced.latencies_us, 0.9), Percentile(paced.latencies_us, 0.99),
      Percentile(paced.latencies_us, 0.999));
  return 0;
}
