// sluice as a library, on the workloads of the peer benchmarks (bench/peers/README.md): the same
// rule (100 per second per key), the same key tables (one hot key; 100,000 keys uniform;
// 1,000,000 keys Zipf), the same closed loop, and the same one-line JSON summary, so that
// bench/peers/run.sh can put it beside Python's limits and Node's rate-limiter-flexible.
//
//   sluice_peer_bench --storage memory|redis|eventual [--redis-url redis://HOST:PORT]
//                     --workload hot|uniform|zipf [--seconds S] [--keys N]
//                     [--algorithm fixed|moving|counter|bucket] [--threads T] [--in-flight F]
//                     [--sample-every N] [--seed N]
//   sluice_peer_bench --ceiling --redis-url redis://127.0.0.1:PORT --workload W [--seconds S]
//
// --ceiling measures the Redis path's ceiling instead (bench/redis_ceiling.h): Redis running the
// decide script for one request per call, 50 connections each 16 calls deep, nothing else.
//
// `moving` is sluice's sliding_window_log (limits' moving window), `counter` its sliding window
// counter, `bucket` its token bucket. With Redis, one thread keeps F decisions in flight with
// Limiter::decide_async (default 16, as rate-limiter-flexible's 16 promises in flight on Node's
// one thread); with --in-flight 0, T threads (default 16) each decide one call after another.
// Otherwise one thread decides one call after another, as the peers' single-threaded loops. One
// call in 16 is timed (in every mode: a hot key through Redis is answered locally by the
// over-limit cache, millions a second, and timing them all would fill the memory the run
// reports).
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "redis_ceiling.h"
#include "sluice/limiter.h"
#include "sluice/storage.h"
#include "zipf.h"

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
  int in_flight = -1;  // -1: the storage's default
  int sample_every = 0;
  std::uint64_t seed = 42;
};

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "sluice_peer_bench: %s\nusage: sluice_peer_bench --storage memory|redis|eventual "
               "[--redis-url URL] --workload hot|uniform|zipf [--seconds S] [--keys N] "
               "[--algorithm fixed|moving|counter|bucket] [--threads T] [--in-flight F] "
               "[--sample-every N] "
               "[--seed N]\n",
               why.c_str());
  std::exit(2);
}

// Parse() reads flags from argv[1]; argv[0] is skipped.
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
    } else if (flag == "--in-flight") {
      a.in_flight = std::atoi(v.c_str());
      if (a.in_flight < 0 || a.in_flight > 100'000) Usage("--in-flight must be 0 to 100000");
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
  if (a.in_flight < 0) a.in_flight = a.storage == "redis" ? 16 : 0;
  if (a.in_flight > 0 && a.threads > 1) Usage("--in-flight runs on one thread: no --threads");
  if (a.threads <= 0) a.threads = a.in_flight == 0 && a.storage == "redis" ? 16 : 1;
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
    const sluice::bench::ZipfDistribution zipf(static_cast<std::size_t>(a.keys), 1.0);
    for (auto& x : t)
      x = static_cast<std::uint32_t>(zipf(rng));
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

// Chains is --in-flight's loop, as an event loop keeps its calls in flight: F chains, each
// starting its next decision from the completion of its last, on whichever thread that comes
// (the store's I/O thread). A completion that comes at once, inside decide_async() (the
// over-limit cache answering), is handed to the starting thread instead, which keeps the stack
// flat.
class Chains {
 public:
  Chains(sluice::Limiter& limiter, const std::vector<std::uint32_t>& table, int chains,
         int sample_every, std::size_t first)
      : limiter_(limiter), table_(table), sample_every_(sample_every), slots_(chains) {
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      slots_[i].req = sluice::Request{"bench", {sluice::Descriptor{{{"tenant", ""}}, {}, {}}}, 1};
      slots_[i].at = first + i * (table_.size() / slots_.size());
    }
  }

  // run() keeps every chain going until `until`, then waits for the last decisions.
  ThreadResult run(Steady::time_point until, bool keep) {
    keep_ = keep;
    stop_.store(false);
    out_.store(static_cast<int>(slots_.size()));
    for (std::size_t i = 0; i < slots_.size(); ++i)
      start(i);
    std::vector<std::size_t> now;
    for (;;) {
      {
        std::unique_lock lock(mu_);
        cv_.wait_until(lock, until, [&] { return !deferred_.empty(); });
        now.swap(deferred_);
      }
      if (Steady::now() >= until) break;
      for (std::size_t i : now)
        start(i);
      now.clear();
    }
    stop_.store(true);
    for (;;) {  // chains end at their next completion; deferred ones end here
      {
        std::lock_guard lock(mu_);
        out_.fetch_sub(static_cast<int>(deferred_.size()));
        deferred_.clear();
      }
      out_.fetch_sub(static_cast<int>(now.size()));
      now.clear();
      if (out_.load() == 0) break;
      std::this_thread::yield();
    }
    ThreadResult r;
    for (Slot& s : slots_) {
      r.decisions += s.decisions;
      r.allowed += s.allowed;
      r.errors += s.errors;
      r.latencies_us.insert(r.latencies_us.end(), s.latencies_us.begin(), s.latencies_us.end());
      s = Slot{std::move(s.req), s.at};
    }
    return r;
  }

 private:
  struct Slot {
    sluice::Request req;
    std::size_t at = 0;
    std::uint64_t decisions = 0, allowed = 0, errors = 0;
    std::int64_t t0_ns = -1;
    std::vector<double> latencies_us;
  };

  static std::int64_t NowNs() {
    return std::chrono::nanoseconds(Steady::now().time_since_epoch()).count();
  }

  void start(std::size_t i) {
    Slot& s = slots_[i];
    WriteKey(s.req.descriptors[0].entries[0].value, table_[s.at++ & (table_.size() - 1)]);
    s.t0_ns = keep_ && s.decisions % static_cast<std::uint64_t>(sample_every_) == 0 ? NowNs() : -1;
    ++depth_;
    limiter_.decide_async(s.req, [this, i](sluice::Decision d) { finished(i, d); });
    --depth_;
  }

  void finished(std::size_t i, const sluice::Decision& d) {
    Slot& s = slots_[i];
    if (s.t0_ns >= 0) s.latencies_us.push_back(static_cast<double>(NowNs() - s.t0_ns) / 1e3);
    ++s.decisions;
    s.allowed += d.allowed ? 1 : 0;
    s.errors += d.error.empty() ? 0 : 1;
    if (stop_.load(std::memory_order_relaxed)) {
      out_.fetch_sub(1);
      return;
    }
    if (depth_ == 0) return start(i);
    std::lock_guard lock(mu_);
    deferred_.push_back(i);
    cv_.notify_one();
  }

  sluice::Limiter& limiter_;
  const std::vector<std::uint32_t>& table_;
  const int sample_every_;
  std::vector<Slot> slots_;
  bool keep_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<int> out_{0};  // chains not yet ended
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::size_t> deferred_;  // chains whose decision completed inside decide_async()
  static thread_local int depth_;      // decide_async() calls running on this thread
};

thread_local int Chains::depth_ = 0;

// Ceiling() runs --ceiling and prints its JSON line.
int Ceiling(const Args& a) {
  const std::string prefix = "redis://127.0.0.1:";
  if (a.redis_url.rfind(prefix, 0) != 0)
    Usage("--ceiling needs --redis-url redis://127.0.0.1:PORT");
  sluice::bench::CeilingOptions o;
  o.port = std::atoi(a.redis_url.c_str() + prefix.size());
  o.keys = static_cast<std::size_t>(a.keys);
  o.seconds = a.seconds;
  try {
    const sluice::bench::CeilingResult r = sluice::bench::RedisCeiling(o);
    std::printf(
        "{\"system\":\"redis\",\"variant\":\"decide script (ceiling)\",\"workload\":\"%s\","
        "\"keys\":%ld,\"decisions_per_s\":%.1f,\"p50_us\":%.1f,\"errors\":%llu,"
        "\"connections\":%d,\"depth\":%d}\n",
        a.workload.c_str(), a.keys, r.calls_per_s, r.p50_us,
        static_cast<unsigned long long>(r.errors), o.connections, o.depth);
    return r.errors == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sluice_peer_bench --ceiling: %s\n", e.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const bool ceiling = argc > 1 && std::strcmp(argv[1], "--ceiling") == 0;
  const Args a = Parse(argc - (ceiling ? 1 : 0), argv + (ceiling ? 1 : 0));
  if (ceiling) return Ceiling(a);
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
    if (a.in_flight > 0) {
      Chains chains(limiter, table, a.in_flight, a.sample_every, cursor.fetch_add(4096));
      results[0] = chains.run(until, keep);
      return results;
    }
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
      "\"denied\":%llu,\"errors\":%llu,\"threads\":%d,\"in_flight\":%d,\"sample_every\":%d,"
      "\"timed_calls\":%zu,"
      "\"p50_us\":%.3f,\"p99_us\":%.3f,\"peak_rss_kib\":%ld,\"setup_rss_kib\":%ld,"
      "\"cdf_us\":[%s]}\n",
      variant.c_str(), a.workload.c_str(), a.keys, elapsed,
      static_cast<unsigned long long>(all.decisions), static_cast<double>(all.decisions) / elapsed,
      static_cast<unsigned long long>(all.allowed),
      static_cast<unsigned long long>(all.decisions - all.allowed),
      static_cast<unsigned long long>(all.errors), a.threads, a.in_flight, a.sample_every,
      all.latencies_us.size(), quantile(0.5), quantile(0.99), MaxRssKib(), setup_rss, cdf.c_str());
  return all.errors == 0 ? 0 : 1;
}
