#include "sluice/rules.h"

#include <gtest/gtest.h>

namespace sluice {
namespace {

TEST(GlobMatch, StarMatchesAnyRunAnywhere) {
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_TRUE(glob_match("*", "anything"));
  EXPECT_TRUE(glob_match("foo*", "foo"));
  EXPECT_TRUE(glob_match("foo*", "foobar"));
  EXPECT_FALSE(glob_match("foo*", "fo"));
  EXPECT_TRUE(glob_match("*bar", "foobar"));
  EXPECT_TRUE(glob_match("/api/*/items", "/api/v1/items"));
  EXPECT_FALSE(glob_match("/api/*/items", "/api/v1/item"));
  EXPECT_TRUE(glob_match("a*b*c", "aXXbYYc"));
  EXPECT_FALSE(glob_match("a*b*c", "aXXbYY"));
  EXPECT_TRUE(glob_match("exact", "exact"));
  EXPECT_FALSE(glob_match("exact", "exactly"));
  // Pathological patterns stay linear-ish.
  EXPECT_FALSE(glob_match("*a*a*a*a*a*a*a*b", std::string(5000, 'a')));
}

TEST(KeyValue, LengthPrefixKeepsValueListsApart) {
  std::string a, b;
  append_key_value(a, "ab");
  append_key_value(a, "c");
  append_key_value(b, "a");
  append_key_value(b, "bc");
  EXPECT_NE(a, b);
  std::string big;
  append_key_value(big, std::string(300, 'x'));
  EXPECT_EQ(big.size(), 302u);  // two varint bytes for 300
}

TEST(RuleSet, CompileRejectsDuplicatesAndBadWindows) {
  RuleSource dup;
  dup.domains.push_back({"d", {{.key = "k", .value = "v"}, {.key = "k", .value = "v"}}, {}});
  EXPECT_THROW(RuleSet::compile(dup), std::invalid_argument);

  RuleSource two;
  two.domains.push_back({"d", {}, {}});
  two.domains.push_back({"d", {}, {}});
  EXPECT_THROW(RuleSet::compile(two), std::invalid_argument);

  RuleSource bad_window;
  DescriptorRule r{.key = "k"};
  LimitDef def = LimitDef::per_unit(1, Unit::kSecond);
  def.spec.window = 0;
  r.limits.push_back(def);
  bad_window.domains.push_back({"d", {r}, {}});
  EXPECT_THROW(RuleSet::compile(bad_window), std::invalid_argument);
}

TEST(RuleSet, CompileRefusesTreesDeeperThan64) {
  DescriptorRule leaf{.key = "k"};
  leaf.limits.push_back(LimitDef::per_unit(1, Unit::kSecond));
  for (int i = 0; i < 70; ++i) {
    DescriptorRule parent{.key = "k" + std::to_string(i)};
    parent.descriptors.push_back(std::move(leaf));
    leaf = std::move(parent);
  }
  RuleSource src;
  src.domains.push_back({"deep", {leaf}, {}});
  EXPECT_THROW(RuleSet::compile(src), std::invalid_argument);
}

TEST(Units, MatchEnvoyDividers) {
  EXPECT_EQ(unit_micros(Unit::kSecond), 1'000'000);
  EXPECT_EQ(unit_micros(Unit::kMinute), 60'000'000);
  EXPECT_EQ(unit_micros(Unit::kHour), 3'600'000'000);
  EXPECT_EQ(unit_micros(Unit::kDay), 86'400'000'000);
  EXPECT_EQ(unit_micros(Unit::kWeek), 604'800'000'000);
  EXPECT_EQ(unit_micros(Unit::kMonth), 2'592'000'000'000);
  EXPECT_EQ(unit_micros(Unit::kYear), 31'536'000'000'000);
  EXPECT_EQ(unit_micros(Unit::kUnknown), 0);
}

}  // namespace
}  // namespace sluice
