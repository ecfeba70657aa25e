// The memory store's own properties: bounded, reclaiming, LRU, and safe under threads.
#include "sluice/memory_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace sluice {
namespace {

constexpr Micros kStart = seconds_to_micros(1'700'000'000);

Verdict Apply(Store& store, const std::string& key, const LimitSpec& spec, Micros now,
              std::uint64_t cost = 1) {
  Hit hit{key, &spec, cost, true};
  Verdict v;
  EXPECT_TRUE(store.apply(std::span<const Hit>(&hit, 1), now, std::span<Verdict>(&v, 1)).ok());
  return v;
}

const LimitSpec kMinute{Algorithm::kTokenBucket, 10, 60'000'000, 0};

TEST(MemoryStore, TenTimesMaxKeysLeavesAtMostMaxKeys) {
  for (std::size_t shards : {1u, 4u, 64u}) {
    MemoryStore store({.max_keys = 5000, .shards = shards});
    for (int i = 0; i < 50'000; ++i)
      Apply(store, "key-" + std::to_string(i), kMinute, kStart);
    EXPECT_LE(store.size(), 5000u) << shards << " shards";
    EXPECT_GE(store.size(), 4000u) << "the store should stay close to full";
  }
}

TEST(MemoryStore, DeniedAndZeroCostHitsOnNewKeysTrackNothing) {
  MemoryStore store({.max_keys = 100});
  const LimitSpec zero{Algorithm::kFixedWindow, 0, 1'000'000, 0};
  for (int i = 0; i < 50; ++i) {
    Apply(store, "denied-" + std::to_string(i), zero, kStart);
    Apply(store, "check-" + std::to_string(i), kMinute, kStart, 0);
  }
  EXPECT_EQ(store.size(), 0u);
}

TEST(MemoryStore, ExpiredStatesAreReclaimed) {
  MemoryStore store({.max_keys = 1000, .shards = 1});
  const LimitSpec second{Algorithm::kFixedWindow, 5, 1'000'000, 0};
  for (int i = 0; i < 500; ++i)
    Apply(store, "old-" + std::to_string(i), second, kStart);
  EXPECT_EQ(store.size(), 500u);
  // Nothing is full again inside the window...
  EXPECT_EQ(store.reclaim(kStart + 999'999), 0u);
  // ...and everything is after it.
  EXPECT_EQ(store.reclaim(kStart + 1'000'000), 500u);
  EXPECT_EQ(store.size(), 0u);

  // Past three quarters full, new keys reclaim cold states that are full again as they arrive,
  // without an explicit sweep.
  for (int i = 0; i < 800; ++i)
    Apply(store, "old-" + std::to_string(i), second, kStart);
  for (int i = 0; i < 200; ++i) {
    Apply(store, "new-" + std::to_string(i), second, kStart + 2'000'000);
  }
  // Each insert samples one state and drops it if it is full again: most of the 200 new keys
  // take the place of an old one (the sample sometimes lands on a new, live key). Without
  // reclaiming, the store would hold 1,000.
  EXPECT_LE(store.size(), 850u);
  EXPECT_GE(store.size(), 800u);

  // When full, a state that is full again goes before a live one, even if used less recently.
  MemoryStore full({.max_keys = 1000, .shards = 1});
  for (int i = 0; i < 10; ++i)
    Apply(full, "live-" + std::to_string(i), kMinute, kStart);
  for (int i = 0; i < 990; ++i)
    Apply(full, "short-" + std::to_string(i), second, kStart);
  for (int i = 0; i < 990; ++i)
    Apply(full, "short-" + std::to_string(i), second, kStart + 1'500'000);
  Apply(full, "newcomer", second, kStart + 2'600'000);
  EXPECT_EQ(full.size(), 1000u);
  EXPECT_EQ(Apply(full, "live-0", kMinute, kStart + 2'600'000, 0).remaining, 9u);
}

TEST(MemoryStore, LeastRecentlyUsedKeysGoFirst) {
  MemoryStore store({.max_keys = 1000, .shards = 1});
  for (int i = 0; i < 1000; ++i)
    Apply(store, "k" + std::to_string(i), kMinute, kStart);
  // Use half of the keys again, then add 100 new ones: the evicted keys come (almost) only from
  // the half not used since. Eviction samples 8 keys and drops the least recently used.
  for (int i = 0; i < 1000; i += 2)
    Apply(store, "k" + std::to_string(i), kMinute, kStart);
  Apply(store, "k0", kMinute, kStart);  // the most recently used key of all
  for (int i = 0; i < 100; ++i)
    Apply(store, "new" + std::to_string(i), kMinute, kStart);
  EXPECT_EQ(store.size(), 1000u);
  int evicted_used = 0, evicted_idle = 0;
  for (int i = 0; i < 1000; ++i) {
    // A tracked key has consumed; an evicted one reads as full again.
    const bool evicted = Apply(store, "k" + std::to_string(i), kMinute, kStart, 0).remaining == 10;
    (i % 2 == 0 ? evicted_used : evicted_idle) += evicted;
  }
  EXPECT_EQ(evicted_used + evicted_idle, 100);
  EXPECT_LE(evicted_used, 5) << "recently used keys were evicted before idle ones";
  EXPECT_EQ(Apply(store, "k0", kMinute, kStart, 0).remaining, 7u) << "the newest use survives";
}

TEST(MemoryStore, AlgorithmChangeForAKeyStartsFresh) {
  MemoryStore store;
  LimitSpec fixed{Algorithm::kFixedWindow, 1, 1'000'000, 0};
  LimitSpec log{Algorithm::kSlidingWindowLog, 1, 1'000'000, 0};
  EXPECT_TRUE(Apply(store, "k", fixed, kStart).allowed);
  EXPECT_TRUE(Apply(store, "k", log, kStart).allowed);
  EXPECT_FALSE(Apply(store, "k", log, kStart).allowed);
  EXPECT_TRUE(Apply(store, "k", fixed, kStart).allowed);
}

TEST(MemoryStore, MemoryPerTokenBucketKeyIsSmall) {
  MemoryStore store({.max_keys = 250'000});
  for (int i = 0; i < 200'000; ++i) {
    Apply(store, "tenant-00000000000000000000" + std::to_string(100000 + i), kMinute, kStart);
  }
  EXPECT_EQ(store.size(), 200'000u);
  EXPECT_LE(store.memory_bytes() / store.size(), 128u);
}

// A shard whose table grows past 2 MiB (where its slots move to huge-page memory) keeps every
// key and its state across the moves.
TEST(MemoryStore, KeysSurviveATableGrowingPastTwoMebibytes) {
  MemoryStore store({.max_keys = 100'000, .shards = 1});
  const LimitSpec once{Algorithm::kFixedWindow, 1, 60'000'000, 0};
  constexpr int kKeys = 60'000;  // about 80k slots of 64 bytes: 5 MiB
  for (int i = 0; i < kKeys; ++i)
    ASSERT_TRUE(Apply(store, "key-" + std::to_string(i), once, kStart).allowed);
  EXPECT_EQ(store.size(), std::size_t{kKeys});
  EXPECT_GT(store.memory_bytes(), std::size_t{2} << 20);
  for (int i = 0; i < kKeys; ++i)
    ASSERT_FALSE(Apply(store, "key-" + std::to_string(i), once, kStart).allowed) << i;
}

// Threads hammering one key never admit more than the contract.
TEST(MemoryStore, ThreadsOnOneKeyNeverAdmitMoreThanTheLimit) {
  for (Algorithm a : {Algorithm::kFixedWindow, Algorithm::kSlidingWindowLog,
                      Algorithm::kSlidingWindowCounter, Algorithm::kTokenBucket}) {
    MemoryStore store;
    const LimitSpec spec{a, 1000, 60'000'000, 0};
    std::atomic<std::uint64_t> admitted{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 2000; ++i) {
          if (Apply(store, "hot", spec, kStart + i).allowed) admitted.fetch_add(1);
        }
      });
    }
    for (auto& th : threads)
      th.join();
    // 16,000 hits within 2 ms of a 1,000-per-minute limit: exactly 1,000 pass (the token
    // bucket refills 2000 us * 1000 / 60 s, less than one token, on top of its 1,000).
    EXPECT_EQ(admitted.load(), 1000u) << algorithm_name(a);
  }
}

TEST(MemoryStore, ThreadsOnManyKeysWithMultiHitRequests) {
  MemoryStore store({.max_keys = 100'000, .shards = 16});
  const LimitSpec per_key{Algorithm::kSlidingWindowCounter, 50, 60'000'000, 0};
  const LimitSpec global{Algorithm::kTokenBucket, 3000, 60'000'000, 0};
  std::atomic<std::uint64_t> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        const std::string key = "user-" + std::to_string((i * 7 + t) % 40);
        Hit hits[2] = {{key, &per_key, 1, true}, {"global", &global, 1, true}};
        Verdict out[2];
        store.apply(hits, kStart, out);
        if (out[0].allowed && out[1].allowed) admitted.fetch_add(1);
      }
    });
  }
  for (auto& th : threads)
    th.join();
  // 40 users x 50 = 2,000 < 3,000 global: the per-user limits bind, exactly.
  EXPECT_EQ(admitted.load(), 2000u);
  Verdict v = Apply(store, "global", global, kStart, 0);
  EXPECT_EQ(v.remaining, 1000u) << "denied requests consumed nothing globally";
}

// prefetch() is only a hint: on an empty store, on unknown keys, on keys of every shard and
// with nothing at all, it tracks nothing and changes no verdict.
TEST(MemoryStore, PrefetchTracksNothingAndChangesNoVerdict) {
  MemoryStore store({.max_keys = 10'000, .shards = 4});
  MemoryStore control({.max_keys = 10'000, .shards = 4});
  store.prefetch({});
  std::vector<std::string> keys;
  for (int i = 0; i < 200; ++i)
    keys.push_back("key-" + std::to_string(i));
  std::vector<Hit> hits;
  for (const std::string& k : keys)
    hits.push_back(Hit{k, &kMinute, 1, true});
  hits.push_back(Hit{"", &kMinute, 1, true});
  store.prefetch(hits);  // every shard's table is still empty
  EXPECT_EQ(store.size(), 0u);
  for (int round = 0; round < 12; ++round) {
    store.prefetch(hits);
    for (const std::string& k : keys) {
      const Verdict got = Apply(store, k, kMinute, kStart + round);
      const Verdict want = Apply(control, k, kMinute, kStart + round);
      ASSERT_EQ(got.allowed, want.allowed) << k;
      ASSERT_EQ(got.remaining, want.remaining) << k;
    }
    store.prefetch(hits);
  }
  EXPECT_EQ(store.size(), keys.size());
  EXPECT_FALSE(Apply(store, "key-0", kMinute, kStart).allowed);
}

// prefetch() reads each shard's table address without the lock while other threads grow the
// table: under ThreadSanitizer this must report no race.
TEST(MemoryStore, PrefetchWhileTablesGrow) {
  MemoryStore store({.max_keys = 100'000, .shards = 1});
  std::atomic<bool> done{false};
  std::thread prefetcher([&] {
    std::vector<std::string> keys;
    for (int i = 0; i < 64; ++i)
      keys.push_back("key-" + std::to_string(i * 997));
    std::vector<Hit> hits;
    for (const std::string& k : keys)
      hits.push_back(Hit{k, &kMinute, 1, true});
    while (!done.load())
      store.prefetch(hits);
  });
  std::vector<std::thread> inserters;
  for (int t = 0; t < 2; ++t) {
    inserters.emplace_back([&, t] {
      for (int i = t; i < 60'000; i += 2)
        Apply(store, "key-" + std::to_string(i), kMinute, kStart);
    });
  }
  for (auto& th : inserters)
    th.join();
  done = true;
  prefetcher.join();
  EXPECT_EQ(store.size(), 60'000u);
}

}  // namespace
}  // namespace sluice
