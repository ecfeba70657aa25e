#include "support/nginx_harness.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "support/harness_common.h"

namespace sluice::testing {
namespace {

using harness::Clock;
using harness::DeadlineStream;
using std::chrono::milliseconds;

constexpr auto kConfigTestTimeout = std::chrono::seconds(10);
constexpr int kStartAttempts = 8;
constexpr const char* kTempPrefix = "sluice-nginx-";
constexpr const char* kKeepDirsEnv = "SLUICE_KEEP_NGINX_DIRS";
constexpr const char* kHost = "127.0.0.1";
// Bounds on what http_request() accepts, so that a broken peer fails rather than exhausts memory.
constexpr std::size_t kMaxHeaderLines = 1000;
constexpr std::size_t kMaxBodyBytes = std::size_t{1} << 30;

std::string nginx_bin() {
  return harness::env_or("SLUICE_NGINX", "/usr/sbin/nginx");
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view trim(std::string_view s) {
  const std::size_t first = s.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t") - first + 1);
}

// The config with line numbers, to read nginx's "in .../nginx.conf:23" against.
std::string numbered(const std::string& text) {
  std::istringstream in(text);
  std::string out;
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    out += std::to_string(++n) + ": " + line + "\n";
  }
  return out;
}

// nginx.conf: every path in the temp dir ({dir}), nothing included from /etc/nginx (hence the
// types). write_config() fills in the {placeholders}.
constexpr std::string_view kConfigTemplate =
    R"(# Written by sluice's test harness (test/support/nginx_harness.cc).
{user}daemon off;
master_process on;
worker_processes 1;
worker_shutdown_timeout 5s;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {
  worker_connections 512;
}
http {
  types {
    text/html html htm;
    text/plain txt;
    application/json json;
  }
  default_type application/octet-stream;
  access_log {dir}/access.log;
  client_body_temp_path {dir}/client_body_temp;
  proxy_temp_path {dir}/proxy_temp;
  fastcgi_temp_path {dir}/fastcgi_temp;
  uwsgi_temp_path {dir}/uwsgi_temp;
  scgi_temp_path {dir}/scgi_temp;
  # --- http_block ---
{http_block}
  server {
    listen {listen};
    # --- server_block ---
{server_block}
  }
}
)";

void replace_all(std::string& text, std::string_view from, std::string_view to) {
  for (std::size_t pos = text.find(from); pos != std::string::npos;
       pos = text.find(from, pos + to.size())) {
    text.replace(pos, from.size(), to);
  }
}

struct PortInUse : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---- HTTP/1.1 responses -----------------------------------------------------------------------

// A number in `base` (10 or 16) made of digits only, no larger than `max`; false otherwise.
bool parse_size(std::string_view s, int base, std::size_t max, std::size_t& out) {
  if (s.empty() || s.size() > 16) return false;
  std::size_t v = 0;
  for (const char c : s) {
    int digit = 0;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (base == 16 && c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else if (base == 16 && c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      return false;
    }
    v = v * static_cast<std::size_t>(base) + static_cast<std::size_t>(digit);
    if (v > max) return false;
  }
  out = v;
  return true;
}

// The status line and the headers (through the empty line).
HttpReply read_head(DeadlineStream& stream) {
  const std::string status_line = stream.read_line();
  // "HTTP/1.1 200 OK": the version, a space, three digits, then a space or the end.
  if (status_line.size() < 12 || status_line.compare(0, 7, "HTTP/1.") != 0 ||
      status_line[8] != ' ' ||
      !std::all_of(status_line.begin() + 9, status_line.begin() + 12,
                   [](char c) { return c >= '0' && c <= '9'; }) ||
      (status_line.size() > 12 && status_line[12] != ' ')) {
    stream.fail("malformed status line '" + status_line + "'");
  }
  HttpReply reply;
  reply.status = std::stoi(status_line.substr(9, 3));
  for (std::size_t n = 0;; ++n) {
    const std::string line = stream.read_line();
    if (line.empty()) break;
    if (n == kMaxHeaderLines) stream.fail("more than " + std::to_string(n) + " header lines");
    const std::size_t colon = line.find(':');
    if (colon == std::string::npos || colon == 0) stream.fail("malformed header '" + line + "'");
    reply.headers.emplace_back(lower(trim(std::string_view(line).substr(0, colon))),
                               std::string(trim(std::string_view(line).substr(colon + 1))));
  }
  return reply;
}

std::string read_chunked(DeadlineStream& stream) {
  std::string body;
  for (;;) {
    const std::string line = stream.read_line();
    const std::string_view size_text = trim(std::string_view(line).substr(0, line.find(';')));
    std::size_t size = 0;
    if (!parse_size(size_text, 16, kMaxBodyBytes - body.size(), size)) {
      stream.fail("malformed chunk size line '" + line + "'");
    }
    if (size == 0) break;
    body += stream.read_exact(size);
    if (stream.read_exact(2) != "\r\n") stream.fail("chunk not terminated by CRLF");
  }
  while (!stream.read_line().empty()) {  // trailer fields, if any: dropped
  }
  return body;
}

// Reads one response's body, framed as RFC 9112 section 6.3 says.
void read_body(DeadlineStream& stream, std::string_view method, HttpReply& reply) {
  if (method == "HEAD" || (reply.status >= 100 && reply.status < 200) || reply.status == 204 ||
      reply.status == 304) {
    return;
  }
  if (lower(reply.header("transfer-encoding")).find("chunked") != std::string::npos) {
    reply.body = read_chunked(stream);
    return;
  }
  const bool has_length = std::any_of(reply.headers.begin(), reply.headers.end(),
                                      [](const auto& h) { return h.first == "content-length"; });
  if (has_length) {
    const std::string length = reply.header("content-length");
    std::size_t n = 0;
    if (!parse_size(length, 10, kMaxBodyBytes, n))
      stream.fail("bad Content-Length '" + length + "'");
    reply.body = stream.read_exact(n);
    return;
  }
  reply.body = stream.read_to_eof();
}

}  // namespace

// ---- HTTP ---------------------------------------------------------------------------------------

std::string HttpReply::header(std::string_view name) const {
  const std::string wanted = lower(name);
  for (const auto& [key, value] : headers) {
    if (key == wanted) return value;
  }
  return "";
}

HttpReply http_request(int port, std::string_view method, std::string_view target,
                       const std::vector<std::pair<std::string, std::string>>& headers,
                       std::string_view body, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const std::string authority = std::string(kHost) + ":" + std::to_string(port);
  DeadlineStream stream = DeadlineStream::connect_tcp(kHost, port, deadline, "http " + authority);

  std::string request;
  request.append(method).append(" ").append(target).append(" HTTP/1.1\r\n");
  bool has_host = false;
  bool has_connection = false;
  bool has_framing = false;
  for (const auto& [name, value] : headers) {
    const std::string key = lower(name);
    has_host = has_host || key == "host";
    has_connection = has_connection || key == "connection";
    has_framing = has_framing || key == "content-length" || key == "transfer-encoding";
    request.append(name).append(": ").append(value).append("\r\n");
  }
  if (!has_host) request.append("Host: ").append(authority).append("\r\n");
  if (!has_connection) request.append("Connection: close\r\n");
  if (!has_framing && (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH")) {
    request.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
  }
  request.append("\r\n").append(body);
  stream.write_all(request);

  HttpReply reply = read_head(stream);
  // Interim responses (100 Continue, 103 Early Hints) precede the final one; 101 is final.
  while (reply.status >= 100 && reply.status < 200 && reply.status != 101)
    reply = read_head(stream);
  read_body(stream, method, reply);
  return reply;
}

// ---- NginxServer --------------------------------------------------------------------------------

NginxServer::NginxServer(NginxOptions options) : options_(std::move(options)) {
  dir_ = harness::make_temp_dir(kTempPrefix);
  try {
    start();
  } catch (...) {
    harness::remove_temp_dir(dir_, kKeepDirsEnv);
    throw;
  }
}

NginxServer::~NginxServer() {
  try {
    stop();
  } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor must not throw
  }
  harness::remove_temp_dir(dir_, kKeepDirsEnv);
}

std::string NginxServer::base_url() const {
  return std::string("http://") + kHost + ":" + std::to_string(port_);
}

void NginxServer::write_config() const {
  std::string conf(kConfigTemplate);
  // As root, workers would switch to nobody and could not read this 0700 dir; otherwise nginx
  // cannot switch users at all, and `user` only earns a warning.
  replace_all(conf, "{user}", ::geteuid() == 0 ? "user root;\n" : "");
  replace_all(conf, "{listen}", std::string(kHost) + ":" + std::to_string(port_));
  replace_all(conf, "{dir}", dir_);
  // Last, so that nothing in the caller's text is taken for a placeholder.
  replace_all(conf, "{http_block}", options_.http_block);
  replace_all(conf, "{server_block}", options_.server_block);
  const std::string path = dir_ + "/nginx.conf";
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << conf;
  out.close();
  if (!out) throw std::runtime_error("could not write " + path);
}

void NginxServer::start() {
  const std::string bin = nginx_bin();
  if (::access(bin.c_str(), X_OK) != 0) {
    throw std::runtime_error(harness::errno_text(bin.c_str()) +
                             " (install Debian's nginx: scripts/install-deps.sh; or set "
                             "$SLUICE_NGINX)");
  }
  for (int attempt = 1;; ++attempt) {
    port_ = harness::pick_port();
    write_config();
    try {
      start_once();
      return;
    } catch (const PortInUse& e) {
      if (attempt == kStartAttempts) throw std::runtime_error(e.what());
    }
  }
}

void NginxServer::start_once() {
  const std::string conf_path = dir_ + "/nginx.conf";
  const std::string log_path = dir_ + "/error.log";
  const std::string pid_path = dir_ + "/nginx.pid";
  const std::vector<std::string> base = {nginx_bin(), "-p", dir_ + "/", "-c",
                                         conf_path,   "-e", log_path};

  // `nginx -t` first: a bad config fails with nginx's own message, not a start-up timeout.
  std::vector<std::string> test_argv = base;
  test_argv.insert(test_argv.begin() + 1, "-t");
  const harness::ProcessResult tested = harness::run_process(test_argv, kConfigTestTimeout);
  if (!WIFEXITED(tested.status) || WEXITSTATUS(tested.status) != 0) {
    const std::string conf = harness::read_file_from(conf_path, 0);
    throw std::runtime_error("nginx rejected its config (`" + harness::show_command(test_argv) +
                             "` " + harness::describe_status(tested.status) + "):\n" +
                             tested.output + "--- " + conf_path + " ---\n" + numbered(conf));
  }
  // -t creates the pid file (empty) to check that it can: only the master's may count below.
  ::unlink(pid_path.c_str());

  // Only this attempt's part of the log tells why it failed.
  const std::uintmax_t log_size_before = harness::file_size_or_zero(log_path);
  const std::string out_path = dir_ + "/stdout.log";
  const std::uintmax_t out_size_before = harness::file_size_or_zero(out_path);
  pid_ = harness::spawn_logged(base, dir_, out_path, /*own_process_group=*/true);
  harness::record_process_group(dir_, pid_);

  const std::string what = "nginx on " + base_url() + " (pid " + std::to_string(pid_) + ")";
  const auto deadline = Clock::now() + harness::kStartTimeout;
  std::string last_error = "no attempt";
  for (;;) {
    if (harness::exited_unreaped(pid_)) {
      const int status = kill_group_and_reap();
      const std::string msg =
          what + " " + harness::describe_status(status) +
          " before accepting connections; command: " + harness::show_command(base) +
          "\n--- log tail (" + dir_ + ") ---\n" + log_tail();
      const std::string fresh = harness::read_file_from(log_path, log_size_before) +
                                harness::read_file_from(out_path, out_size_before);
      // Only our own port taken calls for another one (not a `listen` of the caller's).
      const std::string our_bind = "bind() to " + std::string(kHost) + ":" + std::to_string(port_);
      if (fresh.find(our_bind + " failed (98: Address already in use)") != std::string::npos) {
        throw PortInUse(msg);
      }
      throw std::runtime_error(msg);
    }
    // The master writes its pid file after binding its listening socket: with our pid in it, the
    // port is ours (one another process held would have failed the bind).
    std::ifstream pid_file(pid_path);
    long written = 0;
    if (!(pid_file >> written)) {
      last_error = "no pid file yet";
    } else if (written != pid_) {
      last_error = "pid file names " + std::to_string(written);
    } else {
      try {
        DeadlineStream::connect_tcp(kHost, port_, Clock::now() + milliseconds(500), what);
        return;
      } catch (const std::runtime_error& e) {
        last_error = e.what();
      }
    }
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(milliseconds(10));
  }
  const std::string log = log_tail();
  kill_group_and_reap();
  throw std::runtime_error(
      what + " did not start within " + std::to_string(harness::kStartTimeout.count()) +
      " s (last: " + last_error + "); command: " + harness::show_command(base) +
      "\n--- log tail (" + dir_ + ") ---\n" + log);
}

int NginxServer::kill_group_and_reap() {
  if (pid_ <= 0) return 0;
  // The master is not reaped yet, so its pid, the group's id, cannot have been reused.
  ::kill(-pid_, SIGKILL);
  const int status = harness::wait_exit(pid_);
  pid_ = -1;
  return status;
}

bool NginxServer::running() {
  if (pid_ <= 0) return false;
  if (!harness::exited_unreaped(pid_)) return true;
  kill_group_and_reap();  // workers outlive a master that died
  return false;
}

void NginxServer::stop() {
  if (!running()) return;
  ::kill(pid_, SIGQUIT);
  const auto deadline = Clock::now() + harness::kStopTimeout;
  while (Clock::now() < deadline && !harness::exited_unreaped(pid_))
    std::this_thread::sleep_for(milliseconds(5));
  kill_group_and_reap();
}

std::string NginxServer::log_tail(std::size_t lines) const {
  return harness::log_tails(dir_ + "/error.log", dir_ + "/stdout.log", lines);
}

}  // namespace sluice::testing
