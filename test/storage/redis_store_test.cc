// The Redis store against a real redis-server: faults (killed, paused, slow, script cache flushed),
// failure modes through the Limiter, and threads on one key.
#include "sluice/redis_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "sluice/limiter.h"
#include "sluice/over_limit_cache.h"
#include "storage/redis/client.h"
#include "storage/redis/decide.h"
#include "storage/redis/script.h"
#include "storage/redis/sha1.h"
#include "support/delay_proxy.h"
#include "support/failure_mode_rules.h"
#include "support/redis_harness.h"

namespace sluice {
namespace {

using std::chrono::milliseconds;
using Steady = std::chrono::steady_clock;
constexpr Micros kT0 = seconds_to_micros(1'700'000'000);

// A rule per failure mode: 5 per minute on a key-only descriptor.
std::shared_ptr<const RuleSet> Rules() {
  return testing::OpenAndClosedRules("faults", 5, Unit::kMinute, Algorithm::kTokenBucket);
}

Request Hit(std::string key, std::string value = "u") {
  return Request{"faults", {Descriptor{{{std::move(key), std::move(value)}}, {}, {}}}, 1};
}

class RedisFaults : public ::testing::Test {
 protected:
  RedisStoreOptions Options() {
    RedisStoreOptions o;
    o.port = server_.port();
    o.command_timeout = milliseconds(200);
    o.connect_timeout = milliseconds(200);
    o.breaker_min_open = milliseconds(50);
    o.breaker_max_open = milliseconds(200);
    return o;
  }
  // Decides until a decision comes from the store again; bounded. Returns whether it did.
  bool RecoversWithin(Limiter& limiter, const Request& r, milliseconds bound) {
    const auto until = Steady::now() + bound;
    while (Steady::now() < until) {
      if (limiter.decide(r).error.empty()) return true;
      std::this_thread::sleep_for(milliseconds(20));  // waiting for a reconnect, not a window
    }
    return false;
  }

  testing::RedisServer server_;
  ManualClock clock_{kT0};
};

TEST_F(RedisFaults, KilledAndRestartedRedisFollowsFailureModesThenRecovers) {
  RedisStore store(Options());
  Limiter limiter(Rules(), store, clock_);
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(limiter.decide(Hit("open")).allowed);
  ASSERT_TRUE(limiter.decide(Hit("closed")).error.empty());

  server_.kill();
  for (int i = 0; i < 20; ++i) {
    const auto start = Steady::now();
    Decision open = limiter.decide(Hit("open"));
    Decision closed = limiter.decide(Hit("closed"));
    EXPECT_LT(Steady::now() - start, milliseconds(1000)) << "a dead Redis never slows decisions";
    EXPECT_TRUE(open.allowed) << "failure_mode allow";
    EXPECT_FALSE(closed.allowed) << "failure_mode deny";
    ASSERT_EQ(open.statuses.size(), 1u);
    EXPECT_TRUE(open.statuses[0].without_store);
    EXPECT_FALSE(open.error.empty());
  }
  EXPECT_GE(limiter.store_failures(), 40u);

  server_.restart();  // no persistence: the state is gone with the process
  ASSERT_TRUE(RecoversWithin(limiter, Hit("open", "fresh"), milliseconds(5000)));
  Decision d = limiter.decide(Hit("open", "fresh"));
  EXPECT_TRUE(d.error.empty());
  EXPECT_EQ(d.remaining, 3u);  // two consumed since recovery
}

TEST_F(RedisFaults, PausedRedisTimesOutThenTheBreakerFailsFast) {
  RedisStore store(Options());
  Limiter limiter(Rules(), store, clock_);
  ASSERT_TRUE(limiter.decide(Hit("open")).error.empty());

  server_.pause();
  int slow = 0;
  const auto start = Steady::now();
  for (int i = 0; i < 50; ++i) {
    const auto t = Steady::now();
    Decision d = limiter.decide(Hit("open"));
    EXPECT_TRUE(d.allowed);
    EXPECT_FALSE(d.error.empty());
    const auto took = Steady::now() - t;
    EXPECT_LT(took, milliseconds(600)) << "no decision waits past the timeout";
    if (took > milliseconds(100)) ++slow;
  }
  // Only the first call (and the breaker's occasional probe) waits for the timeout.
  EXPECT_LE(slow, 3);
  EXPECT_LT(Steady::now() - start, milliseconds(2500));
  EXPECT_TRUE(store.circuit_open());

  server_.resume();
  ASSERT_TRUE(RecoversWithin(limiter, Hit("open"), milliseconds(5000)));
  EXPECT_FALSE(store.circuit_open());
}

// A paused Redis: asynchronous decisions still complete, within the command timeout, decided by
// their limits' failure modes.
TEST_F(RedisFaults, AsyncDecisionsCompleteWithinTheTimeoutWhenRedisIsPaused) {
  RedisStore store(Options());
  Limiter limiter(Rules(), store, clock_);
  ASSERT_TRUE(limiter.decide(Hit("closed")).error.empty());
  server_.pause();
  std::mutex mu;
  std::condition_variable cv;
  int completed = 0, denied_with_error = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) {
    limiter.decide_async(Hit("closed"), [&](Decision dec) {
      std::lock_guard lock(mu);
      denied_with_error += !dec.allowed && !dec.error.empty();
      ++completed;
      cv.notify_all();
    });
  }
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(5), [&] { return completed == 20; }));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1500));
  EXPECT_EQ(denied_with_error, 20) << "failure_mode deny";
  server_.resume();
}

// A store that reaches Redis through a DelayProxy, and a limiter on it.
class SlowRedis : public RedisFaults {
 protected:
  RedisStoreOptions ThroughProxy() {
    RedisStoreOptions o = Options();
    o.port = proxy.port();
    return o;
  }
  testing::DelayProxy proxy{server_.host(), server_.port()};
  RedisStore store{ThroughProxy()};
  Limiter limiter{Rules(), store, clock_};
};

// A slow Redis (test/support/delay_proxy.h holds every reply): below the command timeout decisions
// are exact, only slower; above it they fail within the timeout, their limits' failure_mode
// decides, the breaker opens, and once replies are prompt again decisions recover.
TEST_F(SlowRedis, BelowTheTimeoutDecidesExactlyAboveItFailsFastThenRecovers) {
  proxy.set_delay(milliseconds(60));  // below the 200 ms timeout
  int allowed = 0;
  for (int i = 0; i < 7; ++i) {
    const auto t = Steady::now();
    Decision d = limiter.decide(Hit("closed", "slow"));
    EXPECT_GE(Steady::now() - t, milliseconds(60)) << "the reply was held";
    EXPECT_TRUE(d.error.empty()) << d.error;
    allowed += d.allowed;
  }
  EXPECT_EQ(allowed, 5) << "5 per minute, exactly, however slow";
  EXPECT_FALSE(store.circuit_open());

  proxy.set_delay(milliseconds(700));  // above the timeout
  int slow = 0;
  for (int i = 0; i < 20; ++i) {
    const auto t = Steady::now();
    Decision open = limiter.decide(Hit("open", "late"));
    Decision closed = limiter.decide(Hit("closed", "late"));
    const auto took = Steady::now() - t;
    EXPECT_LT(took, milliseconds(650)) << "no decision waits past the timeout (two of them here)";
    if (took > milliseconds(100)) ++slow;
    EXPECT_TRUE(open.allowed) << "failure_mode allow";
    EXPECT_FALSE(closed.allowed) << "failure_mode deny";
    EXPECT_FALSE(open.error.empty());
    EXPECT_FALSE(closed.error.empty());
  }
  EXPECT_LE(slow, 4) << "the breaker answers at once after the first timeout";
  EXPECT_TRUE(store.circuit_open());

  proxy.set_delay(milliseconds(0));
  ASSERT_TRUE(RecoversWithin(limiter, Hit("closed", "after"), milliseconds(5000)));
  EXPECT_FALSE(store.circuit_open());
  allowed = 1;  // RecoversWithin's decision consumed one
  for (int i = 0; i < 6; ++i) {
    Decision d = limiter.decide(Hit("closed", "after"));
    EXPECT_TRUE(d.error.empty()) << d.error;
    allowed += d.allowed;
  }
  EXPECT_EQ(allowed, 5);
}

// decide_async through a slow Redis: below the timeout every decision completes on the store's
// I/O thread, decided by Redis; above it every one completes within the timeout, decided by
// failure_mode; then they recover.
TEST_F(SlowRedis, AsyncDecisionsCompleteWithinTheTimeout) {
  // Sends `n` asynchronous decisions on `value`; waits (bounded) for all; returns (allowed,
  // with an error, how long the last took from the first send).
  struct Outcome {
    int completed = 0, allowed = 0, errors = 0;
    Steady::duration took{};
  };
  auto run = [&](const std::string& key, const std::string& value, int n) {
    std::mutex mu;
    std::condition_variable cv;
    Outcome out;
    const auto start = Steady::now();
    for (int i = 0; i < n; ++i) {
      limiter.decide_async(Hit(key, value), [&](Decision d) {
        std::lock_guard lock(mu);
        out.allowed += d.allowed;
        out.errors += !d.error.empty();
        if (++out.completed == n) out.took = Steady::now() - start;
        cv.notify_all();
      });
    }
    std::unique_lock lock(mu);
    cv.wait_for(lock, std::chrono::seconds(5), [&] { return out.completed == n; });
    return out;
  };

  proxy.set_delay(milliseconds(60));
  Outcome below = run("closed", "async-slow", 8);
  ASSERT_EQ(below.completed, 8);
  EXPECT_EQ(below.errors, 0);
  EXPECT_EQ(below.allowed, 5) << "exact through Redis";
  EXPECT_GE(below.took, milliseconds(60));

  proxy.set_delay(milliseconds(700));
  Outcome above = run("closed", "async-late", 20);
  ASSERT_EQ(above.completed, 20);
  EXPECT_EQ(above.errors, 20);
  EXPECT_EQ(above.allowed, 0) << "failure_mode deny";
  EXPECT_LT(above.took, milliseconds(600)) << "within the 200 ms timeout (and some slack)";

  proxy.set_delay(milliseconds(0));
  ASSERT_TRUE(RecoversWithin(limiter, Hit("closed", "async-after"), milliseconds(5000)));
  Outcome after = run("closed", "async-after", 6);
  ASSERT_EQ(after.completed, 6);
  EXPECT_EQ(after.errors, 0);
  EXPECT_EQ(after.allowed, 4) << "5 per minute, one taken by the recovery probe";
}

TEST_F(RedisFaults, ScriptFlushMidRunIsInvisible) {
  RedisStore store(Options());
  Limiter limiter(Rules(), store, clock_);
  int allowed = 0;
  for (int i = 0; i < 10; ++i) {
    if (i == 2 || i == 6) server_.command({"SCRIPT", "FLUSH"});
    Decision d = limiter.decide(Hit("closed", "flush"));
    EXPECT_TRUE(d.error.empty()) << d.error;
    allowed += d.allowed;
  }
  EXPECT_EQ(allowed, 5);
}

TEST_F(RedisFaults, KeysExpireOnceFullAgain) {
  RedisStore store(Options());
  Limiter limiter(Rules(), store, SystemClock::instance());
  ASSERT_TRUE(limiter.decide(Hit("open", "ttl")).allowed);
  // One token of 5 per minute refills in 12 s; the key lives that long plus the 1 s grace.
  const std::string keys = server_.command({"KEYS", "sluice:*"});
  ASSERT_FALSE(keys.empty());
  const long long ttl = std::stoll(server_.command({"PTTL", keys}));
  EXPECT_GT(ttl, 11'000);
  EXPECT_LE(ttl, 13'000);
}

TEST_F(RedisFaults, RedisTimeModeDecidesOnTheServersClock) {
  RedisStoreOptions o = Options();
  o.redis_time = true;
  RedisStore store(o);
  ManualClock far_away(seconds_to_micros(10));  // ignored: Redis's TIME decides
  Limiter limiter(Rules(), store, far_away);
  int allowed = 0;
  for (int i = 0; i < 8; ++i)
    allowed += limiter.decide(Hit("closed", "time")).allowed;
  EXPECT_EQ(allowed, 5);
}

TEST(RedisStore, ThreadsOnOneKeyNeverAdmitMoreThanTheContract) {
  testing::RedisServer server;
  for (Algorithm a : {Algorithm::kFixedWindow, Algorithm::kSlidingWindowLog,
                      Algorithm::kSlidingWindowCounter, Algorithm::kTokenBucket}) {
    RedisStoreOptions o;
    o.port = server.port();
    o.command_timeout = milliseconds(5000);
    o.prefix = std::string("threads:") + std::string(algorithm_name(a)) + ":";
    RedisStore store(o);
    const LimitSpec spec{a, 200, 60'000'000, 0};
    std::atomic<int> admitted{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 100; ++i) {
          ::sluice::Hit hit{"hot", &spec, 1, true};
          Verdict v;
          StoreStatus st = store.apply(std::span<const ::sluice::Hit>(&hit, 1), kT0 + i,
                                       std::span<Verdict>(&v, 1));
          if (st.ok() && v.allowed) admitted.fetch_add(1);
        }
      });
    }
    for (auto& th : threads)
      th.join();
    EXPECT_EQ(admitted.load(), 200) << algorithm_name(a);
  }
}

TEST(RedisStore, AuthUnixSocketAndDatabase) {
  testing::RedisServer server({.extra_args = {}, .unix_socket = true, .password = "s3cret"});
  RedisStoreOptions o;
  o.unix_path = server.unix_path();
  o.password = "s3cret";
  o.database = 2;
  RedisStore store(o);
  const LimitSpec spec{Algorithm::kFixedWindow, 1, 1'000'000, 0};
  ::sluice::Hit hit{"k", &spec, 1, true};
  Verdict v;
  ASSERT_TRUE(
      store.apply(std::span<const ::sluice::Hit>(&hit, 1), kT0, std::span<Verdict>(&v, 1)).ok());
  EXPECT_TRUE(v.allowed);
  EXPECT_EQ(server.command({"SELECT", "2"}), "OK");
  EXPECT_EQ(store.name(), "redis+unix://" + server.unix_path());

  RedisStoreOptions wrong = o;
  wrong.password = "nope";
  RedisStore refused(wrong);
  StoreStatus st =
      refused.apply(std::span<const ::sluice::Hit>(&hit, 1), kT0, std::span<Verdict>(&v, 1));
  EXPECT_FALSE(st.ok());
}

}  // namespace
}  // namespace sluice

namespace sluice::redis {
namespace {

// scripts_run() reads how many EVALSHA and EVAL calls Redis has run.
long scripts_run(testing::RedisServer& server) {
  const std::string info = server.call({"INFO", "commandstats"}).str;
  long total = 0;
  for (const char* cmd : {"cmdstat_evalsha:calls=", "cmdstat_eval:calls="}) {
    const std::size_t at = info.find(cmd);
    if (at != std::string::npos) total += std::stol(info.substr(at + std::strlen(cmd)));
  }
  return total;
}

// Strong consistency with the over-limit cache: a flood on a key over its limit reaches Redis
// once per window, and every verdict is the one Redis would give.
TEST(RedisStore, OverLimitCacheKeepsAFloodOffRedis) {
  testing::RedisServer server;
  RedisStoreOptions o;
  o.port = server.port();
  OverLimitCache cache(std::make_unique<RedisStore>(o));
  ManualClock clock(kT0);
  Limiter limiter(Rules(), cache, clock);
  const Request flood{"faults", {Descriptor{{{"open", "flood"}}, {}, {}}}, 1};
  const long before = scripts_run(server);
  int allowed = 0;
  for (int minute = 0; minute < 3; ++minute) {
    for (int i = 0; i < 2000; ++i) {
      const Decision d = limiter.decide(flood);
      ASSERT_TRUE(d.error.empty()) << d.error;
      allowed += d.allowed;
      clock.advance(std::chrono::milliseconds(10));  // 2,000 hits over 20 s
    }
    clock.advance(std::chrono::seconds(60));
  }
  // 5 per minute, refilling 1 per 12 s: 5 at once, then 1 more each 12 s of the 20 s.
  EXPECT_EQ(allowed, 3 * (5 + 1));
  const long reached = scripts_run(server) - before;
  EXPECT_LE(reached, 3 * (5 + 1 + 2 + 1)) << "admitted, plus a denial per refill";
  EXPECT_GE(cache.answered_locally(), 3u * 1990);
}

// Many decisions in flight from one thread: they complete on the store's I/O thread, share
// script calls (fewer calls than decisions), and admit exactly the limit.
TEST(RedisStore, AsyncDecisionsShareScriptCallsAndAdmitExactlyTheLimit) {
  testing::RedisServer server;
  RedisStoreOptions o;
  o.port = server.port();
  o.command_timeout = std::chrono::milliseconds(5000);
  RedisStore store(o);
  ManualClock clock(kT0);
  RuleSource src;
  DomainRules d;
  d.domain = "async";
  for (Algorithm a : {Algorithm::kFixedWindow, Algorithm::kSlidingWindowLog,
                      Algorithm::kSlidingWindowCounter, Algorithm::kTokenBucket}) {
    DescriptorRule r;
    r.key = std::string(algorithm_name(a));
    r.limits.push_back(LimitDef::per_unit(100, Unit::kMinute, a));
    d.descriptors.push_back(r);
  }
  src.domains.push_back(d);
  Limiter limiter(RuleSet::compile(std::move(src)), store, clock);

  constexpr int kPerKey = 300;
  std::mutex mu;
  std::condition_variable cv;
  int completed = 0;
  std::map<std::string, int> allowed;
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<int> on_caller{0};
  const long before = scripts_run(server);
  for (int i = 0; i < kPerKey; ++i) {
    for (Algorithm a : {Algorithm::kFixedWindow, Algorithm::kSlidingWindowLog,
                        Algorithm::kSlidingWindowCounter, Algorithm::kTokenBucket}) {
      const std::string name(algorithm_name(a));
      limiter.decide_async(Request{"async", {Descriptor{{{name, "k"}}, {}, {}}}, 1},
                           [&, name](Decision dec) {
                             if (std::this_thread::get_id() == caller) on_caller.fetch_add(1);
                             std::lock_guard lock(mu);
                             EXPECT_TRUE(dec.error.empty()) << dec.error;
                             allowed[name] += dec.allowed;
                             ++completed;
                             cv.notify_all();
                           });
    }
  }
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(
        cv.wait_for(lock, std::chrono::seconds(30), [&] { return completed == 4 * kPerKey; }));
  }
  for (const auto& [name, n] : allowed)
    EXPECT_EQ(n, 100) << name;
  EXPECT_EQ(allowed.size(), 4u);
  EXPECT_EQ(on_caller.load(), 0) << "Redis decisions complete on the store's I/O thread";
  const long calls = scripts_run(server) - before;
  std::printf("%d decisions in %ld script calls\n", 4 * kPerKey, calls);
  EXPECT_LT(calls, 4 * kPerKey) << "requests waiting while calls were out shared calls";
}

// Requests sharing a script call are decided each on its own: one whose key holds something
// that is not a sluice state answers an error in its place, the others their states.
TEST(RedisScript, ARequestThatFailsLeavesTheOthersInItsCall) {
  testing::RedisServer server;
  server.command({"SET", "bad", "not a state"});
  const LimitSpec spec{Algorithm::kFixedWindow, 10, 1'000'000, 0};
  const ::sluice::Hit good{"good", &spec, 1, true};
  const ::sluice::Hit bad{"bad", &spec, 1, true};
  const std::vector<std::string> good_key{"good"}, bad_key{"bad"};
  const DecideRequest requests[] = {{std::span(&good, 1), good_key, 1'000'000},
                                    {std::span(&bad, 1), bad_key, 1'000'000}};
  DecideCall call;
  call.build(requests, 1000, "");  // EVAL: the script text itself
  ClientOptions co;
  co.endpoint.port = server.port();
  Client client(co);
  const CommandResult r = client.command_resp(call.resp);
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  ASSERT_EQ(r.reply.type, Reply::Type::kArray);
  ASSERT_EQ(r.reply.elements.size(), 2u);
  ASSERT_EQ(r.reply.elements[0].type, Reply::Type::kArray);
  EXPECT_EQ(r.reply.elements[0].elements.size(), 3u) << "{now, committed, fresh state}";
  EXPECT_EQ(r.reply.elements[0].elements[1].integer, 1) << "committed";
  EXPECT_TRUE(r.reply.elements[1].is_error());
  EXPECT_EQ(server.command({"GET", "bad"}), "not a state") << "the failed request wrote nothing";
}

TEST(Sha1, MatchesKnownVectorsAndRedis) {
  EXPECT_EQ(sha1_hex(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  EXPECT_EQ(sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
  EXPECT_EQ(sha1_hex(std::string(1'000'000, 'a')), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
  testing::RedisServer server;
  EXPECT_EQ(server.command({"SCRIPT", "LOAD", std::string(kDecideScript)}),
            sha1_hex(kDecideScript));
}

}  // namespace
}  // namespace sluice::redis
