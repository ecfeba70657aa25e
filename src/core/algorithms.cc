#include "sluice/algorithms.h"

#include <algorithm>

#include "core/int128.h"

namespace sluice {

std::string_view algorithm_name(Algorithm a) noexcept {
  switch (a) {
    case Algorithm::kFixedWindow:
      return "fixed_window";
    case Algorithm::kSlidingWindowLog:
      return "sliding_window_log";
    case Algorithm::kSlidingWindowCounter:
      return "sliding_window_counter";
    case Algorithm::kTokenBucket:
      return "token_bucket";
  }
  return "unknown";
}

std::optional<Algorithm> parse_algorithm(std::string_view name) noexcept {
  for (auto a : {Algorithm::kFixedWindow, Algorithm::kSlidingWindowLog,
                 Algorithm::kSlidingWindowCounter, Algorithm::kTokenBucket}) {
    if (algorithm_name(a) == name) return a;
  }
  return std::nullopt;
}

std::string_view consistency_name(Consistency c) noexcept {
  switch (c) {
    case Consistency::kDefault:
      return "default";
    case Consistency::kStrong:
      return "strong";
    case Consistency::kEventual:
      return "eventual";
  }
  return "unknown";
}

std::optional<Consistency> parse_consistency(std::string_view name) noexcept {
  if (name == "strong") return Consistency::kStrong;
  if (name == "eventual") return Consistency::kEventual;
  return std::nullopt;
}

bool refill_fits(const LimitSpec& s) noexcept {
  if (s.limit == 0) return true;
  return u128(s.capacity()) * u128(s.window) / s.limit <= u128(kMaxWindow);
}

namespace {

// Time never runs backwards inside one state: a `now` before the last consuming hit is that
// hit's time.
Micros effective_now(Micros now, Micros last) noexcept {
  return last == kFresh ? now : std::max(now, last);
}

// Every algorithm blocks cost > 0 when n == 0: such a hit can never pass.
Verdict blocked(std::uint64_t cost) noexcept {
  if (cost == 0) return Verdict{true, 0, 0, 0};
  return Verdict{false, 0, 0, kNever};
}

}  // namespace

// --- fixed window ---------------------------------------------------------------------------

Verdict step(FixedWindowState& s, const LimitSpec& spec, std::uint64_t cost, Micros now,
             bool commit) noexcept {
  const std::uint64_t n = spec.limit;
  if (n == 0) return blocked(cost);
  const Micros w = spec.window;
  now = effective_now(now, s.last);
  const Micros k = floor_div(now, w);
  const Micros end = (k + 1) * w;
  std::uint64_t count = (s.last != kFresh && floor_div(s.last, w) == k) ? s.count : 0;

  Verdict v;
  v.allowed = cost <= n && count <= n - cost;
  if (v.allowed && commit && cost > 0) {
    count += cost;
    s.last = now;
    s.count = count;
  }
  v.remaining = count >= n ? 0 : n - count;
  v.reset_after = count > 0 ? end - now : 0;
  v.retry_after = v.allowed ? 0 : (cost > n ? kNever : end - now);
  return v;
}

Micros full_at(const FixedWindowState& s, const LimitSpec& spec) noexcept {
  if (s.last == kFresh || s.count == 0) return kFresh;
  return (floor_div(s.last, spec.window) + 1) * spec.window;
}

// --- sliding window counter -----------------------------------------------------------------

namespace {

// The earliest offset e' in [from, W) of a window whose previous window holds `prev` and whose
// own count is `cur`, at which prev * (W - e') + (cur + cost) * W <= n * W; nullopt if none.
std::optional<Micros> earliest_counter_offset(std::uint64_t prev, std::uint64_t cur,
                                              std::uint64_t cost, std::uint64_t n, Micros w,
                                              Micros from) noexcept {
  if (cur > n || cost > n - cur) return std::nullopt;
  if (prev == 0) return from;
  const u128 slack = u128(n - cur - cost) * u128(w);
  const u128 span = div_u128(slack, prev);  // the largest W - e' that fits
  const Micros min_offset = span >= u128(w) ? 0 : w - static_cast<Micros>(span);
  const Micros e = std::max(min_offset, from);
  if (e >= w) return std::nullopt;
  return e;
}

}  // namespace

Verdict step(SlidingCounterState& s, const LimitSpec& spec, std::uint64_t cost, Micros now,
             bool commit) noexcept {
  const std::uint64_t n = spec.limit;
  if (n == 0) return blocked(cost);
  const Micros w = spec.window;
  now = effective_now(now, s.last);
  const Micros k = floor_div(now, w);
  const Micros e = now - k * w;
  std::uint64_t prev = 0;
  std::uint64_t cur = 0;
  if (s.last != kFresh) {
    const Micros ks = floor_div(s.last, w);
    if (ks == k) {
      prev = s.previous;
      cur = s.current;
    } else if (ks == k - 1) {
      prev = s.current;
    }
  }

  const u128 budget = u128(n) * u128(w);
  const u128 weighted_prev = u128(prev) * u128(w - e);
  Verdict v;
  v.allowed = weighted_prev + (u128(cur) + cost) * u128(w) <= budget;
  if (v.allowed && commit && cost > 0) {
    cur += cost;
    s.last = now;
    s.previous = prev;
    s.current = cur;
  }
  const u128 used = weighted_prev + u128(cur) * u128(w);
  v.remaining = used >= budget ? 0 : static_cast<std::uint64_t>(div_u128(budget - used, u128(w)));
  v.reset_after = cur > 0 ? (k + 2) * w - now : (prev > 0 ? (k + 1) * w - now : 0);
  if (v.allowed) {
    v.retry_after = 0;
  } else if (cost > n) {
    v.retry_after = kNever;
  } else if (auto e1 = earliest_counter_offset(prev, cur, cost, n, w, e)) {
    v.retry_after = *e1 - e;
  } else if (auto e2 = earliest_counter_offset(cur, 0, cost, n, w, 0)) {
    v.retry_after = (k + 1) * w + *e2 - now;
  } else {
    v.retry_after = (k + 2) * w - now;
  }
  return v;
}

Micros full_at(const SlidingCounterState& s, const LimitSpec& spec) noexcept {
  if (s.last == kFresh) return kFresh;
  const Micros k = floor_div(s.last, spec.window);
  if (s.current > 0) return (k + 2) * spec.window;
  if (s.previous > 0) return (k + 1) * spec.window;
  return kFresh;
}

// --- token bucket (GCRA) --------------------------------------------------------------------
//
// Times are scaled by n so that the emission interval W / n is the integer W: a scaled time is
// microseconds * n. F (scaled) = tat * n + tat_frac.

Verdict step(TokenBucketState& s, const LimitSpec& spec, std::uint64_t cost, Micros now,
             bool commit) noexcept {
  const std::uint64_t n = spec.limit;
  if (n == 0) return blocked(cost);
  const std::uint64_t b = spec.capacity();
  const i128 w = spec.window;
  now = effective_now(now, s.last);
  const i128 now_scaled = i128(now) * i128(n);
  i128 f = now_scaled;
  if (s.last != kFresh) {
    f = i128(s.tat) * i128(n) + i128(std::min<std::uint64_t>(s.tat_frac, n - 1));
  }
  const i128 base = std::max(f, now_scaled);
  i128 debt = base - now_scaled;  // scaled time until the bucket is full
  const i128 capacity_scaled = i128(b) * w;

  Verdict v;
  v.allowed = cost <= b && debt + i128(cost) * w <= capacity_scaled;
  if (v.allowed && commit && cost > 0) {
    const i128 f_new = base + i128(cost) * w;
    const i128 tat = floor_div128(f_new, i128(n));
    s.tat = static_cast<Micros>(tat);
    s.tat_frac = static_cast<std::uint32_t>(f_new - tat * i128(n));
    s.last = now;
    debt = f_new - now_scaled;
  }
  const i128 used_tokens = ceil_div128(debt, w);
  v.remaining = used_tokens >= i128(b) ? 0 : static_cast<std::uint64_t>(i128(b) - used_tokens);
  v.reset_after = static_cast<Micros>(ceil_div128(debt, i128(n)));
  if (v.allowed) {
    v.retry_after = 0;
  } else if (cost > b) {
    v.retry_after = kNever;
  } else {
    const i128 excess = debt - (i128(b - cost) * w);
    v.retry_after = static_cast<Micros>(ceil_div128(excess, i128(n)));
  }
  return v;
}

Micros full_at(const TokenBucketState& s, const LimitSpec&) noexcept {
  if (s.last == kFresh) return kFresh;
  return s.tat + (s.tat_frac > 0 ? 1 : 0);
}

// --- sliding window log ---------------------------------------------------------------------

Verdict step(SlidingLogState& s, const LimitSpec& spec, std::uint64_t cost, Micros now,
             bool commit) noexcept {
  const std::uint64_t n = spec.limit;
  if (n == 0) return blocked(cost);
  const Micros w = spec.window;
  now = effective_now(now, s.last_);
  const Micros horizon = now - w;  // hits at or before this time have left the window

  // The first live hit inside the window, and the sum of the window.
  std::size_t first = s.head_;
  std::uint64_t sum = s.sum_;
  while (first < s.hits_.size() && s.hits_[first].time <= horizon) {
    sum -= s.hits_[first].cost;
    ++first;
  }

  Verdict v;
  v.allowed = cost <= n && sum <= n - cost;
  if (v.allowed && commit && cost > 0) {
    // Drop what left the window, then append (merging hits at the same time).
    s.head_ = first;
    if (s.head_ == s.hits_.size()) {
      s.hits_.clear();
      s.head_ = first = 0;
    } else if (s.head_ >= 16 && s.head_ * 2 >= s.hits_.size()) {
      s.hits_.erase(s.hits_.begin(), s.hits_.begin() + static_cast<std::ptrdiff_t>(s.head_));
      s.head_ = first = 0;
    }
    if (!s.hits_.empty() && s.hits_.back().time == now) {
      s.hits_.back().cost += cost;
    } else {
      s.hits_.push_back({now, cost});
    }
    sum += cost;
    s.sum_ = sum;
    s.last_ = now;
  }
  v.remaining = sum >= n ? 0 : n - sum;
  v.reset_after = (sum > 0) ? s.hits_.back().time + w - now : 0;
  if (v.allowed) {
    v.retry_after = 0;
  } else if (cost > n) {
    v.retry_after = kNever;
  } else {
    // Wait until enough of the oldest hits leave the window.
    std::uint64_t left = sum;
    v.retry_after = 0;
    for (std::size_t i = first; i < s.hits_.size(); ++i) {
      left -= s.hits_[i].cost;
      if (left <= n - cost) {
        v.retry_after = s.hits_[i].time + w - now;
        break;
      }
    }
  }
  return v;
}

Micros full_at(const SlidingLogState& s, const LimitSpec& spec) noexcept {
  if (s.empty()) return kFresh;
  return s.hits_.back().time + spec.window;
}

}  // namespace sluice
