// Self-test of the nginx harness: a real nginx (Debian's), and http_request() against it.
#include "support/nginx_harness.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

#include "support/harness_common.h"

namespace sluice::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Whether a process of group `pgid` is alive (not a zombie waiting for init to reap it), per
// /proc/<pid>/stat: "pid (comm) state ppid pgrp ...".
bool group_alive(pid_t pgid) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;
    const std::size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream fields(stat.substr(paren + 1));
    char state = 0;
    long ppid = 0;
    long pgrp = 0;
    if (fields >> state >> ppid >> pgrp && pgrp == pgid && state != 'Z' && state != 'X') {
      return true;
    }
  }
  return false;
}

// Waits (<= 5 s) for group `pgid` to have no live process; false if it still has one.
bool group_dies(pid_t pgid) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (group_alive(pgid)) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

TEST(NginxServerTest, ServesALocation) {
  NginxServer nginx({.server_block = R"(
    location = /hello { return 200 "hello from nginx\n"; }
    location = /json { default_type application/json; return 200 '{"ok":true}'; }
  )"});
  EXPECT_GT(nginx.port(), 0);
  EXPECT_GT(nginx.pid(), 0);
  EXPECT_TRUE(nginx.running());
  EXPECT_EQ(nginx.base_url(), "http://127.0.0.1:" + std::to_string(nginx.port()));
  EXPECT_THAT(nginx.dir(), StartsWith("/tmp/sluice-nginx-"));
  EXPECT_TRUE(std::filesystem::exists(nginx.dir() + "/nginx.conf"));

  const HttpReply hello = http_request(nginx.port(), "GET", "/hello");
  EXPECT_EQ(hello.status, 200);
  EXPECT_EQ(hello.body, "hello from nginx\n");
  EXPECT_EQ(hello.header("Server").rfind("nginx", 0), 0U) << hello.header("server");
  EXPECT_EQ(hello.header("CONTENT-LENGTH"), "17");
  EXPECT_EQ(hello.header("x-missing"), "");

  const HttpReply json = http_request(nginx.port(), "GET", "/json");
  EXPECT_EQ(json.status, 200);
  EXPECT_EQ(json.header("content-type"), "application/json");
  EXPECT_EQ(json.body, R"({"ok":true})");

  EXPECT_EQ(http_request(nginx.port(), "GET", "/nowhere").status, 404);
  const HttpReply head = http_request(nginx.port(), "HEAD", "/hello");
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.body, "");
}

TEST(NginxServerTest, RequestHeadersAndBodyReachTheServer) {
  // Echoes what it got through response headers; $request_body needs the body read, which
  // proxy_pass does (to a location on this same nginx).
  NginxServer nginx({.server_block = R"(
    location = /echo {
      add_header X-Got-Header $http_x_test always;
      add_header X-Got-Method $request_method always;
      add_header X-Got-Length $content_length always;
      proxy_pass http://127.0.0.1:$server_port/sink;
    }
    location = /sink { return 204; }
  )"});
  const HttpReply r =
      http_request(nginx.port(), "POST", "/echo", {{"X-Test", "some value"}}, "a body");
  EXPECT_EQ(r.status, 204);
  EXPECT_EQ(r.header("x-got-header"), "some value");
  EXPECT_EQ(r.header("x-got-method"), "POST");
  EXPECT_EQ(r.header("x-got-length"), "6");
  EXPECT_EQ(r.body, "");
}

TEST(NginxServerTest, ReadsChunkedResponses) {
  // SSI output has no length known up front: nginx sends it chunked.
  NginxServer nginx({.server_block = R"(
    location = /ssi {
      ssi on;
      default_type text/html;
      return 200 "method <!--# echo var=\"request_method\" --> done\n";
    }
  )"});
  const HttpReply r = http_request(nginx.port(), "GET", "/ssi");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("transfer-encoding"), "chunked");
  EXPECT_EQ(r.header("content-length"), "");
  EXPECT_EQ(r.body, "method GET done\n");
}

// auth_request (ngx_http_auth_request_module, in Debian's nginx build) guards a location with a
// subrequest: a 2xx lets the request through, a 401/403 is passed to the client.
TEST(NginxServerTest, AuthRequestDeniesAndAllows) {
  NginxServer nginx({.server_block = R"(
    location /denied/ {
      auth_request /auth-deny;
      proxy_pass http://127.0.0.1:$server_port/app;
    }
    location /allowed/ {
      auth_request /auth-allow;
      proxy_pass http://127.0.0.1:$server_port/app;
    }
    location = /auth-deny {
      internal;
      proxy_pass http://127.0.0.1:$server_port/verdict-403;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
    }
    location = /auth-allow {
      internal;
      proxy_pass http://127.0.0.1:$server_port/verdict-204;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
    }
    location = /verdict-403 { return 403; }
    location = /verdict-204 { return 204; }
    location = /app { return 200 "the protected app\n"; }
  )"});
  const HttpReply denied = http_request(nginx.port(), "GET", "/denied/x");
  EXPECT_EQ(denied.status, 403);
  EXPECT_THAT(denied.body, Not(HasSubstr("the protected app")));

  const HttpReply allowed = http_request(nginx.port(), "GET", "/allowed/x");
  EXPECT_EQ(allowed.status, 200);
  EXPECT_EQ(allowed.body, "the protected app\n");

  // The internal locations are not reachable from outside.
  EXPECT_EQ(http_request(nginx.port(), "GET", "/auth-allow").status, 404);
}

TEST(NginxServerTest, UpstreamsInTheHttpBlock) {
  NginxServer backend({.server_block = R"(location / { return 200 "from the backend\n"; })"});
  NginxServer front({.http_block = "upstream backend { server 127.0.0.1:" +
                                   std::to_string(backend.port()) + "; }",
                     .server_block = "location / { proxy_pass http://backend; }"});
  EXPECT_NE(front.port(), backend.port());
  const HttpReply r = http_request(front.port(), "GET", "/");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "from the backend\n");
}

TEST(NginxServerTest, StopIsIdempotentAndStopsWorkers) {
  NginxServer nginx({.server_block = "location / { return 204; }"});
  const pid_t master = nginx.pid();
  const int port = nginx.port();
  EXPECT_EQ(http_request(port, "GET", "/").status, 204);
  nginx.stop();
  EXPECT_EQ(nginx.pid(), -1);
  EXPECT_FALSE(nginx.running());
  nginx.stop();
  EXPECT_EQ(nginx.pid(), -1);
  // The group is gone: master and worker.
  EXPECT_FALSE(group_alive(master));
  EXPECT_THROW(http_request(port, "GET", "/", {}, {}, std::chrono::milliseconds(1000)),
               std::runtime_error);
  EXPECT_THAT(nginx.log_tail(), HasSubstr("exit"));
}

TEST(NginxServerTest, AKilledMasterTakesItsWorkersAlong) {
  NginxServer nginx({.server_block = "location / { return 204; }"});
  const pid_t master = nginx.pid();
  EXPECT_EQ(http_request(nginx.port(), "GET", "/").status, 204);  // a worker is up
  ASSERT_EQ(::kill(master, SIGKILL), 0);
  // The worker outlives its master and keeps serving ...
  EXPECT_EQ(http_request(nginx.port(), "GET", "/").status, 204);
  // ... until running() notices the master's death and kills the rest of the group.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (nginx.running() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_FALSE(nginx.running());
  EXPECT_EQ(nginx.pid(), -1);
  EXPECT_TRUE(group_dies(master));
  EXPECT_THROW(http_request(nginx.port(), "GET", "/", {}, {}, std::chrono::milliseconds(1000)),
               std::runtime_error);
}

TEST(NginxServerTest, TempDirIsRemoved) {
  std::string dir;
  {
    NginxServer nginx;
    dir = nginx.dir();
    EXPECT_TRUE(std::filesystem::exists(dir + "/nginx.pid"));
  }
  EXPECT_FALSE(std::filesystem::exists(dir));
}

TEST(NginxServerTest, BadConfigFailsWithNginxsMessage) {
  try {
    NginxServer nginx({.server_block = "no_such_directive on;"});
    FAIL() << "expected the start to fail";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("nginx rejected its config"));
    EXPECT_THAT(e.what(), HasSubstr("unknown directive \"no_such_directive\""));
    EXPECT_THAT(e.what(), HasSubstr("no_such_directive on;"));  // the numbered config
  }
}

TEST(NginxServerTest, StartFailureCarriesTheLogTail) {
  // A `listen` of the caller's on a taken port: nginx retries bind() for ~2.5 s, then exits; that
  // is not the harness's port, so it does not retry on another one.
  const harness::LoopbackListener holder;
  const std::string taken = "127.0.0.1:" + std::to_string(holder.port());
  try {
    NginxServer nginx({.server_block = "listen " + taken + ";"});
    ADD_FAILURE() << "expected the start to fail";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("before accepting connections"));
    EXPECT_THAT(e.what(), HasSubstr("bind() to " + taken + " failed (98: Address already in use)"));
  }
}

// A one-connection server that answers with canned bytes, to check http_request()'s parsing of
// what nginx does not easily send (interim responses, chunk extensions, trailers, no framing).
class CannedServer {
 public:
  explicit CannedServer(std::string response, bool answer = true) {
    thread_ = std::thread([this, response = std::move(response), answer] {
      const int fd = ::accept(listener_.fd(), nullptr, nullptr);
      if (fd < 0) return;
      char buf[4096];
      while (request_.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        request_.append(buf, static_cast<std::size_t>(n));
      }
      if (answer) {
        ::send(fd, response.data(), response.size(), MSG_NOSIGNAL);
      } else {
        while (::recv(fd, buf, sizeof buf, 0) > 0) {  // until the client gives up
        }
      }
      ::close(fd);
    });
  }
  ~CannedServer() {
    listener_.shutdown();  // unblocks accept() if nobody connected
    if (thread_.joinable()) thread_.join();
  }
  CannedServer(const CannedServer&) = delete;
  CannedServer& operator=(const CannedServer&) = delete;

  int port() const { return listener_.port(); }
  // What the client sent (head only); read it after the request returned or threw.
  std::string request() {
    if (thread_.joinable()) thread_.join();
    return request_;
  }

 private:
  harness::LoopbackListener listener_;
  std::string request_;
  std::thread thread_;
};

TEST(HttpRequestTest, ParsesInterimChunkExtensionsAndTrailers) {
  CannedServer server(
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-Spaced:  a b  \r\n\r\n"
      "3;ext=1\r\nabc\r\n0A\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n");
  const HttpReply r = http_request(server.port(), "PUT", "/thing?x=1", {{"X-Mine", "1"}}, "body!");
  EXPECT_EQ(r.status, 201);
  EXPECT_EQ(r.header("x-spaced"), "a b");
  EXPECT_EQ(r.body, "abc0123456789");
  const std::string request = server.request();
  EXPECT_THAT(request, StartsWith("PUT /thing?x=1 HTTP/1.1\r\n"));
  EXPECT_THAT(request, HasSubstr("\r\nX-Mine: 1\r\n"));
  EXPECT_THAT(request, HasSubstr("\r\nHost: 127.0.0.1:" + std::to_string(server.port())));
  EXPECT_THAT(request, HasSubstr("\r\nConnection: close\r\n"));
  EXPECT_THAT(request, HasSubstr("\r\nContent-Length: 5\r\n"));
}

TEST(HttpRequestTest, ReadsAnUnframedBodyToTheClose) {
  CannedServer server("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close");
  const HttpReply r = http_request(server.port(), "GET", "/");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "until the close");
  EXPECT_THAT(server.request(), Not(HasSubstr("Content-Length")));
}

TEST(HttpRequestTest, MalformedAndTruncatedResponsesThrow) {
  {
    CannedServer server("garbage\r\n\r\n");
    EXPECT_THROW(http_request(server.port(), "GET", "/"), std::runtime_error);
  }
  {
    CannedServer server("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort");
    try {
      http_request(server.port(), "GET", "/");
      FAIL() << "expected a truncated body to throw";
    } catch (const std::runtime_error& e) {
      EXPECT_THAT(e.what(), HasSubstr("connection closed"));
    }
  }
  {
    CannedServer server("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    EXPECT_THROW(http_request(server.port(), "GET", "/"), std::runtime_error);
  }
}

TEST(HttpRequestTest, TimesOut) {
  CannedServer server("", /*answer=*/false);
  const auto start = std::chrono::steady_clock::now();
  try {
    http_request(server.port(), "GET", "/", {}, {}, std::chrono::milliseconds(200));
    FAIL() << "expected a timeout";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("timed out"));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(HttpRequestTest, ConnectionRefusedThrows) {
  int port = 0;
  {
    NginxServer nginx;
    port = nginx.port();
  }
  try {
    http_request(port, "GET", "/");
    FAIL() << "expected a connection failure";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("127.0.0.1:" + std::to_string(port)));
  }
}

}  // namespace
}  // namespace sluice::testing
