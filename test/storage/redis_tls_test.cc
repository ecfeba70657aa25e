// rediss://: the Redis client and store over TLS, against a real redis-server listening with
// --tls-port and requiring client certificates (--tls-auth-clients yes), with certificates made
// at test time (support/test_certs.h).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "sluice/limiter.h"
#include "sluice/storage.h"
#include "storage/redis/client.h"
#include "support/failure_mode_rules.h"
#include "support/harness_common.h"
#include "support/redis_harness.h"
#include "support/test_certs.h"

namespace sluice {
namespace {

using std::chrono::milliseconds;
using testing::TestCerts;
constexpr Micros kT0 = seconds_to_micros(1'700'000'000);

// 3 per minute on each of two keys, one failing open and one closed.
std::shared_ptr<const RuleSet> Rules() {
  return testing::OpenAndClosedRules("tls", 3, Unit::kMinute, Algorithm::kFixedWindow);
}

Request Hit(std::string key) {
  return Request{"tls", {Descriptor{{{std::move(key), "u"}}, {}, {}}}, 1};
}

// The arguments that give a redis-server a TLS port beside its plain one, requiring clients to
// present a certificate the test CA signed.
std::vector<std::string> TlsPortArgs(const TestCerts& certs, int tls_port) {
  return {"--tls-port",         std::to_string(tls_port),
          "--tls-cert-file",    certs.server_cert(),
          "--tls-key-file",     certs.server_key(),
          "--tls-ca-cert-file", certs.ca(),
          "--tls-auth-clients", "yes"};
}

// The query of a rediss URL: CA `ca`, the test client's certificate, short timeouts, no cache.
std::string TlsQuery(const TestCerts& certs, const std::string& ca, int timeout_ms) {
  const std::string t = std::to_string(timeout_ms);
  return "?tls_ca=" + ca + "&tls_cert=" + certs.client_cert() + "&tls_key=" + certs.client_key() +
         "&timeout_ms=" + t + "&connect_timeout_ms=" + t + "&over_limit_cache=off";
}

// A redis-server with a TLS port beside its plain one (the harness checks readiness over the
// plain one); clients on the TLS port must present a certificate the test CA signed.
class RedisTls : public ::testing::Test {
 protected:
  static testing::RedisServer::Options ServerOptions(const TestCerts& certs, int tls_port) {
    testing::RedisServer::Options o;
    o.extra_args = TlsPortArgs(certs, tls_port);
    return o;
  }

  redis::ClientOptions ClientOptions() const {
    redis::ClientOptions o;
    o.endpoint = redis::Endpoint{"127.0.0.1", tls_port_, ""};
    o.connections = 1;
    o.connect_timeout = milliseconds(2000);
    o.command_timeout = milliseconds(2000);
    o.tls.enabled = true;
    o.tls.ca_file = certs_.ca();
    o.tls.cert_file = certs_.client_cert();
    o.tls.key_file = certs_.client_key();
    return o;
  }

  std::string Url(const std::string& ca) const {
    return "rediss://127.0.0.1:" + std::to_string(tls_port_) + TlsQuery(certs_, ca, 500);
  }

  TestCerts certs_;
  int tls_port_ = testing::harness::pick_port();
  testing::RedisServer server_{ServerOptions(certs_, tls_port_)};
  ManualClock clock_{kT0};
};

TEST_F(RedisTls, ClientVerifiesTheServerAndPresentsItsCertificate) {
  redis::Client client(ClientOptions());
  const redis::CommandResult r = client.command({"PING"});
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  EXPECT_EQ(r.reply.str, "PONG");
  EXPECT_TRUE(client.command({"SET", "over-tls", "1"}).status.ok());
  // The same server's plain port sees what went over TLS.
  EXPECT_EQ(server_.command({"GET", "over-tls"}), "1");
}

TEST_F(RedisTls, StoreDecidesThroughARedissUrl) {
  std::string error;
  std::unique_ptr<Store> store = open_store(Url(certs_.ca()), error);
  ASSERT_NE(store, nullptr) << error;
  Limiter limiter(Rules(), *store, clock_);
  for (int i = 0; i < 3; ++i) {
    const Decision d = limiter.decide(Hit("closed"));
    EXPECT_TRUE(d.allowed) << i << ": " << d.error;
    EXPECT_TRUE(d.error.empty()) << d.error;
  }
  const Decision fourth = limiter.decide(Hit("closed"));
  EXPECT_FALSE(fourth.allowed);
  EXPECT_TRUE(fourth.error.empty()) << "denied by the limit, not by a failure: " << fourth.error;
  EXPECT_EQ(limiter.store_failures(), 0u);
}

TEST_F(RedisTls, WrongCaFailsWithAClearErrorAndFailureModesDecide) {
  redis::ClientOptions o = ClientOptions();
  o.tls.ca_file = certs_.other_ca();
  redis::Client client(o);
  const redis::CommandResult r = client.command({"PING"});
  EXPECT_EQ(r.status.code, StoreStatus::Code::kUnavailable);
  EXPECT_NE(r.status.message.find("TLS handshake"), std::string::npos) << r.status.message;
  EXPECT_NE(r.status.message.find("certificate verify failed"), std::string::npos)
      << r.status.message;

  std::string error;
  std::unique_ptr<Store> store = open_store(Url(certs_.other_ca()), error);
  ASSERT_NE(store, nullptr) << error;
  Limiter limiter(Rules(), *store, clock_);
  for (int i = 0; i < 5; ++i) {
    const Decision open = limiter.decide(Hit("open"));
    const Decision closed = limiter.decide(Hit("closed"));
    EXPECT_TRUE(open.allowed) << "failure_mode allow";
    EXPECT_FALSE(closed.allowed) << "failure_mode deny";
    EXPECT_FALSE(closed.error.empty());
  }
  EXPECT_GE(limiter.store_failures(), 10u);
}

TEST_F(RedisTls, TheServerNameIsChecked) {
  redis::ClientOptions o = ClientOptions();
  o.tls.server_name = "not-this-server.example";
  redis::Client client(o);
  const redis::CommandResult r = client.command({"PING"});
  EXPECT_EQ(r.status.code, StoreStatus::Code::kUnavailable);
  EXPECT_NE(r.status.message.find("hostname mismatch"), std::string::npos) << r.status.message;

  o.tls.server_name = "localhost";  // in the certificate, beside 127.0.0.1
  redis::Client named(o);
  EXPECT_TRUE(named.command({"PING"}).status.ok());
}

TEST_F(RedisTls, WithoutAClientCertificateRedisRefuses) {
  redis::ClientOptions o = ClientOptions();
  o.tls.cert_file.clear();
  o.tls.key_file.clear();
  redis::Client client(o);
  const redis::CommandResult r = client.command({"PING"});
  EXPECT_FALSE(r.status.ok());
  EXPECT_FALSE(r.reply.str == "PONG");
}

TEST_F(RedisTls, PlainClientOnTheTlsPortGetsNoAnswer) {
  redis::ClientOptions o = ClientOptions();
  o.tls = {};
  redis::Client client(o);
  EXPECT_FALSE(client.command({"PING"}).status.ok());
}

// rediss+cluster://: a Redis Cluster of three masters, each with a TLS port beside its plain one,
// the cluster bus over TLS too (--tls-cluster yes). A node tells a TLS client the TLS ports of
// the slots' owners, so the store follows the slot map over TLS alone.
TEST(RedisTlsCluster, StoreDecidesOnEveryNodeThroughARedissClusterUrl) {
  TestCerts certs;
  std::vector<int> tls_ports;
  testing::RedisCluster::Options options;
  for (int i = 0; i < 3; ++i) {
    // The cluster bus listens on the TLS port + 10000 (--tls-cluster yes).
    tls_ports.push_back(testing::harness::pick_port(10000));
    std::vector<std::string> args = TlsPortArgs(certs, tls_ports.back());
    // The bus: each node connects to the others as a TLS client.
    args.insert(args.end(), {"--tls-client-cert-file", certs.client_cert(), "--tls-client-key-file",
                             certs.client_key(), "--tls-cluster", "yes"});
    options.node_args.push_back(std::move(args));
  }
  testing::RedisCluster cluster(options);
  std::string error;
  std::unique_ptr<Store> store =
      open_store("rediss+cluster://127.0.0.1:" + std::to_string(tls_ports[0]) +
                     TlsQuery(certs, certs.ca(), 2000),
                 error);
  ASSERT_NE(store, nullptr) << error;
  ManualClock clock{kT0};
  Limiter limiter(Rules(), *store, clock);
  // 30 values of a 3-per-minute limit: each admits three and denies the fourth, decided in Redis.
  for (int v = 0; v < 30; ++v) {
    const Request req{"tls", {Descriptor{{{"closed", "v" + std::to_string(v)}}, {}, {}}}, 1};
    for (int i = 0; i < 4; ++i) {
      const Decision d = limiter.decide(req);
      EXPECT_EQ(d.allowed, i < 3) << "value " << v << ", hit " << i << ": " << d.error;
      EXPECT_TRUE(d.error.empty()) << d.error;
    }
  }
  EXPECT_EQ(limiter.store_failures(), 0u);
  // The keys landed on every master (seen over the plain ports).
  for (std::size_t n = 0; n < cluster.size(); ++n)
    EXPECT_GT(cluster.node(n).call({"DBSIZE"}).integer, 0) << "node " << n;
}

TEST(RedisTlsFiles, AMissingFileFailsAtOpen) {
  std::string error;
  EXPECT_EQ(open_store("rediss://127.0.0.1:1?tls_ca=/nonexistent/ca.pem", error), nullptr);
  EXPECT_NE(error.find("tls_ca"), std::string::npos) << error;
  EXPECT_NE(error.find("/nonexistent/ca.pem"), std::string::npos) << error;
}

}  // namespace
}  // namespace sluice
