#include "sluice/json.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "sluice/limiter.h"
#include "sluice/rules.h"
#include "sluice/store.h"

namespace sluice {
namespace {

using nlohmann::json;

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
