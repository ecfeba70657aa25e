// The store conformance suite: the same traces against every Store, verdict for verdict.
//
// A store's test binary instantiates it with a factory:
//
//   INSTANTIATE_TEST_SUITE_P(Memory, StoreConformance,
//       ::testing::Values(sluice::testing::StoreFactory{"memory", [] { return ...; }}),
//       sluice::testing::StoreFactoryName);
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "sluice/store.h"

namespace sluice::testing {

struct StoreFactory {
  std::string name;
  std::function<std::unique_ptr<Store>()> make;
};

inline void PrintTo(const StoreFactory& f, std::ostream* os) {
  *os << f.name;
}

inline std::string StoreFactoryName(const ::testing::TestParamInfo<StoreFactory>& info) {
  return info.param.name;
}

class StoreConformance : public ::testing::TestWithParam<StoreFactory> {
 protected:
  void SetUp() override { store_ = GetParam().make(); }
  std::unique_ptr<Store> store_;
};

}  // namespace sluice::testing
