// EventualStore: instances deciding locally and sharing one real redis-server through leases.
// Time is a manual clock; each test runs the replicator's rounds itself (no thread, no sleeps).
#include "sluice/eventual_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "sluice/redis_store.h"
#include "storage/redis/decide.h"
#include "support/redis_harness.h"

namespace sluice {
namespace {

using std::chrono::milliseconds;

constexpr Micros kSecond = 1'000'000;
constexpr Micros kInterval = 100'000;
constexpr Micros kT0 = seconds_to_micros(1'700'000'000);  // a window boundary

// Instance is one sluice process's store: an EventualStore in front of its own RedisStore.
struct Instance {
  Instance(const testing::RedisServer& server, const Clock& clock, double local_share = 0,
           Consistency default_consistency = Consistency::kEventual,
           std::size_t max_keys = 1'000'000) {
    RedisStoreOptions o;
    o.port = server.port();
    o.command_timeout = milliseconds(200);
    o.connect_timeout = milliseconds(200);
    o.breaker_min_open = milliseconds(20);
    o.breaker_max_open = milliseconds(50);
    auto redis = std::make_unique<RedisStore>(o);
    redis::Batcher& batcher = redis->batcher();
    EventualStoreOptions e;
    e.sync_interval = milliseconds(kInterval / 1000);
    e.default_consistency = default_consistency;
    e.local_share = local_share;
    e.max_keys = max_keys;
    e.background = false;
    store = std::make_unique<EventualStore>(std::move(redis), batcher, clock, e);
  }
  // hit() applies one hit of `cost` on `key`; returns whether it was allowed.
  bool hit(std::string_view key, const LimitSpec& spec, Micros now, std::uint64_t cost = 1) {
    Hit h{key, &spec, cost, true};
    Verdict v;
    const StoreStatus st =
        store->apply(std::span<const Hit>(&h, 1), now, std::span<Verdict>(&v, 1));
    EXPECT_TRUE(st.ok()) << st.message;
    return v.allowed;
  }
  std::unique_ptr<EventualStore> store;
};

class EventualStoreTest : public ::testing::Test {
 protected:
  // Runs `windows` windows of 10 intervals: in each interval instance i is offered load[i] hits
  // (interleaved), then the clock moves one interval and every instance syncs (in turn, the
  // order rotating). Returns the hits admitted in each interval.
  std::vector<int> Drive(std::vector<Instance*> instances, const LimitSpec& spec,
                         std::vector<int> load, int intervals) {
    std::vector<int> admitted;
    for (Instance* in : instances)
      EXPECT_TRUE(in->store->sync());  // heartbeats: every instance knows K
    for (int t = 0; t < intervals; ++t) {
      int ok = 0;
      const int most = *std::max_element(load.begin(), load.end());
      for (int j = 0; j < most; ++j) {
        for (std::size_t i = 0; i < instances.size(); ++i) {
          const Micros at = clock_.now_micros() + j * (kInterval / most);
          if (j < load[i] && instances[i]->hit("k", spec, at)) ++ok;
        }
      }
      admitted.push_back(ok);
      clock_.advance(std::chrono::microseconds(kInterval));
      for (std::size_t i = 0; i < instances.size(); ++i) {
        EXPECT_TRUE(instances[(i + static_cast<std::size_t>(t)) % instances.size()]->store->sync());
      }
    }
    return admitted;
  }

  testing::RedisServer server_;
  ManualClock clock_{kT0};
};

int Sum(const std::vector<int>& v, std::size_t from, std::size_t to) {
  int s = 0;
  for (std::size_t i = from; i < to && i < v.size(); ++i)
    s += v[i];
  return s;
}

TEST_F(EventualStoreTest, FixedWindowSharedByTwoInstancesAdmitsTheLimitAndNeverMore) {
  Instance a(server_, clock_), b(server_, clock_);
  const LimitSpec spec{Algorithm::kFixedWindow, 100, kSecond, 0};
  // 3x the limit, uniform.
  const std::vector<int> admitted = Drive({&a, &b}, spec, {15, 15}, 50);
  for (std::size_t w = 0; w < 5; ++w) {
    const int in_window = Sum(admitted, w * 10, w * 10 + 10);
    EXPECT_LE(in_window, 100) << "window " << w;
    EXPECT_GE(in_window, 98) << "window " << w;
  }
  EXPECT_EQ(a.store->stats().instances, 2u);
  EXPECT_EQ(a.store->stats().failed_rounds, 0u);
}

TEST_F(EventualStoreTest, SkewedLoadStillAdmitsTheLimitAndNeverMore) {
  Instance a(server_, clock_), b(server_, clock_), c(server_, clock_);
  const LimitSpec spec{Algorithm::kFixedWindow, 100, kSecond, 0};
  // 3x the limit, 80 % of it on one instance.
  const std::vector<int> admitted = Drive({&a, &b, &c}, spec, {24, 3, 3}, 50);
  for (std::size_t w = 0; w < 5; ++w) {
    const int in_window = Sum(admitted, w * 10, w * 10 + 10);
    EXPECT_LE(in_window, 100) << "window " << w;
    EXPECT_GE(in_window, 98) << "window " << w;
  }
}

TEST_F(EventualStoreTest, TokenBucketAdmitsItsRateOverTheHorizon) {
  Instance a(server_, clock_), b(server_, clock_);
  const LimitSpec spec{Algorithm::kTokenBucket, 100, kSecond, 50};
  const std::vector<int> admitted = Drive({&a, &b}, spec, {15, 15}, 50);
  // Over 5 s the contract allows the burst plus the refill: 50 + 500. Consumption reaches Redis
  // one round after it happens, so a bucket that is full when the load starts misses the refill
  // of about one interval (10) before it learns it is being drained, and the first leases are
  // handed out before the demand is known.
  const int total = Sum(admitted, 0, admitted.size());
  EXPECT_LE(total, 550);
  EXPECT_GE(total, 530);
  // Once the load is steady, it admits exactly the refill rate: 10 per interval.
  EXPECT_EQ(Sum(admitted, 10, 50), 400);
  // Any 1 s span admits at most the burst plus one second's refill.
  for (std::size_t t = 0; t + 10 <= admitted.size(); ++t)
    EXPECT_LE(Sum(admitted, t, t + 10), 150) << "from interval " << t;
}

TEST_F(EventualStoreTest, SlidingWindowCounterKeepsItsRuleAtEveryInterval) {
  Instance a(server_, clock_), b(server_, clock_);
  const LimitSpec spec{Algorithm::kSlidingWindowCounter, 100, kSecond, 0};
  const std::vector<int> admitted = Drive({&a, &b}, spec, {15, 15}, 50);
  // The counter's rule with the windows' real counts, at the end of every interval:
  // previous * (W - e) + current * W <= n * W.
  for (std::size_t t = 10; t < admitted.size(); ++t) {
    const std::size_t w = t / 10;
    const int prev = Sum(admitted, (w - 1) * 10, w * 10);
    const int cur = Sum(admitted, w * 10, t + 1);
    const Micros e = static_cast<Micros>(t % 10 + 1) * kInterval;
    EXPECT_LE(prev * (kSecond - e) + cur * kSecond, 100 * kSecond) << "interval " << t;
  }
  // And it keeps admitting close to n per window.
  EXPECT_GE(Sum(admitted, 10, 50), 4 * 100 * 9 / 10);
}

TEST_F(EventualStoreTest, InstancesEachAskingLessThanAnIntervalFrees) {
  // A sliding counter frees about n * I / W = 10 units per interval; four instances are each
  // asked for 8, so each one's lease must be what it will use, or the first to ask would hold
  // units it cannot use while the others are refused.
  Instance a(server_, clock_), b(server_, clock_), c(server_, clock_), d(server_, clock_);
  const LimitSpec spec{Algorithm::kSlidingWindowCounter, 100, kSecond, 0};
  const std::vector<int> admitted = Drive({&a, &b, &c, &d}, spec, {8, 8, 8, 8}, 50);
  EXPECT_GE(Sum(admitted, 10, 50), 4 * 100 * 97 / 100);
  EXPECT_LE(Sum(admitted, 10, 50), 4 * 100 + 100);
}

TEST_F(EventualStoreTest, SlidingLogIsDecidedByTheCounterRule) {
  Instance a(server_, clock_);
  const LimitSpec spec{Algorithm::kSlidingWindowLog, 10, kSecond, 0};
  ASSERT_TRUE(a.store->sync());
  int ok = 0;
  for (int i = 0; i < 30; ++i)
    ok += a.hit("log", spec, kT0 + i) ? 1 : 0;
  EXPECT_EQ(ok, 10);
}

TEST_F(EventualStoreTest, UnreachableRedisDecidesOnTheLocalShareThenReconciles) {
  Instance a(server_, clock_, /*local_share=*/0.25);
  const LimitSpec spec{Algorithm::kFixedWindow, 100, kSecond, 0};
  ASSERT_TRUE(a.store->sync());
  server_.pause();
  // While Redis does not answer, a window admits the local share: 25 of 100.
  int admitted = 0;
  for (int t = 0; t < 10; ++t) {
    for (int j = 0; j < 10; ++j)
      admitted += a.hit("k", spec, clock_.now_micros() + j) ? 1 : 0;
    clock_.advance(std::chrono::microseconds(kInterval / 2));
    EXPECT_FALSE(a.store->sync());
  }
  EXPECT_EQ(admitted, 25);
  EXPECT_GT(a.store->stats().failed_rounds, 0u);
  server_.resume();
  // Back: the next round that reaches Redis reports what was admitted meanwhile.
  bool synced = false;
  for (int i = 0; i < 50 && !synced; ++i) {
    synced = a.store->sync();
    if (!synced) std::this_thread::sleep_for(milliseconds(20));  // the breaker's probe delay
  }
  ASSERT_TRUE(synced);
  const std::string key = redis::redis_key("sluice:e:", "k") + ":" + std::to_string(kT0 / kSecond);
  const testing::Reply count = server_.call({"GET", key});
  // Never less than admitted (a timed-out round may have run on waking and been sent again).
  ASSERT_EQ(count.type, testing::Reply::Type::kBulk) << count.to_string();
  EXPECT_GE(std::stoll(count.str), 25);
}

TEST_F(EventualStoreTest, AStoppingInstanceReportsWhatItAdmitted) {
  const LimitSpec spec{Algorithm::kFixedWindow, 100, kSecond, 0};
  {
    Instance a(server_, clock_);
    ASSERT_TRUE(a.store->sync());
    for (int i = 0; i < 7; ++i)
      EXPECT_TRUE(a.hit("k", spec, kT0 + i));
  }  // the destructor runs a last round
  const std::string key = redis::redis_key("sluice:e:", "k") + ":" + std::to_string(kT0 / kSecond);
  EXPECT_EQ(server_.command({"GET", key}), "7");
}

TEST_F(EventualStoreTest, TheLocalShareFollowsTheInstancesSeen) {
  Instance a(server_, clock_), b(server_, clock_), c(server_, clock_);
  for (Instance* in : {&a, &b, &c})
    ASSERT_TRUE(in->store->sync());
  ASSERT_TRUE(a.store->sync());
  EXPECT_EQ(a.store->stats().instances, 3u);
  // A key not leased yet is decided on a third of the limit: 4 of 12 in this window.
  const LimitSpec spec{Algorithm::kFixedWindow, 12, kSecond, 0};
  int ok = 0;
  for (int i = 0; i < 10; ++i)
    ok += a.hit("fresh", spec, kT0 + i) ? 1 : 0;
  EXPECT_EQ(ok, 4);
}

TEST_F(EventualStoreTest, AKeyHitNowAndThenCostsOneUpdatePerHit) {
  Instance a(server_, clock_);
  const LimitSpec spec{Algorithm::kFixedWindow, 100, 10 * kSecond, 0};
  ASSERT_TRUE(a.store->sync());
  for (int hit = 1; hit <= 3; ++hit) {
    EXPECT_TRUE(a.hit("sparse", spec, clock_.now_micros()));
    for (int round = 0; round < 5; ++round) {
      clock_.advance(std::chrono::microseconds(kInterval));
      ASSERT_TRUE(a.store->sync());
    }
    // Reported once; the unused lease stays (Redis has plenty left) instead of a second update.
    EXPECT_EQ(a.store->stats().keys_synced, static_cast<std::uint64_t>(hit));
  }
}

TEST_F(EventualStoreTest, KeysPastMaxKeysAreDecidedInRedisUntilIdleKeysAreDropped) {
  constexpr std::size_t kMaxKeys = 10;
  Instance a(server_, clock_, /*local_share=*/1, Consistency::kEventual, kMaxKeys);
  ASSERT_TRUE(a.store->sync());
  const LimitSpec spec{Algorithm::kFixedWindow, 2, kSecond, 0};
  // 50 new keys, three hits each: two admitted and the third denied on every key, whether it is
  // decided here (the first 10) or in Redis (the other 40, whose state Redis then holds).
  for (int k = 0; k < 50; ++k) {
    const std::string key = "x" + std::to_string(k);
    EXPECT_TRUE(a.hit(key, spec, kT0 + k)) << key;
    EXPECT_TRUE(a.hit(key, spec, kT0 + k)) << key;
    EXPECT_FALSE(a.hit(key, spec, kT0 + k)) << key;
    ASSERT_LE(a.store->stats().keys, kMaxKeys);
    const bool in_redis = server_.call({"EXISTS", redis::redis_key("sluice:", key)}).integer == 1;
    EXPECT_EQ(in_redis, k >= static_cast<int>(kMaxKeys)) << key;
  }
  EXPECT_EQ(a.store->stats().keys, kMaxKeys);
  // The window passes and the local keys, idle and full again, are dropped after a few rounds:
  // new keys are decided here again.
  clock_.advance(std::chrono::seconds(1));
  for (int round = 0; round < 5; ++round) {
    clock_.advance(std::chrono::microseconds(kInterval));
    ASSERT_TRUE(a.store->sync());
  }
  EXPECT_EQ(a.store->stats().keys, 0u);
  EXPECT_TRUE(a.hit("fresh", spec, clock_.now_micros()));
  EXPECT_EQ(a.store->stats().keys, 1u);
  EXPECT_EQ(server_.call({"EXISTS", redis::redis_key("sluice:", "fresh")}).integer, 0);
}

TEST_F(EventualStoreTest, StrongAndEventualLimitsInOneRequestAreAllOrNothing) {
  Instance a(server_, clock_, 0, Consistency::kStrong);
  LimitSpec strong{Algorithm::kFixedWindow, 1, kSecond, 0};
  LimitSpec eventual{Algorithm::kFixedWindow, 5, kSecond, 0};
  eventual.consistency = Consistency::kEventual;
  auto both = [&](Micros now, Verdict(&v)[2]) {
    Hit hits[2] = {Hit{"s", &strong, 1, true}, Hit{"e", &eventual, 1, true}};
    EXPECT_TRUE(a.store->apply(hits, now, v).ok());
  };
  Verdict v[2];
  both(kT0, v);
  EXPECT_TRUE(v[0].allowed && v[1].allowed);
  EXPECT_EQ(v[1].remaining, 4u);
  both(kT0 + 1, v);  // the strong limit is spent: nothing consumes
  EXPECT_FALSE(v[0].allowed);
  EXPECT_EQ(v[1].remaining, 4u);
  both(kT0 + 2, v);
  EXPECT_EQ(v[1].remaining, 4u);
  // The strong limit lives in Redis as the strong store keeps it; the eventual one is local.
  EXPECT_EQ(server_.command({"EXISTS", redis::redis_key("sluice:", "s")}), "1");
  EXPECT_EQ(server_.command({"EXISTS", redis::redis_key("sluice:", "e")}), "0");
}

TEST_F(EventualStoreTest, CostAboveTheLimitIsNeverAllowed) {
  Instance a(server_, clock_);
  const LimitSpec spec{Algorithm::kFixedWindow, 5, kSecond, 0};
  Hit h{"k", &spec, 6, true};
  Verdict v;
  ASSERT_TRUE(a.store->apply(std::span<const Hit>(&h, 1), kT0, std::span<Verdict>(&v, 1)).ok());
  EXPECT_FALSE(v.allowed);
  EXPECT_EQ(v.retry_after, kNever);
}

}  // namespace
}  // namespace sluice
