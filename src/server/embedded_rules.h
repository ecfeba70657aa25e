// The example rules built into the binary (examples/envoy.yaml and examples/paths.yaml): what
// `sluice serve` serves when no --config is given.
#pragma once

#include <string>
#include <vector>

namespace sluice::server {

struct EmbeddedRuleFile {
  std::string name;  // "embedded:envoy.yaml"
  std::string text;
};

const std::vector<EmbeddedRuleFile>& embedded_rules();

}  // namespace sluice::server
