// load/load.h — what the gRPC and HTTP drivers of sluice-bench share: the options, the run's
// timeline, the open-loop schedule, the per-thread statistics, and the interface each protocol
// implements (LoadGenerator). See docs/load-tool.md for what the figures mean.
#pragma once

#include <time.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>

#include "load/histogram.h"
#include "zipf.h"

namespace sluice::load {

using Clock = std::chrono::steady_clock;

enum class Endpoint { kJson, kCheck, kAuthz };

// How each request's key is chosen among the --keys values.
enum class KeyDistribution {
  kCycle,    // in order, each thread from its own starting point
  kUniform,  // uniformly at random
  kZipf,     // key i with probability proportional to 1 / (i + 1)^zipf_exponent
};

// LoadOptions is the command line, checked and with its defaults resolved.
struct LoadOptions {
  bool grpc = false;
  std::string host;
  std::string port;
  Endpoint endpoint = Endpoint::kJson;  // HTTP only
  std::string domain = "edge_proxy";
  std::string key = "remote_address";
  std::size_t keys = 1;
  KeyDistribution key_distribution = KeyDistribution::kCycle;
  double zipf_exponent = 1.0;  // > 0 and finite
  std::uint64_t seed = 42;     // of the random key streams (uniform, zipf)
  std::string path;            // non-empty: path mode (/v1/check body, /v1/authz X-Original-URI)
  int concurrency = 64;
  double rate = 0;      // requests/s over all threads; 0 = closed loop
  int connections = 0;  // HTTP connections or gRPC channels
  int threads = 1;
  int deny_status = 429;  // HTTP status that means "over limit" (besides 429 for /json, /check)
  std::chrono::nanoseconds duration = std::chrono::seconds(10);
  std::chrono::nanoseconds warmup = std::chrono::seconds(1);
  std::chrono::nanoseconds timeout = std::chrono::milliseconds(2000);
};

// Timeline is the run's schedule, the same for every thread. Requests are classified by their
// start time (the intended send time in open loop, the actual one in closed loop): before
// measure_begin they are warm-up, from measure_begin they are measured, and none starts at or
// after measure_end. What is in flight at measure_end is waited for until hard_stop (each
// request has its own timeout, which ends earlier), then abandoned.
struct Timeline {
  Clock::time_point start;
  Clock::time_point measure_begin;
  Clock::time_point measure_end;
  Clock::time_point hard_stop;
};

// Schedule gives an open-loop thread its send times: the whole run is one evenly spaced stream
// at `rate`, dealt round-robin to the threads, so thread t sends the requests t, t+T, t+2T...
struct Schedule {
  Clock::time_point start;
  double interval_ns = 0;  // 1e9 / rate
  int thread_index = 0;
  int threads = 1;

  // Due() returns the intended send time of this thread's k-th request.
  Clock::time_point Due(std::uint64_t k) const {
    const double n = static_cast<double>(k * static_cast<std::uint64_t>(threads) +
                                         static_cast<std::uint64_t>(thread_index));
    return start + std::chrono::nanoseconds(std::llround(n * interval_ns));
  }
};

// KeyPicker is one client thread's sequence of key indices (0 .. keys-1), in the options'
// distribution: cycling from `first_key`, or drawn from a generator seeded with the options'
// seed and the thread's `stream`, so that a run's key sequences are the same for the same seed.
// A draw costs a few nanoseconds (cycle, uniform) or a binary search in the shared Zipf table,
// ~0.1 µs for a million keys: little next to a request. Not thread-safe: each thread copies its
// own (the Zipf table is shared, read-only, and must outlive it).
class KeyPicker {
 public:
  KeyPicker() = default;
  KeyPicker(const LoadOptions& options, const bench::ZipfDistribution* zipf, std::size_t first_key,
            int stream)
      : distribution_(options.key_distribution),
        keys_(options.keys),
        cursor_(first_key % options.keys),
        uniform_(0, options.keys - 1),
        zipf_(zipf) {
    std::seed_seq seq{static_cast<std::uint32_t>(options.seed),
                      static_cast<std::uint32_t>(options.seed >> 32),
                      static_cast<std::uint32_t>(stream)};
    rng_.seed(seq);
  }

  // Next() returns the next request's key index.
  std::size_t Next() {
    switch (distribution_) {
      case KeyDistribution::kCycle:
        break;
      case KeyDistribution::kUniform:
        return uniform_(rng_);
      case KeyDistribution::kZipf:
        return (*zipf_)(rng_);
    }
    const std::size_t key = cursor_;
    if (++cursor_ == keys_) cursor_ = 0;
    return key;
  }

 private:
  KeyDistribution distribution_ = KeyDistribution::kCycle;
  std::size_t keys_ = 1;
  std::size_t cursor_ = 0;
  std::mt19937_64 rng_;
  std::uniform_int_distribution<std::size_t> uniform_{0, 0};
  const bench::ZipfDistribution* zipf_ = nullptr;
};

// ThreadPlan is one client thread's share of the load.
struct ThreadPlan {
  Timeline timeline;
  int thread_index = 0;
  int slots = 1;       // requests in flight at most (gRPC calls; HTTP connections)
  int first_slot = 0;  // global index of slot 0 (spreads slots over the gRPC channels)
  bool open_loop = false;
  Schedule schedule;  // open loop only
  KeyPicker keys;     // this thread's key sequence (the thread runs on a copy)
};

// ThreadCpuNanos() is the CPU time the calling thread has used.
inline std::uint64_t ThreadCpuNanos() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000 +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

// A send is late when it leaves more than this after its intended time (open loop).
inline constexpr std::chrono::nanoseconds kLateThreshold = std::chrono::milliseconds(1);

// After an error a slot (an HTTP connection, a gRPC call slot) waits this long before its next
// request, so a dead server is not hammered in a busy loop.
inline constexpr std::chrono::nanoseconds kErrorBackoff = std::chrono::milliseconds(10);

// PhaseStats counts the requests that started in one phase (warm-up or measured). Latencies
// are those of answered requests (ok and over_limit); errors have none.
struct PhaseStats {
  OwnedCounter ok, over_limit;
  OwnedCounter transport_errors;  // connect, write, read failures; gRPC UNAVAILABLE
  OwnedCounter timeouts;          // no answer within --timeout-ms
  OwnedCounter status_errors;     // any other HTTP status or gRPC status / overall_code
  LatencyHistogram latency;

  std::uint64_t Errors() const {
    return transport_errors.Get() + timeouts.Get() + status_errors.Get();
  }
};

enum class Outcome { kOk, kOverLimit, kTransportError, kTimeout, kStatusError };

// ThreadStats is one client thread's statistics: written by that thread (the open-loop gRPC
// pacer writes only the send-side counters, which nothing else writes), read by the progress
// reporter at any time and by main after the join.
struct ThreadStats {
  PhaseStats phase[2];     // [0] warm-up, [1] measured
  OwnedCounter completed;  // every finished request, both phases: the progress line's req/s

  // Open loop, measured phase only.
  OwnedCounter sent;
  // Sent more than kLateThreshold after their intended time, because every slot was busy at
  // that time (the server is the limit), or with a slot free (the client thread was late).
  OwnedCounter late_no_slot;
  OwnedCounter late_client;
  OwnedCounter unsent;  // due before measure_end but never sent
  OwnedCounter max_lag_ns;

  // CPU time of the client thread(s), set as they finish: whether the client was the limit.
  OwnedCounter thread_cpu_ns;
  OwnedCounter pacer_cpu_ns;  // the open-loop gRPC pacer thread

  // Record() counts one finished request. Owner thread only.
  void Record(bool measured, Outcome outcome, std::chrono::nanoseconds latency) {
    completed.Add();
    PhaseStats& p = phase[measured ? 1 : 0];
    switch (outcome) {
      case Outcome::kOk:
        p.ok.Add();
        p.latency.Record(latency);
        break;
      case Outcome::kOverLimit:
        p.over_limit.Add();
        p.latency.Record(latency);
        break;
      case Outcome::kTransportError:
        p.transport_errors.Add();
        break;
      case Outcome::kTimeout:
        p.timeouts.Add();
        break;
      case Outcome::kStatusError:
        p.status_errors.Add();
        break;
    }
  }

  // NoteError() keeps the first error's description for the summary. Thread-safe.
  void NoteError(const std::string& what) {
    std::lock_guard lock(mutex_);
    if (first_error_.empty()) first_error_ = what;
  }
  std::string FirstError() const {
    std::lock_guard lock(mutex_);
    return first_error_;
  }

 private:
  mutable std::mutex mutex_;
  std::string first_error_;
};

// LoadGenerator is one protocol's client. Open() connects (or fails within the timeout); then
// RunThread() is called once per client thread, concurrently.
class LoadGenerator {
 public:
  virtual ~LoadGenerator() = default;
  // RunThread() sends this thread's share of the load and returns by plan.timeline.hard_stop.
  // Thread-safe: each call uses its own connections/queues and its own `stats`.
  virtual void RunThread(const ThreadPlan& plan, ThreadStats& stats) const = 0;
  // Describe() names the target and connections for the summary, e.g. "http 127.0.0.1:8080".
  virtual std::string Describe() const = 0;
};

// OpenGrpc() makes options.connections channels and waits, at most options.timeout, for them to
// connect. On failure returns nullptr and sets `error`.
std::unique_ptr<LoadGenerator> OpenGrpc(const LoadOptions& options, std::string& error);

// OpenHttp() resolves the target, builds the request bytes and checks that a connection can
// be made within options.timeout. On failure returns nullptr and sets `error`.
std::unique_ptr<LoadGenerator> OpenHttp(const LoadOptions& options, std::string& error);

// KeyUsesAddresses() is whether the descriptor values look like addresses (10.x.y.z) rather
// than k<i>: for address-like keys, and for /v1/authz, whose value goes in X-Real-IP.
bool KeyUsesAddresses(const LoadOptions& options);

// WriteKeyValue() appends the value of key `i` (0-based) to `out`, without allocating when
// `out` has room: "10.0.0.1", "10.0.0.2"... or "k0", "k1"...
void WriteKeyValue(std::string& out, std::size_t i, bool address);

// The largest --keys with address values: 10.x.y.z has 24 bits.
inline constexpr std::size_t kMaxAddressKeys = (std::size_t{1} << 24) - 1;

}  // namespace sluice::load
