// The server end to end, in process: Envoy's RLS v3 over gRPC through the generated stub,
// Envoy's /json endpoint with the matching cases of the core, /v1/check and its headers,
// /v1/authz, the admin API (tokens, limits, bad input), metrics and health.
#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/fixture_rules.h"
#include "server/raw_client.h"
#include "server/server_fixture.h"

namespace sluice::testing {
namespace {

namespace rls = envoy::service::ratelimit::v3;
using nlohmann::json;

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_.write("test.yaml", kEnvoyRules);
    dir_.write("paths.yaml", kPathRules);
    h_ = std::make_unique<ServerHarness>(dir_.path());
  }

  // passes() posts `body` to /json until it is denied; returns how many passed (<= cap).
  int passes(const std::string& body, int cap = 100) {
    for (int i = 0; i < cap; ++i) {
      HttpReply r = h_->post("/json", body);
      if (r.status == 429) return i;
      EXPECT_EQ(r.status, 200) << r.body;
      if (r.status != 200) return -1;
    }
    return cap;
  }
  json json_of(const HttpReply& r) {
    json j = json::parse(r.body, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.body;
    return j;
  }

  TempDir dir_;
  std::unique_ptr<ServerHarness> h_;
};

// ---- /json: Envoy's JSON endpoint, with the matching cases of the core -----------------------

TEST_F(ServerTest, JsonNestedDescriptorsApplyAtTheLastEntry) {
  EXPECT_EQ(passes(envoy_json("test", {{"key1", "value1"}, {"subkey1", "x"}})), 5);
  EXPECT_EQ(passes(envoy_json("test", {{"key1", "value1"}, {"subkey1", "y"}})), 5);
  HttpReply r = h_->post("/json", envoy_json("test", {{"key1", "value1"}, {"subkey1", "x"}}));
  EXPECT_EQ(r.status, 429);
  json j = json_of(r);
  EXPECT_EQ(j["overallCode"], "OVER_LIMIT");
  ASSERT_EQ(j["statuses"].size(), 1u);
  EXPECT_EQ(j["statuses"][0]["code"], "OVER_LIMIT");
  EXPECT_EQ(j["statuses"][0]["currentLimit"]["requestsPerUnit"], 5);
  EXPECT_EQ(j["statuses"][0]["currentLimit"]["unit"], "SECOND");
  EXPECT_EQ(j["statuses"][0]["currentLimit"]["name"], "test.key1_value1.subkey1");
  EXPECT_EQ(j["statuses"][0].value("limitRemaining", 0), 0);
  EXPECT_EQ(j["statuses"][0]["durationUntilReset"], "1s");
}

TEST_F(ServerTest, JsonDepthRuleAndUnmatchedDescriptors) {
  for (const auto& entries : std::vector<std::vector<std::pair<std::string, std::string>>>{
           {{"key1", "value1"}},
           {{"key2", "x"}, {"deeper", "y"}},
           {{"nope", "x"}, {"subkey1", "x"}}}) {
    HttpReply r = h_->post("/json", envoy_json("test", entries));
    EXPECT_EQ(r.status, 200);
    json j = json_of(r);
    EXPECT_EQ(j["overallCode"], "OK");
    ASSERT_EQ(j["statuses"].size(), 1u) << "one status per descriptor, even without a limit";
    EXPECT_EQ(j["statuses"][0]["code"], "OK");
    EXPECT_FALSE(j["statuses"][0].contains("currentLimit"));
  }
}

TEST_F(ServerTest, JsonExactValueBeatsDefaultAndWildcardsInFileOrder) {
  EXPECT_EQ(passes(envoy_json("test", {{"key2", "value2"}})), 30);
  EXPECT_EQ(passes(envoy_json("test", {{"key2", "other"}})), 20);
  EXPECT_EQ(passes(envoy_json("test", {{"key3", "foobar"}})), 2);
  EXPECT_EQ(passes(envoy_json("test", {{"key3", "xbarx"}})), 3);
}

TEST_F(ServerTest, JsonUnlimitedShadowAndUnknownDomain) {
  for (int i = 0; i < 20; ++i) {
    json j = json_of(h_->post("/json", envoy_json("test", {{"key4", "anything"}})));
    EXPECT_EQ(j["statuses"][0]["limitRemaining"], 4294967295u);
    EXPECT_FALSE(j["statuses"][0].contains("currentLimit"));
  }
  EXPECT_EQ(passes(envoy_json("test", {{"key5", "v"}}), 10), 10) << "shadow mode never denies";
  json shadow = json_of(h_->post("/json", envoy_json("test", {{"key5", "v"}})));
  EXPECT_EQ(shadow["statuses"][0]["code"], "OK");
  EXPECT_EQ(passes(envoy_json("elsewhere", {{"key2", "x"}}), 10), 10);
}

TEST_F(ServerTest, JsonAllOrNothingAndReplaces) {
  const std::string both = json{{"domain", "test"},
                                {"descriptors",
                                 {{{"entries", {{{"key", "key2"}, {"value", "value2"}}}}},
                                  {{"entries", {{{"key", "key7"}, {"value", "b"}}}}}}}}
                               .dump();
  EXPECT_EQ(h_->post("/json", both).status, 200);
  HttpReply denied = h_->post("/json", both);
  EXPECT_EQ(denied.status, 429);
  json j = json_of(denied);
  ASSERT_EQ(j["statuses"].size(), 2u);
  EXPECT_EQ(j["statuses"][0]["code"], "OK");
  EXPECT_EQ(j["statuses"][0]["limitRemaining"], 29) << "the passing limit consumed nothing";
  EXPECT_EQ(j["statuses"][1]["code"], "OVER_LIMIT");

  // "a" replaces "b" in the same request: a's 10 per second decides.
  const std::string replaced = json{{"domain", "test"},
                                    {"descriptors",
                                     {{{"entries", {{{"key", "key6"}, {"value", "a"}}}}},
                                      {{"entries", {{{"key", "key7"}, {"value", "b"}}}}}}}}
                                   .dump();
  int passed = 0;
  for (int i = 0; i < 15; ++i)
    passed += h_->post("/json", replaced).status == 200;
  EXPECT_EQ(passed, 10);
}

TEST_F(ServerTest, JsonHitsAddendOverridesAndWindows) {
  json heavy = json::parse(envoy_json("test", {{"key2", "c"}}));
  heavy["hitsAddend"] = 15;
  EXPECT_EQ(h_->post("/json", heavy.dump()).status, 200);
  EXPECT_EQ(h_->post("/json", heavy.dump()).status, 429);
  // A descriptor's hits_addend of 0 checks without consuming.
  json check = json::parse(envoy_json("test", {{"key2", "c"}}));
  check["descriptors"][0]["hitsAddend"] = 0;
  json j = json_of(h_->post("/json", check.dump()));
  EXPECT_EQ(j["statuses"][0]["limitRemaining"], 5);
  EXPECT_EQ(json_of(h_->post("/json", check.dump()))["statuses"][0]["limitRemaining"], 5);

  json over = json::parse(envoy_json("test", {{"key2", "o"}}));
  over["descriptors"][0]["limit"] = {{"requestsPerUnit", 2}, {"unit", "SECOND"}};
  EXPECT_EQ(passes(over.dump()), 2);
  h_->clock.advance(std::chrono::seconds(1));
  EXPECT_EQ(passes(over.dump()), 2);
}

TEST_F(ServerTest, JsonRefusesBadInputWith400) {
  for (const std::string& body :
       {std::string("{"), std::string("[]"), std::string("{\"domain\": 5}"),
        std::string("{\"domain\": \"test\", \"bogus\": 1}"), std::string("{\"domain\": \"test\"}"),
        std::string("{\"descriptors\": [{\"entries\": [{\"key\": \"a\"}]}]}"),
        std::string("\xff\xfe garbage")}) {
    HttpReply r = h_->post("/json", body);
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_TRUE(json_of(r).contains("error")) << r.body;
  }
  EXPECT_EQ(h_->post("/json", envoy_json("test", {{"key2", "after"}})).status, 200);
  EXPECT_EQ(http_request(h_->http_port(), "GET", "/json").status, 405);
  EXPECT_EQ(http_request(h_->http_port(), "GET", "/nope").status, 404);
}

// ---- gRPC --------------------------------------------------------------------------------------

class GrpcTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    channel_ = grpc::CreateChannel(h_->grpc_address(), grpc::InsecureChannelCredentials());
    stub_ = rls::RateLimitService::NewStub(channel_);
  }
  grpc::Status call(const rls::RateLimitRequest& req, rls::RateLimitResponse& resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    return stub_->ShouldRateLimit(&ctx, req, &resp);
  }
  static rls::RateLimitRequest request(const std::string& domain,
                                       std::vector<std::pair<std::string, std::string>> entries) {
    rls::RateLimitRequest req;
    req.set_domain(domain);
    auto* d = req.add_descriptors();
    for (const auto& [k, v] : entries) {
      auto* e = d->add_entries();
      e->set_key(k);
      e->set_value(v);
    }
    return req;
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<rls::RateLimitService::Stub> stub_;
};

TEST_F(GrpcTest, ShouldRateLimitThroughTheGeneratedStub) {
  const rls::RateLimitRequest req = request("test", {{"key1", "value1"}, {"subkey1", "g"}});
  for (int i = 0; i < 5; ++i) {
    rls::RateLimitResponse resp;
    ASSERT_TRUE(call(req, resp).ok());
    EXPECT_EQ(resp.overall_code(), rls::RateLimitResponse::OK);
    ASSERT_EQ(resp.statuses_size(), 1);
    EXPECT_EQ(resp.statuses(0).limit_remaining(), static_cast<unsigned>(4 - i));
  }
  rls::RateLimitResponse resp;
  ASSERT_TRUE(call(req, resp).ok());
  EXPECT_EQ(resp.overall_code(), rls::RateLimitResponse::OVER_LIMIT);
  EXPECT_EQ(resp.statuses(0).code(), rls::RateLimitResponse::OVER_LIMIT);
  EXPECT_EQ(resp.statuses(0).current_limit().requests_per_unit(), 5u);
  EXPECT_EQ(resp.statuses(0).current_limit().unit(), rls::RateLimitResponse::RateLimit::SECOND);
  EXPECT_EQ(resp.statuses(0).duration_until_reset().seconds(), 1);
  // The window passes on the manual clock.
  h_->clock.advance(std::chrono::seconds(1));
  ASSERT_TRUE(call(req, resp).ok());
  EXPECT_EQ(resp.overall_code(), rls::RateLimitResponse::OK);
}

TEST_F(GrpcTest, HitsAddendZeroMeansOneAndDescriptorCosts) {
  rls::RateLimitRequest req = request("test", {{"key2", "h"}});
  req.set_hits_addend(0);
  rls::RateLimitResponse resp;
  ASSERT_TRUE(call(req, resp).ok());
  EXPECT_EQ(resp.statuses(0).limit_remaining(), 19u);
  req.set_hits_addend(4);
  ASSERT_TRUE(call(req, resp).ok());
  EXPECT_EQ(resp.statuses(0).limit_remaining(), 15u);
  req.mutable_descriptors(0)->mutable_hits_addend()->set_value(0);  // check only
  ASSERT_TRUE(call(req, resp).ok());
  EXPECT_EQ(resp.statuses(0).limit_remaining(), 15u);
  req.mutable_descriptors(0)->mutable_hits_addend()->set_value(15);
  ASSERT_TRUE(call(req, resp).ok());
  EXPECT_EQ(resp.statuses(0).limit_remaining(), 0u);
}

TEST_F(GrpcTest, EmptyDomainOrNoDescriptorsIsInvalidArgument) {
  rls::RateLimitResponse resp;
  grpc::Status s = call(request("", {{"key2", "x"}}), resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "rate limit domain must not be empty");
  rls::RateLimitRequest none;
  none.set_domain("test");
  s = call(none, resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "rate limit descriptor list must not be empty");
}

TEST_F(GrpcTest, MalformedProtobufIsRefusedAndChangesNothing) {
  const grpc::Status status = raw_grpc_call(
      channel_, kShouldRateLimit, "\xff\xff\xff\xff\x0f garbage that is not a RateLimitRequest");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "malformed RateLimitRequest: not a valid protobuf message");
  rls::RateLimitResponse resp;
  ASSERT_TRUE(call(request("test", {{"key2", "after"}}), resp).ok());
  EXPECT_EQ(resp.statuses(0).limit_remaining(), 19u);
  EXPECT_EQ(h_->store.size(), 1u) << "the malformed call counted nothing";
}

TEST_F(GrpcTest, HealthServiceServes) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

// ---- /v1/check and its headers ----------------------------------------------------------------

TEST_F(ServerTest, CheckAnswersTheDecisionWithRateLimitHeaders) {
  const std::string body = R"({"path": "/login", "data": {"user_id": "42"}, "cost": 1})";
  for (int i = 0; i < 3; ++i) {
    HttpReply r = h_->post("/v1/check", body);
    ASSERT_EQ(r.status, 200) << r.body;
    json j = json_of(r);
    EXPECT_TRUE(j["allowed"].get<bool>());
    EXPECT_EQ(j["remaining"], 2 - i);
    EXPECT_EQ(r.header("ratelimit-policy"), "\"path:/login.user_id\";q=3;w=60");
    EXPECT_EQ(r.header("ratelimit"), "\"path:/login.user_id\";r=" + std::to_string(2 - i) +
                                         ";t=" + std::to_string(60 - 20));
    EXPECT_EQ(r.header("retry-after"), "");
  }
  HttpReply denied = h_->post("/v1/check", body);
  EXPECT_EQ(denied.status, 429);
  EXPECT_FALSE(json_of(denied)["allowed"].get<bool>());
  EXPECT_EQ(denied.header("retry-after"), "40");
  EXPECT_EQ(denied.header("ratelimit"), "\"path:/login.user_id\";r=0;t=40");
  // Envoy-shaped requests work here too.
  EXPECT_EQ(h_->post("/v1/check", envoy_json("test", {{"key2", "x"}})).status, 200);
}

TEST_F(ServerTest, CheckRefusesBadInputWith400) {
  for (const std::string& body :
       {std::string("not json"), std::string("{\"path\": \"/login\", \"data\": {\"a\": 1}}"),
        std::string("{\"path\": \"/login\", \"cost\": -1}"), std::string("{}")}) {
    HttpReply r = h_->post("/v1/check", body);
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_FALSE(json_of(r).value("error", "").empty()) << r.body;
  }
  EXPECT_EQ(h_->store.size(), 0u);
}

// ---- /v1/authz ----------------------------------------------------------------------------------

TEST_F(ServerTest, AuthzTakesTheOriginalRequestFromHeaders) {
  const std::vector<std::pair<std::string, std::string>> headers = {
      {"X-Original-URI", "/api/orders?page=2"}, {"X-Real-IP", "198.51.100.7"}};
  int allowed = 0;
  HttpReply last;
  for (int i = 0; i < 6; ++i) {
    last = http_request(h_->http_port(), "GET", "/v1/authz", headers);
    allowed += last.status == 200;
  }
  EXPECT_EQ(allowed, 4) << "4 per minute per client_ip on /api/*";
  EXPECT_EQ(last.status, 429);
  EXPECT_FALSE(last.header("ratelimit-policy").empty());
  EXPECT_FALSE(last.header("retry-after").empty());
  // Another client has its own counter; X-Forwarded-For's last address is the client.
  EXPECT_EQ(http_request(
                h_->http_port(), "GET", "/v1/authz",
                {{"X-Forwarded-Uri", "/api/x"}, {"X-Forwarded-For", "203.0.113.1, 198.51.100.8"}})
                .status,
            200);
  // Envoy's ext_authz appends the original path to the prefix.
  EXPECT_EQ(
      http_request(h_->http_port(), "GET", "/v1/authz/api/orders", {{"X-Real-IP", "198.51.100.7"}})
          .status,
      429);
  EXPECT_EQ(http_request(h_->http_port(), "GET", "/v1/authz").status, 400);
}

// ---- admin API ----------------------------------------------------------------------------------

TEST_F(ServerTest, AdminNeedsTheBearerToken) {
  const std::string before = dir_.read("test.yaml");
  for (const std::string& token : {std::string(""), std::string("wrong")}) {
    EXPECT_EQ(h_->admin("GET", "/v1/rules", "", token).status, 401);
    HttpReply put = h_->admin("PUT", "/v1/rules/test", kEnvoyRulesTight, token);
    EXPECT_EQ(put.status, 401);
    EXPECT_EQ(put.header("www-authenticate"), "Bearer realm=\"sluice\"");
    EXPECT_EQ(h_->admin("DELETE", "/v1/rules/test", "", token).status, 401);
  }
  EXPECT_EQ(dir_.read("test.yaml"), before);
  EXPECT_EQ(passes(envoy_json("test", {{"key2", "value2"}})), 30) << "rules unchanged";
}

TEST(ServerAdmin, OffWithoutAToken) {
  TempDir dir;
  dir.write("test.yaml", kEnvoyRules);
  ServerOptions o;
  o.config = {dir.path()};
  o.http_listen = "127.0.0.1:0";
  o.grpc_listen = "";
  Server server(o);
  std::string error;
  ASSERT_TRUE(server.start(error)) << error;
  HttpReply r =
      http_request(server.http_port(), "GET", "/v1/rules", {{"Authorization", "Bearer x"}});
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(r.body.find("--admin-token"), std::string::npos) << r.body;
  EXPECT_EQ(http_request(server.http_port(), "PUT", "/v1/rules/test", {}, kEnvoyRulesTight).status,
            403);
  EXPECT_EQ(dir.read("test.yaml"), kEnvoyRules);
}

TEST_F(ServerTest, AdminRefusesOversizedBodiesWith413) {
  const std::string huge(2 << 20, 'x');
  HttpReply r = h_->admin("PUT", "/v1/rules/test", huge);
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(h_->post("/json", huge).status, 413);
  EXPECT_EQ(passes(envoy_json("test", {{"key2", "value2"}})), 30) << "rules unchanged";
}

TEST_F(ServerTest, AdminRefusesBadRulesWithLocatedErrors) {
  const std::string before = dir_.read("test.yaml");
  HttpReply r = h_->admin("PUT", "/v1/rules/test",
                          "domain: test\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: "
                          "fortnight\n      requests_per_unit: 1\n");
  ASSERT_EQ(r.status, 400) << r.body;
  json j = json_of(r);
  ASSERT_FALSE(j["errors"].empty());
  EXPECT_NE(j["errors"][0].get<std::string>().find("test.yaml:5:13"), std::string::npos)
      << j["errors"][0];
  // Malformed YAML, JSON, a mismatched domain, a bad name.
  EXPECT_EQ(h_->admin("PUT", "/v1/rules/test", "domain: [unclosed").status, 400);
  EXPECT_EQ(h_->admin("PUT", "/v1/rules/test", "{\"domain\": \"test\", ").status, 400);
  HttpReply other = h_->admin("PUT", "/v1/rules/test", kEnvoyRulesOther);
  EXPECT_EQ(other.status, 400);
  EXPECT_NE(other.body.find("URL names"), std::string::npos) << other.body;
  EXPECT_EQ(h_->admin("PUT", "/v1/rules/..%2fetc", kEnvoyRules).status, 400);
  EXPECT_EQ(h_->admin("PUT", "/v1/rules/.hidden", kEnvoyRules).status, 400);
  EXPECT_EQ(h_->admin("DELETE", "/v1/rules/nothing").status, 404);
  EXPECT_EQ(dir_.read("test.yaml"), before);
  EXPECT_FALSE(dir_.exists("other.yaml"));
  EXPECT_EQ(passes(envoy_json("test", {{"key2", "value2"}})), 30) << "rules unchanged";
}

TEST_F(ServerTest, AdminPutGetListDelete) {
  HttpReply put = h_->admin("PUT", "/v1/rules/test", kEnvoyRulesTight);
  ASSERT_EQ(put.status, 200) << put.body;
  EXPECT_EQ(passes(envoy_json("test", {{"key2", "value2"}})), 1);
  EXPECT_EQ(dir_.read("test.yaml"), kEnvoyRulesTight) << "persisted into the file it came from";
  EXPECT_EQ(h_->admin("GET", "/v1/rules/test").body, kEnvoyRulesTight);

  // A new domain, as JSON of the same shape: created as other.yaml.
  HttpReply created = h_->admin("PUT", "/v1/rules/other", kEnvoyRulesOtherJson);
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_TRUE(dir_.exists("other.yaml"));
  EXPECT_EQ(passes(envoy_json("other", {{"k", "v"}})), 2);
  json list = json_of(h_->admin("GET", "/v1/rules"));
  EXPECT_TRUE(list["writable"].get<bool>());
  ASSERT_EQ(list["files"].size(), 3u);

  ASSERT_EQ(h_->admin("DELETE", "/v1/rules/other").status, 200);
  EXPECT_FALSE(dir_.exists("other.yaml"));
  EXPECT_EQ(passes(envoy_json("other", {{"k", "v"}}), 10), 10) << "no rules: allowed";
  EXPECT_EQ(h_->admin("GET", "/v1/rules/other").status, 404);
}

// ---- metrics and health -------------------------------------------------------------------------

TEST_F(ServerTest, MetricsCountDecisionsByRuleAndOutcome) {
  passes(envoy_json("test", {{"key1", "value1"}, {"subkey1", "m"}}));
  h_->post("/json", "{");
  std::string text = http_request(h_->http_port(), "GET", "/metrics").body;
  EXPECT_NE(text.find("sluice_decisions_total{domain=\"test\",rule=\"test.key1_value1.subkey1\","
                      "outcome=\"ok\"} 5\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("sluice_decisions_total{domain=\"test\",rule=\"test.key1_value1.subkey1\","
                      "outcome=\"over_limit\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("sluice_requests_total{api=\"json\",outcome=\"error\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("sluice_decision_duration_seconds_count 6\n"), std::string::npos);
  EXPECT_NE(text.find("sluice_rules_loaded{kind=\"domains\"} 1\n"), std::string::npos);
  EXPECT_EQ(http_request(h_->http_port(), "GET", "/healthcheck").status, 200);
}

}  // namespace
}  // namespace sluice::testing
