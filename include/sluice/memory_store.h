// sluice/memory_store.h — the embedded default store: sharded, thread-safe, bounded.
//
// States live in N shards, each an open-addressing table under its own spin lock, so threads
// deciding on different keys rarely meet, and threads deciding on one key are serialised by that
// key's shard (never admitting more than the contract). A key's state sits in its table slot:
// one decision touches one cache line of the store.
//
// The store is bounded: at most `max_keys` states are tracked (each shard holds max_keys/N).
// States that are full again are reclaimed: by reclaim(), and as new keys arrive once a shard is
// three quarters full. When a shard is full, eviction approximates LRU as Redis does: it samples
// 8 keys and drops one whose state is full again (losing nothing), or else the least recently
// used of the sample.
//
// Keys are identified by a seeded 128-bit hash (XXH3) rather than stored whole: every tracked
// key costs the same memory whatever its length. Two keys sharing a counter would need a 128-bit
// collision (about 1 in 10^24 for ten million keys).
//
// Example:
//
//   sluice::MemoryStore store({.max_keys = 100'000});
//   sluice::Limiter limiter(rules, store, sluice::SystemClock::instance());
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "sluice/store.h"

namespace sluice {

struct MemoryStoreOptions {
  // The most states tracked at once. Past it, least recently used keys are evicted (which
  // forgets what they consumed: size it above the number of keys live in one window). Keys
  // spread over shards by hash, so eviction can begin a few percent before the total is reached.
  std::size_t max_keys = 1'000'000;
  // Shards (rounded down to a power of two, and reduced so each holds at least 1,024 keys).
  std::size_t shards = 64;
};

// MemoryStore keeps every state in this process. Thread-safe.
class MemoryStore final : public Store {
 public:
  explicit MemoryStore(MemoryStoreOptions options = {});
  ~MemoryStore() override;
  MemoryStore(const MemoryStore&) = delete;
  MemoryStore& operator=(const MemoryStore&) = delete;

  StoreStatus apply(std::span<const Hit> hits, Micros now,
                    std::span<Verdict> out) noexcept override;
  // prefetch() computes each hit's key hash, shard and home slot as apply() would, and asks the
  // CPU to start loading that slot (and the next, where linear probing often continues). Over
  // tables larger than the cache, this lets the slot misses of a batch of requests overlap.
  // Reads no state: it takes no lock and only ever prefetches, through a copy of each shard's
  // table address that may be stale (then it prefetches in vain). Thread-safe.
  void prefetch(std::span<const Hit> hits) noexcept override;
  std::string name() const override { return "memory://"; }
  bool decides_locally() const noexcept override { return true; }

  // size() returns the number of states tracked now.
  std::size_t size() const noexcept;
  // capacity() returns the most states the store will track.
  std::size_t capacity() const noexcept;
  // reclaim() forgets every state that is full again at `now`; returns how many it dropped.
  std::size_t reclaim(Micros now) noexcept;
  // memory_bytes() returns the bytes the store holds for its tables and states.
  std::size_t memory_bytes() const noexcept;

 private:
  struct Shard;
  struct Located;
  Located locate(std::string_view key) const noexcept;
  std::unique_ptr<Shard[]> shards_;
  std::size_t shard_count_ = 0;
  unsigned shard_shift_ = 0;
  std::uint64_t seed_ = 0;
};

}  // namespace sluice
