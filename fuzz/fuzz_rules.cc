// Fuzz target: the rule-file parser (src/config/loader.cc), as `sluice validate`, a reload and
// PUT /v1/rules run it: parse_rules() on one file's text (Envoy rules, path rules, or their JSON
// form), then check_rules(), then RuleSet::compile().
//
// Invariants, besides no crash, leak or undefined behaviour:
// - a file with errors adds nothing to the RuleSource, and every error has a message and a
//   position in the file (or none at all);
// - rules that parse and pass check_rules() compile (compile() throws nothing), with as many
//   limits as the source holds;
// - every descriptor reached by exact values matches its own limits, and every path rule with a
//   plain path applies to a request that carries its key.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "sluice/config.h"
#include "sluice/rules.h"

namespace {

using sluice::DescriptorRule;

constexpr const char* kFile = "fuzz.yaml";

std::size_t count_limits(const std::vector<DescriptorRule>& rules) {
  std::size_t n = 0;
  for (const DescriptorRule& r : rules)
    n += r.limits.size() + count_limits(r.descriptors);
  return n;
}

// check_matches() walks the tree: a request whose entries name exactly the values on the way to
// a node (no wildcards, no key-only defaults) must match that node's limits.
void check_matches(const sluice::RuleSet& set, const std::string& domain,
                   const std::vector<DescriptorRule>& rules, sluice::Descriptor& path) {
  for (const DescriptorRule& r : rules) {
    if (r.value.empty() || r.value.find('*') != std::string::npos) continue;
    path.entries.push_back({r.key, r.value});
    const std::vector<sluice::CompiledLimit>* found = set.match(domain, path);
    if (r.limits.empty()) {
      FUZZ_CHECK(found == nullptr, "a descriptor without limits matched some");
    } else {
      FUZZ_CHECK(found != nullptr, "a descriptor named by its exact values did not match");
      FUZZ_CHECK(found->size() == r.limits.size(), "matched a descriptor's limits, but not all");
    }
    check_matches(set, domain, r.descriptors, path);
    path.entries.pop_back();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  sluice::RuleSource source;
  std::vector<sluice::ConfigError> errors = sluice::parse_rules(text, kFile, source);
  if (!errors.empty()) {
    FUZZ_CHECK(source.domains.empty() && source.path_rules.empty(),
               "a file with errors added rules");
    for (const sluice::ConfigError& e : errors) {
      FUZZ_CHECK(!e.message.empty(), "an error without a message");
      FUZZ_CHECK(e.where.file == kFile, "an error names another file");
      FUZZ_CHECK(e.where.line >= 0 && e.where.column >= 0, "an error at a negative position");
      FUZZ_CHECK((e.where.line == 0) == (e.where.column == 0), "an error with half a position");
      FUZZ_CHECK(!e.to_string().empty(), "an error renders as nothing");
    }
    return 0;
  }
  if (!sluice::check_rules(source).empty()) return 0;

  std::size_t limits = 0;
  for (const sluice::DomainRules& d : source.domains)
    limits += count_limits(d.descriptors);
  for (const sluice::PathRule& r : source.path_rules)
    for (const sluice::PathDescriptorRule& d : r.descriptors)
      limits += d.limits.size();

  std::shared_ptr<const sluice::RuleSet> set;
  try {
    set = sluice::RuleSet::compile(source);
  } catch (const std::exception& e) {
    FUZZ_CHECK(false, e.what());  // check_rules() must refuse whatever compile() throws on
  }
  FUZZ_CHECK(set->limit_count() == limits, "the compiled set counts other limits");

  for (const sluice::DomainRules& d : source.domains) {
    FUZZ_CHECK(set->has_domain(d.domain), "a domain of the file is not in the set");
    sluice::Descriptor path;
    check_matches(*set, d.domain, d.descriptors, path);
  }
  std::vector<sluice::RuleSet::PathMatch> matches;
  for (const sluice::PathRule& r : source.path_rules) {
    if (r.path.find('*') != std::string::npos) continue;
    for (const sluice::PathDescriptorRule& d : r.descriptors) {
      sluice::PathRequest request{.path = r.path, .data = {{d.key, d.value.value_or("any")}}};
      matches.clear();
      set->match_path(request, matches);
      FUZZ_CHECK(!matches.empty(), "a path rule does not apply to its own path and key");
    }
  }
  return 0;
}
