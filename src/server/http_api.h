// The HTTP API: what each endpoint of `sluice serve` does, independent of sockets.
//
//   POST /json                      Envoy ratelimit's JSON endpoint (proto3 JSON in and out)
//   POST /v1/check                  sluice's request JSON -> Decision JSON
//   ANY  /v1/authz[/original/path]  forward auth for gateways
//   GET  /v1/rules                  the rule files being served        (admin)
//   GET|PUT|DELETE /v1/rules/NAME   one rule file                      (admin)
//   GET  /healthcheck               200 OK while serving
//   GET  /metrics                   Prometheus text format
//
// docs/server.md describes each, with its statuses and headers.
#pragma once

#include <atomic>
#include <string>
#include <utility>
#include <vector>

#include "server/http_server.h"
#include "server/metrics.h"
#include "server/rules_manager.h"
#include "sluice/limiter.h"
#include "sluice/server.h"

namespace sluice::server {

struct HttpApiOptions {
  // Bearer token of the admin endpoints (/v1/rules...); empty turns them off.
  std::string admin_token;
  AuthzOptions authz;
};

class HttpApi {
 public:
  // The limiter, rules, metrics and `serving` flag must outlive the HttpApi.
  HttpApi(HttpApiOptions options, Limiter& limiter, RulesManager& rules, Metrics& metrics,
          const std::atomic<bool>& serving);

  // handle() answers one request. Thread-safe; never throws except std::bad_alloc.
  HttpResponse handle(HttpRequest& request);

 private:
  HttpResponse envoy_json(const HttpRequest& request);
  HttpResponse check(const HttpRequest& request);
  HttpResponse authz(const HttpRequest& request, std::string_view path_rest);
  HttpResponse rules(const HttpRequest& request, std::string_view name);
  bool authorized(const HttpRequest& request, HttpResponse& refusal) const;

  HttpApiOptions options_;
  Limiter& limiter_;
  RulesManager& rules_;
  Metrics& metrics_;
  const std::atomic<bool>& serving_;
};

// add_rate_limit_headers() sets the IETF RateLimit-Policy and RateLimit headers (draft
// "RateLimit header fields for HTTP") for the limits that applied, and Retry-After (seconds)
// when the request was denied and can ever pass.
void add_rate_limit_headers(HttpResponse& response, const Decision& decision);

}  // namespace sluice::server
