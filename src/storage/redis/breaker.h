// CircuitBreaker stops a store from waiting on a server that is not answering.
//
// Closed: every call goes through. A failed call (timeout, connection down) opens it: calls fail
// at once for the cool-down (doubling from `min_open` to `max_open` while failures repeat).
// Then one call goes through as a probe (half-open) while the others still fail at once; the
// probe's success closes the breaker, its failure opens it again.
//
// Thread-safe; the closed path is one atomic load.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>

namespace sluice::redis {

class CircuitBreaker {
 public:
  using Clock = std::chrono::steady_clock;

  CircuitBreaker(std::chrono::milliseconds min_open, std::chrono::milliseconds max_open)
      : min_open_(min_open), max_open_(max_open), open_for_(min_open) {}

  // allow() says whether a call may go to the server now. A true from a half-open breaker makes
  // the caller the probe, which must report its outcome.
  bool allow() noexcept {
    if (state_.load(std::memory_order_acquire) == kClosed) return true;
    std::lock_guard lock(mu_);
    if (state_ == kOpen && Clock::now() >= reopen_at_) {
      state_.store(kHalfOpen, std::memory_order_release);
      return true;  // this caller probes
    }
    return false;
  }

  void on_success() noexcept {
    if (state_.load(std::memory_order_acquire) == kClosed) return;
    std::lock_guard lock(mu_);
    state_.store(kClosed, std::memory_order_release);
    open_for_ = min_open_;
  }

  void on_failure() noexcept {
    std::lock_guard lock(mu_);
    if (state_ == kOpen) return;  // already open: a late failure changes nothing
    if (state_ == kHalfOpen) open_for_ = std::min(open_for_ * 2, max_open_);
    state_.store(kOpen, std::memory_order_release);
    reopen_at_ = Clock::now() + open_for_;
    ++opened_;
  }

  bool is_open() const noexcept { return state_.load(std::memory_order_acquire) != kClosed; }
  // opened() counts the times the breaker opened.
  std::uint64_t opened() const noexcept {
    std::lock_guard lock(mu_);
    return opened_;
  }

 private:
  enum State : int { kClosed, kOpen, kHalfOpen };
  const std::chrono::milliseconds min_open_;
  const std::chrono::milliseconds max_open_;
  mutable std::mutex mu_;
  std::atomic<int> state_{kClosed};
  std::chrono::milliseconds open_for_;
  Clock::time_point reopen_at_{};
  std::uint64_t opened_ = 0;
};

}  // namespace sluice::redis
