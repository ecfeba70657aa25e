// Many sluice instances on one shared store: K `sluice serve` processes against one Redis and
// against a Redis Cluster, driven over gRPC with an offered load of 3x the limits, spread over
// the instances (uniform, and skewed onto one instance). For each algorithm it reports what was
// admitted against what the contract allows and the worst window, and checks that in strong
// mode (every decision atomic in Redis) nothing ever exceeds the contract.
//
// The short form runs in `make test`; SLUICE_DISTRIBUTED_SECONDS=60 gives the long form, and
// SLUICE_DISTRIBUTED_CSV=file records every call for scripts/plot-distributed.py.
//
// Strong mode must never exceed the contract; eventual mode (local decisions, synced every
// 100 ms) must stay within 2 % of it over the run.
//
// Decision times are only known to lie between a call's send and its answer, so every check is
// made on the side that can only over-count: a violation reported is a real one.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <regex>
#include <thread>

#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "server/server_fixture.h"
#include "sluice/algorithms.h"
#include "support/redis_harness.h"

namespace sluice::testing {
namespace {

namespace rls = envoy::service::ratelimit::v3;
using SteadyClock = std::chrono::steady_clock;

constexpr int kInstances = 4;

// Eventual mode's bounds (docs/deployment.md) hold while each sync round is answered within its
// interval. Under ThreadSanitizer every thread runs several times slower and rounds slip past
// their 100 ms, so a TSan build reports eventual mode's figures without judging them (it still
// runs every path for races); the plain and ASan builds judge them. Strong mode is judged
// everywhere: its contract does not depend on timing.
#if defined(__SANITIZE_THREAD__)
constexpr bool kTimelyRounds = false;
#else
constexpr bool kTimelyRounds = true;
#endif
constexpr std::uint64_t kLimit = 40;  // per second, for every algorithm below
constexpr Micros kWindow = 1'000'000;

// One limit per algorithm, each 40 per second.
constexpr const char* kRules = R"(domain: dist
descriptors:
  - key: fixed_window
    rate_limit: {unit: second, requests_per_unit: 40}
  - key: sliding_window_log
    rate_limit: {unit: second, requests_per_unit: 40, algorithm: sliding_window_log}
  - key: token_bucket
    rate_limit: {unit: second, requests_per_unit: 40, algorithm: token_bucket}
)";

// The same fixed window at a quarter of the limit: K instances each on its own memory store then
// admit together what one shared limit admits, so that the speed test's two sides admit the
// same share of the same offered load.
constexpr const char* kQuarterRules = R"(domain: dist
descriptors:
  - key: fixed_window
    rate_limit: {unit: second, requests_per_unit: 10}
)";
static_assert(kInstances == 4);

Micros wall_micros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Instance is one `sluice serve` process.
class Instance {
 public:
  Instance(const std::string& config, const std::string& storage, const std::string& log,
           const std::string& consistency = "strong") {
    std::fflush(stdout);  // the child must not write this process's buffered output again
    std::fflush(stderr);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      std::freopen(log.c_str(), "w", stderr);
      std::freopen("/dev/null", "w", stdout);
      ::execl(SLUICE_BIN, SLUICE_BIN, "serve", "--config", config.c_str(), "--storage",
              storage.c_str(), "--http-listen", "off", "--grpc-listen", "127.0.0.1:0",
              "--watch-interval-ms", "0", "--consistency", consistency.c_str(), nullptr);
      ::_exit(127);
    }
    const std::regex listening("gRPC on 127\\.0\\.0\\.1:([0-9]+)");
    const auto deadline = SteadyClock::now() + std::chrono::seconds(15);
    while (SteadyClock::now() < deadline) {
      std::ifstream in(log);
      const std::string text(std::istreambuf_iterator<char>(in), {});
      std::smatch m;
      if (std::regex_search(text, m, listening)) {
        port_ = std::stoi(m[1]);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // waiting for start-up
    }
    stop();
    throw std::runtime_error("sluice serve did not start");
  }
  ~Instance() { stop(); }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 500 && ::waitpid(pid_, &status, WNOHANG) == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (::waitpid(pid_, &status, WNOHANG) == 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
    pid_ = -1;
  }
  int port() const { return port_; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

// Call is one decision as the client saw it.
struct Call {
  Micros sent = 0, answered = 0;
  bool ok = false;       // the call succeeded
  bool allowed = false;  // OK rather than OVER_LIMIT
  Micros reset = 0;      // duration_until_reset
};

// drive() offers `rate` calls per second for `seconds` on one key of `algorithm`, spread over
// the instances by `weights`, paced per instance; returns every call.
std::vector<Call> drive(const std::vector<int>& ports, const std::string& algorithm,
                        const std::vector<double>& weights, double rate, double seconds) {
  std::vector<std::vector<Call>> per(ports.size());
  std::vector<std::thread> threads;
  const auto start = SteadyClock::now();
  for (std::size_t i = 0; i < ports.size(); ++i) {
    const double my_rate = rate * weights[i];
    if (my_rate <= 0) continue;
    threads.emplace_back([&, i, my_rate] {
      auto stub = rls::RateLimitService::NewStub(grpc::CreateChannel(
          "127.0.0.1:" + std::to_string(ports[i]), grpc::InsecureChannelCredentials()));
      rls::RateLimitRequest req;
      req.set_domain("dist");
      auto* e = req.add_descriptors()->add_entries();
      e->set_key(algorithm);
      e->set_value("shared");
      const auto gap = std::chrono::duration<double>(1.0 / my_rate);
      for (int n = 0;; ++n) {
        const auto due = start + std::chrono::duration_cast<SteadyClock::duration>(gap * n);
        if (due - start > std::chrono::duration<double>(seconds)) break;
        std::this_thread::sleep_until(due);  // pacing the offered load, not waiting on a window
        Call c;
        c.sent = wall_micros();
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
        rls::RateLimitResponse resp;
        const grpc::Status s = stub->ShouldRateLimit(&ctx, req, &resp);
        c.answered = wall_micros();
        c.ok = s.ok();
        c.allowed = resp.overall_code() == rls::RateLimitResponse::OK;
        if (resp.statuses_size() > 0) {
          const auto& d = resp.statuses(0).duration_until_reset();
          c.reset = d.seconds() * 1'000'000 + d.nanos() / 1000;
        }
        per[i].push_back(c);
      }
    });
  }
  for (auto& t : threads)
    t.join();
  std::vector<Call> all;
  for (auto& v : per)
    all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end(), [](const Call& a, const Call& b) { return a.sent < b.sent; });
  return all;
}

// Report is what one run admitted against its contract.
struct Report {
  std::size_t calls = 0, failed = 0, admitted = 0;
  double allowance = 0;    // what the exact algorithm admits of the same offered calls
  std::int64_t worst = 0;  // the worst window's admitted minus its limit (<= 0 keeps the contract)
  double rate = 0;         // decisions per second
  double counter = 0;      // sliding log in eventual mode: what the exact counter admits
};

// reference() returns what the exact algorithm (the memory store's step) admits of the offered
// calls, at their send times: what the contract allows for this load.
template <class State>
double reference(Algorithm algorithm, const std::vector<Call>& calls) {
  const LimitSpec spec{algorithm, kLimit, kWindow, 0};
  State state;
  std::size_t allowed = 0;
  for (const Call& c : calls)
    allowed += step(state, spec, 1, c.sent).allowed ? 1 : 0;
  return static_cast<double>(allowed);
}

// analyse_counter() checks a sliding_window_log limit in eventual mode, which decides by the
// sliding window counter's rule (sluice/eventual_store.h): at every admitted call,
// previous * (W - e) + current * W <= n * W over the calendar windows' real counts. A call's
// window is the one its answer names (its reset is the end of the window after it), and its
// position e in it the latest it can have been decided (its answer), where the previous window
// weighs least: an excess reported is a real one, as everywhere in this harness.
// The allowance is what the log (the limit as configured) admits of the same offered calls;
// `counter` what the exact counter admits of them.
void analyse_counter(const std::vector<const Call*>& admitted, const std::vector<Call>& calls,
                     Report& r) {
  std::map<Micros, std::int64_t> per_window;
  std::vector<std::pair<Micros, Micros>> at;  // (window, e) of each admitted call
  for (const Call* c : admitted) {
    const Micros k = (c->answered + c->reset) / kWindow - 2;
    ++per_window[k];
    at.emplace_back(k, std::max<Micros>(0, c->answered - k * kWindow));
  }
  std::map<Micros, std::int64_t> so_far;
  for (const auto& [k, e] : at) {
    const std::int64_t cur = ++so_far[k];
    const auto prev_it = per_window.find(k - 1);
    const std::int64_t prev = prev_it == per_window.end() ? 0 : prev_it->second;
    const std::int64_t over = prev * (kWindow - std::min(e, kWindow)) + cur * kWindow -
                              static_cast<std::int64_t>(kLimit) * kWindow;
    r.worst = std::max(r.worst, over <= 0 ? over / kWindow : (over + kWindow - 1) / kWindow);
  }
  r.allowance = reference<SlidingLogState>(Algorithm::kSlidingWindowLog, calls);
  r.counter = reference<SlidingCounterState>(Algorithm::kSlidingWindowCounter, calls);
}

Report analyse(const std::vector<Call>& calls, const std::string& algorithm, double seconds,
               bool counter_form = false) {
  Report r;
  r.calls = calls.size();
  std::vector<const Call*> admitted;
  for (const Call& c : calls) {
    r.failed += !c.ok;
    if (c.ok && c.allowed) admitted.push_back(&c);
  }
  r.admitted = admitted.size();
  r.rate = static_cast<double>(calls.size()) / seconds;
  r.worst = -static_cast<std::int64_t>(kLimit);
  if (algorithm == "fixed_window") {
    // The window ends at decision time + duration_until_reset, a multiple of W: the one in
    // [sent + reset, answered + reset] (unique while a call takes less than W).
    std::map<Micros, std::int64_t> per_window;
    for (const Call* c : admitted) {
      const Micros end = (c->answered + c->reset) / kWindow * kWindow;
      ++per_window[end];
    }
    for (const auto& [end, n] : per_window)
      r.worst = std::max(r.worst, n - static_cast<std::int64_t>(kLimit));
    r.allowance = reference<FixedWindowState>(Algorithm::kFixedWindow, calls);
  } else if (algorithm == "sliding_window_log" && counter_form) {
    analyse_counter(admitted, calls, r);
  } else if (algorithm == "sliding_window_log") {
    // Admitted decisions i..j whose true times lie within one window: answered_j - sent_i < W
    // guarantees it, so at most n of them.
    std::size_t i = 0;
    for (std::size_t j = 0; j < admitted.size(); ++j) {
      while (admitted[j]->answered - admitted[i]->sent >= kWindow)
        ++i;
      r.worst = std::max(r.worst,
                         static_cast<std::int64_t>(j - i + 1) - static_cast<std::int64_t>(kLimit));
    }
    r.allowance = reference<SlidingLogState>(Algorithm::kSlidingWindowLog, calls);
  } else {
    // A token bucket of b = n admits at most b + n * (t_j - t_i) / W in [t_i, t_j], and
    // t_j - t_i <= answered_j - sent_i.
    for (std::size_t i = 0; i < admitted.size(); ++i) {
      for (std::size_t j = i; j < admitted.size(); ++j) {
        const double span = static_cast<double>(admitted[j]->answered - admitted[i]->sent);
        const auto bound = static_cast<std::int64_t>(
            std::floor(static_cast<double>(kLimit) * (1.0 + span / static_cast<double>(kWindow))));
        r.worst = std::max(r.worst, static_cast<std::int64_t>(j - i + 1) - bound);
      }
    }
    r.allowance = reference<TokenBucketState>(Algorithm::kTokenBucket, calls);
  }
  return r;
}

// write_csv() appends every call to $SLUICE_DISTRIBUTED_CSV, when set, for
// scripts/plot-distributed.py: store, spread, algorithm, milliseconds since the run's first
// call, admitted (1) or not (0).
void write_csv(const std::vector<Call>& calls, const std::string& store, const std::string& spread,
               const std::string& algorithm) {
  const char* path = std::getenv("SLUICE_DISTRIBUTED_CSV");
  if (path == nullptr || calls.empty()) return;
  std::ofstream out(path, std::ios::app);
  const Micros t0 = calls.front().sent;
  for (const Call& c : calls) {
    if (!c.ok) continue;
    out << store << ',' << spread << ',' << algorithm << ',' << (c.sent - t0) / 1000 << ','
        << (c.allowed ? 1 : 0) << '\n';
  }
}

double run_seconds() {
  const char* env = std::getenv("SLUICE_DISTRIBUTED_SECONDS");
  return env != nullptr ? std::max(1.0, std::atof(env)) : 3.0;
}

// Cluster is K `sluice serve` processes on one store.
struct Cluster {
  Cluster(const std::string& storage, const std::string& consistency,
          const std::string& rules = kRules) {
    dir.write("dist.yaml", rules);
    for (int i = 0; i < kInstances; ++i) {
      instances.push_back(std::make_unique<Instance>(
          dir.path() + "/dist.yaml", storage,
          dir.path() + "/serve-" + consistency + std::to_string(i) + ".log", consistency));
      ports.push_back(instances.back()->port());
    }
  }
  TempDir dir;
  std::vector<std::unique_ptr<Instance>> instances;
  std::vector<int> ports;
};

// throughput() runs `clients` closed-loop gRPC clients per instance for `seconds`, each deciding
// on keys of its own spread over `keys` values, and returns the decisions per second.
double throughput(const std::vector<int>& ports, int clients, double seconds, int keys) {
  std::atomic<std::uint64_t> done{0};
  std::vector<std::thread> threads;
  const auto until = SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(
                                              std::chrono::duration<double>(seconds));
  for (std::size_t i = 0; i < ports.size(); ++i) {
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(ports[i]),
                                       grpc::InsecureChannelCredentials());
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&, channel, c] {
        auto stub = rls::RateLimitService::NewStub(channel);
        rls::RateLimitRequest req;
        req.set_domain("dist");
        auto* e = req.add_descriptors()->add_entries();
        e->set_key("fixed_window");
        std::uint64_t n = 0;
        for (int k = c;; k = (k + 7919) % keys) {
          if (SteadyClock::now() >= until) break;
          e->set_value("user" + std::to_string(k));
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
          rls::RateLimitResponse resp;
          if (stub->ShouldRateLimit(&ctx, req, &resp).ok()) ++n;
        }
        done += n;
      });
    }
  }
  for (auto& t : threads)
    t.join();
  return static_cast<double>(done.load()) / seconds;
}

void run_mode(const std::string& storage, const std::string& label,
              const std::string& consistency) {
  Cluster cluster(storage, consistency);
  const std::vector<int>& ports = cluster.ports;
  const bool strong = consistency == "strong";
  const double seconds = run_seconds();
  const double offered = 3.0 * static_cast<double>(kLimit);  // 3x the limit
  for (const auto& [spread, weights] : std::vector<std::pair<std::string, std::vector<double>>>{
           {"uniform", {0.25, 0.25, 0.25, 0.25}}, {"skewed", {0.7, 0.1, 0.1, 0.1}}}) {
    for (const std::string algorithm : {"fixed_window", "sliding_window_log", "token_bucket"}) {
      const char* only = std::getenv("SLUICE_DISTRIBUTED_ONLY");  // one algorithm, by hand
      if (only != nullptr && algorithm != only) continue;
      const std::vector<Call> calls = drive(ports, algorithm, weights, offered, seconds);
      const Report r = analyse(calls, algorithm, seconds, /*counter_form=*/!strong);
      write_csv(calls, label + " " + consistency, spread, algorithm);
      const double share = static_cast<double>(r.admitted) / r.allowance;
      std::printf(
          "%-13s %-8s %-7s %-18s calls %5zu failed %zu admitted %5zu allowance %6.0f "
          "(%.1f%%) worst window %+lld  %.0f decisions/s",
          label.c_str(), consistency.c_str(), spread.c_str(), algorithm.c_str(), r.calls, r.failed,
          r.admitted, r.allowance, 100.0 * share, static_cast<long long>(r.worst), r.rate);
      if (r.counter > 0) {
        std::printf("  (exact counter %.0f, %.1f%%)", r.counter,
                    100.0 * static_cast<double>(r.admitted) / r.counter);
      }
      std::printf("\n");
      EXPECT_EQ(r.failed, 0u) << label << " " << spread << " " << algorithm;
      EXPECT_GT(r.admitted, 0u);
      if (strong) {
        EXPECT_LE(r.worst, 0) << label << " " << spread << " " << algorithm
                              << ": more admitted than the contract allows";
        continue;
      }
      if (!kTimelyRounds) continue;  // reported above, not judged: see kTimelyRounds
      // docs/deployment.md: within 2 % of the contract over the run, give or take the one sync
      // interval (n * I / W = 4 units) that a run's start and end each cost. A sliding log is
      // decided by the counter's rule, and the log and the counter differ at a run's edges by up
      // to n: a short run is held to the exact counter, a long one (where n is under 2 %) to the
      // log. (The exact counter, deciding at each call's own time, itself admits 2-4 % below the
      // log over a long run at this load, a unit per window that its pacing leaves unused.)
      const bool to_counter = r.counter > 0 && seconds < 30;
      const double reference = to_counter ? r.counter : r.allowance;
      const double slack = 0.02 * reference + 8;
      const char* what = to_counter ? " against the exact counter" : " against the contract";
      EXPECT_LE(static_cast<double>(r.admitted), reference + slack)
          << label << " " << spread << " " << algorithm << what;
      EXPECT_GE(static_cast<double>(r.admitted), reference - slack)
          << label << " " << spread << " " << algorithm << what;
      if (algorithm == "sliding_window_log") {
        // The counter form (docs/deployment.md): the counter's rule, run ahead by at most one
        // interval's release (n * I / W = 4).
        EXPECT_LE(r.worst, static_cast<std::int64_t>(kLimit / 10)) << label << " " << spread;
      }
    }
  }
}

TEST(Distributed, StrongOnOneRedisNeverExceedsTheContract) {
  RedisServer redis;
  run_mode("redis://" + redis.address(), "redis", "strong");
}

TEST(Distributed, StrongOnARedisClusterNeverExceedsTheContract) {
  RedisCluster cluster;
  run_mode("redis+cluster://" + cluster.seeds(), "redis-cluster", "strong");
}

TEST(Distributed, EventualOnOneRedisStaysWithinTwoPercentOfTheContract) {
  RedisServer redis;
  run_mode("redis://" + redis.address(), "redis", "eventual");
}

TEST(Distributed, EventualOnARedisClusterStaysWithinTwoPercentOfTheContract) {
  RedisCluster cluster;
  run_mode("redis+cluster://" + cluster.seeds(), "redis-cluster", "eventual");
}

// Decisions per second of K instances in eventual mode against K instances each on its own
// memory store (with 1/K of the limit each, so both sides admit alike), side by side, closed loop
// over gRPC, at the issue's load: keys enough that each
// is offered about 3x its limit (SLUICE_DISTRIBUTED_KEYS=N picks N keys instead: 1 for one hot
// key, 10000 for many keys each far below its limit; SLUICE_DISTRIBUTED_ROUNDS=N runs N rounds
// instead of 3). Reported, not asserted (docs/benchmarks.md).
TEST(Distributed, EventualDecidesAtMemoryStoreSpeed) {
  RedisServer redis;
  const double seconds = std::min(run_seconds(), 5.0);
  const char* keys_env = std::getenv("SLUICE_DISTRIBUTED_KEYS");
  int keys = keys_env != nullptr ? std::max(1, std::atoi(keys_env)) : 0;
  if (keys == 0) {
    Cluster c("memory://", "strong");
    const double rate = throughput(c.ports, 4, 1.0, 1000);
    keys = std::max(1, static_cast<int>(rate / (3.0 * static_cast<double>(kLimit))));
  }
  const char* rounds_env = std::getenv("SLUICE_DISTRIBUTED_ROUNDS");
  const int rounds = rounds_env != nullptr ? std::max(1, std::atoi(rounds_env)) : 3;
  std::vector<double> memory, eventual, ratio;
  for (int round = 0; round < rounds; ++round) {
    // Alternating which goes first, so that neither gains from its place in the round.
    for (int side = 0; side < 2; ++side) {
      if ((side + round) % 2 == 0) {
        Cluster c("memory://", "strong", kQuarterRules);
        memory.push_back(throughput(c.ports, 4, seconds, keys));
      } else {
        Cluster c("redis://" + redis.address(), "eventual");
        eventual.push_back(throughput(c.ports, 4, seconds, keys));
      }
    }
    ratio.push_back(eventual.back() / memory.back());
    std::printf(
        "round %d, %d keys (each offered %.1fx its limit in eventual mode): memory %.0f "
        "decisions/s, eventual %.0f decisions/s (%.1f%%)\n",
        round, keys, eventual.back() / keys / static_cast<double>(kLimit), memory.back(),
        eventual.back(), 100.0 * ratio.back());
  }
  const auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t m = v.size() / 2;
    return v.size() % 2 == 1 ? v[m] : (v[m - 1] + v[m]) / 2;
  };
  std::printf(
      "median: memory %.0f decisions/s, eventual %.0f decisions/s; median of the per-round "
      "ratios %.1f%%\n",
      median(memory), median(eventual), 100.0 * median(ratio));
  EXPECT_GT(median(eventual), 0);
}

}  // namespace
}  // namespace sluice::testing
