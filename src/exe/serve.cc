// `sluice serve`: the server, with every flag also read from the environment.
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "exe/commands.h"
#include "sluice/server.h"

namespace sluice::cli {

namespace {

// split_header_list() reads "A,B" (an environment variable) or repeated flags into names.
std::vector<std::string> split_list(const std::vector<std::string>& values) {
  std::vector<std::string> out;
  for (const std::string& v : values) {
    std::size_t start = 0;
    while (start <= v.size()) {
      const std::size_t comma = v.find(',', start);
      std::string item =
          v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      if (!item.empty()) out.push_back(item);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  return out;
}

std::string off_if_empty(const std::string& listen) {
  return listen == "off" ? "" : listen;
}

// with_sync_options() adds --consistency, --sync-interval-ms and --local-share to a Redis storage
// URL's options (where they override the URL's own). The memory store is one process: they do
// not apply to it.
std::string with_sync_options(const ServeCommand& cmd) {
  std::string url = cmd.storage;
  if (url.rfind("redis", 0) != 0) return url;
  std::vector<std::string> options;
  if (!cmd.consistency.empty()) options.push_back("consistency=" + cmd.consistency);
  if (cmd.sync_interval_ms > 0) {
    options.push_back("sync_interval_ms=" + std::to_string(cmd.sync_interval_ms));
  }
  if (cmd.local_share > 0) {
    char share[32];
    std::snprintf(share, sizeof share, "%.6g", cmd.local_share);
    options.push_back(std::string("local_share=") + share);
  }
  for (const std::string& option : options) {
    url += url.find('?') == std::string::npos ? '?' : '&';
    url += option;
  }
  return url;
}

}  // namespace

void add_serve_command(CLI::App& app, ServeCommand& cmd) {
  cmd.app = app.add_subcommand(
      "serve",
      "Run the server: Envoy's rate-limit service over gRPC, and the HTTP API (/json, /v1/check, "
      "/v1/authz, /v1/rules, /metrics, /healthcheck). SIGTERM or SIGINT stops it gracefully");
  CLI::App* s = cmd.app;
  s->add_option("-c,--config", cmd.config,
                "Rule file or directory (repeatable; all load as one snapshot, reloaded when they "
                "change). Default: the example rules built into the binary. The admin API can "
                "change rules only when this is one directory")
      ->envname("SLUICE_CONFIG")
      ->allow_extra_args(false);
  s->add_option("-s,--storage", cmd.storage,
                "Where limits keep their state: memory://, redis://host:port, "
                "redis+cluster://host:port,... (docs/storage.md)")
      ->envname("SLUICE_STORAGE")
      ->capture_default_str();
  s->add_option("--http-listen", cmd.http_listen, "HTTP address host:port (\"off\" turns HTTP off)")
      ->envname("SLUICE_HTTP_LISTEN")
      ->capture_default_str();
  s->add_option("--grpc-listen", cmd.grpc_listen, "gRPC address host:port (\"off\" turns gRPC off)")
      ->envname("SLUICE_GRPC_LISTEN")
      ->capture_default_str();
  s->add_option("--admin-token", cmd.admin_token,
                "Bearer token of the admin API (/v1/rules); without one the admin API is off")
      ->envname("SLUICE_ADMIN_TOKEN");
  s->add_option("--max-body-bytes", cmd.max_body_bytes,
                "Largest HTTP body or gRPC message accepted; larger ones are refused (413)")
      ->envname("SLUICE_MAX_BODY_BYTES")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 30))
      ->capture_default_str();
  s->add_option("--http-threads", cmd.http_threads, "HTTP threads (0: one per core)")
      ->envname("SLUICE_HTTP_THREADS")
      ->check(CLI::Range(0u, 1024u))
      ->capture_default_str();
  s->add_option("--store-threads", cmd.store_threads,
                "Threads for decisions through a remote store (Redis), which wait for its "
                "answers; with the memory store gRPC and HTTP decide on their own threads")
      ->envname("SLUICE_STORE_THREADS")
      ->check(CLI::Range(1u, 4096u))
      ->capture_default_str();
  s->add_option("--consistency", cmd.consistency,
                "With Redis: how limits that do not name a consistency are shared between "
                "instances: strong (every decision atomic in Redis; the default) or eventual "
                "(decided locally, synced every --sync-interval-ms). docs/deployment.md")
      ->envname("SLUICE_CONSISTENCY")
      ->check(CLI::IsMember({"strong", "eventual"}));
  s->add_option("--sync-interval-ms", cmd.sync_interval_ms,
                "Eventual consistency: how often instances exchange their consumption through "
                "Redis (default 100)")
      ->envname("SLUICE_SYNC_INTERVAL_MS")
      ->check(CLI::Range(1, 60'000));
  s->add_option("--local-share", cmd.local_share,
                "Eventual consistency: the share of a limit one instance admits on its own (a key "
                "it has not synced yet, Redis unreachable), above 0 and at most 1 (default "
                "1/instances, counted through Redis)")
      ->envname("SLUICE_LOCAL_SHARE")
      ->check(CLI::Range(0.000001, 1.0));
  s->add_option("--watch-interval-ms", cmd.watch_interval_ms,
                "How often the rule files are checked for changes (0: never)")
      ->envname("SLUICE_WATCH_INTERVAL_MS")
      ->check(CLI::Range(0, 3'600'000))
      ->capture_default_str();
  s->add_option("--shutdown-grace-ms", cmd.shutdown_grace_ms,
                "On SIGTERM, how long requests in flight may take to finish")
      ->envname("SLUICE_SHUTDOWN_GRACE_MS")
      ->check(CLI::Range(0, 3'600'000))
      ->capture_default_str();
  s->add_option("--http-idle-timeout-ms", cmd.http_idle_timeout_ms,
                "How long an HTTP connection may take to deliver a complete request after it "
                "opened or was last answered; then an idle one is closed and one that sent part "
                "of a request is answered 408 and closed")
      ->envname("SLUICE_HTTP_IDLE_TIMEOUT_MS")
      ->check(CLI::Range(1, 3'600'000))
      ->capture_default_str();
  s->add_option("--grpc-idle-timeout-ms", cmd.grpc_idle_timeout_ms,
                "gRPC: close connections that have not completed their HTTP/2 handshake within "
                "this time, and send GOAWAY to those without a call for this long (0: gRPC's "
                "defaults, a 120 s handshake and no idle limit)")
      ->envname("SLUICE_GRPC_IDLE_TIMEOUT_MS")
      ->check(CLI::Range(0, 3'600'000))
      ->capture_default_str();
  s->add_option("--tls-cert", cmd.tls_cert,
                "PEM certificate chain: with --tls-key, serve HTTPS and gRPC over TLS (1.2+)")
      ->envname("SLUICE_TLS_CERT");
  s->add_option("--tls-key", cmd.tls_key, "PEM private key of --tls-cert")
      ->envname("SLUICE_TLS_KEY");
  s->add_option("--tls-client-ca", cmd.tls_client_ca,
                "PEM CAs: with TLS, require clients (HTTPS and gRPC) to present a certificate "
                "they signed (mutual TLS)")
      ->envname("SLUICE_TLS_CLIENT_CA");
  s->add_option("--authz-deny-status", cmd.authz_deny_status,
                "Status /v1/authz denies with (nginx's auth_request needs 403 or 401)")
      ->envname("SLUICE_AUTHZ_DENY_STATUS")
      ->check(CLI::Range(400u, 599u))
      ->capture_default_str();
  s->add_option("--authz-uri-header", cmd.authz_uri_headers,
                "Headers holding the original URI, first present wins (repeatable or "
                "comma-separated; default X-Original-URI,X-Forwarded-Uri)")
      ->envname("SLUICE_AUTHZ_URI_HEADERS")
      ->allow_extra_args(false);
  s->add_option("--authz-ip-header", cmd.authz_ip_headers,
                "Headers holding the client address (default X-Real-IP,X-Forwarded-For; of "
                "X-Forwarded-For the last address is used)")
      ->envname("SLUICE_AUTHZ_IP_HEADERS")
      ->allow_extra_args(false);
  s->add_option("--authz-data", cmd.authz_data,
                "More data for path rules from headers: key=Header-Name (repeatable or "
                "comma-separated), e.g. user_id=X-User-Id")
      ->envname("SLUICE_AUTHZ_DATA")
      ->allow_extra_args(false);
  s->add_option("--log-level", cmd.log_level, "trace, debug, info, warn, error or off")
      ->envname("SLUICE_LOG_LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
      ->capture_default_str();
}

int run_serve(const ServeCommand& cmd) {
  auto logger = spdlog::stderr_color_mt("sluice");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %v");
  spdlog::set_level(spdlog::level::from_str(cmd.log_level));

  ServerOptions o;
  o.config = cmd.config;
  o.storage = with_sync_options(cmd);
  o.http_listen = off_if_empty(cmd.http_listen);
  o.grpc_listen = off_if_empty(cmd.grpc_listen);
  o.admin_token = cmd.admin_token;
  o.max_body_bytes = cmd.max_body_bytes;
  o.http_threads = cmd.http_threads;
  o.store_threads = cmd.store_threads;
  o.watch_interval = std::chrono::milliseconds(cmd.watch_interval_ms);
  o.shutdown_grace = std::chrono::milliseconds(cmd.shutdown_grace_ms);
  o.http_idle_timeout = std::chrono::milliseconds(cmd.http_idle_timeout_ms);
  o.grpc_idle_timeout = std::chrono::milliseconds(cmd.grpc_idle_timeout_ms);
  o.tls_cert_file = cmd.tls_cert;
  o.tls_key_file = cmd.tls_key;
  o.tls_client_ca_file = cmd.tls_client_ca;
  o.authz.deny_status = cmd.authz_deny_status;
  if (!cmd.authz_uri_headers.empty()) o.authz.uri_headers = split_list(cmd.authz_uri_headers);
  if (!cmd.authz_ip_headers.empty()) o.authz.ip_headers = split_list(cmd.authz_ip_headers);
  for (const std::string& item : split_list(cmd.authz_data)) {
    const std::size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size()) {
      std::cerr << "sluice serve: --authz-data \"" << item << "\": expected key=Header-Name\n";
      return 1;
    }
    o.authz.data_headers.emplace_back(item.substr(0, eq), item.substr(eq + 1));
  }
  if (o.http_listen.empty() && o.grpc_listen.empty()) {
    std::cerr << "sluice serve: both --http-listen and --grpc-listen are off\n";
    return 1;
  }

  // Each connection is a descriptor: raise the soft limit to the hard one (often 1,024 against
  // 1,048,576), as nginx's worker_rlimit_nofile and Go's runtime do, so that a thousand clients
  // do not exhaust it.
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }

  // SIGTERM and SIGINT are taken by sigwait() below: blocked here, before any thread starts, so
  // every thread inherits the mask and none is interrupted.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Server server(o);
  std::string error;
  if (!server.start(error)) {
    spdlog::error("cannot start: {}", error);
    return 1;
  }
  std::string where;
  if (server.http_port() != 0) {
    const std::string host = o.http_listen.substr(0, o.http_listen.rfind(':'));
    where += fmt::format("HTTP on {}:{}", host.empty() ? "0.0.0.0" : host, server.http_port());
  }
  if (server.grpc_port() != 0) {
    const std::string host = o.grpc_listen.substr(0, o.grpc_listen.rfind(':'));
    where += fmt::format("{}gRPC on {}:{}", where.empty() ? "" : ", ",
                         host.empty() ? "0.0.0.0" : host, server.grpc_port());
  }
  spdlog::info("sluice {} serving: {}{}; storage {}; admin API {}", SLUICE_VERSION, where,
               o.tls_cert_file.empty() ? "" : " (TLS)", o.storage,
               o.admin_token.empty() ? "off" : "on");
  if (server.http_port() != 0) {
    const std::string host = o.http_listen.substr(0, o.http_listen.rfind(':'));
    const std::string base =
        fmt::format("{}://{}:{}", o.tls_cert_file.empty() ? "http" : "https",
                    host.empty() || host == "0.0.0.0" ? "127.0.0.1" : host, server.http_port());
    std::cout << "Try:\n  curl -i " << base
              << "/v1/check -d '{\"path\": \"/login\", \"data\": {\"user_id\": \"42\"}}'\n"
              << "  curl -i " << base
              << "/json -d '{\"domain\": \"edge_proxy\", \"descriptors\": [{\"entries\": "
                 "[{\"key\": \"remote_address\", \"value\": \"203.0.113.9\"}]}]}'\n"
              << "Stop with Ctrl-C.\n"
              << std::flush;
  }

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("{}: stopping (finishing requests in flight)",
               sig == SIGTERM ? "SIGTERM" : "SIGINT");
  server.shutdown();
  spdlog::info("stopped");
  return 0;
}

}  // namespace sluice::cli
