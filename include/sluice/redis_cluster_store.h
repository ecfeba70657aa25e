// sluice/redis_cluster_store.h — the shared store on a Redis Cluster.
//
// The same Lua script and key layout as RedisStore (verdicts identical to the memory store's),
// routed by slot: the store learns the slot map from CLUSTER SLOTS, sends each decision to the
// master owning its keys' slot, follows MOVED (refreshing the map) and ASK (ASKING, once), and so
// survives slot migrations and failovers without a restart.
//
// A request whose limits hash to different slots cannot be one atomic script: docs/storage.md
// says what the store does then. In short: a check on every slot (nothing consumed), then, if
// every enforced limit passes, a commit per slot. Denials seen by the check are all-or-nothing;
// a limit that another client fills between check and commit can leave the slots committed
// before it counted for a request that ends up denied (over-counting, never over-admitting).
//
// Example:
//
//   sluice::RedisClusterStoreOptions options;
//   options.seeds = {"10.0.0.5:7000", "10.0.0.6:7000"};
//   auto store = std::make_unique<sluice::RedisClusterStore>(options);
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "sluice/redis_store.h"
#include "sluice/store.h"

namespace sluice {

namespace redis {
class Batcher;
}

struct RedisClusterStoreOptions {
  // Seed nodes, "host:port"; any reachable one yields the slot map.
  std::vector<std::string> seeds;
  // Connection, timeout, prefix, time and expiry options, as for one server (host, port,
  // unix_path and database are ignored).
  RedisStoreOptions node;
  // The most redirections (MOVED/ASK) and retries (TRYAGAIN/CLUSTERDOWN, after a short backoff
  // that never waits past the command timeout) one decision follows before giving up with
  // kUnavailable.
  int max_redirects = 5;
};

// RedisClusterStore is thread-safe.
class RedisClusterStore final : public Store {
 public:
  explicit RedisClusterStore(RedisClusterStoreOptions options);
  ~RedisClusterStore() override;
  RedisClusterStore(const RedisClusterStore&) = delete;
  RedisClusterStore& operator=(const RedisClusterStore&) = delete;

  StoreStatus apply(std::span<const Hit> hits, Micros now,
                    std::span<Verdict> out) noexcept override;
  std::string name() const override;

  // refreshes() counts slot-map loads from CLUSTER SLOTS: the first, then refreshes (after MOVED,
  // CLUSTERDOWN, or a node going away; at most one per 100 ms).
  std::uint64_t refreshes() const noexcept;
  // batcher() sends batches of commands, each to the master serving its slot, one pipeline per
  // master (src/storage/redis/batch.h; used by the eventual-consistency replicator).
  redis::Batcher& batcher() noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sluice
