// sluice_noop_server: the ceiling for server benchmarks. The same gRPC service shape (Envoy's
// RateLimitService, on the same raw callback service class) and the same Beast HTTP server as
// `sluice serve`, answering every request OK without deciding anything: what sluice reaches
// relative to it is what deciding costs.
//
//   sluice_noop_server --http-listen 127.0.0.1:9080 --grpc-listen 127.0.0.1:9081
//
// Stops on SIGTERM or SIGINT.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "server/grpc_server.h"
#include "server/http_server.h"

namespace {

namespace rls = envoy::service::ratelimit::v3;

// NoopService answers OK, with an OK status per descriptor, as Envoy expects of a response.
class NoopService final : public sluice::server::RawRateLimitService {
 public:
  grpc::Status answer(const rls::RateLimitRequest& request,
                      rls::RateLimitResponse& response) override {
    response.set_overall_code(rls::RateLimitResponse::OK);
    for (int i = 0; i < request.descriptors_size(); ++i)
      response.add_statuses()->set_code(rls::RateLimitResponse::OK);
    return grpc::Status::OK;
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sluice_noop_server: the transport ceiling for sluice's server benchmarks"};
  std::string http_listen = "127.0.0.1:9080";
  std::string grpc_listen = "127.0.0.1:9081";
  unsigned threads = 0;
  app.add_option("--http-listen", http_listen, "HTTP address (\"off\" turns it off)")
      ->capture_default_str();
  app.add_option("--grpc-listen", grpc_listen, "gRPC address (\"off\" turns it off)")
      ->capture_default_str();
  app.add_option("--http-threads", threads, "HTTP threads (0: one per core)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  using sluice::server::HttpRequest;
  using sluice::server::HttpResponse;
  std::unique_ptr<sluice::server::HttpServer> http;
  if (http_listen != "off") {
    sluice::server::HttpServerOptions o;
    o.listen = http_listen;
    o.threads = threads;
    http = std::make_unique<sluice::server::HttpServer>(o, [](HttpRequest& req) {
      HttpResponse res(sluice::server::http::status::ok, req.version());
      res.set(sluice::server::http::field::content_type, "application/json");
      res.body() = "{\"overallCode\":\"OK\"}\n";
      return res;
    });
    std::string error;
    if (!http->start(error)) {
      std::cerr << error << "\n";
      return 1;
    }
  }
  NoopService service;
  std::unique_ptr<sluice::server::GrpcServer> rls_server;
  if (grpc_listen != "off") {
    rls_server = std::make_unique<sluice::server::GrpcServer>(
        sluice::server::GrpcServerOptions{.listen = grpc_listen});
    std::string error;
    if (!rls_server->start({&service}, error)) {
      std::cerr << error << "\n";
      return 1;
    }
  }
  std::cerr << "noop server: HTTP port " << (http ? http->port() : 0) << ", gRPC port "
            << (rls_server ? rls_server->port() : 0) << "\n";
  int sig = 0;
  sigwait(&signals, &sig);
  if (rls_server) rls_server->shutdown(std::chrono::seconds(2));
  if (http) http->shutdown(std::chrono::seconds(2));
  return 0;
}
