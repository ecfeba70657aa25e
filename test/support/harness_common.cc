#include "support/harness_common.h"

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
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace sluice::testing::harness {
namespace {

// Ports below the kernel's ephemeral range (32768+).
constexpr int kMinPort = 11000;
constexpr int kMaxPort = 32767;

constexpr const char* kOwnerFile = "harness.pid";
constexpr const char* kGroupFile = "harness.pgid";

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

long read_number(const std::filesystem::path& path) {
  std::ifstream in(path);
  long n = 0;
  return (in >> n) ? n : 0;
}

// SIGKILLs the processes of group `pgid` whose cwd is `dir`: what a harness started there and
// outlived its test process (nginx's workers survive their master). Both checks must hold, so
// neither a reused group id nor a shell that cd'ed into the dir is touched.
void kill_group_in_dir(pid_t pgid, const std::filesystem::path& dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    const auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
    if (name.empty() || !std::all_of(name.begin(), name.end(), is_digit)) continue;
    const pid_t pid = static_cast<pid_t>(std::atol(name.c_str()));
    std::error_code link_ec;
    const auto cwd = std::filesystem::read_symlink(entry.path() / "cwd", link_ec);
    if (link_ec || cwd != dir || ::getpgid(pid) != pgid) continue;
    ::kill(pid, SIGKILL);
  }
}

// Once per prefix and process: removes /tmp/<prefix>* dirs whose owner file names a process that
// no longer exists (their servers died with it, by PDEATHSIG, except what a recorded process group
// still runs there: killed first).
void sweep_stale_dirs(const std::string& prefix) {
  static std::mutex mu;
  static std::set<std::string> swept;
  std::lock_guard lock(mu);
  if (!swept.insert(prefix).second) return;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/tmp", ec)) {
    if (entry.path().filename().string().rfind(prefix, 0) != 0) continue;
    const long owner = read_number(entry.path() / kOwnerFile);
    if (owner <= 0) continue;
    if (::kill(static_cast<pid_t>(owner), 0) == 0 || errno != ESRCH) continue;
    const long pgid = read_number(entry.path() / kGroupFile);
    if (pgid > 1) kill_group_in_dir(static_cast<pid_t>(pgid), entry.path());
    std::error_code ignored;
    std::filesystem::remove_all(entry.path(), ignored);
  }
}

}  // namespace

std::string errno_text(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

int remaining_ms(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, std::numeric_limits<int>::max()));
}

const char* env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? v : fallback;
}

std::string show_command(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    out += (a.empty() || a.find_first_of(" \t\"") != std::string::npos) ? "\"" + a + "\"" : a;
  }
  return out;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

std::string tail_of_file(const std::string& path, std::size_t lines) {
  std::string text = read_file_from(path, 0);
  while (!text.empty() && text.back() == '\n')
    text.pop_back();
  std::size_t pos = text.size();
  for (std::size_t n = 0; n < lines && pos != std::string::npos && pos > 0; ++n) {
    pos = text.rfind('\n', pos - 1);
  }
  if (pos == std::string::npos || pos == 0) return text;
  return text.substr(pos + 1);
}

std::string log_tails(const std::string& log_path, const std::string& output_path,
                      std::size_t lines) {
  std::string out = tail_of_file(log_path, lines);
  const std::string output_tail = tail_of_file(output_path, lines);
  if (!output_tail.empty()) out += (out.empty() ? "" : "\n") + ("[stdout/stderr]\n" + output_tail);
  return out.empty() ? "(empty)" : out;
}

std::uintmax_t file_size_or_zero(const std::string& path) {
  std::error_code ec;
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  return ec ? 0 : size;
}

std::string read_file_from(const std::string& path, std::uintmax_t offset) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(static_cast<std::streamoff>(offset));
  if (!in) return "";
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// ---- processes ----------------------------------------------------------------------------------

pid_t spawn(const std::vector<std::string>& argv, const std::string& cwd, int out_fd,
            bool own_process_group) {
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
    if (own_process_group && ::setpgid(0, 0) != 0) ::_exit(126);
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
  // Also from the parent, so that the group exists when spawn() returns (whichever runs first;
  // EACCES once the child has exec'd, by which time it has done it itself).
  if (own_process_group) ::setpgid(pid, pid);
  return pid;
}

pid_t spawn_logged(const std::vector<std::string>& argv, const std::string& cwd,
                   const std::string& out_path, bool own_process_group) {
  const int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (out_fd < 0) throw std::runtime_error(errno_text(("open " + out_path).c_str()));
  try {
    const pid_t pid = spawn(argv, cwd, out_fd, own_process_group);
    ::close(out_fd);
    return pid;
  } catch (...) {
    ::close(out_fd);
    throw;
  }
}

int wait_exit(pid_t pid) {
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, 0);
    if (r == pid && (WIFEXITED(status) || WIFSIGNALED(status))) return status;
    if (r < 0 && errno != EINTR) return -1;
  }
}

bool exited_unreaped(pid_t pid) {
  siginfo_t info{};
  for (;;) {
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0) {
      return info.si_pid == pid;
    }
    if (errno != EINTR) return errno == ECHILD;  // reaped already (or not ours): gone either way
  }
}

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

// ---- ports --------------------------------------------------------------------------------------

int pick_port(int companion_offset) {
  static std::mutex mu;
  static std::set<int> handed_out;
  static std::mt19937 rng(std::random_device{}() ^ static_cast<unsigned>(::getpid()) ^
                          static_cast<unsigned>(Clock::now().time_since_epoch().count()));
  const int max_port = kMaxPort - std::max(companion_offset, 0);
  if (max_port < kMinPort) throw std::runtime_error("pick_port: companion offset too large");
  std::lock_guard lock(mu);
  std::uniform_int_distribution<int> dist(kMinPort, max_port);
  const auto taken = [&](int port) { return handed_out.contains(port) || !bindable(port); };
  for (int attempt = 0; attempt < 2000; ++attempt) {
    const int port = dist(rng);
    if (taken(port)) continue;
    if (companion_offset != 0) {
      // Neither the companion nor a port whose companion this one is may be handed out already.
      if (handed_out.contains(port - companion_offset) || taken(port + companion_offset)) continue;
      handed_out.insert(port + companion_offset);
    }
    handed_out.insert(port);
    return port;
  }
  throw std::runtime_error(
      "could not find a free loopback port" +
      (companion_offset != 0 ? " pair (p, p+" + std::to_string(companion_offset) + ")"
                             : std::string()) +
      " in [" + std::to_string(kMinPort) + ", " + std::to_string(max_port) + "]");
}

// ---- temp dirs ----------------------------------------------------------------------------------

std::string make_temp_dir(const std::string& prefix) {
  sweep_stale_dirs(prefix);
  std::string tmpl = "/tmp/" + prefix + "XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error(errno_text("mkdtemp"));
  std::ofstream(tmpl + "/" + kOwnerFile) << ::getpid() << "\n";
  return tmpl;
}

void record_process_group(const std::string& dir, pid_t pgid) {
  std::ofstream(dir + "/" + kGroupFile) << pgid << "\n";
}

void remove_temp_dir(const std::string& dir, const char* keep_env) {
  if (dir.empty()) return;
  std::error_code ec;
  if (keep_env != nullptr && std::getenv(keep_env) != nullptr) {
    std::filesystem::remove(dir + "/" + kOwnerFile, ec);  // so that no sweep removes it
    return;
  }
  std::filesystem::remove_all(dir, ec);
}

// ---- sockets ------------------------------------------------------------------------------------

DeadlineStream::DeadlineStream(int fd, Clock::time_point deadline, std::string label)
    : fd_(fd), deadline_(deadline), label_(std::move(label)) {}

DeadlineStream::DeadlineStream(DeadlineStream&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      deadline_(other.deadline_),
      label_(std::move(other.label_)),
      buf_(std::move(other.buf_)),
      pos_(other.pos_) {}

DeadlineStream::~DeadlineStream() {
  if (fd_ >= 0) ::close(fd_);
}

DeadlineStream DeadlineStream::connect_tcp(const std::string& host, int port,
                                           Clock::time_point deadline, std::string label) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    throw std::runtime_error(label + ": not an IPv4 address");
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) throw std::runtime_error(label + ": " + errno_text("socket"));
  DeadlineStream stream(fd, deadline, std::move(label));
  const linger no_linger{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &no_linger, sizeof no_linger);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS) {
    stream.fail(errno_text("connect"));
  }
  stream.wait_connected();
  return stream;
}

DeadlineStream DeadlineStream::connect_unix(const std::string& path, Clock::time_point deadline,
                                            std::string label) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    throw std::runtime_error(label + ": unix socket path too long");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) throw std::runtime_error(label + ": " + errno_text("socket"));
  DeadlineStream stream(fd, deadline, std::move(label));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS) {
    stream.fail(errno_text("connect"));
  }
  stream.wait_connected();
  return stream;
}

void DeadlineStream::fail(const std::string& what) const {
  throw std::runtime_error(label_ + ": " + what);
}

void DeadlineStream::wait_connected() {
  pollfd p{fd_, POLLOUT, 0};
  int r = 0;
  do {
    r = ::poll(&p, 1, remaining_ms(deadline_));
  } while (r < 0 && errno == EINTR);
  if (r == 0) fail("timed out connecting");
  if (r < 0) fail(errno_text("poll"));
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) fail(errno_text("getsockopt"));
  if (err != 0) fail(std::string("connect: ") + std::strerror(err));
}

void DeadlineStream::write_all(std::string_view data) {
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

bool DeadlineStream::fill() {
  if (pos_ > 0 && pos_ == buf_.size()) {  // all consumed: start over rather than grow
    buf_.clear();
    pos_ = 0;
  }
  char chunk[16384];
  for (;;) {
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n > 0) {
      buf_.append(chunk, static_cast<std::size_t>(n));
      return true;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) fail(errno_text("recv"));
    pollfd p{fd_, POLLIN, 0};
    const int r = ::poll(&p, 1, remaining_ms(deadline_));
    if (r == 0) fail("timed out waiting for a reply");
    if (r < 0 && errno != EINTR) fail(errno_text("poll"));
  }
}

std::string DeadlineStream::read_line() {
  for (;;) {
    const std::size_t end = buf_.find("\r\n", pos_);
    if (end != std::string::npos) {
      std::string line = buf_.substr(pos_, end - pos_);
      pos_ = end + 2;
      return line;
    }
    if (!fill()) fail("connection closed by the server");
  }
}

std::string DeadlineStream::read_exact(std::size_t n) {
  while (buf_.size() - pos_ < n) {
    if (!fill()) fail("connection closed by the server");
  }
  std::string out = buf_.substr(pos_, n);
  pos_ += n;
  return out;
}

std::string DeadlineStream::read_to_eof() {
  while (fill()) {
  }
  std::string out = buf_.substr(pos_);
  pos_ = buf_.size();
  return out;
}

// ---- LoopbackListener ---------------------------------------------------------------------------

LoopbackListener::LoopbackListener() {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::runtime_error(errno_text("LoopbackListener: socket"));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd_, 8) != 0 ||
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string error = errno_text("LoopbackListener: bind/listen");
    ::close(fd_);
    throw std::runtime_error(error);
  }
  port_ = ntohs(addr.sin_port);
}

LoopbackListener::~LoopbackListener() {
  ::close(fd_);
}

void LoopbackListener::shutdown() {
  ::shutdown(fd_, SHUT_RDWR);
}

}  // namespace sluice::testing::harness
