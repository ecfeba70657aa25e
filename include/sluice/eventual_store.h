// sluice/eventual_store.h — eventual consistency: limits decided locally, shared through Redis.
//
// An EventualStore sits in front of a Redis store. Hits on limits whose consistency is strong go
// to that store (one atomic step in Redis each). Hits on eventual limits are decided here, in
// this process, at memory-store speed; a replicator thread keeps the instances that share the
// Redis in step, once per sync interval (aligned to the clock, so all instances sync together):
//
//   - It sends, in one pipelined batch, each key's consumption since the last round, and asks
//     Redis to reserve a lease for the next interval: about 1.5x what the key was asked for here
//     in the last interval (just that while the key is short, so no instance holds what others
//     would use), plus, when it denied some of its demand, up to as much again from this
//     instance's share of what is left (bursts). Redis keeps each limit in a mergeable form (a
//     count per window for the windows, merged by addition; a token bucket as the time it is
//     full again, moved by emitted cost) and reserves the lease atomically from what is left, so
//     leases never add up to more than the limit.
//   - Between rounds, a key admits up to its lease.
//   - A key this process has not synced yet (a new key, a new window), or any key while Redis is
//     unreachable, is decided on a local copy of the limit scaled to this instance's share:
//     `local_share` of it, or 1/K for K instances (seen through heartbeats in Redis). What it
//     admits then is reported (reconciled) at the next round that reaches Redis.
//
// A sliding_window_log limit is decided in eventual mode by the sliding window counter's rule (a
// log of hits is not mergeable). docs/deployment.md gives each algorithm's bound on
// over-admission and the measured figures.
//
// Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "sluice/clock.h"
#include "sluice/store.h"

namespace sluice {

namespace redis {
class Batcher;
}

struct EventualStoreOptions {
  // How often instances exchange their consumption with Redis.
  std::chrono::milliseconds sync_interval{100};
  // The consistency of limits that do not name one.
  Consistency default_consistency = Consistency::kStrong;
  // The share of a limit one instance may admit on its own (new keys, Redis unreachable),
  // in (0, 1]; 0 means 1/K, K the instances seen in Redis in the last few rounds.
  double local_share = 0;
  // The most keys decided locally; hits on further keys go to the strong store.
  std::size_t max_keys = 1'000'000;
  // Key prefix in Redis (the Redis store's prefix; eventual keys add "e:").
  std::string prefix = "sluice:";
  // Keys live this much longer than their state needs.
  std::chrono::milliseconds expiry_grace{1000};
  // Group a round's keys by Redis Cluster slot (one script call per slot) instead of in chunks.
  bool cluster = false;
  // Run the replicator thread. Without it the owner calls sync() (tests, with a manual clock).
  bool background = true;
  // This instance's name in the heartbeats; empty picks a random one.
  std::string instance_id;
};

// EventualStoreStats counts the replicator's work since the store was created.
struct EventualStoreStats {
  std::uint64_t rounds = 0;         // sync rounds that had something to send
  std::uint64_t failed_rounds = 0;  // rounds in which Redis did not answer every command
  std::uint64_t keys_synced = 0;    // key updates sent
  std::size_t keys = 0;             // keys decided locally now
  std::size_t instances = 1;        // K: instances seen in the last heartbeat
};

class EventualStore final : public Store {
 public:
  // `strong` decides strong limits; `batcher` reaches the Redis it uses (and must outlive this
  // store: it usually belongs to `strong`). `clock` times the replicator's rounds.
  EventualStore(std::unique_ptr<Store> strong, redis::Batcher& batcher, const Clock& clock,
                EventualStoreOptions options);
  // Stops the replicator and runs one last round, so that what this instance consumed reaches
  // Redis and its unused leases return.
  ~EventualStore() override;
  EventualStore(const EventualStore&) = delete;
  EventualStore& operator=(const EventualStore&) = delete;

  StoreStatus apply(std::span<const Hit> hits, Micros now,
                    std::span<Verdict> out) noexcept override;
  // apply_async() passes requests of strong limits only on to the strong store asynchronously;
  // any other is decided here, at once (its strong hits, if any, waited for).
  void apply_async(std::span<const Hit> hits, Micros now, std::span<Verdict> out,
                   ApplyCompletion& done) noexcept override;
  std::string name() const override;
  // True when limits are eventual unless they say otherwise (a limit that is strong by its own
  // setting then waits for Redis on the caller's thread).
  bool decides_locally() const noexcept override {
    return options_.default_consistency == Consistency::kEventual;
  }

  // sync() runs one round now, at the clock's time. Returns false when Redis did not answer
  // every command (the round's consumption is then sent again next round, unless a command
  // timed out and may have run). Called by the replicator thread; callable from any thread.
  bool sync();
  EventualStoreStats stats() const;
  Store& strong() noexcept { return *strong_; }

 private:
  struct Entry;
  struct Shard;
  struct Item;
  bool eventual(const Hit& hit) const noexcept;
  double share() const noexcept;
  Micros interval_micros() const noexcept;
  // round() is sync(); the `last` round (on destruction) asks for no lease and returns all.
  bool round(bool last);
  void run();

  std::unique_ptr<Store> strong_;
  redis::Batcher& batcher_;
  const Clock& clock_;
  EventualStoreOptions options_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<std::size_t> keys_{0};
  std::atomic<std::size_t> instances_{1};
  std::atomic<std::uint64_t> rounds_{0};
  std::atomic<std::uint64_t> failed_rounds_{0};
  std::atomic<std::uint64_t> keys_synced_{0};

  std::mutex sync_mu_;  // one round at a time
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;  // guarded by stop_mu_
  std::thread thread_;
};

}  // namespace sluice
