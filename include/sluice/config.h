// sluice/config.h — rule files -> RuleSource -> RuleSet.
//
// Loads both rule formats (docs/configuration.md): Envoy ratelimit's YAML, unchanged, and
// path rules; JSON of the same shape is accepted too (JSON is YAML). A directory loads as one
// snapshot: every *.yaml, *.yml and *.json file in it, in name order. Bad rules never half-load:
// every error is collected, each with file:line:column and what is wrong, and nothing is
// returned to serve.
//
// Example:
//
//   sluice::LoadResult r = sluice::load_rules({"/etc/sluice/rules"});
//   if (!r.ok()) { for (auto& e : r.errors) std::cerr << e.to_string() << "\n"; return 1; }
//   auto rules = sluice::RuleSet::compile(std::move(r.source));
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/rules.h"

namespace sluice {

// ConfigError is one problem in a rule file.
struct ConfigError {
  SourceLocation where;
  std::string message;
  // to_string() renders "file:line:column: message" ("file: message" when the problem has no
  // position, such as a missing file).
  std::string to_string() const;
};

// LoadResult is a loaded snapshot, or the errors that refused it.
struct LoadResult {
  RuleSource source;
  std::vector<ConfigError> errors;
  bool ok() const noexcept { return errors.empty(); }
};

// parse_rules() parses one file's text, named `file` in messages, and appends its rules to
// `into`. Returns the errors found (none when it loaded). Checks within the file only; see
// check_rules() for checks across files.
std::vector<ConfigError> parse_rules(std::string_view text, const std::string& file,
                                     RuleSource& into);

// check_rules() runs the checks that span files (one domain defined twice, duplicate path
// rules) and that compile() relies on.
std::vector<ConfigError> check_rules(const RuleSource& source);

// rule_files() lists the files load_rules() loads for `paths`, in load order, each once (a
// file named twice, directly and through its directory, is listed the first time). Paths that
// cannot be read add an error.
std::vector<std::string> rule_files(const std::vector<std::string>& paths,
                                    std::vector<ConfigError>& errors);

// read_rule_file() reads a whole file; on failure returns nullopt and sets `message`
// ("cannot read: No such file or directory").
std::optional<std::string> read_rule_file(const std::string& path, std::string& message);

// load_rules() loads files and directories as one snapshot.
LoadResult load_rules(const std::vector<std::string>& paths);

// compile_rules() loads and compiles; on error returns nullptr and fills `errors`.
std::shared_ptr<const RuleSet> compile_rules(const std::vector<std::string>& paths,
                                             std::vector<ConfigError>& errors);

}  // namespace sluice
