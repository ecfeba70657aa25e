// The Limiter end to end over the memory store: Envoy's matching rules, path rules,
// all-or-nothing, shadow mode, unlimited, replaces, overrides, costs and rule swaps.
#include "sluice/limiter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <optional>
#include <thread>
#include <tuple>

#include "sluice/memory_store.h"

namespace sluice {
namespace {

constexpr Micros kT0 = seconds_to_micros(1'700'000'000);

LimitDef Named(LimitDef def, std::string name, std::vector<std::string> replaces = {}) {
  def.name = std::move(name);
  def.replaces = std::move(replaces);
  return def;
}

DescriptorRule Node(std::string key, std::string value, std::vector<LimitDef> limits,
                    std::vector<DescriptorRule> children = {}) {
  DescriptorRule r;
  r.key = std::move(key);
  r.value = std::move(value);
  r.limits = std::move(limits);
  r.descriptors = std::move(children);
  return r;
}

// The Envoy-style rules every test below decides against.
std::shared_ptr<const RuleSet> EnvoyRules() {
  RuleSource src;
  DomainRules d;
  d.domain = "test";
  d.descriptors.push_back(
      Node("key1", "value1", {}, {Node("subkey1", "", {LimitDef::per_unit(5, Unit::kSecond)})}));
  d.descriptors.push_back(Node("key2", "", {LimitDef::per_unit(20, Unit::kMinute)}));
  d.descriptors.push_back(Node("key2", "value2", {LimitDef::per_unit(30, Unit::kMinute)}));
  d.descriptors.push_back(Node("key3", "foo*", {LimitDef::per_unit(2, Unit::kHour)}));
  d.descriptors.push_back(Node("key3", "*bar*", {LimitDef::per_unit(3, Unit::kHour)}));
  LimitDef unlimited;
  unlimited.unlimited = true;
  d.descriptors.push_back(Node("key4", "", {unlimited}));
  DescriptorRule shadow = Node("key5", "v", {LimitDef::per_unit(1, Unit::kSecond)});
  shadow.shadow_mode = true;
  d.descriptors.push_back(shadow);
  d.descriptors.push_back(
      Node("key6", "a", {Named(LimitDef::per_unit(10, Unit::kSecond), "a", {"b"})}));
  d.descriptors.push_back(Node("key7", "b", {Named(LimitDef::per_unit(1, Unit::kSecond), "b")}));
  // Several limits on one descriptor: a burst and a sustained rate.
  LimitDef burst = LimitDef::per_unit(10, Unit::kSecond, Algorithm::kTokenBucket);
  burst.spec.burst = 3;
  d.descriptors.push_back(Node(
      "key8", "", {burst, LimitDef::per_unit(5, Unit::kMinute, Algorithm::kSlidingWindowLog)}));
  src.domains.push_back(d);

  PathRule login;
  login.path = "/login";
  login.descriptors.push_back({"user_id", std::nullopt, {LimitDef::per_unit(3, Unit::kMinute)}});
  login.descriptors.push_back({"plan", "free", {LimitDef::per_unit(1, Unit::kMinute)}});
  src.path_rules.push_back(login);
  PathRule api;
  api.path = "/api/*";
  api.descriptors.push_back(
      {"api_key", std::nullopt, {LimitDef::per_unit(2, Unit::kSecond, Algorithm::kTokenBucket)}});
  src.path_rules.push_back(api);
  return RuleSet::compile(std::move(src));
}

Descriptor D(std::vector<DescriptorEntry> entries) {
  return Descriptor{std::move(entries), {}, {}};
}

class LimiterTest : public ::testing::Test {
 protected:
  Decision Decide(std::vector<Descriptor> descriptors, std::uint64_t cost = 1,
                  std::string domain = "test") {
    return limiter_.decide(Request{std::move(domain), std::move(descriptors), cost});
  }
  Decision Decide(Descriptor d) { return Decide(std::vector<Descriptor>{std::move(d)}); }
  // Hits until denied; returns how many passed (at most `cap`).
  int PassesOf(const Descriptor& d, int cap = 100) {
    for (int i = 0; i < cap; ++i) {
      if (!Decide(d).allowed) return i;
    }
    return cap;
  }

  ManualClock clock_{kT0};
  MemoryStore store_;
  Limiter limiter_{EnvoyRules(), store_, clock_};
};

// decide_async() on a store that decides here completes before it returns, with the verdict
// decide() gives; the request may go away at once.
TEST_F(LimiterTest, DecideAsyncOnTheMemoryStoreCompletesAtOnceWithTheSameVerdicts) {
  const Descriptor d = D({{"key1", "value1"}, {"subkey1", "async"}});
  int completed = 0, allowed = 0;
  for (int i = 0; i < 8; ++i) {
    {
      const Request r{"test", {d}, 1};
      limiter_.decide_async(r, [&](Decision dec) {
        ++completed;
        allowed += dec.allowed;
        EXPECT_TRUE(dec.error.empty());
      });
    }
    EXPECT_EQ(completed, i + 1) << "completed inside decide_async";
  }
  EXPECT_EQ(allowed, 5);
  EXPECT_FALSE(Decide(d).allowed) << "the async decisions consumed";
  bool unmatched = false;
  limiter_.decide_async(Request{"nope", {d}, 1},
                        [&](Decision dec) { unmatched = dec.allowed && dec.statuses.empty(); });
  EXPECT_TRUE(unmatched);
}

TEST_F(LimiterTest, NestedDescriptorsApplyAtTheLastEntry) {
  EXPECT_EQ(PassesOf(D({{"key1", "value1"}, {"subkey1", "x"}})), 5);
  // Each value of a key-only default has its own counter.
  EXPECT_EQ(PassesOf(D({{"key1", "value1"}, {"subkey1", "y"}})), 5);
  Decision d = Decide(D({{"key1", "value1"}, {"subkey1", "x"}}));
  ASSERT_EQ(d.statuses.size(), 1u);
  EXPECT_EQ(d.statuses[0].name, "test.key1_value1.subkey1");
  EXPECT_EQ(d.statuses[0].limit, 5u);
  EXPECT_EQ(d.retry_after, 1'000'000);
}

TEST_F(LimiterTest, DepthRuleNeedsTheLimitAtTheLastEntry) {
  // The parent has no limit of its own.
  EXPECT_TRUE(Decide(D({{"key1", "value1"}})).statuses.empty());
  // More entries than the rules go deep: no limit.
  EXPECT_TRUE(Decide(D({{"key2", "x"}, {"deeper", "y"}})).statuses.empty());
  EXPECT_TRUE(Decide(D({{"key1", "value1"}, {"subkey1", "x"}, {"z", "1"}})).statuses.empty());
  // A wrong first entry stops matching.
  EXPECT_TRUE(Decide(D({{"nope", "x"}, {"subkey1", "x"}})).statuses.empty());
}

TEST_F(LimiterTest, ExactValueBeatsKeyOnlyDefault) {
  EXPECT_EQ(PassesOf(D({{"key2", "value2"}})), 30);
  EXPECT_EQ(PassesOf(D({{"key2", "other"}})), 20);
  EXPECT_EQ(PassesOf(D({{"key2", "another"}})), 20);
}

TEST_F(LimiterTest, WildcardsMatchInFileOrderWithPerValueCounters) {
  EXPECT_EQ(PassesOf(D({{"key3", "foo"}})), 2);
  EXPECT_EQ(PassesOf(D({{"key3", "foobar"}})), 2);  // the first wildcard wins
  EXPECT_EQ(PassesOf(D({{"key3", "xbarx"}})), 3);   // `*` in the middle
  EXPECT_TRUE(Decide(D({{"key3", "nothing"}})).statuses.empty());
}

TEST_F(LimiterTest, UnlimitedIsReportedButNeverCounted) {
  for (int i = 0; i < 1000; ++i) {
    Decision d = Decide(D({{"key4", "anything"}}));
    ASSERT_TRUE(d.allowed);
    ASSERT_EQ(d.statuses.size(), 1u);
    EXPECT_TRUE(d.statuses[0].unlimited);
  }
  EXPECT_EQ(store_.size(), 0u);
}

TEST_F(LimiterTest, ShadowModeReportsButNeverDenies) {
  EXPECT_TRUE(Decide(D({{"key5", "v"}})).allowed);
  Decision d = Decide(D({{"key5", "v"}}));
  EXPECT_TRUE(d.allowed);
  ASSERT_EQ(d.statuses.size(), 1u);
  EXPECT_FALSE(d.statuses[0].allowed);
  EXPECT_TRUE(d.statuses[0].shadow);
}

TEST_F(LimiterTest, ReplacesDropsTheNamedLimit) {
  // Alone, "b" allows 1 per second.
  EXPECT_EQ(PassesOf(D({{"key7", "b"}})), 1);
  // With "a" in the same request, "b" is replaced: "a" (10/s) decides.
  int passed = 0;
  for (int i = 0; i < 20; ++i) {
    Decision d = Decide({D({{"key6", "a"}}), D({{"key7", "b"}})});
    ASSERT_EQ(d.statuses.size(), 1u);
    EXPECT_EQ(d.statuses[0].name, "a");
    passed += d.allowed;
  }
  EXPECT_EQ(passed, 10);
}

TEST_F(LimiterTest, UnknownDomainIsAllowedWithoutStatus) {
  Decision d = Decide({D({{"key2", "x"}})}, 1, "no-such-domain");
  EXPECT_TRUE(d.allowed);
  EXPECT_TRUE(d.statuses.empty());
  EXPECT_EQ(d.limit, 0u);
}

TEST_F(LimiterTest, AllOrNothingAcrossDescriptors) {
  // "b" allows one per second; key2=value2 allows 30 per minute.
  EXPECT_TRUE(Decide({D({{"key2", "value2"}}), D({{"key7", "b"}})}).allowed);
  for (int i = 0; i < 5; ++i) {
    Decision d = Decide({D({{"key2", "value2"}}), D({{"key7", "b"}})});
    EXPECT_FALSE(d.allowed);
    EXPECT_TRUE(d.statuses[0].allowed);
    EXPECT_EQ(d.statuses[0].remaining, 29u) << "the passing limit consumed nothing";
    EXPECT_FALSE(d.statuses[1].allowed);
    EXPECT_EQ(d.retry_after, d.statuses[1].retry_after);
  }
  EXPECT_EQ(PassesOf(D({{"key2", "value2"}})), 29);
}

TEST_F(LimiterTest, SeveralLimitsOnOneDescriptor) {
  // A burst of 3 (token bucket, 10/s) and 5 per minute (sliding log).
  EXPECT_EQ(PassesOf(D({{"key8", "u"}})), 3);
  clock_.advance(std::chrono::seconds(1));
  Decision d = Decide(D({{"key8", "u"}}));
  ASSERT_EQ(d.statuses.size(), 2u);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, 1u) << "the sustained limit is the most constraining";
  EXPECT_EQ(d.limit, 5u);
  EXPECT_TRUE(Decide(D({{"key8", "u"}})).allowed);
  EXPECT_FALSE(Decide(D({{"key8", "u"}})).allowed);
  clock_.advance(std::chrono::seconds(60));
  EXPECT_TRUE(Decide(D({{"key8", "u"}})).allowed);
}

TEST_F(LimiterTest, CostsAndChecks) {
  Descriptor heavy = D({{"key2", "c"}});
  heavy.cost = 15;
  EXPECT_TRUE(Decide(heavy).allowed);
  EXPECT_FALSE(Decide(heavy).allowed);
  // Cost 0 reports without consuming.
  Decision check = Decide({D({{"key2", "c"}})}, 0);
  EXPECT_TRUE(check.allowed);
  EXPECT_EQ(check.remaining, 5u);
  EXPECT_EQ(Decide({D({{"key2", "c"}})}, 5).remaining, 0u);
}

TEST_F(LimiterTest, RequestLimitOverride) {
  Descriptor d = D({{"key2", "o"}});
  d.limit = LimitOverride{2, Unit::kSecond};
  EXPECT_EQ(PassesOf(d), 2);
  clock_.advance(std::chrono::seconds(1));
  EXPECT_EQ(PassesOf(d), 2);
}

TEST_F(LimiterTest, WindowsPassWithTheManualClock) {
  Descriptor d = D({{"key1", "value1"}, {"subkey1", "t"}});
  EXPECT_EQ(PassesOf(d), 5);
  clock_.advance(std::chrono::milliseconds(999));
  EXPECT_FALSE(Decide(d).allowed);
  clock_.advance(std::chrono::milliseconds(1));
  EXPECT_EQ(PassesOf(d), 5);
}

TEST_F(LimiterTest, PathRules) {
  PathRequest login{"/login", {{"user_id", "42"}}, 1};
  int passed = 0;
  for (int i = 0; i < 5; ++i)
    passed += limiter_.decide(login).allowed;
  EXPECT_EQ(passed, 3);
  EXPECT_TRUE(limiter_.decide(PathRequest{"/login", {{"user_id", "43"}}, 1}).allowed);
  // A descriptor with a value applies only to that value.
  PathRequest free_plan{"/login", {{"plan", "free"}}, 1};
  EXPECT_TRUE(limiter_.decide(free_plan).allowed);
  EXPECT_FALSE(limiter_.decide(free_plan).allowed);
  EXPECT_TRUE(limiter_.decide(PathRequest{"/login", {{"plan", "pro"}}, 1}).statuses.empty());
  // Data without a rule's key, or another path: no limit.
  EXPECT_TRUE(limiter_.decide(PathRequest{"/login", {{"other", "1"}}, 1}).statuses.empty());
  EXPECT_TRUE(limiter_.decide(PathRequest{"/logout", {{"user_id", "42"}}, 1}).statuses.empty());
  // Wildcard paths share one counter per key value across the paths they cover.
  EXPECT_TRUE(limiter_.decide(PathRequest{"/api/a", {{"api_key", "k"}}, 1}).allowed);
  EXPECT_TRUE(limiter_.decide(PathRequest{"/api/b", {{"api_key", "k"}}, 1}).allowed);
  Decision d = limiter_.decide(PathRequest{"/api/c", {{"api_key", "k"}}, 1});
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.statuses[0].name, "path:/api/*.api_key");
  EXPECT_EQ(d.retry_after, 500'000);
}

TEST(LimiterKeys, RulesThatLookAlikeNeverShareACounter) {
  // "a_b" and a=b read the same in Envoy's dotted names; their counters must stay apart. So
  // must path /a.k with key x and path /a with key k.x.
  RuleSource src;
  for (auto [path, key, value] : {std::tuple{"/p", "a_b", std::optional<std::string>{}},
                                  std::tuple{"/p", "a", std::optional<std::string>{"b"}},
                                  std::tuple{"/a.k", "x", std::optional<std::string>{}},
                                  std::tuple{"/a", "k.x", std::optional<std::string>{}}}) {
    PathRule rule;
    rule.path = path;
    rule.descriptors.push_back({key, value, {LimitDef::per_unit(1, Unit::kMinute)}});
    src.path_rules.push_back(rule);
  }
  ManualClock clock(kT0);
  MemoryStore store;
  Limiter limiter(RuleSet::compile(std::move(src)), store, clock);
  EXPECT_TRUE(limiter.decide(PathRequest{"/p", {{"a_b", "b"}}, 1}).allowed);
  EXPECT_TRUE(limiter.decide(PathRequest{"/p", {{"a", "b"}}, 1}).allowed);
  EXPECT_TRUE(limiter.decide(PathRequest{"/a.k", {{"x", "v"}}, 1}).allowed);
  EXPECT_TRUE(limiter.decide(PathRequest{"/a", {{"k.x", "v"}}, 1}).allowed);
  EXPECT_FALSE(limiter.decide(PathRequest{"/a", {{"k.x", "v"}}, 1}).allowed);
}

TEST_F(LimiterTest, SwappingRulesKeepsCountersOfUnchangedLimits) {
  Descriptor d = D({{"key2", "swap"}});
  EXPECT_EQ(PassesOf(d), 20);
  limiter_.set_rules(EnvoyRules());
  EXPECT_FALSE(Decide(d).allowed);
  limiter_.set_rules(RuleSet::empty());
  EXPECT_TRUE(Decide(d).statuses.empty());
}

TEST_F(LimiterTest, ThreadsDecideWhileRulesChange) {
  std::atomic<bool> stop{false};
  std::atomic<int> passed{0};
  std::vector<std::thread> deciders;
  for (int t = 0; t < 3; ++t) {
    deciders.emplace_back([&] {
      Descriptor d = D({{"key2", "value2"}});
      for (int i = 0; i < 3000; ++i) {
        if (limiter_.decide(Request{"test", {d}, 1}).allowed) passed.fetch_add(1);
      }
    });
  }
  std::thread swapper([&] {
    for (int i = 0; i < 200 && !stop; ++i)
      limiter_.set_rules(EnvoyRules());
  });
  for (auto& th : deciders)
    th.join();
  stop = true;
  swapper.join();
  EXPECT_EQ(passed.load(), 30);
}

}  // namespace
}  // namespace sluice
