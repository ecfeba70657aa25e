// InProcessApi: the HTTP API's handler (server::HttpApi) over the example rules, in this process
// and without sockets, for tests and fuzz targets that drive request handling directly: the
// example rule files (examples/envoy.yaml and paths.yaml, as built into the binary) copied into a
// temporary directory the admin API can change, the memory store and a manual clock.
#pragma once

#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "server/embedded_rules.h"
#include "server/http_api.h"
#include "sluice/memory_store.h"

namespace sluice::testing {

class InProcessApi {
 public:
  static constexpr const char* kToken = "in-process-token";

  // The rules directory goes under `parent` (/dev/shm, where fsync costs nothing, when it
  // exists; else the temporary directory).
  InProcessApi() {
    std::error_code ec;
    const std::filesystem::path parent = std::filesystem::is_directory("/dev/shm", ec)
                                             ? std::filesystem::path("/dev/shm")
                                             : std::filesystem::temp_directory_path();
    std::string pattern = (parent / "sluice-api-rules-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = pattern;
    for (const server::EmbeddedRuleFile& f : server::embedded_rules()) {
      std::ofstream(dir_ + "/" + f.name.substr(f.name.find(':') + 1)) << f.text;
    }
    rules_ = std::make_unique<server::RulesManager>(
        std::vector<std::string>{dir_},
        [this](const std::shared_ptr<const RuleSet>& set) { limiter_.set_rules(set); }, &metrics_);
    std::vector<ConfigError> errors;
    if (!rules_->load(errors)) throw std::runtime_error("the example rules do not load");
    api_ = std::make_unique<server::HttpApi>(server::HttpApiOptions{.admin_token = kToken},
                                             limiter_, *rules_, metrics_, serving_);
  }
  ~InProcessApi() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  InProcessApi(const InProcessApi&) = delete;
  InProcessApi& operator=(const InProcessApi&) = delete;

  // call() hands one request to HttpApi::handle(), with the admin token on /v1/rules.
  server::HttpResponse call(server::http::verb method, std::string_view target,
                            std::string_view body = {}) {
    server::HttpRequest request(method, target, 11);
    if (target.starts_with("/v1/rules")) {
      request.set(server::http::field::authorization, std::string("Bearer ") + kToken);
    }
    request.body() = std::string(body);
    request.prepare_payload();
    return api_->handle(request);
  }

  const std::string& dir() const { return dir_; }
  ManualClock& clock() { return clock_; }
  server::RulesManager& rules() { return *rules_; }

 private:
  std::string dir_;
  ManualClock clock_{seconds_to_micros(1'700'000'000)};
  MemoryStore store_{{.max_keys = 1 << 16, .shards = 4}};
  Limiter limiter_{RuleSet::empty(), store_, clock_};
  server::Metrics metrics_;
  std::atomic<bool> serving_{true};
  std::unique_ptr<server::RulesManager> rules_;
  std::unique_ptr<server::HttpApi> api_;
};

}  // namespace sluice::testing
