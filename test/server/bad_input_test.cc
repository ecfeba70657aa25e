// Bad input at every entry point of a real server (in process, on free loopback ports): each
// class of malformed or hostile input is answered with a clear error (a status and a message
// naming the problem), changes no state (the counters a following valid request sees, the rules,
// the rule files), and leaves the server answering. docs/reliability.md tabulates what is
// tried here and what sluice answers.
#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "server/fixture_rules.h"
#include "server/raw_client.h"
#include "server/server_fixture.h"

namespace sluice::testing {
namespace {

namespace rls = envoy::service::ratelimit::v3;
using nlohmann::json;

constexpr std::size_t kMaxBody = 64 << 10;  // --max-body-bytes of the server under test
constexpr std::chrono::milliseconds kIdleTimeout{1000};

// State is what a valid request sees: the remaining counts of two counters (checked at cost 0,
// which consumes nothing), the rules served and the rule file on disk, and the store's size.
struct State {
  std::int64_t envoy_remaining = -1;
  std::int64_t path_remaining = -1;
  std::string rules;
  std::string file;
  std::size_t keys = 0;
  friend bool operator==(const State&, const State&) = default;
};

std::ostream& operator<<(std::ostream& os, const State& s) {
  return os << "{envoy " << s.envoy_remaining << ", path " << s.path_remaining << ", " << s.keys
            << " keys, rules " << s.rules.size() << " B}";
}

class BadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_.write("test.yaml", kEnvoyRules);
    dir_.write("paths.yaml", kPathRules);
    ServerOptions o;
    o.max_body_bytes = kMaxBody;
    o.http_idle_timeout = kIdleTimeout;
    h_ = std::make_unique<ServerHarness>(dir_.path(), o);
    // Some consumption to see kept: key2=value2 (30/min) at 28, /login user 42 (3/min) at 2.
    for (int i = 0; i < 2; ++i)
      ASSERT_EQ(h_->post("/json", envoy_json("test", {{"key2", "value2"}})).status, 200);
    ASSERT_EQ(h_->post("/v1/check", R"({"path": "/login", "data": {"user_id": "42"}})").status,
              200);
    before_ = state();
    ASSERT_EQ(before_.envoy_remaining, 28);
    ASSERT_EQ(before_.path_remaining, 2);
  }

  State state() {
    State s;
    json e = json::parse(
        h_->post(
              "/v1/check",
              R"({"domain": "test", "cost": 0, "descriptors": [{"entries": [{"key": "key2", "value": "value2"}]}]})")
            .body,
        nullptr, false);
    if (!e.is_discarded()) s.envoy_remaining = e.value("remaining", -1);
    json p = json::parse(
        h_->post("/v1/check", R"({"path": "/login", "data": {"user_id": "42"}, "cost": 0})").body,
        nullptr, false);
    if (!p.is_discarded()) s.path_remaining = p.value("remaining", -1);
    s.rules = h_->admin("GET", "/v1/rules/test").body;
    s.file = dir_.read("test.yaml");
    s.keys = h_->store.size();
    return s;
  }

  // expect_unchanged() checks that the server still answers and that nothing changed since
  // SetUp() (or since the last accept_state()).
  void expect_unchanged(const std::string& what) {
    EXPECT_EQ(http_request(h_->http_port(), "GET", "/healthcheck").status, 200) << what;
    EXPECT_EQ(state(), before_) << what;
  }
  // accept_state() takes the present state as the one to keep (after a valid request).
  void accept_state() { before_ = state(); }

  std::string error_of(const HttpReply& r) {
    json j = json::parse(r.body, nullptr, false);
    return j.is_discarded() ? "(not JSON: " + r.body + ")" : j.value("error", "(no error)");
  }

  TempDir dir_;
  std::unique_ptr<ServerHarness> h_;
  State before_;
};

// ---- malformed HTTP -----------------------------------------------------------------------------

struct RawCase {
  const char* name;
  std::string bytes;
  int status;
  const char* message;  // a substring of the {"error"} body
  bool finish = false;  // send FIN after the bytes
};

TEST_F(BadInputTest, MalformedHttpIsRefusedWithAReason) {
  const std::string big_header(20 << 10, 'a');
  const std::vector<RawCase> cases = {
      {"bad request line", "GARBAGE\r\n\r\n", 400, "bad request: bad method"},
      {"bad method token", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad request: bad method"},
      {"bad HTTP version", "GET /healthcheck HTTP/9.9\r\nHost: x\r\n\r\n", 400,
       "bad request: bad version"},
      {"bad target", "GET \x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad request: bad target"},
      {"header without colon", "POST /json HTTP/1.1\r\nHost x\r\n\r\n", 400,
       "bad request: bad field"},
      {"NUL in a header value", std::string("POST /json HTTP/1.1\r\nHost: a\0b\r\n\r\n", 34), 400,
       "bad request: bad value"},
      {"bad chunk size",
       "POST /json HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n", 400,
       "bad request: bad chunk"},
      {"chunk larger than the body limit",
       "POST /json HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\nabc", 413,
       "request body too large: the limit is 65536 bytes"},
      {"Content-Length and chunked",
       "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
       400, "bad request: bad Transfer-Encoding"},
      {"Content-Length not a number",
       "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400,
       "bad request: bad Content-Length"},
      {"Content-Length negative", "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
       400, "bad request: bad Content-Length"},
      {"Content-Length beyond 64 bits",
       "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400,
       "bad request: bad Content-Length"},
      {"two Content-Lengths",
       "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400,
       "bad request: multiple Content-Length"},
      {"headers over 16 KiB",
       "GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-Big: " + big_header + "\r\n\r\n", 431,
       "request headers too large"},
      {"Content-Length over --max-body-bytes",
       "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n", 413,
       "request body too large: the limit is 65536 bytes"},
      {"body cut short, then FIN",
       "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"domain\"", 400,
       "bad request: partial message", /*finish=*/true},
      {"body cut short, connection left open",
       "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"domain\"", 408,
       "request timeout: the request did not arrive complete within 1000 ms"},
      {"headers cut short, connection left open", "POST /json HTTP/1.1\r\nHost: x\r\nContent-Le",
       408, "request timeout"},
  };
  for (const RawCase& c : cases) {
    const auto start = std::chrono::steady_clock::now();
    RawReply r = raw_exchange(h_->http_port(), c.bytes, c.finish);
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(r.status, c.status) << c.name << ": " << r.text;
    EXPECT_NE(r.text.find(c.message), std::string::npos) << c.name << ": " << r.text;
    EXPECT_TRUE(r.closed) << c.name << ": the connection closes after a refusal";
    EXPECT_LT(took, kIdleTimeout + std::chrono::seconds(3)) << c.name;
    expect_unchanged(c.name);
  }
}

TEST_F(BadInputTest, OversizedBodiesAreRefusedAtEveryEndpoint) {
  const std::string huge(kMaxBody + 1, 'x');
  for (const char* target : {"/json", "/v1/check"}) {
    HttpReply r = h_->post(target, huge);
    EXPECT_EQ(r.status, 413) << target;
    EXPECT_EQ(error_of(r), "request body too large: the limit is 65536 bytes") << target;
  }
  HttpReply put = h_->admin("PUT", "/v1/rules/test", huge);
  EXPECT_EQ(put.status, 413);
  expect_unchanged("oversized bodies");
}

// ---- malformed JSON, numbers out of range, unknown fields: /json ------------------------------

struct BodyCase {
  std::string body;
  int status;
  const char* message;
};

TEST_F(BadInputTest, JsonEndpointRefusesWithProtobufsReason) {
  const std::string d = R"("descriptors": [{"entries": [{"key": "key2", "value": "value2"}]}])";
  const std::vector<BodyCase> cases = {
      {"{", 400, "invalid RateLimitRequest JSON: Unexpected end of string"},
      {"", 400, "invalid RateLimitRequest JSON"},
      {"[]", 400, "invalid RateLimitRequest JSON"},
      {std::string(30000, '['), 400, "invalid RateLimitRequest JSON"},
      {"\xff\xfe garbage", 400, "invalid RateLimitRequest JSON"},
      {R"({"domain": "test", )" + d + R"(, "bogus": 1})", 400,
       "invalid RateLimitRequest JSON: bogus: Cannot find field."},
      {R"({"domain": "test", )" + d + R"(, "hitsAddend": -1})", 400, "invalid value -1"},
      {R"({"domain": "test", )" + d + R"(, "hitsAddend": 4294967296})", 400,
       "invalid value 4294967296 for type TYPE_UINT32"},
      {R"({"domain": "test", )" + d + R"(, "hitsAddend": 1e999})", 400,
       "invalid RateLimitRequest JSON"},
      {R"({"domain": "test", "descriptors": [{"entries": [{"key": "key2", "value": "value2"}], "limit": {"requestsPerUnit": 4294967296, "unit": "SECOND"}}]})",
       400, "requests_per_unit): invalid value 4294967296"},
      {R"({"domain": "test", "descriptors": [{"entries": [{"key": "key2", "value": "value2"}], "limit": {"requestsPerUnit": -1, "unit": "SECOND"}}]})",
       400, "invalid value -1"},
      {R"({"domain": "test", "descriptors": [{"entries": [{"key": "key2", "value": "value2"}], "hitsAddend": 18446744073709551616}]})",
       400, "TYPE_UINT64"},
      {"{\"domain\": \"test\", \"descriptors\": [{\"entries\": [{\"key\": \"key2\", \"value\": "
       "\"\xff\"}]}]}",
       400, "invalid RateLimitRequest JSON: Encountered non UTF-8 code points."},
      {R"({"domain": "", )" + d + "}", 400, "rate limit domain must not be empty"},
      {R"({"domain": "test", "descriptors": []})", 400,
       "rate limit descriptor list must not be empty"},
  };
  for (const BodyCase& c : cases) {
    HttpReply r = h_->post("/json", c.body);
    const std::string shown = c.body.substr(0, 80);
    EXPECT_EQ(r.status, c.status) << shown << " -> " << r.body;
    EXPECT_NE(error_of(r).find(c.message), std::string::npos) << shown << " -> " << r.body;
    expect_unchanged(shown);
  }
}

// Out-of-range costs and limits that are valid protobuf decide as Envoy's would, and consume
// nothing when they deny.
TEST_F(BadInputTest, JsonEndpointExtremeNumbersDenyWithoutConsuming) {
  for (
      const std::string& body : {
          std::string(
              R"({"domain": "test", "hitsAddend": 4294967295, "descriptors": [{"entries": [{"key": "key2", "value": "value2"}]}]})"),
          std::string(
              R"({"domain": "test", "descriptors": [{"entries": [{"key": "key2", "value": "value2"}], "hitsAddend": 18446744073709551615}]})"),
      }) {
    HttpReply r = h_->post("/json", body);
    EXPECT_EQ(r.status, 429) << body << " -> " << r.body;
    expect_unchanged(body);
  }
  // requests_per_unit 0 denies every hit (Envoy's meaning); the override's counter is new.
  HttpReply zero = h_->post(
      "/json",
      R"({"domain": "test", "descriptors": [{"entries": [{"key": "key2", "value": "value2"}], "limit": {"requestsPerUnit": 0, "unit": "SECOND"}}]})");
  EXPECT_EQ(zero.status, 429) << zero.body;
  // A huge override admits, on a counter of its own (the configured one is untouched).
  HttpReply big = h_->post(
      "/json",
      R"({"domain": "test", "descriptors": [{"entries": [{"key": "key2", "value": "value2"}], "limit": {"requestsPerUnit": 4294967295, "unit": "YEAR"}}]})");
  EXPECT_EQ(big.status, 200) << big.body;
  EXPECT_NE(big.body.find("\"limitRemaining\":4294967294"), std::string::npos) << big.body;
  State now = state();
  EXPECT_EQ(now.envoy_remaining, before_.envoy_remaining);
  EXPECT_EQ(now.path_remaining, before_.path_remaining);
}

// ---- malformed JSON, numbers out of range, unknown fields: /v1/check ---------------------------

TEST_F(BadInputTest, CheckEndpointRefusesNamingTheProblem) {
  const std::vector<BodyCase> cases = {
      {"{", 400,
       "malformed JSON: parse error at line 1, column 2: syntax error while parsing object key"},
      {"", 400, "malformed JSON: parse error at line 1, column 1"},
      {"not json", 400, "malformed JSON: parse error at line 1, column 2"},
      {std::string(30000, '['), 400, "malformed JSON: parse error"},
      {std::string(30000, '[') + std::string(30000, ']'), 400,
       "request: expected a JSON object, got an array"},
      {std::string(R"({"path": "/login", "data": {"user_id": "4)") + '\0' + "2\"}}", 400,
       "malformed JSON: parse error at line 1, column 42: syntax error while parsing value - "
       "invalid string: control character U+0000 (NUL) must be escaped to \\u0000"},
      {"{\"path\": \"/login\", \"data\": {\"user_id\": \"\xff\"}}", 400,
       "malformed JSON: parse error at line 1, column 41: syntax error while parsing value - "
       "invalid string: ill-formed UTF-8 byte"},
      {R"({"path": "/login", "data": {"user_id": "42"}, "bogus": 1})", 400, "bogus: unknown field"},
      {R"({"path": "/login", "data": {"user_id": 42}})", 400, "data.user_id: expected a string"},
      {R"({"path": "/login", "data": {"user_id": "42"}, "cost": -1})", 400,
       "cost: must not be negative"},
      {R"({"path": "/login", "data": {"user_id": "42"}, "cost": 4294967296})", 400,
       "cost: must be at most 4294967295"},
      {R"({"path": "/login", "data": {"user_id": "42"}, "cost": 1.5})", 400,
       "cost: expected a whole number, got 1.5"},
      {R"({"path": "/login", "data": {"user_id": "42"}, "cost": 1e999})", 400,
       "malformed JSON: number overflow parsing '1e999'"},
      {R"({"domain": "test", "descriptors": [{"entries": [{"key": "key2", "value": "value2"}], "limit": {"requests_per_unit": 99999999999, "unit": "second"}}]})",
       400, "descriptors[0].limit.requests_per_unit: must be at most 4294967295"},
      {R"({"domain": "test", "descriptors": [{"entries": [{"key": "key2", "value": "value2"}], "hits_addend": -5}]})",
       400, "hits_addend"},
      {R"({"domain": "test", "descriptors": [{"entries": [{"key": "", "value": "v"}]}]})", 400,
       "key"},
      {R"({"path": "", "data": {}})", 400, "path"},
      {"{}", 400, ""},
  };
  for (const BodyCase& c : cases) {
    HttpReply r = h_->post("/v1/check", c.body);
    const std::string shown = c.body.substr(0, 80);
    EXPECT_EQ(r.status, c.status) << shown << " -> " << r.body;
    const std::string error = error_of(r);
    EXPECT_NE(error.find(c.message), std::string::npos) << shown << " -> " << r.body;
    EXPECT_FALSE(error.empty() || error == "(no error)") << shown;
    expect_unchanged(shown);
  }
}

// ---- huge descriptor lists, very long keys and values, unicode, NUL -----------------------------

// Valid but extreme requests are decided (each odd key or value its own counter) and leave the
// counters of other keys alone.
TEST_F(BadInputTest, ExtremeButValidRequestsAreDecidedOnTheirOwnCounters) {
  // 1,200 descriptors that match no rule (about 56 KiB, under the body limit).
  json many{{"domain", "test"}, {"descriptors", json::array()}};
  for (int i = 0; i < 1200; ++i)
    many["descriptors"].push_back(
        {{"entries", {{{"key", "nomatch"}, {"value", std::to_string(i)}}}}});
  ASSERT_LT(many.dump().size(), kMaxBody);
  HttpReply r = h_->post("/json", many.dump());
  ASSERT_EQ(r.status, 200) << r.body.substr(0, 200);
  EXPECT_EQ(json::parse(r.body)["statuses"].size(), 1200u);
  expect_unchanged("1,200 unmatched descriptors");

  // 1,000 descriptors on one limited key: each a hit on key2=value2, all-or-nothing, so the 28
  // left deny the whole request and nothing is consumed.
  json same{{"domain", "test"}, {"descriptors", json::array()}};
  for (int i = 0; i < 1000; ++i)
    same["descriptors"].push_back({{"entries", {{{"key", "key2"}, {"value", "value2"}}}}});
  EXPECT_EQ(h_->post("/json", same.dump()).status, 429);
  expect_unchanged("1,000 descriptors on one key");

  // Long keys and values, unicode, NUL (escaped in JSON; raw, as protobuf's JSON reader takes
  // it, on /json), each its own counter: 20 per minute (key2's default), the first leaves 19.
  const std::string long_value(60'000, 'v');
  const std::vector<std::pair<std::string, std::string>> odd = {
      {"/json", envoy_json("test", {{"key2", long_value}})},
      {"/json", envoy_json("test", {{"key2", "\xc3\xa9\xf0\x9f\x98\x80 \xe2\x80\xae"}})},
      {"/json",
       R"({"domain": "test", "descriptors": [{"entries": [{"key": "key2", "value": "a\u0000b"}]}]})"},
      {"/json",
       std::string(
           R"({"domain": "test", "descriptors": [{"entries": [{"key": "key2", "value": "a)") +
           '\0' + R"(c"}]}]})"},
      {"/v1/check", R"({"path": "/login", "data": {"user_id": "a\u0000b"}})"},
      {"/v1/check", R"({"path": "/login", "data": {"user_id": "\u00e9\ud83d\ude00"}})"},
      {"/v1/check", R"({"path": "/login", "data": {"user_id": ")" + long_value + "\"}}"},
  };
  for (const auto& [target, body] : odd) {
    HttpReply first = h_->post(target, body);
    ASSERT_EQ(first.status, 200) << target << " " << body.substr(0, 80) << " -> " << first.body;
    HttpReply second = h_->post(target, body);
    if (target == "/json") {
      EXPECT_NE(second.body.find("\"limitRemaining\":18"), std::string::npos) << second.body;
    } else {
      EXPECT_NE(second.body.find("\"remaining\":1"), std::string::npos) << second.body;
    }
  }
  // A very long key matches nothing and is answered without a counter.
  HttpReply long_key = h_->post("/json", envoy_json("test", {{std::string(60'000, 'k'), "v"}}));
  EXPECT_EQ(long_key.status, 200);
  EXPECT_EQ(long_key.body, "{\"overallCode\":\"OK\",\"statuses\":[{\"code\":\"OK\"}]}\n");
  State now = state();
  EXPECT_EQ(now.envoy_remaining, before_.envoy_remaining);
  EXPECT_EQ(now.path_remaining, before_.path_remaining);
  EXPECT_EQ(now.rules, before_.rules);
}

// ---- malformed protobuf (gRPC) ------------------------------------------------------------------

class BadGrpcTest : public BadInputTest {
 protected:
  void SetUp() override {
    BadInputTest::SetUp();
    channel_ = grpc::CreateChannel(h_->grpc_address(), grpc::InsecureChannelCredentials());
  }
  // raw_call() sends `bytes` as the ShouldRateLimit request message, as they are.
  grpc::Status raw_call(const std::string& bytes, std::string* reply = nullptr) {
    return raw_grpc_call(channel_, kShouldRateLimit, bytes, reply);
  }
  static std::string request(const std::string& value, std::uint32_t hits = 0) {
    rls::RateLimitRequest req;
    req.set_domain("test");
    auto* e = req.add_descriptors()->add_entries();
    e->set_key("key2");
    e->set_value(value);
    req.set_hits_addend(hits);
    return req.SerializeAsString();
  }
  static std::int64_t remaining_of(const std::string& reply) {
    rls::RateLimitResponse resp;
    if (!resp.ParseFromString(reply) || resp.statuses_size() == 0) return -1;
    return resp.statuses(0).limit_remaining();
  }

  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(BadGrpcTest, MalformedMessagesAreInvalidArgument) {
  const std::string valid = request("value2");
  struct Case {
    const char* name;
    std::string bytes;
    grpc::StatusCode code;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"garbage", "\xff\xff\xff\xff\x0f not protobuf", grpc::StatusCode::INVALID_ARGUMENT,
       "malformed RateLimitRequest: not a valid protobuf message"},
      {"truncated message", valid.substr(0, valid.size() - 3), grpc::StatusCode::INVALID_ARGUMENT,
       "malformed RateLimitRequest: not a valid protobuf message"},
      {"length beyond the message",
       std::string("\x0a\x7f"
                   "test",
                   6),
       grpc::StatusCode::INVALID_ARGUMENT, "not a valid protobuf message"},
      {"domain not UTF-8", std::string("\x0a\x02\xff\xfe", 4), grpc::StatusCode::INVALID_ARGUMENT,
       "not a valid protobuf message"},
      // Protobuf keeps a field of the wrong wire type as an unknown field: no domain then.
      {"wrong wire type for domain", std::string("\x08\x05", 2), grpc::StatusCode::INVALID_ARGUMENT,
       "rate limit domain must not be empty"},
      {"empty message", "", grpc::StatusCode::INVALID_ARGUMENT,
       "rate limit domain must not be empty"},
      {"no descriptors", std::string("\x0a\x04test", 6), grpc::StatusCode::INVALID_ARGUMENT,
       "rate limit descriptor list must not be empty"},
      {"message over --max-body-bytes", request(std::string(kMaxBody, 'v')),
       grpc::StatusCode::RESOURCE_EXHAUSTED, "larger than max"},
  };
  for (const Case& c : cases) {
    grpc::Status s = raw_call(c.bytes);
    EXPECT_EQ(s.error_code(), c.code) << c.name << ": " << s.error_message();
    EXPECT_NE(s.error_message().find(c.message), std::string::npos)
        << c.name << ": " << s.error_message();
    expect_unchanged(c.name);
  }
  std::string reply;
  ASSERT_TRUE(raw_call(valid, &reply).ok());
  EXPECT_EQ(remaining_of(reply), 27) << "the server still decides, on the counts it had";
}

TEST_F(BadGrpcTest, ExtremeButValidMessagesAreDecided) {
  std::string reply;
  // Unknown fields (a field number RateLimitRequest lacks) are skipped, as protobuf does.
  const std::string unknown = request("value2") + std::string("\xf8\x06\x01", 3);  // field 111
  ASSERT_TRUE(raw_call(unknown, &reply).ok());
  EXPECT_EQ(remaining_of(reply), 27);
  accept_state();
  // hits_addend at uint32's top: denied (more than the limit can ever hold), nothing consumed.
  ASSERT_TRUE(raw_call(request("value2", 4294967295u), &reply).ok());
  rls::RateLimitResponse resp;
  ASSERT_TRUE(resp.ParseFromString(reply));
  EXPECT_EQ(resp.overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  expect_unchanged("hits_addend 4294967295");
  // A unit out of the enum's range in an override: the override is ignored.
  rls::RateLimitRequest odd_unit;
  odd_unit.set_domain("test");
  auto* d = odd_unit.add_descriptors();
  auto* e = d->add_entries();
  e->set_key("key2");
  e->set_value("value2");
  d->mutable_limit()->set_requests_per_unit(1);
  d->mutable_limit()->set_unit(static_cast<envoy::type::v3::RateLimitUnit>(99));
  ASSERT_TRUE(raw_call(odd_unit.SerializeAsString(), &reply).ok());
  EXPECT_EQ(remaining_of(reply), 26) << "decided by the configured 30 per minute";
  accept_state();
  // Long values, NUL and unicode: each its own counter (key2's default, 20 per minute).
  for (const std::string& value : {std::string(60'000, 'v'), std::string("a\0b", 3),
                                   std::string("\xc3\xa9\xf0\x9f\x98\x80")}) {
    ASSERT_TRUE(raw_call(request(value), &reply).ok());
    EXPECT_EQ(remaining_of(reply), 19);
  }
  // 2,000 descriptors matching nothing.
  rls::RateLimitRequest many;
  many.set_domain("test");
  for (int i = 0; i < 2000; ++i) {
    auto* x = many.add_descriptors()->add_entries();
    x->set_key("nomatch");
    x->set_value(std::to_string(i));
  }
  ASSERT_TRUE(raw_call(many.SerializeAsString(), &reply).ok());
  ASSERT_TRUE(resp.ParseFromString(reply));
  EXPECT_EQ(resp.statuses_size(), 2000);
  State now = state();
  EXPECT_EQ(now.envoy_remaining, before_.envoy_remaining);
  EXPECT_EQ(now.path_remaining, before_.path_remaining);
}

// ---- malformed rules: PUT /v1/rules and files at start-up --------------------------------------

TEST_F(BadInputTest, AdminPutRefusesBadRulesAndKeepsServing) {
  const std::string head = "domain: test\ndescriptors:\n  - key: k\n";
  const std::vector<BodyCase> cases = {
      {"domain: [unclosed", 400, "test.yaml:1:1: invalid YAML: end of sequence flow not found"},
      {head + "   bad_indent: 1\n", 400, "test.yaml:4:4: invalid YAML"},
      {"domain: test\ndescriptors: " + std::string(20000, '['), 400,
       "invalid YAML: nested too deeply"},
      {"a: &a [*a]", 400, "unknown key 'a'"},
      {"", 400, "empty file"},
      {"{\"domain\": \"test\", ", 400, "invalid YAML: end of map flow not found"},
      {head + "    rate_limit: {unit: second, requests_per_unit: -1}\n", 400,
       "rate_limit.requests_per_unit: must be an integer from 0 to 4294967295, got '-1'"},
      {head + "    rate_limit: {unit: second, requests_per_unit: 99999999999999999999999}\n", 400,
       "rate_limit.requests_per_unit: must be an integer from 0 to 4294967295"},
      {head + "    rate_limit: {unit: second, requests_per_unit: 1, burst: 99999999999999999999}\n",
       400, "rate_limit.burst: must be an integer from 1 to 4294967295"},
      {head + "    rate_limit: {window: 999999999999h, requests_per_unit: 5}\n", 400,
       "rate_limit.window: must be at most 36600d (100 years)"},
      {head + "    rate_limit: {unit: fortnight, requests_per_unit: 5}\n", 400, "test.yaml:4:"},
      {head + "    bogus: 1\n    rate_limit: {unit: second, requests_per_unit: 1}\n", 400,
       "test.yaml:4:5: unknown key 'bogus'"},
      {std::string("domain: test\ndescriptors:\n  - key: k\0x\n", 38) +
           "    rate_limit: {unit: second, requests_per_unit: 1}\n",
       400, "test.yaml:3:11: NUL byte: a rule file must be text (YAML or JSON)"},
      {"domain: other\ndescriptors: []\n", 400, "URL names \\\"test\\\""},
  };
  for (const BodyCase& c : cases) {
    HttpReply r = h_->admin("PUT", "/v1/rules/test", c.body);
    const std::string shown = c.body.substr(0, 80);
    EXPECT_EQ(r.status, c.status) << shown << " -> " << r.body;
    EXPECT_NE(r.body.find(c.message), std::string::npos) << shown << " -> " << r.body;
    EXPECT_NE(r.body.find("invalid rules: nothing changed"), std::string::npos) << r.body;
    expect_unchanged(shown);
  }
}

// Unicode, long keys and requests_per_unit 0 or huge are valid rules: they load and decide.
TEST_F(BadInputTest, AdminPutTakesExtremeButValidRules) {
  const std::string long_key(10'000, 'k');
  const std::string rules =
      "domain: edge\ndescriptors:\n"
      "  - key: \"\xc3\xa9\xf0\x9f\x98\x80\"\n"
      "    rate_limit: {unit: second, requests_per_unit: 0}\n"
      "  - key: " +
      long_key +
      "\n"
      "    rate_limit: {unit: year, requests_per_unit: 4294967295}\n";
  HttpReply put = h_->admin("PUT", "/v1/rules/edge", rules);
  ASSERT_EQ(put.status, 201) << put.body;
  EXPECT_EQ(h_->post("/json", envoy_json("edge", {{"\xc3\xa9\xf0\x9f\x98\x80", "x"}})).status, 429);
  HttpReply big = h_->post("/json", envoy_json("edge", {{long_key, "x"}}));
  EXPECT_EQ(big.status, 200);
  EXPECT_NE(big.body.find("\"limitRemaining\":4294967294"), std::string::npos) << big.body;
}

TEST(BadRulesAtStartup, RefuseToStartWithLocatedErrors) {
  struct Case {
    std::string text;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"domain: [unclosed", "bad.yaml:1:1: invalid YAML: end of sequence flow not found"},
      {"domain: x\ndescriptors: " + std::string(20000, '['), "invalid YAML: nested too deeply"},
      {std::string("domain: x\0\n", 11), "bad.yaml:1:10: NUL byte"},
      {"domain: x\ndescriptors:\n  - key: k\n    rate_limit: {unit: eon}\n", "bad.yaml:4:"},
      {"\t", "bad.yaml:1:"},
  };
  for (const Case& c : cases) {
    TempDir dir;
    dir.write("good.yaml", kEnvoyRules);
    dir.write("bad.yaml", c.text);
    ServerOptions o;
    o.config = {dir.path()};
    o.http_listen = "127.0.0.1:0";
    o.grpc_listen = "127.0.0.1:0";
    Server server(o);
    std::string error;
    EXPECT_FALSE(server.start(error)) << c.text.substr(0, 60);
    EXPECT_NE(error.find(c.message), std::string::npos) << c.text.substr(0, 60) << " -> " << error;
    EXPECT_EQ(server.http_port(), 0) << "nothing listens";
  }
}

}  // namespace
}  // namespace sluice::testing
