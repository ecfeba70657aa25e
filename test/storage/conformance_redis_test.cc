// The conformance suite, unchanged, against a real redis-server started on a free loopback port.
#include <memory>

#include "sluice/redis_store.h"
#include "storage/conformance.h"
#include "support/redis_harness.h"

namespace sluice::testing {
namespace {

// One server for the whole binary, started before the tests and stopped after them; each store
// gets its own key prefix, so tests never share state.
class RedisEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { server = std::make_unique<RedisServer>(); }
  void TearDown() override { server.reset(); }
  static inline std::unique_ptr<RedisServer> server;
};
[[maybe_unused]] const auto* const kEnvironment =
    ::testing::AddGlobalTestEnvironment(new RedisEnvironment);

RedisServer& Server() {
  return *RedisEnvironment::server;
}

std::unique_ptr<Store> MakeRedisStore() {
  static int instance = 0;
  RedisStoreOptions o;
  o.port = Server().port();
  o.prefix = "conformance:" + std::to_string(++instance) + ":";
  // Sanitizer builds on a loaded CI machine are slow; these tests are about verdicts, not time.
  o.command_timeout = std::chrono::milliseconds(5000);
  o.connect_timeout = std::chrono::milliseconds(5000);
  return std::make_unique<RedisStore>(o);
}

INSTANTIATE_TEST_SUITE_P(Redis, StoreConformance,
                         ::testing::Values(StoreFactory{"redis", MakeRedisStore}),
                         StoreFactoryName);

}  // namespace
}  // namespace sluice::testing
