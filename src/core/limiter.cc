#include "sluice/limiter.h"

#include <algorithm>
#include <limits>
#include <mutex>
#include <string_view>
#include <unordered_set>

namespace sluice {

namespace {

std::atomic<std::uint64_t> g_generation{0};

// Each thread keeps a reference to the last snapshot it used, tagged with its generation.
struct SnapshotCache {
  std::uint64_t generation = 0;
  std::shared_ptr<const RuleSet> rules;
};
thread_local SnapshotCache t_snapshot;

bool valid_override(const LimitOverride& o) {
  return unit_micros(o.unit) > 0;
}

}  // namespace

// Per-thread buffers reused by every decision, so the hot path allocates only the Decision.
struct Limiter::Scratch {
  struct Item {
    const CompiledLimit* limit;
    std::uint32_t descriptor;
    std::uint64_t cost;
    std::size_t key;  // index into keys
    std::size_t hit;  // index into hits (valid when counted)
    bool replaced;
  };
  std::vector<Item> items;
  std::vector<std::string> keys;
  std::size_t key_count = 0;
  std::vector<Hit> hits;
  std::vector<Verdict> verdicts;
  std::vector<CompiledLimit> overrides;
  std::vector<RuleSet::PathMatch> path_matches;
  StoreStatus status;

  void clear() {
    items.clear();
    key_count = 0;
    hits.clear();
    overrides.clear();
    path_matches.clear();
    status = StoreStatus{};
  }
  // new_key() returns an empty reusable key buffer and its index.
  std::size_t new_key(std::string_view prefix) {
    if (key_count == keys.size()) keys.emplace_back();
    std::string& k = keys[key_count];
    k.assign(prefix);
    return key_count++;
  }
  void add(const CompiledLimit& limit, std::uint32_t descriptor, std::uint64_t cost,
           std::size_t key) {
    items.push_back(Item{&limit, descriptor, cost, key, 0, false});
  }
};

void Limiter::set_rules(std::shared_ptr<const RuleSet> rules) {
  if (!rules) rules = RuleSet::empty();
  std::lock_guard lock(mu_);
  rules_ = std::move(rules);
  generation_.store(g_generation.fetch_add(1) + 1, std::memory_order_release);
}

std::shared_ptr<const RuleSet> Limiter::rules() const {
  std::lock_guard lock(mu_);
  return rules_;
}

const RuleSet& Limiter::snapshot() {
  const std::uint64_t gen = generation_.load(std::memory_order_acquire);
  if (t_snapshot.generation != gen) {
    std::lock_guard lock(mu_);
    t_snapshot.rules = rules_;
    t_snapshot.generation = generation_.load(std::memory_order_relaxed);
  }
  return *t_snapshot.rules;
}

void Limiter::collect(Scratch& sc, const RuleSet& rules, const Request& request) {
  const bool known_domain = rules.has_domain(request.domain);
  if (known_domain) {
    sc.overrides.reserve(request.descriptors.size());  // stable addresses for override limits
    for (std::size_t i = 0; i < request.descriptors.size(); ++i) {
      const Descriptor& desc = request.descriptors[i];
      const std::uint64_t cost = desc.cost.value_or(request.cost);
      const auto index = static_cast<std::uint32_t>(i);
      if (desc.limit && valid_override(*desc.limit)) {
        // Envoy's per-request override: a fixed window of requests_per_unit per unit, counted
        // per domain and entries.
        CompiledLimit& o = sc.overrides.emplace_back();
        o.spec.limit = desc.limit->requests_per_unit;
        o.spec.window = unit_micros(desc.limit->unit);
        o.unit = desc.limit->unit;
        o.name = request.domain;
        o.key_prefix = "O\x1f";
        o.key_prefix += request.domain;
        o.key_prefix += '\x1f';
        o.key_prefix += std::to_string(o.spec.window);
        o.key_prefix += '\x1f';
        for (const auto& e : desc.entries) {
          o.name += '.';
          o.name += e.key;
          if (!e.value.empty()) o.name += "_" + e.value;
        }
        const std::size_t key = sc.new_key(o.key_prefix);
        for (const auto& e : desc.entries) {
          append_key_value(sc.keys[key], e.key);
          append_key_value(sc.keys[key], e.value);
        }
        sc.add(o, index, cost, key);
        continue;
      }
      const std::vector<CompiledLimit>* limits = rules.match(request.domain, desc);
      if (limits == nullptr) continue;
      for (const CompiledLimit& limit : *limits) {
        std::size_t key = 0;
        if (!limit.unlimited) {
          key = sc.new_key(limit.key_prefix);
          for (const auto& e : desc.entries)
            append_key_value(sc.keys[key], e.value);
        }
        sc.add(limit, index, cost, key);
      }
    }
  }
}

void Limiter::collect(Scratch& sc, const RuleSet& rules, const PathRequest& request) {
  rules.match_path(request, sc.path_matches);
  for (const RuleSet::PathMatch& m : sc.path_matches) {
    for (const CompiledLimit& limit : *m.limits) {
      std::size_t key = 0;
      if (!limit.unlimited) {
        key = sc.new_key(limit.key_prefix);
        append_key_value(sc.keys[key], request.data[m.data_index].second);
      }
      sc.add(limit, m.data_index, request.cost, key);
    }
  }
}

template <class Req>
Decision Limiter::decide_now(const Req& request) {
  static thread_local Scratch scratch;
  Scratch& sc = scratch;
  sc.clear();
  collect(sc, snapshot(), request);
  plan(sc);
  if (!sc.hits.empty()) sc.status = store_.apply(sc.hits, clock_.now_micros(), sc.verdicts);
  Decision decision;
  conclude(sc, decision);
  return decision;
}

Decision Limiter::decide(const Request& request) {
  return decide_now(request);
}

Decision Limiter::decide(const PathRequest& request) {
  return decide_now(request);
}

namespace {

// How many requests decide_batch() works out and prefetches ahead of the one it decides. Enough
// that several slot misses are in flight at once (a core tracks 10 to 16 outstanding misses to
// memory), few enough that the prefetched lines are still in the L1 cache when their turn
// comes, and a bound on the per-thread buffers whatever the batch's size.
constexpr std::size_t kLookahead = 8;

// reuse() makes `d` a fresh Decision that keeps its buffers' capacity.
void reuse(Decision& d) noexcept {
  std::vector<DescriptorStatus> statuses = std::move(d.statuses);
  std::string error = std::move(d.error);
  statuses.clear();
  error.clear();
  d = Decision{};
  d.statuses = std::move(statuses);
  d.error = std::move(error);
}

}  // namespace

// Requests are prepared (collect, plan, prefetch) kLookahead ahead of the one being decided
// (apply, conclude), each in its own scratch of a per-thread ring. Preparing reads only the
// request and the rules, never the store's state, so deciding in request order keeps decide()'s
// semantics exactly.
template <class Req>
void Limiter::decide_many(std::span<const Req> requests, std::span<Decision> out) {
  static thread_local std::vector<Scratch> ring(kLookahead);
  const std::size_t n = requests.size();
  if (n == 0) return;
  const RuleSet& rules = snapshot();
  auto prepare = [&](std::size_t i) {
    Scratch& sc = ring[i % kLookahead];
    sc.clear();
    collect(sc, rules, requests[i]);
    plan(sc);
    if (!sc.hits.empty()) store_.prefetch(sc.hits);
  };
  for (std::size_t i = 0; i < n && i < kLookahead; ++i)
    prepare(i);
  for (std::size_t i = 0; i < n; ++i) {
    Scratch& sc = ring[i % kLookahead];
    if (!sc.hits.empty()) sc.status = store_.apply(sc.hits, clock_.now_micros(), sc.verdicts);
    reuse(out[i]);
    conclude(sc, out[i]);
    if (i + kLookahead < n) prepare(i + kLookahead);
  }
}

void Limiter::decide_batch(std::span<const Request> requests, std::span<Decision> out) {
  decide_many(requests, out);
}

void Limiter::decide_batch(std::span<const PathRequest> requests, std::span<Decision> out) {
  decide_many(requests, out);
}

// Async is one decision in flight: its own scratch (the store reads its keys and writes its
// verdicts until it completes) and the rule snapshot its limits point into. Finished ones are
// kept for reuse, so a steady stream of decisions allocates little.
struct Limiter::Async final : ApplyCompletion {
  explicit Async(Limiter& l) : limiter(l) {}
  void applied(StoreStatus status) noexcept override {
    sc.status = std::move(status);
    Decision decision;
    try {
      limiter.conclude(sc, decision);
    } catch (const std::exception& e) {  // std::bad_alloc: the store's answer cannot be reported
      decision = Decision{};
      decision.error = std::string("sluice: ") + e.what();
    }
    DecisionCallback callback = std::move(done);
    limiter.release(this);  // before the callback, which may decide again and reuse it
    callback(std::move(decision));
  }
  Limiter& limiter;
  DecisionCallback done;
  Scratch sc;
  std::shared_ptr<const RuleSet> rules;
};

// AsyncPool holds finished Asyncs for reuse.
struct Limiter::AsyncPool {
  static constexpr std::size_t kMax = 1024;
  std::mutex mu;
  std::vector<std::unique_ptr<Async>> free;
};

Limiter::Limiter(std::shared_ptr<const RuleSet> rules, Store& store, const Clock& clock)
    : store_(store),
      clock_(clock),
      rules_(rules ? std::move(rules) : RuleSet::empty()),
      generation_(g_generation.fetch_add(1) + 1),
      pool_(std::make_unique<AsyncPool>()) {
  pool_->free.reserve(AsyncPool::kMax);
}

Limiter::~Limiter() = default;

std::unique_ptr<Limiter::Async> Limiter::acquire() {
  {
    std::lock_guard lock(pool_->mu);
    if (!pool_->free.empty()) {
      std::unique_ptr<Async> a = std::move(pool_->free.back());
      pool_->free.pop_back();
      return a;
    }
  }
  return std::make_unique<Async>(*this);
}

void Limiter::release(Async* a) noexcept {
  std::unique_ptr<Async> owned(a);
  owned->sc.clear();
  owned->rules.reset();
  std::lock_guard lock(pool_->mu);
  if (pool_->free.size() < AsyncPool::kMax && pool_->free.capacity() > pool_->free.size()) {
    pool_->free.push_back(std::move(owned));  // within capacity: cannot throw
  }
}

template <class Req>
void Limiter::decide_later(const Req& request, DecisionCallback done) {
  std::unique_ptr<Async> op = acquire();
  op->done = std::move(done);
  snapshot();
  op->rules = t_snapshot.rules;
  collect(op->sc, *op->rules, request);
  plan(op->sc);
  if (op->sc.hits.empty()) return op.release()->applied({});
  Async* raw = op.release();
  store_.apply_async(raw->sc.hits, clock_.now_micros(), raw->sc.verdicts, *raw);
}

void Limiter::decide_async(const Request& request, DecisionCallback done) {
  decide_later(request, std::move(done));
}

void Limiter::decide_async(const PathRequest& request, DecisionCallback done) {
  decide_later(request, std::move(done));
}

void Limiter::plan(Scratch& sc) {
  // `replaces`: a matched limit drops the named limits it replaces from this request.
  bool any_replaces = false;
  for (const auto& item : sc.items)
    any_replaces |= !item.limit->replaces.empty();
  if (any_replaces) {
    std::unordered_set<std::string_view> replaced;
    for (const auto& item : sc.items) {
      for (const auto& name : item.limit->replaces)
        replaced.insert(name);
    }
    for (auto& item : sc.items) {
      item.replaced = !item.limit->replace_name.empty() && replaced.count(item.limit->replace_name);
    }
  }

  // One store hit per distinct key; a key named twice in a request counts both costs at once.
  const bool many = sc.items.size() > 8;
  std::unordered_map<std::string_view, std::size_t> by_key;
  for (auto& item : sc.items) {
    if (item.replaced || item.limit->unlimited) continue;
    const std::string_view key = sc.keys[item.key];
    std::size_t found = sc.hits.size();
    if (many) {
      auto it = by_key.find(key);
      if (it != by_key.end()) found = it->second;
    } else {
      for (std::size_t h = 0; h < sc.hits.size(); ++h) {
        if (sc.hits[h].key == key) {
          found = h;
          break;
        }
      }
    }
    if (found == sc.hits.size()) {
      sc.hits.push_back(Hit{key, &item.limit->spec, item.cost, !item.limit->shadow});
      if (many) by_key.emplace(key, found);
    } else {
      // Saturating: a sum past 2^64 is more than any limit holds, which the verdict says.
      std::uint64_t& cost = sc.hits[found].cost;
      if (__builtin_add_overflow(cost, item.cost, &cost))
        cost = std::numeric_limits<std::uint64_t>::max();
      sc.hits[found].enforce |= !item.limit->shadow;
    }
    item.hit = found;
  }

  if (sc.verdicts.size() < sc.hits.size()) sc.verdicts.resize(sc.hits.size());
}

void Limiter::conclude(Scratch& sc, Decision& decision) {
  const bool store_failed = !sc.status.ok();
  if (store_failed) {
    decision.error = sc.status.message;
    store_failures_.fetch_add(1, std::memory_order_relaxed);
  }

  decision.statuses.reserve(sc.items.size());
  const DescriptorStatus* worst = nullptr;
  for (const auto& item : sc.items) {
    if (item.replaced) continue;
    const CompiledLimit& limit = *item.limit;
    DescriptorStatus& st = decision.statuses.emplace_back();
    st.descriptor_index = item.descriptor;
    st.name = limit.name;
    st.spec = limit.spec;
    st.unit = limit.unit;
    st.shadow = limit.shadow;
    st.unlimited = limit.unlimited;
    if (limit.unlimited) {
      st.remaining = kMaxLimit;
      continue;
    }
    st.limit =
        limit.spec.algorithm == Algorithm::kTokenBucket ? limit.spec.capacity() : limit.spec.limit;
    if (store_failed) {
      // Decided without the store, by the limit's failure mode.
      st.without_store = true;
      st.allowed = limit.failure_mode == FailureMode::kAllow;
      st.remaining = st.allowed ? st.limit : 0;
    } else {
      const Verdict& v = sc.verdicts[item.hit];
      st.allowed = v.allowed;
      st.remaining = v.remaining;
      st.reset_after = v.reset_after;
      st.retry_after = v.retry_after;
    }
    if (limit.shadow) continue;
    if (!st.allowed) decision.allowed = false;
    if (worst == nullptr) {
      worst = &st;
    } else if (worst->allowed != st.allowed) {
      if (!st.allowed) worst = &st;
    } else if (!st.allowed ? st.retry_after > worst->retry_after
                           : st.remaining < worst->remaining) {
      worst = &st;
    }
  }
  if (worst != nullptr) {
    decision.limit = worst->limit;
    decision.remaining = worst->remaining;
    decision.reset_after = worst->reset_after;
    decision.retry_after = worst->retry_after;
  }
}

}  // namespace sluice
