// sluice-bench — the load generator for a rate-limit server: Envoy's gRPC RateLimitService
// (ShouldRateLimit) or sluice's HTTP API (POST /json, POST /v1/check, GET /v1/authz).
//
//   build/bin/sluice-bench --grpc 127.0.0.1:8081 --concurrency 64 --duration 10
//   build/bin/sluice-bench --http 127.0.0.1:8080 --endpoint check --keys 10000 --rate 20000 --json
//   build/bin/sluice-bench --grpc 127.0.0.1:8081 --keys 1000000 --key-distribution zipf
//
// Closed loop (the default) keeps --concurrency requests in flight and measures how many the
// server answers per second. Open loop (--rate R) sends R requests per second whatever the
// server does, and times each from the moment it should have been sent, so a stalled server
// shows in the latencies instead of silently slowing the load (coordinated omission). Each
// client thread records latencies in its own log-linear histogram (1% precision up to 60 s);
// they are merged at the end. A progress line goes to stderr every second, the summary to
// stdout (--json: one JSON line). The run always ends after --warmup + --duration (plus at
// most --timeout-ms for the last answers); the exit status is 0 only if no request failed.
//
// docs/load-tool.md describes every flag and how to read the figures.
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "load/load.h"

namespace sluice::load {
namespace {

using std::chrono::duration;
using std::chrono::nanoseconds;

// gRPC multiplexes calls over a connection, so a few channels carry any concurrency; a few
// rather than one so a multi-threaded server can spread connections over its threads, as it
// would with the several worker threads of an Envoy.
constexpr int kDefaultGrpcChannels = 4;

// Exit statuses.
constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;  // requests failed, nothing was measured, or no connection
constexpr int kExitUsage = 2;

// The most keys --key-distribution zipf takes: its table holds 8 bytes per key (512 MiB here).
constexpr std::size_t kMaxZipfKeys = std::size_t{1} << 26;

// Splits "HOST:PORT" ("[::1]:PORT" for IPv6). Returns false if malformed.
bool SplitHostPort(const std::string& s, std::string& host, std::string& port) {
  const auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) return false;
  host = s.substr(0, colon);
  port = s.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  return port.find_first_not_of("0123456789") == std::string::npos;
}

nanoseconds Seconds(double s) {
  return std::chrono::duration_cast<nanoseconds>(duration<double>(s));
}

double ToSeconds(nanoseconds d) {
  return duration<double>(d).count();
}

// FormatLatency() prints nanoseconds with a unit that keeps three significant digits.
std::string FormatLatency(std::uint64_t ns) {
  char text[32];
  const double v = static_cast<double>(ns);
  if (ns < 1'000'000)
    std::snprintf(text, sizeof text, "%.0f us", v / 1e3);
  else if (ns < 1'000'000'000)
    std::snprintf(text, sizeof text, "%.2f ms", v / 1e6);
  else
    std::snprintf(text, sizeof text, "%.2f s", v / 1e9);
  return text;
}

double Micros(std::uint64_t ns) {
  return static_cast<double>(ns) / 1e3;
}

// CpuSeconds() is the CPU time this process has used (all its threads, gRPC's included).
double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// DescribeKeys() is the summary's "1000000 keys Zipf (exponent 1, first key 6.95 %)".
std::string DescribeKeys(const LoadOptions& o, const bench::ZipfDistribution* zipf) {
  if (o.keys == 1) return "1 key";
  char text[96];
  switch (o.key_distribution) {
    case KeyDistribution::kCycle:
      std::snprintf(text, sizeof text, "%zu keys cycled", o.keys);
      break;
    case KeyDistribution::kUniform:
      std::snprintf(text, sizeof text, "%zu keys uniform", o.keys);
      break;
    case KeyDistribution::kZipf:
      std::snprintf(text, sizeof text, "%zu keys Zipf (exponent %g, first key %.2f %%)", o.keys,
                    o.zipf_exponent, 100 * zipf->Probability(0));
      break;
  }
  return text;
}

// Totals is the measured phase of every thread, merged.
struct Totals {
  std::uint64_t ok = 0, over_limit = 0, transport = 0, timeouts = 0, status = 0;
  std::uint64_t sent = 0, late_no_slot = 0, late_client = 0, unsent = 0, max_lag_ns = 0;
  std::uint64_t busiest_thread_cpu_ns = 0;  // the client thread that used the most CPU
  HistogramSnapshot latency;
  std::string first_error;

  std::uint64_t Errors() const { return transport + timeouts + status; }
  std::uint64_t Requests() const { return ok + over_limit + Errors(); }
  std::uint64_t Late() const { return late_no_slot + late_client; }
};

Totals Merge(const std::vector<std::unique_ptr<ThreadStats>>& stats) {
  Totals t;
  for (const auto& s : stats) {
    const PhaseStats& p = s->phase[1];
    t.ok += p.ok.Get();
    t.over_limit += p.over_limit.Get();
    t.transport += p.transport_errors.Get();
    t.timeouts += p.timeouts.Get();
    t.status += p.status_errors.Get();
    t.latency.Add(p.latency);
    t.sent += s->sent.Get();
    t.late_no_slot += s->late_no_slot.Get();
    t.late_client += s->late_client.Get();
    t.busiest_thread_cpu_ns =
        std::max({t.busiest_thread_cpu_ns, s->thread_cpu_ns.Get(), s->pacer_cpu_ns.Get()});
    t.unsent += s->unsent.Get();
    t.max_lag_ns = std::max(t.max_lag_ns, s->max_lag_ns.Get());
    // Warm-up errors included: the first error is often there (a server still starting).
    if (t.first_error.empty()) t.first_error = s->FirstError();
  }
  return t;
}

// Progress prints a line on stderr once a second until the threads are done.
class Progress {
 public:
  Progress(const Timeline& timeline, const std::vector<std::unique_ptr<ThreadStats>>& stats)
      : timeline_(timeline), stats_(stats) {}

  // Run() returns once Done() has been called. Called on the main thread.
  void Run() {
    std::uint64_t last_completed = 0;
    for (int tick = 1;; ++tick) {
      {
        std::unique_lock lock(mutex_);
        if (cv_.wait_until(lock, timeline_.start + std::chrono::seconds(tick),
                           [this] { return done_; })) {
          return;
        }
      }
      // The line describes the second that just ended.
      const Clock::time_point tick_time = timeline_.start + std::chrono::seconds(tick);
      const bool warming = tick_time <= timeline_.measure_begin;
      std::uint64_t completed = 0, errors = 0;
      HistogramSnapshot latency;
      for (const auto& s : stats_) {
        completed += s->completed.Get();
        errors += s->phase[0].Errors() + s->phase[1].Errors();
        latency.Add(s->phase[warming ? 0 : 1].latency);
      }
      std::fprintf(stderr, "[%4ds] %-7s %8llu req/s  %llu errors  p99 %s\n", tick,
                   warming ? "warm-up" : (tick_time > timeline_.measure_end ? "ending" : ""),
                   static_cast<unsigned long long>(completed - last_completed),
                   static_cast<unsigned long long>(errors),
                   FormatLatency(latency.Percentile(99)).c_str());
      last_completed = completed;
    }
  }

  // Done() stops Run(). Thread-safe.
  void Done() {
    std::lock_guard lock(mutex_);
    done_ = true;
    cv_.notify_all();
  }

 private:
  const Timeline& timeline_;
  const std::vector<std::unique_ptr<ThreadStats>>& stats_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
};

int Main(int argc, char** argv) {
  CLI::App app{"sluice-bench: load generator for a rate-limit server (gRPC or HTTP)"};
  LoadOptions o;
  std::string grpc_target, http_target, endpoint = "json";
  double duration_s = 10, warmup_s = 1;
  int timeout_ms = 2000;
  int connections = 0;
  std::string key_distribution = "cycle";
  bool json = false;

  auto* target = app.add_option_group("target", "exactly one of --grpc, --http");
  auto* grpc_opt =
      target->add_option("--grpc", grpc_target, "gRPC target HOST:PORT (Envoy RLS v3)");
  auto* http_opt = target->add_option("--http", http_target, "HTTP/1.1 target HOST:PORT");
  target->require_option(1);
  app.add_option("--endpoint", endpoint,
                 "HTTP endpoint: json (POST /json), check (POST /v1/check), authz (GET /v1/authz)")
      ->check(CLI::IsMember({"json", "check", "authz"}))
      ->excludes(grpc_opt)
      ->capture_default_str();
  app.add_option("--domain", o.domain, "rate-limit domain")->capture_default_str();
  app.add_option("--key", o.key, "descriptor key")->capture_default_str();
  app.add_option("--keys", o.keys, "distinct descriptor values (1 = one hot key)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--key-distribution", key_distribution,
                 "how each request's value is chosen: cycle (in order), uniform (at random), "
                 "zipf (value i with probability proportional to 1/i^s)")
      ->check(CLI::IsMember({"cycle", "uniform", "zipf"}))
      ->capture_default_str();
  auto* exponent_opt =
      app.add_option("--zipf-exponent", o.zipf_exponent, "zipf: the exponent s, > 0")
          ->capture_default_str();
  app.add_option("--seed", o.seed, "seed of the uniform and zipf draws")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  auto* path_opt = app.add_option(
      "--path", o.path,
      "path mode: check sends {\"path\",\"data\":{KEY:VALUE}}, authz sends it in X-Original-URI");
  path_opt->excludes(grpc_opt);
  app.add_option("--concurrency", o.concurrency, "requests in flight at most")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option(
         "--rate", o.rate,
         "open loop: requests per second (all threads), latency from the intended send time")
      ->check(CLI::PositiveNumber);
  app.add_option(
         "--connections", connections,
         "HTTP connections (default --concurrency) or gRPC channels (default min(concurrency, 4))")
      ->check(CLI::PositiveNumber);
  app.add_option("--threads", o.threads, "client threads")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--duration", duration_s, "seconds measured")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--warmup", warmup_s, "seconds of load before measuring (not recorded)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--timeout-ms", timeout_ms, "connect and request timeout, milliseconds")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--deny-status", o.deny_status, "authz: the HTTP status that means over limit")
      ->check(CLI::Range(400, 599))
      ->capture_default_str();
  app.add_flag("--json", json, "print the summary as one JSON line");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }

  auto usage = [](const std::string& message) {
    std::cerr << "sluice-bench: " << message << "\n";
    return kExitUsage;
  };
  o.grpc = !grpc_target.empty();
  if (!SplitHostPort(o.grpc ? grpc_target : http_target, o.host, o.port))
    return usage("expected HOST:PORT, got '" + (o.grpc ? grpc_target : http_target) + "'");
  o.endpoint = endpoint == "check"   ? Endpoint::kCheck
               : endpoint == "authz" ? Endpoint::kAuthz
                                     : Endpoint::kJson;
  if (!o.path.empty() && o.endpoint == Endpoint::kJson)
    return usage("--path needs --endpoint check or authz");
  if (o.path.find_first_of("\r\n") != std::string::npos)
    return usage("--path must not contain line breaks");
  if (KeyUsesAddresses(o) && o.keys > kMaxAddressKeys)
    return usage("--keys: at most " + std::to_string(kMaxAddressKeys) + " address values");
  o.key_distribution = key_distribution == "uniform" ? KeyDistribution::kUniform
                       : key_distribution == "zipf"  ? KeyDistribution::kZipf
                                                     : KeyDistribution::kCycle;
  // Checked here, not by a CLI11 validator: PositiveNumber lets a NaN through. An infinite
  // exponent would give every draw to the first value.
  if (!(o.zipf_exponent > 0) || !std::isfinite(o.zipf_exponent))
    return usage("--zipf-exponent must be a finite number > 0, got " +
                 exponent_opt->as<std::string>());
  if (exponent_opt->count() > 0 && o.key_distribution != KeyDistribution::kZipf)
    return usage("--zipf-exponent needs --key-distribution zipf");
  if (o.key_distribution == KeyDistribution::kZipf && o.keys > kMaxZipfKeys)
    return usage("--keys: at most " + std::to_string(kMaxZipfKeys) +
                 " with --key-distribution zipf");
  o.duration = Seconds(duration_s);
  o.warmup = Seconds(warmup_s);
  o.timeout = std::chrono::milliseconds(timeout_ms);
  (void)http_opt;

  // Slots: the requests one thread may have in flight. HTTP/1.1 without pipelining carries
  // one request per connection, so there the slots are the connections.
  int slots = o.concurrency;
  if (o.grpc) {
    o.connections = std::min(connections > 0 ? connections : kDefaultGrpcChannels, o.concurrency);
  } else {
    o.connections = connections > 0 ? std::min(connections, o.concurrency) : o.concurrency;
    if (connections > 0 && connections < o.concurrency) {
      std::cerr << "sluice-bench: HTTP/1.1 carries one request at a time per connection: at most "
                << connections << " requests in flight\n";
    }
    slots = o.connections;
  }
  if (o.threads > slots)
    return usage("--threads " + std::to_string(o.threads) + " exceeds the " +
                 std::to_string(slots) + " requests in flight");

  // The Zipf table (8 bytes per key), built once and shared read-only by the threads.
  std::optional<bench::ZipfDistribution> zipf;
  if (o.key_distribution == KeyDistribution::kZipf) zipf.emplace(o.keys, o.zipf_exponent);

  std::string error;
  std::unique_ptr<LoadGenerator> load = o.grpc ? OpenGrpc(o, error) : OpenHttp(o, error);
  if (!load) {
    std::cerr << "sluice-bench: " << error << "\n";
    return kExitFailed;
  }

  // The timeline starts a little ahead so that every thread is ready at its start.
  Timeline timeline;
  timeline.start = Clock::now() + std::chrono::milliseconds(20);
  timeline.measure_begin = timeline.start + o.warmup;
  timeline.measure_end = timeline.measure_begin + o.duration;
  timeline.hard_stop =
      timeline.measure_end + o.timeout + kErrorBackoff + std::chrono::milliseconds(500);

  std::vector<ThreadPlan> plans(static_cast<std::size_t>(o.threads));
  std::vector<std::unique_ptr<ThreadStats>> stats;
  int first_slot = 0;
  for (int i = 0; i < o.threads; ++i) {
    ThreadPlan& p = plans[static_cast<std::size_t>(i)];
    p.timeline = timeline;
    p.thread_index = i;
    p.slots = slots / o.threads + (i < slots % o.threads ? 1 : 0);
    p.first_slot = first_slot;
    first_slot += p.slots;
    p.open_loop = o.rate > 0;
    p.schedule = {.start = timeline.start,
                  .interval_ns = o.rate > 0 ? 1e9 / o.rate : 0,
                  .thread_index = i,
                  .threads = o.threads};
    p.keys =
        KeyPicker(o, zipf ? &*zipf : nullptr,
                  o.keys * static_cast<std::size_t>(i) / static_cast<std::size_t>(o.threads), i);
    stats.push_back(std::make_unique<ThreadStats>());
  }

  const double cpu_before = CpuSeconds();
  const Clock::time_point wall_before = Clock::now();
  Progress progress(timeline, stats);
  std::vector<std::thread> threads;
  for (int i = 0; i < o.threads; ++i) {
    const auto n = static_cast<std::size_t>(i);
    threads.emplace_back([&, n] {
      load->RunThread(plans[n], *stats[n]);
      stats[n]->thread_cpu_ns.Add(ThreadCpuNanos());
    });
  }
  std::thread joiner([&] {
    for (auto& t : threads)
      t.join();
    progress.Done();
  });
  progress.Run();
  joiner.join();
  const Clock::time_point run_end = Clock::now();
  const double cpu = (CpuSeconds() - cpu_before) / ToSeconds(run_end - wall_before);

  const Totals t = Merge(stats);
  const double seconds = ToSeconds(o.duration);
  const std::uint64_t requests = t.Requests();
  const double rps = static_cast<double>(requests) / seconds;
  const HistogramSnapshot& h = t.latency;
  const std::string mode = o.rate > 0 ? "open" : "closed";

  // The open loop could not keep its schedule: the figures are then those of a lower rate
  // (late requests are still timed from their intended time, so latencies stay honest). Who
  // was the limit: a client thread busy nearly all the time, or else the server.
  const double busiest_cpu =
      static_cast<double>(t.busiest_thread_cpu_ns) / 1e9 / ToSeconds(run_end - timeline.start);
  const bool behind = o.rate > 0 && (t.unsent > 0 || 100 * t.Late() > t.sent);
  if (behind) {
    if (t.unsent > 0) {
      std::cerr << "sluice-bench: warning: the rate of " << o.rate
                << " req/s was not kept: " << static_cast<double>(t.sent) / ToSeconds(o.duration)
                << " req/s sent, " << t.unsent << " requests never sent, " << t.Late()
                << " sent more than 1 ms late";
    } else {
      std::cerr << "sluice-bench: warning: the schedule slipped: " << t.Late() << " of " << t.sent
                << " requests left more than 1 ms after their intended time";
    }
    std::cerr << " (max " << FormatLatency(t.max_lag_ns) << "; the latencies include it). ";
    if (busiest_cpu >= 0.9) {
      std::cerr << "A client thread was busy " << static_cast<int>(100 * busiest_cpu)
                << "% of the time: the client is the limit, add --threads.\n";
    } else if (t.late_no_slot >= t.late_client) {
      std::cerr << "Most waited for one of the " << slots
                << " slots, all busy: the server was the limit (a higher --concurrency lets more "
                << "requests wait in flight rather than in the client).\n";
    } else {
      std::cerr << "Most were late with a slot free, the client not busy ("
                << static_cast<int>(100 * busiest_cpu)
                << "% CPU at most): the machine did not run the client on time.\n";
    }
  }

  if (json) {
    nlohmann::json j = {
        {"protocol", o.grpc ? "grpc" : "http"},
        {"target", o.host + ":" + o.port},
        {"endpoint", o.grpc ? "ShouldRateLimit" : endpoint},
        {"mode", mode},
        {"rate", o.rate},
        {"concurrency", slots},
        {"connections", o.connections},
        {"threads", o.threads},
        {"keys", o.keys},
        {"key_distribution", key_distribution},
        {"duration_s", seconds},
        {"warmup_s", ToSeconds(o.warmup)},
        {"requests", requests},
        {"rps", rps},
        {"ok", t.ok},
        {"over_limit", t.over_limit},
        {"errors", t.Errors()},
        {"transport_errors", t.transport},
        {"timeouts", t.timeouts},
        {"status_errors", t.status},
        {"p50_us", Micros(h.Percentile(50))},
        {"p90_us", Micros(h.Percentile(90))},
        {"p99_us", Micros(h.Percentile(99))},
        {"p999_us", Micros(h.Percentile(99.9))},
        {"max_us", Micros(h.MaxNanos())},
        {"mean_us", h.MeanNanos() / 1e3},
        {"client_cpu", cpu},
        {"busiest_thread_cpu", busiest_cpu},
    };
    if (o.key_distribution == KeyDistribution::kZipf) j["zipf_exponent"] = o.zipf_exponent;
    if (o.key_distribution != KeyDistribution::kCycle) j["seed"] = o.seed;
    if (o.rate > 0) {
      j["sent"] = t.sent;
      j["late"] = t.Late();
      j["late_no_slot"] = t.late_no_slot;
      j["late_client"] = t.late_client;
      j["unsent"] = t.unsent;
      j["max_lag_us"] = Micros(t.max_lag_ns);
      j["rate_kept"] = !behind;
    }
    if (!t.first_error.empty()) j["first_error"] = t.first_error;
    std::cout << j.dump() << std::endl;
  } else {
    std::printf("target       %s, %d %s, %d thread%s\n", load->Describe().c_str(), o.connections,
                o.grpc ? "channels" : "connections", o.threads, o.threads == 1 ? "" : "s");
    const std::string keys = DescribeKeys(o, zipf ? &*zipf : nullptr);
    if (o.rate > 0) {
      std::printf("load         open loop, %.0f req/s, at most %d in flight, %s\n", o.rate, slots,
                  keys.c_str());
    } else {
      std::printf("load         closed loop, %d in flight, %s\n", slots, keys.c_str());
    }
    std::printf("duration     %.1f s measured after %.1f s warm-up\n", seconds,
                ToSeconds(o.warmup));
    std::printf("requests     %llu\n", static_cast<unsigned long long>(requests));
    std::printf("requests/s   %.1f\n", rps);
    std::printf("ok           %llu\n", static_cast<unsigned long long>(t.ok));
    std::printf("over_limit   %llu\n", static_cast<unsigned long long>(t.over_limit));
    std::printf("errors       %llu", static_cast<unsigned long long>(t.Errors()));
    if (t.Errors() > 0) {
      std::printf(" (transport %llu, timeout %llu, status %llu)",
                  static_cast<unsigned long long>(t.transport),
                  static_cast<unsigned long long>(t.timeouts),
                  static_cast<unsigned long long>(t.status));
    }
    std::printf("\n");
    if (!t.first_error.empty()) std::printf("first error  %s\n", t.first_error.c_str());
    std::printf("latency      p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n",
                FormatLatency(h.Percentile(50)).c_str(), FormatLatency(h.Percentile(90)).c_str(),
                FormatLatency(h.Percentile(99)).c_str(), FormatLatency(h.Percentile(99.9)).c_str(),
                FormatLatency(h.MaxNanos()).c_str());
    if (o.rate > 0) {
      std::printf("schedule     %.1f sent/s, %llu late (> 1 ms), %llu unsent, max lag %s\n",
                  static_cast<double>(t.sent) / seconds, static_cast<unsigned long long>(t.Late()),
                  static_cast<unsigned long long>(t.unsent), FormatLatency(t.max_lag_ns).c_str());
    }
    std::printf("client cpu   %.0f%% of one core (busiest thread %.0f%%)\n", 100 * cpu,
                100 * busiest_cpu);
  }
  return (t.Errors() == 0 && requests > 0) ? kExitOk : kExitFailed;
}

}  // namespace
}  // namespace sluice::load

int main(int argc, char** argv) {
  return sluice::load::Main(argc, argv);
}
