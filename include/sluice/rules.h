// sluice/rules.h — the rule model: what users write, compiled into a RuleSet that matches fast.
//
// Two rule formats compile into one RuleSet (docs/configuration.md):
//   - Envoy ratelimit's domains of nested descriptors (RuleSource::domains);
//   - path rules: a path pattern and descriptors keyed by request data (RuleSource::path_rules).
//
// A RuleSet is immutable once compiled, so any number of threads may match against it while a
// new one is being built. Matching follows Envoy's ratelimit exactly: at each level the exact
// key_value first, then wildcard values (`*` matches any run of characters) in file order, then
// the key-only default; a limit applies only at the depth of the descriptor's last entry.
//
// Example:
//
//   sluice::RuleSource src;
//   sluice::DomainRules d{.domain = "api"};
//   sluice::DescriptorRule ip{.key = "remote_address"};
//   ip.limits.push_back(sluice::LimitDef::per_unit(10, sluice::Unit::kSecond));
//   d.descriptors.push_back(ip);
//   src.domains.push_back(d);
//   std::shared_ptr<const sluice::RuleSet> rules = sluice::RuleSet::compile(std::move(src));
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "sluice/algorithms.h"
#include "sluice/request.h"

namespace sluice {

// SourceLocation says where a rule was written, for messages. Lines and columns count from 1.
struct SourceLocation {
  std::string file;
  int line = 0;
  int column = 0;
};

// FailureMode decides a limit when its store cannot (Redis down or too slow).
enum class FailureMode : std::uint8_t {
  kAllow = 0,  // let the request through (Envoy's and Stripe's default)
  kDeny = 1,   // refuse it
};

// LimitDef is one limit as written: an algorithm, n per window, a burst.
struct LimitDef {
  LimitSpec spec;
  // The unit the window was written with (window = unit x multiplier); kUnknown for an explicit
  // duration.
  Unit unit = Unit::kUnknown;
  // rate_limit.name; names are what `replaces` refers to.
  std::string name;
  // Names of limits this one replaces within a request.
  std::vector<std::string> replaces;
  // `unlimited: true`: matched, reported, never counted.
  bool unlimited = false;
  FailureMode failure_mode = FailureMode::kAllow;
  SourceLocation where;

  // per_unit() is the common case: a fixed window of n per unit.
  static LimitDef per_unit(std::uint64_t n, Unit unit,
                           Algorithm algorithm = Algorithm::kFixedWindow);
};

// DescriptorRule is one node of an Envoy descriptor tree.
struct DescriptorRule {
  std::string key;
  // Empty: the key-only default, which matches any value (each value counted apart).
  // May contain `*` wildcards.
  std::string value;
  // Limits at this node: Envoy's rate_limit, or several (burst + sustained).
  std::vector<LimitDef> limits;
  bool shadow_mode = false;
  bool detailed_metric = false;
  std::vector<DescriptorRule> descriptors;
  SourceLocation where;
};

// DomainRules is one Envoy domain.
struct DomainRules {
  std::string domain;
  std::vector<DescriptorRule> descriptors;
  SourceLocation where;
};

// PathDescriptorRule applies when the request's data holds `key` (with `value`, if given).
struct PathDescriptorRule {
  std::string key;
  std::optional<std::string> value;
  std::vector<LimitDef> limits;
  bool shadow_mode = false;
  SourceLocation where;
};

// PathRule applies when the request's path matches `path` (exact, or with `*` wildcards).
struct PathRule {
  std::string path;
  std::vector<PathDescriptorRule> descriptors;
  SourceLocation where;
};

// RuleSource is the uncompiled form of every rule, as loaded from files or an API.
struct RuleSource {
  std::vector<DomainRules> domains;
  std::vector<PathRule> path_rules;
};

// CompiledLimit is a limit ready to decide: its spec plus everything a status reports.
struct CompiledLimit {
  LimitSpec spec;
  Unit unit = Unit::kUnknown;
  // The reported name: rate_limit.name, or the limit's place in the rules.
  std::string name;
  // The name `replaces` entries refer to (empty when unnamed: such a limit is never replaced).
  std::string replace_name;
  std::vector<std::string> replaces;
  bool shadow = false;
  bool unlimited = false;
  FailureMode failure_mode = FailureMode::kAllow;
  // The prefix of every store key of this limit: identifies the rule, the algorithm and the
  // window, so that editing either starts fresh counters.
  std::string key_prefix;
};

// RuleSet is an immutable, compiled snapshot of rules. Thread-safe for concurrent matching.
class RuleSet {
 public:
  struct Node;

  // compile() builds a RuleSet. Throws std::invalid_argument on rules that cannot be compiled
  // (the config loader reports such problems with their location before this point).
  static std::shared_ptr<const RuleSet> compile(RuleSource source);
  // empty() returns a RuleSet with no rules.
  static std::shared_ptr<const RuleSet> empty();

  ~RuleSet();
  RuleSet(const RuleSet&) = delete;
  RuleSet& operator=(const RuleSet&) = delete;

  // match() returns the limits that apply to one descriptor of a request in `domain` (Envoy's
  // rules), or nullptr when none does. The pointer is valid while this RuleSet lives.
  const std::vector<CompiledLimit>* match(std::string_view domain,
                                          const Descriptor& descriptor) const noexcept;
  // has_domain() tells whether `domain` has rules.
  bool has_domain(std::string_view domain) const noexcept;

  // PathMatch is one path-rule descriptor that applies to a PathRequest.
  struct PathMatch {
    const std::vector<CompiledLimit>* limits;
    std::uint32_t data_index;  // the entry of PathRequest::data it applies to
  };
  // match_path() appends every path-rule descriptor that applies to `request`.
  void match_path(const PathRequest& request, std::vector<PathMatch>& out) const;

  // source() returns the rules this set was compiled from.
  const RuleSource& source() const noexcept { return source_; }
  // limit_count() returns the number of limits in the set.
  std::size_t limit_count() const noexcept { return limit_count_; }

 private:
  RuleSet() = default;
  struct Domain;
  struct CompiledPathRule;
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept;
  };

  RuleSource source_;
  std::unordered_map<std::string, std::unique_ptr<Domain>, StringHash, std::equal_to<>> domains_;
  std::vector<std::unique_ptr<CompiledPathRule>> path_rules_;
  std::size_t limit_count_ = 0;
};

// glob_match() tells whether `text` matches `pattern`, where `*` matches any run of characters.
bool glob_match(std::string_view pattern, std::string_view text) noexcept;

// limit_key() appends to `out` a store key for `limit` and the request's values: the limit's
// prefix, then each value length-prefixed, so that no two value lists share a key.
void append_key_value(std::string& out, std::string_view value);

}  // namespace sluice
