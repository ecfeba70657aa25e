// The conformance suite proper (see conformance.h). Every test drives the Store interface only.
#include "storage/conformance.h"

#include <map>
#include <random>
#include <string>
#include <vector>

#include "storage/reference_model.h"

namespace sluice::testing {
namespace {

constexpr Micros kStart = seconds_to_micros(1'700'000'000);
constexpr Algorithm kAlgorithms[] = {Algorithm::kFixedWindow, Algorithm::kSlidingWindowLog,
                                     Algorithm::kSlidingWindowCounter, Algorithm::kTokenBucket};

std::string Describe(const LimitSpec& s) {
  return std::string(algorithm_name(s.algorithm)) + " n=" + std::to_string(s.limit) +
         " W=" + std::to_string(s.window) + " b=" + std::to_string(s.burst);
}

Verdict ApplyOne(Store& store, const std::string& key, const LimitSpec& spec, std::uint64_t cost,
                 Micros now) {
  Hit hit{key, &spec, cost, true};
  Verdict v;
  StoreStatus st = store.apply(std::span<const Hit>(&hit, 1), now, std::span<Verdict>(&v, 1));
  EXPECT_TRUE(st.ok()) << st.message;
  return v;
}

// A random limit: small n so windows fill, windows that do not divide a second, bursts.
LimitSpec RandomSpec(Algorithm a, std::mt19937_64& rng) {
  LimitSpec s;
  s.algorithm = a;
  const std::uint64_t ns[] = {1, 2, 3, 5, 7, 10, 16, 25};
  s.limit = ns[rng() % std::size(ns)];
  const Micros ws[] = {7, 1000, 999'983, 1'000'000, 60'000'000};
  s.window = ws[rng() % std::size(ws)];
  if (a == Algorithm::kTokenBucket && rng() % 2 == 0) s.burst = 1 + rng() % (3 * s.limit);
  return s;
}

// A random gap relative to the window: often inside it, sometimes across it, sometimes zero,
// and (when `backwards`) sometimes negative.
Micros RandomGap(Micros w, std::mt19937_64& rng, bool backwards) {
  switch (rng() % 10) {
    case 0:
      return 0;
    case 1:
      return w + static_cast<Micros>(rng() % static_cast<std::uint64_t>(2 * w));
    case 2:
      return backwards ? -static_cast<Micros>(rng() % static_cast<std::uint64_t>(w + 1)) : 1;
    default:
      return static_cast<Micros>(rng() % static_cast<std::uint64_t>(std::max<Micros>(w / 4, 2)));
  }
}

std::uint64_t RandomCost(const LimitSpec& s, std::mt19937_64& rng) {
  switch (rng() % 8) {
    case 0:
      return 0;  // check without consuming
    case 1:
      return s.capacity() + 1 + rng() % 3;  // more than the limit can ever hold
    case 2:
      return 1 + rng() % s.capacity();
    default:
      return 1;
  }
}

// Runs `hits` random hits over a few keys against the store and the model; every verdict must
// be equal. Returns the number of hits compared.
void RunTrace(Store& store, Algorithm a, std::uint64_t seed, int hits, bool backwards) {
  std::mt19937_64 rng(seed);
  struct Key {
    std::string name;
    LimitSpec spec;
    std::unique_ptr<ReferenceModel> model;
  };
  std::vector<Key> keys;
  for (int k = 0; k < 3; ++k) {
    LimitSpec spec = RandomSpec(a, rng);
    keys.push_back({"trace/" + std::to_string(seed) + "/" + std::to_string(k) + "/" +
                        std::string(algorithm_name(a)),
                    spec, std::make_unique<ReferenceModel>(spec)});
  }
  Micros now = kStart;
  for (int i = 0; i < hits; ++i) {
    Key& key = keys[rng() % keys.size()];
    now += RandomGap(key.spec.window, rng, backwards);
    const std::uint64_t cost = RandomCost(key.spec, rng);
    const Verdict want = key.model->hit(cost, now);
    const Verdict got = ApplyOne(store, key.name, key.spec, cost, now);
    ASSERT_EQ(got, want) << "hit " << i << " seed " << seed << " " << Describe(key.spec) << " cost "
                         << cost << " t " << now - kStart << "\n got allowed=" << got.allowed
                         << " remaining=" << got.remaining << " reset=" << got.reset_after
                         << " retry=" << got.retry_after << "\nwant allowed=" << want.allowed
                         << " remaining=" << want.remaining << " reset=" << want.reset_after
                         << " retry=" << want.retry_after;
  }
}

TEST_P(StoreConformance, RandomTracesMatchTheReferenceModel) {
  for (Algorithm a : kAlgorithms) {
    for (std::uint64_t seed : {1, 2, 3, 4}) {
      SCOPED_TRACE(std::string(algorithm_name(a)) + " seed " + std::to_string(seed));
      RunTrace(*store_, a, seed * 7919 + static_cast<std::uint64_t>(a), 12'000, false);
    }
  }
}

TEST_P(StoreConformance, TimeGoingBackwardsMatchesTheModel) {
  for (Algorithm a : kAlgorithms) {
    for (std::uint64_t seed : {11, 12}) {
      SCOPED_TRACE(std::string(algorithm_name(a)) + " seed " + std::to_string(seed));
      RunTrace(*store_, a, seed * 104'729 + static_cast<std::uint64_t>(a), 5'000, true);
    }
  }
}

// Limits and windows so large that n * W, cost * W and the bucket's scaled times pass 2^64
// (and a Redis script's 2^53): the arithmetic must stay exact. (Times stay below 2^53 us, the
// year 2255, which the Redis store requires.)
TEST_P(StoreConformance, HugeLimitsAndWindowsStayExact) {
  constexpr Micros kYear = Micros{365} * 86'400'000'000;
  const LimitSpec specs[] = {
      {Algorithm::kFixedWindow, kMaxLimit, 3 * kYear, 0},
      {Algorithm::kSlidingWindowCounter, kMaxLimit, 3 * kYear, 0},
      {Algorithm::kSlidingWindowCounter, 3'000'000'000, 86'400'000'000 + 7, 0},
      {Algorithm::kTokenBucket, kMaxLimit, 3 * kYear, 0},
      {Algorithm::kTokenBucket, 1'000'000'007, 86'400'000'000 + 3, 2'000'000'011},
      {Algorithm::kSlidingWindowLog, kMaxLimit, 3 * kYear, 0},
  };
  std::mt19937_64 rng(2024);
  for (const LimitSpec& spec : specs) {
    ReferenceModel model(spec);
    const std::string key = "huge/" + Describe(spec);
    Micros now = kStart;
    for (int i = 0; i < 1500; ++i) {
      now += static_cast<Micros>(rng() % static_cast<std::uint64_t>(spec.window / 50));
      const std::uint64_t cost = rng() % 5 == 0 ? 0 : 1 + rng() % (spec.capacity() / 3 + 1);
      const Verdict want = model.hit(cost, now);
      const Verdict got = ApplyOne(*store_, key, spec, cost, now);
      ASSERT_EQ(got, want) << "hit " << i << " " << Describe(spec) << " cost " << cost;
    }
  }
}

// Exactness: starting full, a token bucket admits at most b + floor(H * n / W) over any horizon
// H, and a window algorithm never admits more than n inside one of its windows.
TEST_P(StoreConformance, NeverAdmitsMoreThanTheContract) {
  for (Algorithm a : kAlgorithms) {
    std::mt19937_64 rng(99 + static_cast<int>(a));
    LimitSpec spec{a, 10, 1'000'000, a == Algorithm::kTokenBucket ? 15u : 0u};
    const std::string key = "exact/" + std::string(algorithm_name(a));
    std::vector<std::pair<Micros, std::uint64_t>> admitted;
    Micros now = kStart;
    for (int i = 0; i < 20'000; ++i) {
      now += static_cast<Micros>(rng() % 40'000);  // offered load ~ 5x the limit
      const std::uint64_t cost = 1 + rng() % 3;
      if (ApplyOne(*store_, key, spec, cost, now).allowed) admitted.emplace_back(now, cost);
    }
    ASSERT_FALSE(admitted.empty());
    const Micros w = spec.window;
    if (a == Algorithm::kTokenBucket) {
      // Every horizon [admitted[i].t, admitted[j].t]: sum <= b + floor(H n / W).
      for (std::size_t i = 0; i < admitted.size(); i += 7) {
        std::uint64_t sum = 0;
        for (std::size_t j = i; j < admitted.size(); ++j) {
          sum += admitted[j].second;
          const Micros h = admitted[j].first - admitted[i].first;
          const std::uint64_t bound =
              spec.capacity() + static_cast<std::uint64_t>(h / w * 10 + (h % w) * 10 / w);
          ASSERT_LE(sum, bound) << "horizon " << h;
        }
      }
    } else {
      // Any window (t - W, t] for the log; the aligned windows for the others.
      for (std::size_t j = 0; j < admitted.size(); ++j) {
        std::uint64_t sum = 0;
        for (std::size_t i = j + 1; i-- > 0;) {
          const bool inside =
              a == Algorithm::kSlidingWindowLog
                  ? admitted[i].first > admitted[j].first - w
                  : floor_div(admitted[i].first, w) == floor_div(admitted[j].first, w);
          if (!inside) break;
          sum += admitted[i].second;
        }
        ASSERT_LE(sum, spec.limit) << "window ending " << admitted[j].first;
      }
    }
  }
}

TEST_P(StoreConformance, ClockSteppingBackNeverAdmitsMore) {
  for (Algorithm a : kAlgorithms) {
    LimitSpec spec{a, 5, 1'000'000, 0};
    const std::string key = "backwards/" + std::string(algorithm_name(a));
    int allowed = 0;
    for (int i = 0; i < 5; ++i)
      allowed += ApplyOne(*store_, key, spec, 1, kStart + 900'000).allowed;
    EXPECT_EQ(allowed, 5);
    // The clock steps back two windows: no window's worth of refill appears.
    Verdict v = ApplyOne(*store_, key, spec, 1, kStart - 2'000'000);
    EXPECT_FALSE(v.allowed) << algorithm_name(a);
    EXPECT_GT(v.retry_after, 0);
  }
}

TEST_P(StoreConformance, ZeroCostReportsWithoutConsuming) {
  for (Algorithm a : kAlgorithms) {
    LimitSpec spec{a, 3, 1'000'000, 0};
    const std::string key = "zero/" + std::string(algorithm_name(a));
    for (int i = 0; i < 10; ++i) {
      Verdict v = ApplyOne(*store_, key, spec, 0, kStart);
      EXPECT_TRUE(v.allowed);
      EXPECT_EQ(v.remaining, 3u);
    }
    EXPECT_EQ(ApplyOne(*store_, key, spec, 3, kStart).remaining, 0u);
  }
}

TEST_P(StoreConformance, CostBeyondCapacityIsNeverRetriable) {
  for (Algorithm a : kAlgorithms) {
    LimitSpec spec{a, 3, 1'000'000, 0};
    Verdict v = ApplyOne(*store_, "huge/" + std::string(algorithm_name(a)), spec, 4, kStart);
    EXPECT_FALSE(v.allowed);
    EXPECT_EQ(v.retry_after, kNever);
    EXPECT_EQ(v.remaining, 3u);
  }
}

TEST_P(StoreConformance, ZeroLimitBlocksEverything) {
  for (Algorithm a : kAlgorithms) {
    LimitSpec spec{a, 0, 1'000'000, 0};
    Verdict v = ApplyOne(*store_, "block/" + std::string(algorithm_name(a)), spec, 1, kStart);
    EXPECT_FALSE(v.allowed);
    EXPECT_EQ(v.retry_after, kNever);
    EXPECT_TRUE(
        ApplyOne(*store_, "block/" + std::string(algorithm_name(a)), spec, 0, kStart).allowed);
  }
}

// All-or-nothing: with two limits where one denies, neither consumes.
TEST_P(StoreConformance, SeveralHitsAreAllOrNothing) {
  for (Algorithm a : kAlgorithms) {
    const std::string tight = "aon/tight/" + std::string(algorithm_name(a));
    const std::string loose = "aon/loose/" + std::string(algorithm_name(a));
    LimitSpec tight_spec{a, 2, 1'000'000, 0};
    LimitSpec loose_spec{a, 100, 1'000'000, 0};
    Hit hits[2] = {{loose, &loose_spec, 1, true}, {tight, &tight_spec, 1, true}};
    Verdict out[2];
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(store_->apply(hits, kStart, out).ok());
      EXPECT_TRUE(out[0].allowed && out[1].allowed);
    }
    EXPECT_EQ(out[0].remaining, 98u);
    ASSERT_TRUE(store_->apply(hits, kStart, out).ok());
    EXPECT_TRUE(out[0].allowed);       // this limit alone would pass...
    EXPECT_FALSE(out[1].allowed);      // ...but this one denies,
    EXPECT_EQ(out[0].remaining, 98u);  // so the first consumed nothing.
    EXPECT_EQ(ApplyOne(*store_, loose, loose_spec, 0, kStart).remaining, 98u);

    // A shadow (non-enforced) limit that denies does not block the others.
    hits[1].enforce = false;
    ASSERT_TRUE(store_->apply(hits, kStart, out).ok());
    EXPECT_TRUE(out[0].allowed);
    EXPECT_FALSE(out[1].allowed);
    EXPECT_EQ(out[0].remaining, 97u);
  }
}

TEST_P(StoreConformance, KeysAreIndependent) {
  LimitSpec spec{Algorithm::kFixedWindow, 1, 1'000'000, 0};
  EXPECT_TRUE(ApplyOne(*store_, "indep/a", spec, 1, kStart).allowed);
  EXPECT_TRUE(ApplyOne(*store_, "indep/b", spec, 1, kStart).allowed);
  EXPECT_FALSE(ApplyOne(*store_, "indep/a", spec, 1, kStart).allowed);
  // Binary keys with NUL bytes are distinct keys too.
  EXPECT_TRUE(ApplyOne(*store_, std::string("indep/\0x", 8), spec, 1, kStart).allowed);
  EXPECT_TRUE(ApplyOne(*store_, std::string("indep/\0y", 8), spec, 1, kStart).allowed);
}

}  // namespace
}  // namespace sluice::testing
