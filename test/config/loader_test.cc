#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/config.h"
#include "sluice/rules.h"

#ifndef SLUICE_TESTDATA
#error "SLUICE_TESTDATA must name test/config/testdata"
#endif

namespace sluice {
namespace {

namespace fs = std::filesystem;

const std::string kTestdata = SLUICE_TESTDATA;

struct Parsed {
  RuleSource source;
  std::vector<ConfigError> errors;
};

Parsed Parse(std::string_view text, const std::string& file = "rules.yaml") {
  Parsed p;
  p.errors = parse_rules(text, file, p.source);
  return p;
}

std::string Dump(const std::vector<ConfigError>& errors) {
  std::string out;
  for (const auto& e : errors)
    out += "  " + e.to_string() + "\n";
  return out.empty() ? "  (no errors)\n" : out;
}

// HasError: some error is at exactly `where` ("file:line:column"; "" for any place) and its
// message contains `text`.
::testing::AssertionResult HasError(const std::vector<ConfigError>& errors, std::string_view where,
                                    std::string_view text) {
  for (const auto& e : errors) {
    const std::string s = e.to_string();
    const bool place = where.empty() || s.rfind(std::string(where) + ": ", 0) == 0;
    if (place && e.message.find(text) != std::string::npos) {
      return ::testing::AssertionSuccess();
    }
  }
  return ::testing::AssertionFailure()
         << "no error at " << where << " containing \"" << text << "\"; errors:\n"
         << Dump(errors);
}

// OnlyError: exactly one error, at `where`, containing `text`.
::testing::AssertionResult OnlyError(const std::vector<ConfigError>& errors, std::string_view where,
                                     std::string_view text) {
  if (errors.size() != 1) {
    return ::testing::AssertionFailure()
           << "expected exactly one error, got " << errors.size() << ":\n"
           << Dump(errors);
  }
  return HasError(errors, where, text);
}

Descriptor Desc(std::vector<DescriptorEntry> entries) {
  Descriptor d;
  d.entries = std::move(entries);
  return d;
}

// A fresh directory under the test temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::path(::testing::TempDir()) /
            ("sluice_config_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  std::string write(const std::string& name, std::string_view text) const {
    const fs::path p = path_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }

 private:
  fs::path path_;
};

// --- errors, each at its exact place ------------------------------------------------------------

TEST(ConfigErrors, UnparsableYamlIsOneErrorWithTheParsersPlace) {
  const auto p = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: a\n"
      "    value: [b\n"
      "  - key: c\n");
  EXPECT_TRUE(
      OnlyError(p.errors, "rules.yaml:5:8", "invalid YAML: end of sequence flow not found"));
  EXPECT_TRUE(p.source.domains.empty());

  const auto tab = Parse("domain: api\n\tdescriptors: []\n");
  EXPECT_TRUE(OnlyError(tab.errors, "rules.yaml:2:1", "invalid YAML: illegal tab"));
}

// Found by fuzz_rules (docs/reliability.md, "Fuzzing", bug 1): yaml-cpp 0.7's LoadAll() reads a
// ',' outside any flow collection as one empty document after another without end, so parsing
// such a file never returned and took gigabytes a minute. The fuzzer's input was ",\007ade\0\n".
TEST(ConfigErrors, CommaOutsideAFlowCollectionIsRefusedNotReadForever) {
  EXPECT_TRUE(OnlyError(Parse(",").errors, "rules.yaml:1:1", "invalid YAML: unexpected ','"));
  EXPECT_TRUE(
      OnlyError(Parse(",\007ade\n").errors, "rules.yaml:1:1", "invalid YAML: unexpected ','"));
  // After a map yaml-cpp refuses the ',' itself.
  EXPECT_TRUE(OnlyError(Parse("domain: api\n,\n").errors, "rules.yaml:2:1",
                        "invalid YAML: end of map not found"));
  EXPECT_TRUE(OnlyError(Parse("domain: api\n---\n,\n").errors, "rules.yaml:3:1",
                        "invalid YAML: unexpected ','"));
  // Documents that end are read as before: one, and an empty one after it.
  EXPECT_TRUE(Parse("domain: api\n---\n").errors.empty());
  EXPECT_TRUE(OnlyError(Parse("[a, b]").errors, "rules.yaml:1:1", "top level must be a map"));
}

TEST(ConfigErrors, UnknownKeySuggestsTheSpellingItMeant) {
  const auto p = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: user\n"
      "    rate_limit:\n"
      "      unit: second\n"
      "      requests_per_unt: 5\n");
  EXPECT_TRUE(OnlyError(p.errors, "rules.yaml:6:7",
                        "unknown key 'requests_per_unt' (did you mean 'requests_per_unit'?)"));

  const auto top = Parse("domian: api\n");  // the suggestion stands in for "missing 'domain'"
  EXPECT_TRUE(
      OnlyError(top.errors, "rules.yaml:1:1", "unknown key 'domian' (did you mean 'domain'?)"));

  const auto envoy = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: user\n"
      "    ratelimit: {unit: second, requests_per_unit: 5}\n");
  EXPECT_TRUE(OnlyError(envoy.errors, "rules.yaml:4:5", "did you mean 'rate_limit'?"));
}

TEST(ConfigErrors, UnknownKeyThatBelongsElsewhereSaysWhere) {
  const auto p = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: user\n"
      "    unit: second\n"
      "    rate_limit: {unit: second, requests_per_unit: 5, shadow_mode: true}\n"
      "  - key: files\n"
      "    share_threshold: true\n"
      "    banana: 1\n");
  ASSERT_EQ(p.errors.size(), 4u) << Dump(p.errors);
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:4:5",
                       "unknown key 'unit' (limit keys go inside 'rate_limit')"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:5:54",
                       "rate_limit: unknown key 'shadow_mode' ('shadow_mode' belongs to the "
                       "descriptor, beside 'rate_limit')"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:7:5",
                       "unknown key 'share_threshold' (an option of newer Envoy"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:8:5",
                       "unknown key 'banana' (expected key, value, rate_limit, rate_limits, "
                       "descriptors, shadow_mode, detailed_metric)"));
}

TEST(ConfigErrors, MissingDomain) {
  EXPECT_TRUE(OnlyError(Parse("descriptors: []\n").errors, "rules.yaml:1:1", "missing 'domain'"));
  // Neither 'domain' nor 'rules': treated as an Envoy file without its domain.
  const auto neither = Parse("# comment\n\nfoo_bar_baz: 1\n");
  ASSERT_EQ(neither.errors.size(), 2u) << Dump(neither.errors);
  EXPECT_TRUE(HasError(neither.errors, "rules.yaml:3:1", "missing 'domain'"));
  EXPECT_TRUE(HasError(neither.errors, "rules.yaml:3:1", "unknown key 'foo_bar_baz'"));
  EXPECT_TRUE(
      OnlyError(Parse("domain: \"\"\n").errors, "rules.yaml:1:9", "domain: must not be empty"));
  EXPECT_TRUE(OnlyError(Parse("domain:\n").errors, "rules.yaml:1:1", "domain: must not be empty"));
  EXPECT_TRUE(OnlyError(Parse("domain: [a]\n").errors, "rules.yaml:1:9",
                        "domain: must be a string, got a list"));
}

TEST(ConfigErrors, EmptyFileAndNonMapTopLevel) {
  EXPECT_TRUE(OnlyError(Parse("").errors, "rules.yaml:1:1", "empty file"));
  EXPECT_TRUE(OnlyError(Parse("# nothing but a comment\n").errors, "rules.yaml:1:1", "empty file"));
  EXPECT_TRUE(OnlyError(Parse("- a\n- b\n").errors, "rules.yaml:1:1",
                        "top level must be a map with 'domain' (Envoy rules) or 'rules' (path "
                        "rules), got a list"));
  EXPECT_TRUE(OnlyError(Parse("\n  hello\n").errors, "rules.yaml:2:3", "got 'hello'"));
  EXPECT_TRUE(OnlyError(Parse("domain: a\n---\ndomain: b\n").errors, "rules.yaml:3:1",
                        "more than one YAML document"));
  // A trailing document marker is not a second document.
  EXPECT_TRUE(Parse("domain: a\n---\n").errors.empty());
}

TEST(ConfigErrors, DescriptorWithoutKey) {
  const auto p = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - value: b\n"
      "    rate_limit: {unit: second, requests_per_unit: 5}\n"
      "  - key: \"\"\n"
      "  - key:\n"
      "  - just a string\n");
  ASSERT_EQ(p.errors.size(), 4u) << Dump(p.errors);
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:3:5", "descriptor has no 'key'"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:5:10", "key: must not be empty"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:6:5", "descriptor has no 'key'"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:7:5",
                       "descriptor must be a map with 'key', got 'just a string'"));
}

TEST(ConfigErrors, DuplicateKeyValueAtOneLevel) {
  const auto p = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: user\n"
      "    value: alice\n"
      "  - key: user\n"
      "    value: alice\n"
      "  - key: org\n"
      "    descriptors:\n"
      "      - key: team\n"
      "      - key: team\n");
  ASSERT_EQ(p.errors.size(), 2u) << Dump(p.errors);
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:5:5",
                       "duplicate descriptor composite key 'api.user_alice' (first at line 3)"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:10:9",
                       "duplicate descriptor composite key 'api.org.team' (first at line 9)"));

  // The same key/value at different levels, or a key-only default beside values, is fine.
  EXPECT_TRUE(Parse("domain: api\n"
                    "descriptors:\n"
                    "  - key: a\n"
                    "    descriptors: [{key: a}]\n"
                    "  - {key: a, value: x}\n")
                  .errors.empty());

  // Envoy compares "key_value": key 'a_b' collides with key 'a' and value 'b'.
  const auto composite = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - {key: a, value: b}\n"
      "  - {key: a_b}\n");
  EXPECT_TRUE(OnlyError(composite.errors, "rules.yaml:4:5",
                        "duplicate descriptor composite key 'api.a_b' (first at line 3)"));
}

TEST(ConfigErrors, DuplicateMapKey) {
  const auto p = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: user\n"
      "    rate_limit:\n"
      "      unit: second\n"
      "      unit: minute\n"
      "      requests_per_unit: 1\n");
  EXPECT_TRUE(OnlyError(p.errors, "rules.yaml:6:7", "duplicate key 'unit' (first at line 5)"));
}

TEST(ConfigErrors, BadUnit) {
  const auto p = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: user\n"
      "    rate_limit:\n"
      "      unit: minutes\n"
      "      requests_per_unit: 5\n");
  EXPECT_TRUE(OnlyError(p.errors, "rules.yaml:5:13",
                        "rate_limit.unit: invalid unit 'minutes' (expected second, minute, hour, "
                        "day, week, month or year)"));

  const auto missing = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: user\n"
      "    rate_limit:\n"
      "      requests_per_unit: 5\n");
  EXPECT_TRUE(OnlyError(missing.errors, "rules.yaml:5:7", "rate_limit: missing 'unit'"));

  const auto unknown = Parse("domain: api\ndescriptors: [{key: u, rate_limit: {unit: unknown}}]\n");
  EXPECT_TRUE(OnlyError(unknown.errors, "rules.yaml:2:43", "invalid unit 'unknown'"));
}

TEST(ConfigErrors, RequestsPerUnitMustBeAnIntegerInRange) {
  struct Case {
    std::string value;
    std::string got;
  };
  for (const Case& c : {Case{"-1", "'-1'"}, Case{"1.5", "'1.5'"}, Case{"ten", "'ten'"},
                        Case{"4294967296", "'4294967296'"}, Case{"[1]", "a list"},
                        Case{"99999999999999999999999", "'99999999999999999999999'"}}) {
    const auto p = Parse(
        "domain: api\n"
        "descriptors:\n"
        "  - key: user\n"
        "    rate_limit:\n"
        "      unit: second\n"
        "      requests_per_unit: " +
        c.value + "\n");
    EXPECT_TRUE(OnlyError(p.errors, "rules.yaml:6:26",
                          "rate_limit.requests_per_unit: must be an integer from 0 to 4294967295, "
                          "got " +
                              c.got))
        << c.value;
  }
  // The same message in path rules, where the keys are inline.
  const auto path = Parse(
      "rules:\n"
      "  - path: /x\n"
      "    descriptors:\n"
      "      - key: user\n"
      "        unit: second\n"
      "        requests_per_unit: -1\n");
  EXPECT_TRUE(OnlyError(path.errors, "rules.yaml:6:28",
                        "requests_per_unit: must be an integer from 0 to 4294967295, got '-1'"));

  // 0 (block everything, as in Envoy) and 2^32 - 1 are accepted.
  for (std::string ok : {"0", "4294967295"}) {
    const auto p = Parse(
        "domain: api\ndescriptors: [{key: u, rate_limit: {unit: second, "
        "requests_per_unit: " +
        ok + "}}]\n");
    ASSERT_TRUE(p.errors.empty()) << Dump(p.errors);
    EXPECT_EQ(p.source.domains[0].descriptors[0].limits[0].spec.limit, std::stoull(ok));
  }
}

TEST(ConfigErrors, UnlimitedTogetherWithALimit) {
  const auto p = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: user\n"
      "    rate_limit:\n"
      "      unlimited: true\n"
      "      unit: second\n"
      "      requests_per_unit: 5\n");
  ASSERT_EQ(p.errors.size(), 2u) << Dump(p.errors);
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:6:7",
                       "rate_limit.unit: should not be specified when unlimited is true"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:7:7",
                       "rate_limit.requests_per_unit: should not be specified when unlimited is "
                       "true"));
  const auto burst = Parse(
      "domain: api\n"
      "descriptors: [{key: u, rate_limit: {unlimited: true, algorithm: token_bucket}}]\n");
  EXPECT_TRUE(OnlyError(burst.errors, "rules.yaml:2:54",
                        "rate_limit.algorithm: should not be specified when unlimited is true"));
}

TEST(ConfigErrors, ReplacesNamingItselfOrEmpty) {
  const auto p = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: user\n"
      "    rate_limit:\n"
      "      name: per_user\n"
      "      unit: second\n"
      "      requests_per_unit: 5\n"
      "      replaces:\n"
      "        - name: per_user\n"
      "        - name: \"\"\n"
      "        - {}\n"
      "        - other\n");
  ASSERT_EQ(p.errors.size(), 4u) << Dump(p.errors);
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:9:17",
                       "rate_limit.replaces[0].name: 'per_user' is this limit's own name; a limit "
                       "cannot replace itself"));
  EXPECT_TRUE(
      HasError(p.errors, "rules.yaml:10:17", "rate_limit.replaces[1].name: must not be empty"));
  EXPECT_TRUE(
      HasError(p.errors, "rules.yaml:11:11", "rate_limit.replaces[2].name: must not be empty"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:12:11",
                       "rate_limit.replaces[3]: must be a map with 'name', got 'other'"));
}

TEST(ConfigErrors, UnknownAlgorithm) {
  const auto p = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: user\n"
      "    rate_limit:\n"
      "      unit: second\n"
      "      requests_per_unit: 5\n"
      "      algorithm: leaky_bucket\n");
  EXPECT_TRUE(OnlyError(p.errors, "rules.yaml:7:18",
                        "rate_limit.algorithm: unknown algorithm 'leaky_bucket' (expected "
                        "fixed_window, sliding_window_log, sliding_window_counter or "
                        "token_bucket)"));
  const auto near = Parse(
      "domain: api\n"
      "descriptors: [{key: u, rate_limit: {unit: second, algorithm: tokenbucket}}]\n");
  EXPECT_TRUE(OnlyError(near.errors, "rules.yaml:2:62",
                        "unknown algorithm 'tokenbucket' (did you mean 'token_bucket'?)"));
}

TEST(ConfigErrors, BurstBelowOneAndBurstOnOtherAlgorithms) {
  const auto zero = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: user\n"
      "    rate_limit:\n"
      "      unit: second\n"
      "      requests_per_unit: 5\n"
      "      algorithm: token_bucket\n"
      "      burst: 0\n");
  EXPECT_TRUE(OnlyError(zero.errors, "rules.yaml:8:14",
                        "rate_limit.burst: must be an integer from 1 to 4294967295, got '0'"));

  const auto fixed = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: user\n"
      "    rate_limit:\n"
      "      unit: second\n"
      "      requests_per_unit: 5\n"
      "      burst: 10\n");
  EXPECT_TRUE(OnlyError(fixed.errors, "rules.yaml:7:7",
                        "rate_limit.burst: only applies to algorithm token_bucket (this limit's "
                        "algorithm is fixed_window)"));

  const auto sliding = Parse(
      "rules:\n"
      "  - path: /x\n"
      "    descriptors:\n"
      "      - {key: u, unit: second, requests_per_unit: 5, algorithm: sliding_window_log, "
      "burst: 10}\n");
  EXPECT_TRUE(OnlyError(sliding.errors, "rules.yaml:4:85",
                        "burst: only applies to algorithm token_bucket (this limit's algorithm is "
                        "sliding_window_log)"));
}

TEST(ConfigErrors, KeyThatIsNotAString) {
  const auto p = Parse(
      "domain: api\n"
      "1: x\n"
      "? [a]\n"
      ": y\n"
      "descriptors:\n"
      "  - key: user\n"
      "    true: 1\n");
  ASSERT_EQ(p.errors.size(), 3u) << Dump(p.errors);
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:2:1", "key '1' is not a string"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:3:3", "key is a list, not a string"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:7:5", "key 'true' is not a string"));

  const auto flow = Parse("domain: api\n[a]: x\n{b: c}: y\n");
  ASSERT_EQ(flow.errors.size(), 2u) << Dump(flow.errors);
  EXPECT_TRUE(HasError(flow.errors, "rules.yaml:2:1", "key is a list, not a string"));
  EXPECT_TRUE(HasError(flow.errors, "rules.yaml:3:1", "key is a map, not a string"));

  // Envoy ratelimit's own test file (test/config/non_string_key.yaml).
  const auto envoy = Parse("0.25: test-domain\ndescriptors: []\n");
  EXPECT_TRUE(HasError(envoy.errors, "rules.yaml:1:1", "key '0.25' is not a string"));

  // Quoted, it is a string (and then an unknown key).
  EXPECT_TRUE(
      OnlyError(Parse("domain: api\n\"1\": x\n").errors, "rules.yaml:2:1", "unknown key '1'"));
}

TEST(ConfigErrors, ValuesOfTheWrongType) {
  const auto p = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: {a: b}\n"
      "    shadow_mode: maybe\n"
      "    rate_limit: 5\n"
      "  - key: x\n"
      "    descriptors: {key: y}\n");
  ASSERT_EQ(p.errors.size(), 4u) << Dump(p.errors);
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:3:10", "key: must be a string, got a map"));
  EXPECT_TRUE(
      HasError(p.errors, "rules.yaml:4:18", "shadow_mode: must be true or false, got 'maybe'"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:5:17", "rate_limit: must be a map of limit keys"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:7:18",
                       "descriptors: must be a list of descriptors, got a map"));
}

TEST(ConfigErrors, MultipleErrorsFromOneFileInFileOrder) {
  const auto p = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: a\n"
      "    rate_limit: {unit: minutes, requests_per_unit: 1}\n"
      "  - key: b\n"
      "    rate_limit: {unit: second, requests_per_unit: -1}\n"
      "  - key: c\n"
      "    rate_limit: {unit: second, requests_per_unt: 1}\n"
      "  - key: a\n");
  ASSERT_EQ(p.errors.size(), 4u) << Dump(p.errors);
  EXPECT_EQ(p.errors[0].to_string(),
            "rules.yaml:4:24: rate_limit.unit: invalid unit 'minutes' (expected second, minute, "
            "hour, day, week, month or year)");
  EXPECT_EQ(p.errors[1].to_string(),
            "rules.yaml:6:51: rate_limit.requests_per_unit: must be an integer from 0 to "
            "4294967295, got '-1'");
  EXPECT_EQ(p.errors[2].to_string(),
            "rules.yaml:8:32: rate_limit: unknown key 'requests_per_unt' (did you mean "
            "'requests_per_unit'?)");
  EXPECT_EQ(p.errors[3].to_string(),
            "rules.yaml:9:5: duplicate descriptor composite key 'api.a' (first at line 3)");
  EXPECT_TRUE(p.source.domains.empty()) << "a file with errors adds nothing";
}

TEST(ConfigErrors, WindowAndMultiplier) {
  auto window_error = [](const std::string& limit_keys) {
    return Parse("domain: api\ndescriptors:\n  - key: u\n    rate_limit: {" + limit_keys + "}\n")
        .errors;
  };
  EXPECT_TRUE(OnlyError(window_error("requests_per_unit: 1, window: 30"), "rules.yaml:4:48",
                        "rate_limit.window: invalid duration '30' (expected a whole number and a "
                        "unit"));
  EXPECT_TRUE(OnlyError(window_error("requests_per_unit: 1, window: 1.5h"), "rules.yaml:4:48",
                        "invalid duration '1.5h'"));
  EXPECT_TRUE(OnlyError(window_error("requests_per_unit: 1, window: 0s"), "rules.yaml:4:48",
                        "rate_limit.window: must be at least 1us, got '0s'"));
  EXPECT_TRUE(OnlyError(window_error("requests_per_unit: 1, window: 36601d"), "rules.yaml:4:48",
                        "rate_limit.window: must be at most 36600d (100 years)"));
  EXPECT_TRUE(OnlyError(window_error("requests_per_unit: 1, window: 99999999999999999999999s"),
                        "rules.yaml:4:48", "must be at most 36600d"));
  EXPECT_TRUE(OnlyError(window_error("unit: second, requests_per_unit: 1, window: 5s"),
                        "rules.yaml:4:18",
                        "rate_limit.unit: cannot be combined with window (window replaces the "
                        "unit)"));
  EXPECT_TRUE(OnlyError(window_error("unit: second, requests_per_unit: 1, unit_multiplier: 0"),
                        "rules.yaml:4:71",
                        "rate_limit.unit_multiplier: must be an integer from 1 to 4294967295, "
                        "got '0'"));
  EXPECT_TRUE(OnlyError(window_error("unit: year, requests_per_unit: 1, unit_multiplier: 101"),
                        "rules.yaml:4:69",
                        "rate_limit.unit_multiplier: a window of 101 years is longer than the "
                        "maximum"));
}

TEST(ConfigErrors, RateLimitAndRateLimitsTogether) {
  const auto p = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: user\n"
      "    rate_limit: {unit: second, requests_per_unit: 5}\n"
      "    rate_limits:\n"
      "      - {unit: minute, requests_per_unit: 50}\n");
  EXPECT_TRUE(
      OnlyError(p.errors, "rules.yaml:5:5", "rate_limits: cannot be combined with rate_limit"));
  const auto item = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: user\n"
      "    rate_limits:\n"
      "      - {unit: second, requests_per_unit: 5}\n"
      "      - {unit: minute, requests_per_unit: x}\n");
  EXPECT_TRUE(OnlyError(item.errors, "rules.yaml:6:43",
                        "rate_limits[1].requests_per_unit: must be an integer"));
}

TEST(ConfigErrors, PathRuleProblems) {
  const auto p = Parse(
      "rules:\n"
      "  - path: /a\n"
      "    descriptors:\n"
      "      - key: user\n"
      "      - key: org\n"
      "        unit: second\n"
      "      - key: team\n"
      "        unit: second\n"
      "        requests_per_unit: 1\n"
      "        limits: [{unit: second, requests_per_unit: 1}]\n"
      "      - key: plan\n"
      "        limits: [{unit: second}]\n"
      "  - descriptors: []\n"
      "  - path: /b\n"
      "    descriptors:\n"
      "      - key: user\n"
      "        detailed_metric: true\n"
      "        unit: second\n"
      "        requests_per_unit: 1\n"
      "  - path: /c\n"
      "    descriptors:\n"
      "      - {key: user, unit: second, requests_per_unit: 1}\n"
      "      - {key: user, unit: minute, requests_per_unit: 1}\n"
      "  - path: /c\n"
      "    descriptors:\n"
      "      - {key: user, value: x, unit: second, requests_per_unit: 1}\n"
      "      - {key: user, unit: hour, requests_per_unit: 1}\n");
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:4:9", "descriptor has no limit"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:5:9", "descriptor: missing 'requests_per_unit'"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:10:9", "limits: cannot be combined with 'unit'"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:12:18", "limits[0]: missing 'requests_per_unit'"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:13:5", "rules[1]: missing 'path'"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:13:18",
                       "descriptors: must be a non-empty list of descriptors, got an empty list"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:17:9", "unknown key 'detailed_metric'"));
  // Within one file, a second (path, key, value) is a duplicate; a value makes it different.
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:23:9",
                       "duplicate path rule: path '/c', key 'user' (any value) is already defined "
                       "at rules.yaml:22"));
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:27:9",
                       "duplicate path rule: path '/c', key 'user' (any value) is already defined "
                       "at rules.yaml:22"));
  EXPECT_EQ(p.errors.size(), 9u) << Dump(p.errors);
}

TEST(ConfigErrors, DomainAndRulesInOneFile) {
  const auto p = Parse("domain: api\nrules: []\n");
  EXPECT_TRUE(OnlyError(p.errors, "rules.yaml:2:1",
                        "a file holds Envoy rules ('domain') or path rules ('rules'), not both"));
  EXPECT_TRUE(OnlyError(Parse("rules: []\ndescriptors: []\n").errors, "rules.yaml:2:1",
                        "unknown key 'descriptors'"));
}

TEST(ConfigErrors, ToStringWithoutALine) {
  EXPECT_EQ((ConfigError{{"a.yaml", 3, 7}, "bad"}).to_string(), "a.yaml:3:7: bad");
  EXPECT_EQ((ConfigError{{"missing.yaml", 0, 0}, "cannot read"}).to_string(),
            "missing.yaml: cannot read");
}

// --- hostile input ------------------------------------------------------------------------------

TEST(ConfigRobustness, DeepDescriptorNestingIsBounded) {
  std::string text = "domain: api\ndescriptors: ";
  for (int i = 0; i < 100; ++i)
    text += "[{key: a, descriptors: ";
  text += "[]";
  for (int i = 0; i < 100; ++i)
    text += "}]";
  const auto p = Parse(text);
  ASSERT_EQ(p.errors.size(), 1u) << Dump(p.errors);
  EXPECT_THAT(p.errors[0].message, ::testing::HasSubstr("nested more than 64 levels deep"));

  // 64 levels load.
  std::string ok = "domain: api\ndescriptors: ";
  for (int i = 0; i < 64; ++i)
    ok += "[{key: a, descriptors: ";
  ok += "[]";
  for (int i = 0; i < 64; ++i)
    ok += "}]";
  EXPECT_TRUE(Parse(ok).errors.empty()) << Dump(Parse(ok).errors);
}

TEST(ConfigRobustness, DeepYamlNestingIsAnError) {
  const std::string text = "domain: " + std::string(5000, '[') + std::string(5000, ']') + "\n";
  const auto p = Parse(text);
  ASSERT_EQ(p.errors.size(), 1u) << Dump(p.errors);
  EXPECT_THAT(p.errors[0].message, ::testing::HasSubstr("invalid YAML"));
}

TEST(ConfigRobustness, CyclicAliasesTerminate) {
  // yaml-cpp builds real cycles from these.
  const auto merge = Parse("domain: x\ndescriptors:\n  - &a {key: a, <<: *a}\n");
  EXPECT_TRUE(HasError(merge.errors, "rules.yaml:3:5", "'<<' merges nested more than 16 deep"));
  const auto tree = Parse("domain: x\ndescriptors:\n  - &n\n    key: a\n    descriptors: [*n]\n");
  EXPECT_TRUE(HasError(tree.errors, "rules.yaml:5:18", "nested more than 64 levels deep"));
}

TEST(ConfigRobustness, AliasBombStopsWithAnError) {
  // 10^30 descriptors if expanded.
  std::string text = "x_defs:\n  - &l0 [{key: a}]\n";
  for (int i = 1; i < 30; ++i) {
    text += "  - &l" + std::to_string(i) + " [";
    for (int j = 0; j < 10; ++j) {
      text += (j ? ", " : "") + std::string("{key: k") + std::to_string(j) + ", descriptors: *l" +
              std::to_string(i - 1) + "}";
    }
    text += "]\n";
  }
  text += "domain: x\ndescriptors: *l29\n";
  const auto p = Parse(text);
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:1:1", "file too large"));
}

TEST(ConfigRobustness, GarbageNeverCrashes) {
  // Mutations of a valid file: every result is either loaded or refused with errors, and
  // whatever loads passes check_rules and compiles.
  std::string base;
  {
    std::ifstream in(kTestdata + "/envoy_example.yaml");
    base.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_FALSE(base.empty());
  std::mt19937 rng(12345);
  const std::string alphabet = ":-[]{}&*!|>'\"#%@`,?<\t\n \\x0ab*_";
  for (int round = 0; round < 2000; ++round) {
    std::string text = base;
    const int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const std::size_t at = rng() % text.size();
      switch (rng() % 3) {
        case 0:
          text[at] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          text.erase(at, 1 + rng() % 10);
          break;
        default:
          text.insert(at, 1, alphabet[rng() % alphabet.size()]);
          break;
      }
    }
    RuleSource source;
    const auto errors = parse_rules(text, "fuzz.yaml", source);
    for (const auto& err : errors) {
      ASSERT_FALSE(err.message.empty());
      ASSERT_GE(err.where.line, 1) << err.to_string();
    }
    if (errors.empty() && check_rules(source).empty()) {
      EXPECT_NO_THROW(RuleSet::compile(source)) << text;
    }
  }
}

// --- loading files and directories
// ----------------------------------------------------------------

TEST(ConfigLoad, DomainInTwoFilesOfADirectory) {
  const std::string dir = kTestdata + "/dir_dup";
  const LoadResult r = load_rules({dir});
  EXPECT_TRUE(OnlyError(r.errors, dir + "/two.yaml:1:9",
                        "duplicate domain 'shared': already defined at " + dir + "/one.yaml:1"));
  EXPECT_TRUE(r.source.domains.empty());
}

TEST(ConfigLoad, DirectoryLoadsAsOneSnapshot) {
  const std::string dir = kTestdata + "/dir_ok";
  const LoadResult r = load_rules({dir});
  ASSERT_TRUE(r.ok()) << Dump(r.errors);
  // Sorted by path: a.yaml, c.json, nested/b.yml. Hidden files and directories, and files of
  // other types, are skipped.
  ASSERT_EQ(r.source.domains.size(), 2u);
  EXPECT_EQ(r.source.domains[0].domain, "alpha");
  EXPECT_EQ(r.source.domains[0].where.file, dir + "/a.yaml");
  EXPECT_EQ(r.source.domains[1].domain, "beta");
  EXPECT_EQ(r.source.domains[1].where.file, dir + "/nested/b.yml");
  ASSERT_EQ(r.source.path_rules.size(), 1u);
  EXPECT_EQ(r.source.path_rules[0].path, "/c");
  EXPECT_EQ(r.source.path_rules[0].where.file, dir + "/c.json");

  std::vector<ConfigError> errors;
  auto rules = compile_rules({dir}, errors);
  ASSERT_NE(rules, nullptr) << Dump(errors);
  EXPECT_TRUE(rules->has_domain("alpha"));
  EXPECT_TRUE(rules->has_domain("beta"));
  EXPECT_EQ(rules->limit_count(), 3u);
}

TEST(ConfigLoad, ABadFileRejectsTheWholeSnapshot) {
  const std::string dir = kTestdata + "/dir_bad";
  const LoadResult r = load_rules({dir});
  EXPECT_TRUE(OnlyError(r.errors, dir + "/worse.yaml:5:13", "invalid unit 'fortnight'"));
  EXPECT_TRUE(r.source.domains.empty());
  EXPECT_TRUE(r.source.path_rules.empty());

  std::vector<ConfigError> errors;
  EXPECT_EQ(compile_rules({dir}, errors), nullptr);
  EXPECT_TRUE(OnlyError(errors, dir + "/worse.yaml:5:13", "invalid unit 'fortnight'"));
}

TEST(ConfigLoad, MissingPathsAreErrors) {
  const std::string missing = kTestdata + "/no_such_dir";
  const LoadResult r = load_rules({kTestdata + "/dir_ok/a.yaml", missing});
  ASSERT_EQ(r.errors.size(), 1u) << Dump(r.errors);
  EXPECT_EQ(r.errors[0].to_string(), missing + ": cannot read: No such file or directory");
  EXPECT_TRUE(r.source.domains.empty());
}

TEST(ConfigLoad, FilesAndDirectoriesTogetherAndNoFileTwice) {
  const std::string dir = kTestdata + "/dir_ok";
  // a.yaml is named on its own and again through its directory: it loads once.
  const LoadResult r = load_rules({dir + "/a.yaml", dir});
  ASSERT_TRUE(r.ok()) << Dump(r.errors);
  EXPECT_EQ(r.source.domains.size(), 2u);
}

TEST(ConfigLoad, ErrorsFromSeveralFilesAndAcrossFiles) {
  TempDir tmp;
  tmp.write("1.yaml", "domain: x\ndescriptors: [{key: a, rate_limit: {unit: sec}}]\n");
  tmp.write("2.yaml", "domain: y\n");
  tmp.write("3.yaml", "domain: y\n");
  tmp.write("sub/4.yml",
            "rules:\n  - path: /p\n    descriptors: [{key: k, unit: second, requests_per_unit: "
            "1}]\n");
  tmp.write("sub/5.json",
            R"({"rules": [{"path": "/p", "descriptors": [{"key": "k", "unit": "minute", )"
            R"("requests_per_unit": 1}]}]})");
  const std::string d = tmp.path().string();
  const LoadResult r = load_rules({d});
  ASSERT_EQ(r.errors.size(), 3u) << Dump(r.errors);
  EXPECT_TRUE(HasError(r.errors, d + "/1.yaml:2:43", "invalid unit 'sec'"));
  EXPECT_TRUE(HasError(r.errors, d + "/3.yaml:1:9",
                       "duplicate domain 'y': already defined at " + d + "/2.yaml:1"));
  EXPECT_TRUE(HasError(r.errors, d + "/sub/5.json:1:43",
                       "duplicate path rule: path '/p', key 'k' (any value) is already defined "
                       "at " +
                           d + "/sub/4.yml:3"));
}

TEST(ConfigLoad, EmptyDirectoryLoadsNothing) {
  TempDir tmp;
  const LoadResult r = load_rules({tmp.path().string()});
  EXPECT_TRUE(r.ok()) << Dump(r.errors);
  EXPECT_TRUE(r.source.domains.empty());
}

// --- what loads, and how it matches
// ---------------------------------------------------------------

TEST(ConfigEnvoy, RealEnvoyConfigLoadsAndMatches) {
  const std::string file = kTestdata + "/envoy_example.yaml";
  std::vector<ConfigError> errors;
  auto rules = compile_rules({file}, errors);
  ASSERT_NE(rules, nullptr) << Dump(errors);
  ASSERT_EQ(rules->source().domains.size(), 1u);
  const DomainRules& d = rules->source().domains[0];
  EXPECT_EQ(d.domain, "edge");
  EXPECT_EQ(d.where.file, file);
  EXPECT_EQ(d.where.line, 3);
  EXPECT_EQ(d.where.column, 9);
  ASSERT_EQ(d.descriptors.size(), 9u);
  EXPECT_EQ(d.descriptors[0].where.line, 6);
  EXPECT_EQ(d.descriptors[0].where.column, 5);
  ASSERT_EQ(d.descriptors[0].limits.size(), 1u);
  EXPECT_EQ(d.descriptors[0].limits[0].where.line, 8);
  EXPECT_EQ(d.descriptors[0].limits[0].where.column, 7);

  auto match = [&](std::vector<DescriptorEntry> entries) {
    return rules->match("edge", Desc(std::move(entries)));
  };
  // Key-only default.
  auto* ip = match({{"remote_address", "10.0.0.1"}});
  ASSERT_NE(ip, nullptr);
  ASSERT_EQ(ip->size(), 1u);
  EXPECT_EQ((*ip)[0].spec, (LimitSpec{Algorithm::kFixedWindow, 10, 1'000'000, 0}));
  EXPECT_EQ((*ip)[0].unit, Unit::kSecond);
  EXPECT_EQ((*ip)[0].name, "edge.remote_address");
  // The exact value wins over the default.
  auto* blocked = match({{"remote_address", "50.0.0.5"}});
  ASSERT_NE(blocked, nullptr);
  EXPECT_EQ((*blocked)[0].spec.limit, 0u);
  // Nested, shadow mode; no limit at the first level alone.
  auto* marketing = match({{"message_type", "marketing"}, {"to_number", "+15550100"}});
  ASSERT_NE(marketing, nullptr);
  EXPECT_TRUE((*marketing)[0].shadow);
  EXPECT_EQ((*marketing)[0].unit, Unit::kDay);
  EXPECT_EQ((*marketing)[0].spec.limit, 5u);
  EXPECT_TRUE(d.descriptors[2].descriptors[0].detailed_metric);
  EXPECT_EQ(match({{"message_type", "marketing"}}), nullptr);
  EXPECT_EQ(match({{"message_type", "other"}, {"to_number", "+15550100"}}), nullptr);
  // Unit case as Envoy reads it.
  auto* to_number = match({{"to_number", "+15550100"}});
  ASSERT_NE(to_number, nullptr);
  EXPECT_EQ((*to_number)[0].unit, Unit::kDay);
  EXPECT_EQ((*to_number)[0].spec.limit, 100u);
  // Wildcards in file order.
  auto* orders = match({{"path", "/api/v1/orders"}});
  ASSERT_NE(orders, nullptr);
  EXPECT_EQ((*orders)[0].name, "orders");
  EXPECT_EQ((*orders)[0].spec.limit, 60u);
  auto* api = match({{"path", "/api/v1/users"}});
  ASSERT_NE(api, nullptr);
  EXPECT_EQ((*api)[0].spec.limit, 600u);
  EXPECT_EQ(match({{"path", "/web"}}), nullptr);
  // replaces and unlimited.
  auto* premium = match({{"user", "premium"}});
  ASSERT_NE(premium, nullptr);
  EXPECT_EQ((*premium)[0].replaces, std::vector<std::string>{"orders"});
  auto* health = match({{"health", "lb"}});
  ASSERT_NE(health, nullptr);
  EXPECT_TRUE((*health)[0].unlimited);
  // Limits apply only at the depth of the request's last entry.
  auto* mock = match({{"source_cluster", "proxy"}, {"destination_cluster", "mock"}});
  ASSERT_NE(mock, nullptr);
  EXPECT_EQ((*mock)[0].spec.limit, 1u);
  auto* other = match({{"source_cluster", "proxy"}, {"destination_cluster", "other"}});
  ASSERT_NE(other, nullptr);
  EXPECT_EQ((*other)[0].spec.window, 3'600'000'000);
  EXPECT_EQ(match({{"source_cluster", "proxy"}}), nullptr);
  EXPECT_EQ(match({{"source_cluster", "proxy"}, {"destination_cluster", "mock"}, {"x", "y"}}),
            nullptr);
}

TEST(ConfigEnvoy, ScalarsReadAsEnvoyReadsThem) {
  const auto p = Parse(
      "domain: 42\n"
      "descriptors:\n"
      "  - key: port\n"
      "    value: 8080\n"
      "    shadow_mode: yes\n"
      "    rate_limit: {unit: SECOND, requests_per_unit: 7}\n"
      "  - key: empty\n"
      "    value:\n"
      "    rate_limit:\n");
  ASSERT_TRUE(p.errors.empty()) << Dump(p.errors);
  const DomainRules& d = p.source.domains[0];
  EXPECT_EQ(d.domain, "42");
  EXPECT_EQ(d.descriptors[0].value, "8080");
  EXPECT_TRUE(d.descriptors[0].shadow_mode);
  EXPECT_EQ(d.descriptors[0].limits[0].unit, Unit::kSecond);
  // A null value is the key-only default, a null rate_limit is no limit (Envoy's zero values).
  EXPECT_EQ(d.descriptors[1].value, "");
  EXPECT_TRUE(d.descriptors[1].limits.empty());
}

TEST(ConfigEnvoy, RequestsPerUnitDefaultsToZeroAsInEnvoy) {
  const auto p = Parse("domain: api\ndescriptors: [{key: u, rate_limit: {unit: hour}}]\n");
  ASSERT_TRUE(p.errors.empty()) << Dump(p.errors);
  EXPECT_EQ(p.source.domains[0].descriptors[0].limits[0].spec.limit, 0u);
}

TEST(ConfigEnvoy, MergeKeysAreResolved) {
  const auto p = Parse(
      "x_defaults: &per_second {unit: second, requests_per_unit: 10}\n"
      "domain: api\n"
      "descriptors:\n"
      "  - key: a\n"
      "    rate_limit:\n"
      "      <<: *per_second\n"
      "      requests_per_unit: 20\n"
      "  - key: b\n"
      "    rate_limit: *per_second\n");
  // x_defaults is not a rule key: anchors have to live somewhere Envoy accepts too.
  EXPECT_TRUE(OnlyError(p.errors, "rules.yaml:1:1", "unknown key 'x_defaults'"));
  const auto ok = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: a\n"
      "    rate_limit: &per_second {unit: second, requests_per_unit: 10}\n"
      "  - key: b\n"
      "    rate_limit:\n"
      "      <<: *per_second\n"
      "      requests_per_unit: 20\n");
  ASSERT_TRUE(ok.errors.empty()) << Dump(ok.errors);
  const auto& limits_b = ok.source.domains[0].descriptors[1].limits;
  ASSERT_EQ(limits_b.size(), 1u);
  EXPECT_EQ(limits_b[0].spec, (LimitSpec{Algorithm::kFixedWindow, 20, 1'000'000, 0}));
}

TEST(ConfigExtensions, AlgorithmWindowBurstAndSeveralLimits) {
  const auto p = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: a\n"
      "    rate_limit: {unit: minute, requests_per_unit: 100, unit_multiplier: 5, algorithm: "
      "sliding_window_log}\n"
      "  - key: b\n"
      "    rate_limit: {window: 30s, requests_per_unit: 10, algorithm: SLIDING_WINDOW_COUNTER}\n"
      "  - key: c\n"
      "    rate_limits:\n"
      "      - {unit: second, requests_per_unit: 10, algorithm: token_bucket, burst: 50, name: "
      "burst}\n"
      "      - {window: 1h30m, requests_per_unit: 1000, name: sustained}\n"
      "  - key: d\n"
      "    rate_limit: {window: 250ms, requests_per_unit: 1, algorithm: token_bucket}\n"
      "  - key: e\n"
      "    rate_limit: {window: 1w2d3h4m5s6ms7us, requests_per_unit: 1}\n");
  ASSERT_TRUE(p.errors.empty()) << Dump(p.errors);
  const auto& ds = p.source.domains[0].descriptors;
  ASSERT_EQ(ds.size(), 5u);
  EXPECT_EQ(ds[0].limits[0].spec,
            (LimitSpec{Algorithm::kSlidingWindowLog, 100, 5 * 60 * 1'000'000LL, 0}));
  EXPECT_EQ(ds[0].limits[0].unit, Unit::kMinute);
  EXPECT_EQ(ds[1].limits[0].spec,
            (LimitSpec{Algorithm::kSlidingWindowCounter, 10, 30 * 1'000'000LL, 0}));
  EXPECT_EQ(ds[1].limits[0].unit, Unit::kUnknown);
  ASSERT_EQ(ds[2].limits.size(), 2u);
  EXPECT_EQ(ds[2].limits[0].spec, (LimitSpec{Algorithm::kTokenBucket, 10, 1'000'000, 50}));
  EXPECT_EQ(ds[2].limits[0].name, "burst");
  EXPECT_EQ(ds[2].limits[0].where.line, 9);
  EXPECT_EQ(ds[2].limits[0].where.column, 9);
  EXPECT_EQ(ds[2].limits[1].spec,
            (LimitSpec{Algorithm::kFixedWindow, 1000, 5400 * 1'000'000LL, 0}));
  EXPECT_EQ(ds[2].limits[1].name, "sustained");
  EXPECT_EQ(ds[3].limits[0].spec, (LimitSpec{Algorithm::kTokenBucket, 1, 250'000, 0}));
  const Micros w = ((7 + 2) * 86'400LL + 3 * 3600 + 4 * 60 + 5) * 1'000'000 + 6'000 + 7;
  EXPECT_EQ(ds[4].limits[0].spec.window, w);

  // Both limits of 'c' apply to a request for it.
  auto rules = RuleSet::compile(p.source);
  auto* c = rules->match("api", Desc({{"c", "x"}}));
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(c->size(), 2u);
  EXPECT_EQ((*c)[0].name, "burst");
  EXPECT_EQ((*c)[1].name, "sustained");
}

TEST(ConfigExtensions, PathRulesLoadAndMatch) {
  const std::string file = kTestdata + "/path_rules.yaml";
  std::vector<ConfigError> errors;
  auto rules = compile_rules({file}, errors);
  ASSERT_NE(rules, nullptr) << Dump(errors);
  const auto& src = rules->source().path_rules;
  ASSERT_EQ(src.size(), 2u);
  EXPECT_EQ(src[0].path, "/login");
  EXPECT_EQ(src[0].where.line, 4);
  EXPECT_EQ(src[0].where.column, 5);
  ASSERT_EQ(src[0].descriptors.size(), 2u);
  EXPECT_EQ(src[0].descriptors[0].key, "user_id");
  EXPECT_FALSE(src[0].descriptors[0].value.has_value());
  EXPECT_EQ(src[0].descriptors[0].where.line, 6);
  EXPECT_EQ(src[0].descriptors[0].where.column, 9);
  EXPECT_EQ(src[0].descriptors[0].limits[0].spec,
            (LimitSpec{Algorithm::kFixedWindow, 5, 60'000'000, 0}));
  EXPECT_EQ(src[0].descriptors[1].value, std::optional<std::string>("free"));
  EXPECT_EQ(src[1].descriptors[0].limits[0].spec,
            (LimitSpec{Algorithm::kTokenBucket, 10, 1'000'000, 20}));

  std::vector<RuleSet::PathMatch> out;
  rules->match_path(PathRequest{"/login", {{"user_id", "42"}, {"plan", "free"}}, 1}, out);
  EXPECT_EQ(out.size(), 2u);
  out.clear();
  rules->match_path(PathRequest{"/login", {{"user_id", "42"}, {"plan", "pro"}}, 1}, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data_index, 0u);
  out.clear();
  rules->match_path(PathRequest{"/api/orders", {{"api_key", "k1"}}, 1}, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ((*out[0].limits)[0].spec.burst, 20u);
  out.clear();
  rules->match_path(PathRequest{"/other", {{"user_id", "42"}}, 1}, out);
  EXPECT_TRUE(out.empty());
}

TEST(ConfigExtensions, PathRulesWithLimitsList) {
  const auto p = Parse(
      "rules:\n"
      "  - path: /upload\n"
      "    descriptors:\n"
      "      - key: user\n"
      "        shadow_mode: true\n"
      "        limits:\n"
      "          - {algorithm: token_bucket, unit: second, requests_per_unit: 1, burst: 5}\n"
      "          - {unit: day, requests_per_unit: 100}\n"
      "      - key: ip\n"
      "        unlimited: true\n");
  ASSERT_TRUE(p.errors.empty()) << Dump(p.errors);
  const auto& d = p.source.path_rules[0].descriptors;
  EXPECT_TRUE(d[0].shadow_mode);
  ASSERT_EQ(d[0].limits.size(), 2u);
  EXPECT_EQ(d[0].limits[0].spec, (LimitSpec{Algorithm::kTokenBucket, 1, 1'000'000, 5}));
  EXPECT_EQ(d[0].limits[1].spec, (LimitSpec{Algorithm::kFixedWindow, 100, 86'400'000'000, 0}));
  EXPECT_TRUE(d[1].limits[0].unlimited);
}

TEST(ConfigExtensions, JsonFileLoads) {
  const std::string file = kTestdata + "/rules.json";
  const LoadResult r = load_rules({file});
  ASSERT_TRUE(r.ok()) << Dump(r.errors);
  const DomainRules& d = r.source.domains[0];
  EXPECT_EQ(d.domain, "json_api");
  EXPECT_EQ(d.descriptors[0].limits[0].spec,
            (LimitSpec{Algorithm::kSlidingWindowCounter, 100, 60'000'000, 0}));
  ASSERT_EQ(d.descriptors[1].limits.size(), 2u);
  EXPECT_EQ(d.descriptors[1].limits[0].spec,
            (LimitSpec{Algorithm::kTokenBucket, 10, 1'000'000, 50}));
  EXPECT_EQ(d.descriptors[1].limits[1].spec,
            (LimitSpec{Algorithm::kFixedWindow, 5000, 3'600'000'000, 0}));
  // Errors in JSON point into the JSON text too.
  const auto bad =
      Parse(R"({"domain": "j", "descriptors": [{"key": "a", "valeu": "b"}]})", "rules.json");
  EXPECT_TRUE(
      OnlyError(bad.errors, "rules.json:1:46", "unknown key 'valeu' (did you mean 'value'?)"));
}

// --- check_rules on sources that did not come from files ----------------------------------------

TEST(ConfigCheck, RefusesWhatCompileWouldThrowOn) {
  RuleSource src;
  DomainRules d{.domain = "api"};
  d.where = {"api.yaml", 1, 9};
  DescriptorRule empty_key;
  empty_key.where = {"api.yaml", 3, 5};
  d.descriptors.push_back(empty_key);
  DescriptorRule a{.key = "a"};
  a.where = {"api.yaml", 4, 5};
  LimitDef no_window;
  no_window.spec.limit = 1;
  no_window.where = {"api.yaml", 5, 7};
  a.limits.push_back(no_window);
  LimitDef too_big = LimitDef::per_unit(kMaxLimit + 1, Unit::kSecond);
  too_big.where = {"api.yaml", 6, 7};
  a.limits.push_back(too_big);
  d.descriptors.push_back(a);
  DescriptorRule wild{.key = "w", .value = "x*"};
  d.descriptors.push_back(wild);
  d.descriptors.push_back(wild);
  src.domains.push_back(d);
  DomainRules again{.domain = "api"};
  again.where = {"other.yaml", 1, 9};
  src.domains.push_back(again);
  src.domains.push_back(DomainRules{});

  const auto errors = check_rules(src);
  EXPECT_TRUE(HasError(errors, "api.yaml:3:5", "descriptor under 'api' has an empty key"));
  EXPECT_TRUE(HasError(errors, "api.yaml:5:7", "api.a: window must be from 1us to 36600d"));
  EXPECT_TRUE(
      HasError(errors, "api.yaml:6:7", "api.a: requests_per_unit must be at most 4294967295"));
  EXPECT_TRUE(
      HasError(errors, "other.yaml:1:9", "duplicate domain 'api': already defined at api.yaml:1"));
  EXPECT_TRUE(HasError(errors, "", "domain must not be empty"));
  EXPECT_TRUE(HasError(errors, "", "duplicate descriptor composite key 'api.w_x*'"));
  EXPECT_EQ(errors.size(), 6u) << Dump(errors);
  EXPECT_ANY_THROW(RuleSet::compile(src));
}

TEST(ConfigCheck, PassingSourcesCompile) {
  RuleSource src;
  DomainRules d{.domain = "api"};
  DescriptorRule a{.key = "a"};
  a.limits.push_back(LimitDef::per_unit(5, Unit::kMinute));
  a.limits.push_back(LimitDef::per_unit(100, Unit::kDay, Algorithm::kSlidingWindowCounter));
  d.descriptors.push_back(a);
  src.domains.push_back(d);
  PathRule r{.path = "/x"};
  PathDescriptorRule pd{.key = "user"};
  pd.limits.push_back(LimitDef::per_unit(1, Unit::kSecond));
  r.descriptors.push_back(pd);
  src.path_rules.push_back(r);
  ASSERT_TRUE(check_rules(src).empty()) << Dump(check_rules(src));
  EXPECT_NO_THROW(RuleSet::compile(src));

  src.path_rules.push_back(r);  // the same path, key and value again
  EXPECT_TRUE(HasError(check_rules(src), "", "duplicate path rule: path '/x', key 'user'"));
}

}  // namespace
}  // namespace sluice

namespace sluice {
namespace {

TEST(ConfigFailureMode, AllowDenyAndBadValues) {
  const auto p = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: open\n"
      "    rate_limit: {unit: second, requests_per_unit: 5}\n"
      "  - key: closed\n"
      "    rate_limit: {unit: second, requests_per_unit: 5, failure_mode: DENY}\n");
  ASSERT_TRUE(p.errors.empty()) << Dump(p.errors);
  ASSERT_EQ(p.source.domains.size(), 1u);
  EXPECT_EQ(p.source.domains[0].descriptors[0].limits[0].failure_mode, FailureMode::kAllow);
  EXPECT_EQ(p.source.domains[0].descriptors[1].limits[0].failure_mode, FailureMode::kDeny);

  const auto bad = Parse(
      "rules:\n"
      "  - path: /login\n"
      "    descriptors:\n"
      "      - {key: user, unit: minute, requests_per_unit: 5, failure_mode: maybe}\n");
  EXPECT_TRUE(HasError(bad.errors, "rules.yaml:4:71", "failure_mode: must be allow or deny"))
      << Dump(bad.errors);
}

TEST(ConfigConsistency, StrongEventualDefaultAndBadValues) {
  const auto p = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: plain\n"
      "    rate_limit: {unit: second, requests_per_unit: 5}\n"
      "  - key: shared\n"
      "    rate_limit: {unit: second, requests_per_unit: 5, consistency: Eventual}\n"
      "  - key: exact\n"
      "    rate_limit: {unit: second, requests_per_unit: 5, consistency: strong}\n");
  ASSERT_TRUE(p.errors.empty()) << Dump(p.errors);
  const auto& d = p.source.domains[0].descriptors;
  EXPECT_EQ(d[0].limits[0].spec.consistency, Consistency::kDefault);
  EXPECT_EQ(d[1].limits[0].spec.consistency, Consistency::kEventual);
  EXPECT_EQ(d[2].limits[0].spec.consistency, Consistency::kStrong);

  const auto bad = Parse(
      "rules:\n"
      "  - path: /login\n"
      "    descriptors:\n"
      "      - {key: user, unit: minute, requests_per_unit: 5, consistency: weak}\n");
  EXPECT_TRUE(HasError(bad.errors, "rules.yaml:4:70",
                       "consistency: must be strong or eventual, got 'weak'"))
      << Dump(bad.errors);
}

TEST(ConfigErrors, TokenBucketThatNeverRefills) {
  // One token per 100 days, a burst of 1,000: over 100 years to refill.
  const auto p = Parse(
      "domain: api\n"
      "descriptors:\n"
      "  - key: user\n"
      "    rate_limit:\n"
      "      unit: day\n"
      "      unit_multiplier: 100\n"
      "      requests_per_unit: 1\n"
      "      algorithm: token_bucket\n"
      "      burst: 1000\n");
  EXPECT_TRUE(HasError(p.errors, "rules.yaml:5:7", "over 100 years to refill")) << Dump(p.errors);
}

}  // namespace
}  // namespace sluice
