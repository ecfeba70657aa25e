// OpenAndClosedRules(): one domain with two key-only descriptors, "open" (failure_mode allow)
// and "closed" (failure_mode deny), each `limit` per `unit` with `algorithm`: what the tests of a
// store that can fail use to see both failure modes decide.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "sluice/rules.h"

namespace sluice::testing {

inline std::shared_ptr<const RuleSet> OpenAndClosedRules(std::string domain, std::uint64_t limit,
                                                         Unit unit, Algorithm algorithm) {
  RuleSource src;
  DomainRules d;
  d.domain = std::move(domain);
  for (auto [key, mode] :
       {std::pair{"open", FailureMode::kAllow}, std::pair{"closed", FailureMode::kDeny}}) {
    DescriptorRule r;
    r.key = key;
    LimitDef def = LimitDef::per_unit(limit, unit, algorithm);
    def.failure_mode = mode;
    r.limits.push_back(def);
    d.descriptors.push_back(r);
  }
  src.domains.push_back(d);
  return RuleSet::compile(std::move(src));
}

}  // namespace sluice::testing
