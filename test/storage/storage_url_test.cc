#include <gtest/gtest.h>

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

}  // namespace
}  // namespace sluice
