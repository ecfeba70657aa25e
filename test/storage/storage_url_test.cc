#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "sluice/eventual_store.h"
#include "sluice/over_limit_cache.h"
#include "sluice/storage.h"

namespace sluice {
namespace {

StorageConfig Parse(std::string_view url) {
  StorageConfig c;
  std::string error;
  EXPECT_TRUE(parse_storage_url(url, c, error)) << url << ": " << error;
  return c;
}

std::string ErrorOf(std::string_view url) {
  StorageConfig c;
  std::string error;
  EXPECT_FALSE(parse_storage_url(url, c, error)) << url;
  return error;
}

TEST(StorageUrl, Memory) {
  EXPECT_EQ(Parse("memory://").kind, StorageConfig::Kind::kMemory);
  EXPECT_EQ(Parse("memory://?max_keys=5000").memory.max_keys, 5000u);
  EXPECT_NE(ErrorOf("memory://?max_keys=0").find("max_keys"), std::string::npos);
  EXPECT_NE(ErrorOf("memory://?color=red").find("color"), std::string::npos);
}

TEST(StorageUrl, Redis) {
  StorageConfig c = Parse("redis://localhost");
  EXPECT_EQ(c.kind, StorageConfig::Kind::kRedis);
  EXPECT_EQ(c.redis.host, "localhost");
  EXPECT_EQ(c.redis.port, 6379);
  c = Parse("redis://alice:p%40ss@10.1.2.3:7000/3?prefix=rl:&timeout_ms=50&time=redis");
  EXPECT_EQ(c.redis.username, "alice");
  EXPECT_EQ(c.redis.password, "p@ss");
  EXPECT_EQ(c.redis.host, "10.1.2.3");
  EXPECT_EQ(c.redis.port, 7000);
  EXPECT_EQ(c.redis.database, 3);
  EXPECT_EQ(c.redis.prefix, "rl:");
  EXPECT_EQ(c.redis.command_timeout.count(), 50);
  EXPECT_TRUE(c.redis.redis_time);
  c = Parse("redis://secret@[::1]:6380");
  EXPECT_EQ(c.redis.password, "secret");
  EXPECT_EQ(c.redis.username, "");
  EXPECT_EQ(c.redis.host, "::1");
  EXPECT_EQ(c.redis.port, 6380);
  c = Parse("redis+unix:///run/redis.sock?db=2");
  EXPECT_EQ(c.redis.unix_path, "/run/redis.sock");
  EXPECT_EQ(c.redis.database, 2);
}

TEST(StorageUrl, RedisCluster) {
  StorageConfig c = Parse("redis+cluster://10.0.0.1:7000,10.0.0.2:7001,redis-3");
  EXPECT_EQ(c.kind, StorageConfig::Kind::kRedisCluster);
  EXPECT_EQ(c.cluster.seeds,
            (std::vector<std::string>{"10.0.0.1:7000", "10.0.0.2:7001", "redis-3:6379"}));
  EXPECT_EQ(c.cluster.max_redirects, 5);
  EXPECT_EQ(c.cluster.node.prefix, "sluice:");

  c = Parse(
      "redis+cluster://bob:s%3Acret@[::1]:7000,h:7001?prefix=rl:&timeout_ms=40&connections=3&"
      "max_redirects=2&time=redis&grace_ms=0&connect_timeout_ms=300");
  EXPECT_EQ(c.cluster.seeds, (std::vector<std::string>{"[::1]:7000", "h:7001"}));
  EXPECT_EQ(c.cluster.node.username, "bob");
  EXPECT_EQ(c.cluster.node.password, "s:cret");
  EXPECT_EQ(c.cluster.node.prefix, "rl:");
  EXPECT_EQ(c.cluster.node.command_timeout.count(), 40);
  EXPECT_EQ(c.cluster.node.connect_timeout.count(), 300);
  EXPECT_EQ(c.cluster.node.connections, 3u);
  EXPECT_EQ(c.cluster.node.expiry_grace.count(), 0);
  EXPECT_TRUE(c.cluster.node.redis_time);
  EXPECT_EQ(c.cluster.max_redirects, 2);

  c = Parse("redis+cluster://secret@h:7000");
  EXPECT_EQ(c.cluster.node.password, "secret");
  EXPECT_EQ(c.cluster.node.username, "");

  EXPECT_NE(ErrorOf("redis+cluster://").find("seed"), std::string::npos);
  EXPECT_NE(ErrorOf("redis+cluster://a:7000,,b:7001").find("seed"), std::string::npos);
  EXPECT_NE(ErrorOf("redis+cluster://a:7000,b:70000").find("port"), std::string::npos);
  EXPECT_NE(ErrorOf("redis+cluster://a:7000/1").find("database"), std::string::npos);
  EXPECT_NE(ErrorOf("redis+cluster://a:7000?db=1").find("db"), std::string::npos);
  EXPECT_NE(ErrorOf("redis+cluster://a:7000?max_redirects=-1").find("max_redirects"),
            std::string::npos);
  const std::string unknown = ErrorOf("redis+cluster://a:7000?bogus=1");
  EXPECT_NE(unknown.find("bogus"), std::string::npos);
  EXPECT_NE(unknown.find("max_redirects"), std::string::npos);
  // max_redirects is for clusters only.
  EXPECT_NE(ErrorOf("redis://a?max_redirects=1").find("max_redirects"), std::string::npos);
}

TEST(StorageUrl, OpenRedisClusterNamesItsSeeds) {
  // Nothing listens on port 1: the store is still created (it retries on use), and says where it
  // points. Decisions fail as unavailable rather than throw.
  std::string error;
  auto store = open_store("redis+cluster://127.0.0.1:1,127.0.0.1:2?connect_timeout_ms=50", error);
  ASSERT_NE(store, nullptr) << error;
  EXPECT_EQ(store->name(), "redis+cluster://127.0.0.1:1,127.0.0.1:2 (over-limit cache)");
  LimitSpec spec{Algorithm::kFixedWindow, 1, 1'000'000, 0};
  Hit hit{"k", &spec, 1, true};
  Verdict v;
  const StoreStatus st = store->apply(std::span<const Hit>(&hit, 1), 0, std::span<Verdict>(&v, 1));
  EXPECT_EQ(st.code, StoreStatus::Code::kUnavailable) << st.message;
}

// strong_of() returns the store an opened Redis store's EventualStore hands strong limits to.
Store* strong_of(Store* store) {
  auto* eventual = dynamic_cast<EventualStore*>(store);
  return eventual == nullptr ? nullptr : &eventual->strong();
}

TEST(StorageUrl, RedisStoresHaveTheOverLimitCacheUnlessOffOrRedisTime) {
  std::string error;
  auto cached = open_store("redis://127.0.0.1:1", error);
  ASSERT_NE(cached, nullptr) << error;
  EXPECT_NE(dynamic_cast<OverLimitCache*>(strong_of(cached.get())), nullptr);
  auto off = open_store("redis://127.0.0.1:1?over_limit_cache=off", error);
  ASSERT_NE(off, nullptr) << error;
  EXPECT_NE(strong_of(off.get()), nullptr);
  EXPECT_EQ(dynamic_cast<OverLimitCache*>(strong_of(off.get())), nullptr);
  auto redis_time = open_store("redis://127.0.0.1:1?time=redis", error);
  ASSERT_NE(redis_time, nullptr) << error;
  EXPECT_EQ(dynamic_cast<OverLimitCache*>(strong_of(redis_time.get())), nullptr);
  auto cluster_off = open_store("redis+cluster://127.0.0.1:1?over_limit_cache=off", error);
  ASSERT_NE(cluster_off, nullptr) << error;
  EXPECT_EQ(dynamic_cast<OverLimitCache*>(strong_of(cluster_off.get())), nullptr);
  EXPECT_NE(ErrorOf("redis://host?over_limit_cache=maybe").find("'on' or 'off'"),
            std::string::npos);
  auto memory = open_store("memory://", error);
  EXPECT_EQ(dynamic_cast<OverLimitCache*>(memory.get()), nullptr);
  EXPECT_EQ(dynamic_cast<EventualStore*>(memory.get()), nullptr);
}

TEST(StorageUrl, EventualOptions) {
  std::string error;
  auto eventual =
      open_store("redis://127.0.0.1:1?consistency=eventual&sync_interval_ms=250", error);
  ASSERT_NE(eventual, nullptr) << error;
  EXPECT_EQ(eventual->name(),
            "redis://127.0.0.1:1/0 (over-limit cache) (eventual, sync every 250 ms)");
  StorageConfig config;
  ASSERT_TRUE(parse_storage_url(
      "redis+cluster://h:1?consistency=eventual&sync_interval_ms=50&local_share=0.5", config,
      error))
      << error;
  EXPECT_EQ(config.cluster.node.consistency, Consistency::kEventual);
  EXPECT_EQ(config.cluster.node.sync_interval, std::chrono::milliseconds(50));
  EXPECT_EQ(config.cluster.node.local_share, 0.5);
  EXPECT_NE(ErrorOf("redis://h?consistency=weak").find("'strong' or 'eventual', got 'weak'"),
            std::string::npos);
  EXPECT_NE(ErrorOf("redis://h?sync_interval_ms=0").find("sync_interval_ms must be"),
            std::string::npos);
  EXPECT_NE(ErrorOf("redis://h?local_share=1.5").find("local_share must be"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://h?local_share=0").find("local_share must be"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://h?local_share=abc").find("local_share must be"), std::string::npos);
  // max_keys on a Redis URL bounds eventual mode's local keys.
  ASSERT_TRUE(parse_storage_url("redis://h?consistency=eventual&max_keys=5000", config, error))
      << error;
  EXPECT_EQ(config.redis.eventual_max_keys, 5000u);
  EXPECT_EQ(config.cluster.node.eventual_max_keys, 1'000'000u);
  EXPECT_NE(ErrorOf("redis://h?max_keys=0").find("max_keys"), std::string::npos);
  EXPECT_NE(ErrorOf("redis+cluster://h:1?max_keys=x").find("max_keys"), std::string::npos);
}

TEST(StorageUrl, BadUrlsSayWhatIsWrong) {
  EXPECT_NE(ErrorOf("localhost:6379").find("expected"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://host:99999").find("port"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://host:abc").find("port"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://host/x").find("database"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://host?timeout_ms=-1").find("timeout_ms"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://host?bogus=1").find("bogus"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://a:%zz@host").find("percent"), std::string::npos);
  EXPECT_NE(ErrorOf("redis+unix://relative").find("absolute"), std::string::npos);
  EXPECT_NE(ErrorOf("ftp://host").find("scheme"), std::string::npos);
  EXPECT_NE(ErrorOf("redis://").find("host"), std::string::npos);
  std::string error;
  EXPECT_EQ(open_store("nope", error), nullptr);
  EXPECT_FALSE(error.empty());
}

TEST(StorageUrl, RedissTurnsTlsOnWithItsOptions) {
  const StorageConfig plain = Parse("redis://h:1");
  EXPECT_FALSE(plain.redis.tls.enabled);

  const StorageConfig c = Parse(
      "rediss://u:p@cache.internal:6380/2?tls_ca=/etc/ca.pem&tls_cert=/etc/c%20d.pem&tls_key=/k&"
      "tls_server_name=redis.example");
  EXPECT_EQ(c.kind, StorageConfig::Kind::kRedis);
  EXPECT_TRUE(c.redis.tls.enabled);
  EXPECT_TRUE(c.redis.tls.verify);
  EXPECT_EQ(c.redis.host, "cache.internal");
  EXPECT_EQ(c.redis.port, 6380);
  EXPECT_EQ(c.redis.database, 2);
  EXPECT_EQ(c.redis.tls.ca_file, "/etc/ca.pem");
  EXPECT_EQ(c.redis.tls.cert_file, "/etc/c d.pem");
  EXPECT_EQ(c.redis.tls.key_file, "/k");
  EXPECT_EQ(c.redis.tls.server_name, "redis.example");
  EXPECT_FALSE(Parse("rediss://h?tls_verify=off").redis.tls.verify);

  const StorageConfig cluster = Parse("rediss+cluster://a:7000,b:7001?tls_ca=/ca.pem");
  EXPECT_EQ(cluster.kind, StorageConfig::Kind::kRedisCluster);
  EXPECT_TRUE(cluster.cluster.node.tls.enabled);
  EXPECT_EQ(cluster.cluster.node.tls.ca_file, "/ca.pem");
  EXPECT_EQ(cluster.cluster.seeds.size(), 2u);
  EXPECT_FALSE(Parse("redis+cluster://a:7000").cluster.node.tls.enabled);
}

TEST(StorageUrl, TlsOptionsWithoutTlsAreRefused) {
  EXPECT_NE(ErrorOf("redis://h?tls_ca=/ca.pem").find("rediss://"), std::string::npos);
  EXPECT_NE(ErrorOf("redis+unix:///r.sock?tls_ca=/ca.pem").find("rediss://"), std::string::npos);
  EXPECT_NE(ErrorOf("redis+cluster://a:1?tls_verify=off").find("rediss"), std::string::npos);
  EXPECT_NE(ErrorOf("rediss://h?tls_cert=/c.pem").find("together"), std::string::npos);
  EXPECT_NE(ErrorOf("rediss://h?tls_verify=maybe").find("tls_verify"), std::string::npos);
  EXPECT_NE(ErrorOf("rediss://h?tls_ca=").find("tls_ca"), std::string::npos);
  EXPECT_NE(ErrorOf("rediss://").find("rediss://host"), std::string::npos);
}

}  // namespace
}  // namespace sluice
