// The conformance suite through the over-limit cache (over the memory store): the cache never
// changes a verdict. And what it is for: a flood on a key over its limit reaches the store once
// per window.
#include "sluice/memory_store.h"
#include "sluice/over_limit_cache.h"
#include "storage/conformance.h"

namespace sluice::testing {
namespace {

INSTANTIATE_TEST_SUITE_P(OverLimitCache, StoreConformance,
                         ::testing::Values(StoreFactory{"over_limit_cache",
                                                        [] {
                                                          return std::make_unique<OverLimitCache>(
                                                              std::make_unique<MemoryStore>());
                                                        }},
                                           StoreFactory{"over_limit_cache_tiny",
                                                        [] {
                                                          return std::make_unique<OverLimitCache>(
                                                              std::make_unique<MemoryStore>(),
                                                              OverLimitCacheOptions{.max_entries =
                                                                                        16});
                                                        }}),
                         StoreFactoryName);

// CountingStore counts the applies that reach it.
class CountingStore final : public Store {
 public:
  StoreStatus apply(std::span<const Hit> hits, Micros now,
                    std::span<Verdict> out) noexcept override {
    ++applies;
    return inner.apply(hits, now, out);
  }
  std::string name() const override { return "counting"; }
  MemoryStore inner;
  int applies = 0;
};

TEST(OverLimitCache, AFloodOnAKeyOverItsLimitReachesTheStoreOncePerWindow) {
  auto counting = std::make_unique<CountingStore>();
  CountingStore* store = counting.get();
  OverLimitCache cache(std::move(counting));
  const LimitSpec spec{Algorithm::kFixedWindow, 10, 1'000'000, 0};
  const Hit hit{"flood", &spec, 1, true};
  Verdict v;
  const Micros t0 = 1'700'000'000'000'000;
  int allowed = 0;
  for (int window = 0; window < 3; ++window) {
    for (int i = 0; i < 10'000; ++i) {
      // 10,000 hits spread over the window, each 100 µs apart.
      const Micros now = t0 + window * 1'000'000 + i * 100;
      ASSERT_TRUE(cache.apply({&hit, 1}, now, {&v, 1}).ok());
      allowed += v.allowed;
      if (!v.allowed) {
        ASSERT_EQ(v.remaining, 0u);
        ASSERT_EQ(v.retry_after, t0 + (window + 1) * 1'000'000 - now);
      }
    }
  }
  EXPECT_EQ(allowed, 30);
  EXPECT_EQ(store->applies, 3 * 11) << "10 admitted and 1 denied per window reach the store";
  EXPECT_EQ(cache.answered_locally(), 3u * (10'000 - 11));
}

TEST(OverLimitCache, OnlySingleHitsOfCostOneOrZeroAreAnswered) {
  auto counting = std::make_unique<CountingStore>();
  CountingStore* store = counting.get();
  OverLimitCache cache(std::move(counting));
  const LimitSpec spec{Algorithm::kTokenBucket, 1, 1'000'000, 0};
  const Micros t0 = 1'700'000'000'000'000;
  Hit hit{"k", &spec, 1, true};
  Verdict v[2];
  ASSERT_TRUE(cache.apply({&hit, 1}, t0, {v, 1}).ok());
  ASSERT_TRUE(cache.apply({&hit, 1}, t0, {v, 1}).ok());  // denied: learnt
  EXPECT_FALSE(v[0].allowed);
  EXPECT_EQ(store->applies, 2);
  ASSERT_TRUE(cache.apply({&hit, 1}, t0 + 10, {v, 1}).ok());
  EXPECT_EQ(store->applies, 2) << "answered locally";
  Hit check = hit;
  check.cost = 0;
  ASSERT_TRUE(cache.apply({&check, 1}, t0 + 20, {v, 1}).ok());
  EXPECT_TRUE(v[0].allowed);
  EXPECT_EQ(store->applies, 2) << "a check, answered locally";
  Hit two = hit;
  two.cost = 2;
  ASSERT_TRUE(cache.apply({&two, 1}, t0 + 30, {v, 1}).ok());
  EXPECT_EQ(store->applies, 3) << "another cost goes to the store";
  const Hit pair[2] = {hit, Hit{"other", &spec, 1, true}};
  ASSERT_TRUE(cache.apply(pair, t0 + 40, v).ok());
  EXPECT_EQ(store->applies, 4) << "several hits go to the store";
  ASSERT_TRUE(cache.apply({&hit, 1}, t0 - 5, {v, 1}).ok());
  EXPECT_EQ(store->applies, 5) << "a clock behind the denial goes to the store";
  ASSERT_TRUE(cache.apply({&hit, 1}, t0 + 1'000'000, {v, 1}).ok());
  EXPECT_TRUE(v[0].allowed) << "passes again at the retry time";
  EXPECT_EQ(store->applies, 6);
}

}  // namespace
}  // namespace sluice::testing
