// A real sluice Server in the test process, for the server tests: rules in a temp directory, a
// manual clock, the memory store, HTTP and gRPC on free loopback ports (port 0).
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
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

}  // namespace sluice::testing
