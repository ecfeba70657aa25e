// Server metrics, rendered in Prometheus' text format at GET /metrics.
//
//   sluice_decisions_total{domain, rule, outcome}   every limit applied (outcome: ok, over_limit,
//                                                    shadow_over_limit, unlimited)
//   sluice_requests_total{api, outcome}              requests per API (grpc, json, check, authz)
//                                                    and outcome (ok, over_limit, error)
//   sluice_store_errors_total                        decisions the store could not make
//   sluice_failure_mode_decisions_total{mode}        limits decided by failure_mode instead
//   sluice_decision_duration_seconds                 histogram of the time to decide a request
//   sluice_rules_loaded{kind}                        domains, path rules and limits being served
//   sluice_rule_reloads_total{result}                reloads (file or API), ok or error
//   sluice_sync_rounds_total{result}                 eventual consistency: rounds with Redis
//   sluice_sync_keys_synced_total                    key updates sent in those rounds
//   sluice_sync_keys                                 keys decided locally now
//   sluice_sync_instances                            instances seen sharing the Redis
//
// Label values of the per-rule series come from the rules, never from requests, so the number
// of series is bounded by the configuration. Recording is lock-free for practical purposes:
// each thread counts into a shard of its own (an uncontended lock), and a scrape sums them.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "sluice/clock.h"
#include "sluice/decision.h"
#include "sluice/eventual_store.h"

namespace sluice::server {

enum class Api : std::uint8_t { kGrpc = 0, kJson = 1, kCheck = 2, kAuthz = 3 };
inline constexpr std::size_t kApiCount = 4;

enum class Outcome : std::uint8_t { kOk = 0, kOverLimit = 1, kError = 2 };
inline constexpr std::size_t kOutcomeCount = 3;

class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // record() counts one decided request: its statuses, its outcome and how long it took.
  // `domain` labels Envoy-style requests (path requests are labelled "path").
  void record(Api api, std::string_view domain, const Decision& decision, Micros elapsed);
  // record_error() counts a request refused before deciding (bad input).
  void record_error(Api api);
  // set_rules() publishes what the current snapshot holds.
  void set_rules(std::size_t domains, std::size_t path_rules, std::size_t limits);
  // record_reload() counts a reload attempt.
  void record_reload(bool ok);
  // set_eventual() adds the sync series of an eventual-consistency store (which must outlive
  // this registry's renders); nullptr removes them. Call before serving.
  void set_eventual(const EventualStore* store) { eventual_ = store; }

  // render() returns the metrics in Prometheus' text exposition format (version 0.0.4).
  std::string render() const;

  // The latency histogram's upper bounds, in seconds.
  static constexpr std::array<double, 16> kBuckets = {
      0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
      0.01,     0.025,   0.05,   0.1,     0.25,   0.5,   1.0,    2.5};

 private:
  struct Shard;
  Shard& shard();

  const std::uint64_t id_;  // tells this registry's shards from another's in thread_local caches
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Shard>> shards_;
  std::atomic<std::uint64_t> rules_domains_{0}, rules_paths_{0}, rules_limits_{0};
  std::atomic<std::uint64_t> reloads_ok_{0}, reloads_error_{0};
  const EventualStore* eventual_ = nullptr;
};

}  // namespace sluice::server
