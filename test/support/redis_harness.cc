#include "support/redis_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace sluice::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr auto kStartTimeout = std::chrono::seconds(10);
constexpr auto kStopTimeout = std::chrono::seconds(10);
constexpr auto kClusterCreateTimeout = std::chrono::seconds(60);
constexpr auto kClusterWaitTimeout = std::chrono::seconds(20);
constexpr auto kFailoverTimeout = std::chrono::seconds(30);
constexpr int kSlots = 16384;
constexpr std::size_t kMigrateBatch = 100;
// Ports below the kernel's ephemeral range (32768+), with the cluster bus port (+10000) too.
constexpr int kMinPort = 11000;
constexpr int kMaxPort = 22767;
constexpr int kBusOffset = 10000;

std::string errno_text(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, std::numeric_limits<int>::max()));
}

const char* env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? v : fallback;
}

std::string redis_server_bin() {
  return env_or("SLUICE_REDIS_SERVER", "/usr/bin/redis-server");
}
std::string redis_cli_bin() {
  return env_or("SLUICE_REDIS_CLI", "/usr/bin/redis-cli");
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i != 0) out += sep;
    out += parts[i];
  }
  return out;
}

// argv for messages: empty or spaced arguments quoted.
std::string show_command(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    out += (a.empty() || a.find_first_of(" \t\"") != std::string::npos) ? "\"" + a + "\"" : a;
  }
  return out;
}

std::string tail_of_file(const std::string& path, std::size_t lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  while (!text.empty() && text.back() == '\n')
    text.pop_back();
  std::size_t pos = text.size();
  for (std::size_t n = 0; n < lines && pos != std::string::npos && pos > 0; ++n) {
    pos = text.rfind('\n', pos - 1);
  }
  if (pos == std::string::npos || pos == 0) return text;
  return text.substr(pos + 1);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

// ---- RESP over a socket ----------------------------------------------------------------------

class Connection {
 public:
  Connection(int fd, Clock::time_point deadline, std::string peer)
      : fd_(fd), deadline_(deadline), peer_(std::move(peer)) {}
  ~Connection() { ::close(fd_); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void wait_connected() {
    pollfd p{fd_, POLLOUT, 0};
    const int r = ::poll(&p, 1, remaining_ms(deadline_));
    if (r == 0) fail("timed out connecting");
    if (r < 0) fail(errno_text("poll"));
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) fail(errno_text("getsockopt"));
    if (err != 0) fail(std::string("connect: ") + std::strerror(err));
  }

  void write_all(const std::string& data) {
    std::size_t off = 0;
    while (off < data.size()) {
      const ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n > 0) {
        off += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        pollfd p{fd_, POLLOUT, 0};
        const int r = ::poll(&p, 1, remaining_ms(deadline_));
        if (r == 0) fail("timed out writing");
        if (r < 0 && errno != EINTR) fail(errno_text("poll"));
        continue;
      }
      fail(errno_text("send"));
    }
  }

  Reply read_reply(int depth = 0) {
    if (depth > 16) fail("reply nested too deeply");
    const std::string line = read_line();
    if (line.empty()) fail("empty reply line");
    const std::string rest = line.substr(1);
    Reply reply;
    switch (line[0]) {
      case '+':
        reply.type = Reply::Type::kStatus;
        reply.str = rest;
        return reply;
      case '-':
        reply.type = Reply::Type::kError;
        reply.str = rest;
        return reply;
      case ':':
        reply.type = Reply::Type::kInteger;
        reply.integer = parse_int(rest);
        return reply;
      case '$': {
        const long long len = parse_int(rest);
        if (len < 0) return reply;  // nil
        reply.type = Reply::Type::kBulk;
        reply.str = read_exact(static_cast<std::size_t>(len) + 2);
        if (reply.str.substr(reply.str.size() - 2) != "\r\n") fail("bulk not terminated by CRLF");
        reply.str.resize(reply.str.size() - 2);
        return reply;
      }
      case '*': {
        const long long n = parse_int(rest);
        if (n < 0) return reply;  // nil array
        reply.type = Reply::Type::kArray;
        reply.elements.reserve(static_cast<std::size_t>(std::min<long long>(n, 1024)));
        for (long long i = 0; i < n; ++i)
          reply.elements.push_back(read_reply(depth + 1));
        return reply;
      }
      default:
        fail("unexpected reply type byte '" + line.substr(0, 1) + "'");
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("redis " + peer_ + ": " + what);
  }

  long long parse_int(const std::string& s) const {
    try {
      std::size_t used = 0;
      const long long v = std::stoll(s, &used);
      if (used != s.size()) fail("bad integer '" + s + "'");
      return v;
    } catch (const std::logic_error&) {
      fail("bad integer '" + s + "'");
    }
  }

  void fill() {
    char chunk[16384];
    for (;;) {
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n > 0) {
        buf_.append(chunk, static_cast<std::size_t>(n));
        return;
      }
      if (n == 0) fail("connection closed by the server");
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) fail(errno_text("recv"));
      pollfd p{fd_, POLLIN, 0};
      const int r = ::poll(&p, 1, remaining_ms(deadline_));
      if (r == 0) fail("timed out waiting for a reply");
      if (r < 0 && errno != EINTR) fail(errno_text("poll"));
    }
  }

  std::string read_line() {
    for (;;) {
      const std::size_t end = buf_.find("\r\n", pos_);
      if (end != std::string::npos) {
        std::string line = buf_.substr(pos_, end - pos_);
        pos_ = end + 2;
        return line;
      }
      fill();
    }
  }

  std::string read_exact(std::size_t n) {
    while (buf_.size() - pos_ < n)
      fill();
    std::string out = buf_.substr(pos_, n);
    pos_ += n;
    return out;
  }

  int fd_;
  Clock::time_point deadline_;
  std::string peer_;
  std::string buf_;
  std::size_t pos_ = 0;
};

std::string encode(const std::vector<std::string>& argv) {
  std::string out = "*" + std::to_string(argv.size()) + "\r\n";
  for (const auto& a : argv) {
    out += "$" + std::to_string(a.size()) + "\r\n";
    out += a;
    out += "\r\n";
  }
  return out;
}

// Sends AUTH (with a password) and the commands in one write; returns the commands' replies (an
// AUTH error replaces them all: they'd all be NOAUTH).
std::vector<Reply> exchange(Connection& conn, const std::vector<std::vector<std::string>>& commands,
                            const std::string& password) {
  conn.wait_connected();
  std::string out = password.empty() ? "" : encode({"AUTH", password});
  for (const auto& argv : commands)
    out += encode(argv);
  conn.write_all(out);
  const Reply auth = password.empty() ? Reply{} : conn.read_reply();
  std::vector<Reply> replies;
  replies.reserve(commands.size());
  for (std::size_t i = 0; i < commands.size(); ++i)
    replies.push_back(conn.read_reply());
  if (auth.is_error()) std::fill(replies.begin(), replies.end(), auth);
  return replies;
}

// ---- processes --------------------------------------------------------------------------------

// argv[0] itself if it has a '/', else its first executable match on $PATH.
std::string resolve_executable(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  std::istringstream path(env_or("PATH", "/usr/local/bin:/usr/bin:/bin"));
  for (std::string dir; std::getline(path, dir, ':');) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  throw std::runtime_error(name + ": not found on $PATH");
}

// fork/exec argv[0] (resolved on $PATH) in `cwd`, stdin from /dev/null, stdout and stderr to
// out_fd. The child gets SIGKILL when the parent (thread) dies.
pid_t spawn(const std::vector<std::string>& argv, const std::string& cwd, int out_fd) {
  const std::string exe = resolve_executable(argv.at(0));
  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (const auto& a : argv)
    cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(errno_text("fork"));
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(126);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull < 0 || ::dup2(devnull, 0) < 0 || ::dup2(out_fd, 1) < 0 || ::dup2(out_fd, 2) < 0) {
      ::_exit(126);
    }
    ::close_range(3, ~0U, 0);
    ::execve(exe.c_str(), cargv.data(), environ);
    ::_exit(127);
  }
  return pid;
}

// Reaps `pid` (blocking), retrying on EINTR; returns the wait status.
int wait_exit(pid_t pid) {
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, 0);
    if (r == pid && (WIFEXITED(status) || WIFSIGNALED(status))) return status;
    if (r < 0 && errno != EINTR) return -1;
  }
}

struct ProcessResult {
  int status = 0;
  std::string output;
};

// Runs a command to completion, capturing stdout+stderr; SIGKILLs it past the timeout.
ProcessResult run_process(const std::vector<std::string>& argv, std::chrono::seconds timeout) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error(errno_text("pipe2"));
  pid_t pid = -1;
  try {
    pid = spawn(argv, "", fds[1]);
  } catch (...) {
    ::close(fds[0]);
    ::close(fds[1]);
    throw;
  }
  ::close(fds[1]);
  const auto deadline = Clock::now() + timeout;
  ProcessResult result;
  bool timed_out = false;
  for (;;) {
    pollfd p{fds[0], POLLIN, 0};
    const int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r == 0) {
      timed_out = true;
      break;
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      break;
    }
    char chunk[4096];
    const ssize_t n = ::read(fds[0], chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    result.output.append(chunk, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  if (timed_out) ::kill(pid, SIGKILL);
  result.status = wait_exit(pid);
  if (timed_out) {
    throw std::runtime_error("`" + show_command(argv) + "` timed out after " +
                             std::to_string(timeout.count()) + " s; output:\n" + result.output);
  }
  return result;
}

// ---- ports ------------------------------------------------------------------------------------

bool bindable(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// A random port in [kMinPort, kMaxPort] that, with its cluster bus port, is bindable now and was
// not handed out before in this process. Random so that test binaries running in parallel rarely
// collide; a collision that still happens shows up as redis-server failing to bind, and start()
// then tries another port.
int pick_port() {
  static std::mutex mu;
  static std::set<int> handed_out;
  static std::mt19937 rng(std::random_device{}() ^ static_cast<unsigned>(::getpid()) ^
                          static_cast<unsigned>(Clock::now().time_since_epoch().count()));
  std::lock_guard lock(mu);
  std::uniform_int_distribution<int> dist(kMinPort, kMaxPort);
  for (int attempt = 0; attempt < 2000; ++attempt) {
    const int port = dist(rng);
    if (handed_out.contains(port) || handed_out.contains(port + kBusOffset) ||
        handed_out.contains(port - kBusOffset)) {
      continue;
    }
    if (bindable(port) && bindable(port + kBusOffset)) {
      handed_out.insert(port);
      return port;
    }
  }
  throw std::runtime_error("could not find a free loopback port pair (p, p+10000) in [" +
                           std::to_string(kMinPort) + ", " + std::to_string(kMaxPort) + "]");
}

// Temp dirs left behind by test processes that died without running destructors (SIGKILL, e.g. a
// ctest timeout; their servers died with them, by PDEATHSIG): removed once per process. Only dirs
// whose owner file names a process that no longer exists are touched.
constexpr const char* kTempPrefix = "sluice-redis-";
constexpr const char* kOwnerFile = "harness.pid";

void sweep_stale_dirs() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/tmp", ec)) {
      if (entry.path().filename().string().rfind(kTempPrefix, 0) != 0) continue;
      std::ifstream in(entry.path() / kOwnerFile);
      long owner = 0;
      if (!(in >> owner) || owner <= 0) continue;
      if (::kill(static_cast<pid_t>(owner), 0) == 0 || errno != ESRCH) continue;
      std::error_code ignored;
      std::filesystem::remove_all(entry.path(), ignored);
    }
  });
}

struct PortInUse : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---- cluster parsing --------------------------------------------------------------------------

std::string info_field(const std::string& info, std::string_view key) {
  std::istringstream in(info);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.size() > key.size() && line.compare(0, key.size(), key) == 0 &&
        line[key.size()] == ':') {
      return line.substr(key.size() + 1);
    }
  }
  return "";
}

struct NodeLine {
  std::string id;
  int port = 0;
  std::set<std::string> flags;
  std::string master_id;
  long long config_epoch = 0;
  std::vector<std::pair<int, int>> slots;

  bool has(const char* flag) const { return flags.contains(flag); }
  bool failing() const { return has("fail") || has("fail?"); }
  bool owns(int slot) const {
    return std::any_of(slots.begin(), slots.end(),
                       [slot](const auto& r) { return r.first <= slot && slot <= r.second; });
  }
};

std::vector<NodeLine> parse_cluster_nodes(const std::string& text) {
  std::vector<NodeLine> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::vector<std::string> f;
    std::string w;
    while (fields >> w)
      f.push_back(w);
    if (f.size() < 8) continue;
    NodeLine n;
    n.id = f[0];
    const std::string addr = f[1].substr(0, f[1].find('@'));
    const std::size_t colon = addr.rfind(':');
    if (colon != std::string::npos) n.port = std::atoi(addr.c_str() + colon + 1);
    std::istringstream flags(f[2]);
    for (std::string fl; std::getline(flags, fl, ',');)
      n.flags.insert(fl);
    n.master_id = f[3];
    n.config_epoch = std::atoll(f[6].c_str());
    for (std::size_t i = 8; i < f.size(); ++i) {
      if (f[i].empty() || f[i][0] == '[') continue;  // [slot->-id] / [slot-<-id]
      const std::size_t dash = f[i].find('-');
      const int lo = std::atoi(f[i].c_str());
      const int hi = dash == std::string::npos ? lo : std::atoi(f[i].c_str() + dash + 1);
      n.slots.emplace_back(lo, hi);
    }
    out.push_back(std::move(n));
  }
  return out;
}

std::string expect_ok(const Reply& r, const std::string& what) {
  if (r.is_error()) throw std::runtime_error(what + " failed: " + r.str);
  return r.to_string();
}

}  // namespace

// ---- Reply ------------------------------------------------------------------------------------

std::string Reply::to_string() const {
  switch (type) {
    case Type::kStatus:
    case Type::kBulk:
      return str;
    case Type::kError:
      return "ERR:" + str;
    case Type::kInteger:
      return std::to_string(integer);
    case Type::kNil:
      return "(nil)";
    case Type::kArray: {
      std::vector<std::string> parts;
      parts.reserve(elements.size());
      for (const auto& e : elements)
        parts.push_back(e.to_string());
      return join(parts, " ");
    }
  }
  return "";
}

std::vector<Reply> redis_pipeline(const std::string& host, int port,
                                  const std::vector<std::vector<std::string>>& commands,
                                  std::chrono::milliseconds timeout, const std::string& password) {
  const auto deadline = Clock::now() + timeout;
  const std::string peer = host + ":" + std::to_string(port);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    throw std::runtime_error("redis " + peer + ": not an IPv4 address");
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) throw std::runtime_error("redis " + peer + ": " + errno_text("socket"));
  Connection conn(fd, deadline, peer);
  // Close with RST: the many short-lived connections of polling loops leave no TIME_WAIT behind.
  const linger no_linger{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &no_linger, sizeof no_linger);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS) {
    throw std::runtime_error("redis " + peer + ": " + errno_text("connect"));
  }
  return exchange(conn, commands, password);
}

Reply redis_call(const std::string& host, int port, const std::vector<std::string>& argv,
                 std::chrono::milliseconds timeout, const std::string& password) {
  return redis_pipeline(host, port, {argv}, timeout, password).front();
}

Reply redis_call_unix(const std::string& path, const std::vector<std::string>& argv,
                      std::chrono::milliseconds timeout, const std::string& password) {
  const auto deadline = Clock::now() + timeout;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    throw std::runtime_error("redis " + path + ": unix socket path too long");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) throw std::runtime_error("redis " + path + ": " + errno_text("socket"));
  Connection conn(fd, deadline, path);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS) {
    throw std::runtime_error("redis " + path + ": " + errno_text("connect"));
  }
  return exchange(conn, {argv}, password).front();
}

// ---- RedisServer ------------------------------------------------------------------------------

RedisServer::RedisServer() : RedisServer(Options{}) {}

RedisServer::RedisServer(Options options) : options_(std::move(options)) {
  sweep_stale_dirs();
  std::string tmpl = std::string("/tmp/") + kTempPrefix + "XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error(errno_text("mkdtemp"));
  dir_ = tmpl;
  std::ofstream(dir_ + "/" + kOwnerFile) << ::getpid() << "\n";
  if (options_.unix_socket) unix_path_ = dir_ + "/redis.sock";
  try {
    start();
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    throw;
  }
}

RedisServer::~RedisServer() {
  try {
    stop();
  } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor must not throw
  }
  std::error_code ec;
  if (std::getenv("SLUICE_KEEP_REDIS_DIRS") != nullptr) {
    std::filesystem::remove(dir_ + "/" + kOwnerFile, ec);  // so that no sweep removes it
    return;
  }
  std::filesystem::remove_all(dir_, ec);
}

void RedisServer::start() {
  const bool fixed = port_ != 0;
  constexpr int kAttempts = 8;
  for (int attempt = 1;; ++attempt) {
    if (!fixed) port_ = pick_port();
    try {
      start_once();
      return;
    } catch (const PortInUse& e) {
      if (fixed || attempt == kAttempts) throw std::runtime_error(e.what());
    }
  }
}

void RedisServer::start_once() {
  // Only this attempt's part of the log tells why it failed.
  const std::string log_path = dir_ + "/redis.log";
  std::error_code size_ec;
  const auto log_size_before = std::filesystem::exists(log_path, size_ec)
                                   ? std::filesystem::file_size(log_path, size_ec)
                                   : std::uintmax_t{0};
  std::vector<std::string> argv = {redis_server_bin(),
                                   "--port",
                                   std::to_string(port_),
                                   "--bind",
                                   host_,
                                   "--dir",
                                   dir_,
                                   "--save",
                                   "",
                                   "--appendonly",
                                   "no",
                                   "--daemonize",
                                   "no",
                                   "--logfile",
                                   log_path};
  if (options_.unix_socket) {
    argv.insert(argv.end(), {"--unixsocket", unix_path_, "--unixsocketperm", "700"});
  }
  if (!options_.password.empty()) argv.insert(argv.end(), {"--requirepass", options_.password});
  argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());

  const std::string out_path = dir_ + "/stdout.log";
  const int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (out_fd < 0) throw std::runtime_error(errno_text(("open " + out_path).c_str()));
  try {
    pid_ = spawn(argv, dir_, out_fd);
  } catch (...) {
    ::close(out_fd);
    throw;
  }
  ::close(out_fd);
  paused_ = false;

  const std::string what = "redis-server on " + address() + " (pid " + std::to_string(pid_) + ")";
  const auto deadline = Clock::now() + kStartTimeout;
  std::string last_error = "no attempt";
  for (;;) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      const std::string msg = what + " " + describe_status(status) +
                              " before answering PING; command: " + show_command(argv) +
                              "\n--- log tail (" + dir_ + ") ---\n" + log_tail();
      std::ifstream log(log_path, std::ios::binary);
      log.seekg(static_cast<std::streamoff>(log_size_before));
      const std::string fresh{std::istreambuf_iterator<char>(log),
                              std::istreambuf_iterator<char>()};
      if (fresh.find("Address already in use") != std::string::npos) throw PortInUse(msg);
      throw std::runtime_error(msg);
    }
    try {
      const Reply pong = call({"PING"}, milliseconds(500));
      if (pong.to_string() == "PONG") {
        // Make sure it is our process answering, not another one that holds the port.
        const Reply info = call({"INFO", "server"}, milliseconds(500));
        if (info_field(info.str, "process_id") == std::to_string(pid_)) return;
        last_error =
            "another process (" + info_field(info.str, "process_id") + ") answers on the port";
      } else {
        last_error = "PING answered " + pong.to_string();
      }
    } catch (const std::runtime_error& e) {
      last_error = e.what();
    }
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(milliseconds(10));
  }
  const std::string log = log_tail();
  kill();
  throw std::runtime_error(what + " did not answer PING within " +
                           std::to_string(kStartTimeout.count()) + " s (last: " + last_error +
                           "); command: " + show_command(argv) + "\n--- log tail (" + dir_ +
                           ") ---\n" + log);
}

bool RedisServer::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_ && (WIFEXITED(status) || WIFSIGNALED(status))) {
    pid_ = -1;
    paused_ = false;
    return false;
  }
  return true;
}

void RedisServer::stop() {
  if (!running()) return;
  ::kill(pid_, SIGTERM);
  if (paused_) ::kill(pid_, SIGCONT);
  paused_ = false;
  const auto deadline = Clock::now() + kStopTimeout;
  while (Clock::now() < deadline) {
    if (!running()) return;
    std::this_thread::sleep_for(milliseconds(5));
  }
  kill();
}

void RedisServer::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  wait_exit(pid_);
  pid_ = -1;
  paused_ = false;
}

void RedisServer::restart() {
  stop();
  start();
}

void RedisServer::pause() {
  if (!running()) throw std::runtime_error("pause: redis-server on " + address() + " not running");
  if (paused_) return;
  ::kill(pid_, SIGSTOP);
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WUNTRACED);
    if (r < 0 && errno == EINTR) continue;
    if (r == pid_ && WIFSTOPPED(status)) break;
    if (r == pid_ && (WIFEXITED(status) || WIFSIGNALED(status))) {
      pid_ = -1;
      throw std::runtime_error("pause: redis-server on " + address() + " " +
                               describe_status(status));
    }
    if (r < 0) throw std::runtime_error(errno_text("pause: waitpid"));
  }
  paused_ = true;
}

void RedisServer::resume() {
  if (!paused_ || pid_ <= 0) return;
  ::kill(pid_, SIGCONT);
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WCONTINUED);
    if (r < 0 && errno == EINTR) continue;
    if (r == pid_ && WIFCONTINUED(status)) break;
    if (r == pid_ && (WIFEXITED(status) || WIFSIGNALED(status))) {
      pid_ = -1;
      break;
    }
    if (r < 0) throw std::runtime_error(errno_text("resume: waitpid"));
  }
  paused_ = false;
}

Reply RedisServer::call(const std::vector<std::string>& argv,
                        std::chrono::milliseconds timeout) const {
  return redis_call(host_, port_, argv, timeout, options_.password);
}

std::vector<Reply> RedisServer::pipeline(const std::vector<std::vector<std::string>>& commands,
                                         std::chrono::milliseconds timeout) const {
  return redis_pipeline(host_, port_, commands, timeout, options_.password);
}

std::string RedisServer::command(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout) const {
  return call(argv, timeout).to_string();
}

std::string RedisServer::log_tail(std::size_t lines) const {
  std::string out = tail_of_file(dir_ + "/redis.log", lines);
  const std::string stdout_tail = tail_of_file(dir_ + "/stdout.log", lines);
  if (!stdout_tail.empty()) out += (out.empty() ? "" : "\n") + ("[stdout/stderr]\n" + stdout_tail);
  return out.empty() ? "(empty)" : out;
}

// ---- RedisCluster -----------------------------------------------------------------------------

int RedisCluster::key_slot(std::string_view key) {
  const std::size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const std::size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close != open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  std::uint16_t crc = 0;  // CRC16/XMODEM: poly 0x1021, init 0, no reflection
  for (const char c : key) {
    crc = static_cast<std::uint16_t>(
        crc ^ (static_cast<std::uint16_t>(static_cast<unsigned char>(c)) << 8));
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 0x8000) != 0 ? static_cast<std::uint16_t>((crc << 1) ^ 0x1021)
                                : static_cast<std::uint16_t>(crc << 1);
    }
  }
  return crc % kSlots;
}

RedisCluster::RedisCluster() : RedisCluster(Options{}) {}

RedisCluster::RedisCluster(Options options) : options_(std::move(options)) {
  if (options_.masters < 3) {
    throw std::runtime_error("RedisCluster: redis-cli --cluster create needs at least 3 masters");
  }
  if (options_.replicas_per_master < 0) {
    throw std::runtime_error("RedisCluster: replicas_per_master must be >= 0");
  }
  const int total = options_.masters * (1 + options_.replicas_per_master);
  RedisServer::Options node_options;
  // Replicas sync at once (the default waits 5 s for more replicas before a diskless sync).
  node_options.extra_args = {"--cluster-enabled",          "yes",
                             "--cluster-config-file",      "nodes.conf",
                             "--cluster-node-timeout",     std::to_string(options_.node_timeout_ms),
                             "--repl-diskless-sync-delay", "0"};
  node_options.extra_args.insert(node_options.extra_args.end(), options_.extra_args.begin(),
                                 options_.extra_args.end());
  std::vector<std::string> argv = {redis_cli_bin(), "--cluster", "create"};
  for (int i = 0; i < total; ++i) {
    nodes_.push_back(std::make_unique<RedisServer>(node_options));
    argv.push_back(nodes_.back()->address());
  }
  argv.insert(argv.end(), {"--cluster-replicas", std::to_string(options_.replicas_per_master),
                           "--cluster-yes"});
  const ProcessResult created =
      run_process(argv, std::chrono::duration_cast<std::chrono::seconds>(kClusterCreateTimeout));
  if (!WIFEXITED(created.status) || WEXITSTATUS(created.status) != 0) {
    throw std::runtime_error("`" + show_command(argv) + "` " + describe_status(created.status) +
                             "; output:\n" + created.output);
  }
  for (auto& n : nodes_)
    ids_.push_back(expect_ok(n->call({"CLUSTER", "MYID"}), "CLUSTER MYID"));

  // Every node: state ok, all slots, knows every node; every replica: link to its master up.
  const auto deadline = Clock::now() + kClusterWaitTimeout;
  std::string last;
  for (;;) {
    last.clear();
    for (std::size_t i = 0; i < nodes_.size() && last.empty(); ++i) {
      try {
        const std::string info = nodes_[i]->call({"CLUSTER", "INFO"}).str;
        if (info_field(info, "cluster_state") != "ok" ||
            info_field(info, "cluster_slots_assigned") != std::to_string(kSlots) ||
            info_field(info, "cluster_known_nodes") != std::to_string(total)) {
          last = "node " + std::to_string(i) + ": " + info;
          break;
        }
        const Reply role = nodes_[i]->call({"ROLE"});
        if (role.type == Reply::Type::kArray && role.elements.size() >= 4 &&
            role.elements[0].str == "slave" && role.elements[3].str != "connected") {
          last = "replica " + std::to_string(i) + ": " + role.to_string();
        }
      } catch (const std::runtime_error& e) {
        last = e.what();
      }
    }
    if (last.empty()) return;
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(milliseconds(20));
  }
  throw std::runtime_error("cluster did not converge within " +
                           std::to_string(kClusterWaitTimeout.count()) + " s; last: " + last +
                           "\nredis-cli output:\n" + created.output);
}

RedisCluster::~RedisCluster() {
  // The data is disposable: SIGKILL is quickest (and a SIGTERMed master may wait for replicas).
  for (auto& n : nodes_)
    n->kill();
}

std::size_t RedisCluster::index_of_id(const std::string& id) const {
  for (std::size_t i = 0; i < ids_.size(); ++i) {
    if (ids_[i] == id) return i;
  }
  return nodes_.size();  // not ours (e.g. a node in handshake)
}

std::size_t RedisCluster::any_running_node() {
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i]->running() && !nodes_[i]->paused()) return i;
  }
  throw std::runtime_error("no cluster node is running");
}

std::vector<std::size_t> RedisCluster::masters() {
  const std::size_t asked = any_running_node();
  const Reply r = nodes_[asked]->call({"CLUSTER", "NODES"});
  std::vector<std::size_t> out;
  for (const NodeLine& n : parse_cluster_nodes(expect_ok(r, "CLUSTER NODES"))) {
    if (!n.has("master") || n.failing()) continue;
    const std::size_t i = index_of_id(n.id);
    if (i < nodes_.size() && nodes_[i]->running()) out.push_back(i);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::size_t> RedisCluster::replicas_of(std::size_t master) {
  const std::size_t asked = any_running_node();
  const Reply r = nodes_[asked]->call({"CLUSTER", "NODES"});
  std::vector<std::size_t> out;
  for (const NodeLine& n : parse_cluster_nodes(expect_ok(r, "CLUSTER NODES"))) {
    if (!n.has("slave") || n.master_id != ids_.at(master)) continue;
    const std::size_t i = index_of_id(n.id);
    if (i < nodes_.size() && nodes_[i]->running()) out.push_back(i);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string RedisCluster::seeds() {
  std::vector<std::string> parts;
  for (const std::size_t i : masters())
    parts.push_back(nodes_[i]->address());
  return join(parts, ",");
}

std::size_t RedisCluster::owner_of_slot(int slot) {
  if (slot < 0 || slot >= kSlots) throw std::runtime_error("slot out of range");
  std::size_t best = nodes_.size();
  long long best_epoch = -1;
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    if (!nodes_[i]->running() || nodes_[i]->paused()) continue;
    const Reply r = nodes_[i]->call({"CLUSTER", "NODES"});
    for (const NodeLine& n : parse_cluster_nodes(expect_ok(r, "CLUSTER NODES"))) {
      if (n.has("myself") && n.has("master") && n.owns(slot) && n.config_epoch > best_epoch) {
        best = i;
        best_epoch = n.config_epoch;
      }
    }
  }
  if (best != nodes_.size()) return best;
  // Nobody running claims it: report what a running node believes.
  const std::size_t asked = any_running_node();
  const Reply slots = nodes_[asked]->call({"CLUSTER", "SLOTS"});
  for (const Reply& range : slots.elements) {
    if (range.elements.size() < 3 || range.elements[0].integer > slot ||
        range.elements[1].integer < slot) {
      continue;
    }
    const Reply& master = range.elements[2];
    if (master.elements.size() >= 3 && index_of_id(master.elements[2].str) < nodes_.size()) {
      return index_of_id(master.elements[2].str);
    }
  }
  throw std::runtime_error("no node owns slot " + std::to_string(slot));
}

void RedisCluster::wait_until_all_agree_on_owner(int slot, std::size_t owner) {
  const auto deadline = Clock::now() + kClusterWaitTimeout;
  std::string last;
  for (;;) {
    last.clear();
    for (std::size_t i = 0; i < nodes_.size() && last.empty(); ++i) {
      if (!nodes_[i]->running() || nodes_[i]->paused()) continue;
      try {
        const Reply r = nodes_[i]->call({"CLUSTER", "NODES"});
        for (const NodeLine& n : parse_cluster_nodes(expect_ok(r, "CLUSTER NODES"))) {
          if (n.id == ids_[owner] && !n.owns(slot)) {
            last = "node " + std::to_string(i) + " does not see slot " + std::to_string(slot) +
                   " on node " + std::to_string(owner) + ":\n" + r.str;
          }
        }
      } catch (const std::runtime_error& e) {
        last = e.what();
      }
    }
    if (last.empty()) return;
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(milliseconds(20));
  }
  throw std::runtime_error("cluster did not agree on the owner of slot " + std::to_string(slot) +
                           " within " + std::to_string(kClusterWaitTimeout.count()) +
                           " s; last: " + last);
}

void RedisCluster::begin_migration(int slot, std::size_t to) {
  if (slot < 0 || slot >= kSlots) throw std::runtime_error("slot out of range");
  if (to >= nodes_.size())
    throw std::runtime_error("begin_migration: no node " + std::to_string(to));
  if (migrations_.contains(slot)) {
    throw std::runtime_error("slot " + std::to_string(slot) + " is already being migrated");
  }
  const std::size_t from = owner_of_slot(slot);
  if (from == to) {
    throw std::runtime_error("begin_migration: node " + std::to_string(to) + " already owns slot " +
                             std::to_string(slot));
  }
  const std::string s = std::to_string(slot);
  expect_ok(nodes_[to]->call({"CLUSTER", "SETSLOT", s, "IMPORTING", ids_[from]}),
            "CLUSTER SETSLOT " + s + " IMPORTING on node " + std::to_string(to));
  expect_ok(nodes_[from]->call({"CLUSTER", "SETSLOT", s, "MIGRATING", ids_[to]}),
            "CLUSTER SETSLOT " + s + " MIGRATING on node " + std::to_string(from));
  migrations_[slot] = Migration{from, to};
}

std::size_t RedisCluster::move_keys(int slot, std::size_t n) {
  const auto it = migrations_.find(slot);
  if (it == migrations_.end()) {
    throw std::runtime_error("move_keys: slot " + std::to_string(slot) + " is not being migrated");
  }
  RedisServer& src = *nodes_[it->second.from];
  RedisServer& dst = *nodes_[it->second.to];
  std::size_t moved = 0;
  while (moved < n) {
    const std::size_t batch = std::min(kMigrateBatch, n - moved);
    const Reply keys =
        src.call({"CLUSTER", "GETKEYSINSLOT", std::to_string(slot), std::to_string(batch)});
    expect_ok(keys, "CLUSTER GETKEYSINSLOT");
    if (keys.elements.empty()) break;
    std::vector<std::string> argv = {"MIGRATE", dst.host(), std::to_string(dst.port()), "", "0",
                                     "5000",    "KEYS"};
    for (const Reply& k : keys.elements)
      argv.push_back(k.str);
    expect_ok(src.call(argv, milliseconds(10000)), "MIGRATE of slot " + std::to_string(slot));
    moved += keys.elements.size();
  }
  return moved;
}

void RedisCluster::finish_migration(int slot) {
  const auto it = migrations_.find(slot);
  if (it == migrations_.end()) {
    throw std::runtime_error("finish_migration: slot " + std::to_string(slot) +
                             " is not being migrated");
  }
  const Migration m = it->second;
  const std::string s = std::to_string(slot);
  move_keys(slot, std::numeric_limits<std::size_t>::max());
  const Reply left = nodes_[m.from]->call({"CLUSTER", "COUNTKEYSINSLOT", s});
  if (left.is_error() || left.integer != 0) {
    throw std::runtime_error("finish_migration: node " + std::to_string(m.from) + " still has " +
                             left.to_string() + " keys in slot " + s);
  }
  const std::vector<std::string> setslot = {"CLUSTER", "SETSLOT", s, "NODE", ids_[m.to]};
  expect_ok(nodes_[m.to]->call(setslot), "CLUSTER SETSLOT " + s + " NODE on the target");
  expect_ok(nodes_[m.from]->call(setslot), "CLUSTER SETSLOT " + s + " NODE on the source");
  for (const std::size_t i : masters()) {
    if (i == m.to || i == m.from) continue;
    expect_ok(nodes_[i]->call(setslot),
              "CLUSTER SETSLOT " + s + " NODE on node " + std::to_string(i));
  }
  migrations_.erase(slot);
  wait_until_all_agree_on_owner(slot, m.to);
}

void RedisCluster::migrate_slot(int slot, std::size_t to) {
  if (owner_of_slot(slot) == to) return;
  begin_migration(slot, to);
  finish_migration(slot);
}

void RedisCluster::wait_for_ok(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::string last;
  for (;;) {
    last.clear();
    for (std::size_t i = 0; i < nodes_.size() && last.empty(); ++i) {
      if (!nodes_[i]->running() || nodes_[i]->paused()) continue;
      try {
        const std::string info = nodes_[i]->call({"CLUSTER", "INFO"}).str;
        if (info_field(info, "cluster_state") != "ok" ||
            info_field(info, "cluster_slots_assigned") != std::to_string(kSlots)) {
          last = "node " + std::to_string(i) + ": " + info;
        }
      } catch (const std::runtime_error& e) {
        last = e.what();
      }
    }
    if (last.empty()) return;
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(milliseconds(20));
  }
  throw std::runtime_error("cluster not ok within " + std::to_string(timeout.count()) +
                           " ms; last: " + last);
}

std::size_t RedisCluster::kill_master_and_wait_for_failover(std::size_t master) {
  if (master >= nodes_.size()) throw std::runtime_error("no node " + std::to_string(master));
  // Right after the cluster forms, the node asked may not list the replica yet: wait (bounded).
  std::vector<std::size_t> replicas = replicas_of(master);
  for (const auto until = Clock::now() + std::chrono::seconds(10);
       replicas.empty() && Clock::now() < until;) {
    std::this_thread::sleep_for(milliseconds(50));
    replicas = replicas_of(master);
  }
  if (replicas.empty()) {
    throw std::runtime_error("node " + std::to_string(master) + " has no running replica");
  }
  nodes_[master]->kill();
  const auto deadline = Clock::now() + kFailoverTimeout;
  std::string last;
  for (;;) {
    for (const std::size_t r : replicas) {
      try {
        const Reply role = nodes_[r]->call({"ROLE"});
        if (role.type != Reply::Type::kArray || role.elements.empty() ||
            role.elements[0].str != "master") {
          last = "replica " + std::to_string(r) + " role: " + role.to_string();
          continue;
        }
        // Promoted; wait for every running node to see it as a master and the cluster ok.
        wait_for_ok(std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
        const std::vector<std::size_t> now_masters = masters();
        if (std::find(now_masters.begin(), now_masters.end(), r) == now_masters.end()) {
          last = "node " + std::to_string(r) + " not yet seen as a master";
          continue;
        }
        return r;
      } catch (const std::runtime_error& e) {
        last = e.what();
      }
    }
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(milliseconds(20));
  }
  std::string logs;
  for (const std::size_t r : replicas) {
    logs += "\n--- node " + std::to_string(r) + " log tail ---\n" + nodes_[r]->log_tail(15);
  }
  throw std::runtime_error("no replica of node " + std::to_string(master) + " took over within " +
                           std::to_string(kFailoverTimeout.count()) + " s; last: " + last + logs);
}

}  // namespace sluice::testing
