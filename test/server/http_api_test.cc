// HttpApi::handle() in process, without sockets (test/support/http_api_harness.h): the cases the
// fuzz target fuzz_http_json found (docs/reliability.md, "Fuzzing"), each input run through the
// same function as the fuzzer runs it.
#include "server/http_api.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "support/http_api_harness.h"

namespace sluice::server {
namespace {

using testing::InProcessApi;

// Bug 4: PUT /v1/rules/edge_proxy with path rules only was accepted (200) and wrote them over
// envoy.yaml, the file of domain edge_proxy: the domain was gone, and the name edge_proxy then
// referred to nothing (GET 404), the new rules being named "envoy" after the file.
TEST(HttpApiRules, PathRulesOnlyForADomainsNameAreRefused) {
  InProcessApi api;
  const std::optional<std::string> before = api.rules().get("edge_proxy");
  const std::uint64_t generation = api.rules().generation();
  const std::string body =
      "rules:\n  - path: /zzz\n    descriptors:\n      - key: k\n        unit: second\n"
      "        requests_per_unit: 1\n";
  const HttpResponse res = api.call(http::verb::put, "/v1/rules/edge_proxy", body);
  EXPECT_EQ(res.result_int(), 400u) << res.body();
  EXPECT_NE(res.body().find("the URL names domain \\\"edge_proxy\\\", but the body defines path "
                            "rules only"),
            std::string::npos)
      << res.body();
  EXPECT_EQ(api.rules().get("edge_proxy"), before);
  EXPECT_EQ(api.rules().generation(), generation);
  EXPECT_EQ(api.call(http::verb::get, "/v1/rules/edge_proxy").result_int(), 200u);

  // A path-rule file keeps taking path rules, and may become a domain of its own name and back.
  const std::optional<std::string> paths = api.rules().get("paths");
  ASSERT_TRUE(paths);
  EXPECT_EQ(api.call(http::verb::put, "/v1/rules/paths", body).result_int(), 200u);
  EXPECT_EQ(api.call(http::verb::put, "/v1/rules/paths",
                     "domain: paths\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, "
                     "requests_per_unit: 1}\n")
                .result_int(),
            200u);
  EXPECT_EQ(api.call(http::verb::put, "/v1/rules/paths", *paths).result_int(), 200u);
  EXPECT_EQ(api.rules().get("paths"), paths);
}

// Bug 5: PUT /v1/rules/envoy (the stem of envoy.yaml, which defines edge_proxy; not a name the
// API gives it) answered 201 "created" and wrote over envoy.yaml, dropping domain edge_proxy.
TEST(HttpApiRules, ANewNameWhoseFileHoldsOtherRulesIsRefused) {
  InProcessApi api;
  const std::optional<std::string> before = api.rules().get("edge_proxy");
  const std::uint64_t generation = api.rules().generation();
  const HttpResponse res = api.call(http::verb::put, "/v1/rules/envoy",
                                    "rules:\n  - path: /zzz\n    descriptors:\n      - key: k\n"
                                    "        unit: second\n        requests_per_unit: 1\n");
  EXPECT_EQ(res.result_int(), 409u) << res.body();
  EXPECT_NE(res.body().find("holds other rules (domain \\\"edge_proxy\\\")"), std::string::npos)
      << res.body();
  EXPECT_EQ(api.rules().get("edge_proxy"), before);
  EXPECT_FALSE(api.rules().get("envoy"));
  EXPECT_EQ(api.rules().generation(), generation);
}

// Bug 1 through the admin API: a body that yaml-cpp 0.7 reads as endless empty documents held
// the request (and the rules' lock) forever while memory grew.
TEST(HttpApiRules, ACommaBodyIsRefusedAtOnce) {
  InProcessApi api;
  const HttpResponse res = api.call(http::verb::put, "/v1/rules/fuzz", ",\n");
  EXPECT_EQ(res.result_int(), 400u);
  EXPECT_NE(res.body().find("invalid YAML: unexpected ','"), std::string::npos) << res.body();
}

}  // namespace
}  // namespace sluice::server
