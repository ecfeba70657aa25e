// `sluice serve` as a process: it starts on the defaults' shapes, says where it listens, and
// SIGTERM stops it gracefully (exit 0) after finishing a request in flight.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <thread>

#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "server/fixture_rules.h"
#include "server/server_fixture.h"
#include "support/redis_harness.h"

namespace sluice::testing {
namespace {

using SteadyClock = std::chrono::steady_clock;

// wait_exit() waits (bounded) for `pid` to exit; its wait status, or -1 on timeout.
int wait_exit(pid_t pid, std::chrono::seconds limit) {
  const auto deadline = SteadyClock::now() + limit;
  while (SteadyClock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

TEST(ServeProcess, SigtermStopsGracefullyWithExitZero) {
  TempDir dir;
  const std::string log = dir.path() + "/serve.log";
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::freopen(log.c_str(), "w", stderr);
    std::freopen("/dev/null", "w", stdout);
    ::execl(SLUICE_BIN, SLUICE_BIN, "serve", "--http-listen", "127.0.0.1:0", "--grpc-listen",
            "127.0.0.1:0", nullptr);
    ::_exit(127);
  }
  // It logs where it listens.
  std::smatch m;
  std::string text;
  const std::regex listening("HTTP on 127\\.0\\.0\\.1:([0-9]+), gRPC on 127\\.0\\.0\\.1:([0-9]+)");
  const auto deadline = SteadyClock::now() + std::chrono::seconds(10);
  while (SteadyClock::now() < deadline) {
    std::ifstream in(log);
    text.assign(std::istreambuf_iterator<char>(in), {});
    if (std::regex_search(text, m, listening)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(m.size() == 3) << text;
  const int port = std::stoi(m[1]);
  EXPECT_EQ(http_request(port, "GET", "/healthcheck").status, 200);
  // The embedded example rules serve.
  HttpReply r = http_request(port, "POST", "/v1/check", {},
                             R"({"path": "/login", "data": {"user_id": "42"}})");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("path:/login.user_id"), std::string::npos) << r.body;

  ::kill(pid, SIGTERM);
  const int status = wait_exit(pid, std::chrono::seconds(15));
  if (status == -1) ::kill(pid, SIGKILL), ::waitpid(pid, nullptr, 0);
  ASSERT_TRUE(status != -1 && WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::ifstream in(log);
  text.assign(std::istreambuf_iterator<char>(in), {});
  EXPECT_NE(text.find("SIGTERM: stopping"), std::string::npos) << text;
}

TEST(ServeProcess, BadRulesOrFlagsRefuseToStart) {
  TempDir dir;
  dir.write("bad.yaml", "domain: x\ndescriptors:\n  - key: k\n    rate_limit: {unit: eon}\n");
  const std::string cmd = std::string(SLUICE_BIN) + " serve --config " + dir.path() +
                          " --http-listen 127.0.0.1:0 --grpc-listen off 2>" + dir.path() +
                          "/err.txt";
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string err = dir.read("err.txt");
  EXPECT_NE(err.find("bad.yaml:4:"), std::string::npos) << err;
  const std::string flags =
      std::string(SLUICE_BIN) + " serve --http-listen nonsense --grpc-listen off 2>/dev/null";
  const int flag_status = std::system(flags.c_str());
  ASSERT_TRUE(WIFEXITED(flag_status));
  EXPECT_EQ(WEXITSTATUS(flag_status), 1);
}

// PathRulesOverHttp() is a server on `storage` with kPathRules (written into `dir`), HTTP only,
// on a free loopback port.
ServerOptions PathRulesOverHttp(TempDir& dir, const std::string& storage) {
  dir.write("paths.yaml", kPathRules);
  ServerOptions o;
  o.config = {dir.path()};
  o.storage = storage;
  o.http_listen = "127.0.0.1:0";
  o.grpc_listen = "";
  return o;
}

// A request in flight when the server shuts down is still answered: the store is a Redis that
// does not answer (paused), so the request waits for the store's timeout and is then decided by
// failure_mode while the server drains.
TEST(ServeShutdown, FinishesTheRequestInFlight) {
  RedisServer redis;
  TempDir dir;
  Server server(PathRulesOverHttp(dir, "redis://" + redis.address() + "?timeout_ms=600"));
  std::string error;
  ASSERT_TRUE(server.start(error)) << error;
  const int port = server.http_port();
  ASSERT_EQ(
      http_request(port, "POST", "/v1/check", {}, R"({"path": "/login", "data": {"user_id": "1"}})")
          .status,
      200);
  redis.pause();
  HttpReply in_flight;
  std::string failure;
  std::thread client([&] {
    try {
      in_flight = http_request(port, "POST", "/v1/check", {},
                               R"({"path": "/login", "data": {"user_id": "1"}})");
    } catch (const std::exception& e) {
      failure = e.what();
    }
  });
  // Give the request time to reach the server (it then waits ~600 ms on the paused Redis).
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto start = SteadyClock::now();
  server.shutdown();
  const auto took = SteadyClock::now() - start;
  client.join();
  redis.resume();
  EXPECT_TRUE(failure.empty()) << failure;
  EXPECT_EQ(in_flight.status, 200) << in_flight.body;
  EXPECT_NE(in_flight.body.find("\"allowed\":true"), std::string::npos) << in_flight.body;
  EXPECT_LT(took, std::chrono::seconds(5));
  // After shutdown nothing listens.
  EXPECT_THROW(http_request(port, "GET", "/healthcheck", {}, {}, std::chrono::milliseconds(500)),
               std::runtime_error);
}

// Through a Redis store, gRPC decisions run on the blocking pool: exact all the same, and
// concurrent calls are answered.
TEST(GrpcThroughRedis, DecidesOnThePool) {
  namespace rls = envoy::service::ratelimit::v3;
  RedisServer redis;
  TempDir dir;
  dir.write("test.yaml", kEnvoyRules);
  ServerOptions o;
  o.config = {dir.path()};
  o.storage = "redis://" + redis.address();
  o.http_listen = "";
  o.grpc_listen = "127.0.0.1:0";
  o.store_threads = 4;
  ManualClock clock(kT0);  // one window throughout
  o.clock = &clock;
  Server server(o);
  std::string error;
  ASSERT_TRUE(server.start(error)) << error;
  auto stub = rls::RateLimitService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server.grpc_port()), grpc::InsecureChannelCredentials()));
  rls::RateLimitRequest req;
  req.set_domain("test");
  auto* e = req.add_descriptors()->add_entries();
  e->set_key("key2");
  e->set_value("value2");  // 30 per minute
  std::atomic<int> ok{0}, over{0}, failed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        rls::RateLimitResponse resp;
        if (!stub->ShouldRateLimit(&ctx, req, &resp).ok()) {
          ++failed;
        } else if (resp.overall_code() == rls::RateLimitResponse::OK) {
          ++ok;
        } else {
          ++over;
        }
      }
    });
  }
  for (auto& t : clients)
    t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(ok.load(), 30);
  EXPECT_EQ(over.load(), 10);
}

// --consistency eventual (here through the storage URL, as the flag does): decisions are local,
// exact for one instance, and the replicator's rounds show on /metrics.
TEST(EventualThroughRedis, DecidesLocallyAndSyncs) {
  RedisServer redis;
  TempDir dir;
  Server server(PathRulesOverHttp(
      dir, "redis://" + redis.address() + "?consistency=eventual&sync_interval_ms=20"));
  std::string error;
  ASSERT_TRUE(server.start(error)) << error;
  const int port = server.http_port();
  int allowed = 0;
  for (int i = 0; i < 6; ++i) {
    const HttpReply r = http_request(port, "POST", "/v1/check", {},
                                     R"({"path": "/login", "data": {"user_id": "7"}})");
    if (r.status == 200) ++allowed;
  }
  EXPECT_EQ(allowed, 3);  // 3 per minute
  // Wait (bounded) for a round that reached Redis: rounds run every 20 ms.
  std::string text;
  for (int i = 0; i < 250; ++i) {
    text = http_request(port, "GET", "/metrics").body;
    if (text.find("sluice_sync_rounds_total{result=\"ok\"} 0\n") == std::string::npos &&
        text.find("sluice_sync_rounds_total{result=\"ok\"}") != std::string::npos) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // waiting for a round
  }
  EXPECT_EQ(text.find("sluice_sync_rounds_total{result=\"ok\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("sluice_sync_keys 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("sluice_sync_instances 1\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace sluice::testing
