// sluice/store.h — the storage contract: a store atomically applies algorithm steps.
//
// A store owns the state behind each key and runs the algorithm's step on it atomically, so that
// many threads (memory) or many sluice instances (Redis) never both admit on the same counter.
// One apply() is all-or-nothing: if any enforced hit is denied, no hit consumes.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "sluice/algorithms.h"

namespace sluice {

// Hit is one limit to apply within a request.
struct Hit {
  // The state's identity. Keys within one apply() call are distinct.
  std::string_view key;
  // The limit's parameters. Not owned; valid for the duration of the call.
  const LimitSpec* spec = nullptr;
  // Cost units; 0 reports without consuming.
  std::uint64_t cost = 1;
  // False for shadow-mode limits: their verdict never blocks the request.
  bool enforce = true;
};

// StoreStatus says whether a store could decide. The memory store always can.
struct StoreStatus {
  enum class Code : std::uint8_t { kOk = 0, kUnavailable, kTimeout, kInvalid };
  Code code = Code::kOk;
  std::string message;
  bool ok() const noexcept { return code == Code::kOk; }
};

// ApplyCompletion receives the outcome of Store::apply_async().
class ApplyCompletion {
 public:
  // applied() is called once, when the verdicts are in `out` (or `status` says why not). On a
  // store's I/O thread it must not block; it may start further applies.
  virtual void applied(StoreStatus status) noexcept = 0;

 protected:
  ~ApplyCompletion() = default;
};

// Store is the interface every storage backend implements. Implementations are thread-safe.
class Store {
 public:
  virtual ~Store() = default;

  // apply() decides every hit at time `now` as one atomic step and writes one Verdict per hit
  // into `out` (same order, out.size() >= hits.size()). If every enforced hit is allowed, every
  // allowed hit consumes its cost; otherwise nothing consumes, and each verdict describes the
  // state as it stays. Does not throw.
  virtual StoreStatus apply(std::span<const Hit> hits, Micros now,
                            std::span<Verdict> out) noexcept = 0;

  // apply_async() is apply() without waiting on the network: it returns at once and calls
  // `done.applied()` once the verdicts are in `out`; before it returns when the store decides
  // here (the default runs apply()), or on the store's I/O thread (the Redis store). `hits`, the
  // keys and specs they point to, and `out` must stay valid until then. One thread can so keep
  // many decisions in flight, where apply() keeps one per thread.
  virtual void apply_async(std::span<const Hit> hits, Micros now, std::span<Verdict> out,
                           ApplyCompletion& done) noexcept {
    done.applied(apply(hits, now, out));
  }

  // prefetch() is a hint that apply() will soon be called on `hits`: a store may start loading
  // the states behind their keys into the CPU's cache (the memory store does), so that the memory
  // loads of several requests decided one after another overlap instead of each waiting in turn
  // (Limiter::decide_batch() calls it a few requests ahead). It decides nothing, changes no state
  // and never changes a verdict: calling it or not is the same to every later apply(). The
  // default does nothing. Thread-safe; does not throw.
  virtual void prefetch(std::span<const Hit> hits) noexcept { static_cast<void>(hits); }

  // name() describes the store for logs ("memory", "redis://...").
  virtual std::string name() const = 0;

  // decides_locally() tells whether apply() normally answers without waiting on the network
  // (the memory store; an eventual-consistency store), so callers may decide on threads that
  // must not block.
  virtual bool decides_locally() const noexcept { return false; }
};

}  // namespace sluice
