#include "support/delay_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <stdexcept>
#include <vector>

namespace sluice::testing {

namespace {

using Steady = std::chrono::steady_clock;

std::runtime_error failure(const std::string& what) {
  return std::runtime_error("DelayProxy: " + what + ": " + std::strerror(errno));
}

// A chunk of reply bytes and when it may be written to the client.
struct Held {
  Steady::time_point release;
  std::string bytes;
};

// One proxied connection: the client's socket, the upstream's, and the replies held back.
struct Pair {
  int client = -1;
  int upstream = -1;
  std::string to_upstream;  // not yet written to the upstream
  std::deque<Held> held;    // replies in arrival order
  bool closed = false;
  ~Pair() {
    if (client >= 0) ::close(client);
    if (upstream >= 0) ::close(upstream);
  }
};

// write_some() writes what it can of `data` to non-blocking `fd`, erasing it; false on error.
bool write_some(int fd, std::string& data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    data.erase(0, static_cast<std::size_t>(n));
  }
  return true;
}

// read_some() appends what `fd` has to `out`; false at EOF or on error.
bool read_some(int fd, std::string& out) {
  char buf[16384];
  const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  if (n == 0) return false;
  if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
  out.append(buf, static_cast<std::size_t>(n));
  return true;
}

int connect_upstream(const std::string& host, int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  // Blocking connect on loopback: immediate (refused or accepted).
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::fcntl(fd, F_SETFL, O_NONBLOCK);
  return fd;
}

}  // namespace

DelayProxy::DelayProxy(std::string upstream_host, int upstream_port)
    : upstream_host_(std::move(upstream_host)), upstream_port_(upstream_port) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listen_fd_ < 0) throw failure("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, 64) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
      ::pipe2(wake_fds_, O_CLOEXEC | O_NONBLOCK) != 0) {
    const std::runtime_error e = failure("listen");
    ::close(listen_fd_);
    throw e;
  }
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { run(); });
}

DelayProxy::~DelayProxy() {
  const char stop = 's';
  [[maybe_unused]] const ssize_t n = ::write(wake_fds_[1], &stop, 1);
  thread_.join();
  ::close(listen_fd_);
  ::close(wake_fds_[0]);
  ::close(wake_fds_[1]);
}

void DelayProxy::run() {
  std::vector<std::unique_ptr<Pair>> pairs;
  std::vector<pollfd> fds;
  for (;;) {
    // Wake for the earliest held reply that is due.
    int timeout_ms = -1;
    const auto now = Steady::now();
    for (const auto& p : pairs) {
      if (p->held.empty()) continue;
      const auto wait =
          std::chrono::ceil<std::chrono::milliseconds>(p->held.front().release - now).count();
      const int ms = static_cast<int>(std::max<long long>(0, wait));
      timeout_ms = timeout_ms < 0 ? ms : std::min(timeout_ms, ms);
    }
    fds.clear();
    fds.push_back({wake_fds_[0], POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (const auto& p : pairs) {
      fds.push_back({p->client, POLLIN, 0});
      fds.push_back(
          {p->upstream, static_cast<short>(POLLIN | (p->to_upstream.empty() ? 0 : POLLOUT)), 0});
    }
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) return;
    if (fds[0].revents != 0) return;  // stopping
    if (fds[1].revents & POLLIN) {
      const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (client >= 0) {
        ++connections_;
        auto p = std::make_unique<Pair>();
        p->client = client;
        p->upstream = connect_upstream(upstream_host_, upstream_port_);
        const int one = 1;
        ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (p->upstream >= 0) pairs.push_back(std::move(p));  // else closed: upstream is down
      }
    }
    // fds[2 + 2i] and fds[3 + 2i] belong to pairs[i] (new pairs were appended after the poll).
    const std::size_t polled = (fds.size() - 2) / 2;
    for (std::size_t i = 0; i < polled; ++i) {
      Pair& p = *pairs[i];
      const short from_client = fds[2 + 2 * i].revents;
      const short from_upstream = fds[3 + 2 * i].revents;
      if (from_client & (POLLIN | POLLHUP | POLLERR)) {
        if (!read_some(p.client, p.to_upstream)) p.closed = true;
      }
      if (from_upstream & (POLLIN | POLLHUP | POLLERR)) {
        std::string bytes;
        if (!read_some(p.upstream, bytes)) p.closed = true;
        if (!bytes.empty()) p.held.push_back({Steady::now() + delay(), std::move(bytes)});
      }
      if (!p.closed && !write_some(p.upstream, p.to_upstream)) p.closed = true;
    }
    // Release the replies that are due, in order.
    const auto after = Steady::now();
    for (auto& p : pairs) {
      while (!p->closed && !p->held.empty() && p->held.front().release <= after) {
        if (!write_some(p->client, p->held.front().bytes)) p->closed = true;
        if (!p->held.front().bytes.empty()) break;  // the client's buffer is full: later
        p->held.pop_front();
      }
    }
    pairs.erase(std::remove_if(pairs.begin(), pairs.end(), [](const auto& p) { return p->closed; }),
                pairs.end());
  }
}

}  // namespace sluice::testing
