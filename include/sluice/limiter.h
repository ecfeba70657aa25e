// sluice/limiter.h — the decision service: rules + store + clock -> Decision.
//
// For each request the Limiter finds every limit that applies (RuleSet), has the store apply
// them all-or-nothing at the clock's `now`, and returns one Decision with a status per limit.
//
// Example:
//
//   sluice::MemoryStore store;
//   sluice::Limiter limiter(rules, store, sluice::SystemClock::instance());
//   sluice::Request req{.domain = "api", .descriptors = {{.entries = {{"remote_address", ip}}}}};
//   if (!limiter.decide(req).allowed) reply_429();
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>

#include "sluice/clock.h"
#include "sluice/decision.h"
#include "sluice/request.h"
#include "sluice/rules.h"
#include "sluice/store.h"

namespace sluice {

// Limiter is thread-safe: any number of threads may decide while another replaces the rules.
// The store and the clock must outlive it, and it must outlive its decisions in flight.
class Limiter {
 public:
  Limiter(std::shared_ptr<const RuleSet> rules, Store& store, const Clock& clock);
  ~Limiter();
  Limiter(const Limiter&) = delete;
  Limiter& operator=(const Limiter&) = delete;

  // decide() decides an Envoy-style request. Unknown domains and unmatched descriptors are
  // allowed with no status. Does not throw except std::bad_alloc.
  Decision decide(const Request& request);
  // decide() decides a path-rule request.
  Decision decide(const PathRequest& request);

  // decide_batch() decides requests[i] into out[i] for each i (out.size() >= requests.size()),
  // with the same Decisions as calling decide() on each request in turn: in order, each request
  // all-or-nothing on its own (a denied request consumes nothing, a later one in the batch sees
  // what an earlier one consumed), each at the clock's time when it is decided, all on one rule
  // snapshot. What it adds is speed when keys are many: it works out the store keys of the next
  // few requests and has the store prefetch their states (Store::prefetch()) before deciding the
  // current one, so that the cache misses of a batch overlap instead of each decision waiting on
  // its own (docs/benchmarks.md, "Scaling with the number of keys"). Each out[i] is overwritten;
  // its buffers are reused, so passing the same `out` again allocates less. Throws only
  // std::bad_alloc; then a prefix of the requests has been decided into `out`, and the request
  // that was being decided may have consumed without its Decision being written.
  void decide_batch(std::span<const Request> requests, std::span<Decision> out);
  void decide_batch(std::span<const PathRequest> requests, std::span<Decision> out);

  // decide_async() decides without waiting on the store, so one thread can keep many decisions
  // in flight through Redis. `done` receives the Decision once: before decide_async() returns
  // when the store decides in this process (memory, eventual mode) or nothing matched, else on
  // the store's I/O thread, where it must not block or throw (it may decide again). The request
  // is copied as needed: it may go away once decide_async() returns. Throws only std::bad_alloc
  // (then `done` is not called).
  using DecisionCallback = std::function<void(Decision)>;
  void decide_async(const Request& request, DecisionCallback done);
  void decide_async(const PathRequest& request, DecisionCallback done);

  // set_rules() swaps in a new rule snapshot; decisions already running finish on the old one.
  void set_rules(std::shared_ptr<const RuleSet> rules);
  // rules() returns the current snapshot.
  std::shared_ptr<const RuleSet> rules() const;

  // store_failures() counts the decisions the store could not make (each limit's failure_mode
  // decided them instead).
  std::uint64_t store_failures() const noexcept {
    return store_failures_.load(std::memory_order_relaxed);
  }

  Store& store() const noexcept { return store_; }
  const Clock& clock() const noexcept { return clock_; }

 private:
  struct Scratch;
  struct Async;
  struct AsyncPool;
  std::unique_ptr<Async> acquire();
  void release(Async* async) noexcept;
  const RuleSet& snapshot();
  // collect() finds the limits that apply and their keys; plan() makes one store hit per
  // distinct key; conclude() turns the store's verdicts into the Decision.
  void collect(Scratch& scratch, const RuleSet& rules, const Request& request);
  void collect(Scratch& scratch, const RuleSet& rules, const PathRequest& request);
  void plan(Scratch& scratch);
  void conclude(Scratch& scratch, Decision& decision);
  template <class Req>
  Decision decide_now(const Req& request);
  template <class Req>
  void decide_many(std::span<const Req> requests, std::span<Decision> out);
  template <class Req>
  void decide_later(const Req& request, DecisionCallback done);

  Store& store_;
  const Clock& clock_;
  mutable std::mutex mu_;
  std::shared_ptr<const RuleSet> rules_;
  // A process-wide unique number per snapshot, so each thread can cache its own reference and
  // check it with one shared read instead of touching the shared_ptr's count per decision.
  std::atomic<std::uint64_t> generation_;
  std::atomic<std::uint64_t> store_failures_{0};
  std::unique_ptr<AsyncPool> pool_;  // finished asynchronous decisions, for reuse
};

}  // namespace sluice
