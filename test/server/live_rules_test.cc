// Live rules: hot reload under load (files and the API, 50 changes, none failing a request,
// each visible within a second, bad ones refused), and a restart keeping what the API changed.
#include <atomic>
#include <chrono>
#include <thread>

#include "server/fixture_rules.h"
#include "server/rules_manager.h"
#include "server/server_fixture.h"

namespace sluice::testing {
namespace {

using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

// current_limit() asks, without consuming, which limit applies to live/k now (-1 on failure).
int current_limit(const ServerHarness& h) {
  return testing::current_limit(h.http_port(), "live", "k");
}

// reload_errors() reads sluice_rule_reloads_total{result="error"} from /metrics.
long reload_errors(const ServerHarness& h) {
  return testing::reload_errors(h.http_port());
}

// wait_for_limit() polls until `limit` applies; returns how long it took (or a huge value).
std::chrono::milliseconds wait_for_limit(const ServerHarness& h, int limit) {
  const auto start = SteadyClock::now();
  while (SteadyClock::now() - start < std::chrono::seconds(5)) {
    if (current_limit(h) == limit)
      return std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - start);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return std::chrono::hours(1);
}

TEST(LiveRules, FiftyChangesUnderLoadByFileAndApi) {
  TempDir dir;
  dir.write("live.yaml", live_rules(1000));
  ServerHarness h(dir.path());  // the default watch interval (250 ms)

  // The load: two clients deciding all along, each on a connection per request.
  std::atomic<bool> stop{false};
  std::atomic<int> decided{0}, failed{0};
  std::string failure;
  std::mutex failure_mu;
  std::vector<std::thread> clients;
  for (int c = 0; c < 2; ++c) {
    clients.emplace_back([&, c] {
      const std::string body = envoy_json("live", {{"k", "client" + std::to_string(c)}});
      while (!stop.load()) {
        try {
          HttpReply r = h.post("/json", body);
          if (r.status == 200 || r.status == 429) {
            ++decided;
            continue;
          }
          std::lock_guard<std::mutex> lock(failure_mu);
          failure = std::to_string(r.status) + " " + r.body;
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> lock(failure_mu);
          failure = e.what();
        }
        ++failed;
      }
    });
  }

  std::chrono::milliseconds slowest{0};
  for (int i = 1; i <= 50; ++i) {
    const int limit = 1000 + i;
    if (i % 2 == 0) {
      HttpReply r = h.admin("PUT", "/v1/rules/live", live_rules(limit));
      ASSERT_EQ(r.status, 200) << r.body;
    } else if (i % 4 == 1) {
      dir.replace("live.yaml", live_rules(limit));  // atomically, as a deploy tool does
    } else {
      dir.write("live.yaml", live_rules(limit));  // in place, as an editor does
    }
    const auto took = wait_for_limit(h, limit);
    ASSERT_LE(took, std::chrono::seconds(1)) << "change " << i << " was not visible within 1 s";
    slowest = std::max(slowest, took);

    if (i == 20) {  // a bad change by API: refused, the running rules stay
      HttpReply bad = h.admin("PUT", "/v1/rules/live", "domain: live\ndescriptors: 7\n");
      EXPECT_EQ(bad.status, 400) << bad.body;
      EXPECT_EQ(current_limit(h), limit);
    }
    if (i == 30) {  // a bad change by file: logged, the running rules stay
      const std::uint64_t generation = h.server->rules().generation();
      const long errors = reload_errors(h);
      dir.replace("live.yaml",
                  "domain: live\ndescriptors:\n  - key: k\n    rate_limit: {unit: "
                  "minute, requests_per_unit: -1}\n");
      const auto deadline = SteadyClock::now() + std::chrono::seconds(5);
      while (SteadyClock::now() < deadline && reload_errors(h) == errors)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      EXPECT_GT(reload_errors(h), errors) << "the bad file was seen and refused";
      EXPECT_EQ(h.server->rules().generation(), generation);
      EXPECT_EQ(current_limit(h), limit);
    }
  }
  stop.store(true);
  for (auto& t : clients)
    t.join();
  EXPECT_EQ(failed.load(), 0) << failure;
  EXPECT_GT(decided.load(), 100);
  std::printf("50 changes, slowest visible after %lld ms; %d decisions, %d failed\n",
              static_cast<long long>(slowest.count()), decided.load(), failed.load());
}

TEST(LiveRules, ARestartKeepsWhatTheApiChanged) {
  TempDir dir;
  dir.write("test.yaml", kEnvoyRules);
  {
    ServerHarness h(dir.path());
    ASSERT_EQ(h.admin("PUT", "/v1/rules/test", kEnvoyRulesTight).status, 200);
    ASSERT_EQ(h.admin("PUT", "/v1/rules/other", kEnvoyRulesOther).status, 201);
    ASSERT_EQ(h.admin("PUT", "/v1/rules/live", live_rules(7)).status, 201);
    ASSERT_EQ(h.admin("DELETE", "/v1/rules/live").status, 200);
  }
  ServerHarness again(dir.path());
  EXPECT_EQ(again.admin("GET", "/v1/rules/test").body, kEnvoyRulesTight);
  EXPECT_EQ(again.admin("GET", "/v1/rules/other").body, kEnvoyRulesOther);
  EXPECT_EQ(again.admin("GET", "/v1/rules/live").status, 404);
  json list = json::parse(again.admin("GET", "/v1/rules").body);
  EXPECT_EQ(list["files"].size(), 2u);
  EXPECT_EQ(again.post("/json", envoy_json("test", {{"key2", "value2"}})).status, 200);
  EXPECT_EQ(again.post("/json", envoy_json("test", {{"key2", "value2"}})).status, 429);
  // No temporary file is left behind.
  for (const auto& entry : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
}

TEST(LiveRules, EmbeddedRulesCannotBeChangedThroughTheApi) {
  ServerOptions o;
  o.http_listen = "127.0.0.1:0";
  o.grpc_listen = "";
  o.admin_token = kToken;
  Server server(o);
  std::string error;
  ASSERT_TRUE(server.start(error)) << error;
  HttpReply r = http_request(server.http_port(), "PUT", "/v1/rules/edge_proxy",
                             {{"Authorization", std::string("Bearer ") + kToken}}, kEnvoyRules);
  EXPECT_EQ(r.status, 409);
  EXPECT_NE(r.body.find("--config DIR"), std::string::npos) << r.body;
  HttpReply list = http_request(server.http_port(), "GET", "/v1/rules",
                                {{"Authorization", std::string("Bearer ") + kToken}});
  EXPECT_NE(list.body.find("edge_proxy"), std::string::npos) << list.body;
}

}  // namespace
}  // namespace sluice::testing
