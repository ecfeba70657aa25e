#include "sluice/memory_store.h"

#include <xxhash.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstring>
#include <random>
#include <thread>
#include <type_traits>
#include <vector>

namespace sluice {

namespace {

constexpr std::uint32_t kNil = 0xFFFF'FFFFu;
constexpr std::uint32_t kChunkBits = 10;  // 1,024 entries (64 KiB) per chunk
constexpr std::uint32_t kChunkSize = 1u << kChunkBits;
constexpr std::size_t kMinKeysPerShard = 1024;

// A test-and-test-and-set lock: uncontended cost is one atomic exchange. Yields after a short
// spin so that a descheduled holder on a busy machine gets the core back.
class SpinLock {
 public:
  void lock() noexcept {
    for (int spins = 0;; ++spins) {
      if (!locked_.exchange(true, std::memory_order_acquire)) return;
      while (locked_.load(std::memory_order_relaxed)) {
        if (++spins > 64) {
          std::this_thread::yield();
        } else {
#if defined(__x86_64__)
          __builtin_ia32_pause();
#endif
        }
      }
    }
  }
  void unlock() noexcept {
    locked_.store(false, std::memory_order_release);
  }

 private:
  std::atomic<bool> locked_{false};
};

// The state bytes of an entry hold one of the POD states, or a pointer to a sliding log.
constexpr std::size_t kStateBytes = 24;
static_assert(sizeof(FixedWindowState) <= kStateBytes);
static_assert(sizeof(SlidingCounterState) <= kStateBytes);
static_assert(sizeof(TokenBucketState) <= kStateBytes);
static_assert(std::is_trivially_copyable_v<TokenBucketState>);

struct Entry {
  std::uint64_t h1;  // the key's 128-bit hash
  std::uint64_t h2;
  Micros full_at;       // from then on the state equals a fresh one and may be dropped
  std::uint32_t prev;   // LRU list, towards the most recently used
  std::uint32_t next;   // LRU list, towards the least recently used; the free list too
  std::uint32_t stamp;  // the shard's insert count when last moved to the LRU head
  Algorithm algorithm;
  alignas(8) unsigned char state[kStateBytes];
};
static_assert(sizeof(Entry) == 64, "an entry is one cache line");

template <class S>
S load_state(const Entry& e) {
  S s;
  std::memcpy(&s, e.state, sizeof(S));
  return s;
}
template <class S>
void store_state(Entry& e, const S& s) {
  std::memcpy(e.state, &s, sizeof(S));
}
SlidingLogState* log_of(const Entry& e) {
  SlidingLogState* p;
  std::memcpy(&p, e.state, sizeof(p));
  return p;
}

void reset_state(Entry& e, Algorithm a) {
  if (e.algorithm == Algorithm::kSlidingWindowLog) delete log_of(e);
  e.algorithm = a;
  switch (a) {
    case Algorithm::kFixedWindow:
      store_state(e, FixedWindowState{});
      break;
    case Algorithm::kSlidingWindowCounter:
      store_state(e, SlidingCounterState{});
      break;
    case Algorithm::kTokenBucket:
      store_state(e, TokenBucketState{});
      break;
    case Algorithm::kSlidingWindowLog: {
      SlidingLogState* p = new SlidingLogState();
      std::memcpy(e.state, &p, sizeof(p));
      break;
    }
  }
  e.full_at = kFresh;
}

// Runs the algorithm's step on the entry's state (or on a fresh state when e is null).
Verdict run_step(Entry* e, const LimitSpec& spec, std::uint64_t cost, Micros now, bool commit) {
  auto run = [&](auto fresh) -> Verdict {
    using S = decltype(fresh);
    S s = e != nullptr ? load_state<S>(*e) : fresh;
    Verdict v = step(s, spec, cost, now, commit);
    if (e != nullptr && commit && v.allowed && cost > 0) {
      store_state(*e, s);
      e->full_at = full_at(s, spec);
    }
    return v;
  };
  switch (spec.algorithm) {
    case Algorithm::kFixedWindow:
      return run(FixedWindowState{});
    case Algorithm::kSlidingWindowCounter:
      return run(SlidingCounterState{});
    case Algorithm::kTokenBucket:
      return run(TokenBucketState{});
    case Algorithm::kSlidingWindowLog: {
      if (e == nullptr) {
        SlidingLogState fresh;
        return step(fresh, spec, cost, now, false);
      }
      SlidingLogState* log = log_of(*e);
      Verdict v = step(*log, spec, cost, now, commit);
      if (commit && v.allowed && cost > 0) e->full_at = full_at(*log, spec);
      return v;
    }
  }
  return Verdict{};
}

}  // namespace

struct MemoryStore::Located {
  std::uint64_t h1;
  std::uint64_t h2;
  std::size_t shard;
};

struct alignas(64) MemoryStore::Shard {
  SpinLock lock;
  std::uint32_t capacity = 0;
  std::uint32_t count = 0;
  std::uint32_t allocated = 0;  // entries handed out from chunks (live or free)
  std::uint32_t free_head = kNil;
  std::uint32_t lru_head = kNil;  // most recently used
  std::uint32_t lru_tail = kNil;  // least recently used
  std::uint32_t tick = 0;         // inserts so far
  std::vector<std::unique_ptr<Entry[]>> chunks;
  // Open addressing, linear probing. A slot is (entry index + 1) << 32 | low 32 bits of h2; 0 is
  // empty. The home slot is h2 & mask, so a slot's own bits give its home (mask < 2^32).
  std::vector<std::uint64_t> table;

  ~Shard() {
    // Live entries own their sliding logs; free entries hold none.
    for (std::uint32_t i = lru_head; i != kNil;) {
      Entry& e = at(i);
      if (e.algorithm == Algorithm::kSlidingWindowLog) delete log_of(e);
      i = e.next;
    }
  }

  Entry& at(std::uint32_t i) noexcept { return chunks[i >> kChunkBits][i & (kChunkSize - 1)]; }
  std::uint64_t mask() const noexcept { return table.size() - 1; }

  // find() returns the entry index for the hash, or kNil.
  std::uint32_t find(std::uint64_t h1, std::uint64_t h2) noexcept {
    if (table.empty()) return kNil;
    const std::uint64_t m = mask();
    const auto tag = static_cast<std::uint32_t>(h2);
    for (std::uint64_t pos = h2 & m;; pos = (pos + 1) & m) {
      const std::uint64_t slot = table[pos];
      if (slot == 0) return kNil;
      if (static_cast<std::uint32_t>(slot) == tag) {
        const auto idx = static_cast<std::uint32_t>((slot >> 32) - 1);
        const Entry& e = at(idx);
        if (e.h1 == h1 && e.h2 == h2) return idx;
      }
    }
  }

  void table_insert(std::uint32_t idx, std::uint64_t h2) noexcept {
    const std::uint64_t m = mask();
    std::uint64_t pos = h2 & m;
    while (table[pos] != 0)
      pos = (pos + 1) & m;
    table[pos] = (std::uint64_t{idx} + 1) << 32 | static_cast<std::uint32_t>(h2);
  }

  void table_erase(std::uint32_t idx, std::uint64_t h2) noexcept {
    const std::uint64_t m = mask();
    const std::uint64_t want = (std::uint64_t{idx} + 1) << 32 | static_cast<std::uint32_t>(h2);
    std::uint64_t pos = h2 & m;
    while (table[pos] != want)
      pos = (pos + 1) & m;
    // Backward-shift deletion keeps every probe chain unbroken without tombstones.
    table[pos] = 0;
    for (std::uint64_t next = (pos + 1) & m; table[next] != 0; next = (next + 1) & m) {
      const std::uint64_t home = static_cast<std::uint32_t>(table[next]) & m;
      if (((next - home) & m) >= ((next - pos) & m)) {
        table[pos] = table[next];
        table[next] = 0;
        pos = next;
      }
    }
  }

  void grow_table() {
    std::vector<std::uint64_t> old = std::move(table);
    table.assign(old.empty() ? 16 : old.size() * 2, 0);
    for (std::uint64_t slot : old) {
      if (slot == 0) continue;
      const std::uint64_t m = mask();
      std::uint64_t pos = static_cast<std::uint32_t>(slot) & m;
      while (table[pos] != 0)
        pos = (pos + 1) & m;
      table[pos] = slot;
    }
  }

  void lru_unlink(std::uint32_t idx) noexcept {
    Entry& e = at(idx);
    if (e.prev != kNil)
      at(e.prev).next = e.next;
    else
      lru_head = e.next;
    if (e.next != kNil)
      at(e.next).prev = e.prev;
    else
      lru_tail = e.prev;
  }
  void lru_push_front(std::uint32_t idx) noexcept {
    Entry& e = at(idx);
    e.prev = kNil;
    e.next = lru_head;
    if (lru_head != kNil)
      at(lru_head).prev = idx;
    else
      lru_tail = idx;
    lru_head = idx;
    e.stamp = tick;
  }
  // touch() marks a use. Moving to the LRU head is throttled to once per capacity/8 inserts, so
  // a hot key costs no list writes, while eviction order stays within 1/8 of exact LRU.
  void touch(std::uint32_t idx) noexcept {
    Entry& e = at(idx);
    if (tick - e.stamp > capacity / 8 && lru_head != idx) {
      lru_unlink(idx);
      lru_push_front(idx);
    }
  }

  void remove(std::uint32_t idx) noexcept {
    Entry& e = at(idx);
    table_erase(idx, e.h2);
    lru_unlink(idx);
    if (e.algorithm == Algorithm::kSlidingWindowLog) delete log_of(e);
    e.algorithm = Algorithm::kFixedWindow;
    e.next = free_head;
    free_head = idx;
    --count;
  }

  // evict_one() makes room in a full shard: a state that is full again among the coldest few
  // goes first (it loses nothing); otherwise the least recently used one.
  void evict_one(Micros now) noexcept {
    std::uint32_t idx = lru_tail;
    for (int i = 0; i < 16 && idx != kNil; ++i, idx = at(idx).prev) {
      if (at(idx).full_at <= now) {
        remove(idx);
        return;
      }
    }
    remove(lru_tail);
  }

  // insert() tracks a new key with a fresh state, making room first if the shard is full.
  std::uint32_t insert(std::uint64_t h1, std::uint64_t h2, Algorithm a, Micros now) {
    if (count >= capacity) {
      evict_one(now);
    } else if (std::uint64_t{count} * 4 >= std::uint64_t{capacity} * 3 && lru_tail != kNil &&
               at(lru_tail).full_at <= now) {
      // Three quarters full: reclaim the coldest state if it is full again, one per insert, so
      // idle keys give their memory back before anything live has to be evicted. Below that,
      // states stay (re-inserting a key costs more than keeping it).
      remove(lru_tail);
    }
    if ((std::uint64_t{count} + 1) * 4 > table.size() * 3) grow_table();

    std::uint32_t idx;
    if (free_head != kNil) {
      idx = free_head;
      free_head = at(idx).next;
    } else {
      if ((allocated >> kChunkBits) >= chunks.size()) {
        chunks.push_back(std::make_unique<Entry[]>(kChunkSize));
      }
      idx = allocated++;
    }
    Entry& e = at(idx);
    e.h1 = h1;
    e.h2 = h2;
    e.algorithm = Algorithm::kFixedWindow;
    reset_state(e, a);
    ++tick;
    lru_push_front(idx);
    table_insert(idx, h2);
    ++count;
    return idx;
  }

  // entry() returns the key's entry ready for algorithm `a`, inserting it if `create`.
  Entry* entry(std::uint64_t h1, std::uint64_t h2, Algorithm a, Micros now, bool create) {
    std::uint32_t idx = find(h1, h2);
    if (idx == kNil) {
      if (!create) return nullptr;
      idx = insert(h1, h2, a, now);
    } else {
      touch(idx);
    }
    Entry& e = at(idx);
    if (e.algorithm != a) reset_state(e, a);  // the rule changed algorithm: start fresh
    return &e;
  }
};

MemoryStore::MemoryStore(MemoryStoreOptions options) {
  const std::size_t max_keys = std::max<std::size_t>(options.max_keys, 1);
  std::size_t shards = std::bit_floor(std::max<std::size_t>(options.shards, 1));
  while (shards > 1 && max_keys / shards < kMinKeysPerShard)
    shards /= 2;
  shard_count_ = shards;
  shard_shift_ = 64 - static_cast<unsigned>(std::countr_zero(shards));
  shards_ = std::make_unique<Shard[]>(shards);
  for (std::size_t i = 0; i < shards; ++i) {
    shards_[i].capacity =
        static_cast<std::uint32_t>(std::min<std::size_t>(max_keys / shards, std::size_t{kNil} - 1));
  }
  std::random_device rd;
  seed_ = (std::uint64_t{rd()} << 32) ^ rd();
}

MemoryStore::~MemoryStore() = default;

StoreStatus MemoryStore::apply(std::span<const Hit> hits, Micros now,
                               std::span<Verdict> out) noexcept {
  const std::size_t n = hits.size();
  if (n == 0) return {};
  auto locate = [&](const Hit& h) {
    const XXH128_hash_t hash = XXH3_128bits_withSeed(h.key.data(), h.key.size(), seed_);
    const std::size_t shard =
        shard_count_ == 1 ? 0 : static_cast<std::size_t>(hash.high64 >> shard_shift_);
    return Located{hash.high64, hash.low64, shard};
  };

  if (n == 1) {
    // The common case: one limit, one shard, one step.
    const Hit& h = hits[0];
    const Located at = locate(h);
    Shard& s = shards_[at.shard];
    std::lock_guard guard(s.lock);
    Entry* e = s.entry(at.h1, at.h2, h.spec->algorithm, now, false);
    if (e == nullptr) {
      out[0] = run_step(nullptr, *h.spec, h.cost, now, false);
      if (out[0].allowed && h.cost > 0) {
        e = s.entry(at.h1, at.h2, h.spec->algorithm, now, true);
        out[0] = run_step(e, *h.spec, h.cost, now, true);
      }
    } else {
      out[0] = run_step(e, *h.spec, h.cost, now, true);
    }
    return {};
  }

  // Several limits: lock every shard involved, in index order, then decide all-or-nothing.
  std::vector<Located> located(n);
  std::vector<std::size_t> order;
  order.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    located[i] = locate(hits[i]);
    order.push_back(located[i].shard);
  }
  std::sort(order.begin(), order.end());
  order.erase(std::unique(order.begin(), order.end()), order.end());
  for (std::size_t s : order)
    shards_[s].lock.lock();

  bool all_allowed = true;
  for (std::size_t i = 0; i < n; ++i) {
    const Hit& h = hits[i];
    Entry* e = shards_[located[i].shard].entry(located[i].h1, located[i].h2, h.spec->algorithm, now,
                                               false);
    out[i] = run_step(e, *h.spec, h.cost, now, false);
    if (h.enforce && !out[i].allowed) all_allowed = false;
  }
  if (all_allowed) {
    for (std::size_t i = 0; i < n; ++i) {
      const Hit& h = hits[i];
      if (!out[i].allowed || h.cost == 0) continue;
      Entry* e = shards_[located[i].shard].entry(located[i].h1, located[i].h2, h.spec->algorithm,
                                                 now, true);
      out[i] = run_step(e, *h.spec, h.cost, now, true);
    }
  }

  for (auto it = order.rbegin(); it != order.rend(); ++it)
    shards_[*it].lock.unlock();
  return {};
}

std::size_t MemoryStore::size() const noexcept {
  std::size_t total = 0;
  for (std::size_t i = 0; i < shard_count_; ++i) {
    std::lock_guard guard(shards_[i].lock);
    total += shards_[i].count;
  }
  return total;
}

std::size_t MemoryStore::capacity() const noexcept {
  return static_cast<std::size_t>(shards_[0].capacity) * shard_count_;
}

std::size_t MemoryStore::reclaim(Micros now) noexcept {
  std::size_t dropped = 0;
  for (std::size_t i = 0; i < shard_count_; ++i) {
    Shard& s = shards_[i];
    std::lock_guard guard(s.lock);
    for (std::uint32_t idx = s.lru_head; idx != kNil;) {
      const std::uint32_t next = s.at(idx).next;
      if (s.at(idx).full_at <= now) {
        s.remove(idx);
        ++dropped;
      }
      idx = next;
    }
  }
  return dropped;
}

std::size_t MemoryStore::memory_bytes() const noexcept {
  std::size_t bytes = sizeof(Shard) * shard_count_;
  for (std::size_t i = 0; i < shard_count_; ++i) {
    Shard& s = shards_[i];
    std::lock_guard guard(s.lock);
    bytes += s.chunks.size() * kChunkSize * sizeof(Entry) + s.table.size() * sizeof(std::uint64_t);
    for (std::uint32_t idx = s.lru_head; idx != kNil; idx = s.at(idx).next) {
      if (s.at(idx).algorithm == Algorithm::kSlidingWindowLog) {
        bytes += sizeof(SlidingLogState) + log_of(s.at(idx))->size() * sizeof(SlidingLogState::Hit);
      }
    }
  }
  return bytes;
}

}  // namespace sluice
