#include "sluice/config.h"

namespace sluice {

std::string ConfigError::to_string() const {
  return where.file + ":" + std::to_string(where.line) + ":" + std::to_string(where.column) + ": " +
         message;
}

std::vector<ConfigError> parse_rules(std::string_view, const std::string& file, RuleSource&) {
  return {ConfigError{{file, 1, 1}, "not implemented"}};
}

std::vector<ConfigError> check_rules(const RuleSource&) {
  return {};
}

LoadResult load_rules(const std::vector<std::string>&) {
  return {};
}

std::shared_ptr<const RuleSet> compile_rules(const std::vector<std::string>&,
                                             std::vector<ConfigError>&) {
  return nullptr;
}

}  // namespace sluice
