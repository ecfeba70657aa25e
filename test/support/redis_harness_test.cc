// Self-test of the redis harness: real redis-server processes.
#include "support/redis_harness.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "support/harness_common.h"

namespace sluice::testing {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(RedisServerTest, PingSetGet) {
  RedisServer server;
  EXPECT_EQ(server.host(), "127.0.0.1");
  EXPECT_GT(server.port(), 0);
  EXPECT_LE(server.port(), 55535);
  EXPECT_GT(server.pid(), 0);
  EXPECT_TRUE(server.unix_path().empty());
  EXPECT_EQ(server.command({"PING"}), "PONG");
  EXPECT_EQ(server.command({"SET", "k", "v with spaces\r\n"}), "OK");
  EXPECT_EQ(server.command({"GET", "k"}), "v with spaces\r\n");
  EXPECT_EQ(server.command({"GET", "missing"}), "(nil)");
  EXPECT_EQ(server.command({"DBSIZE"}), "1");
  EXPECT_EQ(server.command({"RPUSH", "l", "a", "b", "c"}), "3");
  EXPECT_EQ(server.command({"LRANGE", "l", "0", "-1"}), "a b c");
  EXPECT_THAT(server.command({"NOSUCHCOMMAND"}), StartsWith("ERR:ERR unknown command"));
  EXPECT_EQ(server.command({"SCRIPT", "FLUSH"}), "OK");
  // Persistence is off.
  EXPECT_EQ(server.command({"CONFIG", "GET", "save"}), "save ");
  EXPECT_EQ(server.command({"CONFIG", "GET", "appendonly"}), "appendonly no");

  const std::vector<Reply> tx =
      server.pipeline({{"MULTI"}, {"INCR", "n"}, {"INCR", "n"}, {"EXEC"}, {"GET", "n"}});
  ASSERT_EQ(tx.size(), 5u);
  EXPECT_EQ(tx[0].to_string(), "OK");
  EXPECT_EQ(tx[1].to_string(), "QUEUED");
  EXPECT_EQ(tx[3].to_string(), "1 2");
  EXPECT_EQ(tx[4].to_string(), "2");

  const Reply r = server.call({"MGET", "k", "missing"});
  ASSERT_EQ(r.type, Reply::Type::kArray);
  ASSERT_EQ(r.elements.size(), 2u);
  EXPECT_EQ(r.elements[0].type, Reply::Type::kBulk);
  EXPECT_EQ(r.elements[1].type, Reply::Type::kNil);
}

TEST(RedisServerTest, TwoServersGetDistinctPortsAndDirs) {
  RedisServer a;
  RedisServer b;
  EXPECT_NE(a.port(), b.port());
  EXPECT_NE(a.dir(), b.dir());
  EXPECT_EQ(a.command({"SET", "x", "1"}), "OK");
  EXPECT_EQ(b.command({"GET", "x"}), "(nil)");
}

TEST(RedisServerTest, DestructorStopsTheProcessAndRemovesTheDir) {
  pid_t pid = -1;
  std::string dir;
  {
    RedisServer server;
    pid = server.pid();
    dir = server.dir();
    EXPECT_TRUE(std::filesystem::exists(dir));
  }
  EXPECT_NE(::kill(pid, 0), 0);  // reaped: no such process
  EXPECT_FALSE(std::filesystem::exists(dir));
}

TEST(RedisServerTest, PauseMakesCommandsTimeOutAndResumeRecovers) {
  RedisServer server;
  server.pause();
  EXPECT_TRUE(server.paused());
  EXPECT_THROW(server.command({"PING"}, milliseconds(200)), std::runtime_error);
  server.resume();
  EXPECT_FALSE(server.paused());
  EXPECT_EQ(server.command({"PING"}), "PONG");
}

TEST(RedisServerTest, StopWhilePausedTerminates) {
  RedisServer server;
  server.pause();
  server.stop();
  EXPECT_FALSE(server.running());
  server.stop();  // idempotent
}

TEST(RedisServerTest, KillAndRestartKeepThePort) {
  RedisServer server;
  const int port = server.port();
  const pid_t first = server.pid();
  EXPECT_EQ(server.command({"SET", "k", "v"}), "OK");
  server.kill();
  EXPECT_FALSE(server.running());
  EXPECT_EQ(server.pid(), -1);
  EXPECT_THROW(server.command({"PING"}, milliseconds(500)), std::runtime_error);
  server.kill();  // idempotent
  server.restart();
  EXPECT_TRUE(server.running());
  EXPECT_EQ(server.port(), port);
  EXPECT_NE(server.pid(), first);
  EXPECT_EQ(server.command({"PING"}), "PONG");
  EXPECT_EQ(server.command({"DBSIZE"}), "0");  // nothing persisted
  // Restart of a running server.
  server.restart();
  EXPECT_EQ(server.port(), port);
  EXPECT_EQ(server.command({"PING"}), "PONG");
}

TEST(RedisServerTest, UnixSocket) {
  RedisServer server({.unix_socket = true});
  ASSERT_FALSE(server.unix_path().empty());
  EXPECT_EQ(server.unix_path(), server.dir() + "/redis.sock");
  struct stat st {};
  ASSERT_EQ(::stat(server.unix_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(redis_call_unix(server.unix_path(), {"PING"}).to_string(), "PONG");
  EXPECT_EQ(redis_call_unix(server.unix_path(), {"SET", "u", "1"}).to_string(), "OK");
  EXPECT_EQ(server.command({"GET", "u"}), "1");  // TCP stays on
}

TEST(RedisServerTest, Password) {
  RedisServer server({.password = "s3cret"});
  EXPECT_EQ(server.command({"PING"}), "PONG");
  EXPECT_THAT(redis_call(server.host(), server.port(), {"PING"}).to_string(),
              StartsWith("ERR:NOAUTH"));
  const std::vector<Reply> piped = server.pipeline({{"SET", "p", "1"}, {"GET", "p"}});
  EXPECT_EQ(piped.at(1).to_string(), "1");
  EXPECT_THAT(
      redis_call(server.host(), server.port(), {"PING"}, milliseconds(1000), "wrong").to_string(),
      StartsWith("ERR:WRONGPASS"));
}

TEST(RedisServerTest, ExtraArgs) {
  RedisServer server({.extra_args = {"--maxmemory", "12mb"}});
  EXPECT_EQ(server.command({"CONFIG", "GET", "maxmemory"}), "maxmemory 12582912");
}

TEST(RedisServerTest, BadArgsFailWithTheLog) {
  try {
    RedisServer server({.extra_args = {"--no-such-directive", "1"}});
    FAIL() << "expected the start to fail";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("before answering PING"));
    EXPECT_THAT(e.what(), HasSubstr("no-such-directive"));
  }
}

TEST(RedisServerTest, PortTakenByAnotherProcessFailsClearly) {
  // Forcing --port to a listening port defeats the retries on a fresh port: every attempt fails.
  const harness::LoopbackListener holder;
  const std::string port = std::to_string(holder.port());
  try {
    RedisServer server({.extra_args = {"--port", port}});
    ADD_FAILURE() << "expected the start to fail";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("Address already in use"));
  }
}

TEST(KeySlotTest, KnownValues) {
  EXPECT_EQ(RedisCluster::key_slot("123456789"), 0x31C3);  // the CRC16/XMODEM check value
  EXPECT_EQ(RedisCluster::key_slot("foo"), 12182);
  EXPECT_EQ(RedisCluster::key_slot(""), 0);
  EXPECT_EQ(RedisCluster::key_slot("{user1000}.following"),
            RedisCluster::key_slot("{user1000}.followers"));
  EXPECT_EQ(RedisCluster::key_slot("{123456789}"), 0x31C3);
  EXPECT_EQ(RedisCluster::key_slot("x{123456789}y{z}"), 0x31C3);
}

// One 3-master cluster for the cluster tests that don't kill nodes.
class RedisClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { cluster_ = new RedisCluster(); }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(cluster_, nullptr) << "the cluster failed to start"; }

  static RedisCluster* cluster_;
};
RedisCluster* RedisClusterTest::cluster_ = nullptr;

TEST_F(RedisClusterTest, Forms) {
  RedisCluster& c = *cluster_;
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(c.masters(), (std::vector<std::size_t>{0, 1, 2}));
  std::vector<std::string> seeds;
  for (std::size_t i = 0; i < c.size(); ++i)
    seeds.push_back(c.node(i).address());
  EXPECT_EQ(c.seeds(), seeds[0] + "," + seeds[1] + "," + seeds[2]);
  for (std::size_t i = 0; i < c.size(); ++i) {
    EXPECT_THAT(c.node(i).command({"CLUSTER", "INFO"}), HasSubstr("cluster_state:ok"));
    EXPECT_EQ(c.node(i).command({"CLUSTER", "MYID"}), c.node_id(i));
  }
  // redis-cli spreads the slots evenly over the masters, in order.
  EXPECT_EQ(c.owner_of_slot(0), 0u);
  EXPECT_EQ(c.owner_of_slot(16383), 2u);
}

TEST_F(RedisClusterTest, KeySlotMatchesClusterKeyslot) {
  const std::vector<std::string> keys = {"",
                                         "a",
                                         "foo",
                                         "bar",
                                         "123456789",
                                         "{user}.a",
                                         "{user}.b",
                                         "user",
                                         "a{}b",
                                         "{}x",
                                         "{a}{b}",
                                         "{a",
                                         "a}",
                                         "}{a}",
                                         "x{a}y",
                                         "{{a}}",
                                         "sluice:fw:k1",
                                         "{sluice:k}:tokens",
                                         "\xff\x01",
                                         "spaces in key"};
  ASSERT_GE(keys.size(), 20u);
  for (const std::string& key : keys) {
    EXPECT_EQ(std::to_string(RedisCluster::key_slot(key)),
              cluster_->node(0).command({"CLUSTER", "KEYSLOT", key}))
        << "key '" << key << "'";
  }
  EXPECT_EQ(RedisCluster::key_slot("{user}.a"), RedisCluster::key_slot("user"));
  EXPECT_EQ(RedisCluster::key_slot("{a}{b}"), RedisCluster::key_slot("a"));
  EXPECT_NE(RedisCluster::key_slot("a{}b"), RedisCluster::key_slot("b"));
}

TEST_F(RedisClusterTest, MigrateSlotMovesKeys) {
  RedisCluster& c = *cluster_;
  const int slot = RedisCluster::key_slot("{mig}");
  const std::size_t from = c.owner_of_slot(slot);
  const std::size_t to = (from + 1) % c.size();
  for (int i = 0; i < 250; ++i) {  // more than one MIGRATE batch
    ASSERT_EQ(c.node(from).command({"SET", "{mig}" + std::to_string(i), std::to_string(i)}), "OK");
  }
  c.migrate_slot(slot, to);
  EXPECT_EQ(c.owner_of_slot(slot), to);
  EXPECT_EQ(c.node(to).command({"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)}), "250");
  EXPECT_EQ(c.node(from).command({"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)}), "0");
  EXPECT_EQ(c.node(to).command({"GET", "{mig}7"}), "7");
  EXPECT_THAT(c.node(from).command({"GET", "{mig}7"}),
              StartsWith("ERR:MOVED " + std::to_string(slot) + " " + c.node(to).address()));
  for (std::size_t i = 0; i < c.size(); ++i) {
    EXPECT_THAT(c.node(i).command({"CLUSTER", "INFO"}), HasSubstr("cluster_state:ok"));
  }
  c.migrate_slot(slot, to);  // no-op
  EXPECT_EQ(c.owner_of_slot(slot), to);
}

TEST_F(RedisClusterTest, SplitMigration) {
  RedisCluster& c = *cluster_;
  const int slot = RedisCluster::key_slot("{split}");
  const std::size_t from = c.owner_of_slot(slot);
  const std::size_t to = (from + 2) % c.size();
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(c.node(from).command({"SET", "{split}" + std::to_string(i), "v"}), "OK");
  }
  c.begin_migration(slot, to);
  EXPECT_EQ(c.owner_of_slot(slot), from);
  EXPECT_EQ(c.move_keys(slot, 2), 2u);
  EXPECT_EQ(c.node(from).command({"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)}), "3");
  const std::string moved_key =
      c.node(to).command({"CLUSTER", "GETKEYSINSLOT", std::to_string(slot), "1"});
  // The source redirects requests for keys it no longer has with ASK.
  EXPECT_THAT(c.node(from).command({"GET", moved_key}),
              StartsWith("ERR:ASK " + std::to_string(slot) + " " + c.node(to).address()));
  // The target serves them after ASKING (same connection); plain requests get MOVED.
  EXPECT_THAT(c.node(to).command({"GET", moved_key}), StartsWith("ERR:MOVED"));
  const std::vector<Reply> asked = c.node(to).pipeline({{"ASKING"}, {"GET", moved_key}});
  EXPECT_EQ(asked.at(0).to_string(), "OK");
  EXPECT_EQ(asked.at(1).to_string(), "v");
  c.finish_migration(slot);
  EXPECT_EQ(c.owner_of_slot(slot), to);
  EXPECT_EQ(c.node(to).command({"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)}), "5");
  EXPECT_THROW(c.move_keys(slot, 1), std::runtime_error);  // no migration in progress
}

TEST(RedisClusterFailoverTest, ReplicaTakesOver) {
  RedisCluster c({.replicas_per_master = 1});
  ASSERT_EQ(c.size(), 6u);
  const std::vector<std::size_t> masters = c.masters();
  ASSERT_EQ(masters.size(), 3u);
  const int slot = RedisCluster::key_slot("x");
  const std::size_t victim = c.owner_of_slot(slot);
  const std::vector<std::size_t> replicas = c.replicas_of(victim);
  ASSERT_EQ(replicas.size(), 1u);
  // WAIT counts acks of its own connection's writes: same connection as the SET.
  const std::vector<Reply> r = c.node(victim).pipeline({{"SET", "x", "1"}, {"WAIT", "1", "5000"}});
  ASSERT_EQ(r.at(0).to_string(), "OK");
  ASSERT_EQ(r.at(1).to_string(), "1");  // replicated
  const std::size_t promoted = c.kill_master_and_wait_for_failover(victim);
  EXPECT_EQ(promoted, replicas[0]);
  EXPECT_FALSE(c.node(victim).running());
  EXPECT_EQ(c.owner_of_slot(slot), promoted);
  EXPECT_EQ(c.node(promoted).command({"GET", "x"}), "1")
      << "promoted node log:\n"
      << c.node(promoted).log_tail(60) << "\nvictim log:\n"
      << c.node(victim).log_tail(60) << "\nCLUSTER NODES:\n"
      << c.node(promoted).command({"CLUSTER", "NODES"});
  const std::vector<std::size_t> now = c.masters();
  EXPECT_EQ(now.size(), 3u);
  EXPECT_NE(std::find(now.begin(), now.end(), promoted), now.end());
  EXPECT_EQ(std::find(now.begin(), now.end(), victim), now.end());
  EXPECT_THAT(c.seeds(), HasSubstr(c.node(promoted).address()));
  EXPECT_THAT(c.seeds(), ::testing::Not(HasSubstr(c.node(victim).address())));
}

}  // namespace
}  // namespace sluice::testing
