// The Limiter end to end over the memory store: Envoy's matching rules, path rules,
// all-or-nothing, shadow mode, unlimited, replaces, overrides, costs and rule swaps.
#include "sluice/limiter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

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

// Every field of a Decision, on one line, so that two can be compared with a readable diff.
std::string Describe(const Decision& d) {
  std::string s = std::to_string(d.allowed) + " limit=" + std::to_string(d.limit) +
                  " remaining=" + std::to_string(d.remaining) +
                  " reset=" + std::to_string(d.reset_after) +
                  " retry=" + std::to_string(d.retry_after) + " error=" + d.error;
  for (const DescriptorStatus& st : d.statuses) {
    s += " | " + std::to_string(st.descriptor_index) + " " + st.name + " " +
         std::string(algorithm_name(st.spec.algorithm)) + " " + std::to_string(st.spec.limit) +
         "/" + std::to_string(st.spec.window) + " b" + std::to_string(st.spec.burst) + " u" +
         std::to_string(static_cast<int>(st.unit)) + " " + std::to_string(st.allowed) +
         std::to_string(st.shadow) + std::to_string(st.unlimited) +
         std::to_string(st.without_store) + " " + std::to_string(st.limit) + " " +
         std::to_string(st.remaining) + " " + std::to_string(st.reset_after) + " " +
         std::to_string(st.retry_after);
  }
  return s;
}

// A random request against EnvoyRules(): nested, wildcard, unlimited, shadow, replacing and
// multi-limit descriptors, unmatched ones, overrides, per-descriptor and request costs (0 too),
// up to three descriptors (sometimes the same one twice), now and then an unknown domain; values
// over a few keys, so that limits run out.
Request RandomRequest(std::mt19937& rng) {
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  const std::string v = std::string(1, static_cast<char>('a' + pick(3)));
  Request r;
  r.domain = pick(20) == 0 ? "other" : "test";
  r.cost = pick(8) == 0 ? static_cast<std::uint64_t>(pick(3)) : 1;
  const int descriptors = 1 + pick(3);
  // One descriptor of each kind, on value v; the last one gets an override below.
  const std::vector<Descriptor> kinds = {D({{"key1", "value1"}, {"subkey1", v}}),
                                         D({{"key2", v}}),
                                         D({{"key2", "value2"}}),
                                         D({{"key3", "foo" + v}}),
                                         D({{"key3", v + "bar"}}),
                                         D({{"key4", v}}),
                                         D({{"key5", "v"}}),
                                         D({{"key6", "a"}}),
                                         D({{"key7", "b"}}),
                                         D({{"key8", v}}),
                                         D({{"no-rule", v}}),
                                         D({{"key2", v}})};
  for (int i = 0; i < descriptors; ++i) {
    const std::size_t kind = static_cast<std::size_t>(pick(static_cast<int>(kinds.size())));
    Descriptor d = kinds[kind];
    if (kind + 1 == kinds.size()) d.limit = LimitOverride{3, Unit::kSecond};
    if (pick(6) == 0) d.cost = static_cast<std::uint64_t>(pick(4));
    r.descriptors.push_back(d);
    if (pick(10) == 0) r.descriptors.push_back(d);
  }
  return r;
}

PathRequest RandomPathRequest(std::mt19937& rng) {
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  static const char* const kPaths[] = {"/login", "/api/x", "/api/y", "/nope"};
  PathRequest r;
  r.path = kPaths[pick(4)];
  r.cost = pick(8) == 0 ? static_cast<std::uint64_t>(pick(3)) : 1;
  if (pick(2) == 0)
    r.data.emplace_back("user_id", std::string(1, static_cast<char>('a' + pick(3))));
  if (pick(3) == 0) r.data.emplace_back("plan", pick(2) == 0 ? "free" : "pro");
  if (pick(2) == 0)
    r.data.emplace_back("api_key", std::string(1, static_cast<char>('a' + pick(3))));
  if (pick(4) == 0) r.data.emplace_back("other", "1");
  return r;
}

// decide_batch() on one limiter gives exactly the Decisions that decide() on each request in
// turn gives on another, fresh one: batches of every size around the look-ahead (reusing the
// same Decisions, so stale contents must not leak), the clock moving between batches, and a rule
// swap halfway.
template <class Req>
void ExpectBatchesDecideAsOneByOne(Req (*random_request)(std::mt19937&)) {
  ManualClock batch_clock(kT0), single_clock(kT0);
  MemoryStore batch_store, single_store;
  Limiter batched(EnvoyRules(), batch_store, batch_clock);
  Limiter single(EnvoyRules(), single_store, single_clock);
  std::mt19937 rng(7);
  std::vector<Decision> out;
  int denied = 0, compared = 0;
  for (int round = 0; round < 400; ++round) {
    static constexpr std::size_t kSizes[] = {0, 1, 2, 5, 7, 8, 9, 16, 17, 40};
    std::vector<Req> requests(kSizes[round % std::size(kSizes)]);
    for (Req& r : requests)
      r = random_request(rng);
    if (out.size() < requests.size()) out.resize(requests.size());
    batched.decide_batch(requests, out);
    for (std::size_t i = 0; i < requests.size(); ++i) {
      const Decision want = single.decide(requests[i]);
      ASSERT_EQ(Describe(out[i]), Describe(want)) << "round " << round << ", request " << i;
      denied += !want.allowed;
      ++compared;
    }
    if (round == 200) {
      batched.set_rules(EnvoyRules());
      single.set_rules(EnvoyRules());
    }
    const auto gap = std::chrono::milliseconds(rng() % 1500);
    batch_clock.advance(gap);
    single_clock.advance(gap);
  }
  // The sequence must exercise both verdicts, or it compares little.
  EXPECT_GT(denied, compared / 10);
  EXPECT_LT(denied, compared * 9 / 10);
}

TEST(LimiterBatch, DecidesExactlyAsDecideOneByOne) {
  ExpectBatchesDecideAsOneByOne(&RandomRequest);
}

TEST(LimiterBatch, DecidesPathRequestsExactlyAsDecideOneByOne) {
  ExpectBatchesDecideAsOneByOne(&RandomPathRequest);
}

// Within one batch, a request sees what the requests before it consumed, and a denied request
// (all-or-nothing across its descriptors) consumes nothing.
TEST_F(LimiterTest, BatchDecidesInOrder) {
  std::vector<Request> requests;
  for (int i = 0; i < 7; ++i)
    requests.push_back(Request{"test", {D({{"key1", "value1"}, {"subkey1", "order"}})}, 1});
  // key2=value2 (30/min) with key7=b (1/s): only the first passes, the others consume nothing.
  for (int i = 0; i < 3; ++i)
    requests.push_back(Request{"test", {D({{"key2", "value2"}}), D({{"key7", "b"}})}, 1});
  std::vector<Decision> out(requests.size());
  limiter_.decide_batch(requests, out);
  for (int i = 0; i < 7; ++i)
    EXPECT_EQ(out[static_cast<std::size_t>(i)].allowed, i < 5) << i;
  EXPECT_EQ(out[4].remaining, 0u);
  EXPECT_TRUE(out[7].allowed);
  EXPECT_FALSE(out[8].allowed);
  EXPECT_FALSE(out[9].allowed);
  EXPECT_EQ(out[9].statuses[0].remaining, 29u) << "denied requests consumed nothing";
  // An empty batch decides nothing and touches nothing.
  limiter_.decide_batch(std::span<const Request>(), std::span<Decision>());
}

// A store that logs every prefetch() and apply() by key, and decides in a MemoryStore.
class LoggingStore final : public Store {
 public:
  StoreStatus apply(std::span<const Hit> hits, Micros now,
                    std::span<Verdict> out) noexcept override {
    for (const Hit& h : hits)
      log.push_back("apply " + std::string(h.key));
    return inner.apply(hits, now, out);
  }
  void prefetch(std::span<const Hit> hits) noexcept override {
    for (const Hit& h : hits)
      log.push_back("prefetch " + std::string(h.key));
  }
  std::string name() const override { return "logging"; }
  bool decides_locally() const noexcept override { return true; }

  MemoryStore inner;
  std::vector<std::string> log;
};

// decide_batch() asks the store to prefetch each request's keys once, some requests ahead of
// deciding them; decide() never does.
TEST(LimiterBatch, PrefetchesEveryKeyAheadOfItsApply) {
  ManualClock clock(kT0);
  LoggingStore store;
  Limiter limiter(EnvoyRules(), store, clock);
  limiter.decide(Request{"test", {D({{"key2", "single"}})}, 1});
  EXPECT_EQ(store.log, std::vector<std::string>{"apply " + store.log.at(0).substr(6)});
  store.log.clear();

  std::vector<Request> requests;
  for (int i = 0; i < 30; ++i)
    requests.push_back(Request{"test", {D({{"key2", "k" + std::to_string(i)}})}, 1});
  std::vector<Decision> out(requests.size());
  limiter.decide_batch(requests, out);
  ASSERT_EQ(store.log.size(), 60u);
  std::size_t prefetched_before_first_apply = 0;
  while (store.log[prefetched_before_first_apply].starts_with("prefetch "))
    ++prefetched_before_first_apply;
  EXPECT_GE(prefetched_before_first_apply, 4u) << "several requests are prefetched ahead";
  for (std::size_t i = 0; i < store.log.size(); ++i) {
    if (!store.log[i].starts_with("apply ")) continue;
    const std::string key = store.log[i].substr(6);
    std::size_t prefetches = 0, before = 0;
    for (std::size_t j = 0; j < store.log.size(); ++j) {
      if (store.log[j] != "prefetch " + key) continue;
      ++prefetches;
      before += j < i;
    }
    EXPECT_EQ(prefetches, 1u) << key;
    EXPECT_EQ(before, 1u) << key << " is prefetched before it is applied";
  }
  for (const Decision& d : out)
    EXPECT_TRUE(d.allowed);
}

// decide_batch() prefetches through each shard's table address without the shard's lock while
// other threads grow the tables by inserting keys (and decide_batch's own new keys grow them
// too). Under ThreadSanitizer this must report no race; everywhere, no decision may be lost.
TEST(LimiterBatch, BatchesWhileOtherThreadsGrowTheTables) {
  ManualClock clock(kT0);
  MemoryStore store({.max_keys = 200'000, .shards = 2});
  Limiter limiter(EnvoyRules(), store, clock);
  constexpr int kKeysPerThread = 12'000;
  constexpr std::size_t kBatch = 16;
  std::atomic<int> allowed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {  // inserts one key at a time
      for (int i = 0; i < kKeysPerThread; ++i) {
        const std::string v = "insert-" + std::to_string(t) + "-" + std::to_string(i);
        allowed += limiter.decide(Request{"test", {D({{"key2", v}})}, 1}).allowed;
      }
    });
    threads.emplace_back([&, t] {  // decides in batches: each key twice, then old keys again
      std::vector<Request> requests(kBatch);
      std::vector<Decision> out(kBatch);
      for (int i = 0; i < kKeysPerThread; i += static_cast<int>(kBatch / 2)) {
        for (std::size_t k = 0; k < kBatch; ++k) {
          const int key = i + static_cast<int>(k / 2);
          requests[k] = Request{
              "test", {D({{"key2", "batch-" + std::to_string(t) + "-" + std::to_string(key)}})}, 1};
        }
        limiter.decide_batch(requests, out);
        for (const Decision& d : out)
          allowed += d.allowed;
      }
    });
  }
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(allowed.load(), 2 * kKeysPerThread + 2 * 2 * kKeysPerThread);
  EXPECT_EQ(store.size(), std::size_t{4 * kKeysPerThread});
}

}  // namespace
}  // namespace sluice
