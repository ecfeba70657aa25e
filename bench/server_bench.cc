// What the server adds per request, without sockets: HttpApi::handle() for each endpoint, and
// the gRPC service's conversion + decision, over the memory store and the example rules.
//
//   build/bin/sluice_bench_server --benchmark_repetitions=3
#include <benchmark/benchmark.h>

#include <atomic>
#include <memory>
#include <string>

#include "server/grpc_server.h"
#include "server/http_api.h"
#include "server/metrics.h"
#include "server/rules_manager.h"
#include "sluice/memory_store.h"

namespace {

using namespace sluice;
using namespace sluice::server;

struct Fixture {
  Fixture() {
    std::vector<ConfigError> errors;
    rules.load(errors);
  }
  ManualClock clock{seconds_to_micros(1'700'000'000)};
  MemoryStore store;
  Limiter limiter{RuleSet::empty(), store, clock};
  Metrics metrics;
  RulesManager rules{
      {}, [this](const std::shared_ptr<const RuleSet>& r) { limiter.set_rules(r); }, &metrics};
  std::atomic<bool> serving{true};
  HttpApi api{HttpApiOptions{}, limiter, rules, metrics, serving};
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

HttpRequest post(const std::string& target, const std::string& body) {
  HttpRequest req(http::verb::post, target, 11);
  req.set(http::field::content_type, "application/json");
  req.body() = body;
  req.prepare_payload();
  return req;
}

void BM_Http(benchmark::State& state, const std::string& target, const std::string& body) {
  Fixture& f = fixture();
  const HttpRequest proto = post(target, body);
  for (auto _ : state) {
    HttpRequest req = proto;
    HttpResponse res = f.api.handle(req);
    benchmark::DoNotOptimize(res);
  }
}

BENCHMARK_CAPTURE(
    BM_Http, json, "/json",
    R"({"domain": "edge_proxy", "descriptors": [{"entries": [{"key": "remote_address", "value": "203.0.113.9"}]}]})");
BENCHMARK_CAPTURE(
    BM_Http, check_envoy, "/v1/check",
    R"({"domain": "edge_proxy", "descriptors": [{"entries": [{"key": "remote_address", "value": "203.0.113.9"}]}]})");
BENCHMARK_CAPTURE(BM_Http, check_path, "/v1/check",
                  R"({"path": "/login", "data": {"user_id": "42"}})");

void BM_Authz(benchmark::State& state) {
  Fixture& f = fixture();
  HttpRequest proto(http::verb::get, "/v1/authz", 11);
  proto.set("X-Original-URI", "/api/orders");
  proto.set("X-Real-IP", "203.0.113.9");
  for (auto _ : state) {
    HttpRequest req = proto;
    HttpResponse res = f.api.handle(req);
    benchmark::DoNotOptimize(res);
  }
}
BENCHMARK(BM_Authz);

void BM_GrpcDecide(benchmark::State& state) {
  Fixture& f = fixture();
  RateLimitService service(f.limiter, f.metrics);
  rls::RateLimitRequest req;
  req.set_domain("edge_proxy");
  auto* e = req.add_descriptors()->add_entries();
  e->set_key("remote_address");
  e->set_value("203.0.113.9");
  for (auto _ : state) {
    rls::RateLimitResponse resp;
    benchmark::DoNotOptimize(service.decide(req, resp));
  }
}
BENCHMARK(BM_GrpcDecide);

void BM_LimiterOnly(benchmark::State& state) {
  Fixture& f = fixture();
  Request req{.domain = "edge_proxy",
              .descriptors = {{.entries = {{"remote_address", "203.0.113.9"}}}}};
  for (auto _ : state)
    benchmark::DoNotOptimize(f.limiter.decide(req));
}
BENCHMARK(BM_LimiterOnly);

}  // namespace

BENCHMARK_MAIN();
