// Reference models of the four algorithms: plain, obviously correct code written from the
// contract in docs/algorithms.md, independent of src/core/algorithms.cc.
//
// Each model keeps the list of accepted hits (or, for the token bucket, the token level as an
// exact integer) and answers one question: would a hit of cost c pass at time t? Everything a
// Verdict reports is then derived by search over that predicate:
//   remaining    the largest c' that would pass right after the hit,
//   reset_after  the smallest wait after which the whole limit would pass,
//   retry_after  the smallest wait after which the same hit would pass (kNever if c exceeds the
//                limit's capacity).
// The searches rely only on the predicate being monotonic in waiting time, which holds for all
// four algorithms when nothing else arrives.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "sluice/algorithms.h"

namespace sluice::testing {

__extension__ typedef __int128 Wide;

inline std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

class ReferenceModel {
 public:
  explicit ReferenceModel(LimitSpec spec) : spec_(spec) {}

  // hit() decides one hit at time `now` and consumes if allowed and `commit`.
  Verdict hit(std::uint64_t cost, Micros now, bool commit = true) {
    const Micros t = effective(now);
    Verdict v;
    v.allowed = allows(cost, t);
    if (v.allowed && commit && cost > 0) consume(cost, t);
    v.remaining = largest_allowed(t);
    v.reset_after = smallest_wait(t, capacity());
    if (v.allowed) {
      v.retry_after = 0;
    } else if (cost > capacity()) {
      v.retry_after = kNever;
    } else {
      v.retry_after = smallest_wait(t, cost);
    }
    return v;
  }

  // admitted() lists (time, cost) of every consumed hit.
  const std::vector<std::pair<Micros, std::uint64_t>>& admitted() const { return admitted_; }

 private:
  std::uint64_t capacity() const {
    if (spec_.limit == 0) return 0;
    return spec_.algorithm == Algorithm::kTokenBucket ? spec_.capacity() : spec_.limit;
  }

  Micros effective(Micros now) const {
    return log_.empty() ? now : std::max(now, log_.back().first);
  }

  // The sum of costs admitted at times in [from, to].
  std::uint64_t sum_between(Micros from, Micros to) const {
    std::uint64_t s = 0;
    for (const auto& [time, cost] : log_) {
      if (time >= from && time <= to) s += cost;
    }
    return s;
  }

  // Tokens in the bucket at time t, scaled by W (exact): refills n per W, capped at b.
  Wide scaled_tokens(Micros t) const {
    const Wide full = Wide(spec_.capacity()) * spec_.window;
    if (!has_bucket_) return full;
    return std::min(full, bucket_level_ + Wide(t - bucket_time_) * Wide(spec_.limit));
  }

  bool allows(std::uint64_t cost, Micros t) const {
    const std::uint64_t n = spec_.limit;
    if (cost == 0) return true;
    if (n == 0) return false;
    const Micros w = spec_.window;
    switch (spec_.algorithm) {
      case Algorithm::kFixedWindow: {
        const Micros start = floor_div(t, w) * w;
        return Wide(sum_between(start, start + w - 1)) + cost <= n;
      }
      case Algorithm::kSlidingWindowLog:
        return Wide(sum_between(t - w + 1, t)) + cost <= n;
      case Algorithm::kSlidingWindowCounter: {
        const Micros start = floor_div(t, w) * w;
        const Wide cur = sum_between(start, start + w - 1);
        const Wide prev = sum_between(start - w, start - 1);
        const Wide e = t - start;
        return prev * (w - e) + (cur + cost) * w <= Wide(n) * w;
      }
      case Algorithm::kTokenBucket:
        return scaled_tokens(t) >= Wide(cost) * w;
    }
    return false;
  }

  void consume(std::uint64_t cost, Micros t) {
    if (spec_.algorithm == Algorithm::kTokenBucket) {
      bucket_level_ = scaled_tokens(t) - Wide(cost) * spec_.window;
      bucket_time_ = t;
      has_bucket_ = true;
    }
    log_.emplace_back(t, cost);
    admitted_.emplace_back(t, cost);
    // Hits two windows old can no longer matter: time only moves forward from t.
    std::size_t old = 0;
    while (old < log_.size() && log_[old].first < t - 2 * spec_.window)
      ++old;
    log_.erase(log_.begin(), log_.begin() + static_cast<std::ptrdiff_t>(old));
  }

  std::uint64_t largest_allowed(Micros t) const {
    std::uint64_t lo = 0, hi = capacity();
    while (lo < hi) {
      const std::uint64_t mid = lo + (hi - lo + 1) / 2;
      if (allows(mid, t))
        lo = mid;
      else
        hi = mid - 1;
    }
    return lo;
  }

  Micros smallest_wait(Micros t, std::uint64_t cost) const {
    if (cost == 0 || spec_.limit == 0) return 0;
    Micros hi = spec_.window;
    while (!allows(cost, t + hi))
      hi *= 2;
    Micros lo = 0;
    while (lo < hi) {
      const Micros mid = lo + (hi - lo) / 2;
      if (allows(cost, t + mid))
        hi = mid;
      else
        lo = mid + 1;
    }
    return lo;
  }

  LimitSpec spec_;
  std::vector<std::pair<Micros, std::uint64_t>> log_;       // recent hits, for the predicate
  std::vector<std::pair<Micros, std::uint64_t>> admitted_;  // every hit, for property checks
  bool has_bucket_ = false;
  Wide bucket_level_ = 0;
  Micros bucket_time_ = 0;
};

}  // namespace sluice::testing
