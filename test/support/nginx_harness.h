// A real nginx for integration tests: never a mock.
//
// NginxServer forks/execs Debian's /usr/sbin/nginx (or $SLUICE_NGINX) on a free loopback port, in
// a temp dir of its own (/tmp/sluice-nginx-*) that holds its nginx.conf, pid file, error.log,
// access.log and every temp path, so no file under /etc/nginx or /var is read or written. It runs
// in the foreground (`daemon off;`, with `master_process on; worker_processes 1;`): the child the
// harness started is the master, and it is stopped by PID.
//
// The caller supplies what goes inside http { } and server { }, e.g. a location guarded by
// auth_request, whose subrequest proxies to sluice's HTTP front end:
//
//   NginxServer nginx({
//       .http_block = "upstream sluice { server 127.0.0.1:" + std::to_string(sluice_port) + "; }",
//       .server_block = R"(
//         location / { auth_request /check; proxy_pass http://127.0.0.1:$server_port/app; }
//         location = /check { internal; proxy_pass http://sluice/check; }
//         location = /app { return 200 "ok\n"; })"});
//   HttpReply r = http_request(nginx.port(), "GET", "/");
//
// (auth_request allows on a 2xx from the subrequest, passes 401 and 403 through, and answers 500
// to anything else.)
//
// The config is validated with `nginx -t` first, so a mistake fails with nginx's own message. Every
// wait is bounded; failures throw std::runtime_error with the tail of error.log. Set
// $SLUICE_KEEP_NGINX_DIRS to keep the temp dirs after the test.
//
// The master gets PR_SET_PDEATHSIG(SIGKILL): it dies with the *thread* that started it, so create
// servers on a thread that outlives them (the test's main thread, typically). Its workers do not
// die with it, so nginx runs in a process group of its own, which stop() kills as a whole if the
// graceful stop times out; workers left behind by a SIGKILLed test process are killed by the next
// test process that starts an NginxServer.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::testing {

struct NginxOptions {
  // Directives inside http { }, before the server: upstreams, maps, log formats, ...
  std::string http_block;
  // Directives inside the one server { } (locations, ...). The harness adds
  // `listen 127.0.0.1:<port>;`; inside, $server_port is that port (e.g. to proxy_pass or
  // auth_request back to nginx itself).
  std::string server_block;
};

// Not thread-safe; the free function http_request() is.
class NginxServer {
 public:
  // Validates the config (`nginx -t`), starts nginx and waits (<= 10 s) until it wrote its pid file
  // and accepts connections; throws std::runtime_error with nginx's message or the log tail
  // otherwise.
  explicit NginxServer(NginxOptions options = {});
  ~NginxServer();  // stop(), then removes the temp dir (unless $SLUICE_KEEP_NGINX_DIRS is set)
  NginxServer(const NginxServer&) = delete;
  NginxServer& operator=(const NginxServer&) = delete;

  int port() const { return port_; }
  std::string base_url() const;                    // "http://127.0.0.1:<port>"
  const std::string& dir() const { return dir_; }  // the temp dir (nginx's prefix, -p)
  pid_t pid() const { return pid_; }               // the master's; -1 when not running
  bool running();                                  // reaps the master if it has exited

  // SIGQUIT (graceful: workers finish their requests), wait <= 10 s, then SIGKILL to nginx's
  // whole process group; reaps the master. Idempotent.
  void stop();

  // The last lines of error.log (and of nginx's stdout/stderr), for failure messages.
  std::string log_tail(std::size_t lines = 30) const;

 private:
  void start();  // on a fresh port; throws on failure
  void start_once();
  void write_config() const;
  int kill_group_and_reap();  // SIGKILLs the group, reaps the master; its wait status

  NginxOptions options_;
  int port_ = 0;
  std::string dir_;
  pid_t pid_ = -1;
};

// One HTTP/1.1 response. Header names are lower-cased, in the order received.
struct HttpReply {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // de-chunked

  // The first value of header `name` (case-insensitive); "" when absent.
  std::string header(std::string_view name) const;
};

inline constexpr std::chrono::milliseconds kDefaultHttpTimeout{5000};

// One HTTP/1.1 request on a fresh connection to 127.0.0.1:port, with `Host` and
// `Connection: close` (unless given in `headers`) and Content-Length when there is a body. Reads
// the response (interim 1xx responses skipped) with a Content-Length, chunked, or up to the close.
// Thread-safe. Throws std::runtime_error on connection failure, timeout (the whole exchange) or a
// malformed response; any status is returned, not thrown.
HttpReply http_request(int port, std::string_view method, std::string_view target,
                       const std::vector<std::pair<std::string, std::string>>& headers = {},
                       std::string_view body = {},
                       std::chrono::milliseconds timeout = kDefaultHttpTimeout);

}  // namespace sluice::testing
