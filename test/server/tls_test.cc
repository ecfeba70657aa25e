// TLS for the server: HTTPS (decisions, the admin API, mutual TLS), plain HTTP sent to the HTTPS
// port, handshakes that never complete, and gRPC over TLS; with certificates made at test time
// (support/test_certs.h). The HTTPS client is curl, a process of its own.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "server/server_fixture.h"
#include "support/harness_common.h"
#include "support/nginx_harness.h"
#include "support/test_certs.h"

namespace sluice::testing {
namespace {

namespace rls = envoy::service::ratelimit::v3;
using std::chrono::milliseconds;
using Steady = std::chrono::steady_clock;

constexpr const char* kRules = R"(rules:
  - path: /login
    descriptors:
      - key: user_id
        unit: minute
        requests_per_unit: 3
)";
constexpr const char* kEnvoyRules = R"(domain: tls
descriptors:
  - key: k
    rate_limit: {unit: minute, requests_per_unit: 2}
)";

// TlsServer is a Server on free loopback ports with TLS from `certs`.
class TlsServer {
 public:
  TlsServer(const TestCerts& certs, ServerOptions o = {}) {
    dir_.write("paths.yaml", kRules);
    dir_.write("envoy.yaml", kEnvoyRules);
    o.config = {dir_.path()};
    o.http_listen = "127.0.0.1:0";
    o.grpc_listen = "127.0.0.1:0";
    o.admin_token = kToken;
    o.clock = &clock_;
    o.store = &store_;
    o.http_threads = 2;
    o.tls_cert_file = certs.server_cert();
    o.tls_key_file = certs.server_key();
    server_ = std::make_unique<Server>(o);
    std::string error;
    if (!server_->start(error)) throw std::runtime_error("server did not start: " + error);
  }
  ~TlsServer() { server_->shutdown(); }
  int http_port() const { return server_->http_port(); }
  int grpc_port() const { return server_->grpc_port(); }

 private:
  TempDir dir_;
  ManualClock clock_{kT0};
  MemoryStore store_;
  std::unique_ptr<Server> server_;
};

struct CurlResult {
  int exit = -1;    // curl's exit status (0: a response arrived)
  int status = 0;   // the HTTP status
  std::string out;  // body, then curl's own messages
};

// curl() runs curl against https://host:port + target (or http:// with `plain`).
CurlResult curl(const std::string& host, int port, const std::string& target,
                std::vector<std::string> args, bool plain = false) {
  std::vector<std::string> argv = {"curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back(std::string(plain ? "http" : "https") + "://" + host + ":" + std::to_string(port) +
                 target);
  const harness::ProcessResult r = harness::run_process(argv, std::chrono::seconds(20));
  CurlResult c;
  c.exit = WIFEXITED(r.status) ? WEXITSTATUS(r.status) : -1;
  c.out = r.output;
  const std::size_t nl = r.output.rfind('\n');
  if (nl != std::string::npos) c.status = std::atoi(r.output.c_str() + nl + 1);
  return c;
}

std::vector<std::string> check_body(const std::string& user) {
  return {"-H", "Content-Type: application/json", "-d",
          R"({"path": "/login", "data": {"user_id": ")" + user + R"("}})"};
}

class Tls : public ::testing::Test {
 protected:
  TestCerts certs_;
};

TEST_F(Tls, HttpsDecidesAndServesTheAdminApi) {
  TlsServer s(certs_);
  std::vector<std::string> args = check_body("42");
  args.insert(args.end(), {"--cacert", certs_.ca()});
  for (int i = 0; i < 3; ++i) {
    const CurlResult r = curl("127.0.0.1", s.http_port(), "/v1/check", args);
    EXPECT_EQ(r.status, 200) << r.out;
  }
  const CurlResult limited = curl("localhost", s.http_port(), "/v1/check", args);
  EXPECT_EQ(limited.status, 429) << limited.out;

  const std::vector<std::string> ca = {"--cacert", certs_.ca()};
  std::vector<std::string> admin = ca;
  admin.insert(admin.end(), {"-H", std::string("Authorization: Bearer ") + kToken});
  const CurlResult rules = curl("127.0.0.1", s.http_port(), "/v1/rules", admin);
  EXPECT_EQ(rules.status, 200) << rules.out;
  EXPECT_NE(rules.out.find("paths.yaml"), std::string::npos) << rules.out;
  EXPECT_EQ(curl("127.0.0.1", s.http_port(), "/v1/rules", ca).status, 401);
}

TEST_F(Tls, TheClientVerifiesTheServer) {
  TlsServer s(certs_);
  // Against an unrelated CA the client refuses the server's certificate.
  const CurlResult wrong =
      curl("127.0.0.1", s.http_port(), "/healthcheck", {"--cacert", certs_.other_ca()});
  EXPECT_NE(wrong.exit, 0) << wrong.out;
  EXPECT_EQ(wrong.status, 0) << wrong.out;
}

TEST_F(Tls, PlainHttpToTheHttpsPortIsRefusedClearly) {
  TlsServer s(certs_);
  const HttpReply r = http_request(s.http_port(), "GET", "/healthcheck");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("HTTPS"), std::string::npos) << r.body;
  const CurlResult c = curl("127.0.0.1", s.http_port(), "/v1/check", check_body("7"), true);
  EXPECT_EQ(c.status, 400) << c.out;
  // The server goes on serving HTTPS.
  EXPECT_EQ(curl("127.0.0.1", s.http_port(), "/healthcheck", {"--cacert", certs_.ca()}).status,
            200);
}

// A client that opens a connection and never completes the handshake is cut off at the idle
// timeout: one that sends nothing, and one that stops half-way through its ClientHello.
TEST_F(Tls, AStalledHandshakeIsDroppedWithinTheTimeout) {
  ServerOptions o;
  o.http_idle_timeout = milliseconds(300);
  TlsServer s(certs_, o);
  for (const std::string& sent : {std::string(), std::string("\x16\x03\x01\x02\x00\x01", 6)}) {
    const auto start = Steady::now();
    auto conn = harness::DeadlineStream::connect_tcp("127.0.0.1", s.http_port(),
                                                     start + std::chrono::seconds(10), "stall");
    if (!sent.empty()) conn.write_all(sent);
    const std::string got = conn.read_to_eof();  // throws past the 10 s deadline
    const auto took = Steady::now() - start;
    EXPECT_GE(took, milliseconds(250)) << "dropped before the timeout";
    EXPECT_LT(took, milliseconds(3000)) << "not dropped at the timeout";
    EXPECT_TRUE(got.empty() || got[0] == '\x15') << "nothing, or a TLS alert";
  }
  EXPECT_EQ(curl("127.0.0.1", s.http_port(), "/healthcheck", {"--cacert", certs_.ca()}).status,
            200);
}

TEST_F(Tls, MutualTlsRequiresAClientCertificate) {
  ServerOptions o;
  o.tls_client_ca_file = certs_.ca();
  TlsServer s(certs_, o);
  const CurlResult without =
      curl("127.0.0.1", s.http_port(), "/healthcheck", {"--cacert", certs_.ca()});
  EXPECT_EQ(without.status, 0) << without.out;
  EXPECT_NE(without.exit, 0) << without.out;
  const CurlResult with =
      curl("127.0.0.1", s.http_port(), "/healthcheck",
           {"--cacert", certs_.ca(), "--cert", certs_.client_cert(), "--key", certs_.client_key()});
  EXPECT_EQ(with.status, 200) << with.out;
  // A certificate of the server's own is not a client's (extendedKeyUsage serverAuth).
  const CurlResult server_cert =
      curl("127.0.0.1", s.http_port(), "/healthcheck",
           {"--cacert", certs_.ca(), "--cert", certs_.server_cert(), "--key", certs_.server_key()});
  EXPECT_NE(server_cert.status, 200) << server_cert.out;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

grpc::Status should_rate_limit(const std::shared_ptr<grpc::Channel>& channel,
                               rls::RateLimitResponse& resp) {
  rls::RateLimitRequest req;
  req.set_domain("tls");
  auto* e = req.add_descriptors()->add_entries();
  e->set_key("k");
  e->set_value("v");
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return rls::RateLimitService::NewStub(channel)->ShouldRateLimit(&ctx, req, &resp);
}

TEST_F(Tls, GrpcOverTls) {
  TlsServer s(certs_);
  const std::string address = "127.0.0.1:" + std::to_string(s.grpc_port());
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = read_all(certs_.ca());
  auto channel = grpc::CreateChannel(address, grpc::SslCredentials(tls));
  for (auto expected : {rls::RateLimitResponse::OK, rls::RateLimitResponse::OK,
                        rls::RateLimitResponse::OVER_LIMIT}) {
    rls::RateLimitResponse resp;
    const grpc::Status st = should_rate_limit(channel, resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(resp.overall_code(), expected);
  }

  grpc::SslCredentialsOptions other;
  other.pem_root_certs = read_all(certs_.other_ca());
  rls::RateLimitResponse resp;
  EXPECT_FALSE(
      should_rate_limit(grpc::CreateChannel(address, grpc::SslCredentials(other)), resp).ok())
      << "a server the client's CA did not sign";
  EXPECT_FALSE(
      should_rate_limit(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()), resp)
          .ok())
      << "plaintext to the TLS port";
}

TEST_F(Tls, GrpcMutualTls) {
  ServerOptions o;
  o.tls_client_ca_file = certs_.ca();
  TlsServer s(certs_, o);
  const std::string address = "127.0.0.1:" + std::to_string(s.grpc_port());
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = read_all(certs_.ca());
  rls::RateLimitResponse resp;
  EXPECT_FALSE(
      should_rate_limit(grpc::CreateChannel(address, grpc::SslCredentials(tls)), resp).ok())
      << "no client certificate";
  tls.pem_cert_chain = read_all(certs_.client_cert());
  tls.pem_private_key = read_all(certs_.client_key());
  const grpc::Status st =
      should_rate_limit(grpc::CreateChannel(address, grpc::SslCredentials(tls)), resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
}

TEST_F(Tls, StartFailsOnFilesItCannotUse) {
  for (auto [cert, key] : {std::pair{std::string("/nonexistent/cert.pem"), certs_.server_key()},
                           std::pair{certs_.server_cert(), certs_.ca()}}) {
    TempDir dir;
    dir.write("paths.yaml", kRules);
    ServerOptions o;
    o.config = {dir.path()};
    o.http_listen = "127.0.0.1:0";
    o.grpc_listen = "127.0.0.1:0";
    o.tls_cert_file = cert;
    o.tls_key_file = key;
    Server server(o);
    std::string error;
    EXPECT_FALSE(server.start(error));
    EXPECT_NE(error.find("TLS"), std::string::npos) << error;
  }
}

}  // namespace
}  // namespace sluice::testing
