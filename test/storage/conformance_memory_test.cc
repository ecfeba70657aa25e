// The conformance suite against the memory store.
#include "sluice/memory_store.h"
#include "storage/conformance.h"

namespace sluice::testing {
namespace {

INSTANTIATE_TEST_SUITE_P(
    Memory, StoreConformance,
    ::testing::Values(StoreFactory{"memory", [] { return std::make_unique<MemoryStore>(); }},
                      StoreFactory{
                          "memory_one_shard",
                          [] {
                            return std::make_unique<MemoryStore>(MemoryStoreOptions{1000, 1});
                          }}),
    StoreFactoryName);

}  // namespace
}  // namespace sluice::testing
