// Hand-worked examples of each algorithm's rule (docs/algorithms.md). The randomized comparison
// with the reference models lives in the store conformance suite.
#include "sluice/algorithms.h"

#include <gtest/gtest.h>

namespace sluice {
namespace {

constexpr Micros kSec = 1'000'000;
constexpr Micros kT0 = 1'700'000'000 * kSec;  // aligned to a second

TEST(Algorithms, NamesRoundTrip) {
  for (auto a : {Algorithm::kFixedWindow, Algorithm::kSlidingWindowLog,
                 Algorithm::kSlidingWindowCounter, Algorithm::kTokenBucket}) {
    EXPECT_EQ(parse_algorithm(algorithm_name(a)), a);
  }
  EXPECT_FALSE(parse_algorithm("leaky_bucket"));
}

TEST(FixedWindow, CountsPerAlignedWindow) {
  const LimitSpec spec{Algorithm::kFixedWindow, 3, kSec, 0};
  FixedWindowState s;
  EXPECT_EQ(step(s, spec, 1, kT0 + 100'000), (Verdict{true, 2, 900'000, 0}));
  EXPECT_EQ(step(s, spec, 2, kT0 + 200'000), (Verdict{true, 0, 800'000, 0}));
  EXPECT_EQ(step(s, spec, 1, kT0 + 300'000), (Verdict{false, 0, 700'000, 700'000}));
  // The next aligned window starts empty.
  EXPECT_EQ(step(s, spec, 3, kT0 + kSec), (Verdict{true, 0, kSec, 0}));
  EXPECT_EQ(step(s, spec, 4, kT0 + kSec), (Verdict{false, 0, kSec, kNever}));
}

TEST(SlidingWindowLog, CountsTheLastW) {
  const LimitSpec spec{Algorithm::kSlidingWindowLog, 2, kSec, 0};
  SlidingLogState s;
  EXPECT_TRUE(step(s, spec, 1, kT0).allowed);
  EXPECT_TRUE(step(s, spec, 1, kT0 + 600'000).allowed);
  // Full until the first hit leaves the window at kT0 + W.
  EXPECT_EQ(step(s, spec, 1, kT0 + 900'000), (Verdict{false, 0, 700'000, 100'000}));
  EXPECT_TRUE(step(s, spec, 1, kT0 + kSec).allowed);
  EXPECT_EQ(s.size(), 2u);
}

TEST(SlidingWindowCounter, WeighsThePreviousWindow) {
  const LimitSpec spec{Algorithm::kSlidingWindowCounter, 10, kSec, 0};
  SlidingCounterState s;
  EXPECT_TRUE(step(s, spec, 10, kT0 + 500'000).allowed);
  // 25% into the next window, the previous 10 weigh 7.5: 2 more fit, a third does not.
  EXPECT_EQ(step(s, spec, 2, kT0 + kSec + 250'000), (Verdict{true, 0, 1'750'000, 0}));
  Verdict v = step(s, spec, 1, kT0 + kSec + 250'000);
  EXPECT_FALSE(v.allowed);
  // 10 * (W - e) + 3 W <= 10 W  <=>  e >= 0.3 W: wait 50 ms.
  EXPECT_EQ(v.retry_after, 50'000);
}

TEST(TokenBucket, RefillsContinuouslyAndExactly) {
  // 3 per second, burst 6: one token every 333,333.33... us, tracked exactly.
  const LimitSpec spec{Algorithm::kTokenBucket, 3, kSec, 6};
  TokenBucketState s;
  EXPECT_EQ(step(s, spec, 6, kT0), (Verdict{true, 0, 2 * kSec, 0}));
  Verdict v = step(s, spec, 1, kT0);
  EXPECT_FALSE(v.allowed);
  EXPECT_EQ(v.retry_after, 333'334);  // ceil(1e6 / 3)
  EXPECT_FALSE(step(s, spec, 1, kT0 + 333'333).allowed);
  EXPECT_TRUE(step(s, spec, 1, kT0 + 333'334).allowed);
  // Tokens 2..8 arrive at k * 333,333.33 us, before the last millisecond step at 2,999,334 us;
  // token 9 arrives at exactly 3 s. None is lost to rounding.
  int admitted = 0;
  for (Micros t = kT0 + 333'334; t < kT0 + 3 * kSec; t += 1000)
    admitted += step(s, spec, 1, t).allowed;
  EXPECT_EQ(admitted, 7);
  EXPECT_FALSE(step(s, spec, 1, kT0 + 3 * kSec - 1).allowed);
  EXPECT_TRUE(step(s, spec, 1, kT0 + 3 * kSec).allowed);
}

TEST(TokenBucket, CostBeyondBurstNeverPasses) {
  const LimitSpec spec{Algorithm::kTokenBucket, 10, kSec, 4};
  TokenBucketState s;
  Verdict v = step(s, spec, 5, kT0);
  EXPECT_FALSE(v.allowed);
  EXPECT_EQ(v.retry_after, kNever);
  EXPECT_EQ(v.remaining, 4u);
}

TEST(Algorithms, DenyAndCheckLeaveStateUnchanged) {
  const LimitSpec spec{Algorithm::kTokenBucket, 1, kSec, 0};
  TokenBucketState s;
  step(s, spec, 1, kT0);
  const TokenBucketState before = s;
  step(s, spec, 1, kT0 + 10);
  step(s, spec, 0, kT0 + 20);
  step(s, spec, 1, kT0 + 30, /*commit=*/false);
  EXPECT_EQ(s, before);
}

TEST(Algorithms, HugeValuesDoNotOverflow) {
  const LimitSpec spec{Algorithm::kTokenBucket, kMaxLimit, kMaxWindow, kMaxLimit};
  TokenBucketState s;
  Verdict v = step(s, spec, kMaxLimit, kT0);
  EXPECT_TRUE(v.allowed);
  EXPECT_EQ(v.reset_after, kMaxWindow);
  const LimitSpec sw{Algorithm::kSlidingWindowCounter, kMaxLimit, kMaxWindow, 0};
  SlidingCounterState c;
  EXPECT_TRUE(step(c, sw, kMaxLimit, kT0).allowed);
  EXPECT_FALSE(step(c, sw, 1, kT0).allowed);
}

}  // namespace
}  // namespace sluice
