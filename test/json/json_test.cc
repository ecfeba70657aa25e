#include "sluice/json.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <string>
#include <variant>

#include "sluice/limiter.h"
#include "sluice/rules.h"
#include "sluice/store.h"
#include "support/json_mutation.h"
#include "support/request_text.h"

namespace sluice {
namespace {

using nlohmann::json;
using testing::describe_request;
using testing::Rng;

Request two_descriptor_request() {
  Request r;
  r.domain = "api";
  r.descriptors.push_back({.entries = {{"remote_address", "10.0.0.1"}}});
  r.descriptors.push_back({.entries = {{"user", "alice"}, {"plan", "free"}}});
  return r;
}

TEST(DecisionJson, ExactShapeAndRoundingUp) {
  Decision d;
  d.allowed = false;
  d.limit = 10;
  d.remaining = 0;
  d.reset_after = 1'000'001;  // 1000.001 ms -> 1001
  d.retry_after = 1;          // 0.001 ms -> 1
  DescriptorStatus a;
  a.descriptor_index = 1;
  a.name = "api.user.plan_free";
  a.spec.algorithm = Algorithm::kSlidingWindowCounter;
  a.allowed = false;
  a.limit = 10;
  a.remaining = 0;
  a.reset_after = 1'000'001;
  a.retry_after = 1;
  DescriptorStatus b;
  b.descriptor_index = 0;
  b.name = "api.remote_address";
  b.spec.algorithm = Algorithm::kTokenBucket;
  b.shadow = true;
  b.allowed = false;
  b.limit = 3;
  b.remaining = 0;
  b.reset_after = 999;     // -> 1
  b.retry_after = kNever;  // -> -1
  DescriptorStatus c;
  c.descriptor_index = 0;
  c.name = "api.remote_address_10.0.0.1";
  c.unlimited = true;
  c.remaining = kMaxLimit;
  d.statuses = {a, b, c};

  const json expected = json::parse(R"({
    "allowed": false, "limit": 10, "remaining": 0, "reset_after_ms": 1001, "retry_after_ms": 1,
    "statuses": [
      {"descriptor": [{"key": "user", "value": "alice"}, {"key": "plan", "value": "free"}],
       "name": "api.user.plan_free", "algorithm": "sliding_window_counter", "allowed": false,
       "limit": 10, "remaining": 0, "reset_after_ms": 1001, "retry_after_ms": 1, "shadow": false},
      {"descriptor": [{"key": "remote_address", "value": "10.0.0.1"}],
       "name": "api.remote_address", "algorithm": "token_bucket", "allowed": false,
       "limit": 3, "remaining": 0, "reset_after_ms": 1, "retry_after_ms": -1, "shadow": true},
      {"descriptor": [{"key": "remote_address", "value": "10.0.0.1"}],
       "name": "api.remote_address_10.0.0.1", "algorithm": "fixed_window", "allowed": true,
       "limit": 0, "remaining": 4294967295, "reset_after_ms": 0, "retry_after_ms": 0,
       "shadow": false, "unlimited": true}
    ]})");
  EXPECT_EQ(decision_to_json(d, two_descriptor_request()), expected);
  // No "error" unless there is one; keys render in a stable (sorted) order.
  EXPECT_EQ(dump_json(decision_to_json(Decision{}, Request{})),
            R"({"allowed":true,"limit":0,"remaining":0,"reset_after_ms":0,)"
            R"("retry_after_ms":0,"statuses":[]})");
}

TEST(DecisionJson, MillisecondsRoundUpExactly) {
  const std::pair<Micros, std::int64_t> cases[] = {{0, 0},
                                                   {1, 1},
                                                   {999, 1},
                                                   {1000, 1},
                                                   {1001, 2},
                                                   {333'334, 334},
                                                   {1'000'000, 1000},
                                                   {-5, 0},
                                                   {kNever, -1},
                                                   {kNever - 1, 9'223'372'036'854'776}};
  for (auto [us, ms] : cases) {
    Decision d;
    d.reset_after = us;
    d.retry_after = us;
    const json j = decision_to_json(d, Request{});
    EXPECT_EQ(j["reset_after_ms"], ms) << us;
    EXPECT_EQ(j["retry_after_ms"], ms) << us;
  }
}

TEST(DecisionJson, ErrorOnlyWhenSet) {
  Decision d;
  d.error = "redis: timeout";
  const json j = decision_to_json(d, Request{});
  EXPECT_EQ(j["error"], "redis: timeout");
  EXPECT_FALSE(decision_to_json(Decision{}, Request{}).contains("error"));
}

TEST(DecisionJson, PathRequestDescriptor) {
  PathRequest r{.path = "/login", .data = {{"ip", "1.2.3.4"}, {"user_id", "42"}}};
  Decision d;
  DescriptorStatus st;
  st.descriptor_index = 1;
  st.name = "path:/login.user_id";
  st.limit = 5;
  st.remaining = 4;
  st.reset_after = 60'000'000;
  d.statuses.push_back(st);
  d.limit = 5;
  d.remaining = 4;
  d.reset_after = 60'000'000;
  const json j = decision_to_json(d, r);
  EXPECT_EQ(
      j["statuses"][0]["descriptor"],
      json::parse(R"([{"key": "path", "value": "/login"}, {"key": "user_id", "value": "42"}])"));
  EXPECT_EQ(j["reset_after_ms"], 60000);
  // The AnyRequest overload picks the right shape.
  EXPECT_EQ(decision_to_json(d, AnyRequest(r)), j);
}

TEST(DecisionJson, OutOfRangeDescriptorIndexIsEmpty) {
  Decision d;
  d.statuses.emplace_back().descriptor_index = 7;
  EXPECT_EQ(decision_to_json(d, Request{})["statuses"][0]["descriptor"], json::array());
  EXPECT_EQ(decision_to_json(d, PathRequest{.path = "/x"})["statuses"][0]["descriptor"].size(), 1u);
}

// FixedWindowStore is the smallest store: fixed windows only, all-or-nothing.
class FixedWindowStore final : public Store {
 public:
  StoreStatus apply(std::span<const Hit> hits, Micros now,
                    std::span<Verdict> out) noexcept override {
    bool all = true;
    for (std::size_t i = 0; i < hits.size(); ++i) {
      FixedWindowState copy = states_[std::string(hits[i].key)];
      out[i] = step(copy, *hits[i].spec, hits[i].cost, now, false);
      all &= out[i].allowed || !hits[i].enforce;
    }
    if (all) {
      for (std::size_t i = 0; i < hits.size(); ++i)
        out[i] = step(states_[std::string(hits[i].key)], *hits[i].spec, hits[i].cost, now);
    }
    return {};
  }
  std::string name() const override { return "test"; }

 private:
  std::map<std::string, FixedWindowState> states_;
};

TEST(DecisionJson, FromARealLimiter) {
  RuleSource src;
  DomainRules dom{.domain = "api"};
  DescriptorRule ip{.key = "remote_address"};
  ip.limits.push_back(LimitDef::per_unit(2, Unit::kSecond));
  dom.descriptors.push_back(ip);
  src.domains.push_back(dom);
  FixedWindowStore store;
  ManualClock clock(seconds_to_micros(1'700'000'000) + 250'000);
  Limiter limiter(RuleSet::compile(src), store, clock);
  Request req{.domain = "api", .descriptors = {{.entries = {{"remote_address", "1.2.3.4"}}}}};
  limiter.decide(req);
  limiter.decide(req);
  const json j = decision_to_json(limiter.decide(req), req);
  EXPECT_EQ(j, json::parse(R"({"allowed": false, "limit": 2, "remaining": 0,
      "reset_after_ms": 750, "retry_after_ms": 750, "statuses": [
      {"descriptor": [{"key": "remote_address", "value": "1.2.3.4"}], "name": "api.remote_address",
       "algorithm": "fixed_window", "allowed": false, "limit": 2, "remaining": 0,
       "reset_after_ms": 750, "retry_after_ms": 750, "shadow": false}]})"));
}

TEST(DumpJson, InvalidUtf8IsReplacedNotThrown) {
  json j = {{"v", std::string("a\xff")}};
  EXPECT_EQ(dump_json(j), "{\"v\":\"a\xEF\xBF\xBD\"}");
}

// --- append_decision_json: byte-identical to dump_json(decision_to_json(...)) ---------------

// random_text() mixes the bytes a JSON string renderer must get right: plain ASCII, quotes,
// backslashes, control characters, DEL, valid UTF-8 of every length (edges included), and
// invalid UTF-8 (stray continuation bytes, bad leads, truncated sequences, overlong forms,
// surrogates, code points past U+10FFFF).
std::string random_text(Rng& rng) {
  static const char* const kPieces[] = {"a",
                                        "Z",
                                        "0",
                                        " ",
                                        "/",
                                        "<",
                                        ">",
                                        "&",
                                        "'",
                                        "\"",
                                        "\\",
                                        "\\u0041",
                                        "\b",
                                        "\f",
                                        "\n",
                                        "\r",
                                        "\t",
                                        "\x01",
                                        "\x1f",
                                        "\x7f",
                                        "\xC2\x80",
                                        "\xC3\xA9",
                                        "\xDF\xBF",
                                        "\xE0\xA0\x80",
                                        "\xE2\x82\xAC",
                                        "\xED\x9F\xBF",
                                        "\xEE\x80\x80",
                                        "\xEF\xBF\xBF",
                                        "\xF0\x90\x80\x80",
                                        "\xF0\x9F\x98\x80",
                                        "\xF4\x8F\xBF\xBF",
                                        "\xE2\x80\xA8",
                                        "\xEF\xBB\xBF",
                                        "\x80",
                                        "\xBF",
                                        "\xC0\x80",
                                        "\xC1\xBF",
                                        "\xC2",
                                        "\xE0\x80\x80",
                                        "\xE0\xA0",
                                        "\xED\xA0\x80",
                                        "\xF0\x80\x80\x80",
                                        "\xF0\x90\x80",
                                        "\xF4\x90\x80\x80",
                                        "\xF5\x80\x80\x80",
                                        "\xF8",
                                        "\xFE",
                                        "\xFF",
                                        "remote_address",
                                        "203.0.113.9"};
  std::string s;
  const std::uint64_t pieces = rng.below(4) == 0 ? 0 : rng.below(8);
  for (std::uint64_t i = 0; i < pieces; ++i) {
    if (rng.below(4) == 0) {
      s += static_cast<char>(rng.below(256));  // any byte at all
    } else {
      s += kPieces[rng.below(std::size(kPieces))];
    }
  }
  if (rng.below(8) == 0) s += std::string(1, '\0');
  return s;
}

std::uint64_t random_count(Rng& rng) {
  switch (rng.below(6)) {
    case 0:
      return 0;
    case 1:
      return rng.below(100);
    case 2:
      return kMaxLimit - rng.below(3) + 1;  // around 2^32
    case 3:
      return std::numeric_limits<std::uint64_t>::max() - rng.below(3);
    default:
      return rng.next() >> rng.below(64);
  }
}

Micros random_micros(Rng& rng) {
  switch (rng.below(8)) {
    case 0:
      return kNever;
    case 1:
      return 0;
    case 2:
      return -static_cast<Micros>(rng.below(1'000'000)) - 1;
    case 3:
      return static_cast<Micros>(rng.below(1000)) * 1000;  // whole milliseconds
    case 4:
      return static_cast<Micros>(rng.below(10'000'000));
    case 5:
      return kNever - 1 - static_cast<Micros>(rng.below(2000));
    case 6:
      return std::numeric_limits<Micros>::min() + static_cast<Micros>(rng.below(3));
    default:
      return static_cast<Micros>(rng.next() >> rng.below(64));
  }
}

Decision random_decision(Rng& rng, std::size_t descriptors) {
  Decision d;
  d.allowed = rng.coin();
  d.limit = random_count(rng);
  d.remaining = random_count(rng);
  d.reset_after = random_micros(rng);
  d.retry_after = random_micros(rng);
  if (rng.coin()) d.error = random_text(rng);
  const std::uint64_t n = rng.below(5);
  for (std::uint64_t i = 0; i < n; ++i) {
    DescriptorStatus& st = d.statuses.emplace_back();
    switch (rng.below(4)) {
      case 0:
        st.descriptor_index = static_cast<std::uint32_t>(rng.next());  // out of range
        break;
      case 1:
        st.descriptor_index = static_cast<std::uint32_t>(descriptors);  // just past the end
        break;
      default:
        st.descriptor_index = static_cast<std::uint32_t>(rng.below(descriptors + 1));
    }
    st.name = random_text(rng);
    st.spec.algorithm = static_cast<Algorithm>(rng.below(5));  // 4 renders "unknown"
    st.allowed = rng.coin();
    st.shadow = rng.coin();
    st.unlimited = rng.coin();
    st.limit = random_count(rng);
    st.remaining = random_count(rng);
    st.reset_after = random_micros(rng);
    st.retry_after = random_micros(rng);
  }
  return d;
}

AnyRequest random_request(Rng& rng) {
  if (rng.coin()) {
    Request r;
    r.domain = random_text(rng);
    const std::uint64_t n = rng.below(4);
    for (std::uint64_t i = 0; i < n; ++i) {
      Descriptor& desc = r.descriptors.emplace_back();
      const std::uint64_t m = rng.below(4);
      for (std::uint64_t j = 0; j < m; ++j)
        desc.entries.push_back({random_text(rng), random_text(rng)});
    }
    return r;
  }
  PathRequest r;
  r.path = random_text(rng);
  const std::uint64_t n = rng.below(4);
  for (std::uint64_t i = 0; i < n; ++i)
    r.data.emplace_back(random_text(rng), random_text(rng));
  return r;
}

std::size_t descriptor_count(const AnyRequest& r) {
  return std::holds_alternative<Request>(r) ? std::get<Request>(r).descriptors.size()
                                            : std::get<PathRequest>(r).data.size();
}

TEST(AppendDecisionJson, MatchesDumpOfTheDomForRandomDecisions) {
  Rng rng(20240601);
  constexpr int kCases = 20'000;
  for (int i = 0; i < kCases; ++i) {
    const AnyRequest request = random_request(rng);
    const Decision d = random_decision(rng, descriptor_count(request));
    const std::string expected = dump_json(decision_to_json(d, request));
    std::string got = "prefix";  // appends, keeping what is there
    append_decision_json(got, d, request);
    ASSERT_EQ(got, "prefix" + expected) << "case " << i;
    std::string direct;
    std::visit([&](const auto& r) { append_decision_json(direct, d, r); }, request);
    ASSERT_EQ(direct, expected) << "case " << i;
  }
}

// Every string of one or two bytes (and of three with a lead byte in front), as a status name:
// the escaping and the U+FFFD replacement of every byte sequence the random cases may miss.
TEST(AppendDecisionJson, MatchesDumpForEveryShortByteString) {
  const Request request{.domain = "d", .descriptors = {{.entries = {{"k", "v"}}}}};
  Decision d;
  d.statuses.emplace_back();
  const auto check = [&](const std::string& name) {
    d.statuses[0].name = name;
    std::string got;
    append_decision_json(got, d, request);
    ASSERT_EQ(got, dump_json(decision_to_json(d, request))) << ::testing::PrintToString(name);
  };
  for (int a = 0; a < 256; ++a) {
    check(std::string(1, static_cast<char>(a)));
    for (int b = 0; b < 256; ++b) {
      check(std::string{static_cast<char>(a), static_cast<char>(b)});
      if (a >= 0xC0)
        check(std::string{static_cast<char>(a), static_cast<char>(b), static_cast<char>(0x80)});
    }
  }
}

TEST(AppendDecisionJson, KnownRendering) {
  Decision d;
  d.allowed = false;
  d.limit = 10;
  d.reset_after = 1'000'001;
  d.retry_after = kNever;
  d.error = "store \"down\"\n";
  DescriptorStatus& st = d.statuses.emplace_back();
  st.name = "caf\xC3\xA9\x01\xFF";
  st.spec.algorithm = Algorithm::kTokenBucket;
  st.unlimited = true;
  const PathRequest r{.path = "/login", .data = {{"user_id", "42"}}};
  std::string got;
  append_decision_json(got, d, r);
  EXPECT_EQ(got,
            "{\"allowed\":false,\"error\":\"store \\\"down\\\"\\n\",\"limit\":10,\"remaining\":0,"
            "\"reset_after_ms\":1001,\"retry_after_ms\":-1,\"statuses\":[{\"algorithm\":"
            "\"token_bucket\",\"allowed\":true,\"descriptor\":[{\"key\":\"path\",\"value\":"
            "\"/"
            "login\"},{\"key\":\"user_id\",\"value\":\"42\"}],\"limit\":0,\"name\":"
            "\"caf\xC3\xA9\\u0001\xEF\xBF\xBD\",\"remaining\":0,"
            "\"reset_after_ms\":0,\"retry_after_ms\":0,\"shadow\":false,\"unlimited\":true}]}");
}

// --- parse_request_json -----------------------------------------------------------------------

std::string parse_error(const std::string& text) {
  std::string error;
  auto r = parse_request_json(json::parse(text), error);
  EXPECT_FALSE(r.has_value()) << text;
  return error;
}

TEST(ParseRequest, EnvoyForm) {
  std::string error;
  auto r = parse_request_json(json::parse(R"({"domain": "api", "descriptors": [
      {"entries": [{"key": "remote_address", "value": "1.2.3.4"}, {"key": "path"}]},
      {"entries": [{"key": "user", "value": "bob"}], "hits_addend": 0,
       "limit": {"requests_per_unit": 7, "unit": "MINUTE"}}], "hits_addend": 3})"),
                              error);
  ASSERT_TRUE(r) << error;
  const Request& req = std::get<Request>(*r);
  EXPECT_EQ(req.domain, "api");
  EXPECT_EQ(req.cost, 3u);
  ASSERT_EQ(req.descriptors.size(), 2u);
  EXPECT_EQ(req.descriptors[0].entries,
            (std::vector<DescriptorEntry>{{"remote_address", "1.2.3.4"}, {"path", ""}}));
  EXPECT_FALSE(req.descriptors[0].cost);
  EXPECT_FALSE(req.descriptors[0].limit);
  EXPECT_EQ(req.descriptors[1].cost, 0u);
  ASSERT_TRUE(req.descriptors[1].limit);
  EXPECT_EQ(req.descriptors[1].limit->requests_per_unit, 7u);
  EXPECT_EQ(req.descriptors[1].limit->unit, Unit::kMinute);
}

TEST(ParseRequest, CostDefaultsToOneAndZeroIsAllowed) {
  std::string error;
  auto r = parse_request_json(
      json::parse(R"({"domain": "d", "descriptors": [{"entries": [{"key": "k", "value": "v"}]}]})"),
      error);
  ASSERT_TRUE(r) << error;
  EXPECT_EQ(std::get<Request>(*r).cost, 1u);
  r = parse_request_json(json::parse(R"({"path": "/login", "data": {"user_id": "42"}, "cost": 0})"),
                         error);
  ASSERT_TRUE(r) << error;
  const PathRequest& p = std::get<PathRequest>(*r);
  EXPECT_EQ(p.path, "/login");
  EXPECT_EQ(p.cost, 0u);
  EXPECT_EQ(p.data, (std::vector<std::pair<std::string, std::string>>{{"user_id", "42"}}));
  r = parse_request_json(json::parse(R"({"path": "/"})"), error);
  ASSERT_TRUE(r) << error;
  EXPECT_TRUE(std::get<PathRequest>(*r).data.empty());
}

TEST(ParseRequest, ErrorsNameTheField) {
  EXPECT_EQ(parse_error(R"({"domain": "d", "descriptors": [{"entries": [{"key": "a", "value": "1"},
                          {"key": "b", "value": 2}]}]})"),
            "descriptors[0].entries[1].value: expected a string, got a number");
  EXPECT_EQ(parse_error(R"({"domain": "d", "descriptors": [{"entries": [{"value": "1"}]}]})"),
            "descriptors[0].entries[0].key: missing");
  EXPECT_EQ(parse_error(R"({"domain": "d", "descriptors": [{"entries": [{"key": ""}]}]})"),
            "descriptors[0].entries[0].key: must not be empty");
  EXPECT_EQ(parse_error(R"({"descriptors": [{"entries": [{"key": "k"}]}]})"), "domain: missing");
  EXPECT_EQ(parse_error(R"({"domain": "", "descriptors": [{"entries": [{"key": "k"}]}]})"),
            "domain: must not be empty");
  EXPECT_EQ(parse_error(R"({"domain": 5, "descriptors": []})"),
            "domain: expected a string, got a number");
  EXPECT_EQ(parse_error(R"({"domain": "d"})"), "descriptors: missing");
  EXPECT_EQ(parse_error(R"({"domain": "d", "descriptors": []})"), "descriptors: must not be empty");
  EXPECT_EQ(parse_error(R"({"domain": "d", "descriptors": {}})"),
            "descriptors: expected an array, got an object");
  EXPECT_EQ(parse_error(R"({"domain": "d", "descriptors": [{}]})"),
            "descriptors[0].entries: missing");
  EXPECT_EQ(parse_error(R"({"domain": "d", "descriptors": [{"entries": []}]})"),
            "descriptors[0].entries: must not be empty");
  EXPECT_EQ(parse_error(R"({"domain": "d", "descriptors": ["k=v"]})"),
            "descriptors[0]: expected an object {\"entries\": [...]}, got a string");
  EXPECT_EQ(parse_error(R"({"domain": "d", "descriptors": [{"entries": [{"key": "k"}]}], "x": 1})"),
            "x: unknown field");
  EXPECT_EQ(
      parse_error(R"({"domain": "d", "descriptors": [{"entries": [{"key": "k", "valeu": ""}]}]})"),
      "descriptors[0].entries[0].valeu: unknown field");
  EXPECT_EQ(parse_error(R"({"domain": "d", "descriptors": [{"entries": [{"key": "k"}],
                          "limit": {"requests_per_unit": 1, "unit": "fortnight"}}]})"),
            "descriptors[0].limit.unit: unknown unit 'fortnight' (second, minute, hour, day, week, "
            "month or year)");
  EXPECT_EQ(parse_error(R"({"path": 1})"), "path: expected a string, got a number");
  EXPECT_EQ(parse_error(R"({"path": ""})"), "path: must not be empty");
  EXPECT_EQ(parse_error(R"({"data": {}})"), "path: missing");
  EXPECT_EQ(parse_error(R"({"path": "/a", "data": {"user_id": 42}})"),
            "data.user_id: expected a string, got a number");
  EXPECT_EQ(parse_error(R"({"path": "/a", "data": ["user_id"]})"),
            "data: expected an object of strings, got an array");
  EXPECT_EQ(
      parse_error(R"({"path": "/a", "domain": "d"})"),
      "request: give either \"domain\" and \"descriptors\" or \"path\" and \"data\", not both");
  EXPECT_EQ(parse_error(R"({})"),
            "request: expected \"domain\" and \"descriptors\", or \"path\" and \"data\"");
  EXPECT_EQ(parse_error(R"([1, 2])"), "request: expected a JSON object, got an array");
  EXPECT_EQ(parse_error(R"(null)"), "request: expected a JSON object, got null");
}

TEST(ParseRequest, BadCosts) {
  const std::string envoy = R"({"domain": "d", "descriptors": [{"entries": [{"key": "k"}]}], )";
  EXPECT_EQ(parse_error(envoy + R"("cost": -1})"), "cost: must not be negative");
  EXPECT_EQ(parse_error(envoy + R"("hits_addend": 1.5})"),
            "hits_addend: expected a whole number, got 1.5");
  EXPECT_EQ(parse_error(envoy + R"("cost": "2"})"),
            "cost: expected a non-negative integer, got a string");
  EXPECT_EQ(parse_error(envoy + R"("cost": 4294967296})"), "cost: must be at most 4294967295");
  EXPECT_EQ(parse_error(envoy + R"("cost": 1, "hits_addend": 1})"),
            "hits_addend: give only one of \"cost\" and \"hits_addend\"");
  EXPECT_EQ(
      parse_error(
          R"({"domain": "d", "descriptors": [{"entries": [{"key": "k"}], "hits_addend": -3}]})"),
      "descriptors[0].hits_addend: must not be negative");
  EXPECT_EQ(parse_error(R"({"path": "/a", "cost": true})"),
            "cost: expected a non-negative integer, got a boolean");
  EXPECT_EQ(parse_error(R"({"path": "/a", "cost": 18446744073709551615})"),
            "cost: must be at most 4294967295");
}

TEST(ParseRequest, NulBytesAndUnicodeSurvive) {
  std::string error;
  auto r = parse_request_json(json::parse(R"({"domain": "d\u00e9", "descriptors": [{"entries": [
      {"key": "k\u0000x", "value": "a\u0000b \u00fc\u4e2d \ud83d\ude00"}]}]})"),
                              error);
  ASSERT_TRUE(r) << error;
  const Request& req = std::get<Request>(*r);
  EXPECT_EQ(req.domain, "d\xC3\xA9");
  EXPECT_EQ(req.descriptors[0].entries[0].key, std::string("k\0x", 3));
  EXPECT_EQ(req.descriptors[0].entries[0].value,
            std::string("a\0b \xC3\xBC\xE4\xB8\xAD \xF0\x9F\x98\x80", 14));
  // And they render back unchanged.
  Decision d;
  d.statuses.emplace_back();
  const std::string out = dump_json(decision_to_json(d, req));
  EXPECT_NE(out.find(R"("value":"a\u0000b )"), std::string::npos) << out;
  EXPECT_EQ(json::parse(out)["statuses"][0]["descriptor"][0]["value"],
            req.descriptors[0].entries[0].value);
}

TEST(ParseRequest, NeverThrowsOnOddValues) {
  std::string error;
  for (const json& body :
       {json(), json(1), json("s"), json::array(), json::object(),
        json::parse(R"({"domain": null})"),
        json::parse(R"({"domain": "d", "descriptors": [null, 1]})"),
        json::parse(R"({"domain": "d", "descriptors": [{"entries": [[]]}]})"),
        json::parse(R"({"domain": "d", "descriptors": [{"entries": [{"key": {}}]}]})"),
        json::parse(R"({"domain": "d", "descriptors": [{"entries": [{"key": "k"}], "limit": 5}]})"),
        json::parse(R"({"path": "/", "data": {"a": null}})"), json::binary({1, 2, 3})}) {
    error.clear();
    EXPECT_FALSE(parse_request_json(body, error)) << body.type_name();
    EXPECT_FALSE(error.empty());
  }
}

// --- parse_request_json_direct: the DOM path's result, or nullopt ------------------------------

// same_request() checks the fast path against json::parse + parse_request_json: when it reads a
// body, the DOM path must read the same request. Counts what each path read.
::testing::AssertionResult same_request(const std::string& text, int& direct, int& accepted) {
  const json dom = json::parse(text, nullptr, false);
  std::optional<AnyRequest> expected;
  std::string error;
  if (!dom.is_discarded()) expected = parse_request_json(dom, error);
  accepted += expected.has_value();
  const std::optional<AnyRequest> got = parse_request_json_direct(text);
  if (!got) return ::testing::AssertionSuccess();
  ++direct;
  if (!expected) {
    return ::testing::AssertionFailure()
           << "the fast path read " << ::testing::PrintToString(text) << " as "
           << describe_request(*got)
           << "; the DOM path: " << (dom.is_discarded() ? "malformed JSON" : error);
  }
  if (describe_request(*got) != describe_request(*expected)) {
    return ::testing::AssertionFailure()
           << ::testing::PrintToString(text) << "\ngot      " << describe_request(*got)
           << "\nexpected " << describe_request(*expected);
  }
  return ::testing::AssertionSuccess();
}

const char* const kRequestBodies[] = {
    R"({"domain": "edge_proxy", "descriptors": [{"entries": [{"key": "remote_address", "value": "203.0.113.9"}]}]})",
    R"({"path": "/login", "data": {"user_id": "42"}})",
    R"({"path": "/login"})",
    R"({"path": "/login", "data": {}, "cost": 0})",
    R"({"path": "/a", "data": {"z": "1", "a": "2", "m": "3"}})",
    R"({"path": "/a", "data": {"b": "1", "a\/": "2", "é": "3", "A": "4", "": "5"}})",
    R"({"domain": "api", "descriptors": [{"entries": [{"key": "k", "value": "v"}, {"key": "path"}],
        "hits_addend": 0, "limit": {"requests_per_unit": 7, "unit": "MINUTE"}},
        {"entries": [{"key": "u"}], "hitsAddend": 4294967295, "limit": {"requestsPerUnit": 0,
        "unit": "wEeK"}}], "hits_addend": 3})",
    R"({"domain": "d", "descriptors": [{"entries": [{"key": "k"}]}], "cost": 0})",
    R"({"domain": "d", "descriptors": [{"entries": [{"key": "k"}]}], "hitsAddend": 2})",
    R"({"domain": "a\"b\\c\/d\b\f\n\r\t", "descriptors": [{"entries": [{"key": "k"}]}]})",
    // The DOM path's (errors, and forms the fast path leaves to it).
    R"({"domain": "d", "descriptors": [{"entries": [{"key": "k"}]}], "cost": 1, "hits_addend": 1})",
    R"({"domain": "d", "domain": "e", "descriptors": [{"entries": [{"key": "k"}]}]})",
    R"({"path": "/a", "data": {"a": "1", "a": "2"}})",
    R"({"path": "/a", "hits_addend": 1})",
    R"({"path": "/a", "domain": "d"})",
    R"({"path": ""})",
    R"({"domain": "", "descriptors": [{"entries": [{"key": "k"}]}]})",
    R"({"domain": "d", "descriptors": []})",
    R"({"domain": "d", "descriptors": [{"entries": []}]})",
    R"({"domain": "d", "descriptors": [{"entries": [{"key": ""}]}]})",
    R"({"domain": "d", "descriptors": [{"entries": [{"value": "v"}]}]})",
    R"({"domain": "d", "descriptors": [{"entries": [{"key": "k"}], "limit": {"unit": "second"}}]})",
    R"({"domain": "d", "descriptors": [{"entries": [{"key": "k"}], "limit": {"requests_per_unit": 1}}]})",
    R"({"domain": "d", "descriptors": [{"entries": [{"key": "k"}], "limit": {"requests_per_unit": 1, "unit": "fortnight"}}]})",
    R"({"domain": "d", "descriptors": [{"entries": [{"key": "k"}]}], "cost": 4294967296})",
    R"({"domain": "d", "descriptors": [{"entries": [{"key": "k"}]}], "cost": 1.0})",
    R"({"domain": "d", "descriptors": [{"entries": [{"key": "k"}]}], "cost": -0})",
    R"({"domain": "d", "descriptors": [{"entries": [{"key": "k"}]}], "cost": 01})",
    R"({"domain": "d\u00e9", "descriptors": [{"entries": [{"key": "k"}]}]})",
    R"({"cost": 1})",
    R"({})",
    R"([])",
    "",
    R"({"path": "/a"} x)",
    R"({"path": "/a",})",
    "{\"path\": \"/a\xFF\"}",
    "{\"path\": \"/a\xC0\x80\"}",
    "{\"path\": \"/a\tb\"}",
    "\v{\"path\": \"/a\"}",
};

TEST(ParseRequestDirect, SameAsTheDomPathForHandWrittenBodies) {
  int direct = 0;
  int accepted = 0;
  for (const char* text : kRequestBodies)
    EXPECT_TRUE(same_request(text, direct, accepted));
  EXPECT_EQ(direct, 10) << "the first ten bodies take the fast path";
}

TEST(ParseRequestDirect, ReadsTheCommonShapes) {
  const auto envoy = parse_request_json_direct(kRequestBodies[0]);
  ASSERT_TRUE(envoy);
  EXPECT_EQ(std::get<Request>(*envoy).descriptors.at(0).entries.at(0).value, "203.0.113.9");
  const auto path = parse_request_json_direct(R"({"path": "/a", "data": {"z": "1", "a": "2"}})");
  ASSERT_TRUE(path);
  const auto& data = std::get<PathRequest>(*path).data;
  ASSERT_EQ(data.size(), 2u);
  EXPECT_EQ(data[0].first, "a") << "in the DOM's (sorted) order";
  EXPECT_FALSE(parse_request_json_direct(R"({"path": "/a", "cost": "1"})"));
}

// RequestBuilder writes random request bodies of both shapes: fields in any order and spelling,
// random whitespace, strings with escapes and code points of every length, numbers around the
// limit, units in any case; now and then something the DOM path refuses or the fast path leaves
// to it.
class RequestBuilder {
 public:
  explicit RequestBuilder(Rng& rng) : rng_(rng) {}

  std::string body() {
    std::vector<std::string> members;
    const bool envoy = rng_.coin();
    if (envoy || rng_.below(30) == 0) {
      if (rng_.below(30) != 0) members.push_back(member("domain", text()));
      if (rng_.below(30) != 0) {
        std::vector<std::string> ds;
        const std::uint64_t n = rng_.below(30) == 0 ? 0 : 1 + rng_.below(3);
        for (std::uint64_t i = 0; i < n; ++i)
          ds.push_back(descriptor());
        members.push_back(member("descriptors", array(ds)));
      }
    }
    if (!envoy || rng_.below(30) == 0) {
      if (rng_.below(30) != 0) members.push_back(member("path", text()));
      if (rng_.coin()) {
        std::vector<std::string> data;
        const std::uint64_t n = rng_.below(5);
        for (std::uint64_t i = 0; i < n; ++i)
          data.push_back(member_text(text(), rng_.below(30) == 0 ? "1" : text()));
        members.push_back(member("data", object(data)));
      }
    }
    if (rng_.below(3) == 0) members.push_back(member(cost_name(envoy), number()));
    if (rng_.below(40) == 0) members.push_back(member("extra", "1"));
    return object(members);
  }

 private:
  std::string cost_name(bool envoy) {
    static const char* const kNames[] = {"cost", "hits_addend", "hitsAddend"};
    return envoy || rng_.below(20) == 0 ? kNames[rng_.below(3)] : "cost";
  }

  std::string descriptor() {
    std::vector<std::string> members;
    if (rng_.below(40) != 0) {
      std::vector<std::string> es;
      const std::uint64_t n = rng_.below(30) == 0 ? 0 : 1 + rng_.below(3);
      for (std::uint64_t i = 0; i < n; ++i) {
        std::vector<std::string> e;
        if (rng_.below(40) != 0) e.push_back(member("key", text()));
        if (rng_.below(3) != 0) e.push_back(member("value", text()));
        es.push_back(object(e));
      }
      members.push_back(member("entries", array(es)));
    }
    if (rng_.below(4) == 0) {
      std::vector<std::string> l;
      if (rng_.below(10) != 0)
        l.push_back(member(rng_.coin() ? "requests_per_unit" : "requestsPerUnit", number()));
      if (rng_.below(10) != 0) l.push_back(member("unit", unit()));
      members.push_back(member("limit", object(l)));
    }
    if (rng_.below(4) == 0)
      members.push_back(member(rng_.coin() ? "hits_addend" : "hitsAddend", number()));
    return object(members);
  }

  std::string space() {
    static const char* const kSpace[] = {"", "", "", " ", "  ", "\n", "\t", "\r\n "};
    return rng_.below(300) == 0 ? "\v" : kSpace[rng_.below(std::size(kSpace))];
  }

  std::string member(const std::string& name, const std::string& value) {
    return member_text("\"" + name + "\"", value);
  }
  std::string member_text(const std::string& quoted_name, const std::string& value) {
    return space() + quoted_name + space() + ":" + space() + value + space();
  }

  std::string object(std::vector<std::string> members) {
    for (std::size_t i = members.size(); i > 1; --i)
      std::swap(members[i - 1], members[rng_.below(i)]);
    if (rng_.below(40) == 0 && !members.empty()) members.push_back(members[0]);  // a repeat
    std::string s = "{";
    for (std::size_t i = 0; i < members.size(); ++i)
      s += (i == 0 ? "" : ",") + members[i];
    return s + space() + "}";
  }

  std::string array(const std::vector<std::string>& items) {
    std::string s = "[" + space();
    for (std::size_t i = 0; i < items.size(); ++i)
      s += (i == 0 ? "" : ",") + space() + items[i];
    return s + space() + "]";
  }

  std::string number() {
    std::uint64_t v = 0;
    switch (rng_.below(5)) {
      case 0:
        v = 0;
        break;
      case 1:
        v = rng_.below(100);
        break;
      case 2:
        v = kMaxLimit - rng_.below(2);
        break;
      default:
        v = rng_.below(kMaxLimit + 1);
    }
    const std::string s = std::to_string(v);
    switch (rng_.below(40)) {
      case 0:
        return "\"" + s + "\"";
      case 1:
        return s + ".0";
      case 2:
        return "-" + s;
      case 3:
        return std::to_string(kMaxLimit + 1 + rng_.below(10));
      case 4:
        return "1e2";
      case 5:
        return "null";
      default:
        return s;
    }
  }

  std::string unit() {
    static const char* const kUnits[] = {"second", "SECOND", "Minute",  "hour",      "DAY", "month",
                                         "yEaR",   "week",   "unknown", "fortnight", ""};
    return rng_.below(30) == 0 ? "1"
                               : "\"" + std::string(kUnits[rng_.below(std::size(kUnits))]) + "\"";
  }

  // text() writes a JSON string with escapes and code points of every length; now and then
  // invalid UTF-8, a raw control character or an invalid escape.
  std::string text() {
    static const char* const kEscapes[] = {"\\\"", "\\\\", "\\/", "\\b",     "\\f",
                                           "\\n",  "\\r",  "\\t", "\\u00e9", "\\ud83d\\ude00"};
    static const char* const kWords[] = {"remote_address",
                                         "203.0.113.9",
                                         "/login",
                                         "user_id",
                                         "42",
                                         "a b",
                                         "{}",
                                         "[]",
                                         ",",
                                         ":",
                                         "'"};
    std::string s = "\"";
    const std::uint64_t pieces = rng_.below(30) == 0 ? 0 : 1 + rng_.below(4);
    for (std::uint64_t i = 0; i < pieces; ++i) {
      const std::uint64_t r = rng_.below(400);
      if (r < 40) {
        s += kEscapes[rng_.below(std::size(kEscapes))];
      } else if (r < 80) {
        std::uint32_t cp = static_cast<std::uint32_t>(0x80 + rng_.below(0x110000 - 0x80));
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
        s += utf8(cp);
      } else if (r == 80) {
        s += static_cast<char>(0x80 + rng_.below(0x80));  // not UTF-8
      } else if (r == 81) {
        s += static_cast<char>(rng_.below(0x20));  // a raw control character
      } else if (r == 82) {
        s += "\\x";
      } else {
        s += kWords[rng_.below(std::size(kWords))];
      }
    }
    return s + "\"";
  }

  static std::string utf8(std::uint32_t cp) {
    std::string s;
    if (cp < 0x800) {
      s += static_cast<char>(0xC0 | (cp >> 6));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xE0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    } else {
      s += static_cast<char>(0xF0 | (cp >> 18));
      s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    }
    s += static_cast<char>(0x80 | (cp & 0x3F));
    return s;
  }

  Rng& rng_;
};

TEST(ParseRequestDirect, SameAsTheDomPathForRandomBodies) {
  Rng rng(17);
  RequestBuilder builder(rng);
  constexpr int kCases = 20'000;
  int direct = 0;
  int accepted = 0;
  for (int i = 0; i < kCases; ++i)
    ASSERT_TRUE(same_request(builder.body(), direct, accepted)) << "case " << i;
  std::printf(
      "[ stats    ] %d random bodies: %d accepted by the DOM path, %d of them read by the "
      "fast path\n",
      kCases, accepted, direct);
  EXPECT_GT(direct, kCases / 4);
}

TEST(ParseRequestDirect, SameAsTheDomPathForMutatedBodies) {
  Rng rng(19);
  RequestBuilder builder(rng);
  static const char* const kTokens[] = {"null",
                                        "\"5\"",
                                        "5.0",
                                        "-1",
                                        "1e2",
                                        "4294967296",
                                        "\"x\":1,",
                                        ",",
                                        "{}",
                                        "[]",
                                        "\xFF",
                                        "\"domain\":\"d\",",
                                        "\"path\":\"/p\",",
                                        "true",
                                        "}",
                                        "]",
                                        "\"cost\":1,",
                                        "\"hitsAddend\":1,",
                                        "\"unit\":\"hour\",",
                                        "{\"key\":\"k\"}",
                                        "0",
                                        "00",
                                        "\"",
                                        "\\",
                                        " ",
                                        "\xC3",
                                        "\"data\":{},"};
  constexpr int kCases = 30'000;
  int direct = 0;
  int accepted = 0;
  for (int i = 0; i < kCases; ++i) {
    std::string body = builder.body();
    mutate_json(body, rng, kTokens);
    ASSERT_TRUE(same_request(body, direct, accepted)) << "case " << i;
  }
  std::printf(
      "[ stats    ] %d mutated bodies: %d accepted by the DOM path, %d of them read by the "
      "fast path\n",
      kCases, accepted, direct);
  EXPECT_GT(direct, 0);
}

// --- parse_trace_line -------------------------------------------------------------------------

Micros trace_t(const std::string& t) {
  std::string error;
  auto line = parse_trace_line(R"({"t": )" + t + R"(, "path": "/"})", error);
  EXPECT_TRUE(line) << t << ": " << error;
  return line ? line->t : -1;
}

TEST(TraceLine, TimeKeepsMicrosecondPrecision) {
  EXPECT_EQ(trace_t("1700000000.000001"), 1'700'000'000'000'001);
  EXPECT_EQ(trace_t("1700000000.999999"), 1'700'000'000'999'999);
  EXPECT_EQ(trace_t("1700000000.1"), 1'700'000'000'100'000);
  EXPECT_EQ(trace_t("1700000000"), 1'700'000'000'000'000);
  EXPECT_EQ(trace_t("1700000000.0000005"), 1'700'000'000'000'001);  // to nearest, halves up
  EXPECT_EQ(trace_t("1700000000.0000004999"), 1'700'000'000'000'000);
  EXPECT_EQ(trace_t("1700000000.9999996"), 1'700'000'001'000'000);
  EXPECT_EQ(trace_t("1.7000000000000011e9"), 1'700'000'000'000'001);
  EXPECT_EQ(trace_t("17000000000000010E-7"), 1'700'000'000'000'001);
  EXPECT_EQ(trace_t("0"), 0);
  EXPECT_EQ(trace_t("0.5"), 500'000);
  EXPECT_EQ(trace_t("0e5"), 0);
  EXPECT_EQ(trace_t("1e-300"), 0);
  EXPECT_EQ(trace_t("9223372036854.775807"), std::numeric_limits<Micros>::max());
  // Every microsecond of a realistic second round-trips.
  for (int us = 0; us < 1'000'000; us += 7919) {
    char text[32];
    std::snprintf(text, sizeof text, "1712345678.%06d", us);
    EXPECT_EQ(trace_t(text), 1'712'345'678'000'000 + us) << text;
  }
}

TEST(TraceLine, BadTimes) {
  std::string error;
  EXPECT_FALSE(parse_trace_line(R"({"path": "/"})", error));
  EXPECT_EQ(error, "t: missing (seconds since the epoch)");
  EXPECT_FALSE(parse_trace_line(R"({"t": "1700000000", "path": "/"})", error));
  EXPECT_EQ(error, "t: expected a number (seconds since the epoch), got a string");
  for (const char* t : {"-1", "-0.5", "9223372036854.775808", "1e300", "1.5e13"}) {
    EXPECT_FALSE(parse_trace_line(std::string(R"({"path": "/", "t": )") + t + "}", error)) << t;
    EXPECT_TRUE(error.starts_with("t: must be a non-negative number")) << error;
  }
  // Beyond a double: nlohmann's parser refuses the number itself.
  EXPECT_FALSE(parse_trace_line(R"({"path": "/", "t": 1e400})", error));
  EXPECT_TRUE(error.starts_with("number overflow")) << error;
}

TEST(TraceLine, RequestFieldsAndErrors) {
  std::string error;
  auto line = parse_trace_line(
      R"({"t": 1700000000.5, "domain": "api", "descriptors": [{"entries": [{"key": "k", "value": "v"}]}], "cost": 2})",
      error);
  ASSERT_TRUE(line) << error;
  EXPECT_EQ(line->t, 1'700'000'000'500'000);
  const Request& r = std::get<Request>(line->request);
  EXPECT_EQ(r.cost, 2u);
  EXPECT_EQ(r.descriptors[0].entries[0].value, "v");

  // A nested "t" is not the time.
  EXPECT_FALSE(parse_trace_line(R"({"path": "/", "data": {"t": "1"}})", error));
  EXPECT_EQ(error, "t: missing (seconds since the epoch)");
  // Nested numbers do not disturb the top-level "t".
  line = parse_trace_line(
      R"({"t": 2.000001, "domain": "d", "descriptors": [{"entries": [{"key": "t"}], "hits_addend": 5}]})",
      error);
  ASSERT_TRUE(line) << error;
  EXPECT_EQ(line->t, 2'000'001);

  EXPECT_FALSE(parse_trace_line(R"({"t": 1, "path": "/", "data": {"a": 1}})", error));
  EXPECT_EQ(error, "data.a: expected a string, got a number");
  EXPECT_FALSE(parse_trace_line(R"({"t": 1, "path": "/", "cost": -2})", error));
  EXPECT_EQ(error, "cost: must not be negative");
  EXPECT_FALSE(parse_trace_line(R"({"t": 1, "path": "/"} trailing)", error));
  EXPECT_TRUE(error.starts_with("parse error at line 1, column")) << error;
  EXPECT_FALSE(parse_trace_line("[1]", error));
  EXPECT_EQ(error, "trace line: expected a JSON object, got an array");
}

TEST(TraceLine, NeverCrashesOnGarbage) {
  std::string error;
  const std::string inputs[] = {"",
                                " ",
                                "{",
                                "}",
                                "{\"t\":",
                                "{\"t\": 1, \"path\": \"/\"",
                                std::string("{\"t\": 1, \"path\": \"/\0\"}", 22),
                                std::string("\0", 1),
                                "\xff\xfe",
                                "{\"t\": 1, \"path\": \"\xff\"}",
                                "{\"t\": 1e, \"path\": \"/\"}",
                                "{\"t\": NaN, \"path\": \"/\"}",
                                "{\"t\": 1, \"path\": \"/\", \"path\": 2}",
                                std::string(100'000, '['),
                                std::string(100'000, '{'),
                                "{\"t\": 01, \"path\": \"/\"}"};
  for (const std::string& in : inputs) {
    error.clear();
    EXPECT_FALSE(parse_trace_line(in, error)) << in.substr(0, 40);
    EXPECT_FALSE(error.empty()) << in.substr(0, 40);
  }
  // A NUL escaped inside a string is data, not an error.
  auto ok = parse_trace_line(R"({"t": 1, "path": "/a\u0000b"})", error);
  ASSERT_TRUE(ok) << error;
  EXPECT_EQ(std::get<PathRequest>(ok->request).path, std::string("/a\0b", 4));
}

TEST(TraceLine, MutatedLinesNeverCrash) {
  const std::string valid =
      R"({"t": 1700000000.123456, "domain": "api", "descriptors": [{"entries": [{"key": "k", )"
      R"("value": "v\u00e9"}], "hits_addend": 2}], "cost": 1})";
  std::uint64_t seed = 42;
  const auto next = [&seed] {  // splitmix64: deterministic
    seed += 0x9E3779B97F4A7C15u;
    std::uint64_t z = seed;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
  };
  const char alphabet[] = "{}[]\",:0123456789.eE-+tnu\\ \0\xff";
  int parsed = 0;
  for (int i = 0; i < 20'000; ++i) {
    std::string line = valid;
    const int edits = 1 + static_cast<int>(next() % 4);
    for (int e = 0; e < edits && !line.empty(); ++e) {
      const std::size_t at = next() % line.size();
      switch (next() % 3) {
        case 0:
          line[at] = alphabet[next() % (sizeof alphabet - 1)];
          break;
        case 1:
          line.erase(at, 1 + next() % 8);
          break;
        default:
          line.insert(at, 1, alphabet[next() % (sizeof alphabet - 1)]);
      }
    }
    std::string error;
    if (parse_trace_line(line, error)) {
      ++parsed;
    } else {
      EXPECT_FALSE(error.empty()) << line;
    }
  }
  EXPECT_GT(parsed, 0);
}

}  // namespace
}  // namespace sluice
