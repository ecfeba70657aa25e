// sluice/clock.h — the source of time for everything that decides.
//
// Time is injected: algorithms take `now` as an argument, and objects that need the time hold a
// `Clock&`. Production code uses SystemClock; tests use ManualClock and move it by hand, so no
// test ever sleeps to let a window pass.
//
// Example:
//
//   sluice::ManualClock clock(sluice::seconds_to_micros(1'700'000'000));
//   sluice::Limiter limiter(rules, store, clock);
//   clock.advance(std::chrono::seconds(1));
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace sluice {

// Microseconds since the Unix epoch. Every time in sluice's decision path uses this unit.
using Micros = std::int64_t;

// seconds_to_micros() converts whole seconds since the epoch to Micros.
constexpr Micros seconds_to_micros(std::int64_t seconds) {
  return seconds * 1'000'000;
}

// Clock is the interface every component reads time through. Implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  // now_micros() returns the current time in microseconds since the Unix epoch.
  virtual Micros now_micros() const noexcept = 0;
};

// SystemClock reads the system's real-time clock. Thread-safe.
class SystemClock final : public Clock {
 public:
  Micros now_micros() const noexcept override;
  // instance() returns a process-wide SystemClock.
  static SystemClock& instance();
};

// ManualClock is set and advanced by hand; tests and `sluice replay` use it. Thread-safe: the
// time is one atomic word, so threads may read it while another sets it.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(Micros start = 0) : now_(start) {}
  Micros now_micros() const noexcept override { return now_.load(std::memory_order_acquire); }
  // set() moves the clock to `t`, forwards or backwards.
  void set(Micros t) noexcept { now_.store(t, std::memory_order_release); }
  // advance() moves the clock by `d` (which may be negative).
  void advance(std::chrono::microseconds d) noexcept {
    now_.fetch_add(d.count(), std::memory_order_acq_rel);
  }

 private:
  std::atomic<Micros> now_;
};

}  // namespace sluice
