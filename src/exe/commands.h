// The `sluice` command line: serve, validate, check, replay, demo, version.
//
//   sluice validate PATH...                 load rule files as one snapshot, report every error
//   sluice check --config PATH ...          decide one request (or --times N of them) now
//   sluice replay --config PATH --trace F   decide a JSON-lines trace on a manual clock
//   sluice demo [--config examples]         the four algorithms side by side on the same hits
//   sluice serve [--config PATH] ...        the server: gRPC (Envoy RLS v3) and HTTP
//   sluice version                          print the version
//
// Exit codes: 0 success (a denied request is still a success), 1 bad rules, bad trace or bad
// argument values, 2 unknown commands or flags (the command line itself could not be parsed).
#pragma once

#include <CLI/CLI.hpp>
#include <cstddef>
#include <string>
#include <vector>

namespace sluice::cli {

// ServeCommand is `sluice serve`'s command line (src/exe/serve.cc).
struct ServeCommand {
  CLI::App* app = nullptr;
  std::vector<std::string> config;
  std::string storage = "memory://";
  std::string http_listen = "127.0.0.1:8080";
  std::string grpc_listen = "127.0.0.1:8081";
  std::string admin_token;
  std::size_t max_body_bytes = 1 << 20;
  unsigned http_threads = 0;
  unsigned store_threads = 64;
  std::string consistency;   // "", strong or eventual
  int sync_interval_ms = 0;  // 0: the storage URL's (default 100)
  double local_share = 0;    // 0: the storage URL's (default 1/instances)
  int watch_interval_ms = 250;
  int shutdown_grace_ms = 10'000;
  int http_idle_timeout_ms = 60'000;
  int grpc_idle_timeout_ms = 0;
  std::string tls_cert;  // PEM; with tls_key: HTTPS and gRPC over TLS
  std::string tls_key;
  std::string tls_client_ca;  // PEM CAs: clients must present a certificate they signed
  unsigned authz_deny_status = 429;
  std::vector<std::string> authz_uri_headers;
  std::vector<std::string> authz_ip_headers;
  std::vector<std::string> authz_data;
  std::string log_level = "info";
};

void add_serve_command(CLI::App& app, ServeCommand& cmd);
int run_serve(const ServeCommand& cmd);

// main() parses argv and runs one command; returns the process exit code. Writes results to
// stdout and errors to stderr.
int main(int argc, char** argv);

}  // namespace sluice::cli
