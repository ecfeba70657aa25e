// RedisClusterStore against real Redis Clusters (test/support): slot migrations (MOVED and ASK),
// failover, requests spanning slots, and threads on one key.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "sluice/redis_cluster_store.h"
#include "storage/redis/decide.h"
#include "support/redis_harness.h"

namespace sluice::testing {

// Defined in conformance_cluster_test.cc: the binary's 3-master cluster, and its seed list.
RedisCluster& SharedCluster();
std::vector<std::string> ClusterSeeds(RedisCluster& cluster);

namespace {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// A fixed `now` (windows of an hour never roll during a test).
constexpr Micros kNow = seconds_to_micros(1'700'000'000);

RedisClusterStoreOptions Options(RedisCluster& cluster, const std::string& prefix) {
  RedisClusterStoreOptions o;
  o.seeds = ClusterSeeds(cluster);
  o.node.prefix = prefix;
  o.node.command_timeout = milliseconds(2000);
  return o;
}

int SlotOf(const std::string& prefix, const std::string& key) {
  return redis::key_slot(redis::redis_key(prefix, key));
}

// KeyInSlot() finds a store key, "<stem>/<n>", whose Redis key lands in `slot`.
std::string KeyInSlot(const std::string& prefix, int slot, const std::string& stem) {
  for (int i = 0;; ++i) {
    std::string key = stem + "/" + std::to_string(i);
    if (SlotOf(prefix, key) == slot) return key;
  }
}

// KeyOnOtherMaster() finds a store key whose slot another master than `master` serves.
std::string KeyOnOtherMaster(RedisCluster& cluster, const std::string& prefix, std::size_t master,
                             const std::string& stem) {
  for (int i = 0;; ++i) {
    std::string key = stem + "/" + std::to_string(i);
    if (cluster.owner_of_slot(SlotOf(prefix, key)) != master) return key;
  }
}

StoreStatus Apply(Store& store, const std::string& key, const LimitSpec& spec, std::uint64_t cost,
                  Verdict& v) {
  Hit hit{key, &spec, cost, true};
  return store.apply(std::span<const Hit>(&hit, 1), kNow, std::span<Verdict>(&v, 1));
}

// The fixed window count stored for `key` on the node that serves it now ("" when none).
std::string StoredCount(RedisCluster& cluster, const std::string& prefix, const std::string& key) {
  const std::string redis_key = redis::redis_key(prefix, key);
  const std::size_t owner = cluster.owner_of_slot(redis::key_slot(redis_key));
  const Reply r = cluster.node(owner).call({"GET", redis_key});
  // The state is three doubles: last, count, unused (src/storage/redis/script.cc).
  if (r.type != Reply::Type::kBulk || r.str.size() != 3 * sizeof(double)) return "";
  double count = 0;
  std::memcpy(&count, r.str.data() + sizeof(double), sizeof count);
  return std::to_string(static_cast<long long>(count));
}

std::size_t OtherMaster(RedisCluster& cluster, std::size_t master) {
  for (std::size_t m : cluster.masters()) {
    if (m != master) return m;
  }
  throw std::runtime_error("no other master");
}

TEST(RedisClusterStoreTest, NameListsTheSeeds) {
  RedisClusterStoreOptions o;
  o.seeds = {"127.0.0.1:7000", "127.0.0.1:7001"};
  o.node.connect_timeout = milliseconds(50);
  RedisClusterStore store(o);
  EXPECT_EQ(store.name(), "redis+cluster://127.0.0.1:7000,127.0.0.1:7001");
  EXPECT_THROW(RedisClusterStore(RedisClusterStoreOptions{}), std::invalid_argument);
}

TEST(RedisClusterStoreTest, LearnsTheSlotMapFromAnySeed) {
  RedisCluster& cluster = SharedCluster();
  RedisClusterStoreOptions o = Options(cluster, "seeds:");
  o.seeds.insert(o.seeds.begin(), "127.0.0.1:1");  // nothing listens there
  RedisClusterStore store(o);
  EXPECT_EQ(store.refreshes(), 1u);
  const LimitSpec spec{Algorithm::kFixedWindow, 3, seconds_to_micros(3600), 0};
  // Keys on every master.
  for (int i = 0; i < 30; ++i) {
    Verdict v;
    const StoreStatus st = Apply(store, "k" + std::to_string(i), spec, 1, v);
    ASSERT_TRUE(st.ok()) << st.message;
    EXPECT_TRUE(v.allowed);
    EXPECT_EQ(v.remaining, 2u);
  }
  // The script cache is flushed everywhere (a restart, SCRIPT FLUSH): NOSCRIPT, then EVAL.
  for (std::size_t m : cluster.masters())
    EXPECT_EQ(cluster.node(m).command({"SCRIPT", "FLUSH"}), "OK");
  for (int i = 0; i < 30; ++i) {
    Verdict v;
    const StoreStatus st = Apply(store, "k" + std::to_string(i), spec, 1, v);
    ASSERT_TRUE(st.ok()) << st.message;
    EXPECT_EQ(v.remaining, 1u);
  }
}

// A whole slot moves (MOVED) while decisions on a key in it keep coming: none fails, and the
// count carries over exactly.
TEST(RedisClusterStoreTest, SlotMigrationKeepsCountsExact) {
  RedisCluster& cluster = SharedCluster();
  const std::string prefix = "migrate:";
  RedisClusterStore store(Options(cluster, prefix));
  const std::string key = "user/1";
  const int slot = SlotOf(prefix, key);
  const std::size_t from = cluster.owner_of_slot(slot);
  const std::size_t to = OtherMaster(cluster, from);
  const LimitSpec spec{Algorithm::kFixedWindow, 100, seconds_to_micros(3600), 0};

  std::atomic<int> done{0};
  std::atomic<bool> migrated{false};
  int allowed = 0;
  std::vector<std::string> failures;
  std::thread decider([&] {
    for (int i = 0; i < 150; ++i) {
      if (i == 120) {
        while (!migrated.load())
          std::this_thread::sleep_for(milliseconds(1));
      }
      Verdict v;
      const StoreStatus st = Apply(store, key, spec, 1, v);
      if (!st.ok()) {
        failures.push_back(st.message);
      } else if (v.allowed) {
        ++allowed;
      }
      done.fetch_add(1);
      std::this_thread::sleep_for(milliseconds(1));
    }
  });
  while (done.load() < 50)
    std::this_thread::sleep_for(milliseconds(1));
  const int before = done.load();
  cluster.migrate_slot(slot, to);
  migrated.store(true);
  decider.join();

  EXPECT_LT(before, 120);
  EXPECT_EQ(cluster.owner_of_slot(slot), to);
  EXPECT_LE(failures.size(), 2u) << (failures.empty() ? "" : failures.front());
  EXPECT_EQ(allowed, 100);
  EXPECT_EQ(StoredCount(cluster, prefix, key), "100");
  Verdict v;
  ASSERT_TRUE(Apply(store, key, spec, 0, v).ok());
  EXPECT_EQ(v.remaining, 0u);

  // The map was re-read after the MOVED (at most one refresh per 100 ms).
  const std::uint64_t refreshes = store.refreshes();
  std::this_thread::sleep_for(milliseconds(150));
  ASSERT_TRUE(Apply(store, key, spec, 0, v).ok());
  EXPECT_GT(store.refreshes(), 1u);
  EXPECT_GE(store.refreshes(), refreshes);
}

// A slot in mid-migration: the keys already moved answer through ASK (ASKING + the script on one
// connection), the others on the old owner, new keys are created on the new owner; counts stay
// exact throughout, and a multi-key call whose keys are split between the nodes (TRYAGAIN) fails
// within its budget without consuming.
TEST(RedisClusterStoreTest, SplitMigrationFollowsAsk) {
  RedisCluster& cluster = SharedCluster();
  const std::string prefix = "ask:";
  RedisClusterStore store(Options(cluster, prefix));
  const std::string a = "a";
  const int slot = SlotOf(prefix, a);
  const std::string b = KeyInSlot(prefix, slot, "b");
  const std::string c = KeyInSlot(prefix, slot, "c");
  const std::size_t from = cluster.owner_of_slot(slot);
  const std::size_t to = OtherMaster(cluster, from);
  const LimitSpec spec{Algorithm::kFixedWindow, 100, seconds_to_micros(3600), 0};

  int allowed_a = 0, allowed_b = 0, allowed_c = 0, failures = 0;
  auto hit = [&](const std::string& key, int& allowed) {
    Verdict v;
    const StoreStatus st = Apply(store, key, spec, 1, v);
    if (!st.ok()) {
      ++failures;
      ADD_FAILURE() << key << ": " << st.message;
    } else if (v.allowed) {
      ++allowed;
    }
  };
  for (int i = 0; i < 40; ++i) {
    hit(a, allowed_a);
    hit(b, allowed_b);
  }

  cluster.begin_migration(slot, to);
  ASSERT_EQ(cluster.move_keys(slot, 1), 1u);  // one of a, b moves; the other stays
  for (int i = 0; i < 40; ++i) {
    hit(a, allowed_a);
    hit(b, allowed_b);
  }
  for (int i = 0; i < 60; ++i)
    hit(c, allowed_c);  // fresh: created on the importing node
  // Those went through ASK: the importing node saw ASKING.
  EXPECT_NE(cluster.node(to).call({"INFO", "commandstats"}).str.find("cmdstat_asking:calls="),
            std::string::npos);

  // a and b together: one slot, but their keys are on two nodes now.
  Hit both[2] = {{a, &spec, 1, true}, {b, &spec, 1, true}};
  Verdict out[2];
  const auto start = SteadyClock::now();
  const StoreStatus split = store.apply(both, kNow, out);
  EXPECT_LT(SteadyClock::now() - start, milliseconds(2000));
  EXPECT_EQ(split.code, StoreStatus::Code::kUnavailable) << split.message;
  EXPECT_NE(split.message.find("TRYAGAIN"), std::string::npos) << split.message;

  cluster.finish_migration(slot);
  EXPECT_EQ(cluster.owner_of_slot(slot), to);
  for (int i = 0; i < 40; ++i) {
    hit(a, allowed_a);
    hit(b, allowed_b);
  }
  for (int i = 0; i < 60; ++i)
    hit(c, allowed_c);

  EXPECT_EQ(failures, 0);
  EXPECT_EQ(allowed_a, 100);
  EXPECT_EQ(allowed_b, 100);
  EXPECT_EQ(allowed_c, 100);
  for (const std::string* key : {&a, &b, &c})
    EXPECT_EQ(StoredCount(cluster, prefix, *key), "100") << *key;
  // The three, one script on the new owner: nothing left on any of them.
  Hit three[3] = {{a, &spec, 0, true}, {b, &spec, 0, true}, {c, &spec, 0, true}};
  Verdict out3[3];
  const StoreStatus st = store.apply(three, kNow, out3);
  ASSERT_TRUE(st.ok()) << st.message;
  for (const Verdict& v : out3)
    EXPECT_EQ(v.remaining, 0u);
}

// Limits on different slots (on different masters): a denial by one consumes nothing on the
// other; when all pass, all consume.
TEST(RedisClusterStoreTest, RequestAcrossSlotsIsAllOrNothing) {
  RedisCluster& cluster = SharedCluster();
  const std::string prefix = "multi:";
  RedisClusterStore store(Options(cluster, prefix));
  const std::string loose = "loose";
  const std::size_t loose_owner = cluster.owner_of_slot(SlotOf(prefix, loose));
  const std::string tight = KeyOnOtherMaster(cluster, prefix, loose_owner, "tight");
  const std::string third = KeyOnOtherMaster(cluster, prefix, loose_owner, "third");
  ASSERT_NE(SlotOf(prefix, tight), SlotOf(prefix, loose));
  const LimitSpec loose_spec{Algorithm::kFixedWindow, 100, seconds_to_micros(3600), 0};
  const LimitSpec tight_spec{Algorithm::kTokenBucket, 2, seconds_to_micros(3600), 0};
  const LimitSpec third_spec{Algorithm::kSlidingWindowLog, 10, seconds_to_micros(3600), 0};

  Hit hits[3] = {
      {loose, &loose_spec, 1, true}, {tight, &tight_spec, 1, true}, {third, &third_spec, 1, true}};
  Verdict out[3];
  for (int i = 0; i < 2; ++i) {
    const StoreStatus st = store.apply(hits, kNow, out);
    ASSERT_TRUE(st.ok()) << st.message;
    EXPECT_TRUE(out[0].allowed && out[1].allowed && out[2].allowed);
  }
  EXPECT_EQ(out[0].remaining, 98u);
  EXPECT_EQ(out[1].remaining, 0u);
  EXPECT_EQ(out[2].remaining, 8u);

  for (int i = 0; i < 3; ++i) {
    const StoreStatus st = store.apply(hits, kNow, out);
    ASSERT_TRUE(st.ok()) << st.message;
    EXPECT_TRUE(out[0].allowed);   // would pass alone...
    EXPECT_FALSE(out[1].allowed);  // ...but this one denies,
    EXPECT_GT(out[1].retry_after, 0);
    EXPECT_TRUE(out[2].allowed);
    EXPECT_EQ(out[0].remaining, 98u);  // so nothing consumed
    EXPECT_EQ(out[2].remaining, 8u);
  }
  EXPECT_EQ(StoredCount(cluster, prefix, loose), "2");
  Verdict v;
  ASSERT_TRUE(Apply(store, loose, loose_spec, 0, v).ok());
  EXPECT_EQ(v.remaining, 98u);

  // A cost beyond what a limit can ever hold denies the request the same way.
  hits[1].enforce = true;
  hits[2].cost = 11;
  hits[1].cost = 0;
  ASSERT_TRUE(store.apply(hits, kNow, out).ok());
  EXPECT_FALSE(out[2].allowed);
  EXPECT_EQ(out[2].retry_after, kNever);
  EXPECT_EQ(out[0].remaining, 98u);

  // A shadow limit that denies does not block the others, which consume.
  hits[1].cost = 1;
  hits[1].enforce = false;
  hits[2].cost = 1;
  ASSERT_TRUE(store.apply(hits, kNow, out).ok());
  EXPECT_TRUE(out[0].allowed);
  EXPECT_FALSE(out[1].allowed);
  EXPECT_TRUE(out[2].allowed);
  EXPECT_EQ(out[0].remaining, 97u);
  EXPECT_EQ(out[2].remaining, 7u);
  EXPECT_EQ(StoredCount(cluster, prefix, loose), "3");
}

// Four threads on one key through the cluster: exactly the limit passes, never more.
TEST(RedisClusterStoreTest, ThreadsOnOneKeyNeverAdmitMore) {
  RedisCluster& cluster = SharedCluster();
  const std::string prefix = "threads:";
  RedisClusterStore store(Options(cluster, prefix));
  const LimitSpec window{Algorithm::kFixedWindow, 100, seconds_to_micros(3600), 0};
  const LimitSpec bucket{Algorithm::kTokenBucket, 10, seconds_to_micros(3600), 50};
  // Multi-slot requests: the tight limit's slot differs from the loose one's.
  const std::string loose = "loose";
  const std::string tight =
      KeyOnOtherMaster(cluster, prefix, cluster.owner_of_slot(SlotOf(prefix, loose)), "tight");
  const LimitSpec loose_spec{Algorithm::kFixedWindow, 100'000, seconds_to_micros(3600), 0};
  const LimitSpec tight_spec{Algorithm::kFixedWindow, 60, seconds_to_micros(3600), 0};

  std::atomic<int> window_allowed{0}, bucket_allowed{0}, multi_allowed{0}, tight_allowed{0},
      errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 100; ++i) {
        Verdict v;
        if (!Apply(store, "window", window, 1, v).ok()) ++errors;
        if (v.allowed) ++window_allowed;
        if (!Apply(store, "bucket", bucket, 1, v).ok()) ++errors;
        if (v.allowed) ++bucket_allowed;
        Hit hits[2] = {{loose, &loose_spec, 1, true}, {tight, &tight_spec, 1, true}};
        Verdict out[2];
        if (!store.apply(hits, kNow, out).ok()) ++errors;
        if (out[0].allowed && out[1].allowed) ++multi_allowed;
        if (out[1].allowed) ++tight_allowed;
      }
    });
  }
  for (std::thread& t : threads)
    t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(window_allowed.load(), 100);
  EXPECT_EQ(bucket_allowed.load(), 50);
  // The tight limit never admits more than 60; the loose one counted every admitted request (and,
  // if a commit lost a race after the loose slot had committed, a few denied ones: over-counting
  // is the multi-slot store's only inexactness).
  EXPECT_EQ(multi_allowed.load(), 60);
  EXPECT_LE(tight_allowed.load(), 60);
  EXPECT_EQ(StoredCount(cluster, prefix, tight), "60");
  const int loose_count = std::stoi(StoredCount(cluster, prefix, loose));
  EXPECT_GE(loose_count, 60);
  EXPECT_LE(loose_count, 400);
}

// A master dies: decisions on its slots fail fast (never waiting much past the command timeout)
// until its replica takes over, then succeed again through the same store. State the old master
// had not yet replicated is lost (Redis replication is asynchronous): the counters may restart
// lower, never higher.
TEST(RedisClusterStoreTest, FailoverFailsFastThenRecovers) {
  RedisCluster::Options co;
  co.replicas_per_master = 1;
  co.node_timeout_ms = 1000;
  RedisCluster cluster(co);
  const std::string prefix = "failover:";
  RedisClusterStoreOptions o = Options(cluster, prefix);
  const milliseconds timeout(500);
  o.node.command_timeout = timeout;
  o.node.connect_timeout = timeout;
  RedisClusterStore store(o);
  const std::string key = "k";
  const LimitSpec spec{Algorithm::kFixedWindow, 100'000, seconds_to_micros(3600), 0};
  const std::size_t master = cluster.owner_of_slot(SlotOf(prefix, key));
  for (int i = 0; i < 10; ++i) {
    Verdict v;
    const StoreStatus st = Apply(store, key, spec, 1, v);
    ASSERT_TRUE(st.ok()) << st.message;
  }
  const std::uint64_t refreshes = store.refreshes();
  // Right after forming, a node's view may not list the replica yet (gossip): wait for it.
  for (const auto until = SteadyClock::now() + std::chrono::seconds(10);
       cluster.replicas_of(master).empty() && SteadyClock::now() < until;) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  ASSERT_FALSE(cluster.replicas_of(master).empty());

  auto failover = std::async(std::launch::async,
                             [&] { return cluster.kill_master_and_wait_for_failover(master); });
  int failures = 0;
  bool recovered = false;
  milliseconds slowest{0};
  const auto deadline = SteadyClock::now() + std::chrono::seconds(20);
  std::optional<SteadyClock::time_point> failed_over_at;
  while (SteadyClock::now() < deadline) {
    if (!failed_over_at &&
        failover.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
      failed_over_at = SteadyClock::now();
    }
    const bool failed_over = failed_over_at.has_value();
    // Once every node agrees on the new master, the store must follow within a few refreshes.
    if (failed_over && SteadyClock::now() - *failed_over_at > std::chrono::seconds(5)) break;
    Verdict v;
    const auto start = SteadyClock::now();
    const StoreStatus st = Apply(store, key, spec, 1, v);
    const auto took = std::chrono::duration_cast<milliseconds>(SteadyClock::now() - start);
    slowest = std::max(slowest, took);
    EXPECT_LT(took, 2 * timeout) << st.message;
    if (st.ok()) {
      EXPECT_TRUE(v.allowed);
      if (failed_over && failures > 0) {
        recovered = true;
        break;
      }
    } else {
      ++failures;
      EXPECT_TRUE(st.code == StoreStatus::Code::kUnavailable ||
                  st.code == StoreStatus::Code::kTimeout)
          << st.message;
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
  const std::size_t promoted = failover.get();
  EXPECT_GT(failures, 0);
  EXPECT_TRUE(recovered) << failures << " failures, slowest call " << slowest.count() << " ms";
  EXPECT_EQ(cluster.owner_of_slot(SlotOf(prefix, key)), promoted);
  EXPECT_GT(store.refreshes(), refreshes);
  // Keys on the other masters work as well.
  for (int i = 0; i < 20; ++i) {
    Verdict v;
    const StoreStatus st = Apply(store, "other/" + std::to_string(i), spec, 1, v);
    EXPECT_TRUE(st.ok()) << st.message;
  }
}

}  // namespace
}  // namespace sluice::testing
