#include "sluice/server.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <mutex>
#include <optional>

#include "server/grpc_server.h"
#include "server/http_api.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/rules_manager.h"
#include "sluice/eventual_store.h"
#include "sluice/memory_store.h"
#include "sluice/storage.h"

namespace sluice {

struct Server::Impl {
  explicit Impl(ServerOptions o) : options(std::move(o)) {}

  ServerOptions options;
  std::unique_ptr<Store> owned_store;
  Store* store = nullptr;
  server::Metrics metrics;
  std::unique_ptr<Limiter> limiter;
  std::unique_ptr<server::RulesManager> rules;
  std::unique_ptr<server::HttpApi> api;
  std::unique_ptr<server::HttpServer> http;
  std::unique_ptr<server::RateLimitService> rls;
  // Between the two: destroyed after gRPC (whose calls it runs) and before the service (whose
  // methods its threads call), so joining its threads orders their last use of the service.
  std::unique_ptr<server::BlockingPool> pool;
  std::unique_ptr<server::GrpcServer> grpc;
  std::atomic<bool> serving{false};
  std::once_flag shut_down;
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Server::~Server() {
  shutdown();
}

bool Server::start(std::string& error) {
  Impl& s = *impl_;
  const ServerOptions& o = s.options;
  if (o.store != nullptr) {
    s.store = o.store;
  } else {
    s.owned_store = open_store(o.storage, error);
    if (s.owned_store == nullptr) return false;
    s.store = s.owned_store.get();
  }
  s.metrics.set_eventual(dynamic_cast<const EventualStore*>(s.store));
  const Clock& clock = o.clock != nullptr ? *o.clock : SystemClock::instance();
  s.limiter = std::make_unique<Limiter>(RuleSet::empty(), *s.store, clock);
  s.rules = std::make_unique<server::RulesManager>(
      o.config,
      [limiter = s.limiter.get()](const std::shared_ptr<const RuleSet>& rules) {
        limiter->set_rules(rules);
      },
      &s.metrics);
  std::vector<ConfigError> errors;
  if (!s.rules->load(errors)) {
    error = "the rules do not load:";
    for (const ConfigError& e : errors)
      error += "\n  " + e.to_string();
    return false;
  }

  // The memory store (and an eventual-consistency one) decides in about a microsecond: on the
  // front ends' own threads. A remote store waits for the network: on the threads of a pool,
  // which may block.
  if (!s.store->decides_locally()) s.pool = std::make_unique<server::BlockingPool>(o.store_threads);

  if (!o.http_listen.empty()) {
    s.api = std::make_unique<server::HttpApi>(
        server::HttpApiOptions{.admin_token = o.admin_token, .authz = o.authz}, *s.limiter,
        *s.rules, s.metrics, s.serving);
    server::HttpServerOptions http;
    http.listen = o.http_listen;
    http.threads = o.http_threads;
    http.max_body_bytes = o.max_body_bytes;
    http.idle_timeout = o.http_idle_timeout;
    http.tls_cert_file = o.tls_cert_file;
    http.tls_key_file = o.tls_key_file;
    http.tls_client_ca_file = o.tls_client_ca_file;
    http.handler_pool = s.pool.get();
    s.http = std::make_unique<server::HttpServer>(
        http, [api = s.api.get()](server::HttpRequest& req) { return api->handle(req); });
    if (!s.http->start(error)) return false;
  }
  if (!o.grpc_listen.empty()) {
    s.rls = std::make_unique<server::RateLimitService>(*s.limiter, s.metrics, s.pool.get());
    server::GrpcServerOptions grpc;
    grpc.listen = o.grpc_listen;
    grpc.max_message_bytes = static_cast<int>(std::min<std::size_t>(o.max_body_bytes, 1u << 30));
    grpc.idle_timeout = o.grpc_idle_timeout;
    grpc.tls_cert_file = o.tls_cert_file;
    grpc.tls_key_file = o.tls_key_file;
    grpc.tls_client_ca_file = o.tls_client_ca_file;
    s.grpc = std::make_unique<server::GrpcServer>(grpc);
    if (!s.grpc->start({s.rls.get()}, error)) {
      if (s.http) s.http->shutdown(std::chrono::milliseconds(0));
      return false;
    }
  }
  s.serving.store(true);
  if (o.watch_interval.count() > 0) s.rules->watch(o.watch_interval);
  return true;
}

void Server::shutdown() {
  Impl& s = *impl_;
  std::call_once(s.shut_down, [&s] {
    s.serving.store(false);
    if (s.rules) s.rules->stop();
    // Both front ends drain at once: gRPC on a thread of its own while HTTP drains here.
    std::thread grpc_drain;
    if (s.grpc) grpc_drain = std::thread([&s] { s.grpc->shutdown(s.options.shutdown_grace); });
    if (s.http) s.http->shutdown(s.options.shutdown_grace);
    if (grpc_drain.joinable()) grpc_drain.join();
    s.pool.reset();  // every call has finished: join the threads that ran them
  });
}

std::uint16_t Server::http_port() const noexcept {
  return impl_->http ? impl_->http->port() : 0;
}
std::uint16_t Server::grpc_port() const noexcept {
  return impl_->grpc ? impl_->grpc->port() : 0;
}
Limiter& Server::limiter() {
  return *impl_->limiter;
}
server::RulesManager& Server::rules() {
  return *impl_->rules;
}
server::Metrics& Server::metrics() {
  return impl_->metrics;
}

}  // namespace sluice
