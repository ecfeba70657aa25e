// Fuzz target: the bodies of POST /json, POST /v1/check and PUT /v1/rules/NAME, through
// HttpApi::handle() as the HTTP server calls it, in process and without sockets
// (test/support/http_api_harness.h: the example rules in a temporary directory, the memory
// store, a manual clock).
//
// Input: the first byte picks the endpoint (modulo 6: 0 /json, 1 /v1/check, 2-5 PUT to one of
// kNames); the rest is the body.
//
// Invariants, besides no crash, leak or undefined behaviour:
// - /json: when parse_envoy_json_direct() reads a body, protobuf's JsonStringToMessage reads the
//   same message; the status is 200 or 429 exactly when the body is a RateLimitRequest that
//   to_request() takes, else 400; the answer is JSON with one status per descriptor and an
//   overallCode that agrees with the HTTP status.
// - /v1/check: when parse_request_json_direct() reads a body, the DOM path reads the same
//   request; 200/429 exactly when the DOM path reads it, else 400; the answer is JSON whose
//   "allowed" agrees with the status.
// - PUT /v1/rules/NAME: 400 and 409 change nothing (same generation, same snapshot, same text);
// 200/201
//   serves the body as that file's text in the next generation; putting the old text back (or
//   deleting a new file) then succeeds. Never 500.
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "server/envoy_json.h"
#include "sluice/json.h"
#include "support/http_api_harness.h"
#include "support/request_text.h"

namespace {

namespace http = sluice::server::http;
using nlohmann::json;
using sluice::server::HttpResponse;

// The names PUT goes to: a new file, the Envoy example's domain, the path-rule example's file,
// and the Envoy example's file name (which is not an API name: the file defines edge_proxy).
constexpr std::string_view kNames[] = {"fuzz", "edge_proxy", "paths", "envoy"};

// The API over the example rules, alive for the whole run; base_limits: what they hold.
sluice::testing::InProcessApi* api = nullptr;
std::size_t base_limits = 0;

json parse_answer(const HttpResponse& res) {
  json body = json::parse(res.body(), nullptr, false);
  FUZZ_CHECK(!body.is_discarded() && body.is_object(), "the answer is not a JSON object");
  const unsigned status = res.result_int();
  if (status >= 400 && status != 429) {
    FUZZ_CHECK(body.contains("error") && body["error"].is_string(), "an error without a message");
  }
  return body;
}

// decide() posts `body` to a decision endpoint: the answer must be 400 when the body is not
// `valid`, else 200 or 429 with a JSON answer, which it returns.
std::optional<json> decide(std::string_view target, std::string_view body, bool valid,
                           unsigned& status) {
  const HttpResponse res = api->call(http::verb::post, target, body);
  status = res.result_int();
  json answer = parse_answer(res);
  if (!valid) {
    FUZZ_CHECK(status == 400, "an invalid body was not answered 400");
    return std::nullopt;
  }
  FUZZ_CHECK(status == 200 || status == 429, "a valid body was not answered 200 or 429");
  return answer;
}

void envoy_json(std::string_view body) {
  namespace rls = sluice::server::rls;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  rls::RateLimitRequest expected;
  const bool protobuf_reads =
      google::protobuf::util::JsonStringToMessage(
          google::protobuf::StringPiece(body.data(), body.size()), &expected, options)
          .ok();
  rls::RateLimitRequest fast;
  if (sluice::server::parse_envoy_json_direct(body, fast)) {
    FUZZ_CHECK(protobuf_reads, "the fast path reads a body protobuf refuses");
    FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(fast, expected),
               "the fast path reads another message than protobuf");
  }
  sluice::Request request;
  std::string error;
  const bool valid = protobuf_reads && sluice::server::to_request(expected, request, error);

  unsigned status = 0;
  const std::optional<json> answer = decide("/json", body, valid, status);
  if (!answer) return;
  FUZZ_CHECK(answer->value("overallCode", "") == (status == 200 ? "OK" : "OVER_LIMIT"),
             "overallCode disagrees with the HTTP status");
  FUZZ_CHECK(answer->contains("statuses") && (*answer)["statuses"].is_array() &&
                 (*answer)["statuses"].size() == request.descriptors.size(),
             "not one status per descriptor");
}

void check(std::string_view body) {
  const json dom = json::parse(body, nullptr, false);
  std::optional<sluice::AnyRequest> expected;
  std::string error;
  if (!dom.is_discarded()) expected = sluice::parse_request_json(dom, error);
  if (const auto fast = sluice::parse_request_json_direct(body)) {
    FUZZ_CHECK(expected.has_value(), "the fast path reads a body the DOM path refuses");
    FUZZ_CHECK(
        sluice::testing::describe_request(*fast) == sluice::testing::describe_request(*expected),
        "the fast path reads another request than the DOM path");
  }

  unsigned status = 0;
  const std::optional<json> answer = decide("/v1/check", body, expected.has_value(), status);
  if (!answer) return;
  FUZZ_CHECK(answer->contains("allowed") && (*answer)["allowed"] == (status == 200),
             "\"allowed\" disagrees with the HTTP status");
  FUZZ_CHECK(answer->contains("statuses") && (*answer)["statuses"].is_array(), "no statuses");
}

void put_rules(std::string_view name, std::string_view body) {
  sluice::server::RulesManager& rules = api->rules();
  const std::string target = "/v1/rules/" + std::string(name);
  const std::uint64_t generation = rules.generation();
  const std::shared_ptr<const sluice::RuleSet> before = rules.current();
  const std::optional<std::string> old_text = rules.get(name);

  const HttpResponse res = api->call(http::verb::put, target, body);
  const unsigned status = res.result_int();
  parse_answer(res);
  FUZZ_CHECK(status == 200 || status == 201 || status == 400 || status == 409,
             "PUT answered neither 2xx nor 400 or 409");
  if (status == 400 || status == 409) {
    FUZZ_CHECK(rules.generation() == generation, "a refused PUT changed the generation");
    FUZZ_CHECK(rules.current() == before, "a refused PUT changed the rules");
    FUZZ_CHECK(rules.get(name) == old_text, "a refused PUT changed the file");
    return;
  }
  FUZZ_CHECK((status == 201) == !old_text.has_value(), "201 is for a new file, 200 for a known");
  FUZZ_CHECK(rules.generation() == generation + 1, "an accepted PUT is not one generation");
  FUZZ_CHECK(rules.get(name) == std::string(body), "the file does not hold the body put");

  // Back to the example rules, for the next input.
  const HttpResponse undo = old_text ? api->call(http::verb::put, target, *old_text)
                                     : api->call(http::verb::delete_, target);
  FUZZ_CHECK(undo.result_int() == 200, "cannot undo an accepted PUT");
  FUZZ_CHECK(rules.current()->limit_count() == base_limits, "the undo left other rules");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);  // every PUT logs
  static sluice::testing::InProcessApi instance;
  api = &instance;
  base_limits = api->rules().current()->limit_count();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  api->clock().advance(std::chrono::milliseconds(100));  // let windows pass now and then
  switch (data[0] % 6) {
    case 0:
      envoy_json(body);
      break;
    case 1:
      check(body);
      break;
    default:
      put_rules(kNames[data[0] % 6 - 2], body);
      break;
  }
  return 0;
}
