#include "sluice/over_limit_cache.h"

#include <functional>
#include <memory>

namespace sluice {

OverLimitCache::OverLimitCache(std::unique_ptr<Store> inner, OverLimitCacheOptions options)
    : inner_(std::move(inner)), options_(options), shards_(kShards) {}

OverLimitCache::~OverLimitCache() = default;

std::string OverLimitCache::name() const {
  return inner_->name() + " (over-limit cache)";
}

OverLimitCache::Shard& OverLimitCache::shard_of(std::string_view key) {
  return shards_[std::hash<std::string_view>{}(key) % kShards];
}

std::size_t OverLimitCache::size() const {
  std::size_t n = 0;
  for (const Shard& s : shards_) {
    std::lock_guard<std::mutex> lock(s.mu);
    n += s.entries.size();
  }
  return n;
}

bool OverLimitCache::answer(const Hit& hit, Micros now, Verdict& out) {
  if (hit.cost > 1 || hit.spec == nullptr) return false;
  Shard& s = shard_of(hit.key);
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.entries.empty()) return false;
  auto it = s.entries.find(hit.key);
  if (it == s.entries.end()) return false;
  const Entry& e = it->second;
  if (now >= e.until) {  // passed: the store decides again
    s.entries.erase(it);
    return false;
  }
  // A clock behind the denial: the store decides at max(now, its last consuming hit), which the
  // cache does not know. A different limit on the same key: not this entry's.
  if (now < e.denied_at || !(e.spec == *hit.spec)) return false;
  out.allowed = hit.cost == 0;
  out.remaining = 0;
  out.reset_after = e.full_at - now;
  out.retry_after = hit.cost == 0 ? 0 : e.until - now;
  return true;
}

void OverLimitCache::learn(const Hit& hit, Micros now, const Verdict& v, bool in_order) {
  if (hit.spec == nullptr) return;
  Shard& s = shard_of(hit.key);
  const bool over = in_order && !v.allowed && hit.cost == 1 && v.remaining == 0 &&
                    v.retry_after > 0 && v.retry_after != kNever;
  std::lock_guard<std::mutex> lock(s.mu);
  if (!over) {
    // The key consumed (it can, with clocks out of order): forget it. Cheap when absent.
    if (!s.entries.empty() && hit.cost > 0 && v.allowed) {
      if (auto it = s.entries.find(hit.key); it != s.entries.end()) s.entries.erase(it);
    }
    return;
  }
  const std::size_t cap = std::max<std::size_t>(1, options_.max_entries / kShards);
  if (s.entries.size() >= cap) {
    std::erase_if(s.entries, [now](const auto& kv) { return kv.second.until <= now; });
    if (s.entries.size() >= cap) return;
  }
  s.entries[std::string(hit.key)] =
      Entry{*hit.spec, now, now + v.retry_after, now + std::max<Micros>(v.reset_after, 0)};
}

bool OverLimitCache::answer_or_order(std::span<const Hit> hits, Micros now, std::span<Verdict> out,
                                     bool& in_order) {
  if (hits.size() == 1 && answer(hits[0], now, out[0])) {
    local_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  // The store decides at max(now, the key's last consuming hit). Only when no apply has come
  // with a later time is that `now` for certain, and only then are the times learnt right.
  Micros latest = latest_.load(std::memory_order_relaxed);
  in_order = now >= latest;
  while (now > latest && !latest_.compare_exchange_weak(latest, now, std::memory_order_relaxed)) {
  }
  return false;
}

// Learn is an asynchronous apply on its way through the inner store: it learns from the verdicts
// before handing them on.
struct OverLimitCache::Learn final : ApplyCompletion {
  Learn(OverLimitCache& c, std::span<const Hit> h, Micros n, std::span<Verdict> o, bool ordered,
        ApplyCompletion& d)
      : cache(c), hits(h), now(n), out(o), in_order(ordered), done(d) {}
  void applied(StoreStatus status) noexcept override {
    std::unique_ptr<Learn> self(this);
    if (status.ok()) {
      try {
        for (std::size_t i = 0; i < hits.size(); ++i)
          cache.learn(hits[i], now, out[i], in_order);
      } catch (const std::exception&) {  // std::bad_alloc: the cache just learns less
      }
    }
    done.applied(std::move(status));
  }
  OverLimitCache& cache;
  std::span<const Hit> hits;
  Micros now;
  std::span<Verdict> out;
  bool in_order;
  ApplyCompletion& done;
};

void OverLimitCache::apply_async(std::span<const Hit> hits, Micros now, std::span<Verdict> out,
                                 ApplyCompletion& done) noexcept {
  Learn* learn = nullptr;
  try {
    bool in_order = false;
    if (answer_or_order(hits, now, out, in_order)) return done.applied({});
    learn = new Learn(*this, hits, now, out, in_order, done);
  } catch (const std::exception&) {  // std::bad_alloc: decide without the cache
    return inner_->apply_async(hits, now, out, done);
  }
  inner_->apply_async(hits, now, out, *learn);
}

StoreStatus OverLimitCache::apply(std::span<const Hit> hits, Micros now,
                                  std::span<Verdict> out) noexcept {
  try {
    bool in_order = false;
    if (answer_or_order(hits, now, out, in_order)) return {};
    StoreStatus status = inner_->apply(hits, now, out);
    if (status.ok()) {
      for (std::size_t i = 0; i < hits.size(); ++i)
        learn(hits[i], now, out[i], in_order);
    }
    return status;
  } catch (const std::exception& e) {  // std::bad_alloc from the map: decide without the cache
    return inner_->apply(hits, now, out);
  }
}

}  // namespace sluice
