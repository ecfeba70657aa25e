// sluice/over_limit_cache.h — a store decorator that answers keys known to be over their limit
// locally, so that a flood on one key does not flood a shared store (Redis).
//
// When the inner store denies a hit of cost 1 with nothing remaining, that key can admit
// nothing anywhere until the hit's retry time `until`: every instance shares the state, and a
// denied hit consumes nothing, so the state stays as it is until then. Until `until`, a
// request that is exactly one hit on that key, of cost 1 (or a cost-0 check), is answered
// from the cache with the verdict the store would give: denied (allowed for a check), nothing
// remaining, retry after `until - now`, full again at the same time as before. Everything
// else goes to the inner store: other costs, several hits in one request, clocks that went
// back before the denial; and a denial is learnt only from an apply whose time is the latest
// the cache has seen (the store decides at the later of `now` and the key's last consuming
// hit, which the cache knows only then).
//
// The verdicts are exactly the store's as long as the instances' clocks agree and the shared
// state is not lost (a Redis that restarts empty forgets what the cache still remembers, until
// `until`). test/storage/conformance_cache_test.cc runs the conformance suite through it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "sluice/store.h"

namespace sluice {

struct OverLimitCacheOptions {
  // The most keys remembered; when full, expired entries are dropped and new ones skipped.
  std::size_t max_entries = 1 << 16;
};

class OverLimitCache final : public Store {
 public:
  OverLimitCache(std::unique_ptr<Store> inner, OverLimitCacheOptions options = {});
  ~OverLimitCache() override;

  StoreStatus apply(std::span<const Hit> hits, Micros now,
                    std::span<Verdict> out) noexcept override;
  // apply_async() answers from the cache at once, or passes the apply on asynchronously.
  void apply_async(std::span<const Hit> hits, Micros now, std::span<Verdict> out,
                   ApplyCompletion& done) noexcept override;
  std::string name() const override;

  Store& inner() noexcept { return *inner_; }
  // answered_locally() counts the applies answered from the cache.
  std::uint64_t answered_locally() const noexcept { return local_.load(std::memory_order_relaxed); }
  std::size_t size() const;

 private:
  struct Entry {
    LimitSpec spec;
    Micros denied_at = 0;  // the denial's time: hits before it go to the store
    Micros until = 0;      // a cost-1 hit passes from here on
    Micros full_at = 0;    // the state is whole again (reset_after)
  };
  struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  struct Shard {
    mutable std::mutex mu;
    // Looked up by string_view: no key is copied to answer or to learn.
    std::unordered_map<std::string, Entry, KeyHash, std::equal_to<>> entries;
  };
  static constexpr std::size_t kShards = 16;
  Shard& shard_of(std::string_view key);
  struct Learn;
  bool answer(const Hit& hit, Micros now, Verdict& out);
  // answer_or_order() answers from the cache (true), or tells whether `now` is the latest time
  // seen, so that what the store answers may be learnt.
  bool answer_or_order(std::span<const Hit> hits, Micros now, std::span<Verdict> out,
                       bool& in_order);
  // learn() remembers a denial (only `in_order`), and forgets a key that consumed.
  void learn(const Hit& hit, Micros now, const Verdict& verdict, bool in_order);

  std::unique_ptr<Store> inner_;
  OverLimitCacheOptions options_;
  std::vector<Shard> shards_;
  std::atomic<std::uint64_t> local_{0};
  std::atomic<Micros> latest_{std::numeric_limits<Micros>::min()};  // the latest `now` seen
};

}  // namespace sluice
