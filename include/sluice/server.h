// sluice/server.h — `sluice serve` as a library: Envoy's RLS v3 over gRPC and the HTTP API
// (docs/server.md), on a Limiter with live rules, in one object.
//
// Example:
//
//   sluice::ServerOptions options;
//   options.config = {"/etc/sluice/rules"};
//   options.storage = "redis://127.0.0.1:6379";
//   sluice::Server server(options);
//   std::string error;
//   if (!server.start(error)) { std::cerr << error; return 1; }
//   ...                      // serves on its own threads
//   server.shutdown();       // finishes what is in flight
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "sluice/clock.h"
#include "sluice/limiter.h"
#include "sluice/store.h"

namespace sluice {

namespace server {
class RulesManager;
class Metrics;
}  // namespace server

// AuthzOptions says where /v1/authz finds the original request. Header names are
// case-insensitive; the first present header of each list wins.
struct AuthzOptions {
  std::vector<std::string> uri_headers = {"X-Original-URI", "X-Forwarded-Uri"};
  // From X-Forwarded-For the last address is taken: the one the gateway itself saw (earlier
  // ones are whatever the client claimed).
  std::vector<std::string> ip_headers = {"X-Real-IP", "X-Forwarded-For"};
  std::vector<std::string> method_headers = {"X-Original-Method", "X-Forwarded-Method"};
  std::vector<std::string> host_headers = {"X-Forwarded-Host", "Host"};
  // More request data from headers: {data key, header name}, e.g. {"user_id", "X-User-Id"}.
  std::vector<std::pair<std::string, std::string>> data_headers;
  // The status that denies (nginx's auth_request passes only 401 and 403 through).
  unsigned deny_status = 429;
};

struct ServerOptions {
  // Rule files and directories; empty serves the example rules built into the binary. The
  // admin API can change rules only when this is one directory.
  std::vector<std::string> config;
  std::string storage = "memory://";           // a storage URL (sluice/storage.h)
  std::string http_listen = "127.0.0.1:8080";  // "" turns HTTP off; port 0 picks one
  std::string grpc_listen = "127.0.0.1:8081";  // "" turns gRPC off; port 0 picks one
  std::string admin_token;                     // "" turns the admin API off
  std::size_t max_body_bytes = 1 << 20;        // larger bodies (and gRPC messages) are refused
  unsigned http_threads = 0;                   // 0: one per core
  // The time an HTTP connection has to deliver a complete request (headers and body) after it
  // opened or was last answered: idle keep-alive connections are then closed, slow ones answered
  // 408 and closed (HttpServerOptions::idle_timeout).
  std::chrono::milliseconds http_idle_timeout{60'000};
  // gRPC: a connection that has not completed its HTTP/2 handshake within this time is closed,
  // and one with no call for this long gets a GOAWAY. 0 keeps gRPC's defaults (handshake within
  // 120 s, connections without calls kept).
  std::chrono::milliseconds grpc_idle_timeout{0};
  // TLS for both HTTP (HTTPS) and gRPC when cert and key are set: PEM files, read at start();
  // TLS 1.2 or later. With tls_client_ca, clients must present a certificate those CAs signed
  // (mutual TLS). docs/server.md, "TLS".
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  // Decisions through a remote store (Redis) run on this many threads, which wait for its
  // answers; with the memory store they run on the gRPC and HTTP threads themselves.
  unsigned store_threads = 64;
  std::chrono::milliseconds watch_interval{250};  // how often rule files are checked; 0: never
  std::chrono::milliseconds shutdown_grace{10'000};
  AuthzOptions authz;
  // For tests and embedding: a clock (default: the system clock) and a store (default: opened
  // from `storage`). Both must outlive the Server.
  const Clock* clock = nullptr;
  Store* store = nullptr;
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();  // shuts down
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // start() opens the store, loads the rules and starts listening. False with `error` (every
  // rule error, one per line) when it cannot.
  bool start(std::string& error);
  // shutdown() stops accepting, finishes what is in flight (up to shutdown_grace), and stops.
  // Idempotent.
  void shutdown();

  std::uint16_t http_port() const noexcept;
  std::uint16_t grpc_port() const noexcept;
  Limiter& limiter();
  server::RulesManager& rules();
  server::Metrics& metrics();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sluice
