#include "sluice/eventual_store.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <unordered_map>

#include "core/int128.h"
#include "storage/redis/batch.h"
#include "storage/redis/decide.h"
#include "sync/sync_script.h"

namespace sluice {

namespace {

constexpr std::size_t kShards = 64;
// Keys per script call when they need not share a slot: bounds how long one call holds Redis.
constexpr std::size_t kKeysPerCall = 64;
// A lease is trusted for this many sync intervals after the round that granted it; past that
// (Redis unreachable), the key is decided on its local share.
constexpr Micros kLeaseIntervals = 3;
// Rounds without local activity after which a key whose local state is full again is dropped.
constexpr std::uint32_t kIdleRounds = 3;

bool is_bucket(const LimitSpec& s) noexcept {
  return s.algorithm == Algorithm::kTokenBucket;
}

// The limit as eventual mode decides it: a sliding log by the sliding counter's rule.
LimitSpec eventual_spec(const LimitSpec& s) noexcept {
  LimitSpec e = s;
  if (e.algorithm == Algorithm::kSlidingWindowLog) e.algorithm = Algorithm::kSlidingWindowCounter;
  return e;
}

std::uint64_t capacity_of(const LimitSpec& s) noexcept {
  return is_bucket(s) ? s.capacity() : s.limit;
}

std::uint64_t scaled(std::uint64_t n, double share) noexcept {
  const double v = std::ceil(static_cast<double>(n) * share - 1e-9);
  return std::min<std::uint64_t>(n, v <= 0 ? 0 : static_cast<std::uint64_t>(v));
}

struct KeyHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return static_cast<std::size_t>(XXH3_64bits(s.data(), s.size()));
  }
};

}  // namespace

// Entry is one key decided locally. Guarded by its shard's mutex.
struct EventualStore::Entry {
  LimitSpec spec;   // as decided in eventual mode
  LimitSpec local;  // scaled to this instance's share, for the local state below
  double local_share = 0;
  std::int64_t epoch = 0;          // the window the lease and counters below belong to (windows)
  std::int64_t allowance = 0;      // while leased: `used` may reach this
  std::int64_t reserved = 0;       // of which Redis reserved for this instance (granted leases)
  std::int64_t used = 0;           // admitted since the last round
  std::int64_t prev_delta = 0;     // sliding counter: consumption still to add to window epoch-1
  std::uint64_t offered = 0;       // cost asked for since the last round, admitted or not
  std::uint64_t admitted = 0;      // of which admitted
  std::uint64_t last_offered = 0;  // `offered` in the interval before
  bool scarce = false;             // Redis had nothing left after the last lease
  std::int64_t left = -1;          // what Redis had left after the last lease; -1 unknown
  Micros leased_at = kFresh;       // when the last lease was granted
  bool leased = false;             // a lease for `epoch` was granted
  std::uint32_t idle_rounds = 0;
  // The local state (the limit scaled to this instance's share), kept with every admission.
  FixedWindowState fixed;
  SlidingCounterState sliding;
  TokenBucketState bucket;

  Verdict local_step(std::uint64_t cost, Micros now, bool commit) noexcept {
    switch (local.algorithm) {
      case Algorithm::kTokenBucket:
        return step(bucket, local, cost, now, commit);
      case Algorithm::kSlidingWindowCounter:
        return step(sliding, local, cost, now, commit);
      default:
        return step(fixed, local, cost, now, commit);
    }
  }
  Micros local_full_at() const noexcept {
    switch (local.algorithm) {
      case Algorithm::kTokenBucket:
        return full_at(bucket, local);
      case Algorithm::kSlidingWindowCounter:
        return full_at(sliding, local);
      default:
        return full_at(fixed, local);
    }
  }
  // start() makes this a fresh entry for the limit `s`, in the window of `now`.
  void start(const LimitSpec& s, Micros now) noexcept {
    *this = Entry{};
    spec = eventual_spec(s);
    epoch = is_bucket(spec) ? 0 : floor_div(now, spec.window);
  }
  void rescale(double share) noexcept {
    if (share == local_share) return;
    local_share = share;
    local = spec;
    local.limit = scaled(spec.limit, share);
    if (is_bucket(spec)) local.burst = scaled(spec.capacity(), share);
  }
  // keeps_lease() tells whether an unused lease may stay here rather than go back at the next
  // round: a fixed window's (it is good only in its window, and a window's count is all that
  // matters), while Redis had more left at the last round than it holds, so nobody is short of
  // it. A key hit now and then would otherwise cost a second update per hit, returning its
  // lease. A bucket's lease goes back (held tokens spent later would exceed the bucket's bound
  // on a span), and so does a sliding counter's at the window's end (the previous window's count
  // weighs on the next).
  bool keeps_lease() const noexcept {
    return spec.algorithm == Algorithm::kFixedWindow && used <= reserved && left > reserved - used;
  }
  bool online(Micros now, Micros interval) const noexcept {
    return leased && now - leased_at <= kLeaseIntervals * interval;
  }
  // roll() moves the counters to the window of `now` (a clock that went back stays put).
  // A sliding counter's key leased in the window that just ended keeps what is left of its
  // allowance until the next round answers: the previous window's count weighs as much at the
  // start of the next as at the end of its own, so what was free then is free now (deciding on
  // the local share instead would let an instance whose own previous count is small admit
  // what others already used).
  void roll(Micros now, Micros interval) noexcept {
    if (is_bucket(spec)) return;
    const std::int64_t k = floor_div(now, spec.window);
    if (k <= epoch) return;
    const bool counter = spec.algorithm == Algorithm::kSlidingWindowCounter;
    const bool next = k == epoch + 1;
    const bool carry = next && counter && online(now, interval);
    prev_delta = next && counter ? used - reserved : 0;
    allowance = carry ? std::max<std::int64_t>(0, allowance - used) : 0;
    leased = carry;
    epoch = k;
    reserved = used = 0;
    left = -1;
  }
};

struct EventualStore::Shard {
  std::mutex mu;
  std::unordered_map<std::string, Entry, KeyHash, std::equal_to<>> entries;
};

// Item is one key's part of a round, taken from its entry.
struct EventualStore::Item {
  std::size_t shard = 0;
  std::string key;
  LimitSpec spec;
  std::int64_t epoch = 0;
  std::int64_t used = 0;
  std::int64_t reserved = 0;
  std::int64_t prev_delta = 0;
  std::int64_t ask = 0;
  std::int64_t burst = 0;
  std::string redis_base;
  int slot = 0;
};

EventualStore::EventualStore(std::unique_ptr<Store> strong, redis::Batcher& batcher,
                             const Clock& clock, EventualStoreOptions options)
    : strong_(std::move(strong)), batcher_(batcher), clock_(clock), options_(std::move(options)) {
  if (options_.sync_interval.count() <= 0) options_.sync_interval = std::chrono::milliseconds(1);
  if (!(options_.local_share >= 0 && options_.local_share <= 1)) options_.local_share = 0;
  if (options_.instance_id.empty()) {
    std::random_device rd;
    std::uniform_int_distribution<std::uint64_t> d;
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(d(rd)));
    options_.instance_id = buf;
  }
  shards_.reserve(kShards);
  for (std::size_t i = 0; i < kShards; ++i)
    shards_.push_back(std::make_unique<Shard>());
  if (options_.background) thread_ = std::thread([this] { run(); });
}

EventualStore::~EventualStore() {
  if (thread_.joinable()) {
    {
      std::lock_guard lock(stop_mu_);
      stopping_ = true;
    }
    stop_cv_.notify_all();
    thread_.join();
  }
  // Return unused leases and report the last interval's consumption.
  round(/*last=*/true);
}

std::string EventualStore::name() const {
  if (options_.default_consistency != Consistency::kEventual) return strong_->name();
  return strong_->name() + " (eventual, sync every " +
         std::to_string(options_.sync_interval.count()) + " ms)";
}

bool EventualStore::eventual(const Hit& hit) const noexcept {
  if (hit.spec->limit == 0) return false;  // blocks everything: nothing to share
  const Consistency c = hit.spec->consistency == Consistency::kDefault
                            ? options_.default_consistency
                            : hit.spec->consistency;
  return c == Consistency::kEventual;
}

Micros EventualStore::interval_micros() const noexcept {
  return std::chrono::duration_cast<std::chrono::microseconds>(options_.sync_interval).count();
}

double EventualStore::share() const noexcept {
  if (options_.local_share > 0) return options_.local_share;
  return 1.0 / static_cast<double>(std::max<std::size_t>(1, instances_.load()));
}

EventualStoreStats EventualStore::stats() const {
  EventualStoreStats s;
  s.rounds = rounds_.load();
  s.failed_rounds = failed_rounds_.load();
  s.keys_synced = keys_synced_.load();
  s.keys = keys_.load();
  s.instances = instances_.load();
  return s;
}

void EventualStore::run() {
  const Micros interval = interval_micros();
  std::unique_lock lock(stop_mu_);
  while (!stopping_) {
    // Rounds fall on multiples of the interval, so instances with agreeing clocks sync together
    // (and a window that is a multiple of the interval starts with a round).
    const Micros now = clock_.now_micros();
    const Micros next = (floor_div(now, interval) + 1) * interval;
    stop_cv_.wait_for(lock, std::chrono::microseconds(std::max<Micros>(1, next - now)));
    if (stopping_) break;
    lock.unlock();
    sync();
    lock.lock();
  }
}

void EventualStore::apply_async(std::span<const Hit> hits, Micros now, std::span<Verdict> out,
                                ApplyCompletion& done) noexcept {
  for (const Hit& h : hits) {
    if (eventual(h)) return done.applied(apply(hits, now, out));
  }
  strong_->apply_async(hits, now, out, done);
}

StoreStatus EventualStore::apply(std::span<const Hit> hits, Micros now,
                                 std::span<Verdict> out) noexcept {
  // Which hits are decided here; the rest go to the strong store.
  bool any_local = false;
  for (const Hit& h : hits)
    any_local = any_local || eventual(h);
  if (!any_local) return strong_->apply(hits, now, out);

  try {
    const Micros interval = interval_micros();
    const Micros next_round = (floor_div(now, interval) + 1) * interval;
    const double my_share = share();

    std::vector<std::size_t> local;
    std::vector<std::size_t> remote;
    std::vector<std::size_t> shard_of(hits.size(), 0);
    for (std::size_t i = 0; i < hits.size(); ++i) {
      (eventual(hits[i]) ? local : remote).push_back(i);
      shard_of[i] = KeyHash{}(hits[i].key) % kShards;
    }
    std::vector<std::size_t> locked;
    for (std::size_t i : local)
      locked.push_back(shard_of[i]);
    std::sort(locked.begin(), locked.end());
    locked.erase(std::unique(locked.begin(), locked.end()), locked.end());

    // decide_local() decides (and with `commit`, consumes) every local hit under the shards'
    // locks; returns whether every enforced one is allowed. New keys past max_keys move to
    // `remote` (and then nothing consumes: the caller decides again with the strong store).
    auto decide_local = [&](bool commit, bool count_offered) {
      bool moved = false;
      for (std::size_t s : locked)
        shards_[s]->mu.lock();
      bool all = true;
      std::vector<Entry*> entries(hits.size(), nullptr);
      std::vector<char> leased(hits.size(), 0);
      for (std::size_t j = 0; j < local.size();) {
        const std::size_t i = local[j];
        const Hit& h = hits[i];
        auto& map = shards_[shard_of[i]]->entries;
        auto it = map.find(h.key);
        if (it == map.end()) {
          if (keys_.load(std::memory_order_relaxed) >= options_.max_keys) {
            moved = true;
            remote.push_back(i);
            local.erase(local.begin() + static_cast<std::ptrdiff_t>(j));
            continue;
          }
          it = map.emplace(std::string(h.key), Entry{}).first;
          it->second.start(*h.spec, now);
          keys_.fetch_add(1, std::memory_order_relaxed);
        }
        Entry& e = it->second;
        if (!(e.spec == eventual_spec(*h.spec))) e.start(*h.spec, now);  // the rules changed
        e.rescale(my_share);
        e.roll(now, interval);
        entries[i] = &e;
        const std::uint64_t cap = capacity_of(e.spec);
        Verdict& v = out[i];
        if (count_offered) e.offered += h.cost;
        const bool online = e.online(now, interval);
        if (h.cost > cap) {
          v = Verdict{};
          v.allowed = false;
          v.retry_after = kNever;
          v.reset_after = e.local_step(0, now, false).reset_after;
        } else if (online) {
          const std::int64_t avail = std::max<std::int64_t>(0, e.allowance - e.used);
          const auto cost = static_cast<std::int64_t>(h.cost);
          v = Verdict{};
          // As the state stays; a commit below takes the cost off.
          v.allowed = cost <= avail;
          v.remaining = static_cast<std::uint64_t>(avail);
          leased[i] = 1;
          const Micros w = e.spec.window;
          if (is_bucket(e.spec)) {
            v.reset_after = static_cast<Micros>(static_cast<i128>(cap - v.remaining) * w /
                                                static_cast<i128>(e.spec.limit));
          } else {
            v.reset_after = (e.epoch + 1) * w - now;
            if (e.spec.algorithm == Algorithm::kSlidingWindowCounter) v.reset_after += w;
          }
          if (!v.allowed) {
            v.retry_after = next_round - now;
            if (e.left == 0 && e.spec.algorithm == Algorithm::kFixedWindow) {
              v.retry_after = (e.epoch + 1) * w - now;
            }
          }
        } else {
          v = e.local_step(h.cost, now, false);
        }
        if (h.enforce && !v.allowed) all = false;
        ++j;
      }
      if (commit && all && !moved) {
        for (std::size_t i : local) {
          const Hit& h = hits[i];
          Entry& e = *entries[i];
          if (h.cost == 0 || !out[i].allowed) continue;
          e.used += static_cast<std::int64_t>(h.cost);
          e.admitted += h.cost;
          e.idle_rounds = 0;
          const Verdict after = e.local_step(h.cost, now, true);
          if (leased[i]) {
            out[i].remaining -= h.cost;
          } else {
            out[i] = after;
          }
        }
      }
      for (auto it = locked.rbegin(); it != locked.rend(); ++it)
        shards_[*it]->mu.unlock();
      return all;
    };

    if (remote.empty()) {
      decide_local(/*commit=*/true, /*count_offered=*/true);
      if (remote.empty()) return {};
    }
    // Some hits are strong (or past max_keys): check the local ones without consuming, let the
    // strong store decide (and consume) its own, then consume the local ones. If another request
    // takes the local headroom in between, the strong limits have counted a request that is
    // then denied: over-counting, never over-admitting.
    const bool local_ok = decide_local(/*commit=*/false, /*count_offered=*/true);
    std::vector<Hit> strong_hits;
    strong_hits.reserve(remote.size());
    for (std::size_t i : remote) {
      Hit h = hits[i];
      if (!local_ok) h.cost = 0;  // a check only: the request is denied anyway
      strong_hits.push_back(h);
    }
    std::vector<Verdict> strong_out(strong_hits.size());
    StoreStatus status = strong_->apply(strong_hits, now, strong_out);
    if (!status.ok()) return status;
    bool strong_ok = true;
    for (std::size_t j = 0; j < remote.size(); ++j) {
      out[remote[j]] = strong_out[j];
      if (!local_ok) {
        // Report the verdict of the real cost on the unchanged state.
        if (hits[remote[j]].cost > 0 && out[remote[j]].remaining < hits[remote[j]].cost) {
          out[remote[j]].allowed = false;
        }
      }
      if (strong_hits[j].enforce && !strong_out[j].allowed) strong_ok = false;
    }
    if (local_ok && strong_ok && !local.empty()) {
      std::vector<Verdict> saved(out.begin(), out.end());
      decide_local(/*commit=*/true, /*count_offered=*/false);
      for (std::size_t i : remote)
        out[i] = saved[i];
    }
    return {};
  } catch (const std::exception& e) {
    return StoreStatus{StoreStatus::Code::kUnavailable, std::string("eventual store: ") + e.what()};
  }
}

bool EventualStore::sync() {
  return round(/*last=*/false);
}

bool EventualStore::round(bool last) {
  std::lock_guard round(sync_mu_);
  const Micros now = clock_.now_micros();
  const Micros interval = interval_micros();
  const std::string base_prefix = options_.prefix + "e:";

  // 1. Take each key's report: its consumption since the last round, and the lease it asks for.
  std::vector<Item> items;
  for (std::size_t s = 0; s < shards_.size(); ++s) {
    std::lock_guard lock(shards_[s]->mu);
    auto& map = shards_[s]->entries;
    for (auto it = map.begin(); it != map.end();) {
      Entry& e = it->second;
      e.roll(now, interval);
      const std::uint64_t cap = capacity_of(e.spec);
      // The lease asked for: half as much again as the key was asked for here in the last
      // interval, so a demand that grows a little still fits; but while the key is short (Redis
      // had nothing left, or this instance denied some of it) no more than it was asked for in
      // either of the last two intervals, so that no instance holds what others would use.
      const bool short_of_it = e.scarce || e.admitted < e.offered;
      const std::uint64_t want = !short_of_it          ? e.offered + e.offered / 2 + 1
                                 : e.last_offered == 0 ? e.offered
                                                       : std::min(e.offered, e.last_offered);
      const std::int64_t ask = last || e.offered == 0
                                   ? 0
                                   : static_cast<std::int64_t>(std::min<std::uint64_t>(cap, want));
      const bool idle =
          ask == 0 && e.prev_delta == 0 && (e.used == e.reserved || (!last && e.keeps_lease()));
      if (idle) {
        if (++e.idle_rounds >= kIdleRounds && e.local_full_at() <= now) {
          it = map.erase(it);
          keys_.fetch_sub(1, std::memory_order_relaxed);
          continue;
        }
        ++it;
        continue;
      }
      Item item;
      item.shard = s;
      item.key = it->first;
      item.spec = e.spec;
      item.epoch = e.epoch;
      item.used = e.used;
      item.reserved = e.reserved;
      item.prev_delta = e.prev_delta;
      item.ask = ask;
      // Room for a burst (up to as much again) only for an instance that denied some of its
      // demand: one that admitted all of it would hold units it does not use, and a fixed
      // window's key keeps an unused lease between hits (keeps_lease()).
      item.burst = e.admitted < e.offered ? ask : 0;
      items.push_back(std::move(item));
      e.allowance = std::max<std::int64_t>(0, e.allowance - e.used);
      e.used = e.reserved = e.prev_delta = 0;
      e.last_offered = e.offered;
      e.offered = e.admitted = 0;
      ++it;
    }
  }

  // 2. One batch: the heartbeat, then the keys in script calls (per slot on a cluster).
  std::vector<redis::SlotCommand> commands;
  const bool heartbeat =
      !last && (options_.default_consistency == Consistency::kEventual || keys_.load() > 0);
  const std::string members = options_.prefix + "e:{instances}";
  const int members_slot = redis::key_slot(members);
  const std::string now_ms = std::to_string(now / 1000);
  if (heartbeat) {
    const std::string stale_ms =
        std::to_string(now / 1000 - std::max<Micros>(3 * interval / 1000, 1000));
    commands.push_back({members_slot, {"ZADD", members, now_ms, options_.instance_id}});
    commands.push_back({members_slot, {"ZREMRANGEBYSCORE", members, "-inf", "(" + stale_ms}});
    commands.push_back({members_slot, {"ZCARD", members}});
    commands.push_back({members_slot, {"PEXPIRE", members, "60000"}});
  }
  for (Item& item : items) {
    item.redis_base = redis::redis_key(base_prefix, item.key);
    item.slot = options_.cluster ? redis::key_slot(item.redis_base) : 0;
  }
  std::vector<std::size_t> order(items.size());
  for (std::size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return items[a].slot < items[b].slot; });
  struct Call {
    std::vector<std::size_t> items;
  };
  std::vector<Call> calls;
  for (std::size_t i : order) {
    if (calls.empty() || calls.back().items.size() >= kKeysPerCall ||
        items[calls.back().items.front()].slot != items[i].slot) {
      calls.push_back({});
    }
    calls.back().items.push_back(i);
  }
  const std::string grace = std::to_string(options_.expiry_grace.count());
  char share_arg[32];
  std::snprintf(share_arg, sizeof share_arg, "%.6f", share());
  auto build = [&](const Call& call, bool by_sha) {
    redis::SlotCommand c;
    c.slot = items[call.items.front()].slot;
    c.argv.reserve(3 + call.items.size() * 12 + 3);
    c.argv.push_back(by_sha ? "EVALSHA" : "EVAL");
    c.argv.push_back(by_sha ? sync::sync_script_sha() : std::string(sync::kSyncScript));
    c.argv.push_back(std::to_string(call.items.size() * 2));
    for (std::size_t i : call.items) {
      const Item& it = items[i];
      if (is_bucket(it.spec)) {
        c.argv.push_back(it.redis_base + ":b");
        c.argv.push_back(it.redis_base + ":b");
      } else {
        c.argv.push_back(it.redis_base + ":" + std::to_string(it.epoch - 1));
        c.argv.push_back(it.redis_base + ":" + std::to_string(it.epoch));
      }
    }
    c.argv.push_back(grace);
    c.argv.push_back(std::to_string(interval));
    c.argv.push_back(share_arg);
    for (std::size_t i : call.items) {
      const Item& it = items[i];
      c.argv.push_back(std::to_string(static_cast<int>(it.spec.algorithm)));
      c.argv.push_back(std::to_string(it.spec.limit));
      c.argv.push_back(std::to_string(it.spec.window));
      c.argv.push_back(std::to_string(capacity_of(it.spec)));
      c.argv.push_back(std::to_string(now));
      c.argv.push_back(std::to_string(it.epoch));
      c.argv.push_back(std::to_string(it.prev_delta));
      c.argv.push_back(std::to_string(it.used - it.reserved));
      c.argv.push_back(std::to_string(it.ask));
      c.argv.push_back(std::to_string(it.burst));
    }
    return c;
  };
  const std::size_t first_call = commands.size();
  for (const Call& call : calls)
    commands.push_back(build(call, true));
  if (commands.empty()) return true;

  std::vector<redis::CommandResult> results = batcher_.run(commands);
  // A Redis that lost its script cache (restart, SCRIPT FLUSH) gets the script text once.
  std::vector<std::size_t> again;
  std::vector<redis::SlotCommand> retry;
  for (std::size_t c = 0; c < calls.size(); ++c) {
    const redis::CommandResult& r = results[first_call + c];
    if (r.status.ok() && redis::is_noscript(r.reply)) {
      again.push_back(c);
      retry.push_back(build(calls[c], false));
    }
  }
  if (!retry.empty()) {
    std::vector<redis::CommandResult> rs = batcher_.run(retry);
    for (std::size_t j = 0; j < again.size(); ++j)
      results[first_call + again[j]] = std::move(rs[j]);
  }

  bool all_ok = true;
  if (heartbeat) {
    const redis::CommandResult& card = results[2];
    if (card.status.ok() && card.reply.type == redis::Reply::Type::kInteger &&
        card.reply.integer > 0) {
      instances_.store(static_cast<std::size_t>(card.reply.integer));
    } else {
      all_ok = false;
    }
  }

  // 3. Install each key's lease, or take its report back to send again.
  const Micros answered = clock_.now_micros();
  for (std::size_t c = 0; c < calls.size(); ++c) {
    const redis::CommandResult& r = results[first_call + c];
    const bool replied = r.status.ok() && r.reply.type == redis::Reply::Type::kArray &&
                         r.reply.elements.size() == calls[c].items.size() * 2;
    // A report that did not arrive is sent again next round. One whose reply timed out may have
    // run too (a paused Redis runs it on waking): it then counts twice, which only ever admits
    // less, where dropping it could admit more.
    if (!replied) all_ok = false;
    for (std::size_t j = 0; j < calls[c].items.size(); ++j) {
      const Item& item = items[calls[c].items[j]];
      std::lock_guard lock(shards_[item.shard]->mu);
      auto found = shards_[item.shard]->entries.find(item.key);
      if (found == shards_[item.shard]->entries.end()) continue;
      Entry& e = found->second;
      if (!(e.spec == item.spec)) continue;  // the rules changed meanwhile
      const bool same_window = e.epoch == item.epoch;
      const bool sliding = e.spec.algorithm == Algorithm::kSlidingWindowCounter;
      if (replied) {
        const std::int64_t grant = r.reply.elements[2 * j].integer;
        const std::int64_t left = r.reply.elements[2 * j + 1].integer;
        if (same_window) {
          e.reserved += grant;
          e.allowance = grant;
          e.left = left;
          e.scarce = left <= 0;
          e.leased = true;
          e.leased_at = answered;
        } else if (sliding && e.epoch == item.epoch + 1) {
          e.prev_delta -= grant;  // the window ended in flight: return its lease
        }
        keys_synced_.fetch_add(1, std::memory_order_relaxed);
      } else {
        if (same_window) {
          e.used += item.used;
          e.reserved += item.reserved;
          e.prev_delta += item.prev_delta;
          e.allowance += item.used;
        } else if (sliding && e.epoch == item.epoch + 1) {
          e.prev_delta += item.used - item.reserved;
        }
      }
    }
  }
  if (!items.empty() || heartbeat) {
    rounds_.fetch_add(1, std::memory_order_relaxed);
    if (!all_ok) failed_rounds_.fetch_add(1, std::memory_order_relaxed);
  }
  return all_ok;
}

}  // namespace sluice
