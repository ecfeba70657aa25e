// sluice/algorithms.h — the four rate-limiting algorithms as pure steps on a small state.
//
// Each algorithm is written once, here, as
//
//   Verdict step(State& state, const LimitSpec& spec, std::uint64_t cost, Micros now, bool commit)
//
// with no clock, no I/O and no locking: a store runs the step atomically on the state behind one
// key (under a shard lock in memory, as a Lua script in Redis). The exact rules are those of
// docs/algorithms.md:
//
//   fixed_window            allow iff count + c <= n, in the window floor(now / W)
//   sliding_window_log      allow iff (sum of accepted costs in (now - W, now]) + c <= n
//   sliding_window_counter  allow iff prev * (W - e) + (cur + c) * W <= n * W, e = now mod W
//   token_bucket (GCRA)     allow iff max(F, now) + c * W / n - now <= b * W / n
//
// All arithmetic is exact (integers, 128-bit where products can be large); nothing drifts.
// A step changes the state only when it is allowed, `commit` is true and `cost` > 0: denied hits
// and cost-0 checks consume nothing. A `now` earlier than the last consuming hit is treated as
// that hit's time ("no time passes"), so a clock stepping back never admits more.
//
// All functions here are pure and thread-compatible: callers serialise access to one state.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "sluice/clock.h"

namespace sluice {

// Algorithm names one of the four strategies. The numeric values are stable (stores persist them).
enum class Algorithm : std::uint8_t {
  kFixedWindow = 0,
  kSlidingWindowLog = 1,
  kSlidingWindowCounter = 2,
  kTokenBucket = 3,
};

// algorithm_name() returns the configuration spelling: "fixed_window", "token_bucket", ...
std::string_view algorithm_name(Algorithm a) noexcept;
// parse_algorithm() maps a configuration spelling back to the Algorithm, or nullopt.
std::optional<Algorithm> parse_algorithm(std::string_view name) noexcept;

// kNever is the retry_after of a hit whose cost exceeds what the limit can ever hold.
inline constexpr Micros kNever = std::numeric_limits<Micros>::max();
// kMaxLimit bounds requests_per_unit and burst (Envoy's requests_per_unit is a uint32).
inline constexpr std::uint64_t kMaxLimit = 0xFFFF'FFFFu;
// kMaxWindow bounds a window: 100 years, so every product of the exact arithmetic fits.
inline constexpr Micros kMaxWindow = Micros{100} * 366 * 86'400 * 1'000'000;

// Consistency says how a limit is shared between sluice instances that use one Redis
// (docs/deployment.md). Stores that are local to one process (the memory store) ignore it.
enum class Consistency : std::uint8_t {
  kDefault = 0,   // the store's default (`consistency=` in the storage URL, `sluice serve
                  // --consistency`), which is strong unless set
  kStrong = 1,    // every decision is one atomic step in Redis
  kEventual = 2,  // decided locally; consumption is replicated every sync interval
};

// consistency_name() returns "default", "strong" or "eventual".
std::string_view consistency_name(Consistency c) noexcept;
// parse_consistency() maps "strong" or "eventual" to the Consistency, or nullopt.
std::optional<Consistency> parse_consistency(std::string_view name) noexcept;

// LimitSpec is one limit's parameters. A plain value; cheap to copy.
struct LimitSpec {
  Algorithm algorithm = Algorithm::kFixedWindow;
  // n: cost units admitted per window. 0 blocks every hit of cost > 0 (as Envoy's ratelimit
  // does for requests_per_unit: 0).
  std::uint64_t limit = 0;
  // W: the window, in microseconds, 1 <= W <= kMaxWindow.
  Micros window = 0;
  // b: the token bucket's capacity; 0 means n. Ignored by the other algorithms.
  std::uint64_t burst = 0;
  // How instances sharing a Redis store share this limit; the memory store ignores it.
  Consistency consistency = Consistency::kDefault;

  std::uint64_t capacity() const noexcept { return burst != 0 ? burst : limit; }
  friend bool operator==(const LimitSpec&, const LimitSpec&) = default;
};

// refill_fits() tells whether an empty token bucket refills within kMaxWindow (b * W / n), which
// keeps every time the algorithms compute inside 64 bits (and Redis's 53-bit Lua numbers).
bool refill_fits(const LimitSpec& s) noexcept;

// Verdict is the outcome of one step.
struct Verdict {
  bool allowed = true;
  // Cost units that could still be admitted right now, after this hit.
  std::uint64_t remaining = 0;
  // Time until the limit is fully available again if nothing else arrives.
  Micros reset_after = 0;
  // Denied hits only: the earliest wait after which the same hit would pass if nothing else
  // arrives; kNever when the cost exceeds what the limit can ever hold. 0 when allowed.
  Micros retry_after = 0;
  friend bool operator==(const Verdict&, const Verdict&) = default;
};

// kFresh marks a state that has never consumed: it behaves as a full limit.
inline constexpr Micros kFresh = std::numeric_limits<Micros>::min();

// FixedWindowState: `count` units consumed in the window that holds `last`, the time of the
// last consuming hit.
struct FixedWindowState {
  Micros last = kFresh;
  std::uint64_t count = 0;
  friend bool operator==(const FixedWindowState&, const FixedWindowState&) = default;
};

// SlidingCounterState: `current` units consumed in the window that holds `last`, `previous` in
// the window before it.
struct SlidingCounterState {
  Micros last = kFresh;
  std::uint64_t previous = 0;
  std::uint64_t current = 0;
  friend bool operator==(const SlidingCounterState&, const SlidingCounterState&) = default;
};

// TokenBucketState: the GCRA "theoretical arrival time" F = tat + tat_frac / n microseconds,
// the time at which the bucket is full again, and `last`, the time of the last consuming hit.
struct TokenBucketState {
  Micros last = kFresh;
  Micros tat = 0;
  std::uint32_t tat_frac = 0;
  friend bool operator==(const TokenBucketState&, const TokenBucketState&) = default;
};

// SlidingLogState: the times and costs of accepted hits, oldest first (hits at the same time
// share one entry). Holds at most one entry per distinct consuming time inside the window, so
// its size is bounded by n.
class SlidingLogState {
 public:
  struct Hit {
    Micros time;
    std::uint64_t cost;
    friend bool operator==(const Hit&, const Hit&) = default;
  };
  // restore() rebuilds a log from its entries (oldest first, as hits() lists them) and the time
  // of the last consuming hit: for stores that keep the log elsewhere.
  static SlidingLogState restore(Micros last, std::vector<Hit> hits) {
    SlidingLogState s;
    s.last_ = last;
    for (const Hit& h : hits)
      s.sum_ += h.cost;
    s.hits_ = std::move(hits);
    return s;
  }
  Micros last() const noexcept { return last_; }
  bool empty() const noexcept { return head_ == hits_.size(); }
  std::size_t size() const noexcept { return hits_.size() - head_; }
  // hits() returns the live entries, oldest first (some may have left the window).
  std::pair<const Hit*, const Hit*> hits() const noexcept {
    return {hits_.data() + head_, hits_.data() + hits_.size()};
  }

 private:
  friend Verdict step(SlidingLogState&, const LimitSpec&, std::uint64_t, Micros, bool) noexcept;
  friend Micros full_at(const SlidingLogState&, const LimitSpec&) noexcept;
  std::vector<Hit> hits_;
  std::size_t head_ = 0;
  std::uint64_t sum_ = 0;  // sum of costs of hits_[head_..]
  Micros last_ = kFresh;
};

Verdict step(FixedWindowState& s, const LimitSpec& spec, std::uint64_t cost, Micros now,
             bool commit = true) noexcept;
Verdict step(SlidingCounterState& s, const LimitSpec& spec, std::uint64_t cost, Micros now,
             bool commit = true) noexcept;
Verdict step(TokenBucketState& s, const LimitSpec& spec, std::uint64_t cost, Micros now,
             bool commit = true) noexcept;
Verdict step(SlidingLogState& s, const LimitSpec& spec, std::uint64_t cost, Micros now,
             bool commit = true) noexcept;

// full_at() returns the time from which the state behaves exactly as a fresh one (a store may
// forget it then); kFresh when it already does.
Micros full_at(const FixedWindowState& s, const LimitSpec& spec) noexcept;
Micros full_at(const SlidingCounterState& s, const LimitSpec& spec) noexcept;
Micros full_at(const TokenBucketState& s, const LimitSpec& spec) noexcept;
Micros full_at(const SlidingLogState& s, const LimitSpec& spec) noexcept;

}  // namespace sluice
