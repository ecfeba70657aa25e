// A real sluice Server in the test process, for the server tests: rules in a temp directory, a
// manual clock, the memory store, HTTP and gRPC on free loopback ports (port 0).
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "sluice/clock.h"
#include "sluice/memory_store.h"
#include "sluice/server.h"
#include "support/nginx_harness.h"

namespace sluice::testing {

inline constexpr Micros kT0 = seconds_to_micros(1'700'000'000);
inline constexpr const char* kToken = "s3cret-token";

// TempDir is a directory removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "sluice-rules-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // write() writes a file in place (not atomically, as an editor might).
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ + "/" + name, std::ios::trunc) << text;
  }
  // replace() writes a file atomically: a hidden temporary file renamed over it.
  void replace(const std::string& name, const std::string& text) const {
    const std::string tmp = path_ + "/." + name + ".tmp";
    std::ofstream(tmp, std::ios::trunc) << text;
    std::filesystem::rename(tmp, path_ + "/" + name);
  }
  std::string read(const std::string& name) const {
    std::ifstream in(path_ + "/" + name);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  bool exists(const std::string& name) const { return std::filesystem::exists(path_ + "/" + name); }

 private:
  std::string path_;
};

// ServerHarness starts a Server over `dir` with a manual clock.
class ServerHarness {
 public:
  explicit ServerHarness(const std::string& dir, ServerOptions options = {}) {
    options.config = {dir};
    options.http_listen = "127.0.0.1:0";
    options.grpc_listen = "127.0.0.1:0";
    if (options.admin_token.empty()) options.admin_token = kToken;
    options.clock = &clock;
    options.store = &store;
    options.http_threads = 2;
    server = std::make_unique<Server>(options);
    std::string error;
    if (!server->start(error)) throw std::runtime_error("server did not start: " + error);
  }
  ~ServerHarness() { server->shutdown(); }

  int http_port() const { return server->http_port(); }
  std::string grpc_address() const { return "127.0.0.1:" + std::to_string(server->grpc_port()); }

  HttpReply post(const std::string& target, const std::string& body,
                 std::vector<std::pair<std::string, std::string>> headers = {}) const {
    headers.emplace_back("Content-Type", "application/json");
    return http_request(http_port(), "POST", target, headers, body);
  }
  HttpReply admin(const std::string& method, const std::string& target,
                  const std::string& body = "", const std::string& token = kToken) const {
    std::vector<std::pair<std::string, std::string>> headers;
    if (!token.empty()) headers.emplace_back("Authorization", "Bearer " + token);
    return http_request(http_port(), method, target, headers, body);
  }

  ManualClock clock{kT0};
  MemoryStore store;
  std::unique_ptr<Server> server;
};

// envoy_json() is a one-descriptor Envoy request in proto3 JSON.
inline std::string envoy_json(const std::string& domain,
                              const std::vector<std::pair<std::string, std::string>>& entries) {
  nlohmann::json d{{"entries", nlohmann::json::array()}};
  for (const auto& [k, v] : entries)
    d["entries"].push_back({{"key", k}, {"value", v}});
  return nlohmann::json{{"domain", domain}, {"descriptors", {d}}}.dump();
}

// eventually() polls `done` every 10 ms until it holds or `bound` has passed (waiting for a
// watcher or a process, never for a limit's window); whether it held.
inline bool eventually(const std::function<bool()>& done,
                       std::chrono::milliseconds bound = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (!done() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return done();
}

// live_rules() is the rule file of domain "live": key k, `limit` per minute.
inline std::string live_rules(int limit) {
  return "domain: live\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute, "
         "requests_per_unit: " +
         std::to_string(limit) + "}\n";
}

// current_limit() asks /json on 127.0.0.1:port, without consuming, which requests_per_unit applies
// to `domain` with key=probe now (-1 on failure, or when none applies).
inline int current_limit(int port, const std::string& domain, const std::string& key) {
  nlohmann::json req = nlohmann::json::parse(envoy_json(domain, {{key, "probe"}}));
  req["descriptors"][0]["hitsAddend"] = 0;
  HttpReply r =
      http_request(port, "POST", "/json", {{"Content-Type", "application/json"}}, req.dump());
  if (r.status != 200) return -1;
  nlohmann::json j = nlohmann::json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j.contains("statuses") || j["statuses"].empty() ||
      !j["statuses"][0].contains("currentLimit")) {
    return -1;  // no limit applies
  }
  return j["statuses"][0]["currentLimit"].value("requestsPerUnit", -1);
}

// reload_errors() reads sluice_rule_reloads_total{result="error"} from /metrics on
// 127.0.0.1:port (-1 if absent).
inline long reload_errors(int port) {
  const std::string text = http_request(port, "GET", "/metrics").body;
  const std::string series = "sluice_rule_reloads_total{result=\"error\"} ";
  const std::size_t at = text.find(series);
  return at == std::string::npos ? -1 : std::stol(text.substr(at + series.size()));
}

}  // namespace sluice::testing
