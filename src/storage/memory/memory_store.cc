#include "sluice/memory_store.h"

#include <sys/mman.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <thread>
#include <type_traits>
#include <vector>

namespace sluice {

namespace {

__extension__ typedef unsigned __int128 u128;
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

struct alignas(64) Entry {
  std::uint64_t h1;  // the key's 128-bit hash; both 0 marks an empty slot
  std::uint64_t h2;
  Micros full_at;       // from then on the state equals a fresh one and may be dropped
  std::uint32_t stamp;  // the shard's access count at the last use (for LRU)
  Algorithm algorithm;
  bool used;
  alignas(8) unsigned char state[kStateBytes];
};
static_assert(sizeof(Entry) == 64, "an entry is one cache line");

// Slot tables of 2 MiB and more start on a 2 MiB boundary, and their whole 2 MiB stretches are
// offered to the kernel for transparent huge pages (used where THP is "madvise" or "always").
// Over millions of keys each decision reads a random slot among gigabytes of tables; with 4 KiB
// pages its address translation misses the TLB as well as the cache (docs/benchmarks.md,
// "Scaling with the number of keys"). The last partial stretch keeps small pages, so no memory
// is committed past the table.
constexpr std::size_t kHugePage = std::size_t{2} << 20;

template <class T>
struct SlotAllocator {
  using value_type = T;
  SlotAllocator() = default;
  template <class U>
  SlotAllocator(const SlotAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < kHugePage) return std::allocator<T>().allocate(n);
    void* p = std::aligned_alloc(kHugePage, (bytes + kHugePage - 1) / kHugePage * kHugePage);
    if (p == nullptr) throw std::bad_alloc();
    madvise(p, bytes / kHugePage * kHugePage, MADV_HUGEPAGE);
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (n * sizeof(T) < kHugePage) {
      std::allocator<T>().deallocate(p, n);
    } else {
      std::free(p);
    }
  }
  friend bool operator==(const SlotAllocator&, const SlotAllocator&) noexcept { return true; }
};
using Slots = std::vector<Entry, SlotAllocator<Entry>>;

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

// home_slot() maps a hash onto a table of `size` slots without a power-of-two size (Lemire's
// multiply-shift).
std::size_t home_slot(std::uint64_t h2, std::size_t size) noexcept {
  return static_cast<std::size_t>((u128(h2) * size) >> 64);
}

}  // namespace

struct MemoryStore::Located {
  std::uint64_t h1;
  std::uint64_t h2;
  std::size_t shard;
};

// A shard is one open-addressing table (linear probing) whose slots are the entries themselves,
// so finding a key's state touches one cache line. The table grows by a quarter at a time,
// keeping the load between 0.6 and 0.75, and once three quarters of the shard's capacity are in
// use, straight to its final size, 4/3 of the capacity.
//
// Eviction approximates LRU as Redis does: it samples a few entries and drops one whose state
// is full again (nothing is lost), or else the least recently used of the sample.
struct alignas(64) MemoryStore::Shard {
  static constexpr int kSamples = 8;

  SpinLock lock;
  std::uint32_t capacity = 0;
  std::uint32_t count = 0;
  std::uint32_t tick = 0;                     // accesses so far: the LRU clock
  std::uint64_t rng = 0x9E3779B97F4A7C15ull;  // xorshift state for eviction samples
  Slots slots;
  // Where `slots` is and how many it holds, for prefetch() to read without the lock. Written
  // under the lock whenever the table moves; read relaxed, so a reader may see a stale or
  // mismatched pair: prefetch() only prefetches through it (never loads), and a prefetch of
  // freed or unmapped memory does nothing.
  std::atomic<std::uintptr_t> table_address{0};
  std::atomic<std::size_t> table_size{0};

  ~Shard() {
    for (Entry& e : slots) {
      if (e.used && e.algorithm == Algorithm::kSlidingWindowLog) delete log_of(e);
    }
  }

  std::size_t max_slots() const noexcept { return std::size_t{capacity} * 4 / 3 + 8; }
  std::size_t home(std::uint64_t h2) const noexcept { return home_slot(h2, slots.size()); }
  std::size_t next(std::size_t i) const noexcept { return i + 1 == slots.size() ? 0 : i + 1; }
  // distance() is how far `to` lies after `from`, wrapping around the table.
  std::size_t distance(std::size_t from, std::size_t to) const noexcept {
    return to >= from ? to - from : to + slots.size() - from;
  }

  // find() returns the key's slot, or npos.
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
  std::size_t find(std::uint64_t h1, std::uint64_t h2) const noexcept {
    if (slots.empty()) return npos;
    for (std::size_t i = home(h2);; i = next(i)) {
      const Entry& e = slots[i];
      if (!e.used) return npos;
      if (e.h1 == h1 && e.h2 == h2) return i;
    }
  }

  // place() puts an entry into the first free slot from its home; returns the slot.
  std::size_t place(const Entry& e) noexcept {
    std::size_t i = home(e.h2);
    while (slots[i].used)
      i = next(i);
    slots[i] = e;
    return i;
  }

  void grow() {
    // Once three quarters of its capacity are in use, a shard is at its bound for good (it
    // reclaims and evicts from then on): it takes its final table at once, so that it rehashes
    // once more instead of a few times, and its memory stops moving.
    const bool at_bound = std::uint64_t{count} * 4 >= std::uint64_t{capacity} * 3;
    const std::size_t size =
        at_bound
            ? max_slots()
            : std::min(std::max<std::size_t>(slots.size() + slots.size() / 4, 16), max_slots());
    Slots old(size);
    old.swap(slots);
    table_address.store(reinterpret_cast<std::uintptr_t>(slots.data()), std::memory_order_relaxed);
    table_size.store(slots.size(), std::memory_order_relaxed);
    for (const Entry& e : old) {
      if (e.used) place(e);
    }
  }

  // remove() drops the entry at slot i. Backward-shift deletion keeps every probe chain
  // unbroken without tombstones.
  void remove(std::size_t i) noexcept {
    if (slots[i].algorithm == Algorithm::kSlidingWindowLog) delete log_of(slots[i]);
    slots[i].used = false;
    --count;
    for (std::size_t j = next(i); slots[j].used; j = next(j)) {
      if (distance(home(slots[j].h2), j) >= distance(i, j)) {
        slots[i] = slots[j];
        slots[j].used = false;
        i = j;
      }
    }
  }

  std::uint64_t random() noexcept {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
  }
  // sample() returns a random used slot (the table is never empty when called).
  std::size_t sample() noexcept {
    std::size_t i = static_cast<std::size_t>(random() % slots.size());
    while (!slots[i].used)
      i = next(i);
    return i;
  }

  // evict_one() makes room in a full shard: among a few sampled entries, one whose state is
  // full again goes first (it loses nothing); otherwise the least recently used.
  void evict_one(Micros now) noexcept {
    std::size_t victim = sample();
    for (int k = 1; k < kSamples && slots[victim].full_at > now; ++k) {
      const std::size_t i = sample();
      if (slots[i].full_at <= now || tick - slots[i].stamp > tick - slots[victim].stamp) {
        victim = i;
      }
    }
    remove(victim);
  }

  // insert() tracks a new key with a fresh state, making room first if the shard is full.
  // Returns its slot.
  std::size_t insert(std::uint64_t h1, std::uint64_t h2, Algorithm a, Micros now) {
    if (count >= capacity) {
      evict_one(now);
    } else if (std::uint64_t{count} * 4 >= std::uint64_t{capacity} * 3) {
      // Three quarters full: reclaim a sampled state if it is full again, one per insert, so
      // idle keys give their memory back before anything live has to be evicted. Below that,
      // states stay (re-inserting a key costs more than keeping it).
      const std::size_t i = sample();
      if (slots[i].full_at <= now) remove(i);
    }
    if ((std::size_t{count} + 1) * 4 > slots.size() * 3 && slots.size() < max_slots()) grow();
    Entry e{};
    e.h1 = h1;
    e.h2 = h2;
    e.used = true;
    e.algorithm = Algorithm::kFixedWindow;
    reset_state(e, a);
    e.stamp = ++tick;
    ++count;
    return place(e);
  }

  // entry() returns the key's entry ready for algorithm `a`, inserting it if `create`; the
  // pointer is valid until the next insert or remove in this shard.
  Entry* entry(std::uint64_t h1, std::uint64_t h2, Algorithm a, Micros now, bool create) {
    std::size_t i = find(h1, h2);
    if (i == npos) {
      if (!create) return nullptr;
      i = insert(h1, h2, a, now);
    }
    Entry& e = slots[i];
    e.stamp = ++tick;
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
    shards_[i].capacity = static_cast<std::uint32_t>(
        std::min<std::size_t>(max_keys / shards, std::size_t{0xFFFF'FFFFu} / 2));
  }
  std::random_device rd;
  seed_ = (std::uint64_t{rd()} << 32) ^ rd();
}

MemoryStore::~MemoryStore() = default;

MemoryStore::Located MemoryStore::locate(std::string_view key) const noexcept {
  const XXH128_hash_t hash = XXH3_128bits_withSeed(key.data(), key.size(), seed_);
  const std::size_t shard =
      shard_count_ == 1 ? 0 : static_cast<std::size_t>(hash.high64 >> shard_shift_);
  return Located{hash.high64, hash.low64, shard};
}

void MemoryStore::prefetch(std::span<const Hit> hits) noexcept {
  for (const Hit& h : hits) {
    const Located at = locate(h.key);
    const Shard& s = shards_[at.shard];
    const std::size_t size = s.table_size.load(std::memory_order_relaxed);
    if (size == 0) continue;
    // Integer arithmetic: with a stale pair the address may lie outside any live table, which a
    // prefetch tolerates and pointer arithmetic would not.
    const std::uintptr_t slot =
        s.table_address.load(std::memory_order_relaxed) + home_slot(at.h2, size) * sizeof(Entry);
    __builtin_prefetch(reinterpret_cast<const void*>(slot), 0, 3);
    __builtin_prefetch(reinterpret_cast<const void*>(slot + sizeof(Entry)), 0, 3);
  }
}

StoreStatus MemoryStore::apply(std::span<const Hit> hits, Micros now,
                               std::span<Verdict> out) noexcept {
  const std::size_t n = hits.size();
  if (n == 0) return {};

  if (n == 1) {
    // The common case: one limit, one shard, one step.
    const Hit& h = hits[0];
    const Located at = locate(h.key);
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
    located[i] = locate(hits[i].key);
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
  for (std::size_t k = 0; k < shard_count_; ++k) {
    Shard& s = shards_[k];
    std::lock_guard guard(s.lock);
    // Removing shifts later entries back, so a slot is examined again after a removal.
    for (std::size_t i = 0; i < s.slots.size();) {
      if (s.slots[i].used && s.slots[i].full_at <= now) {
        s.remove(i);
        ++dropped;
      } else {
        ++i;
      }
    }
  }
  return dropped;
}

std::size_t MemoryStore::memory_bytes() const noexcept {
  std::size_t bytes = sizeof(Shard) * shard_count_;
  for (std::size_t k = 0; k < shard_count_; ++k) {
    Shard& s = shards_[k];
    std::lock_guard guard(s.lock);
    bytes += s.slots.capacity() * sizeof(Entry);
    for (const Entry& e : s.slots) {
      if (e.used && e.algorithm == Algorithm::kSlidingWindowLog) {
        bytes += sizeof(SlidingLogState) + log_of(e)->size() * sizeof(SlidingLogState::Hit);
      }
    }
  }
  return bytes;
}

}  // namespace sluice
