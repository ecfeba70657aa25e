// The conformance suite, unchanged, against a real 3-master Redis Cluster (test/support).
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "sluice/redis_cluster_store.h"
#include "storage/conformance.h"
#include "support/redis_harness.h"

namespace sluice::testing {

// One cluster for the whole binary (cluster_store_test.cc uses it too), formed before the tests
// and stopped after them; each store gets its own key prefix, so tests never share state.
class RedisClusterEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { cluster = std::make_unique<RedisCluster>(); }
  void TearDown() override { cluster.reset(); }
  static inline std::unique_ptr<RedisCluster> cluster;
};

RedisCluster& SharedCluster() {
  return *RedisClusterEnvironment::cluster;
}

// ClusterSeeds() splits RedisCluster::seeds() ("h:p,h:p,...").
std::vector<std::string> ClusterSeeds(RedisCluster& cluster) {
  std::vector<std::string> seeds;
  std::stringstream in(cluster.seeds());
  for (std::string seed; std::getline(in, seed, ',');)
    seeds.push_back(seed);
  return seeds;
}

namespace {

[[maybe_unused]] const auto* const kEnvironment =
    ::testing::AddGlobalTestEnvironment(new RedisClusterEnvironment);

std::unique_ptr<Store> MakeClusterStore() {
  static int instance = 0;
  RedisClusterStoreOptions o;
  o.seeds = ClusterSeeds(SharedCluster());
  o.node.prefix = "conformance:" + std::to_string(++instance) + ":";
  o.node.command_timeout = std::chrono::milliseconds(5000);  // sanitizer builds are slow
  return std::make_unique<RedisClusterStore>(o);
}

INSTANTIATE_TEST_SUITE_P(RedisCluster, StoreConformance,
                         ::testing::Values(StoreFactory{"redis_cluster", MakeClusterStore}),
                         StoreFactoryName);

}  // namespace
}  // namespace sluice::testing
