// sluice as a library, on the workloads of the peer benchmarks (bench/peers/README.md): the same
// rule (100 per second per key), the same key tables (one hot key; 100,000 keys uniform;
// 1,000,000 keys Zipf), the same closed loop, and the same one-line JSON summary, so that
// bench/peers/run.sh can put it beside Python's limits and Node's rate-limiter-flexible.
//
//   sluice_peer_bench --storage memory|redis|eventual [--redis-url redis://HOST:PORT]
//                     --workload hot|uniform|zipf [--seconds S] [--keys N]
//                     [--algorithm fixed|moving|counter|bucket] [--threads T]
//                     [--sample-every N] [--seed N]
//   sluice_peer_bench --decide-script-sha
//
// `moving` is sluice's sliding_window_log (limits' moving window), `counter` its sliding window
// counter, `bucket` its token bucket. With Redis, T threads each decide one call after another
// (T calls in flight, default 16, as rate-limiter-flexible's 16 in flight); otherwise one
// thread by default, as the peers' single-threaded loops. One call in 16 is timed (in every
// mode: a hot key through Redis is answered locally by the over-limit cache, millions a second,
// and timing them all would fill the memory the run reports).
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "sluice/limiter.h"
#include "sluice/storage.h"
#include "storage/redis/script.h"
#include "storage/redis/sha1.h"

namespace {

using Steady = std::chrono::steady_clock;

struct Args {
  std::string storage = "memory";
  std::string redis_url = "redis://127.0.0.1:6379";
  std::string workload = "hot";
  std::string algorithm = "fixed";
  double seconds = 5;
  long keys = 0;  // 0: the workload's own
  int threads = 0;
  int sample_every = 0;
  std::uint64_t seed = 42;
};

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "sluice_peer_bench: %s\nusage: sluice_peer_bench --storage memory|redis|eventual "
               "[--redis-url URL] --workload hot|uniform|zipf [--seconds S] [--keys N] "
               "[--algorithm fixed|moving|counter|bucket] [--threads T] [--sample-every N] "
               "[--seed N]\n",
               why.c_str());
  std::exit(2);
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) Usage(flag + " needs a value");
    const std::string v = argv[i + 1];
    if (flag == "--storage") {
      a.storage = v;
    } else if (flag == "--redis-url") {
      a.redis_url = v;
    } else if (flag == "--workload") {
      a.workload = v;
    } else if (flag == "--algorithm") {
      a.algorithm = v;
    } else if (flag == "--seconds") {
      a.seconds = std::atof(v.c_str());
    } else if (flag == "--keys") {
      a.keys = std::atol(v.c_str());
    } else if (flag == "--threads") {
      a.threads = std::atoi(v.c_str());
    } else if (flag == "--sample-every") {
      a.sample_every = std::atoi(v.c_str());
    } else if (flag == "--seed") {
      a.seed = std::strtoull(v.c_str(), nullptr, 10);
    } else {
      Usage("unknown flag " + flag);
    }
  }
  if (a.storage != "memory" && a.storage != "redis" && a.storage != "eventual")
    Usage("--storage must be memory, redis or eventual");
  if (a.workload != "hot" && a.workload != "uniform" && a.workload != "zipf")
    Usage("--workload must be hot, uniform or zipf");
  if (!(a.seconds > 0)) Usage("--seconds must be positive");
  if (a.workload == "hot" && a.keys > 1) Usage("--workload hot has one key");
  if (a.keys <= 0) a.keys = a.workload == "hot" ? 1 : a.workload == "uniform" ? 100'000 : 1'000'000;
  if (a.threads <= 0) a.threads = a.storage == "redis" ? 16 : 1;
  if (a.sample_every <= 0) a.sample_every = 16;
  return a;
}

sluice::Algorithm AlgorithmOf(const std::string& name) {
  if (name == "fixed") return sluice::Algorithm::kFixedWindow;
  if (name == "moving") return sluice::Algorithm::kSlidingWindowLog;
  if (name == "counter") return sluice::Algorithm::kSlidingWindowCounter;
  if (name == "bucket") return sluice::Algorithm::kTokenBucket;
  Usage("--algorithm must be fixed, moving, counter or bucket");
}

// The key table: 2^20 key indices drawn before the run, walked cyclically by the loop.
std::vector<std::uint32_t> KeyTable(const Args& a) {
  constexpr std::size_t kTable = 1u << 20;
  std::vector<std::uint32_t> t(kTable, 0);
  std::mt19937_64 rng(a.seed);
  if (a.workload == "uniform") {
    std::uniform_int_distribution<std::uint32_t> d(0, static_cast<std::uint32_t>(a.keys - 1));
    for (auto& x : t)
      x = d(rng);
  } else if (a.workload == "zipf") {
    // P(rank i) proportional to 1/(i+1): a uniform draw looked up in the cumulative weights.
    std::vector<double> cdf(static_cast<std::size_t>(a.keys));
    double sum = 0;
    for (std::size_t i = 0; i < cdf.size(); ++i)
      cdf[i] = (sum += 1.0 / static_cast<double>(i + 1));
    std::uniform_real_distribution<double> u(0, sum);
    for (auto& x : t) {
      const auto it = std::lower_bound(cdf.begin(), cdf.end(), u(rng));
      x = static_cast<std::uint32_t>(std::min<std::ptrdiff_t>(it - cdf.begin(), a.keys - 1));
    }
  }
  return t;
}

// Writes key `i` as the peers spell it: "tenant-" and 25 digits, 32 bytes (in place, as a
// server that parsed the request would hold it).
void WriteKey(std::string& out, std::uint32_t i) {
  if (out.size() != 32) out = "tenant-0000000000000000000000000";
  for (std::size_t d = 31; d >= 7; --d) {
    out[d] = static_cast<char>('0' + i % 10);
    i /= 10;
    if (i == 0 && d > 7) {
      for (std::size_t z = 7; z < d; ++z)
        out[z] = '0';
      break;
    }
  }
}

long MaxRssKib() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

struct ThreadResult {
  std::uint64_t decisions = 0, allowed = 0, errors = 0;
  std::vector<double> latencies_us;
};

}  // namespace

int main(int argc, char** argv) {
  // The SHA-1 of the decide script, for redis-benchmark's EVALSHA (the Redis path's ceiling).
  if (argc == 2 && std::strcmp(argv[1], "--decide-script-sha") == 0) {
    std::printf("%s\n", sluice::redis::sha1_hex(sluice::redis::kDecideScript).c_str());
    return 0;
  }
  const Args a = Parse(argc, argv);
  const std::vector<std::uint32_t> table = KeyTable(a);

  std::string url = "memory://";
  if (a.storage != "memory") url = a.redis_url;
  if (a.storage == "eventual") url += (url.find('?') == std::string::npos ? "?" : "&");
  if (a.storage == "eventual") url += "consistency=eventual";
  std::string error;
  std::unique_ptr<sluice::Store> store = sluice::open_store(url, error);
  if (store == nullptr) {
    std::fprintf(stderr, "sluice_peer_bench: %s\n", error.c_str());
    return 2;
  }
  sluice::RuleSource src;
  sluice::DomainRules d;
  d.domain = "bench";
  sluice::DescriptorRule r;
  r.key = "tenant";  // the key-only default: one counter per value
  r.limits.push_back(
      sluice::LimitDef::per_unit(100, sluice::Unit::kSecond, AlgorithmOf(a.algorithm)));
  d.descriptors.push_back(r);
  src.domains.push_back(d);
  sluice::Limiter limiter(sluice::RuleSet::compile(std::move(src)), *store,
                          sluice::SystemClock::instance());

  const long setup_rss = MaxRssKib();
  std::atomic<std::size_t> cursor{0};
  // run() decides in a closed loop on every thread until `until`; with `keep`, returns what
  // each thread saw.
  auto run = [&](Steady::time_point until, bool keep) {
    std::vector<ThreadResult> results(static_cast<std::size_t>(a.threads));
    std::vector<std::thread> pool;
    for (int t = 0; t < a.threads; ++t) {
      pool.emplace_back([&, t] {
        ThreadResult& res = results[static_cast<std::size_t>(t)];
        sluice::Request req{"bench", {sluice::Descriptor{{{"tenant", ""}}, {}, {}}}, 1};
        std::string& value = req.descriptors[0].entries[0].value;
        std::size_t at = cursor.fetch_add(4096 * static_cast<std::size_t>(t + 1));
        for (std::uint64_t n = 0;; ++n) {
          if ((n & 63) == 0 && Steady::now() >= until) break;
          WriteKey(value, table[at++ & (table.size() - 1)]);
          const bool timed = keep && n % static_cast<std::uint64_t>(a.sample_every) == 0;
          const auto t0 = timed ? Steady::now() : Steady::time_point{};
          const sluice::Decision dec = limiter.decide(req);
          if (timed) {
            res.latencies_us.push_back(
                std::chrono::duration<double, std::micro>(Steady::now() - t0).count());
          }
          ++res.decisions;
          res.allowed += dec.allowed ? 1 : 0;
          res.errors += dec.error.empty() ? 0 : 1;
        }
      });
    }
    for (auto& th : pool)
      th.join();
    return results;
  };

  run(Steady::now() + std::chrono::milliseconds(500), false);  // warm-up, not counted
  const auto start = Steady::now();
  const std::vector<ThreadResult> results = run(
      start +
          std::chrono::duration_cast<Steady::duration>(std::chrono::duration<double>(a.seconds)),
      true);
  const double elapsed = std::chrono::duration<double>(Steady::now() - start).count();

  ThreadResult all;
  for (const ThreadResult& res : results) {
    all.decisions += res.decisions;
    all.allowed += res.allowed;
    all.errors += res.errors;
    all.latencies_us.insert(all.latencies_us.end(), res.latencies_us.begin(),
                            res.latencies_us.end());
  }
  std::sort(all.latencies_us.begin(), all.latencies_us.end());
  auto quantile = [&](double q) {
    if (all.latencies_us.empty()) return 0.0;
    const auto i = static_cast<std::size_t>(q * static_cast<double>(all.latencies_us.size() - 1));
    return all.latencies_us[i];
  };
  std::string cdf;
  for (int i = 1; i <= 200; ++i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%s%.3f", i == 1 ? "" : ",", quantile(i / 200.0));
    cdf += buf;
  }
  const std::string variant = std::string("library ") + a.storage + " " + a.algorithm;
  std::printf(
      "{\"system\":\"sluice\",\"variant\":\"%s\",\"workload\":\"%s\",\"keys\":%ld,"
      "\"seconds\":%.3f,\"decisions\":%llu,\"decisions_per_s\":%.1f,\"allowed\":%llu,"
      "\"denied\":%llu,\"errors\":%llu,\"threads\":%d,\"sample_every\":%d,\"timed_calls\":%zu,"
      "\"p50_us\":%.3f,\"p99_us\":%.3f,\"peak_rss_kib\":%ld,\"setup_rss_kib\":%ld,"
      "\"cdf_us\":[%s]}\n",
      variant.c_str(), a.workload.c_str(), a.keys, elapsed,
      static_cast<unsigned long long>(all.decisions), static_cast<double>(all.decisions) / elapsed,
      static_cast<unsigned long long>(all.allowed),
      static_cast<unsigned long long>(all.decisions - all.allowed),
      static_cast<unsigned long long>(all.errors), a.threads, a.sample_every,
      all.latencies_us.size(), quantile(0.5), quantile(0.99), MaxRssKib(), setup_rss, cdf.c_str());
  return all.errors == 0 ? 0 : 1;
}
